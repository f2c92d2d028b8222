//! OS updates of a whole node in QEMU, from the real images: version N (`make image`) boots, runs a
//! server, and takes N+1 and N+2 (`scripts/build-update-test-images.sh`) from `SCSEDGE-UPDATE`
//! sticks plugged over QMP, exactly as an operator on site would. One machine serves every
//! assertion: each boot under TCG costs minutes.
//!
//! The releases are signed with the development release keys `make image` made (its root of trust is
//! baked into every test image) into a repository copied to the test's scratch directory, so the
//! repository the image build keeps is never changed.

use scs_edge_release::bundle;
use scs_edge_release::keys::KeySet;
use scs_edge_release::repository::{NewRelease, Repository};
use scs_edge_tests::lab::{LabNode, LabOptions, SiteDelivery, default_image, free_port};
use scs_edge_tests::{scratch_dir, target_dir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A boot under TCG on two busy cores, first or not: minutes.
const BOOT: Duration = Duration::from_mins(15);
const COMMAND: Duration = Duration::from_mins(5);
/// Import, slot write, drain, reboot and health gate.
const UPDATE: Duration = Duration::from_mins(25);

fn version_with_patch(offset: u64) -> semver::Version {
    let mut version: semver::Version = env!("CARGO_PKG_VERSION").parse().expect("version");
    version.patch += offset;
    version
}

fn site_toml() -> String {
    format!(
        "[site]\nname = \"update-site\"\nregion_url = \"https://region.example.net\"\n\
         join_token = \"ci-join-token\"\nca_fingerprint = \"sha256:{}\"\n",
        "ab".repeat(32)
    )
}

fn run(command: &mut Command) {
    let output = command.output().expect("run");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `command` on the console and returns its trimmed output, failing on a non-zero status.
fn sh(node: &LabNode, command: &str) -> String {
    scs_edge_tests::node::sh(node, command, COMMAND)
}

fn update_status(node: &LabNode) -> serde_json::Value {
    serde_json::from_str(&sh(node, "scs-edge-agent update status")).expect("status JSON")
}

/// The release manager's desk: the development keys and a copy of the development repository.
struct Releases {
    keys: KeySet,
    repo: Repository,
    dir: PathBuf,
}

impl Releases {
    fn new(dir: &Path) -> Self {
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

    /// Signs the image build of `version` and returns a stick holding its bundle.
    fn stick(&self, version: &semver::Version) -> PathBuf {
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
        let bundle_dir = self.dir.join(format!("stick-{version}"));
        std::fs::create_dir_all(&bundle_dir).expect("stick dir");
        let bundle = bundle_dir.join(format!("scs-edge_{version}.bundle"));
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
        let size = std::fs::metadata(&bundle).expect("bundle").len();
        // ext4: FAT labels stop at 11 characters, SCSEDGE-UPDATE has 14.
        let stick = self.dir.join(format!("stick-{version}.img"));
        let blocks_kib = size / 1024 + 64 * 1024;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "SCSEDGE-UPDATE", "-d"])
            .arg(&bundle_dir)
            .arg(&stick)
            .arg(format!("{blocks_kib}k")));
        std::fs::remove_file(&bundle).expect("remove the bundle copy");
        stick
    }
}

/// A FAT stick labelled GUEST with the tiny test guest's disk image.
fn guest_stick(dir: &Path) -> PathBuf {
    let guest = scs_edge_tests::guest::image();
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

/// What the serial getty prints once per boot, when it logs root in.
const LOGGED_IN: &str = "(automatic login)";

/// Waits until the node has rebooted `boots` times since `since` and its gate has judged: the
/// update record is idle again and its last outcome names `version`.
fn wait_judged(
    node: &LabNode,
    since: usize,
    boots: usize,
    version: &semver::Version,
) -> serde_json::Value {
    let logged_in = scs_edge_tests::wait::within(UPDATE, || {
        let text = node.console.text();
        let fresh = text.get(since..)?;
        if fresh.matches(LOGGED_IN).count() < boots {
            return None;
        }
        fresh.rfind(LOGGED_IN).map(|at| since + at)
    })
    .unwrap_or_else(|| {
        panic!(
            "the node did not boot {boots} time(s) within {UPDATE:?}; console:\n{}",
            node.console.tail(60)
        )
    });
    // Typed before the login shell prompts, a command is lost.
    node.console
        .wait_for_since(logged_in, "root@scs-edge", BOOT)
        .expect("the login shell");
    node.console.new_session();
    scs_edge_tests::wait::within(UPDATE, || {
        let (status, output) = node
            .console
            .shell("scs-edge-agent update status", COMMAND)
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
            "no verdict on {version} within {UPDATE:?}; console:\n{}",
            node.console.tail(60)
        )
    })
}

#[test]
#[ignore = "not yet green end to end: re-run with --run-ignored after the power-cut handling of 2026-12-07 (issue 11)"]
fn a_node_takes_a_signed_release_from_a_stick_keeps_its_server_and_rolls_back_a_bad_one() {
    let work = scratch_dir("update");
    let n = version_with_patch(0);
    let next = version_with_patch(1);
    let broken = version_with_patch(2);
    let releases = Releases::new(work.path());
    let next_stick = releases.stick(&next);
    let broken_stick = releases.stick(&broken);

    let options = LabOptions::new(
        default_image(),
        work.path().join("node"),
        free_port(),
        SiteDelivery::FwCfg(site_toml()),
    );
    let mut node = LabNode::boot(&options).expect("boot N");
    node.console
        .wait_for("root@scs-edge", BOOT)
        .expect("console login");
    node.wait_agent_ready(BOOT).expect("agent READY on N");
    assert_eq!(update_status(&node)["running"], n.to_string());

    // A server on N: the tiny guest from a second stick.
    node.plug_usb_stick("guest", &guest_stick(work.path()))
        .expect("plug the guest stick");
    let image_id = uuid::Uuid::new_v4();
    let server_id = uuid::Uuid::new_v4();
    sh(
        &node,
        &format!(
            "for i in $(seq 60); do test -e /dev/disk/by-label/GUEST && break; sleep 1; done; \
             mkdir -p /run/guest && mount -o ro /dev/disk/by-label/GUEST /run/guest && \
             scs-edge-agent image import --name guest --file /run/guest/guest.raw \
             --disk-format raw --id {image_id} >/dev/null && umount /run/guest"
        ),
    );
    node.unplug_usb_stick("guest")
        .expect("unplug the guest stick");
    sh(
        &node,
        "scs-edge-agent flavor create --id tiny --name tiny --vcpus 1 --ram 128 --disk 1 >/dev/null",
    );
    sh(
        &node,
        &format!(
            "scs-edge-agent server create --id {server_id} --name canary --flavor tiny \
             --image {image_id} >/dev/null && \
             scs-edge-agent server wait {server_id} --status ACTIVE --timeout 600 >/dev/null"
        ),
    );
    let disk = format!("/var/lib/scs-edge/servers/{server_id}/disk.qcow2");
    let disk_before = sh(&node, &format!("sha256sum {disk} | cut -d' ' -f1"));

    // N+1 from a stick: verified, staged, written into slot B, rebooted into, gate passed — with
    // the power failing twice on the way.
    node.plug_usb_stick("update1", &next_stick)
        .expect("plug the N+1 stick");
    scs_edge_tests::wait::within(UPDATE, || {
        (update_status(&node)["record"]["phase"]["phase"] == "installing").then_some(())
    })
    .expect("the agent writes the slot");
    // Power cut while the slot is written: N still runs, the half-written slot is not used.
    node.power_cycle(&options).expect("power on again");
    node.console
        .wait_for(LOGGED_IN, BOOT)
        .expect("boots after the power cut");
    node.console
        .wait_for("root@scs-edge", BOOT)
        .expect("the login shell");
    node.console.new_session();
    node.wait_agent_ready(BOOT)
        .expect("agent READY after the power cut");
    assert_eq!(update_status(&node)["running"], n.to_string());
    // N's entry was blessed on its first boot: it has no counter any more ("clean").
    assert_eq!(
        sh(&node, "/usr/lib/systemd/systemd-bless-boot status"),
        "clean",
        "N's own, blessed entry booted"
    );
    // The agent writes the staged release again from the start and reboots into it. Power cut
    // again, right after the new kernel started: the next boot takes another of its tries.
    let since = node.console.position();
    node.console
        .wait_for_since(since, "EFI stub: Loaded initrd", UPDATE)
        .expect("the reboot into N+1 started");
    node.power_cycle(&options).expect("power on again");
    let status = wait_judged(&node, 0, 1, &next);
    assert_eq!(status["running"], next.to_string(), "{status}");
    assert_eq!(
        status["record"]["last_outcome"]["result"], "committed",
        "{status}"
    );
    assert_eq!(
        sh(&node, "sed -n 's/^IMAGE_VERSION=//p' /usr/lib/os-release").trim_matches('"'),
        next.to_string()
    );
    let usr_slot = sh(&node, "lsblk -rnso PARTLABEL /dev/mapper/usr");
    assert!(
        usr_slot
            .lines()
            .any(|label| label == format!("scs-edge_{next}")),
        "/usr runs from the slot labelled with the new version: {usr_slot}"
    );
    assert_eq!(
        sh(&node, "/usr/lib/systemd/systemd-bless-boot status"),
        "good"
    );
    sh(
        &node,
        &format!("scs-edge-agent server wait {server_id} --status ACTIVE --timeout 600 >/dev/null"),
    );
    assert_eq!(
        sh(&node, &format!("sha256sum {disk} | cut -d' ' -f1")),
        disk_before,
        "the server's disk is intact"
    );

    // N+2 cannot pass its gate (its ovn-controller never starts): back on N+1 by itself.
    sh(
        &node,
        "printf '\\n[update]\\ngate_window_secs = 150\\n' >> /etc/scs-edge/agent.toml",
    );
    let since = node.console.position();
    node.plug_usb_stick("update2", &broken_stick)
        .expect("plug the N+2 stick");
    // Two boots: into N+2, whose gate fails, and back into N+1.
    let status = wait_judged(&node, since, 2, &broken);
    assert_eq!(status["running"], next.to_string(), "back on N+1: {status}");
    let outcome = &status["record"]["last_outcome"];
    assert_eq!(outcome["result"], "rolled_back", "{status}");
    assert!(
        outcome["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("ovn-controller"),
        "{status}"
    );
    assert!(
        status["record"]["failed"][broken.to_string()].is_object(),
        "{status}"
    );
    node.unplug_usb_stick("update2").expect("unplug");
    sh(
        &node,
        &format!("scs-edge-agent server wait {server_id} --status ACTIVE --timeout 600 >/dev/null"),
    );

    // Not retried: the same stick again is refused and counted, nothing is written.
    node.plug_usb_stick("update2b", &broken_stick)
        .expect("plug again");
    let refused = scs_edge_tests::wait::within(COMMAND, || {
        let status = update_status(&node);
        status["record"]["refused"]["failed_before"]
            .as_u64()
            .filter(|count| *count >= 1)
            .map(|_| status)
    })
    .expect("the failed version is refused");
    assert_eq!(refused["record"]["phase"]["phase"], "idle", "{refused}");
    let metrics = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
        .get(format!("{}/metrics", node.api_url()))
        .send()
        .and_then(reqwest::blocking::Response::text)
        .expect("/metrics through the port forward");
    assert!(
        metrics.contains("scs_edge_update_refusals_total{kind=\"failed_before\"} 1")
            || metrics.contains("scs_edge_update_refusals{kind=\"failed_before\"} 1"),
        "refusals are in /metrics: {}",
        metrics
            .lines()
            .filter(|line| line.starts_with("scs_edge_update"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    node.unplug_usb_stick("update2b").expect("unplug");

    // An explicit retry clears it: the release is verified, written and booted again — and, still
    // broken, rolled back again.
    sh(&node, &format!("scs-edge-agent update retry {broken}"));
    let since = node.console.position();
    node.plug_usb_stick("update2c", &broken_stick)
        .expect("plug for the retry");
    let status = wait_judged(&node, since, 2, &broken);
    assert_eq!(status["running"], next.to_string(), "{status}");
    assert_eq!(
        status["record"]["last_outcome"]["result"], "rolled_back",
        "{status}"
    );
}
