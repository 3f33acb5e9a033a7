//! Accuracy of the predictors on synthetic traces of known structure.
//!
//! Every bound is also checked against deliberately useless predictors
//! (one that predicts nothing, one that predicts random blocks with high
//! probability, one that predicts the block just read), to show that the
//! bound can fail.

use foresight_predict::eval::{calibration, evaluate, train, Score};
use foresight_predict::synth::{self, SplitMix64};
use foresight_predict::{
    Access, Ensemble, MarkovPredictor, Op, Prediction, Predictor, StridePredictor,
};

/// Predictions asked for after every access, at most this many.
const MAX: usize = 64;
/// Predictions below this probability do not count.
const MIN_PROBABILITY: f64 = 0.25;

fn score(p: &mut dyn Predictor, trace: &[Access]) -> Score {
    let s = evaluate(p, trace, 1, MAX, MIN_PROBABILITY);
    eprintln!("{:>8}: {s}; confidence {:.3}", p.name(), p.confidence());
    s
}

/// Predicts nothing.
struct Nothing;

impl Predictor for Nothing {
    fn name(&self) -> &'static str {
        "nothing"
    }
    fn observe(&mut self, _: &Access) {}
    fn predict(&mut self, _: usize) -> Vec<Prediction> {
        Vec::new()
    }
    fn confidence(&self) -> f64 {
        0.0
    }

    fn precision(&self) -> f64 {
        0.0
    }
}

/// Predicts random blocks of a device, confidently.
struct RandomRanges {
    rng: SplitMix64,
    device_blocks: u64,
}

impl RandomRanges {
    fn new(device_blocks: u64) -> RandomRanges {
        RandomRanges {
            rng: SplitMix64::new(99),
            device_blocks,
        }
    }
}

impl Predictor for RandomRanges {
    fn name(&self) -> &'static str {
        "random"
    }
    fn observe(&mut self, _: &Access) {}
    fn predict(&mut self, max: usize) -> Vec<Prediction> {
        (0..max)
            .map(|_| {
                let block = self.rng.below(self.device_blocks);
                Prediction::of_blocks(block, 1, 0.9, Op::Read).unwrap()
            })
            .collect()
    }
    fn confidence(&self) -> f64 {
        0.9
    }

    fn precision(&self) -> f64 {
        0.9
    }
}

/// Predicts the block just read.
#[derive(Default)]
struct Last(Option<Access>);

impl Predictor for Last {
    fn name(&self) -> &'static str {
        "last"
    }
    fn observe(&mut self, a: &Access) {
        self.0 = Some(*a);
    }
    fn predict(&mut self, _: usize) -> Vec<Prediction> {
        self.0
            .iter()
            .map(|a| Prediction {
                start: a.sector,
                sectors: u64::from(a.sectors),
                probability: 1.0,
                op: a.op,
            })
            .collect()
    }
    fn confidence(&self) -> f64 {
        1.0
    }

    fn precision(&self) -> f64 {
        1.0
    }
}

/// The useless predictors, for a device of `device_blocks` blocks.
fn useless(device_blocks: u64) -> Vec<Box<dyn Predictor>> {
    vec![
        Box::new(Nothing),
        Box::new(RandomRanges::new(device_blocks)),
        Box::new(Last::default()),
    ]
}

/// Asserts `bound` of the stride predictor's score on `trace`, and that no
/// useless predictor meets it.
fn stride_meets(trace: &[Access], device_blocks: u64, bound: impl Fn(&Score) -> bool) -> Score {
    let s = score(&mut StridePredictor::new(), trace);
    assert!(bound(&s), "stride: {s}");
    for mut p in useless(device_blocks) {
        let s = score(p.as_mut(), trace);
        assert!(!bound(&s), "{} meets the bound: {s}", p.name());
    }
    s
}

#[test]
fn sequential_scan() {
    for io_blocks in [1, 8] {
        let trace = synth::sequential(1 << 20, 8192, io_blocks);
        stride_meets(&trace, 1 << 20, |s| {
            s.coverage() >= 0.9 && s.precision() >= 0.8
        });
        let mut p = StridePredictor::new();
        score(&mut p, &trace);
        assert!(p.confidence() > 0.8, "{}", p.confidence());
    }
}

#[test]
fn sequential_write_stream() {
    let trace = synth::with_op(synth::sequential(0, 4096, 2), Op::Write);
    let mut p = StridePredictor::new();
    let s = score(&mut p, &trace);
    assert!(s.coverage() >= 0.9 && s.precision() >= 0.8, "{s}");
    assert!(p.confidence() > 0.8, "{}", p.confidence());
    let preds = p.predict(MAX);
    assert!(!preds.is_empty() && preds.iter().all(|p| p.op == Op::Write));
    // The Markov predictor learns from reads only, and a read prediction
    // does not cover a write.
    let mut p = MarkovPredictor::new();
    let s = score(&mut p, &trace);
    assert_eq!(s.covered, 0, "{s}");
    let mut reads = Ensemble::new(vec![Box::new(MarkovPredictor::new())]);
    let s = score(&mut reads, &synth::sequential(0, 4096, 2));
    assert!(s.coverage() >= 0.9, "{s}");
}

#[test]
fn constant_strides() {
    for stride in [16, 3, -16, -1] {
        let start = if stride > 0 { 0 } else { 1 << 24 };
        let trace = synth::strided(start, 3000, stride);
        eprintln!("stride {stride}");
        stride_meets(&trace, 1 << 22, |s| s.coverage() >= 0.9);
    }
}

#[test]
fn two_interleaved_sequential_streams() {
    let trace = synth::interleaved(0, 1 << 30, 4096, 1);
    stride_meets(&trace, 1 << 28, |s| s.coverage() >= 0.8);
}

#[test]
fn repeated_boot_sequence() {
    const DISTINCT: usize = 500;
    let trace = synth::boot_like(7, DISTINCT, 4);
    let (first, rest) = trace.split_at(DISTINCT);

    let mut p = MarkovPredictor::new();
    let s = score(&mut p, first);
    assert!(s.coverage() < 0.05, "nothing to learn from yet: {s}");
    let mut p = MarkovPredictor::new();
    train(&mut p, first);
    let s = score(&mut p, rest);
    assert!(s.coverage() >= 0.9, "{s}");
    assert!(p.confidence() > 0.8, "{}", p.confidence());
    for mut p in useless(synth::BOOT_DEVICE_BLOCKS) {
        train(p.as_mut(), first);
        let s = score(p.as_mut(), rest);
        assert!(s.coverage() < 0.9, "{} meets the bound: {s}", p.name());
    }

    let s = score(&mut StridePredictor::new(), &trace);
    assert!(s.coverage() < 0.2, "{s}");
}

/// Number of predict calls (one per access) that gave a prediction of
/// probability 0.5 or more.
fn confident_calls(p: &mut dyn Predictor, trace: &[Access]) -> usize {
    trace
        .iter()
        .filter(|a| {
            p.observe(a);
            p.predict(MAX).iter().any(|p| p.probability >= 0.5)
        })
        .count()
}

type Factory = fn() -> Box<dyn Predictor>;

const PREDICTORS: [Factory; 3] = [
    || Box::new(StridePredictor::new()),
    || Box::new(MarkovPredictor::new()),
    || Box::new(Ensemble::standard()),
];

#[test]
fn random_reads() {
    const DEVICE_BLOCKS: u64 = 1 << 24;
    let trace = synth::random(11, 20_000, DEVICE_BLOCKS);
    let meets_bounds = |new: &dyn Fn() -> Box<dyn Predictor>| {
        let mut p = new();
        let s = evaluate(p.as_mut(), &trace, 1, MAX, 0.0);
        let confident = confident_calls(new().as_mut(), &trace);
        eprintln!(
            "{:>8}: {s}; confidence {:.3}; {confident} calls with p >= 0.5",
            p.name(),
            p.confidence()
        );
        s.precision() < 0.05 && p.confidence() < 0.1 && confident < trace.len() / 100
    };
    for new in PREDICTORS {
        assert!(meets_bounds(&new), "{}", new().name());
    }
    assert!(!meets_bounds(&|| Box::new(RandomRanges::new(
        DEVICE_BLOCKS
    ))));
    assert!(!meets_bounds(&|| Box::new(Last::default())));

    // Random reads over a small device: the same blocks come back, but not
    // in the same order.
    let small = synth::random(12, 20_000, 2000);
    for new in PREDICTORS {
        let mut p = new();
        let confident = confident_calls(p.as_mut(), &small);
        eprintln!(
            "{:>8}: {confident} calls with p >= 0.5, small device",
            p.name()
        );
        assert!(confident < small.len() / 100, "{}: {confident}", p.name());
    }
}

#[test]
fn sequential_scan_among_random_reads() {
    // Half of the accesses are random: the sequential ones should still be
    // covered, and the predictions still precise.
    let trace = synth::mix(
        5,
        synth::sequential(0, 4000, 1),
        synth::random(6, 10_000, 1 << 24),
        0.5,
    );
    let sequential = trace.iter().filter(|a| a.sector < 4000 * 8).count();
    let s = score(&mut StridePredictor::new(), &trace);
    assert!(s.covered as f64 >= 0.9 * sequential as f64, "{s}");
    assert!(s.precision() >= 0.7, "{s}");
}

#[test]
fn ensemble_is_as_good_as_its_best_member() {
    // A boot sequence twice, then a sequential scan.
    let mut trace = synth::boot_like(3, 400, 2);
    trace.extend(synth::sequential(0, 2000, 1));
    let trace = synth::restamp(trace);
    let (first, rest) = trace.split_at(400);
    let mut best: f64 = 0.0;
    for mut p in [
        Box::new(StridePredictor::new()) as Box<dyn Predictor>,
        Box::new(MarkovPredictor::new()),
    ] {
        train(p.as_mut(), first);
        best = best.max(score(p.as_mut(), rest).coverage());
    }
    let mut e = Ensemble::standard();
    train(&mut e, first);
    let s = score(&mut e, rest);
    assert!(s.coverage() >= best.max(0.9), "{s}");
}

/// Expected calibration error: the mean, over predictions, of the gap
/// between the mean probability of their class and the fraction of their
/// blocks used.
fn calibration_error(p: &mut dyn Predictor, trace: &[Access]) -> f64 {
    let bins = calibration(p, trace, 4, MAX, 5);
    let mut gap = 0.0;
    let mut n = 0;
    for b in &bins {
        eprintln!(
            "{:>8} {:.1}..{:.1}: {:6} predictions, mean probability {:.3}, observed {:.3}",
            p.name(),
            b.low,
            b.high,
            b.predictions,
            b.mean_probability(),
            b.observed()
        );
        gap += b.predictions as f64 * (b.mean_probability() - b.observed()).abs();
        n += b.predictions;
    }
    assert!(n > 1000, "{n} predictions");
    gap / n as f64
}

#[test]
fn probabilities_are_roughly_calibrated() {
    // A mixed workload: two sequential streams among random reads, then a
    // repeated boot sequence.
    let mut trace = synth::mix(
        8,
        synth::interleaved(0, 1 << 30, 3000, 1),
        synth::random(9, 6000, 1 << 24),
        0.3,
    );
    trace.extend(synth::boot_like(10, 300, 3));
    let trace = synth::restamp(trace);
    for new in PREDICTORS {
        let mut p = new();
        let error = calibration_error(p.as_mut(), &trace);
        eprintln!("{:>8}: calibration error {error:.3}", p.name());
        assert!(error < 0.1, "{}: {error}", p.name());
    }
    let error = calibration_error(&mut RandomRanges::new(1 << 24), &trace);
    assert!(error >= 0.1, "{error}");
}
