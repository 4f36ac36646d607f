#!/usr/bin/env bash
# Benchmark (not a test): on copies of the same image,
#   1) virt-sysprep (defaults)                                  vs  kiln sysprep (defaults)
#   2) virt-customize with ten steps, then virt-sysprep          vs  kiln sysprep with the same
#      ten steps as flags (one appliance launch)
# Rounds alternate the peers and kiln; prints each time and the ratios kiln/peer
# (targets: <= 0.8 and <= 0.5). Both sides use libguestfs's direct backend with TCG, as KVM is
# unusable on these machines.
# Usage: bench/sysprep.sh [ROUNDS] (default 2). BENCH_IMAGE=path picks the image (default: a
# provisioned build output if there is one, else kiln's bootstrap cache).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
work=${BENCH_DIR:-/var/tmp}/kiln-bench-sysprep
export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
cargo build --release --quiet
kiln=$PWD/target/release/kiln
img=${BENCH_IMAGE:-}
if [ -z "$img" ]; then
  img=$(ls out/*/*.qcow2 2>/dev/null | head -1 || true)
  [ -n "$img" ] || img=$(ls "${KILN_CACHE_DIR:-$HOME/.cache/kiln}"/bootstrap/*.qcow2 2>/dev/null | head -1 || true)
fi
[ -n "$img" ] || { echo "no image: build examples/debian-12.yaml first or set BENCH_IMAGE" >&2; exit 1; }
echo "image: $img"
mkdir -p "$work"
steps=(
  --write /etc/motd:hello --append-line "/etc/hosts:10.0.0.1 db" --mkdir /opt/app
  --run-command "echo ran > /etc/ran" --timezone Europe/Paris --hostname golden
  --root-password disabled --firstboot-command "echo first" --chmod 0700:/opt/app
  --link /bin/true:/usr/local/bin/yes
)
now() { date +%s.%N; }
secs() { awk -v x="$1" -v y="$2" 'BEGIN{printf "%.1f", y-x}'; }
fresh() { cp --sparse=always "$img" "$work/disk.qcow2"; sync; }
declare -a S1 K1 S2 K2
for r in $(seq 1 "$rounds"); do
  fresh; t0=$(now); virt-sysprep -q -a "$work/disk.qcow2" >/dev/null; t1=$(now)
  fresh; t2=$(now); "$kiln" sysprep --accel tcg -a "$work/disk.qcow2" >/dev/null; t3=$(now)
  fresh; t4=$(now)
  virt-customize -q -a "$work/disk.qcow2" "${steps[@]}" >/dev/null
  virt-sysprep -q -a "$work/disk.qcow2" >/dev/null; t5=$(now)
  fresh; t6=$(now); "$kiln" sysprep --accel tcg -a "$work/disk.qcow2" "${steps[@]}" >/dev/null; t7=$(now)
  S1+=("$(secs "$t0" "$t1")"); K1+=("$(secs "$t2" "$t3")")
  S2+=("$(secs "$t4" "$t5")"); K2+=("$(secs "$t6" "$t7")")
  echo "round $r: virt-sysprep ${S1[-1]} s, kiln sysprep ${K1[-1]} s;" \
    "virt-customize+virt-sysprep ${S2[-1]} s, kiln customize+sysprep ${K2[-1]} s"
done
sum() { printf '%s\n' "$@" | awk '{s+=$1} END{print s}'; }
a=$(sum "${S1[@]}"); b=$(sum "${K1[@]}"); c=$(sum "${S2[@]}"); d=$(sum "${K2[@]}")
printf 'sysprep:            virt-sysprep %.1f s, kiln %.1f s, ratio %.2f (target <= 0.80)\n' \
  "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN{print b/a}')"
printf 'customize+sysprep:  virt-customize+virt-sysprep %.1f s, kiln %.1f s, ratio %.2f (target <= 0.50)\n' \
  "$c" "$d" "$(awk -v a="$c" -v b="$d" 'BEGIN{print b/a}')"
rm -f "$work/disk.qcow2"
