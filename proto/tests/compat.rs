//! Wire compatibility across versions: what version 1 wrote must parse today and serialise back to the
//! same JSON (a change of shape fails here before it reaches a fleet), and what a newer peer writes —
//! extra fields, new enum values — must parse with today's types, the unknowns ignored or mapped to
//! `Unknown`.

use scs_edge_proto::window::MaintenanceWindow;
use scs_edge_proto::{
    DesiredState, Enrollment, ErrorBody, ErrorCode, HealthState, JoinRequest, ReportAck,
    ReportBatch, UpdatePhase,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

fn fixture(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compat")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Parses a version-1 message and checks today's types write exactly the same JSON back.
fn v1_round_trip<T: DeserializeOwned + Serialize>(path: &str) -> T {
    let text = fixture(path);
    let parsed: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let original: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    let written = serde_json::to_value(&parsed).expect("serialise");
    assert_eq!(
        written, original,
        "{path}: today's types no longer write what version 1 wrote"
    );
    parsed
}

#[test]
fn version_1_messages_parse_and_write_back_identically() {
    let batch: ReportBatch = v1_round_trip("v1/report_batch.json");
    assert_eq!(batch.reports[0].seq, 41);
    assert_eq!(batch.reports[0].health[1].state, HealthState::Degraded);
    assert!(batch.reports[0].validate().is_ok());
    let join: JoinRequest = v1_round_trip("v1/join_request.json");
    assert_eq!(join.site, "factory-1");
    let enrollment: Enrollment = v1_round_trip("v1/enrollment.json");
    assert!(enrollment.renew_after < enrollment.not_after);
    let ack: ReportAck = v1_round_trip("v1/report_ack.json");
    assert_eq!(ack.acked_through, 41);
    let desired: DesiredState = v1_round_trip("v1/desired_state.json");
    assert_eq!(desired.labels["wave"], "canary");
    assert_eq!(
        desired.maintenance_window, None,
        "regions before windows send none"
    );
    assert_eq!(batch.reports[0].update, None);
    let error: ErrorBody = v1_round_trip("v1/error_out_of_order.json");
    assert_eq!(error.error.code, ErrorCode::OutOfOrder);
    assert_eq!(error.error.expected_seq, Some(42));
}

/// Fields added within version 1 — the region's maintenance window in the desired state, the
/// node's effective window in its report — round-trip like the rest, and read back as windows.
#[test]
fn maintenance_windows_round_trip_in_desired_state_and_report() {
    let desired: DesiredState = v1_round_trip("v1/desired_state_window.json");
    let window = desired.maintenance_window.as_deref().expect("window");
    let parsed = MaintenanceWindow::parse(window).expect("a window");
    assert_eq!(parsed.to_string(), window, "sent in canonical form");

    let batch: ReportBatch = v1_round_trip("v1/report_batch_update.json");
    let report = &batch.reports[0];
    assert!(report.validate().is_ok());
    let update = report.update.as_ref().expect("update state");
    assert_eq!(update.phase, UpdatePhase::Installed);
    assert_eq!(update.window.as_deref(), Some(window));
}

#[test]
fn messages_from_a_newer_peer_parse_with_unknowns_ignored() {
    let batch: ReportBatch =
        serde_json::from_str(&fixture("future/report_batch.json")).expect("newer report batch");
    let report = &batch.reports[0];
    assert_eq!(report.versions.k3s.as_deref(), Some("v1.33.1+k3s1"));
    assert_eq!(
        report.health[1].state,
        HealthState::Unknown,
        "a new health state maps to Unknown"
    );
    assert_eq!(report.capacity.vcpus, 4);
    let update = report.update.as_ref().expect("update state");
    assert_eq!(
        update.phase,
        UpdatePhase::Unknown,
        "a new update phase maps to Unknown"
    );
    assert_eq!(update.target.as_deref(), Some("2027.4.0"));
    assert!(
        report.validate().is_ok(),
        "a newer report is still acceptable"
    );

    let desired: DesiredState =
        serde_json::from_str(&fixture("future/desired_state.json")).expect("newer desired state");
    assert_eq!(desired.target_os_version.as_deref(), Some("2027.3.0"));
    // A window in a form this build cannot read costs the window, not the desired state.
    let window = desired
        .maintenance_window
        .as_deref()
        .expect("window text kept");
    assert!(MaintenanceWindow::parse(window).is_err(), "{window}");

    let error: ErrorBody =
        serde_json::from_str(&fixture("future/error.json")).expect("newer error");
    assert_eq!(error.error.code, ErrorCode::Unknown);
    assert_eq!(error.error.message, "slow down");
}

#[test]
fn fields_added_after_version_1_may_be_missing() {
    let batch: ReportBatch = serde_json::from_str(&fixture("future/report_batch_minimal.json"))
        .expect("a report without the optional fields");
    let report = &batch.reports[0];
    assert_eq!(report.versions.os, "");
    assert_eq!(report.capacity.disk_free_gib, 0);
    assert_eq!(report.resources.projects, 0);
    assert_eq!(report.update, None, "agents before OS updates send none");
    let update: scs_edge_proto::UpdateReport =
        serde_json::from_str(r#"{ "phase": "staged", "target": "2026.12.0", "refused": 0 }"#)
            .expect("an update state from an agent before windows");
    assert_eq!(update.window, None);
}
