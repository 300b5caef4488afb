#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the end-to-end tests
# against the real Mosquitto (127.0.0.1:1883) and MariaDB (127.0.0.1:3306).
# With CI=true or MES_GALERA set, also scripts/galera-test.sh: the tests against a
# three-node MariaDB Galera cluster it starts and stops (host/tests/galera.rs, which
# otherwise prints that it was skipped).
# With CI=true or MES_PACKAGE_TEST set, also scripts/package-test.sh: the Debian package
# built, installed, upgraded under a stream of messages, removed and purged on this
# machine (it installs a package and creates a system user, and cleans up after).
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
if [ "${CI:-}" = true ] || [ -n "${MES_GALERA:-}" ]; then
    log "Galera cluster tests"
    bash scripts/galera-test.sh
fi
if [ "${CI:-}" = true ] || [ -n "${MES_PACKAGE_TEST:-}" ]; then
    log "Debian package test"
    bash scripts/package-test.sh
fi
