//! Sequential and constant-stride stream detection, like readahead.
//!
//! [`StridePredictor`] follows up to [`MAX_STREAMS`] streams of reads or of
//! writes (least recently continued evicted first).  A stream is in one of
//! two modes:
//!
//! * *contiguous*: each access starts where the previous one ended (plain
//!   sequential I/O, whatever the access sizes);
//! * *stride `d`*: each access starts `d` blocks after the previous one's
//!   start (`d` may be negative, at most [`MAX_STRIDE_BLOCKS`] either way).
//!
//! An access that starts exactly where a stream of its op expects continues
//! it.  Otherwise it is compared with the last 32 accesses: if one of them
//! (of the same op) ends where it starts, a contiguous stream begins; if two
//! of them and it are in arithmetic progression, a stride stream begins.
//! Random accesses thus rarely start a stream, and a stream that is not
//! continued within 256 accesses ends.
//!
//! The *run* of a stream is how many times it has been continued (a stride
//! stream is born with run 2, a contiguous one with run 1).  [`predict`]
//! emits, for each stream, its next `2^min(run, 4) - 1` accesses (so 1, 3, 7,
//! then 15, and at most 256 blocks), assuming each is as long as the last.
//! For contiguous streams they are grouped into ranges of 1, 2, 4 and 8
//! accesses.
//!
//! Probabilities come from how streams have behaved: for each run length
//! (1 to 15, and "15 or more"), the predictor counts how often a stream of
//! that run was continued or ended, and estimates the chance `p(r)` that a
//! stream of run `r` continues (Laplace-smoothed towards `p(r-1)`).  The
//! access `j` steps ahead of a stream of run `r` then has probability
//! `p(r) p(r+1) .. p(r+j-1)`, and a grouped range gets the mean over its
//! accesses, i.e. the expected fraction of its blocks that will be read.
//! Counts are halved now and then so that the estimates follow the
//! workload.  These raw probabilities are then calibrated against what the
//! predictor's earlier predictions achieved (see the [crate
//! docs](crate#probabilities-and-confidence)).
//!
//! [`predict`]: Predictor::predict

use std::collections::VecDeque;

use crate::track::HitTracker;
use crate::{access_blocks, Access, Op, Prediction, Predictor};

/// Most streams followed at once.
pub const MAX_STREAMS: usize = 16;

/// Largest stride, in blocks, either way.
pub const MAX_STRIDE_BLOCKS: u64 = 1 << 14;

/// Recent accesses new streams are looked for in.
const HISTORY: usize = 32;

/// A stream not continued within this many accesses ends.
const STALE_ACCESSES: u64 = 256;

/// Most blocks predicted ahead of one stream.
const MAX_WINDOW_BLOCKS: u64 = 256;

/// Run lengths with their own continuation statistics (the last one is
/// "this or more").
const RUN_BUCKETS: usize = 16;

/// Statistics of a run length are halved when they add up to this.
const DECAY_AT: u32 = 1 << 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Contiguous,
    Stride(i64),
}

/// A stream, by its last access.
#[derive(Clone, Debug)]
struct Stream {
    op: Op,
    mode: Mode,
    /// First block of the last access.
    start: u64,
    /// Blocks of the last access.
    len: u64,
    run: u32,
    /// Value of `StridePredictor::seen` at the last access.
    last_seen: u64,
}

impl Stream {
    /// First block of the access `j` steps ahead.
    fn step(&self, j: u64) -> Option<u64> {
        match self.mode {
            Mode::Contiguous => self.len.checked_mul(j)?.checked_add(self.start),
            Mode::Stride(d) => self
                .start
                .checked_add_signed(d.checked_mul(i64::try_from(j).ok()?)?),
        }
    }
}

/// A recent access: op, first block, blocks.
#[derive(Clone, Copy, Debug)]
struct Recent {
    op: Op,
    start: u64,
    len: u64,
}

/// How often streams of each run length were continued or ended.
#[derive(Clone, Debug, Default)]
struct RunStats {
    continued: [u32; RUN_BUCKETS],
    ended: [u32; RUN_BUCKETS],
}

fn bucket(run: u64) -> usize {
    run.min(RUN_BUCKETS as u64 - 1) as usize
}

impl RunStats {
    fn count(&mut self, run: u32, continued: bool) {
        let b = bucket(u64::from(run));
        if continued {
            self.continued[b] += 1;
        } else {
            self.ended[b] += 1;
        }
        if self.continued[b] + self.ended[b] >= DECAY_AT {
            self.continued[b] /= 2;
            self.ended[b] /= 2;
        }
    }

    /// Estimated chance that a stream of each run length is continued.
    fn continuation(&self) -> [f64; RUN_BUCKETS] {
        let mut p = [0.5; RUN_BUCKETS];
        for b in 1..RUN_BUCKETS {
            let prior = p[b - 1];
            let (c, e) = (f64::from(self.continued[b]), f64::from(self.ended[b]));
            p[b] = (c + 2.0 * prior) / (c + e + 2.0);
        }
        p
    }
}

/// Readahead-like detector of sequential and constant-stride streams (see
/// the [module docs](self)).
pub struct StridePredictor {
    streams: Vec<Stream>,
    history: VecDeque<Recent>,
    stats: RunStats,
    /// Accesses observed.
    seen: u64,
    /// `seen` at the last `predict`, and before that one's accesses: a
    /// call names the streams continued since the last call (the earlier
    /// calls named the others), calls with no access between naming the
    /// same.
    called_at: u64,
    since: u64,
    tracker: HitTracker,
}

impl Default for StridePredictor {
    fn default() -> Self {
        StridePredictor::new()
    }
}

impl StridePredictor {
    crate::track::shares_recency!();

    /// A predictor that has seen nothing.
    pub fn new() -> StridePredictor {
        StridePredictor {
            streams: Vec::with_capacity(MAX_STREAMS),
            history: VecDeque::with_capacity(HISTORY),
            stats: RunStats::default(),
            seen: 0,
            called_at: 0,
            since: 0,
            tracker: HitTracker::new(&[Op::Read, Op::Write]),
        }
    }

    /// Number of streams followed now.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Ends the streams not continued for too long.
    fn expire(&mut self) {
        let seen = self.seen;
        let stats = &mut self.stats;
        self.streams.retain(|s| {
            let live = seen - s.last_seen <= STALE_ACCESSES;
            if !live {
                stats.count(s.run, false);
            }
            live
        });
    }

    /// The stream an access of `op` at block `start` begins, as (mode, run).
    fn detect(&self, op: Op, start: u64) -> Option<(Mode, u32)> {
        let same_op = |r: &&Recent| r.op == op;
        if self
            .history
            .iter()
            .filter(same_op)
            .any(|r| r.start.checked_add(r.len) == Some(start))
        {
            return Some((Mode::Contiguous, 1));
        }
        // The starts of the recent accesses of `op`, oldest first: a
        // stride stream begins if two of them, x then y, and `start` are
        // in arithmetic progression (the latest such y).
        let mut starts = [0u64; HISTORY];
        let mut n = 0;
        for r in self.history.iter().filter(same_op) {
            starts[n] = r.start;
            n += 1;
        }
        let starts = &starts[..n];
        for iy in (0..n).rev() {
            let y = starts[iy];
            let d = i128::from(start) - i128::from(y);
            if d == 0 || d.unsigned_abs() > u128::from(MAX_STRIDE_BLOCKS) {
                continue;
            }
            let Ok(x) = u64::try_from(i128::from(y) - d) else {
                continue;
            };
            if starts[..iy].contains(&x) {
                return Some((Mode::Stride(d as i64), 2));
            }
        }
        None
    }
}

impl Predictor for StridePredictor {
    fn name(&self) -> &'static str {
        "stride"
    }

    fn observe(&mut self, access: &Access) {
        self.tracker.observe(access);
        self.seen += 1;
        let op = access.op;
        if !matches!(op, Op::Read | Op::Write) {
            return;
        }
        let Some((start, len)) = access_blocks(access) else {
            return;
        };
        self.expire();
        let seen = self.seen;
        if let Some(s) = self
            .streams
            .iter_mut()
            .find(|s| s.op == op && s.step(1) == Some(start))
        {
            self.stats.count(s.run, true);
            s.run = s.run.saturating_add(1);
            s.start = start;
            s.len = len;
            s.last_seen = seen;
        } else if let Some((mode, run)) = self.detect(op, start) {
            if self.streams.len() == MAX_STREAMS {
                let lru = (0..self.streams.len())
                    .min_by_key(|&i| self.streams[i].last_seen)
                    .expect("streams");
                let old = self.streams.swap_remove(lru);
                self.stats.count(old.run, false);
            }
            self.streams.push(Stream {
                op,
                mode,
                start,
                len,
                run,
                last_seen: seen,
            });
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Recent { op, start, len });
    }

    fn predict(&mut self, max: usize) -> Vec<Prediction> {
        if self.seen != self.called_at {
            self.since = self.called_at;
            self.called_at = self.seen;
        }
        let raw = self.candidates(self.since);
        self.tracker.finish(raw, max)
    }

    crate::track::scored_by_tracker!();
}

impl StridePredictor {
    /// The predictions of every stream continued after access `since`,
    /// with the probabilities of the model (in no order: the tracker orders
    /// them).
    fn candidates(&self, since: u64) -> Vec<Prediction> {
        let p = self.stats.continuation();
        let mut out = Vec::new();
        for s in self.streams.iter().filter(|s| s.last_seen > since) {
            let run = u64::from(s.run.max(1));
            let window = ((1u64 << run.min(4)) - 1).min((MAX_WINDOW_BLOCKS / s.len).max(1));
            // reach[j - 1]: probability that the access j steps ahead comes.
            let mut reach = Vec::with_capacity(window as usize);
            let mut r = 1.0;
            for j in 0..window {
                r *= p[bucket(run + j)];
                reach.push(r);
            }
            // Groups of steps lo..=hi, each one range.
            let groups: Vec<(u64, u64)> = match s.mode {
                Mode::Contiguous => (0..)
                    .map(|c| (1u64 << c, ((2u64 << c) - 1).min(window)))
                    .take_while(|&(lo, _)| lo <= window)
                    .collect(),
                Mode::Stride(_) => (1..=window).map(|j| (j, j)).collect(),
            };
            for (lo, hi) in groups {
                let n = hi - lo + 1;
                let probability =
                    reach[lo as usize - 1..hi as usize].iter().sum::<f64>() / n as f64;
                let range = s
                    .step(lo)
                    .and_then(|first| Prediction::of_blocks(first, s.len * n, probability, s.op));
                match range {
                    Some(pr) => out.push(pr),
                    None => break,
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth;
    use crate::testutil::feed;

    fn blocks(preds: &[Prediction]) -> Vec<(u64, u64)> {
        preds.iter().map(|p| p.blocks().unwrap()).collect()
    }

    /// A call names the streams continued since the last call (earlier
    /// calls named the others); calls with no access between name the
    /// same.
    #[test]
    fn a_call_names_the_streams_continued_since_the_last() {
        use crate::testutil::read;
        let mut p = StridePredictor::new();
        // Two sequential streams, at 1000 and at 5000, interleaved.
        for i in 0..6 {
            p.observe(&read(1000 + i));
            p.observe(&read(5000 + i));
        }
        let first = |preds: &[Prediction]| -> Vec<u64> {
            let mut v: Vec<u64> = blocks(preds).iter().map(|b| b.0).collect();
            v.sort_unstable();
            v
        };
        let both = p.predict(64);
        assert!(
            first(&both).contains(&1006) && first(&both).contains(&5006),
            "{both:?}"
        );
        // Only the stream at 1000 goes on: only its blocks are named.
        p.observe(&read(1006));
        let one = p.predict(64);
        assert!(!one.is_empty());
        assert!(
            blocks(&one).iter().all(|b| (1007..2000).contains(&b.0)),
            "{one:?}"
        );
        assert_eq!(p.predict(64), one, "no access since: the same");
        // Nothing continued since: nothing new to name.
        p.observe(&read(90_000));
        assert!(p.predict(64).is_empty());
    }

    #[test]
    fn nothing_before_two_contiguous_accesses() {
        let mut p = StridePredictor::new();
        assert!(p.predict(10).is_empty());
        p.observe(&synth::sequential(800, 1, 1)[0]);
        assert!(p.predict(10).is_empty());
        feed(&mut p, &synth::sequential(808, 1, 4));
        assert_eq!(blocks(&p.predict(10)), [(102, 1)]);
    }

    #[test]
    fn window_grows_with_the_run_and_is_grouped() {
        let mut p = StridePredictor::new();
        feed(&mut p, &synth::sequential(0, 100, 2));
        let preds = p.predict(10);
        assert_eq!(blocks(&preds), [(100, 2), (102, 4), (106, 8), (114, 16)]);
        assert!(preds
            .windows(2)
            .all(|w| w[0].probability > w[1].probability));
        assert!(preds.iter().all(|p| p.op == Op::Read));
        assert_eq!(blocks(&p.predict(2)), [(100, 2), (102, 4)]);
    }

    #[test]
    fn window_is_capped_in_blocks() {
        let mut p = StridePredictor::new();
        feed(&mut p, &synth::sequential(0, 6400, 64));
        assert_eq!(
            blocks(&p.predict(10)),
            [(6400, 64), (6464, 128), (6592, 64)]
        );
    }

    #[test]
    fn negative_stride_stops_at_block_zero() {
        let mut p = StridePredictor::new();
        feed(&mut p, &synth::strided(50 * 8, 5, -10)); // 50 40 30 20 10
        assert_eq!(blocks(&p.predict(20)), [(0, 1)]);
    }

    #[test]
    fn writes_make_write_streams() {
        let mut p = StridePredictor::new();
        feed(
            &mut p,
            &synth::with_op(synth::sequential(0, 10, 1), Op::Write),
        );
        let preds = p.predict(10);
        assert!(!preds.is_empty());
        assert!(preds.iter().all(|p| p.op == Op::Write));
        // Other ops neither start nor continue streams.
        let mut p = StridePredictor::new();
        feed(
            &mut p,
            &synth::with_op(synth::sequential(0, 10, 1), Op::Discard),
        );
        assert!(p.predict(10).is_empty());
    }

    #[test]
    fn streams_are_bounded_and_expire() {
        let mut p = StridePredictor::new();
        // 20 two-access streams, far apart.
        for i in 0..20u64 {
            feed(&mut p, &synth::sequential(i << 30, 2, 1));
        }
        assert_eq!(p.streams(), MAX_STREAMS);
        feed(&mut p, &synth::random(1, 300, 1 << 40));
        assert_eq!(p.streams(), 0);
        assert!(p.predict(10).is_empty());
    }

    #[test]
    fn ended_streams_lower_the_probability_of_new_ones() {
        let mut p = StridePredictor::new();
        feed(&mut p, &synth::sequential(0, 2, 1));
        let fresh = p.predict(1)[0].probability;
        for i in 1..=40u64 {
            feed(&mut p, &synth::sequential(i << 30, 2, 1));
            feed(
                &mut p,
                &synth::random(i, STALE_ACCESSES as usize + 1, 1 << 40),
            );
        }
        feed(&mut p, &synth::sequential(1 << 40, 2, 1));
        let after = p.predict(1)[0].probability;
        assert!(fresh >= 0.5 && after < 0.1, "{fresh} then {after}");
    }
}
