//! Privileges: a master started as root binds its ports and stays root (so that it can
//! re-read its configuration and reopen logs); every child drops to an unprivileged user,
//! optionally inside a chroot, before it touches a connection.
//!
//! The user is looked up in the master (getpwnam reads files and may allocate); the child only
//! makes the async-signal-safe system calls `chroot`, `chdir`, `setgroups`, `setgid`, `setuid`.

use std::ffi::CString;
use std::io;
use std::path::PathBuf;

use nix::unistd::{Gid, Uid, User};

/// Who children run as, resolved in the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub chroot: Option<CString>,
}

/// Why the identity of children could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("unknown user {0:?} (--user)")]
    UnknownUser(String),
    #[error("unable to look up user {user:?}: {source}")]
    Lookup { user: String, source: nix::Error },
    #[error("refusing to serve as root: children would run as uid 0; choose --user, or pass --allow-root if you really mean it")]
    Root,
    #[error("--chroot {0:?} needs a root start (only root may chroot)")]
    ChrootNotRoot(PathBuf),
    #[error("--chroot path {0:?} contains a NUL byte")]
    ChrootNul(PathBuf),
}

/// Settles who children run as. When not started as root there is nothing to drop and
/// `Ok(None)` is returned. As root, `user` is looked up; uid 0 is refused unless `allow_root`.
pub fn resolve(
    user: &str,
    chroot: Option<PathBuf>,
    allow_root: bool,
) -> Result<Option<Credentials>, PrivError> {
    if !Uid::effective().is_root() {
        return match chroot {
            Some(c) => Err(PrivError::ChrootNotRoot(c)),
            None => Ok(None),
        };
    }
    let u = User::from_name(user)
        .map_err(|source| PrivError::Lookup {
            user: user.into(),
            source,
        })?
        .ok_or_else(|| PrivError::UnknownUser(user.into()))?;
    if u.uid.is_root() && !allow_root {
        return Err(PrivError::Root);
    }
    let chroot = match chroot {
        Some(p) => Some(
            CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| PrivError::ChrootNul(p))?,
        ),
        None => None,
    };
    Ok(Some(Credentials {
        name: u.name,
        uid: u.uid,
        gid: u.gid,
        chroot,
    }))
}

/// In a freshly forked child: enter the chroot and become the unprivileged user, for good
/// (the saved set-user-ID is replaced too, so there is no way back).
pub fn drop_to(c: &Credentials) -> io::Result<()> {
    if let Some(dir) = &c.chroot {
        nix::unistd::chroot(dir.as_c_str())?;
        nix::unistd::chdir("/")?;
    }
    nix::unistd::setgroups(&[c.gid])?;
    nix::unistd::setresgid(c.gid, c.gid, c.gid)?;
    nix::unistd::setresuid(c.uid, c.uid, c.uid)?;
    Ok(())
}
