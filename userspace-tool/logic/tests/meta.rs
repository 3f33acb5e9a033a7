// SPDX-License-Identifier: GPL-2.0

//! The metadata format: superblock, checksums, saved sets.

use foresight_logic::{
    dirty::REGION_BLOCKS,
    meta::{crc32c, EpochState, SbError, SbState, Superblock, MAX_EPOCH},
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
    let sb = good_sb();
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

fn good_sb() -> Superblock {
    Superblock {
        state: SbState::Clean,
        blocks: 5000,
        epoch: 42,
        level: 77,
        adaptive: true,
        epochs: [EpochState::Tracked, EpochState::Incomplete],
        lens: [100, 200],
        payload_crc: 0xdead_beef,
    }
}

/// Re-seals a superblock image after an edit, as a buggy or hostile writer
/// would: the checksum matches, so only field checks can refuse it.
fn reseal(b: &mut [u8]) {
    let crc = crc32c(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn every_superblock_field_is_checked() {
    let room = 1 << 20;
    assert_eq!(good_sb().check(5000, room), Ok(()));
    let bad = |f: fn(&mut Superblock)| {
        let mut sb = good_sb();
        f(&mut sb);
        sb.check(5000, room)
    };
    assert!(bad(|sb| sb.blocks = 5001).is_err(), "device size");
    assert!(bad(|sb| sb.epoch = u64::MAX).is_err(), "epoch would overflow");
    assert_eq!(bad(|sb| sb.epoch = MAX_EPOCH), Ok(()));
    assert!(bad(|sb| sb.lens = [u64::MAX, 2]).is_err(), "lengths overflow");
    assert!(bad(|sb| sb.lens = [1 << 19, (1 << 19) + 1]).is_err(), "past the device");
    assert!(bad(|sb| sb.lens = [0, 200]).is_err(), "shorter than a set header");
    // An open superblock has no sets.
    assert_eq!(
        bad(|sb| {
            sb.state = SbState::Open;
            sb.lens = [0, 0];
        }),
        Ok(())
    );
    // Encoded fields with values `encode` never writes.
    let mut img = vec![0u8; 4096];
    good_sb().encode(&mut img);
    for (at, v) in [(32usize, 101u8), (33, 2), (36, 1), (12, 3), (34, 9)] {
        let mut c = img.clone();
        c[at] = v;
        reseal(&mut c);
        assert_eq!(Superblock::decode(&c), Err(SbError::Corrupt), "byte {at} = {v}");
    }
}

proptest! {
    /// Corrupted superblock images, re-sealed so the checksum passes: the
    /// loader's decode and checks never panic, and what they accept is in
    /// range for the device (the lengths it will allocate and read fit the
    /// metadata device; rotating cannot overflow the epoch).
    #[test]
    fn corrupted_superblocks_are_refused_or_in_range(
        edits in proptest::collection::vec((0usize..64, any::<u8>()), 1..12),
        room in 0u64..(1 << 24),
    ) {
        let mut img = vec![0u8; 4096];
        good_sb().encode(&mut img);
        for (at, v) in edits {
            img[at] = v;
        }
        reseal(&mut img);
        if let Ok(sb) = Superblock::decode(&img) {
            if sb.check(5000, room).is_ok() {
                prop_assert_eq!(sb.blocks, 5000);
                prop_assert!(sb.epoch <= MAX_EPOCH);
                prop_assert!(sb.level <= 100);
                if sb.state == SbState::Clean {
                    prop_assert!(sb.lens[0] + sb.lens[1] <= room);
                }
            }
        }
    }

    /// Arbitrary bytes as a saved set, and a valid set with bytes changed:
    /// decoding never panics, and what it accepts marks only blocks of the
    /// device.
    #[test]
    fn corrupted_sets_never_panic(
        noise in proptest::collection::vec(any::<u8>(), 0..600),
        edits in proptest::collection::vec((0usize..400, any::<u8>()), 0..16),
        shift in 0u8..=8,
    ) {
        let blocks = 5000;
        let mut b = set(blocks, 0, 64);
        let _ = b.decode_from(&noise);
        prop_assert!(reported(&b).iter().all(|&x| x < blocks));
        let mut a = set(blocks, shift, 64);
        for i in 0..20 {
            a.mark(i * 211 % blocks, 3);
        }
        let mut buf = vec![0u8; a.encoded_len()];
        a.encode(&mut buf, false);
        for (at, v) in edits {
            if let Some(x) = buf.get_mut(at) {
                *x = v;
            }
        }
        let mut c = set(blocks, 0, 64);
        if c.decode_from(&buf).is_ok() {
            prop_assert!(reported(&c).iter().all(|&x| x < blocks));
        }
    }
}
