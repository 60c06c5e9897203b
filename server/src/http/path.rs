//! The one security-critical pure function: request target to safe relative path.
//!
//! Everything that decides which file a request may name is here and nowhere else, so it can
//! be read in one sitting and driven by a table of hostile inputs. It does no I/O: symlinks are
//! the opener's business (`open`, with `RESOLVE_BENEATH`).

/// Why a target is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a valid origin-form path (bad escape, NUL or control byte, bytes a URI cannot hold,
    /// not UTF-8 once decoded): 400.
    Malformed,
    /// Well-formed but naming something that must not be served or revealed (`.` or `..`
    /// segments, dot-files, an encoded `/` or a backslash): 404, as if it did not exist.
    Hidden,
}

/// Turns the path of a request target into a relative path beneath the document root.
///
/// Contract:
/// - Input: the origin-form target (`/a/b?query`); the query, if any, is ignored. It must
///   start with `/` and hold only the bytes RFC 3986 allows in a path (`pchar` and `/`), else
///   [`Refusal::Malformed`]. Raw backslashes, spaces, `#` and non-ASCII bytes are therefore
///   malformed.
/// - Percent-decoding happens exactly once, segment by segment, after splitting on `/`. A `%`
///   not followed by two hex digits is malformed, and so is a decoded NUL or control byte.
///   A decoded `/` or `\` is hidden: it would change the path's structure after the split.
/// - The decoded path must be valid UTF-8 (which rejects overlong encodings such as
///   `%c0%ae`), else malformed.
/// - A segment that decodes to `.` or `..` is hidden: nothing is resolved, so nothing can
///   climb. A segment starting with `.` is hidden unless `dotfiles` is true.
/// - Empty segments (`//`) are dropped.
/// - Output: `out` is cleared and receives the segments joined by `/`, with no leading or
///   trailing `/` and never a `.` or `..` component (empty for the root). The return value is
///   true when the target names a directory (its path ends with `/`).
pub fn resolve(target: &[u8], dotfiles: bool, out: &mut Vec<u8>) -> Result<bool, Refusal> {
    out.clear();
    let result = resolve_into(target, dotfiles, out);
    if result.is_err() {
        out.clear();
    }
    result
}

fn resolve_into(target: &[u8], dotfiles: bool, out: &mut Vec<u8>) -> Result<bool, Refusal> {
    let path = match target.iter().position(|&b| b == b'?') {
        Some(q) => &target[..q],
        None => target,
    };
    if path.first() != Some(&b'/') {
        return Err(Refusal::Malformed);
    }
    if !path.iter().all(|&b| b == b'/' || is_pchar(b)) {
        return Err(Refusal::Malformed);
    }
    let mut hidden = false;
    for segment in path.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        if !out.is_empty() {
            out.push(b'/');
        }
        let start = out.len();
        decode(segment, out)?;
        let name = &out[start..];
        let climbs = name == b"." || name == b"..";
        let restructures = name.contains(&b'/') || name.contains(&b'\\');
        let dotfile = name[0] == b'.' && !dotfiles;
        hidden |= climbs || restructures || dotfile;
    }
    // Malformed wins over hidden, so the answer does not depend on which came first.
    if std::str::from_utf8(out).is_err() {
        return Err(Refusal::Malformed);
    }
    if hidden {
        return Err(Refusal::Hidden);
    }
    Ok(path.ends_with(b"/"))
}

/// `pchar` (RFC 3986): unreserved, pct-encoded (the `%`), sub-delims, `:` and `@`.
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@".contains(&b)
}

/// Appends the percent-decoded `segment` to `out`.
fn decode(segment: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
    let mut i = 0;
    while i < segment.len() {
        let b = if segment[i] == b'%' {
            let hex = segment.get(i + 1..i + 3).ok_or(Refusal::Malformed)?;
            let (Some(hi), Some(lo)) = (hex_value(hex[0]), hex_value(hex[1])) else {
                return Err(Refusal::Malformed);
            };
            i += 3;
            hi << 4 | lo
        } else {
            i += 1;
            segment[i - 1]
        };
        if b < 0x20 || b == 0x7f {
            return Err(Refusal::Malformed);
        }
        out.push(b);
    }
    Ok(())
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, dotfiles: bool) -> Result<(String, bool), Refusal> {
        let mut out = b"garbage".to_vec();
        let r = resolve(target.as_bytes(), dotfiles, &mut out);
        if r.is_err() {
            assert!(out.is_empty(), "output left behind for {target:?}");
        }
        r.map(|dir| (String::from_utf8(out).unwrap(), dir))
    }

    #[test]
    fn table() {
        use Refusal::*;
        let ok = |p: &str, dir: bool| Ok((p.to_string(), dir));
        type Case = (&'static str, Result<(String, bool), Refusal>);
        let cases: &[Case] = &[
            ("/", ok("", true)),
            ("/index.html", ok("index.html", false)),
            ("/a/b/c.css", ok("a/b/c.css", false)),
            ("/a/", ok("a", true)),
            ("/a?x=../../etc/passwd", ok("a", false)),
            ("/?", ok("", true)),
            ("//a//b//", ok("a/b", true)),
            ("/%61%62c", ok("abc", false)),
            ("/a%20b", ok("a b", false)),
            ("/caf%C3%A9", ok("café", false)),
            ("/a%3Fb", ok("a?b", false)),
            ("/a%25", ok("a%", false)),
            ("/%2541", ok("%41", false)),
            ("/a.b.c", ok("a.b.c", false)),
            ("/a..b", ok("a..b", false)),
            (
                "/~user/x;y=z:@!$&'()*+,",
                ok("~user/x;y=z:@!$&'()*+,", false),
            ),
            // Climbing, plain or encoded in any case.
            ("/..", Err(Hidden)),
            ("/../etc/passwd", Err(Hidden)),
            ("/a/../../etc/passwd", Err(Hidden)),
            ("/a/..", Err(Hidden)),
            ("/a/../", Err(Hidden)),
            ("/%2e%2e/etc/passwd", Err(Hidden)),
            ("/%2E%2E/etc/passwd", Err(Hidden)),
            ("/.%2e/etc/passwd", Err(Hidden)),
            ("/%2e./x", Err(Hidden)),
            ("/./x", Err(Hidden)),
            ("/%2e/x", Err(Hidden)),
            ("/.", Err(Hidden)),
            // Encoded separators change structure after the split.
            ("/..%2fetc%2fpasswd", Err(Hidden)),
            ("/a%2F..%2F..%2Fetc", Err(Hidden)),
            ("/a%2fb", Err(Hidden)),
            ("/..%5c..%5cwindows", Err(Hidden)),
            ("/a%5Cb", Err(Hidden)),
            // Dot-files, hidden whatever their depth.
            ("/.git/config", Err(Hidden)),
            ("/a/.env", Err(Hidden)),
            ("/%2egit/config", Err(Hidden)),
            ("/.well-known/x", Err(Hidden)),
            // Malformed.
            ("", Err(Malformed)),
            ("a", Err(Malformed)),
            ("*", Err(Malformed)),
            ("?/a", Err(Malformed)),
            ("http://a/b", Err(Malformed)),
            ("/a\\..\\b", Err(Malformed)),
            ("/a\\b", Err(Malformed)),
            ("/a b", Err(Malformed)),
            ("/a#b", Err(Malformed)),
            ("/a\"b", Err(Malformed)),
            ("/a<b>", Err(Malformed)),
            ("/a{b}|^`", Err(Malformed)),
            ("/caf\u{e9}", Err(Malformed)),
            ("/a\0b", Err(Malformed)),
            ("/a%00b", Err(Malformed)),
            ("/a%00", Err(Malformed)),
            ("/a%0a", Err(Malformed)),
            ("/a%0D%0AX: y", Err(Malformed)),
            ("/a%7f", Err(Malformed)),
            ("/a%", Err(Malformed)),
            ("/a%2", Err(Malformed)),
            ("/a%zz", Err(Malformed)),
            ("/a%+1", Err(Malformed)),
            ("/a%%41", Err(Malformed)),
            // Overlong UTF-8 for '.', '/' and '\', and other invalid UTF-8.
            ("/%c0%ae%c0%ae/etc/passwd", Err(Malformed)),
            ("/%c0%af", Err(Malformed)),
            ("/%c1%9c", Err(Malformed)),
            ("/%e0%80%ae", Err(Malformed)),
            ("/%f0%80%80%ae", Err(Malformed)),
            ("/%ff", Err(Malformed)),
            ("/%ed%a0%80", Err(Malformed)),
            ("/%C3", Err(Malformed)),
            // Malformed wins over hidden, whichever comes first.
            ("/../%zz", Err(Malformed)),
            ("/.git/%ff", Err(Malformed)),
        ];
        for (target, want) in cases {
            assert_eq!(&run(target, false), want, "{target:?}");
        }
    }

    #[test]
    fn dotfiles_allowed_still_never_climb() {
        assert_eq!(
            run("/.well-known/x", true),
            Ok((".well-known/x".into(), false))
        );
        assert_eq!(run("/a/.env", true), Ok(("a/.env".into(), false)));
        for t in ["/..", "/.", "/a/../b", "/%2e%2e/x", "/..%2f"] {
            assert_eq!(run(t, true), Err(Refusal::Hidden), "{t}");
        }
    }

    #[test]
    fn output_never_has_dot_components() {
        // Every byte pair from a small alphabet, in every short combination: whatever is
        // accepted has no empty, `.` or `..` component and no NUL or backslash.
        let alphabet = ["/", ".", "%2e", "%2f", "%5c", "a", "%00", "%", "..", "\\"];
        let mut out = Vec::new();
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    for d in alphabet {
                        let t = format!("/{a}{b}{c}{d}");
                        if resolve(t.as_bytes(), true, &mut out).is_ok() {
                            let s = std::str::from_utf8(&out).unwrap();
                            assert!(!s.starts_with('/') && !s.ends_with('/'), "{t} -> {s}");
                            assert!(!s.contains('\0') && !s.contains('\\'), "{t} -> {s}");
                            for comp in s.split('/') {
                                if !s.is_empty() {
                                    assert!(!comp.is_empty(), "{t} -> {s}");
                                }
                                assert!(comp != "." && comp != "..", "{t} -> {s}");
                            }
                        }
                    }
                }
            }
        }
    }
}
