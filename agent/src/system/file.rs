//! Replacing a file so that a crash or power cut leaves the old contents or the new, never a torn
//! mix: written beside it, synced, renamed over it, its directory synced.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Replaces `path` with `bytes` (created with `mode`) atomically and durably. The temporary file is
/// `path` with the extension `tmp`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Removes the directory `path` and everything in it, and syncs its parent, so that a power cut
/// cannot bring back a directory the caller's records already say is gone. A missing one is fine.
pub fn remove_dir_durably(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    match path.parent() {
        Some(parent) if parent.is_dir() => std::fs::File::open(parent)?.sync_all(),
        _ => Ok(()),
    }
}
