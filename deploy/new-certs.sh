#!/usr/bin/env bash
# Writes a development CA and one certificate for the Compose cluster into
# DIR (default deploy/certs, ignored by git): ca.pem, ca-key.pem (kept
# here, never mounted), cluster.pem and cluster-key.pem. The certificate's
# SANs are every service name of deploy/compose*.yaml, localhost and
# 127.0.0.1, so every region, standby and link serves and presents it (TLS
# on both listeners, mutual TLS between peers). Then:
#
#   MERIDIAN_CERTS_DIR=$PWD/deploy/certs docker-compose -f deploy/compose.yaml up -d
#
# Run again to renew cluster.pem (same CA), then restart the services:
# Compose bind-mounts each secret file, so running containers keep the one
# they started with. Uses `meridian cert` from MERIDIAN_BIN, the
# build tree or PATH, else from the image meridian:VERSION.
# The regions run as uid 10001 and docker-compose v1 bind-mounts files as
# they are: the key is made readable by uid 10001 (owned by it with mode
# 0400 when run as root, else mode 0444: keep DIR where only you can enter).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/certs}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
sans=localhost,127.0.0.1
for s in us-east eu-west ap-south; do
  sans+=",$s,$s-standby"
done
sans+=",link-us-eu,link-us-ap,link-eu-ap"
version=$(awk '/^\[workspace\.package\]/ { p = 1; next } /^\[/ { p = 0 } p && $1 == "version" { gsub(/[" ]/, "", $3); print $3; exit }' "$here/../Cargo.toml")
bin=${MERIDIAN_BIN:-}
if [[ -z $bin ]]; then
  for b in "$here/../target/release/meridian" "$here/../target/debug/meridian" "$(command -v meridian || true)"; do
    [[ -n $b && -x $b ]] && { bin=$b; break; }
  done
fi
# A renewal replaces the leaf only.
rm -f "$dir/cluster.pem" "$dir/cluster-key.pem"
if [[ -n $bin ]]; then
  "$bin" cert --dir "$dir" "cluster=$sans" >/dev/null
else
  docker run --rm --network none --user "$(id -u):$(id -g)" -v "$dir:/certs" \
    "meridian:$version" cert --dir /certs "cluster=$sans" >/dev/null
fi
if [[ $(id -u) == 0 ]]; then
  chown 10001:10001 "$dir/cluster-key.pem"
  chmod 0400 "$dir/cluster-key.pem"
else
  chmod 0444 "$dir/cluster-key.pem"
fi
chmod 0444 "$dir/cluster.pem" "$dir/ca.pem"
echo "CA $dir/ca.pem; certificate $dir/cluster.pem ($sans)"
