// SPDX-License-Identifier: GPL-2.0

//! The predictive prefetch cache of a device.
//!
//! Predictions (sector range, probability) queue blocks by tier
//! ([`crate::logic::cache`]); fetch workers read them from the origin with
//! synchronous dm-io, off the I/O path, and install them in a pool of
//! 4 KiB buffers allocated when the cache is sized (never on the I/O path).
//! `map` serves a read whose every block is cached by copying from the pool
//! and completing the bio; any other read goes to the origin (a partial hit
//! is counted, and read whole from the origin: one origin I/O costs the
//! same as the missing part, and mixing sources would split the bio).
//! Writes are written through: they invalidate their blocks when mapped
//! and stay "in flight" in the cache's books until they complete, so a
//! prefetch that overlaps a write never installs the old data.
//!
//! All of the cache's state sits behind one irq-safe spinlock; copying a
//! hit's blocks happens under it (at most [`MAX_HIT_BLOCKS`] of them).

use crate::{
    dm::{
        self,
        crc32c,
        monotonic_ns,
        Device,
        DmIo,
        OwnedQueue, //
    },
    logic::{
        cache::{
            tier_of,
            Cache,
            CacheStats,
            Finish,
            Limits,
            Load,
            ReadResult,
            Slot,
            Tier,
            WriteToken, //
        },
        table::{
            CacheConfig,
            TableError, //
        },
    },
};
use core::sync::atomic::{
    AtomicBool,
    AtomicU32,
    AtomicU64,
    Ordering::Relaxed, //
};
use kernel::{
    alloc::VVec,
    new_mutex,
    new_spinlock_irq,
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
        Queue,
        Work,
        WorkItem, //
    },
};

const BLOCK_BYTES: usize = 4096;
const BLOCK_SECTORS: u64 = 8;
/// Largest read served from the cache, in blocks (256 KiB).
pub(crate) const MAX_HIT_BLOCKS: usize = 64;
/// Fetch workers (reads in flight at most) of a device.
pub(crate) const WORKERS: usize = 16;

/// The cache proper and its data, replaced whole when resized.
struct Store {
    cache: Cache<KVVec<Slot>>,
    /// Slot `i`'s data is `pool[i * 4096..][..4096]`.
    pool: KVVec<u8>,
}

struct Inner {
    store: Option<Store>,
    /// Bumped when the store is replaced: fetches and writes of an older
    /// store are not reported to the new one.
    generation: u32,
    /// Writes in flight in the current store.
    writes: u32,
    /// Writes in flight that began in an older store, and the token that
    /// holds the whole new store back from installing until they end.
    old_writes: u32,
    old_token: Option<WriteToken>,
    cfg: CacheConfig,
    /// Statistics of replaced stores, so counters do not go back.
    past: CacheStats,
}

/// What `map` remembers for `end_io` about a write the cache saw.
#[derive(Clone, Copy, Default)]
pub(crate) struct WriteMark {
    token: WriteToken,
    generation: u32,
    seen: bool,
}

/// The prefetch cache of one device.
#[pin_data]
pub(crate) struct PrefetchCache {
    #[pin]
    inner: SpinLockIrq<Inner>,
    /// Whether there is a store: the I/O path's first (and, without a
    /// cache, only) check.
    enabled: AtomicBool,
    /// Prefetching stopped (suspend, teardown).
    stopped: AtomicBool,
    verify: bool,
    blocks: u64,
    origin: Arc<Device>,
    io: DmIo,
    /// Runs the fetch workers and the pump; drained by [`Self::stop`].
    wq: OwnedQueue,
    /// User I/O in flight to the origin, and when it last completed.
    user_inflight: AtomicU32,
    last_user_io: AtomicU64,
    /// Each worker's read buffer (allocated by the worker).
    #[pin]
    bufs: [Mutex<VVec<u8>>; WORKERS],
    #[pin]
    pump: DelayedWork<PrefetchCache>,
    #[pin] w1: Work<PrefetchCache, 1>,
    #[pin] w2: Work<PrefetchCache, 2>,
    #[pin] w3: Work<PrefetchCache, 3>,
    #[pin] w4: Work<PrefetchCache, 4>,
    #[pin] w5: Work<PrefetchCache, 5>,
    #[pin] w6: Work<PrefetchCache, 6>,
    #[pin] w7: Work<PrefetchCache, 7>,
    #[pin] w8: Work<PrefetchCache, 8>,
    #[pin] w9: Work<PrefetchCache, 9>,
    #[pin] w10: Work<PrefetchCache, 10>,
    #[pin] w11: Work<PrefetchCache, 11>,
    #[pin] w12: Work<PrefetchCache, 12>,
    #[pin] w13: Work<PrefetchCache, 13>,
    #[pin] w14: Work<PrefetchCache, 14>,
    #[pin] w15: Work<PrefetchCache, 15>,
    #[pin] w16: Work<PrefetchCache, 16>,
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self, 0> for PrefetchCache { self.pump }
}

/// Re-checks the queue after `idle_ms`: background fetches wait for an
/// idle origin, predictive ones for its load to drop.
impl WorkItem<0> for PrefetchCache {
    type Pointer = Arc<PrefetchCache>;

    fn run(this: Arc<PrefetchCache>) {
        this.kick();
    }
}

/// The fetch workers: [`WORKERS`] work items of the cache, each with one
/// origin read in flight at a time and its own buffer.
macro_rules! workers {
    ($($id:literal => $field:ident),* $(,)?) => {
        $(
            impl_has_work! {
                impl HasWork<Self, $id> for PrefetchCache { self.$field }
            }

            impl WorkItem<$id> for PrefetchCache {
                type Pointer = Arc<PrefetchCache>;

                fn run(this: Arc<PrefetchCache>) {
                    this.fetch_loop($id);
                }
            }
        )*

        impl PrefetchCache {
            /// Queues every worker not queued yet.
            fn enqueue_workers(self: &Arc<Self>, q: &Queue) {
                $( let _ = q.enqueue::<_, $id>(self.clone()); )*
            }
        }
    };
}

workers! {
    1 => w1, 2 => w2, 3 => w3, 4 => w4, 5 => w5, 6 => w6, 7 => w7, 8 => w8,
    9 => w9, 10 => w10, 11 => w11, 12 => w12, 13 => w13, 14 => w14, 15 => w15, 16 => w16,
}

fn new_store(cache_mb: u32) -> Result<Option<Store>> {
    if cache_mb == 0 {
        return Ok(None);
    }
    let slots = cache_mb as usize * (1 << 20) / BLOCK_BYTES;
    Ok(Some(Store {
        cache: Cache::new(KVVec::from_elem(Slot::default(), slots, GFP_KERNEL)?),
        pool: KVVec::from_elem(0u8, slots * BLOCK_BYTES, GFP_KERNEL)?,
    }))
}

impl Inner {
    fn limits(&self) -> Limits {
        Limits {
            load_limit: self.cfg.load_limit,
            idle_ns: u64::from(self.cfg.idle_ms) * 1_000_000,
            max_inflight: self.cfg.prefetch_inflight,
            bytes_per_sec: u64::from(self.cfg.prefetch_kbps) * 1024,
        }
    }
}

/// Counters of the cache, for status and netlink.
pub(crate) struct CacheReport {
    pub(crate) stats: CacheStats,
    pub(crate) capacity_bytes: u64,
    pub(crate) cached_bytes: u64,
    pub(crate) queued: u64,
    pub(crate) inflight: u64,
}

impl PrefetchCache {
    /// A cache of `cfg.cache_mb` MiB (none if 0) for a device of `blocks`
    /// 4 KiB blocks on `origin`, with its fetch workers.
    pub(crate) fn new(
        cfg: CacheConfig,
        verify: bool,
        blocks: u64,
        origin: Arc<Device>,
    ) -> Result<Arc<Self>> {
        let store = new_store(cfg.cache_mb)?;
        let enabled = store.is_some();
        let this = Arc::pin_init(
            try_pin_init!(Self {
                inner <- new_spinlock_irq!(Inner {
                    store,
                    generation: 0,
                    writes: 0,
                    old_writes: 0,
                    old_token: None,
                    cfg,
                    past: CacheStats::default(),
                }),
                enabled: AtomicBool::new(enabled),
                stopped: AtomicBool::new(false),
                verify,
                blocks,
                origin,
                io: DmIo::new()?,
                wq: OwnedQueue::new(c"kforesight-fetch")?,
                user_inflight: AtomicU32::new(0),
                last_user_io: AtomicU64::new(0),
                bufs <- pin_init::pin_init_array_from_fn(|_| new_mutex!(VVec::new())),
                pump <- new_delayed_work!("PrefetchCache::pump"),
                w1 <- new_work!("PrefetchCache::w"),
                w2 <- new_work!("PrefetchCache::w"),
                w3 <- new_work!("PrefetchCache::w"),
                w4 <- new_work!("PrefetchCache::w"),
                w5 <- new_work!("PrefetchCache::w"),
                w6 <- new_work!("PrefetchCache::w"),
                w7 <- new_work!("PrefetchCache::w"),
                w8 <- new_work!("PrefetchCache::w"),
                w9 <- new_work!("PrefetchCache::w"),
                w10 <- new_work!("PrefetchCache::w"),
                w11 <- new_work!("PrefetchCache::w"),
                w12 <- new_work!("PrefetchCache::w"),
                w13 <- new_work!("PrefetchCache::w"),
                w14 <- new_work!("PrefetchCache::w"),
                w15 <- new_work!("PrefetchCache::w"),
                w16 <- new_work!("PrefetchCache::w"),
            }? Error),
            GFP_KERNEL,
        )?;
        Ok(this)
    }

    /// Whether the cache has a store.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// A read mapped: served from the cache if every block is cached
    /// (returns true; the bio's data is filled), else counted in flight to
    /// the origin.
    pub(crate) fn read(&self, bio: &mut dm::Bio<'_, super::PerBio>, offset: u64) -> bool {
        let sectors = u64::from(bio.sectors());
        if offset % BLOCK_SECTORS == 0 && sectors % BLOCK_SECTORS == 0 && sectors > 0 {
            let first = offset / BLOCK_SECTORS;
            let count = (sectors / BLOCK_SECTORS) as usize;
            if count <= MAX_HIT_BLOCKS && self.serve(bio, first, count) {
                return true;
            }
        }
        self.user_inflight.fetch_add(1, Relaxed);
        false
    }

    fn serve(&self, bio: &mut dm::Bio<'_, super::PerBio>, first: u64, count: usize) -> bool {
        let mut slots = [0usize; MAX_HIT_BLOCKS];
        let now = monotonic_ns();
        let mut inner = self.inner.lock();
        let Some(store) = inner.store.as_mut() else {
            return false;
        };
        let slots = &mut slots[..count];
        if store.cache.read(first, count as u32, now, slots) != ReadResult::Hit {
            return false;
        }
        for &s in slots.iter() {
            let Some(data) = store.pool.get(s * BLOCK_BYTES..(s + 1) * BLOCK_BYTES) else {
                return false;
            };
            if self.verify && crc32c(data) != store.cache.slot_crc(s) {
                // The read goes to the origin; the block is dropped.
                store.cache.verify_failed(s);
                return false;
            }
        }
        for (i, &s) in slots.iter().enumerate() {
            if let Some(data) = store.pool.get(s * BLOCK_BYTES..(s + 1) * BLOCK_BYTES) {
                bio.copy_to(i * BLOCK_BYTES, data);
            }
        }
        true
    }

    /// A read that went to the origin completed.
    pub(crate) fn read_done(&self) {
        self.user_inflight.fetch_sub(1, Relaxed);
        self.last_user_io.store(monotonic_ns(), Relaxed);
    }

    /// A write (or discard, write-zeroes) of sectors `offset ..+ sectors`
    /// is mapped: its blocks leave the cache and are kept from it until
    /// [`Self::write_done`].
    pub(crate) fn write(&self, offset: u64, sectors: u32) -> WriteMark {
        self.user_inflight.fetch_add(1, Relaxed);
        let first = offset / BLOCK_SECTORS;
        let end = (offset + u64::from(sectors)).div_ceil(BLOCK_SECTORS);
        let count = u32::try_from(end - first).unwrap_or(u32::MAX);
        let mut inner = self.inner.lock();
        let generation = inner.generation;
        let Some(store) = inner.store.as_mut() else {
            return WriteMark::default();
        };
        let token = store.cache.write_begin(first, count);
        inner.writes += 1;
        WriteMark {
            token,
            generation,
            seen: true,
        }
    }

    /// The write `mark` came from completed.
    pub(crate) fn write_done(&self, mark: WriteMark) {
        self.user_inflight.fetch_sub(1, Relaxed);
        self.last_user_io.store(monotonic_ns(), Relaxed);
        if !mark.seen {
            return;
        }
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        if mark.generation == inner.generation {
            inner.writes = inner.writes.saturating_sub(1);
            if let Some(store) = inner.store.as_mut() {
                store.cache.write_end(mark.token);
            }
        } else {
            inner.old_writes = inner.old_writes.saturating_sub(1);
            if inner.old_writes == 0 {
                if let (Some(t), Some(store)) = (inner.old_token.take(), inner.store.as_mut()) {
                    store.cache.write_end(t);
                }
            }
        }
    }

    /// Queues read predictions for sectors `start ..+ len` with probability
    /// `p` (millionths); returns the blocks queued.
    pub(crate) fn predict(self: &Arc<Self>, start: u64, len: u64, p: u32) -> u64 {
        let first = start / BLOCK_SECTORS;
        let end = start.saturating_add(len).div_ceil(BLOCK_SECTORS).min(self.blocks);
        let now = monotonic_ns();
        let mut queued = 0;
        {
            let mut inner = self.inner.lock();
            let cfg = inner.cfg;
            let Some(tier) = tier_of(p, cfg.critical_ppm, cfg.predictive_ppm, cfg.min_ppm) else {
                return 0;
            };
            let Some(store) = inner.store.as_mut() else {
                return 0;
            };
            for b in first..end {
                if store.cache.enqueue(b, p, tier, now).is_ok() {
                    queued += 1;
                }
            }
        }
        if queued > 0 {
            self.kick();
        }
        queued
    }

    /// Starts the fetch workers that are not running.
    fn kick(self: &Arc<Self>) {
        if !self.stopped.load(Relaxed) {
            self.enqueue_workers(self.wq.queue());
        }
    }

    /// A worker's loop: fetch queued blocks while the tiers' conditions
    /// allow; if some wait (load, idleness, bandwidth), look again later.
    fn fetch_loop(self: &Arc<Self>, worker: usize) {
        let Some(buf) = self.bufs.get(worker - 1) else {
            return;
        };
        let mut buf = buf.lock();
        if buf.is_empty() && buf.extend_from_slice(&[0u8; BLOCK_BYTES], GFP_KERNEL).is_err() {
            return;
        }
        while !self.stopped.load(Relaxed) {
            let now = monotonic_ns();
            let load = Load {
                origin_inflight: self.user_inflight.load(Relaxed),
                last_user_io: self.last_user_io.load(Relaxed),
            };
            let (fetch, generation, waiting, idle_ms) = {
                let mut inner = self.inner.lock();
                let limits = inner.limits();
                let generation = inner.generation;
                let idle_ms = inner.cfg.idle_ms;
                let Some(store) = inner.store.as_mut() else {
                    return;
                };
                let fetch = store.cache.next_fetch(now, load, &limits);
                (fetch, generation, store.cache.queued() > 0, idle_ms)
            };
            let Some(fetch) = fetch else {
                if waiting {
                    let _ = self
                        .wq
                        .queue()
                        .enqueue_delayed::<_, 0>(self.clone(), msecs_to_jiffies(idle_ms.max(1)));
                }
                return;
            };
            let ok = self
                .io
                .read(&self.origin, fetch.block * BLOCK_SECTORS, &mut buf)
                .is_ok();
            let crc = if ok && self.verify { crc32c(&buf) } else { 0 };
            let mut inner = self.inner.lock();
            if inner.generation != generation {
                continue;
            }
            let Some(store) = inner.store.as_mut() else {
                return;
            };
            let slot = fetch.slot;
            if store.cache.finish_fetch(fetch, ok, crc, monotonic_ns()) == Finish::Installed {
                if let Some(dst) = store.pool.get_mut(slot * BLOCK_BYTES..(slot + 1) * BLOCK_BYTES) {
                    dst.copy_from_slice(&buf);
                }
            }
        }
    }

    /// Resizes the cache to `cache_mb` MiB (0: none): a new, empty store.
    /// Process context (allocates).
    pub(crate) fn resize(self: &Arc<Self>, cache_mb: u32) -> Result {
        let mut store = new_store(cache_mb)?;
        let old = {
            let mut inner = self.inner.lock();
            let inner = &mut *inner;
            if let Some(old) = inner.store.as_ref() {
                add_stats(&mut inner.past, old.cache.stats());
            }
            // Writes in flight began in the old store: hold the new one
            // back from installing anything until they end.
            inner.old_writes += inner.writes;
            inner.writes = 0;
            if let Some(s) = store.as_mut() {
                if inner.old_writes > 0 {
                    let t = s.cache.write_begin(0, u32::try_from(self.blocks).unwrap_or(u32::MAX));
                    if let Some(prev) = inner.old_token.replace(t) {
                        s.cache.write_end(prev);
                    }
                }
            } else {
                inner.old_token = None;
            }
            inner.generation = inner.generation.wrapping_add(1);
            inner.cfg.cache_mb = cache_mb;
            self.enabled.store(store.is_some(), Relaxed);
            core::mem::replace(&mut inner.store, store)
        };
        drop(old);
        self.kick();
        Ok(())
    }

    /// Changes a prefetch setting (`cache set <key> <value>`).
    pub(crate) fn set(&self, key: &[u8], v: u32) -> Result<(), TableError> {
        self.configure(|cfg| {
            if key != b"cache_mb" && cfg.set_value(key, v)? {
                Ok(())
            } else {
                Err(TableError::UnknownKey)
            }
        })
    }

    /// Changes prefetch settings together: `f` edits a copy, which takes
    /// effect if `f` and validation succeed (like the log's `configure`).
    pub(crate) fn configure(
        &self,
        f: impl FnOnce(&mut CacheConfig) -> Result<(), TableError>,
    ) -> Result<(), TableError> {
        let mut inner = self.inner.lock();
        let mut cfg = inner.cfg;
        f(&mut cfg)?;
        cfg.validate()?;
        inner.cfg = cfg;
        Ok(())
    }

    /// The configuration in force (for the table line).
    pub(crate) fn config(&self) -> CacheConfig {
        self.inner.lock().cfg
    }

    /// Stops prefetching and waits for the workers (suspend, teardown).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Relaxed);
        dm::flush_delayed::<_, 0>(self);
        self.wq.flush();
    }

    /// Lets prefetching go on (resume).
    pub(crate) fn resume(self: &Arc<Self>) {
        self.stopped.store(false, Relaxed);
        self.kick();
    }

    /// The counters.
    pub(crate) fn report(&self) -> CacheReport {
        let inner = self.inner.lock();
        let mut stats = inner.past;
        let (mut capacity, mut cached, mut queued, mut inflight) = (0, 0, 0, 0);
        if let Some(s) = inner.store.as_ref() {
            add_stats(&mut stats, s.cache.stats());
            capacity = s.cache.capacity() as u64 * BLOCK_BYTES as u64;
            cached = s.cache.cached() as u64 * BLOCK_BYTES as u64;
            queued = s.cache.queued() as u64;
            inflight = s.cache.fetching() as u64;
        }
        CacheReport {
            stats,
            capacity_bytes: capacity,
            cached_bytes: cached,
            queued,
            inflight,
        }
    }
}

fn add_stats(acc: &mut CacheStats, s: &CacheStats) {
    acc.hits += s.hits;
    acc.misses += s.misses;
    acc.partial_hits += s.partial_hits;
    for t in Tier::ALL {
        let i = t.index();
        acc.enqueued[i] += s.enqueued[i];
        acc.issued[i] += s.issued[i];
        acc.completed[i] += s.completed[i];
        acc.used[i] += s.used[i];
        acc.wasted[i] += s.wasted[i];
    }
    acc.errors += s.errors;
    acc.stale_dropped += s.stale_dropped;
    acc.invalidated += s.invalidated;
    acc.evicted += s.evicted;
    acc.verify_mismatch += s.verify_mismatch;
}
