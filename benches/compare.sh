#!/usr/bin/env bash
# One comparison run, on one site, of forkd (prefork and fork modes), nginx, Apache (prefork
# MPM), busybox httpd and, when installed, lighttpd. Each server is started by hand on loopback
# with its own temporary configuration, measured with forkd-loadgen, and stopped by its PID:
# no service is ever started or enabled.
#
# For each server: requests/s for a 2 KB file with keep-alive and with a new connection per
# request, MB/s for a 1 MB file, p50/p99 latency (keep-alive), the tree's RSS and PSS and the
# root process's RSS after the runs, and the change in the tree's open fds from before the
# first run to after the last (once settled), with the number of requests in between.
# Writes a Markdown table with ratios against nginx to $OUT (default target/compare.md) and
# prints it. Speeds are from one run on a shared machine: read them as ratios, not absolutes.
#
# Usage: benches/compare.sh            (env: DURATION=10s CONNS=16 BIG_CONNS=4 OUT=FILE BIN_DIR=DIR
#                                        SERVERS="forkd-prefork forkd-fork nginx apache busybox lighttpd")
# Needs: cargo, python3, nginx, apache2, busybox (installed from Debian when missing and run as
# root, with their services kept from starting: benches/lib.sh's need_tool).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
source benches/lib.sh
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16}
BIG_CONNS=${BIG_CONNS:-4}
OUT=${OUT:-target/compare.md}
SERVERS=${SERVERS:-"forkd-prefork forkd-fork nginx apache busybox lighttpd"}
PORT=${PORT:-18461}

need_tool python3
for server in $SERVERS; do
    case $server in
    nginx) need_tool nginx ;;
    apache) need_tool apache2 ;;
    busybox) need_tool busybox ;;
    esac
done

WORK=$(mktemp -d /tmp/forkd-compare.XXXXXX)
SERVER_PID=
cleanup() {
    stop_tree "$SERVER_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT

# BIN_DIR=DIR uses forkd and forkd-loadgen from DIR instead of building them.
bench_binaries forkd forkd-loadgen
bench_site big

# Starts server $1 in the foreground of a background job, in a session of its own (Apache's
# master signals its whole process group on TERM, which would otherwise include this script);
# sets SERVER_PID to the process whose tree is watched (the master). setsid does not fork here
# (a background job is no group leader), so $! is the server itself.
start_server() {
    local name=$1 dir=$WORK/$1
    mkdir -p "$dir"
    case $name in
    forkd-prefork)
        setsid "$FORKD" --listen "127.0.0.1:$PORT" --root "$SITE" --mode prefork 2>"$dir/err" &
        ;;
    forkd-fork)
        setsid "$FORKD" --listen "127.0.0.1:$PORT" --root "$SITE" --mode fork 2>"$dir/err" &
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
MaxKeepAliveRequests 1000
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
    lighttpd)
        cat >"$dir/lighttpd.conf" <<EOF
server.document-root = "$SITE"
server.bind = "127.0.0.1"
server.port = $PORT
server.pid-file = "$dir/lighttpd.pid"
server.errorlog = "$dir/error.log"
server.max-keep-alive-requests = 1000
mimetype.assign = (".html" => "text/html", ".bin" => "application/octet-stream")
EOF
        setsid lighttpd -D -f "$dir/lighttpd.conf" 2>"$dir/err" &
        ;;
    *)
        echo "compare.sh: unknown server $name" >&2
        return 1
        ;;
    esac
    SERVER_PID=$!
    wait_port "$PORT"
}

stop_server() {
    stop_tree "$SERVER_PID"
    SERVER_PID=
    # Let the port's sockets drain before the next server binds it.
    sleep 1
}

# load NAME ARGS... : runs forkd-loadgen with --json into $WORK/NAME.json.
load() {
    local name=$1
    shift
    "$LOADGEN" --json "$@" >"$WORK/$name.json" || true
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
for server in $SERVERS; do
    if [[ $server == lighttpd ]] && ! command -v lighttpd >/dev/null; then
        continue
    fi
    echo "== $server" >&2
    start_server "$server"
    url=http://127.0.0.1:$PORT
    load "$server-before" -c 1 -n 1 --watch-pid "$SERVER_PID" --warmup 0s "$url/2k.html"
    load "$server-ka" -c "$CONNS" -d "$DURATION" "$url/2k.html"
    load "$server-close" -c "$CONNS" -d "$DURATION" --new-conn "$url/2k.html"
    load "$server-big" -c "$BIG_CONNS" -d "$DURATION" "$url/1m.bin"
    load "$server-after" -c 1 -n 1 --watch-pid "$SERVER_PID" --warmup 0s "$url/2k.html"
    python3 - "$WORK" "$server" >>"$RESULTS" <<'EOF'
import json, sys
work, name = sys.argv[1], sys.argv[2]
def get(run):
    try:
        with open(f"{work}/{name}-{run}.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
ka, close, big = get("ka"), get("close"), get("big")
before, after = get("before"), get("after")
w0 = (before or {}).get("watch") or {}
w1 = (after or {}).get("watch") or {}
b, a = w0.get("before") or {}, w1.get("after") or {}
requests = sum((r or {}).get("requests", 0) for r in (ka, close, big)) + 2
print(json.dumps({
    "server": name,
    "ka_rps": (ka or {}).get("requests_per_sec"),
    "ka_errors": (ka or {}).get("errors_total"),
    "p50_us": ((ka or {}).get("latency_us") or {}).get("p50"),
    "p99_us": ((ka or {}).get("latency_us") or {}).get("p99"),
    "max_us": ((ka or {}).get("latency_us") or {}).get("max"),
    "close_rps": (close or {}).get("requests_per_sec"),
    "close_errors": (close or {}).get("errors_total"),
    "big_mbps": ((big or {}).get("bytes_per_sec") or 0) / 1e6,
    "big_errors": (big or {}).get("errors_total"),
    "processes": a.get("processes"),
    "rss_kb": a.get("rss_kb"),
    "pss_kb": a.get("pss_kb"),
    "root_rss_kb": a.get("root_rss_kb"),
    "fd_delta": (a.get("fds") - b.get("fds")) if a and b else None,
    "requests": requests,
}))
EOF
    stop_server
done

mkdir -p "$(dirname "$OUT")"
python3 - "$RESULTS" "$DURATION" "$CONNS" "$BIG_CONNS" >"$OUT" <<'EOF'
import json, os, platform, sys, time
rows = [json.loads(l) for l in open(sys.argv[1])]
duration, conns, big_conns = sys.argv[2:5]
ref = next((r for r in rows if r["server"] == "nginx"), None)
def ratio(r, key):
    if not ref or not ref.get(key) or r.get(key) is None:
        return ""
    return f" ({r[key] / ref[key]:.2f}x)"
def num(v, fmt="{:,.0f}"):
    return "n/a" if v is None else fmt.format(v)
def mib(kb):
    return "n/a" if kb is None else f"{kb / 1024:.1f}"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} x {cpu}, "
      f"Linux {platform.release()}; forkd-loadgen on the same machine, {conns} connections "
      f"({big_conns} for 1 MB), {duration} per cell. Ratios are against nginx.\n")
print("| server | 2 KB keep-alive req/s | 2 KB new conn/request req/s | 1 MB MB/s | p50 / p99 / max (keep-alive) | processes | RSS / PSS of tree, MiB | root RSS, MiB | fd change (requests) | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    us = lambda v: "n/a" if v is None else (f"{v/1000:.2f} ms" if v >= 1000 else f"{v} us")
    errors = sum(r.get(k) or 0 for k in ("ka_errors", "close_errors", "big_errors"))
    print(f"| {r['server']} | {num(r['ka_rps'])}{ratio(r, 'ka_rps')} | {num(r['close_rps'])}{ratio(r, 'close_rps')} "
          f"| {num(r['big_mbps'])}{ratio(r, 'big_mbps')} | {us(r['p50_us'])} / {us(r['p99_us'])} / {us(r['max_us'])} "
          f"| {num(r['processes'])} | {mib(r['rss_kb'])} / {mib(r['pss_kb'])} | {mib(r['root_rss_kb'])} "
          f"| {num(r['fd_delta'], '{:+d}')} ({r['requests']:,}) | {errors} |")
EOF
cat "$OUT"
