// SPDX-License-Identifier: GPL-2.0

//! The pure logic of the dm-foresight kernel module, built from the very
//! files the module compiles (`rust/logic/`), so the host can test it and
//! the userspace tool can share it.

#![no_std]

#[path = "../../../rust/logic/bucket.rs"]
pub mod bucket;
#[path = "../../../rust/logic/budget.rs"]
pub mod budget;
#[path = "../../../rust/logic/cache.rs"]
pub mod cache;
#[path = "../../../rust/logic/controller.rs"]
pub mod controller;
#[path = "../../../rust/logic/dirty.rs"]
pub mod dirty;
#[path = "../../../rust/logic/hydrate.rs"]
pub mod hydrate;
#[path = "../../../rust/logic/meta.rs"]
pub mod meta;
#[path = "../../../rust/logic/ring.rs"]
pub mod ring;
#[path = "../../../rust/logic/rotation.rs"]
pub mod rotation;
#[path = "../../../rust/logic/shadow.rs"]
pub mod shadow;
#[path = "../../../rust/logic/stats.rs"]
pub mod stats;
#[path = "../../../rust/logic/table.rs"]
pub mod table;
#[path = "../../../rust/logic/trace.rs"]
pub mod trace;
