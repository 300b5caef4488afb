# Shared by scripts/run.sh and scripts/test.sh: install what is missing on
# Debian/Ubuntu and start the local services. Source it; do not run it.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "run as root or install sudo"
    SUDO="sudo"
fi

# Build tools: cmake and a C compiler build paho's bundled C library; dpkg-dev (in
# build-essential) is what cargo-deb uses to work out a package's dependencies.
BUILD_PACKAGES=(build-essential cmake pkg-config libssl-dev curl ca-certificates)

# Installs those of the named Debian packages that are missing.
install_missing() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get: install them by hand"
        log "installing ${missing[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# The build tools, the broker and the database.
ensure_packages() {
    install_missing "${BUILD_PACKAGES[@]}" mosquitto mosquitto-clients mariadb-server mariadb-client
}

# The build tools alone (scripts/package.sh: a build machine needs no services).
ensure_build_packages() {
    install_missing "${BUILD_PACKAGES[@]}"
}

# Debian's own rustc is too old for the dependencies; rustup's stable is used.
ensure_rust() {
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
    if ! command -v cargo >/dev/null; then
        log "installing the Rust toolchain with rustup"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
        . "$HOME/.cargo/env"
    fi
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        command -v rustup >/dev/null && rustup component add rustfmt clippy
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.2; done
    die "nothing listens on 127.0.0.1:$1 after 20 s ($2)"
}

ensure_services() {
    if ! port_open 1883; then
        log "starting Mosquitto"
        if [ -f /etc/mosquitto/mosquitto.conf ]; then
            $SUDO mosquitto -d -c /etc/mosquitto/mosquitto.conf
        else
            $SUDO mosquitto -d
        fi
        wait_port 1883 "mosquitto"
    fi
    if ! port_open 3306; then
        log "starting MariaDB"
        $SUDO mkdir -p /run/mysqld && $SUDO chown mysql:mysql /run/mysqld 2>/dev/null || true
        if ! { $SUDO service mariadb start >/dev/null 2>&1 || $SUDO service mysql start >/dev/null 2>&1; }; then
            $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
        fi
        wait_port 3306 "mariadb"
    fi
    # The collector's default config and the tests log in as root without a password
    # over TCP. A fresh Debian install lets root in only through the unix socket; allow
    # loopback TCP too (local development machines only).
    if ! mariadb -h127.0.0.1 -uroot -e 'SELECT 1' >/dev/null 2>&1; then
        log "allowing root@127.0.0.1 without password on the local MariaDB"
        $SUDO mariadb -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
                          GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" \
            || die "cannot log in to MariaDB as root over 127.0.0.1; see README 'Set up'"
    fi
}

# A Mosquitto of the caller's own on a free loopback port, set up as the README asks
# of a plant's broker (persistence, no limit on queued messages: the default of 1,000
# silently drops QoS 1 messages past it while a collector is down; no Nagle), its
# files in DIR; extra configuration lines may follow.
#   start_private_broker MOSQUITTO_BINARY DIR [LINE...]
# Sets BROKER_PID and BROKER_URI; returns 1 if none would start.
start_private_broker() {
    local mosquitto=$1 dir=$2 port conf
    shift 2
    mkdir -p "$dir"
    conf="$dir/mosquitto.conf"
    for _ in $(seq 1 20); do
        port=$((20000 + RANDOM % 40000))
        port_open "$port" && continue
        {
            printf '%s\n' "listener $port 127.0.0.1" "allow_anonymous true" "persistence true" \
                "persistence_location $dir/" "max_queued_messages 0" "set_tcp_nodelay true" \
                "log_dest file $dir/mosquitto.log"
            [ $# -gt 0 ] && printf '%s\n' "$@"
        } >"$conf"
        "$mosquitto" -c "$conf" >/dev/null 2>&1 &
        BROKER_PID=$!
        for _ in $(seq 1 100); do
            if port_open "$port"; then
                BROKER_URI="tcp://127.0.0.1:$port"
                return 0
            fi
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.05
        done
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    done
    return 1
}

# The shipped plugins' crate names: every crate under plugins/.
shipped_plugins() {
    for d in plugins/*/; do
        sed -n 's/^name = "\(.*\)"/\1/p' "$d/Cargo.toml" | head -1
    done
}

# Everything a script needs before it builds: packages, Rust, running services.
prepare() {
    ensure_packages
    ensure_rust
    ensure_services
}
