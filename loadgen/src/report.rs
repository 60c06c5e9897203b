//! Turning a finished run into its outputs: the wrk-like summary for people, JSON for machines,
//! the CSV time series and the SVG plot. Nothing here measures anything.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde_json::{json, Value};

use crate::abuse::AbuseReport;
use crate::stats::{LatencySummary, Tally};
use crate::watch::{BeforeAfter, Point, Tolerance, Trend};

/// What the watcher concluded about the target's tree.
#[derive(Debug, Clone)]
pub struct WatchReport {
    pub pid: i32,
    pub warmup_s: f64,
    pub tolerance: Tolerance,
    pub trends: Vec<Trend>,
    pub before_after: Option<BeforeAfter>,
    /// Why sampling stopped early (the target exited, /proc unreadable), if it did.
    pub error: Option<String>,
}

impl WatchReport {
    /// Flat means: sampled to the end, enough samples to judge, every trend flat, and the tree
    /// back to its fds with no zombies after the load.
    pub fn flat(&self) -> bool {
        self.error.is_none()
            && !self.trends.is_empty()
            && self.trends.iter().all(|t| t.flat)
            && self.before_after.as_ref().is_some_and(|b| b.ok)
    }
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Report {
    pub url: String,
    /// `closed` or `open`.
    pub mode: &'static str,
    pub rate: Option<f64>,
    pub connections: usize,
    pub threads: usize,
    pub keep_alive: bool,
    /// Requests in flight per connection (1: not pipelined).
    pub pipeline: usize,
    pub elapsed_s: f64,
    pub tally: Tally,
    pub series: Vec<Point>,
    pub watch: Option<WatchReport>,
    pub abuse: Vec<AbuseReport>,
}

impl Report {
    pub fn requests_per_sec(&self) -> f64 {
        per_sec(self.tally.responses(), self.elapsed_s)
    }

    pub fn bytes_per_sec(&self) -> f64 {
        per_sec(self.tally.bytes, self.elapsed_s)
    }

    /// The wrk-like text summary.
    pub fn human(&self) -> String {
        let t = &self.tally;
        let l = t.latency_summary();
        let mut s = String::new();
        let how = match (self.keep_alive, self.pipeline) {
            (true, 1) => "keep-alive".to_string(),
            (true, n) => format!("keep-alive, {n} pipelined"),
            (false, _) => "new connection per request".to_string(),
        };
        let _ = writeln!(s, "Ran {:.2}s test @ {}", self.elapsed_s, self.url);
        let _ = match self.rate {
            Some(r) => writeln!(
                s,
                "  {} threads and {} connections, {how}, open loop at {r} req/s (latency from intended send time)",
                self.threads, self.connections
            ),
            None => writeln!(
                s,
                "  {} threads and {} connections, {how}, closed loop",
                self.threads, self.connections
            ),
        };
        let _ = writeln!(
            s,
            "  Latency    avg {}  stdev {}  max {}",
            us(l.mean),
            us(l.stdev),
            us(l.max as f64)
        );
        let _ = writeln!(s, "  Latency Distribution");
        for (q, v) in [
            ("50%", l.p50),
            ("75%", l.p75),
            ("90%", l.p90),
            ("99%", l.p99),
            ("99.9%", l.p999),
        ] {
            let _ = writeln!(s, "   {q:>6}  {}", us(v as f64));
        }
        let _ = writeln!(
            s,
            "  {} responses in {:.2}s, {} read, {} connections opened",
            t.responses(),
            self.elapsed_s,
            bytes(t.bytes as f64),
            t.connects
        );
        let errors: Vec<String> = t
            .errors_by_kind()
            .iter()
            .filter(|e| e.1 > 0)
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        if errors.is_empty() {
            let _ = writeln!(s, "  Errors: none");
        } else {
            let _ = writeln!(s, "  Errors: {}", errors.join(", "));
        }
        let odd: Vec<String> = t
            .statuses
            .iter()
            .enumerate()
            .filter(|(code, n)| **n > 0 && !(200..400).contains(code))
            .map(|(code, n)| format!("{code}: {n}"))
            .collect();
        if !odd.is_empty() {
            let _ = writeln!(s, "  Non-2xx or 3xx responses: {}", odd.join(", "));
        }
        if t.unfinished > 0 {
            let _ = writeln!(s, "  Unfinished at stop: {}", t.unfinished);
        }
        if t.starved > 0 {
            let _ = writeln!(s, "  Connections never answered: {}", t.starved);
        }
        let _ = writeln!(s, "Requests/sec: {:>10.2}", self.requests_per_sec());
        let _ = writeln!(s, "Transfer/sec: {:>10}", bytes(self.bytes_per_sec()));
        for a in &self.abuse {
            let _ = writeln!(s, "{}", a.human());
        }
        if let Some(w) = &self.watch {
            s.push_str(&watch_human(w));
        }
        s
    }

    pub fn json(&self) -> Value {
        let t = &self.tally;
        let statuses: serde_json::Map<String, Value> = t
            .statuses
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(code, n)| (code.to_string(), json!(n)))
            .collect();
        let errors: serde_json::Map<String, Value> = t
            .errors_by_kind()
            .iter()
            .map(|(k, n)| (k.name().to_string(), json!(n)))
            .collect();
        json!({
            "url": self.url,
            "mode": self.mode,
            "rate": self.rate,
            "connections": self.connections,
            "threads": self.threads,
            "keep_alive": self.keep_alive,
            "pipeline": self.pipeline,
            "duration_s": self.elapsed_s,
            "requests": t.responses(),
            "errors_total": t.error_count(),
            "requests_per_sec": self.requests_per_sec(),
            "bytes": t.bytes,
            "bytes_per_sec": self.bytes_per_sec(),
            "connects": t.connects,
            "unfinished": t.unfinished,
            "starved_connections": t.starved,
            "latency_us": latency_json(&t.latency_summary()),
            "status": statuses,
            "errors": errors,
            "abuse": self.abuse.iter().map(AbuseReport::json).collect::<Vec<_>>(),
            "watch": self.watch.as_ref().map(watch_json),
        })
    }
}

fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn latency_json(l: &LatencySummary) -> Value {
    json!({
        "min": l.min, "mean": l.mean, "stdev": l.stdev, "max": l.max,
        "p50": l.p50, "p75": l.p75, "p90": l.p90, "p99": l.p99, "p999": l.p999,
    })
}

fn tree_json(p: &crate::watch::TreePoint) -> Value {
    let tcp: serde_json::Map<String, Value> = p
        .tcp
        .iter()
        .map(|(k, n)| (k.to_string(), json!(n)))
        .collect();
    json!({
        "processes": p.processes, "fds": p.fds, "rss_kb": p.rss_kb, "pss_kb": p.pss_kb,
        "zombies": p.zombies, "root_fds": p.root_fds, "root_rss_kb": p.root_rss_kb, "tcp": tcp,
    })
}

fn watch_json(w: &WatchReport) -> Value {
    json!({
        "pid": w.pid,
        "flat": w.flat(),
        "warmup_s": w.warmup_s,
        "tolerance": {
            "count": w.tolerance.count,
            "mem_fraction": w.tolerance.mem_fraction,
            "mem_floor_kb": w.tolerance.mem_floor_kb,
        },
        "error": w.error,
        "trends": w.trends.iter().map(|t| json!({
            "metric": t.metric, "samples": t.samples, "first": t.first, "last": t.last,
            "slope_per_s": t.slope_per_s, "growth": t.growth, "growth_stderr": t.growth_stderr,
            "tolerance": t.tolerance, "flat": t.flat,
        })).collect::<Vec<_>>(),
        "before": w.before_after.as_ref().map(|b| tree_json(&b.before)),
        "after": w.before_after.as_ref().map(|b| tree_json(&b.after)),
        "fd_delta": w.before_after.as_ref().map(|b| b.fd_delta),
        "root_fd_delta": w.before_after.as_ref().map(|b| b.root_fd_delta),
    })
}

fn watch_human(w: &WatchReport) -> String {
    let mut s = String::new();
    let verdict = if w.flat() { "FLAT" } else { "NOT FLAT" };
    let _ = writeln!(
        s,
        "Watched pid {} (tree): {verdict}  [linear fit after {:.0}s warm-up; growth over the run minus 3 standard errors must stay within tolerance: counts {}, memory max({:.0}%, {} KiB)]",
        w.pid,
        w.warmup_s,
        w.tolerance.count,
        w.tolerance.mem_fraction * 100.0,
        w.tolerance.mem_floor_kb
    );
    if let Some(e) = &w.error {
        let _ = writeln!(s, "  sampling stopped: {e}");
    }
    if w.trends.is_empty() {
        let _ = writeln!(s, "  too few samples after the warm-up to judge (run longer or lower --warmup/--interval)");
    }
    for t in &w.trends {
        let _ = writeln!(
            s,
            "  {:<12} {:>10.0} -> {:<10.0} growth {:>+10.1} ±{:<8.1} tol {:<8.1} {}",
            t.metric,
            t.first,
            t.last,
            t.growth,
            t.growth_stderr,
            t.tolerance,
            if t.flat { "flat" } else { "GROWING" }
        );
    }
    if let Some(b) = &w.before_after {
        let _ = writeln!(
            s,
            "  before/after load: fds {} -> {} ({:+}), root fds {} -> {} ({:+}), processes {} -> {}, zombies after {}, RSS {} -> {} KiB, root RSS {} -> {} KiB{}",
            b.before.fds,
            b.after.fds,
            b.fd_delta,
            b.before.root_fds,
            b.after.root_fds,
            b.root_fd_delta,
            b.before.processes,
            b.after.processes,
            b.after.zombies,
            b.before.rss_kb,
            b.after.rss_kb,
            b.before.root_rss_kb,
            b.after.root_rss_kb,
            if b.ok { "" } else { "  <- NOT BACK TO BEFORE" }
        );
        let tcp: Vec<String> = b
            .after
            .tcp
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(s, "  TCP sockets after: {}", tcp.join(", "));
    }
    s
}

/// Formats microseconds the way wrk does.
pub fn us(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.2}s", v / 1_000_000.0)
    } else if v >= 1000.0 {
        format!("{:.2}ms", v / 1000.0)
    } else {
        format!("{v:.0}us")
    }
}

pub fn bytes(v: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut v = v;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2}{}", UNITS[u])
}

pub const CSV_HEADER: &str = "t_s,responses,errors,rps,processes,fds,rss_kb,pss_kb,zombies,root_fds,root_rss_kb,\
tcp_established,tcp_syn_sent,tcp_syn_recv,tcp_fin_wait1,tcp_fin_wait2,tcp_time_wait,tcp_close,tcp_close_wait,tcp_last_ack,tcp_listen,tcp_closing";

/// The time series as CSV, one row per sample; tree columns are empty when nothing is watched.
pub fn csv(series: &[Point]) -> String {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for p in series {
        let _ = write!(s, "{:.3},{},{},{:.1}", p.t, p.responses, p.errors, p.rps);
        match &p.tree {
            Some(t) => {
                let pss = t.pss_kb.map(|v| v.to_string()).unwrap_or_default();
                let _ = write!(
                    s,
                    ",{},{},{},{pss},{},{},{}",
                    t.processes, t.fds, t.rss_kb, t.zombies, t.root_fds, t.root_rss_kb
                );
                for (_, n) in t.tcp.iter() {
                    let _ = write!(s, ",{n}");
                }
            }
            None => s.push_str(&",".repeat(18)),
        }
        s.push('\n');
    }
    s
}

/// One panel of the plot: its caption and its named lines.
type Panel<'a> = (&'a str, Vec<(&'a str, Vec<(f64, f64)>)>);

/// Draws throughput, fds, memory and processes over time, and latency by percentile, into an
/// SVG file.
pub fn plot(
    path: &Path,
    title: &str,
    series: &[Point],
    latency: &Histogram<u64>,
) -> Result<(), String> {
    let tmax = series.last().map_or(1.0, |p| p.t).max(1.0);
    // Without --watch-pid there is nothing but throughput to draw over time: one panel, not
    // four; the latency percentiles go below, in a panel of their own.
    let watched = series.iter().any(|p| p.tree.is_some());
    let over_height = if watched { 1060 } else { 360 };
    let root = SVGBackend::new(path, (960, over_height + 340)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let (over_time, tail) = root.split_vertically(over_height);
    crate::plot::percentiles(
        &tail,
        "Latency by percentile",
        &[("latency".into(), latency)],
    )?;
    let panels = over_time.split_evenly((if watched { 4 } else { 1 }, 1));
    let tree = |f: fn(&crate::watch::TreePoint) -> f64| -> Vec<(f64, f64)> {
        series
            .iter()
            .filter_map(|p| Some((p.t, f(p.tree.as_ref()?))))
            .collect()
    };
    let rps: Vec<(f64, f64)> = series.iter().skip(1).map(|p| (p.t, p.rps)).collect();
    // Errors per interval, from the running total each point carries.
    let errors: Vec<(f64, f64)> = series
        .windows(2)
        .filter_map(|w| match w {
            [a, b] => Some((
                b.t,
                b.errors.saturating_sub(a.errors) as f64 / (b.t - a.t).max(1e-9),
            )),
            _ => None,
        })
        .collect();
    let charts: [Panel; 4] = [
        (
            "Throughput and errors (per second)",
            vec![("responses/s", rps), ("errors/s", errors)],
        ),
        (
            "Open fds",
            vec![
                ("tree", tree(|t| t.fds as f64)),
                ("root process", tree(|t| t.root_fds as f64)),
            ],
        ),
        (
            "Memory (MiB)",
            vec![
                ("tree RSS", tree(|t| t.rss_kb as f64 / 1024.0)),
                ("tree PSS", tree(|t| t.pss_kb.unwrap_or(0) as f64 / 1024.0)),
                ("root RSS", tree(|t| t.root_rss_kb as f64 / 1024.0)),
            ],
        ),
        (
            "Processes and sockets",
            vec![
                ("processes", tree(|t| t.processes as f64)),
                ("zombies", tree(|t| t.zombies as f64)),
                ("ESTABLISHED", tree(|t| t.tcp.established as f64)),
                ("CLOSE_WAIT", tree(|t| t.tcp.close_wait as f64)),
            ],
        ),
    ];
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for (area, (caption, lines)) in panels.iter().zip(charts) {
        let ymax = lines
            .iter()
            .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
            .fold(0.0f64, f64::max);
        let ymax = if ymax > 0.0 { ymax * 1.15 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..tmax, 0.0..ymax)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_label_formatter(&|v| crate::plot::human(*v))
            .draw()
            .map_err(|e| e.to_string())?;
        for ((name, pts), color) in lines.into_iter().zip(colors) {
            if pts.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::TreePoint;

    fn sample_report() -> Report {
        let mut tally = Tally::new();
        for i in 0..100 {
            tally.record_response(200, 100 + i);
        }
        tally.record_response(503, 50);
        tally.record_error(crate::stats::ErrorKind::Timeout);
        tally.bytes = 4096;
        let series = (0..5)
            .map(|i| Point {
                t: i as f64,
                responses: 20 * i,
                errors: 0,
                rps: 20.0,
                tree: (i > 0).then(|| TreePoint {
                    processes: 3,
                    fds: 12,
                    rss_kb: 3000,
                    pss_kb: Some(1500),
                    root_fds: 6,
                    root_rss_kb: 1000,
                    ..TreePoint::default()
                }),
            })
            .collect();
        Report {
            url: "http://127.0.0.1:1/".into(),
            mode: "closed",
            rate: None,
            connections: 2,
            threads: 1,
            keep_alive: true,
            pipeline: 1,
            elapsed_s: 2.0,
            tally,
            series,
            watch: None,
            abuse: Vec::new(),
        }
    }

    #[test]
    fn json_has_the_fields_scripts_read() {
        let j = sample_report().json();
        assert_eq!(j["requests"], 101);
        assert_eq!(j["requests_per_sec"], 50.5);
        assert_eq!(j["errors"]["timeout"], 1);
        assert_eq!(j["errors"]["bad_status"], 1);
        assert_eq!(j["errors_total"], 2);
        assert_eq!(j["status"]["503"], 1);
        assert_eq!(j["latency_us"]["p50"], 149);
        assert!(j["watch"].is_null());
    }

    #[test]
    fn csv_rows_match_the_header() {
        let text = csv(&sample_report().series);
        let cols = CSV_HEADER.split(',').count();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6);
        for l in &lines {
            assert_eq!(l.split(',').count(), cols, "{l}");
        }
        assert!(lines[2].starts_with("1.000,20,0,20.0,3,12,3000,1500,0,6,1000,0,"));
    }

    #[test]
    fn human_summary_and_plot() {
        let r = sample_report();
        let h = r.human();
        assert!(h.contains("Requests/sec:      50.50"), "{h}");
        assert!(h.contains("timeout 1, bad_status 1"), "{h}");
        assert!(h.contains("503: 1"), "{h}");
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("p.svg");
        plot(&svg, "test", &r.series, &r.tally.latency).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg") && text.contains("Open fds"));
        assert!(text.contains("errors/s"), "errors over time are drawn");
        assert!(
            text.contains("Latency by percentile") && text.contains("99%"),
            "{text}"
        );
        // Without a watched tree: throughput and errors only.
        let mut bare = r.series.clone();
        for p in &mut bare {
            p.tree = None;
        }
        plot(&svg, "test", &bare, &r.tally.latency).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("errors/s") && !text.contains("Open fds"));
        assert_eq!(us(1500.0), "1.50ms");
        assert_eq!(bytes(2048.0), "2.00KB");
    }
}
