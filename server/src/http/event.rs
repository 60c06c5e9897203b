//! One connection's life in an event worker: the exchange `conn` runs on a blocking socket
//! (read a head, drop a body exactly, answer, log, again while keep-alive allows), as a state
//! machine that `forkd_daemon::reactor` drives one readiness event or deadline at a time. The
//! rules are shared, not copied: heads are parsed by `parse`, answers decided by
//! `answer::decide` and errors made by `respond::error`, replies encoded by `reply::Progress`
//! and sent by `respond::push`, bodies walked by `body::Discard`, lines made by `log`, timeouts
//! shrunk by `pressure`. So the bytes on the wire are the blocking driver's.
//!
//! A connection is in one [`Phase`]: waiting for a head (with the header, idle and retire
//! deadlines of `conn`), dropping a body, sending a reply the socket would not take whole
//! (with the send-progress and minimum-rate deadlines), or lingering after a close it chose
//! (half-closed, draining). Every call does what it can without blocking and returns what the
//! connection waits for next.
//!
//! Memory. Reads go into the worker's one input buffer; a connection keeps only what is left
//! of it (a partial head, pipelined requests) in a buffer of its own, allocated when there is
//! something to keep and freed when there is not. Heads and small bodies are encoded in the
//! worker's scratch; a reply the socket would not take whole is detached from it
//! (`Progress::detach`: a copy of the unsent bytes, and the file with its offset). An idle
//! keep-alive connection is this struct, a socket and an entry in the reactor's table.
//!
//! Where the timing differs from the blocking driver. A GET or HEAD with a body is answered
//! as soon as its head is in, and the rest of its body dropped afterwards (framing intact),
//! instead of after the body: what of the body came with the head is checked first, so a body
//! refused then is answered 400 or 413 as before; other methods still wait for their whole
//! body. The one difference on the wire: a GET whose body comes after its answer and turns out
//! malformed or too large cannot be answered 400 or 413 any more; the connection is closed
//! (half-closed and drained), with the refusal counted. A wait for a head, or between
//! requests, comes back to look at the pressure at least once a second.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

use forkd_daemon::reactor::{EventService, Interest, Ready, Turn};
use nix::errno::Errno;
use nix::sys::socket::MsgFlags;

use super::answer::{self, Env};
use socket2::SockRef;

use super::body::{self, Discard};
use super::clock::{self, Clock};
use super::conn::{RETIRE_DRAIN, RETIRE_GRACE};
use super::log::{self, Entry};
use super::parse::{self, Body, Head};
use super::reply::{Progress, Reply, Scratch};
use super::respond::{self, send_failed, Persist, Pushed};
use super::{pressure, AccessLog, Config, Docroot, Hit, Site};

/// Bytes one connection may send per call before the others get their turn, all its replies
/// together (pipelined ones answered in the same call included).
const TURN_BYTES: u64 = 1 << 20;
/// Reads one connection may make per call (each up to the input buffer's size).
const TURN_READS: u8 = 16;
/// Requests one connection may have answered per call (pipelined ones, already read).
const TURN_REQUESTS: u8 = 32;

/// One connection of an event worker (opaque outside this module).
pub struct Conn {
    peer: SocketAddr,
    /// Requests answered on it.
    served: u64,
    /// Received bytes not yet consumed; empty, with nothing allocated, most of the time.
    input: Vec<u8>,
    phase: Phase,
    /// The last interest was `Read`: the socket was watched for input, so no readiness since
    /// means nothing came. After a send, input that came meanwhile was not watched for.
    watching_read: bool,
}

enum Phase {
    Head(HeadWait),
    Body(Box<BodyWait>),
    Send(Box<Sending>),
    /// Half-closed since then; dropping what the client still sends.
    Linger {
        since: Instant,
    },
    /// Over: the reactor closes it.
    Done,
}

/// Waiting for (the rest of) a request head.
#[derive(Debug, Clone, Copy)]
struct HeadWait {
    /// When the head is due: the first request's a header timeout after the accept, a later
    /// one's a header timeout after its first byte; `None` while no byte of it has come.
    due: Option<Instant>,
    /// When the connection became idle (the keep-alive timeout counts from here).
    idle_since: Instant,
    /// A retiring worker waits until then for an idle connection's next request.
    grace: Option<Instant>,
}

impl HeadWait {
    fn first(accepted: Instant, cfg: &Config) -> HeadWait {
        HeadWait {
            due: Some(clock::after(accepted, cfg.header_timeout)),
            idle_since: accepted,
            grace: None,
        }
    }

    fn idle(now: Instant) -> HeadWait {
        HeadWait {
            due: None,
            idle_since: now,
            grace: None,
        }
    }
}

/// Dropping a request body, held to `body::due` as `conn` holds it.
struct BodyWait {
    discard: Discard,
    start: Instant,
    /// Its bytes so far.
    got: u64,
    /// When the last of them came.
    last: Instant,
}

/// A reply the socket would not take whole, detached from the worker's buffers.
struct Sending {
    scratch: Detached,
    reply: Reply,
    progress: Progress,
    /// Cut when nothing moves until then (`send_timeout` after the last progress).
    stalled: Instant,
    /// Cut when the reply is not whole by then (the minimum rate).
    until: Instant,
    /// The access-log line, written once the reply is whole (empty with the log off).
    line: Vec<u8>,
    then: Then,
}

impl Sending {
    fn due(&self) -> Instant {
        self.stalled.min(self.until)
    }
}

/// The unsent rest of a reply. It can be a long directory listing: when the reply ends, sent
/// or cut, the heap it took goes back to the kernel, not into the worker's RSS for good.
struct Detached(Scratch);

impl Drop for Detached {
    fn drop(&mut self) {
        self.0.shed();
    }
}

/// What follows a reply once it has gone out whole.
struct Then {
    after: After,
    /// It answered a request (a refused head is not counted as one).
    answered: bool,
}

enum After {
    /// The next request, once this one's body (if it still has one) is dropped.
    Next(Option<Discard>),
    Close,
    /// Half-close and drain: the client may still be sending.
    Linger,
}

/// What a step did: the next phase, and `None` to go on at once or what to wait for.
type Step = (Phase, Option<Interest>);

fn closed() -> Step {
    (Phase::Done, Some(Interest::Close))
}

impl EventService for Site {
    type Conn = Conn;

    fn open(&mut self, stream: &TcpStream, peer: SocketAddr, turn: &mut Turn) -> (Conn, Interest) {
        let mut conn = Conn {
            peer,
            served: 0,
            input: Vec::new(),
            phase: Phase::Head(HeadWait::first(turn.now, &self.config)),
            watching_read: false,
        };
        // With TCP_DEFER_ACCEPT the request is usually there already.
        let ready = Ready {
            read: true,
            write: false,
        };
        let interest = self.on_ready(&mut conn, stream, ready, turn);
        (conn, interest)
    }

    fn on_ready(
        &mut self,
        conn: &mut Conn,
        stream: &TcpStream,
        ready: Ready,
        turn: &mut Turn,
    ) -> Interest {
        self.buffers.fit(&self.config);
        let mut input = Input {
            buf: &mut self.buffers.input,
            start: 0,
            end: 0,
            readable: ready.read || !conn.watching_read,
            reads_left: TURN_READS,
        };
        // What the connection kept from its last call goes back in front.
        if let Some(kept) = input.buf.get_mut(..conn.input.len()) {
            kept.copy_from_slice(&conn.input);
            input.end = kept.len();
        }
        let mut w = Worker {
            cfg: &self.config,
            root: &self.docroot,
            vhosts: &self.vhosts,
            log: &mut self.log,
            scratch: &mut self.buffers.scratch,
            clock: &mut self.clock,
            sock: stream,
            turn,
            requests_left: TURN_REQUESTS,
            bytes_left: TURN_BYTES,
        };
        let interest = loop {
            let phase = std::mem::replace(&mut conn.phase, Phase::Done);
            let (next, wait) = w.step(conn, &mut input, phase, ready);
            conn.phase = next;
            if let Some(interest) = wait {
                break interest;
            }
        };
        match input.pending() {
            [] => conn.input = Vec::new(),
            _ if interest == Interest::Close => conn.input = Vec::new(),
            rest => {
                conn.input.clear();
                conn.input.extend_from_slice(rest);
            }
        }
        conn.watching_read = matches!(interest, Interest::Read(_));
        interest
    }
}

/// The worker's input buffer during one call: received bytes not consumed are
/// `buf[start..end]`.
struct Input<'b> {
    buf: &'b mut [u8],
    start: usize,
    end: usize,
    /// A read may find something: readiness was reported (or input was not watched), and no
    /// read came back short since.
    readable: bool,
    reads_left: u8,
}

/// What a read brought.
enum Got {
    Bytes,
    /// Nothing now (or this call's reads are spent): wait for readiness.
    Nothing,
    /// The client closed its side.
    End,
    Failed,
}

impl Input<'_> {
    fn pending(&self) -> &[u8] {
        // `start <= end <= buf.len()` always holds; were it broken, nothing is pending.
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// One `recv` into the free end of the buffer, moving unread bytes to the front first if
    /// the end is reached. A short read means the socket is drained: readiness is level-
    /// triggered, so more input is reported again, and no read is wasted on `EAGAIN`.
    fn read(&mut self, sock: &TcpStream) -> Got {
        if !self.readable || self.reads_left == 0 {
            return Got::Nothing;
        }
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let Some(free) = self.buf.get_mut(self.end..).filter(|f| !f.is_empty()) else {
            return Got::Failed;
        };
        let room = free.len();
        self.reads_left -= 1;
        loop {
            match nix::sys::socket::recv(sock.as_raw_fd(), free, MsgFlags::empty()) {
                Ok(0) => return Got::End,
                Ok(n) => {
                    self.end += n;
                    self.readable = n == room;
                    return Got::Bytes;
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    self.readable = false;
                    return Got::Nothing;
                }
                Err(_) => return Got::Failed,
            }
        }
    }
}

/// Everything of the worker a connection's steps use, besides the input.
struct Worker<'w> {
    cfg: &'w Config,
    root: &'w Docroot,
    vhosts: &'w super::VHosts,
    log: &'w mut AccessLog,
    scratch: &'w mut Scratch,
    clock: &'w mut Clock,
    sock: &'w TcpStream,
    turn: &'w mut Turn,
    requests_left: u8,
    bytes_left: u64,
}

impl Worker<'_> {
    fn step(&mut self, conn: &mut Conn, input: &mut Input, phase: Phase, ready: Ready) -> Step {
        match phase {
            Phase::Head(w) => self.head(conn, input, w),
            Phase::Body(b) => self.body(input, b),
            Phase::Send(s) => self.resume(conn, s, ready),
            Phase::Linger { since } => self.linger(input, since),
            Phase::Done => closed(),
        }
    }

    /// Waiting for a head: parse what came, read more, or wait with the deadline in force.
    fn head(&mut self, conn: &mut Conn, input: &mut Input, mut w: HeadWait) -> Step {
        let (cfg, now) = (self.cfg, self.turn.now);
        if input.start < input.end {
            if self.requests_left == 0 {
                // Pipelined requests are waiting, but others get their turn first: come back
                // at once.
                return (Phase::Head(w), Some(Interest::Read(Some(now))));
            }
            match parse::parse(input.pending(), cfg) {
                Ok(Some(head)) => return self.request(conn, input, head),
                Ok(None) => {
                    w.due
                        .get_or_insert_with(|| clock::after(now, cfg.header_timeout));
                }
                Err(e) => return self.refuse(conn, e.status(), input.pending()),
            }
        } else if conn.served > 0 && self.turn.stopping {
            w.grace
                .get_or_insert_with(|| clock::after(now, RETIRE_GRACE));
        }
        match input.read(self.sock) {
            Got::Bytes => return (Phase::Head(w), None),
            Got::End | Got::Failed => return closed(),
            Got::Nothing => {}
        }
        let (due, idle) = pressure::apply_at(w.due, cfg, now, self.turn.table);
        if let Some(d) = due {
            if now < d {
                return (Phase::Head(w), Some(Interest::Read(Some(d))));
            }
            // 408 if part of a request came in, else a quiet close.
            if input.start < input.end {
                return self.refuse(conn, 408, input.pending());
            }
            Hit::HeaderTimeout.count();
            return closed();
        }
        let idle_end = clock::after(w.idle_since, idle);
        if now >= idle_end {
            Hit::KeepaliveTimeout.count();
            return closed();
        }
        let mut wake = idle_end.min(clock::after(now, pressure::RECHECK));
        if let Some(g) = w.grace {
            if now >= g {
                // Idle through the whole grace: a clean end, not a reset.
                return self.start_linger();
            }
            wake = wake.min(g);
        }
        (Phase::Head(w), Some(Interest::Read(Some(wake))))
    }

    /// A head is in at `input.start`: answer it, and drop its body after. forkd needs no
    /// request body, so no answer waits for one: a client with Nagle on that sends a small body
    /// in a second segment is answered at once instead of after a delayed ACK (as in `conn`).
    fn request(&mut self, conn: &mut Conn, input: &mut Input, head: Head) -> Step {
        self.requests_left = self.requests_left.saturating_sub(1);
        let at = input.start;
        input.start = at.saturating_add(head.len).min(input.end);
        let discard = Discard::of(head.body, self.cfg);
        // An answer that does not wait for its body; with `Expect: 100-continue` the body is
        // not read at all (see `exchange`). What of the body came with the head is walked
        // first, so that a body refused while it is here is answered as the blocking driver
        // answers it (400, 413), not with the file.
        let mut after = discard.filter(|_| !head.expect_continue);
        if let Some(d) = after.as_mut() {
            match d.feed(input.pending()) {
                Ok((used, done)) => {
                    input.start = input.start.saturating_add(used).min(input.end);
                    if done {
                        after = None;
                    }
                }
                Err(status) => {
                    let received = input.buf.get(at..input.end).unwrap_or_default();
                    return self.refuse(conn, status, received);
                }
            }
        }
        let more = input.start < input.end;
        let req = input.buf.get(at..input.end).unwrap_or_default();
        self.exchange(conn, req, &head, after, more)
    }

    /// Decides, encodes and starts sending the answer to the head `head` parsed from `req`.
    /// `after`: its body, still to drop; `more`: bytes of a next request are in already.
    fn exchange(
        &mut self,
        conn: &mut Conn,
        req: &[u8],
        head: &Head,
        after: Option<Discard>,
        more: bool,
    ) -> Step {
        self.clock.tick();
        let client_keeps = respond::client_keeps(head);
        let mut we_keep =
            conn.served + 1 < self.cfg.max_requests_per_connection && !self.turn.stopping;
        let mut linger = false;
        if head.body != Body::None && head.expect_continue {
            // RFC 9110 section 10.1.1: the final status at once instead of inviting the body,
            // and the connection ends, as the body is not read.
            we_keep = false;
            linger = true;
        }
        let persist = Persist::choose(client_keeps && we_keep, head.minor);
        let env = Env {
            cfg: self.cfg,
            root: self.root,
            vhosts: self.vhosts,
            date: self.clock.http(),
            date_secs: self.clock.secs(),
        };
        let reply = match answer::decide(&env, req, head, persist, self.scratch) {
            Ok(reply) => reply,
            Err(e) => {
                send_failed(&conn.peer, &e);
                return closed();
            }
        };
        if self.log.is_on() {
            let (peer, time) = (conn.peer.ip(), self.clock.clf());
            let entry = Entry::of_request(peer, time, req, head, reply.status, reply.body_len());
            log::format(&mut self.scratch.line, &entry);
        }
        let after = match reply.persist {
            Persist::KeepAlive | Persist::KeepAlive10 => After::Next(after),
            // The client asked for the close and sent nothing more: a plain close is clean.
            Persist::Close if !client_keeps && !linger && after.is_none() && !more => After::Close,
            Persist::Close => After::Linger,
        };
        let then = Then {
            after,
            answered: true,
        };
        self.send(conn, reply, then)
    }

    /// Answers a head that was refused (or never completed) and ends the connection; the log
    /// names the first line of `received`.
    fn refuse(&mut self, conn: &mut Conn, status: u16, received: &[u8]) -> Step {
        Hit::of_refusal(status).count();
        self.clock.tick();
        let reply = respond::error(
            &mut self.scratch.out,
            status,
            self.cfg,
            self.clock.http(),
            Persist::Close,
            false,
        );
        if self.log.is_on() {
            let entry = Entry {
                peer: conn.peer.ip(),
                time: self.clock.clf(),
                request: log::refused_line(received),
                status,
                body_bytes: reply.body_len(),
                referer: None,
                user_agent: None,
            };
            log::format(&mut self.scratch.line, &entry);
        }
        let then = Then {
            after: After::Linger,
            answered: false,
        };
        self.send(conn, reply, then)
    }

    /// Sends what the socket takes of a reply encoded in the worker's scratch; what it does
    /// not take is detached and sent as the socket drains.
    fn send(&mut self, conn: &mut Conn, reply: Reply, then: Then) -> Step {
        let mut progress = Progress::new(&reply, self.scratch);
        let total = progress.gathered_len().saturating_add(progress.file_len());
        let pushed = respond::push(
            self.sock,
            &reply,
            self.scratch,
            &mut progress,
            self.bytes_left,
        );
        if let Ok((_, sent)) = pushed {
            self.bytes_left = self.bytes_left.saturating_sub(sent);
        }
        match pushed {
            Ok((Pushed::Done, _)) => {
                // A file sent by `sendfile` is closed before its line is written, as in `conn`.
                drop(reply);
                self.scratch.shed();
                log::write_formatted(self.log, &self.scratch.line);
                self.scratch.line.clear();
                self.finished(conn, then)
            }
            Ok((Pushed::Blocked | Pushed::Yielded, _)) => {
                let (rest, reply) = progress.detach(reply, self.scratch);
                self.scratch.shed();
                let scratch = Detached(Scratch {
                    out: rest,
                    ..Scratch::default()
                });
                let progress = Progress::new(&reply, &scratch.0);
                let (now, cfg) = (self.turn.now, self.cfg);
                let allowed = std::time::Duration::from_secs(total / cfg.min_send_rate.max(1));
                let sending = Sending {
                    scratch,
                    reply,
                    progress,
                    stalled: clock::after(now, cfg.send_timeout),
                    until: clock::after(now, cfg.send_timeout.saturating_add(allowed)),
                    line: std::mem::take(&mut self.scratch.line),
                    then,
                };
                self.scratch.line.reserve(512);
                let due = sending.due();
                (
                    Phase::Send(Box::new(sending)),
                    Some(Interest::Write(Some(due))),
                )
            }
            Err(e) => {
                self.scratch.line.clear();
                send_failed(&conn.peer, &e);
                closed()
            }
        }
    }

    /// A reply under way: more of it when the socket is writable, a cut when it made no
    /// progress for the send timeout or fell below the minimum rate.
    fn resume(&mut self, conn: &mut Conn, mut s: Box<Sending>, ready: Ready) -> Step {
        let now = self.turn.now;
        if ready.write {
            let pushed = respond::push(
                self.sock,
                &s.reply,
                &s.scratch.0,
                &mut s.progress,
                self.bytes_left,
            );
            if let Ok((_, sent)) = pushed {
                self.bytes_left = self.bytes_left.saturating_sub(sent);
            }
            match pushed {
                Ok((Pushed::Done, _)) => {
                    let Sending { line, then, .. } = *s;
                    log::write_formatted(self.log, &line);
                    return self.finished(conn, then);
                }
                Ok((_, sent)) if sent > 0 => s.stalled = clock::after(now, self.cfg.send_timeout),
                Ok(_) => {}
                Err(e) => {
                    send_failed(&conn.peer, &e);
                    return closed();
                }
            }
        }
        let due = s.due();
        if now >= due {
            Hit::SendTimeout.count();
            tracing::debug!(peer = %conn.peer, "response cut: the client read too slowly");
            return closed();
        }
        (Phase::Send(s), Some(Interest::Write(Some(due))))
    }

    /// A reply went out whole: on to what follows it.
    fn finished(&mut self, conn: &mut Conn, then: Then) -> Step {
        if then.answered {
            conn.served += 1;
            self.turn.answered(1);
        }
        let now = self.turn.now;
        match then.after {
            After::Next(Some(discard)) => {
                let wait = BodyWait {
                    discard,
                    start: now,
                    got: 0,
                    last: now,
                };
                (Phase::Body(Box::new(wait)), None)
            }
            After::Next(None) => (Phase::Head(HeadWait::idle(now)), None),
            After::Close => closed(),
            After::Linger => self.start_linger(),
        }
    }

    /// Dropping a body whose request was answered already: what came, and what comes, until it
    /// ends; then the next request.
    fn body(&mut self, input: &mut Input, mut b: Box<BodyWait>) -> Step {
        let now = self.turn.now;
        loop {
            match b.discard.feed(input.pending()) {
                Ok((used, done)) => {
                    input.start = input.start.saturating_add(used).min(input.end);
                    if used > 0 {
                        b.got = b.got.saturating_add(used as u64);
                        b.last = now;
                    }
                    if done {
                        break;
                    }
                }
                Err(status) => {
                    // The answer went out before the body turned out bad: nothing to say
                    // now, and where the next request starts is unknown.
                    Hit::of_refusal(status).count();
                    return self.start_linger();
                }
            }
            match input.read(self.sock) {
                Got::Bytes => continue,
                Got::End | Got::Failed => return closed(),
                Got::Nothing => {}
            }
            let header = pressure::header_at(self.cfg, self.turn.table);
            let due = body::due(self.cfg, b.start, b.got, b.last, header);
            if now >= due {
                Hit::BodyTimeout.count();
                return closed();
            }
            // Back at least every `RECHECK`, to see whether pressure shortened the stall limit.
            let wake = due.min(clock::after(now, pressure::RECHECK));
            return (Phase::Body(b), Some(Interest::Read(Some(wake))));
        }
        // The body's ACK has no response to ride on, and the kernel, which saw us answer the
        // head, delays it (40 ms) expecting one; a client with Nagle on holds its next request
        // until it comes. Acknowledge now, as `conn` does.
        let _ = SockRef::from(self.sock).set_tcp_quickack(true);
        (Phase::Head(HeadWait::idle(now)), None)
    }

    /// Half-closes and starts draining (see [`Worker::linger`]); what was received and not
    /// consumed is dropped with the rest.
    fn start_linger(&self) -> Step {
        match self.sock.shutdown(Shutdown::Write) {
            Ok(()) => (
                Phase::Linger {
                    since: self.turn.now,
                },
                None,
            ),
            Err(_) => closed(),
        }
    }

    /// After a close the server chose, reads and drops what the client still sends, for at
    /// most the linger timeout (less when the worker is stopping), so our close does not turn
    /// into a reset that destroys the reply in flight.
    fn linger(&mut self, input: &mut Input, since: Instant) -> Step {
        let full = self.cfg.linger_timeout;
        let limit = if self.turn.stopping {
            full.min(RETIRE_DRAIN)
        } else {
            full
        };
        let deadline = clock::after(since, limit);
        loop {
            (input.start, input.end) = (0, 0);
            match input.read(self.sock) {
                Got::Bytes => {}
                Got::End | Got::Failed => return closed(),
                Got::Nothing => break,
            }
        }
        if self.turn.now >= deadline {
            return closed();
        }
        (
            Phase::Linger { since },
            Some(Interest::Read(Some(deadline))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use forkd_daemon::scoreboard::Occupancy;
    use std::io::{Read, Write};
    use std::time::Duration;

    /// A connected pair over loopback: (server side, non-blocking; client side).
    fn pair() -> (TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (server, client)
    }

    fn turn() -> Turn {
        let table = Occupancy {
            busy: 1,
            capacity: 1024,
        };
        Turn::new(Instant::now(), table)
    }

    const READ: Ready = Ready {
        read: true,
        write: false,
    };

    /// Reads one response with a `Content-Length` body off `c`; returns its status.
    fn response(c: &mut TcpStream) -> u16 {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).unwrap();
            got.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&got).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0; len];
        c.read_exact(&mut body).unwrap();
        head[9..12].parse().unwrap()
    }

    #[test]
    fn a_connection_keeps_only_what_it_has_not_consumed() {
        let mut site = Site::new(Config::default(), Docroot::Embedded, AccessLog::off());
        site.prepare();
        let (server, mut client) = pair();
        let peer = client.local_addr().unwrap();
        // A whole request and the start of the next one, in one segment.
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHo")
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut t = turn();
        let (mut conn, interest) = site.open(&server, peer, &mut t);
        assert!(matches!(interest, Interest::Read(Some(_))), "{interest:?}");
        assert_eq!(t.answered_so_far(), 1);
        assert_eq!(response(&mut client), 200);
        // Only the partial head is kept, in a buffer of its own size.
        assert_eq!(conn.input, b"GET /nope HTTP/1.1\r\nHo");
        assert!(matches!(
            conn.phase,
            Phase::Head(HeadWait { due: Some(_), .. })
        ));
        client.write_all(b"st: a\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut t = turn();
        let interest = site.on_ready(&mut conn, &server, READ, &mut t);
        assert!(matches!(interest, Interest::Read(Some(_))), "{interest:?}");
        assert_eq!(response(&mut client), 404);
        // Idle between requests: nothing kept, nothing allocated.
        assert_eq!(conn.input.capacity(), 0);
        assert!(matches!(
            conn.phase,
            Phase::Head(HeadWait { due: None, .. })
        ));
        assert_eq!(conn.served, 2);
        // A call with nothing to read (a deadline check) changes nothing.
        let interest = site.on_ready(&mut conn, &server, Ready::default(), &mut turn());
        assert!(matches!(interest, Interest::Read(Some(_))), "{interest:?}");
        // The client leaves: the connection ends.
        drop(client);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            site.on_ready(&mut conn, &server, READ, &mut turn()),
            Interest::Close
        );
    }

    #[test]
    fn a_reply_the_socket_cannot_take_is_detached_and_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(dir.path().join("big"), &content).unwrap();
        let root = Docroot::open(dir.path()).unwrap();
        let mut site = Site::new(Config::default(), root, AccessLog::off());
        site.prepare();
        let (server, mut client) = pair();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(64 * 1024)
            .unwrap();
        let peer = client.local_addr().unwrap();
        client
            .write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /big HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let (mut conn, mut interest) = site.open(&server, peer, &mut turn());
        assert!(matches!(interest, Interest::Write(Some(_))), "{interest:?}");
        assert!(matches!(conn.phase, Phase::Send(_)));
        // The pipelined second request waits, kept by the connection.
        assert_eq!(conn.input, b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
        // Reads until the server side is dropped, after both replies.
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            client.read_to_end(&mut all).unwrap();
            (all, content)
        });
        let mut calls = 0;
        let mut answered = 0;
        while answered < 2 {
            calls += 1;
            assert!(calls < 100_000, "no end in sight");
            let ready = Ready {
                read: false,
                write: matches!(interest, Interest::Write(_)),
            };
            std::thread::sleep(Duration::from_micros(200));
            let mut t = turn();
            interest = site.on_ready(&mut conn, &server, ready, &mut t);
            answered += t.answered_so_far();
            assert_ne!(interest, Interest::Close);
        }
        assert!(matches!(conn.phase, Phase::Head(_)));
        assert_eq!(conn.input.capacity(), 0);
        drop(server);
        let (all, content) = reader.join().unwrap();
        // Two responses, each a head and the whole file.
        let first = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(&all[first..first + content.len()], &content[..]);
        let rest = &all[first + content.len()..];
        let second = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(&rest[second..], &content[..]);
    }
}
