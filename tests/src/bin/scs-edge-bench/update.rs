//! A node's OS update under TCG, from the real images (N from `make image`, N+1 from
//! `scripts/build-update-test-images.sh`), on one node running one server.
//!
//! - **import**: the agent picks up an `SCSEDGE-UPDATE` stick, verifies the bundle (TUF), stages
//!   its targets and writes the inactive slot through `systemd-sysupdate` — from "update stick
//!   found" to "release written into the inactive slot" in the agent's journal. **Floor**, on the
//!   same node, the same bundle on a second stick, before the import: `sha256sum` of the bundle,
//!   then one pass of `tar` over it decompressing the two partition images into the inactive slot
//!   with `dd conv=fsync` and writing the UKI to the ESP — the bytes read, hashed and written by the
//!   least any installer could do. Goal: ≤ 1.3×.
//! - **downtime**: the server's, from the drain's ACPI stop ("stopping the servers") to its domain
//!   started again on the new version ("domain started"), both from the journal (the boot's clock
//!   is the RTC the host sets, so the two boots' timestamps compare); its parts: drain, shutdown
//!   and boot to the agent, the agent to the server.
//! - **reboot to blessed**: from the reboot asked for ("rebooting into the new version") to the
//!   health gate unit finished with the commit (systemd's "Finished scs-edge-update-gate.service";
//!   the verdict is checked in the update record).

use base64::Engine as _;
use scs_edge_tests::bench::Record;
use scs_edge_tests::lab::{LabNode, default_image};
use scs_edge_tests::scratch_dir;
use scs_edge_tests::update_lab::{
    ReleaseDesk, UPDATE_LABEL, start_canary, version_with_patch, wait_judged,
};
use std::time::Duration;

const COMMAND: Duration = Duration::from_mins(10);
const UPDATE: Duration = Duration::from_mins(25);
const FLOOR_LABEL: &str = "BENCHFLOOR";

/// The inactive slot's partitions (labelled `_empty` until sysupdate names them) by their type,
/// the floor's decompression into them, and the UKI to the ESP, in one pass over the bundle.
const FLOOR: &str = r#"set -eu
for i in $(seq 60); do test -e /dev/disk/by-label/BENCHFLOOR && break; sleep 1; done
mkdir -p /run/floor && mount -o ro /dev/disk/by-label/BENCHFLOOR /run/floor
bundle=$(ls /run/floor/*.bundle)
slot() { lsblk -Pno PATH,PARTLABEL,PARTTYPE | awk -F'"' -v t="$1" '$4 == "_empty" && $6 == t {print $2; exit}'; }
export usr=$(slot 8484680c-9521-48c6-9c11-b0720656f69e) verity=$(slot 77ff5f63-e7b6-4633-acf4-1565b864c0e6)
test -b "$usr" && test -b "$verity"
ls /boot/EFI/Linux >/dev/null
t0=$(date +%s.%N)
sha256sum "$bundle" >/dev/null
t1=$(date +%s.%N)
tar -xf "$bundle" --to-command='case $TAR_FILENAME in
  *.usr.raw.gz) gzip -dc | dd of=$usr bs=4M conv=fsync status=none ;;
  *.usr-verity.raw.gz) gzip -dc | dd of=$verity bs=4M conv=fsync status=none ;;
  *.efi) cat > /boot/EFI/Linux/floor.efi && sync /boot/EFI/Linux/floor.efi ;;
  *) cat > /dev/null ;;
esac'
t2=$(date +%s.%N)
rm /boot/EFI/Linux/floor.efi
umount /run/floor
echo "$t0 $t1 $t2""#;

pub(crate) fn run(records: &mut Vec<Record>) {
    let work = scratch_dir("bench-update");
    let next = version_with_patch(1);
    let desk = ReleaseDesk::new(work.path());
    let bundle = desk.bundle(&next);
    let floor_stick = desk.stick_with(&bundle, FLOOR_LABEL);
    let update_stick = desk.stick_with(&bundle, UPDATE_LABEL);
    let bundle_mb = std::fs::metadata(&bundle).expect("bundle").len() as f64 / 1e6;

    let node = crate::image::boot_to_agent_ready(&default_image(), &work.path().join("node"));
    let canary = start_canary(&node, work.path(), COMMAND);

    node.plug_usb_stick("floor", &floor_stick)
        .expect("plug the floor stick");
    // The script travels as base64: one line on the console, and its `set -e` stays in its own bash.
    let script = base64::engine::general_purpose::STANDARD.encode(FLOOR);
    let floor = scs_edge_tests::node::sh(
        &node,
        &format!("echo {script} | base64 -d > /run/floor.sh && bash /run/floor.sh"),
        COMMAND,
    );
    node.unplug_usb_stick("floor").expect("unplug");
    let floor: Vec<f64> = floor
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(floor.len(), 3, "floor timestamps");
    let (hash, write) = (floor[1] - floor[0], floor[2] - floor[1]);

    let since = node.console.position();
    node.plug_usb_stick("update", &update_stick)
        .expect("plug the update stick");
    let status = wait_judged(&node, UPDATE, since, 1, &next);
    assert_eq!(
        status["record"]["last_outcome"]["result"], "committed",
        "{status}"
    );
    scs_edge_tests::node::sh(
        &node,
        &format!(
            "scs-edge-agent server wait {} --status ACTIVE --timeout 600 >/dev/null",
            canary.id
        ),
        COMMAND,
    );
    let before = journal(&node, "-1");
    let after = journal(&node, "0");
    let at = |log: &str, message: &str| -> f64 {
        log.lines()
            .find(|line| line.contains(message))
            .and_then(|line| line.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no \"{message}\" in the journal:\n{log}"))
    };
    let found = at(&before, "update stick found");
    let written = at(&before, "release written into the inactive slot");
    let staged = at(&before, "release verified and staged");
    let drain = at(&before, "stopping the servers");
    let reboot = at(&before, "rebooting into the new version");
    // The gate logs at the CLI's level (warnings); systemd's own lines say when it ran.
    let agent_up = at(&after, "Starting scs-edge-update-gate.service");
    let server_up = at(&after, "domain started");
    let committed = at(&after, "Finished scs-edge-update-gate.service");

    let import = written - found;
    let floor_total = hash + write;
    println!(
        "update import of a {bundle_mb:.0} MB bundle: {import:.1} s (verify + stage {:.1} s, slot write {:.1} s); floor {floor_total:.1} s (sha256sum {hash:.1} s, decompress + dd + UKI {write:.1} s)",
        staged - found,
        written - staged
    );
    println!(
        "server downtime {:.1} s: drain {:.1} s, shutdown + boot to the gate {:.1} s, gate start to the server's domain {:.1} s; reboot to blessed {:.1} s",
        server_up - drain,
        reboot - drain,
        agent_up - reboot,
        server_up - agent_up,
        committed - reboot
    );
    records.push(Record::compared(
        "OS update import from a stick (verify + stage + slot write)",
        import,
        "s",
        floor_total,
        "sha256sum of the bundle + decompress and dd of the slot images + UKI to the ESP, same node",
        "<= 1.3x",
    ));
    records.push(Record::compared(
        "OS update: server downtime (ACPI stop to its domain started on N+1)",
        server_up - drain,
        "s",
        agent_up - reboot,
        "shutdown and boot to the health gate alone",
        "-",
    ));
    records.push(Record::compared(
        "OS update: reboot to blessed (reboot asked to gate committed)",
        committed - reboot,
        "s",
        agent_up - reboot,
        "shutdown and boot to the health gate alone",
        "-",
    ));
}

/// The agent's and the gate's journal of boot `boot` (0 this one, -1 the one before) with
/// seconds-since-epoch timestamps.
fn journal(node: &LabNode, boot: &str) -> String {
    scs_edge_tests::node::sh(
        node,
        &format!(
            "journalctl -b {boot} -o short-unix --no-pager -u scs-edge-agent -u scs-edge-update-gate \
             | grep -E 'update stick found|verified and staged|written into the inactive slot|stopping the servers|rebooting into the new version|scs-edge-update-gate.service|domain started'"
        ),
        COMMAND,
    )
}
