//! The network domain over a real (temporary) SQLite store: validation, IPAM, and atomicity.

use super::*;
use crate::error_class::{Classify, ErrorClass};
use crate::reconcile::NoLoops;
use crate::system::clock::SystemClock;

struct Rig {
    _dir: tempfile::TempDir,
    svc: NetworkService,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(&dir.path().join("agent.db")).expect("store"));
    let svc = NetworkService::new(
        store,
        Arc::new(SystemClock),
        Arc::new(NoLoops),
        NetworkSettings::default(),
    );
    Rig { _dir: dir, svc }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

impl Rig {
    fn network(&self, name: &str) -> Network {
        self.svc
            .create_network(NewNetwork {
                name: name.into(),
                project_id: "p".into(),
                ..NewNetwork::default()
            })
            .expect("network")
    }

    fn external(&self) -> (Network, Subnet) {
        let net = self
            .svc
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
            .expect("external network");
        let subnet = self.subnet(net.id, "203.0.113.0/24");
        (net, subnet)
    }

    fn subnet(&self, network: Uuid, cidr: &str) -> Subnet {
        self.svc
            .create_subnet(NewSubnet {
                network_id: network,
                project_id: "p".into(),
                ip_version: 4,
                cidr: cidr.into(),
                ..NewSubnet::default()
            })
            .expect("subnet")
    }

    fn port(&self, network: Uuid) -> Result<Port, NetworkError> {
        self.svc.create_port(NewPort {
            network_id: network,
            project_id: "p".into(),
            ..NewPort::default()
        })
    }

    fn generation(&self) -> i64 {
        self.svc.model().expect("model").generation
    }
}

#[test]
fn subnet_defaults_follow_neutron() {
    let r = rig();
    let net = r.network("n");
    assert_eq!(net.mtu, 1442, "overlay MTU leaves room for Geneve");
    let subnet = r.subnet(net.id, "10.0.0.0/24");
    assert_eq!(subnet.gateway_ip, Some(ip("10.0.0.1")));
    assert_eq!(
        subnet.allocation_pools,
        vec![AllocationPool {
            start: ip("10.0.0.2"),
            end: ip("10.0.0.254")
        }]
    );
    assert!(subnet.enable_dhcp);
    assert_eq!(
        r.svc.network(net.id).expect("network").subnets,
        vec![subnet.id]
    );
}

#[test]
fn malformed_and_overlapping_subnets_are_refused_and_change_nothing() {
    let r = rig();
    let net = r.network("n");
    r.subnet(net.id, "10.0.0.0/16");
    let before = r.generation();
    for (cidr, version, needle) in [
        ("10.0.5.0/24", 4, "overlaps with another subnet"),
        ("10.1.0.5/24", 4, "is recommended"),
        ("fd00::/64", 4, "does not match ip_version"),
        ("not-a-cidr", 4, "not a valid IP subnet"),
    ] {
        let err = r
            .svc
            .create_subnet(NewSubnet {
                network_id: net.id,
                project_id: "p".into(),
                ip_version: version,
                cidr: cidr.into(),
                ..NewSubnet::default()
            })
            .expect_err(cidr);
        assert_eq!(err.class(), ErrorClass::BadRequest, "{cidr}");
        assert!(err.to_string().contains(needle), "{cidr}: {err}");
    }
    let err = r
        .svc
        .create_subnet(NewSubnet {
            network_id: net.id,
            project_id: "p".into(),
            ip_version: 4,
            cidr: "192.168.0.0/24".into(),
            gateway: GatewayRequest::Address(ip("192.168.1.1")),
            ..NewSubnet::default()
        })
        .expect_err("gateway outside");
    assert!(err.to_string().contains("not in subnet"), "{err}");
    assert_eq!(r.svc.subnets().expect("subnets").len(), 1);
    assert_eq!(
        r.generation(),
        before,
        "refused requests do not bump the generation"
    );
    // The same prefix on another network is fine (tenant networks may overlap).
    r.subnet(r.network("m").id, "10.0.5.0/24");
}

#[test]
fn ports_get_the_lowest_free_address_and_explicit_addresses_are_checked() {
    let r = rig();
    let net = r.network("n");
    let subnet = r.subnet(net.id, "10.0.0.0/29"); // usable .1-.6, gateway .1, pool .2-.6
    let first = r.port(net.id).expect("port");
    assert_eq!(
        first.fixed_ips,
        vec![FixedIp {
            subnet_id: subnet.id,
            ip_address: ip("10.0.0.2")
        }]
    );
    assert!(first.mac.starts_with("fa:16:3e:"));
    let explicit = |addr: &str| {
        r.svc.create_port(NewPort {
            network_id: net.id,
            project_id: "p".into(),
            fixed_ips: Some(vec![FixedIpRequest {
                subnet_id: None,
                ip_address: Some(ip(addr)),
            }]),
            ..NewPort::default()
        })
    };
    assert!(matches!(
        explicit("10.0.0.2"),
        Err(NetworkError::IpAddressInUse { .. })
    ));
    assert!(
        matches!(
            explicit("10.0.0.1"),
            Err(NetworkError::IpAddressInUse { .. })
        ),
        "the gateway is the router's"
    );
    assert_eq!(
        explicit("10.0.0.9").expect_err("outside").class(),
        ErrorClass::BadRequest
    );
    assert_eq!(
        explicit("10.0.0.7").expect_err("broadcast").class(),
        ErrorClass::BadRequest
    );
    assert_eq!(
        explicit("10.0.0.5").expect("explicit").fixed_ips[0].ip_address,
        ip("10.0.0.5")
    );
    assert_eq!(
        r.port(net.id).expect("next").fixed_ips[0].ip_address,
        ip("10.0.0.3")
    );
}

#[test]
fn an_exhausted_pool_refuses_the_port_and_leaves_no_trace() {
    let r = rig();
    let net = r.network("n");
    r.subnet(net.id, "10.0.0.0/30"); // usable .1-.2: gateway .1, pool .2
    r.port(net.id).expect("the one address");
    let before = r.svc.ports().expect("ports").len();
    let err = r.port(net.id).expect_err("exhausted");
    assert!(matches!(err, NetworkError::IpAddressGenerationFailure(_)));
    assert_eq!(err.class(), ErrorClass::Conflict);
    assert_eq!(err.neutron_type(), "IpAddressGenerationFailure");
    assert_eq!(r.svc.ports().expect("ports").len(), before);
}

#[test]
fn a_network_with_ports_cannot_be_deleted_and_a_subnet_with_addresses_neither() {
    let r = rig();
    let net = r.network("n");
    let subnet = r.subnet(net.id, "10.0.0.0/24");
    let port = r.port(net.id).expect("port");
    assert!(matches!(
        r.svc.delete_network(net.id),
        Err(NetworkError::NetworkInUse { ports: 1, .. })
    ));
    assert!(matches!(
        r.svc.delete_subnet(subnet.id),
        Err(NetworkError::SubnetInUse(_))
    ));
    assert!(r.svc.network(net.id).is_ok() && r.svc.subnet(subnet.id).is_ok());
    r.svc.delete_port(port.id).expect("delete port");
    r.svc.delete_network(net.id).expect("now free");
    assert!(
        matches!(
            r.svc.subnet(subnet.id),
            Err(NetworkError::SubnetNotFound(_))
        ),
        "subnets go with the network"
    );
}

#[test]
fn the_default_security_group_has_neutrons_rules_and_is_made_once() {
    let r = rig();
    let net = r.network("n");
    r.subnet(net.id, "10.0.0.0/24");
    let port = r.port(net.id).expect("port");
    let group = r.svc.default_security_group("p").expect("default");
    assert_eq!(port.security_groups, vec![group.id]);
    let mut shapes: Vec<(Direction, EtherType, Option<Uuid>)> = group
        .rules
        .iter()
        .map(|r| (r.direction, r.ethertype, r.remote_group_id))
        .collect();
    shapes.sort();
    assert_eq!(
        shapes,
        vec![
            (Direction::Ingress, EtherType::IPv4, Some(group.id)),
            (Direction::Ingress, EtherType::IPv6, Some(group.id)),
            (Direction::Egress, EtherType::IPv4, None),
            (Direction::Egress, EtherType::IPv6, None),
        ]
    );
    r.port(net.id).expect("second port");
    assert_eq!(
        r.svc
            .security_groups()
            .expect("groups")
            .iter()
            .filter(|g| g.name == "default")
            .count(),
        1
    );
    assert!(matches!(
        r.svc.delete_security_group(group.id),
        Err(NetworkError::SecurityGroupInUse(_))
    ));
}

#[test]
fn impossible_rules_are_refused_and_duplicates_conflict() {
    let r = rig();
    let group = r
        .svc
        .create_security_group(None, "web", "", "p")
        .expect("group");
    let rule = |protocol: Option<&str>,
                min: Option<i64>,
                max: Option<i64>,
                prefix: Option<&str>,
                ethertype: Option<&str>| NewRule {
        security_group_id: group.id,
        project_id: "p".into(),
        direction: "ingress".into(),
        ethertype: ethertype.map(str::to_owned),
        protocol: protocol.map(str::to_owned),
        port_range_min: min,
        port_range_max: max,
        remote_ip_prefix: prefix.map(str::to_owned),
        ..NewRule::default()
    };
    for (bad, needle) in [
        (
            rule(Some("tcp"), Some(80), Some(22), None, None),
            "port_range_min must be <= port_range_max",
        ),
        (
            rule(Some("tcp"), Some(0), Some(22), None, None),
            "ports must be 1-65535",
        ),
        (
            rule(Some("udp"), Some(1), Some(70000), None, None),
            "ports must be 1-65535",
        ),
        (
            rule(Some("tcp"), Some(22), None, None, None),
            "given together",
        ),
        (
            rule(None, Some(22), Some(22), None, None),
            "Must also specify protocol",
        ),
        (rule(Some("icmp"), Some(300), None, None, None), "ICMP type"),
        (
            rule(Some("icmp"), None, Some(0), None, None),
            "type (port_range_min) is missing",
        ),
        (
            rule(Some("gre-but-wrong"), None, None, None, None),
            "not supported",
        ),
        (
            rule(Some("tcp"), None, None, Some("fd00::/64"), None),
            "Conflicting value ethertype",
        ),
        (
            rule(Some("icmpv6"), None, None, None, Some("IPv4")),
            "icmpv6 needs ethertype IPv6",
        ),
    ] {
        let err = r.svc.create_rule(bad.clone()).expect_err(needle);
        assert_eq!(err.class(), ErrorClass::BadRequest, "{bad:?}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    let ok = r
        .svc
        .create_rule(rule(
            Some("tcp"),
            Some(22),
            Some(22),
            Some("10.0.0.0/8"),
            None,
        ))
        .expect("valid");
    assert_eq!(ok.protocol, Some(Protocol::Tcp));
    match r.svc.create_rule(rule(
        Some("6"),
        Some(22),
        Some(22),
        Some("10.0.0.0/8"),
        None,
    )) {
        Err(NetworkError::SecurityGroupRuleExists(id)) => {
            assert_eq!(id, ok.id, "protocol 6 is tcp: the same rule");
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
    // Two default egress rules plus the one added.
    assert_eq!(
        r.svc.security_group(group.id).expect("group").rules.len(),
        3
    );
}

#[test]
fn router_interfaces_with_overlapping_cidrs_are_refused() {
    let r = rig();
    let a = r.network("a");
    let b = r.network("b");
    let sa = r.subnet(a.id, "10.0.0.0/24");
    let sb = r.subnet(b.id, "10.0.0.128/25");
    let router = r
        .svc
        .create_router(NewRouter {
            name: "r".into(),
            project_id: "p".into(),
            ..NewRouter::default()
        })
        .expect("router");
    let (port, subnet) = r
        .svc
        .add_router_interface(router.id, InterfaceTarget::Subnet(sa.id))
        .expect("first interface");
    assert_eq!(subnet, sa.id);
    assert_eq!(
        r.svc.port(port).expect("interface port").fixed_ips[0].ip_address,
        ip("10.0.0.1"),
        "the interface holds the gateway"
    );
    let err = r
        .svc
        .add_router_interface(router.id, InterfaceTarget::Subnet(sb.id))
        .expect_err("overlap");
    assert!(
        matches!(err, NetworkError::BadRouterRequest(ref m) if m.contains("overlaps")),
        "{err}"
    );
    let err = r
        .svc
        .add_router_interface(router.id, InterfaceTarget::Subnet(sa.id))
        .expect_err("twice");
    assert_eq!(err.class(), ErrorClass::BadRequest);
    assert_eq!(r.svc.router(router.id).expect("router").interfaces.len(), 1);
    assert!(
        matches!(r.svc.delete_port(port), Err(NetworkError::PortInUse { .. })),
        "interface ports are removed through the router"
    );
    assert!(matches!(
        r.svc.delete_router(router.id),
        Err(NetworkError::RouterInUse { .. })
    ));
    r.svc
        .remove_router_interface(router.id, InterfaceTarget::Subnet(sa.id))
        .expect("remove");
    r.svc.delete_router(router.id).expect("delete");
}

#[test]
fn gateways_need_external_networks_and_floating_ips_need_a_router_path() {
    let r = rig();
    let (public, public_subnet) = r.external();
    let tenant = r.network("tenant");
    let tsub = r.subnet(tenant.id, "10.0.0.0/24");
    let err = r
        .svc
        .create_router(NewRouter {
            name: "r".into(),
            project_id: "p".into(),
            external_gateway: Some(GatewayInfo {
                network_id: tenant.id,
                enable_snat: true,
                ip_address: None,
            }),
            ..NewRouter::default()
        })
        .expect_err("tenant network as gateway");
    assert!(
        err.to_string().contains("not a valid external network"),
        "{err}"
    );
    assert!(
        r.svc.routers().expect("routers").is_empty(),
        "nothing half-created"
    );

    let vm = r.port(tenant.id).expect("vm port");
    let err = r
        .svc
        .create_floating_ip(NewFloatingIp {
            project_id: "p".into(),
            floating_network_id: public.id,
            port_id: Some(vm.id),
            ..NewFloatingIp::default()
        })
        .expect_err("no router yet");
    assert!(
        matches!(err, NetworkError::ExternalGatewayNotFound { .. }),
        "{err}"
    );
    assert!(r.svc.floating_ips().expect("fips").is_empty());

    let router = r
        .svc
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
    let gateway = router.external_gateway.expect("gateway");
    assert_eq!(gateway.external_fixed_ips[0].subnet_id, public_subnet.id);
    r.svc
        .add_router_interface(router.id, InterfaceTarget::Subnet(tsub.id))
        .expect("interface");
    let fip = r
        .svc
        .create_floating_ip(NewFloatingIp {
            project_id: "p".into(),
            floating_network_id: public.id,
            port_id: Some(vm.id),
            ..NewFloatingIp::default()
        })
        .expect("floating ip");
    assert_eq!(fip.router_id, Some(router.id));
    assert_eq!(fip.fixed_ip_address, Some(vm.fixed_ips[0].ip_address));
    assert!(public_subnet.cidr.contains(&fip.floating_ip_address));
    assert_eq!(fip.status(), "ACTIVE");
    assert!(matches!(
        r.svc
            .remove_router_interface(router.id, InterfaceTarget::Subnet(tsub.id)),
        Err(NetworkError::RouterInUse { .. })
    ));
    assert!(matches!(
        r.svc.set_router_gateway(router.id, None),
        Err(NetworkError::RouterInUse { .. })
    ));
    let second = r
        .svc
        .create_floating_ip(NewFloatingIp {
            project_id: "p".into(),
            floating_network_id: public.id,
            port_id: Some(vm.id),
            ..NewFloatingIp::default()
        })
        .expect_err("same fixed ip twice");
    assert!(matches!(
        second,
        NetworkError::FloatingIpPortAlreadyAssociated { .. }
    ));
    let fip = r
        .svc
        .update_floating_ip(fip.id, None, None)
        .expect("disassociate");
    assert_eq!(fip.status(), "DOWN");
    r.svc.delete_floating_ip(fip.id).expect("release");
}

#[test]
fn provider_segments_are_checked_and_unique() {
    let r = rig();
    let flat = |physnet: &str| NewNetwork {
        name: "f".into(),
        project_id: "admin".into(),
        provider: Some(ProviderRequest {
            network_type: NetworkType::Flat,
            physical_network: Some(physnet.into()),
            segmentation_id: None,
        }),
        ..NewNetwork::default()
    };
    assert!(
        r.svc
            .create_network(flat("nope"))
            .expect_err("unknown physnet")
            .to_string()
            .contains("not configured")
    );
    let first = r.svc.create_network(flat("physnet1")).expect("flat");
    assert_eq!(first.mtu, 1500);
    assert!(matches!(
        r.svc.create_network(flat("physnet1")),
        Err(NetworkError::SegmentInUse(_))
    ));
    let vlan = |id: Option<u16>| NewNetwork {
        name: "v".into(),
        project_id: "admin".into(),
        provider: Some(ProviderRequest {
            network_type: NetworkType::Vlan,
            physical_network: Some("physnet1".into()),
            segmentation_id: id,
        }),
        ..NewNetwork::default()
    };
    assert!(r.svc.create_network(vlan(None)).is_err());
    assert!(r.svc.create_network(vlan(Some(5000))).is_err());
    r.svc.create_network(vlan(Some(100))).expect("vlan 100");
    assert!(matches!(
        r.svc.create_network(vlan(Some(100))),
        Err(NetworkError::SegmentInUse(_))
    ));
    let err = r.svc.create_network(NewNetwork {
        name: "x".into(),
        project_id: "p".into(),
        external: true,
        ..NewNetwork::default()
    });
    assert!(
        err.is_err(),
        "external overlay networks cannot reach anything"
    );
}

#[test]
fn every_accepted_write_bumps_the_generation_once() {
    let r = rig();
    let g0 = r.generation();
    let net = r.network("n");
    assert_eq!(r.generation(), g0 + 1);
    r.subnet(net.id, "10.0.0.0/24");
    assert_eq!(r.generation(), g0 + 2);
    assert!(r.svc.delete_network(Uuid::new_v4()).is_err());
    assert_eq!(r.generation(), g0 + 2);
}

#[test]
fn slaac_addresses_follow_eui_64() {
    assert_eq!(
        slaac_address(
            "2001:db8:1:2::/64".parse().expect("net"),
            "fa:16:3e:12:34:56"
        ),
        Some(ip("2001:db8:1:2:f816:3eff:fe12:3456"))
    );
    assert_eq!(
        slaac_address("2001:db8::/56".parse().expect("net"), "fa:16:3e:12:34:56"),
        None
    );
}

#[test]
fn macs_are_validated_and_unique() {
    let r = rig();
    let net = r.network("n");
    let port = |mac: &str| {
        r.svc.create_port(NewPort {
            network_id: net.id,
            project_id: "p".into(),
            mac: Some(mac.into()),
            fixed_ips: Some(Vec::new()),
            ..NewPort::default()
        })
    };
    assert_eq!(
        port("FA-16-3E-00-00-01").expect("ok").mac,
        "fa:16:3e:00:00:01"
    );
    assert!(matches!(
        port("fa:16:3e:00:00:01"),
        Err(NetworkError::MacAddressInUse { .. })
    ));
    assert_eq!(
        port("01:00:5e:00:00:01").expect_err("multicast").class(),
        ErrorClass::BadRequest
    );
    assert_eq!(
        port("nonsense").expect_err("garbage").class(),
        ErrorClass::BadRequest
    );
}

#[test]
fn updates_are_checked_and_refusals_change_nothing() {
    let r = rig();
    let (public, _) = r.external();
    let shared = r
        .svc
        .create_network(NewNetwork {
            name: "shared".into(),
            project_id: "owner".into(),
            shared: true,
            ..NewNetwork::default()
        })
        .expect("shared network");
    r.subnet(shared.id, "10.5.0.0/24");
    r.port(shared.id).expect("another project's port");
    let err = r
        .svc
        .update_network(
            shared.id,
            NetworkUpdate {
                name: Some("renamed".into()),
                shared: Some(false),
                ..NetworkUpdate::default()
            },
        )
        .expect_err("other projects use it");
    assert!(
        matches!(err, NetworkError::InvalidSharedSetting(_)),
        "{err}"
    );
    assert_eq!(r.svc.network(shared.id).expect("net").name, "shared");

    let tenant = r.network("tenant");
    let tsub = r.subnet(tenant.id, "10.0.0.0/24");
    let router = r
        .svc
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
    let err = r
        .svc
        .update_network(
            public.id,
            NetworkUpdate {
                external: Some(false),
                ..NetworkUpdate::default()
            },
        )
        .expect_err("a router uses it");
    assert!(
        matches!(err, NetworkError::ExternalNetworkInUse(_)),
        "{err}"
    );
    let before = router.external_gateway.clone().expect("gateway");

    // SNAT alone changes in place: the gateway keeps its port and address.
    let after = r
        .svc
        .update_router(
            router.id,
            RouterUpdate {
                external_gateway: Some(Some(GatewayInfo {
                    network_id: public.id,
                    enable_snat: false,
                    ip_address: None,
                })),
                ..RouterUpdate::default()
            },
        )
        .expect("snat off");
    let gateway = after.external_gateway.expect("gateway");
    assert!(!gateway.enable_snat);
    assert_eq!(gateway.port_id, before.port_id);
    assert_eq!(gateway.external_fixed_ips, before.external_fixed_ips);

    // Routes need a connected next hop; a refused update leaves the name alone too.
    r.svc
        .add_router_interface(router.id, InterfaceTarget::Subnet(tsub.id))
        .expect("interface");
    let err = r
        .svc
        .update_router(
            router.id,
            RouterUpdate {
                name: Some("x".into()),
                routes: Some(vec![Route {
                    destination: "192.168.0.0/16".parse().expect("net"),
                    nexthop: ip("172.16.0.1"),
                }]),
                ..RouterUpdate::default()
            },
        )
        .expect_err("unconnected next hop");
    assert_eq!(err.class(), ErrorClass::BadRequest);
    assert_eq!(r.svc.router(router.id).expect("router").name, "r");

    // A description change keeps a floating IP's association.
    let vm = r.port(tenant.id).expect("vm port");
    let fip = r
        .svc
        .create_floating_ip(NewFloatingIp {
            project_id: "p".into(),
            floating_network_id: public.id,
            port_id: Some(vm.id),
            ..NewFloatingIp::default()
        })
        .expect("fip");
    let fip = r
        .svc
        .change_floating_ip(
            fip.id,
            FloatingIpUpdate {
                description: Some("web".into()),
                ..FloatingIpUpdate::default()
            },
        )
        .expect("describe");
    assert_eq!(fip.port_id, Some(vm.id));
    assert_eq!(r.svc.floating_ip(fip.id).expect("fip").description, "web");

    // Port security off is refused while the port still has groups.
    let err = r
        .svc
        .update_port(
            vm.id,
            PortUpdate {
                port_security_enabled: Some(false),
                ..PortUpdate::default()
            },
        )
        .expect_err("groups remain");
    assert_eq!(err.class(), ErrorClass::BadRequest);
    assert!(r.svc.port(vm.id).expect("port").port_security_enabled);
}

#[test]
fn templates_decide_the_rules_of_new_groups_only() {
    let r = rig();
    let seeded = r.svc.default_rules().expect("templates");
    assert_eq!(seeded.len(), 4);
    let existing = r.svc.default_security_group("p").expect("default group");
    let generation = r.generation();
    let template = r
        .svc
        .create_default_rule(NewDefaultRule {
            direction: "ingress".into(),
            protocol: Some("icmp".into()),
            remote_ip_prefix: Some("0.0.0.0/0".into()),
            used_in_default_sg: Some(true),
            used_in_non_default_sg: Some(true),
            ..NewDefaultRule::default()
        })
        .expect("template");
    assert_eq!(r.generation(), generation, "templates are not OVN state");
    let err = r
        .svc
        .create_default_rule(NewDefaultRule {
            direction: "ingress".into(),
            protocol: Some("1".into()),
            remote_ip_prefix: Some("0.0.0.0/0".into()),
            ..NewDefaultRule::default()
        })
        .expect_err("duplicate");
    assert!(
        matches!(err, NetworkError::DefaultSecurityGroupRuleExists(id) if id == template.id),
        "{err}"
    );
    let err = r
        .svc
        .create_default_rule(NewDefaultRule {
            direction: "ingress".into(),
            remote_group_id: Some("SIBLING".into()),
            ..NewDefaultRule::default()
        })
        .expect_err("bad remote group");
    assert_eq!(err.class(), ErrorClass::BadRequest);

    let fresh = r
        .svc
        .default_security_group("q")
        .expect("new default group");
    assert_eq!(fresh.rules.len(), 5);
    assert!(
        fresh
            .rules
            .iter()
            .any(|rule| rule.protocol == Some(Protocol::Icmp))
    );
    assert!(
        fresh
            .rules
            .iter()
            .filter(|rule| rule.direction == Direction::Ingress && rule.protocol.is_none())
            .all(|rule| rule.remote_group_id == Some(fresh.id))
    );
    let custom = r
        .svc
        .create_security_group(None, "web", "", "q")
        .expect("custom group");
    assert_eq!(custom.rules.len(), 3, "egress v4, v6 and the icmp template");
    assert_eq!(
        r.svc.security_group(existing.id).expect("old group").rules,
        existing.rules
    );

    r.svc.delete_default_rule(template.id).expect("delete");
    let err = r.svc.default_rule(template.id).expect_err("gone");
    assert_eq!(err.class(), ErrorClass::NotFound);
}
