// SPDX-License-Identifier: GPL-2.0
//! Device-mapper's control ioctls, safely: suspend, resume and target
//! messages by device name, the calls `dmsetup suspend`, `dmsetup resume
//! --noudevsync` and `dmsetup message` make, without starting a process
//! for each: a switchover's downtime pays for every exec (tens of
//! milliseconds under TCG).  The `devicemapper` crate would need
//! libdevmapper's headers and libclang at build time for these three
//! calls.  The layout is `linux/dm-ioctl.h`'s (checked against the
//! installed header by a test).
//!
//! Like `--noudevsync`, nothing waits for udev: a resume's uevent is
//! processed later (the device's node exists since its creation).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

/// `struct dm_ioctl`'s size, and where its `data` begins.
const DM_IOCTL_SIZE: usize = 312;
const DM_NAME_LEN: usize = 128;
const NAME_AT: usize = 48;

const DM_SUSPEND_FLAG: u32 = 1 << 1;

/// `_IOWR(DM_IOCTL, nr, struct dm_ioctl)`.
const fn iowr(nr: u32) -> u32 {
    (3 << 30) | ((DM_IOCTL_SIZE as u32) << 16) | (0xfd << 8) | nr
}
const DM_DEV_SUSPEND: u32 = iowr(6);
const DM_TARGET_MSG: u32 = iowr(14);

/// A request for the device `name`: `struct dm_ioctl` (interface 4.0.0,
/// the oldest that has these calls), then `payload` at its end.
fn request(name: &str, flags: u32, payload: &[u8]) -> io::Result<Vec<u8>> {
    if name.is_empty() || name.len() >= DM_NAME_LEN || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a device-mapper name",
        ));
    }
    let size = DM_IOCTL_SIZE + payload.len();
    let mut b = vec![0u8; size];
    let mut put = |at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    put(0, 4); // version 4.0.0
    put(
        12,
        u32::try_from(size).map_err(|_| io::ErrorKind::InvalidInput)?,
    ); // data_size
    put(16, DM_IOCTL_SIZE as u32); // data_start
    put(28, flags);
    b[NAME_AT..NAME_AT + name.len()].copy_from_slice(name.as_bytes());
    b[DM_IOCTL_SIZE..].copy_from_slice(payload);
    Ok(b)
}

fn call(nr: u32, mut req: Vec<u8>) -> io::Result<()> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")?;
    // SAFETY: `req` is a whole `struct dm_ioctl` whose `data_size` is the
    // buffer's length, so the kernel reads and writes within it; it lives
    // across the call.
    let r = unsafe { libc::ioctl(ctl.as_raw_fd(), nr as _, req.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Suspends `name` (waits for its I/O in flight and flushes, like
/// `dmsetup suspend`).
pub fn suspend(name: &str) -> io::Result<()> {
    call(DM_DEV_SUSPEND, request(name, DM_SUSPEND_FLAG, &[])?)
}

/// Resumes `name` (swapping in a table loaded meanwhile, like `dmsetup
/// resume`).
pub fn resume(name: &str) -> io::Result<()> {
    call(DM_DEV_SUSPEND, request(name, 0, &[])?)
}

/// Sends `msg` to the target at `sector` of `name` (`dmsetup message`);
/// the target's reply, if any, is not read.
pub fn message(name: &str, sector: u64, msg: &str) -> io::Result<()> {
    if msg.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL in the message",
        ));
    }
    // `struct dm_target_msg`: the sector, then the message, NUL-terminated.
    let mut p = sector.to_ne_bytes().to_vec();
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    call(DM_TARGET_MSG, request(name, 0, &p)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout and numbers above are the installed uAPI header's.
    #[test]
    fn matches_the_uapi_header() {
        let h = std::fs::read_to_string("/usr/include/linux/dm-ioctl.h")
            .expect("linux/dm-ioctl.h (linux-libc-dev)");
        assert!(h.contains(&format!("#define DM_NAME_LEN {DM_NAME_LEN}")));
        assert!(h.contains("#define DM_UUID_LEN 129"));
        assert!(h.contains("#define DM_IOCTL 0xfd"));
        assert!(h.contains("#define DM_SUSPEND_FLAG\t\t(1 << 1)"));
        // The command numbers: the enum's order.
        let cmds: Vec<&str> = h
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("DM_") && l.contains("_CMD"))
            .map(|l| l.trim_end_matches(',').split(' ').next().unwrap())
            .collect();
        assert_eq!(
            cmds.iter().position(|c| *c == "DM_DEV_SUSPEND_CMD"),
            Some(6)
        );
        assert_eq!(
            cmds.iter().position(|c| *c == "DM_TARGET_MSG_CMD"),
            Some(14)
        );
        // struct dm_ioctl: 12 bytes of version, six u32, a padding u32,
        // the u64 dev, then name, uuid and 7 bytes of data.
        assert_eq!(NAME_AT, 12 + 6 * 4 + 4 + 8);
        // `data` (7 bytes) ends the struct, padded to its u64 alignment.
        let data_at = NAME_AT + DM_NAME_LEN + 129;
        assert_eq!(DM_IOCTL_SIZE, (data_at + 7).next_multiple_of(8));
        assert_eq!(DM_DEV_SUSPEND, 0xC138_FD06);
    }

    #[test]
    fn requests() {
        let b = request("vm1", DM_SUSPEND_FLAG, &[]).unwrap();
        assert_eq!(b.len(), DM_IOCTL_SIZE);
        assert_eq!(&b[NAME_AT..NAME_AT + 4], b"vm1\0");
        assert_eq!(
            u32::from_ne_bytes(b[28..32].try_into().unwrap()),
            DM_SUSPEND_FLAG
        );
        assert!(request("", 0, &[]).is_err());
        assert!(request(&"x".repeat(DM_NAME_LEN), 0, &[]).is_err());
        assert!(request(&"x".repeat(DM_NAME_LEN - 1), 0, &[]).is_ok());
        assert!(message("vm1", 0, "a\0b").is_err());
    }
}
