//! Reaping: every child that ended is collected at once, so there is never a zombie.
//!
//! SIGCHLDs merge (several exits can raise one signal), so a reap loops on
//! `waitpid(-1, WNOHANG)` until nothing is left, and the end of each child becomes a
//! [`ProcessEnd`] that logs readably instead of a raw wait status.

use std::fmt;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEnd {
    Exited(i32),
    Signaled { signal: Signal, core_dumped: bool },
}

impl ProcessEnd {
    pub fn success(&self) -> bool {
        *self == ProcessEnd::Exited(0)
    }

    /// The shell's convention: the exit code, or 128 + the signal number.
    pub fn code(&self) -> i32 {
        match *self {
            ProcessEnd::Exited(c) => c,
            ProcessEnd::Signaled { signal, .. } => 128 + signal as i32,
        }
    }
}

impl fmt::Display for ProcessEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessEnd::Exited(c) => write!(f, "exited with code {c}"),
            ProcessEnd::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by {}", signal.as_str())?;
                if *core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// Collects every child that has ended, calling `ended` for each, without blocking.
/// Returns how many were reaped.
pub fn reap(mut ended: impl FnMut(Pid, ProcessEnd)) -> usize {
    let mut n = 0;
    while let Some((pid, end)) = reap_one() {
        ended(pid, end);
        n += 1;
    }
    n
}

/// Collects one child that has ended, without blocking; `None` when none is left to collect.
pub fn reap_one() -> Option<(Pid, ProcessEnd)> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => return Some((pid, ProcessEnd::Exited(code))),
            Ok(WaitStatus::Signaled(pid, signal, core_dumped)) => {
                return Some((
                    pid,
                    ProcessEnd::Signaled {
                        signal,
                        core_dumped,
                    },
                ))
            }
            // Stopped/continued children are not ends; with no WUNTRACED they are not reported.
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return None,
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!("waitpid failed: {e}");
                return None;
            }
        }
    }
}
