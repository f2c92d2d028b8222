//! The agent's one HTTPS listener.
//!
//! It serves the OpenStack-compatible API path-routed like devstack (`/identity/v3`, `/compute/v2.1`,
//! `/image/v2`, `/network/v2.0`) beside `GET /healthz` and `GET /metrics`. This folder knows HTTP and
//! OpenStack JSON shapes and nothing else: handlers call the domain layer and map its errors in
//! `error.rs`, where each service's routes get their own error dialect.

pub mod auth;
pub mod body;
mod compute;
pub mod discovery;
pub mod error;
mod identity;
mod image;
pub mod microversion;
mod network;
#[cfg(test)]
mod test_state;
pub mod tls;

use crate::health::HealthChecks;
use crate::metrics::Metrics;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use error::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// What the handlers need.
#[derive(Clone)]
pub struct ApiState {
    /// Subsystem checks for `/healthz`.
    pub health: Arc<HealthChecks>,
    /// Registry for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Base URL clients reach us at (catalog, version documents), without a trailing slash.
    pub public_base: Arc<str>,
    /// Keystone's domain.
    pub identity: Arc<crate::identity::IdentityService>,
    /// Nova's domain.
    pub compute: Arc<crate::compute::ComputeService>,
    /// Glance's domain.
    pub images: Arc<crate::image::ImageService>,
    /// Neutron's domain.
    pub network: Arc<crate::network::NetworkService>,
    /// `api.max_image_upload_bytes`.
    pub max_image_upload_bytes: u64,
}

/// The routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(in_dialect(Service::Identity, discovery_routes("identity")))
        .merge(in_dialect(Service::Identity, identity::routes()))
        .merge(in_dialect(Service::Compute, discovery_routes("compute")))
        .merge(in_dialect(Service::Compute, compute::routes()))
        .merge(in_dialect(Service::Image, discovery_routes("image")))
        .merge(in_dialect(Service::Image, image::routes()))
        .merge(in_dialect(Service::Network, discovery_routes("network")))
        .merge(in_dialect(Service::Network, network::routes()))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(body::JSON_BODY_LIMIT))
        .with_state(state)
}

/// Every request-body parser of the API fed the same bytes: the entry point of the `api_requests`
/// fuzz target (`agent/fuzz`). Not an API; it only has to never panic.
#[doc(hidden)]
pub fn parse_request_bodies(data: &[u8]) {
    compute::parse_probe(data);
    image::parse_probe(data);
}

/// The timestamp format Nova, Neutron and Glance documents share: `2026-11-22T03:10:00Z`.
fn openstack_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Layers `service`'s error dialect over `routes`.
fn in_dialect(service: Service, routes: Router<ApiState>) -> Router<ApiState> {
    routes.layer(axum::middleware::map_response(move |response| async move {
        error::render_for(service, response)
    }))
}

/// The version documents of one service, at its root and its versioned root.
fn discovery_routes(service: &'static str) -> Router<ApiState> {
    let root = move |State(state): State<ApiState>| async move {
        let base = &state.public_base;
        match service {
            "identity" => (
                StatusCode::MULTIPLE_CHOICES,
                Json(discovery::identity_versions(base)),
            ),
            "compute" => (StatusCode::OK, Json(discovery::compute_versions(base))),
            "image" => (
                StatusCode::MULTIPLE_CHOICES,
                Json(discovery::image_versions(base)),
            ),
            _ => (StatusCode::OK, Json(discovery::network_versions(base))),
        }
    };
    let versioned = move |State(state): State<ApiState>| async move {
        let base = &state.public_base;
        Json(match service {
            "identity" => discovery::identity_version(base),
            "compute" => discovery::compute_version(base),
            "image" => discovery::image_versions(base),
            _ => discovery::network_resources(base),
        })
    };
    let version = match service {
        "identity" => "v3",
        "compute" => "v2.1",
        "image" => "v2",
        _ => "v2.0",
    };
    Router::new()
        .route(&format!("/{service}"), get(root))
        .route(&format!("/{service}/"), get(root))
        .route(&format!("/{service}/{version}"), get(versioned))
        .route(&format!("/{service}/{version}/"), get(versioned))
}

/// Unmatched paths answer 404 in the dialect of the service their prefix names.
async fn fallback(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    let service = [
        ("/identity", Service::Identity),
        ("/compute", Service::Compute),
        ("/image", Service::Image),
        ("/network", Service::Network),
    ]
    .into_iter()
    .find_map(|(prefix, service)| path.starts_with(prefix).then_some(service))
    .unwrap_or(Service::Node);
    error::render_for(
        service,
        error::ApiError::not_found("The resource could not be found.").into_response(),
    )
}

async fn healthz(State(state): State<ApiState>) -> impl IntoResponse {
    let health = state.health.clone();
    match tokio::task::spawn_blocking(move || health.run()).await {
        Ok(report) => {
            let status = if report.is_healthy() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (
                status,
                axum::Json(serde_json::to_value(&report).unwrap_or_default()),
            )
                .into_response()
        }
        Err(_) => error::ApiError::internal().into_response(),
    }
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let metrics = state.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => error::ApiError::internal().into_response(),
    }
}

/// Accepts TLS connections until `shutdown`; each connection is served on its own task.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "HTTPS listener up");
    }
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    debug!(%err, "accept failed");
                    continue;
                }
            },
        };
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
                    debug!(%peer, %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            let builder = Builder::new(TokioExecutor::new());
            let connection =
                builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
            tokio::select! {
                result = connection => if let Err(err) = result { debug!(%peer, %err, "connection ended with error"); },
                () = shutdown.cancelled() => {}
            }
        });
    }
}
