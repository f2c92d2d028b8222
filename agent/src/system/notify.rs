//! Talking to the service manager: readiness, status text and watchdog pings (`sd_notify(3)`).
//!
//! systemd only restarts a hung agent if the agent stops pinging; so pings are sent by the daemon's
//! liveness task only after it has proven the reconcile loops answer (see `daemon::liveness`), never from
//! a bare timer.

use std::sync::Mutex;
use std::time::Duration;

/// The service manager, as the agent sees it.
pub trait ServiceNotifier: Send + Sync {
    /// The agent has finished its first full reconcile and serves requests.
    fn ready(&self, status: &str);
    /// Free-form status line (`systemctl status` shows it).
    fn status(&self, status: &str);
    /// Proof of life; only to be sent after the loops were seen alive.
    fn watchdog(&self);
    /// The agent is shutting down on purpose.
    fn stopping(&self);
    /// How often systemd expects a watchdog ping, if it armed a watchdog for us.
    fn watchdog_timeout(&self) -> Option<Duration>;
}

/// The real notifier: datagrams to `$NOTIFY_SOCKET`, a no-op when not started by systemd.
#[derive(Debug, Clone)]
pub struct SdNotifier {
    watchdog: Option<Duration>,
}

impl SdNotifier {
    /// Reads `$WATCHDOG_USEC`/`$WATCHDOG_PID` once; the socket address is read on every send.
    pub fn from_env() -> Self {
        Self {
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    fn send(states: &[sd_notify::NotifyState<'_>]) {
        // Not started by systemd (or told not to talk to it): nothing to do.
        if std::env::var_os("NOTIFY_SOCKET").is_none_or(|s| s.is_empty()) {
            return;
        }
        if let Err(err) = sd_notify::notify(states) {
            tracing::warn!(%err, "sd_notify failed");
        }
    }
}

impl ServiceNotifier for SdNotifier {
    fn ready(&self, status: &str) {
        Self::send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]);
    }

    fn status(&self, status: &str) {
        Self::send(&[sd_notify::NotifyState::Status(status)]);
    }

    fn watchdog(&self) {
        Self::send(&[sd_notify::NotifyState::Watchdog]);
    }

    fn stopping(&self) {
        Self::send(&[sd_notify::NotifyState::Stopping]);
    }

    fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }
}

/// Records what would have been sent; for unit tests of start-up and liveness logic.
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    sent: Mutex<Vec<String>>,
    watchdog: Option<Duration>,
}

impl RecordingNotifier {
    /// A recorder that pretends systemd armed a watchdog of `watchdog`.
    pub fn with_watchdog(watchdog: Option<Duration>) -> Self {
        Self {
            sent: Mutex::default(),
            watchdog,
        }
    }

    /// Every message so far, in `KEY=value` form.
    pub fn sent(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn push(&self, message: String) {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(message);
    }
}

impl ServiceNotifier for RecordingNotifier {
    fn ready(&self, status: &str) {
        self.push("READY=1".into());
        self.push(format!("STATUS={status}"));
    }

    fn status(&self, status: &str) {
        self.push(format!("STATUS={status}"));
    }

    fn watchdog(&self) {
        self.push("WATCHDOG=1".into());
    }

    fn stopping(&self) {
        self.push("STOPPING=1".into());
    }

    fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }
}
