//! Request bodies are never kept: they are read and dropped, exactly, so that the next
//! request on a keep-alive connection starts where it should. One walker for both drivers:
//! `conn` feeds it from a blocking socket, `event` from whatever a readiness event brought.

use std::time::{Duration, Instant};

use super::chunked::{Chunked, ChunkedError};
use super::clock;
use super::parse::Body;
use super::Config;

/// What is left of a body to drop.
#[derive(Debug)]
pub(super) enum Discard {
    /// This many bytes (`Content-Length`).
    Length(u64),
    /// A chunked body, walked to its end.
    Chunked(Chunked),
}

impl Discard {
    /// The walker for a head's body; `None` when it has none.
    pub(super) fn of(body: Body, cfg: &Config) -> Option<Discard> {
        match body {
            Body::None => None,
            Body::Length(n) => Some(Discard::Length(n)),
            Body::Chunked => Some(Discard::Chunked(Chunked::new(
                cfg.max_body_bytes,
                cfg.max_header_bytes,
            ))),
        }
    }

    /// Takes body bytes from the front of `avail`: how many belonged to the body, and whether
    /// it has ended (what follows is the next request). `Err(status)`: the body is refused,
    /// 400 for chunking that breaks the grammar, 413 past `max_body_bytes`.
    pub(super) fn feed(&mut self, avail: &[u8]) -> Result<(usize, bool), u16> {
        match self {
            Discard::Chunked(c) => match c.feed(avail) {
                Ok(used) => Ok((used, c.is_done())),
                Err(ChunkedError::Malformed) => Err(400),
                Err(ChunkedError::TooLarge) => Err(413),
            },
            Discard::Length(left) => {
                let used = (*left).min(avail.len() as u64);
                *left -= used;
                // `used` is at most `avail.len()`, a usize.
                Ok((used as usize, *left == 0))
            }
        }
    }
}

/// When a body that starts coming at `now` must have come whole: the header timeout, plus the
/// largest body allowed at the slowest rate allowed.
pub(super) fn deadline(cfg: &Config, now: Instant) -> Instant {
    let max_secs = cfg.max_body_bytes / cfg.min_send_rate.max(1);
    let allowed = cfg
        .header_timeout
        .saturating_add(Duration::from_secs(max_secs));
    clock::after(now, allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_chunks_end_exactly_where_the_body_does() {
        let cfg = Config::default();
        assert!(Discard::of(Body::None, &cfg).is_none());
        let mut d = Discard::of(Body::Length(5), &cfg).unwrap();
        assert_eq!(d.feed(b"abc"), Ok((3, false)));
        assert_eq!(d.feed(b"deGET /"), Ok((2, true)));
        let mut d = Discard::of(Body::Chunked, &cfg).unwrap();
        assert_eq!(d.feed(b"3\r\nab"), Ok((5, false)));
        assert_eq!(d.feed(b"c\r\n0\r\n\r\nGET"), Ok((8, true)));
        let mut d = Discard::of(Body::Chunked, &cfg).unwrap();
        assert_eq!(d.feed(b"zz\r\n"), Err(400));
        let small = Config {
            max_body_bytes: 4,
            ..Config::default()
        };
        let mut d = Discard::of(Body::Chunked, &small).unwrap();
        assert_eq!(d.feed(b"10\r\n"), Err(413));
        let t = Instant::now();
        assert!(deadline(&cfg, t) >= t + cfg.header_timeout);
    }
}
