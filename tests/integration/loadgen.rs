//! forkd-loadgen against the real forkd: its counts must agree with what the server logged, its
//! watcher must read the server's tree, and a growing tree must fail `--assert-flat`. Every run
//! is on loopback and bounded by a request count or a short duration; speed is never asserted.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::{eventually, Proc, Server, FORKD, LOADGEN};

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
            "run for -d 32s or more",
        ),
        (
            vec!["-d", "30s", "--pipeline", "8", "--new-conn", url],
            "drop one of them",
        ),
        (
            vec!["-d", "30s", "--pipeline", "8", "--rate", "100", url],
            "raise -c instead",
        ),
        (vec!["-d", "30s", "-m", "GET /x", url], "a method is a word"),
        (
            vec!["-d", "30s", "--body", "/nonexistent/body", url],
            "--body /nonexistent/body: no such file",
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

/// A port nothing listens on right now, for a server that `compare` starts itself.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// `compare` starts forkd in two modes itself (the `NAME=URL@COMMAND` form), alternates short
/// runs over them, and reports medians, ratios to the baseline and each server's tree, as JSON
/// and as Markdown; both servers are gone when it returns.
#[test]
fn compare_starts_two_servers_and_prints_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("compare.md");
    let svg = dir.path().join("compare.svg");
    let (p1, p2) = (free_port(), free_port());
    let target = |name: &str, port: u16, mode: &str| {
        format!(
            "{name}=http://127.0.0.1:{port}/bench/2k.html@{FORKD} --listen 127.0.0.1:{port} \
             --mode {mode} --workers 2 --max-conns-per-client 0"
        )
    };
    let (prefork, event) = (
        target("prefork", p1, "prefork"),
        target("event", p2, "event"),
    );
    let mut cmd = Command::new(LOADGEN);
    cmd.args([
        "compare",
        "--json",
        "-c",
        "2,4",
        "-d",
        "400ms",
        "--interval",
        "100ms",
    ])
    .args(["--reps", "2", "--warm", "0s", "--quiet-wait", "0s"])
    .args(["--baseline", "prefork", "--markdown", md.to_str().unwrap()])
    .args(["--plot", svg.to_str().unwrap(), &event, &prefork]);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(r["baseline"], "prefork", "{r:#}");
    let workloads: Vec<&str> = r["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["label"].as_str().unwrap())
        .collect();
    assert_eq!(workloads, ["keep-alive c2", "keep-alive c4"], "{r:#}");
    // 2 targets x 2 workloads x 2 repetitions, alternating: no two runs in a row on one target.
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 8, "{r:#}");
    for pair in runs.windows(2) {
        assert_ne!(pair[0]["target"], pair[1]["target"], "{r:#}");
    }
    for run in runs {
        assert!(run["requests"].as_u64().unwrap() > 0, "{run:#}");
        assert_eq!(run["errors"], 0, "{run:#}");
        assert!(run["rss_kb_max"].as_u64().unwrap() > 0, "{run:#}");
        assert_eq!(run["fd_change"], 0, "{run:#}");
        assert!(run["other_cpu"].as_f64().unwrap() >= 0.0, "{run:#}");
        assert!(run["noisy"].is_boolean(), "{run:#}");
    }
    let summary = r["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 4, "{r:#}");
    for s in summary {
        let rps = &s["requests_per_sec"];
        let (min, med, max) = (
            rps["min"].as_f64(),
            rps["median"].as_f64(),
            rps["max"].as_f64(),
        );
        assert!(min <= med && med <= max && min > Some(0.0), "{s:#}");
        let ratio = s["ratio_requests_per_sec"].as_f64().unwrap();
        if s["target"] == "prefork" {
            assert_eq!(ratio, 1.0, "{s:#}");
        } else {
            assert!(ratio > 0.0, "{s:#}");
        }
    }
    // The tree of each started server was watched: a prefork master and its two workers.
    let prefork_procs = runs
        .iter()
        .filter(|r| r["target"] == "prefork")
        .map(|r| r["processes_max"].as_u64().unwrap())
        .max();
    assert_eq!(prefork_procs, Some(3), "{r:#}");
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(
        md.contains("| divided by prefork | keep-alive c2 req/s |"),
        "{md}"
    );
    assert!(md.contains("| event | "), "{md}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.contains("keep-alive c4") && svg.contains("99%"),
        "{svg}"
    );
    // Stopped by their process groups before compare returned.
    assert!(!listening(p1) && !listening(p2));
}

/// A server that exits at once, or never listens, is reported with its own last words and
/// nothing is left behind; a refused command line starts nothing.
#[test]
fn compare_reports_a_server_that_does_not_start() {
    let port = free_port();
    let out = Command::new(LOADGEN)
        .args(["compare", "-d", "1s", "--quiet-wait", "0s"])
        .arg(format!(
            "a=http://127.0.0.1:{port}/@echo no such luck >&2; exit 3"
        ))
        .arg(format!("b=http://127.0.0.1:{}/@sleep 30", free_port()))
        .output()
        .unwrap();
    // `exec echo ...; exit 3`: the shell is replaced by echo, which exits 0 after its line.
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("a exited") && err.contains("no such luck"),
        "{err}"
    );

    let started = std::time::Instant::now();
    let out = Command::new(LOADGEN)
        .args(["compare", "--pipeline", "8", "--new-conn"])
        .arg(format!("a=http://127.0.0.1:{port}/@sleep 30"))
        .arg(format!("b=http://127.0.0.1:{}/@sleep 30", free_port()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("drop one of them"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// With `--pipeline 8`, eight requests are in flight on each connection and every response is
/// matched to its request: the counts agree with the server's access log, a missing page is
/// counted as often as the server logged a 404, and no connection is reopened. When the server
/// ends a connection after 5 requests, the pipelined requests it left unanswered are sent again
/// on the next connection: still exactly as many answers as requests, and no error.
#[test]
fn pipelined_requests_are_counted_in_order() {
    for mode in ["prefork", "event"] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let server = Server::start(&[
            "--mode",
            mode,
            "--access-log",
            log.to_str().unwrap(),
            "--workers",
            "4",
            "--max-conns-per-client",
            "0",
            "--max-requests-per-connection",
            "100000",
        ]);
        let url = format!("http://{}/bench/2k.html", server.addr);
        let (code, r) = loadgen(&[
            "-c",
            "2",
            "--pipeline",
            "8",
            "-n",
            "3000",
            "--path",
            "/bench/2k.html:3",
            "--path",
            "/no-such-page:1",
            &url,
        ]);
        assert_eq!(code, 0, "{mode}: {r:#}");
        assert_eq!(r["pipeline"], 8, "{r:#}");
        assert_eq!(r["requests"], 3000, "{mode}: {r:#}");
        assert_eq!(r["errors"]["bad_response"], 0, "{mode}: {r:#}");
        assert_eq!(r["connects"], 2, "{mode}: {r:#}");
        expect_log_lines(&log, 3000);
        let logged_404 = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\" 404 "))
            .count() as u64;
        assert!(logged_404 > 0, "{mode}: no 404 in the log");
        assert_eq!(
            r["status"]["404"].as_u64(),
            Some(logged_404),
            "{mode}: {r:#}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let server = Server::start(&[
        "--access-log",
        log.to_str().unwrap(),
        "--workers",
        "4",
        "--max-conns-per-client",
        "0",
        "--max-requests-per-connection",
        "5",
    ]);
    let url = format!("http://{}/bench/2k.html", server.addr);
    let (code, r) = loadgen(&["-c", "2", "--pipeline", "8", "-n", "1000", &url]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["requests"], 1000, "{r:#}");
    assert_eq!(r["errors_total"], 0, "{r:#}");
    // 5 answers per connection.
    assert!(r["connects"].as_u64().unwrap() >= 200, "{r:#}");
    expect_log_lines(&log, 1000);
}

/// The live progress line is drawn on a terminal (a pseudo-terminal from `script`) and never
/// into a pipe; `--quiet` silences it on a terminal too.
#[test]
fn progress_shows_on_a_terminal_only() {
    let server = Server::start(&["--workers", "2"]);
    let url = format!("http://{}/bench/2k.html", server.addr);
    let on_pty = |extra: &str| {
        let out = Command::new("script")
            .args(["-q", "-e", "-c"])
            .arg(format!("{LOADGEN} -c 2 -d 1500ms {extra} {url}"))
            .arg("/dev/null")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("script(1) from util-linux");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = on_pty("");
    assert!(shown.contains("Requests/sec"), "{shown}");
    // The line: elapsed/total, requests, rate, errors, p99 so far.
    assert!(
        shown.contains("s/1.5s") && shown.contains(" errors  p99 "),
        "{shown}"
    );
    let quiet = on_pty("--quiet");
    assert!(
        quiet.contains("Requests/sec") && !quiet.contains(" errors  p99 "),
        "{quiet}"
    );

    let out = Command::new(LOADGEN)
        .args(["-c", "2", "-d", "1500ms", &url])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("Requests/sec") && !all.contains(" errors  p99 "),
        "{all}"
    );
}

/// A server that answers nothing until it holds `depth` whole requests on a connection, then
/// answers them in order, each with a body as long as its position in the batch (100 to
/// depth x 100 bytes) and 404 for `/missing`: a client that does not keep `depth` requests in
/// flight gets no answer at all, and one that frames pipelined responses wrongly miscounts the
/// bytes. Returns the address and counters: requests answered, 404s, bytes sent.
fn batching_server(
    depth: usize,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<[std::sync::atomic::AtomicU64; 3]>,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering::Relaxed;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counts: std::sync::Arc<[std::sync::atomic::AtomicU64; 3]> = Default::default();
    let c = counts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let c = c.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let heads: Vec<usize> = buf
                        .windows(4)
                        .enumerate()
                        .filter(|(_, w)| w == b"\r\n\r\n")
                        .map(|(i, _)| i + 4)
                        .collect();
                    if heads.len() >= depth {
                        let mut out = Vec::new();
                        let mut from = 0;
                        for (k, &end) in heads[..depth].iter().enumerate() {
                            let missing = buf[from..end].starts_with(b"GET /missing ");
                            let body = vec![b'x'; (k + 1) * 100];
                            let before = out.len();
                            let status = if missing { "404 Not Found" } else { "200 OK" };
                            out.extend_from_slice(
                                format!(
                                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
                                    body.len()
                                )
                                .as_bytes(),
                            );
                            out.extend_from_slice(&body);
                            c[0].fetch_add(1, Relaxed);
                            c[1].fetch_add(u64::from(missing), Relaxed);
                            c[2].fetch_add((out.len() - before) as u64, Relaxed);
                            from = end;
                        }
                        buf.drain(..from);
                        if stream.write_all(&out).is_err() {
                            return;
                        }
                        continue;
                    }
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, counts)
}

/// Eight requests in flight on a connection, answered only eight at a time: every response is
/// framed and counted (bodies of 100 to 800 bytes, 404s where the server sent them). One
/// connection, so that its share of `-n` is a whole number of batches.
#[test]
fn pipeline_depth_is_kept_and_framed() {
    use std::sync::atomic::Ordering::Relaxed;
    let (addr, counts) = batching_server(8);
    let url = format!("http://{addr}/");
    let (code, r) = loadgen(&[
        "-c",
        "1",
        "--pipeline",
        "8",
        "-n",
        "1600",
        "--timeout",
        "3s",
        "--path",
        "/a:3",
        "--path",
        "/missing:1",
        &url,
    ]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["requests"], 1600, "{r:#}");
    assert_eq!(r["errors"]["timeout"], 0, "{r:#}");
    assert_eq!(r["errors"]["bad_response"], 0, "{r:#}");
    assert_eq!(counts[0].load(Relaxed), 1600);
    assert_eq!(
        r["status"]["404"].as_u64(),
        Some(counts[1].load(Relaxed)),
        "{r:#}"
    );
    // Every byte the server sent was read as part of a response.
    assert_eq!(r["bytes"].as_u64(), Some(counts[2].load(Relaxed)), "{r:#}");
    assert_eq!(r["connects"], 1, "{r:#}");

    // One at a time, the same server never answers: every request times out.
    let (code, r) = loadgen(&["-c", "1", "-n", "1", "--timeout", "300ms", &url]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["errors"]["timeout"], 1, "{r:#}");
}

/// A server that serves its first connection and never accepts another (as a blocking server
/// with one worker and keep-alive clients): of three connections, two are never answered in the
/// run, which the report says, while throughput and latency look healthy.
#[test]
fn connections_never_answered_are_counted() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut buf = [0u8; 4096];
        // One request per read is enough for a client that waits for each answer.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0
                || s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_err()
            {
                return;
            }
        }
        // The listener stays open (in this thread's frame) with the others in its queue.
    });
    let url = format!("http://{addr}/");
    let (code, r) = loadgen(&["-c", "3", "-t", "1", "-d", "700ms", "--timeout", "1s", &url]);
    assert_eq!(code, 0, "{r:#}");
    assert!(r["requests"].as_u64().unwrap() > 10, "{r:#}");
    assert_eq!(r["starved_connections"], 2, "{r:#}");
}

/// The processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(marker)
            })
        })
        .collect()
}

/// Ctrl-C stops `compare` and its servers; a second one, while a server is slow to stop
/// (here a group that ignores SIGTERM), kills the servers' groups before the tool dies of
/// SIGINT, so nothing it started is left running.
#[test]
fn a_second_ctrl_c_in_compare_leaves_no_server_behind() {
    use std::os::unix::process::ExitStatusExt;
    let port = free_port();
    // A number no other process has in its command line.
    let marker = format!("{}.{}", 600 + std::process::id() % 300, port);
    let target = format!(
        "slow=http://127.0.0.1:{port}/bench/2k.html@sh -c 'trap \"\" TERM; \
         {FORKD} --listen 127.0.0.1:{port} --workers 1 & sleep {marker}'"
    );
    let mut child = Command::new(LOADGEN)
        .args(["compare", "-d", "20s", "--warm", "0s", "--quiet-wait", "0s"])
        .arg(&target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    eventually(Duration::from_secs(10), "the server listening", || {
        listening(port).then_some(())
    });
    // The server's own group: the tool's command line names the marker too, so it is left out.
    let tool = child.id() as i32;
    assert!(processes_with(&format!("sleep {marker}"))
        .iter()
        .any(|&p| p != tool));
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    // The first Ctrl-C ends the run; forkd stops on SIGTERM, the sleep ignores it, so the tool
    // waits for its group.
    eventually(Duration::from_secs(10), "forkd stopped", || {
        (!listening(port)).then_some(())
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "gave up waiting at once"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = eventually(Duration::from_secs(5), "compare dead", || {
        child.try_wait().unwrap()
    });
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    eventually(Duration::from_secs(5), "the server's group gone", || {
        processes_with(&format!("sleep {marker}"))
            .is_empty()
            .then_some(())
    });
}
