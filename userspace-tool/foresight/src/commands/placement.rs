// SPDX-License-Identifier: GPL-2.0
//! `foresight placement`: the CPUs the module's kernel workers run on.
//!
//! Each table's workqueues (its device worker `fsd`, prefetch fetches
//! `fsfetch`, write throttle `fsthrot`, a shadow's hydration `fshydr`) are
//! unbound and in sysfs as `/sys/devices/virtual/workqueue/<kind>-<major>:<minor>.<n>`,
//! where `cpumask` (a hexadecimal mask) says which CPUs run their work.

use super::{exit, CmdResult};
use crate::dev::{DevNum, DevSpec};
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};

/// Where the kernel lists workqueues made with `WQ_SYSFS`.
pub const SYSFS: &str = "/sys/devices/virtual/workqueue";

/// The module's workqueue kinds.
pub const KINDS: [&str; 4] = ["fsd", "fsfetch", "fsthrot", "fshydr"];

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Only this device's workqueues (name, /dev path or MAJOR:MINOR)
    pub dev: Option<String>,
    /// Run them on these CPUs (a list: 0-3,6)
    #[arg(long = "kernel-cpus", value_name = "LIST")]
    pub kernel_cpus: Option<String>,
    /// Print a JSON array
    #[arg(long)]
    pub json: bool,
}

/// One workqueue of the module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Queue {
    pub name: String,
    pub kind: String,
    /// The mapped device, `major:minor`.
    pub dev: String,
    /// Its CPUs, as a list.
    pub cpus: String,
}

/// The kind and device of a workqueue name of the module.
pub fn parse_name(name: &str) -> Option<(&str, DevNum)> {
    let (kind, rest) = name.split_once('-')?;
    if !KINDS.contains(&kind) {
        return None;
    }
    let (dev, seq) = rest.rsplit_once('.')?;
    seq.parse::<u32>().ok()?;
    Some((kind, DevNum::parse(dev)?.ok()?))
}

/// A CPU list (`0-3,6`) as the hexadecimal mask sysfs takes.
pub fn list_to_mask(list: &str) -> Result<String, String> {
    let mut bits: Vec<bool> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|&c| c < 8192)
                .ok_or_else(|| format!("{list}: not a CPU list"))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if a > b {
            return Err(format!("{list}: {a}-{b} is backwards"));
        }
        if bits.len() <= b {
            bits.resize(b + 1, false);
        }
        bits[a..=b].iter_mut().for_each(|x| *x = true);
    }
    if !bits.contains(&true) {
        return Err(format!("{list:?}: no CPU"));
    }
    // Nibbles, most significant first.
    let nibbles = bits.len().div_ceil(4);
    Ok((0..nibbles)
        .rev()
        .map(|n| {
            let v = (0..4).fold(0u32, |v, i| {
                v | (u32::from(bits.get(n * 4 + i) == Some(&true)) << i)
            });
            char::from_digit(v, 16).unwrap()
        })
        .collect())
}

/// A hexadecimal mask (as sysfs prints it, maybe in comma-separated
/// 32-bit words) as a CPU list.
pub fn mask_to_list(mask: &str) -> String {
    let hex: String = mask.trim().chars().filter(|c| *c != ',').collect();
    let mut cpus = Vec::new();
    for (n, c) in hex.chars().rev().enumerate() {
        let v = c.to_digit(16).unwrap_or(0);
        for i in 0..4 {
            if v & (1 << i) != 0 {
                cpus.push(n * 4 + i as usize);
            }
        }
    }
    // Runs as a-b.
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// The module's workqueues under `root`, of `dev` if given, by name.
pub fn list(root: &Path, dev: Option<DevNum>) -> Result<Vec<(PathBuf, Queue)>, String> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(format!("{}: {e}", root.display())),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((kind, d)) = parse_name(&name) else {
            continue;
        };
        if dev.is_some_and(|x| x != d) {
            continue;
        }
        let mask = fs::read_to_string(e.path().join("cpumask"))
            .map_err(|err| format!("{}/cpumask: {err}", e.path().display()))?;
        out.push((
            e.path(),
            Queue {
                kind: kind.to_string(),
                dev: d.to_string(),
                cpus: mask_to_list(&mask),
                name,
            },
        ));
    }
    out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    Ok(out)
}

/// Runs every queue of `queues` on the CPUs of `mask`.
pub fn set(queues: &[(PathBuf, Queue)], mask: &str) -> Result<(), String> {
    for (p, q) in queues {
        fs::write(p.join("cpumask"), mask)
            .map_err(|e| format!("{}: cpumask {mask}: {e}", q.name))?;
    }
    Ok(())
}

/// The number of a device given by name (`/dev/mapper/NAME`), path or
/// number.
fn devnum(dev: &str) -> Result<DevNum, String> {
    match DevSpec::parse(dev)? {
        DevSpec::Num(n) => Ok(n),
        DevSpec::Name(n) => DevNum::of_path(Path::new(&format!("/dev/mapper/{n}"))),
    }
}

pub fn run(o: &Opts) -> CmdResult {
    let dev = o.dev.as_deref().map(devnum).transpose()?;
    let root = Path::new(SYSFS);
    if let Some(cpus) = &o.kernel_cpus {
        let mask = list_to_mask(cpus)?;
        let queues = list(root, dev)?;
        if queues.is_empty() {
            return Err("no foresight workqueue (is a device there?)"
                .to_string()
                .into());
        }
        set(&queues, &mask)?;
    }
    let queues: Vec<Queue> = list(root, dev)?.into_iter().map(|(_, q)| q).collect();
    if o.json {
        println!(
            "{}",
            serde_json::to_string(&queues).map_err(|e| e.to_string())?
        );
    } else {
        for q in &queues {
            println!("{:<32} {:<8} {:<10} cpus {}", q.name, q.kind, q.dev, q.cpus);
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_masks_and_lists() {
        assert_eq!(
            parse_name("fsfetch-253:3.17"),
            Some((
                "fsfetch",
                DevNum {
                    major: 253,
                    minor: 3
                }
            ))
        );
        assert_eq!(parse_name("kblockd"), None);
        assert_eq!(parse_name("fsd-253:3"), None);
        assert_eq!(parse_name("other-253:3.1"), None);
        assert_eq!(list_to_mask("1").unwrap(), "2");
        assert_eq!(list_to_mask("0-3,6").unwrap(), "4f");
        assert_eq!(list_to_mask("8").unwrap(), "100");
        assert!(list_to_mask("3-1").is_err());
        assert!(list_to_mask("").is_err());
        assert!(list_to_mask("x").is_err());
        assert_eq!(mask_to_list("4f\n"), "0-3,6");
        assert_eq!(mask_to_list("00000003"), "0-1");
        assert_eq!(mask_to_list("1,00000001"), "0,32");
        for l in ["0", "1", "0-1", "2,5-7,9"] {
            assert_eq!(mask_to_list(&list_to_mask(l).unwrap()), l);
        }
    }

    #[test]
    fn lists_and_sets_the_modules_queues() {
        let root = std::env::temp_dir().join(format!("fs-placement-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for n in ["fsd-253:3.1", "fsfetch-253:3.2", "fsd-253:4.3", "kblockd"] {
            fs::create_dir_all(root.join(n)).unwrap();
            fs::write(root.join(n).join("cpumask"), "3\n").unwrap();
        }
        let all = list(&root, None).unwrap();
        assert_eq!(all.len(), 3);
        let one = list(
            &root,
            Some(DevNum {
                major: 253,
                minor: 3,
            }),
        )
        .unwrap();
        assert_eq!(
            one.iter().map(|q| q.1.kind.as_str()).collect::<Vec<_>>(),
            ["fsd", "fsfetch"]
        );
        set(&one, "2").unwrap();
        let after = list(&root, None).unwrap();
        assert_eq!(
            after.iter().map(|q| q.1.cpus.as_str()).collect::<Vec<_>>(),
            ["1", "0-1", "1"]
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
