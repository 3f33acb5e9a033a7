// SPDX-License-Identifier: GPL-2.0

//! The shadow target's hydration state: copy order (urgent, predicted,
//! ascending), writes that wait or overwrite, failures that lose nothing,
//! and the commit bookkeeping that flushes wait on.

use foresight_logic::hydrate::{
    bitmap_words, Batch, Claim, Hint, Hydration, Why, META_BLOCK_REGIONS, META_BLOCK_WORDS, PROB_ONE,
};
use proptest::prelude::*;

type H = Hydration<Vec<u64>, Vec<Hint>>;

fn state(regions: u64) -> H {
    let words = bitmap_words(regions);
    let blocks = regions.div_ceil(META_BLOCK_REGIONS) as usize;
    Hydration::new(
        regions,
        vec![0; words],
        vec![0; words],
        vec![0; blocks.div_ceil(64)],
        vec![0; 64],
        vec![Hint::default(); 4],
    )
    .unwrap()
}

/// Copies batches (all succeeding) until none is left; the order of their
/// first regions.
fn drain(h: &mut H, max: u64) -> Vec<Batch> {
    let mut out = vec![];
    while let Some(b) = h.next_batch(max, true) {
        h.copy_done(b, true);
        out.push(b);
    }
    out
}

#[test]
fn ascending_covers_every_region_once_in_batches() {
    let mut h = state(1000);
    let batches = drain(&mut h, 16);
    assert!(batches.iter().all(|b| b.len >= 1 && b.len <= 16 && b.why == Why::Ascending));
    let mut next = 0;
    for b in &batches {
        assert_eq!(b.start, next, "ascending and contiguous");
        next = b.start + b.len;
    }
    assert_eq!(next, 1000);
    assert!(h.is_complete());
    assert_eq!(h.hydrated_count(), 1000);
    assert_eq!(h.counts().ascending, 1000);
    assert_eq!(h.next_batch(16, true), None);
}

#[test]
fn urgent_then_predicted_then_ascending() {
    let mut h = state(10_000);
    h.set_hints([
        Hint { start: 5000, len: 20, prob: PROB_ONE / 4 },
        Hint { start: 8000, len: 10, prob: PROB_ONE },
    ]);
    assert!(!h.claim_read(7000), "a missing region is read from the source");
    assert_eq!(h.claim_write(9000, false), Claim::Wait);
    let b: Vec<Batch> = (0..6).map(|_| h.next_batch(8, true).unwrap()).collect();
    assert_eq!(b[0], Batch { start: 7000, len: 1, why: Why::Urgent });
    assert_eq!(b[1], Batch { start: 9000, len: 1, why: Why::Urgent });
    // The likelier range first, in batches of at most 8.
    assert_eq!(b[2], Batch { start: 8000, len: 8, why: Why::Predicted });
    assert_eq!(b[3], Batch { start: 8008, len: 2, why: Why::Predicted });
    assert_eq!(b[4], Batch { start: 5000, len: 8, why: Why::Predicted });
    assert_eq!(b[5], Batch { start: 5008, len: 8, why: Why::Predicted });
    for x in b {
        h.copy_done(x, true);
    }
    let last = h.next_batch(8, true).unwrap();
    assert_eq!(last, Batch { start: 5016, len: 4, why: Why::Predicted });
    h.copy_done(last, true);
    let rest = drain(&mut h, 64);
    assert_eq!(rest[0].why, Why::Ascending);
    assert!(h.is_complete());
    let c = h.counts();
    assert_eq!((c.urgent, c.predicted), (2, 30));
    assert_eq!(c.ascending, 10_000 - 32);
}

#[test]
fn ascending_skips_what_is_busy_or_hydrated() {
    let mut h = state(100);
    let u = {
        h.claim_read(3);
        h.next_batch(8, true).unwrap()
    };
    assert_eq!(u, Batch { start: 3, len: 1, why: Why::Urgent });
    // Region 3 is busy: the ascending batch stops before it.
    assert_eq!(h.next_batch(8, true), Some(Batch { start: 0, len: 3, why: Why::Ascending }));
    assert_eq!(h.next_batch(8, true), Some(Batch { start: 4, len: 8, why: Why::Ascending }));
    assert_eq!(h.busy_count(), 12);
}

#[test]
fn hints_keep_the_likeliest() {
    let mut h = state(1000);
    let hints = (0..10).map(|i| Hint { start: i * 10, len: 1, prob: i as u32 * 100 });
    h.set_hints(hints);
    assert_eq!(h.hints_len(), 4, "capacity");
    let starts: Vec<u64> = (0..4).map(|_| h.next_batch(1, true).unwrap().start).collect();
    assert_eq!(starts, [90, 80, 70, 60]);
    // New predictions replace the old ones; ranges past the end are cut.
    h.set_hints([Hint { start: 995, len: 100, prob: 1 }, Hint { start: 5000, len: 1, prob: 9 }]);
    assert_eq!(h.hints_len(), 1);
    assert_eq!(h.next_batch(100, true), Some(Batch { start: 995, len: 5, why: Why::Predicted }));
}

#[test]
fn writes_wait_overwrite_or_go_to_the_destination() {
    let mut h = state(64);
    // A whole-region write to a missing region lands without a copy.
    assert_eq!(h.claim_write(5, true), Claim::Overwrite);
    assert!(h.is_busy(5));
    // Anything else to it waits; reads still go to the source.
    assert_eq!(h.claim_write(5, false), Claim::Wait);
    assert_eq!(h.claim_write(5, true), Claim::Wait);
    assert!(!h.claim_read(5));
    // Not copied while the write is in flight.
    let b = h.next_batch(64, true).unwrap();
    assert_eq!((b.start, b.len), (0, 5));
    h.overwrite_done(5, true);
    assert!(h.is_hydrated(5));
    assert_eq!(h.claim_write(5, false), Claim::Dest);
    assert!(h.claim_read(5));
    assert_eq!(h.counts().overwritten, 1);
    // A failed overwrite leaves the region missing: it is copied later.
    assert_eq!(h.claim_write(9, true), Claim::Overwrite);
    h.overwrite_done(9, false);
    assert!(!h.is_hydrated(9) && !h.is_busy(9));
    h.copy_done(b, true);
    let rest = drain(&mut h, 64);
    assert!(rest.iter().any(|b| b.start <= 9 && 9 < b.start + b.len));
    assert!(h.is_complete());
}

#[test]
fn without_background_only_urgent_regions_are_copied() {
    let mut h = state(100);
    h.set_hints([Hint { start: 50, len: 5, prob: PROB_ONE }]);
    assert_eq!(h.next_batch(8, false), None);
    h.claim_write(20, false);
    assert_eq!(h.next_batch(8, false), Some(Batch { start: 20, len: 1, why: Why::Urgent }));
    assert_eq!(h.next_batch(8, false), None);
    assert_eq!(h.next_batch(8, true).unwrap().why, Why::Predicted);
}

#[test]
fn a_failed_copy_loses_nothing() {
    let mut h = state(32);
    h.claim_read(7);
    let u = h.next_batch(4, true).unwrap();
    let a = h.next_batch(4, true).unwrap();
    h.copy_done(u, false);
    h.copy_done(a, false);
    assert_eq!(h.hydrated_count(), 0);
    assert_eq!(h.busy_count(), 0);
    assert!(h.is_clean(), "nothing to commit");
    // The urgent region is still urgent.
    assert_eq!(h.next_batch(4, true), Some(Batch { start: 7, len: 1, why: Why::Urgent }));
}

#[test]
fn a_failed_predicted_batch_is_predicted_again_once() {
    let mut h = state(1000);
    h.set_hints([
        Hint { start: 500, len: 16, prob: PROB_ONE },
        Hint { start: 800, len: 4, prob: PROB_ONE / 2 },
    ]);
    let a = h.next_batch(8, true).unwrap();
    assert_eq!(a, Batch { start: 500, len: 8, why: Why::Predicted });
    h.copy_done(a, false);
    // The rest of the hints first, then the failed batch, before ascending.
    let rest: Vec<Batch> = (0..3).map(|_| h.next_batch(8, true).unwrap()).collect();
    assert_eq!(rest[0], Batch { start: 508, len: 8, why: Why::Predicted });
    assert_eq!(rest[1], Batch { start: 800, len: 4, why: Why::Predicted });
    assert_eq!(rest[2], Batch { start: 500, len: 8, why: Why::Predicted });
    h.copy_done(rest[0], true);
    h.copy_done(rest[1], true);
    // Failing again: left to ascending order, which is next.
    h.copy_done(rest[2], false);
    let e = h.next_batch(8, true).unwrap();
    assert_eq!((e.start, e.why), (0, Why::Ascending));
    // A failed ascending batch does not hold up the next ones; it comes
    // back round.
    h.copy_done(e, false);
    let f = h.next_batch(8, true).unwrap();
    assert_eq!(f.start, 8);
    h.copy_done(f, true);
    let later = drain(&mut h, 64);
    assert!(later.iter().any(|b| b.start <= 500 && 500 < b.start + b.len), "region 500 copied in the end");
    assert!(h.is_complete());
}

#[test]
fn discards_and_seeds_mark_without_a_copy() {
    let mut h = state(100);
    h.claim_write(10, true);
    assert_eq!(h.mark(5, 10), 9, "busy region 10 is left to its write");
    assert!(h.is_hydrated(5) && h.is_hydrated(14) && !h.is_hydrated(10));
    assert_eq!(h.mark(5, 10), 0, "once");
    assert_eq!(h.mark(95, 1000), 5, "clamped to the device");
    assert_eq!(h.counts().marked, 14);
}

#[test]
fn commits_cover_every_change() {
    let regions = 3 * META_BLOCK_REGIONS + 5;
    let mut h = state(regions);
    assert!(h.is_clean());
    assert_eq!(h.meta_blocks(), 4);
    h.mark(1, 1);
    h.mark(3 * META_BLOCK_REGIONS + 4, 1);
    assert!(!h.is_clean());
    let mut blocks = vec![];
    let gen = h.take_dirty(|i, w| {
        assert_eq!(w.len(), META_BLOCK_WORDS);
        blocks.push((i, w.to_vec()));
    });
    assert_eq!(blocks.iter().map(|b| b.0).collect::<Vec<_>>(), [0, 3]);
    assert_eq!(blocks[0].1[0], 0b10);
    assert_eq!(blocks[1].1[0], 1 << 4);
    // A change during the commit is not covered by it.
    h.mark(2, 1);
    h.committed(gen);
    assert!(!h.is_clean());
    let gen2 = h.take_dirty(|i, _| assert_eq!(i, 0));
    // A failed commit writes its blocks again.
    h.commit_failed(0);
    let mut again = vec![];
    let gen3 = h.take_dirty(|i, _| again.push(i));
    assert_eq!(again, [0]);
    assert_eq!(gen2, gen3);
    h.committed(gen3);
    assert!(h.is_clean());
    // Loading what was committed gives the same bitmap.
    let mut l = state(regions);
    for (i, w) in blocks {
        l.load_block(i, &w);
    }
    l.load_block(0, h.block_words(0));
    assert_eq!(l.hydrated_count(), 3);
    assert!(l.is_clean());
    assert!(l.is_hydrated(2) && l.is_hydrated(3 * META_BLOCK_REGIONS + 4));
    // Bits past the last region are ignored.
    let mut m = state(regions);
    m.load_block(3, &vec![u64::MAX; META_BLOCK_WORDS]);
    assert_eq!(m.hydrated_count(), 5);
}

#[derive(Clone, Debug)]
enum Op {
    Read(u64),
    Write(u64, bool),
    WriteDone(bool),
    Batch(u64),
    CopyDone(bool),
    Mark(u64, u64),
}

fn op(regions: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..regions).prop_map(Op::Read),
        ((0..regions), any::<bool>()).prop_map(|(r, w)| Op::Write(r, w)),
        any::<bool>().prop_map(Op::WriteDone),
        (1..8u64).prop_map(Op::Batch),
        any::<bool>().prop_map(Op::CopyDone),
        ((0..regions), (0..4u64)).prop_map(|(s, l)| Op::Mark(s, l)),
    ]
}

proptest! {
    /// Against a model: a region is hydrated exactly when a copy or a
    /// whole write of it succeeded or it was marked; no region is in two
    /// batches or overwrites at once; every region is hydrated in the end.
    #[test]
    fn matches_a_model(ops in proptest::collection::vec(op(200), 1..300)) {
        let regions = 200;
        let mut h = state(regions);
        let mut hydrated = vec![false; regions as usize];
        let mut busy = vec![false; regions as usize];
        let mut batches: Vec<Batch> = vec![];
        let mut overwrites: Vec<u64> = vec![];
        for o in ops {
            match o {
                Op::Read(r) => prop_assert_eq!(h.claim_read(r), hydrated[r as usize]),
                Op::Write(r, whole) => {
                    let c = h.claim_write(r, whole);
                    let want = if hydrated[r as usize] {
                        Claim::Dest
                    } else if busy[r as usize] || !whole {
                        Claim::Wait
                    } else {
                        Claim::Overwrite
                    };
                    prop_assert_eq!(c, want);
                    if c == Claim::Overwrite {
                        busy[r as usize] = true;
                        overwrites.push(r);
                    }
                }
                Op::WriteDone(ok) => {
                    if let Some(r) = overwrites.pop() {
                        h.overwrite_done(r, ok);
                        busy[r as usize] = false;
                        hydrated[r as usize] |= ok;
                    }
                }
                Op::Batch(max) => {
                    if let Some(b) = h.next_batch(max, true) {
                        prop_assert!(b.len >= 1 && b.len <= max);
                        for r in b.start..b.start + b.len {
                            prop_assert!(!busy[r as usize] && !hydrated[r as usize]);
                            busy[r as usize] = true;
                        }
                        batches.push(b);
                    } else {
                        prop_assert!((0..regions as usize).all(|r| busy[r] || hydrated[r]));
                    }
                }
                Op::CopyDone(ok) => {
                    if !batches.is_empty() {
                        let b = batches.remove(0);
                        h.copy_done(b, ok);
                        for r in b.start..b.start + b.len {
                            busy[r as usize] = false;
                            hydrated[r as usize] |= ok;
                        }
                    }
                }
                Op::Mark(s, l) => {
                    h.mark(s, l);
                    for r in s..(s + l).min(regions) {
                        if !busy[r as usize] {
                            hydrated[r as usize] = true;
                        }
                    }
                }
            }
            for r in 0..regions {
                prop_assert_eq!(h.is_hydrated(r), hydrated[r as usize]);
                prop_assert_eq!(h.is_busy(r), busy[r as usize]);
            }
            prop_assert_eq!(h.hydrated_count(), hydrated.iter().filter(|&&x| x).count() as u64);
        }
        for b in batches {
            h.copy_done(b, true);
        }
        for r in overwrites {
            h.overwrite_done(r, true);
        }
        drain(&mut h, 8);
        prop_assert!(h.is_complete());
    }
}
