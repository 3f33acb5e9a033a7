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

/// A bio handed to a target, with the target's per-bio data of type `P`.
///
/// # Invariants
///
/// `bio` is a valid bio that device-mapper handed to the target `ti`'s `map`
/// or `end_io` callback, and it stays valid and exclusively ours for `'a`.
/// `data` is `dm_per_bio_data(bio, size_of::<P>())`, and points to a `P`
/// that was initialised before any [`Bio`] for it was created (see the `map`
/// trampoline).
pub struct Bio<'a, P> {
    bio: NonNull<bindings::bio>,
    ti: NonNull<dmb::dm_target>,
    data: NonNull<P>,
    _p: PhantomData<&'a mut P>,
}

const SECTOR_SHIFT: u32 = 9;

impl<'a, P> Bio<'a, P> {
    /// # Safety
    ///
    /// `bio` must be a bio being mapped or completed by target `ti`, valid and not
    /// otherwise accessed for `'a`; `data` must be its per-bio data (from
    /// [`per_bio_ptr`]), holding an initialised `P`.
    pub(super) unsafe fn from_raw(
        bio: *mut bindings::bio,
        ti: *mut dmb::dm_target,
        data: *mut P,
    ) -> Self {
        // INVARIANT: Guaranteed by the safety requirements.
        Self {
            // SAFETY: device-mapper never passes a null bio or target.
            bio: unsafe { NonNull::new_unchecked(bio) },
            // SAFETY: As above.
            ti: unsafe { NonNull::new_unchecked(ti) },
            // SAFETY: Per-bio data lies inside the bio's allocation: never null.
            data: unsafe { NonNull::new_unchecked(data) },
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
        match self.opf() & ((1 << bindings::REQ_OP_BITS) - 1) {
            bindings::req_op_REQ_OP_READ => Op::Read,
            bindings::req_op_REQ_OP_WRITE => Op::Write,
            bindings::req_op_REQ_OP_FLUSH => Op::Flush,
            bindings::req_op_REQ_OP_DISCARD => Op::Discard,
            bindings::req_op_REQ_OP_SECURE_ERASE => Op::SecureErase,
            bindings::req_op_REQ_OP_WRITE_ZEROES => Op::WriteZeroes,
            _ => Op::Other,
        }
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
