//! The fleet's durable state: sites, join tokens, issued certificates, the report history and desired
//! state.
//!
//! Two engines behind one contract: SQLite (embedded — a region for a handful of sites, or the lab,
//! needs nothing installed) and PostgreSQL (real fleets), chosen by the database URL
//! (`sqlite:///path/region.db`, `sqlite::memory:`, `postgres://…`). Both apply the same migrations in
//! `migrations/`, written in the SQL both understand, and both are exercised by the same tests.
//!
//! Every operation that checks and changes state (consuming a join token, appending reports,
//! decommissioning) is one transaction, so two racing requests can never both win and a crash never
//! leaves half of it behind.

mod columns;
#[cfg(test)]
pub(crate) mod fixtures;
mod migrations;
mod postgres;
mod rules;
mod sqlite;
#[cfg(test)]
mod tests;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use jiff::Timestamp;
use scs_edge_proto::release::ReleaseManifest;
use scs_edge_proto::{DesiredState, Report, ReportAck};
use std::collections::BTreeMap;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one this build understands.
    #[error("unsupported database URL {0:?}: use sqlite:///path, sqlite::memory: or postgres://…")]
    UnsupportedUrl(String),
    /// A site with this name already exists.
    #[error("site {0} already exists")]
    SiteExists(String),
    /// No site with this name.
    #[error("no site named {0}")]
    UnknownSite(String),
    /// The site is decommissioned; nothing may change it any more.
    #[error("site {0} is decommissioned")]
    SiteDecommissioned(String),
    /// The join token cannot be used (the reason is deliberately coarse towards the caller; the
    /// variant says which for the region's log).
    #[error("join token refused: {0}")]
    TokenRefused(TokenRefusal),
    /// The reports do not continue the stored sequence.
    #[error("reports out of order: the next expected seq is {expected}")]
    OutOfOrder {
        /// The next `seq` the store would accept.
        expected: u64,
    },
    /// No release with this version.
    #[error("no release {0}")]
    UnknownRelease(String),
    /// A rollout with this name exists.
    #[error("rollout {0} already exists")]
    RolloutExists(String),
    /// No rollout with this name.
    #[error("no rollout named {0}")]
    UnknownRollout(String),
    /// Sites a new rollout would take are in an active rollout already.
    #[error("sites {} are in rollout {rollout}, which is still active", .sites.join(", "))]
    RolloutOverlap {
        /// The active rollout.
        rollout: String,
        /// The sites in both.
        sites: Vec<String>,
    },
    /// The fleet-wide rollout switch is engaged: a step that offers is refused.
    #[error("the rollout switch is engaged (by {by}: {reason}); nothing is offered")]
    SwitchEngaged {
        /// Who engaged it.
        by: String,
        /// Why.
        reason: String,
    },
    /// The rollout changed since the step was computed from it.
    #[error("rollout {0} changed meanwhile; computed again at the next step")]
    RolloutChanged(String),
    /// The database was migrated by a newer region: this build would misread or corrupt it (a
    /// downgrade needs the matching database backup, not an older binary on the newer schema).
    #[error(
        "database schema version {found} is newer than this region understands ({supported}); refusing to use it"
    )]
    SchemaTooNew {
        /// The version recorded in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The engine failed (connection lost, disk full, constraint the contract did not expect).
    #[error("database error during {operation}: {message}")]
    Database {
        /// What the store was doing.
        operation: &'static str,
        /// The engine's message.
        message: String,
    },
}

/// Why a join token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No token with this hash exists (forged, or already pruned).
    Unknown,
    /// Past its expiry.
    Expired,
    /// Already consumed by an earlier join.
    AlreadyUsed,
    /// Issued for a different site.
    OtherSite,
}

impl std::fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unknown => "unknown token",
            Self::Expired => "token expired",
            Self::AlreadyUsed => "token already used",
            Self::OtherSite => "token issued for another site",
        })
    }
}

/// Where a site is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteState {
    /// Added by an operator, no node has joined yet.
    Pending,
    /// A node joined; it holds a certificate.
    Active,
    /// Removed: every certificate revoked, tokens void. The row stays for the audit trail.
    Decommissioned,
}

impl SiteState {
    /// The stored (and displayed) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Decommissioned => "decommissioned",
        }
    }

    /// Parses [`SiteState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "active" => Some(Self::Active),
            "decommissioned" => Some(Self::Decommissioned),
            _ => None,
        }
    }
}

/// A site as operators see it: identity, lifecycle, the latest report and the desired state.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Unique name (`[a-z0-9][a-z0-9-]{0,62}`).
    pub name: String,
    /// Lifecycle state.
    pub state: SiteState,
    /// When an operator added it.
    pub created_at: Timestamp,
    /// When a node joined (first certificate issued).
    pub joined_at: Option<Timestamp>,
    /// When the region last received a report (receive time, not the report's own time).
    pub last_seen: Option<Timestamp>,
    /// The latest report, as received (None before the first heartbeat).
    pub last_report: Option<Report>,
    /// Highest stored report sequence number (0 = none yet).
    pub last_seq: u64,
    /// Desired state (labels, target OS version) and its generation.
    pub desired: DesiredState,
    /// How it gets releases.
    pub delivery: Delivery,
}

/// How a site gets OS releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// From the region's repository, over its link.
    #[default]
    Online,
    /// On a stick an operator carries there: an air-gapped site.
    Manual,
}

impl Delivery {
    /// The stored and displayed form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Manual => "manual",
        }
    }

    /// Reads the stored form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "online" => Some(Self::Online),
            "manual" => Some(Self::Manual),
            _ => None,
        }
    }
}

/// A stored report with its receive time: the history behind the dashboard's timeline and gaps.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReport {
    /// When the region stored it (a queued report arrives long after its `sent_at`).
    pub received_at: Timestamp,
    /// The report.
    pub report: Report,
}

/// A node certificate the region issued, as the per-request revocation check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// Certificate serial number, lower-case hex without separators.
    pub serial: String,
    /// The site it names.
    pub site: String,
    /// Its last valid instant.
    pub not_after: Timestamp,
    /// When it was revoked (site decommissioned), if it was.
    pub revoked_at: Option<Timestamp>,
}

/// Whether sites may be offered a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseState {
    /// Published and served.
    Available,
    /// Withdrawn by an operator: offered to no site any more.
    Withdrawn,
}

impl ReleaseState {
    /// The stored (and displayed) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Withdrawn => "withdrawn",
        }
    }

    /// Parses [`ReleaseState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "available" => Some(Self::Available),
            "withdrawn" => Some(Self::Withdrawn),
            _ => None,
        }
    }
}

/// A release the region mirrors, as operators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseRecord {
    /// The signed manifest; its version is the record's key.
    pub manifest: ReleaseManifest,
    /// Whether sites may be offered it.
    pub state: ReleaseState,
    /// When it was published to the region.
    pub published_at: Timestamp,
    /// Who published it (an operator, or `cli` for the host's own CLI).
    pub published_by: String,
    /// Who withdrew it, when and why.
    pub withdrawal: Option<Withdrawal>,
}

/// An operator's withdrawal of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub by: String,
    /// Why, in the operator's words.
    pub reason: String,
}

/// A rollout as stored: its plan and state are the rollouts domain's (JSON), the rest the store's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRecord {
    /// Unique name.
    pub name: String,
    /// The release it rolls out.
    pub target_version: String,
    /// The plan, as the domain serialised it.
    pub plan: String,
    /// The state, as the domain serialised it.
    pub state: String,
    /// Still offering or following sites.
    pub active: bool,
    /// Moves with every saved step.
    pub revision: u64,
    /// When an operator created it.
    pub created_at: Timestamp,
    /// Who.
    pub created_by: String,
    /// When a step last changed it.
    pub updated_at: Timestamp,
}

/// One step of a rollout to save: its new state and the desired-state changes it decided, applied
/// together or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutStep {
    /// The revision the step was computed from.
    pub from_revision: u64,
    /// The new state (JSON).
    pub state: String,
    /// Whether the rollout stays active.
    pub active: bool,
    /// A new target and the plan naming it (an operator pointed the rollout at a fixed
    /// release); applied before the offers, which then name it.
    pub retarget: Option<Retarget>,
    /// Sites whose desired OS version becomes the rollout's target.
    pub offer: Vec<String>,
    /// Sites whose desired OS version goes back to what it was before the offer.
    pub take_back: Vec<String>,
    /// When.
    pub at: Timestamp,
}

/// A rollout pointed at another release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retarget {
    /// The release, published.
    pub version: String,
    /// The plan naming it (JSON).
    pub plan: String,
}

/// The fleet-wide rollout switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutSwitch {
    /// No rollout offers anything while engaged.
    pub engaged: bool,
    /// When it last changed (the epoch if never).
    pub changed_at: Timestamp,
    /// Who changed it.
    pub changed_by: String,
    /// Why, in their words.
    pub reason: String,
}

/// Changes to a site's desired state; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredChange {
    /// Replace the labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Set (`Some(Some(v))`) or clear (`Some(None)`) the target OS version.
    pub target_os_version: Option<Option<String>>,
    /// Set or clear the maintenance window (validated by the caller).
    pub maintenance_window: Option<Option<String>>,
}

/// The store, on whichever engine the URL chose. An enum rather than a trait object: two engines, both
/// real, and every call site stays `async` without boxing.
#[derive(Clone)]
pub enum Store {
    /// Embedded SQLite.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PostgresStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.engine())
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Sqlite($s) => $call.await,
            Store::Postgres($s) => $call.await,
        }
    };
}

impl Store {
    /// Opens (creating when needed) the database the URL names and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(PostgresStore::open(url).await?))
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            Ok(Self::Sqlite(SqliteStore::open(path).await?))
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }

    /// `sqlite` or `postgresql`, for logs and benchmark labels.
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgresql",
        }
    }

    /// Adds a pending site with the given labels (desired generation 1).
    pub async fn add_site(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        now: Timestamp,
    ) -> Result<Site, StoreError> {
        dispatch!(self, s => s.add_site(name, labels, now))
    }

    /// Every site, decommissioned ones included, ordered by name.
    pub async fn list_sites(&self) -> Result<Vec<Site>, StoreError> {
        dispatch!(self, s => s.list_sites())
    }

    /// One site, or `None`.
    pub async fn site(&self, name: &str) -> Result<Option<Site>, StoreError> {
        dispatch!(self, s => s.site(name))
    }

    /// Decommissions a site in one transaction: state → decommissioned, every certificate of it
    /// revoked at `now`, every unused join token of it deleted. Idempotent for an already
    /// decommissioned site; `UnknownSite` when there is none.
    pub async fn decommission_site(&self, name: &str, now: Timestamp) -> Result<Site, StoreError> {
        dispatch!(self, s => s.decommission_site(name, now))
    }

    /// Stores a join token's SHA-256 hash (hex) for `site`, valid until `expires_at`. The plaintext is
    /// never stored. `UnknownSite` / `SiteDecommissioned` when the site cannot take a token.
    pub async fn add_join_token(
        &self,
        token_hash: &str,
        site: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.add_join_token(token_hash, site, expires_at, now))
    }

    /// Consumes a join token and records the certificate issued for it, in one transaction: the
    /// token must exist, be for `site`, be unexpired and unused, and the site must not be
    /// decommissioned; then the token is marked used, the certificate recorded, and the site set
    /// active (`joined_at` = now when first). On any refusal nothing changes.
    pub async fn join(
        &self,
        token_hash: &str,
        site: &str,
        certificate: &CertificateRecord,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.join(token_hash, site, certificate, now))
    }

    /// Records a renewed certificate for an active site (the old one stays valid until it expires).
    pub async fn add_certificate(&self, certificate: &CertificateRecord) -> Result<(), StoreError> {
        dispatch!(self, s => s.add_certificate(certificate))
    }

    /// The certificate with this serial, or `None` when the region never issued it.
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        dispatch!(self, s => s.certificate(serial))
    }

    /// Appends reports in one transaction. Reports with `seq <= last_seq` are duplicates of stored
    /// ones (a re-send after a lost answer) and are skipped; the first new one must be `last_seq + 1`
    /// and the rest consecutive, else `OutOfOrder { expected: last_seq + 1 }` and nothing is stored.
    /// Updates the site's `last_seen` (= `now`), `last_report` and `last_seq`. The ack carries the
    /// new `last_seq` and the desired generation.
    pub async fn append_reports(
        &self,
        site: &str,
        reports: &[Report],
        now: Timestamp,
    ) -> Result<ReportAck, StoreError> {
        dispatch!(self, s => s.append_reports(site, reports, now))
    }

    /// The newest `limit` stored reports of a site, newest first.
    pub async fn recent_reports(
        &self,
        site: &str,
        limit: u32,
    ) -> Result<Vec<StoredReport>, StoreError> {
        dispatch!(self, s => s.recent_reports(site, limit))
    }

    /// Applies a desired-state change and bumps the generation (only when something changed).
    pub async fn change_desired(
        &self,
        site: &str,
        change: &DesiredChange,
    ) -> Result<DesiredState, StoreError> {
        dispatch!(self, s => s.change_desired(site, change))
    }

    /// Records published releases in one transaction; versions already recorded stay as they are
    /// (a publication re-run after a crash completes the rows). Returns how many were new.
    pub async fn add_releases(&self, releases: &[ReleaseRecord]) -> Result<u64, StoreError> {
        dispatch!(self, s => s.add_releases(releases))
    }

    /// Every recorded release, in no particular order.
    pub async fn releases(&self) -> Result<Vec<ReleaseRecord>, StoreError> {
        dispatch!(self, s => s.releases())
    }

    /// Marks a release withdrawn; a release withdrawn already keeps its first withdrawal (the call is
    /// idempotent). `UnknownRelease` when there is none.
    pub async fn withdraw_release(
        &self,
        version: &str,
        withdrawal: &Withdrawal,
    ) -> Result<ReleaseRecord, StoreError> {
        dispatch!(self, s => s.withdraw_release(version, withdrawal))
    }

    /// Creates a rollout over `sites` in one transaction. `RolloutExists`, `UnknownRelease`,
    /// `UnknownSite`, or `RolloutOverlap` when a site is in another active rollout; nothing is
    /// written then.
    pub async fn create_rollout(
        &self,
        rollout: &RolloutRecord,
        sites: &[String],
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.create_rollout(rollout, sites))
    }

    /// Every rollout, in no particular order.
    pub async fn rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        dispatch!(self, s => s.rollouts())
    }

    /// Saves a step of rollout `name` with the desired-state changes it decided, in one
    /// transaction, bumping each changed site's generation; returns the new revision.
    /// `RolloutChanged` when it moved past `step.from_revision`, `SwitchEngaged` when it offers
    /// while the rollout switch is engaged, `UnknownRelease` for a new target never published;
    /// nothing is written then.
    pub async fn save_rollout_step(
        &self,
        name: &str,
        step: &RolloutStep,
    ) -> Result<u64, StoreError> {
        dispatch!(self, s => s.save_rollout_step(name, step))
    }

    /// Sets how `site` gets releases. `UnknownSite` when there is none.
    pub async fn set_delivery(&self, site: &str, delivery: Delivery) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_delivery(site, delivery))
    }

    /// The fleet-wide rollout switch.
    pub async fn rollout_switch(&self) -> Result<RolloutSwitch, StoreError> {
        dispatch!(self, s => s.rollout_switch())
    }

    /// Sets the fleet-wide rollout switch. Once this returned, no rollout step writes an offer
    /// until it is released (steps check it in their transaction).
    pub async fn set_rollout_switch(&self, switch: &RolloutSwitch) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_rollout_switch(switch))
    }

    /// Deletes stored reports received before `before`, except each site's latest; returns how many.
    pub async fn prune_reports(&self, before: Timestamp) -> Result<u64, StoreError> {
        dispatch!(self, s => s.prune_reports(before))
    }
}
