//! Updates (Neutron's `PUT`) of networks, subnets, ports, routers, security groups and floating IPs.
//! Each is one transaction: every check and the write see the same state, and a refused update
//! changes nothing.

use super::{
    GatewayInfo, NetworkService, OWNER_FLOATING_IP, OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE,
    associate, check_dhcp_options, check_name, invalid, replace_gateway,
};
use crate::network::NetworkError;
use crate::network::model::{
    AddressPair, FloatingIp, Network, NetworkType, Port, Route, Router, SecurityGroup, Subnet,
};
use crate::network::repo;
use std::net::IpAddr;
use uuid::Uuid;

/// Neutron's `max_routes`: static routes a router may have.
const MAX_ROUTES: usize = 30;

/// A change to a network; `None` keeps the current value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkUpdate {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Administratively up.
    pub admin_state_up: Option<bool>,
    /// Shared with every project.
    pub shared: Option<bool>,
    /// `router:external`.
    pub external: Option<bool>,
    /// Default port security of new ports.
    pub port_security_enabled: Option<bool>,
}

/// A change to a subnet; `None` keeps the current value. Addressing (CIDR, gateway, pools) is fixed
/// once addresses may have been handed out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetUpdate {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// DNS servers.
    pub dns_nameservers: Option<Vec<IpAddr>>,
    /// Host routes.
    pub host_routes: Option<Vec<Route>>,
    /// DHCP.
    pub enable_dhcp: Option<bool>,
}

/// A change to a port; `None` keeps the current value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortUpdate {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Administratively up.
    pub admin_state_up: Option<bool>,
    /// Anti-spoofing and security groups.
    pub port_security_enabled: Option<bool>,
    /// Security groups (replacing the current ones).
    pub security_groups: Option<Vec<Uuid>>,
    /// Extra allowed addresses (replacing the current ones).
    pub allowed_address_pairs: Option<Vec<AddressPair>>,
    /// Owner kind; `network:` owners are reserved to routers and floating IPs.
    pub device_owner: Option<String>,
    /// Owner id.
    pub device_id: Option<String>,
}

/// A change to a router; `None` keeps the current value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouterUpdate {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Administratively up.
    pub admin_state_up: Option<bool>,
    /// The gateway: `Some(None)` clears it.
    pub external_gateway: Option<Option<GatewayInfo>>,
    /// Static routes (replacing the current ones); next hops must be on a connected subnet.
    pub routes: Option<Vec<Route>>,
}

/// A change to a floating IP; `None` keeps the current value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FloatingIpUpdate {
    /// The association: `Some(None)` dissociates, `Some(Some(port))` (re)associates.
    pub port: Option<Option<Uuid>>,
    /// Which of the port's addresses, when associating.
    pub fixed_ip_address: Option<IpAddr>,
    /// Description.
    pub description: Option<String>,
}

fn is_reserved_owner(owner: &str) -> bool {
    [
        OWNER_ROUTER_INTERFACE,
        OWNER_ROUTER_GATEWAY,
        OWNER_FLOATING_IP,
    ]
    .contains(&owner)
}

impl NetworkService {
    /// Updates a network. Sharing is not withdrawn while other projects have ports on it, nor
    /// `router:external` while routers or floating IPs use it.
    pub fn update_network(&self, id: Uuid, update: NetworkUpdate) -> Result<Network, NetworkError> {
        if let Some(name) = &update.name {
            check_name("name", name)?;
        }
        if let Some(description) = &update.description {
            check_name("description", description)?;
        }
        self.write(|tx, now| {
            let mut network = repo::network(tx, id)?.ok_or(NetworkError::NetworkNotFound(id))?;
            if let Some(external) = update.external {
                if external && network.network_type == NetworkType::Geneve {
                    return Err(invalid(
                        "an external network must be a flat or vlan provider network",
                    ));
                }
                if !external && network.external && repo::external_users(tx, id)? > 0 {
                    return Err(NetworkError::ExternalNetworkInUse(id));
                }
                network.external = external;
            }
            if let Some(shared) = update.shared {
                if !shared
                    && network.shared
                    && repo::foreign_ports_on_network(tx, id, &network.project_id)? > 0
                {
                    return Err(NetworkError::InvalidSharedSetting(id));
                }
                network.shared = shared;
            }
            if let Some(name) = update.name {
                network.name = name;
            }
            if let Some(description) = update.description {
                network.description = description;
            }
            if let Some(up) = update.admin_state_up {
                network.admin_state_up = up;
            }
            if let Some(security) = update.port_security_enabled {
                network.port_security_enabled = security;
            }
            network.updated_at = now;
            repo::update_network(tx, &network)?;
            Ok(network)
        })
    }

    /// Updates a subnet's name, description and DHCP options.
    pub fn update_subnet(&self, id: Uuid, update: SubnetUpdate) -> Result<Subnet, NetworkError> {
        if let Some(name) = &update.name {
            check_name("name", name)?;
        }
        if let Some(description) = &update.description {
            check_name("description", description)?;
        }
        self.write(|tx, now| {
            let mut subnet = repo::subnet(tx, id)?.ok_or(NetworkError::SubnetNotFound(id))?;
            if let Some(dns) = update.dns_nameservers {
                subnet.dns_nameservers = dns;
            }
            if let Some(routes) = update.host_routes {
                subnet.host_routes = routes;
            }
            check_dhcp_options(subnet.cidr, &subnet.dns_nameservers, &subnet.host_routes)?;
            if let Some(name) = update.name {
                subnet.name = name;
            }
            if let Some(description) = update.description {
                subnet.description = description;
            }
            if let Some(dhcp) = update.enable_dhcp {
                subnet.enable_dhcp = dhcp;
            }
            subnet.updated_at = now;
            repo::update_subnet(tx, &subnet)?;
            Ok(subnet)
        })
    }

    /// Updates a port. Groups and address pairs need port security; the owner of ports that routers,
    /// floating IPs or servers manage is theirs to change.
    pub fn update_port(&self, id: Uuid, update: PortUpdate) -> Result<Port, NetworkError> {
        if let Some(name) = &update.name {
            check_name("name", name)?;
        }
        if let Some(description) = &update.description {
            check_name("description", description)?;
        }
        for field in [&update.device_owner, &update.device_id]
            .into_iter()
            .flatten()
        {
            check_name("device_owner/device_id", field)?;
        }
        if update
            .device_owner
            .as_deref()
            .is_some_and(is_reserved_owner)
        {
            return Err(invalid(
                "router and floating IP ports are made through the router and floating IP APIs",
            ));
        }
        self.write(|tx, now| {
            let mut port = repo::port(tx, id)?.ok_or(NetworkError::PortNotFound(id))?;
            let managed = is_reserved_owner(&port.device_owner) || port.server_id.is_some();
            let owner_changes = update
                .device_owner
                .as_ref()
                .is_some_and(|o| *o != port.device_owner)
                || update.device_id.as_ref().is_some_and(|d| *d != port.device_id);
            if managed && owner_changes {
                return Err(NetworkError::PortInUse {
                    port: id,
                    reason: format!("its owner {} manages it", port.device_owner),
                });
            }
            if let Some(security) = update.port_security_enabled {
                port.port_security_enabled = security;
            }
            if let Some(groups) = update.security_groups {
                for group in &groups {
                    repo::security_group(tx, *group)?
                        .ok_or(NetworkError::SecurityGroupNotFound(*group))?;
                }
                port.security_groups = groups;
            }
            if let Some(pairs) = update.allowed_address_pairs {
                port.allowed_address_pairs = pairs;
            }
            if !port.port_security_enabled && !port.security_groups.is_empty() {
                return Err(invalid(
                    "Port security must be enabled in order to have security groups on a port.",
                ));
            }
            if !port.port_security_enabled && !port.allowed_address_pairs.is_empty() {
                return Err(invalid(
                    "Port security must be enabled in order to have allowed address pairs on a port.",
                ));
            }
            if let Some(name) = update.name {
                port.name = name;
            }
            if let Some(description) = update.description {
                port.description = description;
            }
            if let Some(up) = update.admin_state_up {
                port.admin_state_up = up;
            }
            if let Some(owner) = update.device_owner {
                port.device_owner = owner;
            }
            if let Some(device) = update.device_id {
                port.device_id = device;
            }
            port.updated_at = now;
            repo::update_port(tx, &port)?;
            Ok(port)
        })
    }

    /// Updates a router: its attributes, gateway and static routes together.
    pub fn update_router(&self, id: Uuid, update: RouterUpdate) -> Result<Router, NetworkError> {
        if let Some(name) = &update.name {
            check_name("name", name)?;
        }
        if let Some(description) = &update.description {
            check_name("description", description)?;
        }
        if update.routes.as_ref().is_some_and(|r| r.len() > MAX_ROUTES) {
            return Err(invalid(format!("at most {MAX_ROUTES} routes are allowed")));
        }
        self.write(|tx, now| {
            let router = repo::router(tx, id)?.ok_or(NetworkError::RouterNotFound(id))?;
            if let Some(gateway) = update.external_gateway {
                replace_gateway(tx, now, &router, gateway)?;
            }
            let mut router = repo::router(tx, id)?.ok_or(NetworkError::RouterNotFound(id))?;
            if let Some(routes) = update.routes {
                let mut connected = Vec::new();
                for subnet in router.interfaces.iter().map(|i| i.subnet_id).chain(
                    router
                        .external_gateway
                        .iter()
                        .flat_map(|g| g.external_fixed_ips.iter().map(|f| f.subnet_id)),
                ) {
                    if let Some(subnet) = repo::subnet(tx, subnet)? {
                        connected.push(subnet.cidr);
                    }
                }
                for route in &routes {
                    if route.destination.addr().is_ipv4() != route.nexthop.is_ipv4() {
                        return Err(invalid(format!(
                            "Invalid format for routes: route {} via {} mixes address families",
                            route.destination, route.nexthop
                        )));
                    }
                    if !connected.iter().any(|c| c.contains(&route.nexthop)) {
                        return Err(NetworkError::BadRouterRequest(format!(
                            "Invalid format for routes: the nexthop {} is not connected with router {id}",
                            route.nexthop
                        )));
                    }
                }
                router.routes = routes;
            }
            if let Some(name) = update.name {
                router.name = name;
            }
            if let Some(description) = update.description {
                router.description = description;
            }
            if let Some(up) = update.admin_state_up {
                router.admin_state_up = up;
            }
            router.updated_at = now;
            repo::update_router(tx, &router)?;
            Ok(router)
        })
    }

    /// Renames or redescribes a security group; the project's `default` group keeps its name.
    pub fn update_security_group(
        &self,
        id: Uuid,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<SecurityGroup, NetworkError> {
        if let Some(name) = &name {
            check_name("name", name)?;
        }
        if let Some(description) = &description {
            check_name("description", description)?;
        }
        self.write(|tx, now| {
            let mut group =
                repo::security_group(tx, id)?.ok_or(NetworkError::SecurityGroupNotFound(id))?;
            if let Some(name) = name {
                if group.name == "default" && name != "default" {
                    return Err(invalid("Updating default security group name not allowed."));
                }
                if group.name != "default" && name == "default" {
                    return Err(invalid(
                        "the name 'default' is reserved for the project's default security group",
                    ));
                }
                group.name = name;
            }
            if let Some(description) = description {
                group.description = description;
            }
            group.updated_at = now;
            repo::update_security_group(tx, &group)?;
            Ok(group)
        })
    }

    /// Updates a floating IP: its association and description together.
    pub fn change_floating_ip(
        &self,
        id: Uuid,
        update: FloatingIpUpdate,
    ) -> Result<FloatingIp, NetworkError> {
        if let Some(description) = &update.description {
            check_name("description", description)?;
        }
        self.write(|tx, now| {
            let mut fip = repo::floating_ip(tx, id)?.ok_or(NetworkError::FloatingIpNotFound(id))?;
            if let Some(port) = update.port {
                fip.port_id = None;
                fip.fixed_ip_address = None;
                fip.router_id = None;
                if let Some(port) = port {
                    associate(tx, &mut fip, port, update.fixed_ip_address)?;
                }
            }
            if let Some(description) = update.description {
                repo::set_floating_ip_description(tx, id, &description)?;
                fip.description = description;
            }
            fip.updated_at = now;
            repo::update_floating_ip(tx, &fip)?;
            Ok(fip)
        })
    }
}
