#!/usr/bin/env bash
# A forkd cluster on one machine: N hosts (default 3), each a forkd under forkd-supervisor in a
# network namespace of its own with its own address on a private bridge (or, where namespaces
# cannot be made, on its own 127.x.y.z address), and HAProxy in front on 127.0.0.1. Then the
# operations named on the command line, each under load from forkd-loadgen through HAProxy.
# Everything it started and made (processes, namespaces, bridge, files) is removed when it
# ends: on success, on failure and on Ctrl-C.
#
#   deploy/cluster/cluster.sh                      # start, print the URLs, wait for Ctrl-C
#   deploy/cluster/cluster.sh rolling-reload rolling-restart kill
#   deploy/cluster/cluster.sh rolling-upgrade target/release/forkd
#
# Each operation's loadgen report is OUT/OP.json (and OUT/OP.svg); a summary with one line
# per operation is printed on stdout as JSON and kept in OUT/summary.json.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: cluster.sh [OPTIONS] [OPERATION...]

Operations (each runs under load, in the order given; none: start and wait for Ctrl-C):
  rolling-reload           SIGHUP each host's forkd in turn, waiting until it serves again
  rolling-restart          each host in turn: drain (runtime API), stop, start, wait healthy
  rolling-upgrade NEWBIN   the same, with each host's forkd binary replaced by NEWBIN
  kill                     SIGKILL host 1's forkd; time HAProxy's DOWN and UP

Options:
  -n, --hosts N         hosts (default 3)
  --mode MODE           forkd's --mode: prefork, fork or event (default prefork)
  --bin-dir DIR         where forkd, forkd-supervisor and forkd-loadgen are
                        (default: target/release, else target/debug)
  --out DIR             where reports go (default: a temporary directory, removed unless --keep)
  --connections N       loadgen connections (default 16)
  --rate R              loadgen open loop at R requests/s (default: closed loop, as fast as
                        the hosts answer)
  --loopback            use 127.x.y.z addresses even where namespaces are available
  --keep                keep the run directory (configuration, logs) after the end
EOF
}

HOSTS=3
MODE=prefork
BIN=""
OUT=""
CONNS=16
RATE=""
FORCE_LOOPBACK=0
KEEP=0
OPS=()
NEW_BIN=""
while [ $# -gt 0 ]; do
    case "$1" in
        -n | --hosts) HOSTS=$2; shift 2 ;;
        --mode) MODE=$2; shift 2 ;;
        --bin-dir) BIN=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --connections) CONNS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --loopback) FORCE_LOOPBACK=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h | --help) usage; exit 0 ;;
        rolling-reload | rolling-restart | kill) OPS+=("$1"); shift ;;
        rolling-upgrade)
            [ $# -ge 2 ] || { usage >&2; exit 2; }
            OPS+=("$1"); NEW_BIN=$(realpath "$2"); shift 2 ;;
        *) echo "cluster.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

REPO=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "$BIN" ]; then
    BIN=$REPO/target/release
    [ -x "$BIN/forkd" ] || BIN=$REPO/target/debug
fi
for b in forkd forkd-supervisor forkd-loadgen; do
    [ -x "$BIN/$b" ] || die "no $BIN/$b: build first (cargo build --release) or give --bin-dir"
done
command -v haproxy >/dev/null || die "haproxy is not installed (Debian: apt-get install haproxy)"
[[ $HOSTS =~ ^[1-9][0-9]?$ ]] || die "--hosts $HOSTS: 1 to 99"

RUN=$(mktemp -d /tmp/forkd-cluster.XXXXXX)
chmod 755 "$RUN"
[ -n "$OUT" ] || OUT=$RUN/out
mkdir -p "$OUT"

# Everything to undo, in reverse order of making.
NETNS=0
BRIDGE=""
declare -a NS=() ADDR=() SUP_PID=()
HAPROXY_PID=""
LOAD_PID=""
SLEEP_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [ -n "$LOAD_PID" ] && kill -KILL "$LOAD_PID" 2>/dev/null
    [ -n "$SLEEP_PID" ] && kill -KILL "$SLEEP_PID" 2>/dev/null
    for i in "${!SUP_PID[@]}"; do stop_host "$i" 2>/dev/null; done
    [ -n "$HAPROXY_PID" ] && kill -TERM "$HAPROXY_PID" 2>/dev/null && wait "$HAPROXY_PID" 2>/dev/null
    for ns in "${NS[@]}"; do
        [ -n "$ns" ] || continue
        # Whatever still runs in the namespace (a forkd whose supervisor was killed) goes too.
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    [ -n "$BRIDGE" ] && ip link del "$BRIDGE" 2>/dev/null
    if [ "$KEEP" = 1 ]; then
        log "kept $RUN"
    else
        rm -rf "$RUN"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# A free TCP port on 127.0.0.1 (nothing answers a connect to it).
free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# Namespaces and a bridge need root and CAP_NET_ADMIN: try to make them, and fall back.
can_netns() {
    [ "$(id -u)" = 0 ] && command -v ip >/dev/null || return 1
    local probe="fkp$$"
    ip netns add "$probe" 2>/dev/null || return 1
    ip netns del "$probe"
}

# One bridge per run, named and addressed from a random id: two runs at once cannot collide
# (making the bridge is the claim; an id whose name or subnet is taken is drawn again).
make_network() {
    local id a b
    for _ in $(seq 1 50); do
        id=$(printf '%04x' $((RANDOM ^ ($$ << 3) & 0xffff)))
        a=$((0x${id:0:2})) b=$((0x${id:2:2}))
        ip -4 route show | grep -q "^10\.$a\.$b\." && continue
        ip link add "fkb$id" type bridge 2>/dev/null || continue
        BRIDGE=fkb$id
        break
    done
    [ -n "$BRIDGE" ] || die "no free bridge name or subnet"
    ip addr add "10.$a.$b.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for i in $(seq 1 "$HOSTS"); do
        local ns="fkn${id}h$i" out="fkv${id}o$i" in="fkv${id}i$i"
        ip netns add "$ns"
        NS[i]=$ns
        ip link add "$out" type veth peer name "$in"
        ip link set "$out" master "$BRIDGE" up
        ip link set "$in" netns "$ns"
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "10.$a.$b.$((10 + i))/24" dev "$in"
        ip -n "$ns" link set "$in" up
        ip -n "$ns" route add default via "10.$a.$b.1"
        ADDR[i]=10.$a.$b.$((10 + i))
    done
    log "bridge $BRIDGE 10.$a.$b.0/24, namespaces ${NS[*]}"
}

# Loopback instead: every 127.x.y.z is this machine's; x.y from the run's random id.
loopback_addresses() {
    local id=$((RANDOM ^ ($$ << 3) & 0xffff))
    for i in $(seq 1 "$HOSTS"); do
        ADDR[i]=127.$((id >> 8 & 0xff)).$((id & 0xff)).$((10 + i))
    done
    log "hosts on loopback addresses ${ADDR[*]} (network namespaces need root and CAP_NET_ADMIN)"
}

# The runtime API: one command, its answer on stdout.
api() {
    local fd
    exec {fd}<>"/dev/tcp/127.0.0.1/$API_PORT" || return 1
    printf '%s\n' "$*" >&"$fd"
    cat <&"$fd"
    exec {fd}>&-
}

# A server's column from `show stat` (status, scur...), by the header's name for it.
stat_of() {
    api "show stat" | awk -F, -v srv="h$1" -v col="$2" '
        NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
        $1 == "be_forkd" && $2 == srv { print $c }'
}

# Waits up to $3 seconds for server $1's status to match the regex $2.
wait_status() {
    local end s
    end=$(awk -v t="$(now)" -v d="$3" 'BEGIN { printf "%.3f", t + d }')
    while :; do
        s=$(stat_of "$1" status || true)
        [[ $s =~ $2 ]] && return 0
        if awk -v t="$(now)" -v e="$end" 'BEGIN { exit !(t > e) }'; then
            log "h$1 is \"$s\", not /$2/, after $3 s"
            return 1
        fi
        sleep 0.02
    done
}

# What host $1's agent says now.
agent_says() {
    local fd line=""
    exec {fd}<>"/dev/tcp/${ADDR[$1]}/9000" 2>/dev/null || { echo "refused"; return; }
    read -r -t 2 line <&"$fd" || true
    exec {fd}>&-
    echo "$line"
}

start_host() {
    local i=$1 dir=$RUN/h$1
    mkdir -p "$dir"
    [ -x "$dir/forkd" ] || install -m 755 "$BIN/forkd" "$dir/forkd"
    local status=127.0.0.1:9100
    [ "$NETNS" = 1 ] || status=${ADDR[i]}:9100
    local cmd=(
        "$BIN/forkd-supervisor"
        # A forkd that dies is restarted after a second, not 100 ms: HAProxy then sees the
        # host go (fall 2 at 200 ms) instead of a gap too short for any check to notice.
        --backoff-base 1s --stable-after 5s
        --status-file "$dir/supervisor.json"
        --
        "$dir/forkd" --mode "$MODE" --workers 4
        --listen "${ADDR[i]}:8080" --agent-listen "${ADDR[i]}:9000" --status-listen "$status"
        --pid-file "$dir/forkd.pid" --shutdown-timeout 5s
        # Every client comes from HAProxy's one address.
        --max-conns-per-client 0
    )
    if [ "$NETNS" = 1 ]; then
        ip netns exec "${NS[i]}" setsid "${cmd[@]}" >>"$dir/log" 2>&1 </dev/null &
    else
        setsid "${cmd[@]}" >>"$dir/log" 2>&1 </dev/null &
    fi
    SUP_PID[i]=$!
}

# TERM to the supervisor (which drains forkd), KILL after 15 s.
stop_host() {
    local i=$1 pid=${SUP_PID[$1]:-}
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "SUP_PID[$i]"
}

forkd_pid() {
    local f=$RUN/h$1/forkd.pid
    for _ in $(seq 1 200); do
        [ -s "$f" ] && cat "$f" && return
        sleep 0.05
    done
    die "h$1: no forkd pid file"
}

start_haproxy() {
    PORT=$(free_port)
    API_PORT=$(free_port)
    local servers=""
    for i in $(seq 1 "$HOSTS"); do
        servers+="    server h$i ${ADDR[i]}:8080"$'\n'
    done
    awk -v run="$RUN" -v port="$PORT" -v api="$API_PORT" -v servers="$servers" '
        { gsub(/@RUN@/, run); gsub(/@PORT@/, port); gsub(/@API_PORT@/, api) }
        /^@SERVERS@$/ { printf "%s", servers; next }
        { print }' "$REPO/deploy/cluster/haproxy.cfg.in" >"$RUN/haproxy.cfg"
    haproxy -c -q -f "$RUN/haproxy.cfg" || die "haproxy refuses $RUN/haproxy.cfg"
    haproxy -db -f "$RUN/haproxy.cfg" >>"$RUN/haproxy.log" 2>&1 </dev/null &
    HAPROXY_PID=$!
    for _ in $(seq 1 100); do
        api "show info" >/dev/null 2>&1 && return
        sleep 0.05
    done
    die "haproxy did not start: $(tail -5 "$RUN/haproxy.log")"
}

start_load() {
    "$BIN/forkd-loadgen" --json -c "$CONNS" ${RATE:+--rate "$RATE"} -d 600s --timeout 5s --interval 250ms \
        --plot "$OUT/$1.svg" "http://127.0.0.1:$PORT/bench/2k.html" \
        >"$OUT/$1.json" 2>"$OUT/$1.loadgen.log" </dev/null &
    LOAD_PID=$!
    sleep 1
}

stop_load() {
    sleep 1
    kill -INT "$LOAD_PID" 2>/dev/null || true
    wait "$LOAD_PID" 2>/dev/null || true
    LOAD_PID=""
    [ -s "$OUT/$1.json" ] || die "$1: the loadgen wrote no report: $(tail -3 "$OUT/$1.loadgen.log")"
}

# A number from a loadgen report (flat JSON keys only).
report_num() {
    grep -o "\"$2\": *[0-9.]*" "$OUT/$1.json" | head -1 | sed 's/.*: *//'
}

# Host $1's /status.json (its status page listens on loopback: inside its namespace).
host_status() {
    local get='exec 3<>"/dev/tcp/$0/9100" && printf "GET /status.json HTTP/1.0\r\n\r\n" >&3 && cat <&3'
    if [ "$NETNS" = 1 ]; then
        ip netns exec "${NS[$1]}" bash -c "$get" 127.0.0.1 2>/dev/null
    else
        bash -c "$get" "${ADDR[$1]}" 2>/dev/null
    fi
}

host_field() {
    host_status "$1" | grep -o "\"$2\":\"\?[a-z0-9]*" | head -1 | sed 's/.*:"\?//'
}

rolling_reload() {
    local g
    for i in $(seq 1 "$HOSTS"); do
        g=$(host_field "$i" generation)
        kill -HUP "$(forkd_pid "$i")"
        # The agent says drain while the old generation's workers finish; the reload is over
        # when the generation moved on and the master says it serves.
        for _ in $(seq 1 200); do
            [ "$(host_field "$i" generation)" -gt "$g" ] &&
                [ "$(host_field "$i" state)" = serving ] && break
            sleep 0.05
        done
        [ "$(host_field "$i" generation)" -gt "$g" ] || die "h$i did not reload"
        log "h$i reloaded to generation $(host_field "$i" generation): agent says \"$(agent_says "$i")\""
        sleep 0.5
    done
}

# Drain through the runtime API (the agent is paused meanwhile, or its "ready" would undo the
# drain), wait for the host's sessions to end, stop it, start it (with a new binary for an
# upgrade), wait until the health checks pass, then give it back to the balance.
restart_host() {
    local i=$1 new=${2:-} t0
    t0=$(now)
    api "disable agent be_forkd/h$i" >/dev/null
    api "set server be_forkd/h$i state drain" >/dev/null
    for _ in $(seq 1 100); do
        [ "$(stat_of "$i" scur)" = 0 ] && break
        sleep 0.05
    done
    stop_host "$i"
    # Seen down by the health checks first, so that DRAIN below means the new forkd passed them.
    wait_status "$i" '^DOWN' 5 || die "HAProxy did not see h$i stop"
    if [ -n "$new" ]; then
        install -m 755 "$new" "$RUN/h$i/forkd.new"
        mv -f "$RUN/h$i/forkd.new" "$RUN/h$i/forkd"
    fi
    start_host "$i"
    wait_status "$i" '^DRAIN' 30 || die "h$i did not come back"
    api "set server be_forkd/h$i state ready" >/dev/null
    api "enable agent be_forkd/h$i" >/dev/null
    wait_status "$i" '^UP' 10 || die "h$i did not return to the balance"
    log "h$i restarted in $(since "$t0") s${new:+ (binary replaced)}"
}

rolling_restart() {
    for i in $(seq 1 "$HOSTS"); do restart_host "$i" "${1:-}"; done
}

KILL_FIELDS=""
kill_one() {
    local pid inflight t0 down up
    pid=$(forkd_pid 1)
    inflight=$(stat_of 1 scur)
    t0=$(now)
    kill -KILL "$pid"
    wait_status 1 '^DOWN' 10 || die "HAProxy never marked h1 down"
    down=$(since "$t0")
    log "h1's forkd (pid $pid) killed with $inflight sessions on it: DOWN after $down s"
    wait_status 1 '^UP$' 30 || die "h1 never came back"
    up=$(since "$t0")
    log "h1 UP again after $up s (forkd pid $(cat "$RUN/h1/forkd.pid"))"
    KILL_FIELDS=", \"in_flight_at_kill\": $inflight, \"down_after_s\": $down, \"up_after_s\": $up"
}

# Start everything.
if [ "$FORCE_LOOPBACK" = 0 ] && can_netns; then
    NETNS=1
    make_network
else
    loopback_addresses
fi
start_haproxy
for i in $(seq 1 "$HOSTS"); do start_host "$i"; done
for i in $(seq 1 "$HOSTS"); do
    wait_status "$i" '^UP$' 30 || die "h$i never became healthy: $(tail -5 "$RUN/h$i/log")"
done
log "HAProxy on http://127.0.0.1:$PORT/ in front of ${ADDR[*]} (port 8080, agent 9000); runtime API $RUN/haproxy.sock"

if [ ${#OPS[@]} = 0 ]; then
    log "Ctrl-C stops the cluster and removes everything"
    # In the background and waited for, so that a signal runs the trap at once.
    while :; do
        sleep 3600 &
        SLEEP_PID=$!
        wait "$SLEEP_PID"
    done
fi

SUMMARY="["
for op in "${OPS[@]}"; do
    log "== $op under load ($CONNS connections through HAProxy)"
    start_load "$op"
    KILL_FIELDS=""
    case $op in
        rolling-reload) rolling_reload ;;
        rolling-restart) rolling_restart ;;
        rolling-upgrade) rolling_restart "$NEW_BIN" ;;
        kill) kill_one ;;
    esac
    stop_load "$op"
    req=$(report_num "$op" requests)
    err=$(report_num "$op" errors_total)
    log "$op: $req requests, $err failed"
    [ "$SUMMARY" = "[" ] || SUMMARY+=","
    SUMMARY+=$'\n'"  {\"operation\": \"$op\", \"requests\": $req, \"errors\": $err, \"connections\": $CONNS$KILL_FIELDS}"
done
SUMMARY+=$'\n'"]"
printf '%s\n' "$SUMMARY" | tee "$OUT/summary.json"
