// SPDX-License-Identifier: GPL-2.0

//! The host's cache budget: each device is charged its largest table's
//! claim once, so a reload (old and new table coexisting) is not counted
//! twice, and a claim over the total is refused.

use foresight_logic::budget::{charged, check, Claim, OverBudget};
use proptest::prelude::*;
use std::collections::HashMap;

fn c(devt: u32, mb: u32) -> Claim {
    Claim { devt, mb }
}

#[test]
fn a_reload_is_charged_once() {
    // vm1 (64 MiB) and vm2 (32 MiB); vm1's new table (96 MiB) is loaded
    // while the old one serves.
    let before = [c(1, 64), c(2, 32)];
    let during = [c(1, 64), c(2, 32), c(1, 96)];
    let after = [c(2, 32), c(1, 96)];
    assert_eq!(charged(&before), 96);
    assert_eq!(charged(&during), 128, "the device at its largest table, not 160");
    assert_eq!(charged(&after), 128);
    // A total of 128 admits the reload; of 127, not.
    assert_eq!(check(&during, 128), Ok(128));
    assert_eq!(check(&during, 127), Err(OverBudget { charged: 128, total: 127 }));
    // Equal claims of one device count once.
    assert_eq!(charged(&[c(7, 10), c(7, 10)]), 10);
    // No limit.
    assert_eq!(check(&during, 0), Ok(128));
}

proptest! {
    #[test]
    fn charge_is_the_sum_of_each_devices_largest_claim(
        claims in proptest::collection::vec((0u32..6, 0u32..1000), 0..20),
        total in 0u32..3000,
    ) {
        let claims: Vec<Claim> = claims.into_iter().map(|(d, m)| c(d, m)).collect();
        let mut max: HashMap<u32, u64> = HashMap::new();
        for x in &claims {
            let e = max.entry(x.devt).or_default();
            *e = (*e).max(x.mb.into());
        }
        let want: u64 = max.values().sum();
        prop_assert_eq!(charged(&claims), want);
        // Never more than the sum of the claims; the order does not matter.
        prop_assert!(want <= claims.iter().map(|x| u64::from(x.mb)).sum());
        let mut rev = claims.clone();
        rev.reverse();
        prop_assert_eq!(charged(&rev), want);
        prop_assert_eq!(check(&claims, total).is_ok(), total == 0 || want <= u64::from(total));
    }
}
