#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 (root): installs the packages, starts
# virtlogd/libvirtd if needed, then runs the unit and CLI tests and the real end-to-end VM
# builds (libvirt + qemu under TCG, cloud-init in the guest, libguestfs, qemu-img), and
# `kiln image` against a real Keystone + Glance (scripts/glance-setup.sh) and the remote stage
# cache against a real Swift (scripts/swift-setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# Where the time goes, in CI's log: each step's start, with the seconds since this script began.
step() { echo "== test.sh +${SECONDS}s: $*"; }
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (1.80+) first" >&2; exit 1; }
bash scripts/install-deps.sh
export KILN_SERVICES_PIDFILE
KILN_SERVICES_PIDFILE=$(mktemp)
stop_services() { # only what this script started
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$KILN_SERVICES_PIDFILE"
  rm -f "$KILN_SERVICES_PIDFILE"
}
# Each nextest run's JUnit file (every test's time), kept for the table printed at the end.
times_dir=$(mktemp -d)
services_pid="" services_log=""
finish() {
  local rc=$?
  if compgen -G "$times_dir/*.xml" >/dev/null; then
    python3 scripts/test-times.py "$times_dir"/*.xml || true
  fi
  rm -rf "$times_dir"
  if [ -n "$services_pid" ] && kill -0 "$services_pid" 2>/dev/null; then
    kill "$services_pid" 2>/dev/null || true
  fi
  [ -z "$services_log" ] || rm -f "$services_log"
  stop_services
  echo "== test.sh +${SECONDS}s: done (exit $rc)"
  exit "$rc"
}
trap finish EXIT
step "bash scripts/start-services.sh"
bash scripts/start-services.sh
# Where KVM is unusable, libguestfs must not wait for it.
export LIBGUESTFS_BACKEND=direct
# Keystone, Glance and Swift are installed and started in the background while kiln compiles
# and the unit tests run (PyPI downloads and service start-up wait on the network and on
# sockets, not on the cores); the Glance and remote-cache tests wait for them.
step "scripts/glance-setup.sh, then scripts/swift-setup.sh, in the background"
services_log=$(mktemp)
(bash scripts/glance-setup.sh && bash scripts/swift-setup.sh) >"$services_log" 2>&1 &
services_pid=$!
# Release builds throughout: the tests drive the binary users run (the one quickstart.sh builds,
# so after it nothing is compiled twice), and no second, debug build of every dependency.
step "cargo build --locked --release"
cargo build --locked --release
# The unit and CLI tests: under nextest (when installed) every test is a process and two run at
# once, so the test binaries do not wait for each other.
if cargo nextest --version >/dev/null 2>&1; then
  step "cargo nextest run --locked --release (unit and CLI tests)"
  cargo nextest run --locked --release -j 2 --no-fail-fast --failure-output final
  cargo test --locked --release --doc
else
  step "cargo test --locked --release"
  cargo test --locked --release
fi
# The SBOM read back by the SPDX project's validator (installed by install-deps.sh).
cargo test --locked --release --lib -- --ignored pyspdxtools
# kiln report's page read back by a real browser (Debian's chromium, headless).
cargo test --locked --release --test report -- --ignored
# kiln ci's files checked by each engine's own validator (installed here if .ci/run did not).
bash scripts/validators-setup.sh
cargo test --locked --release --test ci_engines -- --ignored
# A real Keystone + Glance (installed from PyPI into a venv on first use) for `kiln image`,
# and a real Swift with Keystone auth for the remote stage cache: started above.
step "waiting for Keystone, Glance and Swift"
setup_rc=0
wait "$services_pid" || setup_rc=$?
cat "$services_log"
[ "$setup_rc" = 0 ] || { echo "test.sh: setting up Keystone, Glance or Swift failed" >&2; exit "$setup_rc"; }
export OS_CLIENT_CONFIG_FILE=${KILN_GLANCE_DIR:-/var/tmp/kiln-glance}/clouds.yaml
export KILN_GLANCE_VENV=${KILN_GLANCE_VENV:-/opt/kiln-glance-venv}
# Keystone answering /v3 is not yet Keystone issuing tokens: CI21's first Glance test, started at
# once, had its token request refused. Wait (up to a minute) until a token is issued.
for _ in $(seq 1 30); do
  "$KILN_GLANCE_VENV/bin/openstack" --os-cloud kiln-alpha token issue -f value -c id \
    >/dev/null 2>&1 && break
  sleep 1
done
# Swift's S3 credentials (a Keystone EC2 credential) come from a private file, not the log.
# shellcheck disable=SC1091
. "${KILN_SWIFT_DIR:-/var/tmp/kiln-swift}/s3.env"
# The service and VM tests. With cargo-nextest (when installed): two busy lanes on two cores
# and a light one (.config/nextest.toml: the VM tests one at a time; beside them the arm64,
# libguestfs and installer tests one at a time; and the Glance and Swift tests, which mostly
# wait), each test's time, the lanes' timeline and the tests' steps in the log, and every test
# runs even after one failed. Without it: one at a time.
if cargo nextest --version >/dev/null 2>&1; then
  step "cargo nextest run: remote_cache, glance, glance_faults, e2e, installer_e2e, container"
  rc=0
  cargo nextest run --locked --release --run-ignored only -j 3 --no-fail-fast \
    --failure-output final --test remote_cache --test glance --test glance_faults \
    --test e2e --test installer_e2e --test container || rc=$?
  cp target/nextest/default/junit.xml "$times_dir/tests.xml" 2>/dev/null || true
  [ "$rc" = 0 ] || exit "$rc"
else
  step "cargo test --locked --release --test remote_cache"
  cargo test --locked --release --test remote_cache -- --ignored
  # Glance on sqlite answers 500 "database is locked" when several clients write at once.
  step "cargo test --locked --release --test glance"
  cargo test --locked --release --test glance --test glance_faults -- --ignored --test-threads=1
  # Two TCG guests at once on 2 cores are only slower (and the installer tests share their
  # cached medium).
  step "cargo test --locked --release --test e2e"
  cargo test --locked --release --test e2e -- --ignored --test-threads=1
  step "cargo test --locked --release --test installer_e2e"
  cargo test --locked --release --test installer_e2e -- --ignored --nocapture --test-threads=1
  step "cargo test --locked --release --test container"
  cargo test --locked --release --test container -- --ignored
fi
