#!/usr/bin/env bash
# Installs what is missing, starts Mosquitto and MariaDB, applies database.sql,
# builds the collector and the plugins, and runs the collector with config/.
# Extra arguments go to `mes-collector run` (for example --config-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

prepare

log "applying database.sql"
mariadb -h127.0.0.1 -uroot < database.sql

log "building (release)"
cargo build --release --workspace --quiet

plugins_dir="run/plugins"
mkdir -p "$plugins_dir" && chmod 0755 "$plugins_dir"
for crate in $(shipped_plugins); do
    install -m 0644 "target/release/lib${crate//-/_}.so" "$plugins_dir/"
done
log "plugins in $plugins_dir: $(ls "$plugins_dir" | tr '\n' ' ')"

target/release/mes-collector check "$@" || log "check found problems (above); starting anyway"
exec target/release/mes-collector run "$@"
