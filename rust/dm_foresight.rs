// SPDX-License-Identifier: GPL-2.0

//! dm-foresight: a device-mapper target for hypervisor hosts.
//!
//! `foresight` passes I/O to an origin device at dm-linear cost; the dirty
//! log, the prefetch cache and the netlink control plane build on it.
//! `foreshadow` hydrates a migration's destination from its source,
//! the regions the VM needs first.

use kernel::prelude::*;

mod budget;
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
    params: {
        cache_total_mb: u32 {
            default: 0,
            description: "Host-wide total of the foresight devices' prefetch caches in MiB (0: no limit; netlink budget-set changes it)",
        },
        bandwidth_total_kbps: u32 {
            default: 0,
            description: "Most background bandwidth (prefetch, hydration) one origin backend gives its tables together, KiB/s (0: no limit)",
        },
    },
}

/// The registries of the two targets' devices and of the budgets'
/// reservations, which the family's operations reach.
type Registries = (
    (
        &'static genl::Registry<foresight::Shared>,
        &'static genl::Registry<shadow::Core>,
    ),
    &'static genl::Registry<budget::Reservation>,
);

/// The target types and the netlink family.  The family comes first (the
/// registries of devices it starts are used by every target) and goes
/// last.
#[pin_data]
struct ForesightModule {
    #[pin]
    target: dm::Registration<foresight::Foresight>,
    #[pin]
    shadow: dm::Registration<shadow::Shadow>,
    _family: genl::Registration<Registries>,
}

/// The family's operations: each target's on its own devices.
struct Family;

#[vtable]
impl genl::Operations for Family {
    fn dev_get(req: &genl::Request<'_>) -> Result<(), genl::Failure> {
        foresight::control::dev_get(req)
    }

    fn dev_dump(dump: &mut genl::Dump<'_>) -> Result<bool, genl::Failure> {
        foresight::control::dev_dump(dump)
    }

    fn dirty_dump(dump: &mut genl::Dump<'_>) -> Result<bool, genl::Failure> {
        foresight::control::dirty_dump(dump)
    }

    fn dirty_rotate(req: &genl::Request<'_>) -> Result<(), genl::Failure> {
        foresight::control::dirty_rotate(req)
    }

    fn predict(req: &genl::Request<'_>) -> Result<(), genl::Failure> {
        foresight::control::predict(req)
    }

    fn policy_set(req: &genl::Request<'_>) -> Result<(), genl::Failure> {
        foresight::control::policy_set(req)
    }

    fn shadow_get(req: &genl::Request<'_>) -> Result<(), genl::Failure> {
        shadow::control::get(req)
    }

    fn shadow_dump(dump: &mut genl::Dump<'_>) -> Result<bool, genl::Failure> {
        shadow::control::dump(dump)
    }

    fn shadow_hint(req: &genl::Request<'_>) -> Result<(), genl::Failure> {
        shadow::control::hint(req)
    }

    fn budget_get(req: &genl::Request<'_>) -> Result<(), genl::Failure> {
        budget::control::get(req)
    }

    fn budget_set(req: &genl::Request<'_>) -> Result<(), genl::Failure> {
        budget::control::set(req)
    }

    fn group_joined(group: u32) {
        foresight::control::group_joined(group)
    }

    fn socket_closed(port: u32) {
        foresight::control::socket_closed(port)
    }
}

impl kernel::InPlaceModule for ForesightModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        budget::init(
            module_parameters::cache_total_mb.value(),
            module_parameters::bandwidth_total_kbps.value(),
        );
        try_pin_init!(Self {
            _family: genl::Registration::new::<Family>((
                (&foresight::DEVICES, &shadow::SHADOWS),
                &budget::LEDGER,
            ))?,
            target <- dm::Registration::new(module),
            shadow <- dm::Registration::new(module),
        })
    }
}
