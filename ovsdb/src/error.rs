//! The client's error type.

use serde_json::Value as Json;
use thiserror::Error;

use crate::remote::Remote;
use crate::schema::SchemaError;
use crate::transact::TransactionError;
use crate::value::DecodeError;

/// Why a client operation failed.
///
/// The variants separate what a caller handles differently: [`Error::ConnectionLost`] and
/// [`Error::NotConnected`] are worth retrying once the client has reconnected,
/// [`Error::Transaction`] is the database refusing the change (retrying the same change will fail
/// again unless it was a `wait` timeout), and the rest are bugs or misconfiguration.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening the transport failed.
    #[error("cannot connect to OVSDB server at {remote}: {source}")]
    Connect {
        /// The address tried.
        remote: Remote,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Opening the transport did not finish in time.
    #[error("timed out connecting to OVSDB server at {remote}")]
    ConnectTimeout {
        /// The address tried.
        remote: Remote,
    },
    /// The server was reachable but not suitable (e.g. not the cluster leader with
    /// `leader_only`, or cut off from its cluster); the client tries the next remote.
    #[error("OVSDB server at {remote} not used: {reason}")]
    Rejected {
        /// The server.
        remote: Remote,
        /// Why.
        reason: String,
    },
    /// The connection went away while the request was in flight (or before it could be sent);
    /// the request may or may not have been executed. Retry after reconnection, making the
    /// operation idempotent (e.g. with a `wait` or a `where` on the expected state).
    #[error("connection to OVSDB server at {remote} lost: {reason}")]
    ConnectionLost {
        /// The server the request was sent to.
        remote: Remote,
        /// Why the connection ended.
        reason: String,
    },
    /// No connection is up right now; the client keeps reconnecting in the background.
    #[error("not connected to any OVSDB server (last error: {last_error})")]
    NotConnected {
        /// The most recent connection error, for the log.
        last_error: String,
    },
    /// The client was shut down.
    #[error("the OVSDB client has been shut down")]
    Shutdown,
    /// The server answered a request with a JSON-RPC error (e.g. unknown database or method).
    #[error("OVSDB server rejected {method}: {error}")]
    Rpc {
        /// The request's method.
        method: String,
        /// The server's `error` member.
        error: Json,
    },
    /// The database refused a transaction; nothing of it was applied.
    #[error(transparent)]
    Transaction(Box<TransactionError>),
    /// A reply did not have the expected shape.
    #[error("malformed reply to {method}: {source}")]
    Malformed {
        /// The request's method.
        method: String,
        /// What was wrong.
        #[source]
        source: DecodeError,
    },
    /// The server's schema could not be parsed.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The client configuration cannot work.
    #[error("invalid OVSDB client configuration: {0}")]
    Config(String),
    /// A monitor request was refused or its data could not be applied.
    #[error("monitor on {database} failed: {reason}")]
    Monitor {
        /// The monitored database.
        database: String,
        /// Why.
        reason: String,
    },
    /// Waiting for a condition did not succeed in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long.
        after: std::time::Duration,
    },
}

impl Error {
    /// The refused transaction, if that is what failed.
    pub fn transaction(&self) -> Option<&TransactionError> {
        match self {
            Error::Transaction(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TransactionError> for Error {
    fn from(e: TransactionError) -> Self {
        Error::Transaction(Box::new(e))
    }
}

impl Error {
    /// Whether the failure was the connection's and the request can be retried once the client
    /// is connected again.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::ConnectTimeout { .. }
                | Error::Rejected { .. }
                | Error::ConnectionLost { .. }
                | Error::NotConnected { .. }
        )
    }
}
