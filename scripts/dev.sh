#!/bin/bash
# `make dev`: runs the agent in the foreground against this machine's libvirtd (started here if it is
# not running), with its state in target/dev, the test guest imported and a `tiny` flavor created.
# In another shell:  target/debug/scs-edge-agent --config target/dev/agent.toml server create \
#                      --name demo --flavor tiny --image <image id printed below>
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dev=$root/target/dev
bin=$root/target/debug/scs-edge-agent
mkdir -p "$dev" /run/scs-edge-dev
chmod 755 "$root/target" && chmod 711 "$dev"

if ! virsh -q -c qemu:///system uri >/dev/null 2>&1; then
  pgrep -x virtlogd >/dev/null || /usr/sbin/virtlogd -d -p /run/scs-edge-dev/virtlogd.pid
  /usr/sbin/libvirtd -d --pid-file=/run/scs-edge-dev/libvirtd.pid
  for _ in $(seq 1 100); do virsh -q -c qemu:///system uri >/dev/null 2>&1 && break; sleep 0.1; done
fi

cat > "$dev/agent.toml" <<TOML
[node]
state_dir = "$dev/state"
[api]
listen = "127.0.0.1:8443"
[compute]
shutdown_timeout_secs = 20
TOML

guest=$dev/guest.raw
[ -f "$guest" ] || bash "$root/tests/guest/build-guest-image.sh" "$guest"
cfg=(--config "$dev/agent.toml")
if [ "$("$bin" "${cfg[@]}" image list | grep -c '"id"')" = 0 ]; then
  "$bin" "${cfg[@]}" image import --name busybox-guest --disk-format raw --file "$guest" | grep '"id"'
  "$bin" "${cfg[@]}" flavor create --id tiny --name tiny --vcpus 1 --ram 128 --disk 1 >/dev/null
fi
echo "images:"; "$bin" "${cfg[@]}" image list | grep -E '"(id|name)"'
echo "API: https://127.0.0.1:8443/healthz (certificate: $dev/state/tls/api.crt)"
exec "$bin" "${cfg[@]}" run
