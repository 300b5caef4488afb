#!/usr/bin/env bash
# Fuzzes envelope parsing and the database handle's checks (fuzz/, a cargo-fuzz
# project outside the workspace) for SECONDS per target (default 600), both targets
# at once. Not part of the test suite.
#
#   scripts/fuzz.sh [SECONDS]
#
# Findings land in fuzz/artifacts/<target>/; reproduce one with
#   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/<file>)
# Logs: fuzz/target/fuzz-<target>.log. cargo-fuzz needs nightly features: on a stable
# toolchain RUSTC_BOOTSTRAP=1 unlocks them (set FUZZ_SANITIZER=none to build
# without AddressSanitizer if that fails).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

seconds="${1:-600}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS]   (a positive number of seconds per target)" >&2
    exit 2
fi
targets=(envelope db_handle)
sanitizer="${FUZZ_SANITIZER:-address}"

ensure_packages # the host's build needs a C toolchain, cmake and OpenSSL headers
ensure_rust
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
cd fuzz
log "building ${targets[*]} (sanitizer: $sanitizer)"
cargo fuzz build -s "$sanitizer"

mkdir -p target
pids=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log "fuzzing $t for $seconds s (log: fuzz/target/fuzz-$t.log)"
    cargo fuzz run -s "$sanitizer" "$t" -- -max_total_time="$seconds" -print_final_stats=1 \
        >"target/fuzz-$t.log" 2>&1 &
    pids+=($!)
done

status=0
for i in "${!targets[@]}"; do
    t="${targets[$i]}"
    if wait "${pids[$i]}"; then
        result="no crash"
    else
        result="FAILED (see fuzz/target/fuzz-$t.log and fuzz/artifacts/$t/)"
        status=1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "target/fuzz-$t.log" | grep -o '[0-9]*$' || true)
    speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "target/fuzz-$t.log" | grep -o '[0-9]*$' || true)
    log "$t: $result; ${runs:-?} executions, ${speed:-?} exec/s"
done
exit "$status"
