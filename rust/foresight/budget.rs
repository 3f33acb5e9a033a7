// SPDX-License-Identifier: GPL-2.0

//! The host's budget for the devices' prefetch caches
//! ([`crate::logic::budget`]): a total, the `cache_total_mb` module
//! parameter at load and `budget-set` after, that the caches of every
//! table in the registry never exceed together, each device charged once.
//!
//! Every change of a charge is checked and made with the registry locked:
//! a table enters the registry (at the end of its constructor) and a cache
//! changes size only under that lock, and the total is changed under it
//! too, so no two changes can both fit a room only one of them has.

use super::{
    genl,
    Shared, //
};
use crate::logic::budget::{
    self,
    Claim, //
};
use core::sync::atomic::{
    AtomicU32,
    Ordering::Relaxed, //
};
use kernel::{
    prelude::*,
    sync::Arc, //
};

/// The total in MiB (0: no limit); changed with the registry locked.
static TOTAL_MB: AtomicU32 = AtomicU32::new(0);

/// The total at module load (the registry is not attached yet: no table
/// exists).
pub(crate) fn init(total_mb: u32) {
    TOTAL_MB.store(total_mb, Relaxed);
}

/// The total (MiB).
pub(crate) fn total_mb() -> u32 {
    TOTAL_MB.load(Relaxed)
}

/// The registry's claims, with table `me`'s changed to `mb`, or with a new
/// table's claim `add` added.
fn claims(
    list: &[Arc<Shared>],
    me: Option<&Arc<Shared>>,
    add: Option<Claim>,
) -> Result<KVec<Claim>> {
    let mut out = KVec::with_capacity(list.len() + 1, GFP_KERNEL)?;
    for s in list {
        let mb = match me {
            Some(m) if Arc::ptr_eq(m, s) => add.map_or(0, |c| c.mb),
            _ => s.cache.config().cache_mb,
        };
        out.push(Claim { devt: s.devt, mb }, GFP_KERNEL)?;
    }
    if let (None, Some(c)) = (me, add) {
        out.push(c, GFP_KERNEL)?;
    }
    Ok(out)
}

/// What the registry's tables are charged (MiB), and how many devices.
pub(crate) fn charged(list: &genl::Locked<Shared>) -> Result<(u64, u32)> {
    let c = claims(list, None, None)?;
    let mut devices = 0u32;
    for (i, x) in c.iter().enumerate() {
        if !c[..i].iter().any(|o| o.devt == x.devt) {
            devices += 1;
        }
    }
    Ok((budget::charged(&c), devices))
}

/// Whether a table may hold a cache of `mb` MiB: `me` (in the registry)
/// changing its size, or a new table of device `devt` (`me` `None`).
/// `ENOSPC` if the charge would go over the total.  The registry stays
/// locked until the change is made.
pub(crate) fn admit(
    list: &genl::Locked<Shared>,
    me: Option<&Arc<Shared>>,
    devt: u32,
    mb: u32,
) -> Result {
    let c = claims(list, me, Some(Claim { devt, mb }))?;
    budget::check(&c, total_mb())
        .map(|_| ())
        .map_err(|_| ENOSPC)
}

/// Sets the total; `EBUSY` if what is charged is over it.
pub(crate) fn set_total(list: &genl::Locked<Shared>, total: u32) -> Result {
    let c = claims(list, None, None)?;
    budget::check(&c, total).map_err(|_| EBUSY)?;
    TOTAL_MB.store(total, Relaxed);
    Ok(())
}
