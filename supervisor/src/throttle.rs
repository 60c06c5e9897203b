//! The restart throttle, which is part of the supervisor's contract (as in s6 and runit): how
//! long to wait before the next start, and when to stop trying altogether.
//!
//! Both halves are pure arithmetic on times they are given, so they are tested without
//! processes. The delay doubles from `base` to `cap` with each start that did not last
//! `stable_after`, with ±20 % jitter so that many supervisors restarting after a shared cause do
//! not start in lockstep; the budget allows `max` restarts within a sliding `window`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Exponential backoff with jitter and a reset after a stable run.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    stable_after: Duration,
    /// Starts in a row that did not last `stable_after`.
    failures: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration, stable_after: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            stable_after,
            failures: 0,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// The delay before the next start, given how long the child that just ended ran.
    /// A run of at least `stable_after` forgives all earlier failures.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.stable_after {
            self.failures = 0;
        }
        let nominal = self.nominal(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.jitter(nominal)
    }

    /// The delay without jitter after `failures` unstable runs in a row.
    pub fn nominal(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64: enough to spread restarts; nothing here needs to be unpredictable.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(0.8 + 0.4 * unit).min(self.cap)
    }
}

/// At most `max` restarts within any `window`; `max == 0` means no limit.
#[derive(Debug, Clone)]
pub struct Budget {
    max: u32,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl Budget {
    pub fn new(max: u32, window: Duration) -> Budget {
        Budget {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records a restart at `now` if the budget allows it; `false` means the budget is spent
    /// and the supervisor must give up.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.max == 0 {
            return true;
        }
        while let Some(&t) = self.recent.front() {
            if now.duration_since(t) >= self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.max as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    /// Restarts counted in the current window.
    pub fn used(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_to_the_cap() {
        let b = Backoff::new(ms(100), ms(30_000), ms(10_000), 7);
        let seen: Vec<u64> = (0..12).map(|n| b.nominal(n).as_millis() as u64).collect();
        assert_eq!(
            seen,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]
        );
        assert_eq!(b.nominal(u32::MAX), ms(30_000));
    }

    #[test]
    fn jitter_stays_within_a_fifth_and_under_the_cap() {
        let mut b = Backoff::new(ms(100), ms(30_000), ms(10_000), 12345);
        for n in 0..40 {
            let d = b.next_delay(ms(0));
            let nominal = b.nominal(n);
            assert!(
                d >= nominal.mul_f64(0.8) && d <= nominal.mul_f64(1.2),
                "{n}: {d:?}"
            );
            assert!(d <= ms(30_000));
        }
    }

    #[test]
    fn a_stable_run_resets_the_delay() {
        let mut b = Backoff::new(ms(100), ms(30_000), ms(10_000), 1);
        for _ in 0..5 {
            b.next_delay(ms(5));
        }
        assert_eq!(b.failures(), 5);
        let d = b.next_delay(ms(10_000));
        assert!(d <= ms(120), "{d:?}");
        assert_eq!(b.failures(), 1);
    }

    #[test]
    fn budget_slides() {
        let t0 = Instant::now();
        let mut budget = Budget::new(3, ms(1000));
        assert!(budget.take(t0));
        assert!(budget.take(t0 + ms(100)));
        assert!(budget.take(t0 + ms(200)));
        assert!(!budget.take(t0 + ms(300)), "a fourth within the window");
        // The first one leaves the window at t0 + 1000.
        assert!(budget.take(t0 + ms(1000)));
        assert!(!budget.take(t0 + ms(1050)));
        assert_eq!(budget.used(), 3);
    }

    #[test]
    fn zero_means_unlimited() {
        let t0 = Instant::now();
        let mut budget = Budget::new(0, ms(1000));
        assert!((0..10_000).all(|_| budget.take(t0)));
    }
}
