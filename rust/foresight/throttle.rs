// SPDX-License-Identifier: GPL-2.0

//! The write throttle: QEMU's auto-converge for a disk.  While a limit is
//! set (`write_kbps`), writes beyond it wait, in order, and are submitted as
//! the rate allows; a pre-copy migration whose rounds stop shrinking slows
//! the writer this way instead of giving up.
//!
//! Writes are admitted in `map` while the token bucket has room and none is
//! waiting; the others are deferred ([`dm::Deferred`]) to a list that a
//! delayed work item drains at the rate.  Suspend lets everything through:
//! `presuspend` submits what waits and opens the throttle until `resume`,
//! so a suspend (a migration's switchover) never waits on the limit.

use crate::{
    dm::{
        self,
        DeferList,
        Deferred,
        NoIo,
        OwnedQueue, //
    },
    logic::bucket::TokenBucket,
};
use core::sync::atomic::{
    AtomicBool,
    AtomicU64,
    Ordering::Relaxed, //
};
use kernel::{
    new_spinlock_irq,
    prelude::*,
    sync::{
        Arc,
        SpinLockIrq, //
    },
    time::msecs_to_jiffies,
    workqueue::{
        impl_has_delayed_work,
        new_delayed_work,
        DelayedWork,
        WorkItem, //
    },
};

struct State {
    /// The limit in bytes per second; 0: none.
    bytes_per_sec: u64,
    bucket: TokenBucket,
    waiting: DeferList,
    /// Between `presuspend` and `resume`: everything passes.
    passing: bool,
    /// The drain is queued.
    scheduled: bool,
}

/// See the [module docs](self).
#[pin_data]
pub(crate) struct WriteThrottle {
    #[pin]
    state: SpinLockIrq<State>,
    /// A limit is set: without one, `map` admits a write without the lock.
    limited: AtomicBool,
    /// Writes that waited, and the bytes of them (status).
    pub(crate) delayed: AtomicU64,
    pub(crate) delayed_bytes: AtomicU64,
    wq: OwnedQueue,
    #[pin]
    drain: DelayedWork<WriteThrottle>,
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self, 0> for WriteThrottle { self.drain }
}

/// Submits the waiting writes the rate allows; queued again while any wait.
impl WorkItem<0> for WriteThrottle {
    type Pointer = Arc<WriteThrottle>;

    fn run(this: Arc<WriteThrottle>) {
        let _noio = NoIo::begin();
        this.drain_now();
    }
}

impl WriteThrottle {
    /// The throttle of the mapped device `devt` (no limit).
    pub(crate) fn new(devt: u32) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                state <- new_spinlock_irq!(State {
                    bytes_per_sec: 0,
                    bucket: TokenBucket::new(),
                    waiting: DeferList::new(),
                    passing: false,
                    scheduled: false,
                }),
                limited: AtomicBool::new(false),
                delayed: AtomicU64::new(0),
                delayed_bytes: AtomicU64::new(0),
                wq: OwnedQueue::new(c"fsthrot", devt)?,
                drain <- new_delayed_work!("WriteThrottle::drain"),
            }),
            GFP_KERNEL,
        )
    }

    /// The limit, in KiB per second (0: none).
    pub(crate) fn kbps(&self) -> u64 {
        self.state.lock().bytes_per_sec / 1024
    }

    /// Sets the limit (0: none); writes waiting under an older one go at
    /// the new rate (all at once when lifted).
    pub(crate) fn set_kbps(self: &Arc<Self>, kbps: u64) {
        {
            let mut s = self.state.lock();
            s.bytes_per_sec = kbps.saturating_mul(1024);
            self.limited.store(s.bytes_per_sec != 0, Relaxed);
        }
        self.drain_now();
    }

    /// Writes waiting now.
    pub(crate) fn waiting(&self) -> usize {
        self.state.lock().waiting.len()
    }

    /// Whether a write of `bytes` may go now (else `map` defers it).
    #[inline]
    pub(crate) fn admit(&self, bytes: u32) -> bool {
        !self.limited.load(Relaxed) || self.admit_limited(bytes)
    }

    /// [`Self::admit`] with a limit set (out of line: the write path
    /// without one stays short).
    #[cold]
    fn admit_limited(&self, bytes: u32) -> bool {
        let mut s = self.state.lock();
        if s.bytes_per_sec == 0 || s.passing {
            return true;
        }
        if !s.waiting.is_empty() {
            return false;
        }
        let rate = s.bytes_per_sec;
        s.bucket.take(dm::monotonic_ns(), rate, u64::from(bytes))
    }

    /// Takes a write `admit` refused (in `map`'s context).
    pub(crate) fn defer(self: &Arc<Self>, bio: Deferred) {
        self.delayed.fetch_add(1, Relaxed);
        self.delayed_bytes.fetch_add(u64::from(bio.size()), Relaxed);
        let schedule = {
            let mut s = self.state.lock();
            s.waiting.push(bio);
            !core::mem::replace(&mut s.scheduled, true)
        };
        if schedule {
            self.schedule();
        }
    }

    /// Queues the drain for when the first waiting write fits.
    fn schedule(self: &Arc<Self>) {
        let wait_ns = {
            let mut s = self.state.lock();
            let (rate, front) = (s.bytes_per_sec, s.waiting.front_size().unwrap_or(0));
            s.bucket.wait_ns(dm::monotonic_ns(), rate, u64::from(front))
        };
        let ms = u32::try_from(wait_ns.div_ceil(1_000_000)).unwrap_or(u32::MAX);
        let _ = self
            .wq
            .queue()
            .enqueue_delayed::<_, 0>(self.clone(), msecs_to_jiffies(ms));
    }

    /// Submits what the rate allows now (everything if the throttle is open
    /// or lifted), outside the lock, then queues itself again if writes
    /// still wait.
    fn drain_now(self: &Arc<Self>) {
        let mut go = DeferList::new();
        let more = {
            let mut s = self.state.lock();
            let now = dm::monotonic_ns();
            while let Some(front) = s.waiting.front_size() {
                let rate = if s.passing { 0 } else { s.bytes_per_sec };
                if !s.bucket.take(now, rate, u64::from(front)) {
                    break;
                }
                if let Some(d) = s.waiting.pop() {
                    go.push(d);
                }
            }
            s.scheduled = !s.waiting.is_empty();
            s.scheduled
        };
        while let Some(d) = go.pop() {
            d.submit();
        }
        if more {
            self.schedule();
        }
    }

    /// Suspend: what waits is submitted and everything passes until
    /// [`resume`](Self::resume).
    pub(crate) fn presuspend(self: &Arc<Self>) {
        self.state.lock().passing = true;
        self.drain_now();
        dm::flush_delayed::<_, 0>(&**self);
    }

    /// The throttle applies again.
    pub(crate) fn resume(&self) {
        self.state.lock().passing = false;
    }
}
