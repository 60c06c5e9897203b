#!/usr/bin/env bash
# Is forkd-loadgen the bottleneck? Measures it against wrk on the same nginx, same connections,
# same threads, alternating the two tools ROUNDS times per setting so that the machine's noise
# falls on both, and prints the medians and the ratio loadgen/wrk (the target is >= 0.9).
# nginx is started by hand on loopback with a temporary configuration and stopped by its PID.
#
# Usage: benches/loadgen-vs-wrk.sh     (env: ROUNDS=3 DURATION=5s CONNS="16 64" THREADS=2
#                                       BIN_DIR=DIR to skip the build)
# Needs: wrk, nginx, python3.
set -euo pipefail

cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-"16 64"}
THREADS=${THREADS:-2}
PORT=${PORT:-18462}
for tool in wrk nginx python3; do
    command -v "$tool" >/dev/null || { echo "loadgen-vs-wrk.sh: $tool is missing" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/forkd-vs-wrk.XXXXXX)
if [[ -z ${BIN_DIR:-} ]]; then
    cargo build --release --bin forkd-loadgen >&2
    BIN_DIR=target/release
fi
cp "$BIN_DIR/forkd-loadgen" "$WORK/"
LOADGEN=$WORK/forkd-loadgen
mkdir -p "$WORK/site" "$WORK/logs"
head -c 2048 /dev/zero | tr '\0' 'x' >"$WORK/site/2k.html"
cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    tcp_nodelay on;
    server { listen 127.0.0.1:$PORT; root $WORK/site; }
}
EOF
setsid nginx -c "$WORK/nginx.conf" -p "$WORK" &
NGINX=$!
trap 'kill -TERM $NGINX 2>/dev/null || true; wait $NGINX 2>/dev/null || true; rm -rf "$WORK"' EXIT
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.05; done
URL=http://127.0.0.1:$PORT/2k.html

wrk_rps() {
    wrk -t"$THREADS" -c "$1" -d "$DURATION" "${@:2}" "$URL" | awk '/^Requests\/sec/ {print $2}'
}
loadgen_rps() {
    "$LOADGEN" --json -t "$THREADS" -c "$1" -d "$DURATION" "${@:2}" "$URL" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["requests_per_sec"])'
}

echo "| setting | wrk req/s (median of $ROUNDS) | forkd-loadgen req/s (median of $ROUNDS) | loadgen / wrk |"
echo "|---|---|---|---|"
for c in $CONNS; do
    for mode in keep-alive new-conn; do
        if [[ $mode == keep-alive ]]; then
            wrk_args=() lg_args=()
        else
            wrk_args=(-H "Connection: close") lg_args=(--new-conn)
        fi
        w=() l=()
        for _ in $(seq "$ROUNDS"); do
            w+=("$(wrk_rps "$c" "${wrk_args[@]}")")
            l+=("$(loadgen_rps "$c" "${lg_args[@]}")")
        done
        python3 - "$c" "$mode" "${w[*]}" "${l[*]}" <<'EOF'
import statistics, sys
c, mode, w, l = sys.argv[1], sys.argv[2], list(map(float, sys.argv[3].split())), list(map(float, sys.argv[4].split()))
mw, ml = statistics.median(w), statistics.median(l)
print(f"| {c} connections, {mode}, {len(w)} x alternating | {mw:,.0f} | {ml:,.0f} | {ml / mw:.2f} |")
EOF
    done
done
