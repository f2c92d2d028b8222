//! OVN networking proven with packets: namespaces with veths on br-int stand in for VMs, an "external"
//! namespace sits on the provider network, and the agent programs OVN through its own OVSDB client.

use scs_edge_agent::compute::{NetworkRequest, NewFlavor, NewServer, ServerStatus};
use scs_edge_agent::image::NewImage;
use scs_edge_agent::image::format::DiskFormat;
use scs_edge_agent::network::NetworkService;
use scs_edge_agent::network::model::{NetworkType, Port};
use scs_edge_agent::network::service::{
    GatewayInfo, InterfaceTarget, NewFloatingIp, NewNetwork, NewPort, NewRouter, NewRule,
    NewSubnet, ProviderRequest,
};
use scs_edge_tests::guest::{self, marker};
use scs_edge_tests::site::{PHYSNET, Site};
use scs_edge_tests::wait;
use std::time::Duration;
use uuid::Uuid;

fn tenant(network: &NetworkService, project: &str, name: &str, cidr: &str) -> (Uuid, Uuid) {
    let net = network
        .create_network(NewNetwork {
            name: name.into(),
            project_id: project.into(),
            ..NewNetwork::default()
        })
        .expect("network");
    let subnet = network
        .create_subnet(NewSubnet {
            network_id: net.id,
            project_id: project.into(),
            ip_version: 4,
            cidr: cidr.into(),
            ..NewSubnet::default()
        })
        .expect("subnet");
    (net.id, subnet.id)
}

fn port(network: &NetworkService, project: &str, net: Uuid, groups: Option<Vec<Uuid>>) -> Port {
    network
        .create_port(NewPort {
            network_id: net,
            project_id: project.into(),
            security_groups: groups,
            ..NewPort::default()
        })
        .expect("port")
}

fn ip(port: &Port) -> String {
    port.fixed_ips[0].ip_address.to_string()
}

#[test]
fn dhcp_leases_and_pings_on_a_network_and_across_a_router() {
    let site = Site::start("l3", false);
    let n = &site.network;
    let (net_a, sub_a) = tenant(n, "p1", "a", "10.10.1.0/24");
    let (net_b, sub_b) = tenant(n, "p1", "b", "10.10.2.0/24");
    let router = n
        .create_router(NewRouter {
            name: "r".into(),
            project_id: "p1".into(),
            ..NewRouter::default()
        })
        .expect("router");
    n.add_router_interface(router.id, InterfaceTarget::Subnet(sub_a))
        .expect("interface a");
    n.add_router_interface(router.id, InterfaceTarget::Subnet(sub_b))
        .expect("interface b");
    let (a1, a2, b1) = (
        port(n, "p1", net_a, None),
        port(n, "p1", net_a, None),
        port(n, "p1", net_b, None),
    );

    let vm_a1 = site.vm("a1", a1.id);
    let vm_a2 = site.vm("a2", a2.id);
    let vm_b1 = site.vm("b1", b1.id);
    for (vm, port) in [(&vm_a1, &a1), (&vm_a2, &a2), (&vm_b1, &b1)] {
        assert_eq!(
            vm.dhcp(),
            Some(ip(port)),
            "OVN's DHCP hands out the address IPAM chose for {}",
            vm.name
        );
    }
    assert!(vm_a1.reaches(&ip(&a2), 10), "same network");
    assert!(vm_a1.reaches(&ip(&b1), 10), "across the router");
    assert!(vm_b1.reaches(&ip(&a2), 10), "and back");
}

#[test]
fn security_groups_block_let_through_and_projects_stay_apart() {
    let site = Site::start("sg", false);
    let n = &site.network;
    let (net, _) = tenant(n, "p1", "p1-net", "10.20.0.0/24");
    let web_group = n
        .create_security_group(None, "web", "", "p1")
        .expect("group");
    let web = port(n, "p1", net, Some(vec![web_group.id]));
    let client = port(n, "p1", net, None);
    let vm_web = site.vm("web", web.id);
    let vm_client = site.vm("cli", client.id);
    assert_eq!(vm_web.dhcp(), Some(ip(&web)));
    assert_eq!(vm_client.dhcp(), Some(ip(&client)));

    // `web` has only the default egress rules: nothing may come in.
    assert!(!vm_client.reaches(&ip(&web), 3), "no ingress rule: blocked");
    let rule = n
        .create_rule(NewRule {
            security_group_id: web_group.id,
            project_id: "p1".into(),
            direction: "ingress".into(),
            protocol: Some("icmp".into()),
            remote_ip_prefix: Some("10.20.0.0/24".into()),
            ..NewRule::default()
        })
        .expect("rule");
    assert!(
        vm_client.reaches(&ip(&web), 20),
        "the new rule lets ICMP through"
    );
    n.delete_rule(rule.id).expect("delete rule");
    wait::until("blocked again", Duration::from_secs(30), || {
        (!vm_client.reaches(&ip(&web), 1)).then_some(())
    });
    assert!(
        !vm_client.reaches(&ip(&web), 3),
        "removing the rule blocks again"
    );

    // Another project with the same prefix: its guests get their own leases and cannot reach p1.
    let (other_net, _) = tenant(n, "p2", "p2-net", "10.20.0.0/24");
    let other = port(n, "p2", other_net, None);
    let vm_other = site.vm("oth", other.id);
    assert_eq!(vm_other.dhcp(), Some(ip(&other)));
    assert_eq!(
        ip(&other),
        ip(&web),
        "overlapping address plans are independent"
    );
    assert!(!vm_other.reaches(&ip(&client), 3), "projects are isolated");
}

#[test]
fn snat_reaches_the_external_network_and_a_floating_ip_is_reachable_from_it() {
    let site = Site::start("nat", false);
    let n = &site.network;
    let public = n
        .create_network(NewNetwork {
            name: "public".into(),
            project_id: "admin".into(),
            external: true,
            provider: Some(ProviderRequest {
                network_type: NetworkType::Flat,
                physical_network: Some(PHYSNET.into()),
                segmentation_id: None,
            }),
            ..NewNetwork::default()
        })
        .expect("public");
    n.create_subnet(NewSubnet {
        network_id: public.id,
        project_id: "admin".into(),
        ip_version: 4,
        cidr: "203.0.113.0/24".into(),
        enable_dhcp: Some(false),
        ..NewSubnet::default()
    })
    .expect("public subnet");
    // The outside host is the upstream gateway 203.0.113.1 and has no route to tenant networks.
    site.external.address("203.0.113.1/24", None);

    let (net, subnet) = tenant(n, "p1", "inside", "10.30.0.0/24");
    let router = n
        .create_router(NewRouter {
            name: "edge".into(),
            project_id: "p1".into(),
            external_gateway: Some(GatewayInfo {
                network_id: public.id,
                enable_snat: true,
                ip_address: None,
            }),
            ..NewRouter::default()
        })
        .expect("router");
    n.add_router_interface(router.id, InterfaceTarget::Subnet(subnet))
        .expect("interface");
    let group = n.default_security_group("p1").expect("default group");
    n.create_rule(NewRule {
        security_group_id: group.id,
        project_id: "p1".into(),
        direction: "ingress".into(),
        protocol: Some("icmp".into()),
        ..NewRule::default()
    })
    .expect("allow ping in");
    let vm_port = port(n, "p1", net, None);
    let vm = site.vm("vm", vm_port.id);
    assert_eq!(vm.dhcp(), Some(ip(&vm_port)));

    assert!(
        vm.reaches("203.0.113.1", 30),
        "SNAT: the outside host answers a guest it has no route to"
    );

    let fip = n
        .create_floating_ip(NewFloatingIp {
            project_id: "p1".into(),
            floating_network_id: public.id,
            port_id: Some(vm_port.id),
            ..NewFloatingIp::default()
        })
        .expect("floating ip");
    let address = fip.floating_ip_address.to_string();
    assert!(
        site.external.reaches(&address, 30),
        "the floating IP {address} answers from outside"
    );
    n.update_floating_ip(fip.id, None, None)
        .expect("disassociate");
    wait::until("floating IP unreachable", Duration::from_secs(30), || {
        (!site.external.reaches(&address, 1)).then_some(())
    });
}

#[test]
fn drift_is_repaired_orphans_removed_and_a_northbound_restart_survived() {
    let site = Site::start("drift", false);
    let n = &site.network;
    let (net, _) = tenant(n, "p1", "keep", "10.40.0.0/24");
    let vm_port = port(n, "p1", net, None);
    let switch = format!("neutron-{net}");
    wait::until("switch created", Duration::from_secs(30), || {
        site.stack
            .nbctl(&["ls-list"])
            .contains(&switch)
            .then_some(())
    });

    site.stack.nbctl(&["ls-del", &switch]);
    wait::until("deleted switch restored", Duration::from_secs(30), || {
        site.stack
            .nbctl(&["ls-list"])
            .contains(&switch)
            .then_some(())
    });
    let port_name = vm_port.id.to_string();
    let wanted = format!("{} {}", vm_port.mac, ip(&vm_port));
    wait::until(
        "port restored with the switch",
        Duration::from_secs(30),
        || {
            site.stack
                .nbctl(&["lsp-get-addresses", &port_name])
                .contains(&wanted)
                .then_some(())
        },
    );
    site.stack.nbctl(&[
        "lsp-set-addresses",
        &port_name,
        "00:00:5e:00:53:01 10.40.0.99",
    ]);
    wait::until(
        "changed addresses restored",
        Duration::from_secs(30),
        || {
            site.stack
                .nbctl(&["lsp-get-addresses", &port_name])
                .contains(&wanted)
                .then_some(())
        },
    );

    let owner = format!("external_ids:scs-edge\\:owner={}", site.site_id);
    site.stack.nbctl(&[
        "ls-add",
        "rogue",
        "--",
        "set",
        "Logical_Switch",
        "rogue",
        &owner,
        "external_ids:scs-edge\\:key=network/rogue",
    ]);
    site.stack.nbctl(&["ls-add", "foreign"]);
    wait::until("orphan removed", Duration::from_secs(30), || {
        (!site.stack.nbctl(&["ls-list"]).contains("rogue")).then_some(())
    });
    assert!(
        site.stack.nbctl(&["ls-list"]).contains("foreign"),
        "rows without this site's tag are left alone"
    );

    site.stack.restart_northbound();
    let (after, _) = tenant(n, "p1", "after-restart", "10.41.0.0/24");
    let later = format!("neutron-{after}");
    wait::until("writes after the restart", Duration::from_mins(1), || {
        site.stack
            .nbctl(&["ls-list"])
            .contains(&later)
            .then_some(())
    });
    let vm = site.vm("vm", vm_port.id);
    assert_eq!(
        vm.dhcp(),
        Some(ip(&vm_port)),
        "DHCP works after the northbound database restarted"
    );
}

#[test]
fn a_libvirt_guest_gets_its_lease_from_ovn_and_answers_on_the_network() {
    // The switch runs in the root namespace here: libvirt creates the guest's tap there.
    let _root = scs_edge_tests::RunLock::acquire("ovn-root-namespace");
    let site = Site::start("guest", true);
    let n = &site.network;
    let (net, _) = tenant(n, "p1", "guests", "10.50.0.0/24");
    let image = site
        .images
        .import(
            NewImage {
                name: "busybox-guest".into(),
                disk_format: Some(DiskFormat::Raw),
                ..NewImage::default()
            },
            &mut std::fs::File::open(guest::image()).expect("guest image"),
        )
        .expect("import");
    site.compute
        .create_flavor(NewFlavor {
            id: Some("tiny".into()),
            name: "tiny".into(),
            description: None,
            vcpus: 1,
            ram_mb: 128,
            disk_gb: 1,
            ephemeral_gb: 0,
            swap_mb: 0,
            is_public: true,
            extra_specs: std::collections::BTreeMap::new(),
        })
        .expect("flavor");
    let server = site
        .compute
        .create_server(NewServer {
            name: "on-ovn".into(),
            project_id: "p1".into(),
            user_id: "u".into(),
            flavor_id: "tiny".into(),
            image_id: image.id,
            networks: vec![NetworkRequest::Network(net)],
            ..NewServer::default()
        })
        .expect("server");
    let nic = server.nics[0].port_id;
    let address = ip(&n.port(nic).expect("port"));
    wait::until("server ACTIVE", Duration::from_mins(2), || {
        (site.compute.server(server.id).ok()?.status == ServerStatus::Active).then_some(())
    });
    site.wait_port_up(nic);
    let console = site
        .state_dir()
        .join("servers")
        .join(server.id.to_string())
        .join("console.log");
    let text = wait::until(
        "the guest's DHCP lease on its console",
        Duration::from_mins(3),
        || {
            let text = guest::console_text(&console);
            text.contains(marker::READY).then_some(text)
        },
    );
    assert!(
        text.contains(&format!("SCS-GUEST-LEASE {address}")),
        "guest leased {address} from OVN:\n{text}"
    );

    let peer_port = port(n, "p1", net, None);
    let peer = site.vm("peer", peer_port.id);
    assert_eq!(peer.dhcp(), Some(ip(&peer_port)));
    assert!(
        peer.reaches(&address, 20),
        "the guest answers on the network"
    );

    site.compute.delete_server(server.id).expect("delete");
    wait::until("server gone", Duration::from_mins(2), || {
        site.compute.server(server.id).is_err().then_some(())
    });
    assert!(
        !site
            .stack
            .vsctl(&["list-ports", "br-int"])
            .contains(&format!("tap{}", &nic.to_string()[..11])),
        "VIF unplugged"
    );
    assert!(n.port(nic).is_err(), "the port made for the server is gone");
}
