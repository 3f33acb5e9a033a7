// SPDX-License-Identifier: GPL-2.0
//! `foresight heat`: the regions of a device most likely to be accessed
//! within a horizon, hottest first, from the running daemon's heat map or
//! from a trace file, in the lines `foresight migrate --order` reads.

use foresight_predict::heat::{hottest, order_lines, HeatMap, RegionHeat, HALF_LIFE_S};
use foresight_predict::{Op, Predictor};

use super::daemon::State;
use super::{exit, CmdResult};
use crate::dev::DevSpec;

/// Which accesses count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// Reads and writes
    Any,
    Read,
    Write,
}

impl Which {
    fn op(self) -> Option<Op> {
        match self {
            Which::Any => None,
            Which::Read => Some(Op::Read),
            Which::Write => Some(Op::Write),
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// The device (name, major:minor or /dev path), as the daemon serves it
    #[arg(required_unless_present = "trace")]
    pub dev: Option<String>,
    /// Compute the heat map from this trace file instead (any format
    /// `foresight eval` reads), as of its last record
    #[arg(long, value_name = "FILE")]
    pub trace: Option<String>,
    /// Probability of access within this many seconds
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub horizon_s: f64,
    /// Accesses that count
    #[arg(long, value_enum, default_value_t = Which::Any)]
    pub op: Which,
    /// Most regions listed
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub top: usize,
    /// Region size of a trace's heat map, KiB (a multiple of 4): 4 names
    /// the hot blocks themselves, as `migrate --defer` wants for a writer
    /// whose hot blocks are scattered (the daemon's map is 1 MiB)
    #[arg(long, default_value_t = 1024, value_name = "KIB", requires = "trace")]
    pub region_kib: u64,
    /// A JSON array instead of the `--order` lines
    #[arg(long)]
    pub json: bool,
    /// The running daemon's state file (its --state-file)
    #[arg(long, default_value = super::daemon::STATE_FILE, value_name = "FILE")]
    pub state_file: String,
}

/// The regions of `o.dev` in the daemon's state.
fn from_daemon(o: &Opts) -> Result<Vec<RegionHeat>, String> {
    let dev = o.dev.as_deref().expect("clap: dev or --trace");
    let spec = DevSpec::parse(dev)?;
    let state = State::load(&o.state_file).ok_or_else(|| {
        format!(
            "no running foresight daemon ({} is missing or stale): start `foresight daemon`, or use --trace",
            o.state_file
        )
    })?;
    let d = state
        .devices
        .into_iter()
        .find(|d| spec.matches(Some(&d.name), d.dev))
        .ok_or_else(|| format!("{dev}: the daemon has not seen this device's traces (yet)"))?;
    Ok(d.heat)
}

/// The regions of a trace file, with a model's predictions of its last
/// accesses.
fn from_trace(f: &str, region_kib: u64) -> Result<Vec<RegionHeat>, String> {
    let trace = super::eval::load_file(f)?;
    let mut heat = HeatMap::with_regions(HALF_LIFE_S, region_kib * 2);
    let mut model = foresight_predict::Ensemble::auto();
    for a in &trace.accesses {
        heat.observe(a);
        model.observe(a);
    }
    heat.predicted(&model.predict(256), 1_000_000_000);
    Ok(heat.regions())
}

pub fn run(o: &Opts) -> CmdResult {
    if !(o.horizon_s > 0.0 && o.horizon_s.is_finite()) {
        return Err(format!("--horizon-s must be a positive number, not {}", o.horizon_s).into());
    }
    if o.region_kib == 0 || !o.region_kib.is_multiple_of(4) || o.region_kib > 1 << 20 {
        return Err(format!(
            "--region-kib must be a multiple of 4 from 4 to 1048576 (1 GiB), not {}",
            o.region_kib
        )
        .into());
    }
    let regions = match &o.trace {
        Some(f) => from_trace(f, o.region_kib)?,
        None => from_daemon(o)?,
    };
    let hot = hottest(regions, o.op.op(), o.horizon_s, o.top);
    if o.json {
        let v: Vec<serde_json::Value> = hot
            .iter()
            .map(|(h, p)| {
                serde_json::json!({
                    "start": h.start, "sectors": h.sectors, "probability": p,
                    "read_rate": h.read_rate, "write_rate": h.write_rate,
                    "predicted_read": h.predicted_read, "predicted_write": h.predicted_write,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        print!("{}", order_lines(&hot));
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::migrate::plan::parse_order;
    use foresight_predict::heat::REGION_SECTORS;
    use foresight_predict::trace::{TraceHeader, TraceWriter};
    use foresight_predict::Access;

    fn opts(dev: Option<&str>, trace: Option<String>, state: &str) -> Opts {
        Opts {
            dev: dev.map(String::from),
            trace,
            horizon_s: 60.0,
            op: Which::Any,
            top: 10,
            region_kib: 1024,
            json: false,
            state_file: state.into(),
        }
    }

    #[test]
    fn from_a_trace_file_hottest_first_in_order_format() {
        let dir = std::env::temp_dir().join(format!("foresight-heat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.trace");
        let header = TraceHeader {
            device: "vm1".into(),
            dev: "253:3".into(),
            sectors: 1 << 24,
        };
        let mut w = TraceWriter::new(std::fs::File::create(&f).unwrap(), &header).unwrap();
        // Region 4 read 300 times, region 9 written 30 times, region 1 once.
        for i in 0..300u64 {
            let at = |sector, op| Access {
                ts_ns: i * 10_000_000,
                sector,
                sectors: 8,
                op,
            };
            w.write(&at(4 * REGION_SECTORS + 8 * (i % 200), Op::Read))
                .unwrap();
            if i % 10 == 0 {
                w.write(&at(9 * REGION_SECTORS, Op::Write)).unwrap();
            }
            if i == 0 {
                w.write(&at(REGION_SECTORS, Op::Read)).unwrap();
            }
        }
        drop(w);
        let regions = from_trace(f.to_str().unwrap(), 1024).unwrap();
        let hot = hottest(regions.clone(), None, 1.0, 10);
        let starts: Vec<u64> = hot.iter().map(|(h, _)| h.start / REGION_SECTORS).collect();
        assert_eq!(starts[0], 4, "{hot:?}");
        let at = |r| starts.iter().position(|&s| s == r).unwrap();
        assert!(at(9) < at(1), "{hot:?}");
        // The stream through region 4 goes on into region 5: predicted.
        assert!(hot[at(5)].0.predicted_read > 0.0, "{hot:?}");
        let order = parse_order(&order_lines(&hot)).unwrap();
        assert_eq!(order[0], (4 * REGION_SECTORS, REGION_SECTORS));
        let writes = hottest(regions, Some(Op::Write), 1.0, 10);
        assert_eq!(writes.len(), 1, "{writes:?}");
        // In 4 KiB regions: the written block itself.
        let blocks = from_trace(f.to_str().unwrap(), 4).unwrap();
        let writes = hottest(blocks, Some(Op::Write), 1.0, 10);
        assert_eq!(
            (writes[0].0.start, writes[0].0.sectors),
            (9 * REGION_SECTORS, 8),
            "{writes:?}"
        );
        let mut o = opts(None, Some(f.to_str().unwrap().into()), "");
        o.region_kib = 6;
        assert!(run(&o).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_daemon_a_sentence() {
        let e = from_daemon(&opts(Some("vm1"), None, "/nonexistent/daemon.json")).unwrap_err();
        assert!(e.contains("no running foresight daemon"), "{e}");
        let dir = std::env::temp_dir().join(format!("foresight-heat-d-{}", std::process::id()));
        let state = dir.join("daemon.json");
        let state = state.to_str().unwrap();
        let heat = vec![RegionHeat {
            start: 2048,
            sectors: 2048,
            read_rate: 1.0,
            write_rate: 0.0,
            predicted_read: 0.0,
            predicted_write: 0.0,
        }];
        State {
            pid: std::process::id(),
            updated: 0.0,
            engine: None,
            devices: vec![super::super::daemon::DevScores {
                name: "vm1".into(),
                dev: Some(0xfd03),
                heat: heat.clone(),
                ..Default::default()
            }],
        }
        .save(state)
        .unwrap();
        assert_eq!(from_daemon(&opts(Some("vm1"), None, state)).unwrap(), heat);
        assert_eq!(
            from_daemon(&opts(Some("253:3"), None, state)).unwrap(),
            heat
        );
        let e = from_daemon(&opts(Some("vm2"), None, state)).unwrap_err();
        assert!(e.contains("has not seen"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
