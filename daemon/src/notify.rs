//! Readiness: the systemd notify protocol (`READY=1`, `RELOADING=1`, `STOPPING=1`,
//! `WATCHDOG=1`, `STATUS=...` datagrams to `$NOTIFY_SOCKET`), which `forkd-supervisor` also
//! speaks. Without `NOTIFY_SOCKET` every call is a no-op.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The watchdog interval asked of this process (`WATCHDOG_USEC`, sd_watchdog_enabled(3)),
/// read once and removed from the environment with `WATCHDOG_PID`, so no child takes it for
/// its own. Ignored when `WATCHDOG_PID` names another process, or is zero. Pings are due every
/// half of it.
pub fn watchdog_from_env() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    let for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_none_or(|p| p == std::process::id());
    std::env::remove_var("WATCHDOG_USEC");
    std::env::remove_var("WATCHDOG_PID");
    (for_us && usec > 0).then(|| std::time::Duration::from_micros(usec))
}

/// Where notifications go, read once from the environment.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace) and removes it
    /// from the environment, so children never notify in the daemon's name.
    pub fn from_env() -> io::Result<Notifier> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(Notifier { target: None });
        };
        std::env::remove_var("NOTIFY_SOCKET");
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.split_first() {
            Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
            Some((b'/', _)) => SocketAddr::from_pathname(&path)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("NOTIFY_SOCKET={path:?} is neither an absolute path nor @abstract"),
                ))
            }
        };
        // std creates sockets with SOCK_CLOEXEC.
        let sock = UnixDatagram::unbound()?;
        Ok(Notifier {
            target: Some((sock, addr)),
        })
    }

    /// A notifier that never sends (tests, or when the environment says nothing).
    pub fn none() -> Notifier {
        Notifier { target: None }
    }

    /// Sends one notification such as `"READY=1\nSTATUS=serving"`.
    pub fn send(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Some((sock, addr)) => sock.send_to_addr(state.as_bytes(), addr).map(drop),
            None => Ok(()),
        }
    }
}
