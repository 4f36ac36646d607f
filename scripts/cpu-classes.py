#!/usr/bin/env python3
"""Where CI's CPU goes: run beside .ci/run, it samples /proc every 2 s and, when it gets SIGTERM,
prints the host's busy cores (from /proc/stat) and the CPU seconds of each kind of process (TCG
guests, libguestfs appliances, compilers, the test services...). A process that lives under 2 s
is missed, and so are the last 2 s of one that ends (the "not sampled" line: mostly the
compilers' and the arm64 bootstrap's many short processes). "Idle": the
seconds with under three quarters of the cores busy.
Usage: scripts/cpu-classes.py OUT-FILE & … kill -TERM $!; cat OUT-FILE"""
import collections
import os
import signal
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")
COMPILE = {"rustc", "cargo", "cc", "cc1", "ld", "clippy-driver", "cc1plus", "as", "collect2",
           "ld.bfd", "cmake", "make", "rust-lld", "build-script-build"}


def kind(pid, comm):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmd = ""
    if "qemu-system-x86_64" in cmd:
        if "guest=kiln-" in cmd:
            return "x86_64 VMs (libvirt, TCG)"
        return "libguestfs appliances" if "guestfs" in cmd else "other qemu-system-x86_64"
    if "qemu-system-aarch64" in cmd:
        return "aarch64 VMs (libvirt, TCG)"
    # binfmt_misc's P flag puts the interpreter (…/qemu-binfmt/aarch64-binfmt-P) before argv.
    if "qemu-binfmt/aarch64" in cmd or "qemu-aarch64" in cmd:
        return "arm64 programs (qemu-user)"
    if comm in COMPILE or comm.startswith("build-script"):
        return "compilers"
    if comm.startswith("kiln"):
        return "kiln"
    if comm == "memcached" or any(s in cmd for s in ("keystone", "glance", "swift", "uwsgi")):
        return "Keystone, Glance, Swift"
    if comm in ("qemu-img", "nbdkit", "nbdcopy"):
        return "qemu-img"
    if comm in ("mmdebstrap", "apt-get", "apt", "dpkg", "dpkg-deb", "http", "gpgv"):
        return "apt, dpkg"
    return "other"


def busy_ticks():
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:]))
    return sum(v) - v[3] - v[4]


def main():
    out = sys.argv[1]
    seen = {}  # pid -> (start time, kind, ticks)
    total = collections.Counter()
    start, b0 = time.time(), busy_ticks()
    cores = os.cpu_count()
    low = [0.0]  # seconds with under three quarters of the cores busy
    last = [start, b0]

    def finish(*_):
        wall = time.time() - start
        busy = (busy_ticks() - b0) / HZ
        with open(out, "w") as f:
            f.write(f"{wall:8.0f} s sampled, {busy:.0f} CPU-seconds busy: {busy / wall:.2f} of "
                    f"{cores} cores on average; {low[0]:.0f} s idle (under {0.75 * cores:g} busy)\n")
            for k, v in total.most_common():
                f.write(f"{v / HZ:8.0f} CPU-s  {k}\n")
            f.write(f"{busy - sum(total.values()) / HZ:8.0f} CPU-s  not sampled (short processes, the last 2 s of others)\n")
        sys.exit(0)

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    while True:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            r = s.rfind(")")
            comm, fields = s[s.find("(") + 1:r], s[r + 2:].split()
            ticks, started = int(fields[11]) + int(fields[12]), fields[19]
            e = seen.get(d)
            if e is None or e[0] != started:
                k = kind(d, comm)
                # What a process used before it was first seen counts, but not for those that
                # were there before the sampler (their past is not CI's).
                if time.time() - start > 3:
                    total[k] += ticks
                seen[d] = (started, k, ticks)
            else:
                total[e[1]] += ticks - e[2]
                seen[d] = (started, e[1], ticks)
        time.sleep(2)
        now, b = time.time(), busy_ticks()
        if (b - last[1]) / HZ / (now - last[0]) < 0.75 * cores:
            low[0] += now - last[0]
        last[:] = [now, b]


if __name__ == "__main__":
    main()
