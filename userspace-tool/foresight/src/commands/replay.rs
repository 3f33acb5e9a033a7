// SPDX-License-Identifier: GPL-2.0
//! `foresight trace replay`: issue the reads (and, if allowed, the writes)
//! of a trace to a block device with O_DIRECT, one at a time.

use std::fs::{File, OpenOptions};
use std::io::BufReader;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::{Duration, Instant};

use foresight_predict::trace::{TraceError, TraceReader};
use foresight_predict::{Access, Op};
use serde::Serialize;

use super::predict::{probability_to_fixed, push, Kind, Range};
use super::status::dev_get;
use super::{exit, human_bytes, stop_flag, stopped, CmdResult};
use crate::blk::{geometry, AlignedBuf};
use crate::dev::DevSpec;
use crate::nl::Client;

/// What replay does with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
    SkipWrite,
    SkipFlush,
    SkipDiscard,
    SkipOther,
}

pub fn action(op: Op, allow_writes: bool) -> Action {
    match op {
        Op::Read => Action::Read,
        Op::Write | Op::WriteZeroes if allow_writes => Action::Write,
        Op::Write | Op::WriteZeroes => Action::SkipWrite,
        Op::Flush => Action::SkipFlush,
        Op::Discard => Action::SkipDiscard,
        _ => Action::SkipOther,
    }
}

/// The byte range of `sectors` at `sector`, widened to `block` and cut at
/// `size`; `None` if nothing of it is on the device.
pub fn io_range(sector: u64, sectors: u32, block: u64, size: u64) -> Option<(u64, usize)> {
    let start = sector.checked_mul(512)?;
    let end = start.checked_add(sectors as u64 * 512)?;
    let start = start / block * block;
    let end = end
        .div_ceil(block)
        .checked_mul(block)?
        .min(size / block * block);
    if sectors == 0 || start >= end {
        return None;
    }
    Some((start, usize::try_from(end - start).ok()?))
}

/// When a record is due, relative to the start of the replay.
pub fn due(ts_ns: u64, first_ns: u64, speed: f64) -> Duration {
    let d = ts_ns.saturating_sub(first_ns) as f64 / speed;
    Duration::from_nanos(d.min(u64::MAX as f64) as u64)
}

/// A foresight device's cache counters, as dev-get reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub hits: u64,
    pub misses: u64,
    pub partial: u64,
}

impl Counters {
    /// Hits over every read the cache saw between `before` and `self`.
    pub fn hit_rate_since(&self, before: &Counters) -> Option<f64> {
        let hits = self.hits.saturating_sub(before.hits);
        let all = hits
            + self.misses.saturating_sub(before.misses)
            + self.partial.saturating_sub(before.partial);
        (all > 0).then(|| hits as f64 / all as f64)
    }
}

/// Samples the cache counters of the foresight device replayed on.
struct CacheStats {
    client: Client,
    dev: DevSpec,
}

impl CacheStats {
    /// `None` when `target` is not a foresight device (or netlink is not
    /// ours to use): the replay then reports latencies only.
    fn open(target: &str) -> Option<Self> {
        let dev = DevSpec::parse(target).ok()?;
        let mut s = Self {
            client: Client::connect().ok()?,
            dev,
        };
        s.sample().map(|_| s)
    }

    fn sample(&mut self) -> Option<Counters> {
        let d = dev_get(&mut self.client, &self.dev).ok()?;
        Some(Counters {
            hits: d.cache_hits?,
            misses: d.cache_misses?,
            partial: d.cache_partial.unwrap_or(0),
        })
    }
}

/// One `--interval-s` slice of a replay.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Interval {
    /// End of the slice, seconds since the replay started.
    pub t_s: f64,
    pub reads: u64,
    pub mean_read_latency_us: Option<f64>,
    /// The device's cache over the slice: hits / (hits + misses + partial).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hit_rate: Option<f64>,
    /// With `--fast-us`: the fraction of the slice's reads that took less.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast: Option<f64>,
}

impl Interval {
    pub fn text(&self) -> String {
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or_else(|| "-".into(), f);
        let mut t = format!(
            "{:>8.1} s {:>7} reads  mean read latency {:>10}  hit rate {:>6}",
            self.t_s,
            self.reads,
            opt(self.mean_read_latency_us, &|v| format!("{v:.1} us")),
            opt(self.hit_rate, &|v| format!("{:.1}%", v * 100.0)),
        );
        if let Some(f) = self.fast {
            t.push_str(&format!("  fast {:.1}%", f * 100.0));
        }
        t
    }
}

/// `--interval-s`: the reads of the slice going on, and the slices done.
struct Slices {
    started: Instant,
    every: Duration,
    end: Instant,
    reads: u64,
    latency: Duration,
    /// `--fast-us`, and the slice's reads faster than that.
    fast_under: Option<Duration>,
    fast: u64,
    counters: Option<Counters>,
    print: bool,
    done: Vec<Interval>,
}

impl Slices {
    fn new(
        started: Instant,
        every: Duration,
        fast_under: Option<Duration>,
        counters: Option<Counters>,
        print: bool,
    ) -> Self {
        Self {
            started,
            every,
            end: started + every,
            reads: 0,
            latency: Duration::ZERO,
            fast_under,
            fast: 0,
            counters,
            print,
            done: Vec::new(),
        }
    }

    fn read(&mut self, latency: Duration) {
        self.reads += 1;
        self.latency += latency;
        if self.fast_under.is_some_and(|f| latency < f) {
            self.fast += 1;
        }
    }

    /// Ends the slice going on if its time is up (and the empty ones
    /// after it), printing each.
    fn tick(&mut self, now: Instant, stats: &mut Option<CacheStats>) {
        while self.end <= now {
            self.close(stats);
        }
    }

    fn close(&mut self, stats: &mut Option<CacheStats>) {
        let counters = stats.as_mut().and_then(CacheStats::sample);
        let i = Interval {
            t_s: (self.end - self.started).as_secs_f64(),
            reads: self.reads,
            mean_read_latency_us: (self.reads > 0)
                .then(|| self.latency.as_secs_f64() * 1e6 / self.reads as f64),
            hit_rate: counters
                .zip(self.counters)
                .and_then(|(now, before)| now.hit_rate_since(&before)),
            fast: self
                .fast_under
                .filter(|_| self.reads > 0)
                .map(|_| self.fast as f64 / self.reads as f64),
        };
        if self.print {
            println!("{}", i.text());
        }
        self.done.push(i);
        self.end += self.every;
        self.reads = 0;
        self.latency = Duration::ZERO;
        self.fast = 0;
        self.counters = counters;
    }

    /// The slices, the last one cut short (if it saw reads).
    fn finish(mut self, stats: &mut Option<CacheStats>) -> Vec<Interval> {
        if self.reads > 0 {
            self.end = Instant::now();
            self.close(stats);
        }
        self.done
    }
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub ios: u64,
    pub reads: u64,
    pub writes: u64,
    pub bytes: u64,
    pub mean_latency_us: f64,
    pub mean_read_latency_us: f64,
    pub max_latency_us: f64,
    /// With `--fast-us`: the fraction of all reads that took less.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast: Option<f64>,
    /// The device's cache over the replay (a foresight device only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hit_rate: Option<f64>,
    pub elapsed_s: f64,
    pub skipped_writes: u64,
    pub skipped_flushes: u64,
    pub skipped_discards: u64,
    pub skipped_other: u64,
    pub skipped_outside: u64,
    pub errors: u64,
    pub bad_lines: u64,
    pub interrupted: bool,
    /// Blocks the oracle's predictions queued (with `--oracle`).
    pub predicted: u64,
    /// With `--interval-s`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub intervals: Vec<Interval>,
}

impl Summary {
    pub fn text(&self) -> String {
        let mut s = format!(
            "replayed {} ios ({} reads, {} writes), {} bytes ({}), mean latency {:.1} us (reads {:.1} us, max {:.1} us), elapsed {:.3} s",
            self.ios,
            self.reads,
            self.writes,
            self.bytes,
            human_bytes(self.bytes),
            self.mean_latency_us,
            self.mean_read_latency_us,
            self.max_latency_us,
            self.elapsed_s
        );
        if let Some(h) = self.hit_rate {
            s.push_str(&format!("\ncache hit rate {:.1}%", h * 100.0));
        }
        s.push_str(&format!(
            "\nskipped: {} writes, {} flushes, {} discards, {} other, {} outside the device; errors: {}",
            self.skipped_writes,
            self.skipped_flushes,
            self.skipped_discards,
            self.skipped_other,
            self.skipped_outside,
            self.errors
        ));
        if self.bad_lines > 0 {
            s.push_str(&format!("; malformed trace lines: {}", self.bad_lines));
        }
        if self.interrupted {
            s.push_str("\ninterrupted");
        }
        s
    }
}

pub struct Opts<'a> {
    pub file: &'a str,
    pub target: &'a str,
    pub speed: f64,
    pub no_timing: bool,
    pub allow_writes: bool,
    pub json: bool,
    /// An oracle: push the trace's own upcoming reads as predictions
    /// (probability 1) to this foresight device, this many reads ahead.
    pub oracle: Option<(&'a str, usize)>,
    /// Report the reads' latency (and the cache's hit rate) every this
    /// many seconds.
    pub interval_s: Option<f64>,
    /// Draw those slices into this PNG.
    pub plot: Option<&'a str>,
    /// Count the reads faster than this many microseconds (reads served
    /// locally, when the remote ones are slower), overall and by slice.
    pub fast_us: Option<f64>,
}

/// The reads (by index among the trace's reads) an oracle `ahead` reads
/// ahead pushes just before read `i`: the first two batches at the start,
/// then one batch every `ahead` reads, so that every read was predicted
/// between `ahead` and `2 * ahead` reads before it.
pub fn oracle_batch(i: usize, ahead: usize, reads: usize) -> Option<std::ops::Range<usize>> {
    let ahead = ahead.max(1);
    let r = if i == 0 {
        0..2 * ahead
    } else if i.is_multiple_of(ahead) {
        i + ahead..i + 2 * ahead
    } else {
        return None;
    };
    let r = r.start.min(reads)..r.end.min(reads);
    (!r.is_empty()).then_some(r)
}

pub fn run(o: &Opts<'_>) -> CmdResult {
    if !(o.speed > 0.0 && o.speed.is_finite()) {
        return Err(format!("--speed must be a positive number, not {}", o.speed).into());
    }
    if let Some(us) = o.fast_us.filter(|us| !(*us >= 0.0 && *us <= 1e12)) {
        return Err(format!("--fast-us must be a number of microseconds, not {us}").into());
    }
    let every = match o.interval_s {
        Some(i) if !(i > 0.0 && i.is_finite()) => {
            return Err(format!("--interval-s must be a positive number, not {i}").into())
        }
        Some(i) => Some(Duration::from_secs_f64(i)),
        None if o.plot.is_some() => Some(Duration::from_secs(1)),
        None => None,
    };
    let tf = File::open(o.file).map_err(|e| format!("{}: {e}", o.file))?;
    let reader = TraceReader::new(BufReader::new(tf)).map_err(|e| format!("{}: {e}", o.file))?;
    let dev = OpenOptions::new()
        .read(true)
        .write(o.allow_writes)
        .custom_flags(libc::O_DIRECT)
        .open(o.target)
        .map_err(|e| format!("{}: {e}", o.target))?;
    let (block, size) = geometry(&dev).map_err(|e| format!("{}: {e}", o.target))?;
    {
        let h = reader.header();
        if !o.json {
            eprintln!(
                "foresight: replaying the trace of {} ({}, {} sectors) on {} ({} sectors, {}-byte blocks){}",
                h.device,
                h.dev,
                h.sectors,
                o.target,
                size / 512,
                block,
                if o.allow_writes { ", writes included" } else { "" }
            );
        }
    }
    // The oracle needs to look ahead: the trace is read whole first.
    let (records, oracle): (Box<dyn Iterator<Item = Result<Access, TraceError>>>, _) =
        match o.oracle {
            None => (Box::new(reader), None),
            Some((dev, ahead)) => {
                let all: Vec<_> = reader.collect();
                let reads: Vec<Range> = all
                    .iter()
                    .filter_map(|r| r.as_ref().ok())
                    .filter(|a| a.op == Op::Read && a.sectors > 0)
                    .map(|a| Range {
                        start: a.sector,
                        length: u64::from(a.sectors),
                        probability: probability_to_fixed(1.0),
                    })
                    .collect();
                let dev = DevSpec::parse(dev)?;
                let client = Client::connect()?;
                (Box::new(all.into_iter()), Some((client, dev, reads, ahead)))
            }
        };
    let mut oracle = oracle;
    let mut read_index = 0usize;
    let stop = stop_flag()?;
    let mut buf = AlignedBuf::new();
    let mut s = Summary::default();
    let mut lat_total = Duration::ZERO;
    let mut read_lat_total = Duration::ZERO;
    let mut lat_max = Duration::ZERO;
    let mut stats = CacheStats::open(o.target);
    let at_start = stats.as_mut().and_then(CacheStats::sample);
    let mut first_ts: Option<u64> = None;
    let mut first_error: Option<String> = None;
    let started = Instant::now();
    let fast_under = o.fast_us.map(|us| Duration::from_secs_f64(us.max(0.0) / 1e6));
    let mut fast_reads = 0u64;
    let mut slices = every.map(|d| Slices::new(started, d, fast_under, at_start, !o.json));

    for rec in records {
        if stopped(&stop) {
            s.interrupted = true;
            break;
        }
        let a: Access = match rec {
            Ok(a) => a,
            // A bad line is skipped (the reader goes on with the next);
            // a read error ends the replay.
            Err(e @ TraceError::Io(_)) => return Err(format!("{}: {e}", o.file).into()),
            Err(e) => {
                s.bad_lines += 1;
                if s.bad_lines == 1 {
                    eprintln!("foresight: {}: {e} (skipped)", o.file);
                }
                continue;
            }
        };
        // The timeline starts at the first record, whatever it is.
        let first = *first_ts.get_or_insert(a.ts_ns);
        let act = action(a.op, o.allow_writes);
        match act {
            Action::SkipWrite => s.skipped_writes += 1,
            Action::SkipFlush => s.skipped_flushes += 1,
            Action::SkipDiscard => s.skipped_discards += 1,
            Action::SkipOther => s.skipped_other += 1,
            Action::Read | Action::Write => {}
        }
        if !matches!(act, Action::Read | Action::Write) {
            continue;
        }
        let Some((off, len)) = io_range(a.sector, a.sectors, block, size) else {
            s.skipped_outside += 1;
            continue;
        };
        if !o.no_timing {
            // Wait in slices, so that a signal during a long gap of the
            // trace is seen.
            let at = started + due(a.ts_ns, first, o.speed);
            loop {
                let now = Instant::now();
                if let Some(sl) = slices.as_mut() {
                    sl.tick(now, &mut stats);
                }
                if at <= now || stopped(&stop) {
                    break;
                }
                std::thread::sleep((at - now).min(Duration::from_millis(100)));
            }
            if stopped(&stop) {
                s.interrupted = true;
                break;
            }
        }
        if act == Action::Read {
            if let Some((client, dev, reads, ahead)) = oracle.as_mut() {
                if let Some(r) = oracle_batch(read_index, *ahead, reads.len()) {
                    s.predicted += push(client, dev, Kind::Read, None, &reads[r])?;
                }
            }
            read_index += 1;
        }
        let b = buf.get(len);
        let t = Instant::now();
        let r = if act == Action::Write {
            b.fill(0);
            dev.write_all_at(b, off).map(|_| len)
        } else {
            dev.read_at(b, off)
        };
        let lat = t.elapsed();
        match r {
            Ok(n) => {
                s.ios += 1;
                s.bytes += n as u64;
                if act == Action::Write {
                    s.writes += 1;
                } else {
                    s.reads += 1;
                }
                lat_total += lat;
                lat_max = lat_max.max(lat);
                if act == Action::Read {
                    read_lat_total += lat;
                    if fast_under.is_some_and(|f| lat < f) {
                        fast_reads += 1;
                    }
                    if let Some(sl) = slices.as_mut() {
                        sl.read(lat);
                    }
                }
            }
            Err(e) => {
                s.errors += 1;
                if first_error.is_none() {
                    first_error = Some(format!(
                        "{} of {len} bytes at {off}: {e}",
                        if act == Action::Write {
                            "write"
                        } else {
                            "read"
                        }
                    ));
                }
            }
        }
        if let Some(sl) = slices.as_mut() {
            sl.tick(Instant::now(), &mut stats);
        }
    }
    if let Some(sl) = slices {
        s.intervals = sl.finish(&mut stats);
    }
    s.elapsed_s = started.elapsed().as_secs_f64();
    if s.ios > 0 {
        s.mean_latency_us = lat_total.as_secs_f64() * 1e6 / s.ios as f64;
    }
    if s.reads > 0 {
        s.mean_read_latency_us = read_lat_total.as_secs_f64() * 1e6 / s.reads as f64;
        s.fast = fast_under.map(|_| fast_reads as f64 / s.reads as f64);
    }
    s.hit_rate = stats
        .as_mut()
        .and_then(CacheStats::sample)
        .zip(at_start)
        .and_then(|(now, before)| now.hit_rate_since(&before));
    s.max_latency_us = lat_max.as_secs_f64() * 1e6;
    if o.json {
        println!("{}", serde_json::to_string(&s).map_err(|e| e.to_string())?);
    } else {
        println!("{}", s.text());
    }
    if let Some(path) = o.plot {
        super::plot::draw_replay(path, o.file, &s.intervals)?;
        if !o.json {
            println!("plot: {path}");
        }
    }
    if let Some(e) = first_error {
        eprintln!(
            "foresight: {} I/O errors on {}; the first: {e}",
            s.errors, o.target
        );
        return Ok(exit::ERROR);
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        // Aligned 512-byte blocks.
        assert_eq!(io_range(8, 8, 512, 1 << 20), Some((4096, 4096)));
        // Widened to 4 KiB blocks.
        assert_eq!(io_range(9, 2, 4096, 1 << 20), Some((4096, 4096)));
        assert_eq!(io_range(7, 2, 4096, 1 << 20), Some((0, 8192)));
        // Cut at the end, or outside.
        assert_eq!(io_range(2046, 8, 512, 2048 * 512), Some((2046 * 512, 1024)));
        assert_eq!(io_range(2048, 8, 512, 2048 * 512), None);
        assert_eq!(io_range(0, 0, 512, 1 << 20), None);
        assert_eq!(io_range(u64::MAX / 256, 8, 512, u64::MAX), None);
    }

    #[test]
    fn actions() {
        assert_eq!(action(Op::Read, false), Action::Read);
        assert_eq!(action(Op::Write, false), Action::SkipWrite);
        assert_eq!(action(Op::Write, true), Action::Write);
        assert_eq!(action(Op::WriteZeroes, true), Action::Write);
        assert_eq!(action(Op::Flush, true), Action::SkipFlush);
        assert_eq!(action(Op::Discard, true), Action::SkipDiscard);
        assert_eq!(action(Op::Other, true), Action::SkipOther);
    }

    #[test]
    fn oracle_batches() {
        // Two batches at the start, then one every `ahead` reads.
        assert_eq!(oracle_batch(0, 10, 100), Some(0..20));
        assert_eq!(oracle_batch(5, 10, 100), None);
        assert_eq!(oracle_batch(10, 10, 100), Some(20..30));
        assert_eq!(oracle_batch(80, 10, 100), Some(90..100));
        assert_eq!(oracle_batch(90, 10, 100), None);
        assert_eq!(oracle_batch(0, 10, 5), Some(0..5));
        // Every read is pushed exactly once, before it is issued.
        let mut pushed = vec![0; 97];
        for i in 0..97 {
            if let Some(r) = oracle_batch(i, 8, 97) {
                assert!(r.start >= i);
                for k in r {
                    pushed[k] += 1;
                }
            }
            assert_eq!(pushed[i], 1, "read {i}");
        }
    }

    #[test]
    fn timing() {
        assert_eq!(due(1_000_000_000, 0, 1.0), Duration::from_secs(1));
        assert_eq!(due(1_000_000_000, 0, 2.0), Duration::from_millis(500));
        assert_eq!(due(5, 10, 1.0), Duration::ZERO);
    }

    #[test]
    fn hit_rate_of_a_slice() {
        let a = Counters {
            hits: 10,
            misses: 5,
            partial: 1,
        };
        let b = Counters {
            hits: 16,
            misses: 7,
            partial: 2,
        };
        assert_eq!(b.hit_rate_since(&a), Some(6.0 / 9.0));
        assert_eq!(a.hit_rate_since(&a), None);
        let i = Interval {
            t_s: 2.0,
            reads: 9,
            mean_read_latency_us: Some(1500.0),
            hit_rate: b.hit_rate_since(&a),
            fast: Some(0.25),
        };
        assert!(i.text().contains("fast 25.0%"), "{}", i.text());
        assert!(i.text().contains("1500.0 us"), "{}", i.text());
        assert!(i.text().contains("66.7%"), "{}", i.text());
        let j = serde_json::to_value(Interval::default()).unwrap();
        assert!(j.get("hit_rate").is_none());
    }

    /// Replays a trace file on a plain file (no foresight device: latency
    /// only) with slices and a plot.
    #[test]
    fn slices_and_plot() {
        let dir = std::env::temp_dir().join(format!("foresight-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let trace = dir.join("t.trace");
        let mut text = String::from("# foresight-trace v1\n# device t 0:0 2048\n");
        for i in 0..40u64 {
            text.push_str(&format!("{} R {} 8\n", i * 10_000_000, (i % 16) * 8));
        }
        std::fs::write(&trace, text).unwrap();
        let img = dir.join("disk.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let png = dir.join("r.png");
        let o = Opts {
            file: trace.to_str().unwrap(),
            target: img.to_str().unwrap(),
            speed: 1.0,
            no_timing: false,
            allow_writes: false,
            json: true,
            oracle: None,
            interval_s: Some(0.1),
            plot: Some(png.to_str().unwrap()),
            fast_us: Some(1e9),
        };
        assert_eq!(run(&o).unwrap(), exit::OK);
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fast_us_must_be_a_duration() {
        for bad in [f64::INFINITY, f64::NAN, -1.0, 1e300] {
            let o = Opts {
                file: "/nonexistent",
                target: "/nonexistent",
                speed: 1.0,
                no_timing: false,
                allow_writes: false,
                json: true,
                oracle: None,
                interval_s: None,
                plot: None,
                fast_us: Some(bad),
            };
            let e = run(&o).unwrap_err();
            assert!(format!("{e:?}").contains("--fast-us"), "{bad}: {e:?}");
        }
    }

    #[test]
    fn summary_json() {
        let s = Summary {
            ios: 2,
            reads: 2,
            bytes: 8192,
            mean_latency_us: 12.5,
            ..Default::default()
        };
        let j: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(j["ios"], 2);
        assert_eq!(j["mean_latency_us"], 12.5);
        assert!(s
            .text()
            .starts_with("replayed 2 ios (2 reads, 0 writes), 8192 bytes (8.0 KiB)"));
    }
}
