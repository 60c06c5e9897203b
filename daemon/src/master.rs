//! The master process: one `poll` loop that owns the listeners and the table of children.
//!
//! In `prefork` mode it keeps a pool of workers that accept on the shared listeners; in `fork`
//! mode it accepts itself and forks one child per connection, handing the connection over by
//! move so that the master cannot keep a copy (incident 000). Either way the number of children
//! never exceeds the configured bound, every ended child is reaped at once, a reload replaces
//! children instead of the master (no chain of forked parents, incident 004), and a stop closes
//! the listeners first, drains, then ends.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::backoff::Backoff;
use super::notify::Notifier;
use super::privdrop::Credentials;
use super::reap::{reap, reap_one, ProcessEnd};
use super::scoreboard::{self, Counter, Crash, Limit};
use super::side::{self, Side};
use super::signals::{Event, Events, SignalPipe};
use super::{atomic, fork, listener, reactor, resource, wait, watchdog, worker};

/// What a daemon built on this template does with one accepted connection. It runs in a child
/// process (a prefork worker or a per-connection child), never in the master.
pub trait Service {
    /// Serves one connection until it ends and returns how many requests it answered (a
    /// worker is recycled after `max_requests_per_worker` of them). The connection is lent:
    /// the template closes it when this returns, after it has given back the client's count
    /// (`--max-conns-per-client`), so a client that reconnects the moment it sees the close
    /// never meets a count that still holds the connection it just saw end.
    fn serve(&mut self, stream: &TcpStream, peer: SocketAddr) -> u64;

    /// Called in the master before any child is forked and after every reload: do here the
    /// lazy, once-per-process work each child would otherwise repeat (building tables, CPU
    /// feature detection behind SIMD parsers), so children inherit it done.
    fn prepare(&mut self) {}

    /// Fork mode: called in the master right before each per-connection fork. Refresh here
    /// what every child would otherwise compute for itself (the `Date` header's current
    /// second, say): done once in the master, it costs each child nothing, not even the pages
    /// of the code that computes it.
    fn before_fork(&mut self) {}

    /// The application's own limit counters, published with the template's on the
    /// scoreboard; a child counts a hit with `scoreboard::app_hit(index)`.
    fn counters(&self) -> &'static [Counter] {
        &[]
    }

    /// Bytes the master writes, without forking, to a connection it refuses because every
    /// child is busy (fork mode), and a worker to a connection over the per-client limit.
    /// Empty means close without a word.
    fn busy_response(&self) -> &[u8] {
        b""
    }

    /// Event mode ([`Mode::Event`]): the service's connections as state machines, which an
    /// event worker multiplexes (see [`reactor`]). Return `Some(self)`, or a part of `self`,
    /// when it implements [`reactor::EventService`]; the default `None` says the service has no
    /// event mode, and [`run`] refuses `Mode::Event` at start.
    fn events(&mut self) -> Option<&mut dyn reactor::Multiplex> {
        None
    }
}

/// The master's hooks into the application, called in the master only.
pub trait Daemon {
    type Service: Service;

    /// SIGHUP: builds settings and service anew (re-reading configuration). An error keeps
    /// the running ones.
    fn reload(&mut self) -> Result<(Settings, Self::Service), String>;

    /// SIGUSR1: reopens log files in `service`, the master's copy that new children inherit.
    /// Running children are then sent SIGUSR1 to reopen theirs by path between requests (see
    /// `worker::take_reopen_request`), unless they are chrooted (a path means another file
    /// there): those are replaced, as is a child that fails to reopen.
    fn reopen_logs(&mut self, _service: &mut Self::Service) -> Result<(), String> {
        Ok(())
    }
}

/// How connections reach children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A pool of `workers` processes accepting on the shared listeners.
    Prefork { workers: usize },
    /// The master accepts and forks one child per connection, at most `max_children` at once.
    Fork { max_children: usize },
    /// A pool of `workers` event workers accepting on the shared listeners, each multiplexing
    /// up to `connections` connections ([`reactor`]).
    Event { workers: usize, connections: usize },
}

impl Mode {
    /// The most connections served at once: the pool's workers, fork mode's children, or every
    /// event worker's table.
    pub fn bound(&self) -> usize {
        match *self {
            Mode::Prefork { workers } => workers,
            Mode::Fork { max_children } => max_children,
            Mode::Event {
                workers,
                connections,
            } => workers.saturating_mul(connections),
        }
    }

    /// The size of a pool of long-lived workers (`None` in fork mode, whose children live as
    /// long as their connection).
    pub fn workers(&self) -> Option<usize> {
        match *self {
            Mode::Prefork { workers } | Mode::Event { workers, .. } => Some(workers),
            Mode::Fork { .. } => None,
        }
    }

    /// Connections one child serves at once.
    pub fn per_child(&self) -> usize {
        match *self {
            Mode::Event { connections, .. } => connections,
            Mode::Prefork { .. } | Mode::Fork { .. } => 1,
        }
    }

    fn same_kind(&self, other: &Mode) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// The CPU scheduling policy of the children that serve connections (the master keeps its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// The master's policy, whatever it is (`chrt` or a service manager may have set it).
    Inherit,
    /// `SCHED_BATCH`: the same share of CPU as a normal process, but a child that wakes does
    /// not preempt the task running on its CPU. Several event workers that share a machine with
    /// busy processes (their clients, say) then take their work in batches instead of
    /// trading the CPU at every request. The cost: on a machine with no idle CPU, a request
    /// may wait for the running task's time slice (a few milliseconds) before it is served.
    /// See `worker::set_scheduling`.
    Batch,
}

/// Everything the process machinery needs to know; nothing about the application.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Names the daemon in its readiness line and logs.
    pub name: &'static str,
    pub mode: Mode,
    pub listen: Vec<SocketAddr>,
    /// A prefork worker exits after about this many requests (0: never), with jitter so the
    /// pool does not turn over all at once.
    pub max_requests_per_worker: u64,
    pub shutdown_timeout: Duration,
    /// Who children run as, when the master is root.
    pub credentials: Option<Credentials>,
    pub pid_file: Option<PathBuf>,
    /// Where the master publishes the scoreboard in the Prometheus text format, rewritten
    /// atomically every second.
    pub metrics_file: Option<PathBuf>,
    /// A connection reaches a child only once its client has sent something, or after about
    /// this long (`TCP_DEFER_ACCEPT`, see [`listener::set_defer_accept`]); zero turns it off.
    pub defer_accept: Duration,
    /// The most connections one client address (an IPv6 /64) may hold at once in children;
    /// beyond it a connection gets [`Service::busy_response`] at once (0: no limit). Counted on
    /// the scoreboard, so it holds across all prefork workers.
    pub max_conns_per_client: usize,
    /// Where the master answers HAProxy's `agent-check` (see [`side`]); off when `None`.
    pub agent_listen: Option<SocketAddr>,
    /// Where the master serves its status page and `/status.json` (see [`side`]).
    pub status_listen: Option<SocketAddr>,
    /// The scheduling policy of workers and fork-mode children.
    pub scheduling: Scheduling,
}

impl Settings {
    /// `name` serving `listen` in `mode`, with every other setting off: no recycling, no pid,
    /// metrics or side ports, no deferred accept (a protocol whose server speaks first would
    /// never see its clients), no per-client limit, children as the master's user, and 10 s
    /// for a graceful stop, and children scheduled as the master is. Set fields on the result
    /// to turn things on.
    pub fn new(name: &'static str, mode: Mode, listen: Vec<SocketAddr>) -> Settings {
        Settings {
            name,
            mode,
            listen,
            max_requests_per_worker: 0,
            shutdown_timeout: Duration::from_secs(10),
            credentials: None,
            pid_file: None,
            metrics_file: None,
            defer_accept: Duration::ZERO,
            max_conns_per_client: 0,
            agent_listen: None,
            status_listen: None,
            scheduling: Scheduling::Inherit,
        }
    }
}

/// Why the master could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Listen(#[from] listener::ListenError),
    #[error("unable to install signal handlers: {0}")]
    Signals(io::Error),
    #[error("unable to write pid file {path}: {source}")]
    PidFile { path: PathBuf, source: io::Error },
    #[error("unable to set up listeners: {0}")]
    ListenerSetup(io::Error),
    #[error("nothing to listen on")]
    NoListener,
    #[error("unable to map the scoreboard: {0}")]
    Scoreboard(io::Error),
    #[error("unable to fork: {0}")]
    Fork(nix::Error),
    #[error("this daemon has no event mode (its service returns no `events()`)")]
    NoEventMode,
    #[error(
        "the process has threads: a fork would give children locks that no thread of theirs \
         releases (start threads, if any, in the children)"
    )]
    Threaded,
}

impl StartError {
    /// "Restarting will not help" (exit 100 in forkd, s6's permanent failure): the failure
    /// is in the configuration or the file system it names, not in a passing condition. A
    /// pid-file directory that is read-only or missing stays so (issue 10: it exited 111 and
    /// was retried forever); an address in use, a full disk or a failed fork may pass.
    pub fn is_permanent(&self) -> bool {
        let errno = |e: &io::Error| e.raw_os_error().unwrap_or(0);
        match self {
            StartError::PidFile { source, .. } => matches!(
                errno(source),
                libc::EACCES
                    | libc::EPERM
                    | libc::EROFS
                    | libc::ENOENT
                    | libc::ENOTDIR
                    | libc::EISDIR
                    | libc::ELOOP
                    | libc::ENAMETOOLONG
            ),
            StartError::Listen(listener::ListenError::Bind { source, .. }) => {
                matches!(errno(source), libc::EACCES | libc::EPERM)
            }
            StartError::Listen(listener::ListenError::Inherited { .. }) => true,
            StartError::NoListener | StartError::NoEventMode | StartError::Threaded => true,
            StartError::Signals(_)
            | StartError::ListenerSetup(_)
            | StartError::Scoreboard(_)
            | StartError::Fork(_) => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining { deadline: Instant },
}

struct ChildInfo {
    generation: u64,
    slot: usize,
    started: Instant,
    stopping: bool,
    /// A child retired by a reload is killed if it still runs then (`--shutdown-timeout`
    /// after the reload): a slow client cannot keep an old generation, and what it holds,
    /// alive for as long as it likes, reload after reload.
    kill_at: Option<Instant>,
    /// An event worker's per-client counts, given back when it is reaped.
    held: Option<scoreboard::Held>,
}

/// A worker that lives less than this and fails counts as dying fast; one that lives longer
/// forgives the fast deaths before it.
const FAST_DEATH: Duration = Duration::from_secs(1);
/// The first pause before respawning a worker that died fast, doubled for each one after.
const RESPAWN_DELAY: Duration = Duration::from_millis(100);
/// The longest pause between respawns of workers that keep dying fast.
const MAX_RESPAWN_DELAY: Duration = Duration::from_secs(10);
/// How long accepting pauses after it failed for want of fds or memory, at first.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Fast stop: how long children get to die from SIGINT before SIGKILL.
const FAST_STOP_GRACE: Duration = Duration::from_secs(1);
/// How often the metrics file is rewritten.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);
/// Fork mode, every slot taken: how long connections wait in the backlog before the first is
/// refused. A child ends its connection before it exits and is reaped, so a client that
/// reconnects at once (and the next client of a busy site) would otherwise meet a full table
/// for the few hundred microseconds the exit takes, and get a 503 with a slot about to free:
/// 20-33 % of a lone reconnecting client's connections at `--max-children 1`. SIGCHLD ends
/// the wait early; a table that stays full still answers 503 within this time.
const FULL_GRACE: Duration = Duration::from_millis(20);
/// A worker's blocking accept returns this often, to close the race with a stop signal.
const ACCEPT_TICK: Duration = Duration::from_secs(1);

struct Master<'a, D: Daemon> {
    daemon: &'a mut D,
    settings: Settings,
    service: D::Service,
    signals: SignalPipe,
    notifier: &'a Notifier,
    listeners: Vec<TcpListener>,
    children: HashMap<Pid, ChildInfo>,
    generation: u64,
    phase: Phase,
    /// Counts workers that died fast before serving; decides when the next may start.
    respawn: Backoff,
    respawn_at: Option<Instant>,
    /// Workers that crashed while serving and are owed a replacement regardless of the
    /// respawn throttle.
    replace_now: usize,
    accept_pause: Option<(Instant, Duration)>,
    /// Fork mode: since when every child slot has been taken. Connections are left queued for
    /// up to [`FULL_GRACE`] before any is refused, since a slot is usually about to come back.
    full_since: Option<Instant>,
    spawned: u64,
    free_slots: Vec<usize>,
    next_metrics: Option<Instant>,
    /// The earliest `kill_at` of the retired children, if any.
    next_retire_kill: Option<Instant>,
    /// `WATCHDOG=1` every half interval while the pool serves (`WATCHDOG_USEC`).
    watchdog: Option<watchdog::Watchdog>,
    /// This process, which children check is still their parent once they will die with it.
    pid: Pid,
    /// Listeners passed in by socket activation (their fds): whoever passed them holds them
    /// for the next server, so a stop closes them here but never shuts them down.
    inherited: Vec<RawFd>,
    /// The agent and status ports and their connections, answered from this loop.
    side: Side,
    started: Instant,
}

/// Runs the master until it is stopped; returns the process exit code.
pub fn run<D: Daemon>(
    settings: Settings,
    service: D::Service,
    daemon: &mut D,
    notifier: &Notifier,
) -> Result<i32, StartError> {
    // Inherited sockets first, before this process opens any fd of its own that could be
    // mistaken for one of them.
    let (listeners, inherited) = open_listeners(&settings.listen)?;
    // Checked in release builds too, once: a daemon built on this template that starts a
    // thread before it forks would hand its children locks held by threads they do not have.
    if !fork::single_threaded() {
        return Err(StartError::Threaded);
    }
    let side = Side::bind(settings.agent_listen, settings.status_listen)?;
    let signals = SignalPipe::install().map_err(StartError::Signals)?;
    worker::set_child_dispositions().map_err(StartError::Signals)?;
    let mut m = Master {
        daemon,
        settings,
        service,
        signals,
        notifier,
        listeners,
        children: HashMap::new(),
        generation: 0,
        phase: Phase::Running,
        respawn: Backoff::exact(RESPAWN_DELAY, MAX_RESPAWN_DELAY, FAST_DEATH),
        respawn_at: None,
        replace_now: 0,
        accept_pause: None,
        full_since: None,
        spawned: 0,
        free_slots: (0..scoreboard::SLOTS).rev().collect(),
        next_metrics: None,
        next_retire_kill: None,
        watchdog: watchdog::Watchdog::from_env(Instant::now()),
        pid: nix::unistd::getpid(),
        inherited,
        side,
        started: Instant::now(),
    };
    if let Mode::Event { connections, .. } = m.settings.mode {
        if m.service.events().is_none() {
            return Err(StartError::NoEventMode);
        }
        raise_fd_limit(connections);
    }
    m.prepare_listeners().map_err(StartError::ListenerSetup)?;
    m.defer_accept();
    fork::warm_up();
    fork::exit_children_on_panic();
    m.service.prepare();
    fork::tidy_heap();
    scoreboard::install(m.service.counters()).map_err(StartError::Scoreboard)?;
    scoreboard::set_capacity(m.settings.mode.bound());
    scoreboard::set_per_child(m.settings.mode.per_child());
    if let Some(path) = m.settings.pid_file.clone() {
        let text = format!("{}\n", std::process::id());
        atomic::write_atomic(&path, text.as_bytes(), 0o644)
            .map_err(|source| StartError::PidFile { path, source })?;
    }
    let result = m.serve();
    if let Some(path) = &m.settings.pid_file {
        // Only our own: a successor started with the same file (a restart that overlapped
        // our drain) has written its pid there, and a manager reading it needs it.
        let ours = format!("{}\n", std::process::id());
        if std::fs::read(path).is_ok_and(|text| text == ours.as_bytes()) {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

/// Event mode: raises the soft fd limit, which workers inherit, to what a table of
/// `connections` needs (`limits::event_fds`). The application checks the hard limit when it
/// reads its configuration; short of it, a worker that runs out pauses accepting (counted as
/// `accept_resources`) and keeps serving what it holds.
fn raise_fd_limit(connections: usize) {
    let wanted = super::limits::event_fds(connections);
    match super::limits::raise_fd_limit(wanted) {
        Ok(soft) if soft < wanted => tracing::warn!(
            "event workers of {connections} connections may need {wanted} fds; the limit is {soft}"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("unable to raise the fd limit to {wanted}: {e}"),
    }
}

/// Binds every configured address, reusing any inherited socket already bound to it; also
/// returns the fds of the inherited ones.
fn open_listeners(wanted: &[SocketAddr]) -> Result<(Vec<TcpListener>, Vec<RawFd>), StartError> {
    let mut inherited = listener::inherit()?;
    let inherited_fds = inherited.iter().map(listener::raw).collect();
    let mut out = Vec::new();
    for addr in wanted {
        let pos = inherited
            .iter()
            .position(|l| listener::local_addr(l).ok().as_ref() == Some(addr));
        match pos {
            Some(i) => out.push(inherited.swap_remove(i)),
            None => out.push(listener::bind(*addr)?),
        }
    }
    for l in inherited {
        tracing::info!(
            "using inherited listener {} that the configuration does not name",
            listener::local_addr(&l).map_or("?".into(), |a| a.to_string())
        );
        out.push(l);
    }
    if out.is_empty() {
        return Err(StartError::NoListener);
    }
    Ok((out, inherited_fds))
}

impl<D: Daemon> Master<'_, D> {
    /// Prefork workers with one listener block in `accept` (the kernel wakes one of them per
    /// connection, no thundering herd); with several listeners, in fork mode where the master
    /// polls, and in event mode where workers accept in batches until `EAGAIN`, listeners are
    /// non-blocking.
    fn prepare_listeners(&self) -> io::Result<()> {
        let blocking =
            matches!(self.settings.mode, Mode::Prefork { .. }) && self.listeners.len() == 1;
        for l in &self.listeners {
            l.set_nonblocking(!blocking)?;
            listener::set_nodelay(l)?;
            if blocking {
                listener::set_accept_timeout(l, ACCEPT_TICK)?;
            }
            if let Mode::Event { .. } = self.settings.mode {
                listener::tune_for_events(l)?;
            }
        }
        Ok(())
    }

    /// Sets `TCP_DEFER_ACCEPT` on every listener, inherited ones included (it can be set on a
    /// listening socket at any time). A kernel that refuses it costs the protection, not the
    /// service: logged, not fatal.
    fn defer_accept(&self) {
        for l in &self.listeners {
            if let Err(e) = listener::set_defer_accept(l, self.settings.defer_accept) {
                tracing::warn!(
                    "unable to set TCP_DEFER_ACCEPT on {}: {e}; silent connections will reach children",
                    listener::local_addr(l).map_or("?".into(), |a| a.to_string())
                );
            }
        }
    }

    fn serve(&mut self) -> Result<i32, StartError> {
        if let Some(workers) = self.settings.mode.workers() {
            for _ in 0..workers {
                self.spawn_worker().map_err(StartError::Fork)?;
            }
        }
        self.announce_ready();
        self.publish_metrics();
        loop {
            let events = self.wait();
            for event in events {
                match event {
                    Event::Child => self.reap_children(),
                    Event::Terminate => self.begin_drain(),
                    Event::Interrupt => return Ok(self.fast_stop()),
                    Event::Reload => self.reload(),
                    Event::ReopenLogs => self.reopen_logs(),
                }
            }
            self.answer_side();
            self.publish_metrics();
            self.ping_watchdog();
            self.kill_overdue_retirees();
            match self.phase {
                Phase::Running => self.fill_pool(),
                Phase::Draining { deadline } => {
                    if self.children.is_empty() {
                        tracing::info!("all children ended; exiting");
                        return Ok(0);
                    }
                    if Instant::now() >= deadline {
                        tracing::warn!(
                            "shutdown timeout reached: killing {} children",
                            self.children.len()
                        );
                        self.kill_all(Signal::SIGKILL);
                        self.wait_all_children();
                        return Ok(0);
                    }
                }
            }
        }
    }

    /// Rewrites the metrics file when a second has passed since the last time.
    fn publish_metrics(&mut self) {
        let Some(path) = &self.settings.metrics_file else {
            return;
        };
        let now = Instant::now();
        if self.next_metrics.is_some_and(|t| now < t) {
            return;
        }
        self.next_metrics = Some(now + METRICS_INTERVAL);
        let text = scoreboard::render(self.settings.name, self.generation);
        if let Err(e) = atomic::write_atomic_unsynced(path, text.as_bytes(), 0o644) {
            tracing::warn!("unable to write metrics file {}: {e}", path.display());
        }
    }

    /// `WATCHDOG=1` when due, if the pool is serving (see [`watchdog`]): sent from this loop,
    /// so a master that hangs or is stopped stops it too. Never while draining.
    fn ping_watchdog(&mut self) {
        let Some(w) = self.watchdog.as_mut() else {
            return;
        };
        let slots: Vec<usize> = self.children.values().map(|c| c.slot).collect();
        // A master that accepts itself is its own pool; otherwise the workers are.
        let accepts_itself = matches!(self.settings.mode, Mode::Fork { .. });
        let pool = (!accepts_itself).then(|| watchdog::activity(slots.into_iter()));
        if w.tick(Instant::now(), pool.as_deref()) && self.phase == Phase::Running {
            let _ = self.notifier.send("WATCHDOG=1");
        }
    }

    /// Answers the agent and status ports from this turn's readiness (see [`side`]).
    fn answer_side(&mut self) {
        let snapshot = || {
            Snapshot {
                settings: &self.settings,
                children: &self.children,
                phase: self.phase,
                generation: self.generation,
                started: self.started,
                accept_pause: self.accept_pause,
            }
            .take()
        };
        self.side.answer(Instant::now(), &snapshot);
    }

    fn announce_ready(&self) {
        let urls: Vec<String> = self
            .listeners
            .iter()
            .filter_map(|l| listener::local_addr(l).ok())
            .map(|a| format!("http://{a}/"))
            .collect();
        let how = match self.settings.mode {
            Mode::Prefork { workers } => format!("prefork, {workers} workers"),
            Mode::Fork { max_children } => format!("fork, at most {max_children} children"),
            Mode::Event {
                workers,
                connections,
            } => format!("event, {workers} workers x {connections} connections"),
        };
        // Before the ready line, so whoever waits for it knows these ports too (port 0 binds
        // any free one).
        for (kind, addr) in self.side.local_addrs() {
            let what = match kind {
                side::Kind::Agent => format!("agent-check on {addr}"),
                side::Kind::Status => format!("status page on http://{addr}/"),
            };
            let _ = io::stderr().write_all(format!("{}: {what}\n", self.settings.name).as_bytes());
        }
        // One write, so the line is whole even if someone else shares stderr.
        let line = format!(
            "{}: ready on {} (pid {}, {how})\n",
            self.settings.name,
            urls.join(" and "),
            std::process::id()
        );
        let _ = io::stderr().write_all(line.as_bytes());
        if let Err(e) = self.notifier.send(&format!(
            "READY=1\nSTATUS=serving ({how})\nMAINPID={}",
            std::process::id()
        )) {
            tracing::warn!("unable to notify readiness: {e}");
        }
    }

    /// The one wait point: signals first, then (fork mode, running, not paused) listeners,
    /// with a deadline for whatever is due next.
    fn wait(&mut self) -> Events {
        let now = Instant::now();
        let fork_mode = matches!(self.settings.mode, Mode::Fork { .. });
        let grace_ends = if fork_mode {
            self.full_grace_ends(now, false)
        } else {
            None
        };
        let accepting = self.phase == Phase::Running
            && fork_mode
            && self.accept_pause.is_none_or(|(until, _)| now >= until)
            && grace_ends.is_none_or(|t| now >= t);
        let mut deadline: Option<Instant> = None;
        let mut due = |t: Instant| deadline = Some(deadline.map_or(t, |d| d.min(t)));
        // Only a grace still running is a wake-up; one that ran out is over (accepting again).
        if let Some(t) = grace_ends.filter(|&t| t > now) {
            due(t);
        }
        if let Some(t) = self.respawn_at {
            due(t);
        }
        if let Some((t, _)) = self.accept_pause {
            due(t);
        }
        if let Phase::Draining { deadline } = self.phase {
            due(deadline);
        }
        if let Some(t) = self.next_metrics {
            due(t);
        }
        if let Some(t) = self.next_retire_kill {
            due(t);
        }
        if let Some(w) = &self.watchdog {
            due(w.due());
        }
        if let Some(t) = self.side.next_deadline() {
            due(t);
        }
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let ms = d.saturating_duration_since(now).as_millis().min(60_000) as u32 + 1;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        // Which listeners have a connection waiting, as bits: the loop runs once per
        // connection in fork mode, and every heap page it writes after a fork costs it a
        // copy-on-write fault, so it allocates nothing while there are at most 64 listeners.
        let mut ready = Ready::default();
        let side_ready = {
            let signals = self.signals.fd();
            let listeners = if accepting {
                self.listeners.as_slice()
            } else {
                &[]
            };
            let fd = |i: usize| match i.checked_sub(1).and_then(|l| listeners.get(l)) {
                Some(l) => PollFd::new(l.as_fd(), PollFlags::POLLIN),
                None => PollFd::new(signals, PollFlags::POLLIN),
            };
            let side_at = 1 + listeners.len();
            // Empty (and so not allocated) unless a side port is configured.
            let side_fds = self.side.pollfds();
            let mut few: [PollFd<'_>; 1 + Ready::FEW] = std::array::from_fn(fd);
            let mut many: Vec<PollFd<'_>>;
            let fds = match few.get_mut(..side_at).filter(|_| side_fds.is_empty()) {
                Some(fds) => fds,
                None => {
                    many = (0..side_at)
                        .map(fd)
                        .chain(side_fds.iter().map(|(f, want)| PollFd::new(*f, *want)))
                        .collect();
                    &mut many
                }
            };
            let polled = match poll(fds, timeout) {
                Ok(_) => true,
                Err(nix::errno::Errno::EINTR) => false,
                Err(e) => {
                    tracing::error!("poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    false
                }
            };
            let revents = |fd: &PollFd| match polled {
                true => fd.revents().unwrap_or(PollFlags::empty()),
                false => PollFlags::empty(),
            };
            for (i, fd) in fds.iter().enumerate().take(side_at).skip(1) {
                if !revents(fd).is_empty() {
                    ready.add(i - 1);
                }
            }
            let side_ready: Vec<PollFlags> = fds.iter().skip(side_at).map(revents).collect();
            side_ready
        };
        self.side.set_ready(side_ready);
        let mut events = self.signals.drain();
        // Reap before accepting, so that ended children free their slots first.
        if events.remove(Event::Child) {
            self.reap_children();
        }
        // Signals before connections: a stop must not wait behind a burst of accepts.
        if !events.contains(Event::Terminate) && !events.contains(Event::Interrupt) {
            for i in ready.indices() {
                self.accept_burst(i);
            }
        }
        events
    }

    /// Fork mode: accepts what is waiting on listener `i` (a bounded burst, so signals are
    /// looked at often) and hands each connection to a new child, or refuses it when the
    /// bound is reached.
    fn accept_burst(&mut self, i: usize) {
        for n in 0..64 {
            if self.children.len() >= self.settings.mode.bound() {
                // Exits whose SIGCHLD is still on its way free slots too.
                self.reap_children();
                if n > 0 && self.children.len() >= self.settings.mode.bound() {
                    // Full again: whether another connection waits is for the next poll to
                    // say, which then starts the grace.
                    return;
                }
            }
            let now = Instant::now();
            if self.full_grace_ends(now, true).is_some_and(|t| now < t) {
                // Left queued: the next wait ends at a SIGCHLD or when the grace runs out.
                return;
            }
            let Some(l) = self.listeners.get(i) else {
                return;
            };
            let accepted = listener::accept(l);
            match accepted {
                Ok((stream, peer)) => {
                    self.accept_pause = None;
                    if self.children.len() >= self.settings.mode.bound() {
                        scoreboard::hit(Limit::ChildrenBound);
                        self.refuse(stream);
                    } else {
                        self.spawn_conn(stream, peer);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if resource::is_exhausted(&e) => {
                    self.pause_accepting(&e);
                    return;
                }
                // ECONNABORTED and friends: that client is gone, the next one is fine.
                Err(e) => {
                    tracing::debug!("accept: {e}");
                    continue;
                }
            }
        }
    }

    /// Fork mode: when the grace for a full table ends, while every slot is taken and a
    /// connection has been found waiting (`waiting`: the caller found one now, and the grace
    /// starts if it has not); `None` when a slot is free (which also forgets the grace), or
    /// while no connection has waited yet. The grace counts from the first connection that met
    /// the full table, not from when the table filled: a child that served longer than the
    /// grace would otherwise leave the next client a 503 at once, with its slot about to free
    /// (issue 14's fork tests met that on a loaded machine).
    fn full_grace_ends(&mut self, now: Instant, waiting: bool) -> Option<Instant> {
        if self.children.len() < self.settings.mode.bound() {
            self.full_since = None;
            return None;
        }
        if waiting {
            self.full_since.get_or_insert(now);
        }
        self.full_since.map(|t| t + FULL_GRACE)
    }

    /// EMFILE and friends: the connection stays in the backlog, so polling again at once would
    /// spin. Pause accepting, doubling the pause while it keeps failing (capped at 1 s), and
    /// keep serving signals and children meanwhile: never a busy loop, never a stop for good.
    fn pause_accepting(&mut self, e: &io::Error) {
        scoreboard::hit(Limit::AcceptResources);
        let pause = match self.accept_pause {
            Some((_, p)) => (p * 2).min(Duration::from_secs(1)),
            None => ACCEPT_PAUSE,
        };
        tracing::warn!("accept failed ({e}); pausing accepts for {pause:?}");
        self.accept_pause = Some((Instant::now() + pause, pause));
    }

    /// Answers a connection refused for want of a child slot, without forking and without
    /// blocking (see [`worker::refuse`]); closed in the master at once.
    fn refuse(&self, stream: TcpStream) {
        worker::refuse(stream, self.service.busy_response());
    }

    fn spawn_conn(&mut self, stream: TcpStream, peer: SocketAddr) {
        let Some(slot) = self.free_slots.pop() else {
            scoreboard::hit(Limit::ChildrenBound);
            return self.refuse(stream);
        };
        scoreboard::prepare(slot);
        // Counted here, before the fork, by the one process that accepts: a client over its
        // limit costs no fork, and no two processes race on its count. Given back at reap.
        if !scoreboard::admit(slot, peer.ip(), self.settings.max_conns_per_client) {
            self.free_slots.push(slot);
            return self.refuse(stream);
        }
        self.service.before_fork();
        let (creds, master) = (self.settings.credentials.as_ref(), self.pid);
        let scheduling = self.settings.scheduling;
        let signal_fds = self.signals.raw_fds();
        // The side ports and their connections are the master's alone: a child holding the
        // agent port would answer for a master that is gone. Empty, so not allocated, unless
        // a side port is configured.
        let side_fds = self.side.raw_fds();
        let (listeners, service) = (&self.listeners, &mut self.service);
        // The connection moves into the child's body; `spawn` drops that body in the master
        // when it returns, so the master's copy of the socket is closed whatever happens.
        let spawned = fork::spawn(move || {
            // The listeners too: a long-lived child would otherwise keep the port bound after
            // the master is gone.
            if let Err(code) = worker::enter(&signal_fds, &side_fds, listeners, creds, slot, master)
            {
                return code;
            }
            worker::set_scheduling(scheduling);
            worker::serve_one(service, stream, peer);
            0
        });
        let _ = self.record_spawn(spawned, slot);
    }

    fn spawn_worker(&mut self) -> nix::Result<Pid> {
        let Some(slot) = self.free_slots.pop() else {
            return Err(nix::errno::Errno::EAGAIN);
        };
        scoreboard::prepare(slot);
        let budget = jittered(self.settings.max_requests_per_worker, self.spawned);
        let per_client = self.settings.max_conns_per_client;
        let creds = self.settings.credentials.as_ref();
        let connections = match self.settings.mode {
            Mode::Event { connections, .. } => Some(connections),
            Mode::Prefork { .. } | Mode::Fork { .. } => None,
        };
        // An event worker's per-client counts live in a table of its own, which the master
        // keeps until the reap (see `scoreboard::Held`).
        let held = match connections.map(|_| scoreboard::Held::map()).transpose() {
            Ok(h) => h,
            Err(e) => {
                self.free_slots.push(slot);
                tracing::error!("unable to map a worker's client table: {e}");
                return Err(nix::errno::Errno::ENOMEM);
            }
        };
        let (listeners, service, held_ref) = (&self.listeners, &mut self.service, held.as_ref());
        let (signal_fds, master) = (self.signals.raw_fds(), self.pid);
        let side_fds = self.side.raw_fds();
        let scheduling = self.settings.scheduling;
        let spawned = fork::spawn(move || {
            if let Err(code) = worker::enter(&signal_fds, &side_fds, &[], creds, slot, master) {
                return code;
            }
            worker::set_scheduling(scheduling);
            match connections {
                Some(connections) => {
                    if let Some(h) = held_ref {
                        scoreboard::enter_held(h);
                    }
                    worker::event_loop(listeners, service, connections, budget, per_client)
                }
                None => worker::accept_loop(listeners, service, budget, per_client),
            }
        });
        let pid = self.record_spawn(spawned, slot)?;
        if let Some(info) = self.children.get_mut(&pid) {
            info.held = held;
        }
        Ok(pid)
    }

    fn record_spawn(&mut self, spawned: nix::Result<Pid>, slot: usize) -> nix::Result<Pid> {
        match spawned {
            Ok(pid) => {
                self.spawned += 1;
                scoreboard::claim(slot, pid.as_raw());
                self.children.insert(
                    pid,
                    ChildInfo {
                        generation: self.generation,
                        slot,
                        started: Instant::now(),
                        stopping: false,
                        kill_at: None,
                        held: None,
                    },
                );
            }
            Err(e) => {
                self.free_slots.push(slot);
                scoreboard::hit(Limit::ForkFailed);
                tracing::error!("fork failed: {e}");
            }
        }
        spawned
    }

    /// Forgets a child that was reaped and frees its scoreboard slot.
    fn forget(&mut self, pid: Pid) -> Option<ChildInfo> {
        let info = self.children.remove(&pid)?;
        scoreboard::release(info.slot);
        if let Some(held) = &info.held {
            held.give_back_all();
        }
        self.free_slots.push(info.slot);
        Some(info)
    }

    fn reap_children(&mut self) {
        while let Some((pid, end)) = reap_one() {
            // Read before `forget` frees the slot for the next child.
            let served = self
                .children
                .get(&pid)
                .is_some_and(|c| scoreboard::slot_served(c.slot));
            let Some(info) = self.forget(pid) else {
                continue;
            };
            self.note_end(pid, &info, end, served);
        }
    }

    /// Logs and counts why a child ended, and decides how its replacement comes: at once for a
    /// worker that crashed while serving (the request killed it; throttling would leave the
    /// pool empty while more such requests wait in the backlog), after a growing delay for
    /// one that failed fast before serving anything (the environment is at fault, and
    /// respawning at full speed would only spin).
    fn note_end(&mut self, pid: Pid, info: &ChildInfo, end: ProcessEnd, served: bool) {
        // Prefork and event workers alike: an event worker that crashes takes every
        // connection it held with it, but it is replaced at once all the same.
        let is_worker = self.settings.mode.workers().is_some();
        let lived = info.started.elapsed();
        let what = if is_worker {
            "worker"
        } else {
            "connection child"
        };
        let after = aftermath(end, info.stopping, served, lived);
        let cause = match after {
            Aftermath::Clean => {
                if is_worker {
                    tracing::debug!("worker {pid} {end} after {lived:.1?}");
                    self.respawn.note_run(lived);
                }
                return;
            }
            Aftermath::ReplaceNow(c) | Aftermath::Throttle(c) | Aftermath::Replace(c) => c,
        };
        scoreboard::crashed(cause);
        let running = self.phase == Phase::Running;
        match after {
            Aftermath::ReplaceNow(_) if is_worker && running => {
                self.replace_now += 1;
                tracing::error!(
                    "{what} {pid} {end} after {lived:.1?} while serving; replaced at once"
                );
            }
            Aftermath::Throttle(_) if is_worker && running => {
                scoreboard::hit(Limit::RespawnThrottled);
                let delay = self.respawn.next_delay(lived);
                self.respawn_at = Some(Instant::now() + delay);
                tracing::error!("{what} {pid} {end} after {lived:.1?}; respawning in {delay:?}");
            }
            _ => tracing::error!("{what} {pid} {end} after {lived:.1?}"),
        }
    }

    /// Replaces ended workers up to the pool size. In prefork mode stopping workers still
    /// count, so a reload never runs more processes than the bound, and a busy old worker
    /// costs the pool exactly the one connection it is finishing. An event worker holds many:
    /// one kept by a slow download after a reload would take a whole worker's share of the
    /// pool (with one worker, all of it) until it ends, so in event mode the new generation
    /// starts whole at once, beside the old workers, whose drain the shutdown timeout bounds.
    /// Workers owed for crashes while serving come first and ignore the throttle; the rest
    /// wait for it.
    fn fill_pool(&mut self) {
        let Some(workers) = self.settings.mode.workers() else {
            return;
        };
        let event = matches!(self.settings.mode, Mode::Event { .. });
        let counted = |children: &HashMap<Pid, ChildInfo>| match event {
            true => children.values().filter(|c| !c.stopping).count(),
            false => children.len(),
        };
        let throttled = self.respawn_at.is_some_and(|t| Instant::now() < t);
        if !throttled {
            self.respawn_at = None;
        }
        while counted(&self.children) < workers {
            let owed = self.replace_now > 0;
            if !owed && throttled {
                return;
            }
            if self.spawn_worker().is_err() {
                self.respawn_at = Some(Instant::now() + Duration::from_secs(1));
                return;
            }
            if owed {
                self.replace_now -= 1;
            } else if self.respawn.failures() > 0 {
                // One at a time while workers keep dying, each after the throttle delay.
                break;
            }
        }
        if counted(&self.children) >= workers {
            self.replace_now = 0;
        }
    }

    fn begin_drain(&mut self) {
        if let Phase::Draining { .. } = self.phase {
            tracing::warn!("second SIGTERM: stopping now");
            self.kill_all(Signal::SIGKILL);
            self.phase = Phase::Draining {
                deadline: Instant::now(),
            };
            return;
        }
        let _ = self.notifier.send("STOPPING=1");
        self.stop_listening();
        tracing::info!(
            "stopping: draining {} children for up to {:?}",
            self.children.len(),
            self.settings.shutdown_timeout
        );
        self.kill_all(Signal::SIGTERM);
        self.phase = Phase::Draining {
            // Bounded by the configuration, but a template cannot count on that: an
            // `Instant` past what the clock holds panics.
            deadline: Instant::now()
                .checked_add(self.settings.shutdown_timeout)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(24 * 3600)),
        };
    }

    fn fast_stop(&mut self) -> i32 {
        let _ = self.notifier.send("STOPPING=1");
        self.stop_listening();
        self.kill_all(Signal::SIGINT);
        wait::until(FAST_STOP_GRACE, Duration::from_millis(5), || {
            self.reap_children();
            self.children.is_empty()
        });
        self.kill_all(Signal::SIGKILL);
        self.wait_all_children();
        0
    }

    /// Stops accepting at once. Prefork workers share each listener and a busy one keeps its
    /// copy open until it exits, so closing ours is not enough: `shutdown` acts on the shared
    /// socket itself, which leaves the LISTEN state for every holder (Linux), and workers
    /// blocked in `accept` return. Not for an inherited listener: its holder (a supervisor,
    /// systemd) keeps it for the next server, and connections that arrive meanwhile wait in
    /// its backlog; ours is only closed, and workers stop accepting on their TERM.
    fn stop_listening(&mut self) {
        for l in self.listeners.drain(..) {
            if !self.inherited.contains(&listener::raw(&l)) {
                let _ = socket2::SockRef::from(&l).shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Signals every child; those asked to stop are marked so their end is not an error.
    fn kill_all(&mut self, sig: Signal) {
        for (pid, info) in self.children.iter_mut() {
            info.stopping = true;
            let _ = kill(*pid, sig);
        }
    }

    /// Blocks until every known child has been reaped (after SIGKILL this is prompt).
    fn wait_all_children(&mut self) {
        let pids: Vec<Pid> = self.children.keys().copied().collect();
        for pid in pids {
            let _ = nix::sys::wait::waitpid(pid, None);
            self.forget(pid);
        }
        reap(|_, _| {});
    }

    /// Asks every child of an older generation to finish its request and leave, within the
    /// shutdown timeout. New ones are started by `fill_pool`: as the old ones exit in prefork
    /// mode, at once in event mode (see `fill_pool`).
    fn retire_old_generations(&mut self) {
        let current = self.generation;
        let kill_at = Instant::now() + self.settings.shutdown_timeout;
        let mut retired = false;
        for (pid, info) in self.children.iter_mut() {
            if info.generation < current && !info.stopping {
                info.stopping = true;
                info.kill_at = Some(kill_at);
                let _ = kill(*pid, Signal::SIGTERM);
                retired = true;
            }
        }
        // The earliest deadline stands: a reload may have shortened the timeout.
        if retired {
            self.next_retire_kill = Some(self.next_retire_kill.map_or(kill_at, |t| t.min(kill_at)));
        }
    }

    /// Kills the retired children still running at their `kill_at`: a reload's drain is as
    /// bounded as a stop's.
    fn kill_overdue_retirees(&mut self) {
        let now = Instant::now();
        if self.next_retire_kill.is_none_or(|t| now < t) {
            return;
        }
        self.next_retire_kill = None;
        for (pid, info) in self.children.iter_mut() {
            match info.kill_at {
                Some(t) if t <= now => {
                    tracing::warn!(
                        "child {pid} of generation {} still draining {:?} after the reload: killed",
                        info.generation,
                        self.settings.shutdown_timeout
                    );
                    let _ = kill(*pid, Signal::SIGKILL);
                    // Once: the reap forgets it.
                    info.kill_at = None;
                }
                Some(t) => {
                    self.next_retire_kill = Some(self.next_retire_kill.map_or(t, |n| n.min(t)));
                }
                None => {}
            }
        }
    }

    fn reload(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let _ = self.notifier.send("RELOADING=1");
        match self.daemon.reload() {
            Err(msg) => {
                tracing::error!(
                    "reload failed, still serving with the running configuration: {msg}"
                );
            }
            Ok((mut new, service)) => {
                self.keep_what_cannot_change(&mut new);
                self.settings = new;
                self.service = service;
                self.service.prepare();
                fork::tidy_heap();
                scoreboard::set_capacity(self.settings.mode.bound());
                scoreboard::set_per_child(self.settings.mode.per_child());
                if let Mode::Event { connections, .. } = self.settings.mode {
                    raise_fd_limit(connections);
                }
                self.defer_accept();
                self.generation += 1;
                self.respawn.reset();
                self.respawn_at = None;
                self.retire_old_generations();
                tracing::info!(
                    "reloaded configuration (generation {}): {:?}",
                    self.generation,
                    self.settings.mode
                );
            }
        }
        let _ = self.notifier.send("READY=1");
    }

    /// Some settings need a full restart; say so instead of silently ignoring them.
    fn keep_what_cannot_change(&self, new: &mut Settings) {
        let old = &self.settings;
        if new.listen != old.listen {
            tracing::warn!(
                "listen addresses cannot change on reload (running {:?}, configured {:?}): restart to apply",
                old.listen,
                new.listen
            );
            new.listen = old.listen.clone();
        }
        if !new.mode.same_kind(&old.mode) {
            tracing::warn!(
                "mode cannot change on reload (running {:?}, configured {:?}): restart to apply",
                old.mode,
                new.mode
            );
            new.mode = old.mode;
        }
        if (new.agent_listen, new.status_listen) != (old.agent_listen, old.status_listen) {
            tracing::warn!("agent and status addresses cannot change on reload: restart to apply");
            (new.agent_listen, new.status_listen) = (old.agent_listen, old.status_listen);
        }
        if new.pid_file != old.pid_file {
            tracing::warn!("pid file cannot change on reload: restart to apply");
            new.pid_file = old.pid_file.clone();
        }
    }

    fn reopen_logs(&mut self) {
        if let Err(msg) = self.daemon.reopen_logs(&mut self.service) {
            tracing::error!("unable to reopen logs, keeping the old ones: {msg}");
            return;
        }
        let chrooted = self
            .settings
            .credentials
            .as_ref()
            .is_some_and(|c| c.chroot.is_some());
        if chrooted {
            // Inside a chroot the same path names another file (perhaps one under the
            // docroot): these children cannot reopen by path, so new ones take the master's.
            tracing::info!(
                "reopened logs; replacing chrooted children so they write to the new files"
            );
            self.generation += 1;
            self.retire_old_generations();
            return;
        }
        tracing::info!(
            "reopened logs; {} children reopen theirs before their next line",
            self.children.len()
        );
        for pid in self.children.keys() {
            let _ = kill(*pid, Signal::SIGUSR1);
        }
    }
}

/// What the side ports need of the master, borrowed for one answer.
struct Snapshot<'a> {
    settings: &'a Settings,
    children: &'a HashMap<Pid, ChildInfo>,
    phase: Phase,
    generation: u64,
    started: Instant,
    accept_pause: Option<(Instant, Duration)>,
}

impl Snapshot<'_> {
    /// Draining from SIGTERM on; reloading while children of an older generation finish;
    /// down when no child can take a connection (no worker that is not retiring, or a
    /// fork-mode master that paused accepting for want of fds).
    fn take(&self) -> side::Snapshot {
        let now = Instant::now();
        let mode = self.settings.mode;
        let open_workers = self.children.values().filter(|c| !c.stopping).count();
        let open_capacity = match mode.workers() {
            Some(_) => open_workers.saturating_mul(mode.per_child()),
            None => mode.bound(),
        };
        let paused = self.accept_pause.is_some_and(|(until, _)| now < until);
        let state = match self.phase {
            Phase::Draining { .. } => side::State::Draining,
            Phase::Running
                if self
                    .children
                    .values()
                    .any(|c| c.generation < self.generation) =>
            {
                side::State::Reloading
            }
            Phase::Running if mode.workers().is_some() && open_workers == 0 => side::State::Down,
            Phase::Running if mode.workers().is_none() && paused => side::State::Down,
            Phase::Running => side::State::Serving,
        };
        side::Snapshot {
            name: self.settings.name,
            pid: std::process::id(),
            mode: match mode {
                Mode::Prefork { .. } => "prefork",
                Mode::Fork { .. } => "fork",
                Mode::Event { .. } => "event",
            },
            state: Some(state),
            generation: self.generation,
            uptime: now.saturating_duration_since(self.started),
            open_capacity: u32::try_from(open_capacity).unwrap_or(u32::MAX),
            totals: scoreboard::totals().unwrap_or_default(),
        }
    }
}

/// Listeners found readable by one `poll`, by index: bits for the first [`Ready::FEW`], a list
/// beyond (a configuration of that many listeners allocates; none does in practice).
#[derive(Default)]
struct Ready {
    few: u64,
    more: Vec<usize>,
}

impl Ready {
    const FEW: usize = 64;

    fn add(&mut self, i: usize) {
        if i < Ready::FEW {
            self.few |= 1 << i;
        } else {
            self.more.push(i);
        }
    }

    /// The indices added, in order.
    fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        let few = (0..Ready::FEW).filter(|i| self.few & (1 << i) != 0);
        few.chain(self.more.iter().copied())
    }
}

/// How the master takes a child's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aftermath {
    /// A clean exit, or the end the master asked for.
    Clean,
    /// A crash while serving (or after having served): the request is to blame, not the
    /// environment, so the worker is replaced at once and the throttle is left alone.
    ReplaceNow(Crash),
    /// A crash soon after start and before serving anything (exit 71 when privileges cannot be
    /// dropped, say): the environment is to blame, so respawns slow down.
    Throttle(Crash),
    /// A crash after a long idle life: replaced as usual.
    Replace(Crash),
}

fn aftermath(end: ProcessEnd, asked_to_stop: bool, served: bool, lived: Duration) -> Aftermath {
    let asked = asked_to_stop
        && matches!(
            end,
            ProcessEnd::Signaled {
                signal: Signal::SIGTERM | Signal::SIGINT | Signal::SIGKILL,
                ..
            }
        );
    let Some(cause) = Crash::of(end).filter(|_| !asked) else {
        return Aftermath::Clean;
    };
    if served {
        Aftermath::ReplaceNow(cause)
    } else if lived < FAST_DEATH {
        Aftermath::Throttle(cause)
    } else {
        Aftermath::Replace(cause)
    }
}

/// A worker's request budget, lowered by up to an eighth so that workers started together do
/// not all retire together. The mix of a counter and the clock is enough spread for that.
fn jittered(max: u64, salt: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mix =
        (salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    max - mix % (max / 8 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_with_threads_is_refused_before_it_forks() {
        struct Nop;
        impl Service for Nop {
            fn serve(&mut self, _: &TcpStream, _: SocketAddr) -> u64 {
                0
            }
        }
        struct Nothing(Settings);
        impl Daemon for Nothing {
            type Service = Nop;
            fn reload(&mut self) -> Result<(Settings, Nop), String> {
                Ok((self.0.clone(), Nop))
            }
        }
        let listen = vec!["127.0.0.1:0".parse().unwrap()];
        let settings = Settings::new("threaded", Mode::Prefork { workers: 1 }, listen);
        // A thread of this test's own, alive through the call, whatever the harness runs.
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || wait.recv());
        let mut daemon = Nothing(settings.clone());
        let result = run(settings, Nop, &mut daemon, &Notifier::none());
        drop(stop);
        let _ = thread.join();
        let err = result.expect_err("a threaded process must not fork");
        assert!(matches!(err, StartError::Threaded), "{err}");
        assert!(err.is_permanent());
    }

    #[test]
    fn crashes_while_serving_skip_the_throttle_and_setup_failures_do_not() {
        let fast = Duration::from_millis(10);
        let slow = Duration::from_secs(5);
        let sig = |signal| ProcessEnd::Signaled {
            signal,
            core_dumped: false,
        };
        let cases = [
            // (end, asked to stop, served, lived) => aftermath
            (ProcessEnd::Exited(0), false, true, fast, Aftermath::Clean),
            (sig(Signal::SIGTERM), true, true, fast, Aftermath::Clean),
            (sig(Signal::SIGKILL), true, false, slow, Aftermath::Clean),
            (
                sig(Signal::SIGTERM),
                false,
                false,
                slow,
                Aftermath::Replace(Crash::OtherSignal),
            ),
            (
                ProcessEnd::Exited(70),
                false,
                true,
                fast,
                Aftermath::ReplaceNow(Crash::Panic),
            ),
            (
                sig(Signal::SIGSEGV),
                true,
                true,
                fast,
                Aftermath::ReplaceNow(Crash::Segv),
            ),
            (
                ProcessEnd::Exited(71),
                false,
                false,
                fast,
                Aftermath::Throttle(Crash::Setup),
            ),
            (
                sig(Signal::SIGKILL),
                false,
                false,
                slow,
                Aftermath::Replace(Crash::Kill),
            ),
        ];
        for (end, asked, served, lived, want) in cases {
            assert_eq!(
                aftermath(end, asked, served, lived),
                want,
                "{end} {asked} {served}"
            );
        }
    }

    #[test]
    fn permanent_start_failures_are_those_a_restart_cannot_cure() {
        let pid_file = |errno| StartError::PidFile {
            path: "/x/forkd.pid".into(),
            source: io::Error::from_raw_os_error(errno),
        };
        let bind = |errno| {
            StartError::Listen(listener::ListenError::Bind {
                addr: ([127, 0, 0, 1], 80).into(),
                source: io::Error::from_raw_os_error(errno),
            })
        };
        for (e, permanent) in [
            (pid_file(libc::EROFS), true),
            (pid_file(libc::EACCES), true),
            (pid_file(libc::ENOENT), true),
            (pid_file(libc::ENOSPC), false),
            (bind(libc::EADDRINUSE), false),
            (bind(libc::EACCES), true),
            (StartError::NoListener, true),
            (StartError::Fork(nix::errno::Errno::EAGAIN), false),
        ] {
            assert_eq!(e.is_permanent(), permanent, "{e}");
        }
    }

    #[test]
    fn jitter_stays_within_an_eighth() {
        for salt in 0..1000 {
            let b = jittered(1000, salt);
            assert!((875..=1000).contains(&b), "{b}");
        }
        assert_eq!(jittered(0, 7), 0);
        assert_eq!(jittered(1, 7), 1);
    }
}
