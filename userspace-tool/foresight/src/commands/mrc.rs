// SPDX-License-Identifier: GPL-2.0
//! `foresight mrc`: the read miss-ratio curves of traces, estimated from a
//! spatial sample (SHARDS) and checked against the exact ones, and how a
//! cache total would be shared between their devices: equally, or where
//! each next MiB gains most hits (the `throughput` policy's rule).

use super::{exit, CmdResult};
use crate::commands::eval::load_file;
use foresight_predict::mrc::{allocate, Curve, Shards, BIN_BLOCKS};
use foresight_predict::trace::Op;
use serde::Serialize;
use std::collections::HashSet;

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Trace files (any format `eval` reads), one device each
    #[arg(required = true)]
    pub files: Vec<String>,
    /// Sampling rate of the estimate (0 < R <= 1)
    #[arg(long, default_value_t = 0.1)]
    pub rate: f64,
    /// The cache total to share, in MiB (default: half the devices'
    /// read working sets together)
    #[arg(long, value_name = "N")]
    pub total_mb: Option<u64>,
    /// Print a JSON object
    #[arg(long)]
    pub json: bool,
}

/// One trace's curve figures.
#[derive(Debug, Serialize)]
pub struct Device {
    pub name: String,
    /// 4 KiB block references of reads.
    pub refs: u64,
    /// Distinct blocks read, MiB.
    pub working_set_mb: f64,
    /// Blocks the sample tracked, and the exact count's.
    pub tracked: usize,
    pub tracked_exact: usize,
    /// Mean and largest absolute difference of the estimated miss ratio
    /// from the exact one, over cache sizes up to the working set.
    pub mae: f64,
    pub max_error: f64,
    /// MiB given by each split, and the LRU hits (exact curve) they get.
    pub equal_mb: f64,
    pub equal_hits: f64,
    pub throughput_mb: f64,
    pub throughput_hits: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub rate: f64,
    pub total_mb: f64,
    pub devices: Vec<Device>,
    pub equal_hits: f64,
    pub throughput_hits: f64,
    /// Throughput's hits over the equal split's.
    pub gain: f64,
}

const BIN_MB: f64 = (BIN_BLOCKS * 4096) as f64 / (1 << 20) as f64;

/// The figures for `traces` (name and the reads' (sector, sectors)).
pub fn report(traces: &[(String, Vec<(u64, u64)>)], rate: f64, total_mb: Option<u64>) -> Report {
    let mut curves = Vec::new();
    let mut devices = Vec::new();
    for (name, reads) in traces {
        let mut exact = Shards::new(1.0);
        let mut est = Shards::new(rate);
        let mut blocks = HashSet::new();
        for &(sector, sectors) in reads {
            exact.access_sectors(sector, sectors);
            est.access_sectors(sector, sectors);
            if sectors > 0 {
                blocks.extend(sector / 8..=(sector + sectors - 1) / 8);
            }
        }
        let bins = (blocks.len() as u64).div_ceil(BIN_BLOCKS) as usize + 1;
        let (e, s) = (exact.curve(bins), est.curve(bins));
        let diffs: Vec<f64> = e
            .ratios
            .iter()
            .zip(&s.ratios)
            .map(|(a, b)| (a - b).abs())
            .collect();
        devices.push(Device {
            name: name.clone(),
            refs: exact.counts().0,
            working_set_mb: blocks.len() as f64 * 4096.0 / (1 << 20) as f64,
            tracked: est.tracked(),
            tracked_exact: exact.tracked(),
            mae: diffs.iter().sum::<f64>() / diffs.len() as f64,
            max_error: diffs.iter().copied().fold(0.0, f64::max),
            equal_mb: 0.0,
            equal_hits: 0.0,
            throughput_mb: 0.0,
            throughput_hits: 0.0,
        });
        curves.push((e, s));
    }
    let ws: f64 = devices.iter().map(|d| d.working_set_mb).sum();
    let total_mb = total_mb.map_or(ws / 2.0, |t| t as f64);
    let total_bins = (total_mb / BIN_MB) as usize;
    let n = devices.len().max(1);
    let estimated: Vec<Curve> = curves.iter().map(|(_, s)| s.clone()).collect();
    let split = allocate(&estimated, total_bins, 0);
    for (i, d) in devices.iter_mut().enumerate() {
        let exact = &curves[i].0;
        let equal = total_bins / n + usize::from(i < total_bins % n);
        d.equal_mb = equal as f64 * BIN_MB;
        d.equal_hits = exact.hits(equal);
        d.throughput_mb = split[i] as f64 * BIN_MB;
        d.throughput_hits = exact.hits(split[i]);
    }
    let equal_hits: f64 = devices.iter().map(|d| d.equal_hits).sum();
    let throughput_hits: f64 = devices.iter().map(|d| d.throughput_hits).sum();
    Report {
        rate,
        total_mb: total_bins as f64 * BIN_MB,
        gain: if equal_hits > 0.0 {
            throughput_hits / equal_hits
        } else {
            f64::NAN
        },
        devices,
        equal_hits,
        throughput_hits,
    }
}

pub fn run(o: &Opts) -> CmdResult {
    if !(o.rate > 0.0 && o.rate <= 1.0) {
        return Err(format!("--rate {}: give 0 < R <= 1", o.rate).into());
    }
    let mut traces = Vec::new();
    for f in &o.files {
        let t = load_file(f)?;
        let reads = t
            .accesses
            .iter()
            .filter(|a| a.op == Op::Read)
            .map(|a| (a.sector, u64::from(a.sectors)))
            .collect();
        traces.push((t.header.device.clone(), reads));
    }
    let r = report(&traces, o.rate, o.total_mb);
    if o.json {
        println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
        return Ok(exit::OK);
    }
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>7} {:>7} {:>9} {:>10} {:>9} {:>10}",
        "device",
        "reads 4k",
        "WSS MiB",
        "sampled",
        "MAE",
        "max err",
        "equal MiB",
        "hits",
        "thr. MiB",
        "hits"
    );
    for d in &r.devices {
        println!(
            "{:<34} {:>9} {:>9.1} {:>9} {:>7.4} {:>7.4} {:>9.1} {:>10.0} {:>9.1} {:>10.0}",
            d.name,
            d.refs,
            d.working_set_mb,
            d.tracked,
            d.mae,
            d.max_error,
            d.equal_mb,
            d.equal_hits,
            d.throughput_mb,
            d.throughput_hits
        );
    }
    println!(
        "total {:.0} MiB (sample rate {}): throughput split {:.0} hits, equal split {:.0}: {:.3}x",
        r.total_mb, r.rate, r.throughput_hits, r.equal_hits, r.gain
    );
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_that_reuses_gets_the_memory() {
        // Device a rereads 4 MiB over and over; device b scans 64 MiB once.
        let a: Vec<(u64, u64)> = (0..20)
            .flat_map(|_| (0..1024u64).map(|b| (b * 8, 8)))
            .collect();
        let b: Vec<(u64, u64)> = (0..16384u64).map(|b| (b * 8, 8)).collect();
        let r = report(&[("a".into(), a), ("b".into(), b)], 1.0, Some(6));
        assert_eq!(r.devices[0].mae, 0.0, "rate 1 is exact");
        assert!(r.devices[0].throughput_mb >= 4.0, "{:?}", r.devices);
        // An equal 3 MiB holds none of a's loop (LRU): no hits at all.
        assert_eq!(r.equal_hits, 0.0);
        assert_eq!(r.throughput_hits, 19.0 * 1024.0);
    }
}
