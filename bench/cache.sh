#!/usr/bin/env bash
# Measurement (not a test) of the stage cache (issue 13) on examples/debian-12.yaml, three
# rounds, each: the stage cache cleared (the bootstrapped base stays), a cold build, the same
# build again, one output changed, one customize step changed. Prints the medians, what each
# rebuild costs against its goal (unchanged: at most 2 s; output changed: the conversion plus at
# most 2 s; customize changed: no VM boot, at most 0.15 of the cold build), and the cache's size.
# With a remote (the AWS_* environment, e.g. scripts/swift-setup.sh's s3.env), each round also
# pushes the cold build's entries to it and builds again on an empty second cache directory
# (another machine): a remote hit, against its goal of the transfer time plus at most 5 s.
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
run() { # name recipe [build flags…] -> seconds on stdout; the log in $work/NAME.log
  local start end
  start=$(date +%s%N)
  # --no-test: this measures the stage cache; the boot test has its own bench (boot-test.sh).
  "$kiln" build "$work/recipes/$2.yaml" -o "$work/out" --no-test "${@:3}" >"$work/$1.log" 2>&1 \
    || { tail -30 "$work/$1.log" >&2; exit 1; }
  end=$(date +%s%N)
  python3 -c "print(f'{($end - $start) / 1e9:.2f}')"
}
remote=
[ -n "${AWS_ACCESS_KEY_ID:-}" ] && remote=s3://${BENCH_BUCKET:-kiln-cache}/bench-$(date +%s)
for round in 1 2 3; do
  "$kiln" cache clear >/dev/null
  cold[$round]=$(run "cold-$round" a)
  if [ -n "$remote" ]; then
    # Each round its own prefix: the remote starts empty too.
    r=$remote-$round
    push[$round]=$(run "push-$round" a --cache-remote "$r")
    rm -rf "$work/machine-b"
    hit[$round]=$(run "remote-$round" a --cache-dir "$work/machine-b" --cache-remote "$r")
    grep -Eq "started domain|mmdebstrap|opening the build disk" "$work/remote-$round.log" \
      && { echo "the remote hit built something" >&2; exit 1; }
    xfer[$round]=$(grep -oE "remote cache: pulled .* in [0-9.]+ s" "$work/remote-$round.log" \
      | awk '{s += $(NF-1)} END {printf "%.2f", s}')
    pulled[$round]=$(grep -c "remote cache: pulled" "$work/remote-$round.log")
    echo "round $round: push ${push[$round]} s, remote hit ${hit[$round]} s (${pulled[$round]} pulls, transfers ${xfer[$round]} s)"
  fi
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
if [ -n "$remote" ]; then
  python3 - "${push[*]}" "${hit[*]}" "${xfer[*]}" "$(du -sb "$work/machine-b/stages" | cut -f1)" <<'PY'
import statistics, sys
push, hit, xfer = [statistics.median(map(float, a.split())) for a in sys.argv[1:4]]
print("| remote cache (median of 3) | seconds | against the goal |\n|---|---|---|")
print(f"| push of a cached build (all entries, base disk included) | {push:.1f} | |")
print(f"| remote hit on an empty local cache | {hit:.1f} | transfers {xfer:.1f} s + {hit - xfer:.2f} s of at most 5 s |")
print(f"second machine's stage cache after the hit: {int(sys.argv[4]) / 2**20:.0f} MiB")
PY
fi
