//! "Out of fds or memory": the errors that say this process (or the machine) ran short, not
//! that the peer or the request did anything wrong. The master pauses accepting on them, a
//! worker sleeps before its next `accept`, and the supervisor's probe refuses to hold them
//! against the child (incident 001). One list, so the three cannot disagree on what counts.

use std::io;

/// The errno values of exhaustion: the fd table of this process (EMFILE) or of the system
/// (ENFILE), socket buffers (ENOBUFS), memory (ENOMEM).
pub const EXHAUSTED: [i32; 4] = [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM];

/// True when `e` is one of [`EXHAUSTED`]: the caller is short of fds or memory.
pub fn is_exhausted(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(|n| EXHAUSTED.contains(&n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exhaustion_counts() {
        for n in EXHAUSTED {
            assert!(is_exhausted(&io::Error::from_raw_os_error(n)), "{n}");
        }
        for n in [
            libc::ECONNABORTED,
            libc::EADDRNOTAVAIL,
            libc::EAGAIN,
            libc::EINVAL,
        ] {
            assert!(!is_exhausted(&io::Error::from_raw_os_error(n)), "{n}");
        }
        assert!(!is_exhausted(&io::Error::other("no errno")));
    }
}
