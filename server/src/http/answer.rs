//! Deciding the answer to one valid request: its target resolved to a safe path, the file
//! opened beneath the root (or found in the embedded site), the preconditions weighed (304,
//! 412), a single byte range honoured (206, 416), and the head encoded.
//!
//! [`decide`] is a function of the request, the configuration, the date and what the docroot
//! holds, and does no socket I/O, as darkhttpd's `process_get` decides everything before a
//! byte moves: opening the file beneath the root is how it learns what the docroot holds, and
//! a small file is read here so its length is known and it leaves with its head in one send.
//! What it returns, a [`Reply`], is sent by whichever driver holds the socket, through the one
//! encoder in `reply`; so the blocking loop and an event loop answer alike, and every status
//! is a table test without a socket.

use std::ffi::CStr;
use std::io;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::cache::{self, Body, FileCache, Probe, Version};
use super::clock::LAST_HTTP_DATE;
use super::conditional::{evaluate, if_range_holds, Preconditions, Verdict};
use super::encoding::{self, Coding};
use super::parse::{self, Form, Head, Method};
use super::path::{self, Refusal};
use super::range::{byte_range, ByteRange};
use super::reply::{Payload, Reply, Scratch};
use super::respond::{self, Persist};
use super::{listing, mime, open, site, Config, Docroot, Hit, Tree, VHosts};

/// Files up to this size are read into memory and leave with their head in one send; larger
/// ones go out with `sendfile`.
pub(super) const SMALL_FILE: u64 = 64 * 1024;

/// What a request is answered against besides itself.
pub(super) struct Env<'a> {
    pub(super) cfg: &'a Config,
    /// The default root; a virtual host's replaces it when the request's host names one.
    pub(super) root: &'a Docroot,
    pub(super) vhosts: &'a VHosts,
    /// The `Date` value of the response.
    pub(super) date: &'a [u8],
    /// The second `date` names, since the epoch.
    pub(super) date_secs: u64,
}

/// Decides the reply to one valid request (`req` starts with its head, `head` is its parse)
/// whose connection fate the driver chose (`persist`): the head is encoded in `s.out`, a small
/// body read into `s.file`, a large one left open for `sendfile`. An error means no reply can
/// be made (a file that shrank under a promised range, a failed read): the connection ends.
pub(super) fn decide(
    env: &Env<'_>,
    req: &[u8],
    head: &Head,
    persist: Persist,
    s: &mut Scratch,
) -> io::Result<Reply> {
    super::test_hooks::maybe_crash(req, head);
    let head_only = head.method == Method::Head;
    let host = head.host.clone().and_then(|r| req.get(r));
    let root = match env.vhosts.select(env.root, host) {
        Ok(root) => root,
        // An error page for a host refused comes from the default root.
        Err(status) => {
            return Ok(error_reply(
                env, env.root, status, persist, head_only, s, b"",
            ))
        }
    };
    let fail = |s: &mut Scratch, status: u16| -> io::Result<Reply> {
        Ok(error_reply(env, root, status, persist, head_only, s, b""))
    };
    match (head.method, head.form) {
        (Method::Get | Method::Head, _) => {}
        // RFC 9110 section 9.3.7: the methods allowed are the same for every target here
        // (and for `*`, the server as a whole), so the answer does not look the target up:
        // a file that does not exist still only ever allows these methods, as in lighttpd.
        (Method::Options, Form::Asterisk | Form::Origin | Form::Absolute) => {
            return Ok(options(env, persist, s))
        }
        (Method::Options, Form::Authority) => return fail(s, 400),
        (Method::Other, _) => return fail(s, 405),
        (Method::Unknown, _) => return fail(s, 501),
    }
    let target = match head.form {
        Form::Origin | Form::Absolute => head.path_or_root(req),
        Form::Asterisk | Form::Authority => return fail(s, 400),
    };
    let dir = match path::resolve(target, path::Dots::of(env.cfg), &mut s.path) {
        Ok(dir) => dir,
        Err(Refusal::Malformed) => return fail(s, 400),
        Err(Refusal::Hidden) => {
            Hit::PathRefused.count();
            return fail(s, 404);
        }
    };
    let rep = match root {
        Docroot::Embedded => embedded(env, s, dir),
        Docroot::Dir(tree) => from_dir(env, tree, s, dir),
    };
    match (rep, root) {
        (Ok(Rep::Found(found)), _) => {
            let name = s.path.strip_suffix(&[0]).unwrap_or(&s.path);
            let mime = s.types.of(name, &env.cfg.mime);
            let found = match root {
                Docroot::Dir(tree) if env.cfg.precompressed && mime.compressible => {
                    precompressed(tree, req, head, s, found, path::Dots::of(env.cfg))
                }
                _ => found,
            };
            representation(env, root, req, head, persist, s, found, mime)
        }
        (Ok(Rep::Redirect), _) => Ok(redirect(env, target, persist, head_only, s)),
        (Ok(Rep::Listing), Docroot::Dir(tree)) => match listing(env, tree, persist, head_only, s) {
            Ok(reply) => Ok(reply),
            Err(status) => fail(s, status),
        },
        (Ok(Rep::Listing), Docroot::Embedded) => fail(s, 404),
        (Err(status), _) => fail(s, status),
    }
}

/// The reply for an error `status`: the configured error page for it, sent with that status,
/// or the built-in text. The page is looked up once, by [`error_page`], which never comes
/// back here: a page that is missing, refused or unreadable (a 500 page included) falls back
/// to the built-in text, so no error can loop. `extra`: field lines the status needs
/// (`Content-Range` of a 416).
fn error_reply(
    env: &Env<'_>,
    root: &Docroot,
    status: u16,
    persist: Persist,
    head_only: bool,
    s: &mut Scratch,
    extra: &[u8],
) -> Reply {
    if let Some((_, page)) = env.cfg.error_pages.iter().find(|(st, _)| *st == status) {
        match error_page(env, root, page, status, persist, head_only, s, extra) {
            Some(reply) => return reply,
            None => Hit::ErrorPageMissing.count(),
        }
    }
    respond::error_with(
        &mut s.out, status, env.cfg, env.date, persist, head_only, extra,
    )
}

/// The error page `page` (a path beneath `root`) as the body of a `status` reply: its own
/// `Content-Type`, no validators, ranges or preconditions (they are about the resource asked
/// for, not the page), no body for HEAD. `None` when it cannot be served.
#[allow(clippy::too_many_arguments)]
fn error_page(
    env: &Env<'_>,
    root: &Docroot,
    page: &str,
    status: u16,
    persist: Persist,
    head_only: bool,
    s: &mut Scratch,
    extra: &[u8],
) -> Option<Reply> {
    let dots = path::Dots::of(env.cfg);
    if path::resolve(page.as_bytes(), dots, &mut s.path) != Ok(false) {
        return None;
    }
    let found = match root {
        Docroot::Dir(tree) => open_file(tree, s, false, dots),
        Docroot::Embedded => embedded(env, s, false),
    };
    let Ok(Rep::Found(found)) = found else {
        return None;
    };
    let total = found.len();
    respond::start_for(&mut s.out, status, env.cfg, env.date, persist);
    if status == 405 {
        respond::field(&mut s.out, b"Allow", parse::ALLOW);
    }
    s.out.extend_from_slice(extra);
    let name = s.path.strip_suffix(&[0]).unwrap_or(&s.path);
    let mime = s.types.of(name, &env.cfg.mime);
    s.out.extend_from_slice(s.types.line(mime));
    let payload = body(found.body, 0, total, head_only, status, s).ok()?;
    Some(Reply {
        status,
        persist,
        payload,
    })
}

/// `200` with the listing of the directory `s.path` names (`listing`).
fn listing(
    env: &Env<'_>,
    tree: &Tree,
    persist: Persist,
    head_only: bool,
    s: &mut Scratch,
) -> Result<Reply, u16> {
    let cut = listing::render(
        tree.as_fd(),
        &s.path,
        path::Dots::of(env.cfg),
        env.cfg.autoindex_max_entries,
        &mut s.file,
    )
    .map_err(|e| match e {
        open::Refused::Hidden => {
            Hit::PathRefused.count();
            404
        }
        open::Refused::Os(e) => {
            let rel = std::ffi::CString::new(s.path.as_slice()).unwrap_or_default();
            open_status(&e, &rel)
        }
    })?;
    if cut {
        Hit::AutoindexTruncated.count();
    }
    respond::start_for(&mut s.out, 200, env.cfg, env.date, persist);
    respond::field(&mut s.out, b"Content-Type", b"text/html; charset=utf-8");
    respond::content_length(&mut s.out, s.file.len() as u64);
    // A listing is a page of its directory: `/drafts/**` marks `/drafts/a/`'s listing as it
    // marks the files there, or a crawler told to skip them would index their names.
    rule_fields_as(env, s, true);
    respond::end(&mut s.out);
    Ok(Reply {
        status: 200,
        persist,
        payload: if head_only {
            Payload::None
        } else {
            Payload::Buffered(s.file.len())
        },
    })
}

/// Appends the fields of the header rules that match the file served (`s.path`).
fn rule_fields(env: &Env<'_>, s: &mut Scratch) {
    rule_fields_as(env, s, false);
}

/// [`rule_fields`] for the file or, with `dir`, the directory `s.path` names: a directory's
/// path ends in `/`, as its URL does.
fn rule_fields_as(env: &Env<'_>, s: &mut Scratch, dir: bool) {
    let Scratch {
        out,
        path,
        rule_path,
        matches,
        ..
    } = s;
    rule_path.clear();
    rule_path.push(b'/');
    rule_path.extend_from_slice(path.strip_suffix(&[0]).unwrap_or(path));
    if dir && rule_path.last() != Some(&b'/') {
        rule_path.push(b'/');
    }
    env.cfg.rules.apply(rule_path, out, matches);
}

/// `301` for a directory named without its trailing slash: the client is sent to the slash
/// form, keeping the query (RFC 9110 allows a relative reference here). The path is the
/// resolved one (`s.path`), re-encoded, never the raw target: `//example.org` would otherwise
/// become the protocol-relative `//example.org/`, which a browser follows to another host, and
/// `/a/../b` would keep its dot segments.
fn redirect(
    env: &Env<'_>,
    target: &[u8],
    persist: Persist,
    head_only: bool,
    s: &mut Scratch,
) -> Reply {
    respond::start_for(&mut s.out, 301, env.cfg, env.date, persist);
    let rel = s.path.strip_suffix(&[0]).unwrap_or(&s.path);
    let query = target
        .iter()
        .position(|&b| b == b'?')
        .and_then(|i| target.get(i..))
        .unwrap_or_default();
    s.out.extend_from_slice(b"Location: ");
    path::encode_absolute(rel, &mut s.out);
    // The root always names a directory, so `rel` is never empty here; were it, a second
    // `/` would make the location protocol-relative.
    if !rel.is_empty() {
        s.out.push(b'/');
    }
    s.out.extend_from_slice(query);
    s.out.extend_from_slice(b"\r\n");
    let body: &'static [u8] = b"301 Moved Permanently\n";
    respond::field(&mut s.out, b"Content-Type", b"text/plain; charset=utf-8");
    respond::content_length(&mut s.out, body.len() as u64);
    respond::end(&mut s.out);
    Reply {
        status: 301,
        persist,
        payload: if head_only {
            Payload::None
        } else {
            Payload::Static(body)
        },
    }
}

/// The answer when the target names a file: 304 or 412 as the preconditions say, else the
/// whole file or the one range asked for (206, 416).
// The request's parts and what `decide` found for it, each once; a struct to bundle them would
// exist for this call alone.
#[allow(clippy::too_many_arguments)]
fn representation(
    env: &Env<'_>,
    root: &Docroot,
    req: &[u8],
    head: &Head,
    persist: Persist,
    s: &mut Scratch,
    found: Found,
    mime: mime::Type,
) -> io::Result<Reply> {
    let head_only = head.method == Method::Head;
    let (date, date_secs) = (env.date, env.date_secs);
    // RFC 9110 section 8.8.2.1: a Last-Modified later than the Date is replaced by the Date;
    // and httpdate panics on instants outside 1970..=9999 (a file dated 1969 or 10000 would
    // kill the worker). The validator is clamped once, so the instant compared is the one sent.
    let found = Found {
        modified: found.modified.map(|m| clamp_modified(m, date_secs)),
        ..found
    };
    // Written digit by digit rather than through `format_args!`: the formatting machinery was
    // a measurable part of a cached keep-alive answer's user time.
    let mut etag = StackBuf::new();
    match &found.body {
        Content::Static(_) => {
            etag.push(b"\"e");
            etag.hex(found.id.0);
        }
        Content::Bytes(_) | Content::File { .. } => {
            let (ino, len, nanos) = found.id;
            // A sibling's own inode already makes its tag differ from the original's; the
            // coding in it says which representation a client holds.
            etag.push(b"\"");
            etag.hex(ino);
            etag.push(b"-");
            etag.hex(len);
            etag.push(b"-");
            etag.hex(nanos);
            etag.push(found.coding.map_or("", |c| c.suffix()).as_bytes());
        }
    }
    etag.push(b"\"");
    let field = |r: &Option<std::ops::Range<usize>>| r.clone().and_then(|r| req.get(r));
    // Every line of a repeated list field counts (RFC 9110 section 5.3); gathered on the stack.
    let (mut im, mut inm) = (
        [&[][..]; parse::MAX_LIST_LINES],
        [&[][..]; parse::MAX_LIST_LINES],
    );
    let conditions = Preconditions {
        if_match: head.if_match.values(req, &mut im),
        if_unmodified_since: field(&head.if_unmodified_since),
        if_none_match: head.if_none_match.values(req, &mut inm),
        if_modified_since: field(&head.if_modified_since),
    };
    match evaluate(&conditions, etag.as_bytes(), found.modified) {
        Verdict::Proceed => {}
        Verdict::Failed => {
            return Ok(error_reply(env, root, 412, persist, head_only, s, b""));
        }
        Verdict::NotModified => {
            // RFC 9110 section 15.4.5: a 304 carries the Cache-Control a 200 would.
            respond::start_for(&mut s.out, 304, env.cfg, date, persist);
            respond::field(&mut s.out, b"ETag", etag.as_bytes());
            // RFC 9110 section 15.4.5: a 304 carries the Vary a 200 would.
            if found.vary {
                respond::field(&mut s.out, b"Vary", b"Accept-Encoding");
            }
            rule_fields(env, s);
            respond::end(&mut s.out);
            return Ok(Reply {
                status: 304,
                persist,
                payload: Payload::None,
            });
        }
    }

    let total = found.len();
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
            // Only a GET gets here, so the body is always sent.
            let reply = error_reply(env, root, 416, persist, false, s, extra.as_bytes());
            return Ok(reply);
        }
    };

    respond::start_for(&mut s.out, status, env.cfg, date, persist);
    s.out.extend_from_slice(s.types.line(mime));
    if let Some(c) = found.coding {
        respond::field(&mut s.out, b"Content-Encoding", c.token().as_bytes());
    }
    if found.vary {
        respond::field(&mut s.out, b"Vary", b"Accept-Encoding");
    }
    if let Some(m) = found.modified {
        respond::field(&mut s.out, b"Last-Modified", s.modified.http(m));
    }
    respond::field(&mut s.out, b"ETag", etag.as_bytes());
    respond::field(&mut s.out, b"Accept-Ranges", b"bytes");
    rule_fields(env, s);
    if status == 206 {
        use std::io::Write;
        let last = from + count - 1;
        let _ = write!(s.out, "Content-Range: bytes {from}-{last}/{total}\r\n");
    }
    let payload = body(found.body, from, count, head_only, status, s)?;
    Ok(Reply {
        status,
        persist,
        payload,
    })
}

/// Ends the head in `s.out` with the body's length and says where the body comes from:
/// `count` bytes of `content` from `from`, or none for HEAD.
fn body(
    content: Content,
    from: u64,
    count: u64,
    head_only: bool,
    status: u16,
    s: &mut Scratch,
) -> io::Result<Payload> {
    // `byte_range` keeps `from + count` within `total`, the body's length, so the error is
    // never taken; it stands where a slice index would panic.
    let part = |body: &[u8]| -> io::Result<std::ops::Range<usize>> {
        let from = usize::try_from(from).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let to = usize::try_from(count)
            .ok()
            .and_then(|n| from.checked_add(n))
            .filter(|&to| to <= body.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        Ok(from..to)
    };
    let payload = match content {
        Content::Static(body) => {
            let part = body.get(part(body)?).unwrap_or_default();
            respond::content_length(&mut s.out, count);
            if head_only {
                Payload::None
            } else {
                Payload::Static(part)
            }
        }
        Content::Bytes(_) if head_only => {
            respond::content_length(&mut s.out, count);
            Payload::None
        }
        Content::Bytes(body) => {
            // A small file the cache holds: its part leaves with the head in one gathered
            // send, as a small file read from disk would, without a copy.
            let range = part(&body)?;
            respond::content_length(&mut s.out, count);
            Payload::Shared { body, range }
        }
        Content::File { file, .. } if head_only => {
            drop(file);
            respond::content_length(&mut s.out, count);
            Payload::None
        }
        Content::File { file, .. } if count <= SMALL_FILE => {
            let want = count as usize;
            if s.file.len() < want {
                s.file.resize(want, 0);
            }
            // Just resized to hold `want` bytes: never the empty default.
            let buf = s.file.get_mut(..want).unwrap_or_default();
            let got = read_at_most(&file, buf, from)?;
            drop(file);
            if got < want && status == 206 {
                // The file shrank under the range: the promised part cannot be sent.
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            // If the file shrank since fstat, the length sent is what was read.
            respond::content_length(&mut s.out, got as u64);
            Payload::Buffered(got)
        }
        Content::File { file, .. } => {
            respond::content_length(&mut s.out, count);
            Payload::File {
                file,
                offset: from,
                len: count,
            }
        }
    };
    respond::end(&mut s.out);
    Ok(payload)
}

/// Reads `file` from `at` until `buf` is full or the file ends; returns how many bytes it read.
pub(super) fn read_at_most(file: &std::fs::File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
        match file.read_at(rest, at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// `200` to OPTIONS: `Allow` and an empty body, stated with `Content-Length: 0` (RFC 9110
/// section 9.3.7).
fn options(env: &Env<'_>, persist: Persist, s: &mut Scratch) -> Reply {
    respond::start_for(&mut s.out, 200, env.cfg, env.date, persist);
    respond::field(&mut s.out, b"Allow", parse::ALLOW);
    respond::content_length(&mut s.out, 0);
    respond::end(&mut s.out);
    Reply {
        status: 200,
        persist,
        payload: Payload::None,
    }
}

/// A file's modification time as it may be sent: not before the epoch, and not after
/// `date_secs`, the second of the response's `Date` (which the clock keeps within
/// 1970..=9999 itself).
fn clamp_modified(m: SystemTime, date_secs: u64) -> SystemTime {
    if m < UNIX_EPOCH {
        return UNIX_EPOCH;
    }
    m.min(UNIX_EPOCH + Duration::from_secs(date_secs.min(LAST_HTTP_DATE.as_secs())))
}

/// What a request found.
enum Rep {
    Found(Found),
    /// A directory named without its trailing slash.
    Redirect,
    /// A directory with no index file, to be listed (`s.path` names it).
    Listing,
}

struct Found {
    body: Content,
    /// (inode, size, mtime in ns) of a file; (hash, 0, 0) of an embedded asset.
    id: (u64, u64, u64),
    modified: Option<SystemTime>,
    /// The body is this precompressed sibling of the file named.
    coding: Option<Coding>,
    /// The answer depends on `Accept-Encoding`: a sibling could exist for this file.
    vary: bool,
}

impl Found {
    /// The body's length.
    fn len(&self) -> u64 {
        match &self.body {
            Content::Static(b) => b.len() as u64,
            Content::Bytes(b) => b.len() as u64,
            Content::File { len, .. } => *len,
        }
    }
}

enum Content {
    Static(&'static [u8]),
    /// A small file's bytes, from the file cache.
    Bytes(Rc<[u8]>),
    /// An open file, which the file cache may share.
    File {
        file: Rc<std::fs::File>,
        len: u64,
    },
}

/// Looks the resolved path (`s.path`, not yet terminated) up in the embedded site; a
/// directory's index is the first of the index names it has. What is found leaves its path
/// in `s.path`.
fn embedded(env: &Env<'_>, s: &mut Scratch, dir: bool) -> Result<Rep, u16> {
    // Every embedded name is UTF-8: a path that is not names nothing here (it may name a
    // file on disk, where names are bytes, so it is not malformed).
    let rel = std::str::from_utf8(&s.path).map_err(|_| 404u16)?;
    let asset = if dir {
        env.cfg
            .index
            .iter()
            .find_map(|name| match site::lookup(rel, name) {
                site::Lookup::Dir(Some(a)) => Some(a),
                _ => None,
            })
            .ok_or(404u16)?
    } else {
        match site::lookup(rel, "") {
            site::Lookup::File(a) => a,
            site::Lookup::Dir(_) => return Ok(Rep::Redirect),
            site::Lookup::Missing => return Err(404),
        }
    };
    s.path.clear();
    s.path.extend_from_slice(asset.path.as_bytes());
    Ok(Rep::Found(Found {
        body: Content::Static(asset.body),
        id: (asset.hash, 0, 0),
        modified: None,
        coding: None,
        vary: false,
    }))
}

/// Finds what the resolved path (`s.path`) names beneath the root: the file, or for a
/// directory the first of the index names that is a file there (`s.path` then names it),
/// else, with `autoindex`, the directory to list (`s.path` as it came).
fn from_dir(env: &Env<'_>, tree: &Tree, s: &mut Scratch, dir: bool) -> Result<Rep, u16> {
    let dots = path::Dots::of(env.cfg);
    if !dir {
        return open_file(tree, s, false, dots);
    }
    let base = s.path.len();
    for name in &env.cfg.index {
        s.path.truncate(base);
        if base > 0 {
            s.path.push(b'/');
        }
        s.path.extend_from_slice(name.as_bytes());
        match open_file(tree, s, true, dots) {
            // Absent, or not a file: the next name.
            Err(404) => {}
            other => return other,
        }
    }
    s.path.truncate(base);
    if env.cfg.autoindex {
        Ok(Rep::Listing)
    } else {
        Err(404)
    }
}

/// Opens the resolved path (`s.path`) beneath the root, or finds it in the file cache;
/// terminates `s.path` with a NUL.
fn open_file(tree: &Tree, s: &mut Scratch, dir: bool, dots: path::Dots<'_>) -> Result<Rep, u16> {
    s.path.push(0);
    let rel = CStr::from_bytes_with_nul(&s.path).map_err(|_| 400u16)?;
    // Per process and never borrowed across a call: the borrow cannot fail, and if it ever
    // did the request would only go without the cache.
    let mut cache = tree.cache.try_borrow_mut().ok().filter(|c| c.is_on());
    // Taken before the file is looked at, so an entry is never trusted for longer than a
    // second after the look that found it.
    let now = Instant::now();
    if let Some(version) = cache.as_mut().and_then(|c| c.fresh(rel.to_bytes(), now)) {
        return Ok(Rep::Found(found(version)));
    }
    let opened = open::beneath(tree.as_fd(), rel, dots).and_then(|file| {
        let meta = file.metadata()?;
        Ok((file, meta))
    });
    let (file, meta) = match opened {
        Ok((file, meta)) if meta.is_file() => (file, meta),
        other => {
            if let Some(c) = cache.as_mut() {
                c.forget(rel.to_bytes());
            }
            return match other {
                // With a trailing slash the index file itself turned out to be a directory.
                Ok((_, meta)) if meta.is_dir() && !dir => Ok(Rep::Redirect),
                Ok(_) => Err(404),
                Err(open::Refused::Hidden) => {
                    Hit::PathRefused.count();
                    Err(404)
                }
                Err(open::Refused::Os(e)) => Err(open_status(&e, rel)),
            };
        }
    };
    let version = match cache.as_mut().and_then(|c| c.admits().then_some(c)) {
        Some(c) => c
            .admit(rel.to_bytes(), file, &meta, now)
            .map_err(|e| open_status(&e, rel))?,
        None => Version {
            stamp: cache::Stamp::of(&meta),
            modified: meta.modified().ok(),
            body: Body::File(Rc::new(file)),
        },
    };
    Ok(Rep::Found(found(version)))
}

/// A file's version as the answer weighs it: the entity tag's parts, the modification time,
/// the bytes.
fn found(v: Version) -> Found {
    let (secs, nanos) = v.stamp.mtime;
    let nanos = (secs as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(nanos as u64);
    Found {
        id: (v.stamp.ino, v.stamp.size, nanos),
        modified: v.modified,
        coding: None,
        vary: false,
        body: match v.body {
            Body::Bytes(b) => Content::Bytes(b),
            Body::File(file) => Content::File {
                file,
                len: v.stamp.size,
            },
        },
    }
}

/// The file `found` (named by `s.path`), or the precompressed sibling the request accepts
/// best (`encoding::negotiate`): one that the safe open finds beneath the root as a regular
/// file no older than the original. Either way the answer varies with `Accept-Encoding`.
fn precompressed(
    tree: &Tree,
    req: &[u8],
    head: &Head,
    s: &mut Scratch,
    found: Found,
    dots: path::Dots<'_>,
) -> Found {
    let found = Found {
        vary: true,
        ..found
    };
    let mut lines = [&[][..]; parse::MAX_LIST_LINES];
    let accepted = encoding::negotiate(head.accept_encoding.values(req, &mut lines));
    if accepted.is_empty() {
        return found;
    }
    let mut cache = tree.cache.try_borrow_mut().ok().filter(|c| c.is_on());
    for coding in accepted.iter() {
        if let Some(v) = sibling(tree, cache.as_deref_mut(), s, coding, found.modified, dots) {
            return Found {
                coding: Some(coding),
                vary: true,
                ..self::found(v)
            };
        }
    }
    found
}

/// The sibling `coding` of the file `s.path` (NUL-terminated, and so again on return) if it
/// can be served: what the cache knows of it saves the look (`Probe`), and what a look finds
/// is remembered until the original's next check.
fn sibling(
    tree: &Tree,
    mut cache: Option<&mut FileCache>,
    s: &mut Scratch,
    coding: Coding,
    original: Option<SystemTime>,
    dots: path::Dots<'_>,
) -> Option<Version> {
    let key_len = s.path.len().checked_sub(1)?;
    let probe = match cache.as_deref_mut() {
        Some(c) => c.probe(s.path.get(..key_len)?, coding.index()),
        None => Probe::Unknown,
    };
    if probe == Probe::Absent {
        return None;
    }
    s.path.truncate(key_len);
    s.path.extend_from_slice(coding.suffix().as_bytes());
    s.path.push(0);
    let version = CStr::from_bytes_with_nul(&s.path)
        .ok()
        .and_then(|rel| open_sibling(tree, cache.as_deref_mut(), rel, dots));
    s.path.truncate(key_len);
    s.path.push(0);
    // Not older than the original: a sibling left behind by an edit of the original is
    // ignored until it is made again (`forkd precompress`, `gzip -k`: both keep the time).
    let usable = version.filter(|v| match (v.modified, original) {
        (Some(sibling), Some(original)) => sibling >= original,
        _ => false,
    });
    if let (Some(c), Some(key)) = (cache, s.path.get(..key_len)) {
        let probe = if usable.is_some() {
            Probe::Present
        } else {
            Probe::Absent
        };
        c.set_probe(key, coding.index(), probe);
    }
    usable
}

/// Opens a sibling `rel` as `from_dir` opens a file, or finds it in the cache; `None` when it
/// is not a regular file the safe open reaches.
fn open_sibling(
    tree: &Tree,
    mut cache: Option<&mut FileCache>,
    rel: &CStr,
    dots: path::Dots<'_>,
) -> Option<Version> {
    let now = Instant::now();
    if let Some(v) = cache
        .as_deref_mut()
        .and_then(|c| c.fresh(rel.to_bytes(), now))
    {
        return Some(v);
    }
    let opened = open::beneath(tree.as_fd(), rel, dots)
        .ok()
        .and_then(|file| file.metadata().ok().map(|meta| (file, meta)));
    match (opened, cache) {
        (Some((file, meta)), Some(c)) if meta.is_file() => {
            c.admit(rel.to_bytes(), file, &meta, now).ok()
        }
        (Some((file, meta)), None) if meta.is_file() => Some(Version {
            stamp: cache::Stamp::of(&meta),
            modified: meta.modified().ok(),
            body: Body::File(Rc::new(file)),
        }),
        (_, Some(c)) => {
            c.forget(rel.to_bytes());
            None
        }
        (_, None) => None,
    }
}

/// The status for a failed open of `rel`: absent, refused by `RESOLVE_BENEATH` or not a
/// directory along the way all read as 404, so what lies outside the root is never revealed.
fn open_status(e: &io::Error, rel: &CStr) -> u16 {
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => {
            warn_denied(rel);
            403
        }
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

/// Says, once per process, that a file could not be opened for want of permission: a
/// docroot or file the children's user cannot read otherwise answers 403 with nothing in the
/// log. Once per process bounds it: a prefork worker says it once in its life; in fork mode
/// each connection's child may say it once.
fn warn_denied(rel: &CStr) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            path = %rel.to_string_lossy(),
            uid = nix::unistd::Uid::effective().as_raw(),
            "permission denied opening a file beneath the root, answered 403 (can the user \
             children run as read it?); this process will not report it again"
        );
    }
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
        // `push` keeps `len` within `buf`.
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Appends `b`, or nothing if it does not fit (no caller comes near the size).
    fn push(&mut self, b: &[u8]) {
        let end = self.len.saturating_add(b.len());
        if let Some(to) = self.buf.get_mut(self.len..end) {
            to.copy_from_slice(b);
            self.len = end;
        }
    }

    /// Appends `v` in lower-case hexadecimal, without leading zeros, as `{:x}` would.
    fn hex(&mut self, v: u64) {
        let mut digits = [0u8; 16];
        let mut at = digits.len();
        let mut v = v;
        loop {
            at -= 1;
            if let Some(d) = digits.get_mut(at) {
                *d = b"0123456789abcdef"
                    .get((v & 15) as usize)
                    .copied()
                    .unwrap_or(b'0');
            }
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.push(digits.get(at..).unwrap_or_default());
    }
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let before = self.len;
        self.push(s.as_bytes());
        if self.len == before && !s.is_empty() {
            return Err(std::fmt::Error);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
