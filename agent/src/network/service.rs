//! The network domain API: the one place network requests are validated and desired state is written.
//! Every write happens in one transaction that also bumps the model's generation, so the OVN
//! reconciler sees either all of a request or none of it.

use super::NetworkError;
use super::ipam::{self, check_address, default_pools, lowest_free, overlaps, validate_pools};
use super::model::{
    AddressPair, AllocationPool, Direction, EtherType, FixedIp, FloatingIp, Ipv6Mode, Network,
    NetworkType, OWNER_FLOATING_IP, OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE, Port, PortStatus,
    Protocol, Route, Router, SecurityGroup, SecurityGroupRule, Subnet, TemplateRemoteGroup,
};
use super::repo;
use crate::reconcile::WorkSink;
use crate::store::Store;
use crate::system::clock::Clock;
use ipnet::IpNet;
use jiff::Timestamp;
use rusqlite::Transaction;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use uuid::Uuid;

/// The reconcile kind that programs OVN from the whole model.
pub const OVN: &str = "ovn";
/// Its one key: the northbound database as a whole.
pub const OVN_KEY: &str = "northbound";

/// Network policy of this node (from `[network]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// MTU of overlay (Geneve) networks: the underlay's MTU minus encapsulation overhead.
    pub overlay_mtu: u32,
    /// Physical networks (OVN bridge mappings) this site has, with their MTU.
    pub physical_networks: BTreeMap<String, u32>,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        Self {
            overlay_mtu: 1442,
            physical_networks: BTreeMap::from([("physnet1".to_owned(), 1500)]),
        }
    }
}

/// A provider segment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRequest {
    /// flat, vlan or geneve.
    pub network_type: NetworkType,
    /// Physical network for flat/vlan.
    pub physical_network: Option<String>,
    /// VLAN id.
    pub segmentation_id: Option<u16>,
}

/// A request to create a network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewNetwork {
    /// Client-chosen id.
    pub id: Option<Uuid>,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Project.
    pub project_id: String,
    /// Administratively up (default true).
    pub admin_state_up: Option<bool>,
    /// Shared.
    pub shared: bool,
    /// `router:external`.
    pub external: bool,
    /// Provider segment; an overlay network when absent.
    pub provider: Option<ProviderRequest>,
    /// MTU; the largest possible when absent.
    pub mtu: Option<u32>,
    /// Port security default (default true).
    pub port_security_enabled: Option<bool>,
}

/// Which gateway a new subnet gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GatewayRequest {
    /// The first usable address (Neutron's default).
    #[default]
    Default,
    /// No gateway (the subnet cannot be a router interface).
    Disabled,
    /// This address.
    Address(IpAddr),
}

/// A request to create a subnet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewSubnet {
    /// Client-chosen id.
    pub id: Option<Uuid>,
    /// Network.
    pub network_id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Project.
    pub project_id: String,
    /// 4 or 6.
    pub ip_version: u8,
    /// The prefix, as given (host bits must be zero).
    pub cidr: String,
    /// Gateway.
    pub gateway: GatewayRequest,
    /// Pools; all usable addresses but the gateway when absent.
    pub allocation_pools: Option<Vec<AllocationPool>>,
    /// DNS servers (at most 5).
    pub dns_nameservers: Vec<IpAddr>,
    /// Host routes (at most 20).
    pub host_routes: Vec<Route>,
    /// DHCP (default true).
    pub enable_dhcp: Option<bool>,
    /// IPv6 address mode.
    pub ipv6_address_mode: Option<Ipv6Mode>,
    /// IPv6 RA mode.
    pub ipv6_ra_mode: Option<Ipv6Mode>,
}

/// One requested address of a new port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FixedIpRequest {
    /// Subnet; found from the address when absent.
    pub subnet_id: Option<Uuid>,
    /// Address; allocated from the subnet's pools when absent.
    pub ip_address: Option<IpAddr>,
}

/// A request to create a port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewPort {
    /// Client-chosen id.
    pub id: Option<Uuid>,
    /// Network.
    pub network_id: Uuid,
    /// Project.
    pub project_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// MAC; generated (`fa:16:3e:…`) when absent.
    pub mac: Option<String>,
    /// Addresses; one from each address family's first subnet when absent.
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    /// Security groups; the project's `default` group when absent and port security is on.
    pub security_groups: Option<Vec<Uuid>>,
    /// Port security; the network's default when absent.
    pub port_security_enabled: Option<bool>,
    /// Extra allowed addresses.
    pub allowed_address_pairs: Vec<AddressPair>,
    /// Owner kind.
    pub device_owner: String,
    /// Owner id.
    pub device_id: String,
    /// Administratively up (default true).
    pub admin_state_up: Option<bool>,
}

/// A request to create a security group rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRule {
    /// Client-chosen id.
    pub id: Option<Uuid>,
    /// Group.
    pub security_group_id: Uuid,
    /// Project.
    pub project_id: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// `IPv4` (default) or `IPv6`.
    pub ethertype: Option<String>,
    /// Protocol name or number.
    pub protocol: Option<String>,
    /// First port / ICMP type.
    pub port_range_min: Option<i64>,
    /// Last port / ICMP code.
    pub port_range_max: Option<i64>,
    /// Remote prefix.
    pub remote_ip_prefix: Option<String>,
    /// Remote group.
    pub remote_group_id: Option<Uuid>,
    /// Description.
    pub description: String,
}

/// A router's gateway request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayInfo {
    /// External network.
    pub network_id: Uuid,
    /// SNAT (default true).
    pub enable_snat: bool,
    /// A specific gateway address.
    pub ip_address: Option<IpAddr>,
}

/// A request to create a router.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRouter {
    /// Client-chosen id.
    pub id: Option<Uuid>,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Project.
    pub project_id: String,
    /// Administratively up (default true).
    pub admin_state_up: Option<bool>,
    /// Gateway.
    pub external_gateway: Option<GatewayInfo>,
}

/// Which side of a router interface a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceTarget {
    /// A subnet: a port holding its gateway address is made.
    Subnet(Uuid),
    /// An existing port.
    Port(Uuid),
}

/// A request to create a floating IP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewFloatingIp {
    /// Client-chosen id.
    pub id: Option<Uuid>,
    /// Project.
    pub project_id: String,
    /// External network.
    pub floating_network_id: Uuid,
    /// A specific address.
    pub floating_ip_address: Option<IpAddr>,
    /// Port to associate.
    pub port_id: Option<Uuid>,
    /// Which of the port's addresses.
    pub fixed_ip_address: Option<IpAddr>,
    /// Description.
    pub description: String,
}

/// Everything, as the OVN reconciler and the API's list calls need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkModel {
    /// Desired-state version.
    pub generation: i64,
    /// Networks.
    pub networks: Vec<Network>,
    /// Subnets.
    pub subnets: Vec<Subnet>,
    /// Ports with networks.
    pub ports: Vec<Port>,
    /// Security groups with rules.
    pub security_groups: Vec<SecurityGroup>,
    /// Routers with gateways and interfaces.
    pub routers: Vec<Router>,
    /// Floating IPs.
    pub floating_ips: Vec<FloatingIp>,
}

/// Networks, subnets, ports, security groups, routers and floating IPs.
pub struct NetworkService {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    loops: Arc<dyn WorkSink>,
    settings: NetworkSettings,
}

const MAX_DNS: usize = 5;
const MAX_HOST_ROUTES: usize = 20;

fn invalid(message: impl Into<String>) -> NetworkError {
    NetworkError::InvalidInput(message.into())
}

fn check_name(field: &str, value: &str) -> Result<(), NetworkError> {
    if value.chars().count() > 255 {
        return Err(invalid(format!("{field} is longer than 255 characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!("{field} contains control characters")));
    }
    Ok(())
}

fn check_project(project: &str) -> Result<(), NetworkError> {
    if project.is_empty() || project.len() > 255 {
        return Err(invalid("project_id must be 1 to 255 characters"));
    }
    Ok(())
}

/// The DHCP options a subnet hands out: bounded lists, host routes of the subnet's family.
fn check_dhcp_options(cidr: IpNet, dns: &[IpAddr], routes: &[Route]) -> Result<(), NetworkError> {
    if dns.len() > MAX_DNS {
        return Err(invalid(format!(
            "at most {MAX_DNS} dns_nameservers are allowed"
        )));
    }
    if routes.len() > MAX_HOST_ROUTES {
        return Err(invalid(format!(
            "at most {MAX_HOST_ROUTES} host_routes are allowed"
        )));
    }
    let v4 = cidr.addr().is_ipv4();
    for route in routes {
        if route.destination.addr().is_ipv4() != v4 || route.nexthop.is_ipv4() != v4 {
            return Err(invalid(format!(
                "host route {} via {} is not IPv{}",
                route.destination,
                route.nexthop,
                if v4 { 4 } else { 6 }
            )));
        }
    }
    Ok(())
}

/// Neutron's MAC prefix.
fn random_mac() -> String {
    let tail: [u8; 3] = rand::random();
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", tail[0], tail[1], tail[2])
}

/// A unicast MAC in canonical lower-case colon form.
fn normalise_mac(mac: &str) -> Result<String, NetworkError> {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    let bytes: Option<Vec<u8>> = (parts.len() == 6)
        .then(|| {
            parts
                .iter()
                .map(|p| {
                    if p.len() == 2 {
                        u8::from_str_radix(p, 16).ok()
                    } else {
                        None
                    }
                })
                .collect::<Option<Vec<u8>>>()
        })
        .flatten();
    let bytes = bytes.ok_or_else(|| invalid(format!("'{mac}' is not a valid MAC address")))?;
    if bytes[0] & 1 == 1 || bytes.iter().all(|b| *b == 0) {
        return Err(invalid(format!(
            "'{mac}' is not a valid unicast MAC address"
        )));
    }
    Ok(bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// The EUI-64 SLAAC address of `mac` in `prefix` (a /64).
pub fn slaac_address(prefix: IpNet, mac: &str) -> Option<IpAddr> {
    let IpNet::V6(v6) = prefix else { return None };
    if v6.prefix_len() != 64 {
        return None;
    }
    let b: Vec<u8> = mac
        .split(':')
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    if b.len() != 6 {
        return None;
    }
    let iid = [b[0] ^ 0x02, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]];
    let mut octets = v6.network().octets();
    octets[8..].copy_from_slice(&iid);
    Some(IpAddr::V6(octets.into()))
}

impl NetworkService {
    /// The service; `loops` hears about every write (the OVN reconciler).
    pub fn new(
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        loops: Arc<dyn WorkSink>,
        settings: NetworkSettings,
    ) -> Self {
        Self {
            store,
            clock,
            loops,
            settings,
        }
    }

    /// Runs a write transaction that bumps the model generation, then tells the loops.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>, Timestamp) -> Result<T, NetworkError>,
    ) -> Result<T, NetworkError> {
        let now = self.clock.now();
        let (value, generation) = self.store.write(|tx| {
            let value = f(tx, now)?;
            Ok::<_, NetworkError>((value, repo::bump_generation(tx)?))
        })?;
        self.loops.desired_changed(OVN, OVN_KEY, generation);
        Ok(value)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, NetworkError>,
    ) -> Result<T, NetworkError> {
        self.store.read(f)
    }

    /// The whole model in one consistent snapshot.
    pub fn model(&self) -> Result<NetworkModel, NetworkError> {
        self.read(|tx| {
            Ok(NetworkModel {
                generation: repo::generation(tx)?,
                networks: repo::networks(tx)?,
                subnets: repo::subnets(tx, None)?,
                ports: repo::ports(tx)?,
                security_groups: repo::security_groups(tx)?,
                routers: repo::routers(tx)?,
                floating_ips: repo::floating_ips(tx)?,
            })
        })
    }

    // ---- networks -----------------------------------------------------------------------------

    /// Creates a network.
    pub fn create_network(&self, request: NewNetwork) -> Result<Network, NetworkError> {
        check_name("name", &request.name)?;
        check_name("description", &request.description)?;
        check_project(&request.project_id)?;
        let provider = request.provider.clone().unwrap_or(ProviderRequest {
            network_type: NetworkType::Geneve,
            physical_network: None,
            segmentation_id: None,
        });
        let max_mtu = match provider.network_type {
            NetworkType::Geneve => {
                if provider.physical_network.is_some() || provider.segmentation_id.is_some() {
                    return Err(invalid(
                        "geneve networks take no provider:physical_network or provider:segmentation_id",
                    ));
                }
                if request.external {
                    return Err(invalid(
                        "an external network must be a flat or vlan provider network",
                    ));
                }
                self.settings.overlay_mtu
            }
            NetworkType::Flat | NetworkType::Vlan => {
                let physnet = provider.physical_network.as_deref().ok_or_else(|| {
                    invalid(format!(
                        "provider:physical_network is required for {} networks",
                        provider.network_type.as_str()
                    ))
                })?;
                let mtu = *self
                    .settings
                    .physical_networks
                    .get(physnet)
                    .ok_or_else(|| {
                        invalid(format!(
                            "physical network {physnet} is not configured on this site (known: {})",
                            self.settings
                                .physical_networks
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                match (provider.network_type, provider.segmentation_id) {
                    (NetworkType::Flat, Some(_)) => {
                        return Err(invalid("flat networks take no provider:segmentation_id"));
                    }
                    (NetworkType::Vlan, None) => {
                        return Err(invalid(
                            "provider:segmentation_id is required for vlan networks",
                        ));
                    }
                    (NetworkType::Vlan, Some(v)) if !(1..=4094).contains(&v) => {
                        return Err(invalid(format!("VLAN id {v} is outside 1-4094")));
                    }
                    _ => {}
                }
                mtu
            }
        };
        let mtu = request.mtu.unwrap_or(max_mtu);
        if !(68..=max_mtu).contains(&mtu) {
            return Err(invalid(format!(
                "mtu {mtu} is outside 68-{max_mtu} for this network type"
            )));
        }
        self.write(|tx, now| {
            let id = request.id.unwrap_or_else(Uuid::new_v4);
            if repo::network(tx, id)?.is_some() {
                return Err(NetworkError::Duplicate {
                    what: "Network",
                    id,
                });
            }
            if let Some(physnet) = provider.physical_network.as_deref()
                && repo::segment_taken(tx, physnet, provider.segmentation_id)?
            {
                return Err(NetworkError::SegmentInUse(match provider.segmentation_id {
                    Some(vlan) => {
                        format!("The VLAN {vlan} on physical network {physnet} is in use.")
                    }
                    None => format!("The physical network {physnet} is in use."),
                }));
            }
            let network = Network {
                id,
                name: request.name,
                description: request.description,
                project_id: request.project_id,
                admin_state_up: request.admin_state_up.unwrap_or(true),
                shared: request.shared,
                external: request.external,
                network_type: provider.network_type,
                physical_network: provider.physical_network,
                segmentation_id: provider.segmentation_id,
                mtu,
                port_security_enabled: request.port_security_enabled.unwrap_or(true),
                subnets: Vec::new(),
                created_at: now,
                updated_at: now,
            };
            repo::insert_network(tx, &network)?;
            Ok(network)
        })
    }

    /// One network.
    pub fn network(&self, id: Uuid) -> Result<Network, NetworkError> {
        self.read(|tx| repo::network(tx, id))?
            .ok_or(NetworkError::NetworkNotFound(id))
    }

    /// All networks.
    pub fn networks(&self) -> Result<Vec<Network>, NetworkError> {
        self.read(repo::networks)
    }

    /// Deletes a network and its subnets; refused while ports remain.
    pub fn delete_network(&self, id: Uuid) -> Result<(), NetworkError> {
        self.write(|tx, _| {
            repo::network(tx, id)?.ok_or(NetworkError::NetworkNotFound(id))?;
            let ports = repo::ports_on_network(tx, id)?;
            if ports > 0 {
                return Err(NetworkError::NetworkInUse { network: id, ports });
            }
            repo::delete_network(tx, id)
        })
    }

    // ---- subnets ------------------------------------------------------------------------------

    /// Creates a subnet.
    pub fn create_subnet(&self, request: NewSubnet) -> Result<Subnet, NetworkError> {
        check_name("name", &request.name)?;
        check_name("description", &request.description)?;
        check_project(&request.project_id)?;
        let cidr: IpNet = request
            .cidr
            .parse()
            .map_err(|_| invalid(format!("'{}' is not a valid IP subnet", request.cidr)))?;
        if cidr != cidr.trunc() {
            return Err(invalid(format!(
                "'{}' isn't a recognized IP subnet cidr, '{}' is recommended",
                request.cidr,
                cidr.trunc()
            )));
        }
        let version = if cidr.addr().is_ipv4() { 4 } else { 6 };
        if request.ip_version != version {
            return Err(invalid(format!(
                "cidr {cidr} does not match ip_version {}",
                request.ip_version
            )));
        }
        if version == 4 && (request.ipv6_address_mode.is_some() || request.ipv6_ra_mode.is_some()) {
            return Err(invalid(
                "ipv6_address_mode and ipv6_ra_mode are only for IPv6 subnets",
            ));
        }
        if let (Some(a), Some(r)) = (request.ipv6_address_mode, request.ipv6_ra_mode)
            && a != r
        {
            return Err(invalid(format!(
                "ipv6_ra_mode {} and ipv6_address_mode {} must match",
                r.as_str(),
                a.as_str()
            )));
        }
        if request
            .ipv6_address_mode
            .is_some_and(|m| m != Ipv6Mode::Dhcpv6Stateful)
            && cidr.prefix_len() != 64
        {
            return Err(invalid(format!("SLAAC needs a /64 prefix, {cidr} is not")));
        }
        ipam::usable_range(cidr)?;
        let gateway = match request.gateway {
            GatewayRequest::Disabled => None,
            GatewayRequest::Address(ip) => {
                check_address(cidr, ip, "gateway_ip")?;
                Some(ip)
            }
            GatewayRequest::Default => {
                Some(ipam::from_u128(ipam::usable_range(cidr)?.0, cidr.addr()))
            }
        };
        let pools = match &request.allocation_pools {
            Some(pools) => {
                if pools.is_empty() {
                    return Err(invalid("allocation_pools must not be empty when given"));
                }
                validate_pools(cidr, gateway, pools)?;
                pools.clone()
            }
            None => default_pools(cidr, gateway)?,
        };
        check_dhcp_options(cidr, &request.dns_nameservers, &request.host_routes)?;
        self.write(|tx, now| {
            let network = repo::network(tx, request.network_id)?.ok_or(NetworkError::NetworkNotFound(request.network_id))?;
            let id = request.id.unwrap_or_else(Uuid::new_v4);
            if repo::subnet(tx, id)?.is_some() {
                return Err(NetworkError::Duplicate { what: "Subnet", id });
            }
            for other in repo::subnets(tx, Some(network.id))? {
                if overlaps(other.cidr, cidr) {
                    return Err(invalid(format!(
                        "Requested subnet with cidr: {cidr} for network: {} overlaps with another subnet.",
                        network.id
                    )));
                }
            }
            let subnet = Subnet {
                id,
                network_id: network.id,
                name: request.name,
                description: request.description,
                project_id: request.project_id,
                ip_version: version,
                cidr,
                gateway_ip: gateway,
                allocation_pools: pools,
                dns_nameservers: request.dns_nameservers,
                host_routes: request.host_routes,
                enable_dhcp: request.enable_dhcp.unwrap_or(true),
                ipv6_address_mode: request.ipv6_address_mode,
                ipv6_ra_mode: request.ipv6_ra_mode,
                created_at: now,
                updated_at: now,
            };
            repo::insert_subnet(tx, &subnet)?;
            Ok(subnet)
        })
    }

    /// One subnet.
    pub fn subnet(&self, id: Uuid) -> Result<Subnet, NetworkError> {
        self.read(|tx| repo::subnet(tx, id))?
            .ok_or(NetworkError::SubnetNotFound(id))
    }

    /// All subnets.
    pub fn subnets(&self) -> Result<Vec<Subnet>, NetworkError> {
        self.read(|tx| repo::subnets(tx, None))
    }

    /// Deletes a subnet no port holds an address in.
    pub fn delete_subnet(&self, id: Uuid) -> Result<(), NetworkError> {
        self.write(|tx, _| {
            repo::subnet(tx, id)?.ok_or(NetworkError::SubnetNotFound(id))?;
            if !repo::subnet_users(tx, id)?.is_empty() {
                return Err(NetworkError::SubnetInUse(id));
            }
            repo::delete_subnet(tx, id)
        })
    }

    // ---- ports --------------------------------------------------------------------------------

    /// Creates a port.
    pub fn create_port(&self, request: NewPort) -> Result<Port, NetworkError> {
        self.write(|tx, now| create_port_in(tx, now, request))
    }

    /// One port.
    pub fn port(&self, id: Uuid) -> Result<Port, NetworkError> {
        self.read(|tx| repo::port(tx, id))?
            .ok_or(NetworkError::PortNotFound(id))
    }

    /// All ports with a network.
    pub fn ports(&self) -> Result<Vec<Port>, NetworkError> {
        self.read(repo::ports)
    }

    /// How many networks and ports exist, without loading them: the region link reports these
    /// every heartbeat.
    pub fn counts(&self) -> Result<(u64, u64), NetworkError> {
        self.read(repo::counts)
    }

    /// Replaces a port's security groups.
    pub fn set_port_security_groups(
        &self,
        id: Uuid,
        groups: &[Uuid],
    ) -> Result<Port, NetworkError> {
        self.write(|tx, now| {
            let port = repo::port(tx, id)?.ok_or(NetworkError::PortNotFound(id))?;
            if !port.port_security_enabled && !groups.is_empty() {
                return Err(invalid(
                    "Port security must be enabled in order to have security groups on a port.",
                ));
            }
            for group in groups {
                repo::security_group(tx, *group)?
                    .ok_or(NetworkError::SecurityGroupNotFound(*group))?;
            }
            repo::set_port_security_groups(tx, id, groups)?;
            tx.execute(
                "UPDATE ports SET updated_at = ?2 WHERE id = ?1",
                rusqlite::params![id.to_string(), now.to_string()],
            )?;
            repo::port(tx, id)?.ok_or(NetworkError::PortNotFound(id))
        })
    }

    /// Deletes a port; ports of routers, floating IPs and servers go through those instead.
    pub fn delete_port(&self, id: Uuid) -> Result<(), NetworkError> {
        self.write(|tx, _| {
            let port = repo::port(tx, id)?.ok_or(NetworkError::PortNotFound(id))?;
            if [
                OWNER_ROUTER_INTERFACE,
                OWNER_ROUTER_GATEWAY,
                OWNER_FLOATING_IP,
            ]
            .contains(&port.device_owner.as_str())
            {
                return Err(NetworkError::PortInUse {
                    port: id,
                    reason: format!("has device owner {}", port.device_owner),
                });
            }
            if let Some(server) = port.server_id {
                return Err(NetworkError::PortInUse {
                    port: id,
                    reason: format!("it is a NIC of server {server}"),
                });
            }
            for fip in repo::floating_ips_of_port(tx, id)? {
                disassociate(tx, fip)?;
            }
            repo::delete_port(tx, id)
        })
    }

    // ---- security groups ----------------------------------------------------------------------

    /// Creates a security group with Neutron's default egress rules.
    pub fn create_security_group(
        &self,
        id: Option<Uuid>,
        name: &str,
        description: &str,
        project_id: &str,
    ) -> Result<SecurityGroup, NetworkError> {
        check_name("name", name)?;
        check_name("description", description)?;
        check_project(project_id)?;
        if name == "default" {
            return Err(invalid(
                "the name 'default' is reserved for the project's default security group",
            ));
        }
        self.write(|tx, now| {
            let id = id.unwrap_or_else(Uuid::new_v4);
            if repo::security_group(tx, id)?.is_some() {
                return Err(NetworkError::Duplicate {
                    what: "Security group",
                    id,
                });
            }
            let group = new_group(tx, id, name, description, project_id, now, false)?;
            repo::insert_security_group(tx, &group)?;
            Ok(group)
        })
    }

    /// The project's `default` group, created with Neutron's default rules on first use.
    pub fn default_security_group(&self, project_id: &str) -> Result<SecurityGroup, NetworkError> {
        check_project(project_id)?;
        if let Some(id) = self.read(|tx| repo::default_security_group(tx, project_id))? {
            return self.security_group(id);
        }
        let id = self.write(|tx, now| ensure_default_group(tx, project_id, now))?;
        self.security_group(id)
    }

    /// One security group.
    pub fn security_group(&self, id: Uuid) -> Result<SecurityGroup, NetworkError> {
        self.read(|tx| repo::security_group(tx, id))?
            .ok_or(NetworkError::SecurityGroupNotFound(id))
    }

    /// All security groups.
    pub fn security_groups(&self) -> Result<Vec<SecurityGroup>, NetworkError> {
        self.read(repo::security_groups)
    }

    /// Deletes a group no port uses.
    pub fn delete_security_group(&self, id: Uuid) -> Result<(), NetworkError> {
        self.write(|tx, _| {
            repo::security_group(tx, id)?.ok_or(NetworkError::SecurityGroupNotFound(id))?;
            if repo::security_group_users(tx, id)? > 0 {
                return Err(NetworkError::SecurityGroupInUse(id));
            }
            repo::delete_security_group(tx, id)
        })
    }

    /// Adds a rule.
    pub fn create_rule(&self, request: NewRule) -> Result<SecurityGroupRule, NetworkError> {
        check_project(&request.project_id)?;
        check_name("description", &request.description)?;
        let RuleShape {
            direction,
            ethertype,
            protocol,
            min,
            max,
            prefix,
        } = RuleShape::parse(
            &request.direction,
            request.ethertype.as_deref(),
            request.protocol.as_deref(),
            request.port_range_min,
            request.port_range_max,
            request.remote_ip_prefix.as_deref(),
        )?;
        if prefix.is_some() && request.remote_group_id.is_some() {
            return Err(invalid(
                "Only remote_ip_prefix or remote_group_id may be provided.",
            ));
        }
        self.write(|tx, now| {
            let group = repo::security_group(tx, request.security_group_id)?.ok_or(
                NetworkError::SecurityGroupNotFound(request.security_group_id),
            )?;
            if let Some(remote) = request.remote_group_id {
                repo::security_group(tx, remote)?
                    .ok_or(NetworkError::SecurityGroupNotFound(remote))?;
            }
            let rule = SecurityGroupRule {
                id: request.id.unwrap_or_else(Uuid::new_v4),
                security_group_id: group.id,
                project_id: request.project_id,
                direction,
                ethertype,
                protocol,
                port_range_min: min,
                port_range_max: max,
                remote_ip_prefix: prefix,
                remote_group_id: request.remote_group_id,
                description: request.description,
                created_at: now,
            };
            if let Some(existing) = group
                .rules
                .iter()
                .find(|r| r.signature() == rule.signature())
            {
                return Err(NetworkError::SecurityGroupRuleExists(existing.id));
            }
            if repo::rule(tx, rule.id)?.is_some() {
                return Err(NetworkError::Duplicate {
                    what: "Security group rule",
                    id: rule.id,
                });
            }
            repo::insert_rule(tx, &rule)?;
            Ok(rule)
        })
    }

    /// Deletes a rule.
    pub fn delete_rule(&self, id: Uuid) -> Result<(), NetworkError> {
        self.write(|tx, _| {
            repo::rule(tx, id)?.ok_or(NetworkError::SecurityGroupRuleNotFound(id))?;
            repo::delete_rule(tx, id)
        })
    }

    // ---- routers ------------------------------------------------------------------------------

    /// Creates a router, with its gateway port when a gateway is given.
    pub fn create_router(&self, request: NewRouter) -> Result<Router, NetworkError> {
        check_name("name", &request.name)?;
        check_name("description", &request.description)?;
        check_project(&request.project_id)?;
        self.write(|tx, now| {
            let id = request.id.unwrap_or_else(Uuid::new_v4);
            if repo::router(tx, id)?.is_some() {
                return Err(NetworkError::Duplicate { what: "Router", id });
            }
            let router = Router {
                id,
                name: request.name,
                description: request.description,
                project_id: request.project_id.clone(),
                admin_state_up: request.admin_state_up.unwrap_or(true),
                external_gateway: None,
                routes: Vec::new(),
                interfaces: Vec::new(),
                created_at: now,
                updated_at: now,
            };
            repo::insert_router(tx, &router)?;
            if let Some(gateway) = request.external_gateway {
                attach_gateway(tx, now, id, &request.project_id, gateway)?;
            }
            repo::router(tx, id)?.ok_or(NetworkError::RouterNotFound(id))
        })
    }

    /// Sets, changes or clears a router's external gateway.
    pub fn set_router_gateway(
        &self,
        id: Uuid,
        gateway: Option<GatewayInfo>,
    ) -> Result<Router, NetworkError> {
        self.write(|tx, now| {
            let router = repo::router(tx, id)?.ok_or(NetworkError::RouterNotFound(id))?;
            replace_gateway(tx, now, &router, gateway)?;
            repo::router(tx, id)?.ok_or(NetworkError::RouterNotFound(id))
        })
    }

    /// Attaches a subnet (or an existing port) to a router.
    pub fn add_router_interface(
        &self,
        id: Uuid,
        target: InterfaceTarget,
    ) -> Result<(Uuid, Uuid), NetworkError> {
        self.write(|tx, now| {
            let router = repo::router(tx, id)?.ok_or(NetworkError::RouterNotFound(id))?;
            let attached: Vec<Subnet> = router
                .interfaces
                .iter()
                .map(|i| repo::subnet(tx, i.subnet_id)?.ok_or(NetworkError::SubnetNotFound(i.subnet_id)))
                .collect::<Result<_, _>>()?;
            let check_overlap = |subnet: &Subnet| -> Result<(), NetworkError> {
                for other in &attached {
                    if other.id == subnet.id {
                        return Err(NetworkError::BadRouterRequest(format!("Router already has a port on subnet {}", subnet.id)));
                    }
                    if overlaps(other.cidr, subnet.cidr) {
                        return Err(NetworkError::BadRouterRequest(format!(
                            "Cidr {} of subnet {} overlaps with cidr {} of subnet {}",
                            subnet.cidr, subnet.id, other.cidr, other.id
                        )));
                    }
                }
                Ok(())
            };
            match target {
                InterfaceTarget::Subnet(subnet_id) => {
                    let subnet = repo::subnet(tx, subnet_id)?.ok_or(NetworkError::SubnetNotFound(subnet_id))?;
                    let gateway = subnet.gateway_ip.ok_or_else(|| {
                        NetworkError::BadRouterRequest(format!("Subnet {subnet_id} for router interface must have a gateway IP"))
                    })?;
                    check_overlap(&subnet)?;
                    let port = create_port_in(
                        tx,
                        now,
                        NewPort {
                            network_id: subnet.network_id,
                            project_id: router.project_id.clone(),
                            fixed_ips: Some(vec![FixedIpRequest { subnet_id: Some(subnet_id), ip_address: Some(gateway) }]),
                            security_groups: Some(Vec::new()),
                            port_security_enabled: Some(false),
                            device_owner: OWNER_ROUTER_INTERFACE.into(),
                            device_id: id.to_string(),
                            ..NewPort::default()
                        },
                    )?;
                    Ok((port.id, subnet_id))
                }
                InterfaceTarget::Port(port_id) => {
                    let port = repo::port(tx, port_id)?.ok_or(NetworkError::PortNotFound(port_id))?;
                    if !port.device_owner.is_empty() || port.server_id.is_some() {
                        return Err(NetworkError::PortInUse { port: port_id, reason: format!("is used by {}", port.device_owner) });
                    }
                    let first = port.fixed_ips.first().ok_or_else(|| {
                        NetworkError::BadRouterRequest(format!("Port {port_id} does not have any IP addresses"))
                    })?;
                    let subnet = repo::subnet(tx, first.subnet_id)?.ok_or(NetworkError::SubnetNotFound(first.subnet_id))?;
                    check_overlap(&subnet)?;
                    tx.execute(
                        "UPDATE ports SET device_owner = ?2, device_id = ?3, port_security_enabled = 0, updated_at = ?4 WHERE id = ?1",
                        rusqlite::params![port_id.to_string(), OWNER_ROUTER_INTERFACE, id.to_string(), now.to_string()],
                    )?;
                    repo::set_port_security_groups(tx, port_id, &[])?;
                    Ok((port_id, subnet.id))
                }
            }
        })
    }

    /// Detaches a subnet or port from a router; refused while floating IPs depend on it.
    pub fn remove_router_interface(
        &self,
        id: Uuid,
        target: InterfaceTarget,
    ) -> Result<(Uuid, Uuid), NetworkError> {
        self.write(|tx, _| {
            let router = repo::router(tx, id)?.ok_or(NetworkError::RouterNotFound(id))?;
            let interface = router
                .interfaces
                .iter()
                .find(|i| match target {
                    InterfaceTarget::Subnet(s) => i.subnet_id == s,
                    InterfaceTarget::Port(p) => i.port_id == p,
                })
                .copied()
                .ok_or(NetworkError::RouterInterfaceNotFound {
                    router: id,
                    what: match target {
                        InterfaceTarget::Subnet(s) | InterfaceTarget::Port(s) => s,
                    },
                })?;
            let subnet = repo::subnet(tx, interface.subnet_id)?
                .ok_or(NetworkError::SubnetNotFound(interface.subnet_id))?;
            for fip in repo::floating_ips(tx)? {
                if fip.router_id == Some(id)
                    && fip
                        .fixed_ip_address
                        .is_some_and(|a| subnet.cidr.contains(&a))
                {
                    return Err(NetworkError::RouterInUse {
                        router: id,
                        reason: format!(
                            "interface on subnet {} is required by floating IP {}",
                            subnet.id, fip.id
                        ),
                    });
                }
            }
            repo::delete_port(tx, interface.port_id)?;
            Ok((interface.port_id, interface.subnet_id))
        })
    }

    /// One router.
    pub fn router(&self, id: Uuid) -> Result<Router, NetworkError> {
        self.read(|tx| repo::router(tx, id))?
            .ok_or(NetworkError::RouterNotFound(id))
    }

    /// All routers.
    pub fn routers(&self) -> Result<Vec<Router>, NetworkError> {
        self.read(repo::routers)
    }

    /// Deletes a router without interfaces or floating IPs (its gateway port goes with it).
    pub fn delete_router(&self, id: Uuid) -> Result<(), NetworkError> {
        self.write(|tx, _| {
            let router = repo::router(tx, id)?.ok_or(NetworkError::RouterNotFound(id))?;
            if !router.interfaces.is_empty() {
                return Err(NetworkError::RouterInUse {
                    router: id,
                    reason: format!("still has {} interface(s)", router.interfaces.len()),
                });
            }
            if repo::floating_ips_on_router(tx, id)? > 0 {
                return Err(NetworkError::RouterInUse {
                    router: id,
                    reason: "is used by floating IPs".into(),
                });
            }
            if let Some(gateway) = router.external_gateway {
                repo::delete_port(tx, gateway.port_id)?;
            }
            repo::delete_router(tx, id)
        })
    }

    // ---- floating IPs -------------------------------------------------------------------------

    /// Allocates a floating IP on an external network, associated with a port if one is given.
    pub fn create_floating_ip(&self, request: NewFloatingIp) -> Result<FloatingIp, NetworkError> {
        check_project(&request.project_id)?;
        check_name("description", &request.description)?;
        self.write(|tx, now| {
            let network = repo::network(tx, request.floating_network_id)?
                .ok_or(NetworkError::NetworkNotFound(request.floating_network_id))?;
            if !network.external {
                return Err(invalid(format!(
                    "Network {} is not a valid external network",
                    network.id
                )));
            }
            let id = request.id.unwrap_or_else(Uuid::new_v4);
            if repo::floating_ip(tx, id)?.is_some() {
                return Err(NetworkError::Duplicate {
                    what: "Floating IP",
                    id,
                });
            }
            let fixed = request.floating_ip_address.map(|ip| {
                vec![FixedIpRequest {
                    subnet_id: None,
                    ip_address: Some(ip),
                }]
            });
            let holder =
                create_port_in(
                    tx,
                    now,
                    NewPort {
                        network_id: network.id,
                        project_id: request.project_id.clone(),
                        fixed_ips: Some(fixed.unwrap_or_else(|| {
                            first_v4_request(tx, network.id).unwrap_or_default()
                        })),
                        security_groups: Some(Vec::new()),
                        port_security_enabled: Some(false),
                        device_owner: OWNER_FLOATING_IP.into(),
                        device_id: id.to_string(),
                        ..NewPort::default()
                    },
                )?;
            let address = holder
                .fixed_ips
                .first()
                .map(|f| f.ip_address)
                .ok_or(NetworkError::IpAddressGenerationFailure(network.id))?;
            let mut fip = FloatingIp {
                id,
                project_id: request.project_id,
                description: request.description,
                floating_network_id: network.id,
                floating_ip_address: address,
                floating_port_id: holder.id,
                port_id: None,
                fixed_ip_address: None,
                router_id: None,
                created_at: now,
                updated_at: now,
            };
            if let Some(port) = request.port_id {
                associate(tx, &mut fip, port, request.fixed_ip_address)?;
            }
            repo::insert_floating_ip(tx, &fip)?;
            Ok(fip)
        })
    }

    /// Associates a floating IP with a port (or dissociates it with `None`).
    pub fn update_floating_ip(
        &self,
        id: Uuid,
        port: Option<Uuid>,
        fixed_ip: Option<IpAddr>,
    ) -> Result<FloatingIp, NetworkError> {
        self.write(|tx, now| {
            let mut fip = repo::floating_ip(tx, id)?.ok_or(NetworkError::FloatingIpNotFound(id))?;
            fip.port_id = None;
            fip.fixed_ip_address = None;
            fip.router_id = None;
            if let Some(port) = port {
                associate(tx, &mut fip, port, fixed_ip)?;
            }
            fip.updated_at = now;
            repo::update_floating_ip(tx, &fip)?;
            Ok(fip)
        })
    }

    /// One floating IP.
    pub fn floating_ip(&self, id: Uuid) -> Result<FloatingIp, NetworkError> {
        self.read(|tx| repo::floating_ip(tx, id))?
            .ok_or(NetworkError::FloatingIpNotFound(id))
    }

    /// All floating IPs.
    pub fn floating_ips(&self) -> Result<Vec<FloatingIp>, NetworkError> {
        self.read(repo::floating_ips)
    }

    /// Releases a floating IP and its address.
    pub fn delete_floating_ip(&self, id: Uuid) -> Result<(), NetworkError> {
        self.write(|tx, _| {
            let fip = repo::floating_ip(tx, id)?.ok_or(NetworkError::FloatingIpNotFound(id))?;
            repo::delete_floating_ip(tx, id)?;
            repo::delete_port(tx, fip.floating_port_id)
        })
    }

    /// Records OVN's view of port liveness; returns the ports whose status changed.
    pub fn record_port_status(
        &self,
        statuses: &[(Uuid, PortStatus)],
    ) -> Result<Vec<Uuid>, NetworkError> {
        // Status is observed state: no generation bump, the reconciler does not need to run for it.
        self.store.write(|tx| {
            let mut changed = Vec::new();
            for (id, status) in statuses {
                if repo::set_port_status(tx, *id, *status)? {
                    changed.push(*id);
                }
            }
            Ok(changed)
        })
    }
}

/// Creates (for [`NetworkRequest::Network`]) or binds (for [`NetworkRequest::Port`]) the port of one
/// server NIC, inside the caller's transaction; returns the new network model generation.
///
/// [`NetworkRequest::Network`]: crate::compute::NetworkRequest::Network
/// [`NetworkRequest::Port`]: crate::compute::NetworkRequest::Port
pub(crate) fn attach_server_port(
    tx: &Transaction<'_>,
    now: Timestamp,
    request: crate::compute::NetworkRequest,
    server: Uuid,
    project: &str,
    position: u32,
    security_groups: Option<Vec<Uuid>>,
) -> Result<i64, NetworkError> {
    let (port, owned) = match request {
        crate::compute::NetworkRequest::Network(network) => {
            let port = create_port_in(
                tx,
                now,
                NewPort {
                    network_id: network,
                    project_id: project.to_owned(),
                    security_groups,
                    device_owner: "compute:nova".into(),
                    device_id: server.to_string(),
                    ..NewPort::default()
                },
            )?;
            (port.id, true)
        }
        crate::compute::NetworkRequest::Port(id) => {
            let port = repo::port(tx, id)?.ok_or(NetworkError::PortNotFound(id))?;
            if port.server_id.is_some() || !port.device_owner.is_empty() {
                return Err(NetworkError::PortInUse {
                    port: id,
                    reason: format!("is already used by {}", port.device_owner),
                });
            }
            if port.project_id != project {
                return Err(NetworkError::PortNotFound(id));
            }
            (id, false)
        }
    };
    tx.execute(
        "UPDATE ports SET server_id = ?2, position = ?3, owned_by_server = ?4, device_owner = 'compute:nova', device_id = ?2,
             updated_at = ?5 WHERE id = ?1",
        rusqlite::params![port.to_string(), server.to_string(), position, owned, now.to_string()],
    )?;
    repo::bump_generation(tx)
}

/// Frees the ports of a deleted server: floating IPs on them are disassociated, ports made for the
/// server are deleted, ports the user passed in are unbound and kept.
pub(crate) fn release_server_ports(tx: &Transaction<'_>, server: Uuid) -> Result<(), NetworkError> {
    let id = server.to_string();
    tx.execute(
        "UPDATE floating_ips SET port_id = NULL, fixed_ip_address = NULL, router_id = NULL
         WHERE port_id IN (SELECT id FROM ports WHERE server_id = ?1)",
        [&id],
    )?;
    tx.execute(
        "DELETE FROM ports WHERE server_id = ?1 AND owned_by_server = 1",
        [&id],
    )?;
    tx.execute(
        "UPDATE ports SET server_id = NULL, position = NULL, device_id = '', device_owner = '' WHERE server_id = ?1",
        [&id],
    )?;
    repo::bump_generation(tx)?;
    Ok(())
}

/// The validated match of a rule or rule template.
struct RuleShape {
    direction: Direction,
    ethertype: EtherType,
    protocol: Option<Protocol>,
    min: Option<u16>,
    max: Option<u16>,
    prefix: Option<IpNet>,
}

impl RuleShape {
    /// Neutron's rule validation: direction, family (IPv4 by default), protocol name or number,
    /// port range, and a remote prefix of the rule's family.
    fn parse(
        direction: &str,
        ethertype: Option<&str>,
        protocol: Option<&str>,
        port_range_min: Option<i64>,
        port_range_max: Option<i64>,
        remote_ip_prefix: Option<&str>,
    ) -> Result<Self, NetworkError> {
        let direction = Direction::parse(direction)
            .ok_or_else(|| invalid(format!("direction '{direction}' must be ingress or egress")))?;
        let ethertype = match ethertype {
            None => EtherType::IPv4,
            Some(text) => EtherType::parse(text)
                .ok_or_else(|| invalid(format!("ethertype '{text}' must be IPv4 or IPv6")))?,
        };
        let protocol = match protocol {
            None | Some("any" | "0") => None,
            Some(text) => Some(
                Protocol::parse(text)
                    .ok_or_else(|| invalid(format!("protocol '{text}' is not supported")))?,
            ),
        };
        if matches!(protocol, Some(Protocol::Icmpv6)) && ethertype == EtherType::IPv4 {
            return Err(invalid("protocol icmpv6 needs ethertype IPv6"));
        }
        let (min, max) = check_port_range(protocol, port_range_min, port_range_max)?;
        let prefix = match remote_ip_prefix {
            None => None,
            Some(text) => {
                let prefix: IpNet = text
                    .parse()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| invalid(format!("'{text}' is not a valid remote_ip_prefix")))?;
                if EtherType::of(prefix.addr()) != ethertype {
                    return Err(invalid(format!(
                        "Conflicting value ethertype {} for CIDR {text}",
                        ethertype.as_str()
                    )));
                }
                Some(prefix.trunc())
            }
        };
        Ok(Self {
            direction,
            ethertype,
            protocol,
            min,
            max,
            prefix,
        })
    }
}

/// Neutron's port range rules: L4 ports 1–65535 with min ≤ max, ICMP type/code 0–255, nothing without a
/// protocol that has them.
fn check_port_range(
    protocol: Option<Protocol>,
    min: Option<i64>,
    max: Option<i64>,
) -> Result<(Option<u16>, Option<u16>), NetworkError> {
    match protocol {
        Some(p) if p.has_ports() => match (min, max) {
            (None, None) => Ok((None, None)),
            (Some(lo), Some(hi)) => {
                for v in [lo, hi] {
                    if !(1..=65535).contains(&v) {
                        return Err(invalid(format!(
                            "Invalid value for port {v}: ports must be 1-65535"
                        )));
                    }
                }
                if lo > hi {
                    return Err(invalid(
                        "For TCP/UDP protocols, port_range_min must be <= port_range_max",
                    ));
                }
                Ok((Some(lo as u16), Some(hi as u16)))
            }
            _ => Err(invalid(
                "port_range_min and port_range_max must be given together",
            )),
        },
        Some(p) if p.is_icmp() => {
            for (name, v) in [("type", min), ("code", max)] {
                if let Some(v) = v
                    && !(0..=255).contains(&v)
                {
                    return Err(invalid(format!("Invalid value for ICMP {name}: {v}")));
                }
            }
            if min.is_none() && max.is_some() {
                return Err(invalid(
                    "ICMP code (port_range_max) is specified but ICMP type (port_range_min) is missing",
                ));
            }
            Ok((min.map(|v| v as u16), max.map(|v| v as u16)))
        }
        _ => {
            if min.is_some() || max.is_some() {
                return Err(invalid(
                    "Must also specify protocol tcp, udp, sctp, icmp or icmpv6 if port range is given",
                ));
            }
            Ok((None, None))
        }
    }
}

/// A new group with the rules the templates give a group of its kind (`default` or not); templates
/// naming a remote group that no longer exists are skipped.
fn new_group(
    tx: &Transaction<'_>,
    id: Uuid,
    name: &str,
    description: &str,
    project: &str,
    now: Timestamp,
    default: bool,
) -> Result<SecurityGroup, NetworkError> {
    let mut rules = Vec::new();
    for template in repo::default_rules(tx)? {
        let wanted = if default {
            template.used_in_default_sg
        } else {
            template.used_in_non_default_sg
        };
        if !wanted {
            continue;
        }
        let remote_group_id = match template.remote_group {
            None => None,
            Some(TemplateRemoteGroup::Parent) => Some(id),
            Some(TemplateRemoteGroup::Group(group)) => {
                if repo::security_group(tx, group)?.is_none() {
                    tracing::warn!(template = %template.id, %group, "default security group rule names a missing remote group; skipped");
                    continue;
                }
                Some(group)
            }
        };
        rules.push(SecurityGroupRule {
            id: Uuid::new_v4(),
            security_group_id: id,
            project_id: project.to_owned(),
            direction: template.direction,
            ethertype: template.ethertype,
            protocol: template.protocol,
            port_range_min: template.port_range_min,
            port_range_max: template.port_range_max,
            remote_ip_prefix: template.remote_ip_prefix,
            remote_group_id,
            description: template.description,
            created_at: now,
        });
    }
    Ok(SecurityGroup {
        id,
        name: name.to_owned(),
        description: description.to_owned(),
        project_id: project.to_owned(),
        stateful: true,
        rules,
        created_at: now,
        updated_at: now,
    })
}

fn ensure_default_group(
    tx: &Transaction<'_>,
    project: &str,
    now: Timestamp,
) -> Result<Uuid, NetworkError> {
    if let Some(id) = repo::default_security_group(tx, project)? {
        return Ok(id);
    }
    let group = new_group(
        tx,
        Uuid::new_v4(),
        "default",
        "Default security group",
        project,
        now,
        true,
    )?;
    repo::insert_security_group(tx, &group)?;
    Ok(group.id)
}

/// One address request on the network's first IPv4 subnet, if it has one.
fn first_v4_request(tx: &Transaction<'_>, network: Uuid) -> Option<Vec<FixedIpRequest>> {
    let subnets = repo::subnets(tx, Some(network)).ok()?;
    let subnet = subnets.iter().find(|s| s.ip_version == 4)?;
    Some(vec![FixedIpRequest {
        subnet_id: Some(subnet.id),
        ip_address: None,
    }])
}

/// The port-creation logic shared by the port API, router interfaces, gateways and floating IPs.
fn create_port_in(
    tx: &Transaction<'_>,
    now: Timestamp,
    request: NewPort,
) -> Result<Port, NetworkError> {
    check_name("name", &request.name)?;
    check_name("description", &request.description)?;
    check_project(&request.project_id)?;
    let network = repo::network(tx, request.network_id)?
        .ok_or(NetworkError::NetworkNotFound(request.network_id))?;
    let id = request.id.unwrap_or_else(Uuid::new_v4);
    if repo::port_exists(tx, id)? {
        return Err(NetworkError::Duplicate { what: "Port", id });
    }
    let mac = match &request.mac {
        Some(mac) => {
            let mac = normalise_mac(mac)?;
            if repo::mac_in_use(tx, &mac)? {
                return Err(NetworkError::MacAddressInUse {
                    network: network.id,
                    mac,
                });
            }
            mac
        }
        None => loop {
            let candidate = random_mac();
            if !repo::mac_in_use(tx, &candidate)? {
                break candidate;
            }
        },
    };
    let subnets = repo::subnets(tx, Some(network.id))?;
    let requests = if let Some(requests) = request.fixed_ips {
        requests
    } else {
        // One address per family, from the family's first subnet (SLAAC subnets derive theirs).
        let mut auto = Vec::new();
        for version in [4u8, 6] {
            if let Some(subnet) = subnets.iter().find(|s| s.ip_version == version) {
                auto.push(FixedIpRequest {
                    subnet_id: Some(subnet.id),
                    ip_address: None,
                });
            }
        }
        auto
    };
    let is_router_port = request.device_owner == OWNER_ROUTER_INTERFACE
        || request.device_owner == OWNER_ROUTER_GATEWAY;
    let mut fixed_ips: Vec<FixedIp> = Vec::with_capacity(requests.len());
    for wanted in requests {
        let subnet = match (wanted.subnet_id, wanted.ip_address) {
            (Some(subnet_id), _) => {
                subnets.iter().find(|s| s.id == subnet_id).ok_or_else(|| {
                    invalid(format!(
                        "subnet {subnet_id} is not on network {}",
                        network.id
                    ))
                })?
            }
            (None, Some(ip)) => subnets
                .iter()
                .find(|s| s.cidr.contains(&ip))
                .ok_or_else(|| {
                    invalid(format!(
                        "IP address {ip} is not a valid IP for any subnet on network {}",
                        network.id
                    ))
                })?,
            (None, None) => {
                return Err(invalid(
                    "each fixed_ips entry needs a subnet_id or an ip_address",
                ));
            }
        };
        let allocated = repo::allocated(tx, subnet.id)?;
        let slaac = subnet
            .ipv6_address_mode
            .is_some_and(|m| m != Ipv6Mode::Dhcpv6Stateful);
        let address = match wanted.ip_address {
            Some(ip) => {
                check_address(subnet.cidr, ip, "fixed IP").map_err(NetworkError::from)?;
                if Some(ip) == subnet.gateway_ip && !is_router_port {
                    return Err(NetworkError::IpAddressInUse {
                        network: network.id,
                        ip,
                    });
                }
                ip
            }
            None if slaac => slaac_address(subnet.cidr, &mac).ok_or_else(|| {
                invalid(format!("cannot derive a SLAAC address in {}", subnet.cidr))
            })?,
            None => lowest_free(&subnet.allocation_pools, &allocated)
                .ok_or(NetworkError::IpAddressGenerationFailure(network.id))?,
        };
        if allocated.contains(&address)
            || fixed_ips
                .iter()
                .any(|f| f.subnet_id == subnet.id && f.ip_address == address)
        {
            return Err(NetworkError::IpAddressInUse {
                network: network.id,
                ip: address,
            });
        }
        fixed_ips.push(FixedIp {
            subnet_id: subnet.id,
            ip_address: address,
        });
    }
    let port_security = request
        .port_security_enabled
        .unwrap_or(network.port_security_enabled);
    let security_groups = match request.security_groups {
        Some(groups) => {
            if !port_security && !groups.is_empty() {
                return Err(invalid(
                    "Port security must be enabled in order to have security groups on a port.",
                ));
            }
            for group in &groups {
                repo::security_group(tx, *group)?
                    .ok_or(NetworkError::SecurityGroupNotFound(*group))?;
            }
            groups
        }
        None if port_security && !request.device_owner.starts_with("network:") => {
            vec![ensure_default_group(tx, &request.project_id, now)?]
        }
        None => Vec::new(),
    };
    if !port_security && !request.allowed_address_pairs.is_empty() {
        return Err(invalid(
            "Port security must be enabled in order to have allowed address pairs on a port.",
        ));
    }
    let port = Port {
        id,
        network_id: Some(network.id),
        project_id: request.project_id,
        name: request.name,
        description: request.description,
        mac,
        admin_state_up: request.admin_state_up.unwrap_or(true),
        port_security_enabled: port_security,
        allowed_address_pairs: request.allowed_address_pairs,
        device_owner: request.device_owner,
        device_id: request.device_id,
        fixed_ips,
        security_groups,
        status: PortStatus::Down,
        server_id: None,
        created_at: now,
        updated_at: now,
    };
    repo::insert_port(tx, &port)?;
    Ok(port)
}

/// Sets, changes or clears `router`'s gateway. A change of SNAT only (same network, no new address
/// asked for) keeps the gateway port and its address.
fn replace_gateway(
    tx: &Transaction<'_>,
    now: Timestamp,
    router: &Router,
    gateway: Option<GatewayInfo>,
) -> Result<(), NetworkError> {
    if let Some(current) = &router.external_gateway {
        if let Some(wanted) = gateway
            && wanted.network_id == current.network_id
            && wanted.ip_address.is_none_or(|ip| {
                current
                    .external_fixed_ips
                    .iter()
                    .any(|f| f.ip_address == ip)
            })
        {
            return repo::set_router_gateway(
                tx,
                router.id,
                Some(current.network_id),
                wanted.enable_snat,
                now,
            );
        }
        let keeps_network = gateway.is_some_and(|g| g.network_id == current.network_id);
        if !keeps_network && repo::floating_ips_on_router(tx, router.id)? > 0 {
            return Err(NetworkError::RouterInUse {
                router: router.id,
                reason: format!(
                    "needs its gateway to external network {}: floating IPs use it",
                    current.network_id
                ),
            });
        }
        repo::delete_port(tx, current.port_id)?;
        repo::set_router_gateway(tx, router.id, None, true, now)?;
    }
    if let Some(gateway) = gateway {
        attach_gateway(tx, now, router.id, &router.project_id, gateway)?;
    }
    Ok(())
}

fn attach_gateway(
    tx: &Transaction<'_>,
    now: Timestamp,
    router: Uuid,
    project: &str,
    gateway: GatewayInfo,
) -> Result<(), NetworkError> {
    let network = repo::network(tx, gateway.network_id)?
        .ok_or(NetworkError::NetworkNotFound(gateway.network_id))?;
    if !network.external {
        return Err(NetworkError::BadRouterRequest(format!(
            "Network {} is not a valid external network",
            network.id
        )));
    }
    let fixed = match gateway.ip_address {
        Some(ip) => vec![FixedIpRequest {
            subnet_id: None,
            ip_address: Some(ip),
        }],
        None => first_v4_request(tx, network.id).ok_or_else(|| {
            NetworkError::BadRouterRequest(format!(
                "External network {} has no IPv4 subnet",
                network.id
            ))
        })?,
    };
    create_port_in(
        tx,
        now,
        NewPort {
            network_id: network.id,
            project_id: project.to_owned(),
            fixed_ips: Some(fixed),
            security_groups: Some(Vec::new()),
            port_security_enabled: Some(false),
            device_owner: OWNER_ROUTER_GATEWAY.into(),
            device_id: router.to_string(),
            ..NewPort::default()
        },
    )?;
    repo::set_router_gateway(tx, router, Some(network.id), gateway.enable_snat, now)
}

/// Fills in the association of `fip` with `port`: its fixed address and the router that connects the
/// port's subnet to the floating network.
fn associate(
    tx: &Transaction<'_>,
    fip: &mut FloatingIp,
    port_id: Uuid,
    fixed_ip: Option<IpAddr>,
) -> Result<(), NetworkError> {
    let port = repo::port(tx, port_id)?.ok_or(NetworkError::PortNotFound(port_id))?;
    let fixed = match fixed_ip {
        Some(ip) => *port
            .fixed_ips
            .iter()
            .find(|f| f.ip_address == ip)
            .ok_or_else(|| invalid(format!("Port {port_id} does not have fixed ip {ip}")))?,
        None => *port
            .fixed_ips
            .iter()
            .find(|f| f.ip_address.is_ipv4())
            .ok_or_else(|| {
                invalid(format!(
                    "Port {port_id} has no IPv4 address to associate a floating IP with"
                ))
            })?,
    };
    if !fixed.ip_address.is_ipv4() {
        return Err(invalid("floating IPs map to IPv4 fixed addresses only"));
    }
    for other in repo::floating_ips(tx)? {
        if other.id != fip.id
            && other.port_id == Some(port_id)
            && other.fixed_ip_address == Some(fixed.ip_address)
        {
            return Err(NetworkError::FloatingIpPortAlreadyAssociated {
                port: port_id,
                ip: fixed.ip_address,
                existing: other.id,
            });
        }
    }
    let router = repo::routers(tx)?.into_iter().find(|r| {
        r.interfaces.iter().any(|i| i.subnet_id == fixed.subnet_id)
            && r.external_gateway
                .as_ref()
                .is_some_and(|g| g.network_id == fip.floating_network_id)
    });
    let router = router.ok_or(NetworkError::ExternalGatewayNotFound {
        network: fip.floating_network_id,
        subnet: fixed.subnet_id,
        port: port_id,
    })?;
    fip.port_id = Some(port_id);
    fip.fixed_ip_address = Some(fixed.ip_address);
    fip.router_id = Some(router.id);
    Ok(())
}

fn disassociate(tx: &Transaction<'_>, id: Uuid) -> Result<(), NetworkError> {
    let mut fip = repo::floating_ip(tx, id)?.ok_or(NetworkError::FloatingIpNotFound(id))?;
    fip.port_id = None;
    fip.fixed_ip_address = None;
    fip.router_id = None;
    repo::update_floating_ip(tx, &fip)
}

mod templates;
#[cfg(test)]
mod tests;
mod updates;

pub use templates::NewDefaultRule;
pub use updates::{FloatingIpUpdate, NetworkUpdate, PortUpdate, RouterUpdate, SubnetUpdate};
