#!/usr/bin/env bash
# The end-to-end demo: a mosquitto on loopback, the simulated Modbus device, the
# gateway with the repository's gateway.yaml, and a subscriber that prints what
# arrives. Ctrl-C stops everything this script started, the gateway first.
# Children run in their own sessions (setsid) so the terminal's Ctrl-C reaches
# only this script, which then stops them in order.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.build/debug/edge-gateway
CONFIG=${CONFIG:-gateway.yaml}
pids=()
cleanup() {
  trap - INT TERM EXIT
  # The gateway first, so its clean offline status is printed by the subscriber.
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  echo "demo stopped"
  exit 0
}
trap cleanup INT TERM EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 50); do port_open "$1" && return 0; sleep 0.1; done; echo "nothing listens on port $1" >&2; return 1; }

"$BIN" check-config "$CONFIG"
mkdir -p state
if port_open 1883; then
  echo "using the MQTT broker already listening on 127.0.0.1:1883"
else
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\npersistence false\n' > state/mosquitto.conf
  setsid mosquitto -c state/mosquitto.conf > state/mosquitto.log 2>&1 &
  pids=($! "${pids[@]}")
  wait_port 1883
fi
setsid "$BIN" simulate --port 1502 &
pids=($! "${pids[@]}")
wait_port 1502
setsid mosquitto_sub -h 127.0.0.1 -p 1883 -v -t 'edge/#' &
pids=($! "${pids[@]}")
setsid "$BIN" run --config "$CONFIG" &
pids=($! "${pids[@]}")
echo "demo running: published messages follow; Ctrl-C stops everything"
wait
