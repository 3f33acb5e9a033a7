// SPDX-License-Identifier: GPL-2.0

//! Device-mapper targets in safe Rust.
//!
//! C header: [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h)
//!
//! This layer owns every `unsafe` block of the module: feature code sees a
//! `#[vtable]` [`TargetOperations`] trait, a pinned [`Registration`] of the
//! target type, and safe types for the target ([`Target`], [`Ctor`]), its
//! table arguments ([`Args`]), its devices ([`Device`]), bios ([`Bio`]) with
//! their per-bio data, queue limits ([`QueueLimits`]) and status output
//! ([`StatusWriter`]).

mod args;
pub mod bindings;
mod bio;
mod device;
mod io;
mod status;
mod target;
mod workqueue;

pub use args::Args;
pub use bio::{
    crc32c,
    Bio,
    BlkStatus,
    DeferList,
    Deferred,
    Op, //
};
pub use device::{
    device_name,
    Device, //
};
pub use io::{
    DmIo,
    NoIo,
    Suspended, //
};
pub use status::{
    QueueLimits,
    StatusType,
    StatusWriter, //
};
pub use target::{
    Ctor,
    DeviceVisitor,
    EndIoResult,
    MapResult,
    Registration,
    Stop,
    TableEvent,
    Target,
    TargetError,
    TargetOperations, //
};
pub use workqueue::{
    flush_delayed,
    jiffies,
    monotonic_ns,
    OwnedQueue, //
};
