// SPDX-License-Identifier: GPL-2.0
//! `foresight status`: dev-get.

use std::fmt::Write as _;

use serde::Serialize;

use super::{bad_answer, human_bytes, CmdResult, Failure};
use crate::dev::{DevNum, DevSpec};
use crate::nl::{AttrBuf, Attrs, Client, Reply};
use crate::uapi::{self, dev_attr as A, tier_stats_attr as T};

/// An enum value: its spec name, or the number when unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EnumVal {
    Name(&'static str),
    Num(u32),
}

impl EnumVal {
    pub fn epoch_state(v: u32) -> Self {
        match uapi::epoch_state::name(v) {
            Some(n) => EnumVal::Name(n),
            None => EnumVal::Num(v),
        }
    }

    pub fn tier(v: u32) -> Self {
        match uapi::tier::name(v) {
            Some(n) => EnumVal::Name(n),
            None => EnumVal::Num(v),
        }
    }
}

impl std::fmt::Display for EnumVal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnumVal::Name(n) => write!(f, "{n}"),
            EnumVal::Num(v) => write!(f, "unknown ({v})"),
        }
    }
}

/// The prefetch counters of one tier (nested `tier-stats`), in blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TierStats {
    /// `enum tier`: its name, or the number when unknown.
    pub tier: EnumVal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wasted: Option<u64>,
}

impl TierStats {
    pub fn from_attrs(a: Attrs<'_>) -> Result<Self, String> {
        Ok(TierStats {
            tier: EnumVal::tier(a.u32(T::TIER)?.ok_or("tier stats without tier")?),
            issued: a.u64(T::ISSUED)?,
            completed: a.u64(T::COMPLETED)?,
            used: a.u64(T::USED)?,
            wasted: a.u64(T::WASTED)?,
        })
    }
}

/// `num / den`, or `None` (JSON `null`) when `den` is 0.
fn ratio(num: u64, den: u64) -> Option<f64> {
    (den != 0).then(|| num as f64 / den as f64)
}

/// A device as dev-get describes it; every attribute is optional.  The
/// last three fields are derived by the tool (see [`DevInfo::derive`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DevInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sectors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_sectors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_bios: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_sectors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_bios: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_sectors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discard_bios: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discard_sectors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_bios: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Port id of the netlink socket that owns the epoch rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotate_owner: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_state: Option<EnumVal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_state: Option<EnumVal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grain_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirty_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_dirty_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coarse_fallbacks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_records: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_dropped: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predict_ranges: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_capacity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_hits: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_misses: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_partial: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch_queued: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch_inflight: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch_errors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch_stale: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_mismatch: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_kbps: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_delayed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_delayed_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_waiting: Option<u32>,
    /// The `tier` attributes, in the kernel's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierStats>,
    /// hits / (hits + misses + partial); `Some(None)` (null) when no read
    /// was looked up, `None` (left out) without the counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hit_rate: Option<Option<f64>>,
    /// used / issued, summed over the tiers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<Option<f64>>,
    /// hits / read bios: the share of reads the prefetch cache served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Option<f64>>,
    /// The predictor a running `foresight daemon` serves this device with,
    /// and its live scores (from the daemon's state file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<super::daemon::DevScores>,
}

impl DevInfo {
    pub fn from_attrs(a: Attrs<'_>) -> Result<Self, String> {
        let mut tiers = Vec::new();
        for p in a.all(A::TIER) {
            let l = Attrs::parse_nested(p)?;
            tiers.push(TierStats::from_attrs(Attrs::new(&l))?);
        }
        let mut d = DevInfo {
            name: a.string(A::NAME),
            dev: a.u32(A::DEV)?,
            origin: a.string(A::ORIGIN),
            sectors: a.u64(A::SECTORS)?,
            origin_sectors: a.u64(A::ORIGIN_SECTORS)?,
            read_bios: a.u64(A::READ_BIOS)?,
            read_sectors: a.u64(A::READ_SECTORS)?,
            write_bios: a.u64(A::WRITE_BIOS)?,
            write_sectors: a.u64(A::WRITE_SECTORS)?,
            discard_bios: a.u64(A::DISCARD_BIOS)?,
            discard_sectors: a.u64(A::DISCARD_SECTORS)?,
            flush_bios: a.u64(A::FLUSH_BIOS)?,
            errors: a.u64(A::ERRORS)?,
            epoch: a.u64(A::EPOCH)?,
            rotate_owner: a.u32(A::ROTATE_OWNER)?,
            log_state: a.u32(A::LOG_STATE)?.map(EnumVal::epoch_state),
            prev_state: a.u32(A::PREV_STATE)?.map(EnumVal::epoch_state),
            level: a.u32(A::LEVEL)?,
            adaptive: a.u8(A::ADAPTIVE)?.map(|v| v != 0),
            grain_bytes: a.u64(A::GRAIN_BYTES)?,
            dirty_bytes: a.u64(A::DIRTY_BYTES)?,
            prev_dirty_bytes: a.u64(A::PREV_DIRTY_BYTES)?,
            log_memory: a.u64(A::LOG_MEMORY)?,
            coarse_fallbacks: a.u64(A::COARSE_FALLBACKS)?,
            degraded: a.u8(A::DEGRADED)?.map(|v| v != 0),
            trace_records: a.u64(A::TRACE_RECORDS)?,
            trace_dropped: a.u64(A::TRACE_DROPPED)?,
            predict_ranges: a.u64(A::PREDICT_RANGES)?,
            cache_capacity: a.u64(A::CACHE_CAPACITY)?,
            cache_bytes: a.u64(A::CACHE_BYTES)?,
            cache_hits: a.u64(A::CACHE_HITS)?,
            cache_misses: a.u64(A::CACHE_MISSES)?,
            cache_partial: a.u64(A::CACHE_PARTIAL)?,
            prefetch_queued: a.u64(A::PREFETCH_QUEUED)?,
            prefetch_inflight: a.u64(A::PREFETCH_INFLIGHT)?,
            prefetch_errors: a.u64(A::PREFETCH_ERRORS)?,
            prefetch_stale: a.u64(A::PREFETCH_STALE)?,
            verify_mismatch: a.u64(A::VERIFY_MISMATCH)?,
            write_kbps: a.u64(A::WRITE_KBPS)?,
            write_delayed: a.u64(A::WRITE_DELAYED)?,
            write_delayed_bytes: a.u64(A::WRITE_DELAYED_BYTES)?,
            write_waiting: a.u32(A::WRITE_WAITING)?,
            tiers,
            ..Default::default()
        };
        d.derive();
        Ok(d)
    }

    /// Computes the derived figures from the counters: each is left out
    /// when a counter it needs is missing, and is `Some(None)` when its
    /// denominator is 0.
    pub fn derive(&mut self) {
        self.hit_rate = match (self.cache_hits, self.cache_misses, self.cache_partial) {
            (Some(h), Some(m), Some(p)) => Some(ratio(h, h.saturating_add(m).saturating_add(p))),
            _ => None,
        };
        self.accuracy = (!self.tiers.is_empty()).then(|| {
            let sum = |f: fn(&TierStats) -> Option<u64>| {
                self.tiers
                    .iter()
                    .fold(0u64, |acc, t| acc.saturating_add(f(t).unwrap_or(0)))
            };
            ratio(sum(|t| t.used), sum(|t| t.issued))
        });
        self.coverage = match (self.cache_hits, self.read_bios) {
            (Some(h), Some(r)) => Some(ratio(h, r)),
            _ => None,
        };
    }

    fn from_reply(op: &str, r: &Reply) -> Result<Self, Failure> {
        Self::from_attrs(r.attrs()).map_err(|m| bad_answer(op, m))
    }

    pub fn devnum(&self) -> Option<DevNum> {
        self.dev.map(DevNum::decode)
    }

    /// The human-readable block of `foresight status`: `key: value` lines,
    /// for the attributes the kernel sent.
    pub fn format(&self) -> String {
        let mut lines: Vec<(&str, String)> = Vec::new();
        let sectors = |n: u64| format!("{n} ({})", human_bytes(n.saturating_mul(512)));
        let bytes = |n: u64| {
            if n < 1024 {
                n.to_string()
            } else {
                format!("{n} ({})", human_bytes(n))
            }
        };
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        let percent = |r: Option<f64>| match r {
            Some(v) => format!("{:.1}%", v * 100.0),
            None => "n/a".to_string(),
        };
        // "1 hits, 2 misses": the counters present.
        let counts = |items: &[(Option<u64>, &str)]| -> Option<String> {
            let v: Vec<String> = items
                .iter()
                .filter_map(|(n, what)| n.map(|n| format!("{n} {what}")))
                .collect();
            (!v.is_empty()).then(|| v.join(", "))
        };
        let tier_keys: Vec<String> = self
            .tiers
            .iter()
            .map(|t| match t.tier {
                EnumVal::Name(n) => format!("tier {n}"),
                EnumVal::Num(v) => format!("tier {v}"),
            })
            .collect();
        let pair = |bios: Option<u64>, secs: Option<u64>| -> Option<String> {
            let mut v = Vec::new();
            if let Some(b) = bios {
                v.push(format!("{b} bios"));
            }
            if let Some(s) = secs {
                v.push(format!(
                    "{s} sectors ({})",
                    human_bytes(s.saturating_mul(512))
                ));
            }
            (!v.is_empty()).then(|| v.join(", "))
        };

        lines.push(("name", self.name.clone().unwrap_or_else(|| "?".into())));
        if let Some(d) = self.devnum() {
            lines.push(("dev", d.to_string()));
        }
        if let Some(o) = &self.origin {
            lines.push(("origin", o.clone()));
        }
        if let Some(n) = self.sectors {
            lines.push(("sectors", sectors(n)));
        }
        if let Some(n) = self.origin_sectors {
            lines.push(("origin sectors", sectors(n)));
        }
        if let Some(v) = pair(self.read_bios, self.read_sectors) {
            lines.push(("reads", v));
        }
        if let Some(v) = pair(self.write_bios, self.write_sectors) {
            lines.push(("writes", v));
        }
        if let Some(v) = pair(self.discard_bios, self.discard_sectors) {
            lines.push(("discards", v));
        }
        if let Some(n) = self.flush_bios {
            lines.push(("flushes", format!("{n} bios")));
        }
        if let Some(n) = self.errors {
            lines.push(("errors", n.to_string()));
        }
        if let Some(n) = self.epoch {
            lines.push(("epoch", n.to_string()));
        }
        if let Some(p) = self.rotate_owner {
            lines.push(("rotation owner", format!("netlink port {p}")));
        }
        if let Some(v) = self.log_state {
            lines.push(("state", v.to_string()));
        }
        if let Some(v) = self.prev_state {
            lines.push(("prev state", v.to_string()));
        }
        if let Some(l) = self.level {
            lines.push(("level", l.to_string()));
        }
        if let Some(a) = self.adaptive {
            lines.push(("mode", if a { "auto" } else { "fixed" }.to_string()));
        }
        if let Some(n) = self.grain_bytes {
            lines.push(("grain bytes", bytes(n)));
        }
        if let Some(n) = self.dirty_bytes {
            lines.push(("dirty bytes", bytes(n)));
        }
        if let Some(n) = self.prev_dirty_bytes {
            lines.push(("prev dirty bytes", bytes(n)));
        }
        if let Some(n) = self.log_memory {
            lines.push(("log memory", bytes(n)));
        }
        if let Some(n) = self.coarse_fallbacks {
            lines.push(("coarse fallbacks", n.to_string()));
        }
        if let Some(b) = self.degraded {
            lines.push(("degraded", yes_no(b)));
        }
        if let Some(n) = self.trace_records {
            lines.push(("trace records", n.to_string()));
        }
        if let Some(n) = self.trace_dropped {
            lines.push(("trace dropped", n.to_string()));
        }
        if let Some(n) = self.predict_ranges {
            lines.push(("predict ranges", n.to_string()));
        }
        if let Some(n) = self.cache_capacity {
            lines.push(("cache capacity", bytes(n)));
        }
        if let Some(n) = self.cache_bytes {
            lines.push(("cached bytes", bytes(n)));
        }
        if let Some(v) = counts(&[
            (self.cache_hits, "hits"),
            (self.cache_misses, "misses"),
            (self.cache_partial, "partial hits"),
        ]) {
            lines.push(("cache reads", v));
        }
        if let Some(r) = self.hit_rate {
            lines.push(("hit rate", percent(r)));
        }
        if let Some(r) = self.coverage {
            lines.push(("coverage", percent(r)));
        }
        if let Some(v) = counts(&[
            (self.prefetch_queued, "queued"),
            (self.prefetch_inflight, "in flight"),
            (self.prefetch_errors, "errors"),
            (self.prefetch_stale, "stale"),
        ]) {
            lines.push(("prefetch", v));
        }
        if let Some(n) = self.verify_mismatch {
            lines.push(("verify mismatch", n.to_string()));
        }
        if let Some(k) = self.write_kbps {
            let mut v = if k == 0 {
                "no limit".to_string()
            } else {
                format!("{k} KiB/s")
            };
            if let (Some(d), Some(b), Some(w)) = (
                self.write_delayed,
                self.write_delayed_bytes,
                self.write_waiting,
            ) {
                v.push_str(&format!(
                    "; {d} writes held back ({}), {w} waiting",
                    human_bytes(b)
                ));
            }
            lines.push(("write throttle", v));
        }
        for (t, k) in self.tiers.iter().zip(&tier_keys) {
            let v = counts(&[
                (t.issued, "issued"),
                (t.completed, "completed"),
                (t.used, "used"),
                (t.wasted, "wasted"),
            ]);
            lines.push((k, v.unwrap_or_default()));
        }
        if let Some(r) = self.accuracy {
            lines.push(("accuracy", percent(r)));
        }
        if let Some(d) = &self.daemon {
            lines.push((
                "predictor",
                format!(
                    "{} (daemon: {} accesses learnt, {} ranges pushed, {} accepted)",
                    d.predictor, d.accesses, d.pushed, d.accepted
                ),
            ));
            for sc in &d.scores {
                lines.push((
                    "  scores",
                    format!(
                        "{}: coverage {}, precision {}",
                        sc.name,
                        percent(Some(sc.coverage)),
                        percent(Some(sc.precision))
                    ),
                ));
            }
        }
        let mut s = String::new();
        for (k, v) in lines {
            let _ = writeln!(s, "{:<18}{v}", format!("{k}:"));
        }
        s
    }
}

/// dev-get of one device.
pub fn dev_get(client: &mut Client, dev: &DevSpec) -> Result<DevInfo, Failure> {
    let op = "dev-get";
    let mut a = AttrBuf::new();
    a.device(A::NAME, A::DEV, dev);
    let r = client.request_one(op, uapi::cmd::DEV_GET, a)?;
    DevInfo::from_reply(op, &r)
}

/// dev-get dump of all devices.
pub fn dev_dump(client: &mut Client) -> Result<Vec<DevInfo>, Failure> {
    let op = "dev-get";
    let mut out = Vec::new();
    let mut bad = None;
    client.dump(op, uapi::cmd::DEV_GET, AttrBuf::new(), |r| {
        match DevInfo::from_reply(op, &r) {
            Ok(d) => out.push(d),
            Err(e) => bad = Some(e),
        }
        Ok(())
    })?;
    if let Some(e) = bad {
        return Err(e);
    }
    Ok(out)
}

/// Attaches to each device what the running daemon says of it.
pub fn attach_daemon(devs: &mut [DevInfo], state: Option<&super::daemon::State>) {
    let Some(state) = state else {
        return;
    };
    for d in devs {
        d.daemon = state
            .devices
            .iter()
            .find(|s| match (s.dev, d.dev) {
                (Some(a), Some(b)) => a == b,
                _ => d.name.as_deref() == Some(s.name.as_str()),
            })
            .cloned();
    }
}

pub fn run(dev: Option<&str>, json: bool, state_file: &str) -> CmdResult {
    let dev = dev.map(DevSpec::parse).transpose()?;
    let mut client = Client::connect()?;
    // foreshadow devices too: a name that is not a foresight device's may
    // be one's.
    let (mut devs, shadows) = match &dev {
        Some(d) => match dev_get(&mut client, d) {
            Ok(i) => (vec![i], vec![]),
            Err(e) => match super::shadow::get(&mut client, d) {
                Ok(s) => (vec![], vec![s]),
                Err(_) => return Err(e),
            },
        },
        None => (dev_dump(&mut client)?, super::shadow::dump(&mut client)?),
    };
    attach_daemon(&mut devs, super::daemon::State::load(state_file).as_ref());
    if json {
        // foreshadow devices after the foresight ones, marked as such.
        let mut all = serde_json::to_value(&devs).map_err(|e| e.to_string())?;
        if let Some(list) = all.as_array_mut() {
            for s in &shadows {
                let mut v = serde_json::to_value(s).map_err(|e| e.to_string())?;
                v["target"] = "foreshadow".into();
                list.push(v);
            }
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?
        );
    } else {
        if devs.is_empty() && shadows.is_empty() {
            eprintln!("foresight: no foresight devices");
        }
        let mut blocks: Vec<String> = devs.iter().map(DevInfo::format).collect();
        blocks.extend(shadows.iter().map(|s| {
            format!("{}\n", s.human(s.name.as_deref().unwrap_or("?")))
        }));
        print!("{}", blocks.join("\n"));
    }
    Ok(super::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::parse_attrs;
    use crate::nl::wire::nla;

    fn sample() -> DevInfo {
        let mut b = Vec::new();
        b.extend(nla(A::NAME, b"vm1\0"));
        b.extend(nla(A::DEV, &0xfd03u32.to_ne_bytes()));
        b.extend(nla(A::ORIGIN, b"8:16\0"));
        b.extend(nla(A::SECTORS, &2097152u64.to_ne_bytes()));
        b.extend(nla(A::READ_BIOS, &10u64.to_ne_bytes()));
        b.extend(nla(A::READ_SECTORS, &80u64.to_ne_bytes()));
        b.extend(nla(A::EPOCH, &3u64.to_ne_bytes()));
        b.extend(nla(A::LOG_STATE, &0u32.to_ne_bytes()));
        b.extend(nla(A::PREV_STATE, &9u32.to_ne_bytes()));
        b.extend(nla(A::LEVEL, &60u32.to_ne_bytes()));
        b.extend(nla(A::ADAPTIVE, &[1]));
        b.extend(nla(A::DEGRADED, &[0]));
        b.extend(nla(A::TRACE_DROPPED, &5u64.to_ne_bytes()));
        b.extend(nla(200, &[1, 2, 3, 4]));
        let l = parse_attrs(&b).unwrap();
        DevInfo::from_attrs(Attrs::new(&l)).unwrap()
    }

    #[test]
    fn parse_and_json() {
        let d = sample();
        assert_eq!(d.name.as_deref(), Some("vm1"));
        assert_eq!(
            d.devnum(),
            Some(DevNum {
                major: 253,
                minor: 3
            })
        );
        let j = serde_json::to_value(&d).unwrap();
        assert_eq!(j["name"], "vm1");
        assert_eq!(j["dev"], 0xfd03);
        assert_eq!(j["log_state"], "tracked");
        assert_eq!(j["prev_state"], 9);
        assert_eq!(j["adaptive"], true);
        assert_eq!(j["degraded"], false);
        assert_eq!(j["read_sectors"], 80);
        assert!(j.get("write_bios").is_none());
        // The field order is the spec's.
        let s = serde_json::to_string(&d).unwrap();
        assert!(s.starts_with("{\"name\":\"vm1\",\"dev\":64771,\"origin\":\"8:16\""));
    }

    #[test]
    fn human_format() {
        let f = sample().format();
        let want = "\
name:             vm1
dev:              253:3
origin:           8:16
sectors:          2097152 (1.0 GiB)
reads:            10 bios, 80 sectors (40.0 KiB)
epoch:            3
state:            tracked
prev state:       unknown (9)
level:            60
mode:             auto
degraded:         no
trace dropped:    5
";
        assert_eq!(f, want);
    }

    #[test]
    fn no_cache_counters_no_cache_keys() {
        let j = serde_json::to_value(sample()).unwrap();
        for k in [
            "cache_capacity",
            "cache_hits",
            "tiers",
            "hit_rate",
            "accuracy",
            "coverage",
        ] {
            assert!(j.get(k).is_none(), "{k}");
        }
    }

    fn tier(t: u32, c: [u64; 4]) -> Vec<u8> {
        let mut i = nla(T::TIER, &t.to_ne_bytes());
        for (a, v) in [T::ISSUED, T::COMPLETED, T::USED, T::WASTED]
            .into_iter()
            .zip(c)
        {
            i.extend(nla(a, &v.to_ne_bytes()));
        }
        nla(A::TIER | 0x8000, &i)
    }

    fn cache_sample(hits: u64, misses: u64, partial: u64, reads: u64, tiers: bool) -> DevInfo {
        let mut b = Vec::new();
        b.extend(nla(A::NAME, b"vm1\0"));
        b.extend(nla(A::READ_BIOS, &reads.to_ne_bytes()));
        for (a, v) in [
            (A::CACHE_CAPACITY, 64u64 << 20),
            (A::CACHE_BYTES, 12 << 20),
            (A::CACHE_HITS, hits),
            (A::CACHE_MISSES, misses),
            (A::CACHE_PARTIAL, partial),
            (A::PREFETCH_QUEUED, 3),
            (A::PREFETCH_INFLIGHT, 2),
            (A::PREFETCH_ERRORS, 1),
            (A::PREFETCH_STALE, 4),
            (A::VERIFY_MISMATCH, 0),
        ] {
            b.extend(nla(a, &v.to_ne_bytes()));
        }
        if tiers {
            b.extend(tier(uapi::tier::CRITICAL, [100, 98, 90, 5]));
            b.extend(tier(uapi::tier::PREDICTIVE, [300, 290, 150, 100]));
            b.extend(tier(uapi::tier::BACKGROUND, [100, 100, 0, 30]));
            b.extend(tier(7, [0, 0, 0, 0]));
        }
        let l = parse_attrs(&b).unwrap();
        DevInfo::from_attrs(Attrs::new(&l)).unwrap()
    }

    #[test]
    fn cache_json() {
        let d = cache_sample(900, 80, 20, 1500, true);
        let j = serde_json::to_value(&d).unwrap();
        assert_eq!(j["cache_capacity"], 64u64 << 20);
        assert_eq!(j["cache_bytes"], 12u64 << 20);
        assert_eq!(j["cache_hits"], 900);
        assert_eq!(j["cache_misses"], 80);
        assert_eq!(j["cache_partial"], 20);
        assert_eq!(j["prefetch_queued"], 3);
        assert_eq!(j["prefetch_inflight"], 2);
        assert_eq!(j["prefetch_errors"], 1);
        assert_eq!(j["prefetch_stale"], 4);
        assert_eq!(j["verify_mismatch"], 0);
        let t = j["tiers"].as_array().unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(
            t[0],
            serde_json::json!({"tier": "critical", "issued": 100, "completed": 98, "used": 90, "wasted": 5})
        );
        assert_eq!(t[1]["tier"], "predictive");
        assert_eq!(t[2]["tier"], "background");
        assert_eq!(t[3]["tier"], 7);
        assert_eq!(j["hit_rate"], 0.9);
        assert_eq!(j["accuracy"], 240.0 / 500.0);
        assert_eq!(j["coverage"], 0.6);
        // The derived figures come last.
        let s = serde_json::to_string(&d).unwrap();
        assert!(
            s.ends_with(",\"hit_rate\":0.9,\"accuracy\":0.48,\"coverage\":0.6}"),
            "{s}"
        );
    }

    #[test]
    fn cache_json_null_when_nothing_to_divide() {
        let j = serde_json::to_value(cache_sample(0, 0, 0, 0, true)).unwrap();
        assert!(j["hit_rate"].is_null() && j.get("hit_rate").is_some());
        assert!(j["coverage"].is_null() && j.get("coverage").is_some());
        assert_eq!(j["accuracy"], 0.48);
        let j = serde_json::to_value(cache_sample(0, 0, 0, 0, false)).unwrap();
        assert!(j.get("tiers").is_none());
        assert!(j.get("accuracy").is_none());
        let mut b = Vec::new();
        b.extend(tier(0, [0, 0, 0, 0]));
        let l = parse_attrs(&b).unwrap();
        let j = serde_json::to_value(DevInfo::from_attrs(Attrs::new(&l)).unwrap()).unwrap();
        assert!(j["accuracy"].is_null() && j.get("accuracy").is_some());
        assert!(j.get("hit_rate").is_none() && j.get("coverage").is_none());
    }

    #[test]
    fn tier_without_tier_refused() {
        let b = nla(A::TIER | 0x8000, &nla(T::ISSUED, &1u64.to_ne_bytes()));
        let l = parse_attrs(&b).unwrap();
        assert!(DevInfo::from_attrs(Attrs::new(&l)).is_err());
    }

    #[test]
    fn daemon_scores_are_attached_by_device_number_and_shown() {
        use crate::commands::daemon::{DevScores, LiveScore, State};
        let state = State {
            pid: 1,
            updated: 0.0,
            engine: None,
            devices: vec![
                DevScores {
                    name: "other".into(),
                    dev: Some(0xfd09),
                    ..Default::default()
                },
                DevScores {
                    name: "vm1".into(),
                    dev: Some(sample().dev.unwrap()),
                    predictor: "auto".into(),
                    scores: vec![LiveScore {
                        name: "streams".into(),
                        coverage: 0.5,
                        precision: 0.25,
                    }],
                    accesses: 10,
                    pushed: 3,
                    accepted: 2,
                    heat: vec![],
                },
            ],
        };
        let mut devs = vec![sample(), DevInfo::default()];
        attach_daemon(&mut devs, Some(&state));
        assert_eq!(devs[0].daemon.as_ref().unwrap().name, "vm1");
        assert!(devs[1].daemon.is_none());
        let text = devs[0].format();
        assert!(
            text.contains(
                "predictor:        auto (daemon: 10 accesses learnt, 3 ranges pushed, 2 accepted)"
            ),
            "{text}"
        );
        assert!(
            text.contains("  scores:         streams: coverage 50.0%, precision 25.0%"),
            "{text}"
        );
        let j = serde_json::to_value(&devs[0]).unwrap();
        assert_eq!(j["daemon"]["predictor"], "auto");
        assert_eq!(j["daemon"]["scores"][0]["coverage"], 0.5);
        attach_daemon(&mut devs, None);
        assert!(devs[0].daemon.is_some(), "no state leaves what is there");
    }

    #[test]
    fn cache_human_format() {
        let f = cache_sample(900, 80, 20, 1500, true).format();
        let want = "\
name:             vm1
reads:            1500 bios
cache capacity:   67108864 (64.0 MiB)
cached bytes:     12582912 (12.0 MiB)
cache reads:      900 hits, 80 misses, 20 partial hits
hit rate:         90.0%
coverage:         60.0%
prefetch:         3 queued, 2 in flight, 1 errors, 4 stale
verify mismatch:  0
tier critical:    100 issued, 98 completed, 90 used, 5 wasted
tier predictive:  300 issued, 290 completed, 150 used, 100 wasted
tier background:  100 issued, 100 completed, 0 used, 30 wasted
tier 7:           0 issued, 0 completed, 0 used, 0 wasted
accuracy:         48.0%
";
        assert_eq!(f, want);
        let f = cache_sample(0, 0, 0, 0, false).format();
        assert!(
            f.contains("\nhit rate:         n/a\ncoverage:         n/a\n"),
            "{f}"
        );
    }
}
