#!/usr/bin/env bash
# Coverage-guided fuzzing (issue 24) with cargo-fuzz and libFuzzer, on the nightly toolchain:
# the qcow2 and raw host reader (container, GPT/MBR, ext2/3/4 through ext4-view, the guest files
# inspect parses, the walk kiln diff takes) and the stage cache's meta.json. Seeds are made
# here (mke2fs -d, sfdisk, qemu-img, a real meta.json); each target runs SECONDS with a 2 GiB
# RSS limit and a 10 s per-case timeout, and the script prints what libFuzzer reached (edges
# covered, features, executions) and fails on any crash, timeout or out-of-memory input
# (saved under fuzz/artifacts/TARGET/). Needs: rustup's nightly, `cargo install cargo-fuzz`.
#
#   bench/fuzz-coverage.sh [SECONDS] [TARGET...]     # default 300, all three targets
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(qcow2_image raw_image cache_meta)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Seeds: a Debian-like root, as an ext2 filesystem alone (small, so mutations reach the
# metadata) and as a GPT disk holding it, raw and compressed qcow2.
root=$work/root
mkdir -p "$root"/etc/ssh "$root"/var/lib/dpkg "$root"/boot "$root"/usr/lib/systemd/system
printf 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n' > "$root"/etc/os-release
printf 'UUID=0c1d5b9e-6e2e-4b5a-9a7a-3c2f7f8e9d10 / ext4 defaults 0 1\n' > "$root"/etc/fstab
printf '0123456789abcdef0123456789abcdef\n' > "$root"/etc/machine-id
printf 'root:x:0:0:root:/root:/bin/bash\n' > "$root"/etc/passwd
printf 'Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2\n\n' > "$root"/var/lib/dpkg/status
printf '[Unit]\nDescription=x\n' > "$root"/usr/lib/systemd/system/x.service
ln -s /usr/lib/systemd/system/x.service "$root"/etc/x.service
printf 'kernel' > "$root"/boot/vmlinuz-6.1.0-1-amd64
mkdir -p "$work"/corpus/{qcow2_image,raw_image,cache_meta}
mke2fs -q -t ext2 -b 1024 -N 32 -U 0c1d5b9e-6e2e-4b5a-9a7a-3c2f7f8e9d10 -d "$root" "$work"/corpus/raw_image/ext2 128K
mke2fs -q -t ext4 -b 1024 -N 32 -O ^has_journal -U 0c1d5b9e-6e2e-4b5a-9a7a-3c2f7f8e9d10 -d "$root" "$work"/fs.ext4 256K
cp "$work"/fs.ext4 "$work"/corpus/raw_image/ext4
truncate -s 1536K "$work"/disk.raw
printf 'label: gpt\nstart=2048, size=512, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n' | sfdisk -q "$work"/disk.raw
dd if="$work"/fs.ext4 of="$work"/disk.raw bs=1M seek=1 conv=notrunc status=none
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=4096 "$work"/disk.raw "$work"/corpus/qcow2_image/gpt-ext4.qcow2
qemu-img convert -q -f raw -O qcow2 -o cluster_size=4096 "$work"/fs.ext4 "$work"/corpus/qcow2_image/ext4.qcow2
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=4096,compression_type=zstd "$work"/disk.raw "$work"/corpus/qcow2_image/gpt-ext4-zstd.qcow2
printf '{"stage":"provision","key":"%s","depends_on":["%s"],"created":1,"files":["disk.qcow2"],"size":5,"data":{}}' \
  "$(printf 'ab%.0s' {1..32})" "$(printf 'cd%.0s' {1..32})" > "$work"/corpus/cache_meta/meta.json
ls -l "$work"/corpus/*/

cd fuzz
cargo +nightly fuzz build -s none -O
echo "machine: $(nproc) cores, $(uname -r), ${secs} s a target"
failed=0
for t in "${targets[@]}"; do
  max=$(find "$work"/corpus/"$t" -type f -printf '%s\n' | sort -n | tail -1)
  log=$work/$t.log
  if cargo +nightly fuzz run -s none -O "$t" "$work"/corpus/"$t" -- \
       -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=$((max + 4096)) \
       -print_final_stats=1 > "$log" 2>&1; then
    result=ok
  else
    result=FAILED; failed=1
    grep -E "^==|ERROR|panicked|Test unit written" "$log" | head -20
  fi
  last=$(grep -E '#[0-9]+.*cov:' "$log" | tail -1)
  execs=$(grep -E 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  echo "$t: $result; ${execs:-?} executions in ${secs} s; last: ${last:-none}"
done
exit $failed
