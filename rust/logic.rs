// SPDX-License-Identifier: GPL-2.0

//! Pure logic of the target: plain `no_std` Rust over plain data, with no
//! kernel types, compiled into the module and tested on the host
//! (`userspace-tool/logic` builds these very files).

pub mod bucket;
pub mod budget;
pub mod cache;
pub mod controller;
pub mod dirty;
pub mod hydrate;
pub mod meta;
pub mod ring;
pub mod rotation;
pub mod shadow;
pub mod stats;
pub mod table;
pub mod trace;
