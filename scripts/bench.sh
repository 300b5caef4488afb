#!/usr/bin/env bash
# Throughput at the broker's limit: how close the collector gets to what the broker
# alone can carry, what batching buys, latency at a steady rate, and what it costs in
# memory and CPU. One command, a few minutes; prints a table and writes it to
# target/bench/results.md.
#
#   scripts/bench.sh                    # the defaults below
#   BENCH_N=20000 BENCH_REPS=1 scripts/bench.sh   # a quick look
#   BENCH_MODE=group scripts/bench.sh   # 1, 2 and 3 collectors in one shared
#                                       # subscription (see "Group mode" below)
#   BENCH_MODE=drain scripts/bench.sh   # catching up after an outage, against the
#                                       # stock client (see "Drain mode" below)
#
# What it does (all against a private Mosquitto it starts on a free port, and
# databases of its own on the local MariaDB/MySQL; everything is removed on exit):
#   (1) raw broker path: `cnc-sim count` subscribed, `cnc-sim generate --rate 0`
#       publishes N messages at QoS 1; msg/s as `count` reports it (first to last).
#   (2) collector path, right after (1), same N: the release collector subscribed,
#       the same publisher; msg/s from the first message's send time (sent_at_us)
#       to the last row's stored_at, read from MySQL. (1) and (2) alternate
#       BENCH_REPS times; the table shows each run and the median.
#   (3) the collector with batching off (batch.max_messages 1) for N/10 messages,
#       and the speed-up of (2) over it.
#   (4) latency at a steady rate: p50/p99/max of stored_at - sent_at_us, and the CPU
#       it costs, once per latency budget of BENCH_STEADY_BUDGETS; before them,
#       `cnc-sim count` alone at the same rate: the CPU a QoS 1 subscriber that does
#       nothing else costs there, the floor under the collector's (the table gives the
#       ratio, as it does for (2) over (1)'s counter).
#   (5) for every collector run: peak RSS (VmHWM) and CPU seconds (utime+stime) per
#       100,000 messages, and the same CPU figure for the publisher, the broker, the
#       counter and the database server (the latter server-wide: anything else using
#       it counts too), so that each path's whole CPU cost can be compared; and from
#       the collector's /metrics, the batches it committed and the time they took.
#   Every run checks that nothing was lost: rows = messages published, distinct
#   seq = rows, no dead letters.
#
# Group mode (BENCH_MODE=group) runs only this: for K = 1, 2, 3 (BENCH_GROUP_SIZES),
# K collectors, each with its own client_id, spool and position, subscribe to
# $share/bench/<topic> on the private broker and share one database; the publisher
# sends BENCH_N messages at full speed. Per K: end-to-end msg/s, and CPU seconds per
# 100,000 messages of each collector, the broker, the database server and the
# publisher; every run checks rows = messages, distinct seq = rows, no dead letters.
# The table goes to BENCH_OUT/group.md. On a 2-core machine the figures do not grow
# with K: they give each process's cost per message, from which docs/scaling-out.md
# models capacity.
#
# Callgrind mode (BENCH_MODE=callgrind) runs only this: the release collector under
# `valgrind --tool=callgrind --separate-threads=yes`, twice, taking BENCH_CG_SMALL
# and then BENCH_N messages (defaults 1,000 and 10,000; BENCH_MACHINES defaults to 50
# here) published at full speed, stopped with SIGTERM once every message is a row.
# Instruction counts do not depend on the machine's load, so figures compare across
# runs. Startup (plugin loading, connecting, each machine's first message) is the
# same in both runs: the difference of the two runs' instructions divided by the
# difference of their messages is the cost per message, given in total and per thread
# (intake = paho's receive thread, which runs the spool append; dispatcher; writer).
# Per thread the top functions (callgrind_annotate, inclusive) of the larger run
# follow. Report and callgrind.out files in BENCH_OUT/callgrind/.
#
# Drain mode (BENCH_MODE=drain) runs only this, BENCH_DRAIN_REPS times: the collector
# starts with its own database account locked, BENCH_DRAIN_N messages are spooled,
# the account is unlocked while BENCH_DRAIN_TRICKLE msg/s of live traffic go on (and
# BENCH_DRAIN_TAIL s after the backlog is stored); then the stock `mariadb` client
# loads the same end state into a fresh database. Per run: the start delay (unlock to
# first commit), the drain rate from the first commit, the stock client's rate and
# the ratio, the live traffic taken while draining and its latency afterwards, and
# what the server did per message on each side (statements and row writes, from SHOW
# GLOBAL STATUS, so server-wide); the end states are compared. With BENCH_ROWCOST=1 (default), the stock load again in
# variants, BENCH_ROWCOST_REPS rounds: what JSON validation, the secondary index,
# rows per statement, LOAD DATA LOCAL INFILE and text against binary protocol
# (host/examples/protocol_ab, built here) cost the server. Table: BENCH_OUT/drain.md.
# Defaults: BENCH_DRAIN_N 200000, BENCH_DRAIN_TRICKLE 200, BENCH_DRAIN_TAIL 10,
# BENCH_DRAIN_REPS 3, BENCH_ROWCOST 1, BENCH_ROWCOST_REPS 3. It makes and drops a
# database account of its own, so BENCH_DB_USER needs CREATE USER and GRANT OPTION.
#
# Environment (defaults in brackets):
#   BENCH_N              messages per run of (1) and (2)                  [100000]
#   BENCH_REPS           alternating repetitions of (1) and (2)           [3]
#   BENCH_MACHINES       simulated machines (half CNCTypeA, half B)       [100]
#   BENCH_UNBATCHED_N    messages for (3), batching off                   [BENCH_N/10]
#   BENCH_RATE           msg/s for the latency run (4)                    [2000]
#   BENCH_DURATION       seconds of the latency run (4)                   [30]
#   BENCH_BATCH          batch.max_messages for (2) and (4)               [500]
#   BENCH_WRITERS        batch.writers (parallel database connections) for
#                        (2)-(4) and the drain; the collector's default   [2]
#   BENCH_LATENCY_MS     batch.max_latency_ms (the latency budget) for (2), (3)
#                        and the first of (4)                              [50]
#   BENCH_STEADY_BUDGETS the latency budgets (ms) of the runs of (4), one run each
#                        at BENCH_RATE                     ["BENCH_LATENCY_MS 20 0"]
#   BENCH_SPOOL_FSYNC    spool.fsync: never | always                      [never]
#   BENCH_WINDOW         publisher's unacknowledged-message window        [1000]
#   BENCH_MAX_INFLIGHT   Mosquitto max_inflight_messages (0 = no limit)   [20, its default]
#   BENCH_STALL_SECS     give up on a run after this long without progress [60]
#   BENCH_RUST_LOG       RUST_LOG of the collector (its documented default) [info]
#   BENCH_ISOLATE=1      runs (2)-(4) with both shipped classes in plugins.isolate
#                        (runner processes); the collector's CPU then includes its
#                        runners'                                          [0]
#   BENCH_DB_HOST, BENCH_DB_PORT, BENCH_DB_USER, BENCH_DB_PASSWORD
#                        where to create the scratch databases   [127.0.0.1, 3306, root, ""]
#   BENCH_OUT            directory of results.md (and perf output)        [target/bench]
#   CARGO_TARGET_DIR     where the release build is (as for cargo)        [target]
#   BENCH_SKIP_BUILD=1   use the existing target/release binaries
#   BENCH_SKIP_SETUP=1   do not check packages/toolchain/services (scripts/lib.sh)
#   BENCH_KEEP=1         keep the scratch directory (configs, logs) instead of deleting it
#   BENCH_CG_SMALL       BENCH_MODE=callgrind: messages of the smaller run    [1000]
#   BENCH_PERF=1         after the measured runs, one more collector-path run under
#                        `perf record -a -g` (whole machine; not in the table); the
#                        report (by thread, collector and database symbols) goes to
#                        BENCH_OUT/perf.txt
#
# The private broker: `max_queued_messages 0` (Mosquitto's default of 1,000 silently
# drops the QoS 1 messages queued for a slower subscriber beyond that many: of 200,000
# sent to a stalled subscriber, 3,414 arrived), `persistence true`
# in its own directory (the collector uses a persistent session, as a plant would),
# max_inflight_messages left at Mosquitto's default unless BENCH_MAX_INFLIGHT says,
# set_tcp_nodelay true (as the README recommends).
#
# Time: stored_at is DATETIME(3) filled with CURRENT_TIMESTAMP(3) in the collector's
# session, i.e. in the server's default time zone (the collector does not set one).
# UNIX_TIMESTAMP(stored_at) is computed in a session that also uses the server's
# default, so both sides agree; a sanity check fails the run if latencies come out
# negative or hours long (a time zone mismatch, or clocks of different hosts).
# CURRENT_TIMESTAMP in a transaction is the time of the statement, so "committed"
# means "the batch's INSERT ran"; the COMMIT follows within milliseconds.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

N=${BENCH_N:-100000}
REPS=${BENCH_REPS:-3}
MACHINES=${BENCH_MACHINES:-100}
if [ "${BENCH_MODE:-}" = callgrind ]; then
    N=${BENCH_N:-10000}
    MACHINES=${BENCH_MACHINES:-50}
fi
UNBATCHED_N=${BENCH_UNBATCHED_N:-$((N / 10))}
RATE=${BENCH_RATE:-2000}
DURATION=${BENCH_DURATION:-30}
BATCH=${BENCH_BATCH:-500}
WRITERS=${BENCH_WRITERS:-2}
LATENCY_MS=${BENCH_LATENCY_MS:-${BENCH_BATCH_WAIT_MS:-50}}
# Each budget once, in the order given.
STEADY_BUDGETS=$(echo "${BENCH_STEADY_BUDGETS:-$LATENCY_MS 20 0}" | tr ' ' '\n' | awk 'NF && !seen[$0]++' | tr '\n' ' ')
SPOOL_FSYNC=${BENCH_SPOOL_FSYNC:-never}
WINDOW=${BENCH_WINDOW:-1000}
MAX_INFLIGHT=${BENCH_MAX_INFLIGHT:-20}
STALL_SECS=${BENCH_STALL_SECS:-60}
COLLECTOR_LOG=${BENCH_RUST_LOG:-info}
ISOLATE=${BENCH_ISOLATE:-0}
if [ "$ISOLATE" = 1 ]; then
    PLUGINS_JSON='"plugins": { "isolate": ["CNCTypeA", "CNCTypeB"] },'
else
    PLUGINS_JSON=""
fi
DB_HOST=${BENCH_DB_HOST:-127.0.0.1}
DB_PORT=${BENCH_DB_PORT:-3306}
DB_USER=${BENCH_DB_USER:-root}
DB_PASSWORD=${BENCH_DB_PASSWORD:-}
OUT=${BENCH_OUT:-target/bench}
LATENCY_N=$(awk -v r="$RATE" -v d="$DURATION" 'BEGIN { printf "%d", r * d }')

for b in $STEADY_BUDGETS; do
    [[ $b =~ ^[0-9]+$ ]] || die "BENCH_STEADY_BUDGETS must hold whole numbers (ms), got '$b'"
done
for v in N REPS MACHINES UNBATCHED_N BATCH LATENCY_MS WINDOW MAX_INFLIGHT STALL_SECS LATENCY_N; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
[ "$N" -gt 0 ] && [ "$REPS" -gt 0 ] && [ "$UNBATCHED_N" -gt 0 ] && [ "$LATENCY_N" -gt 0 ] \
    || die "BENCH_N, BENCH_REPS, BENCH_UNBATCHED_N and BENCH_RATE*BENCH_DURATION must be > 0"
case "$SPOOL_FSYNC" in never | always) ;; *) die "BENCH_SPOOL_FSYNC must be never or always" ;; esac

# ---------------------------------------------------------------------------
# Set-up and clean-up

if [ "${BENCH_SKIP_SETUP:-0}" != 1 ]; then
    ensure_packages
    ensure_rust
    case "$DB_HOST" in 127.0.0.1 | localhost) ensure_services ;; esac
else
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi

MYSQL=$(command -v mariadb || command -v mysql) || die "no mariadb or mysql client"
MOSQUITTO=$(command -v mosquitto || ls /usr/sbin/mosquitto /usr/local/sbin/mosquitto 2>/dev/null | head -1) \
    || die "no mosquitto"
export MYSQL_PWD="$DB_PASSWORD"
sql() { "$MYSQL" -h"$DB_HOST" -P"$DB_PORT" -u"$DB_USER" -N -B "$@"; }
sql -e 'SELECT 1' >/dev/null || die "cannot log in to MySQL at $DB_HOST:$DB_PORT as $DB_USER"

mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mes-bench.XXXXXX")
TAG="b$$"
DATABASES=()
USERS=() # database accounts the drain mode made
BROKER_PID=""
COLLECTOR_PID=""
GROUP_PIDS=""
COUNT_PID=""
GEN_PID=""
TRICKLE_PID=""
PERF_PID=""

stop_pid() { # pid [signal]: signal it, wait up to 20 s, then SIGKILL
    local pid=$1 sig=${2:-TERM}
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$PERF_PID" INT
    stop_pid "$GEN_PID"
    stop_pid "$TRICKLE_PID"
    stop_pid "$COUNT_PID"
    stop_pid "$COLLECTOR_PID"
    for pid in $GROUP_PIDS; do stop_pid "$pid"; done
    stop_pid "$BROKER_PID"
    for db in "${DATABASES[@]}"; do
        sql -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true
    done
    for u in "${USERS[@]}"; do
        sql -e "DROP USER IF EXISTS $u" 2>/dev/null || true
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Build

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "building (release)"
    cargo build --release --workspace --quiet
fi
BIN=${CARGO_TARGET_DIR:-target}/release
for f in mes-collector cnc-sim libcnc_type_a.so libcnc_type_b.so; do
    [ -e "$BIN/$f" ] || die "$BIN/$f is missing: run without BENCH_SKIP_BUILD"
done
"$BIN/cnc-sim" classes --machines "$MACHINES" >"$WORK/cnc_classes.json"

# ---------------------------------------------------------------------------
# Helpers

CLK_TCK=$(getconf CLK_TCK)

# utime+stime of a process (all its threads), in clock ticks; 0 if it is gone.
cpu_ticks() {
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    rest=${stat##*) }
    read -r -a f <<<"$rest"
    echo $((f[11] + f[12]))
}

# cpu_ticks of a process plus its child processes (the plugin runners of
# BENCH_ISOLATE=1), read while they run.
cpu_ticks_with_children() {
    local t p
    t=$(cpu_ticks "$1")
    for p in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        t=$((t + $(cpu_ticks "$p")))
    done
    echo "$t"
}

# Peak resident memory of a process in KiB.
peak_rss_kib() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# "name<TAB>seconds" per thread name of a process (threads of one name summed), busiest first.
thread_cpu() {
    local t stat rest name
    for t in /proc/"$1"/task/*; do
        stat=$(cat "$t/stat" 2>/dev/null) || continue
        name=${stat#*(}
        name=${name%)*}
        rest=${stat##*) }
        read -r -a f <<<"$rest"
        printf '%s\t%s\n' "$name" $((f[11] + f[12]))
    done | awk -F'\t' -v hz="$CLK_TCK" '{ s[$1] += $2; n[$1]++ }
        END { for (k in s) printf "%s%s\t%.2f\n", k, (n[k] > 1 ? " (x" n[k] ")" : ""), s[k] / hz }' |
        sort -t$'\t' -k2 -g -r
}

DB_SERVER_PID=""
case "$DB_HOST" in
127.0.0.1 | localhost)
    DB_SERVER_PID=$(pgrep -xo mariadbd 2>/dev/null || pgrep -xo mysqld 2>/dev/null || true)
    [ -r "/proc/$DB_SERVER_PID/stat" ] || DB_SERVER_PID=""
    ;;
esac

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
fmt0() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
fmt1() { awk -v x="$1" 'BEGIN { printf "%.1f", x }'; }
fmt2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.4f", a / b; else print 0 }'; }
per100k() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.2f", t / hz * 100000 / n; else print 0 }'; }

start_broker() {
    start_private_broker "$MOSQUITTO" "$WORK/broker" "max_inflight_messages $MAX_INFLIGHT" \
        || die "could not start a private Mosquitto (see $WORK/broker/mosquitto.log)"
}

free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        port_open "$port" || { echo "$port"; return; }
    done
    die "no free port found"
}

# The value of an unlabelled metric in a Prometheus text file, or "".
metric() { awk -v m="$2" '$1 == m { print $2; exit }' "$1" 2>/dev/null; }

new_database() { # name: database.sql applied under that name
    local db=$1
    DATABASES+=("$db")
    sed "s/cnc_database/$db/g" database.sql | sql
}

# Runs a command and then writes the CPU ticks it used (utime+stime, as the
# children's times of a wrapping shell) to the file $1. SIGTERM or SIGINT to the
# wrapper stops the command too.
measured() {
    local stat=$1
    shift
    STAT="$stat" sh -c 'trap "kill \$c 2>/dev/null; wait \$c; exit 143" TERM INT
        "$@" <&0 &
        c=$!
        wait $c
        rc=$?
        set -- $(sed "s/.*) //" /proc/$$/stat)
        echo $((${14} + ${15})) >"$STAT"
        exit $rc' sh "$@"
}

# Parses "... in S s (R msg/s)..." lines printed by cnc-sim.
rate_from() { sed -n 's/.* (\([0-9.]*\) msg\/s).*/\1/p' "$1" | tail -1; }

declare -A R # results: R[run.key]=value

# (1) one raw broker run: RUN is a label; COUNT messages (default N) at RATE msg/s
# (default 0, full speed).
raw_run() {
    local run=$1 count=${2:-$N} rate=${3:-0} topic="bench/$TAG/$1" out="$WORK/$1.count" pub="$WORK/$1.pub"
    log "$run: raw broker path, $count messages at rate $rate (0: full speed)"
    measured "$WORK/$run.count.cpu" \
        "$BIN/cnc-sim" --broker "$BROKER_URI" --topic "$topic" count --count "$count" --timeout-secs "$STALL_SECS" \
        >"$out" 2>"$WORK/$run.count.err" &
    COUNT_PID=$!
    for _ in $(seq 1 300); do
        grep -q '^ready' "$out" && break
        kill -0 "$COUNT_PID" 2>/dev/null || die "cnc-sim count exited: $(cat "$WORK/$run.count.err")"
        sleep 0.05
    done
    grep -q '^ready' "$out" || die "cnc-sim count did not subscribe"
    local b0 b1 rc=0
    b0=$(cpu_ticks "$BROKER_PID")
    measured "$WORK/$run.pub.cpu" \
        "$BIN/cnc-sim" --broker "$BROKER_URI" --topic "$topic" generate --machines "$MACHINES" \
        --count "$count" --rate "$rate" --window "$WINDOW" --seed 1 >"$pub" 2>"$WORK/$run.pub.err" \
        || die "$run: publisher failed: $(tail -3 "$WORK/$run.pub.err") $(cat "$pub")"
    wait "$COUNT_PID" || rc=$?
    COUNT_PID=""
    b1=$(cpu_ticks "$BROKER_PID")
    local received
    received=$(sed -n 's/^received \([0-9]*\) messages.*/\1/p' "$out")
    R[$run.published]=$count
    R[$run.received]=${received:-0}
    R[$run.rate]=$(rate_from "$out")
    R[$run.pub_rate]=$(rate_from "$pub")
    R[$run.broker_cpu]=$(per100k $((b1 - b0)) "$count")
    R[$run.pub_cpu]=$(per100k "$(cat "$WORK/$run.pub.cpu" 2>/dev/null || echo 0)" "$count")
    R[$run.count_cpu]=$(per100k "$(cat "$WORK/$run.count.cpu" 2>/dev/null || echo 0)" "$count")
    R[$run.path_cpu]=$(awk -v a="${R[$run.pub_cpu]}" -v b="${R[$run.broker_cpu]}" -v c="${R[$run.count_cpu]}" \
        'BEGIN { printf "%.2f", a + b + c }')
    R[$run.ok]=$([ "$rc" = 0 ] && [ "${received:-0}" = "$count" ] && echo yes || echo NO)
    log "$run: ${R[$run.rate]} msg/s (received ${R[$run.received]} of $count)"
}

# Messages of database DB that are stored: each is a cnc_data row or a dead letter.
stored_count() {
    sql "$1" -e "SELECT (SELECT COUNT(*) FROM cnc_data) + (SELECT COUNT(*) FROM dead_letters)"
}

# The collector's own account of its commits, from a /metrics dump: batches, mean
# messages per batch, seconds spent committing and mean commit time, into R[RUN.*].
commit_figures() {
    local run=$1 metrics=$2 csum ccount bsum
    csum=$(metric "$metrics" mes_commit_seconds_sum)
    ccount=$(metric "$metrics" mes_commit_seconds_count)
    bsum=$(metric "$metrics" mes_batch_messages_sum)
    if [ -n "$csum" ] && [ -n "$ccount" ] && [ "$ccount" != 0 ]; then
        R[$run.batches]=$ccount
        R[$run.mean_batch]=$(fmt0 "$(div "${bsum:-0}" "$ccount")")
        R[$run.commit_s]=$(fmt2 "$csum")
        R[$run.commit_ms]=$(fmt1 "$(awk -v s="$csum" -v n="$ccount" 'BEGIN { print s * 1000 / n }')")
    else
        R[$run.batches]="n/a" R[$run.mean_batch]="n/a" R[$run.commit_s]="n/a" R[$run.commit_ms]="n/a"
    fi
}

# Writes a collector's configuration in DIR (both shipped plugins, the simulated
# machines, batch size and latency budget, metrics on MPORT), starts it as
# COLLECTOR_PID with its log in DIR/collector.log, and waits until it has subscribed.
start_collector() {
    local run=$1 dir=$2 topic=$3 db=$4 user=$5 password=$6 batch=$7 budget=$8 mport=$9
    mkdir -p "$dir/plugins"
    cp "$BIN/libcnc_type_a.so" "$BIN/libcnc_type_b.so" "$dir/plugins/"
    cp "$WORK/cnc_classes.json" "$dir/"
    cat >"$dir/collector.json" <<EOF
{
  "broker": { "uri": "$BROKER_URI", "client_id": "mes-bench-$TAG-$run", "topic": "$topic", "qos": 1 },
  "plugins_dir": "plugins", $PLUGINS_JSON
  "batch": { "max_messages": $batch, "max_latency_ms": $budget, "writers": $WRITERS },
  "spool": { "dir": "spool", "fsync": "$SPOOL_FSYNC" },
  "metrics_addr": "127.0.0.1:$mport"
}
EOF
    cat >"$dir/db_config.json" <<EOF
{ "host": "$DB_HOST", "port": $DB_PORT, "user": "$user", "password": "", "database": "$db" }
EOF
    MES_DB_PASSWORD="$password" RUST_LOG="$COLLECTOR_LOG" "$BIN/mes-collector" run --config-dir "$dir" \
        >"$dir/collector.log" 2>&1 &
    COLLECTOR_PID=$!
    for _ in $(seq 1 600); do
        grep -q 'subscribed to' "$dir/collector.log" && break
        kill -0 "$COLLECTOR_PID" 2>/dev/null || die "$run: collector exited:\n$(cat "$dir/collector.log")"
        sleep 0.05
    done
    grep -q 'subscribed to' "$dir/collector.log" || die "$run: collector did not subscribe in 30 s"
}

# (2)/(3)/(4) one collector run: label, messages, batch.max_messages, publish rate (0 =
# max), and the latency budget (default BENCH_LATENCY_MS).
collector_run() {
    local run=$1 count=$2 batch=$3 rate=$4 budget=${5:-$LATENCY_MS}
    local dir="$WORK/$run" db="mes_bench_${TAG}_$1" topic="bench/$TAG/$1" mport
    mport=$(free_port)
    log "$run: collector path, $count messages, batch.max_messages $batch, $([ "$rate" = 0 ] && echo "full speed" || echo "$rate msg/s")"
    new_database "$db"
    start_collector "$run" "$dir" "$topic" "$db" "$DB_USER" "$DB_PASSWORD" "$batch" "$budget" "$mport"

    local c0 b0 d0
    c0=$(cpu_ticks "$COLLECTOR_PID")
    b0=$(cpu_ticks "$BROKER_PID")
    d0=$([ -n "$DB_SERVER_PID" ] && cpu_ticks "$DB_SERVER_PID" || echo 0)
    measured "$dir/pub.cpu" \
        "$BIN/cnc-sim" --broker "$BROKER_URI" --topic "$topic" generate --machines "$MACHINES" \
        --count "$count" --rate "$rate" --window "$WINDOW" --seed 1 >"$dir/pub.out" 2>"$dir/pub.err" &
    GEN_PID=$!
    if [ "${PERF_THIS:-0}" = 1 ]; then
        perf record -a -g -F 499 -o "$OUT/perf.data" >"$dir/perf.log" 2>&1 &
        PERF_PID=$!
    fi

    # Wait until every message is a row (or a dead letter). MAX(id) is cheap to poll;
    # ids can have gaps, so the exact count is checked once it is reached.
    local seen=-1 progress_at=$SECONDS done_rows=0 exact=0 q
    q="SELECT (SELECT COALESCE(MAX(id),0) FROM cnc_data) + (SELECT COALESCE(MAX(id),0) FROM dead_letters)"
    while :; do
        if [ "$exact" = 1 ]; then
            q="SELECT (SELECT COUNT(*) FROM cnc_data) + (SELECT COUNT(*) FROM dead_letters)"
        fi
        done_rows=$(sql "$db" -e "$q")
        if [ "$done_rows" -ge "$count" ]; then
            [ "$exact" = 1 ] && break
            exact=1
            continue
        fi
        if [ "$done_rows" != "$seen" ]; then
            seen=$done_rows
            progress_at=$SECONDS
        elif [ $((SECONDS - progress_at)) -ge "$STALL_SECS" ] && ! kill -0 "$GEN_PID" 2>/dev/null; then
            log "$run: no progress for $STALL_SECS s at $done_rows of $count; giving up"
            break
        fi
        kill -0 "$COLLECTOR_PID" 2>/dev/null || { log "$run: the collector exited"; break; }
        sleep 0.5
    done
    local gen_rc=0
    wait "$GEN_PID" || gen_rc=$?
    GEN_PID=""
    if [ -n "$PERF_PID" ]; then
        stop_pid "$PERF_PID" INT
        PERF_PID=""
    fi

    R[$run.rss_mib]=$(fmt1 "$(awk -v k="$(peak_rss_kib "$COLLECTOR_PID")" 'BEGIN { print k / 1024 }')")
    local c1 b1 d1
    c1=$(cpu_ticks_with_children "$COLLECTOR_PID")
    b1=$(cpu_ticks "$BROKER_PID")
    d1=$([ -n "$DB_SERVER_PID" ] && cpu_ticks "$DB_SERVER_PID" || echo 0)
    R[$run.pid]=$COLLECTOR_PID
    thread_cpu "$COLLECTOR_PID" >"$dir/threads.txt"
    curl -sf --max-time 5 "http://127.0.0.1:$mport/metrics" >"$dir/metrics.txt" 2>/dev/null || true
    stop_pid "$COLLECTOR_PID"
    COLLECTOR_PID=""

    R[$run.published]=$(sed -n 's/^published \([0-9]*\) messages.*/\1/p' "$dir/pub.out")
    [ "$gen_rc" = 0 ] || log "$run: publisher failed: $(tail -2 "$dir/pub.err")"
    R[$run.pub_rate]=$(rate_from "$dir/pub.out")
    R[$run.cpu]=$(per100k "$c1" "$count")
    R[$run.broker_cpu]=$(per100k $((b1 - b0)) "$count")
    R[$run.db_cpu]=$([ -n "$DB_SERVER_PID" ] && per100k $((d1 - d0)) "$count" || echo "n/a")
    R[$run.pub_cpu]=$(per100k "$(cat "$dir/pub.cpu" 2>/dev/null || echo 0)" "$count")
    R[$run.path_cpu]=$(awk -v a="${R[$run.pub_cpu]}" -v b="${R[$run.broker_cpu]}" -v c="${R[$run.cpu]}" \
        -v d="${R[$run.db_cpu]}" 'BEGIN { printf "%.2f", a + b + c + d }')
    R[$run.threads]="$dir/threads.txt"
    # The collector's own account of its commits (its /metrics): how many batches,
    # and how much of the run MySQL spent committing them.
    commit_figures "$run" "$dir/metrics.txt"

    # rows, distinct seq, dead letters, first send (s), last store (s), DB clock - local clock.
    local stats
    stats=$(sql "$db" -e "
        SELECT COUNT(*),
               COUNT(DISTINCT CAST(JSON_EXTRACT(json_data, '\$.seq') AS UNSIGNED)),
               (SELECT COUNT(*) FROM dead_letters),
               MIN(CAST(JSON_EXTRACT(json_data, '\$.sent_at_us') AS UNSIGNED)) / 1000000,
               MAX(UNIX_TIMESTAMP(stored_at)),
               MIN(UNIX_TIMESTAMP(stored_at)),
               UNIX_TIMESTAMP(NOW(6)) - $(date +%s.%N)
        FROM cnc_data")
    local rows distinct dead t0 t1 s0 skew
    read -r rows distinct dead t0 t1 s0 skew <<<"$stats"
    R[$run.rows]=$rows
    R[$run.distinct]=$distinct
    R[$run.dead]=$dead
    R[$run.secs]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    R[$run.rate]=$(awk -v n="$rows" -v s="${R[$run.secs]}" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print 0 }')
    # Rows over the span of stored_at alone: the sink's rate once it has work.
    R[$run.db_rate]=$(awk -v n="$rows" -v a="$s0" -v b="$t1" 'BEGIN { if (b > a) printf "%.0f", n / (b - a); else print 0 }')
    R[$run.ok]=$([ "$gen_rc" = 0 ] && [ "${R[$run.published]:-0}" = "$count" ] && [ "$rows" = "$count" ] \
        && [ "$distinct" = "$rows" ] && [ "$dead" = 0 ] && echo yes || echo NO)

    # Latency of every row, ms: p50 (nearest rank), p99, max, min.
    local lat
    lat=$(sql "$db" -e "
        WITH l AS (
            SELECT (CAST(UNIX_TIMESTAMP(stored_at) * 1000000 AS SIGNED)
                    - CAST(JSON_EXTRACT(json_data, '\$.sent_at_us') AS SIGNED)) / 1000 AS ms
            FROM cnc_data),
        r AS (SELECT ms, ROW_NUMBER() OVER (ORDER BY ms) AS k, COUNT(*) OVER () AS n FROM l)
        SELECT MAX(CASE WHEN k = CEIL(0.50 * n) THEN ms END),
               MAX(CASE WHEN k = CEIL(0.99 * n) THEN ms END),
               MAX(ms), MIN(ms)
        FROM r")
    local p50 p99 pmax pmin
    read -r p50 p99 pmax pmin <<<"$lat"
    R[$run.p50]=$(fmt0 "$p50") R[$run.p99]=$(fmt0 "$p99") R[$run.max]=$(fmt0 "$pmax") R[$run.min]=$pmin
    # Milliseconds of resolution on stored_at, microseconds on sent_at_us: a row can
    # look up to 1 ms older than it is. Anything worse is a clock or time zone problem.
    if awk -v m="${R[$run.min]}" -v x="${R[$run.max]}" 'BEGIN { exit !(m < -1000 || x > 3600000) }'; then
        die "$run: latencies from ${R[$run.min]} to ${R[$run.max]} ms: stored_at and sent_at_us disagree \
(time zone of the MySQL session, or the DB server's clock is ${skew} s off this machine's)"
    fi
    sql -e "DROP DATABASE IF EXISTS \`$db\`"
    log "$run: ${R[$run.rate]} msg/s end to end (${rows} rows in ${R[$run.secs]} s; publisher ${R[$run.pub_rate]} msg/s), p50 ${R[$run.p50]} ms, rss ${R[$run.rss_mib]} MiB, cpu ${R[$run.cpu]} s/100k"
}

# Group mode: K collectors in one shared subscription. RUN is a label.
group_run() {
    local run=$1 k=$2 db="mes_bench_${TAG}_$1" topic="bench/$TAG/$1" i
    log "$run: $k collector(s) in \$share/bench/$topic, $N messages at full speed"
    new_database "$db"
    local pids=() dirs=()
    for i in $(seq 1 "$k"); do
        local dir="$WORK/$run/c$i"
        mkdir -p "$dir/plugins"
        cp "$BIN/libcnc_type_a.so" "$BIN/libcnc_type_b.so" "$dir/plugins/"
        cp "$WORK/cnc_classes.json" "$dir/"
        printf '%s\n' "{" \
            "  \"broker\": { \"uri\": \"$BROKER_URI\", \"client_id\": \"mes-bench-$TAG-$run-$i\", \"topic\": \"\$share/bench/$topic\", \"qos\": 1 }," \
            "  \"plugins_dir\": \"plugins\"," \
            "  \"batch\": { \"max_messages\": $BATCH, \"max_latency_ms\": $LATENCY_MS }," \
            "  \"spool\": { \"dir\": \"spool\", \"fsync\": \"$SPOOL_FSYNC\" }," \
            "  \"metrics_addr\": \"\"" \
            "}" >"$dir/collector.json"
        printf '{ "host": "%s", "port": %s, "user": "%s", "password": "", "database": "%s" }\n' \
            "$DB_HOST" "$DB_PORT" "$DB_USER" "$db" >"$dir/db_config.json"
        MES_DB_PASSWORD="$DB_PASSWORD" RUST_LOG="$COLLECTOR_LOG" "$BIN/mes-collector" run --config-dir "$dir" \
            >"$dir/collector.log" 2>&1 &
        pids+=($!)
        dirs+=("$dir")
        GROUP_PIDS="${pids[*]}"
        for _ in $(seq 1 600); do
            grep -q 'subscribed to' "$dir/collector.log" && break
            kill -0 "${pids[-1]}" 2>/dev/null || die "$run: collector $i exited: $(cat "$dir/collector.log")"
            sleep 0.05
        done
        grep -q 'subscribed to' "$dir/collector.log" || die "$run: collector $i did not subscribe in 30 s"
    done
    local b0 d0 c0=()
    b0=$(cpu_ticks "$BROKER_PID")
    d0=$([ -n "$DB_SERVER_PID" ] && cpu_ticks "$DB_SERVER_PID" || echo 0)
    for i in "${!pids[@]}"; do c0+=("$(cpu_ticks "${pids[$i]}")"); done
    mkdir -p "$WORK/$run"
    measured "$WORK/$run/pub.cpu" \
        "$BIN/cnc-sim" --broker "$BROKER_URI" --topic "$topic" generate --machines "$MACHINES" \
        --count "$N" --rate 0 --window "$WINDOW" --seed 1 >"$WORK/$run/pub.out" 2>"$WORK/$run/pub.err" &
    GEN_PID=$!
    local done_rows=0 seen=-1 progress_at=$SECONDS
    while :; do
        done_rows=$(stored_count "$db")
        [ "$done_rows" -ge "$N" ] && break
        if [ "$done_rows" != "$seen" ]; then
            seen=$done_rows
            progress_at=$SECONDS
        elif [ $((SECONDS - progress_at)) -ge "$STALL_SECS" ]; then
            log "$run: no progress for $STALL_SECS s at $done_rows of $N; giving up"
            break
        fi
        sleep 0.5
    done
    wait "$GEN_PID" || true
    GEN_PID=""
    local b1 d1 cpus=() shares=()
    b1=$(cpu_ticks "$BROKER_PID")
    d1=$([ -n "$DB_SERVER_PID" ] && cpu_ticks "$DB_SERVER_PID" || echo 0)
    for i in "${!pids[@]}"; do
        cpus+=("$(per100k $(($(cpu_ticks "${pids[$i]}") - c0[i])) "$N")")
    done
    for i in "${!pids[@]}"; do stop_pid "${pids[$i]}"; done
    GROUP_PIDS=""
    # How many each collector stored, from its closing summary.
    for i in "${!dirs[@]}"; do
        shares+=("$(sed -n 's/.*stopped: [0-9]* received, \([0-9]*\) stored.*/\1/p' "${dirs[$i]}/collector.log" | tail -1)")
    done
    local stats rows distinct dead t0 t1
    stats=$(sql "$db" -e "
        SELECT COUNT(*), COUNT(DISTINCT CAST(JSON_EXTRACT(json_data, '\$.seq') AS UNSIGNED)),
               (SELECT COUNT(*) FROM dead_letters),
               MIN(CAST(JSON_EXTRACT(json_data, '\$.sent_at_us') AS UNSIGNED)) / 1000000,
               MAX(UNIX_TIMESTAMP(stored_at))
        FROM cnc_data")
    read -r rows distinct dead t0 t1 <<<"$stats"
    R[$run.rate]=$(awk -v n="$rows" -v a="$t0" -v b="$t1" 'BEGIN { if (b > a) printf "%.0f", n / (b - a); else print 0 }')
    R[$run.cpus]=$(IFS=/; echo "${cpus[*]}")
    R[$run.cpu_sum]=$(printf '%s\n' "${cpus[@]}" | awk '{ s += $1 } END { printf "%.2f", s }')
    R[$run.shares]=$(IFS=/; echo "${shares[*]}")
    R[$run.broker_cpu]=$(per100k $((b1 - b0)) "$N")
    R[$run.db_cpu]=$([ -n "$DB_SERVER_PID" ] && per100k $((d1 - d0)) "$N" || echo "n/a")
    R[$run.pub_cpu]=$(per100k "$(cat "$WORK/$run/pub.cpu" 2>/dev/null || echo 0)" "$N")
    R[$run.ok]=$([ "$rows" = "$N" ] && [ "$distinct" = "$rows" ] && [ "$dead" = 0 ] && echo yes || echo NO)
    sql -e "DROP DATABASE IF EXISTS \`$db\`"
    log "$run: ${R[$run.rate]} msg/s; collectors ${R[$run.cpus]} CPU-s/100k; broker ${R[$run.broker_cpu]}, database ${R[$run.db_cpu]}; stored ${R[$run.shares]}; exactly once: ${R[$run.ok]}"
}

# ---------------------------------------------------------------------------
# Callgrind mode: instructions per message (see the top of the file).

# The role of one thread's callgrind.out file, from the functions (or, where they are
# inlined, the source files) it ran.
callgrind_thread() {
    local f=$1
    if grep -q 'Dispatcher::run' "$f"; then echo dispatcher
    elif grep -q 'MQTTAsync_receiveThread' "$f"; then echo "intake (MQTTAsync_receiveThread)"
    elif grep -q 'MQTTAsync_sendThread' "$f"; then echo "mqtt send (MQTTAsync_sendThread)"
    elif grep -q 'mes_collector::main' "$f"; then echo main
    elif grep -q 'sink/writer.rs' "$f"; then echo writer
    elif grep -q 'metrics::serve' "$f"; then echo metrics-http
    elif grep -q 'watchdog' "$f"; then echo plugin-watchdog
    else echo other
    fi
}

# "role<TAB>Ir" for every thread of a run (threads of one role summed).
callgrind_threads() {
    local f ir
    for f in "$1"/callgrind.out-*; do
        ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$f" | head -1)
        printf '%s\t%s\n' "$(callgrind_thread "$f")" "${ir:-0}"
    done | awk -F'\t' '{ s[$1] += $2 } END { for (k in s) printf "%s\t%d\n", k, s[k] }'
}

# The report of the two runs (BENCH_OUT/callgrind/{small,large}).
callgrind_report() { # small-count
    local small=$1 cg="$OUT/callgrind" head_rev f role
    head_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || head_rev="$head_rev (with uncommitted changes)"
    echo "## Collector instructions per message (callgrind, $(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "Commit $head_rev; $MACHINES machines (half CNCTypeA, half CNCTypeB), published at full speed;"
    echo "batch $BATCH messages / ${LATENCY_MS} ms, spool fsync $SPOOL_FSYNC, RUST_LOG=$COLLECTOR_LOG."
    echo "Per message = (Ir of the $N-message run - Ir of the $small-message run) / $((N - small)):"
    echo "startup and each machine's first message cancel out."
    echo
    echo "| thread | Ir, $small messages | Ir, $N messages | Ir per message |"
    echo "|---|---:|---:|---:|"
    join -t$'\t' -a1 -a2 -e0 -o 0,1.2,2.2 <(sort "$cg/small/threads.tsv") <(sort "$cg/large/threads.tsv") |
        awk -F'\t' -v d=$((N - small)) '{ printf "%s\t%d\t%d\t%.0f\n", $1, $2, $3, ($3 - $2) / d }' |
        sort -t$'\t' -k4 -g -r | awk -F'\t' '{ printf "| %s | %d | %d | %d |\n", $1, $2, $3, $4 }'
    awk -F'\t' -v n="$N" -v d=$((N - small)) 'FNR == NR { a += $2; next } { b += $2 }
        END { printf "| **all threads** | %d | %d | **%.0f** |\n\nWithout subtracting startup: %.0f Ir per message (the %d-message run\047s total / %d).\n", a, b, (b - a) / d, b / n, n, n }' \
        "$cg/small/threads.tsv" "$cg/large/threads.tsv"
    # awk reads all of callgrind_annotate's output (no `head`): with pipefail, a
    # closed pipe would end the script.
    for role in "intake (MQTTAsync_receiveThread)" dispatcher writer; do
        echo
        echo "### $role: top functions, inclusive ($N-message run)"
        echo
        echo '```'
        for f in "$cg/large"/callgrind.out-*; do
            [ "$(callgrind_thread "$f")" = "$role" ] || continue
            callgrind_annotate --inclusive=yes --auto=no --threshold=99 "$f" 2>/dev/null |
                awk '/^ *[0-9,]+ +\(/ && !/PROGRAM TOTALS/ && n++ < 40 { print substr($0, 1, 220) }'
        done
        echo '```'
    done
    echo
    echo "### All threads: top functions, self ($N-message run; /msg is its Ir / $N, startup included)"
    echo
    echo '```'
    for f in "$cg/large"/callgrind.out-*; do
        callgrind_annotate --auto=no --threshold=100 "$f" 2>/dev/null |
            awk '/^ *[0-9,]+ +\(/ && !/PROGRAM TOTALS/ { n = $1; gsub(",", "", n); sub(/^ *[0-9,]+ +\([ 0-9.]+%\) +/, ""); print n "\t" $0 }'
    done | awk -F'\t' '{ s[$2] += $1 } END { for (k in s) printf "%d\t%s\n", s[k], k }' |
        sort -t$'\t' -k1 -g -r | awk -F'\t' -v n="$N" 'NR <= 40 { printf "%14d %7.0f/msg  %s\n", $1, $1 / n, substr($2, 1, 180) }'
    echo '```'
}

# The collector under callgrind takes COUNT messages at full speed; its callgrind.out
# files go to BENCH_OUT/callgrind/LABEL.
callgrind_run() { # label count
    local run=$1 count=$2 dir="$WORK/$1" db="mes_bench_${TAG}_$1" topic="bench/$TAG/$1"
    local cg="$OUT/callgrind/$run"
    log "$run: the collector under callgrind, $count messages at full speed"
    mkdir -p "$dir/plugins" "$cg"
    rm -f "$cg"/callgrind.out*
    cp "$BIN/libcnc_type_a.so" "$BIN/libcnc_type_b.so" "$dir/plugins/"
    cp "$WORK/cnc_classes.json" "$dir/"
    cat >"$dir/collector.json" <<CONF
{
  "broker": { "uri": "$BROKER_URI", "client_id": "mes-bench-$TAG-$run", "topic": "$topic", "qos": 1 },
  "plugins_dir": "plugins",
  "batch": { "max_messages": $BATCH, "max_latency_ms": $LATENCY_MS },
  "spool": { "dir": "spool", "fsync": "$SPOOL_FSYNC" },
  "metrics_addr": ""
}
CONF
    printf '{ "host": "%s", "port": %s, "user": "%s", "password": "", "database": "%s" }\n' \
        "$DB_HOST" "$DB_PORT" "$DB_USER" "$db" >"$dir/db_config.json"
    new_database "$db"
    MES_DB_PASSWORD="$DB_PASSWORD" RUST_LOG="$COLLECTOR_LOG" valgrind --tool=callgrind \
        --separate-threads=yes --callgrind-out-file="$cg/callgrind.out" \
        "$BIN/mes-collector" run --config-dir "$dir" >"$dir/collector.log" 2>&1 &
    COLLECTOR_PID=$!
    for _ in $(seq 1 1200); do
        grep -q 'subscribed to' "$dir/collector.log" && break
        kill -0 "$COLLECTOR_PID" 2>/dev/null || die "$run: collector exited:\n$(cat "$dir/collector.log")"
        sleep 0.1
    done
    grep -q 'subscribed to' "$dir/collector.log" || die "$run: collector did not subscribe in 120 s"
    "$BIN/cnc-sim" --broker "$BROKER_URI" --topic "$topic" generate --machines "$MACHINES" \
        --count "$count" --rate 0 --window "$WINDOW" --seed 1 >"$dir/pub.out" 2>"$dir/pub.err" \
        || die "$run: publisher failed: $(tail -3 "$dir/pub.err")"
    local done_rows=0 seen=-1 progress_at=$SECONDS
    while :; do
        done_rows=$(stored_count "$db")
        [ "$done_rows" -ge "$count" ] && break
        if [ "$done_rows" != "$seen" ]; then
            seen=$done_rows
            progress_at=$SECONDS
        elif [ $((SECONDS - progress_at)) -ge "$STALL_SECS" ]; then
            die "$run: no progress for $STALL_SECS s at $done_rows of $count (log: $dir/collector.log)"
        fi
        kill -0 "$COLLECTOR_PID" 2>/dev/null || die "$run: the collector exited:\n$(tail "$dir/collector.log")"
        sleep 0.5
    done
    # SIGTERM, as a service manager stops it; callgrind writes its files at the exit,
    # which takes a while under valgrind.
    kill -TERM "$COLLECTOR_PID"
    for _ in $(seq 1 1200); do
        kill -0 "$COLLECTOR_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$COLLECTOR_PID" 2>/dev/null && die "$run: the collector did not stop within 120 s of SIGTERM"
    wait "$COLLECTOR_PID" || die "$run: the collector failed:\n$(tail "$dir/collector.log")"
    COLLECTOR_PID=""
    local stats rows distinct dead
    stats=$(sql "$db" -e "SELECT COUNT(*), COUNT(DISTINCT CAST(JSON_EXTRACT(json_data, '\$.seq') AS UNSIGNED)),
        (SELECT COUNT(*) FROM dead_letters) FROM cnc_data")
    read -r rows distinct dead <<<"$stats"
    [ "$rows" = "$count" ] && [ "$distinct" = "$rows" ] && [ "$dead" = 0 ] \
        || die "$run: $rows rows, $distinct distinct seq, $dead dead letters of $count messages"
    sql -e "DROP DATABASE IF EXISTS \`$db\`"
    callgrind_threads "$cg" >"$cg/threads.tsv"
}

if [ "${BENCH_MODE:-}" = callgrind ]; then
    command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null \
        || die "BENCH_MODE=callgrind needs valgrind (apt-get install valgrind)"
    SMALL=${BENCH_CG_SMALL:-1000}
    [[ $SMALL =~ ^[0-9]+$ ]] && [ "$SMALL" -lt "$N" ] || die "BENCH_CG_SMALL must be a whole number below BENCH_N"
    start_broker
    callgrind_run small "$SMALL"
    callgrind_run large "$N"
    callgrind_report "$SMALL" >"$OUT/callgrind/report.md"
    cat "$OUT/callgrind/report.md"
    log "written to $OUT/callgrind/report.md (callgrind.out files beside it)"
    exit 0
fi

# ---------------------------------------------------------------------------
# Drain mode (BENCH_MODE=drain): catching up after an outage.
#
# The collector starts with its database account locked (ACCOUNT LOCK: every login is
# refused, as in an outage), takes BENCH_DRAIN_N messages into its spool, and then the
# account is unlocked while a live trickle of BENCH_DRAIN_TRICKLE msg/s is published.
# The drain rate counts from the first commit after the unlock (the reconnect back-off,
# up to the sink's MAX_BACKOFF, is the start delay, printed apart) to the commit of the
# last spooled message. Beside it, the stock `mariadb` client loads the same end state
# (read back from the drained database: each message's cnc_data row and cnc_alarms rows,
# each machine's newest cnc_status once per batch, the position row, one transaction
# per BENCH_BATCH messages, multi-row INSERTs of that size) into a fresh database: the
# server's own ceiling on this machine. Then (BENCH_ROWCOST=1) the same load in
# variants, each on a fresh database, gives what each part of a row costs the server.

DRAIN_N=${BENCH_DRAIN_N:-200000}
TRICKLE=${BENCH_DRAIN_TRICKLE:-200}
DRAIN_TAIL=${BENCH_DRAIN_TAIL:-10}
DRAIN_REPS=${BENCH_DRAIN_REPS:-3}
ROWCOST=${BENCH_ROWCOST:-1}
ROWCOST_REPS=${BENCH_ROWCOST_REPS:-3}

# The value of an unlabelled metric from a collector's /metrics on port $1 ("" if none).
live_metric() {
    local page
    page=$(curl -sf --max-time 2 "http://127.0.0.1:$1/metrics" 2>/dev/null) || return 0
    awk -v m="$2" '$1 == m { print $2; exit }' <<<"$page"
}

now_s() { date +%s.%N; }

# The end state of a database, as one line: rows and a checksum per table, leaving out
# what only says when a row was written (ids, stored_at, last_seen_at).
end_state() {
    sql "$1" -e "
        SELECT CONCAT_WS(' ',
            (SELECT CONCAT(COUNT(*), ':', COALESCE(SUM(CRC32(CONCAT_WS('|', cnc_id, part_program, timestamp, json_data))), 0)) FROM cnc_data),
            (SELECT CONCAT(COUNT(*), ':', COALESCE(SUM(CRC32(CONCAT_WS('|', cnc_id, timestamp, code, message))), 0)) FROM cnc_alarms),
            (SELECT CONCAT(COUNT(*), ':', COALESCE(SUM(CRC32(CONCAT_WS('|', cnc_id, status, spin, feed_rate, part_count, part_program, timestamp))), 0)) FROM cnc_status))"
}

# newest_updates COLUMN...: the ON DUPLICATE KEY UPDATE list the collector's
# upsert_newest sends (host/src/sink/mysql/statements.rs, newest_updates), ordering by the columns
# in the order given: a stored row is replaced only by a greater one, NULL first.
newest_updates() {
    local c newer="" i=0 n=$#
    for c in "$@"; do
        i=$((i + 1))
        newer+="VALUES(\`$c\`)>\`$c\` OR (\`$c\` IS NULL AND VALUES(\`$c\`) IS NOT NULL)"
        [ "$i" = "$n" ] || newer+=" OR (VALUES(\`$c\`)<=>\`$c\` AND ("
    done
    for ((i = 1; i < n; i++)); do newer+="))"; done
    local out=() args=("$@")
    for ((i = n - 1; i >= 0; i--)); do
        c=${args[i]}
        out+=("\`$c\`=IF($newer,VALUES(\`$c\`),\`$c\`)")
    done
    (IFS=,; echo "${out[*]}")
}

# stock_sql SRC_DB ROWS_PER_STATEMENT [LOAD_DATA_DIR]: on stdout, the SQL that makes the
# end state of SRC_DB from scratch as the collector would in batches of BENCH_BATCH
# messages (in id order): per batch START TRANSACTION, the cnc_data rows, the cnc_alarms
# rows (from each message's json_data, as CNCTypeB writes them), the newest cnc_status
# of each machine of the batch, the position row, COMMIT. With LOAD_DATA_DIR, each
# batch's cnc_data rows go to a file there, loaded by LOAD DATA LOCAL INFILE.
stock_sql() {
    local src=$1 per=$2 ld=${3:-} merged="k = 1"
    # STOCK_UNMERGED=1: every message's cnc_status row, as the collector sends them
    # before merging them per batch (the end state is the same: greatest wins).
    [ "${STOCK_UNMERGED:-0}" = 1 ] && merged="1"
    # -r: QUOTE() already made SQL literals; no escaping of the output on top.
    sql -r "$src" -e "
        WITH m AS (
            SELECT id, cnc_id, part_program, timestamp, json_data,
                   (ROW_NUMBER() OVER (ORDER BY id) - 1) DIV $BATCH AS b
            FROM cnc_data)
        -- One line per row: QUOTE() leaves line breaks as they are.
        SELECT b, k, id, REPLACE(REPLACE(t, '\n', '\\\\n'), '\r', '\\\\r'), f FROM (
        SELECT b, 1 AS k, id, 
               CONCAT('(', QUOTE(cnc_id), ',', QUOTE(part_program), ',', timestamp, ',', QUOTE(json_data), ')') AS t,
               CONCAT_WS('\t', cnc_id, part_program, timestamp,
                         REPLACE(REPLACE(REPLACE(json_data, '\\\\', '\\\\\\\\'), '\n', '\\\\n'), '\t', '\\\\t')) AS f
        FROM m
        UNION ALL
        SELECT m.b, 2, m.id,
               CONCAT('(', QUOTE(m.cnc_id), ',', m.timestamp, ',', QUOTE(a.code), ',', QUOTE(a.message), ')'), ''
        FROM m, JSON_TABLE(m.json_data, '\$.alarms[*]' COLUMNS (
            n FOR ORDINALITY, code VARCHAR(64) PATH '\$.code', message TEXT PATH '\$.message')) a
        UNION ALL
        SELECT b, 3, id,
               CONCAT('(', QUOTE(cnc_id), ',', QUOTE(status), ',', COALESCE(spin, 'NULL'), ',',
                      COALESCE(feed_rate, 'NULL'), ',', COALESCE(part_count, 'NULL'), ',',
                      QUOTE(part_program), ',', timestamp, ')'), ''
        FROM (
            SELECT v.*, ROW_NUMBER() OVER (PARTITION BY b, cnc_id ORDER BY timestamp DESC, status DESC,
                       spin DESC, feed_rate DESC, part_count DESC, part_program DESC) AS k
            FROM (SELECT b, id, cnc_id, part_program, timestamp,
                         CAST(JSON_VALUE(json_data, '\$.status') AS CHAR(64) CHARACTER SET utf8mb4) COLLATE utf8mb4_unicode_ci AS status,
                         CAST(JSON_VALUE(json_data, '\$.spin') AS DOUBLE) AS spin,
                         CAST(JSON_VALUE(json_data, '\$.feed_rate') AS DOUBLE) AS feed_rate,
                         CAST(JSON_VALUE(json_data, '\$.part_count') AS SIGNED) AS part_count
                  FROM m) v) s
        WHERE $merged) u
        ORDER BY 1, 2, 3" |
        awk -F'\t' -v per="$per" -v ld="$ld" -v newest="$(newest_updates timestamp cnc_id status spin feed_rate part_count part_program)" '
        BEGIN {
            head[1] = "INSERT INTO cnc_data (cnc_id,part_program,timestamp,json_data) VALUES "
            head[2] = "INSERT INTO cnc_alarms (cnc_id,timestamp,code,message) VALUES "
            head[3] = "INSERT INTO cnc_status (cnc_id,status,spin,feed_rate,part_count,part_program,timestamp) VALUES "
            tail[3] = " ON DUPLICATE KEY UPDATE " newest
        }
        function flush() {
            if (n) print head[kind] vals tail[kind] ";"
            n = 0; vals = ""
        }
        function end_batch() {
            flush()
            if (file != "") {
                close(file)
                print "LOAD DATA LOCAL INFILE \x27" file "\x27 INTO TABLE cnc_data CHARACTER SET utf8mb4 (cnc_id,part_program,timestamp,json_data);"
                file = ""
            }
            print "INSERT INTO collector_position (client_id,last_seq) VALUES (\x27stock\x27," last ") ON DUPLICATE KEY UPDATE last_seq=VALUES(last_seq);"
            print "COMMIT;"
        }
        NR == 1 || $1 != b {
            if (NR > 1) end_batch()
            b = $1; kind = 0
            print "START TRANSACTION;"
        }
        $2 != kind { flush(); kind = $2 }
        {
            if ($3 > last) last = $3
            if (kind == 1 && ld != "") {
                file = ld "/b" b ".tsv"
                print $5 "\t" $6 "\t" $7 "\t" $8 > file
                next
            }
            vals = vals (n ? "," : "") $4
            if (++n == per) flush()
        }
        END { if (NR) end_batch() }'
}

# load_file SQL_FILE DB: the stock client runs SQL_FILE in DB.
load_file() { sql --local-infile=1 "$2" <"$1"; }

# load_protocol binary|text SOURCE_DB DB: host/examples/protocol_ab copies SOURCE_DB's
# cnc_data rows into DB through the collector's driver.
load_protocol() {
    "$BIN/examples/protocol_ab" "mysql://$DB_USER${DB_PASSWORD:+:$DB_PASSWORD}@$DB_HOST:$DB_PORT" "$2" "$3" "$1" "$BATCH" "$BATCH" >/dev/null
}

# Waits (up to 15 s) until the database server uses less than a tenth of a core: the
# page flushing and purge left by the load before are not counted in the next one.
db_settle() {
    [ -n "$DB_SERVER_PID" ] || return 0
    local a b
    for _ in $(seq 1 30); do
        a=$(cpu_ticks "$DB_SERVER_PID")
        sleep 0.5
        b=$(cpu_ticks "$DB_SERVER_PID")
        [ $(((b - a) * 20)) -lt "$CLK_TCK" ] && return 0
    done
}

# stock_load LABEL SOURCE_DB SCHEMA_CHANGE LOADER...: runs LOADER with a fresh database
# (database.sql, then SCHEMA_CHANGE) as its last argument, and records the rate (rows
# over the span of stored_at after the first commit, as for the drain), the wall time,
# the database server's CPU, and whether the end state equals SOURCE_DB's (only
# cnc_data's with STOCK_DATA_ONLY=1).
# The server's statement and row-write counters (SHOW GLOBAL STATUS), as "Q W".
server_counters() {
    sql -e "SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Handler_write')" \
        | awk '$1 == "Questions" { q = $2 } $1 == "Handler_write" { w = $2 } END { print q + 0, w + 0 }'
}

# What the server did per message between two server_counters: statements per 1,000
# messages and row writes per message, into R[RUN.stmts] and R[RUN.writes].
server_work() {
    local run=$1 n=$2 q0 w0 q1 w1
    read -r q0 w0 <<<"$3"
    read -r q1 w1 <<<"$4"
    R[$run.stmts]=$(awk -v d=$((q1 - q0)) -v n="$n" 'BEGIN { printf "%.1f", n ? 1000 * d / n : 0 }')
    R[$run.writes]=$(awk -v d=$((w1 - w0)) -v n="$n" 'BEGIN { printf "%.2f", n ? d / n : 0 }')
}

stock_load() {
    local run=$1 src=$2 change=$3 db="mes_bench_${TAG}_$1"
    shift 3
    new_database "$db"
    [ -z "$change" ] || sql "$db" -e "$change"
    db_settle
    local d0 d1 t0 t1 s0 s1
    s0=$(server_counters)
    d0=$([ -n "$DB_SERVER_PID" ] && cpu_ticks "$DB_SERVER_PID" || echo 0)
    t0=$(now_s)
    "$@" "$db" || die "$run: $* failed"
    t1=$(now_s)
    d1=$([ -n "$DB_SERVER_PID" ] && cpu_ticks "$DB_SERVER_PID" || echo 0)
    s1=$(server_counters)
    local rows first last after
    read -r rows first last after <<<"$(sql "$db" -e "
        SELECT COUNT(*), UNIX_TIMESTAMP(MIN(stored_at)), UNIX_TIMESTAMP(MAX(stored_at)),
               SUM(stored_at > (SELECT MIN(stored_at) FROM cnc_data)) FROM cnc_data")"
    R[$run.rows]=$rows
    server_work "$run" "$rows" "$s0" "$s1"
    R[$run.rate]=$(awk -v n="$after" -v a="$first" -v b="$last" 'BEGIN { if (b > a) printf "%.0f", n / (b - a); else print 0 }')
    R[$run.wall]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    R[$run.wall_rate]=$(awk -v n="$rows" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
    R[$run.db_cpu]=$([ -n "$DB_SERVER_PID" ] && per100k $((d1 - d0)) "$rows" || echo "n/a")
    local fields=1-3
    [ "${STOCK_DATA_ONLY:-0}" = 1 ] && fields=1
    # "yes", or the tables that differ.
    R[$run.same]=$(paste -d' ' <(end_state "$db" | cut -d' ' -f"$fields" | tr ' ' '\n') \
        <(end_state "$src" | cut -d' ' -f"$fields" | tr ' ' '\n') | awk '
        BEGIN { split("cnc_data cnc_alarms cnc_status", t) }
        $1 != $2 { d = d (d ? "," : "") t[NR] }
        END { print (d ? "NO (" d ")" : "yes") }')
    sql -e "DROP DATABASE IF EXISTS \`$db\`"
    log "$run: ${R[$run.rate]} rows/s (wall ${R[$run.wall]} s), database ${R[$run.db_cpu]} CPU-s/100k, same end state: ${R[$run.same]}"
}

# One drain: RUN is a label; its database is left in DRAIN_DB.
drain_run() {
    local run=$1 dir="$WORK/$1" db="mes_bench_${TAG}_$1" topic="bench/$TAG/$1"
    local user="mes_bench_${TAG}_$1" account pw="bench-$TAG-$RANDOM" mport
    account="'$user'@'%'"
    mport=$(free_port)
    new_database "$db"
    # The collector's own account (the GRANT lines of grants.sql), so that
    # locking it leaves the bench's root sessions alone.
    USERS+=("$account")
    sql -e "CREATE USER $account IDENTIFIED BY '$pw';
        $(grep '^GRANT' grants.sql | sed "s/cnc_database\./\\\`$db\\\`./; s/'mes_collector'@'%'/$account/")
        ALTER USER $account ACCOUNT LOCK;"
    log "$run: collector with its database account locked"
    start_collector "$run" "$dir" "$topic" "$db" "$user" "$pw" "$BATCH" "$LATENCY_MS" "$mport"

    # (a) The outage: DRAIN_N messages at full speed, all into the spool.
    log "$run: spooling $DRAIN_N messages"
    "$BIN/cnc-sim" --broker "$BROKER_URI" --topic "$topic" generate --machines "$MACHINES" \
        --count "$DRAIN_N" --rate 0 --window "$WINDOW" --seed 1 >"$dir/pub.out" 2>"$dir/pub.err" \
        || die "$run: publisher failed: $(tail -3 "$dir/pub.err")"
    # Counted as received (appended to the spool).
    local spooled=0 progress_at=$SECONDS seen=-1
    while :; do
        spooled=$(live_metric "$mport" mes_messages_received_total)
        [ "${spooled:-0}" -ge "$DRAIN_N" ] && break
        if [ "${spooled:-0}" != "$seen" ]; then seen=$spooled; progress_at=$SECONDS; fi
        [ $((SECONDS - progress_at)) -lt "$STALL_SECS" ] || die "$run: only ${spooled:-0} of $DRAIN_N messages spooled"
        sleep 0.5
    done
    [ "$(sql "$db" -e 'SELECT COUNT(*) FROM cnc_data')" = 0 ] || die "$run: rows were stored with the account locked"
    R[$run.spool_rate]=$(rate_from "$dir/pub.out")

    # (b) The database comes back while live traffic goes on.
    "$BIN/cnc-sim" --broker "$BROKER_URI" --topic "$topic" generate --machines "$MACHINES" \
        --count $((TRICKLE * 3600)) --rate "$TRICKLE" --start-seq "$DRAIN_N" --seed 2 \
        >"$dir/trickle.out" 2>"$dir/trickle.err" &
    TRICKLE_PID=$!
    sleep 2
    db_settle
    local c0 d0 t_unlock s0 s1=""
    s0=$(server_counters)
    c0=$(cpu_ticks "$COLLECTOR_PID")
    d0=$([ -n "$DB_SERVER_PID" ] && cpu_ticks "$DB_SERVER_PID" || echo 0)
    t_unlock=$(now_s)
    sql -e "ALTER USER $account ACCOUNT UNLOCK"
    log "$run: account unlocked; draining, with a live trickle of $TRICKLE msg/s"
    # Every half second: time, messages received (acknowledged and spooled), spool
    # records, messages committed.
    local t rec rec_max=0 left rows=0 c1="" d1="" t_caught=""
    echo "time received spool_records committed" >"$dir/samples.txt"
    progress_at=$SECONDS seen=-1
    while :; do
        t=$(now_s)
        rec=$(live_metric "$mport" mes_messages_received_total)
        left=$(live_metric "$mport" mes_spool_records)
        # The collector's own count of committed messages (mes_batch_messages_sum),
        # not a COUNT(*) over the growing table every half second: that is work for
        # the server, on the core the drain needs, inside the drain's measurement.
        rows=$(live_metric "$mport" mes_batch_messages_sum)
        rows=${rows:-0}
        rows=${rows%.*}
        echo "$t ${rec:-?} ${left:-?} $rows" >>"$dir/samples.txt"
        if [ -z "$t_caught" ] && [ "$rows" -ge "$DRAIN_N" ]; then
            c1=$(cpu_ticks "$COLLECTOR_PID")
            d1=$([ -n "$DB_SERVER_PID" ] && cpu_ticks "$DB_SERVER_PID" || echo 0)
            t_caught=$t
            s1=$(server_counters)
            log "$run: backlog stored; the trickle goes on for $DRAIN_TAIL s"
        fi
        [ -n "$t_caught" ] && awk -v a="$t_caught" -v b="$t" -v s="$DRAIN_TAIL" 'BEGIN { exit !(b - a >= s) }' && break
        if [ "$rows" != "$seen" ]; then seen=$rows; progress_at=$SECONDS; fi
        [ $((SECONDS - progress_at)) -lt "$STALL_SECS" ] || die "$run: no progress for $STALL_SECS s at $rows rows"
        kill -0 "$COLLECTOR_PID" 2>/dev/null || die "$run: the collector exited"
        kill -0 "$TRICKLE_PID" 2>/dev/null || die "$run: the trickle publisher exited: $(tail -2 "$dir/trickle.err")"
        sleep 0.5
    done
    stop_pid "$TRICKLE_PID"
    TRICKLE_PID=""
    # Whatever the trickle had sent is stored before the counts.
    local stable=0
    for _ in $(seq 1 60); do
        rec=$(live_metric "$mport" mes_messages_received_total)
        left=$(live_metric "$mport" mes_spool_records)
        rows=$(stored_count "$db")
        if [ "${left:-1}" = 0 ] && [ "$rows" = "${rec:-}" ]; then
            stable=$((stable + 1))
            [ "$stable" -ge 3 ] && break
        else
            stable=0
        fi
        sleep 0.5
    done
    curl -sf --max-time 5 "http://127.0.0.1:$mport/metrics" >"$dir/metrics.txt" 2>/dev/null || true
    thread_cpu "$COLLECTOR_PID" >"$dir/threads.txt"
    stop_pid "$COLLECTOR_PID"
    COLLECTOR_PID=""
    # The collector's account of its commits, the trickle after the drain included.
    commit_figures "$run" "$dir/metrics.txt"
    R[$run.threads]=$(head -3 "$dir/threads.txt" | awk -F'\t' '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')

    # The drain: from the first commit after the unlock to the commit of the last
    # spooled message (seq < DRAIN_N; the spool is first in, first out, so the trickle
    # follows it).
    local stats
    stats=$(sql "$db" -e "
        WITH d AS (SELECT stored_at, CAST(JSON_EXTRACT(json_data, '\$.seq') AS UNSIGNED) AS seq,
                          CAST(JSON_EXTRACT(json_data, '\$.sent_at_us') AS SIGNED) AS sent FROM cnc_data)
        SELECT COUNT(*), COUNT(DISTINCT seq), (SELECT COUNT(*) FROM dead_letters),
               SUM(seq < $DRAIN_N),
               UNIX_TIMESTAMP(MIN(stored_at)),
               UNIX_TIMESTAMP(MAX(CASE WHEN seq < $DRAIN_N THEN stored_at END)),
               SUM(seq < $DRAIN_N AND stored_at > (SELECT MIN(stored_at) FROM cnc_data))
        FROM d")
    local total distinct dead backlog first last after_first
    read -r total distinct dead backlog first last after_first <<<"$stats"
    R[$run.rows]=$total
    R[$run.received]=$rec
    R[$run.trickle_rows]=$((total - backlog))
    R[$run.delay]=$(awk -v a="$t_unlock" -v b="$first" 'BEGIN { printf "%.1f", b - a }')
    R[$run.secs]=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%.2f", b - a }')
    R[$run.rate]=$(awk -v n="$after_first" -v a="$first" -v b="$last" 'BEGIN { if (b > a) printf "%.0f", n / (b - a); else print 0 }')
    R[$run.cpu]=$(per100k $((c1 - c0)) "$DRAIN_N")
    server_work "$run" "$DRAIN_N" "$s0" "$s1"
    R[$run.db_cpu]=$([ -n "$DB_SERVER_PID" ] && per100k $((d1 - d0)) "$DRAIN_N" || echo "n/a")
    R[$run.ok]=$([ "$backlog" = "$DRAIN_N" ] && [ "$distinct" = "$total" ] && [ "$dead" = 0 ] \
        && [ "$total" = "$rec" ] && echo yes || echo NO)
    R[$run.dead]=$dead
    # Live traffic while draining: what the collector took (received = acknowledged
    # and spooled) between the unlock and the end of the backlog, against the
    # trickle's rate.
    R[$run.live_rate]=$(awk -v a="$t_unlock" -v b="$t_caught" '
        NR > 1 && $1 >= a && $1 <= b && $2 != "?" { if (t0 == "") { t0 = $1; n0 = $2 } t1 = $1; n1 = $2 }
        END { if (t1 > t0) printf "%.0f", (n1 - n0) / (t1 - t0); else print 0 }' "$dir/samples.txt")
    R[$run.spool_max]=$(awk 'NR > 1 && $3 != "?" && $3 > m { m = $3 } END { print m + 0 }' "$dir/samples.txt")
    # Commit latency of the trickle once the backlog is gone (sent a second or more
    # after the last spooled message was committed).
    local lat
    lat=$(sql "$db" -e "
        WITH l AS (
            SELECT (CAST(UNIX_TIMESTAMP(stored_at) * 1000000 AS SIGNED)
                    - CAST(JSON_EXTRACT(json_data, '\$.sent_at_us') AS SIGNED)) / 1000 AS ms
            FROM cnc_data
            WHERE CAST(JSON_EXTRACT(json_data, '\$.seq') AS UNSIGNED) >= $DRAIN_N
              AND CAST(JSON_EXTRACT(json_data, '\$.sent_at_us') AS SIGNED) >= ($last + 1) * 1000000),
        r AS (SELECT ms, ROW_NUMBER() OVER (ORDER BY ms) AS k, COUNT(*) OVER () AS n FROM l)
        SELECT COUNT(*), MAX(CASE WHEN k = CEIL(0.50 * n) THEN ms END),
               MAX(CASE WHEN k = CEIL(0.99 * n) THEN ms END), MAX(ms)
        FROM r")
    local ln p50 p99 pmax
    read -r ln p50 p99 pmax <<<"$lat"
    R[$run.live_n]=$ln
    R[$run.live_p50]=$(fmt0 "${p50/NULL/0}") R[$run.live_p99]=$(fmt0 "${p99/NULL/0}") R[$run.live_max]=$(fmt0 "${pmax/NULL/0}")
    log "$run: ${R[$run.rate]} msg/s from the first commit (${R[$run.delay]} s after the unlock) over ${R[$run.secs]} s; live ${R[$run.live_rate]} msg/s taken while draining; exactly once: ${R[$run.ok]}"
    DRAIN_DB=$db
}

drain_mode() {
    [[ "$DRAIN_N$TRICKLE$DRAIN_TAIL$DRAIN_REPS$ROWCOST_REPS" =~ ^[0-9]+$ ]] \
        || die "BENCH_DRAIN_N, _TRICKLE, _TAIL, _REPS and BENCH_ROWCOST_REPS must be whole numbers"
    [ "$TRICKLE" -gt 0 ] || die "BENCH_DRAIN_TRICKLE must be > 0 (the live traffic during the drain)"
    [ "$DRAIN_REPS" -gt 0 ] && [ "$ROWCOST_REPS" -gt 0 ] || die "BENCH_DRAIN_REPS and BENCH_ROWCOST_REPS must be > 0"
    if [ "${BENCH_SKIP_BUILD:-0}" != 1 ] && [ "$ROWCOST" = 1 ]; then
        cargo build --release -p mes-collector --example protocol_ab --quiet
    fi
    # The commit measured: the binaries are taken as they are now.
    local rev
    rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || rev="$rev (with uncommitted changes)"
    start_broker
    log "private broker $BROKER_URI"

    # Drains and stock loads alternate, each stock load making the end state of the
    # drain before it: the machine is shared and noisy, so the ratio is taken per pair.
    local i drains=() stocks=() ratios=()
    for i in $(seq 1 "$DRAIN_REPS"); do
        [ -z "${DRAIN_DB:-}" ] || sql -e "DROP DATABASE IF EXISTS \`$DRAIN_DB\`"
        drain_run "drain$i"
        log "stock client: writing drain$i's end state as SQL"
        stock_sql "$DRAIN_DB" "$BATCH" >"$WORK/stock.sql"
        stock_load "stock$i" "$DRAIN_DB" "" load_file "$WORK/stock.sql"
        R[drain$i.ratio]=$(fmt2 "$(div "${R[drain$i.rate]}" "${R[stock$i.rate]}")")
        drains+=("drain$i")
        stocks+=("stock$i")
        ratios+=("${R[drain$i.ratio]}")
    done

    # What each part of a row costs the server: the stock load of the last drain's end
    # state, one change at a time, each on a fresh database, in rounds.
    local variants=() per round v
    if [ "$ROWCOST" = 1 ]; then
        variants=(base nocheck noindex rows256 rows64 rows16 rows1 unmerged)
        for per in 256 64 16 1; do stock_sql "$DRAIN_DB" "$per" >"$WORK/stock$per.sql"; done
        STOCK_UNMERGED=1 stock_sql "$DRAIN_DB" "$BATCH" >"$WORK/stockunmerged.sql"
        if [ "$(sql -e 'SELECT @@local_infile')" = 1 ]; then
            mkdir -p "$WORK/loaddata"
            stock_sql "$DRAIN_DB" "$BATCH" "$WORK/loaddata" >"$WORK/stockld.sql"
            variants+=(loaddata)
        else
            log "the server has local_infile OFF: LOAD DATA LOCAL INFILE not measured"
        fi
        if [ -x "$BIN/examples/protocol_ab" ]; then
            variants+=(text binary)
        else
            log "no $BIN/examples/protocol_ab: binary against text protocol not measured"
        fi
        # BENCH_ROWCOST_VARIANTS: a subset, in the order given.
        [ -z "${BENCH_ROWCOST_VARIANTS:-}" ] || read -r -a variants <<<"$BENCH_ROWCOST_VARIANTS"
        for round in $(seq 1 "$ROWCOST_REPS"); do
            for v in "${variants[@]}"; do
                case $v in
                base) stock_load "${v}_r$round" "$DRAIN_DB" "" load_file "$WORK/stock.sql" ;;
                nocheck)
                    stock_load "${v}_r$round" "$DRAIN_DB" \
                        "ALTER TABLE cnc_data MODIFY json_data LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL" \
                        load_file "$WORK/stock.sql"
                    ;;
                noindex)
                    stock_load "${v}_r$round" "$DRAIN_DB" "ALTER TABLE cnc_data DROP KEY cnc_data_cnc_time" \
                        load_file "$WORK/stock.sql"
                    ;;
                rows*) stock_load "${v}_r$round" "$DRAIN_DB" "" load_file "$WORK/stock${v#rows}.sql" ;;
                loaddata) stock_load "${v}_r$round" "$DRAIN_DB" "" load_file "$WORK/stockld.sql" ;;
                unmerged) stock_load "${v}_r$round" "$DRAIN_DB" "" load_file "$WORK/stockunmerged.sql" ;;
                # Binary against text protocol, through the collector's driver: cnc_data
                # rows only, so compared with each other.
                text | binary) STOCK_DATA_ONLY=1 stock_load "${v}_r$round" "$DRAIN_DB" "" load_protocol "$v" "$DRAIN_DB" ;;
                *) die "BENCH_ROWCOST_VARIANTS: no variant $v (base nocheck noindex rows256 rows64 rows16 rows1 unmerged loaddata text binary)" ;;
                esac
            done
        done
        for v in "${variants[@]}"; do
            local rates=() cpus=() same=yes
            for round in $(seq 1 "$ROWCOST_REPS"); do
                rates+=("${R[${v}_r$round.rate]}")
                cpus+=("${R[${v}_r$round.db_cpu]}")
                [ "${R[${v}_r$round.same]}" = yes ] || same=${R[${v}_r$round.same]}
            done
            R[$v.rate]=$(median "${rates[@]}")
            R[$v.rates]=$(IFS=/; echo "${rates[*]}")
            R[$v.db_cpu]=$(median "${cpus[@]}")
            R[$v.db_cpus]=$(IFS=/; echo "${cpus[*]}")
            R[$v.same]=$same
        done
    fi

    med() { # key runs...: the median of R[run.key]
        local key=$1 vals=() r
        shift
        for r in "$@"; do vals+=("${R[$r.$key]}"); done
        median "${vals[@]}"
    }
    row() { # label key runs...: one row with each run's value and the median
        local label=$1 key=$2 cells="" r
        shift 2
        for r in "$@"; do cells+=" ${R[$r.$key]} |"; done
        printf '| %s |%s **%s** |\n' "$label" "$cells" "$(med "$key" "$@")"
    }
    {
        echo "## Catching up after an outage ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, MySQL server $(sql -e 'SELECT VERSION()'))"
        echo
        echo "Collector $("$BIN/mes-collector" --version | head -1), commit $rev;"
        echo "$DRAIN_N messages spooled per drain, $MACHINES machines, batch $BATCH messages / latency budget $LATENCY_MS ms, $WRITERS writer(s) (batch.writers), spool fsync $SPOOL_FSYNC,"
        echo "live trickle $TRICKLE msg/s during each drain and $DRAIN_TAIL s after it."
        echo
        printf '| drain and stock client, alternating |'
        for i in $(seq 1 "$DRAIN_REPS"); do printf ' run %s |' "$i"; done
        printf ' median |\n|---|'
        for i in $(seq 1 "$DRAIN_REPS"); do printf -- '---:|'; done
        printf -- '---:|\n'
        row "messages spooled: publisher's rate during the outage, msg/s" spool_rate "${drains[@]}"
        row "start delay: unlock to first commit, s (reconnect back-off)" delay "${drains[@]}"
        row "drain: first commit to the last spooled message's commit, s" secs "${drains[@]}"
        row "**drain rate, msg/s**" rate "${drains[@]}"
        row "**stock client, same end state, rows/s** (span of stored_at, as the drain)" rate "${stocks[@]}"
        row "stock client, rows / wall time of the load, rows/s" wall_rate "${stocks[@]}"
        row "**ratio drain / stock client**" ratio "${drains[@]}"
        row "batches committed (drain and trickle)" batches "${drains[@]}"
        row "mean messages per batch" mean_batch "${drains[@]}"
        row "mean commit time per batch, ms (mes_commit_seconds)" commit_ms "${drains[@]}"
        row "of which committing, s (sum of mes_commit_seconds)" commit_s "${drains[@]}"
        row "collector CPU s per 100k messages while draining" cpu "${drains[@]}"
        row "database server CPU s per 100k rows: drain" db_cpu "${drains[@]}"
        row "database server CPU s per 100k rows: stock client" db_cpu "${stocks[@]}"
        row "server statements per 1,000 messages: drain (Questions)" stmts "${drains[@]}"
        row "server statements per 1,000 messages: stock client" stmts "${stocks[@]}"
        row "server row writes per message: drain (Handler_write)" writes "${drains[@]}"
        row "server row writes per message: stock client" writes "${stocks[@]}"
        row "live messages taken (acknowledged and spooled) while draining, msg/s" live_rate "${drains[@]}"
        row "most spooled records seen while draining (mes_spool_records)" spool_max "${drains[@]}"
        row "live messages sent once the backlog was gone" live_n "${drains[@]}"
        row "their latency p50, ms" live_p50 "${drains[@]}"
        row "their latency p99, ms" live_p99 "${drains[@]}"
        row "their latency max, ms" live_max "${drains[@]}"
        row "rows stored (spooled + live)" rows "${drains[@]}"
        echo
        printf '| exactly once and the same end state |'
        for i in $(seq 1 "$DRAIN_REPS"); do printf ' run %s |' "$i"; done
        printf '\n|---|'
        for i in $(seq 1 "$DRAIN_REPS"); do printf -- ':--:|'; done
        printf '\n| drain: rows = received = distinct seq, no dead letters |'
        for r in "${drains[@]}"; do printf ' %s |' "${R[$r.ok]}"; done
        printf '\n| stock client: same cnc_data, cnc_alarms and cnc_status as the drain |'
        for r in "${stocks[@]}"; do printf ' %s |' "${R[$r.same]}"; done
        echo
        echo
        for r in "${drains[@]}"; do echo "Busiest collector threads in $r (CPU s, whole run): ${R[$r.threads]}."; done
        if [ ${#variants[@]} -gt 0 ]; then
            echo
            echo "What a row costs the server: the stock load of the last drain's end state, one change at a time,"
            echo "each on a fresh database; $ROWCOST_REPS rounds over all variants, median."
            echo
            echo "| stock load of the same end state | rows/s (each round) | median | vs baseline (binary: vs text) | server CPU s/100k rows (each round) | median | same end state |"
            echo "|---|---:|---:|---:|---:|---:|:--:|"
            local label base
            for v in "${variants[@]}"; do
                case $v in
                base) label="baseline: $BATCH rows per INSERT, text protocol, schema as database.sql" ;;
                nocheck) label="json_data LONGTEXT without the JSON type's CHECK (json_valid)" ;;
                noindex) label="cnc_data without its secondary index cnc_data_cnc_time" ;;
                loaddata) label="cnc_data by LOAD DATA LOCAL INFILE (one file per batch)" ;;
                unmerged) label="cnc_status not merged: every message's row, in one statement per batch (as the collector sends them)" ;;
                rows*) label="${v#rows} rows per INSERT" ;;
                text) label="cnc_data rows only, $BATCH per INSERT, text protocol (protocol_ab: the collector's driver)" ;;
                binary) label="the same, binary protocol (prepared, as the collector writes)" ;;
                esac
                base=base
                [ "$v" = binary ] && base=text
                echo "| $label | ${R[$v.rates]} | ${R[$v.rate]} | $(fmt2 "$(div "${R[$v.rate]}" "${R[$base.rate]}")") | ${R[$v.db_cpus]} | ${R[$v.db_cpu]} | ${R[$v.same]} |"
            done
        fi
    } | tee "$OUT/drain.md"
    for r in "${drains[@]}"; do [ "${R[$r.ok]}" = yes ] || die "$r lost or doubled messages"; done
    for r in "${stocks[@]}"; do [ "${R[$r.same]}" = yes ] || die "$r did not make its drain's end state"; done
    for v in "${variants[@]}"; do [ "${R[$v.same]}" = yes ] || die "the stock load $v did not make the drain's end state"; done
}

if [ "${BENCH_MODE:-}" = drain ]; then
    drain_mode
    exit 0
fi

if [ "${BENCH_MODE:-}" = group ]; then
    start_broker
    log "private broker $BROKER_URI (max_queued_messages 0, max_inflight_messages $MAX_INFLIGHT)"
    SIZES=${BENCH_GROUP_SIZES:-1 2 3}
    for k in $SIZES; do group_run "group$k" "$k"; done
    {
        echo "## Collectors in one shared subscription ($N messages, $MACHINES machines, $(nproc) cores, $(date -u +%Y-%m-%d))"
        echo
        echo "| collectors | msg/s end to end | each collector, CPU-s/100k | all collectors | broker | database server | publisher | stored by each | exactly once |"
        echo "|---|---|---|---|---|---|---|---|---|"
        for k in $SIZES; do
            r="group$k"
            echo "| $k | ${R[$r.rate]} | ${R[$r.cpus]} | ${R[$r.cpu_sum]} | ${R[$r.broker_cpu]} | ${R[$r.db_cpu]} | ${R[$r.pub_cpu]} | ${R[$r.shares]} | ${R[$r.ok]} |"
        done
    } | tee "$OUT/group.md"
    for k in $SIZES; do [ "${R[group$k.ok]}" = yes ] || die "group$k lost or doubled messages"; done
    exit 0
fi

# ---------------------------------------------------------------------------
# The runs

start_broker
log "private broker $BROKER_URI (max_queued_messages 0, max_inflight_messages $MAX_INFLIGHT, persistence in $WORK/broker)"

RAW=() COL=() RATIO=()
for i in $(seq 1 "$REPS"); do
    raw_run "raw$i"
    collector_run "col$i" "$N" "$BATCH" 0
    RAW+=("${R[raw$i.rate]}")
    COL+=("${R[col$i.rate]}")
    RATIO+=("$(fmt2 "$(div "${R[col$i.rate]}" "${R[raw$i.rate]}")")")
done
collector_run unbatched "$UNBATCHED_N" 1 0
# The floor under (4)'s collector CPU: a subscriber that only counts, at the same rate.
raw_run rawsteady "$LATENCY_N" "$RATE"
STEADY=()
for b in $STEADY_BUDGETS; do
    collector_run "steady$b" "$LATENCY_N" "$BATCH" "$RATE" "$b"
    STEADY+=("steady$b")
done

if [ "${BENCH_PERF:-0}" = 1 ]; then
    if command -v perf >/dev/null; then
        PERF_THIS=1 collector_run perf "$N" "$BATCH" 0
        {
            echo "# Whole machine during the run, by thread name (swapper = idle)"
            perf report -i "$OUT/perf.data" --stdio --no-children --sort comm -g none --percent-limit 0.5 2>/dev/null
            echo "# The collector (pid ${R[perf.pid]}), by thread and symbol"
            perf report -i "$OUT/perf.data" --stdio --no-children --pid "${R[perf.pid]}" --sort comm,dso,sym \
                -g none --percent-limit 0.5 2>/dev/null
            if [ -n "$DB_SERVER_PID" ]; then
                echo "# The database server (pid $DB_SERVER_PID), by symbol"
                perf report -i "$OUT/perf.data" --stdio --no-children --pid "$DB_SERVER_PID" --sort dso,sym \
                    -g none --percent-limit 0.5 2>/dev/null
            fi
        } | grep -v '^$' >"$OUT/perf.txt" || true
        log "perf profile of the collector: $OUT/perf.txt (perf.data beside it)"
    else
        log "BENCH_PERF=1 but perf is not installed (apt-get install linux-perf); skipped"
    fi
fi

# ---------------------------------------------------------------------------
# The table

runs_row() { # label key runs...: one table row with each run's value and the median
    local label=$1 key=$2
    shift 2
    local vals=() cells=""
    for r in "$@"; do
        vals+=("${R[$r.$key]}")
        cells+=" ${R[$r.$key]} |"
    done
    printf '| %s |%s **%s** |\n' "$label" "$cells" "$(median "${vals[@]}")"
}

cols=() raws=()
for i in $(seq 1 "$REPS"); do cols+=("col$i"); raws+=("raw$i"); done
for i in $(seq 1 "$REPS"); do
    R[col$i.ratio]=${RATIO[$((i - 1))]}
    R[col$i.cpu_over_count]=$(fmt2 "$(div "${R[col$i.cpu]}" "${R[raw$i.count_cpu]}")")
done
for r in "${STEADY[@]}"; do
    R[$r.cpu_over_count]=$(fmt2 "$(div "${R[$r.cpu]}" "${R[rawsteady.count_cpu]}")")
done

COL_MED=$(median "${COL[@]}")
RAW_MED=$(median "${RAW[@]}")
RATIO_MED=$(median "${RATIO[@]}")
SPEEDUP=$(div "$COL_MED" "${R[unbatched.rate]}")

ALL_OK=yes
for r in "${raws[@]}" rawsteady "${cols[@]}" unbatched "${STEADY[@]}"; do
    [ "${R[$r.ok]}" = yes ] || ALL_OK=NO
done

db_version=$(sql -e 'SELECT VERSION()')
head_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || head_rev="$head_rev (with uncommitted changes)"
busiest() { head -4 "$1" | awk -F'\t' '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }'; }
busiest=$(busiest "${R[col$REPS.threads]}")
busiest_steady=$(busiest "${R[${STEADY[0]}.threads]}")

{
    echo "## Benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "Machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), Linux $(uname -r)."
    echo "Versions: $("$BIN/mes-collector" --version | head -1), commit $head_rev; $(rustc --version 2>/dev/null || echo rustc ?);"
    echo "Mosquitto $("$MOSQUITTO" -h 2>/dev/null | sed -n 's/^mosquitto version //p' | head -1); MySQL server $db_version."
    echo "Settings: N=$N messages, $MACHINES machines, batch $BATCH messages / latency budget ${LATENCY_MS} ms, $WRITERS writer(s), spool fsync $SPOOL_FSYNC, RUST_LOG=$COLLECTOR_LOG,"
    echo "publisher window $WINDOW, private Mosquitto with max_queued_messages 0 and max_inflight_messages $MAX_INFLIGHT."
    if [ "$ISOLATE" = 1 ]; then
        echo "Plugins: CNCTypeA and CNCTypeB isolated (BENCH_ISOLATE=1, plugins.isolate); collector CPU includes its runner processes."
    fi
    echo
    printf '| %s |' "(1) and (2), alternating"
    for i in $(seq 1 "$REPS"); do printf ' run %s |' "$i"; done
    printf ' median |\n|---|'
    for _ in $(seq 1 "$REPS"); do printf -- '---:|'; done
    printf -- '---:|\n'
    runs_row "(1) raw broker path: msg/s (cnc-sim count, first to last message)" rate "${raws[@]}"
    runs_row "(2) collector path: msg/s (first sent_at_us to last stored_at)" rate "${cols[@]}"
    runs_row "(2) / (1)" ratio "${cols[@]}"
    runs_row "(2) publisher's rate while the collector took the messages, msg/s" pub_rate "${cols[@]}"
    runs_row "(2) sink's rate: rows / (last stored_at - first stored_at), msg/s" db_rate "${cols[@]}"
    runs_row "(2) batches committed" batches "${cols[@]}"
    runs_row "(2) mean commit time per batch, ms (collector's mes_commit_seconds)" commit_ms "${cols[@]}"
    runs_row "(2) end-to-end time, s" secs "${cols[@]}"
    runs_row "(2) of which MySQL was committing batches (sum of mes_commit_seconds), s" commit_s "${cols[@]}"
    runs_row "(2) latency p50, ms (of a backlog at full speed, not a steady state)" p50 "${cols[@]}"
    runs_row "(2) latency max, ms" max "${cols[@]}"
    runs_row "(2) collector peak RSS (VmHWM), MiB" rss_mib "${cols[@]}"
    runs_row "(2) collector CPU s per 100k messages" cpu "${cols[@]}"
    runs_row "(2) collector CPU over (1) counter CPU (a QoS 1 subscriber that only counts)" cpu_over_count "${cols[@]}"
    runs_row "(2) broker CPU s per 100k messages" broker_cpu "${cols[@]}"
    runs_row "(2) database server CPU s per 100k messages (server-wide)" db_cpu "${cols[@]}"
    runs_row "(2) publisher CPU s per 100k messages" pub_cpu "${cols[@]}"
    runs_row "(2) CPU s per 100k messages, whole path (publisher + broker + collector + database)" path_cpu "${cols[@]}"
    runs_row "(1) broker CPU s per 100k messages" broker_cpu "${raws[@]}"
    runs_row "(1) publisher CPU s per 100k messages" pub_cpu "${raws[@]}"
    runs_row "(1) counter CPU s per 100k messages" count_cpu "${raws[@]}"
    runs_row "(1) CPU s per 100k messages, whole path (publisher + broker + counter)" path_cpu "${raws[@]}"
    echo
    echo "| other runs | value |"
    echo "|---|---:|"
    echo "| (3) batching off (batch.max_messages 1), $UNBATCHED_N messages: msg/s | ${R[unbatched.rate]} |"
    echo "| speed-up of (2) (median) over (3) | **$(fmt1 "$SPEEDUP")x** |"
    echo "| (3) collector CPU s per 100k messages / peak RSS MiB | ${R[unbatched.cpu]} / ${R[unbatched.rss_mib]} |"
    echo "| (3) database server CPU s per 100k messages | ${R[unbatched.db_cpu]} |"
    echo "| (4) a subscriber that only counts (cnc-sim count), steady $RATE msg/s, $LATENCY_N messages: CPU s per 100k messages | **${R[rawsteady.count_cpu]}** |"
    for r in "${STEADY[@]}"; do
        b=${r#steady}
        echo "| (4) steady $RATE msg/s for $DURATION s, latency budget $b ms ($LATENCY_N messages; publisher achieved ${R[$r.pub_rate]} msg/s): latency p50 / p99 / max | **${R[$r.p50]} / ${R[$r.p99]} / ${R[$r.max]} ms** |"
        echo "| (4) budget $b ms: collector CPU s per 100k messages / peak RSS MiB | **${R[$r.cpu]}** / ${R[$r.rss_mib]} |"
        echo "| (4) budget $b ms: collector CPU over the counting subscriber's | ${R[$r.cpu_over_count]} |"
        echo "| (4) budget $b ms: database server CPU s per 100k messages | **${R[$r.db_cpu]}** |"
        echo "| (4) budget $b ms: batches committed / mean commit time, ms | ${R[$r.batches]} / ${R[$r.commit_ms]} |"
    done
    echo
    echo "Busiest collector threads (CPU s) in (2) run $REPS: $busiest;"
    echo "in (4) with budget ${STEADY[0]#steady} ms: $busiest_steady."
    echo
    echo "Nothing lost: **$ALL_OK**"
    echo
    echo "| run | published | received / rows | distinct seq | dead letters | ok |"
    echo "|---|---:|---:|---:|---:|:--:|"
    for r in "${raws[@]}" rawsteady; do
        echo "| $r (count) | ${R[$r.published]} | ${R[$r.received]} | - | - | ${R[$r.ok]} |"
    done
    for r in "${cols[@]}" unbatched "${STEADY[@]}"; do
        echo "| $r (collector) | ${R[$r.published]} | ${R[$r.rows]} | ${R[$r.distinct]} | ${R[$r.dead]} | ${R[$r.ok]} |"
    done
} >"$OUT/results.md"

echo
cat "$OUT/results.md"
echo
log "written to $OUT/results.md"
[ "$ALL_OK" = yes ] || die "messages were lost or duplicated (table above)"
