//! The host's own links, addresses and routes — the provider bridge, the uplink, the management
//! address and the default route — behind the [`HostNetwork`] trait.
//!
//! Three layers:
//!
//! - [`HostNetwork`]: list links, create bridges, enslave, set up/down and MTU, list/add/delete
//!   addresses and main-table routes. Plain Rust types only; no netlink type leaves `netlink.rs`.
//!   [`NetlinkHost`] talks rtnetlink, [`FakeHost`] keeps an in-memory model with the kernel's side
//!   effects that matter here (removing a link's last IPv4 address flushes its routes, a downed link
//!   loses its routes and IPv6 addresses) and failure injection.
//! - [`ConnectivityCheck`]: "can this node still reach its management peer?" — [`TcpConnectCheck`]
//!   for real, [`FakeCheck`] for tests.
//! - [`apply_guarded`] / [`recover_pending`]: a change to the uplink that is reverted unless the
//!   check passes afterwards, recorded on disk first so that a crash in the middle is reverted at the
//!   next start. A remote site has no console: a bad address or route must never strand it.
//!
//! All calls are synchronous: the agent's reconcilers drive host side effects from blocking threads
//! (as they do for libvirt), and a connectivity check that waits for a deadline is blocking by nature.

mod change;
mod check;
mod fake;
mod netlink;
mod pending;
#[cfg(test)]
mod tests;

use crate::error_class::{Classify, ErrorClass};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::net::IpAddr;

pub use change::{
    ChangeError, ChangePlan, ChangeStep, LinkState, RestoreError, Snapshot, apply_guarded,
    recover_pending, restore,
};
/// Addresses with prefix length (`10.0.0.2/24`), re-exported so callers need no `ipnet` of their own.
pub use ipnet::IpNet;

/// Name of the pending-change record in the state directory.
pub const PENDING_CHANGE_FILE: &str = "host-network-change.json";

pub use check::{CheckError, ConnectivityCheck, FakeCheck, TcpConnectCheck};
pub use fake::FakeHost;
pub use netlink::NetlinkHost;
pub use pending::PendingChange;

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub const MAX_LINK_NAME: usize = 15;

/// What kind of device a link is (the kernel's `IFLA_INFO_KIND`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// No kind reported: a physical NIC or the loopback device.
    Device,
    /// A Linux bridge.
    Bridge,
    /// One end of a veth pair.
    Veth,
    /// A dummy device.
    Dummy,
    /// Anything else, by the kernel's name for it (`vlan`, `bond`, `openvswitch`, …).
    Other(String),
}

impl LinkKind {
    /// The kind from the kernel's name for it (`None`: no kind reported).
    pub fn from_kernel_name(name: Option<&str>) -> Self {
        match name {
            None => Self::Device,
            Some("bridge") => Self::Bridge,
            Some("veth") => Self::Veth,
            Some("dummy") => Self::Dummy,
            Some(other) => Self::Other(other.to_owned()),
        }
    }
}

/// RFC 2863 operational state as the kernel reports it: whether the link can carry traffic now,
/// as opposed to whether it was set up ([`Link::admin_up`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperState {
    /// Ready to pass packets.
    Up,
    /// Not ready.
    Down,
    /// Down because a device below it is down (a VLAN on a dead NIC).
    LowerLayerDown,
    /// Waiting for an external event (802.1X).
    Dormant,
    /// The driver does not tell (loopback, some virtual devices that are up).
    Unknown,
    /// Anything else.
    Other,
}

/// One network link of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Interface name.
    pub name: String,
    /// Kernel interface index (changes when a link is recreated; names are what config uses).
    pub index: u32,
    /// Device kind.
    pub kind: LinkKind,
    /// Hardware address as `aa:bb:cc:dd:ee:ff` (`None` for links without one).
    pub mac: Option<String>,
    /// MTU in bytes.
    pub mtu: u32,
    /// Administratively up (`ip link set up`).
    pub admin_up: bool,
    /// Operational state.
    pub oper: OperState,
    /// The bridge (or bond) this link is a port of.
    pub master: Option<String>,
}

/// Where a route came from (the kernel's `rtm_protocol`). Part of a route's identity: the kernel
/// keeps it, and routes it made itself ([`RouteProtocol::Kernel`]) follow their addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteProtocol {
    /// Made by the kernel for a configured address (the prefix route).
    Kernel,
    /// Added at boot or by `ip route add` without `proto`.
    Boot,
    /// Added by an administrator or a program (the default for routes this module adds).
    Static,
    /// Added by a DHCP client.
    Dhcp,
    /// Learnt from an IPv6 router advertisement.
    Ra,
    /// Any other protocol number.
    Other(u8),
}

impl RouteProtocol {
    /// The kernel's number for it.
    pub fn to_number(self) -> u8 {
        match self {
            Self::Kernel => 2,
            Self::Boot => 3,
            Self::Static => 4,
            Self::Ra => 9,
            Self::Dhcp => 16,
            Self::Other(n) => n,
        }
    }

    /// From the kernel's number.
    pub fn from_number(n: u8) -> Self {
        match n {
            2 => Self::Kernel,
            3 => Self::Boot,
            4 => Self::Static,
            9 => Self::Ra,
            16 => Self::Dhcp,
            n => Self::Other(n),
        }
    }
}

/// One unicast route of the main table.
///
/// A route is identified by all its fields: two routes that differ in any field (the metric, the
/// protocol) are different routes. A multipath route is listed as one `Route` per next hop. The
/// scope is not kept: it follows from the fields, as `ip route` makes it (IPv4 routes without a
/// gateway are link-scoped, all others universe).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix (`0.0.0.0/0` or `::/0` for the default route). Host bits must be zero.
    pub destination: IpNet,
    /// Next hop; `None` for an on-link route.
    pub gateway: Option<IpAddr>,
    /// Output link.
    pub link: String,
    /// Metric (`rtm_priority`). For IPv6 the kernel turns 0 into 1024; [`Route::normalized`] does
    /// the same so that a route reads back as it was added.
    pub metric: u32,
    /// Preferred source address.
    pub source: Option<IpAddr>,
    /// Where the route came from.
    pub protocol: RouteProtocol,
}

/// The metric the kernel gives an IPv6 route added with metric 0 (`IP6_RT_PRIO_USER`).
pub const IPV6_DEFAULT_METRIC: u32 = 1024;

impl Route {
    /// An on-link route to `destination` through `link`, metric 0, protocol static.
    pub fn on_link(destination: IpNet, link: &str) -> Self {
        Self {
            destination,
            gateway: None,
            link: link.to_owned(),
            metric: 0,
            source: None,
            protocol: RouteProtocol::Static,
        }
    }

    /// A route to `destination` via `gateway` out of `link`, metric 0, protocol static.
    pub fn via(destination: IpNet, gateway: IpAddr, link: &str) -> Self {
        Self {
            gateway: Some(gateway),
            ..Self::on_link(destination, link)
        }
    }

    /// The default route of `gateway`'s family via `gateway` out of `link`.
    pub fn default_via(gateway: IpAddr, link: &str) -> Self {
        let any = match gateway {
            IpAddr::V4(_) => IpNet::V4(Ipv4Net::default()),
            IpAddr::V6(_) => IpNet::V6(Ipv6Net::default()),
        };
        Self::via(any, gateway, link)
    }

    /// The same route with another metric.
    #[must_use]
    pub fn with_metric(mut self, metric: u32) -> Self {
        self.metric = metric;
        self
    }

    /// The same route out of another link.
    #[must_use]
    pub fn with_link(mut self, link: &str) -> Self {
        link.clone_into(&mut self.link);
        self
    }

    /// Whether this is an IPv6 route.
    pub fn is_ipv6(&self) -> bool {
        matches!(self.destination, IpNet::V6(_))
    }

    /// The route as the kernel stores it: IPv6 metric 0 becomes 1024.
    #[must_use]
    pub fn normalized(mut self) -> Self {
        if self.is_ipv6() && self.metric == 0 {
            self.metric = IPV6_DEFAULT_METRIC;
        }
        self
    }

    /// Whether the kernel manages this route by itself: the IPv6 link-local prefix route it adds
    /// and removes with a link's link-local address. Reverts neither add nor delete such routes.
    pub fn is_kernel_managed(&self) -> bool {
        self.protocol == RouteProtocol::Kernel
            && matches!(self.destination, IpNet::V6(net) if net.network().is_unicast_link_local())
    }

    /// Checks what the kernel would reject anyway, with a better message.
    pub fn validate(&self) -> Result<(), HostError> {
        let invalid = |reason: String| HostError::Invalid {
            operation: "route",
            reason,
        };
        validate_link_name(&self.link)?;
        if self.destination.trunc() != self.destination {
            return Err(invalid(format!(
                "destination {} has host bits set (did you mean {}?)",
                self.destination,
                self.destination.trunc()
            )));
        }
        for (what, addr) in [("gateway", self.gateway), ("source", self.source)] {
            if let Some(addr) = addr
                && addr.is_ipv4() != self.destination.addr().is_ipv4()
            {
                return Err(invalid(format!(
                    "{what} {addr} is not of the family of {}",
                    self.destination
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.destination)?;
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        write!(f, " dev {} metric {}", self.link, self.metric)?;
        if let Some(source) = self.source {
            write!(f, " src {source}")?;
        }
        write!(f, " proto {:?}", self.protocol)
    }
}

/// Whether the kernel manages this address by itself: IPv6 link-local addresses come and go with
/// the link (and asynchronously, once it has carrier). Reverts neither add nor delete them.
pub fn is_kernel_managed_address(address: &IpNet) -> bool {
    matches!(address, IpNet::V6(net) if net.addr().is_unicast_link_local())
}

/// Checks a link name as the kernel would (`dev_valid_name`), so a typo in config fails with a
/// clear message instead of `EINVAL`.
pub fn validate_link_name(name: &str) -> Result<(), HostError> {
    let reason = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_LINK_NAME {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is reserved")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(HostError::Invalid {
            operation: "link name",
            reason: format!("{name:?} {reason}"),
        }),
        None => Ok(()),
    }
}

/// Why a host network call failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The named link does not exist.
    #[error("{operation}: no link named {name}")]
    NoSuchLink {
        /// What was attempted.
        operation: &'static str,
        /// The link.
        name: String,
    },
    /// The request is malformed (bad name, mixed address families).
    #[error("invalid {operation}: {reason}")]
    Invalid {
        /// What was being checked.
        operation: &'static str,
        /// Why it is unacceptable.
        reason: String,
    },
    /// The request clashes with what is there (a non-bridge link of the bridge's name, another
    /// route with the same destination and metric).
    #[error("{operation} {target}: {reason}")]
    Conflict {
        /// What was attempted.
        operation: &'static str,
        /// On what.
        target: String,
        /// What is in the way.
        reason: String,
    },
    /// The kernel refused.
    #[error("{operation} {target}: {source}")]
    Kernel {
        /// What was attempted.
        operation: &'static str,
        /// On what.
        target: String,
        /// The kernel's errno (or an injected failure in the fake).
        source: io::Error,
    },
    /// The netlink socket or its worker thread is gone or did not answer.
    #[error("host networking unavailable: {0}")]
    Unavailable(String),
}

impl Classify for HostError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::NoSuchLink { .. } => ErrorClass::NotFound,
            Self::Invalid { .. } => ErrorClass::BadRequest,
            Self::Conflict { .. } => ErrorClass::Conflict,
            Self::Unavailable(_) => ErrorClass::Unavailable,
            Self::Kernel { .. } => ErrorClass::Internal,
        }
    }
}

/// The host's links, addresses and routes (main table, unicast).
///
/// Every method is idempotent where its name allows: creating a bridge that exists, adding an
/// address or route that is there, deleting one that is not, deleting a missing link — all succeed.
/// Links are named, not numbered: indices change when a link is recreated, names are what config
/// holds.
pub trait HostNetwork: Send + Sync {
    /// All links.
    fn links(&self) -> Result<Vec<Link>, HostError>;
    /// One link, if it exists.
    fn link(&self, name: &str) -> Result<Option<Link>, HostError> {
        validate_link_name(name)?;
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }
    /// Creates a Linux bridge (administratively down, STP off). An existing bridge of that name is
    /// success; an existing link of another kind is a [`HostError::Conflict`].
    fn create_bridge(&self, name: &str) -> Result<(), HostError>;
    /// Deletes a link; a missing one is success.
    fn delete_link(&self, name: &str) -> Result<(), HostError>;
    /// Makes `name` a port of bridge `master`, or of none.
    fn set_master(&self, name: &str, master: Option<&str>) -> Result<(), HostError>;
    /// Sets the link administratively up or down.
    fn set_up(&self, name: &str, up: bool) -> Result<(), HostError>;
    /// Sets the MTU.
    fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), HostError>;
    /// The IPv4 and IPv6 addresses of a link, with their prefix lengths (`10.0.0.2/24`).
    fn addresses(&self, name: &str) -> Result<Vec<IpNet>, HostError>;
    /// Adds an address; one that is there is success.
    fn add_address(&self, name: &str, address: IpNet) -> Result<(), HostError>;
    /// Deletes an address; one that is not there is success.
    fn delete_address(&self, name: &str, address: IpNet) -> Result<(), HostError>;
    /// The unicast routes of the main table, IPv4 and IPv6.
    fn routes(&self) -> Result<Vec<Route>, HostError>;
    /// Adds a route (after [`Route::normalized`]); an identical one is success, another route with
    /// the same destination and metric (IPv4) is a [`HostError::Conflict`].
    fn add_route(&self, route: &Route) -> Result<(), HostError>;
    /// Deletes the route identical to `route` (after [`Route::normalized`]); none is success.
    fn delete_route(&self, route: &Route) -> Result<(), HostError>;
}
