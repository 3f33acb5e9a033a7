// SPDX-License-Identifier: GPL-2.0

//! Access traces: the records sent to netlink listeners (rate-limited by
//! [`super::bucket::TokenBucket`]), and device numbers as netlink gives
//! them.

/// Bytes of one record on the wire (`records` attribute of `trace-ntf`).
pub const RECORD_BYTES: usize = 24;

/// One access, as submitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Submission time, `CLOCK_MONOTONIC` nanoseconds.
    pub ts_ns: u64,
    /// First sector, relative to the device.
    pub sector: u64,
    /// Length in sectors.
    pub sectors: u32,
    /// `enum foresight_op`.
    pub op: u8,
}

impl Record {
    /// The wire form: u64 time, u64 sector, u32 length, u8 op, 3 bytes of
    /// padding, in host byte order.
    pub fn encode(&self) -> [u8; RECORD_BYTES] {
        let mut b = [0u8; RECORD_BYTES];
        b[0..8].copy_from_slice(&self.ts_ns.to_ne_bytes());
        b[8..16].copy_from_slice(&self.sector.to_ne_bytes());
        b[16..20].copy_from_slice(&self.sectors.to_ne_bytes());
        b[20] = self.op;
        b
    }

    /// The record of its wire form (the padding ignored).
    pub fn decode(b: &[u8; RECORD_BYTES]) -> Self {
        let u64_at = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_ne_bytes(w)
        };
        Record {
            ts_ns: u64_at(0),
            sector: u64_at(8),
            sectors: u32::from_ne_bytes([b[16], b[17], b[18], b[19]]),
            op: b[20],
        }
    }
}

/// The kernel's `new_encode_dev`: a `dev_t` (major << 20 | minor) in the
/// form of `st_rdev` and of the netlink `dev` attributes.
pub fn encode_dev(kdev: u32) -> u32 {
    let (major, minor) = (kdev >> 20, kdev & 0xfffff);
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The inverse of [`encode_dev`] (`new_decode_dev`).
pub fn decode_dev(dev: u32) -> u32 {
    let major = (dev & 0xfff00) >> 8;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    (major << 20) | minor
}
