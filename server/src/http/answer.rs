//! Answering one valid request: its target resolved to a safe path, the file opened beneath
//! the root (or found in the embedded site), the preconditions weighed (304, 412), a single
//! byte range honoured (206, 416), then the head and body sent, small files in one gathered
//! send and large ones with `sendfile`.
//!
//! It reads nothing from the socket and decides nothing about the connection: `conn` hands it
//! a parsed head and whether the connection persists, and gets back what was sent.

use std::ffi::CStr;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::conn::{Env, Scratch, Sent};
use super::parse::{Form, Head, Method};
use super::path::{self, Refusal};
use super::respond::{self, Persist, Sender};
use super::{open, site, Docroot, Hit};

/// Files up to this size are read into memory and leave with their head in one send; larger
/// ones go out with `sendfile`.
const SMALL_FILE: u64 = 64 * 1024;

/// Answers one valid request; `req` starts with its head.
pub(super) fn answer(
    env: &Env<'_>,
    req: &[u8],
    head: &Head,
    persist: Persist,
    s: &mut Scratch,
    tx: &mut Sender,
) -> io::Result<Sent> {
    super::test_hooks::maybe_crash(req, head);
    let head_only = head.method == Method::Head;
    let fail = |s: &mut Scratch, tx: &mut Sender, status: u16| -> io::Result<Sent> {
        let body = respond::error(
            &mut s.out,
            status,
            &env.cfg.server,
            env.date,
            persist,
            head_only,
        );
        tx.send(env.sock, &mut [IoSlice::new(&s.out)])?;
        Ok(Sent { status, body })
    };
    match head.method {
        Method::Get | Method::Head => {}
        Method::Other => return fail(s, tx, 405),
        Method::Unknown => return fail(s, tx, 501),
    }
    let target = match head.form {
        Form::Origin | Form::Absolute if head.path.is_empty() => &b"/"[..],
        Form::Origin | Form::Absolute => &req[head.path.clone()],
        Form::Asterisk | Form::Authority => return fail(s, tx, 400),
    };
    let dir = match path::resolve(target, env.cfg.serve_dotfiles, &mut s.path) {
        Ok(dir) => dir,
        Err(Refusal::Malformed) => return fail(s, tx, 400),
        Err(Refusal::Hidden) => {
            Hit::PathRefused.count();
            return fail(s, tx, 404);
        }
    };
    if dir {
        if !s.path.is_empty() {
            s.path.push(b'/');
        }
        s.path.extend_from_slice(env.cfg.index.as_bytes());
    }
    let rep = match env.root {
        Docroot::Embedded => embedded(env, s, dir),
        Docroot::Dir(root) => from_dir(root, s, dir),
    };
    let rep = match rep {
        Ok(rep) => rep,
        Err(status) => return fail(s, tx, status),
    };
    let Rep::Found(found) = rep else {
        // A directory named without its trailing slash: send the client to the slash form,
        // keeping the query (RFC 9110 allows a relative reference here).
        respond::start(&mut s.out, 301, &env.cfg.server, env.date, persist);
        let raw = target;
        let (p, q) = match raw.iter().position(|&b| b == b'?') {
            Some(i) => (&raw[..i], &raw[i..]),
            None => (raw, &raw[..0]),
        };
        s.out.extend_from_slice(b"Location: ");
        s.out.extend_from_slice(p);
        s.out.push(b'/');
        s.out.extend_from_slice(q);
        s.out.extend_from_slice(b"\r\n");
        let body: &[u8] = b"301 Moved Permanently\n";
        respond::field(&mut s.out, b"Content-Type", b"text/plain; charset=utf-8");
        respond::content_length(&mut s.out, body.len() as u64);
        respond::end(&mut s.out);
        let body = if head_only { &body[..0] } else { body };
        tx.send(env.sock, &mut [IoSlice::new(&s.out), IoSlice::new(body)])?;
        return Ok(Sent {
            status: 301,
            body: body.len() as u64,
        });
    };

    let mut etag = StackBuf::new();
    match &found.body {
        Content::Static(_) => {
            let _ = std::fmt::Write::write_fmt(&mut etag, format_args!("\"e{:x}\"", found.id.0));
        }
        Content::File { .. } => {
            let (ino, len, nanos) = found.id;
            let _ = std::fmt::Write::write_fmt(
                &mut etag,
                format_args!("\"{ino:x}-{len:x}-{nanos:x}\""),
            );
        }
    }
    let field = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &req[r]);
    let conditions = Preconditions {
        if_match: field(&head.if_match),
        if_unmodified_since: field(&head.if_unmodified_since),
        if_none_match: field(&head.if_none_match),
        if_modified_since: field(&head.if_modified_since),
    };
    match evaluate(&conditions, etag.as_bytes(), found.modified) {
        Verdict::Proceed => {}
        Verdict::Failed => return fail(s, tx, 412),
        Verdict::NotModified => {
            respond::start(&mut s.out, 304, &env.cfg.server, env.date, persist);
            respond::field(&mut s.out, b"ETag", etag.as_bytes());
            respond::end(&mut s.out);
            tx.send(env.sock, &mut [IoSlice::new(&s.out)])?;
            return Ok(Sent {
                status: 304,
                body: 0,
            });
        }
    }

    let total = match &found.body {
        Content::Static(b) => b.len() as u64,
        Content::File { len, .. } => *len,
    };
    // RFC 9110 section 14.2: Range is defined for GET only, and If-Range makes it depend on
    // the representation still being the one the client holds a part of.
    let range = match (head.method, field(&head.range)) {
        (Method::Get, Some(r))
            if if_range_holds(field(&head.if_range), etag.as_bytes(), found.modified) =>
        {
            byte_range(r, total)
        }
        _ => ByteRange::Whole,
    };
    let (status, from, count) = match range {
        ByteRange::Whole => (200, 0, total),
        ByteRange::Part { first, last } => (206, first, last - first + 1),
        ByteRange::Unsatisfiable => {
            let mut extra = StackBuf::new();
            let _ = std::fmt::Write::write_fmt(
                &mut extra,
                format_args!("Content-Range: bytes */{total}\r\n"),
            );
            let (server, date) = (&env.cfg.server, env.date);
            let body = respond::error_with(
                &mut s.out,
                416,
                server,
                date,
                persist,
                false,
                extra.as_bytes(),
            );
            tx.send(env.sock, &mut [IoSlice::new(&s.out)])?;
            return Ok(Sent { status: 416, body });
        }
    };

    respond::start(&mut s.out, status, &env.cfg.server, env.date, persist);
    let name = &s.path[..s.path.len() - usize::from(s.path.last() == Some(&0))];
    content_type(&mut s.out, name);
    if let Some(m) = found.modified {
        use std::io::Write;
        let _ = write!(s.out, "Last-Modified: {}\r\n", httpdate::HttpDate::from(m));
    }
    respond::field(&mut s.out, b"ETag", etag.as_bytes());
    respond::field(&mut s.out, b"Accept-Ranges", b"bytes");
    if status == 206 {
        use std::io::Write;
        let last = from + count - 1;
        let _ = write!(s.out, "Content-Range: bytes {from}-{last}/{total}\r\n");
    }
    match found.body {
        Content::Static(body) => {
            respond::content_length(&mut s.out, count);
            respond::end(&mut s.out);
            // `byte_range` keeps `from + count` within `total`, the body's length.
            let part = &body[from as usize..(from + count) as usize];
            let part = if head_only { &part[..0] } else { part };
            tx.send(env.sock, &mut [IoSlice::new(&s.out), IoSlice::new(part)])?;
            Ok(Sent {
                status,
                body: part.len() as u64,
            })
        }
        Content::File { file, .. } if head_only => {
            drop(file);
            respond::content_length(&mut s.out, count);
            respond::end(&mut s.out);
            tx.send(env.sock, &mut [IoSlice::new(&s.out)])?;
            Ok(Sent { status, body: 0 })
        }
        Content::File { file, .. } if count <= SMALL_FILE => {
            use std::os::unix::fs::FileExt;
            let want = count as usize;
            if s.file.len() < want {
                s.file.resize(want, 0);
            }
            let mut got = 0;
            while got < want {
                match file.read_at(&mut s.file[got..want], from + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            drop(file);
            if got < want && status == 206 {
                // The file shrank under the range: the promised part cannot be sent.
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            // If the file shrank since fstat, the length sent is what was read.
            respond::content_length(&mut s.out, got as u64);
            respond::end(&mut s.out);
            tx.send(
                env.sock,
                &mut [IoSlice::new(&s.out), IoSlice::new(&s.file[..got])],
            )?;
            Ok(Sent {
                status,
                body: got as u64,
            })
        }
        Content::File { file, .. } => {
            respond::content_length(&mut s.out, count);
            respond::end(&mut s.out);
            tx.send_file(env.sock, &s.out, &file, from, count)?;
            Ok(Sent {
                status,
                body: count,
            })
        }
    }
}

/// What a `Range` field asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteRange {
    /// No usable range: answer 200 with everything.
    Whole,
    /// Bytes `first..=last`, both within the representation.
    Part { first: u64, last: u64 },
    /// 416.
    Unsatisfiable,
}

/// One `bytes` range of a representation `len` bytes long (RFC 9110 section 14.1.2). Several
/// ranges, other units and invalid syntax get the whole representation, as a server may
/// answer; a syntactically valid single range that starts past the end is 416.
fn byte_range(v: &[u8], len: u64) -> ByteRange {
    let Some(set) = v
        .strip_prefix(b"bytes=")
        .or_else(|| (v.len() > 6 && v[..6].eq_ignore_ascii_case(b"bytes=")).then(|| &v[6..]))
    else {
        return ByteRange::Whole;
    };
    let mut specs = set
        .split(|&b| b == b',')
        .map(|s| s.trim_ascii())
        .filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return ByteRange::Whole;
    };
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return ByteRange::Whole;
    };
    let number = |d: &[u8]| -> Option<u64> {
        if d.is_empty() || d.len() > 19 || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(d).ok()?.parse().ok()
    };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        // A suffix: the last `n` bytes.
        return match number(last) {
            None => ByteRange::Whole,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if len == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Part {
                first: len - n.min(len),
                last: len - 1,
            },
        };
    }
    let Some(first) = number(first) else {
        return ByteRange::Whole;
    };
    let last = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(l) if l >= first => l,
            _ => return ByteRange::Whole,
        }
    };
    if first >= len {
        ByteRange::Unsatisfiable
    } else {
        ByteRange::Part {
            first,
            last: last.min(len - 1),
        }
    }
}

/// `If-Range` (RFC 9110 section 13.1.5): an entity tag must match strongly, a date exactly;
/// absent, the range stands.
fn if_range_holds(v: Option<&[u8]>, etag: &[u8], modified: Option<SystemTime>) -> bool {
    let Some(v) = v else {
        return true;
    };
    if v.starts_with(b"W/") || v.starts_with(b"\"") {
        return v == etag;
    }
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let since = std::str::from_utf8(v)
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok());
    matches!((since, modified), (Some(d), Some(m)) if secs(d) == secs(m))
}

/// What a request found.
enum Rep {
    Found(Found),
    /// A directory named without its trailing slash.
    Redirect,
}

struct Found {
    body: Content,
    /// (inode, size, mtime in ns) of a file; (hash, 0, 0) of an embedded asset.
    id: (u64, u64, u64),
    modified: Option<SystemTime>,
}

enum Content {
    Static(&'static [u8]),
    File { file: std::fs::File, len: u64 },
}

/// Looks the resolved path (`s.path`, not yet terminated) up in the embedded site.
fn embedded(env: &Env<'_>, s: &Scratch, dir: bool) -> Result<Rep, u16> {
    // `path::resolve` guarantees UTF-8; the index name is a String.
    let rel = std::str::from_utf8(&s.path).map_err(|_| 400u16)?;
    let (base, idx) = if dir {
        let base = rel.strip_suffix(env.cfg.index.as_str()).unwrap_or(rel);
        (base.strip_suffix('/').unwrap_or(base), true)
    } else {
        (rel, false)
    };
    match site::lookup(base, &env.cfg.index) {
        site::Lookup::File(a) if !idx => Ok(Rep::Found(Found {
            body: Content::Static(a.body),
            id: (a.hash, 0, 0),
            modified: None,
        })),
        site::Lookup::Dir(Some(a)) if idx => Ok(Rep::Found(Found {
            body: Content::Static(a.body),
            id: (a.hash, 0, 0),
            modified: None,
        })),
        site::Lookup::Dir(_) if !idx => Ok(Rep::Redirect),
        _ => Err(404),
    }
}

/// Opens the resolved path (`s.path`) beneath the root; terminates `s.path` with a NUL.
fn from_dir(root: &std::os::fd::OwnedFd, s: &mut Scratch, dir: bool) -> Result<Rep, u16> {
    s.path.push(0);
    let rel = CStr::from_bytes_with_nul(&s.path).map_err(|_| 400u16)?;
    let file = open::beneath(root.as_fd(), rel).map_err(|e| open_status(&e))?;
    let meta = file.metadata().map_err(|e| open_status(&e))?;
    if meta.is_dir() {
        // With a trailing slash the index file itself turned out to be a directory.
        return if dir { Err(404) } else { Ok(Rep::Redirect) };
    }
    if !meta.is_file() {
        return Err(404);
    }
    let nanos = (meta.mtime() as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(meta.mtime_nsec() as u64);
    Ok(Rep::Found(Found {
        id: (meta.ino(), meta.len(), nanos),
        modified: meta.modified().ok(),
        body: Content::File {
            file,
            len: meta.len(),
        },
    }))
}

/// The status for a failed open: absent, refused by `RESOLVE_BENEATH` or not a directory
/// along the way all read as 404, so what lies outside the root is never revealed.
fn open_status(e: &io::Error) -> u16 {
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => 403,
        Some(
            libc::ENOENT
            | libc::ENOTDIR
            | libc::ELOOP
            | libc::EXDEV
            | libc::ENAMETOOLONG
            | libc::ENXIO
            | libc::ENODEV,
        ) => 404,
        _ => {
            tracing::warn!(error = %e, "unable to open a file beneath the root");
            500
        }
    }
}

/// The preconditions a request carries (RFC 9110 section 13.1), as received.
#[derive(Debug, Default, Clone, Copy)]
struct Preconditions<'a> {
    if_match: Option<&'a [u8]>,
    if_unmodified_since: Option<&'a [u8]>,
    if_none_match: Option<&'a [u8]>,
    if_modified_since: Option<&'a [u8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: a precondition the client set is false.
    Failed,
}

/// RFC 9110 section 13.2.2, for GET and HEAD of a representation that exists: `If-Match`
/// (strong comparison) or else `If-Unmodified-Since` can fail the request (412); then
/// `If-None-Match` (weak comparison) or else `If-Modified-Since` can make it a 304. A date that
/// does not parse is ignored, as the RFC requires.
fn evaluate(p: &Preconditions<'_>, etag: &[u8], modified: Option<SystemTime>) -> Verdict {
    let date = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok())
    };
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if let Some(im) = p.if_match {
        // Strong comparison: a weak tag never matches.
        if !tags(im).any(|t| t == b"*" || t == etag) {
            return Verdict::Failed;
        }
    } else if let (Some(since), Some(m)) = (p.if_unmodified_since.and_then(date), modified) {
        if secs(m) > secs(since) {
            return Verdict::Failed;
        }
    }
    if let Some(inm) = p.if_none_match {
        if tags(inm).any(|t| t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == etag) {
            return Verdict::NotModified;
        }
    } else if let (Some(since), Some(m)) = (p.if_modified_since.and_then(date), modified) {
        if secs(m) <= secs(since) {
            return Verdict::NotModified;
        }
    }
    Verdict::Proceed
}

/// The entity tags of an `If-Match` or `If-None-Match` list.
fn tags(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// `Content-Type` from the file name's extension; text is declared UTF-8.
fn content_type(out: &mut Vec<u8>, name: &[u8]) {
    let file = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    let ext = match file.iter().rposition(|&b| b == b'.') {
        Some(i) => &file[i + 1..],
        None => &file[..0],
    };
    let mime = std::str::from_utf8(ext)
        .ok()
        .and_then(|e| mime_guess::from_ext(e).first_raw())
        .unwrap_or("application/octet-stream");
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(mime.as_bytes());
    if mime.starts_with("text/") {
        out.extend_from_slice(b"; charset=utf-8");
    }
    out.extend_from_slice(b"\r\n");
}

/// A short string formatted on the stack (entity tags), to keep the hot path allocation-free.
struct StackBuf {
    buf: [u8; 64],
    len: usize,
}

impl StackBuf {
    fn new() -> StackBuf {
        StackBuf {
            buf: [0; 64],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let b = s.as_bytes();
        let end = self.len.checked_add(b.len()).ok_or(std::fmt::Error)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(b);
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn conditional_table() {
        let t = UNIX_EPOCH + Duration::from_secs(784111777);
        let date = b"Sun, 06 Nov 1994 08:49:37 GMT";
        let later = b"Sun, 06 Nov 1994 08:49:38 GMT";
        let earlier = b"Sun, 06 Nov 1994 08:49:36 GMT";
        let tag = b"\"abc\"";
        let none = Preconditions::default();
        let cases: &[(Preconditions, Verdict)] = &[
            (none, Verdict::Proceed),
            (
                Preconditions {
                    if_none_match: Some(b"\"abc\""),
                    ..none
                },
                Verdict::NotModified,
            ),
            (
                Preconditions {
                    if_none_match: Some(b"W/\"abc\""),
                    ..none
                },
                Verdict::NotModified,
            ),
            (
                Preconditions {
                    if_none_match: Some(b"\"x\", \"abc\""),
                    ..none
                },
                Verdict::NotModified,
            ),
            (
                Preconditions {
                    if_none_match: Some(b"*"),
                    ..none
                },
                Verdict::NotModified,
            ),
            (
                Preconditions {
                    if_none_match: Some(b"\"x\""),
                    ..none
                },
                Verdict::Proceed,
            ),
            (
                Preconditions {
                    if_none_match: Some(b"abc"),
                    ..none
                },
                Verdict::Proceed,
            ),
            // If-None-Match decides when present, whatever If-Modified-Since says.
            (
                Preconditions {
                    if_none_match: Some(b"\"x\""),
                    if_modified_since: Some(date),
                    ..none
                },
                Verdict::Proceed,
            ),
            (
                Preconditions {
                    if_modified_since: Some(date),
                    ..none
                },
                Verdict::NotModified,
            ),
            (
                Preconditions {
                    if_modified_since: Some(later),
                    ..none
                },
                Verdict::NotModified,
            ),
            (
                Preconditions {
                    if_modified_since: Some(earlier),
                    ..none
                },
                Verdict::Proceed,
            ),
            (
                Preconditions {
                    if_modified_since: Some(b"yesterday"),
                    ..none
                },
                Verdict::Proceed,
            ),
            // If-Match compares strongly; it fails the request before If-None-Match is looked at.
            (
                Preconditions {
                    if_match: Some(b"\"abc\""),
                    ..none
                },
                Verdict::Proceed,
            ),
            (
                Preconditions {
                    if_match: Some(b"*"),
                    ..none
                },
                Verdict::Proceed,
            ),
            (
                Preconditions {
                    if_match: Some(b"W/\"abc\""),
                    ..none
                },
                Verdict::Failed,
            ),
            (
                Preconditions {
                    if_match: Some(b"\"x\""),
                    ..none
                },
                Verdict::Failed,
            ),
            (
                Preconditions {
                    if_match: Some(b"\"x\""),
                    if_none_match: Some(b"*"),
                    ..none
                },
                Verdict::Failed,
            ),
            (
                Preconditions {
                    if_match: Some(b"\"abc\""),
                    if_unmodified_since: Some(earlier),
                    ..none
                },
                Verdict::Proceed,
            ),
            (
                Preconditions {
                    if_unmodified_since: Some(earlier),
                    ..none
                },
                Verdict::Failed,
            ),
            (
                Preconditions {
                    if_unmodified_since: Some(date),
                    ..none
                },
                Verdict::Proceed,
            ),
            (
                Preconditions {
                    if_unmodified_since: Some(b"junk"),
                    ..none
                },
                Verdict::Proceed,
            ),
        ];
        for (p, want) in cases {
            assert_eq!(evaluate(p, tag, Some(t)), *want, "{p:?}");
        }
        let ims = Preconditions {
            if_modified_since: Some(date),
            if_unmodified_since: Some(earlier),
            ..none
        };
        assert_eq!(evaluate(&ims, tag, None), Verdict::Proceed);
    }

    #[test]
    fn byte_ranges_table() {
        use ByteRange::*;
        let part = |first, last| Part { first, last };
        let cases: &[(&str, u64, ByteRange)] = &[
            ("bytes=0-99", 1000, part(0, 99)),
            ("bytes=0-0", 1000, part(0, 0)),
            ("bytes=500-", 1000, part(500, 999)),
            ("bytes=0-", 1000, part(0, 999)),
            ("bytes=900-5000", 1000, part(900, 999)),
            ("bytes=-100", 1000, part(900, 999)),
            ("bytes=-5000", 1000, part(0, 999)),
            ("Bytes=1-2", 1000, part(1, 2)),
            ("bytes= 1-2 ,", 1000, part(1, 2)),
            ("bytes=1000-", 1000, Unsatisfiable),
            ("bytes=1000-1001", 1000, Unsatisfiable),
            ("bytes=-0", 1000, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-1", 0, Unsatisfiable),
            // Several ranges, other units and invalid syntax: the whole representation.
            ("bytes=0-1,5-6", 1000, Whole),
            ("items=0-1", 1000, Whole),
            ("bytes 0-1", 1000, Whole),
            ("bytes=", 1000, Whole),
            ("bytes=-", 1000, Whole),
            ("bytes=5-1", 1000, Whole),
            ("bytes=a-b", 1000, Whole),
            ("bytes=+1-2", 1000, Whole),
            ("bytes=1", 1000, Whole),
            ("bytes=99999999999999999999-", 1000, Whole),
            ("bytes=9999999999999999999-", 1000, Unsatisfiable),
        ];
        for (v, len, want) in cases {
            assert_eq!(byte_range(v.as_bytes(), *len), *want, "{v} of {len}");
        }
    }

    #[test]
    fn if_range_table() {
        let t = UNIX_EPOCH + Duration::from_secs(784111777);
        let tag = b"\"abc\"";
        for (v, want) in [
            (None, true),
            (Some(&b"\"abc\""[..]), true),
            (Some(b"\"x\""), false),
            (Some(b"W/\"abc\""), false),
            (Some(b"Sun, 06 Nov 1994 08:49:37 GMT"), true),
            (Some(b"Sun, 06 Nov 1994 08:49:38 GMT"), false),
            (Some(b"garbage"), false),
        ] {
            assert_eq!(if_range_holds(v, tag, Some(t)), want, "{v:?}");
        }
        assert!(!if_range_holds(
            Some(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            tag,
            None
        ));
    }

    #[test]
    fn content_types() {
        for (name, want) in [
            (&b"index.html"[..], "text/html; charset=utf-8"),
            (b"a/style.css", "text/css; charset=utf-8"),
            (b"x.png", "image/png"),
            (b"README", "application/octet-stream"),
            (b"a.b/c", "application/octet-stream"),
            (b"x.weird-ext", "application/octet-stream"),
        ] {
            let mut out = Vec::new();
            content_type(&mut out, name);
            assert_eq!(out, format!("Content-Type: {want}\r\n").as_bytes());
        }
    }

    #[test]
    fn stack_buf_refuses_overflow() {
        use std::fmt::Write;
        let mut b = StackBuf::new();
        assert!(write!(b, "{}", "x".repeat(64)).is_ok());
        assert!(write!(b, "y").is_err());
        assert_eq!(b.as_bytes().len(), 64);
    }
}
