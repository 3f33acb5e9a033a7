// SPDX-License-Identifier: GPL-2.0

//! Table and message arguments.
//!
//! C header: [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h)

use kernel::{
    prelude::*,
    str::CStrExt, //
};

/// The words of a table line or a message, as device-mapper split them.
///
/// # Invariants
///
/// `argv` holds valid pointers to NUL-terminated strings that live at least
/// as long as `'a`.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    argv: &'a [*mut c_char],
}

impl<'a> Args<'a> {
    /// Wraps the `argc`/`argv` pair device-mapper hands to `ctr` and `message`.
    ///
    /// # Safety
    ///
    /// `argv` must point to `argc` valid NUL-terminated strings (or `argc` must
    /// be zero), all valid for `'a`.
    pub(super) unsafe fn from_raw(argc: c_uint, argv: *mut *mut c_char) -> Self {
        let argv = if argc == 0 || argv.is_null() {
            &[][..]
        } else {
            // SAFETY: By the safety requirements, `argv` points to `argc` pointers valid for `'a`.
            unsafe { core::slice::from_raw_parts(argv, argc as usize) }
        };
        // INVARIANT: Every element is a valid C string for `'a`, per the safety requirements.
        Self { argv }
    }

    /// The number of words.
    pub fn len(&self) -> usize {
        self.argv.len()
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.argv.is_empty()
    }

    /// Word `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&'a CStr> {
        let p = *self.argv.get(i)?;
        // SAFETY: By the type invariants, `p` is a valid C string for `'a`.
        Some(unsafe { CStr::from_char_ptr(p) })
    }

    /// The words as byte strings (without the NUL), for the pure-logic parsers.
    pub fn words(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + Clone + 'a {
        let argv = self.argv;
        (0..argv.len()).map(move |i| {
            // SAFETY: By the type invariants, every element is a valid C string for `'a`.
            unsafe { CStr::from_char_ptr(argv[i]) }.to_bytes()
        })
    }
}
