# Helpers shared by the benchmark scripts (sourced, not run).
# Benchmarked regions listen on loopback and run without access tokens
# (auth is measured on its own, not folded into these figures).
export MERIDIAN_AUTH__MODE="${MERIDIAN_AUTH__MODE:-open}"

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# median VALUES...: the middle value (mean of the two middle ones for an even count).
median() {
  printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {
    if (NR == 0) { print "n/a"; exit }
    if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# wait_http URL SECONDS PID: until URL answers 2xx; fails early if PID dies.
wait_http() {
  local url="$1" secs="$2" pid="$3" i
  for ((i = 0; i < secs * 10; i++)); do
    if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# to_ms VALUE: wrk latency ("812.00us", "1.23ms", "1.02s") in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
    printf "%.2f", n }'
}

# machine_facts DIR: sets ETCD_VERSION WRK_VERSION ETCD_PKG CPU_MODEL NPROC
# FS_TYPE (of DIR) GIT_REV, and warns when DIR is on tmpfs.
machine_facts() {
  ETCD_VERSION="$(etcd --version | awk '/etcd Version/ {print $3}')"
  WRK_VERSION="$(wrk -v 2>&1 | awk 'NR == 1 {print $2}' || true)"
  ETCD_PKG="$(dpkg-query -W -f '${Version}' etcd-server 2>/dev/null || echo 'not from dpkg')"
  CPU_MODEL="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  NPROC="$(nproc)"
  FS_TYPE="$(stat -f -c %T "$1")"
  GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
  if [[ "$FS_TYPE" == tmpfs ]]; then
    log "WARNING: $1 is on tmpfs: fsync is free there, etcd is not durable"
  fi
}
