//! What the OS-update test and benchmark do to a lab node: sign releases of the test images the
//! way a release manager would, carry them on sticks, and run a server across the update.
//!
//! The releases are signed with the development release keys `make image` made (its root of trust is
//! baked into every test image) into a copy of its repository in the caller's scratch directory, so
//! the repository the image build keeps is never changed.

use crate::lab::LabNode;
use crate::target_dir;
use scs_edge_release::bundle;
use scs_edge_release::keys::KeySet;
use scs_edge_release::repository::{NewRelease, Repository};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The label the agent watches for.
pub const UPDATE_LABEL: &str = "SCSEDGE-UPDATE";

/// This workspace's version with its patch level raised by `offset`: N is 0, the update test
/// images N+1 and N+2 (`scripts/build-update-test-images.sh`).
pub fn version_with_patch(offset: u64) -> semver::Version {
    let mut version: semver::Version = env!("CARGO_PKG_VERSION").parse().expect("version");
    version.patch += offset;
    version
}

fn run(command: &mut Command) {
    let output = command.output().expect("run");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The release manager's desk: the development keys and a copy of the development repository.
pub struct ReleaseDesk {
    keys: KeySet,
    repo: Repository,
    dir: PathBuf,
}

impl ReleaseDesk {
    /// A desk working in `dir`.
    pub fn new(dir: &Path) -> Self {
        let image_dir = target_dir().join("image");
        let repo_dir = dir.join("releases");
        run(Command::new("cp")
            .arg("-a")
            .arg(image_dir.join("releases"))
            .arg(&repo_dir));
        Self {
            keys: KeySet::new(image_dir.join("keys/release")),
            repo: Repository::new(repo_dir),
            dir: dir.to_path_buf(),
        }
    }

    /// The `[releases]` section of a region trusting the root the images carry (the repository's
    /// newest) and holding the development timestamp key, alone in a folder of its own.
    pub fn region_config(&self) -> String {
        let keys = self.dir.join("region-keys");
        std::fs::create_dir_all(&keys).expect("key folder");
        std::fs::copy(
            target_dir().join("image/keys/release/timestamp.pk8"),
            keys.join("timestamp.pk8"),
        )
        .expect("timestamp key");
        let (_, root) = scs_edge_release::keys::latest_root(&self.repo.metadata_dir())
            .expect("the desk's root of trust");
        format!(
            "[releases]\nroot_of_trust = \"{}\"\ntimestamp_key_dir = \"{}\"\n",
            root.display(),
            keys.display()
        )
    }

    /// Signs the image build of `version` (from `target/image-test/<version>`) and returns a stick
    /// image labelled `label` holding its bundle.
    pub fn stick(&self, version: &semver::Version, label: &str) -> PathBuf {
        let bundle = self.bundle(version);
        let stick = self.stick_with(&bundle, label);
        std::fs::remove_file(&bundle).expect("remove the bundle");
        stick
    }

    /// Signs the image build of `version` and exports its air-gap bundle.
    pub fn bundle(&self, version: &semver::Version) -> PathBuf {
        let image_dir = target_dir().join("image-test").join(version.to_string());
        assert!(
            image_dir
                .join(format!("scs-edge_{version}.usr.raw"))
                .exists(),
            "no image of {version} in {}: `make test` builds it (scripts/build-update-test-images.sh)",
            image_dir.display()
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let bundle = self.dir.join(format!("scs-edge_{version}.bundle"));
        runtime.block_on(async {
            self.repo
                .publish(
                    &self.keys,
                    &NewRelease {
                        image_dir,
                        version: version.clone(),
                        min_from_version: semver::Version::new(0, 0, 0),
                        max_version: None,
                    },
                    &scs_edge_release::Lifetimes::default(),
                    jiff::Timestamp::now(),
                )
                .await
                .expect("publish");
            bundle::export(&self.repo, version, &bundle)
                .await
                .expect("bundle");
        });
        bundle
    }

    /// A stick image, an ext4 filesystem labelled `label` (FAT labels stop at 11 characters,
    /// SCSEDGE-UPDATE has 14), holding `bundle`.
    pub fn stick_with(&self, bundle: &Path, label: &str) -> PathBuf {
        let name = bundle.file_name().expect("bundle name");
        let content = self.dir.join(format!("stick-{label}"));
        std::fs::create_dir_all(&content).expect("stick dir");
        std::fs::copy(bundle, content.join(name)).expect("copy the bundle");
        let size = std::fs::metadata(bundle).expect("bundle").len();
        let stick = self
            .dir
            .join(format!("stick-{label}-{}.img", name.to_string_lossy()));
        let blocks_kib = size / 1024 + 64 * 1024;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label, "-d"])
            .arg(&content)
            .arg(&stick)
            .arg(format!("{blocks_kib}k")));
        std::fs::remove_dir_all(&content).expect("remove the stick's content");
        stick
    }
}

/// A FAT stick labelled GUEST with the tiny test guest's disk image.
pub fn guest_stick(dir: &Path) -> PathBuf {
    let guest = crate::guest::image();
    let stick = dir.join("guest-stick.img");
    let kib = std::fs::metadata(&guest).expect("guest").len() / 1024 + 8 * 1024;
    run(Command::new("mkfs.vfat")
        .args(["-n", "GUEST", "-C"])
        .arg(&stick)
        .arg(kib.to_string()));
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&stick)
        .arg(&guest)
        .arg("::guest.raw"));
    stick
}

/// A server started on a lab node.
pub struct Canary {
    /// Its id.
    pub id: uuid::Uuid,
    /// Its disk on the node.
    pub disk: String,
}

/// Imports the tiny guest from a stick into the node's image service and starts a server from it,
/// waiting until it is ACTIVE. `scratch` holds the stick image.
pub fn start_canary(node: &LabNode, scratch: &Path, timeout: Duration) -> Canary {
    let sh = |command: &str| crate::node::sh(node, command, timeout);
    node.plug_usb_stick("guest", &guest_stick(scratch))
        .expect("plug the guest stick");
    let image_id = uuid::Uuid::new_v4();
    let id = uuid::Uuid::new_v4();
    sh(&format!(
        "for i in $(seq 60); do test -e /dev/disk/by-label/GUEST && break; sleep 1; done; \
         mkdir -p /run/guest && mount -o ro /dev/disk/by-label/GUEST /run/guest && \
         scs-edge-agent image import --name guest --file /run/guest/guest.raw \
         --disk-format raw --id {image_id} >/dev/null && umount /run/guest"
    ));
    node.unplug_usb_stick("guest")
        .expect("unplug the guest stick");
    sh(
        "scs-edge-agent flavor create --id tiny --name tiny --vcpus 1 --ram 128 --disk 1 >/dev/null",
    );
    sh(&format!(
        "scs-edge-agent server create --id {id} --name canary --flavor tiny \
         --image {image_id} >/dev/null && \
         scs-edge-agent server wait {id} --status ACTIVE --timeout 600 >/dev/null"
    ));
    Canary {
        id,
        disk: format!("/var/lib/scs-edge/servers/{id}/disk.qcow2"),
    }
}

/// What the serial getty prints once per boot, when it logs root in.
pub const LOGGED_IN: &str = "(automatic login)";

/// Waits until the node has booted `boots` times since console position `since`, finished booting,
/// and its gate has judged: the update record is idle again and its last outcome names `version`.
/// Returns `scs-edge-agent update status`.
pub fn wait_judged(
    node: &LabNode,
    timeout: Duration,
    since: usize,
    boots: usize,
    version: &semver::Version,
) -> serde_json::Value {
    let logged_in = crate::wait::within(timeout, || {
        let text = node.console.text();
        let fresh = text.get(since..)?;
        if fresh.matches(LOGGED_IN).count() < boots {
            return None;
        }
        fresh.rfind(LOGGED_IN).map(|at| since + at)
    })
    .unwrap_or_else(|| {
        panic!(
            "the node did not boot {boots} time(s) within {timeout:?}; console:\n{}",
            node.console.tail(60)
        )
    });
    // Typed before the login shell prompts, a command is lost.
    node.console
        .wait_for_since(logged_in, "root@scs-edge", timeout)
        .expect("the login shell");
    node.console.new_session();
    // Until the boot has finished: the gate's verdict comes before boot-complete.target, and
    // systemd-bless-boot marks the entry good only after it.
    let _ = node
        .console
        .shell("systemctl is-system-running --wait", timeout);
    crate::wait::within(timeout, || {
        let (status, output) = node
            .console
            .shell("scs-edge-agent update status", timeout)
            .ok()?;
        let status: serde_json::Value = serde_json::from_str(output.trim())
            .ok()
            .filter(|_| status == 0)?;
        let record = &status["record"];
        (record["phase"]["phase"] == "idle"
            && record["last_outcome"]["version"] == version.to_string())
        .then_some(status)
    })
    .unwrap_or_else(|| {
        panic!(
            "no verdict on {version} within {timeout:?}; console:\n{}",
            node.console.tail(60)
        )
    })
}
