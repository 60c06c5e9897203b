//! Starting another program clean: the safe face of `pre_exec` for the supervisor, which
//! starts its child through `std::process::Command` (never a bare `fork`).
//!
//! Between fork and exec only async-signal-safe calls are allowed, which is why `pre_exec` is
//! `unsafe` in std; the hook here is a fixed list of plain system calls on stack values, so
//! callers get it without `unsafe` of their own.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{getppid, Pid};

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
    unsafe { cmd.pre_exec(move || restore_child_state(parent)) }
}

/// Runs in the child between fork and exec.
fn restore_child_state(parent: Pid) -> io::Result<()> {
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
            3u32,
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
