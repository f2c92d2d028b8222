//! Releases in the region (decision 0015): what the release manager signed offline, mirrored here
//! and served to the sites over their mTLS link.
//!
//! The region verifies a publication against the fleet's root of trust — the root baked into the
//! image, configured here, never one a publication brings — before a single file of it is served,
//! holds only the timestamp key (to keep the mirror fresh), and decides which site may download
//! which release: every site reads the signed metadata and manifests, but the artifacts of a
//! release only a site whose desired version names it. Operators publish, list, show and withdraw;
//! the HTTP adapter and the CLI call this module with the caller's name and render what it returns.

#[cfg(test)]
mod tests;

use crate::fleet::Clock;
use crate::store::{ReleaseRecord, ReleaseState, Site, SiteState, Store, StoreError, Withdrawal};
use scs_edge_proto::release::ReleaseManifest;
use scs_edge_release::bundle::ExtractLimits;
use scs_edge_release::keys::KeySet;
use scs_edge_release::mirror::{Mirror, Source};
use scs_edge_release::{Lifetimes, ReleaseError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A release request the region refused, or a failure underneath it.
#[derive(Debug, thiserror::Error)]
pub enum ReleasesError {
    /// The region has no `[releases]` configuration.
    #[error(
        "releases are not configured: set [releases] root_of_trust and timestamp_key_dir in the region's configuration"
    )]
    NotConfigured,
    /// The publication did not verify or broke a rule; nothing changed.
    #[error("release refused: {0}")]
    Refused(ReleaseError),
    /// Every release of the publication is published already.
    #[error("nothing new: every release in {0} is published already")]
    NothingNew(String),
    /// No such release.
    #[error("no release {0}")]
    UnknownRelease(String),
    /// A version that is not a semantic version.
    #[error("invalid version {0:?}: expected a semantic version such as 1.2.3")]
    InvalidVersion(String),
    /// A withdrawal without a reason, or one too long.
    #[error("{0}")]
    InvalidInput(String),
    /// The mirror on disk failed (not a verdict on the release).
    #[error("release mirror: {0}")]
    Mirror(ReleaseError),
    /// The configured root of trust or timestamp key cannot be read.
    #[error("{0}")]
    Config(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(StoreError),
}

impl From<StoreError> for ReleasesError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::UnknownRelease(version) => Self::UnknownRelease(version),
            other => Self::Store(other),
        }
    }
}

/// How the region's mirror is set up (`[releases]`).
#[derive(Debug, Clone)]
pub struct ReleaseSettings {
    /// Where the mirror lives (`<state_dir>/releases`).
    pub mirror_dir: PathBuf,
    /// The fleet's root of trust: the `root.json` baked into the node image.
    pub root_of_trust: PathBuf,
    /// A folder holding the timestamp key (`timestamp.pk8`), and no other.
    pub timestamp_key_dir: PathBuf,
    /// Lifetimes of the metadata the region signs (only the timestamp's is used).
    pub lifetimes: Lifetimes,
}

/// What a site may fetch from the repository it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// A file of the mirror, to send.
    File(PathBuf),
    /// Not in the mirror (or not a name the mirror uses).
    NotFound,
    /// An artifact of a release the site's desired version does not name.
    NotOffered {
        /// The release it belongs to, if any the region knows.
        version: Option<String>,
    },
}

/// The releases service.
#[derive(Clone)]
pub struct Releases {
    mirror: Mirror,
    root_of_trust: Arc<[u8]>,
    keys: KeySet,
    lifetimes: Lifetimes,
    store: Store,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Releases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Releases")
            .field("mirror", &self.mirror)
            .finish_non_exhaustive()
    }
}

/// The longest withdrawal reason: it is shown on every page of the release.
pub const MAX_REASON_CHARS: usize = 500;

impl Releases {
    /// Reads the root of trust and checks the key folder; the mirror is created on the first
    /// publication.
    pub fn open(
        settings: &ReleaseSettings,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ReleasesError> {
        let root_of_trust = std::fs::read(&settings.root_of_trust).map_err(|err| {
            ReleasesError::Config(format!(
                "releases.root_of_trust {}: {err}",
                settings.root_of_trust.display()
            ))
        })?;
        let keys = KeySet::new(&settings.timestamp_key_dir);
        keys.check_timestamp_key()
            .map_err(|err| ReleasesError::Config(format!("releases.timestamp_key_dir: {err}")))?;
        Ok(Self {
            mirror: Mirror::new(&settings.mirror_dir),
            root_of_trust: root_of_trust.into(),
            keys,
            lifetimes: settings.lifetimes,
            store,
            clock,
        })
    }

    /// Writes the air-gap bundle of the published, not withdrawn release `version` to `out`, from
    /// the mirror — whose timestamp the region keeps fresh, so the bundle is as fresh as the region
    /// can make it — with the freshness waiver in the file `waiver`, if any. Returns its size.
    pub async fn export_bundle(
        &self,
        version: &str,
        waiver: Option<&std::path::Path>,
        out: &std::path::Path,
    ) -> Result<u64, ReleasesError> {
        let record = self.show(version).await?;
        if record.state == ReleaseState::Withdrawn {
            return Err(ReleasesError::InvalidInput(format!(
                "release {version} is withdrawn; no site may take it"
            )));
        }
        scs_edge_release::bundle::export_with_waiver(
            self.mirror.repository(),
            &record.manifest.version,
            waiver,
            out,
        )
        .await
        .map_err(|error| match error {
            ReleaseError::Io { .. } => ReleasesError::Mirror(error),
            // A waiver every node would refuse.
            other => ReleasesError::InvalidInput(other.to_string()),
        })
    }

    /// Mirrors the release repository at `source` — a folder (the release tool's repository) or
    /// an air-gap bundle file — and records the releases it adds, published by `actor`.
    ///
    /// Refused with nothing changed: anything the mirror refuses (see [`Mirror::accept`]), and a
    /// publication whose newest release is older than the fleet — below the OS version every site
    /// that reports one runs, which no site would take — unless it is a regret release (its signed
    /// `max_version` pulls sites back down).
    pub async fn publish(
        &self,
        source: &Path,
        actor: &str,
    ) -> Result<Vec<ReleaseRecord>, ReleasesError> {
        let sites = self.store.list_sites().await?;
        let oldest_running = oldest_running(&sites);
        let vet =
            move |added: &[ReleaseManifest]| vet_against_fleet(added, oldest_running.as_ref());
        let now = self.clock.now();
        let limits = ExtractLimits::default();
        let from = if source.is_file() {
            Source::Bundle(source, &limits)
        } else {
            Source::Folder(source)
        };
        let accepted = self
            .mirror
            .accept(
                from,
                &self.root_of_trust,
                &self.keys,
                &self.lifetimes,
                now,
                &vet,
            )
            .await
            .map_err(refused_or_failed)?;
        // What the mirror serves now, read as a node reads it. Every release in it gets its row,
        // so a publication that crashed between the mirror and the store is completed by running
        // it again.
        let served = self
            .mirror
            .offered(&self.root_of_trust)
            .await
            .map_err(ReleasesError::Mirror)?;
        let recorded = self.store.releases().await?;
        let new: Vec<ReleaseRecord> = served
            .into_iter()
            .filter(|manifest| {
                !recorded
                    .iter()
                    .any(|record| record.manifest.version == manifest.version)
            })
            .map(|manifest| ReleaseRecord {
                manifest,
                state: ReleaseState::Available,
                published_at: now,
                published_by: actor.to_owned(),
                withdrawal: None,
            })
            .collect();
        if new.is_empty() {
            return Err(ReleasesError::NothingNew(source.display().to_string()));
        }
        self.store.add_releases(&new).await?;
        tracing::info!(
            source = %source.display(),
            actor,
            versions = ?new.iter().map(|r| r.manifest.version.to_string()).collect::<Vec<_>>(),
            timestamp = accepted.timestamp_version,
            "releases published"
        );
        Ok(new)
    }

    /// Every release, newest first.
    pub async fn list(&self) -> Result<Vec<ReleaseRecord>, ReleasesError> {
        let mut releases = self.store.releases().await?;
        releases.sort_by(|a, b| b.manifest.version.cmp(&a.manifest.version));
        Ok(releases)
    }

    /// One release.
    pub async fn show(&self, version: &str) -> Result<ReleaseRecord, ReleasesError> {
        let version = parse_version(version)?;
        self.list()
            .await?
            .into_iter()
            .find(|record| record.manifest.version == version)
            .ok_or_else(|| ReleasesError::UnknownRelease(version.to_string()))
    }

    /// Withdraws a release: offered to no site from now on. Its files stay in the mirror (sites
    /// that run it keep a consistent repository); pulling sites that took it back down is a regret
    /// release signed with the release tool. Idempotent.
    pub async fn withdraw(
        &self,
        version: &str,
        actor: &str,
        reason: &str,
    ) -> Result<ReleaseRecord, ReleasesError> {
        let version = parse_version(version)?;
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(ReleasesError::InvalidInput(format!(
                "a withdrawal needs a reason of 1 to {MAX_REASON_CHARS} characters"
            )));
        }
        if reason.chars().any(char::is_control) {
            return Err(ReleasesError::InvalidInput(
                "the reason must not contain control characters".into(),
            ));
        }
        let record = self
            .store
            .withdraw_release(
                &version.to_string(),
                &Withdrawal {
                    at: self.clock.now(),
                    by: actor.to_owned(),
                    reason: reason.to_owned(),
                },
            )
            .await?;
        tracing::info!(%version, actor, reason, "release withdrawn");
        Ok(record)
    }

    /// Re-signs the served timestamp when less than half its lifetime is left: the region's
    /// periodic job, which keeps sites discovering releases. Returns the new version, if it signed.
    pub async fn refresh_timestamp_if_due(&self) -> Result<Option<u64>, ReleasesError> {
        let now = self.clock.now();
        let Some(expires) = self
            .mirror
            .timestamp_expires()
            .map_err(ReleasesError::Mirror)?
        else {
            return Ok(None);
        };
        let half = self.lifetimes.timestamp / 2;
        if expires.duration_since(now) > half {
            return Ok(None);
        }
        let version = self
            .mirror
            .refresh_timestamp(&self.keys, &self.lifetimes, now)
            .await
            .map_err(ReleasesError::Mirror)?;
        tracing::info!(version, "release timestamp refreshed");
        Ok(Some(version))
    }

    /// What `site` (authenticated by the caller) gets for `file` of the repository's `folder`
    /// (`metadata` or `targets`): the signed metadata and every release manifest to any site; a
    /// release's artifacts only to a site whose desired version names that release and while the
    /// release is not withdrawn.
    pub async fn served(
        &self,
        site: &str,
        folder: &str,
        file: &str,
    ) -> Result<Served, ReleasesError> {
        if !is_mirror_file_name(file) {
            return Ok(Served::NotFound);
        }
        let repository = self.mirror.repository();
        let (path, target) = match folder {
            scs_edge_release::METADATA_DIR => (repository.metadata_dir().join(file), None),
            scs_edge_release::TARGETS_DIR => {
                let Some((_, name)) = file.split_once('.') else {
                    return Ok(Served::NotFound);
                };
                (repository.targets_dir().join(file), Some(name))
            }
            _ => return Ok(Served::NotFound),
        };
        if !path.is_file() {
            return Ok(Served::NotFound);
        }
        let Some(target) = target else {
            return Ok(Served::File(path));
        };
        if target.starts_with("scs-edge_") && target.ends_with(".manifest.json") {
            return Ok(Served::File(path));
        }
        let Some(site) = self.store.site(site).await? else {
            return Ok(Served::NotOffered { version: None });
        };
        let releases = self.store.releases().await?;
        let owner = releases.iter().find(|record| {
            record
                .manifest
                .artifacts
                .iter()
                .any(|artifact| file == format!("{}.{}", artifact.sha256, artifact.target))
        });
        let offered = owner.is_some_and(|record| {
            record.state == ReleaseState::Available
                && site.state == SiteState::Active
                && site.desired.target_os_version.as_deref()
                    == Some(record.manifest.version.to_string().as_str())
        });
        Ok(if offered {
            Served::File(path)
        } else {
            Served::NotOffered {
                version: owner.map(|record| record.manifest.version.to_string()),
            }
        })
    }
}

/// The lowest OS version an active site reports, if any reports one the region can read.
fn oldest_running(sites: &[Site]) -> Option<semver::Version> {
    sites
        .iter()
        .filter(|site| site.state == SiteState::Active)
        .filter_map(|site| site.last_report.as_ref())
        .filter_map(|report| report.versions.os.parse::<semver::Version>().ok())
        .min()
}

/// The region's rule for a publication: its newest release must not be below what every reporting
/// site runs — no site would take it — unless it is a regret release. Older releases that come
/// along (the release tool's repository keeps every release ever signed) are mirrored with it:
/// they are signed, and a node refuses to go down to them by itself.
fn vet_against_fleet(
    added: &[ReleaseManifest],
    oldest_running: Option<&semver::Version>,
) -> Result<(), String> {
    let (Some(oldest), Some(newest)) = (
        oldest_running,
        added.iter().max_by(|a, b| a.version.cmp(&b.version)),
    ) else {
        return Ok(());
    };
    if newest.version < *oldest && newest.max_version.is_none() {
        return Err(format!(
            "release {} is older than the fleet: every site runs {oldest} or newer, and only a \
             regret release (signed max_version) may take sites back down",
            newest.version
        ));
    }
    Ok(())
}

/// Mirror refusals are the publication's fault; anything else (a disk, a lock) the region's.
fn refused_or_failed(error: ReleaseError) -> ReleasesError {
    match error {
        ReleaseError::Io { .. } => ReleasesError::Mirror(error),
        other => ReleasesError::Refused(other),
    }
}

fn parse_version(text: &str) -> Result<semver::Version, ReleasesError> {
    text.parse()
        .map_err(|_| ReleasesError::InvalidVersion(text.to_owned()))
}

/// The names the mirror uses — `timestamp.json`, `N.root.json`, `N.snapshot.json`,
/// `N.targets.json`, `<sha256>.<target name>` — and nothing else: no path separators, no hidden
/// or partial files, so a request can never name anything but a served file.
pub fn is_mirror_file_name(name: &str) -> bool {
    let plain = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    if !plain {
        return false;
    }
    if name == "timestamp.json" {
        return true;
    }
    if let Some((version, role)) = name.split_once('.')
        && version.bytes().all(|b| b.is_ascii_digit())
        && !version.is_empty()
    {
        return matches!(role, "root.json" | "snapshot.json" | "targets.json");
    }
    name.split_once('.').is_some_and(|(hash, target)| {
        hash.len() == 64
            && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && !target.is_empty()
    })
}
