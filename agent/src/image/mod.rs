//! The image store: Glance's image model on this node, for the image API, the CLI and compute.
//!
//! An image is a record first (`queued`, no data) and gets its bytes by an upload (`saving` while in
//! flight, then `active`); the one-shot `import` of the CLI does both at once. The bytes are raw or
//! qcow2 only — what this node boots — and are checked against the declared format, because QEMU
//! must never be handed a file as something it is not. Active images are immutable; server disks are
//! qcow2 overlays on them, which is why an image cannot be deleted while a server uses it.
//!
//! Access follows Glance: an owner project, four visibilities and members for `shared` images
//! (`access`, `members`); updates are Glance's patch operations (`patch`); lists are filtered,
//! sorted and paged (`query`). The image reconciler (`reconciler`) repairs what a killed upload or
//! import leaves behind. Nothing here knows HTTP: `api/` maps `ImageError` classes and renders.

pub mod access;
pub mod attributes;
pub mod files;
pub mod format;
pub mod members;
pub mod patch;
pub mod query;
pub mod reconciler;
mod repo;

pub use access::Caller;
pub use members::{ImageMember, MemberStatus};
pub use patch::{ChangeValue, ImageChange};
pub use query::{ImagePage, ImageQuery, MemberStatusFilter, SortDir, SortKey, VisibilityFilter};
pub use reconciler::ImageReconciler;

use crate::error_class::{Classify, ErrorClass};
use crate::store::{Store, StoreError};
use crate::system::clock::Clock;
use files::{BlobDigest, ImageFiles, PendingBlob};
use format::{DiskFormat, FormatError, Inspection};
use jiff::Timestamp;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

/// Where an image is in its life. Glance has more states (`killed`, `deactivated`, `importing`…);
/// this node needs only these three, and a failed upload returns to `queued` rather than `killed` so
/// the client can simply retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageStatus {
    /// A record without data.
    Queued,
    /// Data is being uploaded.
    Saving,
    /// Data is stored and verified; servers can boot it.
    Active,
}

impl ImageStatus {
    /// Glance's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Saving => "saving",
            Self::Active => "active",
        }
    }

    /// Parses Glance's name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "queued" => Some(Self::Queued),
            "saving" => Some(Self::Saving),
            "active" => Some(Self::Active),
            _ => None,
        }
    }
}

/// Who sees an image besides its owner and admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Every project; listed by default. Only admins may make an image public.
    Public,
    /// The owner only.
    Private,
    /// The owner and its members (Glance's default at create).
    Shared,
    /// Every project, but listed only when asked for (`visibility=community`).
    Community,
}

impl Visibility {
    /// Glance's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Shared => "shared",
            Self::Community => "community",
        }
    }

    /// Parses Glance's name; anything else is a bad request.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        match text {
            "public" => Ok(Self::Public),
            "private" => Ok(Self::Private),
            "shared" => Ok(Self::Shared),
            "community" => Ok(Self::Community),
            other => Err(ImageError::Invalid {
                field: "visibility",
                reason: format!("Invalid visibility value: {other}"),
            }),
        }
    }
}

/// The container around the disk. Only `bare` (no container) is bootable here; OVF/OVA archives and
/// the AMI family would need unpacking this node does not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerFormat {
    /// The file is the disk.
    Bare,
}

impl ContainerFormat {
    /// Glance's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bare => "bare",
        }
    }

    /// Parses a `container_format`; unsupported ones are a bad request.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        match text {
            "bare" => Ok(Self::Bare),
            other => Err(ImageError::Invalid {
                field: "container_format",
                reason: format!("'{other}' is not supported here; this node accepts bare"),
            }),
        }
    }
}

/// An image record. Data-dependent fields are `None` until an upload succeeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    /// Image id.
    pub id: Uuid,
    /// Display name (Glance allows none).
    pub name: Option<String>,
    /// Life-cycle state.
    pub status: ImageStatus,
    /// raw or qcow2; verified against the content at upload.
    pub disk_format: Option<DiskFormat>,
    /// Always `bare` once set.
    pub container_format: Option<ContainerFormat>,
    /// Bytes stored (Glance's `size`).
    pub size_bytes: Option<u64>,
    /// Size of the disk the guest sees.
    pub virtual_size: Option<u64>,
    /// Hex MD5 of the content (Glance's `checksum`).
    pub checksum_md5: Option<String>,
    /// Hex SHA-512 of the content (Glance's `os_hash_value`; `os_hash_algo` is `sha512`).
    pub hash_sha512: Option<String>,
    /// Smallest root disk (GiB) a server booting this image needs.
    pub min_disk_gb: u64,
    /// Smallest RAM (MiB) a server booting this image needs.
    pub min_ram_mb: u64,
    /// Who sees it.
    pub visibility: Visibility,
    /// Protected images cannot be deleted until the flag is cleared.
    pub protected: bool,
    /// Owning project; `None` for images the operator imported with the CLI.
    pub owner: Option<String>,
    /// Tags (a set, as in Glance).
    pub tags: BTreeSet<String>,
    /// Free-form string properties (SCS image metadata: `os_distro`, `image_build_date`, …).
    pub properties: BTreeMap<String, String>,
    /// When the record was created.
    pub created_at: Timestamp,
    /// When the record last changed (status changes included).
    pub updated_at: Timestamp,
}

impl Image {
    /// Glance's `os_hash_algo`: set once the image has data.
    pub fn os_hash_algo(&self) -> Option<&'static str> {
        self.hash_sha512.as_ref().map(|_| "sha512")
    }

    /// What compute needs to boot the image, or `NotActive`.
    pub fn bootable(&self) -> Result<BootImage, ImageError> {
        match (
            self.status,
            self.disk_format,
            self.size_bytes,
            self.virtual_size,
        ) {
            (ImageStatus::Active, Some(disk_format), Some(size_bytes), Some(virtual_size)) => {
                Ok(BootImage {
                    id: self.id,
                    disk_format,
                    size_bytes,
                    virtual_size,
                    min_disk_gb: self.min_disk_gb,
                    min_ram_mb: self.min_ram_mb,
                })
            }
            _ => Err(ImageError::NotActive(self.id)),
        }
    }
}

/// An active image as compute sees it: no optional fields, nothing about access (the API checks
/// access before it calls compute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootImage {
    /// Image id.
    pub id: Uuid,
    /// Format of the backing file.
    pub disk_format: DiskFormat,
    /// Bytes stored.
    pub size_bytes: u64,
    /// Size of the disk the guest sees.
    pub virtual_size: u64,
    /// Smallest root disk (GiB).
    pub min_disk_gb: u64,
    /// Smallest RAM (MiB).
    pub min_ram_mb: u64,
}

/// A request to create an image record (Glance's `POST /v2/images`), values as the client sent them;
/// the service validates everything.
#[derive(Debug, Clone, Default)]
pub struct NewImageRecord {
    /// Client-chosen id; generated when absent.
    pub id: Option<Uuid>,
    /// Display name.
    pub name: Option<String>,
    /// `raw` or `qcow2`; may be set later, before the upload.
    pub disk_format: Option<String>,
    /// `bare`; may be set later, before the upload.
    pub container_format: Option<String>,
    /// Minimum root disk in GiB.
    pub min_disk: u64,
    /// Minimum RAM in MiB.
    pub min_ram: u64,
    /// `public` (admins only), `private`, `shared` (the default) or `community`.
    pub visibility: Option<String>,
    /// Refuse deletion until cleared.
    pub protected: bool,
    /// Tags.
    pub tags: Vec<String>,
    /// Free-form properties (every body field that is not a core attribute).
    pub properties: BTreeMap<String, String>,
    /// Owning project; defaults to the caller's. Only admins may name another project.
    pub owner: Option<String>,
}

/// A request to import an image in one step (the CLI, tests): create and upload fused, so a refused
/// import leaves no record behind.
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

/// An active image's bytes, for download.
pub struct ImageData {
    /// The content.
    pub reader: Box<dyn Read + Send>,
    /// Bytes to expect (`Content-Length`).
    pub size: u64,
    /// Hex MD5 (`Content-MD5`, as Glance sends it).
    pub checksum_md5: String,
}

impl std::fmt::Debug for ImageData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageData")
            .field("size", &self.size)
            .field("checksum_md5", &self.checksum_md5)
            .finish_non_exhaustive()
    }
}

/// Why an image operation failed. Messages follow Glance's where clients may show or match them.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No such image, or one the caller may not see.
    #[error("No image found with ID {0}")]
    NotFound(Uuid),
    /// No such member.
    #[error("Member {member} not found for image {image}")]
    MemberNotFound {
        /// Image id.
        image: Uuid,
        /// Member project.
        member: String,
    },
    /// The list marker names no image the caller can see.
    #[error("Invalid marker. Image {0} could not be found.")]
    BadMarker(Uuid),
    /// The id is taken.
    #[error("Image with identifier {0} already exists!")]
    DuplicateId(Uuid),
    /// The project is a member already.
    #[error("Member {member} already exists for image {image}")]
    DuplicateMember {
        /// Image id.
        image: Uuid,
        /// Member project.
        member: String,
    },
    /// A field of the request is unacceptable.
    #[error("invalid image {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The caller may see the image but not do this (not the owner, protected, policy).
    #[error("{0}")]
    Forbidden(String),
    /// A computed attribute was to be set.
    #[error("Attribute '{0}' is read-only.")]
    ReadOnly(String),
    /// A name Glance keeps for itself was to be set.
    #[error("Attribute '{0}' is reserved.")]
    Reserved(String),
    /// `remove`/`replace` of a property the image does not have.
    #[error("Property {0} does not exist.")]
    PropertyMissing(String),
    /// Too many properties, tags or members. Glance answers 413 here; this node reports a bad request
    /// (the class set has no 413), and `api/` may single this variant out if a client needs the 413.
    #[error("Attribute quota exceeded: at most {limit} {what}")]
    QuotaExceeded {
        /// Properties, tags or members.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// Upload before both formats are known; names the missing ones, as Glance does.
    #[error(
        "{} {} must be set prior to saving data.",
        if .0.len() == 1 { "Property" } else { "Properties" },
        .0.join(", ")
    )]
    FormatsRequired(Vec<&'static str>),
    /// Upload to an image that is not `queued`.
    #[error("Image status transition from {from} to saving is not allowed")]
    InvalidTransition {
        /// Current status.
        from: &'static str,
    },
    /// The image changed (deleted, or reset by the reconciler) while its data was being uploaded.
    #[error("image {0} changed while its data was being uploaded; nothing was stored")]
    UploadInterrupted(Uuid),
    /// Compute asked for an image that has no data yet.
    #[error("image {0} is not active")]
    NotActive(Uuid),
    /// Protected images cannot be deleted.
    #[error("Image {0} is protected and cannot be deleted.")]
    Protected(Uuid),
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
    /// A row holds a value this build cannot read.
    #[error("store holds a malformed image row: {0}")]
    Corrupt(String),
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
            Self::NotFound(_) | Self::MemberNotFound { .. } => ErrorClass::NotFound,
            Self::DuplicateId(_)
            | Self::DuplicateMember { .. }
            | Self::InUse { .. }
            | Self::PropertyMissing(_)
            | Self::InvalidTransition { .. }
            | Self::UploadInterrupted(_) => ErrorClass::Conflict,
            Self::Forbidden(_) | Self::ReadOnly(_) | Self::Reserved(_) | Self::Protected(_) => {
                ErrorClass::Forbidden
            }
            Self::Invalid { .. }
            | Self::BadMarker(_)
            | Self::QuotaExceeded { .. }
            | Self::FormatsRequired(_)
            | Self::NotActive(_)
            | Self::Format(_)
            | Self::ChecksumMismatch { .. } => ErrorClass::BadRequest,
            Self::Corrupt(_) | Self::Io(_) | Self::Store(_) => ErrorClass::Internal,
        }
    }
}

/// Creates, uploads, lists, shows, updates and deletes images, enforcing Glance's rules.
///
/// Calls block (SQLite, file I/O) and belong on blocking threads. Calls that take a `Caller` enforce
/// access; `find`, `get`, `bootable`, `path` and `file_exists` do not, because compute and the
/// operator's CLI act for the node, after `api/` has checked access.
pub struct ImageService {
    store: Arc<Store>,
    files: Arc<dyn ImageFiles>,
    clock: Arc<dyn Clock>,
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

    /// Validates a create request into a `queued` record (not yet stored).
    fn new_record(&self, caller: &Caller, record: NewImageRecord) -> Result<Image, ImageError> {
        if let Some(name) = &record.name {
            attributes::check_name(name)?;
        }
        let disk_format = record
            .disk_format
            .as_deref()
            .map(patch::parse_disk_format)
            .transpose()?;
        let container_format = record
            .container_format
            .as_deref()
            .map(ContainerFormat::parse)
            .transpose()?;
        let visibility = record
            .visibility
            .as_deref()
            .map(Visibility::parse)
            .transpose()?
            .unwrap_or(Visibility::Shared);
        patch::check_visibility_allowed(visibility, caller)?;
        let tags = attributes::check_tags(record.tags)?;
        attributes::check_properties(&record.properties)?;
        let owner = match record.owner {
            None => (!caller.project_id.is_empty()).then(|| caller.project_id.clone()),
            Some(owner) if owner.is_empty() || owner.chars().count() > 255 => {
                return Err(ImageError::Invalid {
                    field: "owner",
                    reason: "must be a project id of 1 to 255 characters".into(),
                });
            }
            Some(owner) if caller.is_admin || owner == caller.project_id => Some(owner),
            Some(owner) => {
                return Err(ImageError::Forbidden(format!(
                    "You are not permitted to create images owned by '{owner}'."
                )));
            }
        };
        let now = self.clock.now();
        Ok(Image {
            id: record.id.unwrap_or_else(Uuid::new_v4),
            name: record.name,
            status: ImageStatus::Queued,
            disk_format,
            container_format,
            size_bytes: None,
            virtual_size: None,
            checksum_md5: None,
            hash_sha512: None,
            min_disk_gb: record.min_disk,
            min_ram_mb: record.min_ram,
            visibility,
            protected: record.protected,
            owner,
            tags,
            properties: record.properties,
            created_at: now,
            updated_at: now,
        })
    }

    /// Creates a `queued` image without data (Glance's first step). The owner defaults to the
    /// caller's project; only admins may create public images or images owned by another project.
    pub fn create(&self, caller: &Caller, record: NewImageRecord) -> Result<Image, ImageError> {
        let image = self.new_record(caller, record)?;
        self.store.write(|tx| {
            if repo::exists(tx, image.id)? {
                return Err(ImageError::DuplicateId(image.id));
            }
            repo::insert(tx, &image)
        })?;
        Ok(image)
    }

    /// Streams the data of a `queued` image (Glance's second step): `saving` while in flight, `active`
    /// with size, virtual size and hashes once the content matched the declared format.
    ///
    /// Any failure leaves the image `queued` and no file behind, so the client can retry; a kill
    /// mid-way is repaired by the reconciler the same way.
    pub fn upload(
        &self,
        id: Uuid,
        caller: &Caller,
        source: &mut dyn Read,
    ) -> Result<Image, ImageError> {
        let now = self.clock.now();
        let disk_format = self.store.write(|tx| {
            let image = Self::modifiable(tx, id, caller)?;
            if image.status != ImageStatus::Queued {
                return Err(ImageError::InvalidTransition {
                    from: image.status.as_str(),
                });
            }
            let (Some(disk_format), Some(_)) = (image.disk_format, image.container_format) else {
                let missing = [
                    ("disk_format", image.disk_format.is_none()),
                    ("container_format", image.container_format.is_none()),
                ];
                return Err(ImageError::FormatsRequired(
                    missing.iter().filter(|m| m.1).map(|m| m.0).collect(),
                ));
            };
            repo::transition(tx, id, ImageStatus::Queued, ImageStatus::Saving, now)?;
            Ok(disk_format)
        })?;
        let received = self.receive_verified(id, disk_format, source, None);
        let (digest, inspection, pending) = match received {
            Ok(received) => received,
            Err(err) => {
                self.requeue(id);
                return Err(err);
            }
        };
        let now = self.clock.now();
        let committed = self.store.write(|tx| {
            let mut image = match repo::find(tx, id)? {
                Some(image) if image.status == ImageStatus::Saving => image,
                _ => return Err(ImageError::UploadInterrupted(id)),
            };
            fill_data(&mut image, &digest, inspection);
            image.updated_at = now;
            repo::update(tx, &image)?;
            Ok(image)
        });
        match committed {
            Ok(image) => {
                // The row is durable; a crash before publishing is completed by the reconciler.
                pending.publish()?;
                Ok(image)
            }
            Err(err) => {
                pending.discard();
                self.requeue(id);
                Err(err)
            }
        }
    }

    /// Puts an image whose upload failed back to `queued` (if it is still `saving`).
    fn requeue(&self, id: Uuid) {
        let now = self.clock.now();
        if let Err(err) = self
            .store
            .write(|tx| repo::transition(tx, id, ImageStatus::Saving, ImageStatus::Queued, now))
        {
            // The reconciler finds the `saving` row and finishes the job.
            tracing::warn!(image = %id, %err, "cannot requeue image after a failed upload");
        }
    }

    /// Receives the bytes into a pending file and checks them; the file is gone if they are refused.
    fn receive_verified(
        &self,
        id: Uuid,
        disk_format: DiskFormat,
        source: &mut dyn Read,
        expected_sha512: Option<&str>,
    ) -> Result<(BlobDigest, Inspection, Box<dyn PendingBlob>), ImageError> {
        let (digest, pending) = self.files.receive(id, source)?;
        let checked = format::inspect(disk_format, &digest.header, digest.size)
            .map_err(ImageError::from)
            .and_then(|inspection| match expected_sha512 {
                Some(expected) if !expected.eq_ignore_ascii_case(&digest.sha512) => {
                    Err(ImageError::ChecksumMismatch {
                        expected: expected.to_owned(),
                        actual: digest.sha512.clone(),
                    })
                }
                _ => Ok(inspection),
            });
        match checked {
            Ok(inspection) => Ok((digest, inspection, pending)),
            Err(err) => {
                pending.discard();
                Err(err)
            }
        }
    }

    /// Imports an image in one step as the operator: an ownerless, public, active image, or nothing
    /// at all when the content is refused (no `queued` record stays behind).
    pub fn import(&self, request: NewImage, source: &mut dyn Read) -> Result<Image, ImageError> {
        let disk_format = request.disk_format.ok_or(ImageError::Invalid {
            field: "disk_format",
            reason: "must be raw or qcow2".into(),
        })?;
        if let Some(expected) = &request.expected_sha512
            && (expected.len() != 128 || !expected.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(ImageError::Invalid {
                field: "expected_sha512",
                reason: "must be 128 hex digits".into(),
            });
        }
        let mut image = self.new_record(
            &Caller::operator(),
            NewImageRecord {
                id: request.id,
                name: Some(request.name),
                disk_format: Some(disk_format.as_str().to_owned()),
                container_format: Some(ContainerFormat::Bare.as_str().to_owned()),
                min_disk: request.min_disk_gb,
                min_ram: request.min_ram_mb,
                visibility: Some(Visibility::Public.as_str().to_owned()),
                properties: request.properties,
                ..NewImageRecord::default()
            },
        )?;
        let id = image.id;
        if self.find(id)?.is_some() {
            return Err(ImageError::DuplicateId(id));
        }
        let (digest, inspection, pending) =
            self.receive_verified(id, disk_format, source, request.expected_sha512.as_deref())?;
        fill_data(&mut image, &digest, inspection);
        image.created_at = self.clock.now();
        image.updated_at = image.created_at;
        let inserted = self.store.write(|tx| {
            if repo::exists(tx, id)? {
                return Err(ImageError::DuplicateId(id));
            }
            repo::insert(tx, &image)
        });
        if let Err(err) = inserted {
            pending.discard();
            return Err(err);
        }
        // The row is durable; a crash before publishing is completed by the reconciler.
        pending.publish()?;
        Ok(image)
    }

    /// The image, if it exists, whoever owns it (compute, CLI).
    pub fn find(&self, id: Uuid) -> Result<Option<Image>, ImageError> {
        self.store.read(|tx| repo::find(tx, id))
    }

    /// How many images the site holds, whoever owns them (the region link reports it).
    pub fn count(&self) -> Result<u64, ImageError> {
        self.store.read(repo::count)
    }

    /// The image, or `NotFound`, whoever owns it (compute, CLI).
    pub fn get(&self, id: Uuid) -> Result<Image, ImageError> {
        self.find(id)?.ok_or(ImageError::NotFound(id))
    }

    /// The image as compute boots it: `NotFound`, or `NotActive` (a bad request) while it has no data.
    pub fn bootable(&self, id: Uuid) -> Result<BootImage, ImageError> {
        self.get(id)?.bootable()
    }

    /// The image if `caller` may see it, else `NotFound` (Glance's `GET /v2/images/{id}`).
    pub fn show(&self, id: Uuid, caller: &Caller) -> Result<Image, ImageError> {
        self.store.read(|tx| Self::visible(tx, id, caller))
    }

    /// One page of the images `caller` may see, filtered and sorted as `query` asks.
    pub fn list(&self, caller: &Caller, query: &ImageQuery) -> Result<ImagePage, ImageError> {
        let (images, memberships) = self.store.read(|tx| {
            let memberships = if caller.project_id.is_empty() {
                std::collections::HashMap::new()
            } else {
                repo::memberships_of(tx, &caller.project_id)?
            };
            Ok::<_, ImageError>((repo::all(tx)?, memberships))
        })?;
        query::select(images, &memberships, caller, query)
    }

    /// Applies Glance patch operations in one transaction: all of them, or (on the first refusal)
    /// none. `updated_at` moves on every successful update.
    pub fn update(
        &self,
        id: Uuid,
        caller: &Caller,
        changes: &[ImageChange],
    ) -> Result<Image, ImageError> {
        let now = self.clock.now();
        self.store.write(|tx| {
            let image = Self::modifiable(tx, id, caller)?;
            let mut next = patch::apply_changes(&image, caller, changes)?;
            next.updated_at = now;
            repo::update(tx, &next)?;
            Ok(next)
        })
    }

    /// Deletes an image `caller` owns (or any, for admins) unless it is protected or servers boot from
    /// it (their disks are overlays on its file). The row goes first; the file follows, or is
    /// collected by the reconciler.
    pub fn delete(&self, id: Uuid, caller: &Caller) -> Result<(), ImageError> {
        self.store.write(|tx| {
            let image = Self::modifiable(tx, id, caller)?;
            if image.protected {
                return Err(ImageError::Protected(id));
            }
            let servers = repo::servers_using(tx, id)?;
            if servers > 0 {
                return Err(ImageError::InUse { id, servers });
            }
            repo::delete(tx, id)?;
            Ok(())
        })?;
        self.files.remove(id)?;
        Ok(())
    }

    /// The bytes of an image `caller` may see. `None` while the image has no data: Glance answers 204
    /// No Content for a queued image's `/file`, which is a success, not an error.
    pub fn open_data(&self, id: Uuid, caller: &Caller) -> Result<Option<ImageData>, ImageError> {
        let image = self.show(id, caller)?;
        let (ImageStatus::Active, Some(size), Some(checksum_md5)) =
            (image.status, image.size_bytes, image.checksum_md5)
        else {
            return Ok(None);
        };
        Ok(Some(ImageData {
            reader: self.files.open(id)?,
            size,
            checksum_md5,
        }))
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

/// Records what an accepted upload revealed about the data, and makes the image active.
fn fill_data(image: &mut Image, digest: &BlobDigest, inspection: Inspection) {
    image.status = ImageStatus::Active;
    image.size_bytes = Some(digest.size);
    image.virtual_size = Some(inspection.virtual_size);
    image.checksum_md5 = Some(digest.md5.clone());
    image.hash_sha512 = Some(digest.sha512.clone());
}

#[cfg(test)]
pub(crate) mod tests;
