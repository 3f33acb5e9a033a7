// SPDX-License-Identifier: GPL-2.0
//! `foresight shadow`: a `foreshadow` device's hydration (its status line,
//! read with dmsetup): the state, a wait with a progress bar until every
//! region is on the destination, and predicted ranges sent as hints.

use std::io::Read;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::migrate::postcopy::{mark_pairs, Handoff};
use super::predict::{parse_input, Range};
use super::{exit, stop_flag, stopped, unix_ms, CmdResult, Failure};
use crate::dev::{DevNum, DevSpec};
use crate::dmctl;
use crate::nl::{AttrBuf, Attrs, Client};
use crate::uapi::{self, range_attr as R, shadow_attr as S};

#[derive(clap::Args, Debug)]
pub struct Opts {
    #[command(subcommand)]
    cmd: ShadowCmd,
}

/// `foresight shadow seed`.
#[derive(clap::Args, Debug)]
pub struct SeedOpts {
    /// The dm device's name
    dev: String,
    /// The handoff file
    handoff: String,
    /// The source this device takes over (when the handoff has several)
    #[arg(long)]
    source: Option<String>,
    /// Then turn background copying on (`hydration on`): a table
    /// created with `no_hydration` before the switchover starts
    #[arg(long)]
    start: bool,
    /// Wait for the handoff file to appear (started before the
    /// switchover, the destination's side acts the moment it is written)
    #[arg(long)]
    wait: bool,
    /// Resume the device first (its table loaded, not resumed, before the
    /// switchover): the end of the VM's downtime; reads of unmarked regions
    /// go to the source, current from then on
    #[arg(long)]
    resume: bool,
    /// One JSON object on standard output: what was marked, and when the
    /// handoff was seen and the device resumed (wall clock, ms)
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand, Debug)]
enum ShadowCmd {
    /// The hydration state of a foreshadow device
    Status {
        /// The dm device's name
        dev: String,
        /// One JSON object
        #[arg(long)]
        json: bool,
    },
    /// Wait until every region is hydrated (a progress bar on a terminal)
    Wait {
        /// The dm device's name
        dev: String,
        /// Give up after this many seconds (exit 1)
        #[arg(long, value_name = "SECS")]
        timeout_s: Option<f64>,
        /// The final state as one JSON object, no progress bar
        #[arg(long)]
        json: bool,
    },
    /// Send predicted ranges (`foresight heat` lines: start_sector
    /// length_sectors probability) as the device's hints
    Hint {
        /// The dm device's name
        dev: String,
        /// The ranges ("-": standard input)
        #[arg(default_value = "-")]
        file: String,
    },
    /// Mark the regions a post-copy's pre-copy left current on the
    /// destination (`foresight migrate --postcopy --handoff FILE`): they
    /// are not fetched again
    Seed(SeedOpts),
    /// Checksum every region of the source (a device or file holding the
    /// source's data, on the host that has it): copies are then verified,
    /// and a region whose data does not match is fetched again
    Crc {
        /// The source's data
        source: String,
        /// Send the checksums to this foreshadow device (its region size
        /// is read from its status)
        #[arg(long, conflicts_with = "region_sectors")]
        dev: Option<String>,
        /// Print the messages (`crc <region> <crc32c>...`, for `dmsetup
        /// message DEV 0 ...` on the destination host) for this region size
        #[arg(long, required_unless_present = "dev")]
        region_sectors: Option<u64>,
        /// With --region-sectors: the target's length, if shorter than the
        /// source (with --dev it is read from the device)
        #[arg(long, requires = "region_sectors")]
        sectors: Option<u64>,
    },
}

/// Checksums per `crc` message.
const CRCS_PER_MESSAGE: usize = 512;

/// `crc` messages for the data `r` reads: the CRC-32C of every region
/// (`region_bytes`, the last one as long as the data), `per` to a message.
pub fn crc_messages(
    mut r: impl Read,
    region_bytes: usize,
    per: usize,
) -> std::io::Result<Vec<String>> {
    let mut out = vec![];
    let mut buf = vec![0u8; region_bytes];
    let mut line = String::new();
    let mut region = 0u64;
    let mut in_line = 0;
    loop {
        let mut n = 0;
        while n < region_bytes {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        if in_line == 0 {
            line = format!("crc {region}");
        }
        line.push_str(&format!(" {:08x}", crc32c::crc32c(&buf[..n])));
        in_line += 1;
        region += 1;
        if in_line == per {
            out.push(std::mem::take(&mut line));
            in_line = 0;
        }
        if n < region_bytes {
            break;
        }
    }
    if in_line > 0 {
        out.push(line);
    }
    Ok(out)
}

/// A foreshadow device's state, as netlink's `shadow-get` gives it (the
/// status line's fields, see foreshadow.rst).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShadowStatus {
    pub name: Option<String>,
    /// `major:minor`.
    pub dev: Option<String>,
    pub source: Option<String>,
    pub destination: Option<String>,
    /// The target's length.
    pub len_sectors: u64,
    pub region_sectors: u64,
    pub hydrated: u64,
    pub regions: u64,
    pub copying: u64,
    pub urgent: u64,
    pub predicted: u64,
    pub ascending: u64,
    pub overwritten: u64,
    pub marked: u64,
    pub reads_dest: u64,
    pub reads_source: u64,
    pub copied_kib: u64,
    pub rate_kbps: u64,
    pub waiting_writes: u64,
    pub copy_errors: u64,
    pub commit_errors: u64,
    pub crc_mismatches: u64,
    pub hints: u64,
    pub state: String,
}

impl ShadowStatus {
    /// From a `shadow-get` reply.
    pub fn from_attrs(a: Attrs<'_>) -> Result<Self, String> {
        let n = |t: u16| -> Result<u64, String> { Ok(a.u64(t)?.unwrap_or(0)) };
        let state = a.u32(S::STATE)?;
        Ok(ShadowStatus {
            name: a.string(S::NAME),
            dev: a.u32(S::DEV)?.map(|d| DevNum::decode(d).to_string()),
            source: a.string(S::SOURCE),
            destination: a.string(S::DESTINATION),
            len_sectors: n(S::SECTORS)?,
            region_sectors: u64::from(a.u32(S::REGION_SECTORS)?.unwrap_or(0)),
            hydrated: n(S::HYDRATED)?,
            regions: n(S::REGIONS)?,
            copying: n(S::COPYING)?,
            urgent: n(S::URGENT)?,
            predicted: n(S::PREDICTED)?,
            ascending: n(S::ASCENDING)?,
            overwritten: n(S::OVERWRITTEN)?,
            marked: n(S::MARKED)?,
            reads_dest: n(S::READS_DEST)?,
            reads_source: n(S::READS_SOURCE)?,
            copied_kib: n(S::COPIED_BYTES)? / 1024,
            rate_kbps: n(S::RATE_KBPS)?,
            waiting_writes: n(S::WAITING_WRITES)?,
            copy_errors: n(S::COPY_ERRORS)?,
            commit_errors: n(S::COMMIT_ERRORS)?,
            crc_mismatches: n(S::CRC_MISMATCHES)?,
            hints: n(S::HINTS)?,
            state: state
                .map(|v| {
                    uapi::shadow_state::name(v).map_or_else(|| format!("state-{v}"), str::to_string)
                })
                .unwrap_or_default(),
        })
    }

    pub fn complete(&self) -> bool {
        self.state == "complete"
    }

    /// One line for people.
    pub fn human(&self, dev: &str) -> String {
        format!(
            "{dev}: {}/{} regions hydrated ({:.1}%), {}; copied {} (urgent {}, predicted {}, ascending {}), \
             {} overwritten, {} marked; reads {} from the destination, {} from the source; {} KiB/s; \
             {} writes waiting; {} copy errors, {} checksum mismatches",
            self.hydrated,
            self.regions,
            100.0 * self.hydrated as f64 / self.regions.max(1) as f64,
            self.state,
            self.urgent + self.predicted + self.ascending,
            self.urgent,
            self.predicted,
            self.ascending,
            self.overwritten,
            self.marked,
            self.reads_dest,
            self.reads_source,
            self.rate_kbps,
            self.waiting_writes,
            self.copy_errors,
            self.crc_mismatches,
        )
    }
}

/// A message to the target (`dmsetup message DEV 0 MSG`).
fn message(dev: &str, msg: &str) -> Result<(), Failure> {
    dmctl::message(dev, 0, msg).map_err(|e| format!("{dev}: message {msg:.40}: {e}").into())
}

/// A device's state now (`shadow-get`).
pub fn get(client: &mut Client, dev: &DevSpec) -> Result<ShadowStatus, Failure> {
    let op = "shadow-get";
    let mut a = AttrBuf::new();
    a.device(S::NAME, S::DEV, dev);
    let r = client.request_one(op, uapi::cmd::SHADOW_GET, a)?;
    Ok(ShadowStatus::from_attrs(r.attrs()).map_err(|e| format!("{op}: {e}"))?)
}

/// Every foreshadow device (`shadow-get` dump).
pub fn dump(client: &mut Client) -> Result<Vec<ShadowStatus>, Failure> {
    let op = "shadow-get";
    let mut out = Vec::new();
    let mut bad = None;
    client.dump(op, uapi::cmd::SHADOW_GET, AttrBuf::new(), |r| {
        match ShadowStatus::from_attrs(r.attrs()) {
            Ok(s) => out.push(s),
            Err(e) => bad = Some(e),
        }
        Ok(())
    })?;
    match bad {
        Some(e) => Err(format!("{op}: {e}").into()),
        None => Ok(out),
    }
}

/// The device's state now.
pub fn read(dev: &str) -> Result<ShadowStatus, Failure> {
    let spec = DevSpec::parse(dev)?;
    get(&mut Client::connect()?, &spec)
}

/// Sends predicted ranges (`shadow-hint`): the ranges accepted.
pub fn hint(client: &mut Client, dev: &DevSpec, ranges: &[Range]) -> Result<u32, Failure> {
    let op = "shadow-hint";
    if ranges.len() > uapi::MAX_RANGES {
        return Err(format!(
            "{op}: {} ranges, at most {} in one request",
            ranges.len(),
            uapi::MAX_RANGES
        )
        .into());
    }
    let mut a = AttrBuf::new();
    a.device(S::NAME, S::DEV, dev);
    for r in ranges {
        let mut n = AttrBuf::new();
        n.u64(R::START, r.start)
            .u64(R::LENGTH, r.length)
            .u32(R::PROBABILITY, r.probability);
        a.nest(S::RANGE, n);
    }
    let r = client.request_one(op, uapi::cmd::SHADOW_HINT, a)?;
    Ok(r.attrs().u32(S::ACCEPTED)?.unwrap_or(0))
}

pub fn run(o: &Opts) -> CmdResult {
    match &o.cmd {
        ShadowCmd::Status { dev, json } => {
            let s = read(dev)?;
            if *json {
                println!("{}", serde_json::to_string(&s).map_err(|e| e.to_string())?);
            } else {
                println!("{}", s.human(dev));
            }
            Ok(exit::OK)
        }
        ShadowCmd::Wait {
            dev,
            timeout_s,
            json,
        } => wait(dev, *timeout_s, *json),
        ShadowCmd::Hint { dev, file } => {
            let mut text = String::new();
            if file == "-" {
                std::io::stdin().read_to_string(&mut text)
            } else {
                std::fs::File::open(file).and_then(|mut f| f.read_to_string(&mut text))
            }
            .map_err(|e| format!("{file}: {e}"))?;
            let mut ranges = parse_input(text.as_bytes()).map_err(|e| format!("{file}: {e}"))?;
            if ranges.len() > uapi::MAX_RANGES {
                eprintln!(
                    "{dev}: {} ranges, the {} first sent (the hints replace the last ones)",
                    ranges.len(),
                    uapi::MAX_RANGES
                );
                ranges.truncate(uapi::MAX_RANGES);
            }
            let n = hint(&mut Client::connect()?, &DevSpec::parse(dev)?, &ranges)?;
            eprintln!("{dev}: {n} predicted ranges sent");
            Ok(exit::OK)
        }
        ShadowCmd::Seed(o) => seed(o),
        ShadowCmd::Crc {
            source,
            dev,
            region_sectors,
            sectors,
        } => {
            // The target may be shorter than its source: its regions only.
            let (rs, len) = match dev {
                Some(dev) => {
                    let s = read(dev)?;
                    (s.region_sectors, Some(s.len_sectors))
                }
                None => (region_sectors.unwrap_or(0), *sectors),
            };
            if rs == 0 || !rs.is_power_of_two() {
                return Err(format!("region size {rs}: not a power of two").into());
            }
            let f = std::fs::File::open(source).map_err(|e| format!("{source}: {e}"))?;
            let f = f.take(len.map_or(u64::MAX, |l| l << 9));
            let msgs = crc_messages(
                std::io::BufReader::with_capacity(1 << 20, f),
                (rs << 9) as usize,
                CRCS_PER_MESSAGE,
            )
            .map_err(|e| format!("{source}: {e}"))?;
            match dev {
                Some(dev) => {
                    for m in &msgs {
                        message(dev, m)?;
                    }
                    let n: usize = msgs.iter().map(|m| m.split(' ').count() - 2).sum();
                    eprintln!("{dev}: checksums of {n} regions sent");
                }
                None => {
                    for m in &msgs {
                        println!("{m}");
                    }
                }
            }
            Ok(exit::OK)
        }
    }
}

/// `mark` pairs to a message.
const MARKS_PER_MESSAGE: usize = 256;

/// Waits until `file` exists: its directory watched with inotify (woken by
/// the rename that writes it whole, not polling), then looked for.
fn wait_for_file(file: &str) -> std::io::Result<()> {
    use inotify::{Inotify, WatchMask};
    let path = std::path::Path::new(file);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let mut ino = Inotify::init()?;
    ino.watches().add(
        dir,
        WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE | WatchMask::CREATE,
    )?;
    let mut buf = [0u8; 4096];
    // Looked for after the watch is set: a rename in between is seen.
    while !path.exists() {
        ino.read_events_blocking(&mut buf)?;
    }
    Ok(())
}

fn seed(o: &SeedOpts) -> CmdResult {
    let (dev, file) = (o.dev.as_str(), o.handoff.as_str());
    let mut seen = None;
    if o.wait {
        wait_for_file(file).map_err(|e| format!("{file}: wait: {e}"))?;
        seen = Some(unix_ms());
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    let h = Handoff::parse(&text).map_err(|e| format!("{file}: {e}"))?;
    let d = h
        .device(o.source.as_deref())
        .map_err(|e| format!("{file}: {e}"))?;
    // The downtime ends here: with nothing marked yet every region reads
    // from the source, which is current now, so the VM may run at once.
    let mut resumed = None;
    if o.resume {
        dmctl::resume(dev).map_err(|e| format!("{dev}: resume: {e}"))?;
        resumed = Some(unix_ms());
    }
    let s = read(dev)?;
    let dev_bytes = s.len_sectors << 9;
    if d.bytes != dev_bytes {
        return Err(format!(
            "{dev} has {dev_bytes} bytes, the source {} had {}: not its destination",
            d.source, d.bytes
        )
        .into());
    }
    let pairs = mark_pairs(&d.current, s.region_sectors << 9, dev_bytes);
    for chunk in pairs.chunks(MARKS_PER_MESSAGE) {
        let words: Vec<String> = chunk
            .iter()
            .flat_map(|(r, n)| [r.to_string(), n.to_string()])
            .collect();
        message(dev, &format!("mark {}", words.join(" ")))?;
    }
    if o.start {
        message(dev, "hydration on")?;
    }
    let n: u64 = pairs.iter().map(|p| p.1).sum();
    eprintln!(
        "{dev}: {n} of {} regions current on the destination (from {}'s pre-copy), marked",
        s.regions, d.source
    );
    if o.json {
        let j = serde_json::json!({"device": dev, "source": d.source, "marked_regions": n,
            "regions": s.regions, "handoff_seen_unix_ms": seen, "resumed_unix_ms": resumed,
            "marked_unix_ms": unix_ms()});
        println!("{j}");
    }
    Ok(exit::OK)
}

fn wait(dev: &str, timeout_s: Option<f64>, json: bool) -> CmdResult {
    let stop = stop_flag()?;
    let t0 = Instant::now();
    let mut s = read(dev)?;
    let bar = if json {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(s.regions);
        b.set_style(
            ProgressStyle::with_template("{wide_bar} {pos}/{len} regions {msg}")
                .map_err(|e| e.to_string())?,
        );
        b
    };
    loop {
        bar.set_position(s.hydrated);
        bar.set_message(format!("{} KiB/s {}", s.rate_kbps, s.state));
        if s.complete() {
            break;
        }
        if stopped(&stop) || timeout_s.is_some_and(|t| t0.elapsed().as_secs_f64() >= t) {
            bar.abandon();
            if json {
                println!("{}", serde_json::to_string(&s).map_err(|e| e.to_string())?);
            }
            eprintln!("{dev}: not hydrated yet: {}", s.human(dev));
            return Ok(exit::ERROR);
        }
        std::thread::sleep(Duration::from_millis(200));
        s = read(dev)?;
    }
    bar.finish();
    if json {
        println!("{}", serde_json::to_string(&s).map_err(|e| e.to_string())?);
    } else {
        println!("{}", s.human(dev));
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::parse_attrs;
    use crate::nl::wire::nla;

    /// `seed --wait`: returns once the handoff is renamed into place, not
    /// before; at once if it is there already.
    #[test]
    fn waits_for_the_handoff() {
        let dir = std::env::temp_dir().join(format!("fs-wait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("handoff");
        let _ = std::fs::remove_file(&file);
        let (f, d) = (file.clone(), dir.clone());
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(d.join("handoff.tmp"), "{}").unwrap();
            let before = Instant::now();
            std::fs::rename(d.join("handoff.tmp"), &f).unwrap();
            before
        });
        wait_for_file(file.to_str().unwrap()).unwrap();
        let woke = Instant::now();
        let written = writer.join().unwrap();
        assert!(file.exists());
        assert!(woke >= written, "woke before the rename");
        assert!(
            woke - written < Duration::from_secs(2),
            "woke late: {:?}",
            woke - written
        );
        let t = Instant::now();
        wait_for_file(file.to_str().unwrap()).unwrap();
        assert!(t.elapsed() < Duration::from_millis(100));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn sample() -> ShadowStatus {
        let mut b = Vec::new();
        b.extend(nla(S::NAME, b"vm1\0"));
        b.extend(nla(S::DEV, &0xfd03u32.to_ne_bytes()));
        b.extend(nla(S::SOURCE, b"43:0\0"));
        b.extend(nla(S::SECTORS, &65536u64.to_ne_bytes()));
        b.extend(nla(S::REGION_SECTORS, &128u32.to_ne_bytes()));
        for (t, v) in [
            (S::REGIONS, 512u64),
            (S::HYDRATED, 184),
            (S::COPYING, 64),
            (S::URGENT, 8),
            (S::MARKED, 2),
            (S::COPIED_BYTES, 11776 * 1024 + 1000),
            (S::HINTS, 2),
        ] {
            b.extend(nla(t, &v.to_ne_bytes()));
        }
        b.extend(nla(S::STATE, &uapi::shadow_state::HYDRATING.to_ne_bytes()));
        b.extend(nla(200, &[1, 2, 3, 4]));
        let l = parse_attrs(&b).unwrap();
        ShadowStatus::from_attrs(Attrs::new(&l)).unwrap()
    }

    #[test]
    fn reads_a_shadow_get_reply() {
        let s = sample();
        assert_eq!(s.name.as_deref(), Some("vm1"));
        assert_eq!(s.dev.as_deref(), Some("253:3"));
        assert_eq!(s.source.as_deref(), Some("43:0"));
        assert_eq!(
            (
                s.len_sectors,
                s.region_sectors,
                s.hydrated,
                s.regions,
                s.copying
            ),
            (65536, 128, 184, 512, 64)
        );
        assert_eq!(
            (s.urgent, s.marked, s.copied_kib, s.hints),
            (8, 2, 11776, 2)
        );
        assert_eq!(s.state, "hydrating");
        assert!(!s.complete());
        assert!(s.human("vm1").contains("184/512 regions hydrated (35.9%)"));
    }

    #[test]
    fn heat_lines_become_ranges() {
        // `foresight heat` lines, read by the parser `predict push` uses.
        let text = "# start_sector length_sectors probability (foresight heat)\n\
                    24576 2048 1.000000\n\n100 30 0.5\n";
        let r: Vec<_> = parse_input(text.as_bytes())
            .unwrap()
            .iter()
            .map(|r| (r.start, r.length, r.probability))
            .collect();
        assert_eq!(r, [(24576, 2048, 1_000_000), (100, 30, 500_000)]);
        assert!(parse_input(&b"1 2\n"[..]).unwrap_err().contains("line 1"));
        assert!(parse_input(&b"1 0 0.5\n"[..]).is_err());
        assert!(parse_input(&b"1 8 1.5\n"[..]).is_err());
    }

    #[test]
    fn crc_messages_cover_every_region() {
        // The standard CRC-32C check value (the module's is the same).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let data: Vec<u8> = (0..5 * 512 + 100).map(|i| (i % 251) as u8).collect();
        let m = crc_messages(&data[..], 512, 4).unwrap();
        let crc = |a: usize, b: usize| format!("{:08x}", crc32c::crc32c(&data[a..b]));
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0],
            format!(
                "crc 0 {} {} {} {}",
                crc(0, 512),
                crc(512, 1024),
                crc(1024, 1536),
                crc(1536, 2048)
            )
        );
        // The last region is as long as the data.
        assert_eq!(
            m[1],
            format!("crc 4 {} {}", crc(2048, 2560), crc(2560, 2660))
        );
        assert_eq!(
            crc_messages(&data[..1024], 512, 4).unwrap(),
            [format!("crc 0 {} {}", crc(0, 512), crc(512, 1024))]
        );
        assert!(crc_messages(&[][..], 512, 4).unwrap().is_empty());
    }
}
