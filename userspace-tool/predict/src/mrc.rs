// SPDX-License-Identifier: GPL-2.0
//! Miss-ratio curves from a spatially sampled trace (SHARDS, Waldspurger et
//! al., FAST '15), and the allocation of one memory total between devices
//! by their curves (utility-based, with lookahead: Qureshi and Patt,
//! MICRO '06), as OSCA (ATC '20) does for cloud block storage.
//!
//! A block is sampled when the hash of its number falls under a threshold
//! (a fixed rate: every reference to a sampled block is seen, none to the
//! others); the reuse distance of a sampled reference, in sampled distinct
//! blocks, divided by the rate, estimates its LRU stack distance in the
//! whole trace. The histogram of those distances gives the miss ratio of
//! an LRU cache of any size. Memory: one entry per sampled block; with a
//! limit ([`Shards::with_limit`]), the rate falls as needed to keep at most
//! that many (SHARDS's fixed-size variant: the blocks of the highest hashes
//! leave, and the counts so far are scaled to the new rate).

use std::collections::{BTreeSet, HashMap};

/// Blocks (4 KiB) of one histogram bin.
pub const BIN_BLOCKS: u64 = 256;

/// A reuse-distance histogram built from sampled block references.
#[derive(Clone, Debug)]
pub struct Shards {
    /// Sampled when `hash(block) % MODULUS < threshold`.
    threshold: u64,
    rate: f64,
    /// The last time (sampled references so far) of each sampled block.
    last: HashMap<u64, u64>,
    /// One at the last time of each sampled block (a Fenwick tree over
    /// times `0..len`, renumbered when full).
    tree: Vec<u32>,
    now: u64,
    /// Reuse distances (scaled, in bins of [`BIN_BLOCKS`]); counts are
    /// fractional once the rate has fallen.
    hist: Vec<f64>,
    /// First references to sampled blocks.
    cold: f64,
    /// Every reference seen (sampled or not).
    refs: u64,
    sampled: f64,
    /// The most blocks tracked, and the tracked blocks by hash (only with
    /// a limit).
    limit: Option<usize>,
    by_hash: BTreeSet<(u64, u64)>,
}

const MODULUS: u64 = 1 << 24;

/// A 64-bit mix (splitmix64's finaliser): sampling must not follow the
/// layout of block numbers.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Shards {
    /// A histogram sampling `rate` (0 < rate <= 1) of the blocks.
    pub fn new(rate: f64) -> Self {
        let rate = rate.clamp(1.0 / MODULUS as f64, 1.0);
        Shards {
            threshold: ((rate * MODULUS as f64).round() as u64).max(1),
            rate,
            last: HashMap::new(),
            tree: vec![0; 1024],
            now: 0,
            hist: Vec::new(),
            cold: 0.0,
            refs: 0,
            sampled: 0.0,
            limit: None,
            by_hash: BTreeSet::new(),
        }
    }

    /// A histogram sampling `rate` of the blocks at first, and tracking at
    /// most `limit` blocks (the rate falls as needed).
    pub fn with_limit(rate: f64, limit: usize) -> Self {
        Shards {
            limit: Some(limit.max(1)),
            ..Self::new(rate)
        }
    }

    /// The blocks of the highest hashes leave until `limit` remain; the
    /// threshold falls to the hash of the last one out, and the counts
    /// made at the old rate are scaled to the new one.
    fn shed(&mut self, limit: usize) {
        let old = self.rate;
        while self.last.len() > limit {
            let Some((h, b)) = self.by_hash.pop_last() else {
                break;
            };
            if let Some(t) = self.last.remove(&b) {
                self.add(t, -1);
            }
            self.threshold = h;
        }
        self.rate = self.threshold as f64 / MODULUS as f64;
        let k = self.rate / old;
        for c in self.hist.iter_mut() {
            *c *= k;
        }
        self.cold *= k;
        self.sampled *= k;
    }

    /// The sampling rate.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// References seen, and those sampled (scaled to the current rate).
    pub fn counts(&self) -> (u64, u64) {
        (self.refs, self.sampled.round() as u64)
    }

    /// Blocks tracked (the memory it takes: one entry each).
    pub fn tracked(&self) -> usize {
        self.last.len()
    }

    fn add(&mut self, t: u64, v: i64) {
        let mut i = t as usize + 1;
        while i <= self.tree.len() {
            self.tree[i - 1] = (i64::from(self.tree[i - 1]) + v) as u32;
            i += i & i.wrapping_neg();
        }
    }

    /// Sampled blocks last referenced before time `t` (exclusive).
    fn before(&self, t: u64) -> u64 {
        let mut i = t as usize;
        let mut n = 0u64;
        while i > 0 {
            n += u64::from(self.tree[i - 1]);
            i &= i - 1;
        }
        n
    }

    /// Renumbers the live times from 0 when the tree is full.
    fn compact(&mut self) {
        let mut live: Vec<(u64, u64)> = self.last.iter().map(|(&b, &t)| (t, b)).collect();
        live.sort_unstable();
        self.tree = vec![0; (2 * live.len()).max(1024)];
        for (i, &(_, b)) in live.iter().enumerate() {
            self.last.insert(b, i as u64);
            self.add(i as u64, 1);
        }
        self.now = live.len() as u64;
    }

    /// A reference to `block`.
    pub fn access(&mut self, block: u64) {
        self.refs += 1;
        let h = mix(block) % MODULUS;
        if h >= self.threshold {
            return;
        }
        self.sampled += 1.0;
        if self.now == self.tree.len() as u64 {
            self.compact();
        }
        let t = self.now;
        self.now += 1;
        match self.last.insert(block, t) {
            None => {
                self.cold += 1.0;
                if let Some(limit) = self.limit {
                    self.by_hash.insert((h, block));
                    if self.last.len() > limit {
                        self.add(t, 1);
                        self.shed(limit);
                        return;
                    }
                }
            }
            Some(prev) => {
                // Distinct sampled blocks referenced since `prev`.
                let d = self.before(t) - self.before(prev + 1);
                self.add(prev, -1);
                let scaled = (d as f64 / self.rate) as u64;
                let bin = (scaled / BIN_BLOCKS) as usize;
                if bin >= self.hist.len() {
                    self.hist.resize(bin + 1, 0.0);
                }
                self.hist[bin] += 1.0;
            }
        }
        self.add(t, 1);
    }

    /// The references of a read of `sectors` sectors at `sector`: one per
    /// 4 KiB block it touches.
    pub fn access_sectors(&mut self, sector: u64, sectors: u64) {
        if sectors == 0 {
            return;
        }
        for b in sector / 8..=(sector + sectors - 1) / 8 {
            self.access(b);
        }
    }

    /// The curve: the miss ratio of an LRU cache of `bins` ×
    /// [`BIN_BLOCKS`] blocks, for `bins` = 0, 1, ..., `max_bins`.  With
    /// SHARDS_adj: the difference between the references a rate should
    /// sample and those it did goes to the smallest distances.
    pub fn curve(&self, max_bins: usize) -> Curve {
        let expected = self.refs as f64 * self.rate;
        let adj = expected - self.sampled;
        let total = self.sampled + adj;
        let mut ratios = Vec::with_capacity(max_bins + 1);
        if total <= 0.0 {
            ratios.resize(max_bins + 1, 1.0);
            return Curve {
                ratios,
                refs: self.refs,
            };
        }
        // Hits of a cache of `c` bins: distances below c bins.
        let mut hits = 0.0;
        ratios.push(1.0);
        for c in 1..=max_bins {
            hits += self.hist.get(c - 1).copied().unwrap_or(0.0);
            if c == 1 {
                hits += adj;
            }
            ratios.push((1.0 - hits / total).clamp(0.0, 1.0));
        }
        Curve {
            ratios,
            refs: self.refs,
        }
    }
}

/// A miss-ratio curve: `ratios[c]` for a cache of `c` bins of
/// [`BIN_BLOCKS`] blocks; `refs` the references it is over.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// Miss ratios by cache size in bins, from 0.
    pub ratios: Vec<f64>,
    /// References the ratios are over.
    pub refs: u64,
}

impl Curve {
    /// The miss ratio at `bins` (the last known one past the end).
    pub fn ratio(&self, bins: usize) -> f64 {
        self.ratios
            .get(bins)
            .or(self.ratios.last())
            .copied()
            .unwrap_or(1.0)
    }

    /// Hits of a cache of `bins` bins over the curve's references.
    pub fn hits(&self, bins: usize) -> f64 {
        self.refs as f64 * (1.0 - self.ratio(bins))
    }
}

/// Shares `total` bins between the curves' devices, each at least `min`:
/// repeatedly, the device whose next allocation of some size gains most
/// hits per bin (looking ahead over every size, so a curve flat before a
/// cliff still gets its cliff) gets it.
pub fn allocate(curves: &[Curve], total: usize, min: usize) -> Vec<usize> {
    let n = curves.len();
    let mut alloc = vec![0usize; n];
    if n == 0 {
        return alloc;
    }
    let mut left = total;
    for a in alloc.iter_mut() {
        let m = min.min(left);
        *a = m;
        left -= m;
    }
    while left > 0 {
        let mut best: Option<(f64, usize, usize)> = None;
        for (i, c) in curves.iter().enumerate() {
            let h0 = c.hits(alloc[i]);
            for k in 1..=left {
                let per = (c.hits(alloc[i] + k) - h0) / k as f64;
                if best.is_none_or(|(b, _, _)| per > b) {
                    best = Some((per, i, k));
                }
            }
        }
        match best {
            Some((per, i, k)) if per > 0.0 => {
                alloc[i] += k;
                left -= k;
            }
            // Nothing gains: the rest evenly.
            _ => {
                for j in 0..left {
                    alloc[j % n] += 1;
                }
                left = 0;
            }
        }
    }
    alloc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_distances_at_rate_one() {
        let mut s = Shards::new(1.0);
        // A loop over 512 blocks, twice: every second-round reference is at
        // distance 511 (2 bins of 256).
        for _ in 0..2 {
            for b in 0..512 {
                s.access(b);
            }
        }
        let c = s.curve(4);
        assert_eq!(s.counts(), (1024, 1024));
        // 512 cold misses; the reuses need 512 blocks (distance 511 is the
        // 512th stack position: bin 1).
        assert_eq!(c.ratio(0), 1.0);
        assert_eq!(c.ratio(1), 1.0);
        assert!((c.ratio(2) - 0.5).abs() < 1e-9, "{:?}", c.ratios);
        assert!((c.ratio(3) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn compaction_keeps_distances() {
        let mut s = Shards::new(1.0);
        let mut exact = Shards::new(1.0);
        exact.tree = vec![0; 1 << 16];
        for i in 0..20_000u64 {
            let b = (i * 7919) % 3000;
            s.access(b);
            exact.access(b);
        }
        assert_eq!(s.curve(20).ratios, exact.curve(20).ratios);
    }

    /// 200,000 references, Zipf-like: block i with weight 1/(i+1), over
    /// 20,000 blocks.
    fn zipf(seed: u64) -> impl Iterator<Item = u64> {
        let n = 20_000u64;
        let h: f64 = (1..=n).map(|i| 1.0 / i as f64).sum();
        let mut x = seed;
        (0..200_000).map(move |_| {
            x = mix(x);
            let u = (x >> 11) as f64 / (1u64 << 53) as f64 * h;
            // The inverse of the harmonic partial sums, roughly.
            (u.exp() - 1.0).min((n - 1) as f64) as u64
        })
    }

    /// The mean absolute difference of two curves over 0..=80 bins.
    fn mae(a: &Shards, b: &Shards) -> f64 {
        let (a, b) = (a.curve(80), b.curve(80));
        a.ratios
            .iter()
            .zip(&b.ratios)
            .map(|(x, y)| (x - y).abs())
            .sum::<f64>()
            / 81.0
    }

    #[test]
    fn a_limit_bounds_memory_and_keeps_the_curve() {
        let mut exact = Shards::new(1.0);
        let mut fixed = Shards::with_limit(0.5, 500);
        for b in zipf(777) {
            exact.access(b);
            fixed.access(b);
            assert!(fixed.tracked() <= 500);
        }
        assert!(fixed.rate() < 0.05, "the rate fell: {}", fixed.rate());
        let e = mae(&exact, &fixed);
        assert!(e < 0.03, "mean absolute error {e}");
    }

    #[test]
    fn sampling_estimates_the_curve() {
        let mut exact = Shards::new(1.0);
        let mut sampled = Shards::new(0.1);
        for b in zipf(12345) {
            exact.access(b);
            sampled.access(b);
        }
        let e = mae(&exact, &sampled);
        assert!(e < 0.02, "mean absolute error {e}");
        assert!(sampled.tracked() < exact.tracked() / 5);
    }

    #[test]
    fn allocation_follows_the_gain() {
        // Device 0 gains nothing from memory; device 1 halves its misses per
        // bin up to 4 bins; device 2 only past a cliff at 3 bins.
        let flat = Curve {
            ratios: vec![1.0; 9],
            refs: 1000,
        };
        let steep = Curve {
            ratios: vec![1.0, 0.5, 0.25, 0.125, 0.0625, 0.06, 0.06, 0.06, 0.06],
            refs: 1000,
        };
        let cliff = Curve {
            ratios: vec![1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
            refs: 1000,
        };
        let a = allocate(&[flat.clone(), steep.clone(), cliff.clone()], 8, 0);
        assert_eq!(a.iter().sum::<usize>(), 8);
        assert_eq!(a[0], 0, "{a:?}");
        assert_eq!(a[2], 3, "the cliff is worth 3 bins: {a:?}");
        let hits: f64 = [flat, steep, cliff]
            .iter()
            .zip(&a)
            .map(|(c, &b)| c.hits(b))
            .sum();
        assert!(hits >= 900.0 + 937.0, "{hits}");
        // Minimums first.
        let c = Curve {
            ratios: vec![1.0; 3],
            refs: 1,
        };
        let a = allocate(&[c.clone(), c.clone(), c], 4, 1);
        assert_eq!(a.iter().sum::<usize>(), 4);
        assert!(a.iter().all(|&x| x >= 1));
    }
}
