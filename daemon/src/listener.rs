//! Listening sockets: bound here with socket2, or inherited from whoever started us through
//! the systemd socket-activation protocol (`LISTEN_PID`, `LISTEN_FDS`, fds from 3 on), which is
//! also how a supervisor or a previous incarnation hands a socket over. Inherited fds are taken
//! once (the variables are removed) and validated before use.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// The accept queue depth asked for; the kernel caps it at `net.core.somaxconn`.
pub const BACKLOG: i32 = 4096;

/// Why a listener could not be made or taken.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("unable to bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("inherited fd {fd} (LISTEN_FDS) is not usable: {reason}")]
    Inherited { fd: RawFd, reason: String },
}

/// Binds a TCP listener on `addr`: CLOEXEC from birth (socket2 uses SOCK_CLOEXEC),
/// SO_REUSEADDR so a restart is not refused by TIME_WAIT, IPv6 sockets IPv6-only so that
/// `[::]` and `0.0.0.0` can both be listed, and a deep backlog so bursts wait instead of
/// being refused.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    let make = || -> io::Result<TcpListener> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        if addr.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        sock.bind(&addr.into())?;
        sock.listen(BACKLOG)?;
        Ok(sock.into())
    };
    make().map_err(|source| ListenError::Bind { addr, source })
}

/// Takes the listening sockets passed by socket activation, if they are meant for this
/// process (`LISTEN_PID` is our pid). Each must be a listening TCP stream socket; each is
/// made CLOEXEC so it does not leak further. The variables are removed so nothing takes the
/// fds a second time.
pub fn inherit() -> Result<Vec<TcpListener>, ListenError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let n: i32 = fds.trim().parse().map_err(|_| ListenError::Inherited {
        fd: 3,
        reason: format!("LISTEN_FDS={fds:?} is not a number"),
    })?;
    (3..3 + n).map(take_inherited).collect()
}

fn take_inherited(fd: RawFd) -> Result<TcpListener, ListenError> {
    let bad = |reason: String| ListenError::Inherited { fd, reason };
    // Validate through a borrowed view first, so an fd we refuse is not closed by us.
    // SAFETY: fcntl(F_GETFD) only tells whether `fd` is open; it touches nothing.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(bad("not an open file descriptor".into()));
    }
    // SAFETY: the fd is open and was handed to this process by LISTEN_FDS, which makes this
    // process its owner; it is taken once, since `inherit` removed the variables.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let sock = Socket::from(owned);
    let check = || -> io::Result<Result<(), String>> {
        if sock.r#type()? != Type::STREAM {
            return Ok(Err("not a stream socket".into()));
        }
        if !sock.is_listener()? {
            return Ok(Err("not listening".into()));
        }
        if sock.local_addr()?.as_socket().is_none() {
            return Ok(Err("not an IP socket".into()));
        }
        sock.set_cloexec(true)?;
        Ok(Ok(()))
    };
    let reason = match check() {
        Ok(Ok(())) => return Ok(sock.into()),
        Ok(Err(reason)) => reason,
        Err(e) => e.to_string(),
    };
    // Not ours to use, and not ours to close either: something else may own that number.
    let _ = std::os::fd::IntoRawFd::into_raw_fd(sock);
    Err(bad(reason))
}

/// Asks the kernel to hand a connection to `accept` only once its first bytes have arrived,
/// waiting up to about `wait` for them (`TCP_DEFER_ACCEPT`, Apache's `AcceptFilter http data`,
/// nginx's `deferred`). A client that connects and sends nothing then costs a request socket in
/// the kernel's SYN queue, not a worker (prefork) nor a child (fork mode). Zero turns it off.
///
/// The kernel counts the wait in SYN-ACK retransmissions, rounding `wait` up to 1, 3, 7, 15,
/// 31... seconds; when they run out it hands the connection over anyway, so a worker must still
/// expect a socket with no data (its header timeout handles that). A connection completed by a
/// SYN cookie (the SYN queue overflowed) skips the wait. Protocols where the server speaks
/// first cannot use this; HTTP clients always speak first.
pub fn set_defer_accept(l: &TcpListener, wait: std::time::Duration) -> io::Result<()> {
    // Whole seconds, rounded up so that a sub-second wait does not turn the option off.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs: libc::c_int = secs.try_into().unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local; the fd is the
    // listener's own, open for as long as `l` is borrowed.
    let rc = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unsent bytes an event worker's connection may queue in the kernel (`TCP_NOTSENT_LOWAT`).
pub const NOTSENT_LOWAT: u32 = 128 * 1024;

/// Socket options an event worker's connections need, set once on the listener: Linux copies
/// a listener's TCP options into each socket it accepts, which saves two system calls per
/// connection (the reactor's tests check that this kernel does).
///
/// - `TCP_NODELAY`: small responses must not wait for Nagle (incident 004).
/// - `TCP_NOTSENT_LOWAT` of [`NOTSENT_LOWAT`]: a socket takes (and reports writable for) at
///   most that many bytes not yet sent. Without it a socket takes its whole send buffer, which
///   autotuning sizes from the window a fast path could use (about 4 MiB on loopback) even for
///   a client that reads nothing: a worker holding 500 slow readers of a large file would queue
///   gigabytes, and spend seconds of CPU doing it, while the others wait. Data in flight is not
///   limited, so a fast reader loses no throughput; it only takes more, smaller wake-ups.
pub fn tune_for_events(l: &TcpListener) -> io::Result<()> {
    let s = SockRef::from(l);
    s.set_tcp_nodelay(true)?;
    s.set_tcp_notsent_lowat(NOTSENT_LOWAT)
}

/// `TCP_NODELAY` on a listener, which every socket it accepts inherits (the reactor's tests
/// check that this kernel copies it): small responses must not wait for Nagle (incident 004),
/// and no child or worker spends a system call per connection to say so.
pub fn set_nodelay(l: &TcpListener) -> io::Result<()> {
    SockRef::from(l).set_tcp_nodelay(true)
}

/// The address a listener is bound to, as the kernel sees it (the real port after `:0`).
pub fn local_addr(l: &TcpListener) -> io::Result<SocketAddr> {
    l.local_addr()
}

/// Sets a receive timeout on a listener so that a blocking `accept` in a worker returns now
/// and then; this closes the window where a stop signal lands just before `accept` blocks.
pub fn set_accept_timeout(l: &TcpListener, t: std::time::Duration) -> io::Result<()> {
    SockRef::from(l).set_read_timeout(Some(t))
}

/// The raw fd, for the one place that must close a listener in a forked child.
pub(crate) fn raw(l: &TcpListener) -> RawFd {
    l.as_raw_fd()
}

/// Accepts one connection, CLOEXEC. Unlike std's `accept`, an `EINTR` is returned instead of
/// retried, so a stop signal wakes a worker blocked here at once.
pub fn accept(l: &TcpListener) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    let (sock, addr) = SockRef::from(l).accept()?;
    let peer = addr
        .as_socket()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    Ok((sock.into(), peer))
}

/// What a failed `accept` means to a loop that accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptFailure {
    /// Nothing is waiting (`EAGAIN`, or a blocking accept's timeout).
    Empty,
    /// A signal came first (`EINTR`), or one client's connection was aborted before it was
    /// taken (`ECONNABORTED`): look again.
    Again,
    /// Out of fds or memory: the connection stays queued, so accepting again at once would
    /// spin; pause.
    Exhausted,
    /// The listener was shut down (the master is stopping) or is gone: nothing will come, and
    /// retrying would spin.
    Closed,
    /// Anything else: log it and slow down, so that no error turns a loop into a spin.
    Other,
}

pub(crate) fn accept_failure(e: &io::Error) -> AcceptFailure {
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::WouldBlock, _) => AcceptFailure::Empty,
        (io::ErrorKind::Interrupted, _) | (_, Some(libc::ECONNABORTED)) => AcceptFailure::Again,
        _ if super::resource::is_exhausted(e) => AcceptFailure::Exhausted,
        (_, Some(libc::EINVAL | libc::EBADF | libc::ENOTSOCK)) => AcceptFailure::Closed,
        _ => AcceptFailure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    /// A connection that sends nothing is not handed to `accept`; its first byte hands it over.
    #[test]
    fn deferred_accept_waits_for_data() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        set_defer_accept(&l, Duration::from_millis(1500)).unwrap();
        let mut secs: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the live local `secs`.
        let rc = unsafe {
            libc::getsockopt(
                l.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&mut secs as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        // Rounded up to 2 s, then to what SYN-ACK retransmissions give: 3 s.
        assert_eq!(secs, 3);
        l.set_nonblocking(true).unwrap();
        let addr = local_addr(&l).unwrap();
        let mut quiet = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let e = accept(&l).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        quiet.write_all(b"G").unwrap();
        let got = crate::wait::until(Duration::from_secs(2), Duration::from_millis(10), || {
            accept(&l).is_ok()
        });
        assert!(got, "a connection with data is accepted");
        set_defer_accept(&l, Duration::ZERO).unwrap();
    }
}
