//! A successor (first-order Markov) model of reads.
//!
//! [`MarkovPredictor`] learns from reads only, with two tables:
//!
//! * the **block** table maps a block to the blocks that started the read
//!   after a read starting there: a sequence of scattered reads that
//!   repeats (a boot, an application start) is learnt exactly after one
//!   pass;
//! * the **delta** table maps the distance (in blocks) between two
//!   consecutive reads to the distances that followed it: it generalises to
//!   patterns that repeat at other places, such as alternating strides.
//!
//! Each *state* (a block, or a delta) keeps up to 4 successors with counts,
//! and the number of times it was left; the least counted successor makes
//! room for a new one.  Both tables are bounded (see
//! [`MarkovPredictor::with_max_states`]): each keeps a current and a previous
//! generation of states, and when the current one is full the previous one
//! is dropped, so states not used for a while are forgotten.
//!
//! # Probabilities
//!
//! A successor seen `c` times out of `n` departures from its state is taken
//! with probability `R(n) * c / n`, where `R(n)` is the measured
//! *reliability* of states of that support: the fraction of the departures
//! from states seen `n` times (1, 2, 3, or 4 and more) that went to an
//! already known successor, Laplace-smoothed.  So a one-off observation is
//! trusted only as far as one-off observations have proved right in this
//! workload: on a repeated boot sequence they are, on random reads they are
//! not.
//!
//! [`predict`](Predictor::predict) walks both tables from the current read,
//! best first, following chains of successors (up to 32 reads ahead); a read
//! several steps ahead gets the product of the step probabilities.  Chains
//! stop below probability 0.01.  These raw probabilities are then
//! calibrated against what the predictor's earlier predictions achieved (see
//! the [crate docs](crate#probabilities-and-confidence)): a read predicted
//! several steps ahead is usually read within the horizon even if other
//! reads come in between, which the product of step probabilities does not
//! count.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::Hash;

use crate::track::HitTracker;
use crate::{access_blocks, Access, Op, Prediction, Predictor};

/// States the two tables hold at most, in all, by default.
pub const DEFAULT_MAX_STATES: usize = 1 << 16;

/// Successors kept per state.
const SUCCESSORS: usize = 4;

/// Support classes of the reliability estimate: seen 1, 2, 3, 4+ times.
const SUPPORT_CLASSES: usize = 4;

/// How many reads ahead predictions go at most.
const MAX_DEPTH: u32 = 32;

/// Chains are not followed below this probability.
const MIN_PATH_PROBABILITY: f64 = 0.01;

/// Counts are halved when they reach this, so that old habits fade.
const DECAY_AT: u32 = 1 << 12;

#[derive(Clone, Copy, Debug)]
struct Successor<K> {
    key: K,
    /// Blocks of the read (last seen).
    len: u32,
    count: u32,
}

#[derive(Clone, Debug)]
struct State<K> {
    next: [Option<Successor<K>>; SUCCESSORS],
    /// Departures from this state (at least the sum of the counts).
    total: u32,
}

impl<K: Copy + Eq> State<K> {
    fn new() -> State<K> {
        State {
            next: [None; SUCCESSORS],
            total: 0,
        }
    }

    fn successors(&self) -> impl Iterator<Item = &Successor<K>> {
        self.next.iter().flatten()
    }

    fn knows(&self, key: K) -> bool {
        self.successors().any(|s| s.key == key)
    }

    /// Support class, 0..SUPPORT_CLASSES.
    fn support(&self) -> usize {
        (self.total as usize).clamp(1, SUPPORT_CLASSES) - 1
    }

    fn learn(&mut self, key: K, len: u32) {
        self.total += 1;
        if let Some(s) = self.next.iter_mut().flatten().find(|s| s.key == key) {
            s.count += 1;
            s.len = len;
        } else {
            let slot = self
                .next
                .iter_mut()
                .min_by_key(|s| s.map_or(0, |s| s.count))
                .expect("SUCCESSORS > 0");
            *slot = Some(Successor { key, len, count: 1 });
        }
        if self.total >= DECAY_AT {
            self.total /= 2;
            for slot in &mut self.next {
                *slot = slot
                    .map(|s| Successor {
                        count: s.count / 2,
                        ..s
                    })
                    .filter(|s| s.count > 0);
            }
        }
    }
}

/// A bounded map of states: two generations.
#[derive(Clone, Debug)]
struct Table<K> {
    current: HashMap<K, State<K>>,
    previous: HashMap<K, State<K>>,
    /// Most states per generation.
    generation: usize,
}

impl<K: Copy + Eq + Hash> Table<K> {
    fn new(max_states: usize) -> Table<K> {
        Table {
            current: HashMap::new(),
            previous: HashMap::new(),
            generation: (max_states / 2).max(1),
        }
    }

    fn get(&self, key: &K) -> Option<&State<K>> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    /// Counts a departure from `key` to `next`.
    fn learn(&mut self, key: K, next: K, len: u32) {
        if let Some(state) = self.current.get_mut(&key) {
            state.learn(next, len);
            return;
        }
        let mut state = self.previous.remove(&key).unwrap_or_else(State::new);
        state.learn(next, len);
        if self.current.len() >= self.generation {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, state);
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// How often departures from states of each support class went to a known
/// successor.
#[derive(Clone, Debug, Default)]
struct Reliability {
    known: [u32; SUPPORT_CLASSES],
    departures: [u32; SUPPORT_CLASSES],
}

impl Reliability {
    fn count(&mut self, support: usize, known: bool) {
        self.departures[support] += 1;
        self.known[support] += u32::from(known);
        if self.departures[support] >= DECAY_AT {
            self.departures[support] /= 2;
            self.known[support] /= 2;
        }
    }

    fn get(&self, support: usize) -> f64 {
        (f64::from(self.known[support]) + 1.0) / (f64::from(self.departures[support]) + 2.0)
    }
}

/// Where a chain of predictions is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum At {
    /// In the block table, at a block.
    Block(u64),
    /// In the delta table: at a block, reached by a delta.
    Delta { block: u64, delta: i64 },
}

/// A step of a chain, for the best-first walk.
#[derive(Clone, Copy, Debug)]
struct Step {
    probability: f64,
    depth: u32,
    at: At,
    block: u64,
    len: u32,
}

impl PartialEq for Step {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Step {}

impl PartialOrd for Step {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Step {
    /// More probable first, then nearer first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.probability
            .total_cmp(&other.probability)
            .then(other.depth.cmp(&self.depth))
    }
}

/// Pushes the successors of `state`, reached from `from`, onto `heap`;
/// `to` gives the position and block a successor key leads to.
fn follow<K: Copy + Eq>(
    heap: &mut BinaryHeap<Step>,
    from: &Step,
    state: &State<K>,
    reliability: f64,
    to: impl Fn(K) -> Option<(At, u64)>,
) {
    for s in state.successors() {
        let probability =
            from.probability * reliability * f64::from(s.count) / f64::from(state.total);
        if probability < MIN_PATH_PROBABILITY {
            continue;
        }
        if let Some((at, block)) = to(s.key) {
            heap.push(Step {
                probability,
                depth: from.depth + 1,
                at,
                block,
                len: s.len,
            });
        }
    }
}

/// Successor model of reads over blocks and block deltas (see the [module
/// docs](self)).
pub struct MarkovPredictor {
    blocks: Table<u64>,
    deltas: Table<i64>,
    block_reliability: Reliability,
    delta_reliability: Reliability,
    /// First block of the last read.
    last: Option<u64>,
    /// Delta from the read before it.
    last_delta: Option<i64>,
    /// The last candidates, for the number asked: the model changes only
    /// at reads (a call after a write asks the same).
    candidates: Option<(usize, Vec<Prediction>)>,
    tracker: HitTracker,
}

impl Default for MarkovPredictor {
    fn default() -> Self {
        MarkovPredictor::new()
    }
}

impl MarkovPredictor {
    crate::track::shares_recency!();

    /// A predictor that has seen nothing, holding at most
    /// [`DEFAULT_MAX_STATES`] states.
    pub fn new() -> MarkovPredictor {
        MarkovPredictor::with_max_states(DEFAULT_MAX_STATES)
    }

    /// A predictor that has seen nothing, holding at most `max_states` states
    /// (but at least 4) in all, half in each table.
    pub fn with_max_states(max_states: usize) -> MarkovPredictor {
        MarkovPredictor {
            blocks: Table::new(max_states / 2),
            deltas: Table::new(max_states / 2),
            block_reliability: Reliability::default(),
            delta_reliability: Reliability::default(),
            last: None,
            last_delta: None,
            candidates: None,
            tracker: HitTracker::new(&[Op::Read]),
        }
    }

    /// Number of states held now.
    pub fn states(&self) -> usize {
        self.blocks.len() + self.deltas.len()
    }
}

impl Predictor for MarkovPredictor {
    fn name(&self) -> &'static str {
        "markov"
    }

    fn observe(&mut self, access: &Access) {
        self.tracker.observe(access);
        if access.op != Op::Read {
            return;
        }
        let Some((block, len)) = access_blocks(access) else {
            return;
        };
        self.candidates = None;
        // At most 2^32 - 1 sectors, so this fits.
        let len = len as u32;
        if let Some(prev) = self.last {
            if let Some(state) = self.blocks.get(&prev) {
                self.block_reliability
                    .count(state.support(), state.knows(block));
            }
            self.blocks.learn(prev, block, len);
            // Blocks are below 2^61, so the difference fits.
            let delta = block as i64 - prev as i64;
            if let Some(from) = self.last_delta {
                if let Some(state) = self.deltas.get(&from) {
                    self.delta_reliability
                        .count(state.support(), state.knows(delta));
                }
                self.deltas.learn(from, delta, len);
            }
            self.last_delta = Some(delta);
        }
        self.last = Some(block);
    }

    fn predict(&mut self, max: usize) -> Vec<Prediction> {
        let raw = match &self.candidates {
            Some((n, raw)) if *n == max => raw.clone(),
            _ => {
                let raw = self.candidates(max);
                self.candidates = Some((max, raw.clone()));
                raw
            }
        };
        self.tracker.finish(raw, max)
    }

    crate::track::scored_by_tracker!();
}

impl MarkovPredictor {
    /// The `max` most probable next reads by the model, most probable first.
    fn candidates(&self, max: usize) -> Vec<Prediction> {
        let mut out = Vec::new();
        if let Some(block) = self.last {
            // The current read: not predicted, only followed.
            let root = |at| Step {
                probability: 1.0,
                depth: 0,
                at,
                block,
                len: 0,
            };
            let mut heap = BinaryHeap::from([root(At::Block(block))]);
            if let Some(delta) = self.last_delta {
                heap.push(root(At::Delta { block, delta }));
            }
            let mut emitted = HashSet::new();
            let mut expanded = HashSet::new();
            let mut budget = 4 * max + 64;
            while let Some(step) = heap.pop() {
                if out.len() >= max || budget == 0 {
                    break;
                }
                budget -= 1;
                if step.depth > 0 && emitted.insert(step.block) {
                    out.extend(Prediction::of_blocks(
                        step.block,
                        u64::from(step.len),
                        step.probability,
                        Op::Read,
                    ));
                }
                if step.depth >= MAX_DEPTH || !expanded.insert(step.at) {
                    continue;
                }
                match step.at {
                    At::Block(b) => {
                        if let Some(state) = self.blocks.get(&b) {
                            let r = self.block_reliability.get(state.support());
                            follow(&mut heap, &step, state, r, |next| {
                                Some((At::Block(next), next))
                            });
                        }
                    }
                    At::Delta { block, delta } => {
                        if let Some(state) = self.deltas.get(&delta) {
                            let r = self.delta_reliability.get(state.support());
                            follow(&mut heap, &step, state, r, |delta| {
                                let block = block.checked_add_signed(delta)?;
                                Some((At::Delta { block, delta }, block))
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth;
    use crate::testutil::{feed, read};

    fn first_blocks(preds: &[Prediction]) -> Vec<u64> {
        preds.iter().map(|p| p.blocks().unwrap().0).collect()
    }

    #[test]
    fn a_scattered_sequence_is_followed_after_one_pass() {
        let order = [900, 17, 5000, 33, 1 << 40, 2, 77];
        let mut p = MarkovPredictor::new();
        assert!(p.predict(10).is_empty());
        for &b in &order {
            p.observe(&read(b));
        }
        p.observe(&read(900));
        let preds = p.predict(4);
        assert_eq!(first_blocks(&preds), [17, 5000, 33, 1 << 40]);
        assert!(preds
            .windows(2)
            .all(|w| w[0].probability >= w[1].probability));
        assert!(preds.iter().all(|p| p.op == Op::Read && p.sectors == 8));
        // Seen once, with no evidence yet that one-offs repeat: unsure.
        assert!(preds[0].probability <= 0.5, "{preds:?}");
    }

    #[test]
    fn one_offs_are_trusted_as_far_as_they_proved_right() {
        let mut boot = MarkovPredictor::new();
        feed(&mut boot, &synth::boot_like(1, 200, 2));
        let boot_p = boot.predict(1)[0].probability;
        assert!(boot_p > 0.95, "{boot_p}");

        // Random reads over few blocks: every block has been seen, but its
        // successor is anyone's guess.
        let mut random = MarkovPredictor::new();
        feed(&mut random, &synth::random(2, 4000, 1000));
        let best = random.predict(5).first().map_or(0.0, |p| p.probability);
        assert!(best < 0.1, "{best}");
    }

    #[test]
    fn deltas_generalise_to_new_places() {
        // +3, +10, +3, +10, ... at a new place after training.
        let mut p = MarkovPredictor::new();
        let mut b = 0;
        for i in 0..200 {
            b += if i % 2 == 0 { 3 } else { 10 };
            p.observe(&read(b));
        }
        for b in [1_000_000, 1_000_003] {
            p.observe(&read(b));
        }
        assert_eq!(
            first_blocks(&p.predict(4)),
            [1_000_013, 1_000_016, 1_000_026, 1_000_029]
        );
    }

    #[test]
    fn writes_are_ignored() {
        let mut p = MarkovPredictor::new();
        feed(
            &mut p,
            &synth::with_op(synth::sequential(0, 100, 1), Op::Write),
        );
        assert_eq!(p.states(), 0);
        assert!(p.predict(10).is_empty());
    }

    #[test]
    fn tables_are_bounded() {
        let mut p = MarkovPredictor::with_max_states(64);
        feed(&mut p, &synth::random(3, 5000, 1 << 30));
        assert!(p.states() <= 64, "{}", p.states());
        // Recent states survive: the last transitions are still known.
        let t = synth::boot_like(4, 10, 2);
        feed(&mut p, &t);
        assert!(!p.predict(1).is_empty());
    }

    #[test]
    fn state_keeps_the_most_counted_successors_and_decays() {
        let mut s = State::new();
        for (key, times) in [(1u64, 5), (2, 4), (3, 3), (4, 2)] {
            for _ in 0..times {
                s.learn(key, 1);
            }
        }
        s.learn(5, 1); // replaces 4 (count 2)
        s.learn(6, 1); // replaces 5 (count 1)
        let mut keys: Vec<u64> = s.successors().map(|s| s.key).collect();
        keys.sort_unstable();
        assert_eq!(keys, [1, 2, 3, 6]);
        assert_eq!(s.total, 16);
        for _ in s.total..DECAY_AT {
            s.learn(1, 1);
        }
        assert_eq!(s.total, DECAY_AT / 2);
        let counted: u32 = s.successors().map(|s| s.count).sum();
        assert!(counted <= s.total);
        assert!(!s.knows(6), "count 1 halves to nothing");
    }
}
