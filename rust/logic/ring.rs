// SPDX-License-Identifier: GPL-2.0

//! The fast tier of the dirty log: a small fixed buffer of recently written
//! extents that the I/O path appends to without allocating, folded into the
//! region structure off the I/O path.

/// A run of blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    /// First block.
    pub start: u64,
    /// Number of blocks.
    pub len: u64,
}

/// A fixed-capacity buffer of extents.  Appending an extent that continues
/// or repeats the last one extends it, so sequential bursts take one entry.
pub struct ExtentRing<const N: usize> {
    buf: [Extent; N],
    len: usize,
}

impl<const N: usize> Default for ExtentRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ExtentRing<N> {
    /// Empty.
    pub const fn new() -> Self {
        Self {
            buf: [Extent { start: 0, len: 0 }; N],
            len: 0,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether at least half full: time to fold.
    pub fn wants_fold(&self) -> bool {
        self.len * 2 >= N
    }

    /// Appends an extent; false if the buffer is full (the caller must
    /// record the extent another way).
    pub fn push(&mut self, e: Extent) -> bool {
        if e.len == 0 {
            return true;
        }
        if let Some(last) = self.len.checked_sub(1).map(|i| &mut self.buf[i]) {
            let (ls, le) = (last.start, last.start + last.len);
            let (es, ee) = (e.start, e.start + e.len);
            if es <= le && ee >= ls {
                last.start = ls.min(es);
                last.len = le.max(ee) - last.start;
                return true;
            }
        }
        if self.len == N {
            return false;
        }
        self.buf[self.len] = e;
        self.len += 1;
        true
    }

    /// Hands every entry to `f` and empties the buffer.
    pub fn drain(&mut self, mut f: impl FnMut(Extent)) {
        for e in &self.buf[..self.len] {
            f(*e);
        }
        self.len = 0;
    }
}
