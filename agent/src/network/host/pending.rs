//! The pending-change record: what the host looked like before a guarded change, on disk before the
//! change touches anything.
//!
//! The file exists exactly while a change is unconfirmed. It appears atomically (written to
//! `<path>.tmp`, fsynced, renamed over `<path>`, directory fsynced), so after a crash it is either
//! complete or absent; its removal is made durable the same way (directory fsync), so a confirmed
//! change is not reverted after a power cut. A leftover `<path>.tmp` is a record that never became
//! one — the change it was for never started — and is removed.

use super::change::{ChangePlan, Snapshot};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Version of the record layout; a record of another version is not guessed at.
pub(super) const RECORD_VERSION: u32 = 1;

/// An unconfirmed change as recorded on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    /// Layout version ([`RECORD_VERSION`]).
    pub version: u32,
    /// When the change started.
    pub started_at: jiff::Timestamp,
    /// The change.
    pub plan: ChangePlan,
    /// The state to go back to.
    pub before: Snapshot,
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `record` to `path` atomically and durably.
pub(super) fn write(path: &Path, record: &PendingChange) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    let tmp = tmp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&json)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    sync_dir(parent(path))
}

/// Reads the record at `path`; `Ok(None)` if there is none. Removes a leftover temporary file.
pub(super) fn read(path: &Path) -> Result<Option<PendingChange>, ReadError> {
    let tmp = tmp_path(path);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {
            tracing::warn!(path = %tmp.display(), "removed a half-written pending-change record");
            sync_dir(parent(path)).map_err(ReadError::Io)?;
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(ReadError::Io(err)),
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(ReadError::Io(err)),
    };
    let record: PendingChange =
        serde_json::from_slice(&bytes).map_err(|e| ReadError::Corrupt(e.to_string()))?;
    if record.version != RECORD_VERSION {
        return Err(ReadError::Corrupt(format!(
            "record version {} (this agent writes {RECORD_VERSION})",
            record.version
        )));
    }
    Ok(Some(record))
}

/// Whether a record exists at `path`.
pub(super) fn exists(path: &Path) -> io::Result<bool> {
    path.try_exists()
}

/// Removes the record durably; an absent one is fine.
pub(super) fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// Why a record could not be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// Filesystem failure.
    Io(io::Error),
    /// Not a record this agent understands.
    Corrupt(String),
}
