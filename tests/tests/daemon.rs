//! The agent as a system service: readiness after the first full reconcile, status and watchdog
//! through a real NOTIFY_SOCKET, the HTTPS listener with its kept certificate, /healthz and /metrics,
//! and configuration errors that name the key.

use scs_edge_tests::agent::{AgentOptions, AgentProcess, binary};
use scs_edge_tests::libvirt::Observer;
use std::time::Duration;

const BOOT: Duration = Duration::from_mins(2);

fn https_client(agent: &AgentProcess) -> reqwest::blocking::Client {
    agent.https_client()
}

fn get(client: &reqwest::blocking::Client, agent: &AgentProcess, path: &str) -> (u16, String) {
    let response = client
        .get(format!("https://localhost:{}{path}", agent.port))
        .send()
        .expect("request");
    (response.status().as_u16(), response.text().expect("body"))
}

#[test]
fn ready_comes_after_the_first_full_reconcile_then_status_and_watchdog_follow() {
    let mut agent = AgentProcess::start(
        "notify",
        AgentOptions {
            watchdog_usec: Some(1_000_000),
            ..AgentOptions::default()
        },
    );
    let image = agent.seed_guest();
    let id = agent.create_server("survivor", image, &[]);
    agent.wait_status(id, "ACTIVE", BOOT);

    // While the agent is down, its guest is powered off behind its back.
    agent.kill9();
    let observer = Observer::connect();
    observer
        .domain(id)
        .expect("domain")
        .destroy()
        .expect("destroy");
    assert!(observer.shut_off(id));

    agent.spawn();
    let messages = agent.wait_ready(BOOT);
    // READY=1 is only sent once the first pass has reconciled every server: the guest runs again.
    assert!(
        observer.running(id),
        "READY=1 arrived before the first full reconcile finished"
    );
    let ready = messages
        .iter()
        .find(|m| m.contains("READY=1"))
        .expect("ready message");
    assert!(ready.contains("STATUS=ready: node"), "{ready}");
    assert!(ready.contains("1 servers"), "{ready}");

    // STATUS= says what runs, and WATCHDOG=1 keeps coming (the liveness task probes the loops every 0.5 s).
    let mut seen = agent.wait_notify("STATUS=servers: 1 ACTIVE", Duration::from_secs(30));
    seen.extend(agent.wait_notify("WATCHDOG=1", Duration::from_secs(30)));
    seen.extend(agent.wait_notify("WATCHDOG=1", Duration::from_secs(30)));
    assert!(
        seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        "{seen:?}"
    );

    assert_eq!(
        agent.terminate(),
        Some(0),
        "SIGTERM stops the agent cleanly"
    );
    assert!(
        observer.running(id),
        "stopping the agent does not stop its guests"
    );
}

#[test]
fn healthz_and_metrics_are_served_over_https_with_a_kept_self_signed_certificate() {
    let mut agent = AgentProcess::start("https", AgentOptions::default());
    let client = https_client(&agent);

    let (code, body) = get(&client, &agent, "/healthz");
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(health["status"], "ok");
    for subsystem in ["store", "reconciler", "libvirt", "image-store"] {
        assert_eq!(
            health["subsystems"][subsystem]["healthy"], true,
            "{subsystem}: {body}"
        );
    }
    assert_eq!(
        health["subsystems"]["reconciler"]["detail"]["first_pass_done"],
        true
    );

    let image = agent.seed_guest();
    let id = agent.create_server("metered", image, &[]);
    agent.wait_status(id, "ACTIVE", BOOT);
    let (code, metrics) = get(&client, &agent, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("scs_edge_servers{status=\"ACTIVE\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scs_edge_reconcile_runs_total{kind=\"servers\",outcome=\"done\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scs_edge_reconcile_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("scs_edge_agent_build_info"), "{metrics}");

    let (code, body) = get(&client, &agent, "/no/such/thing");
    assert_eq!(code, 404);
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["itemNotFound"]["code"], 404);

    // After a restart the same certificate is served: the pinned client still connects.
    let pem = std::fs::read(agent.state_dir.join("tls/api.crt")).expect("cert");
    agent.terminate();
    agent.spawn();
    agent.wait_ready(BOOT);
    assert_eq!(
        std::fs::read(agent.state_dir.join("tls/api.crt")).expect("cert"),
        pem
    );
    assert_eq!(get(&client, &agent, "/healthz").0, 200);
}

#[test]
fn an_unreachable_libvirt_degrades_health_but_the_agent_still_starts() {
    let options = AgentOptions {
        extra: String::new(),
        ..AgentOptions::default()
    };
    let mut agent = AgentProcess::prepare("nolibvirt", options);
    let config = std::fs::read_to_string(&agent.config).expect("config");
    let config = config.replace(
        "libvirt_uri = \"qemu:///system\"",
        "libvirt_uri = \"qemu:///system?socket=/nonexistent/libvirt-sock\"",
    );
    std::fs::write(&agent.config, config).expect("rewrite config");
    agent.spawn();
    agent.wait_ready(BOOT);
    let client = https_client(&agent);
    let body = scs_edge_tests::wait::until(
        "libvirt reported unhealthy",
        Duration::from_secs(30),
        || {
            let (code, body) = get(&client, &agent, "/healthz");
            (code == 503).then_some(body)
        },
    );
    let health: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["subsystems"]["libvirt"]["healthy"], false);
    assert!(
        health["subsystems"]["libvirt"]["detail"]["error"]
            .as_str()
            .expect("error")
            .contains("unreachable"),
        "{body}"
    );
    assert_eq!(health["subsystems"]["store"]["healthy"], true);
}

#[test]
fn invalid_configuration_stops_the_agent_with_the_key_named() {
    let dir = scs_edge_tests::scratch_dir("badconfig");
    for (text, key) in [
        ("[reconcile]\nworkers = 0\n", "reconcile.workers"),
        ("[compute]\nvirt_type = \"xen\"\n", "compute.virt_type"),
        ("[node]\nstate_dirr = \"/x\"\n", "state_dirr"),
        ("[api]\nlisten = \"not an address\"\n", "api.listen"),
    ] {
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).expect("write");
        let out = std::process::Command::new(binary())
            .arg("--config")
            .arg(&path)
            .arg("run")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
    let missing = dir.path().join("nope.toml");
    let out = std::process::Command::new(binary())
        .arg("--config")
        .arg(&missing)
        .arg("check-config")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
}
