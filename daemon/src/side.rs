//! The master's side listeners: the load balancer's agent port (`agent-check`, HAProxy's
//! protocol) and the status page for people (HTML and JSON). Both are answered by the master
//! from its own state and the [`scoreboard`], without forking and without
//! ever blocking its one loop.
//!
//! Why in the master and not in a process of its own: every answer is made of what only the
//! master knows (draining, reloading, which workers are alive, the generation) plus the
//! scoreboard it already reads. A separate process would need that state published in shared
//! memory, a respawn rule and a signal table of its own, and would itself need watching; the
//! work here is one `accept`, at most a few non-blocking reads and one non-blocking write of a
//! few KiB per connection, done in the loop's existing `poll`.
//!
//! Why a client cannot make it block or grow: every socket is non-blocking; at most
//! [`MAX_CONNS`] side connections are held at once, each for at most [`DEADLINE`]; a new
//! connection beyond the cap evicts the oldest (counted as `side_connections`), so a crowd of
//! idle clients costs the master a bounded number of fds and cannot keep a fresh request from
//! being answered; accepts come in bounded bursts; a request head larger than [`MAX_HEAD`] is
//! refused. Every socket is CLOEXEC from birth, and a forked child closes all of them (the
//! master passes [`Side::raw_fds`] to `worker::enter`), so no worker holds a side port.
//!
//! The agent's reply is one ASCII line (see [`agent_line`]): `up ready N%` while serving, N
//! being the free share of the pool's capacity (idle workers, free connection slots of event
//! workers, free child slots in fork mode), at least 1; `drain` from the start of a graceful
//! stop or a reload until it is over; `down` when no child can take a connection.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;

use super::listener::{self, ListenError};
use super::scoreboard::{self, Limit, Totals};

/// Side connections held at once, both ports together.
pub const MAX_CONNS: usize = 32;
/// How long a side connection may live, from accept to close: HAProxy and browsers ask at
/// once and read at once; anything slower is not a client worth a slot.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// Largest request head the status port reads.
pub const MAX_HEAD: usize = 4096;
/// The most reads a lingering side connection gets in one turn of the master's loop.
const LINGER_READS: usize = 4;
/// Connections accepted per listener per turn of the loop, so signals are looked at often.
const ACCEPT_BURST: usize = 64;
/// How long the side listeners are left alone after `accept` failed for want of resources.
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
/// How often the status page reloads itself, in seconds.
const REFRESH_SECS: u32 = 2;

/// Which port a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Agent,
    Status,
}

/// What the master is doing, as the load balancer must know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Serving,
    /// A reload has begun: children of an older generation are still finishing.
    Reloading,
    /// A graceful stop has begun: the listeners are closed.
    Draining,
    /// Nothing can take a connection: no worker alive, or (fork mode) accepting paused.
    Down,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Serving => "serving",
            State::Reloading => "reloading",
            State::Draining => "draining",
            State::Down => "down",
        }
    }
}

/// Everything the side ports say, taken at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub name: &'static str,
    pub pid: u32,
    pub mode: &'static str,
    pub state: Option<State>,
    pub generation: u64,
    pub uptime: Duration,
    /// Connections the children able to take new ones could hold (live workers that are not
    /// retiring, times their table; fork mode: the bound).
    pub open_capacity: u32,
    pub totals: Totals,
}

impl Snapshot {
    fn state(&self) -> State {
        self.state.unwrap_or(State::Down)
    }

    /// The free share of the pool's capacity, 0 to 100.
    pub fn free_percent(&self) -> u32 {
        let cap = self.totals.capacity;
        if cap == 0 {
            return 0;
        }
        let open = self.open_capacity.min(cap);
        let free = open.saturating_sub(self.totals.connections);
        (u64::from(free) * 100 / u64::from(cap)) as u32
    }
}

/// The agent-check reply: one line, ended by `\n`.
///
/// `up ready N%` while serving: `up` marks the server up, `ready` ends a `drain` said before
/// (HAProxy keeps an administrative drain until told `ready`), and `N%` sets its weight to N %
/// of the configured one. N is at least 1: a merely busy host stays in the balance with a
/// small weight, where 0 would take it out as a drain does, and a burst that fills every host
/// would leave HAProxy nowhere to send. `drain` while a graceful stop or a reload is under way
/// (no new connections; those open finish). `down` when the pool cannot serve.
pub fn agent_line(s: &Snapshot) -> String {
    match s.state() {
        State::Draining | State::Reloading => "drain\n".to_string(),
        State::Down => "down\n".to_string(),
        State::Serving => format!("up ready {}%\n", s.free_percent().max(1)),
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON string literal, quotes included.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An element id made of a label: letters and digits kept, anything else a `-`.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The status as JSON (`/status.json`): one object, keys fixed, counters by name.
pub fn status_json(s: &Snapshot) -> String {
    let t = &s.totals;
    let mut out = String::from("{");
    let _ = write!(
        out,
        "\"name\":{},\"pid\":{},\"mode\":{},\"state\":{},\"agent\":{},\"generation\":{},\
         \"uptime_seconds\":{},\"children\":{{\"busy\":{},\"idle\":{}}},\"connections\":{},\
         \"capacity\":{},\"free_percent\":{},\"requests\":{}",
        json_string(s.name),
        s.pid,
        json_string(s.mode),
        json_string(s.state().name()),
        json_string(agent_line(s).trim_end()),
        s.generation,
        s.uptime.as_secs(),
        t.children_busy,
        t.children_idle,
        t.connections,
        t.capacity,
        s.free_percent(),
        t.requests
    );
    let pairs = |v: &mut String, items: &mut dyn Iterator<Item = (&str, u64)>| {
        let body: Vec<String> = items
            .map(|(k, n)| format!("{}:{n}", json_string(k)))
            .collect();
        v.push_str(&body.join(","));
    };
    out.push_str(",\"limits\":{");
    pairs(&mut out, &mut t.limits.iter().map(|(k, _, n)| (*k, *n)));
    out.push_str("},\"crashes\":{");
    pairs(&mut out, &mut t.crashes.iter().map(|(k, n)| (*k, *n)));
    out.push_str("}}\n");
    out
}

/// The status as a page for people: reloads itself every `REFRESH_SECS` seconds (a meta refresh,
/// no script), every value in an element whose id names it, every text escaped.
pub fn status_html(s: &Snapshot) -> String {
    let t = &s.totals;
    let e = |x: &str| html_escape(x);
    let state = s.state().name();
    let uptime = humantime::format_duration(Duration::from_secs(s.uptime.as_secs())).to_string();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{name} status</title><style>\
         body{{font:15px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:52em}}\
         h1{{font-size:1.5em}} h2{{font-size:1.1em;margin-top:1.5em}}\
         table{{border-collapse:collapse}} td,th{{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}}\
         td.n{{text-align:right;font-weight:600;font-variant-numeric:tabular-nums}} td.zero{{color:#999;font-weight:normal}} #crashes th{{font-weight:normal;font-size:.85em}}\
         .state{{padding:.1em .5em;border-radius:.3em;color:#fff;background:#2a7}}\
         .draining,.reloading{{background:#c80}} .down{{background:#c22}}\
         </style></head><body>\n\
         <h1>{name} <span id=\"state\" class=\"state {state}\">{state}</span></h1>\n\
         <p>pid <span id=\"pid\">{pid}</span> · <span id=\"mode\">{mode}</span> mode · \
         generation <span id=\"generation\">{gen}</span> · up <span id=\"uptime\">{uptime}</span> \
         · agent says <code id=\"agent\">{agent}</code></p>\n\
         <table id=\"pool\">\
         <tr><th>children busy</th><td class=\"n\" id=\"children-busy\">{busy}</td></tr>\
         <tr><th>children idle</th><td class=\"n\" id=\"children-idle\">{idle}</td></tr>\
         <tr><th>connections</th><td class=\"n\" id=\"connections\">{conns}</td></tr>\
         <tr><th>capacity</th><td class=\"n\" id=\"capacity\">{cap}</td></tr>\
         <tr><th>free</th><td class=\"n\" id=\"free-percent\">{free}%</td></tr>\
         <tr><th>requests</th><td class=\"n\" id=\"requests\">{req}</td></tr>\
         </table>\n",
        name = e(s.name),
        pid = s.pid,
        mode = e(s.mode),
        gen = s.generation,
        uptime = e(&uptime),
        agent = e(agent_line(s).trim_end()),
        busy = t.children_busy,
        idle = t.children_idle,
        conns = t.connections,
        cap = t.capacity,
        free = s.free_percent(),
        req = t.requests,
    );
    out.push_str("<h2>Children that ended unasked, by cause</h2>\n<table id=\"crashes\"><tr>");
    for (cause, _) in &t.crashes {
        let _ = write!(out, "<th>{}</th>", e(cause));
    }
    out.push_str("</tr>\n<tr>");
    for (cause, n) in &t.crashes {
        let zero = if *n == 0 { " zero" } else { "" };
        let _ = write!(
            out,
            "<td class=\"n{zero}\" id=\"crash-{}\">{n}</td>",
            e(&slug(cause))
        );
    }
    out.push_str("</tr></table>\n");
    out.push_str("<h2>Limits hit</h2>\n<table id=\"limits\"><tr><th>limit</th><th>hits</th><th>what it counts</th></tr>\n");
    for (name, help, n) in &t.limits {
        let zero = if *n == 0 { " zero" } else { "" };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n{zero}\" id=\"limit-{}\">{n}</td><td>{}</td></tr>",
            e(name),
            e(&slug(name)),
            e(help)
        );
    }
    let _ = write!(
        out,
        "</table>\n<p>Refreshed every {REFRESH_SECS} s · the same as <a href=\"/status.json\">JSON</a></p>\n</body></html>\n"
    );
    out
}

/// The status port's answer to a request head (everything up to its blank line, or a head
/// that grew past [`MAX_HEAD`]: then `too_large`). `GET /` (or `/status`) is the page,
/// `GET /status.json` the JSON; HEAD is GET without the body; anything else a precise error.
pub fn status_response(head: &[u8], too_large: bool, s: &Snapshot) -> Vec<u8> {
    let answer = |status: &str, ctype: &str, body: String, head_only: bool, extra: &str| {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
             Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n\
             {extra}Connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(body.as_bytes());
        }
        out
    };
    let text = "text/plain; charset=utf-8";
    if too_large {
        return answer(
            "431 Request Header Fields Too Large",
            text,
            "request head too large\n".into(),
            false,
            "",
        );
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or(b"");
    let line = std::str::from_utf8(line)
        .unwrap_or("")
        .trim_end_matches('\r');
    let mut words = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return answer("400 Bad Request", text, "bad request\n".into(), false, "");
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return answer("400 Bad Request", text, "bad request\n".into(), false, "");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return answer(
                "405 Method Not Allowed",
                text,
                "only GET and HEAD\n".into(),
                false,
                "Allow: GET, HEAD\r\n",
            )
        }
    };
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/" | "/status" => answer(
            "200 OK",
            "text/html; charset=utf-8",
            status_html(s),
            head_only,
            "",
        ),
        "/status.json" => answer("200 OK", "application/json", status_json(s), head_only, ""),
        _ => answer(
            "404 Not Found",
            text,
            "not found: try / or /status.json\n".into(),
            head_only,
            "",
        ),
    }
}

/// Where a side connection is in its short life.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Status port: reading the request head.
    Reading,
    /// Sending the answer.
    Writing,
    /// Answer sent and our side shut: reading (and dropping) until the client closes, so that
    /// unread input cannot turn our close into a reset that destroys the answer in flight.
    Lingering,
}

struct Conn {
    kind: Kind,
    stream: TcpStream,
    deadline: Instant,
    step: Step,
    head: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
}

/// The side listeners and their connections.
#[derive(Default)]
pub struct Side {
    listeners: Vec<(Kind, TcpListener)>,
    conns: Vec<Conn>,
    /// Readiness of each of [`Side::pollfds`] from the last `poll`, in the same order.
    ready: Vec<PollFlags>,
    /// `accept` failed for want of fds or memory: the listeners are left out of the wait
    /// until then, or a connection left queued would wake the loop at once, again and again.
    paused_until: Option<Instant>,
}

impl Side {
    /// Binds the ports asked for (non-blocking, CLOEXEC); none asked, none bound.
    pub fn bind(
        agent: Option<SocketAddr>,
        status: Option<SocketAddr>,
    ) -> Result<Side, ListenError> {
        let mut side = Side::default();
        for (kind, addr) in [(Kind::Agent, agent), (Kind::Status, status)] {
            let Some(addr) = addr else { continue };
            let l = listener::bind(addr)?;
            l.set_nonblocking(true)
                .map_err(|source| ListenError::Bind { addr, source })?;
            side.listeners.push((kind, l));
        }
        Ok(side)
    }

    /// The addresses bound, by kind (for the readiness line).
    pub fn local_addrs(&self) -> Vec<(Kind, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(k, l)| l.local_addr().ok().map(|a| (*k, a)))
            .collect()
    }

    /// Every fd a forked child must close.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        let ls = self.listeners.iter().map(|(_, l)| l.as_raw_fd());
        ls.chain(self.conns.iter().map(|c| c.stream.as_raw_fd()))
            .collect()
    }

    /// What to wait for: each listener's connections, each connection's next read or write.
    pub fn pollfds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let want = match self.paused_until {
            Some(t) if Instant::now() < t => PollFlags::empty(),
            _ => PollFlags::POLLIN,
        };
        let ls = self.listeners.iter().map(|(_, l)| (l.as_fd(), want));
        let cs = self.conns.iter().map(|c| {
            let want = match c.step {
                Step::Writing => PollFlags::POLLOUT,
                Step::Reading | Step::Lingering => PollFlags::POLLIN,
            };
            (c.stream.as_fd(), want)
        });
        ls.chain(cs).collect()
    }

    /// Keeps what the last `poll` said of [`Side::pollfds`], for [`Side::answer`].
    pub fn set_ready(&mut self, ready: Vec<PollFlags>) {
        self.ready = ready;
    }

    /// The earliest connection deadline, or the end of a pause in accepting.
    pub fn next_deadline(&self) -> Option<Instant> {
        let conns = self.conns.iter().map(|c| c.deadline);
        conns.chain(self.paused_until).min()
    }

    /// One turn: moves every ready connection on, accepts new ones, ends those past their
    /// deadline. `snapshot` is called only when an answer is to be made. Never blocks.
    pub fn answer(&mut self, now: Instant, snapshot: &dyn Fn() -> Snapshot) {
        let ready = std::mem::take(&mut self.ready);
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
        }
        let n = self.listeners.len();
        let mut cached: Option<Snapshot> = None;
        let mut snap = || cached.get_or_insert_with(snapshot).clone();
        let mut keep = Vec::with_capacity(self.conns.len());
        for (i, mut c) in std::mem::take(&mut self.conns).into_iter().enumerate() {
            let r = ready.get(n + i).copied().unwrap_or(PollFlags::empty());
            let alive = if r.is_empty() || now >= c.deadline {
                now < c.deadline
            } else {
                c.advance(&mut snap)
            };
            if alive {
                keep.push(c);
            }
        }
        self.conns = keep;
        for i in 0..n {
            let r = ready.get(i).copied().unwrap_or(PollFlags::empty());
            if !r.is_empty() {
                self.accept_burst(i, now, &mut snap);
            }
        }
    }

    fn accept_burst(&mut self, i: usize, now: Instant, snap: &mut dyn FnMut() -> Snapshot) {
        for _ in 0..ACCEPT_BURST {
            let Some((kind, l)) = self.listeners.get(i) else {
                return;
            };
            let kind = *kind;
            let stream = match listener::accept(l) {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Out of fds or memory, or worse: the rest waits in the backlog, and the
                // listeners are not looked at for a while.
                Err(e) => {
                    scoreboard::hit(Limit::AcceptResources);
                    tracing::debug!("side port accept: {e}");
                    self.paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if self.conns.len() >= MAX_CONNS {
                // The oldest has had the longest to be answered; a fresh one is the likelier
                // to be a real client reading its answer now.
                self.conns.remove(0);
                scoreboard::hit(Limit::SideConnections);
            }
            let mut c = Conn {
                kind,
                stream,
                deadline: now + DEADLINE,
                step: Step::Reading,
                head: Vec::new(),
                out: Vec::new(),
                sent: 0,
            };
            let alive = match kind {
                // HAProxy's agent sends nothing (unless `agent-send`, which is ignored): the
                // answer goes at once.
                Kind::Agent => {
                    c.out = agent_line(&snap()).into_bytes();
                    c.step = Step::Writing;
                    c.write()
                }
                Kind::Status => c.advance(snap),
            };
            if alive {
                self.conns.push(c);
            }
        }
    }
}

impl Conn {
    /// Moves the connection on as far as its socket allows; false when it is over.
    fn advance(&mut self, snap: &mut dyn FnMut() -> Snapshot) -> bool {
        match self.step {
            Step::Reading => self.read_head(snap),
            Step::Writing => self.write(),
            Step::Lingering => self.linger(),
        }
    }

    fn read_head(&mut self, snap: &mut dyn FnMut() -> Snapshot) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.head.extend_from_slice(buf.get(..n).unwrap_or(&[])),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
            let end = find(&self.head, b"\r\n\r\n").or_else(|| find(&self.head, b"\n\n"));
            let too_large = end.is_none() && self.head.len() > MAX_HEAD;
            if end.is_some() || too_large {
                self.out = status_response(&self.head, too_large, &snap());
                self.head = Vec::new();
                self.step = Step::Writing;
                return self.write();
            }
        }
    }

    fn write(&mut self) -> bool {
        while self.sent < self.out.len() {
            let rest = self.out.get(self.sent..).unwrap_or(&[]);
            match self.stream.write(rest) {
                Ok(0) => return false,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        self.out = Vec::new();
        let _ = self.stream.shutdown(Shutdown::Write);
        self.step = Step::Lingering;
        // The agent's peer rarely sends; what a status client sent past its head is read now.
        self.kind == Kind::Agent || self.linger()
    }

    /// Drops what the client still sends, a few reads a turn: a client that sends as fast as
    /// the master reads would otherwise keep the master's one loop here (and its signals,
    /// reaping and, in fork mode, accepting waiting) past any deadline, which is only looked
    /// at between turns. What is left is read next turn, until the deadline ends it.
    fn linger(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        for _ in 0..LINGER_READS {
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(state: State, connections: u32, open: u32, cap: u32) -> Snapshot {
        Snapshot {
            name: "forkd",
            pid: 7,
            mode: "prefork",
            state: Some(state),
            generation: 3,
            uptime: Duration::from_secs(61),
            open_capacity: open,
            totals: Totals {
                requests: 42,
                limits: vec![("children_bound", "refused <busy>", 2)],
                crashes: vec![("other signal", 1)],
                children_busy: connections,
                children_idle: open.saturating_sub(connections),
                connections,
                capacity: cap,
            },
        }
    }

    #[test]
    fn agent_lines_follow_the_state_and_the_free_share() {
        let cases = [
            (snap(State::Serving, 1, 4, 4), "up ready 75%\n"),
            (snap(State::Serving, 0, 4, 4), "up ready 100%\n"),
            // Full: still a member, with the smallest weight.
            (snap(State::Serving, 4, 4, 4), "up ready 1%\n"),
            // Two of four workers alive, one busy: a quarter free.
            (snap(State::Serving, 1, 2, 4), "up ready 25%\n"),
            (snap(State::Draining, 0, 4, 4), "drain\n"),
            (snap(State::Reloading, 0, 4, 4), "drain\n"),
            (snap(State::Down, 0, 0, 4), "down\n"),
            (snap(State::Serving, 0, 0, 0), "up ready 1%\n"),
        ];
        for (s, want) in cases {
            assert_eq!(agent_line(&s), want, "{s:?}");
        }
    }

    #[test]
    fn status_answers_are_precise_and_escaped() {
        let s = snap(State::Serving, 1, 4, 4);
        let text =
            |head: &str| String::from_utf8(status_response(head.as_bytes(), false, &s)).unwrap();
        let page = text("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.contains("refused &lt;busy&gt;"), "{page}");
        assert!(!page.contains("<busy>"), "{page}");
        assert!(page.contains("id=\"crash-other-signal\">1<"), "{page}");
        assert!(page.contains("id=\"requests\">42<"), "{page}");
        let json = text("GET /status.json?x=1 HTTP/1.0\r\n\r\n");
        let body = json.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["requests"], 42);
        assert_eq!(v["state"], "serving");
        assert_eq!(v["agent"], "up ready 75%");
        assert_eq!(v["limits"]["children_bound"], 2);
        assert_eq!(v["crashes"]["other signal"], 1);
        let head = text("HEAD /status.json HTTP/1.1\r\n\r\n");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        assert!(text("POST / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
        assert!(text("GET /x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(text("GET / HTTP/1.1 extra\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(text("\u{1}\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(text("GET http://x/ HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400 "));
        let big = String::from_utf8(status_response(b"GET /", true, &s)).unwrap();
        assert!(big.starts_with("HTTP/1.1 431 "), "{big}");
    }

    #[test]
    fn escaping_covers_markup_and_json() {
        assert_eq!(
            html_escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(slug("exit 71"), "exit-71");
    }
}
