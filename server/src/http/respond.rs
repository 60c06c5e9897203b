//! Building response heads, and sending replies on a blocking socket.
//!
//! Heads are encoded into the connection's buffer; error pages are a head and a static text
//! from the one status table. [`Sender`] runs a reply's steps (`reply::Progress`): the head and
//! a small body leave in ONE `sendmsg` (gathered, like `writev`), so Nagle and delayed ACKs
//! never see a lone second segment (incident 004), and a large file follows its head with
//! `sendfile` straight from the page cache. Every send is `MSG_NOSIGNAL` (a vanished peer is
//! an error, not a SIGPIPE), tried first without blocking, and bounded by `SO_SNDTIMEO` (no
//! progress) and a minimum average rate (slow progress) once it must wait, so a slow reader
//! cannot pin a worker (incident 003).

use std::io;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::reply::{Payload, Progress, Reply, Scratch, Step};

/// One table of every status this server sends: its reason phrase, and the text of its body
/// when it is answered as an error (`"404 Not Found\n"`), so the two cannot drift apart and
/// an error page is a static body rather than bytes formatted per request.
macro_rules! statuses {
    ($($code:literal $reason:literal,)*) => {
        /// The reason phrase of every status this server sends.
        pub(super) fn reason(status: u16) -> &'static str {
            match status {
                $($code => $reason,)*
                _ => "Unknown",
            }
        }

        /// The body of an error page: the status line's code and reason.
        pub(super) fn error_text(status: u16) -> &'static [u8] {
            match status {
                $($code => concat!($code, " ", $reason, "\n").as_bytes(),)*
                _ => b"Unknown\n",
            }
        }
    };
}

statuses! {
    200 "OK",
    206 "Partial Content",
    301 "Moved Permanently",
    304 "Not Modified",
    400 "Bad Request",
    403 "Forbidden",
    404 "Not Found",
    405 "Method Not Allowed",
    408 "Request Timeout",
    412 "Precondition Failed",
    416 "Range Not Satisfiable",
    413 "Content Too Large",
    414 "URI Too Long",
    417 "Expectation Failed",
    421 "Misdirected Request",
    431 "Request Header Fields Too Large",
    500 "Internal Server Error",
    501 "Not Implemented",
    503 "Service Unavailable",
    505 "HTTP Version Not Supported",
}

/// Whether the connection stays open after this response, and how that is said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Persist {
    /// HTTP/1.1 default: nothing to say.
    KeepAlive,
    /// HTTP/1.0 keeps the connection only when the response says so.
    KeepAlive10,
    Close,
}

impl Persist {
    /// How the response says what becomes of the connection: kept only when both sides keep
    /// it, and said so explicitly to an HTTP/1.0 client (`minor` 0).
    pub(super) fn choose(keep: bool, minor: u8) -> Persist {
        match (keep, minor) {
            (false, _) => Persist::Close,
            (true, 0) => Persist::KeepAlive10,
            (true, _) => Persist::KeepAlive,
        }
    }
}

/// Whether the client keeps its connection after this request: HTTP/1.1 unless it says
/// `close`, HTTP/1.0 only when it says `keep-alive`.
pub(super) fn client_keeps(head: &super::parse::Head) -> bool {
    !head.close && (head.minor >= 1 || head.keep_alive)
}

/// A response could not be sent: counted when it was the client's slowness, logged for debug.
pub(super) fn send_failed(peer: &std::net::SocketAddr, e: &io::Error) {
    if e.kind() == io::ErrorKind::TimedOut {
        super::Hit::SendTimeout.count();
    }
    tracing::debug!(%peer, error = %e, "response not sent");
}

/// Starts a head in `out` (cleared): status line, `Server`, `Date`, `Connection`.
pub(super) fn start(out: &mut Vec<u8>, status: u16, server: &str, date: &[u8], persist: Persist) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !server.is_empty() {
        field(out, b"Server", server.as_bytes());
    }
    field(out, b"Date", date);
    match persist {
        Persist::KeepAlive => {}
        Persist::KeepAlive10 => field(out, b"Connection", b"keep-alive"),
        Persist::Close => field(out, b"Connection", b"close"),
    }
}

/// [`start`], then the security fields every response carries (`rules`).
pub(super) fn start_for(
    out: &mut Vec<u8>,
    status: u16,
    cfg: &super::Config,
    date: &[u8],
    persist: Persist,
) {
    start(out, status, &cfg.server, date, persist);
    out.extend_from_slice(cfg.rules.security_lines());
}

pub(super) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn content_length(out: &mut Vec<u8>, n: u64) {
    // itoa rather than `write!`: every response has this field, and the formatting machinery
    // showed in a keep-alive request's profile.
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Ends the head.
pub(super) fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// An error reply: its head in `out`, its body `"404 Not Found\n"` (left out for HEAD, its
/// length kept). A 405 gets its `Allow` field here, so no caller can forget it (RFC 9110
/// section 15.5.6).
pub(super) fn error(
    out: &mut Vec<u8>,
    status: u16,
    cfg: &super::Config,
    date: &[u8],
    persist: Persist,
    head_only: bool,
) -> Reply {
    error_with(out, status, cfg, date, persist, head_only, b"")
}

/// [`error`] with `extra` field lines (each ending in CRLF) in the head.
pub(super) fn error_with(
    out: &mut Vec<u8>,
    status: u16,
    cfg: &super::Config,
    date: &[u8],
    persist: Persist,
    head_only: bool,
    extra: &[u8],
) -> Reply {
    start_for(out, status, cfg, date, persist);
    if status == 405 {
        field(out, b"Allow", super::parse::ALLOW);
    }
    out.extend_from_slice(extra);
    field(out, b"Content-Type", b"text/plain; charset=utf-8");
    let text = error_text(status);
    content_length(out, text.len() as u64);
    end(out);
    Reply {
        status,
        persist,
        payload: if head_only {
            Payload::None
        } else {
            Payload::Static(text)
        },
    }
}

/// The whole response the master sends without forking when every child is busy: 503 with
/// `Retry-After: 1` and `Connection: close`, the `Server` and security fields every response
/// carries (`cfg`), and no `Date` (the master keeps no clock cache). Made once per
/// configuration, so a reload that changes those fields changes it too.
pub fn busy_response(cfg: &super::Config) -> Vec<u8> {
    let body = "503 Service Unavailable: all workers are busy, retry in a second\n";
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 503 Service Unavailable\r\n");
    if !cfg.server.is_empty() {
        field(&mut out, b"Server", cfg.server.as_bytes());
    }
    out.extend_from_slice(cfg.rules.security_lines());
    field(&mut out, b"Retry-After", b"1");
    field(&mut out, b"Connection", b"close");
    field(&mut out, b"Content-Type", b"text/plain; charset=utf-8");
    content_length(&mut out, body.len() as u64);
    end(&mut out);
    out.extend_from_slice(body.as_bytes());
    out
}

/// Sends replies on one blocking connection, remembering whether `SO_SNDTIMEO` is armed so it
/// costs at most one `setsockopt` per connection, and none when every send completes at once.
pub(super) struct Sender {
    timeout: Duration,
    min_rate: u64,
    armed: bool,
}

/// The largest `sendfile` per call, so the rate check runs every so often.
const SENDFILE_CHUNK: u64 = 256 * 1024;

impl Sender {
    pub(super) fn new(timeout: Duration, min_rate: u64) -> Sender {
        Sender {
            timeout: timeout.max(Duration::from_millis(1)),
            min_rate: min_rate.max(1),
            armed: false,
        }
    }

    fn arm(&mut self, sock: &TcpStream) -> io::Result<()> {
        if !self.armed {
            SockRef::from(sock).set_write_timeout(Some(self.timeout))?;
            self.armed = true;
        }
        Ok(())
    }

    /// The latest moment `len` bytes may finish going out.
    fn deadline(&self, len: u64) -> Instant {
        let allowed = Duration::from_secs(len / self.min_rate);
        super::clock::after(Instant::now(), self.timeout.saturating_add(allowed))
    }

    /// Sends every byte of `reply`, whose head is in `s.out`: the head and a body in memory
    /// gathered (one `sendmsg` when the socket has room), then a file body with `sendfile`.
    pub(super) fn send(&mut self, sock: &TcpStream, reply: &Reply, s: &Scratch) -> io::Result<()> {
        let mut left = Progress::new(reply, s);
        self.send_gathered(sock, reply, s, &mut left)?;
        if !left.is_done() {
            self.send_file(sock, reply, s, &mut left)?;
        }
        Ok(())
    }

    /// The gathered run: tried first without blocking, so a send that completes at once arms
    /// no timeout; once it must wait, bounded by the deadline for its length.
    fn send_gathered(
        &mut self,
        sock: &TcpStream,
        reply: &Reply,
        s: &Scratch,
        left: &mut Progress,
    ) -> io::Result<()> {
        let mut deadline = None;
        while let step @ Step::Gather { .. } = left.step(reply, s) {
            let wait = if self.armed { 0 } else { libc::MSG_DONTWAIT };
            match send_step(sock, &step, wait) {
                Ok(n) => left.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !self.armed => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                Err(e) => return Err(e),
            }
            if !left.gathered_done() {
                self.arm(sock)?;
                let d = *deadline.get_or_insert_with(|| self.deadline(left.gathered_len()));
                if Instant::now() > d {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
        }
        Ok(())
    }

    /// A file body, after its head, with `sendfile` bounded by `SO_SNDTIMEO` (no progress)
    /// and the deadline for its length (slow progress).
    fn send_file(
        &mut self,
        sock: &TcpStream,
        reply: &Reply,
        s: &Scratch,
        left: &mut Progress,
    ) -> io::Result<()> {
        self.arm(sock)?;
        let deadline = self.deadline(left.file_len());
        while let step @ Step::File { .. } = left.step(reply, s) {
            match send_step(sock, &step, 0) {
                Ok(n) => left.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // `SO_SNDTIMEO` ran out with nothing taken.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::ErrorKind::TimedOut.into())
                }
                Err(e) => return Err(e),
            }
            if !left.is_done() && Instant::now() > deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
        Ok(())
    }
}

/// One step's system call: a gathered `sendmsg` (`MSG_NOSIGNAL`, `MSG_MORE` when a file
/// follows, plus `flags`), or a `sendfile` of at most [`SENDFILE_CHUNK`] bytes. Returns how many
/// bytes the kernel took; a file that shrank under the length its head promised is
/// `UnexpectedEof`.
fn send_step(sock: &TcpStream, step: &Step<'_>, flags: libc::c_int) -> io::Result<u64> {
    match step {
        Step::Gather { bufs, more } => {
            let more = if *more { libc::MSG_MORE } else { 0 };
            let n = SockRef::from(sock)
                .send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL | more | flags)?;
            Ok(n as u64)
        }
        Step::File { file, offset, len } => {
            let mut at = libc::off_t::try_from(*offset).map_err(|_| io::ErrorKind::InvalidInput)?;
            let count = (*len).min(SENDFILE_CHUNK) as usize;
            match nix::sys::sendfile::sendfile(sock, file, Some(&mut at), count)? {
                0 => Err(io::ErrorKind::UnexpectedEof.into()),
                _ => Ok((at as u64).saturating_sub(*offset)),
            }
        }
        Step::Done => Ok(0),
    }
}

/// How far [`push`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    /// The reply went out whole.
    Done,
    /// The socket is full: resume when it is writable.
    Blocked,
    /// The byte budget ran out first: the socket may well take more at once, but other
    /// connections get their turn.
    Yielded,
}

/// Sends what a non-blocking socket takes of `reply`, from where `progress` stands, without
/// waiting: an event worker's send, resumed on the next writable event. Stops after about
/// `budget` bytes, so one fast reader of a large file does not hold the worker. Returns how
/// far it got and how many bytes went out.
pub(super) fn push(
    sock: &TcpStream,
    reply: &Reply,
    s: &Scratch,
    progress: &mut Progress,
    budget: u64,
) -> io::Result<(Pushed, u64)> {
    let mut sent = 0u64;
    loop {
        let step = progress.step(reply, s);
        if matches!(step, Step::Done) {
            return Ok((Pushed::Done, sent));
        }
        if sent >= budget {
            return Ok((Pushed::Yielded, sent));
        }
        match send_step(sock, &step, libc::MSG_DONTWAIT) {
            Ok(n) => {
                progress.advance(n);
                sent = sent.saturating_add(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((Pushed::Blocked, sent)),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn parse_response(bytes: &[u8]) -> (u16, Vec<(String, String)>, usize) {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut fields);
        let n = match r.parse(bytes).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial response"),
        };
        let h = r
            .headers
            .iter()
            .map(|f| {
                (
                    f.name.to_string(),
                    String::from_utf8(f.value.to_vec()).unwrap(),
                )
            })
            .collect();
        (r.code.unwrap(), h, n)
    }

    fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    /// The head in `out` and the reply's body in memory, as they go on the wire.
    fn wire(out: &[u8], reply: &Reply) -> Vec<u8> {
        let mut w = out.to_vec();
        match reply.payload {
            Payload::None => {}
            Payload::Static(b) => w.extend_from_slice(b),
            ref other => panic!("not an error body: {other:?}"),
        }
        w
    }

    #[test]
    fn error_responses_table() {
        let mut out = Vec::new();
        for (status, persist, head_only) in [
            (400, Persist::Close, false),
            (404, Persist::KeepAlive, false),
            (404, Persist::KeepAlive10, true),
            (405, Persist::KeepAlive, false),
            (408, Persist::Close, false),
            (413, Persist::Close, false),
            (414, Persist::Close, false),
            (431, Persist::Close, false),
            (501, Persist::Close, false),
            (505, Persist::Close, false),
        ] {
            let cfg = crate::http::Config::default();
            let reply = error(&mut out, status, &cfg, DATE, persist, head_only);
            assert_eq!((reply.status, reply.persist), (status, persist));
            let wire = wire(&out, &reply);
            let (code, h, n) = parse_response(&wire);
            assert_eq!(code, status);
            assert_eq!(n, out.len());
            assert_eq!(get(&h, "server"), Some("forkd"));
            assert_eq!(get(&h, "date"), Some(std::str::from_utf8(DATE).unwrap()));
            let len: usize = get(&h, "content-length").unwrap().parse().unwrap();
            assert_eq!(wire.len() - n, if head_only { 0 } else { len });
            assert_eq!(reply.body_len() as usize, wire.len() - n);
            if !head_only {
                assert_eq!(
                    &wire[n..],
                    format!("{status} {}\n", reason(status)).as_bytes()
                );
            }
            assert_eq!(
                get(&h, "allow"),
                (status == 405).then_some("GET, HEAD, OPTIONS")
            );
            let conn = get(&h, "connection");
            match persist {
                Persist::KeepAlive => assert_eq!(conn, None),
                Persist::KeepAlive10 => assert_eq!(conn, Some("keep-alive")),
                Persist::Close => assert_eq!(conn, Some("close")),
            }
            assert_ne!(reason(status), "Unknown");
        }
    }

    #[test]
    fn no_server_header_when_empty() {
        let mut out = Vec::new();
        let cfg = crate::http::Config {
            server: String::new(),
            ..Default::default()
        };
        let _ = error(&mut out, 404, &cfg, DATE, Persist::KeepAlive, false);
        let (_, h, _) = parse_response(&out);
        assert_eq!(get(&h, "server"), None);
    }

    #[test]
    fn busy_is_a_complete_503() {
        let r = busy_response(&crate::http::Config::default());
        let (code, h, n) = parse_response(&r);
        assert_eq!(code, 503);
        assert_eq!(get(&h, "retry-after"), Some("1"));
        assert_eq!(get(&h, "connection"), Some("close"));
        assert_eq!(get(&h, "server"), Some("forkd"));
        // The security fields every other response carries, as configured.
        assert_eq!(get(&h, "x-content-type-options"), Some("nosniff"));
        let len: usize = get(&h, "content-length").unwrap().parse().unwrap();
        assert_eq!(r.len() - n, len);
        let quiet = crate::http::Config {
            server: String::new(),
            rules: crate::http::rules::Rules::empty(),
            ..Default::default()
        };
        let (code, h, _) = parse_response(&busy_response(&quiet));
        assert_eq!(code, 503);
        assert_eq!(get(&h, "server"), None);
        assert_eq!(get(&h, "x-content-type-options"), None);
    }

    /// A connected pair over loopback: (server side, client side).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    #[test]
    fn replies_over_loopback() {
        use std::io::Read;
        let (server, client) = pair();
        let mut tmp = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        tmp.write_all(&content).unwrap();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut c = client;
            c.read_to_end(&mut all).unwrap();
            all
        });
        let mut tx = Sender::new(Duration::from_secs(5), 1024);
        let mut s = Scratch {
            out: b"ab".to_vec(),
            file: b"cdef".to_vec(),
            ..Scratch::default()
        };
        let buffered = Reply {
            status: 200,
            persist: Persist::KeepAlive,
            payload: Payload::Buffered(2),
        };
        tx.send(&server, &buffered, &s).unwrap();
        s.out = b"HEAD".to_vec();
        let file = Reply {
            status: 206,
            persist: Persist::KeepAlive,
            payload: Payload::File {
                file: std::rc::Rc::new(tmp),
                offset: 1,
                len: content.len() as u64 - 1,
            },
        };
        tx.send(&server, &file, &s).unwrap();
        drop(server);
        let all = reader.join().unwrap();
        assert_eq!(&all[..8], b"abcdHEAD");
        assert_eq!(&all[8..], &content[1..]);
    }

    /// What an event loop would do with a reply: send what the socket takes, keep the
    /// progress, come back when it is writable. Partial writes land in both phases here (a
    /// small send buffer, a reader that sleeps), and the bytes still arrive whole and in order.
    #[test]
    fn steps_resume_on_a_non_blocking_socket() {
        use std::io::Read;
        let (server, client) = pair();
        SockRef::from(&server).set_send_buffer_size(4096).unwrap();
        server.set_nonblocking(true).unwrap();
        let mut tmp = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        tmp.write_all(&content).unwrap();
        let head: Vec<u8> = (0..50_000u32).map(|i| (i % 7) as u8).collect();
        let s = Scratch {
            out: head.clone(),
            ..Scratch::default()
        };
        let reply = Reply {
            status: 200,
            persist: Persist::KeepAlive,
            payload: Payload::File {
                file: std::rc::Rc::new(tmp),
                offset: 0,
                len: content.len() as u64,
            },
        };
        let reader = std::thread::spawn(move || {
            let (mut all, mut buf, mut c) = (Vec::new(), [0; 8192], client);
            loop {
                std::thread::sleep(Duration::from_micros(200));
                match c.read(&mut buf).unwrap() {
                    0 => return all,
                    n => all.extend_from_slice(&buf[..n]),
                }
            }
        });
        let mut left = Progress::new(&reply, &s);
        let (mut short, mut would_block) = (0, 0);
        loop {
            let (taken, wanted) = match left.step(&reply, &s) {
                Step::Done => break,
                Step::Gather { bufs, more } => {
                    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
                    let wanted: usize = bufs.iter().map(|b| b.len()).sum();
                    let r = SockRef::from(&server).send_vectored_with_flags(&bufs, flags);
                    (r.map(|n| n as u64), wanted as u64)
                }
                Step::File { file, offset, len } => {
                    let mut at = offset as libc::off_t;
                    let r =
                        nix::sys::sendfile::sendfile(&server, file, Some(&mut at), len as usize);
                    (r.map(|n| n as u64).map_err(io::Error::from), len)
                }
            };
            match taken {
                Ok(n) => {
                    short += usize::from(n < wanted);
                    left.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    would_block += 1;
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(left.is_done());
        drop(server);
        let all = reader.join().unwrap();
        assert_eq!(all.len(), head.len() + content.len());
        assert!(all[..head.len()] == head[..] && all[head.len()..] == content[..]);
        assert!(
            short > 1 && would_block > 0,
            "{short} short sends, {would_block} EAGAIN"
        );
    }

    #[test]
    fn slow_reader_is_cut() {
        let (server, client) = pair();
        let big = vec![7u8; 64 << 20];
        let s = Scratch {
            out: big,
            ..Scratch::default()
        };
        let reply = Reply {
            status: 200,
            persist: Persist::KeepAlive,
            payload: Payload::None,
        };
        let mut tx = Sender::new(Duration::from_millis(200), 1 << 30);
        let t = Instant::now();
        let err = tx.send(&server, &reply, &s).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5));
        drop(client);
    }
}
