//! Offline replay of a trace through a prefetching cache model: what a
//! predictor would buy on a real trace, next to plain readahead.
//!
//! # The model
//!
//! The device is cut into 4 KiB blocks; the cache is an LRU of
//! `capacity` blocks. Replaying access `a`:
//!
//! * a **read** *hits* when every block it touches is cached when it
//!   arrives; its missing blocks are then fetched (demand) and all its
//!   blocks become most recently used;
//! * a **write**, write-zeroes or discard drops the blocks it touches (the
//!   kernel's cache is coherent by invalidation);
//! * then the **policy** prefetches: readahead-N the N blocks after each
//!   read's last block; a predictor observes the access and, every access,
//!   names ranges with probabilities; the read ranges at or above the
//!   threshold are prefetched (at most [`MAX_PREDICTION_BLOCKS`] blocks of
//!   one range). Prefetch is instant.
//!
//! Figures: **hit rate** = hits / reads; **volume** = blocks prefetched
//! that were not cached / blocks read; **precision** = prefetched blocks
//! read before their eviction / blocks prefetched; **coverage** = read
//! blocks that were there thanks to a prefetch / blocks read.  And what
//! limits a policy: each miss by the cause of its first missing block
//! ([`MissCauses`]).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Instant;

use lru::LruCache;

use crate::dirtyscore::{EpochScorer, WriteScore};
use crate::{access_blocks, Access, Op, Predictor};

/// Epoch length of the write scoring, by default (1 s of trace time).
pub const EPOCH_NS: u64 = 1_000_000_000;

/// Most blocks one predicted range may prefetch.
pub const MAX_PREDICTION_BLOCKS: u64 = 256;

/// Ranges asked of a predictor per access.
pub const MAX_PREDICTIONS: usize = 64;

/// What prefetches.
pub enum Policy {
    /// No prefetch.
    None,
    /// The given number of blocks after each read.
    Readahead(u64),
    /// A predictor's read predictions at or above a probability.
    Predictor {
        /// The model.
        model: Box<dyn Predictor>,
        /// The lowest probability prefetched.
        threshold: f64,
        /// Accesses between two `predict` calls (1: after every access; the
        /// daemon asks once per push interval).
        every: usize,
    },
}

impl Policy {
    /// A short name: `none`, `readahead-8`, `markov@0.30`.
    pub fn label(&self) -> String {
        match self {
            Policy::None => "none".into(),
            Policy::Readahead(n) => format!("readahead-{n}"),
            Policy::Predictor {
                model,
                threshold,
                every: 1,
            } => format!("{}@{threshold:.2}", model.name()),
            Policy::Predictor {
                model,
                threshold,
                every,
            } => format!("{}@{threshold:.2}/{every}", model.name()),
        }
    }
}

/// The figures of one replay.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimResult {
    /// Reads replayed.
    pub reads: u64,
    /// Reads that hit.
    pub hits: u64,
    /// Blocks the reads touched.
    pub read_blocks: u64,
    /// Blocks prefetched that were not cached.
    pub prefetched: u64,
    /// Prefetched blocks read before their eviction.
    pub used: u64,
    /// Nanoseconds spent in the predictor (observe and predict, training
    /// included), wall time: the thread CPU clock is a system call that
    /// costs more than some predictors, and on an idle host they agree.
    pub model_ns: u64,
    /// CPU nanoseconds the predictor spent training (part of `model_ns`).
    pub train_ns: u64,
    /// Accesses replayed.
    pub accesses: u64,
    /// Hit rate in each twentieth of the reads.
    pub hit_rate_over_time: Vec<f64>,
    /// The write predictions at or above the threshold, scored per epoch
    /// ([`dirtyscore`](crate::dirtyscore)); for no prefetch, the baseline
    /// that each epoch dirties what the last did.
    pub writes: WriteScore,
    /// The misses, by cause.
    pub misses_by: MissCauses,
}

/// Misses by the cause of the first block a read missed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MissCauses {
    /// The block was written since it was last cached, or never cached
    /// but written: the write dropped it (a cache that kept written data
    /// would have held it).
    #[serde(rename = "misses_after_write")]
    pub after_write: u64,
    /// The block was cached, and evicted for room.
    #[serde(rename = "misses_evicted")]
    pub evicted: u64,
    /// The block had never been cached nor written: its first access.
    #[serde(rename = "misses_first")]
    pub first: u64,
}

impl MissCauses {
    /// The shares of the misses after a write, evicted and first (0
    /// without a miss).
    pub fn shares(&self) -> [f64; 3] {
        let n = (self.after_write + self.evicted + self.first).max(1) as f64;
        [self.after_write, self.evicted, self.first].map(|m| m as f64 / n)
    }
}

/// What became of a block that is not cached (see [`MissCauses`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gone {
    Written,
    Evicted,
}

impl SimResult {
    /// Hits / reads.
    pub fn hit_rate(&self) -> f64 {
        ratio(self.hits, self.reads)
    }

    /// Misses (reads that did not hit).
    pub fn misses(&self) -> u64 {
        self.reads - self.hits
    }

    /// Prefetched blocks per block read.
    pub fn volume(&self) -> f64 {
        ratio(self.prefetched, self.read_blocks)
    }

    /// Prefetched blocks that were read.
    pub fn precision(&self) -> f64 {
        ratio(self.used, self.prefetched)
    }

    /// Read blocks a prefetch brought.
    pub fn coverage(&self) -> f64 {
        ratio(self.used, self.read_blocks)
    }

    /// Model time per access, training excluded (inference), nanoseconds.
    pub fn ns_per_access(&self) -> f64 {
        ratio(self.model_ns.saturating_sub(self.train_ns), self.accesses)
    }

    /// Training CPU time per access, nanoseconds.
    pub fn train_ns_per_access(&self) -> f64 {
        ratio(self.train_ns, self.accesses)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The cache: block -> whether it was prefetched and not read yet.
struct Cache {
    lru: LruCache<u64, bool>,
    /// Blocks written or evicted, and not cached since.
    gone: HashMap<u64, Gone>,
    out: SimResult,
}

impl Cache {
    /// Caches block `b` (not cached): `prefetched`, or read.
    fn insert(&mut self, b: u64, prefetched: bool) {
        self.gone.remove(&b);
        if let Some((old, _)) = self.lru.push(b, prefetched) {
            self.gone.insert(old, Gone::Evicted);
        }
    }

    /// Prefetches `first .. first + n` (the cached ones stay as they are).
    fn prefetch(&mut self, first: u64, n: u64) {
        for b in first..first.saturating_add(n) {
            if self.lru.contains(&b) {
                continue;
            }
            self.out.prefetched += 1;
            self.insert(b, true);
        }
    }

    /// Counts a miss whose first missing block is `b`.
    fn missed(&mut self, b: u64) {
        let m = &mut self.out.misses_by;
        match self.gone.get(&b) {
            Some(Gone::Written) => m.after_write += 1,
            Some(Gone::Evicted) => m.evicted += 1,
            None => m.first += 1,
        }
    }
}

/// Replays `accesses` with `policy` over an LRU of `capacity` blocks
/// (write predictions scored in epochs of [`EPOCH_NS`]).
pub fn simulate(accesses: &[Access], policy: &mut Policy, capacity: usize) -> SimResult {
    simulate_epochs(accesses, policy, capacity, EPOCH_NS)
}

/// [`simulate`], write predictions scored in epochs of `epoch_ns`.
pub fn simulate_epochs(
    accesses: &[Access],
    policy: &mut Policy,
    capacity: usize,
    epoch_ns: u64,
) -> SimResult {
    let mut scorer = match policy {
        Policy::None => EpochScorer::last_epoch(epoch_ns),
        _ => EpochScorer::new(epoch_ns),
    };
    let cap = NonZeroUsize::new(capacity.max(1)).expect("non-zero");
    let mut c = Cache {
        lru: LruCache::new(cap),
        gone: HashMap::new(),
        out: SimResult::default(),
    };
    let total_reads = accesses.iter().filter(|a| is_read(a)).count() as u64;
    let bucket = (total_reads / 20).max(1);
    let (mut b_reads, mut b_hits) = (0u64, 0u64);
    for a in accesses {
        c.out.accesses += 1;
        scorer.access(a);
        let blocks = access_blocks(a);
        if let (true, Some((first, n))) = (is_read(a), blocks) {
            let missing = (first..first + n).find(|b| !c.lru.contains(b));
            if let Some(b) = missing {
                c.missed(b);
            }
            let hit = missing.is_none();
            for b in first..first + n {
                match c.lru.get_mut(&b) {
                    Some(unused) => {
                        if *unused {
                            c.out.used += 1;
                            *unused = false;
                        }
                    }
                    None => c.insert(b, false),
                }
            }
            c.out.reads += 1;
            c.out.read_blocks += n;
            b_reads += 1;
            if hit {
                c.out.hits += 1;
                b_hits += 1;
            }
            if b_reads == bucket {
                c.out.hit_rate_over_time.push(ratio(b_hits, b_reads));
                (b_reads, b_hits) = (0, 0);
            }
        } else if let (Op::Write | Op::WriteZeroes | Op::Discard, Some((first, n))) = (a.op, blocks)
        {
            for b in first..first + n {
                c.lru.pop(&b);
                c.gone.insert(b, Gone::Written);
            }
        }
        match policy {
            Policy::None => {}
            Policy::Readahead(w) => {
                if let (true, Some((first, n))) = (is_read(a), blocks) {
                    c.prefetch(first + n, *w);
                }
            }
            Policy::Predictor {
                model,
                threshold,
                every,
            } => {
                let t = Instant::now();
                model.observe(a);
                let preds = if c.out.accesses.is_multiple_of((*every).max(1) as u64) {
                    model.predict(MAX_PREDICTIONS)
                } else {
                    Vec::new()
                };
                c.out.model_ns += t.elapsed().as_nanos() as u64;
                for p in preds {
                    if p.probability < *threshold {
                        continue;
                    }
                    if p.op != Op::Read {
                        if matches!(p.op, Op::Write | Op::WriteZeroes) {
                            scorer.predicted(p.start, p.sectors);
                        }
                        continue;
                    }
                    if let Some((first, n)) = p.blocks() {
                        c.prefetch(first, n.min(MAX_PREDICTION_BLOCKS));
                    }
                }
            }
        }
    }
    if b_reads > 0 {
        c.out.hit_rate_over_time.push(ratio(b_hits, b_reads));
    }
    if let Policy::Predictor { model, .. } = policy {
        c.out.train_ns = model.train_cpu_ns();
    }
    c.out.writes = scorer.finish();
    c.out
}

fn is_read(a: &Access) -> bool {
    a.op == Op::Read && a.sectors > 0
}

/// Readahead's hit rate at a prefetch volume, interpolated linearly between
/// the measured `(volume, hit rate)` points (sorted here); beyond the last
/// point, the last point's.
pub fn interpolate(points: &[(f64, f64)], volume: f64) -> f64 {
    let mut p: Vec<(f64, f64)> = points.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let Some(&first) = p.first() else {
        return 0.0;
    };
    if volume <= first.0 {
        return first.1;
    }
    for w in p.windows(2) {
        let ((v0, h0), (v1, h1)) = (w[0], w[1]);
        if volume <= v1 {
            if v1 - v0 <= f64::EPSILON {
                return h1.max(h0);
            }
            return h0 + (h1 - h0) * (volume - v0) / (v1 - v0);
        }
    }
    p.last().map_or(0.0, |l| l.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::read_blocks as read;
    use crate::trace::Access;

    #[test]
    fn sequential_reads_and_readahead() {
        let t: Vec<_> = (0..100).map(|b| read(b, 1)).collect();
        let none = simulate(&t, &mut Policy::None, 1000);
        assert_eq!((none.reads, none.hits, none.prefetched), (100, 0, 0));
        let ra = simulate(&t, &mut Policy::Readahead(4), 1000);
        // Every read after the first finds its block prefetched.
        assert_eq!(ra.hits, 99);
        assert_eq!(ra.prefetched, 103);
        assert_eq!(ra.used, 99);
        assert!((ra.coverage() - 0.99).abs() < 1e-9);
        assert!((ra.volume() - 1.03).abs() < 1e-9);
    }

    #[test]
    fn rereads_hit_writes_invalidate_and_lru_evicts() {
        let w = Access {
            op: Op::Write,
            ..read(1, 1)
        };
        let t = vec![
            read(0, 2),
            read(0, 2),
            w,
            read(0, 2),
            read(5, 1),
            read(6, 1),
            read(0, 1),
        ];
        let r = simulate(&t, &mut Policy::None, 3);
        // 2nd read hits; after the write block 1 is gone; the last read of
        // block 0 finds it evicted by blocks 5 and 6 (capacity 3).
        assert_eq!((r.reads, r.hits), (6, 1));
        // The misses by cause: blocks 0, 5, 6 read first; block 1 after
        // the write; block 0 evicted.
        let by = r.misses_by;
        assert_eq!((by.first, by.after_write, by.evicted), (3, 1, 1));
        assert_eq!(by.shares(), [0.2, 0.2, 0.6]);
        assert_eq!(MissCauses::default().shares(), [0.0; 3]);
        // A written block read later, never cached before: after a write.
        let t = vec![
            Access {
                op: Op::Write,
                ..read(9, 1)
            },
            read(9, 1),
            read(9, 1),
        ];
        let r = simulate(&t, &mut Policy::Readahead(1), 8);
        assert_eq!(
            r.misses_by,
            MissCauses {
                after_write: 1,
                evicted: 0,
                first: 0
            }
        );
    }

    #[test]
    fn interpolation() {
        let pts = [(0.0, 0.1), (1.0, 0.5), (2.0, 0.6)];
        assert!((interpolate(&pts, 0.5) - 0.3).abs() < 1e-9);
        assert!((interpolate(&pts, 1.5) - 0.55).abs() < 1e-9);
        assert_eq!(interpolate(&pts, 5.0), 0.6);
        assert_eq!(interpolate(&pts, -1.0), 0.1);
        assert_eq!(interpolate(&[], 1.0), 0.0);
    }

    #[test]
    fn a_predictor_prefetches_its_read_predictions() {
        // A sequential stream: the stride predictor learns it.
        let t: Vec<_> = (0..2000).map(|b| read(b, 1)).collect();
        let r = simulate(
            &t,
            &mut Policy::Predictor {
                model: crate::predictor_by_name("stride").unwrap(),
                threshold: 0.1,
                every: 1,
            },
            4096,
        );
        assert!(r.hit_rate() > 0.9, "{r:?}");
        assert!(r.precision() > 0.5, "{r:?}");
    }

    #[test]
    fn write_predictions_are_scored_per_epoch() {
        // A writer sweeping forward, one 4 KiB block each millisecond: the
        // stride predictor follows it into the next region before the
        // writer gets there; each epoch (100 ms, 100 blocks) dirties one
        // or two 1 MiB regions (256 blocks).
        let t: Vec<Access> = (0..5000u64)
            .map(|b| Access {
                ts_ns: b * 1_000_000,
                op: Op::Write,
                ..read(b, 1)
            })
            .collect();
        let stride = simulate_epochs(
            &t,
            &mut Policy::Predictor {
                model: crate::predictor_by_name("stride").unwrap(),
                threshold: 0.1,
                every: 1,
            },
            4096,
            100_000_000,
        );
        let base = simulate_epochs(&t, &mut Policy::None, 4096, 100_000_000);
        assert_eq!(stride.writes.epochs, 50);
        assert_eq!(base.writes.written, stride.writes.written);
        let (p, r) = (
            stride.writes.precision().unwrap(),
            stride.writes.recall().unwrap(),
        );
        assert!(p > 0.5 && r > 0.7, "{:?}", stride.writes);
        // The last epoch's regions: right while the writer stays in one.
        let (bp, br) = (
            base.writes.precision().unwrap(),
            base.writes.recall().unwrap(),
        );
        assert!(br <= r, "{:?} {:?}", base.writes, stride.writes);
        assert!(bp > 0.3, "{:?}", base.writes);
        // Readahead predicts no write.
        let ra = simulate_epochs(&t, &mut Policy::Readahead(8), 4096, 100_000_000);
        assert_eq!(ra.writes.precision(), None);
    }

    /// Predicts the block after the last read.
    struct Counting(u64, u64);

    impl Predictor for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn observe(&mut self, a: &Access) {
            self.1 = a.sector / 8 + 1;
        }
        fn predict(&mut self, _: usize) -> Vec<crate::Prediction> {
            self.0 += 1;
            crate::Prediction::of_blocks(self.1, 1, 1.0, Op::Read)
                .into_iter()
                .collect()
        }
        fn confidence(&self) -> f64 {
            0.0
        }
        fn precision(&self) -> f64 {
            0.0
        }
    }

    #[test]
    fn predictions_at_the_daemons_cadence() {
        let t: Vec<_> = (0..1000).map(|b| read(b, 1)).collect();
        let mut hits = Vec::new();
        for every in [1usize, 10] {
            let mut p = Policy::Predictor {
                model: Box::new(Counting(0, 0)),
                threshold: 0.5,
                every,
            };
            let r = simulate(&t, &mut p, 4096);
            assert_eq!(
                p.label(),
                if every == 1 {
                    "counting@0.50"
                } else {
                    "counting@0.50/10"
                }
            );
            hits.push(r.hits);
        }
        // Asked after every access, the next block is always there; asked
        // after every tenth, only after those (the last one's is not read).
        assert_eq!(hits, [999, 99]);
    }
}
