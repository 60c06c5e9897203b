//! Configuration: command-line flags (clap) and an optional TOML file (`--config`, section
//! `[server]`), flags winning. Both fill the same [`Options`], so a key is spelled the same in
//! both places (`--header-timeout` is `header-timeout` in the file). Every error names the bad
//! key or value. A reload re-reads the file and applies the original flags on top again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::http;
use forkd_daemon::units::parse_duration;
use forkd_daemon::{limits, privdrop, Mode, Settings};

/// forkd: a forking HTTP server for static sites.
///
/// With no arguments it serves a small embedded demo blog on http://127.0.0.1:8080/.
/// Signals: TERM drains and exits, INT stops at once, HUP re-reads the configuration and
/// replaces the workers, USR1 reopens the access log.
#[derive(Debug, Clone, Default, Parser, Deserialize)]
#[command(name = "forkd", version, max_term_width = 100)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// TOML file with a [server] section using the same keys as these flags (flags win).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Check the configuration, print what would run, and exit.
    #[arg(long)]
    #[serde(skip)]
    pub check_config: bool,

    /// Address to listen on; repeat for several (IPv6 as [::1]:8080). [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(default)]
    pub listen: Vec<SocketAddr>,

    /// Directory to serve. Without it, an embedded demo site is served.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// prefork: a pool of workers accepts connections; fork: one child per connection.
    #[arg(long, value_enum)]
    pub mode: Option<ModeName>,

    /// Prefork pool size. [default: 8 per CPU, at least 16, within what memory holds]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Fork mode: most children at once; beyond it clients get a fast 503.
    /// [default: derived from available memory, at most 1024]
    #[arg(long, value_name = "N")]
    pub max_children: Option<usize>,

    /// A prefork worker is replaced after about this many requests (0: never). [default: 100000]
    #[arg(long, value_name = "N")]
    pub max_requests_per_worker: Option<u64>,

    /// On SIGTERM, how long in-flight requests may take before children are killed. [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub shutdown_timeout: Option<Duration>,

    /// Whole request head must arrive within this (slowloris). [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub header_timeout: Option<Duration>,

    /// Idle keep-alive connections are closed after this. [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub keepalive_timeout: Option<Duration>,

    /// A send that makes no progress for this long ends the connection (slow readers). [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub send_timeout: Option<Duration>,

    /// Large responses must be read at least this fast, in bytes per second. [default: http's]
    #[arg(long, value_name = "BYTES")]
    pub min_send_rate: Option<u64>,

    /// Largest request head in bytes (431 beyond). [default: 16384]
    #[arg(long, value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,

    /// Longest request target in bytes (414 beyond). [default: 8192]
    #[arg(long, value_name = "BYTES")]
    pub max_uri_bytes: Option<usize>,

    /// Largest request body read and discarded (413 beyond).
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<u64>,

    /// Requests on one keep-alive connection before it is closed.
    #[arg(long, value_name = "N")]
    pub max_requests_per_connection: Option<u64>,

    /// Serve names starting with a dot inside this path, e.g. /.well-known/ (repeat for
    /// several; the list replaces the default; an empty value allows none). A path allows what
    /// lies beneath its whole leading segments: /.well-known allows
    /// /.well-known/acme-challenge/x but not /.well-known/.x nor /a/.well-known/x. Other
    /// dot-files answer 404. [default: /.well-known/]
    #[arg(long, value_name = "PATH")]
    pub allow_dot_path: Option<Vec<String>>,

    /// Access log in Combined Log Format: a file, "-" for stderr, or "off". [default: off]
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<String>,

    /// Write the master's pid here (atomically), removed on exit.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Publish the scoreboard (limit hits, requests, children) here in the Prometheus text
    /// format, rewritten atomically every second.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,

    /// Started as root, children run as this user. [default: nobody]
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Started as root, children chroot here (give --root relative to the real filesystem).
    #[arg(long, value_name = "DIR")]
    pub chroot: Option<PathBuf>,

    /// Allow children to run as root (refused otherwise).
    #[arg(long)]
    #[serde(default)]
    pub allow_root: bool,

    /// Diagnostics filter for tracing (error, warn, info, debug, trace, or a directive).
    /// [default: info, or RUST_LOG]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    Prefork,
    Fork,
}

/// The file: `[server]` is ours; the supervisor's and load generator's sections may sit beside
/// it; anything else is a mistake worth naming.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: Options,
    #[serde(default)]
    #[allow(dead_code)]
    supervisor: Option<toml::Table>,
    #[serde(default)]
    #[allow(dead_code)]
    loadgen: Option<toml::Table>,
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Duration::try_from_secs_f64(s)
            .map(Some)
            .map_err(serde::de::Error::custom),
        Raw::Text(t) => parse_duration(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// The longest timeout accepted: a day is longer than any sane wait for a client or a drain.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Bounds of `--max-header-bytes`: a request line and a Host need room; past a mebibyte each
/// connection's buffer is a memory hazard, not a feature.
const MIN_HEADER_BYTES: usize = 256;
const MAX_HEADER_BYTES: usize = 1024 * 1024;

/// A configuration error, worded for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Options {
    /// Flags on top of the file: every field the command line set wins.
    fn over(self, file: Options) -> Options {
        macro_rules! pick {
            ($($f:ident),*) => { Options { $($f: self.$f.or(file.$f),)* ..self } };
        }
        let listen = if self.listen.is_empty() {
            file.listen.clone()
        } else {
            self.listen.clone()
        };
        let allow_root = self.allow_root || file.allow_root;
        Options {
            listen,
            allow_root,
            ..pick!(
                root,
                mode,
                workers,
                max_children,
                max_requests_per_worker,
                shutdown_timeout,
                header_timeout,
                keepalive_timeout,
                send_timeout,
                min_send_rate,
                max_header_bytes,
                max_uri_bytes,
                max_body_bytes,
                max_requests_per_connection,
                allow_dot_path,
                access_log,
                pid_file,
                user,
                chroot,
                log_level
            )
        }
    }
}

/// Everything needed to run, resolved and checked.
pub struct Config {
    pub options: Options,
    pub settings: Settings,
    pub http: http::Config,
}

/// Reads the file named by `--config` (if any), merges the flags on top, and checks it all.
pub fn load(flags: &Options) -> Result<Config, ConfigError> {
    let file = match &flags.config {
        Some(path) => read_file(path)?,
        None => Options::default(),
    };
    resolve(flags.clone().over(file))
}

fn read_file(path: &Path) -> Result<Options, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "unable to read config file {}: {e}",
            path.display()
        ))
    })?;
    parse_file(path, &text)
}

/// The `[server]` section of a configuration file's text; `path` names it in errors. Public
/// for the fuzzer: whatever the text, an `Ok` or a one-line error, never a panic.
pub fn parse_file(path: &Path, text: &str) -> Result<Options, ConfigError> {
    let file: File = toml::from_str(text).map_err(|e| ConfigError(toml_error(path, text, &e)))?;
    Ok(file.server)
}

/// A file's text with `flags` on top, checked as [`load`] checks it (for the fuzzer).
pub fn from_text(path: &Path, text: &str, flags: &Options) -> Result<Config, ConfigError> {
    resolve(flags.clone().over(parse_file(path, text)?))
}

/// One line that names the file, the line and what is wrong there (toml's own rendering spans
/// several lines, which a log line should not).
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    match e.span() {
        Some(span) => {
            let before = text.as_bytes().get(..span.start).unwrap_or(text.as_bytes());
            let line_no = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            format!("{}:{line_no}: {msg} (at `{line}`)", path.display())
        }
        None => format!("{}: {msg}", path.display()),
    }
}

fn resolve(o: Options) -> Result<Config, ConfigError> {
    let err = |s: String| ConfigError(s);
    let listen = if o.listen.is_empty() {
        vec![SocketAddr::from(([127, 0, 0, 1], 8080))]
    } else {
        o.listen.clone()
    };
    let available = limits::available_memory()
        .map_err(|e| err(format!("unable to read available memory: {e}")))?;
    let cost = limits::child_cost();
    let mode = match o.mode.unwrap_or(ModeName::Prefork) {
        ModeName::Prefork => {
            let workers = match o.workers {
                Some(0) => {
                    return Err(err("--workers 0: the pool needs at least one worker".into()))
                }
                Some(n) => {
                    limits::check_children(n, available, cost, "--workers").map_err(err)?;
                    n
                }
                None => {
                    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
                    (cpus * 8)
                        .max(16)
                        .min(limits::default_children(available, cost))
                }
            };
            Mode::Prefork { workers }
        }
        ModeName::Fork => {
            let max_children = match o.max_children {
                Some(0) => {
                    return Err(err("--max-children 0: at least one child is needed".into()))
                }
                Some(n) => {
                    limits::check_children(n, available, cost, "--max-children").map_err(err)?;
                    n
                }
                None => limits::default_children(available, cost),
            };
            Mode::Fork { max_children }
        }
    };
    let credentials = privdrop::resolve(
        o.user.as_deref().unwrap_or("nobody"),
        o.chroot.clone(),
        o.allow_root,
    )
    .map_err(|e| err(e.to_string()))?;
    let settings = Settings {
        name: "forkd",
        mode,
        listen,
        max_requests_per_worker: o.max_requests_per_worker.unwrap_or(100_000),
        shutdown_timeout: o.shutdown_timeout.unwrap_or(Duration::from_secs(10)),
        credentials,
        pid_file: o.pid_file.clone(),
        metrics_file: o.metrics_file.clone(),
    };
    let mut h = http::Config::default();
    macro_rules! set {
        ($($opt:ident => $field:ident),*) => { $( if let Some(v) = o.$opt.clone() { h.$field = v; } )* };
    }
    set!(
        header_timeout => header_timeout,
        keepalive_timeout => keepalive_timeout,
        send_timeout => send_timeout,
        min_send_rate => min_send_rate,
        max_header_bytes => max_header_bytes,
        max_uri_bytes => max_uri_bytes,
        max_body_bytes => max_body_bytes,
        max_requests_per_connection => max_requests_per_connection
    );
    if let Some(paths) = &o.allow_dot_path {
        h.dot_allow = dot_allow(paths).map_err(err)?;
    }
    for (name, d) in [
        ("--header-timeout", h.header_timeout),
        ("--keepalive-timeout", h.keepalive_timeout),
        ("--send-timeout", h.send_timeout),
        ("--shutdown-timeout", settings.shutdown_timeout),
    ] {
        if d.is_zero() && name != "--shutdown-timeout" {
            return Err(err(format!(
                "{name} must be above zero (a timeout of 0 would disable it)"
            )));
        }
        // A deadline is now plus the timeout: past what the clock holds, that sum panics.
        if d > MAX_TIMEOUT {
            return Err(err(format!(
                "{name} {} is above the longest timeout forkd accepts ({})",
                humantime::format_duration(d),
                humantime::format_duration(MAX_TIMEOUT)
            )));
        }
    }
    // Buffers are sized from these at start; a size near usize::MAX would overflow.
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&h.max_header_bytes) {
        return Err(err(format!(
            "--max-header-bytes {} is outside {MIN_HEADER_BYTES}..={MAX_HEADER_BYTES}",
            h.max_header_bytes
        )));
    }
    if h.max_uri_bytes == 0 || h.max_uri_bytes > h.max_header_bytes {
        return Err(err(format!(
            "--max-uri-bytes {} must be between 1 and --max-header-bytes ({})",
            h.max_uri_bytes, h.max_header_bytes
        )));
    }
    Ok(Config {
        options: o,
        settings,
        http: h,
    })
}

/// `--allow-dot-path` entries as `http::Config::dot_allow` holds them: whole segments joined
/// by `/`, with no leading or trailing `/`. Empty entries are skipped (so `--allow-dot-path ''`
/// allows none); an entry must be absolute and hold no `.` or `..` segment (requests are
/// matched after dot segments are removed, so such an entry could never match) and no NUL.
fn dot_allow(paths: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for p in paths.iter().filter(|p| !p.is_empty()) {
        let bad = |why: &str| format!("--allow-dot-path {p:?}: {why}");
        if !p.starts_with('/') {
            return Err(bad("must start with / (a path beneath --root)"));
        }
        if p.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        let segments: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            return Err(bad(
                "allows every dot-file; name a directory such as /.well-known/",
            ));
        }
        if segments.iter().any(|s| *s == "." || *s == "..") {
            return Err(bad("must not hold . or .. segments"));
        }
        out.push(segments.join("/"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("forkd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: File = toml::from_str(
            "[server]\nworkers = 3\nkeepalive-timeout = \"2s\"\nheader-timeout = 1.5\n[supervisor]\nx = 1\n",
        )
        .unwrap();
        let o = parse(&["--workers", "5"]).over(file.server);
        assert_eq!(o.workers, Some(5));
        assert_eq!(o.keepalive_timeout, Some(Duration::from_secs(2)));
        assert_eq!(o.header_timeout, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn file_errors_name_the_key() {
        let e = toml::from_str::<File>("[server]\nworkerz = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workerz"), "{e}");
        let e = toml::from_str::<File>("[server]\nworkers = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workers"), "{e}");
        let e = toml::from_str::<File>("[server]\nsend-timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("soon"), "{e}");
        let e = toml::from_str::<File>("[sever]\n").unwrap_err().to_string();
        assert!(e.contains("sever"), "{e}");
    }

    #[test]
    fn allow_dot_path_flag_and_key() {
        let http = |o: Options| resolve(o).map(|c| c.http.dot_allow).map_err(|e| e.0);
        assert_eq!(http(parse(&[])).unwrap(), vec![".well-known"]);
        assert_eq!(
            http(parse(&[
                "--allow-dot-path",
                "/.well-known/",
                "--allow-dot-path",
                "//a//.b",
            ]))
            .unwrap(),
            vec![".well-known", "a/.b"]
        );
        assert!(http(parse(&["--allow-dot-path", ""])).unwrap().is_empty());
        for (bad, why) in [
            (".env", "must start with /"),
            ("/", "allows every dot-file"),
            ("//", "allows every dot-file"),
            ("/a/../.git", ". or .."),
            ("/./.git", ". or .."),
        ] {
            let e = http(parse(&["--allow-dot-path", bad])).unwrap_err();
            assert!(
                e.contains("--allow-dot-path") && e.contains(why),
                "{bad}: {e}"
            );
        }
        // The file's list, unless the command line gives one; an empty list allows none.
        let file: File =
            toml::from_str("[server]\nallow-dot-path = [\"/.well-known\", \"/.hg\"]\n").unwrap();
        assert_eq!(
            http(parse(&[]).over(file.server)).unwrap(),
            vec![".well-known", ".hg"]
        );
        let file: File = toml::from_str("[server]\nallow-dot-path = []\n").unwrap();
        assert!(http(parse(&[]).over(file.server)).unwrap().is_empty());
        let file: File = toml::from_str("[server]\nallow-dot-path = [\"/.hg\"]\n").unwrap();
        let o = parse(&["--allow-dot-path", "/.well-known"]).over(file.server);
        assert_eq!(http(o).unwrap(), vec![".well-known"]);
    }

    #[test]
    fn sizes_and_timeouts_are_bounded() {
        for (args, needle) in [
            (&["--header-timeout", "25h"][..], "--header-timeout"),
            (&["--send-timeout", "2days"], "--send-timeout"),
            (&["--shutdown-timeout", "30d"], "--shutdown-timeout"),
            (&["--keepalive-timeout", "0"], "above zero"),
            (
                &["--max-header-bytes", "18446744073709551615"],
                "--max-header-bytes",
            ),
            (&["--max-header-bytes", "10"], "--max-header-bytes"),
            (&["--max-uri-bytes", "0"], "--max-uri-bytes"),
            (
                &["--max-uri-bytes", "20000", "--max-header-bytes", "16384"],
                "--max-uri-bytes",
            ),
        ] {
            let e = resolve(parse(args))
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"))
                .0;
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        assert!(resolve(parse(&[
            "--shutdown-timeout",
            "0",
            "--header-timeout",
            "1d"
        ]))
        .is_ok());
    }

    #[test]
    fn memory_refuses_impossible_pools() {
        let e = resolve(parse(&["--workers", "1000000"])).err().unwrap().0;
        assert!(e.contains("--workers 1000000"), "{e}");
        let e = resolve(parse(&["--workers", "0"])).err().unwrap().0;
        assert!(e.contains("--workers 0"), "{e}");
    }
}
