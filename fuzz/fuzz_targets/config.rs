//! The TOML configuration on arbitrary text: an `Ok` or a one-line error that names the file,
//! never a panic.
#![no_main]

use std::path::Path;

use forkd::config::{from_text, Options};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = from_text(Path::new("fuzz.toml"), text, &Options::default()) {
        assert!(
            !e.0.contains('\n'),
            "an error over several lines: {:?}",
            e.0
        );
    }
});
