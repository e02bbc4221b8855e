#!/usr/bin/env bash
# RPC benchmark: rmicro's generated client (registry lookup + RoundRobin selection + pooled
# connection, 5 s timeout, 1 retry) against a plain tonic-prost client, both calling one
# in-process rmicro server, in one process run.
#
#   bash bench/rpc/run.sh [--concurrency N] [--duration SECS] [--warmup SECS] [--rounds N]
#                         [--variants A,B,C,D,E] [--micro-iters N]
#
# The same options can be given as BENCH_CONCURRENCY, BENCH_DURATION, BENCH_WARMUP,
# BENCH_ROUNDS, BENCH_VARIANTS, BENCH_MICRO_ITERS. Defaults: 32 tasks, 1 s warm-up + 5 s per
# round, 3 rounds, variants A,B. Builds in release under target/bench-rpc and runs once.
# Exits non-zero if any call failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/rpc
export CARGO_TARGET_DIR=$ROOT/target/bench-rpc

if ! command -v protoc >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
fi
# tonic-prost-build (prost-build) runs the protoc named here; rmicro-build needs none (protox).
export PROTOC=${PROTOC:-$(command -v protoc)}

echo "rustc:    $(rustc --version)"
echo "protoc:   $("$PROTOC" --version)"
echo "machine:  $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"

cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
echo "crates:   $(cargo tree --quiet --manifest-path "$HERE/Cargo.toml" -e normal,build --prefix none \
  | grep -oE '^(tonic|tonic-prost|tonic-prost-build|prost|tokio|hyper|h2) v[^ ]+' | sort -u | tr '\n' ' ')"
echo "load:     $(uptime)"
# Run the binary directly (not `cargo run`), so no Cargo variables leak in.
status=0
"$CARGO_TARGET_DIR/release/rmicro-bench-rpc" "$@" || status=$?
echo "load after: $(uptime)"
exit "$status"
