// SPDX-License-Identifier: GPL-2.0
//! Where the daemon's model training runs: its training threads in a
//! cgroup (v2) of their own, with a CPU limit (the host's model CPU
//! budget) and a CPU set, and the training of devices with little I/O
//! paused.
//!
//! The daemon moves itself into `--training-cgroup DIR` and makes
//! `DIR/training` a threaded cgroup (threads of one process can only be
//! split among the cgroups of a threaded subtree whose root holds the
//! process); every training thread puts itself there when it starts.

use std::fs;
use std::path::{Path, PathBuf};

/// The training options of `foresight daemon`.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// A cgroup (v2) directory for the daemon; its training threads go to
    /// DIR/training, with the limits below
    #[arg(long, value_name = "DIR")]
    pub training_cgroup: Option<String>,
    /// The host's model CPU budget: the training threads together get at
    /// most this percent of one CPU (cpu.max; over 100 for several)
    #[arg(long, value_name = "PCT", requires = "training_cgroup",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub model_cpu_pct: Option<u32>,
    /// The CPUs training runs on (cpuset.cpus, a list like 1 or 2-3)
    #[arg(long, value_name = "LIST", requires = "training_cgroup")]
    pub model_cpus: Option<String>,
    /// A device whose traced accesses fall under this many per second has
    /// its model's training paused until they come back
    #[arg(long, default_value_t = 10.0, value_name = "N")]
    pub train_min_rate: f64,
}

/// The options' defaults (for tests).
#[cfg(test)]
pub fn defaults() -> Opts {
    #[derive(clap::Parser)]
    struct W {
        #[command(flatten)]
        t: Opts,
    }
    <W as clap::Parser>::parse_from(["daemon"]).t
}

/// The cgroup files the setup writes, in order: (path, contents).
pub fn plan(dir: &Path, pid: u32, cpu_pct: Option<u32>, cpus: Option<&str>) -> Vec<(PathBuf, String)> {
    let training = dir.join("training");
    let mut v = Vec::new();
    if let Some(parent) = dir.parent() {
        v.push((parent.join("cgroup.subtree_control"), "+cpu +cpuset".to_string()));
    }
    v.push((dir.join("cgroup.procs"), pid.to_string()));
    v.push((training.join("cgroup.type"), "threaded".to_string()));
    v.push((dir.join("cgroup.subtree_control"), "+cpu +cpuset".to_string()));
    if let Some(p) = cpu_pct {
        v.push((training.join("cpu.max"), format!("{} 100000", u64::from(p) * 1000)));
    }
    if let Some(c) = cpus {
        v.push((training.join("cpuset.cpus"), c.to_string()));
    }
    v
}

/// Sets the cgroup up and makes every training thread join
/// `DIR/training`; returns that directory.
pub fn setup(o: &Opts) -> Result<Option<PathBuf>, String> {
    let Some(dir) = &o.training_cgroup else {
        return Ok(None);
    };
    if let Some(c) = &o.model_cpus {
        super::placement::list_to_mask(c)?;
    }
    let dir = Path::new(dir);
    let training = dir.join("training");
    fs::create_dir_all(&training).map_err(|e| format!("{}: {e}", training.display()))?;
    for (path, text) in plan(dir, std::process::id(), o.model_cpu_pct, o.model_cpus.as_deref()) {
        fs::write(&path, &text).map_err(|e| format!("{}: {text}: {e}", path.display()))?;
    }
    let threads = training.join("cgroup.threads");
    foresight_predict::gru::on_training_thread(move || {
        // SAFETY: gettid takes nothing and cannot fail.
        let tid = unsafe { libc::gettid() };
        let _ = fs::write(&threads, tid.to_string());
    });
    Ok(Some(training))
}

/// Whether a device's training runs, from its access rate: paused under
/// `min` accesses per second, resumed at `min` or more (a smoothed rate,
/// so a pause between two bursts does not stop it).
#[derive(Clone, Copy, Debug, Default)]
pub struct Pacer {
    rate: f64,
    paused: bool,
}

impl Pacer {
    /// `accesses` over the last `dt_s` seconds; returns `Some(paused)` when
    /// the state changes.
    pub fn sample(&mut self, accesses: u64, dt_s: f64, min: f64) -> Option<bool> {
        if dt_s <= 0.0 {
            return None;
        }
        let r = accesses as f64 / dt_s;
        self.rate = 0.8 * self.rate + 0.2 * r;
        let paused = self.rate < min;
        (paused != self.paused).then(|| {
            self.paused = paused;
            paused
        })
    }

    /// The smoothed rate (accesses per second).
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup_plan() {
        let p = plan(Path::new("/sys/fs/cgroup/fsd"), 42, Some(30), Some("1"));
        let w: Vec<(String, &str)> = p
            .iter()
            .map(|(a, b)| (a.display().to_string(), b.as_str()))
            .collect();
        assert_eq!(
            w,
            vec![
                ("/sys/fs/cgroup/cgroup.subtree_control".into(), "+cpu +cpuset"),
                ("/sys/fs/cgroup/fsd/cgroup.procs".into(), "42"),
                ("/sys/fs/cgroup/fsd/training/cgroup.type".into(), "threaded"),
                ("/sys/fs/cgroup/fsd/cgroup.subtree_control".into(), "+cpu +cpuset"),
                ("/sys/fs/cgroup/fsd/training/cpu.max".into(), "30000 100000"),
                ("/sys/fs/cgroup/fsd/training/cpuset.cpus".into(), "1"),
            ]
        );
    }

    #[test]
    fn pacing_pauses_a_quiet_device_and_resumes_it() {
        let mut p = Pacer::default();
        // Busy: 100/s for a while; it runs (no change from running).
        for _ in 0..10 {
            assert_eq!(p.sample(20, 0.2, 10.0), None);
        }
        // Quiet: paused once the smoothed rate falls under 10/s.
        let mut paused_after = None;
        for k in 0..30 {
            if p.sample(0, 0.2, 10.0) == Some(true) {
                paused_after = Some(k);
                break;
            }
        }
        assert!(paused_after.is_some_and(|k| k > 2), "{paused_after:?}");
        // Back: resumed.
        let resumed = (0..10).any(|_| p.sample(40, 0.2, 10.0) == Some(false));
        assert!(resumed && p.rate() > 10.0);
    }
}
