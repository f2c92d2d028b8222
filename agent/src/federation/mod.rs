//! The region link: the site's side of federation with a central `scs-edge-region`.
//!
//! One task ([`Link::run`]) per agent, started by the daemon when `[region] url` is set. It joins the
//! region once (pinned CA, one-time token, CSR for a key made here), then over mTLS sends a heartbeat
//! report every `heartbeat_interval_secs` (± jitter), renews its certificate when the region says so,
//! and fetches desired state when the region's generation moved. The link is an adapter like the API:
//! it reads the agent's health and domain services and never changes them, so the site works fully
//! without it — a failing region costs the link retries and nothing else.
//!
//! * Reports are queued on disk first ([`outbox`]) and delivered in order, oldest first, in batches;
//!   a report leaves the queue only when the region acknowledged it. While the region is unreachable
//!   reports keep queueing at the heartbeat interval and delivery backs off exponentially with full
//!   jitter up to `backoff_max_secs`.
//! * Refusals an operator must fix (a bad join token, a CA that does not match the pin, an unknown
//!   site) are logged as errors on every attempt and retried every `backoff_max_secs`.
//! * `403 site_revoked` stops the link for good, across restarts (`federation/revoked.json`).
//!
//! Files live in `<state_dir>/federation/` ([`credentials`]); the queue in the store (schema 7).

pub mod credentials;
pub mod offer;
pub mod outbox;
pub mod report;
pub mod status;
pub mod transport;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use crate::config::RegionConfig;
use crate::system::clock::Clock;
use credentials::{
    Credentials, CredentialsError, FederationDir, Revocation, Secret, ca_fingerprint, new_node_key,
    read_token, remove_token,
};
use jiff::Timestamp;
use outbox::{Outbox, OutboxError, Pushed, Realigned};
use report::SiteObserver;
use scs_edge_proto::{
    DesiredState, ErrorCode, JoinRequest, MAX_REPORTS_PER_BATCH, MAX_REQUEST_BYTES, RenewRequest,
    ReportBatch,
};
use status::LinkStatus;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use transport::{RegionTransport, TransportError};

/// The link's directory inside the state directory.
pub const FEDERATION_DIR: &str = "federation";
/// The first retry delay's ceiling; it doubles per failure up to `backoff_max_secs`.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// No retry comes sooner than this, whatever the jitter drew: a flapping region is never hammered.
const MIN_RETRY: Duration = Duration::from_millis(500);
/// JSON a batch may carry: half the region's request limit leaves room for the envelope and for
/// reports growing a little when re-serialised.
const BATCH_BYTES: usize = MAX_REQUEST_BYTES / 2;
/// 409s answered by realigning the queue in one delivery before giving up until the next attempt
/// (a region that keeps moving its expectation must not keep the link in a loop).
const MAX_REALIGNS: u32 = 3;
/// Dropped-report warnings after the first come once per this many drops.
const DROP_WARNING_EVERY: u64 = 1000;

/// The link's settings, from `[region]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    /// The site this node is.
    pub site: String,
    /// `sha256:<hex>` pin of the region CA.
    pub ca_fingerprint: String,
    /// The one-time join token.
    pub token_file: PathBuf,
    /// Time between reports (before jitter).
    pub heartbeat: Duration,
    /// Heartbeat jitter, percent of the interval either way.
    pub jitter_percent: u32,
    /// Retry ceiling, and the delay after refusals that need an operator.
    pub backoff_max: Duration,
}

impl LinkSettings {
    /// From the configuration.
    pub fn from_config(region: &RegionConfig) -> Self {
        Self {
            site: region.site.clone(),
            ca_fingerprint: region.ca_fingerprint.clone(),
            token_file: region.join_token_file.clone(),
            heartbeat: region.heartbeat_interval(),
            jitter_percent: region.jitter_percent,
            backoff_max: region.backoff_max(),
        }
    }
}

/// Why an attempt of the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The region presented a CA other than the pinned one; nothing was sent.
    #[error(
        "region CA fingerprint mismatch: expected {expected} got {got}; not joining (the join token was not sent)"
    )]
    PinMismatch {
        /// The pin (`region.ca_fingerprint`).
        expected: String,
        /// What the region served.
        got: String,
    },
    /// The enrollment names a CA other than the pinned one.
    #[error("the region's enrollment names CA {got}, not the pinned {expected}; not using it")]
    EnrollmentCa {
        /// The pin.
        expected: String,
        /// The enrollment's CA.
        got: String,
    },
    /// The region refused the join token.
    #[error(
        "the region refused the join token from {path}: {message}; put a valid token for this site there (the site keeps running without the region)"
    )]
    TokenRefused {
        /// The token file.
        path: PathBuf,
        /// The region's explanation.
        message: String,
    },
    /// The node has never joined and has no token to join with.
    #[error(
        "not joined to the region and no join token in {path}; put one there to join (the site keeps running without the region)"
    )]
    NoToken {
        /// The token file.
        path: PathBuf,
    },
    /// The certificate expired (the region was unreachable beyond its lifetime) and there is no token.
    #[error(
        "the node certificate expired at {not_after}; put a new join token in {path} to join again"
    )]
    Expired {
        /// When it expired.
        not_after: Timestamp,
        /// The token file.
        path: PathBuf,
    },
    /// The region acknowledged less than the first report it was sent.
    #[error(
        "the region acknowledged through {acked_through}, before the first report it was sent ({first})"
    )]
    NoProgress {
        /// First `seq` of the batch.
        first: u64,
        /// What the region acknowledged.
        acked_through: u64,
    },
    /// An exchange failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A credential file failed.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The report queue failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A blocking step panicked or was cancelled.
    #[error("region link: a blocking step failed: {0}")]
    Task(String),
}

/// How the link goes on after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A passing problem (network, region outage): exponential backoff with full jitter.
    Backoff,
    /// Needs an operator (token, pin, site, protocol): retried every `backoff_max`.
    Operator,
    /// The site was revoked: never again.
    Never,
}

impl LinkError {
    /// What this failure means for the next attempt.
    pub fn retry(&self) -> Retry {
        match self {
            Self::Transport(TransportError::Refused { code, status, .. }) => match code {
                ErrorCode::SiteRevoked => Retry::Never,
                // Answers about releases follow the site's desired state, which moves on its own.
                ErrorCode::OutOfOrder
                | ErrorCode::Internal
                | ErrorCode::UnknownRelease
                | ErrorCode::ReleaseRefused
                | ErrorCode::ReleaseNotOffered
                // Operator-API answers a node is never sent; were one to arrive, it would be
                // about rollout state, which moves on its own.
                | ErrorCode::UnknownRollout
                | ErrorCode::Conflict => Retry::Backoff,
                // Something in between (a proxy, an overloaded balancer) answered, not the region.
                ErrorCode::Unknown if *status >= 500 || *status == 429 || *status == 408 => {
                    Retry::Backoff
                }
                ErrorCode::InvalidJoinToken
                | ErrorCode::Unauthenticated
                | ErrorCode::UnknownSite
                | ErrorCode::UnsupportedProtocol
                | ErrorCode::BadRequest
                | ErrorCode::Unknown => Retry::Operator,
            },
            Self::Transport(
                TransportError::Unreachable { .. } | TransportError::Malformed { .. },
            )
            | Self::NoProgress { .. }
            | Self::Outbox(_)
            | Self::Task(_) => Retry::Backoff,
            Self::Transport(TransportError::Tls(_))
            | Self::PinMismatch { .. }
            | Self::EnrollmentCa { .. }
            | Self::TokenRefused { .. }
            | Self::NoToken { .. }
            | Self::Expired { .. }
            | Self::Credentials(_) => Retry::Operator,
        }
    }
}

/// The delay before retry number `failures` (from 1): full jitter — `unit` (uniform in [0, 1)) times
/// a ceiling that starts at 1 s and doubles per failure up to `max` — but never below 0.5 s. Full
/// jitter spreads a fleet that lost its region at the same moment over the whole window.
pub fn retry_delay(failures: u32, max: Duration, unit: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let ceiling = RETRY_BASE.saturating_mul(1u32 << exponent).min(max);
    ceiling
        .mul_f64(unit.clamp(0.0, 1.0))
        .max(MIN_RETRY.min(ceiling))
}

/// `interval` varied uniformly by up to `percent` % either way (`unit` uniform in [0, 1)).
pub fn jittered(interval: Duration, percent: u32, unit: f64) -> Duration {
    let spread = f64::from(percent.min(100)) / 100.0;
    interval.mul_f64(1.0 + spread * (2.0 * unit.clamp(0.0, 1.0) - 1.0))
}

/// Runs a blocking step (store, files, health checks, key generation) off the async threads.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, LinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LinkError::Task(e.to_string()))
}

/// The link to the region (see the module).
pub struct Link<T> {
    settings: LinkSettings,
    transport: T,
    files: FederationDir,
    outbox: Outbox,
    observer: Arc<dyn SiteObserver>,
    clock: Arc<dyn Clock>,
    status: Arc<LinkStatus>,
    credentials: Mutex<Option<Credentials>>,
    desired: Mutex<Option<DesiredState>>,
}

impl<T: RegionTransport> Link<T> {
    /// A link over `transport`, keeping its files in `files` and its queue in `outbox`.
    pub fn new(
        settings: LinkSettings,
        transport: T,
        files: FederationDir,
        outbox: Outbox,
        observer: Arc<dyn SiteObserver>,
        clock: Arc<dyn Clock>,
        status: Arc<LinkStatus>,
    ) -> Self {
        Self {
            settings,
            transport,
            files,
            outbox,
            observer,
            clock,
            status,
            credentials: Mutex::new(None),
            desired: Mutex::new(None),
        }
    }

    fn current_credentials(&self) -> Option<Credentials> {
        self.credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_credentials(&self, credentials: &Credentials) {
        self.status
            .credentials(credentials.not_after, credentials.renew_after);
        *self
            .credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(credentials.clone());
    }

    fn desired_generation(&self) -> u64 {
        self.desired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |d| d.generation)
    }

    /// Loads what earlier runs left: credentials, desired state, the queue's length. Returns false
    /// when the site was revoked (the link stays off).
    pub async fn prepare(&self) -> Result<bool, LinkError> {
        let files = self.files.clone();
        if let Some(revocation) = blocking(move || files.revocation()).await?? {
            warn!(
                site = %self.settings.site,
                revoked_at = %revocation.at,
                message = %revocation.message,
                mark = %self.files.path().join(credentials::REVOKED).display(),
                "region link off: the region revoked this site (decommissioned); the site keeps running on its own"
            );
            self.status.revoked(revocation.message);
            return Ok(false);
        }
        let files = self.files.clone();
        match blocking(move || files.load()).await? {
            Ok(Some(credentials)) => {
                info!(
                    site = %credentials.site,
                    not_after = %credentials.not_after,
                    renew_after = %credentials.renew_after,
                    "region link: node credentials loaded"
                );
                self.set_credentials(&credentials);
            }
            Ok(None) => {}
            // Unusable files are not fatal: with a token the node joins again and replaces them.
            Err(err) => error!(%err, "region link: the node credentials cannot be used"),
        }
        let files = self.files.clone();
        match blocking(move || files.load_desired()).await? {
            Ok(desired) => {
                self.status
                    .desired(desired.as_ref().map_or(0, |d| d.generation));
                *self.desired.lock().unwrap_or_else(PoisonError::into_inner) = desired;
            }
            Err(err) => warn!(%err, "region link: the saved desired state cannot be read"),
        }
        let outbox = self.outbox.clone();
        let queued = blocking(move || outbox.len()).await??;
        self.status.queued(queued, 0);
        Ok(true)
    }

    /// Takes one report and queues it (dropping the oldest when the queue is full).
    pub async fn heartbeat(&self) -> Result<Pushed, LinkError> {
        let observer = self.observer.clone();
        let outbox = self.outbox.clone();
        let sent_at = self.clock.now();
        let pushed = blocking(move || {
            let observation = observer.observe();
            outbox.push(|seq| report::build(seq, sent_at, &observation))
        })
        .await??;
        let dropped_before = self.status.snapshot().dropped_reports;
        self.status.queued(pushed.queued, pushed.dropped);
        if pushed.dropped > 0
            && (dropped_before == 0
                || dropped_before / DROP_WARNING_EVERY
                    != (dropped_before + pushed.dropped) / DROP_WARNING_EVERY)
        {
            warn!(
                dropped_total = dropped_before + pushed.dropped,
                queued = pushed.queued,
                "region report queue full (region.max_queued_reports): dropping the oldest reports"
            );
        }
        Ok(pushed)
    }

    /// One exchange with the region: join if needed, deliver the queue, renew when due. The link
    /// counts as up only after the region answered, not after a round with nothing to send.
    pub async fn cycle(&self) -> Result<(), LinkError> {
        let (credentials, joined) = self.ensure_joined().await?;
        let delivered = self.deliver(&credentials).await?;
        let renewed = self.renew_if_due(&credentials).await?;
        if joined || delivered || renewed {
            self.status.succeeded(self.clock.now());
        }
        Ok(())
    }

    /// The credentials to use, joining first when there are none (or only expired ones and a new
    /// token); the flag says whether this call joined.
    async fn ensure_joined(&self) -> Result<(Credentials, bool), LinkError> {
        let current = self.current_credentials();
        if let Some(credentials) = &current
            && !credentials.expired(self.clock.now())
        {
            return Ok((credentials.clone(), false));
        }
        let path = self.settings.token_file.clone();
        let token = blocking(move || read_token(&path)).await??;
        match (token, current) {
            (Some(token), _) => Ok((self.join(&token).await?, true)),
            (None, Some(expired)) => Err(LinkError::Expired {
                not_after: expired.not_after,
                path: self.settings.token_file.clone(),
            }),
            (None, None) => Err(LinkError::NoToken {
                path: self.settings.token_file.clone(),
            }),
        }
    }

    async fn join(&self, token: &Secret) -> Result<Credentials, LinkError> {
        let site = self.settings.site.clone();
        let expected = &self.settings.ca_fingerprint;
        let ca_pem = self.transport.fetch_ca().await?;
        let got = ca_fingerprint(&ca_pem)?;
        if &got != expected {
            return Err(LinkError::PinMismatch {
                expected: expected.clone(),
                got,
            });
        }
        let key = {
            let site = site.clone();
            blocking(move || new_node_key(&site)).await??
        };
        let files = self.files.clone();
        let staged = key.clone();
        blocking(move || files.stage_key(&staged)).await??;
        let request = JoinRequest {
            site: site.clone(),
            token: token.expose().to_owned(),
            csr_pem: key.csr_pem,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let answer = self.transport.join(&ca_pem, &request).await;
        drop(request);
        let enrollment = match answer {
            Ok(enrollment) => enrollment,
            Err(err) => {
                self.discard_staged().await;
                return Err(match err {
                    TransportError::Refused {
                        code: ErrorCode::InvalidJoinToken,
                        message,
                        ..
                    } => LinkError::TokenRefused {
                        path: self.settings.token_file.clone(),
                        message,
                    },
                    other => other.into(),
                });
            }
        };
        let enrolled_ca = ca_fingerprint(&enrollment.ca_pem)?;
        if &enrolled_ca != expected {
            self.discard_staged().await;
            return Err(LinkError::EnrollmentCa {
                expected: expected.clone(),
                got: enrolled_ca,
            });
        }
        let files = self.files.clone();
        let committed = blocking(move || files.commit(&site, &enrollment)).await?;
        let credentials = match committed {
            Ok(credentials) => credentials,
            Err(err) => {
                self.discard_staged().await;
                return Err(err.into());
            }
        };
        self.set_credentials(&credentials);
        info!(
            site = %credentials.site,
            not_after = %credentials.not_after,
            renew_after = %credentials.renew_after,
            dir = %self.files.path().display(),
            "joined the region"
        );
        let path = self.settings.token_file.clone();
        match blocking(move || remove_token(&path)).await? {
            Ok(()) => info!(path = %self.settings.token_file.display(), "used join token deleted"),
            Err(err) => warn!(%err, "cannot delete the used join token"),
        }
        Ok(credentials)
    }

    async fn discard_staged(&self) {
        let files = self.files.clone();
        match blocking(move || files.discard_staged()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(%err, "region link: cannot remove staged credentials"),
            Err(err) => warn!(%err, "region link: cannot remove staged credentials"),
        }
    }

    /// Sends the whole queue, batch by batch, oldest first; true when the region acknowledged any.
    async fn deliver(&self, credentials: &Credentials) -> Result<bool, LinkError> {
        let mut realigns = 0;
        let mut acknowledged = false;
        loop {
            let outbox = self.outbox.clone();
            let batch =
                blocking(move || outbox.next_batch(MAX_REPORTS_PER_BATCH, BATCH_BYTES)).await??;
            let (Some(first), Some(last)) =
                (batch.first().map(|r| r.seq), batch.last().map(|r| r.seq))
            else {
                return Ok(acknowledged);
            };
            let sent = self
                .transport
                .send_reports(credentials, &ReportBatch { reports: batch })
                .await;
            match sent {
                Ok(ack) => {
                    if ack.acked_through < first {
                        return Err(LinkError::NoProgress {
                            first,
                            acked_through: ack.acked_through,
                        });
                    }
                    let outbox = self.outbox.clone();
                    let acked = blocking(move || outbox.acknowledge(ack.acked_through)).await??;
                    if let Some(next) = acked.jumped_to {
                        warn!(
                            acked_through = ack.acked_through,
                            last_sent = last,
                            continuing_at = next,
                            "the region holds more reports than this node numbered (the node's store is older than the region's record); numbering continues after the region's"
                        );
                    }
                    acknowledged = true;
                    self.status.acknowledged(ack.acked_through, acked.queued);
                    self.sync_desired(credentials, ack.desired_generation)
                        .await?;
                }
                Err(TransportError::Refused {
                    code: ErrorCode::OutOfOrder,
                    expected_seq: Some(expected),
                    ..
                }) if realigns < MAX_REALIGNS => {
                    realigns += 1;
                    let outbox = self.outbox.clone();
                    match blocking(move || outbox.realign(expected)).await?? {
                        Realigned::Dropped { count } => info!(
                            expected,
                            dropped = count,
                            "the region already holds the oldest queued reports; dropped them"
                        ),
                        Realigned::Renumbered { from, to, count } => warn!(
                            expected,
                            from,
                            to,
                            count,
                            "the region expects seq {to} but the queue started at {from} (the region lost reports, or holds more than this node numbered); renumbered the queue from {to}"
                        ),
                        Realigned::Unchanged => {}
                    }
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Fetches and saves the desired state when the region's generation is ahead of ours.
    async fn sync_desired(
        &self,
        credentials: &Credentials,
        announced: u64,
    ) -> Result<(), LinkError> {
        let held = self.desired_generation();
        if announced <= held {
            return Ok(());
        }
        let desired = self.transport.desired(credentials).await?;
        let previous = self
            .desired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        let files = self.files.clone();
        let saved = desired.clone();
        blocking(move || files.save_desired(&saved)).await??;
        let changed_labels: Vec<&String> = desired
            .labels
            .iter()
            .filter(|(k, v)| previous.labels.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .chain(
                previous
                    .labels
                    .keys()
                    .filter(|k| !desired.labels.contains_key(*k)),
            )
            .collect();
        info!(
            generation = desired.generation,
            previous_generation = previous.generation,
            labels = ?desired.labels,
            changed_labels = ?changed_labels,
            target_os_version = ?desired.target_os_version,
            target_os_version_changed = desired.target_os_version != previous.target_os_version,
            path = %self.files.path().join(credentials::DESIRED).display(),
            "desired state from the region changed"
        );
        self.status.desired(desired.generation);
        *self.desired.lock().unwrap_or_else(PoisonError::into_inner) = Some(desired);
        Ok(())
    }

    /// Renews the certificate (new key, new CSR) once the region's `renew_after` has passed; true
    /// when it did.
    async fn renew_if_due(&self, credentials: &Credentials) -> Result<bool, LinkError> {
        if !credentials.renewal_due(self.clock.now()) {
            return Ok(false);
        }
        let site = credentials.site.clone();
        let key = {
            let site = site.clone();
            blocking(move || new_node_key(&site)).await??
        };
        let files = self.files.clone();
        let staged = key.clone();
        blocking(move || files.stage_key(&staged)).await??;
        let answer = self
            .transport
            .renew(
                credentials,
                &RenewRequest {
                    csr_pem: key.csr_pem,
                },
            )
            .await;
        let enrollment = match answer {
            Ok(enrollment) => enrollment,
            Err(err) => {
                self.discard_staged().await;
                return Err(err.into());
            }
        };
        let files = self.files.clone();
        let renewed = match blocking(move || files.commit(&site, &enrollment)).await? {
            Ok(renewed) => renewed,
            Err(err) => {
                self.discard_staged().await;
                return Err(err.into());
            }
        };
        self.set_credentials(&renewed);
        info!(
            not_after = %renewed.not_after,
            renew_after = %renewed.renew_after,
            "renewed the node certificate"
        );
        Ok(true)
    }

    /// Decides what follows a failed attempt and says so; `None` when the link must stop.
    async fn after_failure(&self, err: &LinkError, failures: u32) -> Option<Duration> {
        let text = err.to_string();
        match err.retry() {
            Retry::Never => {
                error!(
                    site = %self.settings.site,
                    %err,
                    "the region revoked this site (decommissioned): region link stopped for good; the site keeps running on its own"
                );
                let files = self.files.clone();
                let revocation = Revocation {
                    at: self.clock.now(),
                    message: text.clone(),
                };
                match blocking(move || files.mark_revoked(&revocation)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(err = %e, "cannot record the revocation"),
                    Err(e) => warn!(err = %e, "cannot record the revocation"),
                }
                self.status.revoked(text);
                None
            }
            Retry::Operator => {
                let delay = jittered(
                    self.settings.backoff_max,
                    self.settings.jitter_percent,
                    rand::random(),
                );
                error!(%err, failures, retry_in_secs = delay.as_secs(), "region link: needs attention");
                self.status.failed(text, failures, delay.as_secs());
                Some(delay)
            }
            Retry::Backoff => {
                let delay = retry_delay(failures, self.settings.backoff_max, rand::random());
                warn!(%err, failures, retry_in_secs = delay.as_secs_f64(), "region link down; retrying");
                self.status.failed(text, failures, delay.as_secs());
                Some(delay)
            }
        }
    }

    /// Runs the link until `shutdown` or until the region revokes the site.
    pub async fn run(self, shutdown: CancellationToken) {
        match self.prepare().await {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                error!(%err, "region link cannot start; the site runs without it");
                return;
            }
        }
        info!(
            site = %self.settings.site,
            joined = self.current_credentials().is_some(),
            "region link started"
        );
        let stop = shutdown.child_token();
        let wake = Notify::new();
        tokio::join!(self.heartbeats(&stop, &wake), self.deliveries(&stop, &wake));
    }

    async fn heartbeats(&self, stop: &CancellationToken, wake: &Notify) {
        loop {
            if let Err(err) = self.heartbeat().await {
                warn!(%err, "region link: cannot take a report");
            }
            wake.notify_one();
            let pause = jittered(
                self.settings.heartbeat,
                self.settings.jitter_percent,
                rand::random(),
            );
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn deliveries(&self, stop: &CancellationToken, wake: &Notify) {
        let mut failures = 0u32;
        let mut ever_up = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = wake.notified() => {}
            }
            loop {
                let result = tokio::select! {
                    () = stop.cancelled() => return,
                    result = self.cycle() => result,
                };
                let Err(err) = result else {
                    if !ever_up || failures > 0 {
                        let s = self.status.snapshot();
                        info!(
                            after_failures = failures,
                            acked_through = s.acked_through,
                            queued = s.queued_reports,
                            "region link up"
                        );
                    }
                    ever_up = true;
                    failures = 0;
                    break;
                };
                failures = failures.saturating_add(1);
                let Some(delay) = self.after_failure(&err, failures).await else {
                    stop.cancel();
                    return;
                };
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The link's directory under `state_dir`.
pub fn federation_dir(state_dir: &Path) -> FederationDir {
    FederationDir::new(state_dir.join(FEDERATION_DIR))
}
