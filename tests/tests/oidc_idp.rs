//! The region's operator authentication against a real OpenID Connect provider (`tests/oidc-idp`,
//! panva `oidc-provider` with Keycloak's URL layout): discovery, the JWKS, and tokens issued by real
//! grants — not only tokens we sign ourselves, as the unit tests do.

use scs_edge_region::operator_auth::{AuthError, DiscoveryError, OidcSettings, OperatorAuth};
use scs_edge_tests::oidc::{AUDIENCE, OPERATOR_GROUP, OTHER_RESOURCE, OidcOptions, OidcProvider};
use serde_json::json;

/// `OperatorAuth` is async; the provider's helpers are blocking, so they run outside `block_on`.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn discover(rt: &tokio::runtime::Runtime, settings: OidcSettings) -> OperatorAuth {
    rt.block_on(OperatorAuth::discover(settings, reqwest::Client::new()))
        .expect("discovery against the test IdP")
}

fn refused(rt: &tokio::runtime::Runtime, auth: &OperatorAuth, token: &str) -> AuthError {
    rt.block_on(auth.authenticate(token))
        .expect_err("token must be refused")
}

#[test]
fn alice_is_an_operator_and_bob_is_forbidden() {
    let idp = OidcProvider::start(OidcOptions::default());
    let rt = runtime();
    let mut settings = OidcSettings::new(idp.issuer(), AUDIENCE);
    settings.operator_group = Some(OPERATOR_GROUP.into());
    let auth = discover(&rt, settings);
    assert_eq!(
        auth.authorization_endpoint().as_str(),
        format!("{}/protocol/openid-connect/auth", idp.issuer())
    );
    assert_eq!(auth.token_endpoint().as_str(), idp.token_endpoint());
    assert!(auth.end_session_endpoint().is_some());

    let alice = rt
        .block_on(auth.authenticate(&idp.password_token("alice", "alice-pw")))
        .unwrap_or_else(|e| panic!("alice refused: {e}\n{}", idp.log()));
    assert_eq!(alice.subject, "5f0c2b1e-0000-4000-8000-00000000a11c");
    assert_eq!(alice.username, "alice");
    assert!(
        alice.groups.iter().any(|g| g == OPERATOR_GROUP),
        "{alice:?}"
    );

    let bob_token = idp.password_token("bob", "bob-pw");
    let error = refused(&rt, &auth, &bob_token);
    assert!(error.is_forbidden(), "{error:?}");

    // Bob's token itself is fine: without an operator group he is authenticated.
    let open = discover(&rt, OidcSettings::new(idp.issuer(), AUDIENCE));
    let bob = rt
        .block_on(open.authenticate(&bob_token))
        .expect("bob authenticated");
    assert_eq!(bob.username, "bob");
    assert!(!bob.groups.iter().any(|g| g == OPERATOR_GROUP));
}

#[test]
fn es256_tokens_from_the_idp_are_accepted() {
    let idp = OidcProvider::start(OidcOptions::default());
    let rt = runtime();
    let auth = discover(&rt, OidcSettings::new(idp.issuer(), AUDIENCE));

    let token = idp.alg_es256_token();
    let header = token.split('.').next().expect("header");
    assert!(
        header.starts_with("eyJhbGciOiJFUzI1NiIs"),
        "expected an ES256 header: {header}"
    );
    let alice = rt
        .block_on(auth.authenticate(&token))
        .unwrap_or_else(|e| panic!("ES256 token refused: {e}"));
    assert_eq!(alice.username, "alice");
}

#[test]
fn tokens_with_wrong_claims_or_keys_are_refused() {
    let idp = OidcProvider::start(OidcOptions::default());
    let rt = runtime();
    let auth = discover(&rt, OidcSettings::new(idp.issuer(), AUDIENCE));

    // The control: a minted token with the defaults verifies, so each refusal below is down to the
    // one thing that differs.
    let minted = rt
        .block_on(auth.authenticate(&idp.mint(&json!({}))))
        .expect("minted token with valid claims");
    assert_eq!(minted.subject, "minted");

    let expired = idp.mint(&json!({"ttl": -120}));
    assert!(matches!(refused(&rt, &auth, &expired), AuthError::Expired));

    let foreign = idp.mint(&json!({"claims": {"iss": "http://127.0.0.1:1/realms/evil"}}));
    let error = refused(&rt, &auth, &foreign);
    assert!(
        matches!(&error, AuthError::WrongIssuer { expected } if expected == idp.issuer()),
        "{error:?}"
    );

    for alg in ["RS256", "ES256"] {
        let untrusted = idp.mint(&json!({"untrusted": true, "alg": alg}));
        let error = refused(&rt, &auth, &untrusted);
        assert!(
            matches!(error, AuthError::BadSignature { .. }),
            "{alg}: {error:?}"
        );
    }

    let other = idp.password_token_for("alice", "alice-pw", OTHER_RESOURCE);
    let error = refused(&rt, &auth, &other);
    assert!(
        matches!(&error, AuthError::WrongAudience { expected } if expected == AUDIENCE),
        "{error:?}"
    );

    let no_sub = idp.mint(&json!({"claims": {"sub": null}}));
    assert!(matches!(
        refused(&rt, &auth, &no_sub),
        AuthError::MissingClaim(claim) if claim == "sub"
    ));
}

#[test]
fn discovery_insists_on_the_exact_issuer() {
    let idp = OidcProvider::start(OidcOptions::default());
    let rt = runtime();
    // Same discovery URL, but tokens would carry an `iss` without the slash: refused at start.
    let settings = OidcSettings::new(format!("{}/", idp.issuer()), AUDIENCE);
    let error = rt
        .block_on(OperatorAuth::discover(settings, reqwest::Client::new()))
        .expect_err("issuer with a trailing slash");
    assert!(
        matches!(
            &error,
            AuthError::Discovery {
                source: DiscoveryError::IssuerMismatch { found, .. },
                ..
            } if found == idp.issuer()
        ),
        "{error:?}"
    );
}
