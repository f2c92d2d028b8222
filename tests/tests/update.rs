//! OS updates of whole nodes in QEMU, from the real images, delivered as an edge fleet delivers
//! them. Two real sites and five simulated ones (`scs_edge_tests::fleet_sim`) belong to a real
//! region on the host, which publishes N+1 and N+2 (`scripts/build-update-test-images.sh`, signed
//! at the test's own release desk, `scs_edge_tests::update_lab`) and rolls them out in waves:
//!
//! - **Site A**, the canary, is provisioned over fw_cfg and reaches the region through a relay the
//!   test cuts mid-download; it installs N+1 with the power failing twice on the way, keeps its
//!   server, and rolls the bad N+2 back by itself, which halts the rollout before any other site is
//!   touched. Sticks plugged over QMP — the air-gapped path — then meet the version that failed.
//! - **Site B** is a freshly flashed node: its first boot finds no site configuration and waits,
//!   an invalid stick changes nothing, its own stick provisions it. It shows what the image
//!   promises (verity-protected read-only `/usr`, A/B partitions, a blessed boot, no package
//!   manager, the release root of trust) and takes N+1 beside A, with its server.
//!
//! N+1 goes to both real sites first, then to two simulated sites once both soaked, then to the
//! last three; N+2 goes to A alone first, and halts there. Every boot under TCG costs minutes, so
//! the two machines serve all of these assertions, boot side by side and update side by side (a
//! real site in a later wave would only wait for the canaries, in minutes of CI; that later waves
//! wait is shown by the simulated sites here and in `region_rollouts.rs`). What needs no real node
//! (resuming with a fixed release, a whole wave offline, windows, the switch, the manual wave) is
//! the subject of `region_rollouts.rs` over simulated sites alone; a tampered image is
//! `image.rs`'.

use scs_edge_tests::fleet_sim::{Behaviour, SimSite};
use scs_edge_tests::lab::{
    LabNode, LabOptions, SiteDelivery, default_image, free_port, make_site_stick,
};
use scs_edge_tests::region::{RegionOptions, RegionProcess, TcpRelay};
use scs_edge_tests::update_lab::{
    LOGGED_IN, ReleaseDesk, UPDATE_LABEL, start_canary, version_with_patch, wait_judged,
};
use scs_edge_tests::{LogsOnFailure, scratch_dir};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A boot under TCG on two busy cores, first or not: minutes.
const BOOT: Duration = Duration::from_mins(15);
const COMMAND: Duration = Duration::from_mins(5);
/// Download, import, slot write, drain, reboot and health gate.
const UPDATE: Duration = Duration::from_mins(25);
/// The canary: provisioned over fw_cfg, behind the relay.
const SITE_A: &str = "site-a";
/// The freshly flashed node, provisioned from a stick, a canary of N+1 beside A.
const SITE_B: &str = "site-b";
/// Simulated sites of the second wave.
const EARLY_SIMULATED: [&str; 2] = ["branch-1", "branch-2"];
/// Simulated sites of the last wave.
const LATER_SIMULATED: [&str; 3] = ["branch-3", "branch-4", "branch-5"];

/// A site's configuration: the region at `port` on the host as QEMU's user network shows it
/// (10.0.2.2), the site's one-time token and the region CA's fingerprint.
fn site_toml(site: &str, region_url: &str, token: &str, region: &RegionProcess) -> String {
    format!(
        "[site]\nname = \"{site}\"\nregion_url = \"{region_url}\"\n\
         join_token = \"{token}\"\nca_fingerprint = \"{}\"\n",
        region.fingerprint
    )
}

/// Adds `site` to the region with `labels` (`key=value`) and returns its join token.
fn enrol(region: &RegionProcess, site: &str, labels: &[&str]) -> String {
    let mut add = vec!["site", "add", site];
    for label in labels {
        add.extend(["--label", label]);
    }
    region.cli_ok(&add);
    region.add_site_with_token(site)
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

fn update_status(node: &LabNode) -> Value {
    serde_json::from_str(&sh(node, "scs-edge-agent update status")).expect("status JSON")
}

fn rollout(region: &RegionProcess, name: &str) -> Value {
    let (status, body) = region.api_get(&format!("/api/v1/rollouts/{name}"), None);
    assert_eq!(status, 200, "{body}");
    body
}

fn site_state(rollout: &Value, site: &str) -> String {
    rollout["progress"]["sites"]
        .as_array()
        .and_then(|sites| sites.iter().find(|s| s["site"] == site))
        .map_or_else(String::new, |s| {
            s["state"].as_str().unwrap_or_default().to_owned()
        })
}

/// Creates rollout `name` of `version` in `waves`: (name, the label `key=value` it selects —
/// every site left without one —, soak seconds).
fn create_rollout(
    region: &RegionProcess,
    dir: &Path,
    name: &str,
    version: &str,
    waves: &[(&str, Option<&str>, u64)],
) {
    let waves: Vec<Value> = waves
        .iter()
        .map(|(wave, label, soak)| {
            let mut spec = serde_json::json!({"name": wave, "soak_secs": soak});
            if let Some((key, value)) = label.and_then(|label| label.split_once('=')) {
                spec["selector"] = serde_json::json!({ key: value });
            }
            spec
        })
        .collect();
    let spec = dir.join(format!("{name}.json"));
    std::fs::write(
        &spec,
        serde_json::json!({
            "name": name,
            "target_version": version,
            "max_parallel": 4,
            "offline_deadline_secs": 3600,
            "waves": waves,
        })
        .to_string(),
    )
    .expect("spec");
    region.cli_ok(&["rollout", "create", "--file", &spec.display().to_string()]);
}

/// The generation of the desired state the region holds for each of `sites`.
fn desired_generations(region: &RegionProcess, sites: &[&str]) -> Vec<(String, Value)> {
    sites
        .iter()
        .map(|site| {
            (
                (*site).to_owned(),
                region.site_json(site)["site"]["desired"]["generation"].clone(),
            )
        })
        .collect()
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

/// A first boot without site configuration waits and says where it looks; waiting means nothing
/// half-done. An invalid stick gets a clear message naming the key and still changes nothing; the
/// site's own stick (the region at `https_url`, `token`) provisions the node and its agent comes
/// up.
fn provision_from_a_stick(
    node: &LabNode,
    work: &Path,
    site: &str,
    (region, https_url, token): (&RegionProcess, &str, &str),
) {
    let message = provisioning_message(node, "SCS Edge: waiting for site configuration");
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
    assert_ne!(
        sh(node, "systemctl is-active scs-edge-agent.service || true"),
        "active"
    );
    assert_eq!(
        sh(
            node,
            "systemctl is-active scs-edge-provision.service || true"
        ),
        "activating"
    );
    let nothing_written = |node: &LabNode| {
        for path in [
            "/etc/scs-edge/agent.toml",
            "/etc/scs-edge/site.toml",
            "/var/lib/scs-edge/provisioned.json",
            "/etc/systemd/network/10-scs-edge-management.network",
        ] {
            assert_ne!(status(node, &format!("test -e {path}")), 0, "{path} exists");
        }
    };
    nothing_written(node);
    assert!(
        sh(
            node,
            "systemctl show -P StatusText scs-edge-provision.service"
        )
        .contains("waiting"),
    );

    // An invalid stick: a clear message naming the key, the secret token not in it.
    let bad = work.join("bad-stick.img");
    let plain_http = https_url.replacen("https://", "http://", 1);
    make_site_stick(&bad, &site_toml(site, &plain_http, token, region)).expect("stick");
    node.plug_usb_stick("stick0", &bad).expect("plug");
    let invalid = provisioning_message(node, "SCS Edge: site configuration invalid");
    assert!(invalid.contains("site.region_url"), "{invalid}");
    assert!(invalid.contains("https://"), "{invalid}");
    assert!(!invalid.contains(token), "the token is a secret: {invalid}");
    nothing_written(node);

    node.unplug_usb_stick("stick0").expect("unplug");
    let good = work.join("good-stick.img");
    make_site_stick(&good, &site_toml(site, https_url, token, region)).expect("stick");
    node.plug_usb_stick("stick1", &good).expect("plug");
    node.console
        .wait_for(
            &format!(
                "SCS Edge: provisioned site {site} with hardware profile qemu-q35 (from SCSEDGE filesystem)"
            ),
            BOOT,
        )
        .expect("provisioned from the stick");
    node.unplug_usb_stick("stick1").expect("unplug");
    node.wait_agent_ready(BOOT).expect("agent READY");
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

/// What the image promises on a node that came up as `site`: its services running, `/usr` the
/// read-only verity device, slot A as built and slot B empty, the data partition grown into the
/// disk, the boot blessed, no compiler or package manager, the release root of trust baked in byte
/// for byte, and the agent's API through the management NIC.
fn assert_image_basics(node: &LabNode, site: &str) {
    for unit in [
        "libvirtd.service",
        "ovsdb-server.service",
        "ovs-vswitchd.service",
        "ovn-controller.service",
        "ovn-northd.service",
    ] {
        assert_eq!(
            sh(node, &format!("systemctl is-active {unit} || true")),
            "active",
            "{unit}"
        );
    }

    assert_eq!(
        sh(node, "findmnt -no SOURCE,FSTYPE /usr"),
        "/dev/mapper/usr squashfs"
    );
    let options = sh(node, "findmnt -no OPTIONS /usr");
    assert!(options.split(',').any(|o| o == "ro"), "{options}");
    let dm_uuid = sh(
        node,
        "cat /sys/block/$(basename $(readlink -f /dev/mapper/usr))/dm/uuid",
    );
    assert!(dm_uuid.starts_with("CRYPT-VERITY-"), "{dm_uuid}");
    assert!(sh(node, "cat /proc/cmdline").contains("usrhash="));
    let (touch, refusal) = node
        .console
        .shell("touch /usr/bin/scs-edge-probe 2>&1", COMMAND)
        .expect("touch");
    assert_ne!(touch, 0, "writing to /usr must fail");
    assert!(refusal.contains("Read-only file system"), "{refusal}");

    let labels = sh(node, "lsblk -rno PARTLABEL /dev/vda");
    let labels: Vec<&str> = labels.lines().collect();
    assert_eq!(
        labels.iter().filter(|l| **l == "_empty").count(),
        3,
        "slot B is empty: {labels:?}"
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
        sh(node, "findmnt -no SOURCE / | xargs lsblk -no PARTLABEL"),
        "scs-edge-data"
    );
    let root_bytes: u64 = sh(node, "findmnt -bno SIZE /").parse().expect("size");
    assert!(
        root_bytes > 10 << 30,
        "the data partition grows into the 20 GiB disk: {root_bytes}"
    );

    // Boot assessment: the UKI booted with a try counter, and once the agent was READY
    // (boot-complete.target) systemd-bless-boot marked this boot good.
    scs_edge_tests::wait::within(COMMAND, || {
        let state = sh(node, "systemctl is-active systemd-bless-boot.service || true");
        (state == "active").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "systemd-bless-boot did not run: {}",
            sh(
                node,
                "systemctl status --no-pager systemd-bless-boot.service boot-complete.target || true"
            )
        )
    });
    assert_eq!(
        sh(node, "/usr/lib/systemd/systemd-bless-boot status"),
        "good"
    );

    assert_eq!(
        status(
            node,
            "(for c in cc gcc rustc apt apt-get; do command -v $c && exit 1; done; test ! -e /var/lib/dpkg/status)"
        ),
        0,
        "the node carries a compiler or package-manager state"
    );

    let metadata = default_image().with_file_name("releases").join("metadata");
    let (_, newest_root) = scs_edge_release::keys::latest_root(&metadata)
        .expect("the release repository build-image made");
    let expected = sha256_hex(&std::fs::read(&newest_root).expect("read root"));
    let baked = sh(
        node,
        "sha256sum /usr/share/scs-edge/update/root.json | cut -d' ' -f1",
    );
    assert_eq!(baked, expected, "{}", newest_root.display());

    assert!(sh(node, "cat /etc/scs-edge/agent.toml").contains("physnet1"));
    let stamp: Value =
        serde_json::from_str(&sh(node, "cat /var/lib/scs-edge/provisioned.json")).expect("stamp");
    assert_eq!(stamp["profile"], "qemu-q35", "{stamp}");
    assert_eq!(stamp["site"], site, "{stamp}");
    let client = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let url = format!("{}/identity/v3", node.api_url());
    let versions: Value =
        scs_edge_tests::wait::until("the agent's API through the port forward", COMMAND, || {
            let response = client.get(&url).send().ok()?;
            response
                .status()
                .is_success()
                .then(|| response.json::<Value>().ok())?
        });
    assert_eq!(versions["version"]["id"], "v3.14", "{versions}");
}

/// Waits until the region has `site`'s first report, from version `version`.
fn wait_first_report(region: &RegionProcess, site: &str, version: &semver::Version) {
    scs_edge_tests::wait::until(
        &format!("{site}'s first report in the region"),
        BOOT,
        || (region.site_json(site)["site"]["versions"]["os"] == version.to_string()).then_some(()),
    );
}

/// The node on `version` from the slot labelled with it, its boot blessed, `server` ACTIVE on an
/// intact disk whose checksum was `disk_before`.
fn assert_updated_with_server(
    node: &LabNode,
    version: &semver::Version,
    server: &scs_edge_tests::update_lab::Canary,
    disk_before: &str,
) {
    assert_eq!(
        sh(node, "sed -n 's/^IMAGE_VERSION=//p' /usr/lib/os-release").trim_matches('"'),
        version.to_string()
    );
    let usr_slot = sh(node, "lsblk -rnso PARTLABEL /dev/mapper/usr");
    assert!(
        usr_slot
            .lines()
            .any(|label| label == format!("scs-edge_{version}")),
        "/usr runs from the slot labelled with the new version: {usr_slot}"
    );
    assert_eq!(
        sh(node, "/usr/lib/systemd/systemd-bless-boot status"),
        "good"
    );
    sh(
        node,
        &format!(
            "scs-edge-agent server wait {} --status ACTIVE --timeout 600 >/dev/null",
            server.id
        ),
    );
    assert_eq!(
        sh(node, &format!("sha256sum {} | cut -d' ' -f1", server.disk)),
        disk_before,
        "the server's disk is intact"
    );
}

#[test]
fn two_sites_take_releases_from_their_region_in_waves_keep_their_servers_and_a_bad_canary_halts_the_rollout()
 {
    let work = scratch_dir("update");
    let _logs = LogsOnFailure::new(work.path(), "update");
    let started = std::time::Instant::now();
    // Where the minutes go, in the output of a failed run (and with --no-capture).
    let milestone = |what: &str| eprintln!("[{:7.1} s] {what}", started.elapsed().as_secs_f64());
    let n = version_with_patch(0);
    let next = version_with_patch(1);
    let broken = version_with_patch(2);
    let desk = ReleaseDesk::new(work.path());
    let region = RegionProcess::start(
        "update-region",
        RegionOptions {
            // The agent's heartbeat interval.
            expected_interval_secs: 10,
            extra: format!("{}\n[rollouts]\ntick_millis = 1000\n", desk.region_config()),
            extra_names: vec!["10.0.2.2".into()],
            ..RegionOptions::default()
        },
    );
    let relay = TcpRelay::start(region.port());
    // The real sites are `kind=qemu`, the canary of N+2 is A alone (`ring=canary`).
    let token_a = enrol(&region, SITE_A, &["kind=qemu", "ring=canary"]);
    let token_b = enrol(&region, SITE_B, &["kind=qemu"]);
    let simulated: Vec<SimSite> = EARLY_SIMULATED
        .iter()
        .map(|site| (site, &["ring=early"][..]))
        .chain(LATER_SIMULATED.iter().map(|site| (site, &[][..])))
        .map(|(site, labels)| {
            let token = enrol(&region, site, labels);
            SimSite::join(
                &region,
                site,
                &token,
                &n.to_string(),
                Behaviour::Good,
                Duration::from_secs(2),
            )
        })
        .collect();
    let (early_sims, later_sims) = simulated.split_at(EARLY_SIMULATED.len());

    // Both machines boot side by side: A with its configuration over fw_cfg, B with none.
    let options_a = LabOptions::new(
        default_image(),
        work.path().join("node-a"),
        free_port(),
        SiteDelivery::FwCfg(site_toml(
            SITE_A,
            &format!("https://10.0.2.2:{}", relay.port),
            &token_a,
            &region,
        )),
    );
    let mut node_a = LabNode::boot(&options_a).expect("boot A on N");
    let work_b = work.path().join("node-b");
    let options_b = LabOptions::new(
        default_image(),
        work_b.clone(),
        free_port(),
        SiteDelivery::Nothing,
    );
    let mut node_b = LabNode::boot(&options_b).expect("boot B on N");

    milestone("both machines booting");
    provision_from_a_stick(
        &node_b,
        &work_b,
        SITE_B,
        (
            &region,
            &format!("https://10.0.2.2:{}", region.port()),
            &token_b,
        ),
    );
    milestone("B provisioned from its stick");
    assert_image_basics(&node_b, SITE_B);
    wait_first_report(&region, SITE_B, &n);

    node_a
        .console
        .wait_for("root@scs-edge", BOOT)
        .expect("console login");
    node_a.wait_agent_ready(BOOT).expect("agent READY on N");
    assert_eq!(update_status(&node_a)["running"], n.to_string());
    wait_first_report(&region, SITE_A, &n);

    milestone("A and B on N, reporting");
    // A server on each site: the tiny guest from a stick, nested under TCG beside a second
    // machine — minutes.
    let server_a = start_canary(&node_a, work.path(), BOOT);
    let disk_a = sh(
        &node_a,
        &format!("sha256sum {} | cut -d' ' -f1", server_a.disk),
    );
    let server_b = start_canary(&node_b, &work_b, BOOT);
    let disk_b = sh(
        &node_b,
        &format!("sha256sum {} | cut -d' ' -f1", server_b.disk),
    );

    // N+1 published and rolled out in three waves: the real sites A and B; two simulated sites
    // once both soaked; the last three once those soaked.
    let next_bundle = desk.bundle(&next);
    region.cli_ok(&["release", "publish", &next_bundle.display().to_string()]);
    let release = region.cli_ok(&["release", "show", &next.to_string()]);
    let release_bytes: u64 =
        serde_json::from_str::<Value>(&region.cli_ok(&["release", "list", "--json"]))
            .expect("release list")
            .as_array()
            .and_then(|list| list.iter().find(|r| r["version"] == next.to_string()))
            .and_then(|r| r["bytes"].as_u64())
            .unwrap_or_else(|| panic!("the release's size: {release}"));
    let before_download = relay.bytes_down();
    let since_b = node_b.console.position();
    milestone("servers ACTIVE on A and B; N+1 published");
    create_rollout(
        &region,
        work.path(),
        "to-next",
        &next.to_string(),
        &[
            ("canary", Some("kind=qemu"), 10),
            ("early", Some("ring=early"), 10),
            ("rest", None, 0),
        ],
    );

    // A's WAN drops mid-download: connections reset, nothing gets through for a while.
    scs_edge_tests::wait::until("A's download under way", UPDATE, || {
        (relay.bytes_down() - before_download > release_bytes * 2 / 5).then_some(())
    });
    relay.cut();
    let cut_at = relay.bytes_down() - before_download;
    std::thread::sleep(Duration::from_secs(5)); // the outage itself, not a wait for anything
    relay.restore();
    scs_edge_tests::wait::within(UPDATE, || {
        (update_status(&node_a)["record"]["phase"]["phase"] == "installing").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "A did not write the slot; rollout: {}\nconsole:\n{}",
            rollout(&region, "to-next"),
            node_a.console.tail(40)
        )
    });
    let downloaded = relay.bytes_down() - before_download;
    // The figure for the record: what the download cost on the link, against the release's size.
    eprintln!(
        "N+1 through the relay: {downloaded} bytes for a {release_bytes}-byte release, cut after {cut_at}"
    );
    assert!(
        downloaded < release_bytes + release_bytes * 3 / 20,
        "the download resumed where it broke off ({cut_at} bytes before the cut): \
         {downloaded} bytes relayed for a {release_bytes}-byte release"
    );
    let waiting = rollout(&region, "to-next");
    for site in EARLY_SIMULATED.into_iter().chain(LATER_SIMULATED) {
        assert_eq!(
            site_state(&waiting, site),
            "pending",
            "the later waves wait for the canaries: {waiting}"
        );
    }

    // Power cut while A's slot is written: N still runs, the half-written slot is not used.
    node_a.power_cycle(&options_a).expect("power on again");
    node_a
        .console
        .wait_for(LOGGED_IN, BOOT)
        .expect("boots after the power cut");
    node_a
        .console
        .wait_for("root@scs-edge", BOOT)
        .expect("the login shell");
    node_a.console.new_session();
    node_a
        .wait_agent_ready(BOOT)
        .expect("agent READY after the power cut");
    assert_eq!(update_status(&node_a)["running"], n.to_string());
    // N's entry was blessed on its first boot: it has no counter any more ("clean").
    assert_eq!(
        sh(&node_a, "/usr/lib/systemd/systemd-bless-boot status"),
        "clean",
        "N's own, blessed entry booted"
    );
    // The agent writes the staged release again from the start and reboots into it. Power cut
    // again, right after the new kernel started: the next boot takes another of its tries.
    let since = node_a.console.position();
    node_a
        .console
        .wait_for_since(since, "EFI stub: Loaded initrd", UPDATE)
        .expect("the reboot into N+1 started");
    node_a.power_cycle(&options_a).expect("power on again");
    milestone("A: power cut again, after the kernel of N+1 started");
    let status_a = wait_judged(&node_a, UPDATE, 0, 1, &next);
    assert_eq!(status_a["running"], next.to_string(), "{status_a}");
    assert_eq!(
        status_a["record"]["last_outcome"]["result"], "committed",
        "{status_a}"
    );
    assert_updated_with_server(&node_a, &next, &server_a, &disk_a);

    milestone("A committed N+1");
    // B took N+1 meanwhile, with one reboot.
    let status_b = wait_judged(&node_b, UPDATE, since_b, 1, &next);
    assert_eq!(status_b["running"], next.to_string(), "{status_b}");
    assert_eq!(
        status_b["record"]["last_outcome"]["result"], "committed",
        "{status_b}"
    );
    assert_updated_with_server(&node_b, &next, &server_b, &disk_b);

    milestone("B committed N+1");
    // The rollout completes with every site on N+1, each wave offered after the one before.
    let done = scs_edge_tests::wait::within(UPDATE, || {
        let shown = rollout(&region, "to-next");
        (shown["progress"]["state"] == "completed").then_some(shown)
    })
    .unwrap_or_else(|| panic!("to-next did not complete: {}", rollout(&region, "to-next")));
    for site in [SITE_A, SITE_B]
        .into_iter()
        .chain(EARLY_SIMULATED)
        .chain(LATER_SIMULATED)
    {
        assert_eq!(site_state(&done, site), "committed", "{site}: {done}");
    }
    for site in &simulated {
        assert_eq!(site.running(), next.to_string(), "{}", site.site);
        assert_eq!(
            site.offers_of(&next.to_string()).len(),
            1,
            "{} was offered N+1 once",
            site.site
        );
    }
    let early_committed = early_sims
        .iter()
        .filter_map(|site| site.committed_at(&next.to_string()))
        .max()
        .expect("the second wave's simulated sites committed");
    for site in later_sims {
        let offered = site.offers_of(&next.to_string())[0];
        assert!(
            offered > early_committed,
            "{} was offered N+1 at {offered}, before the second wave committed ({early_committed})",
            site.site
        );
    }
    for site in [SITE_A, SITE_B] {
        assert_eq!(
            region.site_json(site)["site"]["versions"]["os"],
            next.to_string(),
            "{site}"
        );
    }
    // B is done with: what follows needs A alone, and an idle machine under TCG still costs CPU.
    node_b.kill();
    milestone("to-next completed");
    // N+2 cannot pass its gate (its ovn-controller never starts): the canary rolls back by itself,
    // the rollout halts, and no other site is offered it.
    sh(
        &node_a,
        "printf '\\n[update]\\ngate_window_secs = 150\\n' >> /etc/scs-edge/agent.toml",
    );
    let broken_bundle = desk.bundle(&broken);
    region.cli_ok(&["release", "publish", &broken_bundle.display().to_string()]);
    let others: Vec<&str> = std::iter::once(SITE_B)
        .chain(EARLY_SIMULATED)
        .chain(LATER_SIMULATED)
        .collect();
    let generations = desired_generations(&region, &others);
    let since = node_a.console.position();
    create_rollout(
        &region,
        work.path(),
        "to-broken",
        &broken.to_string(),
        &[("canary", Some("ring=canary"), 10), ("rest", None, 0)],
    );
    milestone("to-broken created");
    // Two boots: into N+2, whose gate fails, and back into N+1.
    let status = wait_judged(&node_a, UPDATE, since, 2, &broken);
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
    milestone("A rolled N+2 back");
    let halted = scs_edge_tests::wait::within(COMMAND, || {
        let shown = rollout(&region, "to-broken");
        (shown["progress"]["state"] == "halted").then_some(shown)
    })
    .unwrap_or_else(|| panic!("to-broken did not halt: {}", rollout(&region, "to-broken")));
    let reason = halted["progress"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(SITE_A) && reason.contains("rolled back"),
        "the halt names the canary and its rollback: {halted}"
    );
    assert_eq!(site_state(&halted, SITE_A), "rolled back", "{halted}");
    assert_eq!(
        desired_generations(&region, &others),
        generations,
        "no other site was offered N+2"
    );
    for site in &simulated {
        assert!(
            site.offers_of(&broken.to_string()).is_empty(),
            "{}",
            site.site
        );
    }
    sh(
        &node_a,
        &format!(
            "scs-edge-agent server wait {} --status ACTIVE --timeout 600 >/dev/null",
            server_a.id
        ),
    );
    // The stick an operator carries to an air-gapped site comes from the region (`rollout
    // bundle`): its metadata is the mirror's, as fresh as what the node already saw online. (A
    // bundle from the release desk carries an older timestamp than the region's re-signed one,
    // and the node refuses it as a rollback of its metadata.)
    let exported = work.path().join("to-broken.bundle");
    region.cli_ok(&[
        "rollout",
        "bundle",
        "to-broken",
        "-o",
        &exported.display().to_string(),
    ]);
    let broken_stick = desk.stick_with(&exported, UPDATE_LABEL);

    // Not retried: a stick with the same release is refused and counted, nothing is written.
    // (The node may have refused the region's offer of it once already, between its rollback and
    // the region taking the offer back: counted from here.)
    let refusals = |status: &Value| status["record"]["refused"]["failed_before"].as_u64();
    let before = refusals(&update_status(&node_a)).unwrap_or(0);
    node_a
        .plug_usb_stick("update2b", &broken_stick)
        .expect("plug the N+2 stick");
    let stick_refused = |status: &Value| {
        let last = &status["record"]["last_refusal"];
        refusals(status).is_some_and(|count| count > before)
            && last["kind"] == "failed_before"
            && !last["source"]
                .as_str()
                .unwrap_or("https://")
                .starts_with("https://")
    };
    let refused = scs_edge_tests::wait::within(COMMAND, || {
        Some(update_status(&node_a)).filter(stick_refused)
    })
    .unwrap_or_else(|| {
        panic!(
            "the stick with the failed version was not refused: {}\nconsole:\n{}",
            update_status(&node_a),
            node_a.console.tail(40)
        )
    });
    assert_eq!(refused["record"]["phase"]["phase"], "idle", "{refused}");
    let metrics = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
        .get(format!("{}/metrics", node_a.api_url()))
        .send()
        .and_then(reqwest::blocking::Response::text)
        .expect("/metrics through the port forward");
    let counted = refusals(&refused).unwrap_or_default();
    assert!(
        metrics.contains(&format!(
            "scs_edge_update_refusals_total{{kind=\"failed_before\"}} {counted}"
        )) || metrics.contains(&format!(
            "scs_edge_update_refusals{{kind=\"failed_before\"}} {counted}"
        )),
        "refusals are in /metrics: {}",
        metrics
            .lines()
            .filter(|line| line.starts_with("scs_edge_update"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    node_a.unplug_usb_stick("update2b").expect("unplug");

    // An explicit retry clears it: the release is verified again and its write into the slot
    // begins. (That the node then reboots into it and rolls back again was shown above; the test
    // ends here rather than pay three more boots.)
    milestone("the stick with N+2 refused");
    sh(&node_a, &format!("scs-edge-agent update retry {broken}"));
    let since = node_a.console.position();
    node_a
        .plug_usb_stick("update2c", &broken_stick)
        .expect("plug for the retry");
    scs_edge_tests::wait::within(UPDATE, || {
        // A short write can be over, and the node rebooting, between two looks.
        let rebooting = node_a
            .console
            .text()
            .get(since..)
            .is_some_and(|text| text.contains("EFI stub: Loaded initrd"));
        if rebooting {
            return Some(());
        }
        let (code, output) = node_a
            .console
            .shell("scs-edge-agent update status", COMMAND)
            .ok()?;
        let phase = serde_json::from_str::<Value>(output.trim())
            .ok()
            .filter(|_| code == 0)
            .map(|status| status["record"]["phase"]["phase"].clone());
        let written = phase.is_some_and(|phase| {
            ["installing", "installed", "rebooting"].contains(&phase.as_str().unwrap_or_default())
        });
        written.then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the retried release was not written within {UPDATE:?}: {}\nconsole:\n{}",
            update_status(&node_a),
            node_a.console.tail(60)
        )
    });
    milestone("the retried N+2 is being written");
    node_a.kill();
}
