// SPDX-License-Identifier: GPL-2.0
//! Suspending and resuming device-mapper devices, with dmsetup (the same
//! ioctls an administrator's commands use; a suspend waits for the I/O in
//! flight and flushes).

use std::process::Command;

fn dmsetup(verb: &str, name: &str) -> Result<(), String> {
    let out = Command::new("dmsetup")
        .args([verb, name])
        .output()
        .map_err(|e| format!("dmsetup {verb} {name}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "dmsetup {verb} {name}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

pub fn suspend(name: &str) -> Result<(), String> {
    dmsetup("suspend", name)
}

pub fn resume(name: &str) -> Result<(), String> {
    dmsetup("resume", name)
}
