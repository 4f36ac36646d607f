#!/usr/bin/env bash
# Measurement (not a test) for issue 26: the same recipe (examples/debian-12.yaml) built cold
# (an empty cache each time: bootstrap included) for BIOS, UEFI and UEFI with Secure Boot, each
# build's stage times from its manifest, then `kiln test` of each output with its own firmware
# BOOTS times (orders alternating), medians of the boot to the ssh login and of the whole test.
# arm64 is the same recipe with `arch: aarch64`: on an x86_64 host its bootstrap runs through
# qemu-user-static and its VMs are emulated (what TCG costs for arm64 is its ratio).
# Usage: [KILN_BENCH_KINDS="bios uefi arm64"] bench/firmware-arch.sh [BUILDS] [BOOTS]
#        (defaults: all four kinds, 1 build and 3 boots each; root, libvirtd, TCG here)
set -euo pipefail
cd "$(dirname "$0")/.."
builds=${1:-1}
boots=${2:-3}
cargo build --release --quiet
kiln=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
work=$(mktemp -d /var/tmp/kiln-bench-fw.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r examples/files "$work/files"
# KILN_BENCH_KINDS: a subset, e.g. "bios uefi arm64" (the first is the ratios' base).
read -r -a kinds <<<"${KILN_BENCH_KINDS:-bios uefi secure-boot arm64}"
for k in "${kinds[@]}"; do
  case $k in
    bios) extra="" ;;
    uefi) extra="  firmware: uefi" ;;
    secure-boot) extra="  firmware: uefi\n  secure_boot: true" ;;
    arm64) extra="  boot_timeout: 15m" ;;
  esac
  top="name: fw-$k"
  [ "$k" != arm64 ] || top="name: fw-$k\narch: aarch64"
  sed -e "s/^name: debian-12$/$top/" -e "s/^  timeout: 40m$/  timeout: 40m\n$extra/" \
    examples/debian-12.yaml > "$work/$k.yaml"
done
order() { # the kinds, rotated by round so none always goes first
  local r=$1 n=${#kinds[@]} i
  for ((i = 0; i < n; i++)); do echo "${kinds[$(((i + r) % n))]}"; done
}
for ((r = 0; r < builds; r++)); do
  for k in $(order "$r"); do
    rm -rf "$work/cache-$k" "$work/out-$k"
    start=$(date +%s%N)
    KILN_CACHE_DIR="$work/cache-$k" "$kiln" build "$work/$k.yaml" --no-glance -o "$work/out-$k" \
      >"$work/build-$k-$r.log" 2>&1 || { tail -30 "$work/build-$k-$r.log" >&2; exit 1; }
    echo $(( ($(date +%s%N) - start) / 1000000 )) > "$work/build-$k-$r.ms"
    cp "$work/out-$k/fw-$k-1.0/manifest.json" "$work/manifest-$k-$r.json"
    echo "build round $((r + 1)), $k: $(( $(cat "$work/build-$k-$r.ms") / 1000 )) s"
  done
done
for ((r = 0; r < boots; r++)); do
  for k in $(order "$r"); do
    start=$(date +%s%N)
    "$kiln" test "$work/out-$k/fw-$k-1.0/fw-$k-1.0.qcow2" >"$work/test-$k-$r.out" 2>&1 \
      || { tail -30 "$work/test-$k-$r.out" >&2; exit 1; }
    echo $(( ($(date +%s%N) - start) / 1000000 )) > "$work/test-$k-$r.ms"
    echo "kiln test round $((r + 1)), $k: $(tail -1 "$work/test-$k-$r.out")"
  done
done
python3 - "$work" "$builds" "$boots" "${kinds[@]}" <<'PY'
import json, os, re, statistics, sys
w, builds, boots, kinds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
med = statistics.median
print(f"machine: {os.cpu_count()} cores; cold builds: {builds} each, kiln test: {boots} each")
print("| build | arch, firmware | packages (SBOM) | cold build (s) | source | provision | test stage | kiln test: boot to login | kiln test total |")
print("|---|---|---|---|---|---|---|---|---|")
base = None
for k in kinds:
    total = med(int(open(f"{w}/build-{k}-{r}.ms").read()) / 1000 for r in range(builds))
    stages = {}
    for r in range(builds):
        m = json.load(open(f"{w}/manifest-{k}-{r}.json"))
        want = {"bios": "bios", "uefi": "uefi", "secure-boot": "uefi-secure-boot", "arm64": "uefi"}[k]
        assert m["firmware"] == want, m["firmware"]
        assert m["architecture"] == ("aarch64" if k == "arm64" else "x86_64"), m["architecture"]
        for s in m["stages"]:
            stages.setdefault(s["name"], []).append(s.get("seconds") or 0)
    login = []
    for r in range(boots):
        last = open(f"{w}/test-{k}-{r}.out").read().strip().splitlines()[-1]
        login.append(float(re.search(r"boot to ssh login ([0-9.]+) s", last).group(1)))
    whole = med(int(open(f"{w}/test-{k}-{r}.ms").read()) / 1000 for r in range(boots))
    base = base or total
    spdx = json.load(open(f"{w}/out-{k}/fw-{k}-1.0/fw-{k}-1.0.spdx.json"))
    arch = "aarch64" if k == "arm64" else "x86_64"
    print(f"| {k} | {arch}, {m['firmware']} | {len(spdx['packages']) - 1} | {total:.1f} ({total / base:.2f}) | "
          f"{med(stages['source']):.1f} | {med(stages['provision']):.1f} | {med(stages['test']):.1f} | "
          f"{med(login):.1f} | {whole:.1f} |")
PY
