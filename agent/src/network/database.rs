//! An OVSDB database as the network reconcilers need it: a consistent view of the tables they manage
//! and a way to commit one transaction. Used for OVN's northbound database and for the local
//! Open_vSwitch database, with a real implementation over the `ovsdb` client and an in-memory fake.

use ovsdb::{Atom, Client, Condition, Operation, Replica, Row, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use uuid::Uuid;

/// Rows of the managed tables at one moment.
#[derive(Debug, Clone, Default)]
pub struct DatabaseView {
    /// Table → rows.
    pub tables: BTreeMap<String, Vec<(Uuid, Arc<Row>)>>,
    /// Changes whenever the database content changes (from anyone).
    pub revision: u64,
    /// Changes when the view was reloaded from scratch (reconnect to a database without history).
    pub generation: u64,
}

impl DatabaseView {
    /// Rows of one table.
    pub fn rows(&self, table: &str) -> Option<Vec<(Uuid, &Row)>> {
        self.tables
            .get(table)
            .map(|rows| rows.iter().map(|(u, r)| (*u, r.as_ref())).collect())
    }
}

/// Why a database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// Not connected (yet, or any more); retried with backoff.
    #[error("database {database} unavailable: {reason}")]
    Unavailable {
        /// Database name.
        database: String,
        /// Why.
        reason: String,
    },
    /// The transaction was refused.
    #[error("transaction on {database} failed: {reason}")]
    Transaction {
        /// Database name.
        database: String,
        /// Why.
        reason: String,
    },
}

/// One OVSDB database, restricted to the tables a reconciler manages.
pub trait Database: Send + Sync {
    /// The managed tables, once the monitor has loaded them.
    fn view(&self) -> Result<DatabaseView, DatabaseError>;
    /// Commits `ops` atomically; when it returns, [`Database::view`] shows the result.
    fn transact(&self, ops: Vec<Operation>) -> Result<(), DatabaseError>;
    /// Calls `wake` after every change of the managed tables until `shutdown`, so reconcilers react
    /// to database changes (ports going up, someone editing rows) without waiting for a poll.
    /// Implementations without change notifications rely on the periodic observation instead.
    fn on_change(
        &self,
        wake: Box<dyn Fn() + Send + Sync>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let _ = (wake, shutdown);
    }
}

/// A real database through the `ovsdb` client, monitored into a replica.
pub struct OvsdbDatabase {
    database: String,
    tables: Vec<String>,
    client: Client,
    replica: Replica,
    runtime: tokio::runtime::Handle,
}

impl OvsdbDatabase {
    /// Starts a (reconnecting) client and a monitor of `tables`; returns at once, the view becomes
    /// available once connected. `leader_only` keeps a clustered database's client on the leader.
    pub fn start(
        remotes: &str,
        database: &str,
        tables: &[&str],
        leader_only: bool,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, DatabaseError> {
        let unavailable = |reason: String| DatabaseError::Unavailable {
            database: database.to_owned(),
            reason,
        };
        let remotes = ovsdb::Remote::parse_list(remotes)
            .map_err(|e| unavailable(format!("bad remote: {e}")))?;
        let mut config = ovsdb::ClientConfig::new(remotes)
            .backoff(Duration::from_millis(200), Duration::from_secs(10));
        if leader_only {
            config = config.leader_only(database);
        }
        let _guard = runtime.enter();
        let client = Client::start(config).map_err(|e| unavailable(e.to_string()))?;
        let mut spec = ovsdb::MonitorSpec::new(database);
        for table in tables {
            spec = spec.table(*table);
        }
        let replica = client
            .start_monitor(spec)
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(Self {
            database: database.to_owned(),
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            client,
            replica,
            runtime,
        })
    }
}

impl OvsdbDatabase {
    fn watch(
        &self,
        wake: Box<dyn Fn() + Send + Sync>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut changes = self.replica.subscribe();
        self.runtime.spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        wake();
                    }
                }
            }
        });
    }
}

impl Database for OvsdbDatabase {
    fn on_change(
        &self,
        wake: Box<dyn Fn() + Send + Sync>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        self.watch(wake, shutdown);
    }

    fn view(&self) -> Result<DatabaseView, DatabaseError> {
        let status = self.replica.status();
        if !status.loaded {
            let reason = status
                .error
                .as_deref()
                .unwrap_or("not connected yet")
                .to_owned();
            return Err(DatabaseError::Unavailable {
                database: self.database.clone(),
                reason,
            });
        }
        let snapshot = self.replica.snapshot();
        let mut tables = BTreeMap::new();
        for table in &self.tables {
            let rows = snapshot
                .table(table)
                .map(|t| t.iter().map(|(u, r)| (*u, r.clone())).collect())
                .unwrap_or_default();
            tables.insert(table.clone(), rows);
        }
        Ok(DatabaseView {
            tables,
            revision: snapshot.revision(),
            generation: snapshot.generation(),
        })
    }

    fn transact(&self, ops: Vec<Operation>) -> Result<(), DatabaseError> {
        let database = self.database.clone();
        self.runtime
            .block_on(self.client.transact(&self.database, ops))
            .map(|_| ())
            .map_err(|e| match e {
                ovsdb::Error::Transaction(t) => DatabaseError::Transaction {
                    database,
                    reason: t.to_string(),
                },
                other => DatabaseError::Unavailable {
                    database,
                    reason: other.to_string(),
                },
            })
    }
}

/// An in-memory database: applies insert/update/delete with named UUIDs, garbage-collects unreferenced
/// rows of non-root tables and checks referential integrity, as ovsdb-server does.
#[derive(Debug)]
pub struct FakeDatabase {
    roots: Vec<String>,
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    tables: BTreeMap<String, BTreeMap<Uuid, Row>>,
    revision: u64,
    transactions: u64,
    unavailable: bool,
}

type Tables = BTreeMap<String, BTreeMap<Uuid, Row>>;

fn failure(reason: impl Into<String>) -> DatabaseError {
    DatabaseError::Transaction {
        database: "fake".into(),
        reason: reason.into(),
    }
}

impl FakeDatabase {
    /// A fake whose root tables (never garbage-collected) are `roots`.
    pub fn new(roots: &[&str]) -> Self {
        Self {
            roots: roots.iter().map(|r| (*r).to_owned()).collect(),
            state: Mutex::default(),
        }
    }

    /// With the northbound schema's root tables.
    pub fn northbound() -> Self {
        Self::new(&[
            "Logical_Switch",
            "DHCP_Options",
            "Port_Group",
            "Logical_Router",
            "Address_Set",
            "NB_Global",
        ])
    }

    /// With the Open_vSwitch schema's root tables.
    pub fn open_vswitch() -> Self {
        Self::new(&["Open_vSwitch"])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rows of a table.
    pub fn table(&self, table: &str) -> BTreeMap<Uuid, Row> {
        self.lock().tables.get(table).cloned().unwrap_or_default()
    }

    /// Transactions committed so far.
    pub fn transactions(&self) -> u64 {
        self.lock().transactions
    }

    /// Changes a row behind the reconciler's back.
    pub fn tamper(&self, table: &str, uuid: Uuid, column: &str, value: Value) {
        let mut state = self.lock();
        if let Some(row) = state.tables.get_mut(table).and_then(|t| t.get_mut(&uuid)) {
            row.insert(column.to_owned(), value);
        }
        state.revision += 1;
    }

    /// Deletes a row behind the reconciler's back, with every reference to it.
    pub fn remove(&self, table: &str, uuid: Uuid) {
        let mut state = self.lock();
        if let Some(t) = state.tables.get_mut(table) {
            t.remove(&uuid);
        }
        for rows in state.tables.values_mut() {
            for row in rows.values_mut() {
                for value in row.values_mut() {
                    if let Value::Set(set) = value {
                        set.remove(&Atom::Uuid(uuid));
                    }
                }
            }
        }
        collect_garbage(&mut state.tables, &self.roots);
        state.revision += 1;
    }

    /// Inserts a row behind the reconciler's back.
    pub fn plant(&self, table: &str, row: Row) -> Uuid {
        let uuid = Uuid::new_v4();
        let mut state = self.lock();
        state
            .tables
            .entry(table.to_owned())
            .or_default()
            .insert(uuid, row);
        state.revision += 1;
        uuid
    }

    /// Makes the database unreachable (or reachable again).
    pub fn set_unavailable(&self, down: bool) {
        self.lock().unavailable = down;
    }

    /// Empties the database, as a restart of a database without persistence would.
    pub fn wipe(&self) {
        let mut state = self.lock();
        state.tables.clear();
        state.revision += 1;
    }
}

fn referenced(tables: &Tables) -> BTreeSet<Uuid> {
    let mut seen = BTreeSet::new();
    for rows in tables.values() {
        for row in rows.values() {
            for value in row.values() {
                match value {
                    Value::Atom(Atom::Uuid(u)) => {
                        seen.insert(*u);
                    }
                    Value::Set(set) => seen.extend(set.iter().filter_map(|a| match a {
                        Atom::Uuid(u) => Some(*u),
                        _ => None,
                    })),
                    _ => {}
                }
            }
        }
    }
    seen
}

fn collect_garbage(tables: &mut Tables, roots: &[String]) {
    loop {
        let seen = referenced(tables);
        let mut removed = false;
        for (name, rows) in tables.iter_mut() {
            if roots.contains(name) {
                continue;
            }
            let before = rows.len();
            rows.retain(|uuid, _| seen.contains(uuid));
            removed |= rows.len() != before;
        }
        if !removed {
            return;
        }
    }
}

fn bind(value: &Value, names: &BTreeMap<String, Uuid>) -> Result<Value, DatabaseError> {
    let atom = |a: &Atom| -> Result<Atom, DatabaseError> {
        match a {
            Atom::NamedUuid(n) => names
                .get(n)
                .map(|u| Atom::Uuid(*u))
                .ok_or_else(|| failure(format!("unknown named-uuid {n}"))),
            other => Ok(other.clone()),
        }
    };
    Ok(match value {
        Value::Atom(a) => Value::Atom(atom(a)?),
        Value::Set(set) => Value::Set(set.iter().map(atom).collect::<Result<_, _>>()?),
        Value::Map(map) => Value::Map(
            map.iter()
                .map(|(k, v)| Ok((atom(k)?, atom(v)?)))
                .collect::<Result<_, DatabaseError>>()?,
        ),
    })
}

fn bind_row(row: &Row, names: &BTreeMap<String, Uuid>) -> Result<Row, DatabaseError> {
    row.iter()
        .map(|(c, v)| Ok((c.clone(), bind(v, names)?)))
        .collect()
}

fn uuid_condition(conditions: &[Condition]) -> Result<Uuid, DatabaseError> {
    match conditions {
        [c] if c.column == "_uuid" => match &c.value {
            Value::Atom(Atom::Uuid(u)) => Ok(*u),
            _ => Err(failure("the fake supports _uuid conditions only")),
        },
        _ => Err(failure("the fake supports one _uuid condition only")),
    }
}

impl Database for FakeDatabase {
    fn view(&self) -> Result<DatabaseView, DatabaseError> {
        let state = self.lock();
        if state.unavailable {
            return Err(DatabaseError::Unavailable {
                database: "fake".into(),
                reason: "down".into(),
            });
        }
        let tables = state
            .tables
            .iter()
            .map(|(t, rows)| {
                (
                    t.clone(),
                    rows.iter()
                        .map(|(u, r)| (*u, Arc::new(r.clone())))
                        .collect(),
                )
            })
            .collect();
        Ok(DatabaseView {
            tables,
            revision: state.revision,
            generation: 0,
        })
    }

    fn transact(&self, ops: Vec<Operation>) -> Result<(), DatabaseError> {
        let mut state = self.lock();
        if state.unavailable {
            return Err(DatabaseError::Unavailable {
                database: "fake".into(),
                reason: "down".into(),
            });
        }
        let mut tables = state.tables.clone();
        let mut names = BTreeMap::new();
        for op in &ops {
            if let Operation::Insert {
                uuid_name: Some(name),
                ..
            } = op
            {
                names.insert(name.clone(), Uuid::new_v4());
            }
        }
        for op in ops {
            match op {
                Operation::Insert {
                    table,
                    row,
                    uuid_name,
                } => {
                    let uuid = uuid_name
                        .and_then(|n| names.get(&n).copied())
                        .unwrap_or_else(Uuid::new_v4);
                    tables
                        .entry(table)
                        .or_default()
                        .insert(uuid, bind_row(&row, &names)?);
                }
                Operation::Update {
                    table,
                    conditions,
                    row,
                } => {
                    let uuid = uuid_condition(&conditions)?;
                    let target = tables
                        .get_mut(&table)
                        .and_then(|t| t.get_mut(&uuid))
                        .ok_or_else(|| failure(format!("no {table} row {uuid}")))?;
                    target.extend(bind_row(&row, &names)?);
                }
                Operation::Delete { table, conditions } => {
                    let uuid = uuid_condition(&conditions)?;
                    if let Some(t) = tables.get_mut(&table) {
                        t.remove(&uuid);
                    }
                }
                other => {
                    return Err(failure(format!(
                        "the fake does not support {}",
                        other.name()
                    )));
                }
            }
        }
        collect_garbage(&mut tables, &self.roots);
        let all: BTreeSet<Uuid> = tables.values().flat_map(|t| t.keys().copied()).collect();
        if let Some(dangling) = referenced(&tables).into_iter().find(|u| !all.contains(u)) {
            return Err(failure(format!(
                "referential integrity violation: {dangling}"
            )));
        }
        state.tables = tables;
        state.revision += 1;
        state.transactions += 1;
        Ok(())
    }
}
