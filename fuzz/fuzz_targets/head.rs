//! The request-head parser on arbitrary bytes: never a panic, every range it returns lies
//! inside the input, and a head is framed exactly: cut right after it, the same bytes parse to
//! the same head, so what follows it (a pipelined request) starts where `len` says.
#![no_main]

use forkd::http::parse::{parse, Head};
use forkd::http::Config;
use libfuzzer_sys::fuzz_target;

fn ranges(h: &Head) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    [h.line.clone(), h.target.clone(), h.path.clone()]
        .into_iter()
        .chain(
            [
                &h.range,
                &h.if_range,
                &h.if_unmodified_since,
                &h.if_modified_since,
                &h.referer,
                &h.user_agent,
                &h.host,
            ]
            .into_iter()
            .flatten()
            .cloned(),
        )
}

fuzz_target!(|data: &[u8]| {
    let cfg = Config::default();
    if let Ok(Some(head)) = parse(data, &cfg) {
        assert!(head.len > 0 && head.len <= data.len());
        for r in ranges(&head) {
            assert!(
                r.start <= r.end && r.end <= head.len,
                "{r:?} outside {}",
                head.len
            );
        }
        let again = parse(&data[..head.len], &cfg);
        assert_eq!(again, Ok(Some(head)));
    }
});
