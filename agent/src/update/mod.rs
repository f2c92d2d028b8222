//! Signed OS updates of this node (decision 0013): a release is read from a bundle file, an
//! `SCSEDGE-UPDATE` stick or a release repository online ([`ImportSource`]), verified against the
//! root of trust in `/usr` with the release crate (TUF through `tough`, one verification path for
//! all three), staged on the data partition, written into the inactive A/B slot by
//! `systemd-sysupdate`, and booted; the health gate ([`gate`]) then commits it or rolls back to the
//! version the node came from.
//!
//! The domain decides — which release is admissible, when to reboot, what counts as healthy, what a
//! failure means — and records every step in the [`record`], so a power cut at any point resumes
//! where it stopped: an interrupted import is dropped, an interrupted slot write starts over, an
//! interrupted reboot is judged by the gate on whichever version booted. Host effects come in
//! through [`host`].
//!
//! A site that can never receive fresh metadata gets an operator-signed, time-bounded freshness
//! waiver (`scs_edge_release::waiver`) for its site name: inside the bundle, beside it on the stick,
//! or named on the command line. It is read only when the metadata has expired, waives that and
//! nothing else, and every release accepted under one is logged, recorded and counted.

pub mod gate;
pub mod host;
pub mod online;
pub mod probes;
pub mod record;
pub mod region;
pub mod status;
pub mod watcher;
pub mod window;

use crate::system::clock::Clock;
use crate::system::mount::Mounter;
use host::{Drain, Power, Sysupdate};
use jiff::Timestamp;
use record::{
    Origin, Phase, RebootWhen, RecordError, RecordFile, RecordLock, Staged, UpdateRecord, WaiverUse,
};
use scs_edge_proto::release::ReleaseManifest;
use scs_edge_release::bundle::{self, ExtractLimits};
use scs_edge_release::verify::{self, OfferedWaiver, Trust, VerifiedRepository};
use scs_edge_release::waiver::{WAIVER_FILE, WaiverTerms};
use scs_edge_release::{ReleaseError, policy};
use semver::Version;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The step of [`UpdateError::Host`] when systemd refused the reboot after the servers stopped.
pub const REBOOTING: &str = "rebooting";

/// The label an update stick's filesystem carries.
pub const STICK_LABEL: &str = "SCSEDGE-UPDATE";
/// The extension of a bundle file (on a stick, the one file the agent imports).
pub const BUNDLE_EXTENSION: &str = "bundle";
/// How a freshness waiver beside the bundle on a stick is named: `waiver.json`, or
/// `<anything>.waiver.json` so that an operator can keep the site's name in it.
pub const WAIVER_SUFFIX: &str = ".waiver.json";

/// Why an update step did not happen. Refusals ([`UpdateError::Refused`]) are counted by kind.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The release was refused: not genuine, not fresh, not admissible.
    #[error("refused ({kind}): {reason}")]
    Refused {
        /// The refusal kind (the metric label).
        kind: &'static str,
        /// Why.
        reason: String,
    },
    /// The record could not be read or written, or another update operation runs.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The step does not fit the phase the node is in.
    #[error("the node is {phase}: {what}")]
    WrongPhase {
        /// The current phase.
        phase: &'static str,
        /// What cannot be done.
        what: String,
    },
    /// The source could not be read: a missing file, a stick without a bundle, a repository that
    /// does not answer or does not serve a file. No verdict on the release, so no refusal.
    #[error("{origin}: {reason}")]
    Source {
        /// The file, device or URL.
        origin: String,
        /// Why.
        reason: String,
    },
    /// Writing the slot, stopping workloads or rebooting failed; the running slot is untouched.
    #[error("{step}: {reason}")]
    Host {
        /// The step.
        step: &'static str,
        /// Why.
        reason: String,
    },
}

impl UpdateError {
    fn refused(err: &ReleaseError) -> Self {
        Self::Refused {
            kind: err.refusal_kind().as_str(),
            reason: err.to_string(),
        }
    }

    /// The release crate's error about `source`: a refusal, unless the repository only could not
    /// be reached.
    fn from_release(source: &ImportSource) -> impl FnOnce(ReleaseError) -> Self + '_ {
        move |err| match err {
            ReleaseError::Unreachable { .. } => Self::Source {
                origin: source.to_string(),
                reason: err.to_string(),
            },
            refused => Self::refused(&refused),
        }
    }
}

/// Where a release is read from. The adapters build it — the CLI from its argument, the daemon from
/// the stick it found and the configured repository — and the domain treats all three alike once
/// the repository is verified.
#[derive(Debug, Clone)]
pub enum ImportSource {
    /// A bundle file.
    Bundle(PathBuf),
    /// A block device (an update stick) whose filesystem holds one bundle in its top directory.
    Device(PathBuf),
    /// A release repository online, `<url>/metadata/` and `<url>/targets/` over HTTP(S). Nothing is
    /// unpacked: targets stream from it, verified, straight into the staging area.
    Repository {
        /// Its base URL.
        url: reqwest::Url,
        /// The client that reaches it, with the roots (and, towards the region, the client
        /// identity) it needs.
        client: reqwest::Client,
    },
}

impl ImportSource {
    /// A local path: a block device is a stick, anything else a bundle file (an unreadable one is
    /// reported by the import that reads it).
    pub fn local(path: PathBuf) -> Self {
        let device = std::fs::metadata(&path)
            .is_ok_and(|meta| std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()));
        if device {
            Self::Device(path)
        } else {
            Self::Bundle(path)
        }
    }
}

impl std::fmt::Display for ImportSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bundle(path) | Self::Device(path) => path.display().fmt(f),
            Self::Repository { url, .. } => url.fmt(f),
        }
    }
}

/// Where things are and what runs.
#[derive(Debug, Clone)]
pub struct UpdateSettings {
    /// The update directory on the data partition: record, TUF datastore, staging.
    pub dir: PathBuf,
    /// The root of trust baked into `/usr`.
    pub root_of_trust: PathBuf,
    /// The version this node runs (`IMAGE_VERSION` of its os-release).
    pub running: Version,
    /// Where private mount points for sticks go (`/run`).
    pub run_dir: PathBuf,
    /// Bounds on a bundle's contents.
    pub limits: ExtractLimits,
    /// This node's site name (`region.site`, written by provisioning), which a freshness waiver
    /// must name exactly; `None` on a node set up without one, which then accepts no waiver.
    pub site: Option<String>,
}

impl UpdateSettings {
    /// The settings of the node `config` describes, running `running`.
    pub fn from_config(config: &crate::config::AgentConfig, running: Version) -> Self {
        Self {
            dir: config.node.state_dir.join("update"),
            root_of_trust: config.update.root_of_trust.clone(),
            running,
            run_dir: PathBuf::from("/run"),
            limits: ExtractLimits::default(),
            site: Some(config.region.site.clone()).filter(|site| !site.is_empty()),
        }
    }
}

/// The steps of an import, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportStep {
    /// Unpacking the bundle into the staging area.
    Reading,
    /// Checking the metadata against the root of trust.
    Verifying,
    /// Copying the chosen release's artifacts, each verified as it streams.
    Staging(Version),
    /// Writing the inactive slot.
    Installing(Version),
}

/// Shows an import's progress; the CLI draws a bar, the daemon logs.
pub trait ImportProgress: Send + Sync {
    /// A step begins.
    fn step(&self, step: &ImportStep);
}

/// Progress to the log only.
#[derive(Debug, Default)]
pub struct LogProgress;

impl ImportProgress for LogProgress {
    fn step(&self, step: &ImportStep) {
        info!(?step, "update");
    }
}

/// The update domain.
pub struct Updater {
    settings: UpdateSettings,
    record: RecordFile,
    clock: Arc<dyn Clock>,
    sysupdate: Arc<dyn Sysupdate>,
    mounter: Arc<dyn Mounter>,
}

impl std::fmt::Debug for Updater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Updater {
    /// The domain over `settings` with these host effects.
    pub fn new(
        settings: UpdateSettings,
        clock: Arc<dyn Clock>,
        sysupdate: Arc<dyn Sysupdate>,
        mounter: Arc<dyn Mounter>,
    ) -> Self {
        let record = RecordFile::new(&settings.dir);
        Self {
            settings,
            record,
            clock,
            sysupdate,
            mounter,
        }
    }

    /// The version this node runs.
    pub fn running(&self) -> &Version {
        &self.settings.running
    }

    /// The record as it is now (no lock: for status displays).
    pub fn record(&self) -> Result<UpdateRecord, UpdateError> {
        Ok(self.record.read()?)
    }

    /// The record file, for the health gate.
    pub fn record_file(&self) -> &RecordFile {
        &self.record
    }

    /// Imports the release in `source` and stages it: verified, admissible, its artifacts copied
    /// into the staging area. A refusal is counted and recorded, and leaves the node as it was (a
    /// release staged before stays staged). Expired metadata is accepted under a freshness waiver
    /// the source carries (beside the bundle on a stick, else inside the bundle).
    pub async fn import(
        &self,
        source: &ImportSource,
        reboot: RebootWhen,
        progress: &dyn ImportProgress,
    ) -> Result<Version, UpdateError> {
        self.import_from(source, None, reboot, progress).await
    }

    /// [`Self::import`] with the freshness waiver in the file `waiver` (`update import --waiver`):
    /// the operator's explicit choice, so it is the one offered even when the source carries one.
    pub async fn import_with_waiver(
        &self,
        source: &ImportSource,
        waiver: &Path,
        reboot: RebootWhen,
        progress: &dyn ImportProgress,
    ) -> Result<Version, UpdateError> {
        self.import_from(source, Some(waiver), reboot, progress)
            .await
    }

    async fn import_from(
        &self,
        source: &ImportSource,
        waiver_file: Option<&Path>,
        reboot: RebootWhen,
        progress: &dyn ImportProgress,
    ) -> Result<Version, UpdateError> {
        let (lock, before) = self.lock_for_import()?;
        self.mark_importing(&lock, source)?;
        let failed: BTreeSet<Version> = before.failed.keys().cloned().collect();
        let result = async {
            let (repo, offered) = self
                .verified(&lock, &before, source, waiver_file, progress)
                .await?;
            let manifest = self.choose(&offered, &failed)?;
            self.stage(&repo, source, manifest, reboot, Origin::Local, progress)
                .await
        }
        .await;
        self.finish_import(&lock, &before, source, result)
    }

    /// The periodic look at a repository online: a release this node may take and has not staged
    /// yet is imported as by [`Self::import`], to be written in the maintenance window. A
    /// repository keeps every release ever published, so finding none newer than the running or
    /// staged one is the normal case: `Ok(None)`, with nothing recorded but the time the
    /// verification saw, and nothing counted. Nor is anything checked while an update is past
    /// staging. Refusals (a forged, stale or rolled-back repository) are recorded and counted as
    /// on import.
    pub async fn check(
        &self,
        url: &reqwest::Url,
        client: &reqwest::Client,
        progress: &dyn ImportProgress,
    ) -> Result<Option<Version>, UpdateError> {
        let (lock, before) = match self.lock_for_import() {
            Err(UpdateError::WrongPhase { .. }) => return Ok(None),
            other => other?,
        };
        let source = ImportSource::Repository {
            url: url.clone(),
            client: client.clone(),
        };
        let failed: BTreeSet<Version> = before.failed.keys().cloned().collect();
        let verified = self.verified(&lock, &before, &source, None, progress).await;
        let (repo, offered) = match verified {
            Ok(verified) => verified,
            Err(err) => {
                return self
                    .finish_import(&lock, &before, &source, Err(err))
                    .map(Some);
            }
        };
        let staged = match &before.phase {
            Phase::Staged { staged } => Some(&staged.manifest.version),
            _ => None,
        };
        let running = &self.settings.running;
        let Some(manifest) = policy::choose(running, &offered, &failed)
            .filter(|manifest| Some(&manifest.version) != staged)
        else {
            let newest = offered.iter().map(|manifest| &manifest.version).max();
            info!(source = %source, %running, ?staged, ?newest, "no new release to take");
            return Ok(None);
        };
        self.mark_importing(&lock, &source)?;
        let result = self
            .stage(
                &repo,
                &source,
                manifest,
                RebootWhen::Window,
                Origin::Local,
                progress,
            )
            .await;
        self.finish_import(&lock, &before, &source, result)
            .map(Some)
    }

    /// The region's offer: stages `wanted` from the region's repository at `url` for the
    /// maintenance window — that release and no other, since the region decides which site takes
    /// which release when (its rollouts). Nothing to do (`Ok(None)`) while the node runs it or has
    /// it staged, or while an update is past staging. A release the node may not take (failed here
    /// before, a downgrade without a regret, not in the repository) is refused and counted as on
    /// import, and the heartbeat tells the region.
    pub async fn take(
        &self,
        url: &reqwest::Url,
        client: &reqwest::Client,
        wanted: &Version,
        progress: &dyn ImportProgress,
    ) -> Result<Option<Version>, UpdateError> {
        let running = &self.settings.running;
        if wanted == running {
            return Ok(None);
        }
        let (lock, before) = match self.lock_for_import() {
            Err(UpdateError::WrongPhase { .. }) => return Ok(None),
            other => other?,
        };
        if matches!(&before.phase, Phase::Staged { staged } if &staged.manifest.version == wanted) {
            return Ok(None);
        }
        let source = ImportSource::Repository {
            url: url.clone(),
            client: client.clone(),
        };
        let failed: BTreeSet<Version> = before.failed.keys().cloned().collect();
        self.mark_importing(&lock, &source)?;
        let result = async {
            let (repo, offered) = self
                .verified(&lock, &before, &source, None, progress)
                .await?;
            let manifest = offered
                .iter()
                .find(|manifest| &manifest.version == wanted)
                .ok_or_else(|| UpdateError::Refused {
                    kind: "manifest",
                    reason: format!(
                        "the region asks for {wanted}, which its repository does not carry"
                    ),
                })?;
            policy::admit(running, manifest, &failed).map_err(|refusal| UpdateError::Refused {
                kind: refusal.label(),
                reason: refusal.to_string(),
            })?;
            self.stage(
                &repo,
                &source,
                manifest,
                RebootWhen::Window,
                Origin::Region,
                progress,
            )
            .await
        }
        .await;
        self.finish_import(&lock, &before, &source, result)
            .map(Some)
    }

    /// The record's lock and the record, when a new release may be imported now.
    fn lock_for_import(&self) -> Result<(RecordLock, UpdateRecord), UpdateError> {
        let lock = self.record.try_lock()?;
        let before = lock.read()?;
        if !matches!(before.phase, Phase::Idle | Phase::Staged { .. }) {
            return Err(UpdateError::WrongPhase {
                phase: before.phase.name(),
                what: "a new release can be imported once the current update has finished".into(),
            });
        }
        Ok((lock, before))
    }

    /// Records that `source` is being imported, so that a process killed midway leaves a trace
    /// [`Self::recover`] cleans up after.
    fn mark_importing(&self, lock: &RecordLock, source: &ImportSource) -> Result<(), UpdateError> {
        let since = self.clock.now();
        lock.update(|record| {
            record.phase = Phase::Importing {
                source: source.to_string(),
                since,
            };
        })?;
        Ok(())
    }

    /// Records how an import ended: the release staged (and the waiver it was accepted under,
    /// counted), or the phase as it was `before` with the refusal counted (or the error noted).
    fn finish_import(
        &self,
        lock: &RecordLock,
        before: &UpdateRecord,
        source: &ImportSource,
        result: Result<Accepted, UpdateError>,
    ) -> Result<Version, UpdateError> {
        let label = source.to_string();
        let now = self.clock.now();
        match &result {
            Ok(Accepted { staged, waiver }) => {
                let version = staged.manifest.version.clone();
                let waiver_use = waiver.as_ref().map(|terms| WaiverUse {
                    site: terms.site.clone(),
                    reason: terms.reason.clone(),
                    issued: terms.issued,
                    expires: terms.expires,
                    version: version.clone(),
                    source: label.clone(),
                    used_at: now,
                });
                lock.update(|record| {
                    record.phase = Phase::Staged {
                        staged: staged.clone(),
                    };
                    record.last_error = None;
                    if let Some(waiver_use) = waiver_use {
                        record.use_waiver(waiver_use);
                    }
                })?;
                self.remove_other_staged(&version);
                if let Some(terms) = waiver {
                    warn!(
                        %version,
                        source = %label,
                        site = %terms.site,
                        reason = %terms.reason,
                        expires = %terms.expires,
                        "release accepted under a freshness waiver: its metadata had expired"
                    );
                }
                info!(%version, source = %label, "release verified and staged");
            }
            Err(err) => {
                lock.update(|record| {
                    record.phase = before.phase.clone();
                    match err {
                        UpdateError::Refused { kind, reason } => {
                            record.refuse(&label, kind, reason, now);
                        }
                        other => record.last_error = Some(other.to_string()),
                    }
                })?;
                warn!(source = %label, %err, "release not imported");
            }
        }
        let _ = std::fs::remove_dir_all(self.incoming());
        result.map(|accepted| accepted.staged.manifest.version)
    }

    fn incoming(&self) -> PathBuf {
        self.settings.dir.join("incoming")
    }

    fn staged_dir(&self, version: &Version) -> PathBuf {
        self.settings.dir.join("staged").join(version.to_string())
    }

    fn remove_other_staged(&self, keep: &Version) {
        let Ok(entries) = std::fs::read_dir(self.settings.dir.join("staged")) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            if entry.file_name().to_string_lossy() != keep.to_string() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// `source`'s repository, its metadata verified against the root of trust, and the releases it
    /// offers: a bundle is unpacked into the incoming area first, a repository online is read where
    /// it is. The waiver offered in case the metadata expired is the first of: `waiver_file`, the
    /// one beside the bundle on a stick, the one inside the bundle. The clock is checked against the
    /// newest time this node has seen (`before`) first; a verification that passed moves that time
    /// forward.
    async fn verified(
        &self,
        lock: &RecordLock,
        before: &UpdateRecord,
        source: &ImportSource,
        waiver_file: Option<&Path>,
        progress: &dyn ImportProgress,
    ) -> Result<(VerifiedRepository, Vec<ReleaseManifest>), UpdateError> {
        let now = self.clock.now();
        if let Some(known) = before.last_known_time.filter(|known| now < *known) {
            return Err(UpdateError::Refused {
                kind: "clock",
                reason: format!(
                    "the clock says {now}, before {known}, the newest time this node has seen: a clock stepped back would make expired metadata look current"
                ),
            });
        }
        let repo = self.verify_source(source, waiver_file, progress).await?;
        lock.update(|record| {
            record.last_known_time =
                Some(record.last_known_time.map_or(now, |known| known.max(now)));
        })?;
        let offered = repo
            .offered()
            .await
            .map_err(UpdateError::from_release(source))?;
        Ok((repo, offered))
    }

    async fn verify_source(
        &self,
        source: &ImportSource,
        waiver_file: Option<&Path>,
        progress: &dyn ImportProgress,
    ) -> Result<VerifiedRepository, UpdateError> {
        let incoming = self.incoming();
        let mut waiver = match waiver_file {
            Some(path) => Some(read_waiver(path)?),
            None => None,
        };
        if !matches!(source, ImportSource::Repository { .. }) {
            progress.step(&ImportStep::Reading);
            let beside = self.extract(source, &incoming).await?;
            let inside = incoming.join(WAIVER_FILE);
            waiver = match (waiver, beside) {
                (Some(given), _) | (None, Some(given)) => Some(given),
                (None, None) if inside.is_file() => Some(read_waiver(&inside)?),
                (None, None) => None,
            };
        }
        progress.step(&ImportStep::Verifying);
        let root =
            std::fs::read(&self.settings.root_of_trust).map_err(|err| UpdateError::Host {
                step: "reading the root of trust",
                reason: format!("{}: {err}", self.settings.root_of_trust.display()),
            })?;
        let datastore = self.settings.dir.join("tuf");
        let trust = Trust::new(&root, &datastore);
        let offered = waiver.as_deref().map(|document| OfferedWaiver {
            document,
            site: self.settings.site.as_deref(),
            now: self.clock.now(),
        });
        match source {
            ImportSource::Repository { url, client } => {
                verify::discover_remote(url, client.clone(), &trust, offered.as_ref()).await
            }
            ImportSource::Bundle(_) | ImportSource::Device(_) => {
                verify::discover(&incoming, &trust, offered.as_ref()).await
            }
        }
        .map_err(UpdateError::from_release(source))
    }

    /// The release to take among `offered`, or the refusal that says why there is none (a bundle
    /// offers one release; when a repository offers several, the newest one's refusal is the news).
    fn choose<'a>(
        &self,
        offered: &'a [ReleaseManifest],
        failed: &BTreeSet<Version>,
    ) -> Result<&'a ReleaseManifest, UpdateError> {
        let running = &self.settings.running;
        if let Some(manifest) = policy::choose(running, offered, failed) {
            return Ok(manifest);
        }
        let Some(newest) = offered.iter().max_by(|a, b| a.version.cmp(&b.version)) else {
            return Err(UpdateError::Refused {
                kind: "manifest",
                reason: "the source carries no release".into(),
            });
        };
        Err(match policy::admit(running, newest, failed) {
            Err(refusal) => UpdateError::Refused {
                kind: refusal.label(),
                reason: refusal.to_string(),
            },
            // Admissible alone, but above the ceiling a regret release sets.
            Ok(()) => UpdateError::Refused {
                kind: "downgrade",
                reason: format!(
                    "none of the {} releases offered is admissible on {running}",
                    offered.len()
                ),
            },
        })
    }

    /// Writes `manifest`'s artifacts from `repo` into its staging directory, each verified as it
    /// streams.
    async fn stage(
        &self,
        repo: &VerifiedRepository,
        source: &ImportSource,
        manifest: &ReleaseManifest,
        reboot: RebootWhen,
        origin: Origin,
        progress: &dyn ImportProgress,
    ) -> Result<Accepted, UpdateError> {
        let version = manifest.version.clone();
        progress.step(&ImportStep::Staging(version.clone()));
        let staged = repo
            .stage(manifest, &self.staged_dir(&version))
            .await
            .map_err(UpdateError::from_release(source))?;
        Ok(Accepted {
            staged: Staged {
                manifest: staged.manifest,
                dir: staged.dir,
                staged_at: self.clock.now(),
                reboot,
                boot_attempts: 0,
                origin,
            },
            waiver: repo.waiver().cloned(),
        })
    }

    /// Unpacks the bundle of `source` (a file, or the one bundle on the filesystem of a block
    /// device) into `incoming`; returns the waiver document beside the bundle on a stick, if any
    /// (read while the stick is mounted).
    async fn extract(
        &self,
        source: &ImportSource,
        incoming: &Path,
    ) -> Result<Option<Vec<u8>>, UpdateError> {
        let (path, device) = match source {
            ImportSource::Bundle(path) => (path.clone(), false),
            ImportSource::Device(path) => (path.clone(), true),
            ImportSource::Repository { .. } => return Ok(None),
        };
        let origin = path.display().to_string();
        let unreadable = move |reason: String| UpdateError::Source {
            origin: origin.clone(),
            reason,
        };
        std::fs::metadata(&path).map_err(|err| unreadable(err.to_string()))?;
        let limits = self.settings.limits;
        let incoming = incoming.to_path_buf();
        let mounter = self.mounter.clone();
        let run_dir = self.settings.run_dir.clone();
        let work = move || -> Result<Option<Vec<u8>>, UpdateError> {
            if device {
                crate::system::mount::read_mounted(
                    mounter.as_ref(),
                    &path,
                    &run_dir,
                    "scs-edge-update",
                    |mount_point| {
                        let bundle = bundle_on_medium(mount_point).map_err(&unreadable)?;
                        let waiver = waiver_on_medium(mount_point)
                            .map_err(&unreadable)?
                            .map(|waiver| read_waiver(&waiver))
                            .transpose()?;
                        bundle::extract(&bundle, &incoming, &limits)
                            .map_err(|err| UpdateError::refused(&err))?;
                        Ok(waiver)
                    },
                )
                .map_err(|err| unreadable(err.to_string()))?
            } else {
                bundle::extract(&path, &incoming, &limits)
                    .map_err(|err| UpdateError::refused(&err))?;
                Ok(None)
            }
        };
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|err| UpdateError::Host {
                step: "reading the bundle",
                reason: err.to_string(),
            })?
    }

    /// Drops the release the region offered while it is only staged, once the region's desired
    /// version is `wanted` and that is another one or none: a rollout paused or taken back must
    /// not go on writing slots on the sites that had not got that far. Returns the version
    /// dropped. Releases someone at the node asked for stay, and so does anything past staging:
    /// a written slot is the reboot's to decide. The record goes back to idle first, durably, so
    /// a power cut never leaves a record that names a release whose files are gone.
    pub fn withdraw(&self, wanted: Option<&Version>) -> Result<Option<Version>, UpdateError> {
        let lock = self.record.try_lock()?;
        let Phase::Staged { staged } = lock.read()?.phase else {
            return Ok(None);
        };
        let version = staged.manifest.version;
        // A release staged again after a boot that did not reach it was past staging once.
        let untouched = staged.boot_attempts == 0;
        if staged.origin != Origin::Region || !untouched || wanted == Some(&version) {
            return Ok(None);
        }
        lock.update(|record| record.phase = Phase::Idle)?;
        let dir = self.staged_dir(&version);
        crate::system::file::remove_dir_durably(&dir).map_err(|err| UpdateError::Host {
            step: "removing a release the region withdrew",
            reason: format!("{}: {err}", dir.display()),
        })?;
        info!(%version, wanted = ?wanted.map(ToString::to_string), "the region no longer offers the staged release; dropped");
        Ok(Some(version))
    }

    /// Writes the staged release into the inactive slot. An install interrupted by a power cut
    /// (the record says installing, nobody holds the lock) starts over. Returns the version
    /// installed, or `None` when nothing was staged.
    pub fn install_staged(
        &self,
        progress: &dyn ImportProgress,
    ) -> Result<Option<Version>, UpdateError> {
        let lock = self.record.try_lock()?;
        let (Phase::Staged { staged } | Phase::Installing { staged, .. }) = lock.read()?.phase
        else {
            return Ok(None);
        };
        let version = staged.manifest.version.clone();
        progress.step(&ImportStep::Installing(version.clone()));
        let since = self.clock.now();
        lock.update(|record| {
            record.phase = Phase::Installing {
                staged: staged.clone(),
                since,
            };
        })?;
        match self.sysupdate.install(&staged.dir, &version) {
            Ok(()) => {
                let at = self.clock.now();
                lock.update(|record| {
                    record.phase = Phase::Installed { staged, at };
                    record.last_error = None;
                })?;
                info!(%version, "release written into the inactive slot");
                Ok(Some(version))
            }
            Err(reason) => {
                lock.update(|record| {
                    record.phase = Phase::Staged { staged };
                    record.last_error = Some(format!("writing the slot: {reason}"));
                })?;
                Err(UpdateError::Host {
                    step: "writing the inactive slot",
                    reason,
                })
            }
        }
    }

    /// The installed release when a reboot into it is due at `now`: asked for now, or the
    /// maintenance window in force ([`window::RebootWindow`]), if there is one, is open.
    pub fn reboot_due(
        &self,
        window: Option<&window::MaintenanceWindow>,
        now: Timestamp,
    ) -> Result<Option<Version>, UpdateError> {
        Ok(match self.record.read()?.phase {
            Phase::Installed { staged, .. }
                if staged.reboot == RebootWhen::Now
                    || window.is_none_or(|window| window.contains(now)) =>
            {
                Some(staged.manifest.version)
            }
            _ => None,
        })
    }

    /// The version whose reboot was asked for and has not happened: phase `Rebooting` while the
    /// daemon that asked still runs. Its servers are stopped already, so the watcher asks again
    /// rather than leave a drained node running the old version.
    pub fn reboot_pending(&self) -> Result<Option<Version>, UpdateError> {
        Ok(match self.record.read()?.phase {
            Phase::Rebooting { version, .. } => Some(version),
            _ => None,
        })
    }

    /// Stops the workloads and reboots into the installed release. The servers that were ACTIVE
    /// are recorded first, so the gate after the boot knows what must come back.
    pub async fn reboot_into_installed(
        &self,
        drain: &dyn Drain,
        power: &dyn Power,
        stop_timeout: Duration,
    ) -> Result<(), UpdateError> {
        let lock = self.record.try_lock()?;
        let Phase::Installed { staged, .. } = lock.read()?.phase else {
            return Ok(());
        };
        let version = staged.manifest.version.clone();
        let restore =
            drain
                .stop_workloads(stop_timeout)
                .await
                .map_err(|reason| UpdateError::Host {
                    step: "stopping the servers",
                    reason,
                })?;
        let at = self.clock.now();
        lock.update(|record| {
            record.phase = Phase::Rebooting {
                version: version.clone(),
                staged: staged.clone(),
                from: self.settings.running.clone(),
                restore: restore.clone(),
                at,
            };
        })?;
        info!(%version, servers = restore.len(), "rebooting into the new version");
        power.reboot().await.map_err(|reason| UpdateError::Host {
            step: REBOOTING,
            reason,
        })
    }

    /// Clears `version`'s failure so it may be imported again (the explicit retry).
    pub fn retry(&self, version: &Version) -> Result<bool, UpdateError> {
        let lock = self.record.try_lock()?;
        Ok(lock.update(|record| record.failed.remove(version).is_some())?)
    }

    /// Drops what a killed process left behind: an import that never finished (its partial
    /// staging area goes, the phase returns to idle). Called when the daemon starts.
    pub fn recover(&self) -> Result<(), UpdateError> {
        let lock = match self.record.try_lock() {
            Ok(lock) => lock,
            // Someone is working on it right now: nothing was abandoned.
            Err(RecordError::Busy { .. }) => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        if let Phase::Importing { source, .. } = lock.read()?.phase {
            warn!(%source, "an import was interrupted; dropping it");
            let _ = std::fs::remove_dir_all(self.incoming());
            lock.update(|record| record.phase = Phase::Idle)?;
        }
        Ok(())
    }

    /// The lock, for the gate (which runs in its own process at boot).
    pub fn lock_wait(&self) -> Result<RecordLock, UpdateError> {
        Ok(self.record.lock_wait()?)
    }
}

/// The one bundle file in a stick's top directory.
fn bundle_on_medium(mount_point: &Path) -> Result<PathBuf, String> {
    let entries = std::fs::read_dir(mount_point).map_err(|err| err.to_string())?;
    let bundles: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == BUNDLE_EXTENSION)
                && std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file())
        })
        .collect();
    match bundles.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "the {STICK_LABEL} filesystem has no *.{BUNDLE_EXTENSION} file in its top directory"
        )),
        _ => Err(format!(
            "the {STICK_LABEL} filesystem has {} *.{BUNDLE_EXTENSION} files; it must carry exactly one",
            bundles.len()
        )),
    }
}

/// The freshness waiver next to the bundle in a stick's top directory (`waiver.json` or
/// `*.waiver.json`), if there is one.
fn waiver_on_medium(mount_point: &Path) -> Result<Option<PathBuf>, String> {
    let entries = std::fs::read_dir(mount_point).map_err(|err| err.to_string())?;
    let waivers: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name == WAIVER_FILE || name.ends_with(WAIVER_SUFFIX))
                && std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file())
        })
        .collect();
    match waivers.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err(format!(
            "the {STICK_LABEL} filesystem has {} waiver files ({WAIVER_FILE}, *{WAIVER_SUFFIX}); it may carry one",
            waivers.len()
        )),
    }
}

/// The waiver document in `path` (size-limited; parsed only if the metadata has expired). An
/// unreadable file is no verdict on a release.
fn read_waiver(path: &Path) -> Result<Vec<u8>, UpdateError> {
    scs_edge_release::waiver::read_document(path).map_err(|err| UpdateError::Source {
        origin: path.display().to_string(),
        reason: match err {
            ReleaseError::Io { source, .. } => source.to_string(),
            other => other.to_string(),
        },
    })
}

/// A release staged, and the waiver it was accepted under when its metadata had expired.
#[derive(Debug)]
struct Accepted {
    staged: Staged,
    waiver: Option<WaiverTerms>,
}

/// `IMAGE_VERSION` of the running OS as a version.
pub fn running_version(os_release: &str) -> Option<Version> {
    crate::federation::report::image_version(os_release)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests;
