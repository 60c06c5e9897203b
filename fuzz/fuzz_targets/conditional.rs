//! Conditional evaluation on arbitrary field values: never a panic, and the verdicts keep the
//! RFC 9110 section 13.2.2 order: an `If-Match` that lists our tag never fails the request,
//! one that lists neither it nor `*` always does, and `If-None-Match: *` on an existing
//! representation is never a plain 200.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use forkd::http::conditional::{evaluate, if_range_holds, Preconditions, Verdict};
use libfuzzer_sys::fuzz_target;

/// Field values hold no CR or LF (the parser refuses them): only SP and HTAB are trimmed.
fn trim_ows(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let (head, rest) = data.split_at(9);
    let secs = u64::from_le_bytes(head[1..9].try_into().unwrap()) % 253_402_300_800;
    let modified = (head[0] & 1 == 1).then(|| UNIX_EPOCH + Duration::from_secs(secs));
    let mut parts = rest.split(|&b| b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let etag = b"\"5-a-1\"";
    let (im, ius, inm, ims, ir) = (next(), next(), next(), next(), next());
    let im_lines = [im];
    let inm_lines = [inm];
    let flag = |bit: u8| head[0] & bit != 0;
    let p = Preconditions {
        if_match: if flag(2) { &im_lines } else { &[] },
        if_unmodified_since: flag(4).then_some(ius),
        if_none_match: if flag(8) { &inm_lines } else { &[] },
        if_modified_since: flag(16).then_some(ims),
    };
    let verdict = evaluate(&p, etag, modified);
    let _ = if_range_holds(flag(32).then_some(ir), etag, modified);
    let mentions = |v: &[u8], t: &[u8]| v.windows(t.len()).any(|w| w == t);
    if flag(2) && !mentions(im, b"\"") && !mentions(im, b"*") {
        assert_eq!(
            verdict,
            Verdict::Failed,
            "If-Match without a tag or *: {im:?}"
        );
    }
    if flag(8) && trim_ows(inm) == b"*" && verdict != Verdict::Failed {
        assert_eq!(verdict, Verdict::NotModified);
    }
});
