//! One connection's life: read a head, answer, log, discard any body exactly, and go round
//! again while keep-alive allows.
//!
//! The fast path of a keep-alive request is one `read` of the whole head and one gathered
//! send of head and body, when the process's file cache holds the file (`cache`; otherwise
//! the file's `openat2`, `fstat`, `read` and `close` come between): no timer syscalls, no
//! allocation (all buffers live as long as the connection). Timeouts are armed only when a wait is needed:
//! `SO_RCVTIMEO` holds the idle keep-alive time, or what is left of the head's deadline while
//! a head is partly in; `SO_SNDTIMEO` is set the first time a send would block.
//!
//! The child's signal handlers have no `SA_RESTART`, so a blocking call returns `EINTR` when
//! the master asks for a graceful stop (a reload, a log reopen it cannot do in place, a
//! shutdown). A request in flight (or the first of a connection just accepted) is finished and
//! answered with `Connection: close`. An idle keep-alive connection is not closed at once:
//! a busy client's next request is usually already on its way, and closing under it makes it
//! fail (a client may retry a request that got no response byte, RFC 9112 section 9.3.1, but
//! not all do). So the connection waits [`RETIRE_GRACE`] for that request and answers it with
//! `Connection: close`; only a connection that stayed idle that long is closed, with a
//! half-close and a short drain, so that a request that still crosses our FIN meets a clean
//! end rather than a reset. That last race cannot be closed from the server's side; the grace
//! makes it need a client that pauses about as long as the grace and then sends.
//!
//! forkd never uses a request body, so it does not wait for one before answering: a body that
//! has not fully arrived with its head is discarded after the response, exactly, so the next
//! request's framing holds. A client with Nagle on sends a small body in a second segment
//! only once the first is acknowledged, and a delayed ACK would hold it (and the answer) for
//! 40 ms; our response carries that ACK at once, and the body's own ACK is sent as soon as it
//! is read (`TCP_QUICKACK`), since no response follows it to carry it and the client's next
//! request would wait for it just the same. A body found malformed or too large only
//! after the response can no longer be answered with a status: the connection ends, counted.
//! The one exception is a response sent by `sendfile` (a large file): a blocking worker that
//! waits in `sendfile` on a client that waits to finish sending its body would deadlock until
//! the send timeout, so such a body is discarded first.
//!
//! In a prefork pool, keep-alive clients beyond the number of workers wait in the accept
//! queue until some connection ends. When every worker is busy and a connection is queued
//! (`worker::clients_waiting`), a connection that has had its worker for [`TURN`] ends after
//! the current response with `Connection: close`, so clients take turns instead of starving
//! (counted as `keepalive_yielded`). The client was told, so unless it already sent more the
//! close is immediate, not a drain.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::MsgFlags;
use socket2::SockRef;

use super::answer::{self, Env};
use super::body::{self, Discard};
use super::clock::{self, Clock};
use super::log::{self, Entry};
use super::parse::{self, Body, Head};
use super::pressure;
use super::reply::{Payload, Scratch};
use super::respond::{self, send_failed, Persist, Sender};
use super::{Config, Docroot, Hit, Site};
use forkd_daemon::worker::{clients_waiting, stop_requested};

/// Room after a maximal head for reading (and discarding) body bytes and pipelined requests.
const BODY_ROOM: usize = 16 * 1024;

/// How long a retiring child waits for the next request of an idle keep-alive connection
/// before it closes it. A closed-loop client's next request arrives within a round trip (well
/// under a millisecond on a LAN, tens on a loaded machine), so this is generous for it, and
/// it bounds what a truly idle connection adds to a reload or a stop.
pub(super) const RETIRE_GRACE: Duration = Duration::from_millis(200);

/// How long a retiring child drains a connection it half-closed (instead of the full
/// `linger_timeout`, so a stop is not held up): long enough for a client that read our
/// `Connection: close` to close its side.
pub(super) const RETIRE_DRAIN: Duration = Duration::from_millis(200);

/// How long a connection keeps its worker, at least, before it yields to clients queued for
/// one. A turn of a few requests pays for the reconnect (accept, close, a fresh read) that
/// yielding costs, while a queued client waits about `queued / workers` turns. Measured with
/// wrk, 64 keep-alive connections on 16 workers and a 2 KB file on 2 busy cores: yielding
/// after every response gave about 11,000 requests/s, a 3 ms turn about 17,000 at a p99 of
/// 12-20 ms, against 27,000 and a p99 of 1.7 s (and timeouts) with 48 clients starved.
const TURN: Duration = Duration::from_millis(3);

/// The buffers of a connection, kept by the process between connections: a prefork worker
/// allocates and zeroes them once, not once per connection, and a per-connection child
/// inherits them from the master (see [`Site::prepare`]), so it pays only for the pages it
/// writes to instead of allocating and zeroing 24 KiB.
#[derive(Default)]
pub(super) struct Buffers {
    pub(super) input: Vec<u8>,
    pub(super) scratch: Scratch,
}

impl Buffers {
    /// Makes sure the input buffer is the size `cfg` asks for (the buffers a process
    /// inherited may have been made for another configuration, or not at all).
    pub(super) fn fit(&mut self, cfg: &Config) {
        if self.input.len() != cfg.max_header_bytes.max(1024) + BODY_ROOM {
            *self = Buffers::new(cfg);
        }
    }

    pub(super) fn new(cfg: &Config) -> Buffers {
        Buffers {
            input: vec![0; cfg.max_header_bytes.max(1024) + BODY_ROOM],
            scratch: Scratch {
                out: Vec::with_capacity(512),
                file: Vec::with_capacity(4096),
                path: Vec::with_capacity(256),
                line: Vec::with_capacity(512),
                rule_path: Vec::with_capacity(256),
                matches: Vec::with_capacity(8),
                types: Default::default(),
                modified: Default::default(),
            },
        }
    }
}

pub(super) fn serve(site: &mut Site, sock: &TcpStream, peer: SocketAddr) -> u64 {
    let mut bufs = std::mem::take(&mut site.buffers);
    bufs.fit(&site.config);
    let cfg = &site.config;
    let mut conn = Conn {
        cfg,
        root: &site.docroot,
        vhosts: &site.vhosts,
        log: &mut site.log,
        sender: Sender::new(cfg.send_timeout, cfg.min_send_rate),
        sock,
        peer,
        accepted: Instant::now(),
        input: Input {
            buf: bufs.input,
            start: 0,
            end: 0,
            rcvtimeo: None,
            fresh: true,
        },
        scratch: bufs.scratch,
        // The master's, ticked just before the fork (`Site::before_fork`): within the same
        // second a child formats no date.
        clock: site.clock.clone(),
        served: 0,
        retired_idle: false,
        yielded: false,
    };
    conn.run();
    let served = conn.served;
    let mut scratch = conn.scratch;
    for v in [
        &mut scratch.out,
        &mut scratch.file,
        &mut scratch.path,
        &mut scratch.line,
    ] {
        v.clear();
    }
    site.buffers = Buffers {
        input: conn.input.buf,
        scratch,
    };
    served
}

/// How a connection goes on after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Again,
    /// Close now: the client asked to, or it is gone.
    Close,
    /// Half-close and drain before closing: the client may still be sending.
    Linger,
}

/// Why a body could not be discarded.
enum BodyEnd {
    Refused(u16),
    /// The peer went away or stalled: nothing more to say.
    Gone,
    /// Not all of it is in yet, and the caller asked not to wait.
    Pending,
}

struct Input {
    /// Received bytes not yet consumed are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// What `SO_RCVTIMEO` is set to, to skip `setsockopt` when it already fits.
    rcvtimeo: Option<Duration>,
    /// No read has happened yet: try one without blocking (and without arming a timeout).
    fresh: bool,
}

struct Conn<'a> {
    cfg: &'a Config,
    root: &'a Docroot,
    vhosts: &'a super::VHosts,
    log: &'a mut super::AccessLog,
    sender: Sender,
    sock: &'a TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    input: Input,
    scratch: Scratch,
    clock: Clock,
    served: u64,
    /// The child is retiring and the connection stayed idle through the grace: it ends with a
    /// half-close and a drain instead of a plain close.
    retired_idle: bool,
    /// The connection was ended to give clients waiting for a worker their turn: its drain is
    /// the short one.
    yielded: bool,
}

impl Conn<'_> {
    fn run(&mut self) {
        loop {
            let next = match self.read_head() {
                Ok(Some(head)) => self.exchange(&head),
                Ok(None) if self.retired_idle => Next::Linger,
                Ok(None) => Next::Close,
                Err(status) => self.refuse(status),
            };
            match next {
                Next::Again => {}
                Next::Close => return,
                Next::Linger => return self.linger(),
            }
        }
    }

    /// Waits for a complete head at `buf[start..]`. `Ok(None)`: the connection ends quietly
    /// (peer closed, idle timeout, graceful stop between requests). `Err(status)`: refuse.
    fn read_head(&mut self) -> Result<Option<Head>, u16> {
        // The first request's head is due a header timeout after the accept; later ones are
        // due a header timeout after their first byte, and may be awaited for the idle time.
        let mut deadline =
            (self.served == 0).then(|| clock::after(self.accepted, self.cfg.header_timeout));
        // Set once a stop is asked for while no byte of a next request is in: how long that
        // request is still awaited (a fresh connection's first request always is).
        let mut grace: Option<Instant> = None;
        loop {
            let input = &mut self.input;
            if input.start < input.end {
                match parse::parse(input.pending(), self.cfg) {
                    Ok(Some(head)) => return Ok(Some(head)),
                    Ok(None) => {}
                    Err(e) => return Err(e.status()),
                }
                deadline
                    .get_or_insert_with(|| clock::after(Instant::now(), self.cfg.header_timeout));
            } else if self.served > 0 && stop_requested() {
                grace.get_or_insert_with(|| clock::after(Instant::now(), RETIRE_GRACE));
            }
            input.make_room();
            let (deadline, idle) = super::pressure::apply(deadline, self.cfg);
            let mut timeout = match deadline {
                None => idle,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return self.head_timed_out(),
                },
            };
            if let (None, Some(g)) = (deadline, grace) {
                match g.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => timeout = timeout.min(left),
                    _ => {
                        self.retired_idle = true;
                        return Ok(None);
                    }
                }
            }
            match input.fill(self.sock, timeout) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The grace ran out: the top of the loop ends the connection.
                Err(e) if is_timeout(&e) && grace.is_some() => {}
                Err(e) if is_timeout(&e) => {
                    if deadline.is_none() {
                        Hit::KeepaliveTimeout.count();
                        return Ok(None);
                    }
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "read failed");
                    return Ok(None);
                }
            }
        }
    }

    /// 408 if part of a request came in, else a quiet close.
    fn head_timed_out(&self) -> Result<Option<Head>, u16> {
        if self.input.start < self.input.end {
            Err(408)
        } else {
            Hit::HeaderTimeout.count();
            Ok(None)
        }
    }

    /// Answers a head that was refused (or never completed) and ends the connection.
    fn refuse(&mut self, status: u16) -> Next {
        Hit::of_refusal(status).count();
        self.clock.tick();
        let s = &mut self.scratch;
        let reply = respond::error(
            &mut s.out,
            status,
            self.cfg,
            self.clock.http(),
            Persist::Close,
            false,
        );
        if let Err(e) = self.sender.send(self.sock, &reply, s) {
            send_failed(&self.peer, &e);
            return Next::Close;
        }
        let entry = Entry {
            peer: self.peer.ip(),
            time: self.clock.clf(),
            request: log::refused_line(self.input.pending()),
            status,
            body_bytes: reply.body_len(),
            referer: None,
            user_agent: None,
        };
        log::record(self.log, &mut self.scratch.line, &entry);
        Next::Linger
    }

    /// One request whose head is at `buf[start..]`: body, answer, log, bookkeeping.
    fn exchange(&mut self, head: &Head) -> Next {
        self.clock.tick();
        let client_keeps = respond::client_keeps(head);
        let mut we_keep =
            self.served + 1 < self.cfg.max_requests_per_connection && !stop_requested();
        let mut linger = false;
        let mut next = self.input.start + head.len;
        // The body is still on its way: it is discarded after the response.
        let mut body_after = false;
        if head.body != Body::None {
            if head.expect_continue {
                // RFC 9110 section 10.1.1: answer with the final status at once instead of
                // inviting the body, and say the connection ends, as the body is not read.
                we_keep = false;
                linger = true;
            } else {
                match self.discard_body(head, false) {
                    Ok(n) => next = n,
                    Err(BodyEnd::Pending) => body_after = true,
                    Err(BodyEnd::Refused(status)) => return self.refuse(status),
                    Err(BodyEnd::Gone) => return Next::Close,
                }
            }
        }
        if client_keeps && we_keep && self.accepted.elapsed() >= TURN && clients_waiting() {
            we_keep = false;
            self.yielded = true;
            Hit::KeepaliveYielded.count();
        }
        let persist = Persist::choose(client_keeps && we_keep, head.minor);

        // `start` is where the head just parsed began, within the buffer.
        let req = self.input.buf.get(self.input.start..).unwrap_or_default();
        let env = Env {
            cfg: self.cfg,
            root: self.root,
            vhosts: self.vhosts,
            date: self.clock.http(),
            date_secs: self.clock.secs(),
        };
        let reply = match answer::decide(&env, req, head, persist, &mut self.scratch) {
            Ok(reply) => reply,
            Err(e) => {
                send_failed(&self.peer, &e);
                return Next::Close;
            }
        };
        if body_after && matches!(reply.payload, Payload::File { .. }) {
            // Not while a blocking `sendfile` waits on a client that may itself wait to
            // finish sending (see the module's docs): the body goes first.
            body_after = false;
            match self.discard_body(head, true) {
                Ok(n) => next = n,
                Err(BodyEnd::Refused(status)) => return self.refuse(status),
                Err(BodyEnd::Gone | BodyEnd::Pending) => return Next::Close,
            }
        }
        // Where the head starts, again: discarding may have moved it to the front.
        let req = self.input.buf.get(self.input.start..).unwrap_or_default();
        let sent = self.sender.send(self.sock, &reply, &self.scratch);
        let (status, body_bytes, persist) = (reply.status, reply.body_len(), reply.persist);
        // The reply ends here, and with it a file sent by `sendfile`: it is closed before the
        // log line is written.
        drop(reply);
        self.scratch.shed();
        if let Err(e) = sent {
            send_failed(&self.peer, &e);
            return Next::Close;
        }
        let (peer, time) = (self.peer.ip(), self.clock.clf());
        let entry = Entry::of_request(peer, time, req, head, status, body_bytes);
        log::record(self.log, &mut self.scratch.line, &entry);

        self.served += 1;
        forkd_daemon::scoreboard::progress();
        if body_after {
            if persist == Persist::Close {
                // The drain before the close reads it.
                return Next::Linger;
            }
            match self.discard_body(head, true) {
                Ok(n) => {
                    next = n;
                    // The body's ACK has no response to ride on, and the kernel, which saw
                    // us answer the head, delays it (40 ms) expecting one; a client with Nagle
                    // on holds its next request until it comes. Acknowledge now.
                    let _ = SockRef::from(&self.sock).set_tcp_quickack(true);
                }
                Err(BodyEnd::Refused(status)) => {
                    // Too late for a status: the response is out. The connection ends.
                    Hit::count(if status == 413 {
                        Hit::BodyTooLarge
                    } else {
                        Hit::BadRequest
                    });
                    tracing::debug!(peer = %self.peer, status, "body refused after the response");
                    return Next::Linger;
                }
                Err(BodyEnd::Gone | BodyEnd::Pending) => return Next::Close,
            }
        }
        self.input.start = next;
        match persist {
            Persist::KeepAlive | Persist::KeepAlive10 => Next::Again,
            // The client asked for the close and sent nothing more: a plain close is clean.
            Persist::Close if !client_keeps && !linger && self.input.start == self.input.end => {
                Next::Close
            }
            // Yielded to a waiting client: this one was told `Connection: close` and, its body
            // (if any) read and nothing more sent, has nothing on its way (a client sends its
            // next request after reading the response, which says close). The close is clean
            // now, and the worker goes back to the queue at once instead of waiting for the
            // client's FIN.
            Persist::Close
                if self.yielded && self.input.start == self.input.end && !self.more_arrived() =>
            {
                Next::Close
            }
            Persist::Close => Next::Linger,
        }
    }

    /// Reads and drops the body of the head at `buf[start..]`, exactly; returns where the next
    /// request starts. Body bytes are read into the buffer after the head (moved to the front
    /// first), so the head stays intact for the answer. Without `wait`, only what has arrived
    /// is looked at: a body not all in yet is [`BodyEnd::Pending`], and the buffer is left as
    /// it was, so a later call starts over on the same bytes.
    fn discard_body(&mut self, head: &Head, wait: bool) -> Result<usize, BodyEnd> {
        let cfg = self.cfg;
        let input = &mut self.input;
        input.compact();
        let at = head.len;
        let Some(mut body) = Discard::of(head.body, cfg) else {
            return Ok(at);
        };
        // `body::due` bounds the wait, with the header timeout in force, looked at again at
        // least every `RECHECK` as pressure may shorten it.
        let start = Instant::now();
        let (mut got, mut last) = (0u64, start);
        loop {
            // After `compact` the head is at the front, so `at <= end`.
            let avail = input.buf.get(at..input.end).unwrap_or_default();
            let (used, done) = body.feed(avail).map_err(BodyEnd::Refused)?;
            got = got.saturating_add(used as u64);
            if done {
                // Whatever follows the body is the next request: close the gap.
                input.buf.copy_within(at + used..input.end, at);
                input.end -= used;
                return Ok(at);
            }
            if !wait {
                return Err(BodyEnd::Pending);
            }
            input.end = at;
            let due = body::due(cfg, start, got, last, pressure::header(cfg));
            let Some(left) = due
                .checked_duration_since(Instant::now())
                .filter(|t| !t.is_zero())
            else {
                Hit::BodyTimeout.count();
                return Err(BodyEnd::Gone);
            };
            match input.fill(self.sock, left.min(pressure::RECHECK)) {
                Ok(0) => return Err(BodyEnd::Gone),
                Ok(_) => last = Instant::now(),
                // A request in flight is finished even when a stop is asked for; a wait that
                // ran out is judged at the top of the loop.
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => {}
                Err(_) => return Err(BodyEnd::Gone),
            }
        }
    }

    /// Half-closes, then reads and drops what the client still sends, for a bounded time, so
    /// our close does not become a reset that destroys the response in flight. A retiring
    /// child drains for a shorter time, so a stop is not held up by a client that keeps its
    /// side open.
    fn linger(&mut self) {
        if self.sock.shutdown(Shutdown::Write).is_err() {
            return;
        }
        let start = Instant::now();
        let full = clock::after(start, self.cfg.linger_timeout);
        let short = clock::after(start, self.cfg.linger_timeout.min(RETIRE_DRAIN));
        let input = &mut self.input;
        loop {
            let deadline = if stop_requested() || self.yielded {
                short
            } else {
                full
            };
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            if left.is_zero() {
                return;
            }
            input.start = 0;
            input.end = 0;
            match input.fill(self.sock, left) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Whether bytes from the client wait in the socket, without waiting or taking them.
    fn more_arrived(&self) -> bool {
        let mut probe = [0u8; 1];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_PEEK;
        matches!(
            nix::sys::socket::recv(self.sock.as_raw_fd(), &mut probe, flags),
            Ok(n) if n > 0
        )
    }
}

impl Input {
    /// The received bytes not yet consumed.
    fn pending(&self) -> &[u8] {
        // `start <= end <= buf.len()` always holds; were it broken, nothing is pending.
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// Makes room at the end of the buffer when it is full, keeping unread bytes.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.compact();
        }
    }

    /// Moves unread bytes to the front.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// One read into the free end of the buffer, waiting at most `timeout`. The very first read
    /// of a connection does not wait at all when the request is already there, which is the
    /// common case, and so sets no timeout.
    fn fill(&mut self, sock: &TcpStream, timeout: Duration) -> io::Result<usize> {
        let Some(free) = self.buf.get_mut(self.end..).filter(|f| !f.is_empty()) else {
            return Err(io::Error::other("input buffer full"));
        };
        if std::mem::take(&mut self.fresh) {
            match nix::sys::socket::recv(sock.as_raw_fd(), free, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(nix::errno::Errno::EAGAIN) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // SO_RCVTIMEO of zero means "forever": never ask for less than a millisecond.
        let timeout = timeout.max(Duration::from_millis(1));
        if self.rcvtimeo != Some(timeout) {
            sock.set_read_timeout(Some(timeout))?;
            self.rcvtimeo = Some(timeout);
        }
        let n = (&*sock).read(free)?;
        self.end += n;
        Ok(n)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
