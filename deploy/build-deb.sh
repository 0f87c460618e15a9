#!/usr/bin/env bash
# Builds the Debian package from a release binary (default: build it first).
#   deploy/build-deb.sh [BINARY]   → prints the path of the edge-gateway .deb
# and, next to it, the edge-monitor package (below).
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-$(deploy/build-release.sh)}
version=${VERSION:-$("$binary" --version)}
arch=$(dpkg --print-architecture)
out=.build/deploy
stage=$(mktemp -d "${TMPDIR:-/tmp}/edge-gateway-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT

install -D -m 0755 "$binary" "$stage/usr/bin/edge-gateway"
install -D -m 0644 systemd/edge-gateway.service "$stage/lib/systemd/system/edge-gateway.service"
install -D -m 0644 deploy/gateway.example.yaml "$stage/usr/share/edge-gateway/gateway.example.yaml"
install -D -m 0644 README.md "$stage/usr/share/doc/edge-gateway/README.md"
for file in deploy/wireguard/*; do
    [ -f "$file" ] && install -D -m 0644 "$file" "$stage/usr/share/doc/edge-gateway/wireguard/$(basename "$file")"
done
install -d "$stage/DEBIAN"
install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$stage/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: edge-gateway
Version: $version
Architecture: $arch
Maintainer: edge-gateway maintainers <edge-gateway@localhost>
Installed-Size: $size
Depends: libmodbus5, libmosquitto1, libsqlite3-0, libssl3, libc6, libstdc++6, libgcc-s1, passwd
Recommends: wireguard-tools
Section: net
Priority: optional
Description: Modbus to MQTT gateway with a local store-and-forward outbox
 Polls Modbus devices, commits every reading to a SQLite outbox and forwards it
 to an MQTT broker (through a WireGuard tunnel), with a retained birth message,
 a Last Will and replay after outages. Runs as the systemd service edge-gateway
 with a watchdog.
CONTROL
mkdir -p "$out"
deb="$out/edge-gateway_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >&2
echo "$deb"

# The second package, edge-monitor, for the central server: built when the
# package declares the edge-monitor product (MONITOR_BINARY=path skips its build).
# A separate package, so a gateway box carries no HTTP server and no monitor
# service, and a central server no Modbus poller. Installed, it is not enabled:
# the operator edits /etc/edge-monitor/monitor.yaml, then enables it.
if [ -n "${MONITOR_BINARY:-}" ] || grep -q '\.executable(name: "edge-monitor"' Package.swift; then
    monitor_binary=${MONITOR_BINARY:-$(deploy/build-release.sh edge-monitor)}
    mstage=$(mktemp -d "${TMPDIR:-/tmp}/edge-monitor-deb.XXXXXX")
    trap 'rm -rf "$stage" "$mstage"' EXIT
    install -D -m 0755 "$monitor_binary" "$mstage/usr/bin/edge-monitor"
    install -D -m 0644 systemd/edge-monitor.service "$mstage/lib/systemd/system/edge-monitor.service"
    install -D -m 0644 monitor.yaml "$mstage/usr/share/edge-monitor/monitor.example.yaml"
    install -D -m 0644 README.md "$mstage/usr/share/doc/edge-monitor/README.md"
    for file in deploy/prometheus/edge-fleet.rules.yml deploy/grafana/edge-fleet.json; do
        install -D -m 0644 "$file" "$mstage/usr/share/edge-monitor/$(basename "$(dirname "$file")")/$(basename "$file")"
    done
    install -d "$mstage/DEBIAN"
    install -m 0755 deploy/debian/monitor/postinst deploy/debian/monitor/prerm deploy/debian/monitor/postrm "$mstage/DEBIAN/"
    msize=$(du -sk --exclude=DEBIAN "$mstage" | cut -f1)
    # Depends: the C libraries the static binary still links (libmodbus through the
    # shared gateway code, libcurl through Foundation's URLSession in `status`);
    # test-package.sh checks the list against the binary's NEEDED entries.
    cat > "$mstage/DEBIAN/control" <<CONTROL
Package: edge-monitor
Version: $version
Architecture: $arch
Maintainer: edge-gateway maintainers <edge-gateway@localhost>
Installed-Size: $msize
Depends: libmodbus5, libmosquitto1, libsqlite3-0, libssl3, libcurl4, libc6, libstdc++6, libgcc-s1, passwd
Recommends: mosquitto
Suggests: prometheus
Section: net
Priority: optional
Description: Central monitor for a fleet of edge-gateways
 Subscribes to the fleet's topics on the central MQTT broker and keeps a model
 of every gateway: online, offline (connection lost or shutdown), stale, its
 backlog and replay, and a ledger of every (boot, seq) that proves its data
 arrived or names what was lost. Serves a web page, a JSON API and Prometheus
 metrics; ships alert rules and a Grafana dashboard. Runs as the systemd
 service edge-monitor (installed disabled: systemctl enable --now edge-monitor).
CONTROL
    mdeb="$out/edge-monitor_${version}_${arch}.deb"
    dpkg-deb --root-owner-group --build "$mstage" "$mdeb" >&2
    echo "build-deb: also built $mdeb" >&2
fi
