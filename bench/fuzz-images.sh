#!/usr/bin/env bash
# Fuzz kiln's parsers of untrusted bytes (issue 24): the host reader (qcow2, MBR/GPT, ext4 via
# ext4-view, the guest files inspect reads) and the stage cache's meta.json, in-process
# (bench/fuzz_images.rs), from seeds made here: a GPT disk holding an ext4 root made by
# `mke2fs -d` (no mount, no root needed), raw and zlib-compressed qcow2. Fails on any panic, a
# case of 5 s or more, or one that needs 512 MiB of heap. Not coverage-guided: see the .rs.
#
#   bench/fuzz-images.sh [CASES] [SEED]     # default 20000 1
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-20000}
seed=${2:-1}
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
root=$seeds/root
mkdir -p "$root"/etc "$root"/boot "$root"/var/lib/dpkg "$root"/etc/ssh "$root"/usr/lib
printf 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n' > "$root"/etc/os-release
printf 'UUID=0c1d5b9e-6e2e-4b5a-9a7a-3c2f7f8e9d10 / ext4 defaults 0 1\n' > "$root"/etc/fstab
: > "$root"/etc/machine-id
printf 'root:x:0:0:root:/root:/bin/bash\n' > "$root"/etc/passwd
printf 'root:*:19000:0:99999:7:::\n' > "$root"/etc/shadow
printf 'Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2\n\n' > "$root"/var/lib/dpkg/status
printf 'kernel' > "$root"/boot/vmlinuz-6.1.0-1-amd64
dd if=/dev/zero of="$seeds"/disk.raw bs=1M count=6 status=none
printf 'label: gpt\nstart=2048, size=8192, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n' | sfdisk -q "$seeds"/disk.raw
mke2fs -q -t ext4 -U 0c1d5b9e-6e2e-4b5a-9a7a-3c2f7f8e9d10 -d "$root" "$seeds"/fs.img 4M
dd if="$seeds"/fs.img of="$seeds"/disk.raw bs=1M seek=1 conv=notrunc status=none
qemu-img convert -q -c -f raw -O qcow2 "$seeds"/disk.raw "$seeds"/disk.qcow2
cargo build -q --release --example fuzz-images
target/release/kiln inspect "$seeds"/disk.qcow2 | head -3   # the seed reads
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
exec target/release/examples/fuzz-images "$seeds" "$cases" "$seed"
