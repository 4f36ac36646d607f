#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 (root): installs the packages, starts
# virtlogd/libvirtd if needed, then runs the unit and CLI tests and the real end-to-end VM
# builds (libvirt + qemu under TCG, cloud-init in the guest, libguestfs, qemu-img), and
# `kiln image` against a real Keystone + Glance (scripts/glance-setup.sh) and the remote stage
# cache against a real Swift (scripts/swift-setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (1.80+) first" >&2; exit 1; }
bash scripts/install-deps.sh
export KILN_SERVICES_PIDFILE
KILN_SERVICES_PIDFILE=$(mktemp)
stop_services() { # only what this script started
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$KILN_SERVICES_PIDFILE"
  rm -f "$KILN_SERVICES_PIDFILE"
}
trap stop_services EXIT
bash scripts/start-services.sh
# Where KVM is unusable, libguestfs must not wait for it.
export LIBGUESTFS_BACKEND=direct
cargo build --locked
cargo test --locked
# The SBOM read back by the SPDX project's validator (installed by install-deps.sh).
cargo test --locked --lib -- --ignored pyspdxtools
# A real Keystone + Glance (installed from PyPI into a venv on first use) for `kiln image`.
bash scripts/glance-setup.sh
export OS_CLIENT_CONFIG_FILE=${KILN_GLANCE_DIR:-/var/tmp/kiln-glance}/clouds.yaml
export KILN_GLANCE_VENV=${KILN_GLANCE_VENV:-/opt/kiln-glance-venv}
# A real Swift with Keystone auth for the remote stage cache; its S3 credentials (a Keystone
# EC2 credential) come from a private file, not the log.
bash scripts/swift-setup.sh
# shellcheck disable=SC1091
. "${KILN_SWIFT_DIR:-/var/tmp/kiln-swift}/s3.env"
cargo test --locked --test remote_cache -- --ignored
# One test at a time: Glance on sqlite answers 500 "database is locked" when several clients
# write at once (sqlite cannot upgrade two readers to writers; it fails one immediately).
cargo test --locked --test glance --test glance_faults -- --ignored --test-threads=1
cargo test --locked --test e2e -- --ignored --test-threads=1
# A real unattended install from an installer ISO the test builds itself.
# One at a time: both install from the same cached installer medium, and two TCG guests at
# once on 2 cores would only be slower.
cargo test --locked --test installer_e2e -- --ignored --nocapture --test-threads=1
