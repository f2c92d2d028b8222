//! `/v3/groups`, membership, and a user's groups. Changing a membership needs the manager role on
//! the group's domain and on the user's (Keystone checks both), so a domain manager cannot pull a
//! user of another domain into a group or out of one.

use super::users::{user_doc, user_target};
use super::{
    QueryMap, authorize, collection, collection_at, default_domain, guard, in_domain, required,
    run, self_link,
};
use crate::api::ApiState;
use crate::api::auth::Authenticated;
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::identity::policy::{Caller, IdentityAction, PolicyTarget};
use crate::identity::{Group, GroupUpdate, IdentityService, NewGroup, UserFilter};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// A group as Keystone shows it.
fn group_doc(base: &str, group: &Group) -> Value {
    json!({
        "id": group.id,
        "name": group.name,
        "domain_id": group.domain_id,
        "description": group.description,
        "links": self_link(base, &format!("groups/{}", group.id)),
    })
}

fn group_target(group: &Group) -> PolicyTarget {
    in_domain(&group.domain_id)
}

/// `GET /v3/groups` (filters `domain_id`, `name`).
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
        "list_groups",
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
    let groups = run(&state, move |identity| {
        identity.list_groups(&filter).map_err(ApiError::domain)
    })
    .await?;
    let base = &state.public_base;
    let docs = groups.iter().map(|g| group_doc(base, g)).collect();
    Ok(Json(collection(base, "groups", docs)))
}

/// `GET /v3/groups/{id}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let group = run(&state, move |identity| {
        guard(
            &caller.0,
            "get_group",
            IdentityAction::GetInDomain,
            identity.group(&id),
            group_target,
        )
    })
    .await?;
    Ok(Json(
        json!({ "group": group_doc(&state.public_base, &group) }),
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct GroupBody {
    group: GroupFields,
}

#[derive(Debug, Deserialize)]
struct GroupFields {
    name: Option<String>,
    domain_id: Option<String>,
    description: Option<String>,
}

/// `POST /v3/groups`: 201.
pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Authenticated,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let fields = body.group;
    let name = fields.name.ok_or_else(|| required("group.name"))?;
    let domain_id = fields
        .domain_id
        .unwrap_or_else(|| default_domain(&caller.0));
    authorize(
        &caller.0,
        "create_group",
        IdentityAction::ManageInDomain,
        &in_domain(&domain_id),
    )?;
    let new = NewGroup {
        name,
        domain_id,
        description: fields.description.unwrap_or_default(),
    };
    let group = run(&state, move |identity| {
        identity.create_group(new).map_err(ApiError::domain)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "group": group_doc(&state.public_base, &group) })),
    ))
}

/// `PATCH /v3/groups/{id}`.
pub(super) async fn update(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Json<Value>, ApiError> {
    let fields = body.group;
    let group = run(&state, move |identity| {
        let group = guard(
            &caller.0,
            "update_group",
            IdentityAction::ManageInDomain,
            identity.group(&id),
            group_target,
        )?;
        if fields
            .domain_id
            .as_ref()
            .is_some_and(|d| *d != group.domain_id)
        {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute group.domain_id: Cannot change Domain ID",
            ));
        }
        let update = GroupUpdate {
            name: fields.name,
            description: fields.description,
        };
        identity.update_group(&id, update).map_err(ApiError::domain)
    })
    .await?;
    Ok(Json(
        json!({ "group": group_doc(&state.public_base, &group) }),
    ))
}

/// `DELETE /v3/groups/{id}`: 204.
pub(super) async fn delete(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    run(&state, move |identity| {
        guard(
            &caller.0,
            "delete_group",
            IdentityAction::ManageInDomain,
            identity.group(&id),
            group_target,
        )?;
        identity.delete_group(&id).map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v3/groups/{id}/users`.
pub(super) async fn members(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let path = format!("groups/{id}/users");
    let users = run(&state, move |identity| {
        guard(
            &caller.0,
            "list_users_in_group",
            IdentityAction::ListInDomain,
            identity.group(&id),
            group_target,
        )?;
        identity.group_members(&id).map_err(ApiError::domain)
    })
    .await?;
    let base = &state.public_base;
    let docs = users.iter().map(|u| user_doc(base, u)).collect();
    Ok(Json(collection_at(base, "users", &path, docs)))
}

/// Checks a membership change: manager of the group's domain and of the user's.
fn may_change_membership(
    identity: &IdentityService,
    caller: &Caller,
    rule: &str,
    group_id: &str,
    user_id: &str,
) -> Result<(), ApiError> {
    guard(
        caller,
        rule,
        IdentityAction::ManageInDomain,
        identity.group(group_id),
        group_target,
    )?;
    guard(
        caller,
        rule,
        IdentityAction::ManageInDomain,
        identity.user(user_id),
        |u| in_domain(&u.domain_id),
    )?;
    Ok(())
}

/// `PUT /v3/groups/{id}/users/{user}`: 204.
pub(super) async fn add_member(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path((group, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    run(&state, move |identity| {
        may_change_membership(identity, &caller.0, "add_user_to_group", &group, &user)?;
        identity
            .add_user_to_group(&group, &user)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET`/`HEAD /v3/groups/{id}/users/{user}`: 204 when a member, 404 otherwise.
pub(super) async fn check_member(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path((group, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    run(&state, move |identity| {
        guard(
            &caller.0,
            "check_user_in_group",
            IdentityAction::ListInDomain,
            identity.group(&group),
            group_target,
        )?;
        identity
            .check_user_in_group(&group, &user)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v3/groups/{id}/users/{user}`: 204.
pub(super) async fn remove_member(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path((group, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    run(&state, move |identity| {
        may_change_membership(identity, &caller.0, "remove_user_from_group", &group, &user)?;
        identity
            .remove_user_from_group(&group, &user)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v3/users/{id}/groups`: readers of the user's domain, and the user themself.
pub(super) async fn of_user(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let path = format!("users/{id}/groups");
    let groups = run(&state, move |identity| {
        guard(
            &caller.0,
            "list_groups_for_user",
            IdentityAction::GetInDomain,
            identity.user(&id),
            user_target,
        )?;
        identity.user_groups(&id).map_err(ApiError::domain)
    })
    .await?;
    let base = &state.public_base;
    let docs = groups.iter().map(|g| group_doc(base, g)).collect();
    Ok(Json(collection_at(base, "groups", &path, docs)))
}
