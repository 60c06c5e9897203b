//! Starting and ending the supervised child: the only place that creates processes (through
//! `std::process::Command`, or `forkd_daemon::exec::spawn_with_fds` when listening sockets are
//! passed, never a bare `fork`) and the only place that sends them signals.
//!
//! The child gets its own process group (so the whole tree can be killed at once), default
//! signal dispositions and an empty mask (a supervisor's ignored SIGPIPE must not leak into a
//! server), `PR_SET_PDEATHSIG` so it hears of a supervisor that died, and only fds 0-2: every
//! other fd is marked close-on-exec in the child, whoever opened it. All of that is
//! `forkd_daemon::exec::start_clean`, the safe face of `pre_exec`. The supervisor's
//! environment for itself (`NOTIFY_SOCKET`, `WATCHDOG_*`, `LISTEN_*` from systemd) is replaced
//! by what the child should see.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use forkd_daemon::{exec, procfs};

use crate::reserve::Reserve;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, setpgid, Pid};

/// A running child, as the supervisor knows it. There is no `std::process::Child` kept: every
/// child is reaped by the one `waitpid(-1)` loop, orphans included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub pid: Pid,
    /// The child's process group, equal to its pid.
    pub pgid: Pid,
    pub started: Instant,
    pub started_unix: u64,
}

/// Starts `command` in a new process group, with `notify` as its `NOTIFY_SOCKET`, when
/// `watchdog` is set `WATCHDOG_USEC`, and the `listeners` the supervisor holds passed by socket
/// activation (fds 3, 4, ...; `LISTEN_PID` is the child's own pid).
pub fn spawn(
    command: &[OsString],
    notify: &OsStr,
    watchdog: Option<Duration>,
    listeners: &[BorrowedFd<'_>],
) -> io::Result<Running> {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env("NOTIFY_SOCKET", notify)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .process_group(0);
    if let Some(w) = watchdog {
        cmd.env("WATCHDOG_USEC", w.as_micros().to_string());
    }
    let pid = if listeners.is_empty() {
        exec::start_clean(&mut cmd);
        let child = cmd.spawn()?;
        // Dropping the handle neither waits nor kills; the reap loop collects the child.
        Pid::from_raw(child.id() as i32)
    } else {
        let names = vec!["http"; listeners.len()].join(":");
        let pid = exec::spawn_with_fds(&mut cmd, listeners, &names)?;
        // The child sets its group before exec; set it from here too, so that the group
        // exists for `kill_group` the moment this returns (the classic double setpgid).
        let _ = setpgid(pid, pid);
        pid
    };
    Ok(Running {
        pid,
        pgid: pid,
        started: Instant::now(),
        started_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}

/// Sends `sig` to the child itself (a graceful stop or a forwarded HUP/USR1: forkd's master
/// passes it on to its workers as it sees fit).
pub fn signal(pid: Pid, sig: Signal) {
    if let Err(e) = kill(pid, sig) {
        tracing::warn!("unable to send {} to child {pid}: {e}", sig.as_str());
    }
}

/// SIGKILL to the whole process group of the child: master, workers, anything they started.
pub fn kill_group(pgid: Pid) {
    match killpg(pgid, Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!("unable to kill process group {pgid}: {e}"),
    }
}

/// With socket holding, what is left of an ended child's group only finishes its requests on
/// the held sockets, so it is asked to stop (TERM) now and killed later, not at once: a worker
/// killed mid-response is a reset connection. Returns whether anything was left.
pub fn stop_leftovers(pgid: Pid, reserve: &mut Reserve) -> bool {
    if matches!(count_leftovers(pgid, reserve), Ok(0)) {
        return false;
    }
    killpg(pgid, Signal::SIGTERM).is_ok()
}

/// After the child's leader ended: kills what is left of its process group (workers of a
/// master killed with -9 would otherwise keep the port). The group is only signalled when one
/// of its members is still our descendant, so a recycled pgid of a stranger is never hit.
///
/// Listing the descendants opens `/proc` directories: with the supervisor's fd table full it
/// goes through the reserve (issue 10: `cannot list leftovers: Too many open files`, nothing
/// killed). Should even that fail, the group is killed unlisted: its leader was reaped a
/// moment ago, so its pgid names our child's group unless the group is already empty, and
/// leftovers holding the port are the worse risk.
pub fn kill_leftovers(pgid: Pid, reserve: &mut Reserve) -> usize {
    let left = match count_leftovers(pgid, reserve) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(
                "cannot list leftovers of process group {pgid}: {e}; killing the group unlisted"
            );
            kill_group(pgid);
            return 0;
        }
    };
    if left > 0 {
        tracing::info!("killing {left} leftover process(es) of group {pgid}");
        kill_group(pgid);
    }
    left
}

/// Members of group `pgid` still among our descendants.
fn count_leftovers(pgid: Pid, reserve: &mut Reserve) -> io::Result<usize> {
    let me = std::process::id() as i32;
    let pids = reserve.with_room("list the child's leftovers", || {
        procfs::descendants_with_root(me)
    })?;
    Ok(pids
        .into_iter()
        .skip(1)
        .filter(|p| getpgid(Some(Pid::from_raw(*p))) == Ok(pgid))
        .count())
}

/// Every descendant of the supervisor that is still alive (adopted orphans included), for the
/// final sweep at exit; the listing borrows the reserve when the fd table is full.
pub fn descendants(reserve: &mut Reserve) -> Vec<Pid> {
    let me = std::process::id() as i32;
    reserve
        .with_room("list leftover processes", || {
            procfs::descendants_with_root(me)
        })
        .map(|pids| {
            pids.into_iter()
                .skip(1)
                .filter(|p| procfs::process_state(*p).is_ok_and(|s| s != 'Z'))
                .map(Pid::from_raw)
                .collect()
        })
        .unwrap_or_default()
}
