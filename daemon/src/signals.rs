//! Signals arrive through a self-pipe, so the one `poll` of a long-lived process wakes up for
//! them exactly as for a readable socket, and nothing runs in a handler but a flag store and a
//! one-byte write (both async-signal-safe; signal-hook's `flag` and `pipe` do only that).
//!
//! No thread is started: a forking master must stay single-threaded (see `fork`).
//!
//! The master's table ([`MASTER`]) is the one list of what is caught; a child's table is
//! derived from it ([`child_table`]), so a child never keeps one of the master's handlers.

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

/// The master's signal table: every signal [`SignalPipe::install`] catches and what it means.
/// A forked child resets every signal of this table to its [`child_action`] before it closes
/// the pipe (`worker::enter`), so a signal added here can never reach a child through the
/// master's handler, which would write into a closed (and possibly reused) fd.
pub const MASTER: [(Signal, Event); 6] = [
    (Signal::SIGTERM, Event::Terminate),
    (Signal::SIGINT, Event::Interrupt),
    (Signal::SIGQUIT, Event::Interrupt),
    (Signal::SIGHUP, Event::Reload),
    (Signal::SIGUSR1, Event::ReopenLogs),
    (Signal::SIGCHLD, Event::Child),
];

/// Ignored by the master and by its children alike: SIGPIPE must not kill a process that
/// writes to sockets (EPIPE is handled), nor SIGXFSZ one that writes a file over
/// `RLIMIT_FSIZE` (EFBIG is handled).
pub const IGNORED: [Signal; 2] = [Signal::SIGPIPE, Signal::SIGXFSZ];

/// What a forked child does with a signal of the master's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildAction {
    /// Set the child's stop flag; no `SA_RESTART`, so a blocking call returns EINTR.
    Stop,
    /// Set the child's reopen flag; `SA_RESTART`, since the flag is read before the next line.
    Reopen,
    /// The default action (end at once, or nothing for SIGCHLD).
    Default,
    /// Ignore: the master's business, not the child's.
    Ignore,
}

/// The child's action for each event of the master. An exhaustive `match`: a new [`Event`]
/// does not compile until its children are given an action.
pub const fn child_action(event: Event) -> ChildAction {
    match event {
        Event::Terminate => ChildAction::Stop,
        Event::Interrupt => ChildAction::Default,
        Event::Reload => ChildAction::Ignore,
        Event::ReopenLogs => ChildAction::Reopen,
        Event::Child => ChildAction::Default,
    }
}

/// The child's signal table, derived from the master's: every signal of [`MASTER`] with its
/// [`child_action`], then [`IGNORED`].
pub fn child_table() -> impl Iterator<Item = (Signal, ChildAction)> {
    MASTER
        .into_iter()
        .map(|(sig, event)| (sig, child_action(event)))
        .chain(IGNORED.into_iter().map(|sig| (sig, ChildAction::Ignore)))
}

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
        for (sig, event) in MASTER {
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
        for sig in IGNORED {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_master_signal_has_one_child_action() {
        let table: Vec<(Signal, ChildAction)> = child_table().collect();
        let signals = MASTER.iter().map(|(s, _)| *s).chain(IGNORED);
        for sig in signals {
            assert_eq!(
                table.iter().filter(|(s, _)| *s == sig).count(),
                1,
                "{sig} must have exactly one child action"
            );
        }
        assert_eq!(table.len(), MASTER.len() + IGNORED.len());
        let action = |sig| table.iter().find(|(s, _)| *s == sig).map(|(_, a)| *a);
        assert_eq!(action(Signal::SIGTERM), Some(ChildAction::Stop));
        assert_eq!(action(Signal::SIGUSR1), Some(ChildAction::Reopen));
        assert_eq!(action(Signal::SIGHUP), Some(ChildAction::Ignore));
        assert_eq!(action(Signal::SIGINT), Some(ChildAction::Default));
        assert_eq!(action(Signal::SIGQUIT), Some(ChildAction::Default));
        assert_eq!(action(Signal::SIGCHLD), Some(ChildAction::Default));
        assert_eq!(action(Signal::SIGPIPE), Some(ChildAction::Ignore));
    }
}
