//! The OVN translation and reconciler over an in-memory northbound database.

use super::desired::{self, OvnSettings, port_key};
use super::naming::{self, placeholder};
use super::plan;
use super::reconciler::OvnReconciler;
use crate::network::database::{Database, FakeDatabase};
use crate::network::model::{Network, NetworkType, Port, PortStatus, Route, Subnet};
use crate::network::service::{
    GatewayInfo, InterfaceTarget, NetworkService, NetworkSettings, NewFloatingIp, NewNetwork,
    NewPort, NewRouter, NewRule, NewSubnet, ProviderRequest,
};
use crate::reconcile::{NoLoops, Reconciler};
use crate::store::Store;
use crate::system::clock::SystemClock;
use ovsdb::{Atom, Row, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use uuid::Uuid;

const OWNER: &str = "site-a";

struct World {
    _dir: tempfile::TempDir,
    svc: Arc<NetworkService>,
    public: Network,
    tenant: Network,
    tenant_subnet: Subnet,
    vm1: Port,
    vm2: Port,
    router: Uuid,
    web_group: Uuid,
    fip: Uuid,
}

fn settings() -> OvnSettings {
    OvnSettings {
        owner: OWNER.into(),
        gateway_chassis: "chassis-1".into(),
    }
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(&dir.path().join("agent.db")).expect("store"));
    let svc = Arc::new(NetworkService::new(
        store,
        Arc::new(SystemClock),
        Arc::new(NoLoops),
        NetworkSettings::default(),
    ));
    let public = svc
        .create_network(NewNetwork {
            name: "public".into(),
            project_id: "admin".into(),
            external: true,
            provider: Some(ProviderRequest {
                network_type: NetworkType::Flat,
                physical_network: Some("physnet1".into()),
                segmentation_id: None,
            }),
            ..NewNetwork::default()
        })
        .expect("public");
    svc.create_subnet(NewSubnet {
        network_id: public.id,
        project_id: "admin".into(),
        ip_version: 4,
        cidr: "203.0.113.0/24".into(),
        ..NewSubnet::default()
    })
    .expect("public subnet");
    let tenant = svc
        .create_network(NewNetwork {
            name: "tenant".into(),
            project_id: "p".into(),
            ..NewNetwork::default()
        })
        .expect("tenant");
    let tenant_subnet = svc
        .create_subnet(NewSubnet {
            network_id: tenant.id,
            project_id: "p".into(),
            ip_version: 4,
            cidr: "10.0.0.0/24".into(),
            dns_nameservers: vec!["192.0.2.53".parse().expect("ip")],
            host_routes: vec![Route {
                destination: "172.16.0.0/12".parse().expect("net"),
                nexthop: "10.0.0.254".parse().expect("ip"),
            }],
            ..NewSubnet::default()
        })
        .expect("tenant subnet");
    let web = svc
        .create_security_group(None, "web", "", "p")
        .expect("group");
    svc.create_rule(NewRule {
        security_group_id: web.id,
        project_id: "p".into(),
        direction: "ingress".into(),
        protocol: Some("tcp".into()),
        port_range_min: Some(22),
        port_range_max: Some(22),
        ..NewRule::default()
    })
    .expect("rule");
    let vm1 = svc
        .create_port(NewPort {
            network_id: tenant.id,
            project_id: "p".into(),
            security_groups: Some(vec![web.id]),
            ..NewPort::default()
        })
        .expect("vm1");
    let vm2 = svc
        .create_port(NewPort {
            network_id: tenant.id,
            project_id: "p".into(),
            ..NewPort::default()
        })
        .expect("vm2");
    let router = svc
        .create_router(NewRouter {
            name: "r".into(),
            project_id: "p".into(),
            external_gateway: Some(GatewayInfo {
                network_id: public.id,
                enable_snat: true,
                ip_address: None,
            }),
            ..NewRouter::default()
        })
        .expect("router");
    svc.add_router_interface(router.id, InterfaceTarget::Subnet(tenant_subnet.id))
        .expect("interface");
    let fip = svc
        .create_floating_ip(NewFloatingIp {
            project_id: "p".into(),
            floating_network_id: public.id,
            port_id: Some(vm1.id),
            ..NewFloatingIp::default()
        })
        .expect("fip");
    World {
        _dir: dir,
        svc,
        public,
        tenant,
        tenant_subnet,
        vm1,
        vm2,
        router: router.id,
        web_group: web.id,
        fip: fip.id,
    }
}

fn string(row: &Row, column: &str) -> String {
    match row.get(column) {
        Some(Value::Atom(Atom::String(s))) => s.clone(),
        other => panic!("{column}: {other:?}"),
    }
}

fn strings(row: &Row, column: &str) -> BTreeSet<String> {
    match row.get(column) {
        Some(Value::Set(set)) => set
            .iter()
            .filter_map(|a| {
                if let Atom::String(s) = a {
                    Some(s.clone())
                } else {
                    None
                }
            })
            .collect(),
        Some(Value::Atom(Atom::String(s))) => BTreeSet::from([s.clone()]),
        other => panic!("{column}: {other:?}"),
    }
}

fn map(row: &Row, column: &str) -> std::collections::BTreeMap<String, String> {
    match row.get(column) {
        Some(Value::Map(m)) => m
            .iter()
            .filter_map(|(k, v)| match (k, v) {
                (Atom::String(k), Atom::String(v)) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect(),
        other => panic!("{column}: {other:?}"),
    }
}

fn uuids(row: &Row, column: &str) -> BTreeSet<Uuid> {
    match row.get(column) {
        Some(Value::Set(set)) => set
            .iter()
            .filter_map(|a| {
                if let Atom::Uuid(u) = a {
                    Some(*u)
                } else {
                    None
                }
            })
            .collect(),
        Some(Value::Atom(Atom::Uuid(u))) => BTreeSet::from([*u]),
        other => panic!("{column}: {other:?}"),
    }
}

#[test]
fn desired_rows_follow_the_neutron_ovn_layout() {
    let w = world();
    let model = w.svc.model().expect("model");
    let d = desired::northbound(&model, &settings());

    let ls = &d[&format!("network/{}", w.tenant.id)];
    assert_eq!(ls.table, "Logical_Switch");
    assert_eq!(string(&ls.row, "name"), format!("neutron-{}", w.tenant.id));
    let members = uuids(&ls.row, "ports");
    assert!(
        members.contains(&placeholder(&port_key(w.vm1.id)))
            && members.contains(&placeholder(&port_key(w.vm2.id)))
    );
    assert_eq!(members.len(), 3, "two VMs and the router interface");

    let lsp = &d[&port_key(w.vm1.id)].row;
    let expected = format!("{} {}", w.vm1.mac, w.vm1.fixed_ips[0].ip_address);
    assert_eq!(
        strings(lsp, "addresses"),
        BTreeSet::from([expected.clone()])
    );
    assert_eq!(strings(lsp, "port_security"), BTreeSet::from([expected]));
    assert_eq!(
        uuids(lsp, "dhcpv4_options"),
        BTreeSet::from([placeholder(&format!("dhcp/{}", w.tenant_subnet.id))])
    );

    let dhcp = map(&d[&format!("dhcp/{}", w.tenant_subnet.id)].row, "options");
    assert_eq!(dhcp["router"], "10.0.0.1");
    assert_eq!(dhcp["server_id"], "10.0.0.1");
    assert_eq!(dhcp["dns_server"], "{192.0.2.53}");
    assert_eq!(dhcp["mtu"], "1442");
    assert_eq!(
        dhcp["classless_static_route"],
        "{172.16.0.0/12,10.0.0.254, 0.0.0.0/0,10.0.0.1}"
    );

    let localnet = &d[&format!("localnet/{}", w.public.id)].row;
    assert_eq!(string(localnet, "type"), "localnet");
    assert_eq!(map(localnet, "options")["network_name"], "physnet1");

    let pg = &d[&format!("sg/{}", w.web_group)].row;
    assert_eq!(string(pg, "name"), naming::port_group(w.web_group));
    assert_eq!(
        uuids(pg, "ports"),
        BTreeSet::from([placeholder(&port_key(w.vm1.id))])
    );
    assert_eq!(
        uuids(pg, "acls").len(),
        3,
        "the tcp/22 rule and the two default egress rules"
    );
    let matches: BTreeSet<String> = d
        .values()
        .filter(|r| r.table == "ACL")
        .map(|r| string(&r.row, "match"))
        .collect();
    let pg_name = naming::port_group(w.web_group);
    assert!(
        matches.contains(&format!(
            "outport == @{pg_name} && ip4 && tcp && tcp.dst == 22"
        )),
        "{matches:?}"
    );
    assert!(
        matches.contains(&format!("inport == @{pg_name} && ip4")),
        "default egress rule: {matches:?}"
    );
    let drop = &d["pg-drop"].row;
    assert_eq!(uuids(drop, "ports").len(), 2, "both VMs have port security");

    let nats: Vec<(String, String, String)> = d
        .values()
        .filter(|r| r.table == "NAT")
        .map(|r| {
            (
                string(&r.row, "type"),
                string(&r.row, "external_ip"),
                string(&r.row, "logical_ip"),
            )
        })
        .collect();
    let fip = w.svc.floating_ip(w.fip).expect("fip");
    let router = w.svc.router(w.router).expect("router");
    let gateway_ip = router.external_gateway.expect("gateway").external_fixed_ips[0]
        .ip_address
        .to_string();
    assert!(
        nats.contains(&("snat".into(), gateway_ip, "10.0.0.0/24".into())),
        "{nats:?}"
    );
    assert!(
        nats.contains(&(
            "dnat_and_snat".into(),
            fip.floating_ip_address.to_string(),
            w.vm1.fixed_ips[0].ip_address.to_string()
        )),
        "{nats:?}"
    );
    let route = &d[&format!("route/{}/default", w.router)].row;
    assert_eq!(
        (string(route, "ip_prefix"), string(route, "nexthop")),
        ("0.0.0.0/0".into(), "203.0.113.1".into())
    );
}

fn rig() -> (World, Arc<FakeDatabase>, OvnReconciler) {
    let w = world();
    let fake = Arc::new(FakeDatabase::northbound());
    let reconciler = OvnReconciler::new(w.svc.clone(), fake.clone(), settings());
    (w, fake, reconciler)
}

fn find(fake: &FakeDatabase, table: &str, name: &str) -> Option<(Uuid, Row)> {
    fake.table(table)
        .into_iter()
        .find(|(_, row)| matches!(row.get("name"), Some(Value::Atom(Atom::String(n))) if n == name))
}

#[test]
fn reconcile_creates_everything_once_and_then_does_nothing() {
    let (w, fake, r) = rig();
    r.reconcile("northbound").expect("first pass");
    assert_eq!(
        fake.transactions(),
        1,
        "one transaction for the whole model"
    );
    assert!(find(&fake, "Logical_Switch", &naming::switch(w.tenant.id)).is_some());
    assert!(find(&fake, "Logical_Router", &naming::router(w.router)).is_some());
    assert_eq!(fake.table("NAT").len(), 2);
    r.reconcile("northbound").expect("second pass");
    assert_eq!(fake.transactions(), 1, "nothing to change: no transaction");
    assert!(
        r.observe().expect("observe").is_empty(),
        "nothing changed since our own write"
    );
}

#[test]
fn drift_is_repaired_and_orphans_removed_but_foreign_rows_left_alone() {
    let (w, fake, r) = rig();
    r.reconcile("northbound").expect("first pass");

    let (lsp, _) = find(&fake, "Logical_Switch_Port", &w.vm1.id.to_string()).expect("vm1 port");
    fake.tamper(
        "Logical_Switch_Port",
        lsp,
        "addresses",
        Value::Set(BTreeSet::from([Atom::String(
            "de:ad:be:ef:00:01 10.9.9.9".into(),
        )])),
    );
    let (ls, _) =
        find(&fake, "Logical_Switch", &naming::switch(w.public.id)).expect("public switch");
    fake.remove("Logical_Switch", ls);
    let orphan = fake.plant(
        "Logical_Switch",
        Row::from([
            (
                "name".to_owned(),
                Value::Atom(Atom::String("neutron-gone".into())),
            ),
            (
                "external_ids".to_owned(),
                Value::Map(
                    [
                        (
                            Atom::String(naming::OWNER.into()),
                            Atom::String(OWNER.into()),
                        ),
                        (
                            Atom::String(naming::KEY.into()),
                            Atom::String("network/gone".into()),
                        ),
                    ]
                    .into(),
                ),
            ),
        ]),
    );
    let foreign = fake.plant(
        "Logical_Switch",
        Row::from([(
            "name".to_owned(),
            Value::Atom(Atom::String("someone-elses".into())),
        )]),
    );

    assert_eq!(
        r.observe().expect("observe"),
        vec!["northbound".to_owned()],
        "drift is noticed"
    );
    r.reconcile("northbound").expect("repair");
    let (_, row) = find(&fake, "Logical_Switch_Port", &w.vm1.id.to_string()).expect("vm1 port");
    assert_eq!(
        strings(&row, "addresses"),
        BTreeSet::from([format!("{} {}", w.vm1.mac, w.vm1.fixed_ips[0].ip_address)])
    );
    let (_, public) =
        find(&fake, "Logical_Switch", &naming::switch(w.public.id)).expect("public switch back");
    assert_eq!(
        uuids(&public, "ports").len(),
        2,
        "localnet and router gateway ports back too"
    );
    assert!(
        !fake.table("Logical_Switch").contains_key(&orphan),
        "owned row without desired state removed"
    );
    assert!(
        fake.table("Logical_Switch").contains_key(&foreign),
        "foreign row untouched"
    );
}

#[test]
fn a_wiped_database_is_rebuilt_and_model_changes_flow_through() {
    let (w, fake, r) = rig();
    r.reconcile("northbound").expect("first pass");
    let rows_before: usize = ["Logical_Switch", "Logical_Switch_Port", "ACL", "NAT"]
        .iter()
        .map(|t| fake.table(t).len())
        .sum();
    fake.wipe();
    r.reconcile("northbound").expect("rebuild");
    let rows_after: usize = ["Logical_Switch", "Logical_Switch_Port", "ACL", "NAT"]
        .iter()
        .map(|t| fake.table(t).len())
        .sum();
    assert_eq!(rows_after, rows_before);

    w.svc.delete_port(w.vm2.id).expect("delete vm2");
    r.reconcile("northbound").expect("follow the model");
    assert!(
        find(&fake, "Logical_Switch_Port", &w.vm2.id.to_string()).is_none(),
        "port removed (garbage collected)"
    );
    let (_, drop) = find(&fake, "Port_Group", &naming::drop_group(OWNER)).expect("drop group");
    assert_eq!(uuids(&drop, "ports").len(), 1);
}

#[test]
fn port_status_follows_ovn_up() {
    let (w, fake, r) = rig();
    r.reconcile("northbound").expect("first pass");
    assert_eq!(w.svc.port(w.vm1.id).expect("port").status, PortStatus::Down);
    let (lsp, _) = find(&fake, "Logical_Switch_Port", &w.vm1.id.to_string()).expect("vm1 port");
    fake.tamper(
        "Logical_Switch_Port",
        lsp,
        "up",
        Value::Atom(Atom::Boolean(true)),
    );
    r.reconcile("northbound").expect("status pass");
    assert_eq!(
        w.svc.port(w.vm1.id).expect("port").status,
        PortStatus::Active
    );
    assert_eq!(w.svc.port(w.vm2.id).expect("port").status, PortStatus::Down);
}

#[test]
fn an_unreachable_database_fails_the_pass_and_changes_nothing() {
    let (w, fake, r) = rig();
    fake.set_unavailable(true);
    assert!(r.reconcile("northbound").is_err());
    assert!(r.observe().is_err());
    fake.set_unavailable(false);
    r.reconcile("northbound").expect("recovered");
    assert!(find(&fake, "Logical_Switch", &naming::switch(w.tenant.id)).is_some());
}

#[test]
fn the_plan_is_empty_exactly_when_ovn_matches() {
    let (w, fake, r) = rig();
    r.reconcile("northbound").expect("first pass");
    let model = w.svc.model().expect("model");
    let wanted = desired::northbound(&model, &settings());
    let view = fake.view().expect("view");
    let existing = plan::existing(|t| view.rows(t), OWNER);
    assert!(plan::plan(&wanted, &existing).0.is_empty());
    // A second site's agent sees none of these rows as its own.
    let other = plan::existing(|t| view.rows(t), "site-b");
    assert!(other.owned.is_empty());
}

#[test]
fn ipv6_subnets_get_router_advertisements_and_dhcpv6_as_their_mode_says() {
    use crate::network::model::Ipv6Mode;
    let w = world();
    let slaac = w
        .svc
        .create_subnet(NewSubnet {
            network_id: w.tenant.id,
            project_id: "p".into(),
            ip_version: 6,
            cidr: "fd00:1::/64".into(),
            ipv6_address_mode: Some(Ipv6Mode::Slaac),
            ipv6_ra_mode: Some(Ipv6Mode::Slaac),
            ..NewSubnet::default()
        })
        .expect("slaac subnet");
    let other = w
        .svc
        .create_network(NewNetwork {
            name: "v6".into(),
            project_id: "p".into(),
            ..NewNetwork::default()
        })
        .expect("net");
    let stateful = w
        .svc
        .create_subnet(NewSubnet {
            network_id: other.id,
            project_id: "p".into(),
            ip_version: 6,
            cidr: "fd00:2::/64".into(),
            ipv6_address_mode: Some(Ipv6Mode::Dhcpv6Stateful),
            ipv6_ra_mode: Some(Ipv6Mode::Dhcpv6Stateful),
            dns_nameservers: vec!["fd00::53".parse().expect("ip")],
            ..NewSubnet::default()
        })
        .expect("stateful subnet");
    w.svc
        .add_router_interface(w.router, InterfaceTarget::Subnet(slaac.id))
        .expect("v6 interface");
    let dual = w
        .svc
        .create_port(NewPort {
            network_id: w.tenant.id,
            project_id: "p".into(),
            ..NewPort::default()
        })
        .expect("dual-stack port");
    let v6only = w
        .svc
        .create_port(NewPort {
            network_id: other.id,
            project_id: "p".into(),
            ..NewPort::default()
        })
        .expect("v6 port");

    let d = desired::northbound(&w.svc.model().expect("model"), &settings());
    let dual_row = &d[&port_key(dual.id)].row;
    let slaac_ip = dual
        .fixed_ips
        .iter()
        .find(|f| f.ip_address.is_ipv6())
        .expect("SLAAC address")
        .ip_address;
    assert!(
        strings(dual_row, "addresses")
            .iter()
            .next()
            .expect("addresses")
            .ends_with(&slaac_ip.to_string())
    );
    assert!(
        uuids(dual_row, "dhcpv6_options").is_empty(),
        "SLAAC: no DHCPv6"
    );
    assert!(!d.contains_key(&format!("dhcp/{}", slaac.id)));
    let lrp = d
        .iter()
        .find(|(k, r)| {
            k.starts_with("lrp/") && map(&r.row, "ipv6_ra_configs").contains_key("address_mode")
        })
        .expect("v6 router port")
        .1;
    assert_eq!(map(&lrp.row, "ipv6_ra_configs")["address_mode"], "slaac");

    let v6_row = &d[&port_key(v6only.id)].row;
    assert_eq!(
        uuids(v6_row, "dhcpv6_options"),
        BTreeSet::from([placeholder(&format!("dhcp/{}", stateful.id))])
    );
    let options = map(&d[&format!("dhcp/{}", stateful.id)].row, "options");
    assert_eq!(options["dns_server"], "{fd00::53}");
    assert!(
        options["server_id"].starts_with("fa:16:3e:"),
        "DHCPv6 server id is a MAC"
    );
}
