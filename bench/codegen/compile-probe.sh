#!/usr/bin/env bash
# Correctness probe next to the codegen benchmark: does protoc-gen-rmicro's output for a
# moderate slice of googleapis compile?
#
#   bash bench/codegen/compile-probe.sh
#
# Generates, with --rmicro_opt=include_file=mod.rs, every package in ROOTS below plus all the
# packages they import (google/protobuf excepted: the well-known types map to prost-types),
# into a scratch crate bench/work/compile-probe ([workspace] of its own, depending on
# rmicro-runtime by path, with the workspace's Cargo.lock copied beside it), and builds it
# offline. Exit status 0 when it compiles; otherwise the first 40 lines of the errors.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$ROOT/bench/work
PROTO_FILES_VERSION=5.0.3
PROBE=$WORK/compile-probe
PROBE_TARGET=${PROBE_TARGET:-$ROOT/target/scratch-crates/target}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$WORK"
cd "$WORK" # nothing below writes into the source tree

# Directories whose .proto files (not recursing) are the roots: about a dozen packages, most
# with services, chosen because none of them reaches grafeas or another large tree.
ROOTS=(
  google/api
  google/rpc
  google/type
  google/longrunning
  google/iam/v1
  google/pubsub/v1
  google/cloud/speech/v1
  google/cloud/tasks/v2
  google/cloud/kms/v1
  google/firestore/v1
  google/spanner/v1
  google/bigtable/v2
  google/logging/v2
)

# Tools (the same as run.sh installs).
APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v protoc >/dev/null || apt_install protobuf-compiler
[ -f /usr/include/google/protobuf/descriptor.proto ] || apt_install libprotobuf-dev
command -v npm >/dev/null || apt_install nodejs npm
BUNDLE=$WORK/node_modules/google-proto-files
if ! [ -f "$BUNDLE/package.json" ] ||
  [ "$(node -p "require('$BUNDLE/package.json').version")" != "$PROTO_FILES_VERSION" ]; then
  npm install --silent --no-audit --no-fund --prefix "$WORK" "google-proto-files@$PROTO_FILES_VERSION" >/dev/null
fi
echo "building protoc-gen-rmicro (release) ..." >&2
(cd "$ROOT" && cargo build --quiet --release -p protoc-gen-rmicro)
RMICRO_BIN=$CARGO_TARGET_DIR/release/protoc-gen-rmicro

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rmicro-compile-probe.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# Root files, then their transitive imports from protoc's own descriptor set.
(cd "$BUNDLE" && for d in "${ROOTS[@]}"; do find "$d" -maxdepth 1 -name '*.proto'; done) |
  LC_ALL=C sort >"$TMP/roots.txt"
(cd "$BUNDLE" && protoc -I /usr/include -I . --include_imports -o "$TMP/set.pb" "@$TMP/roots.txt" 2>/dev/null)
protoc -I /usr/include --decode=google.protobuf.FileDescriptorSet google/protobuf/descriptor.proto \
  <"$TMP/set.pb" | sed -n 's/^  name: "\(.*\)"$/\1/p' | grep -v '^google/protobuf/' | LC_ALL=C sort >"$TMP/files.txt"

# The scratch crate.
rm -rf "$PROBE/src"
mkdir -p "$PROBE/src/generated"
cat >"$PROBE/Cargo.toml" <<'EOF'
[package]
name = "rmicro-compile-probe"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
rmicro-runtime = { path = "/work/main/rmicro-runtime" }
EOF
cp "$ROOT/Cargo.lock" "$PROBE/Cargo.lock"
cat >"$PROBE/src/lib.rs" <<'EOF'
//! protoc-gen-rmicro's output for a googleapis slice, compiled as one crate.
#![allow(missing_docs)]

pub mod generated {
    include!("generated/mod.rs");
}
EOF

(cd "$BUNDLE" && protoc -I /usr/include -I . --plugin=protoc-gen-rmicro="$RMICRO_BIN" \
  --rmicro_out="$PROBE/src/generated" --rmicro_opt=include_file=mod.rs "@$TMP/files.txt") \
  >"$TMP/protoc.log" 2>&1 || {
  echo "protoc-gen-rmicro failed:" >&2
  grep -v 'warning: Import' "$TMP/protoc.log" >&2
  exit 1
}
grep -v 'warning: Import' "$TMP/protoc.log" >&2 || true

packages=$(find "$PROBE/src/generated" -name '*.rs' ! -name mod.rs | wc -l)
services=$(cat "$PROBE/src/generated"/*.rs | grep -c '^pub trait [A-Za-z0-9_]*Handler\b' || true)
echo "probe: $(wc -l <"$TMP/roots.txt") root files from ${#ROOTS[@]} dirs; $(wc -l <"$TMP/files.txt") files with imports;" \
  "$packages packages, $services services generated ($(du -sb "$PROBE/src/generated" | cut -f1) bytes)"
echo "packages: $(cd "$PROBE/src/generated" && ls ./*.rs | sed 's|^\./||; s|\.rs$||' | grep -vx mod | tr '\n' ' ')"

LOG=$WORK/compile-probe.log
echo "building $PROBE (offline, CARGO_TARGET_DIR=$PROBE_TARGET) ..." >&2
if (cd "$PROBE" && CARGO_TARGET_DIR=$PROBE_TARGET cargo build --offline --color never) >"$LOG" 2>&1; then
  warnings=$(grep -c '^warning' "$LOG" || true)
  echo "compile-probe: OK — the generated code compiles ($warnings warning lines; log $LOG)"
else
  errors=$(grep -c '^error' "$LOG" || true)
  echo "compile-probe: FAILED — $errors error lines; first 40 lines from the first error (full log $LOG):"
  sed -n '/^error/,$p' "$LOG" | head -40
  exit 1
fi
