//! The supervisor proper: a state machine (see the table in the crate docs and ARCHITECTURE.md).
//!
//! The loop (`run`) turns each wake-up into a list of [`Input`]s before anything changes:
//! signals, reaped children, notify messages, probe outcomes, resource samples, expired
//! timers. [`Supervisor::step`] takes one input: evidence (a probe outcome, a sample, a notify
//! message, a timer) is booked on the machine and may yield one of the table's events, and
//! [`cell`] routes each (state, event) pair to one small named function. Cells change the state
//! and return [`Effect`]s; `run` carries them out. Nothing in this file makes a system call:
//! the deadlines are `crate::timers`, the probe in flight `crate::probe::Prober`, and every
//! observation and action is in `run`.

mod reload;
mod run;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime};

use forkd_daemon::backoff::Backoff;
use forkd_daemon::notify::Notifier;
use forkd_daemon::reap::ProcessEnd;
use forkd_daemon::units::show_duration;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::child::Running;
use crate::config::{Config, Readiness, Recycle, RunArgs};
use crate::counters::{Count, Counters};
use crate::metrics::Metrics;
use crate::notify::{Message, NotifySocket};
use crate::probe::{self, Outcome, Prober, Target};
use crate::reserve::Reserve;
use crate::status::RestartRecord;
use crate::throttle::Budget;
use crate::timers::{Timer, Timers};
use crate::watch::{Reading, Watch};

pub use run::setup;

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
/// How soon the status file is written after a change, and how often otherwise.
const STATUS_SOON: Duration = Duration::from_millis(100);
const STATUS_EVERY: Duration = Duration::from_secs(1);

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

/// Everything that can happen to the state machine: first the events of the table's columns,
/// then the evidence the loop gathers, which [`Supervisor::step`] books and may turn into one
/// of those events.
#[derive(Debug, Clone, PartialEq)]
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

    /// SIGHUP: the supervisor's configuration read again (or why it could not be); applied,
    /// then SIGHUP is forwarded.
    Reload(Result<Box<Config>, String>),
    /// A descendant that was not the child (an orphan it left) was reaped.
    Orphan(Pid, ProcessEnd),
    /// A notify message from the child's process group.
    Notified(Message),
    /// Notify datagrams from outside the child's process group.
    NotifyRejected(u64),
    /// A probe ended: the [`Prober`] generation it was started in, and what it found.
    Probed { generation: u64, outcome: Outcome },
    /// Readiness by port: the port accepts, but none of the child's tree listens on it;
    /// `holders` listeners belong to others.
    ForeignListener { holders: usize },
    /// A resource sample of child `pid`'s tree, or why it could not be taken.
    Sampled {
        pid: Pid,
        reading: Result<Reading, String>,
    },
    /// The loop woke this much later than it planned: the supervisor was not running.
    Stalled(Duration),
    /// A timer's time came; it is taken when stepped, so one moved by an earlier input of the
    /// same wake-up does nothing.
    Expired(Timer),
}

/// What a step asks of the world. Steps decide and change the state; they never start,
/// signal, probe or write anything themselves: [`Supervisor::step`] returns these, and the loop
/// (`Supervisor::perform`) is the one place that carries them out. So every cell of the table
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
    /// A message to systemd (`READY=1`, `STOPPING=1`, `STATUS=...`, `WATCHDOG=1`).
    Systemd(String),
    /// Start a probe; an outcome known at once comes back as [`Input::Probed`].
    Probe(Target),
    /// Write the status file.
    WriteStatus,
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
/// the documented table. Evidence inputs are not events: [`Supervisor::step`] turns them into
/// events first.
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
    /// Every deadline: the state's own, the probe and sample intervals, the watchdogs, the
    /// leftovers' kill, the status write.
    timers: Timers,
    child: Option<Running>,
    /// SIGKILL has been sent to the current child's group.
    killed: bool,
    /// Listening sockets held for every child (`--listen`, or the supervisor's own
    /// LISTEN_FDS), passed to each by socket activation.
    held: Vec<TcpListener>,
    /// The group of an ended child whose leftovers were asked to finish (socket holding);
    /// killed at [`Timer::Leftovers`].
    leftovers: Option<Pid>,
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
    prober: Prober,
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
    /// What the step being run asked for, returned by `step`.
    effects: Vec<Effect>,
    /// Why the supervisor ended, for the status file it leaves behind.
    final_reason: Option<String>,
    /// The process group of the child before this one: its late notify messages (STOPPING=1
    /// sent just before it exited, read after its exit was reaped) are expected, not strange.
    previous_pgid: Option<Pid>,
    notify: NotifySocket,
    systemd: Notifier,
    /// Half the watchdog interval systemd gave the supervisor, if any.
    systemd_watchdog: Option<Duration>,
    systemd_ready: bool,
    reserve: Reserve,
    metrics: Option<Metrics>,
    /// When the loop last meant to wake up, to measure its own lateness.
    planned_wake: Option<Instant>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Supervisor {
    /// The one transition function. Evidence is booked first and may yield an event; the
    /// event's cell of the table, in the current state, changes the state. Returns what must
    /// be done.
    pub fn step(&mut self, input: Input) -> Vec<Effect> {
        // Once the exit code is decided nothing may start or signal a process again, even if
        // more inputs were gathered in the same wake-up.
        if self.exit.is_some() {
            return Vec::new();
        }
        tracing::debug!("{} <- {input:?}", self.state.name());
        if let Some(event) = self.book(input) {
            self.transition(event);
        }
        std::mem::take(&mut self.effects)
    }

    /// Books a piece of evidence; returns the table's event it amounts to, if any. An event
    /// passes through.
    fn book(&mut self, input: Input) -> Option<Input> {
        let now = Instant::now();
        match input {
            Input::Reload(loaded) => {
                self.reload_config(loaded);
                Some(Input::Forward(Signal::SIGHUP))
            }
            Input::Orphan(pid, end) => {
                self.counters.bump(Count::OrphansReaped);
                tracing::debug!("reaped orphan {pid}: {end}");
                None
            }
            Input::Notified(m) => self.notified(m, now),
            Input::NotifyRejected(n) => {
                self.counters.add(Count::NotifyRejected, n);
                None
            }
            Input::Probed {
                generation,
                outcome,
            } if generation == self.prober.generation() => self.probed(outcome, now),
            Input::Probed { outcome, .. } => {
                tracing::debug!("dropped the outcome of a cancelled probe: {outcome:?}");
                None
            }
            Input::ForeignListener { holders } => {
                self.foreign_listener(holders);
                None
            }
            Input::Sampled { pid, reading } => self.sampled(pid, reading, now),
            Input::Stalled(stalled) => {
                self.excuse_stall(stalled);
                None
            }
            Input::Expired(t) if self.timers.take(t, now) => self.expired(t, now),
            Input::Expired(_) => None,
            event => Some(event),
        }
    }

    /// An event of the table: its cell changes the state.
    fn transition(&mut self, event: Input) {
        let which = cell(self.state, &event);
        match (which, event) {
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
    }

    fn enter(&mut self, state: State, deadline: Option<Instant>) {
        self.state = state;
        self.timers.enter(deadline);
    }

    fn status_soon(&mut self) {
        self.timers
            .soon(Timer::Status, Instant::now() + STATUS_SOON);
    }

    // The cells of the table.

    fn start_child(&mut self) {
        self.effects.push(Effect::Spawn);
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
        self.timers.set(Timer::Sample, Some(now));
        self.enter(State::Starting, Some(now + self.cfg.ready_timeout));
        match self.readiness() {
            Readiness::None => self.mark_ready(),
            Readiness::Port => self.timers.set(Timer::Probe, Some(now)),
            Readiness::Notify | Readiness::Auto => self.timers.set(Timer::Probe, None),
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
        self.prober.cancel();
        let next_probe = self.probe_target().map(|_| now + self.cfg.health_interval);
        self.timers.set(Timer::Probe, next_probe);
        self.timers
            .set(Timer::Watchdog, self.cfg.watchdog.map(|w| now + w));
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
        self.stop_probing();
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
        self.stop_probing();
        if self.state != State::Recycling {
            self.effects.push(Effect::Signal(c.pid, Signal::SIGTERM));
        }
        let deadline = Instant::now() + self.cfg.stop_timeout;
        let deadline = self
            .timers
            .get(Timer::State)
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
        self.timers
            .set(Timer::State, Some(Instant::now() + KILL_GRACE));
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

    fn forget_child(&mut self) {
        self.ready = false;
        // What the last child said or showed is no longer true of anything running.
        self.child_status = None;
        self.health_last = None;
        self.health_failures = 0;
        self.last_hup_recycle = None;
        self.stop_probing();
        self.timers.set(Timer::Watchdog, None);
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

    // The evidence, booked.

    /// A timer taken at `now`: what it means in the current state.
    fn expired(&mut self, t: Timer, now: Instant) -> Option<Input> {
        match t {
            Timer::State => Some(Input::Timeout),
            Timer::Probe => self.probe_due(now),
            Timer::Sample => {
                // The reading itself is gathered by the loop as `Input::Sampled`.
                self.timers
                    .set(Timer::Sample, Some(now + self.cfg.sample_interval));
                None
            }
            Timer::Watchdog if self.state == State::Running => {
                self.counters.bump(Count::WatchdogMisses);
                let w = show_duration(self.cfg.watchdog.unwrap_or_default());
                Some(Input::Unhealthy(format!("no WATCHDOG=1 within {w}")))
            }
            Timer::Watchdog => None,
            Timer::SystemdWatchdog => {
                let next = self.systemd_watchdog.map(|every| now + every);
                self.timers.set(Timer::SystemdWatchdog, next);
                self.effects.push(Effect::Systemd("WATCHDOG=1".into()));
                None
            }
            Timer::Leftovers => {
                if let Some(pgid) = self.leftovers.take() {
                    self.effects.push(Effect::KillLeftovers(pgid));
                }
                None
            }
            Timer::Status => {
                self.timers.set(Timer::Status, Some(now + STATUS_EVERY));
                self.effects.push(Effect::WriteStatus);
                None
            }
        }
    }

    /// The loop woke `stalled` later than it meant to: the supervisor was not running. Time it
    /// did not see is no evidence against the child, so the deadlines that judge the child
    /// (the ready timeout, the watchdog) move back by as much. Stop and restart deadlines do
    /// not: they wait for the child to do what it was told, which a stall does not excuse.
    fn excuse_stall(&mut self, stalled: Duration) {
        if stalled < crate::timers::STALL_GRACE {
            return;
        }
        let judging: &[Timer] = if self.state == State::Starting {
            &[Timer::State, Timer::Watchdog]
        } else {
            &[Timer::Watchdog]
        };
        let moved: Vec<&str> = self
            .timers
            .excuse(stalled, judging)
            .into_iter()
            .map(|t| match t {
                Timer::State => "ready timeout",
                _ => "watchdog",
            })
            .collect();
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

    fn probe_target(&self) -> Option<Target> {
        let (addr, request) = match (&self.cfg.health, self.cfg.port) {
            (Some(h), _) => (h.addr, Some(probe::http_request(&h.host, &h.path))),
            (None, Some(port)) => (([127, 0, 0, 1], port).into(), None),
            (None, None) => return None,
        };
        Some(Target {
            addr,
            request,
            timeout: self.cfg.health_timeout,
        })
    }

    /// The probe interval came: a probe, unless a reload pauses probing (for at most the ready
    /// timeout).
    fn probe_due(&mut self, now: Instant) -> Option<Input> {
        if !matches!(self.state, State::Starting | State::Running) {
            return None;
        }
        match self.reloading_since {
            Some(since) if now.duration_since(since) < self.cfg.ready_timeout => {
                self.timers
                    .set(Timer::Probe, Some(now + self.cfg.health_interval));
                None
            }
            Some(_) => {
                self.reloading_since = None;
                Some(Input::Unhealthy(format!(
                    "RELOADING=1 without READY=1 within {}",
                    show_duration(self.cfg.ready_timeout)
                )))
            }
            None => {
                if !self.prober.busy() {
                    if let Some(mut target) = self.probe_target() {
                        // While waiting for readiness by port, a connect is enough.
                        if self.state == State::Starting {
                            target.request = None;
                        }
                        self.effects.push(Effect::Probe(target));
                    }
                }
                None
            }
        }
    }

    /// No more probes for this child: the one in flight is cancelled, none is planned.
    fn stop_probing(&mut self) {
        self.prober.cancel();
        self.timers.set(Timer::Probe, None);
    }

    /// A wanted probe's outcome. While Starting it is readiness by port (the loop has already
    /// checked that the listener is the child's own); while Running it is health.
    fn probed(&mut self, outcome: Outcome, now: Instant) -> Option<Input> {
        if self.state == State::Starting {
            self.timers.set(
                Timer::Probe,
                Some(now + READY_POLL.min(self.cfg.health_interval)),
            );
            return match outcome {
                Outcome::Healthy(_) => {
                    self.observed(now);
                    tracing::info!("port {} accepts", self.cfg.port.unwrap_or(0));
                    Some(Input::Ready)
                }
                Outcome::CannotObserve(why) => {
                    self.cannot_observe(why, now);
                    None
                }
                Outcome::Failed(_) => {
                    self.observed(now);
                    None
                }
            };
        }
        if self.state != State::Running {
            return None;
        }
        self.timers
            .set(Timer::Probe, Some(now + self.cfg.health_interval));
        match outcome {
            Outcome::Healthy(code) => {
                self.observed(now);
                if self.health_failures > 0 {
                    tracing::info!("health probe succeeded again (HTTP {code})");
                }
                self.health_failures = 0;
                self.health_last = Some(format!("ok (HTTP {code})"));
                None
            }
            Outcome::Failed(why) => {
                self.observed(now);
                self.health_failures += 1;
                self.counters.bump(Count::ProbeFailures);
                tracing::warn!(
                    "health probe failed ({}/{}): {why}",
                    self.health_failures,
                    self.cfg.health_threshold
                );
                self.health_last = Some(format!("failed: {why}"));
                (self.health_failures >= self.cfg.health_threshold).then(|| {
                    Input::Unhealthy(format!(
                        "unhealthy: {} failed probes in a row (last: {why})",
                        self.health_failures
                    ))
                })
            }
            Outcome::CannotObserve(why) => {
                self.cannot_observe(why, now);
                None
            }
        }
    }

    /// Readiness by port needs the child's own socket: the port accepting proves only that
    /// someone listens (issue 10: a stray old forkd made a child that never bound count as
    /// ready).
    fn foreign_listener(&mut self, holders: usize) {
        let Some(c) = &self.child else { return };
        self.counters.bump(Count::ForeignListener);
        if holders > 0 && !self.warned_foreign {
            self.warned_foreign = true;
            tracing::warn!(
                "port {} accepts, but its listener is not child {}'s (another process holds \
                 the port); not ready",
                self.cfg.port.unwrap_or(0),
                c.pid
            );
        }
    }

    /// The supervisor's own trouble: logged once per episode, counted every time, never held
    /// against the child. The ready timeout stops running, since the child's readiness is
    /// exactly what the supervisor cannot see (issue 10: healthy servers killed as "not ready
    /// within 3s" while the supervisor was out of fds).
    fn cannot_observe(&mut self, why: String, now: Instant) {
        self.counters.bump(Count::CannotObserve);
        if self.observing {
            tracing::warn!("cannot observe the child: {why}; not counted against it");
        }
        self.observing = false;
        if self.state == State::Starting {
            if let Some(left) = self.timers.suspend_ready(now) {
                tracing::warn!(
                    "ready timeout suspended with {} left: the supervisor cannot observe the \
                     child",
                    show_duration(left)
                );
            }
        }
        self.health_last = Some(format!("cannot observe: {why}"));
        self.cannot_observe_reason = Some(why);
        self.status_soon();
    }

    fn observed(&mut self, now: Instant) {
        if !self.observing {
            tracing::info!("observing the child again");
        }
        self.observing = true;
        self.cannot_observe_reason = None;
        if let Some(left) = self.timers.resume_ready(now) {
            tracing::info!(
                "ready timeout resumed with {} left: observing again",
                show_duration(left)
            );
        }
    }

    /// A resource sample of child `pid`, judged while it is Starting or Running.
    fn sampled(
        &mut self,
        pid: Pid,
        reading: Result<Reading, String>,
        now: Instant,
    ) -> Option<Input> {
        if self.child.as_ref().map(|c| c.pid) != Some(pid)
            || !matches!(self.state, State::Starting | State::Running)
        {
            return None;
        }
        let reading = match reading {
            Ok(reading) => reading,
            Err(e) => {
                self.counters.bump(Count::CannotObserve);
                if self.resources_observable {
                    tracing::warn!(
                        "cannot observe the child's resources: {e}; no limit is judged meanwhile"
                    );
                }
                self.resources_observable = false;
                return None;
            }
        };
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
            tracing::warn!("child {pid} nears a limit: {warning}");
        }
        verdict.map(Input::OverLimit)
    }

    /// A message from the child's process group.
    fn notified(&mut self, m: Message, now: Instant) -> Option<Input> {
        if let Some(s) = m.status {
            self.child_status = Some(s);
            self.status_soon();
        }
        if m.watchdog {
            self.timers
                .set(Timer::Watchdog, self.cfg.watchdog.map(|w| now + w));
        }
        if m.reloading {
            self.reloading_since = Some(now);
        }
        if m.stopping {
            tracing::info!("child says it is stopping");
        }
        if m.ready {
            self.reloading_since = None;
            if matches!(self.cfg.readiness, Readiness::Auto | Readiness::Notify) {
                return Some(Input::Ready);
            }
        }
        None
    }
}
