//! Reads of what was written: after a write, its blocks, where written
//! blocks are read back.
//!
//! The cache drops the blocks a write touches (it is coherent by
//! invalidation), so a block read back after a write misses unless it is
//! fetched again. On the shared Tencent CBS traces about half of
//! readahead's misses, and of `auto`'s, are such reads, most of them
//! hundreds to thousands of accesses after the write (median 1,043-3,119):
//! far beyond the horizon the other predictors are scored over, within the
//! cache's lifetime.
//!
//! [`ReadbackPredictor`] names, after each write, the blocks it wrote, as
//! reads. Its probability is the measured read-back rate of the written
//! blocks of the write's region ([`REGION_BLOCKS`]): a written block counts
//! as read back if a read touches it before [`FOLLOWED`] more blocks were
//! accessed (about the cache's lifetime), and as not if it is written
//! again first, read later or forgotten; counted when its outcome is known,
//! both counts decaying per region ([`Yield`]), smoothed towards the whole
//! device's rate (a region's until it is measured).  These
//! probabilities are its own calibration, over that long horizon: an
//! ensemble must not calibrate them over its short one
//! ([`Predictor::long_horizon`]).

use std::num::NonZeroUsize;

use lru::LruCache;

use crate::track::{Yield, CACHED_BLOCKS};
use crate::{access_blocks, Access, Op, Prediction, Predictor};

/// Blocks per region whose read-back rate is measured (1 MiB).
pub const REGION_BLOCKS: u64 = 256;

/// Blocks accessed after a write within which a read of its blocks
/// counts (the cache's blocks).
pub const FOLLOWED: u64 = CACHED_BLOCKS as u64;

/// Regions remembered.
pub const REGIONS: usize = 16_384;

/// Most blocks of one write named (longer writes: their first blocks).
pub const MAX_BLOCKS: u64 = 256;

/// Most blocks of one read looked up (16 MiB).
pub const MAX_READ_BLOCKS: u64 = 4096;

/// See the [module docs](self).
pub struct ReadbackPredictor {
    /// Written block -> its region and `clock` when written.
    written: LruCache<u64, (u64, u64)>,
    /// Blocks accessed so far.
    clock: u64,
    regions: LruCache<u64, Yield>,
    /// Writes since the last `predict`: (first block, blocks).
    fresh: Vec<(u64, u64)>,
    /// Over every region: for `precision`.
    all: Yield,
    /// Recent reads (1) of blocks named before, among the reads (for
    /// `confidence`): a decaying mean.
    covered: f64,
}

impl Default for ReadbackPredictor {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadbackPredictor {
    /// An untrained model.
    pub fn new() -> Self {
        ReadbackPredictor {
            written: LruCache::new(NonZeroUsize::new(CACHED_BLOCKS).expect("non-zero")),
            clock: 0,
            regions: LruCache::new(NonZeroUsize::new(REGIONS).expect("non-zero")),
            fresh: Vec::new(),
            all: Yield::default(),
            covered: 0.0,
        }
    }

    /// The measured read-back rate of `block`'s region, smoothed towards
    /// the whole device's (the rate of a region not measured yet).
    pub fn rate(&self, block: u64) -> f64 {
        let device = self.all.rate();
        self.regions
            .peek(&(block / REGION_BLOCKS))
            .map_or(device, |y| y.rate_toward(device))
    }

    /// A written block of region `r` has its outcome: read back in time
    /// (`used`), or not (written again first, read too late, forgotten).
    fn resolved(&mut self, r: u64, used: bool) {
        let blocks = u64::from(used);
        self.all.predicted(1);
        self.all.used(blocks);
        let y = self.regions.get_or_insert_mut(r, Yield::default);
        y.predicted(1);
        y.used(blocks);
    }
}

impl Predictor for ReadbackPredictor {
    fn name(&self) -> &'static str {
        "readback"
    }

    fn observe(&mut self, a: &Access) {
        let Some((first, n)) = access_blocks(a) else {
            return;
        };
        self.clock += n;
        // Written blocks not read within their time: in vain (the oldest
        // writes are the least recently put).
        while let Some((_, &(r, at))) = self.written.peek_lru() {
            if self.clock - at <= FOLLOWED {
                break;
            }
            self.written.pop_lru();
            self.resolved(r, false);
        }
        match a.op {
            Op::Read => {
                let mut hit = false;
                // Of a long read, its first blocks (a garbage record may
                // name 2^29 blocks).
                for b in first..first.saturating_add(n.min(MAX_READ_BLOCKS)) {
                    // Still listed: read in time (those whose time is
                    // over went above).
                    if let Some((r, _)) = self.written.pop(&b) {
                        hit = true;
                        self.resolved(r, true);
                    }
                }
                self.covered = self.covered * 0.996 + if hit { 0.004 } else { 0.0 };
            }
            Op::Write | Op::WriteZeroes => {
                let n = n.min(MAX_BLOCKS);
                for b in first..first.saturating_add(n) {
                    let r = b / REGION_BLOCKS;
                    // Each write names its blocks again: one written again
                    // before it was read was named in vain (the write
                    // drops what was fetched), as was the one the list of
                    // written blocks forgets for room.
                    if let Some((_, (r, _))) = self.written.push(b, (r, self.clock)) {
                        self.resolved(r, false);
                    }
                }
                self.fresh.push((first, n));
            }
            _ => {}
        }
    }

    fn predict(&mut self, max: usize) -> Vec<Prediction> {
        let fresh = std::mem::take(&mut self.fresh);
        let mut out: Vec<Prediction> = fresh
            .iter()
            .rev()
            .filter_map(|&(first, n)| Prediction::of_blocks(first, n, self.rate(first), Op::Read))
            .collect();
        // Most probable first (the latest write first among equals).
        out.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        out.truncate(max);
        out
    }

    fn confidence(&self) -> f64 {
        self.covered
    }

    fn precision(&self) -> f64 {
        self.all.rate()
    }

    fn long_horizon(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::read_blocks as read;

    fn write(first: u64, n: u32) -> Access {
        Access {
            op: Op::Write,
            ..read(first, n)
        }
    }

    /// A written block counts once its outcome is known; a region not
    /// measured yet has the device's rate.
    #[test]
    fn outcomes_count_when_known() {
        let mut p = ReadbackPredictor::new();
        p.observe(&write(7, 1));
        assert_eq!(p.rate(7), 0.5, "pending: no evidence yet");
        p.observe(&write(7, 1)); // written again before any read: in vain
        let after_one_failure = p.rate(7);
        assert!(after_one_failure < 0.5, "{after_one_failure}");
        assert_eq!(
            p.rate(99 * REGION_BLOCKS),
            p.all.rate(),
            "the device's rate"
        );
        assert!(p.all.rate() < 0.5);
        p.observe(&read(7, 1)); // the second write's block, read in time
        assert!(p.rate(7) > after_one_failure);
        // Read back too late: a failure.
        p.observe(&write(8, 1));
        let before = p.rate(8);
        p.observe(&read(REGION_BLOCKS * 50, FOLLOWED as u32 + 1));
        p.observe(&read(8, 1));
        assert!(p.rate(8) < before, "{} {before}", p.rate(8));
        // Never read: in vain once its time is over, without a read of it.
        p.observe(&write(2 * REGION_BLOCKS, 1));
        assert_eq!(p.rate(2 * REGION_BLOCKS), p.all.rate(), "pending");
        let device = p.all.rate();
        p.observe(&read(REGION_BLOCKS * 60, FOLLOWED as u32 + 1));
        assert!(p.rate(2 * REGION_BLOCKS) < device);
        assert!(p.written.is_empty());
    }

    #[test]
    fn learns_where_written_blocks_are_read_back() {
        let mut p = ReadbackPredictor::new();
        // Region 0: every written block read back 100 accesses later;
        // region 10: never.
        for i in 0..2000u64 {
            p.observe(&write(i % 200, 1));
            p.observe(&write(10 * REGION_BLOCKS + i % 200, 1));
            p.predict(64);
            if i >= 100 {
                p.observe(&read((i - 100) % 200, 1));
            }
        }
        assert!(p.rate(5) > 0.8, "{}", p.rate(5));
        assert!(
            p.rate(10 * REGION_BLOCKS + 5) < 0.1,
            "{}",
            p.rate(10 * REGION_BLOCKS)
        );
        // After a write, its blocks are named with their region's rate.
        p.observe(&write(7, 2));
        let got = p.predict(64);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].blocks(), Some((7, 2)));
        assert_eq!(got[0].op, Op::Read);
        assert!(got[0].probability > 0.8);
        assert!(p.predict(64).is_empty(), "named once");
        assert!(p.long_horizon());
    }
}
