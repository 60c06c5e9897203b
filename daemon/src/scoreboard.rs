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
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
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
    /// A connection was refused because its client address already held
    /// `Settings::max_conns_per_client` connections.
    PerClient,
    /// An event worker's connection table was full, so it stopped taking connections and
    /// left them queued for the other workers (one count per pause).
    WorkerConnections,
    /// A connection to the master's status or agent port was closed before its answer to
    /// keep the master's side connections within their cap (see `side`).
    SideConnections,
}

const DAEMON_COUNTERS: [Counter; 7] = [
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
    Counter {
        name: "per_client",
        help: "connections refused because their client address held too many already",
    },
    Counter {
        name: "worker_connections",
        help: "times an event worker's connection table was full and it paused accepting",
    },
    Counter {
        name: "side_connections",
        help: "status or agent connections closed unanswered to keep the master's side connections within their cap",
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

/// Entries of the per-client table: four per child slot. Every counted connection is held by
/// a child and a child holds one, so at most a quarter of the entries is ever in use, and a
/// probe window of [`PROBE`] entries practically always has a free one (all 16 taken at a
/// quarter load: about 1 in 4 billion). 32 KiB of shared memory. An event pool holds more
/// connections than it has slots, but entries count addresses, not connections: a pool whose
/// clients fill half the table still finds a free entry in all but 1 in 65,000 windows, and a
/// connection that finds none is let in uncounted, never refused for the table's sake.
const CLIENT_ENTRIES: usize = 4 * SLOTS;
/// Entries an address may live in, from its hash on: a lookup reads at most these (two cache
/// lines), whatever the table holds.
const PROBE: usize = 16;
/// An entry is one word, `fingerprint << COUNT_BITS | count`, so that taking and giving back a
/// connection is one compare-and-swap, with no lock and nothing a dying child can leave
/// half-written. 0: never used. Count 0: free, whatever fingerprint it still carries.
const COUNT_BITS: u32 = 16;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

#[repr(C)]
struct Slot {
    pid: AtomicI32,
    /// Connections this child serves: 0 or 1 for a prefork worker or a connection's child,
    /// up to its table's size for an event worker.
    busy: AtomicU32,
    requests: AtomicU64,
    /// Bumped by the child per request answered ([`progress`]): what the master's watchdog
    /// reads to tell a worker serving a long keep-alive connection from a stuck one.
    progress: AtomicU64,
    /// The entry of [`Board::clients`] this child's connection is counted in, plus one (0:
    /// none), so the master can release it when the child dies in the middle of it.
    client: AtomicU32,
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
    /// Connections served by all children (the sum of the slots' `busy`): kept beside the
    /// slots so that reading the occupancy is two loads, not a scan (see [`occupancy`]).
    busy: AtomicU32,
    /// The mode's bound on connections, set by the master at start and on reload.
    capacity: AtomicU32,
    /// Connections one child may hold (1, or an event worker's table): above 1 the metrics
    /// show each child's count.
    per_child: AtomicU32,
    /// Keys the client fingerprints of [`Board::clients`], so that nobody outside can aim at
    /// a collision; drawn once by the master before the first fork.
    seed: AtomicU64,
    /// Open connections per client address (see [`admit`]).
    clients: [AtomicU64; CLIENT_ENTRIES],
    /// The pool's last look at its listeners' accept queues (see [`shared_look`]): CLOCK_MONOTONIC
    /// milliseconds shifted left by one, and whether a connection was waiting in the low bit;
    /// 0 before the first.
    queue_look: AtomicU64,
}

struct Installed {
    board: &'static Board,
    app: &'static [Counter],
}

static BOARD: OnceLock<Installed> = OnceLock::new();
// This child's slot (a child learns it right after fork; `usize::MAX` in the master) lives in
// `fork::CHILD`, beside the other static a child writes.
use crate::fork::CHILD;

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
    board.seed.store(random_seed(), Relaxed);
    let _ = BOARD.set(Installed { board, app });
    Ok(())
}

/// 64 bits that differ from run to run: the kernel's random bytes, or the clock when they
/// cannot be read (the seed only makes collisions hard to aim at; it guards no secret).
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if read {
        u64::from_ne_bytes(bytes)
    } else {
        monotonic_ms() ^ u64::from(std::process::id()).rotate_left(32)
    }
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

/// Whether a connection waits in the pool's accept queues, as the last look by any child of
/// the pool found it if that was within `recheck_ms` milliseconds; otherwise this child looks
/// (`look`) and the pool shares its answer. One look a millisecond for the whole pool, not
/// one per child: with every worker busy, each asks after every response. `None` when no
/// board is mapped (then there is no pool to be full).
pub(crate) fn shared_look(recheck_ms: u64, look: impl FnOnce() -> bool) -> Option<bool> {
    let b = board()?;
    let cell = &b.board.queue_look;
    let now = monotonic_ms();
    let last = cell.load(Relaxed);
    let (at, waiting) = (last >> 1, last & 1 == 1);
    if last != 0 && now.saturating_sub(at) < recheck_ms {
        return Some(waiting);
    }
    // The child that moves the time on looks; one that lost the race takes the last answer
    // rather than looking too.
    if cell
        .compare_exchange(last, (now << 1) | (last & 1), Relaxed, Relaxed)
        .is_err()
    {
        return Some(waiting);
    }
    let waiting = look();
    cell.store((now << 1) | u64::from(waiting), Relaxed);
    Some(waiting)
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
    if let Some(b) = board() {
        if let Some(s) = b.board.slots.get(slot) {
            clear_busy(b.board, s);
            s.requests.store(0, Relaxed);
            leave_client(b.board, s);
        }
    }
}

/// Master, after the fork: marks `slot` as held by `pid`.
pub(crate) fn claim(slot: usize, pid: i32) {
    if let Some(s) = board().and_then(|b| b.board.slots.get(slot)) {
        s.pid.store(pid, Relaxed);
    }
}

/// Master: frees `slot` after its child was reaped.
/// Master: frees `slot` after its child was reaped: a child that died while serving leaves
/// its busy mark and its client count behind, and both are taken back here.
pub(crate) fn release(slot: usize) {
    if let Some(b) = board() {
        if let Some(s) = b.board.slots.get(slot) {
            s.pid.store(0, Relaxed);
            clear_busy(b.board, s);
            leave_client(b.board, s);
        }
    }
}

fn clear_busy(b: &Board, s: &Slot) {
    let held = s.busy.swap(0, Relaxed);
    if held != 0 {
        b.busy.fetch_sub(held, Relaxed);
    }
}

/// Master: the mode's bound on connections (children, or an event pool's tables), against
/// which [`occupancy`] is measured.
pub(crate) fn set_capacity(children: usize) {
    if let Some(b) = board() {
        b.board
            .capacity
            .store(u32::try_from(children).unwrap_or(u32::MAX), Relaxed);
    }
}

/// Master: how many connections one child may hold (an event worker's table; 1 otherwise).
pub(crate) fn set_per_child(connections: usize) {
    if let Some(b) = board() {
        b.board
            .per_child
            .store(u32::try_from(connections).unwrap_or(u32::MAX), Relaxed);
    }
}

/// How full the pool is: connections being served, and the most there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Occupancy {
    pub busy: u32,
    pub capacity: u32,
}

/// The pool's occupancy as the scoreboard has it now: two relaxed loads, no system call, so a
/// child may ask before every wait. Zero capacity when no board is mapped (tests, tools).
pub fn occupancy() -> Occupancy {
    board().map_or(Occupancy::default(), |b| Occupancy {
        busy: b.board.busy.load(Relaxed),
        capacity: b.board.capacity.load(Relaxed),
    })
}

/// Child: remembers which slot is its own.
pub(crate) fn enter_slot(slot: usize) {
    CHILD.slot.store(slot, Relaxed);
}

fn my_slot() -> Option<&'static Slot> {
    board().and_then(|b| b.board.slots.get(CHILD.slot.load(Relaxed)))
}

/// Child: a connection is being served (`true`) or the child waits for one (`false`).
pub(crate) fn set_busy(busy: bool) {
    set_load(u32::from(busy));
}

/// Child: this child now serves `connections` connections (an event worker's open
/// connections; 0 or 1 otherwise).
pub(crate) fn set_load(connections: u32) {
    let (Some(b), Some(s)) = (board(), my_slot()) else {
        return;
    };
    // Only the change moves the total, so it stays the sum of the slots.
    let old = s.busy.swap(connections, Relaxed);
    if connections > old {
        b.board.busy.fetch_add(connections - old, Relaxed);
    } else if old > connections {
        b.board.busy.fetch_sub(old - connections, Relaxed);
    }
}

/// Child: one more request answered on the connection in hand. The application calls it per
/// request (connection ends are counted by the template itself), so the master's watchdog
/// sees a worker on a long keep-alive connection move.
pub fn progress() {
    if let Some(s) = my_slot() {
        s.progress.fetch_add(1, Relaxed);
    }
}

/// Master: whether the child in `slot` is serving a connection, and its progress count.
pub(crate) fn slot_activity(slot: usize) -> (bool, u64) {
    board()
        .and_then(|b| b.board.slots.get(slot))
        .map_or((false, 0), |s| {
            (s.busy.load(Relaxed) != 0, s.progress.load(Relaxed))
        })
}

/// Child: `n` more requests were answered.
pub(crate) fn served(n: u64) {
    if let Some(b) = board() {
        b.board.requests.fetch_add(n, Relaxed);
    }
    if let Some(s) = my_slot() {
        s.requests.fetch_add(n, Relaxed);
        s.progress.fetch_add(1, Relaxed);
    }
}

/// The key a client is counted under: an IPv4 address whole; an IPv6 address by its /64
/// prefix, since one host is usually given a whole /64 and could otherwise spread its
/// connections over 2^64 addresses. An IPv4-mapped IPv6 address is its IPv4 address. IPv4 keys
/// carry a prefix in `ff00::/8` (multicast, never the source of a TCP connection), so no IPv6
/// key can equal one.
pub fn client_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => 0xff00_0000_0000_0000 | u64::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
    }
}

/// splitmix64's finaliser: every input bit moves about half the output bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d1_49bb_133d_11eb);
    z ^ (z >> 31)
}

/// Where a key's probe window starts and the fingerprint its entry carries (48 bits, never
/// 0), from independent bits of one keyed hash. Two addresses whose fingerprints collide share
/// a count (each may be refused a little early): with 48 bits and a seed nobody outside knows,
/// neither chance nor an attacker makes that happen.
fn locate(key: u64, seed: u64, entries: usize) -> (usize, u64) {
    let h = mix(key ^ seed);
    let start = (h as usize) % entries.max(1);
    (start, (h >> COUNT_BITS).max(1))
}

/// What [`acquire`] did with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Counted in this entry.
    Counted(usize),
    /// The address already holds `limit` connections.
    Over,
    /// No entry of the window was free: let it in uncounted rather than refuse it for the
    /// table's sake (see [`CLIENT_ENTRIES`] for why this does not happen).
    Untracked,
}

/// Counts one more connection of the address with fingerprint `fp`, unless it holds `limit`.
/// Its live entry (count above 0) in the window is incremented; without one, the first free
/// entry is claimed. Every change is a compare-and-swap of the whole entry; one that loses
/// to another process looks again.
///
/// The race: two processes that accept the first connections of an address at the same
/// instant may both find no live entry and claim two, after which that address is counted in
/// two entries, each checked against `limit`. It is bounded: at most one extra entry per
/// process accepting at that instant (prefork workers; a fork-mode master is alone, so there
/// it cannot happen), later connections all join the first entry of the window, and the
/// extra one frees itself when its connections end.
fn acquire(table: &[AtomicU64], start: usize, fp: u64, limit: u64) -> Admit {
    let limit = limit.min(COUNT_MASK);
    let n = table.len();
    let window = || {
        (0..PROBE.min(n))
            .map(move |i| (start + i) % n)
            .filter_map(|i| table.get(i).map(|e| (i, e)))
    };
    loop {
        let live = window().find_map(|(i, e)| {
            let w = e.load(Relaxed);
            (w >> COUNT_BITS == fp && w & COUNT_MASK > 0).then_some((i, e, w))
        });
        if let Some((i, e, w)) = live {
            if w & COUNT_MASK >= limit {
                return Admit::Over;
            }
            if e.compare_exchange(w, w + 1, Relaxed, Relaxed).is_ok() {
                return Admit::Counted(i);
            }
            continue;
        }
        let free = window().find_map(|(i, e)| {
            let w = e.load(Relaxed);
            (w & COUNT_MASK == 0).then_some((i, e, w))
        });
        let Some((i, e, w)) = free else {
            return Admit::Untracked;
        };
        if e.compare_exchange(w, fp << COUNT_BITS | 1, Relaxed, Relaxed)
            .is_ok()
        {
            return Admit::Counted(i);
        }
    }
}

/// Gives back one connection of entry `e`; never below zero, so a release that comes twice
/// (the master after a child that had already released) cannot take another's count.
fn give_back(e: &AtomicU64) {
    let _ = e.fetch_update(Relaxed, Relaxed, |w| (w & COUNT_MASK > 0).then_some(w - 1));
}

/// Releases the client entry `s` is counted in, if any. The slot is cleared first: a child
/// killed between the two steps leaks one count until its address's entry is reused, where
/// the other order could take one from another connection of that address.
fn leave_client(b: &Board, s: &Slot) {
    let i = s.client.swap(0, Relaxed) as usize;
    if let Some(e) = i.checked_sub(1).and_then(|i| b.clients.get(i)) {
        give_back(e);
    }
}

/// Counts one connection from `ip` against the child in `slot`, unless that address already
/// holds `limit` connections (0: no limit): then the hit is counted and `false` says to
/// refuse it. The slot remembers the entry, so [`release`] gives it back if the child dies.
fn admit_slot(slot: usize, ip: IpAddr, limit: usize) -> bool {
    if limit == 0 {
        return true;
    }
    let Some(b) = board().map(|b| b.board) else {
        return true;
    };
    let Some(s) = b.slots.get(slot) else {
        return true;
    };
    leave_client(b, s);
    let (start, fp) = locate(client_key(ip), b.seed.load(Relaxed), b.clients.len());
    match acquire(&b.clients, start, fp, limit as u64) {
        Admit::Counted(i) => {
            s.client.store(i as u32 + 1, Relaxed);
            true
        }
        Admit::Untracked => true,
        Admit::Over => {
            hit(Limit::PerClient);
            false
        }
    }
}

/// Master (fork mode), before forking the child of `slot`: see [`admit_slot`]. The count is
/// given back when the child is reaped.
pub(crate) fn admit(slot: usize, ip: IpAddr, limit: usize) -> bool {
    admit_slot(slot, ip, limit)
}

/// Child (prefork), after `accept`: see [`admit_slot`]; [`leave`] gives the count back.
pub(crate) fn admit_here(ip: IpAddr, limit: usize) -> bool {
    admit_slot(CHILD.slot.load(Relaxed), ip, limit)
}

/// Child: the connection [`admit_here`] (or the master's [`admit`]) counted has ended; called
/// before the connection is closed (see `worker::serve_one`). A second call does nothing.
pub(crate) fn leave() {
    if let (Some(b), Some(s)) = (board(), my_slot()) {
        leave_client(b.board, s);
    }
}

/// Event mode: a worker holds many connections of many clients, so the one entry a slot
/// remembers ([`Slot`]'s `client`) cannot say what a dead worker held. Each event worker gets
/// a table of its own: `counts[i]` is how many of its connections are counted in the client
/// entry `i`. It is a shared mapping the master makes before the fork and keeps until the
/// reap, when it gives every count still held back ([`Held::give_back_all`]), so a worker that
/// dies with a thousand connections leaves no client refused for connections it no longer has.
/// 16 KiB of address space per worker; only the pages of entries in use are ever touched.
pub(crate) struct Held {
    counts: NonNull<AtomicU32>,
}

impl Held {
    const LEN: usize = CLIENT_ENTRIES;

    /// Master, before forking an event worker.
    pub(crate) fn map() -> io::Result<Held> {
        let len = NonZeroUsize::new(Self::LEN * std::mem::size_of::<AtomicU32>())
            .ok_or_else(|| io::Error::other("an empty table"))?;
        // SAFETY: a fresh anonymous mapping aliases nothing, and zeroed memory is a valid
        // array of atomics; `Drop` unmaps it, and only the owner (the master) drops it.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )?
        };
        Ok(Held { counts: ptr.cast() })
    }

    fn counts(&self) -> &[AtomicU32] {
        // SAFETY: `map` made `LEN` atomics here, mapped until `self` is dropped.
        unsafe { std::slice::from_raw_parts(self.counts.as_ptr(), Self::LEN) }
    }

    /// Master, after the reap: gives back every count the worker still held.
    pub(crate) fn give_back_all(&self) {
        let Some(b) = board() else { return };
        for (held, entry) in self.counts().iter().zip(&b.board.clients) {
            let n = held.swap(0, Relaxed);
            if n > 0 {
                let n = u64::from(n);
                let _ = entry.fetch_update(Relaxed, Relaxed, |w| {
                    let count = w & COUNT_MASK;
                    (count > 0).then(|| w - count.min(n))
                });
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let len = Self::LEN * std::mem::size_of::<AtomicU32>();
        // SAFETY: the mapping was made by `map` with this length and nothing borrows it past
        // `self` in this process (a child adopts it with `enter_held` but never drops it).
        let _ = unsafe { munmap(self.counts.cast(), len) };
    }
}

/// This event worker's [`Held`] table; null in the master and in other children.
static MY_HELD: AtomicPtr<AtomicU32> = AtomicPtr::new(std::ptr::null_mut());

/// Child (event worker): adopts the table the master made for it before the fork.
pub(crate) fn enter_held(held: &Held) {
    MY_HELD.store(held.counts.as_ptr(), Relaxed);
}

fn my_held() -> Option<&'static [AtomicU32]> {
    let ptr = NonNull::new(MY_HELD.load(Relaxed))?;
    // SAFETY: set by `enter_held` from a `Held` that this child never drops (its body ends
    // in `_exit` without unwinding into the master's frames that own it), so the mapping of
    // `Held::LEN` atomics stays for the rest of the process.
    Some(unsafe { std::slice::from_raw_parts(ptr.as_ptr(), Held::LEN) })
}

/// The address was over its limit: the connection is to be refused (the hit is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Over;

/// Event worker, after `accept`: counts one connection of `ip` against this worker, unless
/// the address holds `limit` connections across the pool already (0: no limit). `Some(entry)`
/// is to be given back with [`leave_conn`] when the connection ends; `None`: nothing was
/// counted (no limit, no board, or a full probe window, see [`Admit::Untracked`]).
pub(crate) fn admit_conn(ip: IpAddr, limit: usize) -> Result<Option<u32>, Over> {
    if limit == 0 {
        return Ok(None);
    }
    let Some(b) = board().map(|b| b.board) else {
        return Ok(None);
    };
    let (start, fp) = locate(client_key(ip), b.seed.load(Relaxed), b.clients.len());
    match acquire(&b.clients, start, fp, limit as u64) {
        Admit::Counted(i) => {
            // Counted first, recorded second: a worker killed in between leaks one count
            // rather than the master taking one from another connection.
            if let Some(h) = my_held().and_then(|h| h.get(i)) {
                h.fetch_add(1, Relaxed);
            }
            Ok(u32::try_from(i).ok())
        }
        Admit::Untracked => Ok(None),
        Admit::Over => {
            hit(Limit::PerClient);
            Err(Over)
        }
    }
}

/// Event worker: the connection [`admit_conn`] counted in `entry` has ended.
pub(crate) fn leave_conn(entry: u32) {
    let Some(b) = board() else { return };
    let i = entry as usize;
    // The record first, as `leave_client` clears the slot first (see there).
    if let Some(h) = my_held().and_then(|h| h.get(i)) {
        let _ = h.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }
    if let Some(e) = b.board.clients.get(i) {
        give_back(e);
    }
}

/// The board's numbers at one instant, for the master's side listeners (the status page and
/// the load balancer's agent): a scan of the slots and the counters, no system call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    /// Every limit, the template's then the application's: name, help, hits.
    pub limits: Vec<(&'static str, &'static str, u64)>,
    /// Children that ended unasked, by cause.
    pub crashes: Vec<(&'static str, u64)>,
    /// Live children serving at least one connection, and those serving none.
    pub children_busy: u32,
    pub children_idle: u32,
    /// Connections being served by all children, and the mode's bound on them.
    pub connections: u32,
    pub capacity: u32,
}

/// The board now; `None` before it is installed.
pub fn totals() -> Option<Totals> {
    let b = board()?;
    let named = DAEMON_COUNTERS.iter().chain(b.app.iter());
    let limits = named
        .zip(&b.board.counters)
        .map(|(c, v)| (c.name, c.help, v.load(Relaxed)))
        .collect();
    let crashes = CRASH_LABELS
        .iter()
        .zip(&b.board.crashes)
        .map(|(l, v)| (*l, v.load(Relaxed)))
        .collect();
    let mut t = Totals {
        requests: b.board.requests.load(Relaxed),
        limits,
        crashes,
        capacity: b.board.capacity.load(Relaxed),
        ..Totals::default()
    };
    for s in b.board.slots.iter().filter(|s| s.pid.load(Relaxed) != 0) {
        let n = s.busy.load(Relaxed);
        t.connections = t.connections.saturating_add(n);
        if n != 0 {
            t.children_busy += 1;
        } else {
            t.children_idle += 1;
        }
    }
    Some(t)
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
    let live = || b.board.slots.iter().enumerate();
    let live = live().filter(|(_, s)| s.pid.load(Relaxed) != 0);
    let _ = writeln!(
        out,
        "# HELP {prefix}_connections Connections being served by all children."
    );
    let _ = writeln!(out, "# TYPE {prefix}_connections gauge");
    let total: u64 = live
        .clone()
        .map(|(_, s)| u64::from(s.busy.load(Relaxed)))
        .sum();
    let _ = writeln!(out, "{prefix}_connections {total}");
    if b.board.per_child.load(Relaxed) > 1 {
        let _ = writeln!(
            out,
            "# HELP {prefix}_worker_connections Connections each event worker serves, by scoreboard slot."
        );
        let _ = writeln!(out, "# TYPE {prefix}_worker_connections gauge");
        for (i, s) in live {
            let n = s.busy.load(Relaxed);
            let _ = writeln!(out, "{prefix}_worker_connections{{slot=\"{i}\"}} {n}");
        }
    }
    let (mut addresses, mut most) = (0, 0);
    for w in b.board.clients.iter().map(|e| e.load(Relaxed) & COUNT_MASK) {
        addresses += u64::from(w > 0);
        most = most.max(w);
    }
    let _ = writeln!(
        out,
        "# HELP {prefix}_client_addresses Client addresses (IPv6: /64 prefixes) with connections counted against the per-client limit."
    );
    let _ = writeln!(out, "# TYPE {prefix}_client_addresses gauge");
    let _ = writeln!(out, "{prefix}_client_addresses {addresses}");
    let _ = writeln!(
        out,
        "# HELP {prefix}_client_connections_max Connections of the client address that holds the most."
    );
    let _ = writeln!(out, "# TYPE {prefix}_client_connections_max gauge");
    let _ = writeln!(out, "{prefix}_client_connections_max {most}");
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
    fn client_keys_are_ipv4_addresses_and_ipv6_prefixes() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("10.0.0.1"), 0xff00_0000_0a00_0001);
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        // One /64, one client; the next /64 is another.
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        // Loopback's /64 is all zeroes: a key like any other (0 is not "empty").
        assert_eq!(key("::1"), 0);
        assert_ne!(key("::1"), key("0.0.0.0"));
        let (start, fp) = locate(key("::1"), 7, CLIENT_ENTRIES);
        assert!(start < CLIENT_ENTRIES && fp > 0 && fp < 1 << 48);
        assert_ne!(
            locate(key("::1"), 7, CLIENT_ENTRIES),
            locate(key("::1"), 8, CLIENT_ENTRIES)
        );
    }

    fn table(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    fn count(t: &[AtomicU64], i: usize) -> u64 {
        t[i].load(Relaxed) & COUNT_MASK
    }

    #[test]
    fn an_address_is_counted_up_to_its_limit_and_released() {
        let t = table(64);
        let a = |t: &[AtomicU64]| acquire(t, 10, 0xaaaa, 2);
        assert_eq!(a(&t), Admit::Counted(10));
        assert_eq!(a(&t), Admit::Counted(10));
        assert_eq!(a(&t), Admit::Over);
        // Another address next to it: its own entry, its own count.
        assert_eq!(acquire(&t, 10, 0xbbbb, 2), Admit::Counted(11));
        give_back(&t[10]);
        assert_eq!(count(&t, 10), 1);
        assert_eq!(a(&t), Admit::Counted(10));
        give_back(&t[10]);
        give_back(&t[10]);
        give_back(&t[10]); // once too often: stays at zero
        assert_eq!(count(&t, 10), 0);
        // A free entry is reused by whoever comes first; the live one is found past it.
        assert_eq!(acquire(&t, 10, 0xcccc, 2), Admit::Counted(10));
        assert_eq!(acquire(&t, 10, 0xbbbb, 2), Admit::Counted(11));
        assert_eq!(count(&t, 11), 2);
        // The window wraps around the end of the table.
        assert_eq!(acquire(&t, 63, 0xdddd, 2), Admit::Counted(63));
        assert_eq!(acquire(&t, 63, 0xeeee, 2), Admit::Counted(0));
    }

    #[test]
    fn a_full_window_lets_connections_in_uncounted() {
        let t = table(PROBE);
        for fp in 1..=PROBE as u64 {
            assert!(matches!(acquire(&t, 0, fp, 1), Admit::Counted(_)));
        }
        assert_eq!(acquire(&t, 0, 999, 1), Admit::Untracked);
        assert_eq!(acquire(&t, 0, 3, 1), Admit::Over);
    }

    /// Processes taking and giving back connections of a few addresses at once: no count is
    /// lost or made up, and none ever passes the limit by more than the race allows.
    #[test]
    fn concurrent_takers_leave_the_table_empty() {
        let t = std::sync::Arc::new(table(64));
        let threads: Vec<_> = (0..4u64)
            .map(|k| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let fp = 1 + (i + k) % 3;
                        if let Admit::Counted(e) = acquire(&t, 5, fp, 3) {
                            assert!(count(&t, e) <= 3);
                            give_back(&t[e]);
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert!(t.iter().all(|e| e.load(Relaxed) & COUNT_MASK == 0));
    }

    #[test]
    fn per_client_limit_on_the_board_is_counted_and_freed_with_the_slot() {
        install(&APP).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        // Slots 10..13 are used by no other test in this process.
        for slot in 10..13 {
            prepare(slot);
        }
        let before = board().unwrap().board.counters[Limit::PerClient as usize].load(Relaxed);
        assert!(admit(10, ip, 2));
        assert!(admit(11, ip, 2));
        assert!(!admit(12, ip, 2));
        assert!(admit(12, ip, 0), "0 is no limit");
        let after = board().unwrap().board.counters[Limit::PerClient as usize].load(Relaxed);
        assert_eq!(after, before + 1);
        assert!(render("forkd", 0).contains("forkd_client_connections_max 2"));
        // The master frees a dead child's count with its slot.
        release(10);
        assert!(admit(12, ip, 2));
        release(11);
        release(12);
        assert!(render("forkd", 0).contains("forkd_client_addresses 0"));
    }

    #[test]
    fn busy_children_are_counted_as_they_change() {
        install(&APP).unwrap();
        set_capacity(8);
        let busy = || occupancy().busy;
        let base = busy();
        // The child side, with slot 20 as its own (this test's thread is the only user).
        prepare(20);
        CHILD.slot.store(20, Relaxed);
        set_busy(true);
        set_busy(true);
        assert_eq!(busy(), base + 1);
        set_busy(false);
        assert_eq!(busy(), base);
        set_busy(true);
        // An event worker's connections: the slot holds a count, the total follows it.
        set_load(5);
        assert_eq!(busy(), base + 5);
        set_load(2);
        assert_eq!(busy(), base + 2);
        CHILD.slot.store(usize::MAX, Relaxed);
        // A child that died busy is taken off by the master, whatever it held.
        release(20);
        assert_eq!(busy(), base);
        assert_eq!(occupancy().capacity, 8);
    }

    #[test]
    fn an_event_worker_counts_each_connection_and_the_master_gives_back_what_it_held() {
        install(&APP).unwrap();
        let b = board().unwrap().board;
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let count = |e: u32| b.clients[e as usize].load(Relaxed) & COUNT_MASK;
        let held = Held::map().unwrap();
        // The worker's side (this test is the only user of `MY_HELD` in this process).
        enter_held(&held);
        let e = admit_conn(ip, 3).unwrap().unwrap();
        assert_eq!(admit_conn(ip, 3), Ok(Some(e)));
        assert_eq!(admit_conn(ip, 3), Ok(Some(e)));
        assert_eq!(admit_conn(ip, 3), Err(Over));
        assert_eq!(admit_conn(ip, 0), Ok(None), "0 is no limit");
        assert_eq!(count(e), 3);
        leave_conn(e);
        assert_eq!(count(e), 2);
        assert_eq!(held.counts()[e as usize].load(Relaxed), 2);
        // It dies holding two: the master gives them back with its table.
        MY_HELD.store(std::ptr::null_mut(), Relaxed);
        held.give_back_all();
        assert_eq!(count(e), 0);
        assert_eq!(held.counts()[e as usize].load(Relaxed), 0);
        held.give_back_all();
        assert_eq!(count(e), 0, "never below zero");
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

    #[test]
    fn one_look_at_the_queue_stands_for_the_pool_until_rechecked() {
        install(&APP).unwrap();
        let looks = std::cell::Cell::new(0);
        let looks = &looks;
        let look = |answer: bool| {
            move || {
                looks.set(looks.get() + 1);
                answer
            }
        };
        // A long recheck: the first caller looks, the rest share its answer.
        let first = shared_look(60_000, look(true));
        assert_eq!(first, Some(true));
        assert_eq!(looks.get(), 1);
        for _ in 0..100 {
            assert_eq!(shared_look(60_000, look(false)), Some(true));
        }
        assert_eq!(looks.get(), 1);
        // Once the answer is older than the recheck, the next caller looks again.
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(shared_look(2, look(false)), Some(false));
        assert_eq!(looks.get(), 2);
        assert_eq!(shared_look(60_000, look(true)), Some(false));
        assert_eq!(looks.get(), 2);
    }
}
