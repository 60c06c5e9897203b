//! Timeouts that shrink when the pool is nearly full, as Apache's mod_reqtimeout and nginx's
//! tuning guides do by hand: while most children are busy, a connection that trickles its
//! head (slowloris) or sits idle between requests holds a child that a fresh client is
//! waiting for, so it gets [`PRESSED_HEADER`] for its head and [`PRESSED_IDLE`] between
//! requests; while children are free, nobody waits and the configured timeouts stand.
//!
//! Occupancy is read from the scoreboard (two relaxed loads, no system call), before every
//! wait for a head: a connection accepted while the pool was quiet is cut as soon as pressure
//! rises, since a wait for a head never lasts more than [`RECHECK`] without looking again. The
//! idle wait between requests is decided when it begins.

use std::time::{Duration, Instant};

use forkd_daemon::scoreboard::{self, Occupancy};

use super::Config;

/// The pool is under pressure from this share of busy children on (three quarters).
const PRESSURE: (u64, u64) = (3, 4);
/// The whole head must arrive within this, under pressure: a round trip or two for any real
/// client, and a slowloris connection frees its child within a second.
pub(crate) const PRESSED_HEADER: Duration = Duration::from_secs(1);
/// The idle keep-alive wait under pressure: a busy client's next request comes within a round
/// trip; a client that thinks longer reconnects, which is cheaper than a child held idle.
pub(crate) const PRESSED_IDLE: Duration = Duration::from_millis(500);
/// A wait for a head looks at the occupancy again at least this often.
pub(super) const RECHECK: Duration = Duration::from_secs(1);

/// The timeouts in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    pub(crate) header: Duration,
    pub(crate) idle: Duration,
}

/// The policy, a pure function: with `occ.busy` of `occ.capacity` children busy (this one
/// included), the configured `header` and `idle` timeouts, or the pressed ones when shorter.
/// An unknown capacity (no scoreboard) is no pressure.
pub(crate) fn timeouts(occ: Occupancy, header: Duration, idle: Duration) -> Timeouts {
    let pressed = occ.capacity > 0
        && u64::from(occ.busy) * PRESSURE.1 >= u64::from(occ.capacity) * PRESSURE.0;
    if pressed {
        Timeouts {
            header: header.min(PRESSED_HEADER),
            idle: idle.min(PRESSED_IDLE),
        }
    } else {
        Timeouts { header, idle }
    }
}

/// `conn`'s hook, called before each wait for a head: the head's deadline (made from the
/// configured header timeout) moved earlier by what pressure takes off, and never further
/// than [`RECHECK`] away so the wait comes back to look; and the idle wait in force.
pub(super) fn apply(deadline: Option<Instant>, cfg: &Config) -> (Option<Instant>, Duration) {
    let t = timeouts(
        scoreboard::occupancy(),
        cfg.header_timeout,
        cfg.keepalive_timeout,
    );
    (shrink(deadline, cfg, t, Instant::now()), t.idle)
}

/// The event driver's hook: as [`apply`], at the turn's time `now`, and with the worker's own
/// connection table (`table`) weighed as well as the pool. The pool counts every event
/// worker's connections against all their tables; a worker whose own table is three quarters
/// full is pressed even when the others have room, since the connections it holds idle are
/// the ones it cannot accept.
pub(super) fn apply_at(
    deadline: Option<Instant>,
    cfg: &Config,
    now: Instant,
    table: Occupancy,
) -> (Option<Instant>, Duration) {
    let (header, idle) = (cfg.header_timeout, cfg.keepalive_timeout);
    let pool = timeouts(scoreboard::occupancy(), header, idle);
    let own = timeouts(table, header, idle);
    let t = Timeouts {
        header: pool.header.min(own.header),
        idle: pool.idle.min(own.idle),
    };
    (shrink(deadline, cfg, t, now), t.idle)
}

/// The header timeout in force for `conn`: also how long a request body being dropped may go
/// without a byte, so that under pressure a stalled body frees its child as a stalled head does.
pub(super) fn header(cfg: &Config) -> Duration {
    timeouts(
        scoreboard::occupancy(),
        cfg.header_timeout,
        cfg.keepalive_timeout,
    )
    .header
}

/// As [`header`], for the event driver: its own connection table weighed as well (see
/// [`apply_at`]).
pub(super) fn header_at(cfg: &Config, table: Occupancy) -> Duration {
    let (header, idle) = (cfg.header_timeout, cfg.keepalive_timeout);
    let pool = timeouts(scoreboard::occupancy(), header, idle).header;
    pool.min(timeouts(table, header, idle).header)
}

/// A head's deadline under the timeouts `t`, and never further than [`RECHECK`] from `now`.
fn shrink(deadline: Option<Instant>, cfg: &Config, t: Timeouts, now: Instant) -> Option<Instant> {
    deadline.map(|d| {
        let cut = cfg.header_timeout.saturating_sub(t.header);
        let pressed = d.checked_sub(cut).unwrap_or(now);
        pressed.min(now.checked_add(RECHECK).unwrap_or(pressed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_shrink_from_three_quarters_busy_and_never_grow() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let occ = |busy, capacity| Occupancy { busy, capacity };
        // (busy, capacity, header, idle) => (header, idle)
        let cases = [
            (0, 16, s(10), s(5), s(10), s(5)),
            (11, 16, s(10), s(5), s(10), s(5)),
            (12, 16, s(10), s(5), s(1), ms(500)),
            (16, 16, s(10), s(5), s(1), ms(500)),
            // A count a moment stale can exceed the bound: still pressure.
            (17, 16, s(10), s(5), s(1), ms(500)),
            (5, 8, s(10), s(5), s(10), s(5)),
            (6, 8, s(10), s(5), s(1), ms(500)),
            // Shorter configured timeouts stay as they are.
            (8, 8, ms(300), ms(100), ms(300), ms(100)),
            // One worker is always full when it asks: any wait holds everyone else off.
            (1, 1, s(10), s(5), s(1), ms(500)),
            (1, 2, s(10), s(5), s(10), s(5)),
            (2, 2, s(10), s(5), s(1), ms(500)),
            (767, 1024, s(10), s(5), s(10), s(5)),
            (768, 1024, s(10), s(5), s(1), ms(500)),
            // No scoreboard: no pressure.
            (0, 0, s(10), s(5), s(10), s(5)),
            (u32::MAX, u32::MAX, s(10), s(5), s(1), ms(500)),
        ];
        for (busy, cap, header, idle, want_header, want_idle) in cases {
            let got = timeouts(occ(busy, cap), header, idle);
            assert_eq!(
                got,
                Timeouts {
                    header: want_header,
                    idle: want_idle
                },
                "{busy}/{cap} busy"
            );
        }
    }

    #[test]
    fn a_head_wait_comes_back_to_look_within_the_recheck() {
        // No scoreboard in unit tests: no pressure, only the recheck bound.
        let cfg = Config::default();
        let far = Instant::now() + Duration::from_secs(10);
        let (d, idle) = apply(Some(far), &cfg);
        let d = d.unwrap();
        assert!(d <= Instant::now() + RECHECK, "{d:?}");
        assert_eq!(idle, cfg.keepalive_timeout);
        let near = Instant::now() + Duration::from_millis(100);
        assert_eq!(apply(Some(near), &cfg).0, Some(near));
        assert_eq!(apply(None, &cfg).0, None);
    }

    #[test]
    fn an_event_workers_own_table_presses_too() {
        let cfg = Config::default();
        let now = Instant::now();
        let head_due = now + Duration::from_millis(9500);
        let table = |busy| Occupancy {
            busy,
            capacity: 1024,
        };
        // A table with room: the configured idle time, the head rechecked within a second.
        let (d, idle) = apply_at(Some(head_due), &cfg, now, table(100));
        assert_eq!(idle, cfg.keepalive_timeout);
        assert_eq!(d, Some(now + RECHECK));
        // Three quarters full: the pressed times.
        let (d, idle) = apply_at(Some(head_due), &cfg, now, table(768));
        assert_eq!(idle, PRESSED_IDLE);
        assert_eq!(d, Some(head_due - (cfg.header_timeout - PRESSED_HEADER)));
    }
}
