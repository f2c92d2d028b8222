//! `/routers` and their interface actions. The gateway goes to any external network; turning SNAT off
//! or choosing the gateway address is admin-only, as in Neutron's default policy.

use super::{
    NeutronQuery, Nullable, check_write, neutron, one, owner, path_id, resource_body, typed,
};
use crate::api::ApiState;
use crate::api::auth::{Authenticated, blocking};
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::identity::policy::Caller;
use crate::network::NetworkError;
use crate::network::model::{Route, Router};
use crate::network::service::{GatewayInfo, InterfaceTarget, NewRouter, RouterUpdate};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::net::IpAddr;
use uuid::Uuid;

const POST: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "external_gateway_info",
    "tenant_id",
    "project_id",
    "distributed",
    "ha",
    "availability_zone_hints",
];
const PUT: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "external_gateway_info",
    "routes",
    "distributed",
    "ha",
];
const READ_ONLY: &[&str] = &[
    "id",
    "status",
    "routes",
    "created_at",
    "updated_at",
    "revision_number",
    "tags",
    "tenant_id",
    "project_id",
    "availability_zones",
];

/// Neutron's router document.
pub(super) fn router_doc(r: &Router) -> Value {
    let gateway = r.external_gateway.as_ref().map(|g| {
        json!({
            "network_id": g.network_id,
            "enable_snat": g.enable_snat,
            "external_fixed_ips": g.external_fixed_ips.iter().map(|f| json!({
                "subnet_id": f.subnet_id, "ip_address": f.ip_address.to_string(),
            })).collect::<Vec<_>>(),
        })
    });
    json!({
        "id": r.id,
        "name": r.name,
        "description": r.description,
        "tenant_id": r.project_id,
        "project_id": r.project_id,
        "status": "ACTIVE",
        "admin_state_up": r.admin_state_up,
        "external_gateway_info": gateway,
        "routes": r.routes.iter().map(|route| json!({
            "destination": route.destination.to_string(), "nexthop": route.nexthop.to_string(),
        })).collect::<Vec<_>>(),
        "distributed": false,
        "ha": false,
        "availability_zones": [],
        "availability_zone_hints": [],
        "created_at": crate::api::openstack_time(r.created_at),
        "updated_at": crate::api::openstack_time(r.updated_at),
        "revision_number": 0,
        "tags": [],
    })
}

/// Loads a router the caller may see; others do not exist for it.
fn visible(state: &ApiState, caller: &Caller, id: &str) -> Result<Router, ApiError> {
    let uuid = path_id(id, "RouterNotFound", "Router")?;
    let router = state.network.router(uuid).map_err(neutron)?;
    if !caller.can_read_project(&router.project_id) {
        return Err(neutron(NetworkError::RouterNotFound(uuid)));
    }
    Ok(router)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalFixedIp {
    ip_address: Option<IpAddr>,
    subnet_id: Option<Uuid>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayBody {
    network_id: Uuid,
    enable_snat: Option<bool>,
    external_fixed_ips: Option<Vec<ExternalFixedIp>>,
}

/// Validates a gateway request against the caller's rights.
fn gateway(
    state: &ApiState,
    caller: &Caller,
    body: GatewayBody,
    action: &str,
) -> Result<GatewayInfo, ApiError> {
    super::networks::referenced(state, caller, body.network_id)?;
    if body.enable_snat == Some(false) && !caller.is_admin() {
        return Err(super::forbidden(&format!(
            "{action}:external_gateway_info:enable_snat"
        )));
    }
    let ips = body.external_fixed_ips.unwrap_or_default();
    if !ips.is_empty() && !caller.is_admin() {
        return Err(super::forbidden(&format!(
            "{action}:external_gateway_info:external_fixed_ips"
        )));
    }
    let ip_address = match ips.as_slice() {
        [] => None,
        [one] => Some(one.ip_address.ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid input for external_gateway_info. Reason: give the gateway's ip_address{}.",
                one.subnet_id
                    .map(|s| format!(" in subnet {s}"))
                    .unwrap_or_default()
            ))
        })?),
        _ => {
            return Err(ApiError::bad_request(
                "Invalid input for external_gateway_info. Reason: this site gives a router one gateway address.",
            ));
        }
    };
    Ok(GatewayInfo {
        network_id: body.network_id,
        enable_snat: body.enable_snat.unwrap_or(true),
        ip_address,
    })
}

/// `distributed` and `ha` exist in Neutron's shape only: this site has one node and central routers.
fn check_single_node(body: &Map<String, Value>) -> Result<(), ApiError> {
    for key in ["distributed", "ha"] {
        if body
            .get(key)
            .is_some_and(|v| v != &json!(false) && !v.is_null())
        {
            return Err(ApiError::bad_request(format!(
                "Invalid input for {key}. Reason: this site's routers are neither distributed nor HA."
            )));
        }
    }
    if body
        .get("availability_zone_hints")
        .is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(ApiError::bad_request(
            "availability_zone_hints: this site has one availability zone; give none",
        ));
    }
    Ok(())
}

/// `GET /routers`.
pub(super) async fn list(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let docs = state
            .network
            .routers()
            .map_err(neutron)?
            .iter()
            .filter(|r| caller.can_read_project(&r.project_id))
            .map(router_doc)
            .collect();
        query
            .list(&state.public_base, "routers", "routers", docs)
            .map(Json)
    })
    .await
}

/// `GET /routers/{id}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let router = visible(&state, &caller, &id)?;
        Ok(Json(one("router", router_doc(&router), &query)))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    admin_state_up: Option<bool>,
    external_gateway_info: Option<GatewayBody>,
}

/// `POST /routers`.
pub(super) async fn create(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut body = resource_body(body, "router", POST, READ_ONLY, "POST")?;
    let project = owner(&caller, &body, "create_router")?;
    check_single_node(&body)?;
    for key in ["distributed", "ha", "availability_zone_hints"] {
        body.remove(key);
    }
    // `{}` means no gateway, as in Neutron.
    if body
        .get("external_gateway_info")
        .is_some_and(|g| g.as_object().is_some_and(Map::is_empty))
    {
        body.remove("external_gateway_info");
    }
    let body: CreateBody = typed(body)?;
    blocking(move || {
        let external_gateway = body
            .external_gateway_info
            .map(|g| gateway(&state, &caller, g, "create_router"))
            .transpose()?;
        let router = state
            .network
            .create_router(NewRouter {
                id: None,
                name: body.name,
                description: body.description,
                project_id: project,
                admin_state_up: body.admin_state_up,
                external_gateway,
            })
            .map_err(neutron)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({ "router": router_doc(&router) })),
        ))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct RouteBody {
    destination: ipnet::IpNet,
    nexthop: IpAddr,
}

#[derive(Debug, Deserialize)]
struct UpdateBody {
    name: Option<String>,
    description: Option<String>,
    admin_state_up: Option<bool>,
    #[serde(default)]
    external_gateway_info: Nullable<GatewayBody>,
    routes: Option<Vec<RouteBody>>,
}

/// `PUT /routers/{id}`.
pub(super) async fn update(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let mut body = resource_body(body, "router", PUT, READ_ONLY, "PUT")?;
    check_single_node(&body)?;
    body.remove("distributed");
    body.remove("ha");
    if let Some(g) = body.get_mut("external_gateway_info")
        && g.as_object().is_some_and(Map::is_empty)
    {
        *g = Value::Null;
    }
    let body: UpdateBody = typed(body)?;
    blocking(move || {
        let router = visible(&state, &caller, &id)?;
        check_write(&caller, &router.project_id, "update_router")?;
        let external_gateway = match body.external_gateway_info {
            Nullable::Absent => None,
            Nullable::Null => Some(None),
            Nullable::Set(g) => Some(Some(gateway(&state, &caller, g, "update_router")?)),
        };
        let update = RouterUpdate {
            name: body.name,
            description: body.description,
            admin_state_up: body.admin_state_up,
            external_gateway,
            routes: body.routes.map(|routes| {
                routes
                    .into_iter()
                    .map(|r| Route {
                        destination: r.destination.trunc(),
                        nexthop: r.nexthop,
                    })
                    .collect()
            }),
        };
        let router = state
            .network
            .update_router(router.id, update)
            .map_err(neutron)?;
        Ok(Json(json!({ "router": router_doc(&router) })))
    })
    .await
}

/// `DELETE /routers/{id}`.
pub(super) async fn delete(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let router = visible(&state, &caller, &id)?;
        check_write(&caller, &router.project_id, "delete_router")?;
        state.network.delete_router(router.id).map_err(neutron)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InterfaceBody {
    subnet_id: Option<Uuid>,
    port_id: Option<Uuid>,
}

/// The subnet or port of an interface request, checked to be the caller's to use.
fn target(state: &ApiState, caller: &Caller, body: Value) -> Result<InterfaceTarget, ApiError> {
    let body: InterfaceBody = match body {
        Value::Object(map) => typed(map).map_err(|err| {
            ApiError::bad_request(format!("Invalid input for operation: {}", err.message()))
        })?,
        _ => {
            return Err(ApiError::bad_request(
                "Bad router request: a JSON object with subnet_id or port_id is required.",
            ));
        }
    };
    match (body.subnet_id, body.port_id) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "Bad router request: Cannot specify both subnet-id and port-id.",
        )
        .kind("BadRequest")),
        (None, None) => Err(ApiError::bad_request(
            "Bad router request: Either subnet_id or port_id must be specified.",
        )
        .kind("BadRequest")),
        (Some(subnet), None) => {
            super::subnets::referenced(state, caller, subnet)?;
            Ok(InterfaceTarget::Subnet(subnet))
        }
        (None, Some(port)) => {
            let port = super::ports::referenced(state, caller, port)?;
            check_write(caller, &port.project_id, "add_router_interface")?;
            Ok(InterfaceTarget::Port(port.id))
        }
    }
}

/// Neutron's answer to both interface actions.
fn interface_doc(router: &Router, port: Uuid, subnet: Uuid, network: Uuid) -> Value {
    json!({
        "id": router.id,
        "tenant_id": router.project_id,
        "project_id": router.project_id,
        "port_id": port,
        "subnet_id": subnet,
        "subnet_ids": [subnet],
        "network_id": network,
    })
}

/// `PUT /routers/{id}/add_router_interface`.
pub(super) async fn add_interface(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let router = visible(&state, &caller, &id)?;
        check_write(&caller, &router.project_id, "add_router_interface")?;
        let target = target(&state, &caller, body)?;
        let (port, subnet) = state
            .network
            .add_router_interface(router.id, target)
            .map_err(neutron)?;
        let network = state.network.subnet(subnet).map_err(neutron)?.network_id;
        Ok(Json(interface_doc(&router, port, subnet, network)))
    })
    .await
}

/// `PUT /routers/{id}/remove_router_interface`.
pub(super) async fn remove_interface(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let router = visible(&state, &caller, &id)?;
        check_write(&caller, &router.project_id, "remove_router_interface")?;
        let target = target(&state, &caller, body)?;
        let (port, subnet) = state
            .network
            .remove_router_interface(router.id, target)
            .map_err(neutron)?;
        let network = state.network.subnet(subnet).map_err(neutron)?.network_id;
        Ok(Json(interface_doc(&router, port, subnet, network)))
    })
    .await
}
