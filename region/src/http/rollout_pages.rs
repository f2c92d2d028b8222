//! The dashboard's rollout pages and their forms — the dashboard's first writes. Forms pass the
//! origin and form-token checks of [`super::csrf`] before the domain sees them, with the
//! operator's name as the actor; any refusal is a page saying why, and changes nothing.

use super::csrf::{check_form, form_operator};
use super::operator::page_operator;
use super::{ApiError, AppState, Peer, body_of};
use crate::dashboard::{self, PageContext, rollouts as pages};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/rollouts", get(list_page))
        .route("/rollouts/{name}", get(rollout_page))
        // GET: the stop confirmation; POST: pause, resume or stop.
        .route("/rollouts/{name}/{action}", get(stop_page).post(act))
}

fn context<'a>(state: &'a AppState, operator: &'a str) -> PageContext<'a> {
    PageContext {
        region: &state.region_name,
        operator,
        now: state.fleet.now(),
        interval: state.expected_interval,
    }
}

async fn list_page(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let operator = match page_operator(&state, &peer, &headers, &uri).await {
        Ok(operator) => operator,
        Err(response) => return response,
    };
    let shown = async {
        let list = state.rollouts.list().await?;
        let switch = state.rollouts.switch().await?;
        Ok::<_, ApiError>(pages::rollouts_page(
            &context(&state, &operator.name),
            &list,
            &switch,
        ))
    };
    match shown.await {
        Ok(html) => Html(html).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn rollout_page(
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
    let form_token = form_operator(&state, &peer, &headers).map(|(_, token)| token);
    let shown = async {
        let (view, summary) = state.rollouts.progress(&name).await?;
        let switch = state.rollouts.switch().await?;
        Ok::<_, ApiError>(pages::rollout_page(
            &context(&state, &operator.name),
            &view,
            &summary,
            &switch,
            form_token.as_deref(),
        ))
    };
    match shown.await {
        Ok(html) => Html(html).into_response(),
        Err(error) => refused(&state, &error, "/rollouts"),
    }
}

async fn stop_page(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if action != "stop" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let operator = match page_operator(&state, &peer, &headers, &uri).await {
        Ok(operator) => operator,
        Err(response) => return response,
    };
    let Some((_, token)) = form_operator(&state, &peer, &headers) else {
        return refused(
            &state,
            &ApiError::unauthenticated("sign in to the dashboard to stop a rollout"),
            &format!("/rollouts/{name}"),
        );
    };
    match state.rollouts.show(&name).await {
        Ok(view) => Html(pages::stop_page(
            &context(&state, &operator.name),
            &view,
            &token,
        ))
        .into_response(),
        Err(error) => refused(&state, &error.into(), "/rollouts"),
    }
}

/// A posted form: the token, and the reason where the action takes one.
#[derive(Deserialize)]
struct ActionForm {
    form_token: String,
    #[serde(default)]
    reason: String,
}

/// Checks the form, then asks the domain; back to the rollout's page when it was done.
async fn act(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let page = format!("/rollouts/{name}");
    let done = async {
        let body = body_of(body)?;
        let form: ActionForm = serde_urlencoded::from_bytes(&body)
            .map_err(|err| ApiError::bad_request(format!("invalid form: {err}")))?;
        let operator = check_form(
            &state,
            &peer,
            &headers,
            uri.authority().map(axum::http::uri::Authority::as_str),
            &form.form_token,
        )?;
        match action.as_str() {
            "pause" => state.rollouts.pause(&name, &operator, &form.reason).await?,
            "resume" => state.rollouts.resume(&name, &operator, None).await?,
            "stop" => state.rollouts.stop(&name, &operator, &form.reason).await?,
            other => {
                return Err(ApiError::bad_request(format!(
                    "no action {other:?}: pause, resume or stop"
                )));
            }
        };
        Ok::<_, ApiError>(())
    };
    match done.await {
        // 303: the browser follows with a GET, so a reload does not post again.
        Ok(()) => Redirect::to(&page).into_response(),
        Err(error) => refused(&state, &error, &page),
    }
}

fn refused(state: &AppState, error: &ApiError, back: &str) -> Response {
    let status = error.status();
    (
        status,
        Html(dashboard::rollouts::refused_page(
            &state.region_name,
            error.message(),
            back,
        )),
    )
        .into_response()
}
