#!/usr/bin/env bash
# Measurement (not a test) of the boot test (issue 14): `kiln test IMAGE` three times on the
# same image, the seconds of each phase (boot to ssh login, cloud-init, checks) and the total,
# medians. Usage: bench/boot-test.sh IMAGE (needs root and libvirtd; TCG here).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:?usage: bench/boot-test.sh IMAGE}
cargo build --release --quiet
kiln=$PWD/target/release/kiln
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for round in 1 2 3; do
  start=$(date +%s%N)
  "$kiln" test "$image" > "$work/$round.out" 2>"$work/$round.err" || { cat "$work/$round.out" "$work/$round.err" >&2; exit 1; }
  end=$(date +%s%N)
  echo "$(( (end - start) / 1000000 ))" > "$work/$round.total"
  tail -1 "$work/$round.out"
done
python3 - "$work" <<'PY'
import os, re, statistics, sys
w = sys.argv[1]
phases, totals = {}, []
for r in (1, 2, 3):
    last = open(f"{w}/{r}.out").read().strip().splitlines()[-1]
    for name, secs in re.findall(r"([a-z -]+?) ([0-9.]+) s", last.strip(" ()")):
        phases.setdefault(name.strip(" ,"), []).append(float(secs))
    totals.append(int(open(f"{w}/{r}.total").read()) / 1000)
print(f"machine: {os.cpu_count()} cores")
print("| boot test phase (median of 3) | seconds |\n|---|---|")
for name, v in phases.items():
    print(f"| {name} | {statistics.median(v):.1f} |")
print(f"| total (kiln test, wall clock) | {statistics.median(totals):.1f} |")
PY
