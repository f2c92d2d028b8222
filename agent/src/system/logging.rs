//! Log output: the journal when the agent runs under systemd, stderr otherwise.
//!
//! `tracing-journald` fails to build its layer when the journal socket is missing (containers, tests,
//! this development machine), so the socket is probed first and the fmt layer is the fallback.

use std::path::Path;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The journal's native-protocol socket.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Where log lines went, so the caller can say it once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSink {
    /// systemd-journald, with structured fields.
    Journal,
    /// Plain text on stderr.
    Stderr,
    /// One JSON object a line on stderr.
    StderrJson,
}

/// Log format on stderr when the journal is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// Machine-readable JSON lines.
    Json,
}

/// Installs the global subscriber. `filter` is an `EnvFilter` directive; `RUST_LOG` overrides it.
pub fn init(filter: &str, format: LogFormat) -> LogSink {
    let env_filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    if Path::new(JOURNAL_SOCKET).exists()
        && let Ok(journal) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(journal.with_filter(env_filter))
            .init();
        return LogSink::Journal;
    }
    match format {
        LogFormat::Text => {
            let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
            tracing_subscriber::registry()
                .with(layer.with_filter(env_filter))
                .init();
            LogSink::Stderr
        }
        LogFormat::Json => {
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr);
            tracing_subscriber::registry()
                .with(layer.with_filter(env_filter))
                .init();
            LogSink::StderrJson
        }
    }
}
