//! An RFC 7047 OVSDB client. Knows nothing of SCS.
//!
//! Layers, bottom up:
//! - [`framing`]: splits the delimiter-less JSON stream into messages (pure, fuzzed);
//! - [`value`], [`schema`]: the data model and schemas;
//! - [`transact`]: typed operations and the interpretation of their results;
//! - [`Client`] (JSON-RPC over TCP/unix, reconnecting with backoff, answering and sending echo
//!   probes, RAFT leader selection via `_Server`), with [`Replica`]s kept current by
//!   `monitor_cond_since` and resumed from the last transaction id after a reconnect;
//! - [`typed`] and [`nb`]: typed rows, with the OVN Northbound tables a network layer writes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ovsdb::Error> {
//! use std::time::Duration;
//! use ovsdb::{Client, ClientConfig, Operation, Remote, TypedRow, nb};
//!
//! let remotes = Remote::parse_list("tcp:127.0.0.1:6641").expect("valid remotes");
//! let client = Client::connect(
//!     ClientConfig::new(remotes).leader_only(nb::DATABASE),
//!     Duration::from_secs(10),
//! )
//! .await?;
//! let replica = client.monitor(nb::monitor_spec()).await?;
//! let ls = nb::LogicalSwitch { name: "net1".into(), ..Default::default() };
//! client.transact(nb::DATABASE, vec![ls.insert_op("ls")]).await?;
//! for (uuid, ls) in replica.snapshot().rows::<nb::LogicalSwitch>() {
//!     tracing::info!(%uuid, name = ?ls.map(|l| l.name), "switch");
//! }
//! # Ok(()) }
//! ```

mod backoff;
mod client;
mod cluster;
mod connection;
mod error;
pub mod framing;
pub mod monitor;
pub mod nb;
mod remote;
pub mod replica;
pub mod schema;
pub mod transact;
pub mod typed;
pub mod value;

pub use backoff::Backoff;
pub use client::{Client, ClientConfig, ClientMetrics, ConnectionState};
pub use cluster::ClusterRequirement;
pub use error::Error;
pub use framing::{Framer, FramingError};
pub use monitor::{MonitorSpec, TableMonitor};
pub use remote::{Remote, RemoteParseError};
pub use replica::{Replica, ReplicaEvent, ReplicaStatus, Snapshot};
pub use schema::DatabaseSchema;
pub use transact::{
    Condition, ErrorKind, Function, Mutation, Mutator, Operation, OperationResult,
    TransactionError, WaitUntil,
};
pub use typed::{RowError, TypedRow};
pub use uuid::Uuid;
pub use value::{Atom, Row, Value};
