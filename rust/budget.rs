// SPDX-License-Identifier: GPL-2.0

//! The host's budgets ([`crate::logic::budget`]): the prefetch caches of
//! every table together, and the bandwidth each origin backend gives the
//! tables that read from it in the background (foresight's
//! `prefetch_kbps`, foreshadow's `bandwidth_kbps`, per source), never over
//! their totals (module parameters at load, netlink `budget-set` after).
//!
//! The ledger holds a reservation per table, taken by its constructor and
//! given back when the table goes ([`Held`]).  A change of a table's
//! cache or bandwidth is recorded (and checked) in the ledger before it is
//! made, and undone if making it fails; every check and record is made
//! under the ledger's lock, so racing tables, reloads and changes never
//! both fit a room only one of them has.  A shrink recorded before the
//! memory is freed lets another table have it a moment early: the totals
//! bound reservations.

use crate::{
    genl,
    logic::budget::{
        self,
        Claim,
        UNLIMITED, //
    },
};
use core::sync::atomic::{
    AtomicU32,
    Ordering::Relaxed, //
};
use kernel::{
    prelude::*,
    sync::Arc, //
};

/// The reservations of every table (attached with the netlink family).
pub(crate) static LEDGER: genl::Registry<Reservation> =
    genl::Registry::new(c"foresight_ledger", kernel::static_lock_class!());

/// The cache total (MiB) and the bandwidth total per backend (KiB/s); 0: no
/// limit.  Changed with the ledger locked.
static CACHE_TOTAL_MB: AtomicU32 = AtomicU32::new(0);
static BANDWIDTH_TOTAL_KBPS: AtomicU32 = AtomicU32::new(0);

/// One table's reservation.
pub(crate) struct Reservation {
    /// The mapped device.
    devt: u32,
    /// The backend its background reads come from.
    backend: u32,
    cache_mb: AtomicU32,
    /// 0: no limit.
    kbps: AtomicU32,
}

/// Why a reservation is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The caches would go over their total.
    Cache,
    /// The backend's bandwidth would go over its total (or a table asks
    /// for no limit while there is one).
    Bandwidth,
    /// The ledger could not be read or grown.
    Failed(Error),
}

impl From<Error> for Refused {
    fn from(e: Error) -> Self {
        Refused::Failed(e)
    }
}

impl From<kernel::alloc::AllocError> for Refused {
    fn from(_: kernel::alloc::AllocError) -> Self {
        Refused::Failed(ENOMEM)
    }
}

impl Refused {
    /// The error code: `ENOSPC` when over a budget.
    pub(crate) fn code(self) -> Error {
        match self {
            Refused::Cache | Refused::Bandwidth => ENOSPC,
            Refused::Failed(e) => e,
        }
    }
}

/// The totals at module load.
pub(crate) fn init(cache_total_mb: u32, bandwidth_total_kbps: u32) {
    CACHE_TOTAL_MB.store(cache_total_mb, Relaxed);
    BANDWIDTH_TOTAL_KBPS.store(bandwidth_total_kbps, Relaxed);
}

fn ledger() -> Result<genl::Locked<Reservation>> {
    LEDGER.lock().ok_or(ENODEV)
}

fn kbps_amount(kbps: u32) -> u32 {
    if kbps == 0 {
        UNLIMITED
    } else {
        kbps
    }
}

/// The claims of `list`, with `me`'s amounts replaced by `cache_mb` and
/// `kbps` (or a new reservation `new` added), in the cache's group (0)
/// and the backends' (`backend + 1`: never 0).
fn claims(
    list: &[Arc<Reservation>],
    me: Option<&Arc<Reservation>>,
    new: Option<&Reservation>,
    cache_mb: u32,
    kbps: u32,
) -> Result<KVec<Claim>> {
    let mut out = KVec::with_capacity(2 * (list.len() + 1), GFP_KERNEL)?;
    let mut add = |r: &Reservation, mb: u32, kbps: u32| -> Result {
        out.push(
            Claim {
                devt: r.devt,
                group: 0,
                amount: mb,
            },
            GFP_KERNEL,
        )?;
        let bw = Claim {
            devt: r.devt,
            group: r.backend.wrapping_add(1),
            amount: kbps_amount(kbps),
        };
        Ok(out.push(bw, GFP_KERNEL)?)
    };
    for r in list {
        if me.is_some_and(|m| Arc::ptr_eq(m, r)) {
            add(r, cache_mb, kbps)?;
        } else {
            add(r, r.cache_mb.load(Relaxed), r.kbps.load(Relaxed))?;
        }
    }
    if let Some(r) = new {
        add(r, cache_mb, kbps)?;
    }
    Ok(out)
}

/// Whether `claims` fit both totals, for the backend `backend`.
fn fits(claims: &[Claim], backend: u32, cache_total: u32, kbps_total: u32) -> Result<(), Refused> {
    budget::check(claims, 0, cache_total).map_err(|_| Refused::Cache)?;
    budget::check(claims, backend.wrapping_add(1), kbps_total).map_err(|_| Refused::Bandwidth)?;
    Ok(())
}

/// A table's reservation in the ledger; dropping it gives it back.
pub(crate) struct Held(Arc<Reservation>);

impl Held {
    /// Reserves `cache_mb` MiB of cache and `kbps` KiB/s (0: no limit) from
    /// `backend` for a table of device `devt`.
    pub(crate) fn new(devt: u32, backend: u32, cache_mb: u32, kbps: u32) -> Result<Self, Refused> {
        let r = Arc::new(
            Reservation {
                devt,
                backend,
                cache_mb: AtomicU32::new(cache_mb),
                kbps: AtomicU32::new(kbps),
            },
            GFP_KERNEL,
        )?;
        let mut list = ledger()?;
        let c = claims(&list, None, Some(&r), cache_mb, kbps)?;
        fits(
            &c,
            backend,
            CACHE_TOTAL_MB.load(Relaxed),
            BANDWIDTH_TOTAL_KBPS.load(Relaxed),
        )?;
        list.push(r.clone(), GFP_KERNEL)?;
        Ok(Held(r))
    }

    /// Changes the table's cache and bandwidth to `cache_mb` MiB and `kbps`
    /// KiB/s (0: no limit) if the budgets have room: `apply` makes the
    /// change, then `actual` says what the table holds (the new amounts,
    /// the old ones, or a mix if `apply` failed half-way), which is
    /// recorded.  All under the ledger's lock, so racing changes are
    /// checked, made and recorded one at a time.
    pub(crate) fn change<R>(
        &self,
        cache_mb: u32,
        kbps: u32,
        apply: impl FnOnce() -> R,
        actual: impl FnOnce() -> (u32, u32),
    ) -> Result<R, Refused> {
        let r = &self.0;
        let list = ledger()?;
        let c = claims(&list, Some(r), None, cache_mb, kbps)?;
        fits(
            &c,
            r.backend,
            CACHE_TOTAL_MB.load(Relaxed),
            BANDWIDTH_TOTAL_KBPS.load(Relaxed),
        )?;
        let out = apply();
        let (mb, kbps) = actual();
        r.cache_mb.store(mb, Relaxed);
        r.kbps.store(kbps, Relaxed);
        Ok(out)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut list) = LEDGER.lock() {
            list.retain(|r| !Arc::ptr_eq(r, &self.0));
        }
    }
}

/// The totals and what is charged to them.
pub(crate) struct Report {
    pub(crate) cache_total_mb: u32,
    pub(crate) cache_charged_mb: u64,
    /// Devices with a table in the ledger.
    pub(crate) devices: u32,
    pub(crate) bandwidth_total_kbps: u32,
    /// The most any backend is charged (KiB/s), counting the limited
    /// tables only; and the tables with no limit.
    pub(crate) bandwidth_charged_kbps: u64,
    pub(crate) unlimited: u32,
}

/// What the ledger holds.
pub(crate) fn report() -> Result<Report> {
    let list = ledger()?;
    let mut c = claims(&list, None, None, 0, 0)?;
    let unlimited = list.iter().filter(|r| r.kbps.load(Relaxed) == 0).count() as u32;
    // Bandwidth without the tables with no limit.
    c.retain(|x| x.group == 0 || x.amount != UNLIMITED);
    let most = c
        .iter()
        .filter(|x| x.group != 0)
        .map(|x| budget::charged(&c, x.group))
        .max()
        .unwrap_or(0);
    Ok(Report {
        cache_total_mb: CACHE_TOTAL_MB.load(Relaxed),
        cache_charged_mb: budget::charged(&c, 0),
        devices: budget::devices(&c, 0),
        bandwidth_total_kbps: BANDWIDTH_TOTAL_KBPS.load(Relaxed),
        bandwidth_charged_kbps: most,
        unlimited,
    })
}

/// Sets the totals given; refused (nothing changed) if what is reserved is
/// over them.
pub(crate) fn set_totals(cache_mb: Option<u32>, kbps: Option<u32>) -> Result<(), Refused> {
    let list = ledger()?;
    let cache = cache_mb.unwrap_or(CACHE_TOTAL_MB.load(Relaxed));
    let bw = kbps.unwrap_or(BANDWIDTH_TOTAL_KBPS.load(Relaxed));
    let c = claims(&list, None, None, 0, 0)?;
    budget::check(&c, 0, cache).map_err(|_| Refused::Cache)?;
    for r in list.iter() {
        budget::check(&c, r.backend.wrapping_add(1), bw).map_err(|_| Refused::Bandwidth)?;
    }
    CACHE_TOTAL_MB.store(cache, Relaxed);
    BANDWIDTH_TOTAL_KBPS.store(bw, Relaxed);
    Ok(())
}

/// The netlink operations on the budgets.
pub(crate) mod control {
    use super::Refused;
    use crate::genl::{
        uapi::{
            attr,
            cmd, //
        },
        Attrs,
        Failure,
        Request, //
    };
    use kernel::prelude::*;

    fn clamp(v: u64) -> u32 {
        v.min(u32::MAX.into()) as u32
    }

    /// `budget-get`: the totals and what is charged to them.
    pub(crate) fn get(req: &Request<'_>) -> Result<(), Failure> {
        let r = super::report().map_err(|e| Failure::new(e, c"cannot read the budget", 0))?;
        req.reply(cmd::BUDGET_GET, |m| {
            m.put_u32(attr::BUDGET_CACHE_TOTAL_MB, r.cache_total_mb)?;
            m.put_u32(attr::BUDGET_CACHE_CHARGED_MB, clamp(r.cache_charged_mb))?;
            m.put_u32(attr::BUDGET_DEVICES, r.devices)?;
            m.put_u32(attr::BUDGET_BANDWIDTH_TOTAL_KBPS, r.bandwidth_total_kbps)?;
            m.put_u32(
                attr::BUDGET_BANDWIDTH_CHARGED_KBPS,
                clamp(r.bandwidth_charged_kbps),
            )?;
            m.put_u32(attr::BUDGET_UNLIMITED, r.unlimited)
        })
        .map_err(|e| Failure::new(e, c"cannot build the reply", 0))
    }

    /// `budget-set`: the totals given, refused below what is charged.
    pub(crate) fn set(req: &Request<'_>) -> Result<(), Failure> {
        let cache = req.u32(attr::BUDGET_CACHE_TOTAL_MB);
        let kbps = req.u32(attr::BUDGET_BANDWIDTH_TOTAL_KBPS);
        if cache.is_none() && kbps.is_none() {
            return Err(Failure::new(
                EINVAL,
                c"give cache-total-mb or bandwidth-total-kbps",
                0,
            ));
        }
        super::set_totals(cache, kbps).map_err(|r| match r {
            Refused::Cache => Failure::new(
                EBUSY,
                c"the caches hold more than that: lower their cache_mb first",
                attr::BUDGET_CACHE_TOTAL_MB,
            ),
            Refused::Bandwidth => Failure::new(
                EBUSY,
                c"a backend gives more than that (or a table has no limit): lower the tables' limits first",
                attr::BUDGET_BANDWIDTH_TOTAL_KBPS,
            ),
            Refused::Failed(e) => Failure::new(e, c"cannot read the budget", 0),
        })
    }
}
