#!/usr/bin/env bash
# One comparison run of forkd's modes against lighttpd (one process, one event loop), nginx,
# Apache (prefork MPM), busybox httpd, and three floors (benches/floor/: minimal C servers of
# forkd's process models that answer one fixed response, the most each model allows on this
# machine). Each server is started by hand on 127.0.0.1 with its own temporary configuration,
# measured with wrk (one thread, as issue 9's figures) and stopped by its PID: no service is
# ever started or enabled.
#
# Workloads, each a warm-up of WARMUP seconds then RUNS runs of DURATION seconds, median kept:
#   ka16   2 KB file, keep-alive, 16 connections                        req/s
#   ka64   2 KB file, keep-alive, 64 connections                        req/s, p99, wrk timeouts
#   close  2 KB file, a new connection per request (Connection: close), 16 connections   req/s
#   1mb    1 MB file, keep-alive, BIG_CONNS connections                 MB/s (10^6 bytes)
# and the process tree's RSS (sum of VmRSS over the tree) halfway through the last ka64 run and
# 1 s after it. Prints machine facts, a table of absolute figures and a table of ratios (each
# forkd mode divided by lighttpd and by the floor of its model, from the same run), and writes
# them to $OUT. On a shared machine the absolutes move with the load: read the ratios.
#
# Usage: benches/compare.sh
#   env: DURATION=8 RUNS=3 WARMUP=2 (seconds) BIG_CONNS=4 OUT=target/compare.md
#        PORT=18461 (the first server's; the next ones take PORT+1, PORT+2, ...)
#        BIN_DIR=DIR (forkd from DIR, no build) PREFORK_WORKERS=max(16, 8/CPU) EPOLL_WORKERS=CPUs
#        SERVERS="forkd-prefork forkd-fork forkd-event lighttpd nginx apache busybox
#                 floor-prefork floor-fork floor-epoll"
#   A quick check of the script: DURATION=2 RUNS=1 WARMUP=1 benches/compare.sh
#   Bounded: each wrk run is killed DURATION+30 s after it starts; the defaults take about
#   2 minutes per server.
# Needs: wrk, python3, cc (for the floors), cargo (unless BIN_DIR). A missing peer is installed
# from Debian when run as root (benches/lib.sh's need_tool, its service kept from starting);
# otherwise, or when it fails to start or to answer, it is skipped with a message.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
source benches/lib.sh
DURATION=${DURATION:-8}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-2}
BIG_CONNS=${BIG_CONNS:-4}
PORT=${PORT:-18461}
OUT=${OUT:-target/compare.md}
CPUS=$(nproc)
# forkd's own default pool (8 per CPU, at least 16), given to forkd and its floor alike so that
# both run the same number of blocking workers.
PREFORK_WORKERS=${PREFORK_WORKERS:-$((CPUS * 8 > 16 ? CPUS * 8 : 16))}
EPOLL_WORKERS=${EPOLL_WORKERS:-$CPUS}
SERVERS=${SERVERS:-"forkd-prefork forkd-fork forkd-event lighttpd nginx apache busybox
    floor-prefork floor-fork floor-epoll"}
for n in "$DURATION" "$RUNS" "$WARMUP" "$BIG_CONNS"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "$0: DURATION, RUNS, WARMUP, BIG_CONNS: whole numbers >= 1" >&2; exit 2; }
done

need_tool python3
need_tool wrk

WORK=$(mktemp -d /tmp/forkd-compare.XXXXXX)
SERVER_PID=
SAMPLER_PID=
cleanup() {
    if [[ -n $SAMPLER_PID ]]; then
        kill "$SAMPLER_PID" 2>/dev/null || true
    fi
    stop_tree "$SERVER_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
# INT and TERM end the script through the EXIT trap, which stops the server under test.
trap 'exit 130' INT
trap 'exit 143' TERM

RESULTS=$WORK/results.jsonl # one line per measured wrk run and per tree sample
SKIPPED=$WORK/skipped.txt   # "server: why", one a line
: >"$RESULTS"
: >"$SKIPPED"
skip() {
    echo "$0: skipping $1: $2" >&2
    echo "$1: $2" >>"$SKIPPED"
}

bench_binaries forkd
bench_site big

# forkd's event mode (issue 9) is measured once the built forkd has it: `--mode event` is then
# among --help's possible values. Until then forkd-event is skipped with a message.
forkd_has_event() {
    # Not `forkd --help | grep -q`: grep stops reading at the match, and under pipefail the
    # SIGPIPE forkd may then get would read as "no".
    grep -qw event <<<"$("$FORKD" --help 2>&1)"
}

# The floors, built for this run (warnings are errors: they are meant to stay that small).
build_floors() {
    local model
    command -v cc >/dev/null || return 1
    mkdir -p "$WORK/bin"
    for model in prefork fork epoll; do
        cc -O2 -Wall -Wextra -Werror -o "$WORK/bin/floor-$model" "benches/floor/$model.c" || return 1
    done
}
FLOORS_BUILT=
if [[ $SERVERS == *floor-* ]] && build_floors; then
    FLOORS_BUILT=1
fi

# available SERVER: whether SERVER can run here; prints why not otherwise.
available() {
    case $1 in
    forkd-prefork | forkd-fork) ;;
    forkd-event) forkd_has_event || { echo "this forkd has no --mode event yet"; return 1; } ;;
    lighttpd) need_tool lighttpd >&2 || { echo "lighttpd is not installed"; return 1; } ;;
    nginx) need_tool nginx >&2 || { echo "nginx is not installed"; return 1; } ;;
    apache) need_tool apache2 >&2 || { echo "apache2 is not installed"; return 1; } ;;
    busybox) need_tool busybox >&2 || { echo "busybox is not installed"; return 1; } ;;
    floor-*) [[ -n $FLOORS_BUILT ]] || { echo "the floors did not build (is cc installed?)"; return 1; } ;;
    *) echo "unknown server"; return 1 ;;
    esac
}

# start_server NAME BODY: starts server NAME in the foreground of a background job, in a session
# of its own (Apache's master signals its whole process group on TERM, which would otherwise
# include this script), and waits for its port; sets SERVER_PID to the process whose tree is
# watched (the master). setsid does not fork here (a background job is no group leader), so $!
# is the server itself. BODY (a file in $SITE) is what a floor answers; the others serve $SITE.
start_server() {
    local name=$1 body=$2 dir=$WORK/$1
    mkdir -p "$dir"
    port_free "$PORT" || return 1
    case $name in
    forkd-prefork)
        setsid "$FORKD" --listen "127.0.0.1:$PORT" --root "$SITE" --mode prefork \
            --workers "$PREFORK_WORKERS" --max-conns-per-client 0 2>"$dir/err" &
        ;;
    forkd-fork)
        setsid "$FORKD" --listen "127.0.0.1:$PORT" --root "$SITE" --mode fork \
            --max-conns-per-client 0 2>"$dir/err" &
        ;;
    forkd-event)
        # As many workers as floor-epoll, so the ratio compares like with like. Skipped for a
        # forkd built before the mode existed (forkd_has_event), e.g. with BIN_DIR.
        setsid "$FORKD" --listen "127.0.0.1:$PORT" --root "$SITE" --mode event \
            --workers "$EPOLL_WORKERS" --max-conns-per-client 0 2>"$dir/err" &
        ;;
    lighttpd)
        lighttpd_conf "$dir" "$PORT"
        setsid lighttpd -D -f "$dir/lighttpd.conf" 2>"$dir/err" &
        ;;
    nginx)
        nginx_conf "$dir" "$PORT"
        setsid nginx -c "$dir/nginx.conf" -p "$dir" -e "$dir/logs/error.log" 2>"$dir/err" &
        ;;
    apache)
        local mods=/usr/lib/apache2/modules
        cat >"$dir/httpd.conf" <<EOF
ServerRoot $dir
ServerName 127.0.0.1
Listen 127.0.0.1:$PORT
PidFile $dir/httpd.pid
DefaultRuntimeDir $dir
Mutex file:$dir default
ErrorLog $dir/error.log
User ${APACHE_USER:-nobody}
Group ${APACHE_GROUP:-nogroup}
LoadModule mpm_prefork_module $mods/mod_mpm_prefork.so
LoadModule authz_core_module $mods/mod_authz_core.so
LoadModule mime_module $mods/mod_mime.so
TypesConfig /etc/mime.types
StartServers 16
MinSpareServers 16
MaxSpareServers 32
ServerLimit 64
MaxRequestWorkers 64
MaxConnectionsPerChild 0
KeepAlive On
# Unlimited (0), as lighttpd's is set high: a keep-alive run is to measure requests, not reconnects.
MaxKeepAliveRequests 0
KeepAliveTimeout 5
EnableSendfile On
DocumentRoot $SITE
<Directory $SITE>
    Require all granted
</Directory>
EOF
        setsid apache2 -f "$dir/httpd.conf" -DFOREGROUND 2>"$dir/err" &
        ;;
    busybox)
        setsid busybox httpd -f -p "127.0.0.1:$PORT" -h "$SITE" 2>"$dir/err" &
        ;;
    floor-prefork)
        setsid "$WORK/bin/floor-prefork" "$PORT" "$PREFORK_WORKERS" "$SITE/$body" 2>"$dir/err" &
        ;;
    floor-fork)
        setsid "$WORK/bin/floor-fork" "$PORT" 1 "$SITE/$body" 2>"$dir/err" &
        ;;
    floor-epoll)
        setsid "$WORK/bin/floor-epoll" "$PORT" "$EPOLL_WORKERS" "$SITE/$body" 2>"$dir/err" &
        ;;
    esac
    SERVER_PID=$!
    wait_port "$PORT" "$SERVER_PID"
}

stop_server() {
    stop_tree "$SERVER_PID"
    SERVER_PID=
    # Let the port's sockets drain before the next server binds it.
    sleep 1
}

# sample SERVER LABEL: the server's tree (tree_stats) as a line of $RESULTS, with the length of
# the listener's accept queue (Recv-Q of the listening socket, from ss): connections that wrk
# opened and no process has accepted. wrk counts neither requests nor timeouts on a connection
# that is never answered, so without this a blocking server with fewer workers than connections
# would look as if it served all 64 while some of them starve for the whole run.
sample() {
    local stats queue=null
    stats=$(tree_stats "$SERVER_PID" "$2")
    if command -v ss >/dev/null; then
        queue=$(ss -Hltn "sport = :$PORT" | awk '{ q += $2 } END { print q + 0 }')
    fi
    echo "{\"server\":\"$1\",\"tree\":$stats,\"accept_queue\":$queue}" >>"$RESULTS"
}

# bench SERVER WORKLOAD CONNS PATH [WRK ARGS...]: a warm-up run of WARMUP s, then RUNS runs of
# DURATION s, each a line of $RESULTS (wrk's totals from benches/wrk-json.lua); wrk's own text
# stays in $WORK for a look while the script runs. In the last ka64 run, samples the tree
# halfway through.
bench() {
    local server=$1 workload=$2 conns=$3 path=$4 i json out
    shift 4
    wrk_run "$WARMUP" "$conns" "$path" "$@" >/dev/null
    for ((i = 1; i <= RUNS; i++)); do
        out=$WORK/$server-$workload-$i.txt
        if [[ $workload == ka64 && $i -eq $RUNS ]]; then
            (
                sleep "$((DURATION / 2))"
                sample "$server" during-ka64
            ) &
            SAMPLER_PID=$!
        fi
        wrk_run "$DURATION" "$conns" "$path" "$@" >"$out"
        if [[ -n $SAMPLER_PID ]]; then
            wait "$SAMPLER_PID" || true
            SAMPLER_PID=
        fi
        json=$(grep '^{' "$out" | tail -n1) || json=null
        echo "{\"server\":\"$server\",\"workload\":\"$workload\",\"run\":$i,\"wrk\":$json}" >>"$RESULTS"
    done
}

# wrk_run SECONDS CONNS PATH [WRK ARGS...]: one wrk run, one thread, bounded in time. A failed
# run leaves no JSON line, which the tables show as n/a rather than stopping the comparison.
wrk_run() {
    local seconds=$1 conns=$2 path=$3
    shift 3
    timeout --foreground "$((seconds + 30))" wrk -t1 -c "$conns" -d "${seconds}s" --latency \
        -s benches/wrk-json.lua "$@" "http://127.0.0.1:$PORT$path" 2>&1 || true
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
BASE_PORT=$PORT
index=0
for server in $SERVERS; do
    # A port of its own for each server: the TIME_WAIT sockets that one server's
    # new-connection runs leave behind (tens of thousands) must not slow the next one's connects.
    PORT=$((BASE_PORT + index))
    index=$((index + 1))
    if ! why=$(available "$server"); then
        skip "$server" "$why"
        continue
    fi
    echo "== $server" >&2
    if ! start_server "$server" 2k.html || ! check_http "$PORT" /2k.html 2048; then
        skip "$server" "did not start or answer (its stderr: $(tail -n3 "$WORK/$server/err" 2>/dev/null | tr '\n' ' '))"
        stop_server
        continue
    fi
    sample "$server" before
    bench "$server" ka16 16 /2k.html
    bench "$server" ka64 64 /2k.html
    sleep 1 # the tree as it settles after the load: fork-mode children have had time to exit
    sample "$server" after-ka64
    bench "$server" close 16 /2k.html -H "Connection: close"
    sleep 1
    sample "$server" after-close
    if [[ $server == floor-* ]]; then
        # A floor answers one file from memory: the 1 MB one needs a floor started with it (one
        # holding both would count 1 MB more RSS per process in the ka64 figures).
        stop_server
        if ! start_server "$server" 1m.bin; then
            skip "$server (1 MB)" "did not restart"
            stop_server
            continue
        fi
    fi
    if check_http "$PORT" /1m.bin 1048576; then
        bench "$server" 1mb "$BIG_CONNS" /1m.bin
    else
        skip "$server (1 MB)" "did not answer /1m.bin"
    fi
    stop_server
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# Versions of what ran, for the header.
versions() {
    local s
    for s in $SERVERS; do
        case $s in
        lighttpd) lighttpd -v 2>/dev/null | head -n1 | cut -d' ' -f1 ;;
        nginx) nginx -v 2>&1 | sed 's/.*: //' ;;
        apache) apache2 -v 2>/dev/null | sed -n 's/^Server version: \([^ ]*\).*/\1/p' ;;
        busybox) busybox 2>/dev/null | head -n1 | cut -d' ' -f1-2 ;;
        esac
    done 2>/dev/null | paste -sd, - | sed 's/,/, /g'
}
# The commit measured, marked when the work tree differs from it ("?" outside a readable repo).
forkd_commit() {
    local head
    if head=$(git rev-parse --short HEAD 2>/dev/null); then
        git diff --quiet HEAD -- 2>/dev/null || head+=" (modified)"
        echo "$head"
    else
        echo "?"
    fi
}
FACTS=$(
    cat <<EOF
{"started": "$STARTED", "cpus": $CPUS, "kernel": "$(uname -r)",
 "cpu": "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)",
 "load_before": "$LOAD_BEFORE", "load_after": "$LOAD_AFTER",
 "wrk": "$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)", "peers": "$(versions)",
 "forkd": "$(forkd_commit)",
 "duration": $DURATION, "runs": $RUNS, "warmup": $WARMUP, "big_conns": $BIG_CONNS,
 "prefork_workers": $PREFORK_WORKERS, "epoll_workers": $EPOLL_WORKERS}
EOF
)

mkdir -p "$(dirname "$OUT")"
python3 - "$RESULTS" "$SKIPPED" "$FACTS" >"$OUT" <<'EOF'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
skipped = [l.strip() for l in open(sys.argv[2]) if l.strip()]
f = json.loads(sys.argv[3])

servers = []  # in the order measured
runs, trees = {}, {}
for l in lines:
    if l["server"] not in servers:
        servers.append(l["server"])
    if "tree" in l:
        trees[(l["server"], l["tree"]["label"])] = dict(l["tree"], accept_queue=l["accept_queue"])
    elif l["wrk"]:
        runs.setdefault((l["server"], l["workload"]), []).append(l["wrk"])

def med(server, workload, key):
    rs = runs.get((server, workload))
    if not rs:
        return None
    if key == "rps":
        return statistics.median(r["requests"] / (r["duration_us"] / 1e6) for r in rs)
    if key == "mbps":
        return statistics.median(r["bytes"] / (r["duration_us"] / 1e6) / 1e6 for r in rs)
    return statistics.median(r[key] for r in rs)

def total(server, workloads, keys):
    rs = [r for w in workloads for r in runs.get((server, w), [])]
    return sum(r[k] for r in rs for k in keys) if rs else None

MODEL = {
    "forkd-prefork": "blocking prefork", "forkd-fork": "fork per connection",
    "forkd-event": "epoll workers", "lighttpd": "1 event loop", "nginx": "epoll workers",
    "apache": "blocking prefork", "busybox": "fork per connection",
    "floor-prefork": "floor: blocking prefork", "floor-fork": "floor: fork per connection",
    "floor-epoll": "floor: epoll workers",
}
FLOOR = {"forkd-prefork": "floor-prefork", "forkd-fork": "floor-fork", "forkd-event": "floor-epoll"}

def num(v, fmt="{:,.0f}"):
    return "n/a" if v is None else fmt.format(v)
def ms(us):
    return "n/a" if us is None else f"{us / 1000:.2f} ms"
def mib(t, key="rss_kb"):
    return "n/a" if not t else f"{t[key] / 1024:.1f}"

print(f"Measured {f['started']} on {f['cpus']} x {f['cpu']}, Linux {f['kernel']}; "
      f"load average (1, 5, 15 min) {f['load_before']} before, {f['load_after']} after. "
      f"Client: {f['wrk']}, one thread, on the same machine. forkd {f['forkd']}"
      f"{'; ' + f['peers'] if f['peers'] else ''}. "
      f"Each cell: the median of {f['runs']} runs of {f['duration']} s after a {f['warmup']} s "
      f"warm-up. Prefork: {f['prefork_workers']} workers (forkd and its floor); epoll floor: "
      f"{f['epoll_workers']} workers; nginx: one worker per CPU.\n")

print("| server | model | 2 KB keep-alive c16, req/s | 2 KB keep-alive c64, req/s | c64 p99 | c64 timeouts | c64 unaccepted (mid-run) | 2 KB new conn c16, req/s | 1 MB c" + str(f["big_conns"]) + ", MB/s | tree RSS MiB during / after c64 (processes) | tree PSS MiB during / after c64 | fd change | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for s in servers:
    during, after = trees.get((s, "during-ka64")), trees.get((s, "after-ka64"))
    before, end = trees.get((s, "before")), trees.get((s, "after-close"))
    fd = f"{end['fds'] - before['fds']:+d}" if before and end else "n/a"
    errors = total(s, ["ka16", "ka64", "close", "1mb"], ["connect", "read", "write", "status"])
    procs = "n/a" if not during else f"{during['processes']} / {after['processes'] if after else 'n/a'}"
    print(f"| {s} | {MODEL.get(s, '?')} | {num(med(s, 'ka16', 'rps'))} | {num(med(s, 'ka64', 'rps'))} "
          f"| {ms(med(s, 'ka64', 'p99_us'))} | {num(total(s, ['ka64'], ['timeout']))} "
          f"| {num(during and during['accept_queue'])} "
          f"| {num(med(s, 'close', 'rps'))} | {num(med(s, '1mb', 'mbps'))} "
          f"| {mib(during)} / {mib(after)} ({procs}) | {mib(during, 'pss_kb')} / {mib(after, 'pss_kb')} | {fd} | {num(errors)} |")

print("\nRatios from the same run: each forkd mode divided by lighttpd and by the floor of its model "
      "(throughput: above 1 is faster; p99 and RSS: above 1 is more).\n")
print("| forkd mode | divided by | keep-alive c16 | keep-alive c64 | new conn c16 | 1 MB | c64 p99 | tree RSS after c64 |")
print("|---|---|---|---|---|---|---|---|")
def ratio(a, b):
    return "n/a" if a is None or not b else f"{a / b:.2f}"
for s in ("forkd-prefork", "forkd-fork", "forkd-event"):
    if s not in servers:
        continue
    for ref in ("lighttpd", FLOOR[s]):
        if ref not in servers:
            continue
        cells = [ratio(med(s, w, k), med(ref, w, k)) for w, k in
                 (("ka16", "rps"), ("ka64", "rps"), ("close", "rps"), ("1mb", "mbps"), ("ka64", "p99_us"))]
        a, b = trees.get((s, "after-ka64")), trees.get((ref, "after-ka64"))
        cells.append(ratio(a and a["rss_kb"], b and b["rss_kb"]))
        print(f"| {s} | {ref} | " + " | ".join(cells) + " |")

event = trees.get(("forkd-event", "after-ka64"))
if event:
    print(f"\nforkd event mode: tree RSS after keep-alive c64 {event['rss_kb'] / 1024:.1f} MiB "
          f"(issue 9's target: under 8 MiB).")
details = []
for s in servers:
    parts = [f"{k} {total(s, ['ka16', 'ka64', 'close', '1mb'], [k])}" for k in ("connect", "read", "write", "status")
             if total(s, ["ka16", "ka64", "close", "1mb"], [k])]
    if parts:
        details.append(f"{s}: " + ", ".join(parts))
if details:
    print("\nErrors by kind, over all measured runs (wrk's counts; status: responses of 400 or more): " + "; ".join(details) + ".")
if skipped:
    print("\nNot measured: " + "; ".join(skipped) + ".")
EOF
cat "$OUT"
