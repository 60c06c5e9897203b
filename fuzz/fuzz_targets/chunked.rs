//! The chunked-body decoder on arbitrary bytes, fed whole and fed in pieces: never a panic,
//! never a byte consumed past the end of the body, and the same verdict and the same end
//! however the bytes arrive (a keep-alive stream must not desync on how TCP split it).
#![no_main]

use forkd::http::chunked::Chunked;
use libfuzzer_sys::fuzz_target;

/// Feeds `body` in pieces cut at `cuts`; returns the bytes of the body, or None if refused.
fn feed(body: &[u8], cuts: &[u8]) -> (Option<usize>, bool) {
    let mut c = Chunked::new(1 << 20, 8 << 10);
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&u8::MAX)) {
        let end = if cut == u8::MAX {
            body.len()
        } else {
            (at + cut as usize).min(body.len())
        };
        let piece = &body[at..end];
        match c.feed(piece) {
            Err(_) => return (None, false),
            Ok(used) => {
                assert!(used <= piece.len());
                if c.is_done() {
                    return (Some(at + used), true);
                }
                assert_eq!(used, piece.len(), "bytes left over while not done");
            }
        }
        at = end;
        if at == body.len() {
            break;
        }
    }
    (Some(at), false)
}

fuzz_target!(|data: &[u8]| {
    let (cuts, body) = match data.split_first() {
        Some((&n, rest)) => rest.split_at((n as usize % 8).min(rest.len())),
        None => return,
    };
    let whole = feed(body, &[]);
    let pieces = feed(body, cuts);
    if whole.0.is_some() && pieces.0.is_some() {
        assert_eq!(whole, pieces, "cut at {cuts:?}");
    } else if whole.1 {
        // A body that ends in the whole input ends at the same byte however it is cut, unless
        // a refusal came first in the pieces, which cannot be: the same bytes are seen.
        assert_eq!(whole, pieces, "cut at {cuts:?}");
    }
});
