//! A heat map of a device: per region, how often it is read and written,
//! and so the probability that it is accessed within a horizon.
//!
//! [`HeatMap`] cuts the device into regions of [`REGION_SECTORS`] (1 MiB;
//! [`HeatMap::with_regions`] takes any multiple of a block: 4 KiB regions
//! find the hot blocks of a writer whose hot set is scattered) and keeps,
//! per region and op (reads; writes, write-zeroes and discards), a count
//! of accesses that decays with a half-life of trace time. For a region
//! accessed at a steady rate `r` per second the count settles at
//! `r * half_life / ln 2`, so the count gives the region's recent
//! rate; taking accesses as a Poisson process, the probability that the
//! region is accessed within the next `T` seconds is `1 - exp(-r * T)`.
//! Predictions of a model ([`HeatMap::predicted`]) raise a region's
//! probability to theirs while they are fresh (their horizon).
//!
//! The hottest regions, by that probability, are what `foresight heat`
//! prints, in the `start_sector length_sectors score` lines that
//! `foresight migrate --order` reads.

use rustc_hash::FxHashMap;

use crate::{access_blocks, Access, Op, Prediction, BLOCK_SECTORS};

/// Sectors per region (1 MiB).
pub const REGION_SECTORS: u64 = 2048;

/// Default half-life of the counts, seconds.
pub const HALF_LIFE_S: f64 = 60.0;

/// Regions kept (the coldest are dropped beyond this).
pub const MAX_REGIONS: usize = 65_536;

/// The counts of one region.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    reads: f64,
    writes: f64,
    /// Trace time the counts are decayed to, nanoseconds.
    at_ns: u64,
    /// Predictions' probabilities (reads, writes), valid until
    /// `predicted_until_ns`.
    predicted: [f64; 2],
    predicted_until_ns: u64,
}

/// One region's heat (see [`HeatMap::hottest`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegionHeat {
    /// First sector of the region.
    pub start: u64,
    /// Its length in sectors.
    pub sectors: u64,
    /// Recent reads per second.
    pub read_rate: f64,
    /// Recent writes (write-zeroes, discards) per second.
    pub write_rate: f64,
    /// A fresh prediction's probability of a read (0 if none).
    pub predicted_read: f64,
    /// A fresh prediction's probability of a write (0 if none).
    pub predicted_write: f64,
}

impl RegionHeat {
    /// The probability that the region is accessed (`op`: read or write;
    /// `None`: either) within `horizon_s` seconds.
    pub fn probability(&self, op: Option<Op>, horizon_s: f64) -> f64 {
        let predicted = match op {
            Some(Op::Read) => self.predicted_read,
            Some(_) => self.predicted_write,
            None => self.predicted_read.max(self.predicted_write),
        };
        (1.0 - (-self.rate(op) * horizon_s.max(0.0)).exp()).max(predicted)
    }

    /// Recent accesses per second (`op`: reads or writes; `None`: both).
    pub fn rate(&self, op: Option<Op>) -> f64 {
        match op {
            Some(Op::Read) => self.read_rate,
            Some(_) => self.write_rate,
            None => self.read_rate + self.write_rate,
        }
    }
}

/// See the [module docs](self).
pub struct HeatMap {
    half_life_ns: f64,
    region_sectors: u64,
    regions: FxHashMap<u64, Counts>,
    /// The latest trace time seen.
    now_ns: u64,
}

impl Default for HeatMap {
    fn default() -> Self {
        Self::new(HALF_LIFE_S)
    }
}

impl HeatMap {
    /// An empty map whose counts halve every `half_life_s` seconds.
    pub fn new(half_life_s: f64) -> Self {
        Self::with_regions(half_life_s, REGION_SECTORS)
    }

    /// An empty map of regions of `region_sectors` (rounded up to a whole
    /// number of blocks).
    pub fn with_regions(half_life_s: f64, region_sectors: u64) -> Self {
        HeatMap {
            half_life_ns: half_life_s.max(1e-3) * 1e9,
            region_sectors: region_sectors.max(1).div_ceil(BLOCK_SECTORS) * BLOCK_SECTORS,
            regions: FxHashMap::default(),
            now_ns: 0,
        }
    }

    /// Sectors per region.
    pub fn region_sectors(&self) -> u64 {
        self.region_sectors
    }

    fn decay(&self, c: &mut Counts, to_ns: u64) {
        if to_ns > c.at_ns {
            let f =
                (-((to_ns - c.at_ns) as f64) / self.half_life_ns * std::f64::consts::LN_2).exp();
            c.reads *= f;
            c.writes *= f;
            c.at_ns = to_ns;
        }
    }

    /// Counts one access (each region it touches counts it once).
    pub fn observe(&mut self, a: &Access) {
        let Some((first, n)) = access_blocks(a) else {
            return;
        };
        let write = match a.op {
            Op::Read => false,
            Op::Write | Op::WriteZeroes | Op::Discard => true,
            _ => return,
        };
        self.now_ns = self.now_ns.max(a.ts_ns);
        let per = self.region_sectors / BLOCK_SECTORS;
        let (r0, r1) = (first / per, (first + n - 1) / per);
        for r in r0..=r1.min(r0 + 1024) {
            let mut c = self.regions.get(&r).copied().unwrap_or(Counts {
                at_ns: a.ts_ns,
                ..Counts::default()
            });
            self.decay(&mut c, a.ts_ns);
            if write {
                c.writes += 1.0;
            } else {
                c.reads += 1.0;
            }
            self.regions.insert(r, c);
        }
        if self.regions.len() > MAX_REGIONS {
            self.prune();
        }
    }

    /// Notes a model's predictions, made now, for `horizon_ns` of trace
    /// time: each region they name is at least that probable meanwhile.
    pub fn predicted(&mut self, preds: &[Prediction], horizon_ns: u64) {
        let per = self.region_sectors;
        let until = self.now_ns.saturating_add(horizon_ns);
        for p in preds {
            if p.sectors == 0 || p.probability.is_nan() || p.probability <= 0.0 {
                continue;
            }
            let (r0, r1) = (p.start / per, (p.end() - 1) / per);
            for r in r0..=r1.min(r0 + 1024) {
                let c = self.regions.entry(r).or_insert(Counts {
                    at_ns: self.now_ns,
                    ..Counts::default()
                });
                if c.predicted_until_ns < self.now_ns {
                    c.predicted = [0.0; 2];
                }
                let k = usize::from(p.op != Op::Read);
                c.predicted[k] = c.predicted[k].max(p.probability.min(1.0));
                c.predicted_until_ns = c.predicted_until_ns.max(until);
            }
        }
    }

    /// Drops the coldest half of the regions.
    fn prune(&mut self) {
        let now = self.now_ns;
        let mut heat: Vec<(f64, u64)> = self
            .regions
            .iter()
            .map(|(&r, c)| {
                let mut c = *c;
                self.decay(&mut c, now);
                (c.reads + c.writes, r)
            })
            .collect();
        heat.sort_by(|a, b| b.0.total_cmp(&a.0));
        for &(_, r) in &heat[MAX_REGIONS / 2..] {
            self.regions.remove(&r);
        }
    }

    /// Regions with any heat.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether no region has any heat.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Every region's heat now (the latest trace time seen).
    pub fn regions(&self) -> Vec<RegionHeat> {
        let k = std::f64::consts::LN_2 / (self.half_life_ns / 1e9);
        self.regions
            .iter()
            .map(|(&r, c)| {
                let mut c = *c;
                self.decay(&mut c, self.now_ns);
                RegionHeat {
                    start: r * self.region_sectors,
                    sectors: self.region_sectors,
                    read_rate: c.reads * k,
                    write_rate: c.writes * k,
                    predicted_read: if c.predicted_until_ns >= self.now_ns {
                        c.predicted[0]
                    } else {
                        0.0
                    },
                    predicted_write: if c.predicted_until_ns >= self.now_ns {
                        c.predicted[1]
                    } else {
                        0.0
                    },
                }
            })
            .collect()
    }

    /// The `n` regions most likely to be accessed (`op`, or either) within
    /// `horizon_s` seconds, hottest first, with that probability.
    pub fn hottest(&self, op: Option<Op>, horizon_s: f64, n: usize) -> Vec<(RegionHeat, f64)> {
        hottest(self.regions(), op, horizon_s, n)
    }
}

/// Of `regions`, the `n` most likely to be accessed within `horizon_s`
/// seconds, hottest first (ties, such as regions certain to be accessed,
/// by their rate, then by position), with that probability.
pub fn hottest(
    regions: Vec<RegionHeat>,
    op: Option<Op>,
    horizon_s: f64,
    n: usize,
) -> Vec<(RegionHeat, f64)> {
    let mut v: Vec<(RegionHeat, f64)> = regions
        .into_iter()
        .map(|h| {
            let p = h.probability(op, horizon_s);
            (h, p)
        })
        .filter(|&(_, p)| p > 0.0)
        .collect();
    v.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then(b.0.rate(op).total_cmp(&a.0.rate(op)))
            .then(a.0.start.cmp(&b.0.start))
    });
    v.truncate(n);
    v
}

/// The lines `foresight migrate --order` reads: `start_sector
/// length_sectors score`, in the order given.
pub fn order_lines(hot: &[(RegionHeat, f64)]) -> String {
    let mut s = String::from("# start_sector length_sectors probability (foresight heat)\n");
    for (h, p) in hot {
        s.push_str(&format!("{} {} {:.6}\n", h.start, h.sectors, p));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t_s: f64, sector: u64, op: Op) -> Access {
        Access {
            ts_ns: (t_s * 1e9) as u64,
            sector,
            sectors: 8,
            op,
        }
    }

    #[test]
    fn rates_and_probabilities_follow_the_accesses() {
        let mut h = HeatMap::new(10.0);
        // Region 0 read 10 times a second, region 5 written once a second,
        // for 100 s (ten half-lives: the counts have settled).
        for i in 0..1000u64 {
            let t = i as f64 * 0.1;
            h.observe(&at(t, 8 * (i % 64), Op::Read));
            if i % 10 == 0 {
                h.observe(&at(t, 5 * REGION_SECTORS + 16, Op::Write));
            }
        }
        let regions = h.regions();
        let r0 = regions.iter().find(|r| r.start == 0).unwrap();
        let r5 = regions
            .iter()
            .find(|r| r.start == 5 * REGION_SECTORS)
            .unwrap();
        assert!((r0.read_rate - 10.0).abs() < 0.6, "{r0:?}");
        assert!(r0.write_rate < 1e-9);
        assert!((r5.write_rate - 1.0).abs() < 0.1, "{r5:?}");
        let p = r5.probability(Some(Op::Write), 1.0);
        assert!((p - (1.0 - (-1.0f64).exp())).abs() < 0.05, "{p}");
        assert_eq!(r5.probability(Some(Op::Read), 1.0), 0.0);
        let hot = h.hottest(None, 0.1, 10);
        assert_eq!(hot.len(), 2);
        assert_eq!(hot[0].0.start, 0);
        assert!(hot[0].1 > hot[1].1);
        // Written only: not among the regions likely read.
        assert_eq!(h.hottest(Some(Op::Read), 1.0, 10).len(), 1);
    }

    #[test]
    fn heat_fades_and_predictions_count_while_fresh() {
        let mut h = HeatMap::new(1.0);
        for i in 0..100 {
            h.observe(&at(i as f64 * 0.01, 0, Op::Read));
        }
        let hot = h.regions()[0].read_rate;
        // Ten half-lives later, with accesses elsewhere: 1/1024 of the rate.
        h.observe(&at(0.99 + 10.0, 100 * REGION_SECTORS, Op::Read));
        let cold = h.regions().into_iter().find(|r| r.start == 0).unwrap();
        let ratio = cold.read_rate / hot;
        assert!((ratio - 1.0 / 1024.0).abs() < 1e-4, "{ratio} {cold:?}");

        let p = Prediction {
            start: 7 * REGION_SECTORS,
            sectors: 2 * REGION_SECTORS,
            probability: 0.8,
            op: Op::Read,
        };
        h.predicted(&[p], 1_000_000_000);
        let top = h.hottest(Some(Op::Read), 0.001, 3);
        assert_eq!(
            top.iter()
                .map(|(r, _)| r.start / REGION_SECTORS)
                .collect::<Vec<_>>(),
            [7, 8, 100]
        );
        assert_eq!(top[0].1, 0.8);
        // Past its horizon the prediction no longer counts.
        h.observe(&at(13.0, 100 * REGION_SECTORS, Op::Read));
        let r7 = h
            .regions()
            .into_iter()
            .find(|r| r.start == 7 * REGION_SECTORS)
            .unwrap();
        assert_eq!(r7.predicted_read, 0.0);
    }

    #[test]
    fn order_lines_are_what_migrate_reads() {
        let mut h = HeatMap::new(10.0);
        for i in 0..50 {
            h.observe(&at(i as f64, 3 * REGION_SECTORS, Op::Read));
            h.observe(&at(i as f64, REGION_SECTORS * 9 + 8, Op::Write));
            h.observe(&at(i as f64, REGION_SECTORS * 9 + 16, Op::Write));
        }
        let text = order_lines(&h.hottest(None, 1.0, 10));
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with(&format!("{} {} ", 9 * REGION_SECTORS, REGION_SECTORS)),
            "{text}"
        );
        assert!(
            lines[1].starts_with(&format!("{} {} ", 3 * REGION_SECTORS, REGION_SECTORS)),
            "{text}"
        );
    }

    #[test]
    fn the_map_stays_bounded() {
        let mut h = HeatMap::new(10.0);
        for i in 0..(MAX_REGIONS as u64 + 10) {
            h.observe(&at(i as f64 * 1e-3, i * REGION_SECTORS, Op::Read));
        }
        assert!(h.len() <= MAX_REGIONS, "{}", h.len());
        assert!(!h.is_empty());
    }

    #[test]
    fn block_regions_find_scattered_hot_blocks() {
        // 64 regions of 1 MiB, each with one hot block (written ten times
        // a second) among cold ones (each written about once in 20 s):
        // every 1 MiB region looks alike; 4 KiB regions find the hot
        // blocks, hottest first, even where the horizon makes every one of
        // them certain.
        let hot = |r: u64| r * REGION_SECTORS + 8 * ((r * 37) % 256);
        let (mut coarse, mut fine) = (HeatMap::new(60.0), HeatMap::with_regions(60.0, 8));
        assert_eq!(fine.region_sectors(), 8);
        assert_eq!(HeatMap::with_regions(60.0, 5).region_sectors(), 8);
        let mut x = 1u64;
        for i in 0..20_000u64 {
            let t = i as f64 * 0.001;
            let r = i % 64;
            // One block in 64 written a bit more often: it ranks first.
            let mut a = at(t, hot(r), Op::Write);
            if i % 10 == 0 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                a = at(t, 8 * ((x >> 33) % (64 * 256)), Op::Write);
            } else if i % 7 == 0 {
                a.sector = hot(5);
            }
            coarse.observe(&a);
            fine.observe(&a);
        }
        let top = fine.hottest(Some(Op::Write), 60.0, 64);
        assert_eq!(top[0].0.start, hot(5), "{:?}", &top[..3]);
        let mut found: Vec<u64> = top.iter().map(|(h, _)| h.start).collect();
        found.sort_unstable();
        let mut want: Vec<u64> = (0..64).map(hot).collect();
        want.sort_unstable();
        assert_eq!(found, want);
        assert!(top.iter().all(|(h, _)| h.sectors == 8));
        // 1 MiB regions: all 64 about as hot, none tells the hot block.
        let coarse = coarse.hottest(Some(Op::Write), 60.0, 64);
        assert_eq!(coarse.len(), 64);
        assert!(coarse.iter().all(|(h, _)| h.sectors == REGION_SECTORS));
    }
}
