#!/usr/bin/env bash
# build.rs benchmark: rmicro-build's version check of checked-in code, and a full generation
# run against tonic-prost-build, over 100 generated protos.
#
#   bash bench/build-check/run.sh
#
# Installs protoc (Debian protobuf-compiler) if missing, builds the benchmark in release under
# target/bench-build-check, and runs it once. Everything it generates goes to a temp dir.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/build-check
export CARGO_TARGET_DIR=$ROOT/target/bench-build-check

if ! command -v protoc >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
fi
# tonic-prost-build (prost-build) runs the protoc named here.
export PROTOC=${PROTOC:-$(command -v protoc)}

echo "rustc:    $(rustc --version)"
echo "protoc:   $("$PROTOC" --version)"
echo "machine:  $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"

cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
echo "tonic-prost-build: $(cargo tree --quiet --manifest-path "$HERE/Cargo.toml" --depth 1 \
  | grep -o 'tonic-prost-build v[^ ]*' | head -1)"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min; other builds on the machine skew p99)"
# Run the binary directly (not `cargo run`), so no Cargo build-script variables leak in.
"$CARGO_TARGET_DIR/release/rmicro-bench-build-check"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
