//! The Range field on arbitrary values and lengths: never a panic, and a part it names is
//! always inside the representation.
#![no_main]

use forkd::http::range::{byte_range, ByteRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (len, value) = data.split_at(8);
    let len = u64::from_le_bytes(len.try_into().unwrap()) >> (len[0] % 64);
    if let ByteRange::Part { first, last } = byte_range(value, len) {
        assert!(first <= last && last < len, "{first}-{last} of {len}");
    }
});
