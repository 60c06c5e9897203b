//! The deadlines of an event worker's connections: one binary heap, no thread, no timer fd.
//!
//! Each connection (a slot of the reactor's table, with the generation that tells one use of
//! the slot from the next) has at most one deadline in force. Most changes of a deadline move
//! it later (a keep-alive connection's idle deadline moves with every request), and those
//! cost nothing: the heap keeps the earlier entry, and when that entry comes due it is pushed
//! again at the deadline in force. Only a deadline moved earlier is pushed at once. So the
//! heap holds about one entry per connection, not one per request, and stale entries (of a
//! closed connection, or superseded) are dropped as they come up, or all at once when they
//! outnumber the live ones (see [`Deadlines::set`]).
//!
//! A deadline never fires early: whatever comes off the heap is checked against the deadline
//! in force. It never fires late either, beyond the wait's own granularity: while a
//! connection has a deadline, some entry of its at or before that deadline is in the heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A connection as the reactor names it: its slot and the generation of that slot.
pub(crate) type Key = (u32, u32);

#[derive(Debug, Clone, Copy, Default)]
struct Track {
    gen: u32,
    /// The deadline in force.
    due: Option<Instant>,
    /// The earliest entry of this connection in the heap: the one that keeps the promise.
    queued: Option<Instant>,
}

/// Deadlines by connection; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    tracks: Vec<Track>,
    live: usize,
}

/// The heap is rebuilt from its live entries when it holds more than this many per
/// connection with a deadline (plus a floor, so a small table is never rebuilt often).
const STALE_FACTOR: usize = 4;
const STALE_FLOOR: usize = 1024;

impl Deadlines {
    /// Sets the deadline of `key` (`None`: no deadline); replaces what the slot held before,
    /// whichever generation that was.
    pub(crate) fn set(&mut self, key: Key, due: Option<Instant>) {
        let (slot, gen) = key;
        let Ok(i) = usize::try_from(slot) else {
            return;
        };
        if self.tracks.len() <= i {
            self.tracks.resize(i + 1, Track::default());
        }
        let Some(t) = self.tracks.get_mut(i) else {
            return;
        };
        if t.gen != gen {
            // A new use of the slot: what the old one queued is stale from now on.
            *t = Track {
                gen,
                due: None,
                queued: None,
            };
        }
        let had = t.due.is_some();
        t.due = due;
        if let Some(d) = due {
            if t.queued.is_none_or(|q| d < q) {
                t.queued = Some(d);
                self.heap.push(Reverse((d, slot, gen)));
            }
        }
        match (had, due.is_some()) {
            (false, true) => self.live += 1,
            (true, false) => self.live = self.live.saturating_sub(1),
            _ => {}
        }
        self.compact();
    }

    /// Forgets the deadline of `key` (its connection is closed).
    pub(crate) fn clear(&mut self, key: Key) {
        self.set(key, None);
    }

    /// The earliest instant something may come due (it may turn out stale: a wake-up for
    /// nothing, never a missed deadline).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Moves every connection whose deadline is at or before `now` into `due` and takes its
    /// deadline away (the caller sets the next one).
    pub(crate) fn expire(&mut self, now: Instant, due: &mut Vec<Key>) {
        while let Some(&Reverse((at, slot, gen))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(t) = usize::try_from(slot)
                .ok()
                .and_then(|i| self.tracks.get_mut(i))
            else {
                continue;
            };
            if t.gen != gen || t.queued != Some(at) {
                // A closed connection's, or one superseded by an earlier entry.
                continue;
            }
            t.queued = None;
            match t.due {
                Some(d) if d <= now => {
                    t.due = None;
                    self.live = self.live.saturating_sub(1);
                    due.push((slot, gen));
                }
                Some(d) => {
                    // Moved later since this entry was pushed: keep the promise at the new
                    // deadline.
                    t.queued = Some(d);
                    self.heap.push(Reverse((d, slot, gen)));
                }
                None => {}
            }
        }
    }

    /// Rebuilds the heap from its live entries when stale ones dominate it (many connections
    /// closed before their deadlines): amortised constant time per `set`, and memory
    /// proportional to the connections, whatever the connection rate.
    fn compact(&mut self) {
        let limit = self
            .live
            .saturating_mul(STALE_FACTOR)
            .saturating_add(STALE_FLOOR);
        if self.heap.len() <= limit {
            return;
        }
        let tracks = &self.tracks;
        self.heap.retain(|Reverse((at, slot, gen))| {
            usize::try_from(*slot)
                .ok()
                .and_then(|i| tracks.get(i))
                .is_some_and(|t| t.gen == *gen && t.queued == Some(*at))
        });
        self.heap.shrink_to(limit);
    }

    /// Entries in the heap, stale ones included (for tests and for the curious).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn expire(d: &mut Deadlines, now: Instant) -> Vec<Key> {
        let mut out = Vec::new();
        d.expire(now, &mut out);
        out.sort();
        out
    }

    #[test]
    fn fires_at_the_deadline_in_force_never_before() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.set((0, 1), Some(t0 + ms(100)));
        d.set((1, 1), Some(t0 + ms(50)));
        assert_eq!(d.next(), Some(t0 + ms(50)));
        assert!(expire(&mut d, t0 + ms(49)).is_empty());
        assert_eq!(expire(&mut d, t0 + ms(50)), vec![(1, 1)]);
        // Fired deadlines are taken away: nothing fires twice.
        assert!(expire(&mut d, t0 + ms(60)).is_empty());
        // Moved later: the old entry comes up, is pushed again, and fires only at the new time.
        d.set((0, 1), Some(t0 + ms(300)));
        assert!(expire(&mut d, t0 + ms(150)).is_empty());
        assert_eq!(d.next(), Some(t0 + ms(300)));
        assert_eq!(expire(&mut d, t0 + ms(300)), vec![(0, 1)]);
        // Moved earlier: fires at the earlier time, and the later entry is then stale.
        d.set((0, 1), Some(t0 + ms(500)));
        d.set((0, 1), Some(t0 + ms(400)));
        assert_eq!(expire(&mut d, t0 + ms(400)), vec![(0, 1)]);
        assert!(expire(&mut d, t0 + ms(600)).is_empty());
        assert_eq!(d.queued(), 0);
    }

    #[test]
    fn a_reused_slot_does_not_inherit_the_old_deadline() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.set((3, 1), Some(t0 + ms(10)));
        d.clear((3, 1));
        d.set((3, 2), Some(t0 + ms(20)));
        assert!(expire(&mut d, t0 + ms(15)).is_empty());
        assert_eq!(expire(&mut d, t0 + ms(20)), vec![(3, 2)]);
        // A deadline set and removed fires nothing.
        d.set((4, 1), Some(t0 + ms(30)));
        d.set((4, 1), None);
        assert!(expire(&mut d, t0 + ms(40)).is_empty());
    }

    #[test]
    fn a_deadline_moved_later_every_request_keeps_one_entry() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        // 10,000 requests on one keep-alive connection, each moving its idle deadline.
        for i in 0..10_000u64 {
            d.set((0, 7), Some(t0 + ms(5000 + i)));
        }
        assert_eq!(d.queued(), 1);
        assert!(expire(&mut d, t0 + ms(5000)).is_empty());
        assert_eq!(d.queued(), 1, "pushed once more, at the deadline in force");
        assert_eq!(expire(&mut d, t0 + ms(15_000)), vec![(0, 7)]);
    }

    #[test]
    fn closed_connections_do_not_pile_up() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        // A connection per request, each closed long before its deadline.
        for i in 0..100_000u32 {
            let key = (i % 8, i);
            d.set(key, Some(t0 + ms(10_000 - u64::from(i % 1000))));
            d.clear(key);
        }
        assert!(d.queued() <= STALE_FLOOR + 1, "{} entries", d.queued());
        assert!(expire(&mut d, t0 + ms(20_000)).is_empty());
    }

    #[test]
    fn many_connections_fire_in_order_of_their_deadlines() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        for slot in 0..100u32 {
            d.set((slot, 0), Some(t0 + ms(u64::from(100 - slot))));
        }
        let mut fired = Vec::new();
        for step in 0..=100u64 {
            let mut out = Vec::new();
            d.expire(t0 + ms(step), &mut out);
            fired.extend(out.into_iter().map(|(s, _)| s));
        }
        let want: Vec<u32> = (0..100u32).rev().collect();
        assert_eq!(fired, want);
    }
}
