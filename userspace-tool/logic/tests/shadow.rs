// SPDX-License-Identifier: GPL-2.0

//! The shadow target's table line (parsed, refused, written back as given),
//! its messages, and its metadata superblock.

use foresight_logic::hydrate::PROB_ONE;
use foresight_logic::meta::crc32c;
use foresight_logic::shadow::{
    parse_crc, parse_hints, parse_line, parse_marks, parse_message, parse_prob, write_table, RegionCrcs,
    ShadowConfig, ShadowError, ShadowMessage, ShadowSb, SbError,
};

fn words(s: &str) -> impl Iterator<Item = &[u8]> {
    s.split_whitespace().map(str::as_bytes)
}

fn round_trip(line: &str) -> String {
    let l = parse_line(words(line)).unwrap();
    let mut out = String::new();
    let name = |b: &[u8]| std::str::from_utf8(b).unwrap().to_string();
    let (m, d, s) = (name(l.meta), name(l.dest), name(l.source));
    write_table(&mut out, [&m, &d, &s], l.region_sectors, &l.cfg).unwrap();
    out
}

#[test]
fn table_lines_parse_and_are_written_back_as_given() {
    for line in [
        "/dev/m /dev/d /dev/s 128",
        "/dev/m /dev/d /dev/s 8 1 no_hydration",
        "/dev/m /dev/d /dev/s 16384 0 2 inflight 8",
        "/dev/m /dev/d /dev/s 64 1 no_hydration 6 bandwidth_kbps 1024 inflight 2 batch_regions 4",
        "/dev/m /dev/d /dev/s 128 2 no_hydration verify_crc",
        "/dev/m /dev/d /dev/s 128 1 verify_crc 2 inflight 1",
    ] {
        assert_eq!(round_trip(line), line);
    }
    let l = parse_line(words("m d s 128 0 4 bandwidth_kbps 100 batch_regions 3")).unwrap();
    assert_eq!(l.region_sectors, 128);
    assert_eq!((l.cfg.bandwidth_kbps, l.cfg.inflight, l.cfg.batch_regions), (100, 4, 3));
    assert!(!l.cfg.no_hydration);
}

#[test]
fn bad_table_lines_say_why() {
    let err = |s: &str| parse_line(words(s)).unwrap_err();
    assert_eq!(err("m d s"), ShadowError::Args);
    for r in ["0", "4", "12", "32768", "x", "-8"] {
        let line = format!("m d s {r}");
        assert_eq!(err(&line), ShadowError::RegionSize, "{r}");
    }
    assert_eq!(err("m d s 8 1 hydrate_fast"), ShadowError::Feature);
    assert_eq!(err("m d s 8 2 no_hydration"), ShadowError::Feature);
    assert_eq!(err("m d s 8 0 1 inflight"), ShadowError::CoreArgs);
    assert_eq!(err("m d s 8 0 2 inflight"), ShadowError::CoreArgs);
    assert_eq!(err("m d s 8 0 2 inflight 0"), ShadowError::BadValue);
    assert_eq!(err("m d s 8 0 2 inflight 17"), ShadowError::BadValue);
    assert_eq!(err("m d s 8 0 2 speed 1"), ShadowError::UnknownKey);
    assert_eq!(err("m d s 8 0 0 extra"), ShadowError::Trailing);
    // Every refusal has a sentence.
    assert!(!ShadowError::Trailing.message().to_bytes().is_empty());
}

#[test]
fn batches_fit_a_megabyte() {
    let c = ShadowConfig::default();
    assert_eq!(c.batch_for(8), 256);
    assert_eq!(c.batch_for(16384), 1);
    let mut c = c;
    c.set(b"batch_regions", 4).unwrap();
    assert_eq!(c.batch_for(8), 4);
    assert_eq!(c.batch_for(2048), 1, "never past a megabyte");
}

#[test]
fn messages() {
    assert!(matches!(parse_message(words("hydration off")), Ok(ShadowMessage::Hydration(false))));
    assert!(matches!(parse_message(words("hydration on")), Ok(ShadowMessage::Hydration(true))));
    assert!(matches!(parse_message(words("set inflight 3")), Ok(ShadowMessage::Set(b"inflight", 3))));
    for bad in ["", "hydration", "hydration maybe", "set inflight", "grow"] {
        assert!(parse_message(words(bad)).is_err(), "{bad}");
    }
    let Ok(ShadowMessage::Hint(rest)) = parse_message(words("hint 5 10 0.5 100 1 1")) else {
        panic!("hint");
    };
    let hints: Vec<_> = parse_hints(rest).collect();
    assert_eq!(hints.len(), 2);
    let h = hints[0].unwrap();
    assert_eq!((h.start, h.len, h.prob), (5, 10, PROB_ONE / 2));
    assert_eq!(hints[1].unwrap().prob, PROB_ONE);
    // A short or malformed triple is an error.
    assert_eq!(parse_hints(words("5 10")).collect::<Vec<_>>(), [None]);
    assert_eq!(parse_hints(words("5 10 2")).collect::<Vec<_>>(), [None]);
    // Marks: (region, count) pairs, at least one, none short.
    let marks = |m: &str| {
        let Ok(ShadowMessage::Mark(rest)) = parse_message(words(m)) else {
            panic!("{m}");
        };
        parse_marks(rest).collect::<Vec<_>>()
    };
    assert_eq!(marks("mark 10 20"), [Some((10, 20))]);
    assert_eq!(marks("mark 10 20 40 1"), [Some((10, 20)), Some((40, 1))]);
    assert_eq!(marks("mark"), [None]);
    assert_eq!(marks("mark 1"), [None]);
    assert_eq!(marks("mark 1 2 3"), [Some((1, 2)), None]);
    assert_eq!(marks("mark 1 x"), [None]);
}

#[test]
fn probabilities() {
    assert_eq!(parse_prob(b"1"), Some(PROB_ONE));
    assert_eq!(parse_prob(b"0"), Some(0));
    assert_eq!(parse_prob(b".25"), Some(PROB_ONE / 4));
    assert_eq!(parse_prob(b"0.125"), Some(PROB_ONE / 8));
    for bad in ["", ".", "1.5", "2", "0.1234567", "a", "0.x"] {
        assert_eq!(parse_prob(bad.as_bytes()), None, "{bad}");
    }
}

#[test]
fn superblock_round_trip_and_damage() {
    let sb = ShadowSb { region_sectors: 128, regions: 1 << 20, commits: 7, hydrated: 12345 };
    let mut block = vec![0u8; 4096];
    assert_eq!(ShadowSb::decode(&block), Ok(None), "all zero: a device to format");
    sb.encode(&mut block);
    assert_eq!(ShadowSb::decode(&block), Ok(Some(sb)));
    let mut bad = block.clone();
    bad[20] ^= 1;
    assert_eq!(ShadowSb::decode(&bad), Err(SbError::Checksum));
    let mut other = vec![0u8; 4096];
    other[100] = 1;
    assert_eq!(ShadowSb::decode(&other), Err(SbError::NotOurs));
}

#[test]
fn crc_messages_parse() {
    let Ok(ShadowMessage::Crc(start, rest)) = parse_message(words("crc 7 e3069283 0 FFFFFFFF")) else {
        panic!("crc message refused");
    };
    assert_eq!(start, 7);
    let crcs: Vec<_> = rest.map(parse_crc).collect();
    assert_eq!(crcs, [Some(0xe306_9283), Some(0), Some(u32::MAX)]);
    assert!(parse_message(words("crc")).is_err());
    assert!(parse_message(words("crc x 1")).is_err());
    for bad in ["", "123456789", "0x12", "g", "-1"] {
        assert_eq!(parse_crc(bad.as_bytes()), None, "{bad:?}");
    }
}

#[test]
fn region_checksums_refuse_data_that_does_not_match() {
    // The standard CRC-32C check value: the tool's crate computes the same.
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    let regions = 70u64;
    let rb = 512;
    let data: Vec<u8> = (0..regions as usize * rb - 100).map(|i| (i * 7 % 251) as u8).collect();
    let c = RegionCrcs::new(vec![], vec![]);
    assert!(c.is_empty());
    assert_eq!(c.mismatches(0, &data, rb, crc32c), 0, "no checksums: nothing to refuse");
    let w = RegionCrcs::<Vec<u32>, Vec<u64>>::known_words(regions);
    let mut c = RegionCrcs::new(vec![0u32; regions as usize], vec![0u64; w]);
    assert!(!c.is_empty());
    // Checksums for regions 1..70 (the last one short), not region 0.
    for (r, part) in data.chunks(rb).enumerate().skip(1) {
        assert!(c.set(r as u64, crc32c(part)));
    }
    assert!(!c.set(regions, 0), "out of range");
    assert_eq!(c.count(), regions - 1);
    assert!(c.set(5, crc32c(&data[5 * rb..6 * rb])), "set again");
    assert_eq!(c.count(), regions - 1);
    assert_eq!(c.get(0), None);
    assert!(c.all_known(1, regions - 1));
    assert!(!c.all_known(0, 2));
    assert!(!c.all_known(regions - 1, 2), "past the end");
    assert_eq!(c.mismatches(0, &data, rb, crc32c), 0);
    // A corrupted byte in region 0 (no checksum) passes; in 3 and 69 not.
    let mut bad = data.clone();
    bad[10] ^= 1;
    assert_eq!(c.mismatches(0, &bad, rb, crc32c), 0);
    bad[3 * rb + 1] ^= 0x80;
    bad[69 * rb + 2] ^= 0x01;
    assert_eq!(c.mismatches(0, &bad, rb, crc32c), 2);
    // A batch from region 3 on, and region 69 alone.
    assert_eq!(c.mismatches(3, &bad[3 * rb..5 * rb], rb, crc32c), 1);
    assert_eq!(c.mismatches(4, &bad[4 * rb..5 * rb], rb, crc32c), 0);
    assert_eq!(c.mismatches(69, &bad[69 * rb..], rb, crc32c), 1);
}
