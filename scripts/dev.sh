#!/bin/bash
# `make dev`: a whole edge site on this machine, in the foreground.
#
# Starts libvirtd (if not running) and a private OVS/OVN stack (userspace datapath) under
# target/dev/ovn, then the agent with its API on https://127.0.0.1:8443. Once the API answers it
# bootstraps identity, seeds a `demo` project with a member user, an external provider network on a
# veth into namespace `scs-dev-ext` (192.0.2.0/24), the test guest image and a `tiny` flavor, writes
# target/dev/clouds.yaml (clouds `scs-edge-admin` and `scs-edge-member`, the latter an application
# credential) and prints one line `ready: <path to clouds.yaml>`. Ctrl-C stops everything it started.
#
#   OS_CLIENT_CONFIG_FILE=target/dev/clouds.yaml /opt/scs-edge-clients/bin/openstack \
#       --os-cloud scs-edge-member server list
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dev=$root/target/dev
ovn=$dev/ovn
bin=$root/target/debug/scs-edge-agent
clients=/opt/scs-edge-clients/bin
port=${SCS_EDGE_DEV_PORT:-8443}
mkdir -p "$dev" /run/scs-edge-dev
chmod 755 "$root/target" && chmod 711 "$dev"
started=()

stop() {
  for pidfile in "${started[@]}"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  ip link del scs-dev-ext0 2>/dev/null || true
  ip netns del scs-dev-ext 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM   # exit runs the EXIT trap, which stops what was started

# libvirt
if ! virsh -q -c qemu:///system uri >/dev/null 2>&1; then
  pgrep -x virtlogd >/dev/null || /usr/sbin/virtlogd -d -p /run/scs-edge-dev/virtlogd.pid
  /usr/sbin/libvirtd -d --pid-file=/run/scs-edge-dev/libvirtd.pid
  started+=(/run/scs-edge-dev/libvirtd.pid)
  for _ in $(seq 1 100); do virsh -q -c qemu:///system uri >/dev/null 2>&1 && break; sleep 0.1; done
fi

# OVS + OVN, private to this dev site (fresh databases each run; the agent re-creates its rows).
rm -rf "$ovn" && mkdir -p "$ovn"
export OVS_RUNDIR=$ovn OVS_LOGDIR=$ovn OVS_DBDIR=$ovn OVS_SYSCONFDIR=$ovn
export OVN_RUNDIR=$ovn OVN_LOGDIR=$ovn OVN_DBDIR=$ovn OVN_SYSCONFDIR=$ovn
ovsdb-tool create "$ovn/conf.db" /usr/share/openvswitch/vswitch.ovsschema
ovsdb-tool create "$ovn/nb.db" /usr/share/ovn/ovn-nb.ovsschema
ovsdb-tool create "$ovn/sb.db" /usr/share/ovn/ovn-sb.ovsschema
for name in ovs nb sb; do
  db=$name.db; [ "$name" = ovs ] && db=conf.db
  extra=(); [ "$name" = ovs ] && extra=(--remote=db:Open_vSwitch,Open_vSwitch,manager_options)
  ovsdb-server "$ovn/$db" --remote="punix:$ovn/$name.sock" --unixctl="$ovn/$name.ctl" \
    --pidfile="$ovn/$name-db.pid" --log-file="$ovn/$name-db.log" --detach -vconsole:off "${extra[@]}"
  started+=("$ovn/$name-db.pid")
done
ovs-vsctl --db="unix:$ovn/ovs.sock" --timeout=10 --no-wait init
ovs-vswitchd "unix:$ovn/ovs.sock" --pidfile="$ovn/vswitchd.pid" --log-file="$ovn/vswitchd.log" \
  --unixctl="$ovn/vswitchd.ctl" --detach -vconsole:off
started+=("$ovn/vswitchd.pid")
ovn-northd --ovnnb-db="unix:$ovn/nb.sock" --ovnsb-db="unix:$ovn/sb.sock" --pidfile="$ovn/northd.pid" \
  --log-file="$ovn/northd.log" --unixctl="$ovn/northd.ctl" --detach -vconsole:off
started+=("$ovn/northd.pid")
ovn-controller "unix:$ovn/ovs.sock" --pidfile="$ovn/controller.pid" --log-file="$ovn/controller.log" \
  --detach -vconsole:off
started+=("$ovn/controller.pid")

# The plant network: a namespace standing in for the site's upstream router, 192.0.2.1.
ip netns del scs-dev-ext 2>/dev/null || true
ip link del scs-dev-ext0 2>/dev/null || true
ip netns add scs-dev-ext
ip link add scs-dev-ext0 type veth peer name eth0 netns scs-dev-ext
ip link set scs-dev-ext0 up
ip -n scs-dev-ext addr add 192.0.2.1/24 dev eth0
ip -n scs-dev-ext link set eth0 up
ip -n scs-dev-ext link set lo up

cat > "$dev/agent.toml" <<TOML
[node]
id = "dev"
state_dir = "$dev/state"
[api]
listen = "127.0.0.1:$port"
public_url = "https://127.0.0.1:$port"
[compute]
shutdown_timeout_secs = 20
[network]
enabled = true
northbound = "unix:$ovn/nb.sock"
southbound = "unix:$ovn/sb.sock"
ovs_database = "unix:$ovn/ovs.sock"
datapath_type = "netdev"
[network.physical_networks.physnet1]
bridge = "br-ex"
mtu = 1500
uplinks = ["scs-dev-ext0"]
TOML
cfg=(--config "$dev/agent.toml")

"$bin" "${cfg[@]}" run &
agent=$!
for _ in $(seq 1 600); do
  curl -fsk "https://127.0.0.1:$port/identity/v3" >/dev/null 2>&1 && break
  kill -0 "$agent" 2>/dev/null || { echo "the agent exited; see its log above" >&2; exit 1; }
  sleep 0.1
done

# Identity: admin (bootstrap), demo project, alice (member), her application credential.
secrets=$dev/secrets
mkdir -p "$secrets" && chmod 700 "$secrets"
[ -f "$secrets/admin" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$secrets/admin"
[ -f "$secrets/alice" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$secrets/alice"
"$bin" "${cfg[@]}" identity bootstrap --admin-password-file "$secrets/admin" >/dev/null
clouds=$dev/clouds.yaml
auth_url=https://127.0.0.1:$port/identity/v3
cacert=$dev/state/tls/api.crt
write_clouds() {
  cat > "$clouds" <<YAML
clouds:
  scs-edge-admin:
    auth:
      auth_url: $auth_url
      username: admin
      password: $(cat "$secrets/admin")
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
    cacert: $cacert
  scs-edge-alice:
    auth:
      auth_url: $auth_url
      username: alice
      password: $(cat "$secrets/alice")
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
    cacert: $cacert
$1
YAML
  chmod 600 "$clouds"
}
write_clouds ""
os() { OS_CLIENT_CONFIG_FILE=$clouds "$clients/openstack" "$@"; }
os --os-cloud scs-edge-admin project show demo >/dev/null 2>&1 ||
  os --os-cloud scs-edge-admin project create --domain default demo >/dev/null
os --os-cloud scs-edge-admin user show alice >/dev/null 2>&1 ||
  os --os-cloud scs-edge-admin user create --domain default --password "$(cat "$secrets/alice")" alice >/dev/null
os --os-cloud scs-edge-admin role add --project demo --user alice member
os --os-cloud scs-edge-alice application credential delete scs-edge-dev >/dev/null 2>&1 || true
read -r cred_id cred_secret < <(os --os-cloud scs-edge-alice application credential create scs-edge-dev \
  -f value -c id -c secret | paste -sd' ')
write_clouds "  scs-edge-member:
    auth_type: v3applicationcredential
    auth:
      auth_url: $auth_url
      application_credential_id: $cred_id
      application_credential_secret: $cred_secret
    region_name: RegionOne
    identity_api_version: 3
    cacert: $cacert"

# The external network, the test guest and a tiny flavor, once.
if ! os --os-cloud scs-edge-admin network show public >/dev/null 2>&1; then
  os --os-cloud scs-edge-admin network create --external --provider-network-type flat \
    --provider-physical-network physnet1 public >/dev/null
  os --os-cloud scs-edge-admin subnet create --network public --subnet-range 192.0.2.0/24 \
    --gateway 192.0.2.1 --allocation-pool start=192.0.2.100,end=192.0.2.199 --no-dhcp public-v4 >/dev/null
fi
guest=$dev/guest.raw
[ -f "$guest" ] || bash "$root/tests/guest/build-guest-image.sh" "$guest"
os --os-cloud scs-edge-admin image show busybox-guest >/dev/null 2>&1 ||
  os --os-cloud scs-edge-admin image create --public --disk-format raw --container-format bare \
    --file "$guest" busybox-guest >/dev/null
os --os-cloud scs-edge-admin flavor show tiny >/dev/null 2>&1 ||
  os --os-cloud scs-edge-admin flavor create --id tiny --vcpus 1 --ram 128 --disk 1 tiny >/dev/null

echo "ready: $clouds"
wait "$agent"
