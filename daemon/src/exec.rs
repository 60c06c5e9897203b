//! Starting another program clean: the safe face of `pre_exec` for the supervisor, which
//! starts its child through `std::process::Command` (never a bare `fork`).
//!
//! Between fork and exec only async-signal-safe calls are allowed, which is why `pre_exec` is
//! `unsafe` in std; the hook here is a fixed list of plain system calls on stack values, so
//! callers get it without `unsafe` of their own.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{getppid, Pid};

/// Exit code of a child whose program could not be executed (the shell's convention): 127
/// when it was not found, 126 otherwise.
pub const EXIT_NOT_FOUND: i32 = 127;
pub const EXIT_CANNOT_EXEC: i32 = 126;

/// Makes `cmd` start its program with default signal dispositions and an empty signal mask (a
/// parent's ignored SIGPIPE must not leak into a server, as tini's `restore_signals`), with
/// `PR_SET_PDEATHSIG` = SIGTERM so it hears of a parent that died, and with only fds 0-2 open
/// across the exec: every other fd is marked close-on-exec in the child, whoever opened it.
/// The spawn fails with ESRCH if this process died before the child could be told.
pub fn start_clean(cmd: &mut Command) -> &mut Command {
    let parent = Pid::this();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed; `restore_child_state` makes only system calls (sigprocmask,
    // rt_sigaction, prctl, getppid, close_range) on stack values, allocates nothing on its
    // success path and takes no lock.
    unsafe { cmd.pre_exec(move || restore_child_state(parent, 3)) }
}

/// Starts `cmd` as [`start_clean`] does, with `fds` passed by socket activation (sd_listen_fds(3)):
/// they become fds 3, 4, ... of the program, without close-on-exec, and its environment gets
/// `LISTEN_FDS`, `LISTEN_FDNAMES` (`names`, colon-separated) and `LISTEN_PID` set to its own
/// pid, which only the child knows. (Tested through the supervisor, in
/// `tests/integration/supervisor.rs`: a test harness has threads, and `fork::spawn` refuses
/// to fork from a process that has.) This is how a supervisor that holds the listening sockets
/// hands them to every server it starts (systemd, s6-fdholder and einhorn do the same).
///
/// The child is made by [`crate::fork::spawn`], the one fork site, so the caller must be
/// single-threaded (the supervisor is, by design): the child is then a faithful copy that may
/// run ordinary code, set the variables, and exec through `Command::exec`. The fds are first
/// duplicated above the target range, so that a listener already numbered 3 or 4 is not
/// overwritten by another before it is moved. Returns the child's pid; a program that cannot
/// be executed ends the child with [`EXIT_NOT_FOUND`] or [`EXIT_CANNOT_EXEC`], as a shell's
/// would. `cmd` must not carry `pre_exec` hooks of [`start_clean`] (they would mark the passed
/// fds close-on-exec again).
pub fn spawn_with_fds(cmd: &mut Command, fds: &[BorrowedFd<'_>], names: &str) -> io::Result<Pid> {
    let parent = Pid::this();
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let count = raw.len() as i32;
    // Prepared before the fork; only LISTEN_PID waits for the child's own pid.
    cmd.env("LISTEN_FDS", count.to_string())
        .env("LISTEN_FDNAMES", names);
    let pid = crate::fork::spawn(|| {
        if let Err(e) = place_fds(&raw).and_then(|()| restore_child_state(parent, 3 + count)) {
            eprintln!("unable to prepare the child: {e}");
            return EXIT_CANNOT_EXEC;
        }
        cmd.env("LISTEN_PID", std::process::id().to_string());
        let e = cmd.exec();
        eprintln!("unable to execute {:?}: {e}", cmd.get_program());
        if e.kind() == io::ErrorKind::NotFound {
            EXIT_NOT_FOUND
        } else {
            EXIT_CANNOT_EXEC
        }
    })
    .map_err(io::Error::from)?;
    Ok(pid)
}

/// In the child: moves `fds` to 3, 4, ... without close-on-exec.
fn place_fds(fds: &[i32]) -> io::Result<()> {
    let first_free = 3 + fds.len() as i32;
    let mut moved = Vec::with_capacity(fds.len());
    for &fd in fds {
        // SAFETY: F_DUPFD_CLOEXEC duplicates an fd this process holds (the caller borrowed
        // it) to the lowest free number at or above `first_free`; no memory is involved.
        let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, first_free) };
        if high < 0 {
            return Err(io::Error::last_os_error());
        }
        moved.push(high);
    }
    for (i, high) in moved.into_iter().enumerate() {
        // SAFETY: dup2 onto 3 + i replaces whatever was there in this child only (it is about
        // to exec, and every other fd from 3 on is close-on-exec); the copy it makes has no
        // close-on-exec flag, which is the point. `high` closes at exec.
        if unsafe { libc::dup2(high, 3 + i as i32) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs in the child between fork and exec; fds from `keep_below` on are marked close-on-exec.
fn restore_child_state(parent: Pid, keep_below: i32) -> io::Result<()> {
    SigSet::empty().thread_set_mask()?;
    // The raw system call, because the C library refuses to touch the two real-time signals
    // it reserves for itself, and a disposition of SIG_IGN for them would survive exec. A
    // zeroed kernel `sigaction` is SIG_DFL with no flags and an empty mask.
    let dfl = [0u64; 4];
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: `dfl` is a kernel `sigaction` (handler, flags, restorer, mask) of
            // zeroes that outlives the call, which only reads it; no old action is asked for
            // (null), and 8 is the kernel's sigset size. Failures (an invalid number) are
            // harmless: that signal has no disposition to reset.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                )
            };
        }
    }
    // A parent killed with SIGKILL cannot stop its child; the kernel tells the child.
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
    // The parent may have died before the prctl above took effect.
    if getppid() != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // Only 0-2 pass: whatever else is open (inherited from our own parent, or opened without
    // CLOEXEC by a library) closes at exec. std's error pipe is CLOEXEC already. Kernels
    // before 5.11 refuse the flag; then only our own CLOEXEC discipline applies.
    // SAFETY: close_range takes no pointers; with CLOSE_RANGE_CLOEXEC it closes nothing, it
    // only marks fds close-on-exec, so no fd this process still uses goes away.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            keep_below as u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn the_child_gets_default_signals_and_no_extra_fds() {
        // An fd without CLOEXEC: the child must not see it.
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = nix::unistd::dup(&file).unwrap();
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags & libc::FD_CLOEXEC, 0);
        let script = format!(
            "test ! -e /proc/self/fd/{} && grep -E '^(SigIgn|SigBlk)' /proc/self/status",
            fd.as_raw_fd()
        );
        let out = start_clean(Command::new("sh").args(["-c", &script]))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        for line in text.lines() {
            assert!(line.ends_with("0000000000000000"), "{line}");
        }
    }
}
