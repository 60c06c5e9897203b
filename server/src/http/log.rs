//! The access log, in Combined Log Format.
//!
//! Each line is formatted into a buffer the connection reuses and leaves in ONE `write` on a
//! file opened `O_APPEND`, so lines from concurrent children never interleave (the kernel
//! appends each write whole to a regular file). When logging is off nothing is formatted.
//! Diagnostics do not belong here: they go through `tracing`.
//!
//! A failing disk must not fill the error log nor corrupt the access log: warnings about
//! failed writes pass at most once per [`WARN_EVERY`] across all children (a gate on the
//! shared scoreboard), with the count of those held back, and every lost line is counted
//! (`access_log_failed`). A short write (the disk filled up, or the file reached
//! `RLIMIT_FSIZE`, mid-line) would leave a torn line that the next one is glued to; the file is
//! cut back to where the line started, which is safe when the file still ends exactly where
//! our write ended: see [`untear`] for the race this leaves and why it is harmless.
//!
//! After logrotate, SIGUSR1 reaches each child as a flag; the child reopens the file by path
//! before its next line ([`AccessLog::follow_rotation`]). A child that may not open it (it
//! dropped privileges and the new file is root's) keeps its old file and retires, so a new
//! child inherits the master's new one.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use forkd_daemon::{scoreboard, worker};

/// At most one warning about a failing access log per this long, across all children.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// The scoreboard's warning gates this module uses.
const GATE_WRITE: usize = 0;
const GATE_REOPEN: usize = 1;

#[derive(Debug)]
enum Sink {
    Off,
    Stderr,
    File { file: File, path: PathBuf },
}

/// Where access-log lines go.
#[derive(Debug)]
pub struct AccessLog {
    sink: Sink,
}

impl AccessLog {
    /// Appends to `path`, creating it mode 0640.
    pub fn open(path: &Path) -> io::Result<AccessLog> {
        Ok(AccessLog {
            sink: Sink::File {
                file: open_append(path)?,
                path: path.to_path_buf(),
            },
        })
    }

    /// Lines go to standard error.
    pub fn stderr() -> AccessLog {
        AccessLog { sink: Sink::Stderr }
    }

    /// No access log; costs nothing per request.
    pub fn off() -> AccessLog {
        AccessLog { sink: Sink::Off }
    }

    pub fn is_on(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    /// Opens the file again by name (after logrotate moved it away). On failure the old file
    /// stays in use. The master does not call this: it opens a new `AccessLog` whole, from
    /// the configuration it may just have reloaded.
    fn reopen(&mut self) -> io::Result<()> {
        if let Sink::File { file, path } = &mut self.sink {
            *file = open_append(path)?;
        }
        Ok(())
    }

    /// In a child: reopens the file by path if the master forwarded a SIGUSR1 since the last
    /// line. On failure the old file stays in use and the child retires, so that a new child
    /// inherits the file the master opened.
    pub(super) fn follow_rotation(&mut self) {
        if !worker::take_reopen_request() {
            return;
        }
        if let Err(e) = self.reopen() {
            if let Some(held) = scoreboard::warn_gate(GATE_REOPEN, WARN_EVERY) {
                tracing::warn!(
                    error = %e,
                    held_back = held,
                    "child {} cannot reopen the access log; leaving so that a new child takes \
                     the master's",
                    std::process::id()
                );
            }
            worker::retire();
        }
    }

    /// Writes one finished line (newline included) with one `write`.
    pub(super) fn write_line(&self, line: &[u8]) {
        let (result, file) = match &self.sink {
            Sink::Off => return,
            Sink::Stderr => (io::stderr().lock().write(line), None),
            Sink::File { file, .. } => ((&*file).write(line), Some(file)),
        };
        let failure = match result {
            Ok(n) if n == line.len() => return,
            Ok(n) => {
                let cut = match file.map(|f| untear(f, n)) {
                    Some(Ok(true)) => "cut back",
                    Some(Ok(false)) => "left torn: other lines followed it",
                    Some(Err(_)) => "left torn: unable to cut it back",
                    None => "",
                };
                format!("short write ({n} of {} bytes), line {cut}", line.len())
            }
            Err(e) => e.to_string(),
        };
        super::Hit::AccessLogFailed.count();
        if let Some(held) = scoreboard::warn_gate(GATE_WRITE, WARN_EVERY) {
            tracing::warn!(
                held_back = held,
                "unable to write the access log: {failure} (at most one such warning per {}s)",
                WARN_EVERY.as_secs()
            );
        }
    }
}

/// After a short write of `written` bytes of a line to `file`, cuts the file back to where the
/// line started, if the file ends exactly where our write ended. Returns whether it did.
///
/// The race: another child may append between our write and the cut. If its line landed
/// before our check, the file no longer ends at our write and nothing is cut (the torn line
/// stays, followed by that line). If it lands between the check and the cut, that whole line
/// is cut with ours: one line lost, none torn. Either needs another write to succeed right
/// after ours came up short, which neither cause of a short write allows: the disk is full,
/// or the file is at its size limit, until something else frees space. A lock would close
/// the race but cost every writer two more system calls per line.
fn untear(file: &File, written: usize) -> io::Result<bool> {
    let mut f = file;
    // O_APPEND leaves the offset at the end of what this write appended.
    let end = f.stream_position()?;
    let Some(start) = end.checked_sub(written as u64) else {
        return Ok(false);
    };
    if file.metadata()?.len() != end {
        return Ok(false);
    }
    file.set_len(start)?;
    Ok(true)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// What one request contributes to its line.
pub(super) struct Entry<'a> {
    pub peer: IpAddr,
    /// `[day/Mon/year:H:M:S +0000]` without the brackets.
    pub time: &'a [u8],
    /// The request line as received (`-` if none could be read).
    pub request: &'a [u8],
    pub status: u16,
    pub body_bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
}

/// The request line a log line names for a head that was refused (or never completed): the
/// first line of what was received, after any empty ones (RFC 9112 section 2.2 lets a client
/// send CRLFs before a request), cut to a length a log line can bear; `-` when there is none.
pub(super) fn refused_line(received: &[u8]) -> &[u8] {
    /// The request line logged for a head that could not be parsed is cut at this length.
    const LOGGED_LINE_MAX: usize = 1024;
    let line = received
        .split(|&b| b == b'\r' || b == b'\n')
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    match line.get(..LOGGED_LINE_MAX).unwrap_or(line) {
        [] => b"-",
        line => line,
    }
}

impl<'a> Entry<'a> {
    /// The entry of a request answered: its line and fields taken from `req`, the buffer its
    /// head was parsed from.
    pub(super) fn of_request(
        peer: IpAddr,
        time: &'a [u8],
        req: &'a [u8],
        head: &super::parse::Head,
        status: u16,
        body_bytes: u64,
    ) -> Entry<'a> {
        // The head's ranges were taken from `req` by the parser: `get` never misses.
        let field = |r: &Option<std::ops::Range<usize>>| r.clone().and_then(|r| req.get(r));
        Entry {
            peer,
            time,
            request: req.get(head.line.clone()).unwrap_or(b"-"),
            status,
            body_bytes,
            referer: field(&head.referer),
            user_agent: field(&head.user_agent),
        }
    }
}

/// Formats and writes one line; nothing at all when the log is off.
pub(super) fn record(log: &mut AccessLog, line: &mut Vec<u8>, entry: &Entry<'_>) {
    if log.is_on() {
        format(line, entry);
        write_formatted(log, line);
    }
}

/// Writes a line [`format`] made earlier (an event worker formats a line when it answers and
/// writes it once the response is whole); nothing when the log is off or the line empty.
pub(super) fn write_formatted(log: &mut AccessLog, line: &[u8]) {
    if log.is_on() && !line.is_empty() {
        log.follow_rotation();
        log.write_line(line);
    }
}

/// Formats `e` as one Combined Log Format line into `out` (cleared first):
/// `host - - [time] "request" status bytes "referer" "user-agent"`.
pub(super) fn format(out: &mut Vec<u8>, e: &Entry<'_>) {
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{} - - [", e.peer);
    out.extend_from_slice(e.time);
    out.extend_from_slice(b"] \"");
    escape(out, e.request);
    let _ = write!(out, "\" {} ", e.status);
    if e.body_bytes == 0 {
        out.push(b'-');
    } else {
        let _ = write!(out, "{}", e.body_bytes);
    }
    for field in [e.referer, e.user_agent] {
        out.extend_from_slice(b" \"");
        match field {
            Some(v) => escape(out, v),
            None => out.push(b'-'),
        }
        out.push(b'"');
    }
    out.push(b'\n');
}

/// Copies client-controlled bytes so they cannot forge a field or a line: quotes,
/// backslashes, control and non-ASCII bytes become `\xHH` (as Apache does).
fn escape(out: &mut Vec<u8>, v: &[u8]) {
    // The lowercase hex digit of a nibble (below 16, so neither arm can overflow).
    let hex = |n: u8| if n < 10 { b'0' + n } else { b'a' + (n - 10) };
    for &b in v {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.extend_from_slice(&[b'\\', b'x', hex(b >> 4), hex(b & 15)]);
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_format() {
        let mut out = Vec::new();
        let e = Entry {
            peer: "192.0.2.7".parse().unwrap(),
            time: b"06/Nov/1994:08:49:37 +0000",
            request: b"GET /a?b=\"c\" HTTP/1.1",
            status: 200,
            body_bytes: 2048,
            referer: None,
            user_agent: Some(b"curl/8\\x\n\xff"),
        };
        format(&mut out, &e);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "192.0.2.7 - - [06/Nov/1994:08:49:37 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" \
             200 2048 \"-\" \"curl/8\\x5cx\\x0a\\xff\"\n"
        );
        let e = Entry {
            peer: "::1".parse().unwrap(),
            status: 304,
            body_bytes: 0,
            referer: Some(b"http://r/"),
            user_agent: None,
            ..e
        };
        format(&mut out, &e);
        assert!(out.ends_with(b"\" 304 - \"http://r/\" \"-\"\n"));
        assert!(out.starts_with(b"::1 - - ["));
    }

    #[test]
    fn file_lines_are_appended_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut log = AccessLog::open(&path).unwrap();
        log.write_line(b"one\n");
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        log.write_line(b"two\n");
        log.reopen().unwrap();
        log.write_line(b"three\n");
        let old = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        assert_eq!(old, "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "mode {mode:o}");
        assert!(!AccessLog::off().is_on());
    }

    #[test]
    fn a_short_write_is_cut_back_only_when_nothing_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(&path).unwrap();
        let Sink::File { file, .. } = &log.sink else {
            panic!("a log opened by path writes to a file");
        };
        log.write_line(b"whole\n");
        // As if a write of "torn line\n" had stopped after 4 bytes.
        (&*file).write_all(b"torn").unwrap();
        assert!(untear(file, 4).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "whole\n");
        // Another writer appended after the short write: nothing is cut.
        (&*file).write_all(b"torn").unwrap();
        let mut other = OpenOptions::new().append(true).open(&path).unwrap();
        other.write_all(b"other\n").unwrap();
        assert!(!untear(file, 4).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "whole\ntornother\n"
        );
    }
}
