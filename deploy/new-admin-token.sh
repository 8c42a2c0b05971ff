#!/usr/bin/env bash
# Writes a new random bootstrap admin token (mrd_..., 256 random bits) to
# FILE (default deploy/admin-token, ignored by git), replacing it
# atomically. Then, for Compose:
#
#   MERIDIAN_ADMIN_TOKEN_FILE=$PWD/deploy/admin-token \
#     docker-compose -f deploy/compose.yaml up -d
#   export MERIDIAN_ACCESS_TOKEN=$(cat deploy/admin-token)
#
# Readable by uid 10001 as deploy/new-cluster-secret.sh makes its file.
set -euo pipefail
file=${1:-$(cd "$(dirname "$0")" && pwd)/admin-token}
tmp=$(mktemp "$(dirname "$file")/.admin-token.XXXXXX")
trap 'rm -f "$tmp"' EXIT
printf 'mrd_%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$tmp"
if [[ $(id -u) == 0 ]]; then
  chown 10001:10001 "$tmp"
  chmod 0400 "$tmp"
else
  chmod 0444 "$tmp"
fi
mv -f "$tmp" "$file"
trap - EXIT
echo "new admin token in $file"
