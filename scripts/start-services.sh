#!/usr/bin/env bash
# Starts virtlogd and libvirtd when their sockets are missing (machines without an init
# system). Appends the PIDs it started to $KILN_SERVICES_PIDFILE (if set), so the caller
# can stop exactly those processes and no others.
set -euo pipefail
pidfile=${KILN_SERVICES_PIDFILE:-}
start() { # name socket command...
  local name=$1 sock=$2; shift 2
  [ -S "$sock" ] && return 0
  echo "starting $name"
  setsid "$@" </dev/null >/dev/null 2>&1 &
  local pid=$!
  if [ -n "$pidfile" ]; then echo "$pid" >> "$pidfile"; fi
  for _ in $(seq 1 100); do [ -S "$sock" ] && return 0; sleep 0.1; done
  echo "$name did not create $sock" >&2
  return 1
}
mkdir -p /run/libvirt
start virtlogd /run/libvirt/virtlogd-sock /usr/sbin/virtlogd
start libvirtd /run/libvirt/libvirt-sock /usr/sbin/libvirtd
for _ in $(seq 1 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "libvirtd does not answer on qemu:///system" >&2
exit 1
