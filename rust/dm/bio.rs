// SPDX-License-Identifier: GPL-2.0

//! Bios as a target's `map` and `end_io` see them.
//!
//! C header: [`include/linux/blk_types.h`](srctree/include/linux/blk_types.h)

use super::{
    bindings as dmb,
    Device, //
};
use core::{
    marker::PhantomData,
    mem::ManuallyDrop,
    ptr::NonNull, //
};
use kernel::bindings;

/// A bio's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `REQ_OP_READ`.
    Read,
    /// `REQ_OP_WRITE`.
    Write,
    /// `REQ_OP_FLUSH` (an empty flush: no data).
    Flush,
    /// `REQ_OP_DISCARD`.
    Discard,
    /// `REQ_OP_SECURE_ERASE`.
    SecureErase,
    /// `REQ_OP_WRITE_ZEROES`.
    WriteZeroes,
    /// Anything else (zone management, driver private).
    Other,
}

impl Op {
    fn from_opf(opf: u32) -> Self {
        match opf & ((1 << bindings::REQ_OP_BITS) - 1) {
            bindings::req_op_REQ_OP_READ => Op::Read,
            bindings::req_op_REQ_OP_WRITE => Op::Write,
            bindings::req_op_REQ_OP_FLUSH => Op::Flush,
            bindings::req_op_REQ_OP_DISCARD => Op::Discard,
            bindings::req_op_REQ_OP_SECURE_ERASE => Op::SecureErase,
            bindings::req_op_REQ_OP_WRITE_ZEROES => Op::WriteZeroes,
            _ => Op::Other,
        }
    }
}

/// A bio handed to a target, with the target's per-bio data of type `P`.
///
/// # Invariants
///
/// `bio` is a valid bio that device-mapper handed to the target `ti`'s `map`
/// or `end_io` callback, and it stays valid and exclusively ours for `'a`.
/// `data` is `dm_per_bio_data(bio, size_of::<P>())`, and points to a `P`
/// that was initialised before any [`Bio`] for it was created (see the `map`
/// trampoline).  `mapping` is true only in `map`.
pub struct Bio<'a, P> {
    bio: NonNull<bindings::bio>,
    ti: NonNull<dmb::dm_target>,
    data: NonNull<P>,
    mapping: bool,
    _p: PhantomData<&'a mut P>,
}

const SECTOR_SHIFT: u32 = 9;

impl<'a, P> Bio<'a, P> {
    /// # Safety
    ///
    /// `bio` must be a bio being mapped (`mapping`) or completed by target `ti`,
    /// valid and not otherwise accessed for `'a`; `data` must be its per-bio data
    /// (from [`per_bio_ptr`]), holding an initialised `P`.
    pub(super) unsafe fn from_raw(
        bio: *mut bindings::bio,
        ti: *mut dmb::dm_target,
        data: *mut P,
        mapping: bool,
    ) -> Self {
        // INVARIANT: Guaranteed by the safety requirements.
        Self {
            // SAFETY: device-mapper never passes a null bio or target.
            bio: unsafe { NonNull::new_unchecked(bio) },
            // SAFETY: As above.
            ti: unsafe { NonNull::new_unchecked(ti) },
            // SAFETY: Per-bio data lies inside the bio's allocation: never null.
            data: unsafe { NonNull::new_unchecked(data) },
            mapping,
            _p: PhantomData,
        }
    }

    fn raw(&self) -> &bindings::bio {
        // SAFETY: By the type invariants, `bio` is valid for `'a`.
        unsafe { self.bio.as_ref() }
    }

    fn opf(&self) -> u32 {
        self.raw().bi_opf
    }

    /// The first sector the bio addresses (on the dm device).
    pub fn sector(&self) -> u64 {
        self.raw().bi_iter.bi_sector
    }

    /// The bio's data size in bytes (0 for an empty flush).
    pub fn size(&self) -> u32 {
        self.raw().bi_iter.bi_size
    }

    /// The bio's data size in 512-byte sectors.
    pub fn sectors(&self) -> u32 {
        self.size() >> SECTOR_SHIFT
    }

    /// The bio's first sector relative to the start of the target.
    pub fn target_offset(&self) -> u64 {
        // SAFETY: By the type invariants, `ti` is the valid target the bio is mapped by.
        self.sector()
            .wrapping_sub(unsafe { (*self.ti.as_ptr()).begin })
    }

    /// The operation.
    pub fn op(&self) -> Op {
        Op::from_opf(self.opf())
    }

    /// Whether the bio changes data on the device (`op_is_write`).
    pub fn is_write(&self) -> bool {
        self.opf() & 1 != 0
    }

    /// Whether the bio carries `REQ_PREFLUSH`.
    pub fn is_preflush(&self) -> bool {
        self.opf() & (1 << bindings::req_flag_bits___REQ_PREFLUSH) != 0
    }

    /// Whether the bio carries `REQ_FUA`.
    pub fn is_fua(&self) -> bool {
        self.opf() & (1 << bindings::req_flag_bits___REQ_FUA) != 0
    }

    /// Keeps only the first `sectors` of a read being mapped: device-mapper
    /// sends the rest to `map` again as a bio of its own
    /// (`dm_accept_partial_bio`).  False, and the bio unchanged, unless
    /// this is `map`, the bio a read (not `REQ_ATOMIC`), and `sectors`
    /// more than none and less than the bio's.
    pub fn accept_partial(&mut self, sectors: u32) -> bool {
        let atomic = self.opf() & (1 << bindings::req_flag_bits___REQ_ATOMIC) != 0;
        if !self.mapping
            || self.op() != Op::Read
            || atomic
            || sectors == 0
            || sectors >= self.sectors()
        {
            return false;
        }
        // SAFETY: The bio is valid and ours, and being mapped by its target (type
        // invariants, `mapping`); it is a read, so device-mapper never duplicated it (only
        // flushes and abnormal I/O are) nor is it a zone operation or write; not atomic;
        // `sectors` is less than its size, which is at most what device-mapper gave the
        // target.
        unsafe { dmb::dm_accept_partial_bio(self.bio.as_ptr(), sectors) };
        true
    }

    /// Points the bio at `dev`, starting at `sector` of that device.
    pub fn remap(&mut self, dev: &Device, sector: u64) {
        // SAFETY: The bio is valid and ours (type invariants); `dev.bdev()` is an open block
        // device that outlives the I/O, since the target holds `dev` until its destructor.
        unsafe { dmb::foresight_bio_remap(self.bio.as_ptr(), dev.bdev(), sector) };
    }

    /// Copies `data` into the bio's data from byte `offset` on (a read
    /// served from memory); false if it does not fit.
    pub fn copy_to(&mut self, offset: usize, data: &[u8]) -> bool {
        if offset.saturating_add(data.len()) > self.size() as usize {
            return false;
        }
        // SAFETY: The bio is valid and ours (type invariants); its data holds
        // `offset + data.len()` bytes (checked), and `data` is readable for its length.
        unsafe {
            dmb::foresight_bio_copy_to(self.bio.as_ptr(), offset, data.as_ptr().cast(), data.len())
        };
        true
    }

    /// The target's data for this bio.
    pub fn per_bio(&mut self) -> &mut P {
        // SAFETY: By the type invariants `data` is the bio's per-bio data and holds an
        // initialised `P`, exclusively ours for `'a` like the bio it belongs to.
        unsafe { self.data.as_mut() }
    }
}

/// A bio its target took in `map` ([`MapResult::Defer`]), remapped, to be
/// submitted later (or failed).
///
/// # Invariants
///
/// `bio` is a clone device-mapper handed to a target's `map`, which returned
/// `DM_MAPIO_SUBMITTED` for it with `accounts_remapped_io` set; this handle
/// owns it until it submits or ends it, exactly once.  While it is in a
/// [`DeferList`] its `bi_next` links the list.
///
/// [`MapResult::Defer`]: super::MapResult::Defer
pub struct Deferred {
    bio: NonNull<bindings::bio>,
}

// SAFETY: The bio is owned by the handle; device-mapper expects a target that takes a bio to
// submit or end it from any thread.
unsafe impl Send for Deferred {}

impl Deferred {
    /// # Safety
    ///
    /// `bio` must be a bio the target's `map` was given and is about to return
    /// `DM_MAPIO_SUBMITTED` for (with `accounts_remapped_io` set), and not be used otherwise.
    pub(super) unsafe fn from_raw(bio: *mut bindings::bio) -> Self {
        // INVARIANT: By the safety requirements.
        Self {
            // SAFETY: device-mapper never passes a null bio.
            bio: unsafe { NonNull::new_unchecked(bio) },
        }
    }

    /// The bio's data size in bytes.
    pub fn size(&self) -> u32 {
        // SAFETY: The bio is valid and ours (type invariants).
        unsafe { (*self.bio.as_ptr()).bi_iter.bi_size }
    }

    /// The bio's first sector on the device `map` remapped it to.
    pub fn sector(&self) -> u64 {
        // SAFETY: The bio is valid and ours (type invariants).
        unsafe { (*self.bio.as_ptr()).bi_iter.bi_sector }
    }

    fn opf(&self) -> u32 {
        // SAFETY: The bio is valid and ours (type invariants).
        unsafe { (*self.bio.as_ptr()).bi_opf }
    }

    /// The bio's operation.
    pub fn op(&self) -> Op {
        Op::from_opf(self.opf())
    }

    /// Whether the bio carries `REQ_PREFLUSH` or `REQ_FUA`: its completion
    /// promises durability.
    pub fn is_durable(&self) -> bool {
        let flags = (1 << bindings::req_flag_bits___REQ_PREFLUSH)
            | (1 << bindings::req_flag_bits___REQ_FUA);
        self.opf() & flags != 0
    }

    /// Submits the bio to the device `map` remapped it to.  May sleep.
    pub fn submit(self) {
        let bio = ManuallyDrop::new(self).bio.as_ptr();
        // SAFETY: The bio is ours, remapped, out of any list (type invariants); after this
        // call it belongs to the block layer and is not touched again.
        unsafe {
            (*bio).bi_next = core::ptr::null_mut();
            dmb::dm_submit_bio_remap(bio, core::ptr::null_mut())
        };
    }
}

impl Drop for Deferred {
    /// A deferred bio is never lost: dropped unsubmitted, it fails (EIO).
    fn drop(&mut self) {
        let bio = self.bio.as_ptr();
        // SAFETY: The bio is ours (type invariants); ended here, it is not touched again.
        unsafe {
            (*bio).bi_next = core::ptr::null_mut();
            dmb::foresight_bio_io_error(bio)
        };
    }
}

/// [`Deferred`] bios in the order they were pushed, linked through the
/// bios themselves (no allocation: usable under a spinlock, in `map`).
///
/// # Invariants
///
/// `head` .. `tail`, following `bi_next`, are `len` bios each owned as a
/// [`Deferred`] is; the last one's `bi_next` is null.
pub struct DeferList {
    head: Option<NonNull<bindings::bio>>,
    tail: Option<NonNull<bindings::bio>>,
    len: usize,
}

// SAFETY: The list owns its bios, as `Deferred` does.
unsafe impl Send for DeferList {}

impl Default for DeferList {
    fn default() -> Self {
        Self::new()
    }
}

impl DeferList {
    /// An empty list.
    pub const fn new() -> Self {
        // INVARIANT: Empty.
        Self {
            head: None,
            tail: None,
            len: 0,
        }
    }

    /// Bios in the list.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The size in bytes of the first bio.
    pub fn front_size(&self) -> Option<u32> {
        // SAFETY: Bios in the list are valid and ours (type invariants).
        self.head.map(|b| unsafe { (*b.as_ptr()).bi_iter.bi_size })
    }

    /// Appends `d`.
    pub fn push(&mut self, d: Deferred) {
        let bio = ManuallyDrop::new(d).bio;
        // SAFETY: `bio` is ours (it was a `Deferred`), and so is `tail`; linking them keeps the
        // invariant (the new last bio's `bi_next` is null).
        unsafe {
            (*bio.as_ptr()).bi_next = core::ptr::null_mut();
            if let Some(t) = self.tail {
                (*t.as_ptr()).bi_next = bio.as_ptr();
            }
        }
        if self.head.is_none() {
            self.head = Some(bio);
        }
        self.tail = Some(bio);
        self.len += 1;
    }

    /// Takes the first bio.
    pub fn pop(&mut self) -> Option<Deferred> {
        let bio = self.head?;
        // SAFETY: `bio` is in the list: valid and ours (type invariants).
        let next = unsafe { (*bio.as_ptr()).bi_next };
        self.head = NonNull::new(next);
        if self.head.is_none() {
            self.tail = None;
        }
        self.len -= 1;
        // SAFETY: Unlinked, `bio` is owned as a `Deferred` was (type invariants).
        unsafe { (*bio.as_ptr()).bi_next = core::ptr::null_mut() };
        Some(Deferred { bio })
    }
}

impl Drop for DeferList {
    /// Bios left in a dropped list fail (see [`Deferred`]).
    fn drop(&mut self) {
        while let Some(d) = self.pop() {
            drop(d);
        }
    }
}

/// Where `P` lives in the per-bio data of `bio`.
///
/// # Safety
///
/// `bio` must be a bio of a target whose `per_io_data_size` is `size_of::<P>()`.
pub(super) unsafe fn per_bio_ptr<P>(bio: *mut bindings::bio) -> *mut P {
    // SAFETY: By the safety requirements, `bio` has `size_of::<P>()` bytes of per-bio data.
    unsafe { dmb::dm_per_bio_data(bio, core::mem::size_of::<P>()) }.cast::<P>()
}

/// The status a bio completes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkStatus(pub(super) u8);

impl BlkStatus {
    /// `BLK_STS_OK`.
    pub const OK: Self = Self(bindings::BLK_STS_OK as u8);

    /// Whether the I/O succeeded.
    pub fn is_ok(self) -> bool {
        self == Self::OK
    }
}

/// The crc32c of `data` (seed !0, as the kernel's `crc32c(~0, ...)`).
pub fn crc32c(data: &[u8]) -> u32 {
    // SAFETY: `data` is readable for its length.
    unsafe { dmb::foresight_crc32c(data.as_ptr().cast(), data.len()) }
}
