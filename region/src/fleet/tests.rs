//! The fleet's rules over a real SQLite store and a real CA (in a tempdir), with a settable clock.

use super::*;
use crate::store::SiteState;
use rcgen::{CertificateParams, KeyPair};
use scs_edge_proto::{Capacity, Report, ResourceCounts, Versions};

struct Setup {
    _dir: tempfile::TempDir,
    fleet: Fleet,
    clock: Arc<ManualClock>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = Timestamp::from_second(1_800_000_000).expect("ts");
    let clock = Arc::new(ManualClock::new(start));
    let ca = RegionCa::load_or_create(dir.path(), "test", start).expect("ca");
    let url = format!("sqlite://{}", dir.path().join("region.db").display());
    let store = Store::open(&url).await.expect("store");
    let fleet = Fleet::new(
        store,
        Arc::new(ca),
        clock.clone(),
        EnrollmentPolicy {
            certificate_lifetime: SignedDuration::from_hours(24),
            token_lifetime: SignedDuration::from_hours(1),
        },
    );
    Setup {
        _dir: dir,
        fleet,
        clock,
    }
}

fn csr() -> String {
    let key = KeyPair::generate().expect("key");
    CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

fn join_request(site: &str, token: &str) -> JoinRequest {
    JoinRequest {
        site: site.into(),
        token: token.into(),
        csr_pem: csr(),
        agent_version: "0.1.0".into(),
    }
}

fn node_of(enrollment: &Enrollment) -> NodeIdentity {
    let der = crate::ca::pem_to_der(&enrollment.certificate_pem, "CERTIFICATE").expect("der");
    crate::http::node_identity(&der).expect("identity")
}

fn report(seq: u64) -> Report {
    Report {
        seq,
        sent_at: Timestamp::from_second(1_800_000_000 + seq as i64).expect("ts"),
        versions: Versions {
            agent: "0.1.0".into(),
            ..Versions::default()
        },
        health: vec![],
        capacity: Capacity::default(),
        resources: ResourceCounts::default(),
        update: None,
    }
}

#[tokio::test]
async fn a_node_joins_once_with_its_token_and_gets_a_certificate_for_its_site() {
    let s = setup().await;
    s.fleet
        .add_site("factory-1", BTreeMap::new())
        .await
        .expect("add");
    let token = s
        .fleet
        .create_join_token("factory-1", None)
        .await
        .expect("token");
    assert!(token.token.starts_with("scsj_"));
    assert!(
        !format!("{token:?}").contains(&token.token),
        "Debug hides the secret"
    );

    let enrollment = s
        .fleet
        .join(&join_request("factory-1", &token.token))
        .await
        .expect("join");
    assert_eq!(enrollment.site, "factory-1");
    assert!(enrollment.renew_after < enrollment.not_after);
    assert_eq!(enrollment.ca_pem, s.fleet.ca().certificate_pem());
    let node = node_of(&enrollment);
    assert_eq!(node.site, "factory-1");
    s.fleet
        .authorize_node(&node, "factory-1")
        .await
        .expect("the new certificate is accepted");
    let site = s.fleet.site("factory-1").await.expect("site").site;
    assert_eq!(site.state, SiteState::Active);

    let again = s
        .fleet
        .join(&join_request("factory-1", &token.token))
        .await
        .expect_err("reuse");
    assert!(
        matches!(again, FleetError::TokenRefused(TokenRefusal::AlreadyUsed)),
        "{again}"
    );
}

#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_refused_and_change_nothing() {
    let s = setup().await;
    s.fleet.add_site("a", BTreeMap::new()).await.expect("a");
    s.fleet.add_site("b", BTreeMap::new()).await.expect("b");
    let token = s.fleet.create_join_token("a", None).await.expect("token");

    let forged = s
        .fleet
        .join(&join_request("a", "scsj_forged"))
        .await
        .expect_err("forged");
    assert!(
        matches!(forged, FleetError::TokenRefused(TokenRefusal::Unknown)),
        "{forged}"
    );
    let other = s
        .fleet
        .join(&join_request("b", &token.token))
        .await
        .expect_err("other site");
    assert!(
        matches!(other, FleetError::TokenRefused(TokenRefusal::OtherSite)),
        "{other}"
    );
    assert_eq!(
        s.fleet.site("b").await.expect("b").site.state,
        SiteState::Pending,
        "b did not join"
    );

    // A CSR that does not verify: refused before the token is touched.
    let mut bad = join_request("a", &token.token);
    bad.csr_pem =
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into();
    assert!(matches!(
        s.fleet.join(&bad).await.expect_err("csr"),
        FleetError::Csr(_)
    ));

    s.clock.advance(SignedDuration::from_hours(2));
    let expired = s
        .fleet
        .join(&join_request("a", &token.token))
        .await
        .expect_err("expired");
    assert!(
        matches!(expired, FleetError::TokenRefused(TokenRefusal::Expired)),
        "{expired}"
    );
    assert_eq!(
        s.fleet.site("a").await.expect("a").site.state,
        SiteState::Pending
    );

    let fresh = s
        .fleet
        .create_join_token("a", None)
        .await
        .expect("fresh token");
    s.fleet
        .join(&join_request("a", &fresh.token))
        .await
        .expect("a fresh token still works");
}

#[tokio::test]
async fn decommissioning_revokes_the_sites_certificates_on_the_next_request() {
    let s = setup().await;
    s.fleet.add_site("a", BTreeMap::new()).await.expect("a");
    s.fleet.add_site("b", BTreeMap::new()).await.expect("b");
    let ta = s.fleet.create_join_token("a", None).await.expect("ta");
    let tb = s.fleet.create_join_token("b", None).await.expect("tb");
    let node_a = node_of(
        &s.fleet
            .join(&join_request("a", &ta.token))
            .await
            .expect("a joins"),
    );
    let node_b = node_of(
        &s.fleet
            .join(&join_request("b", &tb.token))
            .await
            .expect("b joins"),
    );
    let spare = s.fleet.create_join_token("a", None).await.expect("spare");

    let wrong = s
        .fleet
        .authorize_node(&node_a, "b")
        .await
        .expect_err("a's cert on b's path");
    assert!(matches!(wrong, FleetError::Unauthenticated(_)), "{wrong}");

    s.fleet.remove_site("a").await.expect("remove");
    let revoked = s
        .fleet
        .authorize_node(&node_a, "a")
        .await
        .expect_err("revoked");
    assert!(matches!(revoked, FleetError::Revoked(_)), "{revoked}");
    s.fleet
        .authorize_node(&node_b, "b")
        .await
        .expect("b is untouched");
    let rejoin = s
        .fleet
        .join(&join_request("a", &spare.token))
        .await
        .expect_err("tokens voided");
    assert!(matches!(rejoin, FleetError::TokenRefused(_)), "{rejoin}");
    assert!(
        s.fleet.create_join_token("a", None).await.is_err(),
        "no new tokens for a retired site"
    );
}

#[tokio::test]
async fn a_certificate_the_region_never_issued_is_refused_even_for_a_known_site() {
    let s = setup().await;
    s.fleet.add_site("a", BTreeMap::new()).await.expect("a");
    let forged = NodeIdentity {
        serial: "7f00".into(),
        site: "a".into(),
    };
    let err = s
        .fleet
        .authorize_node(&forged, "a")
        .await
        .expect_err("unknown serial");
    assert!(matches!(err, FleetError::Unauthenticated(_)), "{err}");
}

#[tokio::test]
async fn renewal_issues_a_new_certificate_and_the_old_one_stays_valid_until_expiry() {
    let s = setup().await;
    s.fleet.add_site("a", BTreeMap::new()).await.expect("a");
    let token = s.fleet.create_join_token("a", None).await.expect("token");
    let first = node_of(
        &s.fleet
            .join(&join_request("a", &token.token))
            .await
            .expect("join"),
    );
    s.clock.advance(SignedDuration::from_hours(13));
    let renewed = s.fleet.renew(&first, &csr()).await.expect("renew");
    let second = node_of(&renewed);
    assert_ne!(first.serial, second.serial);
    s.fleet.authorize_node(&second, "a").await.expect("new");
    s.fleet
        .authorize_node(&first, "a")
        .await
        .expect("old still valid");
    s.clock.advance(SignedDuration::from_hours(12));
    let expired = s
        .fleet
        .authorize_node(&first, "a")
        .await
        .expect_err("old expired");
    assert!(expired.to_string().contains("expired"), "{expired}");
    s.fleet
        .authorize_node(&second, "a")
        .await
        .expect("new still valid");
}

#[tokio::test]
async fn malformed_report_batches_are_refused_and_nothing_is_stored() {
    let s = setup().await;
    s.fleet.add_site("a", BTreeMap::new()).await.expect("a");
    let token = s.fleet.create_join_token("a", None).await.expect("token");
    let node = node_of(
        &s.fleet
            .join(&join_request("a", &token.token))
            .await
            .expect("join"),
    );
    let batches = [
        ReportBatch { reports: vec![] },
        ReportBatch {
            reports: (1..=(MAX_REPORTS_PER_BATCH as u64 + 1))
                .map(report)
                .collect(),
        },
        ReportBatch {
            reports: vec![report(1), report(3)],
        },
        ReportBatch {
            reports: vec![report(0)],
        },
    ];
    for batch in &batches {
        let err = s
            .fleet
            .accept_reports(&node, batch)
            .await
            .expect_err("refused");
        assert!(matches!(err, FleetError::BadReport(_)), "{err}");
    }
    assert_eq!(s.fleet.site("a").await.expect("a").site.last_seq, 0);
    let gap = s
        .fleet
        .accept_reports(
            &node,
            &ReportBatch {
                reports: vec![report(2)],
            },
        )
        .await
        .expect_err("gap");
    assert!(
        matches!(gap, FleetError::OutOfOrder { expected: 1 }),
        "{gap}"
    );
    let ack = s
        .fleet
        .accept_reports(
            &node,
            &ReportBatch {
                reports: vec![report(1), report(2)],
            },
        )
        .await
        .expect("in order");
    assert_eq!(ack.acked_through, 2);
}

#[tokio::test]
async fn names_labels_and_lifetimes_are_validated() {
    let s = setup().await;
    for bad in ["", "UPPER", "-lead", "has space", "a/b", &"x".repeat(64)] {
        assert!(
            matches!(
                s.fleet.add_site(bad, BTreeMap::new()).await,
                Err(FleetError::InvalidSiteName(_))
            ),
            "{bad}"
        );
    }
    let labels = BTreeMap::from([("bad key".to_owned(), "v".to_owned())]);
    assert!(matches!(
        s.fleet.add_site("ok", labels).await,
        Err(FleetError::InvalidLabel(_))
    ));
    assert!(
        s.fleet.sites().await.expect("list").is_empty(),
        "nothing was stored"
    );
    s.fleet.add_site("ok", BTreeMap::new()).await.expect("ok");
    assert!(matches!(
        s.fleet.add_site("ok", BTreeMap::new()).await,
        Err(FleetError::SiteExists(_))
    ));
    let too_long = s
        .fleet
        .create_join_token("ok", Some(SignedDuration::from_hours(24 * 31)))
        .await;
    assert!(matches!(too_long, Err(FleetError::InvalidInput(_))));
    assert!(matches!(
        s.fleet.create_join_token("nope", None).await,
        Err(FleetError::UnknownSite(_))
    ));
    let change = DesiredChange {
        target_os_version: Some(Some("1.0; rm -rf".into())),
        ..DesiredChange::default()
    };
    assert!(matches!(
        s.fleet.change_desired("ok", &change).await,
        Err(FleetError::InvalidInput(_))
    ));
}
