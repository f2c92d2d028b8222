//! The dashboard's browser login: OIDC authorization code flow with PKCE against the central identity
//! provider, then a server-side session behind an `HttpOnly`, `Secure`, `SameSite=Lax` cookie.
//!
//! The access token the provider returns goes through the same verification as any bearer token on
//! the REST API (issuer, audience, signature, expiry, operator group); the browser never sees it.
//! Sessions live in memory: a region restart logs operators out, which is cheap and safe.

use super::{AppState, Peer};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use base64::Engine as _;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The session cookie's name.
pub(super) const SESSION_COOKIE: &str = "scs_edge_session";
/// How long a dashboard session lasts.
const SESSION_LIFETIME: SignedDuration = SignedDuration::from_hours(8);
/// How long a started login may take to come back.
const LOGIN_LIFETIME: SignedDuration = SignedDuration::from_mins(10);
/// Caps on in-memory state, so unauthenticated clients cannot grow it without bound.
const MAX_PENDING_LOGINS: usize = 10_000;
const MAX_SESSIONS: usize = 10_000;

/// The OIDC client the dashboard logs in with.
#[derive(Debug, Clone, Default)]
pub struct LoginSettings {
    /// Client id.
    pub client_id: String,
    /// Client secret (confidential client).
    pub client_secret: String,
    /// RFC 8707 resource indicator, when the provider picks the audience by it.
    pub resource: String,
    /// `<public_url>/oidc/callback`.
    pub redirect_uri: String,
}

struct PendingLogin {
    verifier: String,
    next: String,
    started: Timestamp,
}

struct Session {
    user: String,
    /// The session's form token: every dashboard form carries it and every form post must
    /// return it (a synchronizer token — a page of another origin cannot read it).
    form_token: String,
    expires: Timestamp,
}

struct SessionTable {
    pending: HashMap<String, PendingLogin>,
    sessions: HashMap<String, Session>,
    /// The form token of loopback operators on a region without an identity provider (they have
    /// no session); drawn at start, so a restart voids open forms, as it voids sessions.
    local_form_token: String,
}

/// The dashboard's sessions and logins in progress.
#[derive(Clone)]
pub struct Sessions(Arc<Mutex<SessionTable>>);

impl Default for Sessions {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(SessionTable {
            pending: HashMap::new(),
            sessions: HashMap::new(),
            local_form_token: random_token(),
        })))
    }
}

impl Sessions {
    /// The user of a live session.
    pub fn user(&self, id: &str) -> Option<String> {
        self.user_and_form_token(id).map(|(user, _)| user)
    }

    /// The user of a live session and its form token.
    pub fn user_and_form_token(&self, id: &str) -> Option<(String, String)> {
        let table = self.0.lock().ok()?;
        let session = table.sessions.get(id)?;
        (session.expires > Timestamp::now())
            .then(|| (session.user.clone(), session.form_token.clone()))
    }

    /// The form token of loopback operators without an identity provider.
    pub fn local_form_token(&self) -> Option<String> {
        Some(self.0.lock().ok()?.local_form_token.clone())
    }

    fn start_login(&self, verifier: String, next: String) -> Option<String> {
        let mut table = self.0.lock().ok()?;
        let now = Timestamp::now();
        table
            .pending
            .retain(|_, p| now.duration_since(p.started) < LOGIN_LIFETIME);
        if table.pending.len() >= MAX_PENDING_LOGINS {
            return None;
        }
        let state = random_token();
        table.pending.insert(
            state.clone(),
            PendingLogin {
                verifier,
                next,
                started: now,
            },
        );
        Some(state)
    }

    fn finish_login(&self, state: &str) -> Option<PendingLogin> {
        let mut table = self.0.lock().ok()?;
        let pending = table.pending.remove(state)?;
        (Timestamp::now().duration_since(pending.started) < LOGIN_LIFETIME).then_some(pending)
    }

    pub(super) fn open(&self, user: String) -> Option<String> {
        let mut table = self.0.lock().ok()?;
        let now = Timestamp::now();
        table.sessions.retain(|_, s| s.expires > now);
        if table.sessions.len() >= MAX_SESSIONS {
            return None;
        }
        let id = random_token();
        table.sessions.insert(
            id.clone(),
            Session {
                user,
                form_token: random_token(),
                expires: now + SESSION_LIFETIME,
            },
        );
        Some(id)
    }

    fn close(&self, id: &str) {
        if let Ok(mut table) = self.0.lock() {
            table.sessions.remove(id);
        }
    }
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Percent-encodes a URL component (RFC 3986 unreserved characters pass).
pub(super) fn encode_component(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login))
        .route("/oidc/callback", get(callback))
        .route("/logout", get(logout))
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Only local paths are allowed as the post-login target (no open redirect).
fn safe_next(next: Option<String>) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or_else(|| "/".into())
}

async fn login(State(state): State<AppState>, Query(query): Query<LoginQuery>) -> Response {
    let auth = match state.operator_access.provider() {
        Ok(Some(auth)) => auth,
        Ok(None) => {
            return (
                axum::http::StatusCode::NOT_FOUND,
                "no identity provider is configured; the dashboard is open to local clients",
            )
                .into_response();
        }
        Err(error) => return error.into_response(),
    };
    let verifier = random_token();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let Some(login_state) = state.sessions.start_login(verifier, safe_next(query.next)) else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many logins in progress",
        )
            .into_response();
    };
    let settings = &state.login;
    let mut url = format!(
        "{}?response_type=code&scope=openid&client_id={}&redirect_uri={}&state={}&code_challenge={}&code_challenge_method=S256",
        auth.authorization_endpoint(),
        encode_component(&settings.client_id),
        encode_component(&settings.redirect_uri),
        login_state,
        challenge,
    );
    if !settings.resource.is_empty() {
        url.push_str("&resource=");
        url.push_str(&encode_component(&settings.resource));
    }
    Redirect::to(&url).into_response()
}

#[derive(Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

async fn callback(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let refuse = |message: &str| {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            Html(crate::dashboard::login_failed_page(
                &state.region_name,
                message,
            )),
        )
            .into_response()
    };
    let Ok(Some(auth)) = state.operator_access.provider() else {
        return refuse("the identity provider is not configured or not reachable");
    };
    if let Some(error) = &query.error {
        return refuse(&format!("the identity provider refused the login: {error}"));
    }
    let (Some(code), Some(login_state)) = (query.code, query.state) else {
        return refuse("the identity provider's answer is incomplete");
    };
    let Some(pending) = state.sessions.finish_login(&login_state) else {
        return refuse("this login expired or was already used; start again");
    };
    let settings = &state.login;
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", settings.redirect_uri.clone()),
        ("code_verifier", pending.verifier),
    ];
    if !settings.resource.is_empty() {
        form.push(("resource", settings.resource.clone()));
    }
    let answer = state
        .http_client
        .post(auth.token_endpoint().clone())
        .basic_auth(&settings.client_id, Some(&settings.client_secret))
        .form(&form)
        .send()
        .await;
    let token = match answer {
        Ok(response) if response.status().is_success() => {
            match response.json::<TokenAnswer>().await {
                Ok(answer) => answer.access_token,
                Err(error) => return refuse(&format!("unreadable token answer: {error}")),
            }
        }
        Ok(response) => {
            return refuse(&format!(
                "the token endpoint answered {}",
                response.status()
            ));
        }
        Err(error) => return refuse(&format!("the identity provider is unreachable: {error}")),
    };
    let operator = match auth.authenticate(&token).await {
        Ok(operator) => operator,
        Err(error) => {
            tracing::info!(%error, peer = %peer.address, "dashboard login refused");
            return refuse(&format!("not allowed: {error}"));
        }
    };
    let Some(session) = state.sessions.open(operator.username.clone()) else {
        return refuse("too many sessions");
    };
    tracing::info!(operator = %operator.username, "dashboard login");
    let cookie = format!(
        "{SESSION_COOKIE}={session}; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    );
    // A page that continues to the dashboard, not a redirect: this response ends a navigation that
    // started on the identity provider's site, and browsers withhold `SameSite=Lax` cookies from the
    // rest of such a cross-site redirect chain. The next navigation starts here, same-site.
    (
        [(axum::http::header::SET_COOKIE, cookie)],
        Html(crate::dashboard::signed_in_page(
            &state.region_name,
            &pending.next,
        )),
    )
        .into_response()
}

/// The session id from the request's cookies. HTTP/2 clients may send each cookie as its own
/// `cookie` header (RFC 9113 §8.2.3), and an identity provider on the same host shares the cookie
/// jar (cookies ignore ports): every header is searched.
pub(super) fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        state.sessions.close(id);
    }
    let cookie = format!("{SESSION_COOKIE}=; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=0");
    (
        [(axum::http::header::SET_COOKIE, cookie)],
        Html(crate::dashboard::logged_out_page(&state.region_name)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_login_targets() {
        assert_eq!(safe_next(Some("/sites/a".into())), "/sites/a");
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil",
            "sites",
        ] {
            assert_eq!(safe_next(Some(bad.into())), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn a_login_state_is_single_use() {
        let sessions = Sessions::default();
        let state = sessions.start_login("v".into(), "/".into()).expect("state");
        assert!(sessions.finish_login(&state).is_some());
        assert!(
            sessions.finish_login(&state).is_none(),
            "replayed state refused"
        );
        assert!(sessions.finish_login("forged").is_none());
    }

    #[test]
    fn sessions_open_and_close() {
        let sessions = Sessions::default();
        let id = sessions.open("alice".into()).expect("session");
        assert_eq!(sessions.user(&id).as_deref(), Some("alice"));
        sessions.close(&id);
        assert_eq!(sessions.user(&id), None);
        assert_eq!(sessions.user("guess"), None);
    }

    #[test]
    fn the_session_cookie_is_found_in_any_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(
            "cookie",
            "_session=idp; _session.sig=x".parse().expect("header"),
        );
        headers.append("cookie", "scs_edge_session=abc".parse().expect("header"));
        assert_eq!(session_id(&headers), Some("abc"));
        let mut one = HeaderMap::new();
        one.append(
            "cookie",
            "a=1; scs_edge_session=def; b=2".parse().expect("header"),
        );
        assert_eq!(session_id(&one), Some("def"));
        assert_eq!(session_id(&HeaderMap::new()), None);
    }

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(
            encode_component("/sites/a b?x=1"),
            "%2Fsites%2Fa%20b%3Fx%3D1"
        );
    }
}
