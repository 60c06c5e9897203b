//! Issue 11: precompressed siblings (`file.br`, `file.zst`, `file.gz`) served by
//! `Accept-Encoding`, and media types, over real sockets in every mode.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::util::{per_mode, Client, Mode, Resp, Server};

/// Text that compresses: a stylesheet of a few kilobytes.
fn css() -> Vec<u8> {
    (0..120)
        .map(|i| format!(".rule-{i} {{ margin: {i}px; color: #{:06x}; }}\n", i * 4099))
        .collect::<String>()
        .into_bytes()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams::default();
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
    out
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn write(path: &Path, bytes: &[u8], mtime: SystemTime) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(path).unwrap();
    (&f).write_all(bytes).unwrap();
    f.set_modified(mtime).unwrap();
}

/// The docroot of these tests, all files an hour old unless said otherwise:
/// - `a.css` with all three siblings, each a real compression of it, as old as it;
/// - `only.js` with `only.js.gz`, a minute newer;
/// - `stale.html` with a `.gz` a minute older than it (left behind by an edit);
/// - `link.css`, whose `.gz` is a symlink out of the root (to a real gzip of it);
/// - `photo.png` with a `.gz` (not a compressible type: never looked for);
/// - `plain.txt` with no sibling.
fn fill(root: &Path) {
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let css = css();
    write(&root.join("a.css"), &css, hour_ago);
    write(&root.join("a.css.br"), &brotli(&css), hour_ago);
    write(&root.join("a.css.zst"), &zstd(&css), hour_ago);
    write(&root.join("a.css.gz"), &gzip(&css), hour_ago);
    write(&root.join("only.js"), &css, hour_ago);
    write(
        &root.join("only.js.gz"),
        &gzip(&css),
        hour_ago + Duration::from_secs(60),
    );
    write(&root.join("stale.html"), &css, hour_ago);
    write(
        &root.join("stale.html.gz"),
        &gzip(&css),
        hour_ago - Duration::from_secs(60),
    );
    write(&root.join("link.css"), &css, hour_ago);
    // Beside the root, fresh and a real gzip of the file: only the way out refuses it.
    let outside = outside_of(root);
    write(&outside, &gzip(&css), hour_ago);
    std::os::unix::fs::symlink(&outside, root.join("link.css.gz")).unwrap();
    write(&root.join("photo.png"), &css, hour_ago);
    write(&root.join("photo.png.gz"), &gzip(&css), hour_ago);
    write(&root.join("plain.txt"), b"no sibling here\n", hour_ago);
}

/// Where `fill` puts the target of `link.css.gz`: beside the root, in the same temporary
/// directory's parent.
fn outside_of(root: &Path) -> std::path::PathBuf {
    let mut name = root.file_name().unwrap().to_os_string();
    name.push("-outside.css.gz");
    root.with_file_name(name)
}

/// The server of these tests, on `fill`'s docroot, and the removal of the file `fill` put
/// outside it.
struct Site(Server);

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(outside_of(&self.0.root()));
    }
}

impl std::ops::Deref for Site {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

fn site(mode: Mode, args: &[&str]) -> Site {
    Site(mode.pool(1).with_site(args, fill))
}

/// One request on a keep-alive connection with these extra header lines.
fn ask(c: &mut Client, method: &str, path: &str, extra: &[&str]) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n");
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    c.send(req.as_bytes());
    c.response(method == "HEAD")
}

fn ae(value: &str) -> String {
    format!("Accept-Encoding: {value}")
}

/// The head without its Date line, to compare a HEAD with a GET.
fn head_without_date(r: &Resp) -> Vec<String> {
    r.head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
        .map(str::to_string)
        .collect()
}

per_mode!(siblings_are_chosen_by_accept_encoding);
fn siblings_are_chosen_by_accept_encoding(mode: Mode) {
    let s = site(mode, &[]);
    let css = css();
    let (br, zst, gz) = (brotli(&css), zstd(&css), gzip(&css));
    let mut c = Client::new(&s);
    // (Accept-Encoding lines, coding expected, body expected); each asked twice on one
    // connection, so the second answer comes through the worker's file cache.
    let cases: Vec<(Vec<&str>, Option<&str>, &[u8])> = vec![
        (vec![], None, &css),
        (vec![""], None, &css),
        (vec!["gzip, deflate, br, zstd"], Some("br"), &br),
        (vec!["gzip, br"], Some("br"), &br),
        (vec!["zstd, gzip"], Some("zstd"), &zst),
        (vec!["gzip"], Some("gzip"), &gz),
        (vec!["x-gzip"], Some("gzip"), &gz),
        (vec!["br;q=0, gzip"], Some("gzip"), &gz),
        (vec!["gzip;q=1, br;q=0.5"], Some("gzip"), &gz),
        (vec!["gzip;q=0"], None, &css),
        (vec!["br;q=0, zstd;q=0, gzip;q=0"], None, &css),
        (vec!["*"], Some("br"), &br),
        (vec!["*;q=0.5, br;q=0"], Some("zstd"), &zst),
        (vec!["*;q=0"], None, &css),
        (vec!["identity;q=0, gzip;q=0.1"], Some("gzip"), &gz),
        (vec!["identity, gzip;q=0.5"], None, &css),
        (vec!["compress, deflate"], None, &css),
        (vec!["br;q=0", "gzip"], Some("gzip"), &gz),
    ];
    let mut tags = std::collections::BTreeMap::new();
    for (lines, coding, body) in &cases {
        for round in 0..2 {
            let extra: Vec<String> = lines.iter().map(|l| ae(l)).collect();
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let r = ask(&mut c, "GET", "/a.css", &extra);
            let what = format!("{lines:?} (round {round})");
            assert_eq!(r.status, 200, "{what}: {}", r.head);
            assert_eq!(r.header("content-encoding").as_deref(), *coding, "{what}");
            assert_eq!(&r.body, body, "{what}: body");
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("text/css; charset=utf-8"),
                "{what}"
            );
            assert_eq!(
                r.header("vary").as_deref(),
                Some("Accept-Encoding"),
                "{what}"
            );
            let tag = r.header("etag").unwrap();
            if let Some(old) = tags.insert(coding.unwrap_or("identity"), tag.clone()) {
                assert_eq!(old, tag, "{what}: one tag per representation");
            }
        }
    }
    // A distinct entity tag per representation, saying its coding.
    assert_eq!(tags.len(), 4, "{tags:?}");
    let distinct: std::collections::BTreeSet<&String> = tags.values().collect();
    assert_eq!(distinct.len(), 4, "{tags:?}");
    assert!(tags["br"].ends_with(".br\""), "{tags:?}");
    assert!(tags["zstd"].ends_with(".zst\""), "{tags:?}");
    assert!(tags["gzip"].ends_with(".gz\""), "{tags:?}");
    assert_eq!(s.children_that_died(), Vec::<String>::new());
}

per_mode!(conditionals_ranges_and_head_apply_to_the_encoded_representation);
fn conditionals_ranges_and_head_apply_to_the_encoded_representation(mode: Mode) {
    let s = site(mode, &[]);
    let css = css();
    let br = brotli(&css);
    let mut c = Client::new(&s);
    let full = ask(&mut c, "GET", "/a.css", &[&ae("br")]);
    let tag = full.header("etag").unwrap();
    assert_eq!(full.header("content-encoding").as_deref(), Some("br"));

    // 304 for the tag of the representation that would be sent, with its Vary.
    let inm = format!("If-None-Match: {tag}");
    let r = ask(&mut c, "GET", "/a.css", &[&ae("br"), &inm]);
    assert_eq!(r.status, 304, "{}", r.head);
    assert_eq!(r.header("etag").as_deref(), Some(tag.as_str()));
    assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
    // The br tag does not match what a gzip-only client gets: 200 with gzip.
    let r = ask(&mut c, "GET", "/a.css", &[&ae("gzip"), &inm]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    // Nor the original's.
    let r = ask(&mut c, "GET", "/a.css", &[&inm]);
    assert_eq!((r.status, r.body.as_slice()), (200, css.as_slice()));

    // 206: the range is of the compressed bytes.
    let r = ask(&mut c, "GET", "/a.css", &[&ae("br"), "Range: bytes=0-9"]);
    assert_eq!(r.status, 206, "{}", r.head);
    assert_eq!(r.body, &br[..10]);
    assert_eq!(r.header("content-encoding").as_deref(), Some("br"));
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 0-9/{}", br.len()))
    );
    let suffix = format!("Range: bytes=-{}", 5);
    let r = ask(&mut c, "GET", "/a.css", &[&ae("br"), &suffix]);
    assert_eq!((r.status, r.body.as_slice()), (206, &br[br.len() - 5..]));
    // If-Range with the encoded tag holds; with the original's it does not (whole body).
    let ir = format!("If-Range: {tag}");
    let r = ask(
        &mut c,
        "GET",
        "/a.css",
        &[&ae("br"), "Range: bytes=0-1", &ir],
    );
    assert_eq!(r.status, 206);
    let r = ask(&mut c, "GET", "/a.css", &["Range: bytes=0-1", &ir]);
    assert_eq!((r.status, r.body.len()), (200, css.len()));
    // 416 states the encoded length.
    let far = format!("Range: bytes={}-", br.len() + 10);
    let r = ask(&mut c, "GET", "/a.css", &[&ae("br"), &far]);
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{}", br.len()))
    );

    // HEAD is GET without the body, for every representation.
    for extra in [vec![ae("br")], vec![ae("gzip")], vec![], vec![ae("zstd")]] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let get = ask(&mut c, "GET", "/a.css", &extra);
        let head = ask(&mut c, "HEAD", "/a.css", &extra);
        assert_eq!(
            head_without_date(&head),
            head_without_date(&get),
            "{extra:?}"
        );
        assert_eq!(
            get.header("content-length"),
            Some(get.body.len().to_string())
        );
        assert!(head.body.is_empty());
    }
    // Nothing followed the HEAD answers: the connection is still in step.
    let r = ask(&mut c, "GET", "/plain.txt", &[]);
    assert_eq!(r.body, b"no sibling here\n");
}

per_mode!(unusable_siblings_are_not_served);
fn unusable_siblings_are_not_served(mode: Mode) {
    let s = site(mode, &[]);
    let css = css();
    let mut c = Client::new(&s);
    for _ in 0..2 {
        let every = ae("br, zstd, gzip");
        // A sibling older than its file: an edit left it behind; the file is sent.
        let r = ask(&mut c, "GET", "/stale.html", &[&every]);
        assert_eq!(r.header("content-encoding"), None, "{}", r.head);
        assert_eq!(r.body, css);
        assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
        // A sibling that is a symlink out of the root: refused, the file is sent.
        let r = ask(&mut c, "GET", "/link.css", &[&every]);
        assert_eq!(r.header("content-encoding"), None, "{}", r.head);
        assert_eq!(r.body, css);
        // Only the siblings that exist are candidates: br and zstd are missing here.
        let r = ask(&mut c, "GET", "/only.js", &[&every]);
        assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
        assert_eq!(r.body, gzip(&css));
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("text/javascript; charset=utf-8")
        );
        // Not a compressible type: no sibling looked for, and the answer does not vary.
        let r = ask(&mut c, "GET", "/photo.png", &[&every]);
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.header("vary"), None);
        assert_eq!(r.body, css);
        // No sibling at all: the file, and Vary all the same.
        let r = ask(&mut c, "GET", "/plain.txt", &[&every]);
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
        // A sibling asked for by its own name is just a file.
        let r = ask(&mut c, "GET", "/a.css.gz", &[&every]);
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/gzip")
        );
    }
}

per_mode!(a_new_sibling_is_seen_within_a_second);
/// A sibling made while the worker holds the file in its cache is served within the cache's
/// one-second bound; one removed stops being served as soon.
fn a_new_sibling_is_seen_within_a_second(mode: Mode) {
    let s = site(mode, &[]);
    let root = s.root();
    let mut c = Client::new(&s);
    let gz = ae("gzip");
    let r = ask(&mut c, "GET", "/plain.txt", &[&gz]);
    assert_eq!(r.header("content-encoding"), None);
    let original = std::fs::metadata(root.join("plain.txt")).unwrap();
    write(
        &root.join("plain.txt.gz"),
        &gzip(b"no sibling here\n"),
        original.modified().unwrap(),
    );
    let made = Instant::now();
    let coding = |c: &mut Client| ask(c, "GET", "/plain.txt", &[&gz]).header("content-encoding");
    while coding(&mut c).is_none() {
        assert!(made.elapsed() < Duration::from_secs(3), "never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_file(root.join("plain.txt.gz")).unwrap();
    let removed = Instant::now();
    while coding(&mut c).is_some() {
        assert!(
            removed.elapsed() < Duration::from_secs(3),
            "served after removal"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

per_mode!(precompressed_false_serves_only_the_files);
fn precompressed_false_serves_only_the_files(mode: Mode) {
    let s = site(mode, &["--precompressed", "false"]);
    let mut c = Client::new(&s);
    let r = ask(&mut c, "GET", "/a.css", &[&ae("br, gzip")]);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), None);
    assert_eq!(r.body, css());
}

per_mode!(media_types_of_the_modern_web_and_overrides);
fn media_types_of_the_modern_web_and_overrides(mode: Mode) {
    let conf = tempfile::tempdir().unwrap();
    let file = conf.path().join("forkd.toml");
    std::fs::write(
        &file,
        "[server.mime]\ngmi = \"text/gemini\"\nWEBP = \"image/x-test\"\n",
    )
    .unwrap();
    let s: Server = mode
        .pool(1)
        .with_site(&["--config", file.to_str().unwrap()], |root| {
            for name in [
                "a.mjs",
                "a.js",
                "a.wasm",
                "m.webmanifest",
                "p.avif",
                "f.woff2",
                "p.webp",
                "p.jxl",
                "d.json",
                "i.svg",
                "x.gmi",
                "a.map",
                "readme.md",
                "noext",
            ] {
                std::fs::write(root.join(name), b"x").unwrap();
            }
        });
    let mut c = Client::new(&s);
    for (name, want) in [
        ("a.mjs", "text/javascript; charset=utf-8"),
        ("a.js", "text/javascript; charset=utf-8"),
        ("a.wasm", "application/wasm"),
        ("m.webmanifest", "application/manifest+json; charset=utf-8"),
        ("p.avif", "image/avif"),
        ("f.woff2", "font/woff2"),
        ("p.jxl", "image/jxl"),
        ("d.json", "application/json; charset=utf-8"),
        ("i.svg", "image/svg+xml"),
        ("a.map", "application/json; charset=utf-8"),
        ("readme.md", "text/markdown; charset=utf-8"),
        ("noext", "application/octet-stream"),
        // The operator's table: an addition and an override (extensions in any case).
        ("x.gmi", "text/gemini; charset=utf-8"),
        ("p.webp", "image/x-test"),
    ] {
        let r = c.get(&format!("/{name}"));
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.header("content-type").as_deref(), Some(want), "{name}");
    }
}
