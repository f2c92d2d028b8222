//! `/v3/domains`. Keystone's domain schemas allow additional properties (it stores them as
//! extras); they are accepted and ignored here, since the domain layer keeps no extras.

use super::{QueryMap, authorize, collection, enabled_filter, in_domain, required, run, self_link};
use crate::api::ApiState;
use crate::api::auth::Authenticated;
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::identity::policy::{IdentityAction, PolicyTarget};
use crate::identity::service::DomainFilter;
use crate::identity::{Domain, DomainUpdate, NewDomain};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// A domain as Keystone shows it.
pub(super) fn domain_doc(base: &str, domain: &Domain) -> Value {
    json!({
        "id": domain.id,
        "name": domain.name,
        "description": domain.description,
        "enabled": domain.enabled,
        "tags": [],
        "options": {},
        "links": self_link(base, &format!("domains/{}", domain.id)),
    })
}

/// `GET /v3/domains` (filters `name`, `enabled`).
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Authenticated,
    Query(query): Query<QueryMap>,
) -> Result<Json<Value>, ApiError> {
    authorize(
        &caller.0,
        "list_domains",
        IdentityAction::ListDomains,
        &PolicyTarget::default(),
    )?;
    let filter = DomainFilter {
        name: query.get("name").cloned(),
        enabled: enabled_filter(&query),
    };
    let domains = run(&state, move |identity| {
        identity.list_domains(&filter).map_err(ApiError::domain)
    })
    .await?;
    let base = &state.public_base;
    let docs = domains.iter().map(|d| domain_doc(base, d)).collect();
    Ok(Json(collection(base, "domains", docs)))
}

/// `GET /v3/domains/{id}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(
        &caller.0,
        "get_domain",
        IdentityAction::GetDomain,
        &in_domain(&id),
    )?;
    let domain = run(&state, move |identity| {
        identity.domain(&id).map_err(ApiError::domain)
    })
    .await?;
    Ok(Json(
        json!({ "domain": domain_doc(&state.public_base, &domain) }),
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct DomainBody {
    domain: DomainFields,
}

#[derive(Debug, Default, Deserialize)]
struct DomainFields {
    name: Option<String>,
    description: Option<String>,
    enabled: Option<bool>,
}

/// `POST /v3/domains`: 201.
pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Authenticated,
    JsonBody(body): JsonBody<DomainBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(
        &caller.0,
        "create_domain",
        IdentityAction::ManageDomain,
        &PolicyTarget::default(),
    )?;
    let fields = body.domain;
    let name = fields.name.ok_or_else(|| required("domain.name"))?;
    let new = NewDomain {
        name,
        description: fields.description.unwrap_or_default(),
        enabled: fields.enabled.unwrap_or(true),
    };
    let domain = run(&state, move |identity| {
        identity.create_domain(new).map_err(ApiError::domain)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "domain": domain_doc(&state.public_base, &domain) })),
    ))
}

/// `PATCH /v3/domains/{id}`.
pub(super) async fn update(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DomainBody>,
) -> Result<Json<Value>, ApiError> {
    authorize(
        &caller.0,
        "update_domain",
        IdentityAction::ManageDomain,
        &in_domain(&id),
    )?;
    let fields = body.domain;
    let update = DomainUpdate {
        name: fields.name,
        description: fields.description,
        enabled: fields.enabled,
    };
    let domain = run(&state, move |identity| {
        identity
            .update_domain(&id, update)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(Json(
        json!({ "domain": domain_doc(&state.public_base, &domain) }),
    ))
}

/// `DELETE /v3/domains/{id}`: 204; an enabled domain is refused (403), as in Keystone.
pub(super) async fn delete(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(
        &caller.0,
        "delete_domain",
        IdentityAction::ManageDomain,
        &in_domain(&id),
    )?;
    run(&state, move |identity| {
        identity.delete_domain(&id).map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
