// SPDX-License-Identifier: GPL-2.0

//! The dirty log's write buffer: lock-free appends from many writers, no
//! entry lost or handed over twice, and a tag change followed by a waiting
//! drain hands over every entry tagged with the old value.

use foresight_logic::ring::{Drain, Extent, WriteRing};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

mod common;
use common::ring_slots;

fn ext(start: u64, len: u64) -> Extent {
    Extent { start, len }
}

fn drained(r: &WriteRing<Vec<foresight_logic::ring::RingSlot>>, how: Drain) -> Vec<(Extent, bool)> {
    let mut v = vec![];
    r.drain(how, thread::yield_now, |e, t| v.push((e, t)));
    v
}

#[test]
fn appends_in_order_until_full() {
    let r = WriteRing::new(ring_slots(4));
    assert_eq!(r.push(ext(0, 8), || false), Some(1));
    assert_eq!(r.push(ext(8, 8), || true), Some(2));
    // Nothing to record: not an entry.
    assert_eq!(r.push(ext(9, 0), || unreachable!()), Some(2));
    assert_eq!(r.push(ext(100, 1), || true), Some(3));
    assert_eq!(r.push(ext(200, 1), || false), Some(4));
    // Full: the tag is not asked for, the caller records it elsewhere.
    assert_eq!(r.push(ext(1000, 1), || unreachable!()), None);
    assert_eq!(
        drained(&r, Drain::Ready),
        vec![(ext(0, 8), false), (ext(8, 8), true), (ext(100, 1), true), (ext(200, 1), false)]
    );
    assert!(r.is_empty());
    // The slots are free again, round and round.
    for round in 0..10u64 {
        for i in 0..4 {
            assert!(r.push(ext(round * 10 + i, 1), || i % 2 == 0).is_some());
        }
        assert_eq!(drained(&r, Drain::Ready).len(), 4);
    }
}

#[test]
fn huge_extents_are_cut_not_mistagged() {
    let r = WriteRing::new(ring_slots(2));
    r.push(ext(5, u64::MAX), || false);
    let v = drained(&r, Drain::Ready);
    assert_eq!(v.len(), 1);
    assert!(!v[0].1);
    assert!(v[0].0.len >= 1 << 62);
}

type Ring = WriteRing<Vec<foresight_logic::ring::RingSlot>>;

/// Pushes `e` on another thread that stops inside its tag function (after
/// reserving its slot, before publishing it) until `go`; returns once it
/// has stopped there.
fn slow_push(
    r: &Arc<Ring>,
    e: Extent,
    tag: bool,
    parked: &Arc<Barrier>,
    go: &Arc<Barrier>,
) -> thread::JoinHandle<Option<usize>> {
    let (r, go, parked2) = (r.clone(), go.clone(), parked.clone());
    let h = thread::spawn(move || {
        r.push(e, || {
            parked2.wait();
            go.wait();
            tag
        })
    });
    parked.wait();
    h
}

/// A writer stopped between its reservation and its publication (here,
/// inside its tag function): a `Ready` drain takes everything published
/// after it, and the tail waits for it; a `Wait` drain waits for it.
#[test]
fn a_slow_writer_holds_the_tail_not_the_others() {
    let r = Arc::new(WriteRing::new(ring_slots(4)));
    let (go, parked) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let slow = slow_push(&r, ext(1, 1), true, &parked, &go);
    assert!(r.push(ext(2, 1), || false).is_some());
    assert!(r.push(ext(3, 1), || false).is_some());
    assert_eq!(drained(&r, Drain::Ready), vec![(ext(2, 1), false), (ext(3, 1), false)]);
    // Three slots still count as held: the slow one, and the two taken
    // past it (free once the tail passes them).
    assert_eq!(r.len(), 3);
    assert!(r.push(ext(4, 1), || false).is_some());
    assert_eq!(r.push(ext(5, 1), || false), None);
    go.wait();
    slow.join().unwrap();
    assert_eq!(drained(&r, Drain::Ready), vec![(ext(1, 1), true), (ext(4, 1), false)]);
    assert!(r.is_empty());

    // The same writer, with a waiting drain on another thread.
    let done = Arc::new(AtomicBool::new(false));
    let slow = slow_push(&r, ext(7, 1), false, &parked, &go);
    let drainer = {
        let (r, done) = (r.clone(), done.clone());
        thread::spawn(move || {
            let v = drained(&r, Drain::Wait);
            done.store(true, SeqCst);
            v
        })
    };
    thread::sleep(std::time::Duration::from_millis(50));
    assert!(!done.load(SeqCst), "the waiting drain did not wait");
    go.wait();
    slow.join().unwrap();
    assert_eq!(drainer.join().unwrap(), vec![(ext(7, 1), false)]);
}

/// Writers on several threads append numbered extents tagged with the
/// current epoch's parity (read after their reservation, as the kernel
/// does); a rotator starts a new epoch and drains with `Wait`, as `rotate`
/// does, while another thread drains `Ready` now and then, as the folder
/// does.  Every extent is handed over exactly once, and every extent
/// tagged in epoch k has been handed over when the drain of rotation k
/// returns.
#[test]
fn rotations_hand_over_every_old_entry() {
    const WRITERS: u64 = 3;
    const PER: u64 = 20_000;
    const PACE: u64 = 500;
    let r = Arc::new(WriteRing::new(ring_slots(64)));
    let epoch = Arc::new(AtomicUsize::new(0));
    // How often each extent was handed over.
    let seen = Arc::new(Mutex::new(vec![0u8; (WRITERS * PER) as usize]));
    let stop = Arc::new(AtomicBool::new(false));
    let full = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (r, epoch, full) = (r.clone(), epoch.clone(), full.clone());
            thread::spawn(move || {
                let mut tagged = vec![];
                for i in 0..PER {
                    // Paced by the rotator, whatever the machine's speed:
                    // at least PER / PACE rotations happen while writing.
                    while (epoch.load(SeqCst) as u64) < i / PACE {
                        thread::yield_now();
                    }
                    let n = w * PER + i;
                    let mut k = 0;
                    while r
                        .push(ext(n, 1), || {
                            k = epoch.load(SeqCst);
                            k % 2 == 1
                        })
                        .is_none()
                    {
                        full.fetch_add(1, SeqCst);
                        thread::yield_now();
                    }
                    tagged.push((n, k));
                }
                tagged
            })
        })
        .collect();
    // The folder and the rotator hand over under one lock, as the kernel's
    // fold and rotate run under the log's mutex.
    let folder = {
        let (r, seen, stop) = (r.clone(), seen.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(SeqCst) {
                let mut s = seen.lock().unwrap();
                r.drain(Drain::Ready, thread::yield_now, |e, _| s[e.start as usize] += 1);
                drop(s);
                thread::yield_now();
            }
        })
    };
    // handed_by[k]: what had been handed over when rotation k's drain
    // (the one ending epoch k) returned.
    let mut handed_by = vec![];
    while writers.iter().any(|w| !w.is_finished()) {
        let mut s = seen.lock().unwrap();
        let k = epoch.load(SeqCst);
        epoch.store(k + 1, SeqCst);
        r.drain(Drain::Wait, thread::yield_now, |e, _| s[e.start as usize] += 1);
        handed_by.push(s.iter().map(|&c| c > 0).collect::<Vec<_>>());
        drop(s);
        thread::sleep(std::time::Duration::from_micros(200));
    }
    let tagged: Vec<(u64, usize)> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    stop.store(true, SeqCst);
    folder.join().unwrap();
    let mut seen = seen.lock().unwrap();
    r.drain(Drain::Wait, thread::yield_now, |e, _| seen[e.start as usize] += 1);
    assert!(seen.iter().all(|&c| c == 1), "an extent lost or handed over twice");
    let rotations = handed_by.len();
    assert!(rotations as u64 >= (PER - 1) / PACE, "only {rotations} rotations");
    let mut checked = 0;
    for &(n, k) in &tagged {
        if let Some(h) = handed_by.get(k) {
            assert!(h[n as usize], "extent {n} tagged in epoch {k} missing after rotation {k}");
            checked += 1;
        }
    }
    assert!(checked > 0);
    eprintln!(
        "{rotations} rotations, {checked} extents checked against theirs, {} pushes found the buffer full",
        full.load(SeqCst)
    );
}

#[test]
fn folding_coalesces_sequential_runs_only() {
    use foresight_logic::ring::coalesce;
    let mut v = vec![
        (ext(0, 1), 0),
        (ext(1, 1), 0),
        (ext(2, 2), 0),
        (ext(3, 1), 0), // inside the run
        (ext(4, 1), 1), // other epoch
        (ext(5, 1), 1),
        (ext(10, 1), 1), // a gap
        (ext(2, 1), 1),  // backwards: its own entry
        (ext(u64::MAX - 1, 5), 1),
        (ext(u64::MAX, 1), 1),
    ];
    let n = coalesce(&mut v);
    assert_eq!(
        &v[..n],
        &[
            (ext(0, 4), 0),
            (ext(4, 2), 1),
            (ext(10, 1), 1),
            (ext(2, 1), 1),
            (ext(u64::MAX - 1, 5), 1),
        ]
    );
}
