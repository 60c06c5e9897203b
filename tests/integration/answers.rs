//! What a file's metadata makes forkd answer, over a real socket: modification times outside
//! what an HTTP date can say (before 1970, after 9999, in the future) never kill a worker and
//! never produce a `Last-Modified` later than the `Date`; byte ranges at the edges of the
//! syntax; content types the browsers' registrations require.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::{body_of, header, per_mode, status_of, Mode, Server};

fn set_mtime(path: &Path, t: SystemTime) -> SystemTime {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(t).unwrap();
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn http_date(v: &str) -> SystemTime {
    httpdate::parse_http_date(v).unwrap_or_else(|e| panic!("not an HTTP date {v:?}: {e}"))
}

fn request(server: &Server, method: &str, path: &str, extra: &str) -> Vec<u8> {
    server.raw(
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n")
            .as_bytes(),
    )
}

/// A docroot on tmpfs when there is one: ext4 cannot store a year past 2446.
fn far_dates_root() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("forkd-dates")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

per_mode!(mtimes_outside_http_dates_are_served_with_a_sane_last_modified);
fn mtimes_outside_http_dates_are_served_with_a_sane_last_modified(mode: Mode) {
    let dir = far_dates_root();
    let root = dir.path();
    let cases = [
        ("old.txt", UNIX_EPOCH - Duration::from_secs(1)),
        (
            "ancient.txt",
            UNIX_EPOCH - Duration::from_secs(86_400 * 365 * 300),
        ),
        (
            "y10000.txt",
            UNIX_EPOCH + Duration::from_secs(300_000_000_000),
        ),
        (
            "tomorrow.txt",
            SystemTime::now() + Duration::from_secs(86_400),
        ),
        (
            "normal.txt",
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ),
    ];
    let mut stored = Vec::new();
    for (name, t) in cases {
        std::fs::write(root.join(name), name).unwrap();
        stored.push((name, set_mtime(&root.join(name), t)));
    }
    let server = mode.start(&["--root", root.to_str().unwrap()]);
    for (name, mtime) in &stored {
        for method in ["GET", "HEAD"] {
            let resp = request(&server, method, &format!("/{name}"), "");
            assert_eq!(status_of(&resp), 200, "{method} /{name} (mtime {mtime:?})");
            let date = http_date(&header(&resp, "Date").unwrap());
            let lm = http_date(&header(&resp, "Last-Modified").unwrap());
            assert!(
                lm <= date,
                "{name}: Last-Modified {lm:?} after Date {date:?}"
            );
            let want = if *mtime < UNIX_EPOCH {
                UNIX_EPOCH
            } else if *mtime > date {
                date
            } else {
                *mtime
            };
            let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
            assert_eq!(secs(lm), secs(want), "{name}: Last-Modified");
            if method == "GET" {
                assert_eq!(body_of(&resp), name.as_bytes());
            }
        }
        // The date sent validates: a conditional GET with it is a 304.
        let resp = request(&server, "GET", &format!("/{name}"), "");
        let lm = header(&resp, "Last-Modified").unwrap();
        let resp = request(
            &server,
            "GET",
            &format!("/{name}"),
            &format!("If-Modified-Since: {lm}\r\n"),
        );
        assert_eq!(status_of(&resp), 304, "{name} with If-Modified-Since: {lm}");
    }
    // Not one child died on the way, not even after sending its answer.
    assert_eq!(server.children_that_died(), Vec::<String>::new());
}

per_mode!(ranges_at_the_edges_of_the_syntax);
fn ranges_at_the_edges_of_the_syntax(mode: Mode) {
    let server = mode.with_site(&[], |root| {
        std::fs::write(root.join("empty.txt"), "").unwrap();
        std::fs::write(root.join("ten.txt"), "0123456789").unwrap();
    });
    let range = |path: &str, r: &str| request(&server, "GET", path, &format!("Range: {r}\r\n"));

    // RFC 9110 14.1.1: a non-zero suffix is satisfiable, even on an empty file: 200, empty.
    let resp = range("/empty.txt", "bytes=-5");
    assert_eq!(status_of(&resp), 200);
    assert_eq!(header(&resp, "Content-Length").as_deref(), Some("0"));
    assert!(header(&resp, "Content-Range").is_none());
    let resp = range("/empty.txt", "bytes=0-");
    assert_eq!(status_of(&resp), 416);
    assert_eq!(header(&resp, "Content-Range").as_deref(), Some("bytes */0"));

    // Positions of any length are numbers, not junk.
    let resp = range(
        "/ten.txt",
        "bytes=00000000000000000000002-0000000000000000000000004",
    );
    assert_eq!(status_of(&resp), 206);
    assert_eq!(body_of(&resp), b"234");
    let resp = range("/ten.txt", "bytes=7-99999999999999999999999");
    assert_eq!(status_of(&resp), 206);
    assert_eq!(
        header(&resp, "Content-Range").as_deref(),
        Some("bytes 7-9/10")
    );
    assert_eq!(body_of(&resp), b"789");
    let resp = range("/ten.txt", "bytes=99999999999999999999999-");
    assert_eq!(status_of(&resp), 416);
    let resp = range("/ten.txt", "bytes=-99999999999999999999999");
    assert_eq!(status_of(&resp), 206);
    assert_eq!(body_of(&resp), b"0123456789");
}

per_mode!(javascript_modules_and_source_maps_have_their_registered_types);
fn javascript_modules_and_source_maps_have_their_registered_types(mode: Mode) {
    let server = mode.with_site(&[], |root| {
        for f in ["app.js", "mod.mjs", "app.js.map"] {
            std::fs::write(root.join(f), "x").unwrap();
        }
    });
    for (path, want) in [
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/mod.mjs", "text/javascript; charset=utf-8"),
        // JSON is text: declared UTF-8 like the rest (RFC 8259 defines no charset, and says
        // one has no effect on a compliant reader; browsers' source-map loaders accept it).
        ("/app.js.map", "application/json; charset=utf-8"),
    ] {
        let (status, resp) = server.get(path);
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            header(&resp, "Content-Type").as_deref(),
            Some(want),
            "{path}"
        );
    }
}
