#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, one after another, starting from
# the committed seeds (fuzz/seeds/<target>) and the corpus grown so far (fuzz/corpus/<target>,
# not committed), then prints executions and coverage per target. A crash stops the script
# with libFuzzer's report and the reproducer in fuzz/artifacts/<target>/: make it a
# regression test beside the code, then fix it.
#
#   bash fuzz/run.sh 600                 # ten minutes each
#   bash fuzz/run.sh 60 head chunked     # one minute for two of them
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); the script installs
# cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(head chunked path range conditional config)
fi
cargo +nightly --version >/dev/null
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz

summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="artifacts/$t/last-run.log"
    echo "== $t for ${secs}s"
    if ! cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz target $t FAILED: reproducer in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    done_line=$(grep -aE '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
    execs=$(grep -aE 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$done_line")
    ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$done_line")
    corp=$(sed -nE 's/.*corp: ([0-9]+).*/\1/p' <<<"$done_line")
    summary+=("$(printf '%-8s %8ss %12s execs  cov %6s  ft %6s  corpus %6s' "$t" "$secs" "$execs" "$cov" "$ft" "$corp")")
done
echo
echo "target   duration   executions        coverage (edges, features, corpus entries)"
printf '%s\n' "${summary[@]}"
