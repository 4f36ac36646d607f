#!/usr/bin/env bash
# Benchmark (not a test): one 2 GiB image holding ~1 GiB of real data (a tar of /usr) converted
# to qcow2+zstd, vmdk streamOptimized, vhdx and vdi:
#   A) the same qemu-img commands kiln runs, one after another;
#   B) `kiln convert` with all four outputs at once (parallel jobs, plus kiln's source check,
#      per-output check + compare, and sha256/sha512 of every output).
# Rounds alternate A and B; prints each time and the ratio B/A (target <= 0.7 on 2 cores).
# Usage: bench/convert.sh [ROUNDS] (default 2). Needs ~8 GiB in $BENCH_DIR (default /var/tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
work=${BENCH_DIR:-/var/tmp}/kiln-bench-convert
cargo build --release --quiet
kiln=$PWD/target/release/kiln
mkdir -p "$work"
cd "$work"
if [ ! -f src.qcow2 ]; then
  echo "making the source image (2 GiB virtual, ~1 GiB of data)"
  qemu-img create -q -f raw src.raw 2G
  # tar dies of SIGPIPE once head has its 1 GiB: that is expected.
  set +o pipefail
  tar -cf - /usr 2>/dev/null | head -c 1073741824 | dd of=src.raw bs=4M seek=64 conv=notrunc,sparse status=none iflag=fullblock
  set -o pipefail
  qemu-img convert -f raw -O qcow2 src.raw src.qcow2
  rm -f src.raw
fi
qemu-img info src.qcow2 | grep -E "virtual size|disk size"

sequential() {
  rm -rf seq && mkdir seq
  qemu-img convert -f qcow2 -O qcow2 -o compat=1.1,compression_type=zstd -c -m 8 -W src.qcow2 seq/src.qcow2
  qemu-img convert -f qcow2 -O vmdk -o subformat=streamOptimized src.qcow2 seq/src.vmdk
  qemu-img convert -f qcow2 -O vhdx -m 8 -W src.qcow2 seq/src.vhdx
  qemu-img convert -f qcow2 -O vdi -m 8 -W src.qcow2 seq/src.vdi
}
parallel() {
  rm -rf par
  "$kiln" convert src.qcow2 -O qcow2 --compress zstd -O vmdk --subformat streamOptimized \
    -O vhdx -O vdi -o par >/dev/null 2>par.log
}
now() { date +%s.%N; }
declare -a A B
for r in $(seq 1 "$rounds"); do
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now); sequential; t1=$(now)
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t2=$(now); parallel; t3=$(now)
  a=$(awk -v x="$t0" -v y="$t1" 'BEGIN{print y-x}'); b=$(awk -v x="$t2" -v y="$t3" 'BEGIN{print y-x}')
  A+=("$a"); B+=("$b")
  printf 'round %d: qemu-img sequential %.1f s, kiln parallel %.1f s, ratio %.2f\n' "$r" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN{print b/a}')"
done
sa=$(printf '%s\n' "${A[@]}" | awk '{s+=$1} END{print s}'); sb=$(printf '%s\n' "${B[@]}" | awk '{s+=$1} END{print s}')
printf 'total: qemu-img sequential %.1f s, kiln parallel %.1f s, ratio kiln/sequential = %.2f (target <= 0.70)\n' \
  "$sa" "$sb" "$(awk -v a="$sa" -v b="$sb" 'BEGIN{print b/a}')"
ls -l seq par | grep -v total
