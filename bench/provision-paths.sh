#!/usr/bin/env bash
# Benchmark (not a test): what each provisioning change saves, measured in isolation on the
# recipe of bench/whole-build.sh (its base disk cached): the provision stage's seconds (from
# the manifest) and the whole build's, for
#   both        packages resolved on the host + direct kernel boot (the default)
#   guest-apt   KILN_HOST_PACKAGES=0: apt-get update and install in the guest, direct boot
#   grub        KILN_DIRECT_BOOT=0: host packages, boot through GRUB and cloud-init
#   neither     both off
# Rounds alternate the variants; prints medians. Usage: bench/provision-paths.sh [ROUNDS] (3).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
work=${BENCH_DIR:-/var/tmp}/kiln-bench-whole
export LIBGUESTFS_BACKEND=direct KILN_CACHE_DIR=${KILN_CACHE_DIR:-$work/cache}
[ -f "$work/recipe.yaml" ] || { echo "run bench/whole-build.sh once first (it writes the recipe and bootstraps the base)" >&2; exit 1; }
cargo build --release --quiet
kiln=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
variants=(both guest-apt grub neither)
env_of() {
  case $1 in
    both) echo "" ;;
    guest-apt) echo "KILN_HOST_PACKAGES=0" ;;
    grub) echo "KILN_DIRECT_BOOT=0" ;;
    neither) echo "KILN_HOST_PACKAGES=0 KILN_DIRECT_BOOT=0" ;;
  esac
}
results=$work/provision-paths.tsv
: > "$results"
for r in $(seq 1 "$rounds"); do
  for v in "${variants[@]}"; do
    rm -rf "$work/out"
    t0=$(date +%s.%N)
    (cd "$work" && env $(env_of "$v") "$kiln" build recipe.yaml --no-cache --no-test >"$work/paths.log" 2>&1) ||
      { tail -20 "$work/paths.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    p=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(next(s["seconds"] for s in m["stages"] if s["name"]=="provision"))' "$work"/out/bench-whole-1/manifest.json)
    w=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
    printf '%s\t%s\t%s\n' "$v" "$p" "$w" >> "$results"
    echo "round $r: $v: provision $p s, build $w s"
  done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
by = {}
for v, p, w in rows:
    by.setdefault(v, []).append((float(p), float(w)))
print("| variant | provision (median) | whole build (median) |")
print("|---|---|---|")
for v in ["both", "guest-apt", "grub", "neither"]:
    ps = [p for p, _ in by[v]]; ws = [w for _, w in by[v]]
    print(f"| {v} | {statistics.median(ps):.1f} s | {statistics.median(ws):.1f} s |")
PY
