#!/usr/bin/env bash
# Installs edge-gateway without the Debian package (same layout, same steps as its
# maintainer scripts): binary, systemd unit, system user, example configuration
# into /etc/edge-gateway unless one exists, then enable and start (when systemd runs).
#   sudo deploy/install.sh [BINARY]     (default: build the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo)" >&2; exit 1; }
if dpkg-query -W -f='${Status}' edge-gateway 2>/dev/null | grep -q 'install ok installed'; then
    echo "install.sh: the edge-gateway Debian package is installed; upgrade it with dpkg -i instead" >&2
    exit 1
fi
binary=${1:-$(deploy/build-release.sh)}
for lib in libmodbus.so.5 libmosquitto.so.1 libsqlite3.so.0; do
    ldconfig -p | grep -q "$lib" || echo "install.sh: $lib is missing: apt-get install libmodbus5 libmosquitto1 libsqlite3-0 libssl3" >&2
done
install -D -m 0755 "$binary" /usr/bin/edge-gateway
install -D -m 0644 systemd/edge-gateway.service /lib/systemd/system/edge-gateway.service
install -D -m 0644 deploy/gateway.example.yaml /usr/share/edge-gateway/gateway.example.yaml
# The rest is exactly what the package does after unpacking.
deploy/debian/postinst configure
echo "installed: /usr/bin/edge-gateway, edge-gateway.service, config /etc/edge-gateway/gateway.yaml"
