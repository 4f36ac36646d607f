#!/usr/bin/env bash
# Benchmark (not a test): a whole golden-image build from a cold stage cache, kiln against the
# Packer pipeline it replaces, on the same base disk (kiln's own Debian 12 bootstrap) with the
# same work: apt update + install `tree`, write a file, run a command, power off, sysprep with
# the defaults, a zstd qcow2 and a streamOptimized vmdk.
#
#   Packer 1.6.6 (Debian's `packer`, qemu builder, TCG, the base as `disk_image` with its own
#   best options: `use_backing_file` (an overlay, no copy of the base) and `skip_compaction`
#   (no rewrite of the disk), `disk_size` the base's 2 GiB as kiln's; the NoCloud seed as a
#   vfat disk on virtio, `communicator: none`, `boot_wait: 0s`, the disk with cache=unsafe;
#   2 vCPUs, 2 GiB as kiln) + virt-sysprep + the two `qemu-img convert`s in parallel
#   vs
#   kiln build --no-cache --no-test (the base disk cached, every other stage runs)
#   and kiln build --no-cache (its default: the boot test too, which the Packer pipeline
#   does not do; shown as a second ratio, not left out)
#
# Packer 1.6.6 creates its overlay with `qemu-img create -b BASE` without `-F`, which qemu-img
# 10 refuses; newer Packer qemu plugins pass the backing format. A `qemu-img` shim first on
# Packer's PATH adds `-F qcow2` to that one command (and runs the real qemu-img otherwise).
#
# Rounds rotate the order of the three (no build always runs on a cache the one before it
# warmed); prints each time, kiln's stage seconds, the medians and both ratios (goals <= 0.40
# for --no-test, <= 0.70 with the boot test). The content of the Packer image and kiln's is compared with `kiln diff`
# (packages, files, identity, services) every round, and every difference is printed.
# Usage: bench/whole-build.sh [ROUNDS] (default 3). Needs: apt-get install packer.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
work=${BENCH_DIR:-/var/tmp}/kiln-bench-whole
export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
export KILN_CACHE_DIR=${KILN_CACHE_DIR:-$work/cache}
# Packer keeps its port locks and ISO cache here, not in the checkout.
export PACKER_CACHE_DIR=$work/packer_cache
command -v packer >/dev/null || { echo "needs Debian's packer: apt-get install packer" >&2; exit 1; }
cargo build --release --quiet
kiln=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
mkdir -p "$work"
now() { date +%s.%N; }
secs() { awk -v x="$1" -v y="$2" 'BEGIN{printf "%.1f", y-x}'; }

cat > "$work/recipe.yaml" <<'YAML'
name: bench-whole
version: "1"
elements: [debian, cloud-init, growroot]
source:
  bootstrap: {distro: debian, suite: bookworm, mirror: http://deb.debian.org/debian, size: 2G}
vm: {memory: 2G, vcpus: 2, accel: tcg, timeout: 30m}
provision:
  - packages: [tree]
  - files:
      - {path: /etc/motd, content: "baked\n"}
  - run:
      - tree --version > /opt/tree-version
sysprep:
  operations: [defaults]
outputs:
  - {format: qcow2, compress: zstd}
  - {format: vmdk, subformat: streamOptimized}
publish:
  local: {dir: out}
YAML

# The base disk: the bootstrap kiln's plan names (the current bootstrap revision; an older one
# may still be in the cache), bootstrapped once into the cache if missing (not timed).
base=$(cd "$work" && "$kiln" plan recipe.yaml | grep -o "$KILN_CACHE_DIR/bootstrap/[^ ]*\.qcow2" | head -1)
[ -n "$base" ] || { echo "kiln plan names no bootstrapped base disk" >&2; exit 1; }
if [ ! -f "$base" ]; then
  echo "bootstrapping the base disk once (not timed)"
  (cd "$work" && "$kiln" build recipe.yaml --no-test -o "$work/warm" >/dev/null)
fi
echo "base disk: $base"

# Packer's seed: the same work as the recipe, in cloud-init's runcmd.
cat > "$work/user-data" <<'UD'
#cloud-config
runcmd:
  - [sh, -ec, "export DEBIAN_FRONTEND=noninteractive; apt-get -o Acquire::Languages=none update -q; apt-get install -y -q --no-install-recommends tree; apt-get clean; printf 'baked\\n' > /etc/motd; tree --version > /opt/tree-version"]
power_state: {mode: poweroff, delay: now, condition: true}
UD
printf 'instance-id: bench-packer\nlocal-hostname: bench\n' > "$work/meta-data"
rm -f "$work/seed.img"
mkfs.vfat -n CIDATA -C "$work/seed.img" 2048 >/dev/null
mcopy -i "$work/seed.img" "$work/user-data" "$work/meta-data" ::
# The qemu-img shim: Packer 1.6.6's `create -b` without a backing format.
mkdir -p "$work/shim"
real_qemu_img=$(command -v qemu-img)
cat > "$work/shim/qemu-img" <<SHIM
#!/bin/sh
if [ "\$1" = create ] && printf '%s\n' "\$@" | grep -qx -- -b && ! printf '%s\n' "\$@" | grep -qx -- -F; then
  shift; exec "$real_qemu_img" create -F qcow2 "\$@"
fi
exec "$real_qemu_img" "\$@"
SHIM
chmod +x "$work/shim/qemu-img"
cat > "$work/packer.json" <<JSON
{"builders": [{
  "type": "qemu", "accelerator": "tcg", "headless": true,
  "disk_image": true, "iso_url": "$base", "iso_checksum": "none",
  "use_backing_file": true, "skip_compaction": true, "disk_size": "2048M",
  "format": "qcow2", "vm_name": "disk.qcow2", "output_directory": "$work/packer-out",
  "memory": 2048, "cpus": 2, "disk_interface": "virtio", "net_device": "virtio-net",
  "communicator": "none", "boot_wait": "0s", "shutdown_timeout": "30m",
  "qemuargs": [
    ["-drive", "file=$work/packer-out/disk.qcow2,if=virtio,cache=unsafe,discard=unmap,format=qcow2"],
    ["-drive", "file=$work/seed.img,if=virtio,format=raw,readonly=on"]
  ]
}]}
JSON

packer_round() {
  rm -rf "$work/packer-out" "$work/p.qcow2" "$work/p.vmdk"
  PATH="$work/shim:$PATH" PACKER_LOG=0 packer build -color=false "$work/packer.json" >"$work/packer.log" 2>&1 ||
    { tail -20 "$work/packer.log" >&2; return 1; }
  virt-sysprep -q -a "$work/packer-out/disk.qcow2" >/dev/null
  qemu-img convert -O qcow2 -c -o compression_type=zstd "$work/packer-out/disk.qcow2" "$work/p.qcow2" &
  qemu-img convert -O vmdk -o subformat=streamOptimized "$work/packer-out/disk.qcow2" "$work/p.vmdk" &
  wait %1 && wait %2
}
kiln_round() {
  local out=$1; shift
  rm -rf "$work/$out"
  (cd "$work" && "$kiln" build recipe.yaml --no-cache -o "$work/$out" "$@" >"$work/kiln-$out.log" 2>&1) ||
    { tail -20 "$work/kiln-$out.log" >&2; return 1; }
}
timed() { local t0; t0=$(now); "$@" >/dev/null || exit 1; secs "$t0" "$(now)"; }

declare -a P K T
for r in $(seq 1 "$rounds"); do
  # Rotate: packer first, then kiln first, then kiln with its boot test first.
  case $(( (r - 1) % 3 )) in
    0) p=$(timed packer_round); k=$(timed kiln_round out --no-test); t=$(timed kiln_round out-test) ;;
    1) k=$(timed kiln_round out --no-test); t=$(timed kiln_round out-test); p=$(timed packer_round) ;;
    2) t=$(timed kiln_round out-test); p=$(timed packer_round); k=$(timed kiln_round out --no-test) ;;
  esac
  P+=("$p"); K+=("$k"); T+=("$t")
  kimg=$(ls "$work"/out/bench-whole-1/*.qcow2)
  pv=$(virt-cat -a "$work/p.qcow2" /opt/tree-version)
  kv=$(virt-cat -a "$kimg" /opt/tree-version)
  [ "$pv" = "$kv" ] || { echo "content differs: packer '$pv', kiln '$kv'" >&2; exit 1; }
  # Every difference between the two images (kiln diff: packages, files, identity, services).
  "$kiln" diff "$work/p.qcow2" "$kimg" >"$work/diff-$r.txt" 2>&1 || true
  stages=$(python3 - "$work"/out-test/bench-whole-1/manifest.json <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
# Each stage's seconds and when it started (the boot test runs beside convert), then the boot
# test's own phases (boot to the ssh login, cloud-init, the checks).
print(", ".join(f"{s['name']} {s.get('seconds', 0):.1f} (at {s.get('started', 0):.1f})" for s in m["stages"]))
t = m.get("test") or {}
print("  boot test phases: " + ", ".join(f"{n} {v:.1f}" for n, v in t.get("phases", [])))
PY
)
  echo "round $r: packer pipeline $p s, kiln --no-test $k s (ratio $(awk -v a="$p" -v b="$k" 'BEGIN{printf "%.2f", b/a}')), kiln with its boot test $t s (ratio $(awk -v a="$p" -v b="$t" 'BEGIN{printf "%.2f", b/a}')); both: $kv"
  echo "  kiln stages (with the boot test): $stages"
  echo "  kiln diff packer-image kiln-image:"; sed 's/^/    /' "$work/diff-$r.txt"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
mp=$(median "${P[@]}"); mk=$(median "${K[@]}"); mt=$(median "${T[@]}")
printf 'median: packer pipeline %.1f s; kiln --no-test %.1f s, ratio %.2f (goal <= 0.40); kiln with its boot test %.1f s, ratio %.2f (goal <= 0.70)\n' \
  "$mp" "$mk" "$(awk -v a="$mp" -v b="$mk" 'BEGIN{print b/a}')" "$mt" "$(awk -v a="$mp" -v b="$mt" 'BEGIN{print b/a}')"
