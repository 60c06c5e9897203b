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

/// When a body being dropped, begun at `start`, must bring more than the `got` bytes it has
/// brought: it may lag the slowest rate allowed (`min_send_rate`, which replies are held to
/// as well) by `header`, the header timeout in force, and no stretch without a byte, from the
/// `last` one, may last longer than that. So a body announced and never sent, or trickled,
/// holds its connection about as long as a head that never ends would: the length a client
/// announces buys it nothing until the bytes come.
pub(super) fn due(
    cfg: &Config,
    start: Instant,
    got: u64,
    last: Instant,
    header: Duration,
) -> Instant {
    let rate = cfg.min_send_rate.max(1);
    let earned = Duration::try_from_secs_f64(got as f64 / rate as f64).unwrap_or(Duration::MAX);
    clock::after(start, header.saturating_add(earned)).min(clock::after(last, header))
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
        // The bytes that came buy time at the slowest rate allowed; an announced length none.
        let (t, h) = (Instant::now(), Duration::from_secs(1));
        let rate = cfg.min_send_rate;
        assert_eq!(due(&cfg, t, 0, t, h), t + h);
        let later = t + Duration::from_secs(5);
        let behind = due(&cfg, t, rate * 2, later, h);
        assert_eq!(behind, t + h + Duration::from_secs(2), "lagging the rate");
        let stalled = due(&cfg, t, rate * 100, later, h);
        assert_eq!(stalled, later + h, "no byte since `later`");
    }
}
