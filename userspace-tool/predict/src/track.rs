//! Feedback shared by the predictors: how well their recent predictions came
//! true ([`Predictor::confidence`](crate::Predictor::confidence)), and the
//! calibration of their probabilities.

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering as Atomic};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use rustc_hash::FxHasher;

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

/// The [`Predictor`](crate::Predictor) methods `confidence` and `precision`
/// of a predictor whose feedback is its field `tracker`.
macro_rules! scored_by_tracker {
    () => {
        fn confidence(&self) -> f64 {
            self.tracker.confidence()
        }

        fn precision(&self) -> f64 {
            self.tracker.precision()
        }
    };
}
pub(crate) use scored_by_tracker;

/// The inherent method `sharing` of a predictor whose feedback is its field
/// `tracker`: an ensemble's members share one [`Recency`].
macro_rules! shares_recency {
    () => {
        /// This predictor, its feedback sharing `r` (an ensemble's members).
        pub(crate) fn sharing(mut self, r: &crate::track::Recency) -> Self {
            self.tracker.share(r);
            self
        }
    };
}
pub(crate) use shares_recency;

/// The feedback of one predictor.
///
/// * It follows the predictions of one call in [`FOLLOW_EVERY`] accesses
///   (the first call after that many; a call with no access since the last
///   followed one replaces it).
/// * An access is *covered* if its first block, with its op, was named by a
///   followed prediction made at most [`HORIZON`] observed accesses before
///   it (the definition [`eval`](crate::eval) uses for coverage, over the
///   calls it follows).  The confidence is the fraction of covered accesses
///   among the last [`CONFIDENCE_WINDOW`] scored ones (those of the tracked
///   ops, of at least one sector).
/// * The calibration follows each followed prediction for the [`HORIZON`]
///   accesses after it was made, and measures which fraction of its blocks
///   were accessed (with its op) meanwhile.  A read prediction's blocks that a
///   cache of [`CACHED_BLOCKS`] blocks of the latest accesses would hold do
///   not count (naming them again gains nothing), and of a long range
///   at most [`SAMPLES`] blocks, evenly spaced, are followed.  Per class of
///   raw probability (tenths) it keeps the mean raw probability and the mean
///   fraction used.  The calibrated probability is the fraction used, pulled
///   towards the raw probability while a class has few predictions, made
///   non-decreasing (pool adjacent violators) and interpolated between the
///   classes' mean raw probabilities.  Untrained, it is the raw probability.
///
/// Its cost is per prediction and per access, not per predicted block.
pub(crate) struct HitTracker {
    ops: &'static [Op],
    /// Accesses observed so far.
    seen: u64,
    /// Whether each recent scored access was covered, oldest first.
    recent: VecDeque<bool>,
    recent_covered: usize,
    /// Predictions within their horizon, by id (oldest first).
    pending: VecDeque<Pending>,
    /// Id of the next prediction.
    next_id: u64,
    /// (op, first block) -> (id, end block) of the pending predictions
    /// starting there.
    starts: BTreeMap<(u8, u64), Vec<(u64, u64)>>,
    /// The blocks a cache of [`CACHED_BLOCKS`] would hold.
    touched: Recency,
    /// At least the length of the longest pending prediction (recomputed
    /// every [`HORIZON`] accesses), bounding the search for overlaps.
    longest: u64,
    /// `seen` at the last recomputation of `longest`.
    pruned_at: u64,
    /// `seen` at the last followed call, and the least number of accesses
    /// between two followed calls.
    followed_at: Option<u64>,
    follow_every: u64,
    classes: [Class; BINS],
    /// The calibration curve of `classes` ([`curve`]), unless stale.
    curve: Option<[(f64, f64); BINS]>,
    /// Ids of the pending predictions an access overlaps (kept to spare
    /// an allocation per access).
    ids: Vec<u64>,
}

/// Blocks of the cache a read prediction is judged against (64 MiB, what
/// [`eval`](crate::eval) and the kernel's default cache hold).
pub(crate) const CACHED_BLOCKS: usize = 16_384;

/// Most blocks of one prediction followed for the calibration.
const SAMPLES: u64 = 64;

/// A call is followed if this many accesses were observed since the last
/// followed call: callers that ask after each access (the daemon, `eval`)
/// name mostly the same blocks at consecutive calls, and following one call
/// in this many measures the same fractions at an eighth of the cost.
pub(crate) const FOLLOW_EVERY: u64 = 8;

/// The blocks a cache of [`CACHED_BLOCKS`] blocks of the latest accesses
/// (any op) holds.  The trackers of predictors that see the same accesses
/// (an ensemble's) share one: each access is recorded by the first of them
/// to observe it, the others find it recorded (one LRU update per block,
/// not one per tracker).
#[derive(Clone)]
pub(crate) struct Recency {
    blocks: Arc<Mutex<LruCache<u64, (), BuildHasherDefault<FxHasher>>>>,
    /// Accesses recorded (the number of the last recorded).
    recorded: Arc<AtomicU64>,
}

impl Recency {
    pub(crate) fn new() -> Recency {
        Recency {
            blocks: Arc::new(Mutex::new(LruCache::with_hasher(
                NonZeroUsize::new(CACHED_BLOCKS).expect("non-zero"),
                BuildHasherDefault::default(),
            ))),
            recorded: Arc::default(),
        }
    }

    /// Records that access number `seen` (from 1) touched blocks
    /// `[first, to)`, unless it is recorded.
    fn record(&self, seen: u64, first: u64, to: u64) {
        if self.recorded.load(Atomic::Relaxed) >= seen {
            return;
        }
        let mut blocks = self.blocks();
        // Under the lock: checked again.
        if self.recorded.load(Atomic::Relaxed) >= seen {
            return;
        }
        for b in first..to {
            blocks.put(b, ());
        }
        self.recorded.store(seen, Atomic::Relaxed);
    }

    fn blocks(&self) -> std::sync::MutexGuard<'_, LruCache<u64, (), BuildHasherDefault<FxHasher>>> {
        // A panic while it was held left a usable cache.
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A prediction being followed.
struct Pending {
    id: u64,
    /// `seen` when it was made.
    made: u64,
    raw: f64,
    op: Op,
    first: u64,
    /// Blocks it names (at most [`MAX_TRACKED_BLOCKS`] count).
    len: u64,
    /// The followed blocks are `first + k * step`, for `k` below `samples`.
    step: u64,
    samples: u32,
    /// Followed blocks that count (not recently accessed), and those of
    /// them accessed since, as bits `k`.
    novel: u64,
    used: u64,
}

impl Pending {
    /// Marks the followed blocks among `[from, to)` as accessed.
    fn access(&mut self, from: u64, to: u64) {
        let end = self.first + self.len;
        let (from, to) = (from.max(self.first), to.min(end));
        if from >= to {
            return;
        }
        let k0 = (from - self.first).div_ceil(self.step);
        let k1 = ((to - self.first).div_ceil(self.step)).min(u64::from(self.samples));
        for k in k0..k1 {
            self.used |= 1 << k;
        }
    }

    /// The fraction of its counted blocks accessed; `None` if none counts.
    fn fraction(&self) -> Option<f64> {
        let n = self.novel.count_ones();
        (n > 0).then(|| f64::from((self.used & self.novel).count_ones()) / f64::from(n))
    }
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
            recent: VecDeque::with_capacity(CONFIDENCE_WINDOW),
            recent_covered: 0,
            pending: VecDeque::new(),
            next_id: 0,
            starts: BTreeMap::new(),
            touched: Recency::new(),
            longest: 1,
            pruned_at: 0,
            followed_at: None,
            follow_every: FOLLOW_EVERY,
            classes: [Class::default(); BINS],
            curve: None,
            ids: Vec::new(),
        }
    }

    /// Shares `r` (trackers of predictors that see the same accesses).
    pub(crate) fn share(&mut self, r: &Recency) {
        self.touched = r.clone();
    }

    /// A tracker that follows every call (for tests of what it measures).
    #[cfg(test)]
    pub(crate) fn following_every_call(ops: &'static [Op]) -> HitTracker {
        HitTracker {
            follow_every: 1,
            ..HitTracker::new(ops)
        }
    }

    /// The pending predictions of `op` that overlap blocks `[from, to)`:
    /// (id, whether it names block `from`).
    fn overlapping(&self, op: Op, from: u64, to: u64) -> impl Iterator<Item = (u64, bool)> + '_ {
        let lo = (op as u8, from.saturating_sub(self.longest - 1));
        self.starts
            .range(lo..(op as u8, to))
            .flat_map(move |(&(_, start), ids)| {
                ids.iter()
                    .filter(move |&&(_, end)| end > from)
                    .map(move |&(id, end)| (id, start <= from && from < end))
            })
    }

    fn pending_mut(&mut self, id: u64) -> Option<&mut Pending> {
        let i = self.pending.binary_search_by_key(&id, |p| p.id).ok()?;
        Some(&mut self.pending[i])
    }

    /// Scores an access against the earlier predictions.
    pub(crate) fn observe(&mut self, a: &Access) {
        self.seen += 1;
        if let Some((first, n)) = access_blocks(a) {
            let to = first.saturating_add(n.min(MAX_TRACKED_BLOCKS));
            let mut covered = false;
            let mut ids = std::mem::take(&mut self.ids);
            ids.clear();
            ids.extend(self.overlapping(a.op, first, to).map(|(id, names_first)| {
                covered |= names_first;
                id
            }));
            if self.ops.contains(&a.op) {
                if self.recent.len() == CONFIDENCE_WINDOW && self.recent.pop_front() == Some(true) {
                    self.recent_covered -= 1;
                }
                self.recent.push_back(covered);
                self.recent_covered += usize::from(covered);
            }
            ids.sort_unstable();
            ids.dedup();
            for &id in &ids {
                if let Some(p) = self.pending_mut(id) {
                    p.access(first, to);
                }
            }
            self.ids = ids;
            self.touched.record(self.seen, first, to);
        }
        while self
            .pending
            .front()
            .is_some_and(|p| self.seen - p.made >= HORIZON as u64)
        {
            let p = self.pending.pop_front().expect("front");
            self.forget(&p);
            if let Some(used) = p.fraction() {
                let class = &mut self.classes[class_of(p.raw)];
                class.predictions += 1.0;
                class.raw_sum += p.raw;
                class.used_sum += used;
                if class.predictions >= DECAY_AT {
                    class.predictions /= 2.0;
                    class.raw_sum /= 2.0;
                    class.used_sum /= 2.0;
                }
                self.curve = None;
            }
        }
        if self.seen - self.pruned_at >= HORIZON as u64 {
            self.longest = self.pending.iter().map(|p| p.len).max().unwrap_or(1);
            self.pruned_at = self.seen;
        }
    }

    /// Takes `p` out of the index of starts.
    fn forget(&mut self, p: &Pending) {
        let key = (p.op as u8, p.first);
        if let Some(ids) = self.starts.get_mut(&key) {
            // Ids are in order, and the oldest or the newest goes.
            if ids.last().is_some_and(|&(id, _)| id == p.id) {
                ids.pop();
            } else if let Some(i) = ids.iter().position(|&(id, _)| id == p.id) {
                ids.remove(i);
            }
            if ids.is_empty() {
                self.starts.remove(&key);
            }
        }
    }

    /// Calibrates `raw` predictions (probabilities as the predictor's model
    /// gives them), keeps the `max` most probable, and follows them.
    pub(crate) fn finish(&mut self, raw: Vec<Prediction>, max: usize) -> Vec<Prediction> {
        let curve = self.curve();
        // Predictors give few distinct raw probabilities, often in a row.
        let mut last = (f64::NAN, 0.0);
        let mut out: Vec<(Prediction, f64)> = raw
            .into_iter()
            .map(|p| {
                let raw = p.probability.clamp(0.0, 1.0);
                if raw != last.0 {
                    last = (raw, interpolate(&curve, raw));
                }
                (
                    Prediction {
                        probability: last.1,
                        ..p
                    },
                    raw,
                )
            })
            .collect();
        let order = |(a, ra): &(Prediction, f64), (b, rb): &(Prediction, f64)| -> Ordering {
            b.probability
                .total_cmp(&a.probability)
                .then(rb.total_cmp(ra))
                .then(a.start.cmp(&b.start))
        };
        if out.len() > max && max > 0 {
            out.select_nth_unstable_by(max - 1, order);
        }
        out.truncate(max);
        out.sort_unstable_by(order);
        match self.followed_at {
            // Calls with no access since are superseded by this one.
            Some(at) if at == self.seen => {
                while self.pending.back().is_some_and(|p| p.made == self.seen) {
                    let p = self.pending.pop_back().expect("back");
                    self.forget(&p);
                }
            }
            Some(at) if self.seen - at < self.follow_every => {
                return out.into_iter().map(|(p, _)| p).collect();
            }
            _ => {}
        }
        self.followed_at = Some(self.seen);
        let touched = self.touched.blocks();
        for (p, raw) in &out {
            let Some((first, n)) = p.blocks() else {
                continue;
            };
            let len = n.min(MAX_TRACKED_BLOCKS);
            let step = len.div_ceil(SAMPLES);
            let samples = len.div_ceil(step) as u32;
            let mut novel = 0u64;
            for k in 0..u64::from(samples) {
                let b = first + k * step;
                let cached = p.op == Op::Read && touched.contains(&b);
                if !cached {
                    novel |= 1 << k;
                }
            }
            let id = self.next_id;
            self.next_id += 1;
            self.pending.push_back(Pending {
                id,
                made: self.seen,
                raw: *raw,
                op: p.op,
                first,
                len,
                step,
                samples,
                novel,
                used: 0,
            });
            self.starts
                .entry((p.op as u8, first))
                .or_default()
                .push((id, first + len));
            self.longest = self.longest.max(len);
        }
        out.into_iter().map(|(p, _)| p).collect()
    }

    /// The mean fraction of their blocks accessed, over the predictions
    /// that ran their horizon (recent ones weighing most: see [`DECAY_AT`]);
    /// one half before any.
    pub(crate) fn precision(&self) -> f64 {
        let (n, used) = self
            .classes
            .iter()
            .fold((0.0, 0.0), |(n, u), c| (n + c.predictions, u + c.used_sum));
        if n > 0.0 {
            used / n
        } else {
            0.5
        }
    }

    /// `raw` predictions with calibrated probabilities, not followed.
    pub(crate) fn calibrate(&self, raw: Vec<Prediction>) -> Vec<Prediction> {
        let curve = self.curve.unwrap_or_else(|| curve(&self.classes));
        raw.into_iter()
            .map(|p| Prediction {
                probability: interpolate(&curve, p.probability.clamp(0.0, 1.0)),
                ..p
            })
            .collect()
    }

    /// The calibration curve, computed again if predictions ran their
    /// horizon since.
    fn curve(&mut self) -> [(f64, f64); BINS] {
        *self.curve.get_or_insert_with(|| curve(&self.classes))
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
}

/// The calibration curve: (raw probability, calibrated probability)
/// points, both non-decreasing.
fn curve(classes: &[Class; BINS]) -> [(f64, f64); BINS] {
    let mut points = [(0.0, 0.0); BINS];
    // Pool-adjacent-violators over (value, weight) blocks.
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(BINS);
    for (k, c) in classes.iter().enumerate() {
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
    use crate::BLOCK_SECTORS;

    fn nothing() -> Access {
        Access {
            sectors: 0,
            ..read(0)
        }
    }

    #[test]
    fn covered_only_within_the_horizon_and_for_the_tracked_op() {
        let mut t = HitTracker::following_every_call(&[Op::Read]);
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
        let mut t = HitTracker::following_every_call(&[Op::Read]);
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
        assert!(t.starts.len() <= HORIZON);
        assert!(t.touched.blocks().len() <= CACHED_BLOCKS);
        assert!(t.pending.len() <= HORIZON);
    }

    #[test]
    fn untrained_calibration_keeps_raw_probabilities() {
        let mut t = HitTracker::following_every_call(&[Op::Read]);
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

    /// Asked after every access, a tracker follows one call in
    /// [`FOLLOW_EVERY`] and learns the same calibration as one that follows
    /// them all.
    #[test]
    fn following_one_call_in_eight_calibrates_alike() {
        let mut all = HitTracker::following_every_call(&[Op::Read]);
        let mut some = HitTracker::new(&[Op::Read]);
        let mut most_pending = 0;
        // A sequential reader; after each read, the next block (always read
        // next: raw 0.9) and two far blocks, one read 40 accesses later and
        // one never (raw 0.3).
        for i in 0..5_000u64 {
            let calls = [
                pred(i + 1, 1, 0.9, Op::Read),
                pred(10_000_000 + i, 1, 0.3, Op::Read),
                pred(20_000_000 + i, 1, 0.3, Op::Read),
            ];
            for t in [&mut all, &mut some] {
                t.finish(calls.to_vec(), 3);
                t.observe(&read(i + 1));
                if i >= 20 {
                    t.observe(&read(10_000_000 + i - 20));
                }
            }
            most_pending = most_pending.max(some.pending.len());
        }
        let ask = vec![pred(1, 1, 0.9, Op::Read), pred(2, 1, 0.3, Op::Read)];
        let (a, s) = (all.finish(ask.clone(), 2), some.finish(ask, 2));
        assert!((a[0].probability - 1.0).abs() < 0.02, "{a:?}");
        assert!((a[1].probability - 0.5).abs() < 0.02, "{a:?}");
        for (x, y) in a.iter().zip(&s) {
            assert!((x.probability - y.probability).abs() < 0.02, "{a:?} {s:?}");
        }
        // Two accesses per call: one call in 4 followed, 3 predictions each.
        let horizon_calls = HORIZON as u64 / 2 / (FOLLOW_EVERY / 2);
        assert!(
            most_pending as u64 <= 3 * (horizon_calls + 1),
            "{most_pending}"
        );
        assert!(
            all.pending.len() > 2 * most_pending,
            "{}",
            all.pending.len()
        );
    }

    /// Trackers sharing a [`Recency`] record each access once, and each
    /// judges its predictions against the blocks all have seen.
    #[test]
    fn shared_recency_records_each_access_once() {
        let r = Recency::new();
        let mut a = HitTracker::following_every_call(&[Op::Read]);
        let mut b = HitTracker::following_every_call(&[Op::Read]);
        a.share(&r);
        b.share(&r);
        for blk in [5, 6, 5] {
            a.observe(&read(blk));
            b.observe(&read(blk));
        }
        assert_eq!(r.recorded.load(Atomic::Relaxed), 3);
        let lru: Vec<u64> = r.blocks().iter().map(|(&k, _)| k).collect();
        assert_eq!(lru, [5, 6], "most recent first");
        b.finish(
            vec![pred(6, 1, 0.5, Op::Read), pred(500, 1, 0.5, Op::Read)],
            2,
        );
        let novel: Vec<(u64, u64)> = b.pending.iter().map(|p| (p.first, p.novel)).collect();
        assert_eq!(novel, [(6, 0), (500, 1)], "block 6 is cached");
    }

    #[test]
    fn calibration_learns_what_comes_true() {
        let mut t = HitTracker::following_every_call(&[Op::Read]);
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

        let mut t = HitTracker::following_every_call(&[Op::Read]);
        train(&mut t, 0.95, 4, 0, 300);
        train(&mut t, 0.05, 2, 2, 300);
        let out = t.finish(vec![pred(1, 1, 0.95, Op::Read)], 1);
        assert!(
            out[0].probability > 0.45 && out[0].probability < 0.55,
            "{out:?}"
        );

        let mut t = HitTracker::following_every_call(&[Op::Read]);
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
        let mut t = HitTracker::following_every_call(&[Op::Read]);
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
        let used = |t: &HitTracker| {
            t.pending
                .iter()
                .map(|p| p.used.count_ones())
                .collect::<Vec<_>>()
        };
        assert_eq!(used(&t), [1, 0, 0]);
        t.observe(&read(8));
        assert_eq!(used(&t), [2, 0, 1]);
    }

    #[test]
    fn each_block_counts_once_per_prediction() {
        let mut t = HitTracker::following_every_call(&[Op::Read]);
        for i in 0..500 {
            let base = 1000 * (i + 1);
            t.finish(vec![pred(base, 2, 0.5, Op::Read)], 1);
            for _ in 0..HORIZON {
                t.observe(&read(base)); // half of the prediction, again and again
            }
        }
        let out = t.finish(vec![pred(7, 2, 0.5, Op::Read)], 1);
        assert!((out[0].probability - 0.5).abs() < 0.01, "{out:?}");
        assert!((t.precision() - 0.5).abs() < 0.01, "{}", t.precision());
    }

    #[test]
    fn blocks_just_read_count_for_nothing() {
        // A predictor that names the block just read: a cache has it, so
        // however often it is read again, the prediction is not credited.
        let mut t = HitTracker::following_every_call(&[Op::Read]);
        for i in 0..300 {
            let b = 10 * (i + 1);
            t.observe(&read(b));
            t.finish(
                vec![pred(b, 1, 0.9, Op::Read), pred(b + 1, 1, 0.9, Op::Read)],
                2,
            );
            for _ in 0..HORIZON {
                t.observe(&read(b));
            }
        }
        // Only the other block counts, and it is never read.
        assert!(t.precision() < 0.01, "{}", t.precision());
        let out = t.finish(vec![pred(1, 1, 0.9, Op::Read)], 1);
        assert!(out[0].probability < 0.1, "{out:?}");
        // Writes are not a cache's: a write predicted again counts.
        let mut t = HitTracker::following_every_call(&[Op::Write]);
        let w = |b| Access {
            op: Op::Write,
            ..read(b)
        };
        for i in 0..300 {
            let b = 10 * (i + 1);
            t.observe(&w(b));
            t.finish(vec![pred(b, 1, 0.9, Op::Write)], 1);
            for _ in 0..HORIZON {
                t.observe(&w(b));
            }
        }
        assert!(t.precision() > 0.99, "{}", t.precision());
    }

    #[test]
    fn long_ranges_are_sampled_evenly() {
        let mut t = HitTracker::following_every_call(&[Op::Read]);
        // 256 blocks, the second half read: half of the samples.
        for i in 0..200u64 {
            let base = 10_000 * (i + 1);
            t.finish(vec![pred(base, 256, 0.5, Op::Read)], 1);
            for k in 0..HORIZON as u64 {
                t.observe(&Access {
                    sectors: 2 * BLOCK_SECTORS as u32,
                    ..read(base + 128 + 2 * k)
                });
            }
        }
        assert!((t.precision() - 0.5).abs() < 0.02, "{}", t.precision());
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
        self.rate_toward(0.5)
    }

    /// The rate smoothed towards `prior` (two blocks' worth) instead of
    /// one half: a region's towards the whole device's, say.
    pub(crate) fn rate_toward(&self, prior: f64) -> f64 {
        (self.used + 2.0 * prior) / (self.predicted + 2.0)
    }
}
