// SPDX-License-Identifier: GPL-2.0

//! The `foresight` table line and messages.
//!
//! ```text
//! <start> <len> foresight <origin_dev> [<#feature_args> <feature>...]
//! ```
//!
//! Parsed like dm-clone's: the positional device first, then a counted
//! group of feature words.  Every rejection carries a sentence for
//! `ti->error`.

use core::{
    ffi::CStr,
    fmt, //
};

/// Optional behaviour chosen by feature words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// `no_discard_passdown`: discards are not passed to the origin (the
    /// device then advertises no discard support).
    pub no_discard_passdown: bool,
}

/// Every feature word, in the canonical order the table is printed in.
const FEATURE_WORDS: &[&str] = &["no_discard_passdown"];

impl Features {
    fn flag(&mut self, word: &[u8]) -> Option<&mut bool> {
        match word {
            b"no_discard_passdown" => Some(&mut self.no_discard_passdown),
            _ => None,
        }
    }

    fn is_set(&self, word: &str) -> bool {
        match word {
            "no_discard_passdown" => self.no_discard_passdown,
            _ => false,
        }
    }

    /// How many feature words are set.
    pub fn count(&self) -> usize {
        FEATURE_WORDS.iter().filter(|w| self.is_set(w)).count()
    }
}

/// A parsed table line (the words after `foresight`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLine<'a> {
    /// The origin device as given: a path or `major:minor`.
    pub origin: &'a [u8],
    /// The features.
    pub features: Features,
}

/// Why a table line was refused; [`TableError::message`] is the sentence
/// for the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// No origin device.
    MissingOrigin,
    /// The feature count is not a number.
    BadFeatureCount,
    /// The feature count does not match the words that follow.
    FeatureCountMismatch,
    /// A word that is not a feature.
    UnknownFeature,
    /// The same feature twice.
    DuplicateFeature,
}

impl TableError {
    /// The sentence device-mapper reports for this error.
    pub fn message(self) -> &'static CStr {
        match self {
            Self::MissingOrigin => {
                c"Missing origin device: expected <origin_dev> [<#feature_args> <feature>...]"
            }
            Self::BadFeatureCount => {
                c"Invalid feature argument count: expected a number after the origin device"
            }
            Self::FeatureCountMismatch => {
                c"Feature argument count does not match the number of feature arguments given"
            }
            Self::UnknownFeature => {
                c"Unknown feature: the supported feature is no_discard_passdown"
            }
            Self::DuplicateFeature => c"Feature given more than once",
        }
    }
}

/// Parses a decimal count, refusing signs, blanks and overflow.
pub fn parse_u32(word: &[u8]) -> Option<u32> {
    if word.is_empty() || word.len() > 10 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in word {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    u32::try_from(n).ok()
}

/// Parses the words of a table line.
pub fn parse_table<'a, I>(mut words: I) -> Result<TableLine<'a>, TableError>
where
    I: ExactSizeIterator<Item = &'a [u8]>,
{
    let origin = words.next().ok_or(TableError::MissingOrigin)?;
    if origin.is_empty() {
        return Err(TableError::MissingOrigin);
    }
    let mut features = Features::default();
    if let Some(count) = words.next() {
        let count = parse_u32(count).ok_or(TableError::BadFeatureCount)?;
        if count as usize != words.len() {
            return Err(TableError::FeatureCountMismatch);
        }
        for word in words {
            let flag = features.flag(word).ok_or(TableError::UnknownFeature)?;
            if *flag {
                return Err(TableError::DuplicateFeature);
            }
            *flag = true;
        }
    }
    Ok(TableLine { origin, features })
}

/// Writes the table line as `dmsetup table` shows it: the origin by name,
/// then the features, if any, in canonical order.
pub fn write_table(out: &mut impl fmt::Write, origin: &str, features: &Features) -> fmt::Result {
    out.write_str(origin)?;
    let n = features.count();
    if n > 0 {
        write!(out, " {n}")?;
        for word in FEATURE_WORDS.iter().filter(|w| features.is_set(w)) {
            write!(out, " {word}")?;
        }
    }
    Ok(())
}

/// A `dmsetup message <dev> 0 ...` the target understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// `reset_stats`: zero the I/O counters.
    ResetStats,
}

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// No word, or a word the target does not know.
    Unknown,
    /// A known word with the wrong arguments.
    BadArguments,
}

impl MessageError {
    /// The sentence logged for this error.
    pub fn message(self) -> &'static CStr {
        match self {
            Self::Unknown => c"Unknown message: the supported message is reset_stats",
            Self::BadArguments => c"Wrong arguments: reset_stats takes none",
        }
    }
}

/// Parses the words of a message.
pub fn parse_message<'a, I>(mut words: I) -> Result<Message, MessageError>
where
    I: ExactSizeIterator<Item = &'a [u8]>,
{
    let msg = match words.next().ok_or(MessageError::Unknown)? {
        b"reset_stats" => Message::ResetStats,
        _ => return Err(MessageError::Unknown),
    };
    if words.len() != 0 {
        return Err(MessageError::BadArguments);
    }
    Ok(msg)
}
