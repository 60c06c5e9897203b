//! `--mode event` on the real binary: a few processes holding thousands of connections at a
//! few KB each, the bound of workers x worker-connections with the queue left to others, large
//! files to slow readers without holding anyone else up, pipelining and exact body framing,
//! every timeout per connection inside one worker, graceful stops and reloads under load, and
//! fds that stay flat.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{self, eventually, metric, metric_reaches, Load, Server};

const BIG: usize = 8_000_000;

/// The 8 MB file's bytes: a pattern that shows a byte out of place.
fn big() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

fn site(root: &Path) {
    std::fs::write(root.join("small.html"), "hello\n").unwrap();
    std::fs::write(root.join("2k.html"), "x".repeat(2048)).unwrap();
    // What `util::Load` asks for.
    std::fs::create_dir(root.join("bench")).unwrap();
    std::fs::write(root.join("bench/2k.html"), "x".repeat(2048)).unwrap();
    std::fs::write(root.join("big.bin"), big()).unwrap();
}

/// forkd in event mode with `args`, serving [`site`].
fn start(args: &[&str]) -> Server {
    let mut all = vec!["--mode", "event"];
    all.extend_from_slice(args);
    Server::with_site(&all, site)
}

/// A metrics file in a directory of its own, removed with it.
struct Metrics {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

/// [`start`] with `--metrics-file`.
fn start_metered(args: &[&str]) -> (Server, Metrics) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.prom");
    let mut all = args.to_vec();
    all.extend(["--metrics-file", path.to_str().unwrap()]);
    (start(&all), Metrics { _dir: dir, path })
}

/// The master's `n` workers, once it has that many.
fn workers(server: &Server, n: usize) -> Vec<i32> {
    eventually(Duration::from_secs(5), &format!("{n} workers"), || {
        let w = util::children(server.pid());
        (w.len() == n).then_some(w)
    })
}

/// One response read off a connection.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn closes(&self) -> bool {
        self.head.to_ascii_lowercase().contains("connection: close")
    }
}

/// A keep-alive client that reads responses one at a time, keeping what arrives early
/// (pipelined answers) for the next one.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    fn get(&mut self, path: &str) -> Option<Response> {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.response()
    }

    /// The next whole response (its body by `Content-Length`), or `None` if the connection
    /// ended or failed first.
    fn response(&mut self) -> Option<Response> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..i + 4]).to_string();
                let len: usize = util::header(head.as_bytes(), "content-length")?
                    .parse()
                    .ok()?;
                while self.buf.len() < i + 4 + len {
                    let n = self.s.read(&mut chunk).ok()?;
                    if n == 0 {
                        return None;
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                let body = self.buf[i + 4..i + 4 + len].to_vec();
                self.buf.drain(..i + 4 + len);
                return Some(Response {
                    status: util::status_of(head.as_bytes()),
                    head,
                    body,
                });
            }
            let n = self.s.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True once the server has closed the connection (a clean end of stream).
    fn ended(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0))
    }
}

/// VmRSS of the master and all its descendants, in KiB.
fn tree_rss_kb(pid: i32) -> u64 {
    std::iter::once(pid)
        .chain(util::descendants(pid))
        .filter_map(|p| util::status_kb(p, "VmRSS"))
        .sum()
}

/// Sockets among the open fds of `pid`.
fn sockets(pid: i32) -> usize {
    util::fds(pid)
        .iter()
        .filter(|f| f.contains("socket:"))
        .count()
}

/// Raises this process's soft fd limit to its hard one (clients hold thousands of sockets),
/// before forkd starts, so forkd inherits it too.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

#[test]
fn two_thousand_idle_connections_cost_a_few_mib_and_a_fresh_client_is_served() {
    let hard = raise_fd_limit();
    assert!(
        hard >= 4500,
        "this test needs 4500 fds, the hard limit is {hard}"
    );
    let (server, metrics) = start_metered(&[
        "--workers",
        "2",
        "--worker-connections",
        "4096",
        "--max-conns-per-client",
        "0",
        "--keepalive-timeout",
        "60s",
    ]);
    // Each idle connection has had a request answered: it is held by a worker, not queued.
    let mut idle: Vec<Client> = (0..2000).map(|_| Client::connect(server.addr)).collect();
    for c in idle.iter_mut() {
        c.send(b"GET /small.html HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    for c in idle.iter_mut() {
        assert_eq!(c.response().map(|r| r.status), Some(200));
    }
    metric_reaches(&metrics.path, "forkd_connections", 2000);
    let mut fresh = Client::connect(server.addr);
    let mut slowest = Duration::ZERO;
    for _ in 0..300 {
        let t = Instant::now();
        let r = fresh.get("/2k.html").expect("an answer");
        assert_eq!((r.status, r.body.len()), (200, 2048));
        slowest = slowest.max(t.elapsed());
    }
    let rss = tree_rss_kb(server.pid());
    let procs = 1 + util::descendants(server.pid()).len();
    eprintln!(
        "event: 2000 idle keep-alive connections on 2 workers: tree RSS {} KiB over {procs} \
         processes; slowest of 300 fresh requests {slowest:?}",
        rss
    );
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    assert!(rss < 32 * 1024, "tree RSS {rss} KiB");
    // Every idle connection is still there and still answers.
    for c in idle.iter_mut().step_by(100) {
        assert_eq!(c.get("/small.html").map(|r| r.status), Some(200));
    }
}

#[test]
fn the_bound_holds_and_a_full_worker_leaves_connections_in_the_queue() {
    let (server, metrics) = start_metered(&[
        "--workers",
        "2",
        "--worker-connections",
        "8",
        "--max-conns-per-client",
        "0",
        // A connection ends only when its client leaves.
        "--max-requests-per-connection",
        "1000000",
    ]);
    let workers = workers(&server, 2);
    // 40 keep-alive clients asking as fast as they are answered for 2 s, then once more each.
    // 16 are served; the others wait in the accept queue (their first request unanswered) until
    // the first ones leave.
    let until = Instant::now() + Duration::from_secs(2);
    let addr = server.addr;
    let clients: Vec<_> = (0..40)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut first = None;
                loop {
                    let r = c.get("/small.html").expect("an answer, sooner or later");
                    assert_eq!(r.status, 200);
                    first.get_or_insert_with(Instant::now);
                    if Instant::now() > until {
                        return first.is_some_and(|t| t <= until);
                    }
                }
            })
        })
        .collect();
    let mut most = 0;
    while Instant::now() < until {
        for w in &workers {
            most = most.max(sockets(*w));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let served_early = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .filter(|early| *early)
        .count();
    eprintln!(
        "event: 40 clients on 2 x 8: {served_early} served within the first 2 s, the rest after; \
         at most {most} sockets in a worker"
    );
    // Each worker: its connections and the listener.
    assert!(most <= 8 + 1, "a worker held {most} sockets");
    assert!(served_early <= 16, "{served_early} clients served at once");
    metric_reaches(
        &metrics.path,
        "forkd_limit_hits_total{limit=\"worker_connections\"}",
        1,
    );
}

#[test]
fn sixty_four_clients_on_two_workers_are_served_together() {
    let server = start(&["--workers", "2", "--max-conns-per-client", "0"]);
    let mut clients: Vec<Client> = (0..64).map(|_| Client::connect(server.addr)).collect();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    // Round robin over open connections: a client that waited for another's connection to
    // end would stall the round for good.
    for _ in 0..20 {
        for c in clients.iter_mut() {
            c.s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let t = Instant::now();
            let r = c.get("/2k.html").expect("an answer on every connection");
            assert_eq!(r.status, 200);
            slowest = slowest.max(t.elapsed());
        }
    }
    eprintln!(
        "event: 64 clients x 20 requests on 2 workers in {:?}, slowest {slowest:?}",
        started.elapsed()
    );
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
}

#[test]
fn a_slow_reader_gets_every_byte_of_a_large_file_while_others_are_served() {
    // One worker: the slow reader and the others share it.
    let server = start(&["--workers", "1"]);
    let addr = server.addr;
    let slow = std::thread::spawn(move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(16 * 1024).unwrap();
        s.connect(&addr.into()).unwrap();
        let mut s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (mut all, mut buf) = (Vec::new(), [0u8; 64 * 1024]);
        let t = Instant::now();
        loop {
            // A few MB/s at most: seconds for the file, far above the minimum rate.
            std::thread::sleep(Duration::from_millis(10));
            match s.read(&mut buf).unwrap() {
                0 => break,
                n => all.extend_from_slice(&buf[..n]),
            }
        }
        (all, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut fast = Client::connect(addr);
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let t = Instant::now();
        assert_eq!(fast.get("/2k.html").map(|r| r.status), Some(200));
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (all, took) = slow.join().unwrap();
    eprintln!("event: 8 MB to a slow reader in {took:?}; others' slowest answer {slowest:?}");
    assert!(took > Duration::from_millis(1500), "not slow: {took:?}");
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    let body = util::body_of(&all);
    assert_eq!(body.len(), BIG);
    assert!(body == big(), "the bytes differ");
}

#[test]
fn pipelined_requests_are_answered_in_order_and_bodies_dropped_exactly() {
    let server = start(&["--workers", "1"]);
    let mut c = Client::connect(server.addr);
    // One write: a GET, a POST with a body (405 after its body), a GET with a chunked body
    // (answered, the body dropped), a HEAD, a GET.
    c.send(
        b"GET /small.html HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /small.html HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello=world\
          GET /2k.html HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nGET /\r\n3;x=y\r\nabc\r\n0\r\nTrailer: z\r\n\r\n\
          HEAD /2k.html HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let r = c.response().unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello\n"[..]));
    let r = c.response().unwrap();
    assert_eq!(r.status, 405, "{}", r.head);
    let r = c.response().unwrap();
    assert_eq!((r.status, r.body.len()), (200, 2048));
    // A HEAD's head states the length but has no body: read the head only.
    let head_end = loop {
        if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = c.s.read(&mut chunk).unwrap();
        c.buf.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(util::status_of(&c.buf), 200);
    c.buf.drain(..head_end);
    assert_eq!(c.response().unwrap().status, 404);

    // A GET whose body comes 300 ms after its head is answered before the body is sent.
    c.send(b"GET /small.html HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\n");
    let t = Instant::now();
    let r = c.response().unwrap();
    let waited = t.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        waited < Duration::from_millis(250),
        "answered after {waited:?}"
    );
    std::thread::sleep(Duration::from_millis(300).saturating_sub(waited));
    c.send(b"GET /x\n");
    // The body was exactly those six bytes: the next request is read where it starts.
    assert_eq!(c.get("/2k.html").map(|r| r.status), Some(200));
    // And the same with a chunked body that trickles in.
    c.send(b"GET /small.html HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(c.response().map(|r| r.status), Some(200));
    for part in [&b"4\r\nab"[..], b"cd\r\n", b"0\r\n", b"\r\n"] {
        std::thread::sleep(Duration::from_millis(50));
        c.send(part);
    }
    assert_eq!(c.get("/small.html").map(|r| r.status), Some(200));
    // A POST waits for its body, as in prefork mode: a malformed one is 400, not 405.
    c.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    let r = c.response().unwrap();
    assert_eq!(r.status, 400);
    assert!(r.closes(), "{}", r.head);
    assert!(c.ended());
}

#[test]
fn every_timeout_holds_per_connection_inside_one_worker() {
    let (server, metrics) = start_metered(&[
        "--workers",
        "1",
        "--header-timeout",
        "1s",
        "--keepalive-timeout",
        "1s",
        "--send-timeout",
        "1s",
        "--defer-accept",
        "0",
    ]);
    let addr = server.addr;
    let t0 = Instant::now();
    // A: a partial head, then nothing: 408 at the header timeout.
    let mut partial = Client::connect(addr);
    partial.send(b"GET /small.html HTTP/1.1\r\nHost:");
    // B: nothing at all: closed quietly at the header timeout.
    let mut silent = Client::connect(addr);
    // C: one request, then idle: closed at the keep-alive timeout.
    let mut idle = Client::connect(addr);
    assert_eq!(idle.get("/small.html").map(|r| r.status), Some(200));
    // D: a large file to a reader that never reads: cut after the send timeout.
    let stuck = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(8 * 1024).unwrap();
        s.connect(&addr.into()).unwrap();
        let mut s: TcpStream = s.into();
        s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        s
    };
    // E, meanwhile: a client that keeps asking is answered at once every time.
    let mut busy = Client::connect(addr);
    let mut slowest = Duration::ZERO;
    while t0.elapsed() < Duration::from_millis(2500) {
        let t = Instant::now();
        assert_eq!(busy.get("/small.html").map(|r| r.status), Some(200));
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(slowest < Duration::from_millis(300), "{slowest:?}");
    let r = partial.response().expect("a 408");
    assert_eq!(r.status, 408);
    assert!(silent.ended(), "a silent connection is closed");
    assert!(idle.ended(), "an idle connection is closed");
    // The stuck reader's connection was cut: reading now drains what was in flight, then ends.
    stuck
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = Vec::new();
    let got = (&stuck).read_to_end(&mut sink).map(|_| sink.len());
    assert!(
        matches!(got, Ok(n) if n < BIG) || got.is_err(),
        "the stuck reader got {got:?} of {BIG}"
    );
    let text = metric_reaches(
        &metrics.path,
        "forkd_limit_hits_total{limit=\"send_timeout\"}",
        1,
    );
    for (name, at_least) in [("header_timeout", 2), ("keepalive_timeout", 1)] {
        let key = format!("forkd_limit_hits_total{{limit=\"{name}\"}}");
        let n = metric(&text, &key).unwrap_or(0);
        assert!(n >= at_least, "{key} {n}\n{text}");
    }
    // Once the timeouts had their effect, the busy client is the one connection left.
    assert!(busy.get("/small.html").is_some());
}

/// Keep-alive clients that count requests sent and answers missing; stopped by `stop`.
fn keep_alive_clients(
    addr: SocketAddr,
    n: usize,
    stop: &Arc<AtomicBool>,
    lost: &Arc<AtomicU64>,
    answered: &Arc<AtomicU64>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (stop, lost, answered) = (stop.clone(), lost.clone(), answered.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    let Ok(s) = TcpStream::connect(addr) else {
                        // The server is gone (stopped): refused before any request was sent.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut c = Client { s, buf: Vec::new() };
                    while !stop.load(Relaxed) {
                        match c.get("/2k.html") {
                            Some(r) if r.status == 200 => {
                                answered.fetch_add(1, Relaxed);
                                if r.closes() {
                                    break;
                                }
                            }
                            // A request sent and not answered: what a graceful stop must
                            // never do.
                            _ => {
                                lost.fetch_add(1, Relaxed);
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect()
}

#[test]
fn sigterm_under_keep_alive_load_answers_every_request_sent() {
    let server = start(&["--workers", "2", "--max-conns-per-client", "0"]);
    let (stop, lost, answered) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let clients = keep_alive_clients(server.addr, 8, &stop, &lost, &answered);
    std::thread::sleep(Duration::from_millis(500));
    let before = answered.load(Relaxed);
    let mut server = server;
    server.proc.signal(Signal::SIGTERM);
    let status = server.proc.wait_exit(Duration::from_secs(10));
    stop.store(true, Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    eprintln!(
        "event: SIGTERM under 8 keep-alive clients: {before} answered before, {} in all, {} lost",
        answered.load(Relaxed),
        lost.load(Relaxed)
    );
    assert!(status.success(), "{status:?}");
    assert!(before > 100, "{before}");
    assert_eq!(lost.load(Relaxed), 0, "requests sent and never answered");
}

#[test]
fn two_hundred_reloads_under_keep_alive_load_fail_no_request() {
    let (server, metrics) = start_metered(&["--workers", "2", "--max-conns-per-client", "0"]);
    let load = Load::start(server.addr, 8);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..200 {
        server.proc.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(15));
    }
    std::thread::sleep(Duration::from_millis(300));
    let r = load.finish();
    eprintln!(
        "event: 200 SIGHUPs under -c 8: {} requests, {} errors, {} connects",
        r["requests"], r["errors_total"], r["connects"]
    );
    assert_eq!(r["errors_total"], 0, "{r:#}");
    assert!(r["requests"].as_u64().unwrap() > 1000, "{r:#}");
    let text = metric_reaches(&metrics.path, "forkd_generation", 20);
    for cause in ["panic", "SIGKILL", "other signal", "other exit"] {
        let name = format!("forkd_child_crashes_total{{cause=\"{cause}\"}}");
        assert_eq!(metric(&text, &name), Some(0), "{text}");
    }
    eventually(Duration::from_secs(10), "2 workers again", || {
        (util::children(server.pid()).len() == 2).then_some(())
    });
}

#[test]
fn fds_stay_flat_after_20k_connections() {
    let server = start(&["--workers", "2", "--max-conns-per-client", "0"]);
    let get = |addr| {
        let mut c = Client::connect(addr);
        c.send(b"GET /2k.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        c.response().map_or(0, |r| r.status)
    };
    let addr = server.addr;
    let hammer = move |n: usize| -> usize {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || (0..n / 4).filter(|_| get(addr) != 200).count()))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    };
    assert_eq!(hammer(100), 0);
    let workers = util::children(server.pid());
    // Settle: closed connections leave the worker's table within a turn.
    std::thread::sleep(Duration::from_millis(200));
    let before: Vec<Vec<String>> = std::iter::once(server.pid())
        .chain(workers.iter().copied())
        .map(util::fds)
        .collect();
    assert_eq!(hammer(20_000), 0, "failed requests");
    std::thread::sleep(Duration::from_millis(200));
    let after: Vec<Vec<String>> = std::iter::once(server.pid())
        .chain(workers.iter().copied())
        .map(util::fds)
        .collect();
    assert_eq!(util::children(server.pid()), workers, "workers replaced");
    assert_eq!(before, after, "fds of the master and workers changed");
    // Every fd a worker opened is close-on-exec, the epoll fd included (pipes and /dev/null
    // come from the test harness, to the master as well).
    for w in &workers {
        for entry in std::fs::read_dir(format!("/proc/{w}/fdinfo")).unwrap() {
            let entry = entry.unwrap();
            let fd: i32 = entry.file_name().to_str().unwrap().parse().unwrap();
            let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map_or(0, |f| u32::from_str_radix(f.trim(), 8).unwrap());
            let target = std::fs::read_link(format!("/proc/{w}/fd/{fd}")).unwrap_or_default();
            let target = target.to_string_lossy();
            let inherited = target == "/dev/null" || target.starts_with("pipe:");
            assert!(
                fd < 3 || inherited || flags & libc::O_CLOEXEC as u32 != 0,
                "worker {w}: fd {fd} is not close-on-exec: {info}\n{:#?}",
                util::fds(*w)
            );
        }
    }
}

/// Starts forkd in event mode with `args` and the environment `env`, serving [`site`].
fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let mut cmd = std::process::Command::new(util::FORKD);
    cmd.args(["--mode", "event", "--listen", "127.0.0.1:0", "--root"])
        .arg(dir.path())
        .args(args)
        .env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proc = util::Proc::spawn_cmd(&mut cmd);
    let addr = util::wait_ready(&proc);
    Server {
        proc,
        addr,
        dir: Some(dir),
    }
}

#[test]
fn a_crashing_request_costs_its_worker_and_the_worker_is_replaced_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("m.prom");
    let args = [
        "--workers",
        "2",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ];
    let server = start_with_env(&args, &[("FORKD_TEST_PANIC_PATH", "/crash")]);
    let pool = workers(&server, 2);
    let mut crash = Client::connect(server.addr);
    assert!(
        crash.get("/crash").is_none(),
        "a crashing request has no answer"
    );
    // Replaced at once, not after a respawn delay.
    server
        .proc
        .wait_line("while serving; replaced at once", Duration::from_secs(5));
    let after = eventually(Duration::from_secs(2), "2 workers again", || {
        let w = util::children(server.pid());
        (w.len() == 2 && w != pool).then_some(w)
    });
    assert_eq!(after.iter().filter(|p| pool.contains(p)).count(), 1);
    let text = metric_reaches(&metrics, "forkd_child_crashes_total{cause=\"panic\"}", 1);
    assert_eq!(
        metric(&text, "forkd_limit_hits_total{limit=\"respawn_throttled\"}"),
        Some(0),
        "{text}"
    );
    let mut c = Client::connect(server.addr);
    assert_eq!(c.get("/small.html").map(|r| r.status), Some(200));
}

#[test]
fn the_per_client_limit_holds_across_event_workers() {
    let (server, metrics) = start_metered(&["--workers", "2", "--max-conns-per-client", "3"]);
    let mut held: Vec<Client> = (0..3).map(|_| Client::connect(server.addr)).collect();
    for c in held.iter_mut() {
        assert_eq!(c.get("/small.html").map(|r| r.status), Some(200));
    }
    // A fourth connection from the same address: a fast 503, whichever worker takes it.
    for _ in 0..4 {
        let mut c = Client::connect(server.addr);
        let r = c.get("/small.html").expect("the busy answer");
        assert_eq!(r.status, 503);
        assert_eq!(
            util::header(r.head.as_bytes(), "retry-after").as_deref(),
            Some("1")
        );
    }
    // One leaves: a place for another.
    drop(held.pop());
    eventually(Duration::from_secs(5), "a place once one left", || {
        let mut c = Client::connect(server.addr);
        (c.get("/small.html").map(|r| r.status) == Some(200)).then_some(())
    });
    metric_reaches(
        &metrics.path,
        "forkd_limit_hits_total{limit=\"per_client\"}",
        4,
    );
}

#[test]
fn a_spent_request_budget_recycles_a_worker_without_losing_a_request() {
    let server = start(&[
        "--workers",
        "2",
        "--max-requests-per-worker",
        "40",
        "--max-conns-per-client",
        "0",
    ]);
    let pool = workers(&server, 2);
    let mut c = Client::connect(server.addr);
    for i in 0..300 {
        let r = c
            .get("/small.html")
            .unwrap_or_else(|| panic!("request {i} lost"));
        assert_eq!(r.status, 200);
        if r.closes() {
            c = Client::connect(server.addr);
        }
    }
    let now = util::children(server.pid());
    assert!(
        now.iter().any(|p| !pool.contains(p)),
        "no worker was recycled: {pool:?} -> {now:?}"
    );
}

#[test]
fn a_retiring_worker_answers_the_next_request_and_closes_idle_connections_cleanly() {
    let server = start(&["--workers", "2", "--max-conns-per-client", "0"]);
    let mut busy = Client::connect(server.addr);
    let mut idle = Client::connect(server.addr);
    for c in [&mut busy, &mut idle] {
        assert_eq!(c.get("/small.html").map(|r| r.status), Some(200));
    }
    server.proc.signal(Signal::SIGHUP);
    server
        .proc
        .wait_line("reloaded configuration", Duration::from_secs(5));
    // Let SIGTERM reach the old workers, but stay within their grace.
    std::thread::sleep(Duration::from_millis(20));
    let r = busy
        .get("/small.html")
        .expect("a response, not a closed connection");
    assert_eq!(r.status, 200);
    assert!(r.closes(), "{}", r.head);
    assert!(busy.ended());
    // The idle one gets a clean end of stream (not a reset) once the grace is over.
    let t = Instant::now();
    let mut sink = Vec::new();
    let end = idle.s.read_to_end(&mut sink);
    assert!(
        matches!(end, Ok(0)),
        "idle connection should end with FIN: {end:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn usr1_reopens_the_access_log_in_place() {
    let (dir, create) = util::log_dir();
    let log = dir.path().join("access.log");
    create(&log);
    let server = start(&["--workers", "1", "--access-log", log.to_str().unwrap()]);
    let worker = workers(&server, 1);
    let mut c = Client::connect(server.addr);
    assert_eq!(c.get("/small.html").map(|r| r.status), Some(200));
    let rotated = dir.path().join("access.log.1");
    eventually(Duration::from_secs(5), "a line", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("GET /small.html"))
    });
    std::fs::rename(&log, &rotated).unwrap();
    create(&log);
    server.proc.signal(Signal::SIGUSR1);
    server.proc.wait_line(
        "reopen theirs before their next line",
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_millis(100));
    // The same connection, the same worker: the next line goes to the new file.
    assert_eq!(c.get("/2k.html").map(|r| r.status), Some(200));
    let text = eventually(Duration::from_secs(5), "a line in the new file", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("GET /2k.html"))
    });
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("2k.html"));
    assert_eq!(util::children(server.pid()), worker, "reopened in place");
}
