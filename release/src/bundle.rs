//! The air-gap bundle: one file that carries a release to a site without a network — a tar archive
//! with the repository's `metadata/` (every root version, so a node can follow rotations, and the
//! current timestamp, snapshot and targets) and the release's files from `targets/`, and — for a site
//! that can never receive fresh metadata — at most one freshness waiver, `waiver.json`, beside them.
//!
//! Nothing in a bundle is trusted until [`crate::verify`] has checked it; extraction only makes sure
//! that an archive cannot write outside the staging directory or fill the disk on its way there.

use crate::repository::Repository;
use crate::waiver::{self, MAX_WAIVER_BYTES, WAIVER_FILE};
use crate::{METADATA_DIR, ReleaseError, TARGETS_DIR};
use std::ffi::OsStr;
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
    export_with_waiver(repo, version, None, out).await
}

/// [`export`], with the freshness waiver in the file `waiver` as the bundle's `waiver.json`. The
/// waiver is checked first as a node checks its shape and signatures (against the repository's
/// newest root), so a bundle never ships one every node would refuse; its site and time are the
/// node's to judge.
pub async fn export_with_waiver(
    repo: &Repository,
    version: &semver::Version,
    waiver: Option<&Path>,
    out: &Path,
) -> Result<u64, ReleaseError> {
    let waiver = waiver
        .map(|path| waiver::read_for_export(path, &repo.metadata_dir()))
        .transpose()?;
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
    if let Some(waiver) = waiver {
        let document = waiver.to_json();
        let mut header = tar::Header::new_gnu();
        header.set_size(document.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        archive
            .append_data(&mut header, WAIVER_FILE, document.as_slice())
            .map_err(ReleaseError::io(&tmp))?;
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

/// Unpacks `bundle` into `staging` (emptied first) as a repository layout (`metadata/`, `targets/`,
/// and `waiver.json` when the bundle carries one). Refuses, with nothing left behind, an entry that
/// is not a plain file directly in one of those two folders or the one top-level `waiver.json`
/// (`../`, absolute paths, links, devices, nested folders, any other top-level file, a second
/// waiver), a file over its limit, and a truncated archive.
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
    let mut waivers = 0;
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
        let place = placement(&path).ok_or_else(|| {
            refuse(format!(
                "entry {} is outside metadata/, targets/ and {WAIVER_FILE}",
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
        let destination = match place {
            Placement::Metadata(name) => {
                metadata_files += 1;
                if size > limits.max_metadata_bytes || metadata_files > limits.max_metadata_files {
                    return Err(refuse(format!(
                        "metadata beyond the limits ({} bytes each, {} files): {}",
                        limits.max_metadata_bytes,
                        limits.max_metadata_files,
                        path.display()
                    )));
                }
                staging.join(METADATA_DIR).join(name)
            }
            Placement::Target(name) => {
                target_bytes = target_bytes.saturating_add(size);
                if target_bytes > limits.max_target_bytes {
                    return Err(refuse(format!(
                        "targets beyond {} bytes",
                        limits.max_target_bytes
                    )));
                }
                staging.join(TARGETS_DIR).join(name)
            }
            Placement::Waiver => {
                waivers += 1;
                if waivers > 1 {
                    return Err(refuse(format!("more than one {WAIVER_FILE}")));
                }
                if size > MAX_WAIVER_BYTES {
                    return Err(refuse(format!(
                        "{WAIVER_FILE} beyond the {MAX_WAIVER_BYTES}-byte limit"
                    )));
                }
                staging.join(WAIVER_FILE)
            }
        };
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

/// Where a bundle entry may go in the staging directory.
enum Placement<'a> {
    /// `metadata/<name>`.
    Metadata(&'a OsStr),
    /// `targets/<name>`.
    Target(&'a OsStr),
    /// The top-level `waiver.json`.
    Waiver,
}

/// `metadata/<name>` or `targets/<name>` with `<name>` a plain file name, or `waiver.json`; anything
/// else is `None`.
fn placement(path: &Path) -> Option<Placement<'_>> {
    let mut components = path.components();
    let Component::Normal(first) = components.next()? else {
        return None;
    };
    if first == WAIVER_FILE {
        return components.next().is_none().then_some(Placement::Waiver);
    }
    let name = match components.next()? {
        Component::Normal(name) if !name.as_encoded_bytes().starts_with(b".") => name,
        _ => return None,
    };
    if components.next().is_some() {
        return None;
    }
    if first == METADATA_DIR {
        Some(Placement::Metadata(name))
    } else if first == TARGETS_DIR {
        Some(Placement::Target(name))
    } else {
        None
    }
}
