#!/usr/bin/env bash
# The benchmark, from a clean checkout: release build, then scripts/bench.py, which starts
# the broker and Mosquitto on 127.0.0.1, drives them with `sim-device bench`, prints the
# table and writes it to docs/benchmarks.md. About 15-25 minutes on 2 cores.
#
#   scripts/bench.sh                 # the full run (1k, 5k, 10k, 19k vehicles)
#   scripts/bench.sh --smoke         # CI: debug build, 200 vehicles, ~30 s, checks results
#   scripts/bench.sh --vehicles 1000,5000 --rates 10000,20000   # any bench.py option
#
# Needs python3 and, for the baseline, Mosquitto (`apt-get install -y mosquitto`).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"

# One connection per vehicle on each side: the broker, Mosquitto and the simulator each
# need about N + 100 open files.
hard="$(ulimit -Hn)"
if [[ "$hard" == unlimited || "$hard" -gt 65536 ]]; then hard=65536; fi
ulimit -n "$hard"

if ! command -v mosquitto >/dev/null && [[ -x /usr/sbin/mosquitto ]]; then
  export PATH="$PATH:/usr/sbin"
fi
if ! command -v mosquitto >/dev/null; then
  echo "bench: mosquitto not installed (apt-get install -y mosquitto): running without the baseline" >&2
fi

if [[ "${1:-}" == "--smoke" ]]; then
  shift
  cargo build -q -p fleet-broker -p sim-device
  exec python3 scripts/bench.py --bin-dir "$target/debug" --vehicles 200 --rates 2000 \
    --qos 1 --step 2s --timeout 3s --background 1s --detect 0.02 --wait-limit 20s \
    --run-limit 120 --unlocks 200 --check --out "${TMPDIR:-/tmp}/fleet-bench-smoke.md" "$@"
fi

cargo build --release -p fleet-broker -p sim-device
exec python3 scripts/bench.py --bin-dir "$target/release" --out docs/benchmarks.md \
  --command "scripts/bench.sh${*:+ $*}" "$@"
