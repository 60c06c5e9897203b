# shellcheck shell=bash
# Helpers shared by the benchmark scripts (sourced, not run): installing a peer server, the
# binaries and the site under test, waiting for a port, nginx's configuration, and stopping a
# server's process group by its PID. The caller sets `set -euo pipefail`, cds to the repository
# root and sets WORK (a temporary directory it removes on exit).

# need_tool TOOL [PACKAGE]: makes sure TOOL is on PATH, installing PACKAGE (default TOOL) from
# Debian when it is missing and we are root. A policy-rc.d that exits 101 is put in place for
# the installation, so the package's service is never started or enabled behind our back: every
# server here is started by hand, on loopback, with its own configuration.
need_tool() {
    local tool=$1 package=${2:-$1} guard=/usr/sbin/policy-rc.d made_guard=
    command -v "$tool" >/dev/null && return 0
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "$0: $tool is missing (apt-get install $package, as root)" >&2
        return 1
    fi
    if [[ ! -e $guard ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$guard"
        chmod +x "$guard"
        made_guard=1
    fi
    echo "$0: installing $package" >&2
    local code=0
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >&2 ||
        code=$?
    if [[ -n $made_guard ]]; then
        rm -f "$guard"
    fi
    [[ $code -eq 0 ]] && command -v "$tool" >/dev/null
}

# bench_binaries BIN...: builds the named binaries in release mode, unless BIN_DIR=DIR names
# where they already are, and copies them into $WORK so that a concurrent build cannot replace
# them mid-run. Sets FORKD and LOADGEN.
#
# forkd is linked statically on a linux-gnu host (STATIC=0 links it as `cargo build` does): a
# forked child then maps one binary instead of four objects (17 fewer VMAs for every fork to
# copy and every exit to tear down, no PLT or relocated GOT), which cut the CPU per fork-mode
# connection by a fifth (issue 14, benches/forkcost.sh). rustc's crt-static would break the
# workspace's proc macros if it applied to host builds, so the static build names the target,
# which keeps it in target/TRIPLE/release, apart from the default build.
bench_binaries() {
    local bin args=() host static_dir=
    if [[ -z ${BIN_DIR:-} ]]; then
        host=$(rustc -vV | sed -n 's/^host: //p')
        for bin in "$@"; do
            if [[ $bin == forkd && ${STATIC:-1} != 0 && $host == *-linux-gnu ]]; then
                RUSTFLAGS="-C target-feature=+crt-static" \
                    cargo build --release --target "$host" --bin forkd >&2
                static_dir=target/$host/release
            else
                args+=(--bin "$bin")
            fi
        done
        if ((${#args[@]} > 0)); then
            cargo build --release "${args[@]}" >&2
        fi
        BIN_DIR=target/release
    fi
    for bin in "$@"; do
        if [[ $bin == forkd && -n $static_dir ]]; then
            cp "$static_dir/forkd" "$WORK/"
        else
            cp "$BIN_DIR/$bin" "$WORK/"
        fi
    done
    # shellcheck disable=SC2034 # for the caller
    FORKD=$WORK/forkd
    # shellcheck disable=SC2034
    LOADGEN=$WORK/forkd-loadgen
}

# bench_site small|big: the site every server serves, in $WORK/site (sets SITE): 2k.html, a
# 2 KB page, and with `big` also 1m.bin, 1 MB of random bytes. Readable by all, since servers
# started as root serve from unprivileged workers.
bench_site() {
    SITE=$WORK/site
    mkdir -p "$SITE"
    chmod 755 "$WORK" "$SITE"
    head -c 2048 /dev/zero | tr '\0' 'x' >"$SITE/2k.html"
    if [[ $1 == big ]]; then
        head -c 1048576 /dev/urandom >"$SITE/1m.bin"
    fi
    chmod 644 "$SITE"/*
}

# port_free PORT: fails when something already listens on 127.0.0.1:PORT. Checked before a
# server starts, or wait_port would happily find someone else's server on a shared machine.
port_free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "$0: 127.0.0.1:$1 is already in use; set PORT to another one" >&2
        return 1
    fi
}

# wait_port PORT [PID]: waits (at most 20 s) until 127.0.0.1:PORT accepts; with PID, gives up
# as soon as that process (the server starting) has exited.
wait_port() {
    local port=$1 pid=${2:-} deadline=$((SECONDS + 20))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if [[ -n $pid ]] && ! alive "$pid"; then
            echo "$0: the server (pid $pid) exited before listening on $port" >&2
            return 1
        fi
        if ((SECONDS > deadline)); then
            echo "$0: nothing listening on $port" >&2
            return 1
        fi
        sleep 0.05
    done
}

# nginx_conf DIR PORT [WORKERS]: writes DIR/nginx.conf for an nginx serving $SITE on
# 127.0.0.1:PORT in the foreground (run it with `-c DIR/nginx.conf -p DIR -e DIR/logs/error.log`
# and stop it by PID): keep-alive with the defaults, no access log, the error log at `notice` so
# that each signal the master acts on leaves a line. Every path it writes is under DIR, so it
# also runs as non-root. WORKERS defaults to auto (one per CPU).
nginx_conf() {
    local dir=$1 port=$2 workers=${3:-auto}
    mkdir -p "$dir/logs" "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/logs/error.log notice;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    types { text/html html; application/octet-stream bin; }
    server { listen 127.0.0.1:$port; root $SITE; }
}
EOF
}

# alive PID: PID exists and is not a zombie (kill -0 succeeds on a zombie not yet reaped).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# stop_tree PID [GRACE]: TERM to a server started with setsid (so PID leads its own process
# group), waits up to GRACE seconds (default 15) for it, then KILLs whatever is left of its group
# (workers still draining after their master went). Only this PID and its group are touched.
stop_tree() {
    local pid=$1 grace=${2:-15} deadline
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while alive "$pid" && ((SECONDS < deadline)); do
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# lighttpd_conf DIR PORT: writes DIR/lighttpd.conf for a lighttpd serving $SITE on
# 127.0.0.1:PORT (run it with `lighttpd -D -f DIR/lighttpd.conf` and stop it by PID): one
# process, its event loop; keep-alive on and not cut short (1.4's default closes a connection
# after 1,000 requests, which would turn a keep-alive benchmark partly into a connect one); no
# access log (mod_accesslog is not loaded), as nginx's `access_log off`. Every path it writes is
# under DIR, so it also runs as non-root.
lighttpd_conf() {
    local dir=$1 port=$2
    mkdir -p "$dir"
    cat >"$dir/lighttpd.conf" <<EOF2
server.document-root = "$SITE"
server.bind = "127.0.0.1"
server.port = $port
server.pid-file = "$dir/lighttpd.pid"
server.errorlog = "$dir/error.log"
server.max-keep-alive-requests = 1000000
server.max-keep-alive-idle = 5
mimetype.assign = (".html" => "text/html", ".bin" => "application/octet-stream")
EOF2
}
