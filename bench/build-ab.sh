#!/usr/bin/env bash
# Benchmark (not a test): the default `kiln build --no-cache` (boot test included) of
# bench/whole-build.sh's recipe with two kiln binaries, in alternating order, medians and the
# ratio; each build's stage seconds (with when each started) and boot-test phases. For a change
# inside kiln's pipeline, where the Packer ratio's spread hides it.
#   Usage: bench/build-ab.sh BEFORE_BINARY [ROUNDS] (default 3); run bench/whole-build.sh
#   once first (it writes the recipe and bootstraps the base disk into its cache).
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: bench/build-ab.sh BEFORE_BINARY [ROUNDS]}
rounds=${2:-3}
work=${BENCH_DIR:-/var/tmp}/kiln-bench-whole
[ -f "$work/recipe.yaml" ] || { echo "run bench/whole-build.sh first" >&2; exit 1; }
export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
export KILN_CACHE_DIR=${KILN_CACHE_DIR:-$work/cache}
cargo build --release --quiet
after=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
now() { date +%s.%N; }
build() { # BINARY OUT
  rm -rf "$work/$2"
  local t0; t0=$(now)
  (cd "$work" && "$1" build recipe.yaml --no-cache -o "$work/$2" >"$work/ab-$2.log" 2>&1) ||
    { tail -20 "$work/ab-$2.log" >&2; exit 1; }
  awk -v x="$t0" -v y="$(now)" 'BEGIN{printf "%.1f", y-x}'
}
stages() {
  python3 - "$work/$1/bench-whole-1/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(", ".join(f"{s['name']} {s.get('seconds', 0):.1f} (at {s.get('started', 0):.1f})"
                for s in m["stages"] if s.get("seconds")))
print("    boot test: " + ", ".join(f"{n} {v:.1f}" for n, v in (m.get("test") or {}).get("phases", [])))
PY
}
declare -a A B
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then b=$(build "$before" ab-before); a=$(build "$after" ab-after)
  else a=$(build "$after" ab-after); b=$(build "$before" ab-before); fi
  A+=("$a"); B+=("$b")
  echo "round $r: before $b s, after $a s (ratio $(awk -v x="$b" -v y="$a" 'BEGIN{printf "%.2f", y/x}'))"
  echo "  before: $(stages ab-before)"
  echo "  after:  $(stages ab-after)"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
mb=$(median "${B[@]}"); ma=$(median "${A[@]}")
printf 'median: before %.1f s, after %.1f s, ratio %.2f\n' "$mb" "$ma" "$(awk -v x="$mb" -v y="$ma" 'BEGIN{print y/x}')"
