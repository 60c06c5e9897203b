//! Sampling a process tree from outside, through `/proc`: how many processes, open fds, RSS and
//! PSS, zombies, and TCP sockets by state for a port or for the sockets the tree owns.
//!
//! This is the evidence the supervisor and the load generator act on, so it reads only what the
//! kernel publishes and never guesses: a file that cannot be read is an error, except where a
//! process exiting during the walk explains it (a descendant that vanished is simply not counted)
//! or where the kernel may not offer the file at all (`smaps_rollup`, so PSS is optional). The
//! root of the tree being gone is reported as [`io::ErrorKind::NotFound`]; [`is_gone`] tells it
//! apart from every other failure (permissions, EMFILE), which callers must not mistake for a
//! dead process. Parsers take `&str` so they are tested on fixed text; the sampling functions do
//! the reading. Only std and libc: it runs inside a supervisor whose own resources may be short.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;

/// What one walk of a process tree saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// Every process in the tree, the root first, then descendants in walk order.
    pub pids: Vec<i32>,
    /// `pids.len()`, zombies included.
    pub processes: usize,
    /// Open file descriptors summed over the tree (entries of `/proc/PID/fd`).
    pub fds: usize,
    /// `VmRSS` summed over the tree, in KiB. Pages shared between a master and its forked workers
    /// are counted once per process, so this overstates memory; see `pss_kb`.
    pub rss_kb: u64,
    /// `Pss` from `smaps_rollup` summed over the tree, in KiB: shared pages divided among their
    /// sharers. `None` when no process of the tree offered the file.
    pub pss_kb: Option<u64>,
    /// Processes of the tree in state `Z`.
    pub zombies: usize,
    /// Inodes of the sockets the tree holds open (`socket:[INODE]` fd links).
    pub socket_inodes: HashSet<u64>,
}

/// True when `err` means the process (or the file of a process) no longer exists, as opposed to
/// a failure of the observer itself (permission, fd exhaustion, ...).
pub fn is_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}

/// Walks the tree rooted at `pid` and sums its resources.
///
/// Errors: `NotFound` when `pid` itself does not exist (see [`is_gone`]); any other error when
/// something that should be readable was not, in which case the sample would be incomplete and
/// none is returned.
pub fn sample_tree(pid: i32) -> io::Result<Sample> {
    // The root's stat first: if it is missing, the whole tree is gone.
    let root_stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let mut sample = Sample::default();
    let pids = descendants_with_root(pid)?;
    for (i, &p) in pids.iter().enumerate() {
        let stat = if i == 0 {
            Ok(root_stat.clone())
        } else {
            fs::read_to_string(format!("/proc/{p}/stat"))
        };
        match sample_one(p, stat, &mut sample) {
            Ok(()) => sample.pids.push(p),
            // A descendant that exited during the walk is no longer part of the tree.
            Err(e) if i > 0 && is_gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    sample.processes = sample.pids.len();
    Ok(sample)
}

/// Adds one process to `sample`. An error leaves `sample` possibly partly updated only for
/// counters that a vanished process no longer contributes anyway.
fn sample_one(pid: i32, stat: io::Result<String>, sample: &mut Sample) -> io::Result<()> {
    let stat = stat?;
    let zombie = parse_stat_state(&stat) == Some('Z');
    // A zombie has released its memory and fds; its status has no VmRSS and its fd directory
    // cannot be listed, so only its existence is counted.
    if zombie {
        sample.zombies += 1;
        return Ok(());
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let (fds, inodes) = fd_sockets(pid)?;
    sample.fds += fds;
    sample.socket_inodes.extend(inodes);
    // Kernel threads and a process in the middle of exiting have no VmRSS: that is zero memory.
    sample.rss_kb += parse_status_kb(&status, "VmRSS").unwrap_or(0);
    // smaps_rollup appeared in Linux 4.14 and needs ptrace-read access; PSS is a bonus.
    if let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        if let Some(pss) = parse_status_kb(&rollup, "Pss") {
            *sample.pss_kb.get_or_insert(0) += pss;
        }
    }
    Ok(())
}

/// The number of open fds of `pid` and the inodes of those that are sockets.
pub fn fd_sockets(pid: i32) -> io::Result<(usize, Vec<u64>)> {
    let mut count = 0;
    let mut inodes = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        count += 1;
        // An fd closed between readdir and readlink is simply no longer a socket of the tree.
        if let Ok(target) = fs::read_link(entry.path()) {
            if let Some(inode) = target.to_str().and_then(parse_socket_link) {
                inodes.push(inode);
            }
        }
    }
    Ok((count, inodes))
}

/// The open fd count of one process.
pub fn fd_count(pid: i32) -> io::Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The direct children of `pid`, from every thread's `children` file.
pub fn children(pid: i32) -> io::Result<Vec<i32>> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?;
        match fs::read_to_string(task.path().join("children")) {
            Ok(s) => out.extend(parse_children(&s)),
            // A thread that ended during the walk had children only if they were reparented.
            Err(e) if is_gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// `pid` followed by all its descendants. Descendants that vanish during the walk are left out;
/// `pid` vanishing is an error.
pub fn descendants_with_root(pid: i32) -> io::Result<Vec<i32>> {
    let mut out = vec![pid];
    let mut stack = children(pid)?;
    while let Some(p) = stack.pop() {
        // Pids are reused, but a pid cannot reappear as its own descendant within one walk
        // unless the tree changed under us; the check keeps a pathological race from looping.
        if out.contains(&p) {
            continue;
        }
        out.push(p);
        match children(p) {
            Ok(c) => stack.extend(c),
            Err(e) if is_gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The inodes of every socket open in the tree of `pid` (the process and its descendants).
/// Processes that vanish during the walk are left out; `pid` vanishing is an error.
pub fn tree_socket_inodes(pid: i32) -> io::Result<HashSet<u64>> {
    let mut out = HashSet::new();
    for (i, p) in descendants_with_root(pid)?.into_iter().enumerate() {
        match fd_sockets(p) {
            Ok((_, inodes)) => out.extend(inodes),
            Err(e) if i > 0 && is_gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The inodes of the TCP sockets (IPv4 and IPv6) listening on `port` in this network
/// namespace: who actually holds a port, as opposed to whether it accepts. Asked of the
/// kernel for listeners only (sock_diag), so tens of thousands of TIME_WAIT sockets cost
/// nothing; `/proc/net/tcp{,6}` where netlink is unavailable.
pub fn listening_inodes(port: u16) -> io::Result<HashSet<u64>> {
    let mut out = HashSet::new();
    // TCP_LISTEN is state 10 in the kernel's numbering (see `TcpState::from_code`).
    let listen = 1u32 << 10;
    let dumped = diag_dump(listen, |e| {
        if e.state == TcpState::Listen && e.local_port == port && e.inode != 0 {
            out.insert(e.inode);
        }
    });
    if dumped.is_ok() {
        return Ok(out);
    }
    out.clear();
    for (path, required) in [("/proc/net/tcp", true), ("/proc/net/tcp6", false)] {
        let text = match read_large(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.extend(
            text.lines()
                .skip(1)
                .filter_map(parse_tcp_line)
                .filter(|e| e.state == TcpState::Listen && e.local_port == port && e.inode != 0)
                .map(|e| e.inode),
        );
    }
    Ok(out)
}

/// The state letter of one process (`R`, `S`, `Z`, ...).
pub fn process_state(pid: i32) -> io::Result<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_state(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))
}

/// TCP socket states as the kernel numbers them in `/proc/net/tcp` (`include/net/tcp_states.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
}

impl TcpState {
    /// Decodes the `st` column (two hex digits).
    pub fn from_hex(st: &str) -> Option<TcpState> {
        TcpState::from_code(u8::from_str_radix(st, 16).ok()?)
    }

    /// Decodes the kernel's state number.
    pub fn from_code(code: u8) -> Option<TcpState> {
        use TcpState::*;
        Some(match code {
            0x01 => Established,
            0x02 => SynSent,
            0x03 => SynRecv,
            0x04 => FinWait1,
            0x05 => FinWait2,
            0x06 => TimeWait,
            0x07 => Close,
            0x08 => CloseWait,
            0x09 => LastAck,
            0x0A => Listen,
            0x0B => Closing,
            0x0C => NewSynRecv,
            _ => return None,
        })
    }

    /// The name `ss` and netstat print.
    pub fn name(self) -> &'static str {
        use TcpState::*;
        match self {
            Established => "ESTABLISHED",
            SynSent => "SYN_SENT",
            SynRecv => "SYN_RECV",
            FinWait1 => "FIN_WAIT1",
            FinWait2 => "FIN_WAIT2",
            TimeWait => "TIME_WAIT",
            Close => "CLOSE",
            CloseWait => "CLOSE_WAIT",
            LastAck => "LAST_ACK",
            Listen => "LISTEN",
            Closing => "CLOSING",
            NewSynRecv => "NEW_SYN_RECV",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counts of TCP sockets by state. `syn_recv` includes the kernel's NEW_SYN_RECV request socks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStates {
    pub established: usize,
    pub syn_sent: usize,
    pub syn_recv: usize,
    pub fin_wait1: usize,
    pub fin_wait2: usize,
    pub time_wait: usize,
    pub close: usize,
    pub close_wait: usize,
    pub last_ack: usize,
    pub listen: usize,
    pub closing: usize,
}

impl TcpStates {
    pub fn add(&mut self, state: TcpState) {
        use TcpState::*;
        let slot = match state {
            Established => &mut self.established,
            SynSent => &mut self.syn_sent,
            SynRecv | NewSynRecv => &mut self.syn_recv,
            FinWait1 => &mut self.fin_wait1,
            FinWait2 => &mut self.fin_wait2,
            TimeWait => &mut self.time_wait,
            Close => &mut self.close,
            CloseWait => &mut self.close_wait,
            LastAck => &mut self.last_ack,
            Listen => &mut self.listen,
            Closing => &mut self.closing,
        };
        *slot += 1;
    }

    pub fn total(&self) -> usize {
        self.iter().map(|(_, n)| n).sum()
    }

    /// Every counter with its state name, in a fixed order (for reports and CSV headers).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, usize)> {
        [
            ("ESTABLISHED", self.established),
            ("SYN_SENT", self.syn_sent),
            ("SYN_RECV", self.syn_recv),
            ("FIN_WAIT1", self.fin_wait1),
            ("FIN_WAIT2", self.fin_wait2),
            ("TIME_WAIT", self.time_wait),
            ("CLOSE", self.close),
            ("CLOSE_WAIT", self.close_wait),
            ("LAST_ACK", self.last_ack),
            ("LISTEN", self.listen),
            ("CLOSING", self.closing),
        ]
        .into_iter()
    }
}

/// Which sockets of `/proc/net/tcp{,6}` to count: a socket counts when its local port is `port`
/// or its inode is in `inodes`. Both are needed to see everything of a server: TIME_WAIT sockets
/// belong to no process (inode 0), and a tree's outgoing sockets have other local ports.
#[derive(Debug, Clone, Default)]
pub struct TcpFilter {
    pub port: Option<u16>,
    pub inodes: HashSet<u64>,
}

impl TcpFilter {
    pub fn matches(&self, entry: &TcpEntry) -> bool {
        self.port == Some(entry.local_port)
            || (entry.inode != 0 && self.inodes.contains(&entry.inode))
    }
}

/// TCP sockets (IPv4 and IPv6) whose local port is `port`, by state.
pub fn tcp_states(port: u16) -> io::Result<TcpStates> {
    tcp_states_matching(&TcpFilter {
        port: Some(port),
        inodes: HashSet::new(),
    })
}

/// TCP sockets (IPv4 and IPv6) that `filter` selects, by state.
///
/// Asks the kernel through `NETLINK_SOCK_DIAG` (what `ss` uses) and falls back to
/// [`tcp_states_proc`] where that is unavailable. The netlink dump is binary and cheap; the text
/// of `/proc/net/tcp` is slow to produce, about a second for 30,000 TIME_WAIT sockets on a busy
/// two-core machine, which would stretch every sampling interval after a connection-per-request
/// run.
pub fn tcp_states_matching(filter: &TcpFilter) -> io::Result<TcpStates> {
    match tcp_states_netlink(filter) {
        Ok(states) => Ok(states),
        Err(_) => tcp_states_proc(filter),
    }
}

/// Like [`tcp_states_matching`], from the text tables `/proc/net/tcp` and `/proc/net/tcp6`. A
/// missing `/proc/net/tcp6` (IPv6 disabled) counts as no sockets.
pub fn tcp_states_proc(filter: &TcpFilter) -> io::Result<TcpStates> {
    let mut states = TcpStates::default();
    for (path, required) in [("/proc/net/tcp", true), ("/proc/net/tcp6", false)] {
        let text = match read_large(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        count_tcp(&text, filter, &mut states);
    }
    Ok(states)
}

/// Reads a seq_file in 1 MiB calls: the kernel resumes its walk of the socket table at every
/// read, so few large reads are much cheaper than many small ones.
fn read_large(path: &str) -> io::Result<String> {
    use std::io::Read;
    let mut f = fs::File::open(path)?;
    let mut out = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Like [`tcp_states_matching`], through a `NETLINK_SOCK_DIAG` dump of every TCP socket of each
/// address family (the filter is applied here, not by kernel bytecode, to keep this small).
pub fn tcp_states_netlink(filter: &TcpFilter) -> io::Result<TcpStates> {
    let mut states = TcpStates::default();
    diag_dump(u32::MAX, |entry| {
        if filter.matches(&entry) {
            states.add(entry.state);
        }
    })?;
    Ok(states)
}

/// Dumps the TCP sockets (both families) whose state is in the `states` bitmask (bit n is
/// state code n) through `NETLINK_SOCK_DIAG`, calling `visit` for each.
fn diag_dump(states: u32, mut visit: impl FnMut(TcpEntry)) -> io::Result<()> {
    use nix::sys::socket::{
        recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let mut buf = vec![0u8; 64 * 1024];
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        let req = diag_request(family, seq, states);
        // An unconnected netlink socket sends to the kernel (port 0).
        send(fd.as_raw_fd(), &req, MsgFlags::empty())?;
        loop {
            let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "netlink closed",
                ));
            }
            if parse_diag(buf.get(..n).unwrap_or_default(), &mut visit)? {
                break;
            }
        }
    }
    Ok(())
}

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct inet_diag_msg`: family, state, timer, retrans, the 48-byte socket id (ports in
/// network order first), expires, rqueue, wqueue, uid, inode.
const DIAG_MSG_LEN: usize = 72;

/// A dump request (`nlmsghdr` + `inet_diag_req_v2`) for every TCP socket of `family` whose
/// state is in the bitmask `states` (`u32::MAX`: any state).
pub fn diag_request(family: u8, seq: u32, states: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + 56;
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(&(len as u32).to_ne_bytes());
    r.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    r.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    r.extend_from_slice(&seq.to_ne_bytes());
    r.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, ext, pad, states bitmask, then a zeroed socket id.
    r.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    r.extend_from_slice(&states.to_ne_bytes());
    r.resize(len, 0);
    r
}

/// Calls `visit` for each socket of one netlink datagram of a sock_diag dump. Returns true at
/// the end of the dump; a kernel error message becomes that error.
pub fn parse_diag(buf: &[u8], visit: &mut impl FnMut(TcpEntry)) -> io::Result<bool> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag message");
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = ne_u32(rest, 0).ok_or_else(bad)? as usize;
        let kind = u16::from_ne_bytes(bytes_at(rest, 4).ok_or_else(bad)?);
        if len < NLMSG_HDRLEN {
            return Err(bad());
        }
        let body = rest.get(NLMSG_HDRLEN..len).ok_or_else(bad)?;
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = ne_u32(body, 0).unwrap_or(0) as i32;
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY if body.len() >= DIAG_MSG_LEN => {
                let entry = body.get(1).and_then(|&code| {
                    Some(TcpEntry {
                        local_port: u16::from_be_bytes(bytes_at(body, 4)?),
                        remote_port: u16::from_be_bytes(bytes_at(body, 6)?),
                        state: TcpState::from_code(code)?,
                        inode: u64::from(ne_u32(body, 68)?),
                    })
                });
                if let Some(entry) = entry {
                    visit(entry);
                }
            }
            _ => return Err(bad()),
        }
        // Messages are aligned to 4 bytes.
        rest = rest.get(len.saturating_add(3) & !3..).unwrap_or_default();
    }
    Ok(false)
}

/// The `N` bytes of `b` at `at`, if it holds them.
fn bytes_at<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    bytes_at(b, at).map(u32::from_ne_bytes)
}

/// Adds the sockets of one `/proc/net/tcp`-format table that `filter` selects to `states`.
pub fn count_tcp(table: &str, filter: &TcpFilter, states: &mut TcpStates) {
    for entry in table.lines().skip(1).filter_map(parse_tcp_line) {
        if filter.matches(&entry) {
            states.add(entry.state);
        }
    }
}

/// One row of `/proc/net/tcp` or `/proc/net/tcp6`, reduced to what is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEntry {
    pub local_port: u16,
    pub remote_port: u16,
    pub state: TcpState,
    /// 0 for sockets no process owns (TIME_WAIT, request socks).
    pub inode: u64,
}

/// Parses one row: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`, addresses as
/// `HEXADDR:HEXPORT`. The header row and anything malformed give `None`.
pub fn parse_tcp_line(line: &str) -> Option<TcpEntry> {
    let mut f = line.split_whitespace();
    let sl = f.next()?;
    if !sl.ends_with(':') {
        return None;
    }
    let port_of = |addr: &str| u16::from_str_radix(addr.rsplit_once(':')?.1, 16).ok();
    let local_port = port_of(f.next()?)?;
    let remote_port = port_of(f.next()?)?;
    let state = TcpState::from_hex(f.next()?)?;
    // tx:rx, tr:when, retrnsmt, uid, timeout, then the inode.
    let inode = f.nth(5)?.parse().ok()?;
    Some(TcpEntry {
        local_port,
        remote_port,
        state,
        inode,
    })
}

/// The pids listed in a `/proc/PID/task/TID/children` file.
pub fn parse_children(s: &str) -> impl Iterator<Item = i32> + '_ {
    s.split_whitespace().filter_map(|x| x.parse().ok())
}

/// A `Name:   123 kB` field of `/proc/PID/status`, `smaps_rollup` or `/proc/meminfo`, in KiB:
/// the one parser of these lines (`limits` reads its memory figures with it too).
pub fn parse_status_kb(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The state letter of a `/proc/PID/stat` line. The command name sits in parentheses and may
/// itself hold spaces and parentheses, so the state is read after the last `)`.
pub fn parse_stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The parent pid from a `/proc/PID/stat` line.
pub fn parse_stat_ppid(stat: &str) -> Option<i32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The inode of an fd link target `socket:[12345]`.
pub fn parse_socket_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 5001 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:D432 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   3: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 5002 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:1F90 0100007F:D433 08 00000000:00000000 00:00000000 00000000  1000        0 5003 1 0000000000000000 20 4 30 10 -1
   5: 0100007F:9C40 0100007F:0050 04 00000000:00000000 01:00000014 00000000  1000        0 7777 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:E001 05 00000000:00000000 00:00000000 00000000  1000        0 0 1 0000000000000000 20 4 30 10 -1
";

    /// Local port, remote port, state, inode.
    type Row = (u16, u16, TcpState, u64);

    #[test]
    fn tcp_lines() {
        let cases: &[(&str, Option<Row>)] = &[
            (TCP.lines().next().unwrap(), None),
            (
                TCP.lines().nth(1).unwrap(),
                Some((8080, 0, TcpState::Listen, 4242)),
            ),
            (
                TCP.lines().nth(3).unwrap(),
                Some((8080, 0xD432, TcpState::TimeWait, 0)),
            ),
            (
                TCP6.lines().nth(2).unwrap(),
                Some((8080, 0xE001, TcpState::FinWait2, 0)),
            ),
            ("", None),
            ("   0: 0100007F:1F90 00000000:0000 0D 0:0 0:0 0 0 0 1", None),
            ("   0: 0100007F:ZZZZ 00000000:0000 0A 0:0 0:0 0 0 0 1", None),
            ("   0: 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0", None),
        ];
        for (line, want) in cases {
            let got = parse_tcp_line(line).map(|e| (e.local_port, e.remote_port, e.state, e.inode));
            assert_eq!(got, *want, "{line:?}");
        }
    }

    #[test]
    fn tcp_counts_by_port_and_inode() {
        let by_port = TcpFilter {
            port: Some(8080),
            inodes: HashSet::new(),
        };
        let mut s = TcpStates::default();
        count_tcp(TCP, &by_port, &mut s);
        count_tcp(TCP6, &by_port, &mut s);
        // The client end (local port 0xD431) is not the server's.
        assert_eq!(
            (
                s.listen,
                s.established,
                s.time_wait,
                s.close_wait,
                s.fin_wait2,
                s.fin_wait1
            ),
            (2, 1, 1, 1, 1, 0)
        );
        assert_eq!(s.total(), 6);

        // An outgoing socket of the tree is found by its inode; inode 0 never matches.
        let by_inode = TcpFilter {
            port: None,
            inodes: [7777, 0].into_iter().collect(),
        };
        let mut s = TcpStates::default();
        count_tcp(TCP, &by_inode, &mut s);
        assert_eq!((s.fin_wait1, s.total()), (1, 1));
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tforkd\nVmPeak:\t   10000 kB\nVmRSS:\t    1532 kB\nVmRSSX:\t 1 kB\n";
        let rollup = "55d0-7ffd ---p 00000000 00:00 0   [rollup]\nRss:   1600 kB\nPss:    812 kB\nPss_Anon:  400 kB\n";
        let cases: &[(&str, &str, Option<u64>)] = &[
            (status, "VmRSS", Some(1532)),
            (status, "VmPeak", Some(10000)),
            (status, "VmSwap", None),
            (status, "VmRS", None),
            (rollup, "Pss", Some(812)),
            (rollup, "Pss_Anon", Some(400)),
            ("VmRSS:\tlots kB\n", "VmRSS", None),
            (
                "MemTotal:  8000 kB\nMemAvailable:    5120 kB\n",
                "MemAvailable",
                Some(5120),
            ),
            ("MemAvailable5:  1 kB\n", "MemAvailable", None),
        ];
        for (text, field, want) in cases {
            assert_eq!(parse_status_kb(text, field), *want, "{field}");
        }
    }

    #[test]
    fn stat_fields() {
        let cases: &[(&str, Option<char>, Option<i32>)] = &[
            ("1234 (forkd) S 1 1234 1234 0 -1", Some('S'), Some(1)),
            ("99 (a) b) (c) Z 42 99 99", Some('Z'), Some(42)),
            ("7 (x y) R 0", Some('R'), Some(0)),
            ("garbage", None, None),
        ];
        for (stat, state, ppid) in cases {
            assert_eq!(parse_stat_state(stat), *state, "{stat}");
            assert_eq!(parse_stat_ppid(stat), *ppid, "{stat}");
        }
    }

    #[test]
    fn small_parsers() {
        assert_eq!(
            parse_children("12 345 \n").collect::<Vec<_>>(),
            vec![12, 345]
        );
        assert_eq!(parse_children("").count(), 0);
        assert_eq!(parse_socket_link("socket:[98765]"), Some(98765));
        assert_eq!(parse_socket_link("pipe:[98765]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
        assert_eq!(TcpState::from_hex("0A").map(TcpState::name), Some("LISTEN"));
    }

    #[test]
    fn samples_a_real_tree() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let s = sample_tree(me).unwrap();
        assert!(s.pids.contains(&(child.id() as i32)), "{s:?}");
        assert_eq!(s.pids[0], me);
        assert!(s.processes >= 2 && s.fds >= 3 && s.rss_kb > 0, "{s:?}");
        child.kill().unwrap();
        // Not reaped yet: a zombie of this tree.
        let pid = child.id() as i32;
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while process_state(pid).unwrap() != 'Z' {
            assert!(std::time::Instant::now() < end);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(sample_tree(me).unwrap().zombies >= 1);
        child.wait().unwrap();
        let gone = sample_tree(pid).unwrap_err();
        assert!(is_gone(&gone), "{gone}");
    }

    /// One sock_diag message for a socket in `state` on `sport` -> `dport` with `inode`.
    fn diag_msg(state: u8, sport: u16, dport: u16, inode: u32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + DIAG_MSG_LEN) as u32).to_ne_bytes());
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        let mut body = vec![0u8; DIAG_MSG_LEN];
        body[0] = libc::AF_INET as u8;
        body[1] = state;
        body[4..6].copy_from_slice(&sport.to_be_bytes());
        body[6..8].copy_from_slice(&dport.to_be_bytes());
        body[68..72].copy_from_slice(&inode.to_ne_bytes());
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn sock_diag_messages() {
        let filter = TcpFilter {
            port: Some(8080),
            inodes: [99].into_iter().collect(),
        };
        let mut buf = Vec::new();
        buf.extend(diag_msg(0x0A, 8080, 0, 5));
        buf.extend(diag_msg(0x06, 8080, 40000, 0));
        buf.extend(diag_msg(0x01, 40000, 8080, 6));
        buf.extend(diag_msg(0x04, 50000, 80, 99));
        let mut entries = Vec::new();
        let mut count = |e: TcpEntry| entries.push(e);
        assert!(!parse_diag(&buf, &mut count).unwrap());
        let mut s = TcpStates::default();
        for e in entries.iter().filter(|e| filter.matches(e)) {
            s.add(e.state);
        }
        assert_eq!(
            (s.listen, s.time_wait, s.established, s.fin_wait1),
            (1, 1, 0, 1)
        );
        let mut done = vec![0u8; 20];
        done[..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        let mut ignore = |_: TcpEntry| {};
        assert!(parse_diag(&done, &mut ignore).unwrap());
        let mut err = vec![0u8; 20];
        err[..4].copy_from_slice(&20u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        let e = parse_diag(&err, &mut ignore).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(parse_diag(&buf[..50], &mut ignore).is_err());
        assert_eq!(diag_request(libc::AF_INET as u8, 1, u32::MAX).len(), 72);
    }

    #[test]
    fn netlink_and_proc_agree() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_s, _) = l.accept().unwrap();
        let filter = TcpFilter {
            port: Some(port),
            inodes: HashSet::new(),
        };
        let by_netlink = tcp_states_netlink(&filter).unwrap();
        assert_eq!((by_netlink.listen, by_netlink.established), (1, 1));
        assert_eq!(by_netlink, tcp_states_proc(&filter).unwrap());
    }

    #[test]
    fn counts_a_listening_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let s = tcp_states(port).unwrap();
        assert_eq!(s.listen, 1);
        let (_, inodes) = fd_sockets(std::process::id() as i32).unwrap();
        let by_inode = TcpFilter {
            port: None,
            inodes: inodes.into_iter().collect(),
        };
        assert!(tcp_states_matching(&by_inode).unwrap().listen >= 1);
    }

    /// The port readiness check of the supervisor: the listener is found by port in the
    /// kernel's table and among this process's fds; a connected socket on it is not listening.
    #[test]
    fn a_listener_is_found_among_its_owners_fds() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let listening = listening_inodes(port).unwrap();
        assert_eq!(listening.len(), 1, "{listening:?}");
        let mine = tree_socket_inodes(std::process::id() as i32).unwrap();
        assert!(listening.is_subset(&mine));
        drop(l);
        assert!(listening_inodes(port).unwrap().is_empty());
    }
}
