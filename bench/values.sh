#!/usr/bin/env bash
# The value-size curve: durable PUTs of 100 B, 10 KiB and ~1 MB values into
# one region (wrk, distinct keys), as req/s and MB/s of values, beside the
# disk's sequential write rate measured in the same run (dd, 256 MiB with
# fdatasync at the end, on the data directory's filesystem).
# Usage: bench/values.sh    Environment: MERIDIAN_BIN, DURATION (10), CONNECTIONS (50).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${MERIDIAN_BIN:-$ROOT/target/release/meridian}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-50}"
PORT=18098
URL="http://127.0.0.1:$PORT"
OUT="$ROOT/bench/out"
mkdir -p "$OUT"
DATA="$(mktemp -d "$OUT/values.XXXXXX")"
PID=
trap '[[ -n "$PID" ]] && kill $PID 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA"' EXIT
disk() {
  LC_ALL=C dd if=/dev/zero of="$DATA/dd" bs=1M count=256 conv=fdatasync 2>&1 |
    awk '/copied/ {for (i = 1; i <= NF; i++) if ($i ~ /^(MB|GB)\/s$/) print ($i == "GB/s" ? $(i-1) * 1000 : $(i-1))}'
  rm -f "$DATA/dd"
}
echo "disk sequential write (dd 256 MiB, fdatasync): $(disk) MB/s"
export BENCH_WRK_DIR=bench/wrk
echo "| value bytes | req/s | p50 | p99 | MB/s of values |"
echo "|---:|---:|---:|---:|---:|"
for size in 100 10240 1000000; do
  MERIDIAN_AUTH__MODE=open "$BIN" serve --region us-east --listen "127.0.0.1:$PORT" \
    --data-dir "$DATA/d-$size" >"$OUT/values-$size.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.1; done
  f="$OUT/values-wrk-$size.txt"
  BENCH_VALUE_BYTES=$size wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/wrk/kv_put.lua "$URL" >"$f"
  ok=$(awk -F'[ =]' '/BENCH_STATUS/ {print $5}' "$f")
  bad=$(awk -F'[ =]' '/BENCH_STATUS/ {print $7 + $9}' "$f")
  rps=$(awk '/Requests\/sec/ {print $2}' "$f")
  p50=$(awk '$1 == "50%" {print $2}' "$f"); p99=$(awk '$1 == "99%" {print $2}' "$f")
  echo "| $size | $rps | $p50 | $p99 | $(echo "scale=1; $ok * $size / $DURATION / 1000000" | bc) |"
  if (( bad > 0 )); then echo "  ($bad non-2xx or socket errors; see $f)"; fi
  kill $PID; wait $PID 2>/dev/null || true; PID=
  rm -rf "$DATA/d-$size"
done
echo "disk sequential write again: $(disk) MB/s"
