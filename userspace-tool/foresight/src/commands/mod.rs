// SPDX-License-Identifier: GPL-2.0
//! The subcommands.

pub mod budget;
pub mod daemon;
pub mod dirty;
pub mod engine;
pub mod eval;
pub mod heat;
pub mod migrate;
pub mod mrc;
pub mod placement;
pub mod plot;
pub mod policy;
pub mod predict;
pub mod replay;
pub mod shadow;
pub mod status;
pub mod trace;
pub mod training;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::nl;

/// Exit statuses.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    // 2: bad command line (clap's own status).
    /// `dirty dump`: the epoch is not fully tracked; copy everything.
    pub const UNTRACKED: i32 = 3;
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Nl(#[from] nl::Error),
    #[error("{0}")]
    Msg(String),
}

impl From<String> for Failure {
    fn from(m: String) -> Self {
        Failure::Msg(m)
    }
}

/// The result of a command: its exit status.
pub type CmdResult = Result<i32, Failure>;

/// A protocol error about an answer of `op`.
pub fn bad_answer(op: &str, msg: impl fmt::Display) -> Failure {
    Failure::Nl(nl::Error::Protocol {
        op: op.to_string(),
        msg: msg.to_string(),
    })
}

/// Set by SIGINT and SIGTERM once [`stop_flag`] installed the handlers.
pub fn stop_flag() -> Result<Arc<AtomicBool>, Failure> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .map_err(|e| Failure::Msg(format!("cannot install a signal handler: {e}")))?;
    }
    Ok(flag)
}

pub fn stopped(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}

/// The wall clock, in milliseconds since the epoch: a migration's suspend
/// and the destination's resume (`shadow seed --json`) make its downtime
/// when both hosts' clocks agree, as in one test guest.
pub fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// `12345 (12.1 KiB)`-style sizes.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }
}
