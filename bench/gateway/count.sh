#!/usr/bin/env bash
# Instructions per proxied request, counted exactly by callgrind, for one or more gateway
# binaries alternated in one sitting (a sampling profile or requests/s cannot tell changes of a
# few hundred instructions per request apart on a shared VM; this can):
#
#   bash bench/gateway/count.sh OLD_BINARY NEW_BINARY [...]
#
# A target named `floor-MODE` is instead one of the floor proxies (src/bin/floor.rs: hyper,
# inline, raw, own, local), for the cost of the HTTP stack beneath the gateway's own work; one
# named `nginx` is nginx's plain `proxy_pass` as run.sh configures it (nginx-conf.sh), in one
# process (no master), for the peer's own count; `nginx-fwd` the same also passing the client's
# Host and address as the gateway does.
#
# Each binary runs `rmicro api --workers 1` on etcd under `valgrind --tool=callgrind`, is warmed
# up for 1 s uninstrumented, then counted while `wrk -t1 -c8` drives it for DURATION (10s), and
# stopped; the instructions counted are divided by the requests of that run (startup, readiness
# checks and warm-up, which differ from target to target, are left out). A failed or non-2xx
# request fails the run. ROUNDS (2) rounds, the targets alternated in each. Needs valgrind, wrk,
# etcd and the bench backend (built here). KEEP=DIR keeps each profile there, for
# callgrind_annotate.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/gateway
# shellcheck source=nginx-conf.sh
. "$HERE/nginx-conf.sh"
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
(($#)) || { echo "usage: $0 GATEWAY_BINARY|floor-MODE..." >&2; exit 2; }

missing=()
tools=(valgrind wrk etcd curl)
[[ " $* " == *" nginx"* ]] && tools+=(nginx)
for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  missing=("${missing[@]/etcd/etcd-server}")
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PROTOC=${PROTOC:-$(command -v protoc || true)}
CARGO_TARGET_DIR=$ROOT/target/bench-gateway \
  cargo build --release --quiet --manifest-path "$HERE/Cargo.toml" --bin bench-backend --bin floor
BACKEND_BIN=$ROOT/target/bench-gateway/release/bench-backend
FLOOR_BIN=$ROOT/target/bench-gateway/release/floor

TMP=$(mktemp -d /tmp/rmicro-bench-count.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # SECONDS COMMAND...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "error: not ready: $*" >&2; return 1; }
    sleep 0.1
  done
}
http_200() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1") == 200 ]]; }

ETCD=127.0.0.1:$(port)
PEER=127.0.0.1:$(port)
etcd --name count --data-dir "$TMP/etcd" --listen-client-urls "http://$ETCD" \
  --advertise-client-urls "http://$ETCD" --listen-peer-urls "http://$PEER" \
  --initial-advertise-peer-urls "http://$PEER" --initial-cluster "count=http://$PEER" \
  >"$TMP/etcd.log" 2>&1 &
PIDS+=($!)
wait_for 20 http_200 "http://$ETCD/health"
"$BACKEND_BIN" "$ETCD" 127.0.0.1:0 >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_for 10 grep -q '^listening on ' "$TMP/backend.log"
BACKEND=$(sed -n 's/^listening on //p' "$TMP/backend.log" | head -1)

# wrk's output for `URL` over `DURATION`, failing when any request failed or was not a 2xx.
drive() {
  local result
  result=$(wrk -t1 -c8 -d"$2" "$1")
  if grep -qE 'Non-2xx|Socket errors' <<<"$result"; then
    echo "error: requests failed against $1:" >&2
    echo "$result" >&2
    return 1
  fi
  echo "$result"
}

COUNTS=()
for round in $(seq "$ROUNDS"); do
  for ((i = 1; i <= $#; i++)); do
    target=${!i}
    out=$TMP/callgrind.$i.$round
    log=$TMP/target.$i.$round.log
    announce=
    case $target in
      floor-*) command=("$FLOOR_BIN" "${target#floor-}" 127.0.0.1:0 "$BACKEND") ;;
      nginx | nginx-fwd)
        # One process serving (no master, not daemonised), so callgrind sees all its work; it
        # says where it listens as the other targets do. `nginx-fwd` also passes the client's
        # Host and appends to X-Forwarded-For, as the gateway does.
        nginx_port=$(port)
        mkdir -p "$TMP/nginx"
        fwd=()
        [[ $target == nginx-fwd ]] && fwd=("127.0.0.1:$(port)")
        {
          printf 'daemon off;\nmaster_process off;\n'
          nginx_conf "$TMP/nginx" "$BACKEND" 1 "127.0.0.1:$nginx_port" "${fwd[@]}"
        } >"$TMP/nginx/nginx.conf"
        command=(nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf")
        announce="listening on ${fwd[0]:-127.0.0.1:$nginx_port}"
        ;;
      *) command=("$target" api --address 127.0.0.1:0 --workers 1 --registry etcd --registry-address "$ETCD") ;;
    esac
    {
      [[ -z $announce ]] || echo "$announce"
      RUST_LOG=warn exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
        "${command[@]}"
    } >"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_for 60 grep -q '^listening on [^ ]' "$log"
    addr=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$log" | head -1)
    wait_for 60 http_200 "http://$addr/bench/x"
    drive "http://$addr/bench/x" 1s >/dev/null
    callgrind_control -i on "$pid" >/dev/null
    measured=$(drive "http://$addr/bench/x" "$DURATION")
    callgrind_control -i off "$pid" >/dev/null
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    requests=$(sed -n 's/^ *\([0-9][0-9]*\) requests in.*/\1/p' <<<"$measured")
    # `totals`, not `summary`: callgrind leaves the summary at 0 when instrumentation starts off.
    instructions=$(sed -n 's/^totals: //p' "$out")
    per=$((instructions / requests))
    echo "round $round  $target  requests $requests  instructions/request $per"
    COUNTS[i]+="$per "
    if [[ -n ${KEEP:-} ]]; then
      mkdir -p "$KEEP"
      mv "$out" "$KEEP/callgrind.$i-$(basename "$target").$round"
    fi
  done
done
echo "== instructions per proxied request, by round"
for ((i = 1; i <= $#; i++)); do echo "${!i}: ${COUNTS[i]}"; done
