#!/usr/bin/env bash
# Measurement (not a test) of the stage cache (issue 13) on examples/debian-12.yaml, three
# rounds, each: the stage cache cleared (the bootstrapped base stays), a cold build, the same
# build again, one output changed, one customize step changed. Prints the medians, what each
# rebuild costs against its goal (unchanged: at most 2 s; output changed: the conversion plus at
# most 2 s; customize changed: no VM boot, at most 0.15 of the cold build), and the cache's size.
# Usage: bench/cache.sh (needs root and libvirtd; ~10 minutes under TCG).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
kiln=$PWD/target/release/kiln
work=${BENCH_DIR:-/var/tmp}/kiln-bench-cache
rm -rf "$work/out" "$work/recipes" && mkdir -p "$work/recipes"
export KILN_CACHE_DIR=${KILN_CACHE_DIR:-$work/cache}
cp -r examples/files "$work/recipes/"
cp examples/debian-12.yaml "$work/recipes/a.yaml"
sed 's/  - {format: vmdk, subformat: monolithicSparse}/  - {format: vmdk, subformat: streamOptimized}/' \
  examples/debian-12.yaml > "$work/recipes/b.yaml"
sed 's/Built by kiln/Built by kiln (changed)/' examples/debian-12.yaml > "$work/recipes/c.yaml"
cmp -s "$work/recipes/a.yaml" "$work/recipes/b.yaml" && { echo "b.yaml did not change" >&2; exit 1; }
cmp -s "$work/recipes/a.yaml" "$work/recipes/c.yaml" && { echo "c.yaml did not change" >&2; exit 1; }
run() { # name recipe -> seconds on stdout; the log in $work/NAME.log
  local start end
  start=$(date +%s%N)
  "$kiln" build "$work/recipes/$2.yaml" -o "$work/out" >"$work/$1.log" 2>&1 \
    || { tail -30 "$work/$1.log" >&2; exit 1; }
  end=$(date +%s%N)
  python3 -c "print(f'{($end - $start) / 1e9:.2f}')"
}
for round in 1 2 3; do
  "$kiln" cache clear >/dev/null
  cold[$round]=$(run "cold-$round" a)
  same[$round]=$(run "same-$round" a)
  out[$round]=$(run "output-$round" b)
  conv[$round]=$(python3 -c "import json;m=json.load(open('$work/out/debian-12-1.0/manifest.json'));print(next(s['seconds'] for s in m['stages'] if s['name']=='convert'))")
  cust[$round]=$(run "customize-$round" c)
  grep -q "started domain" "$work/customize-$round.log" && { echo "the customize rebuild booted a VM" >&2; exit 1; }
  grep -q "started domain" "$work/same-$round.log" && { echo "the unchanged rebuild booted a VM" >&2; exit 1; }
  echo "round $round: cold ${cold[$round]} s, unchanged ${same[$round]} s, output ${out[$round]} s (convert ${conv[$round]} s), customize ${cust[$round]} s"
done
size=$(du -sb "$KILN_CACHE_DIR/stages" | cut -f1)
python3 - "${cold[*]}" "${same[*]}" "${out[*]}" "${conv[*]}" "${cust[*]}" "$size" <<'PY'
import os, platform, statistics, sys
m = [statistics.median(map(float, a.split())) for a in sys.argv[1:6]]
cold, same, out, conv, cust = m
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {os.cpu_count()} cores ({cpu}), {platform.platform()}")
print("| build (median of 3) | seconds | against the goal |\n|---|---|---|")
print(f"| cold (empty stage cache, base disk cached) | {cold:.1f} | |")
print(f"| unchanged rebuild | {same:.2f} | {same:.2f} s of at most 2 s |")
print(f"| one output changed | {out:.1f} | conversion {conv:.1f} s + {out - conv:.2f} s of at most 2 s |")
print(f"| one customize step changed | {cust:.1f} | {cust / cold:.2f} of the cold build (goal at most 0.15) |")
print(f"stage cache after a round: {int(sys.argv[6]) / 2**20:.0f} MiB (outputs shared with the catalog by hard links)")
PY
