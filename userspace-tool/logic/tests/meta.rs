// SPDX-License-Identifier: GPL-2.0

//! The metadata format: superblock, checksums, saved sets.

use foresight_logic::{
    dirty::REGION_BLOCKS,
    meta::{crc32c, EpochState, SbError, SbState, Superblock},
};
use proptest::prelude::*;
use std::collections::BTreeSet;

mod common;
use common::{reported, Set};

fn set(blocks: u64, shift: u8, slots: usize) -> Set {
    common::set(blocks, shift, 100, slots)
}

#[test]
fn crc32c_check_value() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b""), 0);
}

#[test]
fn superblock_round_trip_and_corruption() {
    let sb = Superblock {
        state: SbState::Clean,
        blocks: 123_456,
        epoch: 42,
        level: 77,
        adaptive: true,
        epochs: [EpochState::Tracked, EpochState::Incomplete],
        lens: [100, 200],
        payload_crc: 0xdead_beef,
    };
    let mut b = vec![0u8; 4096];
    sb.encode(&mut b);
    assert_eq!(Superblock::decode(&b), Ok(sb));
    let mut c = b.clone();
    c[20] ^= 1;
    assert_eq!(Superblock::decode(&c), Err(SbError::Corrupt));
    assert_eq!(Superblock::decode(&[0u8; 4096]), Err(SbError::Blank));
}

proptest! {
    /// A saved set loads back to exactly the same dirty blocks; saved coarse
    /// only, it loads back to a superset within the same regions.
    #[test]
    fn sets_round_trip(shift in 0u8..=8, writes in proptest::collection::vec((0u64..5000, 1u64..50), 0..80)) {
        let blocks = 5000;
        let mut a = set(blocks, shift, 512);
        for (s, l) in writes {
            a.mark(s, l.min(blocks - s));
        }
        let mut buf = vec![0u8; a.encoded_len()];
        let n = a.encode(&mut buf, false);
        prop_assert_eq!(n, buf.len());
        let mut b = set(blocks, 0, 512);
        b.decode_from(&buf).unwrap();
        prop_assert_eq!(b.shift(), a.shift());
        prop_assert_eq!(reported(&b), reported(&a));

        let mut buf = vec![0u8; a.coarse_encoded_len()];
        a.encode(&mut buf, true);
        let mut c = set(blocks, 0, 8);
        c.decode_from(&buf).unwrap();
        let (ra, rc) = (reported(&a), reported(&c));
        prop_assert!(ra.is_subset(&rc));
        let regions: BTreeSet<u64> = ra.iter().map(|b| b / REGION_BLOCKS).collect();
        prop_assert!(rc.iter().all(|b| regions.contains(&(b / REGION_BLOCKS))));
    }
}

#[test]
fn loading_into_a_small_table_falls_back_to_coarse() {
    let mut a = set(64 * REGION_BLOCKS, 0, 256);
    for r in 0..64 {
        a.mark(r * REGION_BLOCKS + 1, 1);
    }
    let mut buf = vec![0u8; a.encoded_len()];
    a.encode(&mut buf, false);
    let mut b = set(64 * REGION_BLOCKS, 0, 8);
    b.decode_from(&buf).unwrap();
    assert!(reported(&a).is_subset(&reported(&b)));
    assert!(b.fallbacks() > 0);
}

#[test]
fn truncated_or_mismatched_sets_are_refused() {
    let mut a = set(5000, 0, 64);
    a.mark(7, 1);
    let mut buf = vec![0u8; a.encoded_len()];
    a.encode(&mut buf, false);
    let mut b = set(5000, 0, 64);
    assert!(b.decode_from(&buf[..buf.len() - 1]).is_err());
    let mut other = set(50_000, 0, 64);
    assert!(
        other.decode_from(&buf).is_err(),
        "a set for another device size"
    );
}
