#!/usr/bin/env bash
# What receiving a QoS 1 message costs an MQTT client that does nothing else with it:
# paho-mqtt (the collector's client: Paho C async, message callback) against rumqttc
# (async on a current-thread tokio runtime, and its sync Client), alternating, in one
# run. The floor under the collector's own CPU per message (docs/performance.md,
# "What an MQTT subscriber costs"). rumqttc is a dependency of this tool only.
#
#   tools/mqtt-client-cost/run.sh | tee results.txt
#   ROUNDS=1 NA=50000 NB=20000 tools/mqtt-client-cost/run.sh     # a quick look
#
# Builds in release mode (its own lock file and target dir, outside the workspace),
# runs a private Mosquitto on 127.0.0.1:$PORT (default 18830; it stops if the port is
# taken), then: (a) NA messages at full speed, (b) NB at RATE_B msg/s, ROUNDS rounds of
# each client in turn; per run the subscriber's CPU seconds (getrusage, user+sys, whole
# process) per 100k messages, checked to have received every message; an idle
# check; with strace installed, syscall counts; and the medians with each client's
# ratio to paho. Everything it starts is stopped on exit, its temp dir removed.
set -euo pipefail
cd "$(dirname "$0")"
export PORT=${PORT:-18830}
ROUNDS=${ROUNDS:-3}
NA=${NA:-100000}          # scenario (a): full speed
NB=${NB:-60000}           # scenario (b): steady rate
RATE_B=${RATE_B:-2000}
CLIENTS=${CLIENTS:-"sub-paho sub-rumqttc sub-rumqttc-sync"}
B=./target/release/mqtt-client-cost
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
T=$(mktemp -d)

echo "=== build"
cargo build --release 2>&1 | tail -1
echo "date: $(date -Is)  host: $(uname -r)  nproc: $(nproc)"
echo "rustc: $(rustc --version)"
echo "mosquitto: $("$MOSQUITTO" -h 2>&1 | head -1)"
for c in paho-mqtt paho-mqtt-sys rumqttc tokio; do
  echo "crate $c $(grep -A1 "^name = \"$c\"\$" Cargo.lock | sed -n 's/version = //p' | tr -d '"')"
done
PAHO_C=$(cd ~/.cargo/registry/src/*/paho-mqtt-sys-0.11.0/paho.mqtt.c 2>/dev/null && echo "$(cat version.major).$(cat version.minor).$(cat version.patch)" || echo "?")
echo "bundled Paho C: $PAHO_C"
echo "payload: $($B payload | tr -d '\n' | wc -c) bytes, 50 topics bench/cost/m00..m49, QoS 1, publisher = rumqttc sync Client, inflight 100"

if ss -ltn 2>/dev/null | grep -q ":$PORT "; then echo "port $PORT busy" >&2; exit 1; fi
cat > "$T/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 100
log_dest stderr
log_type error
log_type warning
EOF
"$MOSQUITTO" -c "$T/mosquitto.conf" > "$T/broker.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null || true; rm -rf "$T"' EXIT
sleep 0.5
kill -0 $BROKER

broker_cpu() {  # seconds of CPU used so far by the private broker
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); split($0, f, " "); printf "%.2f", (f[12] + f[13]) / hz }' /proc/$BROKER/stat
}

# run_one SCENARIO CLIENT N RATE [wrapper...]
run_one() {
  local scen=$1 cl=$2 n=$3 rate=$4; shift 4
  local out="$T/sub.out"
  : > "$out"
  local b0; b0=$(broker_cpu)
  "$@" $B "$cl" "$n" > "$out" 2> "$T/sub.err" &
  local sp=$!
  for _ in $(seq 200); do grep -q READY "$out" && break; sleep 0.05; done
  grep -q READY "$out" || { echo "subscriber $cl not ready" >&2; cat "$T/sub.err" >&2; exit 1; }
  local pubout; pubout=$($B publish "$n" "$rate")
  wait $sp || true
  local b1; b1=$(broker_cpu)
  local res; res=$(grep '^RESULT' "$out" || echo "RESULT client=$cl FAILED")
  local rcv; rcv=$(sed -n 's/.* received=\([0-9]*\).*/\1/p' <<<"$res")
  local flag=OK; [ "$rcv" = "$n" ] || flag="LOSS($rcv/$n)"
  echo "RUN scenario=$scen $flag ${res#RESULT } broker_cpu=$(awk -v a="$b0" -v b="$b1" 'BEGIN{printf "%.2f", b-a}') | ${pubout}" | tee -a "$T/runs.txt"
  grep '^THREADS' "$out" | sed "s/^/     /"
  sleep 1
}

rm -f "$T/runs.txt"
echo
echo "=== scenario a: full speed, N=$NA, rounds=$ROUNDS"
for r in $(seq "$ROUNDS"); do
  for cl in $CLIENTS; do run_one a "$cl" "$NA" 0; done
done

echo
echo "=== scenario b: steady $RATE_B msg/s, N=$NB, rounds=$ROUNDS (cpu_per_100k scaled from N=$NB)"
for r in $(seq "$ROUNDS"); do
  for cl in $CLIENTS; do run_one b "$cl" "$NB" "$RATE_B"; done
done

echo
echo "=== idle: subscriber connected and subscribed, no messages, 10 s"
for cl in $CLIENTS; do
  SUB_TIMEOUT_SECS=10 $B "$cl" 1 2>/dev/null | grep -E '^(RESULT|THREADS)' | sed 's/^/IDLE /' || true
done

if command -v strace >/dev/null; then
  echo
  echo "=== syscall profile, scenario a (N=$NA) under strace -c -f (slowed by strace; counts only)"
  for cl in sub-paho sub-rumqttc sub-rumqttc-sync; do
    run_one a-strace "$cl" "$NA" 0 strace -c -f -o "$T/strace.$cl.txt"
    echo "--- strace -c -f $cl"
    head -n 25 "$T/strace.$cl.txt"
  done
fi

echo
echo "=== summary (CPU-s per 100k messages, subscriber process user+sys, whole process lifetime)"
echo "(median of the runs per client; wall = first-to-last message; ratio = median / median of paho)"
awk '
  /^RUN / && $3 == "OK" {
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    k = v["scenario"] SUBSEP v["client"]
    n[k]++; cpu[k, n[k]] = v["cpu_per_100k"]; wall[k, n[k]] = v["wall_first_to_last"]
    if (!(v["scenario"] in seen)) { seen[v["scenario"]] = 1; order[++ns] = v["scenario"] }
    if (!(v["client"] in seenc)) { seenc[v["client"]] = 1; corder[++nc] = v["client"] }
  }
  function median(arr, k, m,   i, j, t, a) {
    for (i = 1; i <= m; i++) a[i] = arr[k, i] + 0
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  END {
    for (s = 1; s <= ns; s++) {
      sc = order[s]
      if (sc ~ /strace/) continue
      pk = sc SUBSEP "sub-paho"; pk2 = sc SUBSEP "paho"
      for (c = 1; c <= nc; c++) {
        k = sc SUBSEP corder[c]; if (!(k in n)) continue
        line = ""
        for (i = 1; i <= n[k]; i++) line = line sprintf(" %.3f", cpu[k, i])
        mc[k] = median(cpu, k, n[k]); mw = median(wall, k, n[k])
        printf "scenario %-2s %-14s runs=%d cpu/100k:%s  median=%.3f  median wall=%.2fs", sc, corder[c], n[k], line, mc[k], mw
        if ((sc SUBSEP "paho") in mc) printf "  ratio_vs_paho=%.2f", mc[k] / mc[sc SUBSEP "paho"]
        printf "\n"
      }
    }
  }' "$T/runs.txt"
