//! Behaviour of the compute service and reconciler over in-memory fakes (no libvirt, no root).
//! The same behaviours are proven against real libvirt/QEMU in `tests/`.

use super::config_drive::ConfigDrive;
use super::fake::FakeHypervisor;
use super::files::{FakeServerFiles, ServerFiles};
use super::host::{FixedHostInventory, HostResources};
use super::hypervisor::{DomainPower, ShutoffReason, VirtType};
use super::keypair::NewKeypair;
use super::reconciler::{BUILD_ATTEMPTS, ServerReconciler, ServerReconcilerSettings};
use super::server::PowerState;
use super::*;
use crate::error_class::{Classify, ErrorClass};
use crate::image::files::FakeImageFiles;
use crate::image::format::DiskFormat;
use crate::image::{ImageService, NewImage};
use crate::network::chassis::RecordingVifs;
use crate::network::service::{NewNetwork, NewPort, NewSubnet};
use crate::network::{NetworkService, NetworkSettings};
use crate::reconcile::{Next, NoLoops, Reconciler};
use crate::store::Store;
use crate::system::clock::ManualClock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const NODE: &str = "node-a";
const GIB: u64 = 1024 * 1024 * 1024;

struct Rig {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    clock: Arc<ManualClock>,
    hv: Arc<FakeHypervisor>,
    files: FakeServerFiles,
    image_files: FakeImageFiles,
    images: Arc<ImageService>,
    compute: ComputeService,
    reconciler: ServerReconciler,
    network: NetworkService,
    vifs: Arc<RecordingVifs>,
    image_id: Uuid,
}

impl Rig {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("agent.db")).expect("store"));
        let clock = Arc::new(ManualClock::new(
            "2026-11-21T10:00:00Z".parse().expect("ts"),
        ));
        let hv = Arc::new(FakeHypervisor::new(NODE));
        let vifs = Arc::new(RecordingVifs::default());
        let files = FakeServerFiles::default();
        let image_files = FakeImageFiles::default();
        let images = Arc::new(ImageService::new(
            store.clone(),
            Arc::new(image_files.clone()),
            clock.clone(),
        ));
        let host = FixedHostInventory(HostResources {
            cpus: 4,
            memory_mib: 8192,
        });
        let compute = ComputeService::new(
            store.clone(),
            images.clone(),
            Arc::new(host),
            clock.clone(),
            Arc::new(NoLoops),
            ComputeSettings {
                cpu_allocation_ratio: 16.0,
                ram_allocation_ratio: 1.0,
                reserved_host_memory_mb: 1024,
                network_enabled: true,
                availability_zone: "nova".into(),
            },
            Arc::new(files.clone()),
        );
        let reconciler = ServerReconciler::new(
            store.clone(),
            images.clone(),
            hv.clone(),
            Arc::new(files.clone()),
            vifs.clone(),
            clock.clone(),
            ServerReconcilerSettings {
                node_id: NODE.into(),
                virt_type: VirtType::Qemu,
                machine: "q35".into(),
                integration_bridge: "br-int".into(),
                shutdown_timeout: Duration::from_secs(30),
            },
        );
        let image = images
            .import(
                NewImage {
                    name: "tiny".into(),
                    disk_format: Some(DiskFormat::Raw),
                    min_ram_mb: 64,
                    ..NewImage::default()
                },
                &mut &vec![0u8; 1 << 20][..],
            )
            .expect("image");
        compute
            .create_flavor(NewFlavor {
                id: Some("tiny".into()),
                name: "tiny".into(),
                description: None,
                vcpus: 1,
                ram_mb: 128,
                disk_gb: 1,
                ephemeral_gb: 0,
                swap_mb: 0,
                is_public: true,
                extra_specs: BTreeMap::new(),
            })
            .expect("flavor");
        let network = NetworkService::new(
            store.clone(),
            clock.clone(),
            Arc::new(NoLoops),
            NetworkSettings::default(),
        );
        Self {
            network,
            vifs,
            _dir: dir,
            store,
            clock,
            hv,
            files,
            image_files,
            images,
            compute,
            reconciler,
            image_id: image.id,
        }
    }

    fn request(&self, name: &str) -> NewServer {
        NewServer {
            name: name.into(),
            project_id: "demo".into(),
            user_id: "alice".into(),
            flavor_id: "tiny".into(),
            image_id: self.image_id,
            user_data: Some(b"#cloud-config\nhostname: x\n".to_vec()),
            nics: 1,
            ..NewServer::default()
        }
    }

    /// Reconciles one key until it reports Done, letting time pass for requeues.
    fn settle(&self, id: Uuid) {
        for _ in 0..200 {
            match self
                .reconciler
                .reconcile(&id.to_string())
                .expect("reconcile")
            {
                Next::Done => return,
                Next::After(d) => self
                    .clock
                    .advance(jiff::SignedDuration::try_from(d).expect("duration")),
            }
        }
        panic!("server {id} never settled");
    }

    /// A full pass over every key, as the first pass after a restart does.
    fn resync(&self) {
        for key in self.reconciler.all_keys().expect("keys") {
            self.settle(Uuid::parse_str(&key).expect("uuid"));
        }
    }

    fn server(&self, id: Uuid) -> Server {
        self.compute.server(id).expect("server")
    }

    fn row_count(&self) -> i64 {
        self.store
            .read(|tx| {
                Ok::<_, crate::store::StoreError>(tx.query_row(
                    "SELECT count(*) FROM servers",
                    [],
                    |r| r.get(0),
                )?)
            })
            .expect("count")
    }

    fn nothing_created(&self) {
        assert_eq!(self.row_count(), 0);
        assert_eq!(self.hv.count(), 0);
        assert!(self.files.list().expect("list").is_empty());
    }
}

#[test]
fn create_builds_disk_config_drive_and_a_running_domain() {
    let rig = Rig::new();
    let server = rig
        .compute
        .create_server(rig.request("web-1"))
        .expect("create");
    assert_eq!(server.status, ServerStatus::Build);
    assert_eq!(server.nics.len(), 1);
    assert!(server.nics[0].mac.starts_with("fa:16:3e:"));
    rig.settle(server.id);

    let server = rig.server(server.id);
    assert_eq!(server.status, ServerStatus::Active);
    assert_eq!(server.power_state, PowerState::Running);
    assert_eq!(server.observed_generation, server.generation);
    assert!(server.launched_at.is_some());
    let domain = rig.hv.get(server.id).expect("domain");
    assert_eq!(domain.power, DomainPower::Running);
    assert_eq!(domain.spec.memory_mib, 128);
    assert_eq!(domain.spec.nics[0].mac, server.nics[0].mac);
    let dir = rig.files.dir(server.id).expect("files");
    assert_eq!(dir.root_disk, Some((rig.images.path(rig.image_id), GIB)));
    let drive = dir.config_drive.expect("config drive");
    assert_eq!(
        drive.files()["openstack/latest/user_data"],
        b"#cloud-config\nhostname: x\n"
    );
}

#[test]
fn config_drive_is_a_vfat_volume_labelled_config_2_with_nova_layout() {
    let rig = Rig::new();
    let mut request = rig.request("Web Server 1");
    request.metadata = BTreeMap::from([("role".to_owned(), "db".to_owned())]);
    let key = rig
        .compute
        .create_keypair(&NewKeypair {
            name: "ops".into(),
            user_id: "alice".into(),
            public_key: None,
        })
        .expect("keypair");
    request.key_name = Some("ops".into());
    let server = rig.compute.create_server(request).expect("create");
    // Deleting the keypair later does not change what the server booted with.
    rig.compute
        .delete_keypair("alice", "ops")
        .expect("delete keypair");
    rig.settle(server.id);
    let drive = rig
        .files
        .dir(server.id)
        .and_then(|d| d.config_drive)
        .expect("drive");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config-drive.img");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("file");
    drive.write_sparse(&mut file).expect("write");
    drop(file);
    let mut volume = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("reopen");
    let (label, files) = ConfigDrive::read_vfat(&mut volume).expect("read back");
    assert_eq!(label, "config-2");
    let meta: serde_json::Value =
        serde_json::from_slice(&files["openstack/latest/meta_data.json"]).expect("json");
    assert_eq!(meta["uuid"], server.id.to_string());
    assert_eq!(meta["name"], "Web Server 1");
    assert_eq!(meta["hostname"], "web-server-1");
    assert_eq!(meta["meta"]["role"], "db");
    assert_eq!(meta["public_keys"]["ops"], key.keypair.public_key);
    assert_eq!(meta["keys"][0]["data"], key.keypair.public_key);
    assert_eq!(meta["availability_zone"], "nova");
    let network: serde_json::Value =
        serde_json::from_slice(&files["openstack/latest/network_data.json"]).expect("json");
    assert_eq!(
        network["links"][0]["ethernet_mac_address"],
        server.nics[0].mac
    );
    assert_eq!(
        files["openstack/latest/user_data"],
        b"#cloud-config\nhostname: x\n"
    );
}

#[test]
fn bad_requests_are_refused_and_create_nothing() {
    let rig = Rig::new();
    rig.compute
        .create_keypair(&NewKeypair {
            name: "bobs-key".into(),
            user_id: "bob".into(),
            public_key: None,
        })
        .expect("bob's keypair");
    let cases: Vec<(&str, NewServer, ErrorClass)> = vec![
        (
            "unknown flavor",
            NewServer {
                flavor_id: "nope".into(),
                ..rig.request("a")
            },
            ErrorClass::BadRequest,
        ),
        (
            "unknown image",
            NewServer {
                image_id: Uuid::new_v4(),
                ..rig.request("a")
            },
            ErrorClass::BadRequest,
        ),
        ("empty name", rig.request(""), ErrorClass::BadRequest),
        (
            "another user's keypair",
            NewServer {
                key_name: Some("bobs-key".into()),
                ..rig.request("a")
            },
            ErrorClass::BadRequest,
        ),
        (
            "unknown availability zone",
            NewServer {
                availability_zone: Some("elsewhere".into()),
                ..rig.request("a")
            },
            ErrorClass::BadRequest,
        ),
        ("padded name", rig.request(" a"), ErrorClass::BadRequest),
        (
            "too many nics",
            NewServer {
                nics: 100,
                ..rig.request("a")
            },
            ErrorClass::BadRequest,
        ),
    ];
    for (what, request, class) in cases {
        let err = rig.compute.create_server(request).expect_err(what);
        assert_eq!(err.class(), class, "{what}: {err}");
    }
    rig.nothing_created();
}

#[test]
fn a_queued_image_without_data_is_not_bootable() {
    let rig = Rig::new();
    let queued = rig
        .images
        .create(
            &crate::image::Caller::project("demo"),
            crate::image::NewImageRecord {
                disk_format: Some("raw".into()),
                container_format: Some("bare".into()),
                ..crate::image::NewImageRecord::default()
            },
        )
        .expect("queued image");
    let err = rig
        .compute
        .create_server(NewServer {
            image_id: queued.id,
            ..rig.request("a")
        })
        .expect_err("queued");
    assert_eq!(err.class(), ErrorClass::BadRequest);
    assert_eq!(
        err.to_string(),
        format!("image {} is not active", queued.id)
    );
    rig.nothing_created();
}

#[test]
fn flavor_too_small_for_the_image_is_refused() {
    let rig = Rig::new();
    let big = rig
        .images
        .import(
            NewImage {
                name: "big".into(),
                disk_format: Some(DiskFormat::Raw),
                min_disk_gb: 5,
                ..NewImage::default()
            },
            &mut &b"x"[..],
        )
        .expect("image");
    let err = rig
        .compute
        .create_server(NewServer {
            image_id: big.id,
            ..rig.request("a")
        })
        .expect_err("min_disk");
    assert!(
        matches!(err, ComputeError::FlavorImageMismatch(ref m) if m.contains("disk is too small")),
        "{err}"
    );
    let hungry = rig
        .images
        .import(
            NewImage {
                name: "hungry".into(),
                disk_format: Some(DiskFormat::Raw),
                min_ram_mb: 4096,
                ..NewImage::default()
            },
            &mut &b"x"[..],
        )
        .expect("image");
    let err = rig
        .compute
        .create_server(NewServer {
            image_id: hungry.id,
            ..rig.request("a")
        })
        .expect_err("min_ram");
    assert!(
        matches!(err, ComputeError::FlavorImageMismatch(ref m) if m.contains("memory is too small")),
        "{err}"
    );
    rig.nothing_created();
}

#[test]
fn impossible_flavors_are_refused_with_the_field_named() {
    let rig = Rig::new();
    let base = NewFlavor {
        id: None,
        name: "x".into(),
        description: None,
        vcpus: 1,
        ram_mb: 64,
        disk_gb: 1,
        ephemeral_gb: 0,
        swap_mb: 0,
        is_public: true,
        extra_specs: BTreeMap::new(),
    };
    for (bad, field) in [
        (
            NewFlavor {
                vcpus: 0,
                ..base.clone()
            },
            "vcpus",
        ),
        (
            NewFlavor {
                ram_mb: 0,
                ..base.clone()
            },
            "ram",
        ),
        (
            NewFlavor {
                disk_gb: u64::MAX,
                ..base.clone()
            },
            "disk",
        ),
        (
            NewFlavor {
                name: String::new(),
                ..base.clone()
            },
            "flavor name",
        ),
        (
            NewFlavor {
                id: Some("a/b".into()),
                ..base.clone()
            },
            "flavor id",
        ),
    ] {
        match rig.compute.create_flavor(bad) {
            Err(ComputeError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(
        rig.compute.flavors().expect("list").len(),
        1,
        "only the rig's flavor exists"
    );
}

#[test]
fn duplicate_ids_and_names_are_conflicts() {
    let rig = Rig::new();
    let id = Uuid::new_v4();
    rig.compute
        .create_server(NewServer {
            id: Some(id),
            ..rig.request("a")
        })
        .expect("first");
    let err = rig
        .compute
        .create_server(NewServer {
            id: Some(id),
            ..rig.request("b")
        })
        .expect_err("dup");
    assert_eq!(err.class(), ErrorClass::Conflict);
    assert_eq!(rig.server(id).name, "a");
    assert_eq!(rig.row_count(), 1);
    let flavor = rig.compute.flavor("tiny").expect("flavor");
    let dup = NewFlavor {
        id: Some("tiny".into()),
        name: "other".into(),
        description: None,
        vcpus: 1,
        ram_mb: 1,
        disk_gb: 0,
        ephemeral_gb: 0,
        swap_mb: 0,
        is_public: true,
        extra_specs: BTreeMap::new(),
    };
    assert_eq!(
        rig.compute
            .create_flavor(dup.clone())
            .expect_err("dup id")
            .class(),
        ErrorClass::Conflict
    );
    let dup_name = NewFlavor {
        id: None,
        name: flavor.name,
        ..dup
    };
    assert_eq!(
        rig.compute
            .create_flavor(dup_name)
            .expect_err("dup name")
            .class(),
        ErrorClass::Conflict
    );
}

#[test]
fn servers_beyond_host_capacity_are_refused() {
    let rig = Rig::new();
    // 8192 MiB host - 1024 reserved = 7168 MiB; flavor is 128 MiB: 56 fit (vCPUs: 4 x 16 = 64).
    for i in 0..56 {
        rig.compute
            .create_server(rig.request(&format!("s{i}")))
            .expect("fits");
    }
    let err = rig
        .compute
        .create_server(rig.request("one-too-many"))
        .expect_err("full");
    assert!(
        matches!(err, ComputeError::NoCapacity(ref m) if m.contains("MiB RAM")),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Conflict);
    assert_eq!(rig.row_count(), 56);
}

#[test]
fn graceful_stop_then_start() {
    let rig = Rig::new();
    let id = rig
        .compute
        .create_server(rig.request("a"))
        .expect("create")
        .id;
    rig.settle(id);
    rig.compute.stop_server(id).expect("stop");
    rig.settle(id);
    assert_eq!(rig.server(id).status, ServerStatus::Shutoff);
    assert_eq!(
        rig.hv.get(id).expect("domain").power,
        DomainPower::Shutoff(ShutoffReason::GuestShutdown)
    );
    assert!(rig.hv.calls().iter().any(|c| c.starts_with("shutdown:")));
    assert!(
        !rig.hv.calls().iter().any(|c| c.starts_with("power_off:")),
        "the guest answered ACPI; no hard power-off"
    );

    assert_eq!(
        rig.compute
            .stop_server(id)
            .expect_err("already stopped")
            .class(),
        ErrorClass::Conflict
    );
    rig.compute.start_server(id).expect("start");
    rig.settle(id);
    assert_eq!(rig.server(id).status, ServerStatus::Active);
    assert_eq!(rig.hv.get(id).expect("domain").starts, 2);
    assert_eq!(
        rig.compute
            .start_server(id)
            .expect_err("already running")
            .class(),
        ErrorClass::Conflict
    );
}

#[test]
fn stop_powers_off_a_guest_that_ignores_acpi_after_the_timeout() {
    let rig = Rig::new();
    let id = rig
        .compute
        .create_server(rig.request("a"))
        .expect("create")
        .id;
    rig.settle(id);
    rig.hv.set_guests_ignore_acpi(true);
    rig.compute.stop_server(id).expect("stop");
    let next = rig
        .reconciler
        .reconcile(&id.to_string())
        .expect("first step");
    assert!(matches!(next, Next::After(_)), "waits for the guest");
    assert_eq!(rig.server(id).task_state(), Some("powering-off"));
    rig.clock.advance(jiff::SignedDuration::from_secs(31));
    assert_eq!(
        rig.reconciler.reconcile(&id.to_string()).expect("deadline"),
        Next::Done
    );
    assert_eq!(rig.server(id).status, ServerStatus::Shutoff);
    assert_eq!(
        rig.hv.get(id).expect("domain").power,
        DomainPower::Shutoff(ShutoffReason::Destroyed)
    );
}

#[test]
fn soft_and_hard_reboot_restart_the_guest() {
    let rig = Rig::new();
    let id = rig
        .compute
        .create_server(rig.request("a"))
        .expect("create")
        .id;
    rig.settle(id);
    rig.compute
        .reboot_server(id, RebootKind::Soft)
        .expect("soft");
    assert_eq!(rig.server(id).task_state(), Some("reboot_started"));
    rig.settle(id);
    assert_eq!(rig.server(id).status, ServerStatus::Active);
    assert_eq!(rig.hv.get(id).expect("domain").starts, 2);
    rig.compute
        .reboot_server(id, RebootKind::Hard)
        .expect("hard");
    rig.settle(id);
    assert_eq!(rig.hv.get(id).expect("domain").starts, 3);
    assert_eq!(rig.server(id).pending_reboot, None);
    // Running the reconciler again does not reboot again.
    rig.settle(id);
    assert_eq!(rig.hv.get(id).expect("domain").starts, 3);
}

#[test]
fn a_guest_that_powers_itself_off_stays_off() {
    let rig = Rig::new();
    let id = rig
        .compute
        .create_server(rig.request("a"))
        .expect("create")
        .id;
    rig.settle(id);
    rig.hv.guest_poweroff(id);
    assert_eq!(
        rig.reconciler.observe().expect("observe"),
        vec![id.to_string()]
    );
    rig.settle(id);
    let server = rig.server(id);
    assert_eq!(
        (server.status, server.power_intent),
        (ServerStatus::Shutoff, PowerIntent::Stopped)
    );
    rig.settle(id);
    assert_eq!(rig.hv.get(id).expect("domain").starts, 1, "not restarted");
}

#[test]
fn a_crashed_guest_is_restarted() {
    let rig = Rig::new();
    let id = rig
        .compute
        .create_server(rig.request("a"))
        .expect("create")
        .id;
    rig.settle(id);
    rig.hv.crash(id);
    rig.settle(id);
    assert_eq!(rig.server(id).status, ServerStatus::Active);
    assert_eq!(rig.hv.get(id).expect("domain").starts, 2);
}

#[test]
fn a_vanished_domain_is_recreated_but_a_lost_disk_is_an_error() {
    let rig = Rig::new();
    let id = rig
        .compute
        .create_server(rig.request("a"))
        .expect("create")
        .id;
    rig.settle(id);
    rig.hv.vanish(id);
    assert_eq!(
        rig.reconciler.observe().expect("observe"),
        vec![id.to_string()]
    );
    rig.settle(id);
    assert_eq!(
        rig.hv.get(id).expect("recreated").power,
        DomainPower::Running
    );
    assert_eq!(rig.server(id).status, ServerStatus::Active);

    rig.hv.vanish(id);
    rig.files.lose_root_disk(id);
    rig.settle(id);
    let server = rig.server(id);
    assert_eq!(server.status, ServerStatus::Error);
    assert!(server.fault.expect("fault").message.contains("root disk"));
    assert!(rig.hv.get(id).is_none(), "not recreated without its disk");
    assert!(
        rig.files.dir(id).expect("dir").root_disk.is_none(),
        "disk not silently re-created"
    );
    assert!(
        rig.reconciler.changed().expect("changed").is_empty(),
        "a permanent error is not retried in a loop"
    );
}

#[test]
fn orphans_are_removed_and_foreign_domains_left_alone() {
    let rig = Rig::new();
    let keep = rig
        .compute
        .create_server(rig.request("keep"))
        .expect("create")
        .id;
    rig.settle(keep);
    let spec = rig.hv.get(keep).expect("domain").spec;
    let orphan = Uuid::new_v4();
    rig.hv.plant(
        super::hypervisor::DomainSpec {
            id: orphan,
            ..spec.clone()
        },
        NODE,
        DomainPower::Running,
    );
    let foreign = Uuid::new_v4();
    rig.hv.plant(
        super::hypervisor::DomainSpec {
            id: foreign,
            ..spec
        },
        "someone-else",
        DomainPower::Running,
    );
    let leftover = Uuid::new_v4();
    rig.files.plant(leftover);

    rig.resync();
    assert!(rig.hv.get(orphan).is_none(), "orphan domain removed");
    assert!(rig.files.dir(leftover).is_none(), "orphan files removed");
    assert_eq!(
        rig.hv.get(foreign).expect("foreign").power,
        DomainPower::Running
    );
    assert_eq!(rig.hv.get(keep).expect("kept").power, DomainPower::Running);
}

#[test]
fn delete_removes_domain_files_and_row() {
    let rig = Rig::new();
    let id = rig
        .compute
        .create_server(rig.request("a"))
        .expect("create")
        .id;
    rig.settle(id);
    rig.compute.delete_server(id).expect("delete");
    rig.compute
        .delete_server(id)
        .expect("deleting twice is fine");
    assert_eq!(rig.server(id).task_state(), Some("deleting"));
    assert_eq!(
        rig.compute.start_server(id).expect_err("deleting").class(),
        ErrorClass::Conflict
    );
    rig.settle(id);
    assert!(matches!(
        rig.compute.server(id),
        Err(ComputeError::ServerNotFound(_))
    ));
    rig.nothing_created();
}

#[test]
fn image_in_use_cannot_be_deleted() {
    let rig = Rig::new();
    let id = rig
        .compute
        .create_server(rig.request("a"))
        .expect("create")
        .id;
    assert_eq!(
        rig.images
            .delete(rig.image_id, &crate::image::Caller::operator())
            .expect_err("in use")
            .class(),
        ErrorClass::Conflict
    );
    rig.compute.delete_server(id).expect("delete");
    rig.settle(id);
    rig.images
        .delete(rig.image_id, &crate::image::Caller::operator())
        .expect("now free");
    assert_eq!(rig.image_files.count(), 0);
}

#[test]
fn transient_failures_record_a_fault_and_clear_it_on_success() {
    let rig = Rig::new();
    let id = rig
        .compute
        .create_server(rig.request("a"))
        .expect("create")
        .id;
    rig.hv.fail_once("start");
    assert!(rig.reconciler.reconcile(&id.to_string()).is_err());
    let server = rig.server(id);
    assert_eq!(server.status, ServerStatus::Build);
    assert!(
        server
            .fault
            .expect("fault")
            .message
            .contains("injected failure")
    );
    rig.settle(id);
    let server = rig.server(id);
    assert_eq!(server.status, ServerStatus::Active);
    assert_eq!(server.fault, None);
}

#[test]
fn a_build_that_keeps_failing_turns_error_but_recovers_when_the_host_does() {
    let rig = Rig::new();
    let id = rig
        .compute
        .create_server(rig.request("a"))
        .expect("create")
        .id;
    rig.hv.set_unreachable(true);
    for _ in 0..BUILD_ATTEMPTS {
        assert!(rig.reconciler.reconcile(&id.to_string()).is_err());
    }
    assert_eq!(rig.server(id).status, ServerStatus::Error);
    assert!(
        rig.reconciler.observe().is_err(),
        "observation reports the unreachable hypervisor"
    );
    rig.hv.set_unreachable(false);
    rig.settle(id);
    assert_eq!(rig.server(id).status, ServerStatus::Active);
}

#[test]
fn settled_servers_cost_no_store_writes() {
    let rig = Rig::new();
    let id = rig
        .compute
        .create_server(rig.request("a"))
        .expect("create")
        .id;
    rig.settle(id);
    let watcher = Store::open(rig.store.path()).expect("second connection");
    let seen = watcher.data_version().expect("v");
    rig.settle(id);
    rig.settle(id);
    assert_eq!(
        watcher.data_version().expect("v"),
        seen,
        "a converged server is not rewritten"
    );
}

#[test]
fn changed_lists_servers_with_unreconciled_desired_state() {
    let rig = Rig::new();
    let id = rig
        .compute
        .create_server(rig.request("a"))
        .expect("create")
        .id;
    assert_eq!(
        rig.reconciler.changed().expect("changed"),
        vec![(id.to_string(), 1)]
    );
    rig.settle(id);
    assert!(rig.reconciler.changed().expect("changed").is_empty());
    rig.compute.stop_server(id).expect("stop");
    assert_eq!(
        rig.reconciler.changed().expect("changed"),
        vec![(id.to_string(), 2)]
    );
}

impl Rig {
    /// A tenant network with one IPv4 subnet.
    fn tenant_network(&self) -> Uuid {
        let net = self
            .network
            .create_network(NewNetwork {
                name: "tenant".into(),
                project_id: "demo".into(),
                ..NewNetwork::default()
            })
            .expect("network");
        self.network
            .create_subnet(NewSubnet {
                network_id: net.id,
                project_id: "demo".into(),
                ip_version: 4,
                cidr: "10.1.0.0/24".into(),
                ..NewSubnet::default()
            })
            .expect("subnet");
        net.id
    }
}

#[test]
fn nics_on_networks_get_ports_are_plugged_at_every_start_and_released_with_the_server() {
    let rig = Rig::new();
    let net = rig.tenant_network();
    let kept = rig
        .network
        .create_port(NewPort {
            network_id: net,
            project_id: "demo".into(),
            ..NewPort::default()
        })
        .expect("user port");
    let mut request = rig.request("on-net");
    request.nics = 0;
    request.networks = vec![
        super::NetworkRequest::Network(net),
        super::NetworkRequest::Port(kept.id),
    ];
    let server = rig.compute.create_server(request).expect("create");
    assert_eq!(server.nics.len(), 2);
    assert!(server.nics.iter().all(|n| n.network_id == Some(net)));
    assert_eq!(
        server.nics[1].port_id, kept.id,
        "the passed-in port is the second NIC"
    );
    let made = rig.network.port(server.nics[0].port_id).expect("made port");
    assert_eq!(
        (made.device_owner.as_str(), made.device_id.as_str()),
        ("compute:nova", server.id.to_string().as_str())
    );
    assert_eq!(
        made.fixed_ips[0].ip_address.to_string(),
        "10.1.0.3",
        "kept port took .2 first"
    );

    rig.settle(server.id);
    let plugged = rig.vifs.plugged();
    assert_eq!(plugged.len(), 2);
    assert!(
        plugged
            .values()
            .all(|(vif, fresh)| vif.server_id == server.id && *fresh == 1)
    );
    rig.compute
        .reboot_server(server.id, RebootKind::Hard)
        .expect("reboot");
    rig.settle(server.id);
    assert!(
        rig.vifs.plugged().values().all(|(_, fresh)| *fresh == 2),
        "replugged fresh after the restart"
    );

    rig.compute.delete_server(server.id).expect("delete");
    rig.settle(server.id);
    assert!(rig.vifs.plugged().is_empty(), "unplugged");
    assert!(
        matches!(
            rig.network.port(made.id),
            Err(crate::network::NetworkError::PortNotFound(_))
        ),
        "made port deleted"
    );
    let kept = rig.network.port(kept.id).expect("user port kept");
    assert_eq!(
        (kept.server_id, kept.device_owner.as_str()),
        (None, ""),
        "and unbound"
    );
}

#[test]
fn a_nic_on_a_missing_network_or_a_used_port_creates_nothing() {
    let rig = Rig::new();
    let net = rig.tenant_network();
    let mut request = rig.request("x");
    request.networks = vec![super::NetworkRequest::Network(Uuid::new_v4())];
    assert_eq!(
        rig.compute
            .create_server(request)
            .expect_err("no such network")
            .class(),
        ErrorClass::NotFound
    );
    let mut request = rig.request("y");
    request.networks = vec![super::NetworkRequest::Network(net)];
    let first = rig.compute.create_server(request).expect("first");
    let mut request = rig.request("z");
    request.networks = vec![super::NetworkRequest::Port(first.nics[0].port_id)];
    assert_eq!(
        rig.compute
            .create_server(request)
            .expect_err("port in use")
            .class(),
        ErrorClass::Conflict
    );
    assert_eq!(rig.row_count(), 1);
    assert_eq!(rig.network.ports().expect("ports").len(), 1);
}

#[test]
fn keypairs_are_per_user_unique_by_name_and_bad_keys_store_nothing() {
    let rig = Rig::new();
    let imported = rig
        .compute
        .create_keypair(&NewKeypair {
            name: "laptop".into(),
            user_id: "alice".into(),
            public_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2drWbc/6O74aOFoTX5rPJxojoycef+G/v5IH9gQKGT me@laptop".into()),
        })
        .expect("import");
    assert!(
        imported.private_key.is_none(),
        "imports return no private key"
    );
    let again = rig.compute.create_keypair(&NewKeypair {
        name: "laptop".into(),
        user_id: "alice".into(),
        public_key: None,
    });
    assert_eq!(again.expect_err("duplicate").class(), ErrorClass::Conflict);
    // The same name is free for another user.
    rig.compute
        .create_keypair(&NewKeypair {
            name: "laptop".into(),
            user_id: "bob".into(),
            public_key: None,
        })
        .expect("bob's own");
    let bad = rig.compute.create_keypair(&NewKeypair {
        name: "broken".into(),
        user_id: "alice".into(),
        public_key: Some("ssh-rsa AAAA-not-a-key".into()),
    });
    assert_eq!(bad.expect_err("bad key").class(), ErrorClass::BadRequest);
    let names: Vec<String> = rig
        .compute
        .keypairs("alice")
        .expect("list")
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["laptop"]);
    assert_eq!(
        rig.compute
            .keypair("alice", "broken")
            .expect_err("absent")
            .class(),
        ErrorClass::NotFound
    );
    rig.compute
        .delete_keypair("alice", "laptop")
        .expect("delete");
    assert_eq!(
        rig.compute
            .delete_keypair("alice", "laptop")
            .expect_err("gone")
            .class(),
        ErrorClass::NotFound
    );
}

#[test]
fn seeding_flavors_adds_only_what_is_missing() {
    let rig = Rig::new();
    let first = rig
        .compute
        .seed_flavors(super::scs_flavors::mandatory())
        .expect("seed");
    assert_eq!(first.len(), 15);
    let again = rig
        .compute
        .seed_flavors(super::scs_flavors::mandatory())
        .expect("seed again");
    assert!(again.is_empty(), "{again:?}");
    let flavor = rig.compute.flavor("SCS-2V-4-20s").expect("seeded");
    assert_eq!((flavor.vcpus, flavor.ram_mb, flavor.disk_gb), (2, 4096, 20));
}

#[test]
fn console_output_gives_the_last_lines_of_the_serial_log() {
    let rig = Rig::new();
    let server = rig
        .compute
        .create_server(rig.request("chatty"))
        .expect("create");
    assert_eq!(
        rig.compute.console_output(server.id, None).expect("empty"),
        ""
    );
    rig.files
        .print_on_console(server.id, "SeaBIOS\r\nbooting\r\nlogin: ");
    assert_eq!(
        rig.compute.console_output(server.id, None).expect("all"),
        "SeaBIOS\nbooting\nlogin: "
    );
    assert_eq!(
        rig.compute
            .console_output(server.id, Some(2))
            .expect("tail"),
        "booting\nlogin: \n"
    );
    assert_eq!(
        rig.compute
            .console_output(Uuid::new_v4(), None)
            .expect_err("unknown")
            .class(),
        ErrorClass::NotFound
    );
}
