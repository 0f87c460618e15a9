#!/usr/bin/env bash
# Builds the release binary that runs without the Swift toolchain on the target:
# the Swift runtime and Foundation are linked in (--static-swift-stdlib); only
# Debian's C libraries stay shared (libmodbus5, libmosquitto1, libsqlite3-0,
# libssl3, libc, libstdc++). Prints the path of the stripped binary.
#   deploy/build-release.sh [PRODUCT]    PRODUCT: edge-gateway (default) or edge-monitor
#   SCRATCH=DIR builds in DIR instead of .build: the static build compiles every module
#   again (its objects differ from a plain release build's), so `make bench`, which
#   needs both, keeps this one in .build-static.
# Run it on the target architecture (see deploy/RASPBERRY-PI.md for aarch64).
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
product=${1:-edge-gateway}
scratch=()
if [ -n "${SCRATCH:-}" ]; then scratch=(--scratch-path "$SCRATCH"); fi
"$SWIFT" build -c release --static-swift-stdlib "${scratch[@]}" --product "$product" >&2
bin=$("$SWIFT" build -c release --static-swift-stdlib "${scratch[@]}" --show-bin-path)/$product
out=.build/deploy
mkdir -p "$out"
strip -o "$out/$product" "$bin"
if ldd "$out/$product" | grep -q 'libswift\|libFoundation'; then
    echo "build-release: $out/$product still needs the Swift runtime:" >&2
    ldd "$out/$product" >&2
    exit 1
fi
echo "$out/$product"
