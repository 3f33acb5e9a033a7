// SPDX-License-Identifier: GPL-2.0

//! The `foreshadow` target's table line, messages and metadata
//! superblock, as plain data.
//!
//! ```text
//! foreshadow <metadata_dev> <destination_dev> <source_dev> <region_sectors>
//!     [<#feature_args> [no_hydration] [verify_crc]
//!      [<#core_args> [bandwidth_kbps <n>] [inflight <n>] [batch_regions <n>]]]
//! ```

use super::{
    hydrate::{
        bit,
        Hint,
        PROB_ONE, //
    },
    meta::crc32c,
    table::parse_u64,
};
use core::{
    ffi::CStr,
    fmt::{
        self,
        Write, //
    },
    ops::DerefMut,
};

/// The smallest region: 4 KiB.
pub const MIN_REGION_SECTORS: u32 = 8;
/// The largest region: 8 MiB.
pub const MAX_REGION_SECTORS: u32 = 16384;
/// The most copies in flight.
pub const MAX_INFLIGHT: u32 = 16;
/// Bytes one batch copies at most (by default, and the most allowed).
pub const BATCH_BYTES: u64 = 1 << 20;

/// Settings of a shadow device: the table's feature and core arguments,
/// changed at run time by messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowConfig {
    /// Only regions that reads and writes need are copied.
    pub no_hydration: bool,
    /// A region is copied only once its checksum is known (`crc`).
    pub verify_crc: bool,
    /// Copy bandwidth in KiB/s (0: no limit).
    pub bandwidth_kbps: u32,
    /// Batches copied at once.
    pub inflight: u32,
    /// Regions per batch at most (0: as many as fit in [`BATCH_BYTES`]).
    pub batch_regions: u32,
    /// Core arguments given in the table, by bit (`CORE_KEYS` order): the
    /// table line is written back as it was given.
    given: u8,
}

const CORE_KEYS: [&str; 3] = ["bandwidth_kbps", "inflight", "batch_regions"];

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            no_hydration: false,
            verify_crc: false,
            bandwidth_kbps: 0,
            inflight: 4,
            batch_regions: 0,
            given: 0,
        }
    }
}

impl ShadowConfig {
    /// Sets core argument `key`.
    pub fn set(&mut self, key: &[u8], value: u32) -> Result<(), ShadowError> {
        let i = CORE_KEYS
            .iter()
            .position(|k| k.as_bytes() == key)
            .ok_or(ShadowError::UnknownKey)?;
        match i {
            0 => self.bandwidth_kbps = value,
            1 if (1..=MAX_INFLIGHT).contains(&value) => self.inflight = value,
            2 => self.batch_regions = value,
            _ => return Err(ShadowError::BadValue),
        }
        self.given |= 1 << i;
        Ok(())
    }

    fn get(&self, i: usize) -> u32 {
        [self.bandwidth_kbps, self.inflight, self.batch_regions][i]
    }

    /// Regions per batch for regions of `region_sectors` sectors.
    pub fn batch_for(&self, region_sectors: u32) -> u64 {
        let fit = BATCH_BYTES
            .checked_div(u64::from(region_sectors) << 9)
            .unwrap_or(1)
            .max(1);
        match self.batch_regions {
            0 => fit,
            n => u64::from(n).min(fit),
        }
    }
}

/// A parsed table line.
#[derive(Debug)]
pub struct ShadowLine<'a> {
    /// The metadata, destination and source devices, as given.
    pub meta: &'a [u8],
    /// See `meta`.
    pub dest: &'a [u8],
    /// See `meta`.
    pub source: &'a [u8],
    /// Sectors per region (a power of two).
    pub region_sectors: u32,
    /// The optional arguments.
    pub cfg: ShadowConfig,
}

/// A refused table line or message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowError {
    /// Fewer than four positional arguments.
    Args,
    /// Region size not a power of two in range.
    RegionSize,
    /// A bad feature-argument group.
    Feature,
    /// A bad core-argument group.
    CoreArgs,
    /// An unknown core argument.
    UnknownKey,
    /// A value out of range.
    BadValue,
    /// Words after the optional groups.
    Trailing,
    /// An unknown or malformed message.
    Message,
}

impl ShadowError {
    /// A sentence for the user.
    pub fn message(self) -> &'static CStr {
        match self {
            Self::Args => {
                c"Expected <metadata_dev> <destination_dev> <source_dev> <region_sectors>"
            }
            Self::RegionSize => c"The region size must be a power of two from 8 to 16384 sectors",
            Self::Feature => {
                c"Bad feature arguments: expected a count, then no_hydration or verify_crc"
            }
            Self::CoreArgs => c"Bad core arguments: expected a count, then key value pairs",
            Self::UnknownKey => c"Unknown key: bandwidth_kbps, inflight or batch_regions",
            Self::BadValue => c"Value out of range (inflight: 1 to 16)",
            Self::Trailing => c"Unexpected words after the core arguments",
            Self::Message => c"Unknown message: hydration, set, hint, mark or crc",
        }
    }
}

fn parse_u32(w: &[u8]) -> Option<u32> {
    parse_u64(w).and_then(|v| u32::try_from(v).ok())
}

/// Parses a table line.
pub fn parse_line<'a, I>(mut words: I) -> Result<ShadowLine<'a>, ShadowError>
where
    I: Iterator<Item = &'a [u8]>,
{
    let (Some(meta), Some(dest), Some(source), Some(region)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(ShadowError::Args);
    };
    let region_sectors = parse_u32(region)
        .filter(|r| r.is_power_of_two() && (MIN_REGION_SECTORS..=MAX_REGION_SECTORS).contains(r))
        .ok_or(ShadowError::RegionSize)?;
    let mut cfg = ShadowConfig::default();
    if let Some(n) = words.next() {
        let n = parse_u32(n).ok_or(ShadowError::Feature)?;
        for _ in 0..n {
            match words.next() {
                Some(b"no_hydration") => cfg.no_hydration = true,
                Some(b"verify_crc") => cfg.verify_crc = true,
                _ => return Err(ShadowError::Feature),
            }
        }
        if let Some(n) = words.next() {
            let n = parse_u32(n)
                .filter(|n| n % 2 == 0)
                .ok_or(ShadowError::CoreArgs)?;
            for _ in 0..n / 2 {
                let (Some(k), Some(v)) = (words.next(), words.next()) else {
                    return Err(ShadowError::CoreArgs);
                };
                cfg.set(k, parse_u32(v).ok_or(ShadowError::BadValue)?)?;
            }
        }
    }
    if words.next().is_some() {
        return Err(ShadowError::Trailing);
    }
    Ok(ShadowLine {
        meta,
        dest,
        source,
        region_sectors,
        cfg,
    })
}

/// Writes the table line back (`STATUSTYPE_TABLE`), as it was given.
pub fn write_table(
    out: &mut impl Write,
    devs: [&str; 3],
    region_sectors: u32,
    cfg: &ShadowConfig,
) -> fmt::Result {
    write!(
        out,
        "{} {} {} {}",
        devs[0], devs[1], devs[2], region_sectors
    )?;
    if !cfg.no_hydration && !cfg.verify_crc && cfg.given == 0 {
        return Ok(());
    }
    write!(
        out,
        " {}",
        u32::from(cfg.no_hydration) + u32::from(cfg.verify_crc)
    )?;
    if cfg.no_hydration {
        write!(out, " no_hydration")?;
    }
    if cfg.verify_crc {
        write!(out, " verify_crc")?;
    }
    if cfg.given != 0 {
        write!(out, " {}", 2 * cfg.given.count_ones())?;
        for (i, k) in CORE_KEYS.iter().enumerate() {
            if cfg.given & (1 << i) != 0 {
                write!(out, " {} {}", k, cfg.get(i))?;
            }
        }
    }
    Ok(())
}

/// A message (`dmsetup message DEV 0 ...`).
#[derive(Debug)]
pub enum ShadowMessage<'a, I> {
    /// `hydration on|off`: background copying (what reads and writes need
    /// is copied whatever this says).
    Hydration(bool),
    /// `set <key> <value>`: a core argument.
    Set(&'a [u8], u32),
    /// `hint <region> <count> <probability> ...`: predicted ranges,
    /// replacing the last ones (the words after `hint`).
    Hint(I),
    /// `mark <region> <count> ...`: regions already on the destination (a
    /// pre-copy sent them); the words after `mark`, see [`parse_marks`].
    Mark(I),
    /// `crc <region> <crc32c> ...`: the checksums of consecutive regions
    /// from `<region>` on, as the source side computed them (the words
    /// after the region, see [`parse_crc`]).
    Crc(u64, I),
}

/// Parses a message.
pub fn parse_message<'a, I>(mut words: I) -> Result<ShadowMessage<'a, I>, ShadowError>
where
    I: Iterator<Item = &'a [u8]>,
{
    let m = match words.next() {
        Some(b"hydration") => match words.next() {
            Some(b"on") => ShadowMessage::Hydration(true),
            Some(b"off") => ShadowMessage::Hydration(false),
            _ => return Err(ShadowError::Message),
        },
        Some(b"set") => {
            let (Some(k), Some(v)) = (words.next(), words.next()) else {
                return Err(ShadowError::Message);
            };
            ShadowMessage::Set(k, parse_u32(v).ok_or(ShadowError::BadValue)?)
        }
        Some(b"hint") => return Ok(ShadowMessage::Hint(words)),
        Some(b"crc") => {
            let start = words
                .next()
                .and_then(parse_u64)
                .ok_or(ShadowError::Message)?;
            return Ok(ShadowMessage::Crc(start, words));
        }
        Some(b"mark") => return Ok(ShadowMessage::Mark(words)),
        _ => return Err(ShadowError::Message),
    };
    if words.next().is_some() {
        return Err(ShadowError::Trailing);
    }
    Ok(m)
}

/// A CRC-32C written in hexadecimal (1 to 8 digits, no prefix).
pub fn parse_crc(w: &[u8]) -> Option<u32> {
    if w.is_empty() || w.len() > 8 {
        return None;
    }
    w.iter().try_fold(0u32, |v, &c| {
        let d = (c as char).to_digit(16)?;
        Some(v << 4 | d)
    })
}

/// Per-region checksums (CRC-32C, as the source side computed them), for
/// copies to be verified before their regions are marked: a copy whose
/// data does not match is refused and fetched again.  `C` holds one
/// checksum a region, `W` a bitmap of the regions that have one; both
/// empty until the first checksum arrives (see [`RegionCrcs::is_empty`]).
pub struct RegionCrcs<C, W> {
    crcs: C,
    known: W,
}

impl<C, W> RegionCrcs<C, W>
where
    C: DerefMut<Target = [u32]>,
    W: DerefMut<Target = [u64]>,
{
    /// Words of `known` for `regions` regions.
    pub const fn known_words(regions: u64) -> usize {
        regions.div_ceil(64) as usize
    }

    /// Over zeroed storage: `crcs` one a region (or empty: none yet),
    /// `known` [`Self::known_words`] long.
    pub fn new(crcs: C, known: W) -> Self {
        Self { crcs, known }
    }

    /// No storage yet: no region has a checksum.
    pub fn is_empty(&self) -> bool {
        self.crcs.is_empty()
    }

    /// Regions with a checksum.
    pub fn count(&self) -> u64 {
        self.known.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether every region of `start .. start + len` has a checksum.
    pub fn all_known(&self, start: u64, len: u64) -> bool {
        (start..start.saturating_add(len)).all(|r| self.get(r).is_some())
    }

    /// Region `r`'s checksum is `crc`; `false` if `r` is out of range.
    pub fn set(&mut self, r: u64, crc: u32) -> bool {
        let Some(slot) = self.crcs.get_mut(r as usize) else {
            return false;
        };
        *slot = crc;
        self.known[(r / 64) as usize] |= 1 << (r % 64);
        true
    }

    /// Region `r`'s checksum, if one was given.
    pub fn get(&self, r: u64) -> Option<u32> {
        let crc = *self.crcs.get(r as usize)?;
        bit(&self.known, r).then_some(crc)
    }

    /// The regions from `start` on, whose bytes `data` holds
    /// (`region_bytes` each, the last one possibly short), that have a
    /// checksum `crc` does not reproduce.
    pub fn mismatches(
        &self,
        start: u64,
        data: &[u8],
        region_bytes: usize,
        crc: impl Fn(&[u8]) -> u32,
    ) -> u64 {
        let mut bad = 0;
        for (i, part) in data.chunks(region_bytes).enumerate() {
            if self
                .get(start + i as u64)
                .is_some_and(|want| crc(part) != want)
            {
                bad += 1;
            }
        }
        bad
    }
}

/// A probability written as a decimal (`1`, `0.85`, `.5`), in [`PROB_ONE`]ths.
pub fn parse_prob(w: &[u8]) -> Option<u32> {
    let (int, frac) = match w.iter().position(|&c| c == b'.') {
        Some(i) => (&w[..i], &w[i + 1..]),
        None => (w, &b""[..]),
    };
    if (int.is_empty() && frac.is_empty()) || frac.len() > 6 {
        return None;
    }
    let whole = if int.is_empty() { 0 } else { parse_u64(int)? };
    let mut num = 0u64;
    let mut den = 1u64;
    for &c in frac {
        if !c.is_ascii_digit() {
            return None;
        }
        num = num * 10 + u64::from(c - b'0');
        den *= 10;
    }
    let p =
        whole.checked_mul(u64::from(PROB_ONE))? + (num * u64::from(PROB_ONE)).checked_div(den)?;
    u32::try_from(p).ok().filter(|&p| p <= PROB_ONE)
}

/// The words after `hint` as ranges; `None` for a malformed triple.
pub fn parse_hints<'a>(
    words: impl Iterator<Item = &'a [u8]>,
) -> impl Iterator<Item = Option<Hint>> {
    let mut words = words;
    core::iter::from_fn(move || {
        let start = words.next()?;
        Some((|| {
            Some(Hint {
                start: parse_u64(start)?,
                len: parse_u64(words.next()?)?,
                prob: parse_prob(words.next()?)?,
            })
        })())
    })
}

/// The words after `mark` as `(region, count)` pairs; `None` for a
/// malformed or missing pair (at least one is needed).
pub fn parse_marks<'a>(
    words: impl Iterator<Item = &'a [u8]>,
) -> impl Iterator<Item = Option<(u64, u64)>> {
    let mut words = words.peekable();
    let mut first = true;
    core::iter::from_fn(move || {
        if words.peek().is_none() && !core::mem::take(&mut first) {
            return None;
        }
        first = false;
        Some((|| {
            Some((parse_u64(words.next()?)?, parse_u64(words.next()?)?))
        })())
    })
}

/// `FSHADOW1`, little-endian.
pub const SB_MAGIC: u64 = u64::from_le_bytes(*b"FSHADOW1");
const SB_VERSION: u32 = 1;
/// Bytes of the superblock that are checked (the checksum follows).
const SB_LEN: usize = 40;

/// The metadata superblock (block 0; the hydrated bitmap follows, one
/// 4 KiB block per 32768 regions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowSb {
    /// Sectors per region.
    pub region_sectors: u32,
    /// Regions of the device.
    pub regions: u64,
    /// Commits so far.
    pub commits: u64,
    /// Regions hydrated at the last commit.
    pub hydrated: u64,
}

/// A superblock that is not ours, or damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbError {
    /// Not zero, and not a shadow superblock.
    NotOurs,
    /// The checksum does not match.
    Checksum,
    /// A version this module does not know.
    Version,
}

impl ShadowSb {
    /// Writes the superblock into `out` (at least 44 bytes; the rest is
    /// left as it is: zero it first).
    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&SB_MAGIC.to_le_bytes());
        out[8..12].copy_from_slice(&SB_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.region_sectors.to_le_bytes());
        out[16..24].copy_from_slice(&self.regions.to_le_bytes());
        out[24..32].copy_from_slice(&self.commits.to_le_bytes());
        out[32..40].copy_from_slice(&self.hydrated.to_le_bytes());
        let crc = crc32c(&out[..SB_LEN]);
        out[SB_LEN..SB_LEN + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Reads a superblock: `None` if the block is all zero (a device to
    /// format).
    pub fn decode(buf: &[u8]) -> Result<Option<Self>, SbError> {
        if buf.len() < SB_LEN + 4 {
            return Err(SbError::NotOurs);
        }
        if buf.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&buf[i..i + 4]);
            u32::from_le_bytes(b)
        };
        if u64_at(0) != SB_MAGIC {
            return Err(SbError::NotOurs);
        }
        if crc32c(&buf[..SB_LEN]) != u32_at(SB_LEN) {
            return Err(SbError::Checksum);
        }
        if u32_at(8) != SB_VERSION {
            return Err(SbError::Version);
        }
        Ok(Some(Self {
            region_sectors: u32_at(12),
            regions: u64_at(16),
            commits: u64_at(24),
            hydrated: u64_at(32),
        }))
    }
}
