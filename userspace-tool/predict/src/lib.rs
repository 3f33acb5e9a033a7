//! Access traces and online access predictors of the foresight helper.
//!
//! * [`trace`]: the [`Access`] record the kernel sends, the 24-byte kernel
//!   record layout and the text trace-file format.
//! * [`Predictor`]: an online predictor, trained access by access from the
//!   live trace, that names the sector ranges likely to be accessed soon.
//!   Two are provided: [`StridePredictor`] (sequential and constant-stride
//!   streams, like readahead) and [`MarkovPredictor`] (successors of blocks
//!   and of block deltas, for repeated irregular sequences such as a boot).
//!   [`Ensemble`] runs several and [`combine`]s their predictions.
//! * [`synth`]: synthetic traces of known structure, and [`eval`]: an
//!   evaluation harness that replays a trace through a predictor.
//!
//! Predictors work in blocks of [`BLOCK_SECTORS`] sectors (4 KiB); an access
//! touches every block it overlaps.  Predictions are in sectors, always whole
//! blocks.  They are not clipped to the device (see [`Prediction::clip`]).
//!
//! # Probabilities and confidence
//!
//! The probability of a prediction is meant as the expected fraction of its
//! blocks that will be accessed, with its op, within the next
//! [`eval::HORIZON`] (64) accesses after the `predict` call — the measure of
//! [`eval`]'s precision.  Each predictor's model gives a raw probability;
//! every predictor then follows its own predictions for a horizon, learns
//! per class of raw probability which fraction came true, and reports that
//! (monotone in the raw probability, and equal to it until there is
//! evidence).  [`Predictor::confidence`] is the fraction of the last 256
//! accesses the predictor scores (reads and writes; reads only for
//! [`MarkovPredictor`]) whose first block it had predicted within the
//! previous 64 accesses: [`eval`]'s coverage, measured live.  Both only
//! learn from `predict` calls, so a predictor that is never asked stays
//! uncalibrated and at confidence 0.  The horizon counts accesses, not time;
//! several `predict` calls with no access in between count as the last one
//! only, so calling it on a timer while the device is idle costs nothing.

#![warn(missing_docs)]

pub mod cachesim;
pub mod dirtyscore;
pub mod engine;
pub mod eval;
pub mod gru;
pub mod heat;
pub mod import;
pub mod lookahead;
pub mod markov;
pub mod mrc;
pub mod readback;
pub mod region;
pub mod streams;
pub mod stride;
pub mod synth;
pub mod trace;
mod track;

#[cfg(test)]
mod testutil;

use std::collections::BinaryHeap;

pub use markov::MarkovPredictor;
pub use stride::StridePredictor;
pub use trace::{Access, Op};

/// Sectors (512 bytes) per block (4 KiB), the unit the predictors work in.
pub const BLOCK_SECTORS: u64 = 8;

/// The blocks an access touches, as (first block, number of blocks); `None`
/// for an access of no sectors.
pub fn access_blocks(a: &Access) -> Option<(u64, u64)> {
    span_blocks(a.sector, u64::from(a.sectors))
}

/// The blocks a sector range overlaps, as (first block, number of blocks).
fn span_blocks(sector: u64, sectors: u64) -> Option<(u64, u64)> {
    if sectors == 0 {
        return None;
    }
    let first = sector / BLOCK_SECTORS;
    let last = sector.saturating_add(sectors - 1) / BLOCK_SECTORS;
    Some((first, last - first + 1))
}

/// A predicted range: sectors likely to be accessed soon.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub sectors: u64,
    /// Probability in 0..=1 (see [`Predictor::predict`]).
    pub probability: f64,
    /// [`Op::Read`] or [`Op::Write`].
    pub op: Op,
}

impl Prediction {
    /// A prediction of `blocks` blocks from block `first`; `None` if the
    /// range does not fit in `u64` sectors or is empty.
    pub fn of_blocks(first: u64, blocks: u64, probability: f64, op: Op) -> Option<Prediction> {
        let start = first.checked_mul(BLOCK_SECTORS)?;
        let sectors = blocks.checked_mul(BLOCK_SECTORS)?;
        start.checked_add(sectors)?;
        (sectors > 0).then_some(Prediction {
            start,
            sectors,
            probability,
            op,
        })
    }

    /// One past the last sector (saturating).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.sectors)
    }

    /// The blocks this prediction overlaps, as (first block, number of
    /// blocks); `None` if it is empty.
    pub fn blocks(&self) -> Option<(u64, u64)> {
        span_blocks(self.start, self.sectors)
    }

    /// This prediction cut to a device of `device_sectors` sectors; `None`
    /// if nothing of it is on the device.
    pub fn clip(self, device_sectors: u64) -> Option<Prediction> {
        let end = self.end().min(device_sectors);
        (self.start < end).then_some(Prediction {
            sectors: end - self.start,
            ..self
        })
    }
}

/// A predictor's live scores (see [`Predictor::scores`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// The predictor's name.
    pub name: &'static str,
    /// Its live coverage ([`Predictor::confidence`]).
    pub coverage: f64,
    /// Its live precision ([`Predictor::precision`]).
    pub precision: f64,
}

/// An online access predictor.
pub trait Predictor: Send {
    /// Short name: `"stride"`, `"markov"`, ...
    fn name(&self) -> &'static str;
    /// Learns from one access, in trace order.
    fn observe(&mut self, access: &Access);
    /// Ranges likely to be accessed next, most probable first, at most `max`,
    /// each with a probability in 0..=1 (calibrated: roughly the fraction of such
    /// predictions that come true).
    ///
    /// See the [crate docs](crate#probabilities-and-confidence) for what the
    /// probability means precisely.  Ranges of one call may overlap (e.g. two
    /// streams over the same blocks); [`combine`] merges them.
    fn predict(&mut self, max: usize) -> Vec<Prediction>;
    /// How well this predictor's recent predictions came true, 0..=1: the
    /// fraction of recent accesses it had predicted (its live coverage).
    fn confidence(&self) -> f64;
    /// The fraction of the blocks it predicted that were then accessed
    /// within the horizon, recent predictions weighing most (its live
    /// precision); one half before any prediction has run its horizon.
    fn precision(&self) -> f64;
    /// The live scores of this predictor, or of each of its members, best
    /// coverage first.
    fn scores(&self) -> Vec<Score> {
        vec![Score {
            name: self.name(),
            coverage: self.confidence(),
            precision: self.precision(),
        }]
    }
    /// CPU time spent training so far, in nanoseconds, for a predictor
    /// that trains apart from [`observe`](Self::observe)'s bookkeeping
    /// (it is part of `observe`'s time).
    fn train_cpu_ns(&self) -> u64 {
        0
    }
    /// Stops (`true`) or resumes training apart from `observe` (a
    /// training thread's work: an idle device's model need not learn);
    /// false if the predictor has no such training.
    fn pause_training(&mut self, _paused: bool) -> bool {
        false
    }
    /// Whether its probabilities are calibrated over a horizon longer than
    /// [`eval::HORIZON`] accesses (the reads of what was written, much
    /// later): an [`Ensemble`] then passes them on as they are instead of
    /// calibrating them over its own horizon.
    fn long_horizon(&self) -> bool {
        false
    }
}

/// Names accepted by [`predictor_by_name`].
pub const PREDICTOR_NAMES: [&str; 10] = [
    "stride",
    "markov",
    "region",
    "streams",
    "lookahead",
    "lookbehind",
    "readback",
    "gru",
    "ensemble",
    "auto",
];

/// A new predictor by name, one of [`PREDICTOR_NAMES`] (`"ensemble"` is
/// stride and markov, see [`Ensemble::standard`]; `"auto"` is what the
/// daemon serves, see [`Ensemble::auto`]).
pub fn predictor_by_name(name: &str) -> Option<Box<dyn Predictor>> {
    match name {
        "stride" => Some(Box::new(StridePredictor::new())),
        "markov" => Some(Box::new(MarkovPredictor::new())),
        "region" => Some(Box::new(region::RegionPredictor::new())),
        "streams" => Some(Box::new(streams::StreamPredictor::new())),
        "lookahead" => Some(Box::new(lookahead::LookaheadPredictor::new())),
        "lookbehind" => Some(Box::new(lookahead::LookaheadPredictor::backward())),
        "readback" => Some(Box::new(readback::ReadbackPredictor::new())),
        "gru" => Some(Box::new(gru::GruPredictor::new())),
        "ensemble" => Some(Box::new(Ensemble::standard())),
        "auto" => Some(Box::new(Ensemble::auto())),
        _ => None,
    }
}

/// Probability as used by [`combine`]: NaN and negatives become 0, more than
/// 1 becomes 1.
fn sane_probability(p: f64) -> f64 {
    if p > 0.0 {
        p.min(1.0)
    } else {
        0.0
    }
}

/// Merges the predictions of several predictors: overlapping/duplicate ranges
/// of the same op keep the highest probability; sorted by probability, at most `max`.
///
/// Precisely: for each op, every sector gets the highest probability of the
/// ranges that cover it, and the result is the maximal runs of sectors with
/// the same op and probability.  So the result's ranges do not overlap, and a
/// range partly covered by a more probable one keeps only its remainder.
/// Ties in probability are ordered by op, then start.  Empty ranges are
/// dropped; probabilities are clamped to 0..=1 (NaN counts as 0).
pub fn combine(sets: Vec<Vec<Prediction>>, max: usize) -> Vec<Prediction> {
    let mut out = merge(sets);
    let order = |a: &Prediction, b: &Prediction| {
        b.probability
            .total_cmp(&a.probability)
            .then((a.op as u8).cmp(&(b.op as u8)))
            .then(a.start.cmp(&b.start))
    };
    if out.len() > max && max > 0 {
        out.select_nth_unstable_by(max - 1, order);
    }
    out.truncate(max);
    out.sort_unstable_by(order);
    out
}

/// [`combine`]'s ranges, by op and start, all of them (for a caller that
/// orders them itself).
pub(crate) fn merge(sets: Vec<Vec<Prediction>>) -> Vec<Prediction> {
    // (op, start, end, probability bits), by op and start.  The bits of
    // non-negative floats order like the floats.
    let mut ranges: Vec<(u8, u64, u64, u64)> = sets
        .into_iter()
        .flatten()
        .filter(|p| p.end() > p.start)
        .map(|p| {
            let bits = sane_probability(p.probability).to_bits();
            (p.op as u8, p.start, p.end(), bits)
        })
        .collect();
    ranges.sort_unstable_by_key(|&(op, start, _, _)| (op, start));
    let mut out: Vec<Prediction> = Vec::new();
    // A sweep per op: the ranges covering `pos` in a max-heap of
    // (probability, end), those that ended dropped when they come on top.
    let mut active = BinaryHeap::new();
    let mut i = 0;
    while i < ranges.len() {
        let op = ranges[i].0;
        let mut pos = ranges[i].1;
        active.clear();
        loop {
            while let Some(&(_, _, end, bits)) = ranges.get(i).filter(|r| r.0 == op && r.1 <= pos) {
                active.push((bits, end));
                i += 1;
            }
            while active.peek().is_some_and(|&(_, end)| end <= pos) {
                active.pop();
            }
            let next = ranges.get(i).filter(|r| r.0 == op).map(|r| r.1);
            let Some(&(bits, end)) = active.peek() else {
                match next {
                    Some(start) => {
                        pos = start;
                        continue;
                    }
                    None => break,
                }
            };
            let to = next.map_or(end, |start| start.min(end));
            let (probability, op) = (f64::from_bits(bits), Op::from_u8(op));
            match out.last_mut() {
                Some(last)
                    if last.op == op && last.end() == pos && last.probability == probability =>
                {
                    last.sectors += to - pos
                }
                _ => out.push(Prediction {
                    start: pos,
                    sectors: to - pos,
                    probability,
                    op,
                }),
            }
            pos = to;
        }
    }
    out
}

/// Several predictors as one: each observes every access, and their
/// predictions are [`combine`]d.
pub struct Ensemble {
    name: &'static str,
    members: Vec<Box<dyn Predictor>>,
    tracker: track::HitTracker,
}

impl Ensemble {
    /// An ensemble of `members`.
    pub fn new(members: Vec<Box<dyn Predictor>>) -> Ensemble {
        Ensemble {
            name: "ensemble",
            members,
            tracker: track::HitTracker::new(&[Op::Read, Op::Write]),
        }
    }

    /// The online choice the daemon serves (`"auto"`): a calibrated mix of
    /// [`lookahead::LookaheadPredictor`] (readahead whose every distance
    /// carries its measured yield) and its backward twin
    /// ([`lookahead::LookaheadPredictor::backward`]), [`streams::StreamPredictor`],
    /// [`StridePredictor`] and [`readback::ReadbackPredictor`] (the reads
    /// of what was written).  Each member's probabilities are its measured
    /// precision per class, and the mix keeps, block by block, the most
    /// probable: above a threshold it pushes whichever member has proved
    /// itself there, and readahead's blocks only as far as readahead pays
    /// on the workload.
    ///
    /// [`MarkovPredictor`] is not a member (it is in [`Ensemble::standard`]
    /// and served by name): on the shared real traces (`foresight eval`,
    /// 64 MiB) it added a third to `auto`'s inference time, and its
    /// predictions, right about one time in seven on the cloud volumes,
    /// pushed more reused blocks out of the cache than they brought in:
    /// with it `auto` had more misses at equal volume on four traces of
    /// six, fewer on none.
    pub fn auto() -> Ensemble {
        let r = track::Recency::new();
        let mut auto = Ensemble {
            name: "auto",
            ..Ensemble::new(vec![
                Box::new(lookahead::LookaheadPredictor::new().sharing(&r)),
                Box::new(lookahead::LookaheadPredictor::backward().sharing(&r)),
                Box::new(streams::StreamPredictor::new().sharing(&r)),
                Box::new(StridePredictor::new().sharing(&r)),
                Box::new(readback::ReadbackPredictor::new()),
            ])
        };
        auto.tracker.share(&r);
        auto
    }

    /// A [`StridePredictor`] and a [`MarkovPredictor`] (sharing their
    /// record of the recently accessed blocks).
    pub fn standard() -> Ensemble {
        let r = track::Recency::new();
        let mut e = Ensemble::new(vec![
            Box::new(StridePredictor::new().sharing(&r)),
            Box::new(MarkovPredictor::new().sharing(&r)),
        ]);
        e.tracker.share(&r);
        e
    }

    /// The member predictors.
    pub fn members(&self) -> &[Box<dyn Predictor>] {
        &self.members
    }
}

impl Predictor for Ensemble {
    fn name(&self) -> &'static str {
        self.name
    }

    fn observe(&mut self, access: &Access) {
        self.tracker.observe(access);
        for m in &mut self.members {
            m.observe(access);
        }
    }

    /// Asks every member for `max` predictions and [`combine`]s them;
    /// those of members with a [long horizon](Predictor::long_horizon)
    /// keep their own probabilities.
    fn predict(&mut self, max: usize) -> Vec<Prediction> {
        let (mut short, mut long) = (Vec::new(), Vec::new());
        for m in &mut self.members {
            let p = m.predict(max);
            if m.long_horizon() {
                long.push(p);
            } else {
                short.push(p);
            }
        }
        let mut out = self.tracker.finish(merge(short), max);
        if long.iter().any(|p| !p.is_empty()) {
            long.push(out);
            out = combine(long, max);
        }
        out
    }

    crate::track::scored_by_tracker!();

    /// Each member's scores.
    fn scores(&self) -> Vec<Score> {
        let mut s: Vec<Score> = self.members.iter().flat_map(|m| m.scores()).collect();
        s.sort_by(|a, b| b.coverage.total_cmp(&a.coverage));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(start: u64, sectors: u64, probability: f64, op: Op) -> Prediction {
        Prediction {
            start,
            sectors,
            probability,
            op,
        }
    }

    #[test]
    fn combine_keeps_the_highest_probability_of_duplicates() {
        let out = combine(
            vec![
                vec![p(0, 8, 0.3, Op::Read), p(64, 8, 0.9, Op::Read)],
                vec![p(0, 8, 0.7, Op::Read), p(0, 8, 0.2, Op::Read)],
            ],
            10,
        );
        assert_eq!(out, [p(64, 8, 0.9, Op::Read), p(0, 8, 0.7, Op::Read)]);
    }

    #[test]
    fn combine_splits_partial_overlaps_and_merges_equal_neighbours() {
        let out = combine(
            vec![
                vec![p(0, 100, 0.5, Op::Read), p(40, 20, 0.8, Op::Read)],
                vec![p(100, 50, 0.5, Op::Read), p(10, 10, 0.1, Op::Read)],
            ],
            10,
        );
        assert_eq!(
            out,
            [
                p(40, 20, 0.8, Op::Read),
                p(0, 40, 0.5, Op::Read),
                p(60, 90, 0.5, Op::Read),
            ]
        );
    }

    #[test]
    fn combine_keeps_ops_apart_orders_and_truncates() {
        let sets = vec![
            vec![p(0, 8, 0.4, Op::Write), p(0, 8, 0.4, Op::Read)],
            vec![p(8, 8, 0.6, Op::Write), p(16, 0, 1.0, Op::Read)],
            vec![p(24, 8, 0.4, Op::Read), p(32, 8, f64::NAN, Op::Read)],
            vec![p(40, 8, 7.0, Op::Read)],
        ];
        let all = combine(sets.clone(), 100);
        assert_eq!(
            all,
            [
                p(40, 8, 1.0, Op::Read),
                p(8, 8, 0.6, Op::Write),
                p(0, 8, 0.4, Op::Read),
                p(24, 8, 0.4, Op::Read),
                p(0, 8, 0.4, Op::Write),
                p(32, 8, 0.0, Op::Read),
            ]
        );
        assert_eq!(combine(sets.clone(), 3), all[..3]);
        assert_eq!(combine(sets, 0), []);
        assert_eq!(combine(Vec::new(), 5), []);
    }

    #[test]
    fn prediction_helpers() {
        assert_eq!(
            Prediction::of_blocks(2, 3, 0.5, Op::Read),
            Some(p(16, 24, 0.5, Op::Read))
        );
        assert_eq!(Prediction::of_blocks(2, 0, 0.5, Op::Read), None);
        assert_eq!(Prediction::of_blocks(u64::MAX / 4, 1, 0.5, Op::Read), None);
        assert_eq!(p(5, 10, 0.5, Op::Read).blocks(), Some((0, 2)));
        assert_eq!(p(16, 8, 0.5, Op::Read).blocks(), Some((2, 1)));
        assert_eq!(p(16, 0, 0.5, Op::Read).blocks(), None);
        assert_eq!(
            p(90, 20, 0.5, Op::Read).clip(100),
            Some(p(90, 10, 0.5, Op::Read))
        );
        assert_eq!(p(100, 20, 0.5, Op::Read).clip(100), None);
        assert_eq!(
            p(0, 20, 0.5, Op::Read).clip(100),
            Some(p(0, 20, 0.5, Op::Read))
        );
    }

    #[test]
    fn auto_scores_each_member_live() {
        let mut a = Ensemble::auto();
        // One sequential reader: readahead's near bands and the stream both
        // prove themselves; the other members' scores are there too.
        for i in 0..3000u64 {
            a.observe(&Access {
                ts_ns: i * 1000,
                sector: i * BLOCK_SECTORS,
                sectors: BLOCK_SECTORS as u32,
                op: Op::Read,
            });
            a.predict(64);
        }
        let s = a.scores();
        let names: Vec<&str> = s.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), 5, "{s:?}");
        for n in ["lookahead", "lookbehind", "streams", "stride", "readback"] {
            assert!(names.contains(&n), "{s:?}");
        }
        let la = s.iter().find(|s| s.name == "lookahead").unwrap();
        assert!(la.coverage > 0.9 && la.precision > 0.5, "{s:?}");
        assert!(a.confidence() > 0.9, "{}", a.confidence());
        assert!(
            s.windows(2).all(|w| w[0].coverage >= w[1].coverage),
            "{s:?}"
        );
    }

    /// Sharing the members' record of the recently accessed blocks changes
    /// nothing of what `auto` and `ensemble` predict.
    #[test]
    fn ensembles_share_their_recency_and_predict_the_same() {
        let apart = |auto: bool| {
            let mut members: Vec<Box<dyn Predictor>> = vec![Box::new(StridePredictor::new())];
            if auto {
                members.insert(0, Box::new(lookahead::LookaheadPredictor::new()));
                members.insert(1, Box::new(lookahead::LookaheadPredictor::backward()));
                members.insert(2, Box::new(streams::StreamPredictor::new()));
                members.push(Box::new(readback::ReadbackPredictor::new()));
            } else {
                members.push(Box::new(MarkovPredictor::new()));
            }
            Ensemble {
                name: if auto { "auto" } else { "ensemble" },
                ..Ensemble::new(members)
            }
        };
        for (mut shared, mut apart) in [
            (Ensemble::auto(), apart(true)),
            (Ensemble::standard(), apart(false)),
        ] {
            // A sequential run, a scattered cycle of 300 blocks read again
            // and again (Markov names blocks read recently), writes of one
            // region.
            let mut rng = synth::SplitMix64::new(7);
            let cycle: Vec<u64> = (0..300).map(|_| rng.below(50_000)).collect();
            for i in 0..6000u64 {
                let x = rng.next_u64();
                let block = match i % 3 {
                    0 => i / 3,
                    1 => cycle[(i / 3) as usize % cycle.len()],
                    _ => 100_000 + (x >> 40) % 64,
                };
                let a = Access {
                    ts_ns: i * 1000,
                    sector: block * BLOCK_SECTORS,
                    sectors: BLOCK_SECTORS as u32 * (1 + (x >> 60) as u32 % 3),
                    op: if i % 7 == 0 { Op::Write } else { Op::Read },
                };
                shared.observe(&a);
                apart.observe(&a);
                assert_eq!(
                    shared.predict(64),
                    apart.predict(64),
                    "{} at access {i}",
                    shared.name()
                );
            }
            assert_eq!(shared.scores(), apart.scores());
        }
    }

    #[test]
    fn predictors_by_name() {
        for name in PREDICTOR_NAMES {
            assert_eq!(predictor_by_name(name).unwrap().name(), name);
        }
        assert!(predictor_by_name("oracle").is_none());
    }
}
