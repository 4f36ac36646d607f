#!/usr/bin/env bash
# Benchmark (not a test): on the same images, alternating, medians of ROUNDS (default 3):
#   1) virt-inspector IMAGE                     vs  kiln inspect --format json IMAGE
#      (target: kiln <= 0.5x)
#   2) virt-diff -a A -A B                      vs  kiln diff A B
#   3) virt-diff --checksum=sha256 -a A -A B    vs  kiln diff --checksum A B
#      (only with BENCH_CHECKSUM=1: both hash every file under TCG, minutes a round)
# virt-inspector reads more than kiln shows (icons, Windows registry paths), kiln more than
# virt-inspector (boot loader, sshd, accounts, cloud-init, machine-id, warnings); both read
# the package database. virt-diff compares files only; kiln diff also packages and services.
# Both sides use libguestfs's direct backend with TCG (KVM is unusable on these machines).
# Usage: bench/inspect.sh [ROUNDS]. BENCH_IMAGE / BENCH_IMAGE_B pick the images (default:
# the first two kiln-output/*/*.qcow2, else the same image twice).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
cargo build --release --quiet
kiln=$PWD/target/release/kiln
mapfile -t found < <(ls kiln-output/*/*.qcow2 out/*/*.qcow2 2>/dev/null || true)
a=${BENCH_IMAGE:-${found[0]:-}}
b=${BENCH_IMAGE_B:-${found[1]:-$a}}
[ -n "$a" ] || { echo "no image: build examples/debian-12.yaml first or set BENCH_IMAGE" >&2; exit 1; }
echo "A: $a"; echo "B: $b"
now() { date +%s.%N; }
secs() { awk -v x="$1" -v y="$2" 'BEGIN{printf "%.1f", y-x}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END{print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }
declare -a VI KI VD KD VC KC
for r in $(seq 1 "$rounds"); do
  t0=$(now); virt-inspector -a "$a" >/dev/null; t1=$(now)
  "$kiln" inspect --accel tcg --format json "$a" >/dev/null; t2=$(now)
  virt-diff -a "$a" -A "$b" >/dev/null || true; t3=$(now)
  "$kiln" diff --accel tcg "$a" "$b" >/dev/null || true; t4=$(now)
  if [ "${BENCH_CHECKSUM:-0}" = 1 ]; then
    virt-diff --checksum=sha256 -a "$a" -A "$b" >/dev/null || true; t5=$(now)
    "$kiln" diff --accel tcg --checksum "$a" "$b" >/dev/null || true; t6=$(now)
  else
    t5=$t4 t6=$t4
  fi
  VI+=("$(secs "$t0" "$t1")"); KI+=("$(secs "$t1" "$t2")")
  VD+=("$(secs "$t2" "$t3")"); KD+=("$(secs "$t3" "$t4")")
  VC+=("$(secs "$t4" "$t5")"); KC+=("$(secs "$t5" "$t6")")
  echo "round $r: virt-inspector ${VI[-1]} s, kiln inspect ${KI[-1]} s;" \
    "virt-diff ${VD[-1]} s, kiln diff ${KD[-1]} s"
done
row() {
  local name=$1 peer=$2 ours=$3 target=$4
  printf '%-18s peer %6.1f s  kiln %6.1f s  ratio %.2f%s\n' "$name" "$peer" "$ours" \
    "$(awk -v a="$peer" -v b="$ours" 'BEGIN{print b/a}')" "$target"
}
echo "medians of $rounds:"
row "inspect" "$(median "${VI[@]}")" "$(median "${KI[@]}")" " (target <= 0.50)"
row "diff" "$(median "${VD[@]}")" "$(median "${KD[@]}")" ""
[ "${BENCH_CHECKSUM:-0}" = 1 ] && row "diff --checksum" "$(median "${VC[@]}")" "$(median "${KC[@]}")" ""
true
