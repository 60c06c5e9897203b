//! The machine without a process: every cell of the table, and sequences of inputs.

use super::run::{assemble, World};
use super::*;
use clap::Parser;

const PID: i32 = 999_999;

/// What a cell decided: the next state (or the exit code), and the effects it returned.
type Decided = (Result<State, i32>, Vec<Effect>);

/// A machine in `state`, with a child that is never really signalled: effects are only
/// returned here, never performed.
fn machine(state: State) -> Supervisor {
    let cli = crate::config::Cli::try_parse_from(["forkd-supervisor", "--", "/bin/true"]).unwrap();
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
                l.starts_with(&format!("| {title} |")) || l.starts_with(&format!("| **{title}**"))
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
            documented(include_str!("../../../ARCHITECTURE.md")),
        ),
        (
            "supervisor/src/lib.rs",
            documented(include_str!("../lib.rs")),
        ),
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
    assert!(sup.timers.get(Timer::State).is_some());
}

// Sequences of inputs, as the loop would gather them, stepped without a process.

const SECOND: Duration = Duration::from_secs(1);

/// Makes `t` due now, as the loop would have found it, and steps its input.
fn fire(sup: &mut Supervisor, t: Timer) -> Vec<Effect> {
    sup.timers.set(t, Some(Instant::now()));
    sup.step(Input::Expired(t))
}

/// A probe outcome of the generation the machine wants now.
fn probed(sup: &Supervisor, outcome: Outcome) -> Input {
    Input::Probed {
        generation: sup.prober.generation(),
        outcome,
    }
}

fn term() -> Vec<Effect> {
    let p = Pid::from_raw(PID);
    vec![
        Effect::Signal(p, Signal::SIGTERM),
        Effect::Signal(p, Signal::SIGCONT),
    ]
}

/// Incident 001 in the Starting state (issue 10): while the supervisor cannot observe, the
/// ready timeout stands still and never fires; seeing again starts it with what it had left.
#[test]
fn blind_suspends_the_ready_timeout_until_observed_again() {
    let mut sup = machine(State::Starting);
    sup.timers.enter(Some(Instant::now() + 3 * SECOND));
    let blind = Outcome::CannotObserve("cannot create a probe socket: EMFILE".into());
    assert_eq!(sup.step(probed(&sup, blind.clone())), vec![]);
    let left = sup.timers.ready_suspended().unwrap();
    assert!(left > 2 * SECOND && left <= 3 * SECOND, "{left:?}");
    assert_eq!(sup.timers.get(Timer::State), None);
    assert!(!sup.observing);
    // Blind again: still suspended once, counted every time.
    assert_eq!(sup.step(probed(&sup, blind)), vec![]);
    assert_eq!(sup.counters.get(Count::CannotObserve), 2);
    // The loop would not even gather the timer; a stale one does nothing.
    assert_eq!(sup.step(Input::Expired(Timer::State)), vec![]);
    assert_eq!(sup.state, State::Starting);
    // The port refuses: evidence, so observing again, and the clock runs on.
    let refused = Outcome::Failed("connect: connection refused".into());
    assert_eq!(sup.step(probed(&sup, refused)), vec![]);
    assert!(sup.observing);
    assert_eq!(sup.timers.ready_suspended(), None);
    let resumed = sup.timers.get(Timer::State).unwrap();
    assert!(
        resumed > Instant::now() + 2 * SECOND,
        "resumed with what it had left"
    );
    // Only now can it expire.
    assert_eq!(fire(&mut sup, Timer::State), term());
    assert_eq!(sup.state, State::Recycling);
    assert_eq!(
        sup.recycle_reason.as_deref(),
        Some("not ready within 30s"),
        "{:?}",
        sup.recycle_reason
    );
}

/// A child that exits at once, again and again: each start is a failed start, the backoff
/// plans the next, and the eleventh failure in a row (the default budget of 10) ends the
/// supervisor with 111.
#[test]
fn a_child_exiting_fast_spends_the_budget() {
    let mut sup = machine(State::Backoff);
    let p = Pid::from_raw(PID);
    let mut starts = 0;
    while sup.exit.is_none() {
        assert_eq!(fire(&mut sup, Timer::State), vec![Effect::Spawn]);
        starts += 1;
        assert_eq!(sup.step(Input::Spawned(Ok(fake_child()))), vec![]);
        assert_eq!(sup.state, State::Starting);
        let effects = sup.step(Input::Exited(ProcessEnd::Exited(1)));
        assert_eq!(effects[0], Effect::EndLeftovers(p));
        if sup.exit.is_none() {
            assert_eq!(sup.state, State::Backoff);
            let next = sup.timers.get(Timer::State).unwrap();
            assert!(next > Instant::now(), "backs off before the next start");
            assert_eq!(
                sup.step(Input::Expired(Timer::State)),
                vec![],
                "a start is not due before the backoff"
            );
        } else {
            assert_eq!(effects[1], Effect::Sweep);
        }
    }
    assert_eq!(starts, 11);
    assert_eq!(sup.exit, Some(EXIT_BUDGET));
    assert_eq!(sup.restarts, 10);
    let reason = sup.final_reason.clone().unwrap();
    assert!(
        reason.starts_with("giving up: 10 failed starts in a row"),
        "{reason}"
    );
    // Nothing more happens once the exit is decided.
    assert_eq!(fire(&mut sup, Timer::State), vec![]);
}

/// SIGHUP while the child is starting: the supervisor's configuration is applied (or the
/// error logged) and the signal forwarded either way; with no child it goes nowhere.
#[test]
fn hup_while_starting_reloads_and_forwards() {
    let p = Pid::from_raw(PID);
    let mut sup = machine(State::Starting);
    let mut cfg = sup.cfg.clone();
    cfg.health_threshold = 7;
    let effects = sup.step(Input::Reload(Ok(Box::new(cfg))));
    assert_eq!(effects, vec![Effect::Signal(p, Signal::SIGHUP)]);
    assert_eq!(sup.cfg.health_threshold, 7);
    assert_eq!(sup.state, State::Starting);
    let effects = sup.step(Input::Reload(Err("bad toml".into())));
    assert_eq!(effects, vec![Effect::Signal(p, Signal::SIGHUP)]);
    assert_eq!(
        sup.cfg.health_threshold, 7,
        "kept the running configuration"
    );
    let mut idle = machine(State::Backoff);
    assert_eq!(idle.step(Input::Reload(Err("bad toml".into()))), vec![]);
}

/// READY=1 and a failed readiness probe gathered in the same wake-up: the probe was cancelled
/// by the readiness, so its failure is not counted against the now running child.
#[test]
fn a_probe_cancelled_in_the_same_turn_is_not_held_against_the_child() {
    let mut sup = machine(State::Starting);
    let started_in = sup.prober.generation();
    let ready = Message {
        ready: true,
        ..Default::default()
    };
    assert_eq!(
        sup.step(Input::Notified(ready)),
        vec![Effect::Systemd("READY=1\nSTATUS=child ready".into())]
    );
    assert_eq!(sup.state, State::Running);
    let stale = Input::Probed {
        generation: started_in,
        outcome: Outcome::Failed("connect: connection refused".into()),
    };
    assert_eq!(sup.step(stale), vec![]);
    assert_eq!(sup.health_failures, 0);
    assert_eq!(sup.counters.get(Count::ProbeFailures), 0);
}

/// Health probes: three failures in a row recycle a running child, a success in between
/// starts the count again.
#[test]
fn health_failures_in_a_row_recycle() {
    let mut sup = machine(State::Running);
    let failed = || Outcome::Failed("HTTP status 503".into());
    assert_eq!(sup.step(probed(&sup, failed())), vec![]);
    assert_eq!(sup.step(probed(&sup, Outcome::Healthy(200))), vec![]);
    assert_eq!(sup.health_failures, 0);
    assert_eq!(sup.step(probed(&sup, failed())), vec![]);
    assert_eq!(sup.step(probed(&sup, failed())), vec![]);
    assert_eq!(sup.state, State::Running);
    assert_eq!(sup.step(probed(&sup, failed())), term());
    assert_eq!(sup.state, State::Recycling);
    assert_eq!(sup.counters.get(Count::ProbeFailures), 4);
}

/// The child's WATCHDOG=1 moves its deadline: a watchdog timer gathered in the same wake-up
/// as the ping does nothing; a missed one recycles.
#[test]
fn a_watchdog_ping_in_the_same_turn_wins_over_its_deadline() {
    let mut sup = machine(State::Running);
    sup.cfg.watchdog = Some(10 * SECOND);
    sup.timers.set(Timer::Watchdog, Some(Instant::now()));
    let ping = Message {
        watchdog: true,
        ..Default::default()
    };
    assert_eq!(sup.step(Input::Notified(ping)), vec![]);
    assert_eq!(sup.step(Input::Expired(Timer::Watchdog)), vec![]);
    assert_eq!(sup.state, State::Running);
    assert_eq!(fire(&mut sup, Timer::Watchdog), term());
    assert_eq!(sup.counters.get(Count::WatchdogMisses), 1);
    assert_eq!(
        sup.recycle_reason.as_deref(),
        Some("no WATCHDOG=1 within 10s")
    );
}

/// A stall of the supervisor itself pushes the ready timeout back by as much, so a ready
/// timeout gathered as due in that wake-up does not fire.
#[test]
fn a_stall_excuses_the_child() {
    let mut sup = machine(State::Starting);
    let due = Instant::now();
    sup.timers.enter(Some(due));
    assert_eq!(sup.step(Input::Stalled(4 * SECOND)), vec![]);
    assert_eq!(sup.counters.get(Count::Stalls), 1);
    assert_eq!(sup.timers.get(Timer::State), Some(due + 4 * SECOND));
    assert_eq!(sup.step(Input::Expired(Timer::State)), vec![]);
    assert_eq!(sup.state, State::Starting);
}

/// Readiness by port: the probe interval asks for a bare connect; a port whose listener is
/// another process's is counted and not ready; the child's own makes it ready.
#[test]
fn readiness_by_port() {
    let mut sup = machine(State::Starting);
    sup.cfg.port = Some(8080);
    let effects = fire(&mut sup, Timer::Probe);
    assert_eq!(
        effects,
        vec![Effect::Probe(Target {
            addr: ([127, 0, 0, 1], 8080).into(),
            request: None,
            timeout: sup.cfg.health_timeout,
        })]
    );
    assert_eq!(sup.step(Input::ForeignListener { holders: 1 }), vec![]);
    let not_childs = Outcome::Failed("the port's listener is not the child's".into());
    assert_eq!(sup.step(probed(&sup, not_childs)), vec![]);
    assert_eq!(sup.counters.get(Count::ForeignListener), 1);
    assert_eq!(sup.state, State::Starting);
    assert!(sup.timers.get(Timer::Probe).is_some(), "tried again soon");
    assert_eq!(
        sup.step(probed(&sup, Outcome::Healthy(0))),
        vec![Effect::Systemd("READY=1\nSTATUS=child ready".into())]
    );
    assert_eq!(sup.state, State::Running);
}

/// A sample judged against a limit recycles (after a first, resting, reading under it); one of
/// another pid (a child that ended in the same wake-up) is not judged.
#[test]
fn a_sample_over_a_limit_recycles_its_own_child_only() {
    let mut sup = machine(State::Running);
    let limit = crate::watch::Limit {
        resource: crate::watch::Resource::Fds,
        value: 8,
        slope: false,
    };
    sup.watch.set_limits(vec![limit], sup.cfg.slope_window);
    let fds = |n| Reading {
        values: [(crate::watch::Resource::Fds, n)].into_iter().collect(),
    };
    let rest = Input::Sampled {
        pid: Pid::from_raw(PID),
        reading: Ok(fds(5)),
    };
    assert_eq!(sup.step(rest), vec![]);
    let reading = fds(9);
    let other = Input::Sampled {
        pid: Pid::from_raw(PID + 1),
        reading: Ok(reading.clone()),
    };
    assert_eq!(sup.step(other), vec![]);
    let own = Input::Sampled {
        pid: Pid::from_raw(PID),
        reading: Ok(reading),
    };
    assert_eq!(sup.step(own), term());
    assert_eq!(sup.state, State::Recycling);
}

/// The timers that only ask for an effect: systemd's watchdog (re-armed), the status write,
/// the leftovers' kill.
#[test]
fn housekeeping_timers() {
    let mut sup = machine(State::Running);
    sup.systemd_watchdog = Some(5 * SECOND);
    assert_eq!(
        fire(&mut sup, Timer::SystemdWatchdog),
        vec![Effect::Systemd("WATCHDOG=1".into())]
    );
    assert!(sup.timers.get(Timer::SystemdWatchdog).unwrap() > Instant::now() + 4 * SECOND);
    assert_eq!(fire(&mut sup, Timer::Status), vec![Effect::WriteStatus]);
    sup.leftovers = Some(Pid::from_raw(PID));
    assert_eq!(
        fire(&mut sup, Timer::Leftovers),
        vec![Effect::KillLeftovers(Pid::from_raw(PID))]
    );
    assert_eq!(fire(&mut sup, Timer::Leftovers), vec![]);
}
