//! forkd-loadgen: an HTTP/1.1 load generator that also watches the server from outside and says
//! whether its fds, memory and processes stayed flat.
//!
//! `engine` makes the load (epoll loops, closed or open loop, pipelined or not); `response`
//! frames responses; `request` builds what is sent; `stats` counts; `watch` samples the target's
//! process tree through `forkd_daemon::procfs` and judges flatness; `abuse` runs hostile clients
//! beside the load; `report` writes the summary, JSON, CSV and SVG, with `plot`'s labels and
//! latency percentiles; `progress` draws the live line; `compare` runs one workload against
//! several servers, alternating, and compares them. [`main`] wires them to the command line and
//! is the only place that exits.

// Raw system calls live in forkd-daemon, behind documented safe wrappers (or in nix).
#![forbid(unsafe_code)]

pub mod abuse;
pub mod compare;
pub mod cpu;
pub mod engine;
pub mod plot;
pub mod progress;
pub mod report;
pub mod request;
pub mod response;
pub mod stats;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use forkd_daemon::units;

use crate::abuse::{AbuseConfig, AbuseMode};
use crate::engine::{LoadConfig, Shared};
use crate::progress::{Bound, Live};
use crate::report::{Report, WatchReport};
use crate::request::WeightedPath;
use crate::stats::Tally;
use crate::watch::{Point, Tolerance};

/// Exit codes.
pub mod exit {
    pub const OK: i32 = 0;
    /// The run could not be made (bad target, cannot start threads, output not written).
    pub const FAILED: i32 = 1;
    /// A bad command line: clap's own errors, and the combinations [`Args::check`](super::Args::check)
    /// refuses, both before any load starts.
    pub const USAGE: i32 = 2;
    /// `--assert-flat` and something grew, the target died, or there was too little to judge.
    pub const NOT_FLAT: i32 = 3;
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "forkd-loadgen",
    version,
    about = "HTTP/1.1 load generator that also proves a server's fds and memory stay flat",
    long_about = "HTTP/1.1 load generator that also proves a server's fds and memory stay flat.\n\n\
Closed loop by default (-c connections, each sending its next request when the previous \
response ends); --rate R gives an open loop whose latencies run from each request's intended \
send time, so a stalled server shows up as latency (no coordinated omission). Only loopback \
targets unless --allow-remote.\n\n\
With --watch-pid PID it samples the process tree of PID from /proc every --interval (fds, RSS, \
PSS, processes, zombies, TCP sockets by state) and judges each metric flat or growing: a \
least-squares line through the samples after --warmup may rise over the run by at most the \
tolerance (after taking 3 standard errors off); and the tree, once settled after the load, must \
have no more fds than before and no zombies. --assert-flat turns a growing metric into exit \
code 3.",
    after_help = "Examples:\n  forkd-loadgen -c 16 -d 10s http://127.0.0.1:8080/bench/2k.html\n  \
forkd-loadgen --rate 2000 -c 64 -d 30s --json http://127.0.0.1:8080/\n  \
forkd-loadgen -c 8 -n 1000000 --new-conn --watch-pid $(pgrep -o forkd) --assert-flat --csv soak.csv --plot soak.svg http://127.0.0.1:8080/\n  \
forkd-loadgen -c 4 -d 20s --abuse slowloris --abuse-conns 200 http://127.0.0.1:8080/\n  \
forkd-loadgen -c 8 --pipeline 16 -d 10s http://127.0.0.1:8080/\n  \
forkd-loadgen -m POST --body form.txt -c 4 -d 5s http://127.0.0.1:8080/submit\n\n\
Compare servers (see forkd-loadgen compare --help):\n  \
forkd-loadgen compare -c 16,64 --reps 3 --baseline nginx nginx=http://127.0.0.1:8081/2k.html \\\n    \
forkd=http://127.0.0.1:8082/2k.html@'forkd --listen 127.0.0.1:8082 --root site'"
)]
// The field comments are `--help` text, where brackets mark optional parts.
#[allow(rustdoc::broken_intra_doc_links)]
pub struct Args {
    /// Target: http://HOST[:PORT][/PATH] (no TLS).
    pub url: String,

    /// Connections kept open (closed loop) or available (open loop).
    #[arg(short = 'c', long, default_value_t = 16)]
    pub connections: usize,

    /// Engine threads, each an epoll loop over its share of the connections [default: CPUs, at
    /// most the connections].
    #[arg(short = 't', long)]
    pub threads: Option<usize>,

    /// Run for this long (e.g. 500ms, 10s, 2m). Without --requests the default is 10s.
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many requests in total.
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,

    /// Open loop at this many requests per second in total.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Open a new connection for every request (sends Connection: close).
    #[arg(long)]
    pub new_conn: bool,

    /// A path to request, optionally weighted: /a.html:3 is sent three times as often as a path
    /// of weight 1. Repeatable; replaces the URL's path.
    #[arg(long = "path", value_parser = request::parse_weighted_path)]
    pub paths: Vec<WeightedPath>,

    /// An extra request header, "Name: value". Repeatable.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,

    /// Send HEAD instead of GET (the same as -m HEAD).
    #[arg(long)]
    pub head: bool,

    /// The request method: GET, POST, PUT, DELETE... (responses to HEAD have no body).
    #[arg(short = 'm', long, default_value = "GET", conflicts_with = "head")]
    pub method: String,

    /// Send this file as the body of every request, with its Content-Length.
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,

    /// Requests in flight on each connection (HTTP/1.1 pipelining, as wrk does with a script):
    /// written back to back, their responses matched in order. Closed loop, keep-alive only.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub pipeline: usize,

    /// No live progress line (it is drawn only when stdout is a terminal anyway).
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// A request (connect included) taking longer fails as a timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Allow a target outside loopback. Only load servers you own.
    #[arg(long)]
    pub allow_remote: bool,

    /// Sample the process tree of PID from /proc while the load runs.
    #[arg(long, value_name = "PID")]
    pub watch_pid: Option<i32>,

    /// Sampling interval of the time series.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    // The verdict's flags judge what --watch-pid samples: without it they would be ignored
    // silently (clap's `requires` looks only at flags given, not at defaults).
    /// Samples before this are left out of the flatness verdict (caches, lazy allocation).
    #[arg(long, default_value = "2s", value_parser = parse_duration, requires = "watch_pid")]
    pub warmup: Duration,

    /// Exit with code 3 unless every watched metric stayed flat.
    #[arg(long, requires = "watch_pid")]
    pub assert_flat: bool,

    /// Allowed growth of fds, processes, zombies and CLOSE_WAIT sockets over the run.
    #[arg(long, default_value_t = 0, requires = "watch_pid")]
    pub fd_tolerance: u64,

    /// Allowed growth of RSS and PSS over the run, in percent of their mean...
    #[arg(long, default_value_t = 5.0, requires = "watch_pid")]
    pub mem_tolerance_pct: f64,

    /// ...but never less than this many KiB.
    #[arg(long, default_value_t = 1024, requires = "watch_pid")]
    pub mem_tolerance_kb: u64,

    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,

    /// Write the time series to this CSV file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Draw throughput, fds, memory and processes over time, and latency by percentile, into
    /// this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// Run hostile clients beside the load. Repeatable.
    #[arg(long, value_enum)]
    pub abuse: Vec<AbuseMode>,

    /// Hostile connections per abuse mode.
    #[arg(long, default_value_t = 64, requires = "abuse")]
    pub abuse_conns: usize,

    /// Requests each slow reader pipelines.
    #[arg(long, default_value_t = 64, requires = "abuse")]
    pub abuse_pipeline: usize,
}

/// The fewest samples after the warm-up that a line can be fitted through
/// (`forkd_daemon::trend::linear_fit`).
const MIN_SAMPLES: u32 = 3;

impl Args {
    /// Refuses what clap cannot see: values out of range, and combinations that would only fail
    /// once the whole load had run. [`run`] calls it first; [`main`] before that, to exit
    /// [`exit::USAGE`].
    pub fn check(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err("--rate must be a positive number".into());
        }
        if self.interval.is_zero() {
            return Err("--interval must be more than 0".into());
        }
        check_workload(&Workload {
            pipeline: self.pipeline,
            new_conn: self.new_conn,
            rate: self.rate,
            method: &self.method,
            body: self.body.as_deref(),
        })?;
        if self.assert_flat && self.watch_pid.is_none() {
            return Err(
                "--assert-flat judges what --watch-pid samples: give --watch-pid PID".into(),
            );
        }
        // With a known duration, a warm-up that leaves too few samples is a certain "too
        // little to judge", and exit 3, at the end of the run.
        if let Some(d) = self.run_time().filter(|_| self.assert_flat) {
            let needed = self.warmup + self.interval * (MIN_SAMPLES - 1);
            if d < needed {
                return Err(format!(
                    "--assert-flat needs {MIN_SAMPLES} samples after the warm-up: --duration {} \
                     is less than --warmup {} + {} x --interval {}; run for -d {} or more, \
                     or shorten --warmup or --interval",
                    units::show_duration(d),
                    units::show_duration(self.warmup),
                    MIN_SAMPLES - 1,
                    units::show_duration(self.interval),
                    units::show_duration(needed),
                ));
            }
        }
        // The files are written after the load: a directory that does not exist would
        // throw the whole run away.
        for (flag, path) in [("--csv", &self.csv), ("--plot", &self.plot)] {
            if let Some(path) = path {
                check_dir(flag, path)?;
            }
        }
        Ok(())
    }

    /// The method sent: `-m`, or HEAD for `--head`.
    pub fn method(&self) -> &str {
        if self.head {
            "HEAD"
        } else {
            &self.method
        }
    }

    /// How long the load runs, when a duration bounds it: 10 s unless `-d` or `-n` says.
    fn run_time(&self) -> Option<Duration> {
        match (self.duration, self.requests) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d,
        }
    }
}

/// What shapes the requests, checked alike for one run and for `compare`.
pub(crate) struct Workload<'a> {
    pub pipeline: usize,
    pub new_conn: bool,
    pub rate: Option<f64>,
    pub method: &'a str,
    pub body: Option<&'a Path>,
}

/// Refuses request shapes that cannot work, each with the way out in the message.
pub(crate) fn check_workload(w: &Workload) -> Result<(), String> {
    if w.pipeline == 0 {
        return Err("--pipeline must be at least 1 (1: one request at a time)".into());
    }
    if w.pipeline > 1 && w.new_conn {
        return Err(format!(
            "--pipeline {} keeps requests in flight on one connection, --new-conn closes it after \
             each: drop one of them",
            w.pipeline
        ));
    }
    if w.pipeline > 1 && w.rate.is_some() {
        return Err(format!(
            "--pipeline {} is for the closed loop: with --rate, requests are sent when they are \
             due, one per idle connection; raise -c instead",
            w.pipeline
        ));
    }
    request::check_method(w.method)?;
    if let Some(body) = w.body {
        if !body.is_file() {
            return Err(format!("--body {}: no such file", body.display()));
        }
    }
    Ok(())
}

/// Refuses an output file whose directory does not exist: the file is written after the load,
/// and a typo would throw the whole run away.
pub(crate) fn check_dir(flag: &str, path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "{flag} {}: {} is not a directory",
            path.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// Durations are read as forkd reads them: `250ms`, `10s`, `2m`, `1h30m` (humantime) or a
/// plain number of seconds.
pub use forkd_daemon::units::parse_duration;

/// Process groups a second Ctrl-C kills before this process dies: the servers `compare`
/// started, each in a group of its own (so the terminal's Ctrl-C never reaches them).
pub(crate) static GROUPS_TO_KILL: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Ctrl-C stops the load and still reports, as wrk does; a second Ctrl-C kills, and takes
/// the process groups in [`GROUPS_TO_KILL`] with it, so an impatient user leaves no server
/// behind. Returns the flag the first one sets; installed once per process, however many
/// runs.
pub(crate) fn catch_interrupt() -> Arc<AtomicBool> {
    static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    INTERRUPTED
        .get_or_init(|| {
            use signal_hook::consts::SIGINT;
            let flag = Arc::new(AtomicBool::new(false));
            // signal-hook's handler only writes to a pipe; this thread reads it, so the
            // killing is done outside a signal handler, with no unsafe code.
            let watcher = signal_hook::iterator::Signals::new([SIGINT]).and_then(|mut signals| {
                let first = Arc::clone(&flag);
                std::thread::Builder::new()
                    .name("ctrl-c".into())
                    .spawn(move || {
                        for _ in signals.forever() {
                            if !first.swap(true, Ordering::SeqCst) {
                                continue;
                            }
                            let groups = GROUPS_TO_KILL.lock().unwrap_or_else(|e| e.into_inner());
                            for &group in groups.iter() {
                                let _ = nix::sys::signal::kill(
                                    nix::unistd::Pid::from_raw(-group),
                                    nix::sys::signal::Signal::SIGKILL,
                                );
                            }
                            // Dies of SIGINT, as without a handler, so a calling shell script
                            // stops too.
                            let _ = signal_hook::low_level::emulate_default_handler(SIGINT);
                            std::process::exit(130);
                        }
                    })
            });
            if watcher.is_err() {
                // No thread: the first Ctrl-C still stops the load, the second kills at once.
                use signal_hook::flag;
                let _ = flag::register_conditional_default(SIGINT, Arc::clone(&flag));
                let _ = flag::register(SIGINT, Arc::clone(&flag));
            }
            flag
        })
        .clone()
}

/// Runs the command line and returns the exit code.
pub fn main() -> i32 {
    if std::env::args_os().nth(1).is_some_and(|a| a == "compare") {
        return compare::main();
    }
    let args = Args::parse();
    if let Err(e) = args.check() {
        // In clap's words and with its exit code, like every other usage error.
        let _ = Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, e)
            .print();
        return exit::USAGE;
    }
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("forkd-loadgen: {e}");
            exit::FAILED
        }
    }
}

/// Runs one load as `args` say, prints the report and writes the files.
pub fn run(args: &Args) -> Result<i32, String> {
    args.check()?;
    let report = measure(args, progress::wanted(args.quiet).then(String::new))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.json()).expect("JSON of plain values")
        );
    } else {
        print!("{}", report.human());
    }
    if let Some(path) = &args.csv {
        forkd_daemon::atomic::write_atomic(path, report::csv(&report.series).as_bytes(), 0o644)
            .map_err(|e| format!("unable to write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let title = format!("forkd-loadgen {}", args.url);
        report::plot(path, &title, &report.series, &report.tally.latency)
            .map_err(|e| format!("unable to draw {}: {e}", path.display()))?;
    }
    // `check` made sure a watch report exists whenever a verdict is asked for.
    if args.assert_flat && !report.watch.as_ref().is_some_and(WatchReport::flat) {
        return Ok(exit::NOT_FLAT);
    }
    Ok(exit::OK)
}

/// Makes the load `args` describe (already checked), watching the target if asked, and returns
/// the report; prints nothing but the progress line, headed by `progress` when it is `Some`.
pub fn measure(args: &Args, progress: Option<String>) -> Result<Report, String> {
    let target = request::parse_target(&args.url, args.allow_remote).map_err(|e| e.to_string())?;
    let duration = args.run_time();
    let paths = if args.paths.is_empty() {
        vec![WeightedPath {
            path: target.path.clone(),
            weight: 1,
        }]
    } else {
        args.paths.clone()
    };
    let method = args.method();
    let body = match &args.body {
        Some(path) => Some(
            std::fs::read(path).map_err(|e| format!("unable to read {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let requests = paths
        .iter()
        .map(|p| {
            request::build_request(
                method,
                &p.path,
                &target.authority,
                &args.headers,
                args.new_conn,
                body.as_deref(),
            )
        })
        .collect();
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = args.threads.unwrap_or(cpus).clamp(1, args.connections);
    let cfg = Arc::new(LoadConfig {
        addr: target.addr,
        requests,
        head: method == "HEAD",
        schedule: request::schedule(&paths.iter().map(|p| p.weight).collect::<Vec<_>>()),
        connections: args.connections,
        threads,
        new_conn: args.new_conn,
        pipeline: args.pipeline,
        rate: args.rate,
        limit: args.requests,
        timeout: args.timeout,
    });
    let tolerance = Tolerance {
        count: args.fd_tolerance as f64,
        mem_fraction: args.mem_tolerance_pct / 100.0,
        mem_floor_kb: args.mem_tolerance_kb as f64,
    };
    let port = target.addr.port();
    let mut watch_error: Option<String> = None;
    let before = match args.watch_pid {
        Some(pid) => {
            Some(watch::sample(pid, port).map_err(|e| format!("unable to sample pid {pid}: {e}"))?)
        }
        None => None,
    };

    let interrupted = catch_interrupt();
    let shared = Arc::new(Shared::new(threads));
    let abuse_stop = Arc::new(AtomicBool::new(false));
    let abuse_threads: Vec<_> = args
        .abuse
        .iter()
        .map(|&mode| {
            let cfg = AbuseConfig {
                mode,
                addr: target.addr,
                authority: target.authority.clone(),
                path: paths[0].path.clone(),
                conns: args.abuse_conns,
                pipeline: args.abuse_pipeline.max(1),
            };
            let stop = abuse_stop.clone();
            std::thread::spawn(move || abuse::run(&cfg, &stop))
        })
        .collect();

    let start = Instant::now();
    let handles =
        engine::start(cfg, shared.clone()).map_err(|e| format!("unable to start the load: {e}"))?;
    let mut series = vec![Point {
        t: 0.0,
        tree: before.clone(),
        ..Point::default()
    }];
    let deadline = duration.map(|d| start + d);
    let mut next_tick = start + args.interval;
    let mut last = (0u64, 0.0f64);
    let bound = match (duration, args.requests) {
        (Some(d), _) => Bound::Time(d),
        (None, n) => Bound::Requests(n.unwrap_or(0)),
    };
    let mut live = Live::new(progress.is_some(), progress.unwrap_or_default(), bound);
    let mut next_draw = start;
    loop {
        let finished = handles.iter().all(|h| h.is_finished());
        let now = Instant::now();
        let over = deadline.is_some_and(|d| now >= d) || interrupted.load(Relaxed);
        if over {
            shared.stop.store(true, Relaxed);
        }
        if finished || over {
            break;
        }
        if now >= next_draw {
            let (responses, errors) = shared.totals();
            live.update(now - start, responses, errors, &shared.latency());
            next_draw = now + Duration::from_millis(100);
        }
        if now >= next_tick {
            let t = now.duration_since(start).as_secs_f64();
            let (responses, errors) = shared.totals();
            let rps = (responses - last.0) as f64 / (t - last.1).max(1e-9);
            last = (responses, t);
            let tree = match (args.watch_pid, &watch_error) {
                (Some(pid), None) => match watch::sample(pid, port) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        watch_error = Some(if procfs_gone(&e) {
                            format!("pid {pid} exited at {t:.1}s")
                        } else {
                            format!("unable to sample pid {pid} at {t:.1}s: {e}")
                        });
                        None
                    }
                },
                _ => None,
            };
            series.push(Point {
                t,
                responses,
                errors,
                rps,
                tree,
            });
            next_tick += args.interval;
            if next_tick < now {
                next_tick = now + args.interval;
            }
        }
        let mut sleep = next_tick
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(20));
        if let Some(d) = deadline {
            sleep = sleep.min(d.saturating_duration_since(Instant::now()));
        }
        std::thread::sleep(sleep);
    }
    let mut tally = Tally::new();
    for h in handles {
        let t = h
            .join()
            .map_err(|_| "a load thread panicked".to_string())?
            .map_err(|e| format!("load thread failed: {e}"))?;
        tally.merge(&t);
    }
    let elapsed = start.elapsed().as_secs_f64();
    live.finish();
    abuse_stop.store(true, Relaxed);
    let abuse: Vec<_> = abuse_threads
        .into_iter()
        .filter_map(|t| t.join().ok())
        .collect();

    // The final point: the whole run's counts; the tree as the load left it.
    let (responses, errors) = (tally.responses(), tally.error_count());
    let final_tree = match (args.watch_pid, &watch_error) {
        (Some(pid), None) => watch::sample(pid, port).ok(),
        _ => None,
    };
    series.push(Point {
        t: elapsed,
        responses,
        errors,
        rps: (responses - last.0.min(responses)) as f64 / (elapsed - last.1).max(1e-9),
        tree: final_tree,
    });

    let watch_report = args.watch_pid.map(|pid| {
        let trends = watch::trends(&series, args.warmup.as_secs_f64(), tolerance);
        let before_after = match (&before, &watch_error) {
            (Some(b), None) => match watch::settle(pid, port, b, Duration::from_secs(5)) {
                Ok(after) => Some(watch::before_after(b.clone(), after, tolerance)),
                Err(e) => {
                    watch_error = Some(format!("unable to sample pid {pid} after the load: {e}"));
                    None
                }
            },
            _ => None,
        };
        WatchReport {
            pid,
            warmup_s: args.warmup.as_secs_f64(),
            tolerance,
            trends,
            before_after,
            error: watch_error.clone(),
        }
    });

    Ok(Report {
        url: args.url.clone(),
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        rate: args.rate,
        connections: args.connections,
        threads,
        keep_alive: !args.new_conn,
        pipeline: args.pipeline,
        elapsed_s: elapsed,
        tally,
        series,
        watch: watch_report,
        abuse,
    })
}

fn procfs_gone(e: &std::io::Error) -> bool {
    forkd_daemon::procfs::is_gone(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses() {
        let a = Args::try_parse_from([
            "forkd-loadgen",
            "-c",
            "4",
            "--path",
            "/a:3",
            "--path",
            "/b",
            "--abuse",
            "slow-reader",
            "http://127.0.0.1:1/",
        ])
        .unwrap();
        assert_eq!(a.connections, 4);
        assert_eq!(a.paths.len(), 2);
        assert_eq!(a.abuse, vec![AbuseMode::SlowReader]);
        assert!(
            Args::try_parse_from(["forkd-loadgen", "--path", "nope", "http://127.0.0.1/"]).is_err()
        );
    }

    /// Every refusal that used to wait for the end of the load, or never came: refused by clap
    /// (`requires`) or by `check`, in either case before anything runs.
    #[test]
    fn combinations_are_refused_before_the_load() {
        let url = "http://127.0.0.1:9/";
        let refused_by_clap: &[&[&str]] = &[
            &["--assert-flat"],
            &["--warmup", "1s"],
            &["--fd-tolerance", "3"],
            &["--mem-tolerance-pct", "10"],
            &["--mem-tolerance-kb", "10"],
            &["--abuse-conns", "3"],
            &["--abuse-pipeline", "3"],
        ];
        for args in refused_by_clap {
            let argv = [&["forkd-loadgen"], *args, &[url]].concat();
            let err = Args::try_parse_from(&argv).unwrap_err();
            assert_eq!(err.exit_code(), exit::USAGE, "{argv:?}");
        }
        let check = |args: &[&str]| {
            let argv = [&["forkd-loadgen"], args, &[url]].concat();
            Args::try_parse_from(&argv).unwrap().check()
        };
        for (args, says) in [
            (&["-c", "0"][..], "--connections"),
            (&["--rate", "0"], "--rate"),
            (&["--interval", "0s"], "--interval"),
            (
                &[
                    "-d",
                    "2s",
                    "--watch-pid",
                    "1",
                    "--warmup",
                    "2s",
                    "--assert-flat",
                ],
                "needs 3 samples",
            ),
            // The default run time is 10 s.
            (
                &["--watch-pid", "1", "--warmup", "9s", "--assert-flat"],
                "--duration 10s",
            ),
            (&["--csv", "/nonexistent/a.csv"], "--csv"),
            (&["--plot", "/nonexistent/a.svg"], "--plot"),
        ] {
            let err = check(args).unwrap_err();
            assert!(err.contains(says), "{args:?}: {err}");
        }
        for args in [
            &[
                "-d",
                "2s",
                "--watch-pid",
                "1",
                "--warmup",
                "1s",
                "--interval",
                "500ms",
                "--assert-flat",
            ][..],
            // A request count does not say how long the run is: nothing to refuse.
            &[
                "-n",
                "10",
                "--watch-pid",
                "1",
                "--warmup",
                "1h",
                "--assert-flat",
            ],
            &["--csv", "a.csv", "--plot", "/tmp/a.svg"],
        ] {
            assert_eq!(check(args), Ok(()), "{args:?}");
        }
    }
}
