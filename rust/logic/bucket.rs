// SPDX-License-Identifier: GPL-2.0

//! A token bucket: a rate in bytes per second, with a burst of one second's
//! worth (at least one request's).  Used by the prefetch cache's bandwidth
//! limit and by the write throttle.

const NS: u64 = 1_000_000_000;

/// See the [module docs](self).  Tokens are counted in byte-nanoseconds so
/// that any rate is exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    tokens: u64,
    /// When the bucket was last refilled (`None`: never: full).
    at: Option<u64>,
}

impl TokenBucket {
    /// An empty-history bucket: full at its first use.
    pub const fn new() -> Self {
        TokenBucket {
            tokens: 0,
            at: None,
        }
    }

    fn refill(&mut self, now: u64, bytes_per_sec: u64, cost: u64) {
        let cap = bytes_per_sec.max(cost).saturating_mul(NS);
        self.tokens = match self.at {
            None => cap,
            Some(at) => self
                .tokens
                .saturating_add(now.saturating_sub(at).saturating_mul(bytes_per_sec))
                .min(cap),
        };
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
    }

    /// Refills at `bytes_per_sec` up to `now` (nanoseconds) and takes
    /// `bytes`; false (nothing taken) if there are not enough.  A rate of 0
    /// is no limit.
    pub fn take(&mut self, now: u64, bytes_per_sec: u64, bytes: u64) -> bool {
        if bytes_per_sec == 0 {
            return true;
        }
        self.refill(now, bytes_per_sec, bytes);
        let cost = bytes.saturating_mul(NS);
        if self.tokens < cost {
            return false;
        }
        self.tokens -= cost;
        true
    }

    /// Nanoseconds from `now` until `bytes` can be taken at `bytes_per_sec`
    /// (0: now; a rate of 0: now).
    pub fn wait_ns(&mut self, now: u64, bytes_per_sec: u64, bytes: u64) -> u64 {
        if bytes_per_sec == 0 {
            return 0;
        }
        self.refill(now, bytes_per_sec, bytes);
        let cost = bytes.saturating_mul(NS);
        cost.saturating_sub(self.tokens).div_ceil(bytes_per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_over_time() {
        let mut b = TokenBucket::new();
        // 1 MB/s, 4 KiB requests: a full second's burst, then the rate.
        let rate = 1_000_000;
        let mut taken = 0u64;
        for ms in 0..=3000u64 {
            while b.take(ms * 1_000_000, rate, 4096) {
                taken += 4096;
            }
        }
        // 1 s of burst plus 3 s at the rate (within one request).
        assert!((taken as i64 - 4_000_000).abs() <= 4096, "{taken}");
        assert!(b.take(0, 0, u64::MAX), "no limit");
    }

    #[test]
    fn waits_until_there_are_tokens() {
        let mut b = TokenBucket::new();
        assert!(b.take(0, 1000, 1000));
        assert!(!b.take(0, 1000, 500));
        assert_eq!(b.wait_ns(0, 1000, 500), 500_000_000);
        assert!(!b.take(499_999_999, 1000, 500));
        assert!(b.take(500_000_000, 1000, 500));
        // A request larger than a second's worth is allowed at a full bucket.
        let mut b = TokenBucket::new();
        assert!(b.take(0, 1000, 5000));
        assert_eq!(b.wait_ns(0, 1000, 5000), 5_000_000_000);
        assert_eq!(b.wait_ns(7, 0, 1), 0);
    }
}
