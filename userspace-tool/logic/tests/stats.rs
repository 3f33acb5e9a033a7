// SPDX-License-Identifier: GPL-2.0

//! The per-CPU-sharded I/O counters.

use foresight_logic::stats::{IoKind, IoStats, IoTotals};
use std::{sync::Arc, thread};

#[test]
fn each_kind_lands_in_its_counters() {
    let s = IoStats::new();
    s.record(0, IoKind::Read, 8, true);
    s.record(1, IoKind::Write, 16, true);
    s.record(2, IoKind::WriteZeroes, 4, true);
    s.record(3, IoKind::Discard, 128, true);
    s.record(4, IoKind::Flush, 0, true);
    s.record(5, IoKind::Read, 8, false);
    s.record(6, IoKind::Other, 8, true);
    assert_eq!(
        s.totals(),
        IoTotals {
            read_bios: 2,
            read_sectors: 16,
            write_bios: 2,
            write_sectors: 20,
            discard_bios: 1,
            discard_sectors: 128,
            flush_bios: 1,
            errors: 1,
        }
    );
    s.reset();
    assert_eq!(s.totals(), IoTotals::default());
}

#[test]
fn concurrent_records_all_count() {
    let s = Arc::new(IoStats::new());
    let threads: Vec<_> = (0..8u32)
        .map(|cpu| {
            let s = s.clone();
            // CPU numbers beyond the shard count wrap.
            thread::spawn(move || {
                (0..10_000).for_each(|_| s.record(cpu * 7, IoKind::Write, 8, true))
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let t = s.totals();
    assert_eq!(t.write_bios, 80_000);
    assert_eq!(t.write_sectors, 640_000);
}
