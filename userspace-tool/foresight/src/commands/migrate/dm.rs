// SPDX-License-Identifier: GPL-2.0
//! Suspending and resuming device-mapper devices, with dmsetup (the same
//! ioctls an administrator's commands use; a suspend waits for the I/O in
//! flight and flushes).

use std::process::{Command, Output};

fn outcome(verb: &str, name: &str, out: std::io::Result<Output>) -> Result<(), String> {
    let out = out.map_err(|e| format!("dmsetup {verb} {name}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "dmsetup {verb} {name}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

fn dmsetup(verb: &str, name: &str) -> Result<(), String> {
    outcome(
        verb,
        name,
        Command::new("dmsetup").args([verb, name]).output(),
    )
}

/// Suspends every device at once (a VM's disks stop together; the
/// downtime does not add up one suspend per disk): one result per name.
pub fn suspend_all(names: &[&str]) -> Vec<Result<(), String>> {
    std::thread::scope(|s| {
        let running: Vec<_> = names
            .iter()
            .map(|&n| s.spawn(move || dmsetup("suspend", n)))
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
    dmsetup("resume", name)
}
