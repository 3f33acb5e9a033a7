// SPDX-License-Identifier: GPL-2.0

//! dm-foresight: a device-mapper target for hypervisor hosts.
//!
//! `foresight` passes I/O to an origin device at dm-linear cost; the dirty
//! log, the prefetch cache and the netlink control plane build on it.
//! `foreshadow` hydrates a migration's destination from its source,
//! the regions the VM needs first.

use kernel::prelude::*;

pub mod dm;
mod foresight;
pub mod genl;
pub mod logic;
mod shadow;

module! {
    type: ForesightModule,
    name: "dm_foresight",
    authors: ["dm-foresight developers"],
    description: "device-mapper foresight target: dirty-block log and predictive prefetch",
    license: "GPL v2",
}

/// The target type and the netlink family.  The family comes first (the
/// registry of devices it starts is used by every target) and goes last.
#[pin_data]
struct ForesightModule {
    #[pin]
    target: dm::Registration<foresight::Foresight>,
    #[pin]
    shadow: dm::Registration<shadow::Shadow>,
    _family: genl::Registration<foresight::Shared>,
}

impl kernel::InPlaceModule for ForesightModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _family: genl::Registration::new::<foresight::control::Family>(&foresight::DEVICES)?,
            target <- dm::Registration::new(module),
            shadow <- dm::Registration::new(module),
        })
    }
}
