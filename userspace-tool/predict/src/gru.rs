//! A recurrent model of the access stream (a GRU), trained online.
//!
//! [`GruPredictor`] sees every access as a *step*: the distance in blocks
//! from the end of the previous access to the start of this one (its
//! *delta*), its op, and buckets of its size and of the time since the
//! previous access.  Deltas are classes of a learned vocabulary: the
//! [`GruConfig::vocab`]` - 1` most frequent deltas of the recent window, plus
//! one out-of-vocabulary class.  A GRU over the steps predicts, at each step,
//! the class and the op of the next one (a softmax over the classes, one over
//! the two ops).
//!
//! * **Training** (candle: autograd and AdamW) runs on mini-batches of
//!   windows of [`GruConfig::bptt`] consecutive steps drawn from the last
//!   [`GruConfig::window`] (truncated backpropagation through time), every
//!   [`GruConfig::train_every`] new steps, within a CPU share: each access
//!   adds the share of the time since the previous access (its timestamp) to
//!   a credit that the measured CPU time of training spends.  When accesses
//!   come faster than the share pays for, training skips windows: it learns
//!   from a subsample.
//! * **Inference** runs on a plain copy of the weights taken after each
//!   training step ([`Weights`]): one GRU step per access, with one-hot
//!   inputs (a sum of four weight columns).
//! * **Predictions**: the most probable next deltas after the last access
//!   (read probability times delta probability), then the same after the
//!   most probable next step, [`GruConfig::depth`] steps ahead, path
//!   probabilities multiplied; each predicted access has the last access's
//!   size.  They are calibrated like every predictor's (see the
//!   [crate docs](crate#probabilities-and-confidence)).
//!
//! The weights and the vocabulary can be saved and loaded
//! ([`GruPredictor::save`], [`GruPredictor::load`]) so that a device
//! warm-starts.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::rnn::{GRUConfig, GRU, RNN};
use candle_nn::{AdamW, Linear, Module, Optimizer, ParamsAdamW, VarBuilder, VarMap};

use crate::synth::SplitMix64;
use crate::track::HitTracker;
use crate::{access_blocks, Access, Op, Prediction, Predictor};

/// Size buckets: 1, 2-3, 4-7, 8-15, 16-31, 32+ blocks.
const SIZE_BUCKETS: usize = 6;
/// Inter-arrival buckets: < 10 µs, < 100 µs, < 1 ms, < 10 ms, < 100 ms, more.
const GAP_BUCKETS: usize = 6;
/// A delta joins the vocabulary once seen this often in the window.
const MIN_DELTA_COUNT: u32 = 2;
/// Predicted paths are not followed below this probability.
const MIN_PATH_PROBABILITY: f64 = 0.02;
/// The training credit is capped at this much CPU time (ns): an idle device
/// does not save up for a burst of training.
const MAX_CREDIT_NS: f64 = 200e6;

/// Makes candle run its operations in the calling thread: sets
/// `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS` to 1 unless they are set.
/// Call it at the start of `main`, before other threads exist.  Training's
/// CPU share is measured on the training thread, so work handed to other
/// threads would escape it; and candle otherwise counts the cores (reading
/// `/proc/cpuinfo`) at every matrix product.
pub fn single_threaded_candle() {
    for v in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(v).is_none() {
            std::env::set_var(v, "1");
        }
    }
}

/// The model's shape and training schedule.
#[derive(Clone, Debug)]
pub struct GruConfig {
    /// Delta classes, the out-of-vocabulary class included.
    pub vocab: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Steps kept for training.
    pub window: usize,
    /// Sequences per mini-batch.
    pub batch: usize,
    /// Steps per sequence (truncated backpropagation through time).
    pub bptt: usize,
    /// New steps between two training steps.
    pub train_every: usize,
    /// Steps ahead that predictions follow.
    pub depth: usize,
    /// Deltas predicted per step ahead.
    pub per_step: usize,
    /// Share of one core that training may use, measured against the
    /// accesses' timestamps (as CPU time of the training thread: see
    /// [`single_threaded_candle`]); `None`: train at every opportunity.
    pub cpu_share: Option<f64>,
    /// AdamW's learning rate.
    pub learning_rate: f64,
    /// Seed of the initial weights and of the mini-batch draws.
    pub seed: u64,
    /// Train in a thread of its own, its share measured against elapsed
    /// wall-clock time (the daemon); otherwise in `observe`, against the
    /// accesses' timestamps (`eval`: repeatable).
    pub threaded: bool,
}

impl Default for GruConfig {
    fn default() -> GruConfig {
        GruConfig {
            vocab: 64,
            hidden: 32,
            window: 4096,
            batch: 16,
            bptt: 24,
            train_every: 32,
            depth: 2,
            per_step: 3,
            cpu_share: Some(0.05),
            learning_rate: 5e-3,
            seed: 1,
            threaded: false,
        }
    }
}

/// Why a model could not be built, trained, saved or loaded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GruError(String);

impl From<candle_core::Error> for GruError {
    fn from(e: candle_core::Error) -> GruError {
        GruError(e.to_string())
    }
}

type Result<T> = std::result::Result<T, GruError>;

/// A step as the model sees it, before its delta is mapped to a class.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Step {
    delta: i64,
    write: bool,
    size: u8,
    gap: u8,
}

fn size_bucket(blocks: u64) -> u8 {
    (63 - blocks.max(1).leading_zeros()).min(SIZE_BUCKETS as u32 - 1) as u8
}

fn gap_bucket(ns: u64) -> u8 {
    let mut b = 0;
    let mut limit = 10_000;
    while b < GAP_BUCKETS - 1 && ns >= limit {
        b += 1;
        limit *= 10;
    }
    b as u8
}

/// The most frequent deltas of the recent window, each a class (1..vocab;
/// class 0 is "any other delta").
#[derive(Clone, Debug)]
struct Vocab {
    /// Class - 1 -> delta.
    slots: Vec<Option<i64>>,
    class_of: HashMap<i64, usize>,
    /// Occurrences of each delta in `recent`.
    counts: HashMap<i64, u32>,
    recent: VecDeque<i64>,
    window: usize,
}

impl Vocab {
    fn new(classes: usize, window: usize) -> Vocab {
        Vocab {
            slots: vec![None; classes - 1],
            class_of: HashMap::new(),
            counts: HashMap::new(),
            recent: VecDeque::with_capacity(window),
            window,
        }
    }

    /// Counts `delta`; whether a slot changed (a delta got a class).
    fn push(&mut self, delta: i64) -> bool {
        if self.recent.len() == self.window {
            if let Some(old) = self.recent.pop_front() {
                if let Some(c) = self.counts.get_mut(&old) {
                    *c -= 1;
                    if *c == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
        self.recent.push_back(delta);
        let n = {
            let c = self.counts.entry(delta).or_insert(0);
            *c += 1;
            *c
        };
        if n < MIN_DELTA_COUNT || self.class_of.contains_key(&delta) {
            return false;
        }
        // A free slot, or the one whose delta is now least frequent, if
        // less frequent than this one.
        let count = |s: &Option<i64>| s.map_or(0, |d| self.counts.get(&d).copied().unwrap_or(0));
        let (i, least) = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i, count(s)))
            .min_by_key(|&(_, c)| c)
            .expect("a vocabulary has slots");
        if least < n {
            if let Some(old) = self.slots[i].replace(delta) {
                self.class_of.remove(&old);
            }
            self.class_of.insert(delta, i + 1);
            return true;
        }
        false
    }

    fn class(&self, delta: i64) -> usize {
        self.class_of.get(&delta).copied().unwrap_or(0)
    }

    fn delta(&self, class: usize) -> Option<i64> {
        class.checked_sub(1).and_then(|i| self.slots[i])
    }
}

/// Indices of the one-hot input of a step: its class, op, size and gap.
fn input_indices(vocab: usize, class: usize, s: &Step) -> [usize; 4] {
    [
        class,
        vocab + usize::from(s.write),
        vocab + 2 + usize::from(s.size),
        vocab + 2 + SIZE_BUCKETS + usize::from(s.gap),
    ]
}

fn input_dim(vocab: usize) -> usize {
    vocab + 2 + SIZE_BUCKETS + GAP_BUCKETS
}

/// A plain copy of the model's weights, for inference (PyTorch's GRU
/// layout: gates r, z, n stacked by rows).
#[derive(Clone, Debug)]
pub struct Weights {
    inputs: usize,
    hidden: usize,
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
    w_out: Vec<f32>,
    b_out: Vec<f32>,
}

/// The dot product of `a` and `b`, in eight lanes (which the compiler
/// vectorises; a plain sum of products must keep its order and does not).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Weights {
    /// One GRU step from `h` with the one-hot input whose ones are at
    /// `ones`, into `next`.
    fn step(&self, h: &[f32], ones: &[usize], next: &mut [f32]) {
        let n = self.hidden;
        let mut gi = [0f32; 3 * 64];
        let mut gh = [0f32; 3 * 64];
        let (gi, gh) = (&mut gi[..3 * n], &mut gh[..3 * n]);
        gi.copy_from_slice(&self.b_ih);
        gh.copy_from_slice(&self.b_hh);
        for (row, g) in gi.iter_mut().enumerate() {
            let w = &self.w_ih[row * self.inputs..(row + 1) * self.inputs];
            *g += ones.iter().map(|&j| w[j]).sum::<f32>();
        }
        for (row, g) in gh.iter_mut().enumerate() {
            *g += dot(&self.w_hh[row * n..(row + 1) * n], h);
        }
        for k in 0..n {
            let r = sigmoid(gi[k] + gh[k]);
            let z = sigmoid(gi[n + k] + gh[n + k]);
            let c = (gi[2 * n + k] + r * gh[2 * n + k]).tanh();
            next[k] = (1.0 - z) * c + z * h[k];
        }
    }

    /// The head's logits for hidden state `h` (classes, then the two ops).
    fn logits(&self, h: &[f32], out: &mut [f32]) {
        for (row, o) in out.iter_mut().enumerate() {
            *o = self.b_out[row] + dot(&self.w_out[row * self.hidden..(row + 1) * self.hidden], h);
        }
    }
}

/// Softmax of `x` in place.
fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// The trainable model (candle).
struct Net {
    varmap: VarMap,
    gru: GRU,
    head: Linear,
    opt: AdamW,
    vocab: usize,
    hidden: usize,
}

impl Net {
    fn new(cfg: &GruConfig, rng: &mut SplitMix64) -> Result<Net> {
        if cfg.hidden == 0 || cfg.hidden > 64 || cfg.vocab < 2 {
            return Err(GruError(format!(
                "a GRU of {} hidden units over {} classes is not supported (1..=64 units, 2 classes or more)",
                cfg.hidden, cfg.vocab
            )));
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let inputs = input_dim(cfg.vocab);
        let gru = candle_nn::rnn::gru(inputs, cfg.hidden, GRUConfig::default(), vb.pp("gru"))?;
        let head = candle_nn::linear(cfg.hidden, cfg.vocab + 2, vb.pp("head"))?;
        // Initial weights from the crate's seeded generator (candle's CPU
        // one cannot be seeded): uniform in +-1/sqrt(hidden), PyTorch's rule.
        let k = 1.0 / (cfg.hidden as f64).sqrt();
        let mut vars: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .expect("the variables' lock")
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, v) in &vars {
            let vals: Vec<f32> = (0..v.elem_count())
                .map(|_| ((rng.unit() * 2.0 - 1.0) * k) as f32)
                .collect();
            v.set(&Tensor::from_vec(vals, v.shape(), &Device::Cpu)?)?;
        }
        let opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: cfg.learning_rate,
                weight_decay: 1e-4,
                ..ParamsAdamW::default()
            },
        )?;
        Ok(Net {
            varmap,
            gru,
            head,
            opt,
            vocab: cfg.vocab,
            hidden: cfg.hidden,
        })
    }

    /// The loss of sequences: `inputs` (batch, steps, features) one-hot,
    /// `classes` and `ops` the targets (batch * steps).
    fn loss(&self, inputs: &Tensor, classes: &Tensor, ops: &Tensor) -> Result<Tensor> {
        let (b, l, _) = inputs.dims3()?;
        let states = self.gru.seq(inputs)?;
        let h = self
            .gru
            .states_to_tensor(&states)?
            .reshape((b * l, self.hidden))?;
        let logits = self.head.forward(&h)?;
        let lc = candle_nn::loss::cross_entropy(&logits.narrow(1, 0, self.vocab)?, classes)?;
        let lo = candle_nn::loss::cross_entropy(&logits.narrow(1, self.vocab, 2)?, ops)?;
        Ok((lc + (lo * 0.5)?)?)
    }

    fn train(&mut self, inputs: &Tensor, classes: &Tensor, ops: &Tensor) -> Result<f32> {
        let loss = self.loss(inputs, classes, ops)?;
        self.opt.backward_step(&loss)?;
        Ok(loss.to_scalar::<f32>()?)
    }

    fn var(&self, name: &str) -> Result<Vec<f32>> {
        let data = self.varmap.data().lock().expect("the variables' lock");
        let v = data
            .get(name)
            .ok_or_else(|| GruError(format!("no variable {name}")))?;
        Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?)
    }

    fn weights(&self) -> Result<Weights> {
        Ok(Weights {
            inputs: input_dim(self.vocab),
            hidden: self.hidden,
            w_ih: self.var("gru.weight_ih_l0")?,
            w_hh: self.var("gru.weight_hh_l0")?,
            b_ih: self.var("gru.bias_ih_l0")?,
            b_hh: self.var("gru.bias_hh_l0")?,
            w_out: self.var("head.weight")?,
            b_out: self.var("head.bias")?,
        })
    }
}

/// What trains the model: the network, the recent steps it learns from and
/// the draws of its mini-batches.  It lives in the predictor (inline
/// training) or in a thread of its own ([`GruConfig::threaded`]).
struct Learner {
    cfg: GruConfig,
    net: Net,
    rng: SplitMix64,
    /// Recent steps, oldest first.
    steps: VecDeque<Step>,
    /// The vocabulary's classes (delta -> class), as the predictor has them.
    classes: HashMap<i64, usize>,
    new_steps: usize,
    train_ns: u64,
    trainings: u64,
    last_loss: f32,
}

impl Learner {
    fn push(&mut self, s: Step) {
        if self.steps.len() == self.cfg.window {
            self.steps.pop_front();
        }
        self.steps.push_back(s);
        self.new_steps += 1;
    }

    /// Takes the vocabulary's slots (class - 1 -> delta).
    fn set_slots(&mut self, slots: &[Option<i64>]) {
        self.classes = slots
            .iter()
            .enumerate()
            .filter_map(|(i, d)| Some(((*d)?, i + 1)))
            .collect();
    }

    fn class(&self, delta: i64) -> usize {
        self.classes.get(&delta).copied().unwrap_or(0)
    }

    /// Whether there are new steps enough for a training step.
    fn ready(&self) -> bool {
        self.new_steps >= self.cfg.train_every && self.steps.len() > self.cfg.bptt
    }

    /// A mini-batch of sequences drawn from the recent steps, as tensors:
    /// inputs, target classes, target ops.
    fn batch(&mut self) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, l, v) = (self.cfg.batch, self.cfg.bptt, self.cfg.vocab);
        let d = input_dim(v);
        let mut x = vec![0f32; b * l * d];
        let mut classes = Vec::with_capacity(b * l);
        let mut ops = Vec::with_capacity(b * l);
        let starts = self.steps.len() - l;
        for i in 0..b {
            let s0 = self.rng.below(starts as u64) as usize;
            for t in 0..l {
                let s = &self.steps[s0 + t];
                for j in input_indices(v, self.class(s.delta), s) {
                    x[(i * l + t) * d + j] = 1.0;
                }
                let next = &self.steps[s0 + t + 1];
                classes.push(self.class(next.delta) as u32);
                ops.push(u32::from(next.write));
            }
        }
        let dev = Device::Cpu;
        Ok((
            Tensor::from_vec(x, (b, l, d), &dev)?,
            Tensor::from_vec(classes, b * l, &dev)?,
            Tensor::from_vec(ops, b * l, &dev)?,
        ))
    }

    /// One training step (the caller checked [`ready`](Self::ready)): the
    /// new weights, and the CPU time it took (this thread's).
    fn train(&mut self) -> (Option<Weights>, u64) {
        self.new_steps = 0;
        let t0 = cpu_time::ThreadTime::now();
        let trained = self
            .batch()
            .and_then(|(x, c, o)| self.net.train(&x, &c, &o));
        let mut weights = None;
        if let Ok(loss) = trained {
            self.last_loss = loss;
            self.trainings += 1;
            weights = self.net.weights().ok();
        }
        let spent = t0.elapsed().as_nanos() as u64;
        self.train_ns += spent;
        (weights, spent)
    }
}

/// Work for the training thread.
enum Job {
    /// New steps, and the vocabulary's slots if they changed.
    Steps(Vec<Step>, Option<Vec<Option<i64>>>),
    /// Something to do with the learner (save, load).
    Run(Box<dyn FnOnce(&mut Learner) + Send>),
}

/// What the training thread shares with its predictor.
#[derive(Default)]
struct Shared {
    /// Weights of the latest training step not yet taken.
    weights: Mutex<Option<Weights>>,
    /// Training stopped until resumed ([`Predictor::pause_training`]).
    paused: std::sync::atomic::AtomicBool,
    train_ns: AtomicU64,
    trainings: AtomicU64,
    last_loss: AtomicU32,
}

/// Run at the start of every training thread ([`on_training_thread`]).
static THREAD_START: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>> = std::sync::OnceLock::new();

/// Runs `f` at the start of every training thread, in it (the daemon puts
/// the thread in its cgroup); the first call only counts.
pub fn on_training_thread(f: impl Fn() + Send + Sync + 'static) {
    let _ = THREAD_START.set(Box::new(f));
}

/// The training thread: it learns from the steps it is sent, within its
/// share of wall-clock time (its own CPU clock against elapsed time), and
/// publishes the weights after each training step.  It ends when its
/// predictor drops the sending side.
struct Trainer {
    jobs: Option<SyncSender<Job>>,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Steps not sent yet, and whether the slots changed meanwhile.
    buf: Vec<Step>,
    slots_changed: bool,
}

/// Step batches the training thread may have waiting; beyond, batches are
/// dropped (training learns from a subsample).
const TRAINER_QUEUE: usize = 16;

impl Trainer {
    fn start(mut learner: Learner) -> Trainer {
        let (tx, rx) = sync_channel::<Job>(TRAINER_QUEUE);
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("foresight-gru".into())
            .spawn(move || {
                if let Some(f) = THREAD_START.get() {
                    f();
                }
                let share = learner.cfg.cpu_share;
                let mut credit = 0.0f64;
                let mut last = std::time::Instant::now();
                loop {
                    let paused = sh.paused.load(Relaxed);
                    let wait = if !learner.ready() || paused {
                        Duration::from_secs(1)
                    } else {
                        match share {
                            Some(s) if credit <= 0.0 => {
                                Duration::from_nanos((-credit / s.max(1e-6)) as u64 + 1)
                            }
                            _ => Duration::ZERO,
                        }
                    };
                    let mut job = match rx.recv_timeout(wait) {
                        Ok(j) => Some(j),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    };
                    while let Some(j) = job.take().or_else(|| rx.try_recv().ok()) {
                        match j {
                            Job::Steps(steps, slots) => {
                                if let Some(slots) = slots {
                                    learner.set_slots(&slots);
                                }
                                for s in steps {
                                    learner.push(s);
                                }
                            }
                            Job::Run(f) => f(&mut learner),
                        }
                    }
                    let now = std::time::Instant::now();
                    if let Some(s) = share {
                        let dt = now.duration_since(last).as_nanos() as f64;
                        credit = (credit + s * dt).min(MAX_CREDIT_NS);
                    }
                    last = now;
                    if paused || sh.paused.load(Relaxed) {
                        // No credit builds up while paused.
                        credit = credit.min(0.0);
                    } else if learner.ready() && (share.is_none() || credit > 0.0) {
                        let (w, spent) = learner.train();
                        credit -= spent as f64;
                        if let Some(w) = w {
                            *sh.weights.lock().expect("weights lock") = Some(w);
                        }
                        sh.train_ns.store(learner.train_ns, Relaxed);
                        sh.trainings.store(learner.trainings, Relaxed);
                        sh.last_loss.store(learner.last_loss.to_bits(), Relaxed);
                    }
                }
            })
            .expect("a thread for training");
        Trainer {
            jobs: Some(tx),
            shared,
            thread: Some(thread),
            buf: Vec::new(),
            slots_changed: false,
        }
    }

    /// Queues `s`; sends the queue every `every` steps (dropped when the
    /// thread is behind).
    fn push(&mut self, s: Step, slots: &[Option<i64>], every: usize) {
        self.buf.push(s);
        if self.buf.len() < every {
            return;
        }
        let steps = std::mem::take(&mut self.buf);
        let slots = self.slots_changed.then(|| slots.to_vec());
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|tx| tx.try_send(Job::Steps(steps, slots)).is_ok());
        if sent {
            self.slots_changed = false;
        }
    }

    /// Runs `f` on the learner, in the training thread, and waits for it.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Learner) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        let job = Job::Run(Box::new(move |l| {
            let _ = tx.send(f(l));
        }));
        self.jobs.as_ref()?.send(job).ok()?;
        rx.recv().ok()
    }

    /// The weights of a training step since the last call.
    fn take_weights(&self) -> Option<Weights> {
        self.shared.weights.try_lock().ok()?.take()
    }
}

impl Drop for Trainer {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where training runs.
enum Training {
    Inline(Box<Learner>),
    Thread(Trainer),
}

/// The online GRU predictor (see the [module docs](self)).
pub struct GruPredictor {
    cfg: GruConfig,
    weights: Weights,
    vocab: Vocab,
    training: Training,
    /// Hidden state after the last step, and the head's output for it
    /// (class probabilities, then op probabilities).
    h: Vec<f32>,
    out: Vec<f32>,
    /// Room for `predict`'s look-ahead outputs.
    scratch: Vec<f32>,
    /// The last access: its end block, blocks and time.
    last: Option<(u64, u64, u64)>,
    /// The last step (what `predict` follows from).
    last_step: Option<Step>,
    /// Inline training's credit, nanoseconds of CPU time.
    credit_ns: f64,
    tracker: HitTracker,
}

impl GruPredictor {
    /// A predictor with the default configuration.
    pub fn new() -> GruPredictor {
        GruPredictor::with_config(GruConfig::default()).expect("the default configuration is valid")
    }

    /// A predictor of configuration `cfg`.
    pub fn with_config(cfg: GruConfig) -> Result<GruPredictor> {
        let mut rng = SplitMix64::new(cfg.seed);
        let net = Net::new(&cfg, &mut rng)?;
        let weights = net.weights()?;
        let out = vec![0.0; cfg.vocab + 2];
        let learner = Learner {
            cfg: cfg.clone(),
            net,
            rng,
            steps: VecDeque::with_capacity(cfg.window),
            classes: HashMap::new(),
            new_steps: 0,
            train_ns: 0,
            trainings: 0,
            last_loss: f32::NAN,
        };
        let training = if cfg.threaded {
            Training::Thread(Trainer::start(learner))
        } else {
            Training::Inline(Box::new(learner))
        };
        Ok(GruPredictor {
            vocab: Vocab::new(cfg.vocab, cfg.window),
            h: vec![0.0; cfg.hidden],
            scratch: out.clone(),
            out,
            weights,
            training,
            last: None,
            last_step: None,
            credit_ns: 0.0,
            tracker: HitTracker::new(&[Op::Read]),
            cfg,
        })
    }

    /// Training steps taken so far, and the loss of the last one.
    pub fn trainings(&self) -> (u64, f32) {
        match &self.training {
            Training::Inline(l) => (l.trainings, l.last_loss),
            Training::Thread(t) => (
                t.shared.trainings.load(Relaxed),
                f32::from_bits(t.shared.last_loss.load(Relaxed)),
            ),
        }
    }

    /// The probability the model gives to each next delta (in blocks from
    /// the end of the last access), most probable first, and that the next
    /// access is a read.
    pub fn next_deltas(&self) -> (Vec<(i64, f64)>, f64) {
        let v = self.cfg.vocab;
        let mut d: Vec<(i64, f64)> = (1..v)
            .filter_map(|c| Some((self.vocab.delta(c)?, f64::from(self.out[c]))))
            .collect();
        d.sort_by(|a, b| b.1.total_cmp(&a.1));
        (d, f64::from(self.out[v]))
    }

    fn step_of(&self, a: &Access, first: u64, n: u64) -> Option<Step> {
        let (end, _, ts) = self.last?;
        Some(Step {
            delta: first as i64 - end as i64,
            write: a.op == Op::Write,
            size: size_bucket(n),
            gap: gap_bucket(a.ts_ns.saturating_sub(ts)),
        })
    }

    /// Advances the inference state by `s`.
    fn advance(&mut self, s: &Step) {
        let ones = input_indices(self.cfg.vocab, self.vocab.class(s.delta), s);
        let mut next = [0f32; 64];
        let next = &mut next[..self.cfg.hidden];
        self.weights.step(&self.h, &ones, next);
        self.h.copy_from_slice(next);
        self.head_out();
    }

    fn head_out(&mut self) {
        let v = self.cfg.vocab;
        self.weights.logits(&self.h, &mut self.out);
        softmax(&mut self.out[..v]);
        softmax(&mut self.out[v..]);
    }

    /// Hands step `s` to training (`slots_changed`: the vocabulary changed
    /// with it), and takes the weights of a training step done meanwhile.
    fn learn(&mut self, s: Step, slots_changed: bool) {
        match &mut self.training {
            Training::Inline(l) => {
                if slots_changed {
                    l.set_slots(&self.vocab.slots);
                }
                l.push(s);
                if l.ready() && (self.cfg.cpu_share.is_none() || self.credit_ns > 0.0) {
                    let (w, spent) = l.train();
                    self.credit_ns -= spent as f64;
                    if let Some(w) = w {
                        self.weights = w;
                    }
                }
            }
            Training::Thread(t) => {
                t.slots_changed |= slots_changed;
                t.push(s, &self.vocab.slots, self.cfg.train_every);
                if let Some(w) = t.take_weights() {
                    self.weights = w;
                }
            }
        }
    }

    /// Runs `f` on the learner, wherever it is.
    fn with_learner<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Learner) -> T + Send + 'static,
    ) -> Option<T> {
        match &mut self.training {
            Training::Inline(l) => Some(f(l)),
            Training::Thread(t) => t.run(f),
        }
    }

    /// Saves the weights and the vocabulary (safetensors).
    pub fn save(&mut self, path: &Path) -> Result<()> {
        let vocab: Vec<i64> = self
            .vocab
            .slots
            .iter()
            .map(|s| s.unwrap_or(i64::MIN))
            .collect();
        let path = path.to_path_buf();
        self.with_learner(move |l| -> Result<()> {
            let mut tensors: HashMap<String, Tensor> = l
                .net
                .varmap
                .data()
                .lock()
                .expect("the variables' lock")
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect();
            let n = vocab.len();
            tensors.insert("vocab".into(), Tensor::from_vec(vocab, n, &Device::Cpu)?);
            candle_core::safetensors::save(&tensors, &path)?;
            Ok(())
        })
        .unwrap_or_else(|| Err(GruError("the training thread is gone".into())))
    }

    /// Loads weights and vocabulary saved by [`save`](Self::save) from a
    /// model of the same shape.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let vocab = tensors
            .get("vocab")
            .ok_or_else(|| GruError(format!("{}: no vocabulary", path.display())))?
            .to_vec1::<i64>()?;
        if vocab.len() != self.cfg.vocab - 1 {
            return Err(GruError(format!(
                "{}: a vocabulary of {} classes, this model has {}",
                path.display(),
                vocab.len() + 1,
                self.cfg.vocab
            )));
        }
        let mut v = Vocab::new(self.cfg.vocab, self.cfg.window);
        for (i, d) in vocab.into_iter().enumerate() {
            if d != i64::MIN {
                v.slots[i] = Some(d);
                v.class_of.insert(d, i + 1);
            }
        }
        let slots = v.slots.clone();
        let name = path.display().to_string();
        let weights = self
            .with_learner(move |l| -> Result<Weights> {
                {
                    let data = l.net.varmap.data().lock().expect("the variables' lock");
                    for (var_name, var) in data.iter() {
                        let t = tensors
                            .get(var_name)
                            .ok_or_else(|| GruError(format!("{name}: no {var_name}")))?;
                        if t.shape() != var.shape() {
                            return Err(GruError(format!(
                                "{name}: {var_name} is {:?}, this model's is {:?}",
                                t.shape(),
                                var.shape()
                            )));
                        }
                        var.set(t)?;
                    }
                }
                l.set_slots(&slots);
                l.net.weights()
            })
            .unwrap_or_else(|| Err(GruError("the training thread is gone".into())))?;
        self.vocab = v;
        self.weights = weights;
        self.head_out();
        Ok(())
    }
}

impl Default for GruPredictor {
    fn default() -> GruPredictor {
        GruPredictor::new()
    }
}

impl Predictor for GruPredictor {
    fn name(&self) -> &'static str {
        "gru"
    }

    fn pause_training(&mut self, paused: bool) -> bool {
        match &self.training {
            Training::Thread(t) => {
                t.shared.paused.store(paused, Relaxed);
                true
            }
            Training::Inline(_) => false,
        }
    }

    fn observe(&mut self, access: &Access) {
        self.tracker.observe(access);
        let Some((first, n)) = access_blocks(access) else {
            return;
        };
        if let (Some(share), Some((_, _, ts))) = (self.cfg.cpu_share, self.last) {
            let dt = access.ts_ns.saturating_sub(ts) as f64;
            self.credit_ns = (self.credit_ns + share * dt).min(MAX_CREDIT_NS);
        }
        if let Some(s) = self.step_of(access, first, n) {
            let changed = self.vocab.push(s.delta);
            self.last_step = Some(s);
            self.advance(&s);
            self.learn(s, changed);
        }
        self.last = Some((first + n, n, access.ts_ns));
    }

    fn predict(&mut self, max: usize) -> Vec<Prediction> {
        let mut raw = Vec::new();
        if let (Some((end, n, _)), Some(last)) = (self.last, self.last_step) {
            let v = self.cfg.vocab;
            let hidden = self.cfg.hidden;
            let mut h = [0f32; 64];
            h[..hidden].copy_from_slice(&self.h);
            let mut out = std::mem::take(&mut self.scratch);
            out.clone_from(&self.out);
            let mut end = end as i64;
            let mut path = 1.0f64;
            for depth in 0..self.cfg.depth {
                let p_read = f64::from(out[v]);
                // The per_step most probable known deltas, best first.
                let mut best: Vec<(usize, f32)> = (1..v)
                    .filter(|&c| self.vocab.delta(c).is_some())
                    .map(|c| (c, out[c]))
                    .collect();
                let k = self.cfg.per_step.min(best.len());
                if k > 0 && k < best.len() {
                    best.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
                }
                best.truncate(k);
                best.sort_by(|a, b| b.1.total_cmp(&a.1));
                for &(c, p) in &best {
                    let start = end + self.vocab.delta(c).unwrap_or(0);
                    let p = path * f64::from(p) * p_read;
                    if start >= 0 && p >= MIN_PATH_PROBABILITY {
                        raw.extend(Prediction::of_blocks(start as u64, n, p, Op::Read));
                    }
                }
                let Some(&(c, p)) = best.first() else { break };
                path *= f64::from(p);
                if depth + 1 == self.cfg.depth || path < MIN_PATH_PROBABILITY {
                    break;
                }
                // Follow the most probable next access.
                let d = self.vocab.delta(c).unwrap_or(0);
                end += d + n as i64;
                let s = Step {
                    delta: d,
                    write: out[v + 1] > out[v],
                    ..last
                };
                let ones = input_indices(v, c, &s);
                let mut next = [0f32; 64];
                self.weights.step(&h[..hidden], &ones, &mut next[..hidden]);
                h = next;
                self.weights.logits(&h[..hidden], &mut out);
                softmax(&mut out[..v]);
                softmax(&mut out[v..]);
            }
            self.scratch = out;
        }
        raw.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        self.tracker.finish(raw, max)
    }

    crate::track::scored_by_tracker!();

    fn train_cpu_ns(&self) -> u64 {
        match &self.training {
            Training::Inline(l) => l.train_ns,
            Training::Thread(t) => t.shared.train_ns.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(vocab: usize, hidden: usize) -> GruConfig {
        single_threaded_candle();
        GruConfig {
            vocab,
            hidden,
            cpu_share: None,
            ..GruConfig::default()
        }
    }

    #[test]
    fn buckets() {
        assert_eq!(
            [1, 2, 3, 4, 8, 16, 31, 32, 1000].map(size_bucket),
            [0, 1, 1, 2, 3, 4, 4, 5, 5]
        );
        assert_eq!(
            [
                0,
                9_999,
                10_000,
                99_999,
                100_000,
                5_000_000,
                50_000_000,
                1 << 40
            ]
            .map(gap_bucket),
            [0, 0, 1, 1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn the_vocabulary_keeps_the_frequent_deltas() {
        let mut v = Vocab::new(3, 8);
        for d in [5, 7, 5, 9, 9, 9] {
            v.push(d);
        }
        // 5 and 9 seen twice or more; 7 once.
        assert!(v.class(5) > 0 && v.class(9) > 0);
        assert_eq!(v.class(7), 0);
        assert_eq!(v.delta(v.class(9)), Some(9));
        // 4 becomes more frequent than 5 in the window (8 deltas): it
        // takes 5's slot.
        for _ in 0..4 {
            v.push(4);
        }
        assert!(v.class(4) > 0 && v.class(9) > 0);
        assert_eq!(v.class(5), 0);
    }

    /// One step of a GRU with 2 hidden units over 3 inputs, against values
    /// computed by hand (PyTorch's equations, evaluated in Python's float
    /// arithmetic), through candle's GRU and through [`Weights::step`].
    #[test]
    fn one_step_against_independent_values() {
        single_threaded_candle();
        // Rows r0 r1 z0 z1 n0 n1.
        let w_ih = [
            0.1, -0.2, 0.3, 0.4, 0.5, -0.6, -0.7, 0.8, 0.9, 0.15, -0.25, 0.35, 0.45, -0.55, 0.65,
            -0.75, 0.85, -0.95,
        ];
        let w_hh = [
            0.2, -0.1, 0.05, 0.3, -0.4, 0.25, 0.6, -0.35, 0.1, 0.7, -0.5, 0.45,
        ];
        let b_ih = [0.01, -0.02, 0.03, -0.04, 0.05, -0.06];
        let b_hh = [-0.01, 0.02, -0.03, 0.04, -0.05, 0.06];
        let x = [1.0f32, 0.0, 1.0];
        let h = [0.5f32, -0.3];
        // r = sigmoid(W_ir x + b_ir + W_hr h + b_hr), and so on;
        // h' = (1 - z) * n + z * h.
        let expected = [0.639_527_1f32, -0.489_039_1];

        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let gru = candle_nn::rnn::gru(3, 2, GRUConfig::default(), vb.pp("gru")).unwrap();
        let set = |name: &str, vals: &[f32], shape: &[usize]| {
            let d = varmap.data().lock().unwrap();
            d[name]
                .set(&Tensor::from_slice(vals, shape, &dev).unwrap())
                .unwrap();
        };
        set("gru.weight_ih_l0", &w_ih, &[6, 3]);
        set("gru.weight_hh_l0", &w_hh, &[6, 2]);
        set("gru.bias_ih_l0", &b_ih, &[6]);
        set("gru.bias_hh_l0", &b_hh, &[6]);
        let state = candle_nn::rnn::GRUState {
            h: Tensor::from_slice(&h, (1, 2), &dev).unwrap(),
        };
        let next = gru
            .step(&Tensor::from_slice(&x, (1, 3), &dev).unwrap(), &state)
            .unwrap();
        let candle: Vec<f32> = next.h.flatten_all().unwrap().to_vec1().unwrap();

        let w = Weights {
            inputs: 3,
            hidden: 2,
            w_ih: w_ih.to_vec(),
            w_hh: w_hh.to_vec(),
            b_ih: b_ih.to_vec(),
            b_hh: b_hh.to_vec(),
            w_out: vec![],
            b_out: vec![],
        };
        let mut ours = [0f32; 2];
        w.step(&h, &[0, 2], &mut ours);
        for k in 0..2 {
            assert!(
                (candle[k] - expected[k]).abs() < 1e-5,
                "candle {candle:?} vs {expected:?}"
            );
            assert!(
                (ours[k] - expected[k]).abs() < 1e-5,
                "ours {ours:?} vs {expected:?}"
            );
        }
    }

    /// The loss of one sequence, in f64, by the equations, from the
    /// weights as plain numbers: the reference the autograd gradient is
    /// checked against.
    fn reference_loss(
        w: &HashMap<String, Vec<f64>>,
        vocab: usize,
        hidden: usize,
        seq: &[([usize; 4], usize, usize)],
    ) -> f64 {
        let d = input_dim(vocab);
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let mut h = vec![0.0; hidden];
        let (mut lc, mut lo) = (0.0, 0.0);
        for (ones, class, op) in seq {
            let gate = |m: &str, b: &str, row: usize, x: &dyn Fn(usize) -> f64, cols: usize| {
                w[b][row] + (0..cols).map(|j| w[m][row * cols + j] * x(j)).sum::<f64>()
            };
            let xin = |j: usize| if ones.contains(&j) { 1.0 } else { 0.0 };
            let hv = h.clone();
            let hin = |j: usize| hv[j];
            let mut next = vec![0.0; hidden];
            for k in 0..hidden {
                let r = sig(gate("gru.weight_ih_l0", "gru.bias_ih_l0", k, &xin, d)
                    + gate("gru.weight_hh_l0", "gru.bias_hh_l0", k, &hin, hidden));
                let z = sig(
                    gate("gru.weight_ih_l0", "gru.bias_ih_l0", hidden + k, &xin, d)
                        + gate(
                            "gru.weight_hh_l0",
                            "gru.bias_hh_l0",
                            hidden + k,
                            &hin,
                            hidden,
                        ),
                );
                let n = (gate(
                    "gru.weight_ih_l0",
                    "gru.bias_ih_l0",
                    2 * hidden + k,
                    &xin,
                    d,
                ) + r * gate(
                    "gru.weight_hh_l0",
                    "gru.bias_hh_l0",
                    2 * hidden + k,
                    &hin,
                    hidden,
                ))
                .tanh();
                next[k] = (1.0 - z) * n + z * hv[k];
            }
            h = next;
            let hv = h.clone();
            let logits: Vec<f64> = (0..vocab + 2)
                .map(|o| gate("head.weight", "head.bias", o, &|j| hv[j], hidden))
                .collect();
            let lse = |xs: &[f64]| {
                let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
            };
            lc += lse(&logits[..vocab]) - logits[*class];
            lo += lse(&logits[vocab..]) - logits[vocab + op];
        }
        let n = seq.len() as f64;
        lc / n + 0.5 * lo / n
    }

    /// candle's gradient of the training loss, against central differences
    /// of [`reference_loss`].
    #[test]
    fn gradient_against_finite_differences() {
        let (vocab, hidden) = (4, 3);
        let cfg = GruConfig {
            batch: 1,
            bptt: 5,
            ..tiny(vocab, hidden)
        };
        let mut p = GruPredictor::with_config(cfg).unwrap();
        let steps = [
            (2i64, false, 0u8, 1u8),
            (3, true, 1, 0),
            (2, false, 2, 3),
            (-9, false, 0, 5),
            (3, true, 1, 1),
            (2, false, 0, 2),
        ];
        for &(delta, ..) in &steps {
            p.vocab.push(delta);
        }
        let Training::Inline(l) = &mut p.training else {
            panic!("inline training")
        };
        for &(delta, write, size, gap) in &steps {
            l.push(Step {
                delta,
                write,
                size,
                gap,
            });
        }
        l.set_slots(&p.vocab.slots);
        let (x, c, o) = l.batch().unwrap();
        let loss = l.net.loss(&x, &c, &o).unwrap();
        let grads = loss.backward().unwrap();
        let seq: Vec<([usize; 4], usize, usize)> = (0..5)
            .map(|t| {
                let s = &l.steps[t];
                let n = &l.steps[t + 1];
                (
                    input_indices(vocab, l.class(s.delta), s),
                    l.class(n.delta),
                    usize::from(n.write),
                )
            })
            .collect();
        let data = l.net.varmap.data().lock().unwrap();
        let weights: HashMap<String, Vec<f64>> = data
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    v.as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .into_iter()
                        .map(f64::from)
                        .collect(),
                )
            })
            .collect();
        let l0 = reference_loss(&weights, vocab, hidden, &seq);
        assert!(
            (f64::from(loss.to_scalar::<f32>().unwrap()) - l0).abs() < 1e-4,
            "loss {loss} vs {l0}"
        );
        let mut checked = 0;
        for (name, var) in data.iter() {
            let g: Vec<f32> = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (i, &gi) in g.iter().enumerate() {
                let eps = 1e-5;
                let mut w = weights.clone();
                w.get_mut(name).unwrap()[i] += eps;
                let up = reference_loss(&w, vocab, hidden, &seq);
                w.get_mut(name).unwrap()[i] -= 2.0 * eps;
                let down = reference_loss(&w, vocab, hidden, &seq);
                let numeric = (up - down) / (2.0 * eps);
                assert!(
                    (f64::from(gi) - numeric).abs() < 1e-3 + 1e-2 * numeric.abs(),
                    "{name}[{i}]: autograd {gi} vs numeric {numeric}"
                );
                checked += 1;
            }
        }
        assert!(checked > 100, "{checked} gradients checked");
    }

    /// Accesses whose next delta depends on the two before: the repeated
    /// deltas 1 2 3 2 1 4.  After a 2 comes a 3 or a 1 and after a 1 a 2
    /// or a 4, half the time each, so a first-order model is right at most
    /// 4 times in 6; the GRU learns them all.
    #[test]
    fn learns_what_a_first_order_model_cannot() {
        let pattern = [1i64, 2, 3, 2, 1, 4];
        let mut p = GruPredictor::with_config(GruConfig {
            train_every: 8,
            ..tiny(16, 24)
        })
        .unwrap();
        let mut block = 1000u64;
        let mut right = 0;
        let mut asked = 0;
        // First-order: the best any model of the previous delta only does.
        let mut follows: HashMap<i64, HashMap<i64, u32>> = HashMap::new();
        for i in 0..6000 {
            let d = pattern[i % pattern.len()];
            let prev = pattern[(i + pattern.len() - 1) % pattern.len()];
            *follows.entry(prev).or_default().entry(d).or_default() += 1;
            if i >= 5400 {
                asked += 1;
                let (deltas, p_read) = p.next_deltas();
                if deltas.first().is_some_and(|&(top, _)| top == d) {
                    right += 1;
                }
                assert!(p_read > 0.9, "p(read) {p_read}");
            }
            block += d as u64;
            p.observe(&Access {
                ts_ns: i as u64 * 1000,
                sector: block * 8,
                sectors: 8,
                op: Op::Read,
            });
            block += 1;
        }
        let first_order: u32 = follows.values().map(|m| m.values().max().unwrap()).sum();
        let first_order = f64::from(first_order) / 6000.0;
        let accuracy = f64::from(right) / f64::from(asked);
        assert!(first_order < 0.7, "first-order best {first_order}");
        assert!(
            accuracy > 0.95,
            "GRU top-1 accuracy {accuracy} after {:?} trainings",
            p.trainings()
        );
    }

    /// A paused training thread trains no more (an idle device's), and
    /// the start hook ran in it.
    #[test]
    fn paused_training_stops() {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        on_training_thread(|| {
            STARTED.fetch_add(1, Relaxed);
        });
        let mut p = GruPredictor::with_config(GruConfig {
            train_every: 8,
            threaded: true,
            cpu_share: None,
            ..tiny(16, 24)
        })
        .unwrap();
        let feed = |p: &mut GruPredictor, n: u64| {
            for k in 0..n {
                p.observe(&Access {
                    ts_ns: k * 1000,
                    sector: (k % 50) * 16,
                    sectors: 8,
                    op: Op::Read,
                });
            }
        };
        let t0 = std::time::Instant::now();
        while p.trainings().0 < 20 && t0.elapsed() < Duration::from_secs(60) {
            feed(&mut p, 64);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(p.trainings().0 >= 20, "{:?}", p.trainings());
        p.pause_training(true);
        // One training step may be under way, and be counted when the
        // predictor next takes its weights.
        std::thread::sleep(Duration::from_millis(100));
        feed(&mut p, 1);
        let before = p.trainings().0;
        // Accesses keep coming: none is trained on while paused.
        for _ in 0..40 {
            feed(&mut p, 16);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(p.trainings().0, before, "trained while paused");
        p.pause_training(false);
        let t0 = std::time::Instant::now();
        while p.trainings().0 == before && t0.elapsed() < Duration::from_secs(10) {
            feed(&mut p, 16);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(p.trainings().0 > before, "no training once resumed");
        assert!(STARTED.load(Relaxed) >= 1);
    }

    /// The daemon's way: training in a thread of its own, the predictor
    /// taking its weights as they come; it learns the same sequence.
    #[test]
    fn learns_in_a_thread_of_its_own() {
        let pattern = [1i64, 2, 3, 2, 1, 4];
        let mut p = GruPredictor::with_config(GruConfig {
            train_every: 8,
            threaded: true,
            ..tiny(16, 24)
        })
        .unwrap();
        let (mut block, mut i) = (1000u64, 0usize);
        let feed = |p: &mut GruPredictor, n: usize, block: &mut u64, i: &mut usize| {
            for _ in 0..n {
                *block += pattern[*i % pattern.len()] as u64;
                p.observe(&Access {
                    ts_ns: *i as u64 * 1000,
                    sector: *block * 8,
                    sectors: 8,
                    op: Op::Read,
                });
                *block += 1;
                *i += 1;
            }
        };
        // Fed at a pace the thread can follow (it drops batches when
        // behind), until it has trained enough.
        let t0 = std::time::Instant::now();
        while p.trainings().0 < 600 && t0.elapsed() < Duration::from_secs(120) {
            feed(&mut p, 8, &mut block, &mut i);
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(p.trainings().0 >= 600, "{:?}", p.trainings());
        feed(&mut p, 600, &mut block, &mut i);
        let mut right = 0;
        for _ in 0..600 {
            let (deltas, _) = p.next_deltas();
            let d = pattern[i % pattern.len()];
            if deltas.first().is_some_and(|&(top, _)| top == d) {
                right += 1;
            }
            feed(&mut p, 1, &mut block, &mut i);
        }
        assert!(
            right > 570,
            "{right} of 600 after {:?} trainings",
            p.trainings()
        );
        assert!(p.train_cpu_ns() > 0);
        // Save and load go through the thread.
        let dir = std::env::temp_dir().join(format!("foresight-gru-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("w.safetensors");
        p.save(&file).unwrap();
        let mut q = GruPredictor::with_config(GruConfig {
            threaded: true,
            seed: 9,
            ..tiny(16, 24)
        })
        .unwrap();
        q.load(&file).unwrap();
        assert_eq!(q.vocab.slots, p.vocab.slots);
        std::fs::remove_dir_all(&dir).unwrap();
        // Dropping the predictor ends the thread (joined in drop).
        drop(p);
        drop(q);
    }

    /// In its thread, training spends at most its share of the elapsed
    /// time (plus one training step).
    #[test]
    fn a_training_thread_stays_within_its_share() {
        let mut p = GruPredictor::with_config(GruConfig {
            threaded: true,
            cpu_share: Some(0.05),
            ..tiny(16, 24)
        })
        .unwrap();
        let t0 = std::time::Instant::now();
        let mut i = 0u64;
        while t0.elapsed() < Duration::from_secs(2) {
            for _ in 0..64 {
                p.observe(&Access {
                    ts_ns: i,
                    sector: (i * 37 % 5000) * 8,
                    sectors: 8,
                    op: Op::Read,
                });
                i += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let elapsed = t0.elapsed().as_nanos() as f64;
        let (n, _) = p.trainings();
        let spent = p.train_cpu_ns() as f64;
        assert!(n > 0, "never trained");
        let one = spent / n as f64;
        assert!(
            spent <= 0.05 * elapsed + 2.0 * one,
            "{spent} ns of training in {elapsed} ns ({n} steps)"
        );
    }

    /// With a CPU share, training spends at most that share of the trace's
    /// time (plus one training step), learning from a subsample.
    #[test]
    fn training_stays_within_its_share() {
        single_threaded_candle();
        let mut p = GruPredictor::with_config(GruConfig {
            cpu_share: Some(0.05),
            ..GruConfig::default()
        })
        .unwrap();
        // 20,000 accesses in 2 s of trace time: 100 ms of training at 5%.
        let mut one_step = 0;
        for i in 0..20_000u64 {
            let before = p.train_cpu_ns();
            p.observe(&Access {
                ts_ns: i * 100_000,
                sector: (i * 37 % 5000) * 8,
                sectors: 8,
                op: if i % 3 == 0 { Op::Write } else { Op::Read },
            });
            one_step = one_step.max(p.train_cpu_ns() - before);
        }
        let budget = 0.05 * 2e9;
        let (n, _) = p.trainings();
        assert!(n > 0, "never trained");
        assert!(
            n < 20_000 / 32,
            "trained at every opportunity ({n}): no subsample"
        );
        assert!(
            (p.train_cpu_ns() as f64) <= budget + one_step as f64,
            "{} ns of training for a budget of {budget} (one step {one_step})",
            p.train_cpu_ns()
        );
    }

    #[test]
    fn save_and_load_warm_start() {
        let mut a = GruPredictor::with_config(tiny(8, 8)).unwrap();
        let mut block = 0;
        for i in 0..2000u64 {
            block += [3, 5, 3, 9][i as usize % 4] + 1;
            a.observe(&Access {
                ts_ns: i,
                sector: block * 8,
                sectors: 8,
                op: Op::Read,
            });
        }
        let dir = std::env::temp_dir().join(format!("foresight-gru-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("w.safetensors");
        a.save(&file).unwrap();
        let mut b = GruPredictor::with_config(GruConfig {
            seed: 7,
            ..tiny(8, 8)
        })
        .unwrap();
        b.load(&file).unwrap();
        assert_eq!(a.weights.w_hh, b.weights.w_hh);
        assert_eq!(a.vocab.slots, b.vocab.slots);
        let mut wrong = GruPredictor::with_config(tiny(8, 4)).unwrap();
        assert!(wrong.load(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn predicts_the_learnt_sequence_as_reads() {
        let mut p = GruPredictor::with_config(tiny(8, 16)).unwrap();
        let mut block = 0;
        for i in 0..3000u64 {
            block += [7, 2][i as usize % 2] + 1;
            p.observe(&Access {
                ts_ns: i,
                sector: block * 8,
                sectors: 8,
                op: Op::Read,
            });
        }
        let preds = p.predict(8);
        assert!(!preds.is_empty());
        // The last delta was 2 (i = 2999 is odd): next comes 7 after the
        // end of the last block.
        let next = (block + 1 + 7) * 8;
        assert!(
            preds.iter().any(|q| q.start == next && q.op == Op::Read),
            "{preds:?}"
        );
    }
}
