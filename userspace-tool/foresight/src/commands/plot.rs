// SPDX-License-Identifier: GPL-2.0
//! `foresight eval --plot FILE.png`: per trace, the hit-rate / prefetch
//! volume frontier of each predictor (swept over its threshold) against
//! readahead's, and the hit rate over the trace.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::eval::Report;
use super::replay::Interval;

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The predictors' names in the order of the report (`markov@0.30` -> `markov`).
fn predictor_names(r: &Report) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in &r.predictors {
        let n = p.policy.split('@').next().unwrap_or(&p.policy).to_string();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// The plots' one face, "sans-serif": a system font found by fontdb (read
/// once, kept for the process), not fontconfig and FreeType linked into
/// every start of the tool for the one command that draws.
fn register_font() -> Result<(), String> {
    static FONT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        use fontdb::{Database, Family, Query};
        let mut db = Database::new();
        db.load_system_fonts();
        let families = [
            Family::Name("DejaVu Sans"),
            Family::Name("Liberation Sans"),
            Family::Name("Noto Sans"),
            Family::SansSerif,
        ];
        let id = db
            .query(&Query {
                families: &families,
                ..Query::default()
            })
            .or_else(|| db.faces().next().map(|f| f.id))
            .ok_or("no font found to draw text with (Debian: fonts-dejavu-core)")?;
        let data = db
            .with_face_data(id, |data, _| data.to_vec())
            .ok_or("the font found could not be read")?;
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(data.into_boxed_slice()),
        )
        .map_err(|_| "the font found is not a TrueType or OpenType font".to_string())
    })
    .clone()
}

/// Draws every report, one row of two panels each, into a PNG.
pub fn draw(path: &str, reports: &[Report]) -> Result<(), String> {
    register_font()?;
    let rows = reports.len().max(1) as u32;
    let root = BitMapBackend::new(path, (1400, 420 * rows)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let cells = root.split_evenly((rows as usize, 2));
    for (i, r) in reports.iter().enumerate() {
        frontier(&cells[2 * i], r).map_err(|e| format!("{path}: {e}"))?;
        over_time(&cells[2 * i + 1], r).map_err(|e| format!("{path}: {e}"))?;
    }
    root.present().map_err(|e| format!("{path}: {e}"))
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn short(trace: &str) -> String {
    std::path::Path::new(trace)
        .file_stem()
        .map_or_else(|| trace.to_string(), |s| s.to_string_lossy().into_owned())
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// One panel: axes 0..x_max and 0..y_max, the series `f` draws, a legend.
fn panel<'b>(
    area: &Area<'b>,
    title: String,
    (x_max, y_max): (f64, f64),
    (x_desc, y_desc): (&str, &str),
    f: impl FnOnce(&mut Chart<'_, 'b>) -> DrawResult,
) -> DrawResult {
    let mut c = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    c.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw()?;
    f(&mut c)?;
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn frontier(area: &Area<'_>, r: &Report) -> DrawResult {
    let vmax = r
        .baselines
        .iter()
        .chain(&r.predictors)
        .map(|x| x.volume)
        .fold(0.5f64, f64::max)
        .min(8.0);
    let title = format!("{}: hit rate vs prefetch volume", short(&r.trace));
    let axes = ("blocks prefetched per block read", "read hit rate");
    panel(area, title, (vmax * 1.05, 1.0), axes, |c| {
        let ra: Vec<(f64, f64)> = r
            .baselines
            .iter()
            .map(|b| (b.volume.min(vmax), b.hit_rate))
            .collect();
        c.draw_series(LineSeries::new(ra.clone(), BLACK.stroke_width(2)))?
            .label("readahead 0..64")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
        c.draw_series(ra.iter().map(|&p| Circle::new(p, 3, BLACK.filled())))?;
        for (k, name) in predictor_names(r).iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let mut pts: Vec<(f64, f64)> = r
                .predictors
                .iter()
                .filter(|p| p.policy.starts_with(&format!("{name}@")))
                .map(|p| (p.volume.min(vmax), p.hit_rate))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            c.draw_series(pts.iter().map(|&p| Cross::new(p, 4, color)))?;
        }
        Ok(())
    })
}

fn over_time(area: &Area<'_>, r: &Report) -> DrawResult {
    // No prefetch, readahead-8, and each predictor at its threshold of most
    // hits.
    let mut lines = Vec::new();
    for b in &r.baselines {
        if b.policy == "none" || b.policy == "readahead-8" {
            lines.push((b.policy.clone(), &b.hit_rate_over_time));
        }
    }
    for name in predictor_names(r) {
        let best = r
            .predictors
            .iter()
            .filter(|p| p.policy.starts_with(&format!("{name}@")))
            .max_by(|a, b| a.hit_rate.total_cmp(&b.hit_rate));
        if let Some(b) = best {
            lines.push((b.policy.clone(), &b.hit_rate_over_time));
        }
    }
    let title = format!("{}: hit rate over the trace", short(&r.trace));
    panel(
        area,
        title,
        (1.0, 1.0),
        ("fraction of the reads", "hit rate"),
        |c| {
            for (k, (label, ys)) in lines.into_iter().enumerate() {
                let color = if k < 2 {
                    [BLACK, RGBColor(128, 128, 128)][k]
                } else {
                    PALETTE[(k - 2) % PALETTE.len()]
                };
                let n = ys.len().max(1) as f64;
                let pts: Vec<(f64, f64)> = ys
                    .iter()
                    .enumerate()
                    .map(|(i, &y)| ((i as f64 + 0.5) / n, y))
                    .collect();
                c.draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            Ok(())
        },
    )
}

/// `foresight trace replay --plot`: the cache's hit rate and the reads'
/// mean latency, slice by slice.
pub fn draw_replay(path: &str, trace: &str, slices: &[Interval]) -> Result<(), String> {
    register_font()?;
    let root = BitMapBackend::new(path, (1400, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let cells = root.split_evenly((1, 2));
    let t_max = slices.last().map_or(1.0, |i| i.t_s).max(1e-3);
    let hits: Vec<(f64, f64)> = slices
        .iter()
        .filter_map(|i| Some((i.t_s, i.hit_rate?)))
        .collect();
    let lat: Vec<(f64, f64)> = slices
        .iter()
        .filter_map(|i| Some((i.t_s, i.mean_read_latency_us? / 1000.0)))
        .collect();
    let lat_max = lat.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.1;
    let name = short(trace);
    let series = |pts: Vec<(f64, f64)>, label: &'static str, color: RGBColor| {
        move |c: &mut Chart<'_, '_>| -> DrawResult {
            c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            Ok(())
        }
    };
    panel(
        &cells[0],
        format!("{name}: the cache's hit rate"),
        (t_max, 1.0),
        ("seconds", "hit rate"),
        series(hits, "hits / reads the cache saw", PALETTE[0]),
    )
    .and_then(|()| {
        panel(
            &cells[1],
            format!("{name}: mean read latency"),
            (t_max, lat_max),
            ("seconds", "ms"),
            series(lat, "mean read latency", PALETTE[3]),
        )
    })
    .map_err(|e| format!("{path}: {e}"))?;
    root.present().map_err(|e| format!("{path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::eval::evaluate;
    use foresight_predict::trace::{Access, Trace, TraceHeader};
    use foresight_predict::Op;

    #[test]
    fn draws_a_png() {
        let accesses = (0..500u64)
            .map(|i| Access {
                ts_ns: i,
                sector: (i % 100) * 8 + (i / 100) * 4096,
                sectors: 8,
                op: Op::Read,
            })
            .collect();
        let trace = Trace {
            header: TraceHeader {
                device: "t".into(),
                dev: "0:0".into(),
                sectors: 1 << 20,
            },
            accesses,
            dropped: 0,
        };
        let bar = indicatif::ProgressBar::hidden();
        let r = evaluate(
            "t.ftrace",
            &trace,
            &["markov".to_string(), "streams".to_string()],
            1024,
            foresight_predict::cachesim::EPOCH_NS,
            1,
            &bar,
        )
        .unwrap();
        let path = std::env::temp_dir().join(format!("foresight-plot-{}.png", std::process::id()));
        draw(path.to_str().unwrap(), &[r.clone(), r]).unwrap();
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 10_000);
        std::fs::remove_file(&path).unwrap();
    }
}
