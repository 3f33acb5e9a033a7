//! Sequential streams, many at once, with windows that adapt: readahead as
//! it should be when several readers' requests are mixed.
//!
//! [`StreamPredictor`] follows up to [`STREAMS`] forward streams. A read
//! that starts where a stream is expected next (or inside what was already
//! predicted for it, or a little past it) continues that stream; any other
//! read starts a candidate stream. A stream's second read confirms it: from
//! then on the blocks ahead of it are predicted, up to its *window* past
//! its position, and only the part not predicted before (like the kernel's
//! asynchronous readahead, a stream is topped up as it advances). The
//! window starts at four times the read size, doubles each time a read
//! lands in predicted blocks (up to [`MAX_WINDOW`]), and halves when the
//! stream jumps over blocks predicted for it (waste). A stream not
//! continued is dropped when a new one needs its place (least recently
//! used first).
//!
//! # Probability
//!
//! The measured yield of stream predictions: the fraction of predicted
//! blocks that were read before their stream was dropped, both counts
//! decaying (Laplace-smoothed, starting at one half).

use crate::track::{HitTracker, Yield};
use crate::{access_blocks, Access, Op, Prediction, Predictor};

/// Streams followed at once.
pub const STREAMS: usize = 64;

/// Largest window, in blocks (1 MiB).
pub const MAX_WINDOW: u64 = 256;

/// A read this many blocks past a stream's position still continues it.
const SLACK: u64 = 8;

#[derive(Clone, Copy, Debug)]
struct Stream {
    /// Where the stream is expected next (block).
    next: u64,
    /// Predicted up to here (exclusive).
    until: u64,
    /// Blocks predicted and not read (from `next` to `until`).
    window: u64,
    confirmed: bool,
    /// Last use, in reads observed.
    used_at: u64,
}

/// See the [module docs](self).
pub struct StreamPredictor {
    streams: Vec<Stream>,
    /// Ranges to predict at the next `predict`.
    fresh: Vec<(u64, u64)>,
    reads: u64,
    yields: Yield,
    tracker: HitTracker,
}

impl Default for StreamPredictor {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamPredictor {
    crate::track::shares_recency!();

    /// An untrained model.
    pub fn new() -> Self {
        StreamPredictor {
            streams: Vec::with_capacity(STREAMS),
            fresh: Vec::new(),
            reads: 0,
            yields: Yield::default(),
            tracker: HitTracker::new(&[Op::Read]),
        }
    }

    /// The measured yield of stream predictions.
    pub fn yield_rate(&self) -> f64 {
        self.yields.rate()
    }

    fn read(&mut self, first: u64, n: u64) {
        self.reads += 1;
        let end = first + n;
        let found = self.streams.iter().position(|s| {
            first >= s.next.saturating_sub(n) && first <= s.until.max(s.next) + SLACK
        });
        match found {
            Some(i) => {
                let s = &mut self.streams[i];
                // Blocks read that had been predicted.
                let lo = first.max(s.next);
                let hi = end.min(s.until);
                let hit = hi.saturating_sub(lo);
                if s.confirmed && hit > 0 {
                    s.window = (s.window * 2).min(MAX_WINDOW);
                } else if s.confirmed && first > s.next && s.until > s.next {
                    // It skipped blocks predicted for it: waste.
                    s.window = (s.window / 2).max(n);
                }
                if !s.confirmed {
                    s.confirmed = true;
                    s.window = (4 * n).clamp(4, MAX_WINDOW);
                }
                s.next = s.next.max(end);
                s.used_at = self.reads;
                let want = s.next + s.window;
                let from = s.until.max(s.next);
                if want > from {
                    self.fresh.push((from, want - from));
                    s.until = want;
                    self.yields.predicted(want - from);
                }
                self.yields.used(hit);
            }
            None => {
                let s = Stream {
                    next: end,
                    until: end,
                    window: 0,
                    confirmed: false,
                    used_at: self.reads,
                };
                if self.streams.len() < STREAMS {
                    self.streams.push(s);
                } else {
                    // Drop the least recently used stream; its unread
                    // predictions were waste.
                    let (i, _) = self
                        .streams
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.used_at)
                        .expect("streams");
                    self.streams[i] = s;
                }
            }
        }
        // Merge streams that ran into each other.
        self.streams.sort_by_key(|s| s.next);
        self.streams.dedup_by(|b, a| {
            let same = b.next == a.next;
            if same {
                a.until = a.until.max(b.until);
                a.used_at = a.used_at.max(b.used_at);
                a.confirmed |= b.confirmed;
                a.window = a.window.max(b.window);
            }
            same
        });
    }
}

impl Predictor for StreamPredictor {
    fn name(&self) -> &'static str {
        "streams"
    }

    fn observe(&mut self, access: &Access) {
        self.tracker.observe(access);
        if access.op != Op::Read {
            return;
        }
        if let Some((first, n)) = access_blocks(access) {
            self.read(first, n);
        }
    }

    fn predict(&mut self, max: usize) -> Vec<Prediction> {
        let p = self.yield_rate();
        let raw = self
            .fresh
            .drain(..)
            .filter_map(|(first, n)| Prediction::of_blocks(first, n, p, Op::Read))
            .collect();
        self.tracker.finish(raw, max)
    }

    crate::track::scored_by_tracker!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::read_blocks as read;

    fn predicted(p: &mut StreamPredictor) -> Vec<(u64, u64)> {
        p.predict(64).iter().map(|x| x.blocks().unwrap()).collect()
    }

    #[test]
    fn a_stream_is_confirmed_then_topped_up_with_a_growing_window() {
        let mut p = StreamPredictor::new();
        p.observe(&read(100, 2));
        assert!(predicted(&mut p).is_empty());
        p.observe(&read(102, 2));
        // Confirmed: 4 x 2 blocks ahead.
        assert_eq!(predicted(&mut p), vec![(104, 8)]);
        // A read in the predicted blocks doubles the window (16) and tops up.
        p.observe(&read(104, 2));
        assert_eq!(predicted(&mut p), vec![(112, 10)]);
    }

    #[test]
    fn interleaved_streams_are_followed_each() {
        let mut p = StreamPredictor::new();
        let mut got = Vec::new();
        for i in 0..200u64 {
            for base in [0u64, 10_000, 50_000] {
                p.observe(&read(base + 4 * i, 4));
                got.extend(predicted(&mut p));
            }
        }
        for base in [0u64, 10_000, 50_000] {
            assert!(
                got.iter().any(|&(f, _)| f > base + 40 && f < base + 400),
                "{base}: {got:?}"
            );
        }
        // Long streams: most of what was predicted was read (the last
        // window of each was not).
        assert!(p.yield_rate() > 0.6, "{}", p.yield_rate());
    }

    #[test]
    fn random_reads_predict_nothing() {
        let mut p = StreamPredictor::new();
        let mut x = 12345u64;
        for _ in 0..1000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            p.observe(&read((x >> 20) % 1_000_000, 1));
            assert!(predicted(&mut p).len() <= 1);
        }
        assert!(p.yield_rate() < 0.5);
    }
}
