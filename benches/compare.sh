#!/usr/bin/env bash
# forkd's modes against lighttpd (one process, one event loop), nginx, Apache (prefork MPM),
# busybox httpd, and three floors (benches/floor/: minimal C servers of forkd's process models
# that answer one fixed response, the most each model allows on this machine).
#
# This script only knows how to start each server (its command line and, for the peers, a
# temporary configuration on 127.0.0.1); `forkd-loadgen compare` does the rest: it starts each
# server in a process group of its own, waits until it accepts connections, alternates the
# runs across servers, waits for a quiet machine before each run and flags the noisy ones,
# watches every server's process tree (RSS, PSS, processes, fds), stops each by its group, and
# prints medians (min-max), ratios to BASELINE and the trees. Two calls:
#   2 KB file: keep-alive and a new connection per request, 16 and 64 connections
#   1 MB file: keep-alive, BIG_CONNS connections (the floors restarted with the 1 MB file, so
#              that their memory in the first call is that of a 2 KB one)
# Each call's exact command line is written above its tables in $OUT, with the tables as
# Markdown, and its latency plot beside it ($PLOTS/compare-2k.svg, compare-1m.svg).
#
# Usage: benches/compare.sh
#   env: DURATION=8s RUNS=3 WARMUP=2s BIG_CONNS=4 THREADS=1 BASELINE=lighttpd
#        QUIET_BELOW=0.25 (CPUs) QUIET_WAIT=5s OUT=target/compare.md PLOTS=target
#        PORT=18461 (the first server's; the others take the next ports, a fresh range for the
#        1 MB call, so that one server's TIME_WAIT sockets never slow another's connects)
#        BIN_DIR=DIR (forkd and forkd-loadgen from DIR, no build)
#        PREFORK_WORKERS=max(64, 16/CPU) EPOLL_WORKERS=CPUs
#        SERVERS="forkd-prefork forkd-fork forkd-event forkd-event-1 forkd-event-batch
#                 lighttpd lighttpd-batch nginx apache busybox floor-prefork floor-fork
#                 floor-epoll"
#   forkd-event-1 is event mode with one worker: lighttpd's model (one process, one event
#   loop). On a machine whose cores the load generator shares, one worker per CPU (forkd's
#   default, and floor-epoll's here) competes with the client for them.
#   forkd-event-batch is forkd-event with --worker-sched batch (SCHED_BATCH workers, README
#   "Scheduling"), the setting for a client that shares forkd's CPUs, as the load generator
#   here does; lighttpd-batch is lighttpd under chrt --batch, the same policy.
#   A quick check of the script: DURATION=2s RUNS=1 WARMUP=1s QUIET_WAIT=1s benches/compare.sh
#   The defaults take about 2 minutes per server.
# The load generator is forkd-loadgen with one thread (THREADS), as wrk -t1 was in issue 9's
# figures; benches/loadgen-vs-wrk.sh checks that it keeps up with wrk.
# Needs: cc (for the floors), cargo (unless BIN_DIR). A missing peer is installed from Debian
# when run as root (benches/lib.sh's need_tool, its service kept from starting); otherwise it
# is skipped with a message.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
source benches/lib.sh
DURATION=${DURATION:-8s}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-2s}
BIG_CONNS=${BIG_CONNS:-4}
THREADS=${THREADS:-1}
BASELINE=${BASELINE:-lighttpd}
QUIET_BELOW=${QUIET_BELOW:-0.25}
QUIET_WAIT=${QUIET_WAIT:-5s}
PORT=${PORT:-18461}
OUT=${OUT:-target/compare.md}
PLOTS=${PLOTS:-target}
CPUS=$(nproc)
# forkd's own default pool (16 per CPU, at least 64), given to forkd and its floor alike so that
# both run the same number of blocking workers.
PREFORK_WORKERS=${PREFORK_WORKERS:-$((CPUS * 16 > 64 ? CPUS * 16 : 64))}
EPOLL_WORKERS=${EPOLL_WORKERS:-$CPUS}
SERVERS=${SERVERS:-"forkd-prefork forkd-fork forkd-event forkd-event-1 forkd-event-batch
    lighttpd lighttpd-batch nginx apache busybox floor-prefork floor-fork floor-epoll"}

WORK=$(mktemp -d /tmp/forkd-compare.XXXXXX)
# forkd-loadgen stops the servers it started, even on Ctrl-C; only the directory is left.
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench_binaries forkd forkd-loadgen
bench_site big

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
    forkd-prefork | forkd-fork | forkd-event | forkd-event-1 | forkd-event-batch) ;;
    lighttpd) need_tool lighttpd >&2 || { echo "lighttpd is not installed"; return 1; } ;;
    lighttpd-batch)
        need_tool lighttpd >&2 || { echo "lighttpd is not installed"; return 1; }
        command -v chrt >/dev/null || { echo "chrt (util-linux) is not installed"; return 1; }
        ;;
    nginx) need_tool nginx >&2 || { echo "nginx is not installed"; return 1; } ;;
    apache) need_tool apache2 >&2 || { echo "apache2 is not installed"; return 1; } ;;
    busybox) need_tool busybox >&2 || { echo "busybox is not installed"; return 1; } ;;
    floor-*) [[ -n $FLOORS_BUILT ]] || { echo "the floors did not build (is cc installed?)"; return 1; } ;;
    *) echo "unknown server"; return 1 ;;
    esac
}

# command_for NAME PORT BODY: the command line that runs server NAME in the foreground on
# 127.0.0.1:PORT, writing its configuration first where it needs one. BODY (a file in $SITE) is
# what a floor answers; the others serve $SITE.
command_for() {
    local name=$1 port=$2 body=$3 dir=$WORK/$1-$2
    mkdir -p "$dir"
    case $name in
    forkd-prefork)
        echo "$FORKD --listen 127.0.0.1:$port --root $SITE --mode prefork --workers $PREFORK_WORKERS --max-conns-per-client 0"
        ;;
    forkd-fork)
        echo "$FORKD --listen 127.0.0.1:$port --root $SITE --mode fork --max-conns-per-client 0"
        ;;
    forkd-event)
        # As many workers as floor-epoll, so the ratio compares like with like.
        echo "$FORKD --listen 127.0.0.1:$port --root $SITE --mode event --workers $EPOLL_WORKERS --max-conns-per-client 0"
        ;;
    forkd-event-1)
        # One process, one event loop, as lighttpd.
        echo "$FORKD --listen 127.0.0.1:$port --root $SITE --mode event --workers 1 --max-conns-per-client 0"
        ;;
    forkd-event-batch)
        echo "$FORKD --listen 127.0.0.1:$port --root $SITE --mode event --workers $EPOLL_WORKERS --max-conns-per-client 0 --worker-sched batch"
        ;;
    lighttpd)
        lighttpd_conf "$dir" "$port"
        echo "lighttpd -D -f $dir/lighttpd.conf"
        ;;
    lighttpd-batch)
        lighttpd_conf "$dir" "$port"
        echo "chrt --batch 0 lighttpd -D -f $dir/lighttpd.conf"
        ;;
    nginx)
        nginx_conf "$dir" "$port"
        echo "nginx -c $dir/nginx.conf -p $dir -e $dir/logs/error.log"
        ;;
    apache)
        apache_conf "$dir" "$port"
        echo "apache2 -f $dir/httpd.conf -DFOREGROUND"
        ;;
    busybox) echo "busybox httpd -f -p 127.0.0.1:$port -h $SITE" ;;
    floor-prefork) echo "$WORK/bin/floor-prefork $port $PREFORK_WORKERS $SITE/$body" ;;
    floor-fork) echo "$WORK/bin/floor-fork $port 1 $SITE/$body" ;;
    floor-epoll) echo "$WORK/bin/floor-epoll $port $EPOLL_WORKERS $SITE/$body" ;;
    esac
}

# apache_conf DIR PORT: Apache with the prefork MPM on 127.0.0.1:PORT serving $SITE.
apache_conf() {
    local dir=$1 port=$2 mods=/usr/lib/apache2/modules
    cat >"$dir/httpd.conf" <<EOF2
ServerRoot $dir
ServerName 127.0.0.1
Listen 127.0.0.1:$port
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
EOF2
}

SKIPPED=()
for server in $SERVERS; do
    if ! why=$(available "$server"); then
        echo "$0: skipping $server: $why" >&2
        SKIPPED+=("$server: $why")
    fi
done

# compare TITLE PLOT PORT BODY [FORKD-LOADGEN COMPARE FLAGS...]: one `forkd-loadgen compare` over
# every available server, its command line and Markdown tables appended to $OUT.
compare() {
    local title=$1 plot=$2 port=$3 body=$4 server arg targets=() baseline=
    shift 4
    for server in $SERVERS; do
        available "$server" >/dev/null 2>&1 || continue
        targets+=("$server=http://127.0.0.1:$port/$body@$(command_for "$server" "$port" "$body")")
        port=$((port + 1))
        [[ $server == "$BASELINE" ]] && baseline=$BASELINE
    done
    [[ -n $baseline ]] || baseline=${targets[0]%%=*}
    local cmd=("$LOADGEN" compare -t "$THREADS" -d "$DURATION" --reps "$RUNS" --warm "$WARMUP"
        --quiet-below "$QUIET_BELOW" --quiet-wait "$QUIET_WAIT" --baseline "$baseline"
        --markdown "$WORK/tables.md" --plot "$plot" "$@" "${targets[@]}")
    {
        echo "### $title"
        echo
        echo '```sh'
        # The command as run, each target on a line of its own.
        printf 'forkd-loadgen compare'
        for arg in "${cmd[@]:2:$((${#cmd[@]} - 2 - ${#targets[@]}))}"; do
            if [[ $arg =~ ^[A-Za-z0-9_./:,=-]+$ ]]; then printf ' %s' "$arg"; else printf " '%s'" "$arg"; fi
        done
        printf ' \\\n'
        printf "    '%s' \\\\\n" "${targets[@]}" | sed '$ s/ \\$//'
        echo '```'
        echo
    } >>"$OUT"
    "${cmd[@]}"
    cat "$WORK/tables.md" >>"$OUT"
    echo >>"$OUT"
}

mkdir -p "$(dirname "$OUT")" "$PLOTS"
: >"$OUT"
compare "2 KB file" "$PLOTS/compare-2k.svg" "$PORT" 2k.html -c 16,64 --keep-alive --new-conn
compare "1 MB file" "$PLOTS/compare-1m.svg" "$((PORT + 20))" 1m.bin -c "$BIG_CONNS" --keep-alive
if ((${#SKIPPED[@]})); then
    printf 'Not measured: %s.\n' "$(IFS=';'; echo "${SKIPPED[*]}")" >>"$OUT"
fi
echo "$0: tables in $OUT, plots in $PLOTS/compare-2k.svg and $PLOTS/compare-1m.svg" >&2
