//! `/v3/users`, a user's projects and the self-service password change. Keystone's user schema
//! allows additional properties (`email`, …); they are accepted and ignored here. Creating a user or
//! changing a password hashes it with argon2, so those run on a blocking thread like everything else.

use super::projects::project_doc;
use super::{
    QueryMap, authorize, collection, collection_at, default_domain, enabled_filter, guard,
    in_domain, keystone_time, required, run, self_link,
};
use crate::api::ApiState;
use crate::api::auth::Authenticated;
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::identity::policy::{IdentityAction, PolicyTarget};
use crate::identity::{NewUser, User, UserFilter, UserUpdate};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A user as Keystone shows it (`default_project_id` and `description` only when set, as Keystone
/// keeps them as optional attributes).
pub(super) fn user_doc(base: &str, user: &User) -> Value {
    let mut doc = json!({
        "id": user.id,
        "name": user.name,
        "domain_id": user.domain_id,
        "enabled": user.enabled,
        "password_expires_at": user.password_expires_at.map(keystone_time),
        "options": user.options,
        "links": self_link(base, &format!("users/{}", user.id)),
    });
    if let Some(project) = &user.default_project_id {
        doc["default_project_id"] = json!(project);
    }
    if !user.description.is_empty() {
        doc["description"] = json!(user.description);
    }
    doc
}

/// The policy target of a user.
pub(super) fn user_target(user: &User) -> PolicyTarget {
    PolicyTarget {
        domain_id: Some(user.domain_id.clone()),
        user_id: Some(user.id.clone()),
        ..PolicyTarget::default()
    }
}

/// `GET /v3/users` (filters `domain_id`, `name`, `enabled`); a domain-scoped caller without a
/// domain filter lists its own domain.
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Authenticated,
    Query(query): Query<QueryMap>,
) -> Result<Json<Value>, ApiError> {
    let domain_id = query
        .get("domain_id")
        .cloned()
        .or_else(|| caller.0.domain_id().map(str::to_owned));
    authorize(
        &caller.0,
        "list_users",
        IdentityAction::ListInDomain,
        &PolicyTarget {
            domain_id: domain_id.clone(),
            ..PolicyTarget::default()
        },
    )?;
    let filter = UserFilter {
        domain_id,
        name: query.get("name").cloned(),
    };
    let enabled = enabled_filter(&query);
    let users = run(&state, move |identity| {
        identity.list_users(&filter).map_err(ApiError::domain)
    })
    .await?;
    let base = &state.public_base;
    let docs = users
        .iter()
        .filter(|u| enabled.is_none_or(|e| u.enabled == e))
        .map(|u| user_doc(base, u))
        .collect();
    Ok(Json(collection(base, "users", docs)))
}

/// `GET /v3/users/{id}`: readers of the domain, and the user themself.
pub(super) async fn show(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = run(&state, move |identity| {
        guard(
            &caller.0,
            "get_user",
            IdentityAction::GetInDomain,
            identity.user(&id),
            user_target,
        )
    })
    .await?;
    Ok(Json(json!({ "user": user_doc(&state.public_base, &user) })))
}

/// `null` → `Some(None)`, absent → `None` (with `#[serde(default)]`): Keystone clears the default
/// project on `null` and keeps it when the field is absent, which is what `UserUpdate` takes.
#[allow(clippy::option_option)]
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
pub(super) struct UserBody {
    user: UserFields,
}

#[derive(Deserialize)]
#[allow(clippy::option_option)] // absent keeps, null clears: see `present`
struct UserFields {
    name: Option<String>,
    domain_id: Option<String>,
    password: Option<String>,
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    default_project_id: Option<Option<String>>,
    description: Option<String>,
    options: Option<BTreeMap<String, Value>>,
}

/// `POST /v3/users`: 201.
pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Authenticated,
    JsonBody(body): JsonBody<UserBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let fields = body.user;
    let name = fields.name.ok_or_else(|| required("user.name"))?;
    let domain_id = fields
        .domain_id
        .unwrap_or_else(|| default_domain(&caller.0));
    authorize(
        &caller.0,
        "create_user",
        IdentityAction::ManageInDomain,
        &in_domain(&domain_id),
    )?;
    let new = NewUser {
        name,
        domain_id,
        password: fields.password,
        enabled: fields.enabled.unwrap_or(true),
        default_project_id: fields.default_project_id.flatten(),
        description: fields.description.unwrap_or_default(),
        options: fields.options.unwrap_or_default(),
    };
    let user = run(&state, move |identity| {
        identity.create_user(new).map_err(ApiError::domain)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": user_doc(&state.public_base, &user) })),
    ))
}

/// `PATCH /v3/users/{id}`: a new password or disabling revokes the user's tokens.
pub(super) async fn update(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UserBody>,
) -> Result<Json<Value>, ApiError> {
    let fields = body.user;
    let user = run(&state, move |identity| {
        let user = guard(
            &caller.0,
            "update_user",
            IdentityAction::ManageInDomain,
            identity.user(&id),
            user_target,
        )?;
        if fields
            .domain_id
            .as_ref()
            .is_some_and(|d| *d != user.domain_id)
        {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute user.domain_id: Cannot change Domain ID",
            ));
        }
        let update = UserUpdate {
            name: fields.name,
            password: fields.password,
            enabled: fields.enabled,
            default_project_id: fields.default_project_id,
            description: fields.description,
            options: fields.options,
        };
        identity.update_user(&id, update).map_err(ApiError::domain)
    })
    .await?;
    Ok(Json(json!({ "user": user_doc(&state.public_base, &user) })))
}

/// `DELETE /v3/users/{id}`: 204.
pub(super) async fn delete(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    run(&state, move |identity| {
        guard(
            &caller.0,
            "delete_user",
            IdentityAction::ManageInDomain,
            identity.user(&id),
            user_target,
        )?;
        identity.delete_user(&id).map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordBody {
    user: PasswordChange,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    password: String,
    original_password: String,
}

/// `POST /v3/users/{id}/password`: 204. Like Keystone, no token is needed (a user whose password
/// expired must still be able to change it): the original password is the proof. A wrong one is
/// 401, and costs an argon2 verification either way.
pub(super) async fn change_password(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PasswordBody>,
) -> Result<StatusCode, ApiError> {
    let change = body.user;
    run(&state, move |identity| {
        identity
            .change_password(&id, &change.original_password, &change.password)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v3/users/{id}/projects`: projects the user has a role on.
pub(super) async fn projects(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let path = format!("users/{id}/projects");
    let projects = run(&state, move |identity| {
        guard(
            &caller.0,
            "list_user_projects",
            IdentityAction::GetInDomain,
            identity.user(&id),
            user_target,
        )?;
        identity.user_projects(&id).map_err(ApiError::domain)
    })
    .await?;
    let base = &state.public_base;
    let docs = projects.iter().map(|p| project_doc(base, p)).collect();
    Ok(Json(collection_at(base, "projects", &path, docs)))
}
