//! The node↔region wire protocol of SCS Edge.
//!
//! Both sides of the federation link — `scs-edge-agent` on a site and `scs-edge-region` in the centre —
//! depend on this crate and nothing else of each other. Fleets are never upgraded in one step, so the
//! rules that keep an old agent and a new region (and the reverse) talking are part of the types:
//!
//! * every request carries [`PROTOCOL_HEADER`] with the sender's [`PROTOCOL_VERSION`]; a region answers
//!   any version in [`MIN_SUPPORTED_VERSION`]`..=`[`PROTOCOL_VERSION`] and refuses others with
//!   [`ErrorCode::UnsupportedProtocol`], naming the range;
//! * readers ignore fields they do not know (no `deny_unknown_fields` on message types);
//! * a field added in a later version is `Option` or has a `#[serde(default)]`, so an older sender's
//!   message still parses; fields are never renamed or re-typed within a major version;
//! * enums that may grow ([`HealthState`], [`ErrorCode`]) have an `Unknown` catch-all.
//!
//! `tests/compat/` holds messages exactly as version 1 wrote them and messages from a future version
//! with extra fields; the tests parse both with today's types.

pub mod release;
pub mod window;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The protocol version this build speaks natively.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest version this build still understands (a region keeps old agents working across upgrades).
pub const MIN_SUPPORTED_VERSION: u32 = 1;
/// HTTP header carrying the sender's protocol version on every request and response.
pub const PROTOCOL_HEADER: &str = "scs-edge-protocol";
/// Largest request body a region accepts on the node endpoints; a report batch above it is refused
/// rather than buffered (a broken or hostile node must not exhaust the region's memory).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Most reports one delivery may carry; an agent with a longer backlog sends several batches.
pub const MAX_REPORTS_PER_BATCH: usize = 100;
/// URI SAN prefix naming the site in every node certificate (`urn:scs-edge:site:<name>`): the region
/// reads the site from the certificate, never from the request.
pub const SITE_URI_PREFIX: &str = "urn:scs-edge:site:";

/// Paths of the node-facing endpoints, relative to the region's base URL.
pub mod paths {
    /// `GET`: the region CA certificate (PEM). Unauthenticated: the node checks it against its pin.
    pub const CA: &str = "/node/v1/ca";
    /// `POST` [`super::JoinRequest`] → [`super::Enrollment`]. Authenticated by the join token.
    pub const JOIN: &str = "/node/v1/join";

    /// `POST` [`super::RenewRequest`] → [`super::Enrollment`] (mTLS).
    pub fn certificate(site: &str) -> String {
        format!("/node/v1/sites/{site}/certificate")
    }
    /// `POST` [`super::ReportBatch`] → [`super::ReportAck`] (mTLS).
    pub fn reports(site: &str) -> String {
        format!("/node/v1/sites/{site}/reports")
    }
    /// `GET` → [`super::DesiredState`] (mTLS).
    pub fn desired(site: &str) -> String {
        format!("/node/v1/sites/{site}/desired")
    }
    /// The site's view of the region's release repository (mTLS): a TUF repository laid out as the
    /// release tool writes one, `metadata/<file>` and `targets/<file>`, with byte ranges.
    pub fn repository(site: &str) -> String {
        format!("/node/v1/sites/{site}/repository/")
    }
}

/// Whether a peer's protocol version is one this build can serve.
pub fn is_supported(version: u32) -> bool {
    (MIN_SUPPORTED_VERSION..=PROTOCOL_VERSION).contains(&version)
}

/// A node's first request: proves it may join `site` with a one-time token and asks for a certificate.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The site this node was provisioned for; the token must have been issued for it.
    pub site: String,
    /// The one-time join token (secret; never logged).
    pub token: String,
    /// PKCS#10 certificate signing request (PEM) for the node's own key, generated on the node.
    pub csr_pem: String,
    /// The agent's version, recorded with the site.
    pub agent_version: String,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("site", &self.site)
            .field("token", &"<redacted>")
            .field("agent_version", &self.agent_version)
            .finish_non_exhaustive()
    }
}

/// A renewal: a fresh CSR, authenticated by the node's current (still valid) certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewRequest {
    /// PKCS#10 certificate signing request (PEM).
    pub csr_pem: String,
}

/// The region's answer to a join or renewal: the node's certificate and when to renew it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The site the certificate names.
    pub site: String,
    /// The node certificate (PEM), signed by the region CA.
    pub certificate_pem: String,
    /// The region CA certificate (PEM): the trust anchor for the region's server certificate.
    pub ca_pem: String,
    /// The certificate's last valid instant.
    pub not_after: Timestamp,
    /// When the node should renew: well before `not_after`, so a region outage of that length is survived.
    pub renew_after: Timestamp,
}

/// Health of one component as the agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Working.
    Healthy,
    /// Working with reduced function (e.g. OVN reachable but a chassis missing).
    Degraded,
    /// Not working.
    Down,
    /// Not installed or not configured on this site (k3s in a build without it).
    Absent,
    /// A state a newer agent reports that this build does not know.
    #[serde(other)]
    Unknown,
}

impl HealthState {
    /// The wire name, for display and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Down => "down",
            Self::Absent => "absent",
            Self::Unknown => "unknown",
        }
    }
}

/// One component's health in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentHealth {
    /// `libvirt`, `ovn`, `k3s`, `agent`, … (open set: a newer agent may add components).
    pub component: String,
    /// Its state.
    pub state: HealthState,
    /// A short human explanation when not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Software versions running on the site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// `scs-edge-agent` version.
    pub agent: String,
    /// OS image version (`IMAGE_VERSION` from os-release), empty when not running from the image.
    #[serde(default)]
    pub os: String,
    /// k3s version, when k3s runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<String>,
}

/// What the site can hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Host CPUs.
    pub vcpus: u32,
    /// Host memory in MiB.
    pub memory_mib: u64,
    /// Free space for VM disks and images in GiB.
    #[serde(default)]
    pub disk_free_gib: u64,
}

/// How many of each resource the site holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceCounts {
    /// Servers (VMs).
    pub servers: u64,
    /// Networks.
    pub networks: u64,
    /// Ports.
    pub ports: u64,
    /// Images.
    pub images: u64,
    /// Projects.
    #[serde(default)]
    pub projects: u64,
}

/// One heartbeat: the site's state at `sent_at`. Reports are numbered per site and delivered in order;
/// one taken while the region was unreachable waits in the node's queue and arrives later with its
/// original `sent_at`, which is how the region sees (and shows) the gap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Position in the site's report sequence, from 1, without holes.
    pub seq: u64,
    /// When the node took the report.
    pub sent_at: Timestamp,
    /// Software versions.
    pub versions: Versions,
    /// Per-component health.
    pub health: Vec<ComponentHealth>,
    /// Capacity.
    pub capacity: Capacity,
    /// Resource counts.
    pub resources: ResourceCounts,
    /// Where the node is in taking an OS update; absent from agents before it, and on nodes not
    /// running from the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateReport>,
}

/// A node's OS update state, as the region's site page and (later) rollouts read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReport {
    /// The phase.
    pub phase: UpdatePhase,
    /// The version being staged, written, booted or verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Versions that failed their health gate on this node (never retried automatically).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    /// How the last update ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<UpdateOutcome>,
    /// Releases refused so far (any reason).
    #[serde(default)]
    pub refused: u64,
    /// The last refusal, so the region can tell a release a site will not take from one still on
    /// its way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<UpdateRefusal>,
    /// What keeps the update from going on right now (a repository out of reach, a slot write
    /// that failed and is tried again); cleared by the next step that succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Releases accepted under a freshness waiver so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waivers_used: u64,
    /// The maintenance window the node reboots in (canonical form, [`window::MaintenanceWindow`]):
    /// the region's when the desired state names one the node can read, else the node's own. The
    /// region gates on it rather than on the window it sent, which an older node ignores and a
    /// node that cannot parse it replaces with its own. `None`: no window, the node reboots as
    /// soon as a release is written (and agents before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// A release a node refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRefusal {
    /// The refusal kind (`hash`, `expired`, `failed_before`, …: an open set).
    pub kind: String,
    /// The whole reason, cut to [`MAX_FIELD_CHARS`].
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Where a node is in an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdatePhase {
    /// Nothing in progress.
    Idle,
    /// Reading and verifying a release.
    Importing,
    /// Verified, waiting to be written.
    Staged,
    /// Writing the inactive slot.
    Installing,
    /// Written, waiting for the reboot (maintenance window).
    Installed,
    /// Rebooting into it.
    Rebooting,
    /// The health gate checks the new version.
    Verifying,
    /// A phase a newer agent knows.
    #[serde(other)]
    Unknown,
}

/// How an update ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateOutcome {
    /// `committed` or `rolled_back` (open set).
    pub result: String,
    /// The version updated to.
    pub version: String,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Largest number of health entries a report may carry.
pub const MAX_HEALTH_ENTRIES: usize = 32;
/// Longest string (component name, detail, version) a report may carry.
pub const MAX_FIELD_CHARS: usize = 512;

impl Report {
    /// Checks the limits a region enforces on every report, so a node can refuse to queue a report
    /// the region would never accept (and block its queue behind it).
    pub fn validate(&self) -> Result<(), String> {
        if self.seq == 0 {
            return Err("seq starts at 1".into());
        }
        if self.health.len() > MAX_HEALTH_ENTRIES {
            return Err(format!("more than {MAX_HEALTH_ENTRIES} health entries"));
        }
        if self
            .update
            .as_ref()
            .is_some_and(|update| update.failed.len() > MAX_HEALTH_ENTRIES)
        {
            return Err(format!("more than {MAX_HEALTH_ENTRIES} failed versions"));
        }
        let update = self.update.as_ref();
        let strings = [&self.versions.agent, &self.versions.os]
            .into_iter()
            .chain(self.versions.k3s.as_ref())
            .chain(update.and_then(|u| u.target.as_ref()))
            .chain(update.into_iter().flat_map(|u| u.failed.iter()))
            .chain(
                update
                    .and_then(|u| u.last_outcome.as_ref())
                    .into_iter()
                    .flat_map(|o| {
                        std::iter::once(&o.result)
                            .chain(std::iter::once(&o.version))
                            .chain(o.reason.as_ref())
                    }),
            )
            .chain(
                update
                    .and_then(|u| u.last_refusal.as_ref())
                    .into_iter()
                    .flat_map(|r| std::iter::once(&r.kind).chain(std::iter::once(&r.reason))),
            )
            .chain(update.and_then(|u| u.last_error.as_ref()))
            .chain(update.and_then(|u| u.window.as_ref()))
            .chain(self.health.iter().map(|h| &h.component))
            .chain(self.health.iter().filter_map(|h| h.detail.as_ref()));
        for s in strings {
            if s.chars().count() > MAX_FIELD_CHARS {
                return Err(format!(
                    "a field is longer than {MAX_FIELD_CHARS} characters"
                ));
            }
        }
        if self.health.iter().any(|h| h.component.is_empty()) {
            return Err("a health entry has an empty component".into());
        }
        Ok(())
    }
}

/// Reports in sequence order, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportBatch {
    /// At most [`MAX_REPORTS_PER_BATCH`], consecutive `seq`.
    pub reports: Vec<Report>,
}

/// The region's answer to a batch: everything up to `acked_through` is stored; the node drops those
/// from its queue. Re-sent reports (a lost answer) are acknowledged again without being stored twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    /// Highest sequence number the region holds for this site.
    pub acked_through: u64,
    /// The desired-state generation, so the node fetches [`DesiredState`] only when it changed.
    #[serde(default)]
    pub desired_generation: u64,
}

/// What the region wants the site to be. The agent applies what it understands; fields for later
/// capabilities (the OS update issue) are carried now so older agents ignore them safely.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Increases with every change an operator makes.
    pub generation: u64,
    /// Operator labels of the site (`tier=factory`, `wave=canary`, …).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The OS version the site should run; `None` means "stay".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_os_version: Option<String>,
    /// The maintenance window the region plans its offers with ([`window::MaintenanceWindow`]'s
    /// form); the node reboots in it instead of its own. Text rather than a parsed window so that
    /// a window a node cannot read costs only the window, not the whole desired state: the node
    /// keeps its own and reports so ([`UpdateReport::window`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<String>,
}

/// Machine-readable reason of a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request body is malformed, too large, or out of range.
    BadRequest,
    /// The join token is unknown, expired, already used or for another site.
    InvalidJoinToken,
    /// No valid client certificate, or it names another site.
    Unauthenticated,
    /// The site was decommissioned; its certificates are revoked.
    SiteRevoked,
    /// The site does not exist.
    UnknownSite,
    /// A report's `seq` does not continue the stored sequence (the node must resend from `expected`).
    OutOfOrder,
    /// The sender's protocol version is outside the supported range.
    UnsupportedProtocol,
    /// No release with the version asked for.
    UnknownRelease,
    /// A publication that did not verify or broke the region's rules; nothing changed.
    ReleaseRefused,
    /// A release's files asked for by a site whose desired version does not name it.
    ReleaseNotOffered,
    /// No rollout with the name asked for.
    UnknownRollout,
    /// The request contradicts the current state (an overlapping or existing rollout, an action
    /// its state does not allow, the rollout switch engaged); nothing changed.
    Conflict,
    /// The region failed; retry later.
    Internal,
    /// A code a newer region sends that this build does not know.
    #[serde(other)]
    Unknown,
}

/// The body of every non-2xx answer on the node endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// See [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Human explanation, safe to show (never contains a secret).
    pub message: String,
    /// For [`ErrorCode::OutOfOrder`]: the next `seq` the region expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_seq: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seq: u64) -> Report {
        Report {
            seq,
            sent_at: Timestamp::UNIX_EPOCH,
            versions: Versions {
                agent: "0.1.0".into(),
                os: "1".into(),
                k3s: None,
            },
            health: vec![ComponentHealth {
                component: "libvirt".into(),
                state: HealthState::Healthy,
                detail: None,
            }],
            capacity: Capacity::default(),
            resources: ResourceCounts::default(),
            update: None,
        }
    }

    #[test]
    fn join_request_debug_never_shows_the_token() {
        let request = JoinRequest {
            site: "factory-1".into(),
            token: "s3cret-token".into(),
            csr_pem: String::new(),
            agent_version: "0.1.0".into(),
        };
        assert!(!format!("{request:?}").contains("s3cret"));
    }

    #[test]
    fn report_limits_are_enforced() {
        assert!(report(1).validate().is_ok());
        assert!(report(0).validate().expect_err("refused").contains("seq"));
        let mut long = report(1);
        long.health[0].detail = Some("x".repeat(MAX_FIELD_CHARS + 1));
        assert!(long.validate().expect_err("refused").contains("longer"));
        let mut many = report(1);
        many.health = vec![many.health[0].clone(); MAX_HEALTH_ENTRIES + 1];
        assert!(
            many.validate()
                .expect_err("refused")
                .contains("health entries")
        );
        let mut empty = report(1);
        empty.health[0].component.clear();
        assert!(empty.validate().is_err());

        let update = UpdateReport {
            phase: UpdatePhase::Idle,
            target: None,
            failed: vec!["1.0.0".into(); MAX_HEALTH_ENTRIES + 1],
            last_outcome: None,
            refused: 0,
            last_refusal: None,
            last_error: None,
            waivers_used: 0,
            window: None,
        };
        let mut failing = report(1);
        failing.update = Some(update.clone());
        assert!(
            failing
                .validate()
                .expect_err("refused")
                .contains("failed versions")
        );
        let mut reason = report(1);
        reason.update = Some(UpdateReport {
            failed: Vec::new(),
            last_outcome: Some(UpdateOutcome {
                result: "rolled_back".into(),
                version: "1.0.0".into(),
                reason: Some("x".repeat(MAX_FIELD_CHARS + 1)),
            }),
            ..update.clone()
        });
        assert!(reason.validate().expect_err("refused").contains("longer"));
        let mut refusal = report(1);
        refusal.update = Some(UpdateReport {
            failed: Vec::new(),
            last_refusal: Some(UpdateRefusal {
                kind: "hash".into(),
                reason: "y".repeat(MAX_FIELD_CHARS + 1),
                at: Timestamp::UNIX_EPOCH,
            }),
            ..update.clone()
        });
        assert!(refusal.validate().expect_err("refused").contains("longer"));
        let mut window = report(1);
        window.update = Some(UpdateReport {
            failed: Vec::new(),
            window: Some("z".repeat(MAX_FIELD_CHARS + 1)),
            ..update
        });
        assert!(window.validate().expect_err("refused").contains("longer"));
    }

    #[test]
    fn supported_range_is_min_to_current() {
        assert!(is_supported(PROTOCOL_VERSION));
        assert!(is_supported(MIN_SUPPORTED_VERSION));
        assert!(!is_supported(0));
        assert!(!is_supported(PROTOCOL_VERSION + 1));
    }

    #[test]
    fn site_paths_are_stable() {
        assert_eq!(paths::reports("f-1"), "/node/v1/sites/f-1/reports");
        assert_eq!(paths::desired("f-1"), "/node/v1/sites/f-1/desired");
        assert_eq!(paths::certificate("f-1"), "/node/v1/sites/f-1/certificate");
        assert_eq!(paths::repository("f-1"), "/node/v1/sites/f-1/repository/");
    }
}
