//! A node's side: verify a repository — an extracted bundle, or one served over HTTP(S) — against
//! the root of trust in the image, read the releases it offers and stage one.
//!
//! tough does the TUF work: signatures and thresholds, the root chain, role versions that must never
//! go backwards and the last known time (both kept in a datastore on the data partition, so they
//! survive reboots and updates), expiry, size limits, target hashes and lengths, target paths. This
//! module adds what TUF leaves to the application: each manifest must agree with the targets
//! metadata it sits in, and artifacts are written only where the caller says. Both kinds of source
//! end in the same [`VerifiedRepository`]; only the transport differs.
//!
//! Expiry is enforced, with one exception a node must be handed explicitly: a freshness waiver
//! ([`crate::waiver`]) for its site, consulted only when the metadata verified in every respect but
//! its age.

use crate::http_transport::HttpClientTransport;
use crate::repository::{dir_url, hex, target_name};
use crate::waiver::{Waiver, WaiverTerms};
use crate::{METADATA_DIR, RefusalKind, ReleaseError, TARGETS_DIR};
use futures::TryStreamExt as _;
use scs_edge_proto::release::ReleaseManifest;
use std::path::{Path, PathBuf};
use tough::{
    ExpirationEnforcement, FilesystemTransport, IntoVec as _, Limits, Prefix, RepositoryLoader,
    Transport,
};
use url::Url;

/// A manifest above this is refused before it is read.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// What a node trusts and what it remembers between verifications.
#[derive(Debug, Clone)]
pub struct Trust<'a> {
    /// The root of trust, `root.json` as baked into `/usr`.
    pub root: &'a [u8],
    /// tough's datastore: the newest timestamp, snapshot and targets metadata seen and the latest
    /// known time. On persistent storage, created if missing.
    pub datastore: &'a Path,
    /// Metadata size limits (endless-data attacks).
    pub limits: Limits,
}

impl<'a> Trust<'a> {
    /// `root` and `datastore` with tough's default metadata size limits (root 1 MiB, timestamp
    /// 1 MiB, targets 10 MiB, 1024 root updates).
    pub fn new(root: &'a [u8], datastore: &'a Path) -> Self {
        Self {
            root,
            datastore,
            limits: Limits::default(),
        }
    }
}

/// A freshness waiver a node offers with a discovery, and what it is checked against. The document
/// stays unread unless the metadata has expired.
#[derive(Debug, Clone, Copy)]
pub struct OfferedWaiver<'a> {
    /// The waiver document as it came (a file in the bundle, beside it, or named by the operator).
    pub document: &'a [u8],
    /// This node's site name, which the waiver must name exactly; `None` when the node has none.
    pub site: Option<&'a str>,
    /// The node's time, for the waiver's `issued` and `expires`.
    pub now: jiff::Timestamp,
}

/// A repository whose metadata verified; its targets are verified as they are read.
#[derive(Debug)]
pub struct VerifiedRepository {
    repo: tough::Repository,
    holds: Holdings,
    waiver: Option<WaiverTerms>,
}

/// Which of the targets its metadata lists a copy of the repository can serve.
#[derive(Debug)]
enum Holdings {
    /// A bundle: the metadata lists every release ever published, the targets folder holds one.
    Folder(PathBuf),
    /// The repository itself, online: every target.
    Everything,
}

/// A release whose artifacts are written, verified, into a directory.
#[derive(Debug, Clone)]
pub struct StagedRelease {
    /// Its manifest.
    pub manifest: ReleaseManifest,
    /// Where the artifacts are, under their target names.
    pub dir: PathBuf,
}

/// Verifies the repository laid out in `dir` (`metadata/`, `targets/`) against `trust`, enforcing
/// expiry: this is discovery, the moment a stale or frozen repository must be noticed. Metadata that
/// verified in every respect but its age is accepted under `waiver` when that holds for this node;
/// the waiver is not read otherwise.
pub async fn discover(
    dir: &Path,
    trust: &Trust<'_>,
    waiver: Option<&OfferedWaiver<'_>>,
) -> Result<VerifiedRepository, ReleaseError> {
    let (repo, waiver) = load(
        trust,
        dir_url(&dir.join(METADATA_DIR))?,
        dir_url(&dir.join(TARGETS_DIR))?,
        FilesystemTransport,
        &dir.display().to_string(),
        waiver,
    )
    .await?;
    Ok(VerifiedRepository {
        repo,
        holds: Holdings::Folder(dir.join(TARGETS_DIR)),
        waiver,
    })
}

/// Verifies the repository published at `base` (`<base>/metadata/`, `<base>/targets/`, as the
/// release tool lays it out) exactly as [`discover`] does, fetching over HTTP(S) with `client` —
/// built by the caller, so it carries the roots and the client identity the server asks for.
/// Targets are fetched only when read or staged. A server that cannot be reached, or does not serve
/// a file, is [`ReleaseError::Unreachable`], not a refusal.
pub async fn discover_remote(
    base: &Url,
    client: reqwest::Client,
    trust: &Trust<'_>,
    waiver: Option<&OfferedWaiver<'_>>,
) -> Result<VerifiedRepository, ReleaseError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let folder = format!("{}/", base.path());
        base.set_path(&folder);
    }
    let join = |dir: &str| {
        base.join(&format!("{dir}/"))
            .map_err(|err| ReleaseError::Release(format!("{base}: {err}")))
    };
    let (repo, waiver) = load(
        trust,
        join(METADATA_DIR)?,
        join(TARGETS_DIR)?,
        HttpClientTransport::new(client),
        base.as_str(),
        waiver,
    )
    .await?;
    Ok(VerifiedRepository {
        repo,
        holds: Holdings::Everything,
        waiver,
    })
}

/// tough's client over `transport`, with the node's trust and expiry enforced — unless the
/// metadata expired and `waiver` holds; then the repository comes with the waiver's terms.
///
/// Expiry alone is waived. The repository is loaded again with `ExpirationEnforcement::Unsafe`,
/// which in tough 0.24 skips `check_expired` (root, timestamp, snapshot, targets, delegations) and
/// the expiry check of `read_target`, nothing else: signatures and thresholds, the root chain, role
/// versions against the datastore, hashes, lengths, size limits and target names are checked as
/// before, and the last known time is sampled (and a clock stepped back refused) at the start of
/// every load whatever the enforcement — the first, enforcing load has refused a stepped-back
/// clock before the waiver is even read. The waiver's shape, site and time are checked before the
/// second load; after it, that the root it ended on has not expired (the waiver does not cover the
/// root) and that its targets keys signed the waiver (so after a rotation, the new targets key is
/// the one that counts). A waiver that fails only there leaves the datastore holding the expired
/// metadata's role versions — metadata that is genuinely signed, so the rollback floor only rises
/// to where it would have been had the node seen it while fresh.
async fn load<T: Transport + Clone + 'static>(
    trust: &Trust<'_>,
    metadata: Url,
    targets: Url,
    transport: T,
    what: &str,
    waiver: Option<&OfferedWaiver<'_>>,
) -> Result<(tough::Repository, Option<WaiverTerms>), ReleaseError> {
    std::fs::create_dir_all(trust.datastore).map_err(ReleaseError::io(trust.datastore))?;
    let loader = |enforcement| {
        RepositoryLoader::new(&trust.root, metadata.clone(), targets.clone())
            .transport(transport.clone())
            .limits(trust.limits)
            .datastore(trust.datastore)
            .expiration_enforcement(enforcement)
    };
    let expired = match loader(ExpirationEnforcement::Safe)
        .load()
        .await
        .map_err(ReleaseError::tuf(format!("verifying {what}")))
    {
        Ok(repo) => return Ok((repo, None)),
        Err(err) if err.refusal_kind() == RefusalKind::Expired => err,
        Err(err) => return Err(err),
    };
    let Some(offered) = waiver else {
        return Err(expired);
    };
    let refused = |source| ReleaseError::Waiver {
        context: format!("{expired}, and the freshness waiver does not apply"),
        source,
    };
    let waiver = Waiver::parse(offered.document).map_err(refused)?;
    waiver
        .check_terms(offered.site, offered.now)
        .map_err(refused)?;
    let repo = loader(ExpirationEnforcement::Unsafe)
        .load()
        .await
        .map_err(ReleaseError::tuf(format!(
            "verifying {what} under a freshness waiver"
        )))?;
    Waiver::check_root(repo.root(), offered.now).map_err(refused)?;
    waiver.check_signatures(repo.root()).map_err(refused)?;
    Ok((repo, Some(waiver.terms().clone())))
}

impl VerifiedRepository {
    /// tough's view of it, for the region's mirror.
    pub(crate) fn tough(&self) -> &tough::Repository {
        &self.repo
    }

    /// The waiver this repository was accepted under — its metadata had expired — or `None` when
    /// it was fresh.
    pub fn waiver(&self) -> Option<&WaiverTerms> {
        self.waiver.as_ref()
    }

    /// The releases whose manifests this copy of the repository carries (a bundle carries one,
    /// while its metadata lists every release ever published; the repository online carries them
    /// all), each read through TUF and checked
    /// against the targets metadata: its version matches its name, and every artifact it lists is a
    /// target with the same hash and length.
    pub async fn offered(&self) -> Result<Vec<ReleaseManifest>, ReleaseError> {
        let mut names: Vec<_> = self
            .repo
            .targets()
            .signed
            .targets
            .iter()
            .filter(|(name, target)| {
                let raw = name.raw();
                raw.starts_with("scs-edge_")
                    && raw.ends_with(".manifest.json")
                    && match &self.holds {
                        Holdings::Folder(dir) => dir
                            .join(format!("{}.{raw}", hex(&target.hashes.sha256)))
                            .is_file(),
                        Holdings::Everything => true,
                    }
            })
            .map(|(name, _)| name.clone())
            .collect();
        names.sort_by(|a, b| a.raw().cmp(b.raw()));
        let mut manifests = Vec::with_capacity(names.len());
        for name in names {
            manifests.push(self.manifest(&name).await?);
        }
        Ok(manifests)
    }

    async fn manifest(&self, name: &tough::TargetName) -> Result<ReleaseManifest, ReleaseError> {
        let targets = &self.repo.targets().signed.targets;
        let length = targets.get(name).map_or(0, |target| target.length);
        if length > MAX_MANIFEST_BYTES {
            return Err(ReleaseError::Release(format!(
                "{} is {length} bytes, above the {MAX_MANIFEST_BYTES}-byte limit",
                name.raw()
            )));
        }
        let stream = self
            .repo
            .read_target(name)
            .await
            .map_err(ReleaseError::tuf(format!("reading {}", name.raw())))?
            .ok_or_else(|| ReleaseError::Release(format!("{} is not a target", name.raw())))?;
        let bytes = stream
            .into_vec()
            .await
            .map_err(ReleaseError::tuf(format!("reading {}", name.raw())))?;
        let manifest: ReleaseManifest = serde_json::from_slice(&bytes)
            .map_err(|err| ReleaseError::Release(format!("{}: {err}", name.raw())))?;
        let expected = scs_edge_proto::release::manifest_target(&manifest.version);
        if expected != name.raw() {
            return Err(ReleaseError::Release(format!(
                "{} describes version {}",
                name.raw(),
                manifest.version
            )));
        }
        for artifact in &manifest.artifacts {
            let listed = target_name(&artifact.target)
                .ok()
                .and_then(|target| targets.get(&target));
            let agrees = listed.is_some_and(|target| {
                target.length == artifact.length && hex(&target.hashes.sha256) == artifact.sha256
            });
            // Partition images name their slot's UUID, the UKI none.
            let uuid_fits = artifact.partition_uuid.is_some()
                == artifact.kind.partition_label(&manifest.version).is_some();
            let named = uuid_fits
                && scs_edge_proto::release::target_name(
                    &manifest.version,
                    artifact.kind,
                    artifact.partition_uuid,
                )
                .is_some_and(|name| name == artifact.target);
            if !agrees || !named {
                return Err(ReleaseError::Release(format!(
                    "{}: artifact {} does not match the signed targets",
                    name.raw(),
                    artifact.target
                )));
            }
        }
        Ok(manifest)
    }

    /// Puts `manifest`'s artifacts into `dir` under their target names; tough checks each one's
    /// length and SHA-256 against the signed targets as it streams. A bundle's targets already lie
    /// on this disk: each is read through that check and then moved, not written a second time
    /// (hundreds of megabytes per release; the node's disk and time are what an import costs).
    /// Online targets are downloaded into `dir`. On any error `dir` is removed, so a half-staged
    /// release is never mistaken for a whole one.
    pub async fn stage(
        &self,
        manifest: &ReleaseManifest,
        dir: &Path,
    ) -> Result<StagedRelease, ReleaseError> {
        let result = self.stage_into(manifest, dir).await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(dir);
        }
        result
    }

    async fn stage_into(
        &self,
        manifest: &ReleaseManifest,
        dir: &Path,
    ) -> Result<StagedRelease, ReleaseError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(ReleaseError::io(dir))?;
        }
        std::fs::create_dir_all(dir).map_err(ReleaseError::io(dir))?;
        for artifact in &manifest.artifacts {
            let name = target_name(&artifact.target)?;
            let context = || format!("staging {}", artifact.target);
            let Holdings::Folder(targets_dir) = &self.holds else {
                self.repo
                    .save_target(&name, dir, Prefix::None)
                    .await
                    .map_err(ReleaseError::tuf(context()))?;
                continue;
            };
            check_target(&self.repo, &name).await?;
            let held = targets_dir.join(format!("{}.{}", artifact.sha256, name.raw()));
            let into = dir.join(name.raw());
            if let Err(err) = std::fs::rename(&held, &into) {
                // Another filesystem: copy through the same check instead.
                if err.kind() != std::io::ErrorKind::CrossesDevices {
                    return Err(ReleaseError::io(&held)(err));
                }
                self.repo
                    .save_target(&name, dir, Prefix::None)
                    .await
                    .map_err(ReleaseError::tuf(context()))?;
            }
        }
        crate::durable::make_durable(dir)?;
        Ok(StagedRelease {
            manifest: manifest.clone(),
            dir: dir.to_path_buf(),
        })
    }
}

/// Reads target `name` through tough, which checks its length and SHA-256 against the signed
/// targets as it streams: a held file is trusted only once this returned.
pub(crate) async fn check_target(
    repo: &tough::Repository,
    name: &tough::TargetName,
) -> Result<(), ReleaseError> {
    let context = || format!("checking {}", name.raw());
    let stream = repo
        .read_target(name)
        .await
        .map_err(ReleaseError::tuf(context()))?
        .ok_or_else(|| ReleaseError::Release(format!("{} is not a target", name.raw())))?;
    // The stream ends in an error when the length or the hash does not match.
    stream
        .try_for_each(|_| std::future::ready(Ok(())))
        .await
        .map_err(ReleaseError::tuf(context()))
}
