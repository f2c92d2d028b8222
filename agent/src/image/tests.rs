//! Service-level tests of the image store: the two-step upload, import, access, members, listing,
//! updates, deletion, download and crash recovery. Pure rules are tested next to their code.

use super::files::{BlobState, FakeImageFiles};
use super::*;
use crate::reconcile::Reconciler;
use crate::system::clock::ManualClock;
use std::io;

/// An active image owned by project `owner`, for the pure-function tests.
pub(crate) fn sample_image() -> Image {
    let at: Timestamp = "2026-11-01T10:00:00Z".parse().expect("time");
    Image {
        id: Uuid::new_v4(),
        name: Some("debian-12".into()),
        status: ImageStatus::Active,
        disk_format: Some(DiskFormat::Qcow2),
        container_format: Some(ContainerFormat::Bare),
        size_bytes: Some(1000),
        virtual_size: Some(1 << 30),
        checksum_md5: Some("m".repeat(32)),
        hash_sha512: Some("s".repeat(128)),
        min_disk_gb: 1,
        min_ram_mb: 128,
        visibility: Visibility::Private,
        protected: false,
        owner: Some("owner".into()),
        tags: BTreeSet::new(),
        properties: BTreeMap::from([("os_distro".to_owned(), "debian".to_owned())]),
        created_at: at,
        updated_at: at,
    }
}

pub(crate) struct Rig {
    pub(crate) svc: ImageService,
    pub(crate) files: FakeImageFiles,
    pub(crate) store: Arc<Store>,
    pub(crate) clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl Rig {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("agent.db")).expect("store"));
        let files = FakeImageFiles::default();
        let clock = Arc::new(ManualClock::new(
            "2026-11-01T10:00:00Z".parse().expect("time"),
        ));
        Self {
            svc: ImageService::new(store.clone(), Arc::new(files.clone()), clock.clone()),
            files,
            store,
            clock,
            _dir: dir,
        }
    }

    fn tick(&self) {
        self.clock.advance(jiff::SignedDuration::from_secs(1));
    }

    pub(crate) fn queued(&self, caller: &Caller, name: &str) -> Image {
        self.tick();
        self.svc
            .create(
                caller,
                NewImageRecord {
                    name: Some(name.into()),
                    disk_format: Some("raw".into()),
                    container_format: Some("bare".into()),
                    ..NewImageRecord::default()
                },
            )
            .expect("create")
    }

    fn reconcile_all(&self) {
        let reconciler = ImageReconciler::new(
            self.store.clone(),
            Arc::new(self.files.clone()),
            self.clock.clone(),
        );
        for key in reconciler.all_keys().expect("keys") {
            reconciler.reconcile(&key).expect("reconcile");
        }
    }
}

fn alice() -> Caller {
    Caller::project("alice")
}

fn bob() -> Caller {
    Caller::project("bob")
}

fn request(name: &str, format: DiskFormat) -> NewImage {
    NewImage {
        name: name.into(),
        disk_format: Some(format),
        ..NewImage::default()
    }
}

/// A reader that yields some bytes and then fails, like a client connection that drops.
struct Dropping(usize);

impl Read for Dropping {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "client went away",
            ));
        }
        let n = self.0.min(buf.len());
        buf[..n].fill(1);
        self.0 -= n;
        Ok(n)
    }
}

// --- two-step upload -------------------------------------------------------------------------------

#[test]
fn create_makes_a_queued_shared_image_owned_by_the_caller() {
    let rig = Rig::new();
    let image = rig.queued(&alice(), "a");
    assert_eq!(image.status, ImageStatus::Queued);
    assert_eq!(image.visibility, Visibility::Shared);
    assert_eq!(image.owner.as_deref(), Some("alice"));
    assert_eq!(image.size_bytes, None);
    assert_eq!(image.os_hash_algo(), None);
    assert_eq!(image.created_at, image.updated_at);
    assert_eq!(rig.svc.show(image.id, &alice()).expect("show"), image);
    assert_eq!(rig.files.count(), 0);
}

#[test]
fn upload_makes_the_image_active_with_sizes_and_checksums() {
    let rig = Rig::new();
    let image = rig.queued(&alice(), "a");
    rig.tick();
    let bytes = b"hello".to_vec();
    let active = rig
        .svc
        .upload(image.id, &alice(), &mut &bytes[..])
        .expect("upload");
    assert_eq!(active.status, ImageStatus::Active);
    assert_eq!(active.size_bytes, Some(5));
    assert_eq!(active.virtual_size, Some(5));
    assert_eq!(
        active.checksum_md5.as_deref(),
        Some("5d41402abc4b2a76b9719d911017c592")
    );
    assert_eq!(active.os_hash_algo(), Some("sha512"));
    assert!(
        active
            .hash_sha512
            .as_deref()
            .is_some_and(|h| h.starts_with("9b71d224bd62f378"))
    );
    assert!(active.updated_at > image.updated_at);
    assert_eq!(rig.files.published(image.id), Some(bytes.clone()));
    assert_eq!(rig.svc.get(image.id).expect("get"), active);
    let data = rig
        .svc
        .open_data(image.id, &alice())
        .expect("open")
        .expect("has data");
    assert_eq!(
        (data.size, data.checksum_md5.as_str()),
        (5, "5d41402abc4b2a76b9719d911017c592")
    );
    let mut read = Vec::new();
    let mut reader = data.reader;
    reader.read_to_end(&mut read).expect("read");
    assert_eq!(read, bytes);
}

#[test]
fn upload_needs_both_formats_and_a_queued_image() {
    let rig = Rig::new();
    let bare = rig
        .svc
        .create(&alice(), NewImageRecord::default())
        .expect("create");
    let err = rig
        .svc
        .upload(bare.id, &alice(), &mut &b"x"[..])
        .expect_err("no formats");
    assert_eq!(
        err.to_string(),
        "Properties disk_format, container_format must be set prior to saving data."
    );
    assert_eq!(err.class(), ErrorClass::BadRequest);
    assert_eq!(
        rig.svc.get(bare.id).expect("get").status,
        ImageStatus::Queued
    );

    let image = rig.queued(&alice(), "a");
    rig.svc
        .upload(image.id, &alice(), &mut &b"x"[..])
        .expect("first");
    let err = rig
        .svc
        .upload(image.id, &alice(), &mut &b"y"[..])
        .expect_err("second");
    assert_eq!(err.class(), ErrorClass::Conflict);
    assert_eq!(rig.files.published(image.id), Some(b"x".to_vec()));
}

#[test]
fn format_mismatch_stores_nothing_and_leaves_the_image_queued() {
    let rig = Rig::new();
    let image = rig.queued(&alice(), "a");
    let qcow2 = format::tests::qcow2_header(1 << 30, false, false);
    let err = rig
        .svc
        .upload(image.id, &alice(), &mut &qcow2[..])
        .expect_err("declared raw");
    assert!(matches!(
        err,
        ImageError::Format(FormatError::Mismatch { .. })
    ));
    assert_eq!(err.class(), ErrorClass::BadRequest);
    let after = rig.svc.get(image.id).expect("get");
    assert_eq!(after.status, ImageStatus::Queued);
    assert_eq!((after.size_bytes, after.checksum_md5), (None, None));
    assert_eq!(rig.files.count(), 0);
    // The client can fix the format and retry.
    rig.svc
        .update(
            image.id,
            &alice(),
            &[ImageChange::Replace {
                attribute: "disk_format".into(),
                value: ChangeValue::Text("qcow2".into()),
            }],
        )
        .expect("fix format");
    let active = rig
        .svc
        .upload(image.id, &alice(), &mut &qcow2[..])
        .expect("retry");
    assert_eq!(active.virtual_size, Some(1 << 30));
}

#[test]
fn a_dropped_upload_leaves_the_image_queued_and_no_file() {
    let rig = Rig::new();
    let image = rig.queued(&alice(), "a");
    let err = rig
        .svc
        .upload(image.id, &alice(), &mut Dropping(10))
        .expect_err("dropped");
    assert_eq!(err.class(), ErrorClass::Internal);
    assert_eq!(
        rig.svc.get(image.id).expect("get").status,
        ImageStatus::Queued
    );
    assert_eq!(rig.files.count(), 0);
    assert!(
        rig.svc
            .open_data(image.id, &alice())
            .expect("open")
            .is_none()
    );
}

#[test]
fn unsupported_formats_are_refused_at_create() {
    let rig = Rig::new();
    for (disk, container) in [("vmdk", "bare"), ("raw", "ova"), ("iso", "bare")] {
        let err = rig
            .svc
            .create(
                &alice(),
                NewImageRecord {
                    disk_format: Some(disk.into()),
                    container_format: Some(container.into()),
                    ..NewImageRecord::default()
                },
            )
            .expect_err(disk);
        assert_eq!(err.class(), ErrorClass::BadRequest, "{disk}/{container}");
    }
}

#[test]
fn create_refuses_public_and_foreign_owners_for_non_admins() {
    let rig = Rig::new();
    let public = NewImageRecord {
        visibility: Some("public".into()),
        ..NewImageRecord::default()
    };
    assert_eq!(
        rig.svc
            .create(&alice(), public.clone())
            .expect_err("public")
            .class(),
        ErrorClass::Forbidden
    );
    let admin = Caller {
        project_id: "ops".into(),
        is_admin: true,
    };
    assert_eq!(
        rig.svc.create(&admin, public).expect("admin").visibility,
        Visibility::Public
    );
    let foreign = NewImageRecord {
        owner: Some("bob".into()),
        ..NewImageRecord::default()
    };
    assert_eq!(
        rig.svc
            .create(&alice(), foreign.clone())
            .expect_err("owner")
            .class(),
        ErrorClass::Forbidden
    );
    assert_eq!(
        rig.svc
            .create(&admin, foreign)
            .expect("admin")
            .owner
            .as_deref(),
        Some("bob")
    );
    let id = Uuid::new_v4();
    let with_id = NewImageRecord {
        id: Some(id),
        ..NewImageRecord::default()
    };
    rig.svc.create(&alice(), with_id.clone()).expect("first");
    assert_eq!(
        rig.svc.create(&alice(), with_id).expect_err("dup").class(),
        ErrorClass::Conflict
    );
}

#[test]
fn create_checks_properties() {
    let rig = Rig::new();
    let props = |k: &str| NewImageRecord {
        properties: BTreeMap::from([(k.to_owned(), "v".to_owned())]),
        ..NewImageRecord::default()
    };
    assert_eq!(
        rig.svc
            .create(&alice(), props("checksum"))
            .expect_err("ro")
            .class(),
        ErrorClass::Forbidden
    );
    assert_eq!(
        rig.svc
            .create(&alice(), props("os_glance_x"))
            .expect_err("reserved")
            .class(),
        ErrorClass::Forbidden
    );
    let many = NewImageRecord {
        properties: (0..=attributes::MAX_PROPERTIES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect(),
        ..NewImageRecord::default()
    };
    assert!(matches!(
        rig.svc.create(&alice(), many),
        Err(ImageError::QuotaExceeded { .. })
    ));
    let scs = rig
        .svc
        .create(
            &alice(),
            NewImageRecord {
                properties: BTreeMap::from([
                    ("os_distro".to_owned(), "ubuntu".to_owned()),
                    ("replace_frequency".to_owned(), "weekly".to_owned()),
                    ("image_build_date".to_owned(), "2026-10-30".to_owned()),
                ]),
                ..NewImageRecord::default()
            },
        )
        .expect("scs metadata");
    assert_eq!(
        rig.svc.get(scs.id).expect("get").properties["replace_frequency"],
        "weekly"
    );
}

// --- crash recovery --------------------------------------------------------------------------------

/// Plants the state a kill leaves: the row in `saving`.
fn force_status(rig: &Rig, id: Uuid, status: ImageStatus) {
    rig.store
        .write(|tx| {
            tx.execute(
                "UPDATE images SET status = ?2 WHERE id = ?1",
                [id.to_string(), status.as_str().to_owned()],
            )
            .map_err(StoreError::from)
        })
        .expect("plant");
}

#[test]
fn reconciler_requeues_a_killed_upload_and_removes_its_partial_file() {
    let rig = Rig::new();
    let killed_mid_stream = rig.queued(&alice(), "a");
    force_status(&rig, killed_mid_stream.id, ImageStatus::Saving);
    rig.files
        .plant(killed_mid_stream.id, b"half".to_vec(), BlobState::Abandoned);
    let killed_before_file = rig.queued(&alice(), "b");
    force_status(&rig, killed_before_file.id, ImageStatus::Saving);
    let in_flight = rig.queued(&alice(), "c");
    force_status(&rig, in_flight.id, ImageStatus::Saving);
    rig.files
        .plant(in_flight.id, b"streaming".to_vec(), BlobState::InProgress);

    rig.reconcile_all();

    for id in [killed_mid_stream.id, killed_before_file.id] {
        assert_eq!(rig.svc.get(id).expect("get").status, ImageStatus::Queued);
    }
    assert_eq!(rig.files.count(), 1, "only the upload in flight has a file");
    assert_eq!(
        rig.svc.get(in_flight.id).expect("get").status,
        ImageStatus::Saving,
        "an upload in flight is left alone"
    );
    // The requeued image accepts a new upload.
    rig.svc
        .upload(killed_mid_stream.id, &alice(), &mut &b"whole"[..])
        .expect("retry");
}

#[test]
fn reconciler_publishes_committed_uploads_and_removes_orphans() {
    let rig = Rig::new();
    let committed = rig.queued(&alice(), "a");
    rig.svc
        .upload(committed.id, &alice(), &mut &b"k"[..])
        .expect("upload");
    // Killed after the commit, before the rename.
    rig.files
        .plant(committed.id, b"k".to_vec(), BlobState::Abandoned);
    let orphan = Uuid::new_v4();
    rig.files.plant(orphan, b"o".to_vec(), BlobState::Abandoned);
    let queued = rig.queued(&alice(), "q");
    rig.files
        .plant(queued.id, b"q".to_vec(), BlobState::Abandoned);
    let running = Uuid::new_v4();
    rig.files
        .plant(running, b"r".to_vec(), BlobState::InProgress);

    rig.reconcile_all();

    assert_eq!(rig.files.published(committed.id), Some(b"k".to_vec()));
    let left: Vec<_> = rig.files.scan().expect("scan");
    assert!(left.iter().all(|(id, _)| *id != orphan && *id != queued.id));
    assert!(
        left.contains(&(running, BlobState::InProgress)),
        "imports in progress are left alone"
    );
}

// --- one-shot import -------------------------------------------------------------------------------

#[test]
fn import_records_an_active_public_ownerless_image() {
    let rig = Rig::new();
    let bytes = vec![7u8; 4096];
    let image = rig
        .svc
        .import(request("cirros", DiskFormat::Raw), &mut &bytes[..])
        .expect("import");
    assert_eq!(image.status, ImageStatus::Active);
    assert_eq!(image.visibility, Visibility::Public);
    assert_eq!(image.owner, None);
    assert_eq!(image.size_bytes, Some(4096));
    assert_eq!(image.virtual_size, Some(4096));
    assert_eq!(rig.files.published(image.id), Some(bytes));
    assert_eq!(rig.svc.get(image.id).expect("get"), image);
    assert!(rig.svc.show(image.id, &bob()).is_ok(), "public");
}

#[test]
fn refused_import_leaves_no_row_and_no_file() {
    let rig = Rig::new();
    let qcow2 = format::tests::qcow2_header(1 << 30, true, false);
    let err = rig
        .svc
        .import(request("evil", DiskFormat::Qcow2), &mut &qcow2[..])
        .expect_err("backing file");
    assert!(matches!(err, ImageError::Format(FormatError::BackingFile)));
    assert_eq!(err.class(), ErrorClass::BadRequest);
    let mut req = request("x", DiskFormat::Raw);
    req.expected_sha512 = Some("0".repeat(128));
    assert!(matches!(
        rig.svc.import(req, &mut &b"data"[..]),
        Err(ImageError::ChecksumMismatch { .. })
    ));
    let all = rig
        .svc
        .list(
            &Caller::operator(),
            &ImageQuery {
                visibility: Some(VisibilityFilter::All),
                ..ImageQuery::default()
            },
        )
        .expect("list");
    assert!(all.images.is_empty());
    assert_eq!(rig.files.count(), 0);
}

#[test]
fn duplicate_import_is_a_conflict_and_keeps_the_original() {
    let rig = Rig::new();
    let id = Uuid::new_v4();
    let mut req = request("a", DiskFormat::Raw);
    req.id = Some(id);
    rig.svc
        .import(req.clone(), &mut &b"one"[..])
        .expect("first");
    let err = rig
        .svc
        .import(req, &mut &b"two"[..])
        .expect_err("duplicate");
    assert_eq!(err.class(), ErrorClass::Conflict);
    assert_eq!(rig.files.published(id), Some(b"one".to_vec()));
}

#[test]
fn import_without_format_or_with_overlong_name_is_a_bad_request() {
    let rig = Rig::new();
    let err = rig
        .svc
        .import(
            NewImage {
                name: "x".into(),
                ..NewImage::default()
            },
            &mut &b"d"[..],
        )
        .expect_err("format");
    assert_eq!(err.class(), ErrorClass::BadRequest);
    let err = rig
        .svc
        .import(request(&"n".repeat(256), DiskFormat::Raw), &mut &b"d"[..])
        .expect_err("name");
    assert_eq!(err.class(), ErrorClass::BadRequest);
}

#[test]
fn compute_boots_only_active_images() {
    let rig = Rig::new();
    let image = rig.queued(&alice(), "a");
    let err = rig.svc.bootable(image.id).expect_err("queued");
    assert_eq!(err.to_string(), format!("image {} is not active", image.id));
    assert_eq!(err.class(), ErrorClass::BadRequest);
    rig.svc
        .upload(image.id, &alice(), &mut &b"disk"[..])
        .expect("upload");
    let boot = rig.svc.bootable(image.id).expect("active");
    assert_eq!((boot.disk_format, boot.virtual_size), (DiskFormat::Raw, 4));
    assert_eq!(
        rig.svc
            .bootable(Uuid::new_v4())
            .expect_err("missing")
            .class(),
        ErrorClass::NotFound
    );
}
