//! The start-time check that the user children run as can use the document root.
//!
//! A docroot that user cannot search opens fine in the master (as root, or through `O_PATH`,
//! which needs no permission on the directory itself), and then every request answers 403
//! with nothing said. So at start and on every reload (the root, the user or the chroot may
//! have changed) forkd checks, as that user, that it can search the root (refused: exit 100)
//! and read its index file (a warning: a site may have no index at its top).
//!
//! How: started as root, a short probe child forked through `forkd_daemon::fork::spawn` drops
//! privileges exactly as every child does (`privdrop::drop_to`: chroot, groups, gid, uid)
//! and opens through the inherited root descriptor, as children do. Computing the answer from
//! `stat` with the target uid, gid and groups was the alternative; it would miss ACLs, LSMs
//! (SELinux, AppArmor), `CAP_DAC_*` rules, idmapped mounts and a chroot, and be a second,
//! subtly different implementation of the kernel's permission check. The probe asks the
//! kernel itself, for the price of one fork per start or reload. Not started as root,
//! children run with the master's own credentials, so the same opens are made in-process.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{Uid, User};

use forkd_daemon::fork;
use forkd_daemon::privdrop::{self, Credentials};

/// What a probe found, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Usable = 0,
    CannotSearch = 1,
    CannotReadIndex = 2,
}

/// Exit code of a probe child that could not drop privileges.
const PROBE_SETUP: i32 = 3;

/// Checks that the user children run as (`creds`, or this process's own when `None`) can
/// search the root open as `fd` (at `root`) and read `index` in it. `Err` is the reason to
/// refuse the configuration; `Ok(Some)` a warning to log.
pub fn check(
    label: &str,
    root: &Path,
    fd: BorrowedFd<'_>,
    index: &str,
    creds: Option<&Credentials>,
) -> Result<Option<String>, String> {
    let (user, found) = match creds {
        None => {
            let uid = Uid::effective();
            (user_name(uid.as_raw()), probe(fd, index))
        }
        Some(c) => match probe_as(c, fd, index) {
            Ok(found) => (c.name.clone(), found),
            Err(e) => {
                // The children will meet the same failure and say so; do not refuse on it.
                return Ok(Some(format!(
                    "{label} {}: unable to check what user {} can read there: {e}",
                    root.display(),
                    c.name
                )));
            }
        },
    };
    let stat_of = |at: BorrowedFd<'_>, name: &str| {
        let st = if name.is_empty() {
            nix::sys::stat::fstat(at)
        } else {
            nix::sys::stat::fstatat(at, name, nix::fcntl::AtFlags::empty())
        };
        st.map_or_else(
            |_| String::from("mode unknown"),
            |st| describe(st.st_mode, st.st_uid),
        )
    };
    match found {
        Probe::Usable => Ok(None),
        Probe::CannotSearch => Err(format!(
            "{label} {}: user {user} cannot search it ({})",
            root.display(),
            stat_of(fd, "")
        )),
        Probe::CannotReadIndex => Ok(Some(format!(
            "{label} {}: user {user} cannot read its index file {index} ({}): requests for \
             directories will answer 403",
            root.display(),
            stat_of(fd, index)
        ))),
    }
}

/// `mode 0700, owner root`.
fn describe(mode: u32, uid: u32) -> String {
    format!("mode {:04o}, owner {}", mode & 0o7777, user_name(uid))
}

fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// Opens what a child would, with this process's credentials: the root itself (a lookup
/// through it needs search permission, `x`), then the index file for reading. Only a refusal
/// counts; an absent index is no fault here.
fn probe(fd: BorrowedFd<'_>, index: &str) -> Probe {
    let denied = |e: Errno| matches!(e, Errno::EACCES | Errno::EPERM);
    let dir = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if let Err(e) = nix::fcntl::openat(fd, ".", dir, Mode::empty()) {
        if denied(e) {
            return Probe::CannotSearch;
        }
    }
    let file = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    match nix::fcntl::openat(fd, index, file, Mode::empty()) {
        Err(e) if denied(e) => Probe::CannotReadIndex,
        _ => Probe::Usable,
    }
}

/// Runs [`probe`] in a child that has become `creds` as a worker does, and waits for it.
fn probe_as(creds: &Credentials, fd: BorrowedFd<'_>, index: &str) -> Result<Probe, String> {
    let pid = fork::spawn(|| {
        if privdrop::drop_to(creds).is_err() {
            return PROBE_SETUP;
        }
        probe(fd.as_fd(), index) as i32
    })
    .map_err(|e| format!("fork: {e}"))?;
    let status = loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            other => break other.map_err(|e| format!("waitpid: {e}"))?,
        }
    };
    match status {
        WaitStatus::Exited(_, 0) => Ok(Probe::Usable),
        WaitStatus::Exited(_, 1) => Ok(Probe::CannotSearch),
        WaitStatus::Exited(_, 2) => Ok(Probe::CannotReadIndex),
        WaitStatus::Exited(_, PROBE_SETUP) => Err("the probe could not drop privileges".into()),
        other => Err(format!("the probe ended unexpectedly: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_mode_and_owner() {
        assert_eq!(describe(0o40700, 0), "mode 0700, owner root");
        assert_eq!(describe(0o100644, 0), "mode 0644, owner root");
        assert_eq!(describe(0o41777, 0), "mode 1777, owner root");
        assert_eq!(
            describe(0o40000, 4_000_000_000),
            "mode 0000, owner 4000000000"
        );
    }

    #[test]
    fn own_credentials_are_checked_in_process() {
        // Whatever this process may open, a root it created and an index it wrote are usable;
        // an absent index is no fault.
        let dir = tempfile::tempdir().unwrap();
        let fd = nix::fcntl::open(
            dir.path(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        assert_eq!(
            check("--root", dir.path(), fd.as_fd(), "index.html", None),
            Ok(None)
        );
        std::fs::write(dir.path().join("index.html"), "x").unwrap();
        assert_eq!(probe(fd.as_fd(), "index.html"), Probe::Usable);
    }
}
