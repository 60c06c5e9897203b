//! Who used the CPU during a run: the whole machine from `/proc/stat`, the target's process tree
//! and this process from their `/proc/PID/stat`. What is left, "other", is load that neither the
//! server nor the load generator made (builds, other benchmarks): a run with much of it measured
//! the machine's neighbours as much as the server, and `compare` flags it.
//!
//! All in clock ticks of `USER_HZ`, which Linux fixes at 100 for every /proc reader whatever the
//! kernel's own tick rate.

use std::fs;
use std::io;
use std::time::{Duration, Instant};

use forkd_daemon::procfs;

/// Clock ticks per second in /proc (USER_HZ).
const TICKS_PER_S: f64 = 100.0;

/// One reading of the three counters.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    at: Instant,
    /// Busy ticks of all CPUs together (everything but idle and iowait).
    machine: u64,
    /// Ticks of the target's tree, its reaped children included.
    tree: u64,
    /// Ticks of this process, every thread.
    own: u64,
}

impl Snapshot {
    /// Reads the counters now; `tree` is the target's root pid, if there is one to leave out.
    pub fn take(tree: Option<i32>) -> io::Result<Snapshot> {
        let machine = parse_machine(&fs::read_to_string("/proc/stat")?)
            .ok_or_else(|| io::Error::other("unreadable /proc/stat"))?;
        let tree = match tree {
            Some(pid) => tree_ticks(pid)?,
            None => 0,
        };
        let own = parse_process(&fs::read_to_string("/proc/self/stat")?, false)
            .ok_or_else(|| io::Error::other("unreadable /proc/self/stat"))?;
        Ok(Snapshot {
            at: Instant::now(),
            machine,
            tree,
            own,
        })
    }

    /// CPUs' worth of time (1.0: one CPU busy the whole time) used by other processes between
    /// `earlier` and this snapshot.
    pub fn other_since(&self, earlier: &Snapshot) -> f64 {
        let secs = self.at.duration_since(earlier.at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        let machine = self.machine.saturating_sub(earlier.machine);
        let ours = self.tree.saturating_sub(earlier.tree) + self.own.saturating_sub(earlier.own);
        machine.saturating_sub(ours) as f64 / TICKS_PER_S / secs
    }
}

/// Waits, at most `limit`, until other processes use less than `below` CPUs over a quarter of a
/// second; returns the last figure seen (quiet or not).
pub fn wait_quiet(below: f64, limit: Duration) -> io::Result<f64> {
    let end = Instant::now() + limit;
    loop {
        let a = Snapshot::take(None)?;
        std::thread::sleep(Duration::from_millis(250));
        let other = Snapshot::take(None)?.other_since(&a);
        if other < below || Instant::now() >= end {
            return Ok(other);
        }
    }
}

/// Ticks used by the tree of `pid`: every live process's own time and what its reaped children
/// used (`cutime`, `cstime`), so a fork-mode child that ends during the run is still counted,
/// in its parent, once it is reaped.
fn tree_ticks(pid: i32) -> io::Result<u64> {
    let mut total = 0;
    for (i, p) in procfs::descendants_with_root(pid)?.into_iter().enumerate() {
        match fs::read_to_string(format!("/proc/{p}/stat")) {
            Ok(stat) => total += parse_process(&stat, true).unwrap_or(0),
            Err(e) if i > 0 && procfs::is_gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// The busy ticks of the `cpu` line of /proc/stat: user, nice, system, irq, softirq, steal
/// (guest time is already inside user).
fn parse_machine(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some(v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0))
}

/// utime + stime of a /proc/PID/stat line, plus cutime + cstime with `children`.
fn parse_process(stat: &str, children: bool) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
    let field = |n: usize| f.get(n - 3)?.parse::<i64>().ok();
    let own = field(14)? + field(15)?;
    let reaped = if children { field(16)? + field(17)? } else { 0 };
    Some((own + reaped).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        assert_eq!(parse_machine(stat), Some(161));
        let p = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 11 13 20 0 1 0 5 1000 50";
        assert_eq!(parse_process(p, false), Some(10));
        assert_eq!(parse_process(p, true), Some(34));
        assert_eq!(parse_process("garbage", true), None);
    }

    #[test]
    fn this_process_counts_as_its_own() {
        let a = Snapshot::take(None).unwrap();
        let end = Instant::now() + Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < end {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let b = Snapshot::take(None).unwrap();
        // Busy for 0.3 s: the ticks are this process's, whatever else the machine did.
        assert!(b.own > a.own && b.machine >= a.machine, "{a:?} {b:?}");
        let other = b.other_since(&a);
        let cpus = std::thread::available_parallelism().unwrap().get() as f64;
        // Ticks are counted in whole hundredths: a little over the CPUs is rounding.
        assert!((0.0..=cpus + 0.5).contains(&other), "{other}");
    }
}
