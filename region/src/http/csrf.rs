//! Cross-site request forgery, closed on both kinds of writes.
//!
//! A browser sends an operator's credentials the region did not ask it to: the session cookie,
//! and — on a region without an identity provider, which trusts loopback clients — simply its
//! address on the region host. A page of any other origin open in that browser could otherwise
//! post to the region. Two rules, one per kind of write:
//!
//! - **`/api/v1` writes** (every method but GET and HEAD) are for programs. They must say
//!   `Content-Type: application/json` (a cross-origin page cannot send that without a CORS
//!   preflight, which the region never grants), browsers' `Sec-Fetch-Site: cross-site|same-site`
//!   is refused, and session cookies are stripped (a bearer token or the loopback rule
//!   authenticates them, never the browser's ambient cookie).
//! - **Dashboard forms** (`POST` on pages) must come from the region's own origin (`Origin`, or
//!   `Sec-Fetch-Site: same-origin` where a browser sends no `Origin`) and return the form token
//!   of the operator's session — a synchronizer token a page of another origin cannot read.

use super::login::session_id;
use super::{ApiError, AppState, Peer};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use scs_edge_proto::ErrorCode;
use sha2::{Digest as _, Sha256};

/// The `/api/v1` write rule, as middleware over the whole router (routes added later are covered
/// without remembering to).
pub(super) async fn guard_api_writes(mut request: Request, next: Next) -> Response {
    let write = !matches!(*request.method(), Method::GET | Method::HEAD);
    if write && request.uri().path().starts_with("/api/v1/") {
        if let Err(refusal) = check_api_write(request.method(), request.headers()) {
            return refusal.into_response();
        }
        request.headers_mut().remove(header::COOKIE);
    }
    next.run(request).await
}

fn check_api_write(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(site) = header_text(headers, "sec-fetch-site")
        && matches!(site, "cross-site" | "same-site")
    {
        return Err(forbidden(
            "a browser page of another site cannot write through the operator API",
        ));
    }
    // DELETE, PUT and PATCH are never sent cross-origin without a preflight; POST is, unless its
    // content type is JSON. PUT and PATCH carry JSON bodies anyway: one rule for every body.
    let json = header_text(headers, header::CONTENT_TYPE.as_str()).is_some_and(|value| {
        value
            .split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json && *method != Method::DELETE {
        let mut error =
            ApiError::bad_request("operator API writes take `Content-Type: application/json`");
        error.status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Err(error);
    }
    Ok(())
}

/// Who may post dashboard forms in this request, and the token their forms carry: the session's
/// user, or `local` on a region without an identity provider for a loopback client.
pub(super) fn form_operator(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
) -> Option<(String, String)> {
    if let Some(id) = session_id(headers)
        && let Some(session) = state.sessions.user_and_form_token(id)
    {
        return Some(session);
    }
    if !state.operator_access.has_identity_provider() && peer.address.ip().is_loopback() {
        return Some(("local".to_owned(), state.sessions.local_form_token()?));
    }
    None
}

/// Checks a dashboard form post: from the region's own origin, by an operator, with their form
/// token. `authority` is the request URI's (HTTP/2 sends no `Host`). Returns the operator's name.
pub(super) fn check_form(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    authority: Option<&str>,
    returned_token: &str,
) -> Result<String, ApiError> {
    let host = header_text(headers, header::HOST.as_str()).or(authority);
    let same_origin = match header_text(headers, header::ORIGIN.as_str()) {
        Some(origin) => host.is_some_and(|host| origin == format!("https://{host}")),
        None => header_text(headers, "sec-fetch-site") == Some("same-origin"),
    };
    if !same_origin {
        return Err(forbidden(
            "a dashboard form must be posted from the region's own pages",
        ));
    }
    let (operator, token) = form_operator(state, peer, headers)
        .ok_or_else(|| ApiError::unauthenticated("sign in to the dashboard first"))?;
    // Compared as digests: equal-length values whose comparison time says nothing about the token.
    if Sha256::digest(returned_token.as_bytes()) != Sha256::digest(token.as_bytes()) {
        return Err(forbidden(
            "the form is stale or was not issued by this region; reload the page",
        ));
    }
    Ok(operator)
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Unauthenticated, message)
}
