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
