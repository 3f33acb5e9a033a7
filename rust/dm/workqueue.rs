// SPDX-License-Identifier: GPL-2.0

//! A workqueue the module owns, so that its background work can be drained:
//! `destroy_workqueue` waits for every queued item before the module's code
//! goes away.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use core::{
    fmt::Write,
    ptr::NonNull,
    sync::atomic::{
        AtomicU32,
        Ordering::Relaxed, //
    },
};
use kernel::{
    bindings,
    prelude::*,
    str::CStrExt,
    workqueue::{
        HasDelayedWork,
        Queue,
        Work, //
    },
};

/// An allocated workqueue, destroyed (after draining) on drop.
///
/// # Invariants
///
/// `wq` was returned by `alloc_workqueue` and is destroyed exactly once, in
/// [`Drop`].
pub struct OwnedQueue {
    wq: NonNull<bindings::workqueue_struct>,
}

// SAFETY: Workqueues may be used and destroyed from any thread.
unsafe impl Send for OwnedQueue {}
// SAFETY: Queueing work is thread-safe.
unsafe impl Sync for OwnedQueue {}

/// Numbers the queues, so that two tables of one device (a reload) have
/// different names in sysfs.
static QUEUES: AtomicU32 = AtomicU32::new(0);

/// A workqueue name: at most 31 bytes and a NUL (`WQ_NAME_LEN`).
struct Name {
    buf: [u8; 32],
    len: usize,
}

impl core::fmt::Write for Name {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - 1 - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl OwnedQueue {
    /// Allocates an unbound, high-priority workqueue for the work of `kind`
    /// (at most 7 bytes) of the mapped device `devt`, that may be used for
    /// memory reclaim (work on it makes progress under memory pressure, and
    /// is not starved by the I/O submitters it serves).  It is visible in
    /// sysfs as `/sys/devices/virtual/workqueue/<kind>-<major>:<minor>.<n>`
    /// (`n` numbers the queues the module made), where its `cpumask` says
    /// which CPUs run its work.
    pub fn new(kind: &'static CStr, devt: u32) -> Result<Self> {
        let mut name = Name {
            buf: [0; 32],
            len: 0,
        };
        let _ = write!(
            name,
            "{}-{}:{}.{}",
            kind.to_str().unwrap_or("fs"),
            devt >> 20,
            devt & 0xfffff,
            QUEUES.fetch_add(1, Relaxed)
        );
        // SAFETY: The format is "%s" with one argument, `name.buf`, NUL-terminated (its last
        // byte is never written); `alloc_workqueue` copies the name.
        let wq = unsafe {
            bindings::alloc_workqueue_noprof(
                c"%s".as_char_ptr(),
                bindings::wq_flags_WQ_MEM_RECLAIM
                    | bindings::wq_flags_WQ_UNBOUND
                    | bindings::wq_flags_WQ_HIGHPRI
                    | bindings::wq_flags_WQ_SYSFS,
                0,
                name.buf.as_ptr(),
            )
        };
        // INVARIANT: `wq` came from `alloc_workqueue`.
        Ok(Self {
            wq: NonNull::new(wq).ok_or(ENOMEM)?,
        })
    }

    /// The queue, to enqueue work items on.
    pub fn queue(&self) -> &Queue {
        // SAFETY: By the type invariants `wq` is a live workqueue for as long as `self`.
        unsafe { Queue::from_raw(self.wq.as_ptr()) }
    }

    /// Waits until all work queued so far has finished.
    pub fn flush(&self) {
        // SAFETY: By the type invariants `wq` is a live workqueue.
        unsafe { bindings::__flush_workqueue(self.wq.as_ptr()) };
    }
}

impl Drop for OwnedQueue {
    fn drop(&mut self) {
        // SAFETY: By the type invariants `wq` is live and this is the only destroy; it drains
        // all queued work first.
        unsafe { bindings::destroy_workqueue(self.wq.as_ptr()) };
    }
}

/// Runs the delayed work `ID` of `item` now if its timer is pending, and
/// waits until it has finished: afterwards no timer of it is left to fire
/// (unless the work queues itself again).
pub fn flush_delayed<T: HasDelayedWork<T, ID>, const ID: u64>(item: &T) {
    let ptr = core::ptr::from_ref(item).cast_mut();
    // SAFETY: `ptr` points to a live `T`; `raw_get_work` only computes the field address.
    let work: *mut Work<T, ID> = unsafe { T::raw_get_work(ptr) };
    // SAFETY: `HasDelayedWork` promises that this `work_struct` is the `work` field of a
    // `delayed_work`, which is initialised (the item is).
    unsafe {
        let dwork = kernel::container_of!(Work::raw_get(work), bindings::delayed_work, work);
        bindings::flush_delayed_work(dwork);
    }
}

/// The current `CLOCK_MONOTONIC` time in nanoseconds.
pub fn monotonic_ns() -> u64 {
    // SAFETY: `ktime_get` has no preconditions.
    unsafe { bindings::ktime_get() as u64 }
}

/// The kernel's tick count (`jiffies`): one load, for hot paths that only
/// compare against a deadline.
#[inline]
pub fn jiffies() -> u64 {
    // SAFETY: `jiffies` is a valid, always-initialised `unsigned long` that
    // the timer interrupt updates; it is read once, volatile, as C does.
    unsafe { core::ptr::read_volatile(&raw const bindings::jiffies) as u64 }
}
