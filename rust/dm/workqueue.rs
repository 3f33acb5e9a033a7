// SPDX-License-Identifier: GPL-2.0

//! A workqueue the module owns, so that its background work can be drained:
//! `destroy_workqueue` waits for every queued item before the module's code
//! goes away.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use core::ptr::NonNull;
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

impl OwnedQueue {
    /// Allocates an unbound, high-priority workqueue named `name` that may be
    /// used for memory reclaim (work on it makes progress under memory
    /// pressure, and is not starved by the I/O submitters it serves).
    pub fn new(name: &'static CStr) -> Result<Self> {
        // SAFETY: The format is "%s" with one string argument, which is a valid C string.
        let wq = unsafe {
            bindings::alloc_workqueue_noprof(
                c"%s".as_char_ptr(),
                bindings::wq_flags_WQ_MEM_RECLAIM
                    | bindings::wq_flags_WQ_UNBOUND
                    | bindings::wq_flags_WQ_HIGHPRI,
                0,
                name.as_char_ptr(),
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
