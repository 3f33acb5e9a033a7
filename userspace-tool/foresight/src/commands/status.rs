// SPDX-License-Identifier: GPL-2.0
//! `foresight status`: dev-get.

use std::fmt::Write as _;

use serde::Serialize;

use super::{bad_answer, human_bytes, CmdResult, Failure};
use crate::dev::{DevNum, DevSpec};
use crate::nl::{AttrBuf, Attrs, Client, Reply};
use crate::uapi::{self, dev_attr as A};

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
}

impl std::fmt::Display for EnumVal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnumVal::Name(n) => write!(f, "{n}"),
            EnumVal::Num(v) => write!(f, "unknown ({v})"),
        }
    }
}

/// A device as dev-get describes it; every attribute is optional.
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
}

impl DevInfo {
    pub fn from_attrs(a: Attrs<'_>) -> Result<Self, String> {
        Ok(DevInfo {
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
        })
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

pub fn run(dev: Option<&str>, json: bool) -> CmdResult {
    let dev = dev.map(DevSpec::parse).transpose()?;
    let mut client = Client::connect()?;
    let devs = match &dev {
        Some(d) => vec![dev_get(&mut client, d)?],
        None => dev_dump(&mut client)?,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&devs).map_err(|e| e.to_string())?
        );
    } else {
        if devs.is_empty() {
            eprintln!("foresight: no foresight devices");
        }
        let blocks: Vec<String> = devs.iter().map(DevInfo::format).collect();
        print!("{}", blocks.join("\n"));
    }
    Ok(super::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::parse_attrs;

    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

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
}
