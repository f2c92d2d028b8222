//! The air-gap bundle: one file that carries a release to a site without a network — a tar archive
//! with the repository's `metadata/` (every root version, so a node can follow rotations, and the
//! current timestamp, snapshot and targets) and the release's files from `targets/`.
//!
//! Nothing in a bundle is trusted until [`crate::verify`] has checked it; extraction only makes sure
//! that an archive cannot write outside the staging directory or fill the disk on its way there.

use crate::repository::Repository;
use crate::{METADATA_DIR, ReleaseError, TARGETS_DIR};
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

/// Bounds on what [`extract`] writes, against endless-data and disk-filling bundles.
#[derive(Debug, Clone, Copy)]
pub struct ExtractLimits {
    /// Largest metadata file (tough enforces its own, per role, again when it loads).
    pub max_metadata_bytes: u64,
    /// Most metadata files (root versions accumulate: a few hundred is generous).
    pub max_metadata_files: usize,
    /// All targets together.
    pub max_target_bytes: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_metadata_bytes: 10 << 20,
            max_metadata_files: 1100,
            max_target_bytes: 8 << 30,
        }
    }
}

/// Writes the bundle of `version` from `repo` to `out` (through a temporary file renamed into place,
/// so `out` is either the whole bundle or absent).
pub async fn export(
    repo: &Repository,
    version: &semver::Version,
    out: &Path,
) -> Result<u64, ReleaseError> {
    let manifest_name = scs_edge_proto::release::manifest_target(version);
    let metadata_dir = repo.metadata_dir();
    let targets_dir = repo.targets_dir();
    // The release's files under their consistent-snapshot names (`<sha256>.<name>`): the manifest and
    // every artifact it lists, found by suffix in targets/.
    let mut wanted = vec![manifest_name.clone()];
    let manifest_path = find_target(&targets_dir, &manifest_name)?.ok_or_else(|| {
        ReleaseError::Release(format!(
            "version {version} is not published in this repository"
        ))
    })?;
    let manifest: scs_edge_proto::release::ReleaseManifest = serde_json::from_slice(
        &std::fs::read(&manifest_path).map_err(ReleaseError::io(&manifest_path))?,
    )
    .map_err(|err| ReleaseError::Release(format!("{}: {err}", manifest_path.display())))?;
    wanted.extend(manifest.artifacts.iter().map(|a| a.target.clone()));

    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp).map_err(ReleaseError::io(&tmp))?;
    let mut archive = tar::Builder::new(std::io::BufWriter::new(file));
    archive.mode(tar::HeaderMode::Deterministic);
    let mut entries = std::fs::read_dir(&metadata_dir)
        .map_err(ReleaseError::io(&metadata_dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ReleaseError::io(&metadata_dir))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        archive
            .append_path_with_name(entry.path(), Path::new(METADATA_DIR).join(&name))
            .map_err(ReleaseError::io(entry.path()))?;
    }
    for name in &wanted {
        let path = find_target(&targets_dir, name)?.ok_or_else(|| {
            ReleaseError::Release(format!(
                "{name} is listed but missing in {}",
                targets_dir.display()
            ))
        })?;
        let file_name = path.file_name().unwrap_or_default();
        archive
            .append_path_with_name(&path, Path::new(TARGETS_DIR).join(file_name))
            .map_err(ReleaseError::io(&path))?;
    }
    let writer = archive.into_inner().map_err(ReleaseError::io(&tmp))?;
    let file = writer
        .into_inner()
        .map_err(|err| ReleaseError::io(&tmp)(err.into_error()))?;
    file.sync_all().map_err(ReleaseError::io(&tmp))?;
    let length = file.metadata().map_err(ReleaseError::io(&tmp))?.len();
    tokio::fs::rename(&tmp, out)
        .await
        .map_err(ReleaseError::io(out))?;
    Ok(length)
}

/// The file in `targets_dir` holding target `name` (`<sha256>.<name>` under consistent snapshots).
fn find_target(targets_dir: &Path, name: &str) -> Result<Option<PathBuf>, ReleaseError> {
    let suffix = format!(".{name}");
    for entry in std::fs::read_dir(targets_dir).map_err(ReleaseError::io(targets_dir))? {
        let entry = entry.map_err(ReleaseError::io(targets_dir))?;
        if entry.file_name().to_str().is_some_and(|f| {
            f.strip_suffix(&suffix).is_some_and(|digest| {
                digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())
            })
        }) {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// Unpacks `bundle` into `staging` (emptied first) as a repository layout (`metadata/`, `targets/`).
/// Refuses, with nothing left behind, an entry that is not a plain file directly in one of those two
/// folders (`../`, absolute paths, links, devices, nested folders), a file over its limit, and a
/// truncated archive.
pub fn extract(bundle: &Path, staging: &Path, limits: &ExtractLimits) -> Result<(), ReleaseError> {
    let result = extract_into(bundle, staging, limits);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(staging);
    }
    result
}

fn extract_into(bundle: &Path, staging: &Path, limits: &ExtractLimits) -> Result<(), ReleaseError> {
    let refuse = |reason: String| ReleaseError::Bundle {
        path: bundle.to_path_buf(),
        reason,
    };
    if staging.exists() {
        std::fs::remove_dir_all(staging).map_err(ReleaseError::io(staging))?;
    }
    for dir in [METADATA_DIR, TARGETS_DIR] {
        let dir = staging.join(dir);
        std::fs::create_dir_all(&dir).map_err(ReleaseError::io(&dir))?;
    }
    let file = std::fs::File::open(bundle).map_err(ReleaseError::io(bundle))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut metadata_files = 0;
    let mut target_bytes: u64 = 0;
    let mut seen = 0;
    for entry in archive
        .entries()
        .map_err(|err| refuse(format!("not a tar archive: {err}")))?
    {
        let mut entry = entry.map_err(|err| refuse(format!("damaged archive: {err}")))?;
        let path = entry
            .path()
            .map_err(|err| refuse(format!("unreadable entry name: {err}")))?
            .into_owned();
        let (folder, name) = safe_entry_path(&path).ok_or_else(|| {
            refuse(format!(
                "entry {} is outside metadata/ and targets/",
                path.display()
            ))
        })?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(refuse(format!(
                "entry {} is not a plain file",
                path.display()
            )));
        }
        let size = entry.size();
        if folder == METADATA_DIR {
            metadata_files += 1;
            if size > limits.max_metadata_bytes || metadata_files > limits.max_metadata_files {
                return Err(refuse(format!(
                    "metadata beyond the limits ({} bytes each, {} files): {}",
                    limits.max_metadata_bytes,
                    limits.max_metadata_files,
                    path.display()
                )));
            }
        } else {
            target_bytes = target_bytes.saturating_add(size);
            if target_bytes > limits.max_target_bytes {
                return Err(refuse(format!(
                    "targets beyond {} bytes",
                    limits.max_target_bytes
                )));
            }
        }
        let destination = staging.join(folder).join(name);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&destination)
            .map_err(ReleaseError::io(&destination))?;
        let written = std::io::copy(&mut (&mut entry).take(size), &mut out)
            .map_err(|err| refuse(format!("reading {}: {err}", path.display())))?;
        if written != size {
            return Err(refuse(format!(
                "truncated: {} has {written} of its {size} bytes",
                path.display()
            )));
        }
        seen += 1;
    }
    if seen == 0 {
        return Err(refuse("empty archive".into()));
    }
    Ok(())
}

/// `metadata/<name>` or `targets/<name>` with `<name>` a plain file name; anything else is `None`.
fn safe_entry_path(path: &Path) -> Option<(&'static str, &std::ffi::OsStr)> {
    let mut components = path.components();
    let folder = match components.next()? {
        Component::Normal(folder) if folder == METADATA_DIR => METADATA_DIR,
        Component::Normal(folder) if folder == TARGETS_DIR => TARGETS_DIR,
        _ => return None,
    };
    let name = match components.next()? {
        Component::Normal(name) if !name.as_encoded_bytes().starts_with(b".") => name,
        _ => return None,
    };
    components.next().is_none().then_some((folder, name))
}
