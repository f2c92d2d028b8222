//! The OpenStack-compatible API as real clients use it: python-openstackclient and openstacksdk
//! (pinned, from PyPI) against the agent binary over HTTPS, with real libvirt guests on a real OVN.

use scs_edge_tests::cloud::Cloud;
use scs_edge_tests::guest::{self, marker};
use scs_edge_tests::libvirt::Observer;
use scs_edge_tests::wait;
use serde_json::Value;
use std::time::Duration;

const BOOT: Duration = Duration::from_mins(3);

fn text(value: &Value, key: &str) -> String {
    scs_edge_tests::cloud::field(value, key)
}

#[test]
fn a_member_boots_a_server_reaches_it_and_cleans_up_with_the_openstack_client() {
    let cloud = Cloud::start("osc");

    // Token, and the catalog the client found the services in.
    let token = cloud.openstack_json("member", &["token", "issue"]);
    assert!(!text(&token, "id").is_empty());
    let catalog = cloud.openstack_json("member", &["catalog", "list"]);
    let types: Vec<&str> = catalog
        .as_array()
        .expect("catalog")
        .iter()
        .filter_map(|s| s["Type"].as_str())
        .collect();
    for wanted in ["identity", "compute", "image", "network"] {
        assert!(types.contains(&wanted), "{wanted} in catalog {catalog}");
    }

    // The SCS mandatory flavors are there for everyone.
    let flavors = cloud.openstack_json("member", &["flavor", "list"]);
    let names: Vec<&str> = flavors
        .as_array()
        .expect("flavors")
        .iter()
        .filter_map(|f| f["Name"].as_str())
        .collect();
    assert!(
        names.contains(&"SCS-1L-1") && names.contains(&"SCS-4V-16-100s"),
        "{names:?}"
    );

    // Image upload (streamed PUT) of the tiny guest.
    let guest_image = guest::image();
    let image = cloud.openstack_json(
        "member",
        &[
            "image",
            "create",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--file",
            guest_image.to_str().expect("path"),
            "--property",
            "os_distro=busybox",
            "busybox",
        ],
    );
    assert_eq!(text(&image, "status"), "active");
    let image_id = text(&image, "id");

    // The plant network (admin), then the member's network, subnet and router with its gateway.
    cloud.external.address("192.0.2.1/24", None);
    cloud.openstack_json(
        "admin",
        &[
            "network",
            "create",
            "--external",
            "--provider-network-type",
            "flat",
            "--provider-physical-network",
            "physnet1",
            "public",
        ],
    );
    cloud.openstack_json(
        "admin",
        &[
            "subnet",
            "create",
            "--network",
            "public",
            "--subnet-range",
            "192.0.2.0/24",
            "--gateway",
            "192.0.2.1",
            "--allocation-pool",
            "start=192.0.2.100,end=192.0.2.199",
            "--no-dhcp",
            "public-v4",
        ],
    );
    cloud.openstack_json("member", &["network", "create", "apps"]);
    cloud.openstack_json(
        "member",
        &[
            "subnet",
            "create",
            "--network",
            "apps",
            "--subnet-range",
            "10.80.0.0/24",
            "apps-v4",
        ],
    );
    cloud.openstack_json("member", &["router", "create", "edge"]);
    cloud.openstack_ok(
        "member",
        &["router", "set", "--external-gateway", "public", "edge"],
    );
    cloud.openstack_ok("member", &["router", "add", "subnet", "edge", "apps-v4"]);

    // A security group that lets pings in, and a keypair.
    cloud.openstack_json("member", &["security", "group", "create", "pingable"]);
    cloud.openstack_json(
        "member",
        &[
            "security",
            "group",
            "rule",
            "create",
            "--ingress",
            "--protocol",
            "icmp",
            "pingable",
        ],
    );
    let private_key = cloud.agent.state_dir.join("ops.pem");
    let keypair = cloud.openstack_json(
        "member",
        &[
            "keypair",
            "create",
            "--private-key",
            private_key.to_str().expect("path"),
            "ops",
        ],
    );
    let pem = std::fs::read_to_string(&private_key).expect("private key written");
    assert!(pem.contains("PRIVATE KEY"), "{pem}");
    let shown = cloud.openstack_json("member", &["keypair", "show", "ops"]);
    assert_eq!(text(&shown, "fingerprint"), text(&keypair, "fingerprint"));

    // Boot with user data; the guest prints it on its serial console.
    let user_data = cloud.agent.state_dir.join("user-data");
    std::fs::write(
        &user_data,
        "#!/bin/sh\necho hello from the openstack client\n",
    )
    .expect("user data");
    let server = cloud.openstack_json(
        "member",
        &[
            "server",
            "create",
            "--flavor",
            "SCS-1L-1",
            "--image",
            "busybox",
            "--network",
            "apps",
            "--security-group",
            "pingable",
            "--key-name",
            "ops",
            "--user-data",
            user_data.to_str().expect("path"),
            "--wait",
            "vm1",
        ],
    );
    assert_eq!(text(&server, "status"), "ACTIVE", "{server}");
    let server_id = text(&server, "id");
    let console = wait::until("user data on the console log", BOOT, || {
        let out = cloud.openstack("member", &["console", "log", "show", "vm1"]);
        (out.code == 0 && out.stdout.contains(marker::READY)).then_some(out.stdout)
    });
    assert!(
        console.contains("hello from the openstack client"),
        "console log shows the user data:\n{console}"
    );

    // A floating IP from the plant network answers pings from the plant.
    let fip = cloud.openstack_json("member", &["floating", "ip", "create", "public"]);
    let address = text(&fip, "floating_ip_address");
    cloud.openstack_ok(
        "member",
        &["server", "add", "floating", "ip", "vm1", &address],
    );
    assert!(
        cloud.external.reaches(&address, 60),
        "floating IP {address} answers from the external namespace"
    );
    let shown = cloud.openstack_json("member", &["server", "show", "vm1"]);
    assert!(
        shown.to_string().contains(&address),
        "addresses show the floating IP: {shown}"
    );

    // Other projects see nothing of it; a reader may look but not touch.
    let out = cloud.openstack("outsider", &["server", "show", &server_id]);
    assert_ne!(out.code, 0, "another project's server is not found");
    let out = cloud.openstack("reader", &["server", "delete", &server_id]);
    assert_ne!(out.code, 0, "a reader cannot delete");
    assert!(
        out.stderr.contains("403") || out.stderr.to_lowercase().contains("policy"),
        "{}",
        out.stderr
    );
    cloud.openstack_json("reader", &["server", "show", &server_id]);

    // Delete everything; nothing is left in libvirt, OVN or the state directory.
    cloud.openstack_ok("member", &["server", "delete", "--wait", "vm1"]);
    cloud.openstack_ok("member", &["floating", "ip", "delete", &address]);
    cloud.openstack_ok("member", &["router", "remove", "subnet", "edge", "apps-v4"]);
    cloud.openstack_ok("member", &["router", "unset", "--external-gateway", "edge"]);
    cloud.openstack_ok("member", &["router", "delete", "edge"]);
    cloud.openstack_ok("member", &["subnet", "delete", "apps-v4"]);
    cloud.openstack_ok("member", &["network", "delete", "apps"]);
    cloud.openstack_ok("member", &["security", "group", "delete", "pingable"]);
    cloud.openstack_ok("member", &["keypair", "delete", "ops"]);
    cloud.openstack_ok("member", &["image", "delete", &image_id]);
    cloud.openstack_ok("admin", &["subnet", "delete", "public-v4"]);
    cloud.openstack_ok("admin", &["network", "delete", "public"]);

    let observer = Observer::connect();
    wait::until("no domains of this node", BOOT, || {
        observer
            .owned_by(&cloud.agent.node_id)
            .is_empty()
            .then_some(())
    });
    wait::until("no switches, routers or NAT left in OVN", BOOT, || {
        let left: Vec<String> = [
            "Logical_Switch",
            "Logical_Switch_Port",
            "Logical_Router",
            "NAT",
            "DHCP_Options",
        ]
        .iter()
        .map(|table| {
            cloud
                .stack
                .nbctl(&["--bare", "--columns=_uuid", "list", table])
        })
        .filter(|rows| !rows.trim().is_empty())
        .collect();
        left.is_empty().then_some(())
    });
    let servers_dir = cloud.agent.state_dir.join("servers");
    let leftovers: Vec<_> = std::fs::read_dir(&servers_dir)
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "server files left: {leftovers:?}");
    let images_left: Vec<_> = std::fs::read_dir(cloud.agent.state_dir.join("images"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    assert!(images_left.is_empty(), "image files left: {images_left:?}");
}

/// The raw HTTP answers for what clients never send on purpose: no token, a bad token, broken JSON,
/// an oversized body, an unsupported microversion — each in the right service's error shape, and
/// none of them changes anything.
#[test]
fn bad_requests_get_openstack_errors_and_change_nothing() {
    let cloud = Cloud::start("api-errors");
    let http = cloud.agent.https_client();
    let base = format!("https://127.0.0.1:{}", cloud.agent.port);
    let token = text(&cloud.openstack_json("member", &["token", "issue"]), "id");
    let servers_before = cloud.openstack_json("member", &["server", "list"]);

    // No token: 401 in each dialect.
    let response = http
        .get(format!("{base}/compute/v2.1/servers"))
        .send()
        .expect("request");
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().expect("json");
    assert_eq!(body["unauthorized"]["code"], 401, "{body}");
    let response = http
        .get(format!("{base}/network/v2.0/networks"))
        .header("X-Auth-Token", "nonsense")
        .send()
        .expect("request");
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().expect("json");
    assert!(body["NeutronError"]["message"].is_string(), "{body}");
    let response = http
        .get(format!("{base}/identity/v3/projects"))
        .send()
        .expect("request");
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().contains_key("www-authenticate"));

    // Malformed JSON and an oversized body: 400 and 413, nothing created.
    let response = http
        .post(format!("{base}/compute/v2.1/servers"))
        .header("X-Auth-Token", &token)
        .header("Content-Type", "application/json")
        .body("{\"server\": {\"name\": ")
        .send()
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().expect("json");
    assert_eq!(body["badRequest"]["code"], 400, "{body}");
    let huge = format!(
        "{{\"network\": {{\"name\": \"{}\"}}}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let response = http
        .post(format!("{base}/network/v2.0/networks"))
        .header("X-Auth-Token", &token)
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .expect("request");
    assert_eq!(response.status().as_u16(), 413);

    // An unsupported microversion: 406 and the version range.
    let response = http
        .get(format!("{base}/compute/v2.1/servers"))
        .header("X-Auth-Token", &token)
        .header("OpenStack-API-Version", "compute 2.999")
        .send()
        .expect("request");
    assert_eq!(response.status().as_u16(), 406);

    // An unknown image and an unknown flavor: 400, and still no server.
    for (image, flavor) in [
        ("00000000-0000-0000-0000-000000000000", "SCS-1L-1"),
        ("", "no-such-flavor"),
    ] {
        let body = serde_json::json!({ "server": { "name": "x", "imageRef": image, "flavorRef": flavor, "networks": "none" } });
        let response = http
            .post(format!("{base}/compute/v2.1/servers"))
            .header("X-Auth-Token", &token)
            .header("OpenStack-API-Version", "compute 2.61")
            .json(&body)
            .send()
            .expect("request");
        assert_eq!(response.status().as_u16(), 400, "{body}");
    }
    assert_eq!(
        cloud.openstack_json("member", &["server", "list"]),
        servers_before
    );
    let networks = cloud.openstack_json("member", &["network", "list"]);
    assert_eq!(networks, Value::Array(Vec::new()), "no network was made");
}
