#!/usr/bin/env bash
# From a fresh Debian 12 (root): install what kiln needs, start libvirt if needed, build kiln
# and bake examples/debian-12.yaml into ./kiln-output/debian-12-1.0/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (1.80+) first" >&2; exit 1; }
bash scripts/install-deps.sh
bash scripts/start-services.sh
cargo build --locked --release
./target/release/kiln build examples/debian-12.yaml -o kiln-output
