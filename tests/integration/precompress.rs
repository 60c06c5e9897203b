//! Issue 11: `forkd precompress DIR` on the embedded demo's files and on a generated tree of
//! a thousand files: complete siblings only, idempotent, and an interrupted run leaves no
//! partial sibling.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::FORKD;

const CODINGS: [&str; 3] = ["br", "zst", "gz"];

/// Lower levels for the large trees: what these tests prove does not depend on the level, and
/// brotli at 11 runs at about 100 KB/s on a busy test machine. The demo site is compressed at
/// the default levels.
const QUICK: [&str; 4] = ["--brotli-level", "5", "--zstd-level", "9"];

/// Runs `forkd precompress ARGS`; returns (exit code, stdout, stderr).
fn precompress(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(FORKD)
        .arg("precompress")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn decompress(coding: &str, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match coding {
        "gz" => {
            flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out)?;
        }
        "zst" => out = zstd::decode_all(bytes)?,
        _ => unreachable!(),
    }
    Ok(out)
}

/// Every file beneath `dir` (symlinks as themselves) with what identifies its version: a run
/// that writes nothing leaves this exactly as it was.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                let key = e.path().strip_prefix(dir).unwrap().to_path_buf();
                out.insert(key, (m.ino(), m.len(), m.mtime(), m.mtime_nsec()));
            }
        }
    }
    out
}

/// Checks every sibling beneath `dir`: a complete compression of its original, no older than
/// it (same modification time), smaller. Returns how many there are.
fn check_siblings(dir: &Path) -> usize {
    let mut n = 0;
    for path in snapshot(dir).keys() {
        let name = path.to_string_lossy();
        let Some(coding) = CODINGS.iter().find(|c| name.ends_with(&format!(".{c}"))) else {
            continue;
        };
        let sibling = dir.join(path);
        let original = sibling.with_extension("");
        let orig = std::fs::read(&original).unwrap();
        let got = decompress(coding, &std::fs::read(&sibling).unwrap())
            .unwrap_or_else(|e| panic!("{name}: not a complete {coding} stream: {e}"));
        assert!(got == orig, "{name}: does not decompress to its original");
        let (sm, om) = (
            std::fs::metadata(&sibling).unwrap(),
            std::fs::metadata(&original).unwrap(),
        );
        assert_eq!(sm.modified().unwrap(), om.modified().unwrap(), "{name}");
        assert!(sm.len() < om.len(), "{name}: not smaller");
        assert_eq!(sm.mode() & 0o777, om.mode() & 0o777, "{name}: mode");
        n += 1;
    }
    n
}

/// Names in the tree that a run may have left: temporary files.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_keys()
        .filter(|p| p.to_string_lossy().contains(".forkd-tmp-"))
        .collect()
}

fn summary_number(out: &str, what: &str) -> u64 {
    let at = out
        .find(what)
        .unwrap_or_else(|| panic!("no {what:?} in {out}"));
    out[..at]
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap()
}

/// The files the binary embeds (`server/site`), copied to a temporary directory.
#[test]
fn the_demo_site_is_compressed_once() {
    let dir = tempfile::tempdir().unwrap();
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("server/site");
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", site.display()))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let originals = snapshot(dir.path());
    let (code, out, err) = precompress(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    eprintln!("demo site:\n{out}");
    // Every page, the stylesheet and the icon are over 256 bytes and compress.
    assert_eq!(check_siblings(dir.path()), 3 * originals.len(), "{out}");
    assert_eq!(summary_number(&out, "written"), 3 * originals.len() as u64);
    let before = snapshot(dir.path());
    let (code, out, err) = precompress(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(summary_number(&out, "written"), 0, "{out}");
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a second run changed the tree"
    );
}

/// A small deterministic generator, so a failure can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Text that compresses: words from a small vocabulary.
    fn text(&mut self, len: usize) -> Vec<u8> {
        const WORDS: [&str; 12] = [
            "fork",
            "worker",
            "<p>",
            "</p>\n",
            "request",
            "the",
            "socket",
            "keep-alive",
            "static",
            "site",
            "class=\"x\"",
            "of",
        ];
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            out.extend_from_slice(WORDS[(self.next() % 12) as usize].as_bytes());
            out.push(b' ');
        }
        out.truncate(len);
        out
    }

    fn noise(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// 1,000 files in 20 directories: HTML, CSS, JS and JSON of 50 bytes to 20 KB (some below
/// the 256-byte minimum), text that does not compress, images, plus what must be left alone:
/// a dot-directory, a dot-file, a symlink out of the tree.
fn thousand_files(root: &Path, outside: &Path) -> usize {
    let mut rng = Rng(0x5eed_1234_5678_9abc);
    for i in 0..1000 {
        let r = rng.next() as usize;
        let dir = root.join(format!("d{:02}", i % 20));
        std::fs::create_dir_all(&dir).unwrap();
        let (name, bytes) = match i % 10 {
            0 => (format!("noise{i}.txt"), rng.noise(2000)),
            1 => (format!("img{i}.png"), rng.noise(3000)),
            2 => (format!("tiny{i}.html"), rng.text(50 + (i % 200))),
            3 => (format!("s{i}.css"), rng.text(300 + r % 5000)),
            4 => (format!("a{i}.js"), rng.text(300 + r % 20000)),
            5 => (format!("d{i}.json"), rng.text(400 + r % 3000)),
            _ => (format!("p{i}.html"), rng.text(256 + r % 8000)),
        };
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/big.html"), rng.text(5000)).unwrap();
    std::fs::write(root.join(".env.html"), rng.text(5000)).unwrap();
    std::fs::write(outside, rng.text(5000)).unwrap();
    std::os::unix::fs::symlink(outside, root.join("out.html")).unwrap();
    1000
}

#[test]
fn a_thousand_files_idempotent_and_incremental() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    thousand_files(&root, &dir.path().join("outside.html"));
    let r = root.to_str().unwrap();
    let run = |r: &str| precompress(&[&QUICK[..], &[r]].concat());
    let started = Instant::now();
    let (code, out, err) = run(r);
    eprintln!("1,000 files in {:?}:\n{out}", started.elapsed());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(summary_number(&out, "files"), 1000, "{out}");
    let siblings = check_siblings(&root);
    assert_eq!(summary_number(&out, "written"), siblings as u64, "{out}");
    // 700 text files of 256 bytes or more, three siblings each (noise does not compress,
    // images are not a compressible type, the tiny pages are under 256 bytes).
    assert_eq!(siblings, 3 * 700, "{out}");
    assert!(out.contains("1 symlinks skipped"), "{out}");
    // Left alone: the dot-directory, the dot-file, the noise, the images, the symlink.
    let names = snapshot(&root);
    for p in names.keys() {
        let p = p.to_string_lossy();
        if CODINGS.iter().any(|c| p.ends_with(&format!(".{c}"))) {
            assert!(
                !p.contains(".git")
                    && !p.contains(".env")
                    && !p.contains("noise")
                    && !p.contains("img")
                    && !p.starts_with("out"),
                "{p} should not have siblings"
            );
        }
    }
    assert!(!dir.path().join("outside.html.gz").exists());

    // A second run writes nothing: the tree is exactly as it was.
    let (code, out2, err) = run(r);
    assert_eq!(code, 0, "{out2}{err}");
    assert_eq!(summary_number(&out2, "written"), 0, "{out2}");
    assert_eq!(snapshot(&root), names, "a second run changed the tree");

    // One file edited: only its three siblings are written again. Another shrunk below the
    // minimum: its stale siblings are removed.
    let edited = root.join("d04/a4.js");
    let shrunk = root.join("d06/p6.html");
    assert!(with_suffix(&shrunk, "gz").exists());
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&edited, Rng(7).text(9000)).unwrap();
    std::fs::write(&shrunk, b"short now").unwrap();
    let (code, out3, err) = run(r);
    assert_eq!(code, 0, "{out3}{err}");
    assert_eq!(summary_number(&out3, "written"), 3, "{out3}");
    assert_eq!(summary_number(&out3, "stale removed"), 3, "{out3}");
    for c in CODINGS {
        assert!(!with_suffix(&shrunk, c).exists());
    }
    check_siblings(&root);
    let after = snapshot(&root);
    let changed: Vec<&PathBuf> = after
        .iter()
        .filter(|(p, v)| names.get(*p) != Some(v))
        .map(|(p, _)| p)
        .collect();
    // The two files, and the edited one's three new siblings.
    assert_eq!(changed.len(), 5, "{changed:?}");
    assert!(leftovers(&root).is_empty());
}

/// How many siblings are in place (by name only: cheap enough to poll).
fn count_siblings(dir: &Path) -> usize {
    snapshot(dir)
        .keys()
        .filter(|p| {
            let p = p.to_string_lossy();
            !p.starts_with('.') && CODINGS.iter().any(|c| p.ends_with(&format!(".{c}")))
        })
        .count()
}

fn with_suffix(path: &Path, coding: &str) -> PathBuf {
    PathBuf::from(format!("{}.{coding}", path.display()))
}

/// Killed with SIGKILL in the middle of a run over large files: every sibling present is
/// complete; a temporary file, if one was left, is a dot-file (forkd answers 404 for those)
/// and the next run removes it and completes the work.
#[test]
fn an_interrupted_run_leaves_no_partial_sibling() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut rng = Rng(42);
    for i in 0..8 {
        std::fs::write(root.join(format!("big{i:02}.html")), rng.text(400_000)).unwrap();
    }
    // A leftover of a run that died long ago (a pid no process has), and one of a live run
    // (this test's own pid): the first is removed, the second kept.
    let dead = root.join(".big00.html.gz.forkd-tmp-2147483647-1");
    let live = root.join(format!(".big00.html.br.forkd-tmp-{}-1", std::process::id()));
    std::fs::write(&dead, b"partial").unwrap();
    std::fs::write(&live, b"in progress").unwrap();
    let mut kills = 0;
    for attempt in 0..3 {
        let mut child = Command::new(FORKD)
            .arg("precompress")
            .args(QUICK)
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let it finish a sibling or more, then kill it while it writes the next.
        let before = count_siblings(root);
        let started = Instant::now();
        while count_siblings(root) < before + 1 + attempt
            && started.elapsed() < Duration::from_secs(60)
        {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(150));
        if child.try_wait().unwrap().is_none() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        // Whatever is there is whole.
        check_siblings(root);
        for p in leftovers(root) {
            assert!(
                p.file_name().unwrap().to_string_lossy().starts_with('.'),
                "{p:?} is a temporary file forkd could serve"
            );
        }
    }
    assert!(kills > 0, "the run was never caught in the middle");
    let (code, out, err) = precompress(&[&QUICK[..], &[root.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(check_siblings(root), 24, "{out}");
    assert!(!dead.exists(), "a dead run's temporary file stays");
    assert!(live.exists(), "a live run's temporary file was removed");
    std::fs::remove_file(&live).unwrap();
    assert!(leftovers(root).is_empty(), "{:?}", leftovers(root));
}

#[test]
fn clear_errors() {
    let (code, _, err) = precompress(&["/nonexistent/forkd-test"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/forkd-test") && err.contains("No such file"),
        "{err}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let (code, _, err) = precompress(&[file.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a directory"), "{err}");
    let (code, _, err) = precompress(&["--gzip-level", "12", "/tmp"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gzip-level"), "{err}");
    let (code, _, err) = precompress(&["--encodings", "br,lzma", "/tmp"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("lzma"), "{err}");
    // An unreadable file is named, the others are done, the status says so.
    if !nix::unistd::Uid::effective().is_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.html"), "x".repeat(1000)).unwrap();
        let locked = dir.path().join("locked.html");
        std::fs::write(&locked, "y".repeat(1000)).unwrap();
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000))
            .unwrap();
        let (code, out, err) = precompress(&[dir.path().to_str().unwrap()]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains("locked.html") && err.contains("ermission denied"),
            "{err}"
        );
        assert!(dir.path().join("ok.html.gz").exists());
    }
}

/// Run while forkd serves the tree: every answer, whatever coding it came in, decodes to the
/// file, while siblings appear, go stale (the files touched) and are replaced by renames.
#[test]
fn a_run_while_forkd_serves_never_shows_a_partial_sibling() {
    let server = crate::util::Server::with_site(&["--workers", "2"], |root| {
        let mut rng = Rng(99);
        for i in 0..20 {
            std::fs::write(root.join(format!("p{i}.html")), rng.text(40_000)).unwrap();
        }
    });
    let root = server.root();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (stop, root, server_addr) = (stop.clone(), root.clone(), server.addr);
        std::thread::spawn(move || {
            let mut seen = BTreeMap::<String, u64>::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("p{}.html", i % 20);
                i += 1;
                let req = format!(
                    "GET /{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                     Accept-Encoding: {}\r\n\r\n",
                    ["br", "zstd", "gzip", "br, zstd, gzip"][i % 4]
                );
                let mut s = std::net::TcpStream::connect(server_addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                use std::io::Write;
                s.write_all(req.as_bytes()).unwrap();
                let mut resp = Vec::new();
                s.read_to_end(&mut resp).unwrap();
                assert_eq!(crate::util::status_of(&resp), 200, "{name}");
                let r_body = crate::util::body_of(&resp).to_vec();
                let coding = crate::util::header(&resp, "content-encoding");
                let body = match coding.as_deref() {
                    None => r_body.clone(),
                    Some("br") => decompress("br", &r_body).unwrap(),
                    Some("zstd") => decompress("zst", &r_body).unwrap(),
                    Some("gzip") => decompress("gz", &r_body).unwrap(),
                    Some(other) => panic!("{other}"),
                };
                assert!(
                    body == std::fs::read(root.join(&name)).unwrap(),
                    "{name} as {coding:?} is not the file"
                );
                *seen
                    .entry(coding.unwrap_or_else(|| "identity".into()))
                    .or_default() += 1;
            }
            seen
        })
    };
    let r = root.to_str().unwrap();
    let run = || {
        let (code, out, err) = precompress(&[&QUICK[..], &[r]].concat());
        assert_eq!(code, 0, "{out}{err}");
    };
    run();
    // Every file touched: its siblings are stale (the original is sent) until rewritten.
    std::thread::sleep(Duration::from_millis(1100));
    for i in 0..20 {
        let f = std::fs::File::options()
            .append(true)
            .open(root.join(format!("p{i}.html")))
            .unwrap();
        f.set_modified(std::time::SystemTime::now()).unwrap();
    }
    run();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = client.join().unwrap();
    eprintln!("answers by coding: {seen:?}");
    for coding in ["identity", "br", "zstd", "gzip"] {
        assert!(seen.get(coding).copied().unwrap_or(0) > 0, "{seen:?}");
    }
}
