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
    workqueue::Queue, //
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
