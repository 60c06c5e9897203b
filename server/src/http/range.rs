//! The `Range` field (RFC 9110 section 14): which part of a representation a request asks
//! for. A pure function of the field value and the representation's length, so that the
//! fuzzer and the property tests can hold it to its one promise: a part it names is always
//! inside the representation.

/// What a `Range` field asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
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
pub fn byte_range(v: &[u8], len: u64) -> ByteRange {
    // The unit is case-insensitive (RFC 9110 section 14.1).
    let set = match v.split_at_checked(b"bytes=".len()) {
        Some((unit, set)) if unit.eq_ignore_ascii_case(b"bytes=") => set,
        _ => return ByteRange::Whole,
    };
    let mut specs = set
        .split(|&b| b == b',')
        .map(|s| s.trim_ascii())
        .filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return ByteRange::Whole;
    };
    let mut halves = spec.splitn(2, |&b| b == b'-');
    let (Some(first), Some(last)) = (halves.next(), halves.next()) else {
        return ByteRange::Whole;
    };
    // Positions past what u64 holds are still valid syntax: they saturate, which reads as
    // "past the end" for a first-pos and "to the end" for a last-pos or a suffix length.
    let number = |d: &[u8]| -> Option<u64> {
        if d.is_empty() {
            return None;
        }
        d.iter().try_fold(0u64, |n, &b| {
            b.is_ascii_digit()
                .then(|| n.saturating_mul(10).saturating_add(u64::from(b - b'0')))
        })
    };
    if first.is_empty() {
        // A suffix: the last `n` bytes. RFC 9110 section 14.1.1: a suffix is satisfiable when
        // `n` is not zero, even for an empty representation; that whole (empty)
        // representation is then the answer, as a 200 since no Content-Range can name it.
        return match number(last) {
            None => ByteRange::Whole,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if len == 0 => ByteRange::Whole,
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

#[cfg(test)]
mod tests {
    use super::*;

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
            ("bytes=-1", 0, Whole),
            ("bytes=-5", 0, Whole),
            ("bytes=-0", 0, Unsatisfiable),
            // Leading zeros and numbers past u64 are valid syntax.
            (
                "bytes=0000000000000000000001-0000000000000000000002",
                1000,
                part(1, 2),
            ),
            ("bytes=99999999999999999999-", 1000, Unsatisfiable),
            ("bytes=0-99999999999999999999", 1000, part(0, 999)),
            ("bytes=-99999999999999999999", 1000, part(0, 999)),
            ("bytes=1-99999999999999999999999999999", 1000, part(1, 999)),
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
            ("bytes=9999999999999999999-", 1000, Unsatisfiable),
        ];
        for (v, len, want) in cases {
            assert_eq!(byte_range(v.as_bytes(), *len), *want, "{v} of {len}");
        }
    }
}
