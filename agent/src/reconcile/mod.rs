//! The generic reconcile machinery: a work queue, workers, retries with exponential backoff, periodic
//! full resync, cheap periodic observation, and the liveness probe the watchdog relies on.
//!
//! It knows no resource kind. Each domain folder brings a [`Reconciler`] and registers it; adding a
//! resource kind never touches this loop. The contract a reconciler must honour is idempotence: the
//! loop may call `reconcile(key)` any number of times, including after the process was killed in the
//! middle of a previous call, and each call must move actual state towards desired state and write
//! status back.

mod controller;
mod queue;
#[cfg(test)]
pub(crate) mod test_support;

pub use controller::{
    ChangeFeed, Controller, ControllerBuilder, ControllerHandle, ControllerHealth, Settings,
    StalledItem,
};

use std::time::Duration;

/// Error type reconcilers return for a failed attempt; the loop retries with backoff.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a successful reconcile asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Actual state matches desired state (or a permanent fault was recorded); nothing more to do.
    Done,
    /// Progress was made but the item needs another look later (e.g. waiting for a guest to shut down).
    After(Duration),
}

/// One resource kind's reconciler. All methods may block; the loop calls them on blocking threads.
pub trait Reconciler: Send + Sync + 'static {
    /// Short stable name, used in logs, metrics and health (`servers`, `networks`, …).
    fn kind(&self) -> &'static str;

    /// Every key that has desired state, actual state, or leftovers of either; a full resync reconciles
    /// all of them, which is how orphans are found.
    fn all_keys(&self) -> Result<Vec<String>, BoxError>;

    /// Keys whose desired state may have changed, each with its desired-state version (generation).
    /// Polled when the store reports a commit from another process; a key is queued when its version
    /// differs from the last one the loop saw.
    fn changed(&self) -> Result<Vec<(String, i64)>, BoxError>;

    /// Keys whose actual state differs from what was last recorded (a guest powered itself off, a
    /// domain vanished). Called every observe interval; must be cheap.
    fn observe(&self) -> Result<Vec<String>, BoxError> {
        Ok(Vec::new())
    }

    /// Moves one key towards its desired state. Idempotent; safe after a crash at any line.
    fn reconcile(&self, key: &str) -> Result<Next, BoxError>;
}

/// How domain services tell the loops, within this process, that they wrote desired state.
pub trait WorkSink: Send + Sync {
    /// `key` of `kind` now has desired-state version `version`.
    fn desired_changed(&self, kind: &'static str, key: &str, version: i64);
}

/// For processes without loops (the admin CLI): the daemon notices the commit through the store.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLoops;

impl WorkSink for NoLoops {
    fn desired_changed(&self, _kind: &'static str, _key: &str, _version: i64) {}
}

/// Exponential backoff: `initial * 2^(failures-1)`, capped at `max`, with up to 10 % jitter subtracted so
/// many items failing together do not retry in lockstep.
pub fn backoff(failures: u32, initial: Duration, max: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let raw = initial.saturating_mul(1u32 << exponent).min(max);
    let jitter = rand::random_range(0.0..0.1);
    raw.mul_f64(1.0 - jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for (failures, expected_ms) in [
            (1u32, 100u64),
            (2, 200),
            (3, 400),
            (6, 3200),
            (7, 5000),
            (40, 5000),
        ] {
            let got = backoff(failures, initial, max);
            let expected = Duration::from_millis(expected_ms);
            assert!(
                got <= expected && got >= expected.mul_f64(0.9),
                "failures {failures}: {got:?} vs {expected:?}"
            );
        }
    }
}
