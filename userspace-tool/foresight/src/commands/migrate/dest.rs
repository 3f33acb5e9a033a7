// SPDX-License-Identifier: GPL-2.0
//! Where a migration writes: a local block device, or an NBD export.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::blk::{self, AlignedBuf};
use crate::nbd::Nbd;

pub enum Dest {
    Block {
        path: String,
        file: File,
        size: u64,
        block: u64,
    },
    Nbd(Nbd),
}

impl Dest {
    /// `nbd://…`, `nbds://…`, `nbd+unix://…`: an NBD export; anything else
    /// a local block device (opened for direct I/O).
    pub fn open(spec: &str, timeout: Duration, certs: Option<&str>) -> Result<Self, String> {
        if spec.starts_with("nbd") && spec.contains("://") {
            return Ok(Dest::Nbd(Nbd::connect(spec, timeout, certs)?));
        }
        let file = blk::open_direct(spec, true).map_err(|e| format!("{spec}: {e}"))?;
        let (block, size) = blk::geometry(&file).map_err(|e| format!("{spec}: {e}"))?;
        Ok(Dest::Block {
            path: spec.to_string(),
            file,
            size,
            block,
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Dest::Block { path, .. } => path,
            Dest::Nbd(n) => n.uri(),
        }
    }

    /// The smallest write it takes (NBD: libnbd and the server deal with
    /// any sector-aligned request).
    pub fn block_size(&self) -> u64 {
        match self {
            Dest::Block { block, .. } => *block,
            Dest::Nbd(_) => 512,
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Dest::Block { size, .. } => *size,
            Dest::Nbd(n) => n.size(),
        }
    }

    /// Writes `data` (a whole number of logical blocks) at `off` (an NBD
    /// write keeps the buffer until the server answers).
    pub fn write(&mut self, off: u64, data: Vec<u8>, buf: &mut AlignedBuf) -> Result<(), String> {
        match self {
            Dest::Block { path, file, .. } => {
                let b = buf.get(data.len());
                b.copy_from_slice(&data);
                file.write_all_at(b, off)
                    .map_err(|e| format!("{path}: write at {off}: {e}"))
            }
            Dest::Nbd(n) => n.write(off, data),
        }
    }

    /// Makes `len` bytes at `off` read as zeroes (sparse where it can).
    pub fn zero(&mut self, off: u64, len: u64, buf: &mut AlignedBuf) -> Result<(), String> {
        match self {
            Dest::Block { path, file, .. } => {
                blk::zero_out(file, off, len).map_err(|e| format!("{path}: zero at {off}: {e}"))
            }
            Dest::Nbd(n) if n.can_zero() => n.zero(off, len),
            Dest::Nbd(_) => self.write(off, vec![0u8; len as usize], buf),
        }
    }

    /// Discards `len` bytes at `off` (an aborted copy's data).
    pub fn discard(&mut self, off: u64, len: u64) -> Result<(), String> {
        match self {
            Dest::Block { path, file, .. } => {
                blk::discard(file, off, len).map_err(|e| format!("{path}: discard: {e}"))
            }
            Dest::Nbd(n) if n.can_trim() => n.trim(off, len),
            Dest::Nbd(n) => Err(format!("{}: the server cannot trim", n.uri())),
        }
    }

    /// Waits for every write in flight (writes to a block device are
    /// synchronous).
    pub fn drain(&mut self) -> Result<(), String> {
        match self {
            Dest::Block { .. } => Ok(()),
            Dest::Nbd(n) => n.drain(),
        }
    }

    /// Waits for every write and makes it durable.
    pub fn flush(&mut self) -> Result<(), String> {
        match self {
            Dest::Block { path, file, .. } => {
                file.sync_all().map_err(|e| format!("{path}: flush: {e}"))
            }
            Dest::Nbd(n) => n.flush(),
        }
    }

    /// Reads `len` bytes at `off` (after the writes in flight).
    pub fn read(&mut self, off: u64, len: usize, buf: &mut AlignedBuf) -> Result<Vec<u8>, String> {
        match self {
            Dest::Block { path, file, .. } => {
                let b = buf.get(len);
                file.read_exact_at(b, off)
                    .map_err(|e| format!("{path}: read at {off}: {e}"))?;
                Ok(b.to_vec())
            }
            Dest::Nbd(n) => n.read(off, len),
        }
    }
}
