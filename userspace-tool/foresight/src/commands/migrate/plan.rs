// SPDX-License-Identifier: GPL-2.0
//! The pure decisions of a migration: what the bulk pass copies in which
//! order, how extents become copy requests, when the rounds have converged,
//! and how fast the copy may go.  No I/O here: host-tested.

use std::time::Duration;

/// Bytes per sector (the dirty log's unit).
pub const SECTOR: u64 = 512;

/// Splits byte ranges into pieces of at most `max` bytes (in order).
pub fn pieces(ranges: &[(u64, u64)], max: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let max = max.max(1);
    ranges.iter().flat_map(move |&(start, len)| {
        let n = len.div_ceil(max);
        (0..n).map(move |i| {
            let off = start + i * max;
            (off, max.min(start + len - off))
        })
    })
}

/// Dirty extents in sectors to byte ranges, clamped to `size` bytes and
/// widened to `align` (the devices' logical block size), merged.
pub fn extents_to_bytes(extents: &[(u64, u64)], size: u64, align: u64) -> Vec<(u64, u64)> {
    let align = align.max(1);
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(s, l) in extents {
        let start = s.saturating_mul(SECTOR);
        if start >= size || l == 0 {
            continue;
        }
        let end = start.saturating_add(l.saturating_mul(SECTOR)).min(size);
        let start = start / align * align;
        let end = end.div_ceil(align).saturating_mul(align).min(size);
        match out.last_mut() {
            Some((ps, pl)) if start <= *ps + *pl => *pl = (*pl).max(end - *ps),
            _ => out.push((start, end - start)),
        }
    }
    out
}

/// The first `n` bytes of `ranges`, in their order: what a copy of
/// `ranges` that stopped after `n` bytes has copied.
pub fn prefix(ranges: &[(u64, u64)], mut n: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(off, len) in ranges {
        if n == 0 {
            break;
        }
        let take = len.min(n);
        out.push((off, take));
        n -= take;
    }
    out
}

/// Sorted, merged (touching ranges joined, empty ones dropped).
fn merged(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ranges.iter().copied().filter(|r| r.1 > 0).collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, l) in v {
        match out.last_mut() {
            Some((ps, pl)) if s <= *ps + *pl => *pl = (*pl).max(s + l - *ps),
            _ => out.push((s, l)),
        }
    }
    out
}

/// `ranges` less `remove`, in the order of `ranges` (a range cut in
/// pieces keeps its place).
pub fn without(ranges: &[(u64, u64)], remove: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let remove = merged(remove);
    let mut out = Vec::new();
    for &(s, l) in ranges {
        let (mut at, end) = (s, s + l);
        // The first removed range that ends after `at`.
        let mut k = remove.partition_point(|&(rs, rl)| rs + rl <= at);
        while at < end {
            match remove.get(k) {
                Some(&(rs, rl)) if rs < end => {
                    if rs > at {
                        out.push((at, rs - at));
                    }
                    at = at.max(rs + rl);
                    k += 1;
                }
                _ => {
                    out.push((at, end - at));
                    at = end;
                }
            }
        }
    }
    out
}

/// The byte ranges `copied` less those `dirty`, sorted and merged: what a
/// destination holds current when a post-copy switches over (copied, and
/// not written since).
pub fn current(copied: &[(u64, u64)], dirty: &[(u64, u64)]) -> Vec<(u64, u64)> {
    without(&merged(copied), dirty)
}

/// Both sets of ranges, sorted and merged.
pub fn union(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    merged(&[a, b].concat())
}

/// The bytes `ranges` cover (counting overlaps again).
pub fn total(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|r| r.1).sum()
}

/// The parts of `a` that are also in `b`, sorted and merged.
pub fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let a = merged(a);
    without(&a, &without(&a, b))
}

/// `ranges` cut after their first `n` bytes: what a copy of `ranges` that
/// sent `n` bytes has copied, and what it has not, each in its order.
pub fn split_at(ranges: &[(u64, u64)], n: u64) -> (Ranges, Ranges) {
    let done = prefix(ranges, n);
    let (k, last) = (done.len(), done.last().copied());
    let mut rest = Vec::with_capacity(ranges.len() + 1 - k.min(ranges.len()));
    if let Some((off, len)) = last.filter(|&(_, l)| l < ranges[k - 1].1) {
        rest.push((off + len, ranges[k - 1].1 - len));
    }
    rest.extend_from_slice(&ranges[k..]);
    (done, rest)
}

/// Byte ranges `(offset, length)`.
pub type Ranges = Vec<(u64, u64)>;

/// The first ranges of `ranges` (likeliest first) that fit in `budget`
/// bytes, and the rest.
pub fn split_budget(ranges: &[(u64, u64)], budget: u64) -> (Ranges, Ranges) {
    let mut used = 0u64;
    let n = ranges
        .iter()
        .take_while(|r| {
            used = used.saturating_add(r.1);
            used <= budget
        })
        .count();
    (ranges[..n].to_vec(), ranges[n..].to_vec())
}

/// Parses `--order`: one `start_sector length_sectors [score]` per line,
/// hottest first (`#` comments and blank lines ignored).
pub fn parse_order(text: &str) -> Result<Vec<(u64, u64)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut f = line.split_whitespace();
        let num = |x: Option<&str>| -> Result<u64, String> {
            x.ok_or("too few fields")?
                .parse::<u64>()
                .map_err(|e| e.to_string())
        };
        let (s, l) = (num(f.next()), num(f.next()));
        match (s, l) {
            (Ok(s), Ok(l)) => out.push((s, l)),
            (Err(e), _) | (_, Err(e)) => {
                return Err(format!(
                    "line {}: {e} (want `start_sector length_sectors [score]`)",
                    i + 1
                ))
            }
        }
    }
    Ok(out)
}

/// The bulk pass: the ranked ranges (sectors, hottest first) in their
/// order, then everything else ascending; each byte of `0..size` exactly
/// once, in pieces of at most `chunk` bytes aligned to `chunk`.
pub fn bulk_order(size: u64, ranked: &[(u64, u64)], chunk: u64) -> Vec<(u64, u64)> {
    let chunk = chunk.max(SECTOR);
    let chunks = size.div_ceil(chunk);
    let mut taken = vec![false; chunks as usize];
    let mut out = Vec::with_capacity(chunks as usize);
    let mut take = |c: u64, out: &mut Vec<(u64, u64)>| {
        if c < chunks && !taken[c as usize] {
            taken[c as usize] = true;
            let off = c * chunk;
            out.push((off, chunk.min(size - off)));
        }
    };
    for &(s, l) in ranked {
        if l == 0 || s.saturating_mul(SECTOR) >= size {
            continue;
        }
        let first = s.saturating_mul(SECTOR) / chunk;
        let last = s.saturating_add(l - 1).saturating_mul(SECTOR) / chunk;
        for c in first..=last.min(chunks.saturating_sub(1)) {
            take(c, &mut out);
        }
    }
    for c in 0..chunks {
        take(c, &mut out);
    }
    out
}

/// Throughput of the copy, measured: bytes over the time spent copying
/// them (samples too small to measure are pooled until they reach 1 MiB),
/// smoothed over passes (half the weight on the last).  Times are
/// estimated cautiously, at the slowest of the last [`CAUTIOUS_SAMPLES`]
/// samples: a final copy that overruns its estimate overruns the downtime.
/// A pass's time is more its requests' than its bytes' when they are
/// small (a round's rate depends on how far its extents run together):
/// where the requests are known ([`Bandwidth::add_pieces`]), the time of a
/// set is also estimated per request, at the slowest of the last samples
/// of small requests, and the longer estimate counts.
#[derive(Clone, Debug, Default)]
pub struct Bandwidth {
    bytes_per_s: Option<f64>,
    /// Bytes, requests and time not measured yet.
    pending: (u64, u64, Duration),
    /// The last samples, oldest first.
    recent: Vec<f64>,
    /// The last samples' seconds per request, oldest first.
    per_piece: Vec<f64>,
}

/// Samples whose slowest estimates a copy's time.
pub const CAUTIOUS_SAMPLES: usize = 3;

/// Passes of requests no larger than this on average measure the time per
/// request.
pub const SMALL_PIECE: u64 = 64 << 10;

/// Pushes `v` to the last samples `to`, the oldest dropped past
/// [`CAUTIOUS_SAMPLES`].
fn sample(to: &mut Vec<f64>, v: f64) {
    if to.len() == CAUTIOUS_SAMPLES {
        to.remove(0);
    }
    to.push(v);
}

impl Bandwidth {
    /// `bytes` copied in `took`, requests not counted.
    pub fn add(&mut self, bytes: u64, took: Duration) {
        self.add_pieces(bytes, 0, took)
    }

    /// `bytes` copied in `pieces` requests (0: not counted) in `took`.
    pub fn add_pieces(&mut self, bytes: u64, pieces: u64, took: Duration) {
        self.pending.0 += bytes;
        self.pending.1 += pieces;
        self.pending.2 += took;
        let (bytes, pieces, took) = self.pending;
        let s = took.as_secs_f64();
        if (bytes < (1 << 20) && s < 0.1) || s <= 0.0 {
            return; // too little to measure yet
        }
        self.pending = (0, 0, Duration::ZERO);
        let r = bytes as f64 / s;
        sample(&mut self.recent, r);
        // A pass of large pieces measures bytes, not requests.
        if pieces > 0 && bytes / pieces <= SMALL_PIECE {
            sample(&mut self.per_piece, s / pieces as f64);
        }
        self.bytes_per_s = Some(match self.bytes_per_s {
            None => r,
            Some(old) => (old + r) / 2.0,
        });
    }

    pub fn get(&self) -> Option<f64> {
        self.bytes_per_s
    }

    /// The slowest of the last samples: the rate a time is estimated at.
    pub fn cautious(&self) -> Option<f64> {
        self.recent.iter().copied().reduce(f64::min)
    }

    /// Time to copy `bytes` at the [`Bandwidth::cautious`] rate.
    pub fn time_for(&self, bytes: u64) -> Option<Duration> {
        self.cautious()
            .map(|r| Duration::from_secs_f64(bytes as f64 / r.max(1.0)))
    }

    /// Time to copy `bytes` in `pieces` requests: the longer of the time
    /// at the cautious rate and the time at the slowest recent time per
    /// request.
    pub fn time_for_pieces(&self, bytes: u64, pieces: u64) -> Option<Duration> {
        let by_bytes = self.time_for(bytes)?;
        let per = self.per_piece.iter().copied().reduce(f64::max);
        Some(per.map_or(by_bytes, |p| {
            by_bytes.max(Duration::from_secs_f64(p * pieces as f64))
        }))
    }

    /// The rate a copy of `bytes` in `pieces` requests is estimated at.
    pub fn rate_for(&self, bytes: u64, pieces: u64) -> Option<f64> {
        let t = self.time_for_pieces(bytes, pieces)?.as_secs_f64();
        (t > 0.0).then(|| bytes as f64 / t).or(self.cautious())
    }
}

/// What to do when the rounds stop shrinking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnStall {
    /// Keep copying rounds until --max-rounds, then switch over anyway
    /// (the downtime is then longer than --downtime-ms)
    Continue,
    /// Give up: resume nothing (the source never stopped), discard the
    /// destination, exit with an error
    Abort,
    /// Slow the writer (QEMU's auto-converge): once the rounds stall, or
    /// two passes each left more than half of what they copied dirty, the
    /// devices' write throttle is set to a quarter of the rounds' measured
    /// copy bandwidth, halved each further time; rounds go on to
    /// --max-rounds, then switch over; the throttle is lifted at the end
    Throttle,
}

/// The decision after a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Another round.
    Round,
    /// Switch over: what is dirty fits the downtime (or the rounds are
    /// spent under `OnStall::Continue`).
    Switchover { forced: bool },
    /// Give up (`OnStall::Abort`): the rounds stalled, or were spent.
    Abort {
        /// Whether the dirty set stopped shrinking (else: --max-rounds).
        stalled: bool,
    },
    /// Throttle the writers to `bytes_per_sec` (`OnStall::Throttle`), then
    /// another round.
    Throttle { bytes_per_sec: u64 },
}

/// Convergence of the pre-copy rounds: switch over when the dirty bytes
/// left, at the measured bandwidth, fit the downtime limit.
#[derive(Clone, Debug)]
pub struct Convergence {
    pub downtime: Duration,
    pub max_rounds: u32,
    pub on_stall: OnStall,
    /// Rounds copied after the bulk pass.
    pub rounds: u32,
    /// Dirty bytes seen after the bulk pass and after each round.
    pub history: Vec<u64>,
    /// Rounds in a row that did not shrink the dirty set by a tenth.
    stalled: u32,
    /// Passes (since the last throttle) that left more than half of what
    /// they copied dirty.
    heavy: u32,
    /// Why the last throttle was set.
    pub throttle_reason: &'static str,
    /// Whether the stall was reported.
    pub stall_seen: bool,
    /// The write limit set so far (`OnStall::Throttle`), bytes per second.
    pub throttle: Option<u64>,
}

/// Least write limit the throttle sets (64 KiB/s): a writer is slowed,
/// never stopped.
pub const MIN_THROTTLE: u64 = 64 << 10;

/// Rounds in a row without shrinking that count as a stall.
pub const STALL_ROUNDS: u32 = 3;

/// Passes in a row that each left more dirty than this share of what they
/// copied (QEMU's auto-converge trigger: `throttle-trigger-threshold` 50%,
/// seen twice) throttle the writers under `OnStall::Throttle`: a round then
/// shrinks the next by less than half, so the pre-copy sends twice the
/// dirty set or more before it converges, if it ever does.
pub const HEAVY_SHARE: f64 = 0.5;
/// Why a throttle set by heavy passes or periods was set.
pub const HEAVY_REASON: &str = "the writes dirty more than half of what the copy sends";

/// How often a round looks at the dirty log ([`Convergence::period`]).
pub const PERIOD: Duration = Duration::from_secs(1);

/// Heavy passes that trigger the throttle (before the first throttle, one
/// that left more dirty than it copied counts as two).
pub const HEAVY_PASSES: u32 = 2;

impl Convergence {
    pub fn new(downtime: Duration, max_rounds: u32, on_stall: OnStall) -> Self {
        Convergence {
            downtime,
            max_rounds: max_rounds.max(1),
            on_stall,
            rounds: 0,
            history: Vec::new(),
            stalled: 0,
            heavy: 0,
            throttle_reason: "",
            stall_seen: false,
            throttle: None,
        }
    }

    /// Heavy passes (or periods) in a row; before any throttle, one that
    /// left more dirty than it copied counts twice (the next cannot be
    /// shorter).
    fn count_heavy(&mut self, written: u64, copied: u64) {
        if written >= copied && self.throttle.is_none() {
            self.heavy += 2;
        } else if written as f64 > copied as f64 * HEAVY_SHARE {
            self.heavy += 1;
        } else {
            self.heavy = 0;
        }
    }

    /// During a round, every [`PERIOD`] or more (QEMU's auto-converge looks
    /// at each bitmap sync, a second or more apart): `written` bytes were
    /// newly dirtied while `copied` were copied in `took`.  Under
    /// `OnStall::Throttle` a second heavy period in a row throttles the
    /// writers at once, to a quarter of the period's copy rate (then half
    /// the last limit), instead of after a round that may last minutes.
    pub fn period(&mut self, written: u64, copied: u64, took: Duration) -> Option<u64> {
        if self.on_stall != OnStall::Throttle || took.is_zero() {
            return None;
        }
        self.count_heavy(written, copied);
        if self.heavy < HEAVY_PASSES {
            return None;
        }
        let limit = match self.throttle {
            Some(t) => t / 2,
            None => (copied as f64 / took.as_secs_f64()) as u64 / 4,
        }
        .max(MIN_THROTTLE);
        self.heavy = 0;
        if self.throttle == Some(limit) {
            return None;
        }
        self.throttle = Some(limit);
        self.throttle_reason = HEAVY_REASON;
        Some(limit)
    }

    /// The estimated final copy time of `dirty` bytes in `pieces` copy
    /// requests.
    pub fn estimate(&self, bw: &Bandwidth, dirty: u64, pieces: u64) -> Option<Duration> {
        if dirty == 0 {
            return Some(Duration::ZERO);
        }
        bw.time_for_pieces(dirty, pieces)
    }

    /// After the bulk pass, and after each round: `dirty` bytes are left
    /// to copy, of which `written` were written during the pass, which
    /// copied `copied` bytes.
    pub fn after_pass(
        &mut self,
        bw: &Bandwidth,
        dirty: u64,
        written: u64,
        copied: u64,
        pieces: u64,
    ) -> Next {
        self.count_heavy(written, copied);
        // Progress is a new low: a dirty set that swings up and down
        // around a level the rounds cannot get under is a stall too.
        if let Some(&low) = self.history.iter().min() {
            self.rounds += 1;
            if dirty.saturating_mul(10) >= low.saturating_mul(9) {
                self.stalled += 1;
            } else {
                self.stalled = 0;
            }
        }
        self.history.push(dirty);
        if self
            .estimate(bw, dirty, pieces)
            .is_some_and(|t| t <= self.downtime)
        {
            return Next::Switchover { forced: false };
        }
        if self.stalled >= STALL_ROUNDS {
            self.stall_seen = true;
            if self.on_stall == OnStall::Abort {
                return Next::Abort { stalled: true };
            }
        }
        if self.rounds >= self.max_rounds {
            return match self.on_stall {
                OnStall::Continue | OnStall::Throttle => Next::Switchover { forced: true },
                OnStall::Abort => Next::Abort { stalled: false },
            };
        }
        let heavy = self.heavy >= HEAVY_PASSES;
        if (self.stalled >= STALL_ROUNDS || heavy) && self.on_stall == OnStall::Throttle {
            // A quarter of the copy bandwidth, then half of the last limit.
            let limit = match (self.throttle, bw.get()) {
                (Some(t), _) => t / 2,
                (None, Some(b)) => b as u64 / 4,
                (None, None) => return Next::Round,
            }
            .max(MIN_THROTTLE);
            if self.throttle != Some(limit) {
                self.throttle_reason = if self.stalled >= STALL_ROUNDS {
                    "the dirty set stopped shrinking"
                } else {
                    HEAVY_REASON
                };
                self.stalled = 0;
                self.heavy = 0;
                self.throttle = Some(limit);
                return Next::Throttle {
                    bytes_per_sec: limit,
                };
            }
        }
        Next::Round
    }
}

/// A token bucket for `--bandwidth`: how long to wait before sending.
#[derive(Clone, Debug)]
pub struct Limiter {
    /// 0: no limit.
    bytes_per_s: u64,
    bucket: foresight_logic::bucket::TokenBucket,
}

impl Limiter {
    pub fn new(bytes_per_s: Option<u64>) -> Self {
        Limiter {
            bytes_per_s: bytes_per_s.unwrap_or(0),
            bucket: Default::default(),
        }
    }

    /// Accounts `bytes` sent at time `now` (since start); returns how long
    /// to sleep first: the module's token bucket (a second's worth of
    /// burst).
    pub fn take(&mut self, now: Duration, bytes: u64) -> Duration {
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let wait = self.bucket.wait_ns(now, self.bytes_per_s, bytes);
        let taken = self
            .bucket
            .take(now.saturating_add(wait), self.bytes_per_s, bytes);
        debug_assert!(taken);
        Duration::from_nanos(wait)
    }
}

/// Parses sizes like `100M`, `1G`, `512k`, `4096` (bytes; binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let m = match t[i..]
                .to_ascii_lowercase()
                .trim_end_matches("ib")
                .trim_end_matches('b')
            {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                u => return Err(format!("{s}: unknown unit {u:?}")),
            };
            (&t[..i], m)
        }
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("{s}: not a size"))?;
    if !(n >= 0.0 && n.is_finite()) {
        return Err(format!("{s}: not a size"));
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pieces_split() {
        let v: Vec<_> = pieces(&[(0, 10), (100, 3)], 4).collect();
        assert_eq!(v, vec![(0, 4), (4, 4), (8, 2), (100, 3)]);
    }

    #[test]
    fn split_and_intersect() {
        let r = [(100, 10), (0, 10), (50, 5)];
        assert_eq!(split_at(&r, 0), (vec![], r.to_vec()));
        assert_eq!(split_at(&r, 10), (vec![(100, 10)], vec![(0, 10), (50, 5)]));
        assert_eq!(
            split_at(&r, 13),
            (vec![(100, 10), (0, 3)], vec![(3, 7), (50, 5)])
        );
        assert_eq!(split_at(&r, 99), (r.to_vec(), vec![]));
        assert_eq!(
            intersect(&[(0, 10), (20, 10), (40, 5)], &[(5, 20), (44, 100)]),
            vec![(5, 5), (20, 5), (44, 1)]
        );
        assert_eq!(intersect(&[(0, 10)], &[]), vec![]);
    }

    #[test]
    fn extents() {
        // sectors 1..2 widen to the 4 KiB block, merge with the next.
        assert_eq!(
            extents_to_bytes(&[(1, 1), (8, 8), (100, 8), (1000, 100)], 1000 * 512, 4096),
            vec![(0, 8192), (49152, 8192)]
        );
    }

    #[test]
    fn order_file() {
        assert_eq!(
            parse_order("# hot\n8 8 0.9\n\n0 8\n").unwrap(),
            vec![(8, 8), (0, 8)]
        );
        assert!(parse_order("8\n").unwrap_err().contains("line 1"));
        assert!(parse_order("x 8\n").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("100M").unwrap(), 100 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert!(parse_size("10Q").is_err());
        assert!(parse_size("-1").is_err());
    }

    /// Passes through `c`, each copying what the one before left dirty
    /// (the first: a 256 MiB device).
    fn passes(c: &mut Convergence, bw: &Bandwidth, dirty: &[u64]) -> Vec<Next> {
        dirty
            .iter()
            .map(|&d| {
                let copied = c.history.last().copied().unwrap_or(256 << 20);
                c.after_pass(bw, d, d, copied, 0)
            })
            .collect()
    }

    #[test]
    fn converges_when_dirty_fits() {
        let mut bw = Bandwidth::default();
        bw.add(100 << 20, Duration::from_secs(1)); // 100 MiB/s
        let mut c = Convergence::new(Duration::from_millis(300), 30, OnStall::Continue);
        assert_eq!(
            c.after_pass(&bw, 80 << 20, 80 << 20, u64::MAX, 0),
            Next::Round
        );
        assert_eq!(
            c.after_pass(&bw, 40 << 20, 40 << 20, u64::MAX, 0),
            Next::Round
        );
        assert_eq!(
            c.after_pass(&bw, 20 << 20, 20 << 20, u64::MAX, 0),
            Next::Switchover { forced: false }
        );
        // Nothing measured yet: no switchover unless nothing is dirty.
        let mut c = Convergence::new(Duration::from_millis(300), 30, OnStall::Continue);
        assert_eq!(
            c.after_pass(&Bandwidth::default(), 1 << 20, 1 << 20, u64::MAX, 0),
            Next::Round
        );
        assert_eq!(
            c.after_pass(&Bandwidth::default(), 0, 0, u64::MAX, 0),
            Next::Switchover { forced: false }
        );
    }

    #[test]
    fn stall_policies() {
        let mut bw = Bandwidth::default();
        bw.add(10 << 20, Duration::from_secs(1));
        // --max-rounds 5: the bulk pass, then five rounds, then switch over.
        let mut c = Convergence::new(Duration::from_millis(300), 5, OnStall::Continue);
        let seq: Vec<_> = (0..6)
            .map(|_| c.after_pass(&bw, 50 << 20, 50 << 20, u64::MAX, 0))
            .collect();
        assert_eq!(seq[..5], [Next::Round; 5]);
        assert_eq!(seq[5], Next::Switchover { forced: true });
        assert_eq!(c.rounds, 5);
        assert!(c.stall_seen);
        let mut c = Convergence::new(Duration::from_millis(300), 30, OnStall::Abort);
        let seq: Vec<_> = (0..4)
            .map(|_| c.after_pass(&bw, 50 << 20, 50 << 20, u64::MAX, 0))
            .collect();
        assert_eq!(
            seq,
            [
                Next::Round,
                Next::Round,
                Next::Round,
                Next::Abort { stalled: true }
            ]
        );
        // Shrinking, but not enough in the rounds given: abort, not stalled.
        let mut c = Convergence::new(Duration::from_millis(300), 2, OnStall::Abort);
        let seq: Vec<_> = [80, 40, 20]
            .map(|m| c.after_pass(&bw, m << 20, m << 20, u64::MAX, 0))
            .to_vec();
        assert_eq!(
            seq,
            [Next::Round, Next::Round, Next::Abort { stalled: false }]
        );
    }

    /// A dirty set that swings without a new low stalls (a round that
    /// dips a little under the last one does not reset the count).
    #[test]
    fn swinging_dirty_set_stalls() {
        let mut bw = Bandwidth::default();
        bw.add(100 << 20, Duration::from_secs(1));
        let mut c = Convergence::new(Duration::from_millis(300), 30, OnStall::Abort);
        let seq: Vec<_> = [47, 117, 151, 129]
            .map(|m| c.after_pass(&bw, m << 20, m << 20, u64::MAX, 0))
            .to_vec();
        assert_eq!(seq[..3], [Next::Round, Next::Round, Next::Round]);
        assert_eq!(seq[3], Next::Abort { stalled: true });
    }

    /// The stall rule alone (passes copying without bound are never
    /// heavy).
    #[test]
    fn throttle_on_stall() {
        let mut bw = Bandwidth::default();
        bw.add(10 << 20, Duration::from_secs(1)); // 10 MiB/s
        let mut c = Convergence::new(Duration::from_millis(300), 30, OnStall::Throttle);
        let seq: Vec<_> = (0..4)
            .map(|_| c.after_pass(&bw, 50 << 20, 50 << 20, u64::MAX, 0))
            .collect();
        assert_eq!(seq[..3], [Next::Round; 3]);
        // A quarter of the copy bandwidth.
        assert_eq!(
            seq[3],
            Next::Throttle {
                bytes_per_sec: (10 << 20) / 4
            }
        );
        // Still stalled three rounds later: half of that.
        let seq: Vec<_> = (0..3)
            .map(|_| c.after_pass(&bw, 50 << 20, 50 << 20, u64::MAX, 0))
            .collect();
        assert_eq!(seq[..2], [Next::Round; 2]);
        assert_eq!(
            seq[2],
            Next::Throttle {
                bytes_per_sec: (10 << 20) / 8
            }
        );
        // Converging under the throttle: switch over as usual.
        assert_eq!(
            c.after_pass(&bw, 1 << 20, 1 << 20, u64::MAX, 0),
            Next::Switchover { forced: false }
        );
        // Never below the least limit; rounds spent: switch over.
        let mut c = Convergence::new(Duration::from_millis(300), 60, OnStall::Throttle);
        let mut limits = Vec::new();
        loop {
            match c.after_pass(&bw, 50 << 20, 50 << 20, u64::MAX, 0) {
                Next::Throttle { bytes_per_sec } => limits.push(bytes_per_sec),
                Next::Round => {}
                other => {
                    assert_eq!(other, Next::Switchover { forced: true });
                    break;
                }
            }
        }
        assert_eq!(*limits.last().unwrap(), MIN_THROTTLE);
        assert!(limits.windows(2).all(|w| w[1] < w[0]), "{limits:?}");
    }

    /// QEMU's auto-converge trigger: two passes that each left more than
    /// half of what they copied dirty throttle the writers, before the
    /// dirty set stops making new lows; one that left more than it copied
    /// counts twice (the bench's uniform writer: 47 MiB dirty after the
    /// bulk pass of 256, then 114 after copying the 47).
    #[test]
    fn throttle_when_passes_leave_half_dirty() {
        let mut bw = Bandwidth::default();
        bw.add(8 << 20, Duration::from_secs(1)); // the rounds' rate
        let mut c = Convergence::new(Duration::from_millis(300), 30, OnStall::Throttle);
        let seq = passes(&mut c, &bw, &[47 << 20, 114 << 20]);
        assert_eq!(seq[0], Next::Round, "the bulk pass left 47 of 256: light");
        assert_eq!(
            seq[1],
            Next::Throttle {
                bytes_per_sec: (8 << 20) / 4
            }
        );
        assert_eq!(c.throttle_reason, HEAVY_REASON);
        // Shrinking by more than half a pass: no further throttle.
        let seq = passes(&mut c, &bw, &[40 << 20, 12 << 20]);
        assert_eq!(seq, [Next::Round, Next::Round]);
        // Two passes leaving 60%: throttled again (half the last limit).
        let seq = passes(&mut c, &bw, &[8 << 20, 5 << 20]);
        assert_eq!(
            seq,
            [
                Next::Round,
                Next::Throttle {
                    bytes_per_sec: (8 << 20) / 8
                }
            ]
        );
        // Continue and abort do not count heavy passes: rounds go on.
        let mut c = Convergence::new(Duration::from_millis(300), 30, OnStall::Continue);
        assert_eq!(
            passes(&mut c, &bw, &[47 << 20, 114 << 20]),
            [Next::Round; 2]
        );
        let mut c = Convergence::new(Duration::from_millis(300), 30, OnStall::Abort);
        assert_eq!(
            passes(&mut c, &bw, &[47 << 20, 114 << 20]),
            [Next::Round; 2]
        );
        // A flat dirty set: throttled after the first round that left as
        // much as it copied, then every second round (two heavy passes in
        // a row), not every round.
        let mut c = Convergence::new(Duration::from_millis(300), 30, OnStall::Throttle);
        let seq = passes(&mut c, &bw, &[50 << 20; 6]);
        let at: Vec<usize> = (0..seq.len())
            .filter(|&i| matches!(seq[i], Next::Throttle { .. }))
            .collect();
        assert_eq!(at, [1, 3, 5], "{seq:?}");
        // A light pass between two heavy ones: no throttle.
        let mut c = Convergence::new(Duration::from_millis(300), 30, OnStall::Throttle);
        let seq = passes(&mut c, &bw, &[100 << 20, 60 << 20, 20 << 20, 12 << 20]);
        assert_eq!(seq, [Next::Round; 4]);
    }

    /// Within a round: two heavy periods in a row throttle at once, to a
    /// quarter of the period's copy rate; light periods reset the count;
    /// only under `OnStall::Throttle`.
    #[test]
    fn periods_throttle_within_a_round() {
        let s = Duration::from_secs(1);
        let mut c = Convergence::new(Duration::from_millis(300), 30, OnStall::Throttle);
        assert_eq!(c.period(5 << 20, 6 << 20, s), None);
        assert_eq!(
            c.period(1 << 20, 6 << 20, s),
            None,
            "light: the count restarts"
        );
        assert_eq!(c.period(4 << 20, 6 << 20, s), None);
        assert_eq!(c.period(4 << 20, 6 << 20, s), Some((6 << 20) / 4));
        assert_eq!(c.throttle_reason, HEAVY_REASON);
        // Throttled: a period dirtying as much as it copies counts once.
        assert_eq!(c.period(6 << 20, 6 << 20, s), None);
        assert_eq!(c.period(6 << 20, 6 << 20, s), Some((6 << 20) / 8));
        // Before any throttle a period dirtying more than it copied counts
        // twice.
        let mut c = Convergence::new(Duration::from_millis(300), 30, OnStall::Throttle);
        assert_eq!(c.period(8 << 20, 6 << 20, 2 * s), Some((3 << 20) / 4));
        for p in [OnStall::Continue, OnStall::Abort] {
            let mut c = Convergence::new(Duration::from_millis(300), 30, p);
            assert_eq!(c.period(8 << 20, 6 << 20, s), None);
            assert_eq!(c.period(8 << 20, 6 << 20, s), None);
        }
    }

    #[test]
    fn small_samples_pool() {
        let mut bw = Bandwidth::default();
        bw.add(512 << 10, Duration::from_millis(50));
        assert_eq!(bw.get(), None);
        bw.add(512 << 10, Duration::from_millis(30));
        assert_eq!(bw.get(), Some((1 << 20) as f64 / 0.08));
        // Slow small copies (scattered extents) count once they took 100 ms.
        let mut bw = Bandwidth::default();
        bw.add(64 << 10, Duration::from_millis(60));
        assert_eq!(bw.get(), None);
        bw.add(64 << 10, Duration::from_millis(40));
        assert_eq!(bw.get(), Some((128 << 10) as f64 / 0.1));
    }

    #[test]
    fn times_at_the_slowest_recent_rate() {
        let mut bw = Bandwidth::default();
        assert_eq!(bw.time_for(1 << 20), None);
        let s = Duration::from_secs(1);
        for mib in [4u64, 32, 16] {
            bw.add(mib << 20, s);
        }
        // Smoothed 17 MiB/s; a MiB is timed at 4.
        assert_eq!(bw.get(), Some((17 << 20) as f64));
        assert_eq!(bw.time_for(1 << 20), Some(Duration::from_millis(250)));
        // The 4 MiB/s pass drops out after three more.
        bw.add(32 << 20, s);
        assert_eq!(bw.time_for(16 << 20), Some(Duration::from_secs(1)));
        // Requests not counted: bytes only.
        assert_eq!(
            bw.time_for_pieces(16 << 20, 4096),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn small_requests_cost_their_number() {
        let mut bw = Bandwidth::default();
        let s = Duration::from_secs(1);
        // 32 MiB in 32 requests (bytes only: large pieces), then 4 MiB
        // in 1024 requests: 1/1024 s per request.
        bw.add_pieces(32 << 20, 32, s);
        bw.add_pieces(4 << 20, 1024, s);
        // 8 MiB of 4096 scattered blocks: 4 s by requests (2 s by bytes at
        // the slowest rate, 4 MiB/s); 8 MiB in 8 requests: 2 s, by bytes.
        assert_eq!(
            bw.time_for_pieces(8 << 20, 4096),
            Some(Duration::from_secs(4))
        );
        assert_eq!(bw.time_for_pieces(8 << 20, 8), Some(Duration::from_secs(2)));
        assert_eq!(bw.rate_for(8 << 20, 4096), Some((2 << 20) as f64));
        assert_eq!(bw.rate_for(0, 0), bw.cautious());
    }

    #[test]
    fn limiter() {
        let mut l = Limiter::new(Some(1 << 20));
        let t0 = Duration::ZERO;
        assert_eq!(l.take(t0, 1 << 20), Duration::ZERO);
        // The second MiB waits for the first second to pass.
        assert_eq!(l.take(t0, 1 << 20), Duration::from_secs(1));
        assert_eq!(Limiter::new(None).take(t0, u64::MAX), Duration::ZERO);
        // Idle time is not banked beyond a second's worth.
        let mut l = Limiter::new(Some(1 << 20));
        assert_eq!(l.take(Duration::from_secs(100), 1 << 20), Duration::ZERO);
        assert_eq!(
            l.take(Duration::from_secs(100), 1 << 20),
            Duration::from_secs(1)
        );
    }

    proptest! {
        #[test]
        fn bulk_covers_everything_once(
            size in 1u64..10_000_000,
            chunk_kib in 1u64..2048,
            ranked in proptest::collection::vec((0u64..30_000, 0u64..5_000), 0..20),
        ) {
            let chunk = chunk_kib * 1024;
            let order = bulk_order(size, &ranked, chunk);
            let mut sorted = order.clone();
            sorted.sort();
            let mut at = 0;
            for (off, len) in sorted {
                prop_assert_eq!(off, at);
                prop_assert!(len > 0 && len <= chunk);
                at += len;
            }
            prop_assert_eq!(at, size);
            // The first ranked range in the device comes first.
            if let Some(&(s, _)) = ranked.iter().find(|(s, l)| *l > 0 && s * SECTOR < size) {
                let (off, len) = order[0];
                prop_assert!(off <= s * SECTOR && s * SECTOR < off + len);
            }
        }

        #[test]
        fn extents_cover_what_was_dirty(
            ext in proptest::collection::vec((0u64..100_000, 1u64..300), 0..40),
            size_sectors in 1u64..120_000,
        ) {
            let mut ext = ext;
            ext.sort();
            let size = size_sectors * SECTOR;
            let bytes = extents_to_bytes(&ext, size, 4096);
            for w in bytes.windows(2) {
                prop_assert!(w[0].0 + w[0].1 < w[1].0 + 1);
            }
            for &(s, l) in &ext {
                for sec in [s, s + l - 1] {
                    let b = sec * SECTOR;
                    if b < size {
                        prop_assert!(bytes.iter().any(|&(o, n)| o <= b && b < o + n));
                    }
                }
            }
            prop_assert!(bytes.iter().all(|&(o, n)| n > 0 && o + n <= size));
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            prefix(&[(100, 10), (0, 10), (50, 5)], 15),
            vec![(100, 10), (0, 5)]
        );
        assert_eq!(prefix(&[(100, 10)], 0), vec![]);
        assert_eq!(prefix(&[(100, 10)], 99), vec![(100, 10)]);
    }

    #[test]
    fn without_keeps_the_order() {
        let v = without(
            &[(100, 50), (0, 20), (60, 10)],
            &[(110, 10), (5, 5), (65, 3)],
        );
        assert_eq!(
            v,
            vec![(100, 10), (120, 30), (0, 5), (10, 10), (60, 5), (68, 2)]
        );
        assert_eq!(
            union(&[(10, 5)], &[(0, 10), (30, 1)]),
            vec![(0, 15), (30, 1)]
        );
        let (a, b) = split_budget(&[(0, 10), (100, 10), (50, 1)], 20);
        assert_eq!((a, b), (vec![(0, 10), (100, 10)], vec![(50, 1)]));
    }

    proptest! {
        /// Byte by byte: current = copied and not dirty.
        #[test]
        fn current_is_copied_less_dirty(
            copied in proptest::collection::vec((0u64..200, 0u64..40), 0..8),
            dirty in proptest::collection::vec((0u64..200, 0u64..40), 0..8),
        ) {
            let cur = current(&copied, &dirty);
            let inside = |v: &[(u64, u64)], b: u64| v.iter().any(|&(s, l)| s <= b && b < s + l);
            for b in 0..260 {
                prop_assert_eq!(inside(&cur, b), inside(&copied, b) && !inside(&dirty, b), "byte {}", b);
            }
            // Sorted, merged, none empty.
            for w in cur.windows(2) {
                prop_assert!(w[0].0 + w[0].1 < w[1].0);
            }
            prop_assert!(cur.iter().all(|r| r.1 > 0));
        }
    }
}
