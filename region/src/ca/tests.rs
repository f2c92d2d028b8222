use super::*;
use rcgen::{CertificateParams, KeyPair, SanType};

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("timestamp")
}

fn csr(common_name: &str, extra_sans: Vec<SanType>) -> (String, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = extra_sans;
    let request = params.serialize_request(&key).expect("csr");
    (request.pem().expect("pem"), key)
}

fn parse(pem: &str) -> Vec<u8> {
    pem_to_der(pem, "CERTIFICATE").expect("certificate PEM")
}

#[test]
fn the_ca_is_created_once_and_loaded_with_the_same_fingerprint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let created = RegionCa::load_or_create(dir.path(), "central", now()).expect("create");
    let loaded = RegionCa::load_or_create(dir.path(), "central", now()).expect("load");
    assert_eq!(created.fingerprint(), loaded.fingerprint());
    assert!(created.fingerprint().starts_with("sha256:"));
    assert_eq!(created.fingerprint().len(), "sha256:".len() + 64);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the CA key is readable by root only");
}

#[test]
fn a_half_present_or_mismatched_ca_is_refused_not_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    RegionCa::load_or_create(dir.path(), "central", now()).expect("create");
    let cert = std::fs::read(dir.path().join("ca.crt")).expect("cert");
    std::fs::remove_file(dir.path().join("ca.crt")).expect("remove");
    let err = RegionCa::load_or_create(dir.path(), "central", now()).expect_err("half");
    assert!(err.to_string().contains("only one of"), "{err}");

    // A certificate from another CA beside this key.
    let other = tempfile::tempdir().expect("tempdir");
    RegionCa::load_or_create(other.path(), "other", now()).expect("other");
    std::fs::copy(other.path().join("ca.crt"), dir.path().join("ca.crt")).expect("copy");
    let err = RegionCa::load(dir.path()).expect_err("mismatch");
    assert!(
        err.to_string().contains("does not belong") || err.to_string().contains("unusable"),
        "{err}"
    );
    std::fs::write(dir.path().join("ca.crt"), cert).expect("restore");
    RegionCa::load(dir.path()).expect("the original pair loads again");
}

#[test]
fn a_node_certificate_names_the_site_and_nothing_the_csr_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = RegionCa::load_or_create(dir.path(), "central", now()).expect("ca");
    let (request, _key) = csr(
        "evil",
        vec![SanType::URI(
            "urn:scs-edge:site:other-site".try_into().expect("uri"),
        )],
    );
    let issued = ca
        .sign_node_csr(&request, "factory-1", now(), SignedDuration::from_hours(24))
        .expect("sign");
    let der = parse(&issued.pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
    let uris: Vec<String> = cert
        .subject_alternative_name()
        .expect("san ext")
        .expect("san")
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, vec!["urn:scs-edge:site:factory-1".to_owned()]);
    assert!(
        cert.subject().to_string().contains("CN=factory-1"),
        "{}",
        cert.subject()
    );
    assert_eq!(to_hex(cert.raw_serial()), issued.serial);
    assert_eq!(
        cert.validity().not_after.timestamp(),
        issued.not_after.as_second()
    );
    assert!(!cert.is_ca());
    // Signed by the CA.
    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.certificate_der()).expect("ca x509");
    cert.verify_signature(Some(ca_cert.public_key()))
        .expect("signed by the region CA");
}

#[test]
fn malformed_and_tampered_csrs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = RegionCa::load_or_create(dir.path(), "central", now()).expect("ca");
    for garbage in [
        "",
        "not a csr",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        let err = ca
            .sign_node_csr(garbage, "s", now(), SignedDuration::from_hours(1))
            .expect_err("garbage");
        assert!(matches!(err, CaError::BadCsr(_)), "{err}");
    }
    // Flip a byte inside the signed part: the self-signature no longer verifies.
    let (request, _key) = csr("node", vec![]);
    let mut der = pem_to_der(&request, "CERTIFICATE REQUEST").expect("der");
    let at = der.len() / 2;
    der[at] ^= 0x01;
    use base64::Engine as _;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    let err = ca
        .sign_node_csr(&tampered, "s", now(), SignedDuration::from_hours(1))
        .expect_err("tampered");
    assert!(matches!(err, CaError::BadCsr(_)), "{err}");
}

#[test]
fn serials_are_unique_and_positive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = RegionCa::load_or_create(dir.path(), "central", now()).expect("ca");
    let (request, _key) = csr("n", vec![]);
    let a = ca
        .sign_node_csr(&request, "s", now(), SignedDuration::from_hours(1))
        .expect("a");
    let b = ca
        .sign_node_csr(&request, "s", now(), SignedDuration::from_hours(1))
        .expect("b");
    assert_ne!(a.serial, b.serial);
    assert_eq!(a.serial.len(), 32);
    assert!(u8::from_str_radix(&a.serial[..2], 16).expect("hex") < 0x80);
}
