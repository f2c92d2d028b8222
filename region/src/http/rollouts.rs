//! Rollouts over HTTP (`/api/v1/rollouts…`, `/api/v1/rollout-switch`): operators create, list,
//! show, pause, resume and stop rollouts and engage the fleet-wide switch. Parse, call the
//! domain with the operator's name, render; every rule is [`crate::rollouts`]'.
//!
//! The switch is a resource of its own rather than an action under `/rollouts/`: any rollout
//! name is valid there.

use super::operator::authenticate;
use super::{ApiError, AppState, Peer, body_of, parse_json};
use crate::rollouts::machine::Plan;
use crate::rollouts::progress::Summary;
use crate::rollouts::service::{RolloutError, RolloutView};
use crate::rollouts::spec::RolloutSpec;
use crate::store::RolloutSwitch;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use scs_edge_proto::ErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/rollouts", get(list).post(create))
        .route("/api/v1/rollouts/{name}", get(show))
        .route("/api/v1/rollouts/{name}/pause", post(pause))
        .route("/api/v1/rollouts/{name}/resume", post(resume))
        .route("/api/v1/rollouts/{name}/stop", post(stop))
        .route("/api/v1/rollouts/{name}/finish", post(finish))
        .route("/api/v1/rollout-switch", get(show_switch).put(set_switch))
}

/// A rollout's JSON: its record, plan and what its sites are doing.
pub fn rollout_json(view: &RolloutView, summary: &Summary) -> Value {
    json!({
        "name": view.record.name,
        "target_version": view.record.target_version,
        "created_at": view.record.created_at,
        "created_by": view.record.created_by,
        "updated_at": view.record.updated_at,
        "revision": view.record.revision,
        "active": view.record.active,
        "plan": plan_json(&view.plan),
        "progress": summary,
    })
}

fn plan_json(plan: &Plan) -> Value {
    json!({
        "max_parallel": plan.max_parallel,
        "success_threshold_percent": plan.success_threshold_percent,
        "stop_on_failure": plan.stop_on_failure,
        "offline_deadline_secs": plan.offline_deadline.as_secs(),
        "waves": plan.waves.iter().map(|wave| json!({
            "name": wave.name,
            "soak_secs": wave.soak.as_secs(),
            "manual": wave.manual,
            "sites": wave.sites,
        })).collect::<Vec<_>>(),
    })
}

/// The list's short form: no per-site rows.
fn rollout_line(view: &RolloutView) -> Value {
    json!({
        "name": view.record.name,
        "target_version": view.record.target_version,
        "state": view.state.progress.name(),
        "wave": view.state.progress.wave(),
        "waves": view.plan.waves.len(),
        "sites": view.state.sites.len(),
        "created_at": view.record.created_at,
        "created_by": view.record.created_by,
        "updated_at": view.record.updated_at,
    })
}

fn switch_json(switch: &RolloutSwitch) -> Value {
    json!({
        "engaged": switch.engaged,
        "changed_at": switch.changed_at,
        "changed_by": switch.changed_by,
        "reason": switch.reason,
    })
}

async fn list(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticate(&state, &peer, &headers).await?;
    let rollouts = state.rollouts.list().await?;
    let rollouts: Vec<Value> = rollouts.iter().map(rollout_line).collect();
    Ok(Json(json!({ "rollouts": rollouts })).into_response())
}

async fn create(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let operator = authenticate(&state, &peer, &headers).await?;
    let spec: RolloutSpec = parse_json(&body_of(body)?)?;
    let created = state.rollouts.create(&spec, &operator.name).await?;
    let (view, summary) = state.rollouts.progress(&created.record.name).await?;
    Ok((StatusCode::CREATED, Json(rollout_json(&view, &summary))).into_response())
}

async fn show(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticate(&state, &peer, &headers).await?;
    let (view, summary) = state.rollouts.progress(&name).await?;
    Ok(Json(rollout_json(&view, &summary)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeRequest {
    /// Point the rollout at this (fixed) release and start again from the first wave.
    #[serde(default)]
    target_version: Option<String>,
}

async fn pause(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let operator = authenticate(&state, &peer, &headers).await?;
    let request: Reason = parse_json(&body_of(body)?)?;
    state
        .rollouts
        .pause(&name, &operator.name, &request.reason)
        .await?;
    shown(&state, &name).await
}

async fn resume(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let operator = authenticate(&state, &peer, &headers).await?;
    let request: ResumeRequest = parse_json(&body_of(body)?)?;
    state
        .rollouts
        .resume(&name, &operator.name, request.target_version.as_deref())
        .await?;
    shown(&state, &name).await
}

async fn stop(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let operator = authenticate(&state, &peer, &headers).await?;
    let request: Reason = parse_json(&body_of(body)?)?;
    state
        .rollouts
        .stop(&name, &operator.name, &request.reason)
        .await?;
    shown(&state, &name).await
}

async fn finish(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let operator = authenticate(&state, &peer, &headers).await?;
    state.rollouts.finish(&name, &operator.name).await?;
    shown(&state, &name).await
}

async fn shown(state: &AppState, name: &str) -> Result<Response, ApiError> {
    let (view, summary) = state.rollouts.progress(name).await?;
    Ok(Json(rollout_json(&view, &summary)).into_response())
}

async fn show_switch(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticate(&state, &peer, &headers).await?;
    Ok(Json(switch_json(&state.rollouts.switch().await?)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchRequest {
    engaged: bool,
    reason: String,
}

async fn set_switch(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let operator = authenticate(&state, &peer, &headers).await?;
    let request: SwitchRequest = parse_json(&body_of(body)?)?;
    let switch = state
        .rollouts
        .set_switch(request.engaged, &operator.name, &request.reason)
        .await?;
    Ok(Json(switch_json(&switch)).into_response())
}

/// The one mapping from rollout errors to HTTP answers.
impl From<RolloutError> for ApiError {
    fn from(error: RolloutError) -> Self {
        use ErrorCode as C;
        use StatusCode as S;
        match error {
            RolloutError::Spec(_) | RolloutError::ReasonRequired(_) => {
                Self::bad_request(error.to_string())
            }
            RolloutError::UnknownRelease(_) => Self::new(
                S::UNPROCESSABLE_ENTITY,
                C::UnknownRelease,
                error.to_string(),
            ),
            RolloutError::Unknown(_) => {
                Self::new(S::NOT_FOUND, C::UnknownRollout, error.to_string())
            }
            RolloutError::Withdrawn(_)
            | RolloutError::Exists(_)
            | RolloutError::Overlap { .. }
            | RolloutError::WrongState { .. }
            | RolloutError::SwitchEngaged { .. } => {
                Self::new(S::CONFLICT, C::Conflict, error.to_string())
            }
            RolloutError::Corrupt { .. } | RolloutError::Store(_) => {
                tracing::warn!(%error, "rollout request failed");
                Self::new(
                    S::INTERNAL_SERVER_ERROR,
                    C::Internal,
                    "internal error; the region logged the cause",
                )
            }
        }
    }
}
