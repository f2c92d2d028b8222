//! Keystone v3 at `/identity/v3`: tokens, the catalog, domains, projects, users, groups, roles,
//! grants, role assignments and application credentials.
//!
//! The shapes are Keystone's because python-openstackclient, keystoneauth and openstacksdk parse
//! them unchanged. Every route that needs a caller checks [`Caller::allows`] before it answers; a
//! refusal is Keystone's 403 naming the `identity:<rule>` that refused. Where the policy target
//! depends on a resource (its domain), the resource is read first; if it does not exist the policy is
//! checked against an empty target, so a cloud admin or system reader learns it is missing (404) and
//! anyone else gets 403, as Keystone's enforcer does.

mod app_creds;
mod catalog;
mod domains;
mod grants;
mod groups;
mod projects;
mod roles;
#[cfg(test)]
mod tests;
mod tokens;
mod users;

use super::ApiState;
use super::auth::blocking;
use super::error::ApiError;
use crate::identity::policy::{Caller, IdentityAction, PolicyTarget};
use crate::identity::{IdentityError, IdentityService};
use axum::Router;
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The identity routes (full paths).
pub(super) fn routes() -> Router<ApiState> {
    let v = "/identity/v3";
    Router::new()
        .route(
            &format!("{v}/auth/tokens"),
            post(tokens::issue)
                .get(tokens::validate)
                .delete(tokens::revoke),
        )
        .route(&format!("{v}/auth/catalog"), get(tokens::catalog))
        .route(&format!("{v}/auth/projects"), get(tokens::projects))
        .route(&format!("{v}/auth/domains"), get(tokens::domains))
        .route(&format!("{v}/auth/system"), get(tokens::system))
        .route(&format!("{v}/services"), get(catalog::services))
        .route(&format!("{v}/services/{{id}}"), get(catalog::service))
        .route(&format!("{v}/endpoints"), get(catalog::endpoints))
        .route(&format!("{v}/endpoints/{{id}}"), get(catalog::endpoint))
        .route(&format!("{v}/regions"), get(catalog::regions))
        .route(&format!("{v}/regions/{{id}}"), get(catalog::region))
        .route(
            &format!("{v}/domains"),
            get(domains::list).post(domains::create),
        )
        .route(
            &format!("{v}/domains/{{id}}"),
            get(domains::show)
                .patch(domains::update)
                .delete(domains::delete),
        )
        .route(
            &format!("{v}/projects"),
            get(projects::list).post(projects::create),
        )
        .route(
            &format!("{v}/projects/{{id}}"),
            get(projects::show)
                .patch(projects::update)
                .delete(projects::delete),
        )
        .route(&format!("{v}/users"), get(users::list).post(users::create))
        .route(
            &format!("{v}/users/{{id}}"),
            get(users::show).patch(users::update).delete(users::delete),
        )
        .route(
            &format!("{v}/users/{{id}}/password"),
            post(users::change_password),
        )
        .route(&format!("{v}/users/{{id}}/projects"), get(users::projects))
        .route(&format!("{v}/users/{{id}}/groups"), get(groups::of_user))
        .route(
            &format!("{v}/users/{{id}}/application_credentials"),
            get(app_creds::list).post(app_creds::create),
        )
        .route(
            &format!("{v}/users/{{id}}/application_credentials/{{cred}}"),
            get(app_creds::show).delete(app_creds::delete),
        )
        .route(
            &format!("{v}/groups"),
            get(groups::list).post(groups::create),
        )
        .route(
            &format!("{v}/groups/{{id}}"),
            get(groups::show)
                .patch(groups::update)
                .delete(groups::delete),
        )
        .route(&format!("{v}/groups/{{id}}/users"), get(groups::members))
        .route(
            &format!("{v}/groups/{{id}}/users/{{user}}"),
            put(groups::add_member)
                .get(groups::check_member)
                .delete(groups::remove_member),
        )
        .route(&format!("{v}/roles"), get(roles::list).post(roles::create))
        .route(
            &format!("{v}/roles/{{id}}"),
            get(roles::show).delete(roles::delete),
        )
        .route(&format!("{v}/roles/{{id}}/implies"), get(roles::implied_of))
        .route(
            &format!("{v}/roles/{{id}}/implies/{{implied}}"),
            put(roles::imply)
                .get(roles::implication)
                .head(roles::check_implication)
                .delete(roles::unimply),
        )
        .route(&format!("{v}/role_inferences"), get(roles::inferences))
        .route(
            &format!("{v}/role_assignments"),
            get(grants::role_assignments),
        )
        .merge(grants::routes(v))
}

/// Runs identity work off the async workers (SQLite, argon2).
async fn run<T, F>(state: &ApiState, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&IdentityService) -> Result<T, ApiError> + Send + 'static,
{
    let identity: Arc<IdentityService> = state.identity.clone();
    blocking(move || work(&identity)).await
}

/// A domain error as the client sees it.
/// Keystone's policy refusal.
fn refused(rule: &str) -> ApiError {
    ApiError::forbidden(format!(
        "You are not authorized to perform the requested action: identity:{rule}."
    ))
}

/// Refuses with `identity:<rule>` unless the caller may do `action` on `target`.
fn authorize(
    caller: &Caller,
    rule: &str,
    action: IdentityAction,
    target: &PolicyTarget,
) -> Result<(), ApiError> {
    if caller.allows(action, target) {
        Ok(())
    } else {
        Err(refused(rule))
    }
}

/// The target of an action on a resource living in `domain_id`.
fn in_domain(domain_id: &str) -> PolicyTarget {
    PolicyTarget {
        domain_id: Some(domain_id.to_owned()),
        ..PolicyTarget::default()
    }
}

/// The URL of a path under `/identity/v3`.
fn url(base: &str, path: &str) -> String {
    format!("{base}/identity/v3/{path}")
}

/// A resource's `links`.
fn self_link(base: &str, path: &str) -> Value {
    json!({ "self": url(base, path) })
}

/// A collection document: `{name: items, links: {self, previous, next}}` (no paging: every list
/// of an edge node's identity fits one answer).
fn collection(base: &str, name: &str, items: Vec<Value>) -> Value {
    collection_at(base, name, name, items)
}

/// A collection whose URL is not `/v3/{name}` (e.g. `/v3/groups/{id}/users`).
fn collection_at(base: &str, name: &str, path: &str, items: Vec<Value>) -> Value {
    json!({
        name: Value::Array(items),
        "links": { "self": url(base, path), "previous": null, "next": null },
    })
}

/// Keystone's timestamp format (`2026-11-01T12:00:00.000000Z`).
fn keystone_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.000000Z").to_string()
}

/// Query parameters as given.
type QueryMap = BTreeMap<String, String>;

/// A boolean query flag the way Keystone reads one: present means true unless `0` or `false`.
fn flag(query: &QueryMap, key: &str) -> bool {
    query
        .get(key)
        .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "0" | "false"))
}

/// The `enabled` filter: absent → no filter; Keystone's false spellings → false; else true.
fn enabled_filter(query: &QueryMap) -> Option<bool> {
    query.get("enabled").map(|v| {
        !matches!(
            v.to_ascii_lowercase().as_str(),
            "0" | "false" | "no" | "off"
        )
    })
}

/// Reads a resource and checks the policy against its target: when it does not exist the policy is
/// checked against an empty target, so callers who may see everything get 404 and others 403.
fn guard<T>(
    caller: &Caller,
    rule: &str,
    action: IdentityAction,
    found: Result<T, IdentityError>,
    target_of: impl FnOnce(&T) -> PolicyTarget,
) -> Result<T, ApiError> {
    match found {
        Ok(value) => {
            authorize(caller, rule, action, &target_of(&value))?;
            Ok(value)
        }
        Err(err @ IdentityError::NotFound { .. }) => {
            authorize(caller, rule, action, &PolicyTarget::default())?;
            Err(ApiError::domain(err))
        }
        Err(err) => Err(ApiError::domain(err)),
    }
}

/// The domain a new project, user or group lands in when the request names none: the token's
/// domain, else its project's domain, else the user's own (Keystone's `_normalize_domain_id`).
fn default_domain(caller: &Caller) -> String {
    match &caller.token().scope {
        crate::identity::Scope::Domain { id, .. } => id.clone(),
        crate::identity::Scope::Project { domain_id, .. } => domain_id.clone(),
        _ => caller.token().user.domain_id.clone(),
    }
}

/// `"{field}" is a required property` in Keystone's wording.
fn required(field: &str) -> ApiError {
    let name = field.rsplit('.').next().unwrap_or(field);
    ApiError::bad_request(format!(
        "Invalid input for field/attribute {field}: '{name}' is a required property"
    ))
}
