//! The restart budget, which is part of the supervisor's contract (as in s6 and runit): when to
//! stop trying altogether. How long to wait before the next start is
//! [`forkd_daemon::backoff::Backoff`], shared with the master's respawn throttle.
//!
//! Pure arithmetic on times it is given, so it is tested without processes: the budget allows
//! `max` restarts within a sliding `window`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

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
