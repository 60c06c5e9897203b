//! The access log, in Combined Log Format.
//!
//! Each line is formatted into a buffer the connection reuses and leaves in ONE `write` on a
//! file opened `O_APPEND`, so lines from concurrent children never interleave (the kernel
//! appends each write whole to a regular file). When logging is off nothing is formatted.
//! Diagnostics do not belong here: they go through `tracing`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
    /// stays in use.
    pub fn reopen(&mut self) -> io::Result<()> {
        if let Sink::File { file, path } = &mut self.sink {
            *file = open_append(path)?;
        }
        Ok(())
    }

    /// Writes one finished line (newline included) with one `write`.
    pub(super) fn write_line(&self, line: &[u8]) {
        let result = match &self.sink {
            Sink::Off => return,
            Sink::Stderr => io::stderr().lock().write(line),
            Sink::File { file, .. } => (&*file).write(line),
        };
        match result {
            Ok(n) if n == line.len() => {}
            Ok(n) => tracing::warn!(written = n, len = line.len(), "short access log write"),
            Err(e) => tracing::warn!(error = %e, "unable to write the access log"),
        }
    }
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in v {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
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
}
