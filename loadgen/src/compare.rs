//! `forkd-loadgen compare`: one workload against several servers, the way a careful person runs
//! a benchmark by hand, done by the tool so that nobody has to. Each target is `NAME=URL`, or
//! `NAME=URL@COMMAND` for a server the tool starts itself (in a process group of its own, waited
//! for until it accepts connections, its tree watched for fds and memory during every run, and
//! stopped by its group at the end, whatever happened). Runs alternate across the targets,
//! repetition after repetition, so that the machine's drift falls on all of them alike; before
//! each run the tool waits, for a bounded time, for the machine to be quiet, and it records the
//! CPU that other processes used during the run, flagging runs where that was more than
//! `--quiet-below`. The result is medians with min-max, ratios to `--baseline`, and the server
//! trees, as a terminal table, Markdown and JSON, with the latency percentiles of every target
//! overlaid in `--plot`.
//!
//! Everything that can be refused is refused before any server starts: names, URLs, ports taken,
//! workload flags, files whose directory does not exist.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde_json::{json, Value};

use crate::cpu;
use crate::plot::{human, latency};
use crate::report::Report;
use crate::request::{self, Target};
use crate::{exit, parse_duration, Args};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "compare",
    bin_name = "forkd-loadgen compare",
    about = "Run the same workload against several servers, alternating, and compare them",
    long_about = "Run the same workload against several servers, alternating, and compare them.\n\n\
Each TARGET is NAME=URL (a server already running) or NAME=URL@COMMAND (a server this tool \
starts: COMMAND runs as `sh -c 'exec COMMAND'` in a process group of its own, so its first \
program is the process whose tree is watched; it must listen on the URL's port, which must be \
free; it is stopped by its process group at the end, TERM then KILL after 10 s).\n\n\
Workloads: every -c count, with --keep-alive and/or --new-conn (keep-alive alone by default), \
on every --path (default: each URL's own path). For --reps repetitions, each workload runs once \
on every target in turn. Before each run the tool waits \
up to --quiet-wait for other processes to use less than --quiet-below CPUs; during the run it \
measures what they used (/proc/stat minus the target's tree and this process) and flags the \
run noisy when that exceeds --quiet-below.\n\n\
Prints requests/s and p99 as medians with min-max, ratios to --baseline, and each started \
server's tree (RSS, PSS, processes, fd change, connections never answered); --json prints the same as \
JSON, --markdown also writes it as Markdown, --plot draws latency by percentile with every target \
overlaid.",
    after_help = "Example:\n  forkd-loadgen compare -c 16,64 --keep-alive --new-conn -d 5s --reps 3 --baseline nginx \\\n    \
nginx=http://127.0.0.1:8081/2k.html \\\n    \
forkd=http://127.0.0.1:8082/2k.html@'forkd --listen 127.0.0.1:8082 --root site' \\\n    \
--markdown compare.md --plot compare.svg"
)]
pub struct CompareArgs {
    /// NAME=URL or NAME=URL@COMMAND (ratios need two or more).
    #[arg(required = true, value_parser = parse_target_spec)]
    pub targets: Vec<TargetSpec>,

    /// Connection counts, one workload each: 16,64.
    #[arg(short = 'c', long, value_delimiter = ',', default_value = "16,64")]
    pub connections: Vec<usize>,

    /// Measure keep-alive connections (the default when neither this nor --new-conn is given).
    #[arg(long)]
    pub keep_alive: bool,

    /// Measure a new connection per request.
    #[arg(long)]
    pub new_conn: bool,

    /// A path to request instead of the URLs' own, one workload each. Repeatable.
    #[arg(long = "path")]
    pub paths: Vec<String>,

    /// Length of each measured run.
    #[arg(short = 'd', long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Repetitions: each workload runs this many times on each target.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,

    /// An unmeasured run of this length per target and workload before the first repetition
    /// (caches, lazily started workers); 0s for none.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warm: Duration,

    /// The target the ratios divide by [default: the first].
    #[arg(long)]
    pub baseline: Option<String>,

    /// Engine threads [default: CPUs, at most the connections].
    #[arg(short = 't', long)]
    pub threads: Option<usize>,

    /// An extra request header, "Name: value". Repeatable.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,

    /// The request method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,

    /// Send this file as the body of every request.
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,

    /// Requests in flight per keep-alive connection.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub pipeline: usize,

    /// A request taking longer fails as a timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Other processes' CPU use, in CPUs, under which the machine counts as quiet; a run during
    /// which they used more is flagged noisy.
    #[arg(long, default_value_t = 0.25, value_name = "CPUS")]
    pub quiet_below: f64,

    /// How long to wait for a quiet machine before each run (then it runs anyway); 0s: never.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub quiet_wait: Duration,

    /// How long a started server has to accept connections.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub ready_timeout: Duration,

    /// Sampling interval of the started servers' trees during a run.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub interval: Duration,

    /// Print JSON instead of the tables.
    #[arg(long)]
    pub json: bool,

    /// Also write the tables as Markdown to this file.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,

    /// Draw every workload's latency by percentile, targets overlaid, into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// No live progress line.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Allow targets outside loopback. Only load servers you own.
    #[arg(long)]
    pub allow_remote: bool,
}

/// One `NAME=URL[@COMMAND]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub name: String,
    pub url: String,
    pub command: Option<String>,
}

/// Parses `NAME=URL` or `NAME=URL@COMMAND` (for clap). The URL ends at the first `@`: a URL
/// with user information is refused anyway.
pub fn parse_target_spec(s: &str) -> Result<TargetSpec, String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: a target is NAME=URL or NAME=URL@COMMAND"))?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "{s:?}: NAME must be letters, digits, '-', '_' or '.'"
        ));
    }
    let (url, command) = match rest.split_once('@') {
        Some((u, c)) if c.trim().is_empty() => {
            return Err(format!(
                "{s:?}: nothing after '@' (the command that starts {u})"
            ))
        }
        Some((u, c)) => (u, Some(c.trim().to_string())),
        None => (rest, None),
    };
    Ok(TargetSpec {
        name: name.to_string(),
        url: url.to_string(),
        command,
    })
}

/// One workload: how connections are used, how many, and which path (None: each URL's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub new_conn: bool,
    pub connections: usize,
    pub path: Option<String>,
}

impl Workload {
    /// `keep-alive c16`, `new-conn c64 /2k.html`.
    pub fn label(&self) -> String {
        let mut s = format!(
            "{} c{}",
            if self.new_conn {
                "new-conn"
            } else {
                "keep-alive"
            },
            self.connections
        );
        if let Some(p) = &self.path {
            let _ = write!(s, " {p}");
        }
        s
    }
}

impl CompareArgs {
    /// Everything that can be refused before a server starts, with the way out in the message.
    pub fn check(&self) -> Result<Vec<Target>, String> {
        let mut names = std::collections::HashSet::new();
        for t in &self.targets {
            if !names.insert(&t.name) {
                return Err(format!(
                    "two targets are called {:?}: names must differ",
                    t.name
                ));
            }
        }
        if let Some(b) = &self.baseline {
            if !names.contains(b) {
                return Err(format!(
                    "--baseline {b:?} is none of the targets ({})",
                    self.targets
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if self.connections.is_empty() || self.connections.contains(&0) {
            return Err("-c takes connection counts of at least 1: -c 16,64".into());
        }
        if self.reps == 0 {
            return Err("--reps must be at least 1".into());
        }
        if self.duration < self.interval {
            return Err(format!(
                "-d {} is shorter than --interval {}: the started servers' trees would not be \
                 sampled during a run; give -d {} or more, or a shorter --interval",
                crate::units::show_duration(self.duration),
                crate::units::show_duration(self.interval),
                crate::units::show_duration(self.interval),
            ));
        }
        if !(self.quiet_below > 0.0 && self.quiet_below.is_finite()) {
            return Err("--quiet-below is a number of CPUs above 0, such as 0.25".into());
        }
        for p in &self.paths {
            if !p.starts_with('/') {
                return Err(format!("--path {p:?} must start with '/'"));
            }
        }
        for new_conn in self.reuse() {
            crate::check_workload(&crate::Workload {
                pipeline: self.pipeline,
                new_conn,
                rate: None,
                method: &self.method,
                body: self.body.as_deref(),
            })?;
        }
        for (flag, path) in [("--markdown", &self.markdown), ("--plot", &self.plot)] {
            if let Some(path) = path {
                crate::check_dir(flag, path)?;
            }
        }
        let mut resolved = Vec::new();
        let mut started: Vec<SocketAddr> = Vec::new();
        for t in &self.targets {
            let target = request::parse_target(&t.url, self.allow_remote)
                .map_err(|e| format!("{}: {e}", t.name))?;
            if t.command.is_some() {
                if started.contains(&target.addr) {
                    return Err(format!(
                        "{}: another started target listens on {} too: give each its own port",
                        t.name, target.addr
                    ));
                }
                started.push(target.addr);
                if TcpStream::connect_timeout(&target.addr, Duration::from_millis(500)).is_ok() {
                    return Err(format!(
                        "{}: something already listens on {}, where its command should: stop \
                         it or choose another port",
                        t.name, target.addr
                    ));
                }
            }
            resolved.push(target);
        }
        Ok(resolved)
    }

    /// The connection uses measured: `false` keep-alive, `true` new connection per request.
    fn reuse(&self) -> Vec<bool> {
        match (self.keep_alive, self.new_conn) {
            (_, false) => vec![false],
            (false, true) => vec![true],
            (true, true) => vec![false, true],
        }
    }

    pub fn workloads(&self) -> Vec<Workload> {
        let paths: Vec<Option<String>> = if self.paths.is_empty() {
            vec![None]
        } else {
            self.paths.iter().cloned().map(Some).collect()
        };
        let mut out = Vec::new();
        for path in &paths {
            for new_conn in self.reuse() {
                for &connections in &self.connections {
                    out.push(Workload {
                        new_conn,
                        connections,
                        path: path.clone(),
                    });
                }
            }
        }
        out
    }

    /// The single-run arguments of one run of `w` against `t`.
    fn run_args(
        &self,
        t: &TargetSpec,
        target: &Target,
        w: &Workload,
        d: Duration,
        pid: Option<i32>,
    ) -> Args {
        let url = match &w.path {
            Some(p) => format!("http://{}{p}", target.authority),
            None => t.url.clone(),
        };
        Args {
            url,
            connections: w.connections,
            threads: self.threads,
            duration: Some(d),
            requests: None,
            rate: None,
            new_conn: w.new_conn,
            paths: Vec::new(),
            headers: self.headers.clone(),
            head: false,
            method: self.method.clone(),
            body: self.body.clone(),
            pipeline: if w.new_conn { 1 } else { self.pipeline },
            quiet: true,
            timeout: self.timeout,
            allow_remote: self.allow_remote,
            watch_pid: pid,
            interval: self.interval,
            warmup: Duration::ZERO,
            assert_flat: false,
            fd_tolerance: 0,
            mem_tolerance_pct: 5.0,
            mem_tolerance_kb: 1024,
            json: false,
            csv: None,
            plot: None,
            abuse: Vec::new(),
            abuse_conns: 0,
            abuse_pipeline: 0,
        }
    }
}

/// Runs `forkd-loadgen compare ...` and returns the exit code.
pub fn main() -> i32 {
    let args = match CompareArgs::try_parse_from(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let targets = match args.check() {
        Ok(t) => t,
        Err(e) => {
            let _ = CompareArgs::command()
                .error(clap::error::ErrorKind::ArgumentConflict, e)
                .print();
            return exit::USAGE;
        }
    };
    match run(&args, &targets) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("forkd-loadgen compare: {e}");
            exit::FAILED
        }
    }
}

/// A server this tool started: stopped by its process group when dropped, so that an error
/// anywhere, or Ctrl-C, never leaves one running.
struct Started {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Started {
    /// Starts `command` in a process group of its own, its output into a log file.
    fn spawn(name: &str, command: &str) -> Result<Started, String> {
        use std::os::unix::process::CommandExt;
        let log = std::env::temp_dir().join(format!(
            "forkd-loadgen-compare-{}-{name}.log",
            std::process::id()
        ));
        let out =
            File::create(&log).map_err(|e| format!("unable to create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("{name}: unable to run /bin/sh: {e}"))?;
        crate::GROUPS_TO_KILL
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id() as i32);
        Ok(Started {
            name: name.to_string(),
            child,
            log,
        })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until `addr` accepts a connection, or fails as soon as the server has exited.
    fn wait_ready(&mut self, addr: SocketAddr, limit: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(start.elapsed());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before listening on {addr}{}",
                    self.name,
                    self.tail()
                ));
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "{} did not accept connections on {addr} within {} (--ready-timeout){}",
                    self.name,
                    crate::units::show_duration(limit),
                    self.tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The end of the server's output, for an error message.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(3).collect();
        if lines.is_empty() {
            String::new()
        } else {
            let lines: Vec<&str> = lines.into_iter().rev().collect();
            format!("; its output ends: {}", lines.join(" | "))
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let group = Pid::from_raw(-self.pid());
        let _ = kill(group, Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end && self.alive() {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group: workers still draining after their master went.
        let _ = kill(group, Signal::SIGKILL);
        let _ = self.child.kill();
        // Forgotten before the leader is reaped: until then its id cannot name another group,
        // so a second Ctrl-C meanwhile never kills a stranger's.
        crate::GROUPS_TO_KILL
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&g| g != self.pid());
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub target: usize,
    pub workload: usize,
    pub rep: usize,
    pub rps: f64,
    pub p99_us: u64,
    pub requests: u64,
    pub errors: u64,
    /// Connections that got no response in the whole run (see `Tally::starved`).
    pub starved: u64,
    /// CPUs' worth of other processes during the run, and whether that made it noisy.
    pub other_cpu: f64,
    pub noisy: bool,
    /// The started server's tree: highest RSS and PSS sampled during the run (KiB), most
    /// processes, and fds after the run minus before it.
    pub rss_kb: Option<u64>,
    pub pss_kb: Option<u64>,
    pub processes: Option<u64>,
    pub fd_change: Option<i64>,
}

/// Everything `compare` measured.
pub struct Comparison {
    pub names: Vec<String>,
    pub started: Vec<bool>,
    pub workloads: Vec<Workload>,
    pub baseline: usize,
    pub runs: Vec<RunResult>,
    /// Latencies per (target, workload), merged over the repetitions.
    pub latency: BTreeMap<(usize, usize), Histogram<u64>>,
    pub facts: Facts,
}

/// The machine and the settings, for the header.
#[derive(Debug, Clone)]
pub struct Facts {
    pub started: String,
    pub cpus: usize,
    pub cpu: String,
    pub kernel: String,
    pub load_before: String,
    pub load_after: String,
    pub duration: Duration,
    pub reps: usize,
    pub warm: Duration,
    pub quiet_below: f64,
    pub pipeline: usize,
    pub method: String,
    pub interrupted: bool,
}

fn run(args: &CompareArgs, targets: &[Target]) -> Result<(), String> {
    let interrupted = crate::catch_interrupt();
    let workloads = args.workloads();
    let baseline = args
        .baseline
        .as_ref()
        .and_then(|b| args.targets.iter().position(|t| &t.name == b))
        .unwrap_or(0);
    let load_before = loadavg();
    let started_at = utc_now();
    // Start every server first: all are up for the whole comparison, so that alternating runs
    // costs no restarts; idle ones use nothing worth counting.
    let mut servers: Vec<Option<Started>> = Vec::new();
    for (spec, target) in args.targets.iter().zip(targets) {
        let Some(command) = &spec.command else {
            TcpStream::connect_timeout(&target.addr, Duration::from_secs(2)).map_err(|e| {
                format!(
                    "{}: nothing answers on {} ({e}); start it, or give NAME=URL@COMMAND",
                    spec.name, target.addr
                )
            })?;
            servers.push(None);
            continue;
        };
        let mut s = Started::spawn(&spec.name, command)?;
        let took = s.wait_ready(target.addr, args.ready_timeout)?;
        if !args.json {
            eprintln!(
                "started {} (pid {}), accepting after {:.2}s",
                spec.name,
                s.pid(),
                took.as_secs_f64()
            );
        }
        servers.push(Some(s));
    }
    let show = crate::progress::wanted(args.quiet);
    let total = args.reps * workloads.len() * targets.len();
    let mut done = 0;
    // The warm-up: unmeasured, once per target and workload.
    if !args.warm.is_zero() {
        'warm: for (w, wl) in workloads.iter().enumerate() {
            for (t, spec) in args.targets.iter().enumerate() {
                if interrupted.load(Relaxed) {
                    break 'warm;
                }
                let a = args.run_args(spec, &targets[t], wl, args.warm, None);
                let prefix = format!("warm-up {} {} ", spec.name, workloads[w].label());
                crate::measure(&a, show.then_some(prefix))?;
            }
        }
    }
    let mut runs = Vec::new();
    let mut latency: BTreeMap<(usize, usize), Histogram<u64>> = BTreeMap::new();
    'reps: for rep in 0..args.reps {
        for (w, wl) in workloads.iter().enumerate() {
            // Always the same order, so that the runs alternate strictly: A B A B.
            for t in 0..targets.len() {
                if interrupted.load(Relaxed) {
                    break 'reps;
                }
                let spec = &args.targets[t];
                let pid = servers[t].as_ref().map(Started::pid);
                if let Some(s) = servers[t].as_mut() {
                    if !s.alive() {
                        return Err(format!(
                            "{} exited during the comparison{}",
                            s.name,
                            s.tail()
                        ));
                    }
                }
                if !args.quiet_wait.is_zero() {
                    cpu::wait_quiet(args.quiet_below, args.quiet_wait)
                        .map_err(|e| format!("unable to read /proc: {e}"))?;
                }
                done += 1;
                let before =
                    cpu::Snapshot::take(pid).map_err(|e| format!("unable to read /proc: {e}"))?;
                let a = args.run_args(spec, &targets[t], wl, args.duration, pid);
                let prefix = format!("[{done}/{total}] {} {} ", spec.name, wl.label());
                let report = crate::measure(&a, show.then_some(prefix))?;
                // The tree may have ended with the run: then its time is in nobody's count.
                let other = cpu::Snapshot::take(pid)
                    .or_else(|_| cpu::Snapshot::take(None))
                    .map(|after| after.other_since(&before))
                    .unwrap_or(0.0);
                latency
                    .entry((t, w))
                    .or_insert_with(crate::stats::new_histogram)
                    .add(&report.tally.latency)
                    .map_err(|e| e.to_string())?;
                runs.push(result(t, w, rep, &report, other, args.quiet_below));
            }
        }
    }
    let facts = Facts {
        started: started_at,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu: cpu_model(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        load_before,
        load_after: loadavg(),
        duration: args.duration,
        reps: args.reps,
        warm: args.warm,
        quiet_below: args.quiet_below,
        pipeline: args.pipeline,
        method: args.method.clone(),
        interrupted: interrupted.load(Relaxed),
    };
    // Stop the servers before writing anything: the figures are in hand.
    drop(servers);
    let c = Comparison {
        names: args.targets.iter().map(|t| t.name.clone()).collect(),
        started: args.targets.iter().map(|t| t.command.is_some()).collect(),
        workloads,
        baseline,
        runs,
        latency,
        facts,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&c.json()).expect("JSON of plain values")
        );
    } else {
        print!("{}", c.tables(Style::Text));
    }
    if let Some(path) = &args.markdown {
        forkd_daemon::atomic::write_atomic(path, c.tables(Style::Markdown).as_bytes(), 0o644)
            .map_err(|e| format!("unable to write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        c.plot(path)
            .map_err(|e| format!("unable to draw {}: {e}", path.display()))?;
    }
    Ok(())
}

fn result(t: usize, w: usize, rep: usize, r: &Report, other: f64, quiet_below: f64) -> RunResult {
    let trees = r.series.iter().filter_map(|p| p.tree.as_ref());
    let rss_kb = trees.clone().map(|t| t.rss_kb).max();
    let pss_kb = trees.clone().filter_map(|t| t.pss_kb).max();
    let processes = trees.map(|t| t.processes).max();
    let fd_change = r
        .watch
        .as_ref()
        .and_then(|w| w.before_after.as_ref())
        .map(|b| b.fd_delta);
    RunResult {
        target: t,
        workload: w,
        rep,
        rps: r.requests_per_sec(),
        p99_us: r.tally.latency_summary().p99,
        requests: r.tally.responses(),
        errors: r.tally.error_count(),
        starved: r.tally.starved,
        other_cpu: other,
        noisy: other > quiet_below,
        rss_kb,
        pss_kb,
        processes,
        fd_change,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// Now as `2026-12-02 07:58 UTC`, from the system clock (httpdate-free civil-from-days).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The median, min and max of some figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    fn json(&self) -> Value {
        json!({"median": self.median, "min": self.min, "max": self.max})
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Text,
    Markdown,
}

/// A table of strings, rendered aligned for a terminal or as Markdown.
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn render(&self, style: Style) -> String {
        let mut s = String::new();
        match style {
            Style::Markdown => {
                let _ = writeln!(s, "| {} |", self.head.join(" | "));
                let _ = writeln!(s, "|{}", "---|".repeat(self.head.len()));
                for r in &self.rows {
                    let _ = writeln!(s, "| {} |", r.join(" | "));
                }
            }
            Style::Text => {
                let widths: Vec<usize> = (0..self.head.len())
                    .map(|i| {
                        std::iter::once(&self.head)
                            .chain(&self.rows)
                            .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                for r in std::iter::once(&self.head).chain(&self.rows) {
                    let cells: Vec<String> = r
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            if i == 0 {
                                format!("{c:<w$}", w = widths[i])
                            } else {
                                format!("{c:>w$}", w = widths[i])
                            }
                        })
                        .collect();
                    let _ = writeln!(s, "{}", cells.join("  ").trim_end());
                }
            }
        }
        s
    }
}

impl Comparison {
    fn runs_of(&self, t: usize, w: usize) -> impl Iterator<Item = &RunResult> {
        self.runs
            .iter()
            .filter(move |r| r.target == t && r.workload == w)
    }

    pub fn rps(&self, t: usize, w: usize) -> Option<Spread> {
        Spread::of(&self.runs_of(t, w).map(|r| r.rps).collect::<Vec<_>>())
    }

    pub fn p99(&self, t: usize, w: usize) -> Option<Spread> {
        Spread::of(
            &self
                .runs_of(t, w)
                .map(|r| r.p99_us as f64)
                .collect::<Vec<_>>(),
        )
    }

    /// `target / baseline` of two medians.
    pub fn ratio(
        &self,
        t: usize,
        w: usize,
        f: fn(&Comparison, usize, usize) -> Option<Spread>,
    ) -> Option<f64> {
        let (a, b) = (f(self, t, w)?, f(self, self.baseline, w)?);
        (b.median > 0.0).then(|| a.median / b.median)
    }

    fn noisy_mark(&self, t: usize, w: usize) -> &'static str {
        if self.runs_of(t, w).any(|r| r.noisy) {
            "*"
        } else {
            ""
        }
    }

    pub fn tables(&self, style: Style) -> String {
        let f = &self.facts;
        let mut s = String::new();
        let runs = self.runs.len();
        let noisy = self.runs.iter().filter(|r| r.noisy).count();
        let _ =
            writeln!(
            s,
            "Measured {} on {} x {}, Linux {}; load average {} before, {} after. forkd-loadgen on \
             the same machine; each cell: {} of {} per target, alternating across targets{}, \
             {}{}.",
            f.started,
            f.cpus,
            f.cpu,
            f.kernel,
            f.load_before,
            f.load_after,
            if f.reps == 1 {
                "one run".to_string()
            } else {
                format!("the median (min-max) of {} runs", f.reps)
            },
            crate::units::show_duration(f.duration),
            if f.pipeline > 1 {
                format!(", {} requests pipelined per keep-alive connection", f.pipeline)
            } else {
                String::new()
            },
            if f.warm.is_zero() {
                "no warm-up run".to_string()
            } else {
                format!(
                    "after a warm-up run of {}",
                    crate::units::show_duration(f.warm)
                )
            },
            if f.method == "GET" { String::new() } else { format!("; method {}", f.method) },
        );
        let _ = writeln!(
            s,
            "Other processes' CPU during the runs: up to {:.2} CPUs; {noisy} of {runs} runs \
             above {:.2} (noisy, marked *).{}",
            self.runs.iter().map(|r| r.other_cpu).fold(0.0, f64::max),
            f.quiet_below,
            if f.interrupted {
                " Interrupted: not every run was made."
            } else {
                ""
            }
        );
        let spread = |v: Option<Spread>, fmt: fn(f64) -> String| {
            v.map_or("n/a".to_string(), |v| {
                let (median, min, max) = (fmt(v.median), fmt(v.min), fmt(v.max));
                if min == max {
                    return median;
                }
                // `3.07 ms (2.95-3.19)`: a unit shared by all three is said once.
                let unit = median.rsplit_once(' ').map(|(_, u)| format!(" {u}"));
                match unit {
                    Some(u) if min.ends_with(&u) && max.ends_with(&u) => format!(
                        "{median} ({}-{})",
                        min.trim_end_matches(&u),
                        max.trim_end_matches(&u)
                    ),
                    _ => format!("{median} ({min}-{max})"),
                }
            })
        };
        let mut head = vec!["requests/s".to_string()];
        head.extend(self.workloads.iter().map(Workload::label));
        let mut t1 = Table {
            head: head.clone(),
            rows: Vec::new(),
        };
        head[0] = "p99 latency".into();
        let mut t2 = Table {
            head,
            rows: Vec::new(),
        };
        for (t, name) in self.names.iter().enumerate() {
            let mut r1 = vec![name.clone()];
            let mut r2 = vec![name.clone()];
            for w in 0..self.workloads.len() {
                let mark = self.noisy_mark(t, w);
                r1.push(format!("{}{mark}", spread(self.rps(t, w), human)));
                r2.push(format!("{}{mark}", spread(self.p99(t, w), latency)));
            }
            t1.rows.push(r1);
            t2.rows.push(r2);
        }
        let base = &self.names[self.baseline];
        let mut head = vec![format!("divided by {base}")];
        head.extend(
            self.workloads
                .iter()
                .map(|w| format!("{} req/s", w.label())),
        );
        head.extend(self.workloads.iter().map(|w| format!("{} p99", w.label())));
        let mut t3 = Table {
            head,
            rows: Vec::new(),
        };
        for (t, name) in self.names.iter().enumerate() {
            if t == self.baseline {
                continue;
            }
            let mut row = vec![name.clone()];
            for f in [
                Comparison::rps as fn(&Comparison, usize, usize) -> Option<Spread>,
                Comparison::p99,
            ] {
                for w in 0..self.workloads.len() {
                    row.push(
                        self.ratio(t, w, f)
                            .map_or("n/a".into(), |v| format!("{v:.2}")),
                    );
                }
            }
            t3.rows.push(row);
        }
        let mut t4 = Table {
            head: [
                "server tree",
                "RSS MiB (max)",
                "PSS MiB (max)",
                "processes (max)",
                "fd change",
                "conns never answered",
                "errors",
                "requests",
            ]
            .map(String::from)
            .to_vec(),
            rows: Vec::new(),
        };
        for (t, name) in self.names.iter().enumerate() {
            let mine: Vec<&RunResult> = self.runs.iter().filter(|r| r.target == t).collect();
            let mib = |v: Option<u64>| {
                v.map_or("n/a".to_string(), |kb| format!("{:.1}", kb as f64 / 1024.0))
            };
            let fd = mine
                .iter()
                .filter_map(|r| r.fd_change)
                .max_by_key(|d| d.abs());
            t4.rows.push(vec![
                name.clone(),
                mib(mine.iter().filter_map(|r| r.rss_kb).max()),
                mib(mine.iter().filter_map(|r| r.pss_kb).max()),
                mine.iter()
                    .filter_map(|r| r.processes)
                    .max()
                    .map_or("n/a".into(), |p| p.to_string()),
                fd.map_or("n/a".into(), |d| format!("{d:+}")),
                mine.iter()
                    .map(|r| r.starved)
                    .max()
                    .unwrap_or(0)
                    .to_string(),
                mine.iter().map(|r| r.errors).sum::<u64>().to_string(),
                human(mine.iter().map(|r| r.requests).sum::<u64>() as f64),
            ]);
        }
        for (title, table) in [
            ("Requests per second", &t1),
            ("99th percentile latency", &t2),
            (
                &*format!(
                    "Ratios of the medians to {base} (req/s: above 1 is faster; p99: above 1 is slower)"
                ),
                &t3,
            ),
            (
                "Server trees (started targets, sampled every --interval during the runs; fd change: \
                 after a run minus before it, the largest; conns never answered: connections \
                 that got no response in a whole run, the most in one run; errors and requests: \
                 over all runs)",
                &t4,
            ),
        ] {
            let _ = writeln!(s);
            match style {
                Style::Text => {
                    let _ = writeln!(s, "{title}:");
                }
                Style::Markdown => {
                    let _ = writeln!(s, "{title}:\n");
                }
            }
            s.push_str(&table.render(style));
        }
        s
    }

    pub fn json(&self) -> Value {
        let f = &self.facts;
        let summary: Vec<Value> = (0..self.names.len())
            .flat_map(|t| (0..self.workloads.len()).map(move |w| (t, w)))
            .map(|(t, w)| {
                json!({
                    "target": self.names[t],
                    "workload": self.workloads[w].label(),
                    "requests_per_sec": self.rps(t, w).map(|s| s.json()),
                    "p99_us": self.p99(t, w).map(|s| s.json()),
                    "ratio_requests_per_sec": self.ratio(t, w, Comparison::rps),
                    "ratio_p99": self.ratio(t, w, Comparison::p99),
                    "noisy_runs": self.runs_of(t, w).filter(|r| r.noisy).count(),
                })
            })
            .collect();
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|r| {
                json!({
                    "target": self.names[r.target],
                    "workload": self.workloads[r.workload].label(),
                    "rep": r.rep + 1,
                    "requests_per_sec": r.rps,
                    "p99_us": r.p99_us,
                    "requests": r.requests,
                    "errors": r.errors,
                    "starved_connections": r.starved,
                    "other_cpu": r.other_cpu,
                    "noisy": r.noisy,
                    "rss_kb_max": r.rss_kb,
                    "pss_kb_max": r.pss_kb,
                    "processes_max": r.processes,
                    "fd_change": r.fd_change,
                })
            })
            .collect();
        json!({
            "started": f.started,
            "machine": {"cpus": f.cpus, "cpu": f.cpu, "kernel": f.kernel,
                        "load_before": f.load_before, "load_after": f.load_after},
            "settings": {"duration_s": f.duration.as_secs_f64(), "reps": f.reps,
                         "warm_s": f.warm.as_secs_f64(), "quiet_below_cpus": f.quiet_below,
                         "pipeline": f.pipeline, "method": f.method},
            "interrupted": f.interrupted,
            "baseline": self.names[self.baseline],
            "targets": self.names.iter().zip(&self.started).map(|(n, s)| json!({"name": n, "started": s})).collect::<Vec<_>>(),
            "workloads": self.workloads.iter().map(|w| json!({
                "label": w.label(), "keep_alive": !w.new_conn, "connections": w.connections, "path": w.path,
            })).collect::<Vec<_>>(),
            "summary": summary,
            "runs": runs,
        })
    }

    /// One latency-by-percentile chart per workload, the targets overlaid.
    pub fn plot(&self, path: &Path) -> Result<(), String> {
        let n = self.workloads.len();
        let cols = if n > 1 { 2 } else { 1 };
        let rows = n.div_ceil(cols);
        let root =
            SVGBackend::new(path, (560 * cols as u32, 420 * rows as u32 + 40)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(
                &format!(
                    "Latency by percentile, {} of {} per target",
                    if self.facts.reps == 1 {
                        "one run".to_string()
                    } else {
                        format!("{} runs", self.facts.reps)
                    },
                    crate::units::show_duration(self.facts.duration)
                ),
                ("sans-serif", 20),
            )
            .map_err(|e| e.to_string())?;
        let areas = root.split_evenly((rows, cols));
        for (w, area) in self
            .workloads
            .iter()
            .enumerate()
            .zip(areas.iter())
            .map(|((w, _), a)| (w, a))
        {
            let runs: Vec<(String, &Histogram<u64>)> = self
                .names
                .iter()
                .enumerate()
                .filter_map(|(t, name)| Some((name.clone(), self.latency.get(&(t, w))?)))
                .collect();
            crate::plot::percentiles(area, &self.workloads[w].label(), &runs)?;
        }
        root.present().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_specs() {
        let t = parse_target_spec(
            "forkd=http://127.0.0.1:8080/2k.html@forkd --listen 127.0.0.1:8080 --root a@b",
        )
        .unwrap();
        assert_eq!(t.name, "forkd");
        assert_eq!(t.url, "http://127.0.0.1:8080/2k.html");
        assert_eq!(
            t.command.as_deref(),
            Some("forkd --listen 127.0.0.1:8080 --root a@b")
        );
        let t = parse_target_spec("nginx=http://127.0.0.1:81/").unwrap();
        assert_eq!((t.url.as_str(), t.command), ("http://127.0.0.1:81/", None));
        for bad in [
            "http://127.0.0.1/",
            "=http://x/",
            "a b=http://x/",
            "a=http://x/@ ",
        ] {
            assert!(parse_target_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spreads_and_workloads() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(
            Spread::of(&[3.0, 1.0, 2.0]),
            Some(Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            })
        );
        assert_eq!(Spread::of(&[4.0, 1.0]).unwrap().median, 2.5);
        let a = CompareArgs::try_parse_from([
            "compare",
            "-c",
            "16,64",
            "--keep-alive",
            "--new-conn",
            "a=http://127.0.0.1:1/",
            "b=http://127.0.0.1:2/",
        ])
        .unwrap();
        let labels: Vec<String> = a.workloads().iter().map(Workload::label).collect();
        assert_eq!(
            labels,
            [
                "keep-alive c16",
                "keep-alive c64",
                "new-conn c16",
                "new-conn c64"
            ]
        );
    }

    #[test]
    fn refusals_before_anything_starts() {
        let check = |extra: &[&str]| {
            let argv = [&["compare"], extra].concat();
            CompareArgs::try_parse_from(&argv)
                .unwrap()
                .check()
                .unwrap_err()
        };
        let (a, b) = ("a=http://127.0.0.1:9/", "b=http://127.0.0.1:9/@true");
        for (args, says) in [
            (&["a=http://127.0.0.1:9/", a][..], "names must differ"),
            (
                &["--baseline", "c", a, b],
                "--baseline \"c\" is none of the targets (a, b)",
            ),
            (&["-c", "0", a, b], "-c 16,64"),
            (&["--reps", "0", a, b], "--reps"),
            (&["-d", "100ms", a, b], "give -d 500ms or more"),
            (&["--pipeline", "4", "--new-conn", a, b], "drop one of them"),
            (&["--markdown", "/nonexistent/x.md", a, b], "--markdown"),
            (&["a=http://10.0.0.1:80/", b], "not a loopback address"),
            (
                &["x=http://127.0.0.1:9/@true", b],
                "another started target listens",
            ),
        ] {
            let err = check(args);
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
}
