//! The region and the agent as real processes on loopback with mTLS: a site joins, reports, is seen on
//! the dashboard; its link is cut and restored (queued reports arrive in order, the outage shows);
//! the region restarts and crashes without losing anything; a decommissioned site is refused while it
//! keeps running. Every scenario runs on SQLite and on a real PostgreSQL server.

use scs_edge_proto::{Capacity, ComponentHealth, HealthState, Report, ResourceCounts, Versions};
use scs_edge_tests::agent::{AgentOptions, AgentProcess};
use scs_edge_tests::postgres;
use scs_edge_tests::region::{
    RegionOptions, RegionProcess, SimulatedNode, TcpRelay, join, key_and_csr,
};
use scs_edge_tests::wait;
use std::time::Duration;

fn sqlite() -> RegionOptions {
    RegionOptions::default()
}

/// Options for a region on a fresh database of the harness's PostgreSQL server (kept running while the
/// returned handle lives).
fn postgresql(label: &str) -> (RegionOptions, postgres::TestDatabase) {
    let database = postgres::PostgresServer::shared().create_database(label);
    let options = RegionOptions {
        database_url: database.url.clone(),
        ..RegionOptions::default()
    };
    (options, database)
}

/// An agent that joins `site` through `port` (the relay) with a 1 s heartbeat.
fn agent_for(
    label: &str,
    region: &RegionProcess,
    port: u16,
    site: &str,
    token: &str,
    fingerprint: &str,
) -> AgentProcess {
    let mut agent = AgentProcess::prepare(label, AgentOptions::default());
    let token_file = agent.dir().join("join-token");
    std::fs::write(&token_file, token).expect("token file");
    let config = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        format!(
            "{config}\n[region]\nurl = \"https://127.0.0.1:{port}\"\nsite = \"{site}\"\nca_fingerprint = \"{fingerprint}\"\njoin_token_file = \"{}\"\nheartbeat_interval_secs = 1\njitter_percent = 10\nbackoff_max_secs = 2\n",
            token_file.display()
        ),
    )
    .expect("config");
    let _ = region;
    agent.spawn();
    agent.wait_ready(Duration::from_mins(2));
    agent
}

fn last_seq(region: &RegionProcess, site: &str) -> u64 {
    region.site_json(site)["site"]["last_seq"]
        .as_u64()
        .unwrap_or(0)
}

fn wait_seq(region: &RegionProcess, site: &str, at_least: u64) -> serde_json::Value {
    wait::until(
        &format!("site {site} reports up to seq {at_least}"),
        Duration::from_mins(1),
        || {
            let body = region.site_json(site);
            (body["site"]["last_seq"].as_u64().unwrap_or(0) >= at_least).then_some(body)
        },
    )
}

fn agent_metric(agent: &AgentProcess, name: &str) -> Option<f64> {
    let text = agent
        .https_client()
        .get(format!("https://127.0.0.1:{}/metrics", agent.port))
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn dashboard(region: &RegionProcess, path: &str) -> String {
    let response = region
        .operator_client()
        .get(format!("{}{path}", region.url()))
        .send()
        .expect("dashboard");
    assert_eq!(response.status().as_u16(), 200);
    response.text().expect("html")
}

/// Seq numbers strictly consecutive and `sent_at` increasing, newest first as the API lists them.
fn assert_in_order(history: &[serde_json::Value]) {
    for pair in history.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        assert_eq!(
            newer["seq"].as_u64().expect("seq"),
            older["seq"].as_u64().expect("seq") + 1,
            "{pair:?}"
        );
        assert!(
            newer["sent_at"].as_str() > older["sent_at"].as_str(),
            "{pair:?}"
        );
    }
}

fn site_lifecycle(options: RegionOptions, label: &str) {
    let mut region = RegionProcess::start(label, options);
    let token = region.add_site_with_token("factory-1");
    let relay = TcpRelay::start(region.port());
    let agent = agent_for(
        label,
        &region,
        relay.port,
        "factory-1",
        &token,
        &region.fingerprint,
    );

    // Join and heartbeat.
    let body = wait_seq(&region, "factory-1", 2);
    let site = &body["site"];
    assert_eq!(site["state"], "active", "{body}");
    assert_eq!(site["connectivity"], "online", "{body}");
    assert_eq!(
        site["versions"]["agent"],
        env!("CARGO_PKG_VERSION"),
        "{body}"
    );
    let components: Vec<&str> = site["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter_map(|c| c["component"].as_str())
        .collect();
    for expected in ["libvirt", "ovn", "k3s", "agent"] {
        assert!(
            components.contains(&expected),
            "{expected} missing from {components:?}"
        );
    }
    assert!(
        site["capacity"]["vcpus"].as_u64().unwrap_or(0) >= 1,
        "{body}"
    );
    assert!(
        !agent.dir().join("join-token").exists(),
        "the one-time token is deleted after the join"
    );
    let html = dashboard(&region, "/");
    assert!(html.contains("data-site=\"factory-1\""), "{html}");
    assert!(html.contains(">online<"), "{html}");

    // Cut the link: reports queue on the node.
    relay.cut();
    let before_cut = last_seq(&region, "factory-1");
    // Eight heartbeats (1 s apart) wait in the node's queue: the older ones are well past the three
    // intervals after which the region counts a report as delivered late.
    wait::until(
        "eight reports queued on the node",
        Duration::from_mins(1),
        || (agent_metric(&agent, "scs_edge_region_queued_reports")? >= 8.0).then_some(()),
    );
    let queued_seq = last_seq(&region, "factory-1");
    assert!(
        queued_seq <= before_cut + 1,
        "nothing crossed the cut link ({before_cut} → {queued_seq})"
    );
    assert_eq!(
        region.site_json("factory-1")["site"]["connectivity"],
        "stale"
    );
    relay.restore();
    let body = wait_seq(&region, "factory-1", queued_seq + 8);
    let history = body["history"].as_array().expect("history");
    assert_in_order(history);
    let outages = body["outages"].as_array().expect("outages");
    assert_eq!(outages.len(), 1, "{body}");
    assert!(
        outages[0]["queued_reports"].as_u64().unwrap_or(0) >= 4,
        "{body}"
    );
    let page = dashboard(&region, "/sites/factory-1");
    assert!(
        page.contains("data-testid=\"outage\""),
        "the dashboard shows the outage"
    );
    assert!(
        page.contains("data-queued=\"true\""),
        "and marks the reports that waited"
    );

    // A clean restart and a crash of the region lose nothing the node was told was stored.
    let stored = last_seq(&region, "factory-1");
    region.stop();
    region.spawn();
    assert!(
        last_seq(&region, "factory-1") >= stored,
        "nothing lost across a restart"
    );
    wait_seq(&region, "factory-1", stored + 2);
    let stored = last_seq(&region, "factory-1");
    region.kill9();
    region.spawn();
    assert!(
        last_seq(&region, "factory-1") >= stored,
        "nothing lost across a crash"
    );
    let body = wait_seq(&region, "factory-1", stored + 2);
    assert_in_order(body["history"].as_array().expect("history"));

    // Decommissioned: the region refuses the node; the site keeps serving its own API.
    region.cli_ok(&["site", "remove", "factory-1"]);
    wait::until(
        "the agent notices its site was decommissioned",
        Duration::from_mins(1),
        || agent.log_tail().contains("decommissioned").then_some(()),
    );
    let after = last_seq(&region, "factory-1");
    let flavors = agent
        .https_client()
        .get(format!("https://127.0.0.1:{}/healthz", agent.port))
        .send()
        .expect("agent API");
    assert!(
        flavors.status().is_success(),
        "the site works without its region"
    );
    assert_eq!(
        last_seq(&region, "factory-1"),
        after,
        "no report is accepted after decommissioning"
    );
    assert_eq!(
        region.site_json("factory-1")["site"]["state"],
        "decommissioned"
    );
}

#[test]
fn a_site_joins_reports_survives_outages_and_is_decommissioned_on_sqlite() {
    site_lifecycle(sqlite(), "region-life-sqlite");
}

#[test]
fn a_site_joins_reports_survives_outages_and_is_decommissioned_on_postgresql() {
    let (options, _database) = postgresql("region_life");
    site_lifecycle(options, "region-life-pg");
}

#[test]
fn an_agent_with_a_wrong_ca_pin_never_sends_its_token() {
    let region = RegionProcess::start("region-pin", sqlite());
    let token = region.add_site_with_token("pinned");
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let agent = agent_for(
        "region-pin",
        &region,
        region.port(),
        "pinned",
        &token,
        &wrong,
    );
    wait::until(
        "the agent refuses the region's CA",
        Duration::from_mins(1),
        || {
            agent
                .log_tail()
                .contains("fingerprint mismatch")
                .then_some(())
        },
    );
    // The token was never presented: it still works for a node that trusts the right CA.
    let node = SimulatedNode::join(&region, "pinned", &token);
    assert_eq!(node.site, "pinned");
    assert_eq!(region.site_json("pinned")["site"]["state"], "active");
}

fn report(seq: u64) -> Report {
    Report {
        seq,
        sent_at: jiff::Timestamp::now(),
        versions: Versions {
            agent: "sim".into(),
            os: String::new(),
            k3s: None,
        },
        health: vec![ComponentHealth {
            component: "libvirt".into(),
            state: HealthState::Healthy,
            detail: None,
        }],
        capacity: Capacity {
            vcpus: 2,
            memory_mib: 2048,
            disk_free_gib: 10,
        },
        resources: ResourceCounts::default(),
        update: None,
    }
}

fn bad_input(options: RegionOptions, label: &str) {
    let region = RegionProcess::start(label, options);
    let ca = region.ca_pem();
    let token_a = region.add_site_with_token("site-a");
    let token_b = region.add_site_with_token("site-b");
    let (_key, csr) = key_and_csr();

    // Forged, misdirected, then reused tokens.
    let forged = join(&region.url(), &ca, "site-a", "scsj_forged", &csr).expect_err("forged");
    assert_eq!(
        (forged.status, forged.code().as_str()),
        (401, "invalid_join_token")
    );
    let other = join(&region.url(), &ca, "site-b", &token_a, &csr).expect_err("other site");
    assert_eq!(
        (other.status, other.code().as_str()),
        (401, "invalid_join_token")
    );
    assert_eq!(
        region.site_json("site-b")["site"]["state"],
        "pending",
        "nothing stored"
    );
    let node_a = SimulatedNode::join(&region, "site-a", &token_a);
    let reused = join(&region.url(), &ca, "site-a", &token_a, &csr).expect_err("reused");
    assert_eq!(
        (reused.status, reused.code().as_str()),
        (401, "invalid_join_token")
    );

    // An expired token: one second of life, tried after it passed.
    let (status, body) = {
        let response = region
            .operator_client()
            .post(format!("{}/api/v1/sites/site-b/tokens", region.url()))
            .json(&serde_json::json!({ "ttl_secs": 1 }))
            .send()
            .expect("token");
        (
            response.status().as_u16(),
            response.json::<serde_json::Value>().expect("json"),
        )
    };
    assert_eq!(status, 201, "{body}");
    let expires: jiff::Timestamp = body["expires_at"]
        .as_str()
        .expect("expires")
        .parse()
        .expect("ts");
    wait::until(
        "the short token's expiry passes",
        Duration::from_secs(5),
        || (jiff::Timestamp::now() > expires).then_some(()),
    );
    let short = body["token"].as_str().expect("token");
    let expired = join(&region.url(), &ca, "site-b", short, &csr).expect_err("expired");
    assert_eq!(
        (expired.status, expired.code().as_str()),
        (401, "invalid_join_token")
    );
    assert_eq!(region.site_json("site-b")["site"]["state"], "pending");

    // A garbage CSR with a valid token: refused, the token survives for the real join.
    let bad_csr = join(&region.url(), &ca, "site-b", &token_b, "not a csr").expect_err("csr");
    assert_eq!(bad_csr.status, 400);
    let node_b = SimulatedNode::join(&region, "site-b", &token_b);

    // Reports: good, then every kind of bad one, each refused with nothing stored.
    assert_eq!(node_a.send(vec![report(1)]).status, 200);
    let posing = node_a.posing_as("site-b");
    let answer = posing.send(vec![report(1)]);
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (401, "unauthenticated"),
        "{answer:?}"
    );
    assert_eq!(region.site_json("site-b")["site"]["last_seq"], 0);
    let answer = node_a.post_raw("/node/v1/sites/site-a/reports", b"{not json".to_vec());
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (400, "bad_request")
    );
    let answer = node_a.post_raw("/node/v1/sites/site-a/reports", vec![b' '; 2 * 1024 * 1024]);
    assert_eq!(answer.status, 413, "{answer:?}");
    let mut huge = report(2);
    huge.health = vec![huge.health[0].clone(); 100];
    assert_eq!(node_a.send(vec![huge]).status, 400);
    let answer = node_a.send(vec![report(5)]);
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (409, "out_of_order")
    );
    assert_eq!(answer.json["error"]["expected_seq"], 2);
    assert_eq!(
        node_a.send(vec![report(1)]).status,
        200,
        "a duplicate is re-acknowledged"
    );
    assert_eq!(
        region.site_json("site-a")["site"]["last_seq"],
        1,
        "only the one good report is stored"
    );
    let history = region.site_json("site-a")["history"]
        .as_array()
        .expect("history")
        .len();
    assert_eq!(history, 1);

    // No client certificate on a node route; an unsupported protocol version.
    let anonymous = region
        .operator_client()
        .post(format!("{}/node/v1/sites/site-a/reports", region.url()))
        .json(&serde_json::json!({ "reports": [] }))
        .send()
        .expect("anonymous");
    assert_eq!(anonymous.status().as_u16(), 401);
    let future = region
        .operator_client()
        .post(format!("{}/node/v1/join", region.url()))
        .header("scs-edge-protocol", "99")
        .json(&serde_json::json!({}))
        .send()
        .expect("future");
    assert_eq!(future.status().as_u16(), 400);
    assert!(
        future
            .text()
            .expect("body")
            .contains("unsupported_protocol")
    );

    // Revoked: decommissioned site-b's node is refused on every route.
    region.cli_ok(&["site", "remove", "site-b"]);
    let answer = node_b.send(vec![report(1)]);
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (403, "site_revoked")
    );
    let desired = node_b.desired().expect_err("revoked");
    assert_eq!(desired.status, 403);
    assert_eq!(node_a.desired().expect("site-a still works").generation, 1);
}

#[test]
fn bad_input_is_refused_and_changes_nothing_on_sqlite() {
    bad_input(sqlite(), "region-bad-sqlite");
}

#[test]
fn bad_input_is_refused_and_changes_nothing_on_postgresql() {
    let (options, _database) = postgresql("region_bad");
    bad_input(options, "region-bad-pg");
}
