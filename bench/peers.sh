#!/usr/bin/env bash
# Peer comparison benchmark: durable single-key PUT throughput and latency with
# 50 concurrent connections and 100-byte values, measured in one run beside
#   - etcd (Debian `etcd-server`, 3.4) single node, PUTs through its JSON gateway
#     (POST /v3/kv/put), default settings (a WAL fsync per raft batch: durable);
#   - bare_kv, a bare axum handler storing into an in-memory HashMap
#     (crates/server/examples/bare_kv.rs);
#   - Meridian (`meridian serve`), when a binary is there and answers /healthz.
#
# Rounds are interleaved (etcd, bare, meridian, etcd, ...) so that the machine's
# noise hits every target alike; the table gives medians over the rounds.
#
# Usage (from anywhere; run as root so that missing packages can be installed):
#   bench/peers.sh
#   DURATION=5 RUNS=3 bench/peers.sh
#
# Environment:
#   DURATION=10        seconds per wrk run
#   RUNS=3             rounds (each round runs every target once)
#   CONNECTIONS=50     wrk -c
#   THREADS=1          wrk -t (2 cores here: one for wrk, one for the server)
#   WARMUP=2           seconds of unrecorded load per target before round 1 (0: none)
#   MERIDIAN_BIN       default $CARGO_TARGET_DIR/release/meridian (target/release/meridian)
#   REQUIRE_MERIDIAN=1 fail instead of skipping Meridian when it cannot be run
#   ETCD_PORT=23790 ETCD_PEER_PORT=23800 BARE_PORT=18091 MERIDIAN_PORT=18092
#   KEEP_DATA=1        keep the data directories under bench/out/ after the run
#
# Output: the table on stdout and in bench/out/peers.md; raw wrk output in
# bench/out/peers-<target>-r<N>.txt (wrk's stderr and CPU use beside it); server
# logs in bench/out/peers-<target>.log.
# Exit status: non-zero if etcd or bare_kv could not be measured, if any run
# saw a non-2xx response or a socket error, or (with REQUIRE_MERIDIAN=1) if
# Meridian was skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
cd "$ROOT"

DURATION="${DURATION:-10}"
RUNS="${RUNS:-3}"
CONNECTIONS="${CONNECTIONS:-50}"
THREADS="${THREADS:-1}"
WARMUP="${WARMUP:-2}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
MERIDIAN_BIN="${MERIDIAN_BIN:-$TARGET_DIR/release/meridian}"
REQUIRE_MERIDIAN="${REQUIRE_MERIDIAN:-0}"
ETCD_PORT="${ETCD_PORT:-23790}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-23800}"
BARE_PORT="${BARE_PORT:-18091}"
MERIDIAN_PORT="${MERIDIAN_PORT:-18092}"
KEEP_DATA="${KEEP_DATA:-0}"

OUT="$ROOT/bench/out"
WRK_DIR="$ROOT/bench/wrk"
mkdir -p "$OUT"
rm -f "$OUT"/peers-* "$OUT/peers.md"
# Data directories live on the repository's disk, not on a possible tmpfs /tmp:
# fsync must cost what it costs on a real disk.
DATA="$(mktemp -d "$OUT/data.XXXXXX")"

# ---------------------------------------------------------------- cleanup
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.3
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ "$KEEP_DATA" != 1 ]]; then rm -rf "$DATA"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- install
need_install=()
command -v etcd >/dev/null || need_install+=(etcd-server)
command -v wrk >/dev/null || need_install+=(wrk)
command -v curl >/dev/null || need_install+=(curl)
if ((${#need_install[@]})); then
  log "installing ${need_install[*]} (Debian packages)"
  [[ "$(id -u)" == 0 ]] || die "need root to apt-get install ${need_install[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y "${need_install[@]}"
fi
# On a host with systemd the package also starts etcd.service on 2379; we use
# our own ports (ETCD_PORT, ETCD_PEER_PORT) and our own data dir.

# Something already listening on a port would be benchmarked instead of us.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$BARE_PORT" "$MERIDIAN_PORT"; do
  if port_busy "$port"; then die "port $port is already in use on 127.0.0.1"; fi
done

# ---------------------------------------------------------------- machine facts
machine_facts "$DATA"

# Cheap fsync probe on the data dir's filesystem: 3 x 200 4 KiB writes with
# O_DSYNC (each write waits for the disk); the median per-write time is printed.
fsync_probe_ms() {
  LC_ALL=C dd if=/dev/zero of="$DATA/fsync-probe" bs=4k count=200 oflag=dsync 2>&1 |
    awk '/copied/ {for (i = 1; i <= NF; i++) if ($i == "s," || $i == "s") printf "%.3f\n", $(i - 1) * 1000 / 200}'
  rm -f "$DATA/fsync-probe"
}
FSYNC_RUNS=("$(fsync_probe_ms)" "$(fsync_probe_ms)" "$(fsync_probe_ms)")
FSYNC_MS="$(median "${FSYNC_RUNS[@]}")"
log "etcd $ETCD_VERSION (package $ETCD_PKG), wrk $WRK_VERSION, $NPROC cores ($CPU_MODEL)"
log "fsync probe: 4 KiB O_DSYNC writes on $FS_TYPE: ${FSYNC_RUNS[*]} ms per write"

# ---------------------------------------------------------------- targets
TARGETS=()               # names in run order
declare -A URL SCRIPT PID_OF SKIPPED

log "starting etcd on 127.0.0.1:$ETCD_PORT (data dir $DATA/etcd)"
etcd --name peers-bench --data-dir "$DATA/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "peers-bench=http://127.0.0.1:$ETCD_PEER_PORT" \
  >"$OUT/peers-etcd.log" 2>&1 &
PIDS+=($!)
PID_OF[etcd]=$!
wait_http "http://127.0.0.1:$ETCD_PORT/health" 30 "${PID_OF[etcd]}" ||
  die "etcd did not become healthy; see $OUT/peers-etcd.log"
TARGETS+=(etcd)
URL[etcd]="http://127.0.0.1:$ETCD_PORT"
SCRIPT[etcd]="bench/wrk/etcd_put.lua"

log "building bare_kv (release)"
cargo build --release --quiet -p meridian-server --example bare_kv
"$TARGET_DIR/release/examples/bare_kv" "127.0.0.1:$BARE_PORT" >"$OUT/peers-bare.log" 2>&1 &
PIDS+=($!)
PID_OF[bare]=$!
wait_http "http://127.0.0.1:$BARE_PORT/healthz" 10 "${PID_OF[bare]}" ||
  die "bare_kv did not answer /healthz; see $OUT/peers-bare.log"
TARGETS+=(bare)
URL[bare]="http://127.0.0.1:$BARE_PORT"
SCRIPT[bare]="bench/wrk/kv_put.lua"

if [[ ! -x "$MERIDIAN_BIN" ]]; then
  SKIPPED[meridian]="no executable at $MERIDIAN_BIN (set MERIDIAN_BIN, or cargo build --release -p meridian-server)"
else
  log "starting Meridian: $MERIDIAN_BIN serve --region us-east --listen 127.0.0.1:$MERIDIAN_PORT"
  "$MERIDIAN_BIN" serve --region us-east --listen "127.0.0.1:$MERIDIAN_PORT" \
    --data-dir "$DATA/meridian" >"$OUT/peers-meridian.log" 2>&1 &
  PIDS+=($!)
  PID_OF[meridian]=$!
  if wait_http "http://127.0.0.1:$MERIDIAN_PORT/healthz" 10 "${PID_OF[meridian]}"; then
    TARGETS+=(meridian)
    URL[meridian]="http://127.0.0.1:$MERIDIAN_PORT"
    SCRIPT[meridian]="bench/wrk/kv_put.lua"
  elif ! kill -0 "${PID_OF[meridian]}" 2>/dev/null; then
    SKIPPED[meridian]="exited before answering GET /healthz (see bench/out/peers-meridian.log)"
  else
    SKIPPED[meridian]="did not answer GET /healthz within 10 s (see bench/out/peers-meridian.log)"
    kill "${PID_OF[meridian]}" 2>/dev/null || true
  fi
fi
if [[ -n "${SKIPPED[meridian]:-}" ]]; then
  log "SKIPPING Meridian: ${SKIPPED[meridian]}"
  [[ "$REQUIRE_MERIDIAN" == 1 ]] && die "REQUIRE_MERIDIAN=1 and Meridian was skipped"
fi

# One PUT per target by hand, so that a wrong path or a missing keyspace shows
# up as a clear message here rather than as a table full of errors.
preflight() {
  local t="$1" code
  if [[ "$t" == etcd ]]; then
    code="$(curl -sS -o "$OUT/peers-$t-preflight.txt" -w '%{http_code}' -X POST \
      -H 'Content-Type: application/json' \
      -d '{"key":"cHJlZmxpZ2h0","value":"cHJlZmxpZ2h0"}' "${URL[$t]}/v3/kv/put" || true)"
  else
    code="$(curl -sS -o "$OUT/peers-$t-preflight.txt" -w '%{http_code}' -X PUT \
      -H 'Content-Type: application/json' -d '"preflight"' "${URL[$t]}/v1/kv/default/preflight" || true)"
  fi
  [[ "$code" == 2?? ]] ||
    die "preflight PUT to $t answered $code: $(head -c 300 "$OUT/peers-$t-preflight.txt")"
}
for t in "${TARGETS[@]}"; do preflight "$t"; done

# ---------------------------------------------------------------- runs
# CPU seconds (user + system) a process has used so far, from /proc.
TICKS="$(getconf CLK_TCK)"
# Prints "gone" once the process has exited.
cpu_secs() {
  if [[ -r "/proc/$1/stat" ]]; then
    awk -v hz="$TICKS" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz}' "/proc/$1/stat"
  else
    echo gone
  fi
}
# CPU seconds the whole machine has been busy so far (all cores; steal counts as busy).
machine_busy_secs() { awk -v hz="$TICKS" '$1 == "cpu" {printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / hz}' /proc/stat; }

COMMANDS=()
# run_wrk TARGET OUTFILE SECONDS TAG: one wrk run; records its command line and,
# next to OUTFILE, the CPU used during the run by wrk, by the server and by
# everything else on the machine (other processes: the noise).
run_wrk() {
  local t="$1" file="$2" secs="$3" tag="$4" cmd srv0 srv1 all0 all1
  cmd=(wrk "-t$THREADS" "-c$CONNECTIONS" "-d${secs}s" --latency -s "${SCRIPT[$t]}" "${URL[$t]}")
  COMMANDS+=("BENCH_RUN_TAG=$tag BENCH_WRK_DIR=bench/wrk ${cmd[*]}")
  printf '$ BENCH_RUN_TAG=%s BENCH_WRK_DIR=bench/wrk %s\n' "$tag" "${cmd[*]}" >&2
  srv0="$(cpu_secs "${PID_OF[$t]}")"
  all0="$(machine_busy_secs)"
  local TIMEFORMAT='%R %U %S'
  { time BENCH_RUN_TAG="$tag" BENCH_WRK_DIR="$WRK_DIR" "${cmd[@]}" >"$file" 2>"$file.stderr"; } 2>"$file.time" ||
    log "wrk exited non-zero for $t (see $file.stderr)"
  srv1="$(cpu_secs "${PID_OF[$t]}")"
  all1="$(machine_busy_secs)"
  if [[ "$srv0" == gone || "$srv1" == gone ]]; then
    log "ERROR: the $t server is not running (see bench/out/peers-$t.log)"
    touch "$file.died"
    srv0=0 srv1=0
  fi
  # wall user sys -> "wrk% server% other%", each as % of one core.
  awk -v s0="$srv0" -v s1="$srv1" -v a0="$all0" -v a1="$all1" '{
    w = $2 + $3; s = s1 - s0; o = (a1 - a0) - w - s; if (o < 0) o = 0
    printf "%.0f %.0f %.0f\n", w * 100 / $1, s * 100 / $1, o * 100 / $1 }' "$file.time" >"$file.cpu"
  rm -f "$file.time"
}

if ((WARMUP > 0)); then
  for t in "${TARGETS[@]}"; do
    log "warm-up $t (${WARMUP}s, not recorded)"
    run_wrk "$t" "$DATA/warmup-$t.txt" "$WARMUP" "warmup-$t"
  done
  COMMANDS=()
fi

RUN_TAG_BASE="$(date +%s)"
for ((r = 1; r <= RUNS; r++)); do
  for t in "${TARGETS[@]}"; do
    log "round $r/$RUNS: $t"
    run_wrk "$t" "$OUT/peers-$t-r$r.txt" "$DURATION" "$RUN_TAG_BASE-r$r"
  done
done

# ---------------------------------------------------------------- results

declare -A RPS P50 P99 NON2XX SOCKERR WRKCPU SRVCPU OTHERCPU
ANY_ERRORS=0
for t in "${TARGETS[@]}"; do
  rps=() p50=() p99=() wcpu=() scpu=() ocpu=() bad=0 serr=0
  for ((r = 1; r <= RUNS; r++)); do
    f="$OUT/peers-$t-r$r.txt"
    rps+=("$(awk '/^Requests\/sec:/ {print $2}' "$f")")
    p50+=("$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")")")
    p99+=("$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")")
    status="$(grep '^BENCH_STATUS' "$f" || echo 'BENCH_STATUS non2xx=-1 socket_errors=-1')"
    n="$(sed -E 's/.*non2xx=(-?[0-9]+).*/\1/' <<<"$status")"
    s="$(sed -E 's/.*socket_errors=(-?[0-9]+).*/\1/' <<<"$status")"
    if ((n < 0)); then
      log "no BENCH_STATUS line in $f: wrk failed?"
      n=1 s=0
    fi
    if [[ -e "$f.died" ]]; then
      log "the $t server died during $f"
      s=$((s + 1))
    fi
    bad=$((bad + n))
    serr=$((serr + s))
    read -r wc sc oc <"$f.cpu"
    wcpu+=("$wc")
    scpu+=("$sc")
    ocpu+=("$oc")
    if ((n > 0 || s > 0)); then
      log "ERRORS in $f: $n non-2xx, $s socket errors (first ones in $f.stderr)"
      ANY_ERRORS=1
    fi
  done
  RPS[$t]="$(median "${rps[@]}")"
  P50[$t]="$(median "${p50[@]}")"
  P99[$t]="$(median "${p99[@]}")"
  WRKCPU[$t]="$(median "${wcpu[@]}")"
  SRVCPU[$t]="$(median "${scpu[@]}")"
  OTHERCPU[$t]="$(median "${ocpu[@]}")"
  NON2XX[$t]="$bad"
  SOCKERR[$t]="$serr"
  log "$t per round: req/s ${rps[*]}; p99 ms ${p99[*]}; other CPU % ${ocpu[*]}"
done

# etcd's own counters: how many WAL fsyncs its puts cost (it batches a raft
# round's entries into one fsync), to show the durable path really ran.
etcd_metric() {
  awk -v m="$1" '$1 == m {printf "%.0f", $2; found = 1} END {if (!found) print 0}' "$OUT/peers-etcd-metrics.txt"
}
ETCD_FSYNCS=""
if curl -fsS --max-time 5 -o "$OUT/peers-etcd-metrics.txt" "${URL[etcd]}/metrics"; then
  fsyncs="$(etcd_metric etcd_disk_wal_fsync_duration_seconds_count)"
  fsync_sum="$(awk '$1 == "etcd_disk_wal_fsync_duration_seconds_sum" {print $2}' "$OUT/peers-etcd-metrics.txt")"
  commits="$(etcd_metric etcd_server_proposals_committed_total)"
  ETCD_FSYNCS="$(awk -v f="$fsyncs" -v s="${fsync_sum:-0}" -v c="$commits" 'BEGIN {
    printf "etcd WAL: %d fsyncs for %d committed proposals (%.1f proposals per fsync), mean fsync %.3f ms.",
      f, c, (f > 0 ? c / f : 0), (f > 0 ? s * 1000 / f : 0) }')"
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }

{
  echo "## Peer comparison: durable single-key PUT, $CONNECTIONS connections, 100-byte values"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $GIT_REV, $NPROC cores ($CPU_MODEL)."
  echo "etcd $ETCD_VERSION (Debian etcd-server $ETCD_PKG, single node, default settings), wrk $WRK_VERSION."
  echo "fsync probe on the data disk ($FS_TYPE): ${FSYNC_MS} ms per 4 KiB O_DSYNC write (median of ${FSYNC_RUNS[*]})."
  echo "$RUNS interleaved rounds of ${DURATION}s per target; medians over the rounds."
  echo
  echo "| target | req/s | p50 ms | p99 ms | non-2xx | socket errors | wrk CPU % | server CPU % | other CPU % |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for t in "${TARGETS[@]}"; do
    flag=""
    ((NON2XX[$t] + SOCKERR[$t] > 0)) && flag=" **ERRORS: not a result**"
    printf '| %s%s | %.0f | %.2f | %.2f | %s | %s | %.0f | %.0f | %.0f |\n' "$t" "$flag" "${RPS[$t]}" \
      "${P50[$t]}" "${P99[$t]}" "${NON2XX[$t]}" "${SOCKERR[$t]}" \
      "${WRKCPU[$t]}" "${SRVCPU[$t]}" "${OTHERCPU[$t]}"
  done
  if [[ -n "${SKIPPED[meridian]:-}" ]]; then
    echo "| meridian | skipped | | | | | | | |"
    echo
    echo "Meridian skipped: ${SKIPPED[meridian]}."
  fi
  echo
  echo "CPU % is of one core (this machine has $NPROC), median over the rounds. wrk near 100 %: the"
  echo "load generator, not the server, is the limit. Other CPU % is what the rest of the machine used"
  echo "during the runs (builds, other services): well above 0 means the figures are noisy."
  echo "Latencies are wrk 4's, which adds synthetic samples for every response slower than twice the"
  echo "mean per-connection interval (its coordinated-omission correction): one rare stall of all"
  echo "connections moves p99 far more than the raw samples would."
  echo "$ETCD_FSYNCS"
  echo
  echo "- bare / etcd throughput: $(ratio "${RPS[bare]}" "${RPS[etcd]}")x"
  if [[ -n "${RPS[meridian]:-}" ]]; then
    m_etcd="$(ratio "${RPS[meridian]}" "${RPS[etcd]}")"
    m_bare="$(ratio "${RPS[meridian]}" "${RPS[bare]}")"
    verdict() { awk -v v="$1" -v op="$2" -v lim="$3" 'BEGIN {
      ok = (op == ">=") ? (v >= lim) : (v <= lim); print ok ? "met" : "NOT met" }'; }
    echo "- meridian / etcd throughput: ${m_etcd}x (target >= 5x: $(verdict "$m_etcd" '>=' 5))"
    echo "- meridian / bare throughput: ${m_bare}x (target >= 0.6x: $(verdict "$m_bare" '>=' 0.6))"
    echo "- meridian p99: ${P99[meridian]} ms (target <= 10 ms: $(verdict "${P99[meridian]}" '<=' 10))"
  fi
  echo
  echo "Commands (run from the repository root; raw output in bench/out/peers-<target>-r<N>.txt):"
  echo
  echo '```'
  printf '%s\n' "${COMMANDS[@]}"
  echo '```'
} | tee "$OUT/peers.md"

if ((ANY_ERRORS)); then
  die "some runs saw non-2xx responses or socket errors: a benchmark that measured errors is not a result"
fi
