// SPDX-License-Identifier: GPL-2.0

//! The predictive prefetch cache of a device.
//!
//! Predictions (sector range, probability) queue blocks by tier
//! ([`crate::logic::cache`]); fetch workers read them from the origin with
//! synchronous dm-io, off the I/O path, and install them in a pool of
//! 4 KiB buffers allocated when the cache is sized (never on the I/O path).
//!
//! `map` serves a read whose every 4 KiB block is cached, whatever its
//! 512-byte offset and length, by copying from the pool and completing
//! the bio.  A read touching more than [`MAX_HIT_BLOCKS`] blocks whose
//! first [`MAX_HIT_BLOCKS`] are cached is cut where they end
//! (`dm_accept_partial_bio`): that part is served, and the rest comes
//! back to `map` as a read of its own, served or sent to the origin
//! alike (each part is counted as a read).  Every other read goes
//! whole to the origin: a partial hit is counted, and read whole from the
//! origin (one origin I/O costs about the same as its missing part, and
//! serving part of a bio would split it, so the read would still wait for
//! the origin).  Every read the cache sees is counted as a hit, a partial
//! hit or a miss.
//!
//! Writes are written through: they invalidate their blocks when mapped
//! and stay "in flight" in the cache's books until they complete, so a
//! prefetch that overlaps a write never installs the old data.  Writes are
//! counted whatever the cache's state ([`WriteGate`], [`Switch`]), so a
//! cache enabled or resized while writes are in flight holds back until
//! they end.
//!
//! Locks: the cache's books sit behind one irq-safe spinlock, held for a
//! bounded time (see "Bounded work" in [`crate::logic::cache`]).  The pool
//! is split in [`STRIPES`] stripes, each behind its own lock: a hit pins
//! its slots under the books' lock, copies block by block under the
//! stripe locks, then unpins; a fetch writes its slot's data under the
//! stripe lock before installing it.  Only a resize nests the two (books,
//! then stripes).

use crate::{
    dm::{
        self,
        crc32c,
        monotonic_ns,
        Device,
        DmIo,
        NoIo,
        OwnedQueue, //
    },
    logic::{
        cache::{
            carry_threshold,
            tier_of,
            Cache,
            CacheStats,
            Carry,
            Finish,
            Limits,
            Load,
            ReadResult,
            Slot,
            Switch,
            SwitchWrite,
            Tier,
            WriteGate, //
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

/// Stripes of the data pool: slot `i`'s 4 KiB are in stripe `i % STRIPES`
/// at `(i / STRIPES) * 4096`.
pub(crate) const STRIPES: usize = 16;
/// Predicted blocks queued per hold of the books' lock.
const PREDICT_STEP: u64 = 256;
/// Slots swept per hold of the books' lock.
const SWEEP_STEP: usize = 1024;
/// Blocks scanned, pinned or checked per hold of the books' lock while a
/// resize carries the old cache's blocks over.
const CARRY_STEP: usize = 256;
/// Checks of what a resize carried before it gives up and starts empty.
const CARRY_TRIES: u32 = 4;
/// A read that misses has the blocks it touches queued to be fetched
/// ([`CacheConfig::keep_reads`]) if it is at most 64 KiB (16 blocks, 17
/// unaligned); larger reads are scans.
const KEEP_BLOCKS: u64 = 16;

/// The cache's books.
type Books = Cache<KVVec<Slot>>;
/// The data of every stripe.
type StripeData = [KVVec<u8>; STRIPES];

struct Inner {
    /// The cache of the current generation (none while `cache_mb` is 0),
    /// and the writes in flight of every generation.
    sw: Switch<KVVec<Slot>>,
    cfg: CacheConfig,
}

/// One stripe of the data of the cache of generation `generation`.
struct Stripe {
    generation: u32,
    bytes: KVVec<u8>,
}

/// What `map` remembers for `end_io` about a write.
#[derive(Clone, Copy, Default)]
pub(crate) enum WriteMark {
    /// Not a write.
    #[default]
    None,
    /// Counted in the gate's shard (no cache saw it).
    Gate(u8),
    /// Registered with the cache.
    Cache(SwitchWrite),
}

/// The prefetch cache of one device.
#[pin_data]
pub(crate) struct PrefetchCache {
    #[pin]
    inner: SpinLockIrq<Inner>,
    /// Writes no cache saw, and whether there is a cache: the I/O path's
    /// first (and, without a cache, only) check.
    gate: WriteGate,
    /// The data of the current cache's slots.
    #[pin]
    data: [SpinLockIrq<Stripe>; STRIPES],
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
    /// Drops the cached blocks of wide writes, off the I/O path.
    #[pin]
    sweeper: Work<PrefetchCache, 17>,
    #[pin]
    w1: Work<PrefetchCache, 1>,
    #[pin]
    w2: Work<PrefetchCache, 2>,
    #[pin]
    w3: Work<PrefetchCache, 3>,
    #[pin]
    w4: Work<PrefetchCache, 4>,
    #[pin]
    w5: Work<PrefetchCache, 5>,
    #[pin]
    w6: Work<PrefetchCache, 6>,
    #[pin]
    w7: Work<PrefetchCache, 7>,
    #[pin]
    w8: Work<PrefetchCache, 8>,
    #[pin]
    w9: Work<PrefetchCache, 9>,
    #[pin]
    w10: Work<PrefetchCache, 10>,
    #[pin]
    w11: Work<PrefetchCache, 11>,
    #[pin]
    w12: Work<PrefetchCache, 12>,
    #[pin]
    w13: Work<PrefetchCache, 13>,
    #[pin]
    w14: Work<PrefetchCache, 14>,
    #[pin]
    w15: Work<PrefetchCache, 15>,
    #[pin]
    w16: Work<PrefetchCache, 16>,
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self, 0> for PrefetchCache { self.pump }
}

impl_has_work! {
    impl HasWork<Self, 17> for PrefetchCache { self.sweeper }
}

/// Sweeps in bounded steps, the lock dropped between them.
impl WorkItem<17> for PrefetchCache {
    type Pointer = Arc<PrefetchCache>;

    fn run(this: Arc<PrefetchCache>) {
        let _noio = NoIo::begin();
        loop {
            let mut inner = this.inner.lock();
            let Some(c) = inner.sw.cache_mut() else {
                return;
            };
            if !c.sweep(SWEEP_STEP) {
                return;
            }
        }
    }
}

/// Re-checks the queue after `idle_ms`: background fetches wait for an
/// idle origin, predictive ones for its load to drop.
impl WorkItem<0> for PrefetchCache {
    type Pointer = Arc<PrefetchCache>;

    fn run(this: Arc<PrefetchCache>) {
        let _noio = NoIo::begin();
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
                    // The device may be suspended: postsuspend waits for this.
                    let _noio = NoIo::begin();
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

/// A cache of `cache_mb` MiB (none if 0) and its data's stripes (process
/// context: allocates).
fn new_store(cache_mb: u32) -> Result<(Option<Books>, StripeData)> {
    let mut stripes: StripeData = core::array::from_fn(|_| KVVec::new());
    if cache_mb == 0 {
        return Ok((None, stripes));
    }
    let slots = cache_mb as usize * (1 << 20) / BLOCK_BYTES;
    for s in stripes.iter_mut() {
        *s = KVVec::from_elem(0u8, slots.div_ceil(STRIPES) * BLOCK_BYTES, GFP_KERNEL)?;
    }
    let cache = Cache::new(KVVec::from_elem(Slot::default(), slots, GFP_KERNEL)?);
    Ok((Some(cache), stripes))
}

/// Where slot `slot`'s data is: its stripe, and its bytes there.
fn locate(slot: usize) -> (usize, core::ops::Range<usize>) {
    let at = slot / STRIPES * BLOCK_BYTES;
    (slot % STRIPES, at..at + BLOCK_BYTES)
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
    /// A cache of `cfg.cache_mb` MiB (none if 0) for the mapped device
    /// `devt` of `blocks` 4 KiB blocks on `origin`, with its fetch workers.
    pub(crate) fn new(
        cfg: CacheConfig,
        verify: bool,
        devt: u32,
        blocks: u64,
        origin: Arc<Device>,
    ) -> Result<Arc<Self>> {
        let this = Arc::pin_init(
            try_pin_init!(Self {
                inner <- new_spinlock_irq!(Inner {
                    sw: Switch::new(),
                    cfg,
                }),
                gate: WriteGate::new(),
                data <- pin_init::pin_init_array_from_fn(|_| {
                    new_spinlock_irq!(Stripe {
                        generation: 0,
                        bytes: KVVec::new(),
                    })
                }),
                stopped: AtomicBool::new(false),
                verify,
                blocks,
                origin,
                io: DmIo::new()?,
                wq: OwnedQueue::new(c"fsfetch", devt)?,
                user_inflight: AtomicU32::new(0),
                last_user_io: AtomicU64::new(0),
                bufs <- pin_init::pin_init_array_from_fn(|_| new_mutex!(VVec::new())),
                pump <- new_delayed_work!("PrefetchCache::pump"),
                sweeper <- new_work!("PrefetchCache::sweeper"),
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
        this.resize(cfg.cache_mb)?;
        Ok(this)
    }

    /// Whether there is a cache.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.gate.enabled()
    }

    /// A read mapped: served from the cache if every 4 KiB block it
    /// touches is cached (returns true; the bio's data is filled), else
    /// counted in flight to the origin.
    pub(crate) fn read(
        self: &Arc<Self>,
        bio: &mut dm::Bio<'_, super::PerBio>,
        offset: u64,
    ) -> bool {
        let sectors = u64::from(bio.sectors());
        let mut kept = false;
        if sectors > 0 && self.serve(bio, offset, sectors, &mut kept) {
            return true;
        }
        if kept {
            self.kick();
        }
        self.user_inflight.fetch_add(1, Relaxed);
        false
    }

    /// Serves sectors `offset ..+ sectors` from the cache if it can, or
    /// their first [`MAX_HIT_BLOCKS`] blocks (the bio is cut there).
    /// On a miss, with `keep_reads`, queues the blocks the read touches
    /// (up to [`KEEP_BLOCKS`]) to be fetched (`kept`: the workers have
    /// work).
    fn serve(
        &self,
        bio: &mut dm::Bio<'_, super::PerBio>,
        offset: u64,
        mut sectors: u64,
        kept: &mut bool,
    ) -> bool {
        let first = offset / BLOCK_SECTORS;
        let end = (offset + sectors)
            .div_ceil(BLOCK_SECTORS)
            .min(first + MAX_HIT_BLOCKS as u64);
        // Where the bio is cut if it is served.
        let cut = (end * BLOCK_SECTORS).min(offset + sectors) - offset;
        let count = (end - first) as u32;
        let mut slots = [0usize; MAX_HIT_BLOCKS];
        let mut crcs = [0u32; MAX_HIT_BLOCKS];
        let now = monotonic_ns();
        let generation = {
            let mut inner = self.inner.lock();
            let generation = inner.sw.generation();
            let keep_reads = inner.cfg.keep_reads != 0;
            let Some(c) = inner.sw.cache_mut() else {
                return false;
            };
            if c.read(first, count, now, &mut slots) != ReadResult::Hit {
                // The read's own data is not kept: its pages are the
                // submitter's, who may change them before it completes
                // (O_DIRECT, io_uring buffers).  Its blocks are fetched.
                let last = (offset + sectors - 1) / BLOCK_SECTORS;
                if keep_reads && last - first <= KEEP_BLOCKS {
                    let p = c.reuse_ppm();
                    for b in first..=last {
                        if c.enqueue(b, p, Tier::Predictive, now).is_ok() {
                            *kept = true;
                        }
                    }
                }
                return false;
            }
            if self.verify {
                for (crc, &s) in crcs.iter_mut().zip(slots.iter()).take(count as usize) {
                    *crc = c.slot_crc(s);
                }
            }
            generation
        };
        // The slots are pinned: copy without the books' lock, into the
        // part of the bio they cover.
        let n = count as usize;
        if cut < sectors && bio.accept_partial(cut as u32) {
            sectors = cut;
        }
        let (start_byte, end_byte) = (offset * 512, (offset + sectors) * 512);
        let mut copied = 0;
        let mut bad = None;
        for (k, &slot) in slots.iter().enumerate().take(n) {
            let block_start = (first + k as u64) * BLOCK_BYTES as u64;
            let lo = (start_byte.max(block_start) - block_start) as usize;
            let hi = (end_byte.min(block_start + BLOCK_BYTES as u64) - block_start) as usize;
            let (stripe, range) = locate(slot);
            let Some(stripe) = self.data.get(stripe) else {
                break;
            };
            let st = stripe.lock();
            let Some(data) = st.bytes.get(range) else {
                break;
            };
            if st.generation != generation {
                break;
            }
            if self.verify && crc32c(data) != crcs[k] {
                bad = Some(slot);
                break;
            }
            if let Some(part) = data.get(lo..hi) {
                bio.copy_to(copied, part);
                copied += hi - lo;
            }
            drop(st);
        }
        let served = copied as u64 == end_byte - start_byte;
        let mut inner = self.inner.lock();
        if inner.sw.generation() == generation {
            if let Some(c) = inner.sw.cache_mut() {
                if let Some(s) = bad {
                    // The read goes to the origin; the block is dropped.
                    c.verify_failed(s);
                }
                for &s in slots.iter().take(n) {
                    c.unpin(s);
                }
            }
        }
        served
    }

    /// A read that went to the origin completed.
    pub(crate) fn read_done(&self) {
        self.user_inflight.fetch_sub(1, Relaxed);
        self.last_user_io.store(monotonic_ns(), Relaxed);
    }

    /// A write (or discard, write-zeroes) of sectors `offset ..+ sectors`
    /// is mapped: its blocks leave the cache and are kept from it until
    /// [`Self::write_done`].  Counted whatever the cache's state (in the
    /// gate's shard of CPU `cpu` when no cache is on).
    #[inline]
    pub(crate) fn write(self: &Arc<Self>, offset: u64, sectors: u32, cpu: u32) -> WriteMark {
        let (shard, on) = self.gate.enter(cpu);
        if !on {
            return WriteMark::Gate(shard);
        }
        self.write_cached(offset, sectors, shard)
    }

    /// [`Self::write`] with a cache on: the write registers with it.
    fn write_cached(self: &Arc<Self>, offset: u64, sectors: u32, shard: u8) -> WriteMark {
        let first = offset / BLOCK_SECTORS;
        let end = (offset + u64::from(sectors)).div_ceil(BLOCK_SECTORS);
        let count = u32::try_from(end - first).unwrap_or(u32::MAX);
        let mut inner = self.inner.lock();
        let Some(w) = inner.sw.write_begin(first, count) else {
            // The cache went away meanwhile: the gate keeps counting it.
            return WriteMark::Gate(shard);
        };
        self.gate.leave(shard);
        inner.sw.settle(&self.gate);
        self.user_inflight.fetch_add(1, Relaxed);
        let sweep = inner.sw.cache().is_some_and(|c| c.needs_sweep());
        drop(inner);
        if sweep {
            let _ = self.wq.queue().enqueue::<_, 17>(self.clone());
        }
        WriteMark::Cache(w)
    }

    /// The write `mark` came from completed.
    #[inline]
    pub(crate) fn write_done(&self, mark: WriteMark) {
        match mark {
            WriteMark::None => {}
            WriteMark::Gate(shard) => {
                if self.gate.leave(shard) {
                    self.settle();
                }
            }
            WriteMark::Cache(w) => self.cache_write_done(w),
        }
    }

    /// A write the gate counted ended with a cache on: the cache may be
    /// waiting for it (out of line: rare on the write path).
    #[cold]
    fn settle(&self) {
        self.inner.lock().sw.settle(&self.gate);
    }

    /// A write registered with a cache completed.
    fn cache_write_done(&self, w: SwitchWrite) {
        self.user_inflight.fetch_sub(1, Relaxed);
        self.last_user_io.store(monotonic_ns(), Relaxed);
        let mut inner = self.inner.lock();
        inner.sw.write_end(w);
        inner.sw.settle(&self.gate);
    }

    /// Queues read predictions for sectors `start ..+ len` with probability
    /// `p` (millionths); returns the blocks queued.  At most the cache's
    /// capacity of blocks is considered (more would only evict each other);
    /// the rest is counted as dropped.  The books' lock is held for at most
    /// [`PREDICT_STEP`] blocks at a time.  Process context.
    pub(crate) fn predict(self: &Arc<Self>, start: u64, len: u64, p: u32) -> u64 {
        let first = (start / BLOCK_SECTORS).min(self.blocks);
        let end = start
            .saturating_add(len)
            .div_ceil(BLOCK_SECTORS)
            .min(self.blocks);
        let now = monotonic_ns();
        let (mut queued, mut at) = (0, first);
        let (tier, generation, limit) = {
            let mut inner = self.inner.lock();
            let cfg = inner.cfg;
            let generation = inner.sw.generation();
            let Some(tier) = tier_of(p, cfg.critical_ppm, cfg.predictive_ppm, cfg.min_ppm) else {
                return 0;
            };
            let Some(c) = inner.sw.cache_mut() else {
                return 0;
            };
            let limit = first.saturating_add(c.capacity() as u64).min(end);
            c.count_dropped(end - limit);
            (tier, generation, limit)
        };
        while at < limit {
            let mut inner = self.inner.lock();
            if inner.sw.generation() != generation {
                break;
            }
            let Some(c) = inner.sw.cache_mut() else {
                break;
            };
            let (q, n) = c.enqueue_range(at, limit, p, tier, now, PREDICT_STEP);
            queued += q;
            at += n;
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
        if buf.is_empty()
            && buf
                .extend_from_slice(&[0u8; BLOCK_BYTES], GFP_KERNEL)
                .is_err()
        {
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
                let generation = inner.sw.generation();
                let idle_ms = inner.cfg.idle_ms;
                let Some(c) = inner.sw.cache_mut() else {
                    return;
                };
                let fetch = c.next_fetch(now, load, &limits);
                (fetch, generation, c.queued() > 0, idle_ms)
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
            // The slot is this fetch's until it finishes: nobody reads or
            // writes its data meanwhile.  Written before it turns valid.
            let (stripe, range) = locate(fetch.slot);
            let mut copied = false;
            if let Some(stripe) = self.data.get(stripe) {
                let mut st = stripe.lock();
                if st.generation == generation {
                    if let Some(dst) = st.bytes.get_mut(range) {
                        dst.copy_from_slice(&buf);
                        copied = true;
                    }
                }
            }
            let mut inner = self.inner.lock();
            // A fetch of an older cache (whose stripes are gone) is dropped.
            if inner.sw.generation() != generation {
                continue;
            }
            let Some(c) = inner.sw.cache_mut() else {
                return;
            };
            let _: Finish = c.finish_fetch(fetch, ok && copied, crc, monotonic_ns());
        }
    }

    /// Resizes the cache to `cache_mb` MiB (0: none): a new cache, held
    /// back while writes that began before it are in flight, into which
    /// the old one's blocks are carried first, the most valuable first, as
    /// many as fit ([`Self::carry_over`]).  Process context (allocates).
    pub(crate) fn resize(self: &Arc<Self>, cache_mb: u32) -> Result {
        let (mut cache, mut stripes) = new_store(cache_mb)?;
        let mut carried = KVVec::new();
        let mut checked = None;
        if let Some(new) = cache.as_mut() {
            checked = self.carry_over(new, &mut stripes, &mut carried);
        }
        let mut tries = 0;
        let old = loop {
            let mut inner = self.inner.lock();
            // What was carried is current if the old cache dropped no data
            // since it was last checked; else check again, or give up.
            if let (Some((generation, changes)), Some(new)) = (checked, cache.as_mut()) {
                let current = inner.sw.generation() == generation
                    && inner.sw.cache().is_some_and(|c| c.changes() == changes);
                if !current {
                    drop(inner);
                    tries += 1;
                    checked = if tries < CARRY_TRIES {
                        self.carry_check(new, &carried)
                    } else {
                        None
                    };
                    if checked.is_none() {
                        for c in carried.iter() {
                            new.carry_out(c.block);
                        }
                        carried.clear();
                    }
                    continue;
                }
            }
            let old = inner.sw.replace(cache);
            // Published before the gate is read (see `WriteGate`).
            self.gate.set_enabled(inner.sw.cache().is_some());
            inner.sw.settle(&self.gate);
            inner.cfg.cache_mb = cache_mb;
            let generation = inner.sw.generation();
            for (stripe, bytes) in self.data.iter().zip(stripes.iter_mut()) {
                let mut st = stripe.lock();
                core::mem::swap(&mut st.bytes, bytes);
                st.generation = generation;
            }
            break old;
        };
        // The old cache and data go outside the locks.
        drop(old);
        drop(stripes);
        self.kick();
        Ok(())
    }

    /// Carries the valid blocks of the live cache into `new` (not live
    /// yet; its data `stripes`), the highest keep values first: scanned,
    /// then pinned, copied and unpinned, [`CARRY_STEP`] per hold of the
    /// books' lock.  `carried` gets what was carried.  Returns the live
    /// cache's generation and its count of changes from before the first
    /// copy (for [`Self::resize`]'s check), or none if nothing was
    /// carried.
    fn carry_over(
        &self,
        new: &mut Books,
        stripes: &mut StripeData,
        carried: &mut KVVec<Carry>,
    ) -> Option<(u32, u64)> {
        let now = monotonic_ns();
        let (generation, cap) = {
            let inner = self.inner.lock();
            (inner.sw.generation(), inner.sw.cache()?.capacity())
        };
        let mut all: KVVec<Carry> = KVVec::with_capacity(cap, GFP_KERNEL).ok()?;
        let mut at = 0;
        while at < cap {
            let inner = self.inner.lock();
            let old = inner
                .sw
                .cache()
                .filter(|_| inner.sw.generation() == generation)?;
            // Within the capacity reserved: never allocates.
            at = old.carry_scan(at, CARRY_STEP, now, |c| {
                let _ = all.push_within_capacity(c);
            });
        }
        if all.len() > new.capacity() {
            let t = carry_threshold(&all, new.capacity());
            all.retain(|c| c.keep >= t);
        }
        if all.is_empty() || carried.reserve(all.len(), GFP_KERNEL).is_err() {
            return None;
        }
        let mut changes = None;
        for chunk in all.chunks(CARRY_STEP) {
            let mut pinned = [false; CARRY_STEP];
            {
                let mut inner = self.inner.lock();
                if inner.sw.generation() != generation {
                    return None;
                }
                let old = inner.sw.cache_mut()?;
                changes.get_or_insert(old.changes());
                for (p, c) in pinned.iter_mut().zip(chunk) {
                    *p = old.carry_pin(c);
                }
            }
            // Pinned: never refilled nor freed while copied.
            for (_, c) in pinned.iter().zip(chunk).filter(|(p, _)| **p) {
                let Some(slot) = new.carry_in(c, now) else {
                    continue;
                };
                let (from, range) = locate(c.slot);
                let (to, to_range) = locate(slot);
                let copied = self.data.get(from).is_some_and(|stripe| {
                    let st = stripe.lock();
                    match (st.bytes.get(range), stripes.get_mut(to)) {
                        (Some(src), Some(dst)) if st.generation == generation => dst
                            .get_mut(to_range)
                            .map(|d| d.copy_from_slice(src))
                            .is_some(),
                        _ => false,
                    }
                });
                if copied {
                    let _ = carried.push_within_capacity(*c);
                } else {
                    new.carry_out(c.block);
                }
            }
            let mut inner = self.inner.lock();
            if inner.sw.generation() != generation {
                return None;
            }
            if let Some(old) = inner.sw.cache_mut() {
                for (_, c) in pinned.iter().zip(chunk).filter(|(p, _)| **p) {
                    old.unpin(c.slot);
                }
            }
        }
        changes.map(|k| (generation, k))
    }

    /// Drops from `new` what `carried` holds that the live cache no longer
    /// does (written, evicted, cleared, refetched since), [`CARRY_STEP`] per
    /// hold of the lock.  The live cache is the one `carried` came from:
    /// resizes do not run concurrently (both callers change the size under
    /// the budget ledger's lock, see `budget::Held::change`).  Returns the generation and the count of changes from
    /// before the check, or none if the live cache went.
    fn carry_check(&self, new: &mut Books, carried: &[Carry]) -> Option<(u32, u64)> {
        let mut first = None;
        for chunk in carried.chunks(CARRY_STEP) {
            let mut gone = [false; CARRY_STEP];
            {
                let inner = self.inner.lock();
                let generation = inner.sw.generation();
                let old = inner.sw.cache()?;
                let (g, _) = *first.get_or_insert((generation, old.changes()));
                if g != generation {
                    return None;
                }
                for (gone, c) in gone.iter_mut().zip(chunk) {
                    *gone = !old.carry_current(c);
                }
            }
            for (_, c) in gone.iter().zip(chunk).filter(|(g, _)| **g) {
                new.carry_out(c.block);
            }
        }
        first
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
        let stats = inner.sw.stats();
        let (mut capacity, mut cached, mut queued, mut inflight) = (0, 0, 0, 0);
        if let Some(c) = inner.sw.cache() {
            capacity = c.capacity() as u64 * BLOCK_BYTES as u64;
            cached = c.cached() as u64 * BLOCK_BYTES as u64;
            queued = c.queued() as u64;
            inflight = c.fetching() as u64;
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
