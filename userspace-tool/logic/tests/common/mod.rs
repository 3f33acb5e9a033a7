// SPDX-License-Identifier: GPL-2.0

//! Helpers shared by the dirty-set tests.

#![allow(dead_code)]

use foresight_logic::dirty::{bitmap_words, DirtySet, Slot, REGION_BLOCKS};
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;

/// A dirty set on host storage.
pub type Set = DirtySet<Vec<Slot>, Vec<u32>, Vec<AtomicU64>>;

/// An empty set of `blocks` blocks at grain `shift`, promoting regions at
/// `dense` percent, with tables of `slots` entries.
pub fn set(blocks: u64, shift: u8, dense: u8, slots: usize) -> Set {
    let words = bitmap_words(blocks.div_ceil(REGION_BLOCKS));
    DirtySet::new(
        blocks,
        shift,
        dense,
        (0..words).map(|_| AtomicU64::new(0)).collect(),
        vec![Slot::default(); slots],
        vec![0u32; slots],
    )
    .unwrap()
}

/// Every block the set reports, checking that extents come ordered and
/// maximal.
pub fn reported(s: &Set) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let mut last_end = None;
    s.extents(0, |st, len| {
        assert!(len > 0);
        if let Some(e) = last_end {
            assert!(st > e, "extents not maximal or not ordered");
        }
        last_end = Some(st + len);
        out.extend(st..st + len);
        true
    });
    out
}

/// `n` free slots for a [`foresight_logic::ring::WriteRing`].
pub fn ring_slots(n: usize) -> Vec<foresight_logic::ring::RingSlot> {
    (0..n).map(|_| Default::default()).collect()
}
