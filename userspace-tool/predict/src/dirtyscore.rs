//! Write predictions scored per epoch: of the regions a predictor said the
//! next epoch would dirty, how many it did (precision), and of the regions
//! it dirtied, how many were said (recall).
//!
//! Trace time is cut into epochs of a fixed length (a pre-copy round). The
//! regions ([`REGION_SECTORS`], 1 MiB) named by write predictions made
//! during epoch `k - 1` are the prediction for epoch `k`, and are scored
//! against the regions written (writes, write-zeroes, discards) during
//! epoch `k`, summed over the epochs. The baseline is what an iterative
//! pre-copy assumes without a model: epoch `k` dirties what epoch `k - 1`
//! did ([`EpochScorer::last_epoch`]).

use rustc_hash::FxHashSet;

use crate::heat::REGION_SECTORS;
use crate::{Access, Op};

/// Region-epochs predicted, written and both, summed over the epochs.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct WriteScore {
    /// Epochs scored.
    pub epochs: u64,
    /// Regions predicted dirty (summed over the epochs).
    pub predicted: u64,
    /// Regions dirtied.
    pub written: u64,
    /// Regions predicted and dirtied.
    pub hits: u64,
}

impl WriteScore {
    /// Hits / predicted; `None` if nothing was predicted.
    pub fn precision(&self) -> Option<f64> {
        (self.predicted > 0).then(|| self.hits as f64 / self.predicted as f64)
    }

    /// Hits / written; `None` if nothing was written.
    pub fn recall(&self) -> Option<f64> {
        (self.written > 0).then(|| self.hits as f64 / self.written as f64)
    }
}

/// See the [module docs](self).
pub struct EpochScorer {
    epoch_ns: u64,
    /// Start of the current epoch (trace time); `None` before any access.
    start_ns: Option<u64>,
    /// The prediction for the current epoch, and the one being made for
    /// the next.
    for_this: FxHashSet<u64>,
    for_next: FxHashSet<u64>,
    written: FxHashSet<u64>,
    /// The baseline: the next epoch is predicted to dirty what this did.
    last_epoch: bool,
    score: WriteScore,
}

impl EpochScorer {
    /// A scorer of a model's write predictions, epochs of `epoch_ns`.
    pub fn new(epoch_ns: u64) -> Self {
        EpochScorer {
            epoch_ns: epoch_ns.max(1),
            start_ns: None,
            for_this: FxHashSet::default(),
            for_next: FxHashSet::default(),
            written: FxHashSet::default(),
            last_epoch: false,
            score: WriteScore::default(),
        }
    }

    /// The baseline scorer: each epoch predicted to dirty what the last did.
    pub fn last_epoch(epoch_ns: u64) -> Self {
        EpochScorer {
            last_epoch: true,
            ..Self::new(epoch_ns)
        }
    }

    fn close(&mut self) {
        let hits = self.for_this.intersection(&self.written).count() as u64;
        self.score.epochs += 1;
        self.score.predicted += self.for_this.len() as u64;
        self.score.written += self.written.len() as u64;
        self.score.hits += hits;
        self.for_this = if self.last_epoch {
            std::mem::take(&mut self.written)
        } else {
            std::mem::take(&mut self.for_next)
        };
        self.written.clear();
    }

    /// Counts `a` in its epoch (closing those it is past).
    pub fn access(&mut self, a: &Access) {
        let start = *self.start_ns.get_or_insert(a.ts_ns);
        if a.ts_ns >= start.saturating_add(self.epoch_ns) {
            self.close();
            let passed = (a.ts_ns - start) / self.epoch_ns;
            if passed >= 2 {
                // The next epoch had no access: what was predicted for it
                // did not happen; the ones after it predicted nothing.
                self.close();
                self.score.epochs += passed - 2;
            }
            self.start_ns = Some(start + passed * self.epoch_ns);
        }
        if matches!(a.op, Op::Write | Op::WriteZeroes | Op::Discard) && a.sectors > 0 {
            let end = a.sector.saturating_add(u64::from(a.sectors) - 1);
            for r in a.sector / REGION_SECTORS..=end / REGION_SECTORS {
                self.written.insert(r);
            }
        }
    }

    /// Notes a prediction, made now, that sectors `start..start + sectors`
    /// will be written: a prediction for the next epoch.
    pub fn predicted(&mut self, start: u64, sectors: u64) {
        if sectors == 0 {
            return;
        }
        let end = start.saturating_add(sectors - 1);
        for r in start / REGION_SECTORS..=(end / REGION_SECTORS).min(start / REGION_SECTORS + 4096)
        {
            self.for_next.insert(r);
        }
    }

    /// The score, the last (partial) epoch included.
    pub fn finish(mut self) -> WriteScore {
        if self.start_ns.is_some() {
            self.close();
        }
        self.score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(t_ms: u64, region: u64) -> Access {
        Access {
            ts_ns: t_ms * 1_000_000,
            sector: region * REGION_SECTORS + 8,
            sectors: 8,
            op: Op::Write,
        }
    }

    #[test]
    fn predictions_are_scored_against_the_next_epoch() {
        let mut s = EpochScorer::new(100_000_000); // 100 ms
        s.access(&w(0, 1));
        s.predicted(2 * REGION_SECTORS, 2 * REGION_SECTORS); // regions 2, 3
        s.access(&w(150, 2)); // epoch 2: 2 written (hit), 3 not
        s.access(&w(160, 5)); // 5 not predicted
        s.predicted(5 * REGION_SECTORS, 8); // for epoch 3
        s.access(&w(450, 5)); // epoch 5 (3, 4 empty): not the next epoch
        let sc = s.finish();
        assert_eq!(sc.epochs, 5);
        assert_eq!((sc.predicted, sc.written, sc.hits), (3, 4, 1), "{sc:?}");
        assert_eq!(sc.precision(), Some(1.0 / 3.0));
        assert_eq!(sc.recall(), Some(0.25));
    }

    #[test]
    fn the_last_epoch_baseline() {
        let mut s = EpochScorer::last_epoch(100_000_000);
        for e in 0..10u64 {
            // Region 7 every epoch, region 100 + e once.
            s.access(&w(e * 100, 7));
            s.access(&w(e * 100 + 1, 100 + e));
        }
        let sc = s.finish();
        assert_eq!(sc.epochs, 10);
        assert_eq!(sc.written, 20);
        // From the second epoch on, 7 predicted and hit, 100 + e - 1 missed.
        assert_eq!((sc.predicted, sc.hits), (18, 9));
        assert_eq!(WriteScore::default().precision(), None);
    }
}
