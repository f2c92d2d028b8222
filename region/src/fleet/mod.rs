//! The fleet: the one domain layer behind the node endpoints, the operator REST API, the dashboard and
//! the CLI.
//!
//! It decides who may join (a one-time token bound to a site, stored only as a hash), what a node may
//! do (its verified certificate names its site; a revoked or unknown certificate is refused on every
//! request, not just at the handshake), and what a report must look like before anything is stored.

pub mod status;

use crate::ca::{CaError, IssuedCertificate, RegionCa};
use crate::store::{
    CertificateRecord, DesiredChange, Site, Store, StoreError, StoredReport, TokenRefusal,
};
use jiff::{SignedDuration, Timestamp};
use scs_edge_proto::{
    DesiredState, Enrollment, JoinRequest, MAX_REPORTS_PER_BATCH, ReportAck, ReportBatch,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The source of "now": real time in the service, a settable clock in tests of expiry.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock tests set and move on.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ManualClock(std::sync::Mutex<Timestamp>);

#[cfg(test)]
impl ManualClock {
    /// Stopped at `at`.
    pub(crate) fn new(at: Timestamp) -> Self {
        Self(std::sync::Mutex::new(at))
    }

    /// Moves it on by `by`.
    pub(crate) fn advance(&self, by: SignedDuration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += by;
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A request the fleet refused, or a failure underneath it.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A site name outside `[a-z0-9][a-z0-9-]{0,62}`.
    #[error(
        "invalid site name {0:?}: use 1 to 63 lower-case letters, digits and '-', starting with a letter or digit"
    )]
    InvalidSiteName(String),
    /// A label key or value that is empty, too long or has control characters.
    #[error("invalid label {0:?}")]
    InvalidLabel(String),
    /// An input outside its allowed range (token lifetime, OS version string, …).
    #[error("{0}")]
    InvalidInput(String),
    /// The join token was refused; the reason is for the region's log, the node sees one message.
    #[error("join token refused ({0})")]
    TokenRefused(TokenRefusal),
    /// The node's certificate is missing, unknown, or names another site.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The site is decommissioned and its certificates revoked.
    #[error("site {0} is decommissioned")]
    Revoked(String),
    /// No such site.
    #[error("no site named {0}")]
    UnknownSite(String),
    /// A site with this name exists.
    #[error("site {0} already exists")]
    SiteExists(String),
    /// A report batch broke the rules (size, limits, not consecutive).
    #[error("invalid report batch: {0}")]
    BadReport(String),
    /// Reports do not continue the stored sequence.
    #[error("reports out of order: the next expected seq is {expected}")]
    OutOfOrder {
        /// The next `seq` the region accepts.
        expected: u64,
    },
    /// The CSR was refused.
    #[error(transparent)]
    Csr(CaError),
    /// The CA failed.
    #[error("CA: {0}")]
    Ca(CaError),
    /// The store failed.
    #[error("store: {0}")]
    Store(StoreError),
}

impl From<StoreError> for FleetError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::SiteExists(name) => Self::SiteExists(name),
            StoreError::UnknownSite(name) => Self::UnknownSite(name),
            StoreError::SiteDecommissioned(name) => Self::Revoked(name),
            StoreError::TokenRefused(reason) => Self::TokenRefused(reason),
            StoreError::OutOfOrder { expected } => Self::OutOfOrder { expected },
            other => Self::Store(other),
        }
    }
}

impl From<CaError> for FleetError {
    fn from(error: CaError) -> Self {
        match error {
            CaError::BadCsr(_) => Self::Csr(error),
            other => Self::Ca(other),
        }
    }
}

/// A node as its verified client certificate identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Certificate serial (lower-case hex).
    pub serial: String,
    /// The site from the certificate's `urn:scs-edge:site:` URI SAN.
    pub site: String,
}

/// A freshly created join token: the plaintext exists only in this value.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The site it admits.
    pub site: String,
    /// The secret, to hand to the site's installer once.
    pub token: String,
    /// When it stops working.
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("site", &self.site)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A site with its recent history, for the detail views.
#[derive(Debug, Clone)]
pub struct SiteDetail {
    /// The site.
    pub site: Site,
    /// The newest reports, newest first.
    pub history: Vec<StoredReport>,
}

/// Settings the fleet applies to enrollment.
#[derive(Debug, Clone, Copy)]
pub struct EnrollmentPolicy {
    /// Node certificate lifetime.
    pub certificate_lifetime: SignedDuration,
    /// Default join token lifetime.
    pub token_lifetime: SignedDuration,
}

/// The fleet service.
#[derive(Clone)]
pub struct Fleet {
    store: Store,
    ca: Arc<RegionCa>,
    clock: Arc<dyn Clock>,
    policy: EnrollmentPolicy,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("store", &self.store)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// Longest join token lifetime an operator may ask for: a token is a bearer secret in transit.
pub const MAX_TOKEN_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 30);
/// How many history entries the detail view shows.
pub const HISTORY_LIMIT: u32 = 200;
const TOKEN_PREFIX: &str = "scsj_";

impl Fleet {
    /// Puts the pieces together.
    pub fn new(
        store: Store,
        ca: Arc<RegionCa>,
        clock: Arc<dyn Clock>,
        policy: EnrollmentPolicy,
    ) -> Self {
        Self {
            store,
            ca,
            clock,
            policy,
        }
    }

    /// The store (for engine-level work such as pruning).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The CA.
    pub fn ca(&self) -> &RegionCa {
        &self.ca
    }

    /// Now, by the fleet's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Adds a pending site.
    pub async fn add_site(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Site, FleetError> {
        validate_site_name(name)?;
        validate_labels(&labels)?;
        Ok(self.store.add_site(name, &labels, self.clock.now()).await?)
    }

    /// Every site, by name.
    pub async fn sites(&self) -> Result<Vec<Site>, FleetError> {
        Ok(self.store.list_sites().await?)
    }

    /// One site with its recent report history.
    pub async fn site(&self, name: &str) -> Result<SiteDetail, FleetError> {
        validate_site_name(name)?;
        let site = self
            .store
            .site(name)
            .await?
            .ok_or_else(|| FleetError::UnknownSite(name.to_owned()))?;
        let history = self.store.recent_reports(name, HISTORY_LIMIT).await?;
        Ok(SiteDetail { site, history })
    }

    /// Decommissions a site: its certificates are revoked at once (every node request checks) and its
    /// unused tokens void. The record stays for the audit trail.
    pub async fn remove_site(&self, name: &str) -> Result<Site, FleetError> {
        validate_site_name(name)?;
        Ok(self.store.decommission_site(name, self.clock.now()).await?)
    }

    /// Creates a one-time join token for a site; only its hash is stored.
    pub async fn create_join_token(
        &self,
        site: &str,
        lifetime: Option<SignedDuration>,
    ) -> Result<JoinToken, FleetError> {
        validate_site_name(site)?;
        let lifetime = lifetime.unwrap_or(self.policy.token_lifetime);
        if lifetime <= SignedDuration::ZERO || lifetime > MAX_TOKEN_LIFETIME {
            return Err(FleetError::InvalidInput(format!(
                "token lifetime must be between 1 second and {} hours",
                MAX_TOKEN_LIFETIME.as_hours()
            )));
        }
        use base64::Engine as _;
        let secret: [u8; 32] = rand::random();
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let now = self.clock.now();
        let expires_at = now + lifetime;
        self.store
            .add_join_token(&hash_token(&token), site, expires_at, now)
            .await?;
        Ok(JoinToken {
            site: site.to_owned(),
            token,
            expires_at,
        })
    }

    /// A node joins: the token is checked and consumed and the certificate recorded in one
    /// transaction; a refused join stores nothing and returns no certificate.
    pub async fn join(&self, request: &JoinRequest) -> Result<Enrollment, FleetError> {
        validate_site_name(&request.site)?;
        if request.token.len() > 256 || request.agent_version.len() > 128 {
            return Err(FleetError::InvalidInput(
                "token or agent_version too long".into(),
            ));
        }
        let now = self.clock.now();
        let issued = self.ca.sign_node_csr(
            &request.csr_pem,
            &request.site,
            now,
            self.policy.certificate_lifetime,
        )?;
        let record = record_of(&issued, &request.site);
        self.store
            .join(&hash_token(&request.token), &request.site, &record, now)
            .await?;
        Ok(self.enrollment(&request.site, issued))
    }

    /// Renews a node's certificate for a fresh key; the node authenticated with its current one.
    pub async fn renew(
        &self,
        node: &NodeIdentity,
        csr_pem: &str,
    ) -> Result<Enrollment, FleetError> {
        let now = self.clock.now();
        let issued =
            self.ca
                .sign_node_csr(csr_pem, &node.site, now, self.policy.certificate_lifetime)?;
        self.store
            .add_certificate(&record_of(&issued, &node.site))
            .await?;
        Ok(self.enrollment(&node.site, issued))
    }

    /// Checks, on every node request, that the certificate the TLS layer verified is one this region
    /// issued, for the site the request is about, and not revoked.
    pub async fn authorize_node(
        &self,
        node: &NodeIdentity,
        path_site: &str,
    ) -> Result<(), FleetError> {
        if node.site != path_site {
            return Err(FleetError::Unauthenticated(format!(
                "the client certificate is for site {}, not {path_site}",
                node.site
            )));
        }
        let record = self.store.certificate(&node.serial).await?.ok_or_else(|| {
            FleetError::Unauthenticated(
                "the client certificate was not issued by this region".into(),
            )
        })?;
        if record.site != node.site {
            return Err(FleetError::Unauthenticated(
                "the client certificate does not match its record".into(),
            ));
        }
        if record.revoked_at.is_some() {
            return Err(FleetError::Revoked(node.site.clone()));
        }
        if record.not_after <= self.clock.now() {
            return Err(FleetError::Unauthenticated(
                "the client certificate has expired".into(),
            ));
        }
        Ok(())
    }

    /// Stores a batch of reports from an authorized node.
    pub async fn accept_reports(
        &self,
        node: &NodeIdentity,
        batch: &ReportBatch,
    ) -> Result<ReportAck, FleetError> {
        if batch.reports.is_empty() || batch.reports.len() > MAX_REPORTS_PER_BATCH {
            return Err(FleetError::BadReport(format!(
                "a batch holds 1 to {MAX_REPORTS_PER_BATCH} reports"
            )));
        }
        for (index, report) in batch.reports.iter().enumerate() {
            report
                .validate()
                .map_err(|reason| FleetError::BadReport(format!("report {index}: {reason}")))?;
        }
        if batch
            .reports
            .windows(2)
            .any(|pair| pair[1].seq != pair[0].seq + 1)
        {
            return Err(FleetError::BadReport(
                "report seq numbers must be consecutive".into(),
            ));
        }
        Ok(self
            .store
            .append_reports(&node.site, &batch.reports, self.clock.now())
            .await?)
    }

    /// The desired state of an authorized node's site.
    pub async fn desired(&self, node: &NodeIdentity) -> Result<DesiredState, FleetError> {
        let site = self
            .store
            .site(&node.site)
            .await?
            .ok_or_else(|| FleetError::UnknownSite(node.site.clone()))?;
        Ok(site.desired)
    }

    /// Sets how `site` gets releases: online from the region, or on a stick (air-gapped).
    pub async fn set_delivery(
        &self,
        site: &str,
        delivery: crate::store::Delivery,
    ) -> Result<(), FleetError> {
        validate_site_name(site)?;
        Ok(self.store.set_delivery(site, delivery).await?)
    }

    /// Changes a site's desired state (labels, target OS version).
    pub async fn change_desired(
        &self,
        site: &str,
        change: &DesiredChange,
    ) -> Result<DesiredState, FleetError> {
        validate_site_name(site)?;
        if let Some(labels) = &change.labels {
            validate_labels(labels)?;
        }
        if let Some(Some(version)) = &change.target_os_version
            && (version.is_empty()
                || version.len() > 64
                || !version
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c)))
        {
            return Err(FleetError::InvalidInput(format!(
                "invalid OS version {version:?}"
            )));
        }
        let mut change = change.clone();
        if let Some(Some(window)) = &mut change.maintenance_window {
            // Stored in its canonical form: what the node parses and reports back is the same text.
            *window = scs_edge_proto::window::MaintenanceWindow::parse(window)
                .map_err(|err| {
                    FleetError::InvalidInput(format!(
                        "invalid maintenance window {window:?}: {err}"
                    ))
                })?
                .to_string();
        }
        Ok(self.store.change_desired(site, &change).await?)
    }

    fn enrollment(&self, site: &str, issued: IssuedCertificate) -> Enrollment {
        let lifetime = issued.not_after.duration_since(issued.not_before);
        Enrollment {
            site: site.to_owned(),
            certificate_pem: issued.pem,
            ca_pem: self.ca.certificate_pem().to_owned(),
            not_after: issued.not_after,
            renew_after: issued.not_before + lifetime / 2,
        }
    }
}

fn record_of(issued: &IssuedCertificate, site: &str) -> CertificateRecord {
    CertificateRecord {
        serial: issued.serial.clone(),
        site: site.to_owned(),
        not_after: issued.not_after,
        revoked_at: None,
    }
}

/// SHA-256 (hex) of a join token: what the store keeps instead of the token.
pub fn hash_token(token: &str) -> String {
    crate::ca::to_hex(&Sha256::digest(token.as_bytes()))
}

/// Site names become URL path segments, certificate SANs and DNS-like labels: one strict rule.
pub fn validate_site_name(name: &str) -> Result<(), FleetError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(FleetError::InvalidSiteName(name.chars().take(80).collect()))
    }
}

/// The names the region gives things (sites, rollouts, waves): 1 to 63 lower-case letters, digits
/// and '-', not starting with '-' — a DNS label, so a name fits a certificate and a URL as it is.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), FleetError> {
    if labels.len() > 64 {
        return Err(FleetError::InvalidLabel("more than 64 labels".into()));
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= 63
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        let value_ok = value.len() <= 255 && !value.chars().any(char::is_control);
        if !key_ok || !value_ok {
            return Err(FleetError::InvalidLabel(
                format!("{key}={value}").chars().take(80).collect(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
