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
