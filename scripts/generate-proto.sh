#!/usr/bin/env bash
# Regenerates Sources/ContainerdProxy/Generated from Sources/ContainerdProxy/Protos, once, by hand
# (`make generate-proto`): protoc from Debian's protobuf-compiler, the two Swift plugins built in a
# scratch package (.build-protoc) from the same package versions Package.swift depends on. The output
# is committed, so ordinary builds never run protoc or the plugins.
set -euo pipefail

cd "$(dirname "$0")/.."
scratch="${PROTOC_PLUGINS_SCRATCH:-.build-protoc}"
protos=Sources/ContainerdProxy/Protos
out=Sources/ContainerdProxy/Generated

if ! command -v protoc >/dev/null 2>&1; then
  echo "generate-proto: installing protobuf-compiler"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends protobuf-compiler
fi

mkdir -p "$scratch/Sources/Empty"
cat > "$scratch/Package.swift" <<'PKG'
// swift-tools-version:6.1
// Scratch package that only builds the protoc plugins (not part of the project's build).
import PackageDescription
let package = Package(
    name: "protoc-plugins",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", exact: "2.4.1"),
    ],
    targets: [.target(name: "Empty")]
)
PKG
echo "// empty" > "$scratch/Sources/Empty/Empty.swift"
swift build --package-path "$scratch" -c release --product protoc-gen-swift
swift build --package-path "$scratch" -c release --product protoc-gen-grpc-swift-2
bin="$(swift build --package-path "$scratch" -c release --show-bin-path)"

rm -rf "$out"
mkdir -p "$out"
# Public visibility: the daemon target implements the service through ContainerdProxy's types.
# google/protobuf/*.proto (well-known types): from swift-protobuf's own checkout, whose Swift types
# (Google_Protobuf_Timestamp, ...) the generated code uses.
wellknown="$scratch/.build/checkouts/swift-protobuf/Protos/Sources/SwiftProtobuf"
protoc --proto_path="$protos" --proto_path="$wellknown" \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift="$bin/protoc-gen-grpc-swift-2" \
  --swift_out="$out" --swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
  --grpc-swift_out="$out" --grpc-swift_opt=Visibility=Public,FileNaming=PathToUnderscores,Client=true,Server=true \
  types/mount.proto services/snapshots/v1/snapshots.proto
# The tests' and benchmarks' slice of Kubernetes' CRI (a client for containerd's CRI image service).
test_out=Tests/CRIClient/Generated
rm -rf "$test_out"
mkdir -p "$test_out"
protoc --proto_path=Tests/CRIClient/Protos \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift="$bin/protoc-gen-grpc-swift-2" \
  --swift_out="$test_out" --swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
  --grpc-swift_out="$test_out" --grpc-swift_opt=Visibility=Public,FileNaming=PathToUnderscores,Client=true,Server=false \
  cri_image.proto
# Both generators mark their files `// swift-format-ignore-file`: lint and format skip them.
echo "generate-proto: wrote $(ls "$out" | tr '\n' ' ')"
