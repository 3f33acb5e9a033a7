// SPDX-License-Identifier: GPL-2.0
//! The policy engine's decision: how a host's cache total is shared between
//! its devices, by a switchable policy, with hysteresis, and why.
//!
//! - `fair`: equal shares;
//! - `latency`: shares in proportion to the time each device's reads spent
//!   waiting over the last interval (reads × mean latency);
//! - `throughput`: most hits per MiB, from each device's miss-ratio curve
//!   ([`crate::mrc`]), memory where the marginal gain is highest;
//! - `predicted`: shares in proportion to each model's forecast of its
//!   device's read rate over the next interval, so a burst is served
//!   before it arrives.
//!
//! Every device keeps at least `min_mb`; a new split is applied only if it
//! moves at least `hysteresis_mb` for some device (a resize empties a
//! cache, so small moves cost more than they gain).

use crate::mrc::{allocate, Curve, BIN_BLOCKS};
use std::fmt;
use std::str::FromStr;

/// A sharing policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Equal shares.
    Fair,
    /// By the time reads waited.
    Latency,
    /// By the hits each next MiB gains (miss-ratio curves).
    Throughput,
    /// By the forecast read rate.
    Predicted,
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fair" => Ok(Policy::Fair),
            "latency" => Ok(Policy::Latency),
            "throughput" => Ok(Policy::Throughput),
            "predicted" => Ok(Policy::Predicted),
            _ => Err(format!(
                "{s}: the policies are fair, latency, throughput and predicted"
            )),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Fair => "fair",
            Policy::Latency => "latency",
            Policy::Throughput => "throughput",
            Policy::Predicted => "predicted",
        })
    }
}

/// What the engine measured of one device over the last interval.
#[derive(Clone, Debug, Default)]
pub struct Device {
    /// Its device-mapper name.
    pub name: String,
    /// Its cache now, MiB.
    pub cache_mb: u64,
    /// Reads over the interval.
    pub reads: u64,
    /// Their mean latency (µs).
    pub mean_read_us: f64,
    /// Its read miss-ratio curve (bins of [`BIN_BLOCKS`] blocks).
    pub curve: Option<Curve>,
    /// The model's forecast of its reads per second over the next interval.
    pub forecast_reads_per_s: f64,
}

/// The engine's settings.
#[derive(Clone, Copy, Debug)]
pub struct Engine {
    /// How the total is shared.
    pub policy: Policy,
    /// The total (MiB).
    pub total_mb: u64,
    /// Each device's least share (MiB).
    pub min_mb: u64,
    /// The least move worth a resize (MiB).
    pub hysteresis_mb: u64,
}

/// A split and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// MiB per device, in the devices' order.
    pub cache_mb: Vec<u64>,
    /// Whether it differs enough from the current split to apply.
    pub apply: bool,
    /// Why, for the log.
    pub reason: String,
}

const BIN_MB: u64 = (BIN_BLOCKS * 4096) >> 20;

/// `total` shared in proportion to `weights` (equally if they are all 0),
/// each at least `min`, in whole MiB, summing to `total` when it covers the
/// minimums.
fn proportional(weights: &[f64], total: u64, min: u64) -> Vec<u64> {
    let n = weights.len() as u64;
    if n == 0 {
        return vec![];
    }
    let min = min.min(total / n);
    let spare = total - min * n;
    let sum: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
    let share = |w: f64| {
        if sum > 0.0 && w.is_finite() && w > 0.0 {
            w / sum
        } else if sum > 0.0 {
            0.0
        } else {
            1.0 / n as f64
        }
    };
    let mut out: Vec<u64> = weights
        .iter()
        .map(|&w| min + (spare as f64 * share(w)) as u64)
        .collect();
    // What rounding left goes to the largest weights first.
    let left = total.saturating_sub(out.iter().sum());
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| share(weights[b]).total_cmp(&share(weights[a])));
    for &i in order.iter().cycle().take(left as usize) {
        out[i] += 1;
    }
    out
}

impl Engine {
    /// The split of `total_mb` between `devs` by the policy.
    pub fn split(&self, devs: &[Device]) -> Vec<u64> {
        match self.policy {
            Policy::Fair => proportional(&vec![1.0; devs.len()], self.total_mb, self.min_mb),
            Policy::Latency => proportional(
                &devs
                    .iter()
                    .map(|d| d.reads as f64 * d.mean_read_us)
                    .collect::<Vec<_>>(),
                self.total_mb,
                self.min_mb,
            ),
            Policy::Predicted => proportional(
                &devs
                    .iter()
                    .map(|d| d.forecast_reads_per_s)
                    .collect::<Vec<_>>(),
                self.total_mb,
                self.min_mb,
            ),
            Policy::Throughput => {
                let flat = Curve {
                    ratios: vec![1.0],
                    refs: 0,
                };
                let curves: Vec<Curve> = devs
                    .iter()
                    .map(|d| d.curve.clone().unwrap_or_else(|| flat.clone()))
                    .collect();
                let bins = (self.total_mb / BIN_MB) as usize;
                let min = (self.min_mb / BIN_MB) as usize;
                allocate(&curves, bins, min)
                    .into_iter()
                    .map(|b| b as u64 * BIN_MB)
                    .collect()
            }
        }
    }

    /// The split, whether it is worth applying, and why.
    pub fn decide(&self, devs: &[Device]) -> Decision {
        let split = self.split(devs);
        let moves: Vec<i64> = split
            .iter()
            .zip(devs)
            .map(|(&n, d)| n as i64 - d.cache_mb as i64)
            .collect();
        let largest = moves.iter().map(|m| m.unsigned_abs()).max().unwrap_or(0);
        let apply = largest >= self.hysteresis_mb.max(1);
        let mut why: Vec<String> = Vec::new();
        for ((d, &m), &n) in devs.iter().zip(&moves).zip(&split) {
            if m == 0 {
                continue;
            }
            let detail = match self.policy {
                Policy::Fair => String::new(),
                Policy::Latency => format!(
                    ", {:.0} ms waited",
                    d.reads as f64 * d.mean_read_us / 1000.0
                ),
                Policy::Predicted => format!(", {:.0} reads/s forecast", d.forecast_reads_per_s),
                Policy::Throughput => d.curve.as_ref().map_or(String::new(), |c| {
                    let bins = (n / BIN_MB) as usize;
                    format!(", miss ratio {:.3} at {n} MiB", c.ratio(bins))
                }),
            };
            why.push(format!("{} {:+} MiB to {n}{detail}", d.name, m));
        }
        let reason = if why.is_empty() {
            format!("{}: as it is", self.policy)
        } else if apply {
            format!("{}: {}", self.policy, why.join("; "))
        } else {
            format!(
                "{}: kept (moves under {} MiB: {})",
                self.policy,
                self.hysteresis_mb,
                why.join("; ")
            )
        };
        Decision {
            cache_mb: split,
            apply,
            reason,
        }
    }
}

/// A read-rate forecast: Holt's linear smoothing (level and trend) of
/// rates sampled at a fixed step, projected some steps ahead, so a rising
/// rate is given memory before it peaks.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateForecast {
    level: f64,
    trend: f64,
    samples: u64,
}

impl RateForecast {
    /// Weight of a new sample in the level.
    const ALPHA: f64 = 0.5;
    /// Weight of a new change in the trend.
    const BETA: f64 = 0.3;

    /// A rate measured over the last step.
    pub fn observe(&mut self, rate: f64) {
        let rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
        if self.samples == 0 {
            self.level = rate;
        } else {
            let prev = self.level;
            self.level = Self::ALPHA * rate + (1.0 - Self::ALPHA) * (self.level + self.trend);
            self.trend = Self::BETA * (self.level - prev) + (1.0 - Self::BETA) * self.trend;
        }
        self.samples += 1;
    }

    /// The rate expected `steps` steps ahead (never negative).
    pub fn forecast(&self, steps: f64) -> f64 {
        (self.level + self.trend * steps).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, cache_mb: u64) -> Device {
        Device {
            name: name.into(),
            cache_mb,
            ..Default::default()
        }
    }

    #[test]
    fn shares_sum_to_the_total_with_minimums() {
        assert_eq!(
            proportional(&[1.0, 1.0, 1.0], 10, 0).iter().sum::<u64>(),
            10
        );
        assert_eq!(proportional(&[3.0, 1.0], 8, 0), vec![6, 2]);
        assert_eq!(proportional(&[1.0, 0.0], 8, 2), vec![6, 2]);
        assert_eq!(
            proportional(&[0.0, 0.0], 9, 0).iter().sum::<u64>(),
            9,
            "no signal: equal"
        );
        assert_eq!(proportional(&[f64::NAN, 1.0], 4, 0), vec![0, 4]);
        assert_eq!(
            proportional(&[1.0, 1.0], 3, 5),
            vec![2, 1],
            "minimums past the total"
        );
    }

    #[test]
    fn each_policy_follows_its_signal() {
        let mut devs = vec![dev("a", 16), dev("b", 16)];
        devs[0].reads = 100;
        devs[0].mean_read_us = 500.0;
        devs[1].reads = 100;
        devs[1].mean_read_us = 1500.0;
        devs[0].forecast_reads_per_s = 300.0;
        devs[1].forecast_reads_per_s = 100.0;
        // b: 4 MiB of reuse; a: none.
        devs[1].curve = Some(Curve {
            ratios: vec![1.0, 0.9, 0.8, 0.7, 0.1, 0.1],
            refs: 1000,
        });
        devs[0].curve = Some(Curve {
            ratios: vec![1.0; 6],
            refs: 1000,
        });
        let e = |policy| Engine {
            policy,
            total_mb: 32,
            min_mb: 2,
            hysteresis_mb: 4,
        };
        assert_eq!(e(Policy::Fair).split(&devs), vec![16, 16]);
        assert_eq!(e(Policy::Latency).split(&devs), vec![9, 23]);
        assert_eq!(e(Policy::Predicted).split(&devs), vec![23, 9]);
        let t = e(Policy::Throughput).split(&devs);
        assert!(t[1] >= 4 && t.iter().sum::<u64>() == 32, "{t:?}");
        // Fair from 16/16: nothing to do; latency moves 7 MiB: applied.
        let d = e(Policy::Fair).decide(&devs);
        assert!(!d.apply);
        assert_eq!(d.reason, "fair: as it is");
        let d = e(Policy::Latency).decide(&devs);
        assert!(d.apply);
        assert_eq!(
            d.reason,
            "latency: a -7 MiB to 9, 50 ms waited; b +7 MiB to 23, 150 ms waited"
        );
    }

    #[test]
    fn forecast_follows_a_ramp_ahead_of_it() {
        let mut f = RateForecast::default();
        for _ in 0..10 {
            f.observe(100.0);
        }
        assert!((f.forecast(5.0) - 100.0).abs() < 1.0, "steady: {}", f.forecast(5.0));
        for k in 1..=10 {
            f.observe(100.0 + 50.0 * k as f64);
        }
        // At 600/step and rising by 50: ahead of the last sample.
        assert!(f.forecast(5.0) > 650.0, "ramp: {}", f.forecast(5.0));
        for _ in 0..30 {
            f.observe(0.0);
        }
        assert!(f.forecast(5.0) < 5.0, "gone quiet: {}", f.forecast(5.0));
        f.observe(f64::NAN);
        assert!(f.forecast(1.0).is_finite());
    }

    #[test]
    fn hysteresis_keeps_small_moves() {
        let mut devs = vec![dev("a", 15), dev("b", 17)];
        devs[0].forecast_reads_per_s = 1.0;
        devs[1].forecast_reads_per_s = 1.0;
        let e = Engine {
            policy: Policy::Predicted,
            total_mb: 32,
            min_mb: 0,
            hysteresis_mb: 2,
        };
        let d = e.decide(&devs);
        assert!(!d.apply, "{d:?}");
        assert!(
            d.reason.starts_with("predicted: kept (moves under 2 MiB"),
            "{}",
            d.reason
        );
        assert_eq!("throughput".parse::<Policy>(), Ok(Policy::Throughput));
        assert!("lru".parse::<Policy>().is_err());
    }
}
