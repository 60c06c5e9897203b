//! Issue 9, part 4: a blocking prefork pool serves keep-alive clients beyond its size in
//! turns, and, in every mode, a request whose body comes late is answered without waiting
//! for it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::{eventually, limit_hits, per_mode, Client, Mode, Server};

fn fill(root: &Path) {
    std::fs::write(root.join("2k.html"), vec![b'x'; 2048]).unwrap();
}

/// A server of [`fill`]'s site started with `args`, publishing its metrics; the directory
/// holds the metrics file.
fn with_metrics(args: &[&str]) -> (Server, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.prom");
    let mut all = args.to_vec();
    all.extend(["--metrics-file", metrics.to_str().unwrap()]);
    (Server::with_site(&all, fill), dir, metrics)
}

/// What one looping keep-alive client saw.
#[derive(Debug, Default)]
struct Seen {
    responses: u32,
    /// Responses that said `Connection: close`.
    closes: u32,
    /// The longest a request waited for its whole response, a reconnect included.
    longest: Duration,
}

/// `clients` keep-alive clients, each requesting in a loop for `run`, reconnecting when a
/// response says `Connection: close`.
fn loop_clients(s: &Server, clients: usize, run: Duration) -> Vec<Seen> {
    let end = Instant::now() + run;
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let mut seen = Seen::default();
                    let mut conn: Option<Client> = None;
                    while Instant::now() < end {
                        let asked = Instant::now();
                        let c = conn.get_or_insert_with(|| Client::new(s));
                        c.send(b"GET /2k.html HTTP/1.1\r\nHost: t\r\n\r\n");
                        let r = c.response(false);
                        seen.longest = seen.longest.max(asked.elapsed());
                        assert_eq!((r.status, r.body.len()), (200, 2048));
                        seen.responses += 1;
                        if r.header("connection").as_deref() == Some("close") {
                            seen.closes += 1;
                            conn = None;
                        }
                    }
                    seen
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

/// Six keep-alive clients against two workers: every client is served all along and no
/// request waits for a connection to end; with as many clients as workers, nobody is asked to
/// close. (Before: four of the six waited in the accept queue until another connection hit
/// its request limit.)
#[test]
fn keep_alive_clients_beyond_the_pool_take_turns() {
    let (s, _dir, metrics) = with_metrics(&[
        "--workers",
        "2",
        "--max-conns-per-client",
        "0",
        "--max-requests-per-connection",
        "1000000",
    ]);
    let alone = loop_clients(&s, 2, Duration::from_millis(700));
    for seen in &alone {
        assert!(seen.responses > 0, "{alone:?}");
        assert_eq!(
            seen.closes, 0,
            "nobody waits, yet a client was cut: {alone:?}"
        );
    }

    let crowd = loop_clients(&s, 6, Duration::from_secs(2));
    for seen in &crowd {
        assert!(seen.responses >= 5, "a client was starved: {crowd:?}");
        assert!(
            seen.longest < Duration::from_secs(1),
            "a request waited for a connection to end: {crowd:?}"
        );
    }
    assert!(crowd.iter().map(|s| s.closes).sum::<u32>() > 0, "{crowd:?}");
    eventually(Duration::from_secs(5), "keepalive_yielded counted", || {
        (limit_hits(&metrics, "keepalive_yielded") > 0).then_some(())
    });
}

/// The framings a late body is sent in.
#[derive(Debug, Clone, Copy)]
enum Late {
    /// `GET` with `Content-Length: 5`.
    GetLength,
    /// `POST` with `Content-Length: 5` (answered 405).
    PostLength,
    /// `GET` with a chunked body of one 5-byte chunk.
    GetChunked,
}

impl Late {
    fn head(self) -> &'static [u8] {
        match self {
            Late::GetLength => b"GET /2k.html HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n",
            Late::PostLength => b"POST /2k.html HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n",
            Late::GetChunked => {
                b"GET /2k.html HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            }
        }
    }

    /// The body looks like the start of a request: were framing to slip, the next response
    /// would be a 400.
    fn body(self) -> &'static [u8] {
        match self {
            Late::GetLength | Late::PostLength => b"GET /",
            Late::GetChunked => b"5\r\nGET /\r\n0\r\n\r\n",
        }
    }

    fn answer(self) -> (u16, usize) {
        match self {
            Late::GetLength | Late::GetChunked => (200, 2048),
            Late::PostLength => (405, "405 Method Not Allowed\n".len()),
        }
    }
}

/// How long each body is held back after its head.
const BODY_DELAY: Duration = Duration::from_millis(300);

per_mode!(a_late_body_does_not_hold_the_answer);
/// 50 requests whose 5-byte body comes 300 ms after the head (what a client with Nagle on
/// does when the server's ACK is delayed, slowed down to be unmistakable), on five keep-alive
/// connections: each response arrives before its body is sent, and the next request on the
/// connection is answered as it should be, so the body was discarded exactly afterwards.
fn a_late_body_does_not_hold_the_answer(mode: Mode) {
    let s = mode
        .pool(6)
        .with_site(&["--max-conns-per-client", "0"], fill);
    let kinds = [Late::GetLength, Late::PostLength, Late::GetChunked];
    std::thread::scope(|scope| {
        for conn in 0..5 {
            let s = &s;
            scope.spawn(move || {
                let mut c = Client::new(s);
                for i in 0..10 {
                    let late = kinds[(conn + i) % kinds.len()];
                    c.send(late.head());
                    let sent = Instant::now();
                    c.s.set_read_timeout(Some(BODY_DELAY - Duration::from_millis(50)))
                        .unwrap();
                    let r = c.response(false);
                    assert!(
                        sent.elapsed() < BODY_DELAY,
                        "{late:?}: answered after the body was due"
                    );
                    assert_eq!((r.status, r.body.len()), late.answer(), "{late:?}");
                    assert_eq!(r.header("connection"), None, "{late:?}: {}", r.head);
                    std::thread::sleep(BODY_DELAY.saturating_sub(sent.elapsed()));
                    c.send(late.body());
                }
                c.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let r = c.get("/2k.html");
                assert_eq!((r.status, r.body.len()), (200, 2048));
            });
        }
    });
}

/// A body found too large or malformed only after the response went out cannot be answered
/// any more: the connection ends, and the refusal is counted.
#[test]
fn a_late_body_refused_after_the_answer_ends_the_connection() {
    let (s, _dir, metrics) = with_metrics(&["--max-body-bytes", "100"]);
    let cases: [(&str, &[u8], &[u8]); 3] = [
        ("a chunk over the limit", b"", b"200\r\n"),
        ("a malformed chunk size", b"", b"zz\r\n"),
        // 64 bytes are within the limit of 100, 64 more are not.
        (
            "a second chunk over the limit",
            b"40\r\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            b"40\r\n",
        ),
    ];
    for (what, with_head, later) in cases {
        let mut c = Client::new(&s);
        c.send(b"GET /2k.html HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
        c.send(with_head);
        let r = c.response(false);
        assert_eq!((r.status, r.body.len()), (200, 2048), "{what}");
        c.send(later);
        assert!(c.closed(), "{what}: the connection goes on");
    }
    for (counter, want) in [("body_too_large", 2), ("bad_request", 1)] {
        eventually(Duration::from_secs(5), counter, || {
            (limit_hits(&metrics, counter) >= want).then_some(())
        });
    }
    // A body that comes whole with its head is still refused with a status, as before.
    let resp = s.raw(b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    assert_eq!(crate::util::status_of(&resp), 400);
}

per_mode!(a_nagle_client_sending_a_small_body_apart_never_waits_for_a_delayed_ack);
/// A client with Nagle on that writes a head, then its small body: the body waits for the
/// head's ACK, and the next request for the body's. A server that waits for the body before
/// answering, or lets the kernel delay the body's ACK, shows the 40 ms delayed-ACK stall on
/// (nearly) every exchange; forkd answers the head at once and acknowledges the body as it
/// reads it. Both the GET and the POST (405) way.
fn a_nagle_client_sending_a_small_body_apart_never_waits_for_a_delayed_ack(mode: Mode) {
    let s = mode.pool(2).with_site(&[], fill);
    let stream = std::net::TcpStream::connect(s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut c = Client {
        s: stream,
        buf: Vec::new(),
    };
    let mut stalled = Vec::new();
    for i in 0..200 {
        let late = [Late::GetLength, Late::PostLength][i % 2];
        let t = Instant::now();
        c.send(late.head());
        c.send(late.body());
        let r = c.response(false);
        assert_eq!((r.status, r.body.len()), late.answer(), "{late:?}");
        if t.elapsed() >= Duration::from_millis(35) {
            stalled.push(t.elapsed());
        }
    }
    // A loaded machine may hold a few exchanges that long; the stall holds nearly all.
    assert!(
        stalled.len() <= 10,
        "{} of 200 stalled: {stalled:?}",
        stalled.len()
    );
}
