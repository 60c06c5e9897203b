//! Issue 9: fresh clients keep being served while hostile clients hold connections. Each case
//! starts a server, points one attack at it from 127.0.0.2 (many times more connections than
//! the pool has children), and measures plain `GET`s from 127.0.0.1 while the attack runs: at
//! least 90 % must be answered within a second.
//!
//! The counts are the issue's, scaled for CI time: 500 connections for slowloris, slow read
//! and slow POST, 2,000 for the idle flood, against 8 prefork workers (over 60 times the pool),
//! 64 fork-mode children (8 times), or 2 event workers (each holding up to 1024 connections).
//! The attackers live in the test (one thread per attack, non-blocking sockets), so they can
//! bind their own source address; a connection the server cuts is opened again at the next
//! step, so the pressure stays for the whole case.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::util::{eventually, limit_hits, Server};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// How long fresh clients are measured while an attack runs.
const MEASURE: Duration = Duration::from_secs(3);
/// What "answered in time" means for a fresh client.
const IN_TIME: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// Connect and send nothing.
    IdleFlood,
    /// A request line, then a header byte a second, never the end of the head.
    Slowloris,
    /// Pipelined requests for a large file on a small receive buffer, read a few bytes a second.
    SlowRead,
    /// A complete head announcing a large body, then a body byte a second.
    SlowPost,
}

impl Attack {
    fn conns(self) -> usize {
        match self {
            Attack::IdleFlood => 2000,
            _ => 500,
        }
    }

    fn first_bytes(self) -> Vec<u8> {
        match self {
            Attack::IdleFlood => Vec::new(),
            Attack::Slowloris => b"GET /small.html HTTP/1.1\r\nHost: a\r\n".to_vec(),
            Attack::SlowRead => b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n".repeat(4),
            Attack::SlowPost => {
                b"POST /small.html HTTP/1.1\r\nHost: a\r\nContent-Length: 500000\r\n\r\n".to_vec()
            }
        }
    }

    /// What a connection sends at each step (once a second).
    fn step_bytes(self) -> &'static [u8] {
        match self {
            Attack::Slowloris => b"X",
            Attack::SlowPost => b"x",
            Attack::IdleFlood | Attack::SlowRead => b"",
        }
    }
}

/// One attack running in a thread until dropped.
struct Attacker {
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    thread: Option<JoinHandle<AttackStats>>,
}

#[derive(Debug, Default)]
struct AttackStats {
    opened: usize,
    cut: usize,
    connect_failed: usize,
}

impl Attacker {
    fn start(kind: Attack, target: SocketAddr) -> Attacker {
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let (s, o) = (stop.clone(), open.clone());
        let thread = std::thread::spawn(move || attack(kind, target, &s, &o));
        Attacker {
            stop,
            open,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> AttackStats {
        self.stop.store(true, Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn connect_from(kind: Attack, target: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    if kind == Attack::SlowRead {
        s.set_recv_buffer_size(4096)?;
    }
    s.bind(&SocketAddr::new(ATTACKER, 0).into())?;
    s.connect_timeout(&target.into(), Duration::from_millis(500))?;
    let mut s: TcpStream = s.into();
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(Duration::from_millis(500)))?;
    let first = kind.first_bytes();
    if !first.is_empty() {
        s.write_all(&first)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Keeps `kind.conns()` connections open against `target` until `stop`: (re)opens what is
/// missing every 100 ms, steps each connection once a second, and notices cuts.
fn attack(kind: Attack, target: SocketAddr, stop: &AtomicBool, open: &AtomicUsize) -> AttackStats {
    let mut stats = AttackStats::default();
    let mut conns: Vec<TcpStream> = Vec::new();
    let mut next_step = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 4096];
    while !stop.load(Relaxed) {
        while conns.len() < kind.conns() && !stop.load(Relaxed) {
            match connect_from(kind, target) {
                Ok(s) => {
                    stats.opened += 1;
                    conns.push(s);
                }
                Err(_) => {
                    stats.connect_failed += 1;
                    break;
                }
            }
        }
        open.store(conns.len(), Relaxed);
        let step = Instant::now() >= next_step;
        if step {
            next_step = Instant::now() + Duration::from_secs(1);
        }
        let before = conns.len();
        conns.retain_mut(|c| {
            // A slow reader takes a few bytes a step; everyone else only looks for the cut.
            let want = match kind {
                Attack::SlowRead if !step => 0,
                Attack::SlowRead => 16,
                _ => buf.len(),
            };
            if want > 0 {
                match c.read(&mut buf[..want]) {
                    Ok(0) => return false,
                    Ok(_) if kind != Attack::SlowRead => return false, // an answer: 503 or 408
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return false,
                }
            }
            if step && !kind.step_bytes().is_empty() {
                match c.write(kind.step_bytes()) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return false,
                }
            }
            true
        });
        stats.cut += before - conns.len();
        std::thread::sleep(Duration::from_millis(100));
    }
    stats
}

/// Plain requests from 127.0.0.1, one after another, for `MEASURE`: (answered in time, sent).
fn fresh_clients(target: SocketAddr) -> (usize, usize) {
    let end = Instant::now() + MEASURE;
    let (mut ok, mut sent) = (0, 0);
    while Instant::now() < end {
        sent += 1;
        let t0 = Instant::now();
        if fresh_request(target).is_some_and(|s| s == 200) && t0.elapsed() <= IN_TIME {
            ok += 1;
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    (ok, sent)
}

fn fresh_request(target: SocketAddr) -> Option<u16> {
    fresh_request_within(target, Duration::from_millis(1500))
}

fn fresh_request_within(target: SocketAddr, wait: Duration) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&target, wait).ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    s.write_all(b"GET /small.html HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    Some(crate::util::status_of(&out))
}

fn site(root: &Path) {
    std::fs::write(root.join("small.html"), "hello\n").unwrap();
    std::fs::write(root.join("big.bin"), vec![b'x'; 1 << 20]).unwrap();
}

/// Runs every attack against a fresh server started with `args`; returns one line of figures
/// per attack and fails if any attack kept fresh clients out.
fn survive_every_attack(mode: &str, args: &[&str]) {
    let mut failures = Vec::new();
    for kind in [
        Attack::IdleFlood,
        Attack::Slowloris,
        Attack::SlowRead,
        Attack::SlowPost,
    ] {
        let metrics_dir = tempfile::tempdir().unwrap();
        let metrics = metrics_dir.path().join("metrics.prom");
        let mut all = args.to_vec();
        all.extend(["--metrics-file", metrics.to_str().unwrap()]);
        let server = Server::with_site(&all, site);
        let attacker = Attacker::start(kind, server.addr);
        // The attack is in place once every connection of it is open (they are refused and
        // reopened from then on); half a second more lets the server take them in.
        let open = attacker.open.clone();
        eventually(Duration::from_secs(20), "the attack to open", || {
            (open.load(Relaxed) >= kind.conns()).then_some(())
        });
        std::thread::sleep(Duration::from_millis(500));
        let (ok, sent) = fresh_clients(server.addr);
        let stats = attacker.finish();
        // Let the master publish its last second of counters.
        std::thread::sleep(Duration::from_millis(1100));
        let per_client = limit_hits(&metrics, "per_client");
        let fraction = ok as f64 / sent.max(1) as f64;
        let line = format!(
            "abuse: {mode} {kind:?}: {ok}/{sent} fresh requests answered within 1 s ({:.0} %); \
             attacker opened {} (cut {}, connect failed {}); per_client limit hits {per_client}",
            fraction * 100.0,
            stats.opened,
            stats.cut,
            stats.connect_failed
        );
        eprintln!("{line}");
        if fraction < 0.9 || sent < 10 {
            failures.push(line);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn prefork_keeps_serving_fresh_clients_under_every_attack() {
    survive_every_attack("prefork", &["--workers", "8"]);
}

#[test]
fn fork_mode_keeps_serving_fresh_clients_under_every_attack() {
    survive_every_attack("fork", &["--mode", "fork", "--max-children", "64"]);
}

/// Two event workers: an attack's connections are held, not refused (up to the per-client
/// limit, a quarter of 2 x 1024), and none of them keeps a worker from the others.
#[test]
fn event_mode_keeps_serving_fresh_clients_under_every_attack() {
    survive_every_attack("event", &["--mode", "event", "--workers", "2"]);
}

/// Pressure alone (no deferred accept, no per-client limit): silent connections that hold
/// every worker are cut within a couple of seconds instead of the 20 s header timeout, until
/// the pool is below three quarters busy again, so a client that waits behind them is served;
/// a silent connection that holds a quarter of the pool is left alone.
#[test]
fn a_full_pool_cuts_silent_connections_fast_and_a_quiet_one_keeps_its_time() {
    let metrics_dir = tempfile::tempdir().unwrap();
    let metrics = metrics_dir.path().join("metrics.prom");
    let server = Server::with_site(
        &[
            "--workers",
            "4",
            "--header-timeout",
            "20s",
            "--defer-accept",
            "0",
            "--max-conns-per-client",
            "0",
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
        site,
    );
    let open = |n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|_| TcpStream::connect(server.addr).unwrap())
            .collect()
    };
    // One of four workers busy: no pressure, the silent connection keeps its 20 s.
    let mut one = open(1);
    one[0]
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut sink = [0u8; 64];
    let e = one[0].read(&mut sink).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "a lone silent connection is still open after 3 s: {e}"
    );
    // Every worker busy, and a client waiting in the accept queue behind them: the silent
    // connections that find the pool full are cut after the pressed head time (1 s), looked
    // at again within the recheck (1 s).
    let _silent = open(3);
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let status = fresh_request_within(server.addr, Duration::from_secs(10));
    let took = started.elapsed();
    eprintln!("abuse: a client behind 4 silent connections on 4 workers answered after {took:?}");
    assert_eq!(status, Some(200));
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    eventually(Duration::from_secs(3), "header timeouts counted", || {
        (limit_hits(&metrics, "header_timeout") >= 1).then_some(())
    });
}
