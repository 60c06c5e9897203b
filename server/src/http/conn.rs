//! One connection's life: read a head, discard any body exactly, answer, log, and go round
//! again while keep-alive allows.
//!
//! The fast path of a keep-alive request is one `read` of the whole head, the file's `open`,
//! `fstat`, `read` and `close`, and one gathered send: no timer syscalls, no allocation (all
//! buffers live as long as the connection). Timeouts are armed only when a wait is needed:
//! `SO_RCVTIMEO` holds the idle keep-alive time, or what is left of the head's deadline while
//! a head is partly in; `SO_SNDTIMEO` is set the first time a send would block.
//!
//! The child's signal handlers have no `SA_RESTART`, so a blocking call returns `EINTR` when
//! the master asks for a graceful stop: with no byte of a next request in, the connection
//! ends; a request in flight is finished and answered with `Connection: close`.

use std::ffi::CStr;
use std::io::{self, IoSlice, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::MsgFlags;

use super::clock::Clock;
use super::log::{self, Entry};
use super::parse::{self, Body, Chunked, ChunkedError, Form, Head, Method};
use super::path::{self, Refusal};
use super::respond::{self, Persist, Sender};
use super::{open, site, Config, Docroot, Hit, Site};
use crate::daemon::worker::stop_requested;

/// Files up to this size are read into memory and leave with their head in one send; larger
/// ones go out with `sendfile`.
const SMALL_FILE: u64 = 64 * 1024;

/// Room after a maximal head for reading (and discarding) body bytes and pipelined requests.
const BODY_ROOM: usize = 16 * 1024;

/// The request line logged for a head that could not be parsed is cut at this length.
const LOGGED_LINE_MAX: usize = 1024;

pub(super) fn serve(site: &Site, sock: TcpStream, peer: SocketAddr) -> u64 {
    let cfg = &site.config;
    let mut conn = Conn {
        cfg,
        root: &site.docroot,
        log: &site.log,
        sender: Sender::new(cfg.send_timeout, cfg.min_send_rate),
        sock,
        peer,
        accepted: Instant::now(),
        input: Input {
            buf: vec![0; cfg.max_header_bytes.max(1024) + BODY_ROOM],
            start: 0,
            end: 0,
            rcvtimeo: None,
            fresh: true,
        },
        scratch: Scratch {
            out: Vec::with_capacity(512),
            file: Vec::new(),
            path: Vec::with_capacity(256),
            line: Vec::with_capacity(if site.log.is_on() { 512 } else { 0 }),
        },
        clock: Clock::new(),
        served: 0,
    };
    conn.run();
    conn.served
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

/// Buffers reused by every request of the connection, sized up front so a typical
/// request never grows them.
struct Scratch {
    /// The response head (and small error bodies).
    out: Vec<u8>,
    /// Small file bodies.
    file: Vec<u8>,
    /// The resolved path, NUL-terminated.
    path: Vec<u8>,
    /// The access-log line.
    line: Vec<u8>,
}

/// What a response was, for the access log.
struct Sent {
    status: u16,
    body: u64,
}

/// The read-only parts of a connection that answering a request needs.
struct Env<'a> {
    cfg: &'a Config,
    root: &'a Docroot,
    sock: &'a TcpStream,
    date: &'a [u8],
}

struct Conn<'a> {
    cfg: &'a Config,
    root: &'a Docroot,
    log: &'a super::AccessLog,
    sender: Sender,
    sock: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    input: Input,
    scratch: Scratch,
    clock: Clock,
    served: u64,
}

impl Conn<'_> {
    fn run(&mut self) {
        loop {
            let next = match self.read_head() {
                Ok(Some(head)) => self.exchange(&head),
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
        let mut deadline = (self.served == 0).then(|| self.accepted + self.cfg.header_timeout);
        loop {
            let input = &mut self.input;
            if input.start < input.end {
                match parse::parse(&input.buf[input.start..input.end], self.cfg) {
                    Ok(Some(head)) => return Ok(Some(head)),
                    Ok(None) => {}
                    Err(e) => return Err(e.status()),
                }
                deadline.get_or_insert_with(|| Instant::now() + self.cfg.header_timeout);
            } else if self.served > 0 && stop_requested() {
                // Between requests a stop ends the connection; a fresh connection was
                // accepted, so its first request is still answered.
                return Ok(None);
            }
            input.make_room();
            let timeout = match deadline {
                None => self.cfg.keepalive_timeout,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return self.head_timed_out(),
                },
            };
            match input.fill(&self.sock, timeout) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    if deadline.is_none() {
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
            Ok(None)
        }
    }

    /// Answers a head that was refused (or never completed) and ends the connection.
    fn refuse(&mut self, status: u16) -> Next {
        self.clock.tick();
        let s = &mut self.scratch;
        let body = respond::error(
            &mut s.out,
            status,
            &self.cfg.server,
            self.clock.http(),
            Persist::Close,
            false,
        );
        if let Err(e) = self.sender.send(&self.sock, &mut [IoSlice::new(&s.out)]) {
            send_failed(&self.peer, &e);
            return Next::Close;
        }
        let pending = &self.input.buf[self.input.start..self.input.end];
        let first = pending
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(pending.len());
        let line = &pending[first..];
        let line = &line[..line
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(line.len())
            .min(LOGGED_LINE_MAX)];
        let entry = Entry {
            peer: self.peer.ip(),
            time: self.clock.clf(),
            request: if line.is_empty() { b"-" } else { line },
            status,
            body_bytes: body,
            referer: None,
            user_agent: None,
        };
        Self::record(self.log, &mut self.scratch.line, entry);
        Next::Linger
    }

    /// One request whose head is at `buf[start..]`: body, answer, log, bookkeeping.
    fn exchange(&mut self, head: &Head) -> Next {
        self.clock.tick();
        let client_keeps = !head.close && (head.minor >= 1 || head.keep_alive);
        let mut we_keep =
            self.served + 1 < self.cfg.max_requests_per_connection && !stop_requested();
        let mut linger = false;
        let mut next = self.input.start + head.len;
        if head.body != Body::None {
            if head.expect_continue {
                // RFC 9110 section 10.1.1: answer with the final status at once instead of
                // inviting the body, and say the connection ends, as the body is not read.
                we_keep = false;
                linger = true;
            } else {
                match self.discard_body(head) {
                    Ok(n) => next = n,
                    Err(BodyEnd::Refused(status)) => return self.refuse(status),
                    Err(BodyEnd::Gone) => return Next::Close,
                }
            }
        }
        let persist = match (client_keeps && we_keep, head.minor) {
            (false, _) => Persist::Close,
            (true, 0) => Persist::KeepAlive10,
            (true, _) => Persist::KeepAlive,
        };

        let req = &self.input.buf[self.input.start..];
        let env = Env {
            cfg: self.cfg,
            root: self.root,
            sock: &self.sock,
            date: self.clock.http(),
        };
        let sent = match answer(
            &env,
            req,
            head,
            persist,
            &mut self.scratch,
            &mut self.sender,
        ) {
            Ok(sent) => sent,
            Err(e) => {
                send_failed(&self.peer, &e);
                return Next::Close;
            }
        };
        let field = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &req[r]);
        let entry = Entry {
            peer: self.peer.ip(),
            time: self.clock.clf(),
            request: &req[head.line.clone()],
            status: sent.status,
            body_bytes: sent.body,
            referer: field(&head.referer),
            user_agent: field(&head.user_agent),
        };
        Self::record(self.log, &mut self.scratch.line, entry);

        self.served += 1;
        self.input.start = next;
        match persist {
            Persist::KeepAlive | Persist::KeepAlive10 => Next::Again,
            // The client asked for the close and sent nothing more: a plain close is clean.
            Persist::Close if !client_keeps && !linger && self.input.start == self.input.end => {
                Next::Close
            }
            Persist::Close => Next::Linger,
        }
    }

    /// Formats and writes one access-log line; nothing at all when the log is off. An
    /// associated function so callers can lend it fields while the input is borrowed.
    fn record(log: &super::AccessLog, line: &mut Vec<u8>, entry: Entry<'_>) {
        if log.is_on() {
            log::format(line, &entry);
            log.write_line(line);
        }
    }

    /// Reads and drops the body of the head at `buf[start..]`, exactly; returns where the next
    /// request starts. Body bytes are read into the buffer after the head (moved to the front
    /// first), so the head stays intact for the answer.
    fn discard_body(&mut self, head: &Head) -> Result<usize, BodyEnd> {
        let cfg = self.cfg;
        let input = &mut self.input;
        input.compact();
        let at = head.len;
        let mut chunked = Chunked::new(cfg.max_body_bytes, cfg.max_header_bytes);
        let mut left = match head.body {
            Body::Length(n) => n,
            _ => 0,
        };
        let max_secs = cfg.max_body_bytes / cfg.min_send_rate.max(1);
        let deadline = Instant::now() + cfg.header_timeout + Duration::from_secs(max_secs);
        loop {
            let avail = &input.buf[at..input.end];
            let (used, done) = match head.body {
                Body::Chunked => match chunked.feed(avail) {
                    Ok(used) => (used, chunked.is_done()),
                    Err(ChunkedError::Malformed) => return Err(BodyEnd::Refused(400)),
                    Err(ChunkedError::TooLarge) => return Err(BodyEnd::Refused(413)),
                },
                _ => {
                    let used = left.min(avail.len() as u64);
                    left -= used;
                    (used as usize, left == 0)
                }
            };
            if done {
                // Whatever follows the body is the next request: close the gap.
                input.buf.copy_within(at + used..input.end, at);
                input.end -= used;
                return Ok(at);
            }
            input.end = at;
            let timeout = match deadline.checked_duration_since(Instant::now()) {
                Some(t) if !t.is_zero() => t.min(cfg.header_timeout),
                _ => return Err(BodyEnd::Gone),
            };
            match input.fill(&self.sock, timeout) {
                Ok(0) => return Err(BodyEnd::Gone),
                Ok(_) => {}
                // A request in flight is finished even when a stop is asked for.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => return Err(BodyEnd::Gone),
            }
        }
    }

    /// Half-closes, then reads and drops what the client still sends, for a bounded time, so
    /// our close does not become a reset that destroys the response in flight.
    fn linger(&mut self) {
        if self.sock.shutdown(Shutdown::Write).is_err() {
            return;
        }
        let deadline = Instant::now() + self.cfg.linger_timeout;
        let input = &mut self.input;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            if left.is_zero() || stop_requested() {
                return;
            }
            input.start = 0;
            input.end = 0;
            match input.fill(&self.sock, left) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

impl Input {
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
        let free = &mut self.buf[self.end..];
        if free.is_empty() {
            return Err(io::Error::other("input buffer full"));
        }
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

fn send_failed(peer: &SocketAddr, e: &io::Error) {
    if e.kind() == io::ErrorKind::TimedOut {
        Hit::SendTimeout.count();
    }
    tracing::debug!(%peer, error = %e, "response not sent");
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Answers one valid request; `req` starts with its head.
fn answer(
    env: &Env<'_>,
    req: &[u8],
    head: &Head,
    persist: Persist,
    s: &mut Scratch,
    tx: &mut Sender,
) -> io::Result<Sent> {
    let head_only = head.method == Method::Head;
    let fail = |s: &mut Scratch, tx: &mut Sender, status: u16| -> io::Result<Sent> {
        let body = respond::error(
            &mut s.out,
            status,
            &env.cfg.server,
            env.date,
            persist,
            head_only,
        );
        tx.send(env.sock, &mut [IoSlice::new(&s.out)])?;
        Ok(Sent { status, body })
    };
    match head.method {
        Method::Get | Method::Head => {}
        Method::Other => return fail(s, tx, 405),
        Method::Unknown => return fail(s, tx, 501),
    }
    let target = match head.form {
        Form::Origin | Form::Absolute if head.path.is_empty() => &b"/"[..],
        Form::Origin | Form::Absolute => &req[head.path.clone()],
        Form::Asterisk | Form::Authority => return fail(s, tx, 400),
    };
    let dir = match path::resolve(target, env.cfg.serve_dotfiles, &mut s.path) {
        Ok(dir) => dir,
        Err(Refusal::Malformed) => return fail(s, tx, 400),
        Err(Refusal::Hidden) => return fail(s, tx, 404),
    };
    if dir {
        if !s.path.is_empty() {
            s.path.push(b'/');
        }
        s.path.extend_from_slice(env.cfg.index.as_bytes());
    }
    let rep = match env.root {
        Docroot::Embedded => embedded(env, s, dir),
        Docroot::Dir(root) => from_dir(root, s, dir),
    };
    let rep = match rep {
        Ok(rep) => rep,
        Err(status) => return fail(s, tx, status),
    };
    let Rep::Found(found) = rep else {
        // A directory named without its trailing slash: send the client to the slash form,
        // keeping the query (RFC 9110 allows a relative reference here).
        respond::start(&mut s.out, 301, &env.cfg.server, env.date, persist);
        let raw = target;
        let (p, q) = match raw.iter().position(|&b| b == b'?') {
            Some(i) => (&raw[..i], &raw[i..]),
            None => (raw, &raw[..0]),
        };
        s.out.extend_from_slice(b"Location: ");
        s.out.extend_from_slice(p);
        s.out.push(b'/');
        s.out.extend_from_slice(q);
        s.out.extend_from_slice(b"\r\n");
        let body: &[u8] = b"301 Moved Permanently\n";
        respond::field(&mut s.out, b"Content-Type", b"text/plain; charset=utf-8");
        respond::content_length(&mut s.out, body.len() as u64);
        respond::end(&mut s.out);
        let body = if head_only { &body[..0] } else { body };
        tx.send(env.sock, &mut [IoSlice::new(&s.out), IoSlice::new(body)])?;
        return Ok(Sent {
            status: 301,
            body: body.len() as u64,
        });
    };

    let mut etag = StackBuf::new();
    match &found.body {
        Content::Static(_) => {
            let _ = std::fmt::Write::write_fmt(&mut etag, format_args!("\"e{:x}\"", found.id.0));
        }
        Content::File { .. } => {
            let (ino, len, nanos) = found.id;
            let _ = std::fmt::Write::write_fmt(
                &mut etag,
                format_args!("\"{ino:x}-{len:x}-{nanos:x}\""),
            );
        }
    }
    let field = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &req[r]);
    if not_modified(
        field(&head.if_none_match),
        field(&head.if_modified_since),
        etag.as_bytes(),
        found.modified,
    ) {
        respond::start(&mut s.out, 304, &env.cfg.server, env.date, persist);
        respond::field(&mut s.out, b"ETag", etag.as_bytes());
        respond::end(&mut s.out);
        tx.send(env.sock, &mut [IoSlice::new(&s.out)])?;
        return Ok(Sent {
            status: 304,
            body: 0,
        });
    }

    respond::start(&mut s.out, 200, &env.cfg.server, env.date, persist);
    let name = &s.path[..s.path.len() - usize::from(s.path.last() == Some(&0))];
    content_type(&mut s.out, name);
    let len = match &found.body {
        Content::Static(b) => b.len() as u64,
        Content::File { len, .. } => *len,
    };
    if let Some(m) = found.modified {
        use std::io::Write;
        let _ = write!(s.out, "Last-Modified: {}\r\n", httpdate::HttpDate::from(m));
    }
    respond::field(&mut s.out, b"ETag", etag.as_bytes());
    match found.body {
        Content::Static(body) => {
            respond::content_length(&mut s.out, len);
            respond::end(&mut s.out);
            let body = if head_only { &body[..0] } else { body };
            tx.send(env.sock, &mut [IoSlice::new(&s.out), IoSlice::new(body)])?;
            Ok(Sent {
                status: 200,
                body: body.len() as u64,
            })
        }
        Content::File { file, len } if head_only => {
            drop(file);
            respond::content_length(&mut s.out, len);
            respond::end(&mut s.out);
            tx.send(env.sock, &mut [IoSlice::new(&s.out)])?;
            Ok(Sent {
                status: 200,
                body: 0,
            })
        }
        Content::File { mut file, len } if len <= SMALL_FILE => {
            let want = len as usize;
            if s.file.len() < want {
                s.file.resize(want, 0);
            }
            let mut got = 0;
            while got < want {
                match file.read(&mut s.file[got..want]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            drop(file);
            // If the file shrank since fstat, the length sent is what was read.
            respond::content_length(&mut s.out, got as u64);
            respond::end(&mut s.out);
            tx.send(
                env.sock,
                &mut [IoSlice::new(&s.out), IoSlice::new(&s.file[..got])],
            )?;
            Ok(Sent {
                status: 200,
                body: got as u64,
            })
        }
        Content::File { file, len } => {
            respond::content_length(&mut s.out, len);
            respond::end(&mut s.out);
            tx.send_file(env.sock, &s.out, &file, len)?;
            Ok(Sent {
                status: 200,
                body: len,
            })
        }
    }
}

/// What a request found.
enum Rep {
    Found(Found),
    /// A directory named without its trailing slash.
    Redirect,
}

struct Found {
    body: Content,
    /// (inode, size, mtime in ns) of a file; (hash, 0, 0) of an embedded asset.
    id: (u64, u64, u64),
    modified: Option<SystemTime>,
}

enum Content {
    Static(&'static [u8]),
    File { file: std::fs::File, len: u64 },
}

/// Looks the resolved path (`s.path`, not yet terminated) up in the embedded site.
fn embedded(env: &Env<'_>, s: &Scratch, dir: bool) -> Result<Rep, u16> {
    // `path::resolve` guarantees UTF-8; the index name is a String.
    let rel = std::str::from_utf8(&s.path).map_err(|_| 400u16)?;
    let (base, idx) = if dir {
        let base = rel.strip_suffix(env.cfg.index.as_str()).unwrap_or(rel);
        (base.strip_suffix('/').unwrap_or(base), true)
    } else {
        (rel, false)
    };
    match site::lookup(base, &env.cfg.index) {
        site::Lookup::File(a) if !idx => Ok(Rep::Found(Found {
            body: Content::Static(a.body),
            id: (a.hash, 0, 0),
            modified: None,
        })),
        site::Lookup::Dir(Some(a)) if idx => Ok(Rep::Found(Found {
            body: Content::Static(a.body),
            id: (a.hash, 0, 0),
            modified: None,
        })),
        site::Lookup::Dir(_) if !idx => Ok(Rep::Redirect),
        _ => Err(404),
    }
}

/// Opens the resolved path (`s.path`) beneath the root; terminates `s.path` with a NUL.
fn from_dir(root: &std::os::fd::OwnedFd, s: &mut Scratch, dir: bool) -> Result<Rep, u16> {
    s.path.push(0);
    let rel = CStr::from_bytes_with_nul(&s.path).map_err(|_| 400u16)?;
    let file = open::beneath(root.as_fd(), rel).map_err(|e| open_status(&e))?;
    let meta = file.metadata().map_err(|e| open_status(&e))?;
    if meta.is_dir() {
        // With a trailing slash the index file itself turned out to be a directory.
        return if dir { Err(404) } else { Ok(Rep::Redirect) };
    }
    if !meta.is_file() {
        return Err(404);
    }
    let nanos = (meta.mtime() as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(meta.mtime_nsec() as u64);
    Ok(Rep::Found(Found {
        id: (meta.ino(), meta.len(), nanos),
        modified: meta.modified().ok(),
        body: Content::File {
            file,
            len: meta.len(),
        },
    }))
}

/// The status for a failed open: absent, refused by `RESOLVE_BENEATH` or not a directory
/// along the way all read as 404, so what lies outside the root is never revealed.
fn open_status(e: &io::Error) -> u16 {
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => 403,
        Some(
            libc::ENOENT
            | libc::ENOTDIR
            | libc::ELOOP
            | libc::EXDEV
            | libc::ENAMETOOLONG
            | libc::ENXIO
            | libc::ENODEV,
        ) => 404,
        _ => {
            tracing::warn!(error = %e, "unable to open a file beneath the root");
            500
        }
    }
}

/// RFC 9110 section 13.2.2 for GET and HEAD: `If-None-Match` decides when present (weak
/// comparison); otherwise `If-Modified-Since` against the modification second.
fn not_modified(
    inm: Option<&[u8]>,
    ims: Option<&[u8]>,
    etag: &[u8],
    modified: Option<SystemTime>,
) -> bool {
    if let Some(inm) = inm {
        return inm.split(|&b| b == b',').any(|tag| {
            let tag = tag.trim_ascii();
            tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == etag
        });
    }
    let (Some(ims), Some(modified)) = (ims, modified) else {
        return false;
    };
    let Some(since) = std::str::from_utf8(ims)
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
    else {
        return false;
    };
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs(modified) <= secs(since)
}

/// `Content-Type` from the file name's extension; text is declared UTF-8.
fn content_type(out: &mut Vec<u8>, name: &[u8]) {
    let file = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    let ext = match file.iter().rposition(|&b| b == b'.') {
        Some(i) => &file[i + 1..],
        None => &file[..0],
    };
    let mime = std::str::from_utf8(ext)
        .ok()
        .and_then(|e| mime_guess::from_ext(e).first_raw())
        .unwrap_or("application/octet-stream");
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(mime.as_bytes());
    if mime.starts_with("text/") {
        out.extend_from_slice(b"; charset=utf-8");
    }
    out.extend_from_slice(b"\r\n");
}

/// A short string formatted on the stack (entity tags), to keep the hot path allocation-free.
struct StackBuf {
    buf: [u8; 64],
    len: usize,
}

impl StackBuf {
    fn new() -> StackBuf {
        StackBuf {
            buf: [0; 64],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let b = s.as_bytes();
        let end = self.len.checked_add(b.len()).ok_or(std::fmt::Error)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(b);
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_table() {
        let t = UNIX_EPOCH + Duration::from_secs(784111777);
        let date = b"Sun, 06 Nov 1994 08:49:37 GMT";
        let later = b"Sun, 06 Nov 1994 08:49:38 GMT";
        let earlier = b"Sun, 06 Nov 1994 08:49:36 GMT";
        let tag = b"\"abc\"";
        type Case<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, bool);
        let cases: &[Case] = &[
            (None, None, false),
            (Some(b"\"abc\""), None, true),
            (Some(b"W/\"abc\""), None, true),
            (Some(b"\"x\", \"abc\""), None, true),
            (Some(b"*"), None, true),
            (Some(b"\"x\""), None, false),
            (Some(b"abc"), None, false),
            // If-None-Match decides when present, whatever If-Modified-Since says.
            (Some(b"\"x\""), Some(date), false),
            (None, Some(date), true),
            (None, Some(later), true),
            (None, Some(earlier), false),
            (None, Some(b"yesterday"), false),
        ];
        for (inm, ims, want) in cases {
            assert_eq!(
                not_modified(*inm, *ims, tag, Some(t)),
                *want,
                "{inm:?} {ims:?}"
            );
        }
        assert!(!not_modified(None, Some(date), tag, None));
    }

    #[test]
    fn content_types() {
        for (name, want) in [
            (&b"index.html"[..], "text/html; charset=utf-8"),
            (b"a/style.css", "text/css; charset=utf-8"),
            (b"x.png", "image/png"),
            (b"README", "application/octet-stream"),
            (b"a.b/c", "application/octet-stream"),
            (b"x.weird-ext", "application/octet-stream"),
        ] {
            let mut out = Vec::new();
            content_type(&mut out, name);
            assert_eq!(out, format!("Content-Type: {want}\r\n").as_bytes());
        }
    }

    #[test]
    fn stack_buf_refuses_overflow() {
        use std::fmt::Write;
        let mut b = StackBuf::new();
        assert!(write!(b, "{}", "x".repeat(64)).is_ok());
        assert!(write!(b, "y").is_err());
        assert_eq!(b.as_bytes().len(), 64);
    }
}
