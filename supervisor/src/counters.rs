//! The supervisor's event counters, typed: a counter that is not in [`Count`] cannot be
//! bumped, and every one of them is in the status file and the metrics from the start (at
//! zero), under the name [`Count::key`] gives it.

/// What the supervisor counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Health probes that failed (evidence against the child).
    ProbeFailures,
    /// Looks that failed for the supervisor's own reasons (incident 001).
    CannotObserve,
    /// Restarts for a limit, the health or the watchdog.
    Recycles,
    /// Recycles by SIGHUP.
    RecyclesHup,
    WatchdogMisses,
    /// Early warnings at 80 % of a level limit.
    LimitWarnings,
    /// Descendants reaped that were not the child (orphans it left).
    OrphansReaped,
    /// Notify datagrams from outside the child's process group.
    NotifyRejected,
    SpawnFailures,
    /// Wake-ups so late that the supervisor itself was not running.
    Stalls,
    /// Port readiness checks that found another process's listener.
    ForeignListener,
    /// Level limits the child exceeds at rest (reported, not acted on).
    LimitsBelowRest,
}

impl Count {
    pub const ALL: [Count; 12] = [
        Count::ProbeFailures,
        Count::CannotObserve,
        Count::Recycles,
        Count::RecyclesHup,
        Count::WatchdogMisses,
        Count::LimitWarnings,
        Count::OrphansReaped,
        Count::NotifyRejected,
        Count::SpawnFailures,
        Count::Stalls,
        Count::ForeignListener,
        Count::LimitsBelowRest,
    ];

    /// The name in the status file and the `event` label of the metrics.
    pub fn key(self) -> &'static str {
        match self {
            Count::ProbeFailures => "probe_failures",
            Count::CannotObserve => "cannot_observe",
            Count::Recycles => "recycles",
            Count::RecyclesHup => "recycles_hup",
            Count::WatchdogMisses => "watchdog_misses",
            Count::LimitWarnings => "limit_warnings",
            Count::OrphansReaped => "orphans_reaped",
            Count::NotifyRejected => "notify_rejected",
            Count::SpawnFailures => "spawn_failures",
            Count::Stalls => "stalls",
            Count::ForeignListener => "foreign_listener",
            Count::LimitsBelowRest => "limits_below_rest",
        }
    }
}

/// One value per [`Count`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters([u64; Count::ALL.len()]);

impl Counters {
    pub fn add(&mut self, c: Count, n: u64) {
        self.0[c as usize] += n;
    }

    pub fn bump(&mut self, c: Count) {
        self.add(c, 1);
    }

    pub fn get(&self, c: Count) -> u64 {
        self.0[c as usize]
    }

    /// Every counter by its key, in [`Count::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Count::ALL.into_iter().map(|c| (c.key(), self.get(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_each_count_once_at_its_index() {
        for (i, c) in Count::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i, "{c:?}");
        }
        let mut keys: Vec<&str> = Count::ALL.map(Count::key).to_vec();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), Count::ALL.len());
        let mut n = Counters::default();
        n.bump(Count::Stalls);
        n.add(Count::NotifyRejected, 3);
        assert_eq!(n.get(Count::Stalls), 1);
        assert_eq!(n.iter().map(|(_, v)| v).sum::<u64>(), 4);
    }
}
