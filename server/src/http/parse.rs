//! Reading a request head and deciding its framing, strictly (RFC 9112).
//!
//! httparse does the tokenizing; this module adds what a server must decide from the head:
//! the limits (414, 431, 413), the one valid `Host` (400), the body's framing, and every
//! ambiguity that could smuggle a second request past a proxy (`Content-Length` together with
//! `Transfer-Encoding`, duplicate or malformed lengths, `chunked` not last: 400, close). A head
//! that has not fully arrived is `Ok(None)`, not an error. [`Chunked`] walks a chunked body
//! byte-exactly so keep-alive framing never desyncs. Nothing here allocates on the normal path
//! or does I/O; results are ranges into the caller's buffer.

use std::ops::Range;

use super::Config;

/// The most header fields a request may carry; more is answered 431.
pub const MAX_FIELDS: usize = 64;

/// Bytes a request line may hold besides its target (method, spaces, version, CRLF).
const LINE_SLACK: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// A registered method this server does not allow on files (405 with `Allow`).
    Other,
    /// A method this server does not recognize (501).
    Unknown,
}

/// The form of the request target (RFC 9112 section 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `/path?query`
    Origin,
    /// `http://host/path?query`: a server must accept it and ignore `Host`.
    Absolute,
    /// `*` (OPTIONS only).
    Asterisk,
    /// `host:port` (CONNECT only), or anything else that is not a path.
    Authority,
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
}

/// A complete, valid request head. Ranges index the buffer given to [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, blank line included; the body (if any) starts here.
    pub len: usize,
    pub method: Method,
    /// HTTP/1.x minor version: 0 or 1 (higher minors are answered as 1.1).
    pub minor: u8,
    /// The request line without its line ending, for the access log.
    pub line: Range<usize>,
    /// The request target as sent.
    pub target: Range<usize>,
    pub form: Form,
    /// For origin and absolute forms: the path and query (empty for `http://host`).
    pub path: Range<usize>,
    pub body: Body,
    /// `Connection: close` was sent.
    pub close: bool,
    /// `Connection: keep-alive` was sent (what keeps an HTTP/1.0 connection open).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
    pub range: Option<Range<usize>>,
    pub if_range: Option<Range<usize>>,
    pub if_match: Option<Range<usize>>,
    pub if_unmodified_since: Option<Range<usize>>,
    pub if_none_match: Option<Range<usize>>,
    pub if_modified_since: Option<Range<usize>>,
    pub referer: Option<Range<usize>>,
    pub user_agent: Option<Range<usize>>,
}

/// Why a head is refused. Every refusal ends the connection after the answer: once a head is
/// in doubt, so is where the next request starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    BadRequest,
    UriTooLong,
    FieldsTooLarge,
    BodyTooLarge,
    /// A transfer coding other than `chunked`.
    UnsupportedCoding,
    /// Not HTTP/1.x.
    Version,
    /// An `Expect` other than `100-continue`.
    Expectation,
}

impl Error {
    pub fn status(self) -> u16 {
        match self {
            Error::BadRequest => 400,
            Error::UriTooLong => 414,
            Error::FieldsTooLarge => 431,
            Error::BodyTooLarge => 413,
            Error::UnsupportedCoding => 501,
            Error::Version => 505,
            Error::Expectation => 417,
        }
    }
}

/// Parses the request head at the start of `buf`. `Ok(None)`: more bytes are needed (and the
/// head is still within the limits).
pub fn parse(buf: &[u8], cfg: &Config) -> Result<Option<Head>, Error> {
    match parse_as_is(buf, cfg) {
        Err(Error::Version) => match later_minor(buf) {
            // "HTTP/1.2" is answered as 1.1 (RFC 9110 section 2.5): parse a copy with the
            // minor digit lowered. Only that byte differs, so the ranges fit `buf` as well.
            // This allocates, but only for such rare requests.
            Some(at) => {
                let mut copy = buf.to_vec();
                copy[at] = b'1';
                parse_as_is(&copy, cfg)
            }
            None => Err(version_error(buf)),
        },
        other => other,
    }
}

fn parse_as_is(buf: &[u8], cfg: &Config) -> Result<Option<Head>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return incomplete(buf, cfg),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::FieldsTooLarge),
        Err(httparse::Error::Version) => return Err(Error::Version),
        Err(_) => return Err(Error::BadRequest),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Error::BadRequest);
    };
    if target.len() > cfg.max_uri_bytes {
        return Err(Error::UriTooLong);
    }
    if len > cfg.max_header_bytes {
        return Err(Error::FieldsTooLarge);
    }
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + s.len()
    };
    let method_at = at(method.as_bytes());
    let target_at = at(target.as_bytes());
    let line_end = buf[target_at.end..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map_or(buf.len(), |i| target_at.end + i);
    let (form, path) = target_form(target.as_bytes(), target_at.start);

    let mut head = Head {
        len,
        method: method_kind(method),
        minor,
        line: method_at.start..line_end,
        target: target_at,
        form,
        path,
        body: Body::None,
        close: false,
        keep_alive: false,
        expect_continue: false,
        range: None,
        if_range: None,
        if_match: None,
        if_unmodified_since: None,
        if_none_match: None,
        if_modified_since: None,
        referer: None,
        user_agent: None,
    };

    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut codings = Codings::default();
    let mut expect_other = false;
    for f in req.headers.iter() {
        let name = f.name.as_bytes();
        let value = trim_ows(f.value);
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if !valid_host(value) {
                return Err(Error::BadRequest);
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // Even an equal duplicate is refused: intermediaries disagree on which one wins.
            if length.is_some() {
                return Err(Error::BadRequest);
            }
            length = Some(content_length(value).ok_or(Error::BadRequest)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.add(value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in list(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                head.expect_continue = minor >= 1;
            } else {
                expect_other = true;
            }
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            head.if_none_match.get_or_insert(at(value));
        } else if name.eq_ignore_ascii_case(b"range") {
            head.range.get_or_insert(at(value));
        } else if name.eq_ignore_ascii_case(b"if-range") {
            head.if_range.get_or_insert(at(value));
        } else if name.eq_ignore_ascii_case(b"if-match") {
            head.if_match.get_or_insert(at(value));
        } else if name.eq_ignore_ascii_case(b"if-unmodified-since") {
            head.if_unmodified_since.get_or_insert(at(value));
        } else if name.eq_ignore_ascii_case(b"if-modified-since") {
            head.if_modified_since.get_or_insert(at(value));
        } else if name.eq_ignore_ascii_case(b"referer") {
            head.referer.get_or_insert(at(value));
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            head.user_agent.get_or_insert(at(value));
        }
    }

    // RFC 9112 section 3.2: exactly one Host in HTTP/1.1, never more than one.
    if hosts > 1 || (minor >= 1 && hosts == 0) {
        return Err(Error::BadRequest);
    }
    head.body = if codings.present {
        // RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing; with a
        // Content-Length it is the classic smuggling vector. Both are refused.
        if minor == 0 || length.is_some() {
            return Err(Error::BadRequest);
        }
        codings.framing()?
    } else {
        match length {
            Some(n) if n > cfg.max_body_bytes => return Err(Error::BodyTooLarge),
            Some(0) | None => Body::None,
            Some(n) => Body::Length(n),
        }
    };
    // RFC 9110 section 10.1.1: a server that receives 100-continue in HTTP/1.0 ignores it.
    if expect_other && minor >= 1 {
        return Err(Error::Expectation);
    }
    Ok(Some(head))
}

/// Decides between waiting for more bytes and refusing a head that has grown too large.
fn incomplete(buf: &[u8], cfg: &Config) -> Result<Option<Head>, Error> {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line_done = buf[start..].contains(&b'\n');
    if !line_done && buf.len() - start > cfg.max_uri_bytes + LINE_SLACK {
        return Err(Error::UriTooLong);
    }
    if buf.len() >= cfg.max_header_bytes {
        return Err(if line_done {
            Error::FieldsTooLarge
        } else {
            Error::UriTooLong
        });
    }
    Ok(None)
}

/// The request line's version token (whatever follows its last space), if the line has one.
fn version_token(buf: &[u8]) -> Option<(usize, &[u8])> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let end = buf[start..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map_or(buf.len(), |i| start + i);
    let sp = buf[start..end].iter().rposition(|&b| b == b' ')? + start;
    Some((sp + 1, &buf[sp + 1..end]))
}

/// Where the minor digit of an `HTTP/1.<2-9>` version sits, if that is what was sent.
fn later_minor(buf: &[u8]) -> Option<usize> {
    let (at, v) = version_token(buf)?;
    match v {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', d] if d.is_ascii_digit() && *d >= b'2' => {
            Some(at + 7)
        }
        _ => None,
    }
}

/// A well-formed version we do not speak is 505; anything else is a malformed request line.
fn version_error(buf: &[u8]) -> Error {
    match version_token(buf) {
        Some((_, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]))
            if major.is_ascii_digit() && minor.is_ascii_digit() && *major != b'1' =>
        {
            Error::Version
        }
        _ => Error::BadRequest,
    }
}

fn method_kind(m: &str) -> Method {
    match m {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH" => Method::Other,
        _ => Method::Unknown,
    }
}

/// Classifies the target; for origin and absolute forms also returns where its path starts.
fn target_form(t: &[u8], base: usize) -> (Form, Range<usize>) {
    let whole = base..base + t.len();
    if t.first() == Some(&b'/') {
        return (Form::Origin, whole);
    }
    if t == b"*" {
        return (Form::Asterisk, whole);
    }
    for scheme in [&b"http://"[..], b"https://"] {
        if t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &t[scheme.len()..];
            let host_len = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(rest.len());
            let authority = &rest[..host_len];
            if authority.is_empty() || authority.contains(&b'@') || !valid_host(authority) {
                // userinfo is deprecated and a known phishing trick; an empty host is invalid.
                return (Form::Authority, whole);
            }
            let path_start = base + scheme.len() + host_len;
            return (Form::Absolute, path_start..whole.end);
        }
    }
    (Form::Authority, whole)
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 section 7.2); empty is allowed.
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        let Some(close) = v.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &v[1..close];
        if inside.is_empty()
            || !inside
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b":._~-!$&'()*+,;=".contains(&b))
        {
            return false;
        }
        match &v[close + 1..] {
            [] => (&v[..0], &v[..0]),
            [b':', port @ ..] => (&v[..0], port),
            _ => return false,
        }
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i + 1..]),
            None => (v, &v[..0]),
        }
    };
    let reg_name_ok = host.iter().enumerate().all(|(i, &b)| {
        b.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=".contains(&b)
            || (b == b'%'
                && host.len() > i + 2
                && host[i + 1].is_ascii_hexdigit()
                && host[i + 2].is_ascii_hexdigit())
            || (i >= 1 && host[i - 1] == b'%')
            || (i >= 2 && host[i - 2] == b'%')
    });
    reg_name_ok && port.iter().all(u8::is_ascii_digit)
}

/// `Content-Length = 1*DIGIT`: no sign, no list, no spaces inside, no overflow.
fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The transfer codings of every `Transfer-Encoding` line, in order.
#[derive(Default)]
struct Codings {
    present: bool,
    count: usize,
    chunked: usize,
    chunked_last: bool,
    other: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in list(value) {
            self.count += 1;
            if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked += 1;
                self.chunked_last = true;
            } else {
                self.other = true;
                self.chunked_last = false;
            }
        }
    }

    /// RFC 9112 section 6.3: `chunked` must be the last coding, applied once; without it the
    /// length cannot be known (400). Codings before it are ones we do not implement (501).
    fn framing(&self) -> Result<Body, Error> {
        if self.count == 0 || !self.chunked_last || self.chunked > 1 {
            Err(Error::BadRequest)
        } else if self.other {
            Err(Error::UnsupportedCoding)
        } else {
            Ok(Body::Chunked)
        }
    }
}

/// Elements of a comma-separated list, trimmed, empty ones skipped (RFC 9110 section 5.6.1).
fn list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    Malformed,
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `bool`: at least one seen.
    Size(bool),
    /// Whitespace after the size, before `;` or CR.
    SizeSpace,
    /// A chunk extension, up to CR.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line (or of the final blank line).
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

/// Walks a chunked body (RFC 9112 section 7.1) without keeping it, strictly: CRLF line
/// endings only, at most 16 hex digits, chunk extensions and trailers bounded in size.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    /// The size being read, then the bytes of the chunk still to come.
    left: u64,
    digits: u8,
    /// Data bytes so far, bounded by `max_body`.
    total: u64,
    max_body: u64,
    /// Bytes of extensions and trailers so far, bounded by `max_meta`.
    meta: usize,
    max_meta: usize,
}

impl Chunked {
    pub fn new(max_body: u64, max_meta: usize) -> Chunked {
        Chunked {
            state: State::Size(false),
            left: 0,
            digits: 0,
            total: 0,
            max_body,
            meta: 0,
            max_meta,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes body bytes from the front of `buf` and returns how many belonged to the body;
    /// once [`Chunked::is_done`], what follows is the next request.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, ChunkedError> {
        use ChunkedError::*;
        let mut i = 0;
        while i < buf.len() && self.state != State::Done {
            if self.state == State::Data {
                let take = (buf.len() - i).min(usize::try_from(self.left).unwrap_or(usize::MAX));
                i += take;
                self.left -= take as u64;
                if self.left == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match self.state {
                State::Size(seen) => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        self.digits += 1;
                        if self.digits > 16 {
                            return Err(TooLarge);
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.left = (self.left << 4) | d;
                        State::Size(true)
                    }
                    b' ' | b'\t' if seen => State::SizeSpace,
                    b';' if seen => State::Extension,
                    b'\r' if seen => State::SizeLf,
                    _ => return Err(Malformed),
                },
                State::SizeSpace => match b {
                    b' ' | b'\t' => State::SizeSpace,
                    b';' => State::Extension,
                    b'\r' => State::SizeLf,
                    _ => return Err(Malformed),
                },
                State::Extension => {
                    self.meta += 1;
                    if self.meta > self.max_meta {
                        return Err(TooLarge);
                    }
                    match b {
                        b'\r' => State::SizeLf,
                        b'\t' | b' '..=b'~' | 0x80..=0xff => State::Extension,
                        _ => return Err(Malformed),
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(Malformed);
                    }
                    self.digits = 0;
                    if self.left == 0 {
                        State::TrailerStart
                    } else {
                        self.total = self.total.saturating_add(self.left);
                        if self.total > self.max_body {
                            return Err(TooLarge);
                        }
                        State::Data
                    }
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size(false),
                State::TrailerStart if b == b'\r' => State::FinalLf,
                State::TrailerStart | State::Trailer => {
                    self.meta += 1;
                    if self.meta > self.max_meta {
                        return Err(TooLarge);
                    }
                    match b {
                        b'\r' => State::TrailerLf,
                        b'\t' | b' '..=b'~' | 0x80..=0xff => State::Trailer,
                        _ => return Err(Malformed),
                    }
                }
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::FinalLf if b == b'\n' => State::Done,
                _ => return Err(Malformed),
            };
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::default()
    }

    fn head(req: &str) -> Result<Option<Head>, Error> {
        parse(req.as_bytes(), &cfg())
    }

    fn ok(req: &str) -> Head {
        head(req)
            .unwrap()
            .unwrap_or_else(|| panic!("incomplete: {req:?}"))
    }

    #[test]
    fn simple_get() {
        let req = "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\nNEXT";
        let h = ok(req);
        assert_eq!(h.len, req.len() - 4);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.minor, 1);
        assert_eq!(&req[h.line.clone()], "GET /a/b?c=d HTTP/1.1");
        assert_eq!(&req[h.target.clone()], "/a/b?c=d");
        assert_eq!(&req[h.path.clone()], "/a/b?c=d");
        assert_eq!(h.form, Form::Origin);
        assert_eq!(h.body, Body::None);
        assert_eq!(&req[h.user_agent.unwrap()], "t");
        assert!(!h.close && !h.keep_alive);
    }

    #[test]
    fn partial_is_none() {
        for req in [
            "",
            "G",
            "GET / HTTP/1.1\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n",
            "\r\n",
        ] {
            assert_eq!(head(req), Ok(None), "{req:?}");
        }
    }

    #[test]
    fn leading_blank_lines_are_skipped() {
        let req = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = ok(req);
        assert_eq!(&req[h.line], "GET / HTTP/1.1");
    }

    #[test]
    fn statuses_table() {
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(5000));
        let long_line = format!("GET /{}", "a".repeat(5000));
        let big_field = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let big_partial = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "a".repeat(9000));
        let many: String = (0..70).map(|i| format!("X{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        let cases: &[(&str, Error)] = &[
            ("GET / HTTP/1.1\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", Error::BadRequest),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\rHost: a\r\n\r\n", Error::BadRequest),
            ("GET / http/1.1\r\nHost: a\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", Error::Version),
            ("GET / HTTP/3.0\r\n\r\n", Error::Version),
            ("GET / FOO/1.1\r\nHost: a\r\n\r\n", Error::BadRequest),
            (&long_uri, Error::UriTooLong),
            (&long_line, Error::UriTooLong),
            (&big_field, Error::FieldsTooLarge),
            (&big_partial, Error::FieldsTooLarge),
            (&many, Error::FieldsTooLarge),
            // Smuggling: ambiguous or malformed framing.
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                Error::BadRequest,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                Error::BadRequest,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Error::BadRequest,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\n", Error::BadRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", Error::BadRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", Error::BadRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", Error::BadRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", Error::BadRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", Error::BadRequest),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                Error::BadRequest,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", Error::BodyTooLarge),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", Error::BadRequest),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Error::BadRequest,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
                Error::BadRequest,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                Error::BadRequest,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", Error::BadRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", Error::BadRequest),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Error::UnsupportedCoding,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", Error::Expectation),
        ];
        for (req, want) in cases {
            assert_eq!(head(req), Err(*want), "{req:?}");
        }
    }

    #[test]
    fn framing_accepted() {
        let h = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\n");
        assert_eq!(h.body, Body::Length(5));
        assert_eq!(h.method, Method::Other);
        let h = ok("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.body, Body::None);
        let h = ok("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n");
        assert_eq!(h.body, Body::Chunked);
        let h = ok("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked , \r\n\r\n");
        assert_eq!(h.body, Body::Chunked);
    }

    #[test]
    fn versions_and_connection() {
        let h = ok("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.minor, 0);
        let h = ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
        let h = ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n");
        assert!(h.close);
        let req = "GET / HTTP/1.7\r\nHost: a\r\n\r\n";
        let h = ok(req);
        assert_eq!(h.minor, 1);
        assert_eq!(&req[h.line], "GET / HTTP/1.7");
        assert_eq!(head("GET / HTTP/1.5"), Ok(None));
        let h = ok("GET / HTTP/1.0\r\nExpect: whatever\r\n\r\n");
        assert!(!h.expect_continue);
        let h = ok("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n");
        assert!(h.expect_continue);
    }

    #[test]
    fn methods() {
        for (m, want) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Other),
            ("OPTIONS", Method::Other),
            ("get", Method::Unknown),
            ("BREW", Method::Unknown),
        ] {
            assert_eq!(
                ok(&format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n")).method,
                want
            );
        }
    }

    #[test]
    fn target_forms() {
        let req = "GET http://Example.com:80/x?y HTTP/1.1\r\nHost: other\r\n\r\n";
        let h = ok(req);
        assert_eq!(h.form, Form::Absolute);
        assert_eq!(&req[h.path], "/x?y");
        let req = "GET HTTPS://example.com HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = ok(req);
        assert_eq!(h.form, Form::Absolute);
        assert!(h.path.is_empty());
        for (t, want) in [
            ("*", Form::Asterisk),
            ("example.com:443", Form::Authority),
            ("http://u@evil/", Form::Authority),
            ("http:///x", Form::Authority),
            ("ftp://a/b", Form::Authority),
        ] {
            assert_eq!(
                ok(&format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n")).form,
                want,
                "{t}"
            );
        }
    }

    #[test]
    fn hosts() {
        for h in [
            "",
            "a",
            "a:80",
            "a:",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:80",
            "xn--d1a.example",
            "a%41b",
        ] {
            assert!(valid_host(h.as_bytes()), "{h}");
        }
        for h in [
            "a b", "a/b", "[::1", "[]", "a:b", "a%4", "a%zz", "a@b", "[::1]x", "a\\b",
        ] {
            assert!(!valid_host(h.as_bytes()), "{h}");
        }
    }

    fn chunked(body: &[u8], max: u64) -> Result<(usize, bool), ChunkedError> {
        let mut c = Chunked::new(max, 1024);
        let n = c.feed(body)?;
        Ok((n, c.is_done()))
    }

    #[test]
    fn chunked_table() {
        let good: &[&[u8]] = &[
            b"0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;ext=1;x=\"y\"\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n",
            b"5 ;a\r\nhello\r\n0\r\nTrailer: x\r\nOther: y\r\n\r\n",
            b"000005\r\nhello\r\n00\r\n\r\n",
        ];
        for body in good {
            let mut with_next = body.to_vec();
            with_next.extend_from_slice(b"GET /");
            assert_eq!(chunked(&with_next, 100), Ok((body.len(), true)), "{body:?}");
            // Byte by byte: the same result whatever the read boundaries.
            let mut c = Chunked::new(100, 1024);
            for b in body.iter() {
                assert_eq!(c.feed(std::slice::from_ref(b)), Ok(1));
            }
            assert!(c.is_done());
        }
        let bad: &[(&[u8], ChunkedError)] = &[
            (b"\r\n", ChunkedError::Malformed),
            (b"x\r\n", ChunkedError::Malformed),
            (b"5\nhello\r\n0\r\n\r\n", ChunkedError::Malformed),
            (b"5\r\nhelloX\r\n", ChunkedError::Malformed),
            (b"5\r\nhello\n0\r\n\r\n", ChunkedError::Malformed),
            (b"-5\r\n", ChunkedError::Malformed),
            (b"+5\r\n", ChunkedError::Malformed),
            (b" 5\r\n", ChunkedError::Malformed),
            (b"0x5\r\n", ChunkedError::Malformed),
            (b"5\r\nhello\r\n0\r\n\n", ChunkedError::Malformed),
            (b"5;a\x00\r\n", ChunkedError::Malformed),
            (b"0\r\nA\x01\r\n\r\n", ChunkedError::Malformed),
            (b"65\r\n", ChunkedError::TooLarge),
            (b"ffffffffffffffffff\r\n", ChunkedError::TooLarge),
            (b"40\r\n", ChunkedError::TooLarge),
        ];
        for (body, want) in bad {
            assert_eq!(chunked(body, 63), Err(*want), "{body:?}");
        }
        // Partial input is not an error.
        assert_eq!(chunked(b"5\r\nhel", 100), Ok((6, false)));
    }

    #[test]
    fn chunked_total_is_bounded_across_chunks() {
        let mut c = Chunked::new(10, 1024);
        assert_eq!(c.feed(b"6\r\nabcdef\r\n"), Ok(11));
        assert_eq!(c.feed(b"6\r\n"), Err(ChunkedError::TooLarge));
    }

    #[test]
    fn chunked_metadata_is_bounded() {
        let mut c = Chunked::new(10, 8);
        assert_eq!(c.feed(b"1;aaaaaaaaaaa\r\n"), Err(ChunkedError::TooLarge));
        let mut c = Chunked::new(10, 8);
        assert_eq!(c.feed(b"0\r\nX: aaaaaaaa\r\n"), Err(ChunkedError::TooLarge));
    }

    /// A tiny deterministic generator, so the mutation test needs no extra crate and every
    /// failure reproduces.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn mutated_requests_never_panic_and_ranges_stay_inside() {
        let seeds: &[&[u8]] = &[
            b"GET /a/b?c HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\nReferer: r\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
            b"GET http://h:1/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"\r\nGET / HTTP/1.9\r\nHost: [::1]:80\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"x\"\r\nExpect: 100-continue\r\n\r\n",
        ];
        let alphabet = b" \r\n:/%.,;\"\\\0\x7f\xffHTTP/1.0chunked";
        let cfg = Config {
            max_header_bytes: 256,
            max_uri_bytes: 64,
            ..Config::default()
        };
        let mut rng = XorShift(0x9e3779b97f4a7c15);
        for _ in 0..50_000 {
            let mut req = seeds[rng.below(seeds.len())].to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(req.len() + 1);
                match rng.below(4) {
                    0 if at < req.len() => req[at] = alphabet[rng.below(alphabet.len())],
                    1 => req.insert(at, alphabet[rng.below(alphabet.len())]),
                    2 if at < req.len() => {
                        req.remove(at);
                    }
                    _ => req.truncate(at),
                }
            }
            if let Ok(Some(h)) = parse(&req, &cfg) {
                let fields = [
                    Some(h.line),
                    Some(h.target),
                    Some(h.path),
                    h.user_agent,
                    h.referer,
                ];
                for r in fields.into_iter().flatten() {
                    assert!(r.start <= r.end && r.end <= h.len, "{req:?}");
                }
                assert!(h.len <= req.len());
            }
            let mut c = Chunked::new(1000, 100);
            if let Ok(n) = c.feed(&req) {
                assert!(n <= req.len());
            }
        }
    }
}
