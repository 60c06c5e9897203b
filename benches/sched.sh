#!/usr/bin/env bash
# What --worker-sched costs and buys, from one run: forkd in event mode (one worker per CPU) with
# its workers as SCHED_BATCH (batch, event mode's default) and as the master (inherit), in
# alternating rounds:
#   keep-alive: closed loop, CONNS connections, nothing else running (the client shares the
#               CPUs: the case batch is for), requests/s and p99;
#   beside hogs: open loop at RATE requests/s while HOGS busy loops (one per CPU) keep every CPU
#               taken: the case batch costs in, p50 and p99 of each request from its intended
#               send time; once with the hogs in a session of their own, once in forkd's.
# Prints one Markdown table of medians (min-max) over RUNS rounds. Loopback only; the hogs are
# this script's children, killed after each measurement and on exit.
#
# Usage: benches/sched.sh
#   env: DURATION=5s RUNS=3 CONNS=16 RATE=2000 HOGS=CPUs PORT=18441 BIN_DIR=DIR (no build)
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
source benches/lib.sh
DURATION=${DURATION:-5s}
RUNS=${RUNS:-3}
CONNS=${CONNS:-16}
RATE=${RATE:-2000}
HOGS=${HOGS:-$(nproc)}
PORT=${PORT:-18441}

WORK=$(mktemp -d /tmp/forkd-sched.XXXXXX)
SERVER= HOG_PIDS=()
cleanup() {
    stop_hogs
    stop
    rm -rf "$WORK"
}
stop_hogs() {
    if ((${#HOG_PIDS[@]} > 0)); then
        kill "${HOG_PIDS[@]}" 2>/dev/null || true
        wait "${HOG_PIDS[@]}" 2>/dev/null || true
    fi
    HOG_PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench_binaries forkd forkd-loadgen
bench_site small
port_free "$PORT"

# start POLICY [HOGS]: forkd in event mode with --worker-sched POLICY, in a session and process
# group of its own (SERVER), accepting; with HOGS, that many busy loops started first in the
# same session (so stop_tree ends them with it).
start() {
    local hogs=${2:-0}
    setsid bash -c 'for ((i = 0; i < $1; i++)); do (while :; do :; done) & done; shift; exec "$@"' \
        hogs "$hogs" "$FORKD" --listen "127.0.0.1:$PORT" --root "$SITE" --mode event \
        --max-conns-per-client 0 --worker-sched "$1" >"$WORK/forkd.log" 2>&1 &
    SERVER=$!
    wait_port "$PORT" "$SERVER"
}

stop() {
    stop_tree "$SERVER" 5
    SERVER=
}

# hogged URL: p50 and p99 of an open loop at RATE on URL, after a second's warm-up.
hogged() {
    "$LOADGEN" -t1 -c "$CONNS" --rate "$RATE" -d 1s -q "$1" >/dev/null
    "$LOADGEN" -t1 -c "$CONNS" --rate "$RATE" -d "$DURATION" --json "$1"
}

# measure POLICY: one round for POLICY; appends "rps p99 p50 p99 p50 p99 errors" to
# $WORK/POLICY. Linux shares CPU fairly between sessions first (autogroup) or cgroups, and
# only then between the tasks of one, so the hogs run twice: in a session of their own (a
# job elsewhere on the machine: forkd's session still gets its share) and in forkd's own
# session (where its workers compete with them task by task). Both start before the server.
measure() {
    local policy=$1 url=http://127.0.0.1:$PORT/2k.html ka apart along i
    start "$policy"
    "$LOADGEN" -t1 -c "$CONNS" -d 1s -q "$url" >/dev/null # warm-up
    ka=$("$LOADGEN" -t1 -c "$CONNS" -d "$DURATION" --json "$url")
    stop
    for ((i = 0; i < HOGS; i++)); do
        setsid bash -c 'while :; do :; done' &
        HOG_PIDS+=($!)
    done
    sleep 1
    start "$policy"
    apart=$(hogged "$url")
    stop
    stop_hogs
    start "$policy" "$HOGS"
    sleep 1
    along=$(hogged "$url")
    stop
    jq -rn --argjson a "$ka" --argjson b "$apart" --argjson c "$along" \
        '[$a.requests_per_sec, $a.latency_us.p99, $b.latency_us.p50, $b.latency_us.p99,
          $c.latency_us.p50, $c.latency_us.p99,
          $a.errors_total + $b.errors_total + $c.errors_total] | @tsv' >>"$WORK/$policy"
}

need_tool jq
for ((r = 1; r <= RUNS; r++)); do
    for policy in batch inherit; do
        measure "$policy"
        echo "round $r/$RUNS, $policy: $(tail -1 "$WORK/$policy")" >&2
    done
done

# cell FILE COLUMN SCALE FORMAT: the median (min-max) of COLUMN over the rounds, divided by
# SCALE, each printed with FORMAT.
cell() {
    sort -g -k"$2,$2" "$1" | awk -v c="$2" -v s="$3" -v f="$4" '
        { v[NR] = $c / s }
        END { printf f " (" f "-" f ")", v[int((NR + 1) / 2)], v[1], v[NR] }'
}

echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) CPUs, $(uname -r); forkd event mode,"
echo "one worker per CPU; medians (min-max) of $RUNS alternating rounds of $DURATION."
echo
echo "| --worker-sched | keep-alive c$CONNS req/s | its p99 | $HOGS hogs in another session, $RATE req/s: p50 | p99 | $HOGS hogs in forkd's session: p50 | p99 | errors |"
echo "|---|---|---|---|---|---|---|---|"
for policy in batch inherit; do
    f=$WORK/$policy
    errors=$(awk '{ e += $7 } END { print e }' "$f")
    echo "| $policy | $(cell "$f" 1 1000 %.1fk) | $(cell "$f" 2 1000 %.2f) ms |" \
        "$(cell "$f" 3 1000 %.2f) ms | $(cell "$f" 4 1000 %.2f) ms |" \
        "$(cell "$f" 5 1000 %.2f) ms | $(cell "$f" 6 1000 %.2f) ms | $errors |"
done
