#!/usr/bin/env bash
# Builds the Debian package of the collector: the release build of the collector,
# the simulator and the shipped plugins, then the .deb (and the -dbgsym .ddeb with
# their debug info) into target/debian/.
#   scripts/package.sh [cargo-deb options, e.g. --deb-revision 2]
# Prints the path of the .deb as its last line on stdout. See docs/install.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# cargo-deb, pinned; `cargo install` keeps it in ~/.cargo/bin for the next run.
CARGO_DEB_VERSION=3.8.0

ensure_build_packages
ensure_rust
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    log "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

# cargo-deb builds only the mes-collector crate; the plugins it packages are other
# crates of the workspace, so everything is built here and cargo-deb only packs.
packages=(-p mes-collector)
for crate in $(shipped_plugins); do
    packages+=(-p "$crate")
done
log "building (release): ${packages[*]}"
cargo build --release "${packages[@]}" --quiet

log "packing"
# It prints the .deb and, with dbgsym (host/Cargo.toml), the -dbgsym .ddeb.
built=$(cargo deb -p mes-collector --no-build --quiet "$@")
deb=$(grep '\.deb$' <<<"$built")
[ -f "$deb" ] || die "cargo deb did not say where the .deb is: $built"
log "built $built"
echo "$deb"
