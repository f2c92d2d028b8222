//! The node endpoints: CA fetch, join, renewal, reports, desired state.

use super::{ApiError, AppState, Peer, body_of, parse_json};
use crate::fleet::NodeIdentity;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use scs_edge_proto::{
    ErrorCode, JoinRequest, MAX_REQUEST_BYTES, MIN_SUPPORTED_VERSION, PROTOCOL_HEADER,
    PROTOCOL_VERSION, RenewRequest, ReportBatch, is_supported, paths,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(paths::CA, get(ca))
        .route(paths::JOIN, post(join))
        .route("/node/v1/sites/{site}/certificate", post(renew))
        .route("/node/v1/sites/{site}/reports", post(reports))
        .route("/node/v1/sites/{site}/desired", get(desired))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(axum::middleware::map_response(stamp_protocol))
}

/// Every node answer names the region's protocol version, so an agent can tell what it talks to.
async fn stamp_protocol(mut response: Response) -> Response {
    response.headers_mut().insert(
        PROTOCOL_HEADER,
        axum::http::HeaderValue::from(PROTOCOL_VERSION),
    );
    response
}

/// A request without the header is version 1 (curl-friendly); one naming an unsupported version is
/// refused with the range this region serves.
fn check_protocol(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(PROTOCOL_HEADER) else {
        return Ok(());
    };
    let version = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    match version {
        Some(v) if is_supported(v) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedProtocol,
            format!(
                "protocol version {:?} is not supported; this region speaks {MIN_SUPPORTED_VERSION} to {PROTOCOL_VERSION}",
                value.to_str().unwrap_or("?")
            ),
        )),
    }
}

async fn ca(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "application/x-pem-file")],
        state.fleet.ca().certificate_pem().to_owned(),
    )
}

async fn join(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_protocol(&headers)?;
    let request: JoinRequest = parse_json(&body_of(body)?)?;
    let enrollment = state.fleet.join(&request).await?;
    tracing::info!(site = %enrollment.site, agent = %request.agent_version, "site joined");
    Ok((StatusCode::CREATED, Json(enrollment)).into_response())
}

/// The node identity for a request about `site`, checked against the store (issued here, same site,
/// not revoked, not expired).
pub(super) async fn authorized(
    state: &AppState,
    peer: &Peer,
    site: &str,
) -> Result<NodeIdentity, ApiError> {
    let Some(node) = &peer.node else {
        let reason = peer
            .certificate_problem
            .as_deref()
            .unwrap_or("a client certificate from the region CA is required");
        return Err(ApiError::unauthenticated(reason));
    };
    state.fleet.authorize_node(node, site).await?;
    Ok(node.clone())
}

async fn renew(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(site): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_protocol(&headers)?;
    let node = authorized(&state, &peer, &site).await?;
    let request: RenewRequest = parse_json(&body_of(body)?)?;
    let enrollment = state.fleet.renew(&node, &request.csr_pem).await?;
    Ok(Json(enrollment).into_response())
}

async fn reports(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(site): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_protocol(&headers)?;
    let node = authorized(&state, &peer, &site).await?;
    let batch: ReportBatch = parse_json(&body_of(body)?)?;
    let ack = state.fleet.accept_reports(&node, &batch).await?;
    Ok(Json(ack).into_response())
}

async fn desired(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(site): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_protocol(&headers)?;
    let node = authorized(&state, &peer, &site).await?;
    Ok(Json(state.fleet.desired(&node).await?).into_response())
}
