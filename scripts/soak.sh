#!/usr/bin/env bash
# Soak: the delivery faults (kill -9, SIGTERM, database cut off, broker stopped) mixed
# at random for MINUTES (default 10) while cnc-sim publishes, then a summary of
# published / stored / dead-lettered / duplicated counts. Not part of scripts/test.sh:
# it is the ignored test host/tests/soak.rs.
#
#   scripts/soak.sh [MINUTES]
#
# SOAK_RATE (msg/s, default 1000) and SOAK_SEED (repeat a run's fault schedule) pass
# through from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

minutes="${1:-${SOAK_MINUTES:-10}}"
[[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "MINUTES must be a number, got '$minutes'"

prepare

# The test loads the plugin libraries and runs the binaries from target/debug.
log "cargo build"
cargo build --workspace --quiet
log "soak for $minutes min"
SOAK_MINUTES="$minutes" cargo test -p mes-collector --test soak -- --ignored --nocapture
