//! What a static site's operator configures, against the real `forkd` over loopback, in every
//! mode: directory redirects, index names, listings, error pages, header rules, security
//! headers and virtual hosts, and a reload that changes them.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::{
    self, body_of, eventually, header, limit_hits, per_mode, status_of, Client, Mode, Server,
};

/// `METHOD target` with `Host: host` (none when `host` is empty, as HTTP/1.0), closed after.
fn ask(s: &Server, method: &str, target: &str, host: &str, extra: &str) -> (u16, Vec<u8>) {
    let (version, host) = match host {
        "" => ("1.0", String::new()),
        h => ("1.1", format!("Host: {h}\r\n")),
    };
    let req = format!("{method} {target} HTTP/{version}\r\n{host}{extra}Connection: close\r\n\r\n");
    let resp = s.raw(req.as_bytes());
    (status_of(&resp), resp)
}

fn get(s: &Server, target: &str) -> (u16, Vec<u8>) {
    ask(s, "GET", target, "t", "")
}

fn text(resp: &[u8]) -> String {
    String::from_utf8_lossy(body_of(resp)).into_owned()
}

/// A temporary directory with a configuration file `forkd.toml` of `toml` (where `{d}` is the
/// directory) and the trees `fill` makes in it.
fn configured(toml: &str, fill: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let file = dir.path().join("forkd.toml");
    let d = dir.path().to_str().unwrap();
    std::fs::write(&file, toml.replace("{d}", d)).unwrap();
    (dir, file)
}

fn write(root: &Path, rel: &str, body: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

per_mode!(directory_redirects_keep_the_query_and_never_leave_the_host);
fn directory_redirects_keep_the_query_and_never_leave_the_host(mode: Mode) {
    let s = mode.with_site(&["--index", "home.html"], |root| {
        write(root, "docs/home.html", "docs");
        write(root, "host/home.html", "host dir");
        write(root, "a b/home.html", "spaced");
    });
    for (target, want) in [
        ("/docs", "/docs/"),
        ("/docs?page=2&q=a%20b", "/docs/?page=2&q=a%20b"),
        // A request for `//host` names the directory `host` here: the Location stays an
        // absolute path, never the protocol-relative `//host/` a browser would follow away.
        ("//host", "/host/"),
        ("///host?next=//evil.example", "/host/?next=//evil.example"),
        ("//host/../host", "/host/"),
        // Encoded: decoded once, re-encoded in the Location.
        ("/%64ocs", "/docs/"),
        ("/%2f/host", "/host/"),
        ("/a%20b", "/a%20b/"),
    ] {
        let (status, resp) = get(&s, target);
        if target == "/%2f/host" {
            // An encoded separator is refused before any redirect.
            assert_eq!(status, 404, "{target}");
            continue;
        }
        assert_eq!(status, 301, "{target}: {}", String::from_utf8_lossy(&resp));
        let location = header(&resp, "location").unwrap();
        assert_eq!(location, want, "{target}");
        assert!(!location.starts_with("//"), "{target}: {location}");
        assert_eq!(get(&s, &location).0, 200, "{location}");
    }
    // A backslash is not a path character: refused, not redirected anywhere.
    assert_eq!(get(&s, "/\\host").0, 400);
    assert_eq!(get(&s, "/%5chost").0, 404);
    // HEAD: the same head, no body.
    let (status, resp) = ask(&s, "HEAD", "/docs?x", "t", "");
    assert_eq!(status, 301);
    assert_eq!(header(&resp, "location").as_deref(), Some("/docs/?x"));
    assert!(body_of(&resp).is_empty());
}

per_mode!(the_first_index_name_that_exists_is_served);
fn the_first_index_name_that_exists_is_served(mode: Mode) {
    let args = [
        "--index",
        "index.html",
        "--index",
        "index.htm",
        "--index",
        "README.txt",
    ];
    let s = mode.with_site(&args, |root| {
        write(root, "index.html", "top html");
        write(root, "both/index.html", "both html");
        write(root, "both/index.htm", "both htm");
        write(root, "htm/index.htm", "htm only");
        write(root, "htm/README.txt", "readme too");
        write(root, "readme/README.txt", "readme only");
        write(root, "none/a.txt", "a");
        // An index name that is a directory is passed over.
        write(root, "dirindex/index.html/x", "x");
        write(root, "dirindex/index.htm", "after the directory");
    });
    for (target, body, ctype) in [
        ("/", "top html", "text/html"),
        ("/both/", "both html", "text/html"),
        ("/htm/", "htm only", "text/html"),
        ("/readme/", "readme only", "text/plain"),
        ("/dirindex/", "after the directory", "text/html"),
    ] {
        let (status, resp) = get(&s, target);
        assert_eq!((status, text(&resp).as_str()), (200, body), "{target}");
        assert!(
            header(&resp, "content-type").unwrap().starts_with(ctype),
            "{target}"
        );
    }
    // No index and no listing: 404, as before.
    assert_eq!(get(&s, "/none/").0, 404);
    assert_eq!(get(&s, "/none/a.txt").0, 200);
}

per_mode!(autoindex_lists_only_what_can_be_served_escaped);
fn autoindex_lists_only_what_can_be_served_escaped(mode: Mode) {
    let metrics_dir = tempfile::tempdir().unwrap();
    let metrics = metrics_dir.path().join("m.prom");
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.txt", "secret");
    let out = outside.path().to_path_buf();
    let s = mode.with_site(
        &[
            "--autoindex",
            "--autoindex-max-entries",
            "9",
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
        |root| {
            write(root, "files/<img src=x onerror=alert(1)>.txt", "xss");
            write(root, "files/a&b \"q\".txt", "12345");
            write(root, "files/b.txt", "b");
            write(root, "files/.env", "SECRET=1");
            write(root, "files/.git/config", "git");
            write(root, "files/sub/x.txt", "x");
            write(root, "files/top.txt", "t");
            symlink(out.join("secret.txt"), root.join("files/out-abs")).unwrap();
            symlink("../../../secret", root.join("files/out-rel")).unwrap();
            symlink(".env", root.join("files/to-env")).unwrap();
            symlink("b.txt", root.join("files/in-link")).unwrap();
            write(root, "withindex/index.html", "an index wins");
            for i in 0..12 {
                write(root, &format!("many/f{i}.txt"), "x");
            }
        },
    );
    let (status, resp) = get(&s, "/files/");
    let page = text(&resp);
    assert_eq!(status, 200, "{page}");
    assert!(header(&resp, "content-type")
        .unwrap()
        .starts_with("text/html"));
    let rows: Vec<&str> = page.lines().filter(|l| l.starts_with("<tr><td>")).collect();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r.split("\">").nth(1).unwrap().split("</a>").next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "../",
            "sub/",
            "&lt;img src=x onerror=alert(1)&gt;.txt",
            "a&amp;b &quot;q&quot;.txt",
            "b.txt",
            "in-link",
            "top.txt",
        ],
        "{page}"
    );
    assert!(!page.contains("<img"), "{page}");
    for hidden in [".env", ".git", "out-abs", "out-rel", "to-env", "secret"] {
        assert!(!page.contains(hidden), "{hidden} listed: {page}");
    }
    assert!(
        page.contains("href=\"/files/a&amp;b%20%22q%22.txt\">"),
        "{page}"
    );
    assert!(
        page.contains("href=\"/files/%3Cimg%20src=x%20onerror=alert(1)%3E.txt\""),
        "{page}"
    );
    assert!(page.contains("<td>5</td>"), "{page}");
    // Each link leads to what it names.
    assert_eq!(text(&get(&s, "/files/a%26b%20%22q%22.txt").1), "12345");
    // A directory with an index is not listed; HEAD has the head and no body.
    assert_eq!(text(&get(&s, "/withindex/").1), "an index wins");
    let (status, head) = ask(&s, "HEAD", "/files/", "t", "");
    assert_eq!(status, 200);
    assert!(body_of(&head).is_empty());
    assert_eq!(
        header(&head, "content-length").unwrap(),
        body_of(&resp).len().to_string()
    );
    // Beyond the bound: listed up to it, said, counted.
    assert_eq!(limit_hits(&metrics, "autoindex_truncated"), 0);
    let page = text(&get(&s, "/many/").1);
    assert_eq!(
        page.matches("<tr><td><a href=\"/many/f").count(),
        9,
        "{page}"
    );
    assert!(page.contains("more than 9 entries"), "{page}");
    eventually(Duration::from_secs(10), "autoindex_truncated", || {
        (limit_hits(&metrics, "autoindex_truncated") == 1).then_some(())
    });
    // A dot directory is no more listed than served.
    assert_eq!(get(&s, "/files/.git/").0, 404);
    assert_eq!(get(&s, "/nothing-here/").0, 404);
}

per_mode!(a_long_listing_leaves_no_memory_behind);
fn a_long_listing_leaves_no_memory_behind(mode: Mode) {
    let s = mode.pool(1).with_site(
        &["--autoindex", "--autoindex-max-entries", "10000"],
        |root| {
            write(root, "small.txt", "s");
            for i in 0..8000 {
                let name = format!("long/a-file-name-long-enough-to-make-a-large-page-{i:05}.html");
                write(root, &name, "");
            }
        },
    );
    // One keep-alive connection, so that fork mode's child lives through all three requests.
    let mut c = Client::new(&s);
    assert_eq!(c.get("/small.txt").status, 200);
    let serving = eventually(
        Duration::from_secs(5),
        "the serving process",
        || match util::children(s.pid())[..] {
            [one] => Some(one),
            _ => None,
        },
    );
    let anon = || util::status_kb(serving, "RssAnon").unwrap();
    let before = anon();
    let page = c.get("/long/");
    assert_eq!(page.status, 200);
    assert!(page.body.len() > 1 << 20, "{} bytes", page.body.len());
    assert_eq!(c.get("/small.txt").status, 200);
    // The page's buffer, and the heap the listing used, are given back once it is sent: a
    // long-lived worker holds what ordinary replies need, not its largest answer.
    let after = anon();
    assert!(
        after <= before + 256,
        "anonymous RSS {before} kB -> {after} kB after a {} kB page",
        page.body.len() / 1024
    );
}

per_mode!(error_pages_are_sent_with_their_status);
fn error_pages_are_sent_with_their_status(mode: Mode) {
    let metrics_dir = tempfile::tempdir().unwrap();
    let metrics = metrics_dir.path().join("m.prom");
    let page = "<h1>Not here</h1>\n";
    let s = mode.with_site(
        &[
            "--error-page",
            "404=/errors/404.html",
            "--error-page",
            "405=/errors/missing.html",
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
        |root| {
            write(root, "errors/404.html", page);
            write(root, "index.html", "home");
        },
    );
    let (status, resp) = get(&s, "/nope");
    assert_eq!((status, text(&resp).as_str()), (404, page));
    assert!(header(&resp, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(
        header(&resp, "content-length").unwrap(),
        page.len().to_string()
    );
    for absent in ["etag", "last-modified", "accept-ranges", "content-range"] {
        assert_eq!(header(&resp, absent), None, "{absent}");
    }
    // HEAD: the page's head, no body.
    let (status, resp) = ask(&s, "HEAD", "/nope", "t", "");
    assert_eq!(status, 404);
    assert!(body_of(&resp).is_empty());
    assert_eq!(
        header(&resp, "content-length").unwrap(),
        page.len().to_string()
    );
    // Ranges and preconditions are about the resource asked for, not the page.
    let (status, resp) = ask(&s, "GET", "/nope", "t", "Range: bytes=0-3\r\n");
    assert_eq!((status, text(&resp).as_str()), (404, page));
    let (status, resp) = ask(&s, "GET", "/nope", "t", "If-None-Match: *\r\n");
    assert_eq!((status, text(&resp).as_str()), (404, page));
    // The page itself is served as a file too.
    assert_eq!(get(&s, "/errors/404.html").0, 200);
    // A page that is missing: the built-in text, with what the status needs; counted.
    let (status, resp) = ask(&s, "POST", "/index.html", "t", "Content-Length: 0\r\n");
    assert_eq!(status, 405);
    assert_eq!(text(&resp), "405 Method Not Allowed\n");
    assert_eq!(
        header(&resp, "allow").as_deref(),
        Some("GET, HEAD, OPTIONS")
    );
    eventually(Duration::from_secs(10), "error_page_missing", || {
        (limit_hits(&metrics, "error_page_missing") == 1).then_some(())
    });
    // Once the 404 page goes too, a 404 falls back to the built-in text: no loop.
    std::fs::remove_file(s.root().join("errors/404.html")).unwrap();
    eventually(Duration::from_secs(5), "the built-in 404", || {
        let (status, resp) = get(&s, "/nope");
        (status == 404 && text(&resp) == "404 Not Found\n").then_some(())
    });
    // Each serving process trusts what it opened for up to a second: another worker may
    // still hold the page a moment longer.
    eventually(Duration::from_secs(5), "the page gone everywhere", || {
        (get(&s, "/errors/404.html").0 == 404).then_some(())
    });
    assert!(s.children_that_died().is_empty());
}

const RULES: &str = r#"
[server]
root = "{d}/www"

[[server.headers]]
glob = "/assets/*.[0-9a-f]*.js"
cache-control = "public, max-age=31536000, immutable"

[[server.headers]]
glob = "*.html"
cache-control = "no-cache"
set = { X-Robots-Tag = "noindex" }

[[server.headers]]
glob = "/drafts/**"
set = { X-Robots-Tag = "noindex, nofollow" }
"#;

per_mode!(header_rules_apply_by_glob);
fn header_rules_apply_by_glob(mode: Mode) {
    let (_dir, file) = configured(RULES, |d| {
        write(&d.join("www"), "index.html", "home");
        write(&d.join("www"), "assets/app.3f9a1c.js", "js");
        write(&d.join("www"), "assets/app.js", "plain js");
        write(&d.join("www"), "assets/old/app.3f9a1c.js", "deeper");
        write(&d.join("www"), "drafts/a/post.html", "draft");
    });
    let s = mode.start(&["--config", file.to_str().unwrap()]);
    let immutable = Some("public, max-age=31536000, immutable");
    for (target, cc, robots) in [
        ("/assets/app.3f9a1c.js", immutable, None),
        // Not matching: no hash, or `*` not crossing a `/`.
        ("/assets/app.js", None, None),
        ("/assets/old/app.3f9a1c.js", None, None),
        // The index file's path is what rules see.
        ("/", Some("no-cache"), Some("noindex")),
        ("/index.html", Some("no-cache"), Some("noindex")),
        // Every match applies; the later rule wins the field both set.
        (
            "/drafts/a/post.html",
            Some("no-cache"),
            Some("noindex, nofollow"),
        ),
    ] {
        let (status, resp) = get(&s, target);
        assert_eq!(status, 200, "{target}");
        assert_eq!(header(&resp, "cache-control").as_deref(), cc, "{target}");
        assert_eq!(header(&resp, "x-robots-tag").as_deref(), robots, "{target}");
    }
    // A 304 carries the Cache-Control a 200 would (RFC 9110 section 15.4.5); errors none.
    let etag = header(&get(&s, "/assets/app.3f9a1c.js").1, "etag").unwrap();
    let (status, resp) = ask(
        &s,
        "GET",
        "/assets/app.3f9a1c.js",
        "t",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(status, 304);
    assert_eq!(header(&resp, "cache-control").as_deref(), immutable);
    let (status, resp) = get(&s, "/assets/gone.0a.js");
    assert_eq!(status, 404);
    assert_eq!(header(&resp, "cache-control"), None);
}

per_mode!(header_rules_apply_to_directory_listings);
fn header_rules_apply_to_directory_listings(mode: Mode) {
    let (_dir, file) = configured(RULES, |d| {
        write(&d.join("www"), "drafts/a/post.html", "draft");
        write(&d.join("www"), "public/a.txt", "a");
    });
    let s = mode.start(&["--autoindex", "--config", file.to_str().unwrap()]);
    for (target, robots) in [
        // A listing is matched as its directory's path, with the slash its URL has.
        ("/drafts/a/", Some("noindex, nofollow")),
        ("/drafts/", Some("noindex, nofollow")),
        ("/public/", None),
    ] {
        let (status, resp) = get(&s, target);
        assert_eq!(status, 200, "{target}");
        assert!(
            String::from_utf8_lossy(&resp).contains("Index of "),
            "{target}: not a listing"
        );
        assert_eq!(header(&resp, "x-robots-tag").as_deref(), robots, "{target}");
    }
}

per_mode!(security_headers_are_on_by_default_and_each_can_go);
fn security_headers_are_on_by_default_and_each_can_go(mode: Mode) {
    let defaults = [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        ("x-frame-options", "SAMEORIGIN"),
    ];
    let s = mode.with_site(&[], |root| {
        write(root, "index.html", "home");
        write(root, "d/index.html", "d");
    });
    // On every kind of response: a file, a redirect, an error, OPTIONS.
    for (method, target, want) in [
        ("GET", "/", 200),
        ("GET", "/d", 301),
        ("GET", "/missing", 404),
        ("OPTIONS", "*", 200),
    ] {
        let (status, resp) = ask(&s, method, target, "t", "");
        assert_eq!(status, want, "{target}");
        for (name, value) in defaults {
            assert_eq!(
                header(&resp, name).as_deref(),
                Some(value),
                "{target} {name}"
            );
        }
    }
    drop(s);

    let (_dir, file) = configured(
        "[server]\nroot = \"{d}/www\"\n[server.security-headers]\nX-Frame-Options = false\n\
         Content-Security-Policy = \"frame-ancestors 'self'\"\nReferrer-Policy = \"no-referrer\"\n",
        |d| write(&d.join("www"), "index.html", "home"),
    );
    let s = mode.start(&["--config", file.to_str().unwrap()]);
    let (_, resp) = get(&s, "/");
    assert_eq!(header(&resp, "x-frame-options"), None);
    assert_eq!(
        header(&resp, "content-security-policy").as_deref(),
        Some("frame-ancestors 'self'")
    );
    assert_eq!(
        header(&resp, "referrer-policy").as_deref(),
        Some("no-referrer")
    );
    assert_eq!(
        header(&resp, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    drop(s);

    let (_dir, file) = configured(
        "[server]\nroot = \"{d}/www\"\nsecurity-headers = false\n",
        |d| write(&d.join("www"), "index.html", "home"),
    );
    let s = mode.start(&["--config", file.to_str().unwrap()]);
    let (status, resp) = get(&s, "/missing");
    assert_eq!(status, 404);
    for (name, _) in defaults {
        assert_eq!(header(&resp, name), None, "{name}");
    }
}

const VHOSTS: &str = r#"
[server]
root = "{d}/default"
error-page = ["404=/404.html"]
unknown-host = "UNKNOWN"

[[server.vhost]]
host = ["blog.example.org", "www.blog.example.org"]
root = "{d}/blog"

[[server.vhost]]
host = "*.docs.example.org"
root = "{d}/docs"

[[server.vhost]]
host = ["[::1]", "127.0.0.1"]
root = "{d}/ip"
"#;

fn vhost_trees(d: &Path) {
    for (tree, body) in [
        ("default", "default site"),
        ("blog", "the blog"),
        ("docs", "the docs"),
        ("ip", "by address"),
    ] {
        write(&d.join(tree), "index.html", body);
        write(&d.join(tree), "404.html", &format!("{tree} 404 page"));
    }
}

fn start_vhosts(mode: Mode, unknown: &str) -> (tempfile::TempDir, PathBuf, Server) {
    let metrics = "metrics-file = \"{d}/m.prom\"\n";
    let toml = VHOSTS.replace("UNKNOWN", unknown).replacen(
        "[server]\n",
        &format!("[server]\n{metrics}"),
        1,
    );
    let (dir, file) = configured(&toml, vhost_trees);
    let s = mode.start(&["--config", file.to_str().unwrap()]);
    (dir, file, s)
}

per_mode!(virtual_hosts_are_selected_by_host);
fn virtual_hosts_are_selected_by_host(mode: Mode) {
    let (dir, _file, s) = start_vhosts(mode, "default");
    let body = |host: &str| {
        let (status, resp) = ask(&s, "GET", "/", host, "");
        assert_eq!(status, 200, "{host}");
        text(&resp)
    };
    for (host, want) in [
        ("blog.example.org", "the blog"),
        ("Blog.Example.ORG:8080", "the blog"),
        ("blog.example.org.", "the blog"),
        ("WWW.blog.example.org:80", "the blog"),
        ("a.docs.example.org", "the docs"),
        ("x.y.DOCS.example.org:1", "the docs"),
        ("[::1]:8080", "by address"),
        ("127.0.0.1", "by address"),
        // The bare name of a wildcard, and unknown hosts: the default root.
        ("docs.example.org", "default site"),
        ("example.org", "default site"),
        ("blog.example.org.evil", "default site"),
        // HTTP/1.0 without Host.
        ("", "default site"),
    ] {
        assert_eq!(body(host), want, "{host:?}");
    }
    // The target's authority wins over Host (RFC 9112 section 3.2.2).
    let (_, resp) = ask(&s, "GET", "http://blog.example.org/", "other.example", "");
    assert_eq!(text(&resp), "the blog");
    // Each root's own error page, and its own files through one keep-alive connection (the
    // file cache keeps the roots apart).
    let (status, resp) = ask(&s, "GET", "/missing", "a.docs.example.org", "");
    assert_eq!((status, text(&resp).as_str()), (404, "docs 404 page"));
    let mut c = Client::new(&s);
    for _ in 0..3 {
        for (host, want) in [("blog.example.org", "the blog"), ("t", "default site")] {
            c.send(format!("GET /index.html HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
            let r = c.response(false);
            assert_eq!(String::from_utf8_lossy(&r.body), want, "{host}");
        }
    }
    // Unknown hosts served from the default root are counted.
    eventually(Duration::from_secs(10), "unknown_host", || {
        (limit_hits(&dir.path().join("m.prom"), "unknown_host") >= 4).then_some(())
    });
}

per_mode!(unknown_hosts_get_421_or_404_as_configured);
fn unknown_hosts_get_421_or_404_as_configured(mode: Mode) {
    let (_dir, _file, s) = start_vhosts(mode, "421");
    let (status, resp) = ask(&s, "GET", "/", "nowhere.example", "");
    assert_eq!(status, 421, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(ask(&s, "GET", "/", "blog.example.org", "").0, 200);
    // Without a Host (HTTP/1.0) the default root still answers.
    assert_eq!(ask(&s, "GET", "/", "", "").0, 200);
    drop(s);
    let (_dir, _file, s) = start_vhosts(mode, "404");
    let (status, resp) = ask(&s, "GET", "/", "nowhere.example", "");
    // The default root's error page.
    assert_eq!((status, text(&resp).as_str()), (404, "default 404 page"));
}

per_mode!(a_reload_applies_new_site_rules);
fn a_reload_applies_new_site_rules(mode: Mode) {
    let (dir, file, s) = start_vhosts(mode, "default");
    assert_eq!(
        text(&ask(&s, "GET", "/", "blog.example.org", "").1),
        "the blog"
    );
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("\"blog.example.org\", ", "")
        + "\n[[server.headers]]\nglob = \"*.html\"\ncache-control = \"no-store\"\n";
    std::fs::write(&file, edited).unwrap();
    let _ = dir;
    s.proc.signal(Signal::SIGHUP);
    eventually(Duration::from_secs(10), "the reloaded rules", || {
        let (_, resp) = ask(&s, "GET", "/", "blog.example.org", "");
        (text(&resp) == "default site"
            && header(&resp, "cache-control").as_deref() == Some("no-store"))
        .then_some(())
    });
    assert_eq!(
        text(&ask(&s, "GET", "/", "www.blog.example.org", "").1),
        "the blog"
    );
}
