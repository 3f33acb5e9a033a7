// SPDX-License-Identifier: GPL-2.0

//! I/O counters, sharded by CPU so that concurrent `end_io` calls on
//! different CPUs do not contend on one cache line.

use core::sync::atomic::{
    AtomicU64,
    Ordering, //
};

/// The kind of I/O a completed bio was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoKind {
    /// A read.
    #[default]
    Read,
    /// A write.
    Write,
    /// A discard or secure erase.
    Discard,
    /// A write-zeroes.
    WriteZeroes,
    /// An empty flush.
    Flush,
    /// Anything else.
    Other,
}

const FIELDS: usize = 8;
const SHARDS: usize = 16;

/// Indices of the counters in a shard.
const READ_BIOS: usize = 0;
const READ_SECTORS: usize = 1;
const WRITE_BIOS: usize = 2;
const WRITE_SECTORS: usize = 3;
const DISCARD_BIOS: usize = 4;
const DISCARD_SECTORS: usize = 5;
const FLUSH_BIOS: usize = 6;
const ERRORS: usize = 7;

#[repr(align(64))]
struct Shard([AtomicU64; FIELDS]);

/// A consistent-enough copy of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoTotals {
    /// Completed reads.
    pub read_bios: u64,
    /// Sectors read.
    pub read_sectors: u64,
    /// Completed writes and write-zeroes.
    pub write_bios: u64,
    /// Sectors written or zeroed.
    pub write_sectors: u64,
    /// Completed discards.
    pub discard_bios: u64,
    /// Sectors discarded.
    pub discard_sectors: u64,
    /// Completed empty flushes.
    pub flush_bios: u64,
    /// Bios that completed with an error.
    pub errors: u64,
}

/// Per-device I/O counters.
pub struct IoStats {
    shards: [Shard; SHARDS],
}

impl Default for IoStats {
    fn default() -> Self {
        Self::new()
    }
}

impl IoStats {
    /// All zero.
    pub const fn new() -> Self {
        #[allow(clippy::declare_interior_mutable_const)]
        const ZERO: Shard = Shard([const { AtomicU64::new(0) }; FIELDS]);
        Self {
            shards: [ZERO; SHARDS],
        }
    }

    /// Counts a completed bio of `kind` and `sectors` on CPU `cpu`.
    #[inline]
    pub fn record(&self, cpu: u32, kind: IoKind, sectors: u32, ok: bool) {
        let s = &self.shards[cpu as usize % SHARDS].0;
        let add = |i: usize, v: u64| {
            s[i].fetch_add(v, Ordering::Relaxed);
        };
        match kind {
            IoKind::Read => {
                add(READ_BIOS, 1);
                add(READ_SECTORS, u64::from(sectors));
            }
            IoKind::Write | IoKind::WriteZeroes => {
                add(WRITE_BIOS, 1);
                add(WRITE_SECTORS, u64::from(sectors));
            }
            IoKind::Discard => {
                add(DISCARD_BIOS, 1);
                add(DISCARD_SECTORS, u64::from(sectors));
            }
            IoKind::Flush => add(FLUSH_BIOS, 1),
            IoKind::Other => {}
        }
        if !ok {
            add(ERRORS, 1);
        }
    }

    /// Sums the shards.
    pub fn totals(&self) -> IoTotals {
        let mut sum = [0u64; FIELDS];
        for shard in &self.shards {
            for (acc, c) in sum.iter_mut().zip(shard.0.iter()) {
                *acc += c.load(Ordering::Relaxed);
            }
        }
        IoTotals {
            read_bios: sum[READ_BIOS],
            read_sectors: sum[READ_SECTORS],
            write_bios: sum[WRITE_BIOS],
            write_sectors: sum[WRITE_SECTORS],
            discard_bios: sum[DISCARD_BIOS],
            discard_sectors: sum[DISCARD_SECTORS],
            flush_bios: sum[FLUSH_BIOS],
            errors: sum[ERRORS],
        }
    }

    /// Zeroes every counter (I/O completing meanwhile may or may not count).
    pub fn reset(&self) {
        for shard in &self.shards {
            for c in &shard.0 {
                c.store(0, Ordering::Relaxed);
            }
        }
    }
}
