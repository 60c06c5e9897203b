//! The supervisor proper: a state machine (see the table in the crate docs) around one `poll`
//! with one deadline. Every wake-up is turned into [`Input`]s first (signals from the
//! self-pipe, reaped children, notify datagrams, probe results, resource verdicts, timers),
//! and [`Supervisor::step`] routes each (state, input) pair to one small named function.
//!
//! Only `step`'s cells change the state; the loop around it gathers evidence and keeps time.
//! Nothing here blocks except `poll` (and the bounded sweep at exit).

use std::collections::VecDeque;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

use forkd_daemon::notify::Notifier;
use forkd_daemon::procfs;
use forkd_daemon::reap::{reap, ProcessEnd};
use forkd_daemon::signals::{Event, SignalPipe};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::child::{self, Running};
use crate::config::{Config, Readiness, Recycle, RunArgs};
use crate::counters::{Count, Counters};
use crate::metrics::Metrics;
use crate::notify::NotifySocket;
use crate::probe::{self, Outcome, Probe};
use crate::reserve::Reserve;
use crate::status::{RestartRecord, Status};
use crate::throttle::Budget;
use crate::watch::{self, Watch};
use forkd_daemon::backoff::Backoff;
use forkd_daemon::units::show_duration;
use forkd_daemon::wait;

/// Exit codes of the supervisor (s6's convention for 100 and 111).
pub const EXIT_STOPPED: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_PERMANENT: i32 = 100;
pub const EXIT_BUDGET: i32 = 111;

/// The child's exit code that means "do not restart me".
const PERMANENT: i32 = 100;

/// How often a port is tried while waiting for readiness by port.
const READY_POLL: Duration = Duration::from_millis(50);
/// How long a child gets to die after SIGKILL before the supervisor says so.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// A wake-up later than this means the supervisor itself was not running (stopped, starved of
/// CPU, a frozen machine): deadlines that judge the child are pushed back by the stall.
const STALL_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Started; waiting for readiness (health failures do not count yet).
    Starting,
    /// Ready; probes and the watchdog count.
    Running,
    /// SIGTERM sent to restart it; SIGKILL to its group at the deadline.
    Recycling,
    /// No child; the next start is at the deadline.
    Backoff,
    /// SIGTERM sent because the supervisor itself is stopping.
    Stopping,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Recycling => "recycling",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
        }
    }
}

/// Everything that can happen to the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The child (the process the supervisor started) ended.
    Exited(ProcessEnd),
    /// READY=1 arrived, or the port accepted.
    Ready,
    /// Health probes failed `threshold` times in a row, or the watchdog was missed.
    Unhealthy(String),
    /// A resource limit was crossed.
    OverLimit(String),
    /// The state's deadline passed.
    Timeout,
    /// SIGTERM or SIGINT to the supervisor.
    Stop,
    /// SIGHUP or SIGUSR1 to the supervisor, to pass on.
    Forward(Signal),
    /// The outcome of an [`Effect::Spawn`]: the new child, or why it could not start.
    Spawned(Result<Running, String>),
}

/// What a cell asks of the world. Cells decide and change the state; they never start,
/// signal or sweep a process themselves: [`Supervisor::step`] returns these, and
/// [`Supervisor::perform`] is the one place that carries them out. So every cell of the table
/// can be tested without a process (`tests::every_cell_of_the_table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start a child; the outcome comes back as [`Input::Spawned`].
    Spawn,
    /// A signal to the child itself (its leader).
    Signal(Pid, Signal),
    /// SIGKILL to a whole process group.
    KillGroup(Pid),
    /// What is left of the group of a child that ended on its own: killed at once, or with
    /// socket holding asked to finish (TERM) and killed after the stop timeout.
    EndLeftovers(Pid),
    /// What is left of the group of a child that was stopped: killed.
    KillLeftovers(Pid),
    /// A message to systemd (`READY=1`, `STOPPING=1`, `STATUS=...`).
    Systemd(String),
    /// End every descendant: the supervisor exits.
    Sweep,
}

/// A cell of the state table: the function that handles an input in a state, by the name the
/// table in ARCHITECTURE.md and the crate docs give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    ScheduleRestart,
    FinishStop,
    MarkReady,
    RecycleByRestart,
    Recycle,
    KillNow,
    StartChild,
    Spawned,
    BeginStop,
    Finish,
    Forward,
    /// `-`: ignored (some are logged).
    Ignore,
}

impl Cell {
    pub fn name(self) -> &'static str {
        match self {
            Cell::ScheduleRestart => "schedule_restart",
            Cell::FinishStop => "finish_stop",
            Cell::MarkReady => "mark_ready",
            Cell::RecycleByRestart => "recycle_by_restart",
            Cell::Recycle => "recycle",
            Cell::KillNow => "kill_now",
            Cell::StartChild => "start_child",
            Cell::Spawned => "spawned",
            Cell::BeginStop => "begin_stop",
            Cell::Finish => "finish",
            Cell::Forward => "forward",
            Cell::Ignore => "-",
        }
    }
}

/// The state table: which cell handles `input` in `state`. Pure; the table test holds it to
/// the documented table.
pub fn cell(state: State, input: &Input) -> Cell {
    use Input::*;
    use State::*;
    match (state, input) {
        (Starting | Running | Recycling, Exited(_)) => Cell::ScheduleRestart,
        (Stopping, Exited(_)) => Cell::FinishStop,
        (Starting, Ready) => Cell::MarkReady,
        (Running, Unhealthy(_)) => Cell::RecycleByRestart,
        (Starting | Running, OverLimit(_)) => Cell::Recycle,
        (Starting, Timeout) => Cell::RecycleByRestart,
        (Recycling | Stopping, Timeout) => Cell::KillNow,
        (Backoff, Timeout) => Cell::StartChild,
        (Backoff, Spawned(_)) => Cell::Spawned,
        (Starting | Running | Recycling, Stop) => Cell::BeginStop,
        (Backoff, Stop) => Cell::Finish,
        (Stopping, Stop) => Cell::KillNow,
        (Starting | Running | Recycling, Forward(_)) => Cell::Forward,
        _ => Cell::Ignore,
    }
}

pub struct Supervisor {
    cfg: Config,
    /// The command line, kept to read the configuration file again on SIGHUP.
    args: RunArgs,
    state: State,
    /// The state's deadline (next start, ready timeout, kill time).
    deadline: Option<Instant>,
    /// What was left of the ready timeout when the supervisor went blind (Starting only):
    /// the clock is stopped until it can observe again (issue 10, incident 001).
    ready_suspended: Option<Duration>,
    child: Option<Running>,
    /// SIGKILL has been sent to the current child's group.
    killed: bool,
    /// Listening sockets held for every child (`--listen`, or the supervisor's own
    /// LISTEN_FDS), passed to each by socket activation.
    held: Vec<TcpListener>,
    /// The group of an ended child whose leftovers were asked to finish, and when they are
    /// killed (socket holding).
    leftovers: Option<(nix::unistd::Pid, Instant)>,
    /// The foreign listener of this child's port has been reported.
    warned_foreign: bool,
    /// Why the current child is being recycled, for the restart record.
    recycle_reason: Option<String>,
    ready: bool,
    reloading_since: Option<Instant>,
    last_hup_recycle: Option<Instant>,
    backoff: Backoff,
    budget: Budget,
    watch: Watch,
    probe: Option<Probe>,
    next_probe: Option<Instant>,
    next_sample: Instant,
    watchdog_deadline: Option<Instant>,
    health_failures: u32,
    health_last: Option<String>,
    observing: bool,
    cannot_observe_reason: Option<String>,
    resources_observable: bool,
    restarts: u64,
    recent: VecDeque<RestartRecord>,
    last_exit: Option<String>,
    child_status: Option<String>,
    counters: Counters,
    exit: Option<i32>,
    /// What the cell being run asked for, returned by `step`.
    effects: Vec<Effect>,
    /// Why the supervisor ended, for the status file it leaves behind.
    final_reason: Option<String>,
    /// The process group of the child before this one: its late notify messages (STOPPING=1
    /// sent just before it exited, read after its exit was reaped) are expected, not strange.
    previous_pgid: Option<nix::unistd::Pid>,
    notify: NotifySocket,
    systemd: Notifier,
    systemd_watchdog: Option<(Duration, Instant)>,
    systemd_ready: bool,
    reserve: Reserve,
    metrics: Option<Metrics>,
    next_status_write: Option<Instant>,
    /// When the loop last meant to wake up, to measure its own lateness.
    planned_wake: Option<Instant>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sets up the supervisor's own resources (before any child exists).
pub fn setup(cfg: Config, args: RunArgs) -> Result<Supervisor, String> {
    // Orphans of the child are re-parented here, not to init, so they are reaped and swept.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("unable to become a child subreaper: {e}"))?;
    // Read (and removed from the environment) before any child exists: NOTIFY_SOCKET from
    // systemd is the supervisor's, the child gets its own.
    let systemd = Notifier::from_env().map_err(|e| format!("NOTIFY_SOCKET: {e}"))?;
    // Pinged at half the interval systemd gave.
    let systemd_watchdog = forkd_daemon::notify::watchdog_from_env().map(|d| d / 2);
    let notify =
        NotifySocket::bind().map_err(|e| format!("unable to bind the notify socket: {e}"))?;
    let held = hold_listeners(&cfg.listen)?;
    let reserve = Reserve::new(3).map_err(|e| e.to_string())?;
    let metrics = match cfg.metrics_listen {
        Some(addr) => {
            let m = Metrics::bind(addr)
                .map_err(|e| format!("unable to bind metrics on {addr}: {e}"))?;
            if let Ok(a) = m.local_addr() {
                tracing::info!("metrics on http://{a}/metrics");
            }
            Some(m)
        }
        None => None,
    };
    let world = World {
        systemd,
        systemd_watchdog,
        notify,
        reserve,
        metrics,
        held,
    };
    Ok(assemble(cfg, args, world))
}

/// What the supervisor holds of the outside world, opened by [`setup`].
struct World {
    systemd: Notifier,
    systemd_watchdog: Option<Duration>,
    notify: NotifySocket,
    reserve: Reserve,
    metrics: Option<Metrics>,
    held: Vec<TcpListener>,
}

/// The machine in Backoff with its first start due now.
fn assemble(cfg: Config, args: RunArgs, world: World) -> Supervisor {
    let World {
        systemd,
        systemd_watchdog,
        notify,
        reserve,
        metrics,
        held,
    } = world;
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id()) << 32;
    let now = Instant::now();
    Supervisor {
        state: State::Backoff,
        deadline: Some(now),
        ready_suspended: None,
        child: None,
        killed: false,
        held,
        leftovers: None,
        warned_foreign: false,
        recycle_reason: None,
        ready: false,
        reloading_since: None,
        last_hup_recycle: None,
        backoff: Backoff::new(cfg.backoff_base, cfg.backoff_cap, cfg.stable_after, seed),
        budget: Budget::new(cfg.max_restarts, cfg.restart_window),
        final_reason: None,
        effects: Vec::new(),
        previous_pgid: None,
        watch: Watch::new(cfg.limits.clone(), cfg.slope_window),
        probe: None,
        next_probe: None,
        next_sample: now,
        watchdog_deadline: None,
        health_failures: 0,
        health_last: None,
        observing: true,
        cannot_observe_reason: None,
        resources_observable: true,
        restarts: 0,
        recent: VecDeque::new(),
        last_exit: None,
        child_status: None,
        counters: Counters::default(),
        exit: None,
        notify,
        systemd,
        systemd_watchdog: systemd_watchdog.map(|d| (d, now)),
        systemd_ready: false,
        reserve,
        metrics,
        next_status_write: Some(now),
        planned_wake: None,
        cfg,
        args,
    }
}

/// The backlog of a held socket: connections that arrive while no child runs wait there.
fn held_backlog() -> nix::sys::socket::Backlog {
    nix::sys::socket::Backlog::new(forkd_daemon::listener::BACKLOG)
        .unwrap_or(nix::sys::socket::Backlog::MAXCONN)
}

/// The sockets to hold: those passed to the supervisor itself by socket activation, and a
/// socket bound now for each `--listen` address none of them is bound to. Bound once, for the
/// supervisor's whole life: a child's restart never closes them, so connections that arrive
/// meanwhile wait in the backlog (what systemd's socket units, s6-fdholder and einhorn do).
fn hold_listeners(wanted: &[std::net::SocketAddr]) -> Result<Vec<TcpListener>, String> {
    use forkd_daemon::listener;
    let mut held = listener::inherit().map_err(|e| e.to_string())?;
    for addr in wanted {
        let have = held
            .iter()
            .any(|l| listener::local_addr(l).ok().as_ref() == Some(addr));
        if !have {
            held.push(listener::bind(*addr).map_err(|e| e.to_string())?);
        }
    }
    if !held.is_empty() {
        let addrs: Vec<String> = held
            .iter()
            .filter_map(|l| listener::local_addr(l).ok())
            .map(|a| a.to_string())
            .collect();
        tracing::info!(
            "holding {} listening socket(s) for every child: {}",
            held.len(),
            addrs.join(", ")
        );
    }
    Ok(held)
}

impl Supervisor {
    /// The one transition function: the cell of the table that `input` falls in, in the
    /// current state, changes the state and returns what must be done.
    pub fn step(&mut self, input: Input) -> Vec<Effect> {
        // Once the exit code is decided nothing may start or signal a process again, even if
        // more inputs were gathered in the same wake-up.
        if self.exit.is_some() {
            return Vec::new();
        }
        tracing::debug!("{} <- {input:?}", self.state.name());
        let which = cell(self.state, &input);
        match (which, input) {
            (Cell::ScheduleRestart, Input::Exited(end)) => self.schedule_restart(end),
            (Cell::FinishStop, Input::Exited(end)) => self.finish_stop(end),
            (Cell::MarkReady, _) => self.mark_ready(),
            (Cell::RecycleByRestart, Input::Unhealthy(why)) => self.recycle_by_restart(why),
            (Cell::RecycleByRestart, _) => self.recycle_by_restart(format!(
                "not ready within {}",
                show_duration(self.cfg.ready_timeout)
            )),
            (Cell::Recycle, Input::OverLimit(why)) => self.recycle(why),
            (Cell::KillNow, _) => self.kill_now(),
            (Cell::StartChild, _) => self.start_child(),
            (Cell::Spawned, Input::Spawned(result)) => self.spawned(result),
            (Cell::BeginStop, _) => self.begin_stop(),
            (Cell::Finish, _) => self.finish(EXIT_STOPPED, "stopped (no child was running)"),
            (Cell::Forward, Input::Forward(sig)) => self.forward(sig),
            (_, Input::Forward(sig)) => {
                tracing::info!("{} not forwarded: no child to receive it", sig.as_str())
            }
            _ => {}
        }
        self.status_soon();
        std::mem::take(&mut self.effects)
    }

    /// Steps and carries out what the cell asked for.
    fn handle(&mut self, input: Input) {
        for effect in self.step(input) {
            self.perform(effect);
        }
    }

    /// The one place where the machine's decisions touch processes.
    fn perform(&mut self, effect: Effect) {
        match effect {
            Effect::Spawn => {
                let result = self.spawn_child();
                self.handle(Input::Spawned(result));
            }
            Effect::Signal(pid, sig) => child::signal(pid, sig),
            Effect::KillGroup(pgid) => child::kill_group(pgid),
            Effect::EndLeftovers(pgid) => self.end_leftovers(pgid),
            Effect::KillLeftovers(pgid) => self.kill_leftovers(pgid),
            Effect::Systemd(msg) => {
                let _ = self.systemd.send(&msg);
            }
            Effect::Sweep => sweep_descendants(&mut self.reserve),
        }
    }

    fn enter(&mut self, state: State, deadline: Option<Instant>) {
        self.state = state;
        self.deadline = deadline;
        self.ready_suspended = None;
    }

    /// The supervisor cannot see the child: the ready timeout stops running, since the child's
    /// readiness is exactly what it cannot see (issue 10: healthy servers killed as "not ready
    /// within 3s" while the supervisor was out of fds).
    fn suspend_ready_timeout(&mut self, now: Instant) {
        if self.state != State::Starting || self.ready_suspended.is_some() {
            return;
        }
        let Some(d) = self.deadline.take() else {
            return;
        };
        let left = d.saturating_duration_since(now);
        tracing::warn!(
            "ready timeout suspended with {} left: the supervisor cannot observe the child",
            show_duration(left)
        );
        self.ready_suspended = Some(left);
    }

    fn resume_ready_timeout(&mut self, now: Instant) {
        if let Some(left) = self.ready_suspended.take() {
            tracing::info!(
                "ready timeout resumed with {} left: observing again",
                show_duration(left)
            );
            self.deadline = Some(now + left);
        }
    }

    /// The loop woke `stalled` later than it meant to: the supervisor was not running. Time it
    /// did not see is no evidence against the child, so the deadlines that judge the child
    /// (the ready timeout, the watchdog) move back by as much. Stop and restart deadlines do
    /// not: they wait for the child to do what it was told, which a stall does not excuse.
    fn excuse_stall(&mut self, stalled: Duration) {
        if stalled < STALL_GRACE {
            return;
        }
        let mut moved = Vec::new();
        if self.state == State::Starting {
            if let Some(d) = self.deadline.as_mut() {
                *d += stalled;
                moved.push("ready timeout");
            }
        }
        if let Some(w) = self.watchdog_deadline.as_mut() {
            *w += stalled;
            moved.push("watchdog");
        }
        self.counters.bump(Count::Stalls);
        tracing::warn!(
            "the supervisor itself did not run for {}{}",
            show_duration(stalled),
            if moved.is_empty() {
                String::new()
            } else {
                format!("; {} extended by as much", moved.join(" and "))
            }
        );
    }

    fn start_child(&mut self) {
        self.effects.push(Effect::Spawn);
    }

    /// Starts the command with the notify socket, the watchdog and the held sockets.
    fn spawn_child(&mut self) -> Result<Running, String> {
        let command = self.cfg.command.clone();
        let env = self.notify.env_value();
        let watchdog = self.cfg.watchdog;
        // A held socket that someone shut down (a server that does so on its stop) listens
        // again; on a listening socket this only sets the backlog.
        for l in &self.held {
            if let Err(e) = nix::sys::socket::listen(l, held_backlog()) {
                tracing::warn!("unable to listen again on a held socket: {e}");
            }
        }
        let fds: Vec<_> = self.held.iter().map(|l| l.as_fd()).collect();
        let spawned = self.reserve.with_room("start the child", || {
            child::spawn(&command, env.as_ref(), watchdog, &fds)
        });
        let shown = command
            .iter()
            .map(|w| w.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        match spawned {
            Ok(c) => {
                tracing::info!("started child {} ({shown})", c.pid);
                Ok(c)
            }
            Err(e) => {
                tracing::error!("unable to start {:?}: {e}", command[0]);
                Err(format!("unable to start: {e}"))
            }
        }
    }

    /// A start's outcome: Starting with the new child, or the next restart.
    fn spawned(&mut self, result: Result<Running, String>) {
        let c = match result {
            Ok(c) => c,
            Err(reason) => {
                self.counters.bump(Count::SpawnFailures);
                return self.plan_restart(None, reason);
            }
        };
        let now = Instant::now();
        self.child = Some(c);
        self.killed = false;
        self.warned_foreign = false;
        self.ready = false;
        self.health_failures = 0;
        self.watch.new_child();
        self.next_sample = now;
        self.enter(State::Starting, Some(now + self.cfg.ready_timeout));
        match self.readiness() {
            Readiness::None => self.mark_ready(),
            Readiness::Port => self.next_probe = Some(now),
            Readiness::Notify | Readiness::Auto => self.next_probe = None,
        }
    }

    /// Readiness with `auto` resolved: by port when a port is known (READY=1 also counts).
    fn readiness(&self) -> Readiness {
        match self.cfg.readiness {
            // A held port accepts (into its backlog) before the child does anything, and the
            // child holds it from its first instruction: only the child's word says ready.
            Readiness::Auto if !self.held.is_empty() => Readiness::Notify,
            Readiness::Auto if self.cfg.port.is_some() => Readiness::Port,
            Readiness::Auto => Readiness::Notify,
            r => r,
        }
    }

    fn mark_ready(&mut self) {
        let now = Instant::now();
        let Some(c) = &self.child else { return };
        tracing::info!(
            "child {} ready after {}",
            c.pid,
            show_duration(now.duration_since(c.started))
        );
        self.ready = true;
        self.reloading_since = None;
        self.probe = None;
        self.next_probe = self.probe_target().map(|_| now + self.cfg.health_interval);
        self.watchdog_deadline = self.cfg.watchdog.map(|w| now + w);
        self.enter(State::Running, None);
        if !self.systemd_ready {
            self.systemd_ready = true;
            self.effects
                .push(Effect::Systemd("READY=1\nSTATUS=child ready".into()));
        }
    }

    /// A recycle for a resource limit, as configured: SIGHUP (escalating to a restart when the
    /// last SIGHUP did not help) or a restart.
    fn recycle(&mut self, why: String) {
        let now = Instant::now();
        let hup_helped = self
            .last_hup_recycle
            .is_none_or(|t| now.duration_since(t) > self.cfg.slope_window * 2);
        if self.cfg.recycle == Recycle::Hup && self.state == State::Running && hup_helped {
            let Some(c) = self.child.clone() else { return };
            tracing::warn!("recycling child {} with SIGHUP: {why}", c.pid);
            self.counters.bump(Count::RecyclesHup);
            self.last_hup_recycle = Some(now);
            // Workers are being replaced: judge again once a whole window has passed.
            self.watch.reset(Some(now + self.cfg.slope_window));
            self.effects.push(Effect::Signal(c.pid, Signal::SIGHUP));
        } else if self.cfg.recycle == Recycle::Hup && !hup_helped {
            self.recycle_by_restart(format!("{why} (SIGHUP did not help)"));
        } else {
            self.recycle_by_restart(why);
        }
    }

    fn recycle_by_restart(&mut self, why: String) {
        let Some(c) = self.child.clone() else { return };
        tracing::warn!("recycling child {}: {why}", c.pid);
        self.counters.bump(Count::Recycles);
        self.recycle_reason = Some(why);
        self.probe = None;
        self.next_probe = None;
        // A stopped child (SIGSTOP, a debugger) would hold the TERM until the kill; continued,
        // it drains as asked.
        self.effects.push(Effect::Signal(c.pid, Signal::SIGTERM));
        self.effects.push(Effect::Signal(c.pid, Signal::SIGCONT));
        self.enter(
            State::Recycling,
            Some(Instant::now() + self.cfg.stop_timeout),
        );
    }

    fn begin_stop(&mut self) {
        let Some(c) = self.child.clone() else { return };
        tracing::info!(
            "stopping child {} (SIGTERM; SIGKILL to its group after {})",
            c.pid,
            show_duration(self.cfg.stop_timeout)
        );
        self.effects.push(Effect::Systemd("STOPPING=1".into()));
        self.probe = None;
        self.next_probe = None;
        if self.state != State::Recycling {
            self.effects.push(Effect::Signal(c.pid, Signal::SIGTERM));
        }
        let deadline = Instant::now() + self.cfg.stop_timeout;
        let deadline = self
            .deadline
            .filter(|_| self.state == State::Recycling)
            .map_or(deadline, |d| d.min(deadline));
        self.enter(State::Stopping, Some(deadline));
    }

    fn kill_now(&mut self) {
        let Some(c) = self.child.clone() else { return };
        if self.killed {
            if self.state == State::Stopping {
                return self.finish(
                    EXIT_FAILED,
                    &format!("child {} did not die after SIGKILL; giving up on it", c.pid),
                );
            }
            tracing::error!("child {} did not die after SIGKILL; trying again", c.pid);
        } else {
            tracing::warn!(
                "child {} did not exit in time; killing process group {}",
                c.pid,
                c.pgid
            );
        }
        self.killed = true;
        self.effects.push(Effect::KillGroup(c.pgid));
        self.deadline = Some(Instant::now() + KILL_GRACE);
    }

    fn forward(&mut self, sig: Signal) {
        if let Some(c) = &self.child {
            tracing::info!("forwarding {} to child {}", sig.as_str(), c.pid);
            self.effects.push(Effect::Signal(c.pid, sig));
        }
    }

    /// The child ended on its own or after a recycle: count it, then restart after the
    /// backoff, unless it failed permanently or the budget is spent.
    fn schedule_restart(&mut self, end: ProcessEnd) {
        let Some(c) = self.child.take() else { return };
        let ran = c.started.elapsed();
        // A stable run: the child became ready and then ran for --stable-after. One that was
        // never ready counts as a failed start however long it took to fail.
        let stable = self.ready && ran >= self.cfg.stable_after;
        self.effects.push(Effect::EndLeftovers(c.pgid));
        let reason = match self.recycle_reason.take() {
            Some(why) => format!("recycled: {why}"),
            None => format!("{end} after {}", show_duration(ran)),
        };
        tracing::warn!("child {} {end} after {}", c.pid, show_duration(ran));
        self.last_exit = Some(format!("{end} after {}", show_duration(ran)));
        self.previous_pgid = Some(c.pgid);
        self.forget_child();
        if end == ProcessEnd::Exited(PERMANENT) {
            return self.finish(
                EXIT_PERMANENT,
                &format!(
                    "permanent failure: the child exited with code {PERMANENT}; not restarting"
                ),
            );
        }
        self.plan_restart(stable.then_some(ran), reason);
    }

    /// Plans the next start; `stable` is the length of a stable run that just ended, `None`
    /// for a failed start (never ready, too short, or not started at all).
    fn plan_restart(&mut self, stable: Option<Duration>, reason: String) {
        let now = Instant::now();
        if let Err(spent) = self.budget.take(now, stable.is_some()) {
            return self.finish(EXIT_BUDGET, &format!("giving up: {spent} (last: {reason})"));
        }
        let delay = self.backoff.next_delay(stable.unwrap_or_default());
        self.restarts += 1;
        self.recent.push_back(RestartRecord {
            at_unix: unix_now(),
            reason: reason.clone(),
        });
        if self.recent.len() > 20 {
            self.recent.pop_front();
        }
        tracing::info!(
            "restart {} in {} ({reason})",
            self.restarts,
            show_duration(delay)
        );
        self.enter(State::Backoff, Some(now + delay));
    }

    fn kill_leftovers(&mut self, pgid: nix::unistd::Pid) {
        child::kill_leftovers(pgid, &mut self.reserve);
    }

    /// What is left of a child that ended on its own. Without socket holding it is killed at
    /// once (it may hold the port the next child needs). With it, the leftovers (forkd's
    /// workers, told by their dead master's PR_SET_PDEATHSIG too) serve on the held sockets
    /// and are asked to finish: TERM now, SIGKILL after the stop timeout, so the requests
    /// they have in hand are answered, not reset.
    fn end_leftovers(&mut self, pgid: nix::unistd::Pid) {
        if let Some((earlier, _)) = self.leftovers.take() {
            self.kill_leftovers(earlier);
        }
        if self.held.is_empty() {
            return self.kill_leftovers(pgid);
        }
        if child::stop_leftovers(pgid, &mut self.reserve) {
            tracing::info!(
                "asked the leftovers of group {pgid} to finish (SIGTERM); SIGKILL after {}",
                show_duration(self.cfg.stop_timeout)
            );
            self.leftovers = Some((pgid, Instant::now() + self.cfg.stop_timeout));
        }
    }

    fn forget_child(&mut self) {
        self.ready = false;
        // What the last child said or showed is no longer true of anything running.
        self.child_status = None;
        self.health_last = None;
        self.health_failures = 0;
        self.last_hup_recycle = None;
        self.probe = None;
        self.next_probe = None;
        self.watchdog_deadline = None;
        self.reloading_since = None;
        self.killed = false;
        self.watch.reset(None);
    }

    fn finish_stop(&mut self, end: ProcessEnd) {
        if let Some(c) = self.child.take() {
            tracing::info!("child {} {end}", c.pid);
            self.last_exit = Some(end.to_string());
            self.previous_pgid = Some(c.pgid);
            self.effects.push(Effect::KillLeftovers(c.pgid));
        }
        self.forget_child();
        self.finish(EXIT_STOPPED, "stopped");
    }

    /// The end of the supervisor: nothing it started may outlive it.
    fn finish(&mut self, code: i32, message: &str) {
        self.effects.push(Effect::Sweep);
        if code == EXIT_STOPPED {
            tracing::info!("{message}");
        } else {
            tracing::error!("{message}");
        }
        self.effects
            .push(Effect::Systemd(format!("STATUS={message}")));
        self.final_reason = Some(message.to_string());
        self.exit = Some(code);
    }

    fn probe_target(&self) -> Option<(std::net::SocketAddr, Option<Vec<u8>>)> {
        match (&self.cfg.health, self.cfg.port) {
            (Some(h), _) => Some((h.addr, Some(probe::http_request(&h.host, &h.path)))),
            (None, Some(port)) => Some((([127, 0, 0, 1], port).into(), None)),
            (None, None) => None,
        }
    }

    fn start_probe(&mut self, now: Instant) {
        if self.probe.is_some() {
            return;
        }
        let Some((addr, request)) = self.probe_target() else {
            return;
        };
        // While waiting for readiness by port, a connect is enough.
        let request = if self.state == State::Starting {
            None
        } else {
            request
        };
        let timeout = self.cfg.health_timeout;
        match Probe::start(addr, request, timeout) {
            Ok(p) => self.probe = Some(p),
            Err(outcome) => self.probe_done(outcome, now),
        }
    }

    /// Readiness by port needs the child's own socket: the port accepting proves only that
    /// someone listens (issue 10: a stray old forkd made a child that never bound count as
    /// ready). The listening socket's inode must be among the fds of the child's tree.
    /// `Err` is the supervisor's own trouble reading `/proc`.
    fn listener_is_the_childs(&mut self) -> Result<bool, String> {
        let (Some(c), Some(port)) = (&self.child, self.cfg.port) else {
            return Ok(false);
        };
        let pid = c.pid.as_raw();
        let looked = self.reserve.with_room("check who listens", || {
            let listening = procfs::listening_inodes(port)?;
            let mine = procfs::tree_socket_inodes(pid)?;
            Ok((listening.iter().any(|i| mine.contains(i)), listening.len()))
        });
        match looked {
            Ok((true, _)) => Ok(true),
            Ok((false, holders)) => {
                self.counters.bump(Count::ForeignListener);
                if holders > 0 && !self.warned_foreign {
                    self.warned_foreign = true;
                    tracing::warn!(
                        "port {port} accepts, but its listener is not child {}'s (another \
                         process holds the port); not ready",
                        c.pid
                    );
                }
                Ok(false)
            }
            Err(e) if procfs::is_gone(&e) => Ok(false),
            Err(e) => Err(format!("cannot tell who listens on port {port}: {e}")),
        }
    }

    fn probe_done(&mut self, outcome: Outcome, now: Instant) {
        self.probe = None;
        if self.state == State::Starting {
            self.next_probe = Some(now + READY_POLL.min(self.cfg.health_interval));
            match outcome {
                Outcome::Healthy(_) => match self.listener_is_the_childs() {
                    Ok(true) => {
                        self.observed();
                        tracing::info!("port {} accepts", self.cfg.port.unwrap_or(0));
                        self.handle(Input::Ready);
                    }
                    Ok(false) => self.observed(),
                    Err(why) => self.cannot_observe(why),
                },
                Outcome::CannotObserve(why) => self.cannot_observe(why),
                Outcome::Failed(_) => self.observed(),
            }
            return;
        }
        if self.state != State::Running {
            return;
        }
        self.next_probe = Some(now + self.cfg.health_interval);
        match outcome {
            Outcome::Healthy(code) => {
                self.observed();
                if self.health_failures > 0 {
                    tracing::info!("health probe succeeded again (HTTP {code})");
                }
                self.health_failures = 0;
                self.health_last = Some(format!("ok (HTTP {code})"));
            }
            Outcome::Failed(why) => {
                self.observed();
                self.health_failures += 1;
                self.counters.bump(Count::ProbeFailures);
                tracing::warn!(
                    "health probe failed ({}/{}): {why}",
                    self.health_failures,
                    self.cfg.health_threshold
                );
                self.health_last = Some(format!("failed: {why}"));
                if self.health_failures >= self.cfg.health_threshold {
                    self.handle(Input::Unhealthy(format!(
                        "unhealthy: {} failed probes in a row (last: {why})",
                        self.health_failures
                    )));
                }
            }
            Outcome::CannotObserve(why) => self.cannot_observe(why),
        }
    }

    /// The supervisor's own trouble: logged once per episode, counted every time, never held
    /// against the child.
    fn cannot_observe(&mut self, why: String) {
        self.counters.bump(Count::CannotObserve);
        if self.observing {
            tracing::warn!("cannot observe the child: {why}; not counted against it");
        }
        self.observing = false;
        self.suspend_ready_timeout(Instant::now());
        self.health_last = Some(format!("cannot observe: {why}"));
        self.cannot_observe_reason = Some(why);
        self.status_soon();
    }

    fn observed(&mut self) {
        if !self.observing {
            tracing::info!("observing the child again");
        }
        self.observing = true;
        self.cannot_observe_reason = None;
        self.resume_ready_timeout(Instant::now());
    }

    fn sample(&mut self, now: Instant) {
        self.next_sample = now + self.cfg.sample_interval;
        self.reserve.refill();
        let Some(c) = &self.child else { return };
        if !matches!(self.state, State::Starting | State::Running) {
            return;
        }
        match watch::sample(c.pid.as_raw(), self.cfg.port) {
            Ok(reading) => {
                if !self.resources_observable {
                    tracing::info!("resources of the child readable again");
                    self.resources_observable = true;
                }
                if self.state == State::Running {
                    for warning in self.watch.check_rest(&reading) {
                        self.counters.bump(Count::LimitsBelowRest);
                        tracing::warn!("{warning}");
                    }
                }
                let verdict = self.watch.judge(now, reading);
                for warning in self.watch.take_warnings() {
                    self.counters.bump(Count::LimitWarnings);
                    tracing::warn!("child {} nears a limit: {warning}", c.pid);
                }
                if let Some(why) = verdict {
                    self.handle(Input::OverLimit(why));
                }
            }
            // The child is gone; its exit is on the way through SIGCHLD.
            Err(e) if procfs::is_gone(&e) => {}
            Err(e) => {
                self.counters.bump(Count::CannotObserve);
                if self.resources_observable {
                    tracing::warn!(
                        "cannot observe the child's resources: {e}; no limit is judged meanwhile"
                    );
                }
                self.resources_observable = false;
            }
        }
    }

    fn notified(&mut self, now: Instant) {
        let pgid = self.child.as_ref().map(|c| c.pgid);
        let mut rejected = 0;
        let messages = self.notify.drain(pgid, self.previous_pgid, &mut rejected);
        self.counters.add(Count::NotifyRejected, rejected);
        for m in messages {
            if let Some(s) = m.status {
                self.child_status = Some(s);
                self.status_soon();
            }
            if m.watchdog {
                self.watchdog_deadline = self.cfg.watchdog.map(|w| now + w);
            }
            if m.reloading {
                self.reloading_since = Some(now);
            }
            if m.ready {
                self.reloading_since = None;
                if matches!(self.cfg.readiness, Readiness::Auto | Readiness::Notify) {
                    self.handle(Input::Ready);
                }
            }
            if m.stopping {
                tracing::info!("child says it is stopping");
            }
        }
    }

    /// Timers whose time has come, in a fixed order.
    fn timers(&mut self, now: Instant, stalled: Duration) {
        if self.exit.is_some() {
            return;
        }
        self.excuse_stall(stalled);
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            self.handle(Input::Timeout);
        }
        if let Some(p) = &self.probe {
            if now >= p.deadline {
                let p = self.probe.take().expect("probe present");
                let outcome = p.expire(stalled);
                self.probe_done(outcome, now);
            }
        }
        if self.next_probe.is_some_and(|t| now >= t)
            && matches!(self.state, State::Starting | State::Running)
        {
            // A reload in progress pauses probing, for at most the ready timeout.
            match self.reloading_since {
                Some(since) if now.duration_since(since) < self.cfg.ready_timeout => {
                    self.next_probe = Some(now + self.cfg.health_interval);
                }
                Some(_) => {
                    self.reloading_since = None;
                    self.handle(Input::Unhealthy(format!(
                        "RELOADING=1 without READY=1 within {}",
                        show_duration(self.cfg.ready_timeout)
                    )));
                }
                None => {
                    self.next_probe = None;
                    self.start_probe(now);
                }
            }
        }
        if now >= self.next_sample {
            self.sample(now);
        }
        if self.watchdog_deadline.is_some_and(|t| now >= t) {
            self.watchdog_deadline = None;
            if self.state == State::Running {
                self.counters.bump(Count::WatchdogMisses);
                let w = show_duration(self.cfg.watchdog.unwrap_or_default());
                self.handle(Input::Unhealthy(format!("no WATCHDOG=1 within {w}")));
            }
        }
        if let Some((every, last)) = self.systemd_watchdog {
            if now >= last + every {
                let _ = self.systemd.send("WATCHDOG=1");
                self.systemd_watchdog = Some((every, now));
            }
        }
        if let Some((pgid, at)) = self.leftovers {
            if now >= at {
                self.leftovers = None;
                self.kill_leftovers(pgid);
            }
        }
        if self.next_status_write.is_some_and(|t| now >= t) {
            self.write_status(now);
        }
    }

    fn status_soon(&mut self) {
        let soon = Instant::now() + Duration::from_millis(100);
        self.next_status_write = Some(self.next_status_write.map_or(soon, |t| t.min(soon)));
    }

    fn write_status(&mut self, now: Instant) {
        self.next_status_write = Some(now + Duration::from_secs(1));
        let Some(path) = self.cfg.status_file.clone() else {
            return;
        };
        let st = self.status();
        if let Err(e) = self
            .reserve
            .with_room("write the status file", || st.write(&path))
        {
            tracing::warn!("unable to write {}: {e}", path.display());
        }
    }

    pub fn status(&self) -> Status {
        let now = Instant::now();
        let mut st = Status {
            supervisor_pid: std::process::id(),
            // Once the exit code is decided the state is that, not the state it ended from.
            state: match self.exit {
                Some(_) => "exited".to_string(),
                None => self.state.name().to_string(),
            },
            exit_code: self.exit,
            exit_reason: self.final_reason.clone(),
            command: self
                .cfg
                .command
                .iter()
                .map(|w| w.to_string_lossy().into_owned())
                .collect(),
            child_pid: self.child.as_ref().map(|c| c.pid.as_raw()),
            child_started_unix: self.child.as_ref().map(|c| c.started_unix),
            child_uptime_s: self
                .child
                .as_ref()
                .map(|c| now.duration_since(c.started).as_secs_f64()),
            ready: self.ready,
            child_status: self.child_status.clone(),
            restarts_total: self.restarts,
            recent_restarts: self.recent.iter().cloned().collect(),
            last_exit: self.last_exit.clone(),
            next_start_in_s: (self.state == State::Backoff && self.exit.is_none())
                .then(|| {
                    self.deadline
                        .map(|d| d.saturating_duration_since(now).as_secs_f64())
                })
                .flatten(),
            backoff_failures: self.backoff.failures(),
            budget_used: self.budget.used(),
            budget_max: self.cfg.max_restarts,
            health_consecutive_failures: self.health_failures,
            health_last: self.health_last.clone(),
            observing: self.observing && self.resources_observable,
            cannot_observe_reason: self.cannot_observe_reason.clone(),
            updated_unix: unix_now(),
            ..Default::default()
        };
        if let Some(r) = &self.watch.last {
            st.sample = r
                .values
                .iter()
                .map(|(k, v)| (k.key().to_string(), *v))
                .collect();
        }
        st.maxheld = self
            .watch
            .maxheld
            .iter()
            .map(|(k, v)| (k.key().to_string(), *v))
            .collect();
        st.limits = self
            .cfg
            .limits
            .iter()
            .map(|l| (l.name(), l.value))
            .collect();
        st.failcnt = self.watch.failcnt.clone();
        st.counters = self
            .counters
            .iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        st
    }

    /// The loop: one `poll` with the nearest deadline, then inputs, until an exit code.
    pub fn run(mut self, signals: &SignalPipe) -> i32 {
        loop {
            if let Some(code) = self.exit {
                self.write_status(Instant::now());
                return code;
            }
            let now = Instant::now();
            let wake = self.next_wake();
            let timeout = wake.map(|w| w.saturating_duration_since(now));
            self.planned_wake = wake;

            let (sig_ready, notify_ready, probe_ready, metrics_ready) = {
                let mut fds: Vec<PollFd> = vec![
                    PollFd::new(signals.fd(), PollFlags::POLLIN),
                    PollFd::new(self.notify.fd(), PollFlags::POLLIN),
                ];
                let probe_at = self.probe.as_ref().map(|p| {
                    fds.push(PollFd::new(p.fd(), p.interest()));
                    fds.len() - 1
                });
                let metrics_from = fds.len();
                if let Some(m) = &self.metrics {
                    fds.extend(
                        m.poll_fds(now)
                            .into_iter()
                            .map(|(fd, f)| PollFd::new(fd, f)),
                    );
                }
                let t = match timeout {
                    // Rounded up so the loop never wakes a moment before its deadline.
                    Some(d) => PollTimeout::try_from(d + Duration::from_micros(999))
                        .unwrap_or(PollTimeout::MAX),
                    None => PollTimeout::NONE,
                };
                match poll(&mut fds, t) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        tracing::error!("poll failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                let ready = |i: Option<usize>| {
                    i.and_then(|i| fds[i].revents())
                        .is_some_and(|r| !r.is_empty())
                };
                (
                    ready(Some(0)),
                    ready(Some(1)),
                    ready(probe_at),
                    (metrics_from..fds.len()).any(|i| ready(Some(i))),
                )
            };

            let now = Instant::now();
            let stalled = self
                .planned_wake
                .map_or(Duration::ZERO, |w| now.saturating_duration_since(w));
            // Datagrams first: a child's last words (STOPPING=1) are read while it is still
            // the child, before its exit is reaped from the self-pipe.
            if notify_ready {
                self.notified(now);
            }
            if sig_ready {
                self.signals(signals);
            }
            if probe_ready {
                if let Some(outcome) = self.probe.as_mut().and_then(|p| p.advance()) {
                    self.probe_done(outcome, now);
                }
            }
            if metrics_ready || self.metrics_due(now) {
                let st = self.status();
                if let Some(m) = self.metrics.as_mut() {
                    m.serve(now, &mut self.reserve, &st);
                }
            }
            self.timers(now, stalled);
        }
    }

    fn metrics_due(&self, now: Instant) -> bool {
        self.metrics
            .as_ref()
            .and_then(|m| m.next_deadline())
            .is_some_and(|t| now >= t)
    }

    fn next_wake(&self) -> Option<Instant> {
        [
            self.deadline,
            self.probe.as_ref().map(|p| p.deadline),
            self.next_probe,
            self.child.as_ref().map(|_| self.next_sample),
            self.watchdog_deadline,
            self.systemd_watchdog.map(|(every, last)| last + every),
            self.next_status_write
                .filter(|_| self.cfg.status_file.is_some()),
            self.leftovers.map(|(_, at)| at),
            // A scrape's deadline, or the end of a paused listener's pause.
            self.metrics.as_ref().and_then(|m| m.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn signals(&mut self, signals: &SignalPipe) {
        for event in signals.drain() {
            match event {
                Event::Child => self.reap_children(),
                Event::Terminate | Event::Interrupt => self.handle(Input::Stop),
                Event::Reload => {
                    self.reload_config();
                    self.handle(Input::Forward(Signal::SIGHUP))
                }
                Event::ReopenLogs => self.handle(Input::Forward(Signal::SIGUSR1)),
            }
        }
    }

    /// SIGHUP: reads the flags and the `[supervisor]` section again and applies what can
    /// change while the supervisor runs; what cannot is logged and kept (issue 10: HUP only
    /// reached the child). Every field of [`Config`] is named here, so a new one must be
    /// placed in one of the three groups to compile.
    fn reload_config(&mut self) {
        let new = match crate::config::load(&self.args) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload: {e}; the supervisor keeps its running configuration");
                return;
            }
        };
        // Each field of `Config` once: applied now, at the child's next start, or needing a
        // restart of the supervisor. The destructuring names them all, so a field added to
        // `Config` and not placed here does not compile.
        let old = &mut self.cfg;
        let mut applied = Vec::new();
        let mut next_start = Vec::new();
        macro_rules! place {
            (now: $($now:ident),*; next_start: $($next:ident),*; restart: $($restart:ident),*) => {
                let Config { $($now,)* $($next,)* $($restart,)* } = new;
                $(if old.$now != $now {
                    old.$now = $now;
                    applied.push(stringify!($now).replace('_', "-"));
                })*
                $(if old.$next != $next {
                    old.$next = $next;
                    next_start.push(stringify!($next).replace('_', "-"));
                })*
            };
        }
        place!(
            now: health, health_interval, health_timeout, health_threshold, readiness,
                ready_timeout, backoff_base, backoff_cap, stable_after, max_restarts,
                restart_window, stop_timeout, recycle, limits, slope_window, sample_interval,
                port, status_file;
            // The child reads these from its command line and environment when it starts.
            next_start: command, watchdog;
            restart: metrics_listen, listen
        );
        if old.listen != listen {
            tracing::warn!(
                "reload: listen cannot change while the supervisor runs (holding {:?}, \
                 configured {listen:?}): restart the supervisor to apply",
                old.listen
            );
        }
        if old.metrics_listen != metrics_listen {
            tracing::warn!(
                "reload: metrics-listen cannot change while the supervisor runs (running {:?}, \
                 configured {metrics_listen:?}): restart the supervisor to apply",
                old.metrics_listen
            );
        }
        let cfg = &self.cfg;
        self.backoff
            .reconfigure(cfg.backoff_base, cfg.backoff_cap, cfg.stable_after);
        self.budget
            .reconfigure(cfg.max_restarts, cfg.restart_window);
        if applied.iter().any(|k| k == "limits" || k == "slope-window") {
            self.watch.set_limits(cfg.limits.clone(), cfg.slope_window);
        }
        if applied.iter().any(|k| k == "health-threshold") {
            self.health_failures = self
                .health_failures
                .min(cfg.health_threshold.saturating_sub(1));
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "nothing".to_string()
            } else {
                v.join(", ")
            }
        };
        tracing::info!(
            "reloaded the supervisor's configuration: applied {}; at the child's next start: {}",
            list(&applied),
            list(&next_start)
        );
        self.status_soon();
    }

    fn reap_children(&mut self) {
        let mut ends = Vec::new();
        reap(|pid, end| ends.push((pid, end)));
        for (pid, end) in ends {
            if self.child.as_ref().is_some_and(|c| c.pid == pid) {
                self.handle(Input::Exited(end));
            } else {
                self.counters.bump(Count::OrphansReaped);
                tracing::debug!("reaped orphan {pid}: {end}");
            }
        }
    }
}

/// At exit: TERM to every remaining descendant (orphans that left the child's group), a short
/// wait, then KILL, reaping all of them, so the supervisor leaves nothing behind.
fn sweep_descendants(reserve: &mut Reserve) {
    let left = child::descendants(reserve);
    if left.is_empty() {
        reap(|_, _| {});
        return;
    }
    tracing::info!("ending {} leftover process(es): {left:?}", left.len());
    for p in &left {
        let _ = nix::sys::signal::kill(*p, Signal::SIGTERM);
    }
    let gone = |reserve: &mut Reserve| {
        reap(|_, _| {});
        child::descendants(reserve).is_empty()
    };
    wait::until(Duration::from_secs(1), SWEEP_TICK, || gone(reserve));
    for p in child::descendants(reserve) {
        let _ = nix::sys::signal::kill(p, Signal::SIGKILL);
    }
    wait::until(Duration::from_secs(2), SWEEP_TICK, || gone(reserve));
}

/// How often the final sweep looks for descendants that are still there.
const SWEEP_TICK: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const PID: i32 = 999_999;

    /// What a cell decided: the next state (or the exit code), and the effects it returned.
    type Decided = (Result<State, i32>, Vec<Effect>);

    /// A machine in `state`, with a child that is never really signalled: effects are only
    /// returned here, never performed.
    fn machine(state: State) -> Supervisor {
        let cli =
            crate::config::Cli::try_parse_from(["forkd-supervisor", "--", "/bin/true"]).unwrap();
        let cfg = crate::config::load(&cli.run).unwrap();
        let world = World {
            systemd: Notifier::none(),
            systemd_watchdog: None,
            notify: NotifySocket::bind().unwrap(),
            reserve: Reserve::new(3).unwrap(),
            metrics: None,
            held: Vec::new(),
        };
        let mut sup = assemble(cfg, cli.run, world);
        sup.state = state;
        if state != State::Backoff {
            sup.child = Some(fake_child());
            sup.ready = state == State::Running;
        }
        sup
    }

    fn fake_child() -> Running {
        Running {
            pid: Pid::from_raw(PID),
            pgid: Pid::from_raw(PID),
            started: Instant::now(),
            started_unix: 0,
        }
    }

    /// The events of the table's columns, in order, each with a representative payload.
    fn events() -> [(&'static str, Input); 8] {
        [
            ("child exited", Input::Exited(ProcessEnd::Exited(1))),
            ("ready", Input::Ready),
            ("unhealthy", Input::Unhealthy("probes failed".into())),
            (
                "over a limit",
                Input::OverLimit("fds is 9 (limit 8)".into()),
            ),
            ("deadline", Input::Timeout),
            ("TERM/INT", Input::Stop),
            ("HUP/USR1", Input::Forward(Signal::SIGHUP)),
            ("spawned", Input::Spawned(Ok(fake_child()))),
        ]
    }

    const STATES: [State; 5] = [
        State::Starting,
        State::Running,
        State::Recycling,
        State::Backoff,
        State::Stopping,
    ];

    /// A documented table as (state name, cell names by column), from its markdown rows.
    fn documented(text: &str) -> Vec<(String, Vec<String>)> {
        text.lines()
            .map(|l| l.trim_start_matches("//! "))
            .filter(|l| {
                STATES.iter().any(|s| {
                    let name = s.name();
                    let title = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
                    l.starts_with(&format!("| {title} |"))
                        || l.starts_with(&format!("| **{title}**"))
                })
            })
            .map(|l| {
                let cells: Vec<&str> = l
                    .trim()
                    .trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect();
                let state = cells[0]
                    .trim_matches('*')
                    .split(' ')
                    .next()
                    .unwrap()
                    .trim_matches('*');
                let names = cells[1..]
                    .iter()
                    .map(|c| match c.split('`').nth(1) {
                        Some(name) => name.to_string(),
                        None => "-".to_string(),
                    })
                    .collect();
                (state.to_lowercase(), names)
            })
            .collect()
    }

    /// Every cell of the state table, stepped without a process: what it decides (the next
    /// state, or the exit code) and the effects it returns. The cell names must also be
    /// those of the tables in ARCHITECTURE.md and the crate docs, so code and docs cannot
    /// drift apart.
    #[test]
    fn every_cell_of_the_table() {
        use Effect::*;
        use State::*;
        let p = Pid::from_raw(PID);
        let term = || {
            vec![
                Signal(p, nix::sys::signal::Signal::SIGTERM),
                Signal(p, nix::sys::signal::Signal::SIGCONT),
            ]
        };
        let stopping = || {
            vec![
                Systemd("STOPPING=1".into()),
                Signal(p, nix::sys::signal::Signal::SIGTERM),
            ]
        };
        let hup = || vec![Signal(p, nix::sys::signal::Signal::SIGHUP)];
        let ready = || vec![Systemd("READY=1\nSTATUS=child ready".into())];
        let stay = |s: State| (Ok(s), vec![]);
        // (state, [(next state or exit code, effects); one per column of `events`]).
        let table: Vec<(State, Vec<Decided>)> = vec![
            (
                Starting,
                vec![
                    (Ok(Backoff), vec![EndLeftovers(p)]),
                    (Ok(Running), ready()),
                    stay(Starting),
                    (Ok(Recycling), term()),
                    (Ok(Recycling), term()),
                    (Ok(Stopping), stopping()),
                    (Ok(Starting), hup()),
                    stay(Starting),
                ],
            ),
            (
                Running,
                vec![
                    (Ok(Backoff), vec![EndLeftovers(p)]),
                    stay(Running),
                    (Ok(Recycling), term()),
                    (Ok(Recycling), term()),
                    stay(Running),
                    (Ok(Stopping), stopping()),
                    (Ok(Running), hup()),
                    stay(Running),
                ],
            ),
            (
                Recycling,
                vec![
                    (Ok(Backoff), vec![EndLeftovers(p)]),
                    stay(Recycling),
                    stay(Recycling),
                    stay(Recycling),
                    (Ok(Recycling), vec![KillGroup(p)]),
                    (Ok(Stopping), vec![Systemd("STOPPING=1".into())]),
                    (Ok(Recycling), hup()),
                    stay(Recycling),
                ],
            ),
            (
                Backoff,
                vec![
                    stay(Backoff),
                    stay(Backoff),
                    stay(Backoff),
                    stay(Backoff),
                    (Ok(Backoff), vec![Spawn]),
                    (
                        Err(EXIT_STOPPED),
                        vec![
                            Sweep,
                            Systemd("STATUS=stopped (no child was running)".into()),
                        ],
                    ),
                    stay(Backoff),
                    stay(Starting),
                ],
            ),
            (
                Stopping,
                vec![
                    (
                        Err(EXIT_STOPPED),
                        vec![KillLeftovers(p), Sweep, Systemd("STATUS=stopped".into())],
                    ),
                    stay(Stopping),
                    stay(Stopping),
                    stay(Stopping),
                    (Ok(Stopping), vec![KillGroup(p)]),
                    (Ok(Stopping), vec![KillGroup(p)]),
                    stay(Stopping),
                    stay(Stopping),
                ],
            ),
        ];
        let docs = [
            (
                "ARCHITECTURE.md",
                documented(include_str!("../../ARCHITECTURE.md")),
            ),
            ("supervisor/src/lib.rs", documented(include_str!("lib.rs"))),
        ];
        for (file, rows) in &docs {
            assert_eq!(rows.len(), STATES.len(), "{file}: {rows:?}");
        }
        let mut cells = 0;
        for (state, expected) in table {
            for ((event, input), (want_next, want_effects)) in events().into_iter().zip(expected) {
                let which = cell(state, &input);
                for (file, rows) in &docs {
                    let row = rows.iter().find(|(s, _)| s == state.name()).unwrap();
                    let col = events().iter().position(|(e, _)| *e == event).unwrap();
                    assert_eq!(row.1[col], which.name(), "{file}: {state:?} x {event}");
                }
                let mut sup = machine(state);
                let effects = sup.step(input);
                let next = match sup.exit {
                    Some(code) => Err(code),
                    None => Ok(sup.state),
                };
                assert_eq!(
                    (next, effects),
                    (want_next, want_effects),
                    "{state:?} x {event} ({})",
                    which.name()
                );
                cells += 1;
            }
        }
        assert_eq!(cells, 40);
    }

    /// A start that fails is a failed start: the next one is planned, the budget counts it.
    #[test]
    fn a_failed_spawn_plans_the_next_start() {
        let mut sup = machine(State::Backoff);
        let effects = sup.step(Input::Spawned(Err("unable to start: ENOENT".into())));
        assert!(effects.is_empty());
        assert_eq!(sup.state, State::Backoff);
        assert_eq!(sup.budget.used(), 1);
        assert_eq!(sup.counters.get(Count::SpawnFailures), 1);
        assert!(sup.deadline.is_some());
    }
}
