// SPDX-License-Identifier: GPL-2.0

//! The dirty-block log of a foresight device.
//!
//! Writes are recorded in `end_io`, before they complete to their
//! submitter; nothing on the I/O path allocates, sleeps or fails.  Two
//! ways, chosen at table load (`Features::flat`):
//!
//! - flat (the default up to 1 TiB, or `flat_log`): a write sets its
//!   blocks' bits in a plain bitmap (one bit per block), folded into the
//!   current epoch's [`DirtySet`] only when the epoch is rotated, listed,
//!   reported or saved: one atomic bit set per write, for one bit of memory
//!   per block;
//! - buffered (`buffered_log`, the default past 1 TiB): a write appends
//!   its extent to a small per-CPU-shard buffer (or, when that is full,
//!   marks whole regions in a lock-free bitmap), and a work item folds the
//!   buffers into the set off the I/O path: memory follows what is written.
//!
//! Either way a work item runs the granularity controller and grows the
//! region table.
//!
//! Epochs: the current set receives writes; `rotate` freezes it as the
//! previous set (what a copy pass reads) and starts an empty one.  A write
//! recorded before the rotation returns is in the frozen set and its data is
//! on the origin; a later one is in the new set.

use crate::{
    dm::{
        jiffies,
        Device,
        DmIo,
        NoIo,
        OwnedQueue, //
    },
    logic::{
        controller::Controller,
        dirty::{
            bitmap_words,
            level_shift,
            mark_coarse_words,
            mark_flat_words,
            take_flat_runs,
            DirtySet,
            Slot,
            BLOCK_SECTOR_SHIFT,
            REGION_BLOCKS, //
        },
        meta::{
            crc32c,
            EpochState,
            SbError,
            SbState,
            Superblock,
            MAX_EPOCH,
            SB_BYTES, //
        },
        stats::IoStats,
        ring::{
            coalesce,
            Drain,
            Extent,
            RingSlot,
            WriteRing, //
        },
        table::{
            Epoch,
            Features,
            LogConfig,
            TableError, //
        },
    },
};
use core::ops::{
    Deref,
    DerefMut, //
};
use core::{
    fmt::Write,
    sync::atomic::{
        AtomicBool, AtomicU64, AtomicUsize,
        Ordering::{
            Acquire,
            Relaxed,
            Release,
            SeqCst, //
        },
    },
};
use kernel::{
    alloc::{
        flags::{
            __GFP_NOWARN, //
            GFP_KERNEL,
        },
        Flags, KVVec, VVec,
    },
    new_mutex,
    prelude::*,
    sync::{
        Arc,
        Mutex,
        MutexGuard, //
    },
    time::{
        delay::fsleep,
        msecs_to_jiffies,
        Delta,
        Instant,
        Monotonic, //
    },
    workqueue::{
        impl_has_work,
        new_work,
        Work,
        WorkItem, //
    },
};

/// Shard buffers at most (one per CPU up to this many; more CPUs share,
/// which costs contention, not correctness).
const MAX_SHARDS: u32 = 8;
/// Entries per shard buffer: a fold is queued when one is a quarter full,
/// so a random writer wakes the folder once every `RING / 4` writes on a
/// CPU.
const RING: usize = 512;
const MIN_SLOTS: usize = 64;
/// The longest extent a write marks in a flat bitmap (16 words: bounded
/// work in `end_io`); longer ones (a large discard) take the buffer, one
/// entry whatever their length.
const FLAT_MAX_BLOCKS: u64 = 1024;
const BLOCK_BYTES: u64 = 4096;

type Set = DirtySet<KVVec<Slot>, KVVec<u32>, KVVec<AtomicU64>>;

struct Shard {
    /// Recent extents, each tagged with its epoch's parity.
    ring: WriteRing<KVVec<RingSlot>>,
}

struct Inner {
    sets: [Set; 2],
    state: [EpochState; 2],
    epoch: u64,
    cfg: LogConfig,
    ctl: Controller,
    /// Nanoseconds since the log was made, at the last controller tick.
    last_tick: u64,
    /// Bytes written (the target's counters), at the last tick.
    last_written: u64,
    /// Dirty blocks of the current set, at the last tick.
    last_dirty: u64,
    /// A table could not grow: tracking is coarser than asked.
    degraded: bool,
    /// Whether the saved log was read (at the first resume).
    loaded: bool,
    /// Extents (and their epoch parity) copied out of a shard buffer while
    /// folding.
    scratch: KVVec<(Extent, usize)>,
}

/// The metadata device the log is saved to.
struct Meta {
    dev: Device,
    io: DmIo,
}

/// Between looks at a writer still filling its buffer slot (it may have
/// been preempted: sleep rather than spin).
fn pause() {
    fsleep(Delta::from_micros(20));
}

/// Bytes of metadata a log for `blocks` blocks needs at least: the
/// superblock and both sets encoded coarse only.
pub(crate) fn metadata_bytes(blocks: u64) -> u64 {
    let words = bitmap_words(blocks.div_ceil(REGION_BLOCKS)) as u64;
    SB_BYTES as u64 + 2 * (24 + 8 * words)
}

fn round_sector(n: usize) -> usize {
    n.next_multiple_of(512)
}

fn alloc_set(blocks: u64, shift: u8, dense_pct: u8, flags: Flags) -> Result<Set> {
    let words = bitmap_words(blocks.div_ceil(REGION_BLOCKS));
    let coarse = zeroed_words(words, flags)?;
    let table = KVVec::from_elem(Slot::default(), MIN_SLOTS, flags)?;
    let sparse = KVVec::from_elem(0u32, MIN_SLOTS, flags)?;
    DirtySet::new(blocks, shift, dense_pct, coarse, table, sparse).map_err(|_| EINVAL)
}

fn zeroed_words(n: usize, flags: Flags) -> Result<KVVec<AtomicU64>> {
    let mut v = KVVec::with_capacity(n, flags)?;
    for _ in 0..n {
        v.push(AtomicU64::new(0), flags)?;
    }
    Ok(v)
}

/// Grows a set's tables when they are full enough, within `budget` bytes
/// for the set (0: no limit).  Marks that find no room fall back a tier
/// (ending at coarse): lossless, so a failed or refused allocation only
/// makes tracking coarser, and sets `degraded`.
fn grow(set: &mut Set, budget: usize, degraded: &mut bool, flags: Flags) {
    let fits = |set: &Set, more: usize| budget == 0 || set.memory_bytes() + more <= budget;
    if set.needs_grow() {
        let more = set.capacity() * core::mem::size_of::<Slot>();
        match fits(set, more)
            .then(|| KVVec::from_elem(Slot::default(), set.grown_capacity(), flags))
        {
            Some(Ok(t)) => {
                let _ = set.grow_into(t);
            }
            _ => *degraded = true,
        }
    }
    if set.needs_grow_sparse() {
        let more = set.sparse_capacity() * 4;
        match fits(set, more).then(|| KVVec::from_elem(0u32, set.grown_sparse_capacity(), flags)) {
            Some(Ok(t)) => {
                let _ = set.grow_sparse_into(t);
            }
            _ => *degraded = true,
        }
    }
}

/// The dirty-block log of one device.
#[pin_data]
pub(crate) struct DirtyLog {
    blocks: u64,
    born: Instant<Monotonic>,
    /// `jiffies` when the log was made.
    born_jiffies: u64,
    /// Per-CPU buffers (CPUs past `MAX_SHARDS` share), a power of two.
    shards: KVec<Shard>,
    #[pin]
    inner: Mutex<Inner>,
    /// Parity of the current epoch; changed only with `inner` held.  A
    /// writer reads it after reserving its buffer slot (see `ring`).
    cur: AtomicUsize,
    /// Writers marking `overflow` for each parity (`rotate` waits
    /// for the old parity's).
    overflowing: [AtomicUsize; 2],
    /// Whether writes are recorded (level > 0).
    tracking: AtomicBool,
    /// The target's I/O counters, completed writes, write-zeroes and
    /// discards among them: the controller's measure of write demand, at
    /// level 0 too (so it can turn logging back on).
    stats: Arc<IoStats>,
    meta: Option<Meta>,
    /// Regions the I/O path marked wholly dirty, per epoch parity.
    overflow: [KVVec<AtomicU64>; 2],
    /// The flat log: the blocks written and not yet folded into a set.
    /// One bitmap for both epochs: a rotation folds what it holds into the
    /// ending epoch's set; a write that marks it after that (it completed
    /// while the rotation ran, or later) stays for the new epoch.
    flat: Option<KVVec<AtomicU64>>,
    /// Bits newly set in `flat` since it was last folded: the controller's
    /// measure of new dirt.
    flat_new: AtomicU64,
    /// Whether `overflow` (per parity) may have bits set: set after marking,
    /// before the writer leaves `overflowing`; folding skips the bitmap (a
    /// word per 64 MiB) otherwise.
    overflowed: [AtomicBool; 2],
    /// When the controller should next run (`jiffies`: the I/O path
    /// compares it with a plain load, not a clock read).
    next_tick: AtomicU64,
    /// When the first write since the last controller run completed (ns
    /// since `born`, 0: none yet): rates are measured over the active part
    /// of a period, so a burst after a pause is seen at its own rate.
    window_start: AtomicU64,
    #[pin]
    work: Work<DirtyLog>,
}

impl_has_work! {
    impl HasWork<Self> for DirtyLog { self.work }
}

impl WorkItem for DirtyLog {
    type Pointer = Arc<DirtyLog>;

    fn run(this: Arc<DirtyLog>) {
        this.maintain();
    }
}

/// The log's state, locked, in a [`NoIo`] scope: the suspend hooks take
/// the lock, so whoever holds it must not allocate with I/O (reclaim
/// writing back through the suspended device would never finish).
struct Locked<'a> {
    guard: MutexGuard<'a, Inner>,
    _noio: NoIo,
}

impl Deref for Locked<'_> {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.guard
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.guard
    }
}

/// The state of an epoch that begins now.
fn fresh_state(level: u8) -> EpochState {
    if level == 0 {
        EpochState::Untracked
    } else {
        EpochState::Tracked
    }
}

impl DirtyLog {
    /// A log for a target of `sectors` sectors, flat or buffered as
    /// `features` say for its size and memory budget ([`Features::flat`]).
    /// Its first epoch began before the log existed, so it is
    /// [`EpochState::Incomplete`].
    pub(crate) fn new(
        sectors: u64,
        cfg: LogConfig,
        metadata: Option<Device>,
        features: &Features,
        stats: Arc<IoStats>,
    ) -> Result<Arc<Self>> {
        let blocks = sectors.div_ceil(1 << BLOCK_SECTOR_SHIFT);
        let shift = level_shift(cfg.level).unwrap_or(0);
        let words = bitmap_words(blocks.div_ceil(REGION_BLOCKS));
        let inner = Inner {
            sets: [
                alloc_set(blocks, shift, cfg.dense_pct, GFP_KERNEL)?,
                alloc_set(blocks, shift, cfg.dense_pct, GFP_KERNEL)?,
            ],
            state: [
                if cfg.level == 0 {
                    EpochState::Untracked
                } else {
                    EpochState::Incomplete
                },
                EpochState::Incomplete,
            ],
            epoch: 0,
            cfg,
            ctl: Controller::default(),
            last_tick: 0,
            last_written: 0,
            last_dirty: 0,
            degraded: false,
            loaded: false,
            scratch: KVVec::from_elem((Extent::default(), 0), RING, GFP_KERNEL)?,
        };
        let meta = match metadata {
            Some(dev) => Some(Meta {
                dev,
                io: DmIo::new()?,
            }),
            None => None,
        };
        let overflow = [
            zeroed_words(words, GFP_KERNEL)?,
            zeroed_words(words, GFP_KERNEL)?,
        ];
        let flat = if features.flat(blocks, cfg.max_memory_kb) {
            Some(zeroed_words(bitmap_words(blocks), GFP_KERNEL)?)
        } else {
            None
        };
        // A power of two, so that a CPU's shard is a mask away.
        let n = 1usize << kernel::cpu::nr_cpu_ids().clamp(1, MAX_SHARDS).ilog2();
        let mut shards = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            let mut slots = KVVec::with_capacity(RING, GFP_KERNEL)?;
            for _ in 0..RING {
                slots.push(RingSlot::default(), GFP_KERNEL)?;
            }
            shards.push(
                Shard {
                    ring: WriteRing::new(slots),
                },
                GFP_KERNEL,
            )?;
        }
        Arc::pin_init(
            try_pin_init!(Self {
                blocks,
                born: Instant::now(),
                born_jiffies: jiffies(),
                shards,
                inner <- new_mutex!(inner),
                cur: AtomicUsize::new(0),
                overflowing: [AtomicUsize::new(0), AtomicUsize::new(0)],
                tracking: AtomicBool::new(cfg.level > 0),
                stats,
                meta,
                overflow,
                flat,
                flat_new: AtomicU64::new(0),
                overflowed: [AtomicBool::new(false), AtomicBool::new(false)],
                next_tick: AtomicU64::new(0),
                window_start: AtomicU64::new(0),
                work <- new_work!("DirtyLog::work"),
            }? Error),
            GFP_KERNEL,
        )
    }

    /// Locks the state ([`Locked`]).
    fn lock(&self) -> Locked<'_> {
        let noio = NoIo::begin();
        Locked {
            guard: self.inner.lock(),
            _noio: noio,
        }
    }

    fn now(&self) -> u64 {
        self.born.elapsed().as_nanos() as u64
    }

    /// Records a completed (or failed: its data may be partly written) write
    /// of `sectors` sectors at target offset `offset`, on CPU `cpu` (which
    /// picks the buffer; any value is correct).  Called from `end_io`, in
    /// any context; never allocates, sleeps or fails.  The flat log's path
    /// is inlined into `end_io`; the rest is out of line.
    #[inline]
    pub(crate) fn record(self: &Arc<Self>, wq: &OwnedQueue, cpu: u32, offset: u64, sectors: u32) {
        let start = offset >> BLOCK_SECTOR_SHIFT;
        let end = (offset + u64::from(sectors)).div_ceil(1 << BLOCK_SECTOR_SHIFT);
        let len = end - start;
        match self.flat.as_ref() {
            Some(flat) if sectors != 0 && len <= FLAT_MAX_BLOCKS && self.tracking.load(Relaxed) => {
                // No parity to read: whichever epoch folds the bits first
                // has the write, and both ended after its data reached the
                // origin.
                let new = mark_flat_words(flat, self.blocks, start, len);
                if new != 0 {
                    self.flat_new.fetch_add(new, Relaxed);
                }
                self.wrote(wq, false);
            }
            _ => self.record_buffered(wq, cpu, Extent { start, len }, sectors),
        }
    }

    /// The shard of CPU `cpu`'s writes.
    #[inline]
    fn shard(&self, cpu: u32) -> &Shard {
        // No division on the write path: the length is a power of two.
        &self.shards[cpu as usize & (self.shards.len() - 1)]
    }

    /// [`Self::record`] of a write the flat log does not take: at level 0,
    /// a long extent, or without a flat log.
    fn record_buffered(self: &Arc<Self>, wq: &OwnedQueue, cpu: u32, ext: Extent, sectors: u32) {
        if sectors == 0 {
            return;
        }
        if !self.tracking.load(Relaxed) {
            // Level 0: nothing is logged, but the demand is still counted
            // (`stats`) and the controller still runs, so logging can come
            // back.
            self.wrote(wq, false);
            return;
        }
        let shard = self.shard(cpu);
        // The parity is read after the slot is reserved (see `rotate_if`).
        let fold = match shard.ring.push(ext, || self.cur.load(SeqCst) == 1) {
            // A quarter full: time to fold, leaving room for the bursts
            // that come before the fold runs.
            Some(held) => held >= RING / 4,
            None => {
                // The buffer is full: whole regions, in the overflow bitmap.
                self.in_epoch(|cur| {
                    mark_coarse_words(&self.overflow[cur], self.blocks, ext.start, ext.len);
                    self.overflowed[cur].store(true, Release);
                });
                true
            }
        };
        self.wrote(wq, fold);
    }

    /// Runs `mark` with the current epoch's parity, counted in
    /// `overflowing` meanwhile, so that a rotation waits for it; a writer
    /// that finds the parity changed under it marks the new one.  For the
    /// overflow bitmaps the I/O path marks.
    #[inline]
    fn in_epoch(&self, mark: impl FnOnce(usize)) {
        let cur = loop {
            let cur = self.cur.load(SeqCst);
            self.overflowing[cur].fetch_add(1, SeqCst);
            if self.cur.load(SeqCst) == cur {
                break cur;
            }
            self.overflowing[cur].fetch_sub(1, Release);
        };
        mark(cur);
        self.overflowing[cur].fetch_sub(1, Release);
    }

    /// After a write: opens the controller's measuring window if it is the
    /// first since the last run, and queues the work if a fold is needed or
    /// the controller is due.
    #[inline]
    fn wrote(self: &Arc<Self>, wq: &OwnedQueue, fold: bool) {
        if self.window_start.load(Relaxed) == 0 {
            let now = self.now();
            let _ = self
                .window_start
                .compare_exchange(0, now.max(1), Relaxed, Relaxed);
        }
        if fold || jiffies() >= self.next_tick.load(Relaxed) {
            self.kick(wq);
        }
    }

    /// Sets when the controller next runs (ns since `born`), as the tick
    /// count the I/O path compares with (rounded up).
    fn set_next_tick(&self, at_ns: u64) {
        let ms = u32::try_from(at_ns.div_ceil(1_000_000)).unwrap_or(u32::MAX);
        let at = self.born_jiffies + msecs_to_jiffies(ms) as u64;
        self.next_tick.store(at, Relaxed);
    }

    /// Queues the maintenance work (once: a queued item is not queued again).
    pub(crate) fn kick(self: &Arc<Self>, wq: &OwnedQueue) {
        let _ = wq.queue().enqueue(self.clone());
    }

    /// Moves the buffered extents into their epochs' sets, and the overflow
    /// bits of epoch parity `parity` (and, with `flat`, the flat bitmap)
    /// into its set.  Each shard's buffer is
    /// copied out, then marked, growing the tables as needed (process
    /// context).  With [`Drain::Wait`], writes still being buffered are
    /// waited for.
    fn fold_into(&self, inner: &mut Inner, parity: usize, how: Drain, flat: bool) {
        let Inner {
            sets,
            scratch,
            degraded,
            cfg,
            ..
        } = inner;
        // Each set gets half the budget: the other epoch's set is the other half.
        let budget = cfg.max_memory_kb as usize * 1024 / 2;
        for shard in &self.shards {
            let mut n = 0;
            shard.ring.drain(how, pause, |e, tag| {
                scratch[n] = (e, usize::from(tag));
                n += 1;
            });
            let n = coalesce(&mut scratch[..n]);
            for &(e, p) in &scratch[..n] {
                if sets[p].needs_grow() || sets[p].needs_grow_sparse() {
                    grow(&mut sets[p], budget, degraded, GFP_KERNEL | __GFP_NOWARN);
                }
                sets[p].mark(e.start, e.len);
            }
        }
        if self.overflowed[parity].swap(false, Acquire) {
            sets[parity].absorb_coarse(&self.overflow[parity]);
        }
        if let Some(words) = self.flat.as_ref().filter(|_| flat) {
            let set = &mut sets[parity];
            take_flat_runs(words, |start, len| {
                grow(set, budget, degraded, GFP_KERNEL | __GFP_NOWARN);
                set.mark(start, len);
            });
            self.flat_new.store(0, Relaxed);
        }
    }

    /// Moves everything buffered for the current epoch into its set.
    fn fold(&self, inner: &mut Inner) {
        let cur = self.cur.load(Relaxed);
        self.fold_into(inner, cur, Drain::Ready, true);
    }

    /// The work item: fold, run the controller when due, grow the table.
    fn maintain(&self) {
        let mut inner = self.lock();
        // The I/O path never waits for this work, so reclaim through this
        // device cannot deadlock on its allocations.  A flat bitmap stays
        // as it is: folding it costs a set mark per block, which is what
        // the flat log saves the write path.
        let cur = self.cur.load(Relaxed);
        self.fold_into(&mut inner, cur, Drain::Ready, false);
        self.tick(&mut inner);
    }

    /// Runs the controller for every interval that has passed.
    fn tick(&self, inner: &mut Inner) {
        let now = self.now();
        let interval = u64::from(inner.cfg.interval_ms) * 1_000_000;
        if now < inner.last_tick + interval {
            self.set_next_tick(inner.last_tick + interval);
            return;
        }
        let cur = self.cur.load(Relaxed);
        let t = self.stats.totals();
        let written = (t.write_sectors + t.discard_sectors) << 9;
        // Counters reset (`reset_stats`): what was written since.
        if written < inner.last_written {
            inner.last_written = 0;
        }
        let dirty = self.dirty_blocks(inner, cur);
        let mut new_level = None;
        let params = inner.cfg.params;
        let interval_ms = u64::from(inner.cfg.interval_ms);
        let ms = (now - inner.last_tick) / 1_000_000;
        // The writes of this period came after its first one: measure their
        // rate over that window; the time before it was idle, and counts as
        // periods with nothing written (at most 32).
        let start = self.window_start.load(Relaxed);
        let active = if start > inner.last_tick {
            (now - start) / 1_000_000
        } else {
            ms
        };
        if start != 0 && active < interval_ms / 2 {
            // Too short a window to tell a rate from: look again later.
            self.set_next_tick(start + interval * 3 / 4);
            return;
        }
        self.window_start.store(0, Relaxed);
        let idle = ((ms - active.min(ms)) / interval_ms).min(32);
        for _ in 0..idle {
            let level = new_level.unwrap_or(inner.cfg.level);
            if let Some(l) = inner.ctl.tick(&params, level, 0, 0, interval_ms) {
                new_level = Some(l);
            }
        }
        let level = new_level.unwrap_or(inner.cfg.level);
        let w = written - inner.last_written;
        let d = dirty.saturating_sub(inner.last_dirty) * BLOCK_BYTES;
        if let Some(l) = inner.ctl.tick(&params, level, w, d, active.max(1)) {
            new_level = Some(l);
        }
        inner.last_tick = now;
        inner.last_written = written;
        inner.last_dirty = dirty;
        self.set_next_tick(now + interval);
        if inner.cfg.adaptive {
            if let Some(l) = new_level {
                self.apply_level(inner, l);
                inner.last_dirty = self.dirty_blocks(inner, cur);
            }
        }
    }

    /// Blocks marked in epoch parity `cur` (counting those a flat bitmap
    /// holds): the controller's measure of dirt.
    fn dirty_blocks(&self, inner: &Inner, cur: usize) -> u64 {
        inner.sets[cur].marked_blocks() + self.flat_new.load(Relaxed)
    }

    /// Switches to `level`, losslessly.
    fn apply_level(&self, inner: &mut Inner, level: u8) {
        let cur = self.cur.load(Relaxed);
        // A flat bitmap holds single blocks: it folds losslessly at any
        // grain later, so it stays (folding it costs a mark per block).
        self.fold_into(inner, cur, Drain::Ready, false);
        match level_shift(level) {
            None => {
                self.tracking.store(false, Relaxed);
                inner.state[cur] = EpochState::Untracked;
                inner.sets[cur].clear();
                if let Some(flat) = &self.flat {
                    take_flat_runs(flat, |_, _| ());
                    self.flat_new.store(0, Relaxed);
                }
            }
            Some(shift) => {
                if !self.tracking.swap(true, Relaxed) {
                    // Writes went unlogged while the level was 0.
                    inner.state[cur] = EpochState::Incomplete;
                }
                let set = &mut inner.sets[cur];
                // Room for every region to pass through the table, so the
                // change goes coarse nowhere; given back afterwards.
                if let Some(cap) = set.capacity_for_shift() {
                    if let Ok(t) = KVVec::from_elem(Slot::default(), cap, GFP_KERNEL | __GFP_NOWARN)
                    {
                        let _ = set.grow_into(t);
                    }
                }
                set.set_shift(shift);
                if let Some(cap) = set.shrunk_capacity(MIN_SLOTS) {
                    if let Ok(t) = KVVec::from_elem(Slot::default(), cap, GFP_KERNEL | __GFP_NOWARN)
                    {
                        let _ = set.grow_into(t);
                    }
                }
            }
        }
        inner.cfg.level = level;
    }

    /// Starts a new epoch, if `check` allows it given the current epoch's
    /// number (atomically with the rotate); the current one becomes the
    /// previous one.  Returns the new epoch's number and `check`'s value.
    pub(crate) fn rotate_if<T, E>(
        &self,
        check: impl FnOnce(u64) -> Result<T, E>,
    ) -> Result<(u64, T), E> {
        let mut inner = self.lock();
        let t = check(inner.epoch)?;
        let old = self.cur.load(Relaxed);
        let new = 1 - old;
        let shift = inner.sets[old].shift();
        inner.sets[new].clear();
        inner.sets[new].set_shift(shift);
        inner.state[new] = fresh_state(inner.cfg.level);
        self.cur.store(new, SeqCst);
        // A writer that read the old parity reserved its buffer slot before
        // the switch, so the waiting drain sees it; one marking the overflow
        // bitmap is counted in `overflowing`.  The flat bitmap goes to the
        // ending epoch as it is now: a write marking it later completed
        // during the rotation or after, and stays for the new epoch.
        while self.overflowing[old].load(Acquire) != 0 {
            pause();
        }
        self.fold_into(&mut inner, old, Drain::Wait, true);
        inner.epoch += 1;
        inner.last_dirty = 0;
        Ok((inner.epoch, t))
    }

    /// Sets a fixed level (adaptation off), or lets the controller adapt.
    pub(crate) fn set_level(&self, level: Option<u8>) {
        let mut inner = self.lock();
        match level {
            Some(l) => {
                inner.cfg.adaptive = false;
                self.apply_level(&mut inner, l);
            }
            None => inner.cfg.adaptive = true,
        }
    }

    /// Changes a core argument at run time.
    pub(crate) fn set(&self, key: &[u8], value: &[u8]) -> Result<(), TableError> {
        self.configure(|cfg| cfg.set(key, value))
    }

    /// Changes core arguments at run time: `f` edits a copy of the
    /// configuration, which takes effect if `f` and validation succeed.
    pub(crate) fn configure(
        &self,
        f: impl FnOnce(&mut LogConfig) -> Result<(), TableError>,
    ) -> Result<(), TableError> {
        let mut inner = self.lock();
        let mut cfg = inner.cfg;
        f(&mut cfg)?;
        cfg.validate()?;
        if cfg.level != inner.cfg.level {
            self.apply_level(&mut inner, cfg.level);
        }
        let cur = self.cur.load(Relaxed);
        inner.sets[cur].set_dense_pct(cfg.dense_pct);
        inner.cfg = cfg;
        Ok(())
    }

    /// The configuration in force (for the table line).
    pub(crate) fn config(&self) -> LogConfig {
        self.lock().cfg
    }

    /// Takes a userspace prediction of newly dirtied data (bytes/s).
    pub(crate) fn predict(&self, bytes_per_sec: u64) {
        let mut inner = self.lock();
        let ttl = inner.cfg.params.predict_ttl;
        inner.ctl.predict(bytes_per_sec, ttl);
    }

    /// Predictive pre-logging: gives the regions of sectors
    /// `start .. start + len` fine structures now.  Returns the regions that
    /// could not get one (they fall back to coarse if written).
    pub(crate) fn prelog(&self, start: u64, len: u64) -> u32 {
        let mut inner = self.lock();
        let cur = self.cur.load(Relaxed);
        let b0 = start >> BLOCK_SECTOR_SHIFT;
        let b1 = (start.saturating_add(len)).div_ceil(1 << BLOCK_SECTOR_SHIFT);
        let regions = (b1.saturating_sub(b0)).div_ceil(REGION_BLOCKS) as usize + 1;
        // Room for them without the table passing half full, within budget.
        let budget = inner.cfg.max_memory_kb as usize * 1024 / 2;
        while inner.sets[cur].fine_regions() + regions > inner.sets[cur].capacity() / 2 {
            let set = &inner.sets[cur];
            let more = set.capacity() * core::mem::size_of::<Slot>();
            if budget != 0 && set.memory_bytes() + more > budget {
                break;
            }
            match KVVec::from_elem(Slot::default(), set.grown_capacity(), GFP_KERNEL) {
                Ok(t) => {
                    let _ = inner.sets[cur].grow_into(t);
                }
                Err(_) => {
                    inner.degraded = true;
                    break;
                }
            }
        }
        inner.sets[cur].prelog(b0, b1 - b0)
    }

    /// Before the device resumes: loads the saved log (the first time) and
    /// marks the metadata open, so that a stop without [`Self::save`] is
    /// detected at the next load.
    pub(crate) fn preresume(&self) -> Result {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if self.meta.is_none() {
            return Ok(());
        }
        if !inner.loaded {
            self.load(inner)?;
        }
        self.write_superblock(inner, SbState::Open, [0, 0], 0)
    }

    /// The metadata device's name, if there is one.
    pub(crate) fn metadata_name(&self) -> Option<&CStr> {
        self.meta.as_ref().map(|m| m.dev.name())
    }

    fn load(&self, inner: &mut Inner) -> Result {
        let Some(meta) = self.meta.as_ref() else {
            return Ok(());
        };
        let mut sb = VVec::from_elem(0u8, SB_BYTES, GFP_KERNEL)?;
        meta.io.read(&meta.dev, 0, &mut sb)?;
        inner.loaded = true;
        let room = (meta.dev.nr_sectors() << 9).saturating_sub(SB_BYTES as u64);
        let cur = self.cur.load(Relaxed);
        let inconsistent = |inner: &mut Inner, why: &str, epoch: u64| {
            pr_warn!("foresight: dirty log {why}: full copy required\n");
            inner.sets[0].clear();
            inner.sets[1].clear();
            inner.state = [EpochState::Inconsistent; 2];
            inner.epoch = epoch;
        };
        let sb = match Superblock::decode(&sb) {
            Err(SbError::Blank) => return Ok(()),
            Err(SbError::Corrupt) => {
                inconsistent(inner, "metadata is corrupt", 0);
                return Ok(());
            }
            Ok(sb) => sb,
        };
        if let Err(why) = sb.check(self.blocks, room) {
            inconsistent(inner, why, sb.epoch.min(MAX_EPOCH));
            return Ok(());
        }
        if sb.state == SbState::Open {
            inconsistent(inner, "was not saved (unclean stop)", sb.epoch);
            return Ok(());
        }
        let (l0, l1) = (sb.lens[0] as usize, sb.lens[1] as usize);
        let mut payload = VVec::from_elem(0u8, round_sector(l0 + l1).max(512), GFP_KERNEL)?;
        meta.io
            .read(&meta.dev, (SB_BYTES >> 9) as u64, &mut payload)?;
        if crc32c(&payload[..l0 + l1]) != sb.payload_crc
            || inner.sets[cur].decode_from(&payload[..l0]).is_err()
            || inner.sets[1 - cur]
                .decode_from(&payload[l0..l0 + l1])
                .is_err()
        {
            inconsistent(inner, "payload is corrupt", sb.epoch);
            return Ok(());
        }
        inner.state = if cur == 0 {
            sb.epochs
        } else {
            [sb.epochs[1], sb.epochs[0]]
        };
        inner.epoch = sb.epoch;
        if let Some(shift) = level_shift(inner.cfg.level) {
            inner.sets[cur].set_shift(shift);
        }
        inner.last_dirty = inner.sets[cur].marked_blocks();
        Ok(())
    }

    fn write_superblock(
        &self,
        inner: &mut Inner,
        state: SbState,
        lens: [u64; 2],
        crc: u32,
    ) -> Result {
        let Some(meta) = self.meta.as_ref() else {
            return Ok(());
        };
        let cur = self.cur.load(Relaxed);
        let sb = Superblock {
            state,
            blocks: self.blocks,
            epoch: inner.epoch,
            level: inner.cfg.level,
            adaptive: inner.cfg.adaptive,
            epochs: [inner.state[cur], inner.state[1 - cur]],
            lens,
            payload_crc: crc,
        };
        let mut buf = VVec::from_elem(0u8, SB_BYTES, GFP_KERNEL)?;
        sb.encode(&mut buf);
        meta.io.write(&meta.dev, 0, &mut buf, true)
    }

    /// After the device is suspended (its I/O drained): saves the log and
    /// marks the metadata clean.
    pub(crate) fn save(&self) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if self.meta.is_none() || !inner.loaded {
            // Never resumed with this table: the metadata is not ours yet.
            return;
        }
        // Suspended, so no write is in flight; waiting costs nothing and
        // does not rely on that.
        let cur = self.cur.load(Relaxed);
        self.fold_into(inner, cur, Drain::Wait, true);
        if let Err(e) = self.write_sets(inner) {
            pr_err!(
                "foresight: saving the dirty log failed ({e:?}); it will load as inconsistent\n"
            );
        }
    }

    fn write_sets(&self, inner: &mut Inner) -> Result {
        let Some(meta) = self.meta.as_ref() else {
            return Ok(());
        };
        let cur = self.cur.load(Relaxed);
        let room = (meta.dev.nr_sectors() << 9).saturating_sub(SB_BYTES as u64) as usize;
        let (a, b) = (&inner.sets[cur], &inner.sets[1 - cur]);
        let (full0, full1) = (a.encoded_len(), b.encoded_len());
        // Fine detail that does not fit, or that there is no memory to
        // encode, is saved coarse: lossless.
        let mut coarse_only = full0 + full1 > room;
        let mut payload = None;
        if !coarse_only {
            let flags = GFP_KERNEL | __GFP_NOWARN;
            payload = VVec::from_elem(0u8, round_sector(full0 + full1), flags).ok();
            coarse_only = payload.is_none();
        }
        let (l0, l1) = if coarse_only {
            (a.coarse_encoded_len(), b.coarse_encoded_len())
        } else {
            (full0, full1)
        };
        let mut payload = match payload {
            Some(p) => p,
            None => VVec::from_elem(0u8, round_sector(l0 + l1), GFP_KERNEL)?,
        };
        a.encode(&mut payload[..l0], coarse_only);
        b.encode(&mut payload[l0..l0 + l1], coarse_only);
        let crc = crc32c(&payload[..l0 + l1]);
        meta.io
            .write(&meta.dev, (SB_BYTES >> 9) as u64, &mut payload, false)?;
        // The superblock goes last, after a flush: clean means the sets are on disk.
        self.write_superblock(inner, SbState::Clean, [l0 as u64, l1 as u64], crc)
    }

    /// Hands `f` the number and state of `epoch`, then the epoch's dirty
    /// extents from sector `from` on, until it returns false; all under the
    /// log's lock, so they agree.
    pub(crate) fn for_each_extent(
        &self,
        epoch: Epoch,
        from: u64,
        mut f: impl FnMut(Listing) -> bool,
    ) {
        let mut inner = self.lock();
        let cur = self.cur.load(Relaxed);
        let (parity, n) = match epoch {
            Epoch::Current => {
                self.fold(&mut inner);
                (cur, inner.epoch)
            }
            Epoch::Previous => (1 - cur, inner.epoch.saturating_sub(1)),
        };
        let state = if inner.cfg.level == 0 && epoch == Epoch::Current {
            EpochState::Untracked
        } else {
            inner.state[parity]
        };
        if !f(Listing::Epoch(n, state)) {
            return;
        }
        let sectors = self.blocks << BLOCK_SECTOR_SHIFT;
        inner.sets[parity].extents(from >> BLOCK_SECTOR_SHIFT, |s, l| {
            let start = s << BLOCK_SECTOR_SHIFT;
            f(Listing::Extent(
                start,
                (l << BLOCK_SECTOR_SHIFT).min(sectors - start),
            ))
        });
    }

    /// Writes dirty extents of `epoch`, as `start_sector len_sectors` lines,
    /// from sector `from` on, preceded by a line `epoch <n> <state>`.
    /// Stops when `out` is full; the caller sees that from the writer.
    pub(crate) fn write_extents<W: Write + ?Sized>(&self, epoch: Epoch, from: u64, out: &mut W) {
        self.for_each_extent(epoch, from, |item| match item {
            Listing::Epoch(n, state) => writeln!(out, "epoch {} {}", n, state.name()).is_ok(),
            Listing::Extent(start, len) => writeln!(out, "{start} {len}").is_ok(),
        });
    }

    /// A snapshot of the log's state.
    pub(crate) fn status(&self) -> LogStatus {
        let mut inner = self.lock();
        self.fold(&mut inner);
        let cur = self.cur.load(Relaxed);
        let level = inner.cfg.level;
        let mut state = inner.state[cur];
        if level == 0 {
            state = EpochState::Untracked;
        }
        LogStatus {
            epoch: inner.epoch,
            state,
            prev_state: inner.state[1 - cur],
            level,
            adaptive: inner.cfg.adaptive,
            grain_bytes: level_shift(level).map_or(0, |s| BLOCK_BYTES << s),
            dirty_bytes: inner.sets[cur].dirty_blocks() * BLOCK_BYTES,
            prev_dirty_bytes: inner.sets[1 - cur].dirty_blocks() * BLOCK_BYTES,
            memory_bytes: (inner.sets[0].memory_bytes()
                + inner.sets[1].memory_bytes()
                + self.overflow[0].len() * 16
                + self.flat.as_ref().map_or(0, |f| f.len() * 8)
                + self.shards.len() * RING * core::mem::size_of::<RingSlot>()
                + RING * core::mem::size_of::<(Extent, usize)>()
                + core::mem::size_of::<Self>()) as u64,
            coarse_fallbacks: inner.sets[cur].fallbacks() + inner.sets[1 - cur].fallbacks(),
            degraded: inner.degraded,
        }
    }

    /// The status fields of the log:
    /// `epoch state prev_state level mode grain_bytes dirty_bytes
    /// prev_dirty_bytes log_memory_bytes coarse_fallbacks degraded`.
    pub(crate) fn write_status(&self, out: &mut impl Write) {
        let s = self.status();
        let _ = write!(
            out,
            "{} {} {} {} {} {} {} {} {} {} {}",
            s.epoch,
            s.state.name(),
            s.prev_state.name(),
            s.level,
            if s.adaptive { "auto" } else { "fixed" },
            s.grain_bytes,
            s.dirty_bytes,
            s.prev_dirty_bytes,
            s.memory_bytes,
            s.coarse_fallbacks,
            u8::from(s.degraded),
        );
    }
}

/// What [`DirtyLog::for_each_extent`] lists: first the epoch's number and
/// state, then its extents (start sector, length in sectors).
pub(crate) enum Listing {
    Epoch(u64, EpochState),
    Extent(u64, u64),
}

/// What [`DirtyLog::status`] reports.
pub(crate) struct LogStatus {
    pub(crate) epoch: u64,
    pub(crate) state: EpochState,
    pub(crate) prev_state: EpochState,
    pub(crate) level: u8,
    pub(crate) adaptive: bool,
    pub(crate) grain_bytes: u64,
    pub(crate) dirty_bytes: u64,
    pub(crate) prev_dirty_bytes: u64,
    pub(crate) memory_bytes: u64,
    pub(crate) coarse_fallbacks: u64,
    pub(crate) degraded: bool,
}
