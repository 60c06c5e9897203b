//! What a child process (prefork worker or per-connection child) can ask of the template.
//!
//! The master asks a child to finish with SIGTERM (graceful: end the request in flight, then
//! close) or SIGINT/SIGQUIT (leave now). The handlers are installed without `SA_RESTART`, so a
//! blocking `accept`, `read` or `write` in the child returns `EINTR` and the service can look
//! at [`stop_requested`] between requests.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// True once the master has asked this child to finish: a service should complete the
/// request in flight, not start another one, and return.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Marks this child as asked to stop. Async-signal-safe (one atomic store).
pub(crate) fn request_stop() {
    STOP.store(true, Ordering::Relaxed);
}
