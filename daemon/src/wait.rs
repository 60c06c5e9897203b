//! Waiting a bounded time for something no event announces: children to be gone after a
//! signal, a process tree to settle. Every such wait in forkd is the same loop (check, and if
//! not yet, sleep a tick, until a deadline), so it is written once, with the deadline computed
//! so that no configured duration can overflow `Instant`.

use std::time::{Duration, Instant};

/// Calls `done` until it returns true or `within` has passed, sleeping `every` between calls
/// (never past the deadline). `done` runs at least once and once more at the deadline;
/// returns its last answer.
pub fn until(within: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        let left = within.saturating_sub(start.elapsed());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(every.min(left));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_when_done_or_at_the_deadline() {
        let mut calls = 0;
        assert!(until(
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                calls += 1;
                calls == 3
            }
        ));
        assert_eq!(calls, 3);

        let t0 = Instant::now();
        let mut calls = 0;
        assert!(!until(
            Duration::from_millis(50),
            Duration::from_millis(10),
            || {
                calls += 1;
                false
            }
        ));
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert!((2..=7).contains(&calls), "{calls}");

        let mut calls = 0;
        assert!(!until(Duration::ZERO, Duration::from_secs(10), || {
            calls += 1;
            false
        }));
        assert_eq!(calls, 1, "a zero wait still looks once, and never sleeps");
        assert!(until(Duration::MAX, Duration::MAX, || true));
    }
}
