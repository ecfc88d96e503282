#!/usr/bin/env bash
# Heap profile of the broker holding a steady simulated fleet: heaptrack records every
# allocation of `fleet-broker` while N vehicles heartbeat every 30 s for D seconds, then
# prints the peak heap, what was never freed, and the top peak consumers.
#
#   scripts/heap_profile.sh [embedded|attach] [VEHICLES] [SECONDS]
#   BIN_DIR=target/release scripts/heap_profile.sh attach 5000 40
#   HEAPTRACK=0 scripts/heap_profile.sh ...   # no profiler: the broker's RSS only
#
# attach: a Mosquitto on a free port serves the vehicles and the broker attaches to it.
# Needs heaptrack (Debian: heaptrack) and, for attach, mosquitto. The debug build is the
# default; futures are larger unoptimised, so profile target/release (built with debug
# info) for the figures that go into docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-attach}
n=${2:-5000}
secs=${3:-40}
bin=${BIN_DIR:-target/debug}
work=$(mktemp -d)
profile=${HEAPTRACK:-1}
if [ "$profile" != 0 ]; then
  command -v heaptrack >/dev/null || { echo "heap_profile: heaptrack is needed" >&2; exit 1; }
  run=(heaptrack -o "$work/heap")
else
  run=()
fi
[ -x "$bin/fleet-broker" ] && [ -x "$bin/sim-device" ] || cargo build -q -p fleet-broker -p sim-device

. scripts/procs.sh

mqtt_port=$(free_port)
http_port=$(free_port)
if [ "$mode" = attach ]; then
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$mqtt_port" >"$work/mosquitto.conf"
  mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  pids+=($!)
  wait_port "$mqtt_port" || { echo "heap_profile: Mosquitto did not listen" >&2; exit 1; }
  mqtt=$(printf '[mqtt]\nmode = "attach"\n[mqtt.attach]\nurl = "mqtt://127.0.0.1:%s"\n' "$mqtt_port")
else
  mqtt=$(printf '[mqtt]\nlisten = "127.0.0.1:%s"\nmax_connections = 100000\n' "$mqtt_port")
fi
cat >"$work/fleet.toml" <<EOF
$mqtt
[store]
path = "$work/fleet.db"
[http]
listen = "127.0.0.1:$http_port"
EOF

RUST_LOG=warn "${run[@]}" "$bin/fleet-broker" --config "$work/fleet.toml" >"$work/broker.log" 2>&1 &
broker=$!
pids+=($broker)
wait_port "$http_port" || { echo "heap_profile: the broker did not listen; see $work/broker.log" >&2; exit 1; }
for _ in $(seq 200); do
  curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
"$bin/sim-device" run --broker "127.0.0.1:$mqtt_port" --vehicles "$n" --heartbeat 30s \
  --duration "${secs}s" --summary-every 10s >"$work/sim.log" 2>&1
tracked=$(curl -fs "http://127.0.0.1:$http_port/metrics" | awk '/^fleet_vehicles\{/ {s += $2} END {print s}')
# Under heaptrack the broker is its child: signal and measure that process.
pid=$broker
if [ "$profile" != 0 ]; then
  pid=$(pgrep -P "$broker" -x fleet-broker)
fi
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
upstream=""
if [ "$mode" = attach ]; then
  upstream=", Mosquitto RSS $(awk '/VmRSS/ {print $2}' "/proc/${pids[0]}/status") KiB"
fi
kill -TERM "$pid"
wait "$broker" || true
echo "heap_profile: $mode, $n vehicles for $secs s, tracked ${tracked:-?}, broker RSS ${rss} KiB${upstream}$([ "$profile" != 0 ] && echo " (under heaptrack)")"
[ "$profile" != 0 ] || exit 0
# Peak heap by the innermost frame of ours (or of a dependency) that allocated it.
heaptrack_print -f "$work"/heap*.zst -p 0 -a 0 -T 0 -l 0 --flamegraph-cost-type peak \
  -F "$work/peak.stacks" 2>&1 | grep -E '^(peak heap memory|calls to allocation|total memory leaked)'
python3 -c '
import collections, re, sys
ours = re.compile(r"fleet_|rmqtt|rumqttc|rusqlite|sqlite3|tokio::|hyper|axum")
peak = collections.Counter()
for line in open(sys.argv[1]):
    stack, _, cost = line.rstrip().rpartition(" ")
    frame = next((f for f in reversed(stack.split(";")) if ours.search(f)), "(other)")
    peak[re.sub(r"::h[0-9a-f]{16}", "", frame)] += int(cost)
for frame, cost in peak.most_common(12):
    print(f"{cost / 1024:9.1f} KiB  {frame[:140]}")
' "$work/peak.stacks"
echo "heap_profile: full profile in $work (heaptrack_print $work/heap*.zst)"
