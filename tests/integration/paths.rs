//! Which file a request target names, against the real `forkd` over loopback: the 301's
//! `Location` built from the resolved path (never an open redirect), dot segments resolved
//! without climbing, file names that are not UTF-8, the dot-path allow-list checked on what
//! symlinks lead to, and a docroot the children's user cannot read refused at start.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use crate::util::{body_of, eventually, header, per_mode, status_of, Mode, Server};

/// `GET target` as sent, byte for byte (no client normalises it on the way).
fn get(s: &Server, target: &str) -> (u16, Vec<u8>) {
    let req = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let resp = s.raw(req.as_bytes());
    (status_of(&resp), resp)
}

/// The value of an unlabelled or labelled sample in Prometheus text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// Waits until the published `path_refused` counter reads `want`.
fn wait_path_refused(metrics: &Path, want: u64) {
    let name = "forkd_limit_hits_total{limit=\"path_refused\"}";
    eventually(
        Duration::from_secs(10),
        "path_refused in the metrics file",
        || {
            let t = std::fs::read_to_string(metrics).ok()?;
            (metric(&t, name)? == want).then_some(())
        },
    );
    // Stays there: nothing else was counted a moment later either.
    std::thread::sleep(Duration::from_millis(1200));
    let t = std::fs::read_to_string(metrics).unwrap();
    assert_eq!(metric(&t, name), Some(want), "{t}");
}

per_mode!(redirect_location_is_the_resolved_path_never_another_host);
fn redirect_location_is_the_resolved_path_never_another_host(mode: Mode) {
    let s = mode.with_site(&[], |root| {
        for dir in ["example.org", "a/b", "sp ace", "café", "100%", "x;y=1"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join("index.html"), dir).unwrap();
        }
        let latin1 = root.join(OsStr::from_bytes(b"caf\xe9"));
        std::fs::create_dir(&latin1).unwrap();
        std::fs::write(latin1.join("index.html"), "latin-1").unwrap();
    });
    let cases = [
        ("//example.org", "/example.org/"),
        ("///example.org", "/example.org/"),
        ("//example.org?next=//evil", "/example.org/?next=//evil"),
        ("/example.org", "/example.org/"),
        ("/a//b", "/a/b/"),
        ("//a/b", "/a/b/"),
        ("/x/%2e%2e/a/b", "/a/b/"),
        ("/a/./b", "/a/b/"),
        ("/a/b/c/..//../b?q=1", "/a/b/?q=1"),
        ("/%2e/example.org", "/example.org/"),
        ("/sp%20ace", "/sp%20ace/"),
        ("/caf%c3%a9", "/caf%C3%A9/"),
        ("/caf%E9", "/caf%E9/"),
        ("/100%25", "/100%25/"),
        ("/x;y=1", "/x;y=1/"),
        ("/%78;y=1", "/x;y=1/"),
    ];
    for (target, want) in cases {
        let (status, resp) = get(&s, target);
        assert_eq!(status, 301, "{target}: {}", String::from_utf8_lossy(&resp));
        let location = header(&resp, "location").unwrap();
        assert_eq!(location, want, "{target}");
        assert!(
            location.starts_with('/') && !location.starts_with("//"),
            "{target}"
        );
        // Following it lands on the directory's index.
        assert_eq!(get(&s, &location).0, 200, "{target} -> {location}");
    }
    // An encoded `/` does not build a `//` either: it is refused before any redirect.
    assert_eq!(get(&s, "/%2fexample.org").0, 404);
    assert_eq!(get(&s, "/%2F%2Fexample.org").0, 404);
}

per_mode!(dot_segments_are_resolved_and_never_climb);
fn dot_segments_are_resolved_and_never_climb(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("forkd.prom");
    let s = mode.with_site(&["--metrics-file", metrics.to_str().unwrap()], |root| {
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("index.html"), "home").unwrap();
        std::fs::write(root.join("a/b/f.txt"), "f").unwrap();
        std::fs::write(root.join("b.txt"), "top b").unwrap();
        std::fs::write(root.join("a/b.txt"), "a's b").unwrap();
        std::fs::write(root.join("a/index.html"), "a index").unwrap();
    });
    for (target, body) in [
        ("/a/./b/f.txt", "f"),
        ("/a/../b.txt", "top b"),
        ("/a/b/../b.txt", "a's b"),
        ("/a/b/../../index.html", "home"),
        ("/a/%2e%2e/b.txt", "top b"),
        ("/a/%2E%2e/b.txt", "top b"),
        ("/a/.%2e/b.txt", "top b"),
        ("/a/%2e/b.txt", "a's b"),
        ("/a/..", "home"),
        ("/a/b/%2e%2e", "a index"),
        ("/a/b/..?x", "a index"),
        ("/.git/../b.txt", "top b"),
    ] {
        let (status, resp) = get(&s, target);
        assert_eq!(status, 200, "{target}: {}", String::from_utf8_lossy(&resp));
        assert_eq!(body_of(&resp), body.as_bytes(), "{target}");
    }
    // Climbing above the root: 404 and counted, however it is spelled.
    let climbs = [
        "/..",
        "/../index.html",
        "/a/../../index.html",
        "/a/b/../../../etc/passwd",
        "/%2e%2e/index.html",
        "/%2E%2E/%2e%2e/etc/passwd",
        "/.%2e/index.html",
        "//../index.html",
        "/./../index.html",
    ];
    for target in climbs {
        let (status, resp) = get(&s, target);
        assert_eq!(status, 404, "{target}");
        assert!(!body_of(&resp).starts_with(b"home"), "{target}");
    }
    // Decoded separators stay refused.
    for target in ["/a%2fb.txt", "/a%5cb.txt", "/a%2f..%2fb.txt"] {
        assert_eq!(get(&s, target).0, 404, "{target}");
    }
    wait_path_refused(&metrics, (climbs.len() + 3) as u64);
}

per_mode!(names_that_are_not_utf8_are_reachable_and_control_bytes_are_not);
fn names_that_are_not_utf8_are_reachable_and_control_bytes_are_not(mode: Mode) {
    let s = mode.with_site(&[], |root| {
        std::fs::write(root.join(OsStr::from_bytes(b"caf\xe9.txt")), "latin-1").unwrap();
        std::fs::write(root.join("café.txt"), "utf-8").unwrap();
        std::fs::write(root.join("index.html"), "home").unwrap();
    });
    for (target, want) in [("/caf%E9.txt", "latin-1"), ("/caf%C3%A9.txt", "utf-8")] {
        let (status, resp) = get(&s, target);
        assert_eq!((status, body_of(&resp)), (200, want.as_bytes()), "{target}");
    }
    for (target, want) in [
        // Overlong encodings of `.` and `/` are bytes that are neither: nothing of that name.
        ("/%c0%ae%c0%ae/index.html", 404),
        ("/%c0%af/index.html", 404),
        ("/%e0%80%ae%e0%80%ae/index.html", 404),
        ("/%ff", 404),
        // Decoded NUL and control bytes stay malformed.
        ("/index.html%00", 400),
        ("/caf%E9.txt%00", 400),
        ("/a%0ab", 400),
        ("/a%0d%0aSet-Cookie:x", 400),
        ("/a%1f", 400),
        ("/a%7f", 400),
    ] {
        assert_eq!(get(&s, target).0, want, "{target}");
    }

    // The embedded site has only UTF-8 names: the rest names nothing there.
    let embedded = mode.start(&[]);
    for target in ["/caf%E9", "/%ff/", "/%c0%ae%c0%ae/etc/passwd"] {
        assert_eq!(get(&embedded, target).0, 404, "{target}");
    }
    assert_eq!(get(&embedded, "/a%00").0, 400);
    assert_eq!(get(&embedded, "/posts/./").0, 200);
}

/// A site with dot-paths reachable directly and through symlinks.
fn dotted(root: &Path) {
    std::fs::write(root.join("index.html"), "home").unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/config"), "[core] secret").unwrap();
    std::fs::write(root.join(".env"), "SECRET=1").unwrap();
    std::fs::create_dir_all(root.join(".well-known/acme-challenge")).unwrap();
    std::fs::write(root.join(".well-known/acme-challenge/token"), "tok.key").unwrap();
    std::fs::write(root.join(".well-known/security.txt"), "Contact: x").unwrap();
    std::fs::write(root.join(".well-known/.hidden"), "SECRET hidden").unwrap();
    std::fs::create_dir_all(root.join("real-dir")).unwrap();
    std::fs::write(root.join("real-dir/file.txt"), "real").unwrap();
    symlink(".git", root.join("link")).unwrap();
    symlink(".git/config", root.join("config-link")).unwrap();
    symlink("real-dir/../.env", root.join("env-link")).unwrap();
    symlink("real-dir", root.join("ok-link")).unwrap();
    symlink(".well-known", root.join("wk")).unwrap();
}

per_mode!(dot_paths_follow_the_allow_list_through_symlinks_too);
fn dot_paths_follow_the_allow_list_through_symlinks_too(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("forkd.prom");
    let s = mode.with_site(&["--metrics-file", metrics.to_str().unwrap()], dotted);
    let served = [
        ("/.well-known/acme-challenge/token", "tok.key"),
        ("/.well-known/security.txt", "Contact: x"),
        ("/%2ewell-known/security.txt", "Contact: x"),
        ("/ok-link/file.txt", "real"),
        ("/wk/security.txt", "Contact: x"),
        ("/index.html", "home"),
    ];
    for (target, want) in served {
        let (status, resp) = get(&s, target);
        assert_eq!((status, body_of(&resp)), (200, want.as_bytes()), "{target}");
    }
    let refused = [
        "/link/config",
        "/config-link",
        "/env-link",
        "/.git/config",
        "/.env",
        "/.well-known/.hidden",
        "/wk/.hidden",
    ];
    for target in refused {
        let (status, resp) = get(&s, target);
        assert_eq!(status, 404, "{target}");
        assert!(
            !String::from_utf8_lossy(&resp).contains("SECRET"),
            "{target} leaked"
        );
        assert!(
            !String::from_utf8_lossy(&resp).contains("[core]"),
            "{target} leaked"
        );
    }
    wait_path_refused(&metrics, refused.len() as u64);

    // A list of our own replaces the default.
    let s = mode.with_site(&["--allow-dot-path", "/.git/"], dotted);
    assert_eq!(get(&s, "/.git/config").0, 200);
    assert_eq!(get(&s, "/link/config").0, 200);
    assert_eq!(get(&s, "/config-link").0, 200);
    assert_eq!(get(&s, "/.env").0, 404);
    assert_eq!(get(&s, "/env-link").0, 404);
    assert_eq!(get(&s, "/.well-known/security.txt").0, 404);
    // And an empty one allows none.
    let s = mode.with_site(&["--allow-dot-path", ""], dotted);
    assert_eq!(get(&s, "/.well-known/acme-challenge/token").0, 404);
    assert_eq!(get(&s, "/wk/security.txt").0, 404);
    assert_eq!(get(&s, "/ok-link/file.txt").0, 200);
}

/// Who children run as when the test starts forkd plainly, and the owner name of what the
/// test creates.
fn child_user() -> (String, String) {
    let me = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .unwrap()
        .unwrap()
        .name;
    if nix::unistd::Uid::effective().is_root() {
        ("nobody".into(), me)
    } else {
        (me.clone(), me)
    }
}

/// Mode that keeps the children's user out of a directory the test owns: as root, children
/// run as nobody, for whom 0700 is enough (root itself passes any mode); otherwise they run as
/// the test's own user, who only a mode of 0 keeps out (and even then only without
/// CAP_DAC_OVERRIDE, which a non-root test does not have).
fn closed_mode() -> u32 {
    if nix::unistd::Uid::effective().is_root() {
        0o700
    } else {
        0o000
    }
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn docroot() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir(&root).unwrap();
    chmod(dir.path(), 0o755);
    chmod(&root, 0o755);
    std::fs::write(root.join("index.html"), "home").unwrap();
    (dir, root)
}

per_mode!(docroot_the_children_cannot_search_is_refused_at_start_and_on_reload);
fn docroot_the_children_cannot_search_is_refused_at_start_and_on_reload(mode: Mode) {
    use crate::util::{Proc, FORKD};
    let (user, owner) = child_user();
    let closed = closed_mode();
    let (_dir, root) = docroot();
    chmod(&root, closed);
    let want = format!(
        "forkd: --root {}: user {user} cannot search it (mode {closed:04o}, owner {owner})",
        root.display()
    );
    let mut args = mode.args();
    args.extend(["--root", root.to_str().unwrap(), "--listen", "127.0.0.1:0"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut refused = Proc::spawn(FORKD, &args);
    assert_eq!(refused.wait_exit(Duration::from_secs(10)).code(), Some(100));
    refused.wait_line(&want, Duration::from_secs(2));

    // Not started as root, children keep the master's credentials and the check uses them.
    if nix::unistd::Uid::effective().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let mut cmd = std::process::Command::new(FORKD);
        std::os::unix::process::CommandExt::uid(&mut cmd, nobody.uid.as_raw());
        std::os::unix::process::CommandExt::gid(&mut cmd, nobody.gid.as_raw());
        let mut refused = Proc::spawn_cmd(cmd.args(&args));
        assert_eq!(refused.wait_exit(Duration::from_secs(10)).code(), Some(100));
        refused.wait_line(&want, Duration::from_secs(2));
    } else {
        eprintln!("not root: the probe child that drops to another user is not exercised");
    }

    // A reload onto a root that became unreadable keeps serving the running configuration.
    chmod(&root, 0o755);
    let s = Server::start(&args);
    assert_eq!(get(&s, "/").0, 200);
    chmod(&root, closed);
    s.proc.signal(nix::sys::signal::Signal::SIGHUP);
    let line = s.proc.wait_line("reload failed", Duration::from_secs(10));
    assert!(
        line.contains(&format!("user {user} cannot search it")),
        "{line}"
    );
    chmod(&root, 0o755);
    assert_eq!(get(&s, "/").0, 200);
}

per_mode!(unreadable_index_is_a_warning_and_its_403_is_logged);
fn unreadable_index_is_a_warning_and_its_403_is_logged(mode: Mode) {
    let (user, _) = child_user();
    let s = mode.with_site(&[], |root| {
        std::fs::write(root.join("index.html"), "home").unwrap();
        std::fs::write(root.join("ok.txt"), "ok").unwrap();
        chmod(&root.join("index.html"), closed_mode() & 0o600);
    });
    let line = s
        .proc
        .wait_line("cannot read its index file", Duration::from_secs(2));
    assert!(
        line.contains(&format!(
            "user {user} cannot read its index file index.html"
        )),
        "{line}"
    );
    assert_eq!(get(&s, "/ok.txt").0, 200);
    assert_eq!(get(&s, "/").0, 403);
    let line = s
        .proc
        .wait_line("permission denied", Duration::from_secs(5));
    assert!(line.contains("index.html"), "{line}");
}
