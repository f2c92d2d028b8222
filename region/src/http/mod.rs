//! The region's one HTTPS listener: node endpoints (`/node/v1/…`, mTLS), the operator REST API
//! (`/api/v1/…`, OIDC bearer), the dashboard (`/`, OIDC login), the sites' release repository
//! (`/node/v1/sites/{site}/repository/…`, mTLS) and `/healthz`.
//!
//! One port for all of it keeps a region behind a single firewall rule. Client certificates are
//! optional at the TLS layer (a node joining has none yet; a browser never has one) and required by
//! the node routes, which read the verified certificate from the connection — never a header. Errors
//! on every route have one shape, [`scs_edge_proto::ErrorBody`], mapped from [`FleetError`] here,
//! from [`crate::releases::ReleasesError`] in `releases.rs` and from
//! [`crate::rollouts::service::RolloutError`] in `rollouts.rs`, nowhere else.

mod csrf;
mod login;
mod node;
mod operator;
mod range;
mod releases;
mod rollout_pages;
mod rollouts;

use crate::ca::RegionCa;
use crate::fleet::{Fleet, FleetError, NodeIdentity};
use crate::operator_auth::OperatorAuth;
use crate::releases::Releases;
use crate::rollouts::service::Rollouts;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use jiff::{SignedDuration, Timestamp};
use scs_edge_proto::{ErrorBody, ErrorCode, ErrorDetail, SITE_URI_PREFIX};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use login::Sessions;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The domain layer.
    pub fleet: Fleet,
    /// How operators authenticate.
    pub operator_access: OperatorAccess,
    /// Browser login settings and sessions.
    pub login: Arc<login::LoginSettings>,
    /// Dashboard sessions.
    pub sessions: Sessions,
    /// HTTP client towards the identity provider (the login's code exchange).
    pub http_client: reqwest::Client,
    /// The region's name, shown on the dashboard.
    pub region_name: Arc<str>,
    /// The heartbeat interval sites use, for staleness and gap display.
    pub expected_interval: SignedDuration,
    /// The release mirror, when `[releases]` is configured.
    pub releases: Option<Releases>,
    /// Fleet rollouts.
    pub rollouts: Rollouts,
}

/// Builds the router over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(node::routes())
        .merge(operator::routes())
        .merge(releases::routes())
        .merge(rollouts::routes())
        .merge(rollout_pages::routes())
        .merge(login::routes())
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(axum::middleware::from_fn(csrf::guard_api_writes))
        .with_state(state)
}

pub use login::LoginSettings;
pub use releases::release_json;
pub use rollouts::rollout_json;

/// How operators authenticate: no identity provider (loopback clients only, without authentication),
/// or an identity provider — discovered in the background, so the region serves its nodes even while
/// the provider is unreachable at start.
#[derive(Clone, Default)]
pub enum OperatorAccess {
    /// No `[oidc]` configured.
    #[default]
    LoopbackOnly,
    /// `[oidc]` configured; the slot fills once discovery succeeded.
    Oidc(Arc<std::sync::OnceLock<OperatorAuth>>),
}

impl OperatorAccess {
    /// Whether an identity provider is configured (then loopback grants nothing).
    pub fn has_identity_provider(&self) -> bool {
        matches!(self, Self::Oidc(_))
    }

    /// The discovered provider; `Ok(None)` without one; 503 while discovery has not succeeded yet.
    pub fn provider(&self) -> Result<Option<&OperatorAuth>, ApiError> {
        match self {
            Self::LoopbackOnly => Ok(None),
            Self::Oidc(slot) => slot.get().map(Some).ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Internal,
                    "the identity provider has not been reached yet; retry shortly",
                )
            }),
        }
    }
}

/// What the TLS layer learned about the client of one connection, handed to every request on it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address (loopback checks for unauthenticated local operator access).
    pub address: SocketAddr,
    /// The node identity, when the client presented a certificate the region CA verified.
    pub node: Option<NodeIdentity>,
    /// Why a presented certificate could not be read as a node identity (then `node` is `None`).
    pub certificate_problem: Option<String>,
}

/// The TLS server configuration: the region's certificate for `names`, and client certificates
/// verified against the region CA when offered.
pub fn tls_config(
    ca: &RegionCa,
    names: &[String],
    now: Timestamp,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let (issued, key) = ca
        .issue_server_certificate(names, now, SignedDuration::from_hours(24 * 365))
        .map_err(|e| e.to_string())?;
    let cert_der =
        crate::ca::pem_to_der(&issued.pem, "CERTIFICATE").ok_or("server certificate PEM")?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.certificate_der().to_vec().into())
        .map_err(|e| format!("CA certificate: {e}"))?;
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| format!("client verifier: {e}"))?;
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| format!("server key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(
            vec![cert_der.into(), ca.certificate_der().to_vec().into()],
            key_der,
        )
        .map_err(|e| format!("server certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "region HTTPS listener up");
    }
    loop {
        let (stream, address) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(%err, "accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls_stream = match tokio::time::timeout(
                Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(err)) => {
                    debug!(%address, %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%address, "TLS handshake timed out");
                    return;
                }
            };
            let peer = peer_of(address, tls_stream.get_ref().1.peer_certificates());
            let app = app.layer(axum::Extension(peer));
            let service = TowerToHyperService::new(app);
            let builder = Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(tls_stream), service);
            tokio::select! {
                result = connection => if let Err(err) = result { debug!(%address, %err, "connection ended with error"); },
                () = shutdown.cancelled() => {}
            }
        });
    }
}

fn peer_of(
    address: SocketAddr,
    certificates: Option<&[rustls::pki_types::CertificateDer<'_>]>,
) -> Peer {
    let Some(leaf) = certificates.and_then(<[_]>::first) else {
        return Peer {
            address,
            node: None,
            certificate_problem: None,
        };
    };
    match node_identity(leaf) {
        Ok(node) => Peer {
            address,
            node: Some(node),
            certificate_problem: None,
        },
        Err(problem) => Peer {
            address,
            node: None,
            certificate_problem: Some(problem),
        },
    }
}

/// Reads the serial and the site URI SAN of a (chain-verified) client certificate.
pub fn node_identity(der: &[u8]) -> Result<NodeIdentity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unparsable certificate: {e}"))?;
    let sites: Vec<&str> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::URI(uri) => {
                        uri.strip_prefix(SITE_URI_PREFIX)
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match sites.as_slice() {
        [site] => Ok(NodeIdentity {
            serial: crate::ca::to_hex(cert.raw_serial()),
            site: (*site).to_owned(),
        }),
        [] => Err("the client certificate names no site".into()),
        _ => Err("the client certificate names more than one site".into()),
    }
}

/// An error answer: status + the proto error body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code,
                    message: message.into(),
                    expected_seq: None,
                },
            },
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    /// 401.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            message,
        )
    }

    /// The status (tests and logs).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The explanation, safe to show.
    pub fn message(&self) -> &str {
        &self.body.error.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer realm=\"scs-edge-region\""),
            );
        }
        response
    }
}

/// The one mapping from domain errors to HTTP answers. Internal failures are logged with their detail
/// and answered with a generic message; a join token refusal says only that the token is invalid (the
/// precise reason goes to the log: telling a guesser "expired" versus "unknown" helps nobody else).
impl From<FleetError> for ApiError {
    fn from(error: FleetError) -> Self {
        use ErrorCode as C;
        use StatusCode as S;
        match error {
            FleetError::InvalidSiteName(_)
            | FleetError::InvalidLabel(_)
            | FleetError::InvalidInput(_)
            | FleetError::BadReport(_)
            | FleetError::Csr(_) => Self::new(S::BAD_REQUEST, C::BadRequest, error.to_string()),
            FleetError::TokenRefused(reason) => {
                info!(%reason, "join refused");
                Self::new(
                    S::UNAUTHORIZED,
                    C::InvalidJoinToken,
                    "the join token is invalid, expired or already used",
                )
            }
            FleetError::Unauthenticated(_) => {
                Self::new(S::UNAUTHORIZED, C::Unauthenticated, error.to_string())
            }
            FleetError::Revoked(_) => Self::new(S::FORBIDDEN, C::SiteRevoked, error.to_string()),
            FleetError::UnknownSite(_) => {
                Self::new(S::NOT_FOUND, C::UnknownSite, error.to_string())
            }
            FleetError::SiteExists(_) => Self::new(S::CONFLICT, C::BadRequest, error.to_string()),
            FleetError::OutOfOrder { expected } => {
                let mut e = Self::new(S::CONFLICT, C::OutOfOrder, error.to_string());
                e.body.error.expected_seq = Some(expected);
                e
            }
            FleetError::Ca(_) | FleetError::Store(_) => {
                warn!(%error, "request failed");
                Self::new(
                    S::INTERNAL_SERVER_ERROR,
                    C::Internal,
                    "internal error; the region logged the cause",
                )
            }
        }
    }
}

/// The request body, or the size/read failure as an [`ApiError`] (413 for an oversized body) in the
/// common error shape.
pub(crate) fn body_of(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let mut error = ApiError::bad_request(rejection.body_text());
        error.status = status;
        error
    })
}

/// Parses a JSON body with a clear 400 naming the field, instead of axum's plain-text rejection.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON body at {path}: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests;
