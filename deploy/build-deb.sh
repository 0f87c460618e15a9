#!/usr/bin/env bash
# Builds the Debian package from a release binary (default: build it first).
#   deploy/build-deb.sh [BINARY]   → prints the path of the .deb
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
