// SPDX-License-Identifier: GPL-2.0

//! The `foresight` table line and messages.
//!
//! ```text
//! <start> <len> foresight <origin_dev> [<#feature_args> <feature>...]
//!                                      [<#core_args> <key> <value>...]
//! ```
//!
//! Parsed like dm-clone's: the positional device first, then a counted
//! group of feature words, then a counted group of key/value words.  Every
//! rejection carries a sentence for `ti->error`.

use super::{
    controller::Params,
    rotation, //
};
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
    /// `verify`: a crc32c is recorded for every block installed in the
    /// prefetch cache and checked on every hit.
    pub verify: bool,
    /// `flat_log`: the dirty log keeps the current epoch as a plain bitmap
    /// (one bit per 4 KiB block, like dm-era's write set), folded into the
    /// adaptive sets only when the epoch is rotated, read or saved: a write
    /// costs one atomic bit set, for one bit of memory per block.  The
    /// default up to [`FLAT_LOG_AUTO_BYTES`] (see [`Features::flat`]);
    /// the word forces it for any size.
    pub flat_log: bool,
    /// `buffered_log`: the dirty log records writes in per-CPU buffers
    /// folded into the adaptive sets in the background (memory in
    /// proportion to what is written, not to the device's size), whatever
    /// the device's size.
    pub buffered_log: bool,
}

/// Every feature word, in the canonical order the table is printed in.
const FEATURE_WORDS: &[&str] = &["no_discard_passdown", "verify", "flat_log", "buffered_log"];

/// The most memory the flat log's bitmap takes by default (one bit per
/// 4 KiB block: a device of up to 1 TiB); larger devices get the buffered
/// log unless `flat_log` is given.
pub const FLAT_LOG_AUTO_BYTES: u64 = 32 << 20;

impl Features {
    fn flag(&mut self, word: &[u8]) -> Option<&mut bool> {
        match word {
            b"no_discard_passdown" => Some(&mut self.no_discard_passdown),
            b"verify" => Some(&mut self.verify),
            b"flat_log" => Some(&mut self.flat_log),
            b"buffered_log" => Some(&mut self.buffered_log),
            _ => None,
        }
    }

    fn is_set(&self, word: &str) -> bool {
        match word {
            "no_discard_passdown" => self.no_discard_passdown,
            "verify" => self.verify,
            "flat_log" => self.flat_log,
            "buffered_log" => self.buffered_log,
            _ => false,
        }
    }

    /// Whether the dirty log of a device of `blocks` 4 KiB blocks is flat:
    /// as the features say, else when its bitmap (a bit per block) takes at
    /// most [`FLAT_LOG_AUTO_BYTES`] and, with a memory budget
    /// (`max_memory_kb`, 0: none), at most half of it.
    pub fn flat(&self, blocks: u64, max_memory_kb: u32) -> bool {
        if self.flat_log || self.buffered_log {
            return self.flat_log;
        }
        let bytes = blocks.div_ceil(8);
        bytes <= FLAT_LOG_AUTO_BYTES && (max_memory_kb == 0 || bytes <= u64::from(max_memory_kb) * 512)
    }

    /// How many feature words are set.
    pub fn count(&self) -> usize {
        FEATURE_WORDS.iter().filter(|w| self.is_set(w)).count()
    }
}

/// The dirty log's settings: the core arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// The logging level (0: off; 1..100: 1 MiB down to 4 KiB grains); the
    /// starting level when adaptive.
    pub level: u8,
    /// Whether the controller adapts the level.
    pub adaptive: bool,
    /// The controller's parameters.
    pub params: Params,
    /// Promote a region to coarse when this percentage of it is dirty.
    pub dense_pct: u8,
    /// Controller period in milliseconds.
    pub interval_ms: u32,
    /// Most memory the log's tables may take, in KiB (0: no limit).  Past
    /// it, new regions are tracked coarser (lossless).
    pub max_memory_kb: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: 100,
            adaptive: true,
            params: Params::default(),
            dense_pct: 90,
            interval_ms: 250,
            max_memory_kb: 0,
        }
    }
}

/// The keys of [`LogConfig`], in canonical order.
pub const CORE_KEYS: &[&str] = &[
    "level",
    "adaptive",
    "base",
    "w_io",
    "w_dirty",
    "min_level",
    "max_level",
    "hysteresis",
    "predict_ttl",
    "dense_pct",
    "interval_ms",
    "max_memory_kb",
];

impl LogConfig {
    /// The value of `key`, if it is a key.
    pub fn get(&self, key: &str) -> Option<u32> {
        let p = &self.params;
        Some(match key {
            "level" => self.level.into(),
            "adaptive" => self.adaptive.into(),
            "base" => p.base.into(),
            "w_io" => p.w_io,
            "w_dirty" => p.w_dirty,
            "min_level" => p.min.into(),
            "max_level" => p.max.into(),
            "hysteresis" => p.hysteresis.into(),
            "predict_ttl" => p.predict_ttl,
            "dense_pct" => self.dense_pct.into(),
            "interval_ms" => self.interval_ms,
            "max_memory_kb" => self.max_memory_kb,
            _ => return None,
        })
    }

    /// Sets `key` to the decimal `value`, checking its range; the
    /// combination is checked by [`LogConfig::validate`].
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), TableError> {
        self.set_value(key, parse_u32(value).ok_or(TableError::BadValue)?)
    }

    /// Sets `key` to `v`, checking its range, like [`LogConfig::set`].
    pub fn set_value(&mut self, key: &[u8], v: u32) -> Result<(), TableError> {
        let level = || {
            u8::try_from(v)
                .ok()
                .filter(|&l| l <= 100)
                .ok_or(TableError::BadValue)
        };
        let p = &mut self.params;
        match key {
            b"level" => self.level = level()?,
            b"adaptive" if v <= 1 => self.adaptive = v == 1,
            b"base" => p.base = level()?,
            b"w_io" => p.w_io = v,
            b"w_dirty" => p.w_dirty = v,
            b"min_level" => p.min = level()?,
            b"max_level" => p.max = level()?,
            b"hysteresis" => p.hysteresis = level()?,
            b"predict_ttl" => p.predict_ttl = v,
            b"dense_pct" if (1..=100).contains(&v) => self.dense_pct = v as u8,
            b"interval_ms" if (10..=60_000).contains(&v) => self.interval_ms = v,
            b"max_memory_kb" => self.max_memory_kb = v,
            b"adaptive" | b"dense_pct" | b"interval_ms" => return Err(TableError::BadValue),
            _ => return Err(TableError::UnknownKey),
        }
        Ok(())
    }

    /// Checks the combination of values.
    pub fn validate(&self) -> Result<(), TableError> {
        self.params
            .validate()
            .map_err(|_| TableError::BadLevelRange)
    }

    /// How many key/value words differ from the defaults.
    fn non_default(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        let d = Self::default();
        CORE_KEYS
            .iter()
            .filter_map(move |k| Some((*k, self.get(k)?)).filter(|(k, v)| d.get(k) != Some(*v)))
    }
}

/// The prefetch cache's settings: core arguments too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Memory for cached blocks, in MiB (0: no cache).
    pub cache_mb: u32,
    /// Predictions at or above this probability (millionths) are critical:
    /// fetched at once.
    pub critical_ppm: u32,
    /// At or above this: predictive, fetched while the origin's load is
    /// under `load_limit`.
    pub predictive_ppm: u32,
    /// At or above this: background, fetched when the origin is idle;
    /// below it, dropped.
    pub min_ppm: u32,
    /// Prefetch bandwidth limit, KiB/s (0: none).
    pub prefetch_kbps: u32,
    /// Most prefetch reads in flight.
    pub prefetch_inflight: u32,
    /// Origin I/Os in flight at or above which predictive fetches wait.
    pub load_limit: u32,
    /// The origin counts as idle after this long without user I/O, ms.
    pub idle_ms: u32,
    /// 1: the blocks a read that misses touches (up to 64 KiB) are
    /// fetched into the cache, like predictions of probability `reuse`;
    /// 0: only predictions fill it.
    pub keep_reads: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            cache_mb: 0,
            critical_ppm: 800_000,
            predictive_ppm: 300_000,
            min_ppm: 50_000,
            prefetch_kbps: 0,
            prefetch_inflight: 8,
            load_limit: 8,
            idle_ms: 20,
            keep_reads: 0,
        }
    }
}

/// The keys of [`CacheConfig`], in canonical order.
pub const CACHE_KEYS: &[&str] = &[
    "cache_mb",
    "critical_ppm",
    "predictive_ppm",
    "min_ppm",
    "prefetch_kbps",
    "prefetch_inflight",
    "load_limit",
    "idle_ms",
    "keep_reads",
];

/// Most memory a device's cache may take, MiB.
pub const MAX_CACHE_MB: u32 = 65_536;

impl CacheConfig {
    /// The value of `key`, if it is a key.
    pub fn get(&self, key: &str) -> Option<u32> {
        Some(match key {
            "cache_mb" => self.cache_mb,
            "critical_ppm" => self.critical_ppm,
            "predictive_ppm" => self.predictive_ppm,
            "min_ppm" => self.min_ppm,
            "prefetch_kbps" => self.prefetch_kbps,
            "prefetch_inflight" => self.prefetch_inflight,
            "load_limit" => self.load_limit,
            "idle_ms" => self.idle_ms,
            "keep_reads" => self.keep_reads,
            _ => return None,
        })
    }

    /// Sets `key` to `v`: `Ok(false)` if `key` is not a cache key.
    pub fn set_value(&mut self, key: &[u8], v: u32) -> Result<bool, TableError> {
        let ppm = || {
            if v <= 1_000_000 {
                Ok(v)
            } else {
                Err(TableError::BadValue)
            }
        };
        match key {
            b"cache_mb" if v <= MAX_CACHE_MB => self.cache_mb = v,
            b"critical_ppm" => self.critical_ppm = ppm()?,
            b"predictive_ppm" => self.predictive_ppm = ppm()?,
            b"min_ppm" => self.min_ppm = ppm()?,
            b"prefetch_kbps" => self.prefetch_kbps = v,
            b"prefetch_inflight" if (1..=256).contains(&v) => self.prefetch_inflight = v,
            b"load_limit" => self.load_limit = v,
            b"idle_ms" => self.idle_ms = v,
            b"keep_reads" if v <= 1 => self.keep_reads = v,
            b"cache_mb" | b"prefetch_inflight" | b"keep_reads" => return Err(TableError::BadValue),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks the combination: thresholds in order.
    pub fn validate(&self) -> Result<(), TableError> {
        if self.min_ppm <= self.predictive_ppm && self.predictive_ppm <= self.critical_ppm {
            Ok(())
        } else {
            Err(TableError::BadThresholds)
        }
    }

    fn non_default(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        let d = Self::default();
        CACHE_KEYS
            .iter()
            .filter_map(move |k| Some((*k, self.get(k)?)).filter(|(k, v)| d.get(k) != Some(*v)))
    }
}

/// A parsed table line (the words after `foresight`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLine<'a> {
    /// The origin device as given: a path or `major:minor`.
    pub origin: &'a [u8],
    /// The features.
    pub features: Features,
    /// The dirty log's settings.
    pub log: LogConfig,
    /// The prefetch cache's settings.
    pub cache: CacheConfig,
    /// The metadata device (core argument `metadata_dev`) and the index of
    /// its word in the line.
    pub metadata: Option<(&'a [u8], usize)>,
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
    /// `flat_log` and `buffered_log` together.
    ConflictingLogModes,
    /// The core argument count is not a number.
    BadCoreCount,
    /// The core argument count is odd or does not match the words that follow.
    CoreCountMismatch,
    /// A key that is not a core argument.
    UnknownKey,
    /// A value out of its key's range.
    BadValue,
    /// `min_level` above `max_level`.
    BadLevelRange,
    /// Prefetch thresholds out of order.
    BadThresholds,
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
                c"Unknown feature: the supported features are no_discard_passdown, verify, flat_log and buffered_log"
            }
            Self::DuplicateFeature => c"Feature given more than once",
            Self::ConflictingLogModes => c"Features flat_log and buffered_log exclude each other",
            Self::BadCoreCount => {
                c"Invalid core argument count: expected a number after the feature arguments"
            }
            Self::CoreCountMismatch => {
                c"Core argument count must be even and match the key/value words given"
            }
            Self::UnknownKey => {
                c"Unknown core argument: see Documentation/admin-guide/device-mapper/foresight.rst"
            }
            Self::BadValue => c"Core argument value out of range",
            Self::BadLevelRange => c"Invalid level range: min_level must not exceed max_level",
            Self::BadThresholds => {
                c"Invalid prefetch thresholds: need min_ppm <= predictive_ppm <= critical_ppm"
            }
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
    let total = words.len();
    let origin = words.next().ok_or(TableError::MissingOrigin)?;
    if origin.is_empty() {
        return Err(TableError::MissingOrigin);
    }
    let mut features = Features::default();
    let mut log = LogConfig::default();
    let mut cache = CacheConfig::default();
    if let Some(count) = words.next() {
        let count = parse_u32(count).ok_or(TableError::BadFeatureCount)? as usize;
        if count > words.len() {
            return Err(TableError::FeatureCountMismatch);
        }
        for _ in 0..count {
            let word = words.next().ok_or(TableError::FeatureCountMismatch)?;
            let flag = features.flag(word).ok_or(TableError::UnknownFeature)?;
            if *flag {
                return Err(TableError::DuplicateFeature);
            }
            *flag = true;
        }
        if features.flat_log && features.buffered_log {
            return Err(TableError::ConflictingLogModes);
        }
    }
    let mut metadata = None;
    if let Some(count) = words.next() {
        let count = parse_u32(count).ok_or(TableError::BadCoreCount)? as usize;
        if count & 1 != 0 || count != words.len() {
            return Err(TableError::CoreCountMismatch);
        }
        let mut index = total - count;
        while let (Some(k), Some(v)) = (words.next(), words.next()) {
            if k == b"metadata_dev" {
                if metadata.is_some() || v.is_empty() {
                    return Err(TableError::BadValue);
                }
                metadata = Some((v, index + 1));
            } else if !cache.set_value(k, parse_u32(v).ok_or(TableError::BadValue)?)? {
                log.set(k, v)?;
            }
            index += 2;
        }
        log.validate()?;
        cache.validate()?;
    }
    Ok(TableLine {
        origin,
        features,
        log,
        cache,
        metadata,
    })
}

/// Writes the table line as `dmsetup table` shows it: the origin by name,
/// then the features and the core arguments that differ from the defaults,
/// in canonical order.
pub fn write_table(
    out: &mut impl fmt::Write,
    origin: &str,
    features: &Features,
    log: &LogConfig,
    cache: &CacheConfig,
    metadata: Option<&str>,
) -> fmt::Result {
    out.write_str(origin)?;
    let n = features.count();
    let core =
        log.non_default().count() + cache.non_default().count() + usize::from(metadata.is_some());
    if n > 0 || core > 0 {
        write!(out, " {n}")?;
        for word in FEATURE_WORDS.iter().filter(|w| features.is_set(w)) {
            write!(out, " {word}")?;
        }
    }
    if core > 0 {
        write!(out, " {}", core * 2)?;
        if let Some(m) = metadata {
            write!(out, " metadata_dev {m}")?;
        }
        for (k, v) in log.non_default().chain(cache.non_default()) {
            write!(out, " {k} {v}")?;
        }
    }
    Ok(())
}

/// Which epoch of the dirty log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epoch {
    /// The epoch being written now.
    Current,
    /// The epoch before the last rotation: what a copy pass reads.
    Previous,
}

/// A `dmsetup message <dev> 0 ...` the target understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// `cache_mb <N>`: resize the prefetch cache (0 drops it).
    CacheMb(u32),
    /// `cache set <key> <value>`: change a prefetch setting.
    CacheSet(&'a [u8], u32),
    /// `prefetch <start_sector> <len_sectors> <probability_ppm>`: a read
    /// prediction, as the netlink `predict` operation gives them.
    Prefetch(u64, u64, u32),
    /// `reset_stats`: zero the I/O counters.
    ResetStats,
    /// `write_kbps <N>`: throttle writes to N KiB/s (0: no limit).
    WriteKbps(u64),
    /// `dirty rotate [<expected_epoch>] [force]`: start a new epoch (if the
    /// current one is the one expected; even if a copy tool owns the
    /// rotation, with `force`).
    Rotate(rotation::Request),
    /// `dirty level <0..100>`: fix the level (adaptation off).
    Level(u8),
    /// `dirty level auto`: let the controller adapt the level.
    LevelAuto,
    /// `dirty set <key> <value>`: change a core argument.
    Set(&'a [u8], &'a [u8]),
    /// `dirty predict <bytes_per_sec>`: predicted rate of newly dirtied data.
    Predict(u64),
    /// `dirty prelog <start_sector> <len_sectors>`: regions about to be
    /// written; allocate their fine structures now.
    Prelog(u64, u64),
    /// `dirty extents <cur|prev> [<from_sector>]`: list dirty extents.
    Extents(Epoch, u64),
}

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// No word, or a word the target does not know.
    Unknown,
    /// A known message with the wrong arguments.
    BadArguments(&'static CStr),
}

impl MessageError {
    /// The sentence logged for this error.
    pub fn message(self) -> &'static CStr {
        match self {
            Self::Unknown => {
                c"Unknown message: expected reset_stats, write_kbps, cache_mb, cache set, prefetch or dirty rotate|level|set|predict|prelog|extents"
            }
            Self::BadArguments(m) => m,
        }
    }
}

/// Parses a decimal u64.
pub fn parse_u64(word: &[u8]) -> Option<u64> {
    if word.is_empty() || word.len() > 20 {
        return None;
    }
    word.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(c - b'0')))
            .flatten()
    })
}

/// Largest `write_kbps` (4 TiB/s: no limit in practice).
pub const MAX_WRITE_KBPS: u64 = 1 << 32;

/// Parses the words of a message.
pub fn parse_message<'a, I>(mut words: I) -> Result<Message<'a>, MessageError>
where
    I: ExactSizeIterator<Item = &'a [u8]>,
{
    use MessageError::BadArguments as Bad;
    let first = words.next().ok_or(MessageError::Unknown)?;
    let rest = words.len();
    let msg = match first {
        b"reset_stats" if rest == 0 => Message::ResetStats,
        b"reset_stats" => return Err(Bad(c"reset_stats takes no arguments")),
        b"write_kbps" => Message::WriteKbps(
            words
                .next()
                .filter(|_| rest == 1)
                .and_then(parse_u64)
                .filter(|&n| n <= MAX_WRITE_KBPS)
                .ok_or(Bad(
                    c"write_kbps takes a rate in KiB/s, 0 (no limit) to 2^32",
                ))?,
        ),
        b"cache_mb" => Message::CacheMb(
            words
                .next()
                .filter(|_| rest == 1)
                .and_then(parse_u32)
                .filter(|&n| n <= MAX_CACHE_MB)
                .ok_or(Bad(c"cache_mb takes a size in MiB, 0..65536"))?,
        ),
        b"cache" => {
            let bad = Bad(c"cache takes set <key> <value>");
            match (words.next(), words.next(), words.next()) {
                (Some(b"set"), Some(k), Some(v)) if rest == 3 => {
                    Message::CacheSet(k, parse_u32(v).ok_or(bad)?)
                }
                _ => return Err(bad),
            }
        }
        b"prefetch" => {
            let bad = Bad(c"prefetch takes <start_sector> <len_sectors> <probability_ppm>");
            if rest != 3 {
                return Err(bad);
            }
            let s = words.next().and_then(parse_u64).ok_or(bad)?;
            let l = words.next().and_then(parse_u64).ok_or(bad)?;
            let p = words
                .next()
                .and_then(parse_u32)
                .filter(|&p| p <= 1_000_000)
                .ok_or(bad)?;
            Message::Prefetch(s, l, p)
        }
        b"dirty" => match (words.next().ok_or(MessageError::Unknown)?, rest) {
            (b"rotate", 1..=3) => {
                let bad = Bad(c"dirty rotate takes [<expected_epoch>] [force]");
                let mut req = rotation::Request::default();
                for (i, w) in words.by_ref().enumerate() {
                    match w {
                        b"force" if !req.force => req.force = true,
                        w if i == 0 => req.expect = Some(parse_u64(w).ok_or(bad)?),
                        _ => return Err(bad),
                    }
                }
                Message::Rotate(req)
            }
            (b"level", 2) => match words.next() {
                Some(b"auto") => Message::LevelAuto,
                Some(w) => Message::Level(
                    parse_u32(w)
                        .filter(|&l| l <= 100)
                        .ok_or(Bad(c"dirty level takes 0..100 or auto"))? as u8,
                ),
                None => return Err(Bad(c"dirty level takes 0..100 or auto")),
            },
            (b"set", 3) => {
                let k = words.next().ok_or(Bad(c"dirty set takes <key> <value>"))?;
                let v = words.next().ok_or(Bad(c"dirty set takes <key> <value>"))?;
                Message::Set(k, v)
            }
            (b"predict", 2) => Message::Predict(
                words
                    .next()
                    .and_then(parse_u64)
                    .ok_or(Bad(c"dirty predict takes <bytes_per_second>"))?,
            ),
            (b"prelog", 3) => {
                let bad = Bad(c"dirty prelog takes <start_sector> <len_sectors>");
                let s = words.next().and_then(parse_u64).ok_or(bad)?;
                let l = words.next().and_then(parse_u64).ok_or(bad)?;
                Message::Prelog(s, l)
            }
            (b"extents", 2 | 3) => {
                let bad = Bad(c"dirty extents takes cur|prev [<from_sector>]");
                let e = match words.next() {
                    Some(b"cur") => Epoch::Current,
                    Some(b"prev") => Epoch::Previous,
                    _ => return Err(bad),
                };
                let from = match words.next() {
                    Some(w) => parse_u64(w).ok_or(bad)?,
                    None => 0,
                };
                Message::Extents(e, from)
            }
            (b"rotate" | b"level" | b"set" | b"predict" | b"prelog" | b"extents", _) => {
                return Err(Bad(c"Wrong number of arguments for this dirty message"))
            }
            _ => return Err(MessageError::Unknown),
        },
        _ => return Err(MessageError::Unknown),
    };
    Ok(msg)
}
