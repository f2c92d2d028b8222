//! Operators against a region that trusts a real OIDC provider (panva `oidc-provider`, our Keycloak
//! stand-in): the REST API takes and refuses bearer tokens by issuer, audience, expiry, signature and
//! group; the dashboard logs in through the provider's own login form in headless Chromium and shows
//! the fleet and a site, on SQLite and on PostgreSQL. Screenshots land in
//! `target/scs-edge-tests/artifacts/<engine>/`.

use base64::Engine as _;
use scs_edge_proto::{Capacity, ComponentHealth, HealthState, Report, ResourceCounts, Versions};
use scs_edge_tests::oidc::{AUDIENCE, DASHBOARD_CLIENT, OPERATOR_GROUP, OidcOptions, OidcProvider};
use scs_edge_tests::region::{RegionOptions, RegionProcess, SimulatedNode};
use scs_edge_tests::{postgres, target_dir};
use std::process::Command;

/// The resource indicator the dashboard asks for: the IdP then issues tokens for the region's audience.
const REGION_RESOURCE: &str = "urn:scs-edge:region";

fn region_with_idp(label: &str, idp: &OidcProvider, database_url: &str) -> RegionProcess {
    let extra = format!(
        "[oidc]\nissuer = \"{issuer}\"\naudience = \"{audience}\"\noperator_group = \"{OPERATOR_GROUP}\"\n\n[dashboard]\nclient_id = \"{client}\"\nclient_secret = \"{secret}\"\nresource = \"{resource}\"\n",
        issuer = idp.issuer(),
        audience = AUDIENCE,
        client = DASHBOARD_CLIENT.0,
        secret = DASHBOARD_CLIENT.1,
        resource = REGION_RESOURCE,
    );
    RegionProcess::start(
        label,
        RegionOptions {
            extra,
            database_url: database_url.to_owned(),
            // A site is online for three intervals after its last report: a minute each keeps the
            // simulated site online however long npm and Chromium take to start on a loaded machine.
            expected_interval_secs: 60,
            ..RegionOptions::default()
        },
    )
}

fn report(seq: u64, state: HealthState) -> Report {
    Report {
        seq,
        sent_at: jiff::Timestamp::now(),
        versions: Versions {
            agent: "0.1.0".into(),
            os: "2026.11.22".into(),
            k3s: None,
        },
        health: vec![
            ComponentHealth {
                component: "libvirt".into(),
                state,
                detail: None,
            },
            ComponentHealth {
                component: "ovn".into(),
                state: HealthState::Healthy,
                detail: None,
            },
            ComponentHealth {
                component: "k3s".into(),
                state: HealthState::Absent,
                detail: None,
            },
            ComponentHealth {
                component: "agent".into(),
                state: HealthState::Healthy,
                detail: None,
            },
        ],
        capacity: Capacity {
            vcpus: 8,
            memory_mib: 32768,
            disk_free_gib: 400,
        },
        resources: ResourceCounts {
            servers: 3,
            networks: 2,
            ports: 5,
            images: 1,
            projects: 1,
        },
        update: None,
    }
}

fn sites_with(region: &RegionProcess, bearer: Option<&str>) -> u16 {
    region.api_get("/api/v1/sites", bearer).0
}

/// alg=none: a header and payload with an empty signature.
fn unsigned_token(issuer: &str) -> String {
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let now = jiff::Timestamp::now().as_second();
    format!(
        "{}.{}.",
        b64(serde_json::json!({ "alg": "none", "typ": "JWT" })),
        b64(serde_json::json!({
            "iss": issuer, "aud": AUDIENCE, "sub": "mallory", "exp": now + 300,
            "preferred_username": "mallory", "groups": [OPERATOR_GROUP],
        }))
    )
}

#[test]
fn the_operator_api_takes_only_valid_operator_tokens() {
    let idp = OidcProvider::start(OidcOptions::default());
    let region = region_with_idp("region-oidc", &idp, "");
    let alice = idp.password_token("alice", "alice-pw");
    let bob = idp.password_token("bob", "bob-pw");

    assert_eq!(
        sites_with(&region, Some(&alice)),
        200,
        "an operator's token"
    );
    assert_eq!(
        sites_with(&region, Some(&bob)),
        403,
        "a valid token without the operator group"
    );
    assert_eq!(
        sites_with(&region, None),
        401,
        "loopback is no excuse once an IdP is configured"
    );
    let refused = [
        ("expired", idp.mint(&serde_json::json!({ "ttl": -60, "claims": { "groups": [OPERATOR_GROUP] } }))),
        ("wrong issuer", idp.mint(&serde_json::json!({ "claims": { "iss": "http://evil.example", "groups": [OPERATOR_GROUP] } }))),
        ("wrong audience", idp.mint(&serde_json::json!({ "claims": { "aud": "other-service", "groups": [OPERATOR_GROUP] } }))),
        ("untrusted key, same kid", idp.mint(&serde_json::json!({ "untrusted": true, "claims": { "groups": [OPERATOR_GROUP] } }))),
        ("alg none", unsigned_token(idp.issuer())),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, token) in &refused {
        let (status, body) = region.api_get("/api/v1/sites", Some(token));
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"]["code"], "unauthenticated", "{what}");
    }
    let minted_ok = idp.mint(&serde_json::json!({ "claims": { "groups": [OPERATOR_GROUP] } }));
    assert_eq!(
        sites_with(&region, Some(&minted_ok)),
        200,
        "the mint endpoint's valid token is accepted (control)"
    );

    // A refused token changes nothing.
    let client = region.operator_client();
    let (_, expired) = &refused[0];
    let response = client
        .post(format!("{}/api/v1/sites", region.url()))
        .bearer_auth(expired)
        .json(&serde_json::json!({ "name": "sneaky" }))
        .send()
        .expect("POST");
    assert_eq!(response.status().as_u16(), 401);
    let response = client
        .post(format!("{}/api/v1/sites", region.url()))
        .bearer_auth(&alice)
        .json(&serde_json::json!({ "name": "branch-9", "labels": { "tier": "branch" } }))
        .send()
        .expect("POST");
    assert_eq!(response.status().as_u16(), 201);
    let list = region.cli_ok(&["site", "list"]);
    assert!(
        list.contains("branch-9") && !list.contains("sneaky"),
        "{list}"
    );
}

#[test]
fn the_dashboard_shows_the_fleet_to_an_operator_in_a_real_browser_on_sqlite() {
    dashboard_in_a_browser("", "sqlite");
}

#[test]
fn the_dashboard_shows_the_fleet_to_an_operator_in_a_real_browser_on_postgresql() {
    let database = postgres::PostgresServer::shared().create_database("region_dashboard");
    dashboard_in_a_browser(&database.url, "postgresql");
}

/// Logs in as an operator and as a non-operator in Chromium; screenshots go to
/// `target/scs-edge-tests/artifacts/<engine>/`.
fn dashboard_in_a_browser(database_url: &str, engine: &str) {
    let idp = OidcProvider::start(OidcOptions::default());
    let region = region_with_idp(&format!("region-dash-{engine}"), &idp, database_url);
    let token = region.add_site_with_token("factory-1");
    region.cli_ok(&["site", "add", "branch-2"]);
    let node = SimulatedNode::join(&region, "factory-1", &token);
    for seq in 1..=3 {
        assert_eq!(
            node.send(vec![report(seq, HealthState::Healthy)]).status,
            200
        );
    }

    let dir = scs_edge_tests::npm::installed("dashboard");
    let shots = target_dir().join("scs-edge-tests/artifacts").join(engine);
    let run = |user: &str, password: &str| -> serde_json::Value {
        let output = Command::new("node")
            .arg(dir.join("dashboard.mjs"))
            .args([&region.url(), "factory-1", user, password])
            .arg(&shots)
            .output()
            .expect("node dashboard.mjs");
        assert!(
            output.status.success(),
            "dashboard.mjs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("dashboard.mjs JSON")
    };

    let seen = run("alice", "alice-pw");
    assert!(
        seen["login_host"]
            .as_str()
            .is_some_and(|h| idp.issuer().contains(h)),
        "sent to the IdP's login: {seen}"
    );
    assert_eq!(seen["operator"], "alice", "{seen}");
    assert_eq!(seen["summary"], "2 sites, 1 online", "{seen}");
    assert_eq!(seen["row"]["state"], "active", "{seen}");
    assert_eq!(seen["row"]["connectivity"], "online", "{seen}");
    assert_eq!(seen["row"]["health"], "healthy", "{seen}");
    assert_eq!(
        seen["row"]["versions"], "agent 0.1.0 · OS 2026.11.22",
        "{seen}"
    );
    assert_eq!(seen["detail"]["name"], "factory-1", "{seen}");
    assert_eq!(
        seen["detail"]["components"],
        serde_json::json!(["libvirt", "ovn", "k3s", "agent"]),
        "{seen}"
    );
    assert_eq!(seen["detail"]["history_rows"], 3, "{seen}");
    for shot in ["dashboard-fleet.png", "dashboard-site.png"] {
        let len = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(len > 10_000, "{shot} is a real screenshot ({len} bytes)");
    }

    let denied = run("bob", "bob-pw");
    assert!(
        denied["error"]
            .as_str()
            .is_some_and(|e| e.contains(OPERATOR_GROUP)),
        "bob is not an operator: {denied}"
    );
}
