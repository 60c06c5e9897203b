//! What the load saw: latencies in an HDR histogram, responses by status, and every failure by
//! kind. Each engine thread fills its own [`Tally`] without sharing; they are merged at the end,
//! so counting costs nothing on the hot path but an increment.

use hdrhistogram::Histogram;

/// Why a request failed. No failure is ever dropped: each is one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The connection could not be opened (refused, unreachable, no local port...).
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// The connection was reset or broke while sending or receiving.
    Reset,
    /// The server closed the connection before sending any byte of the response.
    Closed,
    /// The connection ended in the middle of a response.
    ShortBody,
    /// A response that could not be framed (bad status line, header, length or chunk, or bytes
    /// after the end of a response that was not asked for).
    BadResponse,
    /// A complete response with a status of 400 or more.
    BadStatus,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Closed,
        ErrorKind::ShortBody,
        ErrorKind::BadResponse,
        ErrorKind::BadStatus,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Closed => "closed",
            ErrorKind::ShortBody => "short_body",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::BadStatus => "bad_status",
        }
    }
}

/// Latencies are recorded in microseconds up to this bound; slower ones are clamped to it
/// (and still counted).
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// One thread's (or, after merging, the whole run's) counts.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency of every complete response, whatever its status.
    pub latency: Histogram<u64>,
    /// Complete responses by status code (index = status, 0..=599; others in 0).
    pub statuses: Vec<u64>,
    pub errors: [u64; ErrorKind::ALL.len()],
    /// Response bytes received, heads included.
    pub bytes: u64,
    /// Connections opened.
    pub connects: u64,
    /// Requests still in flight when the run stopped and the grace period ran out.
    pub unfinished: u64,
    /// Connections (closed loop: the `-c` slots) that got no response at all before the run
    /// ended (its duration, or the last request of `-n`):
    /// a server with fewer workers than connections may leave some in its accept queue for the
    /// whole run, which neither throughput nor the latency of answered requests shows.
    pub starved: u64,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            latency: new_histogram(),
            statuses: vec![0; 600],
            errors: [0; ErrorKind::ALL.len()],
            bytes: 0,
            connects: 0,
            unfinished: 0,
            starved: 0,
        }
    }

    pub fn record_response(&mut self, status: u16, latency_us: u64) {
        self.latency
            .saturating_record(latency_us.clamp(1, MAX_LATENCY_US));
        let slot = if (status as usize) < self.statuses.len() {
            status as usize
        } else {
            0
        };
        self.statuses[slot] += 1;
    }

    pub fn record_error(&mut self, kind: ErrorKind) {
        self.errors[kind as usize] += 1;
    }

    pub fn merge(&mut self, other: &Tally) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        for (a, b) in self.statuses.iter_mut().zip(&other.statuses) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(&other.errors) {
            *a += b;
        }
        self.bytes += other.bytes;
        self.connects += other.connects;
        self.unfinished += other.unfinished;
        self.starved += other.starved;
    }

    /// Complete responses, any status.
    pub fn responses(&self) -> u64 {
        self.statuses.iter().sum()
    }

    /// Failures of every kind, `bad_status` included.
    pub fn error_count(&self) -> u64 {
        self.errors.iter().sum::<u64>() + self.bad_statuses()
    }

    /// Complete responses with a status of 400 or more (counted as `bad_status` errors).
    pub fn bad_statuses(&self) -> u64 {
        self.statuses[400..].iter().sum::<u64>() + self.statuses[0]
    }

    /// Errors by kind, `bad_status` derived from the statuses.
    pub fn errors_by_kind(&self) -> Vec<(ErrorKind, u64)> {
        ErrorKind::ALL
            .iter()
            .map(|&k| {
                let n = if k == ErrorKind::BadStatus {
                    self.errors[k as usize] + self.bad_statuses()
                } else {
                    self.errors[k as usize]
                };
                (k, n)
            })
            .collect()
    }

    pub fn latency_summary(&self) -> LatencySummary {
        LatencySummary::of(&self.latency)
    }
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency figures in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub stdev: f64,
    pub max: u64,
    pub p50: u64,
    pub p75: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary {
                count: 0,
                min: 0,
                mean: 0.0,
                stdev: 0.0,
                max: 0,
                p50: 0,
                p75: 0,
                p90: 0,
                p99: 0,
                p999: 0,
            };
        }
        LatencySummary {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            stdev: h.stdev(),
            max: h.max(),
            p50: h.value_at_quantile(0.50),
            p75: h.value_at_quantile(0.75),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
        }
    }
}

/// Buckets of [`Coarse`].
pub const COARSE_BUCKETS: usize = 256;

/// A latency histogram small enough to copy out of an engine thread ten times a second for the
/// live progress line: exact below 16 us, then 8 buckets per power of two (within 12.5 %).
/// The report's figures come from the full [`Tally::latency`], never from this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coarse {
    pub counts: [u64; COARSE_BUCKETS],
}

impl Default for Coarse {
    fn default() -> Self {
        Coarse {
            counts: [0; COARSE_BUCKETS],
        }
    }
}

impl Coarse {
    pub fn record(&mut self, us: u64) {
        self.counts[coarse_bucket(us)] += 1;
    }

    /// The upper bound of the bucket holding quantile `q`; `None` before any response.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(coarse_upper(i));
            }
        }
        None
    }
}

fn coarse_bucket(v: u64) -> usize {
    if v < 16 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros() as usize;
    let sub = ((v >> (exp - 3)) & 7) as usize;
    (16 + (exp - 4) * 8 + sub).min(COARSE_BUCKETS - 1)
}

fn coarse_upper(i: usize) -> u64 {
    if i < 16 {
        return i as u64;
    }
    let exp = (i - 16) / 8 + 4;
    let sub = ((i - 16) % 8) as u64;
    ((9 + sub) << (exp - 3)) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_summarises() {
        let mut a = Tally::new();
        let mut b = Tally::new();
        for us in 1..=1000 {
            a.record_response(200, us);
        }
        b.record_response(404, 5000);
        b.record_response(700, 10);
        b.record_error(ErrorKind::Reset);
        b.record_response(200, u64::MAX);
        a.merge(&b);
        assert_eq!(a.responses(), 1003);
        assert_eq!(a.bad_statuses(), 2);
        assert_eq!(a.error_count(), 3);
        let by_kind: Vec<u64> = a.errors_by_kind().iter().map(|e| e.1).collect();
        assert_eq!(by_kind, vec![0, 0, 1, 0, 0, 0, 2]);
        let s = a.latency_summary();
        assert_eq!(s.count, 1003);
        assert!((499..=501).contains(&s.p50), "{s:?}");
        assert!((985..=995).contains(&s.p99), "{s:?}");
        // Clamped, not lost.
        assert!(s.max >= MAX_LATENCY_US / 2);
        assert_eq!(LatencySummary::of(&new_histogram()).p99, 0);
    }

    #[test]
    fn coarse_buckets_bound_their_values() {
        for v in (0..5000).chain([1 << 20, (1 << 20) + 12345, MAX_LATENCY_US]) {
            let i = coarse_bucket(v);
            assert!(
                coarse_upper(i) >= v,
                "{v} in bucket {i} up to {}",
                coarse_upper(i)
            );
            // Within 12.5 % above (exact below 16).
            assert!(
                coarse_upper(i) as f64 <= (v as f64 * 1.125).max(v as f64 + 1.0),
                "{v}"
            );
            if i > 0 {
                assert!(coarse_upper(i - 1) < v, "{v}");
            }
        }
        let mut c = Coarse::default();
        assert_eq!(c.quantile(0.99), None);
        for v in 1..=1000 {
            c.record(v);
        }
        let p99 = c.quantile(0.99).unwrap();
        assert!((990..=1120).contains(&p99), "{p99}");
    }
}
