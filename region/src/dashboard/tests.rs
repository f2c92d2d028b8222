use super::*;
use crate::fleet::SiteDetail;
use crate::store::{SiteState, StoredReport};
use scs_edge_proto::{
    Capacity, ComponentHealth, DesiredState, HealthState, Report, ResourceCounts, Versions,
};

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).expect("timestamp")
}

fn report(seq: u64, sent: i64, state: HealthState) -> Report {
    Report {
        seq,
        sent_at: at(sent),
        versions: Versions {
            agent: "0.1.0".into(),
            os: "2026.11.1".into(),
            k3s: None,
        },
        health: vec![
            ComponentHealth {
                component: "libvirt".into(),
                state,
                detail: Some("<b>probe</b>".into()),
            },
            ComponentHealth {
                component: "k3s".into(),
                state: HealthState::Absent,
                detail: None,
            },
        ],
        capacity: Capacity {
            vcpus: 4,
            memory_mib: 8192,
            disk_free_gib: 50,
        },
        resources: ResourceCounts {
            servers: 3,
            ..ResourceCounts::default()
        },
        update: None,
    }
}

fn site(name: &str, last_seen: Option<i64>, state: HealthState) -> Site {
    Site {
        name: name.into(),
        state: SiteState::Active,
        created_at: at(0),
        joined_at: Some(at(1)),
        last_seen: last_seen.map(at),
        last_report: last_seen.map(|s| report(1, s, state)),
        last_seq: u64::from(last_seen.is_some()),
        desired: DesiredState {
            generation: 1,
            ..DesiredState::default()
        },
        delivery: crate::store::Delivery::Online,
    }
}

fn ctx(now: i64) -> PageContext<'static> {
    PageContext {
        region: "central",
        operator: "alice",
        now: at(now),
        interval: SignedDuration::from_secs(10),
    }
}

#[test]
fn the_fleet_table_shows_link_health_and_versions_per_site() {
    let sites = [
        site("factory-1", Some(95), HealthState::Healthy),
        site("branch-2", Some(10), HealthState::Down),
        site("<script>", None, HealthState::Healthy),
    ];
    let html = fleet_page(&ctx(100), &sites);
    assert!(html.contains("3 sites, 1 online"), "{html}");
    let row = |name: &str| {
        let start = html.find(&format!("data-site=\"{name}\"")).expect("row");
        html[start..start + html[start..].find("</tr>").expect("end")].to_owned()
    };
    assert!(row("factory-1").contains(">online<") && row("factory-1").contains(">healthy<"));
    assert!(row("factory-1").contains("agent 0.1.0 · OS 2026.11.1"));
    assert!(row("branch-2").contains(">stale<") && row("branch-2").contains(">down<"));
    assert!(!html.contains("<script>"), "names are escaped");
    assert!(html.contains("&lt;script&gt;"));
    assert!(html.contains("data-testid=\"operator\">alice"));
}

#[test]
fn the_site_page_shows_components_and_the_outage_its_queued_reports_covered() {
    let mut detail_site = site("factory-1", Some(250), HealthState::Degraded);
    detail_site.last_seq = 25;
    // Reports every 10 s; the link was down from t=70 to t=250: reports 7..=20 waited in the queue.
    let mut history: Vec<StoredReport> = (1..=25)
        .map(|seq| {
            let sent = i64::from(seq as u32) * 10;
            let received = if (7..=20).contains(&seq) {
                250
            } else {
                sent + 1
            };
            StoredReport {
                received_at: at(received),
                report: report(seq, sent, HealthState::Healthy),
            }
        })
        .collect();
    history.reverse();
    let html = site_page(
        &ctx(255),
        &SiteDetail {
            site: detail_site,
            history,
        },
    );
    assert_eq!(html.matches("data-testid=\"outage\"").count(), 1, "{html}");
    assert!(
        html.contains("14 reports waited in the site's queue"),
        "{html}"
    );
    assert_eq!(html.matches("data-queued=\"true\"").count(), 14);
    assert!(html.contains("data-component=\"libvirt\""));
    assert!(
        html.contains("&lt;b&gt;probe&lt;/b&gt;"),
        "component detail escaped"
    );
    assert!(
        !html.contains("data-testid=\"gap\""),
        "no report is missing"
    );
}

#[test]
fn a_pause_in_taken_reports_is_a_gap() {
    let history = vec![
        StoredReport {
            received_at: at(301),
            report: report(3, 300, HealthState::Healthy),
        },
        StoredReport {
            received_at: at(21),
            report: report(2, 20, HealthState::Healthy),
        },
        StoredReport {
            received_at: at(11),
            report: report(1, 10, HealthState::Healthy),
        },
    ];
    let html = site_page(
        &ctx(305),
        &SiteDetail {
            site: site("s", Some(301), HealthState::Healthy),
            history,
        },
    );
    assert_eq!(html.matches("data-testid=\"gap\"").count(), 1, "{html}");
    assert!(html.contains("(280 s)"));
}

#[test]
fn the_site_page_shows_the_os_update_state_from_the_last_report() {
    let mut updated = site("factory-2", Some(100), HealthState::Healthy);
    let without = site_page(
        &ctx(105),
        &SiteDetail {
            site: updated.clone(),
            history: Vec::new(),
        },
    );
    assert!(
        !without.contains("data-testid=\"os-update\""),
        "an agent that reports no update state shows none"
    );
    if let Some(report) = &mut updated.last_report {
        report.update = Some(scs_edge_proto::UpdateReport {
            phase: scs_edge_proto::UpdatePhase::Idle,
            target: None,
            failed: vec!["0.1.2".into()],
            last_outcome: Some(scs_edge_proto::UpdateOutcome {
                result: "rolled_back".into(),
                version: "0.1.2".into(),
                reason: Some("ovn-controller <down>".into()),
            }),
            refused: 2,
            last_refusal: Some(scs_edge_proto::UpdateRefusal {
                kind: "failed_before".into(),
                reason: "0.1.2 failed here before".into(),
                at: jiff::Timestamp::UNIX_EPOCH,
            }),
            last_error: None,
            waivers_used: 1,
            window: None,
        });
    }
    let html = site_page(
        &ctx(105),
        &SiteDetail {
            site: updated,
            history: Vec::new(),
        },
    );
    assert!(html.contains("data-testid=\"os-update\""), "{html}");
    assert!(
        html.contains(
            "idle · last: 0.1.2 rolled back (ovn-controller &lt;down&gt;) · failed: 0.1.2 · last \
             refused (failed_before): 0.1.2 failed here before · 1 under a freshness waiver · 2 refused"
        ),
        "{html}"
    );
}
