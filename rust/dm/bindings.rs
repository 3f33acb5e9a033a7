// SPDX-License-Identifier: GPL-2.0

//! Module-local bindings for `include/linux/device-mapper.h` and the C
//! helpers in `helpers.c`.
//!
//! Generated at build time by bindgen (see `Kbuild` and `bindgen_parameters`)
//! with the kernel's own flags.  Only device-mapper items are generated;
//! every other type (`bio`, `block_device`, `queue_limits`, `module`, ...) is
//! the one from [`kernel::bindings`], so values pass between the two freely.

#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unreachable_pub,
    improper_ctypes,
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    clippy::ptr_as_ptr,
    clippy::cast_lossless,
    clippy::as_underscore,
    clippy::ref_as_ptr
)]

#[allow(unused_imports)]
use kernel::{
    bindings::*,
    ffi, //
};
use pin_init::{
    MaybeZeroable,
    Zeroable, //
};

// SAFETY: `__BindgenBitfieldUnit<Storage>` is a newtype around `Storage` (as in
// `rust/bindings/lib.rs`).
unsafe impl<Storage> Zeroable for __BindgenBitfieldUnit<Storage> where Storage: Zeroable {}

include!("bindings_generated.rs");
