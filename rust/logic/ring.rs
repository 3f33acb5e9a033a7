// SPDX-License-Identifier: GPL-2.0

//! The fast tier of the dirty log: a small fixed buffer of recently written
//! extents that the I/O path appends to without allocating, folded into the
//! region structure off the I/O path.

use core::ops::DerefMut;

const TAG: u64 = 1 << 63;
const LEN_MASK: u64 = TAG - 1;

/// A run of blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    /// First block.
    pub start: u64,
    /// Number of blocks.
    pub len: u64,
}

/// A fixed-capacity buffer of extents, each with a one-bit tag (the epoch
/// parity it belongs to).  Appending an extent that continues or repeats the
/// last one, with the same tag, extends it, so sequential bursts take one
/// entry.
///
/// The entries live in `B`, a buffer allocated once (a `KVVec` in the
/// kernel, a `Vec` in host tests), whose length is the capacity.
pub struct ExtentRing<B> {
    buf: B,
    len: usize,
}

impl<B: DerefMut<Target = [Extent]>> ExtentRing<B> {
    /// Empty, holding at most `buf.len()` entries.
    pub fn new(buf: B) -> Self {
        Self { buf, len: 0 }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the buffer has just reached a quarter full: time to fold,
    /// leaving room for the bursts that come before the fold runs.  True
    /// at the mark only, not past it, so a burst kicks the folder once (a
    /// fold that has already started is queued again by that kick).
    pub fn at_fold_mark(&self) -> bool {
        self.len == self.buf.len().div_ceil(4)
    }

    /// Appends an extent with `tag`; false if the buffer is full (the caller
    /// must record the extent another way).
    pub fn push(&mut self, e: Extent, tag: bool) -> bool {
        if e.len == 0 {
            return true;
        }
        let e = Extent {
            start: e.start,
            len: e.len.min(LEN_MASK),
        };
        if let Some(last) = self.len.checked_sub(1).map(|i| &mut self.buf[i]) {
            let last_tag = last.len & TAG != 0;
            let (ls, le) = (last.start, last.start + (last.len & LEN_MASK));
            let (es, ee) = (e.start, e.start + e.len);
            if last_tag == tag && es <= le && ee >= ls && le.max(ee) - ls.min(es) <= LEN_MASK {
                last.start = ls.min(es);
                last.len = (le.max(ee) - last.start) | (last.len & TAG);
                return true;
            }
        }
        if self.len == self.buf.len() {
            return false;
        }
        self.buf[self.len] = Extent {
            start: e.start,
            len: e.len | if tag { TAG } else { 0 },
        };
        self.len += 1;
        true
    }

    /// Hands every entry and its tag to `f` and empties the buffer.
    pub fn drain(&mut self, mut f: impl FnMut(Extent, bool)) {
        for e in &self.buf[..self.len] {
            let ext = Extent {
                start: e.start,
                len: e.len & LEN_MASK,
            };
            f(ext, e.len & TAG != 0);
        }
        self.len = 0;
    }
}
