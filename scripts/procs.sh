# Sourced by the scripts that start servers on loopback: background processes listed in
# `pids` are ended on exit; free ports; a bounded wait for a listener.
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT [SECONDS]: true once something accepts on 127.0.0.1:PORT (default 20 s).
wait_port() {
  for _ in $(seq $((${2:-20} * 10))); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
