//! Tests of forkd-supervisor against real processes: forkd itself, `/bin/sh` children that
//! exit or ignore TERM, and children built into this test binary (a server that leaks an fd per
//! request, one that speaks the notify protocol) so nothing but Rust is needed. Every test
//! uses loopback ports, bounds its waits, and ends every process it caused (checked).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{self, eventually, Proc, SUPERVISOR};

/// A port that was free a moment ago (the child binds it itself).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// forkd on `port`, as the supervised command.
fn forkd_on(port: u16) -> Vec<String> {
    vec![
        util::FORKD.to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ]
}

/// `GET /` with a short timeout; the status code, or None if nothing answered.
fn get(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    match util::status_of(&buf) {
        0 => None,
        n => Some(n),
    }
}

fn status(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The supervised child's pid, from the supervisor's children.
fn child_of(sup: &Proc) -> i32 {
    eventually(Duration::from_secs(10), "a child of the supervisor", || {
        util::children(sup.pid()).first().copied()
    })
}

fn spawn_supervisor(flags: &[&str], command: &[String]) -> Proc {
    let mut args: Vec<&str> = flags.to_vec();
    args.push("--");
    args.extend(command.iter().map(String::as_str));
    Proc::spawn(SUPERVISOR, &args)
}

/// Stops the supervisor with TERM and checks it leaves nothing behind.
fn stop_cleanly(mut sup: Proc) {
    let tree = util::descendants(sup.pid());
    sup.signal(Signal::SIGTERM);
    let st = sup.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "{}", sup.output().join("\n"));
    for p in tree {
        assert!(
            util::state(p).is_none(),
            "process {p} outlived the supervisor"
        );
    }
}

#[test]
fn kill_9_of_forkd_is_served_again_within_a_second() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let sup = spawn_supervisor(
        // A child that served for a second counts as stable, so every kill below measures a
        // first restart (base delay), not a backoff grown by the previous rounds.
        &[
            "--health-url",
            &url,
            "--health-interval",
            "1s",
            "--stable-after",
            "1s",
        ],
        &forkd_on(port),
    );
    sup.wait_line("ready after", Duration::from_secs(20));
    let first = child_of(&sup);
    assert_eq!(get(port), Some(200));

    let mut latencies = Vec::new();
    for round in 0..3 {
        let old = child_of(&sup);
        let starts = |sup: &Proc| {
            sup.output()
                .iter()
                .filter(|l| l.contains("started child"))
                .count()
        };
        let before = starts(&sup);
        let t0 = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), Signal::SIGKILL).unwrap();
        // Not "a child other than the old one": forkd's orphaned workers become the
        // supervisor's children until it kills them. A new start, then an answer.
        eventually(Duration::from_secs(3), "forkd serving again", || {
            (starts(&sup) > before && get(port) == Some(200)).then_some(())
        });
        let took = t0.elapsed();
        latencies.push(took);
        assert!(
            took < Duration::from_millis(1500),
            "round {round}: {took:?}"
        );
        sup.wait_line(&format!("restart {} in", round + 1), Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(1100));
    }
    eprintln!("restart latency after kill -9: {latencies:?}");
    assert_ne!(child_of(&sup), first);
    assert!(util::zombies(sup.pid()).is_empty());
    stop_cleanly(sup);
}

/// The restart delays the supervisor announced, in milliseconds.
fn delays(out: &[String]) -> Vec<f64> {
    out.iter()
        .filter_map(|l| {
            let rest = l.split(" in ").nth(1)?;
            let d = rest.split(' ').next()?;
            if !l.contains("forkd-supervisor: restart ") {
                return None;
            }
            if let Some(ms) = d.strip_suffix("ms") {
                ms.parse().ok()
            } else {
                d.strip_suffix('s')?.parse::<f64>().ok().map(|s| s * 1000.0)
            }
        })
        .collect()
}

#[test]
fn a_child_that_exits_at_once_backs_off_until_the_budget_ends_it() {
    let mut sup = spawn_supervisor(
        &["--max-restarts", "5", "--restart-window", "60s"],
        &["/bin/sh".into(), "-c".into(), "exit 1".into()],
    );
    let st = sup.wait_exit(Duration::from_secs(20));
    // The last line first: once it is in, every earlier line of stderr is too.
    let giving_up = sup.wait_line("giving up", Duration::from_secs(5));
    let out = sup.output();
    assert_eq!(st.code(), Some(111), "{}", out.join("\n"));
    assert!(
        giving_up.contains("5 restarts within 60s") && giving_up.contains("exited with code 1"),
        "{giving_up}"
    );
    let seen = delays(&out);
    eprintln!("backoff sequence seen (ms): {seen:?}");
    assert_eq!(seen.len(), 5, "{}", out.join("\n"));
    // 100 ms doubling, ±20 % jitter: each delay at least 4/3 of the one before.
    for (i, w) in seen.windows(2).enumerate() {
        assert!(w[1] >= w[0] * 1.3, "delay {i}: {seen:?}");
    }
    assert!(seen[0] >= 80.0 && seen[0] <= 120.0, "{seen:?}");
    let starts = out.iter().filter(|l| l.contains("started child")).count();
    assert_eq!(starts, 6);
}

#[test]
fn exit_code_100_is_never_restarted() {
    let mut sup = spawn_supervisor(&[], &["/bin/sh".into(), "-c".into(), "exit 100".into()]);
    let st = sup.wait_exit(Duration::from_secs(10));
    sup.wait_line("permanent failure", Duration::from_secs(5));
    let out = sup.output();
    assert_eq!(st.code(), Some(100), "{}", out.join("\n"));
    assert_eq!(
        out.iter().filter(|l| l.contains("started child")).count(),
        1
    );
}

/// The seed server's fd leak: an HTTP server that keeps one `/dev/null` open per request.
fn leaky_on(port: u16) -> Vec<String> {
    test_child(&format!("leaky {port}"))
}

/// Sends requests until `stop` says so, counting those answered.
fn load_until(port: u16, deadline: Duration, mut stop: impl FnMut() -> bool) -> usize {
    let end = Instant::now() + deadline;
    let mut ok = 0;
    while Instant::now() < end && !stop() {
        if get(port) == Some(200) {
            ok += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ok
}

#[test]
fn a_leaking_child_is_recycled_at_the_fd_level_limit() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let status_file = dir.path().join("status.json");
    let url = format!("http://127.0.0.1:{port}/");
    let sup = spawn_supervisor(
        &[
            "--health-url",
            &url,
            "--limit",
            "fds=40",
            "--sample-interval",
            "100ms",
            "--status-file",
            status_file.to_str().unwrap(),
        ],
        &leaky_on(port),
    );
    sup.wait_line("ready after", Duration::from_secs(20));
    let first = child_of(&sup);
    let recycled = || sup.output().iter().any(|l| l.contains("recycling child"));
    let sent = load_until(port, Duration::from_secs(20), recycled);
    let line = sup.wait_line("recycling child", Duration::from_secs(5));
    assert!(
        line.contains("fds is") && line.contains("(limit 40)"),
        "{line}"
    );
    eprintln!("recycled after {sent} leaking requests: {line}");
    sup.wait_line("restart 1 in", Duration::from_secs(10));
    eventually(Duration::from_secs(10), "a fresh child serving", || {
        let c = util::children(sup.pid());
        (c.first().is_some_and(|p| *p != first) && get(port) == Some(200)).then_some(())
    });
    let st = eventually(Duration::from_secs(5), "the status file", || {
        status(&status_file).filter(|s| s["restarts_total"] == 1)
    });
    let reason = st["recent_restarts"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("recycled: fds is"), "{reason}");
    assert!(st["failcnt"]["fds"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["maxheld"]["fds"].as_u64().unwrap() > 40, "{st}");
    stop_cleanly(sup);
}

#[test]
fn a_leaking_child_is_recycled_on_growth_before_any_level_is_reached() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    // About 50 requests a second leak about 3,000 fds a minute; the slope limit is 600.
    let sup = spawn_supervisor(
        &[
            "--health-url",
            &url,
            "--slope",
            "fds=600",
            "--slope-window",
            "2s",
            "--sample-interval",
            "100ms",
            "--limit",
            "fds=100000",
        ],
        &leaky_on(port),
    );
    sup.wait_line("ready after", Duration::from_secs(20));
    let recycled = || sup.output().iter().any(|l| l.contains("recycling child"));
    load_until(port, Duration::from_secs(20), recycled);
    let line = sup.wait_line("recycling child", Duration::from_secs(5));
    assert!(
        line.contains("fds grew") && line.contains("a minute"),
        "{line}"
    );
    eprintln!("{line}");
    stop_cleanly(sup);
}

/// The lowest fd number `pid` does not use: a soft RLIMIT_NOFILE equal to it leaves the
/// process no fd to open. A probe socket open at the moment of one look would hide a slot, so
/// the lowest over many looks is taken.
fn lowest_free_fd(pid: i32) -> u64 {
    (0..50)
        .map(|_| {
            let used: Vec<u64> = util::fds(pid)
                .iter()
                .filter_map(|l| l.split(" -> ").next()?.parse().ok())
                .collect();
            std::thread::sleep(Duration::from_millis(10));
            (0..).find(|n| !used.contains(n)).unwrap()
        })
        .min()
        .unwrap()
}

fn set_nofile(pid: i32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads `new` (here none) and writes `old`, a valid stack value of the
    // right type.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "read RLIMIT_NOFILE of {pid}");
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid stack value of the right type; nothing is written.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "set RLIMIT_NOFILE of {pid}");
}

/// Incident 001: a supervisor that cannot open a socket must not conclude that the child hung.
#[test]
fn a_supervisor_out_of_fds_does_not_restart_a_healthy_child() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let status_file = dir.path().join("status.json");
    let url = format!("http://127.0.0.1:{port}/");
    let sup = spawn_supervisor(
        &[
            "--health-url",
            &url,
            "--health-interval",
            "200ms",
            "--health-timeout",
            "2s",
            "--health-threshold",
            "2",
            "--sample-interval",
            "200ms",
            "--status-file",
            status_file.to_str().unwrap(),
        ],
        &forkd_on(port),
    );
    sup.wait_line("ready after", Duration::from_secs(20));
    let child = child_of(&sup);
    eventually(Duration::from_secs(5), "a healthy probe", || {
        status(&status_file).filter(|s| s["health_last"].as_str() == Some("ok (HTTP 200)"))
    });

    // A probe that is slow under load holds its socket through every look, and the limit then
    // leaves that slot free: try again until the supervisor reports it cannot observe.
    let line = eventually(Duration::from_secs(20), "cannot observe", || {
        set_nofile(sup.pid(), lowest_free_fd(sup.pid()));
        let end = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < end {
            let out = sup.output();
            if let Some(l) = out.iter().find(|l| l.contains("cannot observe the child:")) {
                return Some(l.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    });
    assert!(line.contains("not counted against it"), "{line}");
    // Twenty probe intervals with the fd table full: the healthy child stays.
    std::thread::sleep(Duration::from_secs(4));
    let out = sup.output();
    assert_eq!(util::children(sup.pid()), vec![child], "{}", out.join("\n"));
    assert!(
        !out.iter()
            .any(|l| l.contains("recycling") || l.contains("health probe failed")),
        "{}",
        out.join("\n")
    );
    assert_eq!(get(port), Some(200), "the child kept serving");
    // The status file is still written (the reserve fds) and says why.
    let st = eventually(
        Duration::from_secs(5),
        "a status that cannot observe",
        || status(&status_file).filter(|s| s["observing"] == false),
    );
    assert!(
        st["cannot_observe_reason"]
            .as_str()
            .unwrap()
            .contains("Too many open files"),
        "{st}"
    );
    assert!(
        st["counters"]["cannot_observe"].as_u64().unwrap() >= 10,
        "{st}"
    );
    assert_eq!(st["restarts_total"], 0);

    set_nofile(sup.pid(), 1024);
    sup.wait_line("observing the child again", Duration::from_secs(5));
    stop_cleanly(sup);
}

#[test]
fn term_stops_forkd_gracefully_and_leaves_nothing() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let mut forkd = forkd_on(port);
    forkd.extend(["--workers".into(), "4".into()]);
    let mut sup = spawn_supervisor(&["--health-url", &url], &forkd);
    sup.wait_line("ready after", Duration::from_secs(20));
    // forkd in its steady state, every worker started: a TERM that reaches a worker between
    // its fork and its own signal setup is lost (a forkd race, reported), which is not what
    // this test is about.
    let tree = eventually(Duration::from_secs(10), "forkd and its 4 workers", || {
        let d = util::descendants(sup.pid());
        (d.len() == 5 && get(port) == Some(200)).then_some(d)
    });
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    sup.signal(Signal::SIGTERM);
    let st = sup.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "{}", sup.output().join("\n"));
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "{took:?}\n{}",
        sup.output().join("\n")
    );
    let out = sup.output();
    assert!(
        !out.iter().any(|l| l.contains("killing process group")),
        "forkd needed SIGKILL: {}",
        out.join("\n")
    );
    for p in tree {
        assert!(
            util::state(p).is_none(),
            "process {p} outlived the supervisor"
        );
    }
}

#[test]
fn a_child_that_ignores_term_is_killed_after_the_timeout() {
    // The shell ignores TERM, keeps a sleeper in its group, and starts one that escapes into a
    // session of its own: the group kill gets the first two, the final sweep the third.
    let script = "trap '' TERM; setsid sleep 1000 & sleep 1000 & echo started; wait";
    let mut sup = spawn_supervisor(
        &["--readiness", "none", "--stop-timeout", "1s"],
        &["/bin/sh".into(), "-c".into(), script.into()],
    );
    sup.wait_line("started", Duration::from_secs(10));
    let tree = eventually(Duration::from_secs(5), "three descendants", || {
        let d = util::descendants(sup.pid());
        (d.len() >= 3).then_some(d)
    });
    let t0 = Instant::now();
    sup.signal(Signal::SIGTERM);
    let st = sup.wait_exit(Duration::from_secs(10));
    let took = t0.elapsed();
    assert_eq!(st.code(), Some(0), "{}", sup.output().join("\n"));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    sup.wait_line(
        "did not exit in time; killing process group",
        Duration::from_secs(1),
    );
    for p in tree {
        assert!(
            util::state(p).is_none(),
            "process {p} outlived the supervisor"
        );
    }
}

/// The fd table between two spawns. While std spawns a child the parent briefly holds a
/// socketpair for exec errors; the smallest of many looks is the table without it.
fn idle_fds(pid: i32) -> Vec<String> {
    (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(2));
            util::fds(pid)
        })
        .min_by_key(Vec::len)
        .unwrap()
}

#[test]
fn a_thousand_restarts_leave_the_supervisor_flat() {
    let mut sup = spawn_supervisor(
        &[
            "--readiness",
            "none",
            "--backoff-base",
            "1ms",
            "--backoff-cap",
            "1ms",
            "--max-restarts",
            "0",
        ],
        &["/bin/true".into()],
    );
    let pid = sup.pid();
    sup.wait_line("restart 20 in", Duration::from_secs(20));
    let fds_before = idle_fds(pid);
    let rss_before = util::status_kb(pid, "VmRSS").unwrap();
    let t0 = Instant::now();
    sup.wait_line("restart 1020 in", Duration::from_secs(60));
    let took = t0.elapsed();
    let fds_after = idle_fds(pid);
    assert_eq!(fds_before, fds_after);
    let rss_after = util::status_kb(pid, "VmRSS").unwrap();
    eprintln!(
        "1,000 restarts in {took:?}: {} fds before and after; VmRSS {rss_before} kB -> {rss_after} kB",
        fds_after.len()
    );
    assert!(
        rss_after <= rss_before + 256,
        "RSS grew from {rss_before} kB to {rss_after} kB"
    );
    // A child that just ended is a zombie until the next SIGCHLD is handled; a zombie seen
    // twice, 200 ms apart, while children end every few milliseconds, is one that was missed.
    let first = util::zombies(pid);
    std::thread::sleep(Duration::from_millis(200));
    let stuck: Vec<i32> = util::zombies(pid)
        .into_iter()
        .filter(|z| first.contains(z))
        .collect();
    assert!(stuck.is_empty(), "zombies not reaped: {stuck:?}");
    sup.signal(Signal::SIGTERM);
    assert_eq!(sup.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn status_command_and_metrics_describe_the_child() {
    let port = free_port();
    let metrics_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let status_file = dir.path().join("status.json");
    let url = format!("http://127.0.0.1:{port}/");
    let metrics = format!("127.0.0.1:{metrics_port}");
    let sup = spawn_supervisor(
        &[
            "--health-url",
            &url,
            "--limit",
            "fds=1000",
            "--limit",
            "established=500",
            "--status-file",
            status_file.to_str().unwrap(),
            "--metrics-listen",
            &metrics,
        ],
        &forkd_on(port),
    );
    sup.wait_line("ready after", Duration::from_secs(20));
    let child = child_of(&sup);
    eventually(Duration::from_secs(5), "a status with samples", || {
        status(&status_file).filter(|s| s["state"] == "running" && s["sample"]["fds"].is_u64())
    });
    let out = std::process::Command::new(SUPERVISOR)
        .args(["status", "--status-file", status_file.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("child       pid {child}")), "{text}");
    assert!(text.contains("fds<=1000 failcnt 0"), "{text}");

    let mut s = TcpStream::connect(&metrics).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("forkd_supervisor_child_up 1\n"), "{body}");
    assert!(
        body.contains("forkd_supervisor_resource{resource=\"fds\"}"),
        "{body}"
    );
    assert!(
        body.contains("forkd_supervisor_limit_failcnt_total{limit=\"established\"} 0"),
        "{body}"
    );
    stop_cleanly(sup);
}

#[test]
fn the_child_starts_clean() {
    // fd 7 is open without CLOEXEC in the supervisor (as an fd inherited from a careless parent
    // would be); SIGPIPE is ignored in the supervisor itself. The child must see neither.
    let script = "grep -E '^(SigIgn|SigBlk)' /proc/self/status; ls /proc/self/fd | tr '\\n' ' '; \
                  echo; echo \"notify=$NOTIFY_SOCKET pgid=$(cut -d' ' -f5 /proc/$$/stat) pid=$$\"; exit 100";
    let sup_cmd = format!("exec 7</dev/null; exec {SUPERVISOR} \"$@\"");
    let mut sup = Proc::spawn_cmd(
        std::process::Command::new("/bin/sh")
            .args([
                "-c",
                &sup_cmd,
                "sh",
                "--readiness",
                "none",
                "--",
                "/bin/sh",
                "-c",
            ])
            .arg(script),
    );
    assert_eq!(sup.wait_exit(Duration::from_secs(10)).code(), Some(100));
    let out = sup.output();
    let text = out.join("\n");
    assert!(text.contains("SigIgn:\t0000000000000000"), "{text}");
    assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
    // ls sees 0-2 and its own directory fd.
    let fd_line = sup.wait_line("0 1 2 ", Duration::from_secs(1));
    assert_eq!(fd_line.trim(), "0 1 2 3", "{text}");
    let ids = sup.wait_line("notify=@forkd-supervisor/", Duration::from_secs(1));
    let pgid = ids
        .split("pgid=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let pid = ids.split("pid=").nth(1).unwrap().trim();
    assert_eq!(pgid, pid, "the child leads its own process group: {ids}");
}

#[test]
fn health_failures_before_readiness_do_not_count() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");

    let sup = spawn_supervisor(
        &[
            "--health-url",
            &url,
            "--health-interval",
            "100ms",
            "--health-threshold",
            "1",
        ],
        &test_child(&format!("slow {port}")),
    );
    let line = sup.wait_line("ready after", Duration::from_secs(20));
    let ms: f64 = {
        let d = line.rsplit(' ').next().unwrap();
        match d.strip_suffix("ms") {
            Some(ms) => ms.parse().unwrap(),
            None => d.trim_end_matches('s').parse::<f64>().unwrap() * 1000.0,
        }
    };
    assert!(ms >= 1400.0, "{line}");
    std::thread::sleep(Duration::from_millis(500));
    let out = sup.output();
    assert!(
        !out.iter()
            .any(|l| l.contains("restart") || l.contains("recycling")),
        "{}",
        out.join("\n")
    );
    stop_cleanly(sup);
}

#[test]
fn notify_readiness_and_a_missed_watchdog() {
    let sup = spawn_supervisor(
        &["--readiness", "notify", "--watchdog", "500ms"],
        &test_child("quiet-watchdog"),
    );
    sup.wait_line("WATCHDOG_USEC=500000", Duration::from_secs(10));
    sup.wait_line("ready after", Duration::from_secs(10));
    let line = sup.wait_line("recycling child", Duration::from_secs(5));
    assert!(line.contains("no WATCHDOG=1 within 500ms"), "{line}");
    sup.wait_line("restart 1 in", Duration::from_secs(5));
    stop_cleanly(sup);
}

#[test]
fn recycle_by_hup_keeps_the_child() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let sup = spawn_supervisor(
        &[
            "--health-url",
            &url,
            "--limit",
            "fds=30",
            "--recycle",
            "hup",
            "--sample-interval",
            "100ms",
        ],
        &test_child(&format!("leaky-hup {port}")),
    );
    sup.wait_line("ready after", Duration::from_secs(20));
    let child = child_of(&sup);
    let reloaded = || sup.output().iter().any(|l| l.contains("fds freed: "));
    load_until(port, Duration::from_secs(20), reloaded);
    let line = sup.wait_line("recycling child", Duration::from_secs(5));
    assert!(line.contains("with SIGHUP: fds is"), "{line}");
    assert_eq!(child_of(&sup), child, "a HUP recycle keeps the process");
    assert!(util::fds(child).len() < 30);
    stop_cleanly(sup);
}

/// A child process for these tests, run by re-executing this test binary, so that nothing but
/// Rust is needed on a pristine machine. `spec` names the child and its arguments.
fn test_child(spec: &str) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    vec![
        "/usr/bin/env".into(),
        format!("SUPERVISOR_TEST_CHILD={spec}"),
        exe.to_str().unwrap().into(),
        "--exact".into(),
        "supervisor::child_process".into(),
        "--ignored".into(),
        "--nocapture".into(),
    ]
}

/// The body of every [`test_child`]; without `SUPERVISOR_TEST_CHILD` it does nothing.
#[test]
#[ignore = "a child process of the other tests, started by re-executing this binary"]
fn child_process() {
    let Ok(spec) = std::env::var("SUPERVISOR_TEST_CHILD") else {
        return;
    };
    let words: Vec<&str> = spec.split_whitespace().collect();
    match words.as_slice() {
        ["leaky", port] => leaky_server(port.parse().unwrap(), false),
        ["leaky-hup", port] => leaky_server(port.parse().unwrap(), true),
        ["slow", port] => {
            // Readiness comes late: the port opens after a second and a half.
            std::thread::sleep(Duration::from_millis(1500));
            leaky_server(port.parse().unwrap(), false)
        }
        ["quiet-watchdog"] => quiet_watchdog(),
        other => panic!("unknown test child {other:?}"),
    }
}

static HUP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_hup(_: libc::c_int) {
    HUP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Answers every request with 200 and keeps a `/dev/null` open for each; with `free_on_hup`,
/// SIGHUP closes them all, as forkd's reload replaces its leaking workers.
fn leaky_server(port: u16, free_on_hup: bool) -> ! {
    use nix::sys::signal::{signal, SigHandler};
    if free_on_hup {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal(Signal::SIGHUP, SigHandler::Handler(on_hup)) }.unwrap();
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut leaked = Vec::new();
    loop {
        if HUP.swap(false, std::sync::atomic::Ordering::Relaxed) {
            println!("fds freed: {}", leaked.len());
            leaked.clear();
        }
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                leaked.push(std::fs::File::open("/dev/null").unwrap());
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Speaks the notify protocol itself: READY=1, three WATCHDOG=1 a tenth of a second apart,
/// then silence, so the supervisor's watchdog must fire.
fn quiet_watchdog() {
    use std::os::linux::net::SocketAddrExt;
    let name = std::env::var("NOTIFY_SOCKET").unwrap();
    let name = name.strip_prefix('@').expect("an abstract notify socket");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    println!(
        "WATCHDOG_USEC={}",
        std::env::var("WATCHDOG_USEC").unwrap_or_default()
    );
    let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
    s.send_to_addr(b"READY=1\nSTATUS=pretending", &addr)
        .unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(100));
        s.send_to_addr(b"WATCHDOG=1", &addr).unwrap();
    }
    std::thread::sleep(Duration::from_secs(100));
}
