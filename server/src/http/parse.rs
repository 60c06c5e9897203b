//! Reading a request head and deciding its framing, strictly (RFC 9112).
//!
//! httparse does the tokenizing; this module adds what a server must decide from the head:
//! the limits (414, 431, 413), the one valid `Host` (400), the body's framing, and every
//! ambiguity that could smuggle a second request past a proxy (`Content-Length` together with
//! `Transfer-Encoding`, duplicate or malformed lengths, `chunked` not last: 400, close). A head
//! that has not fully arrived is `Ok(None)`, not an error; a chunked body is walked by
//! `chunked`. Nothing here allocates on the normal path or does I/O; results are ranges into
//! the caller's buffer.

use std::ops::Range;

use super::Config;

/// The most header fields a request may carry; more is answered 431.
pub const MAX_FIELDS: usize = 64;

/// Bytes a request line may hold besides its target (method, spaces, version, CRLF).
const LINE_SLACK: usize = 64;

/// The most field lines of one list-valued precondition field (`If-Match`, `If-None-Match`)
/// kept; more is answered 431. Clients send one; a few can come from intermediaries that add
/// their own. The bound keeps [`FieldLines`] a fixed array, so parsing never allocates.
pub const MAX_LIST_LINES: usize = 8;

/// The methods this server implements, as an `Allow` value (RFC 9110 section 10.2.1): the
/// answer to OPTIONS and the field every 405 carries.
pub const ALLOW: &[u8] = b"GET, HEAD, OPTIONS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Answered with `Allow` and no content, whether or not the target exists.
    Options,
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
    /// `*`: only with OPTIONS (RFC 9112 section 3.2.4); any other method with it is 400.
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
    /// For origin and absolute forms: the path and query. For an absolute form whose path is
    /// empty it is empty (`http://host`) or only the query (`http://host?q`, starting with
    /// `?`); either stands for the path `/` (RFC 9112 section 3.2.2, RFC 3986 section 6.2.3).
    /// See [`Head::path_or_root`].
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
    /// Every `If-Match` line, in order: they form one list (RFC 9110 section 5.3).
    pub if_match: FieldLines,
    pub if_unmodified_since: Option<Range<usize>>,
    /// Every `If-None-Match` line, in order.
    pub if_none_match: FieldLines,
    pub if_modified_since: Option<Range<usize>>,
    pub referer: Option<Range<usize>>,
    pub user_agent: Option<Range<usize>>,
    /// Every `Accept-Encoding` line, in order (`encoding::negotiate` reads them as one list).
    pub accept_encoding: FieldLines,
    /// The host the request is for: the authority of an absolute-form target, which wins
    /// over `Host` (RFC 9112 section 3.2.2), else the `Host` value; `None` for HTTP/1.0
    /// without one. Valid as `valid_host` checks, port included.
    pub host: Option<Range<usize>>,
}

impl Head {
    /// The path and query to resolve, from `buf` (the buffer given to [`parse`]): `/` when
    /// an absolute form had an empty path. The query is not kept in that case: resolution
    /// ignores it, and `/` is never redirected, so nothing downstream would read it.
    pub fn path_or_root<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        match buf.get(self.path.clone()) {
            Some(p @ [b'/', ..]) => p,
            _ => b"/",
        }
    }
}

/// The lines of one field that may repeat and whose values combine into one comma-separated
/// list (RFC 9110 section 5.3), as ranges into the buffer given to [`parse`]. A fixed array of
/// [`MAX_LIST_LINES`], so a head stays free of heap allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldLines {
    lines: [Range<usize>; MAX_LIST_LINES],
    count: usize,
}

impl FieldLines {
    /// No line of the field was sent.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds one line; more than [`MAX_LIST_LINES`] is 431.
    fn push(&mut self, at: Range<usize>) -> Result<(), Error> {
        let slot = self
            .lines
            .get_mut(self.count)
            .ok_or(Error::FieldsTooLarge)?;
        *slot = at;
        self.count += 1;
        Ok(())
    }

    /// The values of the lines, in order, gathered from `buf` into `out` without allocating.
    pub fn values<'b, 'o>(
        &self,
        buf: &'b [u8],
        out: &'o mut [&'b [u8]; MAX_LIST_LINES],
    ) -> &'o [&'b [u8]] {
        let mut n = 0;
        for (slot, at) in out.iter_mut().zip(self.lines.iter().take(self.count)) {
            *slot = buf.get(at.clone()).unwrap_or_default();
            n += 1;
        }
        out.get(..n).unwrap_or_default()
    }
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
                if let Some(digit) = copy.get_mut(at) {
                    *digit = b'1';
                }
                parse_as_is(&copy, cfg)
            }
            None => Err(version_error(buf)),
        },
        other => other,
    }
}

fn parse_as_is(buf: &[u8], cfg: &Config) -> Result<Option<Head>, Error> {
    // Left uninitialised: httparse writes the fields it finds, and filling 64 empty ones
    // first was 2 KiB of stores (32 cache lines) per request.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields) {
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
    let line_end = buf
        .get(target_at.end..)
        .unwrap_or_default()
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
        if_match: FieldLines::default(),
        if_unmodified_since: None,
        if_none_match: FieldLines::default(),
        if_modified_since: None,
        referer: None,
        user_agent: None,
        accept_encoding: FieldLines::default(),
        host: None,
    };

    let mut hosts = 0;
    // The first Content-Length, or why its value is refused (kept, not returned at once, so a
    // Transfer-Encoding beside it is still reported as the smuggling attempt it is).
    let mut length: Option<Result<u64, Error>> = None;
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
            head.host = Some(at(value));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // Even an equal duplicate is refused: intermediaries disagree on which one wins.
            if length.is_some() {
                return Err(Error::BadRequest);
            }
            length = Some(content_length(value));
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
            head.if_none_match.push(at(value))?;
        } else if name.eq_ignore_ascii_case(b"range") {
            head.range.get_or_insert(at(value));
        } else if name.eq_ignore_ascii_case(b"if-range") {
            head.if_range.get_or_insert(at(value));
        } else if name.eq_ignore_ascii_case(b"if-match") {
            head.if_match.push(at(value))?;
        } else if name.eq_ignore_ascii_case(b"if-unmodified-since") {
            head.if_unmodified_since.get_or_insert(at(value));
        } else if name.eq_ignore_ascii_case(b"if-modified-since") {
            head.if_modified_since.get_or_insert(at(value));
        } else if name.eq_ignore_ascii_case(b"accept-encoding") {
            head.accept_encoding.push(at(value))?;
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
    if head.form == Form::Absolute {
        // `target_form` accepted `scheme://authority` before the path.
        let t = target.as_bytes();
        if let Some(i) = t.windows(3).position(|w| w == b"://") {
            head.host = Some(head.target.start + i + 3..head.path.start);
        }
    }
    // RFC 9112 section 3.2.4: the asterisk form is only for a server-wide OPTIONS.
    if head.form == Form::Asterisk && head.method != Method::Options {
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
        match length.transpose()? {
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

/// Decides between waiting for more bytes and refusing a head that has grown too large. A
/// request line still arriving may grow to the longest target plus [`LINE_SLACK`] (with the
/// defaults, 8,256 octets: more than the 8,000 RFC 9112 section 3 asks for) before it is 414.
fn incomplete(buf: &[u8], cfg: &Config) -> Result<Option<Head>, Error> {
    let line = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .and_then(|start| buf.get(start..))
        .unwrap_or_default();
    let line_done = line.contains(&b'\n');
    if !line_done && line.len() > cfg.max_uri_bytes.saturating_add(LINE_SLACK) {
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
    let rest = buf.get(start..)?;
    let line = rest
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map_or(rest, |end| rest.get(..end).unwrap_or_default());
    let sp = line.iter().rposition(|&b| b == b' ')?;
    Some((start + sp + 1, line.get(sp + 1..)?))
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
        "OPTIONS" => Method::Options,
        "POST" | "PUT" | "DELETE" | "CONNECT" | "TRACE" | "PATCH" => Method::Other,
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
        let Some((given, rest)) = t.split_at_checked(scheme.len()) else {
            continue;
        };
        if !given.eq_ignore_ascii_case(scheme) {
            continue;
        }
        // The authority ends at the path or, when the path is empty, at the query.
        let host_len = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        let authority = rest.get(..host_len).unwrap_or_default();
        if authority.contains(&b'@') || !valid_host(authority) {
            // userinfo is deprecated and a known phishing trick; a bad or empty host is
            // invalid: the same rules as `Host` (RFC 9110 section 4.2.1).
            return (Form::Authority, whole);
        }
        let path_start = base + scheme.len() + host_len;
        return (Form::Absolute, path_start..whole.end);
    }
    (Form::Authority, whole)
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 section 7.2), also used for the authority of an
/// absolute-form target. The host must not be empty: an `http` URI with an empty host is
/// invalid and must be rejected (RFC 9110 section 4.2.1), and so is a `Host` that would make
/// one (RFC 9112 section 3.2). An IP-literal must hold a valid IPv6 address or an IPvFuture
/// (RFC 3986 section 3.2.2). The port is `*DIGIT` (RFC 3986 section 3.2.3) and at most 65535;
/// an empty port (`a:`) is accepted, because the grammar allows it and RFC 3986 section 6.2.3
/// makes it equivalent to no port at all, so refusing it would refuse a valid URI.
fn valid_host(v: &[u8]) -> bool {
    let (host_ok, port) = match v {
        [b'[', rest @ ..] => {
            let Some(close) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let Some((inside, after)) = rest.split_at_checked(close) else {
                return false;
            };
            let port = match after {
                [b']'] => &[][..],
                [b']', b':', port @ ..] => port,
                _ => return false,
            };
            (ip_literal(inside), port)
        }
        _ => match v.iter().position(|&b| b == b':') {
            Some(i) => {
                let (host, colon_port) = v.split_at_checked(i).unwrap_or_default();
                (reg_name(host), colon_port.get(1..).unwrap_or_default())
            }
            None => (reg_name(v), &[][..]),
        },
    };
    host_ok && valid_port(port)
}

/// The inside of `[...]`: `IPv6address / IPvFuture` (RFC 3986 section 3.2.2). std's parser
/// takes exactly the RFC 4291 text forms RFC 3986 spells out (no zone, no brackets) and does
/// not allocate.
fn ip_literal(v: &[u8]) -> bool {
    match v {
        // IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
        [b'v' | b'V', rest @ ..] => {
            let Some(dot) = rest.iter().position(|&b| b == b'.') else {
                return false;
            };
            let (version, tail) = rest.split_at_checked(dot).unwrap_or_default();
            let tail = tail.get(1..).unwrap_or_default();
            !version.is_empty()
                && version.iter().all(u8::is_ascii_hexdigit)
                && !tail.is_empty()
                && tail
                    .iter()
                    .all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':')
        }
        _ => std::str::from_utf8(v).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok()),
    }
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )` (RFC 3986 section 3.2.2), not
/// empty (RFC 9110 section 4.2.1). IPv4 addresses are reg-names syntactically.
fn reg_name(mut v: &[u8]) -> bool {
    if v.is_empty() {
        return false;
    }
    loop {
        v = match v {
            [] => return true,
            [b'%', h, l, rest @ ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => rest,
            [b, rest @ ..] if is_unreserved(*b) || is_sub_delim(*b) => rest,
            _ => return false,
        };
    }
}

/// `port = *DIGIT`, at most 65535; leading zeros are allowed by the grammar.
fn valid_port(p: &[u8]) -> bool {
    let mut n: u32 = 0;
    for &b in p {
        if !b.is_ascii_digit() {
            return false;
        }
        n = n * 10 + u32::from(b - b'0');
        if n > u32::from(u16::MAX) {
            return false;
        }
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// `Content-Length = 1*DIGIT` (RFC 9110 section 8.6): no sign, no list, no spaces inside.
/// Leading zeros are digits like any other (`0005` is 5, twenty zeros are 0). A value of only
/// digits that does not fit 64 bits is a valid length, just too large to accept: 413, not 400.
fn content_length(v: &[u8]) -> Result<u64, Error> {
    if v.is_empty() {
        return Err(Error::BadRequest);
    }
    let mut n: u64 = 0;
    let mut huge = false;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(Error::BadRequest);
        }
        // Keep checking the remaining bytes after an overflow: a later non-digit makes the
        // value malformed, which wins over its size.
        match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
        {
            Some(next) => n = next,
            None => huge = true,
        }
    }
    if huge {
        Err(Error::BodyTooLarge)
    } else {
        Ok(n)
    }
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

#[cfg(test)]
mod tests {
    use super::super::chunked::Chunked;
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
        // Just past the default limits: a target of 8 KiB + 1, a head of 16 KiB + 1.
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(8192));
        let long_line = format!("GET /{}", "a".repeat(8192 + LINE_SLACK));
        let big_field = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(16 * 1024)
        );
        let big_partial = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "a".repeat(16 * 1024));
        let many_inm: String = (0..=MAX_LIST_LINES)
            .map(|i| format!("If-None-Match: \"{i}\"\r\n"))
            .collect();
        let many_inm = format!("GET / HTTP/1.1\r\nHost: a\r\n{many_inm}\r\n");
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
            // RFC 9110 section 4.2.1: an empty host is invalid, as a field and in a target.
            ("GET / HTTP/1.1\r\nHost:\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\r\nHost: \r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\r\nHost: :80\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.0\r\nHost:\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\r\nHost: [zz:zz]\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\r\nHost: x:999999\r\n\r\n", Error::BadRequest),
            ("GET / HTTP/1.1\r\nHost: x:65536\r\n\r\n", Error::BadRequest),
            // The asterisk form belongs to OPTIONS alone (RFC 9112 section 3.2.4).
            ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", Error::BadRequest),
            ("POST * HTTP/1.1\r\nHost: a\r\n\r\n", Error::BadRequest),
            (&many_inm, Error::FieldsTooLarge),
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
            // All digits but past 64 bits: a length, too large (413), not a malformed one.
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                Error::BodyTooLarge,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n",
                Error::BodyTooLarge,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999x\r\n\r\n",
                Error::BadRequest,
            ),
            // A huge length beside Transfer-Encoding is still the smuggling pattern: 400.
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\nTransfer-Encoding: chunked\r\n\r\n",
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
        let h = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0005\r\n\r\n");
        assert_eq!(h.body, Body::Length(5));
        // Twenty zeros do not fit the old 19-digit cap, but they are simply 0.
        let h = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 00000000000000000000\r\n\r\n");
        assert_eq!(h.body, Body::None);
        let h =
            ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0000000000000000000000007\r\n\r\n");
        assert_eq!(h.body, Body::Length(7));
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
            ("OPTIONS", Method::Options),
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
        // The target's authority names the host, not the field.
        assert_eq!(&req[h.host.unwrap()], "Example.com:80");
        let req = "GET /x HTTP/1.1\r\nHost: Other:81\r\n\r\n";
        assert_eq!(&req[ok(req).host.unwrap()], "Other:81");
        assert_eq!(ok("GET /x HTTP/1.0\r\n\r\n").host, None);
        let req = "GET HTTPS://example.com HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = ok(req);
        assert_eq!(h.form, Form::Absolute);
        assert!(h.path.is_empty());
        // An empty path before a query stands for `/` (RFC 9112 section 3.2.2).
        let req = "GET http://x?q=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = ok(req);
        assert_eq!(&req[h.host.clone().unwrap()], "x");
        assert_eq!(h.form, Form::Absolute);
        assert_eq!(&req[h.path.clone()], "?q=1");
        assert_eq!(h.path_or_root(req.as_bytes()), b"/");
        let req = "GET http://x HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(ok(req).path_or_root(req.as_bytes()), b"/");
        let req = "GET http://x/a?b HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(ok(req).path_or_root(req.as_bytes()), b"/a?b");
        let req = "GET /a?b HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(ok(req).path_or_root(req.as_bytes()), b"/a?b");
        for (t, want) in [
            ("example.com:443", Form::Authority),
            ("http://u@evil/", Form::Authority),
            ("http:///x", Form::Authority),
            ("http://?q", Form::Authority),
            ("ftp://a/b", Form::Authority),
            // The authority of an absolute form is held to the rules of `Host`.
            ("http://[zz:zz]/", Form::Authority),
            ("http://x:999999/", Form::Authority),
            ("http://:80/", Form::Authority),
            ("http://[::1]:8080/", Form::Absolute),
            ("http://x:/", Form::Absolute),
            ("http://[v1.x]/", Form::Absolute),
        ] {
            assert_eq!(
                ok(&format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n")).form,
                want,
                "{t}"
            );
        }
        let req = "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(ok(req).form, Form::Asterisk);
    }

    #[test]
    fn request_lines_of_8000_octets_are_accepted() {
        // RFC 9112 section 3: at least 8000 octets of request line should be supported.
        let pad = 8000 - "GET /? HTTP/1.1".len();
        let line = format!("GET /?{} HTTP/1.1", "q".repeat(pad));
        assert_eq!(line.len(), 8000);
        let req = format!(
            "{line}\r\nHost: a\r\nUser-Agent: {}\r\n\r\n",
            "u".repeat(200)
        );
        let h = ok(&req);
        assert_eq!(&req[h.line], line);
        // While it arrives, such a line is awaited, not refused.
        assert_eq!(head(&line), Ok(None));
        assert_eq!(head(&line[..7999]), Ok(None));
        // The longest target accepted, in a line that has not ended yet.
        let longest = format!("GET /{} HTTP/1.1", "a".repeat(8191));
        assert_eq!(head(&longest), Ok(None));
        assert!(ok(&format!("{longest}\r\nHost: a\r\n\r\n")).len > 8192);
    }

    #[test]
    fn list_fields_keep_every_line() {
        let req = "GET / HTTP/1.1\r\nHost: a\r\nIf-Match: \"a\"\r\nIf-None-Match: \"b\"\r\nIf-Match: \"c\", \"d\"\r\n\r\n";
        let h = ok(req);
        let mut out = [&[][..]; MAX_LIST_LINES];
        assert_eq!(
            h.if_match.values(req.as_bytes(), &mut out),
            [&b"\"a\""[..], b"\"c\", \"d\""]
        );
        assert_eq!(
            h.if_none_match.values(req.as_bytes(), &mut out),
            [&b"\"b\""[..]]
        );
        let h = ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(h.if_match.is_empty() && h.if_none_match.is_empty());
        assert!(h.if_match.values(b"", &mut out).is_empty());
        // Exactly the bound is accepted.
        let lines: String = (0..MAX_LIST_LINES)
            .map(|i| format!("If-Match: \"{i}\"\r\n"))
            .collect();
        let req = format!("GET / HTTP/1.1\r\nHost: a\r\n{lines}\r\n");
        let h = ok(&req);
        let values = h.if_match.values(req.as_bytes(), &mut out);
        assert_eq!(values.len(), MAX_LIST_LINES);
        assert_eq!(
            values.last(),
            Some(&format!("\"{}\"", MAX_LIST_LINES - 1).as_bytes())
        );
    }

    #[test]
    fn hosts() {
        for h in [
            "a",
            "a:80",
            // An empty port is valid URI syntax, equivalent to none (RFC 3986 section 6.2.3).
            "a:",
            "a:0",
            "a:65535",
            "a:00080",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:80",
            "[::1]:8080",
            "[::1]:",
            "[2001:db8::ff00:42:8329]",
            "[::ffff:192.0.2.1]",
            "[1:2:3:4:5:6:7:8]",
            "[v1.x]",
            "[V1f.a:b!]:443",
            "xn--d1a.example",
            "a%41b",
        ] {
            assert!(valid_host(h.as_bytes()), "{h}");
        }
        for h in [
            "",
            ":80",
            ":",
            "a b",
            "a/b",
            "[::1",
            "[]",
            "[zz:zz]",
            "[zz:zz]:80",
            "[::1%eth0]",
            "[1:2:3:4:5:6:7:8:9]",
            "[::ffff:192.0.2.256]",
            "[127.0.0.1]",
            "[v1]",
            "[v.x]",
            "[vg.x]",
            "[v1.]",
            "[v1.x/]",
            "[::1]:80x",
            "[::1]:99999",
            "a:b",
            "a:8x",
            "a:65536",
            "x:999999",
            "a:99999999999999999999999",
            "a:1:2",
            "a%4",
            "a%zz",
            "a%",
            "a@b",
            "[::1]x",
            "a\\b",
        ] {
            assert!(!valid_host(h.as_bytes()), "{h}");
        }
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
