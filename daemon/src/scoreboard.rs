//! The scoreboard: counters of every limit hit and one slot per child, in a shared anonymous
//! mapping made by the master before its first fork, so that every child writes to the same
//! memory and the master can publish it all (incident 003: only counters seen from outside,
//! like `failcnt` in `/proc/user_beancounters`, told what was going on).
//!
//! Everything in it is an atomic, written with relaxed ordering: counters only need to add up,
//! and a reader tolerates a slot that is a moment stale. The mapping is never unmapped; it
//! lives as long as the process, which is what makes handing out `&'static` sound.

use std::fmt::Write as _;
use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
use nix::sys::signal::Signal;

use super::fork::EXIT_PANIC;
use super::limits::CHILDREN_CAP;
use super::reap::ProcessEnd;
use super::worker::EXIT_SETUP;

/// A counter an application declares: its Prometheus label value and help text.
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    pub name: &'static str,
    pub help: &'static str,
}

/// The limits the process template itself can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A connection was refused with the busy answer: every child slot was taken.
    ChildrenBound = 0,
    /// `accept` failed for want of fds or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).
    AcceptResources,
    /// `fork` failed.
    ForkFailed,
    /// Workers died soon after start, so respawning was slowed down.
    RespawnThrottled,
}

const DAEMON_COUNTERS: [Counter; 4] = [
    Counter {
        name: "children_bound",
        help: "connections refused because every child slot was taken",
    },
    Counter {
        name: "accept_resources",
        help: "accept failed for want of fds or memory",
    },
    Counter {
        name: "fork_failed",
        help: "fork failed",
    },
    Counter {
        name: "respawn_throttled",
        help: "workers that died fast, slowing respawns",
    },
];

/// Why a child ended when nobody asked it to: a small fixed set, so the label set of
/// `{prefix}_child_crashes_total` is known in advance and fits in the shared mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// A panic (exit code 70 from `fork::spawn` or the child's panic hook).
    Panic = 0,
    /// The child could not set itself up (exit code 71: privileges, signals).
    Setup,
    Segv,
    Bus,
    Abort,
    Ill,
    Fpe,
    /// Killed from outside (the OOM killer, an operator).
    Kill,
    OtherSignal,
    OtherExit,
}

const CRASH_LABELS: [&str; 10] = [
    "panic",
    "exit 71",
    "SIGSEGV",
    "SIGBUS",
    "SIGABRT",
    "SIGILL",
    "SIGFPE",
    "SIGKILL",
    "other signal",
    "other exit",
];

impl Crash {
    /// The cause of an end that was not asked for; `None` for a clean exit.
    pub fn of(end: ProcessEnd) -> Option<Crash> {
        Some(match end {
            ProcessEnd::Exited(0) => return None,
            ProcessEnd::Exited(EXIT_PANIC) => Crash::Panic,
            ProcessEnd::Exited(EXIT_SETUP) => Crash::Setup,
            ProcessEnd::Exited(_) => Crash::OtherExit,
            ProcessEnd::Signaled { signal, .. } => match signal {
                Signal::SIGSEGV => Crash::Segv,
                Signal::SIGBUS => Crash::Bus,
                Signal::SIGABRT => Crash::Abort,
                Signal::SIGILL => Crash::Ill,
                Signal::SIGFPE => Crash::Fpe,
                Signal::SIGKILL => Crash::Kill,
                _ => Crash::OtherSignal,
            },
        })
    }
}

// Every cause has a label and a counter: the last variant is the table's last entry.
const _: () = assert!(Crash::OtherExit as usize + 1 == CRASH_LABELS.len());

/// Room for rate-limited warnings (see [`warn_gate`]); an application picks indexes below it.
pub const GATES: usize = 4;

/// Child slots: one per possible child.
pub const SLOTS: usize = CHILDREN_CAP;

/// Room for the daemon's counters and the application's.
const MAX_COUNTERS: usize = 64;

#[repr(C)]
struct Slot {
    pid: AtomicI32,
    busy: AtomicU32,
    requests: AtomicU64,
}

/// One rate-limited warning: when it may next be logged (CLOCK_MONOTONIC milliseconds, the
/// same clock in every process) and how many were held back since it last was.
#[repr(C)]
struct Gate {
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

#[repr(C)]
struct Board {
    requests: AtomicU64,
    counters: [AtomicU64; MAX_COUNTERS],
    crashes: [AtomicU64; CRASH_LABELS.len()],
    gates: [Gate; GATES],
    slots: [Slot; SLOTS],
}

struct Installed {
    board: &'static Board,
    app: &'static [Counter],
}

static BOARD: OnceLock<Installed> = OnceLock::new();
/// This child's slot (a child learns it right after fork); `usize::MAX` in the master.
static MY_SLOT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Maps the shared board, once, in the master before any fork. Later calls do nothing.
pub fn install(app: &'static [Counter]) -> io::Result<()> {
    if BOARD.get().is_some() {
        return Ok(());
    }
    if DAEMON_COUNTERS.len() + app.len() > MAX_COUNTERS {
        return Err(io::Error::other("too many counters for the scoreboard"));
    }
    let len = NonZeroUsize::new(std::mem::size_of::<Board>())
        .ok_or_else(|| io::Error::other("the scoreboard has no size"))?;
    // SAFETY: a fresh anonymous mapping aliases nothing; zeroed memory is a valid `Board`
    // (every field is an atomic integer), and it is never unmapped, so `&'static` is sound.
    let board: &'static Board = unsafe {
        let ptr = mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )?;
        &*ptr.as_ptr().cast::<Board>()
    };
    let _ = BOARD.set(Installed { board, app });
    Ok(())
}

fn board() -> Option<&'static Installed> {
    BOARD.get()
}

/// Counts one hit of a limit of the process template.
pub fn hit(limit: Limit) {
    if let Some(c) = board().and_then(|b| b.board.counters.get(limit as usize)) {
        c.fetch_add(1, Relaxed);
    }
}

/// Counts one hit of the application's counter `i` (its index in the list it installed).
pub fn app_hit(i: usize) {
    // Only a counter the application named: `install` made room for each of them.
    let counter = board()
        .filter(|b| i < b.app.len())
        .and_then(|b| b.board.counters.get(DAEMON_COUNTERS.len() + i));
    if let Some(c) = counter {
        c.fetch_add(1, Relaxed);
    }
}

/// Master: counts one child that ended for `cause`.
pub(crate) fn crashed(cause: Crash) {
    if let Some(c) = board().and_then(|b| b.board.crashes.get(cause as usize)) {
        c.fetch_add(1, Relaxed);
    }
}

/// Gates for processes with no board (tests, tools): per process instead of shared.
static LOCAL_GATES: [Gate; GATES] = [const {
    Gate {
        next_ms: AtomicU64::new(0),
        suppressed: AtomicU64::new(0),
    }
}; GATES];

/// Rate-limits a warning that every child could repeat many times a second (a full disk under
/// the access log): returns `Some(held_back)` at most once per `every` across all the
/// processes that share the board, with the number of warnings held back since the last one;
/// `None` means stay quiet (the warning is counted as held back). `gate` is an index below
/// [`GATES`] the caller owns; out of range is never quiet.
pub fn warn_gate(gate: usize, every: Duration) -> Option<u64> {
    let gates = board().map_or(&LOCAL_GATES, |b| &b.board.gates);
    let Some(g) = gates.get(gate) else {
        return Some(0);
    };
    let now = monotonic_ms();
    let next = g.next_ms.load(Relaxed);
    let due = now >= next
        && g.next_ms
            .compare_exchange(next, now + every.as_millis() as u64, Relaxed, Relaxed)
            .is_ok();
    if due {
        Some(g.suppressed.swap(0, Relaxed))
    } else {
        g.suppressed.fetch_add(1, Relaxed);
        None
    }
}

/// Milliseconds of CLOCK_MONOTONIC: unlike `Instant`, comparable between processes.
fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives on this stack
    // frame; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Master: whether the child in `slot` was serving a connection or had served one: read
/// before [`release`], to tell a crash caused by a request from one caused by the
/// environment.
pub(crate) fn slot_served(slot: usize) -> bool {
    board()
        .and_then(|b| b.board.slots.get(slot))
        .is_some_and(|s| s.busy.load(Relaxed) != 0 || s.requests.load(Relaxed) != 0)
}

/// Master, before the fork: clears `slot` for the child about to get it. Not after: the
/// child may accept, mark itself busy and even crash before the master runs again, and
/// clearing then would erase what tells the master the crash was a request's.
pub(crate) fn prepare(slot: usize) {
    if let Some(s) = board().and_then(|b| b.board.slots.get(slot)) {
        s.busy.store(0, Relaxed);
        s.requests.store(0, Relaxed);
    }
}

/// Master, after the fork: marks `slot` as held by `pid`.
pub(crate) fn claim(slot: usize, pid: i32) {
    if let Some(s) = board().and_then(|b| b.board.slots.get(slot)) {
        s.pid.store(pid, Relaxed);
    }
}

/// Master: frees `slot` after its child was reaped.
pub(crate) fn release(slot: usize) {
    if let Some(s) = board().and_then(|b| b.board.slots.get(slot)) {
        s.pid.store(0, Relaxed);
        s.busy.store(0, Relaxed);
    }
}

/// Child: remembers which slot is its own.
pub(crate) fn enter_slot(slot: usize) {
    MY_SLOT.store(slot, Relaxed);
}

fn my_slot() -> Option<&'static Slot> {
    board().and_then(|b| b.board.slots.get(MY_SLOT.load(Relaxed)))
}

/// Child: a connection is being served (`true`) or the child waits for one (`false`).
pub(crate) fn set_busy(busy: bool) {
    if let Some(s) = my_slot() {
        s.busy.store(busy as u32, Relaxed);
    }
}

/// Child: `n` more requests were answered.
pub(crate) fn served(n: u64) {
    if let Some(b) = board() {
        b.board.requests.fetch_add(n, Relaxed);
    }
    if let Some(s) = my_slot() {
        s.requests.fetch_add(n, Relaxed);
    }
}

/// The whole board in the Prometheus text format, every name prefixed with `prefix`.
pub fn render(prefix: &str, generation: u64) -> String {
    let mut out = String::new();
    let Some(b) = board() else { return out };
    let _ = writeln!(
        out,
        "# HELP {prefix}_limit_hits_total Times each limit was hit."
    );
    let _ = writeln!(out, "# TYPE {prefix}_limit_hits_total counter");
    // `install` refused more counters than the board holds, so the zip drops none.
    let named = DAEMON_COUNTERS.iter().chain(b.app.iter());
    for (c, v) in named.zip(&b.board.counters) {
        let v = v.load(Relaxed);
        let _ = writeln!(out, "{prefix}_limit_hits_total{{limit=\"{}\"}} {v}", c.name);
    }
    let _ = writeln!(
        out,
        "# HELP {prefix}_requests_total Requests answered by all children."
    );
    let _ = writeln!(out, "# TYPE {prefix}_requests_total counter");
    let _ = writeln!(
        out,
        "{prefix}_requests_total {}",
        b.board.requests.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP {prefix}_child_crashes_total Children that ended without being asked to, by cause."
    );
    let _ = writeln!(out, "# TYPE {prefix}_child_crashes_total counter");
    for (label, n) in CRASH_LABELS.iter().zip(&b.board.crashes) {
        let v = n.load(Relaxed);
        let _ = writeln!(out, "{prefix}_child_crashes_total{{cause=\"{label}\"}} {v}");
    }
    let (mut busy, mut idle) = (0, 0);
    for s in b.board.slots.iter().filter(|s| s.pid.load(Relaxed) != 0) {
        if s.busy.load(Relaxed) != 0 {
            busy += 1;
        } else {
            idle += 1;
        }
    }
    let _ = writeln!(out, "# HELP {prefix}_children Children by state.");
    let _ = writeln!(out, "# TYPE {prefix}_children gauge");
    let _ = writeln!(out, "{prefix}_children{{state=\"busy\"}} {busy}");
    let _ = writeln!(out, "{prefix}_children{{state=\"idle\"}} {idle}");
    let _ = writeln!(
        out,
        "# HELP {prefix}_generation Configuration generation (reloads so far)."
    );
    let _ = writeln!(out, "# TYPE {prefix}_generation gauge");
    let _ = writeln!(out, "{prefix}_generation {generation}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every test installs the same board: the first one to run maps it.
    static APP: [Counter; 1] = [Counter {
        name: "header_timeout",
        help: "h",
    }];

    #[test]
    fn counts_and_renders() {
        install(&APP).unwrap();
        hit(Limit::ForkFailed);
        app_hit(0);
        app_hit(7); // out of range: ignored, not a panic
        prepare(3);
        claim(3, 42);
        let text = render("forkd", 2);
        assert!(
            text.contains("forkd_limit_hits_total{limit=\"fork_failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("forkd_limit_hits_total{limit=\"header_timeout\"} 1"),
            "{text}"
        );
        assert!(text.contains("forkd_children{state=\"idle\"} 1"), "{text}");
        assert!(text.contains("forkd_generation 2"), "{text}");
        release(3);
        assert!(render("forkd", 2).contains("forkd_children{state=\"idle\"} 0"));
        crashed(Crash::Panic);
        crashed(Crash::Segv);
        let text = render("forkd", 2);
        assert!(
            text.contains("forkd_child_crashes_total{cause=\"panic\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("forkd_child_crashes_total{cause=\"SIGSEGV\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("forkd_child_crashes_total{cause=\"exit 71\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn crash_causes() {
        let sig = |signal| ProcessEnd::Signaled {
            signal,
            core_dumped: false,
        };
        assert_eq!(Crash::of(ProcessEnd::Exited(0)), None);
        assert_eq!(Crash::of(ProcessEnd::Exited(70)), Some(Crash::Panic));
        assert_eq!(Crash::of(ProcessEnd::Exited(71)), Some(Crash::Setup));
        assert_eq!(Crash::of(ProcessEnd::Exited(1)), Some(Crash::OtherExit));
        assert_eq!(Crash::of(sig(Signal::SIGSEGV)), Some(Crash::Segv));
        assert_eq!(Crash::of(sig(Signal::SIGABRT)), Some(Crash::Abort));
        assert_eq!(CRASH_LABELS[Crash::Abort as usize], "SIGABRT");
        assert_eq!(Crash::of(sig(Signal::SIGTERM)), Some(Crash::OtherSignal));
        assert_eq!(CRASH_LABELS[Crash::Setup as usize], "exit 71");
    }

    #[test]
    fn warnings_pass_once_per_interval_and_count_the_rest() {
        install(&APP).unwrap();
        // Gate 3 is used by no other test in this process.
        let every = Duration::from_millis(300);
        assert_eq!(warn_gate(3, every), Some(0));
        assert_eq!(warn_gate(3, every), None);
        assert_eq!(warn_gate(3, every), None);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(warn_gate(3, every), Some(2));
        assert_eq!(
            warn_gate(GATES, every),
            Some(0),
            "out of range is never quiet"
        );
    }
}
