//! The master's side ports, over real sockets: `--agent-listen` (HAProxy's agent-check) and
//! `--status-listen` (the status page and `/status.json`), in every mode. What a load balancer
//! relies on: the weight follows the free capacity, `drain` from the first instant of a reload
//! or a graceful stop, and neither port can be made to block the master or grow its fds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::util::{self, eventually, per_mode, Mode, Server};

const BIG: usize = 32 << 20;

/// A site with a file too large for the socket buffers: a client that asks for it and does
/// not read keeps one connection busy for as long as the test wants.
fn site(dir: &Path) {
    std::fs::write(dir.join("index.html"), "<h1>hello</h1>").unwrap();
    std::fs::write(dir.join("big.bin"), vec![b'x'; BIG]).unwrap();
}

/// The side ports of a server, from the lines it prints before its readiness line.
pub fn side_addrs(server: &Server) -> (SocketAddr, SocketAddr) {
    let find = |needle: &str| -> SocketAddr {
        let line = server.proc.wait_line(needle, Duration::from_secs(5));
        let rest = line.split(needle).nth(1).unwrap();
        let addr = rest
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/');
        addr.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };
    (find("agent-check on "), find("status page on "))
}

/// One agent-check as HAProxy makes it: connect, read until the agent closes. `None` when
/// nothing listens.
pub fn agent(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// `GET path` on the status port: (status, body).
pub fn status_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let body = String::from_utf8_lossy(util::body_of(&out)).into_owned();
    (util::status_of(&out), body)
}

pub fn status_json(addr: SocketAddr) -> Value {
    let (code, body) = status_get(addr, "/status.json");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn agent_says(addr: SocketAddr, want: &str) {
    let mut last = None;
    eventually(
        Duration::from_secs(5),
        &format!("agent to say {want:?}"),
        || {
            last = agent(addr);
            (last.as_deref() == Some(want)).then_some(())
        },
    );
}

/// A connection that asked for the big file and reads nothing: busy until dropped.
fn stuck_download(server: &Server) -> TcpStream {
    let mut s = server.connect();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s
}

fn start(mode: Mode) -> (Server, SocketAddr, SocketAddr) {
    let server = mode.pool(4).with_site(
        &[
            "--agent-listen",
            "127.0.0.1:0",
            "--status-listen",
            "127.0.0.1:0",
            "--send-timeout",
            "20s",
            "--shutdown-timeout",
            "20s",
            "--max-conns-per-client",
            "0",
        ],
        site,
    );
    let (a, s) = side_addrs(&server);
    (server, a, s)
}

per_mode!(agent_weight_follows_capacity_and_drains_on_reload_and_stop);
fn agent_weight_follows_capacity_and_drains_on_reload_and_stop(mode: Mode) {
    let (mut server, agent_addr, status_addr) = start(mode);
    agent_says(agent_addr, "up ready 100%\n");
    for _ in 0..5 {
        assert_eq!(server.get("/").0, 200);
    }
    let v = status_json(status_addr);
    assert_eq!(v["state"], "serving", "{v}");
    assert_eq!(v["mode"], mode.name, "{v}");
    assert_eq!(v["capacity"], 4, "{v}");
    eventually(Duration::from_secs(5), "5 requests counted", || {
        (status_json(status_addr)["requests"] == 5).then_some(())
    });

    // The pages' connections retired (an event worker sees each client's close a little
    // after the answer), so the one below is the only one counted.
    agent_says(agent_addr, "up ready 100%\n");
    // One of four connections busy: a quarter of the capacity is taken.
    let busy = stuck_download(&server);
    agent_says(agent_addr, "up ready 75%\n");
    assert_eq!(status_json(status_addr)["connections"], 1);

    // A reload: drain while the old generation's busy child finishes, ready after.
    server.proc.signal(Signal::SIGHUP);
    agent_says(agent_addr, "drain\n");
    let v = status_json(status_addr);
    assert_eq!(
        (&v["state"], &v["generation"]),
        (&"reloading".into(), &1.into()),
        "{v}"
    );
    drop(busy);
    agent_says(agent_addr, "up ready 100%\n");
    assert_eq!(status_json(status_addr)["state"], "serving");

    // A graceful stop: drain from the signal until the master exits.
    let busy = stuck_download(&server);
    agent_says(agent_addr, "up ready 75%\n");
    server.proc.signal(Signal::SIGTERM);
    agent_says(agent_addr, "drain\n");
    assert_eq!(status_json(status_addr)["state"], "draining");
    drop(busy);
    let status = server.proc.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert_eq!(
        agent(agent_addr),
        None,
        "the agent port closes with the master"
    );
}

/// Inodes of the sockets listening on `port` (IPv4), from /proc/net/tcp.
fn listening_inodes(port: u16) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *f.get(3)? == "0A").then(|| f.get(9).unwrap().to_string())
        })
        .collect()
}

per_mode!(children_hold_no_side_port);
fn children_hold_no_side_port(mode: Mode) {
    let (server, agent_addr, status_addr) = start(mode);
    // Fork mode has children only while connections last.
    let _busy = stuck_download(&server);
    let kids = eventually(Duration::from_secs(5), "a child", || {
        let k = util::children(server.pid());
        (!k.is_empty()).then_some(k)
    });
    for port in [agent_addr.port(), status_addr.port()] {
        let inodes = listening_inodes(port);
        assert_eq!(inodes.len(), 1, "port {port}: {inodes:?}");
        let target = format!("socket:[{}]", inodes[0]);
        let holds = |pid: i32| util::fds(pid).iter().any(|f| f.ends_with(&target));
        assert!(holds(server.pid()), "the master holds port {port}");
        for kid in &kids {
            assert!(
                !holds(*kid),
                "child {kid} holds side port {port}: {:?}",
                util::fds(*kid)
            );
        }
    }
}

per_mode!(a_client_that_floods_the_status_port_cannot_hold_the_master);
fn a_client_that_floods_the_status_port_cannot_hold_the_master(mode: Mode) {
    let (server, agent_addr, status_addr) = start(mode);
    // Asks for the page, then sends as fast as loopback takes it, for at most 5 s: the master
    // reads and drops what a client sends after its head, and must not do only that.
    let mut flood = TcpStream::connect(status_addr).unwrap();
    flood
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let flooder = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if flood.write_all(&chunk).is_err() {
                return Some(start.elapsed());
            }
        }
        None
    });
    std::thread::sleep(Duration::from_millis(300));
    // The master answers its other clients meanwhile: the agent (its own loop's work) and, in
    // fork mode, the main port (the master accepts there).
    let t = Instant::now();
    assert!(agent(agent_addr).is_some_and(|l| l.starts_with("up ready ")));
    assert_eq!(server.get("/").0, 200);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "answers took {took:?}");
    // And the flooder is cut at the side ports' deadline (2 s), not when it stops.
    let cut = flooder.join().unwrap();
    assert!(
        cut.is_some_and(|c| c < Duration::from_secs(4)),
        "flooder cut after {cut:?}"
    );
}

per_mode!(idle_crowds_and_slow_readers_cost_the_master_nothing);
fn idle_crowds_and_slow_readers_cost_the_master_nothing(mode: Mode) {
    let (server, agent_addr, status_addr) = start(mode);
    let before = util::fds(server.pid()).len();
    // 200 clients that connect and say nothing, on each side port.
    let mut idle: Vec<TcpStream> = Vec::new();
    for addr in [status_addr, agent_addr] {
        for _ in 0..100 {
            idle.push(TcpStream::connect(addr).unwrap());
        }
    }
    // A slow reader: asks for the page many times over and reads nothing; and a client that
    // sends its head a byte at a time.
    let mut slow = TcpStream::connect(status_addr).unwrap();
    for _ in 0..50 {
        let _ = slow.write_all(b"GET / HTTP/1.1\r\n\r\n");
    }
    let mut dribble = TcpStream::connect(status_addr).unwrap();
    dribble.write_all(b"G").unwrap();

    let t = Instant::now();
    assert_eq!(server.get("/").0, 200);
    let v = status_json(status_addr);
    assert_eq!(v["state"], "serving", "{v}");
    // The weight may still count the page's connection: an event worker retires it only when
    // it reads the client's close, after the client has its answer. So first the answer, then
    // the weight once that close is seen.
    let line = agent(agent_addr);
    assert!(
        line.as_deref().is_some_and(|l| l.starts_with("up ready ")),
        "{line:?}"
    );
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "answers took {took:?}");
    agent_says(agent_addr, "up ready 100%\n");

    // The master never holds more than its cap of side connections, whatever is queued.
    let during = util::fds(server.pid()).len();
    assert!(
        during <= before + forkd_daemon::side::MAX_CONNS + 2,
        "master fds {before} -> {during}"
    );
    // Those it let go to answer newer clients are counted. Not all 200: on a loaded machine
    // the master may take the queued ones slowly enough that some reach their 2 s deadline
    // before a newer one evicts them (seen: 53 in CI); the cap on fds above is the bound.
    let evicted = v["limits"]["side_connections"].as_u64().unwrap();
    assert!(evicted >= 1, "{v}");
    // Within the deadline every idle connection is gone from the master.
    drop(idle);
    eventually(Duration::from_secs(5), "the master back to its fds", || {
        (util::fds(server.pid()).len() <= before).then_some(())
    });
    let _ = dribble.write_all(b"ET");
}

#[test]
fn status_page_refuses_what_it_does_not_serve() {
    let (_server, _, status_addr) = start(Mode::named("prefork"));
    let (code, page) = status_get(status_addr, "/");
    assert_eq!(code, 200);
    assert!(page.contains("<title>forkd status</title>"), "{page}");
    assert!(page.contains("http-equiv=\"refresh\""), "{page}");
    assert_eq!(status_get(status_addr, "/nope").0, 404);
    let mut s = TcpStream::connect(status_addr).unwrap();
    s.write_all(b"DELETE / HTTP/1.1\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(util::status_of(&out), 405);
    let mut s = TcpStream::connect(status_addr).unwrap();
    let _ = s.write_all(&vec![b'a'; 8000]);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert_eq!(util::status_of(&out), 431);
}

#[test]
fn a_public_status_address_is_refused_without_consent() {
    let out = std::process::Command::new(util::FORKD)
        .args(["--status-listen", "0.0.0.0:0", "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(100));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
}

/// The first of the usual names of a Chromium binary found in `PATH`.
fn chromium() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Runs headless Chromium with `args` and returns what it printed on stdout (the DOM for
/// `--dump-dom`), within a minute.
fn run_chromium(bin: &Path, profile: &Path, args: &[&str]) -> String {
    let out = profile.join("stdout");
    let mut child = std::process::Command::new(bin)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        // Root has no user namespace sandbox here; the page is our own.
        .arg("--no-sandbox")
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let status = eventually(Duration::from_secs(60), "chromium to finish", || {
        child.try_wait().unwrap()
    });
    assert!(status.success(), "chromium {args:?}: {status:?}");
    std::fs::read_to_string(out).unwrap()
}

/// The page as a browser shows it: loaded by Debian's Chromium, headless, after some requests
/// and a worker killed from outside; what it shows must match `/status.json`. Skipped, loudly,
/// where there is no Chromium (`.ci/run` installs it).
#[test]
fn the_status_page_in_a_real_browser() {
    let Some(bin) = chromium() else {
        eprintln!(
            "\n*** SKIPPED side::the_status_page_in_a_real_browser: no chromium in PATH \
             (apt-get install chromium) ***\n"
        );
        return;
    };
    let (server, _, status_addr) = start(Mode::named("prefork"));
    for _ in 0..7 {
        assert_eq!(server.get("/").0, 200);
    }
    // A worker counts a connection's requests as it ends it: wait for all seven before one
    // of them is killed.
    eventually(Duration::from_secs(5), "7 requests counted", || {
        (status_json(status_addr)["requests"] == 7).then_some(())
    });
    let victim = util::children(server.pid())[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let v = eventually(Duration::from_secs(5), "the numbers to settle", || {
        let v = status_json(status_addr);
        let settled =
            v["requests"] == 7 && v["crashes"]["SIGKILL"] == 1 && v["children"]["idle"] == 4;
        settled.then_some(v)
    });
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{status_addr}/");
    let dom = run_chromium(&bin, profile.path(), &["--dump-dom", &url]);
    let shown = |id: &str| -> String {
        let key = format!("id=\"{id}\"");
        let rest = dom
            .split(&key)
            .nth(1)
            .unwrap_or_else(|| panic!("no #{id} in {dom}"));
        let text = rest.split_once('>').unwrap().1;
        text.split('<').next().unwrap().to_string()
    };
    assert_eq!(shown("state"), "serving");
    assert_eq!(shown("mode"), "prefork");
    assert_eq!(shown("requests"), v["requests"].to_string());
    assert_eq!(shown("crash-SIGKILL"), "1");
    assert_eq!(shown("crash-panic"), "0");
    assert_eq!(shown("children-idle"), v["children"]["idle"].to_string());
    assert_eq!(shown("children-busy"), "0");
    assert_eq!(shown("capacity"), "4");
    assert_eq!(shown("generation"), "0");
    assert_eq!(shown("agent"), "up ready 100%");
    assert_eq!(shown("limit-side-connections"), "0");

    // What it looks like: FORKD_STATUS_SCREENSHOT=docs/status-page.png keeps the picture.
    let png = profile.path().join("status.png");
    let shot = format!("--screenshot={}", png.display());
    run_chromium(
        &bin,
        profile.path(),
        &["--window-size=860,1240", &shot, &url],
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    if let Some(keep) = std::env::var_os("FORKD_STATUS_SCREENSHOT") {
        std::fs::write(keep, bytes).unwrap();
    }
}

/// CPU time (user + system, clock ticks) `pid` has used.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from after the command name (field 3 is f[0]).
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Sets the soft fd limit of `pid` (the hard one stays), returning the soft one it had.
fn set_fd_limit(pid: i32, n: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with no new limit only writes the old one into `old`, which is ours.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let lim = libc::rlimit {
        rlim_cur: n.min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit reads the rlimit given and writes nothing (no old-limit pointer).
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

/// A master out of fds leaves clients of its side ports queued and pauses; it does not spin
/// on a listener that stays readable, and answers them once fds are back.
#[test]
fn a_master_out_of_fds_does_not_spin_on_its_side_ports() {
    let (server, _, status_addr) = start(Mode::named("prefork"));
    let pid = server.pid();
    let open = util::fds(pid).len() as u64;
    let soft = set_fd_limit(pid, open);
    let clients: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(status_addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    // A spin uses what the CPU gives it (32 ticks on a shared machine, 100 alone); a pause
    // next to nothing.
    assert!(
        used <= 10,
        "the master used {used} ticks in 1 s with its fds exhausted"
    );
    set_fd_limit(pid, soft);
    drop(clients);
    let v = status_json(status_addr);
    assert!(
        v["limits"]["accept_resources"].as_u64().unwrap() >= 1,
        "{v}"
    );
}
