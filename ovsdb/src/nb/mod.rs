//! Typed rows of the OVN Northbound database (`OVN_Northbound`) for the tables a Neutron-style
//! network layer writes: switches and their ports, routers with ports, routes and NAT, ACLs with
//! port groups and address sets, DHCP options, gateway/HA chassis and load balancers.
//!
//! Enumerated string columns (`NAT.type`, `ACL.action`, …) stay `String`s so that a newer OVN
//! adding a value does not make whole rows unreadable; the constants in each module name the
//! values OVN documents. Columns that `ovn-northd` or `ovn-controller` own are marked as status
//! columns: read, never written by [`crate::TypedRow::to_row`].

mod acl;
mod dhcp;
mod global;
mod ha;
mod load_balancer;
mod router;
mod switch;

pub use acl::{Acl, AddressSet, PortGroup, acl_action, acl_direction};
pub use dhcp::DhcpOptions;
pub use global::NbGlobal;
pub use ha::{GatewayChassis, HaChassis, HaChassisGroup};
pub use load_balancer::LoadBalancer;
pub use router::{LogicalRouter, LogicalRouterPort, LogicalRouterStaticRoute, Nat, nat_type};
pub use switch::{LogicalSwitch, LogicalSwitchPort};

use crate::schema::DatabaseSchema;
use crate::typed::{ColumnSpec, SchemaMismatch, TypedRow, check_schema};

/// The database name.
pub const DATABASE: &str = "OVN_Northbound";

/// Every typed table with its column specs, for schema checks and for building a monitor of
/// everything this module understands.
pub const TABLES: &[(&str, &[ColumnSpec])] = &[
    (NbGlobal::TABLE, NbGlobal::COLUMNS),
    (LogicalSwitch::TABLE, LogicalSwitch::COLUMNS),
    (LogicalSwitchPort::TABLE, LogicalSwitchPort::COLUMNS),
    (LogicalRouter::TABLE, LogicalRouter::COLUMNS),
    (LogicalRouterPort::TABLE, LogicalRouterPort::COLUMNS),
    (
        LogicalRouterStaticRoute::TABLE,
        LogicalRouterStaticRoute::COLUMNS,
    ),
    (Nat::TABLE, Nat::COLUMNS),
    (Acl::TABLE, Acl::COLUMNS),
    (PortGroup::TABLE, PortGroup::COLUMNS),
    (AddressSet::TABLE, AddressSet::COLUMNS),
    (DhcpOptions::TABLE, DhcpOptions::COLUMNS),
    (GatewayChassis::TABLE, GatewayChassis::COLUMNS),
    (HaChassisGroup::TABLE, HaChassisGroup::COLUMNS),
    (HaChassis::TABLE, HaChassis::COLUMNS),
    (LoadBalancer::TABLE, LoadBalancer::COLUMNS),
];

/// Checks a server's Northbound schema against these types, so an OVN upgrade that changes a
/// column is reported at connect time instead of as odd behaviour later.
pub fn check(schema: &DatabaseSchema) -> Vec<SchemaMismatch> {
    let mut problems = Vec::new();
    if schema.name != DATABASE {
        problems.push(SchemaMismatch {
            table: "(database)",
            column: None,
            problem: format!("expected {DATABASE}, got {}", schema.name),
        });
    }
    problems.extend(check_schema(schema, TABLES));
    problems
}

/// A monitor of every typed table with the columns the types map, ready for
/// [`crate::Client::monitor`].
pub fn monitor_spec() -> crate::MonitorSpec {
    TABLES.iter().fold(
        crate::MonitorSpec::new(DATABASE),
        |spec, (table, columns)| {
            spec.table_with(
                *table,
                crate::TableMonitor::columns(columns.iter().map(|c| c.name)),
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use std::collections::{BTreeMap, BTreeSet};
    use uuid::Uuid;

    #[test]
    fn column_names_are_unique_and_tables_listed_once() {
        let mut tables = BTreeSet::new();
        for (table, columns) in TABLES {
            assert!(tables.insert(*table), "{table} listed twice");
            let mut names = BTreeSet::new();
            for c in *columns {
                assert!(names.insert(c.name), "{table}.{} twice", c.name);
            }
        }
        assert_eq!(monitor_spec().tables.len(), TABLES.len());
    }

    #[test]
    fn logical_switch_port_conversion() {
        let ls = Uuid::from_u128(42);
        let lsp = LogicalSwitchPort {
            name: "p1".into(),
            kind: "router".into(),
            addresses: BTreeSet::from(["router".to_owned()]),
            options: BTreeMap::from([("router-port".to_owned(), "lrp1".to_owned())]),
            enabled: Some(true),
            dhcpv4_options: Some(ls),
            up: Some(true),
            tag: Some(5),
            external_ids: BTreeMap::from([("owner".to_owned(), "x".to_owned())]),
            ..Default::default()
        };
        let row = lsp.to_row();
        assert_eq!(row["type"], Value::from("router"));
        assert_eq!(row["enabled"], Value::set([true]));
        assert_eq!(row["tag_request"], Value::empty_set());
        for status in ["up", "tag", "dynamic_addresses"] {
            assert!(!row.contains_key(status), "{status} must not be written");
        }
        let back = LogicalSwitchPort::from_row(&row).expect("from_row");
        assert_eq!(back.name, "p1");
        assert_eq!(back.dhcpv4_options, Some(ls));
        assert_eq!(back.up, None);
        assert_eq!(
            LogicalSwitchPort {
                up: Some(true),
                tag: Some(5),
                ..back
            },
            lsp
        );
    }

    #[test]
    fn nat_and_acl_conversion() {
        let nat = Nat {
            kind: nat_type::SNAT.into(),
            external_ip: "203.0.113.1".into(),
            logical_ip: "10.0.0.0/24".into(),
            ..Default::default()
        };
        assert_eq!(Nat::from_row(&nat.to_row()).expect("nat"), nat);
        let acl = Acl {
            priority: 1001,
            direction: acl_direction::TO_LPORT.into(),
            match_: "outport == @pg && ip4".into(),
            action: acl_action::ALLOW_RELATED.into(),
            name: Some("sg-rule".into()),
            ..Default::default()
        };
        let row = acl.to_row();
        assert_eq!(row["match"], Value::from("outport == @pg && ip4"));
        assert_eq!(Acl::from_row(&row).expect("acl"), acl);
    }
}
