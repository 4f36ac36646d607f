#!/usr/bin/env bash
# Installs everything kiln needs on Debian 12 (root): qemu/libvirt from bookworm-backports,
# libguestfs, mmdebstrap, xorriso, the Rust toolchain's build deps, and the validators of the
# installer answer files. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [ ! -f /etc/apt/sources.list.d/bookworm-backports.sources ]; then
  cat > /etc/apt/sources.list.d/bookworm-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

need=()
for p in qemu-system-x86 libvirt-daemon-system libvirt-dev libguestfs-tools libguestfs-dev \
         linux-image-cloud-amd64 xorriso mmdebstrap pkg-config fdisk e2fsprogs \
         dosfstools mtools libclang-dev cpio busybox-static cloud-init debconf \
         debian-installer-12-netboot-amd64 python3-venv; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends -t bookworm-backports \
    qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-dev libvirt-daemon-driver-qemu
  apt-get install -y -q --no-install-recommends libguestfs-tools libguestfs-dev \
    linux-image-cloud-amd64 xorriso mmdebstrap pkg-config fdisk e2fsprogs dosfstools mtools \
    libclang-dev ca-certificates
  # Installer tests: cpio and busybox build an installer medium; cloud-init (for `cloud-init
  # schema`) and debconf validate answer files; the netboot package is the Debian example's
  # kernel and initrd.
  apt-get install -y -q --no-install-recommends cpio busybox-static cloud-init debconf \
    debian-installer-12-netboot-amd64 python3-venv
fi
# pykickstart's ksvalidator (kickstart files), from PyPI into its own venv.
tools=${KILN_TOOLS_VENV:-/opt/kiln-tools-venv}
if [ ! -x "$tools/bin/ksvalidator" ]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q pykickstart
fi
