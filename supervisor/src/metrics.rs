//! The optional Prometheus endpoint: a non-blocking loopback listener and its connections in
//! the supervisor's one `poll`, no thread, and nothing here ever blocks the loop (issue 10:
//! each idle connection used to cost the loop 100 ms of a blocking read, so 30 idle local
//! connections stalled probing, reaping and signals for 3 s).
//!
//! Every connection is non-blocking and has one deadline ([`SCRAPE_DEADLINE`] from its accept)
//! for reading its request and writing the answer; at most [`MAX_SCRAPES`] are open at once.
//! When they are all taken, a new connection replaces the oldest one that has sent nothing
//! yet, so silent connections cannot keep a real scrape waiting in the backlog. The answer is
//! rendered once per wake-up from the current [`Status`] into a buffer that each ready
//! connection copies.
//!
//! When the supervisor's fd table is full, an accept borrows the fd reserve, so that
//! `forkd_supervisor_observing 0` can be scraped exactly when it matters; if even that fails,
//! the listener is left out of the `poll` for a second instead of spinning on a readable
//! socket it cannot accept from.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;

use crate::reserve::{self, Reserve};
use crate::status::Status;

/// How long one scrape may take, from accept to the last byte of the answer.
pub const SCRAPE_DEADLINE: Duration = Duration::from_secs(1);
/// Connections held at once.
pub const MAX_SCRAPES: usize = 16;
/// The most of a request that is read: the answer does not depend on it.
const MAX_REQUEST: usize = 8192;

enum Phase {
    /// Reading the request head (kept only to find its end).
    Reading(Vec<u8>),
    /// Writing the answer from `sent` on.
    Writing { answer: Vec<u8>, sent: usize },
}

struct Scrape {
    stream: TcpStream,
    deadline: Instant,
    phase: Phase,
}

pub struct Metrics {
    listener: TcpListener,
    paused_until: Option<Instant>,
    scrapes: Vec<Scrape>,
}

impl Metrics {
    pub fn bind(addr: SocketAddr) -> io::Result<Metrics> {
        // std's listener is CLOEXEC and sets SO_REUSEADDR.
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Metrics {
            listener,
            paused_until: None,
            scrapes: Vec::new(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What to poll: the listener (unless paused or full) and every open scrape.
    pub fn poll_fds(&self, now: Instant) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let mut out = Vec::new();
        let paused = self.paused_until.is_some_and(|t| now < t);
        if !paused && (self.scrapes.len() < MAX_SCRAPES || self.silent().is_some()) {
            out.push((self.listener.as_fd(), PollFlags::POLLIN));
        }
        for s in &self.scrapes {
            let flags = match s.phase {
                Phase::Reading(_) => PollFlags::POLLIN,
                Phase::Writing { .. } => PollFlags::POLLOUT,
            };
            out.push((s.stream.as_fd(), flags));
        }
        out
    }

    /// The next time something is due: a scrape's deadline or the end of a pause.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.scrapes
            .iter()
            .map(|s| s.deadline)
            .chain(self.paused_until)
            .min()
    }

    /// Accepts what waits, moves every scrape on as far as its socket allows without
    /// blocking, and drops those that are done or past their deadline. The answer is rendered
    /// from `status` at most once.
    pub fn serve(&mut self, now: Instant, reserve: &mut Reserve, status: &Status) {
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
        }
        let mut answer: Option<Vec<u8>> = None;
        let mut render = || answer.get_or_insert_with(|| render(status)).clone();
        // Those open first, so a request already waiting is read before its connection could
        // count as silent; then the new ones, which often bring their request along.
        self.scrapes
            .retain_mut(|s| now < s.deadline && advance(s, &mut render));
        self.accept(now, reserve);
        self.scrapes
            .retain_mut(|s| now < s.deadline && advance(s, &mut render));
    }

    /// The oldest connection that has sent nothing yet.
    fn silent(&self) -> Option<usize> {
        self.scrapes
            .iter()
            .position(|s| matches!(&s.phase, Phase::Reading(b) if b.is_empty()))
    }

    fn accept(&mut self, now: Instant, reserve: &mut Reserve) {
        // Bounded: each accepted connection either fills a free place or replaces a silent
        // one, and a burst longer than the table is left for the next wake-up.
        for _ in 0..MAX_SCRAPES {
            if self.paused_until.is_some() {
                return;
            }
            if self.scrapes.len() >= MAX_SCRAPES {
                match self.silent() {
                    Some(i) => {
                        self.scrapes.remove(i);
                    }
                    None => return,
                }
            }
            let listener = &self.listener;
            let accepted = match listener.accept() {
                // The reserve, for a scrape only when the table is full: the one question
                // an operator asks then is why the supervisor cannot observe.
                Err(e) if reserve::out_of_fds(&e) => {
                    reserve.with_room("answer a metrics scrape", || listener.accept())
                }
                other => other,
            };
            match accepted {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.scrapes.push(Scrape {
                        stream,
                        deadline: now + SCRAPE_DEADLINE,
                        phase: Phase::Reading(Vec::new()),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    tracing::warn!("metrics: accept failed: {e}; pausing for 1s");
                    self.paused_until = Some(now + Duration::from_secs(1));
                    return;
                }
            }
        }
    }
}

/// Moves one scrape on; `false` when it is over (answered, closed or failed).
fn advance(s: &mut Scrape, answer: &mut impl FnMut() -> Vec<u8>) -> bool {
    loop {
        match &mut s.phase {
            Phase::Reading(buf) => {
                let mut chunk = [0u8; 1024];
                match s.stream.read(&mut chunk) {
                    // Closed before a whole head: answer anyway, it may still read.
                    Ok(0) => {
                        s.phase = Phase::Writing {
                            answer: answer(),
                            sent: 0,
                        }
                    }
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        // Its content does not matter (every path gets the metrics); reading
                        // it keeps the close from turning into a reset that drops the answer.
                        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > MAX_REQUEST {
                            s.phase = Phase::Writing {
                                answer: answer(),
                                sent: 0,
                            };
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            Phase::Writing { answer, sent } => match s.stream.write(&answer[*sent..]) {
                Ok(n) => {
                    *sent += n;
                    if *sent == answer.len() {
                        let _ = s.stream.shutdown(Shutdown::Write);
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            },
        }
    }
}

/// The whole HTTP answer for `status`.
fn render(status: &Status) -> Vec<u8> {
    let body = status.prometheus();
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}
