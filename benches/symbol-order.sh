#!/usr/bin/env bash
# Regenerates link/forkd.order, the order in which the release build links forkd's functions
# (build.rs): first what only a child runs while serving (at the start of the text
# mapping, so that it begins a fault-around window), then what the master and a worker both
# run, then what only the master runs. Each process maps the pages of the binary it
# touches and, through the kernel's fault-around, the cached pages around each (64 KiB at a
# time); with the hot code in one place an event worker mapped 0.4 MB of text instead of 1.9 MB,
# the master 0.9 MB instead of 2.8 MB (issue 9).
#
# How: the static release forkd runs under callgrind in each mode (event and prefork with 2
# workers, fork) while forkd-loadgen sends keep-alive and new-connection requests for a 2 KB
# file, with a dump after each fork so that a child's profile holds only what it ran after the
# fork. Then:
#  - A C library object is one input section, placed by the first of its symbols in the list, so
#    every symbol of an object a worker runs goes with the worker's part (libc.a says which
#    symbols share an object).
#  - valgrind's CPU has no AVX-512, so glibc's IFUNCs (memcpy, strlen...) chose other variants
#    under it: the variants a native run chose (read from its GOT) are added next to those.
#  - _start, the code between the fork system call and the worker's entry, and a few functions
#    valgrind never runs are named by hand below (found with `perf record -e page-faults -d`:
#    a fault on a text page outside the list names a missing function).
# Rerun after a toolchain or dependency update (the hashes in symbol names change; a name the
# list misses only falls back to the default place) or when the serving path changes a lot.
#
# Usage: benches/symbol-order.sh      (root: the workers drop privileges as usual otherwise)
# Needs: valgrind, python3, nm, readelf, cc (for libc.a's path).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
source benches/lib.sh
PORT=${PORT:-18431}
WORK=$(mktemp -d /tmp/forkd-order.XXXXXX)
pid= native=
# A failure between a server's start and its stop (set -e) must not leave it running.
trap 'stop_tree "$pid" 5; stop_tree "$native" 5; rm -rf "$WORK"' EXIT
for tool in valgrind python3 nm readelf cc; do
    command -v "$tool" >/dev/null || {
        echo "$0: $tool is missing" >&2
        exit 1
    }
done
port_free "$PORT"

bench_binaries forkd forkd-loadgen
bench_site small
chmod 1777 "$WORK"
# callgrind writes a worker's profile after the worker dropped privileges: as root, the workers
# stay root (the code path is the same; only the uid differs).
user_args=()
if [[ $EUID -eq 0 ]]; then
    user_args=(--user root --allow-root)
fi
serve=(--root "$SITE" --listen "127.0.0.1:$PORT" --max-conns-per-client 0 "${user_args[@]}")
load() {
    "$LOADGEN" -t1 -c16 -d2s "http://127.0.0.1:$PORT/2k.html" >/dev/null
    "$LOADGEN" -t1 -c16 -d2s --new-conn "http://127.0.0.1:$PORT/2k.html" >/dev/null
}

# Every mode's children: the workers of both pools and fork mode's per-connection children
# serve through different loops (`http::event`, `http::conn`), and each should find its hot
# code in the worker's part of the text.
for mode in "event --workers 2" "prefork --workers 2" "fork --max-children 32"; do
    dir=$WORK/${mode%% *}
    mkdir -p "$dir"
    chmod 1777 "$dir"
    # shellcheck disable=SC2086 # the mode's words are meant to split
    setsid valgrind --tool=callgrind --demangle=no --dump-after=_Fork \
        --callgrind-out-file="$dir/cg.%p" "$FORKD" "${serve[@]}" --mode $mode \
        >"$dir/valgrind.log" 2>&1 &
    pid=$!
    wait_port "$PORT" "$pid"
    load
    sleep 1
    stop_tree "$pid" 30
    pid=
done

# A native run for the IFUNC choices of this CPU.
setsid "$FORKD" "${serve[@]}" --mode event --workers 2 2>"$WORK/native.log" &
native=$!
wait_port "$PORT" "$native"
nm -A "$(cc -print-file-name=libc.a)" 2>/dev/null >"$WORK/libc.nm" || true
python3 - "$FORKD" "$native" "$WORK" >"$WORK/order" <<'EOF'
import glob, os, re, struct, subprocess, sys

binary, native, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
nm = subprocess.run(["nm", "-n", binary], capture_output=True, text=True).stdout.split("\n")
text = {}
for line in nm:
    p = line.split()
    if len(p) == 3 and p[1] in "tTwWiI":
        text.setdefault(p[2], int(p[0], 16))


def executed(path):
    """Functions with a cost of their own in one callgrind profile, in the order it names them."""
    names, cost, cur, after_call = {}, {}, None, False
    for line in open(path, errors="replace"):
        if line.startswith(("fn=", "cfn=")):
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
            if m.group(2) is not None:
                names[m.group(1)] = re.sub(r"'\d+$", "", m.group(2))
            if line.startswith("fn="):
                cur, after_call = names.get(m.group(1)), False
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if after_call:
                after_call = False
            elif cur is not None and len(line.split()) >= 2:
                cost[cur] = cost.get(cur, 0) + 1
    return [n for n in cost if n in text]


# One directory per mode. The master's profile is cg.PID plus cg.PID.N (a dump per fork); a
# child's last profile (cg.PID, no suffix) holds only what it ran after its fork; the one-shot
# root-check child is left out.
M, W = [], []
for run in sorted(d for d in glob.glob(os.path.join(work, "*")) if os.path.isdir(d)):
    files = sorted(glob.glob(os.path.join(run, "cg.*")))
    pids = sorted({int(f.split(".")[-1]) for f in files if re.search(r"cg\.\d+$", f)})
    if not pids:
        continue
    master = pids[0]
    for f in (f for f in files if re.match(rf".*cg\.{master}(\.\d+)?$", f)):
        M += [n for n in executed(f) if n not in M]
    for pid in pids[1:]:
        last = os.path.join(run, f"cg.{pid}")
        # The children that served are the big profiles; the root check's child served nothing.
        if os.path.getsize(last) > 20000:
            W += [n for n in executed(last) if n not in W]
# Run natively but never under valgrind (seen in `perf record -e page-faults -d`).
M += ["_start", "pthread_mutex_lock", "pthread_mutex_unlock"]
# Run by a worker between the fork system call and the worker's entry, or by its first
# allocation, outside the profiles' attribution.
W += ["_Fork", "__libc_fork", "__run_postfork_handlers", "sbrk", "__sbrk", "brk", "__brk"]
W += [n for n in text if re.match(r"_RNvMs\d*_NtNtCs\w+_3std2io5errorNtB\w+_5Error4kind", n)]

# IFUNC variants a native run chose, next to the ones valgrind's CPU chose.
base = None
for line in open(f"/proc/{native}/maps"):
    p = line.split()
    if len(p) >= 6 and os.path.realpath(p[5]) == os.path.realpath(binary) and int(p[2], 16) == 0:
        base = int(p[0].split("-")[0], 16)
by_addr = {}
for n, a in text.items():
    by_addr.setdefault(a, n)
rel = subprocess.run(["readelf", "-rW", binary], capture_output=True, text=True).stdout
chosen = []
with open(f"/proc/{native}/mem", "rb") as mem:
    for line in rel.splitlines():
        if "IRELATIVE" in line:
            mem.seek(base + int(line.split()[0], 16))
            (addr,) = struct.unpack("<Q", mem.read(8))
            if addr - base in by_addr:
                chosen.append(by_addr[addr - base])
variant = re.compile(r"^__(\w+?)_(sse2|ssse3|sse41|sse42|sse4_1|sse4_2|avx|avx2|evex|avx512|fma)")
family = {}
for n in chosen:
    if m := variant.match(n):
        family.setdefault(m.group(1), []).append(n)
related = {"memmove": ["memcpy", "mempcpy"], "memcpy": ["memmove", "mempcpy"]}


def with_chosen(names):
    out = list(names)
    for n in names:
        if m := variant.match(n):
            for f in [m.group(1)] + related.get(m.group(1), []):
                out += [c for c in family.get(f, []) if c not in out]
    return out


M, W = with_chosen(M), with_chosen(W)
objects = {}
for line in open(os.path.join(work, "libc.nm")):
    p = line.split()
    if len(p) >= 3 and p[-2] in "tTwWiI":
        objects.setdefault(p[-1], p[0].split(":")[-2])
w_objects = {objects[n] for n in W if n in objects}
m_objects = {objects[n] for n in M if n in objects}
W += [n for n in M if objects.get(n) in w_objects and n not in W]
M += [n for n in W if objects.get(n) in m_objects and n not in M]
Ms, Ws = set(M), set(W)
# Each process touches the whole of its groups, so the order within one does not matter: sorted,
# the list changes only where the functions do.
order = sorted(Ws - Ms) + sorted(Ms & Ws) + sorted(Ms - Ws)
print("\n".join(order))
print(f"{len(Ms - Ws)} master only, {len(Ms & Ws)} both, {len(Ws - Ms)} worker only",
      file=sys.stderr)
EOF
stop_tree "$native"
native=
mv "$WORK/order" link/forkd.order
echo "$0: wrote link/forkd.order ($(wc -l <link/forkd.order) functions); rebuild to apply" >&2
