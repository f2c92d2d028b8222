//! Operators against a region that trusts a real OIDC provider (panva `oidc-provider`, our Keycloak
//! stand-in): the REST API takes and refuses bearer tokens by issuer, audience, expiry, signature and
//! group; the dashboard logs in through the provider's own login form in headless Chromium and shows
//! the fleet and a site, and a halted rollout whose buttons resume, pause and stop it while a forged
//! form from another origin changes nothing — on SQLite and on PostgreSQL. Screenshots land in
//! `target/scs-edge-tests/artifacts/<engine>/`.

use base64::Engine as _;
use scs_edge_proto::{Capacity, ComponentHealth, HealthState, Report, ResourceCounts, Versions};
use scs_edge_tests::fleet_sim::{Behaviour, SimSite};
use scs_edge_tests::oidc::{AUDIENCE, DASHBOARD_CLIENT, OPERATOR_GROUP, OidcOptions, OidcProvider};
use scs_edge_tests::region::{RegionOptions, RegionProcess, SimulatedNode};
use scs_edge_tests::release_desk::Desk;
use scs_edge_tests::{postgres, target_dir, wait};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The resource indicator the dashboard asks for: the IdP then issues tokens for the region's audience.
const REGION_RESOURCE: &str = "urn:scs-edge:region";

/// The OS every site runs (what `factory-1` reports); the region publishes only newer releases.
const RUNNING: &str = "2026.11.22";
/// The release the dashboard's rollout rolls out; its canary rolls it back.
const BAD: &str = "2026.12.0";
/// The rollout the dashboard shows.
const ROLLOUT: &str = "os-1-1";
/// The simulated sites beside `factory-1`: the canary, then sites that take the release well.
const CANARY: &str = "canary-1";
const GOOD: [&str; 2] = ["site-1", "site-2"];
/// Why alice stops the rollout on its page (what `rollout.mjs` types in).
const STOP_REASON: &str = "the canary rolled it back";
/// The longest an awaited rollout state may take on a loaded two-core machine.
const PATIENCE: Duration = Duration::from_secs(90);

/// A region trusting `idp`, with `more` (further config sections) appended.
fn region_with_idp(
    label: &str,
    idp: &OidcProvider,
    database_url: &str,
    more: &str,
) -> RegionProcess {
    let extra = format!(
        "[oidc]\nissuer = \"{issuer}\"\naudience = \"{audience}\"\noperator_group = \"{OPERATOR_GROUP}\"\n\n[dashboard]\nclient_id = \"{client}\"\nclient_secret = \"{secret}\"\nresource = \"{resource}\"\n{more}",
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
            os: RUNNING.into(),
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
    let region = region_with_idp("region-oidc", &idp, "", "");
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

/// POSTs `body` to the operator API as the holder of `bearer` (none: anonymous).
fn post(region: &RegionProcess, path: &str, bearer: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = region
        .operator_client()
        .post(format!("{}{path}", region.url()))
        .json(body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().expect("operator API");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// Runs `node <script> <region url> <subject> <user> <password> <shots>` from `tests/dashboard`
/// with `env`; what it printed as JSON.
fn browse(
    region: &RegionProcess,
    script: &str,
    (subject, user, password): (&str, &str, &str),
    shots: &Path,
    env: &[(&str, &str)],
) -> Value {
    let dir = scs_edge_tests::npm::installed("dashboard");
    let output = Command::new("node")
        .arg(dir.join(script))
        .args([&region.url(), subject, user, password])
        .arg(shots)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("node {script}: {e}"));
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} JSON: {e}: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Publishes [`BAD`], enrols the canary (which rolls it back) and the good sites, and creates
/// [`ROLLOUT`] as `operator`: the canary first, then every other active site. Returns the sites
/// once each has read its first desired state; the rollout goes on in the region.
fn start_rollout(region: &RegionProcess, desk: &Desk, operator: &str) -> Vec<SimSite> {
    let published = region.cli_ok(&["release", "publish", &desk.repository_arg()]);
    assert!(
        published.contains(&format!("published {BAD}")),
        "{published}"
    );
    let canary = (
        CANARY,
        "canary",
        Behaviour::RollsBack {
            version: BAD.into(),
            reason: "ovn-controller did not connect".into(),
        },
    );
    let good = GOOD.map(|site| (site, "main", Behaviour::Good));
    let sites: Vec<SimSite> = std::iter::once(canary)
        .chain(good)
        .map(|(site, ring, behaviour)| {
            let body = json!({ "name": site, "labels": { "ring": ring } });
            let (status, added) = post(region, "/api/v1/sites", Some(operator), &body);
            assert_eq!(status, 201, "add {site}: {added}");
            let path = format!("/api/v1/sites/{site}/tokens");
            let (status, token) = post(region, &path, Some(operator), &json!({}));
            assert_eq!(status, 201, "token for {site}: {token}");
            let token = token["token"].as_str().expect("token");
            SimSite::join(
                region,
                site,
                token,
                RUNNING,
                behaviour,
                Duration::from_millis(300),
            )
        })
        .collect();
    for sim in &sites {
        wait::until(
            &format!("{} reads its first desired state", sim.site),
            PATIENCE,
            || sim.desired().map(|_| ()),
        );
    }
    let (status, created) = post(
        region,
        "/api/v1/rollouts",
        Some(operator),
        &rollout_spec(ROLLOUT),
    );
    assert_eq!(status, 201, "{created}");
    sites
}

/// The canary first (soaking a second), then the rest three at a time; offline sites are waited
/// for an hour, longer than the test.
fn rollout_spec(name: &str) -> Value {
    json!({
        "name": name,
        "target_version": BAD,
        "waves": [
            { "name": "canary", "selector": { "ring": "canary" }, "soak_secs": 1 },
            { "name": "rest" },
        ],
        "max_parallel": 3,
        "offline_deadline_secs": 3600,
    })
}

/// The rollouts as an operator lists them over the API.
fn rollout_names(region: &RegionProcess, operator: &str) -> Vec<String> {
    let (status, list) = region.api_get("/api/v1/rollouts", Some(operator));
    assert_eq!(status, 200, "{list}");
    list["rollouts"]
        .as_array()
        .expect("rollouts")
        .iter()
        .map(|rollout| rollout["name"].as_str().expect("name").to_owned())
        .collect()
}

/// [`ROLLOUT`] as an operator reads it over the API.
fn rollout_json(region: &RegionProcess, operator: &str) -> Value {
    let (status, rollout) = region.api_get(&format!("/api/v1/rollouts/{ROLLOUT}"), Some(operator));
    assert_eq!(status, 200, "{rollout}");
    rollout
}

/// [`ROLLOUT`] over the API once `done` holds for its state.
fn await_rollout(region: &RegionProcess, operator: &str, what: &str, done: &[&str]) -> Value {
    wait::until(&format!("rollout {ROLLOUT} {what}"), PATIENCE, || {
        let rollout = rollout_json(region, operator);
        done.contains(&rollout["progress"]["state"].as_str().unwrap_or_default())
            .then_some(rollout)
    })
}

/// Logs in as an operator and as a non-operator in Chromium; screenshots go to
/// `target/scs-edge-tests/artifacts/<engine>/`.
fn dashboard_in_a_browser(database_url: &str, engine: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let desk = Desk::new(&runtime);
    desk.sign(&runtime, BAD);
    let idp = OidcProvider::start(OidcOptions::default());
    // The rollout driver steps every 200 ms. Heartbeats stay expected every minute (see
    // `region_with_idp`): rollouts use the interval only to tell online sites, and the simulated
    // sites beat every 300 ms.
    let region = region_with_idp(
        &format!("region-dash-{engine}"),
        &idp,
        database_url,
        &format!(
            "\n{}\n[rollouts]\ntick_millis = 200\n",
            desk.region_config()
        ),
    );
    let alice = idp.password_token("alice", "alice-pw");
    let bob = idp.password_token("bob", "bob-pw");
    let token = region.add_site_with_token("factory-1");
    region.cli_ok(&["site", "add", "branch-2"]);
    let node = SimulatedNode::join(&region, "factory-1", &token);
    for seq in 1..=3 {
        assert_eq!(
            node.send(vec![report(seq, HealthState::Healthy)]).status,
            200
        );
    }
    // The canary takes the release and rolls it back while the browser looks at the fleet.
    let _sites = start_rollout(&region, &desk, &alice);

    let shots = target_dir().join("scs-edge-tests/artifacts").join(engine);
    let seen = browse(
        &region,
        "dashboard.mjs",
        ("factory-1", "alice", "alice-pw"),
        &shots,
        &[],
    );
    assert!(
        seen["login_host"]
            .as_str()
            .is_some_and(|h| idp.issuer().contains(h)),
        "sent to the IdP's login: {seen}"
    );
    assert_eq!(seen["operator"], "alice", "{seen}");
    // factory-1 and the three simulated sites report; branch-2 never joined.
    assert_eq!(seen["summary"], "5 sites, 4 online", "{seen}");
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

    let halted = await_rollout(
        &region,
        &alice,
        "halted (or, wrongly, completed)",
        &["halted", "completed"],
    );
    assert_eq!(halted["progress"]["state"], "halted", "{halted}");
    only_operators_stop_over_the_api(&region, &alice, &bob);
    rollout_buttons_in_a_browser(&region, &alice, &shots);
    only_operators_create_over_the_api(&region, &alice, &bob);

    // bob signs in at the IdP but gets no dashboard session: no rollout page, no buttons, and a
    // form posted from the region's own origin with a guessed token is refused.
    let denied = browse(
        &region,
        "rollout.mjs",
        (ROLLOUT, "bob", "bob-pw"),
        &shots,
        &[],
    );
    assert!(
        denied["error"]
            .as_str()
            .is_some_and(|e| e.contains(OPERATOR_GROUP)),
        "bob is not an operator: {denied}"
    );
    assert!(denied.get("halted").is_none(), "{denied}");
    assert_eq!(denied["post"]["status"], 401, "{denied}");
    assert!(
        denied["post"]["page"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("sign in")),
        "{denied}"
    );
    let stopped = rollout_json(&region, &alice);
    assert_eq!(
        stopped["progress"]["reason"], STOP_REASON,
        "bob's post changed nothing: {stopped}"
    );
}

/// A non-operator's stop of the halted rollout over the API is refused and changes nothing.
fn only_operators_stop_over_the_api(region: &RegionProcess, alice: &str, bob: &str) {
    let before = rollout_json(region, alice);
    let stop = format!("/api/v1/rollouts/{ROLLOUT}/stop");
    let (status, body) = post(region, &stop, Some(bob), &json!({ "reason": "bob" }));
    assert_eq!(status, 403, "{body}");
    let after = rollout_json(region, alice);
    assert_eq!(after["progress"]["state"], "halted", "{after}");
    assert_eq!(after["revision"], before["revision"], "{after}");
}

/// Creating a rollout over the API once [`ROLLOUT`] has stopped (its sites free again): without a
/// token and with a non-operator's it is refused and creates nothing; the same spec from an
/// operator is taken, so the refusals were about who asked.
fn only_operators_create_over_the_api(region: &RegionProcess, alice: &str, bob: &str) {
    let spec = rollout_spec("os-again");
    let (status, body) = post(region, "/api/v1/rollouts", None, &spec);
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(region, "/api/v1/rollouts", Some(bob), &spec);
    assert_eq!(status, 403, "{body}");
    assert_eq!(rollout_names(region, alice), [ROLLOUT], "nothing created");
    let (status, body) = post(region, "/api/v1/rollouts", Some(alice), &spec);
    assert_eq!(status, 201, "{body}");
}

/// alice on the halted rollout's page: what it shows, a forged form from another origin that
/// changes nothing, then resume, pause and stop with the page's buttons.
fn rollout_buttons_in_a_browser(region: &RegionProcess, alice: &str, shots: &Path) {
    let seen = browse(
        region,
        "rollout.mjs",
        (ROLLOUT, "alice", "alice-pw"),
        shots,
        &[("SCS_EDGE_BEARER", alice)],
    );
    let page = format!("{}/rollouts/{ROLLOUT}", region.url());
    let halted = &seen["halted"];
    assert_eq!(halted["url"], page.as_str(), "{seen}");
    assert_eq!(halted["operator"], "alice", "{seen}");
    assert_eq!(halted["state"], "halted", "{seen}");
    let reason = halted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(CANARY) && reason.contains("rolled back"),
        "the halt reason names the canary: {seen}"
    );
    assert_eq!(halted["sites"][CANARY]["state"], "rolled back", "{seen}");
    assert!(
        halted["sites"][CANARY]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(BAD) && d.contains("rolled back")),
        "{seen}"
    );
    // The canary's wave halted on its one site; the rest (factory-1 too: it is an active site)
    // waits, none of it offered.
    assert_eq!(
        halted["waves"],
        json!([
            { "wave": "canary", "status": "current", "counts": "1 rolled back" },
            { "wave": "rest", "status": "waiting", "counts": "3 pending" },
        ]),
        "{seen}"
    );
    for site in GOOD.iter().chain(&["factory-1"]) {
        assert_eq!(
            halted["sites"][site]["state"], "pending",
            "{site} not offered: {seen}"
        );
    }
    assert_eq!(halted["buttons"], json!(["resume", "stop"]), "{seen}");
    let shot = std::fs::metadata(shots.join("rollout-halted.png")).map_or(0, |m| m.len());
    assert!(
        shot > 10_000,
        "rollout-halted.png is a real screenshot ({shot} bytes)"
    );

    // The forged post: refused for its origin before anything else is looked at (so whether the
    // browser sent the Lax session cookie along does not matter), and the rollout as it was, by
    // the API and on the page.
    let forged = &seen["forged"];
    assert_eq!(forged["status"], 403, "{seen}");
    assert!(
        forged["page"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("region's own pages")),
        "{seen}"
    );
    assert_eq!(seen["rest_before_forgery"]["state"], "halted", "{seen}");
    assert_eq!(
        seen["rest_after_forgery"], seen["rest_before_forgery"],
        "{seen}"
    );
    assert_eq!(seen["after_forgery"]["state"], "halted", "{seen}");
    assert_eq!(seen["after_forgery"]["reason"], halted["reason"], "{seen}");

    // Each button posts, and the browser lands back on the rollout's page showing the result.
    for (step, states, buttons) in [
        // Resuming acknowledges the canary's failure; the rest cannot finish (factory-1 never
        // takes an offer), so the rollout is still running when the next button is pressed.
        ("resumed", "running", json!(["pause", "stop"])),
        ("paused", "paused", json!(["resume", "stop"])),
        ("stopped", "stopped", json!([])),
    ] {
        let done = &seen[step];
        assert_eq!(done["status"], 303, "{step}: {seen}");
        assert_eq!(done["url"], page.as_str(), "{step}: {seen}");
        assert_eq!(done["page"]["state"], states, "{step}: {seen}");
        assert_eq!(done["page"]["buttons"], buttons, "{step}: {seen}");
    }
    assert!(
        seen["stopped"]["page"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(STOP_REASON) && r.contains("alice")),
        "{seen}"
    );
    let stopped = rollout_json(region, alice);
    assert_eq!(
        (&stopped["progress"]["state"], &stopped["progress"]["by"]),
        (&json!("stopped"), &json!("alice")),
        "{stopped}"
    );
    assert_eq!(stopped["progress"]["reason"], STOP_REASON, "{stopped}");
}
