// SPDX-License-Identifier: GPL-2.0
//! `foresight dirty dump|rotate`.

use std::io::{self, BufWriter, Write};

use serde::Serialize;

use super::status::EnumVal;
use super::{bad_answer, exit, CmdResult, Failure};
use crate::dev::DevSpec;
use crate::nl::{self, AttrBuf, Attrs, Client, Reply};
use crate::uapi::{self, dirty_attr as A, extent_attr as E};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Epoch {
    Current,
    Previous,
}

impl Epoch {
    fn value(self) -> u32 {
        match self {
            Epoch::Current => uapi::epoch::CURRENT,
            Epoch::Previous => uapi::epoch::PREVIOUS,
        }
    }
}

/// The dirty log of an epoch as the dump assembled it.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct DirtyLog {
    pub epoch: u64,
    pub state: Option<EnumVal>,
    pub extents: Vec<(u64, u64)>,
}

impl DirtyLog {
    /// Take one message of the dump.
    pub fn add(&mut self, a: Attrs<'_>) -> Result<(), String> {
        if let Some(n) = a.u64(A::EPOCH_NUMBER)? {
            if self.state.is_some() && n != self.epoch {
                return Err(format!(
                    "epoch changed during the dump ({} then {n})",
                    self.epoch
                ));
            }
            self.epoch = n;
        }
        if let Some(s) = a.u32(A::STATE)? {
            self.state = Some(EnumVal::epoch_state(s));
        }
        for p in a.all(A::EXTENT) {
            let l = Attrs::parse_nested(p)?;
            let e = Attrs::new(&l);
            let start = e.u64(E::START)?.ok_or("extent without start")?;
            let len = e.u64(E::LENGTH)?.ok_or("extent without length")?;
            if let Some(&(ps, pl)) = self.extents.last() {
                if start < ps.saturating_add(pl) {
                    return Err(format!(
                        "extents out of order ({ps}+{pl} then {start}+{len})"
                    ));
                }
            }
            self.extents.push((start, len));
        }
        Ok(())
    }

    pub fn tracked(&self) -> bool {
        self.state == Some(EnumVal::Name("tracked"))
    }

    pub fn state_text(&self) -> String {
        match self.state {
            Some(EnumVal::Name(n)) => n.to_string(),
            Some(EnumVal::Num(v)) => format!("unknown-{v}"),
            None => "unknown".into(),
        }
    }

    /// The text output: one `start length` line per extent.
    pub fn write_text(&self, w: &mut impl Write) -> io::Result<()> {
        for (s, l) in &self.extents {
            writeln!(w, "{s} {l}")?;
        }
        Ok(())
    }
}

/// The dirty extents of an epoch of a device.
pub fn fetch(client: &mut Client, dev: &DevSpec, epoch: Epoch) -> Result<DirtyLog, Failure> {
    let op = "dirty-get";
    let mut a = AttrBuf::new();
    a.device(A::NAME, A::DEV, dev);
    a.u32(A::EPOCH, epoch.value());
    let mut log = DirtyLog::default();
    client.dump(op, uapi::cmd::DIRTY_GET, a, |r: Reply| {
        log.add(r.attrs()).map_err(|msg| nl::Error::Protocol {
            op: op.to_string(),
            msg,
        })
    })?;
    if log.state.is_none() {
        return Err(bad_answer(op, "the kernel sent no epoch state"));
    }
    Ok(log)
}

pub fn dump(dev: &str, epoch: Epoch, json: bool) -> CmdResult {
    let dev = DevSpec::parse(dev)?;
    let mut client = Client::connect()?;
    let log = fetch(&mut client, &dev, epoch)?;
    eprintln!("# epoch {} {}", log.epoch, log.state_text());
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let res = if json {
        serde_json::to_writer(&mut out, &log)
            .map_err(io::Error::other)
            .and_then(|_| writeln!(out))
    } else {
        log.write_text(&mut out)
    };
    res.and_then(|_| out.flush())
        .map_err(|e| format!("write the extents: {e}"))?;
    if !log.tracked() {
        eprintln!(
            "foresight: epoch {} of {} is {}: its dirty set does not cover every write; copy the whole device",
            log.epoch,
            dev,
            log.state_text()
        );
        return Ok(exit::UNTRACKED);
    }
    Ok(exit::OK)
}

/// How to rotate.
#[derive(Clone, Copy, Debug, Default)]
pub struct RotateHow {
    /// Only if this is the current epoch.
    pub expect: Option<u64>,
    /// Make this socket the owner of the device's rotation.
    pub claim: bool,
    /// Even if another socket owns it.
    pub force: bool,
}

/// Rotates a device's log: the new epoch's number, and the state of the
/// epoch that just ended.
pub fn rotate_with(
    client: &mut Client,
    dev: &DevSpec,
    how: RotateHow,
) -> Result<(u64, Option<EnumVal>), Failure> {
    let op = "dirty-rotate";
    let mut a = AttrBuf::new();
    a.device(A::NAME, A::DEV, dev);
    if let Some(n) = how.expect {
        a.u64(A::EXPECT_EPOCH, n);
    }
    if how.claim {
        a.flag(A::CLAIM);
    }
    if how.force {
        a.flag(A::FORCE);
    }
    let r = client.request_one(op, uapi::cmd::DIRTY_ROTATE, a)?;
    let at = r.attrs();
    let n = at
        .u64(A::EPOCH_NUMBER)
        .map_err(|m| bad_answer(op, m))?
        .ok_or_else(|| bad_answer(op, "no epoch-number in the reply"))?;
    let prev = at
        .u32(A::STATE)
        .map_err(|m| bad_answer(op, m))?
        .map(EnumVal::epoch_state);
    Ok((n, prev))
}

pub fn rotate(dev: &str, expect: Option<u64>, force: bool) -> CmdResult {
    let dev = DevSpec::parse(dev)?;
    let mut client = Client::connect()?;
    let how = RotateHow {
        expect,
        claim: false,
        force,
    };
    let (n, prev) = rotate_with(&mut client, &dev, how)?;
    if let Some(s) = prev {
        eprintln!("# previous epoch {s}");
    }
    println!("{n}");
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::parse_attrs;
    use crate::nl::wire::nla;

    fn msg(epoch: u64, state: u32, ext: &[(u64, u64)]) -> Vec<u8> {
        let mut b = nla(A::NAME, b"vm1\0");
        b.extend(nla(A::EPOCH_NUMBER, &epoch.to_ne_bytes()));
        b.extend(nla(A::STATE, &state.to_ne_bytes()));
        for (s, l) in ext {
            let mut i = nla(E::START, &s.to_ne_bytes());
            i.extend(nla(E::LENGTH, &l.to_ne_bytes()));
            b.extend(nla(A::EXTENT | 0x8000, &i));
        }
        b
    }

    #[test]
    fn assemble_and_print() {
        let mut log = DirtyLog::default();
        for m in [
            msg(4, 0, &[(0, 8), (16, 8)]),
            msg(4, 0, &[]),
            msg(4, 0, &[(1024, 2048)]),
        ] {
            let l = parse_attrs(&m).unwrap();
            log.add(Attrs::new(&l)).unwrap();
        }
        assert!(log.tracked());
        assert_eq!(log.epoch, 4);
        let mut out = Vec::new();
        log.write_text(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "0 8\n16 8\n1024 2048\n");
        assert_eq!(
            serde_json::to_string(&log).unwrap(),
            r#"{"epoch":4,"state":"tracked","extents":[[0,8],[16,8],[1024,2048]]}"#
        );
    }

    #[test]
    fn untracked_and_errors() {
        let mut log = DirtyLog::default();
        let l = parse_attrs(&msg(2, 2, &[])).unwrap();
        log.add(Attrs::new(&l)).unwrap();
        assert!(!log.tracked());
        assert_eq!(log.state_text(), "incomplete");

        let mut log = DirtyLog::default();
        let l = parse_attrs(&msg(2, 0, &[(100, 10), (50, 1)])).unwrap();
        assert!(log
            .add(Attrs::new(&l))
            .unwrap_err()
            .contains("out of order"));

        let mut log = DirtyLog::default();
        let l = parse_attrs(&msg(2, 0, &[])).unwrap();
        log.add(Attrs::new(&l)).unwrap();
        let l = parse_attrs(&msg(3, 0, &[])).unwrap();
        assert!(log.add(Attrs::new(&l)).is_err());
    }
}
