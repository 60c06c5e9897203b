//! The supervisor's side that touches the world: setting up, the loop, and the report.
//!
//! Each turn of [`Supervisor::run`] (1) waits in one `poll` for the nearest deadline, (2)
//! gathers every input of the turn into a list: the functions named `gather_*` observe
//! (notify datagrams, the signalfd and `waitpid`, the probe's socket, `/proc`, the
//! configuration file, the clock) and return inputs, never changing the machine; (3) steps the
//! machine with each input, in order, and (4) performs the effects each step returned before
//! the next input is stepped, so a later input meets the world the earlier one made (a child
//! that was started, a signal that was sent). A spawn's or a probe's immediate outcome is
//! stepped as an input of its own.

use std::net::TcpListener;
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

use forkd_daemon::notify::Notifier;
use forkd_daemon::procfs;
use forkd_daemon::reap::reap;
use forkd_daemon::signals::{Event, SignalPipe};
use forkd_daemon::units::show_duration;
use forkd_daemon::wait;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{unix_now, Effect, Input, State, Supervisor};
use crate::child::{self, Running};
use crate::config::{Config, RunArgs};
use crate::counters::Counters;
use crate::metrics::Metrics;
use crate::notify::NotifySocket;
use crate::probe::{Outcome, Prober};
use crate::reserve::Reserve;
use crate::status::Status;
use crate::throttle::Budget;
use crate::timers::{Timer, Timers, STALL_GRACE};
use crate::watch::{self, Watch};
use forkd_daemon::backoff::Backoff;
use std::collections::VecDeque;

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
pub(super) struct World {
    pub(super) systemd: Notifier,
    pub(super) systemd_watchdog: Option<Duration>,
    pub(super) notify: NotifySocket,
    pub(super) reserve: Reserve,
    pub(super) metrics: Option<Metrics>,
    pub(super) held: Vec<TcpListener>,
}

/// The machine in Backoff with its first start due now.
pub(super) fn assemble(cfg: Config, args: RunArgs, world: World) -> Supervisor {
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
    // The first start is due now, and the first sample, status write and ping to systemd.
    let now = Instant::now();
    let mut timers = Timers::default();
    timers.enter(Some(now));
    timers.set(Timer::Sample, Some(now));
    timers.set(Timer::Status, Some(now));
    timers.set(Timer::SystemdWatchdog, systemd_watchdog.map(|d| now + d));
    Supervisor {
        state: State::Backoff,
        timers,
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
        prober: Prober::default(),
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
        systemd_watchdog,
        systemd_ready: false,
        reserve,
        metrics,
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

/// Which of the polled fds woke the loop.
#[derive(Default)]
struct Woke {
    signals: bool,
    notify: bool,
    probe: bool,
    metrics: bool,
}

/// Who listens on the child's port, for readiness by port.
enum PortOwner {
    /// A socket of the child's tree.
    Child,
    /// Only others: this many listeners.
    Others(usize),
    /// The child is gone (its exit is on the way).
    Gone,
}

impl Supervisor {
    /// The loop: wait, gather, step and perform, until an exit code.
    pub fn run(mut self, signals: &SignalPipe) -> i32 {
        loop {
            if let Some(code) = self.exit {
                self.write_status();
                return code;
            }
            let woke = self.wait(signals);
            let now = Instant::now();
            let stalled = self
                .planned_wake
                .map_or(Duration::ZERO, |w| now.saturating_duration_since(w));
            let inputs = self.gather(now, stalled, &woke, signals);
            for input in inputs {
                self.handle(input);
            }
            if woke.metrics || self.metrics_due(now) {
                let st = self.status();
                if let Some(m) = self.metrics.as_mut() {
                    m.serve(now, &mut self.reserve, &st);
                }
            }
        }
    }

    /// Steps with `input` and carries out what the step asked for.
    fn handle(&mut self, input: Input) {
        for effect in self.step(input) {
            self.perform(effect);
        }
    }

    /// One `poll` until the nearest deadline or an fd is ready.
    fn wait(&mut self, signals: &SignalPipe) -> Woke {
        // A probe the machine cancelled is closed now, not polled.
        self.prober.drop_cancelled();
        let now = Instant::now();
        let wake = self.next_wake();
        self.planned_wake = wake;
        let mut fds: Vec<PollFd> = vec![
            PollFd::new(signals.fd(), PollFlags::POLLIN),
            PollFd::new(self.notify.fd(), PollFlags::POLLIN),
        ];
        let probe_at = self.prober.poll_fd().map(|(fd, flags)| {
            fds.push(PollFd::new(fd, flags));
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
        let t = match wake.map(|w| w.saturating_duration_since(now)) {
            // Rounded up so the loop never wakes a moment before its deadline.
            Some(d) => {
                PollTimeout::try_from(d + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX)
            }
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
        Woke {
            signals: ready(Some(0)),
            notify: ready(Some(1)),
            probe: ready(probe_at),
            metrics: (metrics_from..fds.len()).any(|i| ready(Some(i))),
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let has_child = self.child.is_some();
        let writes_status = self.cfg.status_file.is_some();
        let timers = self.timers.next_wake(|t| match t {
            Timer::Sample => has_child,
            Timer::Status => writes_status,
            _ => true,
        });
        [
            timers,
            self.prober.deadline(),
            // A scrape's deadline, or the end of a paused listener's pause.
            self.metrics.as_ref().and_then(|m| m.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn metrics_due(&self, now: Instant) -> bool {
        self.metrics
            .as_ref()
            .and_then(|m| m.next_deadline())
            .is_some_and(|t| now >= t)
    }

    /// Every input of this turn, in the order they are stepped.
    fn gather(
        &mut self,
        now: Instant,
        stalled: Duration,
        woke: &Woke,
        signals: &SignalPipe,
    ) -> Vec<Input> {
        let mut inputs = Vec::new();
        // Datagrams first: a child's last words (STOPPING=1) are read while it is still the
        // child, before its exit is reaped on its SIGCHLD.
        if woke.notify {
            self.gather_notify(&mut inputs);
        }
        if woke.signals {
            self.gather_signals(signals, &mut inputs);
        }
        if woke.probe {
            if let Some((generation, outcome)) = self.prober.advance() {
                self.gather_probed(generation, outcome, &mut inputs);
            }
        }
        self.gather_timers(now, stalled, &mut inputs);
        inputs
    }

    fn gather_notify(&mut self, inputs: &mut Vec<Input>) {
        let pgid = self.child.as_ref().map(|c| c.pgid);
        let mut rejected = 0;
        let messages = self.notify.drain(pgid, self.previous_pgid, &mut rejected);
        if rejected > 0 {
            inputs.push(Input::NotifyRejected(rejected));
        }
        inputs.extend(messages.into_iter().map(Input::Notified));
    }

    fn gather_signals(&mut self, signals: &SignalPipe, inputs: &mut Vec<Input>) {
        for event in signals.drain() {
            match event {
                Event::Child => {
                    let child = self.child.as_ref().map(|c| c.pid);
                    reap(|pid, end| {
                        inputs.push(if Some(pid) == child {
                            Input::Exited(end)
                        } else {
                            Input::Orphan(pid, end)
                        })
                    });
                }
                Event::Terminate | Event::Interrupt => inputs.push(Input::Stop),
                Event::Reload => inputs.push(Input::Reload(
                    crate::config::load(&self.args)
                        .map(Box::new)
                        .map_err(|e| e.to_string()),
                )),
                Event::ReopenLogs => inputs.push(Input::Forward(Signal::SIGUSR1)),
            }
        }
    }

    /// A probe's outcome. While the child is starting, a port that accepts is checked to be
    /// the child's own.
    fn gather_probed(&mut self, generation: u64, outcome: Outcome, inputs: &mut Vec<Input>) {
        let readiness = self.state == State::Starting && generation == self.prober.generation();
        let outcome = match outcome {
            Outcome::Healthy(_) if readiness => match self.port_owner() {
                Ok(PortOwner::Child) => outcome,
                Ok(PortOwner::Others(holders)) => {
                    inputs.push(Input::ForeignListener { holders });
                    Outcome::Failed("the port's listener is not the child's".into())
                }
                Ok(PortOwner::Gone) => Outcome::Failed("the child is gone".into()),
                Err(why) => Outcome::CannotObserve(why),
            },
            outcome => outcome,
        };
        inputs.push(Input::Probed {
            generation,
            outcome,
        });
    }

    /// The listening socket's inode must be among the fds of the child's tree. `Err` is the
    /// supervisor's own trouble reading `/proc`.
    fn port_owner(&mut self) -> Result<PortOwner, String> {
        let (Some(c), Some(port)) = (&self.child, self.cfg.port) else {
            return Ok(PortOwner::Gone);
        };
        let pid = c.pid.as_raw();
        let looked = self.reserve.with_room("check who listens", || {
            let listening = procfs::listening_inodes(port)?;
            let mine = procfs::tree_socket_inodes(pid)?;
            Ok((listening.iter().any(|i| mine.contains(i)), listening.len()))
        });
        match looked {
            Ok((true, _)) => Ok(PortOwner::Child),
            Ok((false, holders)) => Ok(PortOwner::Others(holders)),
            Err(e) if procfs::is_gone(&e) => Ok(PortOwner::Gone),
            Err(e) => Err(format!("cannot tell who listens on port {port}: {e}")),
        }
    }

    /// The timers that are due, in a fixed order, with what they need observed: a probe past
    /// its deadline, and the resource sample.
    fn gather_timers(&mut self, now: Instant, stalled: Duration, inputs: &mut Vec<Input>) {
        if stalled >= STALL_GRACE {
            inputs.push(Input::Stalled(stalled));
        }
        for t in self.timers.due(now) {
            inputs.push(Input::Expired(t));
            match t {
                Timer::State => {
                    if let Some((generation, outcome)) = self.prober.expire(now, stalled) {
                        self.gather_probed(generation, outcome, inputs);
                    }
                }
                Timer::Sample => {
                    self.reserve.refill();
                    inputs.extend(self.gather_sample());
                }
                _ => {}
            }
        }
        // A probe past its deadline when the state's deadline was not due.
        if let Some((generation, outcome)) = self.prober.expire(now, stalled) {
            self.gather_probed(generation, outcome, inputs);
        }
    }

    fn gather_sample(&self) -> Option<Input> {
        let c = self.child.as_ref()?;
        if !matches!(self.state, State::Starting | State::Running) {
            return None;
        }
        let reading = match watch::sample(c.pid.as_raw(), self.cfg.port) {
            Ok(reading) => Ok(reading),
            // The child is gone; its exit is on the way through SIGCHLD.
            Err(e) if procfs::is_gone(&e) => return None,
            Err(e) => Err(e.to_string()),
        };
        Some(Input::Sampled {
            pid: c.pid,
            reading,
        })
    }

    /// The one place where the machine's decisions touch processes and files.
    fn perform(&mut self, effect: Effect) {
        match effect {
            Effect::Spawn => {
                let result = self.spawn_child();
                self.handle(Input::Spawned(result));
            }
            Effect::Signal(pid, sig) => child::signal(pid, sig),
            Effect::KillGroup(pgid) => child::kill_group(pgid),
            Effect::EndLeftovers(pgid) => self.end_leftovers(pgid),
            Effect::KillLeftovers(pgid) => {
                child::kill_leftovers(pgid, &mut self.reserve);
            }
            Effect::Systemd(msg) => {
                let _ = self.systemd.send(&msg);
            }
            Effect::Probe(target) => {
                let generation = self.prober.generation();
                if let Some(outcome) = self.prober.start(target) {
                    let mut inputs = Vec::new();
                    self.gather_probed(generation, outcome, &mut inputs);
                    for input in inputs {
                        self.handle(input);
                    }
                }
            }
            Effect::WriteStatus => self.write_status(),
            Effect::Sweep => sweep_descendants(&mut self.reserve),
        }
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

    /// What is left of a child that ended on its own. Without socket holding it is killed at
    /// once (it may hold the port the next child needs). With it, the leftovers (forkd's
    /// workers, told by their dead master's PR_SET_PDEATHSIG too) serve on the held sockets
    /// and are asked to finish: TERM now, SIGKILL after the stop timeout, so the requests
    /// they have in hand are answered, not reset.
    fn end_leftovers(&mut self, pgid: Pid) {
        if let Some(earlier) = self.leftovers.take() {
            child::kill_leftovers(earlier, &mut self.reserve);
        }
        if self.held.is_empty() {
            child::kill_leftovers(pgid, &mut self.reserve);
            return;
        }
        if child::stop_leftovers(pgid, &mut self.reserve) {
            tracing::info!(
                "asked the leftovers of group {pgid} to finish (SIGTERM); SIGKILL after {}",
                show_duration(self.cfg.stop_timeout)
            );
            self.leftovers = Some(pgid);
            self.timers.set(
                Timer::Leftovers,
                Some(Instant::now() + self.cfg.stop_timeout),
            );
        }
    }

    fn write_status(&mut self) {
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
                    self.timers
                        .get(Timer::State)
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
