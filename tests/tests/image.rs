//! The node image, booted as a whole machine in QEMU (TCG on this host; KVM where the probe shows
//! it works): UEFI → systemd-boot → UKI → initrd (dm-verity /usr, first-boot repartitioning and
//! seeding of the data partition) → the site's services → `scs-edge-agent provision` → the agent.
//!
//! Everything is observed from outside, as an operator would: the serial console (logged in through
//! an autologin credential the lab passes over SMBIOS, not baked into the image), the agent's API
//! through the management NIC's port forward, and the disk image itself.
//!
//! `make test` builds the image first (`scripts/build-image.sh`, a no-op when nothing changed).

use scs_edge_tests::lab::{
    LabNode, LabOptions, SiteDelivery, default_image, free_port, make_site_stick,
};
use scs_edge_tests::scratch_dir;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A first boot under TCG on two busy cores: minutes, not seconds.
const BOOT: Duration = Duration::from_mins(15);
const COMMAND: Duration = Duration::from_mins(2);

fn image() -> PathBuf {
    let image = default_image();
    assert!(
        image.exists(),
        "no node image at {}: `make image` (or `make test`) builds it",
        image.display()
    );
    image
}

fn site_toml(name: &str, region_url: &str) -> String {
    format!(
        "[site]\nname = \"{name}\"\nregion_url = \"{region_url}\"\njoin_token = \"ci-join-token\"\n\
         ca_fingerprint = \"sha256:{}\"\n",
        "ab".repeat(32)
    )
}

/// Runs `command` on the console and returns its trimmed output, failing on a non-zero status.
fn sh(node: &LabNode, command: &str) -> String {
    scs_edge_tests::node::sh(node, command, COMMAND)
}

/// The exit status of `command` on the console.
fn status(node: &LabNode, command: &str) -> i32 {
    node.console
        .shell(command, COMMAND)
        .expect("console command")
        .0
}

fn wait_agent_active(node: &LabNode) {
    if let Err(err) = node.wait_agent_ready(BOOT) {
        panic!("{err}");
    }
}

fn api_answers(node: &LabNode) -> serde_json::Value {
    let client = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let url = format!("{}/identity/v3", node.api_url());
    scs_edge_tests::wait::until("the agent's API through the port forward", COMMAND, || {
        let response = client.get(&url).send().ok()?;
        response
            .status()
            .is_success()
            .then(|| response.json::<serde_json::Value>().ok())?
    })
}

#[test]
fn image_boots_to_a_ready_agent_on_a_verity_protected_read_only_usr() {
    let work = scratch_dir("image-boot");
    let options = LabOptions::new(
        image(),
        work.path().to_path_buf(),
        free_port(),
        SiteDelivery::FwCfg(site_toml("ci-site", "https://region.example.net")),
    );
    let node = LabNode::boot(&options).expect("boot the image");
    node.console
        .wait_for("root@scs-edge", BOOT)
        .expect("serial console login");
    node.console
        .wait_for(
            "SCS Edge: provisioned site ci-site with hardware profile qemu-q35 (from QEMU fw_cfg)",
            BOOT,
        )
        .expect("provisioned from fw_cfg");
    wait_agent_active(&node);

    for unit in [
        "libvirtd.service",
        "ovsdb-server.service",
        "ovs-vswitchd.service",
        "ovn-controller.service",
        "ovn-northd.service",
    ] {
        assert_eq!(
            sh(&node, &format!("systemctl is-active {unit} || true")),
            "active",
            "{unit}"
        );
    }

    // /usr: the verity device, read-only squashfs, refusing writes.
    assert_eq!(
        sh(&node, "findmnt -no SOURCE,FSTYPE /usr"),
        "/dev/mapper/usr squashfs"
    );
    let options = sh(&node, "findmnt -no OPTIONS /usr");
    assert!(options.split(',').any(|o| o == "ro"), "{options}");
    let dm_uuid = sh(
        &node,
        "cat /sys/block/$(basename $(readlink -f /dev/mapper/usr))/dm/uuid",
    );
    assert!(dm_uuid.starts_with("CRYPT-VERITY-"), "{dm_uuid}");
    assert!(sh(&node, "cat /proc/cmdline").contains("usrhash="));
    let (touch, refusal) = node
        .console
        .shell("touch /usr/bin/scs-edge-probe 2>&1", COMMAND)
        .expect("touch");
    assert_ne!(touch, 0, "writing to /usr must fail");
    assert!(refusal.contains("Read-only file system"), "{refusal}");

    // Partitions: slot A as built, slot B created empty, the data partition grown to the disk.
    let labels = sh(&node, "lsblk -rno PARTLABEL /dev/vda");
    let labels: Vec<&str> = labels.lines().collect();
    assert_eq!(
        labels.iter().filter(|l| **l == "_empty").count(),
        3,
        "{labels:?}"
    );
    let version = env!("CARGO_PKG_VERSION");
    for label in [
        format!("scs-edge_{version}"),
        format!("scs-edge_{version}_verity"),
        format!("scs-edge_{version}_verity_sig"),
        "scs-edge-data".into(),
    ] {
        assert!(labels.contains(&label.as_str()), "{label} in {labels:?}");
    }
    assert_eq!(
        sh(&node, "findmnt -no SOURCE / | xargs lsblk -no PARTLABEL"),
        "scs-edge-data"
    );
    let root_bytes: u64 = sh(&node, "findmnt -bno SIZE /").parse().expect("size");
    assert!(
        root_bytes > 10 << 30,
        "the data partition grows into the 20 GiB disk: {root_bytes}"
    );

    // Boot assessment: the UKI booted with a try counter, and once the agent was READY
    // (boot-complete.target) systemd-bless-boot marked this boot good.
    let blessed = scs_edge_tests::wait::within(COMMAND, || {
        let state = sh(
            &node,
            "systemctl is-active systemd-bless-boot.service || true",
        );
        (state == "active").then_some(())
    });
    assert!(
        blessed.is_some(),
        "systemd-bless-boot did not run: {}",
        sh(
            &node,
            "systemctl status --no-pager systemd-bless-boot.service boot-complete.target || true"
        )
    );
    assert_eq!(
        sh(&node, "/usr/lib/systemd/systemd-bless-boot status"),
        "good"
    );

    // Immutable: no compilers, no package manager, no package state.
    assert_eq!(
        status(
            &node,
            "(for c in cc gcc rustc apt apt-get; do command -v $c && exit 1; done; test ! -e /var/lib/dpkg/status)"
        ),
        0,
        "the node carries a compiler or package-manager state"
    );

    // The update root of trust is the release repository's newest root, byte for byte.
    let metadata = image().with_file_name("releases").join("metadata");
    let newest_root = std::fs::read_dir(&metadata)
        .expect("the release repository build-image made")
        .map(|entry| entry.expect("entry").path())
        .filter_map(|path| {
            let version = path.file_name()?.to_str()?.strip_suffix(".root.json")?;
            Some((version.parse::<u64>().ok()?, path))
        })
        .max()
        .expect("a root in the release repository")
        .1;
    let expected = sha256_hex(&std::fs::read(&newest_root).expect("read root"));
    let baked = sh(
        &node,
        "sha256sum /usr/share/scs-edge/update/root.json | cut -d' ' -f1",
    );
    assert_eq!(baked, expected, "{}", newest_root.display());

    // What provisioning wrote; the API answers through the management NIC.
    assert!(sh(&node, "cat /etc/scs-edge/agent.toml").contains("physnet1"));
    let stamp: serde_json::Value =
        serde_json::from_str(&sh(&node, "cat /var/lib/scs-edge/provisioned.json")).expect("stamp");
    assert_eq!(stamp["profile"], "qemu-q35", "{stamp}");
    assert_eq!(stamp["site"], "ci-site", "{stamp}");
    let versions = api_answers(&node);
    assert_eq!(versions["version"]["id"], "v3.14", "{versions}");
}

/// Waits until a provisioning message is on the console whole — its headline, then every line up to
/// the closing "Nothing has been written." — and returns it from the headline on. The console carries
/// the message in pieces: checking it as soon as the headline shows races the rest of it.
fn provisioning_message(node: &LabNode, headline: &str) -> String {
    scs_edge_tests::wait::within(BOOT, || {
        let text = node.console.text();
        let message = &text[text.find(headline)?..];
        message
            .contains("Nothing has been written.")
            .then(|| message.to_owned())
    })
    .unwrap_or_else(|| {
        panic!(
            "{headline:?} not printed whole within {BOOT:?}:\n{}",
            node.console.tail(40)
        )
    })
}

#[test]
fn a_first_boot_without_site_configuration_waits_and_provisions_from_a_usb_stick() {
    let work = scratch_dir("image-first-boot");
    let options = LabOptions::new(
        image(),
        work.path().to_path_buf(),
        free_port(),
        SiteDelivery::Nothing,
    );
    let node = LabNode::boot(&options).expect("boot the image");
    let message = provisioning_message(&node, "SCS Edge: waiting for site configuration");
    for source in ["scs_edge.", "fw_cfg", "SCSEDGE"] {
        assert!(
            message.contains(source),
            "the message names {source}:\n{}",
            node.console.tail(30)
        );
    }
    node.console
        .wait_for("root@scs-edge", BOOT)
        .expect("serial console login");
    // Waiting means nothing half-done: no agent, no configuration, no stamp, no network files.
    assert_ne!(
        sh(&node, "systemctl is-active scs-edge-agent.service || true"),
        "active"
    );
    assert_eq!(
        sh(
            &node,
            "systemctl is-active scs-edge-provision.service || true"
        ),
        "activating"
    );
    for path in [
        "/etc/scs-edge/agent.toml",
        "/etc/scs-edge/site.toml",
        "/var/lib/scs-edge/provisioned.json",
        "/etc/systemd/network/10-scs-edge-management.network",
    ] {
        assert_ne!(
            status(&node, &format!("test -e {path}")),
            0,
            "{path} exists"
        );
    }
    assert!(
        sh(
            &node,
            "systemctl show -P StatusText scs-edge-provision.service"
        )
        .contains("waiting"),
    );

    // An invalid stick: a clear message naming the key, still nothing written.
    let bad = work.path().join("bad-stick.img");
    make_site_stick(&bad, &site_toml("ci-site", "http://region.example.net")).expect("stick");
    node.plug_usb_stick("stick0", &bad).expect("plug");
    let invalid = provisioning_message(&node, "SCS Edge: site configuration invalid");
    assert!(invalid.contains("site.region_url"), "{invalid}");
    assert!(invalid.contains("https://"), "{invalid}");
    assert!(!invalid.contains("ci-join-token"), "the token is a secret");
    for path in [
        "/etc/scs-edge/agent.toml",
        "/var/lib/scs-edge/provisioned.json",
    ] {
        assert_ne!(
            status(&node, &format!("test -e {path}")),
            0,
            "{path} exists"
        );
    }

    // The right stick: provisioned, the agent comes up.
    node.unplug_usb_stick("stick0").expect("unplug");
    let good = work.path().join("good-stick.img");
    make_site_stick(&good, &site_toml("ci-usb", "https://region.example.net")).expect("stick");
    node.plug_usb_stick("stick1", &good).expect("plug");
    node.console
        .wait_for(
            "SCS Edge: provisioned site ci-usb with hardware profile qemu-q35 (from SCSEDGE filesystem)",
            BOOT,
        )
        .expect("provisioned from the stick");
    wait_agent_active(&node);
    assert!(sh(&node, "cat /etc/scs-edge/site.toml").contains("ci-usb"));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// Finds the byte offset of the partition labelled `label` with `sfdisk --json`.
fn partition_offset(image: &Path, label: &str) -> u64 {
    let output = std::process::Command::new("sfdisk")
        .arg("--json")
        .arg(image)
        .output()
        .expect("sfdisk");
    let table: serde_json::Value = serde_json::from_slice(&output.stdout).expect("sfdisk json");
    let table = &table["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let partition = table["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|p| p["name"] == label)
        .unwrap_or_else(|| panic!("no partition {label} in {table}"));
    partition["start"].as_u64().expect("start") * sector
}

#[test]
fn a_flipped_byte_in_usr_fails_verification_and_the_node_does_not_boot() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let work = scratch_dir("image-tampered");
    let tampered = work.path().join("tampered.raw");
    let copied = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(image())
        .arg(&tampered)
        .status()
        .expect("cp");
    assert!(copied.success());
    // Byte 8 of the squashfs superblock (block 0 of /usr): read by every mount.
    let offset = partition_offset(
        &tampered,
        &format!("scs-edge_{}", env!("CARGO_PKG_VERSION")),
    ) + 8;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tampered)
        .expect("open copy");
    let mut byte = [0_u8; 1];
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.read_exact(&mut byte).expect("read");
    byte[0] ^= 0xff;
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(&byte).expect("write");
    file.sync_all().expect("sync");
    drop(file);
    // A flashed image gives its entry three tries, and the trial-boot service reboots a failed
    // boot while one is left, so the real node stops after three identical failures. One try here
    // shows the same failure and the same stop for a third of the boots (the retries themselves
    // are the update test's subject): the entry is renamed on the copy's ESP with mtools.
    let version = env!("CARGO_PKG_VERSION");
    let esp = format!(
        "{}@@{}",
        tampered.display(),
        partition_offset(&tampered, "esp")
    );
    let renamed = std::process::Command::new("mren")
        .args(["-i", &esp])
        .arg(format!("::/EFI/Linux/scs-edge_{version}+3.efi"))
        .arg(format!("::/EFI/Linux/scs-edge_{version}+1.efi"))
        .status()
        .expect("mren");
    assert!(renamed.success(), "the image's entry has three tries");

    let options = LabOptions::new(
        tampered,
        work.path().join("lab"),
        free_port(),
        SiteDelivery::Nothing,
    );
    let node = LabNode::boot(&options).expect("boot the tampered copy");
    node.console
        .wait_for("is corrupted", BOOT)
        .expect("dm-verity reports the corrupted block");
    // The initrd cannot mount /usr and stops in emergency mode (root is locked: no shell).
    let stopped = scs_edge_tests::wait::within(BOOT, || {
        let text = node.console.text();
        (text.contains("emergency") || text.contains("root account is locked")).then_some(text)
    });
    let text = stopped.unwrap_or_else(|| {
        panic!(
            "the boot did not stop in emergency mode:\n{}",
            node.console.tail(30)
        )
    });
    assert!(text.contains("verity"), "{}", node.console.tail(30));
    assert!(
        !text.contains("root@scs-edge") && !text.contains("SCS Edge:"),
        "a tampered /usr must never reach userspace:\n{}",
        node.console.tail(30)
    );
}
