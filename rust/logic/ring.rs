// SPDX-License-Identifier: GPL-2.0

//! The fast tier of the dirty log: a small fixed buffer of recently written
//! extents that the I/O path appends to without a lock, allocation or
//! wait, folded into the region structure off the I/O path.
//!
//! Any number of writers append (one atomic reservation each); one reader
//! at a time drains.  A writer first reserves a slot, then learns the
//! extent's tag (the epoch parity) and publishes the slot.  Because the
//! tag is read after the reservation, a reader that changes what the tag
//! will be and then drains with [`WriteRing::drain`]`(Drain::Wait)` is
//! handed every extent that was (or will be) tagged with the old value:
//! with sequentially consistent accesses, a writer that read the old tag
//! made its reservation before the change, so before the reader's read of
//! the head, and the reader waits for that slot to be published.

use core::{
    ops::Deref,
    sync::atomic::{
        AtomicBool,
        AtomicU64,
        AtomicUsize, //
        Ordering::{
            Acquire,
            Relaxed,
            Release,
            SeqCst, //
        },
    },
};

const TAG: u64 = 1 << 63;
const LEN_MASK: u64 = TAG - 1;
/// A published slot's word, once read by a drain that could not move the
/// tail past it (a slot before it was still being written).
const CONSUMED: u64 = u64::MAX;
/// The longest extent one slot holds (longer ones are cut).
const MAX_LEN: u64 = LEN_MASK - 1;

/// A run of blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    /// First block.
    pub start: u64,
    /// Number of blocks.
    pub len: u64,
}

/// One entry of a [`WriteRing`].
#[derive(Debug, Default)]
pub struct RingSlot {
    start: AtomicU64,
    /// 0 while free or being written; else the length and the tag bit.
    word: AtomicU64,
}

/// How a drain treats slots reserved but not yet published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// Leaves them for the next drain (everything published is taken).
    Ready,
    /// Waits for each (calling the given function between looks).
    Wait,
}

/// A fixed-capacity multi-writer buffer of tagged extents.
///
/// The slots live in `B`, allocated once (a `KVVec` in the kernel, a `Vec`
/// in host tests), whose length is the capacity.
pub struct WriteRing<B> {
    buf: B,
    /// Reservations made (wrapping).
    head: AtomicUsize,
    /// Slots given back by drains (wrapping); every slot before it is free.
    tail: AtomicUsize,
    /// Held by the one drain running.
    draining: AtomicBool,
}

impl<B: Deref<Target = [RingSlot]>> WriteRing<B> {
    /// Empty, holding at most `buf.len()` entries.
    pub fn new(buf: B) -> Self {
        Self {
            buf,
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
        }
    }

    /// Entries reserved and not yet given back (a moment's view).
    pub fn len(&self) -> usize {
        self.head
            .load(Relaxed)
            .wrapping_sub(self.tail.load(Relaxed))
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `e` with the tag `tag()` returns, called after the slot is
    /// reserved.  Returns the entries held counting this one, or `None` if
    /// the buffer is full (the caller must record the extent another way;
    /// `tag` is not called).  Never blocks; safe in any context.
    #[inline]
    pub fn push(&self, e: Extent, tag: impl FnOnce() -> bool) -> Option<usize> {
        if e.len == 0 {
            return Some(self.len());
        }
        let cap = self.buf.len();
        let mut h = self.head.load(Relaxed);
        let held = loop {
            // Acquire: the drain that freed the slot read it first.
            let t = self.tail.load(Acquire);
            let held = h.wrapping_sub(t);
            if held >= cap {
                return None;
            }
            match self
                .head
                .compare_exchange_weak(h, h.wrapping_add(1), SeqCst, Relaxed)
            {
                Ok(_) => break held + 1,
                Err(now) => h = now,
            }
        };
        let bit = if tag() { TAG } else { 0 };
        let slot = &self.buf[h % cap];
        slot.start.store(e.start, Relaxed);
        slot.word.store(e.len.min(MAX_LEN) | bit, Release);
        Some(held)
    }

    /// Hands every published entry and its tag to `f`, and gives their
    /// slots back.  With [`Drain::Wait`], slots reserved before this call
    /// are waited for (`wait` runs between looks), so every entry whose
    /// writer read its tag before the call is handed over.  Drains are
    /// serialised: a second one waits (with `wait`) for the first.
    pub fn drain(&self, how: Drain, mut wait: impl FnMut(), mut f: impl FnMut(Extent, bool)) {
        while self
            .draining
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_err()
        {
            wait();
        }
        let cap = self.buf.len();
        let h = self.head.load(SeqCst);
        let mut i = self.tail.load(Relaxed);
        // The first slot still being written (Ready): the tail stops there.
        let mut stop = None;
        while i != h {
            let slot = &self.buf[i % cap];
            let mut w = slot.word.load(Acquire);
            while w == 0 && how == Drain::Wait {
                wait();
                w = slot.word.load(Acquire);
            }
            if w == 0 {
                stop.get_or_insert(i);
            } else {
                if w != CONSUMED {
                    let start = slot.start.load(Relaxed);
                    f(
                        Extent {
                            start,
                            len: w & LEN_MASK,
                        },
                        w & TAG != 0,
                    );
                }
                // Before the tail: free; after it: taken, not free yet.
                slot.word
                    .store(if stop.is_none() { 0 } else { CONSUMED }, Relaxed);
            }
            i = i.wrapping_add(1);
        }
        // Release: a writer reusing a slot sees it read and cleared.
        self.tail.store(stop.unwrap_or(h), Release);
        self.draining.store(false, Release);
    }
}

/// Merges entries that overlap or touch the one before them with the same
/// tag (a sequential writer's extents), in place; returns how many remain.
/// Folding then marks each run once.
pub fn coalesce(entries: &mut [(Extent, usize)]) -> usize {
    let mut n = 0;
    for i in 0..entries.len() {
        let (e, tag) = entries[i];
        if n > 0 {
            let (last, last_tag) = &mut entries[n - 1];
            let end = last.start.saturating_add(last.len);
            if *last_tag == tag && e.start >= last.start && e.start <= end {
                // Never shorter, even where the ends saturate.
                last.len = last.len.max(e.start.saturating_add(e.len) - last.start);
                continue;
            }
        }
        entries[n] = (e, tag);
        n += 1;
    }
    n
}
