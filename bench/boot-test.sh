#!/usr/bin/env bash
# Measurement (not a test) of the boot test (issues 14, 25): `kiln test IMAGE` three times on
# the same image, the seconds of each phase (boot to ssh login, cloud-init, checks) and the
# total, medians. With a second kiln binary (BEFORE: an older build), both run in turn, the
# order alternating each round, and the table shows both and the ratio of the totals.
# Usage: bench/boot-test.sh IMAGE [BEFORE] (needs root and libvirtd; TCG here).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:?usage: bench/boot-test.sh IMAGE [BEFORE]}
before=${2:-}
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "${CARGO_TARGET_DIR:-$PWD/target}/release/kiln" "$work/now"
bins=(now)
if [ -n "$before" ]; then cp "$before" "$work/before"; bins=(now before); fi
for round in 1 2 3; do
  order=("${bins[@]}")
  if [ $((round % 2)) -eq 0 ] && [ ${#bins[@]} -eq 2 ]; then order=(before now); fi
  for b in "${order[@]}"; do
    start=$(date +%s%N)
    "$work/$b" test "$image" > "$work/$b.$round.out" 2>"$work/$b.$round.err" \
      || { cat "$work/$b.$round.out" "$work/$b.$round.err" >&2; exit 1; }
    end=$(date +%s%N)
    echo "$(( (end - start) / 1000000 ))" > "$work/$b.$round.total"
    echo "round $round, $b: $(tail -1 "$work/$b.$round.out")"
  done
done
python3 - "$work" "${bins[@]}" <<'PY'
import os, re, statistics, sys
w, bins = sys.argv[1], sys.argv[2:]
table = {}
for b in bins:
    phases, totals = {}, []
    for r in (1, 2, 3):
        last = open(f"{w}/{b}.{r}.out").read().strip().splitlines()[-1]
        for name, secs in re.findall(r"([a-z -]+?) ([0-9.]+) s", last.strip(" ()")):
            phases.setdefault(name.strip(" ,"), []).append(float(secs))
        totals.append(int(open(f"{w}/{b}.{r}.total").read()) / 1000)
    phases["total (kiln test, wall clock)"] = totals
    table[b] = {k: statistics.median(v) for k, v in phases.items()}
print(f"machine: {os.cpu_count()} cores")
print("| boot test phase (median of 3) | " + " | ".join(bins) + " |")
print("|---|" + "---|" * len(bins))
for name in table[bins[0]]:
    print(f"| {name} | " + " | ".join(f"{table[b].get(name, 0):.1f}" for b in bins) + " |")
if len(bins) == 2:
    t = "total (kiln test, wall clock)"
    print(f"ratio now/before (totals): {table['now'][t] / table['before'][t]:.2f}")
PY
