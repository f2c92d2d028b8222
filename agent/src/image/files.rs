//! Where image bytes live: one file per image under `<state_dir>/images/`, behind a trait.
//!
//! An import streams into `<id>.partial` while holding an exclusive `flock` on it, so a concurrent
//! garbage collection (in the daemon, while the CLI imports) can tell an import in progress from the
//! leftovers of a killed one. The file is fsynced before the image row is committed and renamed to its
//! final name after, so a crash at any point leaves either nothing, a partial file nobody holds (removed,
//! or completed if its row exists), or a complete image.

use super::format::HEADER_LEN;
use md5::Md5;
use sha2::{Digest, Sha512};
use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use uuid::Uuid;

/// What was learned while copying an image in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDigest {
    /// Bytes written.
    pub size: u64,
    /// Hex MD5 (Glance's `checksum`).
    pub md5: String,
    /// Hex SHA-512 (Glance's `os_hash_value`).
    pub sha512: String,
    /// The first bytes, for format inspection.
    pub header: Vec<u8>,
}

/// An image file written and synced but not yet published under its final name.
pub trait PendingBlob: Send {
    /// Publishes the file under its final name (after the image row is committed).
    fn publish(self: Box<Self>) -> io::Result<()>;
    /// Throws the file away (the import was refused).
    fn discard(self: Box<Self>);
}

/// What the garbage collector found for one image id on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    /// A published file.
    Published,
    /// A partial file no process is writing.
    Abandoned,
    /// A partial file an import is writing right now.
    InProgress,
}

/// The image file store.
pub trait ImageFiles: Send + Sync {
    /// Streams `source` into a pending file for image `id`.
    fn receive(
        &self,
        id: Uuid,
        source: &mut dyn Read,
    ) -> io::Result<(BlobDigest, Box<dyn PendingBlob>)>;
    /// Every image id with a file or partial file, and in what state.
    fn scan(&self) -> io::Result<Vec<(Uuid, BlobState)>>;
    /// Finishes an abandoned import whose row was committed.
    fn publish_abandoned(&self, id: Uuid) -> io::Result<()>;
    /// Removes published and abandoned files of `id`; absent files are fine.
    fn remove(&self, id: Uuid) -> io::Result<()>;
    /// Path QEMU opens as the backing file of server disks.
    fn path(&self, id: Uuid) -> PathBuf;
    /// Whether the published file exists.
    fn exists(&self, id: Uuid) -> io::Result<bool>;
    /// Opens the published file for download.
    fn open(&self, id: Uuid) -> io::Result<Box<dyn Read + Send>>;
}

/// Image files in a local directory.
#[derive(Debug, Clone)]
pub struct LocalImageFiles {
    dir: PathBuf,
}

impl LocalImageFiles {
    /// Uses (and creates) `dir`.
    pub fn new(dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn partial(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.partial"))
    }
}

/// Makes a rename or unlink durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

struct LocalPending {
    file: File,
    partial: PathBuf,
    final_path: PathBuf,
    dir: PathBuf,
}

impl PendingBlob for LocalPending {
    fn publish(self: Box<Self>) -> io::Result<()> {
        std::fs::rename(&self.partial, &self.final_path)?;
        sync_dir(&self.dir)?;
        drop(self.file); // releases the lock only once the final name is durable
        Ok(())
    }

    fn discard(self: Box<Self>) {
        if let Err(err) = std::fs::remove_file(&self.partial)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.partial.display(), %err, "cannot remove refused image file");
        }
    }
}

impl ImageFiles for LocalImageFiles {
    fn receive(
        &self,
        id: Uuid,
        source: &mut dyn Read,
    ) -> io::Result<(BlobDigest, Box<dyn PendingBlob>)> {
        let partial = self.partial(id);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&partial)?;
        file.try_lock().map_err(|err| match err {
            TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::AlreadyExists,
                "image is being imported already",
            ),
            TryLockError::Error(err) => err,
        })?;
        file.set_len(0)?;
        let mut md5 = Md5::new();
        let mut sha = Sha512::new();
        let mut header = Vec::with_capacity(HEADER_LEN);
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let result = (|| -> io::Result<()> {
            loop {
                let n = match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(err),
                };
                let chunk = &buf[..n];
                if header.len() < HEADER_LEN {
                    let take = (HEADER_LEN - header.len()).min(n);
                    header.extend_from_slice(&chunk[..take]);
                }
                md5.update(chunk);
                sha.update(chunk);
                file.write_all(chunk)?;
                size += n as u64;
            }
            file.sync_all()
        })();
        if let Err(err) = result {
            let _ = std::fs::remove_file(&partial);
            return Err(err);
        }
        let digest = BlobDigest {
            size,
            md5: hex(&md5.finalize()),
            sha512: hex(&sha.finalize()),
            header,
        };
        let pending = LocalPending {
            file,
            partial,
            final_path: self.path(id),
            dir: self.dir.clone(),
        };
        Ok((digest, Box::new(pending)))
    }

    fn scan(&self) -> io::Result<Vec<(Uuid, BlobState)>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".partial") {
                let Ok(id) = Uuid::parse_str(stem) else {
                    continue;
                };
                let state = match File::open(entry.path()).map(|f| f.try_lock()) {
                    Ok(Ok(())) => BlobState::Abandoned,
                    Ok(Err(TryLockError::WouldBlock)) => BlobState::InProgress,
                    Ok(Err(TryLockError::Error(err))) | Err(err) => {
                        if err.kind() == io::ErrorKind::NotFound {
                            continue; // published or removed meanwhile
                        }
                        return Err(err);
                    }
                };
                found.push((id, state));
            } else if let Ok(id) = Uuid::parse_str(name) {
                found.push((id, BlobState::Published));
            }
        }
        Ok(found)
    }

    fn publish_abandoned(&self, id: Uuid) -> io::Result<()> {
        let partial = self.partial(id);
        let file = File::open(&partial)?;
        file.try_lock()
            .map_err(|_| io::Error::new(io::ErrorKind::WouldBlock, "import in progress"))?;
        file.sync_all()?;
        std::fs::rename(&partial, self.path(id))?;
        sync_dir(&self.dir)
    }

    fn remove(&self, id: Uuid) -> io::Result<()> {
        for path in [self.path(id), self.partial(id)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        sync_dir(&self.dir)
    }

    fn path(&self, id: Uuid) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn exists(&self, id: Uuid) -> io::Result<bool> {
        self.path(id).try_exists()
    }

    fn open(&self, id: Uuid) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(self.path(id))?))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Image bytes and state by id, shared between the fake and its pending imports.
type FakeBlobs = Arc<Mutex<HashMap<Uuid, (Vec<u8>, BlobState)>>>;

/// In-memory image files for unit tests.
#[derive(Debug, Default, Clone)]
pub struct FakeImageFiles {
    files: FakeBlobs,
}

impl FakeImageFiles {
    /// Bytes of a published image, if any.
    pub fn published(&self, id: Uuid) -> Option<Vec<u8>> {
        let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files
            .get(&id)
            .filter(|(_, s)| *s == BlobState::Published)
            .map(|(b, _)| b.clone())
    }

    /// Number of files in any state.
    pub fn count(&self) -> usize {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Plants a file in the given state (to simulate crashes).
    pub fn plant(&self, id: Uuid, bytes: Vec<u8>, state: BlobState) {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (bytes, state));
    }
}

struct FakePending {
    files: FakeBlobs,
    id: Uuid,
}

impl PendingBlob for FakePending {
    fn publish(self: Box<Self>) -> io::Result<()> {
        if let Some(entry) = self
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&self.id)
        {
            entry.1 = BlobState::Published;
        }
        Ok(())
    }

    fn discard(self: Box<Self>) {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl ImageFiles for FakeImageFiles {
    fn receive(
        &self,
        id: Uuid,
        source: &mut dyn Read,
    ) -> io::Result<(BlobDigest, Box<dyn PendingBlob>)> {
        let mut bytes = Vec::new();
        source.read_to_end(&mut bytes)?;
        let digest = BlobDigest {
            size: bytes.len() as u64,
            md5: hex(&Md5::digest(&bytes)),
            sha512: hex(&Sha512::digest(&bytes)),
            header: bytes.iter().take(HEADER_LEN).copied().collect(),
        };
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (bytes, BlobState::InProgress));
        Ok((
            digest,
            Box::new(FakePending {
                files: self.files.clone(),
                id,
            }),
        ))
    }

    fn scan(&self) -> io::Result<Vec<(Uuid, BlobState)>> {
        Ok(self
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, (_, s))| (*id, *s))
            .collect())
    }

    fn publish_abandoned(&self, id: Uuid) -> io::Result<()> {
        if let Some(entry) = self
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&id)
        {
            entry.1 = BlobState::Published;
        }
        Ok(())
    }

    fn remove(&self, id: Uuid) -> io::Result<()> {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        Ok(())
    }

    fn path(&self, id: Uuid) -> PathBuf {
        PathBuf::from(format!("/fake/images/{id}"))
    }

    fn exists(&self, id: Uuid) -> io::Result<bool> {
        Ok(self.published(id).is_some())
    }

    fn open(&self, id: Uuid) -> io::Result<Box<dyn Read + Send>> {
        let bytes = self
            .published(id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no published image file"))?;
        Ok(Box::new(io::Cursor::new(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_file_is_hashed_and_only_visible_once_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = LocalImageFiles::new(dir.path().join("images")).expect("dir");
        let id = Uuid::new_v4();
        let (digest, pending) = files.receive(id, &mut &b"hello"[..]).expect("receive");
        assert_eq!(digest.size, 5);
        assert_eq!(digest.md5, "5d41402abc4b2a76b9719d911017c592");
        assert!(digest.sha512.starts_with("9b71d224bd62f378"));
        assert!(!files.exists(id).expect("exists"));
        assert_eq!(
            files.scan().expect("scan"),
            vec![(id, BlobState::InProgress)]
        );
        pending.publish().expect("publish");
        assert!(files.exists(id).expect("exists"));
        assert_eq!(std::fs::read(files.path(id)).expect("read"), b"hello");
    }

    #[test]
    fn partial_file_of_a_dead_import_is_seen_as_abandoned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = LocalImageFiles::new(dir.path().to_owned()).expect("dir");
        let id = Uuid::new_v4();
        std::fs::write(dir.path().join(format!("{id}.partial")), b"half").expect("plant");
        assert_eq!(
            files.scan().expect("scan"),
            vec![(id, BlobState::Abandoned)]
        );
        files.publish_abandoned(id).expect("complete");
        assert_eq!(
            files.scan().expect("scan"),
            vec![(id, BlobState::Published)]
        );
        files.remove(id).expect("remove");
        assert!(files.scan().expect("scan").is_empty());
    }

    #[test]
    fn discarded_import_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = LocalImageFiles::new(dir.path().to_owned()).expect("dir");
        let (_, pending) = files
            .receive(Uuid::new_v4(), &mut &b"x"[..])
            .expect("receive");
        pending.discard();
        assert!(files.scan().expect("scan").is_empty());
    }
}
