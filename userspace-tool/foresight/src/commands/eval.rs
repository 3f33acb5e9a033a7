// SPDX-License-Identifier: GPL-2.0
//! `foresight eval`: replays trace files through the predictors and a
//! cache model, offline, next to no prefetch and readahead of several
//! windows (foresight_predict::cachesim defines the figures).

use std::fs::File;
use std::io::{BufRead, BufReader};

use foresight_predict::cachesim::{interpolate, simulate_epochs, MissCauses, Policy, SimResult};
use foresight_predict::import::{self, Columns, Format};
use foresight_predict::trace::Trace;
use foresight_predict::{predictor_by_name, PREDICTOR_NAMES};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::{exit, CmdResult};

/// Readahead windows measured as the baseline frontier.
pub const READAHEAD: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Probability thresholds a predictor is swept over.
pub const THRESHOLDS: [f64; 10] = [0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9];

#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Trace files: the tool's own format, SNIA/MSR Cambridge CSV, blkparse
    /// text or fio iolog v2/v3 (recognised), or delimited text (--columns)
    #[arg(required = true)]
    pub files: Vec<String>,
    /// blkparse: the action whose records count (Q queued, D issued, C completed)
    #[arg(long, default_value_t = 'Q')]
    pub blkparse_action: char,
    /// Delimited text: 0-based columns and units, e.g.
    /// time=0:s,offset=1:sectors,size=2:sectors,op=3 (units: time ns|us|ms|s|filetime,
    /// offset/size bytes|sectors|KiB|blocks; also skip=N, delimiter=,|;|tab|space)
    #[arg(long, value_name = "SPEC")]
    pub columns: Option<String>,
    /// Predictors to evaluate (default: all)
    #[arg(long = "predictor", value_name = "NAME")]
    pub predictors: Vec<String>,
    /// Cache size in MiB
    #[arg(long, default_value_t = 64)]
    pub cache_mb: u64,
    /// Epoch length, in seconds of trace time, of the write predictions'
    /// scoring (a pre-copy round)
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub epoch_s: f64,
    /// Ask the predictors every N accesses (1: after each; the daemon asks
    /// once per push interval, so N near the accesses of an interval shows
    /// what it costs and buys there)
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub predict_every: usize,
    /// One JSON object per trace on standard output
    #[arg(long)]
    pub json: bool,
    /// Draw each trace's frontier (hit rate against prefetch volume, each
    /// predictor swept over its threshold, readahead's beside) and hit rate
    /// over time into this PNG
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<String>,
}

/// One policy's figures on one trace.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub policy: String,
    pub reads: u64,
    pub hit_rate: f64,
    pub volume: f64,
    pub precision: f64,
    pub coverage: f64,
    /// Inference time per access (observe and predict, training excluded).
    pub ns_per_access: f64,
    /// Training CPU time per access.
    pub train_ns_per_access: f64,
    /// Misses against readahead's at the same prefetch volume (predictors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub misses_vs_readahead: Option<f64>,
    /// Write predictions per epoch (`--epoch-s`): precision and recall of
    /// the regions predicted dirty (for `none`: the last epoch's regions),
    /// `null` with nothing to divide by.
    pub write_precision: Option<f64>,
    pub write_recall: Option<f64>,
    pub hit_rate_over_time: Vec<f64>,
    /// The misses by the cause of their first missing block: the block
    /// was written (the write dropped it), evicted, or never accessed.
    #[serde(flatten)]
    pub misses: MissCauses,
}

impl Row {
    fn new(policy: String, r: &SimResult) -> Self {
        Row {
            policy,
            reads: r.reads,
            hit_rate: r.hit_rate(),
            volume: r.volume(),
            precision: r.precision(),
            coverage: r.coverage(),
            ns_per_access: r.ns_per_access(),
            train_ns_per_access: r.train_ns_per_access(),
            misses_vs_readahead: None,
            write_precision: r.writes.precision(),
            write_recall: r.writes.recall(),
            hit_rate_over_time: r.hit_rate_over_time.clone(),
            misses: r.misses_by,
        }
    }
}

/// The evaluation of one trace.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub trace: String,
    pub accesses: usize,
    pub reads: u64,
    pub baselines: Vec<Row>,
    /// Each predictor at each threshold (its frontier).
    pub predictors: Vec<Row>,
}

/// Evaluates one trace.
pub fn evaluate(
    name: &str,
    trace: &Trace,
    predictors: &[String],
    cache_blocks: usize,
    epoch_ns: u64,
    predict_every: usize,
    bar: &ProgressBar,
) -> Result<Report, String> {
    let acc = &trace.accesses;
    let simulate = |p: &mut Policy| simulate_epochs(acc, p, cache_blocks, epoch_ns);
    let mut baselines = vec![Row::new("none".into(), &simulate(&mut Policy::None))];
    bar.inc(1);
    for w in READAHEAD {
        let mut p = Policy::Readahead(w);
        baselines.push(Row::new(p.label(), &simulate(&mut p)));
        bar.inc(1);
    }
    let points: Vec<(f64, f64)> = baselines.iter().map(|r| (r.volume, r.hit_rate)).collect();
    let mut rows = Vec::new();
    for name in predictors {
        for t in THRESHOLDS {
            let model = predictor_by_name(name).ok_or_else(|| format!("no predictor {name:?}"))?;
            let mut p = Policy::Predictor {
                model,
                threshold: t,
                every: predict_every,
            };
            let r = simulate(&mut p);
            let mut row = Row::new(p.label(), &r);
            let ra_hit = interpolate(&points, row.volume);
            let ra_misses = (1.0 - ra_hit) * r.reads as f64;
            row.misses_vs_readahead = (ra_misses > 0.0).then(|| r.misses() as f64 / ra_misses);
            rows.push(row);
            bar.inc(1);
        }
    }
    Ok(Report {
        trace: name.to_string(),
        accesses: acc.len(),
        reads: baselines[0].reads,
        baselines,
        predictors: rows,
    })
}

fn print(r: &Report) {
    println!("{}: {} accesses, {} reads", r.trace, r.accesses, r.reads);
    println!(
        "  {:<18} {:>8} {:>8} {:>9} {:>8} {:>9} {:>9} {:>11} {:>7} {:>8}",
        "policy",
        "hit rate",
        "volume",
        "precision",
        "coverage",
        "ns/access",
        "train ns",
        "misses/RA",
        "w.prec",
        "w.recall"
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |m| format!("{m:.3}"));
    for row in r.baselines.iter().chain(&r.predictors) {
        println!(
            "  {:<18} {:>8.3} {:>8.2} {:>9.3} {:>8.3} {:>9.0} {:>9.0} {:>11} {:>7} {:>8}",
            row.policy,
            row.hit_rate,
            row.volume,
            row.precision,
            row.coverage,
            row.ns_per_access,
            row.train_ns_per_access,
            opt(row.misses_vs_readahead),
            opt(row.write_precision),
            opt(row.write_recall),
        );
    }
    // What limits them: the misses left by no prefetch, by readahead's
    // widest useful window and by each predictor at the daemon's default
    // threshold.
    println!("  misses by cause (after a write / evicted / first access):");
    let daemons = format!("@{:.2}", super::daemon::DEFAULT_MIN_PROBABILITY);
    let shown = r.baselines.iter().chain(&r.predictors).filter(|row| {
        matches!(row.policy.as_str(), "none" | "readahead-32") || row.policy.ends_with(&daemons)
    });
    for row in shown {
        let [w, e, f] = row.misses.shares();
        println!("    {:<18} {w:.2} / {e:.2} / {f:.2}", row.policy);
    }
}

/// A trace file in any recognised format (blkparse: queued records).
pub fn load_file(f: &str) -> Result<Trace, String> {
    load(f, None, 'Q')
}

/// Trace file `f`: in the format of `columns` if given, else recognised
/// (blkparse: the records of `blkparse_action`).
fn load(f: &str, columns: Option<&str>, blkparse_action: char) -> Result<Trace, String> {
    let open = || {
        File::open(f)
            .map(BufReader::new)
            .map_err(|e| format!("{f}: {e}"))
    };
    let fmt = match columns {
        Some(c) => Some(Format::Delimited(
            Columns::parse(c).map_err(|e| format!("--columns: {e}"))?,
        )),
        None => {
            let first = open()?
                .lines()
                .next()
                .transpose()
                .map_err(|e| format!("{f}: {e}"))?;
            match first.as_deref().and_then(import::detect) {
                Some(Format::Blkparse { .. }) => Some(Format::Blkparse {
                    action: blkparse_action,
                }),
                other => other,
            }
        }
    };
    let name = std::path::Path::new(f)
        .file_stem()
        .map_or_else(|| f.to_string(), |s| s.to_string_lossy().into_owned());
    import::read(open()?, fmt, &name).map_err(|e| format!("{f}: {e}"))
}

pub fn run(o: &Opts) -> CmdResult {
    let predictors: Vec<String> = if o.predictors.is_empty() {
        PREDICTOR_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        o.predictors.clone()
    };
    for p in &predictors {
        if predictor_by_name(p).is_none() {
            return Err(
                format!("no predictor {p:?} (have: {})", PREDICTOR_NAMES.join(", ")).into(),
            );
        }
    }
    let cache_blocks = (o.cache_mb.max(1) << 20) / 4096;
    if !(o.epoch_s > 0.0 && o.epoch_s.is_finite()) {
        return Err(format!("--epoch-s must be a positive number, not {}", o.epoch_s).into());
    }
    let epoch_ns = (o.epoch_s * 1e9) as u64;
    let runs = (1 + READAHEAD.len() + predictors.len() * THRESHOLDS.len()) as u64;
    let mut reports = Vec::new();
    for f in &o.files {
        let trace = load(f, o.columns.as_deref(), o.blkparse_action)?;
        let bar = ProgressBar::new(runs);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} replays, eta {eta}")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_prefix(f.clone());
        let r = evaluate(
            f,
            &trace,
            &predictors,
            cache_blocks as usize,
            epoch_ns,
            o.predict_every.max(1),
            &bar,
        )?;
        bar.finish_and_clear();
        if o.json {
            println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
        } else {
            print(&r);
        }
        reports.push(r);
    }
    if let Some(path) = &o.plot {
        super::plot::draw(path, &reports)?;
        eprintln!("foresight eval: drew {path}");
    }
    Ok(exit::OK)
}
