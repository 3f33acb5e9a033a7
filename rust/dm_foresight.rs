// SPDX-License-Identifier: GPL-2.0

//! dm-foresight: a device-mapper target for hypervisor hosts.
//!
//! `foresight` passes I/O to an origin device at dm-linear cost; the dirty
//! log, the prefetch cache and the netlink control plane build on it.

use kernel::prelude::*;

pub mod dm;
mod foresight;
pub mod logic;

module! {
    type: ForesightModule,
    name: "dm_foresight",
    authors: ["dm-foresight developers"],
    description: "device-mapper foresight target: dirty-block log and predictive prefetch",
    license: "GPL v2",
}

#[pin_data]
struct ForesightModule {
    #[pin]
    target: dm::Registration<foresight::Foresight>,
}

impl kernel::InPlaceModule for ForesightModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            target <- dm::Registration::new(module),
        })
    }
}
