#!/usr/bin/env bash
# Builds the release binary that runs without the Swift toolchain on the target:
# the Swift runtime and Foundation are linked in (--static-swift-stdlib); only
# Debian's C libraries stay shared (libmodbus5, libmosquitto1, libsqlite3-0,
# libssl3, libc, libstdc++). Prints the path of the stripped binary.
# Run it on the target architecture (see deploy/RASPBERRY-PI.md for aarch64).
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
"$SWIFT" build -c release --static-swift-stdlib --product edge-gateway >&2
bin=$("$SWIFT" build -c release --static-swift-stdlib --show-bin-path)/edge-gateway
out=.build/deploy
mkdir -p "$out"
strip -o "$out/edge-gateway" "$bin"
if ldd "$out/edge-gateway" | grep -q 'libswift\|libFoundation'; then
    echo "build-release: $out/edge-gateway still needs the Swift runtime:" >&2
    ldd "$out/edge-gateway" >&2
    exit 1
fi
echo "$out/edge-gateway"
