//! Crash hooks for the integration tests, compiled only with the `test-hooks` feature (which
//! the root package enables for `cargo test` builds alone; a release build has none of this).
//!
//! `FORKD_TEST_PANIC_PATH=/crash` makes a request whose target is exactly `/crash` panic inside
//! the request path, as a bug would; `FORKD_TEST_ABORT_PATH=/abort` makes one abort (SIGABRT),
//! as a failed assertion in C code or a double free would. The variables are read once, in the
//! master (`Site::prepare`), so a child pays a comparison per request and no lookup.

use super::parse::Head;

#[cfg(feature = "test-hooks")]
mod on {
    use std::sync::OnceLock;

    use super::Head;

    struct Hooks {
        panic: Option<Vec<u8>>,
        abort: Option<Vec<u8>>,
    }

    static HOOKS: OnceLock<Hooks> = OnceLock::new();

    fn var(name: &str) -> Option<Vec<u8>> {
        std::env::var_os(name)
            .map(|v| std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec())
    }

    pub(in crate::http) fn init() {
        HOOKS.get_or_init(|| Hooks {
            panic: var("FORKD_TEST_PANIC_PATH"),
            abort: var("FORKD_TEST_ABORT_PATH"),
        });
    }

    // The one intended panic in the request path: it is what the hook is for, and only
    // `cargo test` builds have it.
    #[expect(clippy::panic, reason = "a crash hook for the robustness tests")]
    pub(in crate::http) fn maybe_crash(req: &[u8], head: &Head) {
        let Some(hooks) = HOOKS.get() else {
            return;
        };
        let Some(target) = req.get(head.target.clone()) else {
            return;
        };
        if hooks.panic.as_deref() == Some(target) {
            panic!(
                "test hook: FORKD_TEST_PANIC_PATH {}",
                String::from_utf8_lossy(target)
            );
        }
        if hooks.abort.as_deref() == Some(target) {
            std::process::abort();
        }
    }
}

#[cfg(feature = "test-hooks")]
pub(super) use on::{init, maybe_crash};

/// Without the feature: nothing, inlined away.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(super) fn init() {}

/// Without the feature: nothing, inlined away.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(super) fn maybe_crash(_req: &[u8], _head: &Head) {}
