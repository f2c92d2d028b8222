//! Networking: the Neutron model (networks, subnets, ports, routers, floating IPs, security groups)
//! kept in the store and validated here, programmed into OVN through the `ovsdb` client, and the
//! host's own links (provider bridge, uplink, addresses, routes) through netlink.

pub mod chassis;
pub mod database;
pub mod host;
pub mod ipam;
pub mod model;
pub mod ovn;
mod repo;
pub mod service;

use crate::error_class::{Classify, ErrorClass};
use crate::store::StoreError;
use uuid::Uuid;

pub use service::{NetworkService, NetworkSettings};

/// Why a network request was refused or failed. Each variant knows Neutron's error type name, so the
/// API can answer `{"NeutronError": {"type": …}}` exactly as Neutron would.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No such network.
    #[error("Network {0} could not be found.")]
    NetworkNotFound(Uuid),
    /// No such subnet.
    #[error("Subnet {0} could not be found.")]
    SubnetNotFound(Uuid),
    /// No such port.
    #[error("Port {0} could not be found.")]
    PortNotFound(Uuid),
    /// No such router.
    #[error("Router {0} could not be found.")]
    RouterNotFound(Uuid),
    /// No such security group.
    #[error("Security group {0} does not exist.")]
    SecurityGroupNotFound(Uuid),
    /// No such security group rule.
    #[error("Security group rule {0} does not exist.")]
    SecurityGroupRuleNotFound(Uuid),
    /// No such floating IP.
    #[error("Floating IP {0} could not be found.")]
    FloatingIpNotFound(Uuid),
    /// No such default security group rule template.
    #[error("Default security group rule {0} does not exist.")]
    DefaultSecurityGroupRuleNotFound(Uuid),
    /// The same template exists.
    #[error("Default security group rule already exists. Rule id is {0}.")]
    DefaultSecurityGroupRuleExists(Uuid),
    /// Sharing cannot be withdrawn while other projects have ports on the network.
    #[error(
        "Unable to reconfigure sharing settings for network {0}. Multiple tenants are using it."
    )]
    InvalidSharedSetting(Uuid),
    /// `router:external` cannot be withdrawn while routers or floating IPs use the network.
    #[error(
        "External network {0} cannot be updated to be made non-external, since it has existing gateway ports."
    )]
    ExternalNetworkInUse(Uuid),
    /// The router has no interface on that subnet or port.
    #[error("Router {router} does not have an interface with id {what}.")]
    RouterInterfaceNotFound {
        /// Router.
        router: Uuid,
        /// Subnet or port id.
        what: Uuid,
    },
    /// A field is malformed or out of range.
    #[error("Invalid input for operation: {0}")]
    InvalidInput(String),
    /// A router request that cannot be carried out (overlapping subnets, missing gateway IP).
    #[error("Bad router request: {0}")]
    BadRouterRequest(String),
    /// An address asked for is held by another port.
    #[error("Unable to complete operation for network {network}. The IP address {ip} is in use.")]
    IpAddressInUse {
        /// Network.
        network: Uuid,
        /// Address.
        ip: std::net::IpAddr,
    },
    /// The pools are exhausted.
    #[error("No more IP addresses available on network {0}.")]
    IpAddressGenerationFailure(Uuid),
    /// A MAC asked for is held by another port.
    #[error("Unable to complete operation for network {network}. The mac address {mac} is in use.")]
    MacAddressInUse {
        /// Network.
        network: Uuid,
        /// MAC.
        mac: String,
    },
    /// The network still has ports.
    #[error(
        "Unable to complete operation on network {network}. There are one or more ports still in use on the network ({ports})."
    )]
    NetworkInUse {
        /// Network.
        network: Uuid,
        /// Ports left.
        ports: u64,
    },
    /// The subnet still has allocated addresses.
    #[error(
        "Unable to complete operation on subnet {0}: One or more ports have an IP allocation from this subnet."
    )]
    SubnetInUse(Uuid),
    /// Ports still use the group.
    #[error("Security Group {0} in use.")]
    SecurityGroupInUse(Uuid),
    /// The same rule exists.
    #[error("Security group rule already exists. Rule id is {0}.")]
    SecurityGroupRuleExists(Uuid),
    /// The router still has interfaces or floating IPs.
    #[error("Router {router} {reason}")]
    RouterInUse {
        /// Router.
        router: Uuid,
        /// What holds it.
        reason: String,
    },
    /// The port belongs to a router or floating IP and must be removed through that.
    #[error("Port {port} cannot be deleted directly via the port API: {reason}")]
    PortInUse {
        /// Port.
        port: Uuid,
        /// Why.
        reason: String,
    },
    /// The segment (flat physnet or VLAN id) is taken.
    #[error("Unable to create the network. {0}")]
    SegmentInUse(String),
    /// No router connects the port's subnet to the floating IP's network.
    #[error(
        "External network {network} is not reachable from subnet {subnet}. Therefore, cannot associate Port {port} with a Floating IP."
    )]
    ExternalGatewayNotFound {
        /// External network.
        network: Uuid,
        /// Port's subnet.
        subnet: Uuid,
        /// Port.
        port: Uuid,
    },
    /// The fixed address already has a floating IP.
    #[error(
        "Cannot associate floating IP with port {port} using fixed IP {ip}, as that fixed IP already has floating IP {existing}."
    )]
    FloatingIpPortAlreadyAssociated {
        /// Port.
        port: Uuid,
        /// Fixed address.
        ip: std::net::IpAddr,
        /// The floating IP holding it.
        existing: Uuid,
    },
    /// The id is taken.
    #[error("{what} {id} already exists.")]
    Duplicate {
        /// Resource kind.
        what: &'static str,
        /// Id.
        id: Uuid,
    },
    /// The store holds something it should not.
    #[error("network store is inconsistent: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for NetworkError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Store(StoreError::Query(err))
    }
}

impl From<ipam::IpamError> for NetworkError {
    fn from(err: ipam::IpamError) -> Self {
        Self::InvalidInput(err.to_string())
    }
}

impl NetworkError {
    /// Neutron's `type` for this error.
    pub fn neutron_type(&self) -> &'static str {
        match self {
            Self::NetworkNotFound(_) => "NetworkNotFound",
            Self::SubnetNotFound(_) => "SubnetNotFound",
            Self::PortNotFound(_) => "PortNotFound",
            Self::RouterNotFound(_) => "RouterNotFound",
            Self::SecurityGroupNotFound(_) => "SecurityGroupNotFound",
            Self::SecurityGroupRuleNotFound(_) => "SecurityGroupRuleNotFound",
            Self::FloatingIpNotFound(_) => "FloatingIPNotFound",
            Self::DefaultSecurityGroupRuleNotFound(_) => "DefaultSecurityGroupRuleNotFound",
            Self::DefaultSecurityGroupRuleExists(_) => "DefaultSecurityGroupRuleExists",
            Self::InvalidSharedSetting(_) => "InvalidSharedSetting",
            Self::ExternalNetworkInUse(_) => "ExternalNetworkInUse",
            Self::RouterInterfaceNotFound { .. } => "RouterInterfaceNotFound",
            Self::InvalidInput(_) => "InvalidInput",
            Self::BadRouterRequest(_) => "BadRequest",
            Self::IpAddressInUse { .. } => "IpAddressInUse",
            Self::IpAddressGenerationFailure(_) => "IpAddressGenerationFailure",
            Self::MacAddressInUse { .. } => "MacAddressInUse",
            Self::NetworkInUse { .. } => "NetworkInUse",
            Self::SubnetInUse(_) => "SubnetInUse",
            Self::SecurityGroupInUse(_) => "SecurityGroupInUse",
            Self::SecurityGroupRuleExists(_) => "SecurityGroupRuleExists",
            Self::RouterInUse { .. } => "RouterInUse",
            Self::PortInUse { .. } => "ServicePortInUse",
            Self::SegmentInUse(_) => "SegmentInUse",
            Self::ExternalGatewayNotFound { .. } => "ExternalGatewayForFloatingIPNotFound",
            Self::FloatingIpPortAlreadyAssociated { .. } => "FloatingIPPortAlreadyAssociated",
            Self::Duplicate { .. } => "Conflict",
            Self::Corrupt(_) | Self::Store(_) => "InternalError",
        }
    }
}

impl Classify for NetworkError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::NetworkNotFound(_)
            | Self::SubnetNotFound(_)
            | Self::PortNotFound(_)
            | Self::RouterNotFound(_)
            | Self::SecurityGroupNotFound(_)
            | Self::SecurityGroupRuleNotFound(_)
            | Self::FloatingIpNotFound(_)
            | Self::DefaultSecurityGroupRuleNotFound(_)
            | Self::RouterInterfaceNotFound { .. }
            | Self::ExternalGatewayNotFound { .. } => ErrorClass::NotFound,
            Self::InvalidInput(_) | Self::BadRouterRequest(_) => ErrorClass::BadRequest,
            Self::IpAddressInUse { .. }
            | Self::IpAddressGenerationFailure(_)
            | Self::MacAddressInUse { .. }
            | Self::NetworkInUse { .. }
            | Self::SubnetInUse(_)
            | Self::SecurityGroupInUse(_)
            | Self::SecurityGroupRuleExists(_)
            | Self::DefaultSecurityGroupRuleExists(_)
            | Self::InvalidSharedSetting(_)
            | Self::ExternalNetworkInUse(_)
            | Self::RouterInUse { .. }
            | Self::PortInUse { .. }
            | Self::SegmentInUse(_)
            | Self::FloatingIpPortAlreadyAssociated { .. }
            | Self::Duplicate { .. } => ErrorClass::Conflict,
            Self::Corrupt(_) | Self::Store(_) => ErrorClass::Internal,
        }
    }
}
