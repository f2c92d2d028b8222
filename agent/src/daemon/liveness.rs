//! The liveness task: proves the loops and the store answer, then (and only then) pings the systemd
//! watchdog, and keeps the STATUS= line current.
//!
//! A stuck worker or a hung store stops the pings, so systemd restarts the agent; an unreachable
//! libvirtd does not (a restart would not help, and the API must keep answering).

use crate::compute::ComputeService;
use crate::reconcile::ControllerHandle;
use crate::store::Store;
use crate::system::notify::ServiceNotifier;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// What the last liveness round found, for `/healthz`.
#[derive(Debug, Default)]
pub struct LivenessState {
    loops_answered: AtomicBool,
}

impl LivenessState {
    /// Whether the loops answered the last probe.
    pub fn loops_answered(&self) -> bool {
        self.loops_answered.load(Ordering::Acquire)
    }
}

/// How often to check: twice per watchdog period, or every 5 s without a watchdog.
fn period(watchdog: Option<Duration>) -> Duration {
    watchdog.map_or(Duration::from_secs(5), |w| {
        (w / 2).max(Duration::from_millis(100))
    })
}

pub(super) async fn run(
    state: Arc<LivenessState>,
    loops: ControllerHandle,
    store: Arc<Store>,
    compute: Arc<ComputeService>,
    notifier: Arc<dyn ServiceNotifier>,
    shutdown: CancellationToken,
) {
    let every = period(notifier.watchdog_timeout());
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = String::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let answered = loops.probe(every).await;
        state.loops_answered.store(answered, Ordering::Release);
        let ping_store = store.clone();
        let store_ok = matches!(
            tokio::task::spawn_blocking(move || ping_store.ping()).await,
            Ok(Ok(()))
        );
        let health = loops.health();
        if answered && store_ok && health.stalled.is_empty() {
            notifier.watchdog();
        } else {
            warn!(answered, store_ok, stalled = ?health.stalled, "liveness check failed; withholding watchdog ping");
        }

        let summary = compute.status_counts().unwrap_or_default();
        let servers: Vec<String> = summary
            .iter()
            .map(|(status, n)| format!("{n} {status}"))
            .collect();
        let mut status = format!(
            "servers: {}; queue {}",
            if servers.is_empty() {
                "none".to_owned()
            } else {
                servers.join(", ")
            },
            health.queue_depth
        );
        if !health.scan_errors.is_empty() {
            let kinds: Vec<&str> = health.scan_errors.keys().map(String::as_str).collect();
            let _ = write!(status, "; degraded: {}", kinds.join(", "));
        }
        if status != last_status {
            notifier.status(&status);
            last_status = status;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_run_twice_per_watchdog_period() {
        assert_eq!(
            period(Some(Duration::from_secs(30))),
            Duration::from_secs(15)
        );
        assert_eq!(period(None), Duration::from_secs(5));
    }
}
