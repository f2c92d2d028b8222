//! Operator authentication against an in-process identity provider: a real HTTP server on loopback
//! serving discovery and a JWKS made of keys generated here, and tokens signed with them. Nothing of
//! the verifier is mocked; the server counts JWKS requests so refetch limits are observable.

use super::jwks::RefetchGate;
use super::*;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header, get_current_timestamp};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};

const AUDIENCE: &str = "scs-edge-region";
const OPERATORS: &str = "/scs-edge/operators";

// ---- keys -----------------------------------------------------------------------------------

/// A signing key and its public JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    public_pem: String,
}

impl TestKey {
    fn rsa(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
        let encoding = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).expect("RSA PEM");
        Self::new(kid, Algorithm::RS256, encoding, &pair)
    }

    fn ec_p256(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
        let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC PEM");
        Self::new(kid, Algorithm::ES256, encoding, &pair)
    }

    fn ed25519(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
        let encoding = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("Ed PEM");
        let mut key = Self {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            encoding,
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA",
                        "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw())}),
            public_pem: pair.public_key_pem(),
        };
        key.jwk["kid"] = json!(kid);
        key.jwk["use"] = json!("sig");
        key
    }

    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey, pair: &rcgen::KeyPair) -> Self {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).expect("JWK"))
            .expect("JWK JSON");
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
            public_pem: pair.public_key_pem(),
        }
    }

    /// The same key under another kid (RSA keys take a while to generate; tests share two).
    fn renamed(&self, kid: &str) -> Self {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = json!(kid);
        Self {
            kid: kid.to_owned(),
            alg: self.alg,
            encoding: self.encoding.clone(),
            jwk,
            public_pem: self.public_pem.clone(),
        }
    }

    /// The JWK without its pinned `alg`.
    fn unpinned_jwk(&self) -> Value {
        let mut jwk = self.jwk.clone();
        jwk.as_object_mut().expect("object").remove("alg");
        jwk
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.alg, Some(&self.kid), claims)
    }

    fn sign_as(&self, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

static RSA: LazyLock<TestKey> = LazyLock::new(|| TestKey::rsa("rsa-1"));
static RSA_OTHER: LazyLock<TestKey> = LazyLock::new(|| TestKey::rsa("rsa-other"));
static EC: LazyLock<TestKey> = LazyLock::new(|| TestKey::ec_p256("ec-1"));

fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|key| key.jwk.clone()).collect::<Vec<_>>()})
}

/// A hand-made compact JWS: for headers `jsonwebtoken` refuses to produce.
fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    let part = |value: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"));
    format!(
        "{}.{}.{}",
        part(header),
        part(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

// ---- the identity provider ------------------------------------------------------------------

struct IdpState {
    issuer: String,
    advertised_issuer: Mutex<Option<String>>,
    jwks: Mutex<Value>,
    jwks_requests: AtomicUsize,
    down: AtomicBool,
}

/// Discovery and JWKS on 127.0.0.1; the server task ends with the test's runtime.
struct TestIdp {
    state: Arc<IdpState>,
}

impl TestIdp {
    async fn start(jwks: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(IdpState {
            issuer,
            advertised_issuer: Mutex::new(None),
            jwks: Mutex::new(jwks),
            jwks_requests: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        });
        let router = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks_document))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
        Self { state }
    }

    fn issuer(&self) -> &str {
        &self.state.issuer
    }

    fn settings(&self) -> OidcSettings {
        OidcSettings::new(self.issuer(), AUDIENCE)
    }

    fn set_jwks(&self, jwks: Value) {
        *self.state.jwks.lock().expect("lock") = jwks;
    }

    fn jwks_requests(&self) -> usize {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    /// Makes every endpoint answer 503, as an IdP in maintenance does.
    fn go_down(&self) {
        self.state.down.store(true, Ordering::SeqCst);
    }

    async fn discover(&self, settings: OidcSettings) -> OperatorAuth {
        OperatorAuth::discover(settings, http_client())
            .await
            .expect("discover")
    }

    /// Valid claims for this issuer; tests change what they test.
    fn claims(&self) -> Value {
        let now = get_current_timestamp();
        json!({
            "iss": self.issuer(), "aud": AUDIENCE, "sub": "5f0c2b1e-a11c",
            "iat": now, "exp": now + 300, "typ": "Bearer",
            "preferred_username": "alice", "groups": [OPERATORS, "/scs-edge/users"],
        })
    }
}

async fn discovery(State(state): State<Arc<IdpState>>) -> Response {
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let issuer = state.issuer.clone();
    let advertised = state
        .advertised_issuer
        .lock()
        .expect("lock")
        .clone()
        .unwrap_or_else(|| issuer.clone());
    Json(json!({
        "issuer": advertised,
        "jwks_uri": format!("{issuer}/jwks"),
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "end_session_endpoint": format!("{issuer}/logout"),
    }))
    .into_response()
}

async fn jwks_document(State(state): State<Arc<IdpState>>) -> Response {
    state.jwks_requests.fetch_add(1, Ordering::SeqCst);
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(state.jwks.lock().expect("lock").clone()).into_response()
}

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder().build().expect("HTTP client")
}

/// Asserts the error's message does not repeat the token (or its signature).
fn assert_token_not_echoed(error: &AuthError, token: &str) {
    let message = error.to_string();
    let signature = token.rsplit('.').next().unwrap_or(token);
    for secret in [token, signature] {
        assert!(
            secret.len() < 8 || !message.contains(secret),
            "error message repeats the token: {message}"
        );
    }
}

async fn refused(auth: &OperatorAuth, token: &str) -> AuthError {
    let error = auth
        .authenticate(token)
        .await
        .expect_err("token must be refused");
    assert_token_not_echoed(&error, token);
    error
}

// ---- accepted tokens ------------------------------------------------------------------------

#[tokio::test]
async fn valid_rs256_token_yields_the_operator() {
    let idp = TestIdp::start(jwks(&[&RSA, &EC])).await;
    let auth = idp.discover(idp.settings()).await;

    let operator = auth
        .authenticate(&RSA.sign(&idp.claims()))
        .await
        .expect("valid RS256");
    assert_eq!(
        operator,
        Operator {
            subject: "5f0c2b1e-a11c".into(),
            username: "alice".into(),
            groups: vec![OPERATORS.into(), "/scs-edge/users".into()],
        }
    );
    assert_eq!(auth.issuer(), idp.issuer());
    assert_eq!(
        auth.authorization_endpoint().as_str(),
        format!("{}/auth", idp.issuer())
    );
    assert_eq!(
        auth.token_endpoint().as_str(),
        format!("{}/token", idp.issuer())
    );
    assert_eq!(
        auth.end_session_endpoint().map(Url::as_str),
        Some(format!("{}/logout", idp.issuer()).as_str())
    );
}

#[tokio::test]
async fn valid_es256_and_eddsa_tokens_are_accepted() {
    let ed = TestKey::ed25519("ed-1");
    let idp = TestIdp::start(jwks(&[&RSA, &EC, &ed])).await;
    let auth = idp.discover(idp.settings()).await;

    for key in [&*EC, &ed] {
        let operator = auth
            .authenticate(&key.sign(&idp.claims()))
            .await
            .unwrap_or_else(|e| panic!("valid {:?} token refused: {e}", key.alg));
        assert_eq!(operator.username, "alice");
    }
}

#[tokio::test]
async fn audience_list_containing_ours_and_exp_within_leeway_are_accepted() {
    let idp = TestIdp::start(jwks(&[&RSA])).await;
    let auth = idp.discover(idp.settings()).await;
    let mut claims = idp.claims();
    claims["aud"] = json!(["account", AUDIENCE]);
    claims["exp"] = json!(get_current_timestamp() - 10);
    claims.as_object_mut().expect("object").remove("typ");
    claims
        .as_object_mut()
        .expect("object")
        .remove("preferred_username");

    let operator = auth
        .authenticate(&RSA.sign(&claims))
        .await
        .expect("accepted");
    assert_eq!(
        operator.username, operator.subject,
        "username falls back to sub"
    );
}

// ---- algorithm attacks ----------------------------------------------------------------------

#[tokio::test]
async fn alg_none_is_refused_without_touching_the_jwks() {
    let idp = TestIdp::start(jwks(&[&RSA])).await;
    let auth = idp.discover(idp.settings()).await;

    for alg in ["none", "None", "NONE"] {
        let token = raw_token(&json!({"alg": alg, "kid": "rsa-1"}), &idp.claims(), b"");
        let error = refused(&auth, &token).await;
        assert!(
            matches!(&error, AuthError::AlgorithmNotAllowed(a) if a == alg),
            "{error:?}"
        );
    }
    // Even with an unknown kid: the algorithm is refused before any key lookup or refetch.
    let token = raw_token(
        &json!({"alg": "none", "kid": "not-there"}),
        &idp.claims(),
        b"",
    );
    assert!(matches!(
        refused(&auth, &token).await,
        AuthError::AlgorithmNotAllowed(_)
    ));
    assert_eq!(idp.jwks_requests(), 1, "no refetch for a refused algorithm");
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: a verifier that builds its key from the JWKS according to the token's
    // `alg` would take the RSA public key's bytes as an HMAC secret and accept this forgery.
    let idp = TestIdp::start(jwks(&[&RSA])).await;
    let auth = idp.discover(idp.settings()).await;

    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let mut header = Header::new(alg);
        header.kid = Some(RSA.kid.clone());
        let forged = jsonwebtoken::encode(
            &header,
            &idp.claims(),
            &EncodingKey::from_secret(RSA.public_pem.as_bytes()),
        )
        .expect("HMAC");
        let error = refused(&auth, &forged).await;
        assert!(
            matches!(&error, AuthError::AlgorithmNotAllowed(a) if a == &format!("{alg:?}")),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn symmetric_keys_in_the_jwks_are_never_used() {
    let secret = b"a shared secret the IdP should never have published";
    let oct = json!({"kty": "oct", "kid": "hmac-1", "alg": "HS256", "use": "sig",
                     "k": URL_SAFE_NO_PAD.encode(secret)});
    let idp = TestIdp::start(json!({"keys": [oct, RSA.jwk.clone()]})).await;
    let auth = idp.discover(idp.settings()).await;

    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hmac-1".into());
    let hmac = jsonwebtoken::encode(&header, &idp.claims(), &EncodingKey::from_secret(secret))
        .expect("HMAC");
    assert!(matches!(
        refused(&auth, &hmac).await,
        AuthError::AlgorithmNotAllowed(_)
    ));
    // An asymmetric alg naming the oct key finds nothing: the key was never loaded.
    let rs = RSA.sign_as(Algorithm::RS256, Some("hmac-1"), &idp.claims());
    assert!(matches!(
        refused(&auth, &rs).await,
        AuthError::UnknownKid { .. }
    ));
}

#[tokio::test]
async fn rs256_token_naming_an_ec_key_is_an_algorithm_mismatch() {
    let idp = TestIdp::start(jwks(&[&RSA, &EC])).await;
    let auth = idp.discover(idp.settings()).await;

    let token = RSA.sign_as(Algorithm::RS256, Some(&EC.kid), &idp.claims());
    let error = refused(&auth, &token).await;
    assert!(
        matches!(&error, AuthError::AlgorithmMismatch { alg: Algorithm::RS256, kid, .. } if kid == "ec-1"),
        "{error:?}"
    );
    // ES384 on a P-256 key: same family, wrong curve.
    let token = raw_token(
        &json!({"alg": "ES384", "kid": "ec-1"}),
        &idp.claims(),
        &[0; 96],
    );
    assert!(matches!(
        refused(&auth, &token).await,
        AuthError::AlgorithmMismatch {
            alg: Algorithm::ES384,
            ..
        }
    ));
}

#[tokio::test]
async fn a_keys_pinned_alg_overrides_its_family() {
    // Keycloak pins each key to one alg; a PS256 token on an RS256-pinned key is refused although
    // both are RSA, while the same key without a pin accepts PS256.
    let unpinned = RSA.renamed("rsa-unpinned");
    let idp = TestIdp::start(json!({"keys": [RSA.jwk.clone(), unpinned.unpinned_jwk()]})).await;
    let auth = idp.discover(idp.settings()).await;

    let pinned = RSA.sign_as(Algorithm::PS256, Some(&RSA.kid), &idp.claims());
    let error = refused(&auth, &pinned).await;
    assert!(
        matches!(&error, AuthError::AlgorithmMismatch { key, .. } if key.contains("pinned to RS256")),
        "{error:?}"
    );
    let free = unpinned.sign_as(Algorithm::PS256, Some(&unpinned.kid), &idp.claims());
    auth.authenticate(&free)
        .await
        .expect("PS256 on an unpinned RSA key");
}

#[tokio::test]
async fn signatures_that_do_not_verify_are_refused() {
    let idp = TestIdp::start(jwks(&[&RSA])).await;
    let auth = idp.discover(idp.settings()).await;

    // Another key under the trusted kid (what a stolen kid with a forged key looks like).
    let forged = RSA_OTHER.sign_as(Algorithm::RS256, Some(&RSA.kid), &idp.claims());
    assert!(matches!(
        refused(&auth, &forged).await,
        AuthError::BadSignature { .. }
    ));

    // A genuine token with its claims swapped for more privileged ones.
    let genuine = RSA.sign(&idp.claims());
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let mut claims = idp.claims();
    claims["sub"] = json!("root");
    let swapped = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json"));
    parts[1] = &swapped;
    let tampered = parts.join(".");
    assert!(matches!(
        refused(&auth, &tampered).await,
        AuthError::BadSignature { .. }
    ));
}

// ---- claims ---------------------------------------------------------------------------------

#[tokio::test]
async fn registered_claims_are_enforced() {
    let idp = TestIdp::start(jwks(&[&RSA])).await;
    let auth = idp.discover(idp.settings()).await;
    let now = get_current_timestamp();
    let with = |key: &str, value: Value| {
        let mut claims = idp.claims();
        claims[key] = value;
        RSA.sign(&claims)
    };
    let without = |key: &str| {
        let mut claims = idp.claims();
        claims.as_object_mut().expect("object").remove(key);
        RSA.sign(&claims)
    };

    // 45 s past exp: inside jsonwebtoken's default leeway (60 s), outside ours (30 s).
    assert!(matches!(
        refused(&auth, &with("exp", json!(now - 45))).await,
        AuthError::Expired
    ));
    assert!(matches!(
        refused(&auth, &with("nbf", json!(now + 120))).await,
        AuthError::NotYetValid
    ));
    let error = refused(&auth, &with("iss", json!("http://evil.example"))).await;
    assert!(
        matches!(&error, AuthError::WrongIssuer { expected } if expected == idp.issuer()),
        "{error:?}"
    );
    // Our issuer with a trailing slash is another issuer.
    let slash = format!("{}/", idp.issuer());
    assert!(matches!(
        refused(&auth, &with("iss", json!(slash))).await,
        AuthError::WrongIssuer { .. }
    ));
    // An array that merely contains our issuer is not "exactly our issuer".
    let array = with("iss", json!(["http://evil.example", idp.issuer()]));
    assert!(matches!(
        refused(&auth, &array).await,
        AuthError::Malformed(_)
    ));
    let error = refused(&auth, &with("aud", json!("other-service"))).await;
    assert!(
        matches!(&error, AuthError::WrongAudience { expected } if expected == AUDIENCE),
        "{error:?}"
    );
    assert!(matches!(
        refused(&auth, &with("aud", json!(["account", "other"]))).await,
        AuthError::WrongAudience { .. }
    ));
    for claim in ["exp", "iss", "aud", "sub"] {
        let error = refused(&auth, &without(claim)).await;
        assert!(
            matches!(&error, AuthError::MissingClaim(c) if c == claim),
            "{claim}: {error:?}"
        );
    }
    // jsonwebtoken counts an `exp` that is not a number as absent.
    let error = refused(&auth, &with("exp", json!("tomorrow"))).await;
    assert!(
        matches!(&error, AuthError::MissingClaim(c) if c == "exp"),
        "{error:?}"
    );
    assert!(matches!(
        refused(&auth, &with("groups", json!("operators"))).await,
        AuthError::Malformed(_)
    ));
    let error = refused(&auth, &with("typ", json!("ID"))).await;
    assert!(
        matches!(&error, AuthError::WrongTokenType(t) if t == "ID"),
        "{error:?}"
    );
}

#[tokio::test]
async fn missing_kid_is_refused() {
    let idp = TestIdp::start(jwks(&[&RSA])).await;
    let auth = idp.discover(idp.settings()).await;

    let token = RSA.sign_as(Algorithm::RS256, None, &idp.claims());
    assert!(matches!(
        refused(&auth, &token).await,
        AuthError::MissingKid
    ));
    assert_eq!(idp.jwks_requests(), 1, "no refetch without a kid");
}

#[tokio::test]
async fn garbage_is_malformed() {
    let idp = TestIdp::start(jwks(&[&RSA])).await;
    let auth = idp.discover(idp.settings()).await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"rsa-1"}"#);

    let long = format!("{header}.{}.sig", "A".repeat(MAX_TOKEN_BYTES));
    let not_json = format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(b"not json"));
    let no_alg = format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(br#"{"kid":"rsa-1"}"#));
    let garbage_claims = format!("{header}.!!!.c2ln");
    let crit = raw_token(
        &json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"]}),
        &idp.claims(),
        b"x",
    );
    for token in [
        "",
        ".",
        "..",
        "...",
        "abc",
        "a.b",
        "a.b.c.d",
        "Bearer a.b.c",
        "ééé.ééé.ééé",
        &long,
        &not_json,
        &no_alg,
        &crit,
    ] {
        let error = refused(&auth, token).await;
        assert!(
            matches!(error, AuthError::Malformed(_)),
            "{token:.40}: {error:?}"
        );
    }
    // A good header over bad claims or a bad signature encoding never verifies.
    let error = refused(&auth, &garbage_claims).await;
    assert!(
        matches!(
            error,
            AuthError::Malformed(_) | AuthError::BadSignature { .. }
        ),
        "{error:?}"
    );
    assert_eq!(idp.jwks_requests(), 1);
}

// ---- groups ---------------------------------------------------------------------------------

#[tokio::test]
async fn operator_group_is_required_when_configured() {
    let idp = TestIdp::start(jwks(&[&RSA])).await;
    let mut settings = idp.settings();
    settings.operator_group = Some(OPERATORS.into());
    let auth = idp.discover(settings).await;

    auth.authenticate(&RSA.sign(&idp.claims()))
        .await
        .expect("member");

    let mut bob = idp.claims();
    bob["preferred_username"] = json!("bob");
    bob["groups"] = json!(["/scs-edge/users", "/scs-edge/operators/sub"]);
    let error = refused(&auth, &RSA.sign(&bob)).await;
    assert!(error.is_forbidden(), "{error:?}");
    assert!(
        matches!(&error, AuthError::Forbidden { username, group } if username == "bob" && group == OPERATORS)
    );
    bob.as_object_mut().expect("object").remove("groups");
    assert!(refused(&auth, &RSA.sign(&bob)).await.is_forbidden());
    // Not being authenticated at all is not "forbidden".
    let mut expired = idp.claims();
    expired["exp"] = json!(get_current_timestamp() - 3600);
    assert!(!refused(&auth, &RSA.sign(&expired)).await.is_forbidden());
}

// ---- key rotation and refetching ------------------------------------------------------------

#[tokio::test]
async fn unknown_kid_refetches_once_then_refuses() {
    let idp = TestIdp::start(jwks(&[&RSA])).await;
    let mut settings = idp.settings();
    settings.jwks_refresh_min_interval = Duration::from_hours(1);
    let auth = idp.discover(settings).await;
    assert_eq!(idp.jwks_requests(), 1);

    let sprayed = RSA_OTHER.sign_as(Algorithm::RS256, Some("made-up-1"), &idp.claims());
    let error = refused(&auth, &sprayed).await;
    assert!(
        matches!(&error, AuthError::UnknownKid { kid } if kid == "made-up-1"),
        "{error:?}"
    );
    assert_eq!(idp.jwks_requests(), 2, "exactly one refetch");

    for n in 2..10 {
        let sprayed = RSA_OTHER.sign_as(
            Algorithm::RS256,
            Some(&format!("made-up-{n}")),
            &idp.claims(),
        );
        assert!(matches!(
            refused(&auth, &sprayed).await,
            AuthError::UnknownKid { .. }
        ));
    }
    assert_eq!(
        idp.jwks_requests(),
        2,
        "no further refetch within jwks_refresh_min_interval"
    );
    // Known keys keep working meanwhile.
    auth.authenticate(&RSA.sign(&idp.claims()))
        .await
        .expect("known kid");
}

#[tokio::test]
async fn a_rotated_key_is_found_by_refetching() {
    let idp = TestIdp::start(jwks(&[&RSA])).await;
    let auth = idp.discover(idp.settings()).await;

    idp.set_jwks(jwks(&[&RSA_OTHER, &RSA]));
    let operator = auth
        .authenticate(&RSA_OTHER.sign(&idp.claims()))
        .await
        .expect("token signed with the new key");
    assert_eq!(operator.username, "alice");
    assert_eq!(idp.jwks_requests(), 2);
    auth.authenticate(&RSA_OTHER.sign(&idp.claims()))
        .await
        .expect("new key cached");
    assert_eq!(idp.jwks_requests(), 2, "a cached key needs no fetch");
}

#[test]
fn the_refetch_gate_opens_once_per_interval() {
    let start = Instant::now();
    let mut gate = RefetchGate::new(Duration::from_mins(1));
    assert!(gate.try_begin(start), "first refetch is always allowed");
    assert!(!gate.try_begin(start));
    assert!(!gate.try_begin(start + Duration::from_secs(59)));
    assert!(gate.try_begin(start + Duration::from_mins(1)));
    assert!(!gate.try_begin(start + Duration::from_secs(61)));
    // A clock that appears to go backwards does not open the gate.
    assert!(!gate.try_begin(start));

    let mut unlimited = RefetchGate::new(Duration::ZERO);
    assert!(unlimited.try_begin(start) && unlimited.try_begin(start));
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_idp_is_down() {
    let idp = TestIdp::start(jwks(&[&RSA])).await;
    let mut settings = idp.settings();
    settings.jwks_refresh_min_interval = Duration::ZERO;
    settings.jwks_max_age = Duration::ZERO;
    let auth = idp.discover(settings).await;

    idp.go_down();
    for _ in 0..3 {
        auth.authenticate(&RSA.sign(&idp.claims()))
            .await
            .expect("cached key verifies while the IdP is down");
    }
    // An unknown kid tries the IdP, fails, and is refused — the cache survives the failed fetch.
    let before = idp.jwks_requests();
    let unknown = RSA_OTHER.sign(&idp.claims());
    assert!(matches!(
        refused(&auth, &unknown).await,
        AuthError::UnknownKid { .. }
    ));
    assert!(idp.jwks_requests() > before, "the refetch was attempted");
    auth.authenticate(&RSA.sign(&idp.claims()))
        .await
        .expect("still cached");
}

#[tokio::test]
async fn stale_keys_are_refreshed_so_withdrawn_keys_stop_verifying() {
    let idp = TestIdp::start(jwks(&[&RSA, &EC])).await;
    let mut settings = idp.settings();
    settings.jwks_refresh_min_interval = Duration::ZERO;
    settings.jwks_max_age = Duration::ZERO;
    let auth = idp.discover(settings).await;

    // The IdP withdraws the RSA key; the region still holds it and accepts its tokens until the
    // background refresh a verified request triggers has replaced the cache.
    idp.set_jwks(jwks(&[&EC]));
    let withdrawn = RSA.sign(&idp.claims());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match auth.authenticate(&withdrawn).await {
            Err(AuthError::UnknownKid { .. }) => break,
            Ok(_) => {}
            Err(other) => panic!("unexpected refusal: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "withdrawn key still verifies after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    auth.authenticate(&EC.sign(&idp.claims()))
        .await
        .expect("remaining key");
}

// ---- discovery ------------------------------------------------------------------------------

#[tokio::test]
async fn discovery_requires_the_exact_configured_issuer() {
    let idp = TestIdp::start(jwks(&[&RSA])).await;
    *idp.state.advertised_issuer.lock().expect("lock") = Some(format!("{}/", idp.issuer()));

    let error = OperatorAuth::discover(idp.settings(), http_client())
        .await
        .expect_err("issuer mismatch");
    assert!(
        matches!(
            &error,
            AuthError::Discovery {
                source: DiscoveryError::IssuerMismatch { .. },
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn discovery_refuses_a_jwks_without_usable_keys() {
    let oct = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
    let encryption = {
        let mut jwk = RSA.unpinned_jwk();
        jwk["use"] = json!("enc");
        jwk["kid"] = json!("enc-1");
        jwk
    };
    let oaep = {
        let mut jwk = RSA.jwk.clone();
        jwk["alg"] = json!("RSA-OAEP");
        jwk["kid"] = json!("oaep-1");
        jwk
    };
    let no_kid = {
        let mut jwk = RSA.jwk.clone();
        jwk.as_object_mut().expect("object").remove("kid");
        jwk
    };
    let idp = TestIdp::start(json!({"keys": [oct, encryption, oaep, no_kid, {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"}]})).await;

    let error = OperatorAuth::discover(idp.settings(), http_client())
        .await
        .expect_err("no usable key");
    assert!(
        matches!(
            &error,
            AuthError::Discovery {
                source: DiscoveryError::Jwks(JwksError::NoUsableKey),
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn plain_http_is_refused_for_hosts_that_are_not_loopback() {
    let error = OperatorAuth::discover(
        OidcSettings::new("http://id.example.org/realms/scs", AUDIENCE),
        http_client(),
    )
    .await
    .expect_err("plain http");
    assert!(
        matches!(
            &error,
            AuthError::Discovery {
                source: DiscoveryError::UntrustedUrl {
                    field: "issuer",
                    ..
                },
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_unreachable_idp_fails_discovery() {
    let idp = TestIdp::start(jwks(&[&RSA])).await;
    idp.go_down();
    let error = OperatorAuth::discover(idp.settings(), http_client())
        .await
        .expect_err("IdP down");
    assert!(
        matches!(
            &error,
            AuthError::Discovery {
                source: DiscoveryError::Status(StatusCode::SERVICE_UNAVAILABLE),
                ..
            }
        ),
        "{error:?}"
    );
}

// ---- settings -------------------------------------------------------------------------------

#[test]
fn settings_parse_from_toml_with_defaults() {
    let settings: OidcSettings = toml::from_str(
        "issuer = \"https://id.example.org/realms/scs\"\naudience = \"scs-edge-region\"\n",
    )
    .expect("minimal settings");
    assert_eq!(
        settings,
        OidcSettings::new("https://id.example.org/realms/scs", "scs-edge-region")
    );
    assert_eq!(settings.jwks_refresh_min_interval, Duration::from_mins(1));

    let settings: OidcSettings = toml::from_str(
        "issuer = \"https://id\"\naudience = \"a\"\noperator_group = \"/ops\"\n\
         jwks_refresh_min_interval_secs = 5\njwks_max_age_secs = 7\nhttp_timeout_secs = 3\n",
    )
    .expect("full settings");
    assert_eq!(settings.operator_group.as_deref(), Some("/ops"));
    assert_eq!(settings.jwks_refresh_min_interval, Duration::from_secs(5));
    assert_eq!(settings.jwks_max_age, Duration::from_secs(7));
    assert_eq!(settings.http_timeout, Duration::from_secs(3));

    let error = toml::from_str::<OidcSettings>(
        "issuer = \"https://id\"\naudience = \"a\"\nhttp_timeout = 3\n",
    )
    .expect_err("unknown key");
    assert!(error.to_string().contains("http_timeout"), "{error}");
}
