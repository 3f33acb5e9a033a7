// SPDX-License-Identifier: GPL-2.0

//! The host's budget for prefetch caches: what the devices' tables claim,
//! counted once per device.
//!
//! While a table is reloaded the old and the new table of one device
//! coexist (the new one loaded, the old one still serving until the
//! resume), each with its cache: the device is charged its largest claim,
//! not their sum, so the reservation passes from one table to the next.

/// One table's claim: its mapped device and the cache it holds (MiB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    /// The mapped device (`dev_t`).
    pub devt: u32,
    /// The table's cache size in MiB.
    pub mb: u32,
}

/// The charge of `claims`: over the devices, the largest claim of each
/// device's tables, summed (MiB).  Quadratic in the number of tables, which
/// is small (a host's VM disks, twice while reloads overlap).
pub fn charged(claims: &[Claim]) -> u64 {
    claims
        .iter()
        .enumerate()
        .filter(|&(i, c)| {
            // Counted at the device's largest claim, the first of equals.
            !claims
                .iter()
                .enumerate()
                .any(|(j, o)| o.devt == c.devt && (o.mb > c.mb || (o.mb == c.mb && j < i)))
        })
        .map(|(_, c)| u64::from(c.mb))
        .sum()
}

/// Why a claim is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// The charge the claim would make (MiB).
    pub charged: u64,
    /// The total (MiB).
    pub total: u64,
}

/// Whether `claims` fit `total` MiB (0: no limit).
pub fn check(claims: &[Claim], total: u32) -> Result<u64, OverBudget> {
    let charged = charged(claims);
    if total != 0 && charged > u64::from(total) {
        return Err(OverBudget {
            charged,
            total: total.into(),
        });
    }
    Ok(charged)
}
