//! The master's side of the systemd watchdog (sd_watchdog_enabled(3)): when `WATCHDOG_USEC`
//! is set for this process, `WATCHDOG=1` goes to `$NOTIFY_SOCKET` every half interval, but
//! only while the master is alive (it is sent from the master's one loop, so a hung or stopped
//! master stops it) *and* its pool is serving. A prefork pool serves when at least one worker
//! is idle, or has made progress on its connection within the interval (the per-slot progress
//! count on the scoreboard, bumped by the application per request, see
//! [`scoreboard::progress`]); workers that are all stuck on one request each, or no worker at
//! all, stop the pings, so whoever watches replaces the whole server. A master that accepts
//! itself (fork mode) serves as long as its loop runs.
//!
//! Pure bookkeeping on what it is given, so it is tested without processes; the master reads
//! the scoreboard and sends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::scoreboard;

/// What one child's scoreboard slot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub slot: usize,
    pub busy: bool,
    pub progress: u64,
}

/// The watchdog's state in the master.
#[derive(Debug)]
pub struct Watchdog {
    interval: Duration,
    next: Instant,
    /// Per slot: the progress count last seen and when it last changed.
    seen: HashMap<usize, (u64, Instant)>,
}

impl Watchdog {
    /// From the environment (see [`crate::notify::watchdog_from_env`]); `None` when no
    /// watchdog is asked for. The first ping is due at once.
    pub fn from_env(now: Instant) -> Option<Watchdog> {
        crate::notify::watchdog_from_env().map(|interval| Watchdog::new(interval, now))
    }

    pub fn new(interval: Duration, now: Instant) -> Watchdog {
        Watchdog {
            interval,
            next: now,
            seen: HashMap::new(),
        }
    }

    /// When the next ping is due.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// At `now`, with the pool's children as `children` (`None`: the master accepts itself,
    /// fork mode), whether to send `WATCHDOG=1` now. Every call records progress; a ping is
    /// sent at most every half interval.
    pub fn tick(&mut self, now: Instant, children: Option<&[Activity]>) -> bool {
        let serving = match children {
            None => true,
            Some(children) => {
                self.seen
                    .retain(|slot, _| children.iter().any(|c| c.slot == *slot));
                let mut serving = false;
                for c in children {
                    let seen = self.seen.entry(c.slot).or_insert((c.progress, now));
                    if seen.0 != c.progress {
                        *seen = (c.progress, now);
                    }
                    serving |= !c.busy || now.duration_since(seen.1) < self.interval;
                }
                serving
            }
        };
        if now < self.next {
            return false;
        }
        self.next = now + self.interval / 2;
        serving
    }
}

/// The pool's children as the scoreboard shows them, by slot.
pub fn activity(slots: impl Iterator<Item = usize>) -> Vec<Activity> {
    slots
        .map(|slot| {
            let (busy, progress) = scoreboard::slot_activity(slot);
            Activity {
                slot,
                busy,
                progress,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn child(slot: usize, busy: bool, progress: u64) -> Activity {
        Activity {
            slot,
            busy,
            progress,
        }
    }

    #[test]
    fn pings_every_half_interval_while_a_worker_is_idle_or_progressing() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(ms(1000), t0);
        let idle = [child(0, false, 0), child(1, true, 5)];
        assert!(w.tick(t0, Some(&idle)), "the first ping is due at once");
        assert!(
            !w.tick(t0 + ms(100), Some(&idle)),
            "not before half the interval"
        );
        assert!(w.tick(t0 + ms(500), Some(&idle)));
        // Both busy, one of them moving: still serving.
        let mut p = 5;
        let mut t = t0 + ms(500);
        for _ in 0..10 {
            t += ms(500);
            p += 1;
            assert!(w.tick(t, Some(&[child(0, true, 1), child(1, true, p)])));
        }
    }

    #[test]
    fn a_wedged_pool_or_no_pool_stops_the_pings() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(ms(1000), t0);
        let stuck = [child(0, true, 3), child(1, true, 7)];
        assert!(w.tick(t0, Some(&stuck)), "stuck for less than the interval");
        assert!(w.tick(t0 + ms(600), Some(&stuck)));
        assert!(
            !w.tick(t0 + ms(1200), Some(&stuck)),
            "stuck for a whole interval"
        );
        assert!(!w.tick(t0 + ms(1800), Some(&[])), "no worker at all");
        // A worker that frees itself resumes them.
        assert!(w.tick(t0 + ms(2400), Some(&[child(0, false, 4)])));
        // Fork mode: the master's loop is the pool.
        assert!(w.tick(t0 + ms(3000), None));
    }
}
