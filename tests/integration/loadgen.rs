//! forkd-loadgen against the real forkd: its counts must agree with what the server logged, its
//! watcher must read the server's tree, and a growing tree must fail `--assert-flat`. Every run
//! is on loopback and bounded by a request count or a short duration; speed is never asserted.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::{eventually, Proc, Server, LOADGEN};

/// Runs the load generator with `--json` and returns (exit code, report).
fn loadgen(args: &[&str]) -> (i32, Value) {
    let out = Command::new(LOADGEN)
        .arg("--json")
        .args(args)
        .output()
        .expect("run forkd-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "loadgen printed no JSON ({e}); stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn log_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// Waits until the access log has `want` lines (children write their line after the response,
/// so the last few may trail the client), then checks it does not exceed it.
fn expect_log_lines(path: &Path, want: usize) {
    eventually(Duration::from_secs(10), "access log lines", || {
        (log_lines(path) >= want).then_some(())
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(log_lines(path), want, "access log {}", path.display());
}

#[test]
fn request_counts_match_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    // One loopback client: no per-client limit. Twice as many workers as connections, so the
    // pool never nears the pressure that shortens idle timeouts, and a per-connection request
    // limit above the run, so that a loaded machine that favours one connection cannot make
    // the server end it: every connect below is the client's own.
    let server = Server::start(&[
        "--access-log",
        log.to_str().unwrap(),
        "--workers",
        "8",
        "--max-conns-per-client",
        "0",
        "--max-requests-per-connection",
        "100000",
    ]);
    let url = format!("http://{}/bench/2k.html", server.addr);

    let (code, r) = loadgen(&["-c", "4", "-n", "2000", &url]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["requests"], 2000, "{r:#}");
    assert_eq!(r["errors_total"], 0, "{r:#}");
    assert_eq!(r["status"]["200"], 2000, "{r:#}");
    assert_eq!(r["connects"], 4, "keep-alive reuses each connection: {r:#}");
    assert!(r["requests_per_sec"].as_f64().unwrap() > 0.0);
    // 2048-byte bodies plus heads.
    assert!(r["bytes"].as_u64().unwrap() > 2000 * 2048, "{r:#}");
    expect_log_lines(&log, 2000);

    let (code, r) = loadgen(&["-c", "3", "-n", "300", "--new-conn", &url]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(
        (r["requests"].as_u64(), r["connects"].as_u64()),
        (Some(300), Some(300)),
        "{r:#}"
    );
    assert_eq!(r["errors_total"], 0, "{r:#}");
    expect_log_lines(&log, 2300);

    // Weighted paths and a missing page: every 404 is both logged and counted as bad_status.
    let (code, r) = loadgen(&[
        "-c",
        "2",
        "-n",
        "400",
        "--path",
        "/bench/2k.html:3",
        "--path",
        "/no-such-page:1",
        &url,
    ]);
    assert_eq!(code, 0, "{r:#}");
    let (ok, missing) = (
        r["status"]["200"].as_u64().unwrap(),
        r["status"]["404"].as_u64().unwrap(),
    );
    assert_eq!(ok + missing, 400, "{r:#}");
    assert_eq!(r["errors"]["bad_status"].as_u64(), Some(missing), "{r:#}");
    assert!(
        (50..=150).contains(&missing),
        "weights 3:1 give about 100 misses: {r:#}"
    );
    expect_log_lines(&log, 2700);
}

#[test]
fn open_loop_sends_at_the_rate() {
    let server = Server::start(&["--workers", "2"]);
    let url = format!("http://{}/bench/2k.html", server.addr);
    let (code, r) = loadgen(&["--rate", "400", "-c", "4", "-d", "1s", &url]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["mode"], "open");
    // 400/s for 1 s, give or take the first and last interval.
    let n = r["requests"].as_u64().unwrap();
    assert!((370..=410).contains(&n), "{r:#}");
    assert_eq!(r["errors_total"], 0, "{r:#}");
}

#[test]
fn watcher_reads_the_server_tree() {
    let server = Server::start(&["--workers", "3"]);
    let url = format!("http://{}/bench/2k.html", server.addr);
    let pid = server.pid().to_string();
    let (code, r) = loadgen(&[
        "-c",
        "2",
        "-n",
        "3000",
        "--watch-pid",
        &pid,
        "--interval",
        "50ms",
        "--warmup",
        "0s",
        &url,
    ]);
    assert_eq!(code, 0, "{r:#}");
    let w = &r["watch"];
    assert_eq!(w["pid"].as_i64(), Some(server.pid() as i64), "{w:#}");
    assert!(w["error"].is_null(), "{w:#}");
    // The master and its three workers, before and after; nothing leaked, no zombies.
    assert_eq!(w["before"]["processes"], 4, "{w:#}");
    assert_eq!(w["after"]["processes"], 4, "{w:#}");
    assert_eq!(w["after"]["zombies"], 0, "{w:#}");
    assert_eq!(w["root_fd_delta"], 0, "{w:#}");
    assert_eq!(w["fd_delta"], 0, "{w:#}");
    assert!(w["before"]["tcp"]["LISTEN"].as_u64().unwrap() >= 1, "{w:#}");
    assert!(w["before"]["rss_kb"].as_u64().unwrap() > 0, "{w:#}");
}

/// A watched process that opens one more fd every 50 ms must fail `--assert-flat` with exit
/// code 3, and the report must name fds as the growing metric.
#[test]
fn assert_flat_fails_on_a_growing_tree() {
    let server = Server::start(&["--workers", "2"]);
    let url = format!("http://{}/bench/2k.html", server.addr);
    let leaker = Proc::spawn(
        "/bin/bash",
        &[
            "-c",
            "for i in $(seq 10 200); do eval \"exec $i</dev/null\"; sleep 0.05; done; sleep 30",
        ],
    );
    let pid = leaker.pid().to_string();
    let (code, r) = loadgen(&[
        "-c",
        "1",
        "-d",
        "2s",
        "--watch-pid",
        &pid,
        "--interval",
        "100ms",
        "--warmup",
        "200ms",
        "--assert-flat",
        &url,
    ]);
    assert_eq!(code, 3, "{r:#}");
    let w = &r["watch"];
    assert_eq!(w["flat"], false, "{w:#}");
    let fds = w["trends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["metric"] == "fds")
        .unwrap_or_else(|| panic!("no fds trend: {r}"));
    assert_eq!(fds["flat"], false, "{fds:#}");
    assert!(fds["growth"].as_f64().unwrap() > 10.0, "{fds:#}");
}

/// Abuse runs beside the normal load, is bounded by it, and reports what it did.
#[test]
fn malformed_mix_is_answered_and_reported() {
    let server = Server::start(&["--workers", "4"]);
    let url = format!("http://{}/bench/2k.html", server.addr);
    let (code, r) = loadgen(&[
        "-c",
        "1",
        "-d",
        "1500ms",
        "--abuse",
        "malformed",
        "--abuse-conns",
        "2",
        &url,
    ]);
    assert_eq!(code, 0, "{r:#}");
    let a = &r["abuse"][0];
    assert_eq!(a["mode"], "malformed", "{a:#}");
    assert!(a["opened"].as_u64().unwrap() >= 2, "{a:#}");
    // Bounded: at most 2 new connections a second for 1.5 s.
    assert!(a["opened"].as_u64().unwrap() <= 6, "{a:#}");
    let statuses = a["statuses"].as_object().unwrap();
    assert!(
        statuses
            .keys()
            .any(|s| s.starts_with('4') || s.starts_with('5')),
        "malformed requests get 4xx/5xx: {a:#}"
    );
    assert!(
        r["requests"].as_u64().unwrap() > 0,
        "the normal client was measured: {r:#}"
    );
}

#[test]
fn refuses_remote_targets() {
    let out = Command::new(LOADGEN)
        .args(["-n", "1", "http://192.0.2.1:80/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
}

/// A combination that cannot give a verdict is refused before the load, not after 30 s of it:
/// exit 2 within a couple of seconds, with the message. No server is needed; port 9 is never
/// connected to.
#[test]
fn bad_flag_combinations_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("missing/soak.csv");
    let pid = std::process::id().to_string();
    let url = "http://127.0.0.1:9/";
    for (args, says) in [
        (vec!["-d", "30s", "--assert-flat", url], "--watch-pid"),
        (
            vec![
                "-d",
                "30s",
                "--watch-pid",
                &pid,
                "--warmup",
                "30s",
                "--assert-flat",
                url,
            ],
            "samples after the warm-up",
        ),
        (
            vec!["-d", "30s", "--csv", csv.to_str().unwrap(), url],
            "is not a directory",
        ),
    ] {
        let started = std::time::Instant::now();
        let mut proc = Proc::spawn(LOADGEN, &args);
        let status = proc.wait_exit(Duration::from_secs(3));
        assert_eq!(status.code(), Some(2), "{args:?}: {:?}", proc.output());
        assert!(started.elapsed() < Duration::from_secs(3), "{args:?}");
        eventually(Duration::from_secs(2), "the refusal on stderr", || {
            proc.output().iter().any(|l| l.contains(says)).then_some(())
        });
    }
}
