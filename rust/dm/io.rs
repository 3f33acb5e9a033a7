// SPDX-License-Identifier: GPL-2.0

//! Synchronous I/O to a target's devices through dm-io, for metadata.
//!
//! C header: [`include/linux/dm-io.h`](srctree/include/linux/dm-io.h)

use super::{
    bindings as dmb,
    Device, //
};
use core::ptr::NonNull;
use kernel::{
    alloc::VVec,
    bindings,
    prelude::*, //
};

const SECTOR_SHIFT: u32 = 9;
/// `IOPRIO_DEFAULT`: `IOPRIO_PRIO_VALUE(IOPRIO_CLASS_NONE, 0)` (include/linux/ioprio.h).
const IOPRIO_DEFAULT: u16 = 0;

/// A dm-io client: its own mempools, so metadata I/O makes progress under
/// memory pressure.
///
/// # Invariants
///
/// `client` came from `dm_io_client_create` and is destroyed once, in
/// [`Drop`].
pub struct DmIo {
    client: NonNull<dmb::dm_io_client>,
}

// SAFETY: A dm-io client may be used from any thread, and sequentially shared.
unsafe impl Send for DmIo {}
// SAFETY: `dm_io` on one client from several threads is allowed (it allocates from mempools).
unsafe impl Sync for DmIo {}

impl DmIo {
    /// Creates a client.
    pub fn new() -> Result<Self> {
        // SAFETY: FFI call without preconditions; it returns an ERR_PTR on failure.
        let p = unsafe { dmb::dm_io_client_create() };
        if kernel::error::from_err_ptr(p).is_err() || p.is_null() {
            return Err(ENOMEM);
        }
        // INVARIANT: `p` is a live client.
        Ok(Self {
            // SAFETY: Checked non-null above.
            client: unsafe { NonNull::new_unchecked(p) },
        })
    }

    /// Synchronous I/O of `len` bytes at `buf` (vmalloc memory); `len` 0
    /// only for an empty flush.
    fn io(&self, dev: &Device, sector: u64, buf: *mut u8, len: usize, opf: u32) -> Result {
        let flush = opf & (1 << bindings::req_flag_bits___REQ_PREFLUSH) != 0;
        if (len == 0 && !flush) || len % (1 << SECTOR_SHIFT) != 0 {
            return Err(EINVAL);
        }
        let mut region = dmb::dm_io_region {
            bdev: dev.bdev(),
            sector,
            count: (len >> SECTOR_SHIFT) as u64,
        };
        // SAFETY: All-zero is a valid `dm_io_request` (no notify: synchronous).
        let mut req: dmb::dm_io_request = unsafe { core::mem::zeroed() };
        req.bi_opf = opf;
        req.mem.type_ = dmb::dm_io_mem_type_DM_IO_VMA;
        req.mem.ptr.vma = buf.cast();
        req.client = self.client.as_ptr();
        let mut error_bits: c_ulong = 0;
        // SAFETY: `req` and `region` are valid; `buf` is vmalloc memory of `len` bytes that the
        // caller keeps alive and unaliased for this synchronous call (none for an empty
        // flush, which transfers nothing); `dev` is open.
        let r = unsafe {
            dmb::dm_io(
                &mut req,
                1,
                &mut region,
                &mut error_bits,
                core::ptr::null_mut(),
                IOPRIO_DEFAULT,
            )
        };
        kernel::error::to_result(r)?;
        if error_bits != 0 {
            return Err(EIO);
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes (a multiple of 512) from `dev` at `sector`.
    pub fn read(&self, dev: &Device, sector: u64, buf: &mut VVec<u8>) -> Result {
        let len = buf.len();
        self.read_part(dev, sector, buf, 0, len)
    }

    /// Writes `buf` (a multiple of 512 bytes) to `dev` at `sector`; with
    /// `durable`, flushes the device's cache first and writes with FUA.
    pub fn write(&self, dev: &Device, sector: u64, buf: &mut VVec<u8>, durable: bool) -> Result {
        let len = buf.len();
        self.write_part(dev, sector, buf, 0, len, durable)
    }

    /// Flushes `dev`'s volatile cache: what was written to it before is
    /// durable when this returns.
    pub fn flush(&self, dev: &Device) -> Result {
        let opf = bindings::req_op_REQ_OP_WRITE
            | (1 << bindings::req_flag_bits___REQ_SYNC)
            | (1 << bindings::req_flag_bits___REQ_PREFLUSH);
        self.io(dev, 0, core::ptr::null_mut(), 0, opf)
    }

    /// `buf[offset..offset + len]`, as a pointer for dm-io.
    fn part(buf: &mut VVec<u8>, offset: usize, len: usize) -> Result<*mut u8> {
        if offset.checked_add(len).is_none_or(|end| end > buf.len()) {
            return Err(EINVAL);
        }
        // SAFETY: `offset + len <= buf.len()` (checked above): the pointer stays in the buffer.
        Ok(unsafe { buf.as_mut_ptr().add(offset) })
    }

    /// Reads `len` bytes (a multiple of 512) from `dev` at `sector` into
    /// `buf[offset..]`.
    pub fn read_part(
        &self,
        dev: &Device,
        sector: u64,
        buf: &mut VVec<u8>,
        offset: usize,
        len: usize,
    ) -> Result {
        let p = Self::part(buf, offset, len)?;
        self.io(dev, sector, p, len, bindings::req_op_REQ_OP_READ)
    }

    /// Writes `buf[offset..offset + len]` (a multiple of 512 bytes) to
    /// `dev` at `sector`; with `durable`, flushes the device's cache first
    /// and writes with FUA.
    pub fn write_part(
        &self,
        dev: &Device,
        sector: u64,
        buf: &mut VVec<u8>,
        offset: usize,
        len: usize,
        durable: bool,
    ) -> Result {
        let p = Self::part(buf, offset, len)?;
        let mut opf = bindings::req_op_REQ_OP_WRITE | (1 << bindings::req_flag_bits___REQ_SYNC);
        if durable {
            opf |= (1 << bindings::req_flag_bits___REQ_PREFLUSH)
                | (1 << bindings::req_flag_bits___REQ_FUA);
        }
        self.io(dev, sector, p, len, opf)
    }
}

impl Drop for DmIo {
    fn drop(&mut self) {
        // SAFETY: By the type invariants `client` is live and this is its only destroy.
        unsafe { dmb::dm_io_client_destroy(self.client.as_ptr()) };
    }
}

/// A scope in which this task's allocations do no I/O to reclaim memory
/// (`memalloc_noio_save()`): `GFP_KERNEL` acts as `GFP_NOIO`, vmalloc
/// included.  For code that runs while a device is suspended, where reclaim
/// writing back through the device would wait for it forever.  Ends on drop,
/// on the task that began it (the guard cannot leave the thread).
pub struct NoIo {
    flags: c_uint,
    _task: core::marker::PhantomData<*mut ()>,
}

impl NoIo {
    /// Begins the scope.
    pub fn begin() -> Self {
        Self {
            // SAFETY: Only sets a flag of the current task; restored in `drop`.
            flags: unsafe { dmb::foresight_memalloc_noio_save() },
            _task: core::marker::PhantomData,
        }
    }
}

impl Drop for NoIo {
    fn drop(&mut self) {
        // SAFETY: `flags` came from the save on this task (the guard is not `Send`), and
        // scopes nest: they are dropped in reverse order.
        unsafe { dmb::foresight_memalloc_noio_restore(self.flags) };
    }
}

/// The body of a suspend hook (`postsuspend`, `preresume`, `resume`): the
/// device is suspended, so reclaim writing back through it would wait
/// forever.  A [`NoIo`] scope; and, to lockdep, a lock that reclaim takes,
/// so that an allocation that may still do I/O here (outside the scope,
/// e.g. another task's lock held across one) is reported.
pub struct Suspended {
    _noio: NoIo,
}

impl Suspended {
    /// Begins the hook's scope.
    pub fn begin() -> Self {
        // SAFETY: A lockdep annotation only; released in `drop`.
        unsafe { dmb::foresight_suspended_acquire() };
        Self {
            _noio: NoIo::begin(),
        }
    }

    /// Records, once, that reclaim may wait for a suspended device.
    pub fn lockdep_init() {
        // SAFETY: A lockdep annotation only.
        unsafe { dmb::foresight_suspended_lockdep_init() };
    }
}

impl Drop for Suspended {
    fn drop(&mut self) {
        // SAFETY: Acquired in `begin`, on this task (`NoIo` keeps the guard on it).
        unsafe { dmb::foresight_suspended_release() };
    }
}
