//! How many children this machine can hold: a bound that load can never exceed, derived from
//! available memory and the measured size of a child, and capped (incident 002: prefork given
//! more children than memory, then thrashing).

use std::io;

use crate::procfs::parse_status_kb;

/// Never more than this many children, whatever the memory says.
pub const CHILDREN_CAP: usize = 1024;

/// Share of available memory the children may take by default.
const DEFAULT_SHARE: f64 = 0.5;

/// Kernel memory per connection not visible in a child's RSS (socket buffers at their
/// default sizes, page tables, task structures): an estimate, kept deliberately high.
const KERNEL_PER_CHILD: u64 = 512 * 1024;

/// Memory available to this process: `MemAvailable` from /proc/meminfo, lowered to the cgroup
/// v2 limit minus usage when one is set (a container's own ceiling, incident 003).
pub fn available_memory() -> io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let mut avail = parse_status_kb(&meminfo, "MemAvailable")
        .ok_or_else(|| io::Error::other("no MemAvailable in /proc/meminfo"))?
        * 1024;
    if let Some(cg) = cgroup_headroom() {
        avail = avail.min(cg);
    }
    Ok(avail)
}

fn cgroup_headroom() -> Option<u64> {
    let rel = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = rel.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = format!("/sys/fs/cgroup{path}");
    let max = std::fs::read_to_string(format!("{dir}/memory.max")).ok()?;
    let max: u64 = max.trim().parse().ok()?; // "max" means no limit
    let cur: u64 = std::fs::read_to_string(format!("{dir}/memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(max.saturating_sub(cur))
}

/// The estimated cost of one child: the master's resident size (a child starts as a copy and
/// dirties its share of it over time) plus kernel memory per connection.
pub fn child_cost() -> u64 {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_status_kb(&s, "VmRSS"))
        .unwrap_or(4096)
        * 1024;
    rss + KERNEL_PER_CHILD
}

/// The default bound: half of available memory divided by the cost of a child, capped.
pub fn default_children(available: u64, cost: u64) -> usize {
    (((available as f64 * DEFAULT_SHARE) / cost.max(1) as f64) as usize).clamp(1, CHILDREN_CAP)
}

/// Refuses a configured count the machine cannot hold.
pub fn check_children(wanted: usize, available: u64, cost: u64, flag: &str) -> Result<(), String> {
    let need = wanted as u64 * cost;
    if wanted > CHILDREN_CAP {
        return Err(format!(
            "{flag} {wanted} is above the hard cap of {CHILDREN_CAP} children"
        ));
    }
    if need > available {
        return Err(format!(
            "{flag} {wanted} needs about {} MiB ({} KiB per child) but only {} MiB is available; \
             at most {} children fit",
            need >> 20,
            cost >> 10,
            available >> 20,
            available / cost.max(1)
        ));
    }
    Ok(())
}

/// Fds an event worker with a table of `connections` may need at once: a socket per
/// connection, a file per connection sending one with `sendfile`, and room for the rest (std
/// streams, listeners, epoll, the access log, the docroot).
pub fn event_fds(connections: usize) -> u64 {
    (connections as u64).saturating_mul(2).saturating_add(64)
}

/// The fd limit (`RLIMIT_NOFILE`): (soft, hard).
pub fn fd_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, Resource};
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?)
}

/// Raises the soft fd limit to `wanted` (children inherit it at fork), within the hard limit;
/// returns the soft limit in force. Never lowers it.
pub fn raise_fd_limit(wanted: u64) -> io::Result<u64> {
    use nix::sys::resource::{setrlimit, Resource};
    let (soft, hard) = fd_limit()?;
    let target = wanted.min(hard);
    if target <= soft {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_follows_memory_and_is_capped() {
        assert_eq!(default_children(100 << 20, 5 << 20), 10);
        assert_eq!(default_children(1 << 40, 1 << 20), CHILDREN_CAP);
        assert_eq!(default_children(0, 1 << 20), 1);
        assert!(check_children(10, 100 << 20, 5 << 20, "--workers").is_ok());
        let err = check_children(100, 100 << 20, 5 << 20, "--workers").unwrap_err();
        assert!(
            err.contains("--workers 100") && err.contains("at most 20"),
            "{err}"
        );
        assert!(check_children(2000, u64::MAX / 4, 1, "--max-children").is_err());
    }

    #[test]
    fn reads_this_machine() {
        assert!(available_memory().unwrap() > 0);
        assert!(child_cost() > KERNEL_PER_CHILD);
    }
}
