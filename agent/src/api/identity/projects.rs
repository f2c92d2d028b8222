//! `/v3/projects`. Projects are flat: each one's parent is its domain (Keystone's `parent_id`
//! equals `domain_id` for a top-level project), so `parent_id` other than the domain and
//! `is_domain: true` are refused. Additional properties are accepted and ignored, as Keystone's
//! schema allows them.

use super::{
    QueryMap, authorize, collection, default_domain, enabled_filter, guard, in_domain, required,
    run, self_link,
};
use crate::api::ApiState;
use crate::api::auth::Authenticated;
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::identity::policy::{IdentityAction, PolicyTarget};
use crate::identity::{NewProject, Project, ProjectFilter, ProjectUpdate};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// A project as Keystone shows it.
pub(super) fn project_doc(base: &str, project: &Project) -> Value {
    json!({
        "id": project.id,
        "name": project.name,
        "domain_id": project.domain_id,
        "description": project.description,
        "enabled": project.enabled,
        "parent_id": project.domain_id,
        "is_domain": false,
        "tags": [],
        "options": {},
        "links": self_link(base, &format!("projects/{}", project.id)),
    })
}

/// The policy target of a project.
pub(super) fn project_target(project: &Project) -> PolicyTarget {
    PolicyTarget {
        domain_id: Some(project.domain_id.clone()),
        project_id: Some(project.id.clone()),
        ..PolicyTarget::default()
    }
}

/// `GET /v3/projects` (filters `name`, `domain_id`, `enabled`). A domain-scoped caller without a
/// domain filter lists its own domain, as Keystone does.
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Authenticated,
    Query(query): Query<QueryMap>,
) -> Result<Json<Value>, ApiError> {
    let domain_id = query
        .get("domain_id")
        .cloned()
        .or_else(|| caller.0.domain_id().map(str::to_owned));
    let target = PolicyTarget {
        domain_id: domain_id.clone(),
        ..PolicyTarget::default()
    };
    authorize(
        &caller.0,
        "list_projects",
        IdentityAction::ListInDomain,
        &target,
    )?;
    let filter = ProjectFilter {
        domain_id,
        name: query.get("name").cloned(),
        enabled: enabled_filter(&query),
    };
    let projects = run(&state, move |identity| {
        identity.list_projects(&filter).map_err(ApiError::domain)
    })
    .await?;
    let base = &state.public_base;
    let docs = projects.iter().map(|p| project_doc(base, p)).collect();
    Ok(Json(collection(base, "projects", docs)))
}

/// `GET /v3/projects/{id}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let project = run(&state, move |identity| {
        guard(
            &caller.0,
            "get_project",
            IdentityAction::GetInDomain,
            identity.project(&id),
            project_target,
        )
    })
    .await?;
    Ok(Json(
        json!({ "project": project_doc(&state.public_base, &project) }),
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct ProjectBody {
    project: ProjectFields,
}

#[derive(Debug, Deserialize)]
struct ProjectFields {
    name: Option<String>,
    domain_id: Option<String>,
    description: Option<String>,
    enabled: Option<bool>,
    parent_id: Option<String>,
    is_domain: Option<bool>,
}

/// `POST /v3/projects`: 201.
pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Authenticated,
    JsonBody(body): JsonBody<ProjectBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let fields = body.project;
    let name = fields.name.ok_or_else(|| required("project.name"))?;
    if fields.is_domain == Some(true) {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute project.is_domain: projects acting as domains are not supported",
        ));
    }
    let domain_id = fields
        .domain_id
        .or_else(|| fields.parent_id.clone())
        .unwrap_or_else(|| default_domain(&caller.0));
    if fields.parent_id.as_ref().is_some_and(|p| *p != domain_id) {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute project.parent_id: nested projects are not supported; the parent must be the project's domain",
        ));
    }
    authorize(
        &caller.0,
        "create_project",
        IdentityAction::ManageInDomain,
        &in_domain(&domain_id),
    )?;
    let new = NewProject {
        name,
        domain_id,
        description: fields.description.unwrap_or_default(),
        enabled: fields.enabled.unwrap_or(true),
    };
    let project = run(&state, move |identity| {
        identity.create_project(new).map_err(ApiError::domain)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "project": project_doc(&state.public_base, &project) })),
    ))
}

/// `PATCH /v3/projects/{id}`.
pub(super) async fn update(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ProjectBody>,
) -> Result<Json<Value>, ApiError> {
    let fields = body.project;
    let project = run(&state, move |identity| {
        let project = guard(
            &caller.0,
            "update_project",
            IdentityAction::ManageInDomain,
            identity.project(&id),
            project_target,
        )?;
        if fields
            .domain_id
            .as_ref()
            .is_some_and(|d| *d != project.domain_id)
        {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute project.domain_id: a project cannot move to another domain",
            ));
        }
        if fields.is_domain == Some(true) {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute project.is_domain: is_domain cannot be changed",
            ));
        }
        let update = ProjectUpdate {
            name: fields.name,
            description: fields.description,
            enabled: fields.enabled,
        };
        identity.update_project(&id, update).map_err(ApiError::domain)
    })
    .await?;
    Ok(Json(
        json!({ "project": project_doc(&state.public_base, &project) }),
    ))
}

/// `DELETE /v3/projects/{id}`: 204.
pub(super) async fn delete(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    run(&state, move |identity| {
        guard(
            &caller.0,
            "delete_project",
            IdentityAction::ManageInDomain,
            identity.project(&id),
            project_target,
        )?;
        identity.delete_project(&id).map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
