//! The northbound database as the reconciler needs it: a consistent view of the managed tables and a
//! way to commit one transaction.

use super::plan::managed_tables;
use ovsdb::{Client, Operation, Replica, Row, Value, nb};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use uuid::Uuid;

/// Rows of the managed tables at one moment.
#[derive(Debug, Clone, Default)]
pub struct NorthboundView {
    /// Table → rows.
    pub tables: BTreeMap<String, Vec<(Uuid, Arc<Row>)>>,
    /// Changes whenever the database content changes (from anyone).
    pub revision: u64,
    /// Changes when the view was reloaded from scratch (reconnect to a database without history).
    pub generation: u64,
}

impl NorthboundView {
    /// Rows of one table.
    pub fn rows(&self, table: &str) -> Option<Vec<(Uuid, &Row)>> {
        self.tables
            .get(table)
            .map(|rows| rows.iter().map(|(u, r)| (*u, r.as_ref())).collect())
    }
}

/// Why the northbound database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NorthboundError {
    /// Not connected (yet, or any more); retried with backoff.
    #[error("OVN northbound database unavailable: {0}")]
    Unavailable(String),
    /// The transaction was refused.
    #[error("OVN northbound transaction failed: {0}")]
    Transaction(String),
}

/// The northbound database.
pub trait Northbound: Send + Sync {
    /// The managed tables, once the monitor has loaded them.
    fn view(&self) -> Result<NorthboundView, NorthboundError>;
    /// Commits `ops` atomically; when it returns, [`Northbound::view`] shows the result.
    fn transact(&self, ops: Vec<Operation>) -> Result<(), NorthboundError>;
}

/// The real database through the `ovsdb` client, monitored into a replica.
pub struct OvsdbNorthbound {
    client: Client,
    replica: Replica,
    runtime: tokio::runtime::Handle,
}

impl OvsdbNorthbound {
    /// Starts a (reconnecting) client and a monitor of the managed tables; returns at once, the view
    /// becomes available once connected.
    pub fn start(
        remotes: &str,
        leader_only: bool,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, NorthboundError> {
        let remotes = ovsdb::Remote::parse_list(remotes)
            .map_err(|e| NorthboundError::Unavailable(format!("bad remote: {e}")))?;
        let mut config = ovsdb::ClientConfig::new(remotes)
            .backoff(Duration::from_millis(200), Duration::from_secs(10));
        if leader_only {
            config = config.leader_only(nb::DATABASE);
        }
        let _guard = runtime.enter();
        let client =
            Client::start(config).map_err(|e| NorthboundError::Unavailable(e.to_string()))?;
        let mut spec = ovsdb::MonitorSpec::new(nb::DATABASE);
        for table in managed_tables() {
            spec = spec.table(table);
        }
        let replica = client
            .start_monitor(spec)
            .map_err(|e| NorthboundError::Unavailable(e.to_string()))?;
        Ok(Self {
            client,
            replica,
            runtime,
        })
    }

    /// The replica, for waking up on changes.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }
}

impl Northbound for OvsdbNorthbound {
    fn view(&self) -> Result<NorthboundView, NorthboundError> {
        let status = self.replica.status();
        if !status.loaded {
            let why = status
                .error
                .as_deref()
                .unwrap_or("not connected yet")
                .to_owned();
            return Err(NorthboundError::Unavailable(why));
        }
        let snapshot = self.replica.snapshot();
        let mut tables = BTreeMap::new();
        for table in managed_tables() {
            let rows = snapshot
                .table(table)
                .map(|t| t.iter().map(|(u, r)| (*u, r.clone())).collect())
                .unwrap_or_default();
            tables.insert(table.to_owned(), rows);
        }
        Ok(NorthboundView {
            tables,
            revision: snapshot.revision(),
            generation: snapshot.generation(),
        })
    }

    fn transact(&self, ops: Vec<Operation>) -> Result<(), NorthboundError> {
        self.runtime
            .block_on(self.client.transact(nb::DATABASE, ops))
            .map(|_| ())
            .map_err(|e| match e {
                ovsdb::Error::Transaction(t) => NorthboundError::Transaction(t.to_string()),
                other => NorthboundError::Unavailable(other.to_string()),
            })
    }
}

/// An in-memory northbound database: applies insert/update/delete with named UUIDs and garbage-collects
/// unreferenced non-root rows, like ovsdb-server does for the tables the agent writes.
#[derive(Debug, Default)]
pub struct FakeNorthbound {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    tables: BTreeMap<String, BTreeMap<Uuid, Row>>,
    revision: u64,
    transactions: u64,
    unavailable: bool,
}

impl FakeNorthbound {
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

    /// Changes a row behind the agent's back.
    pub fn tamper(&self, table: &str, uuid: Uuid, column: &str, value: Value) {
        let mut state = self.lock();
        if let Some(row) = state.tables.get_mut(table).and_then(|t| t.get_mut(&uuid)) {
            row.insert(column.to_owned(), value);
        }
        state.revision += 1;
    }

    /// Deletes a row behind the agent's back (and what only it referenced).
    pub fn remove(&self, table: &str, uuid: Uuid) {
        let mut state = self.lock();
        if let Some(t) = state.tables.get_mut(table) {
            t.remove(&uuid);
        }
        for rows in state.tables.values_mut() {
            for row in rows.values_mut() {
                for value in row.values_mut() {
                    if let Value::Set(set) = value {
                        set.remove(&ovsdb::Atom::Uuid(uuid));
                    }
                }
            }
        }
        collect_garbage(&mut state.tables);
        state.revision += 1;
    }

    /// Inserts a row behind the agent's back.
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

const ROOT_TABLES: &[&str] = &[
    "Logical_Switch",
    "DHCP_Options",
    "Port_Group",
    "Logical_Router",
    "Address_Set",
];

fn referenced(tables: &BTreeMap<String, BTreeMap<Uuid, Row>>) -> std::collections::BTreeSet<Uuid> {
    let mut seen = std::collections::BTreeSet::new();
    for rows in tables.values() {
        for row in rows.values() {
            for value in row.values() {
                match value {
                    Value::Atom(ovsdb::Atom::Uuid(u)) => {
                        seen.insert(*u);
                    }
                    Value::Set(set) => seen.extend(set.iter().filter_map(|a| {
                        if let ovsdb::Atom::Uuid(u) = a {
                            Some(*u)
                        } else {
                            None
                        }
                    })),
                    _ => {}
                }
            }
        }
    }
    seen
}

fn collect_garbage(tables: &mut BTreeMap<String, BTreeMap<Uuid, Row>>) {
    loop {
        let seen = referenced(tables);
        let mut removed = false;
        for (name, rows) in tables.iter_mut() {
            if ROOT_TABLES.contains(&name.as_str()) {
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

fn bind(value: &Value, names: &BTreeMap<String, Uuid>) -> Result<Value, NorthboundError> {
    let atom = |a: &ovsdb::Atom| -> Result<ovsdb::Atom, NorthboundError> {
        match a {
            ovsdb::Atom::NamedUuid(n) => names
                .get(n)
                .map(|u| ovsdb::Atom::Uuid(*u))
                .ok_or_else(|| NorthboundError::Transaction(format!("unknown named-uuid {n}"))),
            other => Ok(other.clone()),
        }
    };
    Ok(match value {
        Value::Atom(a) => Value::Atom(atom(a)?),
        Value::Set(set) => Value::Set(set.iter().map(atom).collect::<Result<_, _>>()?),
        Value::Map(map) => Value::Map(
            map.iter()
                .map(|(k, v)| Ok((atom(k)?, atom(v)?)))
                .collect::<Result<_, NorthboundError>>()?,
        ),
    })
}

fn uuid_condition(conditions: &[ovsdb::Condition]) -> Result<Uuid, NorthboundError> {
    match conditions {
        [c] if c.column == "_uuid" => match &c.value {
            Value::Atom(ovsdb::Atom::Uuid(u)) => Ok(*u),
            _ => Err(NorthboundError::Transaction(
                "fake supports _uuid conditions only".into(),
            )),
        },
        _ => Err(NorthboundError::Transaction(
            "fake supports one _uuid condition only".into(),
        )),
    }
}

impl Northbound for FakeNorthbound {
    fn view(&self) -> Result<NorthboundView, NorthboundError> {
        let state = self.lock();
        if state.unavailable {
            return Err(NorthboundError::Unavailable(
                "fake northbound is down".into(),
            ));
        }
        let tables = managed_tables()
            .map(|t| {
                let rows = state
                    .tables
                    .get(t)
                    .map(|rows| {
                        rows.iter()
                            .map(|(u, r)| (*u, Arc::new(r.clone())))
                            .collect()
                    })
                    .unwrap_or_default();
                (t.to_owned(), rows)
            })
            .collect();
        Ok(NorthboundView {
            tables,
            revision: state.revision,
            generation: 0,
        })
    }

    fn transact(&self, ops: Vec<Operation>) -> Result<(), NorthboundError> {
        let mut state = self.lock();
        if state.unavailable {
            return Err(NorthboundError::Unavailable(
                "fake northbound is down".into(),
            ));
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
                    let row = row
                        .iter()
                        .map(|(c, v)| Ok((c.clone(), bind(v, &names)?)))
                        .collect::<Result<Row, NorthboundError>>()?;
                    tables.entry(table).or_default().insert(uuid, row);
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
                        .ok_or_else(|| {
                            NorthboundError::Transaction(format!("no {table} row {uuid}"))
                        })?;
                    for (column, value) in row {
                        target.insert(column, bind(&value, &names)?);
                    }
                }
                Operation::Delete { table, conditions } => {
                    let uuid = uuid_condition(&conditions)?;
                    if let Some(t) = tables.get_mut(&table) {
                        t.remove(&uuid);
                    }
                }
                other => {
                    return Err(NorthboundError::Transaction(format!(
                        "fake does not support {}",
                        other.name()
                    )));
                }
            }
        }
        collect_garbage(&mut tables);
        // Referential integrity: every referenced UUID must exist.
        let all: std::collections::BTreeSet<Uuid> =
            tables.values().flat_map(|t| t.keys().copied()).collect();
        if let Some(dangling) = referenced(&tables).into_iter().find(|u| !all.contains(u)) {
            return Err(NorthboundError::Transaction(format!(
                "referential integrity violation: {dangling}"
            )));
        }
        state.tables = tables;
        state.revision += 1;
        state.transactions += 1;
        Ok(())
    }
}
