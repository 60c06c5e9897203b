//! Opening a file beneath the document root, race-free.
//!
//! The relative path comes from `path::resolve` (no `.` or `..` components, dot-files checked
//! against the allow-list). What it cannot see are symlinks: `openat2` with `RESOLVE_BENEATH`
//! makes the kernel refuse any resolution, symlinks included, that would leave the root,
//! atomically with the open, so swapping a directory for a symlink between a check and the
//! open wins nothing. Symlinks that stay inside the root are followed, but then the dot rule is
//! checked again on what was actually opened: a `link -> .git` must not serve `.git/config`
//! as `/link/config`. Both system calls go through nix's safe wrappers.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::path::{self, Dots};

/// Why a file beneath the root was not opened.
#[derive(Debug)]
pub(super) enum Refused {
    /// The system refused, or there is nothing there.
    Os(io::Error),
    /// What the path resolved to, through symlinks, has a dot component the rule does not
    /// allow.
    Hidden,
}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Refused {
        Refused::Os(e)
    }
}

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

/// Opens `rel` (relative, `.` for the root itself) beneath `root`, refusing a file that
/// symlinks inside the root lead to a dot path `dots` does not allow.
///
/// The common case costs one `openat2` that follows no symlink, so the opened file is `rel`
/// itself, which `path::resolve` already checked. Only when that meets a symlink (`ELOOP`) is
/// the file opened again following symlinks, and its real place beneath the root read back.
pub(super) fn beneath(root: BorrowedFd<'_>, rel: &CStr, dots: Dots<'_>) -> Result<File, Refused> {
    beneath_as(root, rel, dots, file_flags()).map(File::from)
}

/// Opens the directory `rel` (`.` for the root) beneath `root` for reading its entries, by
/// the same rules as [`beneath`].
pub(super) fn dir_beneath(
    root: BorrowedFd<'_>,
    rel: &CStr,
    dots: Dots<'_>,
) -> Result<OwnedFd, Refused> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    beneath_as(root, rel, dots, flags)
}

/// Whether `rel` could be served, without opening it for reading (`O_PATH`): a listing asks
/// this of each symlink it meets, so that it lists only what a request for it would find.
pub(super) fn reachable(root: BorrowedFd<'_>, rel: &CStr, dots: Dots<'_>) -> Option<OwnedFd> {
    beneath_as(root, rel, dots, OFlag::O_PATH | OFlag::O_CLOEXEC).ok()
}

/// [`beneath`] with the open's own flags.
fn beneath_as(
    root: BorrowedFd<'_>,
    rel: &CStr,
    dots: Dots<'_>,
    flags: OFlag,
) -> Result<OwnedFd, Refused> {
    let fd = match openat2_beneath(root, rel, flags, ResolveFlag::RESOLVE_NO_SYMLINKS) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let fd = openat2_beneath(root, rel, flags, ResolveFlag::empty())?;
            match real_rel(root, fd.as_fd()) {
                Some(real) if path::dots_allowed(&real, dots) => fd,
                Some(_) => return Err(Refused::Hidden),
                // Where the symlinks led cannot be read back (no `/proc`, in a chroot say):
                // refuse every symlinked path, as the fallback below does.
                None => return Err(io::Error::from_raw_os_error(libc::ELOOP).into()),
            }
        }
        // Kernels before 5.6 (or a seccomp filter) lack openat2: walk the path one component
        // at a time without following any symlink. Safe by the same argument (no component
        // can climb, none is followed), only stricter: in-root symlinks are refused too. The
        // file opened is then `rel` itself, so the dot rule is checked on `rel`.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => fallback(root, rel, dots, flags)?,
        Err(e) => return Err(e.into()),
    };
    Ok(fd)
}

/// Without openat2: the walk, after the dot rule on `rel`, which is what the walk opens.
fn fallback(
    root: BorrowedFd<'_>,
    rel: &CStr,
    dots: Dots<'_>,
    flags: OFlag,
) -> Result<OwnedFd, Refused> {
    if !path::dots_allowed(rel.to_bytes(), dots) {
        return Err(Refused::Hidden);
    }
    Ok(walk_nofollow(root, rel, flags)?)
}

/// Where `file` lies beneath `root`: its path relative to the root's, both read back from
/// `/proc/self/fd` in this process (so both as seen from its current root, chroot or not).
/// Read each time rather than cached: it is the rare, symlinked path, and a root renamed
/// since would otherwise make every symlinked file look outside it. `None` when either cannot
/// be read or the file's path does not start with the root's (the root renamed between the
/// two reads, say): the caller then refuses.
fn real_rel(root: BorrowedFd<'_>, file: BorrowedFd<'_>) -> Option<Vec<u8>> {
    let root_path = fd_path(root).ok()?;
    let file_path = fd_path(file).ok()?;
    let rest = file_path.strip_prefix(root_path.as_slice())?;
    if root_path == b"/" {
        return Some(rest.to_vec());
    }
    match rest {
        [] => Some(Vec::new()),
        [b'/', beneath @ ..] => Some(beneath.to_vec()),
        _ => None,
    }
}

/// The path `/proc/self/fd/N` names for `fd`.
fn fd_path(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(nix::fcntl::readlink(link.as_str())?.into_vec())
}

/// `openat2(root, rel, {flags, 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | extra})`.
fn openat2_beneath(
    root: BorrowedFd<'_>,
    rel: &CStr,
    flags: OFlag,
    extra: ResolveFlag,
) -> io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS | extra);
    loop {
        match nix::fcntl::openat2(root, rel, how) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return Ok(r?),
        }
    }
}

/// The fallback: `openat` each directory with `O_NOFOLLOW | O_DIRECTORY`, then the last
/// component with `flags | O_NOFOLLOW`.
fn walk_nofollow(root: BorrowedFd<'_>, rel: &CStr, flags: OFlag) -> io::Result<OwnedFd> {
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
            let last = flags | OFlag::O_NOFOLLOW;
            return Ok(nix::fcntl::openat(at, name, last, Mode::empty())?);
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOENT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    const NO_DOTS: Dots<'static> = Dots {
        all: false,
        allow: &[],
    };

    fn tree() -> (tempfile::TempDir, OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("www/sub")).unwrap();
        std::fs::create_dir_all(p.join("www/.git")).unwrap();
        std::fs::create_dir_all(p.join("www/.well-known/acme")).unwrap();
        std::fs::write(p.join("www/a.txt"), "A").unwrap();
        std::fs::write(p.join("www/sub/b.txt"), "B").unwrap();
        std::fs::write(p.join("www/.git/config"), "G").unwrap();
        std::fs::write(p.join("www/.well-known/acme/t"), "T").unwrap();
        std::fs::write(p.join("secret.txt"), "S").unwrap();
        symlink("a.txt", p.join("www/in-link")).unwrap();
        symlink("sub", p.join("www/dir-link")).unwrap();
        symlink("../secret.txt", p.join("www/out-rel")).unwrap();
        symlink(p.join("secret.txt"), p.join("www/out-abs")).unwrap();
        symlink("/etc/passwd", p.join("www/passwd")).unwrap();
        symlink("..", p.join("www/up")).unwrap();
        // Symlinks to dot paths: the request names no dot, what it opens does.
        symlink(".git", p.join("www/git-link")).unwrap();
        symlink(".git/config", p.join("www/config-link")).unwrap();
        symlink("sub/../.git", p.join("www/sneaky")).unwrap();
        symlink(".well-known", p.join("www/wk-link")).unwrap();
        symlink(p.join("www/.git"), p.join("www/abs-git")).unwrap();
        let fd = root(&p.join("www")).unwrap();
        (dir, fd)
    }

    fn read(r: Result<File, Refused>) -> Result<String, Refused> {
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
        let open = |p: &str| read(beneath(fd.as_fd(), &c(p), NO_DOTS));
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
            assert!(
                matches!(open(p), Err(Refused::Os(_))),
                "{p} must be refused"
            );
        }
        match open("missing") {
            Err(Refused::Os(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
            other => panic!("missing: {other:?}"),
        }
    }

    #[test]
    fn symlinks_into_dot_paths_are_hidden_unless_allowed() {
        let (_d, fd) = tree();
        let allow = vec![".well-known".to_string()];
        let well_known = Dots {
            all: false,
            allow: &allow,
        };
        let open = |p: &str, dots| read(beneath(fd.as_fd(), &c(p), dots));
        for p in ["git-link/config", "config-link", "sneaky/config"] {
            assert!(
                matches!(open(p, well_known), Err(Refused::Hidden)),
                "{p} must be hidden"
            );
        }
        // An absolute symlink is refused by RESOLVE_BENEATH before any dot rule.
        assert!(matches!(
            open("abs-git/config", well_known),
            Err(Refused::Os(_))
        ));
        // A symlink to a directory that is no dot path, and one into an allowed prefix.
        assert_eq!(open("dir-link/b.txt", well_known).unwrap(), "B");
        assert_eq!(open("wk-link/acme/t", well_known).unwrap(), "T");
        assert!(matches!(
            open("wk-link/acme/t", NO_DOTS),
            Err(Refused::Hidden)
        ));
        // Everything allowed: served, as before.
        let all = Dots {
            all: true,
            allow: &[],
        };
        assert_eq!(open("git-link/config", all).unwrap(), "G");
        assert_eq!(open("config-link", all).unwrap(), "G");
    }

    #[test]
    fn real_rel_reads_the_place_beneath_the_root() {
        let (d, fd) = tree();
        let file = beneath(fd.as_fd(), &c("dir-link/b.txt"), NO_DOTS).unwrap();
        assert_eq!(
            real_rel(fd.as_fd(), file.as_fd()).as_deref(),
            Some(&b"sub/b.txt"[..])
        );
        let same = root(&d.path().join("www")).unwrap();
        assert_eq!(
            real_rel(fd.as_fd(), same.as_fd()).as_deref(),
            Some(&b""[..])
        );
        // A sibling whose name merely starts like the root's is not beneath it.
        std::fs::create_dir(d.path().join("www2")).unwrap();
        let sibling = root(&d.path().join("www2")).unwrap();
        assert_eq!(real_rel(fd.as_fd(), sibling.as_fd()), None);
        assert_eq!(
            fd_path(fd.as_fd()).unwrap(),
            d.path().join("www").as_os_str().as_bytes()
        );
    }

    #[test]
    fn fallback_follows_no_symlink() {
        let (_d, fd) = tree();
        let open = |p: &str| {
            let mut s = String::new();
            File::from(walk_nofollow(fd.as_fd(), &c(p), file_flags())?).read_to_string(&mut s)?;
            io::Result::Ok(s)
        };
        assert_eq!(open("a.txt").unwrap(), "A");
        assert_eq!(open("sub/b.txt").unwrap(), "B");
        for p in [
            "in-link",
            "dir-link/b.txt",
            "out-rel",
            "out-abs",
            "passwd",
            "up/secret.txt",
            "git-link/config",
        ] {
            assert!(open(p).is_err(), "{p} must be refused");
        }
        assert!(walk_nofollow(fd.as_fd(), &c("."), file_flags()).is_ok());
    }

    #[test]
    fn fallback_applies_the_dot_rule() {
        let (_d, fd) = tree();
        let allow = vec![".well-known".to_string()];
        let dots = Dots {
            all: false,
            allow: &allow,
        };
        let open = |p: &str, dots| fallback(fd.as_fd(), &c(p), dots, file_flags());
        assert!(matches!(open(".git/config", dots), Err(Refused::Hidden)));
        assert!(matches!(open("git-link/config", dots), Err(Refused::Os(_))));
        assert!(open(".well-known/acme/t", dots).is_ok());
        assert!(open("a.txt", dots).is_ok());
        let all = Dots {
            all: true,
            allow: &[],
        };
        assert!(open(".git/config", all).is_ok());
    }
}
