//! Signals arrive through a self-pipe, so the one `poll` of a long-lived process wakes up for
//! them exactly as for a readable socket, and nothing runs in a handler but a flag store and a
//! one-byte write (both async-signal-safe; signal-hook's `flag` and `pipe` do only that).
//!
//! No thread is started: a forking master must stay single-threaded (see `fork`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;

/// One documented event per signal a daemon reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGTERM: stop accepting at once, drain, then end.
    Terminate,
    /// SIGINT (and SIGQUIT): stop now.
    Interrupt,
    /// SIGHUP: re-read the configuration.
    Reload,
    /// SIGUSR1: reopen log files.
    ReopenLogs,
    /// SIGCHLD: a child changed state; reap.
    Child,
}

const TABLE: [(Signal, Event); 6] = [
    (Signal::SIGTERM, Event::Terminate),
    (Signal::SIGINT, Event::Interrupt),
    (Signal::SIGQUIT, Event::Interrupt),
    (Signal::SIGHUP, Event::Reload),
    (Signal::SIGUSR1, Event::ReopenLogs),
    (Signal::SIGCHLD, Event::Child),
];

/// The read end of the self-pipe plus one flag per signal.
pub struct SignalPipe {
    read: OwnedFd,
    // Kept open for the handlers, which write to its raw fd.
    write: OwnedFd,
    flags: Vec<(Signal, Event, Arc<AtomicBool>)>,
    ids: Vec<signal_hook::SigId>,
}

impl SignalPipe {
    /// Installs the handlers for the signal table. Both pipe ends are CLOEXEC and
    /// non-blocking: a full pipe only means a wake-up is already pending.
    pub fn install() -> io::Result<SignalPipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let mut pipe = SignalPipe {
            read,
            write,
            flags: Vec::new(),
            ids: Vec::new(),
        };
        for (sig, event) in TABLE {
            let flag = Arc::new(AtomicBool::new(false));
            let (handler_flag, wfd) = (flag.clone(), pipe.write.as_raw_fd());
            // SAFETY: the action is async-signal-safe: one atomic store and one non-blocking
            // `write` of a byte to a pipe this value owns; the handler is unregistered in
            // `Drop` before the pipe is closed. signal-hook saves and restores errno.
            let id = unsafe {
                signal_hook::low_level::register(sig as i32, move || {
                    handler_flag.store(true, Ordering::Relaxed);
                    libc::write(wfd, [1u8].as_ptr().cast(), 1);
                })
            }?;
            pipe.ids.push(id);
            pipe.flags.push((sig, event, flag));
        }
        // SIGPIPE must not kill a process that writes to sockets; EPIPE is handled instead.
        // SIGXFSZ must not kill one that writes a file over RLIMIT_FSIZE; EFBIG is handled.
        for sig in [Signal::SIGPIPE, Signal::SIGXFSZ] {
            // SAFETY: setting a signal to SIG_IGN installs no handler code.
            unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) }
                .map_err(io::Error::from)?;
        }
        Ok(pipe)
    }

    /// The fd to include in `poll` for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Empties the pipe and returns the events that fired since the last call, in table order
    /// (so a stop is seen before a reload that raced with it).
    pub fn drain(&self) -> Vec<Event> {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(&self.read, &mut buf), Ok(n) if n > 0) {}
        let mut events = Vec::new();
        for (_, event, flag) in &self.flags {
            if flag.swap(false, Ordering::Relaxed) && !events.contains(event) {
                events.push(*event);
            }
        }
        events
    }

    /// Raw fds of the pipe, for a forked child to close before it runs (it never returns into
    /// the code that owns this value, so nothing closes them twice).
    pub(crate) fn raw_fds(&self) -> [i32; 2] {
        [self.read.as_raw_fd(), self.write.as_raw_fd()]
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
