// SPDX-License-Identifier: GPL-2.0

//! The host's budgets: what the devices' tables claim (cache memory, and
//! bandwidth from each origin backend), counted once per device.
//!
//! While a table is reloaded the old and the new table of one device
//! coexist (the new one loaded, the old one still serving until the
//! resume), each with its claims: the device is charged its largest
//! claim, not their sum, so the reservation passes from one table to the
//! next.

/// One table's claim in one group (the cache: one group; bandwidth: a
/// group per origin backend).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    /// The mapped device (`dev_t`).
    pub devt: u32,
    /// What is shared (for bandwidth: the backend's `dev_t`).
    pub group: u32,
    /// How much (MiB, KiB/s); [`UNLIMITED`] for a limit of none.
    pub amount: u32,
}

/// The amount of a bandwidth claim without a limit: over any total.
pub const UNLIMITED: u32 = u32::MAX;

/// The charge of `group`: over its devices, the largest claim of each
/// device's tables, summed.  Quadratic in the number of claims, which is
/// small (a host's VM disks, twice while reloads overlap).
pub fn charged(claims: &[Claim], group: u32) -> u64 {
    let of_group = |c: &&Claim| c.group == group;
    claims
        .iter()
        .enumerate()
        .filter(|(_, c)| of_group(c))
        .filter(|&(i, c)| {
            // Counted at the device's largest claim, the first of equals.
            !claims.iter().enumerate().any(|(j, o)| {
                of_group(&o)
                    && o.devt == c.devt
                    && (o.amount > c.amount || (o.amount == c.amount && j < i))
            })
        })
        .map(|(_, c)| u64::from(c.amount))
        .sum()
}

/// Why a claim is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// The charge the claim would make.
    pub charged: u64,
    /// The total.
    pub total: u64,
}

/// Whether `group`'s claims fit `total` (0: no limit); its charge if so.
pub fn check(claims: &[Claim], group: u32, total: u32) -> Result<u64, OverBudget> {
    let charged = charged(claims, group);
    if total != 0 && charged > u64::from(total) {
        return Err(OverBudget {
            charged,
            total: total.into(),
        });
    }
    Ok(charged)
}

/// The devices that have a claim in `group`.
pub fn devices(claims: &[Claim], group: u32) -> u32 {
    claims
        .iter()
        .enumerate()
        .filter(|&(i, c)| {
            c.group == group
                && !claims[..i]
                    .iter()
                    .any(|o| o.group == group && o.devt == c.devt)
        })
        .count() as u32
}
