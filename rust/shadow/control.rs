// SPDX-License-Identifier: GPL-2.0

//! The netlink operations on foreshadow devices (`shadow-get`,
//! `shadow-hint`; `Documentation/netlink/specs/foresight.yaml`), on the
//! devices of the registry ([`SHADOWS`]).  Every operation runs with the
//! registry locked, so a device being removed either completes the
//! operation first or is not found (`ENODEV`).

use super::{
    Core,
    Mode,
    SHADOWS, //
};
use crate::{
    genl::{
        self,
        uapi::{
            attr,
            cmd,
            shadow_state,
            NAME_LEN,
            PROBABILITY_ONE, //
        },
        Dump,
        Failure,
        Msg,
        Name,
        NotFound,
        Request, //
    },
    logic::{
        hydrate::{
            Hint,
            PROB_ONE, //
        },
        trace::encode_dev,
    },
};
use core::sync::atomic::Ordering::Relaxed;
use kernel::prelude::*;

impl genl::Entry for Core {
    fn devt(&self) -> u32 {
        self.devt
    }

    fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }
}

const NOT_FOUND: NotFound = NotFound {
    both: c"no foreshadow device with that name and number",
    name: c"no foreshadow device of that name",
    dev: c"no foreshadow device of that number",
};

/// The registry, locked (for the length of one operation).
fn shadows() -> Result<genl::Locked<Core>, Failure> {
    SHADOWS
        .lock()
        .ok_or(Failure::new(ENODEV, c"foresight is being unloaded", 0))
}

fn msg_failure(e: Error) -> Failure {
    Failure::new(e, c"cannot build the reply", 0)
}

/// Every attribute of `shadow-get`'s reply.
fn put(m: &mut Msg<'_>, c: &Core) -> Result {
    let mut buf: Name = [0; NAME_LEN as usize];
    if let Some(name) = genl::name_of(c.devt, &mut buf) {
        m.put_str(attr::SHADOW_NAME, name)?;
    }
    m.put_u32(attr::SHADOW_DEV, encode_dev(c.devt))?;
    m.put_str(attr::SHADOW_DESTINATION, &c.names[1])?;
    m.put_str(attr::SHADOW_SOURCE, &c.names[2])?;
    m.put_u64(attr::SHADOW_SECTORS, c.len_sectors)?;
    m.put_u32(attr::SHADOW_REGION_SECTORS, c.region_sectors as u32)?;
    let r = c.report();
    let n = r.counts;
    for (a, v) in [
        (attr::SHADOW_REGIONS, r.regions),
        (attr::SHADOW_HYDRATED, r.hydrated),
        (attr::SHADOW_COPYING, r.copying),
        (attr::SHADOW_URGENT, n.urgent),
        (attr::SHADOW_PREDICTED, n.predicted),
        (attr::SHADOW_ASCENDING, n.ascending),
        (attr::SHADOW_OVERWRITTEN, n.overwritten),
        (attr::SHADOW_MARKED, n.marked),
        (attr::SHADOW_READS_DEST, r.reads_dest),
        (attr::SHADOW_READS_SOURCE, r.reads_source),
        (attr::SHADOW_COPIED_BYTES, r.copied_bytes),
        (attr::SHADOW_RATE_KBPS, r.rate_kbps),
        (attr::SHADOW_WAITING_WRITES, r.waiting_writes),
        (attr::SHADOW_COPY_ERRORS, r.copy_errors),
        (attr::SHADOW_COMMIT_ERRORS, r.commit_errors),
        (attr::SHADOW_CRC_MISMATCHES, r.crc_mismatches),
        (attr::SHADOW_HINTS, r.hints),
    ] {
        m.put_u64(a, v)?;
    }
    let state = match r.mode {
        Mode::Idle => shadow_state::IDLE,
        Mode::Hydrating => shadow_state::HYDRATING,
        Mode::Backoff => shadow_state::BACKOFF,
        Mode::Stopped => shadow_state::STOPPED,
        Mode::Complete => shadow_state::COMPLETE,
    };
    m.put_u32(attr::SHADOW_STATE, state)
}

/// `shadow-get` (do).
pub(crate) fn get(req: &Request<'_>) -> Result<(), Failure> {
    let list = shadows()?;
    let c = genl::find(&list, req, attr::SHADOW_NAME, attr::SHADOW_DEV, &NOT_FOUND)?;
    req.reply(cmd::SHADOW_GET, |m| put(m, &c))
        .map_err(msg_failure)
}

/// `shadow-get` (dump): every device, in order of device number; the
/// state is the next number to list.
pub(crate) fn dump(dump: &mut Dump<'_>) -> Result<bool, Failure> {
    genl::dump_in_order(dump, &shadows()?, cmd::SHADOW_GET, put)
}

/// `shadow-hint`: the predicted ranges (sectors) as region hints,
/// replacing the last ones; the copiers take them with their next batch.
pub(crate) fn hint(req: &Request<'_>) -> Result<(), Failure> {
    let list = shadows()?;
    let c = genl::find(&list, req, attr::SHADOW_NAME, attr::SHADOW_DEV, &NOT_FOUND)?;
    let ranges = genl::ranges(req, attr::SHADOW_RANGE)?;
    let mut hints = KVec::with_capacity(ranges.len(), GFP_KERNEL)
        .map_err(|_| Failure::new(ENOMEM, c"out of memory", 0))?;
    // Past the device: ignored (as the hint message does).
    for &(start, len, p) in ranges.iter().filter(|r| r.0 < c.len_sectors) {
        let last = start.saturating_add(len - 1).min(c.len_sectors - 1);
        let (first, last) = (start >> c.region_shift, last >> c.region_shift);
        let prob = (u64::from(p) * u64::from(PROB_ONE) / u64::from(PROBABILITY_ONE)) as u32;
        let h = Hint {
            start: first,
            len: last - first + 1,
            prob,
        };
        hints
            .push(h, GFP_KERNEL)
            .map_err(|_| Failure::new(ENOMEM, c"out of memory", 0))?;
    }
    c.state.lock().h.set_hints(hints.iter().copied());
    req.reply(cmd::SHADOW_HINT, |m| {
        m.put_u32(attr::SHADOW_ACCEPTED, hints.len() as u32)
    })
    .map_err(msg_failure)
}
