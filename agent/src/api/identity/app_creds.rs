//! `/v3/users/{id}/application_credentials`: a user's own credentials for automation.
//!
//! Creation is for oneself only, even for an admin (Keystone's `user_id:%(user_id)s`): the new
//! credential takes its project and roles from the caller's token. Keystone's create schema rejects
//! unknown properties, and so does this one. The secret is in the create answer and nowhere else.

use super::{authorize, collection, keystone_time, refused, required, run, self_link};
use crate::api::ApiState;
use crate::api::auth::Authenticated;
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::identity::policy::{IdentityAction, PolicyTarget};
use crate::identity::{ApplicationCredential, NewApplicationCredential};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A credential as Keystone shows it (without secret).
fn credential_doc(base: &str, cred: &ApplicationCredential) -> Value {
    let roles: Vec<Value> = cred
        .roles
        .iter()
        .map(|r| json!({ "id": r.id, "name": r.name, "domain_id": null }))
        .collect();
    json!({
        "id": cred.id,
        "name": cred.name,
        "description": cred.description,
        "user_id": cred.user_id,
        "project_id": cred.project_id,
        "expires_at": cred.expires_at.map(keystone_time),
        "unrestricted": cred.unrestricted,
        "roles": roles,
        "access_rules": [],
        "system": null,
        "links": self_link(base, &format!("users/{}/application_credentials/{}", cred.user_id, cred.id)),
    })
}

fn owner(caller: &Authenticated, rule: &str, user: &str) -> Result<(), ApiError> {
    authorize(
        &caller.0,
        rule,
        IdentityAction::OwnApplicationCredentials,
        &PolicyTarget {
            user_id: Some(user.to_owned()),
            ..PolicyTarget::default()
        },
    )
}

/// `GET /v3/users/{id}/application_credentials` (filter `name`).
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(user): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    owner(&caller, "list_application_credentials", &user)?;
    let name = query.get("name").cloned();
    let creds = run(&state, move |identity| {
        identity
            .list_application_credentials(&user)
            .map_err(ApiError::domain)
    })
    .await?;
    let base = &state.public_base;
    let docs = creds
        .iter()
        .filter(|c| name.as_ref().is_none_or(|n| *n == c.name))
        .map(|c| credential_doc(base, c))
        .collect();
    Ok(Json(collection(base, "application_credentials", docs)))
}

/// `GET /v3/users/{id}/application_credentials/{cred}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path((user, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    owner(&caller, "get_application_credential", &user)?;
    let cred = run(&state, move |identity| {
        identity
            .application_credential(&user, &id)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(Json(
        json!({ "application_credential": credential_doc(&state.public_base, &cred) }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CredentialBody {
    application_credential: CredentialFields,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialFields {
    name: Option<String>,
    description: Option<String>,
    secret: Option<String>,
    expires_at: Option<String>,
    roles: Option<Vec<RoleSel>>,
    unrestricted: Option<bool>,
    access_rules: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleSel {
    id: Option<String>,
    name: Option<String>,
}

/// Keystone accepts ISO 8601 with or without an offset; without one it means UTC.
fn parse_expiry(text: &str) -> Result<jiff::Timestamp, ApiError> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    text.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid input for field/attribute application_credential.expires_at: '{text}' is not a date-time"
            ))
        })
}

/// `POST /v3/users/{id}/application_credentials`: 201 with the secret, shown this once.
pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(user): Path<String>,
    JsonBody(body): JsonBody<CredentialBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if user != caller.0.user_id() {
        return Err(refused("create_application_credential"));
    }
    let fields = body.application_credential;
    let name = fields
        .name
        .ok_or_else(|| required("application_credential.name"))?;
    if fields.access_rules.is_some_and(|rules| !rules.is_empty()) {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute application_credential.access_rules: access rules are not supported",
        ));
    }
    let roles = match fields.roles {
        None => None,
        Some(roles) => Some(
            roles
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    r.id.or(r.name).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "Invalid input for field/attribute application_credential.roles[{i}]: either id or name is required"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let new = NewApplicationCredential {
        name,
        description: fields.description.unwrap_or_default(),
        secret: fields.secret,
        roles,
        expires_at: fields.expires_at.as_deref().map(parse_expiry).transpose()?,
        unrestricted: fields.unrestricted.unwrap_or(false),
    };
    let token = caller.0.token().clone();
    let created = run(&state, move |identity| {
        identity
            .create_application_credential(&token, new)
            .map_err(ApiError::domain)
    })
    .await?;
    let mut doc = credential_doc(&state.public_base, &created.credential);
    doc["secret"] = json!(created.secret);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "application_credential": doc })),
    ))
}

/// `DELETE /v3/users/{id}/application_credentials/{cred}`: 204; its tokens stop validating.
pub(super) async fn delete(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path((user, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    owner(&caller, "delete_application_credential", &user)?;
    run(&state, move |identity| {
        identity
            .delete_application_credential(&user, &id)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
