// SPDX-License-Identifier: GPL-2.0

//! The host's budgets: each device is charged its largest table's claim
//! once per group, so a reload (old and new table coexisting) is not
//! counted twice; groups (origin backends) are charged apart; a claim with
//! no limit is over any total; a claim over the total is refused.

use foresight_logic::budget::{charged, check, devices, Claim, OverBudget, UNLIMITED};
use proptest::prelude::*;
use std::collections::HashMap;

fn c(devt: u32, amount: u32) -> Claim {
    Claim {
        devt,
        group: 0,
        amount,
    }
}

#[test]
fn a_reload_is_charged_once() {
    // vm1 (64 MiB) and vm2 (32 MiB); vm1's new table (96 MiB) is loaded
    // while the old one serves.
    let before = [c(1, 64), c(2, 32)];
    let during = [c(1, 64), c(2, 32), c(1, 96)];
    let after = [c(2, 32), c(1, 96)];
    assert_eq!(charged(&before, 0), 96);
    assert_eq!(charged(&during, 0), 128, "the device at its largest table, not 160");
    assert_eq!(charged(&after, 0), 128);
    assert_eq!(devices(&during, 0), 2);
    // A total of 128 admits the reload; of 127, not.
    assert_eq!(check(&during, 0, 128), Ok(128));
    assert_eq!(check(&during, 0, 127), Err(OverBudget { charged: 128, total: 127 }));
    // Equal claims of one device count once.
    assert_eq!(charged(&[c(7, 10), c(7, 10)], 0), 10);
    // No limit.
    assert_eq!(check(&during, 0, 0), Ok(128));
}

#[test]
fn backends_are_charged_apart_and_no_limit_is_over_any_total() {
    let b = |devt, group, amount| Claim { devt, group, amount };
    // vm1 and vm2 read from backend 8, vm3 from 9.
    let claims = [b(1, 8, 4096), b(2, 8, 2048), b(3, 9, 8192)];
    assert_eq!(charged(&claims, 8), 6144);
    assert_eq!(charged(&claims, 9), 8192);
    assert_eq!(devices(&claims, 8), 2);
    assert!(check(&claims, 9, 8192).is_ok());
    assert!(check(&claims, 9, 8191).is_err());
    let open = [b(1, 8, UNLIMITED)];
    assert!(check(&open, 8, u32::MAX - 1).is_err(), "no limit fits no total");
    assert!(check(&open, 8, 0).is_ok(), "but no total admits it");
}

proptest! {
    #[test]
    fn charge_is_the_sum_of_each_devices_largest_claim(
        claims in proptest::collection::vec((0u32..6, 0u32..3, 0u32..1000), 0..20),
        total in 0u32..3000,
    ) {
        let claims: Vec<Claim> = claims
            .into_iter()
            .map(|(devt, group, amount)| Claim { devt, group, amount })
            .collect();
        for group in 0..3 {
            let mut max: HashMap<u32, u64> = HashMap::new();
            for x in claims.iter().filter(|x| x.group == group) {
                let e = max.entry(x.devt).or_default();
                *e = (*e).max(x.amount.into());
            }
            let want: u64 = max.values().sum();
            prop_assert_eq!(charged(&claims, group), want);
            prop_assert_eq!(devices(&claims, group) as usize, max.len());
            let mut rev = claims.clone();
            rev.reverse();
            prop_assert_eq!(charged(&rev, group), want);
            prop_assert_eq!(check(&claims, group, total).is_ok(), total == 0 || want <= u64::from(total));
        }
    }
}
