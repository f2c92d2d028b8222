//! Waiting on observable conditions with a deadline.

use std::time::Duration;

/// Polls `probe` until it yields a value or `timeout` passes; panics naming `what` on timeout.
/// Polling an observable condition is synchronisation; the interval only bounds how soon we notice.
pub fn until<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> T {
    within(timeout, probe)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `probe` until it yields a value, or gives `None` once `timeout` passed — for callers that
/// gather their own evidence (logs, consoles) before failing. The one poll loop lives in the lab crate.
pub fn within<T>(timeout: Duration, probe: impl FnMut() -> Option<T>) -> Option<T> {
    scs_edge_lab::poll_until(timeout, probe)
}
