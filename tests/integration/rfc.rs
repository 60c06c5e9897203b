//! RFC 9110/9112 conformance of the request parser against the real `forkd` over loopback:
//! Host and absolute-form authority validation, the empty path before a query, request lines
//! of 8,000 octets, repeated precondition fields, strict chunked framing, leading zeros and
//! oversized lengths, and OPTIONS. Each case checks statuses and bytes on the wire, and for
//! framing, that a pipelined request after the body is (or, after a refusal, is not) answered.

use std::path::Path;

use crate::util::{body_of, header, per_mode, status_of, Mode, Server};

const INDEX: &str = "<!doctype html><title>home</title>\n";
const FILE: &str = "file body\n";

fn site(mode: Mode, args: &[&str]) -> Server {
    mode.with_site(args, |root: &Path| {
        std::fs::write(root.join("index.html"), INDEX).unwrap();
        std::fs::write(root.join("f.txt"), FILE).unwrap();
    })
}

/// One response cut from a stream of them: status, head text, body.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        header(self.head.as_bytes(), name)
    }
}

/// Splits everything a connection received into responses, by `Content-Length` (none for a
/// 304); panics on bytes that are not a whole response, so a desynchronised stream fails.
fn responses(mut raw: &[u8]) -> Vec<Resp> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("not a whole head: {:?}", String::from_utf8_lossy(raw)))
            + 4;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = status_of(head.as_bytes());
        let len: usize = if status == 304 {
            0
        } else {
            header(head.as_bytes(), "content-length")
                .expect("content-length")
                .parse()
                .unwrap()
        };
        assert!(raw.len() >= end + len, "cut body: {head}");
        out.push(Resp {
            status,
            head,
            body: raw[end..end + len].to_vec(),
        });
        raw = &raw[end + len..];
    }
    out
}

/// The statuses of every response to `req` on one connection, read until the server closes.
fn statuses(s: &Server, req: &[u8]) -> Vec<u16> {
    responses(&s.raw(req)).iter().map(|r| r.status).collect()
}

const CLOSE_GET: &str = "GET /f.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

per_mode!(empty_host_is_refused);
fn empty_host_is_refused(mode: Mode) {
    let s = site(mode, &[]);
    for host_line in ["Host:", "Host: ", "Host:\t", "Host: :80"] {
        let req = format!("GET /f.txt HTTP/1.1\r\n{host_line}\r\n\r\n{CLOSE_GET}");
        // 400, and the connection ends: the pipelined request is not answered.
        assert_eq!(statuses(&s, req.as_bytes()), [400], "{host_line:?}");
    }
    // HTTP/1.0 needs no Host, but one that is sent must be valid.
    let resp = s.raw(b"GET /f.txt HTTP/1.0\r\nHost:\r\n\r\n");
    assert_eq!(status_of(&resp), 400);
    let resp = s.raw(b"GET /f.txt HTTP/1.0\r\n\r\n");
    assert_eq!((status_of(&resp), body_of(&resp)), (200, FILE.as_bytes()));
}

per_mode!(host_and_absolute_form_authority_are_validated);
fn host_and_absolute_form_authority_are_validated(mode: Mode) {
    let s = site(mode, &[]);
    for (host, want) in [
        ("[::1]", 200),
        ("[::1]:8080", 200),
        ("[v1.x]", 200),
        ("x:65535", 200),
        // An empty port is valid URI syntax, the same as no port (RFC 3986 section 6.2.3).
        ("x:", 200),
        ("[zz:zz]", 400),
        ("[zz:zz]:80", 400),
        ("[::1%eth0]", 400),
        ("[127.0.0.1]", 400),
        ("x:999999", 400),
        ("x:65536", 400),
        ("x:8x", 400),
        ("x:1:2", 400),
    ] {
        let req = format!("GET /f.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let resp = s.raw(req.as_bytes());
        assert_eq!(status_of(&resp), want, "Host: {host}");
        if want == 200 {
            assert_eq!(body_of(&resp), FILE.as_bytes(), "Host: {host}");
        }
    }
    // The authority of an absolute-form target is held to the same rules.
    for (target, want) in [
        ("http://[::1]:8080/f.txt", 200),
        ("http://[::1]/f.txt", 200),
        ("http://x:/f.txt", 200),
        ("http://[zz:zz]/f.txt", 400),
        ("http://x:999999/f.txt", 400),
        ("http://:80/f.txt", 400),
        ("http:///f.txt", 400),
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let resp = s.raw(req.as_bytes());
        assert_eq!(status_of(&resp), want, "{target}");
        if want == 200 {
            assert_eq!(body_of(&resp), FILE.as_bytes(), "{target}");
        }
    }
}

per_mode!(absolute_form_with_an_empty_path_is_the_root);
fn absolute_form_with_an_empty_path_is_the_root(mode: Mode) {
    let s = site(mode, &[]);
    for target in [
        "http://x?q=1",
        "http://x:8080?q=1&r=%2F",
        "HTTP://x?",
        "http://x",
        "/?q=1",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let resp = s.raw(req.as_bytes());
        assert_eq!(
            (status_of(&resp), body_of(&resp)),
            (200, INDEX.as_bytes()),
            "{target}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
}

per_mode!(request_lines_of_8000_octets_are_served);
fn request_lines_of_8000_octets_are_served(mode: Mode) {
    let s = site(mode, &[]);
    // Exactly 8,000 octets of request line (RFC 9112 section 3), with ordinary fields.
    let fixed = "GET /f.txt? HTTP/1.1".len();
    let line = format!("GET /f.txt?{} HTTP/1.1", "q".repeat(8000 - fixed));
    assert_eq!(line.len(), 8000);
    let fields = format!(
        "Host: t\r\nUser-Agent: {}\r\nAccept: */*\r\nAccept-Language: en\r\nConnection: close\r\n",
        "u".repeat(500)
    );
    let resp = s.raw(format!("{line}\r\n{fields}\r\n").as_bytes());
    assert_eq!(
        (status_of(&resp), body_of(&resp)),
        (200, FILE.as_bytes()),
        "{}",
        String::from_utf8_lossy(&resp[..resp.len().min(200)])
    );
    // The same line sent in pieces is awaited, not refused while it arrives.
    let mut c = s.connect();
    let whole = format!("{line}\r\n{fields}\r\n");
    for piece in whole.as_bytes().chunks(1000) {
        std::io::Write::write_all(&mut c, piece).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut resp = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c, &mut resp);
    assert_eq!(status_of(&resp), 200);

    // A target past the default 8 KiB is still 414, complete or not.
    let long = format!(
        "GET /f.txt?{} HTTP/1.1\r\nHost: t\r\n\r\n",
        "q".repeat(8192)
    );
    assert_eq!(status_of(&s.raw(long.as_bytes())), 414);
    let endless = format!("GET /f.txt?{}", "q".repeat(20_000));
    assert_eq!(status_of(&s.raw(endless.as_bytes())), 414);
}

per_mode!(repeated_precondition_lines_form_one_list);
fn repeated_precondition_lines_form_one_list(mode: Mode) {
    let s = site(mode, &[]);
    let (_, resp) = s.get("/f.txt");
    let etag = header(&resp, "etag").unwrap();
    let cases = [
        // The matching tag is on the second line: it must not be ignored.
        (
            vec![
                "If-None-Match: \"x\"".to_string(),
                format!("If-None-Match: {etag}"),
            ],
            304,
        ),
        (
            vec![
                format!("If-None-Match: \"x\", W/{etag}"),
                "If-None-Match: \"y\"".into(),
            ],
            304,
        ),
        (
            vec!["If-None-Match: \"x\"".into(), "If-None-Match: \"y\"".into()],
            200,
        ),
        (
            vec!["If-Match: \"x\"".to_string(), format!("If-Match: {etag}")],
            200,
        ),
        (vec!["If-Match: \"x\"".into(), "If-Match: *".into()], 200),
        (
            vec!["If-Match: \"x\"".into(), "If-Match: \"y\"".into()],
            412,
        ),
        (
            vec![format!("If-Match: W/{etag}"), "If-Match: \"y\"".into()],
            412,
        ),
    ];
    for (lines, want) in cases {
        let fields: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        let req = format!("GET /f.txt HTTP/1.1\r\nHost: t\r\n{fields}\r\n{CLOSE_GET}");
        let got = responses(&s.raw(req.as_bytes()));
        // Answered, and the connection goes on to the pipelined request.
        assert_eq!(
            got.iter().map(|r| r.status).collect::<Vec<_>>(),
            [want, 200],
            "{lines:?}"
        );
        if want == 304 {
            assert_eq!(got[0].header("etag").as_deref(), Some(etag.as_str()));
        }
    }
    // Eight lines are kept; a ninth is more than the server holds: 431.
    let lines = |n: usize| -> String {
        (0..n)
            .map(|i| format!("If-None-Match: \"{i}\"\r\n"))
            .collect()
    };
    let req = format!(
        "GET /f.txt HTTP/1.1\r\nHost: t\r\n{}If-None-Match: {etag}\r\nConnection: close\r\n\r\n",
        lines(7)
    );
    assert_eq!(statuses(&s, req.as_bytes()), [304]);
    let req = format!("GET /f.txt HTTP/1.1\r\nHost: t\r\n{}\r\n", lines(9));
    assert_eq!(statuses(&s, req.as_bytes()), [431]);
}

/// A chunked GET of `/f.txt` with `body`, then a pipelined request.
fn chunked_then_get(body: &[u8]) -> Vec<u8> {
    let mut req = b"GET /f.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(body);
    req.extend_from_slice(CLOSE_GET.as_bytes());
    req
}

per_mode!(chunked_framing_is_strict);
fn chunked_framing_is_strict(mode: Mode) {
    let s = site(mode, &["--max-body-bytes", "1000"]);
    // Valid framing: the body ends exactly where the grammar says, so the next request is
    // answered too.
    let good: &[&[u8]] = &[
        b"5 ;a\r\nhello\r\n0\r\n\r\n",
        b"5\t; a = b ;c=\"q\\\"s; t\"\r\nhello\r\n0;z\r\n\r\n",
        b"5;a=b;c\r\nhello\r\n0\r\nX-T: 1\r\nY:\r\n\r\n",
        // Leading zeros are not significant: 21 digits, size 5.
        b"000000000000000000005\r\nhello\r\n0\r\n\r\n",
        b"0000000000000000000000000\r\n\r\n",
    ];
    for body in good {
        let got = responses(&s.raw(&chunked_then_get(body)));
        let got: Vec<_> = got.iter().map(|r| (r.status, r.body.clone())).collect();
        let want = (200, FILE.as_bytes().to_vec());
        assert_eq!(
            got,
            [want.clone(), want],
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    // Broken framing: 400 and close; what follows is never taken for a request.
    let bad: &[(&[u8], u16)] = &[
        (b"5 \r\nhello\r\n0\r\n\r\n", 400),
        (b"5\t\r\nhello\r\n0\r\n\r\n", 400),
        (b"5;\r\nhello\r\n0\r\n\r\n", 400),
        (b"5;=x\r\nhello\r\n0\r\n\r\n", 400),
        (b"5; \r\nhello\r\n0\r\n\r\n", 400),
        (b"5;a@b\r\nhello\r\n0\r\n\r\n", 400),
        (b"5;a=b c\r\nhello\r\n0\r\n\r\n", 400),
        (b"5;a=\"b\r\nhello\r\n0\r\n\r\n", 400),
        (b"5;a=\r\nhello\r\n0\r\n\r\n", 400),
        (b"0\r\nNoColon\r\n\r\n", 400),
        (b"0\r\n: v\r\n\r\n", 400),
        (b"0\r\nA: b\r\n folded\r\n\r\n", 400),
        (b"0\r\n\tA: b\r\n\r\n", 400),
        (b"0\r\nA : b\r\n\r\n", 400),
        (b"0\r\nA(b): c\r\n\r\n", 400),
        // A size that cannot fit 64 bits is malformed, not merely large.
        (b"10000000000000000\r\n", 400),
        (b"0000ffffffffffffffffff\r\n", 400),
        // A valid size over the body limit is too large.
        (b"fffff\r\n", 413),
        (b"ffffffffffffffff\r\n", 413),
    ];
    for (body, want) in bad {
        assert_eq!(
            statuses(&s, &chunked_then_get(body)),
            [*want],
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

per_mode!(content_lengths_with_leading_zeros_and_past_64_bits);
fn content_lengths_with_leading_zeros_and_past_64_bits(mode: Mode) {
    let s = site(mode, &["--max-body-bytes", "1000"]);
    for (length, body) in [
        ("00000000000000000000", ""),
        ("0005", "hello"),
        ("0000000000000000000000005", "hello"),
    ] {
        let req = format!(
            "GET /f.txt HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n\r\n{body}{CLOSE_GET}"
        );
        let got = responses(&s.raw(req.as_bytes()));
        let got: Vec<_> = got.iter().map(|r| (r.status, r.body.clone())).collect();
        let want = (200, FILE.as_bytes().to_vec());
        assert_eq!(got, [want.clone(), want], "Content-Length: {length}");
    }
    for (length, want) in [
        // All digits, but past 64 bits: a length too large (413), not a malformed one.
        ("99999999999999999999999", 413),
        ("18446744073709551616", 413),
        ("1001", 413),
        ("99999999999999999999x", 400),
        ("", 400),
    ] {
        let req = format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n\r\n");
        assert_eq!(
            statuses(&s, req.as_bytes()),
            [want],
            "Content-Length: {length}"
        );
    }
    // Beside Transfer-Encoding any Content-Length is the smuggling pattern: 400.
    let req = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(statuses(&s, req.as_bytes()), [400]);
}

per_mode!(options_is_answered_with_allow);
fn options_is_answered_with_allow(mode: Mode) {
    let s = site(mode, &[]);
    // OPTIONS `*`, a file, a missing path and an absolute form, pipelined on one connection:
    // each a 200 with Allow and an empty body, and the connection goes on.
    let req = format!(
        "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n\
         OPTIONS /f.txt HTTP/1.1\r\nHost: t\r\n\r\n\
         OPTIONS /missing HTTP/1.1\r\nHost: t\r\n\r\n\
         OPTIONS http://t/ HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\
         {CLOSE_GET}"
    );
    let raw = s.raw(req.as_bytes());
    let got = responses(&raw);
    assert_eq!(got.len(), 5, "{}", String::from_utf8_lossy(&raw));
    for r in &got[..4] {
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD, OPTIONS"));
        assert_eq!(r.header("content-length").as_deref(), Some("0"));
        assert!(r.body.is_empty());
        assert!(r.header("content-type").is_none(), "{}", r.head);
    }
    assert_eq!(
        (got[4].status, got[4].body.as_slice()),
        (200, FILE.as_bytes())
    );

    // The 405 of every other registered method names OPTIONS too.
    for method in ["POST", "PUT", "DELETE", "PATCH", "TRACE"] {
        let req = format!("{method} /f.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let resp = s.raw(req.as_bytes());
        assert_eq!(status_of(&resp), 405, "{method}");
        assert_eq!(
            header(&resp, "allow").as_deref(),
            Some("GET, HEAD, OPTIONS"),
            "{method}"
        );
    }
    // `*` belongs to OPTIONS alone; unknown methods stay 501; an authority form is no
    // target for OPTIONS.
    for (req, want) in [
        ("GET * HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("HEAD * HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("POST * HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (
            "BREW / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            501,
        ),
        (
            "OPTIONS t:443 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "options * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            400,
        ),
    ] {
        assert_eq!(status_of(&s.raw(req.as_bytes())), want, "{req:?}");
    }
}
