#!/bin/bash
# Installs what building and testing SCS Edge needs on Debian 12, idempotently: Debian packages for
# libvirt/QEMU and the test guest, and cargo-nextest. Run as root (CI runs it through `make test`).
set -euo pipefail

packages=(
  # libvirt + QEMU (the tests start virtlogd and libvirtd themselves; no systemd needed)
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  qemu-system-x86 qemu-utils
  # the test guest: Debian kernel, busybox initramfs, SYSLINUX-bootable FAT disk
  linux-image-amd64 busybox-static cpio kmod syslinux syslinux-common mtools dosfstools
  # OVS and OVN (ovsdb-server, ovs-vswitchd, ovn-northd, ovn-controller, nbctl; userspace datapath)
  openvswitch-switch openvswitch-common ovn-central ovn-host ovn-common
  # packet tests: network namespaces, veths, ethtool offloads
  iproute2 ethtool iputils-ping
  # build
  gcc make git ca-certificates curl
  # the OpenStack clients the API tests drive (installed into a virtualenv below)
  python3-venv python3-pip
  # the region: PostgreSQL (its tests start their own server with initdb/pg_ctl) and Chromium for the
  # dashboard's browser tests (driven by playwright-core from npm, tests/dashboard/)
  postgresql chromium
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The node image (make image / make lab): mkosi 24 comes from bookworm-backports (it needs systemd
# 254's systemd-repart, which it pulls from there too); OVMF boots the image under QEMU. The
# backports suite lives on the same archive as the host's own sources.
image_packages=(mkosi python3-pefile systemd-boot systemd-boot-efi)
image_host_packages=(ovmf squashfs-tools dosfstools mtools e2fsprogs cpio zstd openssl bubblewrap fdisk)
if ! mkosi --version 2>/dev/null | grep -Eq '^mkosi (2[4-9]|[3-9][0-9])'; then
  if [ ! -e /etc/apt/sources.list.d/bookworm-backports.sources ]; then
    awk 'BEGIN{RS="";ORS="\n\n"} NR==1' /etc/apt/sources.list.d/debian.sources \
      | sed 's/^Suites:.*/Suites: bookworm-backports/' > /etc/apt/sources.list.d/bookworm-backports.sources
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends -t bookworm-backports "${image_packages[@]}"
fi
missing=()
for p in "${image_host_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Node.js runs the test OIDC provider (tests/oidc-idp) and Playwright; the machine's own is used when
# it is recent enough (≥ 20.18), Debian's otherwise.
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=18)?0:1)' 2>/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends nodejs npm
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
if ! cargo deny --version >/dev/null 2>&1; then
  cargo install --locked cargo-deny
fi

# Real OpenStack clients, pinned (tests/clients/): the API tests drive python-openstackclient and
# openstacksdk exactly as an operator would. Reinstalled when the pins change.
clients=/opt/scs-edge-clients
pins="$(dirname "$0")/../tests/clients"
stamp="$clients/.pins-$(cat "$pins/requirements.txt" "$pins/constraints.txt" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  rm -rf "$clients"
  python3 -m venv "$clients"
  "$clients/bin/pip" install -q --disable-pip-version-check -r "$pins/requirements.txt" -c "$pins/constraints.txt"
  touch "$stamp"
fi
