//! The supervisor's deadlines, kept in one place: the state's own deadline (the next start in
//! Backoff, the ready timeout in Starting, the kill in Recycling and Stopping), the probe and
//! sample intervals, the child's watchdog, systemd's watchdog, the kill of a dead child's
//! leftovers and the next status write.
//!
//! It only keeps time: it reads no clock (every method is given `now`), starts nothing and
//! judges nothing. The loop asks it what is [`Timers::due`] and turns each into an input; the
//! machine takes a timer with [`Timers::take`] when that input is stepped, so a timer that an
//! earlier input of the same wake-up moved (a child that exited, a `WATCHDOG=1`) is not acted
//! on. Two rules protect the child from the supervisor's own blindness (issue 10, incident 001
//! again): the ready timeout can be suspended while the supervisor cannot observe
//! ([`Timers::suspend_ready`]), and deadlines that judge the child are moved back by the time
//! the supervisor itself did not run ([`Timers::excuse`]).

use std::time::{Duration, Instant};

/// A wake-up later than this means the supervisor itself was not running (stopped, starved of
/// CPU, a frozen machine): deadlines that judge the child are pushed back by the stall.
pub const STALL_GRACE: Duration = Duration::from_millis(500);

/// One deadline, in the order the loop acts on them when several are due at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The state's deadline: the next start, the ready timeout, or the kill.
    State,
    /// The next probe (readiness by port, or health).
    Probe,
    /// The next resource sample (and refill of the fd reserve).
    Sample,
    /// The child's `WATCHDOG=1` is due by then.
    Watchdog,
    /// The supervisor's own `WATCHDOG=1` to systemd.
    SystemdWatchdog,
    /// The leftovers of an ended child, asked to finish, are killed.
    Leftovers,
    /// The status file is written.
    Status,
}

impl Timer {
    pub const ALL: [Timer; 7] = [
        Timer::State,
        Timer::Probe,
        Timer::Sample,
        Timer::Watchdog,
        Timer::SystemdWatchdog,
        Timer::Leftovers,
        Timer::Status,
    ];
}

/// Every deadline, each at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timers {
    at: [Option<Instant>; Timer::ALL.len()],
    /// What was left of the ready timeout when the supervisor went blind: that clock is stopped
    /// until it can observe again.
    ready_suspended: Option<Duration>,
}

impl Timers {
    pub fn get(&self, t: Timer) -> Option<Instant> {
        self.at[t as usize]
    }

    /// Arms `t` for `at`, or disarms it.
    pub fn set(&mut self, t: Timer, at: Option<Instant>) {
        self.at[t as usize] = at;
    }

    /// Arms `t` for `at` unless it is armed earlier already.
    pub fn soon(&mut self, t: Timer, at: Instant) {
        let earliest = self.get(t).map_or(at, |d| d.min(at));
        self.set(t, Some(earliest));
    }

    /// A new state's deadline; a suspended ready timeout belonged to the state that ended.
    pub fn enter(&mut self, deadline: Option<Instant>) {
        self.set(Timer::State, deadline);
        self.ready_suspended = None;
    }

    /// The timers whose time has come at `now`, in [`Timer::ALL`] order.
    pub fn due(&self, now: Instant) -> Vec<Timer> {
        Timer::ALL
            .into_iter()
            .filter(|&t| self.get(t).is_some_and(|d| now >= d))
            .collect()
    }

    /// Disarms `t` and says whether it had expired at `now`; a timer that is not due stays as
    /// it is. The machine re-arms what repeats.
    pub fn take(&mut self, t: Timer, now: Instant) -> bool {
        let due = self.get(t).is_some_and(|d| now >= d);
        if due {
            self.set(t, None);
        }
        due
    }

    /// The earliest deadline among those `wanted` says the loop must wake for.
    pub fn next_wake(&self, wanted: impl Fn(Timer) -> bool) -> Option<Instant> {
        Timer::ALL
            .into_iter()
            .filter(|&t| wanted(t))
            .filter_map(|t| self.get(t))
            .min()
    }

    /// Stops the state's clock (the ready timeout: the caller knows the state is Starting);
    /// returns what was left when it was running, `None` when it was already stopped or unset.
    pub fn suspend_ready(&mut self, now: Instant) -> Option<Duration> {
        if self.ready_suspended.is_some() {
            return None;
        }
        let left = self.at[Timer::State as usize]
            .take()?
            .saturating_duration_since(now);
        self.ready_suspended = Some(left);
        Some(left)
    }

    /// Starts a stopped ready timeout again with what it had left; returns that.
    pub fn resume_ready(&mut self, now: Instant) -> Option<Duration> {
        let left = self.ready_suspended.take()?;
        self.set(Timer::State, Some(now + left));
        Some(left)
    }

    pub fn ready_suspended(&self) -> Option<Duration> {
        self.ready_suspended
    }

    /// The supervisor woke `stalled` late: moves each of `judging` that is armed back by as
    /// much, and returns those it moved. Nothing moves for a stall under [`STALL_GRACE`].
    pub fn excuse(&mut self, stalled: Duration, judging: &[Timer]) -> Vec<Timer> {
        if stalled < STALL_GRACE {
            return Vec::new();
        }
        let mut moved = Vec::new();
        for &t in judging {
            if let Some(d) = self.at[t as usize].as_mut() {
                *d += stalled;
                moved.push(t);
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn all_lists_each_timer_at_its_index() {
        for (i, t) in Timer::ALL.into_iter().enumerate() {
            assert_eq!(t as usize, i, "{t:?}");
        }
    }

    #[test]
    fn due_in_order_and_taken_once() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.set(Timer::Status, Some(t0));
        timers.set(Timer::State, Some(t0 + S));
        timers.set(Timer::Watchdog, Some(t0 + 3 * S));
        assert_eq!(timers.due(t0), vec![Timer::Status]);
        assert_eq!(timers.due(t0 + 2 * S), vec![Timer::State, Timer::Status]);
        assert_eq!(timers.next_wake(|_| true), Some(t0));
        assert_eq!(
            timers.next_wake(|t| t != Timer::Status),
            Some(t0 + S),
            "a timer the loop need not wake for is left out"
        );
        assert!(timers.take(Timer::State, t0 + 2 * S));
        assert!(!timers.take(Timer::State, t0 + 2 * S), "taken once");
        assert_eq!(timers.get(Timer::State), None);
    }

    /// A timer seen due when the inputs were gathered, then moved by an earlier input of the
    /// same wake-up (a child's WATCHDOG=1), is not taken.
    #[test]
    fn a_timer_moved_meanwhile_is_not_taken() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.set(Timer::Watchdog, Some(t0));
        assert_eq!(timers.due(t0), vec![Timer::Watchdog]);
        timers.set(Timer::Watchdog, Some(t0 + 5 * S));
        assert!(!timers.take(Timer::Watchdog, t0));
        assert_eq!(timers.get(Timer::Watchdog), Some(t0 + 5 * S));
    }

    #[test]
    fn soon_keeps_the_earlier_deadline() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.soon(Timer::Status, t0 + S);
        timers.soon(Timer::Status, t0 + 2 * S);
        assert_eq!(timers.get(Timer::Status), Some(t0 + S));
        timers.soon(Timer::Status, t0);
        assert_eq!(timers.get(Timer::Status), Some(t0));
    }

    /// Blind for 10 s with 2 s of the ready timeout left: it still has 2 s when the supervisor
    /// sees again, and never expires meanwhile.
    #[test]
    fn the_ready_timeout_stops_while_blind() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.enter(Some(t0 + 3 * S));
        assert_eq!(timers.suspend_ready(t0 + S), Some(2 * S));
        assert_eq!(timers.suspend_ready(t0 + 2 * S), None, "suspended once");
        assert!(timers.due(t0 + 10 * S).is_empty());
        assert_eq!(timers.ready_suspended(), Some(2 * S));
        assert_eq!(timers.resume_ready(t0 + 10 * S), Some(2 * S));
        assert_eq!(timers.resume_ready(t0 + 10 * S), None);
        assert_eq!(timers.get(Timer::State), Some(t0 + 12 * S));
        // A new state forgets a suspension of the one before.
        timers.suspend_ready(t0 + 11 * S);
        timers.enter(Some(t0 + 20 * S));
        assert_eq!(timers.ready_suspended(), None);
        assert_eq!(timers.resume_ready(t0 + 21 * S), None);
    }

    #[test]
    fn a_stall_moves_only_what_judges_the_child() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.set(Timer::State, Some(t0 + S));
        timers.set(Timer::Leftovers, Some(t0 + S));
        let judging = [Timer::State, Timer::Watchdog];
        assert!(timers.excuse(STALL_GRACE / 2, &judging).is_empty());
        assert_eq!(timers.excuse(4 * S, &judging), vec![Timer::State]);
        assert_eq!(timers.get(Timer::State), Some(t0 + 5 * S));
        assert_eq!(timers.get(Timer::Leftovers), Some(t0 + S));
    }
}
