//! Files that are either whole or absent after a power cut: a node stages releases on its data
//! partition and the region mirrors them on its disk, and both trust afterwards what they wrote.

use crate::ReleaseError;
use std::io::Write as _;
use std::path::Path;

/// Flushes the files in `dir`, the folder and its parent to the disk. A caller records a release as
/// staged once this returned, and after a power cut trusts what it recorded: the QEMU test found a
/// staged `/usr` image cut short by a power cut that came before the page cache was written back,
/// which `systemd-sysupdate` then wrote into the slot as if whole.
pub(crate) fn make_durable(dir: &Path) -> Result<(), ReleaseError> {
    for entry in std::fs::read_dir(dir).map_err(ReleaseError::io(dir))? {
        let path = entry.map_err(ReleaseError::io(dir))?.path();
        std::fs::File::open(&path)
            .and_then(|file| file.sync_all())
            .map_err(ReleaseError::io(&path))?;
    }
    for folder in [Some(dir), dir.parent()].into_iter().flatten() {
        sync_folder(folder)?;
    }
    Ok(())
}

/// Replaces `path` with `bytes`: written beside it, flushed, renamed over it, and the rename
/// flushed. A reader (a node fetching `timestamp.json` from the region) sees the old file or the
/// new one, never a torn one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReleaseError> {
    let temporary = partial_path(path);
    let written = std::fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(ReleaseError::io(&temporary));
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(err);
    }
    commit(&temporary, path)
}

/// Renames the flushed `temporary` over `path` and flushes the folder.
pub(crate) fn commit(temporary: &Path, path: &Path) -> Result<(), ReleaseError> {
    std::fs::rename(temporary, path).map_err(ReleaseError::io(path))?;
    sync_folder(path.parent().unwrap_or(Path::new(".")))
}

/// Where a file is written before [`commit`] renames it into place: a hidden name in the same
/// folder (a rename does not cross filesystems), which no reader asks for.
pub(crate) fn partial_path(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

fn sync_folder(folder: &Path) -> Result<(), ReleaseError> {
    std::fs::File::open(folder)
        .and_then(|file| file.sync_all())
        .map_err(ReleaseError::io(folder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("timestamp.json");
        std::fs::write(&path, b"old").expect("old");
        write_atomically(&path, b"new").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("timestamp.json")]);
    }

    #[test]
    fn an_atomic_write_that_fails_leaves_no_file_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing-folder").join("timestamp.json");
        assert!(write_atomically(&path, b"new").is_err());
        assert!(!path.exists());
    }
}
