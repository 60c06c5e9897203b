//! Target-to-path resolution on arbitrary bytes: never a panic; whatever it accepts is a
//! relative path with no empty, `.` or `..` component, no NUL and no backslash (it cannot
//! name anything above the root), holds no dot component the rule forbids, and re-encodes
//! (the redirect's `Location`) into an absolute path that resolves back to itself.
#![no_main]

use forkd::http::path::{dots_allowed, encode_absolute, resolve, Dots};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, target)) = data.split_first() else {
        return;
    };
    let well_known = [".well-known".to_string()];
    let dots = Dots {
        all: flags & 1 == 1,
        allow: if flags & 2 == 2 { &well_known } else { &[] },
    };
    let mut out = Vec::new();
    let Ok(dir) = resolve(target, dots, &mut out) else {
        assert!(out.is_empty());
        return;
    };
    assert!(!out.starts_with(b"/") && !out.ends_with(b"/"), "{out:?}");
    assert!(!out.contains(&0) && !out.contains(&b'\\'), "{out:?}");
    if !out.is_empty() {
        for comp in out.split(|&b| b == b'/') {
            assert!(!comp.is_empty() && comp != b"." && comp != b"..", "{out:?}");
        }
    }
    assert!(
        dots.all || dots_allowed(&out, dots),
        "{out:?} breaks the dot rule"
    );
    let mut location = Vec::new();
    encode_absolute(&out, &mut location);
    assert!(
        location.starts_with(b"/") && !location.starts_with(b"//"),
        "{location:?}"
    );
    let mut again = Vec::new();
    assert_eq!(
        resolve(&location, dots, &mut again),
        Ok(dir && out.is_empty())
    );
    assert_eq!(again, out, "{location:?}");
});
