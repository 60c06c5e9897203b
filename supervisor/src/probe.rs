//! The health probe: one non-blocking HTTP/1.1 request (or a bare TCP connect, for readiness
//! by port) driven by the supervisor's single `poll`, so a slow child never blocks signals,
//! reaping or the watch.
//!
//! Its central job is to tell the child's failures from the supervisor's own. A refused
//! connection, a reset, a timeout or a 5xx are evidence against the child. Failing to create a
//! socket (EMFILE, ENFILE, ENOBUFS, ENOMEM), finding no ephemeral port (EADDRNOTAVAIL,
//! EAGAIN) or a supervisor that was itself not scheduled while the timeout ran are evidence of
//! nothing: [`Outcome::CannotObserve`] (incident 001: a hang-check daemon out of sockets
//! rebooted 113 healthy machines every 20 minutes).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use socket2::{Domain, Socket, Type};

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The child answered (HTTP status, or 0 for a bare connect).
    Healthy(u16),
    /// Evidence against the child.
    Failed(String),
    /// The supervisor could not look; says nothing about the child.
    CannotObserve(String),
}

/// The errors that are the prober's own trouble, not the target's: out of fds or memory (the
/// daemon crate's one list), or out of ephemeral ports.
pub fn observer_fault(e: &io::Error) -> bool {
    forkd_daemon::resource::is_exhausted(e)
        || matches!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL | libc::EAGAIN))
}

fn classify(what: &str, e: io::Error) -> Outcome {
    if observer_fault(&e) {
        Outcome::CannotObserve(format!("{what}: {e} (the supervisor's own limit)"))
    } else {
        Outcome::Failed(format!("{what}: {e}"))
    }
}

enum Phase {
    Connecting,
    Writing(usize),
    Reading(Vec<u8>),
}

/// A probe in flight.
pub struct Probe {
    sock: Socket,
    phase: Phase,
    request: Option<Vec<u8>>,
    pub deadline: Instant,
    started: Instant,
}

impl Probe {
    /// Starts a probe of `addr`; with `request` it is an HTTP exchange, without it a connect.
    /// An immediate outcome (no socket, refused at once) is returned as `Err`.
    pub fn start(
        addr: SocketAddr,
        request: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Probe, Outcome> {
        // socket2's `new` sets CLOEXEC atomically.
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)
            .map_err(|e| classify("cannot create a probe socket", e))?;
        sock.set_nonblocking(true)
            .map_err(|e| classify("cannot set up the probe socket", e))?;
        let now = Instant::now();
        let phase = match sock.connect(&addr.into()) {
            Ok(()) => Phase::Writing(0),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Phase::Connecting,
            Err(e) => return Err(classify(&format!("connect to {addr}"), e)),
        };
        let mut p = Probe {
            sock,
            phase,
            request,
            deadline: now + timeout,
            started: now,
        };
        if matches!(p.phase, Phase::Writing(_)) && p.request.is_none() {
            return Err(Outcome::Healthy(0));
        }
        // A connect that completed at once can write now.
        match p.advance() {
            Some(o) => Err(o),
            None => Ok(p),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    pub fn interest(&self) -> PollFlags {
        match self.phase {
            Phase::Connecting | Phase::Writing(_) => PollFlags::POLLOUT,
            Phase::Reading(_) => PollFlags::POLLIN,
        }
    }

    /// Makes what progress the socket allows; `Some` when the probe is over.
    pub fn advance(&mut self) -> Option<Outcome> {
        loop {
            match &mut self.phase {
                Phase::Connecting => match self.sock.take_error() {
                    Ok(None) => {
                        // Still connecting unless peer_addr says otherwise.
                        if self.sock.peer_addr().is_err() {
                            return None;
                        }
                        if self.request.is_none() {
                            return Some(Outcome::Healthy(0));
                        }
                        self.phase = Phase::Writing(0);
                    }
                    Ok(Some(e)) | Err(e) => return Some(classify("connect", e)),
                },
                Phase::Writing(sent) => {
                    let req = self.request.as_deref().unwrap_or_default();
                    match (&self.sock).write(&req[*sent..]) {
                        Ok(n) => {
                            *sent += n;
                            if *sent == req.len() {
                                self.phase = Phase::Reading(Vec::new());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Some(classify("send the request", e)),
                    }
                }
                Phase::Reading(buf) => {
                    let mut chunk = [0u8; 512];
                    match (&self.sock).read(&mut chunk) {
                        Ok(0) => {
                            return Some(status_outcome(buf).unwrap_or_else(|| {
                                Outcome::Failed("connection closed before a status line".into())
                            }))
                        }
                        Ok(n) => {
                            buf.extend_from_slice(&chunk[..n]);
                            if let Some(o) = status_outcome(buf) {
                                return Some(o);
                            }
                            if buf.len() > 8192 {
                                return Some(Outcome::Failed("no status line in 8 KiB".into()));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Some(classify("read the response", e)),
                    }
                }
            }
        }
    }

    /// The outcome once the deadline passed. `stalled` is how late the supervisor itself woke
    /// up: a timeout measured by a process that was not running proves nothing.
    pub fn expire(self, stalled: Duration) -> Outcome {
        let timeout = self.deadline.duration_since(self.started);
        if stalled > timeout / 2 {
            return Outcome::CannotObserve(format!(
                "the supervisor itself was not running for {stalled:?} while the probe waited"
            ));
        }
        let what = match self.phase {
            Phase::Connecting => "connect",
            Phase::Writing(_) => "send the request",
            Phase::Reading(_) => "read the status line",
        };
        Outcome::Failed(format!("no answer within {timeout:?} ({what})"))
    }
}

/// The outcome once `buf` holds a full status line: 2xx and 3xx are healthy.
fn status_outcome(buf: &[u8]) -> Option<Outcome> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = String::from_utf8_lossy(&buf[..end]);
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    Some(match code {
        Some(c) if version.starts_with("HTTP/1.") && (200..400).contains(&c) => Outcome::Healthy(c),
        Some(c) if version.starts_with("HTTP/1.") => Outcome::Failed(format!("HTTP status {c}")),
        _ => Outcome::Failed(format!("not an HTTP status line: {line:?}")),
    })
}

/// The request a probe sends: small, closing, identifiable in access logs.
pub fn http_request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: forkd-supervisor\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// What to probe: `request` makes it an HTTP exchange, without it a bare connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub request: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// The probe in flight and the generation of the machine's wishes it serves.
///
/// The machine cancels probes without a system call, by moving to a new generation
/// ([`Prober::cancel`]); the loop drops a probe of an older generation before it polls
/// ([`Prober::drop_cancelled`]), and an outcome carries the generation it was started in, so
/// one that was under way when the machine stopped wanting it (READY=1 arrived in the same
/// wake-up, the child was recycled) is recognised as stale and not held against anyone.
#[derive(Default)]
pub struct Prober {
    generation: u64,
    in_flight: Option<(u64, Probe)>,
}

impl Prober {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The probe in flight, if any, is no longer wanted. Pure: nothing is closed here.
    pub fn cancel(&mut self) {
        self.generation += 1;
    }

    /// A wanted probe is under way.
    pub fn busy(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|(g, _)| *g == self.generation)
    }

    /// Closes the socket of a probe that was cancelled.
    pub fn drop_cancelled(&mut self) {
        if !self.busy() {
            self.in_flight = None;
        }
    }

    /// Starts a probe of `target` in the current generation. An outcome known at once (no
    /// socket, refused, connected at once for a bare connect) is returned instead.
    pub fn start(&mut self, target: Target) -> Option<Outcome> {
        let Target {
            addr,
            request,
            timeout,
        } = target;
        match Probe::start(addr, request, timeout) {
            Ok(p) => {
                self.in_flight = Some((self.generation, p));
                None
            }
            Err(outcome) => {
                self.in_flight = None;
                Some(outcome)
            }
        }
    }

    /// The socket to poll and what for.
    pub fn poll_fd(&self) -> Option<(BorrowedFd<'_>, PollFlags)> {
        self.in_flight.as_ref().map(|(_, p)| (p.fd(), p.interest()))
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.in_flight.as_ref().map(|(_, p)| p.deadline)
    }

    /// Moves the probe on after its socket polled ready; its generation and outcome when over.
    pub fn advance(&mut self) -> Option<(u64, Outcome)> {
        let (generation, p) = self.in_flight.as_mut()?;
        let outcome = p.advance()?;
        let generation = *generation;
        self.in_flight = None;
        Some((generation, outcome))
    }

    /// The outcome of a probe whose deadline passed at `now`; `stalled` is how late the loop
    /// woke (see [`Probe::expire`]).
    pub fn expire(&mut self, now: Instant, stalled: Duration) -> Option<(u64, Outcome)> {
        if self.deadline().is_none_or(|d| now < d) {
            return None;
        }
        let (generation, p) = self.in_flight.take()?;
        Some((generation, p.expire(stalled)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn run(addr: SocketAddr, req: Option<Vec<u8>>, timeout: Duration) -> Outcome {
        let mut p = match Probe::start(addr, req, timeout) {
            Ok(p) => p,
            Err(o) => return o,
        };
        loop {
            let now = Instant::now();
            if now >= p.deadline {
                return p.expire(Duration::ZERO);
            }
            let mut fds = [nix::poll::PollFd::new(p.fd(), p.interest())];
            let ms = (p.deadline - now).as_millis().min(1000) as u16;
            nix::poll::poll(&mut fds, ms).unwrap();
            if let Some(o) = p.advance() {
                return o;
            }
        }
    }

    fn server(answer: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer);
        });
        addr
    }

    /// A cancelled probe's socket is closed before the next poll, and an outcome of the
    /// generation before is told apart from a current one.
    #[test]
    fn a_cancelled_probe_is_dropped_and_its_outcome_is_stale() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = Target {
            addr: l.local_addr().unwrap(),
            request: Some(http_request("x", "/")),
            timeout: Duration::from_millis(50),
        };
        let mut prober = Prober::default();
        assert_eq!(prober.start(target.clone()), None);
        assert!(prober.busy() && prober.poll_fd().is_some());
        let started_in = prober.generation();
        prober.cancel();
        assert!(!prober.busy());
        prober.drop_cancelled();
        assert!(prober.poll_fd().is_none() && prober.deadline().is_none());
        assert_eq!(prober.start(target), None);
        let deadline = prober.deadline().unwrap();
        assert_eq!(
            prober.expire(deadline - Duration::from_millis(1), Duration::ZERO),
            None
        );
        let (generation, outcome) = prober.expire(deadline, Duration::ZERO).unwrap();
        assert_ne!(generation, started_in);
        assert_eq!(generation, prober.generation());
        assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
        assert!(!prober.busy());
    }

    #[test]
    fn statuses() {
        let req = || Some(http_request("x", "/"));
        let t = Duration::from_secs(5);
        assert_eq!(
            run(server(b"HTTP/1.1 200 OK\r\n\r\n"), req(), t),
            Outcome::Healthy(200)
        );
        assert_eq!(
            run(server(b"HTTP/1.0 301 M\r\n"), req(), t),
            Outcome::Healthy(301)
        );
        assert!(matches!(
            run(server(b"HTTP/1.1 503 Busy\r\n\r\n"), req(), t),
            Outcome::Failed(m) if m.contains("503")
        ));
        assert!(matches!(run(server(b""), req(), t), Outcome::Failed(_)));
        assert!(matches!(
            run(server(b"SSH-2.0\r\n"), req(), t),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn refused_is_the_childs_fault_and_silence_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Accepted by the kernel (backlog) but never answered.
        let o = run(
            addr,
            Some(http_request("x", "/")),
            Duration::from_millis(200),
        );
        assert!(
            matches!(&o, Outcome::Failed(m) if m.contains("no answer")),
            "{o:?}"
        );
        drop(l);
        let o = run(addr, None, Duration::from_secs(2));
        assert!(
            matches!(&o, Outcome::Failed(m) if m.contains("refused")),
            "{o:?}"
        );
    }

    #[test]
    fn own_trouble_is_not_evidence() {
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
        ] {
            let o = classify("socket", io::Error::from_raw_os_error(errno));
            assert!(matches!(o, Outcome::CannotObserve(_)), "{errno}");
        }
        let o = classify("connect", io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert!(matches!(o, Outcome::Failed(_)));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = Probe::start(
            l.local_addr().unwrap(),
            Some(vec![]),
            Duration::from_millis(100),
        );
        if let Ok(p) = p {
            let o = p.expire(Duration::from_secs(3));
            assert!(matches!(o, Outcome::CannotObserve(_)), "{o:?}");
        }
    }
}
