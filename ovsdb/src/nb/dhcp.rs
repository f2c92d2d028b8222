//! DHCP options served by `ovn-controller` to switch ports.

use std::collections::BTreeMap;

crate::typed_table! {
    /// DHCP options for one subnet.
    pub struct DhcpOptions in "DHCP_Options" {
        /// The subnet, e.g. `10.0.0.0/24`.
        cidr: String = "cidr",
        /// Options such as `router`, `server_id`, `server_mac`, `lease_time`, `dns_server`.
        options: BTreeMap<String, String> = "options",
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
    }
}
