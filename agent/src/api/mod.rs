//! The agent's one HTTPS listener.
//!
//! Today it serves `GET /healthz` and `GET /metrics`; the OpenStack-compatible API (identity, compute,
//! image, network) will be mounted here path-routed like devstack. This folder knows HTTP and OpenStack
//! JSON shapes and nothing else: handlers call the domain layer and map its errors in `error.rs`.

pub mod error;
pub mod tls;

use crate::health::HealthChecks;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
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
}

/// The routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async { error::ApiError::not_found("the resource could not be found") })
        .with_state(state)
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
