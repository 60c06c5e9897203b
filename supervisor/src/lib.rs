//! forkd-supervisor: runs forkd (or any daemon) as its child, watches it from the outside, and
//! restarts or recycles it, without ever acting on evidence it could not gather.
//!
//! # Theory of operation
//!
//! The supervisor is one single-threaded process: a state machine around one `poll` with one
//! deadline (as s6-supervise and runsv are). It is built on the same process template as
//! forkd, the crate `forkd_daemon`: signals arrive through its signalfd (`signals`), children
//! are reaped by its `waitpid` loop (`reap`), started clean by `exec::start_clean`, the child's
//! tree is sampled with `procfs`, restarts back off with `backoff`, and the status file is
//! written with `atomic`. The supervisor is a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphans
//! of the child are re-parented to it and reaped, so there is never a zombie, and at exit it
//! ends every descendant it still has.
//!
//! The child runs in its own process group with default signal dispositions, an empty signal
//! mask, `PR_SET_PDEATHSIG=SIGTERM`, fds 0-2 only, `NOTIFY_SOCKET` pointing at the
//! supervisor's own notify socket and (with `--watchdog`) `WATCHDOG_USEC`. With `--listen`
//! (or sockets the supervisor itself received through `LISTEN_FDS`) the supervisor holds the
//! listening sockets for its whole life and passes them to every child as fds 3.. with
//! `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` (the child's own pid, set between fork and
//! exec by `forkd_daemon::exec::spawn_with_fds`): a restart refuses no connection.
//!
//! ## States and events
//!
//! Each cell names the function of `machine::Supervisor` that handles it; `-` means the
//! event is ignored in that state.
//!
//! | state \ event | child exited | ready | unhealthy | over a limit | deadline | TERM/INT | HUP/USR1 | spawned |
//! |---|---|---|---|---|---|---|---|---|
//! | **Starting** (waiting for readiness) | `schedule_restart` | `mark_ready` | - | `recycle` | `recycle_by_restart` (not ready in time) | `begin_stop` | `forward` | - |
//! | **Running** (ready; probes count) | `schedule_restart` | - | `recycle_by_restart` | `recycle` | - | `begin_stop` | `forward` | - |
//! | **Recycling** (TERM sent, will restart) | `schedule_restart` | - | - | - | `kill_now` (SIGKILL to the group) | `begin_stop` | `forward` | - |
//! | **Backoff** (no child) | - | - | - | - | `start_child` | `finish` (exit 0) | - (logged) | `spawned` (Starting, or the next restart) |
//! | **Stopping** (TERM sent, will exit) | `finish_stop` (exit 0) | - | - | - | `kill_now` | `kill_now` | - (logged) | - |
//!
//! Each turn of the loop waits, then gathers every input of the turn (notify messages,
//! signals and reaped children, probe outcomes, resource samples, the configuration read again
//! on HUP, expired timers) before anything changes, then steps the machine with each. A step
//! books evidence, which may amount to an event of this table, and the event's cell changes
//! the state. What must happen to processes and files it returns as `machine::Effect`s (spawn,
//! probe, signal, kill a group, end leftovers, tell systemd, write the status, sweep), which
//! `Supervisor::perform` alone carries out; a spawn's outcome comes back as the input
//! *spawned*. So each cell, and any sequence of inputs, is tested without a process
//! (`every_cell_of_the_table`).
//!
//! `schedule_restart` exits 100 when the child exited 100 (permanent failure: s6's
//! convention), else takes one restart from the budget (exit 111 with "giving up: N failed
//! starts in a row" when it is spent: a run that never became ready or was shorter than
//! `--stable-after` is a failed start, a stable run resets the count; an optional
//! `--restart-window` adds "N restarts within W") and enters Backoff with the next delay:
//! `--backoff-base` doubling to `--backoff-cap`, ±20 % jitter, reset after a stable run.
//! `recycle` sends SIGHUP (with `--recycle hup`; a second limit hit within two slope windows
//! escalates to a restart) or TERM then a fresh start. Evidence for the events:
//!
//! - *ready*: `READY=1` from the child's process group on the notify socket, or (readiness
//!   `port`, the default when a port is known) the port accepting a connection on a listening
//!   socket that is the child's own (its inode is among the fds of the child's tree).
//! - *deadline*: a deadline that judges the child (the ready timeout, the watchdog) never runs
//!   while the supervisor cannot see: the ready timeout is suspended while the probe cannot
//!   observe, and both are moved back by the time the supervisor itself was not running (its
//!   loop woke later than planned), each logged (incident 001 again, issue 10).
//! - *unhealthy*: `--health-threshold` failed HTTP probes in a row, a missed `WATCHDOG=1`, or a
//!   `RELOADING=1` not followed by `READY=1` within `--ready-timeout`. A probe that failed for
//!   the supervisor's own reasons (EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL, or the
//!   supervisor not being scheduled while the timeout ran) is "cannot observe": logged once,
//!   counted, shown in the status, and never counted against the child. Three `/dev/null` fds
//!   are held in reserve so that a full fd table can still write the status and start or stop
//!   the child; probes never borrow them.
//! - *over a limit*: a resource sample of the child's whole tree (fds, RSS, PSS, processes,
//!   zombies, and TCP sockets of its port by state) above a level limit, or growing faster
//!   than a slope limit (least squares over `--slope-window`). Every sample over a limit is
//!   counted (`failcnt`, as in `/proc/user_beancounters`) and the highest value kept
//!   (`maxheld`). A level at 80 % of its limit is logged once as a warning before any action
//!   (re-armed below 70 %), so the operator hears of trouble before the recycle.
//!
//! ## Signals
//!
//! | signal | effect |
//! |---|---|
//! | SIGTERM, SIGINT, SIGQUIT | SIGTERM to the child; after `--stop-timeout` SIGKILL to its process group; then exit 0. A second one kills at once. |
//! | SIGHUP | re-read the supervisor's own configuration (applied at once, or at the child's next start, or logged as needing a restart), then forwarded to the child (forkd reloads its configuration and replaces its workers) |
//! | SIGUSR1 | forwarded to the child (forkd reopens its access log) |
//! | SIGCHLD | reap every ended child, orphans included (`waitpid(-1, WNOHANG)` until none) |
//! | SIGPIPE | ignored; the child gets the default back |
//!
//! ## Exit codes
//!
//! 0 stopped by a signal; 1 the supervisor itself failed; 2 bad configuration; 100 the child
//! failed permanently (so a systemd unit with `RestartPreventExitStatus=100` stops too); 111
//! the restart budget is spent.
//!
//! ## Code map
//!
//! `config` (flags and the `[supervisor]` TOML section), `machine` (the state table, the
//! transition and its effects; `machine::run` the loop that gathers inputs and performs
//! effects), `timers` (every deadline), `child` (the only place that starts or signals processes), `notify` (the server side
//! of the notify protocol), `probe` (the non-blocking HTTP probe and its "cannot observe"
//! verdicts), `watch` (resource limits), `throttle` (the restart budget; the backoff is `forkd_daemon::backoff`), `reserve` (spare
//! fds), `status` and `metrics` (what the outside sees); durations and sizes are `forkd_daemon::units`.

// Raw system calls live in forkd-daemon, behind documented safe wrappers (or in nix).
#![forbid(unsafe_code)]

pub mod child;
pub mod config;
pub mod counters;
pub mod machine;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod reserve;
pub mod status;
pub mod throttle;
pub mod timers;
pub mod watch;

use clap::Parser;

use config::{Cli, Sub};

/// The whole program; returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging();
    match cli.sub {
        Some(Sub::Status {
            status_file,
            config,
            json,
        }) => print_status(status_file, config.as_deref(), json),
        None => supervise(&cli.run),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FORKD_SUPERVISOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The supervisor's lines share stderr with the child's: the prefix tells them apart.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .fmt_fields(tracing_subscriber::fmt::format::DefaultFields::new())
        .event_format(Prefixed)
        .init();
}

/// `forkd-supervisor: LEVEL message`, the format of forkd's own diagnostics.
struct Prefixed;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Prefixed
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        let tag = match level {
            tracing::Level::ERROR => "error: ",
            tracing::Level::WARN => "warning: ",
            _ => "",
        };
        write!(writer, "forkd-supervisor: {tag}")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

fn supervise(args: &config::RunArgs) -> i32 {
    let cfg = match config::load(args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return 2;
        }
    };
    let signals = match forkd_daemon::signals::SignalPipe::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("unable to install signal handlers: {e}");
            return machine::EXIT_FAILED;
        }
    };
    match machine::setup(cfg, args.clone()) {
        Ok(sup) => sup.run(&signals),
        Err(e) => {
            tracing::error!("{e}");
            machine::EXIT_FAILED
        }
    }
}

fn print_status(
    flag: Option<std::path::PathBuf>,
    config: Option<&std::path::Path>,
    json: bool,
) -> i32 {
    let path = match config::status_path(flag, config) {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!(
                "forkd-supervisor: no status file: pass --status-file PATH (or set status-file \
                 in the [supervisor] section of --config)"
            );
            return 2;
        }
        Err(e) => {
            eprintln!("forkd-supervisor: {e}");
            return 2;
        }
    };
    let st = match status::Status::read(&path) {
        Ok(st) => st,
        Err(e) => {
            eprintln!("forkd-supervisor: {e}");
            return 1;
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
    } else {
        let alive = std::path::Path::new(&format!("/proc/{}", st.supervisor_pid)).exists();
        print!("{}", st.summary(alive));
    }
    0
}
