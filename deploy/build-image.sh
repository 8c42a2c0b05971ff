#!/usr/bin/env bash
# Builds the container image meridian:<workspace version> (also :latest) from
# this checkout, without any registry: the image is FROM scratch and holds the
# release binary, exactly the shared libraries `ldd` lists for it, a minimal
# /etc (passwd, group, nsswitch.conf) with the non-root user meridian
# (uid/gid 10001), /tmp and /data.
#
#   deploy/build-image.sh
#
# Environment:
#   MERIDIAN_BIN      use this already built release binary instead of running
#                     `cargo build --release` (CI sets it when it has one)
#   CARGO_TARGET_DIR  honoured by the cargo build (as cargo itself does)
#   MERIDIAN_IMAGE    image name (default: meridian)
#   MERIDIAN_STRIP    debug (default: drop debug info, keep symbols so panics
#                     still name functions), all, or none
#
# The binary and its libraries come from this machine: the image runs on the
# same CPU architecture and needs no newer glibc than the one it carries.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${MERIDIAN_IMAGE:-meridian}
strip_mode=${MERIDIAN_STRIP:-debug}
uid=10001
gid=10001

say() { printf 'build-image: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
command -v ldd >/dev/null || die "ldd is not installed (Debian: libc-bin)"

# The workspace version, from [workspace.package] in Cargo.toml.
version=$(awk '
  /^\[workspace\.package\]/ { in_pkg = 1; next }
  /^\[/ { in_pkg = 0 }
  in_pkg && $1 == "version" { gsub(/[" ]/, "", $3); print $3; exit }
' Cargo.toml)
[[ -n $version ]] || die "no version in [workspace.package] of Cargo.toml"
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ $revision != unknown ]] && ! git diff --quiet HEAD -- 2>/dev/null; then
  revision="$revision-dirty"
fi

# 1. The release binary.
if [[ -n ${MERIDIAN_BIN:-} ]]; then
  bin=$MERIDIAN_BIN
  [[ -x $bin ]] || die "MERIDIAN_BIN=$bin is not an executable file"
  say "using the binary $bin (MERIDIAN_BIN; no cargo build)"
else
  command -v cargo >/dev/null || die "cargo is not installed (or set MERIDIAN_BIN)"
  say "cargo build --release -p meridian-server --no-default-features (no bench, no test harness)"
  cargo build --release --locked -p meridian-server --no-default-features
  target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  bin=$target_dir/release/meridian
fi
"$bin" --version >/dev/null || die "$bin does not run here"
if "$bin" bench --help >/dev/null 2>&1; then
  say "note: $bin has 'meridian bench' and the test harness (built with default features); release images are built with --no-default-features"
fi

# 2. The build context.
ctx=$(mktemp -d "${TMPDIR:-/tmp}/meridian-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$ctx/data"
chmod 1777 "$root/tmp"
chmod 0755 "$root" "$root/usr" "$root/usr/local" "$root/usr/local/bin" "$root/etc" "$ctx/data"

cp "$bin" "$root/usr/local/bin/meridian"
chmod 0755 "$root/usr/local/bin/meridian"
case $strip_mode in
  debug) strip --strip-debug "$root/usr/local/bin/meridian" ;;
  all) strip --strip-all "$root/usr/local/bin/meridian" ;;
  none) ;;
  *) die "MERIDIAN_STRIP must be debug, all or none (got $strip_mode)" ;;
esac

# Copy a library to the same path inside the image (symlinks resolved: the
# image holds the file under the name the loader asks for).
copy_lib() {
  local path=$1
  [[ -e $root$path ]] && return 0
  mkdir -p "$root$(dirname "$path")"
  cp -L "$path" "$root$path"
  chmod 0755 "$root$path"
  libs+=("$path")
}

# Every "name => /path (addr)" and the "/lib64/ld-linux... (addr)" line.
libs_of() {
  ldd "$1" 2>/dev/null | awk '
    $2 == "=>" && $3 ~ /^\// { print $3 }
    $1 ~ /^\// { print $1 }
  '
}

libs=()
if ldd "$bin" >/dev/null 2>&1; then
  while read -r lib; do copy_lib "$lib"; done < <(libs_of "$bin")
else
  say "the binary is statically linked: no libraries to copy"
fi

# Name resolution (peers are addressed by name: Compose service names,
# Kubernetes DNS). glibc's getaddrinfo reads /etc/nsswitch.conf; since glibc
# 2.34 the `files` and `dns` modules and libresolv live inside libc.so.6, so
# nothing more is needed. An older glibc loads them with dlopen, which ldd
# cannot see: copy them (and what they need) then.
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
if [[ ${#libs[@]} -gt 0 && -n $glibc ]] &&
  [[ $(printf '%s\n' "$glibc" 2.34 | sort -V | head -1) != 2.34 ]]; then
  libdir=$(dirname "$(printf '%s\n' "${libs[@]}" | grep '/libc\.so\.6$')")
  for nss in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
    if [[ -e $libdir/$nss ]]; then
      copy_lib "$libdir/$nss"
      while read -r lib; do copy_lib "$lib"; done < <(libs_of "$libdir/$nss")
    fi
  done
  say "glibc $glibc < 2.34: added its NSS modules for name resolution"
fi

cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
meridian:x:$uid:$gid:meridian:/data:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
cat >"$root/etc/group" <<EOF
root:x:0:
meridian:x:$gid:
nogroup:x:65534:
EOF
cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
cp deploy/Dockerfile "$ctx/Dockerfile"

# 3. docker build: only local files, no network. The legacy builder when the
# buildx plugin is missing (BuildKit needs it with a recent docker CLI).
build_env=()
if ! docker buildx version >/dev/null 2>&1; then
  build_env=(DOCKER_BUILDKIT=0)
  say "no docker buildx plugin: using the legacy builder"
fi
old_id=$(docker image inspect -f '{{.Id}}' "$image:$version" 2>/dev/null || true)
say "docker build -t $image:$version -t $image:latest (libraries: ${libs[*]:-none})"
env "${build_env[@]}" docker build --network none --quiet \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
  -t "$image:$version" -t "$image:latest" "$ctx" >/dev/null

# 4. Smoke test: the binary starts inside the image (libraries complete).
got=$(docker run --rm --network none "$image:$version" --version)
[[ $got == "meridian $version" ]] || die "the image answered '$got' to --version"

# The image this one replaces, once untagged, is only clutter (kept if a
# container still uses it).
new_id=$(docker image inspect -f '{{.Id}}' "$image:$version")
if [[ -n $old_id && $old_id != "$new_id" ]] &&
  [[ -z $(docker image inspect -f '{{join .RepoTags ""}}' "$old_id" 2>/dev/null) ]]; then
  docker rmi "$old_id" >/dev/null 2>&1 || true
fi

bytes=$(docker image inspect -f '{{.Size}}' "$image:$version")
binary_bytes=$(stat -c %s "$root/usr/local/bin/meridian")
say "built $image:$version and $image:latest (revision $revision)"
printf 'image %s:%s size %s bytes (%s MB; binary %s MB)\n' "$image" "$version" "$bytes" \
  "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')" \
  "$(awk -v b="$binary_bytes" 'BEGIN { printf "%.1f", b / 1e6 }')"
