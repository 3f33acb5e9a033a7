//! Importers of public block-trace formats into [`Access`] records:
//! SNIA/MSR Cambridge CSV, blkparse's default text output, fio iolog v2 and
//! v3, and a generic delimited format with a column mapping and units.
//! Timestamps become nanoseconds from the trace's first record.

use std::io::BufRead;

use crate::trace::{Access, Op, Trace, TraceError, TraceHeader};

/// A trace file format.
#[derive(Clone, Debug, PartialEq)]
pub enum Format {
    /// The tool's own (`# foresight-trace v1`).
    Foresight,
    /// SNIA/MSR Cambridge CSV: `Timestamp,Hostname,DiskNumber,Type,Offset,Size,ResponseTime`
    /// (Windows filetime, 100 ns units; bytes).
    Msr,
    /// blkparse's default output, the records of one action (default `Q`).
    Blkparse {
        /// The action whose records count (`Q` queued, `D` issued, `C` completed).
        action: char,
    },
    /// fio's iolog, version 2 (no timestamps) or 3 (milliseconds).
    FioLog,
    /// Delimited text with a column mapping.
    Delimited(Columns),
}

/// Where the fields of a delimited format are, and their units.
#[derive(Clone, Debug, PartialEq)]
pub struct Columns {
    /// Field separator (`,` by default; whitespace if `None`).
    pub delimiter: Option<char>,
    /// 0-based columns.
    pub time: Option<usize>,
    /// The op column: `r`, `read`, `0` read; `w`, `write`, `1` write;
    /// `d`, `discard`, `trim` discard (case ignored).
    pub op: usize,
    /// Offset column.
    pub offset: usize,
    /// Size column.
    pub size: usize,
    /// Nanoseconds per time unit.
    pub time_ns: f64,
    /// Bytes per offset unit.
    pub offset_bytes: u64,
    /// Bytes per size unit.
    pub size_bytes: u64,
    /// Lines to skip at the top (a header).
    pub skip: usize,
}

impl Columns {
    /// Parses `time=0,op=3,offset=1,size=2` with optional units
    /// `time=0:us`, `offset=1:sectors`, `size=2:bytes` and `skip=1`,
    /// `delimiter=tab|space|,|;` (1-based columns are not used: 0-based).
    pub fn parse(spec: &str) -> Result<Columns, String> {
        let mut c = Columns {
            delimiter: Some(','),
            time: None,
            op: usize::MAX,
            offset: usize::MAX,
            size: usize::MAX,
            time_ns: 1.0,
            offset_bytes: 1,
            size_bytes: 1,
            skip: 0,
        };
        for item in spec.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: want key=value"))?;
            let (col, unit) = match v.split_once(':') {
                Some((a, b)) => (a, Some(b)),
                None => (v, None),
            };
            let num = || {
                col.parse::<usize>()
                    .map_err(|_| format!("{item:?}: not a column number"))
            };
            match k {
                "time" => {
                    c.time = Some(num()?);
                    c.time_ns = match unit.unwrap_or("ns") {
                        "ns" => 1.0,
                        "us" => 1e3,
                        "ms" => 1e6,
                        "s" => 1e9,
                        "filetime" => 100.0,
                        u => return Err(format!("time unit {u:?}: ns, us, ms, s or filetime")),
                    };
                }
                "op" => c.op = num()?,
                "offset" | "size" => {
                    let b = match unit.unwrap_or("bytes") {
                        "bytes" => 1,
                        "sectors" => 512,
                        "kib" | "KiB" => 1024,
                        "blocks" => 4096,
                        u => return Err(format!("{k} unit {u:?}: bytes, sectors, KiB or blocks")),
                    };
                    if k == "offset" {
                        c.offset = num()?;
                        c.offset_bytes = b;
                    } else {
                        c.size = num()?;
                        c.size_bytes = b;
                    }
                }
                "skip" => c.skip = num()?,
                "delimiter" => {
                    c.delimiter = match v {
                        "tab" => Some('\t'),
                        "space" | "whitespace" => None,
                        d if d.chars().count() == 1 => d.chars().next(),
                        d => return Err(format!("delimiter {d:?}")),
                    }
                }
                _ => return Err(format!("{k:?}: time, op, offset, size, skip or delimiter")),
            }
        }
        if c.op == usize::MAX || c.offset == usize::MAX || c.size == usize::MAX {
            return Err("the columns need op, offset and size".into());
        }
        Ok(c)
    }
}

/// Guesses a format from a file's first line.
pub fn detect(first: &str) -> Option<Format> {
    let l = first.trim();
    if l.starts_with("# foresight-trace") {
        return Some(Format::Foresight);
    }
    if l.starts_with("fio version 2 iolog") || l.starts_with("fio version 3 iolog") {
        return Some(Format::FioLog);
    }
    let f: Vec<&str> = l.split(',').collect();
    if f.len() == 7 && matches!(f[3], "Read" | "Write") && f[0].parse::<u64>().is_ok() {
        return Some(Format::Msr);
    }
    let w: Vec<&str> = l.split_whitespace().collect();
    if w.len() >= 7 && w[0].contains(',') && w[3].contains('.') && w[5].len() <= 2 {
        return Some(Format::Blkparse { action: 'Q' });
    }
    None
}

fn op_of(s: &str) -> Option<Op> {
    match s.to_ascii_lowercase().as_str() {
        "r" | "read" | "0" => Some(Op::Read),
        "w" | "write" | "1" => Some(Op::Write),
        "d" | "discard" | "trim" => Some(Op::Discard),
        _ => None,
    }
}

fn bad(line: usize, msg: impl Into<String>) -> TraceError {
    TraceError::Parse {
        line,
        message: msg.into(),
    }
}

/// One parsed record: time (ns, any origin), op, first sector, sectors.
type Rec = (u64, Op, u64, u64);

fn parse_line(fmt: &Format, line: &str, n: usize, fio_v3: bool) -> Result<Option<Rec>, TraceError> {
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') {
        return Ok(None);
    }
    let num = |s: &str, what: &str| -> Result<u64, TraceError> {
        s.trim()
            .parse::<u64>()
            .map_err(|_| bad(n, format!("{what} {s:?} is not a number")))
    };
    match fmt {
        Format::Foresight => Err(bad(n, "the tool's own format is read by TraceReader")),
        Format::Msr => {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() < 6 {
                return Err(bad(n, "MSR CSV wants 7 fields"));
            }
            let op = op_of(f[3]).ok_or_else(|| bad(n, format!("type {:?}", f[3])))?;
            let (off, size) = (num(f[4], "offset")?, num(f[5], "size")?);
            Ok(Some((
                num(f[0], "timestamp")?.saturating_mul(100),
                op,
                off / 512,
                size.div_ceil(512),
            )))
        }
        Format::Blkparse { action } => {
            let w: Vec<&str> = l.split_whitespace().collect();
            // dev cpu seq time pid action rwbs sector + count [proc]
            if w.len() < 10 || !w[0].contains(',') || w[5] != action.to_string() || w[8] != "+" {
                return Ok(None); // other actions, summaries, notes
            }
            let rwbs = w[6];
            let op = if rwbs.contains('D') {
                Op::Discard
            } else if rwbs.contains('W') {
                Op::Write
            } else if rwbs.contains('R') {
                Op::Read
            } else {
                return Ok(None); // flushes, barriers without data
            };
            let secs: f64 = w[3]
                .parse()
                .map_err(|_| bad(n, format!("time {:?}", w[3])))?;
            Ok(Some((
                (secs * 1e9) as u64,
                op,
                num(w[7], "sector")?,
                num(w[9], "count")?,
            )))
        }
        Format::FioLog => {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (ts, rest) = if fio_v3 {
                match w.split_first() {
                    Some((t, r)) => (num(t, "timestamp")?.saturating_mul(1_000_000), r),
                    None => return Ok(None),
                }
            } else {
                (0, &w[..])
            };
            // filename action [offset length]
            if rest.len() < 4 {
                return Ok(None); // add, open, close, wait
            }
            let op = match rest[1] {
                "read" => Op::Read,
                "write" => Op::Write,
                "trim" => Op::Discard,
                _ => return Ok(None),
            };
            let (off, len) = (num(rest[2], "offset")?, num(rest[3], "length")?);
            Ok(Some((ts, op, off / 512, len.div_ceil(512))))
        }
        Format::Delimited(c) => {
            let f: Vec<&str> = match c.delimiter {
                Some(d) => l.split(d).collect(),
                None => l.split_whitespace().collect(),
            };
            let get = |i: usize, what: &str| {
                f.get(i)
                    .copied()
                    .ok_or_else(|| bad(n, format!("no {what} column {i}")))
            };
            let op = op_of(get(c.op, "op")?.trim())
                .ok_or_else(|| bad(n, format!("op {:?}", f.get(c.op))))?;
            let off = num(get(c.offset, "offset")?, "offset")?.saturating_mul(c.offset_bytes);
            let size = num(get(c.size, "size")?, "size")?.saturating_mul(c.size_bytes);
            let ts = match c.time {
                Some(i) => {
                    let t: f64 = get(i, "time")?
                        .trim()
                        .parse()
                        .map_err(|_| bad(n, "time is not a number"))?;
                    (t * c.time_ns) as u64
                }
                None => 0,
            };
            Ok(Some((ts, op, off / 512, size.div_ceil(512))))
        }
    }
}

/// Reads a trace of any format; `name` names the device in the header.
pub fn read(input: impl BufRead, fmt: Option<Format>, name: &str) -> Result<Trace, TraceError> {
    let mut lines = input.lines();
    let first = match lines.next() {
        Some(l) => l.map_err(TraceError::Io)?,
        None => return Err(bad(1, "empty file")),
    };
    let fmt = match fmt.or_else(|| detect(&first)) {
        Some(f) => f,
        None => return Err(bad(1, "unknown format: give --format (or --columns)")),
    };
    if fmt == Format::Foresight {
        let text = std::iter::once(Ok(first))
            .chain(lines)
            .collect::<Result<Vec<_>, _>>()
            .map_err(TraceError::Io)?
            .join("\n");
        return Trace::read(text.as_bytes());
    }
    let fio_v3 = first.trim().starts_with("fio version 3");
    let skip = match &fmt {
        Format::Delimited(c) => c.skip,
        Format::FioLog => 1,
        _ => 0,
    };
    let mut recs = Vec::new();
    for (i, line) in std::iter::once(Ok(first)).chain(lines).enumerate() {
        let line = line.map_err(TraceError::Io)?;
        if i < skip {
            continue;
        }
        if let Some(r) = parse_line(&fmt, &line, i + 1, fio_v3)? {
            recs.push(r);
        }
    }
    // blkparse lists per CPU, not in time order.
    if matches!(fmt, Format::Blkparse { .. }) {
        recs.sort_by_key(|r| r.0);
    }
    let t0 = recs.iter().map(|r| r.0).min().unwrap_or(0);
    let mut top = 0u64;
    let accesses = recs
        .into_iter()
        .filter(|r| r.3 > 0 && r.3 <= u64::from(u32::MAX))
        .map(|(ts, op, sector, sectors)| {
            top = top.max(sector.saturating_add(sectors));
            Access {
                ts_ns: ts - t0,
                sector,
                sectors: sectors as u32,
                op,
            }
        })
        .collect();
    Ok(Trace {
        header: TraceHeader {
            device: name.to_string(),
            dev: "0:0".to_string(),
            sectors: top,
        },
        accesses,
        dropped: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(t: &Trace) -> Vec<(u64, Op, u64, u32)> {
        t.accesses
            .iter()
            .map(|a| (a.ts_ns, a.op, a.sector, a.sectors))
            .collect()
    }

    #[test]
    fn msr() {
        let s = "128166372003061629,hm,1,Read,383496192,32768,1207\n\
                 128166372003071629,hm,1,Write,4096,4096,40\n";
        let t = read(s.as_bytes(), None, "hm_1").unwrap();
        assert_eq!(
            acc(&t),
            vec![(0, Op::Read, 749016, 64), (1_000_000, Op::Write, 8, 8)]
        );
        assert_eq!(t.header.sectors, 749016 + 64);
    }

    #[test]
    fn blkparse() {
        let s = "  8,0    1        2     0.000100000  4162  Q   W 2048 + 16 [fio]\n\
                 \x20 8,0    0        1     0.000000000  4162  Q   R 1000 + 8 [fio]\n\
                 \x20 8,0    0        2     0.000050000  4162  D   R 1000 + 8 [fio]\n\
                 \x20 8,0    0        3     0.000200000  4162  Q  FWS 0 + 0 [fio]\n\
                 \x20 8,0    0        4     0.000300000  4162  Q  DS 4096 + 64 [fio]\n\
                 CPU0 (8,0):\n Reads Queued: 1, 4KiB\n";
        let t = read(s.as_bytes(), None, "sda").unwrap();
        assert_eq!(
            acc(&t),
            vec![
                (0, Op::Read, 1000, 8),
                (100_000, Op::Write, 2048, 16),
                (300_000, Op::Discard, 4096, 64)
            ]
        );
        let d = read(s.as_bytes(), Some(Format::Blkparse { action: 'D' }), "sda").unwrap();
        assert_eq!(acc(&d), vec![(0, Op::Read, 1000, 8)]);
    }

    #[test]
    fn fio_logs() {
        let v2 = "fio version 2 iolog\n/dev/vdb add\n/dev/vdb open\n/dev/vdb write 4096 4096\n\
                  /dev/vdb read 0 8192\n/dev/vdb trim 8192 4096\n/dev/vdb close\n";
        let t = read(v2.as_bytes(), None, "vdb").unwrap();
        assert_eq!(
            acc(&t),
            vec![
                (0, Op::Write, 8, 8),
                (0, Op::Read, 0, 16),
                (0, Op::Discard, 16, 8)
            ]
        );
        let v3 = "fio version 3 iolog\n10 /dev/vdb add\n12 /dev/vdb open\n15 /dev/vdb read 512 512\n17 /dev/vdb write 0 4096\n";
        let t = read(v3.as_bytes(), None, "vdb").unwrap();
        assert_eq!(
            acc(&t),
            vec![(0, Op::Read, 1, 1), (2_000_000, Op::Write, 0, 8)]
        );
    }

    #[test]
    fn delimited_tencent_style() {
        // Tencent CBS: Timestamp(s),Offset(sectors),Size(sectors),IOType(0 read),VolumeID
        let c = Columns::parse("time=0:s,offset=1:sectors,size=2:sectors,op=3").unwrap();
        let s = "1538323200,1024,8,0,1283\n1538323201,2048,16,1,1283\n";
        let t = read(s.as_bytes(), Some(Format::Delimited(c)), "vol").unwrap();
        assert_eq!(
            acc(&t),
            vec![(0, Op::Read, 1024, 8), (1_000_000_000, Op::Write, 2048, 16)]
        );
        let c = Columns::parse("op=0,offset=1:blocks,size=2:KiB,delimiter=space,skip=1").unwrap();
        let t = read(
            "op off size\nR 3 4\n".as_bytes(),
            Some(Format::Delimited(c)),
            "x",
        )
        .unwrap();
        assert_eq!(acc(&t), vec![(0, Op::Read, 24, 8)]);
        assert!(Columns::parse("op=0,offset=1").is_err());
        assert!(Columns::parse("op=0,offset=1,size=2,time=3:hours").is_err());
        let c = Columns::parse("op=0,offset=1,size=2").unwrap();
        let e = read("X,1,2\n".as_bytes(), Some(Format::Delimited(c)), "x").unwrap_err();
        assert_eq!(e.line(), Some(1));
    }

    #[test]
    fn own_format_and_unknown() {
        let s = "# foresight-trace v1\n# device x 0:0 100\n0 R 8 8\n";
        let t = read(s.as_bytes(), None, "ignored").unwrap();
        assert_eq!(acc(&t), vec![(0, Op::Read, 8, 8)]);
        assert!(read("hello world\n".as_bytes(), None, "x").is_err());
    }
}
