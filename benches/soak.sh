#!/usr/bin/env bash
# The soak: 1,000,000 requests through forkd with forkd-loadgen watching its process tree, and
# --assert-flat deciding. Passes (exit 0) only when the tree's fds, the master's fds, the
# process count, zombies and CLOSE_WAIT sockets did not grow (tolerance 0), RSS and PSS grew by
# no more than max(5 %, 1 MiB) over the run, and after the load the tree is back to the fds it
# had before with no zombie. Not part of `cargo test`: it takes minutes and a quiet machine.
#
# Usage: benches/soak.sh [MODE]        MODE is prefork (default) or fork
#        (env: REQUESTS=1000000 CONNS=16 NEW_CONN=1 to open a connection per request,
#         OUT=DIR for soak.json, soak.csv and soak.svg (default target/soak), BIN_DIR=DIR to skip
#         the build)
set -euo pipefail

cd "$(dirname "$0")/.."
MODE=${1:-prefork}
REQUESTS=${REQUESTS:-1000000}
CONNS=${CONNS:-16}
OUT=${OUT:-target/soak}
PORT=${PORT:-18463}

WORK=$(mktemp -d /tmp/forkd-soak.XXXXXX)
# shellcheck source=benches/lib.sh
source benches/lib.sh
# The forkd the benchmarks measure (statically linked unless STATIC=0), and the loadgen.
bench_binaries forkd forkd-loadgen
mkdir -p "$OUT"

# Every client of a load generator shares one address: no per-client limit.
setsid "$WORK/forkd" --listen "127.0.0.1:$PORT" --mode "$MODE" --max-conns-per-client 0 \
    2>"$WORK/forkd.err" &
FORKD=$!
trap 'kill -TERM $FORKD 2>/dev/null || true; wait $FORKD 2>/dev/null || true; rm -rf "$WORK"' EXIT
deadline=$((SECONDS + 20))
until grep -q "ready on" "$WORK/forkd.err" 2>/dev/null; do
    if ((SECONDS > deadline)) || ! kill -0 "$FORKD" 2>/dev/null; then
        cat "$WORK/forkd.err" >&2
        exit 1
    fi
    sleep 0.05
done

args=(-c "$CONNS" -n "$REQUESTS" --watch-pid "$FORKD" --interval 1s --warmup 5s --assert-flat
    --csv "$OUT/soak.csv" --plot "$OUT/soak.svg")
if [[ -n ${NEW_CONN:-} ]]; then
    args+=(--new-conn)
fi
echo "soak: forkd --mode $MODE (pid $FORKD), $REQUESTS requests over $CONNS connections" >&2
set +e
"$WORK/forkd-loadgen" "${args[@]}" "http://127.0.0.1:$PORT/bench/2k.html" | tee "$OUT/soak.txt"
code=${PIPESTATUS[0]}
set -e
case $code in
0) echo "soak: PASS (flat)" >&2 ;;
3) echo "soak: FAIL (something grew; see $OUT/soak.txt and $OUT/soak.svg)" >&2 ;;
*) echo "soak: FAIL (forkd-loadgen exited $code)" >&2 ;;
esac
exit "$code"
