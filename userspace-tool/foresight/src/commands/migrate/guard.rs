// SPDX-License-Identifier: GPL-2.0
//! The switchover guard: a process of its own that resumes the source
//! devices if the migration tool dies while they are suspended before the
//! switchover commits, and never after.
//!
//! The tool talks to it over the guard's standard input, one line each,
//! answered `ok`: `policy NAME LEVEL ADAPTIVE [WRITE_KBPS]` (a source's
//! log settings, and write limit, before the tool changed them), `suspend NAME...` (the guard suspends
//! these device-mapper devices itself, all at once, and answers `ok` or
//! `failed REASON`), `disarm` (the tool resumed them), `restored` (the
//! settings were put back), `commit` (the switchover committed: the guard
//! exits and never resumes).  End of input (the tool died, however) after a
//! `suspend` makes the guard resume the devices; before the commit it also
//! puts the log settings back.  As the guard runs the suspends, a tool that
//! dies during one cannot leave a suspend landing after the resume.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::dm;

pub struct Guard {
    child: Child,
    to: Option<ChildStdin>,
    from: BufReader<ChildStdout>,
}

impl Guard {
    /// Starts the guard. Call it before any netlink socket is open, so that
    /// the guard holds none (a rotation owner's socket must close when the
    /// tool dies; the helper's sockets are close-on-exec as well).
    pub fn start() -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("guard: {e}"))?;
        let mut child = Command::new(exe)
            .arg("migrate-guard")
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

    /// A source's log settings and write limit before the tool changes them.
    pub fn policy(
        &mut self,
        name: &str,
        level: u32,
        adaptive: bool,
        write_kbps: Option<u32>,
    ) -> Result<(), String> {
        let kbps = write_kbps.map(|k| format!(" {k}")).unwrap_or_default();
        self.say(&format!(
            "policy {name} {level} {}{kbps}",
            u8::from(adaptive)
        ))
    }

    /// The settings are back: nothing to restore.
    pub fn restored(&mut self) -> Result<(), String> {
        self.say("restored")
    }

    /// Suspends `names` (all at once); from now on the guard resumes them
    /// if the tool dies. An error names a suspend that failed (the others
    /// may have succeeded: resume them all).
    pub fn suspend(&mut self, names: &[&str]) -> Result<(), String> {
        let to = self.to.as_mut().ok_or("guard: gone")?;
        writeln!(to, "suspend {}", names.join(" "))
            .and_then(|_| to.flush())
            .map_err(|e| format!("guard: {e}"))?;
        let mut line = String::new();
        self.from
            .read_line(&mut line)
            .map_err(|e| format!("guard: {e}"))?;
        match line.trim() {
            "ok" => Ok(()),
            l => Err(l.strip_prefix("failed ").unwrap_or(l).to_string()),
        }
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

/// The guard process (`foresight migrate-guard`).
pub fn run() -> i32 {
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
    let mut ops = Real;
    serve(stdin.lock(), std::io::stdout().lock(), &mut ops)
}

/// What the guard does to devices.
pub trait Ops {
    fn suspend_all(&mut self, names: &[&str]) -> Vec<Result<(), String>>;
    fn resume(&mut self, name: &str) -> Result<(), String>;
    fn restore(
        &mut self,
        name: &str,
        level: u32,
        adaptive: bool,
        write_kbps: Option<u32>,
    ) -> Result<(), String>;
}

struct Real;

impl Ops for Real {
    fn resume(&mut self, name: &str) -> Result<(), String> {
        dm::resume(name)
    }

    fn suspend_all(&mut self, names: &[&str]) -> Vec<Result<(), String>> {
        dm::suspend_all(names)
    }

    fn restore(
        &mut self,
        name: &str,
        level: u32,
        adaptive: bool,
        write_kbps: Option<u32>,
    ) -> Result<(), String> {
        let p = crate::commands::policy::Policy {
            level: Some(level),
            adaptive: Some(adaptive),
            write_kbps,
            ..Default::default()
        };
        let dev = crate::dev::DevSpec::Name(name.to_string());
        let mut c = crate::nl::Client::connect().map_err(|e| e.to_string())?;
        c.request("policy-set", crate::uapi::cmd::POLICY_SET, p.attrs(&dev))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The guard's protocol: answers `input`'s lines on `out`; at the end of
/// input, undoes what the tool left. Returns the exit status.
pub fn serve(input: impl BufRead, mut out: impl Write, ops: &mut impl Ops) -> i32 {
    let _ = writeln!(out, "ready").and_then(|_| out.flush());
    let mut armed: Vec<String> = Vec::new();
    let mut policies: Vec<(String, u32, bool, Option<u32>)> = Vec::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["suspend", names @ ..] => {
                armed = names.iter().map(|s| s.to_string()).collect();
                let failed: Vec<String> = ops
                    .suspend_all(names)
                    .into_iter()
                    .filter_map(Result::err)
                    .collect();
                let answer = if failed.is_empty() {
                    "ok".to_string()
                } else {
                    format!("failed {}", failed.join("; "))
                };
                let _ = writeln!(out, "{answer}").and_then(|_| out.flush());
                continue;
            }
            ["disarm"] => armed.clear(),
            ["policy", name, level, adaptive, rest @ ..] if rest.len() <= 1 => {
                let (Ok(level), Ok(a)) = (level.parse(), adaptive.parse::<u8>()) else {
                    continue;
                };
                let kbps = match rest.first().map(|k| k.parse::<u32>()) {
                    None => None,
                    Some(Ok(k)) => Some(k),
                    Some(Err(_)) => continue,
                };
                policies.push((name.to_string(), level, a != 0, kbps));
            }
            ["restored"] => policies.clear(),
            ["commit"] => {
                let _ = writeln!(out, "ok").and_then(|_| out.flush());
                return 0;
            }
            _ => continue,
        }
        let _ = writeln!(out, "ok").and_then(|_| out.flush());
    }
    let mut status = 0;
    for d in &armed {
        match ops.resume(d) {
            Ok(()) => eprintln!(
                "foresight migrate-guard: the migration ended before its switchover committed; resumed {d}"
            ),
            Err(e) => {
                eprintln!("foresight migrate-guard: cannot resume {d}: {e}");
                status = 1;
            }
        }
    }
    for (name, level, adaptive, kbps) in &policies {
        if let Err(e) = ops.restore(name, *level, *adaptive, *kbps) {
            eprintln!("foresight migrate-guard: cannot restore the log settings of {name}: {e}");
            status = 1;
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        log: Vec<String>,
        fail: bool,
    }

    impl Ops for Fake {
        fn suspend_all(&mut self, names: &[&str]) -> Vec<Result<(), String>> {
            self.log.push(format!("suspend {}", names.join(" ")));
            names
                .iter()
                .map(|n| {
                    if *n == "bad" {
                        Err(format!("{n}: busy"))
                    } else {
                        Ok(())
                    }
                })
                .collect()
        }
        fn resume(&mut self, name: &str) -> Result<(), String> {
            self.log.push(format!("resume {name}"));
            if self.fail {
                Err("no such device".into())
            } else {
                Ok(())
            }
        }
        fn restore(
            &mut self,
            name: &str,
            level: u32,
            adaptive: bool,
            write_kbps: Option<u32>,
        ) -> Result<(), String> {
            self.log
                .push(format!("restore {name} {level} {adaptive} {write_kbps:?}"));
            Ok(())
        }
    }

    fn guard(input: &str, fake: &mut Fake) -> (i32, String) {
        let mut out = Vec::new();
        let st = serve(input.as_bytes(), &mut out, fake);
        (st, String::from_utf8(out).unwrap())
    }

    #[test]
    fn resumes_only_when_suspended_and_not_committed() {
        // The tool died with the sources suspended: every device resumed.
        let mut f = Fake::default();
        assert_eq!(
            guard("suspend vm1 vm2\n", &mut f),
            (0, "ready\nok\n".into())
        );
        assert_eq!(f.log, ["suspend vm1 vm2", "resume vm1", "resume vm2"]);
        // Died before suspending, or after an abort resumed them: nothing.
        let mut f = Fake::default();
        guard("", &mut f);
        guard("suspend vm1\ndisarm\n", &mut f);
        assert_eq!(f.log, ["suspend vm1"]);
        // Committed: never, whatever follows.
        let mut f = Fake::default();
        let (st, out) = guard(
            "policy vm1 40 1\nsuspend vm1\ncommit\nsuspend vm1\n",
            &mut f,
        );
        assert_eq!((st, out.as_str()), (0, "ready\nok\nok\nok\n"));
        assert_eq!(f.log, ["suspend vm1"]);
        // A failed suspend is reported; all are resumed at the end.
        let mut f = Fake::default();
        let (_, out) = guard("suspend vm1 bad\n", &mut f);
        assert_eq!(out, "ready\nfailed bad: busy\n");
        assert_eq!(f.log, ["suspend vm1 bad", "resume vm1", "resume bad"]);
        // Garbage is ignored; a failed resume is the exit status.
        let mut f = Fake {
            fail: true,
            ..Fake::default()
        };
        assert_eq!(guard("hello\npolicy x y z\nsuspend vm1 vm2\n", &mut f).0, 1);
    }

    #[test]
    fn settings_restored_unless_the_tool_did() {
        let mut f = Fake::default();
        guard("policy vm1 40 1\nsuspend vm1\n", &mut f);
        assert_eq!(
            f.log,
            ["suspend vm1", "resume vm1", "restore vm1 40 true None"]
        );
        // The write limit too (--on-stall throttle may have changed it).
        let mut f = Fake::default();
        guard("policy vm1 40 1 0\npolicy vm2 40 1 x\n", &mut f);
        assert_eq!(f.log, ["restore vm1 40 true Some(0)"]);
        // Died during the bulk pass (nothing suspended): the settings come back.
        let mut f = Fake::default();
        guard("policy vm1 70 0\n", &mut f);
        assert_eq!(f.log, ["restore vm1 70 false None"]);
        // Restored by the tool: nothing to do.
        let mut f = Fake::default();
        guard("policy vm1 70 0\nrestored\n", &mut f);
        assert!(f.log.is_empty());
    }
}
