#!/usr/bin/env bash
# The container image that runs kiln (the jobs `kiln ci` writes): Debian 12 with qemu and libvirt
# from bookworm-backports (as install-deps.sh), libguestfs with the kernel its appliance boots,
# OVMF and AAVMF, swtpm, mmdebstrap, xorriso, git and ssh; kiln (this checkout's release build)
# as /usr/local/bin/kiln and scripts/start-services.sh as /usr/local/bin/kiln-services (virtlogd
# and libvirtd, started by the job). There is no registry here and no base image to pull: the
# root filesystem is made by mmdebstrap from the Debian mirror and imported with `podman import`.
#
#   scripts/container-image.sh [TAG]      default localhost/kiln:VERSION, also tagged :latest
#
# Environment: KILN_MIRROR (default http://deb.debian.org/debian). Run it as root (mmdebstrap's
# root mode); the image is in root's podman storage.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
tag=${1:-localhost/kiln:$version}
mirror=${KILN_MIRROR:-http://deb.debian.org/debian}
for c in mmdebstrap podman; do
  command -v "$c" >/dev/null || { echo "container-image.sh: $c is missing (apt-get install $c)" >&2; exit 1; }
done
[ -x target/release/kiln ] || cargo build --locked --release
work=$(mktemp -d /var/tmp/kiln-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
bpo=(qemu-utils qemu-system-x86 qemu-system-arm libvirt-daemon libvirt-daemon-driver-qemu
  libvirt-clients)
main=(ca-certificates git openssh-client xorriso mmdebstrap e2fsprogs dosfstools mtools fdisk
  libguestfs-tools linux-image-cloud-amd64 ovmf qemu-efi-aarch64 swtpm swtpm-tools procps)
include=$(IFS=,; echo "${bpo[*]},${main[*]}")
# Backports at the priority of the release: qemu 10 and libvirt 11 bring their own qemu-system-
# common, seabios, ... from there (the host's install-deps.sh does the same with -t).
mmdebstrap --variant=apt --mode=root --format=tar \
  --setup-hook='mkdir -p "$1/etc/apt/preferences.d" && printf "Package: *\nPin: release n=bookworm-backports\nPin-Priority: 500\n" > "$1/etc/apt/preferences.d/backports"' \
  --include="$include" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='copy-in target/release/kiln /usr/local/bin' \
  --customize-hook='upload scripts/start-services.sh /usr/local/bin/kiln-services' \
  --customize-hook='chmod 0755 "$1/usr/local/bin/kiln-services"' \
  --customize-hook='chroot "$1" kiln --version' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm "$work/rootfs.tar" \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
  "deb $mirror bookworm-backports main"
podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LIBGUESTFS_BACKEND=direct' \
  --change 'WORKDIR /work' \
  --change 'CMD ["/bin/bash"]' \
  --message "kiln $version (scripts/container-image.sh)" \
  "$work/rootfs.tar" "$tag" >/dev/null
podman tag "$tag" "${tag%:*}:latest"
echo "$tag: $(podman image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec) ($(podman image inspect --format '{{.Id}}' "$tag" | cut -c1-12))"
