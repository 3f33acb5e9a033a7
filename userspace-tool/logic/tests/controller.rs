// SPDX-License-Identifier: GPL-2.0

//! The granularity controller.

use foresight_logic::controller::{rate_milli, Controller, Ewma, Params};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

#[test]
fn idle_settles_at_base() {
    let p = Params::default();
    let mut c = Controller::default();
    assert_eq!(c.tick(&p, 100, 0, 0, 1000), Some(p.base));
    assert_eq!(c.tick(&p, p.base, 0, 0, 1000), None);
}

#[test]
fn io_demand_raises_the_level() {
    let p = Params {
        base: 10,
        w_io: 2000,
        w_dirty: 0,
        ..Params::default()
    };
    let mut c = Controller::default();
    let mut level = 10;
    for _ in 0..20 {
        if let Some(l) = c.tick(&p, level, 40 * MIB, 0, 1000) {
            level = l;
        }
    }
    // 40 MiB/s * 2 levels per MiB/s: the target is 90; the level gets within
    // the hysteresis band of it.
    assert!((80..=90).contains(&level), "level {level}");
    assert_eq!(c.last_target, 90);
}

/// At level 0 nothing is logged, so nothing is newly dirty: write demand
/// alone must bring logging back (the log counts it while untracked).
#[test]
fn write_demand_alone_lifts_level_zero() {
    let p = Params {
        base: 0,
        min: 0,
        w_io: 2000,
        ..Params::default()
    };
    let mut c = Controller::default();
    assert_eq!(c.tick(&p, 50, 0, 0, 1000), Some(0), "idle: logging off");
    let l = c.tick(&p, 0, 20 * MIB, 0, 1000);
    assert_eq!(l, Some(40), "20 MiB/s written, none of it logged");
}

#[test]
fn predictions_win_while_fresh_then_the_trend() {
    let p = Params {
        base: 0,
        w_io: 0,
        w_dirty: 1000,
        min: 0,
        hysteresis: 0,
        predict_ttl: 2,
        ..Params::default()
    };
    let mut c = Controller::default();
    c.predict(50 * MIB, p.predict_ttl);
    assert_eq!(c.tick(&p, 0, 0, 0, 1000), Some(50));
    assert_eq!(
        c.tick(&p, 50, 0, 0, 1000),
        Some(0),
        "expired prediction, no trend"
    );
}

#[test]
fn hysteresis_holds_small_moves() {
    let p = Params {
        base: 50,
        hysteresis: 10,
        w_io: 1000,
        w_dirty: 0,
        ..Params::default()
    };
    let mut c = Controller::default();
    assert_eq!(c.tick(&p, 45, 0, 0, 1000), None);
    assert_eq!(c.tick(&p, 61, 0, 0, 1000), Some(50));
}

#[test]
fn rates_and_averages() {
    assert_eq!(rate_milli(MIB, 1000), 1000);
    assert_eq!(rate_milli(10 * MIB, 500), 20_000);
    assert_eq!(rate_milli(1, 0), 0);
    let mut e = Ewma::default();
    e.add(4000);
    assert_eq!(e.get(), 4000, "rises at once");
    e.add(0);
    assert_eq!(e.get(), 3000, "decays by a quarter");
    for _ in 0..40 {
        e.add(0);
    }
    assert!(e.get() < 10);
    assert!(Params {
        min: 60,
        max: 50,
        ..Params::default()
    }
    .validate()
    .is_err());
}

proptest! {
    /// The applied level always stays within [min, max] and only moves by
    /// more than the hysteresis band.
    #[test]
    fn bounded(base in 0u8..=100, min in 0u8..=50, max in 50u8..=100, hyst in 0u8..30,
               samples in proptest::collection::vec((0u64..200, 0u64..200), 1..50)) {
        let p = Params { base, min, max, hysteresis: hyst, ..Params::default() };
        let mut c = Controller::default();
        let mut level = min;
        for (w, d) in samples {
            if let Some(l) = c.tick(&p, level, w * MIB, d * MIB, 1000) {
                prop_assert!(l.abs_diff(level) > hyst);
                prop_assert!((min..=max).contains(&l));
                level = l;
            }
        }
    }
}
