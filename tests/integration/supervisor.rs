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
    assert_all_dead(&tree);
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
        &["--max-restarts", "5"],
        &["/bin/sh".into(), "-c".into(), "exit 1".into()],
    );
    let st = sup.wait_exit(Duration::from_secs(20));
    // The last line first: once it is in, every earlier line of stderr is too.
    let giving_up = sup.wait_line("giving up", Duration::from_secs(5));
    let out = sup.output();
    assert_eq!(st.code(), Some(111), "{}", out.join("\n"));
    assert!(
        giving_up.contains("5 failed starts in a row") && giving_up.contains("exited with code 1"),
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
    let metrics = format!("127.0.0.1:{}", free_port());
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
            "--metrics-listen",
            &metrics,
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
    // The scrape that matters most is answered through the fd reserve.
    let body = scrape(&metrics).expect("a scrape answered with the fd table full");
    assert!(body.contains("forkd_supervisor_observing 0\n"), "{body}");

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
    // forkd's STOPPING=1 is read before its exit is reaped: no stranger to warn about.
    assert!(
        !out.iter().any(|l| l.contains("ignored a notify message")),
        "{}",
        out.join("\n")
    );
    assert_all_dead(&tree);
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
    assert_all_dead(&tree);
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

    // Issue 10, fix 9: the memory of that SIGHUP dies with the child. A fresh child that
    // reaches the limit is recycled with SIGHUP too, not restarted at its first hit for a
    // SIGHUP it never had.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), Signal::SIGKILL).unwrap();
    sup.wait_line("restart 1 in", Duration::from_secs(5));
    eventually(Duration::from_secs(20), "the second child ready", || {
        (sup.output()
            .iter()
            .filter(|l| l.contains("ready after"))
            .count()
            == 2)
            .then_some(())
    });
    let recycles = |sup: &Proc| {
        sup.output()
            .iter()
            .filter(|l| l.contains("recycling child"))
            .cloned()
            .collect::<Vec<_>>()
    };
    load_until(port, Duration::from_secs(20), || recycles(&sup).len() >= 2);
    let second = recycles(&sup)[1].clone();
    assert!(second.contains("with SIGHUP: fds is"), "{second}");
    assert_never(&sup, "SIGHUP did not help");
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
        ["late", ms, port] => {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
            leaky_server(port.parse().unwrap(), false)
        }

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

/// One scrape of the metrics endpoint, with a deadline; the whole answer.
fn scrape(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.1 200 OK").then_some(body)
}

fn starts(sup: &Proc) -> usize {
    sup.output()
        .iter()
        .filter(|l| l.contains("started child"))
        .count()
}

/// A supervisor waiting for a child that listens on a fresh port after `after_ms`, with
/// readiness by port and the given ready timeout; returned once the child has started.
fn late_listener(after_ms: u64, ready_timeout: &str) -> Proc {
    let port = free_port().to_string();
    let sup = spawn_supervisor(
        &[
            "--readiness",
            "port",
            "--port",
            &port,
            "--ready-timeout",
            ready_timeout,
        ],
        &test_child(&format!("late {after_ms} {port}")),
    );
    sup.wait_line("started child", Duration::from_secs(10));
    sup
}

/// Fails, with the whole output, if `sup` printed a line containing `needle`.
fn assert_never(sup: &Proc, needle: &str) {
    let out = sup.output();
    assert!(
        !out.iter().any(|l| l.contains(needle)),
        "{needle:?} was printed:\n{}",
        out.join("\n")
    );
}

/// Issue 10, fix 1 (incident 001 in the Starting state): a ready timeout measured while the
/// supervisor cannot observe is not evidence. The child opens its port after 5 s, the ready
/// timeout is 2 s, and the supervisor is out of fds from the start until after 6 s: the child
/// is not recycled, and is found ready once the supervisor can look again.
#[test]
fn the_ready_timeout_stops_while_the_supervisor_cannot_observe() {
    let sup = late_listener(5000, "2s");
    let line = eventually(Duration::from_secs(10), "cannot observe", || {
        set_nofile(sup.pid(), lowest_free_fd(sup.pid()));
        std::thread::sleep(Duration::from_millis(200));
        sup.output()
            .iter()
            .find(|l| l.contains("ready timeout suspended"))
            .cloned()
    });
    eprintln!("{line}");
    std::thread::sleep(Duration::from_secs(6));
    assert_never(&sup, "not ready within");
    set_nofile(sup.pid(), 1024);
    sup.wait_line("ready timeout resumed", Duration::from_secs(5));
    sup.wait_line("ready after", Duration::from_secs(5));
    assert_eq!(starts(&sup), 1, "{}", sup.output().join("\n"));
    stop_cleanly(sup);
}

/// Issue 10, fix 1: a supervisor that was not running (SIGSTOP) does not count the time it
/// missed against the child's readiness. The child listens after 1 s, the ready timeout is
/// 2 s, and the supervisor is stopped from 0.3 s to 3.3 s: on waking, the deadline has passed
/// while it saw nothing, so it is moved back by the stall and the next probe finds the port.
#[test]
fn a_stalled_supervisor_extends_the_ready_timeout() {
    let sup = late_listener(1000, "2s");
    std::thread::sleep(Duration::from_millis(300));
    sup.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(3));
    sup.signal(Signal::SIGCONT);
    let line = sup.wait_line("did not run for", Duration::from_secs(5));
    assert!(line.contains("ready timeout extended"), "{line}");
    sup.wait_line("ready after", Duration::from_secs(5));
    assert_never(&sup, "not ready within");
    stop_cleanly(sup);
}

/// Issue 10, fixes 2 and 5: with the default budget, a forkd that can never start (its port
/// is held by a stray process; it exits 111 each time) is given up on after 10 failed starts
/// in a row, however the backoff spaces them, and the status file says how it ended.
#[test]
fn a_child_that_can_never_start_spends_the_budget_and_the_status_says_so() {
    let stray = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stray.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let status_file = dir.path().join("status.json");
    let mut sup = spawn_supervisor(
        // Short delays so the test is quick; the budget is the default one.
        &[
            "--backoff-base",
            "10ms",
            "--backoff-cap",
            "50ms",
            "--status-file",
            status_file.to_str().unwrap(),
        ],
        &forkd_on(port),
    );
    let st = sup.wait_exit(Duration::from_secs(60));
    let line = sup.wait_line("giving up", Duration::from_secs(5));
    assert_eq!(st.code(), Some(111), "{}", sup.output().join("\n"));
    assert!(line.contains("10 failed starts in a row"), "{line}");
    assert!(line.contains("exited with code 111"), "{line}");
    assert_eq!(starts(&sup), 11);
    let st = status(&status_file).unwrap();
    assert_eq!(st["state"], "exited", "{st}");
    assert_eq!(st["exit_code"], 111, "{st}");
    assert!(
        st["exit_reason"]
            .as_str()
            .unwrap()
            .contains("10 failed starts in a row"),
        "{st}"
    );
    assert!(st["child_pid"].is_null() && st["ready"] == false, "{st}");
    assert!(st["next_start_in_s"].is_null(), "{st}");
    drop(stray);
}

/// Issue 10, fix 5: after a permanent failure and after TERM, the status file says so, with
/// nothing stale about a child that no longer runs.
#[test]
fn the_status_file_states_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let status_file = dir.path().join("status.json");
    let sf = status_file.to_str().unwrap();
    let mut sup = spawn_supervisor(
        &["--status-file", sf],
        &["/bin/sh".into(), "-c".into(), "exit 100".into()],
    );
    assert_eq!(sup.wait_exit(Duration::from_secs(10)).code(), Some(100));
    let st = status(&status_file).unwrap();
    assert_eq!(
        (&st["state"], &st["exit_code"]),
        (&"exited".into(), &100.into()),
        "{st}"
    );
    assert!(
        st["exit_reason"]
            .as_str()
            .unwrap()
            .contains("permanent failure"),
        "{st}"
    );

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let mut sup = spawn_supervisor(
        &[
            "--health-url",
            &url,
            "--health-interval",
            "100ms",
            "--status-file",
            sf,
        ],
        &forkd_on(port),
    );
    sup.wait_line("ready after", Duration::from_secs(20));
    eventually(Duration::from_secs(5), "a healthy status", || {
        status(&status_file)
            .filter(|s| s["health_last"] == "ok (HTTP 200)" && s["child_status"].is_string())
    });
    sup.signal(Signal::SIGTERM);
    assert_eq!(sup.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let st = status(&status_file).unwrap();
    assert_eq!(
        (&st["state"], &st["exit_code"]),
        (&"exited".into(), &0.into()),
        "{st}"
    );
    assert_eq!(st["exit_reason"], "stopped", "{st}");
    for stale in ["child_pid", "child_status", "health_last"] {
        assert!(st[stale].is_null(), "{stale}: {st}");
    }
    assert_eq!(st["ready"], false, "{st}");
}

/// Issue 10, fix 4: idle connections to the metrics endpoint cost the loop nothing. Thirty of
/// them stay open while forkd is killed: it is served again within a second and a half, and a
/// scrape is answered meanwhile.
#[test]
fn idle_metrics_connections_do_not_stall_the_loop() {
    let port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let url = format!("http://127.0.0.1:{port}/");
    let sup = spawn_supervisor(
        &["--health-url", &url, "--metrics-listen", &metrics],
        &forkd_on(port),
    );
    sup.wait_line("ready after", Duration::from_secs(20));
    let idle: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(&metrics).unwrap())
        .collect();
    let t0 = Instant::now();
    let body = scrape(&metrics).expect("a scrape beside 30 idle connections");
    let scraped = t0.elapsed();
    assert!(body.contains("forkd_supervisor_child_up 1\n"), "{body}");
    let before = starts(&sup);
    let t0 = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child_of(&sup)), Signal::SIGKILL).unwrap();
    eventually(Duration::from_secs(5), "forkd serving again", || {
        (starts(&sup) > before && get(port) == Some(200)).then_some(())
    });
    let took = t0.elapsed();
    eprintln!("with 30 idle metrics connections: scrape {scraped:?}, served again after {took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(scraped < Duration::from_millis(1500), "{scraped:?}");
    // Each idle connection was closed at its deadline, not held.
    let mut closed = 0;
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 64];
        if matches!(c.read(&mut buf), Ok(0)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 30);
    stop_cleanly(sup);
}

/// Issue 10, fix 6: SIGHUP re-reads the supervisor's own section, applies what it can and says
/// what needs a restart.
#[test]
fn hup_rereads_the_supervisors_section() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("forkd.toml");
    let status_file = dir.path().join("status.json");
    let write = |limit: u32, metrics: u16| {
        std::fs::write(
            &file,
            format!(
                "[supervisor]\nreadiness = 'none'\nstatus-file = {:?}\n\
                 metrics-listen = '127.0.0.1:{metrics}'\n\
                 command = ['/bin/sh', '-c', \"trap '' HUP; exec sleep 100\"]\n\
                 [supervisor.limits]\nprocesses = {limit}\n",
                status_file.to_str().unwrap()
            ),
        )
        .unwrap()
    };
    let m1 = free_port();
    write(50, m1);
    let sup = Proc::spawn(SUPERVISOR, &["--config", file.to_str().unwrap()]);
    sup.wait_line("started child", Duration::from_secs(10));
    eventually(Duration::from_secs(5), "the first limit", || {
        status(&status_file).filter(|s| s["limits"]["processes"] == 50)
    });
    write(60, free_port());
    sup.signal(Signal::SIGHUP);
    let line = sup.wait_line(
        "reloaded the supervisor's configuration",
        Duration::from_secs(5),
    );
    assert!(line.contains("applied limits"), "{line}");
    let warn = sup.wait_line("metrics-listen cannot change", Duration::from_secs(1));
    assert!(warn.contains("restart the supervisor"), "{warn}");
    eventually(Duration::from_secs(5), "the new limit in force", || {
        status(&status_file).filter(|s| s["limits"]["processes"] == 60)
    });
    assert!(
        scrape(&format!("127.0.0.1:{m1}")).is_some(),
        "the old endpoint stays"
    );
    // A broken file keeps the running configuration.
    std::fs::write(&file, "[supervisor]\nhealth-threshold = 'x'\n").unwrap();
    sup.signal(Signal::SIGHUP);
    let line = sup.wait_line("keeps its running configuration", Duration::from_secs(5));
    assert!(line.contains("health-threshold"), "{line}");
    assert_eq!(starts(&sup), 1, "{}", sup.output().join("\n"));
    stop_cleanly(sup);
}

/// Issue 10, fix 7: readiness by port needs the child's own listener. A stray listener holds
/// the port and the child never binds: it is not ready, and is recycled at the ready timeout.
#[test]
fn readiness_by_port_needs_the_childs_own_listener() {
    let stray = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stray.local_addr().unwrap().port();
    let sup = spawn_supervisor(
        &[
            "--readiness",
            "port",
            "--port",
            &port.to_string(),
            "--ready-timeout",
            "1s",
        ],
        &["/bin/sleep".into(), "100".into()],
    );
    let line = sup.wait_line("its listener is not child", Duration::from_secs(10));
    assert!(line.contains(&format!("port {port} accepts")), "{line}");
    let line = sup.wait_line("recycling child", Duration::from_secs(5));
    assert!(line.contains("not ready within 1s"), "{line}");
    assert!(!sup.output().iter().any(|l| l.contains("ready after")));
    drop(stray);
    stop_cleanly(sup);
}

/// Issue 10, fix 8: with the supervisor's fd table full, the leftovers of a child whose leader
/// was killed are still found (through the fd reserve) and killed.
#[test]
fn leftovers_are_killed_with_the_fd_table_full() {
    let sup = spawn_supervisor(
        &["--readiness", "none", "--backoff-base", "1s"],
        &[
            "/bin/sh".into(),
            "-c".into(),
            "sleep 1000 & echo leftover=$!; exec sleep 1000".into(),
        ],
    );
    // The line the shell prints, not the supervisor's "started child" line naming the script.
    let leftover: i32 = eventually(Duration::from_secs(10), "the leftover's pid", || {
        sup.output()
            .iter()
            .find_map(|l| l.strip_prefix("leftover=")?.trim().parse().ok())
    });
    let leader = child_of(&sup);
    // No probe, no sample in flight: the lowest free fd is stable.
    std::thread::sleep(Duration::from_millis(300));
    set_nofile(sup.pid(), lowest_free_fd(sup.pid()));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(leader), Signal::SIGKILL).unwrap();
    let line = sup.wait_line("leftover process(es) of group", Duration::from_secs(5));
    assert!(line.contains("killing 1 leftover"), "{line}");
    eventually(Duration::from_secs(5), "the leftover gone", || {
        util::state(leftover).is_none().then_some(())
    });
    let out = sup.output();
    assert!(
        !out.iter().any(|l| l.contains("cannot list leftovers")),
        "{}",
        out.join("\n")
    );
    set_nofile(sup.pid(), 1024);
    stop_cleanly(sup);
}

/// Issue 10, fix 9: a limit below what the child holds at rest is reported once, at start,
/// instead of recycling it again and again; `--recycle hup` memory does not outlive a child.
#[test]
fn a_limit_below_the_resting_level_is_reported_not_looped() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let mut forkd = forkd_on(port);
    forkd.extend(["--workers".into(), "2".into()]);
    let sup = spawn_supervisor(
        &[
            "--health-url",
            &url,
            "--limit",
            "fds=5",
            "--recycle",
            "hup",
            "--sample-interval",
            "100ms",
        ],
        &forkd,
    );
    sup.wait_line("ready after", Duration::from_secs(20));
    let line = sup.wait_line(
        "is below what the child holds at rest",
        Duration::from_secs(5),
    );
    assert!(line.contains("limit fds=5"), "{line}");
    std::thread::sleep(Duration::from_secs(2));
    let out = sup.output();
    assert!(
        !out.iter().any(|l| l.contains("recycling")),
        "{}",
        out.join("\n")
    );
    for _ in 0..20 {
        assert_eq!(get(port), Some(200));
    }
    stop_cleanly(sup);
}

/// A ready forkd with two workers on a fresh port under `--watchdog 1s`, readiness by notify.
fn forkd_under_watchdog(extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let mut forkd = forkd_on(port);
    forkd.extend(["--workers".into(), "2".into()]);
    let mut flags = vec![
        "--health-url",
        &url,
        "--watchdog",
        "1s",
        "--readiness",
        "notify",
    ];
    flags.extend_from_slice(extra);
    let sup = spawn_supervisor(&flags, &forkd);
    sup.wait_line("ready after", Duration::from_secs(20));
    (sup, port)
}

/// Issue 10, item 2: forkd speaks the watchdog. Under `--watchdog 1s` a healthy forkd, loaded
/// and idle in turn, is never restarted over eight intervals.
#[test]
fn a_healthy_forkd_keeps_the_watchdog_fed() {
    let (sup, port) = forkd_under_watchdog(&[]);
    let child = child_of(&sup);
    // A keep-alive connection held busy on one worker the whole time, requests on the other.
    let mut held = TcpStream::connect(("127.0.0.1", port)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let end = Instant::now() + Duration::from_secs(8);
    let mut answered = 0;
    while Instant::now() < end {
        held.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 65536];
        assert!(held.read(&mut buf).unwrap() > 0);
        if get(port) == Some(200) {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(answered > 10);
    assert_never(&sup, "WATCHDOG");
    assert_never(&sup, "recycling child");
    assert_eq!(child_of(&sup), child);
    stop_cleanly(sup);
}

/// Issue 10, item 2: a stopped forkd master stops feeding the watchdog (its workers would go
/// on serving, and nothing would reap, respawn, reload or stop them), so the supervisor
/// replaces it, within the interval plus the stop timeout.
#[test]
fn a_stopped_forkd_master_is_replaced_by_the_watchdog() {
    let (sup, port) = forkd_under_watchdog(&["--stop-timeout", "2s"]);
    let master = child_of(&sup);
    // Fed for a while first.
    std::thread::sleep(Duration::from_millis(1500));
    assert_never(&sup, "recycling child");
    let before = starts(&sup);
    let t0 = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(master), Signal::SIGSTOP).unwrap();
    let line = sup.wait_line("recycling child", Duration::from_secs(5));
    let detected = t0.elapsed();
    assert!(line.contains("no WATCHDOG=1 within 1s"), "{line}");
    eventually(Duration::from_secs(10), "a new forkd serving", || {
        (starts(&sup) > before && child_of(&sup) != master && get(port) == Some(200)).then_some(())
    });
    let replaced = t0.elapsed();
    eprintln!(
        "stopped master: detected after {detected:?}, replaced and serving after {replaced:?}"
    );
    // Interval (1 s) plus stop timeout (2 s), and a little for the restart itself.
    assert!(detected < Duration::from_millis(1600), "{detected:?}");
    assert!(replaced < Duration::from_millis(3500), "{replaced:?}");
    assert!(util::state(master).is_none(), "the old master is gone");
    stop_cleanly(sup);
}

/// The pid of the child the supervisor started last, from its "started child PID" lines.
fn last_started(sup: &Proc) -> Option<i32> {
    sup.output().iter().rev().find_map(|l| {
        l.split("started child ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// A new-connection load (1,000 a second) on forkd under the supervisor while its master is killed with
/// SIGKILL five times; the load generator's report. With `hold`, the supervisor holds the
/// listening socket and passes it to each forkd; without, each forkd binds its own.
fn five_kills_under_load(hold: bool) -> serde_json::Value {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut flags = vec!["--stable-after", "1s", "--stop-timeout", "3s"];
    if hold {
        flags.extend(["--listen", &addr]);
    }
    let mut forkd = forkd_on(port);
    forkd.extend(["--workers", "2", "--max-conns-per-client", "0"].map(String::from));
    let sup = spawn_supervisor(&flags, &forkd);
    let readies = |sup: &Proc| {
        sup.output()
            .iter()
            .filter(|l| l.contains("ready after"))
            .count()
    };
    eventually(Duration::from_secs(20), "forkd ready", || {
        (readies(&sup) == 1).then_some(())
    });
    let load = std::process::Command::new(util::LOADGEN)
        // An open loop of 1,000 new connections a second: enough to meet every restart with
        // a few hundred connections, few enough that the TIME_WAIT sockets it leaves (a
        // minute each) do not slow the socket sampling of tests running beside it.
        .args([
            "--json",
            "--new-conn",
            "--rate",
            "1000",
            "-c",
            "8",
            "-d",
            "10s",
            "--timeout",
            "5s",
        ])
        .arg(format!("http://{addr}/"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    for round in 1..=5 {
        let master = last_started(&sup).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(master), Signal::SIGKILL).unwrap();
        eventually(Duration::from_secs(10), "the next forkd ready", || {
            (readies(&sup) > round).then_some(())
        });
        // Past --stable-after, so every restart comes after the base delay, not a backoff
        // grown by the kills before it.
        std::thread::sleep(Duration::from_millis(1200));
    }
    let out = load.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON from the load generator: {e}"));
    assert_eq!(starts(&sup), 6, "{}", sup.output().join("\n"));
    stop_cleanly(sup);
    report
}

/// Issue 10, item 3: with socket holding, five SIGKILLs of forkd's master under a
/// new-connection load refuse and reset no connection: they wait in the held backlog for the
/// next forkd. Without holding, the same run is measured for comparison.
#[test]
fn socket_holding_refuses_no_one_across_five_kills() {
    let errors = |r: &serde_json::Value| {
        let e = &r["errors"];
        let n = |k: &str| e[k].as_u64().unwrap_or(0);
        (
            n("connect"),
            n("reset"),
            n("closed") + n("short_body") + n("timeout"),
        )
    };
    let without = five_kills_under_load(false);
    let with = five_kills_under_load(true);
    let (w_refused, w_reset, w_other) = errors(&with);
    let (o_refused, o_reset, o_other) = errors(&without);
    eprintln!(
        "5 SIGKILLs of the master under --new-conn load:\n  \
         without holding: {} requests, {o_refused} refused, {o_reset} reset, {o_other} other \
         errors, max latency {} us\n  \
         with holding:    {} requests, {w_refused} refused, {w_reset} reset, {w_other} other \
         errors, max latency {} us",
        without["requests"],
        without["latency_us"]["max"],
        with["requests"],
        with["latency_us"]["max"]
    );
    assert_eq!((w_refused, w_reset, w_other), (0, 0, 0), "{with:#}");
    assert!(with["requests"].as_u64().unwrap() > 100, "{with:#}");
}

/// Issue 10, item 3: the held sockets reach the child as socket activation says: at fd 3
/// onwards, the same socket the supervisor holds, with LISTEN_PID the child's own pid.
#[test]
fn the_child_gets_the_held_listeners() {
    let a = format!("127.0.0.1:{}", free_port());
    let b = format!("127.0.0.1:{}", free_port());
    let script = "echo \"ids $LISTEN_PID $$ $LISTEN_FDS $LISTEN_FDNAMES\"; \
                  echo \"fds $(readlink /proc/self/fd/3) $(readlink /proc/self/fd/4)\"; \
                  ls /proc/self/fd | tr '\\n' ' '; echo; exec sleep 100";
    let sup = spawn_supervisor(
        &["--listen", &a, "--listen", &b, "--readiness", "none"],
        &["/bin/sh".into(), "-c".into(), script.into()],
    );
    // The shell's lines, not the supervisor's "started child" line that quotes the script.
    let line = |prefix: &str| {
        eventually(Duration::from_secs(10), prefix, || {
            sup.output().iter().find(|l| l.starts_with(prefix)).cloned()
        })
    };
    let ids = line("ids ");
    let ids: Vec<&str> = ids.split_whitespace().collect();
    assert_eq!(ids[1], ids[2], "LISTEN_PID is the child's pid: {ids:?}");
    assert_eq!(ids[3..], ["2", "http:http"]);
    let fds = line("fds ");
    // The supervisor's own fds to those sockets point at the same inodes.
    let mine = util::fds(sup.pid());
    for socket in fds.split_whitespace().skip(1) {
        assert!(socket.starts_with("socket:["), "{fds}");
        assert!(
            mine.iter().any(|l| l.ends_with(socket)),
            "{socket} not held: {mine:?}"
        );
    }
    // 0-2, the two listeners, and ls's own directory fd: nothing else leaked.
    let listed = line("0 1 2 ");
    assert_eq!(listed.trim(), "0 1 2 3 4 5", "{listed}");
    stop_cleanly(sup);
}

/// Every process of `tree` is dead. A killed orphan is reaped by PID 1 when PID 1 gets to it:
/// until then it is a zombie, which is dead; only a process still running outlived the
/// supervisor.
fn assert_all_dead(tree: &[i32]) {
    for &p in tree {
        let dead = || matches!(util::state(p), None | Some('Z'));
        if !dead() {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(dead(), "process {p} outlived the supervisor");
    }
}
