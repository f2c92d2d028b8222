#!/bin/bash
# Runs the SCS compliance check (scs-compatible-iaas v5.1) against a running `make dev` site and
# writes its report to docs/conformance/.
#
#   make dev                                   # in one shell, until it prints `ready: …`
#   scripts/conformance.sh /path/to/SovereignCloudStack/standards
#
# The standards repository is not vendored (never commit its code): pass a checkout. Its Python
# requirements go into /opt/scs-edge-conformance. Images cannot be downloaded here, so the fixture
# uploads `Ubuntu 24.04` with the real upstream metadata (scs-0102, scs-0104) over a stand-in payload
# — the test guest — and the report says so. The test user is `alice`'s application credential
# (member of `demo`; neither admin nor manager), as the runner requires.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
standards=${1:?usage: scripts/conformance.sh <standards checkout>}
standards=$(cd "$standards" && pwd)
dev=$root/target/dev
clouds=$dev/clouds.yaml
venv=/opt/scs-edge-conformance
[ -f "$clouds" ] || { echo "no $clouds: start 'make dev' first" >&2; exit 1; }
export OS_CLIENT_CONFIG_FILE=$clouds
os() { /opt/scs-edge-clients/bin/openstack "$@"; }

if ! "$venv/bin/python" -c "import openstack, boto3" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$standards/Tests/requirements.txt" \
    -r "$standards/Tests/iaas/requirements.txt"
fi

# Every image a member sees must carry the SCS metadata (scs-0102); the two public images do.
today=$(date -u +%Y-%m-%d)
common=(--property architecture=x86_64 --property hw_disk_bus=virtio --property hypervisor_type=qemu
        --property hw_rng_model=virtio --property os_purpose=generic --property hotfix_hours=0
        --property provided_until=none --property uuid_validity=none)
guest=$dev/guest.raw
if ! os --os-cloud scs-edge-admin image show "Ubuntu 24.04" >/dev/null 2>&1; then
  os --os-cloud scs-edge-admin image create --public --disk-format raw --container-format bare \
    --file "$guest" --min-disk 1 --min-ram 512 "${common[@]}" \
    --property os_distro=ubuntu --property os_version=24.04 \
    --property image_build_date=2025-10-23 --property image_original_user=ubuntu \
    --property image_source=https://cloud-images.ubuntu.com/releases/noble/release-20251023/ubuntu-24.04-server-cloudimg-amd64.img \
    --property image_description=https://ubuntu.com/server/docs/cloud-images/introduction \
    --property replace_frequency=never \
    --property scs_edge_payload="stand-in: the SCS Edge test guest, not the Ubuntu image" \
    "Ubuntu 24.04" >/dev/null
fi
os --os-cloud scs-edge-admin image set "${common[@]}" --min-disk 1 --min-ram 128 \
  --property os_distro=busybox --property os_version=1.35 --property image_build_date="$today" \
  --property image_original_user=root \
  --property image_source=https://github.com/SovereignCloudStack/scs-edge/tree/main/tests/guest \
  --property image_description=https://github.com/SovereignCloudStack/scs-edge/blob/main/tests/guest/build-guest-image.sh \
  --property replace_frequency=never busybox-guest

mkdir -p "$root/docs/conformance"
commit=$(git -C "$standards" rev-parse --short HEAD 2>/dev/null || echo unknown)
report=$root/docs/conformance/scs-compatible-iaas-v5.1-$today.yaml
log=$root/docs/conformance/scs-compatible-iaas-v5.1-$today.log
cd "$standards/Tests"
set +e
"$venv/bin/python" ./scs-compliance-check.py -V v5.1 -s edge -a os_cloud=scs-edge-member \
  -o "$report" scs-compatible-iaas.yaml 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
{
  echo "# SCS Edge conformance run $today against \`make dev\` (standards commit $commit)."
  echo "# The image 'Ubuntu 24.04' carries the real upstream metadata over a stand-in payload (the"
  echo "# SCS Edge test guest): no Ubuntu image can be downloaded on the machine that ran this."
  cat "$report"
} > "$report.tmp" && mv "$report.tmp" "$report"
echo "report: $report (runner exit $status)"
