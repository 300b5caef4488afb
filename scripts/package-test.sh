#!/usr/bin/env bash
# The Debian package on this machine: install version X, run the service, upgrade to
# X+1 while a stream of messages goes on, check every message is stored exactly once
# and the local configuration edits survive, then remove and purge.
#
# It changes the machine for its duration (the package, the system user
# mes-collector, /usr/sbin/policy-rc.d, /run/systemd/system, a database and a user of
# its own) and puts everything back on success and on failure. Run as root, on a
# machine where systemd is not PID 1 (a container, CI); scripts/test.sh runs it with
# CI=true or MES_PACKAGE_TEST=1. How it runs the service, and what differs from
# systemd, is in docs/install.md ("How the package test works").
#
#   MES_PACKAGE_TEST_RATE     messages per second (default 200)
#   MES_PACKAGE_TEST_SECONDS  length of the stream (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

RATE=${MES_PACKAGE_TEST_RATE:-200}
STREAM_SECS=${MES_PACKAGE_TEST_SECONDS:-30}
COUNT=$((RATE * STREAM_SECS))
UPGRADE_AFTER=$((STREAM_SECS / 5)) # seconds of stream before the upgrade starts
MACHINES=4

PKG=mes-collector
UNIT=mes-collector.service
ETC=/etc/mes-collector
STANDIN_STATE=/run/mes-collector-standin
POLICY=/usr/sbin/policy-rc.d
POLICY_SAVED=/usr/sbin/policy-rc.d.mes-package-test
TAG="pkgtest$$"
DB="mes_$TAG"
DB_USER="$TAG"
DB_PASSWORD=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
TOPIC="mes-$TAG/CNC"
CLIENT_ID="mes-$TAG"

[ "$(id -u)" -eq 0 ] || die "run as root: it installs a package and creates a system user"
if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
    die "systemd is PID 1 here: this test would drive the real service manager; run it in a container or CI"
fi
if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'installed\|config-files'; then
    die "$PKG is installed on this machine; the test installs and purges it: remove it first (apt-get purge $PKG)"
fi

prepare

WORK=$(mktemp -d /tmp/mes-package-test.XXXXXX)
KEEP=/tmp/mes-package-test-failed
# apt runs dpkg, and so the maintainer scripts, with a PATH of its own (DPkg::Path):
# the systemctl stand-in goes first there.
DPKG_PATH="$WORK/bin:$(apt-config shell P DPkg::Path | sed -n "s/^P='\(.*\)'$/\1/p")"
BROKER_PID=""
SIM_PID=""
WATCH_PID=""
CREATED_RUN_SYSTEMD=false
USER_EXISTED=false
getent passwd mes-collector >/dev/null && USER_EXISTED=true

sql() { mariadb -h127.0.0.1 -uroot -N -B "$@"; }
now() { date +%s.%3N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }
service_pid() { pgrep -o -u mes-collector -x mes-collector || true; }

cleanup() {
    local rc=$?
    set +e
    log "cleaning up"
    [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null
    [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null
    if [ $rc -ne 0 ]; then
        # What a failure leaves to look at: apt's output, the service's, the stand-in's.
        rm -rf "$KEEP" && mkdir -p "$KEEP"
        cp -r "$WORK/apt.log" "$WORK/sim.out" "$WORK/sim.err" "$WORK/watch" "$STANDIN_STATE" "$KEEP/" 2>/dev/null
        echo "logs kept in $KEEP; last lines of the service's output:" >&2
        tail -n 20 "$STANDIN_STATE/service.log" >&2 2>/dev/null
    fi
    if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'installed\|config-files'; then
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq -o DPkg::Lock::Timeout=300 \
            -o DPkg::Path="$DPKG_PATH" "$PKG" >>"$WORK/apt.log" 2>&1
    fi
    # In case the package's prerm could not stop it.
    [ -x "$WORK/bin/systemctl" ] && "$WORK/bin/systemctl" stop "$UNIT"
    [ -n "$BROKER_PID" ] && { kill "$BROKER_PID" 2>/dev/null; wait "$BROKER_PID" 2>/dev/null; }
    sql -e "DROP DATABASE IF EXISTS \`$DB\`; DROP USER IF EXISTS '$DB_USER'@'%';" 2>/dev/null
    restore_policy
    $CREATED_RUN_SYSTEMD && rmdir /run/systemd/system 2>/dev/null
    if ! $USER_EXISTED && getent passwd mes-collector >/dev/null; then
        userdel mes-collector 2>/dev/null
        getent group mes-collector >/dev/null && groupdel mes-collector 2>/dev/null
    fi
    restore_manifest
    rm -rf "$WORK" "$STANDIN_STATE"
    if [ $rc -eq 0 ]; then log "package test passed"; else log "package test FAILED"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

restore_policy() {
    if [ -e "$POLICY_SAVED" ]; then
        mv -f "$POLICY_SAVED" "$POLICY"
    elif grep -qs 'mes-collector package test' "$POLICY"; then
        rm -f "$POLICY"
    fi
}

restore_manifest() {
    if [ -f "$WORK/Cargo.toml.orig" ]; then
        cp "$WORK/Cargo.toml.orig" host/Cargo.toml
        cp "$WORK/Cargo.lock.orig" Cargo.lock
        rm -f "$WORK/Cargo.toml.orig" "$WORK/Cargo.lock.orig"
    fi
}

apt_install() { # what...: apt-get as an administrator would run it, output to apt.log
    echo "+ apt-get $*" >>"$WORK/apt.log"
    DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300 \
        -o DPkg::Path="$DPKG_PATH" \
        "$@" >>"$WORK/apt.log" 2>&1 \
        || { tail -n 30 "$WORK/apt.log" >&2; fail "apt-get $* failed (whole output in the log above)"; }
}

wait_log() { # text from_line timeout_secs: waits for the service to log text after line from_line
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt $deadline ]; do
        tail -n "+$2" "$STANDIN_STATE/service.log" 2>/dev/null | grep -q "$1" && return 0
        sleep 0.2
    done
    fail "the service did not log \"$1\" within $3 s"
}


stats() { # rows distinct_seq min_seq max_seq
    sql "$DB" -e "SELECT COUNT(*), COUNT(DISTINCT JSON_EXTRACT(json_data, '\$.seq')),
                  IFNULL(MIN(CAST(JSON_EXTRACT(json_data, '\$.seq') AS SIGNED)), -1),
                  IFNULL(MAX(CAST(JSON_EXTRACT(json_data, '\$.seq') AS SIGNED)), -1) FROM cnc_data"
}

# ---------------------------------------------------------------------------------
# Build X and X+1.

if [ -n "${MES_PACKAGE_TEST_DEBS:-}" ]; then
    # Packages built before by this script (it prints their paths), to run it again.
    read -r deb_x deb_x1 <<<"$MES_PACKAGE_TEST_DEBS"
else
    # cargo-deb clears target/debian of older versions: X and X+1 are kept here.
    keep_debs=target/package-test
    rm -rf "$keep_debs" && mkdir -p "$keep_debs"
    log "building version X (scripts/package.sh)"
    t0=$SECONDS
    deb_x=$(bash scripts/package.sh | tail -n 1)
    cp "$deb_x" "$keep_debs/"
    deb_x="$keep_debs/$(basename "$deb_x")"
    log "built $(basename "$deb_x") in $((SECONDS - t0)) s"

    # X+1: the same source with the crate's patch version raised, so that the binaries
    # say the new version; cargo recompiles the mes-collector crate only (the plugins
    # are unchanged and packed again as they are).
    cp host/Cargo.toml "$WORK/Cargo.toml.orig"
    cp Cargo.lock "$WORK/Cargo.lock.orig"
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' host/Cargo.toml | head -n 1)
    next=$(awk -F. -v OFS=. '{ $3 = $3 + 1; print }' <<<"$version")
    sed -i "0,/^version = \"$version\"$/s//version = \"$next\"/" host/Cargo.toml
    log "building version X+1 ($version -> $next)"
    t0=$SECONDS
    deb_x1=$(bash scripts/package.sh | tail -n 1)
    cp "$deb_x1" "$keep_debs/"
    deb_x1="$keep_debs/$(basename "$deb_x1")"
    restore_manifest
    log "built $(basename "$deb_x1") in $((SECONDS - t0)) s"
    echo "packages (MES_PACKAGE_TEST_DEBS to test them again): $deb_x $deb_x1"
fi
cp "$deb_x" "$deb_x1" "$WORK/"
deb_x="$WORK/$(basename "$deb_x")"
deb_x1="$WORK/$(basename "$deb_x1")"
version_x=$(dpkg-deb -f "$deb_x" Version)
version_x1=$(dpkg-deb -f "$deb_x1" Version)
dpkg --compare-versions "$version_x1" gt "$version_x" || fail "X+1 ($version_x1) is not newer than X ($version_x)"

# ---------------------------------------------------------------------------------
# The machine as dpkg's maintainer scripts expect to find it under systemd.

mkdir -p "$WORK/bin"
install -m 0755 scripts/systemctl-standin "$WORK/bin/systemctl"
export PATH="$WORK/bin:$PATH"
rm -rf "$STANDIN_STATE"
if [ ! -d /run/systemd/system ]; then
    mkdir -p /run/systemd/system
    CREATED_RUN_SYSTEMD=true
fi
# policy-rc.d decides whether maintainer scripts may start services (in containers it
# usually says no to all). For the test: no to this unit until it is configured (the
# default configuration's broker is this machine's, where its client id may be
# someone else's), yes after; the old answer for other units. Every question is logged.
restore_policy # a previous run killed before its clean-up
[ -e "$POLICY" ] && mv "$POLICY" "$POLICY_SAVED"
cat >"$POLICY" <<EOF
#!/bin/sh
# Written by the mes-collector package test (scripts/package-test.sh) for its duration.
echo "\$*" >>"$WORK/policy.log"
case "\$1" in $PKG|$UNIT) [ -e "$WORK/allow-start" ] && exit 0; exit 101 ;; esac
[ -x "$POLICY_SAVED" ] && exec "$POLICY_SAVED" "\$@"
exit 0
EOF
chmod 0755 "$POLICY"

start_private_broker "$(command -v mosquitto || echo /usr/sbin/mosquitto)" "$WORK/broker" \
    || die "could not start a private Mosquitto (see $WORK/broker/mosquitto.log)"

# ---------------------------------------------------------------------------------
# Install X.

# Install never touches the database: its maintainer scripts run no SQL client, and
# what the default configuration names (database cnc_database, user mes_collector) is
# as it was. (Other tests create and drop databases meanwhile, so no more is compared.)
dpkg-deb -e "$deb_x" "$WORK/control"
! grep -lE 'mysql|mariadb' "$WORK"/control/*inst "$WORK"/control/*rm \
    || fail "a maintainer script of the package calls a database client"
db_state() { sql -e "SHOW DATABASES LIKE 'cnc_database'; SELECT user, host FROM mysql.user WHERE user = 'mes_collector'"; }
db_state >"$WORK/db-before"
log "apt-get install $(basename "$deb_x")"
apt_install install "$deb_x"
db_state | diff "$WORK/db-before" - >/dev/null || fail "installing the package changed the database server"

for f in /usr/bin/mes-collector /usr/bin/cnc-sim; do [ -x "$f" ] || fail "$f missing"; done
for f in /usr/lib/mes-collector/plugins/*.so; do
    [ "$(stat -c '%U:%G %a' "$f")" = "root:root 644" ] || fail "$f: $(stat -c '%U:%G %a' "$f"), not root:root 644"
done
[ "$(ls /usr/lib/mes-collector/plugins/*.so | wc -l)" -eq "$(shipped_plugins | wc -l)" ] \
    || fail "not every shipped plugin is in /usr/lib/mes-collector/plugins"
conffiles=$(dpkg-query -W -f='${Conffiles}' "$PKG")
for f in collector.json db_config.json cnc_classes.json; do
    grep -q " $ETC/$f " <<<"$conffiles" || fail "$ETC/$f is not a conffile"
done
for f in database.sql grants.sql; do [ -f "/usr/share/mes-collector/$f" ] || fail "$f not shipped"; done
getent passwd mes-collector >/dev/null || fail "no system user mes-collector"
[ "$(stat -c '%U:%G %a' "$ETC/secrets.env")" = "root:root 600" ] || fail "$ETC/secrets.env is $(stat -c '%U:%G %a' "$ETC/secrets.env")"
[ "$(stat -c '%U' /var/lib/mes-collector/spool)" = mes-collector ] || fail "the spool is not the service user's"
grep -q "^$UNIT start" "$WORK/policy.log" || fail "postinst did not ask to start $UNIT"
[ ! -e "$STANDIN_STATE/events" ] || fail "$UNIT started although policy-rc.d said no"
echo "installed $PKG $(dpkg-query -W -f='${Version}' "$PKG"): files, conffiles, user, secrets.env 0600 root:root, spool; postinst asked to start the unit (held back by policy-rc.d until configured); the database server untouched"

# ---------------------------------------------------------------------------------
# What the DBA and the administrator do: schema and grants, configuration, secrets.

log "DBA: database.sql and grants.sql from /usr/share/mes-collector, for database $DB"
sed "s/cnc_database/$DB/g" /usr/share/mes-collector/database.sql | sql
sed -e "s/cnc_database/$DB/g" -e "s/'mes_collector'@'%'/'$DB_USER'@'%'/g" \
    -e "s/'change-me'/'$DB_PASSWORD'/" /usr/share/mes-collector/grants.sql | sql

log "administrator: local edits to $ETC, the password in secrets.env"
sed -i -e "s|\"uri\": \"tcp://127.0.0.1:1883\"|\"uri\": \"$BROKER_URI\"|" \
    -e "s|\"client_id\": \"mes-collector-1\"|\"client_id\": \"$CLIENT_ID\"|" \
    -e "s|\"topic\": \"sensor/CNC\"|\"topic\": \"$TOPIC\"|" \
    -e "s|^  \"plugins_dir\": \(.*\),$|  \"plugins_dir\": \1,\n  \"metrics_addr\": \"127.0.0.1:0\",|" \
    "$ETC/collector.json"
sed -i -e "s|\"user\": \"mes_collector\"|\"user\": \"$DB_USER\"|" \
    -e "s|\"database\": \"cnc_database\"|\"database\": \"$DB\"|" "$ETC/db_config.json"
cnc-sim classes --machines "$MACHINES" >"$ETC/cnc_classes.json"
for want in "$BROKER_URI" "$CLIENT_ID" "$TOPIC" '"metrics_addr"'; do
    grep -qF "$want" "$ETC/collector.json" || fail "editing $ETC/collector.json did not set $want"
done
grep -qF "\"$DB\"" "$ETC/db_config.json" || fail "editing $ETC/db_config.json did not set the database"
echo "MES_DB_PASSWORD=$DB_PASSWORD" >>"$ETC/secrets.env"
sha256sum "$ETC/collector.json" "$ETC/db_config.json" "$ETC/cnc_classes.json" >"$WORK/edited.sha256"

touch "$WORK/allow-start"
systemctl start "$UNIT"
wait_log "collector running" 1 60
pid_x=$(service_pid)
[ -n "$pid_x" ] || fail "no mes-collector process of user mes-collector"
tr '\0' '\n' <"/proc/$pid_x/environ" | grep -q '^MES_DB_PASSWORD=' \
    || fail "the service did not get MES_DB_PASSWORD from $ETC/secrets.env"
echo "service running as $(ps -o user= -p "$pid_x") (pid $pid_x): $("/proc/$pid_x/exe" --version | head -n 1)"

# ---------------------------------------------------------------------------------
# The upgrade, while the stream goes on.

log "publishing $COUNT messages at $RATE/s to $TOPIC; upgrade after ${UPGRADE_AFTER} s"
cnc-sim --broker "$BROKER_URI" --topic "$TOPIC" generate --machines "$MACHINES" \
    --count "$COUNT" --rate "$RATE" >"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
sleep "$UPGRADE_AFTER"
[ "$(stats | cut -f1)" -gt 0 ] || fail "nothing stored after ${UPGRADE_AFTER} s of the stream"

# When the old process is gone and when a new one runs, seen from outside.
(
    deadline=$((SECONDS + 180))
    while kill -0 "$pid_x" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || exit 1
        sleep 0.02
    done
    echo "old_exit $(now)"
    while [ -z "$(service_pid)" ]; do
        [ $SECONDS -lt $deadline ] || exit 1
        sleep 0.02
    done
    echo "new_start $(now) $(service_pid)"
) >"$WORK/watch" &
WATCH_PID=$!

log "apt-get install $(basename "$deb_x1") (while publishing)"
t_upgrade=$(now)
apt_install install "$deb_x1"
t_upgraded=$(now)
wait "$WATCH_PID" || true
WATCH_PID=""

log "waiting for the stream to end"
sim_rc=0
wait "$SIM_PID" || sim_rc=$?
SIM_PID=""
[ $sim_rc -eq 0 ] || { cat "$WORK/sim.err" >&2; fail "cnc-sim failed (status $sim_rc)"; }

# Everything published must arrive; wait while the count still grows.
last=-1 idle=0
while :; do
    rows=$(stats | cut -f1)
    [ "$rows" -ge "$COUNT" ] && break
    if [ "$rows" -eq "$last" ]; then idle=$((idle + 1)); else idle=0; fi
    [ $idle -ge 30 ] && break
    last=$rows
    sleep 1
done
sleep 2 # anything beyond COUNT (a duplicate) would come now
read -r rows distinct min_seq max_seq <<<"$(stats)"
dead=$(sql "$DB" -e "SELECT COUNT(*) FROM dead_letters")

old_exit=$(awk '$1 == "old_exit" { print $2 }' "$WORK/watch")
pid_x1=$(awk '$1 == "new_start" { print $3 }' "$WORK/watch")
[ -n "$old_exit" ] && [ -n "$pid_x1" ] || fail "did not see the old service stop and a new one start: $(cat "$WORK/watch")"
# The stand-in's own record (its events file): when dpkg's prerm asked for the stop,
# how the old process ended, when postinst's start launched the new one.
events="$STANDIN_STATE/events"
stop_asked=$(awk -v t="$t_upgrade" '$1 >= t && $2 == "stop" { print $1; exit }' "$events")
old_status=$(awk -v p="$pid_x" '$2 == "exited" && $4 == p { print $6 }' "$events")
start_asked=$(awk -v t="${stop_asked:-0}" '$1 >= t && $2 == "start" { print $1; exit }' "$events")
new_started=$(awk -v p="$pid_x1:" '$2 == "started" && $4 == p { print $1 }' "$events")
first_new=$(sql "$DB" -e "SELECT UNIX_TIMESTAMP(MIN(stored_at)) FROM cnc_data WHERE stored_at > FROM_UNIXTIME($old_exit)")
last_old=$(sql "$DB" -e "SELECT UNIX_TIMESTAMP(MAX(stored_at)) FROM cnc_data WHERE stored_at <= FROM_UNIXTIME($old_exit)")
published=$(sed -n 's/^published \([0-9]*\) messages.*, 0 failed$/\1/p' "$WORK/sim.out" | tail -n 1)

echo
echo "cnc-sim:    $(tail -n 1 "$WORK/sim.out")"
echo "published:  ${published:-?} (asked for $COUNT, seq 0..$((COUNT - 1)))"
echo "stored:     $rows rows, $distinct distinct seq, seq $min_seq..$max_seq"
echo "duplicates: $((rows - distinct))"
echo "missing:    $((COUNT - distinct))"
echo "dead letters: $dead"
echo "upgrade:    apt-get install of X+1 took $(secs "$t_upgrade" "$t_upgraded") s; in it:"
echo "            prerm stopped the old service $(secs "$t_upgrade" "$stop_asked") s in (SIGTERM); it exited $(secs "$stop_asked" "$old_exit") s later, status $old_status"
echo "            postinst started the new one $(secs "$old_exit" "${new_started:-$old_exit}") s after that exit"
echo "gap:        the new service stored again $(secs "$old_exit" "$first_new") s after the old one exited"
echo "            ($(secs "$stop_asked" "$first_new") s after the stop was asked; no row stored for $(secs "$last_old" "$first_new") s,"
echo "            from the old service's last row to the new one's first)"
echo "what the stand-in did (epoch seconds):"
sed 's/^/    /' "$events"

[ "$rows" -eq "$COUNT" ] && [ "$distinct" -eq "$COUNT" ] && [ "$min_seq" -eq 0 ] && [ "$max_seq" -eq $((COUNT - 1)) ] \
    || fail "not every message stored exactly once"
[ "$dead" -eq 0 ] || fail "$dead dead letters"
[ "$old_status" = 0 ] || fail "the old service did not exit cleanly on the upgrade's stop (status ${old_status:-unknown})"
# The way a real upgrade orders it: prerm's stop, then postinst's start, both by dpkg
# during the apt-get.
[ -n "$stop_asked" ] && [ -n "$start_asked" ] && [ -n "$new_started" ] \
    && awk -v a="$t_upgrade" -v s="$stop_asked" -v x="$old_exit" -v r="$start_asked" \
        -v n="$new_started" -v b="$t_upgraded" \
        'BEGIN { exit !(a <= s && s <= x && x <= r && r <= b && r <= n) }' \
    || fail "the upgrade did not stop the old service and then start the new one (see the events above)"
sha256sum --quiet -c "$WORK/edited.sha256" || fail "the upgrade changed the locally edited configuration"
grep -q "^MES_DB_PASSWORD=$DB_PASSWORD\$" "$ETC/secrets.env" || fail "the upgrade changed $ETC/secrets.env"
[ "$(dpkg-query -W -f='${Version}' "$PKG")" = "$version_x1" ] || fail "installed version is not $version_x1"
running=$(service_pid)
[ "$running" = "$pid_x1" ] || fail "the service after the upgrade is pid $running, not $pid_x1"
exe=$(readlink "/proc/$running/exe")
[ "$exe" = /usr/bin/mes-collector ] || fail "the running service's binary is $exe"
"/proc/$running/exe" --version | head -n 1 | grep -qF " ${version_x1%-*}" \
    || fail "the running binary says $("/proc/$running/exe" --version | head -n 1), not ${version_x1%-*}"
echo "after the upgrade: $PKG $version_x1, the service (pid $running) runs $exe: $("/proc/$running/exe" --version | head -n 1); local edits to collector.json, db_config.json, cnc_classes.json and secrets.env kept"

# ---------------------------------------------------------------------------------
# Remove, then purge.

log "apt-get remove $PKG"
apt_install remove "$PKG"
[ -z "$(service_pid)" ] || fail "the service still runs after remove"
[ ! -e /usr/bin/mes-collector ] || fail "/usr/bin/mes-collector still there after remove"
sha256sum --quiet -c "$WORK/edited.sha256" || fail "remove changed the configuration"
[ -f "$ETC/secrets.env" ] || fail "remove deleted secrets.env"
[ -d /var/lib/mes-collector/spool ] || fail "remove deleted the spool"
echo "removed: service stopped, binaries gone; configuration, secrets.env and spool kept ($(ls /var/lib/mes-collector/spool | wc -l) spool files)"

log "apt-get purge $PKG"
apt_install purge "$PKG"
[ ! -e "$ETC" ] || fail "$ETC still there after purge: $(ls -A "$ETC")"
[ ! -e /var/lib/mes-collector ] || fail "/var/lib/mes-collector still there after purge"
getent passwd mes-collector >/dev/null || fail "purge removed the system user (it is meant to stay)"
echo "purged: $ETC and /var/lib/mes-collector gone; the system user mes-collector kept (Debian practice; the test removes it)"
