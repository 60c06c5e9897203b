//! Conditional requests (RFC 9110 section 13): the preconditions a request carries weighed
//! against the representation's validators, and `If-Range`. Pure functions of field values,
//! an entity tag and a modification time, so that table tests, property tests and the fuzzer
//! reach them without a socket.

use std::time::{SystemTime, UNIX_EPOCH};

/// The preconditions a request carries (RFC 9110 section 13.1), as received. `If-Match` and
/// `If-None-Match` hold every line sent (empty: the field is absent); their lines together
/// form one list (RFC 9110 section 5.3). A date field is the first line only: it is a single
/// value, and a list of dates is not a date.
#[derive(Debug, Default, Clone, Copy)]
pub struct Preconditions<'a> {
    pub if_match: &'a [&'a [u8]],
    pub if_unmodified_since: Option<&'a [u8]>,
    pub if_none_match: &'a [&'a [u8]],
    pub if_modified_since: Option<&'a [u8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
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
pub fn evaluate(p: &Preconditions<'_>, etag: &[u8], modified: Option<SystemTime>) -> Verdict {
    let date = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok())
    };
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if !p.if_match.is_empty() {
        // Strong comparison: a weak tag never matches.
        if !tags(p.if_match).any(|t| t == b"*" || t == etag) {
            return Verdict::Failed;
        }
    } else if let (Some(since), Some(m)) = (p.if_unmodified_since.and_then(date), modified) {
        if secs(m) > secs(since) {
            return Verdict::Failed;
        }
    }
    if !p.if_none_match.is_empty() {
        if tags(p.if_none_match).any(|t| t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == etag) {
            return Verdict::NotModified;
        }
    } else if let (Some(since), Some(m)) = (p.if_modified_since.and_then(date), modified) {
        if secs(m) <= secs(since) {
            return Verdict::NotModified;
        }
    }
    Verdict::Proceed
}

/// The entity tags of an `If-Match` or `If-None-Match` field, over all of its lines (one
/// list, RFC 9110 section 5.3), in order.
pub fn tags<'a>(lines: &'a [&'a [u8]]) -> impl Iterator<Item = &'a [u8]> + 'a {
    lines.iter().flat_map(|line| Tags(line))
}

/// The elements of one list line. An entity tag may hold a comma (`etagc`, RFC 9110 section
/// 8.8.3), so a comma splits only outside quotes: `"a,b"` is one tag, not two fragments.
struct Tags<'a>(&'a [u8]);

impl<'a> Iterator for Tags<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self
            .0
            .iter()
            .position(|&b| !matches!(b, b' ' | b'\t' | b','))?;
        let rest = self.0.get(start..)?;
        let mut quoted = false;
        let end = rest
            .iter()
            .position(|&b| {
                quoted ^= b == b'"';
                b == b',' && !quoted
            })
            .unwrap_or(rest.len());
        let (element, tail) = rest.split_at_checked(end)?;
        self.0 = tail;
        // Starts with a byte that is not whitespace, so it is never empty once trimmed.
        Some(element.trim_ascii_end())
    }
}

/// `If-Range` (RFC 9110 section 13.1.5): an entity tag must match strongly, a date exactly;
/// absent, the range stands.
pub fn if_range_holds(v: Option<&[u8]>, etag: &[u8], modified: Option<SystemTime>) -> bool {
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
                    if_none_match: &[&b"\"abc\""[..]],
                    ..none
                },
                Verdict::NotModified,
            ),
            (
                Preconditions {
                    if_none_match: &[&b"W/\"abc\""[..]],
                    ..none
                },
                Verdict::NotModified,
            ),
            (
                Preconditions {
                    if_none_match: &[&b"\"x\", \"abc\""[..]],
                    ..none
                },
                Verdict::NotModified,
            ),
            (
                Preconditions {
                    if_none_match: &[&b"*"[..]],
                    ..none
                },
                Verdict::NotModified,
            ),
            (
                Preconditions {
                    if_none_match: &[&b"\"x\""[..]],
                    ..none
                },
                Verdict::Proceed,
            ),
            (
                Preconditions {
                    if_none_match: &[&b"abc"[..]],
                    ..none
                },
                Verdict::Proceed,
            ),
            // If-None-Match decides when present, whatever If-Modified-Since says.
            (
                Preconditions {
                    if_none_match: &[&b"\"x\""[..]],
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
                    if_match: &[&b"\"abc\""[..]],
                    ..none
                },
                Verdict::Proceed,
            ),
            (
                Preconditions {
                    if_match: &[&b"*"[..]],
                    ..none
                },
                Verdict::Proceed,
            ),
            (
                Preconditions {
                    if_match: &[&b"W/\"abc\""[..]],
                    ..none
                },
                Verdict::Failed,
            ),
            (
                Preconditions {
                    if_match: &[&b"\"x\""[..]],
                    ..none
                },
                Verdict::Failed,
            ),
            (
                Preconditions {
                    if_match: &[&b"\"x\""[..]],
                    if_none_match: &[&b"*"[..]],
                    ..none
                },
                Verdict::Failed,
            ),
            (
                Preconditions {
                    if_match: &[&b"\"abc\""[..]],
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
        // Repeated lines form one list (RFC 9110 section 5.3): a match on any line counts,
        // and a later line is never ignored.
        let lines: &[(Preconditions, Verdict)] = &[
            (
                Preconditions {
                    if_none_match: &[b"\"x\"", b"\"abc\""],
                    ..none
                },
                Verdict::NotModified,
            ),
            (
                Preconditions {
                    if_none_match: &[b"\"x\"", b"\"y\", W/\"abc\""],
                    ..none
                },
                Verdict::NotModified,
            ),
            (
                Preconditions {
                    if_none_match: &[b"\"x\"", b"\"y\""],
                    if_modified_since: Some(date),
                    ..none
                },
                Verdict::Proceed,
            ),
            (
                Preconditions {
                    if_match: &[b"\"x\"", b"\"abc\""],
                    ..none
                },
                Verdict::Proceed,
            ),
            (
                Preconditions {
                    if_match: &[b"\"x\"", b"*"],
                    ..none
                },
                Verdict::Proceed,
            ),
            (
                Preconditions {
                    if_match: &[b"\"x\"", b"W/\"abc\""],
                    ..none
                },
                Verdict::Failed,
            ),
            (
                Preconditions {
                    if_match: &[b"\"abc\"", b"\"x\""],
                    if_none_match: &[b"\"x\"", b"\"abc\""],
                    ..none
                },
                Verdict::NotModified,
            ),
            // A present but empty line names no tag: If-Match fails, If-None-Match holds.
            (
                Preconditions {
                    if_match: &[b""],
                    ..none
                },
                Verdict::Failed,
            ),
            (
                Preconditions {
                    if_none_match: &[b""],
                    if_modified_since: Some(date),
                    ..none
                },
                Verdict::Proceed,
            ),
        ];
        for (p, want) in lines {
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
    fn tags_table() {
        type Lines<'a> = &'a [&'a [u8]];
        let cases: &[(Lines, Lines)] = &[
            (&[], &[]),
            (&[b""], &[]),
            (&[b" , ,"], &[]),
            (&[b"\"a\""], &[b"\"a\""]),
            (&[b"\"a\",W/\"b\" ,\t*"], &[b"\"a\"", b"W/\"b\"", b"*"]),
            (&[b"\"a\"", b" \"b\" "], &[b"\"a\"", b"\"b\""]),
            // A comma inside quotes belongs to the tag (`etagc` includes it).
            (&[b"\"a,b\", \"c\""], &[b"\"a,b\"", b"\"c\""]),
            (&[b"W/\"a, b\""], &[b"W/\"a, b\""]),
            // Garbage stays one element per comma, never matching a real tag.
            (&[b"abc, \"d"], &[b"abc", b"\"d"]),
        ];
        for (lines, want) in cases {
            assert_eq!(tags(lines).collect::<Vec<_>>(), *want, "{lines:?}");
        }
        // Our tag never matches a fragment of a longer tag that holds it after a comma.
        let p = Preconditions {
            if_none_match: &[b"\"x,\"abc\"\""],
            ..Preconditions::default()
        };
        assert_eq!(evaluate(&p, b"\"abc\"", None), Verdict::Proceed);
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
}
