//! The reconnecting client.
//!
//! A supervisor task owns the connection's life cycle: it picks a remote, connects, checks the
//! cluster role, re-establishes every registered monitor (resuming from the last transaction id
//! where the server still has it), publishes the connection, and then applies notifications to
//! the replicas in arrival order until the connection ends, at which point it backs off and
//! starts over. Requests from callers go straight to the current connection and fail fast with a
//! connection error while there is none, so callers decide themselves whether to wait and retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::seq::SliceRandom;
use serde_json::{Value as Json, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::cluster::{self, ClusterRequirement, ServerWatch};
use crate::connection::{Connection, ConnectionOptions, Counters, Inbound};
use crate::error::Error;
use crate::framing::DEFAULT_MAX_MESSAGE_SIZE;
use crate::monitor::{MonitorSpec, parse_monitor_since_reply, parse_table_updates2, parse_txn_id};
use crate::remote::Remote;
use crate::replica::Replica;
use crate::schema::DatabaseSchema;
use crate::transact::{Operation, OperationResult, TransactResultError, parse_results};

/// How to connect.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Servers to try; several for a cluster.
    pub remotes: Vec<Remote>,
    /// Cluster role the server must have (see [`ClientConfig::leader_only`]).
    pub cluster: Option<ClusterRequirement>,
    /// Shuffle the remotes once at start, so that many clients spread over a cluster.
    pub shuffle_remotes: bool,
    /// Send an `echo` after this much silence from the server and give up after twice as
    /// much; `None` disables it. OVS uses 5 s by default.
    pub inactivity_probe: Option<Duration>,
    /// Limit for establishing the transport.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Largest accepted message.
    pub max_message_size: usize,
}

impl ClientConfig {
    /// Defaults for the given remotes.
    pub fn new(remotes: Vec<Remote>) -> Self {
        Self {
            remotes,
            cluster: None,
            shuffle_remotes: true,
            inactivity_probe: Some(Duration::from_secs(5)),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(8),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }

    /// Connect only to the leader of `database`'s cluster (standalone servers are accepted as
    /// they are), and move to another remote when leadership moves away.
    #[must_use]
    pub fn leader_only(mut self, database: impl Into<String>) -> Self {
        self.cluster = Some(ClusterRequirement {
            database: database.into(),
            leader_only: true,
        });
        self
    }

    /// Accept any member of `database`'s cluster, as long as it is connected to the cluster
    /// (so it does not serve stale data).
    #[must_use]
    pub fn cluster_member(mut self, database: impl Into<String>) -> Self {
        self.cluster = Some(ClusterRequirement {
            database: database.into(),
            leader_only: false,
        });
        self
    }

    /// Sets the inactivity probe interval (`None` disables it).
    #[must_use]
    pub fn inactivity_probe(mut self, probe: Option<Duration>) -> Self {
        self.inactivity_probe = probe;
        self
    }

    /// Sets the reconnect backoff range.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Keeps the remotes in the given order.
    #[must_use]
    pub fn ordered(mut self) -> Self {
        self.shuffle_remotes = false;
        self
    }

    /// Sets the maximum message size.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the connect timeout.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// Whether the client is usable right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Looking for a server (first connection or reconnecting after a loss).
    Connecting {
        /// Failed attempts since the last successful connection.
        attempt: u64,
        /// Why the last attempt or connection failed.
        last_error: Option<String>,
    },
    /// Connected, cluster role checked, monitors re-established.
    Connected {
        /// The server.
        remote: Remote,
        /// Increments with every new connection, so a consumer can tell that a reconnect
        /// happened between two observations.
        session: u64,
    },
    /// Shut down.
    Stopped,
}

/// Counters for monitoring the client itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientMetrics {
    /// `echo` requests from the server answered (the server's inactivity probe).
    pub echo_requests_answered: u64,
    /// Our own inactivity probes sent.
    pub probes_sent: u64,
    /// Connections established (including the cluster check and monitor setup).
    pub connections_established: u64,
    /// Established connections that were lost.
    pub connections_lost: u64,
    /// Monitors resumed from the last transaction id (no full reload).
    pub monitor_resumes: u64,
    /// Monitors (re)loaded in full.
    pub monitor_reloads: u64,
}

enum Command {
    Monitor {
        replica: Replica,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Cancel {
        monitor_id: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

struct Shared {
    current: Mutex<Option<Arc<Connection>>>,
    state: watch::Sender<ConnectionState>,
    shutdown: watch::Sender<bool>,
    counters: Arc<Counters>,
    next_monitor: AtomicU64,
}

struct ClientInner {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// A handle to the reconnecting OVSDB client; cheap to clone. The background task stops when
/// the last handle is dropped or [`Client::shutdown`] is called.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts the client in the background and returns at once; see [`Client::wait_connected`].
    /// Must be called within a Tokio runtime.
    pub fn start(config: ClientConfig) -> Result<Self, Error> {
        if config.remotes.is_empty() {
            return Err(Error::Config("no remotes given".into()));
        }
        let (state, _) = watch::channel(ConnectionState::Connecting {
            attempt: 0,
            last_error: None,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            current: Mutex::new(None),
            state,
            shutdown,
            counters: Arc::new(Counters::default()),
            next_monitor: AtomicU64::new(1),
        });
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let mut remotes = config.remotes.clone();
        if config.shuffle_remotes {
            remotes.shuffle(&mut rand::rng());
        }
        let supervisor = Supervisor {
            backoff: Backoff::new(config.backoff_initial, config.backoff_max),
            options: ConnectionOptions {
                connect_timeout: config.connect_timeout,
                inactivity_probe: config.inactivity_probe,
                max_message_size: config.max_message_size,
            },
            config,
            remotes,
            next_remote: 0,
            shared: Arc::clone(&shared),
            commands: commands_rx,
            shutdown: shutdown_rx,
            monitors: Vec::new(),
            attempt: 0,
            last_error: None,
            session: 0,
        };
        tokio::spawn(supervisor.run());
        Ok(Self {
            inner: Arc::new(ClientInner {
                shared,
                commands: commands_tx,
            }),
        })
    }

    /// Starts the client and waits up to `timeout` for the first connection.
    pub async fn connect(config: ClientConfig, timeout: Duration) -> Result<Self, Error> {
        let client = Self::start(config)?;
        client.wait_connected(timeout).await?;
        Ok(client)
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.inner.shared.state.borrow().clone()
    }

    /// A `watch` of the connection state.
    pub fn state_watch(&self) -> watch::Receiver<ConnectionState> {
        self.inner.shared.state.subscribe()
    }

    /// Waits until connected.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.state_watch();
        let wait = rx.wait_for(|s| {
            matches!(
                s,
                ConnectionState::Connected { .. } | ConnectionState::Stopped
            )
        });
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Err(Error::Timeout {
                what: "a connection to an OVSDB server",
                after: timeout,
            }),
            Ok(Err(_)) => Err(Error::Shutdown),
            Ok(Ok(state)) if *state == ConnectionState::Stopped => Err(Error::Shutdown),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Counters of the client's activity.
    pub fn metrics(&self) -> ClientMetrics {
        let c = &self.inner.shared.counters;
        ClientMetrics {
            echo_requests_answered: c.echo_requests_answered.load(Ordering::Relaxed),
            probes_sent: c.probes_sent.load(Ordering::Relaxed),
            connections_established: c.connections_established.load(Ordering::Relaxed),
            connections_lost: c.connections_lost.load(Ordering::Relaxed),
            monitor_resumes: c.monitor_resumes.load(Ordering::Relaxed),
            monitor_reloads: c.monitor_reloads.load(Ordering::Relaxed),
        }
    }

    /// Stops the background task and closes the connection; replicas stop updating.
    pub fn shutdown(&self) {
        self.inner.shared.shutdown.send_replace(true);
    }

    fn connection(&self) -> Result<Arc<Connection>, Error> {
        let current = self
            .inner
            .shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match current {
            Some(conn) if !conn.is_closed() => Ok(conn),
            _ => match self.state() {
                ConnectionState::Stopped => Err(Error::Shutdown),
                ConnectionState::Connecting { last_error, .. } => Err(Error::NotConnected {
                    last_error: last_error.unwrap_or_else(|| "none yet".into()),
                }),
                ConnectionState::Connected { remote, .. } => Err(Error::NotConnected {
                    last_error: format!("connection to {remote} just closed"),
                }),
            },
        }
    }

    /// Sends an arbitrary request on the current connection; for methods this type has no
    /// wrapper for.
    pub async fn call(&self, method: &str, params: Json) -> Result<Json, Error> {
        self.connection()?.call(method, params).await
    }

    /// `list_dbs`.
    pub async fn list_dbs(&self) -> Result<Vec<String>, Error> {
        let result = self.call("list_dbs", json!([])).await?;
        serde_json_strings(&result).ok_or_else(|| Error::Malformed {
            method: "list_dbs".into(),
            source: crate::value::DecodeError::new(
                "list_dbs result",
                &result,
                "expected an array of strings",
            ),
        })
    }

    /// `get_schema`.
    pub async fn get_schema(&self, database: &str) -> Result<DatabaseSchema, Error> {
        let result = self.call("get_schema", json!([database])).await?;
        Ok(DatabaseSchema::from_json(&result)?)
    }

    /// `echo`: a round trip to check the connection.
    pub async fn echo(&self) -> Result<(), Error> {
        self.call("echo", json!(["ping"])).await.map(drop)
    }

    /// Runs a transaction. A refused transaction (any operation failing, or the commit) is
    /// returned as [`Error::Transaction`] naming the operation, and none of it is applied.
    ///
    /// When this returns, every replica of this client already reflects the transaction's
    /// effects on the monitored tables (the server sends the updates before the reply, and the
    /// call waits until they are applied), so a caller can read its own writes.
    pub async fn transact(
        &self,
        database: &str,
        operations: Vec<Operation>,
    ) -> Result<Vec<OperationResult>, Error> {
        let conn = self.connection()?;
        let mut params = Vec::with_capacity(operations.len() + 1);
        params.push(Json::from(database));
        params.extend(operations.iter().map(Operation::to_json));
        let result = conn.call("transact", Json::Array(params)).await?;
        conn.barrier().await;
        parse_results(&operations, &result).map_err(|e| match e {
            TransactResultError::Failed(e) => Error::Transaction(e),
            TransactResultError::Malformed(source) => Error::Malformed {
                method: "transact".into(),
                source,
            },
        })
    }

    /// Registers a monitor and returns its replica at once; the replica fills when connected
    /// ([`crate::ReplicaStatus::loaded`]) and is kept up to date across reconnects until
    /// [`Client::monitor_cancel`].
    pub fn start_monitor(&self, spec: MonitorSpec) -> Result<Replica, Error> {
        self.register_monitor(spec).map(|(replica, _)| replica)
    }

    /// Registers a monitor and waits until its initial content is loaded.
    pub async fn monitor(&self, spec: MonitorSpec) -> Result<Replica, Error> {
        let (replica, loaded) = self.register_monitor(spec)?;
        loaded.await.map_err(|_| Error::Shutdown)??;
        Ok(replica)
    }

    fn register_monitor(
        &self,
        spec: MonitorSpec,
    ) -> Result<(Replica, oneshot::Receiver<Result<(), Error>>), Error> {
        if spec.tables.is_empty() {
            return Err(Error::Config("monitor spec without tables".into()));
        }
        let id = format!(
            "m{}",
            self.inner
                .shared
                .next_monitor
                .fetch_add(1, Ordering::Relaxed)
        );
        let replica = Replica::new(id, spec);
        let (reply, loaded) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Monitor {
                replica: replica.clone(),
                reply,
            })
            .map_err(|_| Error::Shutdown)?;
        Ok((replica, loaded))
    }

    /// `monitor_cancel`: stops updating the replica and forgets it.
    pub async fn monitor_cancel(&self, replica: &Replica) -> Result<(), Error> {
        let (reply, done) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Cancel {
                monitor_id: replica.inner.monitor_id.clone(),
                reply,
            })
            .map_err(|_| Error::Shutdown)?;
        done.await.map_err(|_| Error::Shutdown)?
    }
}

fn serde_json_strings(json: &Json) -> Option<Vec<String>> {
    json.as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

struct MonitorEntry {
    replica: Replica,
    /// Schema the replica's content was decoded with; a different schema forces a reload.
    schema: Option<Arc<DatabaseSchema>>,
    /// Callers of [`Client::monitor`] waiting for the first load.
    waiters: Vec<oneshot::Sender<Result<(), Error>>>,
}

impl MonitorEntry {
    fn id(&self) -> &str {
        &self.replica.inner.monitor_id
    }

    fn notify(&mut self, result: &Result<(), String>) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(result.clone().map_err(|reason| Error::Monitor {
                database: self.replica.database().to_owned(),
                reason,
            }));
        }
    }
}

/// One established connection with its per-connection state.
struct Session {
    conn: Arc<Connection>,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    server: Option<ServerWatch>,
    schemas: HashMap<String, Arc<DatabaseSchema>>,
    since_supported: bool,
    counters: Arc<Counters>,
}

enum SessionEnd {
    Lost(String),
    Shutdown,
}

struct Supervisor {
    config: ClientConfig,
    options: ConnectionOptions,
    remotes: Vec<Remote>,
    next_remote: usize,
    backoff: Backoff,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    shutdown: watch::Receiver<bool>,
    monitors: Vec<MonitorEntry>,
    attempt: u64,
    last_error: Option<String>,
    session: u64,
}

/// Failures while setting up a monitor: connection failures end the session, anything else only
/// the monitor.
enum MonitorFailure {
    Connection(Error),
    Monitor(String),
}

impl From<Error> for MonitorFailure {
    fn from(e: Error) -> Self {
        if e.is_connection_error() {
            MonitorFailure::Connection(e)
        } else {
            MonitorFailure::Monitor(e.to_string())
        }
    }
}

impl Supervisor {
    async fn run(mut self) {
        'outer: loop {
            for _ in 0..self.remotes.len() {
                if *self.shutdown.borrow() {
                    break 'outer;
                }
                while let Ok(cmd) = self.commands.try_recv() {
                    self.handle_command_offline(cmd);
                }
                let remote = self.remotes[self.next_remote % self.remotes.len()].clone();
                self.next_remote = self.next_remote.wrapping_add(1);
                self.publish_connecting();
                let mut shutdown = self.shutdown.clone();
                let established = tokio::select! {
                    r = self.establish(&remote) => r,
                    () = shutdown_signal(&mut shutdown) => break 'outer,
                };
                let session = match established {
                    Ok(session) => session,
                    Err(e) => {
                        tracing::info!(%remote, error = %e, "OVSDB connection attempt failed");
                        self.attempt += 1;
                        self.last_error = Some(e.to_string());
                        continue;
                    }
                };
                let started = Instant::now();
                match self.serve(session).await {
                    SessionEnd::Shutdown => break 'outer,
                    SessionEnd::Lost(reason) => {
                        tracing::warn!(%remote, %reason, "OVSDB connection lost; reconnecting");
                        self.shared
                            .counters
                            .connections_lost
                            .fetch_add(1, Ordering::Relaxed);
                        self.last_error = Some(format!("connection to {remote} lost: {reason}"));
                        if started.elapsed() >= self.config.backoff_max {
                            // It was healthy for a while: come back quickly.
                            self.backoff.reset();
                        }
                        break;
                    }
                }
            }
            let delay = self.backoff.next_delay();
            self.publish_connecting();
            tracing::debug!(?delay, "OVSDB reconnect backoff");
            let deadline = Instant::now() + delay;
            loop {
                let mut shutdown = self.shutdown.clone();
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    () = shutdown_signal(&mut shutdown) => break 'outer,
                    cmd = self.commands.recv() => match cmd {
                        Some(cmd) => self.handle_command_offline(cmd),
                        None => break 'outer,
                    },
                }
            }
        }
        self.shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.shared.state.send_replace(ConnectionState::Stopped);
        for entry in &mut self.monitors {
            entry.notify(&Err("the client was shut down".into()));
        }
        tracing::debug!("OVSDB client stopped");
    }

    fn publish_connecting(&self) {
        self.shared.state.send_replace(ConnectionState::Connecting {
            attempt: self.attempt,
            last_error: self.last_error.clone(),
        });
    }

    /// Connects, checks the cluster role and restores monitors.
    async fn establish(&mut self, remote: &Remote) -> Result<Session, Error> {
        let (conn, inbound) =
            Connection::open(remote, &self.options, Arc::clone(&self.shared.counters)).await?;
        let server = match &self.config.cluster {
            Some(requirement) => {
                let watch = ServerWatch::start(&conn, requirement).await?;
                if let Some(watch) = &watch
                    && let Err(reason) = watch.evaluate()
                {
                    conn.close(&reason);
                    return Err(Error::Rejected {
                        remote: remote.clone(),
                        reason,
                    });
                }
                watch
            }
            None => None,
        };
        let mut session = Session {
            conn,
            inbound,
            server,
            schemas: HashMap::new(),
            since_supported: true,
            counters: Arc::clone(&self.shared.counters),
        };
        let mut index = 0;
        while index < self.monitors.len() {
            match start_monitor(&mut session, &mut self.monitors[index]).await {
                Ok(()) => {
                    self.monitors[index].notify(&Ok(()));
                    index += 1;
                }
                Err(MonitorFailure::Connection(e)) => return Err(e),
                Err(MonitorFailure::Monitor(reason)) => {
                    let mut entry = self.monitors.remove(index);
                    fail_monitor(&mut entry, &reason);
                }
            }
        }
        self.session += 1;
        self.attempt = 0;
        self.shared
            .counters
            .connections_established
            .fetch_add(1, Ordering::Relaxed);
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&session.conn));
        self.shared.state.send_replace(ConnectionState::Connected {
            remote: remote.clone(),
            session: self.session,
        });
        tracing::info!(%remote, session = self.session, "connected to OVSDB server");
        Ok(session)
    }

    /// Handles notifications and commands until the connection ends.
    async fn serve(&mut self, mut session: Session) -> SessionEnd {
        let conn = Arc::clone(&session.conn);
        let end = loop {
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                biased;
                () = shutdown_signal(&mut shutdown) => break SessionEnd::Shutdown,
                item = session.inbound.recv() => match item {
                    Some(item) => self.handle_inbound(&mut session, item),
                    None => break SessionEnd::Lost("connection closed".into()),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.handle_command_online(&mut session, cmd).await,
                    None => break SessionEnd::Shutdown,
                },
                reason = conn.closed() => {
                    // Apply what arrived before the end; it is valid data.
                    while let Ok(item) = session.inbound.try_recv() {
                        self.handle_inbound(&mut session, item);
                    }
                    break SessionEnd::Lost(reason.to_string());
                }
            }
        };
        self.shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        conn.close(match &end {
            SessionEnd::Shutdown => "client shut down",
            SessionEnd::Lost(_) => "connection lost",
        });
        end
    }

    fn handle_inbound(&mut self, session: &mut Session, item: Inbound) {
        let (method, params) = match item {
            Inbound::Barrier(done) => {
                let _ = done.send(());
                return;
            }
            Inbound::Notification { method, params } => (method, params),
        };
        match method.as_str() {
            "update2" | "update3" => {
                let Some(id) = params.get(0).and_then(Json::as_str) else {
                    tracing::warn!(%method, "notification without monitor id; ignored");
                    return;
                };
                if id == cluster::MONITOR_ID {
                    Self::handle_server_update(session, params.get(1));
                    return;
                }
                let (txn, updates) = if method == "update3" {
                    (params.get(1), params.get(2))
                } else {
                    (None, params.get(1))
                };
                let Some(entry) = self.monitors.iter_mut().find(|m| m.id() == id) else {
                    tracing::debug!(id, "update for an unknown monitor; ignored");
                    return;
                };
                if let Err(reason) = apply_update(session, entry, txn, updates) {
                    // Our copy can no longer be trusted: reload it from scratch on a new
                    // connection.
                    tracing::error!(id, %reason, "cannot apply monitor update; reconnecting");
                    entry.schema = None;
                    session.conn.close(&format!("bad monitor update: {reason}"));
                }
            }
            "monitor_canceled" => {
                tracing::warn!(?params, "server cancelled a monitor; reconnecting");
                session
                    .conn
                    .close("the server cancelled a monitor (database removed or converted)");
            }
            _ => tracing::debug!(%method, "unhandled notification"),
        }
    }

    fn handle_server_update(session: &mut Session, updates: Option<&Json>) {
        let Some(server) = session.server.as_mut() else {
            return;
        };
        let result = match updates {
            Some(updates) => server.apply(updates, false).map_err(|e| e.to_string()),
            None => Err("update2 without updates".to_owned()),
        };
        if let Err(reason) = result.and_then(|()| server.evaluate()) {
            tracing::info!(remote = %session.conn.remote(), %reason, "server no longer suitable; reconnecting");
            session.conn.close(&reason);
        }
    }

    fn handle_command_offline(&mut self, cmd: Command) {
        match cmd {
            Command::Monitor { replica, reply } => self.monitors.push(MonitorEntry {
                replica,
                schema: None,
                waiters: vec![reply],
            }),
            Command::Cancel { monitor_id, reply } => {
                self.monitors.retain(|m| m.id() != monitor_id);
                let _ = reply.send(Ok(()));
            }
        }
    }

    async fn handle_command_online(&mut self, session: &mut Session, cmd: Command) {
        match cmd {
            Command::Monitor { replica, reply } => {
                let mut entry = MonitorEntry {
                    replica,
                    schema: None,
                    waiters: vec![reply],
                };
                match start_monitor(session, &mut entry).await {
                    Ok(()) => {
                        entry.notify(&Ok(()));
                        self.monitors.push(entry);
                    }
                    // Kept: it is set up on the next connection and the caller answered then.
                    Err(MonitorFailure::Connection(_)) => self.monitors.push(entry),
                    Err(MonitorFailure::Monitor(reason)) => fail_monitor(&mut entry, &reason),
                }
            }
            Command::Cancel { monitor_id, reply } => {
                self.monitors.retain(|m| m.id() != monitor_id);
                let result = match session
                    .conn
                    .call("monitor_cancel", json!([monitor_id]))
                    .await
                {
                    Ok(_) => Ok(()),
                    // Gone with the connection anyway.
                    Err(e) if e.is_connection_error() => Ok(()),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
        }
    }
}

fn fail_monitor(entry: &mut MonitorEntry, reason: &str) {
    tracing::error!(monitor = entry.id(), database = entry.replica.database(), %reason, "monitor failed");
    entry.replica.fail(reason);
    entry.notify(&Err(reason.to_owned()));
}

/// Applies an `update2`/`update3` to a replica.
fn apply_update(
    session: &Session,
    entry: &MonitorEntry,
    txn: Option<&Json>,
    updates: Option<&Json>,
) -> Result<(), String> {
    let schema = entry
        .schema
        .as_ref()
        .or_else(|| session.schemas.get(entry.replica.database()))
        .ok_or("no schema for monitored database")?;
    let updates = updates.ok_or("notification without updates")?;
    let txn = txn
        .map(parse_txn_id)
        .transpose()
        .map_err(|e| e.to_string())?
        .flatten();
    let updates = parse_table_updates2(updates, schema).map_err(|e| e.to_string())?;
    entry.replica.apply(schema, updates, false, txn);
    Ok(())
}

/// Fetches the schema (once per connection and database) and (re)starts a monitor, resuming
/// from the replica's last transaction id when possible.
async fn start_monitor(
    session: &mut Session,
    entry: &mut MonitorEntry,
) -> Result<(), MonitorFailure> {
    let database = entry.replica.database().to_owned();
    let schema = if let Some(schema) = session.schemas.get(&database) {
        Arc::clone(schema)
    } else {
        let json = session.conn.call("get_schema", json!([database])).await?;
        let schema = Arc::new(DatabaseSchema::from_json(&json).map_err(Error::from)?);
        session
            .schemas
            .insert(database.clone(), Arc::clone(&schema));
        schema
    };
    for table in entry.replica.spec().tables.keys() {
        if schema.table(table).is_none() {
            return Err(MonitorFailure::Monitor(format!(
                "table {table} does not exist in {database} {}",
                schema.version
            )));
        }
    }
    let schema_changed = entry.schema.as_ref().is_some_and(|old| **old != *schema);
    if schema_changed {
        tracing::info!(%database, version = %schema.version, "schema changed; reloading replica");
    }
    let last_txn_id = if schema_changed || (entry.schema.is_none() && entry.replica.status().loaded)
    {
        None
    } else {
        entry.replica.last_txn_id()
    };
    let monitor_id = entry.id().to_owned();
    let requests = entry.replica.spec().requests_json();
    let malformed = |source| {
        MonitorFailure::Connection(Error::Malformed {
            method: "monitor_cond_since".into(),
            source,
        })
    };
    if session.since_supported {
        let params = json!([
            database,
            monitor_id,
            requests,
            last_txn_id.unwrap_or(Uuid::nil()).to_string()
        ]);
        match session.conn.call("monitor_cond_since", params).await {
            Ok(result) => {
                let reply = parse_monitor_since_reply(&result).map_err(malformed)?;
                let updates = parse_table_updates2(&reply.updates, &schema).map_err(malformed)?;
                let counters = &session.counters;
                if reply.found {
                    counters.monitor_resumes.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.monitor_reloads.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(%database, found = reply.found, "monitor_cond_since established");
                entry
                    .replica
                    .apply(&schema, updates, !reply.found, reply.last_txn_id);
                entry.schema = Some(schema);
                return Ok(());
            }
            Err(Error::Rpc { error, .. }) if is_unknown_method(&error) => {
                tracing::info!("server lacks monitor_cond_since; using monitor_cond");
                session.since_supported = false;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let result = session
        .conn
        .call("monitor_cond", json!([database, monitor_id, requests]))
        .await?;
    let updates = parse_table_updates2(&result, &schema).map_err(malformed)?;
    session
        .counters
        .monitor_reloads
        .fetch_add(1, Ordering::Relaxed);
    entry.replica.apply(&schema, updates, true, None);
    entry.schema = Some(schema);
    Ok(())
}

fn is_unknown_method(error: &Json) -> bool {
    let text = error
        .as_str()
        .map(str::to_owned)
        .or_else(|| error.get("error").and_then(Json::as_str).map(str::to_owned))
        .unwrap_or_default();
    text.contains("unknown method")
}

/// Resolves when shutdown was requested (without holding the watch guard across awaits).
async fn shutdown_signal(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
