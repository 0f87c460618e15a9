#!/usr/bin/env bash
# The end-to-end demo: a mosquitto on loopback, the simulated Modbus device, the
# gateway with the repository's gateway.yaml, a subscriber that prints what
# arrives, and edge-monitor watching the fleet (its page at http://127.0.0.1:9470/).
# Ctrl-C stops everything this script started, the gateway first.
# Children run in their own sessions (setsid) so the terminal's Ctrl-C reaches
# only this script, which then stops them in order.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.build/debug/edge-gateway
MONITOR=.build/debug/edge-monitor
CONFIG=${CONFIG:-gateway.yaml}
MONITOR_PORT=${MONITOR_PORT:-9470}
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
# The monitor: the repository's monitor.yaml with its state under state/.
monitor_line=
if [ -x "$MONITOR" ] && port_open "$MONITOR_PORT"; then
  echo "port $MONITOR_PORT is taken: no edge-monitor in this demo (MONITOR_PORT=... picks another)"
elif [ -x "$MONITOR" ]; then
  sed -e "s|state: /var/lib/edge-monitor/monitor.sqlite|state: state/monitor.sqlite|" \
      -e "s|listen: 127.0.0.1:9470|listen: 127.0.0.1:$MONITOR_PORT|" monitor.yaml > state/monitor.yaml
  setsid "$MONITOR" run --config state/monitor.yaml > state/monitor.log 2>&1 &
  pids=($! "${pids[@]}")
  wait_port "$MONITOR_PORT"
  monitor_line="fleet page: http://127.0.0.1:$MONITOR_PORT/  (metrics: /metrics, log: state/monitor.log)"
fi
setsid mosquitto_sub -h 127.0.0.1 -p 1883 -v -t 'edge/#' &
pids=($! "${pids[@]}")
setsid "$BIN" run --config "$CONFIG" &
pids=($! "${pids[@]}")
echo "demo running: published messages follow; Ctrl-C stops everything"
[ -z "$monitor_line" ] || echo "$monitor_line"
wait
