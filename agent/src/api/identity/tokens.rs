//! `/v3/auth/*`: issue, validate and revoke tokens, and what a token may see (its catalog, the
//! projects, domains and system it could be scoped to).
//!
//! Issuing always runs on a blocking thread: a password or secret check is an argon2 verification
//! costing hundreds of milliseconds at production settings.

use super::catalog::{auth_catalog_url, token_catalog};
use super::domains::domain_doc;
use super::projects::project_doc;
use super::{QueryMap, keystone_time, refused, run, url};
use crate::api::ApiState;
use crate::api::auth::Authenticated;
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::identity::{
    AppCredRef, AssignmentFilter, AuthIdentity, AuthRequest, DomainRef, ProjectRef, Scope,
    ScopeRequest, Target, TokenInfo, UserRef,
};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The header carrying the token issued, or the token to validate or revoke.
const SUBJECT_TOKEN: &str = "x-subject-token";

/// `{"auth": …}`.
#[derive(Debug, Deserialize)]
pub(super) struct AuthBody {
    auth: Auth,
}

#[derive(Debug, Deserialize)]
struct Auth {
    identity: Identity,
    /// An object, or the string `unscoped`: parsed by hand so errors still name the field.
    #[serde(default)]
    scope: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Identity {
    methods: Vec<String>,
    password: Option<PasswordMethod>,
    token: Option<TokenMethod>,
    application_credential: Option<AppCredMethod>,
}

#[derive(Debug, Deserialize)]
struct PasswordMethod {
    user: PasswordUser,
}

#[derive(Deserialize)]
struct PasswordUser {
    id: Option<String>,
    name: Option<String>,
    domain: Option<NamedRef>,
    password: String,
}

impl std::fmt::Debug for PasswordUser {
    // The password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordUser")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenMethod {
    id: String,
}

impl std::fmt::Debug for TokenMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenMethod")
    }
}

#[derive(Deserialize)]
struct AppCredMethod {
    id: Option<String>,
    name: Option<String>,
    user: Option<AppCredUser>,
    secret: String,
}

impl std::fmt::Debug for AppCredMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredMethod")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct AppCredUser {
    id: Option<String>,
    name: Option<String>,
    domain: Option<NamedRef>,
}

/// `{"id": …}` or `{"name": …}` (domains).
#[derive(Debug, Deserialize)]
struct NamedRef {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ScopeBody {
    project: Option<ProjectScope>,
    domain: Option<NamedRef>,
    system: Option<SystemScope>,
}

#[derive(Debug, Deserialize)]
struct ProjectScope {
    id: Option<String>,
    name: Option<String>,
    domain: Option<NamedRef>,
}

#[derive(Debug, Deserialize)]
struct SystemScope {
    all: bool,
}

/// Parses a nested JSON value, naming offending fields under `prefix`.
fn parse_at<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." {
            prefix.to_owned()
        } else {
            format!("{prefix}.{path}")
        };
        ApiError::bad_request(format!(
            "Invalid input for field/attribute {field}: {}",
            err.into_inner()
        ))
    })
}

fn domain_ref(domain: NamedRef, field: &str) -> Result<DomainRef, ApiError> {
    match (domain.id, domain.name) {
        (Some(id), _) => Ok(DomainRef::Id(id)),
        (None, Some(name)) => Ok(DomainRef::Name(name)),
        (None, None) => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {field}: either id or name is required"
        ))),
    }
}

fn user_ref(
    id: Option<String>,
    name: Option<String>,
    domain: Option<NamedRef>,
    field: &str,
) -> Result<UserRef, ApiError> {
    match (id, name) {
        (Some(id), _) => Ok(UserRef::Id(id)),
        (None, Some(name)) => {
            let domain = domain.ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Invalid input for field/attribute {field}.domain: a user named without id needs its domain"
                ))
            })?;
            Ok(UserRef::Name {
                name,
                domain: domain_ref(domain, &format!("{field}.domain"))?,
            })
        }
        (None, None) => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {field}: either id or name is required"
        ))),
    }
}

fn scope_request(scope: Option<Value>) -> Result<ScopeRequest, ApiError> {
    let Some(scope) = scope else {
        return Ok(ScopeRequest::Default);
    };
    if scope.as_str() == Some("unscoped") {
        return Ok(ScopeRequest::Unscoped);
    }
    let body: ScopeBody = parse_at(scope, "auth.scope")?;
    match (body.project, body.domain, body.system) {
        (Some(project), None, None) => Ok(ScopeRequest::Project(match (project.id, project.name) {
            (Some(id), _) => ProjectRef::Id(id),
            (None, Some(name)) => ProjectRef::Name {
                name,
                domain: domain_ref(
                    project.domain.ok_or_else(|| {
                        ApiError::bad_request(
                            "Invalid input for field/attribute auth.scope.project.domain: a project named without id needs its domain",
                        )
                    })?,
                    "auth.scope.project.domain",
                )?,
            },
            (None, None) => {
                return Err(ApiError::bad_request(
                    "Invalid input for field/attribute auth.scope.project: either id or name is required",
                ));
            }
        })),
        (None, Some(domain), None) => Ok(ScopeRequest::Domain(domain_ref(
            domain,
            "auth.scope.domain",
        )?)),
        (None, None, Some(system)) if system.all => Ok(ScopeRequest::System),
        (None, None, Some(_)) => Err(ApiError::bad_request(
            "Invalid input for field/attribute auth.scope.system: only {\"all\": true} exists",
        )),
        _ => Err(ApiError::bad_request(
            "Invalid input for field/attribute auth.scope: exactly one of project, domain and system is required",
        )),
    }
}

/// The domain request from Keystone's JSON; 400 for shape errors, 401 for methods we do not offer.
fn auth_request(body: AuthBody) -> Result<AuthRequest, ApiError> {
    let identity = body.auth.identity;
    let scope = scope_request(body.auth.scope)?;
    if identity.methods.is_empty() {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute auth.identity.methods: at least one method is required",
        ));
    }
    let missing = |method: &str| {
        ApiError::bad_request(format!(
            "Invalid input for field/attribute auth.identity.{method}: the method is listed but its object is missing"
        ))
    };
    let has = |method: &str| identity.methods.iter().any(|m| m == method);
    if let Some(unknown) = identity
        .methods
        .iter()
        .find(|m| !["password", "token", "application_credential"].contains(&m.as_str()))
    {
        tracing::debug!(method = %unknown, "unsupported authentication method");
        return Err(ApiError::unauthorized());
    }
    let auth_identity = if has("application_credential") {
        let cred = identity
            .application_credential
            .ok_or_else(|| missing("application_credential"))?;
        let credential = match (cred.id, cred.name) {
            (Some(id), _) => AppCredRef::Id(id),
            (None, Some(name)) => {
                let user = cred.user.ok_or_else(|| {
                    ApiError::bad_request(
                        "Invalid input for field/attribute auth.identity.application_credential.user: a credential named without id needs its user",
                    )
                })?;
                AppCredRef::Name {
                    name,
                    user: user_ref(
                        user.id,
                        user.name,
                        user.domain,
                        "auth.identity.application_credential.user",
                    )?,
                }
            }
            (None, None) => {
                return Err(ApiError::bad_request(
                    "Invalid input for field/attribute auth.identity.application_credential: either id or name is required",
                ));
            }
        };
        AuthIdentity::ApplicationCredential {
            credential,
            secret: cred.secret,
        }
    } else if has("password") {
        let user = identity.password.ok_or_else(|| missing("password"))?.user;
        AuthIdentity::Password {
            user: user_ref(
                user.id,
                user.name,
                user.domain,
                "auth.identity.password.user",
            )?,
            password: user.password,
        }
    } else {
        AuthIdentity::Token {
            token: identity.token.ok_or_else(|| missing("token"))?.id,
        }
    };
    Ok(AuthRequest {
        identity: auth_identity,
        scope,
    })
}

/// The `token` document Keystone answers for issue and validation.
pub(super) fn token_doc(base: &str, region: &str, info: &TokenInfo, with_catalog: bool) -> Value {
    let mut token = json!({
        "methods": info.methods,
        "user": {
            "id": info.user.id,
            "name": info.user.name,
            "domain": { "id": info.user.domain_id, "name": info.user.domain_name },
            "password_expires_at": info.user.password_expires_at.map(keystone_time),
        },
        "audit_ids": info.audit_ids,
        "expires_at": keystone_time(info.expires_at),
        "issued_at": keystone_time(info.issued_at),
    });
    let scoped = match &info.scope {
        Scope::Project {
            id,
            name,
            domain_id,
            domain_name,
        } => {
            token["project"] = json!({
                "id": id,
                "name": name,
                "domain": { "id": domain_id, "name": domain_name },
            });
            token["is_domain"] = json!(false);
            true
        }
        Scope::Domain { id, name } => {
            token["domain"] = json!({ "id": id, "name": name });
            true
        }
        Scope::System => {
            token["system"] = json!({ "all": true });
            true
        }
        Scope::Unscoped => false,
    };
    if scoped {
        token["roles"] = json!(
            info.roles
                .iter()
                .map(|r| json!({ "id": r.id, "name": r.name }))
                .collect::<Vec<_>>()
        );
        if with_catalog {
            token["catalog"] = token_catalog(base, region);
        }
    }
    if let Some(cred) = &info.application_credential {
        token["application_credential"] = json!({
            "id": cred.id,
            "name": cred.name,
            "restricted": cred.restricted,
        });
    }
    json!({ "token": token })
}

fn wants_catalog(query: &QueryMap) -> bool {
    !query.contains_key("nocatalog")
}

/// `POST /v3/auth/tokens`: 201 with `X-Subject-Token`.
pub(super) async fn issue(
    State(state): State<ApiState>,
    Query(query): Query<QueryMap>,
    JsonBody(body): JsonBody<AuthBody>,
) -> Result<Response, ApiError> {
    let request = auth_request(body)?;
    let issued = run(&state, move |identity| {
        identity.authenticate(request).map_err(ApiError::domain)
    })
    .await?;
    let region = state.identity.settings().region_id.clone();
    let doc = token_doc(
        &state.public_base,
        &region,
        &issued.info,
        wants_catalog(&query),
    );
    let mut response = (StatusCode::CREATED, Json(doc)).into_response();
    let header = HeaderValue::from_str(&issued.token).map_err(|_| ApiError::internal())?;
    response.headers_mut().insert(SUBJECT_TOKEN, header);
    Ok(response)
}

/// The subject token's facts, if the caller may validate it (or, `revoking`, revoke it).
async fn subject(
    state: &ApiState,
    caller: &Authenticated,
    headers: &HeaderMap,
    revoking: bool,
) -> Result<(String, TokenInfo), ApiError> {
    let token = headers
        .get(SUBJECT_TOKEN)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::not_found("The token could not be found."))?
        .to_owned();
    let lookup = token.clone();
    let info = run(state, move |identity| {
        identity.validate(&lookup).map_err(ApiError::domain)
    })
    .await?;
    let caller = &caller.0;
    let own = info.user.id == caller.user_id();
    // Keystone: `token_subject` or admin; validating is also open to system readers.
    let allowed = own || caller.is_admin() || (!revoking && caller.is_system_reader());
    if !allowed {
        return Err(refused(if revoking {
            "revoke_token"
        } else {
            "validate_token"
        }));
    }
    Ok((token, info))
}

/// `GET /v3/auth/tokens` (and `HEAD`): the subject token, 404 when not valid.
pub(super) async fn validate(
    State(state): State<ApiState>,
    caller: Authenticated,
    headers: HeaderMap,
    Query(query): Query<QueryMap>,
) -> Result<Response, ApiError> {
    let (token, info) = subject(&state, &caller, &headers, false).await?;
    let region = state.identity.settings().region_id.clone();
    let doc = token_doc(&state.public_base, &region, &info, wants_catalog(&query));
    let mut response = Json(doc).into_response();
    let header = HeaderValue::from_str(&token).map_err(|_| ApiError::internal())?;
    response.headers_mut().insert(SUBJECT_TOKEN, header);
    Ok(response)
}

/// `DELETE /v3/auth/tokens`: revokes the subject token (own, or any for an admin).
pub(super) async fn revoke(
    State(state): State<ApiState>,
    caller: Authenticated,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (token, _) = subject(&state, &caller, &headers, true).await?;
    run(&state, move |identity| {
        identity.revoke(&token).map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v3/auth/catalog`: the caller's catalog; needs a scoped token.
pub(super) async fn catalog(
    State(state): State<ApiState>,
    caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    if caller.0.token().scope == Scope::Unscoped {
        return Err(ApiError::forbidden(
            "A scoped token is required to read the catalog.",
        ));
    }
    let base = &state.public_base;
    let region = state.identity.settings().region_id.clone();
    Ok(Json(json!({
        "catalog": token_catalog(base, &region),
        "links": { "self": auth_catalog_url(base), "previous": null, "next": null },
    })))
}

/// `GET /v3/auth/projects`: enabled projects the caller has a role on (directly or via a group).
pub(super) async fn projects(
    State(state): State<ApiState>,
    caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let user = caller.0.user_id().to_owned();
    let projects = run(&state, move |identity| {
        identity.user_projects(&user).map_err(ApiError::domain)
    })
    .await?;
    let base = &state.public_base;
    let docs = projects
        .iter()
        .filter(|p| p.enabled)
        .map(|p| project_doc(base, p))
        .collect();
    Ok(Json(auth_collection(base, "projects", docs)))
}

/// Targets the caller has any role on, directly or via a group.
async fn assigned_targets(
    state: &ApiState,
    caller: &Authenticated,
) -> Result<Vec<Target>, ApiError> {
    let filter = AssignmentFilter {
        user_id: Some(caller.0.user_id().to_owned()),
        effective: true,
        ..AssignmentFilter::default()
    };
    let rows = run(state, move |identity| {
        identity.list_assignments(&filter).map_err(ApiError::domain)
    })
    .await?;
    let mut targets: Vec<Target> = rows.into_iter().map(|r| r.target).collect();
    targets.sort();
    targets.dedup();
    Ok(targets)
}

/// `GET /v3/auth/domains`: enabled domains the caller has a role on.
pub(super) async fn domains(
    State(state): State<ApiState>,
    caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let ids: Vec<String> = assigned_targets(&state, &caller)
        .await?
        .into_iter()
        .filter_map(|t| match t {
            Target::Domain(id) => Some(id),
            _ => None,
        })
        .collect();
    let domains = run(&state, move |identity| {
        let mut out = Vec::new();
        for id in ids {
            match identity.domain(&id) {
                Ok(d) if d.enabled => out.push(d),
                Ok(_) | Err(crate::identity::IdentityError::NotFound { .. }) => {}
                Err(err) => return Err(ApiError::domain(err)),
            }
        }
        Ok(out)
    })
    .await?;
    let base = &state.public_base;
    let docs = domains.iter().map(|d| domain_doc(base, d)).collect();
    Ok(Json(auth_collection(base, "domains", docs)))
}

/// `GET /v3/auth/system`: `[{"all": true}]` when the caller has a role on the system.
pub(super) async fn system(
    State(state): State<ApiState>,
    caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let on_system = assigned_targets(&state, &caller)
        .await?
        .contains(&Target::System);
    let system = if on_system {
        vec![json!({ "all": true })]
    } else {
        Vec::new()
    };
    let base = &state.public_base;
    Ok(Json(json!({
        "system": system,
        "links": { "self": url(base, "auth/system"), "previous": null, "next": null },
    })))
}

fn auth_collection(base: &str, name: &str, items: Vec<Value>) -> Value {
    json!({
        name: Value::Array(items),
        "links": { "self": url(base, &format!("auth/{name}")), "previous": null, "next": null },
    })
}
