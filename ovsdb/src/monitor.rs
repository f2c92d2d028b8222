//! What to monitor (`monitor_cond` requests) and how the server's `<table-updates2>` are decoded.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use crate::schema::DatabaseSchema;
use crate::transact::Condition;
use crate::value::{DecodeError, Row};

/// What to replicate of one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableMonitor {
    /// Columns to replicate; `None` replicates all columns of the server's schema.
    pub columns: Option<Vec<String>>,
    /// Only rows matching all of these conditions are replicated; empty means all rows.
    pub conditions: Vec<Condition>,
}

impl TableMonitor {
    /// All columns, all rows.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only these columns (saves bandwidth and memory on wide tables).
    pub fn columns<I, S>(columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            columns: Some(columns.into_iter().map(Into::into).collect()),
            conditions: Vec::new(),
        }
    }

    /// Restricts to rows matching `condition` (ANDed with earlier ones).
    #[must_use]
    pub fn with_condition(mut self, condition: Condition) -> Self {
        self.conditions.push(condition);
        self
    }

    fn to_json(&self) -> Json {
        let mut obj = Map::new();
        if let Some(columns) = &self.columns {
            obj.insert("columns".into(), json!(columns));
        }
        if !self.conditions.is_empty() {
            obj.insert(
                "where".into(),
                Json::Array(self.conditions.iter().map(Condition::to_json).collect()),
            );
        }
        Json::Array(vec![Json::Object(obj)])
    }
}

/// A set of tables of one database to keep a [`crate::Replica`] of.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSpec {
    /// Database name, e.g. `OVN_Northbound`.
    pub database: String,
    /// Tables to replicate.
    pub tables: BTreeMap<String, TableMonitor>,
}

impl MonitorSpec {
    /// An empty spec for `database`; add tables with [`MonitorSpec::table`].
    pub fn new(database: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            tables: BTreeMap::new(),
        }
    }

    /// Replicates `table` entirely.
    #[must_use]
    pub fn table(self, table: impl Into<String>) -> Self {
        self.table_with(table, TableMonitor::all())
    }

    /// Replicates `table` as described.
    #[must_use]
    pub fn table_with(mut self, table: impl Into<String>, monitor: TableMonitor) -> Self {
        self.tables.insert(table.into(), monitor);
        self
    }

    /// The `<monitor-cond-requests>` object.
    pub fn requests_json(&self) -> Json {
        Json::Object(
            self.tables
                .iter()
                .map(|(table, m)| (table.clone(), m.to_json()))
                .collect(),
        )
    }

    /// Columns that the replica holds for `table`: the requested ones, or all of the schema's.
    pub(crate) fn monitored_columns<'a>(
        &'a self,
        table: &str,
        schema: &'a DatabaseSchema,
    ) -> Vec<&'a str> {
        match self.tables.get(table).and_then(|m| m.columns.as_ref()) {
            Some(columns) => columns.iter().map(String::as_str).collect(),
            None => schema
                .table(table)
                .map(|t| t.columns.keys().map(String::as_str).collect())
                .unwrap_or_default(),
        }
    }
}

/// One `<row-update2>`.
#[derive(Debug, Clone, PartialEq)]
pub enum RowUpdate {
    /// Row present when the monitor started (only in the monitor reply).
    Initial(Row),
    /// Row inserted (or now matching the condition).
    Insert(Row),
    /// Row changed; the row holds *diffs* for the changed columns (see
    /// [`crate::replica::apply_diff`]).
    Modify(Row),
    /// Row deleted (or no longer matching).
    Delete,
}

/// Decoded `<table-updates2>`: table → row UUID → update.
pub type TableUpdates = BTreeMap<String, BTreeMap<Uuid, RowUpdate>>;

/// Decodes `<table-updates2>` with the schema's column types. Tables and columns unknown to the
/// schema are skipped (the server only sends what was asked for, so that only happens when the
/// schema changed under us, and the replica is reset then anyway).
pub fn parse_table_updates2(
    json: &Json,
    schema: &DatabaseSchema,
) -> Result<TableUpdates, DecodeError> {
    let Json::Object(tables) = json else {
        return Err(DecodeError::new(
            "table-updates2",
            json,
            "expected an object",
        ));
    };
    let mut out = TableUpdates::new();
    for (table_name, rows) in tables {
        let Some(table) = schema.table(table_name) else {
            tracing::warn!(table = %table_name, "update for a table not in the schema; ignored");
            continue;
        };
        let Json::Object(rows) = rows else {
            return Err(DecodeError::new(
                "table-update2",
                rows,
                "expected an object",
            ));
        };
        let table_out = out.entry(table_name.clone()).or_default();
        for (uuid, update) in rows {
            let uuid = Uuid::parse_str(uuid).map_err(|e| {
                DecodeError::new("row-update2", update, format!("bad row UUID: {e}"))
            })?;
            let Json::Object(update_obj) = update else {
                return Err(DecodeError::new(
                    "row-update2",
                    update,
                    "expected an object",
                ));
            };
            let (kind, row) = update_obj.iter().next().ok_or_else(|| {
                DecodeError::new(
                    "row-update2",
                    update,
                    "expected one of initial/insert/modify/delete",
                )
            })?;
            let parsed = match kind.as_str() {
                "initial" => RowUpdate::Initial(table.decode_row(row)?),
                "insert" => RowUpdate::Insert(table.decode_row(row)?),
                "modify" => RowUpdate::Modify(table.decode_row(row)?),
                "delete" => RowUpdate::Delete,
                other => {
                    return Err(DecodeError::new(
                        "row-update2",
                        update,
                        format!("unknown update kind {other:?}"),
                    ));
                }
            };
            table_out.insert(uuid, parsed);
        }
    }
    Ok(out)
}

/// The reply to `monitor_cond_since`: `[found, last-txn-id, table-updates2]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MonitorSinceReply {
    pub(crate) found: bool,
    pub(crate) last_txn_id: Option<Uuid>,
    pub(crate) updates: Json,
}

pub(crate) fn parse_monitor_since_reply(json: &Json) -> Result<MonitorSinceReply, DecodeError> {
    let Some([found, txn, updates]) = json.as_array().map(Vec::as_slice) else {
        return Err(DecodeError::new(
            "monitor_cond_since reply",
            json,
            "expected [found, last-txn-id, updates]",
        ));
    };
    let found = found.as_bool().ok_or_else(|| {
        DecodeError::new("monitor_cond_since reply", json, "found is not a boolean")
    })?;
    Ok(MonitorSinceReply {
        found,
        last_txn_id: parse_txn_id(txn)?,
        updates: updates.clone(),
    })
}

/// A transaction id; the all-zero UUID means "none" (server without history).
pub(crate) fn parse_txn_id(json: &Json) -> Result<Option<Uuid>, DecodeError> {
    let text = json
        .as_str()
        .ok_or_else(|| DecodeError::new("transaction id", json, "expected a UUID string"))?;
    let uuid = Uuid::parse_str(text)
        .map_err(|e| DecodeError::new("transaction id", json, format!("bad UUID: {e}")))?;
    Ok((!uuid.is_nil()).then_some(uuid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn schema() -> DatabaseSchema {
        DatabaseSchema::from_json(&json!({
            "name": "Db", "version": "1.0.0",
            "tables": {"T": {"columns": {
                "name": {"type": "string"},
                "tags": {"type": {"key": "string", "min": 0, "max": "unlimited"}}
            }}}
        }))
        .expect("schema")
    }

    #[test]
    fn request_json() {
        let spec = MonitorSpec::new("Db").table("A").table_with(
            "B",
            TableMonitor::columns(["name"]).with_condition(Condition::eq("name", "x")),
        );
        assert_eq!(
            spec.requests_json(),
            json!({"A": [{}], "B": [{"columns": ["name"], "where": [["name", "==", "x"]]}]})
        );
        let schema = schema();
        assert_eq!(
            MonitorSpec::new("Db")
                .table("T")
                .monitored_columns("T", &schema),
            vec!["name", "tags"]
        );
    }

    #[test]
    fn parses_updates() {
        let u1 = "11111111-1111-1111-1111-111111111111";
        let u2 = "22222222-2222-2222-2222-222222222222";
        let updates = parse_table_updates2(
            &json!({
                "T": {
                    u1: {"insert": {"name": "a", "tags": "x"}},
                    u2: {"delete": null}
                },
                "Unknown": {u1: {"insert": {}}}
            }),
            &schema(),
        )
        .expect("updates");
        let t = &updates["T"];
        let RowUpdate::Insert(row) = &t[&u1.parse::<Uuid>().expect("uuid")] else {
            panic!("not an insert")
        };
        assert_eq!(row["tags"], Value::set(["x"]));
        assert_eq!(t[&u2.parse::<Uuid>().expect("uuid")], RowUpdate::Delete);
        assert!(!updates.contains_key("Unknown"));

        for bad in [
            json!([]),
            json!({"T": []}),
            json!({"T": {"not-a-uuid": {"delete": null}}}),
            json!({"T": {u1: {}}}),
            json!({"T": {u1: {"frobnicate": {}}}}),
            json!({"T": {u1: {"insert": {"name": 1}}}}),
        ] {
            assert!(parse_table_updates2(&bad, &schema()).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_since_reply() {
        let reply =
            parse_monitor_since_reply(&json!([true, "33333333-3333-3333-3333-333333333333", {}]))
                .expect("reply");
        assert!(reply.found);
        assert!(reply.last_txn_id.is_some());
        let reply =
            parse_monitor_since_reply(&json!([false, "00000000-0000-0000-0000-000000000000", {}]))
                .expect("reply");
        assert_eq!(reply.last_txn_id, None);
        assert!(parse_monitor_since_reply(&json!([true, "x", {}])).is_err());
        assert!(parse_monitor_since_reply(&json!({})).is_err());
    }
}
