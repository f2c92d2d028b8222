//! The region's copy of the release repository (decision 0015): what a release manager published
//! with the release tool, verified against the fleet's root of trust before a single file of it is
//! served, and kept fresh with the one key the region holds — the timestamp key.
//!
//! The region holds neither the root, the targets nor the snapshot key, so it can neither make nor
//! alter a release: every target and every role but the timestamp was signed offline and is served
//! byte for byte. What the region signs is freshness. Each accepted publication gets a timestamp one
//! version above both the one the region served last and the one the release tool wrote, so the
//! tool's sequence and the region's refreshes merge into one that never goes backwards for a node.
//!
//! Invariants a node relies on: the mirror holds every target its served metadata lists (a node
//! reads the manifests it is offered, and a listed file missing would fail its whole check), and
//! `timestamp.json` — the file a node reads first — is replaced last and atomically, so a node sees
//! the previous publication or the new one, whole. A publication that is refused changes nothing: it
//! is verified against a scratch copy of the mirror's TUF datastore, and files are copied only once
//! every check passed.

use crate::bundle::ExtractLimits;
use crate::durable;
use crate::keys::KeySet;
use crate::repository::{Repository, hex, sign_timestamp};
use crate::verify::{self, Trust};
use crate::{Lifetimes, METADATA_DIR, ReleaseError, TARGETS_DIR};
use scs_edge_proto::release::ReleaseManifest;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use tough::schema::Role as _;

/// The mirror's TUF datastore: the role versions and the time of the last accepted publication,
/// so a publication that rolls a role back is refused as a node would refuse it.
const DATASTORE: &str = "accepted";
/// Serialises publications and refreshes, also across processes (the CLI and the serving region).
const LOCK: &str = "lock";

/// The region's release repository on disk: `repository/` (served to sites), `accepted/` (the
/// datastore), `lock`.
#[derive(Debug, Clone)]
pub struct Mirror {
    dir: PathBuf,
    repository: Repository,
}

/// The caller's own rules for the releases a publication adds (verified, oldest first), applied
/// before anything changes: the region refuses a release older than its fleet. A refusal's text
/// becomes [`ReleaseError::Release`].
pub type Vet<'a> = &'a (dyn Fn(&[ReleaseManifest]) -> Result<(), String> + Sync);

/// Where a publication comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A repository folder (`metadata/`, `targets/`): the release tool's repository, or any copy
    /// of it.
    Folder(&'a Path),
    /// An air-gap bundle, unpacked within `limits`. It carries one release, so the mirror must hold
    /// the others its metadata lists.
    Bundle(&'a Path, &'a ExtractLimits),
}

/// What an accepted publication changed.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The releases it added, oldest first; releases the mirror held already are not repeated.
    pub added: Vec<ReleaseManifest>,
    /// The version of the timestamp the region signed for it.
    pub timestamp_version: u64,
}

impl Mirror {
    /// The mirror in `dir` (created on the first publication).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            repository: Repository::new(dir.join("repository")),
            dir,
        }
    }

    /// The repository sites are served from.
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// Verifies the release repository `source` brings against `root_of_trust` — the root baked
    /// into the fleet's image, never one the publication brings — adds what is new, and signs a
    /// timestamp for it with the timestamp key in `keys`. `vet` sees the releases it would add
    /// before anything changes.
    ///
    /// What is new is copied (or unpacked) into a private folder first and verified there, so what
    /// is served is exactly what was verified, whatever happens to the source meanwhile. Refused,
    /// with nothing changed: metadata that does not verify (unsigned, signed by another root,
    /// expired, a role rolled back behind an earlier publication, oversized), a target whose bytes
    /// do not match, a listed target neither the source nor the mirror holds, metadata that differs
    /// from the mirror's copy of the same version, a timestamp key the root does not list, and what
    /// `vet` refuses. The same publication again adds nothing and signs nothing.
    pub async fn accept(
        &self,
        source: Source<'_>,
        root_of_trust: &[u8],
        keys: &KeySet,
        lifetimes: &Lifetimes,
        now: jiff::Timestamp,
        vet: Vet<'_>,
    ) -> Result<Accepted, ReleaseError> {
        let _lock = self.lock()?;
        let scratch = Scratch::new(&self.dir)?;
        let incoming = scratch.0.join("incoming");
        match source {
            Source::Folder(folder) => {
                copy_files(
                    &folder.join(METADATA_DIR),
                    &incoming.join(METADATA_DIR),
                    |_| true,
                )?;
                let held = self.repository.targets_dir();
                copy_files(
                    &folder.join(TARGETS_DIR),
                    &incoming.join(TARGETS_DIR),
                    |name| !held.join(name).exists(),
                )?;
            }
            Source::Bundle(bundle, limits) => crate::bundle::extract(bundle, &incoming, limits)?,
        }
        self.accept_incoming(
            &scratch,
            &incoming,
            root_of_trust,
            keys,
            lifetimes,
            now,
            vet,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn accept_incoming(
        &self,
        scratch: &Scratch,
        incoming: &Path,
        root_of_trust: &[u8],
        keys: &KeySet,
        lifetimes: &Lifetimes,
        now: jiff::Timestamp,
        vet: Vet<'_>,
    ) -> Result<Accepted, ReleaseError> {
        let datastore = scratch.0.join(DATASTORE);
        copy_files(&self.dir.join(DATASTORE), &datastore, |_| true)?;
        let verified =
            verify::discover(incoming, &Trust::new(root_of_trust, &datastore), None).await?;
        let repo = verified.tough();
        let root = &repo.root().signed;

        // Every check before the first file moves.
        let targets = self.targets_to_move(repo, &incoming.join(TARGETS_DIR))?;
        let metadata = metadata_to_copy(repo, &incoming.join(METADATA_DIR), &self.repository)?;
        let current = self.repository.timestamp_if_published()?;
        let served_version = current.as_ref().map_or(0, |ts| ts.signed.version.get());
        if targets.is_empty() && metadata.is_empty() && current.is_some() {
            // The same publication again: nothing to add, nothing to sign.
            return Ok(Accepted {
                added: Vec::new(),
                timestamp_version: served_version,
            });
        }
        let mut added: Vec<ReleaseManifest> = verified.offered().await?;
        added.sort_by(|a, b| a.version.cmp(&b.version));
        vet(&added).map_err(ReleaseError::Release)?;
        let version = served_version.max(repo.timestamp().signed.version.get()) + 1;
        let timestamp = sign_timestamp(
            repo.timestamp().signed.clone(),
            version,
            root,
            keys,
            lifetimes,
            now,
        )
        .await?;
        for (name, _) in &targets {
            verify::check_target(repo, name).await?;
        }

        // Targets are content-addressed: one that moved while a later step fails is harmless.
        let targets_dir = self.repository.targets_dir();
        std::fs::create_dir_all(&targets_dir).map_err(ReleaseError::io(&targets_dir))?;
        for (_, file) in &targets {
            durable::commit(
                &incoming.join(TARGETS_DIR).join(file),
                &targets_dir.join(file),
            )?;
        }
        let metadata_dir = self.repository.metadata_dir();
        std::fs::create_dir_all(&metadata_dir).map_err(ReleaseError::io(&metadata_dir))?;
        for (name, bytes) in &metadata {
            durable::write_atomically(&metadata_dir.join(name), bytes)?;
        }
        // The commit point for nodes.
        self.repository.replace_timestamp(&timestamp)?;
        // Then the floor for the next publication; a crash before this only leaves it lower.
        copy_files(&datastore, &self.dir.join(DATASTORE), |_| true)?;
        Ok(Accepted {
            added,
            timestamp_version: version,
        })
    }

    /// The releases the mirror serves, read as a node reads them — verified against
    /// `root_of_trust` with a throwaway datastore, expiry enforced — so a mirror that would not
    /// verify at a node is noticed here first. Oldest first; empty before the first publication.
    pub async fn offered(
        &self,
        root_of_trust: &[u8],
    ) -> Result<Vec<ReleaseManifest>, ReleaseError> {
        if self.repository.timestamp_if_published()?.is_none() {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        let scratch = Scratch::new(&self.dir)?;
        let datastore = scratch.0.join(DATASTORE);
        let verified = verify::discover(
            self.repository.dir(),
            &Trust::new(root_of_trust, &datastore),
            None,
        )
        .await?;
        let mut offered = verified.offered().await?;
        offered.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(offered)
    }

    /// When the served timestamp expires; `None` before the first publication.
    pub fn timestamp_expires(&self) -> Result<Option<jiff::Timestamp>, ReleaseError> {
        Ok(self
            .repository
            .timestamp_if_published()?
            .map(|timestamp| timestamp.signed.expires))
    }

    /// Re-signs the served timestamp one version up with a fresh expiry: the region's periodic job,
    /// which keeps sites discovering (a node refuses a stale timestamp). Returns its version.
    pub async fn refresh_timestamp(
        &self,
        keys: &KeySet,
        lifetimes: &Lifetimes,
        now: jiff::Timestamp,
    ) -> Result<u64, ReleaseError> {
        let _lock = self.lock()?;
        self.repository
            .refresh_timestamp(keys, lifetimes, now)
            .await
    }

    /// The signed targets `incoming_targets` must supply — those the mirror does not hold yet — as
    /// (target name, consistent-snapshot file name).
    fn targets_to_move(
        &self,
        repo: &tough::Repository,
        incoming_targets: &Path,
    ) -> Result<Vec<(tough::TargetName, String)>, ReleaseError> {
        let held = self.repository.targets_dir();
        let mut missing = Vec::new();
        let mut moves = Vec::new();
        for (name, target) in &repo.targets().signed.targets {
            let file = format!("{}.{}", hex(&target.hashes.sha256), name.raw());
            if held.join(&file).is_file() {
                continue;
            }
            if incoming_targets.join(&file).is_file() {
                moves.push((name.clone(), file));
            } else {
                missing.push(name.raw().to_owned());
            }
        }
        if !missing.is_empty() {
            return Err(ReleaseError::Release(format!(
                "the signed targets list {} that neither this publication nor the mirror holds \
                 (a bundle carries one release: publish the release tool's repository once)",
                missing.join(", ")
            )));
        }
        moves.sort_by(|a, b| a.0.raw().cmp(b.0.raw()));
        Ok(moves)
    }

    fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>, ReleaseError> {
        std::fs::create_dir_all(&self.dir).map_err(ReleaseError::io(&self.dir))?;
        let path = self.dir.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ReleaseError::io(&path))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| ReleaseError::io(&path)(std::io::Error::from(errno)))
    }
}

/// The metadata files a node walks to reach the verified roles, as (file name, bytes): every
/// `N.root.json` up to the verified root (a node that trusts an older root follows the chain) and
/// the snapshot and targets of this publication, under their consistent-snapshot names. The
/// timestamp is not among them: the region signs its own. A file the mirror holds already must be
/// byte-identical: one version of a role is one document.
fn metadata_to_copy(
    repo: &tough::Repository,
    source_metadata: &Path,
    mirror: &Repository,
) -> Result<Vec<(String, Vec<u8>)>, ReleaseError> {
    let root = &repo.root().signed;
    let mut names: Vec<String> = (1..=root.version.get())
        .map(|version| format!("{version}.root.json"))
        .collect();
    names.push(repo.snapshot().signed.filename(root.consistent_snapshot));
    names.push(repo.targets().signed.filename(root.consistent_snapshot));
    let mut copy = Vec::new();
    for name in names {
        let from = source_metadata.join(&name);
        let bytes = std::fs::read(&from).map_err(ReleaseError::io(&from))?;
        let held = mirror.metadata_dir().join(&name);
        match std::fs::read(&held) {
            Ok(existing) if existing == bytes => {}
            Ok(_) => {
                return Err(ReleaseError::Release(format!(
                    "{name} differs from the mirror's copy of the same version: \
                     a role version is signed once"
                )));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => copy.push((name, bytes)),
            Err(err) => return Err(ReleaseError::io(&held)(err)),
        }
    }
    Ok(copy)
}

/// Copies the plain files of `from` (if it exists) whose names `wanted` accepts into `to`, each
/// atomically; links and folders are skipped, never followed.
fn copy_files(from: &Path, to: &Path, wanted: impl Fn(&OsStr) -> bool) -> Result<(), ReleaseError> {
    std::fs::create_dir_all(to).map_err(ReleaseError::io(to))?;
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(ReleaseError::io(from)(err)),
    };
    for entry in entries {
        let entry = entry.map_err(ReleaseError::io(from))?;
        let name = entry.file_name();
        let plain = entry
            .file_type()
            .map_err(ReleaseError::io(entry.path()))?
            .is_file();
        if plain && wanted(&name) {
            let into = to.join(&name);
            let partial = durable::partial_path(&into);
            std::fs::copy(entry.path(), &partial)
                .and_then(|_| std::fs::File::open(&partial)?.sync_all())
                .map_err(ReleaseError::io(&partial))?;
            durable::commit(&partial, &into)?;
        }
    }
    Ok(())
}

/// A private folder beside the mirror for one publication's checks, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(dir: &Path) -> Result<Self, ReleaseError> {
        let path = dir.join(format!("scratch-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&path).map_err(ReleaseError::io(&path))?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
