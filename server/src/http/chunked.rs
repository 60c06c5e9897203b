//! Walking a chunked request body (RFC 9112 section 7.1) byte-exactly without keeping it, so
//! keep-alive framing never desyncs however TCP splits the stream. Only bounded counters are
//! kept: nothing here allocates or does I/O, and the same bytes give the same verdict fed whole
//! or one at a time.

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    Malformed,
    TooLarge,
}

/// Where [`Chunked`] is in the grammar of RFC 9112 section 7.1:
///
/// ```text
/// chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// chunk-ext-val  = token / quoted-string
/// trailer-line   = field-name ":" OWS field-value OWS
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `bool`: at least one seen.
    Size(bool),
    /// Whitespace (BWS) that must be followed by `;`: after the size or an extension value.
    ExtSemicolon,
    /// After `;`: whitespace, then the first byte of an extension name.
    ExtNameStart,
    /// Inside an extension name (a token).
    ExtName,
    /// Whitespace after a name: `=` or `;` must follow.
    ExtNameEnd,
    /// After `=`: whitespace, then a token or a quoted string.
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    /// After a backslash in a quoted string.
    ExtEscape,
    /// Right after a quoted string's closing quote.
    ExtQuotedEnd,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line (or of the final blank line).
    TrailerStart,
    /// Inside a trailer field name (a token).
    TrailerName,
    /// After the colon: the field value, up to CR.
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// `tchar` (RFC 9110 section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `qdtext` (RFC 9110 section 5.6.4): a quoted string's byte other than `"` and `\`.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// A byte a field value may hold (`field-vchar`, SP, HTAB; RFC 9110 section 5.5).
fn is_field_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

/// Walks a chunked body (RFC 9112 section 7.1) without keeping it, strictly: CRLF line
/// endings only, the extension and trailer grammar exactly, at most 16 significant hex digits
/// of size, and extensions, trailers and leading zeros bounded in size.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    /// The size being read, then the bytes of the chunk still to come.
    left: u64,
    /// Significant digits of the size so far (leading zeros do not count).
    digits: u8,
    /// Data bytes so far, bounded by `max_body`.
    total: u64,
    max_body: u64,
    /// Bytes of extensions, trailers and leading zeros so far, bounded by `max_meta`.
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

    /// Counts one byte of metadata against its bound.
    fn meta_byte(&mut self) -> Result<(), ChunkedError> {
        self.meta += 1;
        if self.meta > self.max_meta {
            Err(ChunkedError::TooLarge)
        } else {
            Ok(())
        }
    }

    /// Consumes body bytes from the front of `buf` and returns how many belonged to the body;
    /// once [`Chunked::is_done`], what follows is the next request.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, ChunkedError> {
        use ChunkedError::*;
        let mut i = 0;
        while self.state != State::Done {
            let Some(rest) = buf.get(i..).filter(|r| !r.is_empty()) else {
                break;
            };
            if self.state == State::Data {
                let take = rest
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                i += take;
                self.left -= take as u64;
                if self.left == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let Some(&b) = rest.first() else {
                break;
            };
            i += 1;
            let ws = b == b' ' || b == b'\t';
            self.state = match self.state {
                State::Size(seen) => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = u64::from(if b <= b'9' {
                            b - b'0'
                        } else {
                            (b | 0x20) - b'a' + 10
                        });
                        if self.left == 0 && d == 0 {
                            // A leading zero: no value, but bytes a client could send forever.
                            self.meta_byte()?;
                        } else {
                            // Past 16 significant digits the size cannot be a 64-bit number:
                            // a malformed (or hostile) length, not merely a large one.
                            self.digits += 1;
                            if self.digits > 16 {
                                return Err(Malformed);
                            }
                            self.left = (self.left << 4) | d;
                        }
                        State::Size(true)
                    }
                    // BWS is only allowed before a `;`: `5 \r\n` is refused.
                    _ if ws && seen => State::ExtSemicolon,
                    b';' if seen => State::ExtNameStart,
                    b'\r' if seen => State::SizeLf,
                    _ => return Err(Malformed),
                },
                State::ExtSemicolon
                | State::ExtNameStart
                | State::ExtName
                | State::ExtNameEnd
                | State::ExtValueStart
                | State::ExtToken
                | State::ExtQuoted
                | State::ExtEscape
                | State::ExtQuotedEnd => {
                    self.meta_byte()?;
                    self.extension(b).ok_or(Malformed)?
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
                State::TrailerStart | State::TrailerName | State::TrailerValue => {
                    self.meta_byte()?;
                    match (self.state, b) {
                        // A name is a token: no leading whitespace (obs-fold), no empty name.
                        (State::TrailerStart | State::TrailerName, _) if is_tchar(b) => {
                            State::TrailerName
                        }
                        (State::TrailerName, b':') => State::TrailerValue,
                        (State::TrailerValue, b'\r') => State::TrailerLf,
                        (State::TrailerValue, _) if is_field_byte(b) => State::TrailerValue,
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

    /// The next state inside a chunk extension after byte `b`; `None` if `b` breaks the
    /// grammar (RFC 9112 section 7.1.1): a missing or non-token name, a value that is neither
    /// a token nor a quoted string, or whitespace not followed by `;` or `=`.
    fn extension(&self, b: u8) -> Option<State> {
        let ws = b == b' ' || b == b'\t';
        Some(match self.state {
            State::ExtSemicolon => match b {
                _ if ws => State::ExtSemicolon,
                b';' => State::ExtNameStart,
                _ => return None,
            },
            State::ExtNameStart => match b {
                _ if ws => State::ExtNameStart,
                _ if is_tchar(b) => State::ExtName,
                _ => return None,
            },
            State::ExtName => match b {
                _ if is_tchar(b) => State::ExtName,
                _ if ws => State::ExtNameEnd,
                b'=' => State::ExtValueStart,
                b';' => State::ExtNameStart,
                b'\r' => State::SizeLf,
                _ => return None,
            },
            State::ExtNameEnd => match b {
                _ if ws => State::ExtNameEnd,
                b'=' => State::ExtValueStart,
                b';' => State::ExtNameStart,
                _ => return None,
            },
            State::ExtValueStart => match b {
                _ if ws => State::ExtValueStart,
                b'"' => State::ExtQuoted,
                _ if is_tchar(b) => State::ExtToken,
                _ => return None,
            },
            State::ExtToken => match b {
                _ if is_tchar(b) => State::ExtToken,
                _ if ws => State::ExtSemicolon,
                b';' => State::ExtNameStart,
                b'\r' => State::SizeLf,
                _ => return None,
            },
            State::ExtQuoted => match b {
                b'"' => State::ExtQuotedEnd,
                b'\\' => State::ExtEscape,
                _ if is_qdtext(b) => State::ExtQuoted,
                _ => return None,
            },
            // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
            State::ExtEscape if is_field_byte(b) => State::ExtQuoted,
            State::ExtQuotedEnd => match b {
                _ if ws => State::ExtSemicolon,
                b';' => State::ExtNameStart,
                b'\r' => State::SizeLf,
                _ => return None,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            // Leading zeros are not significant digits: 21 of them still read as 5.
            b"000000000000000000005\r\nhello\r\n0\r\n\r\n",
            // 16 significant digits after many zeros is still a 64-bit size (here 0).
            b"0000000000000000000000000\r\n\r\n",
            // BWS around `;` and `=`, tokens and quoted strings with escapes.
            b"5\t; a = b ;c\t;d=\"x\\\"y; z\" ;e=\"\"\r\nhello\r\n0;last\r\n\r\n",
            b"1;a=b;c\r\nx\r\n0\r\n\r\n",
            // Trailer values may be empty and hold OWS, obs-text and colons.
            b"0\r\nX-A:\r\nX-B: \t v:w \xff \r\n\r\n",
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
            // Whitespace after the size may only lead to an extension (RFC 9112 7.1.1).
            (b"5 \r\nhello\r\n0\r\n\r\n", ChunkedError::Malformed),
            (b"5\t\r\n", ChunkedError::Malformed),
            (b"5 5\r\n", ChunkedError::Malformed),
            // An extension needs a name, a token.
            (b"5;\r\nhello\r\n0\r\n\r\n", ChunkedError::Malformed),
            (b"5;=x\r\n", ChunkedError::Malformed),
            (b"5; \r\n", ChunkedError::Malformed),
            (b"5;a;\r\n", ChunkedError::Malformed),
            (b"5;a b\r\n", ChunkedError::Malformed),
            (b"5;a \r\n", ChunkedError::Malformed),
            (b"5;\"a\"\r\n", ChunkedError::Malformed),
            (b"5;a@b\r\n", ChunkedError::Malformed),
            (b"5;a\xff\r\n", ChunkedError::Malformed),
            // A value is a token or a quoted string, nothing else.
            (b"5;a=\r\n", ChunkedError::Malformed),
            (b"5;a=b c\r\n", ChunkedError::Malformed),
            (b"5;a=b=c\r\n", ChunkedError::Malformed),
            (b"5;a=\"b\r\n", ChunkedError::Malformed),
            (b"5;a=\"b\"c\r\n", ChunkedError::Malformed),
            (b"5;a=\"b\"\"\r\n", ChunkedError::Malformed),
            (b"5;a=\"\x7f\"\r\n", ChunkedError::Malformed),
            (b"5;a=\"\\\x00\"\r\n", ChunkedError::Malformed),
            (b"5;a=b,c\r\n", ChunkedError::Malformed),
            // Trailer lines: a token name, a colon, no obs-fold.
            (b"0\r\nNoColon\r\n\r\n", ChunkedError::Malformed),
            (b"0\r\n: v\r\n\r\n", ChunkedError::Malformed),
            (b"0\r\nA: b\r\n folded\r\n\r\n", ChunkedError::Malformed),
            (b"0\r\n\tA: b\r\n\r\n", ChunkedError::Malformed),
            (b"0\r\nA : b\r\n\r\n", ChunkedError::Malformed),
            (b"0\r\nA(b): c\r\n\r\n", ChunkedError::Malformed),
            (b"0\r\nA: b\rc\r\n\r\n", ChunkedError::Malformed),
            (b"0\r\nA: b\n\r\n", ChunkedError::Malformed),
            (b"65\r\n", ChunkedError::TooLarge),
            (b"40\r\n", ChunkedError::TooLarge),
            // A size that fits 64 bits but exceeds the limit is too large (413)...
            (b"ffffffffffffffff\r\n", ChunkedError::TooLarge),
            (b"000ffffffffffffffff\r\n", ChunkedError::TooLarge),
            // ...one that cannot fit 64 bits is malformed (400): 17 significant digits.
            (b"10000000000000000\r\n", ChunkedError::Malformed),
            (b"ffffffffffffffffff\r\n", ChunkedError::Malformed),
            (b"00010000000000000000\r\n", ChunkedError::Malformed),
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
        // Whitespace before `;` and endless leading zeros count too.
        let mut c = Chunked::new(10, 8);
        assert_eq!(c.feed(b"1            "), Err(ChunkedError::TooLarge));
        let mut c = Chunked::new(10, 8);
        assert_eq!(c.feed(b"0000000000"), Err(ChunkedError::TooLarge));
        // Within the bound, the same input is fine.
        let mut c = Chunked::new(10, 8);
        assert_eq!(c.feed(b"001 ;a\r\nx\r\n0\r\n\r\nGET"), Ok(16));
        assert!(c.is_done());
    }
}
