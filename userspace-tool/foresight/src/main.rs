// SPDX-License-Identifier: GPL-2.0
//! `foresight`: the userspace helper of the dm-foresight target.
//!
//! It talks to the kernel over the generic netlink family "foresight"
//! (Documentation/netlink/specs/foresight.yaml): device status, access
//! traces, the dirty-block log, predictions and run-time policy.

mod blk;
mod dmctl;
mod commands;
mod dev;
mod nbd;
mod nl;
mod uapi;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{dirty::Epoch, exit, policy::Policy, predict::Kind, Failure};

const DEV_HELP: &str = "A foresight device: a device-mapper name (vm1), /dev/mapper/NAME, \
a block device path (/dev/dm-3) or MAJOR:MINOR";

#[derive(Parser, Debug)]
#[command(
    name = "foresight",
    version,
    about = "Control the dm-foresight device-mapper target over generic netlink",
    after_help = "DEV is a device-mapper name (vm1), /dev/mapper/NAME, a block device path \
(/dev/dm-3) or MAJOR:MINOR.\n\nExit status: 0 success, 1 error, 2 usage error, \
3 `dirty dump` of an epoch that is not fully tracked (copy everything)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show the state of one foresight device, or of all
    Status {
        #[arg(help = DEV_HELP)]
        dev: Option<String>,
        /// Print a JSON array of objects
        #[arg(long)]
        json: bool,
        /// The running daemon's state file (its --state-file), for the
        /// predictor serving each device and its live scores
        #[arg(long, default_value = commands::daemon::STATE_FILE, value_name = "FILE")]
        state_file: String,
    },
    /// Record or replay access traces
    #[command(subcommand)]
    Trace(TraceCmd),
    /// Read or rotate the dirty-block log
    #[command(subcommand)]
    Dirty(DirtyCmd),
    /// Push predicted accesses
    #[command(subcommand)]
    Predict(PredictCmd),
    /// Set run-time parameters
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Learn access patterns from live traces and push predictions
    Daemon(commands::daemon::Opts),
    /// Replay trace files through the predictors and a cache model, offline,
    /// next to no prefetch and readahead
    Eval(commands::eval::Opts),
    /// The regions of a device most likely to be accessed soon, hottest
    /// first, as `migrate --order` reads them
    Heat(commands::heat::Opts),
    /// Live-migrate foresight devices to block devices or NBD exports (pre-copy)
    Migrate(commands::migrate::Opts),
    /// A foreshadow device's hydration: status, wait, hints
    Shadow(commands::shadow::Opts),
    /// The host's budgets for the devices' caches and background bandwidth:
    /// show or set them
    Budget(commands::budget::Opts),
    /// Read miss-ratio curves of traces (sampled, checked against exact)
    /// and a cache total shared by them against an equal split
    Mrc(commands::mrc::Opts),
    /// The CPUs the module's kernel workers run on: show or set them
    Placement(commands::placement::Opts),
    /// The switchover guard of `migrate` (internal)
    #[command(hide = true)]
    MigrateGuard,
}

#[derive(Subcommand, Debug)]
enum TraceCmd {
    /// Record the access trace of a device to a file
    Record {
        #[arg(help = DEV_HELP)]
        dev: String,
        /// The trace file ("-" for standard output)
        #[arg(short, long, value_name = "FILE")]
        output: String,
        /// Stop after this many seconds
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Stop after this many records
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Replay the reads (and optionally writes) of a trace file on a block device
    Replay {
        /// The trace file
        file: String,
        /// The block device to issue the I/O to (opened with O_DIRECT)
        blockdev: String,
        /// Timing scale: 2.0 replays twice as fast as recorded
        #[arg(long, default_value_t = 1.0, conflicts_with = "no_timing")]
        speed: f64,
        /// Issue the I/O as fast as possible
        #[arg(long)]
        no_timing: bool,
        /// Also replay writes (DESTROYS the data in the written ranges: zeros are written)
        #[arg(long)]
        allow_writes: bool,
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
        /// An oracle for benchmarks: push the trace's own upcoming reads to
        /// this foresight device as predictions (probability 1)
        #[arg(long, value_name = "DEV")]
        oracle: Option<String>,
        /// How many reads ahead the oracle predicts (in batches this size)
        #[arg(long, value_name = "N", default_value_t = 32, requires = "oracle",
              value_parser = clap::value_parser!(u32).range(1..))]
        oracle_ahead: u32,
        /// Every this many seconds, the reads' mean latency and (on a
        /// foresight device) the cache's hit rate
        #[arg(long, value_name = "SECS")]
        interval_s: Option<f64>,
        /// Draw the hit rate and read latency over time into this PNG
        /// (slices of --interval-s, default 1 s)
        #[arg(long, value_name = "FILE.png")]
        plot: Option<String>,
        /// Count the reads faster than this (microseconds): where the slow
        /// ones go to a remote disk, the fraction served locally
        #[arg(long, value_name = "US")]
        fast_us: Option<f64>,
    },
}

#[derive(Subcommand, Debug)]
enum DirtyCmd {
    /// Print the dirty extents of an epoch, one `start length` line each (in sectors)
    Dump {
        #[arg(help = DEV_HELP)]
        dev: String,
        /// Which epoch
        #[arg(long, value_enum, default_value = "current")]
        epoch: Epoch,
        /// Print {"epoch":N,"state":"...","extents":[[start,len],...]}
        #[arg(long)]
        json: bool,
    },
    /// Start a new epoch; prints its number
    Rotate {
        #[arg(help = DEV_HELP)]
        dev: String,
        /// Rotate only if epoch N is the current one (refused if the log has moved on)
        #[arg(long, value_name = "N")]
        expect: Option<u64>,
        /// Rotate even if a copy tool owns the device's rotation
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum PredictCmd {
    /// Push `start_sector length_sectors probability` lines (stdin or --file)
    Push {
        #[arg(help = DEV_HELP)]
        dev: String,
        /// Read the ranges from this file instead of standard input
        #[arg(long, value_name = "F")]
        file: Option<String>,
        /// What the predictions are about
        #[arg(long, value_enum, default_value = "read")]
        kind: Kind,
        /// Time in which the accesses are expected, in ms (kernel default: 1000)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        horizon_ms: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Set parameters; the others keep their values
    Set {
        #[arg(help = DEV_HELP)]
        dev: String,
        #[command(flatten)]
        policy: Policy,
    },
    /// The running daemon's policy engine: switch its policy (fair,
    /// latency, throughput, predicted, or off), or show its last decision
    Engine {
        /// The policy; none: show the engine's state
        #[arg(value_name = "POLICY")]
        policy: Option<String>,
        /// The daemon's state file
        #[arg(long, default_value = commands::daemon::STATE_FILE, value_name = "FILE")]
        state_file: String,
        /// Seconds to wait for the daemon to decide under the new policy
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait_s: u64,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

fn dispatch(cli: Cli) -> commands::CmdResult {
    match cli.cmd {
        Cmd::Status {
            dev,
            json,
            state_file,
        } => commands::status::run(dev.as_deref(), json, &state_file),
        Cmd::Trace(TraceCmd::Record {
            dev,
            output,
            duration,
            count,
        }) => commands::trace::record(&dev, &output, duration, count),
        Cmd::Trace(TraceCmd::Replay {
            file,
            blockdev,
            speed,
            no_timing,
            allow_writes,
            json,
            oracle,
            oracle_ahead,
            interval_s,
            plot,
            fast_us,
        }) => commands::replay::run(&commands::replay::Opts {
            file: &file,
            target: &blockdev,
            speed,
            no_timing,
            allow_writes,
            oracle: oracle.as_deref().map(|d| (d, oracle_ahead as usize)),
            json,
            interval_s,
            plot: plot.as_deref(),
            fast_us,
        }),
        Cmd::Dirty(DirtyCmd::Dump { dev, epoch, json }) => commands::dirty::dump(&dev, epoch, json),
        Cmd::Dirty(DirtyCmd::Rotate { dev, expect, force }) => {
            commands::dirty::rotate(&dev, expect, force)
        }
        Cmd::Predict(PredictCmd::Push {
            dev,
            file,
            kind,
            horizon_ms,
        }) => commands::predict::run(&dev, file.as_deref(), kind, horizon_ms),
        Cmd::Policy(PolicyCmd::Set { dev, policy }) => commands::policy::set(&dev, &policy),
        Cmd::Policy(PolicyCmd::Engine {
            policy,
            state_file,
            wait_s,
            json,
        }) => commands::engine::run(
            policy.as_deref(),
            &state_file,
            json,
            std::time::Duration::from_secs(wait_s),
        ),
        Cmd::Daemon(opts) => commands::daemon::run(&opts),
        Cmd::Eval(opts) => commands::eval::run(&opts),
        Cmd::Heat(opts) => commands::heat::run(&opts),
        Cmd::Migrate(opts) => commands::migrate::run(&opts),
        Cmd::Shadow(opts) => commands::shadow::run(&opts),
        Cmd::Budget(opts) => commands::budget::run(&opts),
        Cmd::Mrc(opts) => commands::mrc::run(&opts),
        Cmd::Placement(opts) => commands::placement::run(&opts),
        Cmd::MigrateGuard => Ok(commands::migrate::guard::run()),
    }
}

fn main() -> ExitCode {
    // Before any thread: the recurrent model's training stays in its thread.
    foresight_predict::gru::single_threaded_candle();
    let cli = Cli::parse();
    if let Cmd::Policy(PolicyCmd::Set { policy, .. }) = &cli.cmd {
        if policy.is_empty() {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            cmd.build();
            let set = cmd
                .find_subcommand_mut("policy")
                .and_then(|c| c.find_subcommand_mut("set"))
                .expect("policy set");
            set.error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "give at least one parameter to set",
            )
            .exit();
        }
    }
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("foresight: {e}");
            match e {
                Failure::Nl(_) | Failure::Msg(_) => exit::ERROR,
            }
        }
    };
    ExitCode::from(code as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Parses `foresight` followed by the words of `line`.
    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("foresight").chain(line.split_whitespace()))
    }

    #[test]
    fn command_lines() {
        assert!(matches!(
            parse("status").unwrap().cmd,
            Cmd::Status {
                dev: None,
                json: false,
                ..
            }
        ));
        assert!(matches!(
            parse("status vm1 --json").unwrap().cmd,
            Cmd::Status {
                dev: Some(_),
                json: true,
                ..
            }
        ));
        let c = parse("dirty dump vm1 --epoch previous").unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Dirty(DirtyCmd::Dump {
                epoch: Epoch::Previous,
                ..
            })
        ));
        assert!(parse("dirty dump vm1 --epoch old").is_err());
        let c = parse("trace record vm1 -o t.txt --duration 2.5 --count 9").unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Trace(TraceCmd::Record {
                duration: Some(_),
                count: Some(9),
                ..
            })
        ));
        assert!(parse("trace record vm1").is_err());
        assert!(parse("trace replay t /dev/x --speed 2 --no-timing").is_err());
        let c = parse("trace replay t /dev/x --no-timing --allow-writes --json").unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Trace(TraceCmd::Replay {
                no_timing: true,
                allow_writes: true,
                json: true,
                ..
            })
        ));
        let c = parse("predict push vm1 --kind write --horizon-ms 50").unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Predict(PredictCmd::Push {
                kind: Kind::Write,
                horizon_ms: Some(50),
                ..
            })
        ));
        assert!(parse("predict push vm1 --horizon-ms 0").is_err());
        let c = parse("daemon").unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Daemon(commands::daemon::Opts {
                interval_ms: 200,
                max_predictions: 4096,
                ..
            })
        ));
        let c = parse("daemon vm1 253:4 --min-probability 0.5 --log-file l").unwrap();
        let Cmd::Daemon(commands::daemon::Opts { devs, .. }) = c.cmd else {
            panic!()
        };
        assert_eq!(devs, vec!["vm1", "253:4"]);
    }

    #[test]
    fn policy_command_line() {
        let c = parse("policy set vm1").unwrap();
        let Cmd::Policy(PolicyCmd::Set { policy, .. }) = c.cmd else {
            panic!()
        };
        assert!(policy.is_empty(), "refused in main()");
        let c = parse("policy set vm1 --adaptive false --w-io 3 --max-memory-kb 1024").unwrap();
        let Cmd::Policy(PolicyCmd::Set { policy, .. }) = c.cmd else {
            panic!()
        };
        assert_eq!(policy.adaptive, Some(false));
        assert_eq!(policy.w_io, Some(3));
        assert_eq!(policy.max_memory_kb, Some(1024));
        assert!(parse("policy set vm1 --level 101").is_err());
        assert!(parse("policy set vm1 --adaptive maybe").is_err());
        assert!(parse("policy set vm1 --trace-rate 0").is_ok());
    }

    #[test]
    fn policy_cache_command_line() {
        let c = parse(
            "policy set vm1 --cache-mb 256 --critical-ppm 900000 --predictive-ppm 400000 \
             --min-ppm 20000 --prefetch-kbps 10240 --prefetch-inflight 16 --load-limit 4 \
             --idle-ms 50",
        )
        .unwrap();
        let Cmd::Policy(PolicyCmd::Set { policy, .. }) = c.cmd else {
            panic!()
        };
        assert_eq!(policy.cache_mb, Some(256));
        assert_eq!(policy.critical_ppm, Some(900_000));
        assert_eq!(policy.predictive_ppm, Some(400_000));
        assert_eq!(policy.min_ppm, Some(20_000));
        assert_eq!(policy.prefetch_kbps, Some(10240));
        assert_eq!(policy.prefetch_inflight, Some(16));
        assert_eq!(policy.load_limit, Some(4));
        assert_eq!(policy.idle_ms, Some(50));
        assert_eq!(policy.level, None);
        assert!(parse("policy set vm1 --cache-mb 0").is_ok());
        assert!(parse("policy set vm1 --cache-mb 65536").is_ok());
        assert!(parse("policy set vm1 --cache-mb 65537").is_err());
        assert!(parse("policy set vm1 --critical-ppm 1000001").is_err());
        assert!(parse("policy set vm1 --min-ppm 1000000").is_ok());
        assert!(parse("policy set vm1 --prefetch-inflight 0").is_err());
        assert!(parse("policy set vm1 --prefetch-inflight 257").is_err());
    }
}
