#!/usr/bin/env bash
# Reads beside a bare handler's: GETs of existing keys, and a 90/10 read/write
# mix, against Meridian and against bare_kv, interleaved over RUNS rounds.
# Each target is preloaded with 100-byte values under distinct keys first
# (kv_put.lua, one wrk thread, PRELOAD seconds), then read with kv_get.lua.
#
# Usage: bench/reads.sh            (DURATION=10 RUNS=3 CONNECTIONS=50 KEYS=100000 PRELOAD=8)
# Environment: MERIDIAN_BIN (default target/release/meridian).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-10}"
RUNS="${RUNS:-3}"
CONNECTIONS="${CONNECTIONS:-50}"
KEYS="${KEYS:-100000}"
PRELOAD="${PRELOAD:-8}"
BIN="${MERIDIAN_BIN:-$ROOT/target/release/meridian}"
OUT="$ROOT/bench/out"
mkdir -p "$OUT"
DATA="$(mktemp -d "$OUT/reads.XXXXXX")"
cargo build --release --quiet -p meridian-server --example bare_kv
"$ROOT/target/release/examples/bare_kv" 127.0.0.1:18095 >"$OUT/reads-bare.log" 2>&1 &
BARE=$!
MERIDIAN_AUTH__MODE=open "$BIN" serve --region us-east --listen 127.0.0.1:18096 \
  --data-dir "$DATA/d" >"$OUT/reads-meridian.log" 2>&1 &
MER=$!
trap 'kill $BARE $MER 2>/dev/null; wait $BARE $MER 2>/dev/null; rm -rf "$DATA"' EXIT
declare -A URL=([bare]=http://127.0.0.1:18095 [meridian]=http://127.0.0.1:18096)
for t in bare meridian; do
  for _ in $(seq 100); do curl -sf "${URL[$t]}/healthz" >/dev/null && break; sleep 0.1; done
done
export BENCH_WRK_DIR=bench/wrk BENCH_PRELOAD_TAG=preload BENCH_KEYS="$KEYS"
for t in bare meridian; do
  BENCH_RUN_TAG=preload wrk -t1 -c50 -d"${PRELOAD}s" -s bench/wrk/kv_put.lua "${URL[$t]}" >"$OUT/reads-preload-$t.txt"
  n=$(awk -F'[ =]' '/BENCH_STATUS/ {print $5}' "$OUT/reads-preload-$t.txt")
  echo "$t: preloaded $n keys"
  if (( n < KEYS )); then echo "preload of $t wrote $n keys, fewer than KEYS=$KEYS" >&2; exit 1; fi
done
declare -A RESULTS
for r in $(seq "$RUNS"); do
  for mix in 0 10; do
    for t in bare meridian; do
      f="$OUT/reads-$t-put$mix-r$r.txt"
      BENCH_RUN_TAG="mix-$r" BENCH_PUT_PERCENT=$mix wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        -s bench/wrk/kv_get.lua "${URL[$t]}" >"$f"
      rps=$(awk '/Requests\/sec/ {print $2}' "$f")
      p99=$(awk '$1 == "99%" {print $2}' "$f")
      bad=$(awk -F'[ =]' '/BENCH_STATUS/ {print $7 + $9}' "$f")
      echo "round $r, put $mix%, $t: $rps req/s, p99 $p99, non-2xx+socket errors $bad"
      RESULTS["$t-$mix"]+="$rps "
    done
  done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "| load | bare req/s | meridian req/s | meridian / bare |"
echo "|---|---:|---:|---:|"
for mix in 0 10; do
  b=$(median ${RESULTS[bare-$mix]}); m=$(median ${RESULTS[meridian-$mix]})
  echo "| GET existing keys, $mix% PUTs | $b | $m | $(echo "scale=2; $m / $b" | bc) |"
done
