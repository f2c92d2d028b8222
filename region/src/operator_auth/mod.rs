//! Operator authentication: who is calling the region's REST API and dashboard, from the OIDC bearer
//! token the central identity provider (Keycloak in production) issued them.
//!
//! The region never sees passwords. It trusts exactly one issuer, learns that issuer's endpoints and
//! signing keys through OIDC Discovery at start, and verifies each access token locally against the
//! cached keys — so the API keeps authenticating operators while the IdP is briefly down, and a
//! request costs no round trip to the IdP.
//!
//! The checks, in order, and why:
//! 1. the token is three base64url parts and not absurdly long ([`AuthError::Malformed`]);
//! 2. its `alg` is an asymmetric signature (RS*, PS*, ES256/384, EdDSA) — `none` and `HS*` are refused
//!    before any key is touched, because the IdP never signs with a secret we share
//!    ([`AuthError::AlgorithmNotAllowed`]);
//! 3. it names its key by `kid` ([`AuthError::MissingKid`]); an unknown kid makes us fetch the JWKS
//!    again, at most once per `jwks_refresh_min_interval` ([`AuthError::UnknownKid`]);
//! 4. the key's type (and its pinned `alg`, if any) fits the token's `alg` — the key decides, never the
//!    token, which is what defeats algorithm-confusion attacks ([`AuthError::AlgorithmMismatch`]);
//! 5. signature, then `exp` (required, 30 s leeway), `nbf` (if present), `iss` (exact), `aud`
//!    (contains ours), `sub` (required), and `typ` (if present, `Bearer`: no ID or refresh tokens);
//! 6. with an `operator_group` configured, the `groups` claim contains it — otherwise the caller is
//!    authenticated but not allowed in ([`AuthError::Forbidden`], HTTP 403 rather than 401).
//!
//! No error message contains the token (attacker-chosen header values are truncated and quoted).

mod discovery;
mod jwks;
#[cfg(test)]
mod tests;

pub use discovery::DiscoveryError;
pub use jwks::JwksError;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use discovery::Endpoints;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use jwks::{KeySet, RefetchGate, VerificationKey};
use reqwest::Url;
use serde::Deserialize;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Clock skew we tolerate on `exp` and `nbf`. Small on purpose: the region and Keycloak run NTP, and
/// every second of leeway is a second a revoked operator keeps access.
const LEEWAY_SECS: u64 = 30;

/// Longer bearer tokens are refused unparsed. Keycloak's access tokens are 1–3 KiB even with many
/// groups; the cap bounds the work an anonymous request can cause.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// How much of an attacker-chosen header value (`alg`, `kid`) goes into an error message.
const MAX_ECHO_CHARS: usize = 64;

/// `[oidc]` in the region's configuration: which identity provider operators come from, and who of
/// them may operate the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// `oidc.issuer` — the issuer URL exactly as it appears in the tokens' `iss`, e.g.
    /// `https://id.example.org/realms/scs`. Discovery is fetched from
    /// `{issuer}/.well-known/openid-configuration`; plain `http` is accepted for loopback hosts only.
    pub issuer: String,
    /// `oidc.audience` — the value the region's API must find in a token's `aud`. Tokens for other
    /// services of the same IdP carry other audiences and must not open the region.
    pub audience: String,
    /// `oidc.operator_group` — if set, the `groups` claim must contain this exact value (Keycloak's
    /// full group path, e.g. `/scs-edge/operators`). Unset means every authenticated user of the
    /// issuer with our audience is an operator.
    #[serde(default)]
    pub operator_group: Option<String>,
    /// `oidc.jwks_refresh_min_interval_secs` — an unknown `kid` makes the region refetch the JWKS (a
    /// rotated key), but not more often than this, so a flood of made-up kids cannot turn the region
    /// into a load generator against the IdP. Default 60.
    #[serde(
        rename = "jwks_refresh_min_interval_secs",
        default = "default_refresh_min_interval",
        deserialize_with = "seconds"
    )]
    pub jwks_refresh_min_interval: Duration,
    /// `oidc.jwks_max_age_secs` — cached keys older than this are refreshed in the background, so a
    /// key the IdP withdrew (compromised, retired) stops verifying tokens without a restart. If the
    /// IdP is unreachable the cached keys stay in use. Default 600.
    #[serde(
        rename = "jwks_max_age_secs",
        default = "default_max_age",
        deserialize_with = "seconds"
    )]
    pub jwks_max_age: Duration,
    /// `oidc.http_timeout_secs` — per request to the IdP (discovery, JWKS). An IdP that hangs must not
    /// hang the requests waiting on a key refresh. Default 10.
    #[serde(
        rename = "http_timeout_secs",
        default = "default_http_timeout",
        deserialize_with = "seconds"
    )]
    pub http_timeout: Duration,
}

impl OidcSettings {
    /// Settings for `issuer` and `audience` with every other key at its default.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            operator_group: None,
            jwks_refresh_min_interval: default_refresh_min_interval(),
            jwks_max_age: default_max_age(),
            http_timeout: default_http_timeout(),
        }
    }
}

fn default_refresh_min_interval() -> Duration {
    Duration::from_mins(1)
}

fn default_max_age() -> Duration {
    Duration::from_mins(10)
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Whole seconds in the file (`_secs` keys, as in the agent's configuration), a `Duration` in code.
fn seconds<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_secs)
}

/// An authenticated operator, as the identity provider describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// `sub`: the stable identifier — use it for audit records and ownership, never the username.
    pub subject: String,
    /// `preferred_username` (or `sub` if the IdP sends none): for display and logs.
    pub username: String,
    /// `groups`: the IdP's group memberships (Keycloak full paths), for authorisation decisions.
    pub groups: Vec<String>,
}

/// Why a bearer token was not accepted, precise enough for the log line an operator or auditor
/// needs. Every variant but [`AuthError::Forbidden`] and [`AuthError::Discovery`] means
/// "unauthenticated" (HTTP 401).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not a compact JWS with a JSON header and claims of the expected types.
    #[error("malformed bearer token: {0}")]
    Malformed(&'static str),
    /// The header has no `kid`; keys are selected by `kid` only, never by trying each.
    #[error("token header has no kid")]
    MissingKid,
    /// No key with this `kid`, even after refetching the JWKS (or the refetch was not yet allowed).
    #[error("token key id {kid:?} is not among the identity provider's signing keys")]
    UnknownKid {
        /// The token's `kid`, truncated.
        kid: String,
    },
    /// `alg` is `none`, HMAC or unknown: we verify asymmetric signatures only.
    #[error("token algorithm {0:?} is not allowed (only RS*, PS*, ES256, ES384, EdDSA)")]
    AlgorithmNotAllowed(String),
    /// `alg` is asymmetric but does not fit the key the `kid` names (an RS256 token pointing at an EC
    /// key, a PS256 token at a key pinned to RS256, …).
    #[error("token algorithm {alg:?} does not fit key {kid:?}, a {key}")]
    AlgorithmMismatch {
        /// The token's algorithm.
        alg: Algorithm,
        /// The key's id.
        kid: String,
        /// What the key is and allows.
        key: String,
    },
    /// The signature does not verify with the named key (forged, altered, or signed by another key
    /// under a reused kid).
    #[error("token signature does not verify with key {kid:?}")]
    BadSignature {
        /// The key's id.
        kid: String,
    },
    /// `exp` is past (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid yet (nbf in the future)")]
    NotYetValid,
    /// `iss` is not exactly the configured issuer.
    #[error("token issuer is not {expected:?}")]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
    },
    /// `aud` does not contain the region's audience: a token for another service.
    #[error("token audience does not include {expected:?}")]
    WrongAudience {
        /// The configured audience.
        expected: String,
    },
    /// A claim we require (`exp`, `iss`, `aud`, `sub`) is absent.
    #[error("token has no {0} claim")]
    MissingClaim(String),
    /// The `typ` claim says this is not an access token (Keycloak marks ID tokens `ID`).
    #[error("token is a {0:?} token, not an access token")]
    WrongTokenType(String),
    /// Authenticated, but not in the operator group: HTTP 403, not 401.
    #[error("{username} is not in the operator group {group:?}")]
    Forbidden {
        /// Who was refused (`preferred_username`).
        username: String,
        /// The group they lack.
        group: String,
    },
    /// The identity provider's metadata or keys could not be fetched or used (at start).
    #[error("OIDC discovery at {url} failed: {source}")]
    Discovery {
        /// The URL that failed.
        url: String,
        /// Why.
        #[source]
        source: DiscoveryError,
    },
}

impl AuthError {
    /// Whether the caller is authenticated but not allowed (HTTP 403) rather than unauthenticated
    /// (HTTP 401) — the distinction tells an operator to ask for group membership, not to log in again.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::Forbidden { .. })
    }
}

/// Verifies operators' bearer tokens against one issuer. Cheap to clone (an `Arc` inside); share one
/// per process so the JWKS cache and its refetch limit are shared too.
#[derive(Clone)]
pub struct OperatorAuth {
    inner: Arc<Inner>,
}

struct Inner {
    settings: OidcSettings,
    http: reqwest::Client,
    endpoints: Endpoints,
    keys: RwLock<Arc<CachedKeys>>,
    /// Held across a JWKS fetch: one fetch at a time, and the interval between them enforced.
    gate: tokio::sync::Mutex<RefetchGate>,
}

struct CachedKeys {
    set: KeySet,
    fetched_at: Instant,
}

impl fmt::Debug for OperatorAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.inner.cached();
        f.debug_struct("OperatorAuth")
            .field("issuer", &self.inner.settings.issuer)
            .field("audience", &self.inner.settings.audience)
            .field("operator_group", &self.inner.settings.operator_group)
            .field("jwks_uri", &self.inner.endpoints.jwks_uri.as_str())
            .field("keys", &cached.set.len())
            .finish_non_exhaustive()
    }
}

impl OperatorAuth {
    /// Discovers the issuer's endpoints and fetches its keys. Fails if the IdP is unreachable, its
    /// metadata names another issuer than `settings.issuer`, or it publishes no usable signing key —
    /// the region should not start accepting operators it cannot authenticate.
    ///
    /// `http` is the region's shared client (its TLS roots decide which IdP certificates are trusted).
    pub async fn discover(
        settings: OidcSettings,
        http: reqwest::Client,
    ) -> Result<Self, AuthError> {
        let timeout = settings.http_timeout;
        let endpoints = discovery::fetch_endpoints(&http, &settings.issuer, timeout)
            .await
            .map_err(|source| AuthError::Discovery {
                url: discovery::discovery_url(&settings.issuer),
                source,
            })?;
        let set = discovery::fetch_keys(&http, &endpoints.jwks_uri, timeout)
            .await
            .map_err(|source| AuthError::Discovery {
                url: endpoints.jwks_uri.to_string(),
                source,
            })?;
        tracing::info!(issuer = %settings.issuer, jwks_uri = %endpoints.jwks_uri, keys = set.len(),
            "OIDC issuer discovered");
        let gate = RefetchGate::new(settings.jwks_refresh_min_interval);
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                http,
                endpoints,
                keys: RwLock::new(Arc::new(CachedKeys {
                    set,
                    fetched_at: Instant::now(),
                })),
                gate: tokio::sync::Mutex::new(gate),
            }),
        })
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.inner.settings.issuer
    }

    /// Where the dashboard sends a browser to log in (authorization-code flow).
    pub fn authorization_endpoint(&self) -> &Url {
        &self.inner.endpoints.authorization
    }

    /// Where the dashboard exchanges an authorization code for tokens.
    pub fn token_endpoint(&self) -> &Url {
        &self.inner.endpoints.token
    }

    /// Where the dashboard sends a browser to end the IdP session on logout, if the IdP has one
    /// (RP-initiated logout; Keycloak does).
    pub fn end_session_endpoint(&self) -> Option<&Url> {
        self.inner.endpoints.end_session.as_ref()
    }

    /// Verifies `bearer` (the token without the `Bearer ` prefix) and returns the operator it names.
    ///
    /// May fetch the JWKS once if the token names a key we do not know (see the module docs); never
    /// fails because the IdP is down while the token's key is cached.
    pub async fn authenticate(&self, bearer: &str) -> Result<Operator, AuthError> {
        if bearer.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed("longer than 16 KiB"));
        }
        let header = parse_header(bearer)?;
        let alg = jwks::asymmetric_algorithm(&header.alg)
            .ok_or_else(|| AuthError::AlgorithmNotAllowed(echo(&header.alg)))?;
        let kid = header.kid.ok_or(AuthError::MissingKid)?;
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; we understand none.
            return Err(AuthError::Malformed("header has crit extensions"));
        }
        let key = if let Some(key) = self.inner.key(&kid) {
            key
        } else {
            self.inner
                .refresh(&format!("unknown kid {:?}", echo(&kid)))
                .await;
            self.inner
                .key(&kid)
                .ok_or_else(|| AuthError::UnknownKid { kid: echo(&kid) })?
        };
        key.check_algorithm(alg)
            .map_err(|key| AuthError::AlgorithmMismatch {
                alg,
                kid: echo(&kid),
                key,
            })?;
        let claims = self.verify(bearer, alg, &key, &kid)?;
        self.refresh_if_stale();
        if let Some(typ) = claims.typ
            && !typ.eq_ignore_ascii_case("Bearer")
        {
            return Err(AuthError::WrongTokenType(echo(&typ)));
        }
        let subject = claims
            .sub
            .ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
        let groups = claims.groups.unwrap_or_default();
        let username = claims.preferred_username.unwrap_or_else(|| subject.clone());
        if let Some(group) = &self.inner.settings.operator_group
            && !groups.contains(group)
        {
            return Err(AuthError::Forbidden {
                username,
                group: group.clone(),
            });
        }
        Ok(Operator {
            subject,
            username,
            groups,
        })
    }

    /// Signature and registered claims, with `jsonwebtoken` doing the cryptography.
    fn verify(
        &self,
        bearer: &str,
        alg: Algorithm,
        key: &VerificationKey,
        kid: &str,
    ) -> Result<AccessClaims, AuthError> {
        let settings = &self.inner.settings;
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        let data = jsonwebtoken::decode::<AccessClaims>(bearer, &key.decoding, &validation)
            .map_err(|error| match error.into_kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature { kid: echo(kid) },
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer {
                    expected: settings.issuer.clone(),
                },
                ErrorKind::InvalidAudience => AuthError::WrongAudience {
                    expected: settings.audience.clone(),
                },
                ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
                // Checked by `check_algorithm` already; kept distinct should the library disagree.
                ErrorKind::InvalidAlgorithm => AuthError::AlgorithmMismatch {
                    alg,
                    kid: echo(kid),
                    key: key.kind.to_string(),
                },
                ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_) => {
                    AuthError::Malformed("signature does not fit the key's size or curve")
                }
                ErrorKind::InvalidClaimFormat(_) => {
                    AuthError::Malformed("exp or nbf is not a number")
                }
                ErrorKind::Json(_) => {
                    AuthError::Malformed("claims are not a JSON object of the expected types")
                }
                ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                    AuthError::Malformed("a part is not base64url-encoded UTF-8")
                }
                _ => AuthError::Malformed("not a compact JWS"),
            })?;
        // `jsonwebtoken` also accepts an `iss` array that merely contains ours; `iss` is one string
        // (RFC 7519 §4.1.1), and `AccessClaims` only deserializes a string, so here it is exact.
        if data.claims.iss.as_deref() != Some(settings.issuer.as_str()) {
            return Err(AuthError::WrongIssuer {
                expected: settings.issuer.clone(),
            });
        }
        Ok(data.claims)
    }

    /// Refreshes old keys in the background, so withdrawn keys stop working while requests keep
    /// their latency and the cache keeps working if the IdP is down.
    fn refresh_if_stale(&self) {
        if self.inner.cached().fetched_at.elapsed() < self.inner.settings.jwks_max_age {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = Arc::clone(&self.inner);
        runtime.spawn(async move {
            // Someone else refreshing right now is as good as refreshing ourselves.
            if let Ok(gate) = inner.gate.try_lock() {
                inner
                    .refresh_locked(gate, "cached keys are older than jwks_max_age")
                    .await;
            }
        });
    }
}

impl Inner {
    fn cached(&self) -> Arc<CachedKeys> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn key(&self, kid: &str) -> Option<VerificationKey> {
        self.cached().set.get(kid).cloned()
    }

    /// Fetches the JWKS if the gate allows it, waiting for a fetch already under way.
    async fn refresh(&self, reason: &str) {
        let gate = self.gate.lock().await;
        self.refresh_locked(gate, reason).await;
    }

    async fn refresh_locked(
        &self,
        mut gate: tokio::sync::MutexGuard<'_, RefetchGate>,
        reason: &str,
    ) {
        if !gate.try_begin(Instant::now()) {
            tracing::debug!(
                reason,
                "JWKS refetch skipped: jwks_refresh_min_interval not over"
            );
            return;
        }
        let uri = &self.endpoints.jwks_uri;
        match discovery::fetch_keys(&self.http, uri, self.settings.http_timeout).await {
            Ok(set) => {
                tracing::info!(reason, jwks_uri = %uri, keys = set.len(), "JWKS refetched");
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(CachedKeys {
                    set,
                    fetched_at: Instant::now(),
                });
            }
            Err(error) => {
                tracing::warn!(reason, jwks_uri = %uri, %error, "JWKS refetch failed; keeping the cached keys");
            }
        }
        drop(gate);
    }
}

/// The header fields we read, parsed ourselves: `jsonwebtoken` refuses unknown `alg` values with a
/// generic JSON error, and we want `none` and `HS256` named in the log.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

fn parse_header(bearer: &str) -> Result<RawHeader, AuthError> {
    let mut parts = bearer.split('.');
    let (Some(header), Some(_claims), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("not three dot-separated parts"));
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed("header is not base64url"))?;
    serde_json::from_slice(&json)
        .map_err(|_| AuthError::Malformed("header is not a JSON object with a string alg"))
}

/// The claims we read beyond those `jsonwebtoken` validates.
#[derive(Deserialize)]
struct AccessClaims {
    // Optional here so that a missing one is reported by `jsonwebtoken`'s required-claims check
    // (`MissingClaim`), which runs after these claims are deserialized.
    iss: Option<String>,
    sub: Option<String>,
    preferred_username: Option<String>,
    groups: Option<Vec<String>>,
    typ: Option<String>,
}

/// An attacker-chosen string made fit for a log line: at most [`MAX_ECHO_CHARS`] characters (the
/// messages quote it with `{:?}`, which escapes control characters).
fn echo(value: &str) -> String {
    value.chars().take(MAX_ECHO_CHARS).collect()
}
