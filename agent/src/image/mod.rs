//! The local image store: bootable disk images (raw or qcow2) with their checksums.
//!
//! Images are immutable once imported; server disks are qcow2 overlays on them, which is why an image
//! cannot be deleted while a server uses it. The image reconciler removes files no row owns (left by an
//! import that was killed) and completes imports that were killed after their row was committed.

pub mod files;
pub mod format;

use crate::error_class::{Classify, ErrorClass};
use crate::reconcile::{BoxError, Next, Reconciler};
use crate::store::{Store, StoreError, from_json, to_json};
use crate::system::clock::Clock;
use files::{BlobState, ImageFiles};
use format::{DiskFormat, FormatError};
use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    /// Image id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// raw or qcow2, verified against the content.
    pub disk_format: DiskFormat,
    /// Always `bare`.
    pub container_format: String,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Size of the disk the guest sees.
    pub virtual_size: u64,
    /// Hex MD5 of the content.
    pub checksum_md5: String,
    /// Hex SHA-512 of the content.
    pub hash_sha512: String,
    /// Smallest root disk (GiB) a server booting this image needs.
    pub min_disk_gb: u64,
    /// Smallest RAM (MiB) a server booting this image needs.
    pub min_ram_mb: u64,
    /// `public` or `private`.
    pub visibility: String,
    /// Free-form properties (SCS image metadata such as `os_distro`, `image_build_date`).
    pub properties: BTreeMap<String, String>,
    /// When the import finished.
    pub created_at: Timestamp,
}

/// A request to import an image.
#[derive(Debug, Clone, Default)]
pub struct NewImage {
    /// Client-chosen id; generated when absent.
    pub id: Option<Uuid>,
    /// Display name.
    pub name: String,
    /// Declared format, checked against the content.
    pub disk_format: Option<DiskFormat>,
    /// Minimum root disk in GiB.
    pub min_disk_gb: u64,
    /// Minimum RAM in MiB.
    pub min_ram_mb: u64,
    /// Free-form properties.
    pub properties: BTreeMap<String, String>,
    /// When given, the import fails unless the content's SHA-512 matches (hex).
    pub expected_sha512: Option<String>,
}

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No such image.
    #[error("image {0} could not be found")]
    NotFound(String),
    /// The id is taken.
    #[error("image id {0} already exists")]
    DuplicateId(Uuid),
    /// A field of the request is unacceptable.
    #[error("invalid image {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The content is not what was declared, or is unsafe.
    #[error("image content refused: {0}")]
    Format(#[from] FormatError),
    /// The content does not match the checksum the client gave.
    #[error("image content has SHA-512 {actual}, expected {expected}")]
    ChecksumMismatch {
        /// Given by the client.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// Servers still boot from it.
    #[error("image {id} is in use by {servers} server(s)")]
    InUse {
        /// Image id.
        id: Uuid,
        /// How many servers.
        servers: u64,
    },
    /// Reading the upload or writing the file failed.
    #[error("image file I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for ImageError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Store(StoreError::Query(err))
    }
}

impl Classify for ImageError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::NotFound(_) => ErrorClass::NotFound,
            Self::DuplicateId(_) | Self::InUse { .. } => ErrorClass::Conflict,
            Self::Invalid { .. } | Self::Format(_) | Self::ChecksumMismatch { .. } => {
                ErrorClass::BadRequest
            }
            Self::Io(_) | Self::Store(_) => ErrorClass::Internal,
        }
    }
}

/// Import, list, show and delete images.
pub struct ImageService {
    store: Arc<Store>,
    files: Arc<dyn ImageFiles>,
    clock: Arc<dyn Clock>,
}

/// Validates a display name the way Glance does: at most 255 characters.
fn validate_name(name: &str) -> Result<(), ImageError> {
    if name.chars().count() > 255 {
        return Err(ImageError::Invalid {
            field: "name",
            reason: "longer than 255 characters".into(),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(ImageError::Invalid {
            field: "name",
            reason: "contains control characters".into(),
        });
    }
    Ok(())
}

impl ImageService {
    /// A service over `store` and `files`.
    pub fn new(store: Arc<Store>, files: Arc<dyn ImageFiles>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            files,
            clock,
        }
    }

    /// Streams `source` into the store. Nothing stays behind when the import is refused.
    pub fn import(&self, request: NewImage, source: &mut dyn Read) -> Result<Image, ImageError> {
        validate_name(&request.name)?;
        let disk_format = request.disk_format.ok_or(ImageError::Invalid {
            field: "disk_format",
            reason: "must be raw or qcow2".into(),
        })?;
        for (key, value) in &request.properties {
            if key.is_empty() || key.len() > 255 || value.len() > 65535 {
                return Err(ImageError::Invalid {
                    field: "properties",
                    reason: format!("property {key:?} too long or empty"),
                });
            }
        }
        if let Some(expected) = &request.expected_sha512
            && (expected.len() != 128 || !expected.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(ImageError::Invalid {
                field: "expected_sha512",
                reason: "must be 128 hex digits".into(),
            });
        }
        let id = request.id.unwrap_or_else(Uuid::new_v4);
        if self.find(id)?.is_some() {
            return Err(ImageError::DuplicateId(id));
        }

        let (digest, pending) = self.files.receive(id, source)?;
        let checked = format::inspect(disk_format, &digest.header, digest.size)
            .map_err(ImageError::from)
            .and_then(|inspection| match &request.expected_sha512 {
                Some(expected) if !expected.eq_ignore_ascii_case(&digest.sha512) => {
                    Err(ImageError::ChecksumMismatch {
                        expected: expected.clone(),
                        actual: digest.sha512.clone(),
                    })
                }
                _ => Ok(inspection),
            });
        let inspection = match checked {
            Ok(inspection) => inspection,
            Err(err) => {
                pending.discard();
                return Err(err);
            }
        };
        let image = Image {
            id,
            name: request.name,
            disk_format,
            container_format: "bare".into(),
            size_bytes: digest.size,
            virtual_size: inspection.virtual_size,
            checksum_md5: digest.md5,
            hash_sha512: digest.sha512,
            min_disk_gb: request.min_disk_gb,
            min_ram_mb: request.min_ram_mb,
            visibility: "public".into(),
            properties: request.properties,
            created_at: self.clock.now(),
        };
        let inserted = self.store.write(|tx| -> Result<(), ImageError> {
            let exists: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM images WHERE id = ?1)", [id.to_string()], |r| r.get(0))?;
            if exists {
                return Err(ImageError::DuplicateId(id));
            }
            tx.execute(
                "INSERT INTO images (id, name, disk_format, container_format, size_bytes, virtual_size, checksum_md5,
                     hash_sha512, min_disk_gb, min_ram_mb, visibility, properties, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    image.id.to_string(),
                    image.name,
                    image.disk_format.as_str(),
                    image.container_format,
                    image.size_bytes as i64,
                    image.virtual_size as i64,
                    image.checksum_md5,
                    image.hash_sha512,
                    image.min_disk_gb as i64,
                    image.min_ram_mb as i64,
                    image.visibility,
                    to_json(&image.properties),
                    image.created_at.to_string(),
                ],
            )?;
            Ok(())
        });
        if let Err(err) = inserted {
            pending.discard();
            return Err(err);
        }
        // The row is durable; a crash before publishing is completed by the reconciler.
        pending.publish()?;
        Ok(image)
    }

    /// The image, if it exists.
    pub fn find(&self, id: Uuid) -> Result<Option<Image>, ImageError> {
        self.store.read(|tx| {
            tx.query_row(
                &format!("SELECT {COLUMNS} FROM images WHERE id = ?1"),
                [id.to_string()],
                |row| Ok(from_row(row)),
            )
            .optional()?
            .transpose()
        })
    }

    /// The image, or `NotFound`.
    pub fn get(&self, id: Uuid) -> Result<Image, ImageError> {
        self.find(id)?
            .ok_or_else(|| ImageError::NotFound(id.to_string()))
    }

    /// All images, oldest first.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        self.store.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM images ORDER BY created_at, id"
            ))?;
            let rows = stmt.query_map([], |row| Ok(from_row(row)))?;
            rows.map(|r| r.map_err(ImageError::from).and_then(|i| i))
                .collect()
        })
    }

    /// Deletes an image no server uses. The row goes first; the file follows (or is collected later).
    pub fn delete(&self, id: Uuid) -> Result<(), ImageError> {
        self.store.write(|tx| -> Result<(), ImageError> {
            let servers: i64 = tx.query_row(
                "SELECT count(*) FROM servers WHERE image_id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )?;
            if servers > 0 {
                return Err(ImageError::InUse {
                    id,
                    servers: servers as u64,
                });
            }
            if tx.execute("DELETE FROM images WHERE id = ?1", [id.to_string()])? == 0 {
                return Err(ImageError::NotFound(id.to_string()));
            }
            Ok(())
        })?;
        self.files.remove(id)?;
        Ok(())
    }

    /// Where QEMU finds the image's bytes.
    pub fn path(&self, id: Uuid) -> PathBuf {
        self.files.path(id)
    }

    /// Whether the image's file is present.
    pub fn file_exists(&self, id: Uuid) -> Result<bool, ImageError> {
        Ok(self.files.exists(id)?)
    }
}

const COLUMNS: &str =
    "id, name, disk_format, container_format, size_bytes, virtual_size, checksum_md5, hash_sha512,
    min_disk_gb, min_ram_mb, visibility, properties, created_at";

fn from_row(row: &Row<'_>) -> Result<Image, ImageError> {
    let id: String = row.get(0)?;
    let disk_format: String = row.get(2)?;
    let properties: String = row.get(11)?;
    let created_at: String = row.get(12)?;
    Ok(Image {
        id: Uuid::parse_str(&id).map_err(|_| ImageError::NotFound(id.clone()))?,
        name: row.get(1)?,
        disk_format: DiskFormat::parse(&disk_format).ok_or(ImageError::Invalid {
            field: "disk_format",
            reason: format!("stored value {disk_format:?}"),
        })?,
        container_format: row.get(3)?,
        size_bytes: row.get::<_, i64>(4)? as u64,
        virtual_size: row.get::<_, i64>(5)? as u64,
        checksum_md5: row.get(6)?,
        hash_sha512: row.get(7)?,
        min_disk_gb: row.get::<_, i64>(8)? as u64,
        min_ram_mb: row.get::<_, i64>(9)? as u64,
        visibility: row.get(10)?,
        properties: from_json("images.properties", &properties)?,
        created_at: created_at.parse().unwrap_or_default(),
    })
}

/// Keeps image files and rows in step after crashes.
pub struct ImageReconciler {
    store: Arc<Store>,
    files: Arc<dyn ImageFiles>,
}

impl ImageReconciler {
    /// A reconciler over the same store and files as the service.
    pub fn new(store: Arc<Store>, files: Arc<dyn ImageFiles>) -> Self {
        Self { store, files }
    }

    fn row_exists(&self, id: Uuid) -> Result<bool, StoreError> {
        self.store.read(|tx| {
            Ok(tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM images WHERE id = ?1)",
                [id.to_string()],
                |r| r.get(0),
            )?)
        })
    }
}

impl Reconciler for ImageReconciler {
    fn kind(&self) -> &'static str {
        "images"
    }

    /// Only files matter: a row without a file cannot be repaired here.
    fn all_keys(&self) -> Result<Vec<String>, BoxError> {
        let mut keys: HashSet<String> = HashSet::new();
        for (id, state) in self.files.scan()? {
            if state != BlobState::InProgress {
                keys.insert(id.to_string());
            }
        }
        Ok(keys.into_iter().collect())
    }

    fn changed(&self) -> Result<Vec<(String, i64)>, BoxError> {
        Ok(Vec::new())
    }

    fn reconcile(&self, key: &str) -> Result<Next, BoxError> {
        let id = Uuid::parse_str(key)?;
        let state = self
            .files
            .scan()?
            .into_iter()
            .find(|(found, _)| *found == id)
            .map(|(_, s)| s);
        let has_row = self.row_exists(id)?;
        match (state, has_row) {
            (Some(BlobState::Abandoned), true) => {
                tracing::info!(image = %id, "completing image import interrupted after commit");
                self.files.publish_abandoned(id)?;
            }
            (Some(BlobState::Abandoned | BlobState::Published), false) => {
                tracing::info!(image = %id, "removing image file without a row");
                self.files.remove(id)?;
            }
            _ => {}
        }
        Ok(Next::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::clock::SystemClock;
    use files::FakeImageFiles;

    fn service() -> (ImageService, FakeImageFiles, Arc<Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("agent.db")).expect("store"));
        let files = FakeImageFiles::default();
        (
            ImageService::new(
                store.clone(),
                Arc::new(files.clone()),
                Arc::new(SystemClock),
            ),
            files,
            store,
            dir,
        )
    }

    fn request(name: &str, format: DiskFormat) -> NewImage {
        NewImage {
            name: name.into(),
            disk_format: Some(format),
            ..NewImage::default()
        }
    }

    #[test]
    fn import_records_sizes_and_checksums_and_publishes_the_file() {
        let (svc, files, _, _dir) = service();
        let bytes = vec![7u8; 4096];
        let image = svc
            .import(request("cirros", DiskFormat::Raw), &mut &bytes[..])
            .expect("import");
        assert_eq!(image.size_bytes, 4096);
        assert_eq!(image.virtual_size, 4096);
        assert_eq!(image.checksum_md5.len(), 32);
        assert_eq!(files.published(image.id), Some(bytes));
        assert_eq!(svc.get(image.id).expect("get"), image);
    }

    #[test]
    fn refused_content_leaves_no_row_and_no_file() {
        let (svc, files, _, _dir) = service();
        let qcow2 = format::tests::qcow2_header(1 << 30, true, false);
        let err = svc
            .import(request("evil", DiskFormat::Qcow2), &mut &qcow2[..])
            .expect_err("backing file");
        assert!(matches!(err, ImageError::Format(FormatError::BackingFile)));
        assert_eq!(err.class(), ErrorClass::BadRequest);
        assert!(svc.list().expect("list").is_empty());
        assert_eq!(files.count(), 0);
    }

    #[test]
    fn checksum_mismatch_is_refused_and_leaves_nothing() {
        let (svc, files, _, _dir) = service();
        let mut req = request("x", DiskFormat::Raw);
        req.expected_sha512 = Some("0".repeat(128));
        assert!(matches!(
            svc.import(req, &mut &b"data"[..]),
            Err(ImageError::ChecksumMismatch { .. })
        ));
        assert!(svc.list().expect("list").is_empty());
        assert_eq!(files.count(), 0);
    }

    #[test]
    fn duplicate_id_is_a_conflict_and_keeps_the_original() {
        let (svc, files, _, _dir) = service();
        let id = Uuid::new_v4();
        let mut req = request("a", DiskFormat::Raw);
        req.id = Some(id);
        svc.import(req.clone(), &mut &b"one"[..]).expect("first");
        let err = svc.import(req, &mut &b"two"[..]).expect_err("duplicate");
        assert_eq!(err.class(), ErrorClass::Conflict);
        assert_eq!(files.published(id), Some(b"one".to_vec()));
    }

    #[test]
    fn missing_disk_format_and_overlong_name_are_bad_requests() {
        let (svc, _, _, _dir) = service();
        let err = svc
            .import(
                NewImage {
                    name: "x".into(),
                    ..NewImage::default()
                },
                &mut &b"d"[..],
            )
            .expect_err("format");
        assert_eq!(err.class(), ErrorClass::BadRequest);
        let err = svc
            .import(request(&"n".repeat(256), DiskFormat::Raw), &mut &b"d"[..])
            .expect_err("name");
        assert_eq!(err.class(), ErrorClass::BadRequest);
    }

    #[test]
    fn reconciler_removes_orphan_files_and_completes_committed_imports() {
        let (svc, files, store, _dir) = service();
        let kept = svc
            .import(request("kept", DiskFormat::Raw), &mut &b"k"[..])
            .expect("import");
        // A killed import after commit: the row exists, the file is still partial.
        files.plant(kept.id, b"k".to_vec(), BlobState::Abandoned);
        let orphan = Uuid::new_v4();
        files.plant(orphan, b"o".to_vec(), BlobState::Abandoned);
        let running = Uuid::new_v4();
        files.plant(running, b"r".to_vec(), BlobState::InProgress);

        let reconciler = ImageReconciler::new(store, Arc::new(files.clone()));
        for key in reconciler.all_keys().expect("keys") {
            reconciler.reconcile(&key).expect("reconcile");
        }
        assert_eq!(files.published(kept.id), Some(b"k".to_vec()));
        assert!(
            files
                .scan()
                .expect("scan")
                .iter()
                .all(|(id, _)| *id != orphan)
        );
        assert!(
            files
                .scan()
                .expect("scan")
                .contains(&(running, BlobState::InProgress)),
            "imports in progress are left alone"
        );
    }
}
