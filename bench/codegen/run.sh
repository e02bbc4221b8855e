#!/usr/bin/env bash
# Code-generation benchmark: protoc-gen-rmicro against protoc-gen-prost + protoc-gen-tonic,
# over a few thousand real googleapis protos, with protoc alone as the floor.
#
#   bash bench/codegen/run.sh            # RUNS=3 by default
#   RUNS=5 bash bench/codegen/run.sh
#   RMICRO_BIN=/path/to/protoc-gen-rmicro bash bench/codegen/run.sh   # benchmark that binary instead
#   VALIDATE_ONLY=1 bash bench/codegen/run.sh   # stop after settling the file list
#
# It installs what it lacks (protoc, the well-known types, GNU time, the two reference
# plugins, the googleapis bundle), builds protoc-gen-rmicro in release, picks the file list,
# then runs the three commands RUNS times each, interleaved, and prints a table.
# Everything it downloads or writes goes under bench/work/ (gitignored) or a temp dir.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$ROOT/bench/work
RUNS=${RUNS:-3}
# Reference plugins: 0.5.0 of both is the release built on prost-build 0.14 / tonic-build 0.14.
PROST_VERSION=0.5.0
TONIC_VERSION=0.5.0
# npm package carrying a googleapis tree (plus grafeas and protobuf's own protos).
PROTO_FILES_VERSION=5.0.3

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$WORK"
cd "$WORK" # nothing below writes into the source tree
RESULTS=$WORK/codegen-results.txt
LOGS=$WORK/codegen-logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
TMP_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/rmicro-codegen-bench.XXXXXX")
trap 'rm -rf "$TMP_ROOT"' EXIT

say() { printf '%s\n' "$*" | tee -a "$RESULTS"; }
: >"$RESULTS"

# ---------------------------------------------------------------------------------------------
# 1. Tools
# ---------------------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v protoc >/dev/null || apt_install protobuf-compiler
# protoc adds <its prefix>/include as a fallback import path; with Debian's protoc that is
# /usr/include, where libprotobuf-dev puts the well-known types.
WKT_INCLUDE=$(cd "$(dirname "$(command -v protoc)")/../include" 2>/dev/null && pwd || echo /usr/include)
[ -f "$WKT_INCLUDE/google/protobuf/descriptor.proto" ] || apt_install libprotobuf-dev
[ -f "$WKT_INCLUDE/google/protobuf/descriptor.proto" ] || WKT_INCLUDE=/usr/include
[ -x /usr/bin/time ] || apt_install time
command -v npm >/dev/null || apt_install nodejs npm

cargo_install() { # NAME VERSION, into $WORK/bin unless that exact version is there already
  if ! cargo install --list --root "$WORK" 2>/dev/null | grep -qx "$1 v$2:"; then
    echo "installing $1 $2 into $WORK/bin ..." >&2
    env -u CARGO_TARGET_DIR cargo install --quiet --locked --root "$WORK" "$1@$2"
  fi
}
cargo_install protoc-gen-prost "$PROST_VERSION"
cargo_install protoc-gen-tonic "$TONIC_VERSION"
PROST_BIN=$WORK/bin/protoc-gen-prost
TONIC_BIN=$WORK/bin/protoc-gen-tonic

BUNDLE=$WORK/node_modules/google-proto-files
have_bundle_version() {
  [ -f "$BUNDLE/package.json" ] &&
    [ "$(node -p "require('$BUNDLE/package.json').version")" = "$PROTO_FILES_VERSION" ]
}
if ! have_bundle_version; then
  echo "installing google-proto-files@$PROTO_FILES_VERSION into $WORK ..." >&2
  npm install --silent --no-audit --no-fund --prefix "$WORK" "google-proto-files@$PROTO_FILES_VERSION" >/dev/null
fi

# ---------------------------------------------------------------------------------------------
# 3. protoc-gen-rmicro, release
# ---------------------------------------------------------------------------------------------
echo "building protoc-gen-rmicro (release) ..." >&2
(cd "$ROOT" && cargo build --quiet --release -p protoc-gen-rmicro)
RMICRO_BIN=${RMICRO_BIN:-$CARGO_TARGET_DIR/release/protoc-gen-rmicro}

# Shims: each plugin runs under GNU time so its own peak RSS and wall time are recorded.
# (GNU time on protoc reports the max RSS over protoc *and* its reaped children, so protoc's
# own figure cannot tell the plugin's memory apart.) protoc's pipes pass straight through.
SHIMS=$TMP_ROOT/shims
mkdir -p "$SHIMS"
make_shim() { # NAME REAL_BINARY
  cat >"$SHIMS/$1" <<EOF
#!/bin/sh
if [ -n "\${RMICRO_BENCH_MEASURE_DIR:-}" ]; then
  exec /usr/bin/time -f '%e %M %U %S' -o "\$RMICRO_BENCH_MEASURE_DIR/$1" '$2' "\$@"
fi
exec '$2' "\$@"
EOF
  chmod +x "$SHIMS/$1"
}
make_shim protoc-gen-rmicro "$RMICRO_BIN"
make_shim protoc-gen-prost "$PROST_BIN"
make_shim protoc-gen-tonic "$TONIC_BIN"

# ---------------------------------------------------------------------------------------------
# Versions and machine
# ---------------------------------------------------------------------------------------------
say "== rmicro codegen benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
say "machine: nproc=$(nproc), cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), mem: $(free -g | awk '/^Mem:/{print $2}') GiB"
say "protoc: $(protoc --version)   well-known types from: $WKT_INCLUDE/google/protobuf"
say "protoc-gen-rmicro: $("$RMICRO_BIN" --version 2>&1 | head -1)   (git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && echo ', dirty tree'))"
say "protoc-gen-prost: $("$PROST_BIN" --version </dev/null 2>&1 | head -1)   protoc-gen-tonic: $("$TONIC_BIN" --version </dev/null 2>&1 | head -1)   (cargo install --locked)"
say "rustc: $(rustc --version)"
say "google-proto-files: $PROTO_FILES_VERSION (npm)"
if [ -f "$BUNDLE/google/protobuf/descriptor.proto" ]; then
  say "note: the bundle ships its own google/protobuf/descriptor.proto ($(wc -l <"$BUNDLE/google/protobuf/descriptor.proto") lines, with editions;" \
    "protoc's has $(wc -l <"$WKT_INCLUDE/google/protobuf/descriptor.proto")). protoc takes the first match on its import path," \
    "so -I $WKT_INCLUDE comes first and the well-known types are protoc's own."
fi

# ---------------------------------------------------------------------------------------------
# 2. The file list
# ---------------------------------------------------------------------------------------------
# Rule: every .proto in the bundle except google/ads/** (4800 files: near-identical copies of
# each Google Ads API version) and google/protobuf/** (the well-known types come from protoc's
# own include; the rest there are protobuf's own test protos, some in editions syntax).
# Then drop any file protoc 3.21 alone rejects. Import paths: $WKT_INCLUDE first, so the
# bundle's newer google/protobuf/descriptor.proto never shadows protoc's own.
LISTS=$WORK/codegen-lists
mkdir -p "$LISTS"
(cd "$BUNDLE" && find . -name '*.proto' -not -path './google/ads/*' -not -path './google/protobuf/*' |
  sed 's|^\./||' | LC_ALL=C sort) >"$LISTS/candidates.txt"

protoc_on() { # LIST ARGS... — protoc over the list, from the bundle root
  local list=$1
  shift
  (cd "$BUNDLE" && protoc -I "$WKT_INCLUDE" -I . "$@" "@$list")
}
protoc_one() { # FILE ARGS...
  local file=$1
  shift
  (cd "$BUNDLE" && protoc -I "$WKT_INCLUDE" -I . "$@" "$file")
}
export -f protoc_one
export BUNDLE WKT_INCLUDE

cp "$LISTS/candidates.txt" "$LISTS/files.txt"
: >"$LISTS/excluded.txt"
if ! protoc_on "$LISTS/files.txt" -o "$TMP_ROOT/check.pb" >"$LOGS/protoc-check.log" 2>&1; then
  echo "protoc rejects the full candidate set; checking each file alone ..." >&2
  tr '\n' '\0' <"$LISTS/candidates.txt" |
    xargs -0 -P "$(nproc)" -I{} bash -c 'protoc_one "$1" -o /dev/null >/dev/null 2>&1 || echo "$1"' _ {} |
    LC_ALL=C sort >"$LISTS/protoc-rejected.txt"
  while read -r f; do
    say "NOTE: excluded $f — protoc alone rejects it: $(protoc_one "$f" -o /dev/null 2>&1 | grep -v 'warning:' | head -1)"
    echo "$f protoc" >>"$LISTS/excluded.txt"
  done <"$LISTS/protoc-rejected.txt"
  LC_ALL=C comm -23 "$LISTS/candidates.txt" "$LISTS/protoc-rejected.txt" >"$LISTS/files.txt"
  if ! protoc_on "$LISTS/files.txt" -o "$TMP_ROOT/check.pb" >"$LOGS/protoc-check.log" 2>&1; then
    echo "protoc still rejects the set after dropping single-file failures:" >&2
    grep -v 'warning:' "$LOGS/protoc-check.log" | head -20 >&2
    exit 1
  fi
fi

# Plugin validation (also the warm-up run). A plugin that fails on some files: name them,
# exclude them for every command (so all three still run over one list), and say so.
GEN_RMICRO=(--plugin=protoc-gen-rmicro="$SHIMS/protoc-gen-rmicro")
GEN_PAIR=(--plugin=protoc-gen-prost="$SHIMS/protoc-gen-prost" --plugin=protoc-gen-tonic="$SHIMS/protoc-gen-tonic")
gen_args() { # WHICH OUTDIR
  case $1 in
    rmicro) echo "${GEN_RMICRO[@]}" "--rmicro_out=$2" ;;
    pair) echo "${GEN_PAIR[@]}" "--prost_out=$2" "--tonic_out=$2" ;;
  esac
}
gen_passes() { # WHICH LIST — does the plugin (pair) succeed over LIST?
  local o rc=0
  o=$(mktemp -d "$TMP_ROOT/bisect.XXXXXX")
  # shellcheck disable=SC2046
  protoc_on "$2" $(gen_args "$1" "$o") >/dev/null 2>&1 || rc=1
  rm -rf "$o"
  return "$rc"
}
bisect_failures() { # WHICH LIST — prints the files that fail; LIST is known to fail
  local which=$1 list=$2 n a b
  n=$(wc -l <"$list")
  if [ "$n" -le 1 ]; then
    cat "$list"
    return
  fi
  a=$(mktemp "$TMP_ROOT/half.XXXXXX")
  b=$(mktemp "$TMP_ROOT/half.XXXXXX")
  head -n $((n / 2)) "$list" >"$a"
  tail -n +$((n / 2 + 1)) "$list" >"$b"
  local found=0
  if ! gen_passes "$which" "$a"; then bisect_failures "$which" "$a"; found=1; fi
  if ! gen_passes "$which" "$b"; then bisect_failures "$which" "$b"; found=1; fi
  # Both halves pass but the whole fails: the failure needs files from both; name none.
  [ "$found" = 1 ] || echo "bisect: $n files fail together, each half passes ($(head -1 "$list") .. $(tail -1 "$list"))" >&2
  rm -f "$a" "$b"
}
exclude_failures() { # WHICH — one validation run; returns 0 when it passed
  local which=$1 out log
  out=$(mktemp -d "$TMP_ROOT/validate.XXXXXX")
  log=$LOGS/validate-$which.log
  # shellcheck disable=SC2046
  if protoc_on "$LISTS/files.txt" $(gen_args "$which" "$out") >"$log" 2>&1; then
    rm -rf "$out"
    return 0
  fi
  rm -rf "$out"
  say "NOTE: $which failed on the full list; its error output (non-warning lines):"
  grep -v 'warning: Import' "$log" | head -20 | sed 's/^/    /' | tee -a "$RESULTS"
  # Files named in the error output, else find them one file at a time.
  local bad=$TMP_ROOT/bad-$which.txt
  grep -v 'warning:' "$log" | grep -oE '[A-Za-z0-9_./-]+\.proto' | LC_ALL=C sort -u |
    LC_ALL=C comm -12 - "$LISTS/files.txt" >"$bad" || true
  if [ ! -s "$bad" ]; then
    echo "  (the error names no listed file; bisecting the list to find the failing files ...)" >&2
    bisect_failures "$which" "$LISTS/files.txt" | LC_ALL=C sort >"$bad"
  fi
  if [ ! -s "$bad" ]; then
    say "ERROR: $which fails on the full list but on no single file; cannot isolate. See $log"
    exit 1
  fi
  while read -r f; do
    local o msg
    o=$(mktemp -d "$TMP_ROOT/one.XXXXXX")
    # shellcheck disable=SC2046
    msg=$(protoc_one "$f" $(gen_args "$which" "$o") 2>&1 | grep -v 'warning:' | head -3 | tr '\n' ' ')
    rm -rf "$o"
    say "NOTE: excluded $f — $which fails on it: ${msg:-(passes alone; named in the full-list error)}"
    echo "$f $which" >>"$LISTS/excluded.txt"
  done <"$bad"
  LC_ALL=C comm -23 "$LISTS/files.txt" "$bad" >"$LISTS/files.next"
  mv "$LISTS/files.next" "$LISTS/files.txt"
  return 1
}
for round in 1 2 3 4; do
  ok=1
  exclude_failures rmicro || ok=0
  exclude_failures pair || ok=0
  [ "$ok" = 1 ] && break
  if [ "$round" = 4 ]; then
    say "ERROR: plugins still failing after $round rounds of exclusions"
    exit 1
  fi
done

NFILES=$(wc -l <"$LISTS/files.txt")
say "files: $NFILES of $(wc -l <"$LISTS/candidates.txt") candidates (every .proto in google-proto-files except google/ads/** and google/protobuf/**; excluded: $(wc -l <"$LISTS/excluded.txt"))"
say "file list: $LISTS/files.txt (sha256 $(sha256sum "$LISTS/files.txt" | cut -c1-16)); exclusions with reasons: $LISTS/excluded.txt"
[ -n "${VALIDATE_ONLY:-}" ] && exit 0

# ---------------------------------------------------------------------------------------------
# 4. Measured runs, interleaved: floor, rmicro, pair; RUNS rounds
# ---------------------------------------------------------------------------------------------
DATA=$TMP_ROOT/data.tsv # which run wall tree_rss_kb plugin_wall plugin_rss_kb out_files out_bytes cpu
: >"$DATA"
# The machine may be shared: before each run wait (up to QUIET_WAIT s) until the other
# processes use under QUIET_PCT % of the CPUs, and after it report the CPU time the rest of
# the machine used meanwhile (all busy CPU time minus this command's user+sys).
HZ=$(getconf CLK_TCK)
cpu_busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
busy_pct() { # % of all CPUs busy over 3 s
  awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat >"$TMP_ROOT/stat1"
  sleep 3
  awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat >"$TMP_ROOT/stat2"
  paste "$TMP_ROOT/stat1" "$TMP_ROOT/stat2" | awk '{b=$3-$1; i=$4-$2; printf "%d", ((b + i) > 0 ? 100 * b / (b + i) : 0)}'
}
wait_quiet() {
  local waited=0 p
  p=$(busy_pct)
  while [ "$p" -gt "${QUIET_PCT:-10}" ] && [ "$waited" -lt "${QUIET_WAIT:-900}" ]; do
    [ "$waited" = 0 ] && echo "  (machine ${p}% busy; waiting for it to quiet down ...)" >&2
    sleep 7
    waited=$((waited + 10))
    p=$(busy_pct)
  done
  [ "$p" -gt "${QUIET_PCT:-10}" ] && say "  NOTE: still ${p}% busy after ${waited}s; measuring anyway"
  return 0
}
measure() { # WHICH RUN
  local which=$1 run=$2 out m
  out=$(mktemp -d "$TMP_ROOT/out-$which.XXXXXX")
  m=$(mktemp -d "$TMP_ROOT/m.XXXXXX")
  local args
  case $which in
    floor) args="--include_imports --descriptor_set_out=$out/descriptor_set.pb" ;;
    *) args=$(gen_args "$which" "$out") ;;
  esac
  sync
  wait_quiet
  local t0
  t0=$(cpu_busy_ticks)
  # shellcheck disable=SC2086
  RMICRO_BENCH_MEASURE_DIR=$m /usr/bin/time -f '%e %M %U %S' -o "$m/protoc" \
    bash -c 'cd "$BUNDLE" && exec protoc -I "$WKT_INCLUDE" -I . "$@"' _ $args "@$LISTS/files.txt" \
    >"$LOGS/run-$which-$run.log" 2>&1 || {
    say "ERROR: $which run $run failed:"
    grep -v 'warning:' "$LOGS/run-$which-$run.log" | head -20
    exit 1
  }
  local wall rss pwall=0 prss=0 pcpu=0 p w r pu ps
  local usr sys cpu
  read -r wall rss usr sys < <(tail -1 "$m/protoc")
  cpu=$(awk -v a="$usr" -v b="$sys" 'BEGIN{printf "%.2f", a+b}')
  local others
  others=$(awk -v t0="$t0" -v t1="$(cpu_busy_ticks)" -v hz="$HZ" -v c="$cpu" 'BEGIN{o=(t1-t0)/hz-c; printf "%.1f", (o < 0 ? 0 : o)}')
  for p in protoc-gen-rmicro protoc-gen-prost protoc-gen-tonic; do
    [ -f "$m/$p" ] || continue
    read -r w r pu ps < <(tail -1 "$m/$p")
    echo "$which $run $p $w $r $pu $ps" >>"$TMP_ROOT/plugins.tsv"
    pwall=$(awk -v a="$pwall" -v b="$w" 'BEGIN{printf "%.2f", a+b}')
    pcpu=$(awk -v a="$pcpu" -v b="$pu" -v c="$ps" 'BEGIN{printf "%.2f", a+b+c}')
    [ "$r" -gt "$prss" ] && prss=$r
  done
  local files bytes
  files=$(find "$out" -type f | wc -l)
  bytes=$(find "$out" -type f -printf '%s\n' | awk '{s+=$1} END{print s+0}')
  echo "$which $run $wall $rss $pwall $prss $files $bytes $cpu $others $pcpu" >>"$DATA"
  printf '  run %d %-6s wall %6.2fs cpu %6.2fs | plugin(s) wall %6.2fs cpu %6.2fs peak %4d MiB | protoc-tree peak %4d MiB | %d files, %d bytes | others used %s cpu-s\n' \
    "$run" "$which" "$wall" "$cpu" "$pwall" "$pcpu" $((prss / 1024)) $((rss / 1024)) "$files" "$bytes" "$others" | tee -a "$RESULTS"
  rm -rf "$out" "$m"
}
: >"$TMP_ROOT/plugins.tsv"
say ""
say "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (anything else busy on the 2 cores skews the times)"
say "runs (each writes into a fresh temp dir):"
for run in $(seq 1 "$RUNS"); do
  measure floor "$run"
  measure rmicro "$run"
  measure pair "$run"
done

say "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
say "other processes used $(awk '{s+=$10} END{printf "%.1f", s}' "$DATA") cpu-s in all during the measured runs (0 = the machine was ours alone)"

# ---------------------------------------------------------------------------------------------
# 5. Table
# ---------------------------------------------------------------------------------------------
median() { sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
col() { awk -v w="$1" -v c="$2" '$1==w{print $c}' "$DATA"; }
maxcol() { col "$1" "$2" | sort -g | tail -1; }
for w in floor rmicro pair; do
  eval "T_$w=\$(col $w 3 | median)"
  eval "TREE_$w=\$(maxcol $w 4)"
  eval "PW_$w=\$(col $w 5 | median)"
  eval "PR_$w=\$(maxcol $w 6)"
  eval "F_$w=\$(maxcol $w 7)"
  eval "B_$w=\$(maxcol $w 8)"
  eval "C_$w=\$(col $w 9 | median)"
  eval "PC_$w=\$(col $w 11 | median)"
  if [ "$(col $w 7 | sort -u | wc -l)" != 1 ] || [ "$(col $w 8 | sort -u | wc -l)" != 1 ]; then
    say "NOTE: $w produced different output sizes across runs: $(col $w 8 | tr '\n' ' ')"
  fi
done
# Memory figure: the plugin's own peak for rmicro and the pair (the larger of prost's and
# tonic's: protoc runs them one after the other), protoc's own for the floor.
MEM_floor=$TREE_floor
MEM_rmicro=$PR_rmicro
MEM_pair=$PR_pair
plug_stat() { awk -v w="$1" -v p="$2" -v c="$3" '$1==w && $3==p {print $c}' "$TMP_ROOT/plugins.tsv"; }

mib() { awk -v k="$1" 'BEGIN{printf "%.0f", k/1024}'; }
say ""
say "== results: $NFILES files, $RUNS runs each; times = medians (wall and user+sys cpu of the whole protoc command, and of the plugin processes), memory = max peak RSS"
say "$(printf '%-18s %7s %13s %7s %12s %13s %13s %10s %12s' command 'wall s' 'wall-floor s' 'cpu s' 'cpu-floor s' 'plugin cpu s' 'peak RSS MiB' 'out files' 'out bytes')"
row() { # LABEL WHICH MEMKB
  local label=$1 w=$2 t pc f b c
  t=$(eval echo "\$T_$w"); pc=$(eval echo "\$PC_$w"); f=$(eval echo "\$F_$w"); b=$(eval echo "\$B_$w"); c=$(eval echo "\$C_$w")
  [ "$w" = floor ] && pc=-
  say "$(printf '%-18s %7.2f %13.2f %7.2f %12.2f %13s %13s %10s %12s' "$label" "$t" "$(awk -v a="$t" -v b="$T_floor" 'BEGIN{print a-b}')" "$c" "$(awk -v a="$c" -v b="$C_floor" 'BEGIN{print a-b}')" "$pc" "$(mib "$3")" "$f" "$b")"
}
row "floor (protoc -o)" floor "$MEM_floor"
row "rmicro" rmicro "$MEM_rmicro"
row "prost+tonic" pair "$MEM_pair"
say "  memory column: floor = protoc's peak RSS; rmicro / prost+tonic = the plugin process's own peak RSS."
say "  protoc-tree peak RSS (protoc and its children, as GNU time reports it): floor $(mib "$TREE_floor"), rmicro $(mib "$TREE_rmicro"), prost+tonic $(mib "$TREE_pair") MiB"
pp() { # WHICH PLUGIN — "wall Xs, cpu Ys, peak Z MiB" (medians; max peak)
  local say_part
  say_part="wall $(plug_stat "$1" "$2" 4 | median)s, cpu $(plug_stat "$1" "$2" 6 | paste -d' ' - <(plug_stat "$1" "$2" 7) | awk '{print $1+$2}' | median)s, peak $(mib "$(plug_stat "$1" "$2" 5 | sort -g | tail -1)") MiB"
  echo "$say_part"
}
say "  per plugin process: rmicro $(pp rmicro protoc-gen-rmicro); prost $(pp pair protoc-gen-prost); tonic $(pp pair protoc-gen-tonic)"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN{print a-b}'; }
R_WALL=$(ratio "$T_rmicro" "$T_pair")
R_WALLF=$(ratio "$(minus "$T_rmicro" "$T_floor")" "$(minus "$T_pair" "$T_floor")")
R_CPU=$(ratio "$C_rmicro" "$C_pair")
R_CPUF=$(ratio "$(minus "$C_rmicro" "$C_floor")" "$(minus "$C_pair" "$C_floor")")
R_PCPU=$(ratio "$PC_rmicro" "$PC_pair")
R_MEM=$(ratio "$MEM_rmicro" "$MEM_pair")
verdict() {
  awk -v r="$1" 'BEGIN{ if (r <= 0.5) print "meets the aim (at most half)"; else if (r <= 1.0) print "meets the target (no slower), not the aim of half"; else print "MISSES the target (slower than the pair)" }'
}
say ""
say "ratios rmicro / prost+tonic (target: <= 1.00, no slower than the pair; aim: <= 0.50):"
say "$(printf '  %-44s %5s  %s' 'wall, whole command' "$R_WALL" "$(verdict "$R_WALL")")"
say "$(printf '  %-44s %5s  %s' 'wall minus the protoc floor' "$R_WALLF" "$(verdict "$R_WALLF")")"
say "$(printf '  %-44s %5s  %s' 'cpu (user+sys of protoc and plugins)' "$R_CPU" "$(verdict "$R_CPU")")"
say "$(printf '  %-44s %5s  %s' 'cpu minus the protoc floor' "$R_CPUF" "$(verdict "$R_CPUF")")"
say "$(printf '  %-44s %5s  %s' 'plugin process cpu (rmicro vs prost+tonic)' "$R_PCPU" "$(verdict "$R_PCPU")")"
say "$(printf '  %-44s %5s' 'plugin peak RSS' "$R_MEM")"
say "  (cpu figures hold up better than wall ones when something else runs on the machine)"
say ""
say "results saved in $RESULTS; logs in $LOGS"
