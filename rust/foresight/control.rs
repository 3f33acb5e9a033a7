// SPDX-License-Identifier: GPL-2.0

//! The netlink operations of the `foresight` family
//! (`Documentation/netlink/specs/foresight.yaml`), on the devices of the
//! registry ([`DEVICES`](super::DEVICES)).  Every operation runs with the registry
//! locked, so a device being removed either completes the operation first
//! or is not found (`ENODEV`).

use super::Shared;
use crate::{
    budget::Refused,
    genl::{
        self,
        uapi::{
            attr,
            cmd,
            GROUP_TRACE,
            NAME_LEN,
            PROBABILITY_ONE, //
        },
        Attrs,
        Dump,
        Failure,
        Msg,
        Name,
        NotFound,
        Request, //
    },
    logic::{
        rotation::{
            self,
            Caller,
            Refusal, //
        },
        table::Epoch,
        trace::encode_dev,
    },
};
use core::sync::atomic::Ordering::Relaxed;
use kernel::{
    prelude::*,
    sync::Arc, //
};

/// The current name of a device, NUL-terminated in `buf`.
fn name_of<'a>(shared: &Shared, buf: &'a mut Name) -> Option<&'a CStr> {
    genl::name_of(shared.devt, buf)
}

const NOT_FOUND: NotFound = NotFound {
    both: c"no foresight device with that name and number",
    name: c"no foresight device of that name",
    dev: c"no foresight device of that number",
};

/// The device a request names (see [`genl::find`]).
fn find(
    list: &[Arc<Shared>],
    req: &impl Attrs,
    name_attr: u32,
    dev_attr: u32,
) -> Result<Arc<Shared>, Failure> {
    genl::find(list, req, name_attr, dev_attr, &NOT_FOUND)
}

impl genl::Entry for Shared {
    fn devt(&self) -> u32 {
        self.devt
    }

    fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }
}

fn msg_failure(e: Error) -> Failure {
    if e == EMSGSIZE {
        Failure::new(e, c"reply too large", 0)
    } else {
        Failure::new(e, c"cannot build the reply", 0)
    }
}

/// Puts every attribute of `dev-get`'s reply.
fn put_dev(m: &mut Msg<'_>, s: &Shared) -> Result {
    let mut buf: Name = [0; NAME_LEN as usize];
    if let Some(name) = name_of(s, &mut buf) {
        m.put_str(attr::DEV_NAME, name)?;
    }
    m.put_u32(attr::DEV_DEV, encode_dev(s.devt))?;
    m.put_str(attr::DEV_ORIGIN, &s.origin)?;
    m.put_u64(attr::DEV_SECTORS, s.len_sectors)?;
    m.put_u64(attr::DEV_ORIGIN_SECTORS, s.origin_sectors)?;
    let t = s.stats.totals();
    for (a, v) in [
        (attr::DEV_READ_BIOS, t.read_bios),
        (attr::DEV_READ_SECTORS, t.read_sectors),
        (attr::DEV_WRITE_BIOS, t.write_bios),
        (attr::DEV_WRITE_SECTORS, t.write_sectors),
        (attr::DEV_DISCARD_BIOS, t.discard_bios),
        (attr::DEV_DISCARD_SECTORS, t.discard_sectors),
        (attr::DEV_FLUSH_BIOS, t.flush_bios),
        (attr::DEV_ERRORS, t.errors),
    ] {
        m.put_u64(a, v)?;
    }
    let l = s.log.status();
    m.put_u64(attr::DEV_EPOCH, l.epoch)?;
    m.put_u32(attr::DEV_LOG_STATE, l.state.code().into())?;
    m.put_u32(attr::DEV_PREV_STATE, l.prev_state.code().into())?;
    m.put_u32(attr::DEV_LEVEL, l.level.into())?;
    m.put_u8(attr::DEV_ADAPTIVE, l.adaptive.into())?;
    m.put_u64(attr::DEV_GRAIN_BYTES, l.grain_bytes)?;
    m.put_u64(attr::DEV_DIRTY_BYTES, l.dirty_bytes)?;
    m.put_u64(attr::DEV_PREV_DIRTY_BYTES, l.prev_dirty_bytes)?;
    m.put_u64(attr::DEV_LOG_MEMORY, l.memory_bytes)?;
    m.put_u64(attr::DEV_COARSE_FALLBACKS, l.coarse_fallbacks)?;
    m.put_u8(attr::DEV_DEGRADED, l.degraded.into())?;
    let (sent, dropped) = s.tracer.counts();
    m.put_u64(attr::DEV_TRACE_RECORDS, sent)?;
    m.put_u64(attr::DEV_TRACE_DROPPED, dropped)?;
    m.put_u64(attr::DEV_PREDICT_RANGES, s.predicted.load(Relaxed))?;
    let c = s.cache.report();
    for (a, v) in [
        (attr::DEV_CACHE_CAPACITY, c.capacity_bytes),
        (attr::DEV_CACHE_BYTES, c.cached_bytes),
        (attr::DEV_CACHE_HITS, c.stats.hits),
        (attr::DEV_CACHE_MISSES, c.stats.misses),
        (attr::DEV_CACHE_PARTIAL, c.stats.partial_hits),
        (attr::DEV_PREFETCH_QUEUED, c.queued),
        (attr::DEV_PREFETCH_INFLIGHT, c.inflight),
        (attr::DEV_PREFETCH_ERRORS, c.stats.errors),
        (attr::DEV_PREFETCH_STALE, c.stats.stale_dropped),
        (attr::DEV_VERIFY_MISMATCH, c.stats.verify_mismatch),
    ] {
        m.put_u64(a, v)?;
    }
    for t in 0..3 {
        m.nest(attr::DEV_TIER, |m| {
            m.put_u32(attr::TIER_STATS_TIER, t as u32)?;
            m.put_u64(attr::TIER_STATS_ISSUED, c.stats.issued[t])?;
            m.put_u64(attr::TIER_STATS_COMPLETED, c.stats.completed[t])?;
            m.put_u64(attr::TIER_STATS_USED, c.stats.used[t])?;
            m.put_u64(attr::TIER_STATS_WASTED, c.stats.wasted[t])
        })?;
    }
    if let Some(port) = s.rotation_owner() {
        m.put_u32(attr::DEV_ROTATE_OWNER, port)?;
    }
    let t = &s.throttle;
    m.put_u64(attr::DEV_WRITE_KBPS, t.kbps())?;
    m.put_u64(attr::DEV_WRITE_DELAYED, t.delayed.load(Relaxed))?;
    m.put_u64(attr::DEV_WRITE_DELAYED_BYTES, t.delayed_bytes.load(Relaxed))?;
    m.put_u32(attr::DEV_WRITE_WAITING, t.waiting() as u32)?;
    Ok(())
}

/// `dev-get` (do).
pub(crate) fn dev_get(req: &Request<'_>) -> Result<(), Failure> {
    let list = devices()?;
    let s = find(&list, req, attr::DEV_NAME, attr::DEV_DEV)?;
    req.reply(cmd::DEV_GET, |m| put_dev(m, &s))
        .map_err(msg_failure)
}

/// `dev-get` (dump): every device, in order of device number; the state
/// is the next number to list.
pub(crate) fn dev_dump(dump: &mut Dump<'_>) -> Result<bool, Failure> {
    genl::dump_in_order(dump, &devices()?, cmd::DEV_GET, put_dev)
}

// Dump state of `dirty-get`.
const STARTED: usize = 0;
const EPOCH: usize = 1;
const FROM: usize = 2;

/// `dirty-get` (dump): the extents of an epoch, as many per message as
/// fit; the state is the epoch's number and the next sector to list.
pub(crate) fn dirty_dump(dump: &mut Dump<'_>) -> Result<bool, Failure> {
    let list = devices()?;
    let s = find(&list, &*dump, attr::DIRTY_NAME, attr::DIRTY_DEV)?;
    let epoch = match dump.u32(attr::DIRTY_EPOCH) {
        Some(1) => Epoch::Previous,
        _ => Epoch::Current,
    };
    let [started, number, from, _] = *dump.state();
    let mut buf: Name = [0; NAME_LEN as usize];
    let name = name_of(&s, &mut buf);
    let mut stale = false;
    let mut next = None;
    let mut seen = 0u64;
    let r = dump.partial_message(cmd::DIRTY_GET, |m| {
        let mut err = Ok(());
        let mut all = true;
        s.log.for_each_extent(epoch, from, |item| match item {
            super::dirty::Listing::Epoch(n, state) => {
                if started != 0 && n != number {
                    stale = true;
                    return false;
                }
                seen = n;
                let head = (|| {
                    if let Some(name) = name {
                        m.put_str(attr::DIRTY_NAME, name)?;
                    }
                    m.put_u64(attr::DIRTY_EPOCH_NUMBER, n)?;
                    m.put_u32(attr::DIRTY_STATE, state.code().into())
                })();
                if let Err(e) = head {
                    err = Err(e);
                    return false;
                }
                true
            }
            super::dirty::Listing::Extent(start, len) => {
                let put = m.nest(attr::DIRTY_EXTENT, |m| {
                    m.put_u64(attr::EXTENT_START, start)?;
                    m.put_u64(attr::EXTENT_LENGTH, len)
                });
                if put.is_err() {
                    // Full: this extent starts the next message.
                    next = Some(start);
                    all = false;
                    return false;
                }
                true
            }
        });
        err.map(|()| all)
    });
    if stale {
        return Err(Failure::new(
            ESTALE,
            c"the epoch rotated during the dump: start again",
            0,
        ));
    }
    match r.map_err(msg_failure)? {
        // Not even the header fit: the next call starts over from `from`.
        None => Ok(false),
        Some(done) => {
            let state = dump.state();
            state[STARTED] = 1;
            state[EPOCH] = seen;
            if let Some(n) = next {
                state[FROM] = n;
            }
            Ok(done)
        }
    }
}

/// `dirty-rotate`: starts a new epoch, if the caller may
/// ([`rotation::decide`]); replies with its number and the state of the
/// epoch that became the previous one.
pub(crate) fn dirty_rotate(req: &Request<'_>) -> Result<(), Failure> {
    let list = devices()?;
    let s = find(&list, req, attr::DIRTY_NAME, attr::DIRTY_DEV)?;
    let r = rotation::Request {
        expect: req.u64(attr::DIRTY_EXPECT_EPOCH),
        claim: req.flag(attr::DIRTY_CLAIM),
        force: req.flag(attr::DIRTY_FORCE),
    };
    let epoch = s
        .rotate(Caller::Port(req.port()), r)
        .map_err(|refusal| match refusal {
            Refusal::Owned(_) => Failure::new(EBUSY, refusal.message(), 0),
            Refusal::Moved(_) => Failure::new(ESTALE, refusal.message(), attr::DIRTY_EXPECT_EPOCH),
            Refusal::NoSocket => Failure::new(EINVAL, refusal.message(), attr::DIRTY_CLAIM),
        })?;
    let prev = s.log.status().prev_state;
    req.reply(cmd::DIRTY_ROTATE, |m| {
        m.put_u64(attr::DIRTY_EPOCH_NUMBER, epoch)?;
        m.put_u32(attr::DIRTY_STATE, prev.code().into())
    })
    .map_err(msg_failure)
}

/// Predictions at or above this probability (in millionths) pre-log
/// their regions.
const PRELOG_PROBABILITY: u32 = PROBABILITY_ONE / 2;

/// `predict`: a batch of predicted ranges.  Write predictions pre-log
/// the regions likely to be written and set the predicted write rate of
/// the logging controller; read predictions are counted (the prefetch
/// cache takes them).  The batch is checked whole before any is used.
pub(crate) fn predict(req: &Request<'_>) -> Result<(), Failure> {
    let list = devices()?;
    let s = find(&list, req, attr::PREDICT_NAME, attr::PREDICT_DEV)?;
    let write = req.u32(attr::PREDICT_KIND) == Some(1);
    let horizon_ms = u64::from(req.u32(attr::PREDICT_HORIZON_MS).unwrap_or(1000).max(1));
    let ranges = genl::ranges(req, attr::PREDICT_RANGE)?;
    if ranges
        .iter()
        .any(|&(start, len, _)| start >= s.len_sectors || len > s.len_sectors - start)
    {
        return Err(Failure::new(
            ERANGE,
            c"range beyond the end of the device",
            attr::PREDICT_RANGE,
        ));
    }
    if write {
        let mut bytes = 0u64;
        for &(start, len, p) in ranges.iter() {
            bytes = bytes
                .saturating_add((len << 9).saturating_mul(p.into()) / u64::from(PROBABILITY_ONE));
            if p >= PRELOG_PROBABILITY {
                s.log.prelog(start, len);
            }
        }
        s.log.predict(bytes.saturating_mul(1000) / horizon_ms);
    }
    if !write {
        for &(start, len, p) in ranges.iter() {
            s.cache.predict(start, len, p);
        }
    }
    s.predicted.fetch_add(ranges.len() as u64, Relaxed);
    req.reply(cmd::PREDICT, |m| {
        m.put_u32(attr::PREDICT_ACCEPTED, ranges.len() as u32)
    })
    .map_err(msg_failure)
}

/// The logging parameters of `policy-set` (and `trace-rate`, applied apart).
const POLICY_KEYS: [(u32, &[u8]); 13] = [
    (attr::POLICY_LEVEL, b"level"),
    (attr::POLICY_BASE, b"base"),
    (attr::POLICY_W_IO, b"w_io"),
    (attr::POLICY_W_DIRTY, b"w_dirty"),
    (attr::POLICY_MIN_LEVEL, b"min_level"),
    (attr::POLICY_MAX_LEVEL, b"max_level"),
    (attr::POLICY_HYSTERESIS, b"hysteresis"),
    (attr::POLICY_PREDICT_TTL, b"predict_ttl"),
    (attr::POLICY_DENSE_PCT, b"dense_pct"),
    (attr::POLICY_INTERVAL_MS, b"interval_ms"),
    (attr::POLICY_MAX_MEMORY_KB, b"max_memory_kb"),
    (attr::POLICY_ADAPTIVE, b"adaptive"),
    (attr::POLICY_TRACE_RATE, b""),
];

/// `policy-set`: the logging parameters given, applied together (or none,
/// if one is out of range), and the trace rate limit.
pub(crate) fn policy_set(req: &Request<'_>) -> Result<(), Failure> {
    let list = devices()?;
    let s = find(&list, req, attr::POLICY_NAME, attr::POLICY_DEV)?;
    if !POLICY_KEYS.iter().any(|&(a, _)| req.bytes(a).is_some())
        && !(attr::POLICY_CACHE_MB..=attr::POLICY_WRITE_KBPS).any(|a| req.bytes(a).is_some())
    {
        return Err(Failure::new(EINVAL, c"no parameter given", 0));
    }
    // The host's budgets first: nothing changes if they have no room.
    let (mb, kbps) = s.reserved();
    let mb = req.u32(attr::POLICY_CACHE_MB).unwrap_or(mb);
    let kbps = req.u32(attr::POLICY_PREFETCH_KBPS).unwrap_or(kbps);
    s.budget
        .change(mb, kbps, || apply_policy(req, &s), || s.reserved())
        .map_err(|r| match r {
            Refused::Cache => Failure::new(
                ENOSPC,
                c"cache-mb is over the host's cache budget",
                attr::POLICY_CACHE_MB,
            ),
            Refused::Bandwidth => Failure::new(
                ENOSPC,
                c"prefetch-kbps is over the host's bandwidth budget for the origin (0 is no limit)",
                attr::POLICY_PREFETCH_KBPS,
            ),
            Refused::Failed(e) => Failure::new(e, c"cannot reserve from the host's budget", 0),
        })?
}

/// The settings of a `policy-set` request, once the budgets have room.
fn apply_policy(req: &Request<'_>, s: &Shared) -> Result<(), Failure> {
    let mut bad = 0;
    s.log
        .configure(|cfg| {
            for &(a, key) in &POLICY_KEYS[..12] {
                let v = if a == attr::POLICY_ADAPTIVE {
                    req.u8(a).map(u32::from)
                } else {
                    req.u32(a)
                };
                if let Some(v) = v {
                    bad = a;
                    cfg.set_value(key, v)?;
                }
            }
            // A level without `adaptive` fixes the level.
            if req.u32(attr::POLICY_LEVEL).is_some() && req.u8(attr::POLICY_ADAPTIVE).is_none() {
                cfg.adaptive = false;
            }
            bad = 0;
            Ok(())
        })
        .map_err(|e| Failure::new(EINVAL, e.message(), bad))?;
    if let Some(rate) = req.u32(attr::POLICY_TRACE_RATE) {
        s.tracer.set_rate(rate);
    }
    // All prefetch settings of the request together, checked once (so
    // lowering every threshold in one request works).
    let mut bad = 0;
    s.cache
        .configure(|cfg| {
            for (a, key) in [
                (attr::POLICY_CRITICAL_PPM, b"critical_ppm".as_slice()),
                (attr::POLICY_PREDICTIVE_PPM, b"predictive_ppm"),
                (attr::POLICY_MIN_PPM, b"min_ppm"),
                (attr::POLICY_PREFETCH_KBPS, b"prefetch_kbps"),
                (attr::POLICY_PREFETCH_INFLIGHT, b"prefetch_inflight"),
                (attr::POLICY_LOAD_LIMIT, b"load_limit"),
                (attr::POLICY_IDLE_MS, b"idle_ms"),
            ] {
                if let Some(v) = req.u32(a) {
                    bad = a;
                    cfg.set_value(key, v)?;
                }
            }
            bad = 0;
            Ok(())
        })
        .map_err(|e| Failure::new(EINVAL, e.message(), bad))?;
    if let Some(kbps) = req.u32(attr::POLICY_WRITE_KBPS) {
        s.throttle.set_kbps(kbps.into());
    }
    if let Some(mb) = req.u32(attr::POLICY_CACHE_MB) {
        s.cache.resize(mb).map_err(|_| {
            Failure::new(
                ENOMEM,
                c"cannot allocate a cache of that size",
                attr::POLICY_CACHE_MB,
            )
        })?;
    }
    Ok(())
}

/// The registry, locked (for the length of one operation).
fn devices() -> Result<genl::Locked<Shared>, Failure> {
    super::devices().ok_or(Failure::new(ENODEV, c"foresight is being unloaded", 0))
}

/// A socket joined a multicast group: the trace group starts recording.
pub(crate) fn group_joined(group: u32) {
    if group == GROUP_TRACE {
        super::trace::listener_joined();
    }
}

/// Closed netlink sockets give up the epoch rotations they own.
pub(crate) fn socket_closed(port: u32) {
    if let Some(list) = super::devices() {
        for s in list.iter() {
            s.release_rotation(port);
        }
    }
}
