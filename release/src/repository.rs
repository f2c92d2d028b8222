//! The release repository a release manager keeps (and, later, the region serves): a TUF repository
//! with consistent snapshots, `metadata/` and `targets/`. Publishing adds one release — its manifest
//! and its four artifacts — and signs new targets, snapshot and timestamp metadata; refreshing the
//! timestamp re-signs only `timestamp.json`, the job of the online key.

use crate::keys::{KeySet, expires, latest_root};
use crate::{Lifetimes, METADATA_DIR, ReleaseError, TARGETS_DIR};
use scs_edge_proto::release::{
    Artifact, ArtifactKind, MANIFEST_SCHEMA, ReleaseManifest, manifest_target,
    target_name as release_target_name,
};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use tough::editor::RepositoryEditor;
use tough::editor::signed::{PathExists, SignedRole};
use tough::schema::{KeyHolder, RoleType, Root, Signed, Target, Timestamp};
use tough::{ExpirationEnforcement, FilesystemTransport, RepositoryLoader, TargetName};

/// What a release is made of and who may take it.
#[derive(Debug, Clone)]
pub struct NewRelease {
    /// `make image`'s output directory (`target/image`), holding `scs-edge_<version>.usr.raw` & co.
    pub image_dir: PathBuf,
    /// The image version.
    pub version: semver::Version,
    /// The oldest version that may update to it directly.
    pub min_from_version: semver::Version,
    /// The regret ceiling, when this release pulls the fleet back down.
    pub max_version: Option<semver::Version>,
}

/// A release repository on disk.
#[derive(Debug, Clone)]
pub struct Repository {
    dir: PathBuf,
}

impl Repository {
    /// The repository in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its `metadata/` folder.
    pub fn metadata_dir(&self) -> PathBuf {
        self.dir.join(METADATA_DIR)
    }

    /// Its `targets/` folder.
    pub fn targets_dir(&self) -> PathBuf {
        self.dir.join(TARGETS_DIR)
    }

    /// Whether anything was ever published (a `timestamp.json` exists).
    fn is_published(&self) -> bool {
        self.metadata_dir().join("timestamp.json").is_file()
    }

    /// The repository as it stands, read with tough from the newest root it holds. The release
    /// manager's own view: expiry is not enforced here (re-signing an expired timestamp is exactly
    /// what [`Self::refresh_timestamp`] is for); nodes always enforce it when they discover.
    async fn load(&self) -> Result<tough::Repository, ReleaseError> {
        let (_, root_path) = latest_root(&self.metadata_dir())?;
        let root = std::fs::read(&root_path).map_err(ReleaseError::io(&root_path))?;
        RepositoryLoader::new(
            &root,
            dir_url(&self.metadata_dir())?,
            dir_url(&self.targets_dir())?,
        )
        .transport(FilesystemTransport)
        .expiration_enforcement(ExpirationEnforcement::Unsafe)
        .load()
        .await
        .map_err(ReleaseError::tuf(format!("reading {}", self.dir.display())))
    }

    /// Adds `release` and signs targets, snapshot and timestamp one version up. Targets already in
    /// the repository stay, so older releases remain installable (and `max_version` can point at
    /// one). Refuses a version that is already published.
    pub async fn publish(
        &self,
        keys: &KeySet,
        release: &NewRelease,
        lifetimes: &Lifetimes,
        now: jiff::Timestamp,
    ) -> Result<ReleaseManifest, ReleaseError> {
        let (_, root_path) = latest_root(&self.metadata_dir())?;
        let (mut editor, next, next_timestamp) = if self.is_published() {
            let current = self.load().await?;
            let manifest_name = target_name(&manifest_target(&release.version))?;
            if current
                .targets()
                .signed
                .targets
                .contains_key(&manifest_name)
            {
                return Err(ReleaseError::Release(format!(
                    "version {} is already published",
                    release.version
                )));
            }
            let next = current.targets().signed.version.get() + 1;
            let next_timestamp = current.timestamp().signed.version.get() + 1;
            let editor = RepositoryEditor::from_repo(&root_path, current)
                .await
                .map_err(ReleaseError::tuf("opening the repository for editing"))?;
            (editor, next, next_timestamp)
        } else {
            let editor = RepositoryEditor::new(&root_path)
                .await
                .map_err(ReleaseError::tuf("opening the new repository"))?;
            (editor, 1, 1)
        };

        // Compressed targets and the manifest are written beside the repository, hashed, signed.
        let incoming = self.dir.join("incoming");
        std::fs::create_dir_all(&incoming).map_err(ReleaseError::io(&incoming))?;
        let partitions = partition_uuids(&release.image_dir, &release.version)?;
        let mut files = Vec::new();
        let mut artifacts = Vec::new();
        for kind in ArtifactKind::REQUIRED {
            let image_name = format!(
                "scs-edge_{}{}",
                release.version,
                kind.image_suffix().unwrap_or_default()
            );
            let image_path = release.image_dir.join(&image_name);
            if !image_path.is_file() {
                return Err(ReleaseError::ImageOutput {
                    dir: release.image_dir.clone(),
                    reason: format!(
                        "no {image_name} (built with --image-version={}?)",
                        release.version
                    ),
                });
            }
            let partition_uuid = match kind.partition_label(&release.version) {
                Some(label) => Some(*partitions.get(&label).ok_or_else(|| {
                    ReleaseError::ImageOutput {
                        dir: release.image_dir.clone(),
                        reason: format!(
                            "the disk image scs-edge_{}.raw has no partition labelled {label}",
                            release.version
                        ),
                    }
                })?),
                None => None,
            };
            let name =
                release_target_name(&release.version, kind, partition_uuid).unwrap_or_default();
            let path = if kind.compressed() {
                let compressed = incoming.join(&name);
                gzip(&image_path, &compressed)?;
                compressed
            } else {
                image_path
            };
            let target = Target::from_path(&path)
                .await
                .map_err(ReleaseError::tuf(format!("hashing {}", path.display())))?;
            artifacts.push(Artifact {
                kind,
                target: name.clone(),
                sha256: hex(&target.hashes.sha256),
                length: target.length,
                partition_uuid,
            });
            editor
                .add_target(name.as_str(), target)
                .map_err(ReleaseError::tuf(format!("adding {name}")))?;
            files.push((name, path));
        }
        let manifest = ReleaseManifest {
            schema: MANIFEST_SCHEMA,
            version: release.version.clone(),
            min_from_version: release.min_from_version.clone(),
            max_version: release.max_version.clone(),
            artifacts,
        };

        let manifest_name = manifest_target(&release.version);
        let manifest_path = incoming.join(&manifest_name);
        let mut bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|err| ReleaseError::Release(format!("serialising the manifest: {err}")))?;
        bytes.push(b'\n');
        std::fs::write(&manifest_path, bytes).map_err(ReleaseError::io(&manifest_path))?;
        let target = Target::from_path(&manifest_path)
            .await
            .map_err(ReleaseError::tuf("hashing the manifest"))?;
        editor
            .add_target(manifest_name.as_str(), target)
            .map_err(ReleaseError::tuf("adding the manifest"))?;
        files.push((manifest_name, manifest_path.clone()));

        let version = NonZeroU64::new(next).unwrap_or(NonZeroU64::MIN);
        editor
            .targets_version(version)
            .map_err(ReleaseError::tuf("targets version"))?
            .targets_expires(expires(now, lifetimes.targets)?)
            .map_err(ReleaseError::tuf("targets expiry"))?
            .snapshot_version(version)
            .snapshot_expires(expires(now, lifetimes.snapshot)?)
            .timestamp_version(NonZeroU64::new(next_timestamp).unwrap_or(NonZeroU64::MAX))
            .timestamp_expires(expires(now, lifetimes.timestamp)?);
        let signed = editor
            .sign(&keys.sources(&[RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp])?)
            .await
            .map_err(ReleaseError::tuf("signing the release"))?;

        // Targets first, metadata last: a reader never sees metadata naming a file not yet there.
        let targets_dir = self.targets_dir();
        std::fs::create_dir_all(&targets_dir).map_err(ReleaseError::io(&targets_dir))?;
        for (name, path) in &files {
            let name = target_name(name)?;
            signed
                .copy_target(path, &targets_dir, PathExists::Skip, Some(&name))
                .await
                .map_err(ReleaseError::tuf(format!("copying {}", name.raw())))?;
        }
        signed
            .write(self.metadata_dir())
            .await
            .map_err(ReleaseError::tuf("writing the metadata"))?;
        std::fs::remove_dir_all(&incoming).map_err(ReleaseError::io(&incoming))?;
        Ok(manifest)
    }

    pub(crate) fn current_timestamp(&self) -> Result<Signed<Timestamp>, ReleaseError> {
        let path = self.metadata_dir().join("timestamp.json");
        let bytes = std::fs::read(&path).map_err(ReleaseError::io(&path))?;
        serde_json::from_slice(&bytes)
            .map_err(|err| ReleaseError::Release(format!("{}: {err}", path.display())))
    }

    /// Re-signs `timestamp.json` one version up with a new expiry, pointing at the same snapshot:
    /// what keeps nodes that only ever see bundles able to discover a release (a node refuses a
    /// stale timestamp when it discovers).
    pub async fn refresh_timestamp(
        &self,
        keys: &KeySet,
        lifetimes: &Lifetimes,
        now: jiff::Timestamp,
    ) -> Result<u64, ReleaseError> {
        let current = self.current_timestamp()?.signed;
        let version = current.version.get().saturating_add(1);
        let (_, root_path) = latest_root(&self.metadata_dir())?;
        let root = crate::keys::read_root(&root_path)?;
        self.write_timestamp(current, version, &root.signed, keys, lifetimes, now)
            .await
    }

    /// Signs `timestamp` as `version` (see [`sign_timestamp`]) and replaces `timestamp.json`
    /// atomically: nodes may be fetching it at this moment (the region serves this folder).
    async fn write_timestamp(
        &self,
        timestamp: Timestamp,
        version: u64,
        root: &Root,
        keys: &KeySet,
        lifetimes: &Lifetimes,
        now: jiff::Timestamp,
    ) -> Result<u64, ReleaseError> {
        let signed = sign_timestamp(timestamp, version, root, keys, lifetimes, now).await?;
        self.replace_timestamp(&signed)?;
        Ok(version)
    }

    /// Replaces `timestamp.json` atomically with `signed` (from [`sign_timestamp`]).
    pub(crate) fn replace_timestamp(&self, signed: &[u8]) -> Result<(), ReleaseError> {
        crate::durable::write_atomically(&self.metadata_dir().join("timestamp.json"), signed)
    }

    /// The signed `timestamp.json`, or `None` before the first publication.
    pub(crate) fn timestamp_if_published(&self) -> Result<Option<Signed<Timestamp>>, ReleaseError> {
        if self.is_published() {
            self.current_timestamp().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// `timestamp` signed as `version`, expiring a timestamp lifetime after `now`, with the timestamp
/// key of `keys` — which must be the one `root` lists, or signing fails and nothing is written.
pub(crate) async fn sign_timestamp(
    mut timestamp: Timestamp,
    version: u64,
    root: &Root,
    keys: &KeySet,
    lifetimes: &Lifetimes,
    now: jiff::Timestamp,
) -> Result<Vec<u8>, ReleaseError> {
    timestamp.version = NonZeroU64::new(version).unwrap_or(NonZeroU64::MIN);
    timestamp.expires = expires(now, lifetimes.timestamp)?;
    let signed = SignedRole::new(
        timestamp,
        &KeyHolder::Root(root.clone()),
        &keys.sources(&[RoleType::Timestamp])?,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .await
    .map_err(ReleaseError::tuf("signing the timestamp"))?;
    Ok(signed.buffer().clone())
}

/// A `file://` URL for a directory (tough joins metadata and target names onto it).
/// The GPT partition UUIDs of the whole-disk image `make image` wrote beside the split artifacts,
/// by partition label. The initrd finds a slot by UUIDs derived from its verity root hash, so a
/// release must carry them to the slot it is written into.
fn partition_uuids(
    image_dir: &Path,
    version: &semver::Version,
) -> Result<std::collections::BTreeMap<String, uuid::Uuid>, ReleaseError> {
    let disk_path = image_dir.join(format!("scs-edge_{version}.raw"));
    let unreadable = |reason: String| ReleaseError::ImageOutput {
        dir: image_dir.to_path_buf(),
        reason: format!("{}: {reason}", disk_path.display()),
    };
    if !disk_path.is_file() {
        return Err(unreadable(format!(
            "missing (built with --image-version={version}?)"
        )));
    }
    let disk = gpt::GptConfig::new()
        .writable(false)
        .open(&disk_path)
        .map_err(|err| unreadable(format!("no readable GPT: {err}")))?;
    Ok(disk
        .partitions()
        .values()
        .map(|partition| (partition.name.clone(), partition.part_guid))
        .collect())
}

/// Compresses a partition image for shipping. Fast level: the images are squashfs (already
/// compressed) or hash trees followed by zeros, so only the zero tail shrinks, at any level.
fn gzip(from: &Path, to: &Path) -> Result<(), ReleaseError> {
    let mut input = std::fs::File::open(from).map_err(ReleaseError::io(from))?;
    let output = std::fs::File::create(to).map_err(ReleaseError::io(to))?;
    let mut encoder =
        flate2::write::GzEncoder::new(std::io::BufWriter::new(output), flate2::Compression::fast());
    std::io::copy(&mut input, &mut encoder).map_err(ReleaseError::io(to))?;
    let mut output = encoder.finish().map_err(ReleaseError::io(to))?;
    std::io::Write::flush(&mut output).map_err(ReleaseError::io(to))?;
    Ok(())
}

pub(crate) fn dir_url(dir: &Path) -> Result<url::Url, ReleaseError> {
    let absolute = std::path::absolute(dir).map_err(ReleaseError::io(dir))?;
    url::Url::from_directory_path(&absolute)
        .map_err(|()| ReleaseError::Release(format!("{} is not a usable path", dir.display())))
}

pub(crate) fn target_name(name: &str) -> Result<TargetName, ReleaseError> {
    TargetName::new(name).map_err(ReleaseError::tuf(format!("target name {name:?}")))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}
