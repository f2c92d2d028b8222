//! Logical routers, their ports, static routes and NAT rules.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Values of `NAT.type`.
pub mod nat_type {
    /// Destination NAT only.
    pub const DNAT: &str = "dnat";
    /// Source NAT only (e.g. a router's default SNAT).
    pub const SNAT: &str = "snat";
    /// One-to-one NAT (floating IP).
    pub const DNAT_AND_SNAT: &str = "dnat_and_snat";
}

crate::typed_table! {
    /// A logical router.
    pub struct LogicalRouter in "Logical_Router" {
        /// Name.
        name: String = "name",
        /// Ports.
        ports: BTreeSet<Uuid> = "ports" => "Logical_Router_Port",
        /// Static routes.
        static_routes: BTreeSet<Uuid> = "static_routes" => "Logical_Router_Static_Route",
        /// Policy-based routes.
        policies: BTreeSet<Uuid> = "policies" => "Logical_Router_Policy",
        /// Administrative state; unset means enabled.
        enabled: Option<bool> = "enabled",
        /// NAT rules.
        nat: BTreeSet<Uuid> = "nat" => "NAT",
        /// Load balancers.
        load_balancer: BTreeSet<Uuid> = "load_balancer" => "Load_Balancer",
        /// Load balancer groups.
        load_balancer_group: BTreeSet<Uuid> = "load_balancer_group" => "Load_Balancer_Group",
        /// Control plane protection.
        copp: Option<Uuid> = "copp" => "Copp",
        /// Options such as `chassis` for a gateway router.
        options: BTreeMap<String, String> = "options",
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
    }
}

crate::typed_table! {
    /// A port of a logical router.
    pub struct LogicalRouterPort in "Logical_Router_Port" {
        /// Unique name.
        name: String = "name",
        /// Gateway chassis for a distributed gateway port.
        gateway_chassis: BTreeSet<Uuid> = "gateway_chassis" => "Gateway_Chassis",
        /// HA chassis group for a distributed gateway port.
        ha_chassis_group: Option<Uuid> = "ha_chassis_group" => "HA_Chassis_Group",
        /// Options.
        options: BTreeMap<String, String> = "options",
        /// Addresses with prefix length, e.g. `192.0.2.1/24` (at least one).
        networks: BTreeSet<String> = "networks",
        /// Ethernet address.
        mac: String = "mac",
        /// Peer router port for router-to-router links.
        peer: Option<String> = "peer",
        /// Administrative state; unset means enabled.
        enabled: Option<bool> = "enabled",
        /// IPv6 router advertisement settings.
        ipv6_ra_configs: BTreeMap<String, String> = "ipv6_ra_configs",
        /// Delegated IPv6 prefixes, filled in by OVN.
        ipv6_prefix: BTreeSet<String> = "ipv6_prefix" [status],
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
    }
}

crate::typed_table! {
    /// A static route of a logical router.
    pub struct LogicalRouterStaticRoute in "Logical_Router_Static_Route" {
        /// Route table name (empty: the global table).
        route_table: String = "route_table",
        /// Destination prefix, e.g. `0.0.0.0/0`.
        ip_prefix: String = "ip_prefix",
        /// `dst-ip` (default) or `src-ip`.
        policy: Option<String> = "policy",
        /// Next hop address (or `discard`).
        nexthop: String = "nexthop",
        /// Router port to send out of.
        output_port: Option<String> = "output_port",
        /// BFD session monitoring the next hop.
        bfd: Option<Uuid> = "bfd" => "BFD",
        /// Options such as `ecmp_symmetric_reply`.
        options: BTreeMap<String, String> = "options",
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
    }
}

crate::typed_table! {
    /// A NAT rule of a logical router.
    pub struct Nat in "NAT" {
        /// Public address.
        external_ip: String = "external_ip",
        /// MAC for distributed `dnat_and_snat`.
        external_mac: Option<String> = "external_mac",
        /// Port range for SNAT.
        external_port_range: String = "external_port_range",
        /// Internal address or prefix.
        logical_ip: String = "logical_ip",
        /// Logical port for distributed `dnat_and_snat`.
        logical_port: Option<String> = "logical_port",
        /// `dnat`, `snat` or `dnat_and_snat` (see [`nat_type`]).
        kind: String = "type",
        /// Only these external addresses may use the rule.
        allowed_ext_ips: Option<Uuid> = "allowed_ext_ips" => "Address_Set",
        /// These external addresses are exempt.
        exempted_ext_ips: Option<Uuid> = "exempted_ext_ips" => "Address_Set",
        /// Distributed gateway port to apply the rule on.
        gateway_port: Option<Uuid> = "gateway_port" => "Logical_Router_Port",
        /// Options such as `stateless`.
        options: BTreeMap<String, String> = "options",
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
    }
}
