//! Configuration: command-line flags (clap) and an optional TOML file (`--config`, section
//! `[server]`), flags winning. Both fill the same [`Options`], so a key is spelled the same in
//! both places (`--header-timeout` is `header-timeout` in the file). Every error names the bad
//! key or value. A reload re-reads the file and applies the original flags on top again.
//!
//! The merge cannot forget a key: one macro (`options_keys!`) lists the fields of [`Options`]
//! and expands to code that names each of them without `..`, so a new field that is not listed
//! does not compile. The same list gives [`Config::describe`] (what `--check-config` prints)
//! and the notices of file keys a flag overrides.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::http;
use forkd_daemon::units::parse_duration;
use forkd_daemon::{limits, privdrop, Mode, Scheduling, Settings};

/// forkd: a forking HTTP server for static sites.
///
/// With no arguments it serves a small embedded demo blog on http://127.0.0.1:8080/.
/// Signals: TERM drains and exits, INT stops at once, HUP re-reads the configuration and
/// replaces the workers, USR1 reopens the access log.
#[derive(Debug, Clone, Default, Parser, Deserialize)]
#[command(
    name = "forkd",
    version,
    max_term_width = 100,
    args_conflicts_with_subcommands = true
)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
// The field comments are `--help` text, where `[server]` and `[::1]` mean what they say.
#[allow(rustdoc::broken_intra_doc_links)]
pub struct Options {
    /// A task other than serving.
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<Command>,

    /// TOML file with a [server] section using the same keys as these flags (flags win).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Check the configuration, print the effective one (every key as a [server] section,
    /// each with where its value came from: default, file or flag), and exit.
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

    /// prefork: a pool of workers accepts connections, one connection each at a time; fork:
    /// one child per connection; event: a pool of event-loop workers, each multiplexing up to
    /// --worker-connections connections (a crash costs a worker all of its connections).
    /// [default: prefork]
    #[arg(long, value_enum)]
    pub mode: Option<ModeName>,

    /// Pool size (prefork and event modes). [default: prefork 16 per CPU, at least 64; event one
    /// per CPU; within what memory holds]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Fork mode: most children at once; beyond it clients get a fast 503.
    /// [default: derived from available memory, at most 1024]
    #[arg(long, value_name = "N")]
    pub max_children: Option<usize>,

    /// Event mode: most connections one worker holds at once (up to 65536, and within the fd
    /// limit: two fds per connection); a worker whose table is full leaves new connections
    /// queued for the others. [default: 1024]
    #[arg(long, value_name = "N")]
    pub worker_connections: Option<usize>,

    /// CPU scheduling of workers and fork-mode children (the master keeps its own): inherit
    /// (the master's policy, as chrt or a service manager set it) or batch (SCHED_BATCH: a
    /// worker that wakes does not preempt the running task; for event workers whose clients,
    /// a local proxy say, share their CPUs, which then serve in batches; when other work takes
    /// every CPU a request waits a few milliseconds more). [default: inherit]
    #[arg(long, value_enum)]
    pub worker_sched: Option<SchedName>,

    /// A worker is replaced after about this many requests (0: never). [default: 100000 in
    /// prefork mode; 0 in event mode, where a recycle would close every connection the worker
    /// holds, as often as every few seconds under load]
    #[arg(long, value_name = "N")]
    pub max_requests_per_worker: Option<u64>,

    /// On SIGTERM, and for the children a reload (SIGHUP) replaces, how long in-flight requests
    /// may take before those children are killed. [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub shutdown_timeout: Option<Duration>,

    /// Whole request head must arrive within this (slowloris). [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub header_timeout: Option<Duration>,

    /// A connection reaches a worker only once its client sends, or after about this long
    /// (TCP_DEFER_ACCEPT, rounded up to 1, 3, 7, 15... s; 0: off). [default: the header timeout]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub defer_accept: Option<Duration>,

    /// Most connections one client address (IPv6: one /64) may hold at once; beyond it a fast
    /// 503 (0: no limit; set 0 behind a proxy, whose one address carries every client).
    /// [default: half the workers, a quarter of --max-children in fork mode]
    #[arg(long, value_name = "N")]
    pub max_conns_per_client: Option<usize>,

    /// Idle keep-alive connections are closed after this. [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub keepalive_timeout: Option<Duration>,

    /// A send that makes no progress for this long ends the connection (slow readers). [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub send_timeout: Option<Duration>,

    /// Large responses must be read at least this fast, and request bodies (read and dropped)
    /// sent at least this fast, in bytes per second. [default: 16384]
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

    /// File served for a directory; repeat for several, tried in order (the first that exists
    /// is served). [default: index.html]
    #[arg(long, value_name = "NAME")]
    pub index: Option<Vec<String>>,

    /// List a directory that has none of the index files (sorted names, sizes, dates; never
    /// dot-files nor symlinks that leave the root) instead of answering 404.
    #[arg(long)]
    #[serde(default)]
    pub autoindex: bool,

    /// Most entries a listing reads; a directory with more is listed up to here, with a line
    /// saying so (counted as autoindex_truncated). [default: 1000]
    #[arg(long, value_name = "N")]
    pub autoindex_max_entries: Option<usize>,

    /// Send a file beneath the root with an error status instead of the built-in text, as
    /// STATUS=PATH (any 4xx or 5xx, e.g. 404=/404.html); repeat for several. A page that
    /// cannot be served falls back to the built-in text.
    #[arg(long, value_name = "STATUS=PATH")]
    pub error_page: Option<Vec<String>>,

    /// A request for a host no [[server.vhost]] names: served from --root (default), or
    /// refused with 421 (Misdirected Request) or 404. [default: default]
    #[arg(long, value_enum)]
    pub unknown_host: Option<UnknownHostName>,

    /// File only: [[server.headers]] tables, each a glob with cache-control and/or a set
    /// table of extra fields; every matching rule applies, a later one winning a field.
    #[arg(skip)]
    #[serde(default)]
    pub headers: Option<Vec<HeaderRuleSpec>>,

    /// File only: [server.security-headers], fields sent on every response (name = value,
    /// or name = false to turn a default off), or security-headers = false for none.
    #[arg(skip)]
    #[serde(default)]
    pub security_headers: Option<SecurityHeaders>,

    /// File only: [[server.vhost]] tables, each host names (exact or *.example.org) and a
    /// root.
    #[arg(skip)]
    #[serde(default)]
    pub vhost: Option<Vec<VHostSpec>>,

    /// Files each worker keeps open (or, when small, in memory) between requests; a kept file
    /// is looked at again at most a second after it was last checked, so an edit, a rename
    /// or a deletion shows within a second (0: no cache, every request opens). [default: 1024]
    #[arg(long, value_name = "N")]
    pub file_cache_entries: Option<usize>,

    /// Bytes of small files (64 KiB or less) and their paths each worker keeps in memory;
    /// counted in the memory each child is allowed. [default: 8388608]
    #[arg(long, value_name = "BYTES")]
    pub file_cache_bytes: Option<u64>,

    /// Send file.br, file.zst or file.gz in place of a text-like file (HTML, CSS, JS, JSON, SVG,
    /// ...) when the request accepts that coding and the sibling is a regular file no older
    /// than the file; `forkd precompress DIR` makes them. [default: true]
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub precompressed: Option<bool>,

    /// File only, as the table [server.mime]: extension = "media/type", e.g. gmi =
    /// "text/gemini", used before the built-in types.
    #[arg(skip)]
    #[serde(default)]
    pub mime: MimeTable,

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

    /// Answer HAProxy's agent-check here: "up ready N%" (N: free share of the pool), "drain"
    /// during a graceful stop or a reload, "down" when no worker can serve. [default: off]
    #[arg(long, value_name = "ADDR:PORT")]
    pub agent_listen: Option<SocketAddr>,

    /// Serve a status page (HTML, refreshing itself) and /status.json of the scoreboard here;
    /// a loopback address unless --status-public. [default: off]
    #[arg(long, value_name = "ADDR:PORT")]
    pub status_listen: Option<SocketAddr>,

    /// Allow --status-listen on an address other hosts can reach (the page shows load, limits
    /// and crashes: put it behind a firewall or a proxy with access control).
    #[arg(long)]
    #[serde(default)]
    pub status_public: bool,

    /// Diagnostics filter for tracing (error, warn, info, debug, trace, or a directive).
    /// [default: info, or RUST_LOG]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// What `forkd SUBCOMMAND` does instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    Precompress(crate::precompress::Args),
}

/// `[server.mime]`: media types by extension, as the file gives them (checked by `resolve`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct MimeTable(pub std::collections::BTreeMap<String, String>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    Prefork,
    Fork,
    Event,
}

/// What `worker-sched` may say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedName {
    Batch,
    Inherit,
}

impl SchedName {
    fn name(self) -> &'static str {
        match self {
            SchedName::Batch => "batch",
            SchedName::Inherit => "inherit",
        }
    }
}

/// What `unknown-host` may say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
pub enum UnknownHostName {
    #[value(name = "default")]
    #[serde(rename = "default")]
    Default,
    #[value(name = "421")]
    #[serde(rename = "421")]
    Misdirected,
    #[value(name = "404")]
    #[serde(rename = "404")]
    NotFound,
}

impl UnknownHostName {
    fn name(self) -> &'static str {
        match self {
            UnknownHostName::Default => "default",
            UnknownHostName::Misdirected => "421",
            UnknownHostName::NotFound => "404",
        }
    }
}

/// One `[[server.headers]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HeaderRuleSpec {
    pub glob: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
}

/// `[server.security-headers]`, or `security-headers = false`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum SecurityHeaders {
    /// Only `false` means something: no security field at all.
    Switch(bool),
    Fields(BTreeMap<String, FieldValue>),
}

/// A security field's value, or `false` to turn a default one off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum FieldValue {
    Value(String),
    Switch(bool),
}

/// One `[[server.vhost]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct VHostSpec {
    pub host: HostNames,
    pub root: PathBuf,
}

/// `host = "a.org"` or `host = ["a.org", "*.a.org"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum HostNames {
    One(String),
    Many(Vec<String>),
}

impl HostNames {
    pub fn list(&self) -> Vec<String> {
        match self {
            HostNames::One(h) => vec![h.clone()],
            HostNames::Many(l) => l.clone(),
        }
    }
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

/// Where a key's effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Default,
    File,
    Flag,
}

impl Origin {
    fn describe(self) -> &'static str {
        match self {
            Origin::Default => "default",
            Origin::File => "from file",
            Origin::Flag => "from flag",
        }
    }
}

/// One scalar value as the file spells it and as the command line spells it.
trait Scalar {
    /// TOML text: `8`, `"10s"`, `"/srv/www"`.
    fn toml(&self) -> String;
    /// Command-line words, one `--key WORD` each (a list repeats its flag).
    fn words(&self) -> Vec<String>;
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A word as a shell would need it to survive: empty or spaced words are quoted.
fn shell_word(s: &str) -> String {
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '\'') {
        format!("'{}'", s.replace('\'', r"'\''"))
    } else {
        s.to_string()
    }
}

macro_rules! scalar_by_display {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            fn toml(&self) -> String {
                self.to_string()
            }
            fn words(&self) -> Vec<String> {
                vec![self.to_string()]
            }
        }
    )*};
}
scalar_by_display!(usize, u64, bool);

impl Scalar for String {
    fn toml(&self) -> String {
        toml_string(self)
    }
    fn words(&self) -> Vec<String> {
        vec![shell_word(self)]
    }
}

impl Scalar for PathBuf {
    fn toml(&self) -> String {
        toml_string(&self.to_string_lossy())
    }
    fn words(&self) -> Vec<String> {
        vec![shell_word(&self.to_string_lossy())]
    }
}

impl Scalar for SocketAddr {
    fn toml(&self) -> String {
        toml_string(&self.to_string())
    }
    fn words(&self) -> Vec<String> {
        vec![self.to_string()]
    }
}

impl Scalar for Duration {
    fn toml(&self) -> String {
        toml_string(&humantime::format_duration(*self).to_string())
    }
    fn words(&self) -> Vec<String> {
        vec![shell_word(&humantime::format_duration(*self).to_string())]
    }
}

impl Scalar for ModeName {
    fn toml(&self) -> String {
        toml_string(self.name())
    }
    fn words(&self) -> Vec<String> {
        vec![self.name().to_string()]
    }
}

impl Scalar for SchedName {
    fn toml(&self) -> String {
        toml_string(self.name())
    }
    fn words(&self) -> Vec<String> {
        vec![self.name().to_string()]
    }
}

impl Scalar for UnknownHostName {
    fn toml(&self) -> String {
        toml_string(self.name())
    }
    fn words(&self) -> Vec<String> {
        vec![self.name().to_string()]
    }
}

/// Tables print as TOML inline tables, which read back as the tables they came from. They
/// are file-only keys: no command line ever gives them, so their words are never used.
macro_rules! scalar_by_serde {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            fn toml(&self) -> String {
                toml::Value::try_from(self).map_or_else(|e| format!("\"{e}\""), |v| v.to_string())
            }
            fn words(&self) -> Vec<String> {
                vec![shell_word(&Scalar::toml(self))]
            }
        }
    )*};
}
scalar_by_serde!(HeaderRuleSpec, SecurityHeaders, VHostSpec);

impl<T: Scalar> Scalar for Vec<T> {
    fn toml(&self) -> String {
        let items: Vec<String> = self.iter().map(Scalar::toml).collect();
        format!("[{}]", items.join(", "))
    }
    fn words(&self) -> Vec<String> {
        match self.is_empty() {
            // `--allow-dot-path ''` is how the command line gives an empty list.
            true => vec![shell_word("")],
            false => self.iter().flat_map(Scalar::words).collect(),
        }
    }
}

/// A field of [`Options`]: whether a source gave it, how the two sources merge, how it prints.
trait Key {
    /// True when this source gave a value (a flag on the command line, a key in the file).
    fn is_set(&self) -> bool;
    /// The value as TOML text; `None` when unset.
    fn toml(&self) -> Option<String>;
    /// The value as the command line gives it: `--listen A --listen B`, `--allow-root`.
    fn flag(&self, name: &str) -> String;
    /// The flag's value if the command line gave one, else the file's.
    fn merge(flag: Self, file: Self) -> Self
    where
        Self: Sized,
    {
        if flag.is_set() {
            flag
        } else {
            file
        }
    }
}

fn flag_words(name: &str, words: Vec<String>) -> String {
    let flags: Vec<String> = words.iter().map(|w| format!("--{name} {w}")).collect();
    flags.join(" ")
}

impl<T: Scalar> Key for Option<T> {
    fn is_set(&self) -> bool {
        self.is_some()
    }
    fn toml(&self) -> Option<String> {
        self.as_ref().map(Scalar::toml)
    }
    fn flag(&self, name: &str) -> String {
        flag_words(name, self.as_ref().map(Scalar::words).unwrap_or_default())
    }
}

/// `listen`: an empty list is no value (the command line cannot give an empty list).
impl<T: Scalar> Key for Vec<T> {
    fn is_set(&self) -> bool {
        !self.is_empty()
    }
    fn toml(&self) -> Option<String> {
        Some(Scalar::toml(self))
    }
    fn flag(&self, name: &str) -> String {
        flag_words(name, self.iter().flat_map(Scalar::words).collect())
    }
}

/// A switch: only `true` is a value a flag can give, so only `true` counts as given.
impl Key for bool {
    fn is_set(&self) -> bool {
        *self
    }
    fn toml(&self) -> Option<String> {
        Some(self.to_string())
    }
    fn flag(&self, name: &str) -> String {
        format!("--{name}")
    }
}

/// `[server.mime]` has no flag: it is given when the file has entries, and prints as an
/// inline table, which reads back as the same `[server.mime]`.
impl Key for MimeTable {
    fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
    fn toml(&self) -> Option<String> {
        let entries: Vec<String> = self
            .0
            .iter()
            .map(|(ext, mime)| format!("{} = {}", toml_string(ext), toml_string(mime)))
            .collect();
        Some(match entries.is_empty() {
            true => "{}".to_string(),
            false => format!("{{ {} }}", entries.join(", ")),
        })
    }
    fn flag(&self, _name: &str) -> String {
        String::new()
    }
}

/// The one list of `Options`' fields. Both expansions name every field without `..`: the
/// merge builds an `Options` literal and the key view destructures one, so a field added to
/// `Options` but not here does not compile, and cannot be merged by one and forgotten by the
/// other (as `metrics-file` once was). Key names are the field names in kebab-case, as clap
/// (`--max-children`) and serde (`max-children`) spell them.
macro_rules! options_keys {
    (flag_only: $($only:ident),*; keys: $($f:ident),* $(,)?) => {
        impl Options {
            /// Flags on top of the file: every key the command line gave wins.
            fn over(self, file: Options) -> Options {
                Options {
                    $($only: self.$only,)*
                    $($f: Key::merge(self.$f, file.$f),)*
                }
            }

            /// Every key of the file and the command line, in `--help` order.
            fn keys(&self) -> Vec<(String, &dyn Key)> {
                let Options { $($only: _,)* $($f,)* } = self;
                vec![$((stringify!($f).replace('_', "-"), $f as &dyn Key),)*]
            }
        }
    };
}

options_keys!(
    flag_only: command, config, check_config;
    keys:
        listen,
        root,
        mode,
        workers,
        max_children,
        worker_connections,
        worker_sched,
        max_requests_per_worker,
        shutdown_timeout,
        header_timeout,
        defer_accept,
        max_conns_per_client,
        keepalive_timeout,
        send_timeout,
        min_send_rate,
        max_header_bytes,
        max_uri_bytes,
        max_body_bytes,
        max_requests_per_connection,
        allow_dot_path,
        index,
        autoindex,
        autoindex_max_entries,
        error_page,
        unknown_host,
        headers,
        security_headers,
        vhost,
        file_cache_entries,
        file_cache_bytes,
        precompressed,
        mime,
        access_log,
        pid_file,
        metrics_file,
        user,
        chroot,
        allow_root,
        agent_listen,
        status_listen,
        status_public,
        log_level,
);

impl ModeName {
    fn name(self) -> &'static str {
        match self {
            ModeName::Prefork => "prefork",
            ModeName::Fork => "fork",
            ModeName::Event => "event",
        }
    }

    /// Keys that only another mode reads: accepted (one file may serve every mode), but said
    /// to have no effect.
    fn unused_keys(self) -> &'static [&'static str] {
        match self {
            ModeName::Prefork => &["max-children", "worker-connections"],
            ModeName::Fork => &["workers", "max-requests-per-worker", "worker-connections"],
            ModeName::Event => &["max-children"],
        }
    }
}

/// Everything needed to run, resolved and checked.
pub struct Config {
    /// Flags merged over the file, before defaults.
    pub options: Options,
    pub settings: Settings,
    pub http: http::Config,
    /// The virtual hosts' names, checked, and each one's root, in the file's order.
    pub vhost_names: http::vhost::Names,
    pub vhost_roots: Vec<PathBuf>,
    /// Every key with the value in force, defaults included.
    effective: Options,
    /// Where each key's value came from, by key name.
    origins: Vec<(String, Origin)>,
    /// One line per file key a flag overrides with another value, and per key that has no
    /// effect in this configuration: what an operator who edited the file must be told.
    pub notices: Vec<String>,
}

impl Config {
    /// The effective configuration as `--check-config` prints it: a `[server]` section that
    /// forkd reads back as is, one key per line in `--help` order, `key = value  # ORIGIN`
    /// where ORIGIN is `default`, `from file` or `from flag` (with `, not used in MODE mode`
    /// for a key of the other mode); a key with no value is a comment, `# key: not set  #
    /// default`.
    pub fn describe(&self) -> String {
        let mode = self.effective.mode.unwrap_or(ModeName::Prefork);
        let mut out = String::from(
            "# forkd: effective configuration (a flag wins over the file, the file over the default)\n[server]\n",
        );
        for (name, value) in self.effective.keys() {
            let origin = self
                .origins
                .iter()
                .find(|(k, _)| *k == name)
                .map_or(Origin::Default, |(_, o)| *o);
            let unused = if mode.unused_keys().contains(&name.as_str()) {
                format!(", not used in {} mode", mode.name())
            } else {
                String::new()
            };
            let line = match value.toml() {
                Some(v) => format!("{name} = {v}  # {}{unused}\n", origin.describe()),
                None => format!("# {name}: not set  # {}{unused}\n", origin.describe()),
            };
            out.push_str(&line);
        }
        out
    }
}

/// Reads the file named by `--config` (if any), merges the flags on top, and checks it all.
pub fn load(flags: &Options) -> Result<Config, ConfigError> {
    match &flags.config {
        Some(path) => merge(flags, Some((path, read_file(path)?))),
        None => merge(flags, None),
    }
}

/// Merges, records where each value came from and which file keys the flags override, then
/// resolves.
fn merge(flags: &Options, file: Option<(&Path, Options)>) -> Result<Config, ConfigError> {
    let (path, file) = match file {
        Some((path, o)) => (Some(path), o),
        None => (None, Options::default()),
    };
    let mut origins = Vec::new();
    let mut notices = Vec::new();
    for ((name, flag), (_, in_file)) in flags.keys().into_iter().zip(file.keys()) {
        let origin = match (flag.is_set(), in_file.is_set()) {
            (true, _) => Origin::Flag,
            (false, true) => Origin::File,
            (false, false) => Origin::Default,
        };
        if let (Some(path), true, true) = (path, flag.is_set(), in_file.is_set()) {
            if flag.toml() != in_file.toml() {
                notices.push(format!(
                    "{} overrides {name} = {} from {}",
                    flag.flag(&name),
                    in_file.toml().unwrap_or_default(),
                    path.display()
                ));
            }
        }
        origins.push((name, origin));
    }
    let mut cfg = resolve(flags.clone().over(file))?;
    notices.append(&mut cfg.notices);
    cfg.notices = notices;
    cfg.origins = origins;
    Ok(cfg)
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
    merge(flags, Some((path, parse_file(path, text)?)))
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

/// A pool size given for either mode: at least one, and (for the mode in force) within what
/// memory holds; the default is derived from the CPUs and memory.
fn children(
    given: Option<usize>,
    active: bool,
    flag: &str,
    available: u64,
    cost: u64,
    default: impl FnOnce() -> usize,
) -> Result<usize, ConfigError> {
    match given {
        Some(0) => Err(ConfigError(format!(
            "{flag} 0: at least one child is needed"
        ))),
        Some(n) if active => {
            limits::check_children(n, available, cost, flag).map_err(ConfigError)?;
            Ok(n)
        }
        Some(n) => Ok(n),
        None => Ok(default()),
    }
}

/// Combinations that cannot work, refused before anything starts (a bind, a fork, a file
/// written), so that they are exit 100 with the key named rather than a failure at run time
/// that looks temporary (111) or no failure at all.
fn check_combinations(o: &Options, listen: &[SocketAddr]) -> Result<(), ConfigError> {
    let err = |s: String| Err(ConfigError(s));
    for (i, a) in listen.iter().enumerate() {
        // Port 0 asks for any free port: twice is two sockets, not a conflict.
        if a.port() != 0 && listen.iter().skip(i + 1).any(|b| b == a) {
            return err(format!(
                "--listen {a} is given twice (the second bind would fail with \"address in use\")"
            ));
        }
    }
    let mut files: Vec<(&str, PathBuf)> = Vec::new();
    if let Some(p) = &o.pid_file {
        files.push(("--pid-file", p.clone()));
    }
    if let Some(p) = &o.metrics_file {
        files.push(("--metrics-file", p.clone()));
    }
    if let Some(p) = o
        .access_log
        .as_deref()
        .filter(|p| !matches!(*p, "-" | "off"))
    {
        files.push(("--access-log", PathBuf::from(p)));
    }
    for (i, (flag, path)) in files.iter().enumerate() {
        if let Some((other, _)) = files.iter().skip(i + 1).find(|(_, p)| p == path) {
            return err(format!(
                "{flag} and {other} name the same file {} (each would overwrite the other)",
                path.display()
            ));
        }
    }
    // Written by the master (pid file at start, metrics every second) with a rename in the
    // same directory: a missing directory would fail only after the bind, or every second.
    for (flag, path) in files.iter().filter(|(f, _)| *f != "--access-log") {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return err(format!(
                "{flag} {}: directory {} does not exist",
                path.display(),
                dir.display()
            ));
        }
    }
    if let Some(a) = o
        .status_listen
        .filter(|a| !a.ip().is_loopback() && !o.status_public)
    {
        return err(format!(
            "--status-listen {a} is not a loopback address: the status page shows load, limits \
             and crashes to whoever reaches it; add --status-public to serve it there anyway"
        ));
    }
    let side = [
        ("--agent-listen", o.agent_listen),
        ("--status-listen", o.status_listen),
    ];
    for (flag, addr) in side.iter().filter_map(|(f, a)| a.map(|a| (f, a))) {
        if addr.port() != 0 && listen.contains(&addr) {
            return err(format!("{flag} {addr} is also a --listen address"));
        }
    }
    if let (Some(a), Some(s)) = (o.agent_listen, o.status_listen) {
        if a == s && a.port() != 0 {
            return err(format!("--agent-listen and --status-listen are both {a}"));
        }
    }
    if let Some(filter) = &o.log_level {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(filter) {
            return err(format!("--log-level {filter:?}: {e}"));
        }
    }
    Ok(())
}

/// The per-client limit when none is given: half the prefork pool, a quarter of fork mode's
/// children (whose default bound is in the hundreds), so that one address can never take the
/// whole pool and others always find children free. At least 4: a browser opens up to six
/// connections to a host, a tiny pool is one a single client can fill anyway, and a count
/// outlives its connection by the instants between the close and its release, which a
/// client that reconnects at once can meet.
fn default_per_client(mode: Mode) -> usize {
    match mode {
        Mode::Prefork { workers } => workers / 2,
        Mode::Fork { .. } | Mode::Event { .. } => mode.bound() / 4,
    }
    .max(4)
}

/// The default prefork pool: this many workers per CPU, and at least [`PREFORK_LEAST`].
const PREFORK_PER_CPU: usize = 16;
const PREFORK_LEAST: usize = 64;

/// Most connections one event worker may hold: beyond this a table is not a sane bound.
const MAX_WORKER_CONNECTIONS: usize = 65_536;
/// An event worker's table when none is given, as nginx's `worker_connections` often is.
const DEFAULT_WORKER_CONNECTIONS: usize = 1024;

/// An event worker's table: at least one, at most [`MAX_WORKER_CONNECTIONS`], and within the
/// hard fd limit (`limits::event_fds`: the master raises the soft limit to it, not past the
/// hard one). The default shrinks to what the hard limit allows; a given value it cannot hold
/// is refused. Outside event mode the value is only checked for range.
fn worker_connections(given: Option<usize>, active: bool) -> Result<usize, ConfigError> {
    let flag = "--worker-connections";
    match given {
        Some(n) if n == 0 || n > MAX_WORKER_CONNECTIONS => {
            return Err(ConfigError(format!(
                "{flag} {n} is outside 1..={MAX_WORKER_CONNECTIONS}"
            )))
        }
        Some(n) if !active => return Ok(n),
        None if !active => return Ok(DEFAULT_WORKER_CONNECTIONS),
        _ => {}
    }
    let hard = limits::fd_limit()
        .map(|(_, hard)| hard)
        .map_err(|e| ConfigError(format!("unable to read the fd limit: {e}")))?;
    let fits = |n: usize| limits::event_fds(n) <= hard;
    match given {
        Some(n) if fits(n) => Ok(n),
        Some(n) => Err(ConfigError(format!(
            "{flag} {n} needs up to {} fds per worker but the hard fd limit (RLIMIT_NOFILE) is \
             {hard}: raise it (ulimit -Hn, systemd's LimitNOFILE=) or lower {flag}",
            limits::event_fds(n)
        ))),
        None => {
            let room = usize::try_from(hard.saturating_sub(limits::event_fds(0)) / 2)
                .unwrap_or(usize::MAX);
            match DEFAULT_WORKER_CONNECTIONS.min(room) {
                0 => Err(ConfigError(format!(
                    "event mode needs more fds than the hard fd limit (RLIMIT_NOFILE) of {hard} allows"
                ))),
                n => Ok(n),
            }
        }
    }
}

fn resolve(o: Options) -> Result<Config, ConfigError> {
    let err = |s: String| ConfigError(s);
    let listen = if o.listen.is_empty() {
        vec![SocketAddr::from(([127, 0, 0, 1], 8080))]
    } else {
        o.listen.clone()
    };
    check_combinations(&o, &listen)?;
    let available = limits::available_memory()
        .map_err(|e| err(format!("unable to read available memory: {e}")))?;
    let file_cache = http::FileCacheLimits {
        entries: o
            .file_cache_entries
            .unwrap_or(http::Config::default().file_cache.entries),
        bytes: o
            .file_cache_bytes
            .unwrap_or(http::Config::default().file_cache.bytes),
    };
    if file_cache.bytes > available / 2 {
        return Err(err(format!(
            "--file-cache-bytes {} is more than half the memory available ({} MiB), for one child",
            file_cache.bytes,
            available >> 20
        )));
    }
    // A child's file cache may grow to its byte budget: that is part of what a child costs.
    let cost = limits::child_cost().saturating_add(match file_cache.entries {
        0 => 0,
        _ => file_cache.bytes,
    });
    let mode_name = o.mode.unwrap_or(ModeName::Prefork);
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = children(
        o.workers,
        matches!(mode_name, ModeName::Prefork | ModeName::Event),
        "--workers",
        available,
        cost,
        || {
            // An event worker keeps a CPU busy by itself; a blocking one waits on its client,
            // so a prefork pool is sized for the keep-alive clients served at once, not for
            // the CPUs. What an idle worker costs is memory, which the bound below holds.
            // Clients beyond the pool take turns (`http::conn`'s TURN), which costs them a
            // queue wait and a reconnect per turn: 64 keep-alive clients on 16 workers had a
            // p99 of 16-18 ms at 26,000 requests/s, on 64 workers 5-8 ms at 39,000-42,000, on
            // 2 CPUs where the load generator ran too; 16 clients were served alike by both.
            let per_mode = match mode_name {
                ModeName::Event => cpus,
                ModeName::Prefork | ModeName::Fork => (cpus * PREFORK_PER_CPU).max(PREFORK_LEAST),
            };
            per_mode.min(limits::default_children(available, cost))
        },
    )?;
    let connections = worker_connections(o.worker_connections, mode_name == ModeName::Event)?;
    let max_children = children(
        o.max_children,
        mode_name == ModeName::Fork,
        "--max-children",
        available,
        cost,
        || limits::default_children(available, cost),
    )?;
    let mode = match mode_name {
        ModeName::Prefork => Mode::Prefork { workers },
        ModeName::Fork => Mode::Fork { max_children },
        ModeName::Event => Mode::Event {
            workers,
            connections,
        },
    };
    let mut notices = Vec::new();
    for (name, value) in o.keys() {
        if value.is_set() && mode_name.unused_keys().contains(&name.as_str()) {
            notices.push(format!(
                "{name} = {} has no effect in {} mode",
                value.toml().unwrap_or_default(),
                mode_name.name()
            ));
        }
    }
    let user = o.user.clone().unwrap_or_else(|| "nobody".to_string());
    let credentials =
        privdrop::resolve(&user, o.chroot.clone(), o.allow_root).map_err(|e| err(e.to_string()))?;
    if credentials.is_none() && o.user.is_some() {
        notices.push(format!(
            "--user {user} has no effect: forkd was not started as root, so children run as its own user"
        ));
    }
    let mut settings = Settings {
        name: "forkd",
        mode,
        listen: listen.clone(),
        max_requests_per_worker: o.max_requests_per_worker.unwrap_or(match mode_name {
            ModeName::Event => 0,
            ModeName::Prefork | ModeName::Fork => 100_000,
        }),
        shutdown_timeout: o.shutdown_timeout.unwrap_or(Duration::from_secs(10)),
        credentials,
        pid_file: o.pid_file.clone(),
        metrics_file: o.metrics_file.clone(),
        // Both set below, once the header timeout is known.
        defer_accept: Duration::ZERO,
        max_conns_per_client: 0,
        agent_listen: o.agent_listen,
        status_listen: o.status_listen,
        // Not batch by default: with the CPUs taken by other sessions' work, it held requests
        // for the running task's slice (benches/sched.sh: p50 0.1 -> 4 ms), while it pays off
        // only when forkd's own clients share its CPUs (README, "Scheduling").
        scheduling: match o.worker_sched.unwrap_or(SchedName::Inherit) {
            SchedName::Batch => Scheduling::Batch,
            SchedName::Inherit => Scheduling::Inherit,
        },
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
    h.file_cache = file_cache;
    h.precompressed = o.precompressed.unwrap_or(h.precompressed);
    for (ext, mime) in &o.mime.0 {
        let (ext, mime) = http::mime::check_entry(ext, mime).map_err(err)?;
        if h.mime.iter().any(|(e, _)| *e == ext) {
            return Err(err(format!(
                "[server.mime] names the extension {ext} twice (case and a leading dot aside)"
            )));
        }
        h.mime.push((ext, mime));
    }
    site_rules(&o, &mut h).map_err(err)?;
    let vhosts = o.vhost.clone().unwrap_or_default();
    let unknown = match o.unknown_host.unwrap_or(UnknownHostName::Default) {
        UnknownHostName::Default => http::vhost::UnknownHost::Default,
        UnknownHostName::Misdirected => http::vhost::UnknownHost::Misdirected,
        UnknownHostName::NotFound => http::vhost::UnknownHost::NotFound,
    };
    let host_lists: Vec<Vec<String>> = vhosts.iter().map(|v| v.host.list()).collect();
    let vhost_names = http::vhost::Names::new(&host_lists, unknown).map_err(err)?;
    if o.unknown_host.is_some() && vhosts.is_empty() {
        notices.push("unknown-host has no effect without [[server.vhost]]".to_string());
    }
    // A silent connection is held by the kernel for as long as a worker would wait for its
    // head; a proxy or an over-large value can be turned off with 0.
    settings.defer_accept = o.defer_accept.unwrap_or(h.header_timeout);
    settings.max_conns_per_client = o
        .max_conns_per_client
        .unwrap_or_else(|| default_per_client(mode));
    for (name, d) in [
        ("--header-timeout", h.header_timeout),
        ("--defer-accept", settings.defer_accept),
        ("--keepalive-timeout", h.keepalive_timeout),
        ("--send-timeout", h.send_timeout),
        ("--shutdown-timeout", settings.shutdown_timeout),
    ] {
        if d.is_zero() && !matches!(name, "--shutdown-timeout" | "--defer-accept") {
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
    // No `..` here either: a new key must say what its value in force is.
    let effective =
        Options {
            command: None,
            config: o.config.clone(),
            check_config: o.check_config,
            listen,
            root: o.root.clone(),
            mode: Some(mode_name),
            workers: Some(workers),
            max_children: Some(max_children),
            worker_connections: Some(connections),
            worker_sched: Some(match settings.scheduling {
                Scheduling::Batch => SchedName::Batch,
                Scheduling::Inherit => SchedName::Inherit,
            }),
            max_requests_per_worker: Some(settings.max_requests_per_worker),
            shutdown_timeout: Some(settings.shutdown_timeout),
            header_timeout: Some(h.header_timeout),
            defer_accept: Some(settings.defer_accept),
            max_conns_per_client: Some(settings.max_conns_per_client),
            keepalive_timeout: Some(h.keepalive_timeout),
            send_timeout: Some(h.send_timeout),
            min_send_rate: Some(h.min_send_rate),
            max_header_bytes: Some(h.max_header_bytes),
            max_uri_bytes: Some(h.max_uri_bytes),
            max_body_bytes: Some(h.max_body_bytes),
            max_requests_per_connection: Some(h.max_requests_per_connection),
            allow_dot_path: Some(h.dot_allow.iter().map(|p| format!("/{p}/")).collect()),
            index: Some(h.index.clone()),
            autoindex: h.autoindex,
            autoindex_max_entries: Some(h.autoindex_max_entries),
            error_page: Some(
                h.error_pages
                    .iter()
                    .map(|(status, page)| format!("{status}={page}"))
                    .collect(),
            ),
            unknown_host: Some(o.unknown_host.unwrap_or(UnknownHostName::Default)),
            headers: Some(
                h.rules
                    .rules()
                    .iter()
                    .map(|r| HeaderRuleSpec {
                        glob: r.glob.clone(),
                        cache_control: r.cache_control.clone(),
                        set: r.set.iter().cloned().collect(),
                    })
                    .collect(),
            ),
            security_headers: Some(effective_security(&h.rules)),
            vhost: Some(vhosts.clone()),
            file_cache_entries: Some(h.file_cache.entries),
            file_cache_bytes: Some(h.file_cache.bytes),
            precompressed: Some(h.precompressed),
            mime: o.mime.clone(),
            access_log: Some(o.access_log.clone().unwrap_or_else(|| "off".to_string())),
            pid_file: o.pid_file.clone(),
            metrics_file: o.metrics_file.clone(),
            user: Some(user),
            chroot: o.chroot.clone(),
            allow_root: o.allow_root,
            agent_listen: o.agent_listen,
            status_listen: o.status_listen,
            status_public: o.status_public,
            log_level: Some(o.log_level.clone().unwrap_or_else(|| {
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string())
            })),
        };
    Ok(Config {
        options: o,
        settings,
        http: h,
        vhost_names,
        vhost_roots: vhosts.into_iter().map(|v| v.root).collect(),
        effective,
        origins: Vec::new(),
        notices,
    })
}

/// The most entries `--autoindex-max-entries` may ask a listing to read.
const MAX_AUTOINDEX_ENTRIES: usize = 10_000;

/// Index names, the listing, error pages and header rules, checked into `h` (whose dot rule
/// is already set: error pages are resolved by it).
fn site_rules(o: &Options, h: &mut http::Config) -> Result<(), String> {
    if let Some(names) = &o.index {
        if names.is_empty() {
            return Err("--index: give at least one name".to_string());
        }
        for name in names {
            let bad = |why: &str| format!("--index {name:?}: {why}");
            if name.is_empty() || name.contains('/') || name.contains('\0') {
                return Err(bad("must be a file name (no / and no NUL)"));
            }
            if name.starts_with('.') {
                return Err(bad(
                    "must not start with a dot (dot-files are never served)",
                ));
            }
        }
        h.index = names.clone();
    }
    h.autoindex = o.autoindex;
    if let Some(n) = o.autoindex_max_entries {
        if n == 0 || n > MAX_AUTOINDEX_ENTRIES {
            return Err(format!(
                "--autoindex-max-entries {n} is outside 1..={MAX_AUTOINDEX_ENTRIES}"
            ));
        }
        h.autoindex_max_entries = n;
    }
    h.error_pages = error_pages(o.error_page.as_deref().unwrap_or_default(), h)?;
    let rules: Vec<http::rules::HeaderRule> = o
        .headers
        .iter()
        .flatten()
        .map(|r| http::rules::HeaderRule {
            glob: r.glob.clone(),
            cache_control: r.cache_control.clone(),
            set: r.set.iter().map(|(n, v)| (n.clone(), v.clone())).collect(),
        })
        .collect();
    h.rules = http::rules::Rules::new(&rules, security(o.security_headers.as_ref())?)?;
    Ok(())
}

/// `--error-page STATUS=PATH` entries: a 4xx or 5xx status once each, and a path beneath the
/// root that a request could name (resolved as one, by the dot rule in force) and that is
/// not a directory.
fn error_pages(given: &[String], h: &http::Config) -> Result<Vec<(u16, String)>, String> {
    let mut pages: Vec<(u16, String)> = Vec::new();
    for entry in given {
        let bad = |why: &str| format!("--error-page {entry:?}: {why}");
        let Some((status, page)) = entry.split_once('=') else {
            return Err(bad("give it as STATUS=PATH, e.g. 404=/404.html"));
        };
        let status: u16 = match status.trim().parse() {
            Ok(n @ 400..=599) => n,
            _ => return Err(bad("the status must be a number from 400 to 599")),
        };
        let mut rel = Vec::new();
        match http::path::resolve(page.as_bytes(), http::path::Dots::of(h), &mut rel) {
            Ok(false) if !page.contains('?') => {}
            Ok(_) => return Err(bad("the path must name a file, not a directory or a query")),
            Err(http::path::Refusal::Malformed) => {
                return Err(bad(
                    "the path must start with / and hold only what a URL path may (%-encode the rest)",
                ))
            }
            Err(http::path::Refusal::Hidden) => {
                return Err(bad(
                    "the path is hidden: it climbs above the root or names a dot-file that is not allowed",
                ))
            }
        }
        if pages.iter().any(|(s, _)| *s == status) {
            return Err(bad("a page for this status is already given"));
        }
        pages.push((status, page.to_string()));
    }
    Ok(pages)
}

/// The security fields in force: the defaults, changed or turned off by the table.
fn security(given: Option<&SecurityHeaders>) -> Result<Vec<(String, String)>, String> {
    let mut fields: Vec<(String, String)> = http::rules::DEFAULT_SECURITY
        .iter()
        .map(|&(n, v)| (n.to_string(), v.to_string()))
        .collect();
    match given {
        None => {}
        Some(SecurityHeaders::Switch(false)) => fields.clear(),
        Some(SecurityHeaders::Switch(true)) => {
            return Err(
                "security-headers = true: give a table of fields, or false for none".to_string(),
            )
        }
        Some(SecurityHeaders::Fields(table)) => {
            for (name, value) in table {
                let at = fields
                    .iter()
                    .position(|(n, _)| n.eq_ignore_ascii_case(name));
                match (value, at) {
                    (FieldValue::Switch(false), Some(i)) => {
                        fields.remove(i);
                    }
                    (FieldValue::Switch(false), None) => {
                        return Err(format!(
                            "security-headers.{name} = false turns off a field that is not sent                              (the defaults: {})",
                            default_security_names()
                        ))
                    }
                    (FieldValue::Switch(true), _) => {
                        return Err(format!(
                            "security-headers.{name} = true: give the value, or false to turn it off"
                        ))
                    }
                    (FieldValue::Value(v), Some(i)) => {
                        if let Some(f) = fields.get_mut(i) {
                            *f = (name.clone(), v.clone());
                        }
                    }
                    (FieldValue::Value(v), None) => fields.push((name.clone(), v.clone())),
                }
            }
        }
    }
    Ok(fields)
}

fn default_security_names() -> String {
    let names: Vec<&str> = http::rules::DEFAULT_SECURITY
        .iter()
        .map(|(n, _)| *n)
        .collect();
    names.join(", ")
}

/// The security fields in force as the file gives them: each default with its value or
/// `false`, then the others; `false` alone when there are none.
fn effective_security(rules: &http::rules::Rules) -> SecurityHeaders {
    let sent = rules.security();
    if sent.is_empty() {
        return SecurityHeaders::Switch(false);
    }
    let mut table = BTreeMap::new();
    for (name, _) in http::rules::DEFAULT_SECURITY {
        if !sent.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            table.insert(name.to_string(), FieldValue::Switch(false));
        }
    }
    for (name, value) in sent {
        table.insert(name.clone(), FieldValue::Value(value.clone()));
    }
    SecurityHeaders::Fields(table)
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

    /// The merge's list of keys is the command line's list of flags, spelled the same, plus
    /// the tables only the file can give.
    #[test]
    fn every_flag_is_a_key() {
        use clap::CommandFactory;
        // Keys only the file gives: tables, which no flag spells.
        const FILE_ONLY: [&str; 4] = ["headers", "mime", "security-headers", "vhost"];
        let flags: Vec<String> = Options::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .filter(|l| !["config", "check-config", "help", "version"].contains(&l.as_str()))
            .collect();
        let keys: Vec<String> = Options::default()
            .keys()
            .into_iter()
            .map(|k| k.0)
            .filter(|k| !FILE_ONLY.contains(&k.as_str()))
            .collect();
        assert_eq!(flags, keys);
    }

    #[test]
    fn metrics_file_in_the_file_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m.prom");
        let text = format!("[server]\nmetrics-file = {:?}\n", m.to_str().unwrap());
        let cfg = from_text(Path::new("f.toml"), &text, &parse(&[])).unwrap();
        assert_eq!(cfg.settings.metrics_file.as_deref(), Some(m.as_path()));
        assert!(cfg.describe().contains(&format!(
            "metrics-file = {:?}  # from file\n",
            m.to_str().unwrap()
        )));
    }

    #[test]
    fn flags_over_file_keys_are_noticed() {
        let text = "[server]\nworkers = 8\nlisten = [\"127.0.0.1:0\"]\nallow-root = true\n";
        let flags = parse(&["--workers", "4", "--listen", "127.0.0.1:0", "--allow-root"]);
        let cfg = from_text(Path::new("forkd.toml"), text, &flags).unwrap();
        // Only where the values differ.
        assert_eq!(
            cfg.notices,
            vec!["--workers 4 overrides workers = 8 from forkd.toml".to_string()]
        );
        let cfg = from_text(
            Path::new("forkd.toml"),
            "[server]\nallow-dot-path = [\"/.a\"]\n",
            &parse(&["--allow-dot-path", ""]),
        )
        .unwrap();
        assert_eq!(
            cfg.notices,
            vec![
                "--allow-dot-path '' overrides allow-dot-path = [\"/.a\"] from forkd.toml"
                    .to_string()
            ]
        );
    }

    #[test]
    fn contradictions_are_refused_before_anything_starts() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("same");
        let f = f.to_str().unwrap();
        for (args, needle) in [
            (
                vec!["--listen", "127.0.0.1:8080", "--listen", "127.0.0.1:8080"],
                "--listen 127.0.0.1:8080 is given twice",
            ),
            (
                vec!["--pid-file", f, "--metrics-file", f],
                "--pid-file and --metrics-file name the same file",
            ),
            (
                vec!["--metrics-file", f, "--access-log", f],
                "--metrics-file and --access-log name the same file",
            ),
            (
                vec!["--pid-file", "/nonexistent-dir/forkd.pid"],
                "--pid-file /nonexistent-dir/forkd.pid: directory /nonexistent-dir does not exist",
            ),
            (
                vec!["--metrics-file", "/nonexistent-dir/m.prom"],
                "--metrics-file /nonexistent-dir/m.prom: directory",
            ),
            (vec!["--log-level", "info,[["], "--log-level"),
            (vec!["--mode", "fork", "--workers", "0"], "--workers 0"),
            (
                vec!["--file-cache-bytes", "18446744073709551615"],
                "--file-cache-bytes 18446744073709551615 is more than half the memory",
            ),
        ] {
            let e = resolve(parse(&args))
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"))
                .0;
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        // Port 0 twice is two ephemeral ports, not a conflict.
        assert!(resolve(parse(&[
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0"
        ]))
        .is_ok());
        // A key of the other mode is accepted but said to have no effect.
        let cfg = resolve(parse(&["--mode", "fork", "--workers", "4"])).unwrap();
        assert_eq!(
            cfg.notices,
            vec!["workers = 4 has no effect in fork mode".to_string()]
        );
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
            (&["--defer-accept", "25h"], "--defer-accept"),
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
        // 0 turns deferred accepts off; it is not a zero timeout.
        let c = resolve(parse(&["--defer-accept", "0"])).unwrap();
        assert_eq!(c.settings.defer_accept, Duration::ZERO);
    }

    #[test]
    fn the_default_prefork_pool_is_sized_for_clients_within_memory() {
        let cfg = resolve(parse(&[])).unwrap();
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let available = limits::available_memory().unwrap();
        let cost = limits::child_cost() + http::Config::default().file_cache.bytes;
        let by_cpus = (cpus * PREFORK_PER_CPU).max(PREFORK_LEAST);
        let Mode::Prefork { workers } = cfg.settings.mode else {
            panic!("{:?}", cfg.settings.mode);
        };
        // The memory bound is measured twice (the RSS moves a little between): compared
        // exactly only where memory is not what limits the pool.
        if limits::default_children(available, cost) > by_cpus * 2 {
            assert_eq!(workers, by_cpus);
        } else {
            assert!((1..=by_cpus).contains(&workers), "{workers}");
        }
        // Half the pool per client address, as for any pool size.
        assert_eq!(cfg.settings.max_conns_per_client, (workers / 2).max(4));
    }

    #[test]
    fn per_client_limit_and_defer_accept_follow_the_pool_and_the_header_timeout() {
        let settings = |args: &[&str]| resolve(parse(args)).unwrap().settings;
        let s = settings(&["--workers", "16", "--header-timeout", "4s"]);
        assert_eq!(s.max_conns_per_client, 8);
        assert_eq!(s.defer_accept, Duration::from_secs(4));
        let s = settings(&["--mode", "fork", "--max-children", "64"]);
        assert_eq!(s.max_conns_per_client, 16);
        assert_eq!(s.defer_accept, Duration::from_secs(10));
        assert_eq!(settings(&["--workers", "1"]).max_conns_per_client, 4);
        let s = settings(&["--workers", "16", "--max-conns-per-client", "0"]);
        assert_eq!(s.max_conns_per_client, 0);
    }

    #[test]
    fn workers_are_batch_scheduled_only_when_asked() {
        let sched = |args: &[&str]| resolve(parse(args)).unwrap().settings.scheduling;
        for mode in ["prefork", "fork", "event"] {
            assert_eq!(sched(&["--mode", mode]), Scheduling::Inherit, "{mode}");
            let flag = ["--mode", mode, "--worker-sched", "batch"];
            assert_eq!(sched(&flag), Scheduling::Batch, "{mode}");
        }
        let bad = Options::try_parse_from(["forkd", "--worker-sched", "fifo"]).unwrap_err();
        assert!(bad.to_string().contains("'fifo'"), "{bad}");
    }

    #[test]
    fn event_mode_defaults_bounds_and_notices() {
        let cfg = resolve(parse(&["--mode", "event"])).unwrap();
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let Mode::Event {
            workers,
            connections,
        } = cfg.settings.mode
        else {
            panic!("{:?}", cfg.settings.mode);
        };
        assert!(workers <= cpus && workers >= 1, "{workers}");
        let hard = limits::fd_limit().unwrap().1;
        assert_eq!(
            connections,
            DEFAULT_WORKER_CONNECTIONS.min((hard as usize).saturating_sub(64) / 2)
        );
        assert_eq!(
            cfg.settings.max_conns_per_client,
            (workers * connections / 4).max(4)
        );
        let s = resolve(parse(&[
            "--mode",
            "event",
            "--workers",
            "2",
            "--worker-connections",
            "8",
        ]))
        .unwrap()
        .settings;
        assert_eq!(
            s.mode,
            Mode::Event {
                workers: 2,
                connections: 8
            }
        );
        assert_eq!(s.max_conns_per_client, 4);
        for (args, needle) in [
            (
                &["--mode", "event", "--worker-connections", "0"][..],
                "--worker-connections 0 is outside",
            ),
            (
                &["--mode", "event", "--worker-connections", "70000"],
                "--worker-connections 70000 is outside",
            ),
            (&["--worker-connections", "0"], "--worker-connections 0"),
            (&["--mode", "event", "--workers", "0"], "--workers 0"),
        ] {
            let e = resolve(parse(args)).err().unwrap().0;
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        if limits::event_fds(MAX_WORKER_CONNECTIONS) > hard {
            let e = resolve(parse(&["--mode", "event", "--worker-connections", "65536"]))
                .err()
                .unwrap()
                .0;
            assert!(e.contains("hard fd limit"), "{e}");
        }
        // A key of another mode is accepted but said to have no effect.
        let cfg = resolve(parse(&["--worker-connections", "8"])).unwrap();
        assert_eq!(
            cfg.notices,
            vec!["worker-connections = 8 has no effect in prefork mode".to_string()]
        );
        let cfg = resolve(parse(&["--mode", "event", "--max-children", "8"])).unwrap();
        assert_eq!(
            cfg.notices,
            vec!["max-children = 8 has no effect in event mode".to_string()]
        );
        let text = resolve(parse(&["--mode", "event", "--worker-connections", "8"]))
            .unwrap()
            .describe();
        assert!(text.contains("mode = \"event\""), "{text}");
        assert!(text.contains("worker-connections = 8"), "{text}");
        assert!(text.contains("not used in event mode"), "{text}");
    }

    #[test]
    fn precompressed_and_mime_keys() {
        let cfg = resolve(parse(&[])).unwrap();
        assert!(cfg.http.precompressed && cfg.http.mime.is_empty());
        assert!(cfg.describe().contains("precompressed = true  # default"));
        assert!(cfg.describe().contains("mime = {}  # default"));
        let cfg = resolve(parse(&["--precompressed", "false"])).unwrap();
        assert!(!cfg.http.precompressed);
        let text = "[server]\nprecompressed = false\n[server.mime]\n\".WebP\" = \"image/webp\"\ngmi = \"text/gemini; charset=utf-8\"\n";
        let cfg = from_text(
            Path::new("f.toml"),
            text,
            &parse(&["--precompressed", "true"]),
        )
        .unwrap();
        assert!(cfg.http.precompressed);
        assert_eq!(
            cfg.http.mime,
            vec![
                ("webp".to_string(), "image/webp".to_string()),
                ("gmi".to_string(), "text/gemini; charset=utf-8".to_string()),
            ]
        );
        let described = cfg.describe();
        assert!(
            described.contains(
                "mime = { \".WebP\" = \"image/webp\", \"gmi\" = \"text/gemini; charset=utf-8\" }  # from file"
            ),
            "{described}"
        );
        // What it prints reads back as the same table.
        let again = from_text(Path::new("g.toml"), &described, &parse(&[])).unwrap();
        assert_eq!(again.http.mime, cfg.http.mime);
        for (bad, needle) in [
            ("[server.mime]\nx = \"text\"\n", "not a media type"),
            ("[server.mime]\n\"a/b\" = \"text/plain\"\n", "extension"),
            (
                "[server.mime]\nx = \"text/plain\\r\\nX: y\"\n",
                "not a media type",
            ),
            (
                "[server.mime]\nx = \"text/plain\"\nX = \"text/html\"\n",
                "twice",
            ),
            ("[server]\nprecompressed = \"yes\"\n", "precompressed"),
        ] {
            let e = from_text(Path::new("f.toml"), bad, &parse(&[]))
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"))
                .0;
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn memory_refuses_impossible_pools() {
        let e = resolve(parse(&["--workers", "1000000"])).err().unwrap().0;
        assert!(e.contains("--workers 1000000"), "{e}");
        let e = resolve(parse(&["--workers", "0"])).err().unwrap().0;
        assert!(e.contains("--workers 0"), "{e}");
    }

    #[test]
    fn the_status_page_stays_on_loopback_unless_made_public() {
        let e = resolve(parse(&["--status-listen", "0.0.0.0:9000"]))
            .err()
            .unwrap()
            .0;
        assert!(
            e.contains("not a loopback address") && e.contains("--status-public"),
            "{e}"
        );
        let c = resolve(parse(&[
            "--status-listen",
            "0.0.0.0:9000",
            "--status-public",
        ]))
        .unwrap();
        assert_eq!(
            c.settings.status_listen,
            Some(SocketAddr::from(([0, 0, 0, 0], 9000)))
        );
        let c = resolve(parse(&[
            "--status-listen",
            "[::1]:9000",
            "--agent-listen",
            "0.0.0.0:9001",
        ]))
        .unwrap();
        assert_eq!(
            c.settings.agent_listen,
            Some(SocketAddr::from(([0, 0, 0, 0], 9001)))
        );
        let file: File = toml::from_str("[server]\nagent-listen = \"127.0.0.1:9001\"\n").unwrap();
        assert_eq!(
            file.server.agent_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9001)))
        );
        let e = resolve(parse(&[
            "--listen",
            "127.0.0.1:8080",
            "--agent-listen",
            "127.0.0.1:8080",
        ]))
        .err()
        .unwrap()
        .0;
        assert!(e.contains("also a --listen address"), "{e}");
    }
}
