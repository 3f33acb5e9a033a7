// SPDX-License-Identifier: GPL-2.0
//! The DEV argument and device numbers.

use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::uapi::NAME_LEN;

/// A device number split in its parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    /// Largest major of the kernel's 32-bit encoding (12 bits).
    pub const MAX_MAJOR: u32 = (1 << 12) - 1;
    /// Largest minor of the kernel's 32-bit encoding (20 bits).
    pub const MAX_MINOR: u32 = (1 << 20) - 1;

    pub fn new(major: u32, minor: u32) -> Result<Self, String> {
        if major > Self::MAX_MAJOR || minor > Self::MAX_MINOR {
            return Err(format!(
                "device number {major}:{minor} out of range (major < 4096, minor < 1048576)"
            ));
        }
        Ok(DevNum { major, minor })
    }

    /// The kernel's `new_encode_dev()`, which is what the `dev` attributes
    /// carry (and equals `st_rdev` for these values): the module's own
    /// function.
    pub fn encode(self) -> u32 {
        foresight_logic::trace::encode_dev((self.major << 20) | self.minor)
    }

    /// The kernel's `new_decode_dev()`.
    pub fn decode(v: u32) -> Self {
        let kdev = foresight_logic::trace::decode_dev(v);
        DevNum {
            major: kdev >> 20,
            minor: kdev & 0xfffff,
        }
    }

    /// The number of the block device at `p`.
    pub fn of_path(p: &Path) -> Result<Self, String> {
        let md = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if !md.file_type().is_block_device() {
            return Err(format!("{}: not a block device", p.display()));
        }
        DevNum::from_dev_t(md.rdev())
    }

    /// From a 64-bit `dev_t` as `stat()` returns it.
    pub fn from_dev_t(rdev: u64) -> Result<Self, String> {
        let major = libc::major(rdev as libc::dev_t);
        let minor = libc::minor(rdev as libc::dev_t);
        Self::new(major, minor)
    }

    /// Parse `MAJOR:MINOR`.
    pub fn parse(s: &str) -> Option<Result<Self, String>> {
        let (a, b) = s.split_once(':')?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty()
            || b.is_empty()
            || !a.bytes().all(|c| c.is_ascii_digit())
            || !b.bytes().all(|c| c.is_ascii_digit())
        {
            return None;
        }
        Some(match (a.parse::<u32>(), b.parse::<u32>()) {
            (Ok(a), Ok(b)) => Self::new(a, b),
            _ => Err(format!("device number {s} out of range")),
        })
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// How a command names a foresight device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevSpec {
    /// Device-mapper name (attribute `name`).
    Name(String),
    /// Device number (attribute `dev`).
    Num(DevNum),
}

impl DevSpec {
    /// Parse a DEV argument: `vm1`, `/dev/mapper/vm1`, `/dev/dm-3` (or any
    /// block device path), or `253:3`.
    pub fn parse(arg: &str) -> Result<Self, String> {
        Self::parse_with(arg, DevNum::of_path)
    }

    /// [`parse`](Self::parse) with the `stat()` of a path abstracted.
    pub fn parse_with(
        arg: &str,
        stat: impl FnOnce(&Path) -> Result<DevNum, String>,
    ) -> Result<Self, String> {
        if arg.is_empty() {
            return Err("empty device name".into());
        }
        if let Some(n) = DevNum::parse(arg) {
            return n.map(DevSpec::Num);
        }
        if let Some(name) = arg.strip_prefix("/dev/mapper/") {
            if !name.is_empty() && !name.contains('/') {
                return Self::name(name);
            }
        }
        if arg.contains('/') {
            return stat(Path::new(arg)).map(DevSpec::Num);
        }
        Self::name(arg)
    }

    fn name(name: &str) -> Result<Self, String> {
        if name.len() >= NAME_LEN {
            return Err(format!(
                "device name \"{name}\" too long (at most {} bytes)",
                NAME_LEN - 1
            ));
        }
        if name.contains('\0') {
            return Err("device name contains a NUL byte".into());
        }
        Ok(DevSpec::Name(name.to_string()))
    }

    /// Whether a message about device `name`/`dev` is about this device.
    pub fn matches(&self, name: Option<&str>, dev: Option<u32>) -> bool {
        match self {
            DevSpec::Name(n) => name == Some(n.as_str()),
            DevSpec::Num(d) => dev == Some(d.encode()),
        }
    }
}

impl fmt::Display for DevSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DevSpec::Name(n) => write!(f, "\"{n}\""),
            DevSpec::Num(d) => write!(f, "{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_matches_kernel() {
        // new_encode_dev(MKDEV(253, 3))
        assert_eq!(DevNum::new(253, 3).unwrap().encode(), 0xfd03);
        assert_eq!(DevNum::new(8, 16).unwrap().encode(), 0x810);
        // Large minors go to the top bits.
        let d = DevNum::new(259, 0x12345).unwrap();
        assert_eq!(d.encode(), 0x45 | (259 << 8) | (0x12300 << 12));
        assert_eq!(DevNum::decode(d.encode()), d);
        for (ma, mi) in [(0, 0), (1, 255), (4095, 0xfffff), (253, 256), (7, 1 << 19)] {
            let d = DevNum::new(ma, mi).unwrap();
            assert_eq!(DevNum::decode(d.encode()), d);
        }
        assert!(DevNum::new(4096, 0).is_err());
        assert!(DevNum::new(0, 1 << 20).is_err());
    }

    #[test]
    fn encode_equals_glibc_rdev() {
        for (ma, mi) in [(253u32, 3u32), (8, 16), (259, 0x12345), (4095, 0xfffff)] {
            let rdev = libc::makedev(ma, mi) as u64;
            let d = DevNum::from_dev_t(rdev).unwrap();
            assert_eq!((d.major, d.minor), (ma, mi));
            assert_eq!(d.encode() as u64, rdev, "{ma}:{mi}");
        }
    }

    #[test]
    fn parse_dev_specs() {
        let no_stat = |_: &Path| -> Result<DevNum, String> { panic!("no stat expected") };
        assert_eq!(
            DevSpec::parse_with("vm1", no_stat).unwrap(),
            DevSpec::Name("vm1".into())
        );
        assert_eq!(
            DevSpec::parse_with("/dev/mapper/vm1", no_stat).unwrap(),
            DevSpec::Name("vm1".into())
        );
        assert_eq!(
            DevSpec::parse_with("253:3", no_stat).unwrap(),
            DevSpec::Num(DevNum {
                major: 253,
                minor: 3
            })
        );
        assert!(DevSpec::parse_with("253:99999999", no_stat).is_err());
        // A name with a colon that is no number stays a name.
        assert_eq!(
            DevSpec::parse_with("a:b", no_stat).unwrap(),
            DevSpec::Name("a:b".into())
        );
        let stat = |p: &Path| {
            assert_eq!(p, Path::new("/dev/dm-7"));
            Ok(DevNum {
                major: 253,
                minor: 7,
            })
        };
        assert_eq!(
            DevSpec::parse_with("/dev/dm-7", stat).unwrap(),
            DevSpec::Num(DevNum {
                major: 253,
                minor: 7
            })
        );
        assert!(DevSpec::parse_with("", no_stat).is_err());
        assert!(DevSpec::parse_with(&"x".repeat(128), no_stat).is_err());
        assert!(DevSpec::parse_with(&"x".repeat(127), no_stat).is_ok());
    }

    #[test]
    fn parse_real_paths() {
        // /dev/null is a character device, not a block device.
        assert!(DevSpec::parse("/dev/null")
            .unwrap_err()
            .contains("not a block device"));
        assert!(DevSpec::parse("/nonexistent/x").is_err());
    }

    #[test]
    fn matches() {
        let n = DevSpec::Name("vm1".into());
        assert!(n.matches(Some("vm1"), Some(1)));
        assert!(!n.matches(Some("vm2"), Some(1)));
        let d = DevSpec::Num(DevNum {
            major: 253,
            minor: 3,
        });
        assert!(d.matches(Some("x"), Some(0xfd03)));
        assert!(!d.matches(Some("x"), None));
    }
}
