//! The process machinery of forkd, proven on the real binary: no fd leak in the master, no
//! zombies, a bound on children that load cannot pass, reloads that lose no request and build
//! no chain of parents, graceful stops, readiness, inherited listeners, privilege drop, and an
//! accept loop that survives running out of fds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{self, eventually, per_mode, Mode, Proc, Server};

/// One connection-per-request GET; returns the status, or 0 on any transport failure.
fn get_once(addr: SocketAddr, path: &str) -> u16 {
    try_get_once(addr, path).unwrap_or(0)
}

/// One connection-per-request GET: the status, or which step failed and how.
fn try_get_once(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    Ok(util::status_of(&out))
}

/// `n` connection-per-request GETs from `threads` clients; returns what went wrong with those
/// that were not a 200 (a status, or the failed step), so a failure says what it was.
fn hammer(addr: SocketAddr, n: usize, threads: usize) -> Vec<String> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                (t..n)
                    .step_by(threads)
                    .filter_map(|_| match try_get_once(addr, "/bench/2k.html") {
                        Ok(200) => None,
                        Ok(status) => Some(format!("status {status}")),
                        Err(e) => Some(e),
                    })
                    .collect::<Vec<String>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn assert_fds_flat(mode_args: &[&str]) {
    let server = Server::start(mode_args);
    // Warm up so lazily opened things (none expected) are open before the baseline.
    assert_eq!(hammer(server.addr, 100, 2), Vec::<String>::new());
    let before = util::fds(server.pid());
    let failed = hammer(server.addr, 20_000, 4);
    assert!(
        failed.is_empty(),
        "{} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(20)]
    );
    let after = util::fds(server.pid());
    assert_eq!(before, after, "master fds changed after 20,000 connections");
    let pid = server.pid();
    eventually(Duration::from_secs(5), "no zombies", || {
        util::zombies(pid).is_empty().then_some(())
    });
}

#[test]
fn master_fds_flat_after_20k_connections_prefork() {
    // Four clients of one address on four workers: no per-client limit.
    assert_fds_flat(&["--workers", "4", "--max-conns-per-client", "0"]);
}

#[test]
fn master_fds_flat_after_20k_connections_fork() {
    assert_fds_flat(&["--mode", "fork", "--max-children", "32"]);
}

/// A client that reconnects as soon as its connection ends meets the slot of the child that
/// served it, though that child may not have exited yet: with one slot, 300 connections in a
/// row are all served (before the grace, 20-33 % of them were refused with 503).
#[test]
fn fork_mode_a_reconnecting_client_never_meets_a_full_table() {
    let server = Server::start(&["--mode", "fork", "--max-children", "1"]);
    let refused = (0..300)
        .filter(|_| get_once(server.addr, "/") != 200)
        .count();
    assert_eq!(refused, 0, "of 300 connections in a row, one at a time");
}

/// The same client against its own per-address count: a child gives its client's count back
/// before it closes the connection, so the reconnect that the close sets off is never refused
/// for a connection that has already ended (the count was given back after the close, and a
/// child preempted by the client it had just woken held it: CI saw 2 of 20,000 refused).
#[test]
fn fork_mode_a_reconnecting_client_never_meets_its_own_count() {
    let server = Server::start(&[
        "--mode",
        "fork",
        "--max-children",
        "8",
        "--max-conns-per-client",
        "1",
    ]);
    let refused: Vec<u16> = (0..2_000)
        .map(|_| get_once(server.addr, "/"))
        .filter(|s| *s != 200)
        .collect();
    assert!(
        refused.is_empty(),
        "of 2,000 connections in a row, one at a time, {} refused: {:?}",
        refused.len(),
        &refused[..refused.len().min(10)]
    );
}

#[test]
fn fork_mode_never_exceeds_max_children_and_answers_503_fast() {
    let server = Server::start(&[
        "--mode",
        "fork",
        "--max-children",
        "16",
        "--header-timeout",
        "20s",
        // Idle connections from one address that reach children: what this test is about.
        "--defer-accept",
        "0",
        "--max-conns-per-client",
        "0",
    ]);
    let pid = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, max_seen) = (stop.clone(), max_seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = util::descendants(pid).len() as u64;
                max_seen.fetch_max(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // 200 idle connections: 16 get a child each, the rest are refused at once.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    eventually(Duration::from_secs(10), "16 children busy", || {
        (util::descendants(pid).len() == 16).then_some(())
    });
    let started = Instant::now();
    let status = get_once(server.addr, "/");
    let waited = started.elapsed();
    assert_eq!(status, 503, "a new client while all 16 children are busy");
    assert!(waited < Duration::from_secs(2), "503 took {waited:?}");
    let (_, resp) = server.get("/");
    assert_eq!(util::header(&resp, "Retry-After").as_deref(), Some("1"));
    // The master's canned 503 carries the security fields every other response does.
    assert_eq!(
        util::header(&resp, "X-Content-Type-Options").as_deref(),
        Some("nosniff")
    );
    drop(idle);
    // Once the idle clients are gone, children end and new clients are served again.
    eventually(
        Duration::from_secs(10),
        "a 200 after the idle clients left",
        || (get_once(server.addr, "/") == 200).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let max = max_seen.load(Ordering::Relaxed);
    assert!(max <= 16, "saw {max} children with --max-children 16");
}

/// Pids of the master's workers, checking the tree is one level deep.
fn workers_of(pid: i32) -> Vec<i32> {
    let kids = util::children(pid);
    for k in &kids {
        assert!(
            util::children(*k).is_empty(),
            "worker {k} has children of its own"
        );
    }
    kids
}

#[test]
fn fifty_reloads_lose_no_request_and_keep_one_master() {
    let server = Server::start(&["--workers", "3"]);
    let pid = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), server.addr);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match get_once(addr, "/bench/2k.html") {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let mut generations = std::collections::HashSet::new();
    for _ in 0..50 {
        server.proc.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(40));
        let w = workers_of(pid);
        assert!(
            w.len() <= 3,
            "more workers than the pool size during reload: {w:?}"
        );
        generations.extend(w);
    }
    eventually(
        Duration::from_secs(10),
        "3 workers after the reloads",
        || (workers_of(pid).len() == 3).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 50, "the client barely ran");
    assert!(
        generations.len() > 3,
        "workers were never replaced: {generations:?}"
    );
    for w in workers_of(pid) {
        assert_eq!(util::ppid(w), Some(pid));
    }
}

#[test]
fn reload_rereads_config_and_keeps_the_old_one_when_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("forkd.toml");
    std::fs::write(&conf, "[server]\nworkers = 2\n").unwrap();
    let server = Server::start(&["--config", conf.to_str().unwrap()]);
    let pid = server.pid();
    eventually(Duration::from_secs(5), "2 workers", || {
        (workers_of(pid).len() == 2).then_some(())
    });

    std::fs::write(&conf, "[server]\nworkers = \"many\"\n").unwrap();
    server.proc.signal(Signal::SIGHUP);
    let line = server
        .proc
        .wait_line("reload failed", Duration::from_secs(5));
    assert!(
        line.contains("workers"),
        "the error should name the key: {line}"
    );
    assert_eq!(get_once(server.addr, "/"), 200);
    assert_eq!(workers_of(pid).len(), 2);

    // The mode needs a restart, and forkd says so instead of ignoring it silently.
    std::fs::write(&conf, "[server]\nmode = \"fork\"\n").unwrap();
    server.proc.signal(Signal::SIGHUP);
    server
        .proc
        .wait_line("mode cannot change on reload", Duration::from_secs(5));
    assert_eq!(get_once(server.addr, "/"), 200);

    // The pool size applies.
    std::fs::write(&conf, "[server]\nworkers = 4\n").unwrap();
    server.proc.signal(Signal::SIGHUP);
    eventually(Duration::from_secs(5), "4 workers after reload", || {
        (workers_of(pid).len() == 4).then_some(())
    });
    assert_eq!(get_once(server.addr, "/"), 200);
}

#[test]
fn dead_workers_are_replaced_and_the_cause_logged() {
    let server = Server::start(&["--workers", "2"]);
    let pid = server.pid();
    let victim = eventually(Duration::from_secs(5), "2 workers", || {
        let w = workers_of(pid);
        (w.len() == 2).then(|| w[0])
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    server.proc.wait_line(
        &format!("{victim} killed by SIGKILL"),
        Duration::from_secs(5),
    );
    eventually(Duration::from_secs(5), "a replacement worker", || {
        let w = workers_of(pid);
        (w.len() == 2 && !w.contains(&victim)).then_some(())
    });
    assert!(util::zombies(pid).is_empty());
}

#[test]
fn workers_are_recycled_after_their_request_budget() {
    let server = Server::start(&["--workers", "2", "--max-requests-per-worker", "20"]);
    let pid = server.pid();
    let first = workers_of(pid);
    assert_eq!(hammer(server.addr, 200, 2), Vec::<String>::new());
    eventually(Duration::from_secs(5), "recycled workers", || {
        let now = workers_of(pid);
        (now.len() == 2 && now.iter().all(|w| !first.contains(w))).then_some(())
    });
}

per_mode!(sigterm_lets_a_large_download_finish_then_exits_0);
fn sigterm_lets_a_large_download_finish_then_exits_0(mode: Mode) {
    let size = 64 << 20;
    let mut server = mode
        .pool(2)
        .with_site(&["--shutdown-timeout", "30s"], |root| {
            std::fs::write(root.join("big.bin"), vec![7u8; size]).unwrap();
        });
    let mut s = server.connect();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = s.read(&mut buf).unwrap();
    // The download is under way: stop the server now.
    server.proc.signal(Signal::SIGTERM);
    // New connections are refused at once (the listener is closed), while the download goes on.
    eventually(Duration::from_secs(5), "the listener closed", || {
        TcpStream::connect(server.addr).is_err().then_some(())
    });
    loop {
        std::thread::sleep(Duration::from_micros(200));
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("download cut after {got} bytes: {e}"),
        }
    }
    assert!(got > size, "got {got} bytes of a {size}-byte file");
    let status = server.proc.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigint_stops_at_once_and_pid_file_comes_and_goes() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("forkd.pid");
    let mut server = Server::start(&["--workers", "2", "--pid-file", pidfile.to_str().unwrap()]);
    let text = std::fs::read_to_string(&pidfile).unwrap();
    assert_eq!(text, format!("{}\n", server.pid()));
    let workers = workers_of(server.pid());
    server.proc.signal(Signal::SIGINT);
    let status = server.proc.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(!pidfile.exists(), "pid file left behind");
    for w in workers {
        assert!(util::state(w).is_none(), "worker {w} survived the master");
    }
}

#[test]
fn a_pid_file_that_a_successor_rewrote_is_left_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("forkd.pid");
    let mut server = Server::start(&["--workers", "1", "--pid-file", pidfile.to_str().unwrap()]);
    // A second forkd started with the same file while this one drains (a restart that
    // overlaps): the file names the successor now.
    std::fs::write(&pidfile, "4194304\n").unwrap();
    server.proc.signal(Signal::SIGTERM);
    let status = server.proc.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), "4194304\n");
}

per_mode!(a_slow_download_holds_a_reload_no_longer_than_the_shutdown_timeout);
fn a_slow_download_holds_a_reload_no_longer_than_the_shutdown_timeout(mode: Mode) {
    let server = mode.pool(1).with_site(
        &[
            "--shutdown-timeout",
            "2s",
            "--send-timeout",
            "60s",
            "--max-conns-per-client",
            "0",
        ],
        |root| {
            std::fs::write(root.join("big.bin"), vec![b'x'; 32 << 20]).unwrap();
            std::fs::write(root.join("a.txt"), "a").unwrap();
        },
    );
    // A download read by nobody: only the send timeout (a minute) would end it.
    let mut slow = server.connect();
    slow.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    slow.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let old = util::children(server.pid());
    assert!(!old.is_empty(), "no child serves the download");
    server.proc.signal(Signal::SIGHUP);
    server
        .proc
        .wait_line("reloaded configuration", Duration::from_secs(5));
    let t = Instant::now();
    // Fresh clients are served: by the new generation at once in event mode (an old event
    // worker's slow connection must not take the pool, here all of it); in prefork and fork
    // mode the busy child holds the one place it has (a worker, a child slot) until it is
    // killed: its own connection's cost, as before the reload.
    eventually(Duration::from_secs(8), "a fresh answer", || {
        (server.get("/a.txt").0 == 200).then_some(())
    });
    let answered = t.elapsed();
    if mode.name == "event" {
        assert!(
            answered < Duration::from_secs(1),
            "answered after {answered:?}"
        );
    }
    // The old generation is gone at the shutdown timeout, and the download with it.
    eventually(Duration::from_secs(8), "the old children gone", || {
        old.iter().all(|p| util::state(*p).is_none()).then_some(())
    });
    let gone = t.elapsed();
    assert!(gone < Duration::from_secs(5), "old children lived {gone:?}");
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(rest.len() < 32 << 20, "the download was not cut");
    assert_eq!(server.get("/a.txt").0, 200);
}

/// The scheduling policy of `pid`, field 41 of `/proc/PID/stat` (0: SCHED_OTHER, 3:
/// SCHED_BATCH).
fn policy(pid: i32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name start at the third (the state).
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(41 - 3)?
        .parse()
        .ok()
}

// Children inherit the master's scheduling policy unless `--worker-sched batch` asks for
// SCHED_BATCH; the master always keeps its own. A master started as SCHED_BATCH makes
// `inherit` tell "the master's policy" from "SCHED_OTHER".
per_mode!(children_take_the_scheduling_policy_asked_for_and_the_master_keeps_its_own);
fn children_take_the_scheduling_policy_asked_for_and_the_master_keeps_its_own(mode: Mode) {
    const OTHER: u32 = 0;
    const BATCH: u32 = 3;
    // (the master's own policy, flags, the children's policy)
    for (master, args, want) in [
        (OTHER, &[][..], OTHER),
        (OTHER, &["--worker-sched", "batch"][..], BATCH),
        (BATCH, &["--worker-sched", "inherit"][..], BATCH),
    ] {
        let mut cmd = Command::new(util::FORKD);
        cmd.args(mode.pool(2).args())
            .args(["--listen", "127.0.0.1:0"])
            .args(args);
        if master == BATCH {
            // SAFETY: one system call on this process with a struct on the stack, which is
            // async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    let param = libc::sched_param { sched_priority: 0 };
                    match libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) {
                        0 => Ok(()),
                        _ => Err(std::io::Error::last_os_error()),
                    }
                });
            }
        }
        let proc = Proc::spawn_cmd(&mut cmd);
        let server = Server {
            addr: util::wait_ready(&proc),
            proc,
            dir: None,
        };
        mode.check_ready(&server);
        // A fork-mode child lives as long as its connection: a head left half-sent keeps one.
        let mut held = server.connect();
        held.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        eventually(
            Duration::from_secs(5),
            "a child with its policy set",
            || {
                let kids = util::children(server.pid());
                let policies: Vec<u32> = kids.iter().filter_map(|&k| policy(k)).collect();
                (!kids.is_empty()
                    && policies.len() == kids.len()
                    && policies.iter().all(|&p| p == want))
                .then_some(())
            },
        );
        assert_eq!(
            policy(server.pid()),
            Some(master),
            "{args:?}: the master's policy"
        );
        drop(held);
    }
}

per_mode!(readiness_line_names_the_mode_and_its_pool);
/// Every entry of `MODES` really starts its own mode, sized as asked: a misspelt entry, or
/// flags that another mode ignores, would run some other server under this mode's name.
fn readiness_line_names_the_mode_and_its_pool(mode: Mode) {
    let server = mode.pool(3).start(&[]);
    let line = mode.check_ready(&server);
    let want = format!("(pid {}, {}, ", server.pid(), mode.name);
    let how = line.split(&want).nth(1).unwrap_or("");
    assert!(
        how.split(|c: char| !c.is_ascii_digit()).any(|n| n == "3"),
        "mode {}: the readiness line does not say the pool of 3: {line:?}",
        mode.name
    );
    assert_eq!(server.get("/").0, 200, "mode {}", mode.name);
}

#[test]
fn readiness_is_notified_over_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let proc = Proc::spawn_cmd(
        Command::new(util::FORKD)
            .args(["--listen", "127.0.0.1:0", "--workers", "1"])
            .env("NOTIFY_SOCKET", &path),
    );
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(msg.contains(&format!("MAINPID={}", proc.pid())), "{msg}");
    util::wait_ready(&proc);
}

/// Issue 10: restarting will not help when the pid-file directory cannot be written, so forkd
/// says so with exit code 100 (it was 111, "may pass", and a supervisor retried it forever).
#[test]
fn an_unwritable_pid_file_is_a_permanent_failure() {
    // /sys exists and refuses new files, even to root.
    let mut p = Proc::spawn(
        util::FORKD,
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--pid-file",
            "/sys/forkd-test.pid",
        ],
    );
    let st = p.wait_exit(Duration::from_secs(20));
    let line = p.wait_line("unable to write pid file", Duration::from_secs(1));
    assert_eq!(st.code(), Some(100), "{}", p.output().join("\n"));
    assert!(line.contains("restarting will not help"), "{line}");
}

#[test]
fn takes_a_listener_by_socket_activation() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        &format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 exec {} --workers 1 --listen {addr}",
            util::FORKD
        ),
    ]);
    // SAFETY: dup2 and fcntl are async-signal-safe; fd 3 is where the protocol puts the first socket.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep CLOEXEC: clear the flag instead.
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let proc = Proc::spawn_cmd(&mut cmd);
    assert_eq!(util::wait_ready(&proc), addr);
    drop(l);
    assert_eq!(get_once(addr, "/"), 200);
}

#[test]
fn children_drop_root_and_root_service_is_refused() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let server = Server::start(&["--workers", "1", "--user", "nobody"]);
    // A served request first: the worker may be listed in /proc before it has dropped its
    // privileges, but it only accepts after.
    assert_eq!(get_once(server.addr, "/"), 200);
    let w = workers_of(server.pid());
    let uid_line = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .to_string()
    };
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let fields: Vec<u32> = uid_line(w[0])
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec![nobody; 4],
        "worker uids (real, effective, saved, fs)"
    );

    let mut refused = Proc::spawn(util::FORKD, &["--listen", "127.0.0.1:0", "--user", "root"]);
    let status = refused.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(100));
    refused.wait_line("refusing to serve as root", Duration::from_secs(2));
}

#[test]
fn running_out_of_fds_pauses_accepting_without_spinning_or_stopping() {
    // Fork mode: the master accepts. Start it with so few fds that accept fails with EMFILE.
    let mut cmd = Command::new(util::FORKD);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--mode",
        "fork",
        "--max-children",
        "4",
    ]);
    let proc = Proc::spawn_cmd(&mut cmd);
    let addr = util::wait_ready(&proc);
    let pid = proc.pid();
    // The kernel hands out the lowest free fd number: a limit equal to it makes accept fail.
    let open: Vec<u64> = util::fds(pid)
        .iter()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    let lowest_free = (0..).find(|n| !open.contains(n)).unwrap();
    set_nofile(pid, lowest_free);
    let client = std::thread::spawn(move || get_once(addr, "/"));
    proc.wait_line("pausing accepts", Duration::from_secs(5));
    let cpu = |pid: i32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = s.rsplit_once(')').unwrap().1.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = cpu(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu(pid) - before;
    // A spinning master would use ~200 ticks in 2 s; pausing uses a handful.
    assert!(
        spent < 40,
        "master used {spent} clock ticks in 2 s while out of fds"
    );
    set_nofile(pid, 1024);
    assert_eq!(
        client.join().unwrap(),
        200,
        "the waiting client is served once fds are back"
    );
}

fn set_nofile(pid: i32, n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: 4096.max(n),
    };
    // SAFETY: prlimit only reads `lim` and writes nothing back (old limit pointer is null).
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn example_echo_daemon_reuses_the_template() {
    let exe = std::env::current_exe().unwrap();
    let echo = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/echo");
    // `cargo test` at the top builds the examples of every default member, this one included;
    // a narrower run (`cargo test --test integration`) may not have it yet. Building it here
    // always would resolve features for this package alone and rebuild half the dependencies.
    if !echo.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "forkd-daemon", "--example", "echo"])
            .status()
            .unwrap();
        assert!(ok.success(), "building the echo example failed");
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for mode in ["prefork", "fork"] {
        let mut proc = Proc::spawn(
            echo.to_str().unwrap(),
            &[&format!("127.0.0.1:{port}"), mode],
        );
        let addr = util::wait_ready(&proc);
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"hello\nworld\n").unwrap();
        let mut got = [0u8; 12];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello\nworld\n", "mode {mode}");
        // A quiet client does not hold up a graceful stop: the child sees the stop request
        // within its read tick, far inside the 5 s shutdown timeout that ends in SIGKILL.
        let started = Instant::now();
        proc.signal(Signal::SIGTERM);
        let status = proc.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "mode {mode}: {status:?}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "mode {mode}: a graceful stop with a quiet client took {:?}",
            started.elapsed()
        );
        drop(s);
        drop(proc);
        // Let the port go before the next mode binds it.
        eventually(Duration::from_secs(5), "port free", || {
            TcpListener::bind(addr).ok()
        });
    }
}

per_mode!(sigusr1_reopens_the_access_log_for_logrotate);
fn sigusr1_reopens_the_access_log_for_logrotate(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let server = mode.start(&["--access-log", log.to_str().unwrap()]);
    assert_eq!(get_once(server.addr, "/first"), 404);
    eventually(Duration::from_secs(5), "a line in the log", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.contains("/first"))
    });
    // What logrotate does: move the file away, then ask for a reopen.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    server.proc.signal(Signal::SIGUSR1);
    server
        .proc
        .wait_line("reopened logs", Duration::from_secs(5));
    // Old workers may answer until they are replaced; poll until a request lands in the new file.
    let text = eventually(Duration::from_secs(10), "a line in the new log", || {
        get_once(server.addr, "/second");
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.contains("/second"))
    });
    for line in text.lines() {
        // Combined Log Format: host ident user [date] "request" status bytes "referer" "agent"
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(line.contains("\"GET /second HTTP/1.1\" 404 "), "{line}");
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("/first"));
}

/// The value of one sample line of a Prometheus text file.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn limit_hits_are_counted_on_the_scoreboard_and_published() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("forkd.prom");
    let server = Server::start(&[
        "--workers",
        "2",
        "--header-timeout",
        "0.3",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    for _ in 0..5 {
        assert_eq!(get_once(server.addr, "/"), 200);
    }
    // A malformed request (400) and a client that never sends its head (header timeout).
    assert_eq!(
        util::status_of(&server.raw(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")),
        400
    );
    let mut idle = server.connect();
    let mut sink = Vec::new();
    let _ = idle.read_to_end(&mut sink);
    let text = eventually(
        Duration::from_secs(10),
        "counters in the metrics file",
        || {
            let t = std::fs::read_to_string(&metrics).ok()?;
            let ok = metric(&t, "forkd_limit_hits_total{limit=\"bad_request\"}")? >= 1
                && metric(&t, "forkd_limit_hits_total{limit=\"header_timeout\"}")? >= 1
                && metric(&t, "forkd_requests_total")? >= 5;
            ok.then_some(t)
        },
    );
    assert_eq!(
        metric(&text, "forkd_limit_hits_total{limit=\"children_bound\"}"),
        Some(0)
    );
    assert_eq!(
        metric(&text, "forkd_children{state=\"idle\"}"),
        Some(2),
        "{text}"
    );
    assert!(text.contains("# TYPE forkd_limit_hits_total counter"));
}

#[test]
fn workers_die_with_a_killed_master_even_after_dropping_privileges() {
    // The kernel clears the parent-death signal on a credential change, so a worker that set it
    // before dropping to `nobody` would outlive its master and serve on, unsupervised.
    let server = Server::start(&["--workers", "2"]);
    let workers = workers_of(server.pid());
    assert_eq!(workers.len(), 2);
    server.proc.signal(Signal::SIGKILL);
    eventually(
        Duration::from_secs(5),
        "workers gone with their master",
        || {
            workers
                .iter()
                .all(|w| matches!(util::state(*w), None | Some('Z')))
                .then_some(())
        },
    );
}

#[test]
fn sigterm_while_workers_start_is_not_lost() {
    // A TERM that reached a worker between fork and its own handlers used to be swallowed by
    // the master's inherited handler; the worker then sat in accept until the drain timeout.
    // The TERM is sent as soon as the master takes it (blocks it to read it from its signalfd,
    // SigBlk), which is just before it forks its workers.
    let catches_term = |pid: i32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let mask = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))?
            .trim()
            .to_string();
        let bits = u64::from_str_radix(&mask, 16).ok()?;
        (bits & (1 << (libc::SIGTERM - 1)) != 0).then_some(())
    };
    // Busy threads on every core widen the window between a worker's fork and its handlers,
    // as a loaded machine does.
    let busy = Arc::new(AtomicBool::new(true));
    let burners: Vec<_> = (0..3)
        .map(|_| {
            let busy = busy.clone();
            std::thread::spawn(move || {
                while busy.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    for delay_ms in [0u64, 0, 0, 1, 1, 1, 2, 2, 3, 5] {
        let mut proc = Proc::spawn(
            util::FORKD,
            &[
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "16",
                "--shutdown-timeout",
                "30s",
            ],
        );
        let pid = proc.pid();
        eventually(Duration::from_secs(10), "the master catching TERM", || {
            catches_term(pid)
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        // To the whole process group, as systemd's KillMode=control-group or a terminal does:
        // workers get it directly, some of them while they are being forked.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(-pid), Signal::SIGTERM).unwrap();
        let started = Instant::now();
        let status = proc.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(0), "delay {delay_ms} ms");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "TERM {delay_ms} ms after start took {:?} (the drain timeout is 30 s)",
            started.elapsed()
        );
    }
    busy.store(false, Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
}

#[test]
fn log_level_comes_from_the_file_and_a_change_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("forkd.toml");
    std::fs::write(&conf, "[server]\nworkers = 1\nlog-level = \"debug\"\n").unwrap();
    let server = Server::start(&["--config", conf.to_str().unwrap()]);
    // Worker recycling is logged at debug level only.
    server.proc.signal(Signal::SIGHUP);
    server.proc.wait_line("DEBUG", Duration::from_secs(5));
    std::fs::write(&conf, "[server]\nworkers = 1\nlog-level = \"warn\"\n").unwrap();
    server.proc.signal(Signal::SIGHUP);
    server
        .proc
        .wait_line("log-level cannot change on reload", Duration::from_secs(5));
}

#[test]
fn serves_ipv4_and_ipv6_listeners_at_once() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let server = Server::start(&[
        "--workers",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "[::1]:0",
    ]);
    let line = server.proc.wait_line("ready on", Duration::from_secs(5));
    let v6: SocketAddr = line
        .split("http://")
        .nth(2)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no second address in {line:?}"));
    assert!(v6.is_ipv6(), "{line}");
    assert_eq!(get_once(server.addr, "/"), 200);
    assert_eq!(get_once(v6, "/"), 200);
}
