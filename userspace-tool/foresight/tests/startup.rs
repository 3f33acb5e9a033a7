// SPDX-License-Identifier: GPL-2.0
//! The tool's start: libnbd (and GnuTLS, libxml2, ICU behind it) is opened
//! by the NBD client when a migration first connects, and the plots' font is
//! read by fontdb when one is drawn: neither is loaded by every
//! `foresight status`, so the tool links the C library's family only.

use std::process::Command;

#[test]
fn only_the_c_library_is_needed_to_start() {
    let exe = env!("CARGO_BIN_EXE_foresight");
    let out = Command::new("readelf")
        .args(["-d", exe])
        .output()
        .expect("readelf (binutils)");
    assert!(out.status.success(), "readelf -d {exe}");
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = dynamic.lines().filter(|l| l.contains("(NEEDED)")).collect();
    assert!(!needed.is_empty(), "no NEEDED entry read: {dynamic}");
    assert!(!needed.iter().any(|l| l.contains("libnbd")), "{needed:#?}");
    // Each library costs a start its mapping and relocation (in the test
    // guest, with fontconfig, FreeType, libpng, zlib, brotli and expat, a
    // `foresight --version` took 2.5x a /bin/true).
    let libc_family = [
        "libc.so",
        "libm.so",
        "libgcc_s.so",
        "ld-linux",
        "libpthread.so",
        "libdl.so",
        "librt.so",
    ];
    let others: Vec<&&str> = needed
        .iter()
        .filter(|l| !libc_family.iter().any(|f| l.contains(f)))
        .collect();
    assert!(
        others.is_empty(),
        "needed beyond the C library: {others:#?}"
    );
    let version = Command::new(exe).arg("--version").output().unwrap();
    assert!(version.status.success(), "{version:?}");
}
