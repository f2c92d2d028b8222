//! A server's files: its root disk (a qcow2 overlay on the image), its config drive and its console
//! log, all in `<state_dir>/servers/<id>/`.
//!
//! Files appear atomically (written as `*.tmp`, synced, renamed, directory synced), so after a crash a
//! file either exists complete or not at all; the whole directory goes when the server goes.

use super::config_drive::ConfigDrive;
use crate::image::format::DiskFormat;
use std::collections::HashMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use uuid::Uuid;

/// Paths of one server's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPaths {
    /// The server's directory.
    pub dir: PathBuf,
    /// Root disk overlay.
    pub root_disk: PathBuf,
    /// Config drive.
    pub config_drive: PathBuf,
    /// Serial console log (written by virtlogd).
    pub console_log: PathBuf,
}

/// Why a server file could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Filesystem failure.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The overlay cannot be made (a size the format cannot hold).
    #[error("cannot create disk overlay {path}: {reason}")]
    Overlay {
        /// Overlay being created.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A server's files on the host.
pub trait ServerFiles: Send + Sync {
    /// Where the files of server `id` live.
    fn paths(&self, id: Uuid) -> ServerPaths;
    /// Servers that have a directory.
    fn list(&self) -> io::Result<Vec<Uuid>>;
    /// Whether the root disk exists.
    fn root_disk_exists(&self, id: Uuid) -> io::Result<bool>;
    /// Creates the root disk as an overlay of `backing`, `size_bytes` large.
    fn create_root_disk(
        &self,
        id: Uuid,
        backing: &Path,
        backing_format: DiskFormat,
        size_bytes: u64,
    ) -> Result<(), FilesError>;
    /// Whether the config drive exists.
    fn config_drive_exists(&self, id: Uuid) -> io::Result<bool>;
    /// Writes the config drive.
    fn write_config_drive(&self, id: Uuid, drive: &ConfigDrive) -> Result<(), FilesError>;
    /// Removes everything of server `id`; a missing directory is fine.
    fn remove(&self, id: Uuid) -> io::Result<()>;
    /// The last `max_bytes` of the serial console log; empty when the guest wrote nothing yet.
    fn console_tail(&self, id: Uuid, max_bytes: u64) -> io::Result<Vec<u8>>;
}

/// Server files under a local directory.
#[derive(Debug, Clone)]
pub struct LocalServerFiles {
    root: PathBuf,
}

impl LocalServerFiles {
    /// Files under `root` (created if needed).
    pub fn new(root: PathBuf) -> io::Result<Self> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&root)?;
        Ok(Self { root })
    }

    fn ensure_dir(&self, id: Uuid) -> Result<PathBuf, FilesError> {
        let dir = self.root.join(id.to_string());
        match DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => sync_dir(&self.root).map_err(|source| FilesError::Io {
                what: "sync",
                path: self.root.clone(),
                source,
            })?,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(FilesError::Io {
                    what: "create directory",
                    path: dir,
                    source,
                });
            }
        }
        Ok(dir)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Renames `tmp` over `target` and makes it durable.
fn publish(tmp: &Path, target: &Path) -> Result<(), FilesError> {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FilesError + use<> {
        let path = path.to_owned();
        move |source| FilesError::Io { what, path, source }
    }
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(io("sync", tmp))?;
    std::fs::rename(tmp, target).map_err(io("rename", tmp))?;
    let dir = target.parent().unwrap_or(Path::new("/"));
    sync_dir(dir).map_err(io("sync", dir))
}

impl ServerFiles for LocalServerFiles {
    fn paths(&self, id: Uuid) -> ServerPaths {
        let dir = self.root.join(id.to_string());
        ServerPaths {
            root_disk: dir.join("disk.qcow2"),
            config_drive: dir.join("config-drive.img"),
            console_log: dir.join("console.log"),
            dir,
        }
    }

    fn list(&self) -> io::Result<Vec<Uuid>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| Uuid::parse_str(n).ok())
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn root_disk_exists(&self, id: Uuid) -> io::Result<bool> {
        self.paths(id).root_disk.try_exists()
    }

    fn create_root_disk(
        &self,
        id: Uuid,
        backing: &Path,
        backing_format: DiskFormat,
        size_bytes: u64,
    ) -> Result<(), FilesError> {
        self.ensure_dir(id)?;
        let paths = self.paths(id);
        let tmp = paths.root_disk.with_extension("qcow2.tmp");
        let io = |what: &'static str| {
            let path = tmp.clone();
            move |source| FilesError::Io { what, path, source }
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io("create"))?;
        super::qcow2::write_overlay(
            &mut file,
            size_bytes,
            &backing.to_string_lossy(),
            backing_format.as_str(),
        )
        .map_err(|err| match err {
            super::qcow2::Qcow2Error::Io(source) => FilesError::Io {
                what: "write overlay",
                path: tmp.clone(),
                source,
            },
            super::qcow2::Qcow2Error::Unsupported(reason) => FilesError::Overlay {
                path: tmp.clone(),
                reason,
            },
        })?;
        drop(file);
        publish(&tmp, &paths.root_disk)
    }

    fn config_drive_exists(&self, id: Uuid) -> io::Result<bool> {
        self.paths(id).config_drive.try_exists()
    }

    fn write_config_drive(&self, id: Uuid, drive: &ConfigDrive) -> Result<(), FilesError> {
        self.ensure_dir(id)?;
        let paths = self.paths(id);
        let tmp = paths.config_drive.with_extension("img.tmp");
        let io = |what: &'static str| {
            let path = tmp.clone();
            move |source| FilesError::Io { what, path, source }
        };
        // User data may hold secrets: readable by root only (libvirt hands it to QEMU).
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create"))?;
        drive
            .write_sparse(&mut file)
            .map_err(io("write config drive"))?;
        drop(file);
        publish(&tmp, &paths.config_drive)
    }

    fn remove(&self, id: Uuid) -> io::Result<()> {
        match std::fs::remove_dir_all(self.root.join(id.to_string())) {
            Ok(()) => sync_dir(&self.root),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn console_tail(&self, id: Uuid, max_bytes: u64) -> io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(self.paths(id).console_log) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
        let mut bytes = Vec::new();
        file.take(max_bytes).read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// What the fake holds for one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeServerDir {
    /// (backing file, size) of the root disk.
    pub root_disk: Option<(PathBuf, u64)>,
    /// The config drive written.
    pub config_drive: Option<ConfigDrive>,
    /// What the guest "printed" on its console.
    pub console: Vec<u8>,
}

/// In-memory server files for unit tests.
#[derive(Debug, Clone, Default)]
pub struct FakeServerFiles {
    dirs: Arc<Mutex<HashMap<Uuid, FakeServerDir>>>,
}

impl FakeServerFiles {
    /// A snapshot of one server's files.
    pub fn dir(&self, id: Uuid) -> Option<FakeServerDir> {
        self.lock().get(&id).cloned()
    }

    /// Appends to a server's console, as a guest writing to its serial port would.
    pub fn print_on_console(&self, id: Uuid, text: &str) {
        self.lock()
            .entry(id)
            .or_default()
            .console
            .extend_from_slice(text.as_bytes());
    }

    /// Deletes the root disk behind the agent's back.
    pub fn lose_root_disk(&self, id: Uuid) {
        if let Some(dir) = self.lock().get_mut(&id) {
            dir.root_disk = None;
        }
    }

    /// Plants a leftover directory.
    pub fn plant(&self, id: Uuid) {
        self.lock().entry(id).or_default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, FakeServerDir>> {
        self.dirs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ServerFiles for FakeServerFiles {
    fn paths(&self, id: Uuid) -> ServerPaths {
        let dir = PathBuf::from(format!("/fake/servers/{id}"));
        ServerPaths {
            root_disk: dir.join("disk.qcow2"),
            config_drive: dir.join("config-drive.img"),
            console_log: dir.join("console.log"),
            dir,
        }
    }

    fn list(&self) -> io::Result<Vec<Uuid>> {
        Ok(self.lock().keys().copied().collect())
    }

    fn root_disk_exists(&self, id: Uuid) -> io::Result<bool> {
        Ok(self.lock().get(&id).is_some_and(|d| d.root_disk.is_some()))
    }

    fn create_root_disk(
        &self,
        id: Uuid,
        backing: &Path,
        _: DiskFormat,
        size_bytes: u64,
    ) -> Result<(), FilesError> {
        self.lock().entry(id).or_default().root_disk = Some((backing.to_owned(), size_bytes));
        Ok(())
    }

    fn config_drive_exists(&self, id: Uuid) -> io::Result<bool> {
        Ok(self
            .lock()
            .get(&id)
            .is_some_and(|d| d.config_drive.is_some()))
    }

    fn write_config_drive(&self, id: Uuid, drive: &ConfigDrive) -> Result<(), FilesError> {
        self.lock().entry(id).or_default().config_drive = Some(drive.clone());
        Ok(())
    }

    fn remove(&self, id: Uuid) -> io::Result<()> {
        self.lock().remove(&id);
        Ok(())
    }

    fn console_tail(&self, id: Uuid, max_bytes: u64) -> io::Result<Vec<u8>> {
        let dirs = self.lock();
        let console = dirs
            .get(&id)
            .map(|d| d.console.as_slice())
            .unwrap_or_default();
        let skip = console.len().saturating_sub(max_bytes as usize);
        Ok(console[skip..].to_vec())
    }
}
