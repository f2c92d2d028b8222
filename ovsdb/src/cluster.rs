//! Suitability of a server of a clustered (RAFT) database, from its `_Server` database.
//!
//! Any member of a cluster accepts connections, but a member cut off from the majority serves
//! stale data, and only the leader commits without an extra hop (and some tools insist on it).
//! Like the OVS IDL, the client monitors the `_Server.Database` row of its database: the member
//! must be connected to the cluster, and — when asked — be the leader; if that stops being true
//! the client moves on to another remote.

use serde_json::Value as Json;

use crate::error::Error;
use crate::monitor::{MonitorSpec, TableMonitor, parse_table_updates2};
use crate::replica::Snapshot;
use crate::schema::DatabaseSchema;
use crate::transact::Condition;
use crate::value::Value;

/// What a server must be to be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRequirement {
    /// The database whose cluster status matters (e.g. `OVN_Northbound`).
    pub database: String,
    /// Only the leader will do; otherwise any member connected to the cluster.
    pub leader_only: bool,
}

/// The live `_Server` view of one connection.
#[derive(Debug)]
pub(crate) struct ServerWatch {
    requirement: ClusterRequirement,
    schema: DatabaseSchema,
    spec: MonitorSpec,
    snapshot: Snapshot,
}

pub(crate) const MONITOR_ID: &str = "_server";

impl ServerWatch {
    /// Starts monitoring and checks the requirement. `Ok(None)` when the server has no
    /// `_Server` database (very old servers, which are never clustered).
    pub(crate) async fn start(
        conn: &crate::connection::Connection,
        requirement: &ClusterRequirement,
    ) -> Result<Option<Self>, Error> {
        let schema_json = match conn
            .call("get_schema", serde_json::json!(["_Server"]))
            .await
        {
            Ok(json) => json,
            Err(Error::Rpc { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let schema = DatabaseSchema::from_json(&schema_json)?;
        let spec = MonitorSpec::new("_Server").table_with(
            "Database",
            TableMonitor::columns(["name", "model", "connected", "leader"])
                .with_condition(Condition::eq("name", requirement.database.as_str())),
        );
        let reply = conn
            .call(
                "monitor_cond",
                serde_json::json!(["_Server", MONITOR_ID, spec.requests_json()]),
            )
            .await?;
        let mut watch = Self {
            requirement: requirement.clone(),
            schema,
            spec,
            snapshot: Snapshot::default(),
        };
        watch
            .apply(&reply, true)
            .map_err(|source| Error::Malformed {
                method: "monitor_cond _Server".into(),
                source,
            })?;
        Ok(Some(watch))
    }

    /// Applies an `update2` for the `_Server` monitor.
    pub(crate) fn apply(
        &mut self,
        updates: &Json,
        reset: bool,
    ) -> Result<(), crate::value::DecodeError> {
        let updates = parse_table_updates2(updates, &self.schema)?;
        self.snapshot
            .apply(&self.spec, &self.schema, updates, reset);
        Ok(())
    }

    /// Whether the server is (still) suitable; `Err` says why not.
    pub(crate) fn evaluate(&self) -> Result<(), String> {
        evaluate(&self.snapshot, &self.requirement)
    }
}

fn evaluate(snapshot: &Snapshot, requirement: &ClusterRequirement) -> Result<(), String> {
    let db = requirement.database.as_str();
    let row = snapshot
        .table("Database")
        .into_iter()
        .flat_map(|t| t.values())
        .find(|row| row.get("name").and_then(Value::as_str) == Some(db))
        .ok_or_else(|| format!("the server does not serve database {db}"))?;
    let flag = |column: &str| {
        row.get(column)
            .and_then(Value::as_atom)
            .and_then(crate::value::Atom::as_bool)
            .unwrap_or(false)
    };
    if row.get("model").and_then(Value::as_str) != Some("clustered") {
        return Ok(());
    }
    if !flag("connected") {
        return Err(format!(
            "this member of the {db} cluster is not connected to the cluster"
        ));
    }
    if requirement.leader_only && !flag("leader") {
        return Err(format!("this member is not the leader of the {db} cluster"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server_schema() -> DatabaseSchema {
        DatabaseSchema::from_json(&json!({
            "name": "_Server", "version": "1.2.0",
            "tables": {"Database": {"isRoot": true, "columns": {
                "name": {"type": "string"},
                "model": {"type": {"key": {"type": "string", "enum": ["set", ["standalone", "clustered", "relay"]]}}},
                "connected": {"type": "boolean"},
                "leader": {"type": "boolean"},
                "schema": {"type": {"key": "string", "min": 0, "max": 1}}
            }}}
        }))
        .expect("schema")
    }

    fn watch(leader_only: bool) -> ServerWatch {
        ServerWatch {
            requirement: ClusterRequirement {
                database: "OVN_Northbound".into(),
                leader_only,
            },
            schema: server_schema(),
            spec: MonitorSpec::new("_Server").table_with(
                "Database",
                TableMonitor::columns(["name", "model", "connected", "leader"]),
            ),
            snapshot: Snapshot::default(),
        }
    }

    const U: &str = "11111111-1111-1111-1111-111111111111";

    #[test]
    fn leader_and_connected_rules() {
        let mut w = watch(true);
        w.apply(&json!({}), true).expect("empty");
        assert!(w.evaluate().expect_err("no row").contains("does not serve"));

        w.apply(
            &json!({"Database": {U: {"initial": {"name": "OVN_Northbound", "model": "clustered", "connected": true, "leader": true}}}}),
            true,
        )
        .expect("initial");
        assert_eq!(w.evaluate(), Ok(()));

        w.apply(
            &json!({"Database": {U: {"modify": {"leader": false}}}}),
            false,
        )
        .expect("modify");
        assert!(
            w.evaluate()
                .expect_err("follower")
                .contains("not the leader")
        );

        let mut any = watch(false);
        any.apply(
            &json!({"Database": {U: {"initial": {"name": "OVN_Northbound", "model": "clustered", "connected": true}}}}),
            true,
        )
        .expect("initial");
        assert_eq!(
            any.evaluate(),
            Ok(()),
            "followers are fine without leader_only"
        );
        any.apply(
            &json!({"Database": {U: {"modify": {"connected": false}}}}),
            false,
        )
        .expect("modify");
        assert!(
            any.evaluate()
                .expect_err("cut off")
                .contains("not connected")
        );
    }

    #[test]
    fn standalone_is_always_fine() {
        let mut w = watch(true);
        w.apply(
            &json!({"Database": {U: {"initial": {"name": "OVN_Northbound", "model": "standalone", "connected": true}}}}),
            true,
        )
        .expect("initial");
        assert_eq!(w.evaluate(), Ok(()));
    }
}
