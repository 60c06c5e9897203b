//! A few fds held in reserve (open `/dev/null`s) so that a supervisor whose fd table is full
//! can still do its duty: write its status, and start or stop the child. They are released
//! only for those duties, never for a probe: a probe that cannot get a socket must report
//! "cannot observe", and borrowing the reserve would hide that trouble until it is too late.

use std::fs::File;
use std::io;

/// Open fds kept for emergencies.
pub struct Reserve {
    held: Vec<File>,
    size: usize,
    /// The reserve was needed since the last call that managed without it: warn once per
    /// episode, not on every status write of a long shortage.
    short: bool,
}

/// True for the errors a free fd slot would cure.
pub fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

impl Reserve {
    /// Opens `size` fds (std opens with CLOEXEC, so a child never inherits them).
    pub fn new(size: usize) -> io::Result<Reserve> {
        let mut r = Reserve {
            held: Vec::new(),
            size,
            short: false,
        };
        r.refill();
        if r.held.len() < size {
            return Err(io::Error::other(format!(
                "unable to open {size} reserve fds on /dev/null"
            )));
        }
        Ok(r)
    }

    /// Runs `f`; if it fails for want of an fd, frees the reserve, runs it once more, and
    /// takes the reserve back as far as the fd table allows.
    pub fn with_room<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut() -> io::Result<T>,
    ) -> io::Result<T> {
        match f() {
            Err(e) if out_of_fds(&e) && !self.held.is_empty() => {
                if !self.short {
                    tracing::warn!("out of fds to {what}: {e}; using the reserve");
                    self.short = true;
                }
                self.held.clear();
                let r = f();
                self.refill();
                r
            }
            other => {
                if self.short && other.is_ok() {
                    tracing::info!("fds available again; the reserve is no longer needed");
                    self.short = false;
                }
                other
            }
        }
    }

    /// Reopens what was spent; a full table leaves the reserve short until a later call.
    pub fn refill(&mut self) {
        while self.held.len() < self.size {
            match File::open("/dev/null") {
                Ok(f) => self.held.push(f),
                Err(_) => break,
            }
        }
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}
