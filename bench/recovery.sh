#!/usr/bin/env bash
# Recovery and memory:
#  1. a log of LOG_MB (default 1024) MB of 10 KiB PUTs; kill -9; restart:
#     time from exec to a healthy region, and the log scan's own time from
#     its "recovered" line (state store, digest trees and log apart;
#     replay rate = log bytes / the log's part);
#  2. a fresh region takes 100-byte PUTs under distinct keys for MEM_SECS
#     (default 40) seconds: resident memory per million keys, and what
#     status reports as state_bytes and log bytes.
# Usage: bench/recovery.sh    Environment: MERIDIAN_BIN, LOG_MB, MEM_SECS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${MERIDIAN_BIN:-$ROOT/target/release/meridian}"
LOG_MB="${LOG_MB:-1024}"
MEM_SECS="${MEM_SECS:-40}"
PORT=18097
URL="http://127.0.0.1:$PORT"
OUT="$ROOT/bench/out"
mkdir -p "$OUT"
DATA="$(mktemp -d "$OUT/recovery.XXXXXX")"
PID=
trap '[[ -n "$PID" ]] && kill -9 $PID 2>/dev/null; rm -rf "$DATA"' EXIT
export BENCH_WRK_DIR=bench/wrk
start() { # start DIR LOG
  MERIDIAN_AUTH__MODE=open "$BIN" serve --region us-east --listen "127.0.0.1:$PORT" --data-dir "$1" >"$2" 2>&1 &
  PID=$!
}
healthy() { for _ in $(seq 6000); do curl -sf "$URL/healthz" >/dev/null && return 0; sleep 0.01; done; return 1; }
status() { curl -sf "$URL/v1/status"; }
jq_() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# 1. recovery
start "$DATA/r" "$OUT/recovery-1.log"; healthy
while (( $(status | jq_ 'd["log"]["bytes"]') < LOG_MB * 1048576 )); do
  BENCH_VALUE_BYTES=10240 wrk -t1 -c50 -d5s -s bench/wrk/kv_put.lua "$URL" >/dev/null
done
LOG_BYTES=$(status | jq_ 'd["log"]["bytes"]')
OPS=$(status | jq_ 'd["ops"]')
kill -9 $PID; wait $PID 2>/dev/null || true
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
T0=$(date +%s%N)
start "$DATA/r" "$OUT/recovery-2.log"; healthy
T1=$(date +%s%N)
REC=$(sed 's/\x1b\[[0-9;]*m//g' "$OUT/recovery-2.log" | grep ' recovered' | head -1)
field() { sed -E "s/.* $1=([0-9]+).*/\\1/" <<<"$REC"; }
echo "log: $LOG_BYTES bytes, $OPS ops; restart after kill -9 (page cache dropped): $(( (T1 - T0) / 1000000 )) ms to healthy"
echo "recovered line: $REC"
echo "start: state store $(field state_ms) ms, engine (digest trees) $(field engine_ms) ms, log $(field log_ms) ms, all $(field ms) ms"
LOG_MS=$(field log_ms); (( LOG_MS > 0 )) || LOG_MS=1
echo "log scan and replay: ${LOG_MS} ms, $(echo "scale=1; $LOG_BYTES * 1000 / 1048576 / $LOG_MS" | bc) MB/s"
T0=$(date +%s%N)
kill -TERM $PID; wait $PID 2>/dev/null || true
start "$DATA/r" "$OUT/recovery-3.log"; healthy
T1=$(date +%s%N)
echo "restart after a clean stop (page cache warm): $(( (T1 - T0) / 1000000 )) ms from SIGTERM to healthy"
kill -9 $PID; wait $PID 2>/dev/null || true

# 2. memory
start "$DATA/m" "$OUT/recovery-mem.log"; healthy
RSS0=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
BENCH_RUN_TAG=mem wrk -t1 -c50 -d"${MEM_SECS}s" -s bench/wrk/kv_put.lua "$URL" >"$OUT/recovery-mem-wrk.txt"
KEYS=$(awk -F'[ =]' '/BENCH_STATUS/ {print $5}' "$OUT/recovery-mem-wrk.txt")
sleep 2
RSS1=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
ST=$(status)
echo "memory: $KEYS distinct 100-byte keys; RSS $((RSS0 / 1024)) MiB idle -> $((RSS1 / 1024)) MiB;" \
  "$(echo "scale=1; ($RSS1 - $RSS0) / 1024 * 1000000 / $KEYS" | bc) MiB per million keys above idle"
echo "status: state_bytes $(jq_ 'd["state_bytes"]' <<<"$ST"), log bytes $(jq_ 'd["log"]["bytes"]' <<<"$ST")"
