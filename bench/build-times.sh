#!/usr/bin/env bash
# Measurement (not a test): where the time of `kiln build examples/debian-12.yaml` goes, from a
# cold cache (bootstrap included) and then warm (base disk cached, stage cache not used), each column from one run: the stages'
# seconds from that run's manifest.json and the whole process's wall time, so the rows add up
# to the total (the rest is start-up, validation and the KVM probe). Prints a Markdown table
# and the machine it ran on.
# Usage: bench/build-times.sh (needs root, libvirtd; takes ~5 minutes under TCG).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
kiln=$PWD/target/release/kiln
work=${BENCH_DIR:-/var/tmp}/kiln-bench-build
rm -rf "$work" && mkdir -p "$work"
export KILN_CACHE_DIR=$work/cache
declare -A wall
for run in cold warm; do
  start=$(date +%s%N)
  # --no-cache: the warm column measures the stages' work with the base disk cached; an
  # unchanged rebuild from the stage cache is bench/cache.sh's subject.
  "$kiln" build examples/debian-12.yaml --no-cache -o "$work/$run" >"$work/$run.log" 2>&1 \
    || { tail -30 "$work/$run.log" >&2; exit 1; }
  wall[$run]=$(( ($(date +%s%N) - start) / 1000000 ))  # ms
done
python3 - "$work" "${wall[cold]}" "${wall[warm]}" <<'PY'
import json, os, platform, sys
work, walls = sys.argv[1], {"cold": int(sys.argv[2]) / 1000, "warm": int(sys.argv[3]) / 1000}
runs = {r: json.load(open(f"{work}/{r}/debian-12-1.0/manifest.json")) for r in walls}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 2**20
print(f"machine: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.platform()}, "
      f"accelerator {runs['cold'].get('accelerator')}")
print("| stage | cold cache | warm cache |\n|---|---|---|")
names = [s["name"] for s in runs["cold"]["stages"]]
sums = {r: 0.0 for r in runs}
for n in names:
    row = []
    for r in runs:
        sec = next(s["seconds"] for s in runs[r]["stages"] if s["name"] == n)
        sums[r] += sec
        row.append(f"{sec:.1f}")
    print(f"| {n} | " + " | ".join(row) + " |")
print("| (start-up, validation, KVM probe) | " + " | ".join(f"{walls[r] - sums[r]:.1f}" for r in runs) + " |")
print("| **whole build (wall)** | " + " | ".join(f"**{walls[r]:.1f}**" for r in runs) + " |")
PY
