// SPDX-License-Identifier: GPL-2.0

//! Finding the device a request names in a registry's list, and listing
//! them in order for a dump: what every target's operations do alike.

use super::{
    uapi::NAME_LEN,
    Attrs,
    Dump,
    Failure,
    Msg,
    Request, //
};
use crate::{
    dm,
    logic::trace::decode_dev, //
};
use kernel::{
    prelude::*,
    sync::Arc, //
};

/// A device-mapper name, NUL-terminated.
pub type Name = [u8; NAME_LEN as usize];

/// A table in a registry: the number of its mapped device, and the order
/// of its last resume (of several tables of one device, a reload in
/// progress, the one resumed last is the device's).
pub trait Entry {
    /// The mapped device's number (kernel `dev_t`).
    fn devt(&self) -> u32;
    /// Higher for a later resume.
    fn generation(&self) -> u64;
}

/// The current name of mapped device `devt`, NUL-terminated in `buf`.
pub fn name_of(devt: u32, buf: &mut Name) -> Option<&CStr> {
    let n = dm::device_name(devt, buf)?;
    CStr::from_bytes_with_nul(&buf[..=n]).ok()
}

/// What [`find`] answers when nothing matches, by what was given.
pub struct NotFound {
    /// A name and a number that do not name one device.
    pub both: &'static CStr,
    /// A name no device has.
    pub name: &'static CStr,
    /// A number no device has.
    pub dev: &'static CStr,
}

/// The device a request names (by `name_attr`, `dev_attr`, or both); of
/// several tables of one device, the one resumed last.
pub fn find<D: Entry>(
    list: &[Arc<D>],
    req: &impl Attrs,
    name_attr: u32,
    dev_attr: u32,
    not_found: &NotFound,
) -> Result<Arc<D>, Failure> {
    let name = req.str(name_attr);
    let dev = req.u32(dev_attr).map(decode_dev);
    if name.is_none() && dev.is_none() {
        return Err(Failure::new(EINVAL, c"give the device's name or number", 0));
    }
    let mut buf: Name = [0; NAME_LEN as usize];
    let mut best: Option<&Arc<D>> = None;
    for s in list {
        if dev.is_some_and(|d| d != s.devt()) {
            continue;
        }
        if let Some(name) = name {
            if name_of(s.devt(), &mut buf).map(CStr::to_bytes) != Some(name) {
                continue;
            }
        }
        if best.is_none_or(|b| b.generation() < s.generation()) {
            best = Some(s);
        }
    }
    best.cloned().ok_or(match (name, dev) {
        (Some(_), Some(_)) => Failure::new(ENODEV, not_found.both, dev_attr),
        (Some(_), None) => Failure::new(ENODEV, not_found.name, name_attr),
        _ => Failure::new(ENODEV, not_found.dev, dev_attr),
    })
}

/// For a dump in order of device number: the device numbered `from` or
/// next above (of several tables of one device, the one resumed last).
pub fn next_from<D: Entry>(list: &[Arc<D>], from: u64) -> Option<&Arc<D>> {
    let mut best: Option<&Arc<D>> = None;
    for s in list {
        if u64::from(s.devt()) < from {
            continue;
        }
        best = match best {
            Some(b)
                if b.devt() < s.devt()
                    || (b.devt() == s.devt() && b.generation() >= s.generation()) =>
            {
                Some(b)
            }
            _ => Some(s),
        };
    }
    best
}

/// A dump of every device of `list` in order of device number, one
/// message of `cmd` each (`put` fills it): `Ok(true)` when done.  The
/// dump's state is the next number to list.
pub fn dump_in_order<D: Entry>(
    dump: &mut Dump<'_>,
    list: &[Arc<D>],
    cmd: u8,
    put: impl Fn(&mut Msg<'_>, &D) -> Result,
) -> Result<bool, Failure> {
    loop {
        let Some(d) = next_from(list, dump.state()[0]) else {
            return Ok(true);
        };
        if !dump
            .message(cmd, |m| put(m, d))
            .map_err(|e| Failure::new(e, c"cannot build the reply", 0))?
        {
            return Ok(false);
        }
        dump.state()[0] = u64::from(d.devt()) + 1;
    }
}

/// The predicted ranges of a request (the nested `range` attributes
/// `attr`), as `(start, length, probability)`; at most
/// [`MAX_RANGES`](super::uapi::MAX_RANGES).
pub fn ranges(req: &Request<'_>, attr: u32) -> Result<KVec<(u64, u64, u32)>, Failure> {
    use super::uapi::{
        attr as a,
        MAX_RANGES, //
    };
    let n = req.count(attr);
    if n > MAX_RANGES as usize {
        return Err(Failure::new(
            E2BIG,
            c"too many ranges in one request (at most 4096)",
            0,
        ));
    }
    let nomem = |_| Failure::new(ENOMEM, c"out of memory", 0);
    let mut out = KVec::with_capacity(n, GFP_KERNEL).map_err(nomem)?;
    req.for_each_nested(attr, a::RANGE_PROBABILITY, super::range_policy(), |r| {
        let (Some(start), Some(len), Some(p)) = (
            r.u64(a::RANGE_START),
            r.u64(a::RANGE_LENGTH),
            r.u32(a::RANGE_PROBABILITY),
        ) else {
            return Err(Failure::new(
                EINVAL,
                c"a range needs start, length and probability",
                attr,
            ));
        };
        out.push((start, len, p), GFP_KERNEL).map_err(nomem)
    })?;
    Ok(out)
}
