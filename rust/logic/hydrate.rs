// SPDX-License-Identifier: GPL-2.0

//! The hydration state of a shadow device: which regions of the source are
//! on the destination, which are being copied, and what to copy next.
//!
//! A region is *hydrated* (its data is on the destination: reads and writes
//! go there), *busy* (a copy, or a user write covering the whole region, is
//! in flight to the destination) or neither (reads go to the source; a
//! write waits until the region is hydrated).  The hydrated bitmap only
//! grows; each metadata block of it that changed is marked for the next
//! commit, and a generation count tells whether everything marked has been
//! committed (flushes and FUA writes wait for that).
//!
//! Copy order ([`Hydration::next_batch`]): *urgent* regions first (a read
//! or a write found them missing), one at a time; then the *predicted*
//! ranges, highest probability first; then the rest in ascending order.
//! Predicted and ascending batches extend over contiguous missing regions.
//!
//! Plain data, no locking: the module holds it under a spinlock, and the
//! host tests drive it directly.

use core::ops::DerefMut;

/// Urgent regions the module remembers (more are copied in ascending
/// order).
pub const URGENT_MAX: usize = 512;
/// Bytes of one metadata block of the bitmap.
pub const META_BLOCK_BYTES: usize = 4096;
/// Regions per metadata block.
pub const META_BLOCK_REGIONS: u64 = META_BLOCK_BYTES as u64 * 8;
/// Words per metadata block.
pub const META_BLOCK_WORDS: usize = META_BLOCK_BYTES / 8;
/// Probabilities are fixed point: this is 1.0.
pub const PROB_ONE: u32 = 1 << 16;

/// Why a batch is copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// A read or a write found it missing.
    Urgent,
    /// The helper predicted it will be read.
    Predicted,
    /// Next in ascending order.
    Ascending,
}

/// Regions `start .. start + len` to copy, all marked busy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The first region.
    pub start: u64,
    /// Regions in the batch (at least one).
    pub len: u64,
    /// Why it was chosen.
    pub why: Why,
}

/// Where a write to a region goes ([`Hydration::claim_write`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The region is hydrated: to the destination.
    Dest,
    /// The write covers the whole missing region, which is now busy: to the
    /// destination, and [`Hydration::overwrite_done`] when it completes.
    Overwrite,
    /// The region is missing (now urgent) or busy: the write waits.
    Wait,
}

/// A predicted range of regions, with the probability that it is read soon.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hint {
    /// The first region.
    pub start: u64,
    /// Regions in the range.
    pub len: u64,
    /// Probability, [`PROB_ONE`] being 1.
    pub prob: u32,
}

/// Regions hydrated, by how.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Copied because a read or write needed them.
    pub urgent: u64,
    /// Copied because they were predicted.
    pub predicted: u64,
    /// Copied in ascending order.
    pub ascending: u64,
    /// Written whole by the user (no copy).
    pub overwritten: u64,
    /// Discarded whole, or seeded (already on the destination): no copy.
    pub marked: u64,
}

/// The construction's sizes do not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeError;

/// Bit `r` of a bitmap of words.
pub fn bit(words: &[u64], r: u64) -> bool {
    words[(r / 64) as usize] & (1 << (r % 64)) != 0
}

/// Words of a bitmap of `bits` bits, whole metadata blocks.
pub const fn bitmap_words(bits: u64) -> usize {
    (bits.div_ceil(META_BLOCK_REGIONS) as usize) * META_BLOCK_WORDS
}

/// See the [module docs](self).  `W` holds bitmaps of words (the hydrated
/// and busy bitmaps, [`bitmap_words`] long; the dirty-block bitmap, one bit
/// per metadata block); `H` the predicted ranges.
pub struct Hydration<W, H> {
    regions: u64,
    hydrated: W,
    busy: W,
    dirty_blocks: W,
    hydrated_count: u64,
    busy_count: u64,
    /// Bumped whenever a hydrated bit is set; `committed` is the value the
    /// last successful commit saw.
    generation: u64,
    committed: u64,
    /// A ring of urgent regions (its length is the most remembered).
    urgent: W,
    urgent_head: usize,
    urgent_len: usize,
    urgent_dropped: u64,
    hints: H,
    hints_len: usize,
    /// The hint being copied, and the next region of it to look at.
    hint_pos: usize,
    hint_next: u64,
    cursor: u64,
    counts: Counts,
}

impl<W, H> Hydration<W, H>
where
    W: DerefMut<Target = [u64]>,
    H: DerefMut<Target = [Hint]>,
{
    /// An empty state for `regions` regions (nothing hydrated) over zeroed
    /// storage: `hydrated` and `busy` of [`bitmap_words`]`(regions)` words,
    /// `dirty_blocks` of one bit per metadata block; `urgent` and `hints`
    /// of any length (the most urgent regions and ranges kept; `urgent` at
    /// least one).
    pub fn new(
        regions: u64,
        hydrated: W,
        busy: W,
        dirty_blocks: W,
        urgent: W,
        hints: H,
    ) -> Result<Self, SizeError> {
        let words = bitmap_words(regions);
        let blocks = regions.div_ceil(META_BLOCK_REGIONS) as usize;
        if regions == 0
            || hydrated.len() < words
            || busy.len() < words
            || dirty_blocks.len() < blocks.div_ceil(64)
            || urgent.is_empty()
        {
            return Err(SizeError);
        }
        Ok(Self {
            regions,
            hydrated,
            busy,
            dirty_blocks,
            hydrated_count: 0,
            busy_count: 0,
            generation: 0,
            committed: 0,
            urgent,
            urgent_head: 0,
            urgent_len: 0,
            urgent_dropped: 0,
            hints,
            hints_len: 0,
            hint_pos: 0,
            hint_next: 0,
            cursor: 0,
            counts: Counts::default(),
        })
    }

    /// Regions of the device.
    pub fn regions(&self) -> u64 {
        self.regions
    }

    /// Regions hydrated.
    pub fn hydrated_count(&self) -> u64 {
        self.hydrated_count
    }

    /// Regions being copied or overwritten.
    pub fn busy_count(&self) -> u64 {
        self.busy_count
    }

    /// Every region is hydrated.
    pub fn is_complete(&self) -> bool {
        self.hydrated_count == self.regions
    }

    /// Regions hydrated, by how.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Urgent regions not remembered (the queue was full).
    pub fn urgent_dropped(&self) -> u64 {
        self.urgent_dropped
    }

    /// Urgent regions waiting.
    pub fn urgent_len(&self) -> usize {
        self.urgent_len
    }

    /// Whether region `r` is hydrated.
    pub fn is_hydrated(&self, r: u64) -> bool {
        r < self.regions && bit(&self.hydrated, r)
    }

    /// Whether region `r` is being copied or overwritten.
    pub fn is_busy(&self, r: u64) -> bool {
        r < self.regions && bit(&self.busy, r)
    }

    fn is_free(&self, r: u64) -> bool {
        !bit(&self.hydrated, r) && !bit(&self.busy, r)
    }

    fn set_busy(&mut self, r: u64) {
        self.busy[(r / 64) as usize] |= 1 << (r % 64);
        self.busy_count += 1;
    }

    fn clear_busy(&mut self, r: u64) {
        if bit(&self.busy, r) {
            self.busy[(r / 64) as usize] &= !(1 << (r % 64));
            self.busy_count -= 1;
        }
    }

    /// Marks `r` hydrated; false if it already was.
    fn set_hydrated(&mut self, r: u64) -> bool {
        if bit(&self.hydrated, r) {
            return false;
        }
        self.hydrated[(r / 64) as usize] |= 1 << (r % 64);
        self.hydrated_count += 1;
        let block = r / META_BLOCK_REGIONS;
        self.dirty_blocks[(block / 64) as usize] |= 1 << (block % 64);
        self.generation += 1;
        true
    }

    /// Remembers `r` as urgent (once: a region already among the last
    /// few is not added again).
    fn push_urgent(&mut self, r: u64) {
        let recent = self.urgent_len.min(8);
        for k in 0..recent {
            let i = (self.urgent_head + self.urgent_len - 1 - k) % self.urgent.len();
            if self.urgent[i] == r {
                return;
            }
        }
        if self.urgent_len == self.urgent.len() {
            self.urgent_dropped += 1;
            return;
        }
        let at = (self.urgent_head + self.urgent_len) % self.urgent.len();
        self.urgent[at] = r;
        self.urgent_len += 1;
    }

    fn pop_urgent(&mut self) -> Option<u64> {
        if self.urgent_len == 0 {
            return None;
        }
        let r = self.urgent[self.urgent_head];
        self.urgent_head = (self.urgent_head + 1) % self.urgent.len();
        self.urgent_len -= 1;
        Some(r)
    }

    /// A read of region `r`: true if it goes to the destination; otherwise
    /// it goes to the source, and the region becomes urgent.
    pub fn claim_read(&mut self, r: u64) -> bool {
        if r >= self.regions || bit(&self.hydrated, r) {
            return true;
        }
        if !bit(&self.busy, r) {
            self.push_urgent(r);
        }
        false
    }

    /// A write to region `r`; `whole` if it covers the whole region (and
    /// may land without a copy: a write whose completion must be durable
    /// at once, FUA, should not say so).
    pub fn claim_write(&mut self, r: u64, whole: bool) -> Claim {
        if r >= self.regions || bit(&self.hydrated, r) {
            return Claim::Dest;
        }
        if bit(&self.busy, r) {
            return Claim::Wait;
        }
        if whole {
            self.set_busy(r);
            return Claim::Overwrite;
        }
        self.push_urgent(r);
        Claim::Wait
    }

    /// A write [`Claim::Overwrite`] allowed has completed: with `ok`, the
    /// region is hydrated; otherwise it is missing again (its data on the
    /// destination is partial: it will be copied).
    pub fn overwrite_done(&mut self, r: u64, ok: bool) {
        if r >= self.regions {
            return;
        }
        self.clear_busy(r);
        if ok && self.set_hydrated(r) {
            self.counts.overwritten += 1;
        }
    }

    /// Marks missing regions `start .. start + len` hydrated without a
    /// copy: discarded whole, or already on the destination (a pre-copy
    /// sent them).  Busy regions are left to their copy.  Returns how many
    /// were marked.
    pub fn mark(&mut self, start: u64, len: u64) -> u64 {
        let end = start.saturating_add(len).min(self.regions);
        let mut n = 0;
        for r in start.min(end)..end {
            if !bit(&self.busy, r) && self.set_hydrated(r) {
                n += 1;
            }
        }
        self.counts.marked += n;
        n
    }

    /// Replaces the predicted ranges with `hints` (kept as far as there is
    /// room), copied highest probability first.
    pub fn set_hints(&mut self, hints: impl IntoIterator<Item = Hint>) {
        let cap = self.hints.len();
        let mut n = 0;
        for h in hints {
            if h.len == 0 || h.start >= self.regions {
                continue;
            }
            let h = Hint {
                len: h.len.min(self.regions - h.start),
                ..h
            };
            // Insertion into the ranked list; past capacity the lowest goes.
            let mut i = n.min(cap);
            if i == cap {
                if cap == 0 || self.hints[cap - 1].prob >= h.prob {
                    continue;
                }
                i = cap - 1;
            } else {
                n += 1;
            }
            while i > 0 && self.hints[i - 1].prob < h.prob {
                self.hints[i] = self.hints[i - 1];
                i -= 1;
            }
            self.hints[i] = h;
        }
        self.hints_len = n;
        self.hint_pos = 0;
        self.hint_next = self.hints.first().map_or(0, |h| h.start);
    }

    /// Predicted ranges held.
    pub fn hints_len(&self) -> usize {
        self.hints_len
    }

    /// Extends a batch from `start` over free regions, up to `max` regions
    /// and before `end`, marking them busy.
    fn take(&mut self, start: u64, end: u64, max: u64, why: Why) -> Batch {
        let mut len = 0;
        while len < max.max(1) && start + len < end && self.is_free(start + len) {
            self.set_busy(start + len);
            len += 1;
        }
        Batch { start, len, why }
    }

    /// The first free region at or after `from` (below `end`), a word at a
    /// time.
    fn next_free(&self, from: u64, end: u64) -> Option<u64> {
        let mut r = from;
        while r < end {
            let w = (r / 64) as usize;
            let taken = self.hydrated[w] | self.busy[w];
            let free = !taken & (u64::MAX << (r % 64));
            if free != 0 {
                let f = (w as u64) * 64 + u64::from(free.trailing_zeros());
                return (f < end).then_some(f);
            }
            r = (w as u64 + 1) * 64;
        }
        None
    }

    /// The next regions to copy, marked busy: urgent ones first (one at a
    /// time), then, with `background`, predicted ranges, then ascending,
    /// batches of at most `max` contiguous regions.  `None` when no region
    /// is free (or, without `background`, none is urgent).
    pub fn next_batch(&mut self, max: u64, background: bool) -> Option<Batch> {
        while let Some(r) = self.pop_urgent() {
            if r < self.regions && self.is_free(r) {
                return Some(self.take(r, r + 1, 1, Why::Urgent));
            }
        }
        if !background {
            return None;
        }
        while self.hint_pos < self.hints_len {
            let h = self.hints[self.hint_pos];
            let end = h.start + h.len;
            if let Some(r) = self.next_free(self.hint_next.max(h.start), end) {
                let b = self.take(r, end, max, Why::Predicted);
                self.hint_next = b.start + b.len;
                return Some(b);
            }
            self.hint_pos += 1;
            self.hint_next = self.hints.get(self.hint_pos).map_or(0, |h| h.start);
        }
        let r = self
            .next_free(self.cursor, self.regions)
            .or_else(|| self.next_free(0, self.cursor.min(self.regions)))?;
        let b = self.take(r, self.regions, max, Why::Ascending);
        self.cursor = b.start + b.len;
        Some(b)
    }

    /// A batch's copy has ended: with `ok` its regions are hydrated (their
    /// data must be on the destination, though not yet flushed: a commit
    /// flushes it before it writes the bitmap); otherwise they are missing
    /// again: urgent ones stay urgent, predicted ones are predicted again
    /// once, after the other hints ([`Hydration::requeue`]).
    pub fn copy_done(&mut self, b: Batch, ok: bool) {
        if !ok {
            self.requeue(b);
        }
        let end = b.start.saturating_add(b.len).min(self.regions);
        for r in b.start..end {
            self.clear_busy(r);
            if !ok {
                if b.why == Why::Urgent {
                    self.push_urgent(r);
                }
                continue;
            }
            if self.set_hydrated(r) {
                match b.why {
                    Why::Urgent => self.counts.urgent += 1,
                    Why::Predicted => self.counts.predicted += 1,
                    Why::Ascending => self.counts.ascending += 1,
                }
            }
        }
    }

    /// A failed predicted batch is predicted again, after every other
    /// hint (as the least likely), once: a failed retry is left to the
    /// ascending order, as a failed ascending batch is (the cursor has
    /// moved on; it comes back round), so a source region that keeps
    /// failing never holds up the others.
    fn requeue(&mut self, b: Batch) {
        if b.why != Why::Predicted || self.hints_len == self.hints.len() {
            return;
        }
        let seen = (self.hint_pos + 1).min(self.hints_len);
        let retry = |h: &Hint| h.prob == 0 && b.start >= h.start && b.start - h.start < h.len;
        if self.hints[..seen].iter().any(retry) {
            return;
        }
        self.hints[self.hints_len] = Hint {
            start: b.start,
            len: b.len,
            prob: 0,
        };
        self.hints_len += 1;
    }

    /// Whether every hydrated bit set so far has been committed.
    pub fn is_clean(&self) -> bool {
        self.committed == self.generation
    }

    /// Metadata blocks of the bitmap.
    pub fn meta_blocks(&self) -> usize {
        self.regions.div_ceil(META_BLOCK_REGIONS) as usize
    }

    /// The words of metadata block `i` of the hydrated bitmap.
    pub fn block_words(&self, i: usize) -> &[u64] {
        &self.hydrated[i * META_BLOCK_WORDS..(i + 1) * META_BLOCK_WORDS]
    }

    /// Starts a commit: hands `f` each metadata block changed since the
    /// last one (its index and words) and forgets that they changed;
    /// returns the generation the commit covers ([`Hydration::committed`]
    /// once it is durable, or [`Hydration::commit_failed`]).
    pub fn take_dirty(&mut self, mut f: impl FnMut(usize, &[u64])) -> u64 {
        for i in 0..self.meta_blocks() {
            let (w, b) = (i / 64, i % 64);
            if self.dirty_blocks[w] & (1 << b) != 0 {
                self.dirty_blocks[w] &= !(1 << b);
                f(i, self.block_words(i));
            }
        }
        self.generation
    }

    /// A commit of generation `gen` is durable.
    pub fn committed(&mut self, gen: u64) {
        self.committed = self.committed.max(gen);
    }

    /// A commit failed: block `i` is to be written again.
    pub fn commit_failed(&mut self, i: usize) {
        if i < self.meta_blocks() {
            self.dirty_blocks[i / 64] |= 1 << (i % 64);
        }
    }

    /// Loads metadata block `i` of the hydrated bitmap (as it was
    /// committed): its regions are hydrated, and nothing needs committing.
    /// Bits past the last region are ignored.
    pub fn load_block(&mut self, i: usize, words: &[u64]) {
        if i >= self.meta_blocks() {
            return;
        }
        for (k, &w) in words.iter().enumerate().take(META_BLOCK_WORDS) {
            let base = (i * META_BLOCK_REGIONS as usize + k * 64) as u64;
            if base >= self.regions {
                break;
            }
            let valid = if self.regions - base >= 64 {
                u64::MAX
            } else {
                (1u64 << (self.regions - base)) - 1
            };
            let idx = i * META_BLOCK_WORDS + k;
            let new = w & valid & !self.hydrated[idx];
            self.hydrated[idx] |= new;
            self.hydrated_count += u64::from(new.count_ones());
        }
    }
}
