// SPDX-License-Identifier: GPL-2.0

//! Status and message output, and queue limits.
//!
//! C header: [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h)

use super::bindings as dmb;
use core::fmt;
use kernel::{
    bindings,
    prelude::*, //
};

/// Which status `dmsetup` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusType {
    /// `dmsetup status`: counters.
    Info,
    /// `dmsetup table`: the constructor line.
    Table,
    /// IMA measurement: `key=value;` pairs.
    Ima,
}

impl StatusType {
    pub(super) fn from_raw(t: dmb::status_type_t) -> Self {
        match t {
            dmb::status_type_t_STATUSTYPE_INFO => Self::Info,
            dmb::status_type_t_STATUSTYPE_TABLE => Self::Table,
            _ => Self::Ima,
        }
    }
}

/// Text written into the buffer device-mapper supplies, like `DMEMIT`:
/// output past the end is cut, the buffer always stays NUL-terminated, and
/// nothing is allocated.
///
/// # Invariants
///
/// `buf` points to `maxlen` writable bytes for `'a`; `len < maxlen` unless
/// `maxlen == 0`, and `buf[len]` is NUL.
pub struct StatusWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    truncated: bool,
}

impl<'a> StatusWriter<'a> {
    /// # Safety
    ///
    /// `result` must point to `maxlen` bytes writable for `'a` and not otherwise accessed.
    pub(super) unsafe fn from_raw(result: *mut c_char, maxlen: c_uint) -> Self {
        let buf: &mut [u8] = if result.is_null() || maxlen == 0 {
            &mut []
        } else {
            // SAFETY: By the safety requirements the buffer is ours for `'a`.
            unsafe { core::slice::from_raw_parts_mut(result.cast::<u8>(), maxlen as usize) }
        };
        if let Some(first) = buf.first_mut() {
            *first = 0;
        }
        // INVARIANT: `len == 0` and `buf[0]` is NUL (or the buffer is empty).
        Self {
            buf,
            len: 0,
            truncated: false,
        }
    }

    /// Whether output was cut for lack of room.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Whether anything was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Write for StatusWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len().saturating_sub(self.len + 1);
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if self.len < self.buf.len() {
            self.buf[self.len] = 0;
        }
        if n < s.len() {
            self.truncated = true;
        }
        // Never fail: like DMEMIT, output that does not fit is dropped.
        Ok(())
    }
}

/// The queue limits of the dm device, as stacked from its underlying
/// devices, for a target's `io_hints` to adjust.
///
/// # Invariants
///
/// Wraps a valid `queue_limits` that is exclusively ours while borrowed.
#[repr(transparent)]
pub struct QueueLimits(bindings::queue_limits);

impl QueueLimits {
    /// # Safety
    ///
    /// `limits` must be valid and not otherwise accessed for `'a`.
    pub(super) unsafe fn from_raw<'a>(limits: *mut bindings::queue_limits) -> &'a mut Self {
        // SAFETY: `QueueLimits` is `repr(transparent)` over `queue_limits`; validity and
        // exclusivity come from the safety requirements.
        unsafe { &mut *limits.cast::<Self>() }
    }

    /// The logical block size in bytes.
    pub fn logical_block_size(&self) -> u32 {
        self.0.logical_block_size
    }

    /// The minimum I/O size hint in bytes.
    pub fn io_min(&self) -> u32 {
        self.0.io_min
    }

    /// Sets the minimum I/O size hint in bytes.
    pub fn set_io_min(&mut self, bytes: u32) {
        self.0.io_min = bytes;
    }

    /// The optimal I/O size hint in bytes.
    pub fn io_opt(&self) -> u32 {
        self.0.io_opt
    }

    /// Sets the optimal I/O size hint in bytes.
    pub fn set_io_opt(&mut self, bytes: u32) {
        self.0.io_opt = bytes;
    }
}
