//! Framing HTTP/1.1 responses with as little work as possible: the status line, then only the
//! headers that decide where the response ends (`Content-Length`, `Transfer-Encoding: chunked`,
//! `Connection`). Bodies are counted, never stored, so one small buffer per connection serves
//! responses of any size.
//!
//! The parser is pure and incremental: the caller appends bytes to its buffer and asks
//! [`ResponseParser::parse`] how many leading bytes it may discard. "Need more bytes" is a
//! [`Step::More`], not an error.

use std::fmt;

/// What one call to [`ResponseParser::parse`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The response is not complete: drop the first `consumed` bytes, keep the rest, read more.
    More { consumed: usize },
    /// The response ended after `consumed` bytes of the buffer.
    Done {
        consumed: usize,
        status: u16,
        keep_alive: bool,
    },
}

/// Why a response could not be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    StatusLine,
    Header,
    ContentLength,
    Chunk,
    /// The connection ended before the response did.
    Truncated,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::StatusLine => "malformed status line",
            FrameError::Header => "malformed header",
            FrameError::ContentLength => "invalid Content-Length",
            FrameError::Chunk => "malformed chunk",
            FrameError::Truncated => "connection closed mid-response",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the blank line; `scanned` bytes are known not to hold it.
    Head {
        scanned: usize,
    },
    Length {
        remaining: u64,
    },
    ChunkSize,
    ChunkData {
        remaining: u64,
    },
    ChunkEnd,
    Trailers,
    UntilEof,
}

/// Frames one response at a time on one connection.
#[derive(Debug, Clone)]
pub struct ResponseParser {
    phase: Phase,
    head_request: bool,
    status: u16,
    keep_alive: bool,
}

impl ResponseParser {
    pub fn new() -> ResponseParser {
        ResponseParser {
            phase: Phase::Head { scanned: 0 },
            head_request: false,
            status: 0,
            keep_alive: false,
        }
    }

    /// Prepares for the response to the next request; a `HEAD` response has no body whatever
    /// its headers say.
    pub fn reset(&mut self, head_request: bool) {
        self.phase = Phase::Head { scanned: 0 };
        self.head_request = head_request;
        self.status = 0;
        self.keep_alive = false;
    }

    /// True while no byte of the head has been accepted (for telling a closed idle keep-alive
    /// connection from a truncated response).
    pub fn at_start(&self) -> bool {
        self.phase == Phase::Head { scanned: 0 }
    }

    /// Advances over `buf`, which starts where the previous call's `consumed` left off.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Step, FrameError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.phase {
                Phase::Head { scanned } => {
                    // Resume a little before the old end: the blank line may straddle reads.
                    let from = scanned.saturating_sub(3);
                    match find_blank_line(&rest[from..]) {
                        None => {
                            self.phase = Phase::Head {
                                scanned: rest.len(),
                            };
                            return Ok(Step::More { consumed: pos });
                        }
                        Some(i) => {
                            let end = from + i + 4;
                            self.head(&rest[..end])?;
                            pos += end;
                        }
                    }
                }
                Phase::Length { remaining } => {
                    let take = remaining.min(rest.len() as u64);
                    pos += take as usize;
                    if take == remaining {
                        return Ok(self.done(pos));
                    }
                    self.phase = Phase::Length {
                        remaining: remaining - take,
                    };
                    return Ok(Step::More { consumed: pos });
                }
                Phase::ChunkSize => match find(rest, b"\r\n") {
                    None => return Ok(Step::More { consumed: pos }),
                    Some(i) => {
                        let size = parse_chunk_size(&rest[..i])?;
                        pos += i + 2;
                        self.phase = if size == 0 {
                            Phase::Trailers
                        } else {
                            Phase::ChunkData { remaining: size }
                        };
                    }
                },
                Phase::ChunkData { remaining } => {
                    let take = remaining.min(rest.len() as u64);
                    pos += take as usize;
                    if take < remaining {
                        self.phase = Phase::ChunkData {
                            remaining: remaining - take,
                        };
                        return Ok(Step::More { consumed: pos });
                    }
                    self.phase = Phase::ChunkEnd;
                }
                Phase::ChunkEnd => {
                    if rest.len() < 2 {
                        return Ok(Step::More { consumed: pos });
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(FrameError::Chunk);
                    }
                    pos += 2;
                    self.phase = Phase::ChunkSize;
                }
                Phase::Trailers => match find(rest, b"\r\n") {
                    None => return Ok(Step::More { consumed: pos }),
                    Some(0) => return Ok(self.done(pos + 2)),
                    Some(i) => pos += i + 2,
                },
                Phase::UntilEof => {
                    return Ok(Step::More {
                        consumed: buf.len(),
                    })
                }
            }
        }
    }

    /// The peer closed the connection: either that ends a close-delimited body, or the response
    /// was cut short.
    pub fn eof(&mut self) -> Result<Step, FrameError> {
        match self.phase {
            Phase::UntilEof => Ok(self.done(0)),
            _ => Err(FrameError::Truncated),
        }
    }

    fn done(&mut self, consumed: usize) -> Step {
        let step = Step::Done {
            consumed,
            status: self.status,
            keep_alive: self.keep_alive,
        };
        self.reset(self.head_request);
        step
    }

    /// Reads the head (status line through the blank line) and chooses how the body is framed.
    fn head(&mut self, head: &[u8]) -> Result<(), FrameError> {
        let mut lines = head[..head.len() - 4].split(|&b| b == b'\n');
        let status_line = trim_cr(lines.next().ok_or(FrameError::StatusLine)?);
        // "HTTP/1.x NNN" and optionally a reason phrase.
        if status_line.len() < 12
            || !status_line.starts_with(b"HTTP/1.")
            || status_line[8] != b' '
            || (status_line.len() > 12 && status_line[12] != b' ')
        {
            return Err(FrameError::StatusLine);
        }
        let minor = status_line[7];
        let status = parse_u64(&status_line[9..12]).ok_or(FrameError::StatusLine)? as u16;
        let mut keep_alive = minor == b'1';
        let mut length: Option<u64> = None;
        let mut chunked = false;
        for line in lines {
            let line = trim_cr(line);
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or(FrameError::Header)?;
            let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = parse_u64(value).ok_or(FrameError::ContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(FrameError::ContentLength);
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = last_token(value).eq_ignore_ascii_case(b"chunked");
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in value.split(|&b| b == b',') {
                    let token = trim(token);
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    }
                }
            }
        }
        // An interim response (100 Continue) is followed by the real one.
        if (100..200).contains(&status) && status != 101 {
            self.phase = Phase::Head { scanned: 0 };
            return Ok(());
        }
        self.status = status;
        self.keep_alive = keep_alive;
        let bodiless = self.head_request || status == 204 || status == 304;
        self.phase = if bodiless {
            Phase::Length { remaining: 0 }
        } else if chunked {
            Phase::ChunkSize
        } else if let Some(n) = length {
            Phase::Length { remaining: n }
        } else {
            self.keep_alive = false;
            Phase::UntilEof
        };
        Ok(())
    }
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

/// The offset of the first `\r\n\r\n`. A byte that is neither CR nor LF cannot be part of the
/// four, so the scan may skip four bytes past it: a head is read in about a quarter of its
/// length in comparisons (this is the parser's hottest loop).
fn find_blank_line(hay: &[u8]) -> Option<usize> {
    let mut i = 3;
    while i < hay.len() {
        match hay[i] {
            b'\n' => {
                if hay[i - 1] == b'\r' && hay[i - 2] == b'\n' && hay[i - 3] == b'\r' {
                    return Some(i - 3);
                }
                i += 1;
            }
            b'\r' => i += 1,
            _ => i += 4,
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn last_token(value: &[u8]) -> &[u8] {
    trim(value.rsplit(|&b| b == b',').next().unwrap_or(value))
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, FrameError> {
    let hex = trim(line.split(|&b| b == b';').next().unwrap_or(line));
    if hex.is_empty() || hex.len() > 15 {
        return Err(FrameError::Chunk);
    }
    let text = std::str::from_utf8(hex).map_err(|_| FrameError::Chunk)?;
    u64::from_str_radix(text, 16).map_err(|_| FrameError::Chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `piece` bytes the way the engine does, returning each
    /// response's (status, keep_alive) and the first error.
    fn run(
        input: &[u8],
        piece: usize,
        head: bool,
        eof: bool,
    ) -> (Vec<(u16, bool)>, Option<FrameError>) {
        let mut p = ResponseParser::new();
        p.reset(head);
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            buf.extend_from_slice(chunk);
            loop {
                match p.parse(&buf) {
                    Ok(Step::More { consumed }) => {
                        buf.drain(..consumed);
                        break;
                    }
                    Ok(Step::Done {
                        consumed,
                        status,
                        keep_alive,
                    }) => {
                        out.push((status, keep_alive));
                        buf.drain(..consumed);
                        if buf.is_empty() {
                            break;
                        }
                    }
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        if eof {
            match p.eof() {
                Ok(Step::Done {
                    status, keep_alive, ..
                }) => out.push((status, keep_alive)),
                Ok(Step::More { .. }) => unreachable!(),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[test]
    fn frames_responses_in_any_split() {
        type Case = (
            &'static str,
            bool,
            bool,
            Vec<(u16, bool)>,
            Option<FrameError>,
        );
        let cases: Vec<Case> = vec![
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                false,
                false,
                vec![(200, true)],
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length:  3 \r\nConnection: close\r\n\r\nabc",
                false,
                false,
                vec![(200, false)],
                None,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                false,
                false,
                vec![(200, false)],
                None,
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
                false,
                false,
                vec![(200, true)],
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
                false,
                false,
                vec![(200, true)],
                None,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
                false,
                false,
                vec![(304, true), (204, true)],
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n",
                true,
                false,
                vec![(200, true)],
                None,
            ),
            (
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nx",
                false,
                false,
                vec![(404, true)],
                None,
            ),
            ("HTTP/1.1 200 OK\r\n\r\nuntil the end", false, true, vec![(200, false)], None),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                false,
                true,
                vec![],
                Some(FrameError::Truncated),
            ),
            ("", false, true, vec![], Some(FrameError::Truncated)),
            ("HTTP/2 200\r\n\r\n", false, false, vec![], Some(FrameError::StatusLine)),
            ("HTTP/1.1 2x0 OK\r\n\r\n", false, false, vec![], Some(FrameError::StatusLine)),
            ("HTTP/1.1 200 OK\r\nbad header\r\n\r\n", false, false, vec![], Some(FrameError::Header)),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                false,
                vec![],
                Some(FrameError::ContentLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                false,
                false,
                vec![],
                Some(FrameError::ContentLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false,
                false,
                vec![],
                Some(FrameError::Chunk),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
                false,
                false,
                vec![],
                Some(FrameError::Chunk),
            ),
        ];
        for (input, head, eof, want, err) in &cases {
            for piece in [1, 2, 3, 7, 64, 4096] {
                let got = run(input.as_bytes(), piece, *head, *eof);
                assert_eq!(got, (want.clone(), *err), "{input:?} in pieces of {piece}");
            }
        }
    }

    #[test]
    fn blank_line_search() {
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"\r\n\r\n", Some(0)),
            (b"abc\r\n\r\n", Some(3)),
            (b"a\r\nb\r\n\r\nc", Some(4)),
            (b"\r\r\n\r\n", Some(1)),
            (b"\n\r\n\r\n", Some(1)),
            (b"\r\n\r", None),
            (b"a\nb\n\n\r\n", None),
            (b"", None),
        ];
        for (hay, want) in cases {
            assert_eq!(
                find_blank_line(hay),
                *want,
                "{:?}",
                String::from_utf8_lossy(hay)
            );
            assert_eq!(find(hay, b"\r\n\r\n"), *want);
        }
    }

    #[test]
    fn big_body_is_counted_not_kept() {
        let mut p = ResponseParser::new();
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
        assert_eq!(
            p.parse(head),
            Ok(Step::More {
                consumed: head.len()
            })
        );
        let block = [0u8; 65536];
        let mut left = 1_000_000usize;
        while left > block.len() {
            assert_eq!(
                p.parse(&block),
                Ok(Step::More {
                    consumed: block.len()
                })
            );
            left -= block.len();
        }
        assert_eq!(
            p.parse(&block[..left]),
            Ok(Step::Done {
                consumed: left,
                status: 200,
                keep_alive: true
            })
        );
        assert!(p.at_start());
    }
}
