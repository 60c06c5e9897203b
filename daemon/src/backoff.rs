//! Exponential backoff, shared by the two restart loops of forkd: the master's respawn throttle
//! for prefork workers that die before serving, and the supervisor's restarts of the whole
//! server. Both answer the same question (how long to wait before starting again something
//! that keeps failing) and must not drift apart in how they count, cap or forgive.
//!
//! Pure arithmetic on durations it is given, so it is tested without processes. The delay
//! doubles from `base` to `cap` with each failure, and a run of at least `stable_after`
//! forgives every failure before it. The supervisor adds ±20 % jitter so that many supervisors
//! restarting after a shared cause do not start in lockstep; the master has no such crowd (it
//! respawns one worker at a time) and keeps its delays exact.

use std::time::Duration;

/// Exponential backoff with optional jitter and a reset after a stable run.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    stable_after: Duration,
    /// Failures in a row since the last stable run or reset.
    failures: u32,
    jitter: bool,
    rng: u64,
}

impl Backoff {
    /// A backoff with ±20 % jitter drawn from `seed`.
    pub fn new(base: Duration, cap: Duration, stable_after: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            stable_after,
            failures: 0,
            jitter: true,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// A backoff whose delays are exactly the nominal ones.
    pub fn exact(base: Duration, cap: Duration, stable_after: Duration) -> Backoff {
        Backoff {
            jitter: false,
            ..Backoff::new(base, cap, stable_after, 1)
        }
    }

    /// The delay before the next start, given how long the run that just failed lasted. A run
    /// of at least `stable_after` forgives all earlier failures first.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        self.note_run(ran_for);
        let nominal = self.nominal(self.failures);
        self.failures = self.failures.saturating_add(1);
        if self.jitter {
            self.jitter(nominal)
        } else {
            nominal
        }
    }

    /// Records a run that ended without asking for a delay (a clean exit): a stable one
    /// forgives all earlier failures.
    pub fn note_run(&mut self, ran_for: Duration) {
        if ran_for >= self.stable_after {
            self.failures = 0;
        }
    }

    /// New delays (a supervisor's reload); the failures counted so far stay counted.
    pub fn reconfigure(&mut self, base: Duration, cap: Duration, stable_after: Duration) {
        self.base = base;
        self.cap = cap.max(base);
        self.stable_after = stable_after;
    }

    /// Forgets every failure: the next delay is `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay without jitter after `failures` unstable runs in a row.
    pub fn nominal(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Failures in a row since the last stable run or reset.
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

    /// The master's respawn throttle: 100 ms doubling to 10 s, exact, forgiven by a worker
    /// that lived a second and by a reload.
    #[test]
    fn the_respawn_throttle_is_exact_and_forgiving() {
        let mut b = Backoff::exact(ms(100), ms(10_000), ms(1000));
        let seen: Vec<u64> = (0..10)
            .map(|_| b.next_delay(ms(10)).as_millis() as u64)
            .collect();
        assert_eq!(
            seen,
            [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
        b.note_run(ms(999));
        assert_eq!(b.failures(), 10);
        b.note_run(ms(1000));
        assert_eq!(b.failures(), 0);
        b.next_delay(ms(10));
        b.reset();
        assert_eq!(b.next_delay(ms(10)), ms(100));
    }
}
