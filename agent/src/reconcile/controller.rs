//! The loops: one main loop (timers, probes) and a pool of workers draining the queue.

use super::queue::{Cause, Item, PassTracker, RunEnd, WorkQueue};
use super::{BoxError, Next, Reconciler, WorkSink, backoff};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

/// Timing of the loops; see `[reconcile]` in the configuration for what each one means.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Parallel workers.
    pub workers: usize,
    /// Full resync period.
    pub resync_interval: Duration,
    /// Observation period.
    pub observe_interval: Duration,
    /// Cross-process change poll period.
    pub change_poll_interval: Duration,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Retry delay cap.
    pub backoff_max: Duration,
    /// Busy-on-one-item threshold for "stalled".
    pub stall_timeout: Duration,
}

impl From<&crate::config::ReconcileConfig> for Settings {
    fn from(c: &crate::config::ReconcileConfig) -> Self {
        Self {
            workers: c.workers,
            resync_interval: Duration::from_secs(c.resync_interval_secs),
            observe_interval: Duration::from_millis(c.observe_interval_ms),
            change_poll_interval: Duration::from_millis(c.change_poll_interval_ms),
            backoff_initial: Duration::from_millis(c.backoff_initial_ms),
            backoff_max: Duration::from_secs(c.backoff_max_secs),
            stall_timeout: Duration::from_secs(c.stall_timeout_secs),
        }
    }
}

/// Reports the store's commit counter; the loop polls it to notice writes made by other processes.
pub type ChangeFeed = Arc<dyn Fn() -> Result<i64, BoxError> + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Debug, Clone)]
struct LoopMetrics {
    runs: Family<KindOutcome, Counter>,
    duration: Family<KindLabel, Histogram>,
    depth: Gauge,
    last_resync: Gauge,
}

impl LoopMetrics {
    fn new() -> Self {
        Self {
            runs: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            depth: Gauge::default(),
            last_resync: Gauge::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "scs_edge_reconcile_runs",
            "Reconcile runs by kind and outcome",
            self.runs.clone(),
        );
        registry.register(
            "scs_edge_reconcile_duration_seconds",
            "Time one reconcile run took",
            self.duration.clone(),
        );
        registry.register(
            "scs_edge_reconcile_queue_depth",
            "Items queued or being reconciled",
            self.depth.clone(),
        );
        registry.register(
            "scs_edge_reconcile_last_resync_timestamp_seconds",
            "Unix time the last full resync was queued",
            self.last_resync.clone(),
        );
    }
}

/// Registers reconcilers and builds the controller.
pub struct ControllerBuilder {
    settings: Settings,
    kinds: Vec<Arc<dyn Reconciler>>,
    change_feed: Option<ChangeFeed>,
    metrics: LoopMetrics,
}

impl ControllerBuilder {
    /// A builder with no kinds yet.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            kinds: Vec::new(),
            change_feed: None,
            metrics: LoopMetrics::new(),
        }
    }

    /// Adds a resource kind.
    #[must_use]
    pub fn register(mut self, reconciler: Arc<dyn Reconciler>) -> Self {
        self.kinds.push(reconciler);
        self
    }

    /// Sets where cross-process changes are noticed (the store's `data_version`).
    #[must_use]
    pub fn change_feed(mut self, feed: ChangeFeed) -> Self {
        self.change_feed = Some(feed);
        self
    }

    /// Exposes the loop's metrics.
    #[must_use]
    pub fn metrics(self, registry: &mut Registry) -> Self {
        self.metrics.register(registry);
        self
    }

    /// Builds the controller and a handle for enqueueing, probing and health.
    pub fn build(self) -> (Controller, ControllerHandle) {
        let (probe_tx, probe_rx) = mpsc::channel(8);
        let kind_index = self
            .kinds
            .iter()
            .enumerate()
            .map(|(i, k)| (k.kind(), i))
            .collect();
        let shared = Arc::new(Shared {
            workers: Mutex::new(vec![None; self.settings.workers]),
            settings: self.settings,
            kinds: self.kinds,
            kind_index,
            queue: WorkQueue::default(),
            change_feed: self.change_feed,
            metrics: self.metrics,
            // Counts one for "not queued yet" until the first pass sets the real number.
            first_pass: PassTracker::new(1),
            observe_errors: Mutex::default(),
            last_resync: Mutex::new(None),
            scans_in_progress: Mutex::default(),
        });
        let handle = ControllerHandle {
            shared: shared.clone(),
            probe_tx,
        };
        (Controller { shared, probe_rx }, handle)
    }
}

struct Shared {
    settings: Settings,
    kinds: Vec<Arc<dyn Reconciler>>,
    kind_index: HashMap<&'static str, usize>,
    queue: WorkQueue,
    change_feed: Option<ChangeFeed>,
    metrics: LoopMetrics,
    /// Per worker: what it is busy with and since when.
    workers: Mutex<Vec<Option<(Item, Instant)>>>,
    first_pass: Arc<PassTracker>,
    /// Per kind: the last failure of `observe`/`all_keys`, cleared by the next success.
    observe_errors: Mutex<BTreeMap<&'static str, String>>,
    last_resync: Mutex<Option<Instant>>,
    /// Background scans (resync, observe, change poll) still running, by name and start.
    scans_in_progress: Mutex<HashMap<String, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running loops. Consumed by [`Controller::run`].
pub struct Controller {
    shared: Arc<Shared>,
    probe_rx: mpsc::Receiver<oneshot::Sender<()>>,
}

/// Cheap handle: tells the loops about desired-state changes, probes them, reports their health.
#[derive(Clone)]
pub struct ControllerHandle {
    shared: Arc<Shared>,
    probe_tx: mpsc::Sender<oneshot::Sender<()>>,
}

/// One item a worker has been busy with for longer than the stall timeout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StalledItem {
    /// Resource kind.
    pub kind: String,
    /// Key.
    pub key: String,
    /// Seconds busy.
    pub busy_secs: u64,
}

/// What the loops report about themselves.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ControllerHealth {
    /// Items queued or running.
    pub queue_depth: usize,
    /// Items stuck in a worker.
    pub stalled: Vec<StalledItem>,
    /// Per kind, the last failed observation or key listing (empty when all is well).
    pub scan_errors: BTreeMap<String, String>,
    /// Whether the first full pass finished.
    pub first_pass_done: bool,
    /// Seconds since the last full resync was queued.
    pub last_resync_age_secs: Option<u64>,
}

impl ControllerHealth {
    /// True when nothing is stuck and every kind could list and observe its resources.
    pub fn is_healthy(&self) -> bool {
        self.stalled.is_empty() && self.scan_errors.is_empty()
    }
}

impl WorkSink for ControllerHandle {
    fn desired_changed(&self, kind: &'static str, key: &str, version: i64) {
        let Some(&index) = self.shared.kind_index.get(kind) else {
            warn!(kind, key, "desired change for an unregistered kind");
            return;
        };
        let item = (index, key.to_owned());
        self.shared.queue.note_version(&item, version);
        self.shared.queue.add(item, Cause::Desired, None);
        self.shared
            .metrics
            .depth
            .set(self.shared.queue.depth() as i64);
    }
}

impl ControllerHandle {
    /// Asks for `key` of `kind` to be looked at soon, as an observation would (respects backoff).
    /// For event sources that know something changed (a database monitor update).
    pub fn nudge(&self, kind: &'static str, key: &str) {
        if let Some(&index) = self.shared.kind_index.get(kind) {
            self.shared
                .queue
                .add((index, key.to_owned()), Cause::Routine, None);
        }
    }

    /// Round-trips a message through the main loop: proves it is running and not blocked.
    pub async fn probe(&self, within: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        let round_trip = async {
            self.probe_tx.send(tx).await.ok()?;
            rx.await.ok()
        };
        matches!(tokio::time::timeout(within, round_trip).await, Ok(Some(())))
    }

    /// Completes once every key found at start has been reconciled once (successfully or not).
    pub async fn first_pass_done(&self) {
        self.shared.first_pass.wait().await;
    }

    /// Snapshot of stalls, scan errors and queue depth.
    pub fn health(&self) -> ControllerHealth {
        let now = Instant::now();
        let stall = self.shared.settings.stall_timeout;
        let mut stalled: Vec<StalledItem> = lock(&self.shared.workers)
            .iter()
            .flatten()
            .filter(|(_, since)| now.duration_since(*since) > stall)
            .map(|((kind, key), since)| StalledItem {
                kind: self.shared.kinds[*kind].kind().to_owned(),
                key: key.clone(),
                busy_secs: now.duration_since(*since).as_secs(),
            })
            .collect();
        for (name, since) in lock(&self.shared.scans_in_progress).iter() {
            if now.duration_since(*since) > stall {
                stalled.push(StalledItem {
                    kind: name.clone(),
                    key: String::from("(scan)"),
                    busy_secs: now.duration_since(*since).as_secs(),
                });
            }
        }
        ControllerHealth {
            queue_depth: self.shared.queue.depth(),
            stalled,
            scan_errors: lock(&self.shared.observe_errors)
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            first_pass_done: self.shared.first_pass.is_done(),
            last_resync_age_secs: lock(&self.shared.last_resync)
                .map(|t| now.duration_since(t).as_secs()),
        }
    }
}

impl Controller {
    /// Runs the main loop and the workers until `shutdown` is cancelled; workers finish the item they
    /// are on before returning.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let shared = self.shared.clone();
        let mut workers = tokio::task::JoinSet::new();
        for index in 0..shared.settings.workers {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            workers.spawn(
                async move { worker(shared, index, shutdown).await }
                    .instrument(tracing::info_span!("worker", index)),
            );
        }

        // The baseline is read before the first pass lists the keys: a commit after the listing
        // then moves the counter past it and is queued, rather than waiting for the next resync.
        let mut last_version = shared.change_feed.as_ref().and_then(|feed| feed().ok());
        self.first_pass().await;
        let mut resync = tokio::time::interval_at(
            tokio::time::Instant::now() + shared.settings.resync_interval,
            shared.settings.resync_interval,
        );
        let mut observe = tokio::time::interval(shared.settings.observe_interval);
        let mut change_poll = tokio::time::interval(shared.settings.change_poll_interval);
        for timer in [&mut resync, &mut observe, &mut change_poll] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }

        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(reply) = self.probe_rx.recv() => { let _ = reply.send(()); }
                _ = resync.tick() => spawn_scan(&shared, "resync", full_resync),
                _ = observe.tick() => spawn_scan(&shared, "observe", observe_all),
                _ = change_poll.tick() => {
                    let Some(feed) = shared.change_feed.clone() else { continue };
                    match feed() {
                        Ok(version) if Some(version) != last_version => {
                            last_version = Some(version);
                            spawn_scan(&shared, "changes", queue_changed);
                        }
                        Ok(_) => {}
                        Err(err) => warn!(%err, "cannot read store change counter"),
                    }
                }
            }
        }
        info!("reconcile loops stopping");
        while workers.join_next().await.is_some() {}
    }

    /// Queues every key of every kind, tracked so readiness can wait for it.
    async fn first_pass(&self) {
        let shared = self.shared.clone();
        let keys = tokio::task::spawn_blocking(move || collect_all_keys(&shared))
            .await
            .unwrap_or_default();
        let total: usize = keys.iter().map(|(_, k)| k.len()).sum();
        self.shared.first_pass.set_remaining(total);
        info!(items = total, "first full pass queued");
        for (kind, keys) in keys {
            for key in keys {
                self.shared.queue.add(
                    (kind, key),
                    Cause::Routine,
                    Some(self.shared.first_pass.clone()),
                );
            }
        }
        *lock(&self.shared.last_resync) = Some(Instant::now());
        self.shared
            .metrics
            .last_resync
            .set(jiff::Timestamp::now().as_second());
    }
}

/// Runs a scan on a blocking thread unless the previous scan of that name is still running.
fn spawn_scan(shared: &Arc<Shared>, name: &'static str, scan: fn(&Shared)) {
    {
        let mut running = lock(&shared.scans_in_progress);
        if running.contains_key(name) {
            debug!(scan = name, "previous scan still running; skipping tick");
            return;
        }
        running.insert(name.to_owned(), Instant::now());
    }
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        scan(&shared);
        lock(&shared.scans_in_progress).remove(name);
        shared.metrics.depth.set(shared.queue.depth() as i64);
    });
}

fn record_scan(shared: &Shared, kind: &'static str, result: Result<(), &BoxError>) {
    let mut errors = lock(&shared.observe_errors);
    match result {
        Ok(()) => {
            errors.remove(kind);
        }
        Err(err) => {
            if errors
                .get(kind)
                .is_none_or(|previous| *previous != err.to_string())
            {
                warn!(kind, %err, "scan failed");
            }
            errors.insert(kind, err.to_string());
        }
    }
}

fn collect_all_keys(shared: &Shared) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for (index, kind) in shared.kinds.iter().enumerate() {
        match kind.all_keys() {
            Ok(keys) => {
                record_scan(shared, kind.kind(), Ok(()));
                let set: HashSet<String> = keys.iter().cloned().collect();
                shared.queue.retain_versions(index, &set);
                out.push((index, keys));
            }
            Err(err) => record_scan(shared, kind.kind(), Err(&err)),
        }
    }
    out
}

fn full_resync(shared: &Shared) {
    for (kind, keys) in collect_all_keys(shared) {
        for key in keys {
            shared.queue.add((kind, key), Cause::Routine, None);
        }
    }
    *lock(&shared.last_resync) = Some(Instant::now());
    shared
        .metrics
        .last_resync
        .set(jiff::Timestamp::now().as_second());
}

fn observe_all(shared: &Shared) {
    for (index, kind) in shared.kinds.iter().enumerate() {
        match kind.observe() {
            Ok(keys) => {
                record_scan(shared, kind.kind(), Ok(()));
                for key in keys {
                    shared.queue.add((index, key), Cause::Routine, None);
                }
            }
            Err(err) => record_scan(shared, kind.kind(), Err(&err)),
        }
    }
}

fn queue_changed(shared: &Shared) {
    for (index, kind) in shared.kinds.iter().enumerate() {
        match kind.changed() {
            Ok(changed) => {
                for (key, version) in changed {
                    let item = (index, key);
                    if shared.queue.note_version(&item, version) {
                        shared.queue.add(item, Cause::Desired, None);
                    }
                }
            }
            Err(err) => warn!(kind = kind.kind(), %err, "cannot list changed keys"),
        }
    }
}

async fn worker(shared: Arc<Shared>, index: usize, shutdown: CancellationToken) {
    loop {
        let item = tokio::select! {
            () = shutdown.cancelled() => return,
            item = shared.queue.next() => item,
        };
        lock(&shared.workers)[index] = Some((item.clone(), Instant::now()));
        let reconciler = shared.kinds[item.0].clone();
        let kind = reconciler.kind();
        let key = item.1.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || reconciler.reconcile(&key)).await;
        let elapsed = started.elapsed();
        lock(&shared.workers)[index] = None;

        let (end, outcome, later) = match result {
            Ok(Ok(Next::Done)) => (RunEnd::Done, "done", None),
            Ok(Ok(Next::After(delay))) => (RunEnd::Later, "later", Some(delay)),
            Ok(Err(err)) => {
                warn!(kind, key = %item.1, %err, "reconcile failed");
                (RunEnd::Failed, "error", None)
            }
            Err(join) => {
                warn!(kind, key = %item.1, error = %join, "reconcile panicked");
                (RunEnd::Failed, "panic", None)
            }
        };
        let failures = shared.queue.finish(&item, end);
        shared
            .metrics
            .runs
            .get_or_create(&KindOutcome {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        shared
            .metrics
            .duration
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
        shared.metrics.depth.set(shared.queue.depth() as i64);

        let delay = match later {
            Some(delay) => Some((delay, Cause::Routine)),
            None if failures > 0 => Some((
                backoff(
                    failures,
                    shared.settings.backoff_initial,
                    shared.settings.backoff_max,
                ),
                Cause::Retry,
            )),
            None => None,
        };
        if let Some((delay, cause)) = delay {
            debug!(kind, key = %item.1, ?delay, failures, "requeue scheduled");
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(delay) => { shared.queue.add(item, cause, None); }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::test_support::{Wedged, quiet_settings};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A reconciler over an in-memory map: desired value per key, actual value per key.
    #[derive(Default)]
    struct Toy {
        desired: Mutex<HashMap<String, (u32, i64)>>,
        actual: Mutex<HashMap<String, u32>>,
        fail_next: AtomicU32,
        runs: AtomicU32,
    }

    impl Reconciler for Toy {
        fn kind(&self) -> &'static str {
            "toys"
        }
        fn all_keys(&self) -> Result<Vec<String>, BoxError> {
            let mut keys: HashSet<String> = lock(&self.desired).keys().cloned().collect();
            keys.extend(lock(&self.actual).keys().cloned());
            Ok(keys.into_iter().collect())
        }
        fn changed(&self) -> Result<Vec<(String, i64)>, BoxError> {
            Ok(lock(&self.desired)
                .iter()
                .map(|(k, (_, g))| (k.clone(), *g))
                .collect())
        }
        fn reconcile(&self, key: &str) -> Result<Next, BoxError> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            if self.fail_next.load(Ordering::SeqCst) > 0 {
                self.fail_next.fetch_sub(1, Ordering::SeqCst);
                return Err("injected failure".into());
            }
            match lock(&self.desired).get(key) {
                Some((value, _)) => lock(&self.actual).insert(key.to_owned(), *value),
                None => lock(&self.actual).remove(key),
            };
            Ok(Next::Done)
        }
    }

    fn settings() -> Settings {
        Settings {
            workers: 2,
            resync_interval: Duration::from_hours(1),
            observe_interval: Duration::from_hours(1),
            change_poll_interval: Duration::from_millis(10),
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(40),
            stall_timeout: Duration::from_mins(1),
        }
    }

    async fn until(mut cond: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !cond() {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("condition reached in time");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_pass_converges_existing_state_and_removes_orphans() {
        let toy = Arc::new(Toy::default());
        lock(&toy.desired).insert("a".into(), (1, 1));
        lock(&toy.actual).insert("orphan".into(), 9);
        let (controller, handle) = ControllerBuilder::new(settings())
            .register(toy.clone())
            .build();
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(controller.run(shutdown.clone()));
        tokio::time::timeout(Duration::from_secs(10), handle.first_pass_done())
            .await
            .expect("first pass");
        assert_eq!(
            lock(&toy.actual).clone(),
            HashMap::from([("a".to_owned(), 1)])
        );
        assert!(handle.health().first_pass_done);
        shutdown.cancel();
        run.await.expect("loops stop");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_are_retried_with_backoff_until_success() {
        let toy = Arc::new(Toy::default());
        toy.fail_next.store(3, Ordering::SeqCst);
        let (controller, handle) = ControllerBuilder::new(settings())
            .register(toy.clone())
            .build();
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(controller.run(shutdown.clone()));
        lock(&toy.desired).insert("a".into(), (7, 1));
        handle.desired_changed("toys", "a", 1);
        until(|| lock(&toy.actual).get("a") == Some(&7)).await;
        // Three failed runs, then success. The first full pass may race the nudge and add a run of its
        // own, so the count is a lower bound; that every injected failure was consumed is exact.
        assert_eq!(
            toy.fail_next.load(Ordering::SeqCst),
            0,
            "all failures retried"
        );
        assert!(
            toy.runs.load(Ordering::SeqCst) >= 4,
            "three failed runs, then success"
        );
        shutdown.cancel();
        run.await.expect("loops stop");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_from_another_process_are_noticed_through_the_change_feed() {
        let toy = Arc::new(Toy::default());
        let version = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let feed_version = version.clone();
        let feed: ChangeFeed = Arc::new(move || Ok(feed_version.load(Ordering::SeqCst)));
        let (controller, _handle) = ControllerBuilder::new(settings())
            .register(toy.clone())
            .change_feed(feed)
            .build();
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(controller.run(shutdown.clone()));
        // Another process writes desired state and commits; nobody calls desired_changed.
        lock(&toy.desired).insert("b".into(), (5, 1));
        version.store(1, Ordering::SeqCst);
        until(|| lock(&toy.actual).get("b") == Some(&5)).await;
        shutdown.cancel();
        run.await.expect("loops stop");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probe_answers_while_loops_run_and_fails_once_they_stopped() {
        let (controller, handle) = ControllerBuilder::new(settings())
            .register(Arc::new(Toy::default()))
            .build();
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(controller.run(shutdown.clone()));
        assert!(handle.probe(Duration::from_secs(5)).await);
        shutdown.cancel();
        run.await.expect("loops stop");
        assert!(!handle.probe(Duration::from_millis(100)).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_item_stuck_in_a_worker_is_reported_as_stalled() {
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (controller, handle) =
            ControllerBuilder::new(quiet_settings(2, Duration::from_millis(20)))
                .register(Arc::new(Wedged(barrier.clone())))
                .build();
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(controller.run(shutdown.clone()));
        until(|| !handle.health().stalled.is_empty()).await;
        let health = handle.health();
        assert_eq!(health.stalled[0].key, "wedged");
        assert!(!health.is_healthy());
        barrier.wait();
        handle.first_pass_done().await;
        assert!(handle.health().is_healthy());
        shutdown.cancel();
        run.await.expect("loops stop");
    }
}
