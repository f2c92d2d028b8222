//! Servers on real libvirt/QEMU through the agent binary: the guest boots from its image, reads its
//! config drive, and every lifecycle action is observed in libvirt and on the guest's console.

use scs_edge_agent::compute::hypervisor::{DomainSpec, VirtType};
use scs_edge_agent::compute::libvirt::domain_xml;
use scs_edge_agent::image::format::DiskFormat;
use scs_edge_tests::agent::{AgentOptions, AgentProcess};
use scs_edge_tests::guest::{self, marker};
use scs_edge_tests::libvirt::Observer;
use scs_edge_tests::wait;
use std::time::Duration;
use uuid::Uuid;

const BOOT: Duration = Duration::from_mins(2);

#[test]
fn guest_boots_from_its_image_and_prints_config_drive_user_data() {
    let agent = AgentProcess::start("boot", AgentOptions::default());
    let image = agent.seed_guest();
    let user_data = format!(
        "#cloud-config\n# greeting from the test {}\n",
        Uuid::new_v4()
    );
    let user_data_file = agent.dir().join("user-data");
    std::fs::write(&user_data_file, &user_data).expect("user data");
    let id = agent.create_server(
        "guest-one",
        image,
        &[
            "--user-data",
            user_data_file.to_str().expect("utf8"),
            "--meta",
            "role=test",
            "--nics",
            "1",
        ],
    );
    let server = agent.wait_status(id, "ACTIVE", BOOT);
    assert_eq!(server["power_state"], "running");

    let console = agent.wait_console(id, marker::READY, 1, BOOT);
    let printed = guest::between(&console, marker::USER_DATA_BEGIN, marker::USER_DATA_END)
        .expect("user data on console");
    assert_eq!(printed, user_data.trim());
    let meta = guest::between(&console, marker::META_DATA_BEGIN, marker::META_DATA_END)
        .expect("meta data on console");
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("meta_data.json is JSON");
    assert_eq!(meta["uuid"], id.to_string());
    assert_eq!(meta["name"], "guest-one");
    assert_eq!(meta["meta"]["role"], "test");

    let observer = Observer::connect();
    assert!(observer.running(id));
    let xml = observer.xml(id).expect("domain xml");
    for needle in [
        "machine='pc-q35",
        "<rng model='virtio'>",
        "bus='virtio'",
        "<log file=",
        "type='ethernet'",
    ] {
        assert!(xml.contains(needle), "domain XML lacks {needle}:\n{xml}");
    }
    let mac = server["nics"][0]["mac"].as_str().expect("mac");
    assert!(xml.contains(mac), "NIC MAC {mac} not in domain XML");
}

#[test]
fn stop_start_reboot_and_delete_are_carried_out_in_libvirt() {
    let agent = AgentProcess::start("lifecycle", AgentOptions::default());
    let image = agent.seed_guest();
    let id = agent.create_server("life", image, &[]);
    let sid = id.to_string();
    agent.wait_status(id, "ACTIVE", BOOT);
    agent.wait_console(id, marker::READY, 1, BOOT);
    let observer = Observer::connect();

    // Graceful stop: the guest sees the ACPI power button and powers itself off.
    agent.cli_ok(&["server", "stop", &sid]);
    agent.wait_status(id, "SHUTOFF", BOOT);
    assert!(observer.shut_off(id));
    assert_eq!(
        observer.state(id).map(|s| s.1),
        Some(virt::sys::VIR_DOMAIN_SHUTOFF_SHUTDOWN as i32),
        "shut down by the guest, not destroyed"
    );
    assert!(agent.console(id).contains(marker::POWER_BUTTON));

    agent.cli_ok(&["server", "start", &sid]);
    agent.wait_status(id, "ACTIVE", BOOT);
    assert!(observer.running(id));
    agent.wait_console(id, marker::READY, 2, BOOT);

    // Soft reboot: ACPI shutdown, then start: a third boot on the console.
    agent.cli_ok(&["server", "reboot", &sid]);
    agent.wait_console(id, marker::BOOT, 3, BOOT);
    agent.wait_status(id, "ACTIVE", BOOT);
    assert_eq!(guest::boots(&agent.console(id)), 3);

    // Hard reboot: power cycle; a new QEMU process.
    let before = observer.domain_id(id).expect("running domain id");
    agent.cli_ok(&["server", "reboot", "--hard", &sid]);
    agent.wait_console(id, marker::BOOT, 4, BOOT);
    agent.wait_status(id, "ACTIVE", BOOT);
    assert_ne!(
        observer.domain_id(id),
        Some(before),
        "hard reboot restarts QEMU"
    );

    agent.cli_ok(&["server", "delete", &sid]);
    agent.wait_status(id, "DELETED", BOOT);
    assert!(observer.domain(id).is_none(), "domain undefined");
    assert!(
        !agent.server_dir(id).exists(),
        "disk, config drive and console removed"
    );
}

#[test]
fn drift_behind_the_agents_back_is_repaired() {
    let agent = AgentProcess::start("drift", AgentOptions::default());
    let image = agent.seed_guest();
    let observer = Observer::connect();
    let keep = agent.create_server("keep", image, &[]);
    let lose = agent.create_server("lose-disk", image, &[]);
    agent.wait_status(keep, "ACTIVE", BOOT);
    agent.wait_status(lose, "ACTIVE", BOOT);

    // A domain removed by hand is recreated from desired state and started again.
    observer.remove(keep);
    wait::until("domain recreated and running", BOOT, || {
        observer.running(keep).then_some(())
    });
    agent.wait_status(keep, "ACTIVE", BOOT);

    // A domain whose disk is gone is not re-created with an empty disk: ERROR with a fault.
    observer.remove(lose);
    std::fs::remove_file(agent.server_dir(lose).join("disk.qcow2")).expect("remove disk");
    let server = agent.wait_status(lose, "ERROR", BOOT);
    assert!(
        server["fault"]["message"]
            .as_str()
            .expect("fault")
            .contains("root disk"),
        "{server}"
    );
    assert!(observer.domain(lose).is_none());

    // A domain tagged with this node's id but without a row is an orphan: removed. A foreign domain stays.
    let orphan = Uuid::new_v4();
    let spec = DomainSpec {
        id: orphan,
        node_id: agent.node_id.clone(),
        title: "left over".into(),
        vcpus: 1,
        memory_mib: 64,
        virt_type: VirtType::Qemu,
        machine: "q35".into(),
        root_disk: agent.dir().join("missing.qcow2"),
        root_disk_format: DiskFormat::Qcow2,
        config_drive: agent.dir().join("missing.img"),
        console_log: agent.dir().join("orphan.log"),
        nics: Vec::new(),
    };
    observer.define(&domain_xml::render(&spec), false);
    let foreign = Uuid::new_v4();
    let foreign_xml = format!(
        "<domain type='qemu'><name>scs-{foreign}</name><uuid>{foreign}</uuid><memory unit='MiB'>32</memory><os><type arch='x86_64' machine='q35'>hvm</type></os></domain>"
    );
    observer.define(&foreign_xml, false);
    wait::until("orphan domain removed", Duration::from_secs(90), || {
        observer.domain(orphan).is_none().then_some(())
    });
    assert!(
        observer.domain(foreign).is_some(),
        "a domain without this node's tag is left alone"
    );
    observer.remove(foreign);
}

#[test]
fn bad_requests_are_refused_with_clear_errors_and_change_nothing() {
    let agent = AgentProcess::start("badinput", AgentOptions::default());
    let image = agent.seed_guest();
    let image_s = image.to_string();
    let observer = Observer::connect();
    let guest_image = guest::image();
    let guest_file = guest_image.to_str().expect("utf8");
    let big = agent.cli_ok(&[
        "image",
        "import",
        "--name",
        "needs-20g",
        "--disk-format",
        "raw",
        "--min-disk",
        "20",
        "--file",
        guest_file,
    ]);
    let big_id = big["id"].as_str().expect("id").to_owned();

    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "server", "create", "--name", "x", "--flavor", "nope", "--image", &image_s,
            ],
            3,
            "flavor nope could not be found",
        ),
        (
            vec![
                "server",
                "create",
                "--name",
                "x",
                "--flavor",
                "tiny",
                "--image",
                "00000000-0000-4000-8000-000000000000",
            ],
            3,
            "image 00000000-0000-4000-8000-000000000000 could not be found",
        ),
        (
            vec![
                "server", "create", "--name", " padded", "--flavor", "tiny", "--image", &image_s,
            ],
            3,
            "must not start or end with whitespace",
        ),
        (
            vec![
                "server", "create", "--name", "x", "--flavor", "tiny", "--image", &big_id,
            ],
            3,
            "disk is too small",
        ),
        (
            vec![
                "flavor", "create", "--name", "zero", "--vcpus", "0", "--ram", "64",
            ],
            3,
            "vcpus",
        ),
        (
            vec![
                "flavor", "create", "--id", "tiny", "--name", "again", "--vcpus", "1", "--ram",
                "64",
            ],
            5,
            "already exists",
        ),
        (
            vec![
                "image",
                "import",
                "--name",
                "lie",
                "--disk-format",
                "qcow2",
                "--file",
                guest_file,
            ],
            3,
            "content is raw",
        ),
    ];
    for (args, code, message) in cases {
        let out = agent.cli(&args);
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(message),
            "{args:?}: stderr {:?} lacks {message:?}",
            out.stderr
        );
    }
    let id = Uuid::new_v4().to_string();
    agent.cli_ok(&[
        "server", "create", "--id", &id, "--name", "first", "--flavor", "tiny", "--image", &image_s,
    ]);
    let dup = agent.cli(&[
        "server", "create", "--id", &id, "--name", "second", "--flavor", "tiny", "--image",
        &image_s,
    ]);
    assert_eq!(dup.code, 5, "{}", dup.stderr);

    let servers = agent.cli_ok(&["server", "list"]);
    let names: Vec<&str> = servers
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, vec!["first"], "only the valid server exists");
    let images = agent.cli_ok(&["image", "list"]);
    assert_eq!(
        images.as_array().expect("images").len(),
        2,
        "the refused import left no image"
    );
    let image_files = std::fs::read_dir(agent.state_dir.join("images"))
        .expect("images dir")
        .count();
    assert_eq!(image_files, 2, "the refused import left no file");
    agent.wait_status(Uuid::parse_str(&id).expect("uuid"), "ACTIVE", BOOT);
    assert_eq!(
        observer.owned_by(&agent.node_id).len(),
        1,
        "exactly one domain was created"
    );
}
