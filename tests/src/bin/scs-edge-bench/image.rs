//! The node image: build time cold and cached, size raw and compressed, boot to agent READY.
//!
//! - **build, cold**: `scripts/build-image.sh` with mkosi's incremental and package caches removed
//!   (packages are downloaded again); **cached**: the same command again, forced, with both caches.
//!   The release agent is already built for both, so both time the image alone. The cold build is the
//!   baseline of the cached one.
//! - **size**: the raw image's length and the bytes it occupies (it is sparse), and the image
//!   compressed with `zstd -T0 -12` (what a download or a USB flash would carry). Goal: ≤ 600 MB
//!   compressed with k3s; k3s is not included here (it cannot be downloaded on this machine).
//! - **boot**: the image in QEMU under TCG (2 vCPUs, 3 GiB) with a site configuration over fw_cfg:
//!   from starting QEMU to the agent's READY=1 (provisioned, then started), against the moment the
//!   last of libvirtd, ovs-vswitchd, ovn-controller and ovn-northd became active (the platform the
//!   agent needs: the baseline). Goal: ≤ 60 s.

use scs_edge_tests::bench::Record;
use scs_edge_tests::lab::{LabNode, LabOptions, SiteDelivery, default_image, free_port};
use scs_edge_tests::scratch_dir;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_mins(15);

pub(crate) fn run(records: &mut Vec<Record>) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace");
    let image_dir = workspace.join("target/image");
    for cache in ["cache", "packages"] {
        let _ = std::fs::remove_dir_all(image_dir.join(cache));
    }
    let cold = build(workspace);
    let cached = build(workspace);
    println!("image build: cold {cold:.1} s, cached {cached:.1} s");
    records.push(Record::compared(
        "image build, cached (mkosi incremental + package cache)",
        cached,
        "s",
        cold,
        "cold build (no caches, packages downloaded)",
        "faster than cold",
    ));

    let image = default_image();
    let raw = std::fs::metadata(&image).expect("image").len();
    let used = allocated_bytes(&image);
    let compressed = image_dir.join("bench.raw.zst");
    let zstd = Command::new("zstd")
        .args(["-q", "-f", "-T0", "-12", "-o"])
        .arg(&compressed)
        .arg(&image)
        .status()
        .expect("zstd");
    assert!(zstd.success(), "zstd failed");
    let zst = std::fs::metadata(&compressed).expect("zst").len();
    let _ = std::fs::remove_file(&compressed);
    let mb = |bytes: u64| bytes as f64 / 1e6;
    println!(
        "image size: raw {:.0} MB ({:.0} MB allocated), zstd {:.0} MB",
        mb(raw),
        mb(used),
        mb(zst)
    );
    records.push(Record::compared(
        "image size, zstd -12 (without k3s)",
        mb(zst),
        "MB",
        mb(raw),
        "raw image (sparse file length)",
        "<= 600 MB with k3s",
    ));
    records.push(Record::compared(
        "image size, blocks the raw image occupies",
        mb(used),
        "MB",
        mb(raw),
        "raw image (sparse file length)",
        "-",
    ));

    boot(records);
}

/// Boots the image built last, twice: the first boot (provisioning included) and a reboot of the
/// same disk — what every update costs — each to the agent's READY, with systemd's own breakdown.
pub(crate) fn boot(records: &mut Vec<Record>) {
    let profile = boot_to_ready(&default_image());
    println!(
        "boot under TCG: platform services up {:.1} s, agent READY {:.1} s; reboot to READY {:.1} s",
        profile.first.platform, profile.first.ready, profile.reboot.ready
    );
    for (which, times) in [("first boot", &profile.first), ("reboot", &profile.reboot)] {
        println!(
            "{which}: {}\n{}\n{}\nCPU by unit:\n{}",
            times.systemd_analyze, times.critical_chain, times.blame, times.cpu
        );
    }
    records.push(Record::compared(
        "boot to agent READY under TCG (from QEMU start)",
        profile.first.ready,
        "s",
        profile.first.platform,
        "libvirtd, ovs-vswitchd, ovn-controller, ovn-northd all active",
        "<= 60 s",
    ));
    records.push(Record::compared(
        "reboot to agent READY under TCG (from `systemctl reboot`)",
        profile.reboot.ready,
        "s",
        profile.reboot.platform,
        "libvirtd, ovs-vswitchd, ovn-controller, ovn-northd all active",
        "<= 60 s",
    ));
}

fn build(workspace: &Path) -> f64 {
    let started = Instant::now();
    let status = Command::new(workspace.join("scripts/build-image.sh"))
        .env("SCS_EDGE_IMAGE_FORCE", "1")
        .env(
            "SCS_EDGE_AGENT",
            workspace.join("target/release/scs-edge-agent"),
        )
        .stdout(std::process::Stdio::null())
        .status()
        .expect("scripts/build-image.sh");
    assert!(status.success(), "image build failed");
    started.elapsed().as_secs_f64()
}

fn allocated_bytes(path: &Path) -> u64 {
    let output = Command::new("du")
        .args(["--block-size=1", "-s"])
        .arg(path)
        .output()
        .expect("du");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du output")
}

/// One boot, in seconds on the host's clock from the moment it began (QEMU started, or the reboot
/// was asked for), with what systemd says about it.
struct BootTimes {
    /// The last of the platform services the agent needs became active.
    platform: f64,
    /// The agent sent READY=1.
    ready: f64,
    /// `systemd-analyze time`: firmware, loader, kernel, initrd, userspace.
    systemd_analyze: String,
    /// `systemd-analyze critical-chain` of the agent.
    critical_chain: String,
    /// The slowest units (devices left out: udev lists dozens of aliases of each disk).
    blame: String,
    /// CPU time by unit: under TCG the cores are saturated while the node boots, so what a unit
    /// costs in CPU, not how long it waits, decides the boot time.
    cpu: String,
}

/// CPU seconds each unit used since the boot, most first, against the CPU time all cores spent
/// busy (the difference is the kernel's own threads and the initrd); then the jobs still running.
const CPU_BY_UNIT: &str = "{ systemctl list-units --all --plain --no-legend --type=service,mount,socket,scope | \
     awk '{print $1}' | xargs systemctl show -p Id -p CPUUsageNSec -- | \
     awk -F= '/^Id=/{id=$2} /^CPUUsageNSec=/{cpu=$2} \
              /^$/{if (cpu ~ /^[0-9]+$/ && cpu > 1e8) printf \"%7.2f s %s\\n\", cpu/1e9, id; id=\"\"; cpu=\"\"}'; \
     awk '/^cpu /{printf \"%7.2f s all CPUs busy (user+nice+system+irq+softirq)\\n\", ($2+$3+$4+$7+$8)/100}' /proc/stat; } | sort -rn | head -n 25; \
     systemctl list-jobs --no-pager | head -n 8";

/// Boots `image` as a new site in `work_dir` (its site configuration over fw_cfg, a region it
/// never reaches) and waits for the agent's READY.
pub(crate) fn boot_to_agent_ready(image: &Path, work_dir: &Path) -> LabNode {
    let site = format!(
        "[site]\nname = \"bench\"\nregion_url = \"https://region.example.net\"\n\
         join_token = \"bench\"\nca_fingerprint = \"sha256:{}\"\n",
        "cd".repeat(32)
    );
    let node = LabNode::boot(&LabOptions::new(
        image.to_path_buf(),
        work_dir.to_path_buf(),
        free_port(),
        SiteDelivery::FwCfg(site),
    ))
    .expect("boot");
    node.console
        .wait_for("root@scs-edge", BOOT)
        .expect("login prompt");
    node.wait_agent_ready(BOOT).expect("agent READY");
    node
}

struct BootProfile {
    first: BootTimes,
    reboot: BootTimes,
}

const LOGGED_IN: &str = "(automatic login)";

/// Boots the image and reboots it once. The instants come from systemd's own monotonic timestamps
/// (`ActiveEnterTimestampMonotonic`, microseconds since the kernel started), placed on the host's
/// clock through one reading of `/proc/uptime` whose answer the host timestamps as it arrives
/// (error: one console round trip).
fn boot_to_ready(image: &Path) -> BootProfile {
    let work = scratch_dir("bench-image-boot");
    let mut node = boot_to_agent_ready(image, work.path());
    let first = boot_times(&node, node.started);

    let since = node.console.position();
    let rebooting = Instant::now();
    node.console.send("systemctl reboot").expect("reboot");
    let logged_in = scs_edge_tests::wait::within(BOOT, || {
        let text = node.console.text();
        text.get(since..)?.find(LOGGED_IN).map(|at| since + at)
    })
    .expect("the node logs in again after the reboot");
    node.console
        .wait_for_since(logged_in, "root@scs-edge", BOOT)
        .expect("the login shell after the reboot");
    node.console.new_session();
    node.wait_agent_ready(BOOT)
        .expect("agent READY after the reboot");
    let reboot = boot_times(&node, rebooting);
    node.kill();
    BootProfile { first, reboot }
}

/// Reads the current boot's unit timestamps and systemd's breakdown; `began` is when this boot
/// began on the host's clock.
fn boot_times(node: &LabNode, began: Instant) -> BootTimes {
    let units = [
        "scs-edge-agent.service",
        "libvirtd.service",
        "ovs-vswitchd.service",
        "ovn-controller.service",
        "ovn-northd.service",
    ];
    let (_, output) = node
        .console
        .shell(
            &format!(
                "cut -d' ' -f1 /proc/uptime; for u in {}; do systemctl show -P ActiveEnterTimestampMonotonic $u; done",
                units.join(" ")
            ),
            BOOT,
        )
        .expect("timestamps");
    let answered = began.elapsed().as_secs_f64();
    let numbers: Vec<f64> = output
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(numbers.len(), units.len() + 1, "timestamps: {output}");
    let kernel_start = answered - numbers[0];
    let at = |monotonic_us: f64| kernel_start + monotonic_us / 1e6;
    let ready = at(numbers[1]);
    let platform = numbers[2..].iter().copied().fold(0.0, f64::max);
    let analyze = |command: &str| {
        node.console.shell(command, BOOT).map_or_else(
            |err| format!("{command}: {err}"),
            |(_, out)| out.trim().to_owned(),
        )
    };
    BootTimes {
        platform: at(platform),
        ready,
        systemd_analyze: analyze("systemd-analyze time --no-pager"),
        critical_chain: analyze(
            "systemd-analyze critical-chain --no-pager scs-edge-agent.service | cat",
        ),
        blame: analyze("systemd-analyze blame --no-pager | grep -v '[.]device$' | head -n 20"),
        cpu: analyze(CPU_BY_UNIT),
    }
}
