#!/bin/bash
# Builds the SCS Edge node image with mkosi (image/README.md): stages the agent, the verity signing
# certificate, the release root of trust (root.json) and, when present, k3s; then runs mkosi — only when
# an input changed since the last build. Prints the image path last.
#
# Environment:
#   SCS_EDGE_SIGNING_KEY / SCS_EDGE_SIGNING_CERT  PEM key and certificate that sign the /usr verity
#       root hash (and later update bundles). Unset: a development pair in target/image/keys is made
#       once and reused — fine for labs and CI, never for a fleet.
#   SCS_EDGE_ARTIFACTS  directory with binaries that cannot be downloaded here (k3s); default
#       target/image/artifacts.
#   SCS_EDGE_AGENT  the agent binary to ship; default target/debug/scs-edge-agent, the one `make build`
#       and `make test` compile anyway (decision 0012). `make image PROFILE=release` builds and passes
#       the release binary, for a fleet. This script compiles nothing: make does, first.
#   SCS_EDGE_IMAGE_FORCE=1  rebuild even when nothing changed.
#   SCS_EDGE_IMAGE_VERSION  the image version (default: the workspace version in Cargo.toml), and
#   SCS_EDGE_IMAGE_OUT  where mkosi writes (default target/image): a later version of the same inputs,
#       as the update tests need (scripts/build-update-test-images.sh). Keys, the release repository and
#       the staging tree stay in target/image, so every version trusts the same roots.
#   SCS_EDGE_IMAGE_EXTRA_TREE  a directory copied over the image last (a test's deliberate fault).
set -euo pipefail
cd "$(dirname "$0")/.."
base=target/image
out=${SCS_EDGE_IMAGE_OUT:-$base}
stage=$base/stage
keys=$base/keys
artifacts=${SCS_EDGE_ARTIFACTS:-$base/artifacts}
version=${SCS_EDGE_IMAGE_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
extra_tree=${SCS_EDGE_IMAGE_EXTRA_TREE:-}

agent=${SCS_EDGE_AGENT:-target/debug/scs-edge-agent}
if [ ! -x "$agent" ]; then
    echo "build-image: no agent binary at $agent: \`make image\` builds it first" >&2
    exit 1
fi

mkdir -p "$keys"
key=${SCS_EDGE_SIGNING_KEY:-$keys/signing.key}
cert=${SCS_EDGE_SIGNING_CERT:-$keys/signing.crt}
if [ ! -e "$key" ]; then
    echo "build-image: making a development signing key in $keys (set SCS_EDGE_SIGNING_KEY for releases)"
    openssl req -new -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=SCS Edge development image signing" \
        -keyout "$key" -out "$cert" 2>/dev/null
fi

rm -rf "$stage"
install -D -s -m 0755 "$agent" "$stage/usr/bin/scs-edge-agent"
# Userspace verity signature checks (systemd-dissect, sysext).
install -D -m 0644 "$cert" "$stage/usr/lib/verity.d/scs-edge.crt"
# The update root of trust: the release repository's newest root (nodes follow later rotations).
release_repo=${SCS_EDGE_RELEASE_REPO:-$base/releases}
release_keys=${SCS_EDGE_RELEASE_KEYS:-$keys/release}
if ! compgen -G "$release_repo/metadata/*.root.json" >/dev/null; then
    echo "build-image: making a development release repository in $release_repo (set SCS_EDGE_RELEASE_REPO for a fleet)"
    "$(dirname "$agent")/scs-edge-release" --keys "$release_keys" --repo "$release_repo" init
fi
root_of_trust=$(find "$release_repo/metadata" -name '*.root.json' | sort -V | tail -1)
install -D -m 0644 "$root_of_trust" "$stage/usr/share/scs-edge/update/root.json"
if [ -x "$artifacts/k3s" ]; then
    install -D -m 0755 "$artifacts/k3s" "$stage/usr/bin/k3s"
    echo "build-image: k3s included from $artifacts/k3s"
else
    echo "build-image: no k3s in $artifacts (it cannot be downloaded here): the image is built without it"
fi

inputs=$( { echo "$version"; find mkosi.conf image hardware-profiles "$stage" ${extra_tree:+"$extra_tree"} -type f -print0 \
    | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-64)
image=$out/scs-edge_$version.raw
mkdir -p "$out"
if [ "${SCS_EDGE_IMAGE_FORCE:-0}" != 1 ] && [ -e "$image" ] && [ "$(cat "$out/.inputs" 2>/dev/null)" = "$inputs" ]; then
    echo "build-image: $image is up to date"
else
    rm -f "$out/.inputs"
    mkosi --image-version="$version" --unified-kernel-image-format="scs-edge_${version}+&c" \
        --verity-key="$key" --verity-certificate="$cert" --output-dir="$out" \
        ${extra_tree:+--extra-tree="$extra_tree"} --force build
    echo "$inputs" > "$out/.inputs"
fi
echo "$image"
