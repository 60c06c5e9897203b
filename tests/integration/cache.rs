//! Issue 9, part 2: the file cache of a worker never serves a file more than a second after
//! it changed, never follows where the safe open would not go, and holds its bounds.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{body_of, children, fds, per_mode, Client, Mode, Server};

/// The staleness bound, plus room for a request to reach the worker on a loaded machine.
const BOUND: Duration = Duration::from_millis(1300);

/// One worker, so every request meets the same cache. In fork mode each connection's child
/// starts with the master's empty cache: the bound holds there trivially, and the test says so.
fn one_worker(mode: Mode, fill: impl FnOnce(&Path)) -> Server {
    mode.pool(1).with_site(&[], fill)
}

/// Polls each path for two seconds after `changed` (the instant the change was complete);
/// fails if anything seen after the bound is not what that path should now give, or if that
/// is never seen.
fn served_after(s: &Server, changed: Instant, now: &[(&str, (u16, Vec<u8>))]) {
    let mut seen_new = vec![false; now.len()];
    while changed.elapsed() < Duration::from_secs(2) {
        for ((path, new), seen_new) in now.iter().zip(&mut seen_new) {
            let asked = changed.elapsed();
            let (status, resp) = s.get(path);
            let got = (status, body_of(&resp).to_vec());
            if asked > BOUND {
                assert_eq!(
                    &got,
                    new,
                    "{path}: asked {asked:?} after the change, still {status} {:?}",
                    String::from_utf8_lossy(&got.1)
                );
            }
            *seen_new |= got == *new;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen_new.iter().all(|&n| n), "never new: {seen_new:?}");
}

/// Asks for `path` until the worker surely holds it (a few requests, one connection).
fn warm(s: &Server, path: &str, want: &(u16, Vec<u8>)) {
    let mut c = Client::new(s);
    for _ in 0..3 {
        let r = c.get(path);
        assert_eq!(&(r.status, r.body), want, "{path} before the change");
    }
}

fn ok(body: &[u8]) -> (u16, Vec<u8>) {
    (200, body.to_vec())
}

fn not_found() -> (u16, Vec<u8>) {
    (404, b"404 Not Found\n".to_vec())
}

per_mode!(an_edited_file_is_served_new_within_a_second);
fn an_edited_file_is_served_new_within_a_second(mode: Mode) {
    let s = one_worker(mode, |root| {
        std::fs::write(root.join("same.txt"), "version one\n").unwrap();
        std::fs::write(root.join("grow.txt"), "short\n").unwrap();
        std::fs::write(root.join("renamed.txt"), "before the rename\n").unwrap();
        std::fs::write(root.join("big.bin"), vec![b'a'; 100_000]).unwrap();
    });
    let root = s.root();
    // Edited in place, same size: only the times tell (and, within a timestamp tick, not
    // even they: the entry is read again until its change time is old).
    warm(&s, "/same.txt", &ok(b"version one\n"));
    std::fs::write(root.join("same.txt"), "version two\n").unwrap();
    served_after(&s, Instant::now(), &[("/same.txt", ok(b"version two\n"))]);

    warm(&s, "/grow.txt", &ok(b"short\n"));
    std::fs::write(root.join("grow.txt"), "a good deal longer\n").unwrap();
    served_after(
        &s,
        Instant::now(),
        &[("/grow.txt", ok(b"a good deal longer\n"))],
    );

    // Replaced by a rename: another inode under the same name.
    warm(&s, "/renamed.txt", &ok(b"before the rename\n"));
    std::fs::write(root.join("tmp"), "after the rename\n").unwrap();
    std::fs::rename(root.join("tmp"), root.join("renamed.txt")).unwrap();
    served_after(
        &s,
        Instant::now(),
        &[("/renamed.txt", ok(b"after the rename\n"))],
    );

    // A large file, kept as a descriptor: a replacement of another size.
    warm(&s, "/big.bin", &ok(&[b'a'; 100_000]));
    std::fs::write(root.join("tmp"), vec![b'b'; 90_000]).unwrap();
    std::fs::rename(root.join("tmp"), root.join("big.bin")).unwrap();
    served_after(&s, Instant::now(), &[("/big.bin", ok(&[b'b'; 90_000]))]);
}

per_mode!(a_deleted_file_is_404_within_a_second);
fn a_deleted_file_is_404_within_a_second(mode: Mode) {
    let s = one_worker(mode, |root| {
        std::fs::write(root.join("gone.txt"), "here for now\n").unwrap();
        std::fs::write(root.join("gone.bin"), vec![b'x'; 100_000]).unwrap();
    });
    warm(&s, "/gone.txt", &ok(b"here for now\n"));
    warm(&s, "/gone.bin", &ok(&[b'x'; 100_000]));
    std::fs::remove_file(s.root().join("gone.txt")).unwrap();
    std::fs::remove_file(s.root().join("gone.bin")).unwrap();
    let deleted = Instant::now();
    served_after(
        &s,
        deleted,
        &[("/gone.txt", not_found()), ("/gone.bin", not_found())],
    );
}

per_mode!(a_symlink_swapped_in_to_point_outside_is_never_followed);
/// A cached file, and a cached file's directory, swapped for symlinks that lead out of the
/// root: the secret outside is never served, and the path is 404 within a second.
fn a_symlink_swapped_in_to_point_outside_is_never_followed(mode: Mode) {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "SECRET\n").unwrap();
    std::fs::create_dir(outside.path().join("dir")).unwrap();
    std::fs::write(outside.path().join("dir/page.txt"), "SECRET PAGE\n").unwrap();
    let s = one_worker(mode, |root| {
        std::fs::write(root.join("page.txt"), "public\n").unwrap();
        std::fs::create_dir(root.join("dir")).unwrap();
        std::fs::write(root.join("dir/page.txt"), "public too\n").unwrap();
    });
    let root = s.root();
    warm(&s, "/page.txt", &ok(b"public\n"));
    warm(&s, "/dir/page.txt", &ok(b"public too\n"));
    // Each swap is one rename, so there is no instant without the name.
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.join("link")).unwrap();
    std::fs::rename(root.join("link"), root.join("page.txt")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("dir"), root.join("dirlink")).unwrap();
    std::fs::remove_file(root.join("dir/page.txt")).unwrap();
    std::fs::remove_dir(root.join("dir")).unwrap();
    std::fs::rename(root.join("dirlink"), root.join("dir")).unwrap();
    let swapped = Instant::now();
    let mut seen = Vec::new();
    while swapped.elapsed() < Duration::from_secs(2) {
        for path in ["/page.txt", "/dir/page.txt"] {
            let (status, resp) = s.get(path);
            assert!(
                !String::from_utf8_lossy(&resp).contains("SECRET"),
                "{path} followed a symlink out of the root"
            );
            seen.push((path, swapped.elapsed(), status));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (path, at, status) in &seen {
        if *at > BOUND {
            assert_eq!(*status, 404, "{path} at {at:?}: {seen:?}");
        }
    }
}

/// The worker's open descriptors once the connection is idle, named.
fn worker_fds(s: &Server) -> Vec<String> {
    let worker = children(s.pid());
    assert_eq!(worker.len(), 1, "{worker:?}");
    fds(worker[0])
}

/// Twenty large files, and twenty small ones of 2,000 bytes.
fn many_files(root: &Path) {
    for i in 0..20 {
        std::fs::write(root.join(format!("big{i}.bin")), vec![b'x'; 70_000]).unwrap();
        std::fs::write(root.join(format!("small{i}.txt")), vec![b's'; 2000]).unwrap();
    }
}

/// Requests every file of [`many_files`] three times on one connection (the small ones first
/// each round), and returns the worker's descriptors beyond those it had with the connection
/// open and nothing cached.
fn descriptors_kept(args: &[&str]) -> Vec<String> {
    let mut all = vec!["--workers", "1"];
    all.extend_from_slice(args);
    let s = Server::with_site(&all, many_files);
    let mut c = Client::new(&s);
    assert_eq!(c.get("/missing").status, 404);
    let before = worker_fds(&s);
    for _ in 0..3 {
        for name in (0..20).map(|i| format!("/small{i}.txt")) {
            assert_eq!(c.get(&name).body.len(), 2000);
        }
        for name in (0..20).map(|i| format!("/big{i}.bin")) {
            assert_eq!(c.get(&name).body.len(), 70_000);
        }
    }
    // Answered only once the last file's request is over, descriptor closed.
    assert_eq!(c.get("/missing").status, 404);
    let after = worker_fds(&s);
    after.into_iter().filter(|f| !before.contains(f)).collect()
}

/// More distinct files than entries: the worker holds one descriptor per large file kept,
/// never more than the entries allowed; small files whose bytes fit cost none; no cache, none.
#[test]
fn the_cache_holds_its_bounds() {
    let kept = descriptors_kept(&["--file-cache-entries", "4"]);
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert!(kept.iter().all(|f| f.ends_with(".bin")), "{kept:?}");
    let kept = descriptors_kept(&["--file-cache-entries", "0"]);
    assert!(kept.is_empty(), "{kept:?}");
    // Entries for 30 of the 40, bytes for no small file's body: small files are kept open
    // too, and the entries still bound the total.
    let kept = descriptors_kept(&["--file-cache-entries", "30", "--file-cache-bytes", "1000"]);
    assert!(kept.len() <= 30, "{} kept: {kept:?}", kept.len());
    assert!(kept.iter().any(|f| f.ends_with(".txt")), "{kept:?}");
    assert!(
        kept.iter()
            .all(|f| f.ends_with(".bin") || f.ends_with(".txt")),
        "{kept:?}"
    );
}
