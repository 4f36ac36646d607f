#!/usr/bin/env bash
# Measurement (not a test): is a bootstrapped base disk reproducible? Two cold bootstraps of the
# same recipe against the same mirror (one after the other, separate caches), then: the two
# qcow2 files' SHA-256, the raw disks' SHA-256, and `kiln diff` of the two (every file that
# differs, packages, identity). Prints what is left between the two.
# Usage: bench/bootstrap-repro.sh. Needs root (mmdebstrap --mode=root) and the Debian mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${BENCH_DIR:-/var/tmp}/kiln-bench-repro
export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
cargo build --release --quiet
kiln=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
rm -rf "$work"; mkdir -p "$work"
cat > "$work/recipe.yaml" <<'YAML'
name: repro
version: "1"
elements: [debian, cloud-init, growroot]
source:
  bootstrap: {distro: debian, suite: bookworm, mirror: http://deb.debian.org/debian, size: 2G}
test: false
YAML
for n in 1 2; do
  t0=$(date +%s)
  (cd "$work" && KILN_CACHE_DIR="$work/cache-$n" "$kiln" build recipe.yaml --until provision \
     -o "$work/out-$n" >"$work/build-$n.log" 2>&1) || { tail -20 "$work/build-$n.log"; exit 1; }
  echo "bootstrap $n: $(( $(date +%s) - t0 )) s"
done
a=$(ls "$work"/cache-1/bootstrap/*.qcow2); b=$(ls "$work"/cache-2/bootstrap/*.qcow2)
echo "qcow2: $(sha256sum < "$a" | cut -c1-16) vs $(sha256sum < "$b" | cut -c1-16)"
qemu-img convert -O raw "$a" "$work/a.raw"; qemu-img convert -O raw "$b" "$work/b.raw"
echo "raw:   $(sha256sum < "$work/a.raw" | cut -c1-16) vs $(sha256sum < "$work/b.raw" | cut -c1-16)"
echo "differing 1 MiB blocks of the raw disks: $(cmp -l "$work/a.raw" "$work/b.raw" 2>/dev/null | awk '{print int(($1-1)/1048576)}' | uniq | wc -l)"
echo "kiln diff --checksum --all (every file):"
"$kiln" diff --checksum --all "$a" "$b" | sed 's/^/  /' || true
