#!/usr/bin/env bash
# What one connection costs a fork-per-connection server, counted rather than timed (issue 14):
# forkd --mode fork next to busybox httpd and floor-fork (benches/floor/fork.c), each started
# by hand on 127.0.0.1, all three from one run. Counts move little with the machine's load, so
# they show the effect of a change where throughput on a shared machine cannot.
#
# For each server:
#   master   its resident and mapped memory, VMAs and page-table size (what every fork copies)
#   faults   minor page faults per connection, of the children (the master's cminflt, which
#            sums the faults of reaped children) and of the master itself (its copy-on-write
#            after each fork), and CPU time per connection of both, over CONNS sequential
#            connections (GET /2k.html, Connection: close)
#            and, with perf, the tree's CPU time and faults per connection (perf stat follows
#            children, also those a master never waits for, as busybox's)
#   child    one live child's RSS, PSS, private memory and faults so far: while it waits for
#            the rest of a request head, and after answering one keep-alive request (busybox
#            has no keep-alive: n/a)
#   syscalls per connection of a child and of the master, under strace -f over TRACED
#            connections (strace slows them; the counts are what matters), and the child's
#            calls by name
# then, unless ROUNDS=0, throughput as alternating wrk runs (-t1 -c16, new connection per
# request, 2 KB page): ROUNDS rounds of DURATION seconds per server, each round visiting the
# servers in turn so that load on the machine falls on all alike; prints every run, the
# medians and the ratios forkd/busybox and forkd/floor, and with perf the tree's CPU time per
# request of each run (what the load of a shared machine moves least). Writes the report to
# $OUT.
#
# Usage: benches/forkcost.sh
#   env: CONNS=2000 TRACED=50 ROUNDS=3 DURATION=5 OUT=target/forkcost.md PORT=18471
#        (the next servers take PORT+1, PORT+2) BIN_DIR=DIR (forkd from DIR, no build)
#        SERVERS="forkd-fork busybox floor-fork" FORKD_ARGS="" (more flags for forkd)
#        forkd-ref in SERVERS: another forkd binary, REF_BIN=PATH, for A/B runs of a change
#   Bounded: each wrk run is killed DURATION+30 s after it starts, strace after 60 s.
# Needs: python3, cc (floor-fork), strace (else syscalls are skipped), perf (else no tree
# counts), wrk (for ROUNDS > 0), busybox (else skipped), cargo (unless BIN_DIR).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
source benches/lib.sh
CONNS=${CONNS:-2000}
TRACED=${TRACED:-50}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
OUT=${OUT:-target/forkcost.md}
PORT=${PORT:-18471}
SERVERS=${SERVERS:-"forkd-fork busybox floor-fork"}
FORKD_ARGS=${FORKD_ARGS:-}
for n in "$CONNS" "$TRACED" "$DURATION"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "$0: CONNS, TRACED, DURATION: whole numbers >= 1" >&2; exit 2; }
done
[[ $ROUNDS =~ ^[0-9]+$ ]] || { echo "$0: ROUNDS: a whole number" >&2; exit 2; }
need_tool python3
if ((ROUNDS > 0)); then
    need_tool wrk
fi

WORK=$(mktemp -d /tmp/forkd-forkcost.XXXXXX)
declare -A PIDS PORTS
TOOL_PID=
cleanup() {
    local s
    if [[ -n $TOOL_PID ]]; then
        kill "$TOOL_PID" 2>/dev/null || true
        wait "$TOOL_PID" 2>/dev/null || true
    fi
    for s in "${!PIDS[@]}"; do
        stop_tree "${PIDS[$s]}"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench_binaries forkd
bench_site small
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# start NAME PORT: starts server NAME in a session of its own and waits for its port.
start() {
    local name=$1 port=$2 err=$WORK/$1.err
    port_free "$port" || return 1
    case $name in
    forkd-fork | forkd-ref)
        local bin=$FORKD
        if [[ $name == forkd-ref ]]; then
            [[ -x ${REF_BIN:-} ]] || { echo "forkd-ref needs REF_BIN, a forkd binary" >&2; return 1; }
            cp "$REF_BIN" "$WORK/forkd-ref"
            bin=$WORK/forkd-ref
        fi
        # shellcheck disable=SC2086 # FORKD_ARGS is a list of flags
        setsid "$bin" --listen "127.0.0.1:$port" --root "$SITE" --mode fork \
            --max-conns-per-client 0 $FORKD_ARGS 2>"$err" &
        ;;
    busybox)
        command -v busybox >/dev/null || { echo "busybox is not installed" >&2; return 1; }
        setsid busybox httpd -f -p "127.0.0.1:$port" -h "$SITE" 2>"$err" &
        ;;
    floor-fork)
        mkdir -p "$WORK/bin"
        cc -O2 -Wall -Wextra -Werror -o "$WORK/bin/floor-fork" benches/floor/fork.c || return 1
        setsid "$WORK/bin/floor-fork" "$port" 1 "$SITE/2k.html" 2>"$err" &
        ;;
    *) echo "unknown server $name" >&2; return 1 ;;
    esac
    PIDS[$name]=$!
    PORTS[$name]=$port
    wait_port "$port" "$!" || { cat "$err" >&2; return 1; }
}

RUNNING=()
p=$PORT
for s in $SERVERS; do
    if start "$s" "$p"; then
        RUNNING+=("$s")
    else
        echo "$0: skipping $s" >&2
        unset "PIDS[$s]"
    fi
    p=$((p + 1))
done
((${#RUNNING[@]} > 0)) || { echo "$0: no server started" >&2; exit 1; }

# The probe: counts for one server, printed as one JSON line. `trace` runs only the
# sequential connections (strace is attached meanwhile).
probe() {
    python3 - "$@" <<'EOF'
import json, os, shutil, signal, socket, subprocess, sys, time
mode, name, pid, port, conns = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
REQ_CLOSE = b"GET /2k.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
REQ_KEEP = b"GET /2k.html HTTP/1.1\r\nHost: x\r\n\r\n"

def stat(p):
    with open(f"/proc/{p}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    # after the name: state(3) ppid(4) ... minflt(10) cminflt(11) majflt(12) cmajflt(13)
    # utime(14) stime(15) cutime(16) cstime(17), counted from 1 in proc(5)
    g = lambda field: int(v[field - 3])
    return {"minflt": g(10), "cminflt": g(11), "utime": g(14), "stime": g(15),
            "cutime": g(16), "cstime": g(17)}

def kv(path, keys):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, rest = line.partition(":")
            if k in keys:
                out[k] = int(rest.split()[0])
    return out

def memory(p):
    m = kv(f"/proc/{p}/status", {"VmRSS", "VmSize", "VmPTE", "RssAnon", "RssFile"})
    m.update(kv(f"/proc/{p}/smaps_rollup", {"Pss", "Private_Clean", "Private_Dirty", "Anonymous"}))
    with open(f"/proc/{p}/maps") as f:
        m["vmas"] = sum(1 for _ in f)
    m["threads"] = len(os.listdir(f"/proc/{p}/task"))
    return m

def get(req, keep_open=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(req)
    data = b""
    while True:
        if keep_open and b"\r\n\r\n" in data and len(data.split(b"\r\n\r\n", 1)[1]) >= 2048:
            return s
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    if not data.startswith(b"HTTP/1.") or b" 200 " not in data.split(b"\r\n", 1)[0]:
        raise SystemExit(f"{name}: unexpected answer {data[:80]!r}")

def children():
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except (OSError, ValueError):
                pass
    return kids

def settle():
    # cminflt counts a child once it is reaped: wait until no child is left.
    deadline = time.time() + 5
    while children() and time.time() < deadline:
        time.sleep(0.01)

if mode == "trace":
    for _ in range(conns):
        get(REQ_CLOSE)
    settle()
    raise SystemExit(0)

out = {"server": name, "conns": conns}
for _ in range(20):  # warm: first connections may fault in what later ones share
    get(REQ_CLOSE)
settle()
out["master"] = memory(pid)
# perf stat follows the master's children (inherited counters), even those a master does not
# wait for (busybox ignores SIGCHLD, so its children never reach cminflt).
perf_out = f"/tmp/forkcost-perf-{pid}.txt"
perf = None
if shutil.which("perf"):
    perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "task-clock,page-faults", "-p", str(pid),
                             "-o", perf_out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # attached
a = stat(pid)
t0 = time.time()
for _ in range(conns):
    get(REQ_CLOSE)
settle()
elapsed = time.time() - t0
b = stat(pid)
tree = {}
if perf:
    perf.send_signal(signal.SIGINT)
    perf.wait(timeout=10)
    with open(perf_out) as f:
        for line in f:
            v = line.split(",")
            if len(v) > 2 and v[0].replace(".", "").isdigit():
                tree[v[2]] = float(v[0])
    os.unlink(perf_out)
hz = os.sysconf("SC_CLK_TCK")
d = {k: b[k] - a[k] for k in a}
out["per_conn"] = {
    "child_faults": d["cminflt"] / conns, "master_faults": d["minflt"] / conns,
    "child_cpu_us": (d["cutime"] + d["cstime"]) / hz / conns * 1e6,
    "master_cpu_us": (d["utime"] + d["stime"]) / hz / conns * 1e6,
    "sequential_conn_per_s": conns / elapsed,
}
if "page-faults" in tree:
    # The tree's faults less the master's: the children's, whether they were waited for or not.
    out["per_conn"]["tree_faults"] = tree["page-faults"] / conns
    out["per_conn"]["child_faults"] = (tree["page-faults"] - d["minflt"]) / conns
    out["per_conn"]["tree_cpu_us"] = tree["task-clock"] / conns * 1e3
out["master_after"] = memory(pid)

def live_child(req, keep):
    before = set(children())
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(req)
    if keep:
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 2048:
            chunk = s.recv(65536)
            if not chunk:
                s.close()
                return None  # no keep-alive: the child is gone
            data += chunk
    deadline = time.time() + 2
    kid = None
    while time.time() < deadline and kid is None:
        new = [k for k in children() if k not in before]
        kid = new[0] if new else None
        time.sleep(0.01)
    time.sleep(0.05)
    try:
        m = memory(kid) if kid else None
        if m:
            m["faults"] = stat(kid)["minflt"]
    except OSError:
        m = None
    s.close()
    settle()
    return m

# Waiting for the rest of a head: what the fork and the child's start cost.
out["child_waiting"] = live_child(b"GET /2k.html HTTP/1.1\r\nHost: x\r\n", False)
# After one answered request on a kept connection: the child at work.
out["child_served"] = live_child(REQ_KEEP, True)
print(json.dumps(out))
EOF
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
for s in "${RUNNING[@]}"; do
    echo "$0: counting $s ($CONNS connections)" >&2
    probe count "$s" "${PIDS[$s]}" "${PORTS[$s]}" "$CONNS" >>"$RESULTS"
done

# Syscalls: strace follows the master's forks (-f), one output file per process (-ff).
if command -v strace >/dev/null; then
    for s in "${RUNNING[@]}"; do
        dir=$WORK/strace-$s
        mkdir -p "$dir"
        timeout 60 strace -f -ff -qq -o "$dir/t" -p "${PIDS[$s]}" 2>"$dir/err" &
        TOOL_PID=$!
        sleep 0.5 # attached
        probe trace "$s" "${PIDS[$s]}" "${PORTS[$s]}" "$TRACED" || true
        kill "$TOOL_PID" 2>/dev/null || true
        wait "$TOOL_PID" 2>/dev/null || true
        TOOL_PID=
        python3 - "$s" "${PIDS[$s]}" "$dir" "$TRACED" >>"$RESULTS" <<'EOF'
import collections, json, os, re, statistics, sys
name, pid, d, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
call = re.compile(r"^([a-z_0-9]+)\(")
def calls(path):
    c = collections.Counter()
    with open(path) as f:
        for line in f:
            m = call.match(line)
            if m:
                c[m.group(1)] += 1
    return c
master, kids = collections.Counter(), []
for f in os.listdir(d):
    if not f.startswith("t."):
        continue
    c = calls(os.path.join(d, f))
    if f == f"t.{pid}":
        master = c
    else:
        kids.append(c)
# A child that served one connection (the master's own forks only; none when tracing failed).
kids = [k for k in kids if sum(k.values()) > 0]
totals = sorted(sum(k.values()) for k in kids)
typical = min(kids, key=lambda k: abs(sum(k.values()) - statistics.median(totals))) if kids else {}
print(json.dumps({"server": name, "syscalls": {
    "children": len(kids), "child_median": statistics.median(totals) if totals else None,
    "master_per_conn": sum(master.values()) / n, "master": dict(master.most_common()),
    "child": dict(sorted(typical.items(), key=lambda kv: -kv[1]))}}))
EOF
    done
else
    echo "$0: strace is not installed: no syscall counts" >&2
fi

# Throughput, alternating: round r visits every server once.
if ((ROUNDS > 0)); then
    for r in $(seq "$ROUNDS"); do
        for s in "${RUNNING[@]}"; do
            # The CPU time of the server's whole tree during the run (perf stat follows the
            # children), per request: what the load on the machine moves least.
            cpu=null
            if command -v perf >/dev/null; then
                perf stat -x, -e task-clock -p "${PIDS[$s]}" -o "$WORK/perf.txt" 2>/dev/null &
                TOOL_PID=$!
                sleep 0.3
            fi
            line=$(timeout --foreground "$((DURATION + 30))" wrk -t1 -c16 -d "${DURATION}s" \
                -H 'Connection: close' -s benches/wrk-json.lua \
                "http://127.0.0.1:${PORTS[$s]}/2k.html" | grep '^{' || echo null)
            if [[ -n $TOOL_PID ]]; then
                kill -INT "$TOOL_PID" 2>/dev/null || true
                wait "$TOOL_PID" 2>/dev/null || true
                TOOL_PID=
                cpu=$(awk -F, '$3 == "task-clock" { print $1 }' "$WORK/perf.txt")
                cpu=${cpu:-null}
            fi
            echo "{\"server\": \"$s\", \"round\": $r, \"wrk\": $line, \"cpu_ms\": $cpu, \"load\": \"$(cut -d' ' -f1 /proc/loadavg)\"}" >>"$RESULTS"
            echo "$0: round $r $s: $line, tree CPU $cpu ms" >&2
        done
    done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
git diff --quiet HEAD -- 2>/dev/null || commit+=" (modified)"
mkdir -p "$(dirname "$OUT")"
python3 - "$RESULTS" "$(nproc)" "$LOAD_BEFORE" "$LOAD_AFTER" "$commit" "$DURATION" >"$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cpus, before, after, commit, duration = sys.argv[2:7]
count = {r["server"]: r for r in rows if "per_conn" in r}
sysc = {r["server"]: r["syscalls"] for r in rows if "syscalls" in r}
rps, cpu = {}, {}
for r in rows:
    if "round" in r and r["wrk"]:
        w = r["wrk"]
        rps.setdefault(r["server"], []).append(w["requests"] / (w["duration_us"] / 1e6))
        if r.get("cpu_ms") and w["requests"]:
            cpu.setdefault(r["server"], []).append(r["cpu_ms"] * 1e3 / w["requests"])
servers = list(dict.fromkeys(r["server"] for r in rows))

def f(v, fmt="{:,.0f}"):
    return "n/a" if v is None else fmt.format(v)
def kib(m, k):
    return "n/a" if not m or k not in m else f"{m[k]:,}"

print(f"forkd {commit}; {cpus} CPUs; load average (1, 5, 15 min) {before} before, {after} after.\n")
print("Master (after the counted connections): what each fork copies.\n")
print("| server | threads | VMAs | VmSize KiB | RSS KiB | anon KiB | PSS KiB | private dirty KiB | page tables KiB |")
print("|---|---|---|---|---|---|---|---|---|")
for s in servers:
    m = count.get(s, {}).get("master_after")
    print(f"| {s} | {kib(m, 'threads')} | {kib(m, 'vmas')} | {kib(m, 'VmSize')} | {kib(m, 'VmRSS')} "
          f"| {kib(m, 'RssAnon')} | {kib(m, 'Pss')} | {kib(m, 'Private_Dirty')} | {kib(m, 'VmPTE')} |")
print("\nPer connection (sequential, `Connection: close`): minor faults and CPU time of the child "
      "and of the master.\n")
print("| server | connections | child faults | master faults | tree CPU µs (perf) | child CPU µs | master CPU µs | sequential conn/s |")
print("|---|---|---|---|---|---|---|---|")
for s in servers:
    c = count.get(s)
    if not c:
        continue
    p = c["per_conn"]
    print(f"| {s} | {c['conns']:,} | {p['child_faults']:.1f} | {p['master_faults']:.2f} "
          f"| {f(p.get('tree_cpu_us'))} | {p['child_cpu_us']:.0f} | {p['master_cpu_us']:.0f} "
          f"| {p['sequential_conn_per_s']:,.0f} |")
print("\nChild faults: the tree's (perf stat) less the master's, else the master's cminflt (children "
      "it waited for). Child and master CPU: from /proc stat, in clock ticks, so coarse.")
print("\nOne live child: waiting for the rest of a head / after answering one keep-alive request.\n")
print("| server | RSS KiB | PSS KiB | private dirty KiB | faults so far |")
print("|---|---|---|---|---|")
for s in servers:
    c = count.get(s, {})
    w, v = c.get("child_waiting"), c.get("child_served")
    print(f"| {s} | {kib(w, 'VmRSS')} / {kib(v, 'VmRSS')} | {kib(w, 'Pss')} / {kib(v, 'Pss')} "
          f"| {kib(w, 'Private_Dirty')} / {kib(v, 'Private_Dirty')} | {kib(w, 'faults')} / {kib(v, 'faults')} |")
if sysc:
    print("\nSyscalls per connection (strace -f; a child's are those of one typical child).\n")
    print("| server | child | master | child's calls |")
    print("|---|---|---|---|")
    for s in servers:
        y = sysc.get(s)
        if not y:
            continue
        calls = ", ".join(f"{k} {v}" for k, v in y["child"].items())
        print(f"| {s} | {f(y['child_median'])} | {y['master_per_conn']:.1f} | {calls} |")
if rps:
    print(f"\nThroughput, wrk -t1 -c16 -d{duration}s, new connection per request, 2 KB page; "
          "alternating runs (req/s, each run in order, then the median).\n")
    print("| server | runs | median | tree CPU µs per request, runs | median |")
    print("|---|---|---|---|---|")
    for s in servers:
        if s in rps:
            c = cpu.get(s, [])
            print(f"| {s} | {', '.join(f'{x:,.0f}' for x in rps[s])} | {statistics.median(rps[s]):,.0f} "
                  f"| {', '.join(f'{x:,.0f}' for x in c) or 'n/a'} | {f(statistics.median(c) if c else None)} |")
    if "forkd-fork" in rps:
        fk = statistics.median(rps["forkd-fork"])
        parts = []
        for ref, target in (("busybox", 1.3), ("floor-fork", 0.9), ("forkd-ref", None)):
            if ref in rps:
                per_round = [a / b for a, b in zip(rps["forkd-fork"], rps[ref])]
                parts.append(f"forkd-fork / {ref}: {fk / statistics.median(rps[ref]):.2f} "
                             f"(per round {', '.join(f'{x:.2f}' for x in per_round)}"
                             + (f"; target >= {target})" if target else ")"))
        print("\n" + "; ".join(parts) + ".")
    if "forkd-fork" in cpu:
        parts = [f"{ref} / forkd-fork: {statistics.median(cpu[ref]) / statistics.median(cpu['forkd-fork']):.2f}"
                 for ref in ("busybox", "floor-fork", "forkd-ref") if ref in cpu]
        print("\nCPU per request, as a throughput ratio (the other's CPU per request over forkd's; "
              "above 1: forkd needs less): " + "; ".join(parts) + ".")
EOF
cat "$OUT"
