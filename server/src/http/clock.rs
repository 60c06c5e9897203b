//! The current date, formatted once per second rather than once per request: the `Date`
//! header (IMF-fixdate, by httpdate) and the access log's `[day/Mon/year:H:M:S +0000]`, which
//! is cut from the same string so no calendar arithmetic is hand-rolled here.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The latest instant httpdate can format (9999-12-31T23:59:59Z); it panics beyond.
pub(super) const LAST_HTTP_DATE: Duration = Duration::from_secs(253_402_300_799);

/// `Sun, 06 Nov 1994 08:49:37 GMT`: always 29 bytes.
const HTTP_LEN: usize = 29;
/// `06/Nov/1994:08:49:37 +0000`: always 26 bytes.
const CLF_LEN: usize = 26;

/// The instant `d` after `from`, for deadlines made of configured durations. `Instant +
/// Duration` panics when the sum leaves the clock's range, and a duration is a flag away from
/// that (`--header-timeout 1e19`); a century is as good as forever for a deadline, and always
/// fits a clock that counts from boot.
pub(super) fn after(from: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
    from.checked_add(d.min(CENTURY)).unwrap_or(from)
}

#[derive(Clone)]
pub(super) struct Clock {
    secs: u64,
    http: [u8; HTTP_LEN],
    clf: [u8; CLF_LEN],
}

impl Clock {
    pub(super) fn new() -> Clock {
        let mut c = Clock {
            secs: u64::MAX,
            http: [b' '; HTTP_LEN],
            clf: [b' '; CLF_LEN],
        };
        c.tick();
        c
    }

    /// Brings the cached strings up to the current second (a vDSO clock read, no syscall).
    pub(super) fn tick(&mut self) {
        // A clock set before 1970 or past 9999 (it happens: dead RTC batteries, tests of the
        // far future) is pinned to the nearest instant httpdate can format without panicking.
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .min(LAST_HTTP_DATE.as_secs());
        if secs != self.secs {
            self.secs = secs;
            self.set(UNIX_EPOCH + Duration::from_secs(secs));
        }
    }

    fn set(&mut self, now: SystemTime) {
        self.http = http_date(now);
        let h = &self.http;
        let mut cur = &mut self.clf[..];
        let _ = cur.write_all(&h[5..7]);
        let _ = cur.write_all(b"/");
        let _ = cur.write_all(&h[8..11]);
        let _ = cur.write_all(b"/");
        let _ = cur.write_all(&h[12..16]);
        let _ = cur.write_all(b":");
        let _ = cur.write_all(&h[17..25]);
        let _ = cur.write_all(b" +0000");
    }

    /// The second [`Clock::http`] names, since the epoch.
    pub(super) fn secs(&self) -> u64 {
        self.secs
    }

    /// The `Date` header value of the current second.
    pub(super) fn http(&self) -> &[u8] {
        &self.http
    }

    /// The access-log timestamp of the current second.
    pub(super) fn clf(&self) -> &[u8] {
        &self.clf
    }
}

/// `t` in IMF-fixdate, by httpdate; `t` must lie within 1970..=9999 (httpdate panics outside).
fn http_date(t: SystemTime) -> [u8; HTTP_LEN] {
    let mut text = [b' '; HTTP_LEN];
    let mut cur = &mut text[..];
    // A fixed-width format into a buffer of exactly that width cannot fail.
    let _ = write!(cur, "{}", httpdate::HttpDate::from(t));
    text
}

/// The last `Last-Modified` value formatted, by the second it names: a keep-alive client
/// asks for the same few files, whose dates are formatted once rather than per response.
#[derive(Debug, Default)]
pub(super) struct Modified {
    last: Option<(u64, [u8; HTTP_LEN])>,
}

impl Modified {
    /// `t` as an HTTP date. `t` must lie within 1970..=9999, as the answer's clamp leaves it;
    /// an instant outside is sent as the nearest end.
    pub(super) fn http(&mut self, t: SystemTime) -> &[u8] {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .min(LAST_HTTP_DATE.as_secs());
        if !matches!(self.last, Some((s, _)) if s == secs) {
            self.last = Some((secs, http_date(UNIX_EPOCH + Duration::from_secs(secs))));
        }
        self.last.as_ref().map_or(&[][..], |(_, text)| &text[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_both_from_one_instant() {
        let mut c = Clock::new();
        c.set(UNIX_EPOCH + Duration::from_secs(784111777));
        assert_eq!(c.http(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(c.clf(), b"06/Nov/1994:08:49:37 +0000");
        c.set(UNIX_EPOCH + LAST_HTTP_DATE);
        assert_eq!(c.http(), b"Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(c.clf(), b"31/Dec/9999:23:59:59 +0000");
    }

    #[test]
    fn deadlines_saturate_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(after(now, Duration::MAX) > now + Duration::from_secs(1_000_000_000));
    }

    #[test]
    fn now_is_parseable() {
        let c = Clock::new();
        let s = std::str::from_utf8(c.http()).unwrap();
        httpdate::parse_http_date(s).unwrap();
    }

    #[test]
    fn modified_dates_are_memoised_by_the_second() {
        let mut m = Modified::default();
        let t = UNIX_EPOCH + Duration::from_millis(784_111_777_250);
        assert_eq!(m.http(t), b"Sun, 06 Nov 1994 08:49:37 GMT");
        // The same second, and another: each its own text.
        assert_eq!(
            m.http(t + Duration::from_millis(500)),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            m.http(t + Duration::from_secs(1)),
            b"Sun, 06 Nov 1994 08:49:38 GMT"
        );
        assert_eq!(m.http(UNIX_EPOCH), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            m.http(UNIX_EPOCH + LAST_HTTP_DATE + Duration::from_secs(86_400)),
            b"Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }
}
