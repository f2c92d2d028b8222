//! What the link is doing, for operators: a snapshot in `/healthz` (subsystem `region`) and gauges in
//! `/metrics`.
//!
//! The `region` subsystem is always *healthy*: a site without its region keeps serving (autonomy), so
//! an unreachable region must not turn `/healthz` into 503. Its detail says how the link really is.

use crate::health::SubsystemHealth;
use jiff::Timestamp;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;

/// Where the link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// No exchange finished yet since the agent started.
    Starting,
    /// The last exchange with the region succeeded.
    Up,
    /// The last exchange failed; the link retries (see `retry_in_secs`).
    Down,
    /// The region revoked the site; the link is off for good.
    Revoked,
}

/// The link at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkSnapshot {
    /// Where it stands.
    pub state: LinkState,
    /// The site it speaks for.
    pub site: String,
    /// Whether the node holds a certificate from the region.
    pub joined: bool,
    /// The certificate's end, when joined.
    pub certificate_not_after: Option<Timestamp>,
    /// When the certificate gets renewed, when joined.
    pub renew_after: Option<Timestamp>,
    /// The end of the last successful exchange.
    pub last_success: Option<Timestamp>,
    /// The last failure (cleared by a success).
    pub last_error: Option<String>,
    /// Failed exchanges in a row.
    pub consecutive_failures: u32,
    /// Seconds until the next attempt after a failure.
    pub retry_in_secs: Option<u64>,
    /// Reports waiting for the region.
    pub queued_reports: u64,
    /// Reports dropped since the agent started because the queue was full.
    pub dropped_reports: u64,
    /// The highest report the region acknowledged.
    pub acked_through: u64,
    /// The desired-state generation the node holds.
    pub desired_generation: u64,
}

/// The link's status, shared between the link task, `/healthz` and `/metrics`; a watch channel, so
/// whoever cares (a test, a future status line) can wait for a change instead of polling.
#[derive(Debug)]
pub struct LinkStatus {
    snapshot: watch::Sender<LinkSnapshot>,
    queued: Gauge,
    up: Gauge,
    dropped: Counter,
}

impl LinkStatus {
    /// A link for `site` that has not started.
    pub fn new(site: &str) -> Self {
        Self {
            snapshot: watch::Sender::new(LinkSnapshot {
                state: LinkState::Starting,
                site: site.to_owned(),
                joined: false,
                certificate_not_after: None,
                renew_after: None,
                last_success: None,
                last_error: None,
                consecutive_failures: 0,
                retry_in_secs: None,
                queued_reports: 0,
                dropped_reports: 0,
                acked_through: 0,
                desired_generation: 0,
            }),
            queued: Gauge::default(),
            up: Gauge::default(),
            dropped: Counter::default(),
        }
    }

    /// Adds `scs_edge_region_queued_reports`, `scs_edge_region_link_up` and
    /// `scs_edge_region_dropped_reports_total` to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "scs_edge_region_queued_reports",
            "Heartbeat reports waiting for the region",
            self.queued.clone(),
        );
        registry.register(
            "scs_edge_region_link_up",
            "1 when the last exchange with the region succeeded",
            self.up.clone(),
        );
        registry.register(
            "scs_edge_region_dropped_reports",
            "Reports dropped because the queue was full (oldest first)",
            self.dropped.clone(),
        );
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> LinkSnapshot {
        self.snapshot.borrow().clone()
    }

    /// Follows every change of the snapshot.
    pub fn subscribe(&self) -> watch::Receiver<LinkSnapshot> {
        self.snapshot.subscribe()
    }

    /// The `/healthz` entry: always healthy (see the module), detail = the snapshot.
    pub fn health(&self) -> SubsystemHealth {
        SubsystemHealth::ok(serde_json::to_value(self.snapshot()).unwrap_or_default())
    }

    fn update(&self, change: impl FnOnce(&mut LinkSnapshot)) {
        self.snapshot.send_modify(change);
    }

    pub(super) fn credentials(&self, not_after: Timestamp, renew_after: Timestamp) {
        self.update(|s| {
            s.joined = true;
            s.certificate_not_after = Some(not_after);
            s.renew_after = Some(renew_after);
        });
    }

    pub(super) fn queued(&self, queued: u64, dropped: u64) {
        self.queued.set(queued as i64);
        self.dropped.inc_by(dropped);
        self.update(|s| {
            s.queued_reports = queued;
            s.dropped_reports += dropped;
        });
    }

    pub(super) fn acknowledged(&self, acked_through: u64, queued: u64) {
        self.queued.set(queued as i64);
        self.update(|s| {
            s.acked_through = acked_through;
            s.queued_reports = queued;
        });
    }

    pub(super) fn desired(&self, generation: u64) {
        self.update(|s| s.desired_generation = generation);
    }

    pub(super) fn succeeded(&self, at: Timestamp) {
        self.up.set(1);
        self.update(|s| {
            s.state = LinkState::Up;
            s.last_success = Some(at);
            s.last_error = None;
            s.consecutive_failures = 0;
            s.retry_in_secs = None;
        });
    }

    pub(super) fn failed(&self, error: String, failures: u32, retry_in_secs: u64) {
        self.up.set(0);
        self.update(|s| {
            s.state = LinkState::Down;
            s.last_error = Some(error);
            s.consecutive_failures = failures;
            s.retry_in_secs = Some(retry_in_secs);
        });
    }

    pub(super) fn revoked(&self, error: String) {
        self.up.set(0);
        self.update(|s| {
            s.state = LinkState::Revoked;
            s.last_error = Some(error);
            s.retry_in_secs = None;
        });
    }
}
