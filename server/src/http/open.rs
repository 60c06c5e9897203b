//! Opening a file beneath the document root, race-free.
//!
//! The relative path comes from `path::resolve` (no `.` or `..` components). What it cannot
//! see are symlinks: `openat2` with `RESOLVE_BENEATH` makes the kernel refuse any resolution,
//! symlinks included, that would leave the root, atomically with the open, so swapping a
//! directory for a symlink between a check and the open wins nothing. Symlinks that stay
//! inside the root are followed. Only this module holds `unsafe` for the HTTP side.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Opens `path` as a document root: a handle for lookups only (`O_PATH`), which keeps
/// working after a chroot or privilege drop and is never inherited by an exec.
pub(super) fn root(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    Ok(nix::fcntl::open(path, flags, Mode::empty())?)
}

/// Flags of every served file: read-only, never our controlling terminal, and non-blocking so
/// that opening a FIFO someone left in the root cannot hang the worker (it is refused later,
/// as anything but a regular file is).
fn file_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK
}

/// Opens `rel` (relative, `.` for the root itself) beneath `root`.
pub(super) fn beneath(root: BorrowedFd<'_>, rel: &CStr) -> io::Result<File> {
    let fd = match openat2_beneath(root, rel) {
        // Kernels before 5.6 (or a seccomp filter) lack openat2: walk the path one component
        // at a time without following any symlink. Safe by the same argument (no component
        // can climb, none is followed), only stricter: in-root symlinks are refused too.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => walk_nofollow(root, rel)?,
        other => other?,
    };
    Ok(File::from(fd))
}

/// `struct open_how` of `<linux/openat2.h>`; libc's is `non_exhaustive`, so it cannot be
/// built with a literal.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(root, rel, {flags, 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS})`.
fn openat2_beneath(root: BorrowedFd<'_>, rel: &CStr) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: file_flags().bits() as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: the arguments are a live directory fd (borrowed for the call), a
        // NUL-terminated path that outlives the call, and a pointer to a properly laid out
        // `open_how` together with its exact size; the kernel only reads them.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                rel.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if ret >= 0 {
            // SAFETY: the kernel just returned this descriptor and nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The fallback: `openat` each directory with `O_NOFOLLOW | O_DIRECTORY`, then the last
/// component with `O_NOFOLLOW`.
fn walk_nofollow(root: BorrowedFd<'_>, rel: &CStr) -> io::Result<OwnedFd> {
    let bytes = rel.to_bytes();
    let mut parts = bytes.split(|&b| b == b'/').peekable();
    let mut dir: Option<OwnedFd> = None;
    while let Some(part) = parts.next() {
        let name = std::ffi::OsStr::from_bytes(part);
        let at = dir.as_ref().map_or(root, |d| d.as_fd());
        if parts.peek().is_some() {
            let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            dir = Some(nix::fcntl::openat(at, name, flags, Mode::empty())?);
        } else {
            let flags = file_flags() | OFlag::O_NOFOLLOW;
            return Ok(nix::fcntl::openat(at, name, flags, Mode::empty())?);
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOENT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("www/sub")).unwrap();
        std::fs::write(p.join("www/a.txt"), "A").unwrap();
        std::fs::write(p.join("www/sub/b.txt"), "B").unwrap();
        std::fs::write(p.join("secret.txt"), "S").unwrap();
        symlink("a.txt", p.join("www/in-link")).unwrap();
        symlink("sub", p.join("www/dir-link")).unwrap();
        symlink("../secret.txt", p.join("www/out-rel")).unwrap();
        symlink(p.join("secret.txt"), p.join("www/out-abs")).unwrap();
        symlink("/etc/passwd", p.join("www/passwd")).unwrap();
        symlink("..", p.join("www/up")).unwrap();
        let fd = root(&p.join("www")).unwrap();
        (dir, fd)
    }

    fn read(r: io::Result<File>) -> io::Result<String> {
        let mut s = String::new();
        r?.read_to_string(&mut s)?;
        Ok(s)
    }

    fn c(s: &str) -> std::ffi::CString {
        std::ffi::CString::new(s).unwrap()
    }

    #[test]
    fn openat2_follows_inside_and_refuses_outside() {
        let (_d, fd) = tree();
        let open = |p: &str| read(beneath(fd.as_fd(), &c(p)));
        assert_eq!(open("a.txt").unwrap(), "A");
        assert_eq!(open("sub/b.txt").unwrap(), "B");
        assert_eq!(open("in-link").unwrap(), "A");
        assert_eq!(open("dir-link/b.txt").unwrap(), "B");
        for p in [
            "out-rel",
            "out-abs",
            "passwd",
            "up/secret.txt",
            "../secret.txt",
            "/etc/passwd",
        ] {
            assert!(open(p).is_err(), "{p} must be refused");
        }
        assert_eq!(open("missing").unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn fallback_follows_no_symlink() {
        let (_d, fd) = tree();
        let open = |p: &str| read(walk_nofollow(fd.as_fd(), &c(p)).map(File::from));
        assert_eq!(open("a.txt").unwrap(), "A");
        assert_eq!(open("sub/b.txt").unwrap(), "B");
        for p in [
            "in-link",
            "dir-link/b.txt",
            "out-rel",
            "out-abs",
            "passwd",
            "up/secret.txt",
        ] {
            assert!(open(p).is_err(), "{p} must be refused");
        }
        assert!(walk_nofollow(fd.as_fd(), &c(".")).is_ok());
    }
}
