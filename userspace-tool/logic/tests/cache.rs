// SPDX-License-Identifier: GPL-2.0

//! The prefetch cache: never serves stale data (against a model of the
//! origin with fetches and writes in flight), keeps its budget, honours
//! tiers and limits, evicts what is worth least, and counts consistently.

use foresight_logic::cache::{
    carry_threshold, tier_of, Cache, CacheStats, Carry, Fetch, Finish, Limits, Load, ReadResult,
    Refused, Slot, Switch, SwitchWrite, Tier, WriteGate, WriteToken, BLOCK_BYTES, PENDING, PPM_ONE,
};
use proptest::prelude::*;

type C = Cache<Vec<Slot>>;

const SEC: u64 = 1_000_000_000;

fn cache(n: usize) -> C {
    Cache::new(vec![Slot::default(); n])
}

/// No limits at all.
fn open() -> Limits {
    Limits {
        load_limit: u32::MAX,
        idle_ns: 0,
        max_inflight: u32::MAX,
        bytes_per_sec: 0,
    }
}

fn idle() -> Load {
    Load {
        origin_inflight: 0,
        last_user_io: 0,
    }
}

/// Queues, fetches and installs `block` (crc = block).
fn install(c: &mut C, block: u64, p: u32, now: u64) -> usize {
    c.enqueue(block, p, Tier::Critical, now).unwrap();
    let f = c.next_fetch(now, idle(), &open()).unwrap();
    assert_eq!(f.block, block);
    assert_eq!(
        c.finish_fetch(f, true, block as u32, now),
        Finish::Installed
    );
    f.slot
}

/// A one-block read; a hit's copy is done at once (unpinned).
fn hit(c: &mut C, block: u64, now: u64) -> bool {
    let mut out = [0usize; 1];
    let r = c.read(block, 1, now, &mut out) == ReadResult::Hit;
    if r {
        c.unpin(out[0]);
    }
    r
}

/// The counter identities of [`CacheStats`].
fn check_stats(c: &C, reads: u64) {
    let s: &CacheStats = c.stats();
    assert_eq!(s.hits + s.misses + s.partial_hits, reads);
    let sum = |a: [u64; 3]| a.iter().sum::<u64>();
    assert_eq!(
        sum(s.enqueued),
        sum(s.issued) + s.queued_dropped + c.queued() as u64
    );
    assert_eq!(
        sum(s.issued),
        sum(s.completed) + s.errors + s.stale_dropped + c.fetching() as u64
    );
    assert_eq!(
        sum(s.completed) + s.carried,
        c.cached() as u64 + s.evicted + s.invalidated + s.cleared + s.verify_mismatch
    );
    for t in 0..3 {
        assert!(s.used[t] + s.wasted[t] <= s.completed[t], "{s:?}");
        assert!(
            s.completed[t] <= s.issued[t] && s.issued[t] <= s.enqueued[t],
            "{s:?}"
        );
    }
    assert!(c.cached() + c.queued() + c.fetching() <= c.capacity());
    c.audit().unwrap();
}

#[test]
fn tiers_by_threshold() {
    assert_eq!(
        tier_of(900_000, 800_000, 300_000, 50_000),
        Some(Tier::Critical)
    );
    assert_eq!(
        tier_of(800_000, 800_000, 300_000, 50_000),
        Some(Tier::Critical)
    );
    assert_eq!(
        tier_of(300_000, 800_000, 300_000, 50_000),
        Some(Tier::Predictive)
    );
    assert_eq!(
        tier_of(50_000, 800_000, 300_000, 50_000),
        Some(Tier::Background)
    );
    assert_eq!(tier_of(49_999, 800_000, 300_000, 50_000), None);
    assert_eq!(Tier::ALL.map(Tier::index), [0, 1, 2]);
}

#[test]
fn dedup() {
    let mut c = cache(8);
    c.enqueue(5, 500_000, Tier::Predictive, 0).unwrap();
    assert_eq!(
        c.enqueue(5, 900_000, Tier::Critical, 0),
        Err(Refused::Duplicate)
    );
    let f = c.next_fetch(0, idle(), &open()).unwrap();
    assert_eq!(
        c.enqueue(5, 900_000, Tier::Critical, 0),
        Err(Refused::Duplicate)
    );
    assert_eq!(c.finish_fetch(f, true, 7, 0), Finish::Installed);
    assert_eq!(
        c.enqueue(5, 900_000, Tier::Critical, 0),
        Err(Refused::Duplicate)
    );
    assert_eq!(c.stats().refused_duplicate, 3);
    assert!(c.contains(5) && !c.contains(6));
    // A write drops it; while in flight the block is refused, then welcome.
    let w = c.write_begin(5, 1);
    assert!(!c.contains(5));
    assert_eq!(
        c.enqueue(5, 900_000, Tier::Critical, 0),
        Err(Refused::WriteInFlight)
    );
    c.write_end(w);
    c.enqueue(5, 900_000, Tier::Critical, 0).unwrap();
    check_stats(&c, 0);
}

#[test]
fn hit_partial_miss() {
    let mut c = cache(8);
    let a = install(&mut c, 10, 900_000, 0);
    let b = install(&mut c, 11, 900_000, 0);
    let mut out = [usize::MAX; 4];
    assert_eq!(c.read(10, 2, 1, &mut out), ReadResult::Hit);
    assert_eq!(out[..2], [a, b]);
    assert_eq!(c.slot_crc(a), 10);
    assert_eq!(c.pinned(), 2);
    c.unpin(a);
    c.unpin(b);
    c.unpin(b);
    assert_eq!(c.pinned(), 0);
    assert_eq!(c.read(10, 3, 1, &mut out), ReadResult::Partial(2));
    assert_eq!(c.read(12, 3, 1, &mut out), ReadResult::Miss);
    // Larger than `out`: a miss.
    assert_eq!(c.read(10, 5, 1, &mut out), ReadResult::Miss);
    assert_eq!(c.stats().used[0], 2);
    assert_eq!(c.read(10, 1, 1, &mut out), ReadResult::Hit);
    c.unpin(out[0]);
    assert_eq!(c.stats().used[0], 2, "first use only");
    check_stats(&c, 5);
}

#[test]
fn write_during_fetch_is_stale() {
    let mut c = cache(8);
    c.enqueue(3, 900_000, Tier::Critical, 0).unwrap();
    let f = c.next_fetch(0, idle(), &open()).unwrap();
    let w = c.write_begin(0, 8);
    c.write_end(w);
    assert_eq!(c.finish_fetch(f, true, 1, 0), Finish::Stale);
    assert!(!hit(&mut c, 3, 0));
    // Finishing twice changes nothing.
    assert_eq!(c.finish_fetch(f, true, 1, 0), Finish::Stale);
    assert_eq!(c.stats().stale_dropped, 1);
    // Errors free the slot.
    c.enqueue(3, 900_000, Tier::Critical, 0).unwrap();
    let f = c.next_fetch(0, idle(), &open()).unwrap();
    assert_eq!(c.finish_fetch(f, false, 0, 0), Finish::Failed);
    assert_eq!(c.stats().errors, 1);
    check_stats(&c, 1);
}

#[test]
fn wide_write_stops_everything() {
    let mut c = cache(64);
    install(&mut c, 1, 900_000, 0);
    c.enqueue(1_000_000, 900_000, Tier::Critical, 0).unwrap();
    let w: WriteToken = c.write_begin(0, 100_000);
    assert_eq!(c.stats().wide_writes, 1);
    // O(1) in the I/O path: the cached block is not dropped yet, but a read
    // of the range misses; the sweep drops it.
    assert_eq!(c.cached(), 1);
    assert!(!hit(&mut c, 1, 0));
    assert!(c.needs_sweep());
    assert!(!c.sweep(1_000));
    assert_eq!(c.cached(), 0);
    assert_eq!(
        c.enqueue(5_000_000, 900_000, Tier::Critical, 0),
        Err(Refused::WriteInFlight)
    );
    assert!(c.next_fetch(0, idle(), &open()).is_none());
    c.write_end(w);
    let f = c.next_fetch(0, idle(), &open()).unwrap();
    assert_eq!(f.block, 1_000_000);
    c.enqueue(5_000_000, 900_000, Tier::Critical, 0).unwrap();
    // A wide write in flight at completion: not installed.
    let w = c.write_begin(1 << 40, 100_000);
    assert_eq!(c.finish_fetch(f, true, 0, 0), Finish::Stale);
    c.write_end(w);
    check_stats(&c, 1);
}

#[test]
fn pinned_slots_are_not_refilled() {
    let mut c = cache(2);
    let a = install(&mut c, 0, 900_000, 0);
    install(&mut c, 1, 100_000, 0);
    let mut out = [0usize; 1];
    assert_eq!(c.read(0, 1, SEC, &mut out), ReadResult::Hit);
    assert_eq!(out[0], a);
    // A write drops the pinned block: out of the index, the slot kept.
    let w = c.write_begin(0, 1);
    assert!(!c.contains(0));
    c.write_end(w);
    // Eviction passes it over: only the other slot can go.
    c.enqueue(7, PPM_ONE, Tier::Critical, SEC).unwrap();
    assert!(c.enqueue(8, PPM_ONE, Tier::Critical, SEC).is_err());
    c.audit().unwrap();
    c.unpin(a);
    c.audit().unwrap();
    c.enqueue(8, PPM_ONE, Tier::Critical, SEC).unwrap();
    // A verify failure and a clear while pinned.
    let mut c = cache(4);
    let a = install(&mut c, 3, 900_000, 0);
    assert_eq!(c.read(3, 1, 0, &mut out), ReadResult::Hit);
    assert_eq!(c.read(3, 1, 0, &mut out), ReadResult::Hit);
    c.verify_failed(a);
    c.audit().unwrap();
    c.unpin(a);
    c.audit().unwrap();
    c.unpin(a);
    c.audit().unwrap();
    install(&mut c, 4, 900_000, 0);
    assert_eq!(c.read(4, 1, 0, &mut out), ReadResult::Hit);
    c.clear();
    c.audit().unwrap();
    c.unpin(out[0]);
    c.audit().unwrap();
    assert_eq!(c.cached(), 0);
}

#[test]
fn wide_writes_cost_no_scan_and_overflow_to_everything() {
    let mut c = cache(64);
    for b in 0..20 {
        install(&mut c, b * 100_000, 900_000, 0);
    }
    // More wide writes than ranges remembered: everything is pending.
    let ws: Vec<_> = (0..PENDING as u64 + 2)
        .map(|k| c.write_begin(k * 10_000_000, 1_000_000))
        .collect();
    assert!(!hit(&mut c, 500_000, 0), "nothing hits while pending");
    for w in ws {
        c.write_end(w);
    }
    // Sweeping in steps; the pass ends after a full round.
    let mut steps = 0;
    while c.sweep(7) {
        steps += 1;
        c.audit().unwrap();
    }
    assert_eq!(steps, 64 / 7);
    assert_eq!(c.cached(), 0, "the whole device was pending");
    // One wide write: only its range is dropped.
    for b in 0..20 {
        install(&mut c, b * 100_000, 900_000, 0);
    }
    let w = c.write_begin(0, 1_000_000);
    c.write_end(w);
    assert!(!hit(&mut c, 0, 0));
    assert!(hit(&mut c, 1_000_000, 0), "outside the range");
    while c.sweep(16) {}
    assert_eq!(c.cached(), 10);
    assert!(hit(&mut c, 1_200_000, 0));
    check_stats(
        &c,
        c.stats().hits + c.stats().misses + c.stats().partial_hits,
    );
}

#[test]
fn a_wide_write_stales_fetches_in_flight() {
    let mut c = cache(16);
    c.enqueue(3, PPM_ONE, Tier::Critical, 0).unwrap();
    let f = c.next_fetch(0, idle(), &open()).unwrap();
    // The write begins, ends and is swept before the fetch finishes.
    let w = c.write_begin(0, 10_000);
    c.write_end(w);
    while c.sweep(4) {}
    assert_eq!(c.finish_fetch(f, true, 0, 0), Finish::Stale);
    assert!(!hit(&mut c, 3, 0));
}

#[test]
fn holds_and_bounded_ranges() {
    let mut c = cache(16);
    c.hold();
    assert_eq!(
        c.enqueue(1, PPM_ONE, Tier::Critical, 0),
        Err(Refused::WriteInFlight)
    );
    c.release_hold();
    // At most `budget` blocks of a range are considered.
    assert_eq!(
        c.enqueue_range(0, 1 << 40, PPM_ONE, Tier::Critical, 0, 10),
        (10, 10)
    );
    assert_eq!(
        c.enqueue_range(5, 8, PPM_ONE, Tier::Critical, 0, 10),
        (0, 3)
    );
    c.count_dropped(7);
    assert_eq!(c.stats().predict_dropped, 7);
    // A fetch in flight while held is not installed.
    let f = c.next_fetch(0, idle(), &open()).unwrap();
    c.hold();
    assert_eq!(c.finish_fetch(f, true, 0, 0), Finish::Stale);
    assert!(c.next_fetch(0, idle(), &open()).is_none());
    c.release_hold();
    assert!(c.next_fetch(0, idle(), &open()).is_some());
}

#[test]
fn verify_and_clear() {
    let mut c = cache(8);
    let s = install(&mut c, 4, 900_000, 0);
    assert!(hit(&mut c, 4, 0));
    c.verify_failed(s);
    c.verify_failed(s);
    c.verify_failed(1_000);
    assert_eq!(c.stats().verify_mismatch, 1);
    assert!(!hit(&mut c, 4, 0));
    install(&mut c, 5, 900_000, 0);
    c.enqueue(6, 900_000, Tier::Critical, 0).unwrap();
    let f = c.next_fetch(0, idle(), &open()).unwrap();
    c.enqueue(7, 900_000, Tier::Critical, 0).unwrap();
    c.clear();
    assert_eq!((c.cached(), c.queued(), c.fetching()), (0, 0, 1));
    assert_eq!(c.finish_fetch(f, true, 0, 0), Finish::Stale);
    assert_eq!(c.stats().wasted[0], 1, "5 went unused");
    check_stats(&c, 2);
}

#[test]
fn tiers_and_load() {
    let mut c = cache(16);
    let limits = Limits {
        load_limit: 4,
        idle_ns: 10 * 1_000_000,
        ..open()
    };
    c.enqueue(1, 100_000, Tier::Background, 0).unwrap();
    c.enqueue(2, 400_000, Tier::Predictive, 0).unwrap();
    c.enqueue(3, 900_000, Tier::Critical, 0).unwrap();
    let now = 100 * 1_000_000;
    let busy = Load {
        origin_inflight: 10,
        last_user_io: now,
    };
    assert_eq!(c.next_fetch(now, busy, &limits).unwrap().block, 3);
    assert!(c.next_fetch(now, busy, &limits).is_none());
    let at_limit = Load {
        origin_inflight: 4,
        ..busy
    };
    assert!(c.next_fetch(now, at_limit, &limits).is_none());
    let light = Load {
        origin_inflight: 3,
        ..busy
    };
    assert_eq!(
        c.next_fetch(now, light, &limits).unwrap().tier,
        Tier::Predictive
    );
    assert!(c.next_fetch(now, light, &limits).is_none());
    // Background: nothing in flight and idle for `idle_ns`.
    let quiet = Load {
        origin_inflight: 0,
        last_user_io: now - limits.idle_ns + 1,
    };
    assert!(c.next_fetch(now, quiet, &limits).is_none());
    let quiet = Load {
        last_user_io: now - limits.idle_ns,
        ..quiet
    };
    assert_eq!(c.next_fetch(now, quiet, &limits).unwrap().block, 1);
    // Without a load limit, predictive never goes, even when idle.
    c.enqueue(4, 400_000, Tier::Predictive, now).unwrap();
    let strict = Limits {
        load_limit: 0,
        ..limits
    };
    assert!(c.next_fetch(now, quiet, &strict).is_none());
}

#[test]
fn best_first() {
    let mut c = cache(16);
    c.enqueue(1, 100_000, Tier::Background, 0).unwrap();
    c.enqueue(2, 300_000, Tier::Predictive, 0).unwrap();
    c.enqueue(3, 600_000, Tier::Predictive, 0).unwrap();
    c.enqueue(4, 310_000, Tier::Predictive, 0).unwrap();
    c.enqueue(5, 900_000, Tier::Critical, 0).unwrap();
    let order: Vec<u64> = std::iter::from_fn(|| c.next_fetch(0, idle(), &open()))
        .map(|f| f.block)
        .collect();
    assert_eq!(order, [5, 3, 2, 4, 1]);
}

#[test]
fn max_inflight() {
    let mut c = cache(16);
    for b in 0..8 {
        c.enqueue(b, 900_000, Tier::Critical, 0).unwrap();
    }
    let limits = Limits {
        max_inflight: 3,
        ..open()
    };
    let f: Vec<Fetch> = (0..3)
        .map(|_| c.next_fetch(0, idle(), &limits).unwrap())
        .collect();
    assert!(c.next_fetch(0, idle(), &limits).is_none());
    c.finish_fetch(f[1], true, 0, 0);
    assert!(c.next_fetch(0, idle(), &limits).is_some());
    assert!(c.next_fetch(0, idle(), &limits).is_none());
    // A stale fetch still counts until it completes.
    let _w = c.write_begin(f[0].block, 1);
    assert!(c.next_fetch(0, idle(), &limits).is_none());
}

#[test]
fn bandwidth() {
    for (bps, secs) in [(1u64 << 20, 10u64), (10 << 20, 3), (4096, 20), (1000, 20)] {
        let mut c = cache(16_384);
        for b in 0..16_384 {
            c.enqueue(b, 900_000, Tier::Critical, 0).unwrap();
        }
        let limits = Limits {
            bytes_per_sec: bps,
            ..open()
        };
        let per_sec = bps / BLOCK_BYTES;
        let burst = per_sec.max(1);
        let start = 5 * SEC;
        let mut n = 0u64;
        let mut t = start;
        while t <= start + secs * SEC {
            while let Some(f) = c.next_fetch(t, idle(), &limits) {
                c.finish_fetch(f, true, 0, t);
                n += 1;
            }
            // Never ahead of burst + rate * elapsed (whole blocks).
            let allowed = burst + (t - start) * bps / (BLOCK_BYTES * SEC);
            assert!(n <= allowed, "{bps} B/s at {t}: {n} > {allowed}");
            t += SEC / 1000;
        }
        let expect = burst + secs * bps / BLOCK_BYTES;
        assert!(
            n + 1 >= expect && n <= expect,
            "{bps} B/s: {n} fetches, expected {expect}"
        );
    }
}

#[test]
fn eviction_prefers_old_unused_unlikely() {
    let mut c = cache(4);
    // Four blocks installed at 0; 0 and 3 read at 1 s; 1 unlikely, 2 likely.
    install(&mut c, 0, 900_000, 0);
    install(&mut c, 1, 100_000, 0);
    install(&mut c, 2, 800_000, 0);
    install(&mut c, 3, 200_000, 0);
    assert!(hit(&mut c, 0, SEC));
    assert!(hit(&mut c, 3, SEC));
    c.enqueue(10, 500_000, Tier::Predictive, SEC).unwrap();
    assert!(!c.contains(1), "the old unlikely unused block goes first");
    assert!(c.contains(0) && c.contains(2) && c.contains(3));
    assert_eq!((c.stats().evicted, c.stats().wasted[0]), (1, 1));
    check_stats(&c, 2);

    // Used blocks go by recency (LRU).
    let mut c = cache(3);
    for b in 0..3 {
        install(&mut c, b, 900_000, 0);
        assert!(hit(&mut c, b, (b + 1) * SEC));
    }
    c.enqueue(3, 900_000, Tier::Critical, 3 * SEC).unwrap();
    assert!(!c.contains(0) && c.contains(1) && c.contains(2));
    assert!(hit(&mut c, 1, 4 * SEC));
    c.enqueue(4, 900_000, Tier::Critical, 4 * SEC).unwrap();
    assert!(!c.contains(2) && c.contains(1) && c.contains(3));
    assert_eq!(c.stats().wasted, [0; 3], "used blocks are not wasted");
    assert_eq!(c.stats().evicted, 2);
    check_stats(&c, 4);

    // A queued prediction ranks below a valid block of the same value.
    let mut c = cache(2);
    install(&mut c, 0, 600_000, 0);
    c.enqueue(1, 600_000, Tier::Predictive, 0).unwrap();
    c.enqueue(2, 700_000, Tier::Predictive, 0).unwrap();
    assert!(c.contains(0) && !c.contains(1) && c.contains(2));
    assert_eq!(c.stats().queued_dropped, 1);
    check_stats(&c, 0);
}

#[test]
fn outranked_and_no_room() {
    let mut c = cache(2);
    install(&mut c, 0, 900_000, 0);
    install(&mut c, 1, 900_000, 0);
    // Worth less than anything held: refused, nothing evicted.
    assert_eq!(
        c.enqueue(5, 300_000, Tier::Predictive, 0),
        Err(Refused::Outranked)
    );
    assert_eq!(c.cached(), 2);
    // Fetching slots are never evicted.
    let mut c = cache(2);
    for b in 0..2 {
        c.enqueue(b, 100_000, Tier::Critical, 0).unwrap();
        c.next_fetch(0, idle(), &open()).unwrap();
    }
    assert_eq!(
        c.enqueue(9, PPM_ONE, Tier::Critical, 0),
        Err(Refused::NoRoom)
    );
    assert_eq!(
        cache(0).enqueue(9, PPM_ONE, Tier::Critical, 0),
        Err(Refused::NoRoom)
    );
}

#[test]
fn sampled_eviction_scales() {
    // Large cache, constant churn: never refuses for lack of room while
    // predictions keep their value, and the index stays sound.
    let mut c = cache(1000);
    let mut t = 0;
    for b in 0..20_000u64 {
        t += SEC / 100;
        c.enqueue(b * 7919, 600_000, Tier::Critical, t).unwrap();
        if let Some(f) = c.next_fetch(t, idle(), &open()) {
            c.finish_fetch(f, true, 0, t);
        }
        if b % 3 == 0 {
            hit(&mut c, (b - b % 10) * 7919, t);
        }
    }
    c.audit().unwrap();
    assert_eq!(c.cached(), 1000);
}

// --- The model -------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Enqueue {
        block: u64,
        p: u32,
        tier: u8,
    },
    Fetch {
        busy: u32,
        dt: u64,
    },
    /// The origin reads a fetch's data now.
    Serve(usize),
    Finish {
        i: usize,
        ok: bool,
    },
    /// A write is mapped on a CPU (enters the gate).
    WriteBegin {
        first: u64,
        count: u32,
        cpu: u32,
    },
    /// A write larger than the eager bound (to the device's end).
    WideBegin {
        first: u64,
        cpu: u32,
    },
    /// A write that saw the cache on takes the lock and registers.
    Register(usize),
    /// A write's data lands at the origin now.
    Land(usize),
    WriteEnd(usize),
    Read {
        first: u64,
        count: u32,
    },
    /// A hit's copy is done.
    Unpin(usize),
    VerifyFail,
    Clear,
    Sweep(usize),
    /// A run-time resize: 0 disables the cache.
    Resize(usize),
    /// A resize that carries the old cache's blocks over: they are
    /// copied now; writes and the rest go on in the old cache until
    /// [`Op::CarryCommit`] checks them and switches.
    CarryBegin(usize),
    CarryCommit,
    Tick(u64),
}

enum WState {
    /// Counted in the gate's shard; saw the cache off (or found none).
    Gate(u8),
    /// Counted in the gate, saw the cache on, not registered yet: not sent
    /// to the origin yet either.
    Entered(u8),
    Registered(SwitchWrite),
}

struct Write {
    state: WState,
    first: u64,
    end: u64,
    landed: bool,
}

struct Hit {
    generation: u32,
    slots: Vec<(usize, u32)>,
}

const BIG: u32 = 1_000;

/// A cache switch on blocks `base .. base + blocks`, starting with `cap`
/// slots, driven by `ops` against a model origin: fetches, writes (through
/// the gate), hits (pinned until their copy ends), sweeps and resizes
/// interleave arbitrarily.  Returns the counters of every cache.
fn run_model(cap: usize, base: u64, blocks: u64, ops: &[Op]) -> CacheStats {
    let gate = WriteGate::new();
    let mut sw: Switch<Vec<Slot>> = Switch::new();
    let new_cache = |cap: usize| {
        (cap > 0).then(|| {
            let mut c = cache(cap);
            c.set_half_life(SEC);
            c
        })
    };
    let _ = sw.replace(new_cache(cap));
    gate.set_enabled(sw.cache().is_some());
    sw.settle(&gate);
    let mut origin: Vec<u32> = (0..blocks as u32).collect();
    let mut version = blocks as u32;
    let mut fetches: Vec<(Fetch, u32, Option<u32>)> = Vec::new();
    let mut writes: Vec<Write> = Vec::new();
    let mut hits: Vec<Hit> = Vec::new();
    // A carrying resize under way: the new cache, what it carries, and the
    // old cache's changes when they were last checked.
    let mut carrying: Option<(C, Vec<Carry>, u64)> = None;
    let mut now = 0u64;
    let mut reads = 0;
    let mut last_hit: Option<usize> = None;
    let limits = Limits {
        load_limit: 2,
        idle_ns: 1_000,
        max_inflight: 6,
        bytes_per_sec: 0,
    };
    // Writes sent (or about to be sent) to the origin: an entered write is
    // sent only once registered, which drops its blocks from the cache.
    let writing = |writes: &[Write], b: u64| {
        writes
            .iter()
            .any(|w| b >= w.first && b < w.end && !matches!(w.state, WState::Entered(_)))
    };
    let land = |origin: &mut Vec<u32>, version: &mut u32, w: &Write| {
        for b in w.first..w.end.min(base + blocks) {
            *version += 1;
            origin[(b - base) as usize] = *version;
        }
    };
    for op in ops {
        let g = sw.generation();
        match *op {
            Op::Enqueue { block, p, tier } => {
                let tier = Tier::ALL[usize::from(tier) % 3];
                let b = base + block % blocks;
                if let Some(c) = sw.cache_mut() {
                    let r = c.enqueue(b, p, tier, now);
                    if writing(&writes, b) {
                        assert_eq!(r, Err(Refused::WriteInFlight));
                    }
                }
            }
            Op::Fetch { busy, dt } => {
                let load = Load {
                    origin_inflight: busy,
                    last_user_io: now.saturating_sub(dt),
                };
                let Some(c) = sw.cache_mut() else { continue };
                if let Some(f) = c.next_fetch(now, load, &limits) {
                    assert!(
                        !fetches
                            .iter()
                            .any(|(h, hg, _)| *hg == g && h.slot == f.slot),
                        "slot reused"
                    );
                    assert!(
                        !hits
                            .iter()
                            .any(|h| h.generation == g && h.slots.iter().any(|s| s.0 == f.slot)),
                        "a pinned slot refilled"
                    );
                    assert!(!writing(&writes, f.block), "fetch during a write");
                    assert!(f.tier == Tier::Critical || busy < limits.load_limit);
                    assert!(f.tier != Tier::Background || (busy == 0 && dt >= limits.idle_ns));
                    fetches.push((f, g, None));
                }
                assert!(c.fetching() <= limits.max_inflight as usize);
            }
            Op::Serve(i) => {
                if !fetches.is_empty() {
                    let n = fetches.len();
                    let (f, _, served) = &mut fetches[i % n];
                    served.get_or_insert(origin[(f.block - base) as usize]);
                }
            }
            Op::Finish { i, ok } => {
                if !fetches.is_empty() {
                    let n = fetches.len();
                    let (f, fg, served) = fetches.remove(i % n);
                    let data = served.unwrap_or(origin[(f.block - base) as usize]);
                    // The kernel drops a fetch of an older cache unseen.
                    if fg != g {
                        continue;
                    }
                    let c = sw.cache_mut().unwrap();
                    let r = c.finish_fetch(f, ok, data, now);
                    assert_eq!(r == Finish::Failed, !ok);
                    if r == Finish::Installed {
                        assert!(!writing(&writes, f.block), "installed during a write");
                    }
                }
            }
            Op::WriteBegin { first, .. } | Op::WideBegin { first, .. } => {
                let first = base + first % blocks;
                let (count, cpu) = match *op {
                    Op::WriteBegin { count, cpu, .. } => {
                        (count.min((base + blocks - first) as u32), cpu)
                    }
                    Op::WideBegin { cpu, .. } => (BIG, cpu),
                    _ => unreachable!(),
                };
                let (shard, on) = gate.enter(cpu);
                writes.push(Write {
                    state: if on {
                        WState::Entered(shard)
                    } else {
                        WState::Gate(shard)
                    },
                    first,
                    end: first.saturating_add(u64::from(count)),
                    landed: false,
                });
            }
            Op::Register(i) => {
                let Some(w) = writes
                    .iter_mut()
                    .filter(|w| matches!(w.state, WState::Entered(_)))
                    .nth(i % 4)
                else {
                    continue;
                };
                let WState::Entered(shard) = w.state else {
                    unreachable!()
                };
                let count = (w.end - w.first) as u32;
                match sw.write_begin(w.first, count) {
                    Some(t) => {
                        w.state = WState::Registered(t);
                        gate.leave(shard);
                        sw.settle(&gate);
                    }
                    None => w.state = WState::Gate(shard),
                }
            }
            Op::Land(i) => {
                if !writes.is_empty() {
                    let n = writes.len();
                    let w = &mut writes[i % n];
                    if !w.landed && !matches!(w.state, WState::Entered(_)) {
                        w.landed = true;
                        land(&mut origin, &mut version, w);
                    }
                }
            }
            Op::WriteEnd(i) => {
                let n = writes.len();
                if n == 0 || matches!(writes[i % n].state, WState::Entered(_)) {
                    continue;
                }
                let w = writes.remove(i % n);
                if !w.landed {
                    land(&mut origin, &mut version, &w);
                }
                match w.state {
                    WState::Gate(shard) => {
                        if gate.leave(shard) {
                            sw.settle(&gate);
                        }
                    }
                    WState::Registered(t) => {
                        sw.write_end(t);
                        sw.settle(&gate);
                    }
                    WState::Entered(_) => unreachable!(),
                }
            }
            Op::Read { first, count } => {
                let first = base + first % blocks;
                let count = count.min((base + blocks - first) as u32);
                let mut out = [usize::MAX; 8];
                if !gate.enabled() {
                    continue;
                }
                let c = sw.cache_mut().unwrap();
                reads += 1;
                if c.read(first, count, now, &mut out) == ReadResult::Hit {
                    let mut slots = Vec::new();
                    for (k, &slot) in out.iter().take(count as usize).enumerate() {
                        let b = first + k as u64;
                        assert!(
                            !fetches.iter().any(|(f, fg, _)| *fg == g && f.slot == slot),
                            "hit on a fetching slot"
                        );
                        // The requirement: current data when no write to the
                        // block is in flight; and in fact no hit at all then.
                        if !writing(&writes, b) {
                            assert_eq!(
                                c.slot_crc(slot),
                                origin[(b - base) as usize],
                                "stale hit on block {b}"
                            );
                        }
                        assert!(!writing(&writes, b), "hit during a write to {b}");
                        slots.push((slot, c.slot_crc(slot)));
                        last_hit = Some(slot);
                    }
                    hits.push(Hit {
                        generation: g,
                        slots,
                    });
                }
            }
            Op::Unpin(i) => {
                if !hits.is_empty() {
                    let n = hits.len();
                    let h = hits.remove(i % n);
                    if h.generation != g {
                        continue;
                    }
                    let c = sw.cache_mut().unwrap();
                    for (slot, crc) in h.slots {
                        // The copy read the data the hit found.
                        assert_eq!(c.slot_crc(slot), crc, "pinned data changed");
                        c.unpin(slot);
                    }
                }
            }
            Op::VerifyFail => {
                if let (Some(s), Some(c)) = (last_hit.take(), sw.cache_mut()) {
                    c.verify_failed(s);
                }
            }
            Op::Clear => {
                if let Some(c) = sw.cache_mut() {
                    c.clear();
                }
            }
            Op::Sweep(budget) => {
                if let Some(c) = sw.cache_mut() {
                    c.sweep(budget);
                }
            }
            Op::Resize(cap) => {
                carrying = None;
                let _old = sw.replace(new_cache(cap));
                gate.set_enabled(sw.cache().is_some());
                sw.settle(&gate);
                reads = 0;
                hits.retain(|h| h.generation == sw.generation());
            }
            Op::CarryBegin(cap) => {
                let Some(old) = sw.cache_mut() else { continue };
                if carrying.is_some() {
                    continue;
                }
                let mut new = cache(cap);
                new.set_half_life(SEC);
                let mut all = Vec::new();
                let mut at = 0;
                while at < old.capacity() {
                    at = old.carry_scan(at, 7, now, |c| all.push(c));
                }
                // The most valuable that fit, as the kernel picks them.
                let t = carry_threshold(&all, cap);
                let best: Vec<Carry> = all.iter().copied().filter(|c| c.keep >= t).collect();
                assert!(best.len() <= cap);
                if all.len() <= cap {
                    assert_eq!(best.len(), all.len());
                } else if let Some(least) = best.iter().map(|c| c.keep).min() {
                    assert!(all.iter().filter(|c| c.keep > least).count() <= cap);
                }
                let changes = old.changes();
                let mut carried = Vec::new();
                for c in best {
                    if old.carry_pin(&c) {
                        // The copy: the data is the old slot's.
                        assert_eq!(old.slot_crc(c.slot), origin[(c.block - base) as usize]);
                        if new.carry_in(&c, now).is_some() {
                            carried.push(c);
                        }
                        old.unpin(c.slot);
                    }
                }
                new.audit().unwrap();
                carrying = Some((new, carried, changes));
            }
            Op::CarryCommit => {
                let Some((mut new, carried, changes)) = carrying.take() else {
                    continue;
                };
                let Some(old) = sw.cache() else { continue };
                if old.changes() != changes {
                    // The check again, then the switch with nothing
                    // changing meanwhile (the kernel holds the lock).
                    for c in &carried {
                        if !old.carry_current(c) {
                            new.carry_out(c.block);
                        }
                    }
                }
                new.audit().unwrap();
                let _old = sw.replace(Some(new));
                gate.set_enabled(sw.cache().is_some());
                sw.settle(&gate);
                reads = 0;
                hits.retain(|h| h.generation == sw.generation());
            }
            Op::Tick(dt) => now += dt,
        }
        let g = sw.generation();
        if let Some(c) = sw.cache() {
            check_stats(c, reads);
            assert_eq!(c.fetching(), fetches.iter().filter(|f| f.1 == g).count());
            let pins: usize = hits.iter().map(|h| h.slots.len()).sum();
            assert!(c.pinned() <= pins);
        }
    }
    // Drain everything: the counters still add up.
    let g = sw.generation();
    for (f, fg, served) in fetches.drain(..) {
        let data = served.unwrap_or(origin[(f.block - base) as usize]);
        if let (true, Some(c)) = (fg == g, sw.cache_mut()) {
            c.finish_fetch(f, true, data, now);
        }
    }
    for h in hits.drain(..) {
        if let (true, Some(c)) = (h.generation == g, sw.cache_mut()) {
            h.slots.iter().for_each(|s| c.unpin(s.0));
        }
    }
    for w in writes.drain(..) {
        match w.state {
            WState::Gate(shard) | WState::Entered(shard) => {
                gate.leave(shard);
            }
            WState::Registered(t) => sw.write_end(t),
        }
        sw.settle(&gate);
    }
    assert!(!sw.held(), "the hold ends with the last older write");
    if let Some(c) = sw.cache_mut() {
        while c.sweep(64) {}
        c.audit().unwrap();
        check_stats(c, reads);
        assert_eq!(c.pinned(), 0);
    }
    sw.stats()
}

fn op(blocks: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..blocks, 0..=PPM_ONE, 0..3u8).prop_map(|(block, p, tier)| Op::Enqueue { block, p, tier }),
        5 => (0..4u32, 0..3_000u64).prop_map(|(busy, dt)| Op::Fetch { busy, dt }),
        2 => any::<usize>().prop_map(Op::Serve),
        4 => (any::<usize>(), prop::bool::weighted(0.9)).prop_map(|(i, ok)| Op::Finish { i, ok }),
        1 => (0..blocks, 1..6u32, 0..4u32).prop_map(|(first, count, cpu)| Op::WriteBegin { first, count, cpu }),
        1 => any::<usize>().prop_map(Op::Register),
        1 => any::<usize>().prop_map(Op::Land),
        3 => any::<usize>().prop_map(Op::WriteEnd),
        5 => (0..blocks, 1..5u32).prop_map(|(first, count)| Op::Read { first, count }),
        3 => any::<usize>().prop_map(Op::Unpin),
        1 => Just(Op::VerifyFail),
        1 => prop::bool::weighted(0.05).prop_map(|c| if c { Op::Clear } else { Op::Tick(1) }),
        1 => (0..blocks, 0..4u32).prop_map(|(first, cpu)| Op::WideBegin { first, cpu }),
        1 => (1..40usize).prop_map(Op::Sweep),
        1 => prop_oneof![Just(0usize), 8usize..64].prop_map(Op::Resize),
        1 => (1usize..64).prop_map(Op::CarryBegin),
        1 => Just(Op::CarryCommit),
        2 => (0..SEC / 2).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_stale(
        cap in prop_oneof![Just(0usize), 8usize..64],
        base in prop::sample::select(vec![0u64, 1 << 40, u64::MAX - 1_000]),
        blocks in 16u64..96,
        ops in prop::collection::vec(op(96), 1..400),
    ) {
        run_model(cap, base, blocks, &ops);
    }
}

/// The two reproductions of stale reads after a run-time change, as op
/// sequences: a write in flight while the cache is enabled, or resized
/// twice, and a prediction for its block fetched meanwhile.
#[test]
fn enable_and_double_resize_with_a_write_in_flight() {
    let fetch = Op::Fetch { busy: 0, dt: 0 };
    let predict = Op::Enqueue {
        block: 5,
        p: PPM_ONE,
        tier: 0,
    };
    let read = Op::Read { first: 5, count: 1 };
    let write = Op::WriteBegin {
        first: 5,
        count: 1,
        cpu: 1,
    };
    // Off, write in flight, enabled, predicted, fetched (old data), write
    // lands and ends, fetch installs, read.
    let enable = [
        write.clone(),
        Op::Resize(16),
        predict.clone(),
        fetch.clone(),
        Op::Serve(0),
        Op::WriteEnd(0),
        Op::Finish { i: 0, ok: true },
        read.clone(),
    ];
    let s = run_model(0, 0, 32, &enable);
    assert_eq!(s.refused_write, 1, "{s:?}");
    // On, write registered, resized twice, predicted, fetched, ...
    let twice = [
        write,
        Op::Register(0),
        Op::Resize(16),
        Op::Resize(24),
        predict,
        fetch,
        Op::Serve(0),
        Op::WriteEnd(0),
        Op::Finish { i: 0, ok: true },
        read,
    ];
    let s = run_model(8, 0, 32, &twice);
    assert_eq!(s.refused_write, 1, "{s:?}");
}

/// A tiny deterministic generator, for the coverage run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A carried block evicted from the old cache, then written there while
/// not cached (nothing to knock out): the switch must not bring the old
/// data back (an eviction counts as a change).
#[test]
fn a_carried_block_evicted_then_written() {
    let fetch = Op::Fetch { busy: 0, dt: 0 };
    let finish = Op::Finish { i: 0, ok: true };
    let predict = |block| Op::Enqueue {
        block,
        p: PPM_ONE / 2,
        tier: 0,
    };
    let mut ops = Vec::new();
    // Block 0 cached (p 0.5), in a cache of 8 full of it and seven others.
    for b in 0..8 {
        ops.extend([predict(b), fetch.clone(), finish.clone()]);
    }
    ops.push(Op::CarryBegin(8));
    // Time passes: a better prediction evicts the oldest (block 0 first,
    // all equal), then block 0 is written while not cached.
    ops.push(Op::Tick(SEC));
    for b in 8..16 {
        ops.push(Op::Enqueue {
            block: b,
            p: PPM_ONE,
            tier: 0,
        });
    }
    ops.extend([
        Op::WriteBegin {
            first: 0,
            count: 8,
            cpu: 0,
        },
        Op::Register(0),
        Op::Land(0),
        Op::WriteEnd(0),
        Op::CarryCommit,
    ]);
    for b in 0..8 {
        ops.push(Op::Read { first: b, count: 1 });
    }
    run_model(8, 0, 32, &ops);
}

/// The model run long enough to exercise every path: hits, stale drops,
/// invalidations, evictions, errors.
#[test]
fn model_covers_every_path() {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let blocks = 48;
    let ops: Vec<Op> = (0..200_000)
        .map(|_| match r.next(46) {
            0..=9 => Op::Enqueue {
                block: r.next(blocks),
                p: r.next(u64::from(PPM_ONE) + 1) as u32,
                tier: r.next(3) as u8,
            },
            10..=16 => Op::Fetch {
                busy: r.next(4) as u32,
                dt: r.next(3_000),
            },
            17..=18 => Op::Serve(r.next(64) as usize),
            19..=23 => Op::Finish {
                i: r.next(64) as usize,
                ok: r.next(10) != 0,
            },
            24 => Op::WriteBegin {
                first: r.next(blocks),
                count: 1 + r.next(4) as u32,
                cpu: r.next(4) as u32,
            },
            25 => Op::Land(r.next(64) as usize),
            26..=28 => Op::WriteEnd(r.next(64) as usize),
            29..=34 => Op::Read {
                first: r.next(blocks),
                count: 1 + r.next(3) as u32,
            },
            35 => Op::VerifyFail,
            36 if r.next(50) == 0 => Op::Clear,
            37..=39 => Op::Register(r.next(4) as usize),
            40..=41 => Op::Unpin(r.next(8) as usize),
            42 if r.next(40) == 0 => Op::WideBegin {
                first: r.next(blocks),
                cpu: r.next(4) as u32,
            },
            43 => Op::Sweep(1 + r.next(30) as usize),
            44 if r.next(400) == 0 => Op::Resize([0, 16, 24, 32][r.next(4) as usize]),
            45 if r.next(60) == 0 => Op::CarryBegin([8, 16, 24, 32][r.next(4) as usize]),
            45 if r.next(20) == 0 => Op::CarryCommit,
            _ => Op::Tick(r.next(SEC / 4)),
        })
        .collect();
    let s = run_model(24, 1 << 40, blocks, &ops);
    assert!(s.hits > 1_000 && s.partial_hits > 1_000, "{s:?}");
    assert!(s.stale_dropped > 100 && s.invalidated > 1_000, "{s:?}");
    assert!(s.evicted > 1_000 && s.queued_dropped > 1_000, "{s:?}");
    assert!(
        s.errors > 100 && s.verify_mismatch > 100 && s.cleared > 100,
        "{s:?}"
    );
    assert!(s.refused_write > 1_000 && s.refused_room > 100, "{s:?}");
    assert!(s.wide_writes > 50, "{s:?}");
    assert!(s.carried > 100, "{s:?}");
    assert!(
        s.wasted.iter().all(|&w| w > 0) && s.used.iter().all(|&u| u > 0),
        "{s:?}"
    );
}
