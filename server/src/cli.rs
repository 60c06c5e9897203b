//! The `forkd` program: flags and file into a [`Config`], the static site into a
//! [`Service`], then the master. Failures become exit codes a supervisor understands:
//! 2 bad command line, 100 when restarting will not help (an invalid configuration, a pid-file
//! directory that is read-only or missing, a port it may not bind), 111 a start failure that
//! may pass (an address in use, say).

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;

use clap::Parser;

use crate::config::{self, Config, Options};
use crate::http;
use crate::rootcheck;
use forkd_daemon::{self as daemon, notify::Notifier, Daemon, Service, Settings};

/// Restarting will not help: do not restart (the s6 convention forkd-supervisor follows).
pub const EXIT_CONFIG: i32 = 100;
/// A start failure that may pass: restart later.
pub const EXIT_TEMPORARY: i32 = 111;

/// The static site as the process template sees it.
pub struct StaticSite {
    site: http::Site,
    busy: Vec<u8>,
}

impl Service for StaticSite {
    fn serve(&mut self, stream: &TcpStream, peer: SocketAddr) -> u64 {
        self.site.serve(stream, peer)
    }

    fn prepare(&mut self) {
        self.site.prepare();
    }

    fn before_fork(&mut self) {
        self.site.before_fork();
    }

    fn counters(&self) -> &'static [forkd_daemon::scoreboard::Counter] {
        &http::COUNTERS
    }

    fn busy_response(&self) -> &[u8] {
        &self.busy
    }

    fn events(&mut self) -> Option<&mut dyn forkd_daemon::reactor::Multiplex> {
        Some(&mut self.site)
    }
}

/// The master's hooks: a reload re-reads the file with the original flags on top.
struct Forkd {
    flags: Options,
    access_log: Option<String>,
    log_level: Option<String>,
}

impl Daemon for Forkd {
    type Service = StaticSite;

    fn reload(&mut self) -> Result<(Settings, StaticSite), String> {
        let cfg = config::load(&self.flags).map_err(|e| e.to_string())?;
        log_notices(&cfg);
        let site = build_site(&cfg)?;
        if cfg.options.log_level != self.log_level {
            // The tracing subscriber is installed once per process.
            tracing::warn!("log-level cannot change on reload: restart to apply");
        }
        self.access_log = cfg.options.access_log.clone();
        Ok((cfg.settings, site))
    }

    fn reopen_logs(&mut self, service: &mut StaticSite) -> Result<(), String> {
        service.site.log = open_log(self.access_log.as_deref())?;
        Ok(())
    }
}

fn open_log(spec: Option<&str>) -> Result<http::AccessLog, String> {
    match spec {
        None | Some("off") => Ok(http::AccessLog::off()),
        Some("-") => Ok(http::AccessLog::stderr()),
        Some(path) => http::AccessLog::open(path.as_ref())
            .map_err(|e| format!("unable to open access log {path}: {e}")),
    }
}

/// Opens the docroot and the access log in the master, before any chroot or privilege drop,
/// so children inherit open descriptors instead of needing paths they may not reach, and
/// checks that the user children run as can search the docroot (`rootcheck`): at start the
/// refusal is exit 100, on reload it keeps the running configuration.
fn build_site(cfg: &Config) -> Result<StaticSite, String> {
    let docroot = match &cfg.options.root {
        Some(dir) => open_root("--root", dir, cfg)?,
        None => http::Docroot::Embedded,
    };
    let mut roots = Vec::new();
    for (i, dir) in cfg.vhost_roots.iter().enumerate() {
        roots.push(open_root(
            &format!("[[server.vhost]] #{} root", i + 1),
            dir,
            cfg,
        )?);
    }
    let log = open_log(cfg.options.access_log.as_deref())?;
    let mut site = http::Site::new(cfg.http.clone(), docroot, log);
    site.set_vhosts(http::VHosts {
        names: cfg.vhost_names.clone(),
        roots,
    });
    Ok(StaticSite {
        site,
        busy: http::busy_response(&cfg.http),
    })
}

/// Opens a document root (`label` names it in errors: `--root`, a virtual host's) and checks
/// that the user children run as can search it (`rootcheck`).
fn open_root(label: &str, dir: &Path, cfg: &Config) -> Result<http::Docroot, String> {
    let docroot = http::Docroot::open(dir)
        .map_err(|e| format!("unable to open {label} {}: {e}", dir.display()))?;
    if let http::Docroot::Dir(fd) = &docroot {
        let creds = cfg.settings.credentials.as_ref();
        let index = cfg.http.index.first().map_or("index.html", String::as_str);
        if let Some(warning) = rootcheck::check(label, dir, fd.as_fd(), index, creds)? {
            tracing::warn!("{warning}");
        }
    }
    Ok(docroot)
}

/// A flag that wins over a file key the operator may just have edited, or a key the mode in
/// force does not read, is said at start and at every reload rather than applied silently.
fn log_notices(cfg: &Config) {
    for notice in &cfg.notices {
        tracing::warn!("{notice}");
    }
}

fn init_tracing(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Writes each event with one write to stderr, from whichever process logs; no thread.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// Runs forkd and returns its exit code.
pub fn main() -> i32 {
    let flags = Options::parse();
    if let Some(config::Command::Precompress(args)) = &flags.command {
        return crate::precompress::main(args);
    }
    let cfg = match config::load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("forkd: {e}");
            return EXIT_CONFIG;
        }
    };
    // After the file is read, so that its log-level counts too.
    init_tracing(cfg.options.log_level.as_deref());
    log_notices(&cfg);
    let site = match build_site(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("forkd: {e}");
            return EXIT_CONFIG;
        }
    };
    if flags.check_config {
        // Not `print!`, which panics when stdout is closed.
        use std::io::Write;
        return match std::io::stdout()
            .lock()
            .write_all(cfg.describe().as_bytes())
        {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("forkd: unable to print the configuration: {e}");
                EXIT_CONFIG
            }
        };
    }
    if cfg.options.root.is_none() {
        tracing::info!("no --root given: serving the embedded demo site");
    }
    let notifier = match Notifier::from_env() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("forkd: {e}");
            return EXIT_CONFIG;
        }
    };
    let mut forkd = Forkd {
        flags,
        access_log: cfg.options.access_log.clone(),
        log_level: cfg.options.log_level.clone(),
    };
    match daemon::run(cfg.settings, site, &mut forkd, &notifier) {
        Ok(code) => code,
        Err(e) if e.is_permanent() => {
            eprintln!("forkd: {e} (restarting will not help)");
            EXIT_CONFIG
        }
        Err(e) => {
            eprintln!("forkd: {e}");
            EXIT_TEMPORARY
        }
    }
}
