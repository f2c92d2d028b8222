//! `NB_Global`: the single row that carries global options and the configuration sequence
//! numbers (`nb_cfg` → `sb_cfg` → `hv_cfg`) used to wait until a change reached the hypervisors.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

crate::typed_table! {
    /// The `NB_Global` row.
    pub struct NbGlobal in "NB_Global" {
        /// Deployment name.
        name: String = "name",
        /// Bumped by the CMS to ask for a configuration sequence number to propagate.
        nb_cfg: i64 = "nb_cfg",
        /// When `ovn-northd` saw `nb_cfg` (ms since the epoch).
        nb_cfg_timestamp: i64 = "nb_cfg_timestamp" [status],
        /// Sequence number `ovn-northd` has pushed to the Southbound database.
        sb_cfg: i64 = "sb_cfg" [status],
        /// When `sb_cfg` was written.
        sb_cfg_timestamp: i64 = "sb_cfg_timestamp" [status],
        /// Sequence number all hypervisors have caught up with.
        hv_cfg: i64 = "hv_cfg" [status],
        /// When `hv_cfg` was written.
        hv_cfg_timestamp: i64 = "hv_cfg_timestamp" [status],
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
        /// Database connection settings.
        connections: BTreeSet<Uuid> = "connections" => "Connection",
        /// SSL settings.
        ssl: Option<Uuid> = "ssl" => "SSL",
        /// Global options (e.g. `mac_prefix`, `northd_probe_interval`).
        options: BTreeMap<String, String> = "options",
        /// Whether IPsec is enabled for tunnels.
        ipsec: bool = "ipsec",
    }
}
