//! Evaluation harness: replays a trace through a predictor and scores its
//! predictions against what the trace did next.
//!
//! # Definitions
//!
//! Let the trace be accesses `a[0] .. a[n-1]`.  [`evaluate`] feeds them to
//! the predictor in order, and calls [`Predictor::predict`] right after
//! observing `a[i]` whenever `i + 1` is a multiple of `every`; that call is
//! *made at access `i`*.  Only its predictions with a probability of at least
//! `min_probability` count; they name *(op, block)* pairs (a prediction
//! names every block it overlaps, with its op).  Only read and write accesses
//! of at least one sector are *scored*.
//!
//! * The **horizon** of a call made at access `i` is accesses
//!   `i + 1 ..= i + H`, with `H =` [`HORIZON`] (64).
//! * A scored access `a[j]` is **covered** if its first block, with its op,
//!   was named by a call whose horizon contains `j`.  **Coverage** is the
//!   fraction of scored accesses that are covered.
//! * Each call contributes its distinct named (op, block) pairs to the
//!   **predicted** blocks; such a block is **used** if a scored access of
//!   that op touches it within the call's horizon.  **Precision** is the
//!   fraction of predicted blocks that are used.  Calls whose horizon runs
//!   past the end of the trace (`i + H >= n`) are left out of precision,
//!   as their blocks had no full chance to be used.
//!
//! [`calibration`] replays a trace the same way and compares, per class of
//! probability, the probabilities given with the fraction of blocks used.
//!
//! The cost is proportional to the trace length plus the number of blocks
//! predicted over all calls.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::{access_blocks, Access, Op, Predictor};

/// How many accesses after a predict call its predictions may come true in.
pub const HORIZON: usize = 64;

/// The result of [`evaluate`] (see the [module docs](self) for the
/// definitions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Score {
    /// Scored accesses (reads and writes of at least one sector).
    pub accesses: usize,
    /// Scored accesses whose first block was predicted in time.
    pub covered: usize,
    /// Blocks named by predict calls, summed over the calls scored for
    /// precision.
    pub predicted_blocks: usize,
    /// Those of `predicted_blocks` that were used within the horizon.
    pub used_blocks: usize,
}

impl Score {
    /// Fraction of scored accesses that were covered; 0 if there were none.
    pub fn coverage(&self) -> f64 {
        ratio(self.covered, self.accesses)
    }

    /// Fraction of predicted blocks that were used; 0 if none were
    /// predicted.
    pub fn precision(&self) -> f64 {
        ratio(self.used_blocks, self.predicted_blocks)
    }
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "coverage {:.1}% ({} of {} accesses), precision {:.1}% ({} of {} predicted blocks)",
            100.0 * self.coverage(),
            self.covered,
            self.accesses,
            100.0 * self.precision(),
            self.used_blocks,
            self.predicted_blocks
        )
    }
}

fn scored(a: &Access) -> bool {
    matches!(a.op, Op::Read | Op::Write) && a.sectors > 0
}

/// Which scored accesses touch each block, to look ahead in a trace.
struct Future {
    /// (op, block) -> indices of the scored accesses touching it, ascending.
    touched: HashMap<(Op, u64), Vec<usize>>,
}

impl Future {
    fn new(trace: &[Access]) -> Future {
        let mut touched: HashMap<(Op, u64), Vec<usize>> = HashMap::new();
        for (j, a) in trace.iter().enumerate().filter(|(_, a)| scored(a)) {
            if let Some((first, n)) = access_blocks(a) {
                for b in first..first + n {
                    touched.entry((a.op, b)).or_default().push(j);
                }
            }
        }
        Future { touched }
    }

    /// Whether a scored access of `key.0` touches block `key.1` within the
    /// horizon of a call made at access `i`.
    fn used(&self, key: (Op, u64), i: usize) -> bool {
        self.touched.get(&key).is_some_and(|js| {
            let k = js.partition_point(|&j| j <= i);
            js.get(k).is_some_and(|&j| j <= i + HORIZON)
        })
    }
}

/// Replays `trace` through `p`, calling `predict(max)` every `every`
/// accesses (`every` 0 counts as 1), and scores the predictions of
/// probability `>= min_probability`.
pub fn evaluate(
    p: &mut dyn Predictor,
    trace: &[Access],
    every: usize,
    max: usize,
    min_probability: f64,
) -> Score {
    let every = every.max(1);
    let future = Future::new(trace);
    let mut score = Score::default();
    // (op, block) -> the access the last call naming it was made at.
    let mut named: HashMap<(Op, u64), usize> = HashMap::new();
    let mut pruned_at = 0;
    let mut call = HashSet::new();
    for (i, a) in trace.iter().enumerate() {
        if scored(a) {
            score.accesses += 1;
            if let Some((first, _)) = access_blocks(a) {
                if named
                    .get(&(a.op, first))
                    .is_some_and(|&at| i - at <= HORIZON)
                {
                    score.covered += 1;
                }
            }
        }
        p.observe(a);
        if (i + 1) % every != 0 {
            continue;
        }
        call.clear();
        for pr in p.predict(max) {
            if pr.probability >= min_probability {
                if let Some((first, n)) = pr.blocks() {
                    call.extend((first..first + n).map(|b| (pr.op, b)));
                }
            }
        }
        let full_horizon = i + HORIZON < trace.len();
        for key in &call {
            named.insert(*key, i);
            if full_horizon {
                score.predicted_blocks += 1;
                score.used_blocks += usize::from(future.used(*key, i));
            }
        }
        if i - pruned_at >= HORIZON {
            named.retain(|_, &mut at| i - at < HORIZON);
            pruned_at = i;
        }
    }
    score
}

/// Predictions of one probability class, from [`calibration`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CalibrationBin {
    /// Lowest probability of the class.
    pub low: f64,
    /// Highest probability of the class (excluded, but for the last class).
    pub high: f64,
    /// Predictions in the class.
    pub predictions: usize,
    /// Sum of their probabilities.
    pub probability_sum: f64,
    /// Sum over them of the fraction of their blocks that were used.
    pub used_sum: f64,
}

impl CalibrationBin {
    /// Mean probability of the predictions of the class.
    pub fn mean_probability(&self) -> f64 {
        if self.predictions == 0 {
            0.0
        } else {
            self.probability_sum / self.predictions as f64
        }
    }

    /// Mean fraction of their blocks that were used: for calibrated
    /// predictions, close to [`CalibrationBin::mean_probability`].
    pub fn observed(&self) -> f64 {
        if self.predictions == 0 {
            0.0
        } else {
            self.used_sum / self.predictions as f64
        }
    }
}

/// How well the probabilities of `p`'s predictions match what happened:
/// replays `trace` as [`evaluate`] does (with no probability threshold) and
/// sorts the predictions of the calls with a full horizon into `bins` equal
/// probability classes (at least 1), counting for each prediction the
/// fraction of its blocks that were used (see the [module docs](self)).
pub fn calibration(
    p: &mut dyn Predictor,
    trace: &[Access],
    every: usize,
    max: usize,
    bins: usize,
) -> Vec<CalibrationBin> {
    let every = every.max(1);
    let bins = bins.max(1);
    let future = Future::new(trace);
    let mut out: Vec<CalibrationBin> = (0..bins)
        .map(|k| CalibrationBin {
            low: k as f64 / bins as f64,
            high: (k + 1) as f64 / bins as f64,
            ..CalibrationBin::default()
        })
        .collect();
    for (i, a) in trace.iter().enumerate() {
        p.observe(a);
        if (i + 1) % every != 0 || i + HORIZON >= trace.len() {
            continue;
        }
        for pr in p.predict(max) {
            let Some((first, n)) = pr.blocks() else {
                continue;
            };
            let used = (first..first + n)
                .filter(|&b| future.used((pr.op, b), i))
                .count();
            let probability = pr.probability.clamp(0.0, 1.0);
            let bin = &mut out[((probability * bins as f64) as usize).min(bins - 1)];
            bin.predictions += 1;
            bin.probability_sum += probability;
            bin.used_sum += used as f64 / n as f64;
        }
    }
    out
}

/// Feeds `trace` to `p` without asking for predictions (a warm-up before
/// [`evaluate`]).
pub fn train(p: &mut dyn Predictor, trace: &[Access]) {
    for a in trace {
        p.observe(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pred;
    use crate::Prediction;

    /// Predicts fixed blocks, whatever happens.
    struct Fixed(Vec<Prediction>);

    impl Predictor for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn observe(&mut self, _: &Access) {}
        fn predict(&mut self, max: usize) -> Vec<Prediction> {
            self.0.iter().copied().take(max).collect()
        }
        fn confidence(&self) -> f64 {
            0.0
        }

        fn precision(&self) -> f64 {
            0.0
        }
    }

    const fn access(op: Op, block: u64, blocks: u32) -> Access {
        Access {
            ts_ns: 0,
            sector: block * 8,
            sectors: blocks * 8,
            op,
        }
    }

    /// A trace of distinct-block reads, with some accesses replaced.
    fn trace(n: usize, replaced: &[(usize, Access)]) -> Vec<Access> {
        let mut t: Vec<Access> = (0..n as u64)
            .map(|i| access(Op::Read, 10_000 + i, 1))
            .collect();
        for &(i, a) in replaced {
            t[i] = a;
        }
        t
    }

    fn fixed() -> Fixed {
        Fixed(vec![
            pred(7, 1, 0.9, Op::Read),
            pred(20, 3, 0.9, Op::Read),
            pred(20, 1, 0.1, Op::Write),
            pred(500, 1, 0.9, Op::Read),
        ])
    }

    // With every = 71 and 140 accesses, the only call is made at index 70;
    // its horizon is 71 ..= 134.
    const CALL: usize = 70;
    const REPLACED: [(usize, Access); 6] = [
        (30, access(Op::Read, 20, 1)),                 // before the call
        (CALL + 1, access(Op::Read, 7, 2)),            // covered; uses 7
        (CALL + 2, access(Op::Write, 20, 1)),          // the write prediction is improbable
        (CALL + 3, access(Op::Flush, 0, 0)),           // not scored
        (CALL + HORIZON, access(Op::Read, 21, 1)),     // last of the horizon
        (CALL + HORIZON + 1, access(Op::Read, 22, 1)), // past it
    ];

    #[test]
    fn one_call_is_scored_exactly() {
        let t = trace(140, &REPLACED);
        let s = evaluate(&mut fixed(), &t, CALL + 1, 10, 0.5);
        assert_eq!(
            s,
            Score {
                accesses: 139,
                covered: 2,
                predicted_blocks: 5, // 7, 20, 21, 22, 500
                used_blocks: 2,      // 7, 21
            }
        );
        let s = evaluate(&mut fixed(), &t, CALL + 1, 10, 0.05);
        assert_eq!((s.covered, s.predicted_blocks, s.used_blocks), (3, 6, 3));
        let s = evaluate(&mut fixed(), &t, CALL + 1, 1, 0.05);
        assert_eq!((s.covered, s.predicted_blocks, s.used_blocks), (1, 1, 1));
    }

    #[test]
    fn calls_without_a_full_horizon_are_left_out_of_precision() {
        let t = trace(CALL + HORIZON, &REPLACED[..4]);
        let s = evaluate(&mut fixed(), &t, CALL + 1, 10, 0.5);
        assert_eq!((s.covered, s.predicted_blocks, s.used_blocks), (1, 0, 0));
    }

    #[test]
    fn any_call_within_the_horizon_covers() {
        let t = trace(
            300,
            &[(0, access(Op::Read, 7, 1)), (5, access(Op::Read, 7, 1))],
        );
        let s = evaluate(&mut fixed(), &t, 1, 10, 0.5);
        assert_eq!(s.covered, 1);
        let s = evaluate(&mut fixed(), &t, 0, 10, 0.5);
        assert_eq!(s.covered, 1, "every = 0 counts as 1");
        assert_eq!(s.predicted_blocks, 5 * (300 - HORIZON));
        assert_eq!(s.used_blocks, 5, "block 7, at index 5, by calls 0..=4");
    }

    #[test]
    fn score_ratios() {
        let s = Score {
            accesses: 4,
            covered: 3,
            predicted_blocks: 10,
            used_blocks: 1,
        };
        assert_eq!(s.coverage(), 0.75);
        assert_eq!(s.precision(), 0.1);
        assert_eq!(Score::default().coverage(), 0.0);
        assert_eq!(Score::default().precision(), 0.0);
        assert!(s
            .to_string()
            .starts_with("coverage 75.0% (3 of 4 accesses)"));
    }
}
