//! Property tests of the pure request-path functions, on stable Rust in `cargo test` (the
//! libFuzzer targets in `fuzz/` explore the same functions on nightly, for longer):
//! - a resolved path never leaves the root, and agrees with a model of RFC 3986 5.2.4;
//! - parsing never panics on any bytes, and a head is framed exactly;
//! - a range that is served always lies within the file;
//! - a pipelined stream of requests with bodies (lengths and chunked, cut anywhere) is
//!   framed exactly: every request is found where it starts, none is skipped or invented.

// Test code: a failing property should panic, and nothing here runs in a worker.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use forkd::http::chunked::Chunked;
use forkd::http::parse::{parse, Body, Form, Head};
use forkd::http::path::{resolve, Dots, Refusal};
use forkd::http::range::{byte_range, ByteRange};
use forkd::http::Config;
use proptest::prelude::*;

/// Path segments chosen to collide with every rule: dots plain and encoded, separators
/// encoded, dot-files, control bytes, bytes that are not UTF-8, empty segments.
const SEGMENTS: &[&str] = &[
    "",
    ".",
    "..",
    "%2e",
    "%2E%2e",
    ".%2e",
    "a",
    "b",
    "index.html",
    ".git",
    ".well-known",
    "%2f",
    "%5c",
    "%00",
    "%0a",
    "%c0%ae",
    "caf%E9",
    "x%20y",
    "%25",
    "~u",
    "a.b",
];

fn target() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(SEGMENTS), 0..8),
        any::<bool>(),
        prop::option::of("[a-z=&./]{0,8}"),
    )
        .prop_map(|(segs, slash, query)| {
            let mut t = format!("/{}", segs.join("/"));
            if slash {
                t.push('/');
            }
            if let Some(q) = query {
                t.push('?');
                t.push_str(&q);
            }
            t
        })
}

/// The model: decode each segment, drop empty and `.` segments, let `..` drop its parent and
/// refuse one that would climb; refuse what decodes to a control byte (malformed) or holds a
/// separator or starts with a dot (hidden).
fn model(t: &str) -> Result<Vec<Vec<u8>>, Refusal> {
    let path = t.split('?').next().unwrap_or("");
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut hidden = false;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let mut name = Vec::new();
        let b = seg.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                name.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                name.push(b[i]);
                i += 1;
            }
        }
        if name.iter().any(|&c| c < 0x20 || c == 0x7f) {
            return Err(Refusal::Malformed);
        }
        match name.as_slice() {
            b"." => {}
            b".." => hidden |= stack.pop().is_none(),
            n if n.contains(&b'/') || n.contains(&b'\\') => {
                hidden = true;
                stack.push(name);
            }
            _ => stack.push(name),
        }
    }
    if hidden || stack.iter().any(|c| c.first() == Some(&b'.')) {
        return Err(Refusal::Hidden);
    }
    Ok(stack)
}

fn cfg() -> Config {
    Config::default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_resolved_path_never_leaves_the_root(t in target()) {
        let dots = Dots { all: false, allow: &[] };
        let mut out = Vec::new();
        let got = resolve(t.as_bytes(), dots, &mut out);
        let want = model(&t);
        match (&got, &want) {
            (Ok(_), Ok(comps)) => {
                prop_assert_eq!(&out, &comps.join(&b'/'), "{}", t);
                for c in out.split(|&b| b == b'/') {
                    prop_assert!(out.is_empty() || (!c.is_empty() && c != b"." && c != b".."));
                }
            }
            (Err(g), Err(w)) => prop_assert_eq!(g, w, "{}", t),
            _ => prop_assert!(false, "{t}: resolve {got:?}, model {want:?}"),
        }
    }

    #[test]
    fn resolve_never_panics_on_any_bytes(t in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut out = Vec::new();
        let allow = [".well-known".to_string()];
        if resolve(&t, Dots { all: false, allow: &allow }, &mut out).is_ok() {
            prop_assert!(!out.split(|&b| b == b'/').any(|c| c == b".."));
        }
    }

    #[test]
    fn parsing_never_panics_and_frames_a_head_exactly(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        check_head(&bytes)?;
    }

    #[test]
    fn parsing_mutated_requests_never_panics(
        at in any::<prop::sample::Index>(),
        with in prop::collection::vec(any::<u8>(), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let base = b"GET /a/b?c HTTP/1.1\r\nHost: h:80\r\nIf-None-Match: \"x\", W/\"y\"\r\n\
                     If-None-Match: \"z\"\r\nRange: bytes=0-1\r\nContent-Length: 3\r\n\r\nabc";
        let mut req = base.to_vec();
        let i = at.index(req.len());
        req.splice(i..i, with);
        req.truncate(cut.index(req.len() + 1));
        check_head(&req)?;
    }

    #[test]
    fn a_served_range_is_always_within_the_file(
        first in prop::option::of(0u64..2000),
        last in prop::option::of(0u64..2000),
        huge in any::<bool>(),
        len in 0u64..1500,
    ) {
        let mut v = String::from("bytes=");
        if let Some(f) = first {
            v.push_str(&f.to_string());
        }
        v.push('-');
        if let Some(l) = last {
            v.push_str(&l.to_string());
            if huge {
                v.push_str("99999999999999999999");
            }
        }
        if let ByteRange::Part { first, last } = byte_range(v.as_bytes(), len) {
            prop_assert!(first <= last && last < len, "{v} of {len}: {first}-{last}");
        }
    }

    #[test]
    fn ranges_of_any_bytes_stay_within(v in prop::collection::vec(any::<u8>(), 0..40), len in any::<u64>()) {
        if let ByteRange::Part { first, last } = byte_range(&v, len) {
            prop_assert!(first <= last && last < len);
        }
    }

    #[test]
    fn a_pipelined_stream_is_framed_exactly(
        reqs in prop::collection::vec(request(), 1..6),
        cuts in prop::collection::vec(1usize..64, 0..20),
    ) {
        let stream: Vec<u8> = reqs.iter().flat_map(|r| r.bytes.clone()).collect();
        let found = serve_stream(&stream, &cuts);
        let want: Vec<String> = reqs.iter().map(|r| r.target.clone()).collect();
        prop_assert_eq!(found, want);
    }
}

/// One generated request: its bytes on the wire and the target it names.
#[derive(Debug, Clone)]
struct Req {
    bytes: Vec<u8>,
    target: String,
}

fn request() -> impl Strategy<Value = Req> {
    let body = prop::collection::vec(any::<u8>(), 0..40);
    let chunks = prop::collection::vec(1usize..10, 0..5);
    (0u8..3, "/[a-z]{1,6}", body, chunks, any::<bool>()).prop_map(
        |(kind, target, body, chunks, ext)| {
            let mut b = Vec::new();
            match kind {
                0 => b.extend_from_slice(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()),
                1 => {
                    b.extend_from_slice(
                        format!(
                            "POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {:03}\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    );
                    b.extend_from_slice(&body);
                }
                _ => {
                    b.extend_from_slice(
                        format!("POST {target} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
                            .as_bytes(),
                    );
                    let mut rest = &body[..];
                    for n in chunks.iter().chain(std::iter::once(&usize::MAX)) {
                        let (chunk, tail) = rest.split_at((*n).min(rest.len()));
                        rest = tail;
                        if chunk.is_empty() {
                            continue;
                        }
                        let e = if ext { ";name=\"v a\"" } else { "" };
                        b.extend_from_slice(format!("{:04x}{e}\r\n", chunk.len()).as_bytes());
                        b.extend_from_slice(chunk);
                        b.extend_from_slice(b"\r\n");
                    }
                    b.extend_from_slice(b"0\r\nX-Trailer: y\r\n\r\n");
                }
            }
            Req { bytes: b, target }
        },
    )
}

/// Serves a stream as a connection would, receiving it in pieces of the sizes in `cuts`
/// (then the rest at once): heads are parsed from the unconsumed bytes, bodies walked with
/// the same framing rules. Returns the targets found, in order.
fn serve_stream(stream: &[u8], cuts: &[usize]) -> Vec<String> {
    let cfg = cfg();
    let mut got = 0; // bytes received so far
    let mut pieces = cuts.iter().copied();
    let mut receive = |got: &mut usize| -> bool {
        if *got == stream.len() {
            return false;
        }
        *got = got
            .saturating_add(pieces.next().unwrap_or(usize::MAX))
            .min(stream.len());
        true
    };
    let mut at = 0;
    let mut targets = Vec::new();
    loop {
        let head = loop {
            match parse(&stream[at..got], &cfg) {
                Ok(Some(h)) => break h,
                Ok(None) if receive(&mut got) => continue,
                Ok(None) => return targets,
                Err(e) => panic!("refused at {at}: {e:?}"),
            }
        };
        let buf = &stream[at..];
        targets.push(String::from_utf8(buf[head.target.clone()].to_vec()).unwrap());
        at += head.len;
        match head.body {
            Body::None => {}
            Body::Length(n) => {
                let end = at + n as usize;
                while got < end {
                    assert!(receive(&mut got), "stream ended inside a body");
                }
                at = end;
            }
            Body::Chunked => {
                let mut c = Chunked::new(1 << 20, 4096);
                loop {
                    while got == at {
                        assert!(receive(&mut got), "stream ended inside a chunked body");
                    }
                    let used = c.feed(&stream[at..got]).expect("valid chunked body");
                    at += used;
                    if c.is_done() {
                        break;
                    }
                }
            }
        }
    }
}

fn check_head(bytes: &[u8]) -> Result<(), TestCaseError> {
    let cfg = cfg();
    if let Ok(Some(h)) = parse(bytes, &cfg) {
        prop_assert!(h.len > 0 && h.len <= bytes.len());
        for r in ranges(&h) {
            prop_assert!(r.start <= r.end && r.end <= h.len, "{r:?} beyond {}", h.len);
        }
        if h.form == Form::Origin {
            prop_assert_eq!(bytes.get(h.target.start), Some(&b'/'));
        }
        prop_assert_eq!(parse(&bytes[..h.len], &cfg), Ok(Some(h)));
    }
    Ok(())
}

fn ranges(h: &Head) -> Vec<std::ops::Range<usize>> {
    let mut v = vec![h.line.clone(), h.target.clone(), h.path.clone()];
    for r in [
        &h.range,
        &h.if_range,
        &h.if_unmodified_since,
        &h.if_modified_since,
        &h.referer,
        &h.user_agent,
    ]
    .into_iter()
    .flatten()
    {
        v.push(r.clone());
    }
    v
}
