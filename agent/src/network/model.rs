//! The Neutron network model as the agent keeps it: plain data, no I/O.

use ipnet::IpNet;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use uuid::Uuid;

/// Neutron `device_owner` of router interface ports.
pub const OWNER_ROUTER_INTERFACE: &str = "network:router_interface";
/// Neutron `device_owner` of router gateway ports.
pub const OWNER_ROUTER_GATEWAY: &str = "network:router_gateway";
/// Neutron `device_owner` of the ports holding floating addresses.
pub const OWNER_FLOATING_IP: &str = "network:floatingip";
/// Prefix of the `device_owner` of server NICs (`compute:nova` on Nova clouds).
pub const OWNER_COMPUTE_PREFIX: &str = "compute:";

/// How a network's traffic is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    /// An overlay network between the site's nodes (tenant networks).
    Geneve,
    /// Untagged on a physical network (provider/external networks).
    Flat,
    /// 802.1Q-tagged on a physical network.
    Vlan,
}

impl NetworkType {
    /// Neutron's spelling (`provider:network_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Geneve => "geneve",
            Self::Flat => "flat",
            Self::Vlan => "vlan",
        }
    }

    /// Parses Neutron's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "geneve" => Some(Self::Geneve),
            "flat" => Some(Self::Flat),
            "vlan" => Some(Self::Vlan),
            _ => None,
        }
    }
}

/// A network (an OVN logical switch).
#[allow(clippy::struct_excessive_bools)] // Neutron's own attributes, each an independent flag
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Owning project.
    pub project_id: String,
    /// Administratively up.
    pub admin_state_up: bool,
    /// Usable by every project.
    pub shared: bool,
    /// `router:external`: routers may use it as their gateway network.
    pub external: bool,
    /// Overlay or provider.
    pub network_type: NetworkType,
    /// Physical network (bridge mapping name) of provider networks.
    pub physical_network: Option<String>,
    /// VLAN id of VLAN networks.
    pub segmentation_id: Option<u16>,
    /// MTU guests get.
    pub mtu: u32,
    /// Default of new ports.
    pub port_security_enabled: bool,
    /// Its subnets.
    pub subnets: Vec<Uuid>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// An inclusive range of addresses IPAM may hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AllocationPool {
    /// First address.
    pub start: IpAddr,
    /// Last address.
    pub end: IpAddr,
}

/// A route a subnet's DHCP hands to guests (or a router's static route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix.
    pub destination: IpNet,
    /// Next hop.
    pub nexthop: IpAddr,
}

/// IPv6 address configuration modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ipv6Mode {
    /// Stateless address autoconfiguration.
    #[serde(rename = "slaac")]
    Slaac,
    /// Addresses from DHCPv6.
    #[serde(rename = "dhcpv6-stateful")]
    Dhcpv6Stateful,
    /// SLAAC addresses, other configuration from DHCPv6.
    #[serde(rename = "dhcpv6-stateless")]
    Dhcpv6Stateless,
}

impl Ipv6Mode {
    /// Neutron's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slaac => "slaac",
            Self::Dhcpv6Stateful => "dhcpv6-stateful",
            Self::Dhcpv6Stateless => "dhcpv6-stateless",
        }
    }

    /// Parses Neutron's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "slaac" => Some(Self::Slaac),
            "dhcpv6-stateful" => Some(Self::Dhcpv6Stateful),
            "dhcpv6-stateless" => Some(Self::Dhcpv6Stateless),
            _ => None,
        }
    }
}

/// A subnet (OVN DHCP_Options when DHCP is enabled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subnet {
    /// Id.
    pub id: Uuid,
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
    /// The prefix.
    pub cidr: IpNet,
    /// Gateway (the router interface address), if any.
    pub gateway_ip: Option<IpAddr>,
    /// Ranges IPAM allocates from.
    pub allocation_pools: Vec<AllocationPool>,
    /// DNS servers handed out by DHCP.
    pub dns_nameservers: Vec<IpAddr>,
    /// Extra routes handed out by DHCP.
    pub host_routes: Vec<Route>,
    /// OVN answers DHCP for this subnet.
    pub enable_dhcp: bool,
    /// IPv6 address mode.
    pub ipv6_address_mode: Option<Ipv6Mode>,
    /// IPv6 router advertisement mode.
    pub ipv6_ra_mode: Option<Ipv6Mode>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// An address a port holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FixedIp {
    /// Subnet it comes from.
    pub subnet_id: Uuid,
    /// The address.
    pub ip_address: IpAddr,
}

/// An extra address (and MAC) port security lets through.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddressPair {
    /// Address or prefix.
    pub ip_address: IpNet,
    /// MAC; the port's own when absent.
    pub mac_address: Option<String>,
}

/// Whether OVN reports the port bound and up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PortStatus {
    /// Not bound, or down.
    Down,
    /// Bound on a chassis and up.
    Active,
}

impl PortStatus {
    /// Neutron's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Down => "DOWN",
            Self::Active => "ACTIVE",
        }
    }
}

/// A port (an OVN logical switch port).
#[allow(clippy::struct_excessive_bools)] // Neutron's own attributes, each an independent flag
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// Id; OVN's logical port name and the VIF's `iface-id`.
    pub id: Uuid,
    /// Network; `None` for NICs of servers on a node without networking.
    pub network_id: Option<Uuid>,
    /// Project.
    pub project_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// MAC address.
    pub mac: String,
    /// Administratively up.
    pub admin_state_up: bool,
    /// Anti-spoofing and security groups apply.
    pub port_security_enabled: bool,
    /// Extra addresses port security allows.
    pub allowed_address_pairs: Vec<AddressPair>,
    /// What uses it (`compute:nova`, `network:router_interface`, …).
    pub device_owner: String,
    /// Id of what uses it (server or router id).
    pub device_id: String,
    /// Its addresses.
    pub fixed_ips: Vec<FixedIp>,
    /// Its security groups.
    pub security_groups: Vec<Uuid>,
    /// UP/DOWN as OVN reports it.
    pub status: PortStatus,
    /// Server whose NIC it is, on this node.
    pub server_id: Option<Uuid>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// Traffic direction of a security group rule, seen from the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Towards the port.
    Ingress,
    /// From the port.
    Egress,
}

impl Direction {
    /// Neutron's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }

    /// Parses Neutron's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ingress" => Some(Self::Ingress),
            "egress" => Some(Self::Egress),
            _ => None,
        }
    }
}

/// Address family of a security group rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EtherType {
    /// IPv4.
    IPv4,
    /// IPv6.
    IPv6,
}

impl EtherType {
    /// Neutron's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IPv4 => "IPv4",
            Self::IPv6 => "IPv6",
        }
    }

    /// Parses Neutron's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "IPv4" => Some(Self::IPv4),
            "IPv6" => Some(Self::IPv6),
            _ => None,
        }
    }

    /// The family an address belongs to.
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Self::IPv4 } else { Self::IPv6 }
    }
}

/// IP protocol of a security group rule, normalised: known names lower-case, others as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
    /// Any other IP protocol number.
    Number(u8),
}

impl Protocol {
    /// Parses a Neutron protocol: a name (`tcp`, `udp`, `sctp`, `icmp`, `icmpv6`, `ipv6-icmp`) or a number
    /// 0–255 (numbers of the named protocols normalise to the name).
    pub fn parse(text: &str) -> Option<Self> {
        let named = match text.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Some(Self::Tcp),
            "udp" | "17" => Some(Self::Udp),
            "sctp" | "132" => Some(Self::Sctp),
            "icmp" | "1" => Some(Self::Icmp),
            "icmpv6" | "ipv6-icmp" | "58" => Some(Self::Icmpv6),
            _ => None,
        };
        named.or_else(|| text.parse::<u8>().ok().map(Self::Number))
    }

    /// Neutron's spelling.
    pub fn as_string(self) -> String {
        match self {
            Self::Tcp => "tcp".into(),
            Self::Udp => "udp".into(),
            Self::Sctp => "sctp".into(),
            Self::Icmp => "icmp".into(),
            Self::Icmpv6 => "icmpv6".into(),
            Self::Number(n) => n.to_string(),
        }
    }

    /// Whether the port range means L4 ports (rather than ICMP type/code).
    pub fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp | Self::Sctp)
    }

    /// Whether the port range means ICMP type and code.
    pub fn is_icmp(self) -> bool {
        matches!(self, Self::Icmp | Self::Icmpv6)
    }
}

/// A security group rule (an OVN ACL on the group's port group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityGroupRule {
    /// Id.
    pub id: Uuid,
    /// Group it belongs to.
    pub security_group_id: Uuid,
    /// Project.
    pub project_id: String,
    /// Direction.
    pub direction: Direction,
    /// Family.
    pub ethertype: EtherType,
    /// Protocol; any when absent.
    pub protocol: Option<Protocol>,
    /// First port (or ICMP type).
    pub port_range_min: Option<u16>,
    /// Last port (or ICMP code).
    pub port_range_max: Option<u16>,
    /// Remote prefix.
    pub remote_ip_prefix: Option<IpNet>,
    /// Remote group (traffic from/to its members).
    pub remote_group_id: Option<Uuid>,
    /// Description.
    pub description: String,
    /// Created.
    pub created_at: Timestamp,
}

impl SecurityGroupRule {
    /// What makes two rules the same rule (Neutron refuses duplicates).
    pub fn signature(&self) -> impl Eq + std::fmt::Debug + '_ {
        (
            self.direction,
            self.ethertype,
            self.protocol,
            self.port_range_min,
            self.port_range_max,
            self.remote_ip_prefix,
            self.remote_group_id,
        )
    }
}

/// A security group (an OVN port group with ACLs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityGroup {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Project.
    pub project_id: String,
    /// Connection tracking (allow-related); stateless groups are not supported yet.
    pub stateful: bool,
    /// Rules.
    pub rules: Vec<SecurityGroupRule>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// A router's gateway on an external network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExternalGateway {
    /// The external network.
    pub network_id: Uuid,
    /// SNAT tenant traffic to the gateway address.
    pub enable_snat: bool,
    /// The gateway port's addresses.
    pub external_fixed_ips: Vec<FixedIp>,
    /// The gateway port.
    pub port_id: Uuid,
}

/// A router interface: a port on a subnet, holding its gateway address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RouterInterface {
    /// The interface port.
    pub port_id: Uuid,
    /// The subnet.
    pub subnet_id: Uuid,
}

/// A router (an OVN logical router).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Router {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Project.
    pub project_id: String,
    /// Administratively up.
    pub admin_state_up: bool,
    /// Gateway, if set.
    pub external_gateway: Option<ExternalGateway>,
    /// Static routes.
    pub routes: Vec<Route>,
    /// Interfaces.
    pub interfaces: Vec<RouterInterface>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// A floating IP (an OVN dnat_and_snat rule on the router).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FloatingIp {
    /// Id.
    pub id: Uuid,
    /// Project.
    pub project_id: String,
    /// Description.
    pub description: String,
    /// The external network.
    pub floating_network_id: Uuid,
    /// The address.
    pub floating_ip_address: IpAddr,
    /// The port on the external network holding the address.
    pub floating_port_id: Uuid,
    /// Associated port.
    pub port_id: Option<Uuid>,
    /// Associated fixed address.
    pub fixed_ip_address: Option<IpAddr>,
    /// Router doing the NAT.
    pub router_id: Option<Uuid>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

impl FloatingIp {
    /// ACTIVE when associated, DOWN otherwise (Neutron's rule).
    pub fn status(&self) -> &'static str {
        if self.port_id.is_some() {
            "ACTIVE"
        } else {
            "DOWN"
        }
    }
}

/// The remote group of a default security group rule template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum TemplateRemoteGroup {
    /// The group the rule is put in (Neutron's `PARENT`): members may reach each other.
    Parent,
    /// A fixed group; a template naming a group that no longer exists is skipped.
    Group(Uuid),
}

impl TemplateRemoteGroup {
    /// Neutron's spelling: `PARENT` or the group id.
    pub fn as_string(self) -> String {
        match self {
            Self::Parent => "PARENT".into(),
            Self::Group(id) => id.to_string(),
        }
    }

    /// Parses Neutron's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        if text == "PARENT" {
            Some(Self::Parent)
        } else {
            Uuid::parse_str(text).ok().map(Self::Group)
        }
    }
}

/// A template rule new security groups get (Neutron's `default-security-group-rules`, SCS-0115):
/// the operator decides what a project's `default` group and other new groups start with.
#[allow(clippy::struct_excessive_bools)] // Neutron's own attributes, each an independent flag
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefaultSecurityGroupRule {
    /// Id.
    pub id: Uuid,
    /// Direction.
    pub direction: Direction,
    /// Family.
    pub ethertype: EtherType,
    /// Protocol; any when absent.
    pub protocol: Option<Protocol>,
    /// First port (or ICMP type).
    pub port_range_min: Option<u16>,
    /// Last port (or ICMP code).
    pub port_range_max: Option<u16>,
    /// Remote prefix.
    pub remote_ip_prefix: Option<IpNet>,
    /// Remote group.
    pub remote_group: Option<TemplateRemoteGroup>,
    /// Applied to each project's `default` group when it is created.
    pub used_in_default_sg: bool,
    /// Applied to every other new group.
    pub used_in_non_default_sg: bool,
    /// Description.
    pub description: String,
    /// Created.
    pub created_at: Timestamp,
}

impl DefaultSecurityGroupRule {
    /// What makes two templates the same template (duplicates are refused, as for rules).
    pub fn signature(&self) -> impl Eq + std::fmt::Debug + '_ {
        (
            self.direction,
            self.ethertype,
            self.protocol,
            self.port_range_min,
            self.port_range_max,
            self.remote_ip_prefix,
            self.remote_group,
        )
    }
}
