// SPDX-License-Identifier: GPL-2.0
//! `foresight daemon`: learn the access patterns of foresight devices from
//! their traces and push predictions back.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foresight_predict::gru::{GruConfig, GruPredictor};
use foresight_predict::heat::{HeatMap, RegionHeat};
use foresight_predict::{
    combine, predictor_by_name, Op, Prediction, Predictor, Score, PREDICTOR_NAMES,
};
use serde::{Deserialize, Serialize};

use super::predict::{self, probability_to_fixed, Kind, Range};
use super::status::dev_get;
use super::trace::TraceMsg;
use super::{exit, stop_flag, stopped, CmdResult, Failure};
use crate::dev::{DevNum, DevSpec};
use crate::nl::{Client, Event, Listener};
use crate::uapi;

/// Ranges asked of the predictor per call, as `foresight eval` asks (the
/// cost it measures); a push merges the calls of its interval.
const PER_CALL: usize = foresight_predict::cachesim::MAX_PREDICTIONS;

/// The least probability of a prediction the daemon pushes by default.
pub const DEFAULT_MIN_PROBABILITY: f64 = 0.02;

/// The options of `foresight daemon`.
#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Devices to serve (default: every foresight device)
    #[arg(value_name = "DEV")]
    pub devs: Vec<String>,
    /// Milliseconds between pushes of predictions
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub interval_ms: u64,
    /// Most predictions per device and push (what the predictor said after
    /// each access of the interval, merged; one request of the kernel's
    /// batch by default)
    #[arg(long, default_value_t = crate::uapi::MAX_RANGES, value_name = "N")]
    pub max_predictions: usize,
    /// Least probability of a prediction pushed (0..1): `auto`'s
    /// probabilities are calibrated, and on the shared real traces `eval`
    /// finds it furthest ahead of readahead at equal volume at 0.02 (behind
    /// it on some at 0.2)
    #[arg(long, default_value_t = DEFAULT_MIN_PROBABILITY, value_name = "P")]
    pub min_probability: f64,
    /// Stop after this many seconds
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Append the log to this file instead of standard error
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<String>,
    /// The predictor served: `auto` (the online choice: a calibrated mix
    /// of readahead both ways, streams, strides and read-back of writes,
    /// each scored live), or one
    /// of the others `foresight eval` lists
    #[arg(long, default_value = "auto", value_name = "NAME",
          value_parser = clap::builder::PossibleValuesParser::new(PREDICTOR_NAMES))]
    pub predictor: String,
    /// Share of one core the daemon may spend asking its predictors after
    /// each access (what `foresight eval` measures); beyond it, they are
    /// asked once per push only
    #[arg(long, default_value_t = 0.05, value_name = "SHARE")]
    pub predict_cpu_share: f64,
    /// Where the daemon keeps each device's predictor and live scores for
    /// `foresight status` (written after each push; root only)
    #[arg(long, default_value = STATE_FILE, value_name = "FILE")]
    pub state_file: String,
    /// `DEV=SHADOW[,HEATFILE]`: each push's read predictions of foresight
    /// device DEV (stacked on foreshadow device SHADOW, on a post-copy's
    /// destination) also become SHADOW's hints, so its hydration follows
    /// the live trace; then the ranges of HEATFILE (`foresight heat`
    /// lines: the source's heat map), which the live ones come before
    #[arg(long, value_name = "DEV=SHADOW[,HEATFILE]", value_parser = parse_shadow)]
    pub shadow: Vec<ShadowLink>,
    #[command(flatten)]
    pub engine: super::engine::Opts,
    #[command(flatten)]
    pub training: super::training::Opts,
}

/// `--shadow`: a foresight device's predictions hint a foreshadow device.
#[derive(Debug, Clone)]
pub struct ShadowLink {
    pub dev: String,
    pub shadow: DevSpec,
    /// The heat map's ranges, sent after the live predictions.
    pub heat: Vec<Range>,
}

fn parse_shadow(s: &str) -> Result<ShadowLink, String> {
    let (dev, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("{s}: want DEV=SHADOW[,HEATFILE]"))?;
    let (shadow, heat) = match rest.split_once(',') {
        Some((sh, f)) => {
            let t = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
            (
                sh,
                predict::parse_input(t.as_bytes()).map_err(|e| format!("{f}: {e}"))?,
            )
        }
        None => (rest, Vec::new()),
    };
    Ok(ShadowLink {
        dev: dev.to_string(),
        shadow: DevSpec::parse(shadow).map_err(|e| e.to_string())?,
        heat,
    })
}

/// The default `--state-file`.
pub const STATE_FILE: &str = "/run/foresight/daemon.json";

/// What the daemon tells `foresight status` (its `--state-file`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The daemon's process id: the state is stale once it is gone.
    pub pid: u32,
    /// When this was written, seconds since the epoch.
    pub updated: f64,
    pub devices: Vec<DevScores>,
    /// The policy engine's last decision (none while it is off).
    #[serde(default)]
    pub engine: Option<super::engine::Report>,
}

/// One device's predictor and its live scores.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DevScores {
    pub name: String,
    /// `dev_t` as the kernel encodes it.
    pub dev: Option<u32>,
    pub predictor: String,
    /// Each member's live coverage and precision (see `foresight eval`).
    pub scores: Vec<LiveScore>,
    /// Accesses learnt from.
    pub accesses: u64,
    /// Ranges pushed, and accepted by the kernel.
    pub pushed: u64,
    pub accepted: u64,
    /// The hottest regions (at most [`HEAT_REGIONS`]; see `foresight heat`).
    #[serde(default)]
    pub heat: Vec<RegionHeat>,
}

/// Regions of each device's heat map in the state file.
pub const HEAT_REGIONS: usize = 4096;

/// Least time between two writes of the state file.
const STATE_EVERY: Duration = Duration::from_secs(1);

/// A predictor's live coverage and precision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveScore {
    pub name: String,
    pub coverage: f64,
    pub precision: f64,
}

impl From<&Score> for LiveScore {
    fn from(s: &Score) -> Self {
        LiveScore {
            name: s.name.to_string(),
            coverage: s.coverage,
            precision: s.precision,
        }
    }
}

impl State {
    /// Writes the state to `path` (replaced whole, mode 0600).
    pub fn save(&self, path: &str) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::path::Path::new(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(io::Error::other)?)?;
        drop(f);
        std::fs::rename(&tmp, path)
    }

    /// The state at `path`, if it is there, readable, and its daemon runs.
    pub fn load(path: &str) -> Option<State> {
        let s: State = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        std::path::Path::new(&format!("/proc/{}", s.pid))
            .exists()
            .then_some(s)
    }
}

/// `2024-05-01T12:34:56.789Z` (RFC 3339, UTC, milliseconds).
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

struct Logger {
    out: Box<dyn Write>,
}

impl Logger {
    fn log(&mut self, msg: &str) {
        let _ = writeln!(self.out, "{} {msg}", format_time(SystemTime::now()));
        let _ = self.out.flush();
    }
}

/// A device the daemon predicts for.
struct DevState {
    name: String,
    dev: Option<u32>,
    model: Box<dyn Predictor>,
    /// Predictions made after single accesses since the last push.
    between: Vec<Prediction>,
    heat: HeatMap,
    /// Accesses observed, ranges pushed and accepted.
    accesses: u64,
    pushed: u64,
    accepted: u64,
    /// Records observed since the last push.
    fresh: u64,
    dropped: Option<u64>,
    /// Size in sectors (predictions are cut to it); asked for with
    /// dev-get before the first push.
    sectors: Option<u64>,
    /// Whether its model's training runs (paused while it is quiet).
    pacer: super::training::Pacer,
}

impl DevState {
    /// A device first seen, served by predictor `predictor`.
    fn new(name: String, dev: Option<u32>, predictor: &str) -> Self {
        DevState {
            name,
            dev,
            model: daemon_predictor(predictor),
            between: Vec::new(),
            heat: HeatMap::default(),
            accesses: 0,
            pushed: 0,
            accepted: 0,
            fresh: 0,
            dropped: None,
            sectors: None,
            pacer: Default::default(),
        }
    }

    fn label(&self) -> String {
        match self.dev {
            Some(d) => format!("{} ({})", self.name, DevNum::decode(d)),
            None => self.name.clone(),
        }
    }

    fn scores(&self) -> DevScores {
        DevScores {
            name: self.name.clone(),
            dev: self.dev,
            predictor: self.model.name().to_string(),
            scores: self.model.scores().iter().map(LiveScore::from).collect(),
            accesses: self.accesses,
            pushed: self.pushed,
            accepted: self.accepted,
            heat: self
                .heat
                .hottest(None, foresight_predict::heat::HALF_LIFE_S, HEAT_REGIONS)
                .into_iter()
                .map(|(h, _)| h)
                .collect(),
        }
    }

    fn spec(&self) -> DevSpec {
        match self.dev {
            Some(d) => DevSpec::Num(DevNum::decode(d)),
            None => DevSpec::Name(self.name.clone()),
        }
    }
}

/// A device named on the command line.
struct Watch {
    spec: DevSpec,
    name: Option<String>,
    dev: Option<u32>,
}

impl Watch {
    fn matches(&self, t: &TraceMsg) -> bool {
        (self.dev.is_some() && t.dev == self.dev)
            || (self.name.is_some() && t.name == self.name)
            || self.spec.matches(t.name.as_deref(), t.dev)
    }
}

/// The ranges of each kind to push: predictions of at least `min`
/// probability, reads and writes apart.
pub fn split_predictions(preds: &[Prediction], min: f64) -> (Vec<Range>, Vec<Range>) {
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    for p in preds {
        if p.probability.is_nan() || p.probability < min || p.sectors == 0 {
            continue;
        }
        if p.start.checked_add(p.sectors).is_none() {
            continue;
        }
        let r = Range {
            start: p.start,
            length: p.sectors,
            probability: probability_to_fixed(p.probability),
        };
        match p.op {
            Op::Read => reads.push(r),
            Op::Write | Op::WriteZeroes => writes.push(r),
            _ => {}
        }
    }
    (reads, writes)
}

fn e_is(e: &Failure, errno: i32) -> bool {
    matches!(e, Failure::Nl(e) if e.errno() == Some(errno))
}

enum Push {
    Done,
    Gone,
}

fn push_device(
    client: &mut Client,
    st: &mut DevState,
    o: &Opts,
    log: &mut Logger,
) -> Result<Push, Failure> {
    let records = std::mem::take(&mut st.fresh);
    if st.sectors.is_none() {
        match dev_get(client, &st.spec()) {
            Ok(info) => st.sectors = info.sectors,
            Err(Failure::Nl(e)) if e.errno() == Some(libc::ENODEV) => return Ok(Push::Gone),
            Err(e) => {
                log.log(&format!("{}: push failed: {e}", st.name));
                return Ok(Push::Done);
            }
        }
    }
    // The kernel refuses a batch with a range past the end of the device.
    let size = st.sectors;
    let clip = |v: Vec<Prediction>| -> Vec<Prediction> {
        match size {
            Some(n) => v.into_iter().filter_map(|p| p.clip(n)).collect(),
            None => v,
        }
    };
    let mut sets = vec![st.model.predict(PER_CALL)];
    sets.push(std::mem::take(&mut st.between));
    let predicted = clip(combine(sets, o.max_predictions));
    st.heat
        .predicted(&predicted, o.interval_ms.saturating_mul(1_000_000));
    let (reads, writes) = split_predictions(&predicted, o.min_probability);
    if reads.is_empty() && writes.is_empty() {
        return Ok(Push::Done);
    }
    let horizon = u32::try_from(o.interval_ms).unwrap_or(u32::MAX).max(1);
    let spec = st.spec();
    let mut accepted = 0u64;
    for (kind, ranges) in [(Kind::Read, &reads), (Kind::Write, &writes)] {
        if ranges.is_empty() {
            continue;
        }
        match predict::push(client, &spec, kind, Some(horizon), ranges) {
            Ok(n) => accepted += n,
            Err(Failure::Nl(e)) if e.errno() == Some(libc::ENODEV) => return Ok(Push::Gone),
            Err(Failure::Nl(e)) if e.errno() == Some(libc::EPERM) => return Err(Failure::Nl(e)),
            Err(e) => {
                if e_is(&e, libc::ERANGE) {
                    // The device may have been resized: ask again.
                    st.sectors = None;
                }
                log.log(&format!("{}: push failed: {e}", st.name));
                return Ok(Push::Done);
            }
        }
    }
    if let Some(link) = o.shadow.iter().find(|l| l.dev == st.name) {
        hint_shadow(client, link, &reads, log);
    }
    st.pushed += (reads.len() + writes.len()) as u64;
    st.accepted += accepted;
    let scores: Vec<String> = st
        .model
        .scores()
        .iter()
        .map(|s| format!("{}={:.3}/{:.3}", s.name, s.coverage, s.precision))
        .collect();
    log.log(&format!(
        "{} read={} write={} accepted={accepted} records={records} {}: {}",
        st.name,
        reads.len(),
        writes.len(),
        st.model.name(),
        scores.join(" "),
    ));
    Ok(Push::Done)
}

/// `--shadow`: the live read predictions, then the heat map, as the
/// shadow's hints (which replace the last ones).
fn hint_shadow(client: &mut Client, link: &ShadowLink, reads: &[Range], log: &mut Logger) {
    if reads.is_empty() {
        return;
    }
    let mut ranges = reads.to_vec();
    ranges.extend_from_slice(&link.heat);
    ranges.truncate(crate::uapi::MAX_RANGES);
    if let Err(e) = super::shadow::hint(client, &link.shadow, &ranges) {
        log.log(&format!("{}: hints to its shadow failed: {e}", link.dev));
    }
}

/// The CPU time the daemon may spend on asking its predictors after each
/// access: a share of elapsed time, credited as it passes (at most 200 ms
/// ahead), spent as measured on this thread.
struct Budget {
    credit_ns: f64,
    at: Instant,
}

impl Budget {
    fn new() -> Self {
        Budget {
            credit_ns: 0.0,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, share: f64) {
        let now = Instant::now();
        let dt = now.duration_since(self.at).as_nanos() as f64;
        self.credit_ns = (self.credit_ns + share * dt).min(200e6);
        self.at = now;
    }
}

/// Learns from `records`, asking the predictor after each access while the
/// budget lasts (its predictions go with the next push).
fn learn(st: &mut DevState, records: &[foresight_predict::Access], budget: &mut Budget, o: &Opts) {
    for a in records {
        st.model.observe(a);
        st.heat.observe(a);
        budget.refill(o.predict_cpu_share);
        if budget.credit_ns > 0.0 {
            let t0 = cpu_time::ThreadTime::now();
            let p = st.model.predict(PER_CALL);
            budget.credit_ns -= t0.elapsed().as_nanos() as f64;
            st.between.extend(p);
            // Merged when it grows, not at every access (and at the push).
            if st.between.len() > 4 * o.max_predictions {
                let between = std::mem::take(&mut st.between);
                st.between = combine(vec![between], o.max_predictions);
            }
        }
    }
}

/// How far behind the kernel's trace the daemon reads, since the last
/// report.
struct Lag {
    /// Records read, and those the models skipped.
    records: u64,
    skipped: u64,
    /// The most a message's newest record had waited when read (ns).
    worst_ns: u64,
    /// CPU time spent learning.
    learning: Duration,
    /// When the period began, and the thread's CPU time then.
    since: Instant,
    cpu_since: Duration,
}

impl Lag {
    fn new() -> Self {
        Lag {
            records: 0,
            skipped: 0,
            worst_ns: 0,
            learning: Duration::ZERO,
            since: Instant::now(),
            cpu_since: cpu_time::ThreadTime::now().as_duration(),
        }
    }

    /// A record read later than this after its I/O was submitted, with
    /// more notifications queued behind it, is too late to learn from:
    /// what a model would predict from it has happened, and learning would
    /// put the daemon further behind.  While the daemon is that far behind
    /// (a loaded host, a burst of I/O), its models skip whole messages
    /// until it has caught up; the engine's curves and the heat map still
    /// take every record.  (Records the kernel delivered late to a daemon
    /// with nothing queued are learned from: the delay is not its own.)
    fn limit_ns(interval: Duration) -> u64 {
        let limit = (interval * 5).max(Duration::from_secs(1));
        u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a message whose newest record was submitted at `newest_ns`
    /// is too late to learn from, now, `backlog` telling whether more were
    /// queued when it was read.
    fn late(&mut self, newest_ns: u64, records: usize, limit_ns: u64, backlog: bool) -> bool {
        self.late_at(
            crate::nl::monotonic_ns(),
            newest_ns,
            records,
            limit_ns,
            backlog,
        )
    }

    fn late_at(
        &mut self,
        now_ns: u64,
        newest_ns: u64,
        records: usize,
        limit_ns: u64,
        backlog: bool,
    ) -> bool {
        let waited = now_ns.saturating_sub(newest_ns);
        self.records += records as u64;
        self.worst_ns = self.worst_ns.max(waited);
        let late = backlog && waited > limit_ns;
        if late {
            self.skipped += records as u64;
        }
        late
    }

    /// The report for the log, if the models skipped any record.
    fn take_report(&mut self) -> Option<String> {
        let learned = self.records - self.skipped;
        let elapsed = self.since.elapsed().as_secs_f64().max(1e-3);
        let cpu = cpu_time::ThreadTime::now().as_duration().saturating_sub(self.cpu_since);
        let r = (self.skipped > 0).then(|| {
            format!(
                "behind the trace: the models learned from {learned} of {} records (read up to {} ms after their I/O; learning {:.0}% of the time, {} us CPU per record; the thread on CPU {:.0}%)",
                self.records,
                self.worst_ns / 1_000_000,
                100.0 * self.learning.as_secs_f64() / elapsed,
                self.learning.as_micros() / u128::from(learned.max(1)),
                100.0 * cpu.as_secs_f64() / elapsed
            )
        });
        *self = Lag::new();
        r
    }
}

/// A new predictor `name` as the daemon runs it: the recurrent model trains
/// in a thread of its own, its CPU share measured against elapsed time.
fn daemon_predictor(name: &str) -> Box<dyn Predictor> {
    if name == "gru" {
        let cfg = GruConfig {
            threaded: true,
            ..GruConfig::default()
        };
        Box::new(GruPredictor::with_config(cfg).expect("the default configuration is valid"))
    } else {
        predictor_by_name(name).expect("a known predictor")
    }
}

/// Writes every device's predictor and scores to `--state-file`; a failure
/// is logged once.
fn save_state(
    devices: &HashMap<String, DevState>,
    engine: Option<super::engine::Report>,
    o: &Opts,
    log: &mut Logger,
    failed: &mut bool,
) {
    let mut list: Vec<DevScores> = devices.values().map(DevState::scores).collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let state = State {
        pid: std::process::id(),
        updated: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64(),
        devices: list,
        engine,
    };
    match state.save(&o.state_file) {
        Ok(()) => *failed = false,
        Err(e) if !*failed => {
            *failed = true;
            log.log(&format!("cannot write {}: {e}", o.state_file));
        }
        Err(_) => {}
    }
}

/// The daemon's loop, until `stop` or the duration is over.
fn serve(
    listener: &mut Listener,
    client: &mut Client,
    watches: &[Watch],
    o: &Opts,
    log: &mut Logger,
    stop: &AtomicBool,
) -> Result<(), Failure> {
    let interval = Duration::from_millis(o.interval_ms);
    let started = Instant::now();
    let deadline = o.duration.map(|d| started + Duration::from_secs_f64(d));
    let mut next_push = started + interval;
    let mut devices: HashMap<String, DevState> = HashMap::new();
    let mut overruns = 0u64;
    let mut lag = Lag::new();
    let late_ns = Lag::limit_ns(interval);
    let mut overrun_logged = started;
    let mut pushed = false;
    let mut state_failed = false;
    let mut budget = Budget::new();
    let mut saved: Option<Instant> = None;
    let mut engine = super::engine::Runner::new(&o.engine, &o.state_file, interval);

    while !stopped(stop) {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if now >= next_push {
            let mut gone = Vec::new();
            let mut keys: Vec<&String> = devices.keys().collect();
            keys.sort();
            let keys: Vec<String> = keys.into_iter().cloned().collect();
            for k in keys {
                let st = devices.get_mut(&k).expect("device");
                let (dt, min) = (interval.as_secs_f64(), o.training.train_min_rate);
                let changed = st.pacer.sample(st.fresh, dt, min);
                if let Some(paused) = changed.filter(|&p| st.model.pause_training(p)) {
                    log.log(&format!(
                        "{}: {} ({:.1} accesses/s)",
                        st.name,
                        if paused { "quiet, training paused" } else { "training resumed" },
                        st.pacer.rate()
                    ));
                }
                if st.fresh == 0 {
                    continue;
                }
                if let Push::Gone = push_device(client, st, o, log)? {
                    gone.push(k);
                }
                pushed = true;
            }
            for k in gone {
                if let Some(st) = devices.remove(&k) {
                    log.log(&format!("device {} disappeared", st.label()));
                }
            }
            // The engine's decision is saved at once: `foresight policy
            // engine` waits for it.
            let decided = engine.tick(client, &mut |m: &str| log.log(m));
            if decided
                || (pushed && saved.is_none_or(|t| now.duration_since(t) >= STATE_EVERY))
            {
                pushed = false;
                saved = Some(now);
                save_state(&devices, engine.report(), o, log, &mut state_failed);
            }
            next_push += interval;
            if next_push <= now {
                next_push = now + interval;
            }
            if now.duration_since(overrun_logged) >= Duration::from_secs(10) {
                if overruns > 0 {
                    log.log(&format!(
                        "trace notifications lost: {overruns} socket overruns"
                    ));
                    overruns = 0;
                }
                if let Some(r) = lag.take_report() {
                    log.log(&r);
                }
                overrun_logged = now;
            }
            continue;
        }
        let mut wait = next_push - now;
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_duration_since(now));
        }
        match listener.wait(wait)? {
            Event::Timeout => {}
            Event::Overrun => overruns += 1,
            Event::Messages(msgs) => {
                let backlog = listener.pending();
                for m in msgs {
                    let Ok(Some(t)) = TraceMsg::from_reply(&m) else {
                        continue;
                    };
                    if !watches.is_empty() && !watches.iter().any(|w| w.matches(&t)) {
                        continue;
                    }
                    let key = match (t.dev, &t.name) {
                        (Some(d), _) => format!("#{d}"),
                        (None, Some(n)) => n.clone(),
                        (None, None) => continue,
                    };
                    let new = !devices.contains_key(&key);
                    let st = devices.entry(key).or_insert_with(|| {
                        let name = t
                            .name
                            .clone()
                            .unwrap_or_else(|| DevNum::decode(t.dev.unwrap_or(0)).to_string());
                        DevState::new(name, t.dev, &o.predictor)
                    });
                    if new {
                        log.log(&format!("device {} appeared", st.label()));
                    }
                    engine.observe(t.dev, &st.name, &t.records);
                    let newest = t.records.iter().map(|a| a.ts_ns).max().unwrap_or(u64::MAX);
                    if lag.late(newest, t.records.len(), late_ns, backlog) {
                        t.records.iter().for_each(|a| st.heat.observe(a));
                    } else {
                        let t0 = cpu_time::ThreadTime::now();
                        learn(st, &t.records, &mut budget, o);
                        lag.learning += t0.elapsed();
                    }
                    st.fresh += t.records.len() as u64;
                    st.accesses += t.records.len() as u64;
                    match (st.dropped, t.dropped) {
                        (None, Some(d)) => st.dropped = Some(d),
                        (Some(old), Some(d)) if d > old => {
                            log.log(&format!(
                                "{}: the kernel dropped {} trace records",
                                st.name,
                                d - old
                            ));
                            st.dropped = Some(d);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    if overruns > 0 {
        log.log(&format!(
            "trace notifications lost: {overruns} socket overruns"
        ));
    }
    if let Some(r) = lag.take_report() {
        log.log(&r);
    }
    log.log(&format!(
        "stopped ({})",
        if stopped(stop) {
            "signal"
        } else {
            "duration over"
        }
    ));
    Ok(())
}

pub fn run(o: &Opts) -> CmdResult {
    if !(0.0..=1.0).contains(&o.min_probability) {
        return Err(format!(
            "--min-probability must be in 0..1, not {}",
            o.min_probability
        )
        .into());
    }
    if o.interval_ms == 0 {
        return Err("--interval-ms must be at least 1".to_string().into());
    }
    o.engine.check()?;
    if !(o.training.train_min_rate >= 0.0 && o.training.train_min_rate.is_finite()) {
        return Err(format!(
            "--train-min-rate must be a number of accesses per second, not {}",
            o.training.train_min_rate
        )
        .into());
    }
    if !(0.0..=1.0).contains(&o.predict_cpu_share) {
        return Err(format!(
            "--predict-cpu-share must be in 0..1, not {}",
            o.predict_cpu_share
        )
        .into());
    }
    if let Some(d) = o.duration {
        if !(d > 0.0 && d.is_finite()) {
            return Err(format!("--duration must be a positive number of seconds, not {d}").into());
        }
    }
    let specs = o
        .devs
        .iter()
        .map(|d| DevSpec::parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    let out: Box<dyn Write> = match &o.log_file {
        Some(f) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .map_err(|e| format!("{f}: {e}"))?,
        ),
        None => Box::new(io::stderr()),
    };
    let mut log = Logger { out };
    if let Some(dir) = super::training::setup(&o.training)? {
        log.log(&format!(
            "training threads in {} (cpu.max {}, cpus {})",
            dir.display(),
            o.training
                .model_cpu_pct
                .map_or("max".to_string(), |p| format!("{p}% of one CPU")),
            o.training.model_cpus.as_deref().unwrap_or("all")
        ));
    }
    let stop = stop_flag()?;
    let mut listener = Listener::subscribe(uapi::MCGRP_TRACE)?;
    let mut client = Client::with_family(listener.family())?;

    let mut watches = Vec::new();
    for spec in specs {
        let mut w = Watch {
            spec,
            name: None,
            dev: None,
        };
        match dev_get(&mut client, &w.spec) {
            Ok(info) => {
                w.name = info.name;
                w.dev = info.dev;
            }
            Err(Failure::Nl(e)) if e.errno() == Some(libc::ENODEV) => {
                log.log(&format!(
                    "{}: not present (yet); waiting for its traces",
                    w.spec
                ));
            }
            Err(e) => return Err(e),
        }
        watches.push(w);
    }
    log.log(&format!(
        "started: {} (predictor {}, interval {} ms, at most {} predictions of probability >= {}; receive buffer {} KiB)",
        if watches.is_empty() {
            "all foresight devices".to_string()
        } else {
            format!(
                "devices {}",
                o.devs.join(", ")
            )
        },
        o.predictor,
        o.interval_ms,
        o.max_predictions,
        o.min_probability,
        listener.rcvbuf / 1024
    ));

    serve(&mut listener, &mut client, &watches, o, &mut log, &stop)?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // leap day 2024
        assert_eq!(format_time(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_time(t), "2000-02-29T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(format_time(t), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn split() {
        let p = |start, sectors, probability, op| Prediction {
            start,
            sectors,
            probability,
            op,
        };
        let preds = vec![
            p(0, 8, 0.9, Op::Read),
            p(8, 8, 0.1, Op::Read),
            p(16, 8, 0.5, Op::Write),
            p(24, 0, 0.9, Op::Read),
            p(32, 8, f64::NAN, Op::Read),
            p(40, 8, 0.7, Op::Flush),
            p(u64::MAX, 8, 0.7, Op::Read),
            p(48, 8, 1.5, Op::WriteZeroes),
        ];
        let (r, w) = split_predictions(&preds, 0.2);
        assert_eq!(
            r,
            vec![Range {
                start: 0,
                length: 8,
                probability: 900_000
            }]
        );
        assert_eq!(
            w,
            vec![
                Range {
                    start: 16,
                    length: 8,
                    probability: 500_000
                },
                Range {
                    start: 48,
                    length: 8,
                    probability: 1_000_000
                },
            ]
        );
    }

    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The loop through the kernel, with notifications of a made-up family
    /// (see `nl::fake`); pushes go to that family too, which the kernel
    /// does not know (ENOENT), so they are logged as failed.
    #[test]
    fn serve_through_the_kernel() {
        use crate::nl::fake;
        const GROUP: u32 = 29;
        let Some((mut l, tx)) = fake::setup(GROUP) else {
            return;
        };
        let mut client = Client::with_family(fake::FAMILY).unwrap();
        // Submitted now: a live trace, not one the daemon is behind.
        let now = crate::nl::monotonic_ns();
        let recs: Vec<u8> = (0..64u64)
            .flat_map(|i| {
                let mut r = Vec::new();
                r.extend_from_slice(&(now + 1000 * i).to_ne_bytes());
                r.extend_from_slice(&(8 * i).to_ne_bytes());
                r.extend_from_slice(&8u32.to_ne_bytes());
                r.extend_from_slice(&[uapi::op::READ, 0, 0, 0]);
                r
            })
            .collect();
        tx.send(&fake::trace_ntf("vm1", 0xfd03, &recs, 4)).unwrap();
        tx.send(&fake::trace_ntf("vm2", 0xfd04, &recs, 0)).unwrap();
        tx.send(&fake::trace_ntf("vm1", 0xfd03, &[], 6)).unwrap();
        let state =
            std::env::temp_dir().join(format!("foresight-state-{}/d.json", std::process::id()));
        let out = Shared::default();
        let mut log = Logger {
            out: Box::new(out.clone()),
        };
        let o = Opts {
            devs: vec!["vm1".into()],
            interval_ms: 100,
            max_predictions: 16,
            min_probability: 0.0,
            duration: Some(0.5),
            log_file: None,
            predictor: "auto".into(),
            predict_cpu_share: 0.0,
            state_file: state.to_str().unwrap().into(),
            shadow: Vec::new(),
            engine: super::super::engine::defaults(),
            training: super::super::training::defaults(),
        };
        let watches = vec![Watch {
            spec: DevSpec::Name("vm1".into()),
            name: Some("vm1".into()),
            dev: Some(0xfd03),
        }];
        let stop = AtomicBool::new(false);
        assert!(serve(&mut l, &mut client, &watches, &o, &mut log, &stop).is_ok());
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().map(|l| &l[25..]).collect();
        assert_eq!(lines[0], "device vm1 (253:3) appeared", "{text}");
        assert_eq!(
            lines[1], "vm1: the kernel dropped 2 trace records",
            "{text}"
        );
        assert!(
            lines[2].starts_with("vm1: push failed: dev-get: ") && lines[2].ends_with("(ENOENT)"),
            "{text}"
        );
        assert_eq!(*lines.last().unwrap(), "stopped (duration over)", "{text}");
        assert!(!text.contains("vm2"), "{text}");
        assert_eq!(lines.len(), 4, "{text}");
        // The state status reads: vm1 only, its predictor and live scores.
        let st = State::load(state.to_str().unwrap()).expect("state written");
        std::fs::remove_dir_all(state.parent().unwrap()).unwrap();
        assert_eq!(st.pid, std::process::id());
        assert_eq!(st.devices.len(), 1, "{st:?}");
        let d = &st.devices[0];
        assert_eq!(
            (d.name.as_str(), d.dev, d.predictor.as_str()),
            ("vm1", Some(0xfd03), "auto")
        );
        assert_eq!(d.accesses, 64);
        let names: Vec<&str> = d.scores.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert!(
            names.contains(&"lookahead") && names.contains(&"readback"),
            "{names:?}"
        );
    }

    fn dev_state() -> DevState {
        DevState::new("vm1".into(), None, "auto")
    }

    fn opts(share: f64) -> Opts {
        Opts {
            devs: vec![],
            interval_ms: 200,
            max_predictions: 256,
            min_probability: 0.0,
            duration: None,
            log_file: None,
            predictor: "auto".into(),
            predict_cpu_share: share,
            state_file: String::new(),
            shadow: Vec::new(),
            engine: super::super::engine::defaults(),
            training: super::super::training::defaults(),
        }
    }

    /// Within its budget the daemon asks after each access, as `eval`
    /// does: what the model said after an earlier access of the interval is
    /// pushed too (here: the blocks after a read that a later read left).
    #[test]
    fn predictions_after_each_access_within_the_budget() {
        let read = |b: u64| foresight_predict::Access {
            ts_ns: b,
            sector: b * 8,
            sectors: 8,
            op: Op::Read,
        };
        // Sequential runs at 100 and 5000: the lookahead bands earn their
        // odds; then one read at 100 000, and a run of 100 reads elsewhere
        // (more than the model keeps between two calls).
        let mut records: Vec<_> = (100..400).chain(5000..5300).map(read).collect();
        records.push(read(100_000));
        records.extend((900_000..900_100).map(read));
        let after = |b: u64| move |p: &Prediction| p.start == (b + 1) * 8;
        let mut st = dev_state();
        let mut budget = Budget::new();
        budget.credit_ns = 1e9;
        learn(&mut st, &records, &mut budget, &opts(1.0));
        assert!(st.between.iter().any(after(100_000)), "{:?}", st.between);
        // Without a budget, only what is asked at the push: the latest.
        let mut st = dev_state();
        let mut budget = Budget::new();
        learn(&mut st, &records, &mut budget, &opts(0.0));
        assert!(st.between.is_empty());
        let now = st.model.predict(256);
        assert!(!now.iter().any(after(100_000)), "{now:?}");
    }

    /// Learning stops only when a message is both late and has more
    /// queued behind it; the report counts what was skipped and clears.
    #[test]
    fn late_records_with_a_backlog_are_not_learned() {
        let limit = Lag::limit_ns(Duration::from_millis(200));
        assert_eq!(limit, 1_000_000_000, "at least a second");
        assert_eq!(Lag::limit_ns(Duration::from_millis(400)), 2_000_000_000);
        let mut lag = Lag::new();
        let s = 1_000_000_000u64;
        assert!(!lag.late_at(10 * s, 9 * s + 1, 5, limit, true), "in time");
        assert!(
            !lag.late_at(10 * s, 8 * s, 5, limit, false),
            "late, nothing queued"
        );
        assert!(
            lag.late_at(10 * s, 8 * s, 7, limit, true),
            "late and behind"
        );
        assert!(
            !lag.late_at(10 * s, 11 * s, 1, limit, true),
            "a clock ahead is in time"
        );
        let r = lag.take_report().expect("a report");
        assert!(
            r.contains("learned from 11 of 18 records (read up to 2000 ms after their I/O"),
            "{r}"
        );
        assert_eq!(lag.take_report(), None, "cleared");
        lag.late_at(10 * s, 8 * s, 3, limit, false);
        assert_eq!(lag.take_report(), None, "nothing skipped");
    }

    #[test]
    fn state_round_trip_and_stale_state() {
        let dir = std::env::temp_dir().join(format!("foresight-state-rt-{}", std::process::id()));
        let path = dir.join("sub/daemon.json");
        let path = path.to_str().unwrap();
        let mut st = State {
            pid: std::process::id(),
            updated: 1.5,
            engine: None,
            devices: vec![DevScores {
                name: "vm1".into(),
                predictor: "auto".into(),
                scores: vec![LiveScore {
                    name: "streams".into(),
                    coverage: 0.5,
                    precision: 0.25,
                }],
                ..Default::default()
            }],
        };
        st.save(path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(State::load(path), Some(st.clone()));
        // A daemon that is gone: no state.
        st.pid = u32::MAX - 1;
        st.save(path).unwrap();
        assert_eq!(State::load(path), None);
        std::fs::write(path, b"garbage").unwrap();
        assert_eq!(State::load(path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
