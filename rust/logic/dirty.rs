// SPDX-License-Identifier: GPL-2.0

//! The dirty-block set of one epoch, at adaptive granularity.
//!
//! The device is cut into 4 KiB *blocks* and 1 MiB *regions* of 256 blocks,
//! tracked in *grains* of `2^shift` blocks (`shift` 0 = 4 KiB .. 8 = 1 MiB),
//! the granularity in force.  A region is in one of four states:
//!
//! - clean: nothing stored;
//! - *sparse*: up to [`SPARSE_MAX`] dirty grains, each a 4-byte entry in a
//!   grain set (open addressing, hashed by region so that a region's grains
//!   share one probe run);
//! - *fine*: an entry in a region table holds one bit per grain;
//! - *coarse*: one bit in a bitmap says the whole region is dirty.
//!
//! A region moves up as it fills: sparse to fine past [`SPARSE_MAX`]
//! grains, fine to coarse at `dense_pct` percent dirty (freeing its entry).
//! A write that finds no room falls back to the next state up, ending at
//! coarse, which always has room.  So memory follows the write pattern:
//! untouched regions cost their coarse bit, scattered writes 4 bytes a grain,
//! clustered ones a bitmap, dense ones a bit.
//!
//! The invariant every operation keeps: a block that was marked is reported
//! dirty until [`DirtySet::clear`].  Changes of granularity are lossless:
//! coarsening ORs fine bits into coarser grains, refining marks every fine
//! grain of a dirty coarse grain.
//!
//! No operation allocates: the caller provides the region table `S`, the
//! grain set `G` and the coarse bitmap `C`, and grows the tables off the I/O
//! path ([`DirtySet::needs_grow`], [`DirtySet::grow_into`],
//! [`DirtySet::grow_sparse_into`]).

use core::{
    ops::{
        Deref,
        DerefMut, //
    },
    sync::atomic::{
        AtomicU64,
        Ordering, //
    },
};

/// Sectors per block (4 KiB blocks of 512-byte sectors), as a shift.
pub const BLOCK_SECTOR_SHIFT: u32 = 3;
/// Blocks per region (1 MiB regions), as a shift.
pub const REGION_SHIFT: u32 = 8;
/// Blocks per region.
pub const REGION_BLOCKS: u64 = 1 << REGION_SHIFT;
/// Dirty grains a region holds in the sparse grain set before it gets a
/// region-table entry.
pub const SPARSE_MAX: usize = 8;
/// The coarsest grain shift: one grain per region.
pub const MAX_SHIFT: u8 = REGION_SHIFT as u8;
/// The highest logging level (finest tracking, 4 KiB).
pub const MAX_LEVEL: u8 = 100;

/// The grain shift of a logging level: `None` for level 0 (untracked), 8
/// (1 MiB) for the lowest levels down to 0 (4 KiB) for the highest.
pub fn level_shift(level: u8) -> Option<u8> {
    if level == 0 {
        return None;
    }
    let l = u32::from(level.min(MAX_LEVEL));
    Some(MAX_SHIFT - ((l - 1) * (u32::from(MAX_SHIFT) + 1) / u32::from(MAX_LEVEL)) as u8)
}

/// One fine region: a key and one bit per grain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// Region number plus one; 0 is an empty slot.
    key: u32,
    /// Set bits in `bits`.
    count: u16,
    bits: [u64; 4],
}

impl Slot {
    fn region(&self) -> u32 {
        self.key - 1
    }
}

/// Why [`DirtySet::new`] refused its storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The coarse bitmap has fewer than one bit per region.
    CoarseTooSmall,
    /// The table size is not a power of two of at least 8 slots.
    BadTableSize,
    /// More regions than a slot key can name.
    TooManyRegions,
}

/// Words of a bitmap of `bits` bits.
pub const fn bitmap_words(bits: u64) -> usize {
    bits.div_ceil(64) as usize
}

/// Regions of a device of `sectors` sectors.
pub const fn regions_of(sectors: u64) -> u64 {
    sectors.div_ceil(1 << (BLOCK_SECTOR_SHIFT + REGION_SHIFT))
}

/// Sets the coarse bits of the regions that blocks `start .. start + len`
/// touch, in a bitmap for a device of `blocks` blocks.  Lock-free.
pub fn mark_coarse_words(words: &[AtomicU64], blocks: u64, start: u64, len: u64) {
    if len == 0 || start >= blocks {
        return;
    }
    let end = start.saturating_add(len).min(blocks);
    for r in start / REGION_BLOCKS..=(end - 1) / REGION_BLOCKS {
        if let Some(w) = words.get((r / 64) as usize) {
            w.fetch_or(1 << (r % 64), Ordering::Relaxed);
        }
    }
}

/// Sets the bits of blocks `start .. start + len` (clamped to `blocks`) in a
/// plain bitmap of one bit per block.  Lock-free; returns how many bits
/// were newly set.
#[inline]
pub fn mark_flat_words(words: &[AtomicU64], blocks: u64, start: u64, len: u64) -> u64 {
    let end = start.saturating_add(len).min(blocks);
    let lo = start % 64;
    if end > start && end - start <= 64 - lo {
        // Within one word (a write of up to 256 KiB, mostly): one atomic
        // OR, and the count without a population count when every bit is
        // new (the common case).
        let Some(w) = words.get((start / 64) as usize) else {
            return 0;
        };
        let n = end - start;
        let mask = (u64::MAX >> (64 - n)) << lo;
        let new = mask & !w.fetch_or(mask, Ordering::Relaxed);
        return if new == mask {
            n
        } else {
            u64::from(new.count_ones())
        };
    }
    let mut b = start;
    let mut new = 0;
    while b < end {
        let (i, lo) = ((b / 64) as usize, (b % 64) as u32);
        let n = (end - b).min(u64::from(64 - lo)) as u32;
        let Some(w) = words.get(i) else {
            break;
        };
        if n == 1 {
            // One block (a 4 KiB write): a single bit test-and-set.
            let bit = 1u64 << lo;
            new += u64::from(w.fetch_or(bit, Ordering::Relaxed) & bit == 0);
        } else {
            let mask = (u64::MAX >> (64 - n)) << lo;
            new += u64::from((mask & !w.fetch_or(mask, Ordering::Relaxed)).count_ones());
        }
        b += u64::from(n);
    }
    new
}

/// Takes the runs of set bits out of a plain bitmap (each word cleared as
/// it is read: bits set meanwhile stay for the next call) and hands each
/// to `f` as (first block, blocks).
pub fn take_flat_runs(words: &[AtomicU64], mut f: impl FnMut(u64, u64)) {
    for (i, w) in words.iter().enumerate() {
        if w.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let mut bits = w.swap(0, Ordering::Acquire);
        while bits != 0 {
            let lo = bits.trailing_zeros();
            let n = (bits >> lo).trailing_ones();
            f(i as u64 * 64 + u64::from(lo), u64::from(n));
            bits &= if n + lo == 64 {
                (1u64 << lo) - 1
            } else {
                !(((1u64 << n) - 1) << lo)
            };
        }
    }
}

/// Where region `r`'s entries start probing in a table of `mask + 1` slots:
/// Fibonacci hashing spreads neighbouring regions over the table.
fn home(r: u32, mask: usize) -> usize {
    ((u64::from(r).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize) & mask
}

/// Removes entry `i` of a linear-probing table (power-of-two sized), moving
/// later entries of its probe run back so that no lookup misses them.
/// `region_of` gives an entry's region, which is what it is homed by, or
/// `None` for an empty entry; `empty` is written into the freed slot.
fn remove_backshift<T: Copy>(
    table: &mut [T],
    mut i: usize,
    empty: T,
    region_of: impl Fn(&T) -> Option<u32>,
) {
    let mask = table.len() - 1;
    let mut j = i;
    loop {
        j = (j + 1) & mask;
        let Some(r) = region_of(&table[j]) else {
            break;
        };
        let h = home(r, mask);
        // Move j into the hole at i unless its home lies within (i, j].
        let in_between = if i <= j {
            i < h && h <= j
        } else {
            i < h || h <= j
        };
        if !in_between {
            table[i] = table[j];
            i = j;
        }
    }
    table[i] = empty;
}

/// The dirty set of one epoch.
pub struct DirtySet<S, G, C> {
    blocks: u64,
    regions: u64,
    shift: u8,
    /// Promote a fine region to coarse when this percentage of its grains
    /// is dirty (100: only when full).
    dense_pct: u8,
    coarse: C,
    table: S,
    used: usize,
    /// Grain set: `grain + 1` (0 empty), homed by the grain's region.
    sparse: G,
    sparse_used: usize,
    fallbacks: u64,
    /// Blocks newly marked since `clear` (approximate past promotions and
    /// granularity changes): the trend of newly dirtied data, in O(1).
    marked: u64,
}

/// Counts from [`DirtySet::mark`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarkOutcome {
    /// Regions marked coarse because the table had no room.
    pub fallbacks: u32,
    /// Regions promoted to coarse for being dense.
    pub promoted: u32,
}

impl<S, G, C> DirtySet<S, G, C>
where
    S: DerefMut<Target = [Slot]>,
    G: DerefMut<Target = [u32]>,
    C: Deref<Target = [AtomicU64]>,
{
    /// An empty set for a device of `blocks` blocks tracked at grain `shift`,
    /// over a coarse bitmap, a region table and a grain set (both tables
    /// power-of-two sized, at least 8 entries).
    pub fn new(
        blocks: u64,
        shift: u8,
        dense_pct: u8,
        coarse: C,
        table: S,
        sparse: G,
    ) -> Result<Self, SetupError> {
        let regions = blocks.div_ceil(REGION_BLOCKS);
        if regions >= u64::from(u32::MAX) {
            return Err(SetupError::TooManyRegions);
        }
        if coarse.len() < bitmap_words(regions) {
            return Err(SetupError::CoarseTooSmall);
        }
        if table.len() < 8
            || !table.len().is_power_of_two()
            || sparse.len() < 8
            || !sparse.len().is_power_of_two()
        {
            return Err(SetupError::BadTableSize);
        }
        let mut set = Self {
            blocks,
            regions,
            shift: shift.min(MAX_SHIFT),
            dense_pct: dense_pct.clamp(1, 100),
            coarse,
            table,
            used: 0,
            sparse,
            sparse_used: 0,
            fallbacks: 0,
            marked: 0,
        };
        set.clear();
        Ok(set)
    }

    /// The device size in blocks.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// The grain shift in force for fine regions.
    pub fn shift(&self) -> u8 {
        self.shift
    }

    /// The dense-promotion threshold, in percent.
    pub fn dense_pct(&self) -> u8 {
        self.dense_pct
    }

    /// Sets the dense-promotion threshold; takes effect on later marks.
    pub fn set_dense_pct(&mut self, pct: u8) {
        self.dense_pct = pct.clamp(1, 100);
    }

    /// Regions that fell back to coarse for lack of table room, ever.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks
    }

    /// Fine regions stored.
    pub fn fine_regions(&self) -> usize {
        self.used
    }

    /// Grains stored in the sparse grain set.
    pub fn sparse_grains(&self) -> usize {
        self.sparse_used
    }

    /// Grain-set entries.
    pub fn sparse_capacity(&self) -> usize {
        self.sparse.len()
    }

    /// Table slots.
    pub fn capacity(&self) -> usize {
        self.table.len()
    }

    /// Bytes of memory the set holds.
    pub fn memory_bytes(&self) -> usize {
        bitmap_words(self.regions) * 8
            + self.table.len() * core::mem::size_of::<Slot>()
            + self.sparse.len() * 4
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        for w in self.coarse.iter() {
            w.store(0, Ordering::Relaxed);
        }
        self.table.fill(Slot::default());
        self.used = 0;
        self.sparse.fill(0);
        self.sparse_used = 0;
        self.marked = 0;
    }

    /// Blocks newly marked dirty since the set was cleared, counted as marks
    /// land (whole regions count in full when they go coarse).  An estimate
    /// for the controller's trend; [`DirtySet::dirty_blocks`] is exact.
    pub fn marked_blocks(&self) -> u64 {
        self.marked
    }

    /// Blocks in region `r` (the last one may be short).
    fn region_blocks(&self, r: u64) -> u64 {
        (self.blocks - r * REGION_BLOCKS).min(REGION_BLOCKS)
    }

    /// Whether region `r` is wholly dirty.
    pub fn is_coarse(&self, r: u64) -> bool {
        self.coarse[(r / 64) as usize].load(Ordering::Relaxed) & (1 << (r % 64)) != 0
    }

    /// Marks regions wholly dirty, lock-free: the fallback of the I/O path
    /// when its buffer is full.  Lossless, and it may over-report.
    pub fn mark_coarse(&self, start: u64, len: u64) {
        mark_coarse_words(&self.coarse, self.blocks, start, len);
    }

    /// Takes the regions set in `words` (a coarse bitmap the I/O path wrote
    /// to, see [`mark_coarse_words`]) as wholly dirty, and zeroes `words`.
    pub fn absorb_coarse(&mut self, words: &[AtomicU64]) -> u64 {
        let mut regions = 0;
        for (i, w) in words.iter().enumerate().take(self.coarse.len()) {
            let bits = w.swap(0, Ordering::Relaxed);
            if bits == 0 {
                continue;
            }
            regions += u64::from(bits.count_ones());
            self.coarse[i].fetch_or(bits, Ordering::Relaxed);
            // Fine entries of those regions are now redundant.
            let mut b = bits;
            while b != 0 {
                let r = (i * 64) as u32 + b.trailing_zeros();
                b &= b - 1;
                if let Some(slot) = self.find(r) {
                    self.remove_at(slot);
                }
                self.sparse_remove_region(u64::from(r));
            }
        }
        self.fallbacks += regions;
        regions
    }

    fn set_coarse(&mut self, r: u64) {
        let old = self.coarse[(r / 64) as usize].fetch_or(1 << (r % 64), Ordering::Relaxed);
        if old & (1 << (r % 64)) == 0 {
            self.marked += self.region_blocks(r);
        }
    }

    fn region_span(&self, start: u64, len: u64) -> Option<(u64, u64)> {
        if len == 0 || start >= self.blocks {
            return None;
        }
        let end = start.saturating_add(len).min(self.blocks);
        Some((start / REGION_BLOCKS, (end - 1) / REGION_BLOCKS))
    }

    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    fn home(&self, r: u32) -> usize {
        home(r, self.mask())
    }

    fn find(&self, r: u32) -> Option<usize> {
        let mut i = self.home(r);
        loop {
            match self.table[i].key {
                0 => return None,
                k if k == r + 1 => return Some(i),
                _ => i = (i + 1) & self.mask(),
            }
        }
    }

    /// The slot of region `r`, inserted empty if need be; `None` when the
    /// table is too full to take it (kept at most 7/8 full).
    fn find_or_insert(&mut self, r: u32) -> Option<usize> {
        if let Some(i) = self.find(r) {
            return Some(i);
        }
        if (self.used + 1) * 8 > self.table.len() * 7 {
            return None;
        }
        let mut i = self.home(r);
        while self.table[i].key != 0 {
            i = (i + 1) & self.mask();
        }
        self.table[i] = Slot {
            key: r + 1,
            ..Slot::default()
        };
        self.used += 1;
        Some(i)
    }

    /// Removes slot `i`, shifting later entries of its probe run back.
    fn remove_at(&mut self, i: usize) {
        remove_backshift(&mut self.table, i, Slot::default(), |s| {
            (s.key != 0).then(|| s.region())
        });
        self.used -= 1;
    }

    // --- The sparse grain set -------------------------------------------

    fn sparse_mask(&self) -> usize {
        self.sparse.len() - 1
    }

    /// Grains per region at the current shift.
    fn region_grains_shift(&self) -> u32 {
        REGION_SHIFT - u32::from(self.shift)
    }

    fn grain_region(&self, grain: u32) -> u32 {
        grain >> self.region_grains_shift()
    }

    fn sparse_home(&self, region: u32) -> usize {
        ((u64::from(region).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize)
            & self.sparse_mask()
    }

    fn sparse_find(&self, grain: u32) -> Option<usize> {
        let mut i = self.sparse_home(self.grain_region(grain));
        loop {
            match self.sparse[i] {
                0 => return None,
                k if k == grain + 1 => return Some(i),
                _ => i = (i + 1) & self.sparse_mask(),
            }
        }
    }

    /// The region-local grains region `r` holds in the grain set (all of
    /// them share the probe run from the region's home), how many, and the
    /// empty slot that ends the run.
    fn sparse_scan(&self, r: u32) -> ([u8; SPARSE_MAX], usize, usize) {
        let mut out = [0u8; SPARSE_MAX];
        let mut n = 0;
        let mut i = self.sparse_home(r);
        let local = (1u32 << self.region_grains_shift()) - 1;
        while self.sparse[i] != 0 {
            let g = self.sparse[i] - 1;
            if self.grain_region(g) == r && n < SPARSE_MAX {
                out[n] = (g & local) as u8;
                n += 1;
            }
            i = (i + 1) & self.sparse_mask();
        }
        (out, n, i)
    }

    /// Adds a grain; false when the set is 7/8 full.
    fn sparse_insert(&mut self, grain: u32) -> bool {
        if self.sparse_find(grain).is_some() {
            return true;
        }
        if (self.sparse_used + 1) * 8 > self.sparse.len() * 7 {
            return false;
        }
        let mut i = self.sparse_home(self.grain_region(grain));
        while self.sparse[i] != 0 {
            i = (i + 1) & self.sparse_mask();
        }
        self.sparse[i] = grain + 1;
        self.sparse_used += 1;
        self.marked += 1 << self.shift;
        true
    }

    fn sparse_remove_at(&mut self, i: usize) {
        let shift = self.region_grains_shift();
        remove_backshift(&mut self.sparse, i, 0, |&k| {
            (k != 0).then(|| (k - 1) >> shift)
        });
        self.sparse_used -= 1;
    }

    /// Removes every grain of region `r` from the grain set, in one pass
    /// over its probe run: a removal shifts later entries back into the
    /// hole, so the same slot is looked at again.
    fn sparse_remove_region(&mut self, r: u64) {
        let r = r as u32;
        let mut i = self.sparse_home(r);
        while self.sparse[i] != 0 {
            if self.grain_region(self.sparse[i] - 1) == r {
                self.sparse_remove_at(i);
            } else {
                i = (i + 1) & self.sparse_mask();
            }
        }
    }

    // --- Marking ----------------------------------------------------------

    /// Sets region-local grains `g0..=g1` (plus `extra`) in region `r`'s
    /// table entry, creating it; falls back to coarse without room.  Then
    /// promotes the region if dense.
    fn mark_fine(&mut self, r: u64, g0: u32, g1: u32, extra: &[u8], out: &mut MarkOutcome) {
        let Some(i) = self.find_or_insert(r as u32) else {
            self.set_coarse(r);
            self.sparse_remove_region(r);
            self.fallbacks += 1;
            out.fallbacks += 1;
            return;
        };
        self.mark_slot(i, r, g0, g1, extra, out);
    }

    /// Sets grains `g0..=g1` (plus `extra`) in table entry `i`, region `r`'s;
    /// promotes the region if dense.
    fn mark_slot(
        &mut self,
        i: usize,
        r: u64,
        g0: u32,
        g1: u32,
        extra: &[u8],
        out: &mut MarkOutcome,
    ) {
        let slot = &mut self.table[i];
        let mut new = 0;
        for g in (g0..=g1).chain(extra.iter().map(|&g| u32::from(g))) {
            let (w, b) = ((g / 64) as usize, g % 64);
            if slot.bits[w] & (1 << b) == 0 {
                slot.bits[w] |= 1 << b;
                slot.count += 1;
                new += 1;
            }
        }
        if new == 0 {
            return;
        }
        self.marked += new << self.shift;
        if u32::from(self.table[i].count) * 100 >= self.grains_in(r) * u32::from(self.dense_pct) {
            self.remove_at(i);
            self.set_coarse(r);
            out.promoted += 1;
        }
    }

    /// Marks blocks `start .. start + len` dirty (clamped to the device).
    pub fn mark(&mut self, start: u64, len: u64) -> MarkOutcome {
        let mut out = MarkOutcome::default();
        let Some((first, last)) = self.region_span(start, len) else {
            return out;
        };
        let end = start.saturating_add(len).min(self.blocks);
        for r in first..=last {
            if self.is_coarse(r) {
                continue;
            }
            let base = r * REGION_BLOCKS;
            let lo = start.max(base) - base;
            let hi = end.min(base + REGION_BLOCKS) - base;
            if lo == 0 && hi == self.region_blocks(r) {
                // The whole region: coarse, and any finer entries go.
                if let Some(i) = self.find(r as u32) {
                    self.remove_at(i);
                }
                self.sparse_remove_region(r);
                self.set_coarse(r);
                continue;
            }
            let shift = u32::from(self.shift);
            let (g0, g1) = ((lo >> shift) as u32, ((hi - 1) >> shift) as u32);
            if let Some(i) = self.find(r as u32) {
                self.mark_slot(i, r, g0, g1, &[], &mut out);
                continue;
            }
            // Sparse, unless the region would hold too many grains.  One
            // walk of the region's probe run finds its grains and where a
            // new one goes (the run's end, in linear probing).
            let (have, n, free) = self.sparse_scan(r as u32);
            let new = (g0..=g1)
                .filter(|g| !have[..n].contains(&(*g as u8)))
                .count();
            if new == 0 {
                continue;
            }
            let region_grain0 = (r as u32) << self.region_grains_shift();
            if new == 1 && n < SPARSE_MAX && (self.sparse_used + 1) * 8 <= self.sparse.len() * 7 {
                // The common case, one new grain: straight into the free slot.
                let g = (g0..=g1)
                    .find(|g| !have[..n].contains(&(*g as u8)))
                    .unwrap_or(g0);
                self.sparse[free] = region_grain0 + g + 1;
                self.sparse_used += 1;
                self.marked += 1 << self.shift;
                continue;
            }
            if n + new <= SPARSE_MAX && (g0..=g1).all(|g| self.sparse_insert(region_grain0 + g)) {
                continue;
            }
            // Past the sparse limit, or the grain set is full: a table entry
            // takes the region's grains (those inserted just now included).
            self.sparse_remove_region(r);
            self.mark_fine(r, g0, g1, &have[..n], &mut out);
        }
        out
    }

    /// Grains in region `r` at the current shift (the last region may be short).
    fn grains_in(&self, r: u64) -> u32 {
        (self.region_blocks(r).div_ceil(1 << self.shift)) as u32
    }

    /// Whether block `b` is reported dirty.
    pub fn is_dirty(&self, b: u64) -> bool {
        if b >= self.blocks {
            return false;
        }
        let r = b / REGION_BLOCKS;
        if self.is_coarse(r) {
            return true;
        }
        let g = ((b % REGION_BLOCKS) >> self.shift) as u32;
        if let Some(i) = self.find(r as u32) {
            return self.table[i].bits[(g / 64) as usize] & (1 << (g % 64)) != 0;
        }
        self.sparse_find((b >> self.shift) as u32).is_some()
    }

    /// Blocks reported dirty.
    pub fn dirty_blocks(&self) -> u64 {
        let mut n = 0;
        self.extents(0, |_, len| {
            n += len;
            true
        });
        n
    }

    /// The region-local dirty grains of a non-coarse region, as a bitmap.
    fn region_bits(&self, r: u64) -> Option<[u64; 4]> {
        if let Some(i) = self.find(r as u32) {
            return Some(self.table[i].bits);
        }
        let (have, n, _) = self.sparse_scan(r as u32);
        if n == 0 {
            return None;
        }
        let mut bits = [0u64; 4];
        for &g in &have[..n] {
            bits[usize::from(g / 64)] |= 1 << (g % 64);
        }
        Some(bits)
    }

    /// Calls `f(start_block, nblocks)` for each maximal dirty extent at or
    /// after block `from`, in order, until `f` returns false: it could not
    /// take that extent.  Returns the block to continue from: the refused
    /// extent's start, or the device size when done.
    pub fn extents(&self, from: u64, mut f: impl FnMut(u64, u64) -> bool) -> u64 {
        let mut run: Option<(u64, u64)> = None;
        let mut r = from / REGION_BLOCKS;
        // Emits the pending run; returns its start if the caller refuses it.
        macro_rules! flush {
            () => {
                if let Some((s, l)) = run.take() {
                    if !f(s, l) {
                        return s;
                    }
                }
            };
        }
        // Adds blocks [s, e) to the run, emitting the run before if apart.
        macro_rules! add {
            ($s:expr, $e:expr) => {
                let (s, e) = ($s, $e);
                match &mut run {
                    Some((rs, rl)) if *rs + *rl == s => *rl += e - s,
                    _ => {
                        flush!();
                        run = Some((s, e - s));
                    }
                }
            };
        }
        while r < self.regions {
            let base = r * REGION_BLOCKS;
            let rb = self.region_blocks(r);
            if self.is_coarse(r) {
                add!(base.max(from), base + rb);
            } else if let Some(bits) = self.region_bits(r) {
                let gb = 1u64 << self.shift;
                for g in 0..self.grains_in(r) {
                    if bits[(g / 64) as usize] & (1 << (g % 64)) == 0 {
                        continue;
                    }
                    let gs = base + u64::from(g) * gb;
                    let ge = (gs + gb).min(base + rb);
                    if ge <= from {
                        continue;
                    }
                    add!(gs.max(from), ge);
                }
            }
            r += 1;
        }
        flush!();
        self.blocks
    }

    /// Changes the grain shift, losslessly: coarsening ORs grains together,
    /// refining sets every finer grain of a dirty coarser grain.  Regions that
    /// become dense are promoted to coarse; fine regions with few grains go
    /// back to the grain set.
    pub fn set_shift(&mut self, shift: u8) {
        let shift = shift.min(MAX_SHIFT);
        if shift == self.shift {
            return;
        }
        // Moving grains between tiers is not new dirt.
        let marked = self.marked;
        self.convert_shift(shift);
        self.marked = marked;
    }

    fn convert_shift(&mut self, shift: u8) {
        // Sparse grains move to table entries first (or to coarse, without
        // room), so one conversion handles every region.
        let mut i = 0;
        while i < self.sparse.len() {
            let k = self.sparse[i];
            if k == 0 {
                i += 1;
                continue;
            }
            let r = u64::from(self.grain_region(k - 1));
            let (have, n, _) = self.sparse_scan(r as u32);
            self.sparse_remove_region(r);
            let mut out = MarkOutcome::default();
            let dense = self.dense_pct;
            // No promotion while moving: counts are checked after conversion.
            self.dense_pct = 100;
            if n > 0 {
                let g = u32::from(have[0]);
                self.mark_fine(r, g, g, &have[1..n], &mut out);
            }
            self.dense_pct = dense;
            // Removal may have moved other entries into slot i: look again.
        }
        let old = u32::from(self.shift);
        let new = u32::from(shift);
        self.shift = shift;
        // Convert every entry in place first; promotions move entries (see
        // `remove_at`), so they come in a second pass that only re-checks.
        let old_grains = 1u32 << (REGION_SHIFT - old);
        for slot in self.table.iter_mut().filter(|s| s.key != 0) {
            let mut bits = [0u64; 4];
            let mut count = 0u16;
            for g in 0..old_grains {
                if slot.bits[(g / 64) as usize] & (1 << (g % 64)) == 0 {
                    continue;
                }
                // Old grain g covers blocks [g << old, (g + 1) << old).
                let first = (g << old) >> new;
                let last = (((g + 1) << old) - 1) >> new;
                for n in first..=last {
                    let (w, b) = ((n / 64) as usize, n % 64);
                    if bits[w] & (1 << b) == 0 {
                        bits[w] |= 1 << b;
                        count += 1;
                    }
                }
            }
            slot.bits = bits;
            slot.count = count;
        }
        let mut i = 0;
        while i < self.table.len() {
            let slot = self.table[i];
            if slot.key != 0 {
                let r = u64::from(slot.region());
                if u32::from(slot.count) * 100 >= self.grains_in(r) * u32::from(self.dense_pct) {
                    self.remove_at(i);
                    self.set_coarse(r);
                    // Another entry may have moved into slot i: look again.
                    continue;
                }
                if usize::from(slot.count) <= SPARSE_MAX && self.demote(i, r) {
                    continue;
                }
            }
            i += 1;
        }
    }

    /// Moves table entry `i` (region `r`, few grains) into the grain set, if
    /// it has room; true if moved.
    fn demote(&mut self, i: usize, r: u64) -> bool {
        let slot = self.table[i];
        if (self.sparse_used + usize::from(slot.count)) * 8 > self.sparse.len() * 7 {
            return false;
        }
        let grain0 = (r as u32) << self.region_grains_shift();
        self.remove_at(i);
        for g in 0..(1u32 << self.region_grains_shift()) {
            if slot.bits[(g / 64) as usize] & (1 << (g % 64)) != 0 {
                // Room was checked above.
                let _ = self.sparse_insert(grain0 + g);
            }
        }
        true
    }

    /// Whether the table should grow before more regions arrive (over half
    /// full).
    pub fn needs_grow(&self) -> bool {
        self.used * 2 > self.table.len()
    }

    /// Whether the grain set should grow (over 3/4 full: entries are small,
    /// so the set runs fuller than the region table).
    pub fn needs_grow_sparse(&self) -> bool {
        self.sparse_used * 4 > self.sparse.len() * 3
    }

    /// The grain-set size to grow to.
    pub fn grown_sparse_capacity(&self) -> usize {
        self.sparse.len() * 2
    }

    /// Moves the grain set into `sparse` (larger, power-of-two sized) and
    /// returns the old storage; on a bad size `sparse` comes back.
    pub fn grow_sparse_into(&mut self, mut sparse: G) -> Result<G, G> {
        if sparse.len() < self.sparse_used * 8 / 7 + 1 || !sparse.len().is_power_of_two() {
            return Err(sparse);
        }
        sparse.fill(0);
        let old = core::mem::replace(&mut self.sparse, sparse);
        self.sparse_used = 0;
        for &k in old.iter().filter(|&&k| k != 0) {
            let mut i = self.sparse_home(self.grain_region(k - 1));
            while self.sparse[i] != 0 {
                i = (i + 1) & self.sparse_mask();
            }
            self.sparse[i] = k;
            self.sparse_used += 1;
        }
        Ok(old)
    }

    /// The table size to grow to.
    pub fn grown_capacity(&self) -> usize {
        self.table.len() * 2
    }

    /// The region-table size that lets [`DirtySet::set_shift`] move every
    /// region through the table without falling back to coarse (it may pass
    /// sparse regions through it), or `None` if the table is big enough.
    pub fn capacity_for_shift(&self) -> Option<usize> {
        let need = ((self.used + self.sparse_used) * 8 / 7 + 1).next_power_of_two();
        (need > self.table.len()).then_some(need)
    }

    /// A smaller region-table size worth moving to once the table is less
    /// than 1/8 full (after a granularity change moved regions back to the
    /// grain set), never below `min`.
    pub fn shrunk_capacity(&self, min: usize) -> Option<usize> {
        let want = (self.used * 4).next_power_of_two().max(min);
        (want < self.table.len() && self.used * 8 < self.table.len()).then_some(want)
    }

    /// Moves the entries into `table` (a power-of-two sized storage with room
    /// for them: larger to grow, smaller to shrink) and returns the old
    /// storage.  On a bad size nothing changes and `table` comes back.
    pub fn grow_into(&mut self, mut table: S) -> Result<S, S> {
        if table.len() < self.used * 8 / 7 + 1 || !table.len().is_power_of_two() {
            return Err(table);
        }
        table.fill(Slot::default());
        let old = core::mem::replace(&mut self.table, table);
        self.used = 0;
        for slot in old.iter().filter(|s| s.key != 0) {
            let mut i = self.home(slot.region());
            while self.table[i].key != 0 {
                i = (i + 1) & self.mask();
            }
            self.table[i] = *slot;
            self.used += 1;
        }
        Ok(old)
    }

    /// Makes sure regions of blocks `start .. start + len` have fine entries
    /// (predictive pre-logging), so later writes there need no new room.
    /// Returns how many regions could not get one.
    pub fn prelog(&mut self, start: u64, len: u64) -> u32 {
        let Some((first, last)) = self.region_span(start, len) else {
            return 0;
        };
        let mut missed = 0;
        for r in first..=last {
            if self.is_coarse(r) || self.find(r as u32).is_some() {
                continue;
            }
            if self.find_or_insert(r as u32).is_none() {
                missed += 1;
                continue;
            }
            // A region lives in one place: its sparse grains join the entry.
            let (have, n, _) = self.sparse_scan(r as u32);
            if n > 0 {
                self.sparse_remove_region(r);
                let mut out = MarkOutcome::default();
                let g = u32::from(have[0]);
                self.mark_fine(r, g, g, &have[1..n], &mut out);
            }
        }
        missed
    }

    /// The coarse bitmap's words.
    pub(crate) fn coarse_words(&self) -> &[AtomicU64] {
        &self.coarse
    }

    /// The coarse bits of word `i` that fine and sparse regions would add if
    /// made coarse.
    pub(crate) fn fine_region_bits(&self, i: usize) -> u64 {
        let mut v = 0;
        for r in (i as u64 * 64)..((i as u64 + 1) * 64).min(self.regions) {
            if self.region_bits(r).is_some() {
                v |= 1 << (r % 64);
            }
        }
        v
    }

    /// The grains in the sparse grain set (global grain numbers).
    pub(crate) fn sparse_entries(&self) -> impl Iterator<Item = u32> + '_ {
        self.sparse.iter().filter(|&&k| k != 0).map(|&k| k - 1)
    }

    /// The fine regions: region number, set grains, grain bits.
    pub(crate) fn fine_entries(&self) -> impl Iterator<Item = (u32, u16, [u64; 4])> + '_ {
        self.table
            .iter()
            .filter(|s| s.key != 0)
            .map(|s| (s.region(), s.count, s.bits))
    }

    /// ORs `bits` into coarse word `i`.
    pub(crate) fn or_coarse_word(&mut self, i: usize, bits: u64) {
        if let Some(w) = self.coarse.get(i) {
            w.fetch_or(bits, Ordering::Relaxed);
        }
    }

    /// Loads a fine region's grain bits (at the current shift); a region
    /// without room becomes coarse.
    pub(crate) fn load_fine(&mut self, region: u32, bits: [u64; 4]) -> Result<(), ()> {
        if u64::from(region) >= self.regions {
            return Err(());
        }
        let r = u64::from(region);
        if self.is_coarse(r) {
            return Ok(());
        }
        let grains = self.grains_in(r);
        let count: u32 = bits.iter().map(|w| w.count_ones()).sum();
        match self.find_or_insert(region) {
            Some(i) if count <= grains => {
                self.table[i].bits = bits;
                self.table[i].count = count as u16;
            }
            _ => {
                self.set_coarse(r);
                self.fallbacks += 1;
            }
        }
        Ok(())
    }
}
