//! Issue 12's proof: `deploy/cluster/cluster.sh` starts three forkd hosts under
//! forkd-supervisor behind HAProxy (each host in a network namespace of its own when the test
//! runs as root, on 127.x.y.z addresses otherwise) and runs a rolling reload, a rolling restart,
//! a rolling upgrade and a SIGKILL of one host's forkd, each while forkd-loadgen drives load
//! through HAProxy. Read from the loadgen's JSON: no request fails in a rolling operation, and
//! the kill costs at most the requests in flight then (at most the loadgen's connections);
//! HAProxy marks the killed host down within 2 s and takes it back once the supervisor
//! restarted it. Skipped, loudly, without haproxy (`.ci/run` installs it).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::{self, eventually};

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// The script, ended by SIGTERM if the test fails while it runs, so that its trap removes the
/// namespaces, the bridge and the processes it made (the harness's SIGKILL to its group would
/// leave them: each supervisor runs in a session of its own).
struct Cluster(util::Proc);

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.0.child.try_wait().ok().flatten().is_none() {
            self.0.signal(nix::sys::signal::Signal::SIGTERM);
            let end = std::time::Instant::now() + Duration::from_secs(30);
            while self.0.child.try_wait().ok().flatten().is_none()
                && std::time::Instant::now() < end
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn rolling_operations_lose_no_request_and_a_kill_costs_only_what_was_in_flight() {
    if !on_path("haproxy") {
        eprintln!(
            "\n*** SKIPPED cluster::rolling_operations...: haproxy is not installed \
             (apt-get install haproxy) ***\n"
        );
        return;
    }
    let root = nix::unistd::Uid::effective().is_root() && on_path("ip");
    if !root {
        eprintln!(
            "\n*** cluster: not root (or no `ip`): hosts on 127.x.y.z addresses instead of \
             network namespaces ***\n"
        );
    }
    let out = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(util::FORKD).parent().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/cluster/cluster.sh");
    let mut cmd = Command::new(script);
    cmd.arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out.path())
        // An open loop at a steady rate: enough requests in flight to lose some if anything
        // went wrong, without taking the CPUs from the tests that run beside this one.
        .args(["--hosts", "3", "--connections", "16", "--rate", "1500"]);
    if !root {
        cmd.arg("--loopback");
    }
    cmd.args(["rolling-reload", "rolling-restart", "rolling-upgrade"])
        .arg(util::FORKD)
        .arg("kill");
    // Its progress on stderr is kept for the failure message.
    let mut run = Cluster(util::Proc::spawn_cmd(cmd.stdin(Stdio::null())));
    let status = eventually(Duration::from_secs(110), "cluster.sh to finish", || {
        run.0.child.try_wait().unwrap()
    });
    let log = run.0.output().join("\n");
    assert!(status.success(), "cluster.sh failed ({status:?}):\n{log}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap())
            .unwrap_or_else(|e| panic!("summary.json: {e}\n{log}"));
    let ops = summary.as_array().unwrap();
    assert_eq!(ops.len(), 4, "{summary}");
    eprintln!("cluster: {summary}");
    for op in ops {
        let name = op["operation"].as_str().unwrap();
        // The loadgen's own report is what counts.
        let report: Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let requests = report["requests"].as_u64().unwrap();
        let errors = report["errors_total"].as_u64().unwrap();
        assert!(requests > 3000, "{name}: only {requests} requests\n{log}");
        if name == "kill" {
            let connections = report["connections"].as_u64().unwrap();
            assert!(
                errors <= connections,
                "kill: {errors} failed requests, more than the {connections} that can be in \
                 flight: {report}\n{log}"
            );
            let down = op["down_after_s"].as_f64().unwrap();
            assert!(
                down <= 2.0,
                "HAProxy marked the killed host down after {down} s\n{log}"
            );
            assert!(op["up_after_s"].as_f64().unwrap() > down, "{op}");
        } else {
            assert_eq!(errors, 0, "{name}: failed requests: {report}\n{log}");
        }
    }
    let svg = std::fs::read_to_string(out.path().join("rolling-restart.svg")).unwrap();
    assert!(svg.contains("errors/s"), "the plot draws errors over time");
    if let Some(keep) = std::env::var_os("FORKD_CLUSTER_PLOT") {
        std::fs::write(keep, svg).unwrap();
    }
}
