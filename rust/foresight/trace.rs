// SPDX-License-Identifier: GPL-2.0

//! Access traces for netlink listeners.
//!
//! While someone listens to the `trace` multicast group, `map` appends one
//! record per bio (time, sector, length, op) to a per-CPU-shard buffer,
//! under an irq-safe spinlock, without allocating; a worker sends the
//! buffers as `trace-ntf` messages of up to [`RECORDS_PER_MSG`] records.
//! It runs when a buffer is half full, and otherwise [`FLUSH_DELAY_MS`]
//! after a buffer's first record.  Records are dropped (and counted) when a
//! device's rate limit is exceeded, when a buffer is full, and when a
//! listener's socket is full.
//!
//! Nobody listening costs one relaxed load of a global flag per bio: the
//! flag is raised when a socket joins the group and lowered by the worker
//! once the group has had no listener for a second.

use crate::{
    dm::{
        self,
        monotonic_ns,
        NoIo,
        OwnedQueue, //
    },
    genl::{
        self,
        uapi::{
            attr,
            cmd,
            GROUP_TRACE,
            NAME_LEN, //
        },
        Multicast,
    },
    logic::{
        bucket::TokenBucket,
        trace::{
            encode_dev,
            Record,
            RECORD_BYTES, //
        },
    },
};
use core::sync::atomic::{
    AtomicBool,
    AtomicU64,
    Ordering::Relaxed, //
};
use kernel::{
    cpu::CpuId,
    new_mutex, new_spinlock_irq,
    prelude::*,
    sync::{
        Arc,
        Mutex,
        SpinLockIrq, //
    },
    time::msecs_to_jiffies,
    workqueue::{
        impl_has_delayed_work,
        impl_has_work,
        new_delayed_work,
        new_work,
        DelayedWork,
        Work,
        WorkItem, //
    },
};

const SHARDS: usize = 4;
/// Records each shard buffers.
const SHARD_RECORDS: usize = 512;
/// Records per message (24 KiB of payload).
pub(crate) const RECORDS_PER_MSG: usize = 1024;
/// Longest a record waits in a buffer that is not filling up.
pub(crate) const FLUSH_DELAY_MS: u32 = 20;

static LISTENING: AtomicBool = AtomicBool::new(false);
static LAST_JOIN_NS: AtomicU64 = AtomicU64::new(0);

/// A socket joined the trace group: start recording.
pub(crate) fn listener_joined() {
    LAST_JOIN_NS.store(monotonic_ns(), Relaxed);
    LISTENING.store(true, Relaxed);
}

/// Whether anyone may be listening to traces.
#[inline]
fn listening() -> bool {
    LISTENING.load(Relaxed)
}

struct Shard {
    records: KVVec<Record>,
    /// At most `rate` records a second (0: no limit).
    bucket: TokenBucket,
    rate: u64,
}

/// The trace of one device.
#[pin_data]
pub(crate) struct Tracer {
    /// The mapped device's number (its name is looked up when sending).
    devt: u32,
    #[pin]
    shards: [SpinLockIrq<Shard>; SHARDS],
    /// Records taken out of the shards, being sent (worker only).
    #[pin]
    scratch: Mutex<(KVVec<Record>, KVVec<u8>)>,
    sent: AtomicU64,
    dropped: AtomicU64,
    #[pin]
    now: Work<Tracer, 0>,
    #[pin]
    later: DelayedWork<Tracer, 1>,
}

impl_has_work! {
    impl HasWork<Self, 0> for Tracer { self.now }
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self, 1> for Tracer { self.later }
}

impl WorkItem<0> for Tracer {
    type Pointer = Arc<Tracer>;

    fn run(this: Arc<Tracer>) {
        // The device may be suspended: postsuspend waits for this.
        let _noio = NoIo::begin();
        this.flush();
    }
}

impl WorkItem<1> for Tracer {
    type Pointer = Arc<Tracer>;

    fn run(this: Arc<Tracer>) {
        // The device may be suspended: postsuspend waits for this.
        let _noio = NoIo::begin();
        this.flush();
    }
}

fn shard(rate: u64) -> Result<Shard> {
    Ok(Shard {
        records: KVVec::with_capacity(SHARD_RECORDS, GFP_KERNEL)?,
        bucket: TokenBucket::new(),
        rate: rate.div_ceil(SHARDS as u64),
    })
}

impl Tracer {
    /// A tracer for the mapped device `devt`, sending at most `rate`
    /// records per second (0: no limit).
    pub(crate) fn new(devt: u32, rate: u32) -> Result<Arc<Self>> {
        let rate = u64::from(rate);
        Arc::pin_init(
            try_pin_init!(Self {
                devt,
                shards <- pin_init::pin_init_array_from_fn(|_| {
                    new_spinlock_irq!(shard(rate).unwrap_or(Shard {
                        records: KVVec::new(),
                        bucket: TokenBucket::new(),
                        rate,
                    }))
                }),
                scratch <- new_mutex!((
                    KVVec::with_capacity(SHARDS * SHARD_RECORDS, GFP_KERNEL)?,
                    KVVec::with_capacity(RECORDS_PER_MSG * RECORD_BYTES, GFP_KERNEL)?
                )),
                sent: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                now <- new_work!("Tracer::now"),
                later <- new_delayed_work!("Tracer::later"),
            }? Error),
            GFP_KERNEL,
        )
    }

    /// Records a bio submitted to the device, if anyone listens.
    #[inline]
    pub(crate) fn record(self: &Arc<Self>, wq: &OwnedQueue, sector: u64, sectors: u32, op: u8) {
        if listening() {
            self.append(wq, sector, sectors, op);
        }
    }

    fn append(self: &Arc<Self>, wq: &OwnedQueue, sector: u64, sectors: u32, op: u8) {
        let ts_ns = monotonic_ns();
        let shard = &self.shards[CpuId::current().as_u32() as usize % SHARDS];
        let len = {
            let mut s = shard.lock();
            // A shard whose buffer could not be allocated drops everything.
            let rate = s.rate;
            if !s.bucket.take(ts_ns, rate, 1) || s.records.len() == s.records.capacity() {
                drop(s);
                self.dropped.fetch_add(1, Relaxed);
                return;
            }
            let r = Record {
                ts_ns,
                sector,
                sectors,
                op,
            };
            // Within capacity (checked above): never allocates.
            let _ = s.records.push(r, GFP_NOWAIT);
            s.records.len()
        };
        if len == 1 {
            let _ = wq
                .queue()
                .enqueue_delayed::<_, 1>(self.clone(), msecs_to_jiffies(FLUSH_DELAY_MS));
        } else if len == SHARD_RECORDS / 2 {
            let _ = wq.queue().enqueue::<_, 0>(self.clone());
        }
    }

    /// Sets the rate limit (records per second; 0: none).
    pub(crate) fn set_rate(&self, rate: u32) {
        let rate = u64::from(rate).div_ceil(SHARDS as u64);
        for s in &self.shards {
            let mut s = s.lock();
            s.bucket = TokenBucket::new();
            s.rate = rate;
        }
    }

    /// Records sent to listeners, and dropped.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.sent.load(Relaxed), self.dropped.load(Relaxed))
    }

    /// Sends what the buffers hold.  Process context.
    fn flush(&self) {
        let mut guard = self.scratch.lock();
        let (records, bytes) = &mut *guard;
        for s in &self.shards {
            let mut s = s.lock();
            // `records` has room for every shard's buffer: no allocation.
            let _ = records.extend_from_slice(&s.records, GFP_NOWAIT);
            s.records.clear();
        }
        if records.is_empty() {
            return;
        }
        let mut name = [0u8; NAME_LEN as usize];
        let name_len = dm::device_name(self.devt, &mut name);
        for chunk in records.chunks(RECORDS_PER_MSG) {
            bytes.clear();
            for r in chunk {
                // Within the capacity reserved for one message.
                let _ = bytes.extend_from_slice(&r.encode(), GFP_NOWAIT);
            }
            match self.send(&name, name_len, bytes) {
                Ok(()) => {
                    self.sent.fetch_add(chunk.len() as u64, Relaxed);
                }
                // Nobody listens any more: nothing was lost by anyone.
                Err(e) if e == ESRCH => {}
                // A listener's socket was full, or no memory: lost.
                Err(_) => {
                    self.dropped.fetch_add(chunk.len() as u64, Relaxed);
                }
            }
        }
        records.clear();
        if !genl::has_listeners(GROUP_TRACE)
            && monotonic_ns().saturating_sub(LAST_JOIN_NS.load(Relaxed)) > 1_000_000_000
        {
            LISTENING.store(false, Relaxed);
        }
    }

    fn send(&self, name: &[u8], name_len: Option<usize>, records: &[u8]) -> Result {
        let mut m = Multicast::new(cmd::TRACE_NTF, records.len() + 256)?;
        {
            let mut msg = m.msg();
            if let Some(n) = name_len {
                if let Ok(name) = CStr::from_bytes_with_nul(&name[..=n]) {
                    msg.put_str(attr::TRACE_NAME, name)?;
                }
            }
            msg.put_u32(attr::TRACE_DEV, encode_dev(self.devt))?;
            msg.put_u64(attr::TRACE_DROPPED, self.dropped.load(Relaxed))?;
            msg.put_bytes(attr::TRACE_RECORDS, records)?;
        }
        m.send(GROUP_TRACE)
    }

    /// Sends what is buffered and waits for pending sends: before the
    /// device suspends, and before the tracer goes away (no timer is left).
    pub(crate) fn quiesce(&self, wq: &OwnedQueue) {
        dm::flush_delayed::<_, 1>(self);
        wq.flush();
    }
}
