// SPDX-License-Identifier: GPL-2.0
//! `foresight migrate SRC DEST [SRC DEST ...]`: live pre-copy migration of
//! foresight devices to local block devices or NBD exports.
//!
//! The phases: take ownership of each source's log and pin it at 4 KiB;
//! a bulk pass over the whole device (zero pieces sent as write-zeroes);
//! rounds, each copying the blocks written during the one before, until
//! what is left fits the downtime limit at the measured bandwidth; then the
//! switchover: suspend every source (the guest's I/O waits), copy the last
//! dirty blocks, flush the destinations, commit.  Before the commit any
//! failure or Ctrl-C resumes the sources and discards what was copied; a
//! guard process does the resume if the tool itself dies.  Copies read the
//! origins directly (O_DIRECT), never through the foresight device.

mod dest;
mod dm;
pub mod guard;
pub mod plan;
pub mod postcopy;

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::dirty::{self, Epoch, RotateHow};
use super::policy::Policy;
use super::status::dev_get;
use super::{exit, human_bytes, stop_flag, stopped, unix_ms, CmdResult, Failure};
use crate::blk::{self, AlignedBuf};
use crate::dev::DevSpec;
use crate::nl::Client;
use crate::uapi;
use dest::Dest;
use plan::{Bandwidth, Convergence, Limiter, Next, OnStall};

/// Bytes per copy request.
const PIECE: u64 = 1 << 20;
/// Bytes per discard request (NBD servers cap request sizes).
const DISCARD_PIECE: u64 = 32 << 20;

#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// SRC DEST pairs: SRC a foresight device, DEST a block device or
    /// nbd://HOST[:PORT]/EXPORT (nbds:// for TLS, nbd+unix:///EXPORT?socket=PATH)
    #[arg(required = true, num_args = 2.., value_name = "SRC DEST")]
    pub pairs: Vec<String>,
    /// The downtime to aim for: switch over when the estimated final copy fits it
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub downtime_ms: u64,
    /// Most pre-copy rounds after the bulk pass
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub max_rounds: u32,
    /// When rounds stop shrinking: continue (to --max-rounds, then switch over) or abort
    #[arg(long, value_enum, default_value = "continue")]
    pub on_stall: OnStall,
    /// Copy bandwidth limit, bytes per second (k, M, G suffixes)
    #[arg(long, value_name = "RATE", value_parser = plan::parse_size)]
    pub bandwidth: Option<u64>,
    /// Bulk-pass order: `start_sector length_sectors [score]` lines, hottest first
    #[arg(long, value_name = "FILE")]
    pub order: Option<String>,
    /// Ranges the model predicts will be rewritten soon (`start_sector
    /// length_sectors [score]` lines, likeliest first: `foresight heat --op
    /// write`, `--region-kib 4` for scattered hot blocks): not copied by the
    /// bulk pass or the rounds, but once, at the switchover, the likeliest
    /// as far as half the downtime allows at --bandwidth (else at the bulk
    /// pass's rate), decided again after each pass at the rounds' rate; what
    /// no longer fits goes with the next pass
    #[arg(long, value_name = "FILE", conflicts_with = "stop_and_copy")]
    pub defer: Option<String>,
    /// Run this (sh -c) at the switchover, sources suspended, after the commit
    #[arg(long, value_name = "CMD", conflicts_with = "pause_before_switchover")]
    pub switchover_cmd: Option<String>,
    /// Stop at `ready` (sources suspended, destinations complete) until
    /// `continue` or `abort` on standard input, or SIGUSR1 (continue)
    #[arg(long)]
    pub pause_before_switchover: bool,
    /// Compare source and destination region by region before the commit
    #[arg(long)]
    pub verify: bool,
    /// Take the log over even if another tool owns its rotation
    #[arg(long)]
    pub force: bool,
    /// No pre-copy: suspend the sources first and copy everything while
    /// they are suspended (a cold migration; the baseline `make bench`
    /// measures against)
    #[arg(long)]
    pub stop_and_copy: bool,
    /// TLS: the directory of ca-cert.pem, client-cert.pem and client-key.pem
    /// (default: libnbd's, $HOME/.pki/libnbd or /etc/pki/libnbd)
    #[arg(long, value_name = "DIR")]
    pub tls_certificates: Option<String>,
    /// Seconds an NBD request may take before the copy fails
    #[arg(long, value_name = "S", default_value_t = 30)]
    pub io_timeout: u64,
    /// One JSON object per line on standard output (events, then the report)
    #[arg(long)]
    pub json: bool,
    /// Post-copy: switch over after the bulk pass (or --postcopy-after),
    /// with no rounds; the sources' origins are then served read-only over
    /// NBD at --serve and --handoff tells the destination what it holds
    /// current; served until Ctrl-C or SIGTERM (the destination's
    /// foreshadow target pulls the rest)
    #[arg(long, requires_all = ["serve", "handoff"], conflicts_with_all = ["stop_and_copy", "verify"])]
    pub postcopy: bool,
    /// --postcopy: where to serve the sources (each export named after its
    /// source)
    #[arg(long, value_name = "HOST:PORT", requires = "postcopy")]
    pub serve: Option<String>,
    /// --postcopy: the handoff file to write (for `foresight shadow seed`)
    #[arg(long, value_name = "FILE", requires = "postcopy")]
    pub handoff: Option<String>,
    /// --postcopy: switch over after this many seconds of bulk pass, even
    /// if it is not done
    #[arg(long, value_name = "SECS", requires = "postcopy")]
    pub postcopy_after: Option<f64>,
}

/// Exit statuses of `migrate` (beyond 0 and 1; see the tool's guide).
pub mod status {
    /// Aborted on request (Ctrl-C, SIGTERM, `abort` at ready, a stall under
    /// `--on-stall abort`): the sources run on, the destinations discarded.
    pub const ABORTED: i32 = 4;
    /// The switchover committed but `--switchover-cmd` failed: the sources
    /// stay suspended (resume them only if the destination did not start).
    pub const CMD_FAILED: i32 = 5;
}

/// One SRC DEST pair.
struct Disk {
    name: String,
    spec: DevSpec,
    origin_path: String,
    origin: File,
    size: u64,
    align: u64,
    dest: Dest,
    saved: Policy,
    epoch: u64,
    suspended: bool,
    written: bool,
    /// Post-copy: the byte ranges the bulk pass copied.
    copied: Vec<(u64, u64)>,
    /// `--defer`: byte ranges copied at the switchover only.
    deferred: Vec<(u64, u64)>,
    /// Deferred ranges given back (over budget): the next round copies them.
    pending: Vec<(u64, u64)>,
    /// Written during the bulk pass where it had already copied (listed at
    /// its rotations): the first round copies them.
    rewritten: Vec<(u64, u64)>,
}

impl Disk {
    /// What the next pass owes besides its epoch's extents: the ranges
    /// given back, and those written behind the bulk pass.
    fn undone(&self) -> Vec<(u64, u64)> {
        plan::union(&self.pending, &self.rewritten)
    }
}

/// Progress and events.
struct Report {
    json: bool,
    bar: Option<ProgressBar>,
    start: Instant,
}

impl Report {
    fn event(&self, v: serde_json::Value) {
        if self.json {
            let mut v = v;
            v["t"] = json!(self.start.elapsed().as_secs_f64());
            let out = std::io::stdout();
            let mut o = out.lock();
            let _ = writeln!(o, "{v}").and_then(|_| o.flush());
        }
    }

    fn say(&self, msg: impl AsRef<str>) {
        match &self.bar {
            Some(b) => b.println(format!("foresight migrate: {}", msg.as_ref())),
            None => eprintln!("foresight migrate: {}", msg.as_ref()),
        }
    }

    fn phase(&mut self, name: &str, bytes: u64) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.json {
            return;
        }
        let b = ProgressBar::new(bytes);
        b.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        b.set_prefix(name.to_string());
        self.bar = Some(b);
    }

    fn inc(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }

    fn done(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Why a copy stopped.
enum Stop {
    Interrupted,
    Failed(String),
}

impl From<String> for Stop {
    fn from(s: String) -> Self {
        Stop::Failed(s)
    }
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Self {
        Stop::Failed(f.to_string())
    }
}

/// Running totals.
#[derive(Default)]
struct Totals {
    sent: u64,
    zeroes: u64,
    data_time: Duration,
    data_bytes: u64,
    /// Requests of data (not write-zeroes).
    data_pieces: u64,
    /// Where a copy's time went: waiting for the origin's reads, in the
    /// destination's writes (an NBD client waits for room), in
    /// `--bandwidth`'s waits, and waiting for the destination to answer
    /// every write at the end.
    waits: Waits,
}

/// See [`Totals::waits`].
#[derive(Clone, Copy, Default)]
struct Waits {
    read: Duration,
    write: Duration,
    limit: Duration,
    drain: Duration,
}

impl Waits {
    /// Milliseconds of each since `before`, as JSON.
    fn since(&self, before: &Waits) -> serde_json::Value {
        let ms = |a: Duration, b: Duration| (a - b).as_secs_f64() * 1000.0;
        json!({"read": ms(self.read, before.read), "write": ms(self.write, before.write),
            "limit": ms(self.limit, before.limit), "drain": ms(self.drain, before.drain)})
    }
}

struct Mover {
    stop: Arc<AtomicBool>,
    limiter: Limiter,
    start: Instant,
    buf: AlignedBuf,
    buf2: AlignedBuf,
    totals: Totals,
    /// A copy stops at this time (post-copy's bulk pass).
    deadline: Option<Instant>,
}

/// Origin reads a copy keeps in flight, each on a thread of its own: a
/// pass over scattered extents would otherwise wait for one read per
/// extent before sending it (a disk's latency, or under TCG most of the
/// extent's cost).  Pieces are read ahead in order, each reader taking
/// every `READERS`-th one.
const READERS: usize = 4;
/// Pieces each reader may hold read and queued (one more may wait in its
/// send).
const READ_AHEAD: usize = 2;

/// A piece read from an origin: its data, or `None` when it is all zeroes.
type Read = Result<Option<Vec<u8>>, String>;

impl Mover {
    /// Copies byte ranges of a disk from its origin to its destination,
    /// and waits until the destination has them all: a later pass may
    /// rewrite the same blocks, and an NBD server may reorder requests in
    /// flight. At most `--bandwidth`, whose waits count in the measured
    /// rate (the final copy is limited too).  Pieces are sent in order, so
    /// a copy cut short (`deadline`) has copied a prefix of `ranges`.
    fn copy(&mut self, d: &mut Disk, ranges: &[(u64, u64)], rep: &Report) -> Result<u64, Stop> {
        self.copy_watched(d, ranges, rep, &mut |_| Ok(()))
    }

    /// [`Mover::copy`], calling `tick` with the bytes sent so far after
    /// each piece (a round watches the writers with it).
    fn copy_watched(
        &mut self,
        d: &mut Disk,
        ranges: &[(u64, u64)],
        rep: &Report,
        tick: &mut dyn FnMut(u64) -> Result<(), Stop>,
    ) -> Result<u64, Stop> {
        if stopped(&self.stop) {
            return Err(Stop::Interrupted);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(0);
        }
        let pieces: Vec<(u64, u64)> = plan::pieces(ranges, PIECE).collect();
        let (origin, origin_path) = (&d.origin, d.origin_path.as_str());
        let quit = AtomicBool::new(false);
        let res = std::thread::scope(|s| {
            let mut rxs = Vec::new();
            for first in 0..READERS.min(pieces.len()) {
                let (tx, rx) = mpsc::sync_channel::<Read>(READ_AHEAD);
                let (pieces, quit) = (&pieces, &quit);
                let spawned = std::thread::Builder::new().spawn_scoped(s, move || {
                    let mut buf = AlignedBuf::new();
                    for &(off, len) in pieces.iter().skip(first).step_by(READERS) {
                        if quit.load(Ordering::Relaxed) {
                            return;
                        }
                        let b = buf.get(len as usize);
                        let r = match origin.read_exact_at(b, off) {
                            Err(e) => Err(format!("{origin_path}: read at {off}: {e}")),
                            Ok(()) if b.iter().all(|&x| x == 0) => Ok(None),
                            Ok(()) => Ok(Some(b.to_vec())),
                        };
                        let failed = r.is_err();
                        // The receiver is gone: the copy stopped.
                        if tx.send(r).is_err() || failed {
                            return;
                        }
                    }
                });
                if let Err(e) = spawned {
                    // The readers started so far stop at `quit` or on
                    // their next send.
                    quit.store(true, Ordering::Relaxed);
                    return Err(Stop::Failed(format!("cannot start a reader: {e}")));
                }
                rxs.push(rx);
            }
            let res = self.send(&mut d.dest, &pieces, &rxs, rep, &mut d.written, tick);
            // Readers blocked on a full channel fail their send once the
            // receivers are dropped; the others see `quit`.
            quit.store(true, Ordering::Relaxed);
            drop(rxs);
            res
        });
        let n = res?;
        let t = Instant::now();
        d.dest.drain()?;
        self.totals.data_time += t.elapsed();
        self.totals.waits.drain += t.elapsed();
        Ok(n)
    }

    /// Sends the pieces its readers deliver (piece `i` from reader
    /// `i % READERS`), in order; returns the bytes sent.
    fn send(
        &mut self,
        dest: &mut Dest,
        pieces: &[(u64, u64)],
        rxs: &[mpsc::Receiver<Read>],
        rep: &Report,
        written: &mut bool,
        tick: &mut dyn FnMut(u64) -> Result<(), Stop>,
    ) -> Result<u64, Stop> {
        let mut n = 0;
        for (i, &(off, len)) in pieces.iter().enumerate() {
            if stopped(&self.stop) {
                return Err(Stop::Interrupted);
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            // The data rate's time: waits for every piece's read (a zero
            // piece's read is copy time too: meanwhile the readers read
            // ahead), data pieces' sends and the limiter's waits; not
            // the write-zeroes, which cost no bandwidth.
            let t = Instant::now();
            let data = rxs[i % READERS]
                .recv()
                .map_err(|_| format!("read at {off}: the reader stopped"))??;
            self.totals.waits.read += t.elapsed();
            *written = true;
            match data {
                None => {
                    self.totals.data_time += t.elapsed();
                    let w = Instant::now();
                    dest.zero(off, len, &mut self.buf2)?;
                    self.totals.waits.write += w.elapsed();
                    self.totals.zeroes += len;
                }
                Some(b) => {
                    let w = Instant::now();
                    dest.write(off, b, &mut self.buf2)?;
                    self.totals.waits.write += w.elapsed();
                    let wait = self.limiter.take(self.start.elapsed(), len);
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                        self.totals.waits.limit += wait;
                    }
                    self.totals.data_time += t.elapsed();
                    self.totals.data_bytes += len;
                    self.totals.data_pieces += 1;
                }
            }
            self.totals.sent += len;
            n += len;
            rep.inc(len);
            tick(n)?;
        }
        Ok(n)
    }
}

/// The rest of `migrate`'s state, for the abort path.
struct Run {
    client: Client,
    disks: Vec<Disk>,
    guard: Option<guard::Guard>,
    rep: Report,
}

impl Run {
    /// Puts the sources back as they were: resumed, their log settings
    /// restored; the destinations discarded.
    fn abort(&mut self, why: &str) {
        self.rep.done();
        self.rep.say(format!("aborting: {why}"));
        let mut resumed = true;
        for d in &mut self.disks {
            if d.suspended {
                match dm::resume(&d.name) {
                    Ok(()) => d.suspended = false,
                    Err(e) => {
                        resumed = false;
                        self.rep.say(format!("cannot resume {}: {e}", d.name));
                    }
                }
            }
        }
        if resumed {
            if let Some(g) = &mut self.guard {
                let _ = g.disarm();
            }
        }
        self.restore();
        for d in &mut self.disks {
            if d.written {
                let len = d.size.min(d.dest.size());
                let mut res = Ok(());
                for (off, n) in plan::pieces(&[(0, len)], DISCARD_PIECE) {
                    res = d.dest.discard(off, n);
                    if res.is_err() {
                        break;
                    }
                }
                match res.and_then(|_| d.dest.flush()) {
                    Ok(()) => self.rep.say(format!(
                        "discarded {} on {}",
                        human_bytes(len),
                        d.dest.name()
                    )),
                    Err(e) => self.rep.say(format!(
                        "could not discard the copy on {}: {e}",
                        d.dest.name()
                    )),
                }
            }
        }
        self.rep.event(json!({"event": "aborted", "reason": why}));
    }

    fn restore(&mut self) {
        let mut all = true;
        for d in &self.disks {
            if d.saved.is_empty() {
                continue;
            }
            if let Err(e) =
                self.client
                    .request("policy-set", uapi::cmd::POLICY_SET, d.saved.attrs(&d.spec))
            {
                self.rep.say(format!(
                    "cannot restore the log settings of {}: {e}",
                    d.name
                ));
                all = false;
            }
        }
        if all {
            if let Some(g) = &mut self.guard {
                let _ = g.restored();
            }
        }
    }
}

fn open_disk(client: &mut Client, src: &str, dst: &str, o: &Opts) -> Result<Disk, Failure> {
    let timeout = Duration::from_secs(o.io_timeout.max(1));
    let spec = DevSpec::parse(src)?;
    let info = dev_get(client, &spec)?;
    let name = info
        .name
        .clone()
        .ok_or_else(|| format!("{src}: no device name in dev-get"))?;
    let origin = info
        .origin
        .clone()
        .ok_or_else(|| format!("{src}: no origin in dev-get"))?;
    let origin_path = dev_path(&origin);
    let sectors = info
        .sectors
        .ok_or_else(|| format!("{src}: no size in dev-get"))?;
    let size = sectors * plan::SECTOR;
    let of = blk::open_direct(&origin_path, false)
        .map_err(|e| format!("{origin_path} (origin of {name}): {e}"))?;
    let (oblock, _) = blk::geometry(&of).map_err(|e| format!("{origin_path}: {e}"))?;
    let dest = Dest::open(dst, timeout, o.tls_certificates.as_deref())?;
    if dest.size() < size {
        return Err(format!(
            "{dst} holds {} bytes, {name} has {size}: the destination is too small",
            dest.size()
        )
        .into());
    }
    let align = oblock.max(dest.block_size());
    if !size.is_multiple_of(align) {
        return Err(format!(
            "{name} is {size} bytes, not a whole number of {align}-byte blocks of {} and {dst}",
            origin_path
        )
        .into());
    }
    let saved = Policy {
        level: info.level,
        adaptive: info.adaptive,
        // Restored too: `--on-stall throttle` may change it.
        write_kbps: info
            .write_kbps
            .map(|k| u32::try_from(k).unwrap_or(u32::MAX)),
        ..Default::default()
    };
    Ok(Disk {
        name,
        spec,
        origin_path,
        origin: of,
        size,
        align: align.max(4096),
        dest,
        saved,
        epoch: info.epoch.unwrap_or(0),
        suspended: false,
        written: false,
        copied: Vec::new(),
        deferred: Vec::new(),
        pending: Vec::new(),
        rewritten: Vec::new(),
    })
}

pub fn run(o: &Opts) -> CmdResult {
    if !o.pairs.len().is_multiple_of(2) {
        return Err("migrate: give SRC DEST pairs".to_string().into());
    }
    let read_ranges = |f: &Option<String>| -> Result<Vec<(u64, u64)>, String> {
        match f {
            Some(f) => {
                let t = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
                plan::parse_order(&t).map_err(|e| format!("{f}: {e}"))
            }
            None => Ok(Vec::new()),
        }
    };
    let order = read_ranges(&o.order)?;
    let defer = read_ranges(&o.defer)?;
    let stop = stop_flag()?;
    let cont = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&cont))
        .map_err(|e| format!("cannot install a signal handler: {e}"))?;
    let rep = Report {
        json: o.json,
        bar: None,
        start: Instant::now(),
    };

    // The guard starts before any netlink socket exists (it must not
    // inherit the socket that owns the sources' rotation).
    let guard = guard::Guard::start()?;
    let mut client = Client::connect()?;
    let mut disks = Vec::new();
    for p in o.pairs.chunks(2) {
        let mut d = open_disk(&mut client, &p[0], &p[1], o)?;
        // Whole blocks, likeliest first, none twice.
        let mut seen: Vec<(u64, u64)> = Vec::new();
        for &(s, l) in &defer {
            let r = plan::extents_to_bytes(&[(s, l)], d.size, d.align);
            let r = plan::without(&r, &seen);
            seen = plan::union(&seen, &r);
            d.deferred.extend(r);
        }
        disks.push(d);
    }
    let mut run = Run {
        client,
        disks,
        guard: Some(guard),
        rep,
    };
    let mut mover = Mover {
        stop: Arc::clone(&stop),
        limiter: Limiter::new(o.bandwidth),
        start: Instant::now(),
        buf: AlignedBuf::new(),
        buf2: AlignedBuf::new(),
        totals: Totals::default(),
        deadline: None,
    };
    match migrate(o, &mut run, &mut mover, &order, &cont) {
        Ok(code) => Ok(code),
        Err(Stop::Interrupted) => {
            run.abort("interrupted");
            Ok(status::ABORTED)
        }
        Err(Stop::Failed(e)) if e.starts_with("abort requested") || e.starts_with("stalled") => {
            run.abort(&e);
            Ok(status::ABORTED)
        }
        Err(Stop::Failed(e)) => {
            run.abort(&e);
            Err(e.into())
        }
    }
}

/// The bulk pass and the rounds, the sources running: returns the rounds'
/// record, the bandwidth measured, and whether the switchover is forced.
fn precopy(
    o: &Opts,
    run: &mut Run,
    mv: &mut Mover,
    order: &[(u64, u64)],
    total: u64,
) -> Result<(Convergence, Bandwidth, bool), Stop> {
    // With --bandwidth, what is deferred is known before the bulk pass:
    // what half the downtime allows at that rate (the rest is not).
    if let Some(b) = o.bandwidth {
        trim_deferred(&mut run.disks, b as f64, o.downtime_ms);
    }
    // Bulk pass.
    run.rep.phase("bulk", total);
    let t = Instant::now();
    let (bulk_copied, ahead) = bulk(run, mv, order, o.bandwidth)?;
    // The rounds' own rate estimates the final copy: the dirty set is
    // scattered extents, whose per-request cost the bulk pass's large
    // pieces hide (under TCG, with one origin read at a time, a 4 KiB
    // extent cost 2.8 ms over NBD, 24x its bytes at the bulk rate); so at
    // least one round runs before a
    // switchover unless nothing is dirty (until the rounds have copied
    // enough to measure, the bulk rate stands in).
    let mut bulk = Bandwidth::default();
    bulk.add(mv.totals.data_bytes, mv.totals.data_time);
    let mut bw = Bandwidth::default();
    run.rep.done();
    // Without --bandwidth, what stays deferred is known now: as far as
    // half the downtime allows at the bulk rate; the rest go with the
    // first round.
    if o.bandwidth.is_none() {
        if let Some(rate) = bulk.get() {
            for (d, rest) in trim_deferred(&mut run.disks, rate, o.downtime_ms) {
                d.pending = plan::union(&d.pending, &rest);
            }
        }
    }
    let (deferred, _) = deferred_bytes(&run.disks);
    if o.defer.is_some() {
        run.rep.say(format!(
            "deferred to the switchover: {} predicted to be rewritten",
            human_bytes(deferred)
        ));
        run.rep
            .event(json!({"event": "deferred", "bytes": deferred}));
    }
    let behind: u64 = run.disks.iter().map(|d| plan::total(&d.rewritten)).sum();
    run.rep.say(format!(
        "bulk pass: {} in {:.1} s ({} of it zeroes, sent as write-zeroes); written meanwhile: {} where it had copied (for the first round), {} ahead of it (copied by it)",
        human_bytes(total),
        t.elapsed().as_secs_f64(),
        human_bytes(mv.totals.zeroes),
        human_bytes(behind),
        human_bytes(ahead)
    ));
    run.rep.event(
        json!({"event": "bulk", "bytes": total, "zero_bytes": mv.totals.zeroes,
        "seconds": t.elapsed().as_secs_f64(), "rewritten_bytes": behind, "ahead_bytes": ahead}),
    );

    // Rounds.  The deferred ranges are copied with the final copy, at its
    // rate: their time comes off the downtime the rest must fit.
    let downtime = Duration::from_millis(o.downtime_ms);
    let mut conv = Convergence::new(downtime, o.max_rounds, o.on_stall);
    let mut stall_said = false;
    // What the last pass copied.
    let mut last_copied = bulk_copied;
    // The sources, for the write throttle.
    let specs: Vec<_> = run
        .disks
        .iter()
        .map(|d| (d.name.clone(), d.spec.clone()))
        .collect();
    let forced = loop {
        let rate = match (bw.get(), conv.history.is_empty()) {
            (Some(_), _) => &bw,
            (None, false) => &bulk,
            (None, true) => &Bandwidth::default(),
        };
        // What stays deferred is what half the downtime copies at the
        // rate the final copy will see, now that it is known better (the
        // rounds' rate once measured: deferred ranges a model names are
        // scattered blocks, as slow to copy as a round's extents); the rest
        // goes with the next pass (a round, or the final copy).
        let (deferred, pieces) = deferred_bytes(&run.disks);
        if let Some(r) = rate.rate_for(deferred, pieces) {
            for (d, rest) in trim_deferred(&mut run.disks, r, o.downtime_ms) {
                if !rest.is_empty() {
                    d.pending = plan::union(&d.pending, &rest);
                }
            }
        }
        let (deferred, pieces) = deferred_bytes(&run.disks);
        conv.downtime =
            downtime.saturating_sub(rate.time_for_pieces(deferred, pieces).unwrap_or_default());
        // What the pass dirtied, and what is left for the final copy: that
        // too, with the ranges given back that no round copied yet (the
        // deferred ones aside: their time is set aside above); what is
        // left in bytes and in copy requests too: a scattered set
        // takes its requests' time more than its bytes'.
        let (mut dirty, mut left, mut pieces) = (0, 0, 0);
        for d in &run.disks {
            // Writes to deferred ranges are copied with them; a range
            // given back and written since counts once.
            let e = extents_of(&mut run.client, d, Epoch::Current, d.epoch)?;
            let written = plan::union(&plan::without(&e, &d.deferred), &d.rewritten);
            dirty += plan::total(&written);
            let rest = plan::union(&written, &d.pending);
            left += plan::total(&rest);
            pieces += plan::pieces(&rest, PIECE).count() as u64;
        }
        let est = conv.estimate(rate, left, pieces);
        // Ranges given back were not written by the pass: they count in
        // what is left, not in what it dirtied.
        let next = conv.after_pass(rate, left, dirty, last_copied, pieces);
        let est_ms = est.map(|e| e.as_secs_f64() * 1000.0);
        run.rep.event(
            json!({"event": "dirty", "round": conv.rounds, "dirty_bytes": dirty,
            "left_bytes": left, "left_pieces": pieces, "deferred_bytes": deferred,
            "bandwidth": rate.get(), "estimated_downtime_ms": est_ms}),
        );
        if conv.stall_seen && !stall_said {
            stall_said = true;
            run.rep.say(format!(
                "the dirty set stopped shrinking ({} after {} rounds): --on-stall {}",
                human_bytes(dirty),
                conv.rounds,
                match o.on_stall {
                    OnStall::Continue => "continue: rounds go on to --max-rounds",
                    OnStall::Throttle => "throttle: the writers are slowed",
                    OnStall::Abort => "abort",
                }
            ));
            run.rep
                .event(json!({"event": "stall", "round": conv.rounds, "policy": o.on_stall}));
        }
        match next {
            Next::Switchover { forced } => break forced,
            Next::Abort { stalled: true } => {
                return Err(Stop::Failed(format!(
                    "stalled: the dirty set stopped shrinking ({} after {} rounds) and --on-stall is abort",
                    human_bytes(dirty),
                    conv.rounds
                )))
            }
            Next::Abort { stalled: false } => {
                return Err(Stop::Failed(format!(
                    "stalled: {} still dirty after --max-rounds {} and --on-stall is abort",
                    human_bytes(dirty),
                    conv.rounds
                )))
            }
            Next::Throttle { bytes_per_sec } => {
                let kbps = throttle(&mut run.client, &specs, bytes_per_sec)?;
                run.rep.say(format!(
                    "writes throttled to {kbps} KiB/s: {} ({} still dirty after {} rounds)",
                    conv.throttle_reason,
                    human_bytes(dirty),
                    conv.rounds
                ));
                run.rep.event(json!({"event": "throttle", "round": conv.rounds,
                    "write_kbps": kbps, "reason": conv.throttle_reason}));
            }
            Next::Round => {}
        }
        // Copy what was written during the last pass.
        let t = Instant::now();
        let (data_before, pieces_before) = (mv.totals.data_bytes, mv.totals.data_pieces);
        let mut copied = 0;
        let round = conv.rounds + 1;
        run.rep.phase(&format!("round {round}"), dirty);
        // Every PERIOD the writers are measured against the copy (QEMU's
        // auto-converge looks at each bitmap sync): under --on-stall
        // throttle a round that falls behind slows them at once.
        let Run {
            client, disks, rep, ..
        } = &mut *run;
        let mut watch = (Instant::now(), 0u64, None::<u64>);
        for d in disks.iter_mut() {
            let ranges = rotate(client, d)?;
            let ranges = plan::without(&plan::union(&ranges, &d.undone()), &d.deferred);
            let base = copied;
            let mut tick = |sent: u64| -> Result<(), Stop> {
                let (since, copied_then, dirty_then) = &mut watch;
                if o.on_stall != OnStall::Throttle || since.elapsed() < plan::PERIOD {
                    return Ok(());
                }
                let mut now_dirty = 0;
                for (_, spec) in &specs {
                    now_dirty += dev_get(client, spec)?.dirty_bytes.unwrap_or(0);
                }
                let (sent, took) = (base + sent, since.elapsed());
                // The first look only sets the baseline; a disk rotated
                // meanwhile makes this period's writes unknown (none).
                let limit = dirty_then.and_then(|d| {
                    conv.period(now_dirty.saturating_sub(d), sent - *copied_then, took)
                });
                (*since, *copied_then, *dirty_then) = (Instant::now(), sent, Some(now_dirty));
                if let Some(limit) = limit {
                    let kbps = throttle(client, &specs, limit)?;
                    rep.say(format!(
                        "writes throttled to {kbps} KiB/s during round {round}: {}",
                        conv.throttle_reason
                    ));
                    rep.event(json!({"event": "throttle", "round": conv.rounds,
                        "write_kbps": kbps, "reason": conv.throttle_reason}));
                }
                Ok(())
            };
            copied += mv.copy_watched(d, &ranges, rep, &mut tick)?;
            d.pending.clear();
            d.rewritten.clear();
        }
        last_copied = copied;
        // The round's data bytes over its whole time (rotation, extent
        // lists, copy, drain), as the final copy takes it too: the time
        // spent in data pieces alone left out per-pass costs that weigh on
        // a pass of a few MiB (a zipf writer's final copy of about 1 MiB
        // then took 446 ms where 300 were allowed).  Zero pieces, sent as
        // write-zeroes, cost next to nothing: counted, a round over a
        // mostly empty untracked epoch would promise a fast final copy.
        let data = mv.totals.data_bytes - data_before;
        if data > 0 {
            bw.add_pieces(data, mv.totals.data_pieces - pieces_before, t.elapsed());
        }
        run.rep.done();
        if !o.json {
            run.rep.say(format!(
                "round {}: copied {} in {:.2} s (dirty then: {})",
                round,
                human_bytes(copied),
                t.elapsed().as_secs_f64(),
                human_bytes(dirty)
            ));
        }
        run.rep
            .event(json!({"event": "round", "round": round, "bytes": copied,
            "seconds": t.elapsed().as_secs_f64()}));
    };
    if forced {
        run.rep.say(format!(
            "the dirty set did not shrink to fit {} ms in {} rounds: switching over anyway (--on-stall continue)",
            o.downtime_ms, conv.rounds
        ));
    }

    Ok((conv, bw, forced))
}

/// How long an epoch of the bulk pass lasts: the log is rotated about
/// this often while it copies.
const BULK_EPOCH: Duration = Duration::from_secs(1);

/// The bulk pass over every disk, in `order`.  A write the pass has not yet
/// reached needs no round: the pass copies it when it gets there (QEMU's
/// mirror clears a chunk's dirty bit as it copies it).  So the pass copies
/// in spans of about [`BULK_EPOCH`] at its measured rate (`bandwidth`, or
/// [`PIECE`]s per second, at first), each in an epoch of its own: a write
/// listed in a closed epoch completed before its end, and every span after
/// reads it.  Of each closed epoch only the extents the pass had copied by
/// then are kept, in `rewritten`, for the first round.  Returns the bytes
/// copied and the bytes written ahead of the pass (copied by it, not
/// again).
fn bulk(
    run: &mut Run,
    mv: &mut Mover,
    order: &[(u64, u64)],
    bandwidth: Option<u64>,
) -> Result<(u64, u64), Stop> {
    let (mut sent, mut ahead) = (0, 0);
    let Run {
        client, disks, rep, ..
    } = &mut *run;
    let mut span = bandwidth.unwrap_or(32 * PIECE);
    for d in disks.iter_mut() {
        let mut rest = plan::without(&plan::bulk_order(d.size, order, PIECE), &d.deferred);
        let mut copied = Vec::new();
        while !rest.is_empty() {
            // Whole pieces: the cut stays aligned.
            let (this, left) = plan::split_at(&rest, span.max(PIECE) / PIECE * PIECE);
            let t = Instant::now();
            let n = mv.copy(d, &this, rep)?;
            let took = t.elapsed().as_secs_f64();
            if took > 0.0 {
                span = (n as f64 / took * BULK_EPOCH.as_secs_f64()) as u64;
            }
            sent += n;
            rest = left;
            copied = plan::union(&copied, &this);
            if rest.is_empty() {
                // The last span's writes: the first round's epoch.
                break;
            }
            let written = rotate(client, d)?;
            let behind = plan::intersect(&written, &copied);
            // Deferred ranges are copied at the switchover: neither.
            ahead += plan::total(&written)
                .saturating_sub(plan::total(&behind))
                .saturating_sub(plan::total(&plan::intersect(&written, &d.deferred)));
            d.rewritten = plan::union(&d.rewritten, &behind);
        }
    }
    Ok((sent, ahead))
}

fn migrate(
    o: &Opts,
    run: &mut Run,
    mv: &mut Mover,
    order: &[(u64, u64)],
    cont: &AtomicBool,
) -> Result<i32, Stop> {
    // Ownership, 4 KiB logging, a fresh epoch: everything written from
    // here on is in the log the rounds read.
    let pin = Policy {
        level: Some(LEVEL_FINEST),
        adaptive: Some(false),
        ..Default::default()
    };
    for d in &mut run.disks {
        if let (Some(level), Some(adaptive)) = (d.saved.level, d.saved.adaptive) {
            let g = run.guard.as_mut().expect("guard");
            g.policy(&d.name, level, adaptive, d.saved.write_kbps)?;
        }
        run.client
            .request("policy-set", uapi::cmd::POLICY_SET, pin.attrs(&d.spec))
            .map_err(|e| format!("{}: pin the log: {e}", d.name))?;
        let how = RotateHow {
            expect: None,
            claim: true,
            force: o.force,
        };
        let (n, _) = dirty::rotate_with(&mut run.client, &d.spec, how).map_err(|e| {
            let e = e.to_string();
            if e.contains("EBUSY") || e.contains("busy") {
                format!(
                    "{}: another tool owns its dirty log ({e}); --force takes it over",
                    d.name
                )
            } else {
                format!("{}: {e}", d.name)
            }
        })?;
        d.epoch = n;
    }
    let total: u64 = run.disks.iter().map(|d| d.size).sum();
    run.rep.event(
        json!({"event": "start", "devices": run.disks.iter().map(|d| json!({
        "source": d.name, "origin": d.origin_path, "destination": d.dest.name(), "bytes": d.size,
    })).collect::<Vec<_>>(), "downtime_ms": o.downtime_ms}),
    );

    // Post-copy: the export is up from the start (read-only; nothing may
    // read it before the handoff names it), so the destination connects
    // and loads its table while the bulk pass runs: neither starting the
    // export nor the destination's set-up is in the downtime.
    let export = if o.postcopy {
        let disks: Vec<(&str, &str)> = run
            .disks
            .iter()
            .map(|d| (d.name.as_str(), d.origin_path.as_str()))
            .collect();
        let e = postcopy::Export::start(o.serve.as_deref().unwrap_or_default(), &disks)?;
        // The destination may connect and set up its table now (not use
        // it: the handoff is not written yet).
        let uris: Vec<String> = run.disks.iter().map(|d| e.uri(&d.name)).collect();
        run.rep.say(format!(
            "exported {} read-only: the destination may connect and create its table (hydration off) now",
            uris.join(" ")
        ));
        run.rep.event(json!({"event": "exported", "exports": uris}));
        Some(e)
    } else {
        None
    };

    let (conv, bw, forced) = if o.stop_and_copy {
        let c = Convergence::new(Duration::ZERO, 1, o.on_stall);
        (c, Bandwidth::default(), false)
    } else if o.postcopy {
        postcopy_bulk(o, run, mv, order, total)?;
        let c = Convergence::new(Duration::ZERO, 0, o.on_stall);
        (c, Bandwidth::default(), false)
    } else {
        precopy(o, run, mv, order, total)?
    };

    // Switchover.
    let guard = run.guard.as_mut().expect("guard");
    let names: Vec<&str> = run.disks.iter().map(|d| d.name.as_str()).collect();
    let t_suspend = Instant::now();
    let suspend_unix_ms = unix_ms();
    let suspend_t = run.rep.start.elapsed();
    // The guard suspends them: if this tool dies meanwhile, no suspend can
    // land after the guard's resume. A failed suspend may still have
    // suspended some: all count as suspended (an abort resumes them all).
    let res = guard.suspend(&names);
    for d in &mut run.disks {
        d.suspended = true;
    }
    res.map_err(Stop::Failed)?;
    let suspended_at = t_suspend.elapsed();
    let mut last = 0;
    run.rep
        .phase("switchover", if o.stop_and_copy { total } else { 0 });
    let mut handoff = Vec::new();
    // Where the final copy's time goes: listing the extents, flushing,
    // the copy's waits.
    let (mut list_time, mut flush_time) = (Duration::ZERO, Duration::ZERO);
    let waits_before = mv.totals.waits;
    for d in &mut run.disks {
        if o.postcopy {
            // Nothing copied now: the destination is told what it holds.
            let dirty = extents_of(&mut run.client, d, Epoch::Current, d.epoch)?;
            let current = plan::current(&d.copied, &dirty);
            d.dest.flush()?;
            handoff.push(postcopy::HandoffDevice {
                source: d.name.clone(),
                export: String::new(),
                bytes: d.size,
                current,
            });
            continue;
        }
        let t = Instant::now();
        let ranges = if o.stop_and_copy {
            plan::bulk_order(d.size, order, PIECE)
        } else {
            // With what was deferred, and given back but not copied yet.
            let dirty = extents_of(&mut run.client, d, Epoch::Current, d.epoch)?;
            plan::union(&plan::union(&dirty, &d.deferred), &d.undone())
        };
        list_time += t.elapsed();
        last += mv.copy(d, &ranges, &run.rep)?;
        let t = Instant::now();
        d.dest.flush()?;
        flush_time += t.elapsed();
    }
    run.rep.done();
    let copied_at = t_suspend.elapsed();
    let final_waits = mv.totals.waits.since(&waits_before);
    let mut mismatches = 0;
    if o.verify {
        for d in &mut run.disks {
            mismatches += verify(d, mv)?;
        }
        if mismatches > 0 {
            return Err(Stop::Failed(format!(
                "verify: {mismatches} regions differ between the sources and the destinations"
            )));
        }
    }
    let ready_at = t_suspend.elapsed();
    run.rep.event(json!({"event": "ready", "final_bytes": last,
        "suspended_ms": ready_at.as_secs_f64() * 1000.0}));
    if o.pause_before_switchover {
        run.rep.say("ready: sources suspended, destinations complete; `continue` or `abort` on stdin (or SIGUSR1)");
        wait_for_go(&mv.stop, cont)?;
    }

    // The commit point.
    let guard = run.guard.take().expect("guard");
    guard.commit()?;
    // Post-copy: the handoff only once committed (the guard can no longer
    // resume the sources); until it is written nothing uses the
    // destination, so a failure here still aborts (sources resumed).
    if let Some(export) = &export {
        write_handoff(o, export, &mut handoff)?;
    }
    let commit_at = t_suspend.elapsed();
    let mut code = exit::OK;
    if let Some(cmd) = &o.switchover_cmd {
        let list = |f: fn(&Disk) -> &str| run.disks.iter().map(f).collect::<Vec<_>>().join(" ");
        let st = std::process::Command::new("sh")
            .args(["-c", cmd])
            .env("FORESIGHT_SOURCES", list(|d| &d.name))
            .env("FORESIGHT_ORIGINS", list(|d| &d.origin_path))
            .env("FORESIGHT_DESTINATIONS", list(|d| d.dest.name()))
            .env("FORESIGHT_HANDOFF", o.handoff.as_deref().unwrap_or(""))
            .status();
        match st {
            Ok(s) if s.success() => {}
            Ok(s) => {
                run.rep.say(format!(
                    "the switchover command failed ({s}) after the commit: the sources stay suspended; resume them (dmsetup resume) only if the destination did not start"
                ));
                code = status::CMD_FAILED;
            }
            Err(e) => {
                run.rep.say(format!(
                    "cannot run the switchover command: {e}; the sources stay suspended"
                ));
                code = status::CMD_FAILED;
            }
        }
    }
    let downtime = t_suspend.elapsed();
    run.restore();
    let report = json!({
        "event": "done",
        "committed": true,
        "devices": run.disks.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
        "bytes": total,
        "sent_bytes": mv.totals.sent,
        "zero_bytes": mv.totals.zeroes,
        "rounds": conv.rounds,
        "dirty_history": conv.history,
        "final_bytes": last,
        "forced": forced,
        "verified": o.verify,
        "seconds": run.rep.start.elapsed().as_secs_f64(),
        "suspend_ms": suspended_at.as_secs_f64() * 1000.0,
        "final_copy_ms": (copied_at - suspended_at).as_secs_f64() * 1000.0,
        "final_list_ms": list_time.as_secs_f64() * 1000.0,
        "final_flush_ms": flush_time.as_secs_f64() * 1000.0,
        "final_waits_ms": final_waits,
        // Seconds since the start, as the events' `t`.
        "suspend_t": suspend_t.as_secs_f64(),
        "commit_ms": commit_at.as_secs_f64() * 1000.0,
        // The wall clock at the suspend (ms since the epoch): with the
        // destination's resume time, the downtime of a post-copy.
        "suspend_unix_ms": suspend_unix_ms,
        "downtime_ms": downtime.as_secs_f64() * 1000.0,
        "bandwidth": bw.get(),
        "postcopy": o.postcopy,
        "deferred_bytes": deferred_bytes(&run.disks).0,
        "current_bytes": handoff.iter().map(|h| plan::total(&h.current)).sum::<u64>(),
    });
    run.rep.event(report);
    if !o.json {
        run.rep.say(format!(
            "switched over: downtime {:.0} ms (suspend {:.0} ms, final copy of {} {:.0} ms); {} sent for {} in {} rounds, {:.1} s",
            downtime.as_secs_f64() * 1000.0,
            suspended_at.as_secs_f64() * 1000.0,
            human_bytes(last),
            (copied_at - suspended_at).as_secs_f64() * 1000.0,
            human_bytes(mv.totals.sent),
            human_bytes(total),
            conv.rounds,
            run.rep.start.elapsed().as_secs_f64()
        ));
        run.rep
            .say("the sources stay suspended: the destination is now the disk");
    }
    if let Some(export) = export {
        if !serve_until_stopped(run, mv, export, &handoff) && code == exit::OK {
            code = exit::ERROR;
        }
    }
    Ok(code)
}

/// Post-copy's bulk pass: as pre-copy's, cut at --postcopy-after; each
/// disk records what it copied.
fn postcopy_bulk(
    o: &Opts,
    run: &mut Run,
    mv: &mut Mover,
    order: &[(u64, u64)],
    total: u64,
) -> Result<(), Stop> {
    run.rep.phase("bulk", total);
    let t = Instant::now();
    mv.deadline = o
        .postcopy_after
        .map(|s| t + Duration::from_secs_f64(s.max(0.0)));
    for d in &mut run.disks {
        // Deferred ranges are left for the destination to fetch.
        let ranges = plan::without(&plan::bulk_order(d.size, order, PIECE), &d.deferred);
        let n = mv.copy(d, &ranges, &run.rep)?;
        d.copied = plan::prefix(&ranges, n);
    }
    mv.deadline = None;
    run.rep.done();
    let copied: u64 = run.disks.iter().map(|d| plan::total(&d.copied)).sum();
    run.rep.say(format!(
        "bulk pass: {} of {} in {:.1} s; switching over (post-copy)",
        human_bytes(copied),
        human_bytes(total),
        t.elapsed().as_secs_f64()
    ));
    run.rep.event(
        json!({"event": "bulk", "bytes": copied, "zero_bytes": mv.totals.zeroes,
        "seconds": t.elapsed().as_secs_f64(), "postcopy": true}),
    );
    Ok(())
}

/// Post-copy, sources suspended and committed: writes the handoff.
fn write_handoff(
    o: &Opts,
    export: &postcopy::Export,
    handoff: &mut [postcopy::HandoffDevice],
) -> Result<(), Stop> {
    for h in handoff.iter_mut() {
        h.export = export.uri(&h.source);
    }
    let file = o.handoff.as_deref().unwrap_or_default();
    let text = serde_json::to_string(&postcopy::Handoff {
        version: postcopy::HANDOFF_VERSION,
        devices: handoff.to_vec(),
    })
    .map_err(|e| e.to_string())?;
    // Written whole or not at all: the destination may be waiting for it.
    let tmp = format!("{file}.tmp");
    std::fs::write(&tmp, text + "\n")
        .and_then(|_| std::fs::rename(&tmp, file))
        .map_err(|e| format!("{file}: {e}"))?;
    Ok(())
}

/// Post-copy, committed: serves until Ctrl-C or SIGTERM (the destination
/// is hydrated) or the server ends (false).  Nothing here may abort: the
/// destination is the disk now.
fn serve_until_stopped(
    run: &mut Run,
    mv: &Mover,
    export: postcopy::Export,
    handoff: &[postcopy::HandoffDevice],
) -> bool {
    let uris: Vec<&str> = handoff.iter().map(|h| h.export.as_str()).collect();
    run.rep.say(format!(
        "serving {} read-only for the destination's post-copy; stop with Ctrl-C (or SIGTERM) once it is hydrated",
        uris.join(" ")
    ));
    run.rep.event(json!({"event": "serving", "exports": uris}));
    let t = Instant::now();
    while !stopped(&mv.stop) {
        if !export.alive() {
            run.rep.say(
                "the NBD server of the post-copy ended: the destination cannot fetch what it lacks",
            );
            run.rep
                .event(json!({"event": "served", "error": "the NBD server ended"}));
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(export);
    run.rep.say(format!(
        "export ended after {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    run.rep
        .event(json!({"event": "served", "seconds": t.elapsed().as_secs_f64()}));
    true
}

/// Sets every source's write limit to `bytes_per_sec` (at least 1 KiB/s);
/// returns it in KiB/s.
fn throttle(
    client: &mut Client,
    disks: &[(String, DevSpec)],
    bytes_per_sec: u64,
) -> Result<u32, Stop> {
    let kbps = u32::try_from(bytes_per_sec / 1024)
        .unwrap_or(u32::MAX)
        .max(1);
    let limit = Policy {
        write_kbps: Some(kbps),
        ..Default::default()
    };
    for (name, spec) in disks {
        client
            .request("policy-set", uapi::cmd::POLICY_SET, limit.attrs(spec))
            .map_err(|e| format!("{name}: throttle the writes: {e}"))?;
    }
    Ok(kbps)
}

/// The bytes the disks still defer to the switchover, and the copy
/// requests they take.
fn deferred_bytes(disks: &[Disk]) -> (u64, u64) {
    disks.iter().fold((0, 0), |(b, n), d| {
        (
            b + plan::total(&d.deferred),
            n + plan::pieces(&d.deferred, PIECE).count() as u64,
        )
    })
}

/// Keeps deferred the likeliest ranges (in order, disk by disk) that half
/// of `downtime_ms` copies at `rate` bytes a second; returns each disk with
/// the ranges it no longer defers.
fn trim_deferred(
    disks: &mut [Disk],
    rate: f64,
    downtime_ms: u64,
) -> Vec<(&mut Disk, Vec<(u64, u64)>)> {
    let mut budget = (rate * downtime_ms as f64 / 2000.0) as u64;
    let mut out = Vec::new();
    for d in disks {
        let (keep, rest) = plan::split_budget(&d.deferred, budget);
        budget -= plan::total(&keep);
        d.deferred = keep;
        out.push((d, rest));
    }
    out
}

/// Closes the epoch the tool opened last (it fails if the log moved on:
/// another tool rotated it) and returns its byte ranges.
fn rotate(client: &mut Client, d: &mut Disk) -> Result<Vec<(u64, u64)>, Stop> {
    let how = RotateHow {
        expect: Some(d.epoch),
        claim: false,
        force: false,
    };
    let (n, _) =
        dirty::rotate_with(client, &d.spec, how).map_err(|e| format!("{}: rotate: {e}", d.name))?;
    d.epoch = n;
    extents_of(client, d, Epoch::Previous, n - 1)
}

/// The logging level of 4 KiB grains.
const LEVEL_FINEST: u32 = 100;

/// The byte ranges an epoch lists (the whole device if it is not tracked).
fn extents_of(
    client: &mut Client,
    d: &Disk,
    epoch: Epoch,
    number: u64,
) -> Result<Vec<(u64, u64)>, Stop> {
    let log = dirty::fetch(client, &d.spec, epoch).map_err(|e| format!("{}: {e}", d.name))?;
    if log.epoch != number {
        return Err(Stop::Failed(format!(
            "{}: the log moved on (epoch {} where {number} was expected): another tool rotated it",
            d.name, log.epoch
        )));
    }
    if !log.tracked() {
        return Ok(vec![(0, d.size)]);
    }
    Ok(plan::extents_to_bytes(&log.extents, d.size, d.align))
}

/// The device node of a `major:minor` (udev's /dev/block links may be
/// missing: sysfs names the node).
fn dev_path(majmin: &str) -> String {
    std::fs::read_to_string(format!("/sys/dev/block/{majmin}/uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
        })
        .unwrap_or_else(|| format!("/dev/block/{majmin}"))
}

/// Compares a source's origin and its destination, 1 MiB at a time.
fn verify(d: &mut Disk, mv: &mut Mover) -> Result<u64, Stop> {
    let mut bad = 0;
    for (off, len) in plan::pieces(&[(0, d.size)], PIECE) {
        if stopped(&mv.stop) {
            return Err(Stop::Interrupted);
        }
        let a = mv.buf.get(len as usize);
        d.origin
            .read_exact_at(a, off)
            .map_err(|e| format!("{}: read at {off}: {e}", d.origin_path))?;
        let b = d.dest.read(off, len as usize, &mut mv.buf2)?;
        if mv.buf.get(len as usize)[..] != b[..] {
            bad += 1;
        }
    }
    Ok(bad)
}

/// `--pause-before-switchover`: waits for `continue` (or SIGUSR1) or
/// `abort` (or Ctrl-C / SIGTERM / end of input).
fn wait_for_go(stop: &AtomicBool, cont: &AtomicBool) -> Result<(), Stop> {
    // Only a SIGUSR1 sent at ready counts.
    cont.store(false, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(l) = line else { break };
            let w = l.trim().to_string();
            if w == "continue" || w == "abort" {
                let _ = tx.send(w);
                return;
            }
        }
        let _ = tx.send("eof".to_string());
    });
    loop {
        if stopped(stop) {
            return Err(Stop::Interrupted);
        }
        if cont.load(Ordering::Relaxed) {
            return Ok(());
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(w) if w == "continue" => return Ok(()),
            Ok(w) if w == "abort" => return Err(Stop::Failed("abort requested".into())),
            // End of input: the orchestrator is gone; the sources must not
            // stay suspended waiting for it.
            Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Stop::Failed(
                    "abort requested (end of input at ready)".into(),
                ))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}
