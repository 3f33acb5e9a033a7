// SPDX-License-Identifier: GPL-2.0
//! Post-copy (`migrate --postcopy`): at the switchover the sources' origins
//! are exported read-only over NBD by qemu-storage-daemon (QEMU's own NBD
//! server), and a handoff file tells the destination which bytes it
//! already holds current; the destination's `foreshadow` target pulls the
//! rest (`foresight shadow seed` reads the handoff).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The handoff file: per source, its export and the byte ranges the
/// destination holds current (copied, and not written since).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    pub version: u32,
    pub devices: Vec<HandoffDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffDevice {
    /// The source's dm name.
    pub source: String,
    /// Where the source's data is served (read-only).
    pub export: String,
    /// The source's size.
    pub bytes: u64,
    /// `[offset, length]` byte ranges, sorted and merged.
    pub current: Vec<(u64, u64)>,
}

pub const HANDOFF_VERSION: u32 = 1;

impl Handoff {
    pub fn parse(text: &str) -> Result<Self, String> {
        let h: Handoff =
            serde_json::from_str(text).map_err(|e| format!("not a handoff file: {e}"))?;
        if h.version != HANDOFF_VERSION {
            return Err(format!(
                "handoff version {}, this tool reads {HANDOFF_VERSION}",
                h.version
            ));
        }
        Ok(h)
    }

    /// The entry of `source`, or the only one.
    pub fn device(&self, source: Option<&str>) -> Result<&HandoffDevice, String> {
        let names = || {
            self.devices
                .iter()
                .map(|d| d.source.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match source {
            Some(s) => self
                .devices
                .iter()
                .find(|d| d.source == s)
                .ok_or_else(|| format!("no source {s} in the handoff (it has {})", names())),
            None if self.devices.len() == 1 => Ok(&self.devices[0]),
            None => Err(format!(
                "the handoff has several sources ({}): name one with --source",
                names()
            )),
        }
    }
}

/// `mark` pairs (region, count) for the regions of `region_bytes` that
/// `current` covers whole, on a device of `dev_bytes` (its last region may
/// be shorter), merged.
pub fn mark_pairs(current: &[(u64, u64)], region_bytes: u64, dev_bytes: u64) -> Vec<(u64, u64)> {
    let rb = region_bytes.max(1);
    let regions = dev_bytes.div_ceil(rb);
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(s, l) in current {
        let end = s.saturating_add(l);
        let first = s.div_ceil(rb);
        let last = if end >= dev_bytes { regions } else { end / rb };
        if last <= first {
            continue;
        }
        match out.last_mut() {
            Some((ps, pn)) if *ps + *pn >= first => *pn = (*pn).max(last - *ps),
            _ => out.push((first, last - first)),
        }
    }
    out
}

/// The NBD export of the sources' origins: a qemu-storage-daemon, ended
/// on drop.  It is a daemon of its own (it outlives this tool if the tool
/// dies: the destination still needs it).
pub struct Export {
    host: String,
    port: u16,
    pid: libc::pid_t,
}

/// `HOST:PORT` (`[v6]:PORT` for IPv6).
pub fn parse_addr(s: &str) -> Result<(String, u16), String> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s}: want HOST:PORT"))?;
    let port = p.parse::<u16>().map_err(|_| format!("{s}: bad port"))?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    if h.is_empty() {
        return Err(format!("{s}: want HOST:PORT"));
    }
    Ok((h.to_string(), port))
}

/// Sends `sig` to `pid` (0: whether it exists).
fn kill(pid: libc::pid_t, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid, sig) == 0 }
}

impl Export {
    /// Serves each `(name, path)` read-only as export `name` at `addr`;
    /// returns once the server listens (qemu-storage-daemon's
    /// `--daemonize` returns then, or fails if it cannot).
    pub fn start(addr: &str, disks: &[(&str, &str)]) -> Result<Self, String> {
        let (host, port) = parse_addr(addr)?;
        let pidfile =
            std::env::temp_dir().join(format!("foresight-postcopy-{}.pid", std::process::id()));
        let _ = std::fs::remove_file(&pidfile);
        let mut cmd = Command::new("qemu-storage-daemon");
        cmd.arg("--daemonize")
            .arg("--pidfile")
            .arg(&pidfile)
            .arg("--nbd-server")
            .arg(format!("addr.type=inet,addr.host={host},addr.port={port}"));
        for (i, (name, path)) in disks.iter().enumerate() {
            if name.contains(',') || path.contains(',') {
                return Err(format!(
                    "{name} ({path}): a comma cannot be passed to qemu-storage-daemon"
                ));
            }
            cmd.arg("--blockdev").arg(format!(
                "driver=host_device,node-name=n{i},filename={path},cache.direct=on,read-only=on"
            ));
            cmd.arg("--export").arg(format!(
                "type=nbd,id=e{i},node-name=n{i},name={name},writable=off"
            ));
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("qemu-storage-daemon (the NBD server of --postcopy): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "qemu-storage-daemon could not export the sources at {addr}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<libc::pid_t>().ok())
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("qemu-storage-daemon left no pid in {}", pidfile.display()))?;
        let _ = std::fs::remove_file(&pidfile);
        Ok(Export { host, port, pid })
    }

    pub fn uri(&self, name: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("nbd://{host}:{}/{name}", self.port)
    }

    /// Whether the server still runs.
    pub fn alive(&self) -> bool {
        kill(self.pid, 0)
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        kill(self.pid, libc::SIGTERM);
        for _ in 0..50 {
            if !self.alive() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_regions_only() {
        let rb = 64 << 10;
        // 0..100 KiB covers region 0 whole, region 1 in part.
        assert_eq!(mark_pairs(&[(0, 100 << 10)], rb, 1 << 20), vec![(0, 1)]);
        // Starting inside a region: from the next one.
        assert_eq!(mark_pairs(&[(1, 3 * rb)], rb, 1 << 20), vec![(1, 2)]);
        // Adjacent ranges make one run; a gap splits it.
        assert_eq!(
            mark_pairs(&[(0, rb), (rb, rb), (3 * rb, rb)], rb, 1 << 20),
            vec![(0, 2), (3, 1)]
        );
        // The device's short last region counts when covered to the end.
        let dev = 2 * rb + 512;
        assert_eq!(mark_pairs(&[(rb, rb + 512)], rb, dev), vec![(1, 2)]);
        assert_eq!(mark_pairs(&[(rb, rb)], rb, dev), vec![(1, 1)]);
        assert!(mark_pairs(&[(10, 20)], rb, dev).is_empty());
    }

    #[test]
    fn handoff_round_trip() {
        let h = Handoff {
            version: HANDOFF_VERSION,
            devices: vec![HandoffDevice {
                source: "vm1".into(),
                export: "nbd://127.0.0.1:10810/vm1".into(),
                bytes: 1 << 20,
                current: vec![(0, 4096), (8192, 4096)],
            }],
        };
        let t = serde_json::to_string(&h).unwrap();
        assert!(t.contains("\"current\":[[0,4096],[8192,4096]]"), "{t}");
        let back = Handoff::parse(&t).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.device(None).unwrap().source, "vm1");
        assert!(back.device(Some("vm2")).unwrap_err().contains("vm1"));
        assert!(Handoff::parse(&t.replace("\"version\":1", "\"version\":9")).is_err());
        assert!(Handoff::parse("{}").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("127.0.0.1:10810").unwrap(),
            ("127.0.0.1".into(), 10810)
        );
        assert_eq!(parse_addr("[::1]:10810").unwrap(), ("::1".into(), 10810));
        assert!(parse_addr("10810").is_err());
        assert!(parse_addr(":1").is_err());
        assert!(parse_addr("h:99999").is_err());
    }
}
