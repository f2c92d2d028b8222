//! The liveness task: proves the loops and the store answer, then (and only then) pings the systemd
//! watchdog, and keeps the STATUS= line current.
//!
//! A stuck worker or a hung store stops the pings, so systemd restarts the agent; an unreachable
//! libvirtd does not (a restart would not help, and the API must keep answering).

use crate::reconcile::ControllerHandle;
use crate::system::notify::ServiceNotifier;
use std::collections::BTreeMap;
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
    draining: AtomicBool,
}

impl LivenessState {
    /// The loops were stopped on purpose (the node drains for a reboot): their silence is no
    /// reason to have systemd restart the agent, which would start them again.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the loops answered the last probe.
    pub fn loops_answered(&self) -> bool {
        self.loops_answered.load(Ordering::Acquire)
    }
}

/// The checks and reports one liveness round uses; blocking closures run on the blocking pool.
pub(super) struct Liveness {
    pub state: Arc<LivenessState>,
    pub loops: ControllerHandle,
    /// Proves the store answers.
    pub store_answers: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Servers per status, for the STATUS= line.
    pub server_counts: Arc<dyn Fn() -> BTreeMap<String, u64> + Send + Sync>,
    pub notifier: Arc<dyn ServiceNotifier>,
}

/// How often to check: twice per watchdog period, or every 5 s without a watchdog.
fn period(watchdog: Option<Duration>) -> Duration {
    watchdog.map_or(Duration::from_secs(5), |w| {
        (w / 2).max(Duration::from_millis(10))
    })
}

impl Liveness {
    pub(super) async fn run(self, shutdown: CancellationToken) {
        let every = period(self.notifier.watchdog_timeout());
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status = String::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let answered =
                self.state.draining.load(Ordering::Acquire) || self.loops.probe(every).await;
            self.state.loops_answered.store(answered, Ordering::Release);
            let store_answers = self.store_answers.clone();
            let store_ok = tokio::task::spawn_blocking(move || store_answers())
                .await
                .unwrap_or(false);
            let health = self.loops.health();
            let draining = self.state.draining.load(Ordering::Acquire);
            if answered && store_ok && (draining || health.stalled.is_empty()) {
                self.notifier.watchdog();
            } else {
                warn!(answered, store_ok, stalled = ?health.stalled, "liveness check failed; withholding watchdog ping");
            }

            let counts = self.server_counts.clone();
            let summary = tokio::task::spawn_blocking(move || counts())
                .await
                .unwrap_or_default();
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
                self.notifier.status(&status);
                last_status = status;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::ControllerBuilder;
    use crate::reconcile::test_support::{Wedged, quiet_settings};
    use crate::system::notify::RecordingNotifier;
    use std::sync::Barrier;
    use std::time::Instant;

    #[test]
    fn checks_run_twice_per_watchdog_period() {
        assert_eq!(
            period(Some(Duration::from_secs(30))),
            Duration::from_secs(15)
        );
        assert_eq!(period(None), Duration::from_secs(5));
    }

    fn watchdog_pings(notifier: &RecordingNotifier) -> usize {
        notifier
            .sent()
            .iter()
            .filter(|m| *m == "WATCHDOG=1")
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchdog_pings_stop_while_a_worker_is_stuck_and_resume_after() {
        let release = Arc::new(Barrier::new(2));
        let (controller, loops) =
            ControllerBuilder::new(quiet_settings(1, Duration::from_millis(50)))
                .register(Arc::new(Wedged(release.clone())))
                .build();
        let notifier = Arc::new(RecordingNotifier::with_watchdog(Some(
            Duration::from_millis(40),
        )));
        let shutdown = CancellationToken::new();
        let loops_task = tokio::spawn(controller.run(shutdown.clone()));
        let liveness = Liveness {
            state: Arc::new(LivenessState::default()),
            loops: loops.clone(),
            store_answers: Arc::new(|| true),
            server_counts: Arc::new(BTreeMap::new),
            notifier: notifier.clone(),
        };
        let liveness_task = tokio::spawn(liveness.run(shutdown.clone()));

        // Once the worker has been stuck past the stall timeout, pings stop.
        let deadline = Instant::now() + Duration::from_secs(10);
        while loops.health().stalled.is_empty() {
            assert!(Instant::now() < deadline, "stall never reported");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Two full liveness rounds after the stall became visible.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let frozen = watchdog_pings(&notifier);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            watchdog_pings(&notifier),
            frozen,
            "no WATCHDOG=1 while a worker is stuck"
        );

        // Unstick it: pings resume.
        tokio::task::spawn_blocking(move || release.wait())
            .await
            .expect("release");
        let deadline = Instant::now() + Duration::from_secs(10);
        while watchdog_pings(&notifier) <= frozen {
            assert!(Instant::now() < deadline, "pings never resumed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        let _ = loops_task.await;
        let _ = liveness_task.await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_that_does_not_answer_withholds_the_ping_but_status_still_updates() {
        let (controller, loops) =
            ControllerBuilder::new(quiet_settings(1, Duration::from_mins(1))).build();
        let notifier = Arc::new(RecordingNotifier::with_watchdog(Some(
            Duration::from_millis(40),
        )));
        let shutdown = CancellationToken::new();
        let loops_task = tokio::spawn(controller.run(shutdown.clone()));
        let liveness = Liveness {
            state: Arc::new(LivenessState::default()),
            loops,
            store_answers: Arc::new(|| false),
            server_counts: Arc::new(|| BTreeMap::from([("ACTIVE".to_owned(), 2)])),
            notifier: notifier.clone(),
        };
        let liveness_task = tokio::spawn(liveness.run(shutdown.clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !notifier
            .sent()
            .iter()
            .any(|m| m == "STATUS=servers: 2 ACTIVE; queue 0")
        {
            assert!(
                Instant::now() < deadline,
                "no status line: {:?}",
                notifier.sent()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(watchdog_pings(&notifier), 0);
        shutdown.cancel();
        let _ = loops_task.await;
        let _ = liveness_task.await;
    }
}
