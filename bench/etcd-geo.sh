#!/usr/bin/env bash
# Geo baseline for Meridian: a three-member etcd cluster on loopback with one
# member (m3) behind an emulated WAN link of LATENCY ms one way (2 x LATENCY
# round trip), durable single-key PUTs (100-byte values, a distinct key per
# request, POST /v3/kv/put through etcd's JSON gateway, bench/wrk/etcd_put.lua)
# sent to the far member m3 and, for comparison, to the near member m1.
#
# Topology (all on this machine):
#
#     m1 <--- direct ---> m2          the raft leader is pinned to m1 (LEADER)
#       \                 /
#    LATENCY ms       LATENCY ms      `meridian link` proxies, one per directed
#         \             /             link: m1:m3, m2:m3, m3:m1, m3:m2
#                m3                   wrk -> m3 (far) and wrk -> m1 (near)
#
# How the links are wired. etcd members reach each other through the peer URLs
# in the cluster's membership, and every member sees the same URLs: a member's
# ID (and the cluster ID) is a hash of its peer URLs, so giving m3 a different
# --initial-cluster view of m1 and m2 (proxy URLs) than m1 and m2 have of
# themselves yields different member IDs and a "cluster ID mismatch" between
# them. And one URL per member cannot point at a delaying proxy for m3 and at
# the member itself for its near peer. Traffic in rafthttp flows both ways on
# connections dialed by either side (a member receives a peer's messages on
# the stream it dialed to that peer), so delaying only the connections towards
# m3 would delay half of the messages. So the peer URLs use host names
# (http://etcd-geo-mN:PORT), identical in every member's configuration, and
# each member runs in its own mount namespace (`unshare -m`) where a private
# /etc/hosts resolves them: its own name and its near peer's to 127.0.0.1 (the
# member's real listener), a far peer's to 127.77.F.T, where the link F:T
# listens on the same port and forwards to 127.0.0.1:PORT. Every connection
# between m3 and m1 or m2, whichever side dialed it, crosses one link, which
# delays the bytes of both its directions by LATENCY ms; m1 and m2 talk
# directly. Nothing outside the etcd processes sees those hosts files.
#
# Usage (from anywhere; as root: packages may be installed, and `unshare -m`
# and `mount --bind` need it):
#   bench/etcd-geo.sh
#   LATENCY=40 DURATION=5 CONNECTIONS="10" bench/etcd-geo.sh
#   MERIDIAN_BIN=/path/to/meridian bench/etcd-geo.sh
#
# Environment:
#   LATENCY=80          one-way latency of the m3 links, ms (round trip: 2x)
#   DURATION=10         seconds per wrk run
#   CONNECTIONS="10 50" wrk -c values, each run against each target
#   THREADS=1           wrk -t
#   RUNS=1              rounds (medians over them when more than one)
#   WARMUP=2            seconds of unrecorded load per target first (0: none)
#   LEADER=m1           member to make the raft leader: m1, m2, m3, or any (no move)
#   ETCD_HEARTBEAT_MS=100 ETCD_ELECTION_MS=1000   etcd's defaults
#   CLIENT_BASE=23890   member N serves clients on CLIENT_BASE+N (23891..23893)
#   PEER_BASE=23900     member N's peer listener is on PEER_BASE+N (23901..23903)
#   CONTROL_PORT=23910  the links' control API (per-link byte counts are read from it)
#   MERIDIAN_BIN        default $CARGO_TARGET_DIR/release/meridian (target/release/meridian);
#                       built with `cargo build --release -p meridian-server` if missing
#   KEEP_DATA=1         keep the data directories under bench/out/ after the run
#
# Output: the table on stdout and in bench/out/etcd-geo.md; raw wrk output in
# bench/out/etcd-geo-<target>-c<N>-r<R>.txt (stderr beside it); logs in
# bench/out/etcd-geo-m<N>.log and bench/out/etcd-geo-link.log.
# Exit status: non-zero if the cluster could not be set up, if any run saw a
# non-2xx response or a socket error, or if the leader moved during the runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
cd "$ROOT"

LATENCY="${LATENCY:-80}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-10 50}"
THREADS="${THREADS:-1}"
RUNS="${RUNS:-1}"
WARMUP="${WARMUP:-2}"
LEADER="${LEADER:-m1}"
ETCD_HEARTBEAT_MS="${ETCD_HEARTBEAT_MS:-100}"
ETCD_ELECTION_MS="${ETCD_ELECTION_MS:-1000}"
CLIENT_BASE="${CLIENT_BASE:-23890}"
PEER_BASE="${PEER_BASE:-23900}"
CONTROL_PORT="${CONTROL_PORT:-23910}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
MERIDIAN_BIN="${MERIDIAN_BIN:-$TARGET_DIR/release/meridian}"
KEEP_DATA="${KEEP_DATA:-0}"

OUT="$ROOT/bench/out"
WRK_DIR="$ROOT/bench/wrk"
mkdir -p "$OUT"
rm -f "$OUT"/etcd-geo-* "$OUT/etcd-geo.md"
# Data directories live on the repository's disk, not on a possible tmpfs /tmp:
# fsync must cost what it costs on a real disk.
DATA="$(mktemp -d "$OUT/data.XXXXXX")"

[[ "$LATENCY" =~ ^[0-9]+$ ]] || die "LATENCY must be a whole number of ms, got '$LATENCY'"
((LATENCY > 0)) || die "LATENCY must be above 0 (the table divides by the round trip)"
[[ "$LEADER" =~ ^(m1|m2|m3|any)$ ]] || die "LEADER must be m1, m2, m3 or any, got '$LEADER'"

# ---------------------------------------------------------------- cleanup
PIDS=()
WRK_PID=""
cleanup() {
  local pid
  if [[ -n "$WRK_PID" ]]; then kill "$WRK_PID" 2>/dev/null || true; fi
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
command -v unshare >/dev/null || need_install+=(util-linux)
if ((${#need_install[@]})); then
  log "installing ${need_install[*]} (Debian packages)"
  [[ "$(id -u)" == 0 ]] || die "need root to apt-get install ${need_install[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y "${need_install[@]}"
fi
[[ "$(id -u)" == 0 ]] || die "need root: each etcd member runs in its own mount namespace (unshare -m)"

if [[ ! -x "$MERIDIAN_BIN" ]]; then
  log "no meridian binary at $MERIDIAN_BIN: cargo build --release -p meridian-server"
  CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --quiet -p meridian-server
  [[ -x "$MERIDIAN_BIN" ]] || die "still no executable at $MERIDIAN_BIN (set MERIDIAN_BIN)"
fi
"$MERIDIAN_BIN" link --help >/dev/null 2>&1 ||
  die "$MERIDIAN_BIN has no 'link' subcommand (an old build?): rebuild it or set MERIDIAN_BIN"

# ---------------------------------------------------------------- layout
MEMBERS=(m1 m2 m3)
declare -A CLIENT_PORT PEER_PORT CLIENT_URL PEER_URL PID_OF MEMBER_ID
for i in 1 2 3; do
  m="m$i"
  CLIENT_PORT[$m]=$((CLIENT_BASE + i))
  PEER_PORT[$m]=$((PEER_BASE + i))
  CLIENT_URL[$m]="http://127.0.0.1:${CLIENT_PORT[$m]}"
  PEER_URL[$m]="http://etcd-geo-$m:${PEER_PORT[$m]}"
done
# The far member and the near ones; link F:T listens on 127.77.F.T:<T's peer port>.
FAR=m3
NEAR=(m1 m2)
link_addr() { echo "127.77.${1#m}.${2#m}:${PEER_PORT[$2]}"; }
LINK_ARGS=()
LINK_ADDRS=()
for n in "${NEAR[@]}"; do
  for pair in "$n $FAR" "$FAR $n"; do
    read -r from to <<<"$pair"
    LINK_ARGS+=(--link "$from:$to=$(link_addr "$from" "$to")->127.0.0.1:${PEER_PORT[$to]}")
    LINK_ADDRS+=("$(link_addr "$from" "$to")")
  done
done

# Something already listening on a port would be benchmarked instead of us.
port_busy() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
for m in "${MEMBERS[@]}"; do
  for addr in "127.0.0.1:${CLIENT_PORT[$m]}" "127.0.0.1:${PEER_PORT[$m]}"; do
    if port_busy "$addr"; then die "$addr is already in use"; fi
  done
done
for addr in "${LINK_ADDRS[@]}" "127.0.0.1:$CONTROL_PORT"; do
  if port_busy "$addr"; then die "$addr is already in use"; fi
done

declare -A LINK_ADDRS_OF
for n in "${NEAR[@]}"; do
  LINK_ADDRS_OF[$n:$FAR]="$(link_addr "$n" "$FAR")"
  LINK_ADDRS_OF[$FAR:$n]="$(link_addr "$FAR" "$n")"
done

# hosts file of member M: near names (itself, its near peers) to 127.0.0.1,
# far ones to the link from M to them.
hosts_file() {
  local me="$1" m
  echo "127.0.0.1 localhost"
  for m in "${MEMBERS[@]}"; do
    if [[ "$m" == "$me" || ("$me" != "$FAR" && "$m" != "$FAR") ]]; then
      echo "127.0.0.1 etcd-geo-$m"
    else
      echo "${LINK_ADDRS_OF[$me:$m]%:*} etcd-geo-$m"
    fi
  done
}

# ---------------------------------------------------------------- machine facts
machine_facts "$DATA"
log "etcd $ETCD_VERSION (package $ETCD_PKG), wrk $WRK_VERSION, $NPROC cores ($CPU_MODEL)"

# ---------------------------------------------------------------- links
LINK_CMD=("$MERIDIAN_BIN" link "${LINK_ARGS[@]}" --latency "$LATENCY" --control "127.0.0.1:$CONTROL_PORT")
log "starting the links: ${LINK_CMD[*]}"
"${LINK_CMD[@]}" >"$OUT/etcd-geo-link.log" 2>&1 &
PIDS+=($!)
LINK_PID=$!
for ((i = 0; i < 100; i++)); do
  (($(grep -c '^link .* listening on' "$OUT/etcd-geo-link.log" || true) == ${#LINK_ARGS[@]} / 2)) && break
  kill -0 "$LINK_PID" 2>/dev/null || die "meridian link exited: $(tail -5 "$OUT/etcd-geo-link.log")"
  sleep 0.1
done
((i < 100)) || die "meridian link did not report its links within 10 s; see $OUT/etcd-geo-link.log"

# ---------------------------------------------------------------- etcd members
INITIAL_CLUSTER=""
for m in "${MEMBERS[@]}"; do INITIAL_CLUSTER+="${INITIAL_CLUSTER:+,}$m=${PEER_URL[$m]}"; done
ETCD_CMDS=()
for m in "${MEMBERS[@]}"; do
  hosts_file "$m" >"$DATA/hosts-$m"
  cmd=(etcd --name "$m" --data-dir "$DATA/$m"
    --listen-client-urls "${CLIENT_URL[$m]}" --advertise-client-urls "${CLIENT_URL[$m]}"
    --listen-peer-urls "http://127.0.0.1:${PEER_PORT[$m]}"
    --initial-advertise-peer-urls "${PEER_URL[$m]}"
    --initial-cluster "$INITIAL_CLUSTER" --initial-cluster-token etcd-geo
    --initial-cluster-state new
    --heartbeat-interval "$ETCD_HEARTBEAT_MS" --election-timeout "$ETCD_ELECTION_MS")
  ETCD_CMDS+=("unshare -m sh -c 'mount --bind \"\$0\" /etc/hosts && exec \"\$@\"' ${DATA#"$ROOT"/}/hosts-$m ${cmd[*]}")
  log "starting $m: client ${CLIENT_URL[$m]}, peer ${PEER_URL[$m]} (hosts: $(grep -v localhost "$DATA/hosts-$m" | tr '\n' ' '))"
  # unshare and sh exec: the PID is etcd's own. The bind mount of /etc/hosts is
  # seen only inside the new mount namespace (unshare makes it private).
  # shellcheck disable=SC2016 # $@ is for the inner sh
  unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$DATA/hosts-$m" "${cmd[@]}" \
    >"$OUT/etcd-geo-$m.log" 2>&1 &
  PIDS+=($!)
  PID_OF[$m]=$!
done
for m in "${MEMBERS[@]}"; do
  wait_http "${CLIENT_URL[$m]}/health" 60 "${PID_OF[$m]}" ||
    die "$m did not become healthy; see $OUT/etcd-geo-$m.log"
done
log "all three members healthy"

# POST a JSON body to a member's gateway; prints the answer.
gw() { curl -fsS --max-time 10 -X POST -H 'Content-Type: application/json' -d "$3" "${CLIENT_URL[$1]}$2"; }
status_field() { gw "$1" /v3/maintenance/status '{}' | sed -nE "s/.*\"$2\":\"?([0-9]+)\"?.*/\1/p"; }
leader_name() {
  local id m
  id="$(status_field "$1" leader)"
  for m in "${MEMBERS[@]}"; do
    if [[ "${MEMBER_ID[$m]}" == "$id" ]]; then echo "$m"; return; fi
  done
  echo "none"
}
for m in "${MEMBERS[@]}"; do
  MEMBER_ID[$m]="$(gw "$m" /v3/maintenance/status '{}' | sed -nE 's/.*"member_id":"?([0-9]+)"?.*/\1/p')"
  [[ -n "${MEMBER_ID[$m]}" ]] || die "could not read $m's member ID from /v3/maintenance/status"
done
CUR_LEADER="$(leader_name m1)"
log "elected leader: $CUR_LEADER"
if [[ "$LEADER" != any && "$CUR_LEADER" != "$LEADER" ]]; then
  log "moving the leadership $CUR_LEADER -> $LEADER"
  gw "$CUR_LEADER" /v3/maintenance/transfer-leadership "{\"targetID\":\"${MEMBER_ID[$LEADER]}\"}" >/dev/null ||
    die "transfer-leadership to $LEADER failed"
  for ((i = 0; i < 100; i++)); do
    CUR_LEADER="$(leader_name m1)"
    [[ "$CUR_LEADER" == "$LEADER" && "$(leader_name m3)" == "$LEADER" ]] && break
    sleep 0.1
  done
  [[ "$CUR_LEADER" == "$LEADER" ]] || die "the leader is $CUR_LEADER, not $LEADER, 10 s after the move"
fi
LEADER_BEFORE="$CUR_LEADER"
log "leader: $LEADER_BEFORE"

# ---------------------------------------------------------------- sanity checks
# The link's round trip as an HTTP client sees it: GET /version on m1's peer
# listener through the link m3 -> m1 (a fresh connection; the request pays one
# way, the answer the other).
LINK_RTT_MS="$(curl -fsS -o /dev/null -w '%{time_total}' --max-time 10 \
  "http://$(link_addr "$FAR" m1)/version" | awk '{printf "%.1f", $1 * 1000}')" ||
  die "GET /version through the link $FAR:m1 failed"
log "HTTP round trip through the link $FAR -> m1: $LINK_RTT_MS ms (expected about $((2 * LATENCY)))"

# One PUT per target by hand, timed, so that a wrong path shows up as a clear
# message here rather than as a table full of errors.
TARGETS=(m3 m1)
declare -A ROLE=([m3]="far (behind the ${LATENCY} ms links)" [m1]="near")
declare -A PREFLIGHT_MS
for t in "${TARGETS[@]}"; do
  read -r code secs < <(curl -sS -o "$OUT/etcd-geo-$t-preflight.txt" -w '%{http_code} %{time_total}\n' \
    -X POST -H 'Content-Type: application/json' \
    -d '{"key":"cHJlZmxpZ2h0","value":"cHJlZmxpZ2h0"}' "${CLIENT_URL[$t]}/v3/kv/put" || echo "000 0")
  [[ "$code" == 2?? ]] ||
    die "preflight PUT to $t answered $code: $(head -c 300 "$OUT/etcd-geo-$t-preflight.txt")"
  PREFLIGHT_MS[$t]="$(awk -v s="$secs" 'BEGIN {printf "%.1f", s * 1000}')"
  log "one PUT to $t: ${PREFLIGHT_MS[$t]} ms"
done

# ---------------------------------------------------------------- runs
COMMANDS=()
# run_wrk TARGET CONNECTIONS OUTFILE SECONDS TAG
run_wrk() {
  local t="$1" c="$2" file="$3" secs="$4" tag="$5" cmd
  cmd=(wrk "-t$THREADS" "-c$c" "-d${secs}s" --latency -s bench/wrk/etcd_put.lua "${CLIENT_URL[$t]}")
  COMMANDS+=("BENCH_RUN_TAG=$tag BENCH_WRK_DIR=bench/wrk ${cmd[*]}")
  printf '$ BENCH_RUN_TAG=%s BENCH_WRK_DIR=bench/wrk %s\n' "$tag" "${cmd[*]}" >&2
  # In the background and waited for, so that a TERM stops the script (and
  # wrk, in cleanup) at once rather than after the run.
  BENCH_RUN_TAG="$tag" BENCH_WRK_DIR="$WRK_DIR" "${cmd[@]}" >"$file" 2>"$file.stderr" &
  WRK_PID=$!
  wait "$WRK_PID" || log "wrk exited non-zero for $t (see $file.stderr)"
  WRK_PID=""
  if ! kill -0 "${PID_OF[$t]}" 2>/dev/null; then
    log "ERROR: $t is not running (see bench/out/etcd-geo-$t.log)"
    touch "$file.died"
  fi
}

read -r -a CONNS <<<"$CONNECTIONS"
if ((WARMUP > 0)); then
  for t in "${TARGETS[@]}"; do
    log "warm-up $t (${WARMUP}s, not recorded)"
    run_wrk "$t" "${CONNS[0]}" "$DATA/warmup-$t.txt" "$WARMUP" "warmup-$t"
  done
  COMMANDS=()
fi

RUN_TAG_BASE="$(date +%s)"
for ((r = 1; r <= RUNS; r++)); do
  for c in "${CONNS[@]}"; do
    for t in "${TARGETS[@]}"; do
      log "round $r/$RUNS: $t, $c connections"
      run_wrk "$t" "$c" "$OUT/etcd-geo-$t-c$c-r$r.txt" "$DURATION" "$RUN_TAG_BASE-r$r-c$c"
    done
  done
done
LEADER_AFTER="$(leader_name m1)"

# ---------------------------------------------------------------- results

declare -A RPS P50 P99 NON2XX SOCKERR
ANY_ERRORS=0
for c in "${CONNS[@]}"; do
  for t in "${TARGETS[@]}"; do
    rps=() p50=() p99=() bad=0 serr=0
    for ((r = 1; r <= RUNS; r++)); do
      f="$OUT/etcd-geo-$t-c$c-r$r.txt"
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
      if [[ -e "$f.died" ]]; then s=$((s + 1)); fi
      bad=$((bad + n))
      serr=$((serr + s))
      if ((n > 0 || s > 0)); then
        log "ERRORS in $f: $n non-2xx, $s socket errors (first ones in $f.stderr)"
        ANY_ERRORS=1
      fi
    done
    RPS[$t:$c]="$(median "${rps[@]}")"
    P50[$t:$c]="$(median "${p50[@]}")"
    P99[$t:$c]="$(median "${p99[@]}")"
    NON2XX[$t:$c]="$bad"
    SOCKERR[$t:$c]="$serr"
  done
done

# What crossed each link (from the links' control API): every one of the four
# must have carried traffic, or m3 was not really behind them.
LINK_BYTES=()
for n in "${NEAR[@]}"; do
  for pair in "$n $FAR" "$FAR $n"; do
    read -r from to <<<"$pair"
    info="$(curl -fsS --max-time 5 "http://127.0.0.1:$CONTROL_PORT/links/$from/$to" || echo '{}')"
    fwd="$(sed -nE 's/.*"bytes_forward":([0-9]+).*/\1/p' <<<"$info")"
    rev="$(sed -nE 's/.*"bytes_reverse":([0-9]+).*/\1/p' <<<"$info")"
    conns="$(sed -nE 's/.*"connections_accepted":([0-9]+).*/\1/p' <<<"$info")"
    LINK_BYTES+=("$from:$to ${fwd:-?} B forward, ${rev:-?} B back, ${conns:-?} connections")
    if [[ -z "$fwd" || "$fwd" == 0 || -z "$rev" || "$rev" == 0 ]]; then
      log "ERROR: the link $from:$to carried no traffic in one direction: $info"
      ANY_ERRORS=1
    fi
  done
done

RTT=$((2 * LATENCY))
MEDIANS_NOTE=""
((RUNS > 1)) && MEDIANS_NOTE=", medians over the rounds"
{
  echo "## etcd geo baseline: three members, m3 behind ${LATENCY} ms one-way links (${RTT} ms round trip)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $GIT_REV, $NPROC cores ($CPU_MODEL)."
  echo "etcd $ETCD_VERSION (Debian etcd-server $ETCD_PKG; default settings, heartbeat ${ETCD_HEARTBEAT_MS} ms,"
  echo "election timeout ${ETCD_ELECTION_MS} ms, data dirs on $FS_TYPE), wrk $WRK_VERSION, links by \`meridian link\`."
  echo "Durable PUTs with 100-byte values and distinct keys (POST /v3/kv/put, bench/wrk/etcd_put.lua),"
  echo "${DURATION}s per run, $RUNS round(s)${MEDIANS_NOTE}."
  echo "Raft leader: $LEADER_BEFORE before the runs, $LEADER_AFTER after (asked for: $LEADER)."
  echo "Round trip through a link (HTTP GET on a fresh connection): $LINK_RTT_MS ms."
  echo "Bytes through the links over the whole run: $(printf '%s; ' "${LINK_BYTES[@]}" | sed 's/; $//')."
  echo "A single PUT before the runs: ${PREFLIGHT_MS[m3]} ms to m3, ${PREFLIGHT_MS[m1]} ms to m1."
  echo
  echo "| target | connections | req/s | p50 ms | p99 ms | p50 / RTT | non-2xx | socket errors |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for c in "${CONNS[@]}"; do
    for t in "${TARGETS[@]}"; do
      k="$t:$c"
      flag=""
      ((NON2XX[$k] + SOCKERR[$k] > 0)) && flag=" **ERRORS: not a result**"
      printf '| %s, %s%s | %s | %.0f | %.2f | %.2f | %.2f | %s | %s |\n' "$t" "${ROLE[$t]}" "$flag" "$c" \
        "${RPS[$k]}" "${P50[$k]}" "${P99[$k]}" "$(awk -v p="${P50[$k]}" -v r="$RTT" 'BEGIN {print p / r}')" \
        "${NON2XX[$k]}" "${SOCKERR[$k]}"
    done
  done
  echo
  echo "p50 / RTT is the median put latency in link round trips (RTT = 2 x LATENCY = ${RTT} ms)."
  echo "Latencies are wrk 4's, with its coordinated-omission correction (see bench/README.md)."
  if [[ "$LEADER_AFTER" != "$LEADER_BEFORE" ]]; then
    echo
    echo "**The leader moved during the runs ($LEADER_BEFORE -> $LEADER_AFTER): not a result.**"
  fi
  echo
  echo "Commands (run from the repository root; raw output in bench/out/etcd-geo-<target>-c<N>-r<R>.txt):"
  echo
  echo '```'
  echo "${LINK_CMD[*]}"
  printf '%s\n' "${ETCD_CMDS[@]}"
  printf '%s\n' "${COMMANDS[@]}"
  echo '```'
} | tee "$OUT/etcd-geo.md"

if ((ANY_ERRORS)); then
  die "some runs saw non-2xx responses or socket errors, or a link carried no traffic (see above): not a result"
fi
[[ "$LEADER_AFTER" == "$LEADER_BEFORE" ]] || die "the leader moved during the runs ($LEADER_BEFORE -> $LEADER_AFTER)"
