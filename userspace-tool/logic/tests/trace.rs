// SPDX-License-Identifier: GPL-2.0

//! Trace records, the token bucket, device numbers.

use foresight_logic::bucket::TokenBucket;
use foresight_logic::trace::{decode_dev, encode_dev, Record, RECORD_BYTES};
use proptest::prelude::*;

#[test]
fn record_wire_layout() {
    let r = Record {
        ts_ns: 0x0102_0304_0506_0708,
        sector: 0x1112_1314_1516_1718,
        sectors: 0x2122_2324,
        op: 4,
    };
    let b = r.encode();
    assert_eq!(b.len(), RECORD_BYTES);
    assert_eq!(u64::from_ne_bytes(b[0..8].try_into().unwrap()), r.ts_ns);
    assert_eq!(u64::from_ne_bytes(b[8..16].try_into().unwrap()), r.sector);
    assert_eq!(u32::from_ne_bytes(b[16..20].try_into().unwrap()), r.sectors);
    assert_eq!(b[20], 4);
    assert_eq!(&b[21..], &[0, 0, 0]);
    // What the helper decodes is what was encoded, padding aside.
    assert_eq!(Record::decode(&b), r);
    let mut padded = b;
    padded[21..].copy_from_slice(&[9, 9, 9]);
    assert_eq!(Record::decode(&padded), r);
}

#[test]
fn bucket_limits_rate_and_refills() {
    // The trace's use: one record a token, 100 a second.
    let mut b = TokenBucket::new();
    // A full second's worth, then nothing until time passes.
    let t0 = 5 * 1_000_000_000;
    let taken = (0..1000).filter(|_| b.take(t0, 100, 1)).count();
    assert_eq!(taken, 100);
    assert!(!b.take(t0, 100, 1));
    // 10 ms later: one token.
    assert!(b.take(t0 + 10_000_000, 100, 1));
    assert!(!b.take(t0 + 10_000_000, 100, 1));
    // Over 2 s at 1000 attempts per second: about 200 taken.
    let mut n = 0;
    for i in 0..2000u64 {
        if b.take(t0 + 10_000_000 + i * 1_000_000, 100, 1) {
            n += 1;
        }
    }
    assert!((195..=205).contains(&n), "{n}");
}

#[test]
fn bucket_rate_zero_is_unlimited() {
    let mut b = TokenBucket::new();
    assert!((0..100_000).all(|_| b.take(1, 0, 1)));
}

#[test]
fn dev_numbers_match_the_kernel() {
    // 253:0 (device-mapper), 259:1 (nvme), minors past 255.
    for (major, minor, st_rdev) in [
        (253u32, 0u32, 0xfd00u32),
        (259, 1, 0x10301),
        (7, 300, 0x10072c),
    ] {
        let kdev = (major << 20) | minor;
        assert_eq!(encode_dev(kdev), st_rdev, "{major}:{minor}");
        assert_eq!(decode_dev(st_rdev), kdev);
    }
}

proptest! {
    #[test]
    fn dev_round_trip(major in 0u32..4096, minor in 0u32..(1 << 20)) {
        let kdev = (major << 20) | minor;
        prop_assert_eq!(decode_dev(encode_dev(kdev)), kdev);
    }
}
