//! Reconcilers and settings shared by the loop's own tests and those of its users.

use super::{BoxError, Next, Reconciler, Settings};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// Settings where nothing happens on a timer (tests drive everything), with the given stall timeout.
pub(crate) fn quiet_settings(workers: usize, stall_timeout: Duration) -> Settings {
    Settings {
        workers,
        resync_interval: Duration::from_hours(1),
        observe_interval: Duration::from_hours(1),
        change_poll_interval: Duration::from_hours(1),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(10),
        stall_timeout,
    }
}

/// One item (`wedged`) whose reconcile blocks until the test waits on the same barrier.
pub(crate) struct Wedged(pub Arc<Barrier>);

impl Reconciler for Wedged {
    fn kind(&self) -> &'static str {
        "stuck"
    }
    fn all_keys(&self) -> Result<Vec<String>, BoxError> {
        Ok(vec!["wedged".into()])
    }
    fn changed(&self) -> Result<Vec<(String, i64)>, BoxError> {
        Ok(Vec::new())
    }
    fn reconcile(&self, _key: &str) -> Result<Next, BoxError> {
        self.0.wait();
        Ok(Next::Done)
    }
}
