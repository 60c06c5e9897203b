//! Configuration as the operator meets it: every key of the file is in force (and
//! `--check-config` says so), a flag that wins over an edited file key is logged, and a child
//! takes none of the master's signal handlers.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::{self, eventually, Proc, Server, FORKD};

/// The long flags `forkd --help` lists: the clap command's arguments, as the binary has them.
fn help_flags() -> BTreeSet<String> {
    let out = Command::new(FORKD).arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.split_once(", ").map_or(l, |(_, rest)| rest);
            let flag = l.strip_prefix("--")?;
            Some(
                flag.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .next()?
                    .to_string(),
            )
        })
        .filter(|f| !["help", "version", "config", "check-config"].contains(&f.as_str()))
        .collect()
}

fn check_config(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(FORKD)
        .args(args)
        .arg("--check-config")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The line `--check-config` printed for `key`, if any.
fn line_of<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key}: ")))
}

/// Every key set in the file, no flag: each one is in force, from the file. A key added to
/// forkd's flags and not to the table below fails this test.
#[test]
fn every_key_of_the_file_is_in_force() {
    let as_root = nix::unistd::Uid::effective().is_root();
    let dir = tempfile::tempdir().unwrap();
    // Children run as another user (as root) and must be able to search their way to the root.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = dir.path().to_str().unwrap();
    std::fs::create_dir(dir.path().join("site")).unwrap();
    let q = |s: &str| format!("{s:?}");
    // (key, as written in the file, as --check-config prints it)
    let mut keys: Vec<(&str, String, String)> = vec![
        (
            "listen",
            r#"["127.0.0.1:18081", "127.0.0.2:18082"]"#.into(),
            r#"["127.0.0.1:18081", "127.0.0.2:18082"]"#.into(),
        ),
        ("root", q(&format!("{d}/site")), q(&format!("{d}/site"))),
        ("mode", q("fork"), q("fork")),
        ("workers", "3".into(), "3".into()),
        ("max-children", "5".into(), "5".into()),
        ("worker-connections", "16".into(), "16".into()),
        ("worker-sched", q("batch"), q("batch")),
        ("max-requests-per-worker", "77".into(), "77".into()),
        ("shutdown-timeout", q("3s"), q("3s")),
        ("header-timeout", "1.5".into(), q("1s 500ms")),
        ("defer-accept", q("7s"), q("7s")),
        ("max-conns-per-client", "3".into(), "3".into()),
        ("keepalive-timeout", q("2s"), q("2s")),
        ("send-timeout", q("4s"), q("4s")),
        ("min-send-rate", "1000".into(), "1000".into()),
        ("max-header-bytes", "4096".into(), "4096".into()),
        ("max-uri-bytes", "1000".into(), "1000".into()),
        ("max-body-bytes", "2048".into(), "2048".into()),
        ("max-requests-per-connection", "9".into(), "9".into()),
        (
            "allow-dot-path",
            r#"["/.well-known", "/.hg/"]"#.into(),
            r#"["/.well-known/", "/.hg/"]"#.into(),
        ),
        (
            "index",
            r#"["home.html", "index.htm"]"#.into(),
            r#"["home.html", "index.htm"]"#.into(),
        ),
        ("autoindex", "true".into(), "true".into()),
        ("autoindex-max-entries", "50".into(), "50".into()),
        (
            "error-page",
            r#"["404=/404.html", "500=/e/500.html"]"#.into(),
            r#"["404=/404.html", "500=/e/500.html"]"#.into(),
        ),
        ("unknown-host", q("421"), q("421")),
        ("file-cache-entries", "12".into(), "12".into()),
        ("file-cache-bytes", "65536".into(), "65536".into()),
        ("precompressed", "false".into(), "false".into()),
        (
            "mime",
            r#"{ gmi = "text/gemini", WEBP = "image/webp" }"#.into(),
            r#"{ "WEBP" = "image/webp", "gmi" = "text/gemini" }"#.into(),
        ),
        (
            "access-log",
            q(&format!("{d}/access.log")),
            q(&format!("{d}/access.log")),
        ),
        (
            "pid-file",
            q(&format!("{d}/forkd.pid")),
            q(&format!("{d}/forkd.pid")),
        ),
        (
            "metrics-file",
            q(&format!("{d}/metrics.prom")),
            q(&format!("{d}/metrics.prom")),
        ),
        ("user", q("daemon"), q("daemon")),
        ("allow-root", "true".into(), "true".into()),
        ("agent-listen", q("127.0.0.1:18091"), q("127.0.0.1:18091")),
        ("status-listen", q("0.0.0.0:18092"), q("0.0.0.0:18092")),
        ("status-public", "true".into(), "true".into()),
        ("log-level", q("warn"), q("warn")),
    ];
    // Only root may chroot; as another user that key is refused, and tested where it can be.
    if as_root {
        keys.push(("chroot", q(d), q(d)));
    }

    // `mime` is the one key of the file only (a table, [server.mime]).
    let named: BTreeSet<String> = keys
        .iter()
        .map(|k| k.0.to_string())
        .filter(|k| k != "mime")
        .collect();
    let mut flags = help_flags();
    if !as_root {
        flags.remove("chroot");
    }
    assert_eq!(
        flags, named,
        "every flag of `forkd --help` must be set in this test's file"
    );

    // Tables only the file gives, each printed back as an inline table.
    let tables: Vec<(&str, String, String)> = vec![
        (
            "headers",
            r#"[{ glob = "*.html", cache-control = "no-cache", set = { X-A = "1" } }]"#.into(),
            r#"[{ cache-control = "no-cache", glob = "*.html", set = { X-A = "1" } }]"#.into(),
        ),
        (
            "security-headers",
            r#"{ X-Frame-Options = false, Content-Security-Policy = "frame-ancestors 'none'" }"#
                .into(),
            "{ Content-Security-Policy = \"frame-ancestors 'none'\", Referrer-Policy = \
             \"strict-origin-when-cross-origin\", X-Content-Type-Options = \"nosniff\", \
             X-Frame-Options = false }"
                .into(),
        ),
        (
            "vhost",
            format!(r#"[{{ host = ["a.test", "*.a.test"], root = "{d}/site" }}]"#),
            format!(r#"[{{ host = ["a.test", "*.a.test"], root = "{d}/site" }}]"#),
        ),
    ];
    let mut text = String::from("[server]\n");
    for (key, value, _) in keys.iter().chain(&tables) {
        text.push_str(&format!("{key} = {value}\n"));
    }
    let file = dir.path().join("every-key.toml");
    std::fs::write(&file, &text).unwrap();
    let (code, out, err) = check_config(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for (key, _, printed) in keys.iter().chain(&tables) {
        let line = line_of(&out, key).unwrap_or_else(|| panic!("no line for {key}:\n{out}"));
        let want = format!("{key} = {printed}  # from file");
        assert!(
            line.starts_with(&want),
            "{key}: want {want:?}, got {line:?}"
        );
    }
    assert_eq!(
        line_of(&out, "workers").unwrap(),
        "workers = 3  # from file, not used in fork mode"
    );
    assert!(
        err.contains("workers = 3 has no effect in fork mode"),
        "{err}"
    );

    // The output is itself a configuration: read back, it says the same, all from the file.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &out).unwrap();
    let (code, out2, err2) = check_config(&["--config", again.to_str().unwrap()]);
    assert_eq!(code, 0, "{err2}");
    assert_eq!(out2, out);
}

/// With no file and no flag, every key is printed with its default, in a stable format.
#[test]
fn check_config_prints_defaults_and_flags() {
    let (code, out, err) = check_config(&["--workers", "2", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("# forkd: effective configuration"),
        "{out}"
    );
    assert_eq!(lines[1], "[server]");
    for flag in help_flags() {
        assert!(line_of(&out, &flag).is_some(), "no line for {flag}:\n{out}");
    }
    assert_eq!(
        line_of(&out, "workers").unwrap(),
        "workers = 2  # from flag"
    );
    assert_eq!(
        line_of(&out, "listen").unwrap(),
        r#"listen = ["127.0.0.1:0"]  # from flag"#
    );
    assert_eq!(
        line_of(&out, "mode").unwrap(),
        r#"mode = "prefork"  # default"#
    );
    assert_eq!(
        line_of(&out, "keepalive-timeout").unwrap(),
        r#"keepalive-timeout = "5s"  # default"#
    );
    assert_eq!(
        line_of(&out, "pid-file").unwrap(),
        "# pid-file: not set  # default"
    );
    // The kernel holds a silent connection as long as a worker would wait for its head.
    assert_eq!(
        line_of(&out, "defer-accept").unwrap(),
        r#"defer-accept = "10s"  # default"#
    );
    // Half of two workers, but never below four.
    assert_eq!(
        line_of(&out, "max-conns-per-client").unwrap(),
        "max-conns-per-client = 4  # default"
    );
    assert_eq!(
        line_of(&out, "max-requests-per-worker").unwrap(),
        "max-requests-per-worker = 100000  # default"
    );
}

/// An event worker holds up to `--worker-connections` clients, and recycling it would close
/// them all, every 100,000 requests (seconds under load): by default it is never recycled.
/// An explicit budget still applies.
#[test]
fn event_workers_are_not_recycled_by_default() {
    let (code, out, err) = check_config(&["--mode", "event", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        line_of(&out, "max-requests-per-worker").unwrap(),
        "max-requests-per-worker = 0  # default"
    );
    let (code, out, err) = check_config(&[
        "--mode",
        "event",
        "--max-requests-per-worker",
        "500",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        line_of(&out, "max-requests-per-worker").unwrap(),
        "max-requests-per-worker = 500  # from flag"
    );
}

/// `metrics-file` in `[server]` was accepted and ignored; now the master writes it.
#[test]
fn metrics_file_from_the_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.prom");
    let conf = dir.path().join("forkd.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nworkers = 1\nmetrics-file = {:?}\n",
            metrics.to_str().unwrap()
        ),
    )
    .unwrap();
    let _server = Server::start(&["--config", conf.to_str().unwrap()]);
    let text = eventually(Duration::from_secs(5), "the metrics file", || {
        std::fs::read_to_string(&metrics).ok()
    });
    assert!(text.contains("forkd_"), "{text}");
}

/// A flag wins over the file on reload too, and forkd says so instead of applying it silently.
#[test]
fn reload_logs_a_flag_that_overrides_the_edited_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("f.toml");
    std::fs::write(&conf, "[server]\nworkers = 2\n").unwrap();
    let server = Server::start(&["--config", conf.to_str().unwrap(), "--workers", "2"]);
    assert!(
        !server.proc.output().iter().any(|l| l.contains("overrides")),
        "same value in both: nothing to say"
    );
    std::fs::write(&conf, "[server]\nworkers = 3\n").unwrap();
    server.proc.signal(Signal::SIGHUP);
    let want = format!("--workers 2 overrides workers = 3 from {}", conf.display());
    let line = server.proc.wait_line(&want, Duration::from_secs(5));
    assert!(line.contains("WARN"), "{line}");
    server
        .proc
        .wait_line("reloaded configuration", Duration::from_secs(5));
    eventually(Duration::from_secs(5), "2 workers after the reload", || {
        (util::children(server.pid()).len() == 2).then_some(())
    });
}

/// A signal set from a `SigCgt:`-style line of `/proc/PID/status`.
fn sigset(pid: i32, field: &str) -> BTreeSet<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap()
        .trim();
    let mask = u64::from_str_radix(hex, 16).unwrap();
    (1..=64).filter(|s| mask & (1u64 << (s - 1)) != 0).collect()
}

/// How many `signalfd`s `pid` holds.
fn signalfds(pid: i32) -> usize {
    util::fds(pid)
        .iter()
        .filter(|l| l.ends_with("anon_inode:[signalfd]"))
        .count()
}

/// Checks a child of `master`: the master blocks every signal of its table and reads them from
/// its signalfd, its dispositions being the children's (so no handler of it ever runs and a
/// child needs no `sigaction`); the child catches only its own TERM and USR1 (every other one
/// is default or ignored), blocks none, and holds no signalfd.
fn check_child(master: i32, child: i32) {
    let blocked = sigset(master, "SigBlk");
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGCHLD,
    ] {
        assert!(
            blocked.contains(&(sig as i32)),
            "the master blocks {sig}: {blocked:?}"
        );
    }
    assert_eq!(signalfds(master), 1, "the master's signalfd");
    let own: BTreeSet<i32> = [Signal::SIGTERM as i32, Signal::SIGUSR1 as i32].into();
    // Rust's runtime catches SEGV and BUS in every process (its stack-overflow guard).
    let runtime: BTreeSet<i32> = [Signal::SIGSEGV as i32, Signal::SIGBUS as i32].into();
    let child_caught: BTreeSet<i32> = sigset(child, "SigCgt")
        .difference(&runtime)
        .copied()
        .collect();
    assert_eq!(
        child_caught, own,
        "child {child} catches only its own signals"
    );
    let ignored = sigset(child, "SigIgn");
    for sig in [Signal::SIGHUP, Signal::SIGPIPE, Signal::SIGXFSZ] {
        assert!(
            ignored.contains(&(sig as i32)),
            "child ignores {sig}: {ignored:?}"
        );
    }
    for sig in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGCHLD] {
        assert!(
            !ignored.contains(&(sig as i32)),
            "child keeps the default action of {sig}: {ignored:?}"
        );
    }
    assert!(
        sigset(child, "SigBlk").is_empty(),
        "child {child} blocks signals"
    );
    assert_eq!(
        signalfds(child),
        0,
        "child {child} keeps the master's signalfd"
    );
}

/// Waits until `child` has installed its handlers and unblocked signals (`worker::enter`).
fn settled(child: i32) {
    eventually(Duration::from_secs(5), "the child's handlers", || {
        let ready = sigset(child, "SigCgt").contains(&(Signal::SIGUSR1 as i32))
            && sigset(child, "SigBlk").is_empty();
        ready.then_some(())
    });
}

#[test]
fn children_take_none_of_the_masters_signal_handlers() {
    let prefork = Server::start(&["--workers", "1"]);
    let worker = eventually(Duration::from_secs(5), "a worker", || {
        util::children(prefork.pid()).first().copied()
    });
    settled(worker);
    check_child(prefork.pid(), worker);
    // The child's TERM is its own: left blocked, as in the master, it would wait for a
    // signalfd the child does not hold, and the child would serve on.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), Signal::SIGTERM).unwrap();
    eventually(Duration::from_secs(5), "the worker replaced", || {
        let kids = util::children(prefork.pid());
        (kids.len() == 1 && kids[0] != worker).then_some(())
    });

    // A connection that stays open, silent, keeps its child alive while we look at it: only
    // without a deferred accept does it reach a child.
    let fork = Server::start(&[
        "--mode",
        "fork",
        "--max-children",
        "4",
        "--defer-accept",
        "0",
    ]);
    let _conn = fork.connect();
    let child = eventually(Duration::from_secs(5), "a per-connection child", || {
        util::children(fork.pid()).first().copied()
    });
    settled(child);
    check_child(fork.pid(), child);
}

/// A combination that cannot work is refused with exit 100 before anything starts.
#[test]
fn contradictions_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let same = dir.path().join("same");
    let same = same.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--listen", "127.0.0.1:18090", "--listen", "127.0.0.1:18090"],
            "given twice",
        ),
        (
            vec!["--pid-file", same, "--metrics-file", same],
            "name the same file",
        ),
        (
            vec!["--metrics-file", "/nonexistent-dir/m.prom"],
            "does not exist",
        ),
    ] {
        let mut p = Proc::spawn(FORKD, &args);
        let status = p.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(100), "{args:?}: {:?}", p.output());
        // The reader thread may still hold the last line when the exit is seen.
        let line = p.wait_line(needle, Duration::from_secs(5));
        assert!(line.contains(args[0]), "{args:?}: {line}");
    }
    assert!(!Path::new(same).exists());
}

/// Each site rule refused at start with exit 100 and a message naming the key and the fault.
#[test]
fn bad_site_rules_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "[[server.headers]]\nglob = \"*.html\"\ncache-control = \"no-cache\\r\\nSet-Cookie: x=1\"",
            "[[server.headers]] #1 (glob \"*.html\"): cache-control",
        ),
        (
            "[[server.headers]]\nglob = \"*.html\"\nset = { \"Bad Name\" = \"x\" }",
            "not a valid field name",
        ),
        (
            "[[server.headers]]\nglob = \"*.js\"\nset = { Content-Length = \"1\" }",
            "Content-Length is set by forkd itself",
        ),
        (
            "[[server.headers]]\nglob = \"*.[a-\"\ncache-control = \"x\"",
            "[[server.headers]] #1 (glob \"*.[a-\")",
        ),
        (
            "[[server.headers]]\nglob = \"assets/*.js\"\ncache-control = \"x\"",
            "must start with /",
        ),
        (
            "[[server.headers]]\nglob = \"*.js\"\ncache-kontrol = \"x\"",
            "unknown field `cache-kontrol`",
        ),
        (
            "[server.security-headers]\nX-Frame-Option = false",
            "security-headers.X-Frame-Option = false turns off a field that is not sent",
        ),
        (
            "[server.security-headers]\nX-Frame-Options = \"DENY\\nX: y\"",
            "security-headers.X-Frame-Options",
        ),
        (
            "[[server.vhost]]\nhost = \"a.test:8080\"\nroot = \"{d}/www\"",
            "[[server.vhost]] #1 host \"a.test:8080\": give the name without a port",
        ),
        (
            "[[server.vhost]]\nhost = \"a.*.test\"\nroot = \"{d}/www\"",
            "label \"*\" is not valid",
        ),
        (
            "[[server.vhost]]\nhost = \"a.test\"\nroot = \"{d}/www\"\n\
             [[server.vhost]]\nhost = \"A.TEST\"\nroot = \"{d}/www\"",
            "already named by [[server.vhost]] #1",
        ),
        (
            "[[server.vhost]]\nhost = \"a.test\"\nroot = \"{d}/missing\"",
            "unable to open [[server.vhost]] #1 root",
        ),
        (
            "[[server.vhost]]\nhost = \"a.test\"",
            "missing field `root`",
        ),
        ("unknown-host = \"418\"", "unknown variant `418`"),
        ("error-page = [\"302=/x.html\"]", "from 400 to 599"),
        ("error-page = [\"404=/errors/\"]", "must name a file"),
        ("error-page = [\"404:/x.html\"]", "STATUS=PATH"),
        ("error-page = [\"404=/../x.html\"]", "is hidden"),
        (
            "error-page = [\"404=/a.html\", \"404=/b.html\"]",
            "already given",
        ),
        ("index = [\"a/index.html\"]", "must be a file name"),
        ("index = [\".index.html\"]", "must not start with a dot"),
        ("index = []", "at least one"),
        ("autoindex-max-entries = 0", "outside 1..=10000"),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let body = body.replace("{d}", d);
        let text = format!("[server]\nroot = \"{d}/www\"\n{body}\n");
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, &text).unwrap();
        let (code, out, err) = check_config(&["--config", file.to_str().unwrap()]);
        assert_eq!(code, 100, "{text}\nstdout: {out}\nstderr: {err}");
        assert!(err.contains(want), "{text}\nwant {want:?} in: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // The flags say the same.
    let (code, _, err) = check_config(&["--error-page", "200=/x.html"]);
    assert_eq!(code, 100);
    assert!(err.contains("--error-page \"200=/x.html\""), "{err}");
    let (code, _, err) = check_config(&["--unknown-host", "418"]);
    assert_eq!(code, 2, "a value clap refuses is a usage error: {err}");
}
