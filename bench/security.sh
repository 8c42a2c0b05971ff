#!/usr/bin/env bash
# What access control and TLS cost on the write path: one region, durable
# 100-byte PUTs from `meridian bench load` (50 connections), three ways,
# interleaved RUNS times: open over plain HTTP, tokens over plain HTTP,
# tokens over TLS. Prints throughput and p99 per run; the medians go in
# docs/benchmarks.md.
#
#   RUNS=3 DURATION=10s bench/security.sh
set -euo pipefail
M=${M:-target/release/meridian}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
OUT=${OUT:-bench/out/security}
rm -rf "$OUT" && mkdir -p "$OUT"
"$M" cert --dir "$OUT/certs" localhost=localhost,127.0.0.1 >/dev/null
token=$("$M" ctl token generate)
run() { # name round
  local name=$1 round=$2 dir=$OUT/data-$1-$2 scheme=http
  local env=(MERIDIAN_AUTH__MODE=open)
  case $name in
    tokens) env=(MERIDIAN_AUTH__MODE=tokens MERIDIAN_AUTH__BOOTSTRAP_TOKEN="$token") ;;
    tokens-tls)
      env=(MERIDIAN_AUTH__MODE=tokens MERIDIAN_AUTH__BOOTSTRAP_TOKEN="$token"
        MERIDIAN_TLS__CERT_FILE="$OUT/certs/localhost.pem" MERIDIAN_TLS__KEY_FILE="$OUT/certs/localhost-key.pem")
      scheme=https ;;
  esac
  env "${env[@]}" "$M" serve --region us-east --data-dir "$dir" --listen 127.0.0.1:18293 >"$OUT/serve-$name-$round.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    MERIDIAN_CA_FILE=$OUT/certs/ca.pem "$M" health --url "$scheme://localhost:18293" >/dev/null 2>&1 && break
    sleep 0.1
  done
  MERIDIAN_ACCESS_TOKEN=$token MERIDIAN_CA_FILE=$OUT/certs/ca.pem \
    "$M" bench load --url "$scheme://localhost:18293" --duration "$DURATION" --concurrency 50 \
    --mix put=1 --value-size 100 --json >"$OUT/$name-$round.json" 2>"$OUT/$name-$round.err"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
for round in $(seq 1 "$RUNS"); do
  for name in open tokens tokens-tls; do run "$name" "$round"; done
done
python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
med = {}
for name in ["open", "tokens", "tokens-tls"]:
    rows = [json.load(open(f"{out}/{name}-{r}.json")) for r in range(1, runs + 1)]
    ps = [r["per_sec"] for r in rows]
    p99 = [r["regions"][0]["latency"]["p99"] for r in rows]
    med[name] = (statistics.median(ps), statistics.median([p for p in p99 if p is not None] or [0]))
    print(f"{name:11} per_sec {[round(p) for p in ps]} median {med[name][0]:.0f}; p99 ms median {med[name][1]}")
base = med["open"][0]
for name in ["tokens", "tokens-tls"]:
    print(f"{name} / open throughput: {med[name][0] / base:.2f}x")
PY
