// SPDX-License-Identifier: GPL-2.0

//! The prefetch cache: which 4 KiB blocks sit in which cache slot, which
//! predictions wait to be fetched, and when a fetched block may be served.
//!
//! The device is cut into 4 KiB *blocks* (sector / 8).  The cache has a fixed
//! number of *slots*; the kernel owns one 4 KiB data buffer per slot index,
//! this logic only decides what each slot holds.  A slot is:
//!
//! - *free*;
//! - *queued*: a prediction waiting for [`Cache::next_fetch`];
//! - *fetching*: its block is being read from the origin into the slot's
//!   buffer, until [`Cache::finish_fetch`];
//! - *valid*: it holds the block's current data and serves reads.
//!
//! # Never stale
//!
//! The one invariant: a read hit returns data equal to the origin's content
//! whenever no write to those blocks is in flight.  Writes are bracketed by
//! [`Cache::write_begin`] (before the write is sent to the origin) and
//! [`Cache::write_end`] (after it completed, whatever its status):
//!
//! - `write_begin` invalidates valid slots of the range, drops queued ones
//!   and marks fetching ones *stale* (their data may predate the write, or
//!   be overwritten by it at the origin at any time): a stale fetch is never
//!   installed;
//! - while a write is in flight its blocks are never queued, hence never
//!   fetched nor installed.  So a fetch that installs began after every write
//!   to its block ended, and nothing wrote since: the origin served current
//!   data.
//!
//! In-flight writes are counted in a *counting filter* that lives in the
//! slots (one counter per slot, so it needs no memory of its own and never
//! fills): a write increments the counter of every 64 KiB chunk it touches
//! (hashed over the slots), its end decrements them, and a block whose
//! chunk's counter is nonzero counts as written.  Collisions only refuse
//! more, never less.  The [`WriteToken`] that `write_begin` returns says
//! what to undo.
//!
//! # Bounded work
//!
//! Every call that the I/O path makes under the cache's lock costs a
//! bounded amount, whatever the sizes involved:
//!
//! - a write of up to [`EAGER_BLOCKS`] blocks (2 MiB) looks its blocks up
//!   one by one;
//! - a larger write (a big discard, say) is *wide*: it costs O(fetches in
//!   flight).  Its range joins a short list of *pending* ranges (up to
//!   [`PENDING`]; past that, the whole device counts as pending), its
//!   fetches in flight go stale, and while it is in flight the cache
//!   queues, fetches and installs nothing.  Reads touching a pending range
//!   miss.  The cached blocks of the range are dropped by [`Cache::sweep`],
//!   which the caller runs off the I/O path in steps of bounded size; a
//!   range stops being pending once a whole pass over the slots that began
//!   after it was registered has ended;
//! - a hit *pins* its slots ([`Cache::read`]): the caller copies their data
//!   without the lock, then [`Cache::unpin`]s them.  A pinned slot is
//!   never evicted nor refilled; a write or clear that drops it only takes
//!   it out of the index (a *zombie*), and its last unpin frees it;
//! - [`Cache::hold`] keeps a new cache from queueing, fetching and
//!   installing in O(1), while writes that began before it existed are in
//!   flight ([`Switch`]).
//!
//! # Index
//!
//! Blocks are found through an open-addressing hash table of `2 * capacity`
//! entries (linear probing, at most half full so probes stay short), stored
//! two entries per slot; deletion shifts later entries of the probe run
//! back, so no tombstones accumulate and lookups stay correct.  Queued,
//! fetching and valid slots are indexed; a fetching slot that went stale is
//! unindexed at once (the block may be queued again in another slot once the
//! write ended) and freed when its fetch finishes.
//!
//! # Fetch order
//!
//! Queued slots sit on FIFO lists, one per tier and probability band
//! (quarters of the ppm range): [`Cache::next_fetch`] takes the first entry
//! of the best non-empty list its tier rules allow, in O(1).
//!
//! # Eviction
//!
//! When a slot is needed and none is free, a victim is chosen among valid
//! and queued slots (never a fetching one).  Each has a *keep value*:
//!
//! - a queued or valid-but-unused slot: its probability, decayed by its age
//!   since it was queued or installed (halving every half-life, linear in
//!   between);
//! - a used slot: [`Cache::set_reuse_ppm`] (default [`DEFAULT_REUSE_PPM`])
//!   decayed by the time since its last hit, i.e. LRU;
//!
//! doubled, plus one for valid slots, so a queued slot ranks below a valid
//! one of the same value.  Finding the global minimum would cost O(capacity)
//! or an ordered structure; instead eviction is *sampled*: a clock hand
//! walks the slots and the first [`EVICT_SAMPLE`] evictable ones it meets
//! are compared, the lowest going.  The hand moves on, so every slot is
//! examined in turn; what goes is always among the worst of a random-ish
//! sample, which is close to the global order at a fixed cost.  A victim
//! worth at least as much as the new prediction (queued, age zero) is not
//! evicted: the prediction is refused instead ([`Refused::Outranked`]).
//!
//! Nothing here allocates, panics on caller input, or uses floating point;
//! times are nanoseconds from a monotonic clock, supplied by the caller.

use super::bucket::TokenBucket;
use core::{
    ops::DerefMut,
    sync::atomic::{
        AtomicBool,
        AtomicU32,
        Ordering::SeqCst, //
    },
};

/// Probability in millionths (0..=1_000_000).
pub type Ppm = u32;

/// Probability one.
pub const PPM_ONE: Ppm = 1_000_000;

/// Bytes of a block.
pub const BLOCK_BYTES: u64 = 4096;

/// Evictable slots compared per eviction.
pub const EVICT_SAMPLE: usize = 16;

/// The default half-life of a keep value: two seconds.
pub const DEFAULT_HALF_LIFE_NS: u64 = 2_000_000_000;

/// The default keep value of a block that served a read, in ppm.
pub const DEFAULT_REUSE_PPM: Ppm = 500_000;

/// In-flight writes are counted per chunk of `2^WRITE_CHUNK_SHIFT` blocks
/// (64 KiB).
pub const WRITE_CHUNK_SHIFT: u32 = 4;

/// Writes of more blocks than this (2 MiB) are wide: not looked up block by
/// block (see "Bounded work").
pub const EAGER_BLOCKS: u64 = 512;

/// Wide writes whose ranges are remembered one by one until swept; past
/// that many, the whole device counts as pending.
pub const PENDING: usize = 8;

/// The most slots a cache uses (larger storage is used up to this).
pub const MAX_SLOTS: usize = (u32::MAX / 4) as usize;

/// No slot.
const NIL: u32 = u32::MAX;

/// Probability bands per tier in the fetch queues.
const BANDS: usize = 4;

/// Fetch queues: one per tier and band.
const QUEUES: usize = 3 * BANDS;

/// Importance class of a prediction: decides when it may be fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Fetched whatever the origin's load (index 0).
    Critical,
    /// Fetched while the origin is not overloaded (index 1).
    Predictive,
    /// Fetched only while the origin is idle (index 2).
    Background,
}

impl Tier {
    /// All tiers, by index.
    pub const ALL: [Tier; 3] = [Tier::Critical, Tier::Predictive, Tier::Background];

    /// The tier's index in per-tier arrays (0 Critical, 1 Predictive,
    /// 2 Background).
    pub const fn index(self) -> usize {
        match self {
            Tier::Critical => 0,
            Tier::Predictive => 1,
            Tier::Background => 2,
        }
    }

    fn from_index(i: u8) -> Tier {
        match i {
            0 => Tier::Critical,
            1 => Tier::Predictive,
            _ => Tier::Background,
        }
    }
}

/// The tier of a prediction of probability `p`: Critical from `critical`
/// up, Predictive from `predictive` up, Background from `floor` up, and
/// `None` (not worth queueing) below `floor`.  The floor is checked first.
pub fn tier_of(p: Ppm, critical: Ppm, predictive: Ppm, floor: Ppm) -> Option<Tier> {
    if p < floor {
        None
    } else if p >= critical {
        Some(Tier::Critical)
    } else if p >= predictive {
        Some(Tier::Predictive)
    } else {
        Some(Tier::Background)
    }
}

/// What a slot holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Free,
    Queued,
    Fetching,
    Valid,
    /// Valid data dropped (by a write or clear) while pinned by a hit:
    /// unindexed, freed by its last unpin.
    Zombie,
}

/// One cache slot (the caller's storage holds one per data buffer).
/// `Default` is a free slot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Slot {
    block: u64,
    /// When queued, installed, or (once used) last hit.
    stamp: u64,
    p: Ppm,
    crc: u32,
    ticket: u32,
    /// Free list or fetch queue links.
    next: u32,
    prev: u32,
    /// Index entries `2i` and `2i + 1`: a slot number plus one, 0 empty.
    ix: [u32; 2],
    /// In-flight write counter of the filter bucket `i`.
    writes: u32,
    /// Hits copying this slot's data.
    pins: u16,
    state: State,
    tier: u8,
    used: bool,
    /// Fetching, but a write or a clear came since: never installed.
    stale: bool,
}

/// Why [`Cache::enqueue`] refused a prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The block is already queued, fetching or cached.
    Duplicate,
    /// A write to the block (or a wide write) is in flight.
    WriteInFlight,
    /// No slot is free or evictable (all fetching, or no capacity).
    NoRoom,
    /// Every candidate victim is worth at least as much as the prediction.
    Outranked,
}

/// A cached block a resize carries into the new cache
/// ([`Cache::carry_scan`]): where it is in the old one, and what it is
/// worth there.
#[derive(Clone, Copy, Debug)]
pub struct Carry {
    /// Its slot in the old cache.
    pub slot: usize,
    /// The block.
    pub block: u64,
    /// Its keep value there (higher: kept first).
    pub keep: u64,
    ticket: u32,
    p: Ppm,
    crc: u32,
}

/// The least keep value a resize carries so that at most `n` of `all`
/// go: the lowest `t` with at most `n` keep values of `t` or more (no
/// sort: a binary search over values, O(len * 64)).
pub fn carry_threshold(all: &[Carry], n: usize) -> u64 {
    let above = |t: u64| all.iter().filter(|c| c.keep >= t).count();
    let (mut lo, mut hi) = (0u64, u64::MAX);
    if above(hi) > n {
        return u64::MAX;
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if above(mid) <= n {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// The origin's load, as the caller measures it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// User I/O in flight at the origin.
    pub origin_inflight: u32,
    /// When the last user I/O was submitted or completed (ns).
    pub last_user_io: u64,
}

/// Limits on prefetching.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Predictive fetches only while `origin_inflight` is below this.
    pub load_limit: u32,
    /// Background fetches only once the origin has been idle this long (ns).
    pub idle_ns: u64,
    /// Prefetches in flight at most.
    pub max_inflight: u32,
    /// Prefetch bandwidth in bytes per second, 0 unlimited; bursts up to one
    /// second's worth (at least one block).
    pub bytes_per_sec: u64,
}

/// A fetch to issue: read `block` from the origin into slot `slot`'s
/// buffer, then hand this back to [`Cache::finish_fetch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetch {
    /// The slot whose buffer receives the data.
    pub slot: usize,
    /// The block to read.
    pub block: u64,
    /// The prediction's tier.
    pub tier: Tier,
    ticket: u32,
}

/// What [`Cache::finish_fetch`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The block is cached and serves reads.
    Installed,
    /// A write (or a clear) came while fetching: the data was dropped.
    Stale,
    /// The fetch failed: the slot was freed.
    Failed,
}

/// What [`Cache::read`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// Every block is cached: `out[..count]` holds their slots, pinned
    /// until [`Cache::unpin`].
    Hit,
    /// This many blocks are cached, not all: read from the origin.
    Partial(u32),
    /// None is cached (or the read is larger than `out`, or touches a
    /// range a wide write left pending).
    Miss,
}

/// An in-flight write, from [`Cache::write_begin`] to [`Cache::write_end`].
/// It must be ended exactly once, by the cache that issued it.  It is
/// `Copy` so that a target can keep it in its per-bio data (which holds
/// plain data); the default token is an empty write, ending which does
/// nothing.
#[derive(Clone, Copy, Debug, Default)]
#[must_use = "a write must be ended with Cache::write_end"]
pub struct WriteToken {
    first: u64,
    count: u32,
    kind: WriteKind,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum WriteKind {
    /// Nothing to undo (empty write, or no slots).
    #[default]
    Nothing,
    /// Counted in the chunk counters.
    Chunks,
    /// Counted as wide.
    Wide,
}

/// Cache counters.  Per-tier arrays are indexed by [`Tier::index`].
///
/// Identities that hold whenever no call is half-done:
/// - `hits + misses + partial_hits` = reads;
/// - `sum(enqueued)` = `sum(issued) + queued_dropped + queued()`;
/// - `sum(issued)` = `sum(completed) + errors + stale_dropped + fetching()`;
/// - `sum(completed)` = `cached() + evicted + invalidated + cleared +
///   verify_mismatch`;
/// - `used[t] + wasted[t] <= completed[t] <= issued[t] <= enqueued[t]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads wholly served from the cache.
    pub hits: u64,
    /// Reads with no block cached.
    pub misses: u64,
    /// Reads with some but not all blocks cached.
    pub partial_hits: u64,
    /// Predictions queued.
    pub enqueued: [u64; 3],
    /// Fetches issued.
    pub issued: [u64; 3],
    /// Fetches installed.
    pub completed: [u64; 3],
    /// Installed blocks that served a read (counted at the first).
    pub used: [u64; 3],
    /// Installed blocks dropped (evicted, overwritten, cleared) unused.
    pub wasted: [u64; 3],
    /// Fetches that failed.
    pub errors: u64,
    /// Fetches whose data was dropped for a write or clear since they began.
    pub stale_dropped: u64,
    /// Valid blocks dropped by a write.
    pub invalidated: u64,
    /// Valid blocks evicted for room.
    pub evicted: u64,
    /// Valid blocks dropped by [`Cache::clear`].
    pub cleared: u64,
    /// Hits whose data failed its checksum.
    pub verify_mismatch: u64,
    /// Queued predictions dropped (evicted, overwritten, cleared).
    pub queued_dropped: u64,
    /// Predictions refused as duplicates.
    pub refused_duplicate: u64,
    /// Predictions refused for a write in flight.
    pub refused_write: u64,
    /// Predictions refused for lack of room (no room or outranked).
    pub refused_room: u64,
    /// Writes counted as wide.
    pub wide_writes: u64,
    /// Predicted blocks dropped unseen: past the queue's bound, or past
    /// what one request may queue.
    pub predict_dropped: u64,
    /// Blocks carried over from the cache this one replaced
    /// ([`Cache::carry_in`]).
    pub carried: u64,
}

/// The prefetch cache over the caller's slot storage `S`.
pub struct Cache<S> {
    slots: S,
    cap: usize,
    /// Free list head.
    free: u32,
    queues: [(u32, u32); QUEUES],
    cached: usize,
    queued: usize,
    fetching: usize,
    hand: usize,
    ticket: u32,
    /// Wide writes in flight.
    wide: u32,
    /// Holds ([`Cache::hold`]) in force.
    holds: u32,
    /// Fetching slots, linked through `next`/`prev`.
    fetch_list: u32,
    /// Ranges of wide writes not swept yet: `(first, end, slots left to
    /// sweep)`; `pending_all` is the whole device's, once the list is full.
    pending: [(u64, u64, usize); PENDING],
    npending: usize,
    pending_all: usize,
    /// The sweep's position.
    cursor: usize,
    /// Pinned slots (by hits copying their data).
    pinned: usize,
    /// Cached blocks dropped (evicted, written, cleared, failing their
    /// checksum) and wide writes begun: what a successor carrying blocks
    /// over watches.
    changes: u64,
    zombies: usize,
    /// Token bucket, in byte-nanoseconds per second (bytes * 1e9).
    bucket: TokenBucket,
    half_life: u64,
    reuse: Ppm,
    stats: CacheStats,
}

/// Fibonacci hashing: the top 32 bits of the product, spread over `len`.
fn spread(key: u64, mul: u64, len: usize) -> usize {
    (((key.wrapping_mul(mul) >> 32) * len as u64) >> 32) as usize
}

/// `v` decayed by `age`: halved every `half_life`, linear in between
/// (no decay if `half_life` is 0).
fn decay(v: u64, age: u64, half_life: u64) -> u64 {
    if half_life == 0 {
        return v;
    }
    let halvings = age / half_life;
    if halvings >= 32 {
        return 0;
    }
    let v = v >> halvings;
    let frac = ((age % half_life) / (half_life >> 10).max(1)).min(1024);
    v - (v / 2) * frac / 1024
}

/// The fetch-queue band of a probability: 0 the best quarter.
fn band(p: Ppm) -> usize {
    if p >= 750_000 {
        0
    } else if p >= 500_000 {
        1
    } else if p >= 250_000 {
        2
    } else {
        3
    }
}

impl<S: DerefMut<Target = [Slot]>> Cache<S> {
    /// An empty cache over `slots` (its length is the capacity, up to
    /// [`MAX_SLOTS`]; any length works, 0 caches nothing).  The storage is
    /// overwritten.
    pub fn new(slots: S) -> Self {
        let cap = slots.len().min(MAX_SLOTS);
        let mut c = Self {
            slots,
            cap,
            free: NIL,
            queues: [(NIL, NIL); QUEUES],
            cached: 0,
            queued: 0,
            fetching: 0,
            hand: 0,
            ticket: 0,
            wide: 0,
            holds: 0,
            fetch_list: NIL,
            pending: [(0, 0, 0); PENDING],
            npending: 0,
            pending_all: 0,
            cursor: 0,
            pinned: 0,
            changes: 0,
            zombies: 0,
            bucket: TokenBucket::new(),
            half_life: DEFAULT_HALF_LIFE_NS,
            reuse: DEFAULT_REUSE_PPM,
            stats: CacheStats::default(),
        };
        let s = c.slots.deref_mut();
        for (i, slot) in s.iter_mut().enumerate().take(cap) {
            *slot = Slot {
                next: if i + 1 < cap { (i + 1) as u32 } else { NIL },
                ..Slot::default()
            };
        }
        if cap > 0 {
            c.free = 0;
        }
        c
    }

    /// Slots.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Valid (cached) slots.
    pub fn cached(&self) -> usize {
        self.cached
    }

    /// Queued predictions.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Fetches in flight (including stale ones, still reading).
    pub fn fetching(&self) -> usize {
        self.fetching
    }

    /// Whether `block` is queued, being fetched (not stale) or cached.
    pub fn contains(&self, block: u64) -> bool {
        self.lookup(block).is_some()
    }

    /// The counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Sets the half-life of keep values (ns; 0 no decay).
    pub fn set_half_life(&mut self, ns: u64) {
        self.half_life = ns;
    }

    /// Sets the keep value of a block that served a read (ppm).
    pub fn set_reuse_ppm(&mut self, p: Ppm) {
        self.reuse = p.min(PPM_ONE);
    }

    /// The keep value of a block that served a read (ppm).
    pub fn reuse_ppm(&self) -> Ppm {
        self.reuse
    }

    /// The checksum installed with slot `slot`'s data (0 if it holds none:
    /// valid, or dropped while pinned).
    pub fn slot_crc(&self, slot: usize) -> u32 {
        match self.slots.deref().get(slot) {
            Some(s) if slot < self.cap && matches!(s.state, State::Valid | State::Zombie) => s.crc,
            _ => 0,
        }
    }

    fn s(&self, i: usize) -> &Slot {
        &self.slots.deref()[i]
    }

    fn s_mut(&mut self, i: usize) -> &mut Slot {
        &mut self.slots.deref_mut()[i]
    }

    // --- Index ------------------------------------------------------------

    fn ix_len(&self) -> usize {
        2 * self.cap
    }

    fn ix(&self, j: usize) -> u32 {
        self.s(j / 2).ix[j % 2]
    }

    fn set_ix(&mut self, j: usize, v: u32) {
        self.s_mut(j / 2).ix[j % 2] = v;
    }

    fn ix_next(&self, j: usize) -> usize {
        if j + 1 == self.ix_len() {
            0
        } else {
            j + 1
        }
    }

    fn home(&self, block: u64) -> usize {
        spread(block, 0x9E37_79B9_7F4A_7C15, self.ix_len())
    }

    /// The index position holding `block`, if indexed.
    fn ix_find(&self, block: u64) -> Option<usize> {
        if self.cap == 0 {
            return None;
        }
        let mut j = self.home(block);
        // At most half full: an empty entry ends every probe; the bound is
        // only a guard.
        for _ in 0..self.ix_len() {
            let e = self.ix(j);
            if e == 0 {
                return None;
            }
            if self.s(e as usize - 1).block == block {
                return Some(j);
            }
            j = self.ix_next(j);
        }
        None
    }

    /// The slot indexed for `block`.
    fn lookup(&self, block: u64) -> Option<usize> {
        self.ix_find(block).map(|j| self.ix(j) as usize - 1)
    }

    /// Indexes slot `i` (holding a block not yet indexed).
    fn ix_insert(&mut self, i: usize) {
        let mut j = self.home(self.s(i).block);
        for _ in 0..self.ix_len() {
            if self.ix(j) == 0 {
                self.set_ix(j, i as u32 + 1);
                return;
            }
            j = self.ix_next(j);
        }
    }

    /// Unindexes slot `i`'s block, shifting the rest of its probe run back.
    fn ix_remove(&mut self, i: usize) {
        let Some(mut hole) = self.ix_find(self.s(i).block) else {
            return;
        };
        let len = self.ix_len();
        let dist = |from: usize, to: usize| (to + len - from) % len;
        let mut j = hole;
        loop {
            j = self.ix_next(j);
            let e = self.ix(j);
            if e == 0 || j == hole {
                break;
            }
            let h = self.home(self.s(e as usize - 1).block);
            // Entry j may fill the hole unless its home lies in (hole, j].
            if dist(h, j) >= dist(hole, j) {
                self.set_ix(hole, e);
                hole = j;
            }
        }
        self.set_ix(hole, 0);
    }

    // --- Lists --------------------------------------------------------------

    fn queue_of(&self, i: usize) -> usize {
        let s = self.s(i);
        usize::from(s.tier) * BANDS + band(s.p)
    }

    fn push_queue(&mut self, i: usize) {
        let q = self.queue_of(i);
        let tail = self.queues[q].1;
        {
            let s = self.s_mut(i);
            s.prev = tail;
            s.next = NIL;
        }
        if tail == NIL {
            self.queues[q].0 = i as u32;
        } else {
            self.s_mut(tail as usize).next = i as u32;
        }
        self.queues[q].1 = i as u32;
    }

    fn unlink_queue(&mut self, i: usize) {
        let q = self.queue_of(i);
        let (prev, next) = (self.s(i).prev, self.s(i).next);
        if prev == NIL {
            self.queues[q].0 = next;
        } else {
            self.s_mut(prev as usize).next = next;
        }
        if next == NIL {
            self.queues[q].1 = prev;
        } else {
            self.s_mut(next as usize).prev = prev;
        }
    }

    /// Frees slot `i` (already unlinked and unindexed).
    fn release(&mut self, i: usize) {
        let free = self.free;
        *self.s_mut(i) = Slot {
            next: free,
            ix: self.s(i).ix,
            writes: self.s(i).writes,
            ..Slot::default()
        };
        self.free = i as u32;
    }

    // --- Dropping slots -------------------------------------------------------

    /// Drops slot `i` if queued or valid (counting a valid unused one as
    /// wasted); returns the state it was in.
    fn drop_slot(&mut self, i: usize) -> State {
        let s = *self.s(i);
        match s.state {
            State::Queued => {
                self.unlink_queue(i);
                self.ix_remove(i);
                self.queued -= 1;
                self.stats.queued_dropped += 1;
            }
            State::Valid => {
                self.ix_remove(i);
                self.cached -= 1;
                // Evicted, written, cleared: a carried copy may be old.
                self.changes += 1;
                if !s.used {
                    self.stats.wasted[usize::from(s.tier)] += 1;
                }
                if s.pins > 0 {
                    // A hit still copies it: freed by its last unpin.
                    self.s_mut(i).state = State::Zombie;
                    self.zombies += 1;
                    return s.state;
                }
            }
            State::Fetching | State::Free | State::Zombie => return s.state,
        }
        self.release(i);
        s.state
    }

    /// Makes fetching slot `i` stale: unindexed, freed when it finishes.
    fn disown(&mut self, i: usize) {
        if !self.s(i).stale {
            self.ix_remove(i);
            self.s_mut(i).stale = true;
        }
    }

    /// What a write or clear does to slot `i`.
    fn knock_out(&mut self, i: usize) -> State {
        match self.s(i).state {
            State::Fetching => {
                self.disown(i);
                State::Fetching
            }
            _ => self.drop_slot(i),
        }
    }

    // --- Eviction -------------------------------------------------------------

    /// Slot `i`'s keep value (see the module docs).
    fn keep(&self, i: usize, now: u64) -> u64 {
        let s = self.s(i);
        let valid = s.state == State::Valid;
        let base = if valid && s.used { self.reuse } else { s.p };
        let age = now.saturating_sub(s.stamp);
        decay(u64::from(base), age, self.half_life) * 2 + u64::from(valid)
    }

    /// The lowest-ranked of the next [`EVICT_SAMPLE`] evictable slots from
    /// the clock hand, with its keep value.
    fn victim(&mut self, now: u64) -> Option<(usize, u64)> {
        if self.cached + self.queued == 0 {
            return None;
        }
        let mut best: Option<(usize, u64)> = None;
        let mut seen = 0;
        let mut i = self.hand.checked_rem(self.cap)?;
        for _ in 0..self.cap {
            let s = self.s(i);
            if (s.state == State::Valid && s.pins == 0) || s.state == State::Queued {
                let k = self.keep(i, now);
                match best {
                    Some((_, b)) if b <= k => {}
                    _ => best = Some((i, k)),
                }
                seen += 1;
            }
            i = if i + 1 == self.cap { 0 } else { i + 1 };
            if seen == EVICT_SAMPLE {
                break;
            }
        }
        self.hand = i;
        best
    }

    // --- Writes in flight -------------------------------------------------

    fn bucket(&self, chunk: u64) -> usize {
        spread(chunk, 0xD6E8_FEB8_6659_FD93, self.cap)
    }

    /// Whether a write to `block` may be in flight (or the cache is held).
    fn write_pending(&self, block: u64) -> bool {
        self.wide > 0
            || self.holds > 0
            || (self.cap > 0 && self.s(self.bucket(block >> WRITE_CHUNK_SHIFT)).writes > 0)
    }

    /// Whether blocks `first..end` touch a range a wide write left pending.
    fn in_pending(&self, first: u64, end: u64) -> bool {
        self.pending_all > 0
            || self.pending[..self.npending]
                .iter()
                .any(|&(f, e, _)| first < e && f < end)
    }

    // --- Fetching list ------------------------------------------------------

    fn push_fetching(&mut self, i: usize) {
        let head = self.fetch_list;
        {
            let s = self.s_mut(i);
            s.prev = NIL;
            s.next = head;
        }
        if head != NIL {
            self.s_mut(head as usize).prev = i as u32;
        }
        self.fetch_list = i as u32;
    }

    fn unlink_fetching(&mut self, i: usize) {
        let (prev, next) = (self.s(i).prev, self.s(i).next);
        if prev == NIL {
            self.fetch_list = next;
        } else {
            self.s_mut(prev as usize).next = next;
        }
        if next != NIL {
            self.s_mut(next as usize).prev = prev;
        }
    }

    /// Counts chunks of blocks `first..end` in or out.
    fn count_chunks(&mut self, first: u64, end: u64, add: bool) {
        for chunk in first >> WRITE_CHUNK_SHIFT..=(end - 1) >> WRITE_CHUNK_SHIFT {
            let b = self.bucket(chunk);
            let w = &mut self.s_mut(b).writes;
            *w = if add {
                w.saturating_add(1)
            } else {
                w.saturating_sub(1)
            };
        }
    }

    // --- The API ------------------------------------------------------------

    /// Queues a prediction that `block` will be read, with probability `p`
    /// (clamped to [`PPM_ONE`]), at `tier`; evicts the lowest-ranked of a
    /// sample if no slot is free.  Refused for a block already queued,
    /// fetching or cached, a block with a write in flight, or when no slot
    /// is free or evictable for it.
    pub fn enqueue(&mut self, block: u64, p: Ppm, tier: Tier, now: u64) -> Result<(), Refused> {
        let p = p.min(PPM_ONE);
        let refused = if self.cap == 0 {
            Some(Refused::NoRoom)
        } else if self.write_pending(block) {
            Some(Refused::WriteInFlight)
        } else if self.lookup(block).is_some() {
            Some(Refused::Duplicate)
        } else {
            None
        };
        if let Some(r) = refused {
            self.count_refusal(r);
            return Err(r);
        }
        if self.free == NIL {
            let r = match self.victim(now) {
                None => Refused::NoRoom,
                // The prediction's own keep value, queued at age zero.
                Some((_, k)) if k >= u64::from(p) * 2 => Refused::Outranked,
                Some((v, _)) => {
                    if self.drop_slot(v) == State::Valid {
                        self.stats.evicted += 1;
                    }
                    return self.enqueue_free(block, p, tier, now);
                }
            };
            self.count_refusal(r);
            return Err(r);
        }
        self.enqueue_free(block, p, tier, now)
    }

    /// Queues predictions for blocks `first..end` (as [`Cache::enqueue`]),
    /// considering at most `budget` of them; returns `(queued, considered)`:
    /// the caller goes on from `first + considered`.  O(budget).
    pub fn enqueue_range(
        &mut self,
        first: u64,
        end: u64,
        p: Ppm,
        tier: Tier,
        now: u64,
        budget: u64,
    ) -> (u64, u64) {
        let n = end.saturating_sub(first).min(budget);
        let mut queued = 0;
        for b in first..first + n {
            if self.enqueue(b, p, tier, now).is_ok() {
                queued += 1;
            }
        }
        (queued, n)
    }

    /// Counts `n` predicted blocks dropped unseen (past a request's bound).
    pub fn count_dropped(&mut self, n: u64) {
        self.stats.predict_dropped += n;
    }

    fn count_refusal(&mut self, r: Refused) {
        match r {
            Refused::Duplicate => self.stats.refused_duplicate += 1,
            Refused::WriteInFlight => self.stats.refused_write += 1,
            Refused::NoRoom | Refused::Outranked => self.stats.refused_room += 1,
        }
    }

    /// Queues `block` in the first free slot.
    fn enqueue_free(&mut self, block: u64, p: Ppm, tier: Tier, now: u64) -> Result<(), Refused> {
        let i = self.free;
        if i == NIL {
            self.count_refusal(Refused::NoRoom);
            return Err(Refused::NoRoom);
        }
        let i = i as usize;
        self.free = self.s(i).next;
        {
            let s = self.s_mut(i);
            s.block = block;
            s.stamp = now;
            s.p = p;
            s.tier = tier.index() as u8;
            s.state = State::Queued;
            s.used = false;
            s.stale = false;
        }
        self.ix_insert(i);
        self.push_queue(i);
        self.queued += 1;
        self.stats.enqueued[tier.index()] += 1;
        Ok(())
    }

    /// The next block to fetch, best first: Critical always, Predictive
    /// while `load.origin_inflight < limits.load_limit`, Background once the
    /// origin is idle (nothing in flight and no user I/O for
    /// `limits.idle_ns`); always within `limits.max_inflight` fetches in
    /// flight and the bandwidth limit.  Within a tier, higher probability
    /// bands first, then oldest first.  The slot becomes fetching.
    pub fn next_fetch(&mut self, now: u64, load: Load, limits: &Limits) -> Option<Fetch> {
        if self.wide > 0
            || self.holds > 0
            || self.queued == 0
            || self.fetching >= limits.max_inflight as usize
        {
            return None;
        }
        let predictive = load.origin_inflight < limits.load_limit;
        let background =
            load.origin_inflight == 0 && now.saturating_sub(load.last_user_io) >= limits.idle_ns;
        let allowed = [true, predictive, background];
        let i = self
            .queues
            .iter()
            .enumerate()
            .find(|(q, head)| head.0 != NIL && allowed.get(q / BANDS) == Some(&true))
            .map(|(_, head)| head.0 as usize)?;
        if !self.bucket.take(now, limits.bytes_per_sec, BLOCK_BYTES) {
            return None;
        }
        self.unlink_queue(i);
        self.push_fetching(i);
        self.queued -= 1;
        self.fetching += 1;
        self.ticket = self.ticket.wrapping_add(1);
        let ticket = self.ticket;
        let s = self.s_mut(i);
        s.state = State::Fetching;
        s.ticket = ticket;
        let (block, tier) = (s.block, Tier::from_index(s.tier));
        self.stats.issued[tier.index()] += 1;
        Some(Fetch {
            slot: i,
            block,
            tier,
            ticket,
        })
    }

    /// A fetch finished (`ok` false: I/O error), its data checksummed
    /// `crc`.  Installs the block (valid, unused) unless a write or clear
    /// came since the fetch began, or a wide write is in flight: then the
    /// slot is freed.  A `Fetch` this cache did not issue, or finished
    /// already, changes nothing and is reported stale.
    pub fn finish_fetch(&mut self, f: Fetch, ok: bool, crc: u32, now: u64) -> Finish {
        let mine = f.slot < self.cap
            && self.slots.deref().get(f.slot).is_some_and(|s| {
                s.state == State::Fetching && s.ticket == f.ticket && s.block == f.block
            });
        if !mine {
            return Finish::Stale;
        }
        let i = f.slot;
        self.unlink_fetching(i);
        self.fetching -= 1;
        let stale = self.s(i).stale || self.wide > 0 || self.holds > 0;
        if !ok || stale {
            if !self.s(i).stale {
                self.ix_remove(i);
            }
            self.release(i);
            return if ok {
                self.stats.stale_dropped += 1;
                Finish::Stale
            } else {
                self.stats.errors += 1;
                Finish::Failed
            };
        }
        let s = self.s_mut(i);
        s.state = State::Valid;
        s.used = false;
        s.crc = crc;
        s.stamp = now;
        let tier = usize::from(s.tier);
        self.cached += 1;
        self.stats.completed[tier] += 1;
        Finish::Installed
    }

    /// How many times a cached block was dropped (evicted, written,
    /// cleared, failing its checksum) or a wide write began: a block
    /// carried over while this did not move is still current (while a
    /// block stays cached, every write to it drops it).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The valid blocks of slots `from .. from + n`, outside ranges wide
    /// writes left pending, for a successor to carry over: `f` for each.
    /// Returns where to go on from (the capacity when done).  O(n).
    pub fn carry_scan(&self, from: usize, n: usize, now: u64, mut f: impl FnMut(Carry)) -> usize {
        let end = from.saturating_add(n).min(self.cap);
        for i in from.min(end)..end {
            let s = *self.s(i);
            if s.state == State::Valid && !self.in_pending(s.block, s.block.saturating_add(1)) {
                f(Carry {
                    slot: i,
                    block: s.block,
                    keep: self.keep(i, now),
                    ticket: s.ticket,
                    p: s.p,
                    crc: s.crc,
                });
            }
        }
        end
    }

    /// Whether `c`'s slot still holds the same data: valid, the same block
    /// and install, outside the ranges of wide writes.  O(1).
    pub fn carry_current(&self, c: &Carry) -> bool {
        c.slot < self.cap
            && self.slots.deref().get(c.slot).is_some_and(|s| {
                s.state == State::Valid && s.block == c.block && s.ticket == c.ticket
            })
            && !self.in_pending(c.block, c.block.saturating_add(1))
    }

    /// Pins `c`'s slot (its data is copied meanwhile) if it is current;
    /// [`Cache::unpin`] ends it.  O(1).
    pub fn carry_pin(&mut self, c: &Carry) -> bool {
        if !self.carry_current(c) {
            return false;
        }
        let s = self.s_mut(c.slot);
        s.pins = s.pins.saturating_add(1);
        if s.pins == 1 {
            self.pinned += 1;
        }
        true
    }

    /// Into a cache not live yet: `c`'s block, valid, in a free slot
    /// (whose data the caller wrote); the slot, or none if no slot is free
    /// or the block is here already.  O(1).
    pub fn carry_in(&mut self, c: &Carry, now: u64) -> Option<usize> {
        if self.free == NIL || self.lookup(c.block).is_some() {
            return None;
        }
        let i = self.free as usize;
        self.free = self.s(i).next;
        {
            let s = self.s_mut(i);
            s.block = c.block;
            s.stamp = now;
            s.p = c.p;
            s.tier = 0;
            s.state = State::Valid;
            // Counted as used: its use or waste was the old cache's.
            s.used = true;
            s.stale = false;
            s.crc = c.crc;
            s.ticket = 0;
        }
        self.ix_insert(i);
        self.cached += 1;
        self.stats.carried += 1;
        Some(i)
    }

    /// Drops a carried block again (its data went in the old cache).
    pub fn carry_out(&mut self, block: u64) {
        if let Some(i) = self.lookup(block) {
            if self.s(i).state == State::Valid && self.s(i).pins == 0 {
                self.ix_remove(i);
                self.cached -= 1;
                self.stats.invalidated += 1;
                self.release(i);
            }
        }
    }

    /// A read of blocks `first .. first + count`, counted as a hit, a
    /// partial hit or a miss.  If all are cached: marks them used and
    /// recent, fills `out[..count]` with their slots and *pins* them, and
    /// reports a hit; the caller copies their data (the lock may be dropped
    /// meanwhile: a pinned slot is never refilled) and then calls
    /// [`Cache::unpin`] for each.  A read larger than `out`, empty, or
    /// touching a range a wide write left pending, is a miss.  O(count).
    pub fn read(&mut self, first: u64, count: u32, now: u64, out: &mut [usize]) -> ReadResult {
        let n = count as usize;
        let end = first.saturating_add(u64::from(count));
        if n == 0 || n > out.len() || self.cached == 0 || self.in_pending(first, end) {
            self.stats.misses += 1;
            return ReadResult::Miss;
        }
        let mut valid = 0u32;
        for (k, o) in out.iter_mut().take(n).enumerate() {
            match self.lookup(first.wrapping_add(k as u64)) {
                Some(i) if self.s(i).state == State::Valid => {
                    *o = i;
                    valid += 1;
                }
                _ => {}
            }
        }
        if valid == 0 {
            self.stats.misses += 1;
            return ReadResult::Miss;
        }
        if valid < count {
            self.stats.partial_hits += 1;
            return ReadResult::Partial(valid);
        }
        for &i in out.iter().take(n) {
            let s = self.s_mut(i);
            s.stamp = now;
            let first_use = !s.used;
            s.used = true;
            s.pins = s.pins.saturating_add(1);
            let pinned = s.pins == 1;
            let tier = usize::from(s.tier);
            if first_use {
                self.stats.used[tier] += 1;
            }
            if pinned {
                self.pinned += 1;
            }
        }
        self.stats.hits += 1;
        ReadResult::Hit
    }

    /// A hit's copy of slot `slot` is done: one pin fewer (a zombie's last
    /// unpin frees it).  Unpinning a slot that is not pinned does nothing.
    pub fn unpin(&mut self, slot: usize) {
        if slot >= self.cap || self.s(slot).pins == 0 {
            return;
        }
        let s = self.s_mut(slot);
        s.pins -= 1;
        if s.pins > 0 {
            return;
        }
        let zombie = s.state == State::Zombie;
        self.pinned -= 1;
        if zombie {
            self.zombies -= 1;
            self.release(slot);
        }
    }

    /// Slots pinned by hits.
    pub fn pinned(&self) -> usize {
        self.pinned
    }

    /// Keeps the cache from queueing, fetching and installing anything
    /// until as many [`Cache::release_hold`]s.  O(1).
    pub fn hold(&mut self) {
        self.holds += 1;
    }

    /// Ends one [`Cache::hold`].
    pub fn release_hold(&mut self) {
        self.holds = self.holds.saturating_sub(1);
    }

    /// Whether a wide write left ranges for [`Cache::sweep`].
    pub fn needs_sweep(&self) -> bool {
        self.npending > 0 || self.pending_all > 0
    }

    /// Sweeps up to `budget` slots from the sweep's position: queued and
    /// valid slots of blocks in a pending range are dropped (a pinned one
    /// becomes a zombie).  A range is no longer pending once every slot was
    /// swept since it was registered.  Returns whether ranges are still
    /// pending.  O(budget).
    pub fn sweep(&mut self, budget: usize) -> bool {
        if !self.needs_sweep() || self.cap == 0 {
            return false;
        }
        let steps = budget.clamp(1, self.cap);
        for _ in 0..steps {
            let i = self.cursor;
            self.cursor = if i + 1 == self.cap { 0 } else { i + 1 };
            let s = self.s(i);
            let live = matches!(s.state, State::Valid | State::Queued);
            if live && self.in_pending(s.block, s.block.saturating_add(1)) {
                self.write_knock_out(i);
            }
        }
        self.pending_all = self.pending_all.saturating_sub(steps);
        for e in self.pending[..self.npending].iter_mut() {
            e.2 = e.2.saturating_sub(steps);
        }
        let mut k = 0;
        while k < self.npending {
            if self.pending[k].2 == 0 {
                self.npending -= 1;
                self.pending[k] = self.pending[self.npending];
            } else {
                k += 1;
            }
        }
        self.needs_sweep()
    }

    /// The data of slot `slot`, returned by a hit, failed its checksum:
    /// the slot is dropped.
    pub fn verify_failed(&mut self, slot: usize) {
        let valid = slot < self.cap
            && self
                .slots
                .deref()
                .get(slot)
                .is_some_and(|s| s.state == State::Valid);
        if valid {
            self.ix_remove(slot);
            self.cached -= 1;
            self.changes += 1;
            self.stats.verify_mismatch += 1;
            if self.s(slot).pins > 0 {
                self.s_mut(slot).state = State::Zombie;
                self.zombies += 1;
            } else {
                self.release(slot);
            }
        }
    }

    /// A write to blocks `first .. first + count` starts (call before it is
    /// sent to the origin): cached blocks of the range are dropped, queued
    /// ones too, fetching ones go stale; until [`Cache::write_end`] the
    /// range is never queued, fetched or installed.  Never fails; costs
    /// O(count) up to [`EAGER_BLOCKS`], and O(fetches in flight) for a wide
    /// write, whose cached blocks [`Cache::sweep`] drops later (reads of
    /// its range miss until then).
    pub fn write_begin(&mut self, first: u64, count: u32) -> WriteToken {
        let end = first.saturating_add(u64::from(count));
        if end == first || self.cap == 0 {
            return WriteToken {
                first,
                count,
                kind: WriteKind::Nothing,
            };
        }
        if end - first <= EAGER_BLOCKS {
            for b in first..end {
                if let Some(i) = self.lookup(b) {
                    self.write_knock_out(i);
                }
            }
            self.count_chunks(first, end, true);
            return WriteToken {
                first,
                count,
                kind: WriteKind::Chunks,
            };
        }
        self.wide += 1;
        self.changes += 1;
        self.stats.wide_writes += 1;
        if self.npending < PENDING {
            self.pending[self.npending] = (first, end, self.cap);
            self.npending += 1;
        } else {
            self.pending_all = self.cap;
        }
        // Fetches in flight may read data the write replaces.
        let mut i = self.fetch_list;
        while i != NIL {
            let next = self.s(i as usize).next;
            self.disown(i as usize);
            i = next;
        }
        WriteToken {
            first,
            count,
            kind: WriteKind::Wide,
        }
    }

    fn write_knock_out(&mut self, i: usize) {
        if self.knock_out(i) == State::Valid {
            self.stats.invalidated += 1;
        }
    }

    /// The write of `t` completed (successfully or not).
    pub fn write_end(&mut self, t: WriteToken) {
        match t.kind {
            WriteKind::Nothing => {}
            WriteKind::Wide => self.wide = self.wide.saturating_sub(1),
            WriteKind::Chunks => {
                if self.cap > 0 {
                    let end = t.first.saturating_add(u64::from(t.count));
                    self.count_chunks(t.first, end, false);
                }
            }
        }
    }

    /// Walks a doubly linked list of slots from `head`: every entry must
    /// satisfy `ok` and link back to its predecessor, and there are at most
    /// `max`.  Returns the length and the last entry.
    fn audit_list(
        &self,
        head: u32,
        max: usize,
        ok: impl Fn(usize, &Slot) -> bool,
    ) -> Result<(usize, u32), &'static str> {
        let (mut i, mut prev, mut n) = (head, NIL, 0);
        while i != NIL {
            let s = self.slots.deref().get(i as usize).ok_or("list link")?;
            if !ok(i as usize, s) || s.prev != prev {
                return Err("list entry");
            }
            n += 1;
            if n > max {
                return Err("list loop or count");
            }
            prev = i;
            i = s.next;
        }
        Ok((n, prev))
    }

    /// Checks the internal structure (index, lists, counts) in
    /// O(capacity): for tests and debugging.
    pub fn audit(&self) -> Result<(), &'static str> {
        let (mut cached, mut queued, mut fetching, mut indexed) = (0, 0, 0, 0);
        let (mut zombies, mut pinned) = (0, 0);
        for i in 0..self.cap {
            let s = self.s(i);
            if s.pins > 0 {
                if !matches!(s.state, State::Valid | State::Zombie) {
                    return Err("pinned slot neither valid nor zombie");
                }
                pinned += 1;
            }
            match s.state {
                State::Free => continue,
                State::Queued => queued += 1,
                State::Fetching => fetching += 1,
                State::Valid => cached += 1,
                State::Zombie => {
                    if s.pins == 0 {
                        return Err("unpinned zombie");
                    }
                    zombies += 1;
                    continue;
                }
            }
            if s.stale {
                if s.state != State::Fetching {
                    return Err("stale slot not fetching");
                }
                continue;
            }
            indexed += 1;
            if self.lookup(s.block) != Some(i) {
                return Err("slot not found through the index");
            }
        }
        if (cached, queued, fetching) != (self.cached, self.queued, self.fetching) {
            return Err("state counts");
        }
        if (zombies, pinned) != (self.zombies, self.pinned) {
            return Err("zombie or pinned counts");
        }
        let (listed, _) = self.audit_list(self.fetch_list, self.fetching, |_, s| {
            s.state == State::Fetching
        })?;
        if listed != self.fetching {
            return Err("fetching count");
        }
        let entries = (0..self.ix_len()).filter(|&j| self.ix(j) != 0).count();
        if entries != indexed {
            return Err("index entries");
        }
        let mut listed = 0;
        for (q, &(head, tail)) in self.queues.iter().enumerate() {
            let (n, last) = self.audit_list(head, self.queued - listed, |i, s| {
                s.state == State::Queued && self.queue_of(i) == q
            })?;
            listed += n;
            if tail != last {
                return Err("queue tail");
            }
        }
        if listed != self.queued {
            return Err("queued count");
        }
        let (mut i, mut free) = (self.free, 0);
        while i != NIL {
            let s = self.slots.deref().get(i as usize).ok_or("free link")?;
            if s.state != State::Free {
                return Err("free list entry");
            }
            free += 1;
            if free > self.cap {
                return Err("free list loop");
            }
            i = s.next;
        }
        if free + cached + queued + fetching + zombies != self.cap {
            return Err("free count");
        }
        Ok(())
    }

    /// Drops every cached block and queued prediction; fetches in flight go
    /// stale (their data will not be installed).  Writes in flight stay
    /// tracked.
    pub fn clear(&mut self) {
        for i in 0..self.cap {
            if self.knock_out(i) == State::Valid {
                self.stats.cleared += 1;
            }
        }
        self.hand = 0;
    }
}

/// Adds the counters of `s` to `acc`.
pub fn add_stats(acc: &mut CacheStats, s: &CacheStats) {
    acc.hits += s.hits;
    acc.misses += s.misses;
    acc.partial_hits += s.partial_hits;
    for t in 0..3 {
        acc.enqueued[t] += s.enqueued[t];
        acc.issued[t] += s.issued[t];
        acc.completed[t] += s.completed[t];
        acc.used[t] += s.used[t];
        acc.wasted[t] += s.wasted[t];
    }
    acc.errors += s.errors;
    acc.stale_dropped += s.stale_dropped;
    acc.invalidated += s.invalidated;
    acc.evicted += s.evicted;
    acc.cleared += s.cleared;
    acc.verify_mismatch += s.verify_mismatch;
    acc.queued_dropped += s.queued_dropped;
    acc.refused_duplicate += s.refused_duplicate;
    acc.refused_write += s.refused_write;
    acc.refused_room += s.refused_room;
    acc.wide_writes += s.wide_writes;
    acc.predict_dropped += s.predict_dropped;
    acc.carried += s.carried;
}

// --- Configuration changes ----------------------------------------------------

/// Shards of [`WriteGate`]'s counter.
pub const GATE_SHARDS: usize = 16;

#[repr(align(64))]
struct GateShard(AtomicU32);

/// Writes in flight that no cache saw, counted without a lock.
///
/// A device's cache may be off, then enabled, or replaced by a resize, at
/// any moment, while writes are in flight.  A new cache must not install
/// data older than any of them, so every write is counted, whatever the
/// cache's state: a write that finds the cache off counts itself here (one
/// atomic add on a per-CPU shard, no lock); a write that finds it on
/// registers with the cache under its lock ([`Switch::write_begin`]) and
/// leaves the gate.  The two sides order themselves like Dekker's
/// protocol (all `SeqCst`): a write adds itself, *then* reads
/// [`WriteGate::enabled`]; a configuration change publishes `enabled`,
/// *then* sums the shards.  So either the write sees the cache and
/// registers with it, or the change sees the write and holds the new cache
/// back ([`Switch::settle`]) until the gate drains.
pub struct WriteGate {
    enabled: AtomicBool,
    shards: [GateShard; GATE_SHARDS],
}

impl Default for WriteGate {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteGate {
    /// No write, no cache.
    pub const fn new() -> Self {
        #[allow(clippy::declare_interior_mutable_const)]
        const ZERO: GateShard = GateShard(AtomicU32::new(0));
        Self {
            enabled: AtomicBool::new(false),
            shards: [ZERO; GATE_SHARDS],
        }
    }

    /// A write starts on CPU `cpu`: counts it in a shard, and returns the
    /// shard and whether a cache is on (then register the write with it
    /// under the cache's lock).
    #[inline]
    pub fn enter(&self, cpu: u32) -> (u8, bool) {
        let shard = (cpu as usize % GATE_SHARDS) as u8;
        self.shards[usize::from(shard)].0.fetch_add(1, SeqCst);
        (shard, self.enabled.load(SeqCst))
    }

    /// A write counted in `shard` ended, or registered with the cache:
    /// uncounts it, and returns whether a cache is on (then let it
    /// [`Switch::settle`]).
    #[inline]
    pub fn leave(&self, shard: u8) -> bool {
        self.shards[usize::from(shard) % GATE_SHARDS]
            .0
            .fetch_sub(1, SeqCst);
        self.enabled.load(SeqCst)
    }

    /// Whether a cache is on (the read path's first check).
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(SeqCst)
    }

    /// Publishes whether a cache is on (under the cache's lock, before
    /// [`WriteGate::untracked`] is read for [`Switch::settle`]).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, SeqCst);
    }

    /// Writes counted in the gate (in flight, seen by no cache).
    pub fn untracked(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| u64::from(s.0.load(SeqCst)))
            .sum()
    }
}

/// A write registered with a [`Switch`]: end it there, once.
#[derive(Clone, Copy, Debug, Default)]
#[must_use = "a write must be ended with Switch::write_end"]
pub struct SwitchWrite {
    token: WriteToken,
    generation: u32,
}

/// A device's cache across configuration changes: enabled, resized any
/// number of times, disabled, with writes in flight throughout.
///
/// Each cache has a *generation*.  Writes registered with a cache are
/// counted per generation: those of the current cache, and those of all
/// older ones (`old_writes`).  A new cache starts held ([`Cache::hold`]):
/// it queues, fetches and installs nothing until every write that began
/// before it, registered with an older cache or counted in the
/// [`WriteGate`], has ended.  A hold belongs to the cache it was taken on
/// and dies with it; a write's token is ended only on the cache that
/// issued it.  Fetches carry the generation they were issued in; one that
/// finishes in another generation is dropped.
pub struct Switch<S> {
    cache: Option<Cache<S>>,
    generation: u32,
    writes: u32,
    old_writes: u32,
    held: bool,
    past: CacheStats,
}

impl<S: DerefMut<Target = [Slot]>> Switch<S> {
    /// No cache yet.
    pub fn new() -> Self {
        Self {
            cache: None,
            generation: 0,
            writes: 0,
            old_writes: 0,
            held: false,
            past: CacheStats::default(),
        }
    }

    /// The current cache's generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The current cache.
    pub fn cache(&self) -> Option<&Cache<S>> {
        self.cache.as_ref()
    }

    /// The current cache, mutably.
    pub fn cache_mut(&mut self) -> Option<&mut Cache<S>> {
        self.cache.as_mut()
    }

    /// Whether the current cache is held back by older writes.
    pub fn held(&self) -> bool {
        self.held
    }

    /// Writes in flight registered with older caches.
    pub fn old_writes(&self) -> u32 {
        self.old_writes
    }

    /// Replaces the cache by `new` (`None`: no cache) in a new generation,
    /// returning the old one (drop it outside any lock).  Writes of the old
    /// cache become old writes; the new cache starts held.  Then publish
    /// [`WriteGate::set_enabled`] and call [`Switch::settle`].  O(1).
    pub fn replace(&mut self, new: Option<Cache<S>>) -> Option<Cache<S>> {
        if let Some(old) = self.cache.as_ref() {
            add_stats(&mut self.past, old.stats());
        }
        self.old_writes += self.writes;
        self.writes = 0;
        self.generation = self.generation.wrapping_add(1);
        let mut new = new;
        self.held = false;
        if let Some(c) = new.as_mut() {
            c.hold();
            self.held = true;
        }
        core::mem::replace(&mut self.cache, new)
    }

    /// Releases the current cache's hold if no write older than it is in
    /// flight: none registered with an older cache, and none counted in
    /// `gate` (read after `enabled` was published).
    pub fn settle(&mut self, gate: &WriteGate) {
        // The gate is summed only while held: a write's end stays cheap.
        if self.held && self.old_writes == 0 && gate.untracked() == 0 {
            if let Some(c) = self.cache.as_mut() {
                c.release_hold();
            }
            self.held = false;
        }
    }

    /// A write of blocks `first .. first + count` starts: registered with
    /// the cache (`Some`), or `None` if there is none (the write stays
    /// counted in the gate).
    pub fn write_begin(&mut self, first: u64, count: u32) -> Option<SwitchWrite> {
        let c = self.cache.as_mut()?;
        self.writes += 1;
        Some(SwitchWrite {
            token: c.write_begin(first, count),
            generation: self.generation,
        })
    }

    /// The write `w` completed: ended on its own cache, if still current.
    pub fn write_end(&mut self, w: SwitchWrite) {
        if w.generation == self.generation {
            self.writes = self.writes.saturating_sub(1);
            if let Some(c) = self.cache.as_mut() {
                c.write_end(w.token);
            }
        } else {
            self.old_writes = self.old_writes.saturating_sub(1);
        }
    }

    /// The counters of every cache so far.
    pub fn stats(&self) -> CacheStats {
        let mut s = self.past;
        if let Some(c) = self.cache.as_ref() {
            add_stats(&mut s, c.stats());
        }
        s
    }
}

impl<S: DerefMut<Target = [Slot]>> Default for Switch<S> {
    fn default() -> Self {
        Self::new()
    }
}
