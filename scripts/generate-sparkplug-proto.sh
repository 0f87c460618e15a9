#!/usr/bin/env bash
# Regenerates Sources/SparkplugB/sparkplug_b.pb.swift from proto/sparkplug_b.proto
# (Eclipse Tahu, commit 5736e404889d4b95910613040a99ba79589ffb13, EPL-2.0).
#
# The package build never runs this: the generated file is committed. Run it only
# when the .proto or the swift-protobuf version changes. It builds protoc-gen-swift
# from the swift-protobuf checkout the package resolved (same version as the
# runtime library; ~10 minutes on a loaded machine) in a scratch directory, and
# runs Debian's protoc (apt: protobuf-compiler).
#
#   scripts/generate-sparkplug-proto.sh [scratch dir, default /tmp/edge-gateway-protoc-gen-swift]
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=${1:-/tmp/edge-gateway-protoc-gen-swift}
command -v protoc >/dev/null || { echo "protoc is missing: apt-get install protobuf-compiler" >&2; exit 1; }

swift package resolve
checkout=.build/checkouts/swift-protobuf
[ -d "$checkout" ] || { echo "no swift-protobuf checkout at $checkout" >&2; exit 1; }
version=$(git -C "$checkout" describe --tags --exact-match 2>/dev/null || git -C "$checkout" rev-parse HEAD)

rm -rf "$scratch"
git clone --quiet "$checkout" "$scratch"
git -C "$scratch" checkout --quiet "$(git -C "$checkout" rev-parse HEAD)"
(cd "$scratch" && swift build -c release --product protoc-gen-swift)
plugin="$scratch/.build/release/protoc-gen-swift"

out=$(mktemp -d)
protoc --plugin=protoc-gen-swift="$plugin" --proto_path=proto \
       --swift_opt=Visibility=Public --swift_out="$out" proto/sparkplug_b.proto
mv "$out/sparkplug_b.pb.swift" Sources/SparkplugB/sparkplug_b.pb.swift
rmdir "$out"
echo "generated Sources/SparkplugB/sparkplug_b.pb.swift with protoc-gen-swift $version and $(protoc --version)"
