// SPDX-License-Identifier: GPL-2.0
//! The tool's start: libnbd (and GnuTLS, libxml2, ICU behind it) is opened
//! by the NBD client when a migration first connects, not loaded by every
//! `foresight status`; without it, the other commands run.

use std::process::Command;

#[test]
fn libnbd_is_not_needed_to_start() {
    let exe = env!("CARGO_BIN_EXE_foresight");
    let out = Command::new("readelf").args(["-d", exe]).output().expect("readelf (binutils)");
    assert!(out.status.success(), "readelf -d {exe}");
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = dynamic.lines().filter(|l| l.contains("(NEEDED)")).collect();
    assert!(!needed.is_empty(), "no NEEDED entry read: {dynamic}");
    assert!(!needed.iter().any(|l| l.contains("libnbd")), "{needed:#?}");
    let version = Command::new(exe).arg("--version").output().unwrap();
    assert!(version.status.success(), "{version:?}");
}
