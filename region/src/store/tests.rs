//! The store's behaviour, written once and run on both engines.
//!
//! Every scenario takes a database URL and opens (and may reopen) the store itself, through the
//! public API only: here each runs on SQLite in a temporary directory; `tests/tests/region_store.rs`
//! compiles this same file (`#[path]`) and runs every scenario against a real PostgreSQL too. The list
//! of scenarios lives in [`for_each_scenario`], so a scenario added here runs on both engines.
#![allow(clippy::missing_panics_doc)]

use super::{
    CertificateRecord, Delivery, DesiredChange, ReleaseRecord, ReleaseState, Retarget,
    RolloutRecord, RolloutStep, RolloutSwitch, SiteState, Store, StoreError, TokenRefusal,
    Withdrawal,
};
use jiff::Timestamp;
use scs_edge_proto::{
    Capacity, ComponentHealth, HealthState, Report, ReportAck, ResourceCounts, Versions,
};
use std::collections::BTreeMap;

/// Expands `$run!(scenario, …)` with every scenario of this file.
macro_rules! for_each_scenario {
    ($run:ident) => {
        $run!(
            add_site_starts_pending_and_refuses_a_duplicate,
            sites_list_in_byte_order_of_their_names,
            join_activates_the_site_and_consumes_the_token,
            refused_joins_change_nothing,
            decommissioned_sites_refuse_every_change,
            decommission_revokes_certificates_voids_tokens_and_is_idempotent,
            certificates_are_recorded_per_site,
            reports_in_order_update_the_site,
            resent_reports_are_skipped_and_acknowledged_again,
            a_gap_refuses_the_whole_batch,
            recent_reports_are_newest_first_and_limited,
            desired_generation_moves_only_on_a_change,
            prune_keeps_each_sites_latest_report,
            everything_survives_closing_and_reopening,
            racing_joins_with_one_token_admit_exactly_one,
            racing_deliveries_of_one_batch_store_it_once,
            releases_are_recorded_once_and_withdrawn_once,
            a_site_is_in_one_active_rollout_and_steps_move_desired_states_together,
            the_switch_refuses_offers_and_a_retarget_offers_the_new_version,
        );
    };
}

async fn open(url: &str) -> Store {
    Store::open(url).await.expect("open store")
}

/// A fixed instant plus `seconds`: scenarios control time; the store never reads the clock.
fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn report(seq: u64, sent_at: Timestamp) -> Report {
    Report {
        seq,
        sent_at,
        versions: Versions {
            agent: "0.1.0".into(),
            os: "2026.1".into(),
            k3s: None,
        },
        health: vec![ComponentHealth {
            component: "libvirt".into(),
            state: HealthState::Healthy,
            detail: Some(format!("report {seq}")),
        }],
        capacity: Capacity {
            vcpus: 8,
            memory_mib: 16_384,
            disk_free_gib: 100,
        },
        resources: ResourceCounts {
            servers: seq,
            ..ResourceCounts::default()
        },
        update: None,
    }
}

fn reports(seqs: std::ops::RangeInclusive<u64>, sent_at: Timestamp) -> Vec<Report> {
    seqs.map(|seq| report(seq, sent_at)).collect()
}

fn certificate(serial: &str, site: &str) -> CertificateRecord {
    CertificateRecord {
        serial: serial.into(),
        site: site.into(),
        not_after: at(90 * 86_400),
        revoked_at: None,
    }
}

fn refusal(result: Result<(), StoreError>) -> TokenRefusal {
    match result {
        Err(StoreError::TokenRefused(why)) => why,
        other => panic!("expected a token refusal, got {other:?}"),
    }
}

/// Adds `name` and joins it with a fresh token, recording certificate `serial`.
async fn joined(store: &Store, name: &str, serial: &str) {
    store
        .add_site(name, &BTreeMap::new(), at(0))
        .await
        .expect("add site");
    let token = format!("token-of-{name}");
    store
        .add_join_token(&token, name, at(3_600), at(0))
        .await
        .expect("add token");
    store
        .join(&token, name, &certificate(serial, name), at(10))
        .await
        .expect("join");
}

pub(super) async fn add_site_starts_pending_and_refuses_a_duplicate(url: &str) {
    let store = open(url).await;
    let wanted = labels(&[("tier", "factory"), ("wave", "canary")]);
    let site = store
        .add_site("factory-1", &wanted, at(0))
        .await
        .expect("add");
    assert_eq!(site.name, "factory-1");
    assert_eq!(site.state, SiteState::Pending);
    assert_eq!(site.created_at, at(0));
    assert_eq!(
        (site.joined_at, site.last_seen, &site.last_report),
        (None, None, &None)
    );
    assert_eq!(site.last_seq, 0);
    assert_eq!(site.desired.generation, 1);
    assert_eq!(site.desired.labels, wanted);
    assert_eq!(site.desired.target_os_version, None);
    assert_eq!(
        store.site("factory-1").await.expect("read"),
        Some(site.clone())
    );

    let again = store
        .add_site("factory-1", &labels(&[("tier", "other")]), at(5))
        .await;
    assert!(
        matches!(&again, Err(StoreError::SiteExists(name)) if name == "factory-1"),
        "{again:?}"
    );
    assert_eq!(
        store.site("factory-1").await.expect("read"),
        Some(site),
        "the refused add changed nothing"
    );
    assert_eq!(store.site("nowhere").await.expect("read"), None);
}

pub(super) async fn sites_list_in_byte_order_of_their_names(url: &str) {
    let store = open(url).await;
    // A natural-language collation ignores the hyphen and would put "a-c" between "ab" and "ad".
    for name in ["ad", "ab", "a-c", "a1", "b"] {
        store
            .add_site(name, &BTreeMap::new(), at(0))
            .await
            .expect("add");
    }
    store
        .decommission_site("b", at(1))
        .await
        .expect("decommission");
    let sites = store.list_sites().await.expect("list");
    let names: Vec<_> = sites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a-c", "a1", "ab", "ad", "b"]);
    assert_eq!(
        sites.last().map(|s| s.state),
        Some(SiteState::Decommissioned),
        "decommissioned sites are listed"
    );
}

pub(super) async fn join_activates_the_site_and_consumes_the_token(url: &str) {
    let store = open(url).await;
    store
        .add_site("f", &BTreeMap::new(), at(0))
        .await
        .expect("add");
    store
        .add_join_token("t1", "f", at(3_600), at(0))
        .await
        .expect("token");
    let first = certificate("0a01", "f");
    store.join("t1", "f", &first, at(10)).await.expect("join");

    let site = store.site("f").await.expect("read").expect("site");
    assert_eq!(site.state, SiteState::Active);
    assert_eq!(site.joined_at, Some(at(10)));
    assert_eq!(store.certificate("0a01").await.expect("read"), Some(first));

    assert_eq!(
        refusal(
            store
                .join("t1", "f", &certificate("0a02", "f"), at(20))
                .await
        ),
        TokenRefusal::AlreadyUsed
    );
    assert_eq!(store.certificate("0a02").await.expect("read"), None);

    // A replaced node joins again with a new token: still active, joined_at stays the first join.
    store
        .add_join_token("t2", "f", at(3_600), at(30))
        .await
        .expect("token");
    store
        .join("t2", "f", &certificate("0a03", "f"), at(40))
        .await
        .expect("rejoin");
    let site = store.site("f").await.expect("read").expect("site");
    assert_eq!(site.state, SiteState::Active);
    assert_eq!(site.joined_at, Some(at(10)));
    assert!(store.certificate("0a03").await.expect("read").is_some());
}

pub(super) async fn refused_joins_change_nothing(url: &str) {
    let store = open(url).await;
    for name in ["a", "b"] {
        store
            .add_site(name, &BTreeMap::new(), at(0))
            .await
            .expect("add");
    }
    store
        .add_join_token("for-a", "a", at(100), at(0))
        .await
        .expect("token");
    store
        .add_join_token("stale", "a", at(50), at(0))
        .await
        .expect("token");

    let attempts = [
        ("forged", "a", at(10), TokenRefusal::Unknown),
        ("for-a", "b", at(10), TokenRefusal::OtherSite),
        ("stale", "a", at(50), TokenRefusal::Expired),
    ];
    for (serial, (token, site, now, expected)) in attempts.into_iter().enumerate() {
        let serial = format!("{serial:02x}");
        let got = refusal(
            store
                .join(token, site, &certificate(&serial, site), now)
                .await,
        );
        assert_eq!(got, expected, "{token} for {site}");
        assert_eq!(store.certificate(&serial).await.expect("read"), None);
    }
    // A certificate naming another site than the one joining is a caller bug, refused before
    // anything is touched.
    let mismatch = store
        .join("for-a", "a", &certificate("ee", "b"), at(10))
        .await;
    assert!(
        matches!(mismatch, Err(StoreError::Database { .. })),
        "{mismatch:?}"
    );
    for name in ["a", "b"] {
        let site = store.site(name).await.expect("read").expect("site");
        assert_eq!((site.state, site.joined_at), (SiteState::Pending, None));
    }
    // The token tried against another site, and in the mismatch, is still good for its own.
    store
        .join("for-a", "a", &certificate("aa", "a"), at(20))
        .await
        .expect("the token survived the refused attempts");

    assert!(matches!(
        store.add_join_token("t", "nowhere", at(100), at(0)).await,
        Err(StoreError::UnknownSite(name)) if name == "nowhere"
    ));
}

pub(super) async fn decommissioned_sites_refuse_every_change(url: &str) {
    let store = open(url).await;
    store
        .add_site("gone", &BTreeMap::new(), at(0))
        .await
        .expect("add");
    store
        .add_join_token("unused", "gone", at(3_600), at(0))
        .await
        .expect("token");
    let before = store
        .decommission_site("gone", at(5))
        .await
        .expect("decommission");

    assert_eq!(
        refusal(
            store
                .join("unused", "gone", &certificate("01", "gone"), at(10))
                .await
        ),
        TokenRefusal::Unknown,
        "decommissioning voided the unused token"
    );
    assert!(matches!(
        store.add_join_token("new", "gone", at(3_600), at(10)).await,
        Err(StoreError::SiteDecommissioned(_))
    ));
    assert!(matches!(
        store.add_certificate(&certificate("02", "gone")).await,
        Err(StoreError::SiteDecommissioned(_))
    ));
    assert!(matches!(
        store
            .append_reports("gone", &reports(1..=1, at(10)), at(10))
            .await,
        Err(StoreError::SiteDecommissioned(_))
    ));
    let change = DesiredChange {
        labels: Some(labels(&[("x", "y")])),
        target_os_version: None,
        maintenance_window: None,
    };
    assert!(matches!(
        store.change_desired("gone", &change).await,
        Err(StoreError::SiteDecommissioned(_))
    ));
    assert_eq!(store.site("gone").await.expect("read"), Some(before));
    for serial in ["01", "02"] {
        assert_eq!(store.certificate(serial).await.expect("read"), None);
    }
    assert!(
        store
            .recent_reports("gone", 10)
            .await
            .expect("read")
            .is_empty()
    );
}

pub(super) async fn decommission_revokes_certificates_voids_tokens_and_is_idempotent(url: &str) {
    let store = open(url).await;
    joined(&store, "f", "c1").await;
    joined(&store, "other", "c9").await;
    store
        .add_certificate(&certificate("c2", "f"))
        .await
        .expect("renewal");
    store
        .add_join_token("spare", "f", at(3_600), at(20))
        .await
        .expect("token");

    let site = store
        .decommission_site("f", at(100))
        .await
        .expect("decommission");
    assert_eq!(site.state, SiteState::Decommissioned);
    assert_eq!(site.joined_at, Some(at(10)), "the audit trail stays");
    for serial in ["c1", "c2"] {
        let cert = store
            .certificate(serial)
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(cert.revoked_at, Some(at(100)), "{serial}");
    }
    let untouched = store.certificate("c9").await.expect("read").expect("kept");
    assert_eq!(untouched.revoked_at, None, "another site's certificate");
    assert_eq!(
        refusal(
            store
                .join("spare", "f", &certificate("c3", "f"), at(110))
                .await
        ),
        TokenRefusal::Unknown
    );
    assert_eq!(
        refusal(
            store
                .join("token-of-f", "f", &certificate("c3", "f"), at(110))
                .await
        ),
        TokenRefusal::AlreadyUsed,
        "used tokens stay for the audit trail"
    );

    let again = store
        .decommission_site("f", at(200))
        .await
        .expect("idempotent");
    assert_eq!(again, site);
    let cert = store.certificate("c1").await.expect("read").expect("kept");
    assert_eq!(
        cert.revoked_at,
        Some(at(100)),
        "the first revocation time stands"
    );

    assert!(matches!(
        store.decommission_site("nowhere", at(200)).await,
        Err(StoreError::UnknownSite(name)) if name == "nowhere"
    ));
}

pub(super) async fn certificates_are_recorded_per_site(url: &str) {
    let store = open(url).await;
    joined(&store, "f", "01").await;
    assert_eq!(store.certificate("ff").await.expect("read"), None);
    let renewed = CertificateRecord {
        not_after: at(180 * 86_400),
        ..certificate("02", "f")
    };
    store.add_certificate(&renewed).await.expect("renewal");
    assert_eq!(store.certificate("02").await.expect("read"), Some(renewed));
    assert_eq!(
        store.certificate("01").await.expect("read"),
        Some(certificate("01", "f")),
        "the old certificate stays valid until it expires"
    );
    assert!(matches!(
        store.add_certificate(&certificate("03", "nowhere")).await,
        Err(StoreError::UnknownSite(name)) if name == "nowhere"
    ));
    assert_eq!(store.certificate("03").await.expect("read"), None);
}

pub(super) async fn reports_in_order_update_the_site(url: &str) {
    let store = open(url).await;
    joined(&store, "f", "01").await;
    let first = reports(1..=3, at(50));
    let ack = store
        .append_reports("f", &first, at(60))
        .await
        .expect("append");
    assert_eq!(
        ack,
        ReportAck {
            acked_through: 3,
            desired_generation: 1
        }
    );
    let site = store.site("f").await.expect("read").expect("site");
    assert_eq!(site.last_seq, 3);
    assert_eq!(site.last_seen, Some(at(60)));
    assert_eq!(site.last_report, Some(first[2].clone()));

    let ack = store
        .append_reports("f", &[report(4, at(65))], at(70))
        .await
        .expect("append");
    assert_eq!(ack.acked_through, 4);
    let site = store.site("f").await.expect("read").expect("site");
    assert_eq!((site.last_seq, site.last_seen), (4, Some(at(70))));
    assert_eq!(site.last_report, Some(report(4, at(65))));

    store
        .change_desired(
            "f",
            &DesiredChange {
                labels: None,
                target_os_version: Some(Some("2026.2".into())),
                maintenance_window: None,
            },
        )
        .await
        .expect("change");
    let ack = store.append_reports("f", &[], at(80)).await.expect("empty");
    assert_eq!(
        ack,
        ReportAck {
            acked_through: 4,
            desired_generation: 2
        },
        "the ack tells the node the desired state moved"
    );
    assert_eq!(
        store
            .site("f")
            .await
            .expect("read")
            .expect("site")
            .last_seen,
        Some(at(80)),
        "an empty delivery is still contact"
    );

    assert!(matches!(
        store.append_reports("nowhere", &first, at(60)).await,
        Err(StoreError::UnknownSite(name)) if name == "nowhere"
    ));
    assert!(matches!(
        store.recent_reports("nowhere", 10).await,
        Err(StoreError::UnknownSite(_))
    ));
}

pub(super) async fn resent_reports_are_skipped_and_acknowledged_again(url: &str) {
    let store = open(url).await;
    joined(&store, "f", "01").await;
    store
        .append_reports("f", &reports(1..=3, at(50)), at(60))
        .await
        .expect("append");

    // The answer was lost; the node sends the same reports again (here with different bodies, to
    // prove the stored ones are not overwritten).
    let resent = reports(2..=3, at(99));
    let ack = store
        .append_reports("f", &resent, at(70))
        .await
        .expect("resend");
    assert_eq!(ack.acked_through, 3);
    let stored = store.recent_reports("f", 10).await.expect("read");
    assert_eq!(stored.len(), 3);
    assert!(
        stored
            .iter()
            .all(|s| s.received_at == at(60) && s.report.sent_at == at(50)),
        "{stored:?}"
    );
    let site = store.site("f").await.expect("read").expect("site");
    assert_eq!(site.last_report, Some(report(3, at(50))));
    assert_eq!(site.last_seen, Some(at(70)));

    // A batch overlapping the stored end stores only its new tail.
    let ack = store
        .append_reports("f", &reports(3..=5, at(80)), at(90))
        .await
        .expect("overlap");
    assert_eq!(ack.acked_through, 5);
    let seqs: Vec<_> = store
        .recent_reports("f", 10)
        .await
        .expect("read")
        .iter()
        .map(|s| (s.report.seq, s.received_at))
        .collect();
    assert_eq!(
        seqs,
        [
            (5, at(90)),
            (4, at(90)),
            (3, at(60)),
            (2, at(60)),
            (1, at(60))
        ]
    );
}

pub(super) async fn a_gap_refuses_the_whole_batch(url: &str) {
    let store = open(url).await;
    joined(&store, "f", "01").await;
    let result = store
        .append_reports("f", &[report(2, at(40))], at(45))
        .await;
    assert!(
        matches!(result, Err(StoreError::OutOfOrder { expected: 1 })),
        "{result:?}"
    );
    store
        .append_reports("f", &reports(1..=2, at(50)), at(60))
        .await
        .expect("append");
    let before = store.site("f").await.expect("read").expect("site");

    for batch in [
        reports(4..=5, at(70)),
        vec![report(3, at(70)), report(5, at(70))],
        vec![report(2, at(70)), report(4, at(70))],
    ] {
        let result = store.append_reports("f", &batch, at(80)).await;
        assert!(
            matches!(result, Err(StoreError::OutOfOrder { expected: 3 })),
            "{result:?}"
        );
    }
    assert_eq!(
        store.site("f").await.expect("read"),
        Some(before),
        "nothing of a refused batch is stored, not even last_seen"
    );
    assert_eq!(store.recent_reports("f", 10).await.expect("read").len(), 2);
}

pub(super) async fn recent_reports_are_newest_first_and_limited(url: &str) {
    let store = open(url).await;
    joined(&store, "f", "01").await;
    joined(&store, "g", "02").await;
    for seq in 1..=5 {
        let now = at(100 + seq as i64);
        store
            .append_reports("f", &[report(seq, now)], now)
            .await
            .expect("append");
    }
    store
        .append_reports("g", &reports(1..=2, at(1)), at(1))
        .await
        .expect("append");

    let newest = store.recent_reports("f", 3).await.expect("read");
    let got: Vec<_> = newest
        .iter()
        .map(|s| (s.report.seq, s.received_at))
        .collect();
    assert_eq!(got, [(5, at(105)), (4, at(104)), (3, at(103))]);
    assert_eq!(newest[0].report, report(5, at(105)));
    assert_eq!(store.recent_reports("f", 100).await.expect("read").len(), 5);
    assert!(store.recent_reports("f", 0).await.expect("read").is_empty());
}

pub(super) async fn desired_generation_moves_only_on_a_change(url: &str) {
    let store = open(url).await;
    store
        .add_site("f", &labels(&[("tier", "factory")]), at(0))
        .await
        .expect("add");
    let set_labels = |l: &[(&str, &str)]| DesiredChange {
        labels: Some(labels(l)),
        target_os_version: None,
        maintenance_window: None,
    };
    let set_target = |v: Option<&str>| DesiredChange {
        labels: None,
        target_os_version: Some(v.map(str::to_owned)),
        maintenance_window: None,
    };

    let steps = [
        (set_labels(&[("tier", "factory"), ("wave", "1")]), 2),
        (set_labels(&[("tier", "factory"), ("wave", "1")]), 2),
        (set_target(Some("2026.2")), 3),
        (set_target(Some("2026.2")), 3),
        (DesiredChange::default(), 3),
        (set_target(None), 4),
    ];
    for (step, (change, generation)) in steps.iter().enumerate() {
        let desired = store.change_desired("f", change).await.expect("change");
        assert_eq!(desired.generation, *generation, "step {step}");
        assert_eq!(
            store.site("f").await.expect("read").expect("site").desired,
            desired,
            "step {step}: what was returned is what is stored"
        );
    }
    let desired = store.site("f").await.expect("read").expect("site").desired;
    assert_eq!(
        desired.labels,
        labels(&[("tier", "factory"), ("wave", "1")])
    );
    assert_eq!(desired.target_os_version, None);

    assert!(matches!(
        store.change_desired("nowhere", &set_target(None)).await,
        Err(StoreError::UnknownSite(_))
    ));
}

pub(super) async fn prune_keeps_each_sites_latest_report(url: &str) {
    let store = open(url).await;
    joined(&store, "a", "01").await;
    joined(&store, "b", "02").await;
    joined(&store, "quiet", "03").await;
    store
        .append_reports("a", &reports(1..=3, at(100)), at(100))
        .await
        .expect("append");
    store
        .append_reports("b", &reports(1..=1, at(100)), at(100))
        .await
        .expect("append");
    store
        .append_reports("a", &reports(4..=4, at(300)), at(300))
        .await
        .expect("append");

    assert_eq!(
        store.prune_reports(at(100)).await.expect("prune"),
        0,
        "strictly before"
    );
    assert_eq!(store.prune_reports(at(200)).await.expect("prune"), 3);
    let seqs =
        |stored: Vec<super::StoredReport>| stored.iter().map(|s| s.report.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.recent_reports("a", 10).await.expect("a")), [4]);
    assert_eq!(
        seqs(store.recent_reports("b", 10).await.expect("b")),
        [1],
        "a site's latest report stays however old"
    );
    assert_eq!(store.prune_reports(at(10_000)).await.expect("prune"), 0);
    assert_eq!(seqs(store.recent_reports("a", 10).await.expect("a")), [4]);
    let site = store.site("a").await.expect("read").expect("site");
    assert_eq!(site.last_seq, 4, "pruning never moves the sequence back");
    store
        .append_reports("a", &reports(5..=5, at(400)), at(400))
        .await
        .expect("the sequence continues after pruning");
}

fn release(version: &str, published: Timestamp) -> ReleaseRecord {
    let version: semver::Version = version.parse().expect("version");
    ReleaseRecord {
        manifest: scs_edge_proto::release::ReleaseManifest {
            schema: scs_edge_proto::release::MANIFEST_SCHEMA,
            min_from_version: semver::Version::new(0, 0, 0),
            max_version: None,
            artifacts: vec![scs_edge_proto::release::Artifact {
                kind: scs_edge_proto::release::ArtifactKind::Uki,
                target: format!("scs-edge_{version}.efi"),
                sha256: "ab".repeat(32),
                length: 4096,
                partition_uuid: None,
            }],
            version,
        },
        state: ReleaseState::Available,
        published_at: published,
        published_by: "alice".into(),
        withdrawal: None,
    }
}

pub(super) async fn releases_are_recorded_once_and_withdrawn_once(url: &str) {
    let store = open(url).await;
    let first = release("1.0.0", at(0));
    assert_eq!(
        store
            .add_releases(&[first.clone(), release("1.1.0", at(1))])
            .await
            .expect("add"),
        2
    );
    // A publication re-run after a crash: the recorded row stays as it was.
    let mut rerun = release("1.0.0", at(50));
    rerun.published_by = "bob".into();
    assert_eq!(store.add_releases(&[rerun]).await.expect("re-run"), 0);

    let withdrawal = Withdrawal {
        at: at(100),
        by: "carol".into(),
        reason: "breaks OVN on old NICs".into(),
    };
    let withdrawn = store
        .withdraw_release("1.1.0", &withdrawal)
        .await
        .expect("withdraw");
    assert_eq!(withdrawn.state, ReleaseState::Withdrawn);
    assert_eq!(withdrawn.withdrawal.as_ref(), Some(&withdrawal));
    // Again, later, by someone else: the first withdrawal stands.
    let again = store
        .withdraw_release(
            "1.1.0",
            &Withdrawal {
                at: at(200),
                by: "dave".into(),
                reason: "again".into(),
            },
        )
        .await
        .expect("idempotent");
    assert_eq!(again.withdrawal.as_ref(), Some(&withdrawal));
    assert!(matches!(
        store.withdraw_release("9.9.9", &withdrawal).await,
        Err(StoreError::UnknownRelease(version)) if version == "9.9.9"
    ));

    drop(store);
    let store = open(url).await;
    let mut releases = store.releases().await.expect("list");
    releases.sort_by(|a, b| a.manifest.version.cmp(&b.manifest.version));
    assert_eq!(releases.len(), 2);
    assert_eq!(releases[0], first);
    assert_eq!(releases[1].withdrawal.as_ref(), Some(&withdrawal));
}

fn rollout(name: &str, target: &str) -> RolloutRecord {
    RolloutRecord {
        name: name.into(),
        target_version: target.into(),
        plan: "{\"waves\":[]}".into(),
        state: "{\"progress\":\"running\"}".into(),
        active: true,
        revision: 1,
        created_at: at(0),
        created_by: "alice".into(),
        updated_at: at(0),
    }
}

fn step(from_revision: u64, offer: &[&str], take_back: &[&str], active: bool) -> RolloutStep {
    RolloutStep {
        from_revision,
        state: format!("{{\"step\":{from_revision}}}"),
        active,
        retarget: None,
        offer: offer.iter().map(|s| (*s).to_owned()).collect(),
        take_back: take_back.iter().map(|s| (*s).to_owned()).collect(),
        at: at(10),
    }
}

fn names(sites: &[&str]) -> Vec<String> {
    sites.iter().map(|s| (*s).to_owned()).collect()
}

pub(super) async fn a_site_is_in_one_active_rollout_and_steps_move_desired_states_together(
    url: &str,
) {
    let store = open(url).await;
    for site in ["a", "b", "c"] {
        store
            .add_site(site, &labels(&[]), at(0))
            .await
            .expect("site");
    }
    store
        .add_releases(&[release("1.1.0", at(0))])
        .await
        .expect("release");
    let before_a = store
        .change_desired(
            "a",
            &DesiredChange {
                labels: None,
                target_os_version: Some(Some("1.0.0".into())),
                maintenance_window: None,
            },
        )
        .await
        .expect("a wants 1.0.0");

    store
        .create_rollout(&rollout("r1", "1.1.0"), &names(&["a", "b"]))
        .await
        .expect("r1");
    for (attempt, expected) in [
        (
            store
                .create_rollout(&rollout("r2", "1.1.0"), &names(&["b", "c"]))
                .await,
            "overlap",
        ),
        (
            store
                .create_rollout(&rollout("r1", "1.1.0"), &names(&["c"]))
                .await,
            "exists",
        ),
        (
            store
                .create_rollout(&rollout("r3", "9.9.9"), &names(&["c"]))
                .await,
            "release",
        ),
        (
            store
                .create_rollout(&rollout("r4", "1.1.0"), &names(&["zz"]))
                .await,
            "site",
        ),
    ] {
        match (attempt, expected) {
            (Err(StoreError::RolloutOverlap { rollout, sites }), "overlap") => {
                assert_eq!((rollout.as_str(), sites), ("r1", names(&["b"])));
            }
            (Err(StoreError::RolloutExists(_)), "exists")
            | (Err(StoreError::UnknownRelease(_)), "release")
            | (Err(StoreError::UnknownSite(_)), "site") => {}
            (other, _) => panic!("{expected}: {other:?}"),
        }
    }
    assert_eq!(
        store.rollouts().await.expect("list").len(),
        1,
        "refusals wrote nothing"
    );

    // A step offers a and b: both desired states move, with their generations.
    assert_eq!(
        store
            .save_rollout_step("r1", &step(1, &["a", "b"], &[], true))
            .await
            .expect("step"),
        2
    );
    let a = store.site("a").await.expect("a").expect("a");
    assert_eq!(a.desired.target_os_version.as_deref(), Some("1.1.0"));
    assert_eq!(a.desired.generation, before_a.generation + 1);
    // A step computed from the old revision changes nothing.
    assert!(matches!(
        store
            .save_rollout_step("r1", &step(1, &[], &["a"], true))
            .await,
        Err(StoreError::RolloutChanged(_))
    ));
    assert_eq!(
        store
            .site("a")
            .await
            .expect("a")
            .expect("a")
            .desired
            .target_os_version
            .as_deref(),
        Some("1.1.0")
    );
    // Taking the offer back restores what a wanted before.
    store
        .save_rollout_step("r1", &step(2, &[], &["a"], true))
        .await
        .expect("take back");
    let a = store.site("a").await.expect("a").expect("a");
    assert_eq!(a.desired.target_os_version.as_deref(), Some("1.0.0"));
    let b = store.site("b").await.expect("b").expect("b");
    assert_eq!(b.desired.target_os_version.as_deref(), Some("1.1.0"));
    assert!(matches!(
        store
            .save_rollout_step("nope", &step(1, &[], &[], true))
            .await,
        Err(StoreError::UnknownRollout(_))
    ));

    // Finished: its sites are free for the next rollout.
    store
        .save_rollout_step("r1", &step(3, &[], &[], false))
        .await
        .expect("done");
    store
        .create_rollout(&rollout("r2", "1.1.0"), &names(&["b", "c"]))
        .await
        .expect("r2 after r1");
    let mut all = store.rollouts().await.expect("list");
    all.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(
        all.iter()
            .map(|r| (r.name.as_str(), r.active, r.revision))
            .collect::<Vec<_>>(),
        [("r1", false, 4), ("r2", true, 1)]
    );
    assert_eq!(all[0].state, "{\"step\":3}");
}

pub(super) async fn the_switch_refuses_offers_and_a_retarget_offers_the_new_version(url: &str) {
    let store = open(url).await;
    for site in ["a", "b"] {
        store
            .add_site(site, &labels(&[]), at(0))
            .await
            .expect("site");
    }
    store
        .add_releases(&[release("1.1.0", at(0)), release("1.1.1", at(1))])
        .await
        .expect("releases");
    store
        .create_rollout(&rollout("r", "1.1.0"), &names(&["a", "b"]))
        .await
        .expect("rollout");
    let never = store.rollout_switch().await.expect("switch");
    assert!(!never.engaged);
    // An air-gapped site, as rollouts read it.
    store
        .set_delivery("b", Delivery::Manual)
        .await
        .expect("delivery");
    assert_eq!(
        store.site("b").await.expect("b").expect("b").delivery,
        Delivery::Manual
    );
    assert_eq!(
        store.site("a").await.expect("a").expect("a").delivery,
        Delivery::Online,
        "online unless said otherwise"
    );
    assert!(matches!(
        store.set_delivery("zz", Delivery::Manual).await,
        Err(StoreError::UnknownSite(_))
    ));

    let engaged = RolloutSwitch {
        engaged: true,
        changed_at: at(5),
        changed_by: "carol".into(),
        reason: "ovn flaps at three sites".into(),
    };
    store.set_rollout_switch(&engaged).await.expect("engage");
    assert_eq!(store.rollout_switch().await.expect("switch"), engaged);
    match store
        .save_rollout_step("r", &step(1, &["a"], &[], true))
        .await
    {
        Err(StoreError::SwitchEngaged { by, reason }) => {
            assert_eq!(
                (by.as_str(), reason.as_str()),
                ("carol", "ovn flaps at three sites")
            );
        }
        other => panic!("an offer while engaged: {other:?}"),
    }
    let a = store.site("a").await.expect("a").expect("a");
    assert_eq!(a.desired.target_os_version, None, "nothing was offered");
    assert_eq!(store.rollouts().await.expect("list")[0].revision, 1);
    // Steps without offers still go on (following, taking back).
    store
        .save_rollout_step("r", &step(1, &[], &[], true))
        .await
        .expect("a step that offers nothing");

    store
        .set_rollout_switch(&RolloutSwitch {
            engaged: false,
            ..engaged
        })
        .await
        .expect("release");
    let mut retarget = step(2, &["b"], &[], true);
    retarget.retarget = Some(Retarget {
        version: "9.9.9".into(),
        plan: "{\"target\":\"9.9.9\"}".into(),
    });
    assert!(matches!(
        store.save_rollout_step("r", &retarget).await,
        Err(StoreError::UnknownRelease(version)) if version == "9.9.9"
    ));
    retarget.retarget = Some(Retarget {
        version: "1.1.1".into(),
        plan: "{\"target\":\"1.1.1\"}".into(),
    });
    store
        .save_rollout_step("r", &retarget)
        .await
        .expect("retarget");
    let b = store.site("b").await.expect("b").expect("b");
    assert_eq!(b.desired.target_os_version.as_deref(), Some("1.1.1"));
    let stored = &store.rollouts().await.expect("list")[0];
    assert_eq!(
        (stored.target_version.as_str(), stored.plan.as_str()),
        ("1.1.1", "{\"target\":\"1.1.1\"}")
    );
}

pub(super) async fn everything_survives_closing_and_reopening(url: &str) {
    let store = open(url).await;
    joined(&store, "f", "01").await;
    store
        .add_site("pending", &labels(&[("k", "v")]), at(1))
        .await
        .expect("add");
    store
        .add_join_token("later", "pending", at(3_600), at(1))
        .await
        .expect("token");
    store
        .append_reports("f", &reports(1..=3, at(50)), at(60))
        .await
        .expect("append");
    store
        .change_desired(
            "f",
            &DesiredChange {
                labels: Some(labels(&[("wave", "2")])),
                target_os_version: Some(Some("2026.3".into())),
                maintenance_window: None,
            },
        )
        .await
        .expect("change");
    joined(&store, "gone", "09").await;
    store
        .decommission_site("gone", at(70))
        .await
        .expect("decommission");
    let sites = store.list_sites().await.expect("list");
    let history = store.recent_reports("f", 10).await.expect("reports");
    drop(store);

    let store = open(url).await;
    assert_eq!(store.list_sites().await.expect("list"), sites);
    assert_eq!(
        store.recent_reports("f", 10).await.expect("reports"),
        history
    );
    assert_eq!(
        store
            .certificate("09")
            .await
            .expect("read")
            .map(|c| c.revoked_at),
        Some(Some(at(70)))
    );
    assert_eq!(
        refusal(
            store
                .join("token-of-f", "f", &certificate("02", "f"), at(80))
                .await
        ),
        TokenRefusal::AlreadyUsed
    );
    let ack = store
        .append_reports("f", &reports(3..=4, at(90)), at(90))
        .await
        .expect("the sequence continues");
    assert_eq!(
        ack,
        ReportAck {
            acked_through: 4,
            desired_generation: 2
        }
    );
    store
        .join("later", "pending", &certificate("03", "pending"), at(95))
        .await
        .expect("an unused token survives");
}

pub(super) async fn racing_joins_with_one_token_admit_exactly_one(url: &str) {
    let store = open(url).await;
    store
        .add_site("f", &BTreeMap::new(), at(0))
        .await
        .expect("add");
    store
        .add_join_token("t", "f", at(3_600), at(0))
        .await
        .expect("token");
    let mut racers = tokio::task::JoinSet::new();
    for n in 0..8 {
        let store = store.clone();
        racers.spawn(async move {
            let serial = format!("{n:02x}");
            let result = store
                .join("t", "f", &certificate(&serial, "f"), at(10))
                .await;
            (serial, result)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = racers.join_next().await {
        let (serial, result) = joined.expect("task");
        match result {
            Ok(()) => winners.push(serial),
            Err(e) => assert_eq!(refusal(Err(e)), TokenRefusal::AlreadyUsed),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    for n in 0..8 {
        let serial = format!("{n:02x}");
        assert_eq!(
            store.certificate(&serial).await.expect("read").is_some(),
            winners.contains(&serial),
            "{serial}"
        );
    }
}

pub(super) async fn racing_deliveries_of_one_batch_store_it_once(url: &str) {
    let store = open(url).await;
    joined(&store, "f", "01").await;
    let batch = reports(1..=5, at(50));
    let mut deliveries = tokio::task::JoinSet::new();
    for n in 0..8 {
        let store = store.clone();
        let batch = batch.clone();
        deliveries.spawn(async move { store.append_reports("f", &batch, at(60 + n)).await });
    }
    while let Some(delivered) = deliveries.join_next().await {
        let ack = delivered
            .expect("task")
            .expect("every delivery is acknowledged");
        assert_eq!(ack.acked_through, 5);
    }
    let stored = store.recent_reports("f", 100).await.expect("read");
    let seqs: Vec<_> = stored.iter().map(|s| s.report.seq).collect();
    assert_eq!(seqs, [5, 4, 3, 2, 1]);
    let received = stored[0].received_at;
    assert!(
        stored.iter().all(|s| s.received_at == received),
        "one delivery stored all five"
    );
}

/// Runs each scenario on a fresh SQLite file.
macro_rules! sqlite_scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("region.db").display());
                super::$name(&url).await;
            }
        )*
    };
}

mod sqlite {
    for_each_scenario!(sqlite_scenarios);
}

#[tokio::test]
async fn an_in_memory_database_works_and_is_private_to_its_store() {
    let store = Store::open("sqlite::memory:").await.expect("open");
    assert_eq!(store.engine(), "sqlite");
    store
        .add_site("f", &BTreeMap::new(), at(0))
        .await
        .expect("add");
    assert_eq!(store.list_sites().await.expect("list").len(), 1);
    let other = Store::open("sqlite::memory:").await.expect("open");
    assert!(other.list_sites().await.expect("list").is_empty());
}

#[tokio::test]
async fn an_unknown_url_scheme_is_refused() {
    let result = Store::open("mysql://localhost/region").await;
    assert!(
        matches!(&result, Err(StoreError::UnsupportedUrl(url)) if url == "mysql://localhost/region"),
        "{result:?}"
    );
}
