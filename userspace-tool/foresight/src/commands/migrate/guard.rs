// SPDX-License-Identifier: GPL-2.0
//! The switchover guard: a process of its own that resumes the source
//! devices if the migration tool dies while they are suspended before the
//! switchover commits, and never after.
//!
//! The tool talks to it over the guard's standard input, one word a line,
//! each answered `ok`: `arm` (the sources are about to be suspended),
//! `disarm` (they were resumed), `commit` (the switchover committed: the
//! guard exits and never resumes).  End of input while armed (the tool
//! died, however) makes the guard run `dmsetup resume` on every device.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::dm;

pub struct Guard {
    child: Child,
    to: Option<ChildStdin>,
    from: BufReader<ChildStdout>,
}

impl Guard {
    /// Starts the guard for these device-mapper names. Call it before any
    /// netlink socket is open, so that the guard holds none (a rotation
    /// owner's socket must close when the tool dies).
    pub fn start(devices: &[String]) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("guard: {e}"))?;
        let mut child = Command::new(exe)
            .arg("migrate-guard")
            .args(devices)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the switchover guard: {e}"))?;
        let to = child.stdin.take().ok_or("guard: no stdin")?;
        let from = BufReader::new(child.stdout.take().ok_or("guard: no stdout")?);
        let mut g = Guard {
            child,
            to: Some(to),
            from,
        };
        g.expect("ready")?;
        Ok(g)
    }

    fn expect(&mut self, want: &str) -> Result<(), String> {
        let mut line = String::new();
        self.from
            .read_line(&mut line)
            .map_err(|e| format!("guard: {e}"))?;
        if line.trim() != want {
            return Err(format!(
                "guard: answered {:?}, wanted {want:?}",
                line.trim()
            ));
        }
        Ok(())
    }

    fn say(&mut self, word: &str) -> Result<(), String> {
        let to = self.to.as_mut().ok_or("guard: gone")?;
        writeln!(to, "{word}")
            .and_then(|_| to.flush())
            .map_err(|e| format!("guard: {e}"))?;
        self.expect("ok")
    }

    /// Before suspending: from now on the guard resumes if the tool dies.
    pub fn arm(&mut self) -> Result<(), String> {
        self.say("arm")
    }

    /// After resuming the sources (an abort).
    pub fn disarm(&mut self) -> Result<(), String> {
        self.say("disarm")
    }

    /// The commit point: the guard will never resume the sources.
    pub fn commit(mut self) -> Result<(), String> {
        self.say("commit")?;
        let _ = self.child.wait();
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Closing its input ends it (resuming if armed): wait for that.
        drop(self.to.take());
        let _ = self.child.wait();
    }
}

/// The guard process (`foresight migrate-guard DEV...`).
pub fn run(devices: &[String]) -> i32 {
    // The terminal's Ctrl-C goes to the whole process group; the guard
    // outlives the tool to do its job, so it ignores the usual stops.
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        let _ = signal_hook::flag::register(sig, std::sync::Arc::clone(&flag));
    }
    let stdin = std::io::stdin();
    serve(
        stdin.lock(),
        std::io::stdout().lock(),
        devices,
        |d: &str| {
            dm::resume(d)?;
            eprintln!(
                "foresight migrate-guard: the migration ended before its switchover committed; resumed {d}"
            );
            Ok(())
        },
    )
}

/// The guard's protocol: answers `input`'s words on `out`; at the end of
/// input while armed, `resume`s every device. Returns the exit status.
fn serve(
    input: impl BufRead,
    mut out: impl Write,
    devices: &[String],
    mut resume: impl FnMut(&str) -> Result<(), String>,
) -> i32 {
    let _ = writeln!(out, "ready").and_then(|_| out.flush());
    let mut armed = false;
    for line in input.lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "arm" => armed = true,
            "disarm" => armed = false,
            "commit" => {
                let _ = writeln!(out, "ok").and_then(|_| out.flush());
                return 0;
            }
            _ => continue,
        }
        let _ = writeln!(out, "ok").and_then(|_| out.flush());
    }
    if !armed {
        return 0;
    }
    let mut status = 0;
    for d in devices {
        if let Err(e) = resume(d) {
            eprintln!("foresight migrate-guard: cannot resume {d}: {e}");
            status = 1;
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(input: &str, fail: bool) -> (i32, String, Vec<String>) {
        let mut out = Vec::new();
        let mut resumed = Vec::new();
        let devs = ["vm1".to_string(), "vm2".to_string()];
        let st = serve(input.as_bytes(), &mut out, &devs, |d: &str| {
            resumed.push(d.to_string());
            if fail {
                Err("no such device".into())
            } else {
                Ok(())
            }
        });
        (st, String::from_utf8(out).unwrap(), resumed)
    }

    #[test]
    fn resumes_only_when_armed_and_not_committed() {
        // The tool died with the sources suspended: every device resumed.
        assert_eq!(
            guard("arm\n", false),
            (0, "ready\nok\n".into(), vec!["vm1".into(), "vm2".into()])
        );
        // Died before suspending, or after an abort resumed them: nothing.
        assert_eq!(guard("", false).2, Vec::<String>::new());
        assert_eq!(guard("arm\ndisarm\n", false).2, Vec::<String>::new());
        // Committed: never, whatever follows.
        let (st, out, r) = guard("arm\ncommit\narm\n", false);
        assert_eq!((st, out.as_str(), r.len()), (0, "ready\nok\nok\n", 0));
        // Garbage is ignored; a failed resume is the exit status.
        let (st, _, r) = guard("hello\narm\n", true);
        assert_eq!((st, r.len()), (1, 2));
    }
}
