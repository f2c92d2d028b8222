//! Where gateway functions run: gateway chassis of a distributed gateway port and HA chassis
//! groups.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

crate::typed_table! {
    /// One candidate chassis of a distributed gateway port.
    pub struct GatewayChassis in "Gateway_Chassis" {
        /// Unique name.
        name: String = "name",
        /// The chassis (`ovn-controller` system-id).
        chassis_name: String = "chassis_name",
        /// Priority 0-32767; highest active chassis wins.
        priority: i64 = "priority",
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
        /// Options.
        options: BTreeMap<String, String> = "options",
    }
}

crate::typed_table! {
    /// A group of chassis providing high availability.
    pub struct HaChassisGroup in "HA_Chassis_Group" {
        /// Unique name.
        name: String = "name",
        /// Members.
        ha_chassis: BTreeSet<Uuid> = "ha_chassis" => "HA_Chassis",
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
    }
}

crate::typed_table! {
    /// A member of an HA chassis group.
    pub struct HaChassis in "HA_Chassis" {
        /// The chassis (`ovn-controller` system-id).
        chassis_name: String = "chassis_name",
        /// Priority 0-32767.
        priority: i64 = "priority",
        /// Free-form CMS data.
        external_ids: BTreeMap<String, String> = "external_ids",
    }
}
