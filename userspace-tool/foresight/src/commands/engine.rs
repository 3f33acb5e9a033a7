// SPDX-License-Identifier: GPL-2.0
//! The daemon's policy engine: every few seconds it measures each
//! foresight device (hit rate, read latency, prefetch waste, the read
//! rate and its forecast, a miss-ratio curve from the sampled trace),
//! shares the host's cache total between the devices by the policy in
//! force ([`foresight_predict::engine`]), resizes their caches with
//! hysteresis (`policy-set cache-mb`, shrinks before growths so the
//! kernel's budget is never crossed), and logs why.  `foresight policy
//! engine POLICY` switches the policy of the running daemon: it writes the
//! policy next to the daemon's state file, and the daemon decides again
//! under the new one at its next push (within one push interval).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use foresight_predict::engine::{Decision, Device, Engine, Policy, RateForecast};
use foresight_predict::mrc::Shards;
use foresight_predict::Access;
use serde::{Deserialize, Serialize};

use super::budget;
use super::policy::Policy as PolicySet;
use super::status::{dev_dump, DevInfo};
use super::{exit, CmdResult, Failure};
use crate::dev::{DevNum, DevSpec};
use crate::nl::Client;

/// The engine's options of `foresight daemon`.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Share the host's cache total between the devices by this policy:
    /// fair, latency, throughput or predicted (switch it at run time with
    /// `foresight policy engine`)
    #[arg(long, value_name = "POLICY", value_parser = parse_policy)]
    pub engine: Option<Policy>,
    /// Seconds between two of the engine's decisions (three: memory moves
    /// within ten seconds of a change, past the hysteresis of one noisy
    /// first look)
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    pub engine_interval_s: f64,
    /// The total it shares, in MiB (default: the host's cache budget if
    /// one is set, else what the devices' caches hold together)
    #[arg(long, value_name = "MIB")]
    pub engine_total_mb: Option<u64>,
    /// The least cache it gives a device, in MiB
    #[arg(long, default_value_t = 4, value_name = "MIB")]
    pub engine_min_mb: u64,
    /// The least move worth resizing a cache for, in MiB (a resize empties
    /// the cache)
    #[arg(long, default_value_t = 4, value_name = "MIB")]
    pub engine_hysteresis_mb: u64,
    /// Share of the blocks whose reads the miss-ratio curves sample at
    /// first (SHARDS)
    #[arg(long, default_value_t = 0.1, value_name = "RATE")]
    pub mrc_rate: f64,
    /// The most blocks a device's curve tracks (about 64 bytes each); past
    /// it, the rate falls
    #[arg(long, default_value_t = 16384, value_name = "N")]
    pub mrc_max_blocks: usize,
    /// Seconds a miss-ratio curve covers before it starts again
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    pub mrc_window_s: f64,
    /// At each decision, put every foresight workqueue on these CPUs
    /// (`foresight placement --kernel-cpus`): a reloaded table's too
    #[arg(long, value_name = "LIST")]
    pub engine_kernel_cpus: Option<String>,
}

/// The options' defaults (for tests).
#[cfg(test)]
pub fn defaults() -> Opts {
    #[derive(clap::Parser)]
    struct W {
        #[command(flatten)]
        e: Opts,
    }
    <W as clap::Parser>::parse_from(["daemon"]).e
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse()
}

impl Opts {
    pub fn check(&self) -> Result<(), String> {
        if !(self.engine_interval_s >= 0.1 && self.engine_interval_s.is_finite()) {
            return Err(format!(
                "--engine-interval-s must be at least 0.1, not {}",
                self.engine_interval_s
            ));
        }
        if !(self.mrc_rate > 0.0 && self.mrc_rate <= 1.0) {
            return Err(format!("--mrc-rate must be in (0, 1], not {}", self.mrc_rate));
        }
        if let Some(cpus) = &self.engine_kernel_cpus {
            super::placement::list_to_mask(cpus)?;
        }
        if !(self.mrc_window_s > 0.0 && self.mrc_window_s.is_finite()) {
            return Err(format!(
                "--mrc-window-s must be a positive number, not {}",
                self.mrc_window_s
            ));
        }
        Ok(())
    }
}

/// Where `foresight policy engine` leaves the policy for the daemon whose
/// state file is `state_file`.
pub fn control_path(state_file: &str) -> PathBuf {
    Path::new(state_file).with_file_name("engine-policy")
}

/// What the engine reports in the daemon's state file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub policy: String,
    pub total_mb: u64,
    pub interval_s: f64,
    /// Decisions made, and applied (resizes).
    pub decisions: u64,
    pub applied: u64,
    /// The last decision's reason.
    pub reason: String,
    pub devices: Vec<DevReport>,
}

/// One device as the engine last measured it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DevReport {
    pub name: String,
    pub cache_mb: u64,
    /// Over the last interval: reads, hit rate, mean read latency (µs),
    /// prefetched blocks evicted unused per block fetched.
    pub reads: u64,
    pub hit_rate: Option<f64>,
    pub mean_read_us: f64,
    pub waste: Option<f64>,
    pub forecast_reads_per_s: f64,
}

/// Counters a device's measurement is the difference of.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub reads: u64,
    pub hits: u64,
    pub misses: u64,
    pub partial: u64,
    pub completed: u64,
    pub wasted: u64,
    /// The block layer's reads completed and milliseconds spent on them
    /// (`/sys/dev/block/M:m/stat`).
    pub blk_reads: u64,
    pub blk_read_ms: u64,
}

impl Counters {
    fn of(d: &DevInfo, blk: Option<(u64, u64)>) -> Self {
        let sum = |f: fn(&super::status::TierStats) -> Option<u64>| {
            d.tiers.iter().filter_map(f).sum::<u64>()
        };
        let (blk_reads, blk_read_ms) = blk.unwrap_or_default();
        Counters {
            reads: d.read_bios.unwrap_or(0),
            hits: d.cache_hits.unwrap_or(0),
            misses: d.cache_misses.unwrap_or(0),
            partial: d.cache_partial.unwrap_or(0),
            completed: sum(|t| t.completed),
            wasted: sum(|t| t.wasted),
            blk_reads,
            blk_read_ms,
        }
    }
}

/// What a device did between two measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measured {
    pub reads: u64,
    pub hit_rate: Option<f64>,
    pub mean_read_us: f64,
    pub waste: Option<f64>,
}

/// The difference of two measurements (a counter that went back, as
/// after a table reload, counts from zero).
pub fn measure(before: &Counters, now: &Counters) -> Measured {
    let d = |a: u64, b: u64| if b >= a { b - a } else { b };
    let hits = d(before.hits, now.hits);
    let seen = hits + d(before.misses, now.misses) + d(before.partial, now.partial);
    let completed = d(before.completed, now.completed);
    let blk_reads = d(before.blk_reads, now.blk_reads);
    Measured {
        reads: d(before.reads, now.reads),
        hit_rate: (seen > 0).then(|| hits as f64 / seen as f64),
        mean_read_us: if blk_reads > 0 {
            d(before.blk_read_ms, now.blk_read_ms) as f64 * 1000.0 / blk_reads as f64
        } else {
            0.0
        },
        waste: (completed > 0).then(|| d(before.wasted, now.wasted) as f64 / completed as f64),
    }
}

/// Reads completed and milliseconds spent reading, from a block device's
/// `stat` (Documentation/block/stat.rst: fields 1 and 4).
pub fn parse_blk_stat(s: &str) -> Option<(u64, u64)> {
    let f: Vec<u64> = s
        .split_whitespace()
        .take(4)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    (f.len() == 4).then(|| (f[0], f[3]))
}

fn blk_stat(dev: u32) -> Option<(u64, u64)> {
    let n = DevNum::decode(dev);
    parse_blk_stat(&std::fs::read_to_string(format!("/sys/dev/block/{n}/stat")).ok()?)
}

/// The changes a decision makes, shrinks first: the kernel refuses a
/// growth while the total is held elsewhere.
pub fn resizes(current: &[u64], split: &[u64]) -> Vec<(usize, u64)> {
    let mut v: Vec<(usize, u64)> = current
        .iter()
        .zip(split)
        .enumerate()
        .filter(|(_, (c, s))| c != s)
        .map(|(i, (_, &s))| (i, s))
        .collect();
    v.sort_by_key(|&(i, s)| (s > current[i], i));
    v
}

/// A device the engine shares memory with.
struct Dev {
    name: String,
    cache_mb: u64,
    last: Option<Counters>,
    measured: Measured,
    /// The curve now being built, and the last whole window's.
    shards: Shards,
    previous: Option<Shards>,
    forecast: RateForecast,
    /// Reads traced since the last rate sample.
    traced: u64,
    seen: bool,
}

/// The engine as the daemon runs it.
pub struct Runner {
    o: Opts,
    policy: Option<Policy>,
    control: PathBuf,
    control_seen: Option<SystemTime>,
    devs: HashMap<u32, Dev>,
    next: Instant,
    /// Decide now (a policy switched).
    now: bool,
    window_started: Instant,
    last_sample: Instant,
    /// The daemon's push interval (s): the forecasts' step.
    step_s: f64,
    report: Report,
}

impl Runner {
    /// The engine of a daemon whose state file is `state_file`; the
    /// policy given on the command line is written to the control file,
    /// so that the two agree.
    pub fn new(o: &Opts, state_file: &str, push_interval: Duration) -> Self {
        let control = control_path(state_file);
        if let Some(p) = o.engine {
            let _ = write_control(&control, p);
        }
        let control_seen = std::fs::metadata(&control).and_then(|m| m.modified()).ok();
        let now = Instant::now();
        Runner {
            o: o.clone(),
            policy: o.engine,
            control,
            control_seen,
            devs: HashMap::new(),
            next: now + Duration::from_secs_f64(o.engine_interval_s),
            now: false,
            window_started: now,
            last_sample: now,
            step_s: push_interval.as_secs_f64().max(1e-3),
            report: Report::default(),
        }
    }

    /// The report for the state file (none while the engine is off).
    pub fn report(&self) -> Option<Report> {
        self.policy.is_some().then(|| self.report.clone())
    }

    fn dev(&mut self, dev: u32, name: &str) -> &mut Dev {
        let (rate, limit) = (self.o.mrc_rate, self.o.mrc_max_blocks);
        self.devs.entry(dev).or_insert_with(|| Dev {
            name: name.to_string(),
            cache_mb: 0,
            last: None,
            measured: Measured::default(),
            shards: Shards::with_limit(rate, limit),
            previous: None,
            forecast: RateForecast::default(),
            traced: 0,
            seen: false,
        })
    }

    /// A device's traced accesses: its reads feed the curve and the rate.
    pub fn observe(&mut self, dev: Option<u32>, name: &str, records: &[Access]) {
        let Some(dev) = dev else {
            return;
        };
        let d = self.dev(dev, name);
        for a in records.iter().filter(|a| a.op == foresight_predict::Op::Read) {
            d.shards.access_sectors(a.sector, u64::from(a.sectors));
            d.traced += 1;
        }
    }

    /// Called at each of the daemon's pushes: the policy file, the rate
    /// samples, and a decision when one is due.  Returns whether the
    /// report changed.
    pub fn tick(&mut self, client: &mut Client, log: &mut dyn FnMut(&str)) -> bool {
        // A switch is reported at once: `off` has no decision to wait for.
        let switched = self.poll_control(log);
        let now = Instant::now();
        let dt = now.duration_since(self.last_sample).as_secs_f64();
        if dt > 0.0 {
            for d in self.devs.values_mut() {
                d.forecast.observe(d.traced as f64 / dt);
                d.traced = 0;
            }
            self.last_sample = now;
        }
        let window = Duration::from_secs_f64(self.o.mrc_window_s);
        if now.duration_since(self.window_started) >= window {
            for d in self.devs.values_mut() {
                let fresh = Shards::with_limit(self.o.mrc_rate, self.o.mrc_max_blocks);
                d.previous = Some(std::mem::replace(&mut d.shards, fresh));
            }
            self.window_started = now;
        }
        let Some(policy) = self.policy else {
            return switched;
        };
        if !self.now && now < self.next {
            return false;
        }
        self.now = false;
        self.next = now + Duration::from_secs_f64(self.o.engine_interval_s);
        match self.decide(client, policy, log) {
            Ok(()) => true,
            Err(e) => {
                log(&format!("engine: {e}"));
                false
            }
        }
    }

    /// Takes the policy written by `foresight policy engine`; returns
    /// whether it changed.
    fn poll_control(&mut self, log: &mut dyn FnMut(&str)) -> bool {
        let Ok(m) = std::fs::metadata(&self.control).and_then(|m| m.modified()) else {
            return false;
        };
        if self.control_seen == Some(m) {
            return false;
        }
        self.control_seen = Some(m);
        let text = std::fs::read_to_string(&self.control).unwrap_or_default();
        let want = text.trim();
        let new = if want == "off" {
            None
        } else {
            match want.parse::<Policy>() {
                Ok(p) => Some(p),
                Err(e) => {
                    log(&format!("engine: {}: {e}", self.control.display()));
                    return false;
                }
            }
        };
        if new == self.policy {
            return false;
        }
        let name = |p: Option<Policy>| p.map_or("off".to_string(), |p| p.to_string());
        log(&format!(
            "engine: policy {} -> {} (foresight policy engine)",
            name(self.policy),
            name(new)
        ));
        self.policy = new;
        self.report.policy = name(new);
        self.now = true;
        true
    }

    /// Measures, decides, applies and logs.
    fn decide(
        &mut self,
        client: &mut Client,
        policy: Policy,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), Failure> {
        let infos = dev_dump(client)?;
        for d in self.devs.values_mut() {
            d.seen = false;
        }
        let half_window = self.o.mrc_window_s / 2.0;
        let young = self.window_started.elapsed().as_secs_f64() < half_window;
        let steps = self.o.engine_interval_s / 2.0 / self.step_s;
        let mut order = Vec::new();
        for info in &infos {
            let (Some(dev), Some(name)) = (info.dev, info.name.as_deref()) else {
                continue;
            };
            // A device whose cache is off has opted out.
            let cap = info.cache_capacity.unwrap_or(0);
            if cap == 0 {
                continue;
            }
            let counters = Counters::of(info, blk_stat(dev));
            let d = self.dev(dev, name);
            d.seen = true;
            d.name = name.to_string();
            d.cache_mb = cap >> 20;
            if let Some(last) = d.last {
                d.measured = measure(&last, &counters);
            }
            d.last = Some(counters);
            order.push(dev);
        }
        self.devs.retain(|_, d| d.seen);
        order.sort_by(|a, b| self.devs[a].name.cmp(&self.devs[b].name));
        if order.is_empty() {
            return Ok(());
        }
        let total_mb = match self.o.engine_total_mb {
            Some(t) => t,
            None => match budget::get(client)?.cache_total_mb {
                0 => order.iter().map(|k| self.devs[k].cache_mb).sum(),
                t => u64::from(t),
            },
        };
        // Curves up to the whole total (in bins of 1 MiB).
        let max_bins = usize::try_from(total_mb).unwrap_or(usize::MAX).min(1 << 20);
        let devices: Vec<Device> = order
            .iter()
            .map(|k| {
                let d = &self.devs[k];
                let shards = match &d.previous {
                    Some(p) if young => p,
                    _ => &d.shards,
                };
                Device {
                    name: d.name.clone(),
                    cache_mb: d.cache_mb,
                    reads: d.measured.reads,
                    mean_read_us: d.measured.mean_read_us,
                    curve: Some(shards.curve(max_bins)),
                    forecast_reads_per_s: d.forecast.forecast(steps),
                }
            })
            .collect();
        let engine = Engine {
            policy,
            total_mb,
            min_mb: self.o.engine_min_mb,
            hysteresis_mb: self.o.engine_hysteresis_mb,
        };
        let decision = engine.decide(&devices);
        self.report.decisions += 1;
        if let Some(cpus) = &self.o.engine_kernel_cpus {
            self.place(cpus, log);
        }
        let measured: Vec<String> = order
            .iter()
            .map(|k| {
                let d = &self.devs[k];
                let m = &d.measured;
                let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}", v));
                format!(
                    "{} {} MiB: {} reads, hit {}, {:.0} us, waste {}, {:.0} reads/s forecast",
                    d.name,
                    d.cache_mb,
                    m.reads,
                    pct(m.hit_rate),
                    m.mean_read_us,
                    pct(m.waste),
                    d.forecast.forecast(steps)
                )
            })
            .collect();
        log(&format!(
            "engine {policy} (total {total_mb} MiB): {}",
            measured.join("; ")
        ));
        log(&format!("engine {}", decision.reason));
        if decision.apply {
            self.apply(client, &order, &devices, &decision, log);
            self.report.applied += 1;
        }
        self.report.policy = policy.to_string();
        self.report.total_mb = total_mb;
        self.report.interval_s = self.o.engine_interval_s;
        self.report.reason = decision.reason.clone();
        self.report.devices = order
            .iter()
            .map(|k| {
                let d = &self.devs[k];
                DevReport {
                    name: d.name.clone(),
                    cache_mb: d.cache_mb,
                    reads: d.measured.reads,
                    hit_rate: d.measured.hit_rate,
                    mean_read_us: d.measured.mean_read_us,
                    waste: d.measured.waste,
                    forecast_reads_per_s: d.forecast.forecast(steps),
                }
            })
            .collect();
        Ok(())
    }

    /// Every foresight workqueue not on `cpus` goes there.
    fn place(&self, cpus: &str, log: &mut dyn FnMut(&str)) {
        use super::placement::{list, list_to_mask, set, SYSFS};
        let r = list_to_mask(cpus).and_then(|mask| {
            let want = super::placement::mask_to_list(&mask);
            let off: Vec<_> = list(Path::new(SYSFS), None)?
                .into_iter()
                .filter(|(_, q)| q.cpus != want)
                .collect();
            set(&off, &mask)?;
            Ok(off.len())
        });
        match r {
            Ok(0) => {}
            Ok(n) => log(&format!("engine: {n} workqueue(s) put on CPUs {cpus}")),
            Err(e) => log(&format!("engine: placement: {e}")),
        }
    }

    fn apply(
        &mut self,
        client: &mut Client,
        order: &[u32],
        devices: &[Device],
        decision: &Decision,
        log: &mut dyn FnMut(&str),
    ) {
        let current: Vec<u64> = devices.iter().map(|d| d.cache_mb).collect();
        for (i, mb) in resizes(&current, &decision.cache_mb) {
            let dev = order[i];
            let set = PolicySet {
                cache_mb: Some(u32::try_from(mb).unwrap_or(u32::MAX)),
                ..PolicySet::default()
            };
            let spec = DevSpec::Num(DevNum::decode(dev));
            match client.request(
                "policy-set",
                crate::uapi::cmd::POLICY_SET,
                set.attrs(&spec),
            ) {
                Ok(_) => {
                    if let Some(d) = self.devs.get_mut(&dev) {
                        d.cache_mb = mb;
                        // The resize emptied it: measure from here.
                        d.last = None;
                    }
                }
                Err(e) => log(&format!(
                    "engine: {} to {mb} MiB refused: {e}",
                    devices[i].name
                )),
            }
        }
    }
}

fn write_control(path: &Path, p: Policy) -> std::io::Result<()> {
    write_control_text(path, &p.to_string())
}

fn write_control_text(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    writeln!(f, "{text}")?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// `foresight policy engine [POLICY|off]`: switches the running daemon's
/// engine and waits (up to `wait`) until it has decided under the new
/// policy; without a policy, prints the engine's last decision.
pub fn run(policy: Option<&str>, state_file: &str, json: bool, wait: Duration) -> CmdResult {
    use super::daemon::State;
    let Some(state) = State::load(state_file) else {
        return Err(format!(
            "no daemon runs (no live state in {state_file}): start `foresight daemon --engine POLICY`"
        )
        .into());
    };
    let Some(want) = policy else {
        let Some(r) = state.engine else {
            println!("the daemon (pid {}) runs no engine", state.pid);
            return Ok(exit::OK);
        };
        print_report(&r, json);
        return Ok(exit::OK);
    };
    if want != "off" {
        want.parse::<Policy>()?;
    }
    let path = control_path(state_file);
    write_control_text(&path, want).map_err(|e| format!("{}: {e}", path.display()))?;
    let before = state.engine.as_ref().map_or(0, |r| r.decisions);
    let deadline = Instant::now() + wait;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let s = State::load(state_file);
        let done = match (&s, want) {
            (Some(s), "off") => s.engine.is_none(),
            (Some(s), w) => s
                .engine
                .as_ref()
                .is_some_and(|r| r.policy == w && r.decisions > before),
            (None, _) => return Err("the daemon stopped".to_string().into()),
        };
        if done {
            match s.and_then(|s| s.engine) {
                Some(r) => print_report(&r, json),
                None => println!("engine off"),
            }
            return Ok(exit::OK);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the daemon (pid {}) has not taken policy {want} within {} s",
                state.pid,
                wait.as_secs()
            )
            .into());
        }
    }
}

fn print_report(r: &Report, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
        return;
    }
    println!(
        "engine {} (total {} MiB, every {} s; {} decisions, {} applied)",
        r.policy, r.total_mb, r.interval_s, r.decisions, r.applied
    );
    for d in &r.devices {
        println!(
            "  {:<24} {:>6} MiB  {:>8} reads  hit {}  {:.0} us  waste {}  {:.0} reads/s forecast",
            d.name,
            d.cache_mb,
            d.reads,
            d.hit_rate.map_or("-".into(), |v| format!("{v:.2}")),
            d.mean_read_us,
            d.waste.map_or("-".into(), |v| format!("{v:.2}")),
            d.forecast_reads_per_s
        );
    }
    println!("  last: {}", r.reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_come_first() {
        assert_eq!(
            resizes(&[22, 22, 22], &[31, 12, 23]),
            vec![(1, 12), (0, 31), (2, 23)]
        );
        assert_eq!(resizes(&[8, 8], &[8, 8]), vec![]);
    }

    #[test]
    fn measurements_are_differences() {
        let a = Counters {
            reads: 100,
            hits: 10,
            misses: 30,
            partial: 0,
            completed: 50,
            wasted: 5,
            blk_reads: 90,
            blk_read_ms: 90,
        };
        let b = Counters {
            reads: 200,
            hits: 40,
            misses: 90,
            partial: 10,
            completed: 150,
            wasted: 25,
            blk_reads: 190,
            blk_read_ms: 290,
        };
        let m = measure(&a, &b);
        assert_eq!(m.reads, 100);
        assert_eq!(m.hit_rate, Some(0.3));
        assert_eq!(m.mean_read_us, 2000.0);
        assert_eq!(m.waste, Some(0.2));
        // A reload started the counters again.
        let m = measure(&b, &a);
        assert_eq!(m.reads, 100);
        assert_eq!(measure(&a, &a).hit_rate, None);
    }

    #[test]
    fn block_stat() {
        assert_eq!(
            parse_blk_stat("     363        0    26904      417       6 0 12288 3 0 100 420 0 0 0 0 0 0"),
            Some((363, 417))
        );
        assert_eq!(parse_blk_stat("1 2"), None);
        assert_eq!(parse_blk_stat(""), None);
    }

    #[test]
    fn control_file_next_to_the_state() {
        assert_eq!(
            control_path("/run/foresight/daemon.json"),
            PathBuf::from("/run/foresight/engine-policy")
        );
    }

    /// A switch is reported at once, `off` too (it has no decision for
    /// `foresight policy engine off` to wait for); a rewrite of the same
    /// policy, or garbage, is not a switch.
    #[test]
    fn switches_are_reported_off_too() {
        let dir = std::env::temp_dir().join(format!("fs-engine-switch-{}", std::process::id()));
        let state = dir.join("daemon.json");
        let state = state.to_str().unwrap();
        let o = Opts {
            engine: Some(Policy::Throughput),
            ..defaults()
        };
        let mut r = Runner::new(&o, state, Duration::from_millis(200));
        assert!(r.report().is_some());
        let mut logged = Vec::new();
        let ctl = control_path(state);
        // The file's time must change for the engine to read it again.
        let touch = |text: &str, secs: u64| {
            write_control_text(&ctl, text).unwrap();
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            std::fs::File::options()
                .write(true)
                .open(&ctl)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        touch("throughput", 1);
        let mut poll = |r: &mut Runner| r.poll_control(&mut |m: &str| logged.push(m.to_string()));
        assert!(!poll(&mut r), "the same policy");
        touch("sideways", 2);
        assert!(!poll(&mut r), "garbage");
        touch("off", 3);
        assert!(poll(&mut r), "off");
        assert!(r.report().is_none());
        touch("fair", 4);
        assert!(poll(&mut r), "on again");
        assert_eq!(r.report().map(|r| r.policy), Some("fair".to_string()));
        assert!(
            logged.iter().any(|m| m.contains("throughput -> off")),
            "{logged:?}"
        );
        assert!(logged.iter().any(|m| m.contains("sideways")), "{logged:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
