// SPDX-License-Identifier: GPL-2.0

//! The dirty log on a metadata device, so it survives a table reload and a
//! module reload, and an unclean stop is detected.
//!
//! Layout, little-endian: a superblock in the first 4 KiB, then the encoded
//! current set and the encoded previous set (see [`DirtySet::encode`]).
//!
//! ```text
//! 0   magic "FSGHTLOG"    8   version (1)       12  state (1 clean, 2 open)
//! 16  device blocks       24  epoch
//! 32  level  33 adaptive  34  current epoch's state  35 previous epoch's state
//! 40  current set bytes   48  previous set bytes
//! 56  crc32c of the sets  60  crc32c of bytes 0..60
//! ```
//!
//! The superblock says `open` while the device is live and `clean` once the
//! log is saved at suspend.  A log found `open` was not saved: its epochs
//! are [`EpochState::Inconsistent`].

use super::dirty::{
    DirtySet,
    Slot, //
};
use core::{
    ops::{
        Deref,
        DerefMut, //
    },
    sync::atomic::AtomicU64,
};

/// Bytes of the superblock area.
pub const SB_BYTES: usize = 4096;
const MAGIC: &[u8; 8] = b"FSGHTLOG";
const VERSION: u32 = 1;

/// What the log knows about an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochState {
    /// Every write of the epoch is in its set.
    Tracked,
    /// Logging is off (level 0): copy everything.
    Untracked,
    /// Some writes of the epoch were not logged (logging was off for part of
    /// it, or it began before the log existed): copy everything.
    Incomplete,
    /// The log was not shut down cleanly: copy everything.
    Inconsistent,
}

impl EpochState {
    /// The word status and extent listings use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tracked => "tracked",
            Self::Untracked => "untracked",
            Self::Incomplete => "incomplete",
            Self::Inconsistent => "inconsistent",
        }
    }

    /// Its number on disk and in the netlink uAPI (`enum foresight_epoch_state`).
    pub fn code(self) -> u8 {
        match self {
            Self::Tracked => 0,
            Self::Untracked => 1,
            Self::Incomplete => 2,
            Self::Inconsistent => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Self::Tracked,
            1 => Self::Untracked,
            2 => Self::Incomplete,
            3 => Self::Inconsistent,
            _ => return None,
        })
    }
}

/// CRC-32C (Castagnoli), bitwise; metadata is small and rarely written.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Whether the superblock says the device is live (`Open`) or saved (`Clean`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbState {
    /// Saved at suspend.
    Clean,
    /// In use: if found so, the log was not saved.
    Open,
}

/// The superblock's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Clean or open.
    pub state: SbState,
    /// Device size in blocks.
    pub blocks: u64,
    /// The current epoch number.
    pub epoch: u64,
    /// The logging level.
    pub level: u8,
    /// Whether the level adapts.
    pub adaptive: bool,
    /// State of the current epoch, then the previous one.
    pub epochs: [EpochState; 2],
    /// Bytes of the encoded current set, then the previous one.
    pub lens: [u64; 2],
    /// CRC-32C of the encoded sets.
    pub payload_crc: u32,
}

/// Why a superblock was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbError {
    /// No magic: a new metadata device.
    Blank,
    /// Magic, but a bad checksum, version or field.
    Corrupt,
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

impl Superblock {
    /// Writes the superblock into the first 64 bytes of `out`, which must
    /// be at least that long; the rest is left alone.
    pub fn encode(&self, out: &mut [u8]) {
        out[..64].fill(0);
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        let state: u32 = match self.state {
            SbState::Clean => 1,
            SbState::Open => 2,
        };
        out[12..16].copy_from_slice(&state.to_le_bytes());
        out[16..24].copy_from_slice(&self.blocks.to_le_bytes());
        out[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        out[32] = self.level;
        out[33] = u8::from(self.adaptive);
        out[34] = self.epochs[0].code();
        out[35] = self.epochs[1].code();
        out[40..48].copy_from_slice(&self.lens[0].to_le_bytes());
        out[48..56].copy_from_slice(&self.lens[1].to_le_bytes());
        out[56..60].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32c(&out[..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
    }

    /// Reads a superblock.
    pub fn decode(b: &[u8]) -> Result<Self, SbError> {
        if b.len() < 64 || &b[0..8] != MAGIC {
            return Err(SbError::Blank);
        }
        if crc32c(&b[..60]) != le32(b, 60) || le32(b, 8) != VERSION {
            return Err(SbError::Corrupt);
        }
        let state = match le32(b, 12) {
            1 => SbState::Clean,
            2 => SbState::Open,
            _ => return Err(SbError::Corrupt),
        };
        let epochs = [
            EpochState::from_code(b[34]).ok_or(SbError::Corrupt)?,
            EpochState::from_code(b[35]).ok_or(SbError::Corrupt)?,
        ];
        // Fields with room to spare must be what `encode` writes.
        if b[32] > 100 || b[33] > 1 || b[36..40] != [0; 4] {
            return Err(SbError::Corrupt);
        }
        Ok(Self {
            state,
            blocks: le64(b, 16),
            epoch: le64(b, 24),
            level: b[32],
            adaptive: b[33] != 0,
            epochs,
            lens: [le64(b, 40), le64(b, 48)],
            payload_crc: le32(b, 56),
        })
    }
}

/// The highest epoch number a loaded log may have (rotating adds one).
pub const MAX_EPOCH: u64 = 1 << 62;

impl Superblock {
    /// Checks a decoded superblock against the device (`blocks` 4 KiB
    /// blocks) and the metadata device (`room` bytes after the
    /// superblock).  The error says which does not match.
    pub fn check(&self, blocks: u64, room: u64) -> Result<(), &'static str> {
        if self.blocks != blocks {
            return Err("metadata is for a device of another size");
        }
        if self.epoch > MAX_EPOCH {
            return Err("epoch number out of range");
        }
        let [l0, l1] = self.lens;
        if self.state == SbState::Clean
            && (l0 < SET_HEADER as u64
                || l1 < SET_HEADER as u64
                || l0.checked_add(l1).is_none_or(|n| n > room))
        {
            return Err("saved sets do not fit the metadata device");
        }
        Ok(())
    }
}

const SET_HEADER: usize = 32;
const SLOT_BYTES: usize = 40;

impl<S, G, C> DirtySet<S, G, C>
where
    S: DerefMut<Target = [Slot]>,
    G: DerefMut<Target = [u32]>,
    C: Deref<Target = [AtomicU64]>,
{
    /// Bytes [`DirtySet::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        SET_HEADER
            + self.coarse_words().len() * 8
            + self.fine_regions() * SLOT_BYTES
            + self.sparse_grains() * 4
    }

    /// Bytes the set takes encoded with every fine region made coarse: what
    /// always fits once the coarse bitmap does.
    pub fn coarse_encoded_len(&self) -> usize {
        SET_HEADER + self.coarse_words().len() * 8
    }

    /// Encodes the set into `out` (at least [`DirtySet::encoded_len`] bytes,
    /// or [`DirtySet::coarse_encoded_len`] with `coarse_only`, which turns
    /// every fine region into a coarse one: lossless, coarser).  Returns the
    /// bytes written.
    pub fn encode(&self, out: &mut [u8], coarse_only: bool) -> usize {
        let words = self.coarse_words();
        let fine = if coarse_only { 0 } else { self.fine_regions() };
        let sparse = if coarse_only { 0 } else { self.sparse_grains() };
        out[0] = self.shift();
        out[1..8].fill(0);
        out[8..16].copy_from_slice(&(words.len() as u64).to_le_bytes());
        out[16..24].copy_from_slice(&(fine as u64).to_le_bytes());
        out[24..32].copy_from_slice(&(sparse as u64).to_le_bytes());
        let mut at = SET_HEADER;
        for (i, w) in words.iter().enumerate() {
            let mut v = w.load(core::sync::atomic::Ordering::Relaxed);
            if coarse_only {
                v |= self.fine_region_bits(i);
            }
            out[at..at + 8].copy_from_slice(&v.to_le_bytes());
            at += 8;
        }
        if !coarse_only {
            for (region, count, bits) in self.fine_entries() {
                out[at..at + 4].copy_from_slice(&region.to_le_bytes());
                out[at + 4..at + 6].copy_from_slice(&count.to_le_bytes());
                out[at + 6..at + 8].fill(0);
                for (j, w) in bits.iter().enumerate() {
                    out[at + 8 + j * 8..at + 16 + j * 8].copy_from_slice(&w.to_le_bytes());
                }
                at += SLOT_BYTES;
            }
            for g in self.sparse_entries() {
                out[at..at + 4].copy_from_slice(&g.to_le_bytes());
                at += 4;
            }
        }
        at
    }

    /// Replaces the set's contents with an encoded set.  Regions that find
    /// no room in the table become coarse (lossless).
    pub fn decode_from(&mut self, b: &[u8]) -> Result<(), SbError> {
        if b.len() < SET_HEADER {
            return Err(SbError::Corrupt);
        }
        let shift = b[0];
        let nwords = le64(b, 8) as usize;
        let nfine = le64(b, 16) as usize;
        let nsparse = le64(b, 24) as usize;
        if shift > super::dirty::MAX_SHIFT
            || nwords != self.coarse_words().len()
            || nfine > b.len() / SLOT_BYTES
            || nsparse > b.len() / 4
            || b.len() < SET_HEADER + nwords * 8 + nfine * SLOT_BYTES + nsparse * 4
        {
            return Err(SbError::Corrupt);
        }
        self.clear();
        self.set_shift(shift);
        let mut at = SET_HEADER;
        for i in 0..nwords {
            self.or_coarse_word(i, le64(b, at));
            at += 8;
        }
        for _ in 0..nfine {
            let region = le32(b, at);
            let mut bits = [0u64; 4];
            for (j, w) in bits.iter_mut().enumerate() {
                *w = le64(b, at + 8 + j * 8);
            }
            self.load_fine(region, bits)
                .map_err(|()| SbError::Corrupt)?;
            at += SLOT_BYTES;
        }
        let grain_blocks = 1u64 << shift;
        for _ in 0..nsparse {
            let start = u64::from(le32(b, at)) * grain_blocks;
            if start >= self.blocks() {
                return Err(SbError::Corrupt);
            }
            self.mark(start, grain_blocks);
            at += 4;
        }
        Ok(())
    }
}
