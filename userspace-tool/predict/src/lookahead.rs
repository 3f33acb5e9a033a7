//! Readahead with measured odds: after each read, the blocks that follow it
//! (or, backwards, those before it), each distance with the probability its
//! own history gives.
//!
//! [`LookaheadPredictor`] names, after every read, the [`WINDOW`] blocks
//! after its last block (after each of the last [`MAX_READS`] reads when
//! `predict` is called less often than reads come), cut into distance bands (1, 2, 3–4, 5–8, 9–16,
//! 17–32, 33–64). Each band gets a fixed raw probability, decreasing with
//! distance, that only orders the bands; the calibration every predictor
//! has ([`HitTracker`]) then replaces it by the fraction of that band's
//! blocks that were read within the horizon. So the band probabilities are
//! readahead's measured yield at each distance: a mix that keeps what is
//! above a threshold reads ahead exactly as far as it pays on this workload
//! (on a random workload, not at all), and a better predictor's blocks win
//! where they are more probable.
//!
//! [`LookaheadPredictor::backward`] ("lookbehind") does the same with the
//! [`WINDOW`] blocks *before* each read's first block: reads that walk
//! backwards, or that land near each other in a small neighbourhood in any
//! order: on the shared real traces, from a seventh (Tencent CBS 490, 211)
//! to nine tenths (MSR Cambridge 1006) of the reads of a block never
//! accessed before end at most 64 blocks before the start of one of the
//! last 64 reads.
//! It has its own calibration, so on a workload where the blocks before a
//! read are not read it pushes nothing.

use crate::track::HitTracker;
use crate::{access_blocks, Access, Op, Prediction, Predictor};

/// Blocks named after each read.
pub const WINDOW: u64 = 64;

/// Most reads remembered between two `predict` calls (the latest).
pub const MAX_READS: usize = 64;

/// Distance bands: (first distance, last distance), 1-based from the block
/// after the read, and the raw probability that orders them (one
/// calibration class each).
const BANDS: [(u64, u64, f64); 7] = [
    (1, 1, 0.95),
    (2, 2, 0.85),
    (3, 4, 0.75),
    (5, 8, 0.65),
    (9, 16, 0.55),
    (17, 32, 0.45),
    (33, WINDOW, 0.35),
];

/// See the [module docs](self).
pub struct LookaheadPredictor {
    /// One past the last block of each read not predicted from yet (its
    /// first block, backwards).
    ends: Vec<u64>,
    backward: bool,
    tracker: HitTracker,
}

impl Default for LookaheadPredictor {
    fn default() -> Self {
        Self::new()
    }
}

impl LookaheadPredictor {
    crate::track::shares_recency!();

    /// An untrained model.
    pub fn new() -> Self {
        LookaheadPredictor {
            ends: Vec::new(),
            backward: false,
            tracker: HitTracker::new(&[Op::Read]),
        }
    }

    /// The blocks before each read instead ("lookbehind", module docs).
    pub fn backward() -> Self {
        LookaheadPredictor {
            backward: true,
            ..Self::new()
        }
    }

    /// The calibrated probability of each band (distance 1 first).
    pub fn band_probabilities(&self) -> Vec<f64> {
        let raw = BANDS
            .iter()
            .filter_map(|&(d, _, p)| Prediction::of_blocks(d, 1, p, Op::Read))
            .collect();
        self.tracker
            .calibrate(raw)
            .into_iter()
            .map(|p| p.probability)
            .collect()
    }
}

impl Predictor for LookaheadPredictor {
    fn name(&self) -> &'static str {
        if self.backward {
            "lookbehind"
        } else {
            "lookahead"
        }
    }

    fn observe(&mut self, access: &Access) {
        self.tracker.observe(access);
        if access.op == Op::Read {
            let backward = self.backward;
            if let Some(end) = access_blocks(access).and_then(|(first, n)| {
                if backward {
                    Some(first)
                } else {
                    first.checked_add(n)
                }
            }) {
                if self.ends.len() == MAX_READS {
                    self.ends.remove(0);
                }
                self.ends.push(end);
            }
        }
    }

    fn predict(&mut self, max: usize) -> Vec<Prediction> {
        let mut ends = std::mem::take(&mut self.ends);
        ends.sort_unstable();
        ends.dedup();
        let raw = ends
            .iter()
            .flat_map(|&after| {
                let backward = self.backward;
                BANDS.iter().filter_map(move |&(from, to, p)| {
                    let first = if backward {
                        after.checked_sub(to)?
                    } else {
                        after.checked_add(from - 1)?
                    };
                    Prediction::of_blocks(first, to - from + 1, p, Op::Read)
                })
            })
            .collect();
        // Bands of several reads may overlap: the most probable wins (one
        // read's bands do not).
        let raw = if ends.len() > 1 {
            crate::merge(vec![raw])
        } else {
            raw
        };
        self.ends = ends;
        self.ends.clear();
        self.tracker.finish(raw, max)
    }

    crate::track::scored_by_tracker!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::read_blocks as read;

    #[test]
    fn names_the_bands_after_each_read_once() {
        let mut p = LookaheadPredictor::new();
        assert!(p.predict(64).is_empty());
        p.observe(&read(100, 2));
        let got: Vec<(u64, u64)> = p.predict(64).iter().map(|x| x.blocks().unwrap()).collect();
        assert_eq!(
            got,
            [
                (102, 1),
                (103, 1),
                (104, 2),
                (106, 4),
                (110, 8),
                (118, 16),
                (134, 32)
            ]
        );
        // Nothing new until the next read.
        assert!(p.predict(64).is_empty());
        // Two reads before a call: the bands of both, overlaps merged.
        p.observe(&read(200, 1));
        p.observe(&read(202, 1));
        let got: Vec<(u64, u64)> = p.predict(64).iter().map(|x| x.blocks().unwrap()).collect();
        assert!(
            got.contains(&(201, 1)) && got.contains(&(203, 1)),
            "{got:?}"
        );
        let mut blocks: Vec<u64> = got.iter().flat_map(|&(f, n)| f..f + n).collect();
        let all = blocks.len();
        blocks.sort_unstable();
        blocks.dedup();
        assert_eq!(blocks.len(), all, "{got:?}");
        assert_eq!(blocks, (201..203 + 64).collect::<Vec<_>>());
    }

    #[test]
    fn backward_names_the_bands_before_each_read() {
        let mut p = LookaheadPredictor::backward();
        assert_eq!(p.name(), "lookbehind");
        p.observe(&read(100, 2));
        let got: Vec<(u64, u64)> = p.predict(64).iter().map(|x| x.blocks().unwrap()).collect();
        assert_eq!(
            got,
            [
                (99, 1),
                (98, 1),
                (96, 2),
                (92, 4),
                (84, 8),
                (68, 16),
                (36, 32)
            ]
        );
        // Near the device's start: only the bands that fit.
        p.observe(&read(3, 1));
        let got: Vec<(u64, u64)> = p.predict(64).iter().map(|x| x.blocks().unwrap()).collect();
        assert_eq!(got, [(2, 1), (1, 1)]);
    }

    /// `p` after 2,000 one-block reads scattered over 40 GiB.
    fn after_random_reads(mut p: LookaheadPredictor) -> LookaheadPredictor {
        let mut x = 7u64;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            p.observe(&read((x >> 20) % 10_000_000, 1));
            p.predict(64);
        }
        p
    }

    #[test]
    fn a_backward_scan_makes_the_backward_bands_likely_and_random_reads_not() {
        let mut scan = LookaheadPredictor::backward();
        for i in 0..2000u64 {
            scan.observe(&read(1_000_000 - 2 * i, 2));
            scan.predict(64);
        }
        let b = scan.band_probabilities();
        assert!(b[0] > 0.9 && b[1] > 0.9, "{b:?}");
        assert!(scan.precision() > 0.5, "{}", scan.precision());
        let b = after_random_reads(LookaheadPredictor::backward()).band_probabilities();
        assert!(b.iter().all(|&p| p < 0.1), "{b:?}");
    }

    #[test]
    fn sequential_reads_make_near_bands_likely_and_random_reads_unlikely() {
        let mut seq = LookaheadPredictor::new();
        for i in 0..2000u64 {
            seq.observe(&read(i, 1));
            seq.predict(64);
        }
        let b = seq.band_probabilities();
        assert!(b[0] > 0.9, "{b:?}");
        assert!(b.windows(2).all(|w| w[0] >= w[1]), "{b:?}");

        let rnd = after_random_reads(LookaheadPredictor::new());
        let b = rnd.band_probabilities();
        assert!(b.iter().all(|&p| p < 0.1), "{b:?}");
        assert!(rnd.precision() < 0.05, "{}", rnd.precision());
        assert!(seq.precision() > 0.5, "{}", seq.precision());
    }
}
