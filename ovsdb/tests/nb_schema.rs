//! The typed Northbound rows must match the installed OVN's schema, so that an OVN upgrade that
//! renames, removes or retypes a column the code relies on fails here instead of in production.

use std::path::Path;

use ovsdb::DatabaseSchema;
use ovsdb::typed::TypedRow;

const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";

fn installed_schema() -> DatabaseSchema {
    assert!(
        Path::new(NB_SCHEMA).exists(),
        "{NB_SCHEMA} is missing: install the Debian package ovn-central (or ovn-common) so the \
         typed OVN_Northbound rows can be checked against the installed OVN schema"
    );
    let text = std::fs::read_to_string(NB_SCHEMA).expect("read the NB schema");
    let json: serde_json::Value = serde_json::from_str(&text).expect("NB schema is JSON");
    DatabaseSchema::from_json(&json).expect("NB schema parses")
}

#[test]
fn typed_tables_match_installed_schema() {
    let schema = installed_schema();
    let problems = ovsdb::nb::check(&schema);
    assert!(
        problems.is_empty(),
        "the typed OVN_Northbound rows do not match {NB_SCHEMA} (version {}):\n{}",
        schema.version,
        problems
            .iter()
            .map(|p| format!("  - {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_typed_table_and_column_is_checked() {
    // Guards the check itself: a table missing from nb::TABLES would silently escape it.
    let schema = installed_schema();
    let checked: usize = ovsdb::nb::TABLES.iter().map(|(_, c)| c.len()).sum();
    assert!(checked > 100, "only {checked} columns checked");
    for (table, columns) in ovsdb::nb::TABLES {
        let t = schema.table(table).expect("table exists");
        for c in *columns {
            assert!(t.column(c.name).is_some(), "{table}.{}", c.name);
        }
    }
    assert_eq!(ovsdb::nb::LogicalSwitch::TABLE, "Logical_Switch");
    // Status columns are the ones other OVN components own.
    let lsp_status: Vec<&str> = ovsdb::nb::LogicalSwitchPort::COLUMNS
        .iter()
        .filter(|c| !c.writable)
        .map(|c| c.name)
        .collect();
    assert_eq!(lsp_status, ["tag", "dynamic_addresses", "up"]);
}

#[test]
fn vswitch_schema_parses() {
    // A second real-world schema exercises more of the schema grammar (maxRows, real columns,
    // integer ranges, weak references).
    let path = "/usr/share/openvswitch/vswitch.ovsschema";
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package openvswitch-common"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("JSON");
    let schema = DatabaseSchema::from_json(&json).expect("vswitch schema parses");
    assert_eq!(schema.name, "Open_vSwitch");
    assert_eq!(
        schema.table("Open_vSwitch").expect("root table").max_rows,
        Some(1)
    );
}
