//! Target-to-path resolution on arbitrary bytes: never a panic, and whatever it accepts is a
//! relative path with no empty, `.` or `..` component, no NUL and no backslash: it cannot
//! name anything above the root.
#![no_main]

use forkd::http::path::resolve;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, target)) = data.split_first() else {
        return;
    };
    let mut out = Vec::new();
    if resolve(target, flags & 1 == 1, &mut out).is_ok() {
        assert!(!out.starts_with(b"/") && !out.ends_with(b"/"), "{out:?}");
        assert!(!out.contains(&0) && !out.contains(&b'\\'), "{out:?}");
        if !out.is_empty() {
            for comp in out.split(|&b| b == b'/') {
                assert!(!comp.is_empty() && comp != b"." && comp != b"..", "{out:?}");
            }
        }
    } else {
        assert!(out.is_empty());
    }
});
