//! Watching the server from outside while the load runs: a time series of throughput and of the
//! target's process tree (through [`forkd_daemon::procfs`]), and the verdict on whether each
//! resource stayed flat.
//!
//! The verdict is a least-squares line through the samples taken after the warm-up. A metric
//! grew if the line rises over the measured span by more than its tolerance even after taking
//! three standard errors off (so noise from a varying number of in-flight connections is not a
//! leak, and a real leak, which rises steadily, is). Separately, a sample taken before the load
//! and one taken after it (once the tree has settled) must show the same fds and no zombies.

use std::io;
use std::time::{Duration, Instant};

use forkd_daemon::procfs::{self, TcpFilter, TcpStates};

/// One sample of the watched tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TreePoint {
    pub processes: u64,
    pub fds: u64,
    pub rss_kb: u64,
    pub pss_kb: Option<u64>,
    pub zombies: u64,
    /// The root process alone (the supervisor or master): its own fds and RSS.
    pub root_fds: u64,
    pub root_rss_kb: u64,
    pub tcp: TcpStates,
}

/// One point of the time series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    /// Seconds since the load started.
    pub t: f64,
    /// Complete responses so far.
    pub responses: u64,
    pub errors: u64,
    /// Responses per second over the interval that ends here.
    pub rps: f64,
    pub tree: Option<TreePoint>,
}

/// Samples the tree rooted at `pid` and the TCP sockets of `port` and of the tree.
pub fn sample(pid: i32, port: u16) -> io::Result<TreePoint> {
    let s = procfs::sample_tree(pid)?;
    let root_fds = procfs::fd_count(pid)? as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let tcp = procfs::tcp_states_matching(&TcpFilter {
        port: Some(port),
        inodes: s.socket_inodes,
    })?;
    Ok(TreePoint {
        processes: s.processes as u64,
        fds: s.fds as u64,
        rss_kb: s.rss_kb,
        pss_kb: s.pss_kb,
        zombies: s.zombies as u64,
        root_fds,
        root_rss_kb: procfs::parse_status_kb(&status, "VmRSS").unwrap_or(0),
        tcp,
    })
}

/// After the load: polls until the tree is back to its state before the load (no more
/// processes or fds than then, no zombies) or `deadline` passes, and returns the last sample.
/// Connection-per-request children and closing sockets take a moment to go.
pub fn settle(
    pid: i32,
    port: u16,
    before: &TreePoint,
    deadline: Duration,
) -> io::Result<TreePoint> {
    let end = Instant::now() + deadline;
    loop {
        let s = sample(pid, port)?;
        let settled = s.processes <= before.processes && s.fds <= before.fds && s.zombies == 0;
        if settled || Instant::now() >= end {
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How much growth is allowed, as stated in the report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// fds, processes, zombies, CLOSE_WAIT sockets: allowed growth over the run, in units.
    pub count: f64,
    /// RSS and PSS: allowed growth as a share of the mean...
    pub mem_fraction: f64,
    /// ...but never less than this many KiB (allocators and page tables move in steps).
    pub mem_floor_kb: f64,
}

/// The verdict on one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    pub metric: &'static str,
    pub samples: usize,
    pub first: f64,
    pub last: f64,
    pub slope_per_s: f64,
    /// Rise of the fitted line over the measured span.
    pub growth: f64,
    /// Standard error of `growth`.
    pub growth_stderr: f64,
    pub tolerance: f64,
    pub flat: bool,
}

pub use forkd_daemon::trend::linear_fit;

/// Judges one metric from `(t, value)` points already past the warm-up.
pub fn trend(metric: &'static str, points: &[(f64, f64)], tolerance: f64) -> Option<Trend> {
    let (slope, stderr) = linear_fit(points)?;
    let span = points.last()?.0 - points.first()?.0;
    let growth = slope * span;
    let growth_stderr = stderr * span;
    Some(Trend {
        metric,
        samples: points.len(),
        first: points.first()?.1,
        last: points.last()?.1,
        slope_per_s: slope,
        growth,
        growth_stderr,
        tolerance,
        flat: growth - 3.0 * growth_stderr <= tolerance,
    })
}

/// Judges every watched metric over the points at or after `warmup` seconds. Empty when there
/// are too few samples to judge (which `--assert-flat` treats as a failure: no evidence is not
/// evidence of flatness).
pub fn trends(series: &[Point], warmup: f64, tol: Tolerance) -> Vec<Trend> {
    let trees: Vec<(f64, &TreePoint)> = series
        .iter()
        .filter(|p| p.t >= warmup)
        .filter_map(|p| Some((p.t, p.tree.as_ref()?)))
        .collect();
    let count_tol = tol.count + 0.5;
    let mut out = Vec::new();
    let mut judge = |metric: &'static str, f: &dyn Fn(&TreePoint) -> Option<u64>, mem: bool| {
        let pts: Vec<(f64, f64)> = trees
            .iter()
            .filter_map(|(t, p)| Some((*t, f(p)? as f64)))
            .collect();
        if pts.is_empty() {
            return;
        }
        let tolerance = if mem {
            let mean = pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
            (mean * tol.mem_fraction).max(tol.mem_floor_kb)
        } else {
            count_tol
        };
        out.extend(trend(metric, &pts, tolerance));
    };
    judge("fds", &|p| Some(p.fds), false);
    judge("root_fds", &|p| Some(p.root_fds), false);
    judge("processes", &|p| Some(p.processes), false);
    judge("zombies", &|p| Some(p.zombies), false);
    judge("close_wait", &|p| Some(p.tcp.close_wait as u64), false);
    judge("rss_kb", &|p| Some(p.rss_kb), true);
    judge("pss_kb", &|p| p.pss_kb, true);
    judge("root_rss_kb", &|p| Some(p.root_rss_kb), true);
    out
}

/// The comparison of the tree before the load and after it settled.
#[derive(Debug, Clone, PartialEq)]
pub struct BeforeAfter {
    pub before: TreePoint,
    pub after: TreePoint,
    pub fd_delta: i64,
    pub root_fd_delta: i64,
    pub ok: bool,
}

pub fn before_after(before: TreePoint, after: TreePoint, tol: Tolerance) -> BeforeAfter {
    let fd_delta = after.fds as i64 - before.fds as i64;
    let root_fd_delta = after.root_fds as i64 - before.root_fds as i64;
    let ok =
        fd_delta as f64 <= tol.count && root_fd_delta as f64 <= tol.count && after.zombies == 0;
    BeforeAfter {
        before,
        after,
        fd_delta,
        root_fd_delta,
        ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance {
        count: 0.0,
        mem_fraction: 0.05,
        mem_floor_kb: 512.0,
    };

    fn series(f: impl Fn(usize) -> TreePoint) -> Vec<Point> {
        (0..60)
            .map(|i| Point {
                t: i as f64,
                tree: Some(f(i)),
                ..Point::default()
            })
            .collect()
    }

    fn verdict(series: &[Point], metric: &str) -> bool {
        trends(series, 5.0, TOL)
            .iter()
            .find(|t| t.metric == metric)
            .unwrap()
            .flat
    }

    #[test]
    fn verdicts() {
        // Constant: flat.
        let s = series(|_| TreePoint {
            fds: 8,
            rss_kb: 2000,
            ..TreePoint::default()
        });
        assert!(verdict(&s, "fds") && verdict(&s, "rss_kb"));
        // One fd per ten seconds: a leak.
        let s = series(|i| TreePoint {
            fds: 8 + i as u64 / 10,
            ..TreePoint::default()
        });
        assert!(!verdict(&s, "fds"));
        // Noise from in-flight connections around a constant: flat.
        let s = series(|i| TreePoint {
            fds: 8 + [0, 16, 3, 12, 7, 0, 16, 9][i % 8],
            ..TreePoint::default()
        });
        assert!(verdict(&s, "fds"));
        // Growing memory: 40 KiB a second from 10 MiB is 2.3 MiB over the span, over 5%.
        let s = series(|i| TreePoint {
            rss_kb: 10240 + 40 * i as u64,
            ..TreePoint::default()
        });
        assert!(!verdict(&s, "rss_kb"));
        // A one-off step inside the floor: flat.
        let s = series(|i| TreePoint {
            rss_kb: if i < 30 { 1800 } else { 2100 },
            ..TreePoint::default()
        });
        assert!(verdict(&s, "rss_kb"));
        // Falling is never growth.
        let s = series(|i| TreePoint {
            fds: 100 - i as u64,
            ..TreePoint::default()
        });
        assert!(verdict(&s, "fds"));
        // Too few samples after the warm-up: no verdict at all.
        assert!(trends(&s[..7], 5.0, TOL).is_empty());
    }

    #[test]
    fn before_and_after() {
        let before = TreePoint {
            fds: 10,
            root_fds: 6,
            ..TreePoint::default()
        };
        let same = before_after(before.clone(), before.clone(), TOL);
        assert!(same.ok && same.fd_delta == 0);
        let leaked = TreePoint {
            root_fds: 7,
            ..before.clone()
        };
        let r = before_after(before.clone(), leaked, TOL);
        assert!(!r.ok && r.root_fd_delta == 1);
        let zombie = TreePoint {
            zombies: 1,
            ..before.clone()
        };
        assert!(!before_after(before, zombie, TOL).ok);
    }
}
