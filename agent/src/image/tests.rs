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

// --- access and members ----------------------------------------------------------------------------

#[test]
fn invisible_images_are_not_found_and_foreign_writes_are_forbidden() {
    let rig = Rig::new();
    let private = rig.queued(&alice(), "private");
    rig.svc
        .update(
            private.id,
            &alice(),
            &[ImageChange::Replace {
                attribute: "visibility".into(),
                value: ChangeValue::Text("private".into()),
            }],
        )
        .expect("private");
    let community = rig.queued(&alice(), "community");
    rig.svc
        .update(
            community.id,
            &alice(),
            &[ImageChange::Replace {
                attribute: "visibility".into(),
                value: ChangeValue::Text("community".into()),
            }],
        )
        .expect("community");
    let rename = [ImageChange::Replace {
        attribute: "name".into(),
        value: ChangeValue::Text("mine".into()),
    }];

    // Bob cannot see the private image: every call answers NotFound, never Forbidden.
    let not_found = [
        rig.svc.show(private.id, &bob()).map(|_| ()),
        rig.svc.update(private.id, &bob(), &rename).map(|_| ()),
        rig.svc.delete(private.id, &bob()),
        rig.svc
            .upload(private.id, &bob(), &mut &b"x"[..])
            .map(|_| ()),
        rig.svc.open_data(private.id, &bob()).map(|_| ()),
        rig.svc.add_member(private.id, &bob(), "bob").map(|_| ()),
    ];
    for result in not_found {
        assert_eq!(result.expect_err("hidden").class(), ErrorClass::NotFound);
    }
    // Bob sees the community image but may not change it.
    rig.svc
        .show(community.id, &bob())
        .expect("community is visible");
    let forbidden = [
        rig.svc.update(community.id, &bob(), &rename).map(|_| ()),
        rig.svc.delete(community.id, &bob()),
        rig.svc
            .upload(community.id, &bob(), &mut &b"x"[..])
            .map(|_| ()),
    ];
    for result in forbidden {
        assert_eq!(
            result.expect_err("not owner").class(),
            ErrorClass::Forbidden
        );
    }
    assert_eq!(
        rig.svc.get(community.id).expect("get").name.as_deref(),
        Some("community"),
        "refused writes changed nothing"
    );
}

#[test]
fn members_follow_glances_rules() {
    let rig = Rig::new();
    let shared = rig.queued(&alice(), "shared");
    let carol = Caller::project("carol");

    // Before an offer Bob does not see the shared image.
    assert_eq!(
        rig.svc
            .show(shared.id, &bob())
            .expect_err("no member")
            .class(),
        ErrorClass::NotFound
    );
    let offer = rig.svc.add_member(shared.id, &alice(), "bob").expect("add");
    assert_eq!(offer.status, MemberStatus::Pending);
    assert_eq!(
        rig.svc
            .add_member(shared.id, &alice(), "bob")
            .expect_err("dup")
            .class(),
        ErrorClass::Conflict
    );
    rig.svc
        .add_member(shared.id, &alice(), "carol")
        .expect("carol");
    // A pending member sees the image but may not add members or change it.
    rig.svc
        .show(shared.id, &bob())
        .expect("pending member sees it");
    assert_eq!(
        rig.svc
            .add_member(shared.id, &bob(), "dave")
            .expect_err("not owner")
            .class(),
        ErrorClass::Forbidden
    );
    assert_eq!(
        rig.svc
            .delete_member(shared.id, &bob(), "carol")
            .expect_err("not owner")
            .class(),
        ErrorClass::Forbidden
    );
    // The owner lists every member; a member only itself.
    assert_eq!(
        rig.svc
            .list_members(shared.id, &alice())
            .expect("owner")
            .len(),
        2
    );
    let own = rig.svc.list_members(shared.id, &bob()).expect("member");
    assert_eq!(
        own.iter().map(|m| m.member.as_str()).collect::<Vec<_>>(),
        ["bob"]
    );
    assert_eq!(
        rig.svc
            .get_member(shared.id, &bob(), "carol")
            .expect_err("other")
            .class(),
        ErrorClass::NotFound
    );
    // Only the member decides.
    assert_eq!(
        rig.svc
            .update_member_status(shared.id, &alice(), "bob", MemberStatus::Accepted)
            .expect_err("owner")
            .class(),
        ErrorClass::Forbidden
    );
    assert_eq!(
        rig.svc
            .update_member_status(shared.id, &carol, "bob", MemberStatus::Accepted)
            .expect_err("another member")
            .class(),
        ErrorClass::Forbidden
    );
    rig.tick();
    let accepted = rig
        .svc
        .update_member_status(shared.id, &bob(), "bob", MemberStatus::Accepted)
        .expect("accept");
    assert_eq!(accepted.status, MemberStatus::Accepted);
    assert!(accepted.updated_at > accepted.created_at);
    assert_eq!(
        rig.svc.get_member(shared.id, &alice(), "bob").expect("get"),
        accepted
    );
    // The owner withdraws the offer; Bob no longer sees the image.
    rig.svc
        .delete_member(shared.id, &alice(), "bob")
        .expect("remove");
    assert_eq!(
        rig.svc.show(shared.id, &bob()).expect_err("gone").class(),
        ErrorClass::NotFound
    );
    assert_eq!(
        rig.svc
            .delete_member(shared.id, &alice(), "bob")
            .expect_err("twice")
            .class(),
        ErrorClass::NotFound
    );
}

#[test]
fn only_shared_images_have_members() {
    let rig = Rig::new();
    let image = rig.queued(&alice(), "a");
    rig.svc.add_member(image.id, &alice(), "bob").expect("add");
    rig.svc
        .update(
            image.id,
            &alice(),
            &[ImageChange::Replace {
                attribute: "visibility".into(),
                value: ChangeValue::Text("private".into()),
            }],
        )
        .expect("private");
    let err = rig
        .svc
        .add_member(image.id, &alice(), "carol")
        .expect_err("private");
    assert_eq!(err.to_string(), "Only shared images have members.");
    assert_eq!(err.class(), ErrorClass::Forbidden);
    // The old membership no longer grants access.
    assert_eq!(
        rig.svc.show(image.id, &bob()).expect_err("private").class(),
        ErrorClass::NotFound
    );
}

// --- listing ---------------------------------------------------------------------------------------

fn names(page: &ImagePage) -> Vec<&str> {
    page.images
        .iter()
        .map(|i| i.name.as_deref().unwrap_or(""))
        .collect()
}

fn set_visibility(rig: &Rig, owner: &Caller, id: Uuid, visibility: &str) {
    rig.svc
        .update(
            id,
            owner,
            &[ImageChange::Replace {
                attribute: "visibility".into(),
                value: ChangeValue::Text(visibility.into()),
            }],
        )
        .expect("visibility");
}

#[test]
fn default_list_is_public_own_and_accepted_shared() {
    let rig = Rig::new();
    rig.svc
        .import(request("public", DiskFormat::Raw), &mut &b"p"[..])
        .expect("import");
    let bobs_private = rig.queued(&bob(), "bob-private");
    set_visibility(&rig, &bob(), bobs_private.id, "private");
    let bobs_community = rig.queued(&bob(), "bob-community");
    set_visibility(&rig, &bob(), bobs_community.id, "community");
    let accepted = rig.queued(&bob(), "shared-accepted");
    rig.svc
        .add_member(accepted.id, &bob(), "alice")
        .expect("offer");
    rig.svc
        .update_member_status(accepted.id, &alice(), "alice", MemberStatus::Accepted)
        .expect("accept");
    let pending = rig.queued(&bob(), "shared-pending");
    rig.svc
        .add_member(pending.id, &bob(), "alice")
        .expect("offer");
    let own = rig.queued(&alice(), "alice-own");
    set_visibility(&rig, &alice(), own.id, "community");

    let list = |query: ImageQuery| {
        let mut page = rig.svc.list(&alice(), &query).expect("list");
        page.images.sort_by(|a, b| a.name.cmp(&b.name));
        page
    };
    assert_eq!(
        names(&list(ImageQuery::default())),
        ["alice-own", "public", "shared-accepted"]
    );
    assert_eq!(
        names(&list(ImageQuery {
            visibility: Some(VisibilityFilter::Only(Visibility::Community)),
            ..ImageQuery::default()
        })),
        ["alice-own", "bob-community"]
    );
    assert_eq!(
        names(&list(ImageQuery {
            visibility: Some(VisibilityFilter::Only(Visibility::Shared)),
            member_status: Some(MemberStatusFilter::Only(MemberStatus::Pending)),
            ..ImageQuery::default()
        })),
        ["shared-pending"]
    );
    assert_eq!(
        names(&list(ImageQuery {
            member_status: Some(MemberStatusFilter::All),
            ..ImageQuery::default()
        })),
        ["alice-own", "public", "shared-accepted", "shared-pending"]
    );
    assert_eq!(
        names(&list(ImageQuery {
            visibility: Some(VisibilityFilter::All),
            ..ImageQuery::default()
        })),
        ["alice-own", "bob-community", "public", "shared-accepted"]
    );
    // Admins see everything but community images by default (the operator owns none).
    let mut all = rig
        .svc
        .list(&Caller::operator(), &ImageQuery::default())
        .expect("admin");
    all.images.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        names(&all),
        ["bob-private", "public", "shared-accepted", "shared-pending"]
    );
}

#[test]
fn list_filters_on_attributes_tags_and_properties() {
    let rig = Rig::new();
    let a = rig.queued(&alice(), "a");
    let b = rig.queued(&alice(), "b");
    rig.svc
        .update(
            a.id,
            &alice(),
            &[
                ImageChange::Replace {
                    attribute: "tags".into(),
                    value: ChangeValue::List(vec!["scs".into(), "lts".into()]),
                },
                ImageChange::Add {
                    attribute: "os_distro".into(),
                    value: ChangeValue::Text("ubuntu".into()),
                },
            ],
        )
        .expect("tag");
    rig.svc
        .upload(b.id, &alice(), &mut &b"data"[..])
        .expect("upload");
    let query = |q: ImageQuery| names(&rig.svc.list(&alice(), &q).expect("list")).join(",");
    assert_eq!(
        query(ImageQuery {
            name: Some("a".into()),
            ..ImageQuery::default()
        }),
        "a"
    );
    assert_eq!(
        query(ImageQuery {
            status: Some("active".into()),
            ..ImageQuery::default()
        }),
        "b"
    );
    assert_eq!(
        query(ImageQuery {
            owner: Some("bob".into()),
            ..ImageQuery::default()
        }),
        ""
    );
    assert_eq!(
        query(ImageQuery {
            disk_format: Some("raw".into()),
            ..ImageQuery::default()
        }),
        "b,a"
    );
    assert_eq!(
        query(ImageQuery {
            disk_format: Some("qcow2".into()),
            ..ImageQuery::default()
        }),
        ""
    );
    assert_eq!(
        query(ImageQuery {
            container_format: Some("bare".into()),
            ..ImageQuery::default()
        }),
        "b,a"
    );
    assert_eq!(
        query(ImageQuery {
            tags: vec!["scs".into()],
            ..ImageQuery::default()
        }),
        "a"
    );
    assert_eq!(
        query(ImageQuery {
            tags: vec!["scs".into(), "edge".into()],
            ..ImageQuery::default()
        }),
        ""
    );
    assert_eq!(
        query(ImageQuery {
            properties: BTreeMap::from([("os_distro".to_owned(), "ubuntu".to_owned())]),
            ..ImageQuery::default()
        }),
        "a"
    );
    assert_eq!(
        query(ImageQuery {
            properties: BTreeMap::from([("os_distro".to_owned(), "debian".to_owned())]),
            ..ImageQuery::default()
        }),
        ""
    );
}

#[test]
fn list_sorts_and_pages_with_markers() {
    let rig = Rig::new();
    for name in ["c", "a", "e", "b", "d"] {
        rig.queued(&alice(), name);
    }
    let page = |sort: Vec<(SortKey, SortDir)>, limit, marker| {
        rig.svc
            .list(
                &alice(),
                &ImageQuery {
                    sort,
                    limit,
                    marker,
                    ..ImageQuery::default()
                },
            )
            .expect("list")
    };
    // Default: newest first.
    assert_eq!(names(&page(vec![], None, None)), ["d", "b", "e", "a", "c"]);
    let by_name = vec![(SortKey::Name, SortDir::Asc)];
    assert_eq!(
        names(&page(by_name.clone(), None, None)),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        names(&page(vec![(SortKey::Name, SortDir::Desc)], None, None)),
        ["e", "d", "c", "b", "a"]
    );
    // Pages of two follow each other without gaps or repeats.
    let mut seen = Vec::new();
    let mut marker = None;
    loop {
        let p = page(by_name.clone(), Some(2), marker);
        seen.extend(names(&p).into_iter().map(str::to_owned));
        match p.next_marker {
            Some(next) => marker = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    // An unknown marker, or one the caller cannot see, is a bad request.
    let err = rig
        .svc
        .list(
            &alice(),
            &ImageQuery {
                marker: Some(Uuid::new_v4()),
                ..ImageQuery::default()
            },
        )
        .expect_err("unknown marker");
    assert_eq!(err.class(), ErrorClass::BadRequest);
    let hidden = rig.queued(&bob(), "bobs");
    let err = rig
        .svc
        .list(
            &alice(),
            &ImageQuery {
                marker: Some(hidden.id),
                ..ImageQuery::default()
            },
        )
        .expect_err("hidden marker");
    assert!(matches!(err, ImageError::BadMarker(_)));
    assert!(SortKey::parse("checksum").is_err());
    assert!(SortDir::parse("up").is_err());
    assert!(VisibilityFilter::parse("everyone").is_err());
}

// --- update and delete -----------------------------------------------------------------------------

#[test]
fn one_bad_operation_changes_nothing_and_a_good_update_bumps_updated_at() {
    let rig = Rig::new();
    let image = rig.queued(&alice(), "a");
    rig.tick();
    let err = rig
        .svc
        .update(
            image.id,
            &alice(),
            &[
                ImageChange::Replace {
                    attribute: "name".into(),
                    value: ChangeValue::Text("renamed".into()),
                },
                ImageChange::Add {
                    attribute: "os_distro".into(),
                    value: ChangeValue::Text("debian".into()),
                },
                ImageChange::Remove {
                    attribute: "not_there".into(),
                },
            ],
        )
        .expect_err("missing property");
    assert_eq!(err.class(), ErrorClass::Conflict);
    assert_eq!(
        rig.svc.get(image.id).expect("get"),
        image,
        "nothing changed"
    );
    let updated = rig
        .svc
        .update(
            image.id,
            &alice(),
            &[ImageChange::Replace {
                attribute: "name".into(),
                value: ChangeValue::Text("renamed".into()),
            }],
        )
        .expect("update");
    assert_eq!(updated.name.as_deref(), Some("renamed"));
    assert!(updated.updated_at > image.updated_at);
    assert_eq!(updated.created_at, image.created_at);
    assert_eq!(rig.svc.get(image.id).expect("get"), updated);
}

#[test]
fn protected_images_cannot_be_deleted_until_unprotected() {
    let rig = Rig::new();
    let image = rig.queued(&alice(), "a");
    let protect = |flag| {
        rig.svc
            .update(
                image.id,
                &alice(),
                &[ImageChange::Replace {
                    attribute: "protected".into(),
                    value: ChangeValue::Bool(flag),
                }],
            )
            .expect("protect")
    };
    protect(true);
    rig.svc
        .upload(image.id, &alice(), &mut &b"x"[..])
        .expect("upload");
    let err = rig.svc.delete(image.id, &alice()).expect_err("protected");
    assert_eq!(err.class(), ErrorClass::Forbidden);
    assert_eq!(
        rig.svc
            .delete(image.id, &Caller::operator())
            .expect_err("even admins")
            .class(),
        ErrorClass::Forbidden
    );
    assert!(rig.files.published(image.id).is_some());
    protect(false);
    rig.svc.delete(image.id, &alice()).expect("delete");
    assert_eq!(rig.files.count(), 0);
    assert_eq!(rig.svc.find(image.id).expect("find"), None);
}

#[test]
fn deleting_a_saving_image_makes_its_upload_fail_cleanly() {
    let rig = Rig::new();
    let image = rig.queued(&alice(), "a");
    // An upload whose reader deletes the image half-way, as a concurrent DELETE would.
    struct DeletingReader<'a> {
        rig: &'a Rig,
        id: Uuid,
        done: bool,
    }
    impl Read for DeletingReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.done {
                return Ok(0);
            }
            self.done = true;
            self.rig
                .svc
                .delete(self.id, &alice())
                .expect("delete while saving");
            buf[0] = 1;
            Ok(1)
        }
    }
    let err = rig
        .svc
        .upload(
            image.id,
            &alice(),
            &mut DeletingReader {
                rig: &rig,
                id: image.id,
                done: false,
            },
        )
        .expect_err("deleted meanwhile");
    assert!(matches!(err, ImageError::UploadInterrupted(_)));
    assert_eq!(rig.files.count(), 0);
    assert_eq!(rig.svc.find(image.id).expect("find"), None);
}

// --- property test: updates are all-or-nothing and never touch read-only fields ---------------------

mod all_or_nothing {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    fn attribute() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            // read-only, reserved, owner (read-only for non-admins)
            "id",
            "status",
            "checksum",
            "size",
            "virtual_size",
            "os_hash_value",
            "created_at",
            "updated_at",
            "locations",
            "owner",
            "location",
            "deleted",
            "os_glance_x",
            // core
            "name",
            "visibility",
            "protected",
            "min_disk",
            "min_ram",
            "disk_format",
            "container_format",
            "tags",
            // properties, one of which exists
            "os_distro",
            "os_version",
            "hw_rng_model",
        ])
        .prop_map(str::to_owned)
    }

    fn value() -> impl Strategy<Value = ChangeValue> {
        prop_oneof![
            Just(ChangeValue::Null),
            any::<bool>().prop_map(ChangeValue::Bool),
            (0u64..4).prop_map(ChangeValue::Int),
            prop::sample::select(vec![
                "x",
                "raw",
                "qcow2",
                "bare",
                "private",
                "community",
                "public"
            ])
            .prop_map(|s| ChangeValue::Text(s.to_owned())),
            prop::collection::vec("[a-c]{1,2}", 0..3).prop_map(ChangeValue::List),
        ]
    }

    fn change() -> impl Strategy<Value = ImageChange> {
        (0u8..3, attribute(), value()).prop_map(|(op, attribute, value)| match op {
            0 => ImageChange::Add { attribute, value },
            1 => ImageChange::Replace { attribute, value },
            _ => ImageChange::Remove { attribute },
        })
    }

    #[test]
    fn random_updates_apply_entirely_or_not_at_all() {
        let rig = Rig::new();
        let mut runner = TestRunner::new(Config {
            cases: 200,
            ..Config::default()
        });
        runner
            .run(&prop::collection::vec(change(), 1..6), |changes| {
                let before = rig
                    .svc
                    .create(
                        &alice(),
                        NewImageRecord {
                            name: Some("n".into()),
                            properties: BTreeMap::from([(
                                "os_distro".to_owned(),
                                "debian".to_owned(),
                            )]),
                            ..NewImageRecord::default()
                        },
                    )
                    .expect("create");
                let result = rig.svc.update(before.id, &alice(), &changes);
                let after = rig.svc.get(before.id).expect("get");
                match result {
                    Err(_) => {
                        prop_assert_eq!(&after, &before, "a refused update changed the image");
                    }
                    Ok(updated) => {
                        prop_assert_eq!(&after, &updated);
                        // Read-only fields never move for a non-admin.
                        prop_assert_eq!(after.id, before.id);
                        prop_assert_eq!(after.status, before.status);
                        prop_assert_eq!(after.size_bytes, before.size_bytes);
                        prop_assert_eq!(after.virtual_size, before.virtual_size);
                        prop_assert_eq!(&after.checksum_md5, &before.checksum_md5);
                        prop_assert_eq!(&after.hash_sha512, &before.hash_sha512);
                        prop_assert_eq!(&after.owner, &before.owner);
                        prop_assert_eq!(after.created_at, before.created_at);
                        // Applying the operations one by one gives the same image.
                        let mut stepwise = before.clone();
                        for change in &changes {
                            stepwise = patch::apply_changes(
                                &stepwise,
                                &alice(),
                                std::slice::from_ref(change),
                            )
                            .expect("each operation of an accepted update applies");
                        }
                        stepwise.updated_at = after.updated_at;
                        prop_assert_eq!(&stepwise, &after);
                    }
                }
                Ok(())
            })
            .expect("property");
    }
}
