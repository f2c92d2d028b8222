//! The local copy of monitored tables.
//!
//! Readers take cheap immutable [`Snapshot`]s (an `Arc`), so a reconciler can work on a
//! consistent view for as long as it likes while updates keep arriving; the writer copies a table
//! only when a reader still holds the old version (rows themselves are shared).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::error::Error;
use crate::monitor::{MonitorSpec, RowUpdate, TableUpdates};
use crate::schema::DatabaseSchema;
use crate::typed::{RowError, TypedRow};
use crate::value::{Atom, Row, Value};

/// Rows of one table by UUID.
pub type Table = BTreeMap<Uuid, Arc<Row>>;

/// Applies an `update2` column diff to the current value.
///
/// For columns that hold at most one value the diff *is* the new value. For sets, every element
/// of the diff is toggled (present → removed, absent → added). For maps, a pair equal to the
/// current one is removed, a key with a different value is replaced, a new key is added.
pub fn apply_diff(current: &Value, diff: &Value, multi: bool) -> Value {
    if !multi {
        return diff.clone();
    }
    if let Value::Map(map) = current {
        let mut map = map.clone();
        if let Some(diff) = diff.as_map() {
            for (k, v) in diff {
                if map.get(k) == Some(v) {
                    map.remove(k);
                } else {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
        Value::Map(map)
    } else {
        let mut set: BTreeSet<Atom> = current.set_iter().cloned().collect();
        for atom in diff.set_iter() {
            if !set.remove(atom) {
                set.insert(atom.clone());
            }
        }
        Value::Set(set)
    }
}

/// What a batch of updates changed, for [`ReplicaEvent`]s.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    /// Tables with at least one inserted, modified or deleted row.
    pub tables: BTreeSet<String>,
}

/// An immutable view of the replica at one revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    tables: BTreeMap<String, Arc<Table>>,
    revision: u64,
    generation: u64,
    last_txn_id: Option<Uuid>,
}

impl Snapshot {
    /// Rows of a monitored table (`None` if the table is not monitored).
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name).map(AsRef::as_ref)
    }

    /// Names of the monitored tables.
    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// One row.
    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<&Row> {
        self.table(table)?.get(uuid).map(AsRef::as_ref)
    }

    /// Rows of a typed table, each decoded separately so one odd row does not hide the rest.
    pub fn rows<T: TypedRow>(&self) -> impl Iterator<Item = (Uuid, Result<T, RowError>)> + '_ {
        self.table(T::TABLE)
            .into_iter()
            .flatten()
            .map(|(uuid, row)| (*uuid, T::from_row(row)))
    }

    /// One typed row.
    pub fn get<T: TypedRow>(&self, uuid: &Uuid) -> Option<Result<T, RowError>> {
        self.row(T::TABLE, uuid).map(T::from_row)
    }

    /// Counts every applied batch of updates; strictly increasing.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Counts full (re)loads: it changes whenever the content was replaced wholesale instead of
    /// updated incrementally (first load, reconnect without usable history, schema change), so a
    /// consumer that keeps derived state knows it must rebuild it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The last transaction id seen (clustered databases only); what `monitor_cond_since`
    /// resumes from.
    pub fn last_txn_id(&self) -> Option<Uuid> {
        self.last_txn_id
    }

    /// Applies updates; `reset` empties the monitored tables first (a full reload).
    pub(crate) fn apply(
        &mut self,
        spec: &MonitorSpec,
        schema: &DatabaseSchema,
        updates: TableUpdates,
        reset: bool,
    ) -> ChangeSet {
        let mut changes = ChangeSet::default();
        if reset {
            self.tables = spec
                .tables
                .keys()
                .map(|t| (t.clone(), Arc::new(Table::new())))
                .collect();
            changes.tables = spec.tables.keys().cloned().collect();
            self.generation += 1;
        }
        for (table_name, rows) in updates {
            let Some(table_schema) = schema.table(&table_name) else {
                continue;
            };
            let table = Arc::make_mut(self.tables.entry(table_name.clone()).or_default());
            if !rows.is_empty() {
                changes.tables.insert(table_name.clone());
            }
            for (uuid, update) in rows {
                match update {
                    RowUpdate::Initial(values) | RowUpdate::Insert(values) => {
                        let mut row = Row::new();
                        for column in spec.monitored_columns(&table_name, schema) {
                            if let Some(c) = table_schema.column(column) {
                                row.insert(column.to_owned(), c.ty.default_value());
                            }
                        }
                        row.extend(values);
                        table.insert(uuid, Arc::new(row));
                    }
                    RowUpdate::Modify(diffs) => {
                        let Some(row) = table.get_mut(&uuid) else {
                            tracing::warn!(table = %table_name, %uuid, "modify for an unknown row; ignored");
                            continue;
                        };
                        let row = Arc::make_mut(row);
                        for (column, diff) in diffs {
                            let Some(c) = table_schema.column(&column) else {
                                continue;
                            };
                            let current = row
                                .get(&column)
                                .cloned()
                                .unwrap_or_else(|| c.ty.default_value());
                            // Diffs were decoded with the column type, so a scalar's diff is
                            // already an atom and the result keeps the normalised shape.
                            row.insert(column, apply_diff(&current, &diff, c.ty.max.is_multi()));
                        }
                    }
                    RowUpdate::Delete => {
                        table.remove(&uuid);
                    }
                }
            }
        }
        self.revision += 1;
        changes
    }

    pub(crate) fn set_last_txn_id(&mut self, id: Option<Uuid>) {
        if id.is_some() {
            self.last_txn_id = id;
        }
    }

    pub(crate) fn clear_last_txn_id(&mut self) {
        self.last_txn_id = None;
    }
}

/// The version a [`Replica`] is at, published on every change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaStatus {
    /// See [`Snapshot::revision`].
    pub revision: u64,
    /// See [`Snapshot::generation`].
    pub generation: u64,
    /// Whether the initial content has been loaded at least once.
    pub loaded: bool,
    /// Set when the monitor failed for good (e.g. the server no longer has a monitored table);
    /// the replica then stops updating.
    pub error: Option<Arc<str>>,
}

/// A change notification for consumers that react per table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicaEvent {
    /// Rows of these tables changed incrementally.
    Changed {
        /// Revision after the change.
        revision: u64,
        /// The tables touched.
        tables: Arc<BTreeSet<String>>,
    },
    /// The whole content was reloaded (see [`Snapshot::generation`]): rebuild derived state.
    Reset {
        /// Revision after the reload.
        revision: u64,
        /// New generation.
        generation: u64,
    },
}

#[derive(Debug)]
pub(crate) struct ReplicaInner {
    pub(crate) monitor_id: String,
    pub(crate) spec: MonitorSpec,
    data: RwLock<Arc<Snapshot>>,
    status: watch::Sender<ReplicaStatus>,
    events: broadcast::Sender<ReplicaEvent>,
}

/// A live local copy of the tables of one [`MonitorSpec`], kept up to date by the client across
/// reconnects.
#[derive(Debug, Clone)]
pub struct Replica {
    pub(crate) inner: Arc<ReplicaInner>,
}

impl Replica {
    pub(crate) fn new(monitor_id: String, spec: MonitorSpec) -> Self {
        let (status, _) = watch::channel(ReplicaStatus::default());
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(ReplicaInner {
                monitor_id,
                spec,
                data: RwLock::new(Arc::new(Snapshot::default())),
                status,
                events,
            }),
        }
    }

    /// The monitored database.
    pub fn database(&self) -> &str {
        &self.inner.spec.database
    }

    /// What is monitored.
    pub fn spec(&self) -> &MonitorSpec {
        &self.inner.spec
    }

    /// The current content; cheap, and unaffected by later updates.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(
            &self
                .inner
                .data
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The current status.
    pub fn status(&self) -> ReplicaStatus {
        self.inner.status.borrow().clone()
    }

    /// A `watch` that changes on every update, reset or failure: the way to be woken up
    /// without missing anything (intermediate revisions coalesce).
    pub fn subscribe(&self) -> watch::Receiver<ReplicaStatus> {
        self.inner.status.subscribe()
    }

    /// Per-table change events. A lagging receiver gets `RecvError::Lagged` and should then
    /// resynchronise from a snapshot.
    pub fn events(&self) -> broadcast::Receiver<ReplicaEvent> {
        self.inner.events.subscribe()
    }

    /// Waits until `predicate` holds for a snapshot and returns that snapshot; how tests and
    /// reconcilers wait for an expected state without sleeping.
    pub async fn wait_until<F>(
        &self,
        timeout: Duration,
        mut predicate: F,
    ) -> Result<Arc<Snapshot>, Error>
    where
        F: FnMut(&Snapshot) -> bool,
    {
        let mut rx = self.subscribe();
        let wait = async {
            loop {
                let status = rx.borrow_and_update().clone();
                let snapshot = self.snapshot();
                if status.loaded && predicate(&snapshot) {
                    return Ok(snapshot);
                }
                if let Some(error) = status.error {
                    return Err(Error::Monitor {
                        database: self.database().to_owned(),
                        reason: error.to_string(),
                    });
                }
                if rx.changed().await.is_err() {
                    return Err(Error::Shutdown);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout {
                what: "the replica to reach the expected state",
                after: timeout,
            })?
    }

    /// Applies a batch; called by the client's supervisor only.
    pub(crate) fn apply(
        &self,
        schema: &DatabaseSchema,
        updates: TableUpdates,
        reset: bool,
        last_txn_id: Option<Uuid>,
    ) {
        let (changes, revision, generation) = {
            let mut guard = self
                .inner
                .data
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let snapshot = Arc::make_mut(&mut guard);
            let changes = snapshot.apply(&self.inner.spec, schema, updates, reset);
            if reset {
                snapshot.clear_last_txn_id();
            }
            snapshot.set_last_txn_id(last_txn_id);
            (changes, snapshot.revision, snapshot.generation)
        };
        // Event first: whoever is woken by the status watch can then rely on the event being
        // queued too.
        let event = if reset {
            ReplicaEvent::Reset {
                revision,
                generation,
            }
        } else {
            ReplicaEvent::Changed {
                revision,
                tables: Arc::new(changes.tables),
            }
        };
        let _ = self.inner.events.send(event);
        self.inner.status.send_modify(|s| {
            s.revision = revision;
            s.generation = generation;
            s.loaded = true;
        });
    }

    pub(crate) fn last_txn_id(&self) -> Option<Uuid> {
        self.snapshot().last_txn_id
    }

    pub(crate) fn fail(&self, reason: &str) {
        let reason: Arc<str> = Arc::from(reason);
        self.inner.status.send_modify(|s| s.error = Some(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::parse_table_updates2;
    use serde_json::json;

    fn schema() -> DatabaseSchema {
        DatabaseSchema::from_json(&json!({
            "name": "Db", "version": "1.0.0",
            "tables": {"T": {"columns": {
                "name": {"type": "string"},
                "n": {"type": "integer"},
                "opt": {"type": {"key": "string", "min": 0, "max": 1}},
                "tags": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
                "ext": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
            }}}
        }))
        .expect("schema")
    }

    const U1: &str = "11111111-1111-1111-1111-111111111111";

    fn u1() -> Uuid {
        U1.parse().expect("uuid")
    }

    #[test]
    fn diff_semantics() {
        // Sets toggle.
        assert_eq!(
            apply_diff(&Value::set(["a", "b"]), &Value::set(["b", "c"]), true),
            Value::set(["a", "c"])
        );
        // A bare atom diff toggles one element.
        assert_eq!(
            apply_diff(&Value::set(["a"]), &Value::from("a"), true),
            Value::empty_set()
        );
        // Maps: equal pair deletes, different value replaces, new key adds.
        assert_eq!(
            apply_diff(
                &Value::map([("k1", "v1"), ("k2", "v2"), ("k3", "v3")]),
                &Value::map([("k1", "v1"), ("k2", "new"), ("k4", "v4")]),
                true
            ),
            Value::map([("k2", "new"), ("k3", "v3"), ("k4", "v4")])
        );
        // An empty map written as an empty set.
        assert_eq!(
            apply_diff(&Value::map([("a", "b")]), &Value::empty_set(), true),
            Value::map([("a", "b")])
        );
        // Single-valued columns are replaced.
        assert_eq!(
            apply_diff(&Value::from("old"), &Value::from("new"), false),
            Value::from("new")
        );
        assert_eq!(
            apply_diff(&Value::set(["x"]), &Value::empty_set(), false),
            Value::empty_set()
        );
    }

    #[test]
    fn snapshot_lifecycle() {
        let schema = schema();
        let spec = MonitorSpec::new("Db").table("T");
        let replica = Replica::new("m".into(), spec);
        let mut events = replica.events();
        let before = replica.snapshot();

        let initial = parse_table_updates2(
            &json!({"T": {U1: {"initial": {"name": "a", "tags": ["set", ["x", "y"]], "ext": ["map", [["k", "v"]]]}}}}),
            &schema,
        )
        .expect("initial");
        replica.apply(&schema, initial, true, None);
        let snap = replica.snapshot();
        assert_eq!(snap.generation(), 1);
        let row = snap.row("T", &u1()).expect("row");
        // Omitted columns get their defaults.
        assert_eq!(row["n"], Value::from(0_i64));
        assert_eq!(row["opt"], Value::empty_set());
        assert_eq!(row["tags"], Value::set(["x", "y"]));
        assert!(matches!(
            events.try_recv().expect("event"),
            ReplicaEvent::Reset { generation: 1, .. }
        ));

        let modify = parse_table_updates2(
            &json!({"T": {U1: {"modify": {"name": "b", "n": 5, "opt": "set", "tags": ["set", ["y", "z"]], "ext": ["map", [["k", "v"], ["k2", "v2"]]]}}}}),
            &schema,
        )
        .expect("modify");
        replica.apply(&schema, modify, false, Some(u1()));
        let snap2 = replica.snapshot();
        let row = snap2.row("T", &u1()).expect("row");
        assert_eq!(row["name"], Value::from("b"));
        assert_eq!(row["n"], Value::from(5_i64));
        assert_eq!(row["opt"], Value::set(["set"]));
        assert_eq!(row["tags"], Value::set(["x", "z"]));
        assert_eq!(row["ext"], Value::map([("k2", "v2")]));
        assert_eq!(snap2.last_txn_id(), Some(u1()));
        assert_eq!(snap2.generation(), 1);
        assert!(matches!(
            events.try_recv().expect("event"),
            ReplicaEvent::Changed { .. }
        ));
        // Old snapshots are unaffected.
        assert_eq!(snap.row("T", &u1()).expect("row")["name"], Value::from("a"));
        assert!(before.table("T").is_none());

        let clear_opt = parse_table_updates2(
            &json!({"T": {U1: {"modify": {"opt": ["set", []]}}}}),
            &schema,
        )
        .expect("modify");
        replica.apply(&schema, clear_opt, false, None);
        assert_eq!(
            replica.snapshot().row("T", &u1()).expect("row")["opt"],
            Value::empty_set()
        );
        // A batch without txn id keeps the last one.
        assert_eq!(replica.snapshot().last_txn_id(), Some(u1()));

        let delete =
            parse_table_updates2(&json!({"T": {U1: {"delete": null}}}), &schema).expect("delete");
        replica.apply(&schema, delete, false, None);
        assert!(replica.snapshot().table("T").expect("table").is_empty());
        assert_eq!(replica.status().revision, 4);
        assert!(replica.status().loaded);

        // A reset empties tables and forgets the txn id.
        replica.apply(&schema, TableUpdates::new(), true, None);
        assert_eq!(replica.snapshot().generation(), 2);
        assert_eq!(replica.snapshot().last_txn_id(), None);
    }
}
