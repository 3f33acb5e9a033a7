// SPDX-License-Identifier: GPL-2.0
//! `foresight predict push`.

use std::fs::File;
use std::io::{self, BufRead, BufReader};

use super::{bad_answer, exit, CmdResult, Failure};
use crate::dev::DevSpec;
use crate::nl::{self, AttrBuf, Client};
use crate::uapi::{self, predict_attr as A, range_attr as R};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Read,
    Write,
}

impl Kind {
    pub fn value(self) -> u32 {
        match self {
            Kind::Read => uapi::predict_kind::READ,
            Kind::Write => uapi::predict_kind::WRITE,
        }
    }
}

/// One predicted range, as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub length: u64,
    /// In millionths.
    pub probability: u32,
}

/// A probability in 0..=1 to millionths.
pub fn probability_to_fixed(p: f64) -> u32 {
    (p.clamp(0.0, 1.0) * uapi::PROBABILITY_ONE as f64).round() as u32
}

/// Parse one input line; `Ok(None)` for blank and comment lines.
pub fn parse_line(line: &str) -> Result<Option<Range>, String> {
    let line = match line.find('#') {
        Some(i) => &line[..i],
        None => line,
    };
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.is_empty() {
        return Ok(None);
    }
    if f.len() != 3 {
        return Err(format!(
            "expected `start_sector length_sectors probability`, got {} field{}",
            f.len(),
            if f.len() == 1 { "" } else { "s" }
        ));
    }
    let start: u64 = f[0]
        .parse()
        .map_err(|_| format!("bad start sector \"{}\"", f[0]))?;
    let length: u64 = f[1]
        .parse()
        .map_err(|_| format!("bad length \"{}\"", f[1]))?;
    if length == 0 {
        return Err("length must be at least 1 sector".into());
    }
    if start.checked_add(length).is_none() {
        return Err("range overflows the sector numbers".into());
    }
    let p: f64 = f[2]
        .parse()
        .map_err(|_| format!("bad probability \"{}\"", f[2]))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("probability {} not in 0..1", f[2]));
    }
    Ok(Some(Range {
        start,
        length,
        probability: probability_to_fixed(p),
    }))
}

/// Parse a whole input; the first bad line fails it all.
pub fn parse_input(r: impl BufRead) -> Result<Vec<Range>, String> {
    let mut out = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line.map_err(|e| format!("read line {}: {e}", i + 1))?;
        match parse_line(&line) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => return Err(format!("line {}: {e}", i + 1)),
        }
    }
    Ok(out)
}

/// The attributes of one predict request.
pub fn request_attrs(
    dev: &DevSpec,
    kind: Kind,
    horizon_ms: Option<u32>,
    ranges: &[Range],
) -> AttrBuf {
    let mut a = AttrBuf::new();
    a.device(A::NAME, A::DEV, dev);
    a.u32(A::KIND, kind.value());
    if let Some(h) = horizon_ms {
        a.u32(A::HORIZON_MS, h);
    }
    for r in ranges {
        let mut n = AttrBuf::new();
        n.u64(R::START, r.start)
            .u64(R::LENGTH, r.length)
            .u32(R::PROBABILITY, r.probability);
        a.nest(A::RANGE, n);
    }
    a
}

/// Push ranges in batches of at most `FORESIGHT_MAX_RANGES`; the total
/// accepted.
pub fn push(
    client: &mut Client,
    dev: &DevSpec,
    kind: Kind,
    horizon_ms: Option<u32>,
    ranges: &[Range],
) -> Result<u64, Failure> {
    let op = "predict";
    let mut total = 0u64;
    let batches = ranges.len().div_ceil(uapi::MAX_RANGES);
    for (i, batch) in ranges.chunks(uapi::MAX_RANGES).enumerate() {
        let a = request_attrs(dev, kind, horizon_ms, batch);
        let r = client
            .request_one(op, uapi::cmd::PREDICT, a)
            .map_err(|e| match e {
                // Say which batch (its range indexes are within it).
                nl::Error::Kernel { op, errno, msg } if batches > 1 => {
                    let first = i * uapi::MAX_RANGES + 1;
                    let text = msg.unwrap_or_else(|| nl::strerror(errno));
                    nl::Error::Kernel {
                        op,
                        errno,
                        msg: Some(format!(
                            "ranges {first}-{} of the input (earlier ones were pushed): {text}",
                            first + batch.len() - 1
                        )),
                    }
                }
                e => e,
            })?;
        let n = r
            .attrs()
            .u32(A::ACCEPTED)
            .map_err(|m| bad_answer(op, m))?
            .ok_or_else(|| bad_answer(op, "no accepted count in the reply"))?;
        total += n as u64;
    }
    Ok(total)
}

pub fn run(dev: &str, file: Option<&str>, kind: Kind, horizon_ms: Option<u32>) -> CmdResult {
    let dev = DevSpec::parse(dev)?;
    let ranges = match file {
        Some(f) if f != "-" => {
            let fh = File::open(f).map_err(|e| format!("{f}: {e}"))?;
            parse_input(BufReader::new(fh)).map_err(|e| format!("{f}: {e}"))?
        }
        _ => parse_input(io::stdin().lock()).map_err(|e| format!("stdin: {e}"))?,
    };
    let mut client = Client::connect()?;
    let accepted = if ranges.is_empty() {
        0
    } else {
        push(&mut client, &dev, kind, horizon_ms, &ranges)?
    };
    println!("{accepted}");
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(parse_line("   # only a comment").unwrap(), None);
        assert_eq!(
            parse_line("100 8 0.5").unwrap(),
            Some(Range {
                start: 100,
                length: 8,
                probability: 500_000
            })
        );
        assert_eq!(
            parse_line("\t0  1 1 # trailing").unwrap(),
            Some(Range {
                start: 0,
                length: 1,
                probability: 1_000_000
            })
        );
        assert_eq!(parse_line("5 5 0").unwrap().unwrap().probability, 0);
        assert_eq!(parse_line("5 5 1e-6").unwrap().unwrap().probability, 1);
        assert_eq!(
            parse_line("5 5 0.3333333").unwrap().unwrap().probability,
            333_333
        );
        assert!(parse_line("5 0 0.5").is_err());
        assert!(parse_line("5 5 1.5").is_err());
        assert!(parse_line("5 5 -0.1").is_err());
        assert!(parse_line("5 5 nan").is_err());
        assert!(parse_line("5 5").is_err());
        assert!(parse_line("5 5 0.5 7").is_err());
        assert!(parse_line("x 5 0.5").is_err());
        assert!(parse_line("-1 5 0.5").is_err());
        assert!(parse_line("18446744073709551615 1 0.5").is_err());
    }

    #[test]
    fn input_with_line_numbers() {
        let ok = "# predictions\n\n0 8 0.9\n64 8 0.25\n";
        assert_eq!(parse_input(ok.as_bytes()).unwrap().len(), 2);
        let bad = "0 8 0.9\n\n64 eight 0.25\n";
        assert_eq!(
            parse_input(bad.as_bytes()).unwrap_err(),
            "line 3: bad length \"eight\""
        );
    }

    #[test]
    fn batch_fits_a_message() {
        let dev = DevSpec::Name("x".repeat(127));
        let ranges = vec![
            Range {
                start: u64::MAX / 2,
                length: 1,
                probability: 1
            };
            uapi::MAX_RANGES
        ];
        let a = request_attrs(&dev, Kind::Write, Some(1000), &ranges);
        assert_eq!(a.len(), uapi::MAX_RANGES + 3);
        // 36 bytes a range, well under the default socket send buffer.
        assert!(a.wire_size() < 160 * 1024, "{}", a.wire_size());
    }
}
