#!/usr/bin/env bash
# Where a durable PUT's time goes: one region, wrk PUT load, and the
# per-stage write timings (meridian_write_stage_seconds) scraped before and
# after, printed by bench/stages.py.
#
# Usage: bench/stages.sh [CONNECTIONS] [SECONDS]    (defaults 50 10)
# Environment: MERIDIAN_BIN (default target/release/meridian), PORT (18094).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONNS="${1:-50}"
SECS="${2:-10}"
BIN="${MERIDIAN_BIN:-$ROOT/target/release/meridian}"
PORT="${PORT:-18094}"
OUT="$ROOT/bench/out"
mkdir -p "$OUT"
DATA="$(mktemp -d "$OUT/stages.XXXXXX")"
MERIDIAN_AUTH__MODE=open "$BIN" serve --region us-east --listen "127.0.0.1:$PORT" \
  --data-dir "$DATA/d" >"$OUT/stages-server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
export BENCH_WRK_DIR=bench/wrk
wrk -t1 -c"$CONNS" -d2s -s bench/wrk/kv_put.lua "http://127.0.0.1:$PORT" >/dev/null
curl -s "127.0.0.1:$PORT/metrics" >"$OUT/stages-before.txt"
wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s bench/wrk/kv_put.lua "http://127.0.0.1:$PORT" \
  >"$OUT/stages-wrk.txt"
curl -s "127.0.0.1:$PORT/metrics" >"$OUT/stages-after.txt"
grep -E "Requests/sec| 50%| 99%" "$OUT/stages-wrk.txt"
python3 bench/stages.py "$OUT/stages-before.txt" "$OUT/stages-after.txt"
