//! `/extensions` and `/quotas`.
//!
//! Clients decide what to send by the extensions a cloud lists, so the list names only what these
//! routes really do. Quotas are not enforced at this site: every limit reads `-1` (unlimited), usage
//! is counted from the model, and setting a quota is refused rather than silently ignored.

use super::{forbidden, neutron};
use crate::api::ApiState;
use crate::api::auth::{Authenticated, blocking};
use crate::api::error::ApiError;
use crate::identity::policy::Caller;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

/// When this site's Neutron API took its current shape (each extension's `updated`).
const UPDATED: &str = "2026-11-01T00:00:00-00:00";

/// (alias, name, description) of every extension served.
const EXTENSIONS: &[(&str, &str, &str)] = &[
    (
        "allowed-address-pairs",
        "Allowed Address Pairs",
        "Provides allowed address pairs",
    ),
    (
        "binding",
        "Port Binding",
        "Expose port bindings of a virtual port to external application",
    ),
    (
        "external-net",
        "Neutron external network",
        "Adds external network attribute to network resource.",
    ),
    (
        "ext-gw-mode",
        "Neutron L3 Configurable external gateway mode",
        "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway",
    ),
    (
        "extraroute",
        "Neutron Extra Route",
        "Extra routes configuration for L3 router",
    ),
    (
        "l2_adjacency",
        "L2 network adjacency",
        "Display whether a network is guaranteed to be adjacent at L2",
    ),
    (
        "net-mtu",
        "Network MTU",
        "Provides MTU attribute for a network resource.",
    ),
    (
        "pagination",
        "Pagination support",
        "Extension that indicates that pagination is enabled.",
    ),
    ("port-security", "Port Security", "Provides port security"),
    (
        "project-id",
        "project_id field enabled",
        "Extension that indicates that project_id field is enabled.",
    ),
    (
        "provider",
        "Provider Network",
        "Expose mapping of virtual networks to physical networks",
    ),
    (
        "quotas",
        "Quota management support",
        "Expose functions for quotas management per project; quotas are not enforced at this site, every limit is -1",
    ),
    (
        "quota_details",
        "Quota details management support",
        "Expose functions for quotas usage statistics per project",
    ),
    (
        "router",
        "Neutron L3 Router",
        "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway.",
    ),
    (
        "security-group",
        "security-group",
        "The security groups extension.",
    ),
    (
        "security-groups-default-rules",
        "Default rules for security groups",
        "Configure set of security group rules used as default rules for every new security group",
    ),
    (
        "sorting",
        "Sorting support",
        "Extension that indicates that sorting is enabled.",
    ),
    (
        "standard-attr-description",
        "standard-attr-description",
        "Extension to add descriptions to standard attributes",
    ),
    (
        "standard-attr-timestamp",
        "Resource timestamps",
        "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes.",
    ),
    (
        "stateful-security-group",
        "Stateful security group",
        "Indicates if the security group is stateful or not; only stateful groups exist at this site",
    ),
];

fn extension_doc(&(alias, name, description): &(&str, &str, &str)) -> Value {
    json!({
        "alias": alias,
        "name": name,
        "description": description,
        "updated": UPDATED,
        "links": [],
    })
}

/// `GET /extensions`.
pub(super) async fn list(Authenticated(_caller): Authenticated) -> Json<Value> {
    Json(json!({ "extensions": EXTENSIONS.iter().map(extension_doc).collect::<Vec<_>>() }))
}

/// `GET /extensions/{alias}`.
pub(super) async fn show(
    Authenticated(_caller): Authenticated,
    Path(alias): Path<String>,
) -> Result<Json<Value>, ApiError> {
    EXTENSIONS
        .iter()
        .find(|e| e.0 == alias)
        .map(|e| Json(json!({ "extension": extension_doc(e) })))
        .ok_or_else(|| {
            ApiError::not_found(format!("Extension with alias {alias} does not exist"))
                .kind("ExtensionNotFound")
        })
}

/// The quota resources Neutron reports.
const RESOURCES: [&str; 9] = [
    "network",
    "subnet",
    "port",
    "router",
    "floatingip",
    "security_group",
    "security_group_rule",
    "subnetpool",
    "rbac_policy",
];

fn unlimited() -> Value {
    Value::Object(
        RESOURCES
            .iter()
            .map(|r| ((*r).to_owned(), json!(-1)))
            .collect::<Map<_, _>>(),
    )
}

fn check_read(caller: &Caller, project: &str) -> Result<(), ApiError> {
    if caller.can_read_project(project) {
        Ok(())
    } else {
        Err(forbidden("get_quota"))
    }
}

/// `GET /quotas` (admin): projects with non-default quotas — there are none.
pub(super) async fn quotas(Authenticated(caller): Authenticated) -> Result<Json<Value>, ApiError> {
    if !caller.is_admin() {
        return Err(forbidden("get_quota"));
    }
    Ok(Json(json!({ "quotas": [] })))
}

/// `GET /quotas/{project_id}`.
pub(super) async fn quota(
    Authenticated(caller): Authenticated,
    Path(project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_read(&caller, &project)?;
    Ok(Json(json!({ "quota": unlimited() })))
}

/// `GET /quotas/{project_id}/details` (also `details.json`, openstacksdk's path) and `/default`.
pub(super) async fn quota_view(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path((project, view)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_read(&caller, &project)?;
    match view.as_str() {
        "default" | "default.json" => Ok(Json(json!({ "quota": unlimited() }))),
        "details" | "details.json" => {
            blocking(move || {
                let model = state.network.model().map_err(neutron)?;
                let mine = |p: &str| p == project;
                let used = [
                    model
                        .networks
                        .iter()
                        .filter(|n| mine(&n.project_id))
                        .count(),
                    model.subnets.iter().filter(|s| mine(&s.project_id)).count(),
                    model.ports.iter().filter(|p| mine(&p.project_id)).count(),
                    model.routers.iter().filter(|r| mine(&r.project_id)).count(),
                    model
                        .floating_ips
                        .iter()
                        .filter(|f| mine(&f.project_id))
                        .count(),
                    model
                        .security_groups
                        .iter()
                        .filter(|g| mine(&g.project_id))
                        .count(),
                    model
                        .security_groups
                        .iter()
                        .filter(|g| mine(&g.project_id))
                        .map(|g| g.rules.len())
                        .sum(),
                    0,
                    0,
                ];
                let details: Map<String, Value> = RESOURCES
                    .iter()
                    .zip(used)
                    .map(|(r, used)| {
                        (
                            (*r).to_owned(),
                            json!({ "used": used, "limit": -1, "reserved": 0 }),
                        )
                    })
                    .collect();
                Ok(Json(json!({ "quota": details })))
            })
            .await
        }
        _ => Err(ApiError::not_found("The resource could not be found.")),
    }
}

/// `PUT /quotas/{project_id}` (admin): refused, quotas are not enforced here.
pub(super) async fn update_quota(
    Authenticated(caller): Authenticated,
    Path(_project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !caller.is_admin() {
        return Err(forbidden("update_quota"));
    }
    Err(ApiError::bad_request(
        "Quotas are not enforced at this site; every limit is -1 (unlimited).",
    ))
}

/// `DELETE /quotas/{project_id}` (admin): back to the defaults, which is where it already is.
pub(super) async fn reset_quota(
    Authenticated(caller): Authenticated,
    Path(_project): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !caller.is_admin() {
        return Err(forbidden("delete_quota"));
    }
    Ok(StatusCode::NO_CONTENT)
}
