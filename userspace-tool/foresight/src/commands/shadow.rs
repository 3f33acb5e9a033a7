// SPDX-License-Identifier: GPL-2.0
//! `foresight shadow`: a `foreshadow` device's hydration (its status line,
//! read with dmsetup): the state, a wait with a progress bar until every
//! region is on the destination, and predicted ranges sent as hints.

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::{exit, stop_flag, stopped, CmdResult, Failure};

#[derive(clap::Args, Debug)]
pub struct Opts {
    #[command(subcommand)]
    cmd: ShadowCmd,
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
pub fn crc_messages(mut r: impl Read, region_bytes: usize, per: usize) -> std::io::Result<Vec<String>> {
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

/// A foreshadow status line, field by field (see foreshadow.rst).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShadowStatus {
    /// The target's length (the status line's second field).
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
    /// Parses `dmsetup status` output (`<start> <len> foreshadow ...`).
    pub fn parse(line: &str) -> Result<Self, String> {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() != 21 || w[2] != "foreshadow" {
            return Err(format!("not a foreshadow status line: {line:?}"));
        }
        let n = |i: usize| -> Result<u64, String> {
            w[i].parse()
                .map_err(|_| format!("field {} of the status line is not a number: {:?}", i - 2, w[i]))
        };
        let (h, r) = w[4]
            .split_once('/')
            .ok_or_else(|| format!("not hydrated/regions: {:?}", w[4]))?;
        let frac = |s: &str| s.parse::<u64>().map_err(|_| format!("not hydrated/regions: {:?}", w[4]));
        Ok(ShadowStatus {
            len_sectors: n(1)?,
            region_sectors: n(3)?,
            hydrated: frac(h)?,
            regions: frac(r)?,
            copying: n(5)?,
            urgent: n(6)?,
            predicted: n(7)?,
            ascending: n(8)?,
            overwritten: n(9)?,
            marked: n(10)?,
            reads_dest: n(11)?,
            reads_source: n(12)?,
            copied_kib: n(13)?,
            rate_kbps: n(14)?,
            waiting_writes: n(15)?,
            copy_errors: n(16)?,
            commit_errors: n(17)?,
            crc_mismatches: n(18)?,
            hints: n(19)?,
            state: w[20].to_string(),
        })
    }

    pub fn complete(&self) -> bool {
        self.state == "complete"
    }

    /// One line for people.
    fn human(&self, dev: &str) -> String {
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

fn dmsetup(args: &[&str]) -> Result<String, Failure> {
    let out = Command::new("dmsetup")
        .args(args)
        .output()
        .map_err(|e| format!("dmsetup {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "dmsetup {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The device's status now.
pub fn read(dev: &str) -> Result<ShadowStatus, Failure> {
    let out = dmsetup(&["status", dev])?;
    let line = out.lines().next().unwrap_or("");
    Ok(ShadowStatus::parse(line).map_err(|e| format!("{dev}: {e}"))?)
}

/// Hint words (`<region> <count> <probability>` each) from `foresight
/// heat` lines, for regions of `region_sectors` sectors: a range covers
/// every region it touches.
pub fn hint_words(text: &str, region_sectors: u64) -> Result<Vec<String>, String> {
    let mut words = vec![];
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("line {}: expected start_sector length_sectors probability: {line:?}", i + 1);
        if f.len() != 3 {
            return Err(bad());
        }
        let start: u64 = f[0].parse().map_err(|_| bad())?;
        let len: u64 = f[1].parse().map_err(|_| bad())?;
        let p: f64 = f[2].parse().map_err(|_| bad())?;
        if len == 0 || !(0.0..=1.0).contains(&p) {
            return Err(bad());
        }
        let first = start / region_sectors;
        let last = (start + len - 1) / region_sectors;
        words.push(first.to_string());
        words.push((last - first + 1).to_string());
        words.push(format!("{p:.6}"));
    }
    Ok(words)
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
            let s = read(dev)?;
            let words = hint_words(&text, s.region_sectors).map_err(|e| format!("{file}: {e}"))?;
            let mut args = vec!["message", dev.as_str(), "0", "hint"];
            args.extend(words.iter().map(String::as_str));
            dmsetup(&args)?;
            eprintln!("{dev}: {} predicted ranges sent", words.len() / 3);
            Ok(exit::OK)
        }
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
            let msgs = crc_messages(std::io::BufReader::with_capacity(1 << 20, f), (rs << 9) as usize, CRCS_PER_MESSAGE)
                .map_err(|e| format!("{source}: {e}"))?;
            match dev {
                Some(dev) => {
                    for m in &msgs {
                        let mut args = vec!["message", dev.as_str(), "0"];
                        args.extend(m.split(' '));
                        dmsetup(&args)?;
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

    const LINE: &str = "0 65536 foreshadow 128 184/512 64 8 24 152 1 2 19 17 11776 2048 3 4 5 6 2 hydrating";

    #[test]
    fn parses_the_status_line() {
        let s = ShadowStatus::parse(LINE).unwrap();
        assert_eq!((s.len_sectors, s.region_sectors, s.hydrated, s.regions, s.copying), (65536, 128, 184, 512, 64));
        assert_eq!((s.urgent, s.predicted, s.ascending, s.overwritten, s.marked), (8, 24, 152, 1, 2));
        assert_eq!((s.reads_dest, s.reads_source, s.copied_kib, s.rate_kbps), (19, 17, 11776, 2048));
        assert_eq!((s.waiting_writes, s.copy_errors, s.commit_errors, s.crc_mismatches, s.hints), (3, 4, 5, 6, 2));
        assert_eq!(s.state, "hydrating");
        assert!(!s.complete());
        assert!(s.human("vm1").contains("184/512 regions hydrated (35.9%)"));
    }

    #[test]
    fn refuses_other_lines() {
        assert!(ShadowStatus::parse("0 100 linear 8:0 0").is_err());
        assert!(ShadowStatus::parse(&LINE.replace("184/512", "184")).is_err());
        assert!(ShadowStatus::parse(&LINE.replace(" 64 ", " x ")).is_err());
        assert!(ShadowStatus::parse(&LINE.replace(" hydrating", "")).is_err());
    }

    #[test]
    fn heat_lines_become_region_hints() {
        let text = "# start_sector length_sectors probability (foresight heat)\n\
                    24576 2048 1.000000\n\n100 30 0.5\n";
        let w = hint_words(text, 128).unwrap();
        // Sectors 24576.. are regions 192..207; 100..129 touches regions 0 and 1.
        assert_eq!(w, ["192", "16", "1.000000", "0", "2", "0.500000"]);
        assert!(hint_words("1 2\n", 128).unwrap_err().contains("line 1"));
        assert!(hint_words("1 0 0.5\n", 128).is_err());
        assert!(hint_words("1 8 1.5\n", 128).is_err());
    }

    #[test]
    fn crc_messages_cover_every_region() {
        // The standard CRC-32C check value (the module's is the same).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let data: Vec<u8> = (0..5 * 512 + 100).map(|i| (i % 251) as u8).collect();
        let m = crc_messages(&data[..], 512, 4).unwrap();
        let crc = |a: usize, b: usize| format!("{:08x}", crc32c::crc32c(&data[a..b]));
        assert_eq!(m.len(), 2);
        assert_eq!(m[0], format!("crc 0 {} {} {} {}", crc(0, 512), crc(512, 1024), crc(1024, 1536), crc(1536, 2048)));
        // The last region is as long as the data.
        assert_eq!(m[1], format!("crc 4 {} {}", crc(2048, 2560), crc(2560, 2660)));
        assert_eq!(crc_messages(&data[..1024], 512, 4).unwrap(), [format!("crc 0 {} {}", crc(0, 512), crc(512, 1024))]);
        assert!(crc_messages(&[][..], 512, 4).unwrap().is_empty());
    }
}
