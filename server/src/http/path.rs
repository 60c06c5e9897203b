//! The one security-critical pure function: request target to safe relative path.
//!
//! Everything that decides which file a request may name is here and nowhere else, so it can
//! be read in one sitting and driven by a table of hostile inputs. It does no I/O: symlinks are
//! the opener's business (`open`, with `RESOLVE_BENEATH`), which checks what it actually opened
//! against the same dot rule ([`dots_allowed`]).

/// Why a target is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a valid origin-form path (bad escape, NUL or control byte, bytes a URI cannot
    /// hold): 400.
    Malformed,
    /// Well-formed but naming something that must not be served or revealed (a `..` above the
    /// root, a dot-file not allowed, an encoded `/` or a backslash): 404, as if it did not
    /// exist.
    Hidden,
}

/// Which names starting with a dot may be served.
#[derive(Debug, Clone, Copy)]
pub struct Dots<'a> {
    /// Every one (`http::Config::serve_dotfiles`).
    pub all: bool,
    /// Allowed prefixes, as `http::Config::dot_allow` holds them: whole segments joined by
    /// `/`, without a leading or trailing `/`, and not percent-encoded (`.well-known`).
    pub allow: &'a [String],
}

impl<'a> Dots<'a> {
    /// The dot rule of a configuration.
    pub fn of(cfg: &'a super::Config) -> Dots<'a> {
        Dots {
            all: cfg.serve_dotfiles,
            allow: &cfg.dot_allow,
        }
    }
}

/// True when every component of `rel` (a relative path as [`resolve`] makes it, or as the
/// opener found it beneath the root) that starts with `.` may be served.
///
/// A dot component is allowed when it lies inside an allowed prefix: an entry of
/// `dots.allow` that equals the first whole components of `rel`, this one included. So with
/// `.well-known` allowed, `.well-known/acme-challenge/t` and `.well-known` itself pass;
/// `.well-known/.secret`, `.well-knownx/t`, `a/.well-known/t` and `.git/config` do not.
pub fn dots_allowed(rel: &[u8], dots: Dots<'_>) -> bool {
    if dots.all {
        return true;
    }
    let mut end: usize = 0;
    for comp in rel.split(|&b| b == b'/') {
        end = end.saturating_add(comp.len());
        if comp.first() == Some(&b'.') && !dots.allow.iter().any(|a| covers(a, rel, end)) {
            return false;
        }
        end = end.saturating_add(1);
    }
    true
}

/// Whether `prefix` is made of the first whole components of `rel` and reaches at least to
/// byte `end` (the end of a component).
fn covers(prefix: &str, rel: &[u8], end: usize) -> bool {
    let p = prefix.as_bytes();
    p.len() >= end && rel.starts_with(p) && matches!(rel.get(p.len()), None | Some(b'/'))
}

/// Turns the path of a request target into a relative path beneath the document root.
///
/// Contract:
/// - Input: the origin-form target (`/a/b?query`); the query, if any, is ignored. It must
///   start with `/` and hold only the bytes RFC 3986 allows in a path (`pchar` and `/`), else
///   [`Refusal::Malformed`]. Raw backslashes, spaces, `#` and non-ASCII bytes are therefore
///   malformed.
/// - Percent-decoding happens exactly once, segment by segment, after splitting on `/`. A `%`
///   not followed by two hex digits is malformed, and so is a decoded NUL or control byte
///   (below 0x20, and 0x7f). A decoded `/` or `\` is hidden: it would change the path's
///   structure after the split.
/// - Decoded bytes need not be UTF-8: a file name on Linux is bytes, and `/caf%E9.txt` names
///   the Latin-1 file `caf\xe9.txt`. Nothing here relies on UTF-8 for safety: an overlong
///   encoding such as `%c0%ae` is the two bytes `c0 ae`, which are neither `.` nor `/`.
/// - Empty segments (`//`) are dropped.
/// - Dot segments are then removed as RFC 3986 section 5.2.4 does, after decoding (so
///   `%2e%2e` is `..`, as nginx has it): `.` is dropped, `..` drops the segment before it.
///   A `..` with nothing left to drop would climb above the root: hidden. A target whose last
///   segment is `.` or `..` names a directory, as one ending with `/` does.
/// - What remains is hidden if one of its components starts with `.` and [`dots_allowed`]
///   does not allow it. A dot-file removed by a later `..` (`/.git/../a`) is not named, so it
///   does not count.
/// - Malformed wins over hidden, so the answer does not depend on which came first.
/// - Output: `out` is cleared and receives the components joined by `/`, with no leading or
///   trailing `/` and never an empty, `.` or `..` component (empty for the root); on a
///   refusal it is left empty. The return value is true when the target names a directory.
pub fn resolve(target: &[u8], dots: Dots<'_>, out: &mut Vec<u8>) -> Result<bool, Refusal> {
    out.clear();
    let result = resolve_into(target, dots, out);
    if result.is_err() {
        out.clear();
    }
    result
}

fn resolve_into(target: &[u8], dots: Dots<'_>, out: &mut Vec<u8>) -> Result<bool, Refusal> {
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if path.first() != Some(&b'/') {
        return Err(Refusal::Malformed);
    }
    if !path.iter().all(|&b| b == b'/' || is_pchar(b)) {
        return Err(Refusal::Malformed);
    }
    let mut hidden = false;
    let mut last_dot = false;
    for segment in path.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        let before = out.len();
        if before > 0 {
            out.push(b'/');
        }
        let start = out.len();
        decode(segment, out)?;
        let name = out.get(start..).unwrap_or_default();
        last_dot = name == b"." || name == b"..";
        if name == b".." {
            // Drop this segment and the one before it (with its separator), if any.
            let parent = out
                .get(..before)
                .and_then(|o| o.iter().rposition(|&b| b == b'/'));
            match parent {
                Some(slash) => out.truncate(slash),
                None if before > 0 => out.clear(),
                None => {
                    hidden = true;
                    out.truncate(before);
                }
            }
        } else if last_dot {
            out.truncate(before);
        } else if name.contains(&b'/') || name.contains(&b'\\') {
            hidden = true;
        }
    }
    if hidden || !dots_allowed(out, dots) {
        return Err(Refusal::Hidden);
    }
    Ok(last_dot || path.ends_with(b"/"))
}

/// `pchar` (RFC 3986): unreserved, pct-encoded (the `%`), sub-delims, `:` and `@`.
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@".contains(&b)
}

/// Appends `rel` (components joined by `/`) to `out` as an absolute path: a `/`, then each
/// component percent-encoded so that it reads back as itself. Every byte but the unreserved
/// ones, the sub-delims, `:` and `@` is encoded, `%` included, so the result holds no `//`
/// (components are never empty), no `?` or `#`, and nothing a client could take for a scheme
/// or an authority.
pub fn encode_absolute(rel: &[u8], out: &mut Vec<u8>) {
    out.push(b'/');
    for &b in rel {
        if b == b'/' || (b != b'%' && is_pchar(b)) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', hex_digit(b >> 4), hex_digit(b & 0xf)]);
        }
    }
}

/// Appends the percent-decoded `segment` to `out`.
fn decode(segment: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
    let mut bytes = segment.iter();
    while let Some(&c) = bytes.next() {
        let b = if c == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.next().and_then(|&h| hex_value(h)),
                bytes.next().and_then(|&l| hex_value(l)),
            ) else {
                return Err(Refusal::Malformed);
            };
            hi << 4 | lo
        } else {
            c
        };
        if b < 0x20 || b == 0x7f {
            return Err(Refusal::Malformed);
        }
        out.push(b);
    }
    Ok(())
}

/// The upper-case hex digit of `n` (below 16).
fn hex_digit(n: u8) -> u8 {
    char::from_digit(u32::from(n), 16).map_or(b'0', |c| c.to_ascii_uppercase() as u8)
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Dots<'static> = Dots {
        all: false,
        allow: &[],
    };

    fn well_known() -> Vec<String> {
        vec![".well-known".to_string()]
    }

    /// The output as text, with bytes that are not UTF-8 shown as `\xNN`.
    fn show(b: &[u8]) -> String {
        b.iter()
            .map(|&c| match c {
                0x20..=0x7e => char::from(c).to_string(),
                _ => format!("\\x{c:02x}"),
            })
            .collect()
    }

    fn run(target: &str, dots: Dots<'_>) -> Result<(String, bool), Refusal> {
        let mut out = b"garbage".to_vec();
        let r = resolve(target.as_bytes(), dots, &mut out);
        if r.is_err() {
            assert!(out.is_empty(), "output left behind for {target:?}");
        }
        r.map(|dir| (show(&out), dir))
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
            ("//example.org", ok("example.org", false)),
            ("/%61%62c", ok("abc", false)),
            ("/a%20b", ok("a b", false)),
            ("/caf%C3%A9", ok("caf\\xc3\\xa9", false)),
            ("/a%3Fb", ok("a?b", false)),
            ("/a%25", ok("a%", false)),
            ("/%2541", ok("%41", false)),
            ("/a.b.c", ok("a.b.c", false)),
            ("/a..b", ok("a..b", false)),
            (
                "/~user/x;y=z:@!$&'()*+,",
                ok("~user/x;y=z:@!$&'()*+,", false),
            ),
            // Dot segments are removed (RFC 3986 section 5.2.4), encoded ones too.
            ("/a/./b", ok("a/b", false)),
            ("/a/../b", ok("b", false)),
            ("/a/b/../../c", ok("c", false)),
            ("/a/b/../c/./d", ok("a/c/d", false)),
            ("/./x", ok("x", false)),
            ("/%2e/x", ok("x", false)),
            ("/a/%2e%2e/b", ok("b", false)),
            ("/a/%2E%2e/b", ok("b", false)),
            ("/a/.%2e/b", ok("b", false)),
            ("/a/%2e./b", ok("b", false)),
            ("/a//..//b", ok("b", false)),
            ("/a/b/..", ok("a", true)),
            ("/a/b/.", ok("a/b", true)),
            ("/a/..", ok("", true)),
            ("/a/../", ok("", true)),
            ("/.", ok("", true)),
            ("/a/b/%2e%2e?q", ok("a", true)),
            // A dot-file named and then left is not named.
            ("/.git/../index.html", ok("index.html", false)),
            // Climbing above the root, plain or encoded in any case.
            ("/..", Err(Hidden)),
            ("/../etc/passwd", Err(Hidden)),
            ("/a/../../etc/passwd", Err(Hidden)),
            ("/a/b/../../../x", Err(Hidden)),
            ("/a/../../a", Err(Hidden)),
            ("/../a/..", Err(Hidden)),
            ("/%2e%2e/etc/passwd", Err(Hidden)),
            ("/%2E%2E/etc/passwd", Err(Hidden)),
            ("/.%2e/etc/passwd", Err(Hidden)),
            ("/%2e./x", Err(Hidden)),
            ("/./../x", Err(Hidden)),
            ("//../x", Err(Hidden)),
            // Encoded separators change structure after the split, even when popped later.
            ("/..%2fetc%2fpasswd", Err(Hidden)),
            ("/a%2F..%2F..%2Fetc", Err(Hidden)),
            ("/a%2fb", Err(Hidden)),
            ("/a%2fb/..", Err(Hidden)),
            ("/..%5c..%5cwindows", Err(Hidden)),
            ("/a%5Cb", Err(Hidden)),
            // Dot-files, hidden whatever their depth, unless allowed.
            ("/.git/config", Err(Hidden)),
            ("/a/.env", Err(Hidden)),
            ("/%2egit/config", Err(Hidden)),
            ("/.well-known/x", Err(Hidden)),
            ("/a/b/../.env", Err(Hidden)),
            ("/.git/./config", Err(Hidden)),
            ("/...", Err(Hidden)),
            ("/a/..c.", Err(Hidden)),
            // Not UTF-8: bytes, served as such (Latin-1 names, say). Overlong encodings of
            // `.`, `/` and `\` are just bytes that are none of them.
            ("/caf%E9.txt", ok("caf\\xe9.txt", false)),
            ("/%ff", ok("\\xff", false)),
            ("/%C3", ok("\\xc3", false)),
            ("/%ed%a0%80", ok("\\xed\\xa0\\x80", false)),
            (
                "/%c0%ae%c0%ae/etc/passwd",
                ok("\\xc0\\xae\\xc0\\xae/etc/passwd", false),
            ),
            ("/%c0%af", ok("\\xc0\\xaf", false)),
            ("/%c1%9c", ok("\\xc1\\x9c", false)),
            ("/%e0%80%ae", ok("\\xe0\\x80\\xae", false)),
            ("/%f0%80%80%ae", ok("\\xf0\\x80\\x80\\xae", false)),
            ("/a/%c0%ae%c0%ae/b", ok("a/\\xc0\\xae\\xc0\\xae/b", false)),
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
            ("/a%0d%0aX:y", Err(Malformed)),
            ("/a%1f", Err(Malformed)),
            ("/a%7f", Err(Malformed)),
            ("/a%", Err(Malformed)),
            ("/a%2", Err(Malformed)),
            ("/a%zz", Err(Malformed)),
            ("/a%+1", Err(Malformed)),
            ("/a%%41", Err(Malformed)),
            ("/a%2%41", Err(Malformed)),
            // Malformed wins over hidden, whichever comes first.
            ("/../%zz", Err(Malformed)),
            ("/.git/%00", Err(Malformed)),
            ("/a%2fb/%0a", Err(Malformed)),
        ];
        for (target, want) in cases {
            assert_eq!(&run(target, NONE), want, "{target:?}");
        }
    }

    #[test]
    fn allowed_dot_prefixes() {
        let allow = well_known();
        let dots = Dots {
            all: false,
            allow: &allow,
        };
        let ok = |p: &str, dir: bool| Ok((p.to_string(), dir));
        for (target, want) in [
            (
                "/.well-known/acme-challenge/tok",
                ok(".well-known/acme-challenge/tok", false),
            ),
            ("/.well-known/", ok(".well-known", true)),
            ("/.well-known", ok(".well-known", false)),
            ("/%2ewell-known/x", ok(".well-known/x", false)),
            ("/a/../.well-known/x", ok(".well-known/x", false)),
            ("/.well-known/.secret", Err(Refusal::Hidden)),
            ("/.well-known/a/.git/x", Err(Refusal::Hidden)),
            ("/.well-knownx/t", Err(Refusal::Hidden)),
            ("/.well-know/t", Err(Refusal::Hidden)),
            ("/a/.well-known/t", Err(Refusal::Hidden)),
            ("/.git/config", Err(Refusal::Hidden)),
            ("/.env", Err(Refusal::Hidden)),
            ("/.well-known/../.env", Err(Refusal::Hidden)),
            ("/../.well-known/x", Err(Refusal::Hidden)),
        ] {
            assert_eq!(run(target, dots), want, "{target}");
        }
    }

    #[test]
    fn dots_allowed_matches_whole_leading_segments() {
        let allow = vec![".well-known".to_string(), "a/.b".to_string()];
        let dots = Dots {
            all: false,
            allow: &allow,
        };
        for (rel, want) in [
            ("", true),
            ("index.html", true),
            ("a.b/c", true),
            (".well-known", true),
            (".well-known/x/y", true),
            (".well-known/.x", false),
            (".well-knownx", false),
            (".well", false),
            ("a/.b", true),
            ("a/.b/c", true),
            ("a/.bc", false),
            ("a/.c", false),
            (".a/.b", false),
            ("x/a/.b", false),
            (".git/config", false),
            ("sub/.git", false),
        ] {
            assert_eq!(dots_allowed(rel.as_bytes(), dots), want, "{rel}");
        }
        let all = Dots {
            all: true,
            allow: &[],
        };
        assert!(dots_allowed(b".git/.env", all));
        assert!(!dots_allowed(b".well-known/x", NONE));
    }

    #[test]
    fn dotfiles_allowed_still_never_climb() {
        let all = Dots {
            all: true,
            allow: &[],
        };
        assert_eq!(
            run("/.well-known/x", all),
            Ok((".well-known/x".into(), false))
        );
        assert_eq!(run("/a/.env", all), Ok(("a/.env".into(), false)));
        assert_eq!(run("/a/%2e%2e/.env", all), Ok((".env".into(), false)));
        for t in ["/..", "/a/../..", "/%2e%2e/x", "/..%2f", "/a%2f.."] {
            assert_eq!(run(t, all), Err(Refusal::Hidden), "{t}");
        }
    }

    #[test]
    fn encode_absolute_round_trips_and_never_leaves_the_origin() {
        for (rel, want) in [
            (&b""[..], "/"),
            (b"example.org", "/example.org"),
            (b"a/b", "/a/b"),
            (b"a b/c%d", "/a%20b/c%25d"),
            (b"caf\xc3\xa9", "/caf%C3%A9"),
            (b"caf\xe9", "/caf%E9"),
            (b"q?x#y", "/q%3Fx%23y"),
            (b"~u;x=1:@!$&'()*+,-._", "/~u;x=1:@!$&'()*+,-._"),
        ] {
            let mut out = Vec::new();
            encode_absolute(rel, &mut out);
            assert_eq!(show(&out), want, "{}", show(rel));
            // What a client sends back resolves to the same path.
            let mut back = Vec::new();
            assert!(resolve(&out, NONE, &mut back).is_ok(), "{want}");
            assert_eq!(back, rel, "{want}");
        }
        // A backslash is encoded too, though no resolved path holds one.
        let mut out = Vec::new();
        encode_absolute(b"a\\b", &mut out);
        assert_eq!(out, b"/a%5Cb");
    }

    #[test]
    fn output_never_has_dot_components() {
        // Every short combination of a hostile alphabet: whatever is accepted has no empty,
        // `.` or `..` component and no NUL, control byte or backslash.
        let alphabet = [
            "/", ".", "%2e", "%2E", "%2f", "%5c", "a", "%00", "%", "..", "\\", "%c0%ae",
        ];
        let mut out = Vec::new();
        let all = Dots {
            all: true,
            allow: &[],
        };
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    for d in alphabet {
                        let t = format!("/{a}{b}{c}{d}");
                        if resolve(t.as_bytes(), all, &mut out).is_ok() {
                            let s = show(&out);
                            assert!(!out.starts_with(b"/") && !out.ends_with(b"/"), "{t} -> {s}");
                            assert!(
                                !out.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\'),
                                "{t} -> {s}"
                            );
                            if !out.is_empty() {
                                for comp in out.split(|&b| b == b'/') {
                                    assert!(!comp.is_empty(), "{t} -> {s}");
                                    assert!(comp != b"." && comp != b"..", "{t} -> {s}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
