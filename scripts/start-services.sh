#!/usr/bin/env bash
# Starts virtlogd and libvirtd unless something already answers on their sockets (machines
# without an init system), and registers qemu-user-static's aarch64 entry with binfmt_misc. A socket file left behind by a daemon that is gone (a machine
# whose /run survived its processes) counts as missing. Appends the PIDs it started to
# $KILN_SERVICES_PIDFILE (if set), so the caller can stop exactly those processes.
set -euo pipefail
pidfile=${KILN_SERVICES_PIDFILE:-}
logdir=${KILN_SERVICES_LOGDIR:-/tmp/kiln-services}
mkdir -p "$logdir" /run/libvirt

answers() { # socket: true when a process accepts connections on it
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
PY
}

start() { # name socket command...
  local name=$1 sock=$2; shift 2
  if answers "$sock"; then return 0; fi
  if [ -e "$sock" ]; then echo "removing stale $sock"; rm -f "$sock"; fi
  echo "starting $name (log: $logdir/$name.log)"
  setsid "$@" </dev/null >>"$logdir/$name.log" 2>&1 &
  local pid=$!
  if [ -n "$pidfile" ]; then echo "$pid" >> "$pidfile"; fi
  for _ in $(seq 1 300); do
    answers "$sock" && return 0
    kill -0 "$pid" 2>/dev/null || { echo "$name exited; its log:" >&2; tail -20 "$logdir/$name.log" >&2; return 1; }
    sleep 0.1
  done
  echo "$name did not answer on $sock within 30 s; its log:" >&2
  tail -20 "$logdir/$name.log" >&2
  return 1
}

# arm64 programs through qemu-user-static (an aarch64 bootstrap's maintainer scripts), as
# systemd-binfmt registers them at boot: binfmt_misc mounted, qemu's entry written once.
binfmt=/proc/sys/fs/binfmt_misc
if [ -f /usr/lib/binfmt.d/qemu-aarch64.conf ] && [ ! -e "$binfmt/qemu-aarch64" ]; then
  mountpoint -q "$binfmt" || mount -t binfmt_misc binfmt_misc "$binfmt" || true
  if [ -w "$binfmt/register" ]; then
    echo "registering qemu-aarch64 with binfmt_misc"
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > "$binfmt/register" || true
  fi
fi

# /dev/kvm present but KVM unusable (here: a nested host whose KVM cannot set the guest's MSRs;
# `-cpu host` aborts in kvm_buf_set_msrs): libvirt then finds its cached qemu capabilities stale
# on every call and probes qemu again, 30-80 s before each domain is defined (measured: `virsh
# define` 32 s; 0.02 s without /dev/kvm). A libvirtd started here then gets a mount namespace
# where /dev/kvm is a character device no one may open (mode 0000, device 0:0: what systemd's
# InaccessiblePaths= puts there). libvirt asks whether the qemu user can read and write
# /dev/kvm, not whether it is KVM: /dev/null there (tried first) still counted as usable KVM and
# every call probed again (libvirt 11.3: `kiln test` waited 41-77 s for its domain to start,
# `virsh capabilities` took 7 s; 0.9 s and 0.03 s with this node). A regular file cannot be used:
# libvirt fails to move the mount into each guest's own /dev. Its guests use TCG, which is all
# this host can run anyway.
kvm_broken() {
  [ -e /dev/kvm ] && [ "$(uname -m)" = x86_64 ] || return 1
  ! (printf '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n' \
    | timeout 20 qemu-system-x86_64 -accel kvm -cpu host -machine pc -m 64 -nodefaults \
      -display none -no-user-config -S -qmp stdio) >/dev/null 2>&1
}

start virtlogd /run/libvirt/virtlogd-sock /usr/sbin/virtlogd
if kvm_broken; then
  echo "KVM does not work here although /dev/kvm exists: libvirtd runs without /dev/kvm (TCG)"
  # A slave of the host's mounts: what is mounted later (a test's tmpfs for a full disk) reaches
  # libvirtd's qemu, and the /dev/kvm mask stays in its namespace. A host without systemd may
  # have / private (nothing would propagate): made shared first, systemd's default.
  [ "$(findmnt -no PROPAGATION /)" = shared ] || mount --make-rshared /
  nokvm=/run/libvirt/kiln-no-kvm
  [ -c "$nokvm" ] || { rm -f "$nokvm"; mknod -m 0000 "$nokvm" c 0 0; }
  start libvirtd /run/libvirt/libvirt-sock unshare --mount --propagation slave \
    sh -c 'mount --bind "$0" /dev/kvm && exec /usr/sbin/libvirtd' "$nokvm"
else
  start libvirtd /run/libvirt/libvirt-sock /usr/sbin/libvirtd
fi
# The first connection probes qemu's capabilities, which takes a while on a busy machine.
err=
for _ in $(seq 1 120); do
  if err=$(virsh -c qemu:///system version 2>&1 >/dev/null); then exit 0; fi
  sleep 0.5
done
echo "libvirtd does not answer on qemu:///system: $err" >&2
tail -20 "$logdir/libvirtd.log" >&2 || true
exit 1
