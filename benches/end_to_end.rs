//! End to end: the real forkd binary serving the embedded demo site's 2 KB page on loopback, in
//! prefork and fork modes, with keep-alive and with a new connection per request, driven by
//! forkd-loadgen's engine with 16 connections. Criterion counts one element per request, so
//! its throughput line reads in requests per second.
//!
//! Run: `cargo bench --bench end_to_end`. The client shares the machine with the server, so
//! the figures are for comparing modes and commits on one machine, not absolute capacity.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use forkd_loadgen::engine::{self, LoadConfig, Shared};
use forkd_loadgen::request::{build_request, schedule};
use forkd_loadgen::stats::Tally;

const CONNECTIONS: usize = 16;
const PATH: &str = "/bench/2k.html";

/// A forkd started for the benchmark; the whole process group is ended on drop.
struct Forkd {
    child: Child,
    addr: SocketAddr,
}

impl Forkd {
    fn start(mode: &str) -> Forkd {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(env!("CARGO_BIN_EXE_forkd"))
            // One address carries every client of a benchmark: no per-client limit.
            .args([
                "--listen",
                "127.0.0.1:0",
                "--mode",
                mode,
                "--max-conns-per-client",
                "0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start forkd");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                _ => panic!("forkd exited before it was ready"),
            };
            if let Some(rest) = line.split("ready on http://").nth(1) {
                break rest.split('/').next().unwrap().parse().expect("address");
            }
        };
        // Keep draining stderr so forkd never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Forkd { child, addr }
    }
}

impl Drop for Forkd {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Sends `requests` requests over `CONNECTIONS` connections and returns the wall time taken.
fn run_load(addr: SocketAddr, requests: u64, new_conn: bool) -> Duration {
    let cfg = Arc::new(LoadConfig {
        addr,
        requests: vec![build_request(
            "GET",
            PATH,
            &addr.to_string(),
            &[],
            new_conn,
            None,
        )],
        head: false,
        schedule: schedule(&[1]),
        connections: CONNECTIONS,
        threads: 2,
        new_conn,
        pipeline: 1,
        rate: None,
        limit: Some(requests),
        timeout: Duration::from_secs(10),
    });
    let shared = Arc::new(Shared::new(cfg.threads));
    let start = Instant::now();
    let handles = engine::start(cfg, shared).expect("start the load");
    let mut tally = Tally::new();
    for h in handles {
        tally.merge(&h.join().expect("load thread").expect("load"));
    }
    let elapsed = start.elapsed();
    assert_eq!(
        tally.error_count(),
        0,
        "errors during the benchmark: {:?}",
        tally.errors_by_kind()
    );
    assert_eq!(tally.responses(), requests);
    elapsed
}

fn serve_2k(c: &mut Criterion) {
    for mode in ["prefork", "fork"] {
        let server = Forkd::start(mode);
        let mut group = c.benchmark_group(format!("{mode}-2k"));
        group.throughput(Throughput::Elements(1));
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(5));
        for (name, new_conn) in [("keep-alive", false), ("new-connection", true)] {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| run_load(server.addr, iters.max(1), new_conn))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, serve_2k);
criterion_main!(benches);
