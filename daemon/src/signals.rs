//! Signals arrive through a `signalfd`, so the one `poll` of a long-lived process wakes up for
//! them exactly as for a readable socket. The signals of the table are blocked in the
//! process and read from the fd: no handler ever runs. That matters for a master that forks
//! per connection: a handler runs on the master's stack with a signal frame of several KiB and
//! writes its flags, and after every fork each of those pages costs the master a copy-on-write
//! fault (about four a connection, with the `rt_sigreturn` and the self-pipe's `write` and
//! `read`), all to learn of the child that the fork itself made.
//!
//! No thread is started: a forking master must stay single-threaded (see `fork`).
//!
//! The master's table ([`MASTER`]) is the one list of what is caught; a child's table is
//! derived from it ([`child_table`]). Since a blocked signal never acts, whatever its
//! disposition, the master installs the children's actions itself once
//! (`worker::set_child_dispositions`, for [`child_changes`]); a child inherits them with the
//! blocked mask, closes the fd and unblocks (`worker::enter`), and a signal that reached it
//! meanwhile is delivered then, to its own handler. No `sigaction` per child.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::signal::{SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

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

/// The dispositions a child needs that [`SignalPipe::install`] does not leave: [`child_table`]
/// without the signals whose child action is the default one (every signal of the table after
/// `install`) or, for [`IGNORED`], `SIG_IGN`.
pub fn child_changes() -> impl Iterator<Item = (Signal, ChildAction)> {
    child_table().filter(|&(sig, action)| {
        let master = if IGNORED.contains(&sig) {
            ChildAction::Ignore
        } else {
            ChildAction::Default
        };
        action != master
    })
}

/// The events that fired since the last [`SignalPipe::drain`], each once, iterated in table
/// order (so a stop is seen before a reload that raced with it). A set of bits: reading the
/// signals allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Events(u8);

impl Events {
    fn bit(event: Event) -> u8 {
        let i = MASTER.iter().position(|(_, e)| *e == event).unwrap_or(0);
        1 << i
    }

    pub fn contains(&self, event: Event) -> bool {
        self.0 & Events::bit(event) != 0
    }

    /// Takes `event` out of the set; true when it was there.
    pub fn remove(&mut self, event: Event) -> bool {
        let had = self.contains(event);
        self.0 &= !Events::bit(event);
        had
    }

    fn insert(&mut self, event: Event) {
        self.0 |= Events::bit(event);
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

impl IntoIterator for Events {
    type Item = Event;
    type IntoIter = EventsIter;

    fn into_iter(self) -> EventsIter {
        EventsIter { left: self, at: 0 }
    }
}

/// The events of an [`Events`] in table order.
pub struct EventsIter {
    left: Events,
    at: usize,
}

impl Iterator for EventsIter {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        while let Some((_, event)) = MASTER.get(self.at) {
            self.at += 1;
            // SIGINT and SIGQUIT share an event: it comes out once.
            if self.left.remove(*event) {
                return Some(*event);
            }
        }
        None
    }
}

/// The signals of [`MASTER`], blocked in this process and read from a `signalfd`.
pub struct SignalPipe {
    fd: SignalFd,
}

/// A `signalfd_siginfo` is 128 bytes, its first field the signal number (`u32`).
const SIGINFO: usize = 128;

impl SignalPipe {
    /// Blocks the table's signals, gives each its default disposition (one ignored by whoever
    /// started us would otherwise stay ignored in our children), ignores [`IGNORED`], and
    /// opens the fd, CLOEXEC and non-blocking.
    pub fn install() -> io::Result<SignalPipe> {
        let mut mask = SigSet::empty();
        for (sig, _) in MASTER {
            mask.add(sig);
        }
        mask.thread_block()?;
        for (sig, _) in MASTER {
            // SAFETY: the default disposition installs no handler code.
            unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) }?;
        }
        for sig in IGNORED {
            // SAFETY: setting a signal to SIG_IGN installs no handler code.
            unsafe { nix::sys::signal::signal(sig, SigHandler::SigIgn) }?;
        }
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        Ok(SignalPipe { fd })
    }

    /// The fd to include in `poll` for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads every pending signal and returns the events that fired since the last call.
    /// Standard signals do not queue, so at most one of each is pending: one `read` of room
    /// for more than the table holds takes them all.
    pub fn drain(&self) -> Events {
        let mut events = Events::default();
        let mut buf = [0u8; SIGINFO * 8];
        loop {
            let n = match nix::unistd::read(self.fd.as_fd(), &mut buf) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            };
            for info in buf.get(..n).unwrap_or_default().chunks_exact(SIGINFO) {
                let signo = info
                    .first_chunk::<4>()
                    .map_or(0, |b| u32::from_ne_bytes(*b) as i32);
                if let Some((_, event)) = MASTER.iter().find(|(s, _)| *s as i32 == signo) {
                    events.insert(*event);
                }
            }
            if n < buf.len() {
                break;
            }
        }
        events
    }

    /// The raw fd, for a forked child to close before it runs (it never returns into the code
    /// that owns this value, so nothing closes it twice).
    pub(crate) fn raw_fds(&self) -> [i32; 1] {
        [self.fd.as_raw_fd()]
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

    #[test]
    fn a_child_changes_only_what_differs_from_the_master() {
        let changes: Vec<(Signal, ChildAction)> = child_changes().collect();
        assert_eq!(
            changes,
            [
                (Signal::SIGTERM, ChildAction::Stop),
                (Signal::SIGHUP, ChildAction::Ignore),
                (Signal::SIGUSR1, ChildAction::Reopen),
            ]
        );
    }

    #[test]
    fn events_come_out_once_each_in_table_order() {
        let mut events = Events::default();
        for e in [
            Event::ReopenLogs,
            Event::Child,
            Event::Terminate,
            Event::Interrupt,
        ] {
            events.insert(e);
        }
        events.insert(Event::Interrupt);
        let all: Vec<Event> = events.into_iter().collect();
        assert_eq!(
            all,
            [
                Event::Terminate,
                Event::Interrupt,
                Event::ReopenLogs,
                Event::Child
            ]
        );
        assert!(events.remove(Event::Child));
        assert!(!events.remove(Event::Child));
        assert!(!events.contains(Event::Child) && events.contains(Event::Terminate));
        assert!(Events::default().is_empty());
    }

    /// Signals raised at the process are read from the fd, several with one drain, and none
    /// runs a handler (they are blocked). In a thread of its own: the mask is per thread, and
    /// a signal directed at that thread is pending there only.
    #[test]
    fn pending_signals_are_read_from_the_fd() {
        std::thread::spawn(|| {
            let pipe = SignalPipe::install().unwrap();
            assert!(pipe.drain().is_empty());
            for sig in [Signal::SIGUSR1, Signal::SIGHUP, Signal::SIGUSR1] {
                // `raise` signals the calling thread.
                nix::sys::signal::raise(sig).unwrap();
            }
            let events: Vec<Event> = pipe.drain().into_iter().collect();
            assert_eq!(events, [Event::Reload, Event::ReopenLogs]);
            assert!(pipe.drain().is_empty());
        })
        .join()
        .unwrap();
    }
}
