//! An event worker: one process multiplexing up to a table's worth of non-blocking
//! connections with epoll, for a daemon whose connections are state machines
//! ([`EventService`]). It knows nothing of what the bytes mean.
//!
//! The loop, one turn at a time: look whether a stop was asked for, put the listeners in or out
//! of the epoll set, wait (at most `TICK`, or until the next deadline), then accept what
//! the listeners hold (a bounded batch each, for fairness), hand every ready connection to
//! the service, and hand it every connection whose deadline passed. The service answers each
//! call with what the connection waits for next ([`Interest`]): readable or writable, each
//! with a deadline, or the end. There are no threads and no timer fd: deadlines are a heap
//! (`deadlines`), and the wait's timeout is the earliest of them.
//!
//! Accepting. Every worker puts the shared listeners in its epoll set with `EPOLLEXCLUSIVE`,
//! so a connection wakes one waiting worker rather than all of them, and all workers take from
//! the one accept queue the kernel keeps per listener. `SO_REUSEPORT` was the other choice: a
//! listener (and an accept queue) per worker, which spreads connections evenly, but a queue dies
//! with its socket, so the connections waiting in a retiring worker's queue at a reload or a
//! stop would be reset. With one shared queue a worker that stops accepting leaves its share to
//! the others, which is what a reload, a stop and a full table need. A worker whose table is
//! full takes the listeners out of its epoll set until a connection ends (counted on the
//! scoreboard as [`Limit::WorkerConnections`]), so the kernel leaves new connections queued
//! for another worker instead of this one accepting what it cannot serve.
//!
//! Stopping. SIGTERM (a stop, a reload, a log reopen that failed) sets the flag
//! `worker::stop_requested` reads and, since the handler has no `SA_RESTART` (and `epoll_wait`
//! is never restarted anyway), ends the wait with `EINTR`. The listeners leave the epoll set at
//! once, every connection is handed to the service once with [`Turn::stopping`] set so it can
//! finish what it does and close, and the worker exits when the last one has. A signal that
//! lands between the flag's check and the wait is seen at the next `TICK`.
//!
//! What a connection costs here: its socket, an entry in the table (the service's state and a
//! few words), and about one entry in the deadline heap. Reads and writes are the service's:
//! the reactor lends it the socket.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use socket2::SockRef;

use super::deadlines::{Deadlines, Key};
use super::listener::{accept_failure, AcceptFailure};
use super::scoreboard::{self, Limit, Occupancy};
use super::worker;

/// What a connection waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Its socket to become readable (or to be closed by the peer), or the deadline.
    Read(Option<Instant>),
    /// Its socket to become writable, or the deadline.
    Write(Option<Instant>),
    /// Nothing: the connection is over, and the reactor closes it.
    Close,
}

/// Why the service is called: what the socket reported. Neither flag means a deadline passed
/// or a stop began; the service compares [`Turn::now`] with its own deadlines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// Readable, closed by the peer, or in error: a read will not block.
    pub read: bool,
    /// Writable, or in error: a write will not block.
    pub write: bool,
}

/// One turn of the loop, as a connection sees it.
#[derive(Debug)]
pub struct Turn {
    /// The time of this turn (one clock read per turn, not per call).
    pub now: Instant,
    /// The worker is stopping: no new connections come, and each one should finish what it
    /// does and close.
    pub stopping: bool,
    /// This worker's table: connections open and how many it may hold.
    pub table: Occupancy,
    answered: u64,
}

impl Turn {
    /// A turn at `now` of a worker that is not stopping, with `table` (for a service's own
    /// tests, which drive it without a reactor).
    pub fn new(now: Instant, table: Occupancy) -> Turn {
        Turn {
            now,
            stopping: false,
            table,
            answered: 0,
        }
    }

    /// Requests counted with [`Turn::answered`] in this turn.
    pub fn answered_so_far(&self) -> u64 {
        self.answered
    }

    /// Counts `n` requests answered, for the scoreboard and the worker's request budget.
    pub fn answered(&mut self, n: u64) {
        self.answered = self.answered.saturating_add(n);
    }
}

/// A daemon's connections as state machines, driven by an event worker. Each call does what
/// it can without blocking (the socket is non-blocking) and says what to wait for next.
pub trait EventService {
    /// The state of one connection. Dropped when the connection ends; keep it small, since a
    /// worker holds up to its table's worth of them.
    type Conn;

    /// A connection was accepted (non-blocking, close-on-exec, `TCP_NODELAY` and
    /// `TCP_NOTSENT_LOWAT`: see `listener::tune_for_events`). Its first bytes
    /// may well be there already (`TCP_DEFER_ACCEPT`): try them now.
    fn open(
        &mut self,
        stream: &TcpStream,
        peer: SocketAddr,
        turn: &mut Turn,
    ) -> (Self::Conn, Interest);

    /// The connection's socket is ready as `ready` says, its deadline passed, or the worker
    /// began to stop.
    fn on_ready(
        &mut self,
        conn: &mut Self::Conn,
        stream: &TcpStream,
        ready: Ready,
        turn: &mut Turn,
    ) -> Interest;
}

/// The face of an [`EventService`] that `Service::events` returns: every `EventService` has
/// it, so a daemon never implements it by hand.
pub trait Multiplex {
    /// Runs this event worker until it is asked to stop and its connections are done, or
    /// until its request budget is spent; returns the exit code.
    fn run(&mut self, pool: Pool<'_>) -> i32;
}

impl<E: EventService> Multiplex for E {
    fn run(&mut self, pool: Pool<'_>) -> i32 {
        run(pool, self)
    }
}

/// What the template gives an event worker: made by the master, passed on by the service.
pub struct Pool<'a> {
    pub(crate) listeners: &'a [TcpListener],
    /// The most connections this worker holds at once.
    pub(crate) connections: usize,
    /// Requests after which the worker retires (0: never).
    pub(crate) budget: u64,
    /// The most connections one client address holds across the pool (0: no limit).
    pub(crate) per_client: usize,
    /// What a connection over the per-client limit is told.
    pub(crate) busy: &'a [u8],
    /// Whether the worker was asked to stop ([`worker::stop_requested`]; tests use their own).
    pub(crate) stop: fn() -> bool,
}

/// The longest wait: a stop signal that landed just before the wait is seen this soon.
const TICK: Duration = Duration::from_secs(1);
/// Connections accepted from one listener per turn, so a burst cannot starve the others.
const ACCEPT_BATCH: usize = 64;
/// Readiness events taken per wait.
const EVENTS: usize = 256;
/// The first pause of accepting after it failed for want of fds or memory, doubled while it
/// keeps failing, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Listener `i` is known to epoll as `u64::MAX - i`; a connection as its slot and generation.
/// Slots stay far below 2^32 - 2^10, so the two never meet.
fn listener_token(i: usize) -> u64 {
    u64::MAX - i as u64
}

fn listener_of(token: u64, listeners: usize) -> Option<usize> {
    let i = usize::try_from(u64::MAX - token).ok()?;
    (i < listeners).then_some(i)
}

fn conn_token((slot, gen): Key) -> u64 {
    u64::from(gen) << 32 | u64::from(slot)
}

fn key_of(token: u64) -> Key {
    ((token & 0xffff_ffff) as u32, (token >> 32) as u32)
}

/// Level-triggered: a connection is in the epoll set for one direction at a time, and a
/// change of direction is one `EPOLL_CTL_MOD`. A keep-alive connection that reads a request
/// and writes its answer whole stays on `Read` throughout: no epoll call per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wants {
    Read,
    Write,
}

impl Wants {
    fn flags(self) -> EpollFlags {
        match self {
            Wants::Read => EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
            Wants::Write => EpollFlags::EPOLLOUT,
        }
    }
}

struct Live<C> {
    stream: TcpStream,
    conn: C,
    wants: Wants,
    /// The per-client entry this connection is counted in.
    client: Option<u32>,
}

struct Slot<C> {
    /// Bumped when a connection leaves the slot, so late events and deadlines of that
    /// connection are told from the next one's.
    gen: u32,
    live: Option<Live<C>>,
}

struct Reactor<'a, C> {
    epoll: Epoll,
    pool: Pool<'a>,
    slots: Vec<Slot<C>>,
    free: Vec<u32>,
    open: usize,
    deadlines: Deadlines,
    /// The listeners are in the epoll set.
    listening: bool,
    /// The listeners were shut down (the master is stopping): never add them again.
    listeners_gone: bool,
    /// Accepting failed for want of fds or memory: paused until then, and for how long.
    accept_pause: Option<(Instant, Duration)>,
    stopping: bool,
    served: u64,
}

/// Runs an event worker; see the module docs. Returns the exit code.
pub(crate) fn run<E: EventService>(pool: Pool<'_>, service: &mut E) -> i32 {
    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("worker {}: unable to create epoll: {e}", std::process::id());
            return worker::EXIT_SETUP;
        }
    };
    let mut r = Reactor {
        epoll,
        slots: Vec::new(),
        free: Vec::new(),
        open: 0,
        deadlines: Deadlines::default(),
        listening: false,
        listeners_gone: false,
        accept_pause: None,
        stopping: false,
        served: 0,
        pool,
    };
    r.run(service)
}

impl<C> Reactor<'_, C> {
    fn run<E: EventService<Conn = C>>(&mut self, service: &mut E) -> i32 {
        let mut events = vec![EpollEvent::empty(); EVENTS];
        let mut due = Vec::new();
        loop {
            let now = Instant::now();
            if !self.stopping && ((self.pool.stop)() || self.spent()) {
                self.begin_stop(service, now);
            }
            if self.stopping && self.open == 0 {
                return 0;
            }
            self.manage_listeners(now);
            let n = match self.epoll.wait(&mut events, self.timeout(now)) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => {
                    tracing::warn!("worker {}: epoll_wait failed: {e}", std::process::id());
                    std::thread::sleep(Duration::from_millis(10));
                    0
                }
            };
            // The watchdog's evidence that this worker's loop turns: a worker holding idle
            // connections is busy on the scoreboard yet serving, and the safety tick brings
            // it here at least once a second; a worker wedged in one callback never does.
            super::scoreboard::progress();
            let mut turn = self.turn(Instant::now());
            for ev in events.iter().take(n) {
                let (flags, token) = (ev.events(), ev.data());
                match listener_of(token, self.pool.listeners.len()) {
                    Some(i) => self.accept_from(service, i, &mut turn),
                    None => {
                        let gone = EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
                        let ready = Ready {
                            read: flags
                                .intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | gone),
                            write: flags.intersects(EpollFlags::EPOLLOUT | gone),
                        };
                        self.dispatch(service, key_of(token), ready, &mut turn);
                    }
                }
            }
            self.deadlines.expire(turn.now, &mut due);
            for key in due.drain(..) {
                self.dispatch(service, key, Ready::default(), &mut turn);
            }
            self.account(turn.answered);
        }
    }

    fn turn(&self, now: Instant) -> Turn {
        Turn {
            now,
            stopping: self.stopping,
            table: self.table(),
            answered: 0,
        }
    }

    fn table(&self) -> Occupancy {
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Occupancy {
            busy: n(self.open),
            capacity: n(self.pool.connections),
        }
    }

    /// The request budget is spent: retire as a stop would, and be replaced.
    fn spent(&self) -> bool {
        self.pool.budget > 0 && self.served >= self.pool.budget
    }

    /// Publishes this turn's requests and the table's size on the scoreboard.
    fn account(&mut self, answered: u64) {
        if answered > 0 {
            self.served = self.served.saturating_add(answered);
            scoreboard::served(answered);
        }
        scoreboard::set_load(self.table().busy);
    }

    /// No new connections from now on; every connection hears of it at once, so an idle
    /// keep-alive one starts its short grace now rather than at its next deadline.
    fn begin_stop<E: EventService<Conn = C>>(&mut self, service: &mut E, now: Instant) {
        if self.spent() {
            tracing::debug!(
                "worker {} answered {} requests; recycling",
                std::process::id(),
                self.served
            );
        }
        self.stopping = true;
        self.manage_listeners(now);
        let keys: Vec<Key> = self
            .slots
            .iter()
            .zip(0u32..)
            .filter(|(s, _)| s.live.is_some())
            .map(|(s, i)| (i, s.gen))
            .collect();
        let mut turn = self.turn(now);
        for key in keys {
            self.dispatch(service, key, Ready::default(), &mut turn);
        }
        self.account(turn.answered);
    }

    /// The wait's timeout: the next deadline, the end of an accept pause, or a tick, rounded
    /// up to the millisecond so a deadline is not woken a little early and then spun on.
    fn timeout(&self, now: Instant) -> EpollTimeout {
        let mut until = now + TICK;
        if let Some(d) = self.deadlines.next() {
            until = until.min(d);
        }
        if let Some((end, _)) = self.accept_pause {
            until = until.min(end);
        }
        let micros = until.saturating_duration_since(now).as_micros();
        let ms = micros.div_ceil(1000).min(TICK.as_millis());
        EpollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
    }

    /// Puts the listeners in the epoll set when this worker may take connections, and takes
    /// them out when it may not (stopping, a full table, an accept pause). A listener
    /// registered with `EPOLLEXCLUSIVE` cannot be modified, only deleted and added again.
    fn manage_listeners(&mut self, now: Instant) {
        // After a pause its length is kept until an accept succeeds, so that failing again
        // doubles it.
        let paused = self.accept_pause.is_some_and(|(end, _)| now < end);
        let full = self.open >= self.pool.connections;
        let want = !self.stopping && !self.listeners_gone && !full && !paused;
        if want == self.listening {
            return;
        }
        if full && !want && !self.stopping && !self.listeners_gone {
            scoreboard::hit(Limit::WorkerConnections);
        }
        for (i, l) in self.pool.listeners.iter().enumerate() {
            let result = if want {
                let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
                self.epoll.add(l, EpollEvent::new(flags, listener_token(i)))
            } else {
                self.epoll.delete(l)
            };
            if let Err(e) = result {
                tracing::warn!("worker {}: epoll on a listener: {e}", std::process::id());
            }
        }
        self.listening = want;
    }

    /// Accepts from listener `i` until it has nothing more, the batch is done or the table is
    /// full.
    fn accept_from<E: EventService<Conn = C>>(
        &mut self,
        service: &mut E,
        i: usize,
        turn: &mut Turn,
    ) {
        for _ in 0..ACCEPT_BATCH {
            if self.stopping || self.open >= self.pool.connections {
                return;
            }
            let Some(l) = self.pool.listeners.get(i) else {
                return;
            };
            // Close-on-exec and non-blocking from birth: one system call, no fcntl after.
            match SockRef::from(l).accept4(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) {
                Ok((sock, addr)) => {
                    self.accept_pause = None;
                    let peer = addr
                        .as_socket()
                        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                    self.admit(service, sock.into(), peer, turn);
                }
                Err(e) => match accept_failure(&e) {
                    AcceptFailure::Empty => return,
                    AcceptFailure::Again => {}
                    AcceptFailure::Exhausted => {
                        scoreboard::hit(Limit::AcceptResources);
                        let pause = self
                            .accept_pause
                            .map_or(FIRST_PAUSE, |(_, p)| (p * 2).min(MAX_PAUSE));
                        tracing::warn!(
                            "worker {}: accept failed ({e}); pausing {pause:?}",
                            std::process::id()
                        );
                        self.accept_pause = Some((turn.now + pause, pause));
                        return;
                    }
                    AcceptFailure::Closed => {
                        tracing::debug!(
                            "worker {}: listener closed ({e}); no more accepts",
                            std::process::id()
                        );
                        self.listeners_gone = true;
                        return;
                    }
                    AcceptFailure::Other => {
                        tracing::warn!("worker {}: accept failed: {e}", std::process::id());
                        return;
                    }
                },
            }
        }
    }

    /// Counts the new connection against its client, gives it to the service, and files it.
    fn admit<E: EventService<Conn = C>>(
        &mut self,
        service: &mut E,
        stream: TcpStream,
        peer: SocketAddr,
        turn: &mut Turn,
    ) {
        // TCP_NODELAY and TCP_NOTSENT_LOWAT came with the socket, from the listener
        // (`listener::tune_for_events`).
        let Ok(client) = scoreboard::admit_conn(peer.ip(), self.pool.per_client) else {
            return worker::refuse(stream, self.pool.busy);
        };
        turn.table = Occupancy {
            busy: self.table().busy.saturating_add(1),
            ..self.table()
        };
        // On the scoreboard before the service sees it: a worker that dies of this connection
        // died serving, and the master replaces it at once (not after a respawn delay).
        scoreboard::set_load(turn.table.busy);
        let (conn, interest) = service.open(&stream, peer, turn);
        let filed = match interest {
            Interest::Read(due) => self.file(stream, conn, Wants::Read, due, client),
            Interest::Write(due) => self.file(stream, conn, Wants::Write, due, client),
            Interest::Close => false,
        };
        if !filed {
            if let Some(c) = client {
                scoreboard::leave_conn(c);
            }
        }
        turn.table = self.table();
    }

    /// Files an open connection in the table and the epoll set; false if it could not be.
    fn file(
        &mut self,
        stream: TcpStream,
        conn: C,
        wants: Wants,
        due: Option<Instant>,
        client: Option<u32>,
    ) -> bool {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let Ok(s) = u32::try_from(self.slots.len()) else {
                    return false;
                };
                self.slots.push(Slot { gen: 0, live: None });
                s
            }
        };
        let Some(entry) = self.slots.get_mut(slot as usize) else {
            return false;
        };
        let key = (slot, entry.gen);
        let event = EpollEvent::new(wants.flags(), conn_token(key));
        if let Err(e) = self.epoll.add(&stream, event) {
            tracing::warn!("worker {}: epoll_ctl: {e}", std::process::id());
            self.free.push(slot);
            return false;
        }
        entry.live = Some(Live {
            stream,
            conn,
            wants,
            client,
        });
        self.open += 1;
        self.deadlines.set(key, due);
        true
    }

    /// Hands connection `key` to the service, if it is still the one the event was for.
    fn dispatch<E: EventService<Conn = C>>(
        &mut self,
        service: &mut E,
        key: Key,
        ready: Ready,
        turn: &mut Turn,
    ) {
        turn.table = self.table();
        let Some(live) = self
            .slots
            .get_mut(key.0 as usize)
            .filter(|s| s.gen == key.1)
            .and_then(|s| s.live.as_mut())
        else {
            return;
        };
        let interest = service.on_ready(&mut live.conn, &live.stream, ready, turn);
        let (wants, due) = match interest {
            Interest::Read(d) => (Wants::Read, d),
            Interest::Write(d) => (Wants::Write, d),
            Interest::Close => return self.close(key),
        };
        if live.wants != wants {
            let mut ev = EpollEvent::new(wants.flags(), conn_token(key));
            if let Err(e) = self.epoll.modify(&live.stream, &mut ev) {
                tracing::debug!("worker {}: epoll_ctl: {e}", std::process::id());
                return self.close(key);
            }
            live.wants = wants;
        }
        self.deadlines.set(key, due);
    }

    /// Ends connection `key`: its socket is closed, which also takes it out of the epoll set
    /// (a worker never forks nor duplicates a socket, so no other fd keeps it there), and its
    /// client's count is given back.
    fn close(&mut self, key: Key) {
        let Some(slot) = self
            .slots
            .get_mut(key.0 as usize)
            .filter(|s| s.gen == key.1)
        else {
            return;
        };
        let Some(live) = slot.live.take() else {
            return;
        };
        // Only after the generation check: a stale key must not clear the timer of the
        // connection that has its slot now.
        self.deadlines.clear(key);
        slot.gen = slot.gen.wrapping_add(1);
        self.open = self.open.saturating_sub(1);
        self.free.push(key.0);
        if let Some(c) = live.client {
            scoreboard::leave_conn(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A line echo as a state machine: reads what comes, writes it back, closes after
    /// `IDLE` of silence or at a stop; counts a request per read.
    struct Echo {
        opened: usize,
    }

    const IDLE: Duration = Duration::from_secs(1);

    impl EventService for Echo {
        type Conn = Instant;

        fn open(&mut self, s: &TcpStream, _: SocketAddr, turn: &mut Turn) -> (Instant, Interest) {
            self.opened += 1;
            // What the listener was given, every accepted socket has: this kernel copies them.
            let s = SockRef::from(s);
            assert!(s.tcp_nodelay().unwrap());
            assert_eq!(
                s.tcp_notsent_lowat().unwrap(),
                crate::listener::NOTSENT_LOWAT
            );
            assert!(turn.table.busy <= turn.table.capacity);
            (turn.now, Interest::Read(Some(turn.now + IDLE)))
        }

        fn on_ready(
            &mut self,
            last: &mut Instant,
            stream: &TcpStream,
            ready: Ready,
            turn: &mut Turn,
        ) -> Interest {
            if turn.stopping {
                return Interest::Close;
            }
            if ready.read {
                let mut buf = [0u8; 512];
                match (&*stream).read(&mut buf) {
                    Ok(0) | Err(_) => return Interest::Close,
                    Ok(n) => {
                        if (&*stream).write_all(&buf[..n]).is_err() {
                            return Interest::Close;
                        }
                        turn.answered(1);
                        *last = turn.now;
                    }
                }
            }
            if turn.now >= *last + IDLE {
                return Interest::Close;
            }
            Interest::Read(Some(*last + IDLE))
        }
    }

    fn echo(s: &mut TcpStream, text: &[u8]) -> Vec<u8> {
        s.write_all(text).unwrap();
        let mut got = vec![0u8; text.len()];
        s.read_exact(&mut got).unwrap();
        got
    }

    /// An event worker serving [`Echo`] in a thread on a fresh loopback listener.
    fn serve_echo(
        connections: usize,
        budget: u64,
        stop: fn() -> bool,
    ) -> (SocketAddr, std::thread::JoinHandle<(i32, usize)>) {
        let l = crate::listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        l.set_nonblocking(true).unwrap();
        crate::listener::tune_for_events(&l).unwrap();
        let addr = l.local_addr().unwrap();
        let worker = std::thread::spawn(move || {
            let listeners = [l];
            let pool = Pool {
                listeners: &listeners,
                connections,
                budget,
                per_client: 0,
                busy: b"",
                stop,
            };
            let mut e = Echo { opened: 0 };
            let code = run(pool, &mut e);
            (code, e.opened)
        });
        (addr, worker)
    }

    static STOP_A: AtomicBool = AtomicBool::new(false);

    #[test]
    fn connections_are_multiplexed_timed_out_bounded_and_stopped() {
        let (addr, worker) = serve_echo(3, 0, || STOP_A.load(Ordering::Relaxed));
        let connect = || {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        };
        // Three clients at once, in turns: one process serves them all.
        let mut c: Vec<TcpStream> = (0..3).map(|_| connect()).collect();
        for round in 0..3 {
            for (i, s) in c.iter_mut().enumerate() {
                let text = format!("{round}-{i}\n");
                assert_eq!(echo(s, text.as_bytes()), text.as_bytes());
            }
        }
        // The table is full: a fourth client is left in the accept queue until one ends.
        let mut fourth = connect();
        fourth.write_all(b"waiting\n").unwrap();
        fourth
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 8];
        assert!(fourth.read(&mut buf).is_err(), "served beyond the table");
        drop(c.pop());
        fourth
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        fourth.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"waiting\n");
        // Silent connections are closed at their deadline, each on its own.
        let t = Instant::now();
        let mut rest = Vec::new();
        assert_eq!(fourth.read_to_end(&mut rest).unwrap(), 0);
        let waited = t.elapsed();
        assert!(
            waited >= IDLE - Duration::from_millis(50) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        // A stop ends the connections still open and the worker with them.
        let mut last = connect();
        assert_eq!(echo(&mut last, b"x"), b"x");
        STOP_A.store(true, Ordering::Relaxed);
        let (code, opened) = worker.join().unwrap();
        assert_eq!(code, 0);
        assert!(opened >= 5, "{opened}");
        assert_eq!(last.read_to_end(&mut rest).unwrap(), 0);
    }

    static STOP_B: AtomicBool = AtomicBool::new(false);

    #[test]
    fn a_spent_budget_retires_the_worker() {
        let (addr, worker) = serve_echo(8, 5, || STOP_B.load(Ordering::Relaxed));
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for _ in 0..5 {
            assert_eq!(echo(&mut s, b"y"), b"y");
        }
        assert_eq!(worker.join().unwrap().0, 0);
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    }

    #[test]
    fn tokens_tell_listeners_from_connections() {
        assert_eq!(listener_of(listener_token(0), 2), Some(0));
        assert_eq!(listener_of(listener_token(1), 2), Some(1));
        assert_eq!(listener_of(listener_token(2), 2), None);
        let key = (65_535, u32::MAX);
        assert_eq!(key_of(conn_token(key)), key);
        assert_eq!(listener_of(conn_token(key), 16), None);
        assert_eq!(listener_of(conn_token((0, 0)), 16), None);
    }
}
