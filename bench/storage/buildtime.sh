#!/usr/bin/env bash
# Clean release build time of each store alone: a tiny binary depending only on
# fjall, then one depending only on redb, each in a fresh target dir, with the
# versions (and transitive versions) pinned by bench/storage/Cargo.lock.
# Downloads happen in an untimed `cargo fetch` first. ROUNDS (default 1) runs
# them interleaved. Everything is under bench/out/storage-buildtime/, removed
# at the end unless KEEP_DATA=1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../out/storage-buildtime"
rounds="${ROUNDS:-1}"
rm -rf "$out"
mkdir -p "$out"
cleanup() { [ -n "${KEEP_DATA:-}" ] || rm -rf "$out"; }
trap cleanup EXIT

dep_line() {
  case "$1" in
    fjall) grep -E '^fjall = ' "$here/Cargo.toml" ;;
    redb) grep -E '^redb = ' "$here/Cargo.toml" ;;
  esac
}

for crate in fjall redb; do
  p="$out/only-$crate"
  mkdir -p "$p/src"
  cat > "$p/Cargo.toml" <<TOML
[package]
name = "only-$crate"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
$(dep_line "$crate")
TOML
  case "$crate" in
    fjall) echo 'fn main() { let db = fjall::Database::builder(std::env::args().nth(1).unwrap()).open().unwrap(); drop(db); }' ;;
    redb) echo 'fn main() { let db = redb::Database::create(std::env::args().nth(1).unwrap()).unwrap(); drop(db); }' ;;
  esac > "$p/src/main.rs"
  cp "$here/Cargo.lock" "$p/Cargo.lock"
  (cd "$p" && cargo fetch -q)
done

echo "cargo: $(cargo --version); rustc: $(rustc --version); jobs: $(nproc) cores"
echo "loadavg before: $(cat /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
  for crate in fjall redb; do
    p="$out/only-$crate"
    t="$out/target-$crate-$r"
    TIMEFORMAT='%R %U %S'
    tm=$( { time (cd "$p" && CARGO_TARGET_DIR="$t" cargo build --release --offline 2>"$out/build-$crate-$r.log"); } 2>&1 )
    read -r real user sys <<<"$tm"
    n=$(grep -c '^ *Compiling' "$out/build-$crate-$r.log" || true)
    versions=$(grep -oE "Compiling ($crate|lsm-tree) v[0-9.]+" "$out/build-$crate-$r.log" | sed 's/Compiling //' | tr '\n' ' ')
    printf 'round %s %-5s %6.1f s wall, %6.1f s CPU (user+sys), %3s crates compiled (%s)\n' \
      "$r" "$crate" "$real" "$(echo "$user + $sys" | bc)" "$n" "$versions"
    rm -rf "$t"
  done
done
echo "loadavg after: $(cat /proc/loadavg)"
