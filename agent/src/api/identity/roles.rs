//! `/v3/roles`, implied roles and `/v3/role_inferences`. Roles are global: a request for a
//! domain-specific role (`domain_id` set) is refused.

use super::{QueryMap, authorize, collection, required, run, self_link, url};
use crate::api::ApiState;
use crate::api::auth::Authenticated;
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::identity::policy::{IdentityAction, PolicyTarget};
use crate::identity::{IdentityError, ImpliedRole, NewRole, Role, RoleRef};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A role as Keystone shows it.
pub(super) fn role_doc(base: &str, role: &Role) -> Value {
    json!({
        "id": role.id,
        "name": role.name,
        "domain_id": null,
        "description": role.description,
        "options": {},
        "links": self_link(base, &format!("roles/{}", role.id)),
    })
}

/// A role reference inside an inference document.
fn role_ref_doc(base: &str, role: &RoleRef) -> Value {
    json!({
        "id": role.id,
        "name": role.name,
        "links": self_link(base, &format!("roles/{}", role.id)),
    })
}

fn read(caller: &Authenticated, rule: &str) -> Result<(), ApiError> {
    authorize(
        &caller.0,
        rule,
        IdentityAction::ReadRoles,
        &PolicyTarget::default(),
    )
}

fn manage(caller: &Authenticated, rule: &str) -> Result<(), ApiError> {
    authorize(
        &caller.0,
        rule,
        IdentityAction::ManageRoles,
        &PolicyTarget::default(),
    )
}

/// `GET /v3/roles` (filter `name`).
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Authenticated,
    Query(query): Query<QueryMap>,
) -> Result<Json<Value>, ApiError> {
    read(&caller, "list_roles")?;
    if query.contains_key("domain_id") {
        // No domain-specific roles exist.
        return Ok(Json(collection(&state.public_base, "roles", Vec::new())));
    }
    let name = query.get("name").cloned();
    let roles = run(&state, move |identity| {
        identity
            .list_roles(name.as_deref())
            .map_err(ApiError::domain)
    })
    .await?;
    let base = &state.public_base;
    let docs = roles.iter().map(|r| role_doc(base, r)).collect();
    Ok(Json(collection(base, "roles", docs)))
}

/// `GET /v3/roles/{id}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    read(&caller, "get_role")?;
    let role = run(&state, move |identity| {
        identity.role(&id).map_err(ApiError::domain)
    })
    .await?;
    Ok(Json(json!({ "role": role_doc(&state.public_base, &role) })))
}

#[derive(Debug, Deserialize)]
pub(super) struct RoleBody {
    role: RoleFields,
}

#[derive(Debug, Deserialize)]
struct RoleFields {
    name: Option<String>,
    description: Option<String>,
    domain_id: Option<String>,
}

/// `POST /v3/roles`: 201.
pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Authenticated,
    JsonBody(body): JsonBody<RoleBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    manage(&caller, "create_role")?;
    let fields = body.role;
    let name = fields.name.ok_or_else(|| required("role.name"))?;
    if fields.domain_id.is_some() {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute role.domain_id: domain-specific roles are not supported",
        ));
    }
    let new = NewRole {
        name,
        description: fields.description.unwrap_or_default(),
    };
    let role = run(&state, move |identity| {
        identity.create_role(new).map_err(ApiError::domain)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "role": role_doc(&state.public_base, &role) })),
    ))
}

/// `DELETE /v3/roles/{id}`: 204, with its assignments and implications.
pub(super) async fn delete(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    manage(&caller, "delete_role")?;
    run(&state, move |identity| {
        identity.delete_role(&id).map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn inference_doc(base: &str, implied: &ImpliedRole) -> Value {
    json!({
        "role_inference": {
            "prior_role": role_ref_doc(base, &implied.prior),
            "implies": role_ref_doc(base, &implied.implied),
        },
        "links": self_link(base, &format!("roles/{}/implies/{}", implied.prior.id, implied.implied.id)),
    })
}

/// `GET /v3/roles/{id}/implies`: the roles one role directly implies.
pub(super) async fn implied_of(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    read(&caller, "list_implied_roles")?;
    let lookup = id.clone();
    let (prior, implied) = run(&state, move |identity| {
        let prior = identity.role(&lookup).map_err(ApiError::domain)?;
        let implied = identity
            .implied_roles(Some(&lookup))
            .map_err(ApiError::domain)?;
        Ok((prior, implied))
    })
    .await?;
    let base = &state.public_base;
    let prior = RoleRef {
        id: prior.id,
        name: prior.name,
    };
    let implies: Vec<Value> = implied
        .iter()
        .map(|i| role_ref_doc(base, &i.implied))
        .collect();
    Ok(Json(json!({
        "role_inference": { "prior_role": role_ref_doc(base, &prior), "implies": implies },
        "links": self_link(base, &format!("roles/{id}/implies")),
    })))
}

/// `PUT /v3/roles/{prior}/implies/{implied}`: 201.
pub(super) async fn imply(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path((prior, implied)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    manage(&caller, "create_implied_role")?;
    let created = run(&state, move |identity| {
        identity
            .create_implied_role(&prior, &implied)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(inference_doc(&state.public_base, &created)),
    ))
}

/// The implication, or NotFound.
async fn find_implication(
    state: &ApiState,
    prior: String,
    implied: String,
) -> Result<ImpliedRole, ApiError> {
    run(state, move |identity| {
        identity
            .implied_roles(Some(&prior))
            .map_err(ApiError::domain)?
            .into_iter()
            .find(|i| i.implied.id == implied)
            .ok_or_else(|| {
                ApiError::domain(IdentityError::NotFound {
                    what: "implied role",
                    id: format!("{prior} implies {implied}"),
                })
            })
    })
    .await
}

/// `GET /v3/roles/{prior}/implies/{implied}`.
pub(super) async fn implication(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path((prior, implied)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    read(&caller, "get_implied_role")?;
    let found = find_implication(&state, prior, implied).await?;
    Ok(Json(inference_doc(&state.public_base, &found)))
}

/// `HEAD /v3/roles/{prior}/implies/{implied}`: 204 or 404.
pub(super) async fn check_implication(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path((prior, implied)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    read(&caller, "check_implied_role")?;
    find_implication(&state, prior, implied).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v3/roles/{prior}/implies/{implied}`: 204.
pub(super) async fn unimply(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path((prior, implied)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    manage(&caller, "delete_implied_role")?;
    run(&state, move |identity| {
        identity
            .delete_implied_role(&prior, &implied)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v3/role_inferences`: every direct implication, grouped by prior role.
pub(super) async fn inferences(
    State(state): State<ApiState>,
    caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    read(&caller, "list_role_inference_rules")?;
    let all = run(&state, move |identity| {
        identity.implied_roles(None).map_err(ApiError::domain)
    })
    .await?;
    let base = &state.public_base;
    let mut by_prior: BTreeMap<RoleRef, Vec<Value>> = BTreeMap::new();
    for inference in &all {
        by_prior
            .entry(inference.prior.clone())
            .or_default()
            .push(role_ref_doc(base, &inference.implied));
    }
    let docs: Vec<Value> = by_prior
        .into_iter()
        .map(|(prior, implies)| json!({ "prior_role": role_ref_doc(base, &prior), "implies": implies }))
        .collect();
    Ok(Json(json!({
        "role_inferences": docs,
        "links": { "self": url(base, "role_inferences"), "previous": null, "next": null },
    })))
}
