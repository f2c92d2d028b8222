//! `network`, `subnet`, `port`, `security-group`, `router` and `floating-ip` admin commands.
#![allow(clippy::print_stdout)]

use super::{CliFailure, print};
use crate::network::NetworkService;
use crate::network::model::{AllocationPool, NetworkType};
use crate::network::service::{
    FixedIpRequest, GatewayInfo, GatewayRequest, InterfaceTarget, NewFloatingIp, NewNetwork,
    NewPort, NewRouter, NewRule, NewSubnet, ProviderRequest,
};
use clap::{Args, Subcommand};
use std::net::IpAddr;
use uuid::Uuid;

fn bad(message: String) -> CliFailure {
    CliFailure { message, code: 3 }
}

/// `network …`
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network (an overlay network unless a provider type is given).
    Create(NetworkCreate),
    /// List networks.
    List,
    /// Show a network.
    Show {
        /// Network id.
        id: Uuid,
    },
    /// Delete a network without ports.
    Delete {
        /// Network id.
        id: Uuid,
    },
}

/// `network create`
#[derive(Debug, Args)]
pub struct NetworkCreate {
    /// Name.
    #[arg(long)]
    pub name: String,
    /// Id (default: a new UUID).
    #[arg(long)]
    pub id: Option<Uuid>,
    /// Project.
    #[arg(long, default_value = "admin")]
    pub project: String,
    /// Routers may use it as their gateway network (`router:external`).
    #[arg(long)]
    pub external: bool,
    /// Usable by every project.
    #[arg(long)]
    pub shared: bool,
    /// `flat` or `vlan` for a provider network.
    #[arg(long)]
    pub provider_type: Option<String>,
    /// Physical network of a provider network.
    #[arg(long)]
    pub physnet: Option<String>,
    /// VLAN id of a vlan network.
    #[arg(long)]
    pub vlan: Option<u16>,
    /// MTU (default: the largest the network type allows).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// New ports get no port security by default.
    #[arg(long)]
    pub no_port_security: bool,
}

/// `subnet …`
#[derive(Debug, Subcommand)]
pub enum SubnetCommand {
    /// Create a subnet.
    Create(SubnetCreate),
    /// List subnets.
    List,
    /// Show a subnet.
    Show {
        /// Subnet id.
        id: Uuid,
    },
    /// Delete a subnet no port has an address in.
    Delete {
        /// Subnet id.
        id: Uuid,
    },
}

/// `subnet create`
#[derive(Debug, Args)]
pub struct SubnetCreate {
    /// Network.
    #[arg(long)]
    pub network: Uuid,
    /// Prefix, e.g. 10.0.0.0/24 or fd00::/64.
    #[arg(long)]
    pub cidr: String,
    /// Name.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Id (default: a new UUID).
    #[arg(long)]
    pub id: Option<Uuid>,
    /// Project.
    #[arg(long, default_value = "admin")]
    pub project: String,
    /// Gateway address, or `none` (default: the first usable address).
    #[arg(long)]
    pub gateway: Option<String>,
    /// Allocation pool `start-end` (repeatable; default: all usable addresses but the gateway).
    #[arg(long = "pool")]
    pub pools: Vec<String>,
    /// DNS server handed out by DHCP (repeatable).
    #[arg(long = "dns")]
    pub dns: Vec<IpAddr>,
    /// No DHCP on this subnet.
    #[arg(long)]
    pub no_dhcp: bool,
}

/// `port …`
#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Create a port.
    Create(PortCreate),
    /// List ports.
    List,
    /// Show a port.
    Show {
        /// Port id.
        id: Uuid,
    },
    /// Replace a port's security groups.
    SetSecurityGroups {
        /// Port id.
        id: Uuid,
        /// Security group (repeatable; none clears).
        #[arg(long = "security-group")]
        groups: Vec<Uuid>,
    },
    /// Delete a port.
    Delete {
        /// Port id.
        id: Uuid,
    },
}

/// `port create`
#[derive(Debug, Args)]
pub struct PortCreate {
    /// Network.
    #[arg(long)]
    pub network: Uuid,
    /// Name.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Id (default: a new UUID).
    #[arg(long)]
    pub id: Option<Uuid>,
    /// Project.
    #[arg(long, default_value = "admin")]
    pub project: String,
    /// Fixed address (repeatable; default: one from each family's first subnet).
    #[arg(long = "ip")]
    pub ips: Vec<IpAddr>,
    /// MAC (default: generated).
    #[arg(long)]
    pub mac: Option<String>,
    /// Security group (repeatable; default: the project's `default` group).
    #[arg(long = "security-group")]
    pub groups: Vec<Uuid>,
    /// No port security (no anti-spoofing, no security groups).
    #[arg(long)]
    pub no_port_security: bool,
}

/// `security-group …`
#[derive(Debug, Subcommand)]
pub enum SecurityGroupCommand {
    /// Create a group (with the default egress rules).
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Project.
        #[arg(long, default_value = "admin")]
        project: String,
        /// Id (default: a new UUID).
        #[arg(long)]
        id: Option<Uuid>,
    },
    /// The project's `default` group (made on first use).
    Default {
        /// Project.
        #[arg(long, default_value = "admin")]
        project: String,
    },
    /// List groups with their rules.
    List,
    /// Delete a group no port uses.
    Delete {
        /// Group id.
        id: Uuid,
    },
    /// Add a rule.
    RuleCreate(RuleCreate),
    /// Delete a rule.
    RuleDelete {
        /// Rule id.
        id: Uuid,
    },
}

/// `security-group rule-create`
#[derive(Debug, Args)]
pub struct RuleCreate {
    /// Group.
    #[arg(long)]
    pub group: Uuid,
    /// `ingress` or `egress`.
    #[arg(long, default_value = "ingress")]
    pub direction: String,
    /// `IPv4` or `IPv6`.
    #[arg(long, default_value = "IPv4")]
    pub ethertype: String,
    /// Protocol name or number (default: any).
    #[arg(long)]
    pub protocol: Option<String>,
    /// First port / ICMP type.
    #[arg(long)]
    pub port_min: Option<i64>,
    /// Last port / ICMP code.
    #[arg(long)]
    pub port_max: Option<i64>,
    /// Remote prefix.
    #[arg(long)]
    pub remote_ip: Option<String>,
    /// Remote group.
    #[arg(long)]
    pub remote_group: Option<Uuid>,
    /// Project.
    #[arg(long, default_value = "admin")]
    pub project: String,
}

/// `router …`
#[derive(Debug, Subcommand)]
pub enum RouterCommand {
    /// Create a router.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Project.
        #[arg(long, default_value = "admin")]
        project: String,
        /// External network for the gateway.
        #[arg(long)]
        external_network: Option<Uuid>,
        /// No SNAT through the gateway.
        #[arg(long)]
        no_snat: bool,
        /// Id (default: a new UUID).
        #[arg(long)]
        id: Option<Uuid>,
    },
    /// Attach a subnet.
    AddInterface {
        /// Router.
        router: Uuid,
        /// Subnet.
        #[arg(long)]
        subnet: Uuid,
    },
    /// Detach a subnet.
    RemoveInterface {
        /// Router.
        router: Uuid,
        /// Subnet.
        #[arg(long)]
        subnet: Uuid,
    },
    /// Set (or with no network, clear) the external gateway.
    SetGateway {
        /// Router.
        router: Uuid,
        /// External network.
        #[arg(long)]
        network: Option<Uuid>,
    },
    /// List routers.
    List,
    /// Show a router.
    Show {
        /// Router id.
        id: Uuid,
    },
    /// Delete a router without interfaces.
    Delete {
        /// Router id.
        id: Uuid,
    },
}

/// `floating-ip …`
#[derive(Debug, Subcommand)]
pub enum FloatingIpCommand {
    /// Allocate a floating IP, optionally associated with a port.
    Create {
        /// External network.
        #[arg(long)]
        network: Uuid,
        /// Port to associate.
        #[arg(long)]
        port: Option<Uuid>,
        /// Project.
        #[arg(long, default_value = "admin")]
        project: String,
    },
    /// Associate with a port.
    Associate {
        /// Floating IP.
        id: Uuid,
        /// Port.
        #[arg(long)]
        port: Uuid,
    },
    /// Dissociate from its port.
    Disassociate {
        /// Floating IP.
        id: Uuid,
    },
    /// List floating IPs.
    List,
    /// Release a floating IP.
    Delete {
        /// Floating IP.
        id: Uuid,
    },
}

fn pool(text: &str) -> Result<AllocationPool, CliFailure> {
    let (start, end) = text
        .split_once('-')
        .ok_or_else(|| bad(format!("pool {text:?} must be start-end")))?;
    Ok(AllocationPool {
        start: start
            .parse()
            .map_err(|_| bad(format!("bad pool start {start:?}")))?,
        end: end
            .parse()
            .map_err(|_| bad(format!("bad pool end {end:?}")))?,
    })
}

/// Runs `network …`.
pub fn network(cmd: NetworkCommand, svc: &NetworkService) -> Result<(), CliFailure> {
    match cmd {
        NetworkCommand::Create(a) => {
            let provider = match a.provider_type.as_deref() {
                None => None,
                Some(t) => Some(ProviderRequest {
                    network_type: NetworkType::parse(t).ok_or_else(|| {
                        bad(format!("provider type {t:?} must be flat, vlan or geneve"))
                    })?,
                    physical_network: a.physnet,
                    segmentation_id: a.vlan,
                }),
            };
            print(&svc.create_network(NewNetwork {
                id: a.id,
                name: a.name,
                project_id: a.project,
                shared: a.shared,
                external: a.external,
                provider,
                mtu: a.mtu,
                port_security_enabled: Some(!a.no_port_security),
                ..NewNetwork::default()
            })?);
        }
        NetworkCommand::List => print(&svc.networks()?),
        NetworkCommand::Show { id } => print(&svc.network(id)?),
        NetworkCommand::Delete { id } => svc.delete_network(id)?,
    }
    Ok(())
}

/// Runs `subnet …`.
pub fn subnet(cmd: SubnetCommand, svc: &NetworkService) -> Result<(), CliFailure> {
    match cmd {
        SubnetCommand::Create(a) => {
            let gateway = match a.gateway.as_deref() {
                None => GatewayRequest::Default,
                Some("none") => GatewayRequest::Disabled,
                Some(ip) => GatewayRequest::Address(
                    ip.parse().map_err(|_| bad(format!("bad gateway {ip:?}")))?,
                ),
            };
            let pools = if a.pools.is_empty() {
                None
            } else {
                Some(a.pools.iter().map(|p| pool(p)).collect::<Result<_, _>>()?)
            };
            let ip_version = if a.cidr.contains(':') { 6 } else { 4 };
            print(&svc.create_subnet(NewSubnet {
                id: a.id,
                network_id: a.network,
                name: a.name,
                project_id: a.project,
                ip_version,
                cidr: a.cidr,
                gateway,
                allocation_pools: pools,
                dns_nameservers: a.dns,
                enable_dhcp: Some(!a.no_dhcp),
                ..NewSubnet::default()
            })?);
        }
        SubnetCommand::List => print(&svc.subnets()?),
        SubnetCommand::Show { id } => print(&svc.subnet(id)?),
        SubnetCommand::Delete { id } => svc.delete_subnet(id)?,
    }
    Ok(())
}

/// Runs `port …`.
pub fn port(cmd: PortCommand, svc: &NetworkService) -> Result<(), CliFailure> {
    match cmd {
        PortCommand::Create(a) => {
            let fixed_ips = (!a.ips.is_empty()).then(|| {
                a.ips
                    .iter()
                    .map(|ip| FixedIpRequest {
                        subnet_id: None,
                        ip_address: Some(*ip),
                    })
                    .collect()
            });
            print(&svc.create_port(NewPort {
                id: a.id,
                network_id: a.network,
                project_id: a.project,
                name: a.name,
                mac: a.mac,
                fixed_ips,
                security_groups: if a.no_port_security {
                    Some(Vec::new())
                } else {
                    (!a.groups.is_empty()).then_some(a.groups)
                },
                port_security_enabled: Some(!a.no_port_security),
                ..NewPort::default()
            })?);
        }
        PortCommand::List => print(&svc.ports()?),
        PortCommand::Show { id } => print(&svc.port(id)?),
        PortCommand::SetSecurityGroups { id, groups } => {
            print(&svc.set_port_security_groups(id, &groups)?);
        }
        PortCommand::Delete { id } => svc.delete_port(id)?,
    }
    Ok(())
}

/// Runs `security-group …`.
pub fn security_group(cmd: SecurityGroupCommand, svc: &NetworkService) -> Result<(), CliFailure> {
    match cmd {
        SecurityGroupCommand::Create { name, project, id } => {
            print(&svc.create_security_group(id, &name, "", &project)?);
        }
        SecurityGroupCommand::Default { project } => print(&svc.default_security_group(&project)?),
        SecurityGroupCommand::List => print(&svc.security_groups()?),
        SecurityGroupCommand::Delete { id } => svc.delete_security_group(id)?,
        SecurityGroupCommand::RuleCreate(a) => print(&svc.create_rule(NewRule {
            security_group_id: a.group,
            project_id: a.project,
            direction: a.direction,
            ethertype: Some(a.ethertype),
            protocol: a.protocol,
            port_range_min: a.port_min,
            port_range_max: a.port_max,
            remote_ip_prefix: a.remote_ip,
            remote_group_id: a.remote_group,
            ..NewRule::default()
        })?),
        SecurityGroupCommand::RuleDelete { id } => svc.delete_rule(id)?,
    }
    Ok(())
}

/// Runs `router …`.
pub fn router(cmd: RouterCommand, svc: &NetworkService) -> Result<(), CliFailure> {
    match cmd {
        RouterCommand::Create {
            name,
            project,
            external_network,
            no_snat,
            id,
        } => print(&svc.create_router(NewRouter {
            id,
            name,
            project_id: project,
            external_gateway: external_network.map(|network_id| GatewayInfo {
                network_id,
                enable_snat: !no_snat,
                ip_address: None,
            }),
            ..NewRouter::default()
        })?),
        RouterCommand::AddInterface { router, subnet } => {
            let (port, subnet) =
                svc.add_router_interface(router, InterfaceTarget::Subnet(subnet))?;
            print(
                &serde_json::json!({ "router_id": router, "port_id": port, "subnet_id": subnet }),
            );
        }
        RouterCommand::RemoveInterface { router, subnet } => {
            svc.remove_router_interface(router, InterfaceTarget::Subnet(subnet))?;
        }
        RouterCommand::SetGateway { router, network } => print(&svc.set_router_gateway(
            router,
            network.map(|network_id| GatewayInfo {
                network_id,
                enable_snat: true,
                ip_address: None,
            }),
        )?),
        RouterCommand::List => print(&svc.routers()?),
        RouterCommand::Show { id } => print(&svc.router(id)?),
        RouterCommand::Delete { id } => svc.delete_router(id)?,
    }
    Ok(())
}

/// Runs `floating-ip …`.
pub fn floating_ip(cmd: FloatingIpCommand, svc: &NetworkService) -> Result<(), CliFailure> {
    match cmd {
        FloatingIpCommand::Create {
            network,
            port,
            project,
        } => print(&svc.create_floating_ip(NewFloatingIp {
            project_id: project,
            floating_network_id: network,
            port_id: port,
            ..NewFloatingIp::default()
        })?),
        FloatingIpCommand::Associate { id, port } => {
            print(&svc.update_floating_ip(id, Some(port), None)?);
        }
        FloatingIpCommand::Disassociate { id } => print(&svc.update_floating_ip(id, None, None)?),
        FloatingIpCommand::List => print(&svc.floating_ips()?),
        FloatingIpCommand::Delete { id } => svc.delete_floating_ip(id)?,
    }
    Ok(())
}
