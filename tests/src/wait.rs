//! Waiting on observable conditions with a deadline.

use std::time::{Duration, Instant};

/// Polls `probe` until it yields a value or `timeout` passes; panics naming `what` on timeout.
/// Polling an observable condition is synchronisation; the interval only bounds how soon we notice.
pub fn until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
