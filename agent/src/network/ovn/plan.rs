//! The difference between what OVN should hold and what it holds, as one transaction.
//!
//! Only rows tagged with this site's owner are compared (plus, for tables whose `name` is unique, an
//! untagged row of the wanted name, which is adopted rather than fought over). Missing rows are
//! inserted, rows whose managed columns differ are updated column by column, and owned root rows that
//! nothing wants are deleted; owned non-root rows (ports, ACLs, NAT rules, routes) vanish by OVSDB's
//! garbage collection once their parents stop referring to them.

use super::desired::Desired;
use super::naming::{KEY, OWNER, placeholder};
use ovsdb::{Atom, Condition, Operation, Row, TypedRow, Value, nb};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Tables the agent writes, with whether they are root tables and whether `name` is unique.
const TABLES: &[(&str, bool, bool)] = &[
    ("Logical_Switch", true, false),
    ("Logical_Switch_Port", false, true),
    ("DHCP_Options", true, false),
    ("Port_Group", true, true),
    ("ACL", false, false),
    ("Logical_Router", true, false),
    ("Logical_Router_Port", false, true),
    ("Logical_Router_Static_Route", false, false),
    ("NAT", false, false),
    ("Gateway_Chassis", false, true),
];

/// Tables the agent writes (to monitor).
pub fn managed_tables() -> impl Iterator<Item = &'static str> {
    TABLES.iter().map(|t| t.0)
}

fn is_root(table: &str) -> bool {
    TABLES.iter().any(|t| t.0 == table && t.1)
}

fn unique_name(table: &str) -> bool {
    TABLES.iter().any(|t| t.0 == table && t.2)
}

/// A row as the typed layer writes it: the same encoding as desired rows, status columns left out.
fn canonical(table: &str, row: &Row) -> Option<Row> {
    fn via<T: TypedRow>(row: &Row) -> Option<Row> {
        T::from_row(row).ok().map(|t| t.to_row())
    }
    match table {
        "Logical_Switch" => via::<nb::LogicalSwitch>(row),
        "Logical_Switch_Port" => via::<nb::LogicalSwitchPort>(row),
        "DHCP_Options" => via::<nb::DhcpOptions>(row),
        "Port_Group" => via::<nb::PortGroup>(row),
        "ACL" => via::<nb::Acl>(row),
        "Logical_Router" => via::<nb::LogicalRouter>(row),
        "Logical_Router_Port" => via::<nb::LogicalRouterPort>(row),
        "Logical_Router_Static_Route" => via::<nb::LogicalRouterStaticRoute>(row),
        "NAT" => via::<nb::Nat>(row),
        "Gateway_Chassis" => via::<nb::GatewayChassis>(row),
        _ => None,
    }
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Map(map)) = value {
        for (k, v) in map {
            if let (Atom::String(k), Atom::String(v)) = (k, v) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

fn name_of(row: &Row) -> Option<String> {
    match row.get("name") {
        Some(Value::Atom(Atom::String(s))) => Some(s.clone()),
        Some(Value::Set(set)) if set.len() == 1 => match set.iter().next() {
            Some(Atom::String(s)) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// One existing row.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingRow {
    /// Table.
    pub table: &'static str,
    /// Its UUID.
    pub uuid: Uuid,
    /// Canonical columns.
    pub row: Row,
}

/// What OVN holds that concerns this site.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Existing {
    /// Owned rows by key.
    pub owned: BTreeMap<String, ExistingRow>,
    /// Owned rows whose key another row already has (left by a crash between two writers).
    pub duplicates: Vec<ExistingRow>,
    /// Untagged rows of tables with unique names, by (table, name).
    pub unowned_by_name: BTreeMap<(&'static str, String), ExistingRow>,
}

/// Collects the rows of the managed tables from `tables` (table name → uuid → row).
pub fn existing<'a>(
    tables: impl Fn(&str) -> Option<Vec<(Uuid, &'a Row)>>,
    owner: &str,
) -> Existing {
    let mut found = Existing::default();
    for &(table, _, unique) in TABLES {
        for (uuid, row) in tables(table).unwrap_or_default() {
            let Some(canonical_row) = canonical(table, row) else {
                continue;
            };
            let ids = string_map(row.get("external_ids"));
            let entry = ExistingRow {
                table,
                uuid,
                row: canonical_row,
            };
            match (ids.get(OWNER), ids.get(KEY)) {
                (Some(o), Some(key)) if o == owner => {
                    if found.owned.contains_key(key) {
                        found.duplicates.push(entry);
                    } else {
                        found.owned.insert(key.clone(), entry);
                    }
                }
                (None, _) if unique => {
                    if let Some(name) = name_of(row) {
                        found.unowned_by_name.insert((table, name), entry);
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// What a plan does, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanSummary {
    /// Rows inserted.
    pub inserted: usize,
    /// Rows updated.
    pub updated: usize,
    /// Root rows deleted.
    pub deleted: usize,
}

/// The transaction that makes `existing` match `desired`; empty when they match.
pub fn plan(desired: &Desired, existing: &Existing) -> (Vec<Operation>, PlanSummary) {
    let mut summary = PlanSummary::default();
    // Where each desired row is (or will be): an existing UUID, or a named UUID for a new row.
    let mut targets: BTreeMap<Uuid, Atom> = BTreeMap::new();
    let mut matched: BTreeMap<&str, &ExistingRow> = BTreeMap::new();
    for (index, (key, want)) in desired.iter().enumerate() {
        let found = existing
            .owned
            .get(key)
            .filter(|e| e.table == want.table)
            .or_else(|| {
                if unique_name(want.table) {
                    name_of(&want.row)
                        .and_then(|name| existing.unowned_by_name.get(&(want.table, name)))
                } else {
                    None
                }
            });
        let atom = match found {
            Some(row) => {
                matched.insert(key.as_str(), row);
                Atom::Uuid(row.uuid)
            }
            None => Atom::NamedUuid(format!("row{index}")),
        };
        targets.insert(placeholder(key), atom);
    }

    let mut ops = Vec::new();
    for (index, (key, want)) in desired.iter().enumerate() {
        let row = resolve(&want.row, &targets);
        match matched.get(key.as_str()) {
            None => {
                ops.push(Operation::insert_named(
                    want.table,
                    row,
                    format!("row{index}"),
                ));
                summary.inserted += 1;
            }
            Some(current) => {
                let changed: Row = row
                    .into_iter()
                    .filter(|(column, value)| current.row.get(column) != Some(value))
                    .collect();
                if !changed.is_empty() {
                    ops.push(Operation::update(
                        want.table,
                        vec![Condition::uuid(current.uuid)],
                        changed,
                    ));
                    summary.updated += 1;
                }
            }
        }
    }
    let kept: BTreeSet<Uuid> = matched.values().map(|r| r.uuid).collect();
    let orphans = existing
        .owned
        .iter()
        .filter(|(key, _)| !desired.contains_key(*key))
        .map(|(_, row)| row);
    for row in orphans.chain(existing.duplicates.iter()) {
        if is_root(row.table) && !kept.contains(&row.uuid) {
            ops.push(Operation::delete(
                row.table,
                vec![Condition::uuid(row.uuid)],
            ));
            summary.deleted += 1;
        }
    }
    (ops, summary)
}

fn resolve_atom(atom: &Atom, targets: &BTreeMap<Uuid, Atom>) -> Atom {
    match atom {
        Atom::Uuid(u) => targets.get(u).cloned().unwrap_or_else(|| atom.clone()),
        other => other.clone(),
    }
}

/// Swaps placeholder UUIDs for real or named UUIDs.
fn resolve(row: &Row, targets: &BTreeMap<Uuid, Atom>) -> Row {
    row.iter()
        .map(|(column, value)| {
            let value = match value {
                Value::Atom(a) => Value::Atom(resolve_atom(a, targets)),
                Value::Set(set) => {
                    Value::Set(set.iter().map(|a| resolve_atom(a, targets)).collect())
                }
                Value::Map(map) => Value::Map(
                    map.iter()
                        .map(|(k, v)| (resolve_atom(k, targets), resolve_atom(v, targets)))
                        .collect(),
                ),
            };
            (column.clone(), value)
        })
        .collect()
}
