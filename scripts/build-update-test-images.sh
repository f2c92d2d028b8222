#!/bin/bash
# Builds the images the OS-update tests install on a node booted from `make image`'s version N
# (tests/tests/update.rs): N+1, the same inputs with the patch version bumped, and N+2, whose
# ovn-controller cannot start — a release whose health gate cannot pass. Each is an ordinary
# `scripts/build-image.sh` run (so only what changed is rebuilt) into target/image-test/<version>.
# Prints the two image paths.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IFS=. read -r major minor patch <<<"$version"
next=$major.$minor.$((patch + 1))
broken=$major.$minor.$((patch + 2))

tree=target/image-test/broken-ovn-tree
dropin=$tree/usr/lib/systemd/system/ovn-controller.service.d
mkdir -p "$dropin"
cat > "$dropin/50-update-test-fault.conf" <<'UNIT'
# A deliberate fault for the update tests: this release's ovn-controller never starts.
[Service]
ExecStart=
ExecStart=/bin/false
UNIT

SCS_EDGE_IMAGE_VERSION=$next SCS_EDGE_IMAGE_OUT=target/image-test/$next \
    scripts/build-image.sh | tail -1
SCS_EDGE_IMAGE_VERSION=$broken SCS_EDGE_IMAGE_OUT=target/image-test/$broken \
    SCS_EDGE_IMAGE_EXTRA_TREE=$tree scripts/build-image.sh | tail -1
