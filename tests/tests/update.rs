//! OS updates of a whole node in QEMU, from the real images, delivered as an edge fleet delivers
//! them: version N (`make image`) boots, joins a real region on the host and runs a server; the
//! region publishes N+1 and N+2 (`scripts/build-update-test-images.sh`, signed at the test's own
//! release desk, `scs_edge_tests::update_lab`) and rolls them out in waves with simulated sites
//! (`scs_edge_tests::fleet_sim`) behind the node as the later wave. The node downloads from the
//! region over mTLS through a relay the test cuts mid-download, installs with the power failing
//! twice on the way, and rolls a bad canary back by itself, which halts the rollout before any
//! other site is touched. Sticks plugged over QMP — the air-gapped path — then meet the version
//! that failed. One machine serves every assertion: each boot under TCG costs minutes.

use scs_edge_tests::fleet_sim::{Behaviour, SimSite};
use scs_edge_tests::lab::{LabNode, LabOptions, SiteDelivery, default_image, free_port};
use scs_edge_tests::region::{RegionOptions, RegionProcess, TcpRelay};
use scs_edge_tests::scratch_dir;
use scs_edge_tests::update_lab::{
    LOGGED_IN, ReleaseDesk, UPDATE_LABEL, start_canary, version_with_patch, wait_judged,
};
use serde_json::Value;
use std::time::Duration;

/// A boot under TCG on two busy cores, first or not: minutes.
const BOOT: Duration = Duration::from_mins(15);
const COMMAND: Duration = Duration::from_mins(5);
/// Download, import, slot write, drain, reboot and health gate.
const UPDATE: Duration = Duration::from_mins(25);
/// The node's site and the simulated sites of the later wave.
const NODE_SITE: &str = "update-site";
const SIMULATED: [&str; 4] = ["branch-1", "branch-2", "branch-3", "branch-4"];

/// The node's site configuration: the region through the relay, as QEMU's user network shows the
/// host (10.0.2.2), its one-time token and the region CA's fingerprint.
fn site_toml(relay: &TcpRelay, token: &str, region: &RegionProcess) -> String {
    format!(
        "[site]\nname = \"{NODE_SITE}\"\nregion_url = \"https://10.0.2.2:{}\"\n\
         join_token = \"{token}\"\nca_fingerprint = \"{}\"\n",
        relay.port, region.fingerprint
    )
}

/// Runs `command` on the console and returns its trimmed output, failing on a non-zero status.
fn sh(node: &LabNode, command: &str) -> String {
    scs_edge_tests::node::sh(node, command, COMMAND)
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

/// Creates rollout `name` of `version`: the node's site (`ring=canary`) first, healthy for 10 s
/// after its commit, then the simulated sites.
fn create_rollout(region: &RegionProcess, dir: &std::path::Path, name: &str, version: &str) {
    let spec = dir.join(format!("{name}.json"));
    std::fs::write(
        &spec,
        serde_json::json!({
            "name": name,
            "target_version": version,
            "max_parallel": 4,
            "offline_deadline_secs": 3600,
            "waves": [
                {"name": "canary", "selector": {"ring": "canary"}, "soak_secs": 10},
                {"name": "branches"}
            ]
        })
        .to_string(),
    )
    .expect("spec");
    region.cli_ok(&["rollout", "create", "--file", &spec.display().to_string()]);
}

fn desired_generations(region: &RegionProcess) -> Vec<(String, Value)> {
    SIMULATED
        .iter()
        .map(|site| {
            (
                (*site).to_owned(),
                region.site_json(site)["site"]["desired"]["generation"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_node_takes_releases_from_its_region_in_waves_keeps_its_server_and_a_bad_canary_halts_the_rollout()
 {
    let work = scratch_dir("update");
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
    region.cli_ok(&["site", "add", NODE_SITE, "--label", "ring=canary"]);
    let token = region
        .cli_ok(&["token", "create", NODE_SITE])
        .lines()
        .find_map(|line| line.strip_prefix("join_token = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the token")
        .to_owned();
    let simulated: Vec<SimSite> = SIMULATED
        .iter()
        .map(|site| {
            let token = region.add_site_with_token(site);
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

    let options = LabOptions::new(
        default_image(),
        work.path().join("node"),
        free_port(),
        SiteDelivery::FwCfg(site_toml(&relay, &token, &region)),
    );
    let mut node = LabNode::boot(&options).expect("boot N");
    node.console
        .wait_for("root@scs-edge", BOOT)
        .expect("console login");
    node.wait_agent_ready(BOOT).expect("agent READY on N");
    assert_eq!(update_status(&node)["running"], n.to_string());
    scs_edge_tests::wait::until("the node's first report in the region", BOOT, || {
        (region.site_json(NODE_SITE)["site"]["versions"]["os"] == n.to_string()).then_some(())
    });

    // A server on N: the tiny guest from a stick.
    let canary = start_canary(&node, work.path(), COMMAND);
    let (server_id, disk) = (canary.id, canary.disk);
    let disk_before = sh(&node, &format!("sha256sum {disk} | cut -d' ' -f1"));

    // N+1 published and rolled out: the node first, the simulated sites after its soak.
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
    create_rollout(&region, work.path(), "to-next", &next.to_string());

    // The WAN drops mid-download: connections reset, nothing gets through for a while.
    scs_edge_tests::wait::until("the node's download under way", UPDATE, || {
        (relay.bytes_down() - before_download > release_bytes * 2 / 5).then_some(())
    });
    relay.cut();
    let cut_at = relay.bytes_down() - before_download;
    std::thread::sleep(Duration::from_secs(5)); // the outage itself, not a wait for anything
    relay.restore();
    scs_edge_tests::wait::within(UPDATE, || {
        (update_status(&node)["record"]["phase"]["phase"] == "installing").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the agent did not write the slot; rollout: {}\nconsole:\n{}",
            rollout(&region, "to-next"),
            node.console.tail(40)
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
    assert_eq!(
        site_state(&rollout(&region, "to-next"), SIMULATED[0]),
        "pending",
        "the later wave waits for the canary"
    );

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
    let status = wait_judged(&node, UPDATE, 0, 1, &next);
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
    // The canary soaked; then the later wave; the rollout completes with every site on N+1.
    let done = scs_edge_tests::wait::within(UPDATE, || {
        let shown = rollout(&region, "to-next");
        (shown["progress"]["state"] == "completed").then_some(shown)
    })
    .unwrap_or_else(|| panic!("to-next did not complete: {}", rollout(&region, "to-next")));
    for site in std::iter::once(NODE_SITE).chain(SIMULATED) {
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
    assert_eq!(
        region.site_json(NODE_SITE)["site"]["versions"]["os"],
        next.to_string()
    );

    // N+2 cannot pass its gate (its ovn-controller never starts): the canary rolls back by itself,
    // the rollout halts, and no other site is offered it.
    sh(
        &node,
        "printf '\\n[update]\\ngate_window_secs = 150\\n' >> /etc/scs-edge/agent.toml",
    );
    let broken_bundle = desk.bundle(&broken);
    region.cli_ok(&["release", "publish", &broken_bundle.display().to_string()]);
    let generations = desired_generations(&region);
    let since = node.console.position();
    create_rollout(&region, work.path(), "to-broken", &broken.to_string());
    // Two boots: into N+2, whose gate fails, and back into N+1.
    let status = wait_judged(&node, UPDATE, since, 2, &broken);
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
    let halted = scs_edge_tests::wait::within(COMMAND, || {
        let shown = rollout(&region, "to-broken");
        (shown["progress"]["state"] == "halted").then_some(shown)
    })
    .unwrap_or_else(|| panic!("to-broken did not halt: {}", rollout(&region, "to-broken")));
    let reason = halted["progress"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(NODE_SITE) && reason.contains("rolled back"),
        "the halt names the canary and its rollback: {halted}"
    );
    assert_eq!(site_state(&halted, NODE_SITE), "rolled back", "{halted}");
    assert_eq!(
        desired_generations(&region),
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
        &node,
        &format!("scs-edge-agent server wait {server_id} --status ACTIVE --timeout 600 >/dev/null"),
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
    let before = refusals(&update_status(&node)).unwrap_or(0);
    node.plug_usb_stick("update2b", &broken_stick)
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
    let refused =
        scs_edge_tests::wait::within(COMMAND, || Some(update_status(&node)).filter(stick_refused))
            .unwrap_or_else(|| {
                panic!(
                    "the stick with the failed version was not refused: {}\nconsole:\n{}",
                    update_status(&node),
                    node.console.tail(40)
                )
            });
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
    node.unplug_usb_stick("update2b").expect("unplug");

    // An explicit retry clears it: the release is verified and written into the slot again, and
    // the node reboots into it. (That it then rolls back again was shown above; the test ends
    // here rather than pay two more boots.)
    sh(&node, &format!("scs-edge-agent update retry {broken}"));
    let since = node.console.position();
    node.plug_usb_stick("update2c", &broken_stick)
        .expect("plug for the retry");
    scs_edge_tests::wait::within(UPDATE, || {
        let text = node.console.text();
        text.get(since..)?
            .contains("EFI stub: Loaded initrd")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the retried release was not written and rebooted into within {UPDATE:?}; console:\n{}",
            node.console.tail(60)
        )
    });
    node.kill();
}
