//! The harness: start a real binary, wait for its readiness line instead of sleeping, poll
//! with deadlines, read `/proc`, and kill every process a test started when it is dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::{Duration, Instant};

pub const FORKD: &str = env!("CARGO_BIN_EXE_forkd");
pub const SUPERVISOR: &str = env!("CARGO_BIN_EXE_forkd-supervisor");
pub const LOADGEN: &str = env!("CARGO_BIN_EXE_forkd-loadgen");

/// Polls `f` until it returns `Some`, or panics with `what` once `deadline` has passed.
pub fn eventually<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running process started by a test, in its own process group, with stderr captured
/// line by line (a thread drains it so the process never blocks on a full pipe).
pub struct Proc {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(bin: &str, args: &[&str]) -> Proc {
        Self::spawn_cmd(Command::new(bin).args(args))
    }

    pub fn spawn_cmd(cmd: &mut Command) -> Proc {
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn test process");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("FORKD_TEST_ECHO").is_some() {
                        eprintln!("[child] {line}");
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Proc { child, lines }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the process has printed so far (stderr and stdout, interleaved by line).
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a printed line containing `needle` and returns it.
    pub fn wait_line(&self, needle: &str, deadline: Duration) -> String {
        let what = format!("a line containing {needle:?}");
        let lines = self.lines.clone();
        let find = || {
            lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        };
        let mut end = Instant::now() + deadline;
        let mut exited = false;
        loop {
            if let Some(l) = find() {
                return l;
            }
            // A process that has exited (a zombie until it is waited for) prints nothing more
            // once its pipes are drained: give the reader threads a moment, not the whole
            // deadline (a refused command line would otherwise cost 20 s of readiness wait).
            if !exited && state(self.pid()) == Some('Z') {
                exited = true;
                end = end.min(Instant::now() + Duration::from_millis(500));
            }
            if Instant::now() > end {
                let why = if exited { "exited" } else { "timed out" };
                panic!(
                    "{why} waiting for {what}; output so far:\n{}",
                    self.output().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        eventually(deadline, "process exit", || child.try_wait().unwrap())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The whole group: a forkd master's workers, a supervisor's direct child. Processes a
        // supervisor put in a group of their own are its job to end; tests check that it did.
        let pg = nix::unistd::Pid::from_raw(-self.pid());
        let _ = nix::sys::signal::kill(pg, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Defines [`MODES`] and the `per_mode!` macro from one list, so that the two cannot drift:
/// each entry is a `--mode` name and the flags that give that mode room for `{pool}`
/// connections served at once (see [`Mode::pool`]). `$d` is a `$` handed in, which lets the
/// macro written here have metavariables of its own.
macro_rules! modes {
    ($d:tt $($name:ident: $pool_flags:literal,)+) => {
        /// Every mode the per-mode tests run against, in the order of the list.
        pub const MODES: &[Mode] = &[$(Mode {
            name: stringify!($name),
            pool_flags: $pool_flags,
            pool: None,
        }),+];

        /// `per_mode!(name);` above `fn name(mode: Mode)` makes it one test per mode: a module
        /// `name` with a `#[test] fn` for each entry of [`MODES`] (`name::prefork`,
        /// `name::fork`), so a failure names its mode and the modes run in parallel. A
        /// function no `per_mode!` names is dead code, which clippy refuses.
        macro_rules! per_mode {
            ($d test:ident) => {
                mod $d test {
                    $(
                        #[test]
                        fn $name() {
                            super::$d test(crate::util::Mode::named(stringify!($name)));
                        }
                    )+
                }
            };
        }
        pub(crate) use per_mode;
    };
}

// The one list of modes: a mode is added here and nowhere else. An event mode's pool of N is
// one worker of N connections, so that the bound a test sets is the mode's whole bound.
modes! {$
    prefork: "--workers {pool}",
    fork: "--max-children {pool}",
    event: "--workers 1 --worker-connections {pool}",
}

/// One of forkd's `--mode`s as a test starts it. Without a pool forkd picks its own default
/// size, as it does for a user who gives none.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    pub name: &'static str,
    /// Flags for a pool of `{pool}` connections at once, split at whitespace.
    pool_flags: &'static str,
    pool: Option<usize>,
}

impl Mode {
    /// The entry of [`MODES`] called `name`.
    pub fn named(name: &str) -> Mode {
        *MODES
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no mode {name:?} in MODES"))
    }

    /// This mode with room for `n` connections served at once. What happens to one more
    /// differs: prefork leaves it in the backlog until a worker is free, fork mode answers
    /// 503 at once.
    pub fn pool(self, n: usize) -> Mode {
        Mode {
            pool: Some(n),
            ..self
        }
    }

    /// The flags that select this mode (and its pool, if one was asked for).
    pub fn args(self) -> Vec<String> {
        let mut args = vec!["--mode".to_string(), self.name.to_string()];
        if let Some(n) = self.pool {
            let n = n.to_string();
            args.extend(
                self.pool_flags
                    .split_whitespace()
                    .map(|f| f.replace("{pool}", &n)),
            );
        }
        args
    }

    /// Starts forkd in this mode with `args` after the mode's own flags (see
    /// [`Server::start`]).
    pub fn start(self, args: &[&str]) -> Server {
        let mine = self.args();
        let server = Server::start(&Self::command_line(&mine, args));
        self.check_ready(&server);
        server
    }

    /// Starts forkd in this mode serving a fresh docroot (see [`Server::with_site`]).
    pub fn with_site(self, args: &[&str], fill: impl FnOnce(&Path)) -> Server {
        let mine = self.args();
        let server = Server::with_site(&Self::command_line(&mine, args), fill);
        self.check_ready(&server);
        server
    }

    fn command_line<'a>(mine: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
        mine.iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect()
    }

    /// Panics unless the readiness line says this mode, so that a misspelt entry in
    /// [`MODES`] cannot run another mode under this one's name: `(pid N, prefork, ...)`.
    pub fn check_ready(self, server: &Server) -> String {
        let line = server.proc.wait_line("ready on http://", Duration::ZERO);
        let want = format!("(pid {}, {}, ", server.pid(), self.name);
        assert!(
            line.contains(&want),
            "mode {}: readiness line {line:?}",
            self.name
        );
        line
    }
}

/// A forkd started by a test, ready to serve.
pub struct Server {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts forkd with `args` (`--listen 127.0.0.1:0` is added unless `--listen` is given)
    /// and waits for its readiness line.
    pub fn start(args: &[&str]) -> Server {
        let mut all: Vec<&str> = args.to_vec();
        if !args.iter().any(|a| a.starts_with("--listen")) {
            all.extend(["--listen", "127.0.0.1:0"]);
        }
        let proc = Proc::spawn(FORKD, &all);
        let addr = wait_ready(&proc);
        Server {
            proc,
            addr,
            dir: None,
        }
    }

    /// Starts forkd serving a fresh temporary docroot filled by `fill`.
    pub fn with_site(args: &[&str], fill: impl FnOnce(&Path)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path());
        let root = dir.path().to_str().unwrap().to_string();
        let mut all = vec!["--root", root.as_str()];
        all.extend_from_slice(args);
        let mut s = Server::start(&all);
        s.dir = Some(dir);
        s
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// What forkd has printed about children that died: a child's panic message, the
    /// master's error line for one that exited non-zero or was killed. Empty on a healthy
    /// run, in any mode (a prefork worker that retires, or a fork-mode child that ends with
    /// its connection, exits 0 and is not reported at this log level).
    pub fn children_that_died(&self) -> Vec<String> {
        self.proc
            .output()
            .into_iter()
            .filter(|l| {
                l.contains("panicked at")
                    || (l.contains("ERROR")
                        && (l.contains(" exited with code ") || l.contains(" killed by ")))
            })
            .collect()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.as_ref().unwrap().path().to_path_buf()
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Sends raw bytes on a fresh connection and returns everything the server sends back
    /// until it closes the connection.
    pub fn raw(&self, request: &[u8]) -> Vec<u8> {
        let mut s = self.connect();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    }

    /// `GET path` with `Connection: close`; returns (status, full response bytes).
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let resp = self.raw(req.as_bytes());
        (status_of(&resp), resp)
    }
}

/// A keep-alive client that reads exactly one response at a time.
pub struct Client {
    pub s: TcpStream,
    pub buf: Vec<u8>,
}

/// One response: status, head text, body.
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        header(self.head.as_bytes(), name)
    }
}

impl Client {
    pub fn new(server: &Server) -> Client {
        Client {
            s: server.connect(),
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    pub fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        let n = self.s.read(&mut chunk).expect("read from server");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Reads one response (no body for a HEAD request or a 304).
    pub fn response(&mut self, head_only: bool) -> Resp {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill() > 0,
                "connection closed before a full head: {:?}",
                self.text()
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status = status_of(head.as_bytes());
        let len: usize = if head_only || status == 304 {
            0
        } else {
            header(head.as_bytes(), "content-length")
                .expect("content-length")
                .parse()
                .unwrap()
        };
        while self.buf.len() < end + len {
            assert!(self.fill() > 0, "connection closed inside a body");
        }
        let body = self.buf[end..end + len].to_vec();
        self.buf.drain(..end + len);
        Resp { status, head, body }
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.response(false)
    }

    /// True when the server has closed the connection and sent nothing more.
    pub fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill() == 0
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// The value of `forkd_limit_hits_total{limit="NAME"}` in the metrics file.
pub fn limit_hits(metrics: &Path, name: &str) -> u64 {
    let text = std::fs::read_to_string(metrics).unwrap_or_default();
    let key = format!("forkd_limit_hits_total{{limit=\"{name}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Parses forkd's readiness line: `forkd: ready on http://ADDR/ ...`.
pub fn wait_ready(proc: &Proc) -> SocketAddr {
    let line = proc.wait_line("ready on http://", Duration::from_secs(20));
    let rest = line.split("ready on http://").nth(1).unwrap();
    let addr = rest.split('/').next().unwrap();
    addr.parse()
        .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"))
}

/// The status code of a raw HTTP response, or 0 if there is none.
pub fn status_of(resp: &[u8]) -> u16 {
    let head = String::from_utf8_lossy(&resp[..resp.len().min(64)]);
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The value of header `name` in a raw response head (case-insensitive), if present.
pub fn header(resp: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(resp);
    let head = text.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// The body of a raw response (what follows the first blank line).
pub fn body_of(resp: &[u8]) -> &[u8] {
    match resp.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &resp[i + 4..],
        None => &[],
    }
}

/// Open fds of `pid`, each with what it points to, so a failure names the leaked target.
pub fn fds(pid: i32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.filter_map(|e| {
                let e = e.ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                Some(format!(
                    "{} -> {}",
                    e.file_name().to_string_lossy(),
                    target.display()
                ))
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Pids of the direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let p = t.path().join("children");
            if let Ok(s) = std::fs::read_to_string(p) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// Every descendant of `pid` (not including `pid`).
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut stack = children(pid);
    while let Some(p) = stack.pop() {
        out.push(p);
        stack.extend(children(p));
    }
    out
}

/// The one-letter state of `pid` from `/proc/PID/stat` (`Z` for a zombie), if it exists.
pub fn state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the state follows the last ')'.
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Descendants of `pid` that are zombies.
pub fn zombies(pid: i32) -> Vec<i32> {
    descendants(pid)
        .into_iter()
        .filter(|p| state(*p) == Some('Z'))
        .collect()
}

/// A `kB` field of `/proc/PID/status`, such as `VmRSS`.
pub fn status_kb(pid: i32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The parent pid of `pid`.
pub fn ppid(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The value of one sample line of a Prometheus text file.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until the metrics file shows `name` at `want` or more, and returns its text.
pub fn metric_reaches(path: &Path, name: &str, want: u64) -> String {
    eventually(
        Duration::from_secs(10),
        &format!("{name} >= {want}"),
        || {
            let text = std::fs::read_to_string(path).ok()?;
            (metric(&text, name)? >= want).then_some(text)
        },
    )
}

/// A forkd-loadgen run in the background, stopped (SIGINT, then its report) by `finish` or
/// killed if the test fails first.
pub struct Load {
    child: Option<Child>,
}

impl Load {
    /// Closed-loop keep-alive load from `connections` connections, until `finish`.
    pub fn start(addr: SocketAddr, connections: usize) -> Load {
        let url = format!("http://{addr}/bench/2k.html");
        let child = Command::new(LOADGEN)
            .args(["--json", "-c", &connections.to_string(), "-d", "120s", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run forkd-loadgen");
        Load { child: Some(child) }
    }

    /// Stops the load and returns its JSON report.
    pub fn finish(mut self) -> Value {
        let child = self.child.take().expect("running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            Signal::SIGINT,
        );
        let out = child.wait_with_output().expect("wait for forkd-loadgen");
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "loadgen printed no JSON ({e}); stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A directory for an access log that children may reopen in place, and a function that
/// creates a log file in it: started as root, children run as `nobody`, so the directory is
/// searchable and each file is theirs, as logrotate's `create 0640 nobody` would make it.
pub fn log_dir() -> (tempfile::TempDir, impl Fn(&Path)) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let nobody = nix::unistd::Uid::effective()
        .is_root()
        .then(|| nix::unistd::User::from_name("nobody").unwrap().unwrap());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let create = move |path: &Path| {
        std::fs::File::create(path).unwrap();
        if let Some(u) = &nobody {
            nix::unistd::chown(path, Some(u.uid), Some(u.gid)).unwrap();
        }
    };
    (dir, create)
}
