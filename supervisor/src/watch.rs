//! The resource watch: samples of the child's whole process tree (through forkd's `procfs`,
//! never a parser of its own), judged against level limits and against growth limits (the
//! least-squares slope over a window), with every limit hit counted like the `failcnt` column
//! of `/proc/user_beancounters` and the highest value seen kept like its `maxheld`.
//!
//! It decides nothing about processes: it returns the reason a limit was crossed and the state
//! machine recycles the child. A sample that could not be taken is not a reading of zero.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::time::{Duration, Instant};

use forkd_daemon::procfs;

/// What is measured over the child's tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Fds,
    Rss,
    Pss,
    Processes,
    Zombies,
    Established,
    CloseWait,
    FinWait,
    TimeWait,
    SynRecv,
}

impl Resource {
    pub const ALL: [Resource; 10] = [
        Resource::Fds,
        Resource::Rss,
        Resource::Pss,
        Resource::Processes,
        Resource::Zombies,
        Resource::Established,
        Resource::CloseWait,
        Resource::FinWait,
        Resource::TimeWait,
        Resource::SynRecv,
    ];

    /// The name in flags, the file, the status file and metrics.
    pub fn key(self) -> &'static str {
        match self {
            Resource::Fds => "fds",
            Resource::Rss => "rss",
            Resource::Pss => "pss",
            Resource::Processes => "processes",
            Resource::Zombies => "zombies",
            Resource::Established => "established",
            Resource::CloseWait => "close-wait",
            Resource::FinWait => "fin-wait",
            Resource::TimeWait => "time-wait",
            Resource::SynRecv => "syn-recv",
        }
    }

    pub fn from_key(key: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.key() == key)
    }

    /// Memory is in bytes; everything else is a count.
    pub fn is_bytes(self) -> bool {
        matches!(self, Resource::Rss | Resource::Pss)
    }

    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Resource::Established
                | Resource::CloseWait
                | Resource::FinWait
                | Resource::TimeWait
                | Resource::SynRecv
        )
    }
}

/// One configured limit: a level, or (`slope`) a growth per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub resource: Resource,
    pub value: u64,
    pub slope: bool,
}

impl Limit {
    /// The counter name: `fds`, or `fds-slope` for a growth limit.
    pub fn name(&self) -> String {
        if self.slope {
            format!("{}-slope", self.resource.key())
        } else {
            self.resource.key().to_string()
        }
    }
}

/// One sample of the tree: a value per resource that could be measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    pub values: BTreeMap<Resource, u64>,
}

impl Reading {
    pub fn get(&self, r: Resource) -> Option<u64> {
        self.values.get(&r).copied()
    }
}

/// Samples the tree of `pid`, and the TCP sockets of `port` when given. Errors are the
/// observer's (see [`procfs::is_gone`] for a child that is gone).
pub fn sample(pid: i32, port: Option<u16>) -> io::Result<Reading> {
    let s = procfs::sample_tree(pid)?;
    let mut values = BTreeMap::new();
    values.insert(Resource::Fds, s.fds as u64);
    values.insert(Resource::Rss, s.rss_kb * 1024);
    if let Some(pss) = s.pss_kb {
        values.insert(Resource::Pss, pss * 1024);
    }
    values.insert(Resource::Processes, s.processes as u64);
    values.insert(Resource::Zombies, s.zombies as u64);
    if let Some(port) = port {
        // The port catches the server's accepted sockets and its TIME_WAITs (no inode); the
        // inodes catch the tree's outgoing sockets on other ports.
        let filter = procfs::TcpFilter {
            port: Some(port),
            inodes: s.socket_inodes,
        };
        let t = procfs::tcp_states_matching(&filter)?;
        values.insert(Resource::Established, t.established as u64);
        values.insert(Resource::CloseWait, t.close_wait as u64);
        values.insert(Resource::FinWait, (t.fin_wait1 + t.fin_wait2) as u64);
        values.insert(Resource::TimeWait, t.time_wait as u64);
        values.insert(Resource::SynRecv, t.syn_recv as u64);
    }
    Ok(Reading { values })
}

/// The judged history of one child's readings.
#[derive(Debug)]
pub struct Watch {
    limits: Vec<Limit>,
    window: Duration,
    history: VecDeque<(Instant, Reading)>,
    /// Judgement is suspended until then (after a HUP recycle, while workers are replaced).
    quiet_until: Option<Instant>,
    pub last: Option<Reading>,
    /// Samples in which each limit was over, by [`Limit::name`] (the `failcnt`).
    pub failcnt: BTreeMap<String, u64>,
    /// The highest value ever seen per resource, across children (the `maxheld`).
    pub maxheld: BTreeMap<Resource, u64>,
    /// Level limits whose early warning has been given and not yet re-armed.
    warned: Vec<Resource>,
    warnings: Vec<String>,
    /// Level limits the child exceeded at rest, right after it became ready: recycling cannot
    /// bring it under them, so they are counted but never acted on (issue 10: a limit below
    /// the resting level was a restart loop that failed a quarter of the requests).
    pub below_rest: Vec<Resource>,
    /// The current child's resting level has been compared with the limits.
    rest_checked: bool,
}

/// A level at this share of its limit is announced once (incident 001: a count that warns
/// before doom); it is announced again only after falling below the re-arm share.
const WARN_PERCENT: u64 = 80;
const REARM_PERCENT: u64 = 70;

impl Watch {
    pub fn new(limits: Vec<Limit>, window: Duration) -> Watch {
        let failcnt = limits.iter().map(|l| (l.name(), 0)).collect();
        Watch {
            limits,
            window,
            history: VecDeque::new(),
            quiet_until: None,
            last: None,
            failcnt,
            maxheld: BTreeMap::new(),
            warned: Vec::new(),
            warnings: Vec::new(),
            below_rest: Vec::new(),
            rest_checked: false,
        }
    }

    /// A new child: forget the history, and compare its first reading once ready with the
    /// limits again.
    pub fn new_child(&mut self) {
        self.reset(None);
        self.rest_checked = false;
    }

    /// New limits (a reload); limits found below the resting level are judged afresh.
    pub fn set_limits(&mut self, limits: Vec<Limit>, window: Duration) {
        for l in &limits {
            self.failcnt.entry(l.name()).or_insert(0);
        }
        self.limits = limits;
        self.window = window;
        self.below_rest.clear();
        self.warned.clear();
        self.new_child();
    }

    /// The first reading of a ready child is its resting level: a level limit it already
    /// exceeds is reported (as the returned warnings) and left out of judgement from then on.
    pub fn check_rest(&mut self, reading: &Reading) -> Vec<String> {
        if self.rest_checked {
            return Vec::new();
        }
        self.rest_checked = true;
        let mut out = Vec::new();
        for limit in self.limits.iter().filter(|l| !l.slope) {
            let r = limit.resource;
            match reading.get(r) {
                Some(v) if v > limit.value && !self.below_rest.contains(&r) => {
                    self.below_rest.push(r);
                    out.push(format!(
                        "limit {}={} is below what the child holds at rest ({}): a fresh \
                         child would exceed it too, so it is counted but not acted on; raise it",
                        r.key(),
                        show(r, limit.value),
                        show(r, v)
                    ));
                }
                _ => {}
            }
        }
        out
    }

    /// Forgets the history: a new child, or a child whose workers were just replaced.
    pub fn reset(&mut self, quiet_until: Option<Instant>) {
        self.history.clear();
        self.quiet_until = quiet_until;
    }

    /// Records a reading and returns why it crosses a limit, if it does. Every limit crossed
    /// is counted, even while judgement is quiet, so the counters tell the whole story.
    pub fn judge(&mut self, now: Instant, reading: Reading) -> Option<String> {
        for (r, v) in &reading.values {
            let m = self.maxheld.entry(*r).or_insert(0);
            *m = (*m).max(*v);
        }
        self.history.push_back((now, reading.clone()));
        while let Some((t, _)) = self.history.front() {
            if now.duration_since(*t) > self.window {
                self.history.pop_front();
            } else {
                break;
            }
        }
        self.last = Some(reading.clone());
        self.early_warnings(&reading);
        let mut reasons = Vec::new();
        for limit in &self.limits {
            let Some(v) = reading.get(limit.resource) else {
                continue;
            };
            let over = if limit.slope {
                slope_per_minute(&self.history, limit.resource, self.window)
                    .filter(|s| *s > limit.value as f64)
                    .map(|s| {
                        format!(
                            "{} grew {} a minute over the last {}s (limit {})",
                            limit.resource.key(),
                            show(limit.resource, s as u64),
                            self.window.as_secs(),
                            show(limit.resource, limit.value),
                        )
                    })
            } else {
                (v > limit.value).then(|| {
                    format!(
                        "{} is {} (limit {})",
                        limit.resource.key(),
                        show(limit.resource, v),
                        show(limit.resource, limit.value)
                    )
                })
            };
            if let Some(reason) = over {
                *self.failcnt.entry(limit.name()).or_insert(0) += 1;
                if limit.slope || !self.below_rest.contains(&limit.resource) {
                    reasons.push(reason);
                }
            }
        }
        if reasons.is_empty() || self.quiet_until.is_some_and(|q| now < q) {
            return None;
        }
        Some(reasons.join("; "))
    }
}

impl Watch {
    fn early_warnings(&mut self, reading: &Reading) {
        for limit in self.limits.iter().filter(|l| !l.slope) {
            let Some(v) = reading.get(limit.resource) else {
                continue;
            };
            let r = limit.resource;
            let share = v.saturating_mul(100) / limit.value.max(1);
            if (WARN_PERCENT..=100).contains(&share) && !self.warned.contains(&r) {
                self.warned.push(r);
                self.warnings.push(format!(
                    "{} is {} ({share}% of its limit {})",
                    r.key(),
                    show(r, v),
                    show(r, limit.value)
                ));
            } else if share < REARM_PERCENT {
                self.warned.retain(|w| *w != r);
            }
        }
    }

    /// Early warnings produced by the readings since the last call.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}

fn show(r: Resource, v: u64) -> String {
    if r.is_bytes() {
        format!("{:.1} MiB", v as f64 / (1 << 20) as f64)
    } else {
        v.to_string()
    }
}

/// The least-squares slope of `r` per minute, once the samples span most of `window` (a slope
/// over a few seconds after a start is noise, not growth).
fn slope_per_minute(
    history: &VecDeque<(Instant, Reading)>,
    r: Resource,
    window: Duration,
) -> Option<f64> {
    let (t0, _) = history.front()?;
    let points: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|(t, reading)| {
            Some((t.duration_since(*t0).as_secs_f64(), reading.get(r)? as f64))
        })
        .collect();
    let span = points.last()?.0;
    if points.len() < 3 || span < window.as_secs_f64() * 0.8 {
        return None;
    }
    forkd_daemon::trend::linear_fit(&points).map(|(slope, _)| slope * 60.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(fds: u64) -> Reading {
        Reading {
            values: [(Resource::Fds, fds), (Resource::Rss, 10 << 20)].into(),
        }
    }

    #[test]
    fn level_limits_count_every_hit() {
        let limit = Limit {
            resource: Resource::Fds,
            value: 100,
            slope: false,
        };
        let mut w = Watch::new(vec![limit], Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(w.judge(t0, reading(100)), None);
        let why = w.judge(t0 + Duration::from_secs(1), reading(101)).unwrap();
        assert_eq!(why, "fds is 101 (limit 100)");
        w.judge(t0 + Duration::from_secs(2), reading(150));
        assert_eq!(w.failcnt["fds"], 2);
        assert_eq!(w.maxheld[&Resource::Fds], 150);
    }

    #[test]
    fn slope_needs_a_full_window_then_sees_growth() {
        let limit = Limit {
            resource: Resource::Fds,
            value: 60,
            slope: true,
        };
        let mut w = Watch::new(vec![limit], Duration::from_secs(10));
        let t0 = Instant::now();
        // Two fds a second is 120 a minute, but not before the window is mostly covered.
        for s in 0..8 {
            assert_eq!(
                w.judge(t0 + Duration::from_secs(s), reading(10 + 2 * s)),
                None,
                "{s}"
            );
        }
        let why = w
            .judge(t0 + Duration::from_secs(9), reading(28))
            .expect("over the slope");
        assert!(why.starts_with("fds grew 120 a minute"), "{why}");
        assert_eq!(w.failcnt["fds-slope"], 1);
    }

    #[test]
    fn flat_and_noisy_is_not_growth() {
        let limit = Limit {
            resource: Resource::Fds,
            value: 30,
            slope: true,
        };
        let mut w = Watch::new(vec![limit], Duration::from_secs(10));
        let t0 = Instant::now();
        for s in 0..30 {
            let noisy = 50 + (s % 3) * 5;
            assert_eq!(w.judge(t0 + Duration::from_secs(s), reading(noisy)), None);
        }
    }

    #[test]
    fn warns_once_before_the_limit_and_rearms() {
        let limit = Limit {
            resource: Resource::Fds,
            value: 100,
            slope: false,
        };
        let mut w = Watch::new(vec![limit], Duration::from_secs(10));
        let t0 = Instant::now();
        let mut warnings = Vec::new();
        for (s, fds) in [50, 79, 80, 90, 75, 60, 85].into_iter().enumerate() {
            assert_eq!(
                w.judge(t0 + Duration::from_secs(s as u64), reading(fds)),
                None
            );
            warnings.extend(w.take_warnings());
        }
        assert_eq!(
            warnings,
            [
                "fds is 80 (80% of its limit 100)",
                "fds is 85 (85% of its limit 100)"
            ]
        );
    }

    #[test]
    fn quiet_period_counts_but_does_not_act() {
        let limit = Limit {
            resource: Resource::Fds,
            value: 10,
            slope: false,
        };
        let mut w = Watch::new(vec![limit], Duration::from_secs(10));
        let t0 = Instant::now();
        w.reset(Some(t0 + Duration::from_secs(5)));
        assert_eq!(w.judge(t0, reading(20)), None);
        assert_eq!(w.failcnt["fds"], 1);
        assert!(w.judge(t0 + Duration::from_secs(5), reading(20)).is_some());
    }

    #[test]
    fn samples_this_process() {
        let r = sample(std::process::id() as i32, None).unwrap();
        assert!(r.get(Resource::Fds).unwrap() >= 3);
        assert!(r.get(Resource::Rss).unwrap() > 0);
        assert_eq!(r.get(Resource::Established), None);
    }
}
