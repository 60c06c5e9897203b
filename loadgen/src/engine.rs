//! The load itself: a few threads, each running one edge-triggered epoll loop over its share of
//! the connections, as wrk does. A thread per connection was the simpler alternative, but on a
//! two-core machine shared with the server its context switches cost more than the server's
//! work; one loop per core keeps the generator out of the way.
//!
//! The hot path allocates nothing: request bytes are built before the start, each connection
//! owns its read buffer, its write buffer and its queue of requests in flight for its whole
//! life, bodies are counted and discarded, and counts go into a thread-local [`Tally`]. The only
//! shared writes are one relaxed counter per thread (for the live time series and progress,
//! with a coarse latency histogram copied out every 100 ms) and, when `--requests` bounds the
//! run, one `fetch_add` per request.
//!
//! Closed loop: each connection sends its next request as soon as the previous response ends.
//! With `pipeline` N > 1 it keeps N requests in flight instead, written back to back; responses
//! come back in the order of the requests (RFC 9112, 9.3.2), so each response that ends belongs
//! to the oldest request still waiting, and the next request is written at once. A response
//! that closes the connection leaves the requests behind it unanswered: they are sent again on
//! a new connection, their latency still running from their first send.
//!
//! Open loop (`rate`): requests are due at fixed intended times; a due request takes the next
//! idle connection, and its latency runs from the intended time, not from when a connection
//! became free, so a stalled server shows as latency instead of fewer samples (no coordinated
//! omission). A request that arrives while every connection is busy waits, and that wait counts.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::epoll::{EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use socket2::{Domain, Protocol, Socket, Type};

use crate::response::{ResponseParser, Step};
use crate::stats::{Coarse, ErrorKind, Tally, COARSE_BUCKETS};

/// Everything the engine needs, prepared before the first request.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    /// One request per path, ready to write.
    pub requests: Vec<Vec<u8>>,
    /// Requests are `HEAD`: responses have no body.
    pub head: bool,
    /// Cyclic order of indices into `requests` (see [`crate::request::schedule`]).
    pub schedule: Vec<u16>,
    pub connections: usize,
    pub threads: usize,
    /// Open a new connection for every request (the requests then carry `Connection: close`).
    pub new_conn: bool,
    /// Requests in flight per connection in closed loop (1: none pipelined). Open loop and
    /// `new_conn` take 1 (`Args::check` refuses anything else).
    pub pipeline: usize,
    /// Open loop at this many requests per second in total; `None` is closed loop.
    pub rate: Option<f64>,
    /// Stop issuing after this many requests in total.
    pub limit: Option<u64>,
    /// A request (connect included) that takes longer fails as `timeout`.
    pub timeout: Duration,
}

/// Live counters of one thread, padded so two threads never write the same cache line.
#[repr(align(128))]
#[derive(Debug)]
pub struct Progress {
    pub responses: AtomicU64,
    pub errors: AtomicU64,
    /// The thread's coarse latency histogram ([`Coarse`]) as of its last sweep.
    pub latency: [AtomicU64; COARSE_BUCKETS],
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            responses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// State shared by the engine threads and the thread that watches them.
#[derive(Debug)]
pub struct Shared {
    /// Set to stop issuing requests; in-flight ones get a short grace period.
    pub stop: AtomicBool,
    issued: AtomicU64,
    pub progress: Vec<Progress>,
}

impl Shared {
    pub fn new(threads: usize) -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            issued: AtomicU64::new(0),
            progress: (0..threads).map(|_| Progress::default()).collect(),
        }
    }

    /// (responses, errors) so far, over all threads.
    pub fn totals(&self) -> (u64, u64) {
        self.progress.iter().fold((0, 0), |(r, e), p| {
            (r + p.responses.load(Relaxed), e + p.errors.load(Relaxed))
        })
    }

    /// The latencies so far over all threads, as of their last sweep (up to 100 ms old).
    pub fn latency(&self) -> Coarse {
        let mut c = Coarse::default();
        for p in &self.progress {
            for (sum, n) in c.counts.iter_mut().zip(&p.latency) {
                *sum += n.load(Relaxed);
            }
        }
        c
    }
}

/// Starts the engine threads; each returns its tally when its share of the load is done.
pub fn start(
    cfg: Arc<LoadConfig>,
    shared: Arc<Shared>,
) -> io::Result<Vec<JoinHandle<io::Result<Tally>>>> {
    let threads = cfg.threads.clamp(1, cfg.connections.max(1));
    let mut handles = Vec::with_capacity(threads);
    for id in 0..threads {
        // Connections split as evenly as possible; the rate in proportion to them.
        let conns = cfg.connections / threads + usize::from(id < cfg.connections % threads);
        let cfg = cfg.clone();
        let shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("load-{id}"))
            .spawn(move || Worker::new(id, conns, threads, cfg, shared)?.run())?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Read buffer per connection: big enough for any sane response head, and large reads keep
/// syscalls per megabyte of body low.
const BUF_SIZE: usize = 32 * 1024;
/// How often in-flight requests are checked against the timeout.
const SWEEP: Duration = Duration::from_millis(100);
/// After a failed connect, wait this long before that connection tries again, so a server that
/// is down costs the machine a trickle of attempts, not a busy loop.
const CONNECT_RETRY: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in flight (open loop: waiting for one to be due).
    Idle,
    /// Requests are queued and the connect has not finished.
    Connecting,
    /// Requests in flight: `out` is written as the socket takes it, responses are read.
    Active,
    /// Closed loop, nothing left to send.
    Finished,
}

/// One request written (or about to be) whose response has not ended.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Index into the requests.
    req: u16,
    /// Where latency is measured from: the intended time in open loop, the send otherwise.
    start: Instant,
    /// When the request really started (connect or write), for the timeout.
    sent: Instant,
}

struct Conn {
    stream: Option<TcpStream>,
    phase: Phase,
    /// Requests in flight, oldest first: the next response that ends is the front one's.
    pending: VecDeque<Pending>,
    /// Bytes of the pending requests, `written` of them sent.
    out: Vec<u8>,
    written: usize,
    parser: ResponseParser,
    buf: Box<[u8]>,
    filled: usize,
    /// A request was sent on this connection slot during the run...
    asked: bool,
    /// ...and a response ended on it.
    answered: bool,
}

impl Conn {
    /// Forgets the connection and every byte on its way, keeping the requests.
    fn drop_stream(&mut self) {
        self.stream = None;
        self.filled = 0;
        self.out.clear();
        self.written = 0;
    }
}

struct OpenLoop {
    interval: Duration,
    next: Instant,
    idle: Vec<usize>,
    exhausted: bool,
}

struct Worker {
    id: usize,
    cfg: Arc<LoadConfig>,
    shared: Arc<Shared>,
    epoll: Epoll,
    conns: Vec<Conn>,
    tally: Tally,
    /// The same latencies, coarsely, for the live progress line.
    coarse: Coarse,
    responses: u64,
    errors: u64,
    sched_pos: usize,
    in_flight: usize,
    open: Option<OpenLoop>,
    /// Connections to (re)start at a time: after a failure, never recursively.
    restart: Vec<(usize, Instant)>,
}

impl Worker {
    fn new(
        id: usize,
        conns: usize,
        threads: usize,
        cfg: Arc<LoadConfig>,
        shared: Arc<Shared>,
    ) -> io::Result<Worker> {
        let now = Instant::now();
        let open = cfg.rate.map(|rate| {
            let share = rate * conns as f64 / cfg.connections as f64;
            let interval = Duration::from_secs_f64(1.0 / share.max(1e-9));
            OpenLoop {
                interval,
                // Threads start staggered so their requests interleave instead of bunching.
                next: now + interval.mul_f64(id as f64 / threads as f64),
                idle: (0..conns).rev().collect(),
                exhausted: false,
            }
        });
        let depth = if open.is_some() {
            1
        } else {
            cfg.pipeline.max(1)
        };
        let longest = cfg.requests.iter().map(Vec::len).max().unwrap_or(0);
        Ok(Worker {
            id,
            sched_pos: id * 7919 % cfg.schedule.len().max(1),
            conns: (0..conns)
                .map(|_| Conn {
                    stream: None,
                    phase: Phase::Idle,
                    pending: VecDeque::with_capacity(depth),
                    out: Vec::with_capacity(depth * longest),
                    written: 0,
                    parser: ResponseParser::new(),
                    buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
                    filled: 0,
                    asked: false,
                    answered: false,
                })
                .collect(),
            cfg,
            shared,
            epoll: Epoll::new()?,
            tally: Tally::new(),
            coarse: Coarse::default(),
            responses: 0,
            errors: 0,
            in_flight: 0,
            open,
            restart: Vec::new(),
        })
    }

    fn run(mut self) -> io::Result<Tally> {
        let mut events = vec![EpollEvent::empty(); 256];
        let grace = self.cfg.timeout.min(Duration::from_secs(2));
        if self.open.is_none() {
            let now = Instant::now();
            for i in 0..self.conns.len() {
                self.after(i, now);
            }
        }
        let mut next_sweep = Instant::now() + SWEEP;
        let mut drain_until: Option<Instant> = None;
        loop {
            let mut now = Instant::now();
            if drain_until.is_none() && self.shared.stop.load(Relaxed) {
                drain_until = Some(now + grace);
                // Judged when the run ends, not after the grace: once the others stop sending, a
                // blocking server gets round to the connections it left waiting.
                self.tally.starved += self.starved();
            }
            self.run_restarts(now);
            self.dispatch_due(now);
            // Closed loop: every connection is Finished once nothing is in flight or waiting to
            // restart. Open loop: nothing is in flight and nothing more will be sent.
            let done = self.in_flight == 0
                && match &self.open {
                    None => self.restart.is_empty(),
                    Some(o) => o.exhausted || drain_until.is_some(),
                };
            if done || drain_until.is_some_and(|d| now >= d) {
                break;
            }
            let mut wake = next_sweep;
            if let Some(o) = &self.open {
                if !o.exhausted && !o.idle.is_empty() {
                    wake = wake.min(o.next);
                }
            }
            if let Some(&(_, t)) = self.restart.iter().min_by_key(|r| r.1) {
                wake = wake.min(t);
            }
            let wait = wake.saturating_duration_since(now);
            // epoll_wait counts whole milliseconds; a sub-millisecond wait for the next due
            // request is slept instead, so open-loop sends are not late by up to 1 ms.
            let n = if wait >= Duration::from_millis(1) || wait.is_zero() {
                self.epoll.wait(&mut events, wait)?
            } else {
                let n = self.epoll.wait(&mut events, Duration::ZERO)?;
                if n == 0 {
                    std::thread::sleep(wait);
                }
                n
            };
            if n > 0 {
                now = Instant::now();
            }
            for ev in &events[..n] {
                self.on_event(ev.data() as usize, ev.events(), now);
            }
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP;
            }
        }
        self.tally.unfinished += self
            .conns
            .iter()
            .map(|c| c.pending.len() as u64)
            .sum::<u64>();
        if drain_until.is_none() {
            self.tally.starved += self.starved();
        }
        self.publish();
        self.publish_latency();
        Ok(self.tally)
    }

    /// Connections that have sent a request and had no response so far.
    fn starved(&self) -> u64 {
        self.conns.iter().filter(|c| c.asked && !c.answered).count() as u64
    }

    /// Takes the right to send one more request, if the run is not over.
    fn claim(&self) -> bool {
        if self.shared.stop.load(Relaxed) {
            return false;
        }
        match self.cfg.limit {
            None => true,
            Some(limit) => self.shared.issued.fetch_add(1, Relaxed) < limit,
        }
    }

    /// Open loop: the next intended send time if a request is due at `now` and may be sent.
    fn take_due(&mut self, now: Instant) -> Option<Instant> {
        let o = self.open.as_ref()?;
        if o.exhausted || o.next > now {
            return None;
        }
        let due = o.next;
        if !self.claim() {
            self.open.as_mut()?.exhausted = true;
            return None;
        }
        let o = self.open.as_mut()?;
        o.next += o.interval;
        Some(due)
    }

    fn dispatch_due(&mut self, now: Instant) {
        while self.open.as_ref().is_some_and(|o| !o.idle.is_empty()) {
            let Some(due) = self.take_due(now) else {
                return;
            };
            let i = self
                .open
                .as_mut()
                .and_then(|o| o.idle.pop())
                .expect("an idle connection");
            self.enqueue(i, due, now);
            self.send(i, now);
        }
    }

    fn run_restarts(&mut self, now: Instant) {
        let mut k = 0;
        while k < self.restart.len() {
            if self.restart[k].1 <= now {
                let (i, _) = self.restart.swap_remove(k);
                self.after(i, now);
            } else {
                k += 1;
            }
        }
    }

    /// A response ended or a connection failed on `i`: give it its next requests (closed loop:
    /// up to the pipeline depth; open loop: the next due one), or retire it.
    fn after(&mut self, i: usize, now: Instant) {
        match &self.open {
            None => {
                let depth = self.cfg.pipeline.max(1);
                while self.conns[i].pending.len() < depth && self.claim() {
                    self.enqueue(i, now, now);
                }
                if self.conns[i].pending.is_empty() {
                    let c = &mut self.conns[i];
                    c.drop_stream();
                    c.phase = Phase::Finished;
                    return;
                }
            }
            Some(_) if self.conns[i].pending.is_empty() => match self.take_due(now) {
                Some(due) => self.enqueue(i, due, now),
                None => {
                    self.conns[i].phase = Phase::Idle;
                    self.open.as_mut().expect("open loop").idle.push(i);
                    return;
                }
            },
            Some(_) => {}
        }
        self.send(i, now);
    }

    /// Queues the next request of the schedule on connection `i`.
    fn enqueue(&mut self, i: usize, start: Instant, now: Instant) {
        let req = self.cfg.schedule[self.sched_pos];
        self.sched_pos = (self.sched_pos + 1) % self.cfg.schedule.len();
        let head = self.cfg.head;
        let c = &mut self.conns[i];
        if c.pending.is_empty() {
            c.parser.reset(head);
            c.filled = 0;
        }
        c.asked = true;
        c.pending.push_back(Pending {
            req,
            start,
            sent: now,
        });
        c.out
            .extend_from_slice(&self.cfg.requests[usize::from(req)]);
        self.in_flight += 1;
    }

    /// Moves connection `i`'s queued requests on: connects if it has no connection, writes
    /// otherwise.
    fn send(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        if c.stream.is_none() {
            return self.connect(i, now);
        }
        if c.phase != Phase::Connecting {
            c.phase = Phase::Active;
            self.flush(i, now);
        }
    }

    fn connect(&mut self, i: usize, now: Instant) {
        self.tally.connects += 1;
        match open_socket(self.cfg.addr) {
            Ok((stream, in_progress)) => {
                // Edge-triggered, both directions, once per connection: no epoll_ctl per request.
                let flags = EpollFlags::EPOLLIN
                    | EpollFlags::EPOLLOUT
                    | EpollFlags::EPOLLRDHUP
                    | EpollFlags::EPOLLET;
                if let Err(_e) = self.epoll.add(stream.as_fd(), flags, i as u64) {
                    return self.fail(i, ErrorKind::Connect, now);
                }
                let c = &mut self.conns[i];
                c.stream = Some(stream);
                if in_progress {
                    c.phase = Phase::Connecting;
                } else {
                    c.phase = Phase::Active;
                    self.flush(i, now);
                }
            }
            Err(_) => self.fail(i, ErrorKind::Connect, now),
        }
    }

    /// Writes what the socket takes of the queued request bytes; the EPOLLOUT edge resumes.
    fn flush(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_ref() else {
            return;
        };
        while c.written < c.out.len() {
            match (&*stream).write(&c.out[c.written..]) {
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i, ErrorKind::Reset, now),
            }
        }
        c.out.clear();
        c.written = 0;
    }

    fn on_event(&mut self, i: usize, flags: EpollFlags, now: Instant) {
        let readable = flags.intersects(
            EpollFlags::EPOLLIN
                | EpollFlags::EPOLLRDHUP
                | EpollFlags::EPOLLHUP
                | EpollFlags::EPOLLERR,
        );
        match self.conns[i].phase {
            Phase::Connecting => {
                let c = &mut self.conns[i];
                let stream = c.stream.as_ref().expect("connecting without a socket");
                match stream.take_error() {
                    Ok(None) if flags.contains(EpollFlags::EPOLLOUT) => {
                        c.phase = Phase::Active;
                        self.flush(i, now);
                    }
                    Ok(None) => {}
                    _ => self.fail(i, ErrorKind::Connect, now),
                }
            }
            Phase::Active => {
                if self.conns[i].written < self.conns[i].out.len() {
                    self.flush(i, now);
                }
                if readable && self.conns[i].phase == Phase::Active {
                    self.read(i, now);
                }
            }
            Phase::Idle if readable => self.read_idle(i),
            _ => {}
        }
    }

    fn read(&mut self, i: usize, now: Instant) {
        loop {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_ref() else {
                return;
            };
            let space = c.buf.len() - c.filled;
            match (&*stream).read(&mut c.buf[c.filled..]) {
                Ok(0) => {
                    let nothing_yet = c.filled == 0 && c.parser.at_start();
                    return match c.parser.eof() {
                        Ok(Step::Done { status, .. }) => self.complete(i, status, false, now),
                        _ if nothing_yet => self.fail(i, ErrorKind::Closed, now),
                        _ => self.fail(i, ErrorKind::ShortBody, now),
                    };
                }
                Ok(n) => {
                    self.tally.bytes += n as u64;
                    self.conns[i].filled += n;
                    if !self.frame(i, now) {
                        return;
                    }
                    // A short read drained the socket: the next edge brings more.
                    if n < space {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i, ErrorKind::Reset, now),
            }
        }
    }

    /// Frames every response the buffer of `i` holds, in order, and keeps what is left of an
    /// unfinished one at the start of the buffer. False when the connection is no longer
    /// reading (it failed, was closed by a response, or has nothing left in flight).
    fn frame(&mut self, i: usize, now: Instant) -> bool {
        let mut at = 0;
        loop {
            let c = &mut self.conns[i];
            match c.parser.parse(&c.buf[at..c.filled]) {
                Ok(Step::Done {
                    consumed,
                    status,
                    keep_alive,
                }) => {
                    at += consumed;
                    let rest = c.filled - at;
                    if rest > 0 && c.pending.len() <= 1 {
                        // Bytes nobody asked for: the framing is wrong somewhere.
                        self.fail(i, ErrorKind::BadResponse, now);
                        return false;
                    }
                    if rest == 0 {
                        c.filled = 0;
                    }
                    self.complete(i, status, keep_alive, now);
                    let c = &self.conns[i];
                    if c.phase != Phase::Active || c.stream.is_none() {
                        return false;
                    }
                    if rest == 0 {
                        return true;
                    }
                }
                Ok(Step::More { consumed }) => {
                    at += consumed;
                    if at == c.filled {
                        c.filled = 0;
                    } else if at > 0 {
                        c.buf.copy_within(at..c.filled, 0);
                        c.filled -= at;
                    } else if c.filled == c.buf.len() {
                        // A head that does not fit in the buffer.
                        self.fail(i, ErrorKind::BadResponse, now);
                        return false;
                    }
                    return true;
                }
                Err(_) => {
                    self.fail(i, ErrorKind::BadResponse, now);
                    return false;
                }
            }
        }
    }

    /// An idle keep-alive connection became readable: the server closed it (fine, the next
    /// request reconnects) or sent something unasked (counted).
    fn read_idle(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_ref() else {
            return;
        };
        let mut byte = [0u8; 1];
        match (&*stream).read(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Ok(0) | Err(_) => c.drop_stream(),
            Ok(_) => {
                c.drop_stream();
                self.tally.record_error(ErrorKind::BadResponse);
                self.errors += 1;
            }
        }
    }

    /// The response to the oldest pending request of `i` ended.
    fn complete(&mut self, i: usize, status: u16, keep_alive: bool, now: Instant) {
        let c = &mut self.conns[i];
        let Some(p) = c.pending.pop_front() else {
            return;
        };
        c.answered = true;
        let latency = now.saturating_duration_since(p.start).as_micros() as u64;
        self.tally.record_response(status, latency);
        self.coarse.record(latency);
        if !keep_alive || self.cfg.new_conn {
            c.drop_stream();
            // Pipelined requests behind a closing response were never answered: the
            // connection that replaces this one sends them again.
            for q in &c.pending {
                c.out
                    .extend_from_slice(&self.cfg.requests[usize::from(q.req)]);
            }
            c.parser.reset(self.cfg.head);
        }
        self.in_flight -= 1;
        self.responses += 1;
        if status >= 400 {
            self.errors += 1;
        }
        if self.responses % 64 == 0 {
            self.publish();
        }
        self.after(i, now);
    }

    /// Connection `i` broke: every request in flight on it failed as `kind`.
    fn fail(&mut self, i: usize, kind: ErrorKind, now: Instant) {
        let c = &mut self.conns[i];
        let lost = c.pending.len().max(1);
        self.in_flight -= c.pending.len();
        c.pending.clear();
        c.drop_stream();
        c.phase = Phase::Idle;
        for _ in 0..lost {
            self.tally.record_error(kind);
        }
        self.errors += lost as u64;
        let delay = if kind == ErrorKind::Connect {
            CONNECT_RETRY
        } else {
            Duration::ZERO
        };
        self.restart.push((i, now + delay));
    }

    fn sweep(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let late = self.conns[i]
                .pending
                .front()
                .is_some_and(|p| now.saturating_duration_since(p.sent) > self.cfg.timeout);
            if late {
                self.fail(i, ErrorKind::Timeout, now);
            }
        }
        self.publish();
        self.publish_latency();
    }

    fn publish(&self) {
        let p = &self.shared.progress[self.id];
        p.responses.store(self.responses, Relaxed);
        p.errors.store(self.errors, Relaxed);
    }

    fn publish_latency(&self) {
        let p = &self.shared.progress[self.id];
        for (shared, &n) in p.latency.iter().zip(&self.coarse.counts) {
            shared.store(n, Relaxed);
        }
    }
}

/// Opens a non-blocking TCP connection (CLOEXEC, TCP_NODELAY); `true` when it is still in
/// progress.
fn open_socket(addr: SocketAddr) -> io::Result<(TcpStream, bool)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    let in_progress = match socket.connect(&addr.into()) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
        Err(e) => return Err(e),
    };
    Ok((socket.into(), in_progress))
}

/// The epoll calls this crate makes, add and wait only (closing a socket removes it), over
/// nix's safe handle.
struct Epoll(nix::sys::epoll::Epoll);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        let ep = nix::sys::epoll::Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        Ok(Epoll(ep))
    }

    fn add(&self, fd: BorrowedFd<'_>, events: EpollFlags, token: u64) -> io::Result<()> {
        Ok(self.0.add(fd, EpollEvent::new(events, token))?)
    }

    fn wait(&self, events: &mut [EpollEvent], timeout: Duration) -> io::Result<usize> {
        let timeout = EpollTimeout::try_from(timeout).unwrap_or(EpollTimeout::MAX);
        match self.0.wait(events, timeout) {
            Ok(n) => Ok(n),
            Err(nix::errno::Errno::EINTR) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}
