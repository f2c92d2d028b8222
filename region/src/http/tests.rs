use super::*;
use crate::ca::RegionCa;
use crate::store::TokenRefusal;
use jiff::Timestamp;
use rcgen::{CertificateParams, KeyPair};

fn ca() -> (tempfile::TempDir, RegionCa) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = RegionCa::load_or_create(dir.path(), "test", Timestamp::now()).expect("ca");
    (dir, ca)
}

fn node_certificate_der(ca: &RegionCa, site: &str) -> (Vec<u8>, String) {
    let key = KeyPair::generate().expect("key");
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let issued = ca
        .sign_node_csr(&csr, site, Timestamp::now(), SignedDuration::from_hours(1))
        .expect("sign");
    (
        crate::ca::pem_to_der(&issued.pem, "CERTIFICATE").expect("der"),
        issued.serial,
    )
}

#[test]
fn the_node_identity_comes_from_the_certificate_san_and_serial() {
    let (_dir, ca) = ca();
    let (der, serial) = node_certificate_der(&ca, "factory-7");
    let node = node_identity(&der).expect("identity");
    assert_eq!(node.site, "factory-7");
    assert_eq!(node.serial, serial);
}

#[test]
fn a_certificate_without_a_site_is_not_a_node() {
    let (_dir, ca) = ca();
    let (issued, _key) = ca
        .issue_server_certificate(
            &["localhost".into()],
            Timestamp::now(),
            SignedDuration::from_hours(1),
        )
        .expect("server cert");
    let der = crate::ca::pem_to_der(&issued.pem, "CERTIFICATE").expect("der");
    let err = node_identity(&der).expect_err("no site");
    assert!(err.contains("names no site"), "{err}");
    assert!(node_identity(b"garbage").is_err());
}

#[test]
fn domain_errors_map_to_statuses_and_codes_in_one_place() {
    let cases = [
        (
            FleetError::InvalidSiteName("X".into()),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
        ),
        (
            FleetError::TokenRefused(TokenRefusal::Expired),
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidJoinToken,
        ),
        (
            FleetError::TokenRefused(TokenRefusal::Unknown),
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidJoinToken,
        ),
        (
            FleetError::Unauthenticated("x".into()),
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
        ),
        (
            FleetError::Revoked("s".into()),
            StatusCode::FORBIDDEN,
            ErrorCode::SiteRevoked,
        ),
        (
            FleetError::UnknownSite("s".into()),
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownSite,
        ),
        (
            FleetError::OutOfOrder { expected: 5 },
            StatusCode::CONFLICT,
            ErrorCode::OutOfOrder,
        ),
        (
            FleetError::BadReport("x".into()),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
        ),
    ];
    for (error, status, code) in cases {
        let api = ApiError::from(error);
        assert_eq!(api.status, status);
        assert_eq!(api.body.error.code, code);
    }
    let api = ApiError::from(FleetError::OutOfOrder { expected: 5 });
    assert_eq!(api.body.error.expected_seq, Some(5));
    // The reason a token failed is not told to the caller: every refusal reads the same.
    let expired = ApiError::from(FleetError::TokenRefused(TokenRefusal::Expired))
        .body
        .error
        .message;
    let unknown = ApiError::from(FleetError::TokenRefused(TokenRefusal::Unknown))
        .body
        .error
        .message;
    let used = ApiError::from(FleetError::TokenRefused(TokenRefusal::AlreadyUsed))
        .body
        .error
        .message;
    assert_eq!(expired, unknown);
    assert_eq!(used, unknown);
}

#[test]
fn internal_failures_do_not_leak_their_detail() {
    let api = ApiError::from(FleetError::Store(crate::store::StoreError::Database {
        operation: "append",
        message: "password authentication failed for user region".into(),
    }));
    assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!api.body.error.message.contains("password"));
}

#[test]
fn json_errors_name_the_field() {
    let err = parse_json::<scs_edge_proto::JoinRequest>(br#"{"site": 5}"#).expect_err("type");
    assert_eq!(err.status, StatusCode::BAD_REQUEST);
    assert!(
        err.body.error.message.contains("site"),
        "{}",
        err.body.error.message
    );
}

mod writes {
    //! Cross-site request forgery on both kinds of writes, through the whole router.
    use super::super::{AppState, OperatorAccess, Peer, Sessions, router};
    use crate::fleet::{EnrollmentPolicy, Fleet, SystemClock};
    use crate::rollouts::service::Rollouts;
    use crate::store::{ReleaseRecord, ReleaseState, Store};
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use jiff::SignedDuration;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use tower::ServiceExt as _;

    struct Region {
        _dir: tempfile::TempDir,
        state: AppState,
    }

    async fn region() -> Region {
        // Another test may have installed it already.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (dir, ca) = super::ca();
        let store = Store::open("sqlite::memory:").await.expect("store");
        let fleet = Fleet::new(
            store.clone(),
            Arc::new(ca),
            Arc::new(SystemClock),
            EnrollmentPolicy {
                certificate_lifetime: SignedDuration::from_hours(24),
                token_lifetime: SignedDuration::from_hours(1),
            },
        );
        let rollouts = Rollouts::new(store, Arc::new(SystemClock), SignedDuration::from_secs(10));
        let state = AppState {
            fleet,
            operator_access: OperatorAccess::LoopbackOnly,
            login: Arc::default(),
            sessions: Sessions::default(),
            http_client: reqwest::Client::new(),
            region_name: "test".into(),
            expected_interval: SignedDuration::from_secs(10),
            releases: None,
            rollouts,
        };
        Region { _dir: dir, state }
    }

    async fn send(region: &Region, from: &str, request: Request<Body>) -> (StatusCode, String) {
        let peer = Peer {
            address: format!("{from}:40000").parse().expect("address"),
            node: None,
            certificate_problem: None,
        };
        let response = router(region.state.clone())
            .layer(axum::Extension(peer))
            .oneshot(request)
            .await
            .expect("answer");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn site_names(region: &Region) -> Vec<String> {
        region
            .state
            .fleet
            .sites()
            .await
            .expect("sites")
            .into_iter()
            .map(|site| site.name)
            .collect()
    }

    fn add_site() -> axum::http::request::Builder {
        Request::post("/api/v1/sites")
    }

    #[tokio::test]
    async fn api_writes_a_browser_page_could_forge_are_refused_and_change_nothing() {
        let region = region().await;
        let body = || Body::from(r#"{"name": "forged"}"#);
        for (request, status) in [
            // A no-cors fetch or a form: a "simple" content type, sent without a preflight.
            (
                add_site().header("content-type", "text/plain").body(body()),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (add_site().body(body()), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            (
                add_site()
                    .header("content-type", "application/json")
                    .header("sec-fetch-site", "cross-site")
                    .body(body()),
                StatusCode::FORBIDDEN,
            ),
        ] {
            let (got, answer) = send(&region, "127.0.0.1", request.expect("request")).await;
            assert_eq!(got, status, "{answer}");
        }
        assert!(site_names(&region).await.is_empty(), "nothing was written");

        // What a program sends.
        let (got, answer) = send(
            &region,
            "127.0.0.1",
            add_site()
                .header("content-type", "application/json; charset=utf-8")
                .body(Body::from(r#"{"name": "real"}"#))
                .expect("request"),
        )
        .await;
        assert_eq!(got, StatusCode::CREATED, "{answer}");
        assert_eq!(site_names(&region).await, ["real"]);
    }

    #[tokio::test]
    async fn a_session_cookie_authenticates_pages_but_never_an_api_write() {
        let region = region().await;
        let session = region.state.sessions.open("alice".into()).expect("session");
        let cookie = format!("scs_edge_session={session}");
        let (read, _) = send(
            &region,
            "192.0.2.7",
            Request::get("/api/v1/sites")
                .header("cookie", &cookie)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(read, StatusCode::OK);
        let (write, answer) = send(
            &region,
            "192.0.2.7",
            Request::post("/api/v1/sites")
                .header("cookie", &cookie)
                .header("content-type", "application/json")
                .body(Body::from(r#"{"name": "by-cookie"}"#))
                .expect("request"),
        )
        .await;
        assert_eq!(write, StatusCode::UNAUTHORIZED, "{answer}");
        assert!(site_names(&region).await.is_empty());
    }

    #[tokio::test]
    async fn dashboard_forms_need_the_regions_origin_and_the_operators_form_token() {
        let region = region().await;
        let store = region.state.fleet.store();
        store
            .add_releases(&[ReleaseRecord {
                manifest: scs_edge_proto::release::ReleaseManifest {
                    schema: scs_edge_proto::release::MANIFEST_SCHEMA,
                    version: "1.1.0".parse().expect("version"),
                    min_from_version: semver::Version::new(0, 0, 0),
                    max_version: None,
                    artifacts: Vec::new(),
                },
                state: ReleaseState::Available,
                published_at: jiff::Timestamp::now(),
                published_by: "alice".into(),
                withdrawal: None,
            }])
            .await
            .expect("release");
        crate::store::fixtures::joined_site(store, "a", &BTreeMap::new(), jiff::Timestamp::now())
            .await;
        let spec = serde_json::from_str(
            r#"{"name": "r", "target_version": "1.1.0", "waves": [{"name": "all"}]}"#,
        )
        .expect("spec");
        region
            .state
            .rollouts
            .create(&spec, "alice")
            .await
            .expect("rollout");
        let token = region.state.sessions.local_form_token().expect("token");
        let pause = |origin: Option<&str>, fetch_site: Option<&str>, token: &str| {
            let mut request = Request::post("/rollouts/r/pause")
                .header("host", "region.example:9443")
                .header("content-type", "application/x-www-form-urlencoded");
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            if let Some(site) = fetch_site {
                request = request.header("sec-fetch-site", site);
            }
            request
                .body(Body::from(format!("form_token={token}&reason=look")))
                .expect("request")
        };
        let state_of = || async {
            region
                .state
                .rollouts
                .show("r")
                .await
                .expect("show")
                .state
                .progress
                .name()
        };
        for (request, why) in [
            (
                pause(None, None, &token),
                "neither Origin nor Sec-Fetch-Site",
            ),
            (
                pause(Some("https://evil.example"), None, &token),
                "another origin",
            ),
            (pause(Some("null"), None, &token), "an opaque origin"),
            (
                pause(None, Some("cross-site"), &token),
                "a cross-site fetch without Origin",
            ),
            (
                pause(Some("https://region.example:9443"), None, "guessed"),
                "a wrong form token",
            ),
        ] {
            let (status, page) = send(&region, "127.0.0.1", request).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{why}: {page}");
            assert!(page.contains("data-testid=\"error\""), "{why}: {page}");
            assert_eq!(state_of().await, "running", "{why} changed nothing");
        }
        let (status, _) = send(
            &region,
            "127.0.0.1",
            pause(Some("https://region.example:9443"), None, &token),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(state_of().await, "paused");
        // A page on a client that may not write shows no buttons (and its posts are refused).
        let (status, page) = send(
            &region,
            "192.0.2.7",
            Request::get("/rollouts/r")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{page}");
        let (_, page) = send(
            &region,
            "127.0.0.1",
            Request::get("/rollouts/r")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert!(page.contains("data-testid=\"resume\"") && page.contains(&token));
    }
}
