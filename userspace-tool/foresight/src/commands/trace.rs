// SPDX-License-Identifier: GPL-2.0
//! `foresight trace record`.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use foresight_predict::trace::{decode_records, TraceHeader, TraceWriter};
use foresight_predict::Access;

use super::status::dev_get;
use super::{exit, stop_flag, stopped, CmdResult, Failure};
use crate::dev::DevSpec;
use crate::nl::{self, Attrs, Client, Event, Listener, Reply};
use crate::uapi::{self, trace_attr as T};

/// Longest wait between checks of the stop conditions.
const TICK: Duration = Duration::from_millis(200);
/// How often the trace file is flushed while recording.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// A trace notification.
#[derive(Debug, Default, PartialEq)]
pub struct TraceMsg {
    pub name: Option<String>,
    pub dev: Option<u32>,
    pub records: Vec<Access>,
    pub dropped: Option<u64>,
}

impl TraceMsg {
    /// Decode a trace-ntf message; `Ok(None)` for other commands.
    pub fn from_reply(r: &Reply) -> Result<Option<Self>, String> {
        if r.cmd != uapi::cmd::TRACE_NTF {
            return Ok(None);
        }
        Self::from_attrs(r.attrs()).map(Some)
    }

    pub fn from_attrs(a: Attrs<'_>) -> Result<Self, String> {
        let records = match a.get(T::RECORDS) {
            Some(b) => decode_records(b).map_err(|e| format!("trace records: {e}"))?,
            None => Vec::new(),
        };
        Ok(TraceMsg {
            name: a.string(T::NAME),
            dev: a.u32(T::DEV)?,
            records,
            dropped: a.u64(T::DROPPED)?,
        })
    }

    /// Whether this is about the device `name`/`dev`: by number when both
    /// sides have one (names can change), else by name.
    pub fn is_of(&self, name: Option<&str>, dev: Option<u32>) -> bool {
        match (self.dev, dev) {
            (Some(a), Some(b)) => a == b,
            _ => name.is_some() && self.name.as_deref() == name,
        }
    }
}

/// Counts of a recording.
#[derive(Debug, Default)]
struct Counts {
    written: u64,
    dropped: u64,
    overruns: u64,
    bad: u64,
}

/// The device a recording keeps.
pub struct Target {
    pub name: String,
    pub dev: Option<u32>,
    /// The kernel's drop count when the recording began, if known.
    pub base_dropped: Option<u64>,
}

/// When a recording stops (besides a signal).
pub struct Limits {
    pub deadline: Option<Instant>,
    pub count: Option<u64>,
}

pub enum LoopError {
    Nl(nl::Error),
    Write(io::Error),
}

impl From<nl::Error> for LoopError {
    fn from(e: nl::Error) -> Self {
        LoopError::Nl(e)
    }
}

impl From<io::Error> for LoopError {
    fn from(e: io::Error) -> Self {
        LoopError::Write(e)
    }
}

/// Write the records of `target` from `listener` until a limit or `stop`.
fn record_loop<W: Write>(
    listener: &mut Listener,
    writer: &mut TraceWriter<W>,
    target: &Target,
    limits: &Limits,
    stop: &AtomicBool,
) -> Result<Counts, LoopError> {
    let mut c = Counts::default();
    // Kernel drops are cumulative per device; count those of this
    // recording.
    let mut base_dropped = target.base_dropped;
    let mut noted = 0u64;
    let mut warned_overrun = false;
    let mut flushed = Instant::now();
    let full = |c: &Counts| limits.count.is_some_and(|n| c.written >= n);

    'outer: while !stopped(stop) && !full(&c) {
        let now = Instant::now();
        if now.duration_since(flushed) >= FLUSH_EVERY {
            writer.flush()?;
            flushed = now;
        }
        let wait = match limits.deadline {
            Some(d) if now >= d => break,
            Some(d) => (d - now).min(TICK),
            None => TICK,
        };
        match listener.wait(wait)? {
            Event::Timeout => {}
            Event::Overrun => {
                c.overruns += 1;
                writer.comment(
                    "socket overrun: trace notifications lost here (number of records unknown)",
                )?;
                if !warned_overrun {
                    eprintln!("foresight: warning: trace notifications lost (socket overrun); recording goes on");
                    warned_overrun = true;
                }
            }
            Event::Messages(msgs) => {
                for m in msgs {
                    let t = match TraceMsg::from_reply(&m) {
                        Ok(Some(t)) => t,
                        Ok(None) => continue,
                        Err(_) => {
                            c.bad += 1;
                            continue;
                        }
                    };
                    if !t.is_of(Some(&target.name), target.dev) {
                        continue;
                    }
                    for a in &t.records {
                        if full(&c) {
                            break;
                        }
                        writer.write(a)?;
                        c.written += 1;
                    }
                    if let Some(d) = t.dropped {
                        let base = *base_dropped.get_or_insert(d);
                        let since = d.saturating_sub(base);
                        if since != noted {
                            writer.note_dropped(since)?;
                            noted = since;
                            c.dropped = since;
                        }
                    }
                    if full(&c) {
                        break 'outer;
                    }
                }
            }
        }
    }
    Ok(c)
}

pub fn record(dev: &str, output: &str, duration: Option<f64>, count: Option<u64>) -> CmdResult {
    let spec = DevSpec::parse(dev)?;
    if let Some(d) = duration {
        if !(d > 0.0 && d.is_finite()) {
            return Err(format!("--duration must be a positive number of seconds, not {d}").into());
        }
    }
    let stop = stop_flag()?;
    // Join first: nothing between the header and the first record is lost.
    let mut listener = Listener::subscribe(uapi::MCGRP_TRACE)?;
    let mut client = Client::with_family(listener.family())?;
    let info = dev_get(&mut client, &spec)?;
    drop(client);
    let name = info.name.clone().unwrap_or_else(|| match &spec {
        DevSpec::Name(n) => n.clone(),
        DevSpec::Num(d) => d.to_string(),
    });
    let devnum = info.devnum();
    let header = TraceHeader {
        device: name.clone(),
        dev: devnum
            .map(|d| d.to_string())
            .unwrap_or_else(|| "0:0".into()),
        sectors: info.sectors.unwrap_or(0),
    };
    if listener.rcvbuf < crate::nl::LISTEN_RCVBUF {
        eprintln!(
            "foresight: warning: the socket receive buffer is only {} KiB (net.core.rmem_max); \
             notifications may be lost under load",
            listener.rcvbuf / 1024
        );
    }

    let sink: Box<dyn Write> = if output == "-" {
        Box::new(io::stdout())
    } else {
        Box::new(File::create(output).map_err(|e| format!("{output}: {e}"))?)
    };
    let wr = |e: io::Error| Failure::Msg(format!("{output}: {e}"));
    // The writer buffers; it is flushed every FLUSH_EVERY and at the end.
    let mut writer = TraceWriter::new(sink, &header).map_err(wr)?;

    let started = Instant::now();
    let target = Target {
        name: name.clone(),
        dev: info.dev,
        base_dropped: info.trace_dropped,
    };
    let limits = Limits {
        deadline: duration.map(|d| started + Duration::from_secs_f64(d)),
        count,
    };
    let c =
        record_loop(&mut listener, &mut writer, &target, &limits, &stop).map_err(|e| match e {
            LoopError::Nl(e) => Failure::Nl(e),
            LoopError::Write(e) => wr(e),
        })?;
    writer.finish().map_err(wr)?.flush().map_err(wr)?;
    let secs = started.elapsed().as_secs_f64();
    let mut line = format!(
        "foresight: recorded {} records of {name} in {secs:.1} s to {output}; dropped by the kernel: {}",
        c.written, c.dropped
    );
    if c.overruns > 0 {
        line.push_str(&format!(
            "; socket overruns: {} (records lost, number unknown)",
            c.overruns
        ));
    }
    if c.bad > 0 {
        line.push_str(&format!("; malformed notifications: {}", c.bad));
    }
    eprintln!("{line}");
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::parse_attrs;
    use crate::nl::wire::nla;
    use foresight_predict::trace::{encode_record, RECORD_BYTES};
    use foresight_predict::Op;

    fn raw_record(ts: u64, sector: u64, sectors: u32, op: u8) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&ts.to_ne_bytes());
        r.extend_from_slice(&sector.to_ne_bytes());
        r.extend_from_slice(&sectors.to_ne_bytes());
        r.push(op);
        r.extend_from_slice(&[0, 0, 0]);
        r
    }

    #[test]
    fn decode_notification() {
        let mut recs = raw_record(1000, 2048, 8, uapi::op::READ);
        recs.extend(raw_record(1500, 4096, 16, uapi::op::WRITE));
        recs.extend(raw_record(1600, 0, 0, uapi::op::FLUSH));
        let mut b = nla(T::NAME, b"vm1\0");
        b.extend(nla(T::DEV, &0xfd03u32.to_ne_bytes()));
        b.extend(nla(T::RECORDS, &recs));
        b.extend(nla(T::DROPPED, &12u64.to_ne_bytes()));
        let l = parse_attrs(&b).unwrap();
        let t = TraceMsg::from_attrs(Attrs::new(&l)).unwrap();
        assert_eq!(t.name.as_deref(), Some("vm1"));
        assert_eq!(t.dropped, Some(12));
        assert_eq!(
            t.records,
            vec![
                Access {
                    ts_ns: 1000,
                    sector: 2048,
                    sectors: 8,
                    op: Op::Read
                },
                Access {
                    ts_ns: 1500,
                    sector: 4096,
                    sectors: 16,
                    op: Op::Write
                },
                Access {
                    ts_ns: 1600,
                    sector: 0,
                    sectors: 0,
                    op: Op::Flush
                },
            ]
        );
        // The library's encoding is the kernel's layout.
        assert_eq!(RECORD_BYTES, 24);
        assert_eq!(
            encode_record(&t.records[1]).to_vec(),
            raw_record(1500, 4096, 16, 1)
        );
        assert!(t.is_of(Some("other-name"), Some(0xfd03)));
        assert!(!t.is_of(Some("vm1"), Some(0xfd04)));
        assert!(t.is_of(Some("vm1"), None));

        // A torn record array is an error.
        let b = nla(T::RECORDS, &recs[..30]);
        let l = parse_attrs(&b).unwrap();
        assert!(TraceMsg::from_attrs(Attrs::new(&l)).is_err());
    }

    #[test]
    fn record_loop_through_the_kernel() {
        use crate::nl::fake;
        use foresight_predict::trace::TraceReader;
        const GROUP: u32 = 30;
        let Some((mut l, tx)) = fake::setup(GROUP) else {
            return;
        };
        let recs = |n: u64| -> Vec<u8> {
            (0..n)
                .flat_map(|i| raw_record(1000 + i, 8 * i, 8, uapi::op::READ))
                .collect()
        };
        tx.send(&fake::trace_ntf("vm2", 0xfd04, &recs(5), 0))
            .unwrap();
        tx.send(&fake::trace_ntf("vm1", 0xfd03, &recs(3), 7))
            .unwrap();
        tx.send(&fake::trace_ntf("vm1", 0xfd03, &recs(3), 9))
            .unwrap();
        tx.send(&fake::trace_ntf("vm1", 0xfd03, &recs(3), 9))
            .unwrap();
        let header = TraceHeader {
            device: "vm1".into(),
            dev: "253:3".into(),
            sectors: 2048,
        };
        let mut w = TraceWriter::new(Vec::new(), &header).unwrap();
        let target = Target {
            name: "vm1".into(),
            dev: Some(0xfd03),
            base_dropped: Some(2),
        };
        let limits = Limits {
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            count: Some(7),
        };
        let stop = AtomicBool::new(false);
        let Ok(c) = record_loop(&mut l, &mut w, &target, &limits, &stop) else {
            panic!("record loop failed")
        };
        assert_eq!((c.written, c.dropped, c.overruns, c.bad), (7, 7, 0, 0));
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(
            text,
            "# foresight-trace v1\n# device vm1 253:3 2048\n\
             1000 R 0 8\n1001 R 8 8\n1002 R 16 8\n# dropped 5\n\
             1000 R 0 8\n1001 R 8 8\n1002 R 16 8\n# dropped 7\n\
             1000 R 0 8\n"
        );
        let r = TraceReader::new(text.as_bytes()).unwrap();
        assert_eq!(r.count(), 7);

        // The deadline ends a quiet recording.
        let limits = Limits {
            deadline: Some(Instant::now() + Duration::from_millis(300)),
            count: None,
        };
        let t = Instant::now();
        let Ok(c) = record_loop(&mut l, &mut w2(&header), &target, &limits, &stop) else {
            panic!()
        };
        assert_eq!(c.written, 0);
        assert!(t.elapsed() >= Duration::from_millis(300));
    }

    fn w2(h: &TraceHeader) -> TraceWriter<Vec<u8>> {
        TraceWriter::new(Vec::new(), h).unwrap()
    }
}
