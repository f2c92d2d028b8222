//! Load balancers (also used for Kubernetes-style service VIPs and metadata proxies).

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

crate::typed_table! {
    /// A load balancer.
    pub struct LoadBalancer in "Load_Balancer" {
        /// Name.
        name: String = "name",
        /// `VIP[:port]` → comma-separated `backend[:port]` list.
        vips: BTreeMap<String, String> = "vips",
        /// `tcp`, `udp` or `sctp`; unset means tcp.
        protocol: Option<String> = "protocol",
        /// Health checks.
        health_check: BTreeSet<Uuid> = "health_check" => "Load_Balancer_Health_Check",
        /// Backend IP → logical port mappings for health checks.
        ip_port_mappings: BTreeMap<String, String> = "ip_port_mappings",
        /// Fields hashed to select a backend.
        selection_fields: BTreeSet<String> = "selection_fields",
        /// Options such as `reject`, `hairpin_snat_ip`.
        options: BTreeMap<String, String> = "options",
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
    }
}
