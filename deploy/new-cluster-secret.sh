#!/usr/bin/env bash
# Writes a new random cluster secret (32 random bytes, base64: 44 characters)
# to FILE (default deploy/cluster-secret, ignored by git), replacing it
# atomically. Then, for Compose:
#
#   MERIDIAN_SECRET_FILE=$PWD/deploy/cluster-secret \
#     docker-compose -f deploy/compose.yaml up -d
#
# The regions run as uid 10001 and docker-compose v1 bind-mounts the file as
# it is, so the file is made readable by uid 10001: owned by 10001 with mode
# 0400 when run as root, else mode 0444 (then keep it in a directory only you
# can enter). Rotating a running cluster's secret: deploy/README.md.
set -euo pipefail
file=${1:-$(cd "$(dirname "$0")" && pwd)/cluster-secret}
tmp=$(mktemp "$(dirname "$file")/.cluster-secret.XXXXXX")
trap 'rm -f "$tmp"' EXIT
head -c 32 /dev/urandom | base64 >"$tmp"
if [[ $(id -u) == 0 ]]; then
  chown 10001:10001 "$tmp"
  chmod 0400 "$tmp"
else
  chmod 0444 "$tmp"
fi
mv -f "$tmp" "$file"
trap - EXIT
echo "new cluster secret in $file"
