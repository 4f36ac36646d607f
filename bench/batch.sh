#!/usr/bin/env bash
# Benchmark (not a test): two recipes built by one `kiln build A B` at once (-j 2) against one
# after the other (-j 1, the same command otherwise), on this machine. Both recipes are the
# example with their own names (B one customize step more); every round makes the provisioned
# disk, the libguestfs stage and the outputs again (--rebuild-from provision: the bootstrap
# stays cached, as on a CI machine that built yesterday) without the boot test and Glance
# (BENCH_FLAGS to change that). Rounds alternate which mode goes first; medians and the ratio
# parallel/sequential are printed, and each round checks that both modes gave the same packages
# (kiln diff --packages-only of each recipe's two outputs: exit 0).
# Usage: bench/batch.sh [ROUNDS] (default 3). Needs libvirtd (scripts/start-services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
flags=${BENCH_FLAGS:---rebuild-from provision --no-test --no-glance}
work=${BENCH_DIR:-/var/tmp}/kiln-bench-batch
rm -rf "$work" && mkdir -p "$work"
cargo build --release --quiet
kiln=$PWD/target/release/kiln
cp -r examples/files "$work/"
sed 's/^name: .*/name: bench-a/' examples/debian-12.yaml > "$work/a.yaml"
sed -e 's/^name: .*/name: bench-b/' \
    -e 's|^customize:$|customize:\n  - append-line: "/etc/bench-b:b"|' \
    examples/debian-12.yaml > "$work/b.yaml"
grep -q /etc/bench-b "$work/b.yaml" || { echo "bench/batch.sh: no customize: in the example" >&2; exit 1; }
# Warm: the base disk and the first provisioned disks exist before the timed rounds.
# shellcheck disable=SC2086
"$kiln" build "$work/a.yaml" "$work/b.yaml" -j 1 -o "$work/warm" --no-test --no-glance >/dev/null 2>&1

run() { # mode jobs -> seconds
  local out=$work/$1 start end
  rm -rf "$out"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$kiln" build "$work/a.yaml" "$work/b.yaml" -j "$2" -o "$out" $flags > "$out.log" 2>&1 \
    || { echo "bench/batch.sh: the $1 build failed: $out.log" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}
par=() seq=()
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then
    p=$(run par 2); s=$(run seq 1)
  else
    s=$(run seq 1); p=$(run par 2)
  fi
  for b in bench-a-1.0 bench-b-1.0; do
    "$kiln" diff "$work/seq/$b" "$work/par/$b" --packages-only >/dev/null \
      || { echo "bench/batch.sh: round $r: $b has other packages -j 2 than -j 1" >&2; exit 1; }
  done
  printf 'round %d: -j 2 %.1f s, one after the other %.1f s (same packages)\n' "$r" "$p" "$s"
  par+=("$p") seq+=("$s")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mp=$(median "${par[@]}") ms=$(median "${seq[@]}")
printf 'median: -j 2 %.1f s, one after the other %.1f s: ratio %.2f (%d cores, flags: %s)\n' \
  "$mp" "$ms" "$(echo "$mp / $ms" | bc -l)" "$(nproc)" "$flags"
