#!/usr/bin/env bash
# Reloads and log reopens under keep-alive load, forkd against nginx (issue 7): for each server,
# forkd-loadgen runs CONNS keep-alive connections for DURATION seconds three times: once without
# signals (the baseline), once while N SIGHUPs (reload) reach the master, once while N SIGUSR1s
# (log reopen) do. The signals are spaced evenly from 1 s after the load starts to 1 s before it
# ends, on an absolute schedule (a slow send is caught up, not accumulated). For each run it
# reports the requests completed and the failed ones by kind, as forkd-loadgen counts them, the
# signals sent and those the master acted on (signals that arrive while one is pending merge
# into one, for both servers), and the tree after the load (processes, fd change, watched with
# --watch-pid). Writes a Markdown table to $OUT/table.md, with each run's JSON and each server's
# log beside it, and prints the table.
#
# Servers, each started by hand on 127.0.0.1 with its own temporary configuration and stopped by
# PID:
#   forkd  prefork, --workers $WORKERS, the access log in a file (owned by the children's user,
#          as logrotate's `create` would make it) so that SIGUSR1 has a file to reopen; halfway
#          through the SIGUSR1s the file is moved aside and a new one put in its place, as
#          logrotate does.
#   nginx  $NGINX_WORKERS workers, keep-alive with nginx's defaults, access log off (its error log
#          is what it reopens). Signals are sent to the master with kill: SIGHUP is exactly what
#          `nginx -s reload` sends and SIGUSR1 what `nginx -s reopen` sends (that command only
#          parses the configuration to find the pid file, then signals). NGINX_SIGNAL=cli runs
#          `nginx -s reload|reopen` instead, one process per signal.
#
# Usage: benches/reload-compare.sh  (env: N=200 DURATION=10 (seconds) CONNS=8 WORKERS=16
#                                    NGINX_WORKERS=2 SERVERS="forkd nginx" NGINX_SIGNAL=kill|cli
#                                    PORT=18464 (forkd; nginx gets PORT+1) OUT=target/reload-compare
#                                    BIN_DIR=DIR to skip the build)
# Needs: cargo, python3, nginx (installed from Debian when missing and run as root). Runs as
# root (servers drop to nobody) or not. Bounded: about 3 x (DURATION + 7) s per server.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
source benches/lib.sh

N=${N:-200}
DURATION=${DURATION:-10}
CONNS=${CONNS:-8}
WORKERS=${WORKERS:-16}
NGINX_WORKERS=${NGINX_WORKERS:-2}
SERVERS=${SERVERS:-"forkd nginx"}
NGINX_SIGNAL=${NGINX_SIGNAL:-kill}
PORT=${PORT:-18464}
OUT=${OUT:-target/reload-compare}

if ! [[ $N =~ ^[0-9]+$ && $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 3)); then
    echo "reload-compare.sh: N must be a count and DURATION whole seconds, at least 3" >&2
    exit 2
fi
need_tool python3
if [[ " $SERVERS " == *" nginx "* ]]; then
    need_tool nginx
fi

WORK=$(mktemp -d /tmp/forkd-reload.XXXXXX)
SERVER_PID=
LOAD_PID=
cleanup() {
    if [[ -n $LOAD_PID ]]; then
        kill -TERM "$LOAD_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
    fi
    stop_tree "$SERVER_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
# Through exit, so that the EXIT trap runs on ^C or TERM too.
trap 'exit 130' INT
trap 'exit 143' TERM

bench_binaries forkd forkd-loadgen
bench_site small
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT/table.md"

# The children's user when we are root (forkd's --user default and nginx's), so that a file
# they must write can be made theirs.
CHILD_USER=
if [[ $EUID -eq 0 ]]; then
    CHILD_USER=nobody
fi

# make_log FILE: an empty log file the children may reopen by path.
make_log() {
    : >"$1"
    if [[ -n $CHILD_USER ]]; then
        chown "$CHILD_USER" "$1"
    fi
}

# start NAME PORT: starts server NAME in a session of its own (it leads its own process group,
# which stop_tree relies on; setsid does not fork in a background job, so $! is the server) and
# sets SERVER_PID to its master once it serves.
start() {
    local name=$1 port=$2 dir=$WORK/srv-$1
    mkdir -p "$dir"
    chmod 755 "$dir"
    port_free "$port"
    case $name in
    forkd)
        make_log "$dir/access.log"
        setsid "$FORKD" --listen "127.0.0.1:$port" --root "$SITE" --mode prefork \
            --workers "$WORKERS" --access-log "$dir/access.log" \
            --max-conns-per-client 0 2>"$dir/server.log" &
        SERVER_PID=$!
        # Ready only once the pool is started, which an accepting port does not prove.
        local deadline=$((SECONDS + 20))
        until grep -q "ready on" "$dir/server.log"; do
            if ((SECONDS > deadline)) || ! alive "$SERVER_PID"; then
                cat "$dir/server.log" >&2
                return 1
            fi
            sleep 0.05
        done
        ;;
    nginx)
        nginx_conf "$dir" "$port" "$NGINX_WORKERS"
        setsid nginx -c "$dir/nginx.conf" -p "$dir" -e "$dir/logs/error.log" 2>"$dir/err" &
        SERVER_PID=$!
        wait_port "$port"
        alive "$SERVER_PID" || { cat "$dir/err" "$dir/logs/error.log" >&2; return 1; }
        ;;
    esac
}

# server_log NAME: the file where the master logs what it does.
server_log() {
    case $1 in
    forkd) echo "$WORK/srv-forkd/server.log" ;;
    nginx) echo "$WORK/srv-nginx/logs/error.log" ;;
    esac
}

# acted NAME SIG: how many SIG the master has acted on so far, from its own log lines: one per
# reload or reopen it made, not one per signal received (nginx logs that too, and its workers
# log their own reopening).
acted() {
    local pattern master="$SERVER_PID#$SERVER_PID"
    case $1/$2 in
    forkd/HUP) pattern=" INFO reloaded configuration" ;;
    forkd/USR1) pattern=" INFO reopened logs" ;;
    nginx/HUP) pattern=" $master: reconfiguring\$" ;;
    nginx/USR1) pattern=" $master: reopening logs\$" ;;
    esac
    grep -c -- "$pattern" "$(server_log "$1")" || true
}

# problems NAME: warnings and errors the server has logged so far (a crashed or killed worker,
# a failed reload, an access-log line lost).
problems() {
    case $1 in
    forkd) grep -cE " (WARN|ERROR) " "$(server_log "$1")" || true ;;
    nginx) grep -cE "\[(warn|error|crit|alert|emerg)\]" "$(server_log "$1")" || true ;;
    esac
}

send() {
    local name=$1 sig=$2
    if [[ $name == nginx && $NGINX_SIGNAL == cli ]]; then
        local verb=reload
        if [[ $sig == USR1 ]]; then
            verb=reopen
        fi
        nginx -c "$WORK/srv-nginx/nginx.conf" -p "$WORK/srv-nginx" -e "$WORK/srv-nginx/logs/error.log" \
            -s "$verb" 2>/dev/null
    else
        kill "-$sig" "$SERVER_PID"
    fi
}

# signal_loop NAME SIG: sends N SIG to the master, evenly from 1 s after now to 1 s before
# DURATION ends, on an absolute schedule. Sets SENT and SEND_SPAN (seconds from first to last).
signal_loop() {
    local name=$1 sig=$2 i now due first=
    local start=${EPOCHREALTIME//[.,]/}
    local step=$(((DURATION - 2) * 1000000 / (N > 1 ? N - 1 : 1)))
    SENT=0
    SEND_SPAN=0
    for ((i = 0; i < N; i++)); do
        due=$((start + 1000000 + i * step))
        now=${EPOCHREALTIME//[.,]/}
        if ((due > now)); then
            sleep "$(printf '%d.%06d' $(((due - now) / 1000000)) $(((due - now) % 1000000)))"
        fi
        if [[ $name == forkd && $sig == USR1 && $i -eq $((N / 2)) ]]; then
            # logrotate's move-and-create, then its postrotate signal (this one). Done without
            # a moment in which the path is missing or root's: children still reopen lazily
            # after the previous signal, 40 ms ago, and one that found no file it may open
            # would leave (and log a warning) instead of reopening in place.
            local log=$WORK/srv-forkd/access.log
            make_log "$log.new"
            ln "$log" "$log.1"
            mv -f "$log.new" "$log"
        fi
        send "$name" "$sig" || break
        now=${EPOCHREALTIME//[.,]/}
        first=${first:-$now}
        SENT=$((SENT + 1))
        SEND_SPAN=$(printf '%d.%03d' $(((now - first) / 1000000)) $(((now - first) % 1000000 / 1000)))
    done
}

# cell NAME KIND: one load run against server NAME with KIND of signals (none, HUP or USR1);
# writes $OUT/NAME-KIND.json (forkd-loadgen's report plus what was sent and acted on).
cell() {
    local name=$1 kind=$2 port=$3 acted0=0 problems0
    problems0=$(problems "$name")
    if [[ $kind != none ]]; then
        acted0=$(acted "$name" "$kind")
    fi
    echo "== $name, $kind: $CONNS keep-alive connections for ${DURATION}s" >&2
    "$LOADGEN" --json -c "$CONNS" -d "${DURATION}s" --watch-pid "$SERVER_PID" --warmup 0s \
        "http://127.0.0.1:$port/2k.html" >"$WORK/load.json" &
    LOAD_PID=$!
    SENT=0 SEND_SPAN=0
    if [[ $kind != none ]]; then
        signal_loop "$name" "$kind"
    fi
    local code=0
    wait "$LOAD_PID" || code=$?
    LOAD_PID=
    # Counted after the load: the last signal went 1 s before its end, time enough for the
    # master to act on it.
    local acted=0
    if [[ $kind != none ]]; then
        acted=$(($(acted "$name" "$kind") - acted0))
    fi
    python3 - "$WORK/load.json" "$name" "$kind" "$SENT" "$acted" "$SEND_SPAN" \
        "$(($(problems "$name") - problems0))" "$code" >"$OUT/$name-$kind.json" <<'EOF'
import json, sys
path, name, kind, sent, acted, span, problems, code = sys.argv[1:]
try:
    report = json.load(open(path))
except (OSError, ValueError):
    report = None
print(json.dumps({"server": name, "signal": kind, "sent": int(sent), "acted": int(acted),
                  "send_span_s": float(span), "server_problems": int(problems),
                  "loadgen_exit": int(code), "report": report}))
EOF
}

port=$PORT
for server in $SERVERS; do
    start "$server" "$port"
    for kind in none HUP USR1; do
        cell "$server" "$kind" "$port"
    done
    stop_tree "$SERVER_PID"
    SERVER_PID=
    cp "$(server_log "$server")" "$OUT/$server.log"
    port=$((port + 1))
done

python3 - "$OUT" "$SERVERS" "$N" "$DURATION" "$CONNS" "$WORKERS" "$NGINX_WORKERS" "$NGINX_SIGNAL" \
    >"$OUT/table.md" <<'EOF'
import json, os, platform, sys, time
out, servers, n, duration, conns, workers, nginx_workers, nginx_signal = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
load1 = open("/proc/loadavg").read().split()[0]
how = "`nginx -s reload` / `-s reopen`" if nginx_signal == "cli" else "kill -HUP / -USR1 to the master"
print(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} x {cpu}, "
      f"Linux {platform.release()} (load average {load1} at the end); forkd-loadgen on the same "
      f"machine, {conns} keep-alive connections, {duration}s per run, {n} signals per run spread "
      f"over the middle {int(duration) - 2}s. forkd: prefork, {workers} workers, access log to a file. "
      f"nginx: {nginx_workers} workers, access log off, signals by {how}.\n")
print("| server | signals: sent / acted on | requests | req/s | failed | failed by kind | connections opened | p99 / max latency | tree after: processes, fd change | server warnings |")
print("|---|---|---|---|---|---|---|---|---|---|")
def us(v):
    if v is None:
        return "n/a"
    return f"{v / 1e6:.2f} s" if v >= 1e6 else (f"{v / 1000:.1f} ms" if v >= 1000 else f"{v} us")
for server in servers.split():
    for kind in ("none", "HUP", "USR1"):
        try:
            c = json.load(open(f"{out}/{server}-{kind}.json"))
        except (OSError, ValueError):
            continue
        r = c["report"] or {}
        label = {"none": "none (baseline)", "HUP": "SIGHUP (reload)", "USR1": "SIGUSR1 (reopen)"}[kind]
        signals = "-" if kind == "none" else f"{c['sent']} / {c['acted']} in {c['send_span_s']:.1f}s"
        kinds = ", ".join(f"{k} {v}" for k, v in (r.get("errors") or {}).items() if v) or "none"
        if r.get("unfinished"):
            kinds += f" (+{r['unfinished']} unfinished at stop)"
        if not r:
            kinds = f"no report (forkd-loadgen exit {c['loadgen_exit']})"
        lat = r.get("latency_us") or {}
        w = r.get("watch") or {}
        after = w.get("after") or {}
        tree = (f"{after.get('processes')}, {w.get('fd_delta'):+d}" if after else
                f"n/a ({w.get('error') or 'not settled'})")
        print(f"| {server} {label} | {signals} | {r.get('requests', 0):,} | {r.get('requests_per_sec', 0):,.0f} "
              f"| {r.get('errors_total', 'n/a')} | {kinds} | {r.get('connects', 0):,} "
              f"| {us(lat.get('p99'))} / {us(lat.get('max'))} | {tree} | {c['server_problems']} |")
EOF
cat "$OUT/table.md"
