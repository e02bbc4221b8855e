#!/usr/bin/env bash
# Instructions per proxied request, counted exactly by callgrind, for one or more gateway
# binaries alternated in one sitting (a sampling profile or requests/s cannot tell changes of a
# few hundred instructions per request apart on a shared VM; this can):
#
#   bash bench/gateway/count.sh OLD_BINARY NEW_BINARY [...]
#
# A target named `floor-MODE` is instead one of the floor proxies (src/bin/floor.rs: hyper,
# inline, raw, own, local), for the cost of the HTTP stack beneath the gateway's own work; one
# named `nginx` is nginx's plain `proxy_pass` as run.sh configures it, in one process (no
# master), for the peer's own count.
#
# Each binary runs `rmicro api --workers 1` on etcd under `valgrind --tool=callgrind`, is driven
# by `wrk -t1 -c8` for DURATION (10s) after a 1 s warm-up, and is stopped; its instructions
# (startup included, the same for each) are divided by the requests it answered. ROUNDS (2)
# rounds, the binaries alternated in each. Needs valgrind, wrk, etcd and the bench backend
# (built by run.sh, or here). KEEP=DIR keeps each profile there, for callgrind_annotate.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/gateway
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
(($#)) || { echo "usage: $0 GATEWAY_BINARY|floor-MODE..." >&2; exit 2; }

missing=()
for tool in valgrind wrk etcd curl nginx; do command -v "$tool" >/dev/null || missing+=("$tool"); done
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

declare -A COUNTS
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    out=$TMP/callgrind.out
    announce=
    case $bin in
      floor-*) command=("$FLOOR_BIN" "${bin#floor-}" 127.0.0.1:0 "$BACKEND") ;;
      nginx)
        # One process serving (no master, not daemonised), so callgrind sees all its work; it
        # says where it listens as the other targets do.
        nginx_port=$(port)
        mkdir -p "$TMP/nginx"
        cat >"$TMP/nginx/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/client_body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  upstream backend {
    server $BACKEND;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
        command=(nginx -c "$TMP/nginx/nginx.conf")
        announce="listening on 127.0.0.1:$nginx_port"
        ;;
      *) command=("$bin" api --address 127.0.0.1:0 --workers 1 --registry etcd --registry-address "$ETCD") ;;
    esac
    {
      [[ -z $announce ]] || echo "$announce"
      RUST_LOG=warn exec valgrind --tool=callgrind --callgrind-out-file="$out" "${command[@]}"
    } >"$TMP/gateway.log" 2>&1 &
    pid=$!
    wait_for 60 grep -q '^listening on [^ ]' "$TMP/gateway.log"
    addr=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$TMP/gateway.log" | head -1)
    wait_for 60 http_200 "http://$addr/bench/x"
    warm=$(wrk -t1 -c8 -d1s "http://$addr/bench/x")
    measured=$(wrk -t1 -c8 -d"$DURATION" "http://$addr/bench/x")
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    requests=$(($(printf '%s\n%s\n' "$warm" "$measured" |
      sed -n 's/^ *\([0-9][0-9]*\) requests in.*/\1/p' | paste -sd+)))
    instructions=$(sed -n 's/^summary: //p' "$out")
    # Startup and shutdown are in the total too: the same for each binary, and small against
    # some 10^5 requests.
    per=$((instructions / requests))
    echo "round $round  $bin  requests $requests  instructions/request $per"
    COUNTS[$bin]+="$per "
    if [[ -n ${KEEP:-} ]]; then
      mkdir -p "$KEEP"
      mv "$out" "$KEEP/callgrind.$(basename "$bin").$round"
    fi
    rm -f "$out"
  done
done
echo "== instructions per proxied request, by round"
for bin in "$@"; do echo "$bin: ${COUNTS[$bin]}"; done
