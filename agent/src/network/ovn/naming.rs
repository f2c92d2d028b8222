//! Names and tags of the OVN rows the agent owns.
//!
//! Row names follow the Neutron OVN driver (`neutron-<network>`, `lrp-<port>`, `pg_<group>`,
//! `provnet-<network>`) so an operator who knows OVN under OpenStack reads `ovn-nbctl show` at the
//! edge the same way. Ownership is in `external_ids`: `scs-edge:owner` (this site) and `scs-edge:key`
//! (the model object a row stands for); rows without this site's owner tag are never touched.

use std::collections::BTreeMap;
use uuid::Uuid;

/// `external_ids` key holding the owning site.
pub const OWNER: &str = "scs-edge:owner";
/// `external_ids` key holding the row's identity in the model.
pub const KEY: &str = "scs-edge:key";
/// Port group holding every port of a site with port security: its ACLs drop what no rule allows.
/// Named per site because port group names are unique in a northbound database.
pub fn drop_group(owner: &str) -> String {
    let site: String = owner
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    format!("scs_edge_drop_{site}")
}

/// Logical switch of a network.
pub fn switch(network: Uuid) -> String {
    format!("neutron-{network}")
}

/// Logical router of a router.
pub fn router(router: Uuid) -> String {
    format!("neutron-{router}")
}

/// Logical router port of a router interface or gateway port.
pub fn router_port(port: Uuid) -> String {
    format!("lrp-{port}")
}

/// Localnet port of a provider network.
pub fn localnet(network: Uuid) -> String {
    format!("provnet-{network}")
}

/// Port group of a security group (identifier characters only).
pub fn port_group(group: Uuid) -> String {
    format!("pg_{}", group.to_string().replace('-', "_"))
}

/// The address set OVN derives from a port group's addresses.
pub fn port_group_addresses(group: Uuid, ip4: bool) -> String {
    format!("${}_{}", port_group(group), if ip4 { "ip4" } else { "ip6" })
}

/// `external_ids` of an owned row.
pub fn tags(owner: &str, key: &str, extra: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::from([
        (OWNER.to_owned(), owner.to_owned()),
        (KEY.to_owned(), key.to_owned()),
    ]);
    for (k, v) in extra {
        ids.insert(format!("scs-edge:{k}"), v.clone());
    }
    ids
}

/// A stable stand-in UUID for the row with `key`, used for references before the real UUID is known.
pub fn placeholder(key: &str) -> Uuid {
    const NAMESPACE: Uuid = Uuid::from_u128(0x5c5e_d9e0_0b1a_4c6e_9f3a_7e2d_1c0b_a987);
    Uuid::new_v5(&NAMESPACE, key.as_bytes())
}
