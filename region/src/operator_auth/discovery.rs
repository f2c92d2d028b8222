//! OpenID Connect Discovery: where the identity provider's keys and login endpoints are, fetched
//! from `{issuer}/.well-known/openid-configuration` so the region's configuration needs the issuer
//! only (Keycloak's endpoint paths differ between versions and realms).

use super::jwks::{JwksError, KeySet};
use reqwest::Url;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

/// The largest discovery document or JWKS we read. Keycloak's are a few KiB; the cap keeps a broken
/// or hostile endpoint from filling the region's memory.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why the identity provider's metadata or keys could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A URL (configured or advertised) is unusable: not a URL, or plain HTTP to a host that is not
    /// loopback — keys fetched over plain HTTP could be swapped by anyone on the path.
    #[error("{field} {url:?} {reason}")]
    UntrustedUrl {
        /// Which URL: `issuer`, `jwks_uri`, `authorization_endpoint`, …
        field: &'static str,
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The request failed (connect, TLS, timeout, body).
    #[error("request failed: {0}")]
    Request(#[source] reqwest::Error),
    /// The IdP answered with an error status.
    #[error("HTTP status {0}")]
    Status(reqwest::StatusCode),
    /// The body exceeded [`MAX_DOCUMENT_BYTES`].
    #[error("response larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    /// The discovery document is not JSON or lacks a required field.
    #[error("discovery document is not valid provider metadata: {0}")]
    Metadata(#[source] serde_json::Error),
    /// The document names another issuer than the one configured. OIDC Discovery §4.3 requires them
    /// to be identical, and tokens carry this exact string in `iss`, so anything else is a
    /// misconfiguration (wrong realm, http vs https, a trailing slash) best found at start.
    #[error("discovery document names issuer {found:?}, but the configured issuer is {expected:?}")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The issuer the document names.
        found: String,
    },
    /// The JWKS is unusable.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// The endpoints the region uses, from the provider metadata.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub(crate) jwks_uri: Url,
    pub(crate) authorization: Url,
    pub(crate) token: Url,
    pub(crate) end_session: Option<Url>,
}

/// The fields of the provider metadata (OIDC Discovery §3) we read.
#[derive(Deserialize)]
struct ProviderMetadata {
    issuer: String,
    jwks_uri: String,
    authorization_endpoint: String,
    token_endpoint: String,
    end_session_endpoint: Option<String>,
}

/// The discovery URL for an issuer (OIDC Discovery §4: the well-known suffix after the issuer's path).
pub(crate) fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Fetches and checks the provider metadata of `issuer`.
pub(crate) async fn fetch_endpoints(
    http: &reqwest::Client,
    issuer: &str,
    timeout: Duration,
) -> Result<Endpoints, DiscoveryError> {
    trusted_url("issuer", issuer)?;
    let url = trusted_url("discovery URL", &discovery_url(issuer))?;
    let body = fetch(http, url, timeout).await?;
    let metadata: ProviderMetadata =
        serde_json::from_slice(&body).map_err(DiscoveryError::Metadata)?;
    if metadata.issuer != issuer {
        return Err(DiscoveryError::IssuerMismatch {
            expected: issuer.to_owned(),
            found: metadata.issuer,
        });
    }
    Ok(Endpoints {
        jwks_uri: trusted_url("jwks_uri", &metadata.jwks_uri)?,
        authorization: trusted_url("authorization_endpoint", &metadata.authorization_endpoint)?,
        token: trusted_url("token_endpoint", &metadata.token_endpoint)?,
        end_session: metadata
            .end_session_endpoint
            .as_deref()
            .map(|url| trusted_url("end_session_endpoint", url))
            .transpose()?,
    })
}

/// Fetches and parses the JWKS.
pub(crate) async fn fetch_keys(
    http: &reqwest::Client,
    jwks_uri: &Url,
    timeout: Duration,
) -> Result<KeySet, DiscoveryError> {
    let body = fetch(http, jwks_uri.clone(), timeout).await?;
    Ok(KeySet::from_jwks(&body)?)
}

/// GET with a timeout, a success status and a size cap.
async fn fetch(
    http: &reqwest::Client,
    url: Url,
    timeout: Duration,
) -> Result<Vec<u8>, DiscoveryError> {
    let mut response = http
        .get(url)
        .timeout(timeout)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(DiscoveryError::Request)?;
    if !response.status().is_success() {
        return Err(DiscoveryError::Status(response.status()));
    }
    if response
        .content_length()
        .is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(DiscoveryError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(DiscoveryError::Request)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(DiscoveryError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a URL we will fetch keys from or send operators to: HTTPS, or plain HTTP on loopback only
/// (the test IdP and a lab with the IdP on the same host).
fn trusted_url(field: &'static str, url: &str) -> Result<Url, DiscoveryError> {
    let untrusted = |reason| DiscoveryError::UntrustedUrl {
        field,
        url: url.to_owned(),
        reason,
    };
    let parsed = Url::parse(url).map_err(|_| untrusted("is not an absolute URL"))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback(&parsed) => Ok(parsed),
        "http" => Err(untrusted(
            "uses plain HTTP to a host that is not loopback; use https",
        )),
        _ => Err(untrusted("is neither https nor http")),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // IPv6 hosts come bracketed (`[::1]`).
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
