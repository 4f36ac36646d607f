#!/usr/bin/env bash
# From a fresh Debian 12 (root): install what kiln needs, start libvirt if needed, build kiln
# and bake examples/debian-12.yaml into ./kiln-output/debian-12-1.0/ (the local catalog; no
# cloud or OpenStack configuration is needed).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (1.80+) first" >&2; exit 1; }
bash scripts/install-deps.sh
bash scripts/start-services.sh
cargo build --locked --release
kiln=$PWD/target/release/kiln
"$kiln" build examples/debian-12.yaml -o kiln-output
dir=kiln-output/debian-12-1.0
(cd "$dir" && sha256sum --quiet -c SHA256SUMS)
cat <<EOF

Done. The image and its manifest are in $dir/:
$(cd "$dir" && ls -1 | sed 's/^/  /')
Checksums verified (sha256sum -c SHA256SUMS).

Boot it locally (a throw-away overlay; the golden image stays untouched; Ctrl-a x quits):
  qemu-system-x86_64 -machine q35 -accel tcg -cpu max -m 2048 -smp 2 -nographic \\
    -snapshot -drive file=$dir/debian-12-1.0.qcow2,if=virtio \\
    -nic user,model=virtio,hostfwd=tcp:127.0.0.1:2222-:22
  (to log in, give it a NoCloud seed with your ssh key: README, "Boot a built image")

Publish it to OpenStack Glance (credentials from clouds.yaml or the OS_* variables):
  $kiln publish $dir --os-cloud NAME
EOF
