#!/usr/bin/env bash
# Starts virtlogd and libvirtd when their sockets are missing (machines without an init
# system). Prints the PIDs it started to $KILN_SERVICES_PIDFILE (if set) so the caller can stop
# exactly those processes.
set -euo pipefail
pidfile=${KILN_SERVICES_PIDFILE:-}
start() { # name socket cmd...
  local name=$1 sock=$2; shift 2
  if [ -S "$sock" ] && timeout 5 "$@" --version >/dev/null 2>&1 && virsh -c qemu:///system version >/dev/null 2>&1 ; then
    return 0
  fi
  if [ -S "$sock" ]; then return 0; fi
  echo "starting $name"
  setsid "$@" </dev/null >/dev/null 2>&1 &
  local pid=$!
  [ -n "$pidfile" ] && echo "$pid" >> "$pidfile"
  for _ in $(seq 1 50); do [ -S "$sock" ] && return 0; sleep 0.2; done
  echo "$name did not create $sock" >&2; return 1
}
start virtlogd /run/libvirt/virtlogd-sock /usr/sbin/virtlogd
start libvirtd /run/libvirt/libvirt-sock /usr/sbin/libvirtd
virsh -c qemu:///system version >/dev/null
