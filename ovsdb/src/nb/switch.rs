//! Logical switches (networks) and their ports.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

crate::typed_table! {
    /// A logical switch: one L2 network.
    pub struct LogicalSwitch in "Logical_Switch" {
        /// Name (not necessarily unique; CMSs put their id in `external_ids`).
        name: String = "name",
        /// Ports.
        ports: BTreeSet<Uuid> = "ports" => "Logical_Switch_Port",
        /// ACLs applied directly to the switch.
        acls: BTreeSet<Uuid> = "acls" => "ACL",
        /// QoS rules.
        qos_rules: BTreeSet<Uuid> = "qos_rules" => "QoS",
        /// Load balancers.
        load_balancer: BTreeSet<Uuid> = "load_balancer" => "Load_Balancer",
        /// Load balancer groups.
        load_balancer_group: BTreeSet<Uuid> = "load_balancer_group" => "Load_Balancer_Group",
        /// DNS records.
        dns_records: BTreeSet<Uuid> = "dns_records" => "DNS",
        /// Control plane protection.
        copp: Option<Uuid> = "copp" => "Copp",
        /// Settings such as `subnet`, `mcast_snoop`.
        other_config: BTreeMap<String, String> = "other_config",
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
        /// Forwarding groups.
        forwarding_groups: BTreeSet<Uuid> = "forwarding_groups" => "Forwarding_Group",
    }
}

crate::typed_table! {
    /// A port of a logical switch: a VM interface, a router attachment (`type` = `router`), a
    /// provider network attachment (`localnet`), …
    pub struct LogicalSwitchPort in "Logical_Switch_Port" {
        /// Unique name; `ovn-controller` binds the port whose name matches an interface's
        /// `external_ids:iface-id`.
        name: String = "name",
        /// Port type: empty for a VIF, `router`, `localnet`, `localport`, `external`, …
        kind: String = "type",
        /// Type-specific options (e.g. `router-port`, `network_name`).
        options: BTreeMap<String, String> = "options",
        /// For nested containers: the parent VIF.
        parent_name: Option<String> = "parent_name",
        /// VLAN tag requested for a nested container or localnet port.
        tag_request: Option<i64> = "tag_request",
        /// VLAN tag assigned by `ovn-northd`.
        tag: Option<i64> = "tag" [status],
        /// `"MAC IP…"` entries, or `router`, `unknown`, `dynamic`.
        addresses: BTreeSet<String> = "addresses",
        /// Addresses `ovn-northd` allocated for `dynamic`.
        dynamic_addresses: Option<String> = "dynamic_addresses" [status],
        /// Allowed source addresses (anti-spoofing).
        port_security: BTreeSet<String> = "port_security",
        /// Whether the port is bound and ready, set by `ovn-northd`.
        up: Option<bool> = "up" [status],
        /// Administrative state; unset means enabled.
        enabled: Option<bool> = "enabled",
        /// DHCPv4 options to serve.
        dhcpv4_options: Option<Uuid> = "dhcpv4_options" => "DHCP_Options",
        /// DHCPv6 options to serve.
        dhcpv6_options: Option<Uuid> = "dhcpv6_options" => "DHCP_Options",
        /// Port mirroring rules.
        mirror_rules: BTreeSet<Uuid> = "mirror_rules" => "Mirror",
        /// HA chassis group for `external` ports.
        ha_chassis_group: Option<Uuid> = "ha_chassis_group" => "HA_Chassis_Group",
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
    }
}
