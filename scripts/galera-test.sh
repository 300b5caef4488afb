#!/usr/bin/env bash
# The collector against a real three-node MariaDB Galera cluster on this machine:
# host/tests/galera.rs (failover to the next server of `hosts` when the node written to
# is killed, and the return to it; two collectors writing the same rows through two
# nodes, certification conflicts retried; the client_id lease refused across nodes).
#
#   scripts/galera-test.sh              # build, start the cluster, run the test, stop it
#   scripts/galera-test.sh -- CMD...    # run CMD instead of the test, against the cluster
#                                       # (e.g. `-- bash` to look around; same variables;
#                                       # builds nothing)
#
# scripts/test.sh runs this when CI=true or MES_GALERA is set.
#
# What it does:
#  1. prepare (scripts/lib.sh): build tools, Mosquitto, MariaDB, Rust, services;
#     then galera-4, rsync (the SST method; no mariadb-backup needed) and iproute2
#     (`ss`, which the rsync SST script uses) where missing.
#  2. Builds the collector, the plugins and the test before the cluster starts, so
#     that the cluster runs only as long as the test.
#  3. Three nodes in a temp dir (each: data/ made by mariadb-install-db, my.cnf,
#     err.log, mysqld.pid, mysqld.sock), listening on 127.0.0.1 only, on ports picked
#     free at run time (SQL, group communication, IST and SST: four per node), with
#     small buffers (innodb_buffer_pool_size=32M, 16M redo log, gcache 32M).
#  4. Node 1 bootstraps the cluster (--wsrep-new-cluster), nodes 2 and 3 join it
#     (state transfer by rsync); waits until wsrep_cluster_size=3 and every node is
#     Synced with wsrep_ready=ON.
#  5. Runs `cargo test -p mes-collector --test galera -- --nocapture` (under a time
#     limit, GALERA_TEST_TIMEOUT seconds, default 900; CMD has none) with
#       MES_GALERA_PORTS     the nodes' SQL ports, node 1 first (3311,3312,3313 style)
#       MES_GALERA_DIRS      the nodes' directories, same order: the test kills a node
#                            with the pid in <dir>/mysqld.pid and starts it again with
#       MES_GALERA_MARIADBD  the server binary, as `mariadbd --defaults-file=<dir>/my.cnf`
#                            after `--wsrep-recover` (so that it rejoins by IST)
#  6. Always (trap on exit, failure and Ctrl-C included): stops every node (SIGTERM,
#     SIGKILL after 20 s), ends what is left running from the temp dir (the rsync SST
#     daemon), and removes the temp dir. On failure the nodes' error logs are printed
#     first.
#
# Run as root, the servers run as the user mysql (`user=` in their my.cnf: the rsync
# state transfer cannot run as root); run as another user, as that user.
# The Mosquitto and MariaDB on 1883/3306 are only started if down, never reconfigured.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

MARIADBD=/usr/sbin/mariadbd
GALERA_LIB=/usr/lib/galera/libgalera_smm.so
TIMEOUT="${GALERA_TEST_TIMEOUT:-900}"

build=1
cmd=(timeout --signal=TERM --kill-after=30 "$TIMEOUT" cargo test -p mes-collector --test galera -- --nocapture)
if [ "${1:-}" = "--" ]; then
    shift
    [ $# -gt 0 ] || die "nothing to run after --"
    cmd=("$@")
    build=0
elif [ $# -gt 0 ]; then
    die "usage: scripts/galera-test.sh [-- CMD...]"
fi

# Only what the cluster needs beyond scripts/lib.sh's packages.
ensure_galera_packages() {
    local missing=()
    [ -f "$GALERA_LIB" ] || missing+=(galera-4)
    command -v rsync >/dev/null || missing+=(rsync)
    command -v ss >/dev/null || missing+=(iproute2)
    if [ ${#missing[@]} -gt 0 ]; then
        command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them by hand"
        log "installing ${missing[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    [ -x "$MARIADBD" ] || die "$MARIADBD is missing (package mariadb-server)"
    [ -f "$GALERA_LIB" ] || die "$GALERA_LIB is missing (package galera-4)"
}

prepare
ensure_galera_packages

# The test loads the plugin libraries from target/debug and runs the binaries.
if [ "$build" = 1 ]; then
    log "cargo build"
    cargo build --quiet -p mes-collector -p cnc-type-a -p cnc-type-b
    cargo test --quiet -p mes-collector --test galera --no-run
fi

GDIR="$(mktemp -d "${TMPDIR:-/tmp}/mes-galera.XXXXXX")"
# The user the servers run as, owning their directories. Not root: the rsync state
# transfer's daemon, started as root, would drop to `nobody`, who cannot write there.
RUN_AS="$(id -un)"
if [ "$(id -u)" -eq 0 ]; then
    id mysql >/dev/null 2>&1 || die "no user mysql to run the nodes as (package mariadb-server makes it)"
    RUN_AS=mysql
    chmod 755 "$GDIR"
fi
declare -a PIDS=()

node_dir() { echo "$GDIR/n$1"; }

# Stops the cluster and removes its files: whatever happened before.
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ "$rc" -ne 0 ] && [ -d "$GDIR" ]; then
        for i in 1 2 3; do
            [ -f "$(node_dir "$i")/err.log" ] || continue
            printf '\n--- node %s: last lines of err.log ---\n' "$i" >&2
            grep -E "ERROR|SST|sst|rsync" "$(node_dir "$i")/err.log" | tail -n 40 >&2
        done
    fi
    log "stopping the Galera cluster"
    local pids=("${PIDS[@]}") p
    # Nodes the test restarted have new pids: read them from the pid files.
    for i in 1 2 3; do
        p="$(cat "$(node_dir "$i")/mysqld.pid" 2>/dev/null || true)"
        [ -n "$p" ] && pids+=("$p")
    done
    for p in "${pids[@]}"; do
        # Only our own servers: their command line names this run's temp dir.
        grep -qF "$GDIR" "/proc/$p/cmdline" 2>/dev/null && kill -TERM "$p" 2>/dev/null
    done
    for _ in $(seq 1 100); do
        local alive=0
        for p in "${pids[@]}"; do
            grep -qF "$GDIR" "/proc/$p/cmdline" 2>/dev/null && alive=1
        done
        [ "$alive" -eq 0 ] && break
        sleep 0.2
    done
    for p in "${pids[@]}"; do
        grep -qF "$GDIR" "/proc/$p/cmdline" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    done
    # Anything else started from the temp dir (an rsync daemon of a state transfer).
    for d in /proc/[0-9]*; do
        grep -qF "$GDIR" "$d/cmdline" 2>/dev/null && kill -KILL "${d#/proc/}" 2>/dev/null
    done
    rm -rf "$GDIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Ports nothing uses now, below the usual ephemeral range (32768-60999), distinct.
pick_ports() {
    local used picked=() p
    used=" $(ss -Htan 2>/dev/null | awk '{n = split($4, a, ":"); print a[n]}' | sort -u | tr '\n' ' ') "
    while [ ${#picked[@]} -lt "$1" ]; do
        p=$((20000 + RANDOM % 12000))
        case "$used ${picked[*]} " in *" $p "*) continue ;; esac
        port_open "$p" && continue
        picked+=("$p")
    done
    echo "${picked[@]}"
}

read -r -a PORTS <<<"$(pick_ports 12)"
sql_port() { echo "${PORTS[$((($1 - 1) * 4))]}"; }
gcomm_port() { echo "${PORTS[$((($1 - 1) * 4 + 1))]}"; }
ist_port() { echo "${PORTS[$((($1 - 1) * 4 + 2))]}"; }
sst_port() { echo "${PORTS[$((($1 - 1) * 4 + 3))]}"; }
members="127.0.0.1:$(gcomm_port 1),127.0.0.1:$(gcomm_port 2),127.0.0.1:$(gcomm_port 3)"

write_cnf() {
    local i=$1 d
    d="$(node_dir "$i")"
    cat >"$d/my.cnf" <<EOF
[mysqld]
user=$RUN_AS
datadir=$d/data
tmpdir=$d/tmp
socket=$d/mysqld.sock
pid-file=$d/mysqld.pid
log-error=$d/err.log
port=$(sql_port "$i")
bind-address=127.0.0.1
skip-name-resolve
performance_schema=OFF
max_connections=200
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
innodb_flush_log_at_trx_commit=1
innodb_buffer_pool_size=32M
innodb_log_file_size=16M
innodb_log_buffer_size=4M
key_buffer_size=1M
wsrep_on=ON
wsrep_provider=$GALERA_LIB
wsrep_cluster_name=mes-galera-test
wsrep_cluster_address=gcomm://$members
wsrep_node_name=n$i
wsrep_node_address=127.0.0.1
wsrep_node_incoming_address=127.0.0.1:$(sql_port "$i")
wsrep_provider_options="base_port=$(gcomm_port "$i");ist.recv_addr=127.0.0.1:$(ist_port "$i");gcache.size=32M"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:$(sst_port "$i")
EOF
}

sql() { mariadb --no-defaults -uroot -S "$(node_dir "$1")/mysqld.sock" -N -B -e "$2" 2>/dev/null; }
status_of() { sql "$1" "SHOW GLOBAL STATUS LIKE '$2'" | awk '{print $2}'; }

start_node() {
    local i=$1
    shift
    "$MARIADBD" --defaults-file="$(node_dir "$i")/my.cnf" "$@" </dev/null >/dev/null 2>&1 &
    PIDS+=("$!")
}

# Waits until node $1 is Synced and ready, failing early if its server exits.
wait_synced() {
    local i=$1 pid=$2
    for _ in $(seq 1 600); do
        if [ "$(status_of "$i" wsrep_local_state_comment)" = Synced ] &&
            [ "$(status_of "$i" wsrep_ready)" = ON ]; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "node $i (mariadbd) exited while starting"
        sleep 0.2
    done
    die "node $i not Synced within 120 s"
}

log "Galera cluster in $GDIR, SQL ports $(sql_port 1),$(sql_port 2),$(sql_port 3)"
for i in 1 2 3; do
    # A temp dir each: three installs at once in one /tmp collide on their temporary
    # tables' names ("Error on delete of '/tmp/#sql-temptable-...'").
    mkdir -p "$(node_dir "$i")/tmp"
    write_cnf "$i"
    [ "$RUN_AS" = "$(id -un)" ] || chown -R "$RUN_AS:" "$(node_dir "$i")"
    # Nodes 2 and 3 get node 1's data by state transfer; their own is a fallback.
    mariadb-install-db --no-defaults --user="$RUN_AS" --datadir="$(node_dir "$i")/data" \
        --tmpdir="$(node_dir "$i")/tmp" \
        --auth-root-authentication-method=normal --skip-test-db \
        --innodb-buffer-pool-size=32M --innodb-log-file-size=16M \
        >"$(node_dir "$i")/install.log" 2>&1 &
done
for job in $(jobs -p); do wait "$job" || { cat "$GDIR"/n*/install.log >&2; die "mariadb-install-db failed"; }; done

started=$SECONDS
start_node 1 --wsrep-new-cluster
wait_synced 1 "${PIDS[0]}"
# The test logs in as root over 127.0.0.1 without a password (skip-name-resolve: the
# address is not 'localhost'). Replicated to the joiners by their state transfer.
sql 1 "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
       GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" ||
    die "cannot add root@127.0.0.1 on node 1"
for i in 2 3; do
    start_node "$i"
    wait_synced "$i" "${PIDS[$((i - 1))]}"
done
size="$(status_of 1 wsrep_cluster_size)"
[ "$size" = 3 ] || die "wsrep_cluster_size is '$size', not 3"
log "cluster of 3 Synced in $((SECONDS - started)) s"

dirs="$(node_dir 1),$(node_dir 2),$(node_dir 3)"
log "${cmd[*]}"
set +e
MES_GALERA_PORTS="$(sql_port 1),$(sql_port 2),$(sql_port 3)" \
    MES_GALERA_DIRS="$dirs" MES_GALERA_MARIADBD="$MARIADBD" \
    "${cmd[@]}"
rc=$?
set -e
[ "$rc" -eq 124 ] && log "timed out after $TIMEOUT s"
exit "$rc"
