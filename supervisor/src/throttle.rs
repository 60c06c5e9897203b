//! The restart budget, which is part of the supervisor's contract (as in s6 and runit): when to
//! stop trying altogether. How long to wait before the next start is
//! [`forkd_daemon::backoff::Backoff`], shared with the master's respawn throttle.
//!
//! Pure arithmetic on times it is given, so it is tested without processes. The budget counts
//! *failed starts in a row*: a restart after a run that was not stable (the child never became
//! ready, or ran less than `--stable-after`) takes one, a stable run gives them all back. A
//! sliding window alone cannot be spent when the backoff spaces restarts wider than the
//! window (issue 10: 11 restarts need at least 65 s of backoff, the old default window was
//! 60 s, so a child that could never start was retried every 30 s forever). An optional window
//! (`--restart-window`) adds "at most `max` restarts within it", for a child that flaps after
//! stable runs; the configuration refuses a window the backoff could never fill.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// At most `max` failed starts in a row (and, with a window, at most `max` restarts within
/// it); `max == 0` means no limit.
#[derive(Debug, Clone)]
pub struct Budget {
    max: u32,
    window: Option<Duration>,
    in_a_row: u32,
    recent: VecDeque<Instant>,
}

/// Why the budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    /// `max` restarts in a row, none after a stable run.
    InARow(u32),
    /// `max` restarts within the window.
    Window(u32, Duration),
}

impl std::fmt::Display for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spent::InARow(n) => write!(f, "{n} failed starts in a row"),
            Spent::Window(n, w) => write!(
                f,
                "{n} restarts within {}",
                forkd_daemon::units::show_duration(*w)
            ),
        }
    }
}

impl Budget {
    pub fn new(max: u32, window: Option<Duration>) -> Budget {
        Budget {
            max,
            window,
            in_a_row: 0,
            recent: VecDeque::new(),
        }
    }

    /// Records a restart at `now` after a run that was `stable` or not, if the budget allows
    /// it; `Err` says why the supervisor must give up.
    pub fn take(&mut self, now: Instant, stable: bool) -> Result<(), Spent> {
        if stable {
            self.in_a_row = 0;
        }
        if self.max == 0 {
            return Ok(());
        }
        if let Some(window) = self.window {
            while let Some(&t) = self.recent.front() {
                if now.duration_since(t) >= window {
                    self.recent.pop_front();
                } else {
                    break;
                }
            }
            if self.recent.len() >= self.max as usize {
                return Err(Spent::Window(self.max, window));
            }
        }
        if self.in_a_row >= self.max {
            return Err(Spent::InARow(self.max));
        }
        self.in_a_row += 1;
        if self.window.is_some() {
            self.recent.push_back(now);
        }
        Ok(())
    }

    /// Failed starts counted so far (in a row; within the window when that is more).
    pub fn used(&self) -> usize {
        (self.in_a_row as usize).max(self.recent.len())
    }

    /// New limits (a reload): what was counted stays counted.
    pub fn reconfigure(&mut self, max: u32, window: Option<Duration>) {
        self.max = max;
        self.window = window;
        if window.is_none() {
            self.recent.clear();
        }
    }
}

/// The shortest time `max` restarts can take with this backoff (every delay at its nominal
/// value less the 20 % jitter): a window shorter than that can never hold them.
pub fn shortest_span(backoff: &forkd_daemon::backoff::Backoff, max: u32) -> Duration {
    (0..max).map(|n| backoff.nominal(n).mul_f64(0.8)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn failed_starts_in_a_row_spend_it_whatever_the_spacing() {
        let t0 = Instant::now();
        let mut budget = Budget::new(3, None);
        // An hour apart: no window would ever hold them; the count in a row does.
        for i in 0..3 {
            assert_eq!(budget.take(t0 + ms(3_600_000 * i), false), Ok(()));
        }
        assert_eq!(budget.used(), 3);
        assert_eq!(
            budget.take(t0 + ms(4 * 3_600_000), false),
            Err(Spent::InARow(3))
        );
        // A stable run gives the budget back.
        assert_eq!(budget.take(t0 + ms(5 * 3_600_000), true), Ok(()));
        assert_eq!(budget.used(), 1);
    }

    #[test]
    fn an_optional_window_catches_a_child_that_flaps_after_stable_runs() {
        let t0 = Instant::now();
        let mut budget = Budget::new(3, Some(ms(1000)));
        assert!(budget.take(t0, true).is_ok());
        assert!(budget.take(t0 + ms(100), true).is_ok());
        assert!(budget.take(t0 + ms(200), true).is_ok());
        assert_eq!(
            budget.take(t0 + ms(300), true),
            Err(Spent::Window(3, ms(1000)))
        );
        // The first one leaves the window at t0 + 1000.
        assert!(budget.take(t0 + ms(1000), true).is_ok());
        assert!(budget.take(t0 + ms(1050), true).is_err());
    }

    #[test]
    fn zero_means_unlimited() {
        let t0 = Instant::now();
        let mut budget = Budget::new(0, None);
        assert!((0..10_000).all(|_| budget.take(t0, false).is_ok()));
    }

    #[test]
    fn the_default_backoff_spaces_ten_restarts_over_a_minute() {
        let b = forkd_daemon::backoff::Backoff::new(ms(100), ms(30_000), ms(10_000), 1);
        // 100 ms doubling to 30 s: 0.1 + ... + 25.6 + 30 = 81.1 s nominal, 64.9 s at -20 %.
        let span = shortest_span(&b, 10);
        assert!(span > ms(60_000) && span < ms(66_000), "{span:?}");
    }
}
