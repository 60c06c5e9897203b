//! Table tests over `decide`: a request in, a reply out, no socket. Each case is a raw request
//! (parsed as the connection would), the status, the header fields that must be there or
//! absent, and where the body comes from, checked against the encoded head.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::http::parse;

const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
const DATE_SECS: u64 = 784_111_777;
/// The modification time of every fixture file: one hour before `DATE`.
const MTIME: &str = "Sun, 06 Nov 1994 07:49:37 GMT";
const SMALL: &[u8] = b"hello world\n";
const BIG_LEN: usize = 100_000;
const PLAIN: Option<&str> = Some("text/plain; charset=utf-8");
const HTML: Option<&str> = Some("text/html; charset=utf-8");

fn big() -> Vec<u8> {
    (0..BIG_LEN).map(|i| (i % 251) as u8).collect()
}

/// A docroot: `small.txt`, `big.bin` (sent with `sendfile`), `sub/index.html`, `sp ace/`
/// (a directory with an index), `noindex/`, `.env`, and `out` (a symlink out of the root).
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mtime = UNIX_EPOCH + Duration::from_secs(784_111_777 - 3600);
    let write = |rel: &str, bytes: &[u8]| {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        f.set_modified(mtime).unwrap();
    };
    write("small.txt", SMALL);
    write("big.bin", &big());
    write("sub/index.html", b"<p>sub</p>\n");
    write("sp ace/index.html", b"space\n");
    write(".env", b"SECRET=1\n");
    fs::create_dir(root.join("noindex")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("out")).unwrap();
    dir
}

/// The entity tag `decide` gives a file on disk.
fn etag(path: &Path) -> String {
    let m = fs::metadata(path).unwrap();
    let nanos = (m.mtime() as u64) * 1_000_000_000 + m.mtime_nsec() as u64;
    format!("\"{:x}-{:x}-{nanos:x}\"", m.ino(), m.len())
}

/// Where a reply's body comes from, as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    /// No body bytes follow the head.
    Nothing,
    /// These bytes, in memory (sent gathered with the head).
    Bytes(Vec<u8>),
    /// This range of the file, by `sendfile`.
    File { offset: u64, len: u64 },
}

/// What `decide` produced, decoded.
#[derive(Debug)]
struct Seen {
    status: u16,
    persist: Persist,
    fields: Vec<(String, String)>,
    body: Want,
    body_len: u64,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn decide_raw(root: &Docroot, cfg: &Config, req: &[u8], persist: Persist) -> Seen {
    let head = parse::parse(req, cfg)
        .unwrap_or_else(|e| panic!("{:?} refused by parse: {e:?}", String::from_utf8_lossy(req)))
        .unwrap();
    let vhosts = crate::http::VHosts::default();
    let env = Env {
        cfg,
        root,
        vhosts: &vhosts,
        date: DATE,
        date_secs: DATE_SECS,
    };
    let mut s = Scratch::default();
    let reply = decide(&env, req, &head, persist, &mut s).unwrap();

    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut fields);
    let n = match r.parse(&s.out).unwrap() {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("partial head"),
    };
    assert_eq!(n, s.out.len(), "bytes after the head in Scratch::out");
    assert_eq!(r.code, Some(reply.status));
    let fields = r
        .headers
        .iter()
        .map(|f| {
            let v = String::from_utf8(f.value.to_vec()).unwrap();
            (f.name.to_string(), v)
        })
        .collect();
    let body = match &reply.payload {
        Payload::None => Want::Nothing,
        Payload::Static(b) => Want::Bytes(b.to_vec()),
        Payload::Buffered(n) => Want::Bytes(s.file[..*n].to_vec()),
        Payload::Shared { body, range } => Want::Bytes(body[range.clone()].to_vec()),
        Payload::File { offset, len, .. } => Want::File {
            offset: *offset,
            len: *len,
        },
    };
    Seen {
        status: reply.status,
        persist: reply.persist,
        fields,
        body,
        body_len: reply.body_len(),
    }
}

/// One table: each request is sent with `Host: h`; `{small}` and `{big}` in a request or an
/// expected value stand for those files' entity tags. An expected value of `None` means the
/// field must be absent.
type Case<'a> = (&'a str, u16, &'a [(&'a str, Option<&'a str>)], Want);

fn run_table(root: &Docroot, cfg: &Config, tags: &[(&str, String)], cases: Vec<Case<'_>>) {
    let fill = |t: &str| {
        tags.iter()
            .fold(t.to_string(), |t, (k, v)| t.replace(&format!("{{{k}}}"), v))
    };
    for (req, status, want_fields, want_body) in cases {
        let (line, extra) = req.split_once('\n').unwrap_or((req, ""));
        let mut raw = format!("{line}\r\nHost: h\r\n");
        for field in extra.split('\n').filter(|l| !l.is_empty()) {
            raw.push_str(field);
            raw.push_str("\r\n");
        }
        raw.push_str("\r\n");
        let raw = fill(&raw);
        let seen = decide_raw(root, cfg, raw.as_bytes(), Persist::KeepAlive);
        let ctx = format!("{req:?} -> {seen:?}");
        assert_eq!(seen.status, status, "{ctx}");
        assert_eq!(seen.body, want_body, "{ctx}");
        for (name, want) in want_fields {
            let want = want.map(fill);
            assert_eq!(seen.field(name), want.as_deref(), "{name} of {ctx}");
        }
        assert_eq!(seen.field("Date").map(str::as_bytes), Some(DATE), "{ctx}");
        assert_eq!(seen.field("Server"), Some("forkd"), "{ctx}");
        assert_eq!(seen.persist, Persist::KeepAlive, "{ctx}");
        // The length logged is what follows the head; the length stated is the
        // representation's (HEAD states it and sends nothing).
        let sent = match &seen.body {
            Want::Nothing => 0,
            Want::Bytes(b) => b.len() as u64,
            Want::File { len, .. } => *len,
        };
        assert_eq!(seen.body_len, sent, "{ctx}");
        if let (Some(cl), false) = (seen.field("Content-Length"), req.starts_with("HEAD")) {
            assert_eq!(cl.parse::<u64>().unwrap(), sent, "{ctx}");
        }
    }
}

fn text(s: &str) -> Want {
    Want::Bytes(s.as_bytes().to_vec())
}

#[test]
fn files_on_disk() {
    let dir = fixture();
    let root = Docroot::open(dir.path()).unwrap();
    let cfg = Config::default();
    let tags = [
        ("small", etag(&dir.path().join("small.txt"))),
        ("big", etag(&dir.path().join("big.bin"))),
    ];
    let small = || Want::Bytes(SMALL.to_vec());
    let big = big();
    let cases: Vec<Case<'_>> = vec![
        // 200: a small file in memory, gathered with its head; a large one by sendfile.
        (
            "GET /small.txt HTTP/1.1",
            200,
            &[
                ("Content-Type", PLAIN),
                ("Content-Length", Some("12")),
                ("ETag", Some("{small}")),
                ("Last-Modified", Some(MTIME)),
                ("Accept-Ranges", Some("bytes")),
                ("Content-Range", None),
                ("Connection", None),
            ],
            small(),
        ),
        (
            "GET /big.bin HTTP/1.1",
            200,
            &[
                ("Content-Type", Some("application/octet-stream")),
                ("Content-Length", Some("100000")),
                ("ETag", Some("{big}")),
            ],
            Want::File {
                offset: 0,
                len: BIG_LEN as u64,
            },
        ),
        (
            "GET /sub/ HTTP/1.1",
            200,
            &[("Content-Type", Some("text/html; charset=utf-8"))],
            text("<p>sub</p>\n"),
        ),
        ("GET /sp%20ace/ HTTP/1.1", 200, &[], text("space\n")),
        ("GET http://other/small.txt HTTP/1.1", 200, &[], small()),
        // HEAD: the same head, no body.
        (
            "HEAD /small.txt HTTP/1.1",
            200,
            &[("Content-Length", Some("12")), ("ETag", Some("{small}"))],
            Want::Nothing,
        ),
        (
            "HEAD /big.bin HTTP/1.1",
            200,
            &[("Content-Length", Some("100000"))],
            Want::Nothing,
        ),
        // 206: a small part of a large file is read, a large part is sent from the file.
        (
            "GET /big.bin HTTP/1.1\nRange: bytes=10-19",
            206,
            &[
                ("Content-Range", Some("bytes 10-19/100000")),
                ("Content-Length", Some("10")),
            ],
            Want::Bytes(big[10..20].to_vec()),
        ),
        (
            "GET /big.bin HTTP/1.1\nRange: bytes=30000-",
            206,
            &[("Content-Range", Some("bytes 30000-99999/100000"))],
            Want::File {
                offset: 30_000,
                len: 70_000,
            },
        ),
        (
            "GET /small.txt HTTP/1.1\nRange: bytes=-5",
            206,
            &[("Content-Range", Some("bytes 7-11/12"))],
            text("orld\n"),
        ),
        // Range is for GET only, and If-Range must still hold.
        (
            "HEAD /small.txt HTTP/1.1\nRange: bytes=0-1",
            200,
            &[("Content-Range", None)],
            Want::Nothing,
        ),
        (
            "GET /small.txt HTTP/1.1\nRange: bytes=0-1\nIf-Range: \"other\"",
            200,
            &[],
            small(),
        ),
        (
            "GET /small.txt HTTP/1.1\nRange: bytes=0-1\nIf-Range: {small}",
            206,
            &[],
            text("he"),
        ),
        // A multi-range request is answered whole.
        (
            "GET /small.txt HTTP/1.1\nRange: bytes=0-1,3-4",
            200,
            &[],
            small(),
        ),
        // 416
        (
            "GET /small.txt HTTP/1.1\nRange: bytes=50-",
            416,
            &[
                ("Content-Range", Some("bytes */12")),
                ("Content-Type", PLAIN),
                ("ETag", None),
            ],
            text("416 Range Not Satisfiable\n"),
        ),
        // 304: a validator the client holds still matches; only the ETag is repeated.
        (
            "GET /small.txt HTTP/1.1\nIf-None-Match: \"x\", {small}",
            304,
            &[
                ("ETag", Some("{small}")),
                ("Content-Length", None),
                ("Last-Modified", None),
            ],
            Want::Nothing,
        ),
        (
            "HEAD /big.bin HTTP/1.1\nIf-None-Match: *",
            304,
            &[],
            Want::Nothing,
        ),
        (
            concat!(
                "GET /small.txt HTTP/1.1\n",
                "If-Modified-Since: ",
                "Sun, 06 Nov 1994 07:49:37 GMT"
            ),
            304,
            &[],
            Want::Nothing,
        ),
        (
            concat!(
                "GET /small.txt HTTP/1.1\n",
                "If-Modified-Since: ",
                "Sun, 06 Nov 1994 07:49:36 GMT"
            ),
            200,
            &[],
            small(),
        ),
        // If-None-Match wins over If-Modified-Since (RFC 9110 section 13.2.2).
        (
            concat!(
                "GET /small.txt HTTP/1.1\n",
                "If-None-Match: \"x\"\n",
                "If-Modified-Since: ",
                "Sun, 06 Nov 1994 07:49:37 GMT"
            ),
            200,
            &[],
            small(),
        ),
        // 412
        (
            "GET /small.txt HTTP/1.1\nIf-Match: \"nope\"",
            412,
            &[("ETag", None)],
            text("412 Precondition Failed\n"),
        ),
        (
            "HEAD /small.txt HTTP/1.1\nIf-Match: \"nope\"",
            412,
            &[("Content-Length", Some("24"))],
            Want::Nothing,
        ),
        (
            concat!(
                "GET /small.txt HTTP/1.1\n",
                "If-Unmodified-Since: ",
                "Sun, 06 Nov 1994 06:00:00 GMT"
            ),
            412,
            &[],
            text("412 Precondition Failed\n"),
        ),
        (
            "GET /small.txt HTTP/1.1\nIf-Match: {small}\nRange: bytes=0-0",
            206,
            &[],
            text("h"),
        ),
        // 404: absent, hidden, outside the root, an index that is not there.
        (
            "GET /nope HTTP/1.1",
            404,
            &[("Content-Type", PLAIN), ("Content-Length", Some("14"))],
            text("404 Not Found\n"),
        ),
        (
            "HEAD /nope HTTP/1.1",
            404,
            &[("Content-Length", Some("14"))],
            Want::Nothing,
        ),
        ("GET /.env HTTP/1.1", 404, &[], text("404 Not Found\n")),
        (
            "GET /sub/%2e%2e/.env HTTP/1.1",
            404,
            &[],
            text("404 Not Found\n"),
        ),
        ("GET /out HTTP/1.1", 404, &[], text("404 Not Found\n")),
        ("GET /noindex/ HTTP/1.1", 404, &[], text("404 Not Found\n")),
        (
            "GET /small.txt/ HTTP/1.1",
            404,
            &[],
            text("404 Not Found\n"),
        ),
        // 301 to the slash form; the location is made from the resolved path, query kept.
        (
            "GET /sub HTTP/1.1",
            301,
            &[
                ("Location", Some("/sub/")),
                ("Content-Type", PLAIN),
                ("Content-Length", Some("22")),
            ],
            text("301 Moved Permanently\n"),
        ),
        (
            "GET /sub?a=1&b HTTP/1.1",
            301,
            &[("Location", Some("/sub/?a=1&b"))],
            text("301 Moved Permanently\n"),
        ),
        (
            "GET //sub HTTP/1.1",
            301,
            &[("Location", Some("/sub/"))],
            text("301 Moved Permanently\n"),
        ),
        (
            "GET /small.txt/../sub HTTP/1.1",
            301,
            &[("Location", Some("/sub/"))],
            text("301 Moved Permanently\n"),
        ),
        (
            "GET /sp%20ace HTTP/1.1",
            301,
            &[("Location", Some("/sp%20ace/"))],
            text("301 Moved Permanently\n"),
        ),
        (
            "GET /noindex HTTP/1.1",
            301,
            &[("Location", Some("/noindex/"))],
            text("301 Moved Permanently\n"),
        ),
        (
            "HEAD /sub HTTP/1.1",
            301,
            &[("Location", Some("/sub/")), ("Content-Length", Some("22"))],
            Want::Nothing,
        ),
        // 405 with Allow, 501, and OPTIONS (which never looks the target up).
        (
            "POST /small.txt HTTP/1.1\nContent-Length: 0",
            405,
            &[("Allow", Some("GET, HEAD, OPTIONS"))],
            text("405 Method Not Allowed\n"),
        ),
        (
            "DELETE /nope HTTP/1.1",
            405,
            &[("Allow", Some("GET, HEAD, OPTIONS"))],
            text("405 Method Not Allowed\n"),
        ),
        (
            "BREW /pot HTTP/1.1",
            501,
            &[("Allow", None)],
            text("501 Not Implemented\n"),
        ),
        (
            "OPTIONS * HTTP/1.1",
            200,
            &[
                ("Allow", Some("GET, HEAD, OPTIONS")),
                ("Content-Length", Some("0")),
                ("Content-Type", None),
            ],
            Want::Nothing,
        ),
        (
            "OPTIONS /nope HTTP/1.1",
            200,
            &[("Allow", Some("GET, HEAD, OPTIONS"))],
            Want::Nothing,
        ),
        // 400: a malformed path.
        ("GET /a%00b HTTP/1.1", 400, &[], text("400 Bad Request\n")),
    ];
    run_table(&root, &cfg, &tags, cases.clone());

    // The same answers through the file cache: the first pass fills it, the second is
    // answered from it (small files as bytes, the large one from its kept descriptor).
    let mut root = Docroot::open(dir.path()).unwrap();
    root.cache_files(Config::default().file_cache);
    run_table(&root, &cfg, &tags, cases.clone());
    run_table(&root, &cfg, &tags, cases);
}

#[test]
fn embedded_site() {
    let cfg = Config::default();
    let root = Docroot::Embedded;
    let index = match site::lookup("", "index.html") {
        site::Lookup::Dir(Some(a)) => a,
        _ => panic!("no embedded index"),
    };
    let style = match site::lookup("style.css", "index.html") {
        site::Lookup::File(a) => a,
        _ => panic!("no embedded style.css"),
    };
    let tags = [
        ("index", format!("\"e{:x}\"", index.hash)),
        ("style", format!("\"e{:x}\"", style.hash)),
    ];
    let cases: Vec<Case<'_>> = vec![
        (
            "GET / HTTP/1.1",
            200,
            &[
                ("Content-Type", HTML),
                ("ETag", Some("{index}")),
                ("Last-Modified", None),
            ],
            Want::Bytes(index.body.to_vec()),
        ),
        (
            "GET /index.html HTTP/1.1",
            200,
            &[("ETag", Some("{index}"))],
            Want::Bytes(index.body.to_vec()),
        ),
        (
            "HEAD / HTTP/1.1",
            200,
            &[("ETag", Some("{index}"))],
            Want::Nothing,
        ),
        (
            "GET /style.css HTTP/1.1\nRange: bytes=0-3",
            206,
            &[("Content-Type", Some("text/css; charset=utf-8"))],
            Want::Bytes(style.body[..4].to_vec()),
        ),
        (
            "GET /style.css HTTP/1.1\nIf-None-Match: {style}",
            304,
            &[("ETag", Some("{style}"))],
            Want::Nothing,
        ),
        (
            "GET /style.css HTTP/1.1\nIf-Match: {index}",
            412,
            &[],
            text("412 Precondition Failed\n"),
        ),
        (
            "GET /posts HTTP/1.1",
            301,
            &[("Location", Some("/posts/"))],
            text("301 Moved Permanently\n"),
        ),
        (
            "GET /posts/ HTTP/1.1",
            200,
            &[("Content-Type", HTML)],
            Want::Bytes(match site::lookup("posts", "index.html") {
                site::Lookup::Dir(Some(a)) => a.body.to_vec(),
                _ => panic!("no posts index"),
            }),
        ),
        // A directory without an index: redirected, then not found.
        (
            "GET /bench HTTP/1.1",
            301,
            &[("Location", Some("/bench/"))],
            text("301 Moved Permanently\n"),
        ),
        ("GET /bench/ HTTP/1.1", 404, &[], text("404 Not Found\n")),
        ("GET /nope.html HTTP/1.1", 404, &[], text("404 Not Found\n")),
        (
            "GET /style.css/ HTTP/1.1",
            404,
            &[],
            text("404 Not Found\n"),
        ),
    ];
    run_table(&root, &cfg, &tags, cases);
}

#[test]
fn the_connection_fate_is_stated_as_given() {
    let cfg = Config::default();
    for (persist, field) in [
        (Persist::KeepAlive, None),
        (Persist::KeepAlive10, Some("keep-alive")),
        (Persist::Close, Some("close")),
    ] {
        for req in [
            "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /nope HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            let seen = decide_raw(&Docroot::Embedded, &cfg, req.as_bytes(), persist);
            assert_eq!(seen.persist, persist);
            assert_eq!(seen.field("Connection"), field);
        }
    }
}

#[test]
fn configuration_shapes_the_answer() {
    let dir = fixture();
    let root = Docroot::open(dir.path()).unwrap();
    let cfg = Config {
        index: vec!["small.txt".to_string()],
        server: String::new(),
        serve_dotfiles: true,
        ..Config::default()
    };
    let get = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
        decide_raw(&root, &cfg, req.as_bytes(), Persist::KeepAlive)
    };
    let seen = get("/");
    assert_eq!((seen.status, seen.field("Server")), (200, None));
    assert_eq!(seen.body, Want::Bytes(SMALL.to_vec()));
    assert_eq!(get("/.env").body, Want::Bytes(b"SECRET=1\n".to_vec()));
}

#[test]
fn open_failures_map_to_statuses() {
    let rel = c"x";
    for (errno, status) in [
        (libc::EACCES, 403),
        (libc::EPERM, 403),
        (libc::ENOENT, 404),
        (libc::ENOTDIR, 404),
        (libc::ELOOP, 404),
        (libc::EXDEV, 404),
        (libc::ENAMETOOLONG, 404),
        (libc::EIO, 500),
        (libc::EMFILE, 500),
    ] {
        let e = io::Error::from_raw_os_error(errno);
        assert_eq!(open_status(&e, rel), status, "{e}");
    }
}

#[test]
fn modification_times_are_clamped_to_what_can_be_sent() {
    let date_time = UNIX_EPOCH + Duration::from_secs(DATE_SECS);
    let past = date_time - Duration::from_secs(3600);
    assert_eq!(clamp_modified(past, DATE_SECS), past);
    assert_eq!(
        clamp_modified(UNIX_EPOCH - Duration::from_secs(1), DATE_SECS),
        UNIX_EPOCH
    );
    let future = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(clamp_modified(future, DATE_SECS), date_time);
    // Later within the Date's own second: the Date, never a later instant.
    let same_second = date_time + Duration::from_millis(400);
    assert_eq!(clamp_modified(same_second, DATE_SECS), date_time);
    // Beyond what can be formatted, the clamp holds at 9999 whatever the clock says.
    let far = UNIX_EPOCH + LAST_HTTP_DATE + Duration::from_secs(10);
    assert_eq!(clamp_modified(far, u64::MAX), UNIX_EPOCH + LAST_HTTP_DATE);
}

#[test]
fn stack_buf_refuses_overflow() {
    use std::fmt::Write;
    let mut b = StackBuf::new();
    assert!(write!(b, "{}", "x".repeat(64)).is_ok());
    assert!(write!(b, "y").is_err());
    assert_eq!(b.as_bytes().len(), 64);
}

/// An error page is looked up once and never through `decide`: a page for 500 that is
/// missing, a directory, or hidden falls back to the built-in text; one that exists is sent
/// with the status it stands for.
#[test]
fn error_pages_fall_back_and_never_recurse() {
    let dir = fixture();
    fs::write(dir.path().join("500.html"), "<p>sorry</p>").unwrap();
    let root = Docroot::open(dir.path()).unwrap();
    let vhosts = VHosts::default();
    for (page, want) in [
        ("/500.html", &b"<p>sorry</p>"[..]),
        ("/missing.html", b"500 Internal Server Error\n"),
        ("/sub", b"500 Internal Server Error\n"),
        ("/.env", b"500 Internal Server Error\n"),
        ("/out", b"500 Internal Server Error\n"),
    ] {
        let cfg = Config {
            error_pages: vec![(500, page.to_string())],
            ..Config::default()
        };
        let env = Env {
            cfg: &cfg,
            root: &root,
            vhosts: &vhosts,
            date: DATE,
            date_secs: DATE_SECS,
        };
        let mut s = Scratch::default();
        let reply = error_reply(&env, &root, 500, Persist::KeepAlive, false, &mut s, b"");
        assert_eq!(reply.status, 500, "{page}");
        let body = match reply.payload {
            Payload::Static(b) => b.to_vec(),
            Payload::Buffered(n) => s.file[..n].to_vec(),
            Payload::Shared { body, range } => body[range].to_vec(),
            other => panic!("{page}: {other:?}"),
        };
        assert_eq!(body, want, "{page}");
        let head = String::from_utf8(s.out.clone()).unwrap();
        assert!(head.starts_with("HTTP/1.1 500 "), "{head}");
        assert!(
            head.contains("X-Content-Type-Options: nosniff\r\n"),
            "{head}"
        );
    }
}

#[test]
fn stack_hex_is_what_lower_hex_formatting_gives() {
    for v in [
        0,
        1,
        9,
        10,
        15,
        16,
        255,
        0xdead_beef,
        u64::MAX,
        1 << 63,
        1_700_000_000_123_456_789,
    ] {
        let mut b = StackBuf::new();
        b.push(b"\"");
        b.hex(v);
        assert_eq!(b.as_bytes(), format!("\"{v:x}").as_bytes());
    }
    // What does not fit is left out whole, never cut.
    let mut b = StackBuf::new();
    b.push(&[b'x'; 60]);
    b.hex(u64::MAX);
    assert_eq!(b.as_bytes().len(), 60);
}
