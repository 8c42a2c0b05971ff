#!/usr/bin/env bash
# Every figure in docs/benchmarks.md, in one go (about 40 minutes on the
# 2-core machine). Steps run in the order given (default: all of them):
#
#   bench/all.sh                     # peers load geo concerns nemesis failover backup standby
#   bench/all.sh load nemesis        # just those
#
# Output: bench/out/all-<step>.txt (the tables are at the end of each file).
set -euo pipefail
# Benchmarked regions listen on loopback and run without access tokens
# (auth is measured on its own, not folded into these figures).
export MERIDIAN_AUTH__MODE="${MERIDIAN_AUTH__MODE:-open}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mkdir -p bench/out
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(peers load geo concerns nemesis failover backup standby security stages)
cargo build --release --quiet --bin meridian
M=target/release/meridian
export MERIDIAN_LOG="${MERIDIAN_LOG:-warn}"

wait_up() { for _ in $(seq 100); do curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "$1 did not come up" >&2; return 1; }

for step in "${STEPS[@]}"; do
  out="bench/out/all-$step.txt"
  echo "== $step -> $out"
  case "$step" in
    peers)
      # Issue 3: durable PUTs beside etcd and a bare axum handler (wrk drives all three).
      DURATION=10 RUNS=3 REQUIRE_MERIDIAN=1 bench/peers.sh >"$out" 2>&1
      ;;
    load)
      # The same single-region PUT load through `meridian bench load`, then a
      # mixed zipf load over a three-region `meridian dev` cluster with
      # replication-lag probes.
      rm -rf bench/out/load-one && mkdir -p bench/out/load-one
      "$M" serve --region us-east --data-dir bench/out/load-one --listen 127.0.0.1:18093 2>bench/out/load-one.log &
      pid=$!
      wait_up http://127.0.0.1:18093
      {
        echo "\$ meridian bench load --url http://127.0.0.1:18093 --duration 20s --concurrency 50 --mix put=1 --value-size 100"
        "$M" bench load --url http://127.0.0.1:18093 --duration 20s --concurrency 50 --mix put=1 --value-size 100 --json >bench/out/load-one.json
        "$M" bench load --url http://127.0.0.1:18093 --duration 20s --concurrency 50 --mix put=1 --value-size 100 2>/dev/null
      } >"$out" 2>&1
      kill "$pid"; wait "$pid" || true
      rm -rf bench/out/load-dev
      "$M" dev --insecure-open --data-dir bench/out/load-dev 2>bench/out/load-dev.log &
      pid=$!
      for p in 7070 7071 7072; do wait_up "http://127.0.0.1:$p"; done
      for ks in hits:counter tags:set; do
        curl -fsS -X PUT "http://127.0.0.1:7070/v1/keyspaces/${ks%%:*}" -d "{\"policy\":\"${ks##*:}\"}" >/dev/null
      done
      sleep 1
      {
        echo "\$ meridian bench load --url http://127.0.0.1:7070 --url http://127.0.0.1:7071 --url http://127.0.0.1:7072 --duration 30s --concurrency 20 --mix put=50,get=40,incr=5,add=5 --dist zipf --keys 10000 --lag-every 20"
        "$M" bench load --url http://127.0.0.1:7070 --url http://127.0.0.1:7071 --url http://127.0.0.1:7072 \
          --duration 30s --concurrency 20 --mix put=50,get=40,incr=5,add=5 --dist zipf --keys 10000 --lag-every 20 2>/dev/null
      } >>"$out" 2>&1
      kill -INT "$pid"; wait "$pid" || true
      ;;
    geo)
      # Issue 4: local latency with 80 ms links, replication lag, bytes per op,
      # convergence after a 60 s partition.
      "$M" bench geo >"$out" 2>&1
      ;;
    concerns)
      # Issue 5: write latency under each write concern over 80 ms links.
      "$M" bench concerns >"$out" 2>&1
      ;;
    nemesis)
      # Issue 6: every suite for a minute, then the combined suite for five.
      {
        "$M" bench nemesis --suite all --duration 60s
        "$M" bench nemesis --suite combined --duration 5m --seed 7
      } >"$out" 2>&1
      ;;
    failover)
      # Issue 19: a session through us-east killed and restarted, and hung.
      {
        "$M" bench failover --runs 5
        "$M" bench failover --runs 5 --latency 0
        "$M" bench failover --runs 3 --fault pause --down 15s
        "$M" bench failover --runs 3 --fault pause --timeout 1s
      } >"$out" 2>&1
      ;;
    backup)
      # Issue 13: backup throughput and restore time for a 1 GiB log.
      {
        for run in 1 2 3; do "$M" bench backup --log-mb 1024; done
      } >"$out" 2>&1
      ;;
    standby)
      # Issue 14: local vs standby writes; failover time (7 kill -9s per run).
      {
        for run in 1 2 3; do "$M" bench standby --runs 7; done
      } >"$out" 2>&1
      ;;
    security)
      # Issue 15: durable PUTs open, with tokens, with tokens over TLS.
      RUNS=3 DURATION=10s M="$M" bench/security.sh >"$out" 2>&1
      ;;
    stages)
      # Issue 16: where a durable PUT's time goes, at 50 and 256 connections.
      { MERIDIAN_BIN="$M" bench/stages.sh 50 10; MERIDIAN_BIN="$M" bench/stages.sh 256 10; } >"$out" 2>&1
      ;;
    *) echo "unknown step $step (peers load geo concerns nemesis failover backup standby security stages)" >&2; exit 2 ;;
  esac
  tail -n 30 "$out"
done
