//! Access records and the trace file format.
//!
//! # Kernel records
//!
//! The kernel sends access records in the `records` attribute of a trace
//! notification: an array of [`RECORD_BYTES`]-byte records in host byte
//! order — `u64` submission time (`ktime_get_ns`, `CLOCK_MONOTONIC`), `u64`
//! first sector (relative to the device), `u32` length in sectors, `u8` op
//! (`enum foresight_op`, see [`Op`]) and 3 bytes of padding.
//! [`decode_records`] and [`encode_record`] convert between that layout and
//! [`Access`].
//!
//! # Trace files
//!
//! A trace file is UTF-8 text, one item per line:
//!
//! ```text
//! # foresight-trace v1
//! # device <dm-name> <major:minor> <sectors>
//! <ts_ns> <op letter> <sector> <sectors>
//! ...
//! # dropped <total records dropped so far>
//! ```
//!
//! * The first line is exactly `# foresight-trace v1`.
//! * The `# device` line names the traced device: its device-mapper name
//!   (which may contain inner spaces), its `major:minor` number and its size
//!   in 512-byte sectors.  It must come before the first record, and may
//!   appear only once.
//! * A record line has four fields separated by whitespace: the submission
//!   time in nanoseconds, the op letter of [`Op::letter`] (`R W F D Z O`),
//!   the first sector and the length in sectors.
//! * A `# dropped <n>` line gives the total number of records the kernel has
//!   dropped so far (rate limit, full buffer, slow listener).  It may appear
//!   anywhere after the first line and any number of times; the last value
//!   wins.
//! * Any other line starting with `#` is a comment; blank lines are ignored.
//! * Anything else is an error, reported with its 1-based line number.
//!
//! [`TraceWriter`] writes this format and [`TraceReader`] reads it.

use std::io::{self, BufRead, BufWriter, Write};

/// Kind of an access; the values are those of the kernel's
/// `enum foresight_op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// A read.
    Read = 0,
    /// A write.
    Write = 1,
    /// A cache flush (usually zero sectors).
    Flush = 2,
    /// A discard.
    Discard = 3,
    /// A write of zeroes.
    WriteZeroes = 4,
    /// Anything else.
    Other = 5,
}

impl Op {
    /// All ops, in kernel value order.
    pub const ALL: [Op; 6] = [
        Op::Read,
        Op::Write,
        Op::Flush,
        Op::Discard,
        Op::WriteZeroes,
        Op::Other,
    ];

    /// The op of a kernel value; unknown values give [`Op::Other`].
    pub fn from_u8(v: u8) -> Op {
        match v {
            0 => Op::Read,
            1 => Op::Write,
            2 => Op::Flush,
            3 => Op::Discard,
            4 => Op::WriteZeroes,
            _ => Op::Other,
        }
    }

    /// The letter of this op in trace files: `R W F D Z O`.
    pub fn letter(self) -> char {
        match self {
            Op::Read => 'R',
            Op::Write => 'W',
            Op::Flush => 'F',
            Op::Discard => 'D',
            Op::WriteZeroes => 'Z',
            Op::Other => 'O',
        }
    }

    /// The op of a trace-file letter (upper case only).
    pub fn from_letter(c: char) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.letter() == c)
    }
}

/// One access to the device, as recorded by the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Submission time, nanoseconds of `CLOCK_MONOTONIC`.
    pub ts_ns: u64,
    /// First sector (512 bytes), relative to the device.
    pub sector: u64,
    /// Length in sectors.
    pub sectors: u32,
    /// Kind of access.
    pub op: Op,
}

use foresight_logic::trace::Record;
/// Size of one kernel access record (u64 ts_ns, u64 sector, u32 sectors, u8
/// op, 3 pad bytes; host byte order): the module's own layout.
pub use foresight_logic::trace::RECORD_BYTES;

/// Why a trace could not be decoded or read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Reading the underlying stream failed.
    #[error("reading the trace: {0}")]
    Io(#[source] io::Error),
    /// A records payload whose length is not a multiple of [`RECORD_BYTES`].
    #[error("records payload of {len} bytes is not a whole number of {RECORD_BYTES}-byte records")]
    PartialRecord {
        /// Length of the payload in bytes.
        len: usize,
    },
    /// A malformed trace-file line.
    #[error("line {line}: {message}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

impl TraceError {
    /// The 1-based line number of a parse error.
    pub fn line(&self) -> Option<usize> {
        match self {
            TraceError::Parse { line, .. } => Some(*line),
            _ => None,
        }
    }

    fn parse(line: usize, message: impl Into<String>) -> TraceError {
        TraceError::Parse {
            line,
            message: message.into(),
        }
    }
}

impl From<io::Error> for TraceError {
    fn from(e: io::Error) -> Self {
        TraceError::Io(e)
    }
}

/// Decodes a netlink `records` attribute payload (array of 24-byte records,
/// the module's [`Record`] layout); a trailing partial record is an error.
pub fn decode_records(buf: &[u8]) -> Result<Vec<Access>, TraceError> {
    if !buf.len().is_multiple_of(RECORD_BYTES) {
        return Err(TraceError::PartialRecord { len: buf.len() });
    }
    Ok(buf
        .chunks_exact(RECORD_BYTES)
        .map(|r| {
            let r = Record::decode(r.try_into().expect("a whole record"));
            Access {
                ts_ns: r.ts_ns,
                sector: r.sector,
                sectors: r.sectors,
                op: Op::from_u8(r.op),
            }
        })
        .collect())
}

/// Encodes one access as a kernel record (padding zeroed).
pub fn encode_record(a: &Access) -> [u8; RECORD_BYTES] {
    Record {
        ts_ns: a.ts_ns,
        sector: a.sector,
        sectors: a.sectors,
        op: a.op as u8,
    }
    .encode()
}

/// First line of every trace file.
pub const MAGIC: &str = "# foresight-trace v1";

/// The traced device, from the `# device` line of a trace file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceHeader {
    /// Device-mapper name.
    pub device: String,
    /// Device number, `"major:minor"`.
    pub dev: String,
    /// Size in 512-byte sectors.
    pub sectors: u64,
}

fn valid_dev(dev: &str) -> bool {
    dev.split_once(':')
        .is_some_and(|(ma, mi)| ma.parse::<u32>().is_ok() && mi.parse::<u32>().is_ok())
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Writes a trace file (see the [module docs](self)).
///
/// Output is buffered; [`TraceWriter::flush`] pushes it out (for a live
/// trace), and [`TraceWriter::finish`] flushes and returns the writer.
pub struct TraceWriter<W: Write> {
    out: BufWriter<W>,
    dropped: u64,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the header lines.
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] for a header the reader
    /// would refuse: an empty device name, one with a line break or with
    /// leading or trailing whitespace, or a `dev` that is not `major:minor`.
    pub fn new(w: W, header: &TraceHeader) -> io::Result<Self> {
        let name = &header.device;
        if name.is_empty() || name.contains(['\n', '\r']) || name.trim() != name {
            return Err(invalid_input(format!(
                "device name {name:?} cannot be written to a trace"
            )));
        }
        if !valid_dev(&header.dev) {
            return Err(invalid_input(format!(
                "device number {:?} is not major:minor",
                header.dev
            )));
        }
        let mut out = BufWriter::new(w);
        writeln!(out, "{MAGIC}")?;
        writeln!(
            out,
            "# device {} {} {}",
            header.device, header.dev, header.sectors
        )?;
        Ok(TraceWriter { out, dropped: 0 })
    }

    /// Writes one record line.
    pub fn write(&mut self, a: &Access) -> io::Result<()> {
        writeln!(
            self.out,
            "{} {} {} {}",
            a.ts_ns,
            a.op.letter(),
            a.sector,
            a.sectors
        )
    }

    /// Notes the total number of records dropped so far with a `# dropped`
    /// line; writes nothing if the total has not changed since the last call
    /// (or is still 0).
    pub fn note_dropped(&mut self, total: u64) -> io::Result<()> {
        if total == self.dropped {
            return Ok(());
        }
        self.dropped = total;
        writeln!(self.out, "# dropped {total}")
    }

    /// Writes a comment line (`# ` and the text; line breaks become spaces).
    pub fn comment(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.out, "# {}", text.replace(['\n', '\r'], " "))
    }

    /// Flushes buffered lines to the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(self) -> io::Result<W> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Reads a trace file (see the [module docs](self)), record by record.
///
/// After an I/O error the iterator ends; after a parse error it goes on with
/// the next line.
pub struct TraceReader<R: BufRead> {
    input: R,
    header: TraceHeader,
    dropped: u64,
    line: usize,
    buf: Vec<u8>,
    failed: bool,
}

/// What one line of a trace file holds.
enum Line {
    Blank,
    Device(TraceHeader),
    Dropped(u64),
    Record(Access),
}

fn parse_line(text: &str, line: usize) -> Result<Line, TraceError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Line::Blank);
    }
    if let Some(rest) = text.strip_prefix('#') {
        let rest = rest.trim_start();
        let (word, args) = rest
            .split_once(char::is_whitespace)
            .map_or((rest, ""), |(w, a)| (w, a.trim()));
        return match word {
            "dropped" => args
                .parse()
                .map(Line::Dropped)
                .map_err(|_| TraceError::parse(line, format!("bad dropped count {args:?}"))),
            "device" => parse_device(args, line).map(Line::Device),
            "foresight-trace" if args.starts_with('v') => Err(TraceError::parse(
                line,
                "trace header repeated or of an unsupported version",
            )),
            _ => Ok(Line::Blank),
        };
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [ts, op, sector, sectors] = fields[..] else {
        return Err(TraceError::parse(
            line,
            format!(
                "expected `<ts_ns> <op> <sector> <sectors>`, got {} fields",
                fields.len()
            ),
        ));
    };
    let number = |what: &str, s: &str| {
        s.parse::<u64>()
            .map_err(|_| TraceError::parse(line, format!("bad {what} {s:?}")))
    };
    let mut letters = op.chars();
    let op = match (letters.next().and_then(Op::from_letter), letters.next()) {
        (Some(op), None) => op,
        _ => return Err(TraceError::parse(line, format!("bad op {op:?}"))),
    };
    Ok(Line::Record(Access {
        ts_ns: number("timestamp", ts)?,
        op,
        sector: number("sector", sector)?,
        sectors: sectors
            .parse()
            .map_err(|_| TraceError::parse(line, format!("bad length {sectors:?}")))?,
    }))
}

fn parse_device(args: &str, line: usize) -> Result<TraceHeader, TraceError> {
    let bad = || TraceError::parse(line, "expected `# device <name> <major:minor> <sectors>`");
    let (head, sectors) = args.rsplit_once(char::is_whitespace).ok_or_else(bad)?;
    let (name, dev) = head
        .trim_end()
        .rsplit_once(char::is_whitespace)
        .ok_or_else(bad)?;
    let name = name.trim_end();
    if name.is_empty() {
        return Err(bad());
    }
    if !valid_dev(dev) {
        return Err(TraceError::parse(
            line,
            format!("device number {dev:?} is not major:minor"),
        ));
    }
    let sectors = sectors
        .parse()
        .map_err(|_| TraceError::parse(line, format!("bad device size {sectors:?}")))?;
    Ok(TraceHeader {
        device: name.to_string(),
        dev: dev.to_string(),
        sectors,
    })
}

impl<R: BufRead> TraceReader<R> {
    /// Reads the header: the magic line, then everything up to and including
    /// the `# device` line.
    pub fn new(input: R) -> Result<Self, TraceError> {
        let mut reader = TraceReader {
            input,
            header: TraceHeader {
                device: String::new(),
                dev: String::new(),
                sectors: 0,
            },
            dropped: 0,
            line: 0,
            buf: Vec::new(),
            failed: false,
        };
        match reader.next_line()? {
            Some(text) if text.trim_end() == MAGIC => {}
            Some(_) => {
                return Err(TraceError::parse(
                    1,
                    format!("not a trace file: expected {MAGIC:?}"),
                ))
            }
            None => return Err(TraceError::parse(1, "empty file, not a trace")),
        }
        loop {
            let line = reader.line + 1;
            let Some(text) = reader.next_line()? else {
                return Err(TraceError::parse(line, "no `# device` line"));
            };
            match parse_line(&text, line)? {
                Line::Blank => {}
                Line::Dropped(n) => reader.dropped = n,
                Line::Device(h) => {
                    reader.header = h;
                    return Ok(reader);
                }
                Line::Record(_) => {
                    return Err(TraceError::parse(line, "record before the `# device` line"))
                }
            }
        }
    }

    /// The traced device.
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// The last `# dropped` total read so far (0 if none).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Number of lines read so far.
    pub fn lines(&self) -> usize {
        self.line
    }

    /// The next line, without its line break; `None` at the end.
    fn next_line(&mut self) -> Result<Option<String>, TraceError> {
        self.buf.clear();
        if self.input.read_until(b'\n', &mut self.buf)? == 0 {
            return Ok(None);
        }
        self.line += 1;
        let bytes = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Some(s.to_string())),
            Err(_) => Err(TraceError::parse(self.line, "not UTF-8 text")),
        }
    }
}

impl<R: BufRead> Iterator for TraceReader<R> {
    type Item = Result<Access, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            let text = match self.next_line() {
                Ok(Some(text)) => text,
                Ok(None) => return None,
                Err(e) => {
                    self.failed = matches!(e, TraceError::Io(_));
                    return Some(Err(e));
                }
            };
            match parse_line(&text, self.line) {
                Ok(Line::Blank) => {}
                Ok(Line::Dropped(n)) => self.dropped = n,
                Ok(Line::Record(a)) => return Some(Ok(a)),
                Ok(Line::Device(_)) => {
                    return Some(Err(TraceError::parse(
                        self.line,
                        "`# device` line repeated",
                    )))
                }
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }
}

/// A whole trace file in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// The traced device.
    pub header: TraceHeader,
    /// The records, in file order.
    pub accesses: Vec<Access>,
    /// The last `# dropped` total (0 if none).
    pub dropped: u64,
}

impl Trace {
    /// Reads a whole trace file; the first error ends it.
    pub fn read<R: BufRead>(input: R) -> Result<Trace, TraceError> {
        let mut reader = TraceReader::new(input)?;
        let accesses = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
        Ok(Trace {
            header: reader.header().clone(),
            accesses,
            dropped: reader.dropped(),
        })
    }

    /// Writes the trace file, with a `# dropped` line at the end if any
    /// records were dropped.
    pub fn write<W: Write>(&self, out: W) -> io::Result<W> {
        let mut w = TraceWriter::new(out, &self.header)?;
        for a in &self.accesses {
            w.write(a)?;
        }
        w.note_dropped(self.dropped)?;
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> TraceHeader {
        TraceHeader {
            device: "fs0".into(),
            dev: "253:4".into(),
            sectors: 1 << 21,
        }
    }

    fn access(ts_ns: u64, op: Op, sector: u64, sectors: u32) -> Access {
        Access {
            ts_ns,
            sector,
            sectors,
            op,
        }
    }

    #[test]
    fn op_values_and_letters() {
        for (v, op) in Op::ALL.into_iter().enumerate() {
            assert_eq!(op as u8 as usize, v);
            assert_eq!(Op::from_u8(v as u8), op);
            assert_eq!(Op::from_letter(op.letter()), Some(op));
        }
        assert_eq!(Op::from_u8(6), Op::Other);
        assert_eq!(Op::from_u8(255), Op::Other);
        assert_eq!(Op::from_letter('r'), None);
        assert_eq!(Op::from_letter('X'), None);
    }

    #[test]
    fn records_round_trip_and_layout() {
        let accesses = [
            access(1, Op::Read, 0, 8),
            access(u64::MAX, Op::WriteZeroes, u64::MAX - 7, u32::MAX),
            access(42, Op::Flush, 0, 0),
        ];
        let buf: Vec<u8> = accesses.iter().flat_map(encode_record).collect();
        assert_eq!(buf.len(), 3 * RECORD_BYTES);
        assert_eq!(decode_records(&buf).unwrap(), accesses);

        let r = encode_record(&access(0x0102, Op::Discard, 0x0304, 0x0506));
        assert_eq!(r[0..8], 0x0102u64.to_ne_bytes());
        assert_eq!(r[8..16], 0x0304u64.to_ne_bytes());
        assert_eq!(r[16..20], 0x0506u32.to_ne_bytes());
        assert_eq!(r[20..], [3, 0, 0, 0]);
    }

    #[test]
    fn unknown_op_and_padding_decode() {
        let mut r = encode_record(&access(5, Op::Read, 6, 7));
        r[20] = 99;
        r[21..].copy_from_slice(&[0xff; 3]);
        assert_eq!(decode_records(&r).unwrap(), [access(5, Op::Other, 6, 7)]);
    }

    #[test]
    fn partial_record_rejected() {
        let buf: Vec<u8> = encode_record(&access(1, Op::Read, 2, 3))
            .into_iter()
            .chain([0; 5])
            .collect();
        let err = decode_records(&buf).unwrap_err();
        assert!(
            matches!(err, TraceError::PartialRecord { len: 29 }),
            "{err}"
        );
        assert!(matches!(
            decode_records(&buf[..23]),
            Err(TraceError::PartialRecord { len: 23 })
        ));
        assert_eq!(decode_records(&[]).unwrap(), []);
    }

    #[test]
    fn writer_reader_round_trip_with_dropped_and_comments() {
        let mut w = TraceWriter::new(Vec::new(), &header()).unwrap();
        w.write(&access(10, Op::Read, 0, 8)).unwrap();
        w.note_dropped(0).unwrap(); // unchanged: no line
        w.note_dropped(3).unwrap();
        w.note_dropped(3).unwrap(); // unchanged: no line
        w.comment("a comment\nacross lines").unwrap();
        w.write(&access(20, Op::Write, 16, 16)).unwrap();
        w.note_dropped(7).unwrap();
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(
            text,
            "# foresight-trace v1\n# device fs0 253:4 2097152\n10 R 0 8\n# dropped 3\n\
             # a comment across lines\n20 W 16 16\n# dropped 7\n"
        );

        let mut r = TraceReader::new(text.as_bytes()).unwrap();
        assert_eq!(r.header(), &header());
        assert_eq!(r.next().unwrap().unwrap(), access(10, Op::Read, 0, 8));
        assert_eq!(r.dropped(), 0);
        assert_eq!(r.next().unwrap().unwrap(), access(20, Op::Write, 16, 16));
        assert_eq!(r.dropped(), 3);
        assert!(r.next().is_none());
        assert_eq!(r.dropped(), 7);
    }

    #[test]
    fn reader_is_lenient_where_documented() {
        let text =
            "# foresight-trace v1\r\n\n# hello\n# dropped 2\n#device  my dm dev   8:0  100 \n\n \
                    5  F 0 0\n# dropped\t1\n# just a comment\n6 O 1 1";
        let t = Trace::read(text.as_bytes()).unwrap();
        assert_eq!(
            t.header,
            TraceHeader {
                device: "my dm dev".into(),
                dev: "8:0".into(),
                sectors: 100
            }
        );
        assert_eq!(
            t.accesses,
            [access(5, Op::Flush, 0, 0), access(6, Op::Other, 1, 1)]
        );
        assert_eq!(t.dropped, 1);
    }

    fn error_line(text: &str) -> (usize, String) {
        let err = match TraceReader::new(text.as_bytes()) {
            Err(e) => e,
            Ok(mut r) => r
                .find_map(Result::err)
                .expect("the trace should have a bad line"),
        };
        let line = err.line().expect("a parse error");
        let shown = err.to_string();
        assert!(shown.starts_with(&format!("line {line}: ")), "{shown}");
        (line, shown)
    }

    #[test]
    fn malformed_lines_are_rejected_with_their_number() {
        let head = "# foresight-trace v1\n# device d 1:2 8\n";
        let cases: &[(&str, usize, &str)] = &[
            ("1 R 0 8\n1 R 0\n", 4, "got 3 fields"),
            ("1 R 0 8 9\n", 3, "got 5 fields"),
            ("1 X 0 8\n", 3, "bad op"),
            ("1 RW 0 8\n", 3, "bad op"),
            ("1 r 0 8\n", 3, "bad op"),
            ("-1 R 0 8\n", 3, "bad timestamp"),
            ("1 R x 8\n", 3, "bad sector"),
            ("1 R 0 4294967296\n", 3, "bad length"),
            ("\n\n# dropped many\n", 5, "bad dropped count"),
            ("# device e 1:3 8\n", 3, "repeated"),
            ("# foresight-trace v1\n", 3, "repeated"),
        ];
        for &(body, line, what) in cases {
            let (got, shown) = error_line(&format!("{head}{body}"));
            assert_eq!(got, line, "{body:?}: {shown}");
            assert!(shown.contains(what), "{body:?}: {shown}");
        }
    }

    #[test]
    fn bad_headers_are_rejected() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "empty"),
            ("# foresight-trace v2\n# device d 1:2 8\n", 1, "not a trace"),
            ("1 R 0 8\n", 1, "not a trace"),
            ("# foresight-trace v1\n# c\n", 3, "no `# device`"),
            (
                "# foresight-trace v1\n1 R 0 8\n",
                2,
                "before the `# device`",
            ),
            (
                "# foresight-trace v1\n# device d 1-2 8\n",
                2,
                "not major:minor",
            ),
            (
                "# foresight-trace v1\n# device d 1:2 big\n",
                2,
                "bad device size",
            ),
            (
                "# foresight-trace v1\n# device 1:2 8\n",
                2,
                "expected `# device",
            ),
        ];
        for &(text, line, what) in cases {
            let (got, shown) = error_line(text);
            assert_eq!(got, line, "{text:?}: {shown}");
            assert!(shown.contains(what), "{text:?}: {shown}");
        }
    }

    #[test]
    fn non_utf8_line_is_a_parse_error_and_reading_goes_on() {
        let mut text = b"# foresight-trace v1\n# device d 1:2 8\n".to_vec();
        text.extend_from_slice(b"1 R \xff 8\n2 R 0 8\n");
        let mut r = TraceReader::new(&text[..]).unwrap();
        let err = r.next().unwrap().unwrap_err();
        assert_eq!(err.line(), Some(3));
        assert_eq!(r.next().unwrap().unwrap(), access(2, Op::Read, 0, 8));
        assert!(r.next().is_none());
    }

    #[test]
    fn writer_refuses_unreadable_headers() {
        for (device, dev) in [
            ("", "1:2"),
            (" lead", "1:2"),
            ("trail ", "1:2"),
            ("two\nlines", "1:2"),
            ("ok", "1"),
            ("ok", "a:b"),
        ] {
            let h = TraceHeader {
                device: device.into(),
                dev: dev.into(),
                sectors: 1,
            };
            let err = TraceWriter::new(Vec::new(), &h).err().expect("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
