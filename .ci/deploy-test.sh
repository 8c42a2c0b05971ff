#!/usr/bin/env bash
# CI for deploy/ (issue 7): the Kubernetes manifests, then the container image
# and the Compose cluster for real.
#
#   1. Kubernetes: the region manifests match their generator, every manifest
#      validates against the Kubernetes schemas (kubernetes-validate, offline,
#      strict), image tags match the workspace version. Needs no Docker.
#   -- The rest needs a Docker engine: without one (docker info fails) this
#      prints "skipped: no Docker engine (reason)" and exits 0.
#   2. Builds the image from scratch with deploy/build-image.sh (set
#      MERIDIAN_BIN to reuse a release binary; CARGO_TARGET_DIR is honoured)
#      and runs the Kubernetes config file in it.
#   3. Starts deploy/compose.yaml as project meridian-ci-$$ on free host ports
#      with a freshly generated secret; waits for the image's HEALTHCHECK.
#   4. Writes in every region; reads every write in every region.
#   5. Cuts one region off the Compose network (docker network disconnect)
#      while writes go on on both sides; reconnects it: all regions converge
#      (equal ops, equal per-keyspace digests) and hold every acknowledged write.
#   6. docker kill of a region under write load, docker start: its volume kept
#      every acknowledged write (same incarnation) and it catches up.
#   7. The latency profile (compose.latency.yaml): replication goes through
#      the link emulator and takes at least the link's one-way latency.
#   8. Standbys (compose.standbys.yaml): docker kill of a region's leader
#      under writes acknowledged with `standby`; its standby takes over and
#      holds every one; the old leader, started again, steps down and follows.
#   Containers, networks, volumes and temporary files are removed on exit,
#   whether the test passed or not.
#
# Environment: MERIDIAN_BIN (reuse a built binary), CARGO_TARGET_DIR,
# MERIDIAN_CI_VENV (where kubernetes-validate is installed; default
# ~/.cache/meridian-ci/venv), MERIDIAN_DEPLOY_KEEP=1 (leave the cluster up
# on failure, for debugging).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS

say() { printf '== deploy: %s\n' "$*"; }
die() {
  printf 'deploy-test: FAILED: %s\n' "$*" >&2
  exit 1
}
passed=0
pass() {
  passed=$((passed + 1))
  printf 'deploy-test: ok: %s (%ss)\n' "$*" "$((SECONDS - t0))"
}

regions=(us-east eu-west ap-south)
version=$(awk '
  /^\[workspace\.package\]/ { in_pkg = 1; next }
  /^\[/ { in_pkg = 0 }
  in_pkg && $1 == "version" { gsub(/[" ]/, "", $3); print $3; exit }
' Cargo.toml)

# ---------------------------------------------------------------- 1. Kubernetes
say "kubernetes manifests"
for r in "${regions[@]}"; do
  diff -u "deploy/k8s/region-$r.yaml" <(deploy/k8s/render-region.sh "$r") ||
    die "deploy/k8s/region-$r.yaml differs from what 'deploy/k8s/render-region.sh $r' writes: regenerate it"
  grep -q "image: meridian:$version\$" "deploy/k8s/region-$r.yaml" ||
    die "deploy/k8s/region-$r.yaml does not run meridian:$version (the workspace version)"
done
grep -q "MERIDIAN_TAG:-$version}" deploy/compose.yaml ||
  die "deploy/compose.yaml's default image tag is not the workspace version $version"
kv_version=1.37.0
venv=${MERIDIAN_CI_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/meridian-ci/venv}
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qF "$kv_version"; then
  echo "installing kubernetes-validate==$kv_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$kv_version"
fi
for k in 1.29.0 1.37.0; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$k" deploy/k8s/*.yaml ||
    die "kubernetes-validate (Kubernetes $k, strict) refused a manifest"
done
pass "kubernetes manifests generated, versioned and valid (strict schemas 1.29 and 1.37)"

# ---------------------------------------------------------------- Docker?
if ! docker_err=$(docker info 2>&1 >/dev/null); then
  reason=$(printf '%s\n' "$docker_err" | grep -v '^\s*$' | tail -1)
  echo "deploy-test: skipped: no Docker engine (${reason:-docker info failed})"
  echo "deploy-test: $passed passed, 0 failed, 7 skipped"
  exit 0
fi
if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose_cmd=(docker-compose)
else
  die "a Docker engine answers but neither 'docker compose' nor 'docker-compose' is installed"
fi
say "docker $(docker version -f '{{.Server.Version}}' 2>/dev/null), compose: ${compose_cmd[*]} $("${compose_cmd[@]}" version --short 2>/dev/null || true)"

project=meridian-ci-$$
lat_project=$project-lat
work=$(mktemp -d "${TMPDIR:-/tmp}/meridian-deploy-test.XXXXXX")
acks=$work/acks
loaders=()
failed=1

compose() { "${compose_cmd[@]}" -p "$project" -f deploy/compose.yaml "$@"; }
compose_lat() { "${compose_cmd[@]}" -p "$lat_project" -f deploy/compose.yaml -f deploy/compose.latency.yaml "$@"; }

cleanup() {
  local rc=$?
  set +e
  for pid in "${loaders[@]}"; do kill "$pid" 2>/dev/null; done
  if [[ $failed == 1 ]]; then
    for p in "$project" "$lat_project" "$project-sb"; do
      for c in $(docker ps -aq --filter "label=com.docker.compose.project=$p"); do
        echo "---- logs of $(docker inspect -f '{{.Name}}' "$c") (last 40 lines)"
        docker logs --tail 40 "$c" 2>&1
      done
    done
  fi
  if [[ $failed == 1 && ${MERIDIAN_DEPLOY_KEEP:-} == 1 ]]; then
    echo "deploy-test: MERIDIAN_DEPLOY_KEEP=1: left project $project running; work dir $work"
    exit "$rc"
  fi
  docker rm -f "$project-config" >/dev/null 2>&1
  compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1
  compose_lat down -v --remove-orphans --timeout 5 >/dev/null 2>&1
  "${compose_cmd[@]}" -p "$project-sb" -f deploy/compose.yaml -f deploy/compose.standbys.yaml down -v --remove-orphans --timeout 5 >/dev/null 2>&1
  docker network rm "$project-probe" >/dev/null 2>&1
  # Anything of the projects still there (e.g. a compose that failed half way).
  for p in "$project" "$lat_project" "$project-sb"; do
    docker ps -aq --filter "label=com.docker.compose.project=$p" | xargs -r docker rm -f -v >/dev/null 2>&1
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

check() { python3 deploy/ci/cluster.py "$@"; }
# Every client call: over TLS trusting the cluster's CA, with the admin
# token (both written below, before the first region starts).
mcurl() { curl --cacert "$MERIDIAN_CA_FILE" -H "Authorization: Bearer $MERIDIAN_ACCESS_TOKEN" "$@"; }

free_ports() {
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$1"
}

# ---------------------------------------------------------------- 2. the image
say "build the image (deploy/build-image.sh)"
build_out=$(deploy/build-image.sh) || die "deploy/build-image.sh failed"
echo "$build_out"
image_size=$(awk '/^image / { print $4 }' <<<"$build_out")

say "the Kubernetes config file runs in the image, as the StatefulSet runs it"
secret=$work/cluster-secret
deploy/new-cluster-secret.sh "$secret" >/dev/null
# TLS and tokens, as Compose and Kubernetes run: a CA and the cluster's
# certificate, a bootstrap admin token; mounted, never in the image.
certs=$work/certs
MERIDIAN_BIN=${MERIDIAN_BIN:-} deploy/new-certs.sh "$certs" >/dev/null
admin_token=$work/admin-token
deploy/new-admin-token.sh "$admin_token" >/dev/null
export MERIDIAN_CERTS_DIR=$certs MERIDIAN_ADMIN_TOKEN_FILE=$admin_token
export MERIDIAN_CA_FILE=$certs/ca.pem
MERIDIAN_ACCESS_TOKEN=$(cat "$admin_token")
export MERIDIAN_ACCESS_TOKEN
"$venv/bin/python" - deploy/k8s/region-us-east.yaml "$work/meridian.toml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap")
open(sys.argv[2], "w").write(cm["data"]["meridian.toml"])
EOF
chmod 0644 "$work/meridian.toml"
# Like the pod: read-only root, /tmp a scratch mount, no capabilities.
docker run -d --name "$project-config" \
  --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
  -v "$work/meridian.toml:/etc/meridian/config/meridian.toml:ro" \
  -v "$secret:/etc/meridian/secret/cluster-secret:ro" \
  -v "$certs/cluster.pem:/etc/meridian/tls/tls.crt:ro" \
  -v "$certs/cluster-key.pem:/etc/meridian/tls/tls.key:ro" \
  -v "$certs/ca.pem:/etc/meridian/tls/ca.crt:ro" \
  -v "$admin_token:/etc/meridian/admin/admin-token:ro" \
  -e MERIDIAN_STANDBY__ADVERTISE_PEER_URL=https://meridian-us-east-0.meridian-us-east-peer.meridian.svc.cluster.local:7170 \
  "meridian:$version" serve --config /etc/meridian/config/meridian.toml >/dev/null
for _ in $(seq 1 100); do
  docker logs "$project-config" 2>/dev/null | grep -q "region us-east (leader) listening on" && break
  [[ $(docker inspect -f '{{.State.Running}}' "$project-config") == true ]] || break
  sleep 0.2
done
docker logs "$project-config" 2>/dev/null | grep -q "region us-east (leader) listening on" || {
  docker logs "$project-config" 2>&1 | tail -5
  die "the region did not start with the ConfigMap's meridian.toml"
}
config_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$project-config")
# The certificate names localhost: reach the container's IP under it.
at_config=(--resolve "localhost:7070:$config_ip")
if [[ $(curl -s -o /dev/null -w '%{http_code}' --cacert "$MERIDIAN_CA_FILE" "${at_config[@]}" https://localhost:7070/v1/status) != 401 ]]; then
  die "the region started with the ConfigMap's config answers without a token"
fi
if ! mcurl -sf "${at_config[@]}" -X PUT "https://localhost:7070/v1/kv/default/ci-config" -d '"ok"' >/dev/null ||
  [[ $(mcurl -sf "${at_config[@]}" "https://localhost:7070/v1/kv/default/ci-config") != *'"value":"ok"'* ]]; then
  die "the region started with the ConfigMap's config does not take writes on a read-only root"
fi
docker stop -t 10 "$project-config" >/dev/null
[[ $(docker inspect -f '{{.State.ExitCode}}' "$project-config") == 0 ]] ||
  die "SIGTERM did not stop the region cleanly (exit $(docker inspect -f '{{.State.ExitCode}}' "$project-config"))"
docker rm -v "$project-config" >/dev/null
pass "image meridian:$version built ($image_size bytes); the k8s config (as pod 0: the leader; TLS, tokens) refuses a caller without a token and serves writes on a read-only root; SIGTERM exits 0"

# ---------------------------------------------------------------- 3. Compose up
say "compose up ($project)"
read -r p1 p2 p3 c1 c2 c3 <<<"$(free_ports 6)"
export MERIDIAN_SECRET_FILE=$secret
export MERIDIAN_PORT_US_EAST=$p1 MERIDIAN_PORT_EU_WEST=$p2 MERIDIAN_PORT_AP_SOUTH=$p3
export MERIDIAN_LINK_CONTROL_US_EU=$c1 MERIDIAN_LINK_CONTROL_US_AP=$c2 MERIDIAN_LINK_CONTROL_EU_AP=$c3
declare -A url=(
  [us-east]=https://localhost:$p1
  [eu-west]=https://localhost:$p2
  [ap-south]=https://localhost:$p3
)
all_urls=("${url[us-east]}" "${url[eu-west]}" "${url[ap-south]}")
compose up -d

ctr() { compose ps -q "$1"; }
wait_docker_healthy() { # services...
  local deadline=$((SECONDS + 120)) s st
  for s in "$@"; do
    while :; do
      st=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$(ctr "$s")")
      [[ $st == running/healthy ]] && break
      ((SECONDS < deadline)) || die "$s is $st after 120 s"
      sleep 1
    done
  done
}
wait_docker_healthy "${regions[@]}"
check wait-healthy "${all_urls[@]}" --timeout 30 || die "regions not reachable on their published ports"
pass "three regions healthy (HEALTHCHECK) and answering on published ports $p1 $p2 $p3"

# ---------------------------------------------------------------- 4. replicate
say "write in every region, read everywhere"
check write --phase basic --count 25 --acks-dir "$acks" "${all_urls[@]}" || die "writes refused"
check verify --acks-dir "$acks" --timeout 60 "${all_urls[@]}" || die "writes did not replicate"
check converge --timeout 60 "${all_urls[@]}" || die "regions did not converge"
pass "every write readable in every region"

start_load() { # phase region url
  local stop=$work/stop-$1
  rm -f "$stop"
  check load --phase "$1" --region "$2" --acks-dir "$acks" --stop-file "$stop" "$3" &
  loaders+=($!)
}
stop_load() { # phase
  touch "$work/stop-$1"
  for pid in "${loaders[@]}"; do wait "$pid" || die "a write loader failed"; done
  loaders=()
}

# ---------------------------------------------------------------- 5. partition
cut=ap-south
say "cut $cut off the network while writing on both sides"
cut_ctr=$(ctr "$cut")
net=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{"\n"}}{{end}}' "$cut_ctr" | grep '_meridian$')
aliases=$(docker inspect -f "{{json (index .NetworkSettings.Networks \"$net\").Aliases}}" "$cut_ctr" |
  python3 -c 'import json, sys; print(" ".join(json.load(sys.stdin) or []))')
# The host keeps reaching the cut-off region through a network of its own
# (shared with no other region): the regions cannot reach each other.
docker network create "$project-probe" >/dev/null
docker network connect "$project-probe" "$cut_ctr"
probe_ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$project-probe\").IPAddress}}" "$cut_ctr")
docker network disconnect "$net" "$cut_ctr"
cut_url=https://$probe_ip:7070
start_load partition "$cut" "$cut_url"
start_load partition us-east "${url[us-east]}"
start_load partition eu-west "${url[eu-west]}"
sleep 6
check isolated --acks-dir "$acks" --phase partition --region "$cut" "${url[us-east]}" "${url[eu-west]}" ||
  die "the cut did not isolate $cut"
stop_load partition
say "reconnect $cut (aliases: $aliases)"
alias_args=()
for a in $aliases; do alias_args+=(--alias "$a"); done
docker network connect "${alias_args[@]}" "$net" "$cut_ctr"
docker network disconnect "$project-probe" "$cut_ctr"
docker network rm "$project-probe" >/dev/null
check wait-healthy "${all_urls[@]}" --timeout 30 || die "$cut unreachable after reconnecting"
check converge --timeout 90 "${all_urls[@]}" || die "no convergence after the partition healed"
check verify --acks-dir "$acks" --timeout 60 "${all_urls[@]}" || die "acknowledged writes lost across the partition"
pass "partition of $cut: both sides took writes, converged after healing, nothing lost"

# ---------------------------------------------------------------- 6. kill -9
victim=eu-west
say "docker kill $victim under write load"
incarnation() { mcurl -sf "$1/v1/status" | python3 -c 'import json, sys; print(json.load(sys.stdin)["replica"]["incarnation"])'; }
before=$(incarnation "${url[$victim]}")
for r in "${regions[@]}"; do start_load kill "$r" "${url[$r]}"; done
sleep 3
docker kill "$(ctr "$victim")" >/dev/null
sleep 3
# `docker kill` counts as a manual stop: the restart policy does not bring it
# back (a crash would). Start it again as an operator would.
[[ $(docker inspect -f '{{.State.Running}}' "$(ctr "$victim")") == true ]] || docker start "$(ctr "$victim")" >/dev/null
wait_docker_healthy "$victim"
sleep 3
stop_load kill
after=$(incarnation "${url[$victim]}")
[[ $before == "$after" ]] || die "$victim came back as a new incarnation ($before -> $after): its volume lost its data"
check converge --timeout 90 "${all_urls[@]}" || die "no convergence after the kill"
verify_line=$(check verify --acks-dir "$acks" --timeout 60 "${all_urls[@]}") || die "acknowledged writes lost across the kill"
echo "$verify_line"
pass "kill -9 of $victim: same incarnation after restart, caught up, nothing lost"
per_phase=$(check report --acks-dir "$acks")
compose down -v --remove-orphans --timeout 10 >/dev/null 2>&1

# ---------------------------------------------------------------- 7. latency
say "latency profile ($lat_project)"
used=$(docker network ls -q | xargs docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null)
prefix=
for i in $(seq 70 250); do
  [[ " $used " == *" 172.30.$i."* ]] || { prefix=172.30.$i; break; }
done
[[ -n $prefix ]] || die "no free 172.30.x.0/24 for the latency profile"
export MERIDIAN_SUBNET_PREFIX=$prefix
compose_lat up -d
ctr() { compose_lat ps -q "$1"; }
wait_docker_healthy "${regions[@]}"
# Direct replication takes a few ms; through the emulator at least its
# one-way latency (thresholds 10% lower: the clock starts when the PUT
# answers, a hair after the op may have left).
check latency "${url[us-east]}" "${url[ap-south]}" --min-ms 81 || die "us-east -> ap-south did not go through the 90 ms link"
check latency "${url[us-east]}" "${url[eu-west]}" --min-ms 36 || die "us-east -> eu-west did not go through the 40 ms link"
check converge --timeout 30 "${all_urls[@]}" || die "the latency cluster did not converge"
pass "latency profile: replication goes through the link emulator (90 and 40 ms one way)"

compose_lat down -v --remove-orphans --timeout 10 >/dev/null 2>&1

# ---------------------------------------------------------------- 8. standbys
sb_project=$project-sb
compose_sb() { "${compose_cmd[@]}" -p "$sb_project" -f deploy/compose.yaml -f deploy/compose.standbys.yaml "$@"; }
say "standbys ($sb_project)"
read -r p1 p2 p3 s1 s2 s3 <<<"$(free_ports 6)"
export MERIDIAN_PORT_US_EAST=$p1 MERIDIAN_PORT_EU_WEST=$p2 MERIDIAN_PORT_AP_SOUTH=$p3
export MERIDIAN_PORT_US_EAST_STANDBY=$s1 MERIDIAN_PORT_EU_WEST_STANDBY=$s2 MERIDIAN_PORT_AP_SOUTH_STANDBY=$s3
compose_sb up -d
ctr() { compose_sb ps -q "$1"; }
wait_docker_healthy "${regions[@]}" us-east-standby eu-west-standby ap-south-standby
leader_url=https://localhost:$p2
standby_url=https://localhost:$s2
for _ in $(seq 1 100); do
  [[ $(mcurl -s "$leader_url/v1/status" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["standby"]["followers"]))' 2>/dev/null) == 1 ]] && break
  sleep 0.2
done
sb_acks=$work/sb-acks
mkdir -p "$sb_acks"
n=0
for i in $(seq 1 40); do
  if mcurl -sf -X PUT -H 'meridian-write-concern: standby' "$leader_url/v1/kv/default/sb-$i" -d "\"v$i\"" >/dev/null; then
    echo "sb-$i" >>"$sb_acks/keys"
    n=$((n + 1))
  fi
done
((n == 40)) || die "only $n of 40 writes with write concern standby were acknowledged"
t_kill=$SECONDS
docker kill "$(ctr eu-west)" >/dev/null
for _ in $(seq 1 100); do
  mcurl -sf "$standby_url/healthz/leader" >/dev/null && break
  sleep 0.2
done
mcurl -sf "$standby_url/healthz/leader" >/dev/null || die "eu-west-standby did not take over within 20 s of the leader's kill"
took=$((SECONDS - t_kill))
while read -r k; do
  [[ $(mcurl -sf "$standby_url/v1/kv/default/$k") == *'"value":"v'* ]] || die "$k, acknowledged with standby, is not on the promoted standby"
done <"$sb_acks/keys"
mcurl -sf -X PUT "$standby_url/v1/kv/default/sb-after" -d '"after"' >/dev/null || die "the promoted standby takes no writes"
docker start "$(ctr eu-west)" >/dev/null
role=
for _ in $(seq 1 150); do
  role=$(mcurl -s "$leader_url/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["standby"]["role"])' 2>/dev/null || true)
  [[ $role == follower ]] && break
  sleep 0.2
done
[[ $role == follower ]] || die "the old eu-west leader did not step down after it was started again (role: ${role:-none})"
got=
for _ in $(seq 1 100); do
  got=$(mcurl -s "$leader_url/v1/kv/default/sb-after" || true)
  [[ $got == *'"value":"after"'* ]] && break
  sleep 0.2
done
[[ $got == *'"value":"after"'* ]] || die "the old leader does not follow the new one (sb-after: ${got:-no answer})"
pass "standbys: eu-west's standby led within ${took}s of docker kill of its leader, held all 40 standby writes; the old leader stepped down"
compose_sb down -v --remove-orphans --timeout 10 >/dev/null 2>&1

failed=0
echo "deploy-test: report: writes acknowledged ($per_phase); $verify_line; image $image_size bytes; $((SECONDS - t0)) s"
echo "deploy-test: $passed passed, 0 failed"
