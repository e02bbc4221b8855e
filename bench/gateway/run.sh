#!/usr/bin/env bash
# Gateway benchmark: `rmicro api` (HTTP proxy, etcd registry) against nginx as a reverse proxy
# and against the backend reached directly, with wrk, in one run.
#
#   bash bench/gateway/run.sh
#
# Installs wrk, nginx and etcd-server if missing; builds `rmicro` (release, root workspace) and
# the backend in this directory (release, target/bench-gateway); starts etcd, the backend, the
# gateway and nginx on free 127.0.0.1 ports with everything in a temp dir; runs wrk against the
# targets, ROUNDS rounds interleaved; prints the medians. The targets: the backend direct, the
# gateway, nginx with a plain `proxy_pass` (the peer of the target), and the same nginx also
# passing the client's Host and appending to X-Forwarded-For as the gateway does (the same work
# per request). Every process it starts is stopped on exit.
#
# Knobs (environment): ROUNDS (3), DURATION (10s), THREADS (2), CONNECTIONS (32),
# WARMUP (2s), NGINX_WORKERS (1; `auto` gives nginx both cores), GATEWAY_WORKERS (as
# NGINX_WORKERS: the same number of worker threads as nginx has worker processes; `auto` leaves
# the gateway's default, one per CPU), EXTRA_SERVICES (100; 0 skips the extra measurement of
# the gateway with that many other services in the registry), LIGHT_CONNECTIONS (4; 0 skips the
# extra light-load measurement of gateway and nginx with that many connections, where each
# request's latency rather than CPU bounds the rate), FLOORS (0; 1 adds minimal proxies to the
# rounds, src/bin/floor.rs, which tell the gateway's own cost from its HTTP stack's),
# FLOOR_LIST ("hyper inline raw own": which floors FLOORS=1 adds; hyper's server and client
# with none of the gateway's work, hyper's server with the backend request written and read by
# the request's task, no hyper at all, an own HTTP/1 server keeping the `http` types; `local`
# is a fifth). bench/gateway/count.sh counts the instructions per request of the gateway, the
# floors and nginx exactly.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/gateway
# shellcheck source=nginx-conf.sh
. "$HERE/nginx-conf.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2s}
NGINX_WORKERS=${NGINX_WORKERS:-1}
GATEWAY_WORKERS=${GATEWAY_WORKERS:-$NGINX_WORKERS}
GATEWAY_WORKER_FLAGS=()
[ "$GATEWAY_WORKERS" != auto ] && GATEWAY_WORKER_FLAGS=(--workers "$GATEWAY_WORKERS")
EXTRA_SERVICES=${EXTRA_SERVICES:-100}
LIGHT_CONNECTIONS=${LIGHT_CONNECTIONS:-4}
FLOORS=${FLOORS:-0}
WRK_ARGS=(-t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency)

# ---------------------------------------------------------------- tools
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# etcd-client (rmicro-runtime's etcd feature) runs protoc in its build script.
if ! command -v protoc >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
fi
export PROTOC=${PROTOC:-$(command -v protoc)}

echo "== build (release)"
(cd "$ROOT" && cargo build --release --quiet -p rmicro)
GATEWAY_BIN=$ROOT/target/release/rmicro
CARGO_TARGET_DIR=$ROOT/target/bench-gateway \
  cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
BACKEND_BIN=$ROOT/target/bench-gateway/release/bench-backend
LOOKUP_BIN=$ROOT/target/bench-gateway/release/lookup
FLOOR_BIN=$ROOT/target/bench-gateway/release/floor

echo "== machine and versions"
echo "machine:  $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "rustc:    $(rustc --version)"
echo "wrk:      $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "nginx:    $(nginx -v 2>&1 | sed 's/^nginx version: //')"
echo "etcd:     $(etcd --version | head -1)"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run)"

# ---------------------------------------------------------------- processes and cleanup
TMP=$(mktemp -d /tmp/rmicro-bench-gateway.XXXXXX)
PIDS=()
cleanup() {
  local i pid
  # Newest first, so the backend still reaches etcd to deregister.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[i]}
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

USED_PORTS=" "
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    [[ $USED_PORTS == *" $port "* ]] && continue
    ss -Htln "sport = :$port" | grep -q . && continue
    USED_PORTS+="$port "
    echo "$port"
    return
  done
}

# wait_for DESCRIPTION SECONDS COMMAND...: retries COMMAND every 0.1 s.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "error: $what not ready within ${secs}s" >&2
      return 1
    fi
    sleep 0.1
  done
}

# listen_addr LOGFILE: the address after `listening on ` in LOGFILE.
listen_addr() { sed -n 's/^listening on //p' "$1" | head -1; }

http_200() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1") == 200 ]]; }

echo "== start"
ETCD_PORT=$(free_port)
ETCD_PEER=$(free_port)
ETCD=127.0.0.1:$ETCD_PORT
etcd --name bench --data-dir "$TMP/etcd" \
  --listen-client-urls "http://$ETCD" --advertise-client-urls "http://$ETCD" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER" \
  >"$TMP/etcd.log" 2>&1 &
PIDS+=($!)
wait_for "etcd on $ETCD" 20 http_200 "http://$ETCD/health"
echo "etcd      $ETCD"

"$BACKEND_BIN" "$ETCD" 127.0.0.1:0 >"$TMP/backend.log" 2>&1 &
BACKEND_PID=$!
PIDS+=($BACKEND_PID)
wait_for "backend" 10 grep -q '^listening on ' "$TMP/backend.log"
BACKEND=$(listen_addr "$TMP/backend.log")
wait_for "backend on $BACKEND" 10 http_200 "http://$BACKEND/bench/x"
echo "backend   $BACKEND (pid $BACKEND_PID)"

RUST_LOG=${RUST_LOG:-warn} "$GATEWAY_BIN" api --address 127.0.0.1:0 "${GATEWAY_WORKER_FLAGS[@]}" \
  --registry etcd --registry-address "$ETCD" >"$TMP/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=($GATEWAY_PID)
wait_for "gateway" 10 grep -q '^listening on ' "$TMP/gateway.log"
GATEWAY=$(listen_addr "$TMP/gateway.log")
# 200 once the backend's registration is in etcd and the gateway's registry cache has it.
wait_for "gateway routing /bench to the backend" 30 http_200 "http://$GATEWAY/bench/x"
echo "gateway   $GATEWAY (pid $GATEWAY_PID, workers $GATEWAY_WORKERS)"

NGINX_PORT=$(free_port)
NGINX=127.0.0.1:$NGINX_PORT
NGINX_FWD=127.0.0.1:$(free_port)
mkdir -p "$TMP/nginx"
nginx_conf "$TMP/nginx" "$BACKEND" "$NGINX_WORKERS" "$NGINX" "$NGINX_FWD" >"$TMP/nginx/nginx.conf"
nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' \
  >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
PIDS+=($NGINX_PID)
wait_for "nginx on $NGINX" 10 http_200 "http://$NGINX/bench/x"
wait_for "nginx on $NGINX_FWD" 10 http_200 "http://$NGINX_FWD/bench/x"
echo "nginx     $NGINX (master pid $NGINX_PID, worker_processes $NGINX_WORKERS; with the gateway's headers on $NGINX_FWD)"

# ---------------------------------------------------------------- measuring
TARGETS=(direct gateway nginx nginx-fwd)
declare -A URL=(
  [direct]="http://$BACKEND/bench/x"
  [gateway]="http://$GATEWAY/bench/x"
  [nginx]="http://$NGINX/bench/x"
  [nginx-fwd]="http://$NGINX_FWD/bench/x"
)
FLOOR_MODES=()
((FLOORS)) && read -ra FLOOR_MODES <<<"${FLOOR_LIST:-hyper inline raw own}"
declare -A FLOOR_PID
for mode in "${FLOOR_MODES[@]}"; do
  "$FLOOR_BIN" "$mode" 127.0.0.1:0 "$BACKEND" >"$TMP/floor-$mode.log" 2>&1 &
  FLOOR_PID[$mode]=$!
  PIDS+=($!)
  wait_for "floor $mode" 10 grep -q '^listening on ' "$TMP/floor-$mode.log"
  URL[floor-$mode]="http://$(listen_addr "$TMP/floor-$mode.log")/bench/x"
  TARGETS+=("floor-$mode")
  echo "floor     ${URL[floor-$mode]} ($mode, pid ${FLOOR_PID[$mode]})"
done

# The pids that make up a target's proxy (none for direct): nginx is master + workers.
proxy_pids() {
  case $1 in
    gateway) echo "$GATEWAY_PID" ;;
    nginx | nginx-fwd) echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true) ;;
    floor-*) echo "${FLOOR_PID[${1#floor-}]}" ;;
  esac
}
# Peak RSS (VmHWM) in KiB summed over pids.
hwm_kib() {
  local pid total=0 v
  for pid in "$@"; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
# CPU time (user + system) in clock ticks summed over pids.
cpu_ticks() {
  local pid total=0 v
  for pid in "$@"; do
    v=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# Parses wrk output: requests/s, p99 in ms, errors (socket errors + non-2xx/3xx), p50 in ms.
parse_wrk() {
  awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
      return v
    }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "99%" { p99 = ms($2) }
    $1 == "50%" { p50 = ms($2) }
    /Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { err += $5 }
    END { printf "%s %s %d %s\n", rps, p99, err, p50 }
  ' "$1"
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "== warm-up (${WARMUP} each, not counted)"
for t in "${TARGETS[@]}"; do
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "${URL[$t]}" >/dev/null
done

echo "== wrk ${WRK_ARGS[*]}, $ROUNDS rounds interleaved; wrk, backend and proxy share $(nproc) cores"
declare -A RPS P99 P50 ERR CPU
total_errors=0
for round in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    out=$TMP/wrk-$t-$round.txt
    pids=($(proxy_pids "$t"))
    before=$(cpu_ticks "${pids[@]}")
    wrk "${WRK_ARGS[@]}" "${URL[$t]}" >"$out"
    after=$(cpu_ticks "${pids[@]}")
    read -r rps p99 err p50 < <(parse_wrk "$out")
    [[ -n $rps && -n $p99 ]] || { echo "error: could not parse wrk output:" >&2; cat "$out" >&2; exit 1; }
    requests=$(awk '/requests in/ {print $1}' "$out")
    # Proxy CPU per request (µs), from utime+stime over the run (0 for direct: no proxy).
    cpu=$(awk -v d=$((after - before)) -v n="$requests" -v u="$TICK_US" 'BEGIN { printf "%.1f", n ? d * u / n : 0 }')
    RPS[$t]+="$rps "
    P99[$t]+="$p99 "
    P50[$t]+="$p50 "
    ERR[$t]=$((${ERR[$t]:-0} + err))
    CPU[$t]+="$cpu "
    total_errors=$((total_errors + err))
    printf 'round %d  %-9s %10.0f req/s  p50 %5.2f ms  p99 %5.2f ms  errors %d  proxy CPU %s us/req\n' \
      "$round" "$t" "$rps" "$p50" "$p99" "$err" "$cpu"
    if ((err)); then
      echo "--- wrk output with errors ($t, round $round):"
      cat "$out"
    fi
  done
done

# Peak RSS over the whole run (VmHWM is the process's high-water mark).
RSS_direct=$(hwm_kib "$BACKEND_PID")
RSS_gateway=$(hwm_kib $(proxy_pids gateway))
RSS_nginx=$(hwm_kib $(proxy_pids nginx))
NGINX_PROCS=$(proxy_pids nginx | wc -w)

declare -A MRPS MP99 MP50 MCPU
for t in "${TARGETS[@]}"; do
  MRPS[$t]=$(median ${RPS[$t]})
  MP99[$t]=$(median ${P99[$t]})
  MP50[$t]=$(median ${P50[$t]})
  MCPU[$t]=$(median ${CPU[$t]})
done
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo
echo "== results: median of $ROUNDS rounds (wrk ${WRK_ARGS[*]}, GET /bench/x, 13-byte body)"
printf '%-34s %12s %8s %8s %14s %16s %8s\n' target "requests/s" "p50 ms" "p99 ms" "peak RSS MiB" "proxy CPU us/req" errors
row() { printf '%-34s %12.0f %8.2f %8.2f %14s %16s %8d\n' "$1" "${MRPS[$2]}" "${MP50[$2]}" "${MP99[$2]}" "$3" "$4" "${ERR[$2]}"; }
row "direct (backend alone)" direct "$(mib "$RSS_direct")" -
row "gateway (workers $GATEWAY_WORKERS, etcd)" gateway "$(mib "$RSS_gateway")" "${MCPU[gateway]}"
row "nginx (workers $NGINX_WORKERS, $NGINX_PROCS procs)" nginx "$(mib "$RSS_nginx")" "${MCPU[nginx]}"
row "nginx, same Host and X-Forwarded-For" nginx-fwd "(same procs)" "${MCPU[nginx-fwd]}"
for mode in "${FLOOR_MODES[@]}"; do
  row "floor: $mode" "floor-$mode" "$(mib "$(hwm_kib "${FLOOR_PID[$mode]}")")" "${MCPU[floor-$mode]}"
done
echo "(peak RSS of direct = the backend; gateway and nginx exclude the backend; nginx sums master + workers)"
echo
echo "gateway/nginx   requests/s $(ratio "${MRPS[gateway]}" "${MRPS[nginx]}")  p99 $(ratio "${MP99[gateway]}" "${MP99[nginx]}")  peak RSS $(ratio "$RSS_gateway" "$RSS_nginx")"
# Each round runs the gateway and nginx back to back: on a noisy box, their ratio round by
# round says more than the ratio of the two medians (which may come from different rounds).
read -ra ROUND_G <<<"${RPS[gateway]}"
read -ra ROUND_N <<<"${RPS[nginx]}"
PER_ROUND=()
AHEAD=0
for i in "${!ROUND_G[@]}"; do
  PER_ROUND+=("$(ratio "${ROUND_G[i]}" "${ROUND_N[i]}")")
  awk -v g="${ROUND_G[i]}" -v n="${ROUND_N[i]}" 'BEGIN { exit !(g >= n) }' && AHEAD=$((AHEAD + 1))
done
echo "gateway/nginx   requests/s round by round ${PER_ROUND[*]} (median $(median "${PER_ROUND[@]}"); gateway ahead in $AHEAD of ${#PER_ROUND[@]})"
echo "gateway/nginx-fwd requests/s $(ratio "${MRPS[gateway]}" "${MRPS[nginx-fwd]}")  p99 $(ratio "${MP99[gateway]}" "${MP99[nginx-fwd]}")  (nginx doing the gateway's header work)"
echo "gateway/direct  requests/s $(ratio "${MRPS[gateway]}" "${MRPS[direct]}")  p99 $(ratio "${MP99[gateway]}" "${MP99[direct]}")"
for mode in "${FLOOR_MODES[@]}"; do
  echo "floor $mode/nginx requests/s $(ratio "${MRPS[floor-$mode]}" "${MRPS[nginx]}")  proxy CPU per request $(ratio "${MCPU[floor-$mode]}" "${MCPU[nginx]}")"
done
if awk -v g="${MRPS[gateway]}" -v n="${MRPS[nginx]}" 'BEGIN { exit !(g >= n) }'; then
  echo "target (gateway requests/s >= nginx requests/s): MET"
else
  echo "target (gateway requests/s >= nginx requests/s): NOT MET"
fi
if ((total_errors)); then
  echo "WARNING: wrk reported $total_errors errors/non-2xx responses (see above)"
fi

# ---------------------------------------------------------------- extra: the registry lookup
# The gateway calls registry.get_service(name) on every request; measured alone here, then the
# gateway once more with EXTRA_SERVICES other services registered (not part of the table above).
if ((EXTRA_SERVICES > 0)); then
  echo
  echo "== extra: per-request registry lookup (EtcdRegistry::get_service, from its cache)"
  "$LOOKUP_BIN" "$ETCD" 0 200000 | grep '^lookup:'
  "$LOOKUP_BIN" "$ETCD" "$EXTRA_SERVICES" 20000 --hold >"$TMP/lookup.log" 2>&1 &
  LOOKUP_PID=$!
  PIDS+=($LOOKUP_PID)
  wait_for "lookup with $EXTRA_SERVICES dummy services" 60 grep -q '^holding' "$TMP/lookup.log"
  grep '^lookup:' "$TMP/lookup.log"
  out=$TMP/wrk-gateway-extra.txt
  wrk "${WRK_ARGS[@]}" "${URL[gateway]}" >"$out"
  read -r rps p99 err _ < <(parse_wrk "$out")
  printf 'gateway with %d other services registered: %.0f req/s  p99 %.2f ms  errors %d  (median above: %.0f req/s)\n' \
    "$EXTRA_SERVICES" "$rps" "$p99" "$err" "${MRPS[gateway]}"
  ((err)) && cat "$out"
  kill -TERM "$LOOKUP_PID"
  wait "$LOOKUP_PID" || true
fi

# ---------------------------------------------------------------- extra: light load
# With few connections the rate is bounded by each request's latency through the proxy, not by
# CPU; gateway and nginx interleaved, ROUNDS rounds, medians (not part of the table above).
if ((LIGHT_CONNECTIONS > 0)); then
  light_threads=$((THREADS < LIGHT_CONNECTIONS ? THREADS : LIGHT_CONNECTIONS))
  LIGHT_ARGS=(-t"$light_threads" -c"$LIGHT_CONNECTIONS" -d"$DURATION" --latency)
  echo
  echo "== extra: light load, wrk ${LIGHT_ARGS[*]}, $ROUNDS rounds interleaved"
  declare -A LRPS LP50 LP99
  for round in $(seq "$ROUNDS"); do
    for t in gateway nginx; do
      out=$TMP/wrk-light-$t-$round.txt
      wrk "${LIGHT_ARGS[@]}" "${URL[$t]}" >"$out"
      read -r rps p99 err p50 < <(parse_wrk "$out")
      LRPS[$t]+="$rps "
      LP50[$t]+="$p50 "
      LP99[$t]+="$p99 "
      ((err)) && cat "$out"
    done
  done
  for t in gateway nginx; do
    printf '%-8s %10.0f req/s  p50 %6.3f ms  p99 %6.3f ms  (median of %d)\n' "$t" \
      "$(median ${LRPS[$t]})" "$(median ${LP50[$t]})" "$(median ${LP99[$t]})" "$ROUNDS"
  done
  echo "gateway/nginx at $LIGHT_CONNECTIONS connections: requests/s $(ratio "$(median ${LRPS[gateway]})" "$(median ${LRPS[nginx]})")  p50 $(ratio "$(median ${LP50[gateway]})" "$(median ${LP50[nginx]})")"
fi

if grep -qiE 'warn|error' "$TMP/gateway.log"; then
  echo "--- gateway log (warnings/errors):"
  grep -iE 'warn|error' "$TMP/gateway.log" | tail -20
fi
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (after the run)"
