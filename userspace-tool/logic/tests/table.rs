// SPDX-License-Identifier: GPL-2.0

//! The table line and message grammar of the `foresight` target.

use foresight_logic::table::{
    parse_message, parse_table, parse_u32, write_table, Features, Message, MessageError,
    TableError,
};
use proptest::prelude::*;

fn parse(line: &str) -> Result<(String, Features), TableError> {
    let words: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
    parse_table(words.into_iter()).map(|t| (String::from_utf8(t.origin.to_vec()).unwrap(), t.features))
}

fn print(origin: &str, f: &Features) -> String {
    let mut s = String::new();
    write_table(&mut s, origin, f).unwrap();
    s
}

#[test]
fn origin_alone() {
    assert_eq!(parse("/dev/loop0").unwrap(), ("/dev/loop0".into(), Features::default()));
    assert_eq!(parse("7:0 0").unwrap(), ("7:0".into(), Features::default()));
}

#[test]
fn features() {
    let (_, f) = parse("7:0 1 no_discard_passdown").unwrap();
    assert!(f.no_discard_passdown);
    assert_eq!(f.count(), 1);
}

#[test]
fn every_malformed_line_is_refused_with_its_reason() {
    assert_eq!(parse(""), Err(TableError::MissingOrigin));
    assert_eq!(parse("7:0 x"), Err(TableError::BadFeatureCount));
    assert_eq!(parse("7:0 -1"), Err(TableError::BadFeatureCount));
    assert_eq!(parse("7:0 99999999999"), Err(TableError::BadFeatureCount));
    assert_eq!(parse("7:0 2 no_discard_passdown"), Err(TableError::FeatureCountMismatch));
    assert_eq!(parse("7:0 0 no_discard_passdown"), Err(TableError::FeatureCountMismatch));
    assert_eq!(parse("7:0 1 frobnicate"), Err(TableError::UnknownFeature));
    assert_eq!(
        parse("7:0 2 no_discard_passdown no_discard_passdown"),
        Err(TableError::DuplicateFeature)
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
    ] {
        let m = e.message().to_str().unwrap();
        assert!(m.len() > 10 && m.chars().next().unwrap().is_uppercase(), "{m}");
    }
}

#[test]
fn table_output() {
    assert_eq!(print("7:0", &Features::default()), "7:0");
    let f = Features { no_discard_passdown: true };
    assert_eq!(print("7:0", &f), "7:0 1 no_discard_passdown");
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
    let m = |s: &str| {
        let w: Vec<&[u8]> = s.split_whitespace().map(str::as_bytes).collect();
        parse_message(w.into_iter())
    };
    assert_eq!(m("reset_stats"), Ok(Message::ResetStats));
    assert_eq!(m("reset_stats now"), Err(MessageError::BadArguments));
    assert_eq!(m("frobnicate"), Err(MessageError::Unknown));
    assert_eq!(m(""), Err(MessageError::Unknown));
}

proptest! {
    /// What `dmsetup table` prints is a line the constructor accepts, and it
    /// parses back to the same target.
    #[test]
    fn table_round_trips(major in 1u32..4096, minor in 0u32..1_000_000, nd in any::<bool>()) {
        let origin = format!("{major}:{minor}");
        let f = Features { no_discard_passdown: nd };
        let line = print(&origin, &f);
        prop_assert_eq!(parse(&line).unwrap(), (origin, f));
    }

    /// No sequence of words makes the parser panic, and whatever it accepts
    /// prints back to a line that parses to the same thing.
    #[test]
    fn parser_is_total(words in proptest::collection::vec("[a-z0-9_:/]{0,12}", 0..6)) {
        let line = words.join(" ");
        if let Ok((origin, f)) = parse(&line) {
            prop_assert_eq!(parse(&print(&origin, &f)).unwrap(), (origin, f));
        }
    }
}
