#!/bin/bash
# The fresh-machine check: does scripts/install-deps.sh leave a *new* machine of the kind CI and
# developers use with every tool the tests and the lab call? A machine set up by hand proves little,
# and this one cannot be made new again; a throwaway Debian 12 root can.
#
#   scripts/fresh-machine-check.sh [REV]
#
# 1. debootstrap a minimal bookworm root (target/fresh-machine/root, made anew each run);
# 2. install into it the packages such a machine ships (scripts/fresh-machine/packages.tsv), at their
#    suites: qemu-utils 10 and osslsigncode from bookworm-backports; Node.js 20 from NodeSource, which
#    this network cannot reach, repacked from this host's installed package when its version matches;
#    the root then keeps the host's apt sources, without backports, as a new machine has them;
# 3. give it this host's Rust toolchain (in an overlay), as such a machine has one from rustup;
# 4. run the install script of the working tree (or of git revision REV) in it, then the working
#    tree's scripts/check-tools.sh, and exit with the check's verdict.
#
# Needs root and the package registries; takes about ten minutes (downloads are cached in
# target/fresh-machine/debs). Daemons do not start in the root (policy-rc.d): this checks what is
# installed, not the tests themselves — `make test` on a clean clone does that.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
rev=${1:-}
work=$repo/target/fresh-machine
root=$work/root
debs=$work/debs
packages=scripts/fresh-machine/packages.tsv

[ "$(id -u)" -eq 0 ] || { echo "fresh-machine-check: run as root" >&2; exit 1; }
for tool in debootstrap dpkg-repack; do
    command -v "$tool" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$tool"
done

mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount -l "${mounts[i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
bind() { # bind SOURCE TARGET
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounts+=("$2")
}
# A writable view of a host directory whose writes land in the work directory, not on the host.
overlay() { # overlay SOURCE TARGET
    local name
    name=$(basename "$1")
    mkdir -p "$2" "$work/overlay/$name/upper" "$work/overlay/$name/work"
    mount -t overlay overlay -o "lowerdir=$1,upperdir=$work/overlay/$name/upper,workdir=$work/overlay/$name/work" "$2"
    mounts+=("$2")
}
# The machine's environment for its TLS trust and package clients (CA bundle paths, pip settings),
# as such a machine sets it; nothing else of this shell's.
machine_env=()
while IFS= read -r var; do
    machine_env+=("$var=${!var}")
done < <(compgen -e | grep -E '^(SSL_CERT_(FILE|DIR)|CURL_CA_BUNDLE|REQUESTS_CA_BUNDLE|NODE_EXTRA_CA_CERTS|GIT_SSL_CAINFO|PIP_[A-Z_]+)$' || true)
in_root() { chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 "${machine_env[@]}" \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
echo "fresh-machine-check: debootstrap bookworm from $mirror into $root"
# A run that died may have left its mounts: never let rm reach the host's /dev through them.
{ findmnt -rn -o TARGET | grep -F "$work/" || true; } | sort -r | xargs -r -n1 umount -l
rm -rf --one-file-system "$root" "$work/overlay"
mkdir -p "$root" "$debs"
debootstrap --variant=minbase --cache-dir="$debs" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }

rm -f "$root/etc/apt/sources.list"
install -D -m 0644 /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/debian.sources"
awk 'BEGIN{RS="";ORS="\n\n"} NR==1' /etc/apt/sources.list.d/debian.sources \
    | sed 's/^Suites:.*/Suites: bookworm-backports/' > "$root/etc/apt/sources.list.d/machine-image-backports.sources"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# What such a machine ships besides packages: the certificate authorities its network needs (the
# registries are reached through them), its pip and npm settings, and the wheels directory pip is
# pointed at.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
for file in /etc/pip.conf /root/.npmrc; do
    if [ -e "$file" ]; then install -D -m 0644 "$file" "$root$file"; fi
done
bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev"
bind /dev/pts "$root/dev/pts"
bind "$debs" "$root/var/cache/apt/archives"
if [ -d /opt/wheels ]; then bind /opt/wheels "$root/opt/wheels"; fi

echo "fresh-machine-check: installing the machine's packages ($packages)"
in_root apt-get update -q >"$work/apt.log" 2>&1
in_root apt-cache pkgnames > "$work/available.txt"
requested=()
skipped=()
nodejs_version=
while IFS=$'\t' read -r name version; do
    case $name in '#'*|'') continue ;; esac
    if [ "$name" = nodejs ]; then nodejs_version=$version; continue; fi
    if [[ $version == *bpo12* ]]; then
        requested+=("$name/bookworm-backports")
    elif grep -qFx "$name" "$work/available.txt"; then
        requested+=("$name")
    else
        skipped+=("$name")
    fi
done < "$packages"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${requested[@]}" \
    >>"$work/apt.log" 2>&1 || { tail -30 "$work/apt.log"; exit 1; }
in_root update-ca-certificates >>"$work/apt.log" 2>&1
[ ${#skipped[@]} -eq 0 ] || echo "fresh-machine-check: not in Debian's archive, left out: ${skipped[*]}"

if [ -n "$nodejs_version" ]; then
    if [ "$(dpkg-query -W -f='${Version}' nodejs 2>/dev/null)" = "$nodejs_version" ]; then
        (cd "$work" && rm -f nodejs_*.deb && dpkg-repack nodejs >/dev/null 2>&1)
        cp "$work"/nodejs_*.deb "$root/tmp/"
        in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/"$(basename "$work"/nodejs_*.deb)" \
            >>"$work/apt.log" 2>&1 || { tail -30 "$work/apt.log"; exit 1; }
        # Such a machine upgrades its global npm when it starts; the package's own files are gone.
        rm -rf "$root/usr/lib/node_modules/npm"
        cp -a /usr/lib/node_modules/npm "$root/usr/lib/node_modules/npm"
    else
        echo "fresh-machine-check: this host has no nodejs $nodejs_version to repack: the root goes without" >&2
    fi
fi
# A new machine has no backports source configured, only packages that came from there.
rm "$root/etc/apt/sources.list.d/machine-image-backports.sources"
in_root apt-get update -q >>"$work/apt.log" 2>&1
echo "fresh-machine-check: the root holds $(in_root dpkg-query -W | wc -l) packages;" \
    "qemu-utils $(in_root dpkg-query -W -f='${Version}' qemu-utils)"

# The Rust toolchain as rustup left it (with cargo-nextest, as such a machine has it), in overlays:
# whatever the install writes there stays in the work directory.
overlay "$HOME/.rustup" "$root/root/.rustup"
overlay "$HOME/.cargo" "$root/root/.cargo"

mkdir -p "$root/src"
if [ -n "$rev" ]; then
    git archive "$rev" | tar -x -C "$root/src"
    echo "fresh-machine-check: scripts/install-deps.sh of $rev"
else
    git ls-files -z | tar --null -T - -cf - | tar -x -C "$root/src"
    echo "fresh-machine-check: scripts/install-deps.sh of the working tree"
fi
install -m 0755 scripts/check-tools.sh "$root/src/scripts/check-tools.sh"

started=$EPOCHREALTIME
install_status=0
in_root bash -c 'cd /src && scripts/install-deps.sh' >"$work/install-deps.log" 2>&1 || install_status=$?
seconds=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
echo "fresh-machine-check: install-deps.sh exited $install_status after $seconds s (log: $work/install-deps.log)"
grep -E 'REMOVED|^Remv|will be REMOVED' -A2 "$work/install-deps.log" || true

check_status=0
in_root bash -c 'cd /src && scripts/check-tools.sh' || check_status=$?
if [ "$install_status" -ne 0 ] || [ "$check_status" -ne 0 ]; then
    echo "fresh-machine-check: FAILED"
    exit 1
fi
echo "fresh-machine-check: passed"
