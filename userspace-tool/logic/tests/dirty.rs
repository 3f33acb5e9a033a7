// SPDX-License-Identifier: GPL-2.0

//! The dirty set: never under-report, over-report only within the
//! granularity in force, lossless granularity changes.

use foresight_logic::{
    dirty::{
        bitmap_words, level_shift, mark_flat_words, regions_of, take_flat_runs, Slot, REGION_BLOCKS,
    },
    ring::{Drain, Extent, RingSlot, WriteRing},
};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;

mod common;
use common::{reported, ring_slots, set, Set};

#[test]
fn levels_map_to_grains() {
    assert_eq!(level_shift(0), None);
    assert_eq!(level_shift(1), Some(8));
    assert_eq!(level_shift(100), Some(0));
    assert_eq!(level_shift(255), Some(0));
    let mut last = 8;
    for l in 1..=100 {
        let s = level_shift(l).unwrap();
        assert!(s <= last, "level {l} coarser than level {}", l - 1);
        last = s;
    }
    // Every grain from 1 MiB to 4 KiB is reachable.
    for s in 0..=8 {
        assert!((1..=100).any(|l| level_shift(l) == Some(s)));
    }
}

#[test]
fn marked_blocks_counts_new_dirt() {
    let mut s = set(4 * REGION_BLOCKS, 0, 100, 64);
    s.mark(5, 3);
    s.mark(6, 1);
    assert_eq!(s.marked_blocks(), 3);
    s.mark(REGION_BLOCKS, REGION_BLOCKS);
    assert_eq!(s.marked_blocks(), 3 + REGION_BLOCKS);
    s.clear();
    assert_eq!(s.marked_blocks(), 0);
}

#[test]
fn exact_at_4k() {
    let mut s = set(10_000, 0, 100, 64);
    s.mark(5, 1);
    s.mark(300, 3);
    s.mark(9_999, 10);
    assert_eq!(
        reported(&s),
        [5, 300, 301, 302, 9_999].into_iter().collect()
    );
    assert!(s.is_dirty(301) && !s.is_dirty(303) && !s.is_dirty(10_000));
}

#[test]
fn scattered_grains_stay_sparse_then_move_to_a_region_entry() {
    let mut s = set(4 * REGION_BLOCKS, 0, 100, 64);
    for b in 0..8 {
        s.mark(b * 20, 1);
    }
    assert_eq!((s.sparse_grains(), s.fine_regions()), (8, 0));
    s.mark(300, 1); // another region: sparse too
    s.mark(200, 1); // a ninth grain in region 0
    assert_eq!((s.sparse_grains(), s.fine_regions()), (1, 1));
    let want: BTreeSet<u64> = (0..8).map(|b| b * 20).chain([200, 300]).collect();
    assert_eq!(reported(&s), want);
    // Coarsening moves everything through region entries and back.
    s.set_shift(4);
    s.set_shift(0);
    assert!(want.is_subset(&reported(&s)));
}

#[test]
fn whole_regions_go_coarse_and_free_entries() {
    let mut s = set(4 * REGION_BLOCKS, 0, 100, 64);
    s.mark(10, 1);
    s.prelog(0, 1);
    assert_eq!(s.fine_regions(), 1);
    s.mark(0, REGION_BLOCKS);
    assert_eq!(s.fine_regions(), 0);
    assert!(s.is_coarse(0));
    assert_eq!(s.dirty_blocks(), REGION_BLOCKS);
}

#[test]
fn dense_regions_are_promoted() {
    let mut s = set(4 * REGION_BLOCKS, 0, 50, 64);
    for b in (0..REGION_BLOCKS).step_by(2) {
        s.mark(REGION_BLOCKS + b, 1);
    }
    assert!(s.is_coarse(1));
    assert_eq!(s.fine_regions(), 0);
}

#[test]
fn a_full_table_falls_back_to_coarse() {
    let mut s = set(64 * REGION_BLOCKS, 0, 100, 8);
    for r in 0..64 {
        s.mark(r * REGION_BLOCKS + 3, 1);
    }
    assert!(s.fallbacks() > 0);
    for r in 0..64 {
        assert!(s.is_dirty(r * REGION_BLOCKS + 3), "lost region {r}");
    }
}

#[test]
fn the_last_short_region_and_block() {
    let blocks = 3 * REGION_BLOCKS + 17;
    let mut s = set(blocks, 4, 100, 64);
    s.mark(blocks - 1, 5);
    let r = reported(&s);
    assert_eq!(*r.iter().max().unwrap(), blocks - 1);
    s.mark(3 * REGION_BLOCKS, 17);
    assert!(s.is_coarse(3));
    assert_eq!(regions_of(blocks * 8), 4);
}

#[test]
fn extents_resume_where_refused() {
    let mut s = set(8 * REGION_BLOCKS, 0, 100, 64);
    for b in [1, 3, 5, 700, 701, 1500] {
        s.mark(b, 1);
    }
    let mut got = vec![];
    let mut from = 0;
    loop {
        let mut taken = 0;
        from = s.extents(from, |st, l| {
            if taken == 2 {
                return false;
            }
            taken += 1;
            got.push((st, l));
            true
        });
        if from == s.blocks() {
            break;
        }
    }
    assert_eq!(got, vec![(1, 1), (3, 1), (5, 1), (700, 2), (1500, 1)]);
}

#[test]
fn growing_keeps_everything() {
    let mut s = set(1024 * REGION_BLOCKS, 0, 100, 16);
    let mut written = vec![];
    for r in (0..1024).step_by(3) {
        if s.needs_grow() {
            let bigger = vec![Slot::default(); s.grown_capacity()];
            s.grow_into(bigger).unwrap();
        }
        if s.needs_grow_sparse() {
            s.grow_sparse_into(vec![0u32; s.grown_sparse_capacity()])
                .unwrap();
        }
        s.mark(r * REGION_BLOCKS + 7, 1);
        written.push(r * REGION_BLOCKS + 7);
    }
    assert_eq!(s.fallbacks(), 0);
    assert_eq!(reported(&s), written.into_iter().collect());
}

#[test]
fn refining_a_coarse_grain_marks_all_its_blocks() {
    let mut s = set(2 * REGION_BLOCKS, 4, 100, 64);
    s.mark(17, 1); // grain 1 at 64 KiB: blocks 16..32
    s.set_shift(0);
    assert_eq!(reported(&s), (16..32).collect());
    s.set_shift(8);
    assert!(s.is_coarse(0) || reported(&s) == (0..REGION_BLOCKS).collect());
}

#[derive(Clone, Debug)]
enum Op {
    Write(u64, u64),
    Level(u8),
    Rotate,
    Fold,
    Grow,
}

fn op(blocks: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..blocks, 1u64..300).prop_map(|(s, l)| Op::Write(s, l)),
        2 => (1u8..=100).prop_map(Op::Level),
        1 => Just(Op::Rotate),
        2 => Just(Op::Fold),
        1 => Just(Op::Grow),
    ]
}

/// The kernel's arrangement in miniature: writes go to a small buffer (or,
/// when it is full, straight to coarse bits), folds move the buffer into
/// the set, rotations fold and then start a new epoch.
struct Log {
    cur: Set,
    prev: Set,
    ring: WriteRing<Vec<RingSlot>>,
    written_cur: BTreeSet<u64>,
    written_prev: BTreeSet<u64>,
    /// The coarsest grain shift in force during each epoch.
    max_shift_cur: u8,
    max_shift_prev: u8,
}

impl Log {
    fn fold(&mut self) {
        let cur = &mut self.cur;
        self.ring.drain(Drain::Ready, || {}, |e, _| {
            cur.mark(e.start, e.len);
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The flat log: extents marked in a plain bitmap, then taken out as
    /// runs into a set, leave the set holding exactly what marking the set
    /// directly does; the bitmap counts each block once and ends empty.
    #[test]
    fn flat_bitmap_folds_losslessly(blocks in 1u64..2000, writes in proptest::collection::vec((0u64..2100, 0u64..200), 0..60)) {
        let words: Vec<AtomicU64> = (0..bitmap_words(blocks)).map(|_| AtomicU64::new(0)).collect();
        // Tables with room for every region: neither set falls back coarse.
        let mut direct = set(blocks, 0, 100, 64);
        let mut written = BTreeSet::new();
        let mut new = 0;
        for &(st, len) in &writes {
            new += mark_flat_words(&words, blocks, st, len);
            direct.mark(st, len);
            written.extend((st..st.saturating_add(len)).filter(|&b| b < blocks));
        }
        prop_assert_eq!(new, written.len() as u64);
        let mut folded = set(blocks, 0, 100, 64);
        let mut runs = Vec::new();
        take_flat_runs(&words, |st, len| {
            runs.push((st, len));
            folded.mark(st, len);
        });
        prop_assert!(words.iter().all(|w| w.load(std::sync::atomic::Ordering::Relaxed) == 0));
        let from_runs: BTreeSet<u64> = runs.iter().flat_map(|&(st, len)| st..st + len).collect();
        prop_assert_eq!(&from_runs, &written);
        prop_assert_eq!(reported(&folded), reported(&direct));
    }

    /// Random writes interleaved with random level changes, folds, table
    /// growth and rotations: no written block is ever missing from its
    /// epoch's set, and every reported block lies in a region that was
    /// written (in a grain of the coarsest granularity in force when no
    /// region went coarse).
    #[test]
    fn never_under_reports(blocks in 300u64..3000, dense in 60u8..=100, ops in proptest::collection::vec(op(3000), 1..120)) {
        let shift = level_shift(100).unwrap();
        let mut log = Log {
            cur: set(blocks, shift, dense, 8),
            prev: set(blocks, shift, dense, 8),
            ring: WriteRing::new(ring_slots(8)),
            written_cur: BTreeSet::new(),
            written_prev: BTreeSet::new(),
            max_shift_cur: shift,
            max_shift_prev: shift,
        };
        for o in ops {
            match o {
                Op::Write(s, l) => {
                    let s = s % blocks;
                    let l = l.min(blocks - s);
                    if log.ring.push(Extent { start: s, len: l }, || false).is_none() {
                        log.cur.mark_coarse(s, l);
                    }
                    log.written_cur.extend(s..s + l);
                }
                Op::Level(l) => {
                    let sh = level_shift(l).unwrap();
                    log.fold();
                    log.cur.set_shift(sh);
                    log.max_shift_cur = log.max_shift_cur.max(sh);
                }
                Op::Fold => log.fold(),
                Op::Grow => {
                    if log.cur.needs_grow() {
                        let t = vec![Slot::default(); log.cur.grown_capacity()];
                        log.cur.grow_into(t).unwrap();
                    }
                    if log.cur.needs_grow_sparse() {
                        let t = vec![0u32; log.cur.grown_sparse_capacity()];
                        log.cur.grow_sparse_into(t).unwrap();
                    }
                }
                Op::Rotate => {
                    log.fold();
                    std::mem::swap(&mut log.cur, &mut log.prev);
                    log.cur.clear();
                    log.cur.set_shift(log.prev.shift());
                    log.written_prev = std::mem::take(&mut log.written_cur);
                    log.max_shift_prev = log.max_shift_cur;
                    log.max_shift_cur = log.prev.shift();
                }
            }
            // The current epoch: buffer plus set.
            let mut cur = reported(&log.cur);
            let mut pending = vec![];
            log.ring.drain(Drain::Ready, || {}, |e, _| pending.push(e));
            for e in &pending {
                cur.extend(e.start..e.start + e.len);
                prop_assert!(log.ring.push(*e, || false).is_some());
            }
            for b in &log.written_cur {
                prop_assert!(cur.contains(b), "current epoch lost block {}", b);
            }
            let prev = reported(&log.prev);
            for b in &log.written_prev {
                prop_assert!(prev.contains(b), "previous epoch lost block {}", b);
            }
            // Over-report stays within the regions written.
            for (rep, written) in [(&cur, &log.written_cur), (&prev, &log.written_prev)] {
                let regions: BTreeSet<u64> = written.iter().map(|b| b / REGION_BLOCKS).collect();
                for b in rep {
                    prop_assert!(regions.contains(&(b / REGION_BLOCKS)), "block {} reported in an unwritten region", b);
                }
            }
        }
        // With no coarse region, over-report is within the coarsest grain in force.
        let regions = blocks.div_ceil(REGION_BLOCKS);
        if (0..regions).all(|r| !log.prev.is_coarse(r)) {
            let g = 1u64 << log.max_shift_prev;
            let grains: BTreeSet<u64> = log.written_prev.iter().map(|b| b / g).collect();
            for b in reported(&log.prev) {
                prop_assert!(grains.contains(&(b / g)), "block {} outside the written grains", b);
            }
        }
    }

    /// At a fixed granularity with no promotion or fallback, the set holds
    /// exactly the written grains.
    #[test]
    fn exact_at_fixed_granularity(shift in 0u8..=8, writes in proptest::collection::vec((0u64..2000, 1u64..40), 1..60)) {
        let blocks = 2000;
        let mut s = set(blocks, shift, 100, 1024);
        let g = 1u64 << shift;
        let mut want = BTreeSet::new();
        for (st, l) in writes {
            let l = l.min(blocks - st);
            s.mark(st, l);
            for b in st..st + l {
                let gs = b / g * g;
                want.extend(gs..(gs + g).min(blocks));
            }
        }
        let regions = blocks.div_ceil(REGION_BLOCKS);
        if (0..regions).all(|r| !s.is_coarse(r)) {
            prop_assert_eq!(reported(&s), want);
        } else {
            let got = reported(&s);
            prop_assert!(want.is_subset(&got));
        }
    }
}

#[test]
/// Promotion during a granularity change once moved an already converted
/// entry back into the scan, converting it twice.
fn regression_promotion_while_coarsening() {
    let mut s = set(2657, 0, 60, 8);
    s.mark(1127, 154);
    s.mark(2523, 70);
    assert!(s.is_dirty(2592));
    s.set_shift(5);
    let r = reported(&s);
    for b in 2523..2593 {
        assert!(r.contains(&b), "lost {b}");
    }
}

#[test]
fn absorbing_overflow_bits() {
    let mut s = set(4 * REGION_BLOCKS, 0, 100, 64);
    s.mark(REGION_BLOCKS + 5, 1);
    let overflow: Vec<AtomicU64> = (0..1).map(|_| AtomicU64::new(0)).collect();
    foresight_logic::dirty::mark_coarse_words(&overflow, s.blocks(), REGION_BLOCKS + 100, 300);
    assert_eq!(s.absorb_coarse(&overflow), 2);
    assert!(s.is_coarse(1) && s.is_coarse(2) && !s.is_coarse(0));
    assert_eq!(s.fine_regions(), 0);
    assert_eq!(overflow[0].load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(s.dirty_blocks(), 2 * REGION_BLOCKS);
}

#[test]
fn granularity_changes_go_coarse_nowhere_given_room() {
    // Many sparse regions, a small table: with the room the set asks for,
    // coarsening and refining keep every region fine or sparse.
    let mut s = set(2048 * REGION_BLOCKS, 0, 100, 16);
    for r in 0..1000 {
        if s.needs_grow_sparse() {
            s.grow_sparse_into(vec![0u32; s.grown_sparse_capacity()])
                .unwrap();
        }
        s.mark(r * 2 * REGION_BLOCKS + 5, 1);
    }
    for shift in [1, 0, 3, 0, 4] {
        if let Some(cap) = s.capacity_for_shift() {
            s.grow_into(vec![Slot::default(); cap]).unwrap();
        }
        s.set_shift(shift);
        assert_eq!(s.fallbacks(), 0, "shift {shift}");
        if let Some(cap) = s.shrunk_capacity(16) {
            s.grow_into(vec![Slot::default(); cap]).unwrap();
        }
    }
    assert!((0..2048).all(|r| !s.is_coarse(r)));
    // Back at one grain per region, the regions are sparse again and the
    // table was given back.
    assert!(s.capacity() <= 64, "table not given back: {}", s.capacity());
    assert_eq!(s.dirty_blocks(), 1000 * 16);
}
