//! Access control: ACLs, the port groups they are usually attached to (one per security group),
//! and address sets referenced from ACL matches.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Values of `ACL.direction`.
pub mod acl_direction {
    /// Traffic entering the logical network from the port.
    pub const FROM_LPORT: &str = "from-lport";
    /// Traffic leaving the logical network towards the port.
    pub const TO_LPORT: &str = "to-lport";
}

/// Values of `ACL.action`.
pub mod acl_action {
    /// Allow, stateless unless a stateful ACL exists.
    pub const ALLOW: &str = "allow";
    /// Allow and let replies through (stateful).
    pub const ALLOW_RELATED: &str = "allow-related";
    /// Allow without connection tracking.
    pub const ALLOW_STATELESS: &str = "allow-stateless";
    /// Drop silently.
    pub const DROP: &str = "drop";
    /// Drop and answer with a TCP RST / ICMP unreachable.
    pub const REJECT: &str = "reject";
}

crate::typed_table! {
    /// An ACL rule.
    pub struct Acl in "ACL" {
        /// Name, logged with the packet (up to 63 bytes).
        name: Option<String> = "name",
        /// Priority 0-32767; higher wins.
        priority: i64 = "priority",
        /// `from-lport` or `to-lport` (see [`acl_direction`]).
        direction: String = "direction",
        /// OVN match expression.
        match_: String = "match",
        /// See [`acl_action`].
        action: String = "action",
        /// Whether matching packets are logged.
        log: bool = "log",
        /// Log severity.
        severity: Option<String> = "severity",
        /// Meter limiting the log rate.
        meter: Option<String> = "meter",
        /// Label attached to connection tracking entries.
        label: i64 = "label",
        /// Options.
        options: BTreeMap<String, String> = "options",
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
    }
}

crate::typed_table! {
    /// A named group of switch ports (a security group), usable as `@name` in ACL matches.
    pub struct PortGroup in "Port_Group" {
        /// Unique name.
        name: String = "name",
        /// Member ports.
        ports: BTreeSet<Uuid> = "ports" => "Logical_Switch_Port",
        /// ACLs applying to the members.
        acls: BTreeSet<Uuid> = "acls" => "ACL",
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
    }
}

crate::typed_table! {
    /// A named set of addresses, usable as `$name` in ACL matches.
    pub struct AddressSet in "Address_Set" {
        /// Unique name.
        name: String = "name",
        /// Addresses or prefixes.
        addresses: BTreeSet<String> = "addresses",
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
    }
}
