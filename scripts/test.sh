#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the end-to-end tests
# against the real Mosquitto (127.0.0.1:1883) and MariaDB (127.0.0.1:3306).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

prepare

log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings
# The end-to-end tests load the plugin libraries from target/debug.
log "cargo build"
cargo build --workspace --quiet
log "cargo test"
cargo test --workspace --all-features --no-fail-fast 2>&1
