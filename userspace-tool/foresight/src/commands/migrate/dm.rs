// SPDX-License-Identifier: GPL-2.0
//! Suspending and resuming device-mapper devices: the ioctls `dmsetup`
//! makes (a suspend waits for the I/O in flight and flushes), without a
//! process per call, which the downtime would pay for.

use crate::dmctl;

/// Suspends every device at once (a VM's disks stop together; the
/// downtime does not add up one suspend per disk): one result per name.
pub fn suspend_all(names: &[&str]) -> Vec<Result<(), String>> {
    std::thread::scope(|s| {
        let running: Vec<_> = names
            .iter()
            .map(|&n| s.spawn(move || dmctl::suspend(n).map_err(|e| format!("suspend {n}: {e}"))))
            .collect();
        running
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("suspend: thread panicked".into()))
            })
            .collect()
    })
}

pub fn resume(name: &str) -> Result<(), String> {
    dmctl::resume(name).map_err(|e| format!("resume {name}: {e}"))
}
