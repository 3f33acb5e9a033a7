// SPDX-License-Identifier: GPL-2.0

//! Access traces: the records sent to netlink listeners, the buffer the I/O
//! path appends them to, and the token bucket that rate-limits them.

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
}

/// A token bucket: `rate` tokens per second, holding at most one second's
/// worth.  Rate 0 means no limit.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenBucket {
    /// Tokens per second (0: unlimited).
    pub rate: u64,
    /// Tokens in the bucket, in billionths (token-nanoseconds per second).
    nano_tokens: u64,
    last_ns: u64,
}

const NANOS: u64 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket of `rate` tokens per second.
    pub fn new(rate: u64) -> Self {
        Self {
            rate,
            nano_tokens: rate.saturating_mul(NANOS),
            last_ns: 0,
        }
    }

    /// Takes one token at time `now_ns`; false if the bucket is empty.
    pub fn take(&mut self, now_ns: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let cap = self.rate.saturating_mul(NANOS);
        self.nano_tokens = self
            .nano_tokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(cap);
        if self.nano_tokens >= NANOS {
            self.nano_tokens -= NANOS;
            true
        } else {
            false
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
