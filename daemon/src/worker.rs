//! The child's side: what a prefork worker or a per-connection child does after `fork`, and
//! what it can ask of the template.
//!
//! A child first makes itself a clean process (`enter`): it closes the master's fds, resets
//! signal handling, asks to die with the master, and drops privileges. The master then asks it
//! to finish with SIGTERM (graceful: end the request in flight, then close) or SIGINT (leave
//! now). The SIGTERM handler is installed without `SA_RESTART`, so a blocking `accept`, `read`
//! or `write` returns `EINTR` and the service can look at [`stop_requested`] between requests.
//!
//! SIGUSR1 asks the child to reopen its log files: the handler only sets a flag, which the
//! service takes with [`take_reopen_request`] before it next writes a line. A child that cannot
//! reopen (it dropped privileges and may not open the file) calls [`retire`] and is replaced
//! by one that inherits the master's new file.
//!
//! A prefork worker serves one connection at a time, so keep-alive clients beyond the pool
//! wait in the accept queue until a connection ends. [`clients_waiting`] tells the service
//! when that is happening (every worker busy and a connection queued), so it can end its
//! keep-alive connection after the current response and give the queue a turn.

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::listener::{accept_failure, AcceptFailure};
use super::master::Service;
use super::privdrop::{self, Credentials};
use super::scoreboard;
use super::signals::{child_changes, ChildAction};

static STOP: AtomicBool = AtomicBool::new(false);
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Exit code of a child that could not set itself up (EX_OSERR); the master throttles
/// respawns of workers that keep failing.
pub const EXIT_SETUP: i32 = 71;

/// True once the master has asked this child to finish: a service should complete the
/// request in flight, not start another one, and return.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// How long an answer of [`clients_waiting`] that looked at the listeners stands: it is asked
/// after every response while the pool is full, and one `poll` a millisecond for the whole
/// pool (shared through the scoreboard) is enough to give waiting clients their turn without
/// a system call per request.
const WAITING_RECHECK: Duration = Duration::from_millis(1);

/// What [`clients_waiting`] looks at: the listeners of this prefork worker (set for the
/// length of [`accept_loop`], which borrows them meanwhile). The last answer is the pool's,
/// on the scoreboard.
struct Queue {
    fds: Vec<libc::pollfd>,
}

thread_local! {
    static QUEUE: RefCell<Queue> = const { RefCell::new(Queue { fds: Vec::new() }) };
}

/// True when every child of the pool is serving a connection and another connection waits in
/// a listener's accept queue: a service that holds a keep-alive connection should end it after
/// the current response (`Connection: close`), so that clients beyond the pool take turns
/// instead of waiting for some connection to end by itself.
///
/// Cheap on the hot path: while some child is idle it is two loads from the scoreboard (an
/// idle child will take the queued connection); only a full pool looks at the listeners, with
/// a `poll` of zero timeout, at most once a millisecond for the whole pool
/// (`WAITING_RECHECK`: the answer stands that long, shared through the scoreboard). Always
/// false outside a prefork worker (a per-connection child has no listeners to hand back, and
/// the master serves nothing) and without a scoreboard (no capacity to be full).
pub fn clients_waiting() -> bool {
    let occ = scoreboard::occupancy();
    if occ.capacity == 0 || occ.busy < occ.capacity {
        return false;
    }
    QUEUE.with(|q| {
        let Ok(mut q) = q.try_borrow_mut() else {
            return false;
        };
        if q.fds.is_empty() {
            return false;
        }
        let recheck = WAITING_RECHECK.as_millis() as u64;
        // A capacity means a scoreboard is mapped, so the look is always the pool's.
        scoreboard::shared_look(recheck, || listeners_readable(&mut q.fds)).unwrap_or(false)
    })
}

/// Whether a connection waits in any of the listeners' accept queues (`POLLIN`), without
/// waiting.
fn listeners_readable(fds: &mut [libc::pollfd]) -> bool {
    for fd in fds.iter_mut() {
        fd.revents = 0;
    }
    let n = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` is a live, exclusively borrowed slice of `n` pollfd structures, which poll
    // only reads and writes the `revents` of; the fds are the listeners `accept_loop` borrows
    // for as long as they are registered here (an fd that were closed would only show as
    // POLLNVAL, never as a queued connection), and a zero timeout never blocks.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), n, 0) };
    rc > 0 && fds.iter().any(|fd| fd.revents & libc::POLLIN != 0)
}

/// What `poll` needs to look for a connection queued on any of `listeners`.
fn pollfds(listeners: &[TcpListener]) -> Vec<libc::pollfd> {
    listeners
        .iter()
        .map(|l| libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect()
}

/// Registers `listeners` for [`clients_waiting`] until the guard is dropped.
fn watch_queue(listeners: &[TcpListener]) -> impl Drop {
    struct Unwatch;
    impl Drop for Unwatch {
        fn drop(&mut self) {
            QUEUE.with(|q| {
                if let Ok(mut q) = q.try_borrow_mut() {
                    q.fds.clear();
                }
            });
        }
    }
    QUEUE.with(|q| {
        if let Ok(mut q) = q.try_borrow_mut() {
            q.fds = pollfds(listeners);
        }
    });
    Unwatch
}

/// How often [`read_or_stop`] looks at [`stop_requested`] while the client is quiet.
const READ_TICK: Duration = Duration::from_secs(1);

/// Reads what the client sends, for a service that waits on its client between requests:
/// returns `Ok(0)` when the client closed, when it sent nothing for `idle`, or when the master
/// asked this child to stop. A SIGTERM interrupts a blocked read, but it may also land just
/// before the read starts, so the read wakes every second to look (a `BufRead` would retry
/// `EINTR` and sleep through the stop). Sets the stream's read timeout.
pub fn read_or_stop(mut stream: &TcpStream, buf: &mut [u8], idle: Duration) -> io::Result<usize> {
    use std::io::Read;
    stream.set_read_timeout(Some(READ_TICK))?;
    let mut quiet = Duration::ZERO;
    while !stop_requested() && quiet < idle {
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                quiet = quiet.saturating_add(READ_TICK);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(0)
}

/// The child leaves as if the master had sent SIGTERM: it finishes the request in flight,
/// answers the next one of its connection with `Connection: close`, and exits 0, and a prefork
/// master starts a replacement. For a child that can no longer do its job as the master
/// configured it (a log it cannot reopen).
pub fn retire() {
    STOP.store(true, Ordering::Relaxed);
}

/// True once per SIGUSR1 the master forwarded: the service should reopen its log files (by
/// path) before it writes its next line, and [`retire`] if it cannot.
pub fn take_reopen_request() -> bool {
    REOPEN.swap(false, Ordering::Relaxed)
}

extern "C" fn on_term(_: libc::c_int) {
    // Async-signal-safe: one atomic store.
    STOP.store(true, Ordering::Relaxed);
}

extern "C" fn on_usr1(_: libc::c_int) {
    // Async-signal-safe: one atomic store.
    REOPEN.store(true, Ordering::Relaxed);
}

/// Turns a freshly forked copy of the master into a child: closes the master-only fds in
/// `close` and `side` (the side ports and their connections) and the `listeners` given (fork mode's), unblocks signals, dies with `master`, drops
/// privileges. On failure returns the exit code the child should end with.
///
/// The child's signal actions are already in place: the master installed them
/// ([`set_child_dispositions`]) and keeps those signals blocked, so they never run there.
/// Closing the master's fds comes before unblocking; a signal that arrived since the fork is
/// delivered then, to the child's own handler.
pub(crate) fn enter(
    close: &[RawFd],
    side: &[RawFd],
    listeners: &[TcpListener],
    creds: Option<&Credentials>,
    slot: usize,
    master: nix::unistd::Pid,
) -> Result<(), i32> {
    scoreboard::enter_slot(slot);
    for fd in close
        .iter()
        .chain(side)
        .copied()
        .chain(listeners.iter().map(AsRawFd::as_raw_fd))
    {
        // SAFETY: these fds belong to master state that this child never uses nor drops (it
        // ends in `_exit`), so closing the numbers cannot cause a double close.
        unsafe { libc::close(fd) };
    }
    SigSet::empty()
        .thread_set_mask()
        .map_err(|e| fail("unblock signals", e.into()))?;
    if let Some(c) = creds {
        privdrop::drop_to(c).map_err(|e| fail(&format!("drop privileges to {:?}", c.name), e))?;
    }
    // If the master dies (even by SIGKILL), its children finish what they do and leave instead
    // of serving on, unsupervised, forever. This must come after the privilege drop: the
    // kernel clears the parent-death signal when credentials change.
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
        .map_err(|e| fail("set parent-death signal", e.into()))?;
    if nix::unistd::getppid() != master {
        // The master died before the line above took effect.
        return Err(0);
    }
    Ok(())
}

/// Gives this child the scheduling policy the settings ask for. A failure (a seccomp filter
/// that forbids the call, say) costs speed, not service: it is logged and the child serves on
/// with the policy it inherited.
pub(crate) fn set_scheduling(policy: super::master::Scheduling) {
    let policy = match policy {
        super::master::Scheduling::Inherit => return,
        super::master::Scheduling::Batch => libc::SCHED_BATCH,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a plain system call on this process (pid 0) that reads the one struct on the
    // stack it is given; a normal process may move itself to SCHED_BATCH without privilege
    // (sched(7)), keeping its nice value.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        tracing::warn!(
            "child {}: unable to set SCHED_BATCH: {}",
            std::process::id(),
            io::Error::last_os_error()
        );
    }
}

fn fail(what: &str, e: io::Error) -> i32 {
    tracing::error!("child {}: unable to {what}: {e}", std::process::id());
    EXIT_SETUP
}

/// Run in the master, once, after `signals::SignalPipe::install`: gives the child's action
/// (`signals::child_changes`) to every signal whose action in a child differs from the
/// master's, so that children inherit them and need not one `sigaction` of their own. TERM
/// asks for a graceful end (no SA_RESTART, so blocking calls return EINTR), USR1 for a log
/// reopen (SA_RESTART: the flag is looked at before the next log line), HUP is the master's
/// business. INT, QUIT and CHLD keep the default action (INT and QUIT end a child at once),
/// PIPE and XFSZ stay ignored (EPIPE and EFBIG are handled).
///
/// None of these ever acts in the master: it keeps its table blocked and reads the signals
/// from its signalfd, whatever their disposition (the kernel queues a blocked signal even
/// when it is ignored, and never runs a handler for it).
pub fn set_child_dispositions() -> io::Result<()> {
    for (sig, action) in child_changes() {
        let (handler, flags) = match action {
            ChildAction::Stop => (SigHandler::Handler(on_term), SaFlags::empty()),
            ChildAction::Reopen => (SigHandler::Handler(on_usr1), SaFlags::SA_RESTART),
            ChildAction::Default => (SigHandler::SigDfl, SaFlags::empty()),
            ChildAction::Ignore => (SigHandler::SigIgn, SaFlags::empty()),
        };
        // SAFETY: the only handlers installed are `on_term` and `on_usr1`, each one atomic
        // store, which is async-signal-safe.
        unsafe { sigaction(sig, &SigAction::new(handler, flags, SigSet::empty())) }?;
    }
    Ok(())
}

/// Serves one accepted connection. It has `TCP_NODELAY` from its listener
/// (`listener::set_nodelay`): small requests must not wait for Nagle (incident 004).
pub(crate) fn serve_one<S: Service>(service: &mut S, stream: TcpStream, peer: SocketAddr) -> u64 {
    scoreboard::set_busy(true);
    let n = service.serve(&stream, peer);
    scoreboard::served(n);
    // The connection is over: its client's count goes back now, not when the master reaps
    // this child (fork mode), and before the close, which wakes a client that may reconnect
    // at once and preempt this process: its new connection must not meet the old one's count.
    scoreboard::leave();
    drop(stream);
    scoreboard::set_busy(false);
    n
}

/// Answers a connection that is refused (no child slot, or its client holds too many) without
/// blocking and closes it: whatever the client already sent is read first, so that closing does
/// not turn into a reset that could destroy the answer in flight. Costs a few microseconds, so
/// a refused client pins no process.
pub(crate) fn refuse(mut stream: TcpStream, answer: &[u8]) {
    use std::io::{Read, Write};
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0u8; 4096];
        let _ = stream.read(&mut sink);
        if !answer.is_empty() {
            let _ = stream.write(answer);
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
}

/// A prefork worker's life: accept and serve until asked to stop or until `budget` requests
/// (0: no limit) have been served. A connection whose client address already holds
/// `per_client` connections across the pool (0: no limit) is refused at once. Returns the exit
/// code.
pub(crate) fn accept_loop<S: Service>(
    listeners: &[TcpListener],
    service: &mut S,
    budget: u64,
    per_client: usize,
) -> i32 {
    let mut served = 0u64;
    let mut resource_pause = Duration::from_millis(10);
    let _watch = watch_queue(listeners);
    while !stop_requested() {
        let accepted = match listeners {
            // Blocking accept: the kernel hands each connection to one waiting worker.
            [one] => super::listener::accept(one),
            _ => accept_any(listeners),
        };
        match accepted {
            Ok((stream, peer)) => {
                resource_pause = Duration::from_millis(10);
                if !scoreboard::admit_here(peer.ip(), per_client) {
                    refuse(stream, service.busy_response());
                    continue;
                }
                served += serve_one(service, stream, peer).max(1);
                if budget > 0 && served >= budget {
                    tracing::debug!(
                        "worker {} served {served} requests; recycling",
                        std::process::id()
                    );
                    return 0;
                }
            }
            Err(e) => match accept_failure(&e) {
                // Blocking accepts wake every second (and for signals) to look at the flag.
                AcceptFailure::Empty | AcceptFailure::Again => {}
                AcceptFailure::Exhausted => {
                    tracing::warn!(
                        "worker {}: accept failed ({e}); pausing {resource_pause:?}",
                        std::process::id()
                    );
                    std::thread::sleep(resource_pause);
                    resource_pause = (resource_pause * 2).min(Duration::from_secs(1));
                }
                AcceptFailure::Closed => {
                    tracing::debug!(
                        "worker {}: listener closed ({e}); leaving",
                        std::process::id()
                    );
                    return 0;
                }
                AcceptFailure::Other => {
                    tracing::warn!("worker {}: accept failed: {e}", std::process::id());
                    std::thread::sleep(Duration::from_millis(10));
                }
            },
        }
    }
    0
}

/// An event worker's life: its service's connections multiplexed by the [`reactor`] until a
/// stop or the request `budget` (0: none) ends it, at most `connections` at once. Returns the
/// exit code.
///
/// [`reactor`]: super::reactor
pub(crate) fn event_loop<S: Service>(
    listeners: &[TcpListener],
    service: &mut S,
    connections: usize,
    budget: u64,
    per_client: usize,
) -> i32 {
    let busy = service.busy_response().to_vec();
    let Some(events) = service.events() else {
        // `run` refuses event mode for such a service; a worker has nothing to do here.
        tracing::error!(
            "worker {}: the service has no event mode",
            std::process::id()
        );
        return EXIT_SETUP;
    };
    events.run(super::reactor::Pool {
        listeners,
        connections,
        budget,
        per_client,
        busy: &busy,
        stop: stop_requested,
    })
}

/// Several listeners: wait for any of them (non-blocking sockets), then try each.
fn accept_any(listeners: &[TcpListener]) -> io::Result<(TcpStream, SocketAddr)> {
    let mut fds: Vec<PollFd> = listeners
        .iter()
        .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
        .collect();
    poll(&mut fds, PollTimeout::from(1000u16))?;
    for l in listeners {
        match super::listener::accept(l) {
            // Linux does not pass O_NONBLOCK on to the accepted socket: it blocks, as wanted.
            Ok(accepted) => return Ok(accepted),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::ErrorKind::WouldBlock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The look at the accept queues: empty, then a connection queued on the second listener.
    #[test]
    fn a_queued_connection_makes_a_listener_readable() {
        let listeners: Vec<TcpListener> = (0..2)
            .map(|_| super::super::listener::bind("127.0.0.1:0".parse().unwrap()).unwrap())
            .collect();
        let mut fds = pollfds(&listeners);
        assert!(!listeners_readable(&mut fds));
        let addr = listeners[1].local_addr().unwrap();
        let _client = TcpStream::connect(addr).unwrap();
        assert!(listeners_readable(&mut fds));
        let _ = listeners[1].accept().unwrap();
        assert!(!listeners_readable(&mut fds));
    }
}
