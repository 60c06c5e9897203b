//! Configuration: command-line flags (clap) and the `[supervisor]` section of the same TOML
//! file forkd reads, flags winning. Both sources go through one table of keys and one parser
//! per key, so an error always names the flag or the file key and the value it refused.
//!
//! This module only builds a [`Config`]; it opens no socket and starts nothing.

use std::ffi::OsString;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::watch::{Limit, Resource};
use forkd_daemon::units::{parse_duration, parse_size, show_duration};

/// Supervises forkd (or any daemon) from the outside: restarts it with backoff and a budget,
/// checks readiness and health, watches its fds, memory, processes and TCP sockets, and never
/// acts on evidence it could not gather.
#[derive(Parser, Debug)]
#[command(
    name = "forkd-supervisor",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_value_name = "SUBCOMMAND",
    disable_help_subcommand = true,
    after_help = "Durations: 250ms, 2s, 1m30s, 1h (a bare number is seconds). Sizes: 4096, 512k, \
                  200MiB, 1G.\nExit codes: 0 stopped by TERM/INT; 100 the child failed \
                  permanently (it exited 100); 111 the restart budget is spent; 2 bad \
                  configuration; 1 the supervisor itself failed.\nSignals: TERM/INT stop the \
                  child gracefully (SIGKILL to its process group after --stop-timeout; a second \
                  TERM/INT kills at once); HUP and USR1 are forwarded."
)]
pub struct Cli {
    #[command(subcommand)]
    pub sub: Option<Sub>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Sub {
    /// Print the state a running supervisor last wrote to its status file.
    Status {
        /// The status file (default: $RUNTIME_DIRECTORY/status.json, or the `status-file` key
        /// of --config).
        #[arg(long, value_name = "PATH")]
        status_file: Option<PathBuf>,
        /// The TOML file whose `[supervisor]` section names the status file.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the raw JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

/// Every value is taken as text here and parsed by the same function as the file's, so flags
/// and file keys are refused with the same message.
#[derive(Args, Debug, Default, Clone)]
// The field comments are `--help` text, where `[server]` names forkd's section.
#[allow(rustdoc::broken_intra_doc_links)]
pub struct RunArgs {
    /// TOML file shared with forkd; this program reads its `[supervisor]` section. Without a
    /// COMMAND, forkd is started with `--config FILE` too.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// HTTP URL to probe for health, e.g. http://127.0.0.1:8080/ (loopback or a host name
    /// resolved once at start). Without it only the notify watchdog and resources are watched.
    #[arg(long, value_name = "URL")]
    pub health_url: Option<String>,
    /// Time between health probes once the child is ready (default: 2s).
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Time a probe may take to connect and read the status line (default: 1s).
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Failed probes in a row that make the child unhealthy; it is then restarted (default: 3).
    #[arg(long, value_name = "N")]
    pub health_threshold: Option<String>,

    /// How the child says it is ready: `notify` (READY=1 on NOTIFY_SOCKET), `port` (the probed
    /// port accepts), `auto` (whichever comes first; with no port, notify), or `none` (ready
    /// once started) (default: auto).
    #[arg(long, value_name = "MODE")]
    pub readiness: Option<String>,
    /// Time the child has to become ready before it is restarted (default: 30s).
    #[arg(long, value_name = "DURATION")]
    pub ready_timeout: Option<String>,
    /// Expect WATCHDOG=1 on the notify socket at least this often once ready (WATCHDOG_USEC is
    /// passed to the child); a miss counts as unhealthy (default: off).
    #[arg(long, value_name = "DURATION")]
    pub watchdog: Option<String>,

    /// First restart delay; it doubles after each start that was not stable (default: 100ms).
    #[arg(long, value_name = "DURATION")]
    pub backoff_base: Option<String>,
    /// Longest restart delay (default: 30s).
    #[arg(long, value_name = "DURATION")]
    pub backoff_cap: Option<String>,
    /// A child that ran this long resets the delay to --backoff-base (default: 10s).
    #[arg(long, value_name = "DURATION")]
    pub stable_after: Option<String>,
    /// Failed starts in a row (runs that never became ready or were shorter than
    /// --stable-after) before giving up with exit code 111; a stable run resets the count; 0
    /// means no limit (default: 10, about 81 s of backoff with the default delays).
    #[arg(long, value_name = "N")]
    pub max_restarts: Option<String>,
    /// Also give up after --max-restarts restarts within this sliding window, stable or not
    /// (default: off). Refused when the backoff could never fit that many restarts in it.
    #[arg(long, value_name = "DURATION")]
    pub restart_window: Option<String>,
    /// Time the child has to exit after SIGTERM before its process group is killed
    /// (default: forkd's shutdown timeout plus 5s: its --shutdown-timeout in the command or
    /// the [server] section, else 10s, so 15s).
    #[arg(long, value_name = "DURATION")]
    pub stop_timeout: Option<String>,

    /// What a resource limit triggers: `restart` (TERM, then a fresh start) or `hup` (SIGHUP:
    /// forkd replaces its workers; a limit hit again within two slope windows restarts)
    /// (default: restart).
    #[arg(long, value_name = "ACTION")]
    pub recycle: Option<String>,
    /// A level limit over the child's whole process tree, repeatable: fds=N, rss=SIZE,
    /// pss=SIZE, processes=N, zombies=N, established=N, close-wait=N, fin-wait=N,
    /// time-wait=N, syn-recv=N (TCP counts are for --port).
    #[arg(long = "limit", value_name = "KEY=VALUE")]
    pub limits: Vec<String>,
    /// A growth limit per minute over --slope-window, repeatable, same keys: fds=100 means
    /// "more than 100 new fds a minute" (least-squares slope of the samples).
    #[arg(long = "slope", value_name = "KEY=PER_MINUTE")]
    pub slopes: Vec<String>,
    /// The window over which slopes are measured (default: 60s).
    #[arg(long, value_name = "DURATION")]
    pub slope_window: Option<String>,
    /// Time between resource samples of the child's tree (default: 1s).
    #[arg(long, value_name = "DURATION")]
    pub sample_interval: Option<String>,
    /// The TCP port whose sockets are counted by state (default: the --health-url port).
    #[arg(long, value_name = "PORT")]
    pub port: Option<String>,

    /// Write the status (state, pid, restarts and reasons, samples, counters) atomically to
    /// this file about once a second (default: $RUNTIME_DIRECTORY/status.json under systemd,
    /// else none).
    #[arg(long, value_name = "PATH")]
    pub status_file: Option<String>,
    /// Serve Prometheus text metrics on this loopback address, e.g. 127.0.0.1:9101
    /// (default: off).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// Hold a listening socket on this address, repeatable: bound once by the supervisor (or
    /// taken from its own LISTEN_FDS) and passed to every child it starts by socket activation
    /// (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), so connections that arrive while the child
    /// restarts wait in the backlog instead of being refused. Sockets the supervisor itself
    /// received by socket activation are held and passed on without it (default: none).
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,

    /// The command to supervise (default: the `forkd` next to this program, else on PATH).
    /// A first word of `forkd` is resolved the same way.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// How readiness is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Auto,
    Notify,
    Port,
    None,
}

/// What a resource limit does to the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recycle {
    Restart,
    Hup,
}

/// The HTTP probe target, resolved once at start.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthUrl {
    pub url: String,
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

/// Everything the supervisor needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub command: Vec<OsString>,
    pub health: Option<HealthUrl>,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub health_threshold: u32,
    pub readiness: Readiness,
    pub ready_timeout: Duration,
    pub watchdog: Option<Duration>,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub stable_after: Duration,
    pub max_restarts: u32,
    pub restart_window: Option<Duration>,
    pub stop_timeout: Duration,
    pub recycle: Recycle,
    pub limits: Vec<Limit>,
    pub slope_window: Duration,
    pub sample_interval: Duration,
    pub port: Option<u16>,
    pub status_file: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    /// Addresses whose listening sockets the supervisor holds and passes to each child.
    pub listen: Vec<SocketAddr>,
}

/// Where a value came from, so its error can point at it.
#[derive(Debug, Clone)]
pub enum Source {
    Flag,
    File(PathBuf),
}

/// A refused configuration: which key, which value, why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unable to read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{path}: unknown key supervisor.{key} (known: {known})")]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("{at}: {message}")]
    Value { at: At, message: String },
    #[error("{0}")]
    Other(String),
}

/// A flag or a file key, printed the way the user wrote it.
#[derive(Debug)]
pub struct At {
    key: String,
    source: Source,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Flag => write!(f, "--{}", self.key),
            Source::File(p) => write!(f, "supervisor.{} in {}", self.key, p.display()),
        }
    }
}

/// The one list of the scalar keys (one value each; `limits`, `slopes` and `command` are
/// tables and lists, handled apart). Every expansion names each field without `..`: the
/// flags are read by destructuring [`RunArgs`] whole, a flag is laid over the file's value
/// field by field, and `build` destructures the result whole, so a field of `RunArgs` that is
/// not listed here, or a listed key that `build` does not parse, does not compile. Key names
/// are the field names in kebab-case, as the flags are spelled.
macro_rules! scalar_keys {
    ($($f:ident),* $(,)?) => {
        /// Each scalar key's text and where it came from, before parsing.
        #[derive(Default)]
        struct Scalars {
            $($f: Option<(String, At)>,)*
        }

        impl Scalars {
            /// The key names, as the file and the flags spell them.
            fn names() -> Vec<String> {
                vec![$(stringify!($f).replace('_', "-"),)*]
            }

            /// The slot of a file key, `None` for an unknown one.
            fn slot(&mut self, key: &str) -> Option<&mut Option<(String, At)>> {
                $(if key == stringify!($f).replace('_', "-") {
                    return Some(&mut self.$f);
                })*
                None
            }

            /// `flags` over `self`: a flag replaces the file's value.
            fn over(self, flags: Scalars) -> Scalars {
                Scalars { $($f: flags.$f.or(self.$f),)* }
            }
        }

        impl RunArgs {
            /// The scalar flags the command line gave.
            fn scalars(&self) -> Scalars {
                let RunArgs { config: _, limits: _, slopes: _, command: _, listen: _, $($f,)* } = self;
                let at = |key: &str| At { key: key.replace('_', "-"), source: Source::Flag };
                Scalars { $($f: $f.clone().map(|v| (v, at(stringify!($f)))),)* }
            }
        }
    };
}

scalar_keys!(
    health_url,
    health_interval,
    health_timeout,
    health_threshold,
    readiness,
    ready_timeout,
    watchdog,
    backoff_base,
    backoff_cap,
    stable_after,
    max_restarts,
    restart_window,
    stop_timeout,
    recycle,
    slope_window,
    sample_interval,
    port,
    status_file,
    metrics_listen,
);

/// Values gathered from both sources before parsing.
#[derive(Default)]
struct Raw {
    scalars: Scalars,
    limits: Vec<(String, Source)>,
    slopes: Vec<(String, Source)>,
    command: Option<Vec<OsString>>,
    listen: Vec<(String, Source)>,
    /// `shutdown-timeout` of the file's `[server]` section: forkd's drain time.
    server_shutdown: Option<String>,
}

/// Parses a key's value with `parse`, or returns `default` when it was not given.
fn get<T>(
    given: Option<(String, At)>,
    default: T,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match given {
        Some((v, at)) => parse(&v).map_err(|message| ConfigError::Value { at, message }),
        None => Ok(default),
    }
}

fn count(min: u32) -> impl Fn(&str) -> Result<u32, String> {
    move |s| match s.trim().parse::<u32>() {
        Ok(n) if n >= min => Ok(n),
        Ok(n) => Err(format!("must be at least {min} (got {n})")),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

fn positive(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?} must be longer than zero")),
        d => Ok(d),
    }
}

/// Reads the `[supervisor]` section of `path` into `raw`.
fn read_file(path: &Path, raw: &mut Raw) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Toml {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    raw.server_shutdown = doc
        .get("server")
        .and_then(|s| s.get("shutdown-timeout"))
        .map(scalar_text);
    let Some(section) = doc.get("supervisor") else {
        return Ok(());
    };
    let src = || Source::File(path.to_path_buf());
    let at = |key: &str| At {
        key: key.to_string(),
        source: src(),
    };
    let Some(section) = section.as_table() else {
        return Err(ConfigError::Value {
            at: at(""),
            message: "[supervisor] must be a table".into(),
        });
    };
    for (key, value) in section {
        match key.as_str() {
            "command" => {
                let words = value.as_array().and_then(|a| {
                    a.iter()
                        .map(|w| w.as_str().map(OsString::from))
                        .collect::<Option<Vec<_>>>()
                });
                match words {
                    Some(w) if !w.is_empty() => raw.command = Some(w),
                    _ => {
                        return Err(ConfigError::Value {
                            at: at(key),
                            message: format!("{value} must be a non-empty array of strings"),
                        })
                    }
                }
            }
            "listen" => {
                let addrs = value.as_array().and_then(|a| {
                    a.iter()
                        .map(|w| w.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                });
                match addrs {
                    Some(a) => raw.listen = a.into_iter().map(|a| (a, src())).collect(),
                    None => {
                        return Err(ConfigError::Value {
                            at: at(key),
                            message: format!("{value} must be an array of addresses"),
                        })
                    }
                }
            }
            "limits" | "slopes" => {
                let Some(table) = value.as_table() else {
                    return Err(ConfigError::Value {
                        at: at(key),
                        message: format!("{value} must be a table such as {{ fds = 1000 }}"),
                    });
                };
                for (k, v) in table {
                    let pair = format!("{k}={}", scalar_text(v));
                    if key == "limits" {
                        raw.limits.push((pair, src()));
                    } else {
                        raw.slopes.push((pair, src()));
                    }
                }
            }
            k => match raw.scalars.slot(k) {
                Some(slot) => *slot = Some((scalar_text(value), at(k))),
                None => {
                    return Err(ConfigError::UnknownKey {
                        path: path.to_path_buf(),
                        key: k.to_string(),
                        known: format!(
                            "command, listen, limits, slopes, {}",
                            Scalars::names().join(", ")
                        ),
                    })
                }
            },
        }
    }
    Ok(())
}

/// A TOML scalar as the text a flag would carry (`"2s"` -> `2s`, `3` -> `3`).
fn scalar_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The status file a `status` command should read: the flag, else the file key, else the
/// systemd default.
pub fn status_path(
    flag: Option<PathBuf>,
    config: Option<&Path>,
) -> Result<Option<PathBuf>, ConfigError> {
    if flag.is_some() {
        return Ok(flag);
    }
    let mut raw = Raw::default();
    if let Some(path) = config {
        read_file(path, &mut raw)?;
    }
    Ok(raw
        .scalars
        .status_file
        .map(|(v, _)| PathBuf::from(v))
        .or_else(default_status_file))
}

fn default_status_file() -> Option<PathBuf> {
    std::env::var_os("RUNTIME_DIRECTORY")
        .filter(|d| !d.is_empty())
        // systemd may list several directories separated by ':'; the first one is ours.
        .map(|d| {
            let first = d
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            PathBuf::from(first).join("status.json")
        })
}

/// Builds the configuration from the flags and, if given, the file.
pub fn load(args: &RunArgs) -> Result<Config, ConfigError> {
    let mut raw = Raw::default();
    if let Some(path) = &args.config {
        read_file(path, &mut raw)?;
    }
    raw.scalars = std::mem::take(&mut raw.scalars).over(args.scalars());
    // A flag's limit replaces the file's limit of the same resource (and kind), as any flag
    // wins over its key; limits of other resources in the file still apply.
    for (file, flags, slope) in [
        (&mut raw.limits, &args.limits, false),
        (&mut raw.slopes, &args.slopes, true),
    ] {
        let given: Vec<&str> = flags.iter().map(|f| limit_key(f)).collect();
        file.retain(|(text, _)| {
            let key = limit_key(text);
            let kept = !given.contains(&key);
            if !kept {
                tracing::warn!(
                    "--{} {key}=... overrides {}.{key} from the file",
                    if slope { "slope" } else { "limit" },
                    if slope { "slopes" } else { "limits" }
                );
            }
            kept
        });
        file.extend(flags.iter().map(|l| (l.clone(), Source::Flag)));
    }
    if !args.command.is_empty() {
        raw.command = Some(args.command.clone());
    }
    // Flags replace the file's list as a whole, as forkd's own --listen does.
    if !args.listen.is_empty() {
        raw.listen = args
            .listen
            .iter()
            .map(|a| (a.clone(), Source::Flag))
            .collect();
    }
    build(raw, args.config.as_deref())
}

/// How much longer than forkd's own drain the supervisor waits before SIGKILL, so that a
/// graceful stop is not cut at the very instant forkd gives up on it (issue 10).
pub const STOP_MARGIN: Duration = Duration::from_secs(5);
/// forkd's `--shutdown-timeout` when nothing sets it.
const FORKD_SHUTDOWN: Duration = Duration::from_secs(10);

/// forkd's drain time: `--shutdown-timeout` in the command (either spelling), else the
/// `[server]` section's key, else forkd's default. A value that does not parse is forkd's to
/// refuse; the default stands in for it here.
fn forkd_shutdown(command: &[OsString], file: Option<&str>) -> Duration {
    let words: Vec<String> = command
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let from_flag =
        words
            .iter()
            .enumerate()
            .find_map(|(i, w)| match w.strip_prefix("--shutdown-timeout") {
                Some("") => words.get(i + 1).cloned(),
                Some(rest) => rest.strip_prefix('=').map(str::to_string),
                None => None,
            });
    from_flag
        .as_deref()
        .or(file)
        .and_then(|v| parse_duration(v).ok())
        .unwrap_or(FORKD_SHUTDOWN)
}

/// The resource named by `KEY=VALUE`.
fn limit_key(text: &str) -> &str {
    text.split('=').next().unwrap_or("").trim()
}

// Every key destructured above must be parsed: forgetting one is an error, not a warning.
#[deny(unused_variables)]
fn build(raw: Raw, config_file: Option<&Path>) -> Result<Config, ConfigError> {
    let Scalars {
        health_url,
        health_interval,
        health_timeout,
        health_threshold,
        readiness,
        ready_timeout,
        watchdog,
        backoff_base,
        backoff_cap,
        stable_after,
        max_restarts,
        restart_window,
        stop_timeout,
        recycle,
        slope_window,
        sample_interval,
        port,
        status_file,
        metrics_listen,
    } = raw.scalars;
    let health = get(health_url, None, |s| parse_health_url(s).map(Some))?;
    let health_interval = get(health_interval, Duration::from_secs(2), positive)?;
    let health_timeout = get(health_timeout, Duration::from_secs(1), positive)?;
    let health_threshold = get(health_threshold, 3, count(1))?;
    let readiness = get(readiness, Readiness::Auto, |s| match s {
        "auto" => Ok(Readiness::Auto),
        "notify" => Ok(Readiness::Notify),
        "port" => Ok(Readiness::Port),
        "none" => Ok(Readiness::None),
        other => Err(format!("{other:?} is not one of auto, notify, port, none")),
    })?;
    let ready_timeout = get(ready_timeout, Duration::from_secs(30), positive)?;
    let watchdog = get(watchdog, None, |s| positive(s).map(Some))?;
    let backoff_base = get(backoff_base, Duration::from_millis(100), positive)?;
    let backoff_cap = get(backoff_cap, Duration::from_secs(30), positive)?;
    let stable_after = get(stable_after, Duration::from_secs(10), positive)?;
    let max_restarts = get(max_restarts, 10, count(0))?;
    let restart_window = get(restart_window, None, |s| positive(s).map(Some))?;
    let command = resolve_command(raw.command, config_file)?;
    let stop_timeout = get(
        stop_timeout,
        forkd_shutdown(&command, raw.server_shutdown.as_deref()) + STOP_MARGIN,
        positive,
    )?;
    let recycle = get(recycle, Recycle::Restart, |s| match s {
        "restart" => Ok(Recycle::Restart),
        "hup" => Ok(Recycle::Hup),
        other => Err(format!("{other:?} is not one of restart, hup")),
    })?;
    let slope_window = get(slope_window, Duration::from_secs(60), positive)?;
    let sample_interval = get(sample_interval, Duration::from_secs(1), positive)?;
    let port = get(port, None, |s| match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(format!("{s:?} is not a TCP port (1-65535)")),
    })?;
    let status_file = get(status_file, default_status_file(), |s| {
        if s.is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(Some(PathBuf::from(s)))
        }
    })?;
    let metrics_listen = get(metrics_listen, None, |s| {
        let addr: SocketAddr = s
            .parse()
            .map_err(|_| format!("{s:?} is not an address such as 127.0.0.1:9101"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{s:?} is not a loopback address: metrics describe the host and stay on it"
            ));
        }
        Ok(Some(addr))
    })?;

    let mut listen: Vec<SocketAddr> = Vec::new();
    for (text, source) in &raw.listen {
        let at = At {
            key: "listen".into(),
            source: source.clone(),
        };
        let addr: SocketAddr = text.parse().map_err(|_| ConfigError::Value {
            at,
            message: format!("{text:?} is not an address such as 127.0.0.1:8080 or [::]:80"),
        })?;
        if listen.contains(&addr) {
            return Err(ConfigError::Other(format!("listen {addr} is given twice")));
        }
        listen.push(addr);
    }

    let mut limits = Vec::new();
    for (list, slope) in [(&raw.limits, false), (&raw.slopes, true)] {
        for (text, source) in list {
            let key = text.split('=').next().unwrap_or("").trim().to_string();
            let at = At {
                key: if slope { "slope" } else { "limit" }.to_string(),
                source: source.clone(),
            };
            let at = match source {
                Source::Flag => at,
                // In the file the key is the table entry itself.
                Source::File(p) => At {
                    key: format!("{}.{key}", if slope { "slopes" } else { "limits" }),
                    source: Source::File(p.clone()),
                },
            };
            let limit =
                parse_limit(text, slope).map_err(|message| ConfigError::Value { at, message })?;
            limits.push(limit);
        }
    }

    if backoff_cap < backoff_base {
        return Err(ConfigError::Other(format!(
            "backoff-cap ({backoff_cap:?}) is shorter than backoff-base ({backoff_base:?})"
        )));
    }
    let port = port
        .or(health.as_ref().map(|h| h.addr.port()))
        .or(listen.first().map(SocketAddr::port));
    if readiness == Readiness::Port && port.is_none() {
        return Err(ConfigError::Other(
            "readiness port needs --health-url or --port to know which port to try".into(),
        ));
    }
    let needs_port = limits.iter().any(|l| l.resource.is_tcp());
    if needs_port && port.is_none() {
        return Err(ConfigError::Other(
            "TCP limits need --port or --health-url to know which port to count".into(),
        ));
    }
    // `watch` fits a slope through at least three samples spanning most of the window: a
    // shorter window never holds them, and the slope limit would silently never fire.
    if limits.iter().any(|l| l.slope) && slope_window < sample_interval * 3 {
        return Err(ConfigError::Other(format!(
            "slope-window ({slope_window:?}) holds fewer than three samples at sample-interval \
             ({sample_interval:?}): a slope limit would never fire; make the window at least \
             three intervals"
        )));
    }
    // The status file is rewritten about once a second, by a rename in its directory: a
    // missing directory would fail every second instead of once, here.
    if let Some(path) = &status_file {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(ConfigError::Other(format!(
                "status-file {}: directory {} does not exist",
                path.display(),
                dir.display()
            )));
        }
    }

    if let Some(window) = restart_window {
        let backoff =
            forkd_daemon::backoff::Backoff::new(backoff_base, backoff_cap, stable_after, 1);
        let span = crate::throttle::shortest_span(&backoff, max_restarts);
        if max_restarts > 0 && span >= window {
            return Err(ConfigError::Other(format!(
                "restart-window ({}) can never hold {max_restarts} restarts: the backoff alone \
                 spaces them over at least {}, so that budget could never be spent; make the \
                 window longer, or leave it out (failed starts in a row are always counted)",
                show_duration(window),
                show_duration(span)
            )));
        }
    }
    Ok(Config {
        command,
        health,
        health_interval,
        health_timeout,
        health_threshold,
        readiness,
        ready_timeout,
        watchdog,
        backoff_base,
        backoff_cap,
        stable_after,
        max_restarts,
        restart_window,
        stop_timeout,
        recycle,
        limits,
        slope_window,
        sample_interval,
        port,
        status_file,
        metrics_listen,
        listen,
    })
}

/// `KEY=VALUE`: a size for rss/pss, a count otherwise; slopes are per minute.
fn parse_limit(text: &str, slope: bool) -> Result<Limit, String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE (e.g. fds=1000)"))?;
    let resource = Resource::from_key(key.trim()).ok_or_else(|| {
        format!(
            "unknown resource {:?} (known: {})",
            key.trim(),
            Resource::ALL.map(Resource::key).join(", ")
        )
    })?;
    let value = value.trim();
    let n = if resource.is_bytes() {
        parse_size(value)?
    } else {
        value
            .parse()
            .map_err(|_| format!("{value:?} for {} is not a whole number", resource.key()))?
    };
    if n == 0 {
        return Err(format!(
            "{} limit of 0 would recycle at once",
            resource.key()
        ));
    }
    Ok(Limit {
        resource,
        value: n,
        slope,
    })
}

/// `http://HOST[:PORT]/PATH`, resolved once: a supervisor that resolves names on every probe
/// would fail on its own resolver's trouble, which is not the child's.
fn parse_health_url(s: &str) -> Result<HealthUrl, String> {
    let rest = s
        .strip_prefix("http://")
        .ok_or_else(|| format!("{s:?} must start with http:// (the probe speaks plain HTTP)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{s:?} has no usable host"));
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let with_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: cannot resolve {authority:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?}: {authority:?} has no address"))?;
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "{s:?}: the path holds spaces or control characters"
        ));
    }
    Ok(HealthUrl {
        url: s.to_string(),
        addr,
        host: authority.to_string(),
        path: path.to_string(),
    })
}

/// The command to run: the one given, else forkd (with the same `--config` file). A first word
/// of plain `forkd` means the forkd installed beside this program, so a supervisor never runs a
/// different build of forkd found earlier on PATH.
fn resolve_command(
    given: Option<Vec<OsString>>,
    config_file: Option<&Path>,
) -> Result<Vec<OsString>, ConfigError> {
    let mut command = match given {
        Some(c) => c,
        None => {
            let mut c = vec![OsString::from("forkd")];
            if let Some(f) = config_file {
                c.push("--config".into());
                c.push(f.into());
            }
            c
        }
    };
    let Some(program) = command.first() else {
        return Err(ConfigError::Other(
            "the command to supervise is empty".into(),
        ));
    };
    if program == "forkd" {
        if let Some(sibling) = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("forkd")))
            .filter(|p| p.is_file())
        {
            command[0] = sibling.into();
        } else if find_on_path("forkd").is_none() {
            return Err(ConfigError::Other(
                "no forkd next to this program nor on PATH; give the command after --".into(),
            ));
        }
    } else if !runnable(Path::new(program)) {
        // Found only at the first start, this would be a spawn failure per restart until the
        // budget is spent, then exit 111 ("try again later") for what is a typo.
        return Err(ConfigError::Other(format!(
            "command {:?} is not an executable file{}",
            program,
            if program.to_string_lossy().contains('/') {
                ""
            } else {
                " on PATH"
            }
        )));
    }
    Ok(command)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What `execvp` would run: a path with a `/` as is, else the first match on PATH; it must be
/// a file with an execute bit.
fn runnable(program: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.as_os_str().to_string_lossy().contains('/') {
        return executable(program);
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(program))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(flags: &[&str]) -> Result<Config, String> {
        let mut all = vec!["forkd-supervisor"];
        all.extend_from_slice(flags);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        load(&cli.run).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = args(&["--", "/bin/true"]).unwrap();
        assert_eq!(c.command, vec![OsString::from("/bin/true")]);
        assert_eq!(c.backoff_base, Duration::from_millis(100));
        assert_eq!(c.backoff_cap, Duration::from_secs(30));
        assert_eq!((c.max_restarts, c.health_threshold), (10, 3));
        assert_eq!(c.readiness, Readiness::Auto);
        assert!(c.health.is_none() && c.port.is_none());
        assert_eq!(c.restart_window, None, "failed starts in a row, no window");
        assert_eq!(
            c.stop_timeout,
            Duration::from_secs(15),
            "forkd's 10 s and 5 more"
        );
    }

    /// The stop timeout outlasts forkd's own drain by STOP_MARGIN, wherever that is set.
    #[test]
    fn the_stop_timeout_follows_forkds_shutdown_timeout() {
        let c = args(&["--", "/bin/true", "--shutdown-timeout", "20s"]).unwrap();
        assert_eq!(c.stop_timeout, Duration::from_secs(25));
        let c = args(&["--", "/bin/true", "--shutdown-timeout=1s"]).unwrap();
        assert_eq!(c.stop_timeout, Duration::from_secs(6));
        let c = args(&[
            "--stop-timeout",
            "2s",
            "--",
            "/bin/true",
            "--shutdown-timeout=1s",
        ])
        .unwrap();
        assert_eq!(c.stop_timeout, Duration::from_secs(2), "the flag wins");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("forkd.toml");
        std::fs::write(
            &f,
            "[server]\nshutdown-timeout = '30s'\n[supervisor]\ncommand = ['/bin/true']\n",
        )
        .unwrap();
        let c = args(&["-c", f.to_str().unwrap()]).unwrap();
        assert_eq!(c.stop_timeout, Duration::from_secs(35));
    }

    /// A window the backoff can never fill would make the budget a promise never kept.
    #[test]
    fn a_window_the_backoff_cannot_fill_is_refused() {
        let err = args(&["--restart-window", "60s", "--", "/bin/true"]).unwrap_err();
        assert!(err.contains("can never hold 10 restarts"), "{err}");
        assert!(args(&["--restart-window", "5m", "--", "/bin/true"]).is_ok());
        assert!(args(&[
            "--restart-window",
            "1s",
            "--max-restarts",
            "0",
            "--",
            "/bin/true"
        ])
        .is_ok());
    }

    #[test]
    fn errors_name_the_flag_and_value() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--health-interval", "soon"],
                "--health-interval: \"soon\"",
            ),
            (
                &["--health-threshold", "0"],
                "--health-threshold: must be at least 1",
            ),
            (
                &["--readiness", "maybe"],
                "--readiness: \"maybe\" is not one of",
            ),
            (&["--limit", "fdz=3"], "--limit: unknown resource \"fdz\""),
            (&["--limit", "rss=lots"], "--limit: \"lots\" is not a size"),
            (&["--slope", "fds"], "--slope: \"fds\" is not KEY=VALUE"),
            (&["--metrics-listen", "0.0.0.0:9"], "not a loopback address"),
            (&["--health-url", "https://x/"], "must start with http://"),
            (&["--port", "70000"], "--port: \"70000\" is not a TCP port"),
            (&["--limit", "close-wait=5"], "TCP limits need --port"),
            (
                &["--backoff-base", "2s", "--backoff-cap", "1s"],
                "backoff-cap",
            ),
        ];
        for (flags, want) in cases {
            let mut all = flags.to_vec();
            all.extend(["--", "/bin/true"]);
            let err = args(&all).unwrap_err();
            assert!(err.contains(want), "{flags:?}: {err}");
        }
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("forkd.toml");
        std::fs::write(
            &f,
            "listen = ['127.0.0.1:8080']\n[supervisor]\nhealth-url = 'http://127.0.0.1:8080/'\n\
             health-threshold = 5\nstop-timeout = '3s'\nmax-restarts = 4\n\
             command = ['/bin/sleep', '100']\n[supervisor.limits]\nfds = 500\nrss = '64MiB'\n\
             [supervisor.slopes]\nfds = 60\n",
        )
        .unwrap();
        let path = f.to_str().unwrap();
        let c = args(&["-c", path, "--max-restarts", "7"]).unwrap();
        assert_eq!(c.health_threshold, 5);
        assert_eq!(c.max_restarts, 7, "the flag wins");
        assert_eq!(c.stop_timeout, Duration::from_secs(3));
        assert_eq!(c.port, Some(8080));
        assert_eq!(c.command[0], "/bin/sleep");
        assert_eq!(c.limits.len(), 3);
        assert!(c
            .limits
            .iter()
            .any(|l| l.resource == Resource::Rss && l.value == 64 << 20));

        std::fs::write(&f, "[supervisor]\nhealth-treshold = 5\n").unwrap();
        let err = args(&["-c", path]).unwrap_err();
        assert!(
            err.contains("unknown key supervisor.health-treshold"),
            "{err}"
        );
        std::fs::write(&f, "[supervisor]\nstop-timeout = 'forever'\n").unwrap();
        let err = args(&["-c", path, "--", "/bin/true"]).unwrap_err();
        assert!(err.contains("supervisor.stop-timeout in"), "{err}");
        assert!(err.contains("\"forever\""), "{err}");
        std::fs::write(&f, "[supervisor.limits]\nfds = 'many'\n").unwrap();
        let err = args(&["-c", path, "--", "/bin/true"]).unwrap_err();
        assert!(err.contains("supervisor.limits.fds in"), "{err}");
    }

    /// The long flags of the run mode, as clap has them.
    fn run_flags() -> Vec<String> {
        use clap::CommandFactory;
        Cli::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .filter(|l| !["help", "version", "config"].contains(&l.as_str()))
            .collect()
    }

    #[test]
    fn every_scalar_flag_is_a_key() {
        let mut flags = run_flags();
        flags.retain(|f| f != "limit" && f != "slope" && f != "listen");
        assert_eq!(flags, Scalars::names());
    }

    /// Every key set in the file and no flag: each is in force. A flag added to the supervisor
    /// but not to this file fails the test.
    #[test]
    fn every_key_of_the_file_is_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("forkd.toml");
        let status = dir.path().join("status.json");
        let text = format!(
            "[supervisor]\n\
             health-url = 'http://127.0.0.1:8089/healthz'\n\
             health-interval = '3s'\n\
             health-timeout = '500ms'\n\
             health-threshold = 4\n\
             readiness = 'port'\n\
             ready-timeout = '7s'\n\
             watchdog = '9s'\n\
             backoff-base = '200ms'\n\
             backoff-cap = '20s'\n\
             stable-after = '11s'\n\
             max-restarts = 6\n\
             restart-window = '2m'\n\
             stop-timeout = '4s'\n\
             recycle = 'hup'\n\
             slope-window = '30s'\n\
             sample-interval = '2s'\n\
             port = 8090\n\
             status-file = {status:?}\n\
             metrics-listen = '127.0.0.1:9109'\n\
             listen = ['127.0.0.1:8091', '[::1]:8091']\n\
             command = ['/bin/sleep', '100']\n\
             [supervisor.limits]\nfds = 500\nrss = '64MiB'\n\
             [supervisor.slopes]\nprocesses = 60\n"
        );
        std::fs::write(&f, &text).unwrap();
        // The file's keys, with its tables named as their flags are.
        let doc: toml::Table = toml::from_str(&text).unwrap();
        let keys: Vec<String> = doc["supervisor"]
            .as_table()
            .unwrap()
            .keys()
            .map(|k| match k.as_str() {
                "limits" => "limit".to_string(),
                "slopes" => "slope".to_string(),
                k => k.to_string(),
            })
            .collect();
        for flag in run_flags() {
            assert!(
                keys.contains(&flag),
                "--{flag} is not set in this test's file"
            );
        }
        assert!(keys.contains(&"command".to_string()));

        let c = args(&["-c", f.to_str().unwrap()]).unwrap();
        let secs = Duration::from_secs;
        let h = c.health.as_ref().unwrap();
        assert_eq!((h.addr.port(), h.path.as_str()), (8089, "/healthz"));
        assert_eq!(c.health_interval, secs(3));
        assert_eq!(c.health_timeout, Duration::from_millis(500));
        assert_eq!(c.health_threshold, 4);
        assert_eq!(c.readiness, Readiness::Port);
        assert_eq!(c.ready_timeout, secs(7));
        assert_eq!(c.watchdog, Some(secs(9)));
        assert_eq!(c.backoff_base, Duration::from_millis(200));
        assert_eq!(c.backoff_cap, secs(20));
        assert_eq!(c.stable_after, secs(11));
        assert_eq!(c.max_restarts, 6);
        assert_eq!(c.restart_window, Some(secs(120)));
        assert_eq!(c.stop_timeout, secs(4));
        assert_eq!(c.recycle, Recycle::Hup);
        assert_eq!(c.slope_window, secs(30));
        assert_eq!(c.sample_interval, secs(2));
        assert_eq!(c.port, Some(8090));
        assert_eq!(c.status_file.as_deref(), Some(status.as_path()));
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9109".parse().unwrap()));
        assert_eq!(
            c.listen,
            vec![
                "127.0.0.1:8091".parse().unwrap(),
                "[::1]:8091".parse().unwrap()
            ]
        );
        assert_eq!(c.command, vec![OsString::from("/bin/sleep"), "100".into()]);
        let mut limits: Vec<(Resource, u64, bool)> = c
            .limits
            .iter()
            .map(|l| (l.resource, l.value, l.slope))
            .collect();
        limits.sort_by_key(|l| (l.0.key(), l.2));
        assert_eq!(
            limits,
            vec![
                (Resource::Fds, 500, false),
                (Resource::Processes, 60, true),
                (Resource::Rss, 64 << 20, false),
            ]
        );
    }

    #[test]
    fn a_limit_flag_replaces_the_files_limit_of_that_resource() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("forkd.toml");
        std::fs::write(
            &f,
            "[supervisor]\ncommand = ['/bin/true']\n[supervisor.limits]\nfds = 500\nrss = '1G'\n",
        )
        .unwrap();
        let c = args(&["-c", f.to_str().unwrap(), "--limit", "fds=2000"]).unwrap();
        let mut limits: Vec<(Resource, u64)> =
            c.limits.iter().map(|l| (l.resource, l.value)).collect();
        limits.sort_by_key(|l| l.0.key());
        assert_eq!(
            limits,
            vec![(Resource::Fds, 2000), (Resource::Rss, 1 << 30)]
        );
    }

    #[test]
    fn contradictions_are_refused_before_the_child_starts() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--slope", "fds=60", "--slope-window", "2s", "--sample-interval", "1s"],
                "slope-window (2s) holds fewer than three samples",
            ),
            (
                &["--status-file", "/nonexistent-dir/status.json"],
                "status-file /nonexistent-dir/status.json: directory /nonexistent-dir does not exist",
            ),
        ];
        for (flags, want) in cases {
            let mut all = flags.to_vec();
            all.extend(["--", "/bin/true"]);
            let err = args(&all).unwrap_err();
            assert!(err.contains(want), "{flags:?}: {err}");
        }
        // A slope window of three intervals is enough; without slopes the window is moot.
        assert!(args(&[
            "--slope",
            "fds=60",
            "--slope-window",
            "3s",
            "--",
            "/bin/true"
        ])
        .is_ok());
        assert!(args(&["--slope-window", "1s", "--", "/bin/true"]).is_ok());
        let err = args(&["--", "/nonexistent/daemon"]).unwrap_err();
        assert!(
            err.contains("\"/nonexistent/daemon\" is not an executable file"),
            "{err}"
        );
        let err = args(&["--", "no-such-daemon-anywhere"]).unwrap_err();
        assert!(err.contains("not an executable file on PATH"), "{err}");
        let err = args(&["--", "/etc/passwd"]).unwrap_err();
        assert!(err.contains("not an executable file"), "{err}");
        assert!(args(&["--", "sh", "-c", "true"]).is_ok());
    }

    #[test]
    fn health_urls() {
        let h = parse_health_url("http://127.0.0.1:8080/healthz").unwrap();
        assert_eq!((h.addr.port(), h.path.as_str()), (8080, "/healthz"));
        let h = parse_health_url("http://[::1]:81").unwrap();
        assert_eq!(
            (h.addr.port(), h.path.as_str(), h.host.as_str()),
            (81, "/", "[::1]:81")
        );
        assert_eq!(
            parse_health_url("http://127.0.0.1/").unwrap().addr.port(),
            80
        );
        assert!(parse_health_url("http://127.0.0.1:8080/a b").is_err());
        assert!(parse_health_url("http:///").is_err());
    }
}
