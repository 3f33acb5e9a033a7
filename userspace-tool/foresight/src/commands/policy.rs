// SPDX-License-Identifier: GPL-2.0
//! `foresight policy set`.

use super::{exit, CmdResult};
use crate::dev::DevSpec;
use crate::nl::{AttrBuf, Client};
use crate::uapi::{self, policy_attr as A};

/// The run-time parameters; `None` keeps the device's value.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct Policy {
    /// Fix the logging level, 0 (off) to 100 (4 KiB grains); turns adaptation off
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub level: Option<u32>,
    /// true: the controller sets the level; false: fixed level
    #[arg(long, action = clap::ArgAction::Set, value_name = "true|false")]
    pub adaptive: Option<bool>,
    /// Controller: level with no I/O
    #[arg(long, value_name = "N")]
    pub base: Option<u32>,
    /// Controller: thousandths of a level per MiB/s of writes
    #[arg(long = "w-io", value_name = "N")]
    pub w_io: Option<u32>,
    /// Controller: thousandths of a level per MiB/s of predicted newly dirtied data
    #[arg(long = "w-dirty", value_name = "N")]
    pub w_dirty: Option<u32>,
    /// Controller: lowest level it sets (0-100)
    #[arg(long = "min-level", value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub min_level: Option<u32>,
    /// Controller: highest level it sets (0-100)
    #[arg(long = "max-level", value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_level: Option<u32>,
    /// Controller: level changes of this much or less are not applied (0-100)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub hysteresis: Option<u32>,
    /// Controller periods a userspace prediction stays fresh
    #[arg(long = "predict-ttl", value_name = "N")]
    pub predict_ttl: Option<u32>,
    /// A region this percent dirty is tracked whole (0-100)
    #[arg(long = "dense-pct", value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub dense_pct: Option<u32>,
    /// Controller period in milliseconds
    #[arg(long = "interval-ms", value_name = "N")]
    pub interval_ms: Option<u32>,
    /// Most memory the log's tables may take, in KiB (0: no limit)
    #[arg(long = "max-memory-kb", value_name = "N")]
    pub max_memory_kb: Option<u32>,
    /// Most access records per second sent to trace listeners (0: no limit)
    #[arg(long = "trace-rate", value_name = "N")]
    pub trace_rate: Option<u32>,
    /// Resize the prefetch cache, in MiB (0 drops it; at most 65536)
    #[arg(long = "cache-mb", value_name = "N", value_parser = clap::value_parser!(u32).range(0..=65536))]
    pub cache_mb: Option<u32>,
    /// Prefetch: predictions at or above this probability (millionths) are critical, fetched at once
    #[arg(long = "critical-ppm", value_name = "PPM", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub critical_ppm: Option<u32>,
    /// Prefetch: at or above this (millionths): predictive, fetched while the origin's load is under --load-limit
    #[arg(long = "predictive-ppm", value_name = "PPM", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub predictive_ppm: Option<u32>,
    /// Prefetch: at or above this (millionths): background, fetched when the origin is idle; below it, dropped
    #[arg(long = "min-ppm", value_name = "PPM", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub min_ppm: Option<u32>,
    /// Prefetch bandwidth limit in KiB/s (0: no limit)
    #[arg(long = "prefetch-kbps", value_name = "N")]
    pub prefetch_kbps: Option<u32>,
    /// Most prefetch reads in flight (1-256)
    #[arg(long = "prefetch-inflight", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub prefetch_inflight: Option<u32>,
    /// Origin I/Os in flight at or above which predictive fetches wait
    #[arg(long = "load-limit", value_name = "N")]
    pub load_limit: Option<u32>,
    /// The origin counts as idle after this many milliseconds without user I/O
    #[arg(long = "idle-ms", value_name = "N")]
    pub idle_ms: Option<u32>,
    /// Throttle writes to this many KiB/s (0: no limit); the writes over it
    /// wait, in order
    #[arg(long = "write-kbps", value_name = "N")]
    pub write_kbps: Option<u32>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// The request attributes (device first).
    pub fn attrs(&self, dev: &DevSpec) -> AttrBuf {
        let mut a = AttrBuf::new();
        a.device(A::NAME, A::DEV, dev);
        let u32s = [
            (A::LEVEL, self.level),
            (A::BASE, self.base),
            (A::W_IO, self.w_io),
            (A::W_DIRTY, self.w_dirty),
            (A::MIN_LEVEL, self.min_level),
            (A::MAX_LEVEL, self.max_level),
            (A::HYSTERESIS, self.hysteresis),
            (A::PREDICT_TTL, self.predict_ttl),
            (A::DENSE_PCT, self.dense_pct),
            (A::INTERVAL_MS, self.interval_ms),
            (A::MAX_MEMORY_KB, self.max_memory_kb),
            (A::TRACE_RATE, self.trace_rate),
            (A::CACHE_MB, self.cache_mb),
            (A::CRITICAL_PPM, self.critical_ppm),
            (A::PREDICTIVE_PPM, self.predictive_ppm),
            (A::MIN_PPM, self.min_ppm),
            (A::PREFETCH_KBPS, self.prefetch_kbps),
            (A::PREFETCH_INFLIGHT, self.prefetch_inflight),
            (A::LOAD_LIMIT, self.load_limit),
            (A::IDLE_MS, self.idle_ms),
            (A::WRITE_KBPS, self.write_kbps),
        ];
        if let Some(b) = self.adaptive {
            a.u8(A::ADAPTIVE, b as u8);
        }
        for (t, v) in u32s {
            if let Some(v) = v {
                a.u32(t, v);
            }
        }
        a
    }
}

pub fn set(dev: &str, policy: &Policy) -> CmdResult {
    let dev = DevSpec::parse(dev)?;
    if policy.is_empty() {
        return Err("policy set: give at least one parameter".to_string().into());
    }
    let mut client = Client::connect()?;
    client.request("policy-set", uapi::cmd::POLICY_SET, policy.attrs(&dev))?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs() {
        let p = Policy {
            level: Some(40),
            adaptive: Some(false),
            trace_rate: Some(0),
            ..Default::default()
        };
        assert!(!p.is_empty());
        let a = p.attrs(&DevSpec::Name("vm1".into()));
        assert_eq!(a.len(), 4);
        assert!(Policy::default().is_empty());
    }

    #[test]
    fn cache_attrs() {
        let p = Policy {
            cache_mb: Some(64),
            critical_ppm: Some(900_000),
            predictive_ppm: Some(400_000),
            min_ppm: Some(10_000),
            prefetch_kbps: Some(0),
            prefetch_inflight: Some(16),
            load_limit: Some(4),
            idle_ms: Some(50),
            ..Default::default()
        };
        assert!(!p.is_empty());
        let a = p.attrs(&DevSpec::Name("vm1".into()));
        // The name and the eight cache parameters, 8 bytes each but the name.
        assert_eq!(a.len(), 9);
        assert_eq!(a.wire_size(), 8 + 8 * 8);
        let only = Policy {
            idle_ms: Some(0),
            ..Default::default()
        };
        assert!(!only.is_empty());
    }
}
