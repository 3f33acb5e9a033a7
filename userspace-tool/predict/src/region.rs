//! A spatial model of reads: regions that are being read densely are read
//! whole.
//!
//! Many real workloads read a small neighbourhood in random order (a
//! database's index pages, a VM's metadata area), which neither a stride
//! nor a successor model predicts, and which readahead catches only by
//! luck of the window. [`RegionPredictor`] cuts the device into regions of
//! [`REGION_BLOCKS`] blocks and remembers, for the most recently read
//! regions, which blocks were read. When a region has had
//! [`TRIGGER`] distinct blocks read, the rest of it is predicted, once.
//!
//! # Probability
//!
//! The probability given is the measured *yield* of such predictions: the
//! fraction of blocks predicted this way that were then read while their
//! region was still remembered, both counts decaying so the yield follows
//! the workload (Laplace-smoothed, starting at one half). The shared
//! calibration of the crate then adjusts it like every predictor's.

use std::num::NonZeroUsize;

use lru::LruCache;

use crate::track::{HitTracker, Yield};
use crate::{access_blocks, Access, Op, Prediction, Predictor};

/// Blocks per region (256 KiB).
pub const REGION_BLOCKS: u64 = 64;

/// Distinct blocks read in a region that trigger its prediction.
pub const TRIGGER: u32 = 4;

/// Regions remembered.
pub const REGIONS: usize = 4096;

#[derive(Clone, Copy, Debug, Default)]
struct Region {
    read: u64,
    /// Blocks predicted and not read yet.
    predicted: u64,
}

/// See the [module docs](self).
pub struct RegionPredictor {
    regions: LruCache<u64, Region>,
    /// Regions triggered since the last `predict`.
    fresh: Vec<(u64, u64)>,
    yields: Yield,
    tracker: HitTracker,
}

impl Default for RegionPredictor {
    fn default() -> Self {
        Self::new()
    }
}

impl RegionPredictor {
    /// An untrained model.
    pub fn new() -> Self {
        RegionPredictor {
            regions: LruCache::new(NonZeroUsize::new(REGIONS).expect("non-zero")),
            fresh: Vec::new(),
            yields: Yield::default(),
            tracker: HitTracker::new(&[Op::Read]),
        }
    }

    /// The measured yield of region predictions.
    pub fn yield_rate(&self) -> f64 {
        self.yields.rate()
    }

    fn mark(&mut self, region: u64, bits: u64) {
        let r = self.regions.get_or_insert_mut(region, Region::default);
        let hit = (r.predicted & bits).count_ones();
        r.predicted &= !bits;
        let before = r.read.count_ones();
        r.read |= bits;
        let after = r.read.count_ones();
        let trigger = before < TRIGGER && after >= TRIGGER && after < REGION_BLOCKS as u32;
        if trigger {
            r.predicted = !r.read;
        }
        let (pred, read) = (r.predicted, r.read);
        self.yields.used(u64::from(hit));
        if trigger {
            self.yields.predicted(u64::from(pred.count_ones()));
            self.fresh.push((region, !read));
        }
    }
}

/// The bits of blocks `lo..=hi` (region-local, < 64).
fn bits(lo: u64, hi: u64) -> u64 {
    let n = hi - lo + 1;
    if n >= 64 {
        u64::MAX
    } else {
        ((1u64 << n) - 1) << lo
    }
}

impl Predictor for RegionPredictor {
    fn name(&self) -> &'static str {
        "region"
    }

    fn observe(&mut self, access: &Access) {
        self.tracker.observe(access);
        if access.op != Op::Read {
            return;
        }
        let Some((first, n)) = access_blocks(access) else {
            return;
        };
        let last = first + n - 1;
        // A long read is not a neighbourhood: only its first and last
        // regions are marked.
        let (r0, r1) = (first / REGION_BLOCKS, last / REGION_BLOCKS);
        for r in [r0, r1] {
            let lo = if r == r0 { first % REGION_BLOCKS } else { 0 };
            let hi = if r == r1 {
                last % REGION_BLOCKS
            } else {
                REGION_BLOCKS - 1
            };
            self.mark(r, bits(lo, hi));
            if r0 == r1 {
                break;
            }
        }
    }

    fn predict(&mut self, max: usize) -> Vec<Prediction> {
        let p = self.yield_rate();
        let mut raw = Vec::new();
        for (region, mut want) in self.fresh.drain(..) {
            // Each run of unread blocks is one range.
            while want != 0 {
                let lo = u64::from(want.trailing_zeros());
                let run = u64::from((want >> lo).trailing_ones());
                want &= !bits(lo, lo + run - 1);
                if let Some(pr) =
                    Prediction::of_blocks(region * REGION_BLOCKS + lo, run, p, Op::Read)
                {
                    raw.push(pr);
                }
            }
        }
        self.tracker.finish(raw, max)
    }

    crate::track::scored_by_tracker!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::read;

    #[test]
    fn a_densely_read_region_is_predicted_once() {
        let mut p = RegionPredictor::new();
        for b in [5, 9, 2] {
            p.observe(&read(b));
            assert!(p.predict(64).is_empty());
        }
        p.observe(&read(40));
        let pr = p.predict(64);
        let blocks: u64 = pr.iter().map(|x| x.blocks().unwrap().1).sum();
        assert_eq!(blocks, 60);
        assert!(pr.iter().all(|x| x.start / 8 < 64));
        // Not again.
        p.observe(&read(41));
        assert!(p.predict(64).is_empty());
        assert_eq!(bits(0, 63), u64::MAX);
        assert_eq!(bits(2, 3), 0b1100);
    }

    #[test]
    fn the_yield_follows_the_workload() {
        let mut p = RegionPredictor::new();
        // Regions read whole after the trigger: the yield rises.
        for r in 0..20u64 {
            for b in 0..64 {
                p.observe(&read(r * 64 + (b * 37) % 64));
                p.predict(64);
            }
        }
        assert!(p.yield_rate() > 0.9, "{}", p.yield_rate());
        // Regions that get exactly the trigger's reads: it falls.
        let mut q = RegionPredictor::new();
        for r in 0..200u64 {
            for b in 0..4 {
                q.observe(&read(r * 64 + b * 9));
                q.predict(64);
            }
        }
        assert!(q.yield_rate() < 0.05, "{}", q.yield_rate());
    }
}
