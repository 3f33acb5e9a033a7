// SPDX-License-Identifier: GPL-2.0

//! The table line and message grammar of the `foresight` target.

use foresight_logic::rotation;
use foresight_logic::table::{
    parse_message, parse_table, parse_u32, parse_u64, write_table, CacheConfig, Epoch, Features,
    LogConfig, Message, MessageError, TableError,
};
use proptest::prelude::*;

fn parse_all(line: &str) -> Result<(String, Features, LogConfig), TableError> {
    let words: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
    parse_table(words.into_iter()).map(|t| {
        (
            String::from_utf8(t.origin.to_vec()).unwrap(),
            t.features,
            t.log,
        )
    })
}

fn parse(line: &str) -> Result<(String, Features), TableError> {
    parse_all(line).map(|(o, f, _)| (o, f))
}

fn print_all(origin: &str, f: &Features, log: &LogConfig) -> String {
    let mut s = String::new();
    write_table(&mut s, origin, f, log, &CacheConfig::default(), None).unwrap();
    s
}

fn print(origin: &str, f: &Features) -> String {
    print_all(origin, f, &LogConfig::default())
}

#[test]
fn origin_alone() {
    assert_eq!(
        parse("/dev/loop0").unwrap(),
        ("/dev/loop0".into(), Features::default())
    );
    assert_eq!(parse("7:0 0").unwrap(), ("7:0".into(), Features::default()));
}

#[test]
fn features() {
    let (_, f) = parse("7:0 1 no_discard_passdown").unwrap();
    assert!(f.no_discard_passdown);
    assert_eq!(f.count(), 1);
    let (_, f) = parse("7:0 2 flat_log verify").unwrap();
    assert!(f.flat_log && f.verify && !f.no_discard_passdown);
    // Printed in the canonical order, whatever order they were given in.
    assert_eq!(print("7:0", &f), "7:0 2 verify flat_log");
    let (_, f) = parse("7:0 1 buffered_log").unwrap();
    assert!(f.buffered_log && !f.flat_log);
    assert_eq!(print("7:0", &f), "7:0 1 buffered_log");
}

#[test]
fn the_log_is_flat_by_default_up_to_its_memory_bound() {
    let none = Features::default();
    let gib = 1u64 << 18; // 4 KiB blocks per GiB
    // A bit per block: 1 TiB takes 32 MiB.
    assert!(none.flat(1024 * gib, 0));
    assert!(!none.flat(1024 * gib + 8, 0));
    // A memory budget: the bitmap may take half of it.
    assert!(none.flat(4 * gib, 256));
    assert!(!none.flat(4 * gib, 255));
    let (_, forced) = parse("7:0 1 flat_log").unwrap();
    assert!(forced.flat(64 << 30, 8));
    let (_, buffered) = parse("7:0 1 buffered_log").unwrap();
    assert!(!buffered.flat(1, 0));
}

#[test]
fn every_malformed_line_is_refused_with_its_reason() {
    assert_eq!(parse(""), Err(TableError::MissingOrigin));
    assert_eq!(parse("7:0 x"), Err(TableError::BadFeatureCount));
    assert_eq!(parse("7:0 -1"), Err(TableError::BadFeatureCount));
    assert_eq!(parse("7:0 99999999999"), Err(TableError::BadFeatureCount));
    assert_eq!(
        parse("7:0 2 no_discard_passdown"),
        Err(TableError::FeatureCountMismatch)
    );
    assert_eq!(
        parse("7:0 0 no_discard_passdown"),
        Err(TableError::BadCoreCount)
    );
    assert_eq!(parse("7:0 0 1 level"), Err(TableError::CoreCountMismatch));
    assert_eq!(parse("7:0 0 2 level"), Err(TableError::CoreCountMismatch));
    assert_eq!(parse("7:0 0 x level 5"), Err(TableError::BadCoreCount));
    assert_eq!(parse("7:0 0 2 frob 5"), Err(TableError::UnknownKey));
    assert_eq!(parse("7:0 0 2 level 101"), Err(TableError::BadValue));
    assert_eq!(parse("7:0 0 2 adaptive 2"), Err(TableError::BadValue));
    assert_eq!(parse("7:0 0 2 dense_pct 0"), Err(TableError::BadValue));
    assert_eq!(parse("7:0 0 2 interval_ms 5"), Err(TableError::BadValue));
    assert_eq!(
        parse("7:0 0 4 min_level 60 max_level 50"),
        Err(TableError::BadLevelRange)
    );
    assert_eq!(parse("7:0 1 frobnicate"), Err(TableError::UnknownFeature));
    assert_eq!(
        parse("7:0 2 no_discard_passdown no_discard_passdown"),
        Err(TableError::DuplicateFeature)
    );
    assert_eq!(
        parse("7:0 2 buffered_log flat_log"),
        Err(TableError::ConflictingLogModes)
    );
}

#[test]
fn messages_are_sentences() {
    for e in [
        TableError::MissingOrigin,
        TableError::BadFeatureCount,
        TableError::FeatureCountMismatch,
        TableError::UnknownFeature,
        TableError::DuplicateFeature,
        TableError::ConflictingLogModes,
        TableError::BadCoreCount,
        TableError::CoreCountMismatch,
        TableError::UnknownKey,
        TableError::BadValue,
        TableError::BadLevelRange,
    ] {
        let m = e.message().to_str().unwrap();
        assert!(
            m.len() > 10 && m.chars().next().unwrap().is_uppercase(),
            "{m}"
        );
    }
}

#[test]
fn table_output() {
    assert_eq!(print("7:0", &Features::default()), "7:0");
    let f = Features {
        no_discard_passdown: true,
        ..Features::default()
    };
    assert_eq!(print("7:0", &f), "7:0 1 no_discard_passdown");
}

#[test]
fn core_arguments() {
    let (_, f, log) = parse_all("7:0 0 6 level 40 adaptive 0 dense_pct 75").unwrap();
    assert_eq!(f, Features::default());
    assert_eq!((log.level, log.adaptive, log.dense_pct), (40, false, 75));
    assert_eq!(
        print_all("7:0", &f, &log),
        "7:0 0 6 level 40 adaptive 0 dense_pct 75",
        "non-default keys in canonical order"
    );
    let (_, _, log) = parse_all("7:0 1 no_discard_passdown 4 w_io 10 base 5").unwrap();
    assert_eq!((log.params.w_io, log.params.base), (10, 5));
    // Defaults are left out of the table.
    let (_, _, log) = parse_all("7:0 0 2 level 100").unwrap();
    assert_eq!(print_all("7:0", &Features::default(), &log), "7:0");
}

#[test]
fn metadata_device() {
    let words: Vec<&[u8]> = "7:0 0 4 level 50 metadata_dev /dev/ram1"
        .split(' ')
        .map(str::as_bytes)
        .collect();
    let t = parse_table(words.into_iter()).unwrap();
    assert_eq!(t.metadata, Some((&b"/dev/ram1"[..], 6)));
    assert_eq!(t.log.level, 50);
    let mut s = String::new();
    write_table(&mut s, "7:0", &t.features, &t.log, &t.cache, Some("1:1")).unwrap();
    assert_eq!(s, "7:0 0 4 metadata_dev 1:1 level 50");
    assert_eq!(
        parse("7:0 0 4 metadata_dev a metadata_dev b"),
        Err(TableError::BadValue)
    );
}

#[test]
fn counts() {
    assert_eq!(parse_u32(b"0"), Some(0));
    assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
    assert_eq!(parse_u32(b"4294967296"), None);
    assert_eq!(parse_u32(b""), None);
    assert_eq!(parse_u32(b"+1"), None);
    assert_eq!(parse_u32(b" 1"), None);
}

#[test]
fn message_words() {
    let w = |s: &'static str| -> Vec<&'static [u8]> {
        s.split_whitespace().map(str::as_bytes).collect()
    };
    let m = |s: &'static str| parse_message(w(s).into_iter());
    assert_eq!(m("reset_stats"), Ok(Message::ResetStats));
    assert!(matches!(
        m("reset_stats now"),
        Err(MessageError::BadArguments(_))
    ));
    assert_eq!(m("frobnicate"), Err(MessageError::Unknown));
    assert_eq!(m(""), Err(MessageError::Unknown));
    assert_eq!(m("dirty"), Err(MessageError::Unknown));
    assert_eq!(m("dirty frob"), Err(MessageError::Unknown));
    let rot = |expect, force| {
        Ok(Message::Rotate(rotation::Request {
            expect,
            claim: false,
            force,
        }))
    };
    assert_eq!(m("dirty rotate"), rot(None, false));
    assert_eq!(m("dirty rotate 7"), rot(Some(7), false));
    assert_eq!(m("dirty rotate force"), rot(None, true));
    assert_eq!(m("dirty rotate 7 force"), rot(Some(7), true));
    for bad in [
        "dirty rotate now",
        "dirty rotate force 7",
        "dirty rotate 7 8",
        "dirty rotate force force",
        "dirty rotate 7 force x",
    ] {
        assert!(
            matches!(m(bad), Err(MessageError::BadArguments(_))),
            "{bad}"
        );
    }
    assert_eq!(m("dirty level 0"), Ok(Message::Level(0)));
    assert_eq!(m("dirty level auto"), Ok(Message::LevelAuto));
    assert!(matches!(
        m("dirty level 101"),
        Err(MessageError::BadArguments(_))
    ));
    assert_eq!(m("dirty set base 5"), Ok(Message::Set(b"base", b"5")));
    assert_eq!(m("dirty predict 1048576"), Ok(Message::Predict(1 << 20)));
    assert!(matches!(
        m("dirty predict x"),
        Err(MessageError::BadArguments(_))
    ));
    assert_eq!(m("dirty prelog 2048 4096"), Ok(Message::Prelog(2048, 4096)));
    assert_eq!(
        m("dirty extents prev"),
        Ok(Message::Extents(Epoch::Previous, 0))
    );
    assert_eq!(
        m("dirty extents cur 64"),
        Ok(Message::Extents(Epoch::Current, 64))
    );
    assert!(matches!(
        m("dirty extents next"),
        Err(MessageError::BadArguments(_))
    ));
    assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_u64(b"18446744073709551616"), None);
}

proptest! {
    /// What `dmsetup table` prints is a line the constructor accepts, and it
    /// parses back to the same target.
    #[test]
    fn table_round_trips(major in 1u32..4096, minor in 0u32..1_000_000, nd in any::<bool>()) {
        let origin = format!("{major}:{minor}");
        let f = Features { no_discard_passdown: nd, ..Features::default() };
        let line = print(&origin, &f);
        prop_assert_eq!(parse(&line).unwrap(), (origin, f));
    }

    /// No sequence of words makes the parser panic, and whatever it accepts
    /// prints back to a line that parses to the same thing.
    #[test]
    fn parser_is_total(words in proptest::collection::vec("[a-z0-9_:/]{0,12}|level|adaptive|w_io|2|4|no_discard_passdown", 0..9)) {
        let line = words.join(" ");
        if let Ok((origin, f, log)) = parse_all(&line) {
            prop_assert_eq!(parse_all(&print_all(&origin, &f, &log)).unwrap(), (origin, f, log));
        }
    }

    /// Any valid configuration prints to a line that parses back to it.
    #[test]
    fn config_round_trips(level in 0u8..=100, adaptive in any::<bool>(), base in 0u8..=100,
                          w_io in any::<u32>(), min in 0u8..=50, max in 50u8..=100, dense in 1u8..=100) {
        let mut log = LogConfig { level, adaptive, dense_pct: dense, ..LogConfig::default() };
        log.params.base = base;
        log.params.w_io = w_io;
        log.params.min = min;
        log.params.max = max;
        let line = print_all("8:16", &Features::default(), &log);
        prop_assert_eq!(parse_all(&line).unwrap().2, log);
    }
}

#[test]
fn cache_arguments_round_trip() {
    let line = "7:0 1 verify 6 cache_mb 64 critical_ppm 900000 level 50";
    let words: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
    let t = parse_table(words.into_iter()).unwrap();
    assert!(t.features.verify);
    assert_eq!(t.cache.cache_mb, 64);
    assert_eq!(t.cache.critical_ppm, 900_000);
    assert_eq!(t.log.level, 50);
    let mut s = String::new();
    write_table(&mut s, "7:0", &t.features, &t.log, &t.cache, None).unwrap();
    assert_eq!(s, "7:0 1 verify 6 level 50 cache_mb 64 critical_ppm 900000");
}

#[test]
fn cache_arguments_checked() {
    let bad = |line: &str| {
        let words: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
        parse_table(words.into_iter()).err()
    };
    assert_eq!(bad("7:0 0 2 cache_mb 70000"), Some(TableError::BadValue));
    assert_eq!(
        bad("7:0 0 2 critical_ppm 1000001"),
        Some(TableError::BadValue)
    );
    assert_eq!(
        bad("7:0 0 2 critical_ppm 1000"),
        Some(TableError::BadThresholds)
    );
    assert_eq!(
        bad("7:0 0 2 prefetch_inflight 0"),
        Some(TableError::BadValue)
    );
}

#[test]
fn cache_messages() {
    fn msg(line: &str) -> Result<Message<'_>, MessageError> {
        let words: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
        parse_message(words.into_iter())
    }
    assert_eq!(msg("cache_mb 16"), Ok(Message::CacheMb(16)));
    assert!(msg("cache_mb").is_err());
    assert!(msg("cache_mb 99999").is_err());
    assert_eq!(
        msg("cache set min_ppm 7"),
        Ok(Message::CacheSet(b"min_ppm", 7))
    );
    assert_eq!(
        msg("prefetch 8 16 500000"),
        Ok(Message::Prefetch(8, 16, 500_000))
    );
    assert!(msg("prefetch 8 16 1000001").is_err());
    assert!(msg("prefetch 8 16").is_err());
}
