//! Reading a removable medium — the `SCSEDGE` site stick, an `SCSEDGE-UPDATE` update stick — by
//! mounting it read-only on a private directory for exactly as long as it is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Mounts a medium and unmounts it again.
pub trait Mounter: Send + Sync {
    /// Mounts `device` on the (existing, private) directory `target`: read-only, nodev, nosuid,
    /// noexec — the stick comes from outside and must not be able to change or run anything.
    fn mount_read_only(&self, device: &Path, target: &Path) -> Result<(), String>;
    /// Unmounts `target`.
    fn unmount(&self, target: &Path) -> Result<(), String>;
}

/// Why a medium could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The private mount point could not be made.
    #[error("{}: {reason}", path.display())]
    MountPoint {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `mount` failed.
    #[error("{}: mount failed: {reason}", device.display())]
    Mount {
        /// The device.
        device: PathBuf,
        /// Why.
        reason: String,
    },
    /// `umount` failed; the medium stays mounted (and visible) rather than deleted.
    #[error("{}: unmount failed: {reason}", mount_point.display())]
    Unmount {
        /// Where it is mounted.
        mount_point: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Mounts `device` read-only on a new private (0700) directory under `run_dir`, calls `read` with
/// that directory, and unmounts. `read`'s own error comes back as `Ok(Err(..))`; a failure to mount
/// or unmount is the outer error. Only an empty directory is removed afterwards: a failed unmount
/// leaves the mount visible, never its files deleted.
pub fn read_mounted<T>(
    mounter: &dyn Mounter,
    device: &Path,
    run_dir: &Path,
    purpose: &str,
    read: impl FnOnce(&Path) -> T,
) -> Result<T, MountError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let unusable = |path: &Path, reason: String| MountError::MountPoint {
        path: path.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(run_dir).map_err(|e| unusable(run_dir, e.to_string()))?;
    let mount_point = run_dir.join(format!(
        "{purpose}.{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    // Private and new: nobody else can see or pre-create what we mount there.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&mount_point)
        .map_err(|e| unusable(&mount_point, e.to_string()))?;
    let result = mounter
        .mount_read_only(device, &mount_point)
        .map_err(|reason| MountError::Mount {
            device: device.to_path_buf(),
            reason,
        })
        .and_then(|()| {
            let value = read(&mount_point);
            mounter
                .unmount(&mount_point)
                .map_err(|reason| MountError::Unmount {
                    mount_point: mount_point.clone(),
                    reason,
                })
                .map(|()| value)
        });
    let _ = std::fs::remove_dir(&mount_point);
    result
}

/// `mount(8)` and `umount(8)`: they know every filesystem a stick may carry (vfat, ext4, iso9660).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemMounter;

impl Mounter for SystemMounter {
    fn mount_read_only(&self, device: &Path, target: &Path) -> Result<(), String> {
        crate::system::tool::run(
            "mount",
            &[
                "-o".as_ref(),
                "ro,nodev,nosuid,noexec".as_ref(),
                device.as_os_str(),
                target.as_os_str(),
            ],
        )
        .map(drop)
    }

    fn unmount(&self, target: &Path) -> Result<(), String> {
        crate::system::tool::run("umount", &[target.as_os_str()]).map(drop)
    }
}

/// A medium "mounted" by copying a directory's files into the mount point; for unit tests.
#[derive(Debug, Default)]
pub struct FakeMounter {
    media: BTreeMap<PathBuf, PathBuf>,
    log: Mutex<Vec<String>>,
}

impl FakeMounter {
    /// Mounting `device` shows the files of `contents`.
    pub fn with_medium(device: PathBuf, contents: PathBuf) -> Self {
        Self {
            media: BTreeMap::from([(device, contents)]),
            log: Mutex::default(),
        }
    }

    /// `mount <device> <target>` / `umount <target>` calls so far.
    pub fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, line: String) {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
    }
}

impl Mounter for FakeMounter {
    fn mount_read_only(&self, device: &Path, target: &Path) -> Result<(), String> {
        self.record(format!("mount {} {}", device.display(), target.display()));
        let contents = self
            .media
            .get(device)
            .ok_or_else(|| format!("{}: no medium", device.display()))?;
        let entries = std::fs::read_dir(contents).map_err(|e| e.to_string())?;
        for entry in entries.filter_map(Result::ok) {
            std::fs::copy(entry.path(), target.join(entry.file_name()))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), String> {
        self.record(format!("umount {}", target.display()));
        for entry in std::fs::read_dir(target)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
        {
            std::fs::remove_file(entry.path()).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
