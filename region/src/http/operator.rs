//! The operator REST API (`/api/v1/…`) and the dashboard pages, both behind operator authentication.

use super::login::session_id;
use super::{ApiError, AppState, Peer, body_of, parse_json};
use crate::dashboard;
use crate::fleet::status::{connectivity, overall_health, site_health};
use crate::store::{DesiredChange, Site};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, patch, post};
use axum::{Extension, Json, Router};
use jiff::SignedDuration;
use scs_edge_proto::ErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sites", get(list_sites).post(add_site))
        .route("/api/v1/sites/{name}", get(show_site).delete(remove_site))
        .route("/api/v1/sites/{name}/tokens", post(create_token))
        .route("/api/v1/sites/{name}/desired", patch(change_desired))
        .route("/", get(fleet_page))
        .route("/sites/{name}", get(site_page))
}

/// Who is calling the operator API.
#[derive(Debug, Clone)]
pub(crate) struct OperatorPrincipal {
    /// Display name (`preferred_username`, or `local` for loopback access without OIDC).
    pub(crate) name: String,
}

/// Authenticates an operator request: a bearer token from the identity provider, a dashboard session,
/// or — only when no identity provider is configured — a loopback client. (`/api/v1` writes never
/// reach here with a session cookie: [`super::csrf`] strips it.)
pub(crate) async fn authenticate(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
) -> Result<OperatorPrincipal, ApiError> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let Some(auth) = state.operator_access.provider()? else {
            return Err(ApiError::unauthenticated(
                "this region has no identity provider configured",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| ApiError::unauthenticated("expected `Authorization: Bearer <token>`"))?;
        return match auth.authenticate(token.trim()).await {
            Ok(operator) => Ok(OperatorPrincipal {
                name: operator.username,
            }),
            Err(error) if error.is_forbidden() => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Unauthenticated,
                error.to_string(),
            )),
            Err(error) => {
                tracing::info!(%error, peer = %peer.address, "operator token refused");
                Err(ApiError::unauthenticated(format!(
                    "invalid bearer token: {error}"
                )))
            }
        };
    }
    if let Some(name) = session_user(state, headers) {
        return Ok(OperatorPrincipal { name });
    }
    if !state.operator_access.has_identity_provider() && peer.address.ip().is_loopback() {
        return Ok(OperatorPrincipal {
            name: "local".into(),
        });
    }
    Err(ApiError::unauthenticated(
        "operator authentication required",
    ))
}

fn session_user(state: &AppState, headers: &HeaderMap) -> Option<String> {
    state.sessions.user(session_id(headers)?)
}

/// JSON view of a site: the stored facts plus the derived status operators filter on.
pub(crate) fn site_json(site: &Site, state: &AppState) -> Value {
    let now = state.fleet.now();
    let report = site.last_report.as_ref();
    json!({
        "name": site.name,
        "state": site.state.as_str(),
        "connectivity": connectivity(site, now, state.expected_interval).as_str(),
        "health": site_health(site).as_str(),
        "created_at": site.created_at,
        "joined_at": site.joined_at,
        "last_seen": site.last_seen,
        "last_seq": site.last_seq,
        "versions": report.map(|r| &r.versions),
        "components": report.map(|r| &r.health),
        "capacity": report.map(|r| &r.capacity),
        "resources": report.map(|r| &r.resources),
        "desired": site.desired,
    })
}

async fn list_sites(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticate(&state, &peer, &headers).await?;
    let sites = state.fleet.sites().await?;
    let sites: Vec<Value> = sites.iter().map(|s| site_json(s, &state)).collect();
    Ok(Json(json!({ "sites": sites })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSite {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

async fn add_site(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let operator = authenticate(&state, &peer, &headers).await?;
    let request: NewSite = parse_json(&body_of(body)?)?;
    let site = state.fleet.add_site(&request.name, request.labels).await?;
    tracing::info!(site = %site.name, operator = %operator.name, "site added");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "site": site_json(&site, &state) })),
    )
        .into_response())
}

async fn show_site(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticate(&state, &peer, &headers).await?;
    let detail = state.fleet.site(&name).await?;
    let history: Vec<Value> = detail
        .history
        .iter()
        .map(|entry| {
            json!({
                "seq": entry.report.seq,
                "sent_at": entry.report.sent_at,
                "received_at": entry.received_at,
                "health": overall_health(&entry.report).as_str(),
            })
        })
        .collect();
    let interval = state.expected_interval;
    let outages: Vec<Value> = crate::fleet::status::outages(&detail.history, interval)
        .iter()
        .map(|o| json!({ "from": o.from, "delivered_at": o.delivered_at, "queued_reports": o.queued_reports }))
        .collect();
    let gaps: Vec<Value> = crate::fleet::status::gaps(&detail.history, interval)
        .iter()
        .map(|g| json!({ "after": g.after, "before": g.before }))
        .collect();
    Ok(Json(json!({
        "site": site_json(&detail.site, &state),
        "history": history,
        "outages": outages,
        "gaps": gaps,
    }))
    .into_response())
}

async fn remove_site(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let operator = authenticate(&state, &peer, &headers).await?;
    let site = state.fleet.remove_site(&name).await?;
    tracing::info!(site = %site.name, operator = %operator.name, "site decommissioned");
    Ok(Json(json!({ "site": site_json(&site, &state) })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[serde(default)]
    ttl_secs: Option<i64>,
}

async fn create_token(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let operator = authenticate(&state, &peer, &headers).await?;
    let body = body_of(body)?;
    let request: NewToken = if body.is_empty() {
        NewToken::default()
    } else {
        parse_json(&body)?
    };
    let token = state
        .fleet
        .create_join_token(&name, request.ttl_secs.map(SignedDuration::from_secs))
        .await?;
    tracing::info!(site = %name, operator = %operator.name, expires_at = %token.expires_at, "join token created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "site": token.site,
            "token": token.token,
            "expires_at": token.expires_at,
            "ca_fingerprint": state.fleet.ca().fingerprint(),
        })),
    )
        .into_response())
}

/// A nullable field of a PATCH (`target_os_version`, `maintenance_window`): absent leaves it,
/// `null` clears it, a string sets it.
#[derive(Default)]
enum NullablePatch {
    #[default]
    Keep,
    Clear,
    Set(String),
}

impl<'de> Deserialize<'de> for NullablePatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map_or(Self::Clear, Self::Set))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DesiredPatch {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    target_os_version: NullablePatch,
    #[serde(default)]
    maintenance_window: NullablePatch,
}

impl NullablePatch {
    // The store's three-way change of a nullable field: keep, clear, set.
    #[expect(clippy::option_option, reason = "DesiredChange's keep / clear / set")]
    fn into_change(self) -> Option<Option<String>> {
        match self {
            Self::Keep => None,
            Self::Clear => Some(None),
            Self::Set(value) => Some(Some(value)),
        }
    }
}

async fn change_desired(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let operator = authenticate(&state, &peer, &headers).await?;
    let patch: DesiredPatch = parse_json(&body_of(body)?)?;
    let desired = state
        .fleet
        .change_desired(
            &name,
            &DesiredChange {
                labels: patch.labels,
                target_os_version: patch.target_os_version.into_change(),
                maintenance_window: patch.maintenance_window.into_change(),
            },
        )
        .await?;
    tracing::info!(site = %name, operator = %operator.name, generation = desired.generation, "desired state changed");
    Ok(Json(json!({ "desired": desired })).into_response())
}

/// Dashboard pages: an unauthenticated browser is sent to the login (when an identity provider is
/// configured) instead of getting a JSON error.
pub(super) async fn page_operator(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<OperatorPrincipal, Response> {
    match authenticate(state, peer, headers).await {
        Ok(operator) => Ok(operator),
        Err(error)
            if error.status() == StatusCode::UNAUTHORIZED
                && state.operator_access.has_identity_provider()
                && !headers.contains_key(axum::http::header::AUTHORIZATION) =>
        {
            let next = uri.path_and_query().map_or("/", |p| p.as_str());
            Err(Redirect::to(&format!(
                "/login?next={}",
                super::login::encode_component(next)
            ))
            .into_response())
        }
        Err(error) => Err(error.into_response()),
    }
}

async fn fleet_page(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let operator = match page_operator(&state, &peer, &headers, &uri).await {
        Ok(operator) => operator,
        Err(response) => return response,
    };
    match state.fleet.sites().await {
        Ok(sites) => Html(dashboard::fleet_page(
            &dashboard::PageContext {
                region: &state.region_name,
                operator: &operator.name,
                now: state.fleet.now(),
                interval: state.expected_interval,
            },
            &sites,
        ))
        .into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

async fn site_page(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let operator = match page_operator(&state, &peer, &headers, &uri).await {
        Ok(operator) => operator,
        Err(response) => return response,
    };
    match state.fleet.site(&name).await {
        Ok(detail) => Html(dashboard::site_page(
            &dashboard::PageContext {
                region: &state.region_name,
                operator: &operator.name,
                now: state.fleet.now(),
                interval: state.expected_interval,
            },
            &detail,
        ))
        .into_response(),
        Err(error) => {
            let error = ApiError::from(error);
            let status = error.status();
            (
                status,
                Html(dashboard::error_page(
                    &state.region_name,
                    status.as_u16(),
                    &name,
                )),
            )
                .into_response()
        }
    }
}
