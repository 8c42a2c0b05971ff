#!/usr/bin/env bash
# What admission under an ownership map costs on the write path: durable
# PUTs to one region, interleaved rounds, without a map and with a map of
# 64 hash rules (the key's hash computed, 64 ranges compared) whose owner is
# the region itself.
set -u
# Benchmarked regions listen on loopback and run without access tokens
# (auth is measured on its own, not folded into these figures).
export MERIDIAN_AUTH__MODE="${MERIDIAN_AUTH__MODE:-open}"
BIN=${BIN:-target/release/meridian}
OUT=${OUT:-bench/out/ab-ownership}; rm -rf $OUT; mkdir -p $OUT
ADDR=127.0.0.1:18194
rules() {
  python3 - <<'P'
import json
n = 64
step = (1 << 64) // n
rules = [{"hash": [i * step, (i + 1) * step - 1 if i < n - 1 else (1 << 64) - 1], "owner": "us-east"} for i in range(n)]
print(json.dumps({"rules": rules}))
P
}
run() { # name round
  local name=$1 round=$2
  local dir=$OUT/data-$name-$round; rm -rf $dir
  $BIN serve --region us-east --data-dir $dir --listen $ADDR > $OUT/serve-$name-$round.log 2>&1 &
  local pid=$!
  for i in $(seq 1 100); do curl -sf $ADDR/healthz >/dev/null && break; sleep 0.1; done
  if [ "$name" = map ]; then
    curl -sf -X PUT $ADDR/v1/keyspaces/default/ownership -d "$(rules)" > /dev/null || echo "map not set" >&2
  fi
  $BIN bench load --url http://$ADDR --duration 10s --concurrency 50 --mix put=1 --value-size 100 --keys 100000 --json > $OUT/$name-$round.json 2>&1
  kill $pid; wait $pid 2>/dev/null
  rm -rf $dir
}
for round in 1 2 3; do
  run none $round
  run map $round
done
for f in $OUT/*.json; do echo "$(basename $f) $(python3 -c "import json; print(json.load(open('$f'))['per_sec'])" 2>/dev/null)"; done
