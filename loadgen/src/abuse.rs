//! Hostile clients, run beside the normal load so the report shows what an ordinary client sees
//! while they run: slowloris (headers trickled a byte at a time, never finished), slow readers
//! (many pipelined requests, read a few bytes at a time), a flood of idle connections, and a mix
//! of malformed requests. Each mode is bounded: at most `conns` connections at once, at most
//! `conns` new connections a second, and it ends when the normal load ends.
//!
//! One thread drives every hostile connection of a mode with `poll`; none of it is on the hot
//! path, so it favours plainness over speed.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::{json, Value};
use socket2::{Domain, Protocol, Socket, Type};

/// The kinds of hostile client.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbuseMode {
    /// Send a request head one byte a second and never finish it.
    Slowloris,
    /// Pipeline many requests and read the responses a few bytes at a time.
    SlowReader,
    /// Open connections and send nothing.
    IdleFlood,
    /// Send malformed and hostile requests (bad syntax, smuggling, traversal, oversize).
    Malformed,
}

impl AbuseMode {
    pub fn name(self) -> &'static str {
        match self {
            AbuseMode::Slowloris => "slowloris",
            AbuseMode::SlowReader => "slow-reader",
            AbuseMode::IdleFlood => "idle-flood",
            AbuseMode::Malformed => "malformed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AbuseConfig {
    pub mode: AbuseMode,
    pub addr: SocketAddr,
    pub authority: String,
    /// The path slow readers ask for.
    pub path: String,
    /// Hostile connections open at once.
    pub conns: usize,
    /// Requests a slow reader pipelines on its connection.
    pub pipeline: usize,
}

/// What one mode did and what the server did to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AbuseReport {
    pub mode: &'static str,
    pub opened: u64,
    pub connect_errors: u64,
    /// Connections the server closed or reset (what its timeouts and limits should do).
    pub cut_by_server: u64,
    /// Connections still open when the run ended.
    pub open_at_end: u64,
    /// Seconds from open to the server's cut, averaged, and the longest any connection lived.
    pub mean_time_to_cut_s: f64,
    pub longest_open_s: f64,
    /// First status line of each response a hostile request got.
    pub statuses: BTreeMap<u16, u64>,
    /// Malformed requests that got no status line before the server closed (or 5 s passed).
    pub no_response: u64,
    pub bytes_sent: u64,
    pub bytes_read: u64,
}

impl AbuseReport {
    pub fn human(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        format!(
            "Abuse {}: {} connections opened ({} failed), {} cut by the server (after {:.2}s on average), {} still open at the end, longest open {:.1}s; statuses [{}], no response {}; {} bytes sent, {} read",
            self.mode,
            self.opened,
            self.connect_errors,
            self.cut_by_server,
            self.mean_time_to_cut_s,
            self.open_at_end,
            self.longest_open_s,
            statuses.join(", "),
            self.no_response,
            self.bytes_sent,
            self.bytes_read
        )
    }

    pub fn json(&self) -> Value {
        let statuses: serde_json::Map<String, Value> = self
            .statuses
            .iter()
            .map(|(s, n)| (s.to_string(), json!(n)))
            .collect();
        json!({
            "mode": self.mode, "opened": self.opened, "connect_errors": self.connect_errors,
            "cut_by_server": self.cut_by_server, "open_at_end": self.open_at_end,
            "mean_time_to_cut_s": self.mean_time_to_cut_s, "longest_open_s": self.longest_open_s,
            "statuses": statuses, "no_response": self.no_response,
            "bytes_sent": self.bytes_sent, "bytes_read": self.bytes_read,
        })
    }
}

/// The malformed mix: each is something a strict origin server must refuse (or at least not
/// serve as a normal request).
pub fn malformed_requests(authority: &str) -> Vec<Vec<u8>> {
    let h = authority;
    let mut v: Vec<Vec<u8>> = [
        "GARBAGE\r\n\r\n".to_string(),
        "GET\r\n\r\n".to_string(),
        format!("GET / HTTP/9.9\r\nHost: {h}\r\n\r\n"),
        format!("get / HTTP/1.1\r\nHost: {h}\r\n\r\n"),
        format!("GET /%00 HTTP/1.1\r\nHost: {h}\r\n\r\n"),
        format!("GET /../../../../etc/passwd HTTP/1.1\r\nHost: {h}\r\n\r\n"),
        format!("GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: {h}\r\n\r\n"),
        "GET / HTTP/1.1\r\n\r\n".to_string(),
        format!("GET / HTTP/1.1\r\nHost: {h}\r\nBad Header: x\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {h}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        format!("GET / HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: gzip\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {h}\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000)),
        format!("GET /{} HTTP/1.1\r\nHost: {h}\r\n\r\n", "a".repeat(20_000)),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    v.push(b"\x00\x01\x02\xff\xfe\r\n\r\n".to_vec());
    v
}

/// The trickle a slowloris client sends after its request line: header bytes forever, never
/// the blank line that would end the head.
const TRICKLE: &[u8] = b"X-Slow: a\r\n";
const STEP: Duration = Duration::from_millis(1000);
const SLOW_READ_STEP: Duration = Duration::from_millis(500);
const SLOW_READ_BYTES: usize = 256;
const MALFORMED_WAIT: Duration = Duration::from_secs(5);

struct Hostile {
    stream: TcpStream,
    opened: Instant,
    next_step: Instant,
    trickled: usize,
    status_seen: bool,
}

/// Runs `cfg.mode` until `stop` is set.
pub fn run(cfg: &AbuseConfig, stop: &AtomicBool) -> AbuseReport {
    let mut rep = AbuseReport {
        mode: cfg.mode.name(),
        ..AbuseReport::default()
    };
    let malformed = malformed_requests(&cfg.authority);
    let mut next_malformed = 0;
    let mut conns: Vec<Hostile> = Vec::new();
    let mut cut_total = 0.0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut ready: Vec<bool> = Vec::new();
    let mut second = Instant::now();
    let mut opened_this_second = 0;
    while !stop.load(Relaxed) {
        let now = Instant::now();
        if now.duration_since(second) >= Duration::from_secs(1) {
            second = now;
            opened_this_second = 0;
        }
        while conns.len() < cfg.conns && opened_this_second < cfg.conns && !stop.load(Relaxed) {
            opened_this_second += 1;
            let first = match cfg.mode {
                AbuseMode::Slowloris => {
                    format!("GET {} HTTP/1.1\r\nHost: {}\r\n", cfg.path, cfg.authority).into_bytes()
                }
                AbuseMode::SlowReader => {
                    let one = format!(
                        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
                        cfg.path, cfg.authority
                    );
                    one.repeat(cfg.pipeline).into_bytes()
                }
                AbuseMode::IdleFlood => Vec::new(),
                AbuseMode::Malformed => {
                    next_malformed = (next_malformed + 1) % malformed.len();
                    malformed[next_malformed].clone()
                }
            };
            match open(cfg, &first) {
                Ok((stream, sent)) => {
                    rep.opened += 1;
                    rep.bytes_sent += sent as u64;
                    let step = if cfg.mode == AbuseMode::SlowReader {
                        SLOW_READ_STEP
                    } else {
                        STEP
                    };
                    conns.push(Hostile {
                        stream,
                        opened: now,
                        next_step: now + step,
                        trickled: 0,
                        status_seen: false,
                    });
                }
                Err(_) => {
                    rep.connect_errors += 1;
                    break;
                }
            }
        }

        // Timed steps: trickle a header byte, read a few bytes, give up on a silent server.
        let mut closed: Vec<(usize, bool)> = Vec::new();
        for (i, c) in conns.iter_mut().enumerate() {
            if c.next_step > now {
                continue;
            }
            match cfg.mode {
                AbuseMode::Slowloris => {
                    let byte = [TRICKLE[c.trickled % TRICKLE.len()]];
                    match (&c.stream).write(&byte) {
                        Ok(n) => {
                            c.trickled += n;
                            rep.bytes_sent += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => closed.push((i, true)),
                    }
                    c.next_step = now + STEP;
                }
                AbuseMode::SlowReader => {
                    match (&c.stream).read(&mut buf[..SLOW_READ_BYTES]) {
                        Ok(0) => closed.push((i, true)),
                        Ok(n) => rep.bytes_read += n as u64,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => closed.push((i, true)),
                    }
                    c.next_step = now + SLOW_READ_STEP;
                }
                AbuseMode::IdleFlood => c.next_step = now + STEP,
                AbuseMode::Malformed => {
                    if now.duration_since(c.opened) >= MALFORMED_WAIT {
                        if !c.status_seen {
                            rep.no_response += 1;
                        }
                        closed.push((i, false));
                    }
                    c.next_step = now + STEP;
                }
            }
        }

        // Wait for the server to answer or cut; slow readers only watch for a cut. nix has no
        // name for POLLRDHUP, so it is passed as its bit.
        let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
        let events = if cfg.mode == AbuseMode::SlowReader {
            rdhup
        } else {
            PollFlags::POLLIN | rdhup
        };
        let wait = conns
            .iter()
            .map(|c| c.next_step)
            .min()
            .map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(100));
        // Which connections have something to say; the poll set borrows `conns`, so it ends
        // before they are read.
        ready.clear();
        {
            let mut pollfds: Vec<PollFd<'_>> = conns
                .iter()
                .map(|c| PollFd::new(c.stream.as_fd(), events))
                .collect();
            let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            if poll(&mut pollfds, timeout).is_ok_and(|n| n > 0) {
                ready.extend(
                    pollfds
                        .iter()
                        // `None` is a bit nix does not name (POLLRDHUP): woken all the same.
                        .map(|p| p.revents() != Some(PollFlags::empty())),
                );
            }
        }
        if !ready.is_empty() {
            for (i, &woke) in ready.iter().enumerate() {
                if !woke || closed.iter().any(|c| c.0 == i) {
                    continue;
                }
                let c = &mut conns[i];
                if cfg.mode == AbuseMode::SlowReader {
                    closed.push((i, true));
                    continue;
                }
                match (&c.stream).read(&mut buf) {
                    Ok(0) => {
                        if cfg.mode == AbuseMode::Malformed && !c.status_seen {
                            rep.no_response += 1;
                        }
                        closed.push((i, true));
                    }
                    Ok(n) => {
                        rep.bytes_read += n as u64;
                        if !c.status_seen {
                            c.status_seen = true;
                            *rep.statuses.entry(status_of(&buf[..n])).or_default() += 1;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        if cfg.mode == AbuseMode::Malformed && !c.status_seen {
                            rep.no_response += 1;
                        }
                        closed.push((i, true));
                    }
                }
            }
        }

        closed.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
        closed.dedup_by_key(|c| c.0);
        let now = Instant::now();
        for (i, by_server) in closed {
            let c = conns.swap_remove(i);
            let lived = now.duration_since(c.opened).as_secs_f64();
            rep.longest_open_s = rep.longest_open_s.max(lived);
            if by_server {
                rep.cut_by_server += 1;
                cut_total += lived;
            }
        }
    }
    let now = Instant::now();
    rep.open_at_end = conns.len() as u64;
    for c in &conns {
        rep.longest_open_s = rep
            .longest_open_s
            .max(now.duration_since(c.opened).as_secs_f64());
    }
    if rep.cut_by_server > 0 {
        rep.mean_time_to_cut_s = cut_total / rep.cut_by_server as f64;
    }
    rep
}

/// Connects (1 s timeout) and sends `first` in full (2 s timeout); returns a non-blocking stream.
/// A slow reader asks for a small receive buffer first, so the server's sends back up sooner.
fn open(cfg: &AbuseConfig, first: &[u8]) -> io::Result<(TcpStream, usize)> {
    let socket = Socket::new(
        Domain::for_address(cfg.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if cfg.mode == AbuseMode::SlowReader {
        socket.set_recv_buffer_size(4096)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.connect_timeout(&cfg.addr.into(), Duration::from_secs(1))?;
    let stream: TcpStream = socket.into();
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut sent = 0;
    // A server may answer an oversized head and close before taking all of it: that is a cut,
    // reported by the next read, not a failure to open.
    while sent < first.len() {
        match (&stream).write(&first[sent..]) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    stream.set_nonblocking(true)?;
    Ok((stream, sent))
}

/// The status code of a response's first bytes, or 0 when they are not a status line.
pub fn status_of(resp: &[u8]) -> u16 {
    if resp.len() >= 12 && resp.starts_with(b"HTTP/1.") {
        std::str::from_utf8(&resp[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Arc;

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 400 Bad Request\r\n"), 400);
        assert_eq!(status_of(b"HTTP/1.0 200"), 200);
        assert_eq!(status_of(b"junk"), 0);
    }

    #[test]
    fn malformed_mix_is_all_unfinished_or_wrong() {
        let mix = malformed_requests("h");
        assert!(mix.len() >= 14);
        // Every entry but the pure-binary one is a complete head, so a server has to decide.
        assert!(mix.iter().all(|r| r.windows(4).any(|w| w == b"\r\n\r\n")));
    }

    /// Against a listener that accepts and closes at once, every mode sees its connections cut,
    /// and stops when told to.
    #[test]
    fn modes_are_bounded_and_see_cuts() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let server_stop = stop.clone();
        l.set_nonblocking(true).unwrap();
        let server = std::thread::spawn(move || {
            while !server_stop.load(Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ =
                            s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        for mode in [
            AbuseMode::Slowloris,
            AbuseMode::IdleFlood,
            AbuseMode::Malformed,
            AbuseMode::SlowReader,
        ] {
            let cfg = AbuseConfig {
                mode,
                addr,
                authority: addr.to_string(),
                path: "/".into(),
                conns: 4,
                pipeline: 2,
            };
            let mode_stop = Arc::new(AtomicBool::new(false));
            let s2 = mode_stop.clone();
            let t = std::thread::spawn(move || run(&cfg, &s2));
            std::thread::sleep(Duration::from_millis(1500));
            mode_stop.store(true, Relaxed);
            let rep = t.join().unwrap();
            assert!(rep.opened >= 4 && rep.opened <= 4 * 3, "{mode:?}: {rep:?}");
            assert!(rep.cut_by_server >= 1, "{mode:?}: {rep:?}");
            if mode != AbuseMode::SlowReader {
                assert!(
                    rep.statuses.get(&400).copied().unwrap_or(0) >= 1,
                    "{mode:?}: {rep:?}"
                );
            }
        }
        stop.store(true, Relaxed);
        server.join().unwrap();
    }
}
