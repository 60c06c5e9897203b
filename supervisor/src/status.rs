//! What the supervisor shows the outside world: the status file (JSON, written atomically with
//! forkd's `write_atomic` so a reader never sees half of it), its human summary for
//! `forkd-supervisor status`, and the same numbers in the Prometheus text format.
//!
//! Everything here renders a [`Status`] it is given; it neither samples nor decides.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One restart and why it happened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RestartRecord {
    pub at_unix: u64,
    pub reason: String,
}

/// The supervisor's state as last written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub supervisor_pid: u32,
    /// The state machine's state, or `exited` once the supervisor has ended.
    pub state: String,
    /// Set when the supervisor has ended: its exit code and why.
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub exit_reason: Option<String>,
    pub command: Vec<String>,
    pub child_pid: Option<i32>,
    pub child_started_unix: Option<u64>,
    pub child_uptime_s: Option<f64>,
    pub ready: bool,
    /// The child's last `STATUS=` over the notify socket.
    pub child_status: Option<String>,
    pub restarts_total: u64,
    /// The most recent restarts, oldest first.
    pub recent_restarts: Vec<RestartRecord>,
    pub last_exit: Option<String>,
    pub next_start_in_s: Option<f64>,
    pub backoff_failures: u32,
    pub budget_used: usize,
    pub budget_max: u32,
    pub health_consecutive_failures: u32,
    pub health_last: Option<String>,
    /// Whether the supervisor could gather evidence at the last try, and if not, why.
    pub observing: bool,
    pub cannot_observe_reason: Option<String>,
    /// The latest sample of the child's tree, by resource (bytes for rss/pss).
    pub sample: BTreeMap<String, u64>,
    /// The highest value seen per resource since the supervisor started.
    pub maxheld: BTreeMap<String, u64>,
    /// Limits in force, by counter name.
    pub limits: BTreeMap<String, u64>,
    /// Samples over each limit (the `failcnt`).
    pub failcnt: BTreeMap<String, u64>,
    /// Event counters: probe_failures, cannot_observe, recycles, watchdog_misses, ...
    pub counters: BTreeMap<String, u64>,
    pub updated_unix: u64,
}

impl Status {
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        json.push(b'\n');
        forkd_daemon::atomic::write_atomic(path, &json, 0o644)
    }

    pub fn read(path: &Path) -> Result<Status, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("unable to read {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a status file: {e}", path.display()))
    }

    /// The summary `forkd-supervisor status` prints.
    pub fn summary(&self, alive: bool) -> String {
        let mut s = String::new();
        let sup = if alive {
            "running"
        } else {
            "NOT RUNNING (stale file)"
        };
        let _ = writeln!(s, "supervisor  pid {} {sup}", self.supervisor_pid);
        let _ = writeln!(s, "state       {}", self.state);
        if let Some(code) = self.exit_code {
            let why = self.exit_reason.as_deref().unwrap_or("");
            let _ = writeln!(s, "exited      code {code}: {why}");
        }
        let _ = writeln!(s, "command     {}", self.command.join(" "));
        match (self.child_pid, self.child_uptime_s) {
            (Some(pid), Some(up)) => {
                let ready = if self.ready { "ready" } else { "not ready" };
                let _ = writeln!(s, "child       pid {pid}, up {up:.1}s, {ready}");
            }
            _ => {
                let _ = writeln!(s, "child       none");
            }
        }
        if let Some(st) = &self.child_status {
            let _ = writeln!(s, "child says  {st}");
        }
        if let Some(n) = self.next_start_in_s {
            let _ = writeln!(s, "next start  in {n:.1}s");
        }
        let budget = if self.budget_max == 0 {
            "no budget".to_string()
        } else {
            format!("{}/{} of the budget", self.budget_used, self.budget_max)
        };
        let _ = writeln!(s, "restarts    {} total, {budget}", self.restarts_total);
        for r in self.recent_restarts.iter().rev().take(5) {
            let _ = writeln!(s, "            at {}: {}", r.at_unix, r.reason);
        }
        if let Some(e) = &self.last_exit {
            let _ = writeln!(s, "last exit   {e}");
        }
        let health = self.health_last.as_deref().unwrap_or("no probe yet");
        let _ = writeln!(
            s,
            "health      {health} ({} failure(s) in a row)",
            self.health_consecutive_failures
        );
        if !self.observing {
            let why = self.cannot_observe_reason.as_deref().unwrap_or("unknown");
            let _ = writeln!(s, "observing   CANNOT OBSERVE: {why}");
        }
        if !self.sample.is_empty() {
            let parts: Vec<String> = self
                .sample
                .iter()
                .map(|(k, v)| {
                    let held = self.maxheld.get(k).copied().unwrap_or(*v);
                    format!("{k}={} (max {})", show(k, *v), show(k, held))
                })
                .collect();
            let _ = writeln!(s, "resources   {}", parts.join(", "));
        }
        if !self.limits.is_empty() {
            let parts: Vec<String> = self
                .limits
                .iter()
                .map(|(k, v)| {
                    let hits = self.failcnt.get(k).copied().unwrap_or(0);
                    format!("{k}<={} failcnt {hits}", show(k, *v))
                })
                .collect();
            let _ = writeln!(s, "limits      {}", parts.join(", "));
        }
        let counters: Vec<String> = self
            .counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(s, "counters    {}", counters.join(", "));
        s
    }

    /// The Prometheus text exposition of the same numbers.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(s, "# HELP forkd_supervisor_{name} {help}");
            let _ = writeln!(s, "# TYPE forkd_supervisor_{name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(s, "forkd_supervisor_{name}{labels} {v}");
            }
        };
        let one = |v: f64| vec![(String::new(), v)];
        metric(
            "child_up",
            "gauge",
            "1 when a child is running.",
            one(self.child_pid.is_some() as u8 as f64),
        );
        metric(
            "child_ready",
            "gauge",
            "1 when the child declared or showed readiness.",
            one(self.ready as u8 as f64),
        );
        metric(
            "child_uptime_seconds",
            "gauge",
            "Seconds since the current child started.",
            one(self.child_uptime_s.unwrap_or(0.0)),
        );
        metric(
            "restarts_total",
            "counter",
            "Restarts of the child.",
            one(self.restarts_total as f64),
        );
        metric(
            "observing",
            "gauge",
            "0 while the supervisor cannot gather evidence about the child (its own trouble).",
            one(self.observing as u8 as f64),
        );
        metric(
            "health_consecutive_failures",
            "gauge",
            "Failed health probes in a row.",
            one(self.health_consecutive_failures as f64),
        );
        let label = |k: &str, v: &str| format!("{{{k}=\"{v}\"}}");
        metric(
            "resource",
            "gauge",
            "Latest sample of the child's process tree (bytes for rss/pss).",
            self.sample
                .iter()
                .map(|(k, v)| (label("resource", k), *v as f64))
                .collect(),
        );
        metric(
            "resource_maxheld",
            "gauge",
            "Highest sample seen per resource.",
            self.maxheld
                .iter()
                .map(|(k, v)| (label("resource", k), *v as f64))
                .collect(),
        );
        metric(
            "limit",
            "gauge",
            "Configured limits (a *-slope limit is per minute).",
            self.limits
                .iter()
                .map(|(k, v)| (label("limit", k), *v as f64))
                .collect(),
        );
        metric(
            "limit_failcnt_total",
            "counter",
            "Samples in which a limit was exceeded, like failcnt in user_beancounters.",
            self.failcnt
                .iter()
                .map(|(k, v)| (label("limit", k), *v as f64))
                .collect(),
        );
        metric(
            "events_total",
            "counter",
            "Supervisor events by kind.",
            self.counters
                .iter()
                .map(|(k, v)| (label("event", k), *v as f64))
                .collect(),
        );
        s
    }
}

fn show(key: &str, v: u64) -> String {
    if key.starts_with("rss") || key.starts_with("pss") {
        format!("{:.1}MiB", v as f64 / (1 << 20) as f64)
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_renders() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("status.json");
        let mut st = Status {
            supervisor_pid: 7,
            state: "running".into(),
            child_pid: Some(8),
            child_uptime_s: Some(1.5),
            ready: true,
            restarts_total: 2,
            observing: false,
            cannot_observe_reason: Some("EMFILE".into()),
            ..Default::default()
        };
        st.sample.insert("fds".into(), 12);
        st.sample.insert("rss".into(), 3 << 20);
        st.failcnt.insert("fds".into(), 4);
        st.limits.insert("fds".into(), 10);
        st.write(&p).unwrap();
        let back = Status::read(&p).unwrap();
        assert_eq!(back, st);
        let text = back.summary(true);
        assert!(text.contains("CANNOT OBSERVE: EMFILE"), "{text}");
        assert!(text.contains("rss=3.0MiB"), "{text}");
        assert!(text.contains("fds<=10 failcnt 4"), "{text}");
        let prom = back.prometheus();
        assert!(
            prom.contains("forkd_supervisor_restarts_total 2\n"),
            "{prom}"
        );
        assert!(
            prom.contains("forkd_supervisor_resource{resource=\"fds\"} 12\n"),
            "{prom}"
        );
        assert!(
            prom.contains("forkd_supervisor_limit_failcnt_total{limit=\"fds\"} 4\n"),
            "{prom}"
        );
        assert!(prom.contains("forkd_supervisor_observing 0\n"), "{prom}");
    }
}
