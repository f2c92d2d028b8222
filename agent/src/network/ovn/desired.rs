//! The northbound rows the network model calls for: a pure function of the model, so what OVN should
//! hold is testable without OVN and the reconciler only has to diff.
//!
//! References between rows (a switch's ports, a port group's ACLs, a port's DHCP options) are written
//! as placeholder UUIDs derived from the referenced row's key; the planner swaps them for real UUIDs or
//! named UUIDs when it builds the transaction.

use super::acl;
use super::naming::{self, placeholder, tags};
use crate::network::model::{
    FixedIp, Ipv6Mode, Network, NetworkType, OWNER_FLOATING_IP, OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE, Port, Subnet,
};
use crate::network::service::NetworkModel;
use ovsdb::{Row, TypedRow, nb};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use uuid::Uuid;

/// Whose rows these are and where gateways live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvnSettings {
    /// Owner tag (the site id).
    pub owner: String,
    /// Chassis that hosts router gateway ports (this node's system-id).
    pub gateway_chassis: String,
}

/// One row OVN should hold.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredRow {
    /// Table.
    pub table: &'static str,
    /// Columns, references as placeholders.
    pub row: Row,
}

/// Every row OVN should hold, by key.
pub type Desired = BTreeMap<String, DesiredRow>;

fn put<T: TypedRow>(desired: &mut Desired, key: String, row: &T) {
    desired.insert(
        key,
        DesiredRow {
            table: T::TABLE,
            row: row.to_row(),
        },
    );
}

/// Key of a port's logical switch port.
pub fn port_key(port: Uuid) -> String {
    format!("port/{port}")
}

fn dhcp_key(subnet: Uuid) -> String {
    format!("dhcp/{subnet}")
}

/// A MAC for the DHCP server of a subnet: stable, unique per subnet, locally administered.
fn server_mac(subnet: Uuid) -> String {
    let b = subnet.as_bytes();
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b[13], b[14], b[15])
}

fn braces(items: impl IntoIterator<Item = String>) -> String {
    format!("{{{}}}", items.into_iter().collect::<Vec<_>>().join(", "))
}

/// The `"MAC IP IP"` string OVN uses for addresses and port security.
fn mac_and_ips(mac: &str, ips: &[FixedIp]) -> String {
    let mut s = mac.to_owned();
    for ip in ips {
        s.push(' ');
        s.push_str(&ip.ip_address.to_string());
    }
    s
}

fn dhcp_options(subnet: &Subnet, network: &Network, owner: &str) -> nb::DhcpOptions {
    let mut options = BTreeMap::new();
    let v4 = subnet.ip_version == 4;
    if v4 {
        let server = subnet.gateway_ip.unwrap_or_else(|| {
            crate::network::ipam::from_u128(
                crate::network::ipam::to_u128(subnet.cidr.network()) + 1,
                subnet.cidr.addr(),
            )
        });
        options.insert("server_id".into(), server.to_string());
        options.insert("server_mac".into(), server_mac(subnet.id));
        options.insert("lease_time".into(), "43200".into());
        options.insert("mtu".into(), network.mtu.to_string());
        if let Some(gw) = subnet.gateway_ip {
            options.insert("router".into(), gw.to_string());
        }
        if !subnet.host_routes.is_empty() {
            let mut routes: Vec<String> = subnet
                .host_routes
                .iter()
                .map(|r| format!("{},{}", r.destination, r.nexthop))
                .collect();
            if let Some(gw) = subnet.gateway_ip {
                routes.push(format!("0.0.0.0/0,{gw}"));
            }
            options.insert("classless_static_route".into(), braces(routes));
        }
    } else {
        options.insert("server_id".into(), server_mac(subnet.id));
        if subnet.ipv6_address_mode == Some(Ipv6Mode::Dhcpv6Stateless) {
            options.insert("dhcpv6_stateless".into(), "true".into());
        }
    }
    if !subnet.dns_nameservers.is_empty() {
        options.insert(
            "dns_server".into(),
            braces(subnet.dns_nameservers.iter().map(ToString::to_string)),
        );
    }
    nb::DhcpOptions {
        cidr: subnet.cidr.to_string(),
        options,
        external_ids: tags(
            owner,
            &dhcp_key(subnet.id),
            &[("subnet", subnet.id.to_string())],
        ),
    }
}

/// Whether OVN should answer DHCP for this subnet.
fn serves_dhcp(subnet: &Subnet) -> bool {
    subnet.enable_dhcp
        && (subnet.ip_version == 4
            || subnet
                .ipv6_address_mode
                .is_some_and(|m| m != Ipv6Mode::Slaac))
}

fn is_vif(port: &Port) -> bool {
    !port.device_owner.starts_with("network:")
}

/// The rows for `model`.
pub fn northbound(model: &NetworkModel, settings: &OvnSettings) -> Desired {
    let owner = settings.owner.as_str();
    let mut desired = Desired::new();
    let subnets: BTreeMap<Uuid, &Subnet> = model.subnets.iter().map(|s| (s.id, s)).collect();
    let networks: BTreeMap<Uuid, &Network> = model.networks.iter().map(|n| (n.id, n)).collect();

    for subnet in model.subnets.iter().filter(|s| serves_dhcp(s)) {
        if let Some(network) = networks.get(&subnet.network_id) {
            put(
                &mut desired,
                dhcp_key(subnet.id),
                &dhcp_options(subnet, network, owner),
            );
        }
    }

    let mut switch_ports: BTreeMap<Uuid, BTreeSet<Uuid>> = BTreeMap::new();
    for port in &model.ports {
        let Some(network_id) = port.network_id else {
            continue;
        };
        if port.device_owner == OWNER_FLOATING_IP {
            continue; // holds an address for NAT; nothing plugs into it
        }
        let key = port_key(port.id);
        let mut lsp = nb::LogicalSwitchPort {
            name: port.id.to_string(),
            enabled: Some(port.admin_state_up),
            external_ids: tags(
                owner,
                &key,
                &[
                    ("device_owner", port.device_owner.clone()),
                    ("device_id", port.device_id.clone()),
                    ("project", port.project_id.clone()),
                ],
            ),
            ..Default::default()
        };
        if port.device_owner == OWNER_ROUTER_INTERFACE || port.device_owner == OWNER_ROUTER_GATEWAY
        {
            lsp.kind = "router".into();
            lsp.addresses = BTreeSet::from(["router".to_owned()]);
            lsp.options
                .insert("router-port".into(), naming::router_port(port.id));
            if port.device_owner == OWNER_ROUTER_GATEWAY {
                lsp.options.insert("nat-addresses".into(), "router".into());
            }
        } else {
            lsp.addresses = BTreeSet::from([mac_and_ips(&port.mac, &port.fixed_ips)]);
            if port.port_security_enabled {
                let mut security = BTreeSet::from([mac_and_ips(&port.mac, &port.fixed_ips)]);
                for pair in &port.allowed_address_pairs {
                    security.insert(format!(
                        "{} {}",
                        pair.mac_address.as_deref().unwrap_or(&port.mac),
                        pair.ip_address
                    ));
                }
                lsp.port_security = security;
            }
            for fixed in &port.fixed_ips {
                let Some(subnet) = subnets.get(&fixed.subnet_id) else {
                    continue;
                };
                if !serves_dhcp(subnet) {
                    continue;
                }
                let options = Some(placeholder(&dhcp_key(subnet.id)));
                match fixed.ip_address {
                    IpAddr::V4(_) if lsp.dhcpv4_options.is_none() => lsp.dhcpv4_options = options,
                    IpAddr::V6(_) if lsp.dhcpv6_options.is_none() => lsp.dhcpv6_options = options,
                    _ => {}
                }
            }
        }
        put(&mut desired, key.clone(), &lsp);
        switch_ports
            .entry(network_id)
            .or_default()
            .insert(placeholder(&key));
    }

    for network in &model.networks {
        let mut ports = switch_ports.remove(&network.id).unwrap_or_default();
        if let (NetworkType::Flat | NetworkType::Vlan, Some(physnet)) =
            (network.network_type, &network.physical_network)
        {
            let key = format!("localnet/{}", network.id);
            let localnet = nb::LogicalSwitchPort {
                name: naming::localnet(network.id),
                kind: "localnet".into(),
                addresses: BTreeSet::from(["unknown".to_owned()]),
                options: BTreeMap::from([("network_name".to_owned(), physnet.clone())]),
                tag_request: network.segmentation_id.map(i64::from),
                external_ids: tags(owner, &key, &[]),
                ..Default::default()
            };
            put(&mut desired, key.clone(), &localnet);
            ports.insert(placeholder(&key));
        }
        let ls = nb::LogicalSwitch {
            name: naming::switch(network.id),
            ports,
            other_config: BTreeMap::from([("mcast_snoop".to_owned(), "true".to_owned())]),
            external_ids: tags(
                owner,
                &format!("network/{}", network.id),
                &[
                    ("network_name", network.name.clone()),
                    ("mtu", network.mtu.to_string()),
                ],
            ),
            ..Default::default()
        };
        put(&mut desired, format!("network/{}", network.id), &ls);
    }

    security_groups(model, owner, &mut desired);
    routers(model, settings, &subnets, &mut desired);
    desired
}

fn security_groups(model: &NetworkModel, owner: &str, desired: &mut Desired) {
    let mut members: BTreeMap<Uuid, BTreeSet<Uuid>> = BTreeMap::new();
    let mut protected = BTreeSet::new();
    for port in model
        .ports
        .iter()
        .filter(|p| p.network_id.is_some() && is_vif(p) && p.port_security_enabled)
    {
        protected.insert(placeholder(&port_key(port.id)));
        for group in &port.security_groups {
            members
                .entry(*group)
                .or_default()
                .insert(placeholder(&port_key(port.id)));
        }
    }
    for group in &model.security_groups {
        let pg_name = naming::port_group(group.id);
        let mut acls = BTreeSet::new();
        for rule in &group.rules {
            let key = format!("acl/{}", rule.id);
            let acl = nb::Acl {
                priority: acl::RULE_PRIORITY,
                direction: acl::direction(rule).into(),
                match_: acl::rule_match(rule, &pg_name),
                action: if group.stateful {
                    nb::acl_action::ALLOW_RELATED
                } else {
                    nb::acl_action::ALLOW_STATELESS
                }
                .into(),
                external_ids: tags(owner, &key, &[("security_group_rule", rule.id.to_string())]),
                ..Default::default()
            };
            put(desired, key.clone(), &acl);
            acls.insert(placeholder(&key));
        }
        let pg = nb::PortGroup {
            name: pg_name,
            ports: members.remove(&group.id).unwrap_or_default(),
            acls,
            external_ids: tags(
                owner,
                &format!("sg/{}", group.id),
                &[("security_group_name", group.name.clone())],
            ),
        };
        put(desired, format!("sg/{}", group.id), &pg);
    }
    let mut acls = BTreeSet::new();
    for (name, direction, priority, matches, action) in acl::baseline(&naming::drop_group(owner)) {
        let key = format!("acl-baseline/{name}");
        let acl = nb::Acl {
            priority,
            direction: direction.into(),
            match_: matches,
            action: action.into(),
            external_ids: tags(owner, &key, &[]),
            ..Default::default()
        };
        put(desired, key.clone(), &acl);
        acls.insert(placeholder(&key));
    }
    let pg = nb::PortGroup {
        name: naming::drop_group(owner),
        ports: protected,
        acls,
        external_ids: tags(owner, "pg-drop", &[]),
    };
    put(desired, "pg-drop".into(), &pg);
}

fn router_port_networks(port: &Port, subnets: &BTreeMap<Uuid, &Subnet>) -> BTreeSet<String> {
    port.fixed_ips
        .iter()
        .filter_map(|f| {
            subnets
                .get(&f.subnet_id)
                .map(|s| format!("{}/{}", f.ip_address, s.cidr.prefix_len()))
        })
        .collect()
}

fn routers(
    model: &NetworkModel,
    settings: &OvnSettings,
    subnets: &BTreeMap<Uuid, &Subnet>,
    desired: &mut Desired,
) {
    let owner = settings.owner.as_str();
    let ports: BTreeMap<Uuid, &Port> = model.ports.iter().map(|p| (p.id, p)).collect();
    for router in &model.routers {
        let mut lrps = BTreeSet::new();
        let mut nats = BTreeSet::new();
        let mut routes = BTreeSet::new();
        for interface in &router.interfaces {
            let Some(port) = ports.get(&interface.port_id) else {
                continue;
            };
            let key = format!("lrp/{}", port.id);
            if desired.contains_key(&key) {
                continue; // one LRP per port even if it holds addresses in several subnets
            }
            let mut lrp = nb::LogicalRouterPort {
                name: naming::router_port(port.id),
                mac: port.mac.clone(),
                networks: router_port_networks(port, subnets),
                enabled: Some(true),
                external_ids: tags(owner, &key, &[("router", router.id.to_string())]),
                ..Default::default()
            };
            if let Some(subnet) = subnets.get(&interface.subnet_id)
                && subnet.ip_version == 6
                && let Some(mode) = subnet.ipv6_ra_mode.or(subnet.ipv6_address_mode)
            {
                let mode = match mode {
                    Ipv6Mode::Slaac => "slaac",
                    Ipv6Mode::Dhcpv6Stateful => "dhcpv6_stateful",
                    Ipv6Mode::Dhcpv6Stateless => "dhcpv6_stateless",
                };
                lrp.ipv6_ra_configs = BTreeMap::from([
                    ("address_mode".to_owned(), mode.to_owned()),
                    ("send_periodic".to_owned(), "true".to_owned()),
                ]);
            }
            put(desired, key.clone(), &lrp);
            lrps.insert(placeholder(&key));
        }
        if let Some(gateway) = &router.external_gateway
            && let Some(port) = ports.get(&gateway.port_id)
        {
            let key = format!("lrp/{}", port.id);
            let chassis_key = format!("gateway-chassis/{}", port.id);
            let chassis = nb::GatewayChassis {
                name: format!(
                    "{}_{}",
                    naming::router_port(port.id),
                    settings.gateway_chassis
                ),
                chassis_name: settings.gateway_chassis.clone(),
                priority: 1,
                external_ids: tags(owner, &chassis_key, &[]),
                options: BTreeMap::new(),
            };
            put(desired, chassis_key.clone(), &chassis);
            let lrp = nb::LogicalRouterPort {
                name: naming::router_port(port.id),
                mac: port.mac.clone(),
                networks: router_port_networks(port, subnets),
                gateway_chassis: BTreeSet::from([placeholder(&chassis_key)]),
                enabled: Some(true),
                external_ids: tags(
                    owner,
                    &key,
                    &[
                        ("router", router.id.to_string()),
                        ("gateway", "true".into()),
                    ],
                ),
                ..Default::default()
            };
            put(desired, key.clone(), &lrp);
            lrps.insert(placeholder(&key));

            let gateway_v4 = gateway
                .external_fixed_ips
                .iter()
                .find(|f| f.ip_address.is_ipv4());
            if let Some(fixed) = gateway_v4
                && let Some(next_hop) = subnets.get(&fixed.subnet_id).and_then(|s| s.gateway_ip)
            {
                let key = format!("route/{}/default", router.id);
                let route = nb::LogicalRouterStaticRoute {
                    ip_prefix: "0.0.0.0/0".into(),
                    nexthop: next_hop.to_string(),
                    external_ids: tags(owner, &key, &[]),
                    ..Default::default()
                };
                put(desired, key.clone(), &route);
                routes.insert(placeholder(&key));
            }
            if gateway.enable_snat
                && let Some(external) = gateway_v4
            {
                for interface in &router.interfaces {
                    let Some(subnet) = subnets.get(&interface.subnet_id) else {
                        continue;
                    };
                    if subnet.ip_version != 4 {
                        continue;
                    }
                    let key = format!("snat/{}/{}", router.id, subnet.id);
                    let nat = nb::Nat {
                        kind: nb::nat_type::SNAT.into(),
                        external_ip: external.ip_address.to_string(),
                        logical_ip: subnet.cidr.to_string(),
                        external_ids: tags(owner, &key, &[]),
                        ..Default::default()
                    };
                    put(desired, key.clone(), &nat);
                    nats.insert(placeholder(&key));
                }
            }
        }
        for (index, extra) in router.routes.iter().enumerate() {
            let key = format!("route/{}/{index}", router.id);
            let route = nb::LogicalRouterStaticRoute {
                ip_prefix: extra.destination.to_string(),
                nexthop: extra.nexthop.to_string(),
                external_ids: tags(owner, &key, &[]),
                ..Default::default()
            };
            put(desired, key.clone(), &route);
            routes.insert(placeholder(&key));
        }
        for fip in model
            .floating_ips
            .iter()
            .filter(|f| f.router_id == Some(router.id))
        {
            let Some(fixed) = fip.fixed_ip_address else {
                continue;
            };
            let key = format!("fip/{}", fip.id);
            let nat = nb::Nat {
                kind: nb::nat_type::DNAT_AND_SNAT.into(),
                external_ip: fip.floating_ip_address.to_string(),
                logical_ip: fixed.to_string(),
                external_ids: tags(owner, &key, &[("floating_ip", fip.id.to_string())]),
                ..Default::default()
            };
            put(desired, key.clone(), &nat);
            nats.insert(placeholder(&key));
        }
        let lr = nb::LogicalRouter {
            name: naming::router(router.id),
            ports: lrps,
            static_routes: routes,
            nat: nats,
            enabled: Some(router.admin_state_up),
            external_ids: tags(
                owner,
                &format!("router/{}", router.id),
                &[("router_name", router.name.clone())],
            ),
            ..Default::default()
        };
        put(desired, format!("router/{}", router.id), &lr);
    }
}
