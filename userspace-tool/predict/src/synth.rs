//! Synthetic traces of known structure, for testing and comparing
//! predictors.
//!
//! Every generator returns reads, one every [`INTERVAL_NS`] starting at time
//! 0, in blocks of [`BLOCK_SECTORS`] sectors; [`with_op`] turns them into
//! other accesses.  Randomness comes from [`SplitMix64`], so a seed always
//! gives the same trace.

use std::collections::HashSet;

use crate::{Access, Op, BLOCK_SECTORS};

/// Time between two consecutive synthetic accesses.
pub const INTERVAL_NS: u64 = 100_000;

/// Size in blocks of the device [`boot_like`] scatters its blocks over
/// (8 GiB).
pub const BOOT_DEVICE_BLOCKS: u64 = 1 << 21;

/// The SplitMix64 generator (Steele, Lea and Flood): small, fast and good
/// enough for test data.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`), without modulo bias worth noting for
    /// `n` much below 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `0.0..1.0`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Reads of (first block, blocks), timestamped in order.
fn reads(spans: impl IntoIterator<Item = (u64, u64)>) -> Vec<Access> {
    spans
        .into_iter()
        .zip(0..)
        .map(|((block, blocks), i)| Access {
            ts_ns: i * INTERVAL_NS,
            sector: block * BLOCK_SECTORS,
            sectors: u32::try_from(blocks * BLOCK_SECTORS).expect("access too long"),
            op: Op::Read,
        })
        .collect()
}

/// A sequential read of `blocks` blocks from `start_sector`, in reads of
/// `io_blocks` blocks (the last one shorter if need be).
///
/// # Panics
///
/// If `io_blocks` is 0 or `start_sector` is not a multiple of
/// [`BLOCK_SECTORS`].
pub fn sequential(start_sector: u64, blocks: u64, io_blocks: u32) -> Vec<Access> {
    assert!(io_blocks > 0, "io_blocks must be positive");
    assert!(
        start_sector.is_multiple_of(BLOCK_SECTORS),
        "start_sector must be block aligned"
    );
    let first = start_sector / BLOCK_SECTORS;
    let io = u64::from(io_blocks);
    reads(
        (0..blocks)
            .step_by(io as usize)
            .map(|off| (first + off, io.min(blocks - off))),
    )
}

/// `count` one-block reads from `start_sector`, each `stride_blocks` blocks
/// after the previous one (before it, if negative).
///
/// # Panics
///
/// If `start_sector` is not block aligned, or a read would fall before
/// sector 0 or past the end of `u64` sectors.
pub fn strided(start_sector: u64, count: usize, stride_blocks: i64) -> Vec<Access> {
    assert!(
        start_sector.is_multiple_of(BLOCK_SECTORS),
        "start_sector must be block aligned"
    );
    let first = start_sector / BLOCK_SECTORS;
    reads((0..count as i64).map(|i| {
        let block = i
            .checked_mul(stride_blocks)
            .and_then(|off| first.checked_add_signed(off))
            .filter(|b| b.checked_mul(BLOCK_SECTORS).is_some())
            .expect("strided read out of range");
        (block, 1)
    }))
}

/// A boot-like trace: `distinct_blocks` one-block reads of distinct blocks
/// scattered at random over [`BOOT_DEVICE_BLOCKS`], the same sequence
/// repeated `repeats` times.
///
/// # Panics
///
/// If `distinct_blocks` exceeds [`BOOT_DEVICE_BLOCKS`].
pub fn boot_like(seed: u64, distinct_blocks: usize, repeats: usize) -> Vec<Access> {
    assert!(
        distinct_blocks as u64 <= BOOT_DEVICE_BLOCKS,
        "too many blocks"
    );
    let mut rng = SplitMix64::new(seed);
    let mut seen = HashSet::new();
    let mut order = Vec::with_capacity(distinct_blocks);
    while order.len() < distinct_blocks {
        let b = rng.below(BOOT_DEVICE_BLOCKS);
        if seen.insert(b) {
            order.push(b);
        }
    }
    reads(
        std::iter::repeat_n(order, repeats)
            .flatten()
            .map(|b| (b, 1)),
    )
}

/// `count` one-block reads of blocks drawn uniformly from
/// `0..device_blocks`.
///
/// # Panics
///
/// If `device_blocks` is 0.
pub fn random(seed: u64, count: usize, device_blocks: u64) -> Vec<Access> {
    let mut rng = SplitMix64::new(seed);
    reads((0..count).map(|_| (rng.below(device_blocks), 1)))
}

/// Two sequential reads of `blocks_each` blocks in reads of `io_blocks`
/// blocks, one from `a_start_sector` and one from `b_start_sector`, taking
/// turns (as [`sequential`]).
///
/// # Panics
///
/// As [`sequential`].
pub fn interleaved(
    a_start_sector: u64,
    b_start_sector: u64,
    blocks_each: u64,
    io_blocks: u32,
) -> Vec<Access> {
    let a = sequential(a_start_sector, blocks_each, io_blocks);
    let b = sequential(b_start_sector, blocks_each, io_blocks);
    restamp(a.into_iter().zip(b).flat_map(|(a, b)| [a, b]).collect())
}

/// `trace` with every access turned into an access of `op`.
pub fn with_op(trace: Vec<Access>, op: Op) -> Vec<Access> {
    trace.into_iter().map(|a| Access { op, ..a }).collect()
}

/// `trace` with its timestamps replaced by one every [`INTERVAL_NS`] from 0.
pub fn restamp(trace: Vec<Access>) -> Vec<Access> {
    trace
        .into_iter()
        .zip(0..)
        .map(|(a, i)| Access {
            ts_ns: i * INTERVAL_NS,
            ..a
        })
        .collect()
}

/// `main` with accesses of `noise` mixed in: each position of the result is
/// taken from `noise` with probability `noise_share` (while it lasts), from
/// `main` otherwise, keeping the order within each; restamped.
pub fn mix(seed: u64, main: Vec<Access>, noise: Vec<Access>, noise_share: f64) -> Vec<Access> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(main.len() + noise.len());
    let mut main = main.into_iter().peekable();
    let mut noise = noise.into_iter();
    while main.peek().is_some() {
        let next = if rng.unit() < noise_share {
            noise.next()
        } else {
            None
        };
        out.extend(next.or_else(|| main.next()));
    }
    restamp(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_blocks;

    fn blocks(t: &[Access]) -> Vec<(u64, u64)> {
        t.iter().map(|a| access_blocks(a).unwrap()).collect()
    }

    #[test]
    fn generators_have_the_documented_shape() {
        assert_eq!(blocks(&sequential(80, 10, 4)), [(10, 4), (14, 4), (18, 2)]);
        assert_eq!(blocks(&strided(800, 3, -16)), [(100, 1), (84, 1), (68, 1)]);
        assert_eq!(
            blocks(&interleaved(0, 800, 4, 2)),
            [(0, 2), (100, 2), (2, 2), (102, 2)]
        );
        let t = random(1, 1000, 50);
        assert!(t.iter().all(|a| a.sector < 50 * 8 && a.sectors == 8));
        let distinct: HashSet<u64> = t.iter().map(|a| a.sector).collect();
        assert_eq!(distinct.len(), 50);
        for t in [
            sequential(0, 10, 3),
            interleaved(0, 80, 5, 1),
            random(2, 9, 9),
        ] {
            assert!(t.iter().all(|a| a.op == Op::Read));
            for (i, a) in t.iter().enumerate() {
                assert_eq!(a.ts_ns, i as u64 * INTERVAL_NS);
            }
        }
        assert!(with_op(sequential(0, 3, 1), Op::Write)
            .iter()
            .all(|a| a.op == Op::Write));
    }

    #[test]
    fn boot_like_repeats_one_scattered_sequence() {
        let t = boot_like(7, 300, 3);
        assert_eq!(t.len(), 900);
        let pass: Vec<u64> = t[..300].iter().map(|a| a.sector).collect();
        assert_eq!(pass.iter().collect::<HashSet<_>>().len(), 300);
        for rep in t.chunks(300) {
            assert!(rep.iter().map(|a| a.sector).eq(pass.iter().copied()));
        }
        assert_eq!(boot_like(7, 300, 3), t, "deterministic");
        assert_ne!(boot_like(8, 300, 1), t[..300], "seeded");
        let adjacent = pass
            .windows(2)
            .filter(|w| w[0].abs_diff(w[1]) <= 64)
            .count();
        assert!(adjacent < 3, "scattered: {adjacent} close pairs");
    }

    #[test]
    fn mix_keeps_both_orders() {
        let t = mix(3, sequential(0, 100, 1), random(4, 1000, 1 << 30), 0.5);
        let main: Vec<&Access> = t.iter().filter(|a| a.sector < 800).collect();
        assert_eq!(main.len(), 100);
        assert!(main.windows(2).all(|w| w[0].sector < w[1].sector));
        assert!((150..250).contains(&t.len()), "{}", t.len());
    }

    #[test]
    fn splitmix_is_uniform_enough() {
        let mut rng = SplitMix64::new(0);
        let mut counts = [0u32; 10];
        for _ in 0..10_000 {
            counts[rng.below(10) as usize] += 1;
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(
            counts.iter().all(|&c| (900..1100).contains(&c)),
            "{counts:?}"
        );
    }
}
