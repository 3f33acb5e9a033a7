//! Feedback shared by the predictors: how well their recent predictions came
//! true ([`Predictor::confidence`](crate::Predictor::confidence)), and the
//! calibration of their probabilities.

use std::collections::{HashMap, VecDeque};

use crate::eval::HORIZON;
use crate::{access_blocks, Access, Op, Prediction};

/// Number of recent scored accesses [`HitTracker::confidence`] looks at.
pub(crate) const CONFIDENCE_WINDOW: usize = 256;

/// Most blocks of one predicted range that are followed (the rest of a
/// longer range does not count).
const MAX_TRACKED_BLOCKS: u64 = 1024;

/// Probability classes of the calibration.
const BINS: usize = 10;

/// Weight, in predictions, of the prior belief that a class is calibrated.
const PRIOR_WEIGHT: f64 = 4.0;

/// A class's counts are halved when it has this many predictions.
const DECAY_AT: f64 = 4096.0;

/// The feedback of one predictor.
///
/// * An access is *covered* if its first block, with its op, was named by a
///   prediction made at most [`HORIZON`] observed accesses before it (the
///   definition [`eval`](crate::eval) uses for coverage).  The confidence is
///   the fraction of covered accesses among the last [`CONFIDENCE_WINDOW`]
///   scored ones (those of the tracked ops, of at least one sector).
/// * The calibration follows every prediction for the [`HORIZON`] accesses
///   after it was made, and measures which fraction of its blocks were
///   accessed (with its op) meanwhile.  Per class of raw probability (tenths)
///   it keeps the mean raw probability and the mean fraction used.  The
///   calibrated probability is the fraction used, pulled towards the raw
///   probability while a class has few predictions, made non-decreasing
///   (pool adjacent violators) and interpolated between the classes' mean raw
///   probabilities.  Untrained, it is the raw probability.
pub(crate) struct HitTracker {
    ops: &'static [Op],
    /// Accesses observed so far.
    seen: u64,
    /// (op, block) -> the value of `seen` when it was last predicted.
    predicted: HashMap<(Op, u64), u64>,
    /// `seen` at the last clean-up of `predicted` and `waiting`.
    pruned_at: u64,
    /// Whether each recent scored access was covered, oldest first.
    recent: VecDeque<bool>,
    recent_covered: usize,
    /// Predictions within their horizon, by id (oldest first).
    pending: VecDeque<Pending>,
    /// Id of the next prediction.
    next_id: u64,
    /// (op, block) -> ids of the pending predictions naming it that have not
    /// seen it accessed yet.
    waiting: HashMap<(Op, u64), Vec<u64>>,
    classes: [Class; BINS],
}

/// A prediction being followed.
struct Pending {
    id: u64,
    /// `seen` when it was made.
    made: u64,
    raw: f64,
    blocks: u32,
    used: u32,
}

/// Outcomes of the predictions of one class of raw probability.
#[derive(Clone, Copy, Default)]
struct Class {
    predictions: f64,
    raw_sum: f64,
    used_sum: f64,
}

fn class_of(raw: f64) -> usize {
    ((raw * BINS as f64) as usize).min(BINS - 1)
}

impl HitTracker {
    /// A tracker scoring accesses of `ops`.
    pub(crate) fn new(ops: &'static [Op]) -> HitTracker {
        HitTracker {
            ops,
            seen: 0,
            predicted: HashMap::new(),
            pruned_at: 0,
            recent: VecDeque::with_capacity(CONFIDENCE_WINDOW),
            recent_covered: 0,
            pending: VecDeque::new(),
            next_id: 0,
            waiting: HashMap::new(),
            classes: [Class::default(); BINS],
        }
    }

    /// Scores an access against the earlier predictions.
    pub(crate) fn observe(&mut self, a: &Access) {
        self.seen += 1;
        if let Some((first, n)) = access_blocks(a) {
            if self.ops.contains(&a.op) {
                let covered = self
                    .predicted
                    .get(&(a.op, first))
                    .is_some_and(|&at| self.seen - at <= HORIZON as u64);
                if self.recent.len() == CONFIDENCE_WINDOW && self.recent.pop_front() == Some(true) {
                    self.recent_covered -= 1;
                }
                self.recent.push_back(covered);
                self.recent_covered += usize::from(covered);
            }
            if !self.waiting.is_empty() {
                for b in first..first + n.min(MAX_TRACKED_BLOCKS) {
                    for id in self.waiting.remove(&(a.op, b)).into_iter().flatten() {
                        if let Ok(i) = self.pending.binary_search_by_key(&id, |p| p.id) {
                            self.pending[i].used += 1;
                        }
                    }
                }
            }
        }
        while self
            .pending
            .front()
            .is_some_and(|p| self.seen - p.made >= HORIZON as u64)
        {
            let p = self.pending.pop_front().expect("front");
            let class = &mut self.classes[class_of(p.raw)];
            class.predictions += 1.0;
            class.raw_sum += p.raw;
            class.used_sum += f64::from(p.used) / f64::from(p.blocks);
            if class.predictions >= DECAY_AT {
                class.predictions /= 2.0;
                class.raw_sum /= 2.0;
                class.used_sum /= 2.0;
            }
        }
        if self.seen - self.pruned_at >= HORIZON as u64 {
            let seen = self.seen;
            let first = self.pending.front().map_or(self.next_id, |p| p.id);
            self.predicted
                .retain(|_, &mut at| seen - at < HORIZON as u64);
            self.waiting.retain(|_, ids| {
                ids.retain(|&id| id >= first);
                !ids.is_empty()
            });
            self.pruned_at = seen;
        }
    }

    /// Calibrates `raw` predictions (probabilities as the predictor's model
    /// gives them), keeps the `max` most probable, and follows them.
    pub(crate) fn finish(&mut self, raw: Vec<Prediction>, max: usize) -> Vec<Prediction> {
        let curve = self.curve();
        let mut out: Vec<(Prediction, f64)> = raw
            .into_iter()
            .map(|p| {
                let raw = p.probability.clamp(0.0, 1.0);
                let probability = interpolate(&curve, raw);
                (Prediction { probability, ..p }, raw)
            })
            .collect();
        out.sort_by(|(a, ra), (b, rb)| {
            b.probability
                .total_cmp(&a.probability)
                .then(rb.total_cmp(ra))
                .then(a.start.cmp(&b.start))
        });
        out.truncate(max);
        // Calls with no access since are superseded by this one.
        while self.pending.back().is_some_and(|p| p.made == self.seen) {
            self.pending.pop_back();
        }
        for (p, raw) in &out {
            let Some((first, n)) = p.blocks() else {
                continue;
            };
            let n = n.min(MAX_TRACKED_BLOCKS);
            let id = self.next_id;
            self.next_id += 1;
            self.pending.push_back(Pending {
                id,
                made: self.seen,
                raw: *raw,
                blocks: n as u32,
                used: 0,
            });
            for b in first..first + n {
                self.predicted.insert((p.op, b), self.seen);
                self.waiting.entry((p.op, b)).or_default().push(id);
            }
        }
        out.into_iter().map(|(p, _)| p).collect()
    }

    /// Fraction of the recent scored accesses that were covered; 0 before
    /// any.
    pub(crate) fn confidence(&self) -> f64 {
        if self.recent.is_empty() {
            0.0
        } else {
            self.recent_covered as f64 / self.recent.len() as f64
        }
    }

    /// The calibration curve: (raw probability, calibrated probability)
    /// points, both non-decreasing.
    fn curve(&self) -> [(f64, f64); BINS] {
        let mut points = [(0.0, 0.0); BINS];
        // Pool-adjacent-violators over (value, weight) blocks.
        let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(BINS);
        for (k, c) in self.classes.iter().enumerate() {
            let x = if c.predictions > 0.0 {
                c.raw_sum / c.predictions
            } else {
                (k as f64 + 0.5) / BINS as f64
            };
            points[k].0 = x;
            let weight = c.predictions + PRIOR_WEIGHT;
            let mut value = (c.used_sum + PRIOR_WEIGHT * x) / weight;
            let (mut weight, mut len) = (weight, 1);
            while let Some(&(v, w, l)) = blocks.last() {
                if v <= value {
                    break;
                }
                blocks.pop();
                value = (v * w + value * weight) / (w + weight);
                weight += w;
                len += l;
            }
            blocks.push((value, weight, len));
        }
        let mut k = 0;
        for (value, _, len) in blocks {
            for p in &mut points[k..k + len] {
                p.1 = value;
            }
            k += len;
        }
        points
    }
}

/// The curve's value at `x`: linear between its points, and beyond them
/// shifted like the nearest one (slope 1), within 0..=1.
fn interpolate(curve: &[(f64, f64); BINS], x: f64) -> f64 {
    let k = curve.partition_point(|&(px, _)| px < x);
    if k == 0 || k == BINS {
        let (px, py) = curve[k.saturating_sub(1)];
        return (x - px + py).clamp(0.0, 1.0);
    }
    let ((x0, y0), (x1, y1)) = (curve[k - 1], curve[k]);
    if x1 > x0 {
        y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    } else {
        y1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{pred, read};

    fn nothing() -> Access {
        Access {
            sectors: 0,
            ..read(0)
        }
    }

    #[test]
    fn covered_only_within_the_horizon_and_for_the_tracked_op() {
        let mut t = HitTracker::new(&[Op::Read]);
        assert_eq!(t.confidence(), 0.0);
        t.finish(
            vec![pred(10, 2, 0.1, Op::Read), pred(20, 1, 0.1, Op::Write)],
            10,
        );
        t.observe(&read(11)); // covered
        t.observe(&Access {
            op: Op::Write,
            ..read(20)
        }); // not scored
        t.observe(&read(20)); // predicted for a write only
        assert_eq!(t.confidence(), 0.5);
        for _ in 0..HORIZON - 4 {
            t.observe(&nothing());
        }
        t.observe(&read(10)); // HORIZON accesses after the prediction
        t.observe(&read(10)); // one too late
        assert_eq!(t.confidence(), 0.5);
    }

    #[test]
    fn confidence_is_over_a_sliding_window() {
        let mut t = HitTracker::new(&[Op::Read]);
        for i in 0..CONFIDENCE_WINDOW as u64 {
            t.observe(&read(i));
        }
        assert_eq!(t.confidence(), 0.0);
        for i in 0..CONFIDENCE_WINDOW as u64 / 2 {
            t.finish(vec![pred(i + 1000, 1, 1.0, Op::Read)], 1);
            t.observe(&read(i + 1000));
        }
        assert_eq!(t.confidence(), 0.5);
        for i in 0..CONFIDENCE_WINDOW as u64 {
            t.finish(vec![pred(i + 5000, 1, 1.0, Op::Read)], 1);
            t.observe(&read(i + 5000));
        }
        assert_eq!(t.confidence(), 1.0);
        assert!(t.predicted.len() <= HORIZON * 2);
        assert!(t.waiting.len() <= HORIZON * 2);
        assert!(t.pending.len() <= HORIZON);
    }

    #[test]
    fn untrained_calibration_keeps_raw_probabilities() {
        let mut t = HitTracker::new(&[Op::Read]);
        for raw in [0.0, 0.03, 0.26, 0.5, 0.74, 0.97, 1.0] {
            let out = t.finish(vec![pred(1, 1, raw, Op::Read)], 1);
            assert!((out[0].probability - raw).abs() < 1e-9, "{raw}: {out:?}");
        }
    }

    /// Predicts `blocks` blocks with probability `raw`, `calls` times, and
    /// reads `used` of them each time.
    fn train(t: &mut HitTracker, raw: f64, blocks: u64, used: u64, calls: u64) {
        for i in 0..calls {
            let base = 1_000_000 * (i + 1);
            t.finish(vec![pred(base, blocks, raw, Op::Read)], 1);
            for b in 0..used {
                t.observe(&read(base + b));
            }
            for _ in used..HORIZON as u64 {
                t.observe(&nothing());
            }
        }
    }

    #[test]
    fn calibration_learns_what_comes_true() {
        let mut t = HitTracker::new(&[Op::Read]);
        // Raw 0.9, but only a quarter of the blocks are used; raw 0.15, and
        // all are used.
        train(&mut t, 0.9, 8, 2, 200);
        train(&mut t, 0.15, 4, 4, 200);
        let out = t.finish(
            vec![
                pred(1, 1, 0.9, Op::Read),
                pred(2, 1, 0.15, Op::Read),
                pred(3, 1, 0.5, Op::Read),
            ],
            3,
        );
        // Monotone: the violating classes are pooled, near 0.25 and 1.
        for p in &out {
            assert!((0.55..0.7).contains(&p.probability), "{out:?}");
        }
        assert_eq!(out[0].start, 8, "ties keep the raw order");
        assert_eq!(out[2].start, 16);

        let mut t = HitTracker::new(&[Op::Read]);
        train(&mut t, 0.95, 4, 0, 300);
        train(&mut t, 0.05, 2, 2, 300);
        let out = t.finish(vec![pred(1, 1, 0.95, Op::Read)], 1);
        assert!(
            out[0].probability > 0.45 && out[0].probability < 0.55,
            "{out:?}"
        );

        let mut t = HitTracker::new(&[Op::Read]);
        train(&mut t, 0.95, 4, 0, 300);
        let out = t.finish(vec![pred(1, 1, 0.95, Op::Read)], 1);
        assert!(out[0].probability < 0.07, "{out:?}");
        train(&mut t, 0.35, 4, 3, 300);
        let out = t.finish(
            vec![pred(1, 1, 0.95, Op::Read), pred(1, 1, 0.35, Op::Read)],
            2,
        );
        assert!(
            out.iter().all(|p| (0.3..0.45).contains(&p.probability)),
            "{out:?}"
        );
    }

    #[test]
    fn calls_without_accesses_in_between_supersede_each_other() {
        let mut t = HitTracker::new(&[Op::Read]);
        for _ in 0..10_000 {
            t.finish(
                vec![pred(7, 2, 0.5, Op::Read), pred(100, 1, 0.5, Op::Read)],
                2,
            );
        }
        assert_eq!(t.pending.len(), 2);
        t.observe(&read(7));
        t.finish(vec![pred(8, 1, 0.5, Op::Read)], 1);
        assert_eq!(t.pending.len(), 3);
        assert_eq!(
            t.pending.iter().map(|p| p.used).collect::<Vec<_>>(),
            [1, 0, 0]
        );
        t.observe(&read(8));
        assert_eq!(
            t.pending.iter().map(|p| p.used).collect::<Vec<_>>(),
            [2, 0, 1]
        );
    }

    #[test]
    fn each_block_counts_once_per_prediction() {
        let mut t = HitTracker::new(&[Op::Read]);
        for _ in 0..500 {
            t.finish(vec![pred(7, 2, 0.5, Op::Read)], 1);
            for _ in 0..HORIZON {
                t.observe(&read(7)); // half of the prediction, again and again
            }
        }
        let out = t.finish(vec![pred(7, 2, 0.5, Op::Read)], 1);
        assert!((out[0].probability - 0.5).abs() < 0.01, "{out:?}");
    }
}

/// The measured yield of a predictor's predictions: the fraction of the
/// blocks it predicted that were then read, both counts halved past
/// [`Yield::DECAY_AT`] predicted blocks so it follows the workload;
/// Laplace-smoothed (one half untrained).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Yield {
    predicted: f64,
    used: f64,
}

impl Yield {
    pub(crate) const DECAY_AT: f64 = 8192.0;

    pub(crate) fn predicted(&mut self, blocks: u64) {
        self.predicted += blocks as f64;
        if self.predicted > Self::DECAY_AT {
            self.predicted /= 2.0;
            self.used /= 2.0;
        }
    }

    pub(crate) fn used(&mut self, blocks: u64) {
        self.used += blocks as f64;
    }

    pub(crate) fn rate(&self) -> f64 {
        (self.used + 1.0) / (self.predicted + 2.0)
    }
}
