//! The node image, booted as a whole machine in QEMU (TCG on this host; KVM where the probe shows
//! it works): a copy with one flipped byte in `/usr` must never reach userspace. What a good image
//! does when it boots — a first boot waiting for its site configuration and provisioned from a
//! stick, dm-verity `/usr`, A/B partitions, the blessed boot, the root of trust — is asserted on the
//! freshly flashed site of the update test (`update.rs`), which boots it anyway: under TCG every
//! boot costs minutes.
//!
//! `make test` builds the image first (`scripts/build-image.sh`, a no-op when nothing changed).

use scs_edge_tests::lab::{LabNode, LabOptions, SiteDelivery, default_image, free_port};
use scs_edge_tests::scratch_dir;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A first boot under TCG on two busy cores: minutes, not seconds.
const BOOT: Duration = Duration::from_mins(15);

fn image() -> PathBuf {
    let image = default_image();
    assert!(
        image.exists(),
        "no node image at {}: `make image` (or `make test`) builds it",
        image.display()
    );
    image
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
