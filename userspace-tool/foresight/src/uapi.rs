// SPDX-License-Identifier: GPL-2.0
//! Mirror of the generated uAPI header `include/uapi/linux/foresight.h`
//! (rust/netlink/uapi/linux/foresight.h in this tree), itself generated
//! from Documentation/netlink/specs/foresight.yaml.
//!
//! The unit test at the bottom parses the header and checks every constant
//! here against it.  Not every constant is used by the tool.
#![allow(dead_code)]

pub const FAMILY_NAME: &str = "foresight";
pub const FAMILY_VERSION: u8 = 1;

pub const NAME_LEN: usize = 128;
pub const MAX_RANGES: usize = 4096;
pub const PROBABILITY_ONE: u32 = 1_000_000;

pub const MCGRP_TRACE: &str = "trace";

/// `enum foresight_op`.
pub mod op {
    pub const READ: u8 = 0;
    pub const WRITE: u8 = 1;
    pub const FLUSH: u8 = 2;
    pub const DISCARD: u8 = 3;
    pub const WRITE_ZEROES: u8 = 4;
    pub const OTHER: u8 = 5;
}

/// `enum foresight_epoch_state`.
pub mod epoch_state {
    pub const TRACKED: u32 = 0;
    pub const UNTRACKED: u32 = 1;
    pub const INCOMPLETE: u32 = 2;
    pub const INCONSISTENT: u32 = 3;

    /// The spec's name of a state, if it is a known one.
    pub fn name(v: u32) -> Option<&'static str> {
        NAMES.get(v as usize).copied()
    }

    pub const NAMES: [&str; 4] = ["tracked", "untracked", "incomplete", "inconsistent"];
}

/// `enum foresight_shadow_state`: what a foreshadow hydration is doing.
pub mod shadow_state {
    pub const IDLE: u32 = 0;
    pub const HYDRATING: u32 = 1;
    pub const BACKOFF: u32 = 2;
    pub const STOPPED: u32 = 3;
    pub const COMPLETE: u32 = 4;

    /// The spec's name of a state, if it is a known one.
    pub fn name(v: u32) -> Option<&'static str> {
        NAMES.get(v as usize).copied()
    }

    pub const NAMES: [&str; 5] = ["idle", "hydrating", "backoff", "stopped", "complete"];
}

/// `enum foresight_epoch`.
pub mod epoch {
    pub const CURRENT: u32 = 0;
    pub const PREVIOUS: u32 = 1;
}

/// `enum foresight_tier`: prefetch tier of a prediction, by probability.
pub mod tier {
    pub const CRITICAL: u32 = 0;
    pub const PREDICTIVE: u32 = 1;
    pub const BACKGROUND: u32 = 2;

    /// The spec's name of a tier, if it is a known one.
    pub fn name(v: u32) -> Option<&'static str> {
        NAMES.get(v as usize).copied()
    }

    pub const NAMES: [&str; 3] = ["critical", "predictive", "background"];
}

/// `enum foresight_predict_kind`.
pub mod predict_kind {
    pub const READ: u32 = 0;
    pub const WRITE: u32 = 1;
}

/// Commands (`FORESIGHT_CMD_*`).
pub mod cmd {
    pub const DEV_GET: u8 = 1;
    pub const DIRTY_GET: u8 = 2;
    pub const DIRTY_ROTATE: u8 = 3;
    pub const PREDICT: u8 = 4;
    pub const POLICY_SET: u8 = 5;
    pub const TRACE_NTF: u8 = 6;
    pub const SHADOW_GET: u8 = 7;
    pub const SHADOW_HINT: u8 = 8;
    pub const BUDGET_GET: u8 = 9;
    pub const BUDGET_SET: u8 = 10;
    pub const MAX: u8 = BUDGET_SET;
}

/// Attribute set `dev` (`FORESIGHT_A_DEV_*`).
pub mod dev_attr {
    pub const NAME: u16 = 1;
    pub const DEV: u16 = 2;
    pub const ORIGIN: u16 = 3;
    pub const SECTORS: u16 = 4;
    pub const ORIGIN_SECTORS: u16 = 5;
    pub const READ_BIOS: u16 = 6;
    pub const READ_SECTORS: u16 = 7;
    pub const WRITE_BIOS: u16 = 8;
    pub const WRITE_SECTORS: u16 = 9;
    pub const DISCARD_BIOS: u16 = 10;
    pub const DISCARD_SECTORS: u16 = 11;
    pub const FLUSH_BIOS: u16 = 12;
    pub const ERRORS: u16 = 13;
    pub const EPOCH: u16 = 14;
    pub const LOG_STATE: u16 = 15;
    pub const PREV_STATE: u16 = 16;
    pub const LEVEL: u16 = 17;
    pub const ADAPTIVE: u16 = 18;
    pub const GRAIN_BYTES: u16 = 19;
    pub const DIRTY_BYTES: u16 = 20;
    pub const PREV_DIRTY_BYTES: u16 = 21;
    pub const LOG_MEMORY: u16 = 22;
    pub const COARSE_FALLBACKS: u16 = 23;
    pub const DEGRADED: u16 = 24;
    pub const TRACE_RECORDS: u16 = 25;
    pub const TRACE_DROPPED: u16 = 26;
    pub const PREDICT_RANGES: u16 = 27;
    pub const CACHE_CAPACITY: u16 = 28;
    pub const CACHE_BYTES: u16 = 29;
    pub const CACHE_HITS: u16 = 30;
    pub const CACHE_MISSES: u16 = 31;
    pub const CACHE_PARTIAL: u16 = 32;
    pub const PREFETCH_QUEUED: u16 = 33;
    pub const PREFETCH_INFLIGHT: u16 = 34;
    pub const PREFETCH_ERRORS: u16 = 35;
    pub const PREFETCH_STALE: u16 = 36;
    pub const VERIFY_MISMATCH: u16 = 37;
    /// Nested `tier-stats`, multi-attr: one per tier.
    pub const TIER: u16 = 38;
    pub const ROTATE_OWNER: u16 = 39;
    pub const WRITE_KBPS: u16 = 40;
    pub const WRITE_DELAYED: u16 = 41;
    pub const WRITE_DELAYED_BYTES: u16 = 42;
    pub const WRITE_WAITING: u16 = 43;
    pub const MAX: u16 = WRITE_WAITING;
}

/// Attribute set `tier-stats` (`FORESIGHT_A_TIER_STATS_*`), in blocks.
pub mod tier_stats_attr {
    pub const TIER: u16 = 1;
    pub const ISSUED: u16 = 2;
    pub const COMPLETED: u16 = 3;
    pub const USED: u16 = 4;
    pub const WASTED: u16 = 5;
    pub const MAX: u16 = WASTED;
}

/// Attribute set `extent` (`FORESIGHT_A_EXTENT_*`).
pub mod extent_attr {
    pub const START: u16 = 1;
    pub const LENGTH: u16 = 2;
    pub const MAX: u16 = LENGTH;
}

/// Attribute set `dirty` (`FORESIGHT_A_DIRTY_*`).
pub mod dirty_attr {
    pub const NAME: u16 = 1;
    pub const DEV: u16 = 2;
    pub const EPOCH: u16 = 3;
    pub const EPOCH_NUMBER: u16 = 4;
    pub const STATE: u16 = 5;
    pub const EXTENT: u16 = 6;
    pub const EXPECT_EPOCH: u16 = 7;
    pub const CLAIM: u16 = 8;
    pub const FORCE: u16 = 9;
    pub const MAX: u16 = FORCE;
}

/// Attribute set `range` (`FORESIGHT_A_RANGE_*`).
pub mod range_attr {
    pub const START: u16 = 1;
    pub const LENGTH: u16 = 2;
    pub const PROBABILITY: u16 = 3;
    pub const MAX: u16 = PROBABILITY;
}

/// Attribute set `predict` (`FORESIGHT_A_PREDICT_*`).
pub mod predict_attr {
    pub const NAME: u16 = 1;
    pub const DEV: u16 = 2;
    pub const KIND: u16 = 3;
    pub const HORIZON_MS: u16 = 4;
    pub const RANGE: u16 = 5;
    pub const ACCEPTED: u16 = 6;
    pub const MAX: u16 = ACCEPTED;
}

/// Attribute set `policy` (`FORESIGHT_A_POLICY_*`).
pub mod policy_attr {
    pub const NAME: u16 = 1;
    pub const DEV: u16 = 2;
    pub const LEVEL: u16 = 3;
    pub const ADAPTIVE: u16 = 4;
    pub const BASE: u16 = 5;
    pub const W_IO: u16 = 6;
    pub const W_DIRTY: u16 = 7;
    pub const MIN_LEVEL: u16 = 8;
    pub const MAX_LEVEL: u16 = 9;
    pub const HYSTERESIS: u16 = 10;
    pub const PREDICT_TTL: u16 = 11;
    pub const DENSE_PCT: u16 = 12;
    pub const INTERVAL_MS: u16 = 13;
    pub const MAX_MEMORY_KB: u16 = 14;
    pub const TRACE_RATE: u16 = 15;
    pub const CACHE_MB: u16 = 16;
    pub const CRITICAL_PPM: u16 = 17;
    pub const PREDICTIVE_PPM: u16 = 18;
    pub const MIN_PPM: u16 = 19;
    pub const PREFETCH_KBPS: u16 = 20;
    pub const PREFETCH_INFLIGHT: u16 = 21;
    pub const LOAD_LIMIT: u16 = 22;
    pub const IDLE_MS: u16 = 23;
    pub const WRITE_KBPS: u16 = 24;
    pub const MAX: u16 = WRITE_KBPS;
}

/// Attribute set `trace` (`FORESIGHT_A_TRACE_*`).
pub mod trace_attr {
    pub const NAME: u16 = 1;
    pub const DEV: u16 = 2;
    pub const RECORDS: u16 = 3;
    pub const DROPPED: u16 = 4;
    pub const MAX: u16 = DROPPED;
}

/// Attribute set `shadow` (`FORESIGHT_A_SHADOW_*`).
pub mod shadow_attr {
    pub const NAME: u16 = 1;
    pub const DEV: u16 = 2;
    pub const SOURCE: u16 = 3;
    pub const DESTINATION: u16 = 4;
    pub const SECTORS: u16 = 5;
    pub const REGION_SECTORS: u16 = 6;
    pub const REGIONS: u16 = 7;
    pub const HYDRATED: u16 = 8;
    pub const COPYING: u16 = 9;
    pub const URGENT: u16 = 10;
    pub const PREDICTED: u16 = 11;
    pub const ASCENDING: u16 = 12;
    pub const OVERWRITTEN: u16 = 13;
    pub const MARKED: u16 = 14;
    pub const READS_DEST: u16 = 15;
    pub const READS_SOURCE: u16 = 16;
    pub const COPIED_BYTES: u16 = 17;
    pub const RATE_KBPS: u16 = 18;
    pub const WAITING_WRITES: u16 = 19;
    pub const COPY_ERRORS: u16 = 20;
    pub const COMMIT_ERRORS: u16 = 21;
    pub const CRC_MISMATCHES: u16 = 22;
    pub const HINTS: u16 = 23;
    pub const STATE: u16 = 24;
    pub const RANGE: u16 = 25;
    pub const ACCEPTED: u16 = 26;
    pub const MAX: u16 = ACCEPTED;
}

/// Attribute set `budget` (`FORESIGHT_A_BUDGET_*`).
pub mod budget_attr {
    pub const CACHE_TOTAL_MB: u16 = 1;
    pub const CACHE_CHARGED_MB: u16 = 2;
    pub const DEVICES: u16 = 3;
    pub const BANDWIDTH_TOTAL_KBPS: u16 = 4;
    pub const BANDWIDTH_CHARGED_KBPS: u16 = 5;
    pub const UNLIMITED: u16 = 6;
    pub const MAX: u16 = UNLIMITED;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The values of the header: `#define NAME value` lines and the
    /// enumerators of every `enum`, numbered as C numbers them.
    fn parse_header(text: &str) -> HashMap<String, String> {
        let mut out = HashMap::new();
        let mut in_enum = false;
        let mut next: i64 = 0;
        // Strip comments first.
        let mut clean = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("/*") {
            clean.push_str(&rest[..i]);
            match rest[i..].find("*/") {
                Some(j) => rest = &rest[i + j + 2..],
                None => {
                    rest = "";
                    break;
                }
            }
        }
        clean.push_str(rest);

        for line in clean.lines() {
            let line = line.trim();
            if let Some(d) = line.strip_prefix("#define") {
                let mut it = d.split_whitespace();
                if let (Some(k), Some(v)) = (it.next(), it.next()) {
                    out.insert(k.to_string(), v.trim_matches('"').to_string());
                }
                continue;
            }
            if line.starts_with("enum") && line.ends_with('{') {
                in_enum = true;
                next = 0;
                continue;
            }
            if in_enum {
                if line.starts_with('}') {
                    in_enum = false;
                    continue;
                }
                let item = line.trim_end_matches(',');
                if item.is_empty() {
                    continue;
                }
                let (name, value) = match item.split_once('=') {
                    Some((n, v)) => {
                        let v = v.trim();
                        let value = if let Ok(n) = v.parse::<i64>() {
                            n
                        } else {
                            // (__X_MAX - 1)
                            let inner = v.trim_matches(|c| c == '(' || c == ')');
                            let (sym, minus) = inner.split_once('-').expect("expression");
                            let base: i64 = out[sym.trim()].parse().unwrap();
                            base - minus.trim().parse::<i64>().unwrap()
                        };
                        (n.trim(), value)
                    }
                    None => (item, next),
                };
                out.insert(name.to_string(), value.to_string());
                next = value + 1;
            }
        }
        out
    }

    #[test]
    fn header_matches() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../rust/netlink/uapi/linux/foresight.h"
        );
        let text = std::fs::read_to_string(path).expect("read the uAPI header");
        let h = parse_header(&text);
        let mut checked = 0;
        let mut check = |name: &str, v: String| {
            let got = h
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing from the header"));
            assert_eq!(got, &v, "{name}");
            checked += 1;
        };

        check("FORESIGHT_FAMILY_NAME", FAMILY_NAME.into());
        check("FORESIGHT_FAMILY_VERSION", FAMILY_VERSION.to_string());
        check("FORESIGHT_NAME_LEN", NAME_LEN.to_string());
        check("FORESIGHT_MAX_RANGES", MAX_RANGES.to_string());
        check("FORESIGHT_PROBABILITY_ONE", PROBABILITY_ONE.to_string());
        check("FORESIGHT_MCGRP_TRACE", MCGRP_TRACE.into());

        for (n, v) in [
            ("READ", op::READ),
            ("WRITE", op::WRITE),
            ("FLUSH", op::FLUSH),
            ("DISCARD", op::DISCARD),
            ("WRITE_ZEROES", op::WRITE_ZEROES),
            ("OTHER", op::OTHER),
        ] {
            check(&format!("FORESIGHT_OP_{n}"), v.to_string());
        }
        for (n, v) in [
            ("TRACKED", epoch_state::TRACKED),
            ("UNTRACKED", epoch_state::UNTRACKED),
            ("INCOMPLETE", epoch_state::INCOMPLETE),
            ("INCONSISTENT", epoch_state::INCONSISTENT),
        ] {
            check(&format!("FORESIGHT_EPOCH_STATE_{n}"), v.to_string());
            assert_eq!(
                epoch_state::name(v)
                    .unwrap()
                    .replace('-', "_")
                    .to_uppercase(),
                n
            );
        }
        for (n, v) in [
            ("CRITICAL", tier::CRITICAL),
            ("PREDICTIVE", tier::PREDICTIVE),
            ("BACKGROUND", tier::BACKGROUND),
        ] {
            check(&format!("FORESIGHT_TIER_{n}"), v.to_string());
            assert_eq!(tier::name(v).unwrap().to_uppercase(), n);
        }
        assert_eq!(tier::name(3), None);
        for (n, v) in [
            ("IDLE", shadow_state::IDLE),
            ("HYDRATING", shadow_state::HYDRATING),
            ("BACKOFF", shadow_state::BACKOFF),
            ("STOPPED", shadow_state::STOPPED),
            ("COMPLETE", shadow_state::COMPLETE),
        ] {
            check(&format!("FORESIGHT_SHADOW_STATE_{n}"), v.to_string());
            assert_eq!(shadow_state::name(v).unwrap().to_uppercase(), n);
        }
        check("FORESIGHT_EPOCH_CURRENT", epoch::CURRENT.to_string());
        check("FORESIGHT_EPOCH_PREVIOUS", epoch::PREVIOUS.to_string());
        check(
            "FORESIGHT_PREDICT_KIND_READ",
            predict_kind::READ.to_string(),
        );
        check(
            "FORESIGHT_PREDICT_KIND_WRITE",
            predict_kind::WRITE.to_string(),
        );

        for (n, v) in [
            ("DEV_GET", cmd::DEV_GET),
            ("DIRTY_GET", cmd::DIRTY_GET),
            ("DIRTY_ROTATE", cmd::DIRTY_ROTATE),
            ("PREDICT", cmd::PREDICT),
            ("POLICY_SET", cmd::POLICY_SET),
            ("TRACE_NTF", cmd::TRACE_NTF),
            ("SHADOW_GET", cmd::SHADOW_GET),
            ("SHADOW_HINT", cmd::SHADOW_HINT),
            ("BUDGET_GET", cmd::BUDGET_GET),
            ("BUDGET_SET", cmd::BUDGET_SET),
            ("MAX", cmd::MAX),
        ] {
            check(&format!("FORESIGHT_CMD_{n}"), v.to_string());
        }

        let sets: [(&str, &[(&str, u16)]); 10] = [
            (
                "DEV",
                &[
                    ("NAME", dev_attr::NAME),
                    ("DEV", dev_attr::DEV),
                    ("ORIGIN", dev_attr::ORIGIN),
                    ("SECTORS", dev_attr::SECTORS),
                    ("ORIGIN_SECTORS", dev_attr::ORIGIN_SECTORS),
                    ("READ_BIOS", dev_attr::READ_BIOS),
                    ("READ_SECTORS", dev_attr::READ_SECTORS),
                    ("WRITE_BIOS", dev_attr::WRITE_BIOS),
                    ("WRITE_SECTORS", dev_attr::WRITE_SECTORS),
                    ("DISCARD_BIOS", dev_attr::DISCARD_BIOS),
                    ("DISCARD_SECTORS", dev_attr::DISCARD_SECTORS),
                    ("FLUSH_BIOS", dev_attr::FLUSH_BIOS),
                    ("ERRORS", dev_attr::ERRORS),
                    ("EPOCH", dev_attr::EPOCH),
                    ("LOG_STATE", dev_attr::LOG_STATE),
                    ("PREV_STATE", dev_attr::PREV_STATE),
                    ("LEVEL", dev_attr::LEVEL),
                    ("ADAPTIVE", dev_attr::ADAPTIVE),
                    ("GRAIN_BYTES", dev_attr::GRAIN_BYTES),
                    ("DIRTY_BYTES", dev_attr::DIRTY_BYTES),
                    ("PREV_DIRTY_BYTES", dev_attr::PREV_DIRTY_BYTES),
                    ("LOG_MEMORY", dev_attr::LOG_MEMORY),
                    ("COARSE_FALLBACKS", dev_attr::COARSE_FALLBACKS),
                    ("DEGRADED", dev_attr::DEGRADED),
                    ("TRACE_RECORDS", dev_attr::TRACE_RECORDS),
                    ("TRACE_DROPPED", dev_attr::TRACE_DROPPED),
                    ("PREDICT_RANGES", dev_attr::PREDICT_RANGES),
                    ("CACHE_CAPACITY", dev_attr::CACHE_CAPACITY),
                    ("CACHE_BYTES", dev_attr::CACHE_BYTES),
                    ("CACHE_HITS", dev_attr::CACHE_HITS),
                    ("CACHE_MISSES", dev_attr::CACHE_MISSES),
                    ("CACHE_PARTIAL", dev_attr::CACHE_PARTIAL),
                    ("PREFETCH_QUEUED", dev_attr::PREFETCH_QUEUED),
                    ("PREFETCH_INFLIGHT", dev_attr::PREFETCH_INFLIGHT),
                    ("PREFETCH_ERRORS", dev_attr::PREFETCH_ERRORS),
                    ("PREFETCH_STALE", dev_attr::PREFETCH_STALE),
                    ("VERIFY_MISMATCH", dev_attr::VERIFY_MISMATCH),
                    ("TIER", dev_attr::TIER),
                    ("ROTATE_OWNER", dev_attr::ROTATE_OWNER),
                    ("WRITE_KBPS", dev_attr::WRITE_KBPS),
                    ("WRITE_DELAYED", dev_attr::WRITE_DELAYED),
                    ("WRITE_DELAYED_BYTES", dev_attr::WRITE_DELAYED_BYTES),
                    ("WRITE_WAITING", dev_attr::WRITE_WAITING),
                    ("MAX", dev_attr::MAX),
                ],
            ),
            (
                "TIER_STATS",
                &[
                    ("TIER", tier_stats_attr::TIER),
                    ("ISSUED", tier_stats_attr::ISSUED),
                    ("COMPLETED", tier_stats_attr::COMPLETED),
                    ("USED", tier_stats_attr::USED),
                    ("WASTED", tier_stats_attr::WASTED),
                    ("MAX", tier_stats_attr::MAX),
                ],
            ),
            (
                "EXTENT",
                &[
                    ("START", extent_attr::START),
                    ("LENGTH", extent_attr::LENGTH),
                    ("MAX", extent_attr::MAX),
                ],
            ),
            (
                "DIRTY",
                &[
                    ("NAME", dirty_attr::NAME),
                    ("DEV", dirty_attr::DEV),
                    ("EPOCH", dirty_attr::EPOCH),
                    ("EPOCH_NUMBER", dirty_attr::EPOCH_NUMBER),
                    ("STATE", dirty_attr::STATE),
                    ("EXTENT", dirty_attr::EXTENT),
                    ("EXPECT_EPOCH", dirty_attr::EXPECT_EPOCH),
                    ("CLAIM", dirty_attr::CLAIM),
                    ("FORCE", dirty_attr::FORCE),
                    ("MAX", dirty_attr::MAX),
                ],
            ),
            (
                "RANGE",
                &[
                    ("START", range_attr::START),
                    ("LENGTH", range_attr::LENGTH),
                    ("PROBABILITY", range_attr::PROBABILITY),
                    ("MAX", range_attr::MAX),
                ],
            ),
            (
                "PREDICT",
                &[
                    ("NAME", predict_attr::NAME),
                    ("DEV", predict_attr::DEV),
                    ("KIND", predict_attr::KIND),
                    ("HORIZON_MS", predict_attr::HORIZON_MS),
                    ("RANGE", predict_attr::RANGE),
                    ("ACCEPTED", predict_attr::ACCEPTED),
                    ("MAX", predict_attr::MAX),
                ],
            ),
            (
                "POLICY",
                &[
                    ("NAME", policy_attr::NAME),
                    ("DEV", policy_attr::DEV),
                    ("LEVEL", policy_attr::LEVEL),
                    ("ADAPTIVE", policy_attr::ADAPTIVE),
                    ("BASE", policy_attr::BASE),
                    ("W_IO", policy_attr::W_IO),
                    ("W_DIRTY", policy_attr::W_DIRTY),
                    ("MIN_LEVEL", policy_attr::MIN_LEVEL),
                    ("MAX_LEVEL", policy_attr::MAX_LEVEL),
                    ("HYSTERESIS", policy_attr::HYSTERESIS),
                    ("PREDICT_TTL", policy_attr::PREDICT_TTL),
                    ("DENSE_PCT", policy_attr::DENSE_PCT),
                    ("INTERVAL_MS", policy_attr::INTERVAL_MS),
                    ("MAX_MEMORY_KB", policy_attr::MAX_MEMORY_KB),
                    ("TRACE_RATE", policy_attr::TRACE_RATE),
                    ("CACHE_MB", policy_attr::CACHE_MB),
                    ("CRITICAL_PPM", policy_attr::CRITICAL_PPM),
                    ("PREDICTIVE_PPM", policy_attr::PREDICTIVE_PPM),
                    ("MIN_PPM", policy_attr::MIN_PPM),
                    ("PREFETCH_KBPS", policy_attr::PREFETCH_KBPS),
                    ("PREFETCH_INFLIGHT", policy_attr::PREFETCH_INFLIGHT),
                    ("LOAD_LIMIT", policy_attr::LOAD_LIMIT),
                    ("IDLE_MS", policy_attr::IDLE_MS),
                    ("WRITE_KBPS", policy_attr::WRITE_KBPS),
                    ("MAX", policy_attr::MAX),
                ],
            ),
            (
                "TRACE",
                &[
                    ("NAME", trace_attr::NAME),
                    ("DEV", trace_attr::DEV),
                    ("RECORDS", trace_attr::RECORDS),
                    ("DROPPED", trace_attr::DROPPED),
                    ("MAX", trace_attr::MAX),
                ],
            ),
            (
                "SHADOW",
                &[
                    ("NAME", shadow_attr::NAME),
                    ("DEV", shadow_attr::DEV),
                    ("SOURCE", shadow_attr::SOURCE),
                    ("DESTINATION", shadow_attr::DESTINATION),
                    ("SECTORS", shadow_attr::SECTORS),
                    ("REGION_SECTORS", shadow_attr::REGION_SECTORS),
                    ("REGIONS", shadow_attr::REGIONS),
                    ("HYDRATED", shadow_attr::HYDRATED),
                    ("COPYING", shadow_attr::COPYING),
                    ("URGENT", shadow_attr::URGENT),
                    ("PREDICTED", shadow_attr::PREDICTED),
                    ("ASCENDING", shadow_attr::ASCENDING),
                    ("OVERWRITTEN", shadow_attr::OVERWRITTEN),
                    ("MARKED", shadow_attr::MARKED),
                    ("READS_DEST", shadow_attr::READS_DEST),
                    ("READS_SOURCE", shadow_attr::READS_SOURCE),
                    ("COPIED_BYTES", shadow_attr::COPIED_BYTES),
                    ("RATE_KBPS", shadow_attr::RATE_KBPS),
                    ("WAITING_WRITES", shadow_attr::WAITING_WRITES),
                    ("COPY_ERRORS", shadow_attr::COPY_ERRORS),
                    ("COMMIT_ERRORS", shadow_attr::COMMIT_ERRORS),
                    ("CRC_MISMATCHES", shadow_attr::CRC_MISMATCHES),
                    ("HINTS", shadow_attr::HINTS),
                    ("STATE", shadow_attr::STATE),
                    ("RANGE", shadow_attr::RANGE),
                    ("ACCEPTED", shadow_attr::ACCEPTED),
                    ("MAX", shadow_attr::MAX),
                ],
            ),
            (
                "BUDGET",
                &[
                    ("CACHE_TOTAL_MB", budget_attr::CACHE_TOTAL_MB),
                    ("CACHE_CHARGED_MB", budget_attr::CACHE_CHARGED_MB),
                    ("DEVICES", budget_attr::DEVICES),
                    ("BANDWIDTH_TOTAL_KBPS", budget_attr::BANDWIDTH_TOTAL_KBPS),
                    ("BANDWIDTH_CHARGED_KBPS", budget_attr::BANDWIDTH_CHARGED_KBPS),
                    ("UNLIMITED", budget_attr::UNLIMITED),
                    ("MAX", budget_attr::MAX),
                ],
            ),
        ];
        for (set, attrs) in sets {
            for (n, v) in attrs {
                check(&format!("FORESIGHT_A_{set}_{n}"), v.to_string());
            }
        }
        // Every FORESIGHT_ name of the header (but the __*_MAX sentinels)
        // is mirrored here.
        let total = h.keys().filter(|k| k.starts_with("FORESIGHT_")).count();
        assert_eq!(checked, total, "some header constant is not mirrored");
    }

    #[test]
    fn header_parser_numbers_like_c() {
        let h = parse_header(
            "enum {\n A_X = 1, /* c */\n A_Y,\n\n __A_MAX,\n A_MAX = (__A_MAX - 1)\n};\n\
             enum e {\n B_0,\n B_1,\n};\n#define C_STR \"s\"\n",
        );
        assert_eq!(h["A_X"], "1");
        assert_eq!(h["A_Y"], "2");
        assert_eq!(h["A_MAX"], "2");
        assert_eq!(h["B_0"], "0");
        assert_eq!(h["B_1"], "1");
        assert_eq!(h["C_STR"], "s");
    }
}
