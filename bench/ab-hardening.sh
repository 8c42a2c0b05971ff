#!/usr/bin/env bash
# A/B: durable PUTs and hot-set adds, base (before this session) vs head, interleaved.
set -u
# Benchmarked regions listen on loopback and run without access tokens
# (auth is measured on its own, not folded into these figures).
export MERIDIAN_AUTH__MODE="${MERIDIAN_AUTH__MODE:-open}"
# BASE: a release build of the commit before the hardening (3fcedfc), e.g.
#   git worktree add /tmp/base 3fcedfc && (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target cargo build --release --bin meridian)
BASE=${BASE:-/tmp/base-target/release/meridian}
HEAD=${HEAD:-target/release/meridian}
OUT=${OUT:-bench/out/ab-hardening}; rm -rf $OUT; mkdir -p $OUT
run() { # name bin mix keys
  local name=$1 bin=$2 mix=$3 keys=$4 round=$5
  local dir=$OUT/data-$name-$round; rm -rf $dir
  $bin serve --region us-east --data-dir $dir --listen 127.0.0.1:18193 > $OUT/serve-$name-$round.log 2>&1 &
  local pid=$!
  for i in $(seq 1 100); do curl -sf 127.0.0.1:18193/healthz >/dev/null && break; sleep 0.1; done
  $HEAD bench load --url http://127.0.0.1:18193 --duration 10s --concurrency 50 --mix $mix --value-size 100 --keys $keys --json > $OUT/$name-$round.json 2>&1
  kill $pid; wait $pid 2>/dev/null
  rm -rf $dir
}
for round in 1 2 3; do
  run base-put $BASE put=1 100000 $round
  run head-put $HEAD put=1 100000 $round
  run base-add $BASE add=1 20 $round
  run head-add $HEAD add=1 20 $round
done
for f in $OUT/*.json; do echo "$(basename $f) $(python3 -c "import json; print(json.load(open('$f'))['per_sec'])" 2>/dev/null)"; done
