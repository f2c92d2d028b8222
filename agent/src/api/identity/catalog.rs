//! The service catalog of this node: Keystone, Nova, Glance and Neutron behind one base URL, in the
//! node's region, each with public, internal and admin endpoints (all the same URL: an edge node has
//! one listener). Nothing is stored: the catalog follows from `public_base` and the region, and ids
//! are UUIDv5 of the service type (and interface) so they stay the same across restarts and nodes.

use super::{QueryMap, collection, self_link, url};
use crate::api::ApiState;
use crate::api::auth::Authenticated;
use crate::api::error::ApiError;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};
use uuid::Uuid;

/// (type, name, path under the base URL, description) of every service the node offers.
const SERVICES: [(&str, &str, &str, &str); 4] = [
    ("identity", "keystone", "identity", "Identity Service"),
    ("compute", "nova", "compute/v2.1", "Compute Service"),
    ("image", "glance", "image", "Image Service"),
    ("network", "neutron", "network", "Network Service"),
];

/// The interfaces each service is offered on.
const INTERFACES: [&str; 3] = ["public", "internal", "admin"];

fn stable_id(name: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("scs-edge:catalog:{name}").as_bytes(),
    )
    .simple()
    .to_string()
}

fn service_id(kind: &str) -> String {
    stable_id(&format!("service:{kind}"))
}

fn endpoint_id(kind: &str, interface: &str) -> String {
    stable_id(&format!("endpoint:{kind}:{interface}"))
}

/// One endpoint row, as the catalog knows it.
struct Endpoint {
    id: String,
    service_id: String,
    interface: &'static str,
    url: String,
}

fn endpoints_of(base: &str, kind: &str, path: &str) -> Vec<Endpoint> {
    INTERFACES
        .iter()
        .map(|interface| Endpoint {
            id: endpoint_id(kind, interface),
            service_id: service_id(kind),
            interface,
            url: format!("{base}/{path}"),
        })
        .collect()
}

/// The `catalog` of a token and of `GET /v3/auth/catalog`.
pub(super) fn token_catalog(base: &str, region: &str) -> Value {
    let services: Vec<Value> = SERVICES
        .iter()
        .map(|(kind, name, path, _)| {
            let endpoints: Vec<Value> = endpoints_of(base, kind, path)
                .into_iter()
                .map(|e| {
                    json!({
                        "id": e.id,
                        "interface": e.interface,
                        "region": region,
                        "region_id": region,
                        "url": e.url,
                    })
                })
                .collect();
            json!({ "id": service_id(kind), "type": kind, "name": name, "endpoints": endpoints })
        })
        .collect();
    Value::Array(services)
}

fn service_doc(base: &str, (kind, name, _, description): (&str, &str, &str, &str)) -> Value {
    let id = service_id(kind);
    json!({
        "id": id,
        "type": kind,
        "name": name,
        "description": description,
        "enabled": true,
        "links": self_link(base, &format!("services/{id}")),
    })
}

fn endpoint_doc(base: &str, region: &str, endpoint: &Endpoint) -> Value {
    json!({
        "id": endpoint.id,
        "interface": endpoint.interface,
        "region": region,
        "region_id": region,
        "service_id": endpoint.service_id,
        "url": endpoint.url,
        "enabled": true,
        "links": self_link(base, &format!("endpoints/{}", endpoint.id)),
    })
}

fn region_doc(base: &str, region: &str) -> Value {
    json!({
        "id": region,
        "description": "",
        "parent_region_id": null,
        "links": self_link(base, &format!("regions/{region}")),
    })
}

fn all_endpoints(base: &str) -> Vec<Endpoint> {
    SERVICES
        .iter()
        .flat_map(|(kind, _, path, _)| endpoints_of(base, kind, path))
        .collect()
}

fn region_of(state: &ApiState) -> String {
    state.identity.settings().region_id.clone()
}

/// `GET /v3/services` (filters `type`, `name`): any valid token.
pub(super) async fn services(
    State(state): State<ApiState>,
    _caller: Authenticated,
    Query(query): Query<QueryMap>,
) -> Json<Value> {
    let base = &state.public_base;
    let docs = SERVICES
        .iter()
        .filter(|s| query.get("type").is_none_or(|t| t == s.0))
        .filter(|s| query.get("name").is_none_or(|n| n == s.1))
        .map(|s| service_doc(base, *s))
        .collect();
    Json(collection(base, "services", docs))
}

/// `GET /v3/services/{id}`.
pub(super) async fn service(
    State(state): State<ApiState>,
    _caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let base = &state.public_base;
    SERVICES
        .iter()
        .find(|s| service_id(s.0) == id)
        .map(|s| Json(json!({ "service": service_doc(base, *s) })))
        .ok_or_else(|| ApiError::not_found(format!("Could not find service: {id}.")))
}

/// `GET /v3/endpoints` (filters `interface`, `service_id`, `region_id`).
pub(super) async fn endpoints(
    State(state): State<ApiState>,
    _caller: Authenticated,
    Query(query): Query<QueryMap>,
) -> Json<Value> {
    let base = &state.public_base;
    let region = region_of(&state);
    let docs = all_endpoints(base)
        .iter()
        .filter(|e| query.get("interface").is_none_or(|i| i == e.interface))
        .filter(|e| query.get("service_id").is_none_or(|s| *s == e.service_id))
        .filter(|_| query.get("region_id").is_none_or(|r| *r == region))
        .map(|e| endpoint_doc(base, &region, e))
        .collect();
    Json(collection(base, "endpoints", docs))
}

/// `GET /v3/endpoints/{id}`.
pub(super) async fn endpoint(
    State(state): State<ApiState>,
    _caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let base = &state.public_base;
    let region = region_of(&state);
    all_endpoints(base)
        .iter()
        .find(|e| e.id == id)
        .map(|e| Json(json!({ "endpoint": endpoint_doc(base, &region, e) })))
        .ok_or_else(|| ApiError::not_found(format!("Could not find endpoint: {id}.")))
}

/// `GET /v3/regions`: the node's one region.
pub(super) async fn regions(State(state): State<ApiState>, _caller: Authenticated) -> Json<Value> {
    let base = &state.public_base;
    let region = region_of(&state);
    Json(collection(base, "regions", vec![region_doc(base, &region)]))
}

/// `GET /v3/regions/{id}`.
pub(super) async fn region(
    State(state): State<ApiState>,
    _caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let base = &state.public_base;
    let region = region_of(&state);
    if id == region {
        Ok(Json(json!({ "region": region_doc(base, &region) })))
    } else {
        Err(ApiError::not_found(format!("Could not find region: {id}.")))
    }
}

/// The self URL of the catalog collection (for `GET /v3/auth/catalog`).
pub(super) fn auth_catalog_url(base: &str) -> String {
    url(base, "auth/catalog")
}
