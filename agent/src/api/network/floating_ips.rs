//! `/floatingips`: addresses on external networks, associated with a port of the same project.
//! Choosing the floating address itself is admin-only, as in Neutron's default policy.

use super::{
    NeutronQuery, Nullable, check_write, neutron, one, owner, path_id, resource_body, typed,
};
use crate::api::ApiState;
use crate::api::auth::{Authenticated, blocking};
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::identity::policy::Caller;
use crate::network::NetworkError;
use crate::network::model::FloatingIp;
use crate::network::service::{FloatingIpUpdate, NewFloatingIp};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::IpAddr;
use uuid::Uuid;

const POST: &[&str] = &[
    "floating_network_id",
    "floating_ip_address",
    "port_id",
    "fixed_ip_address",
    "description",
    "tenant_id",
    "project_id",
    "subnet_id",
];
const PUT: &[&str] = &["port_id", "fixed_ip_address", "description"];
const READ_ONLY: &[&str] = &[
    "id",
    "status",
    "router_id",
    "floating_network_id",
    "floating_ip_address",
    "created_at",
    "updated_at",
    "revision_number",
    "tags",
    "tenant_id",
    "project_id",
    "port_details",
    "port_forwardings",
];

/// Neutron's floating IP document.
pub(super) fn floating_ip_doc(f: &FloatingIp) -> Value {
    json!({
        "id": f.id,
        "tenant_id": f.project_id,
        "project_id": f.project_id,
        "description": f.description,
        "floating_network_id": f.floating_network_id,
        "floating_ip_address": f.floating_ip_address.to_string(),
        "port_id": f.port_id,
        "fixed_ip_address": f.fixed_ip_address.map(|a| a.to_string()),
        "router_id": f.router_id,
        "status": f.status(),
        "created_at": crate::api::openstack_time(f.created_at),
        "updated_at": crate::api::openstack_time(f.updated_at),
        "revision_number": 0,
        "tags": [],
    })
}

fn visible(state: &ApiState, caller: &Caller, id: &str) -> Result<FloatingIp, ApiError> {
    let uuid = path_id(id, "FloatingIPNotFound", "Floating IP")?;
    let fip = state.network.floating_ip(uuid).map_err(neutron)?;
    if !caller.can_read_project(&fip.project_id) {
        return Err(neutron(NetworkError::FloatingIpNotFound(uuid)));
    }
    Ok(fip)
}

/// A port to associate: it must be the floating IP's project's (others' ports do not exist for it).
fn port_of(state: &ApiState, caller: &Caller, project: &str, id: Uuid) -> Result<(), ApiError> {
    let port = super::ports::referenced(state, caller, id)?;
    if port.project_id != project && !caller.is_admin() {
        return Err(neutron(NetworkError::PortNotFound(id)));
    }
    Ok(())
}

/// `GET /floatingips`.
pub(super) async fn list(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let docs = state
            .network
            .floating_ips()
            .map_err(neutron)?
            .iter()
            .filter(|f| caller.can_read_project(&f.project_id))
            .map(floating_ip_doc)
            .collect();
        query
            .list(&state.public_base, "floatingips", "floatingips", docs)
            .map(Json)
    })
    .await
}

/// `GET /floatingips/{id}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let fip = visible(&state, &caller, &id)?;
        Ok(Json(one("floatingip", floating_ip_doc(&fip), &query)))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    floating_network_id: Uuid,
    floating_ip_address: Option<IpAddr>,
    port_id: Option<Uuid>,
    fixed_ip_address: Option<IpAddr>,
    #[serde(default)]
    description: String,
    subnet_id: Option<Uuid>,
}

/// `POST /floatingips`.
pub(super) async fn create(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = resource_body(body, "floatingip", POST, READ_ONLY, "POST")?;
    let project = owner(&caller, &body, "create_floatingip")?;
    let body: CreateBody = typed(body)?;
    if body.floating_ip_address.is_some() && !caller.is_admin() {
        return Err(super::forbidden("create_floatingip:floating_ip_address"));
    }
    blocking(move || {
        super::networks::referenced(&state, &caller, body.floating_network_id)?;
        if let Some(subnet) = body.subnet_id {
            let subnet = super::subnets::referenced(&state, &caller, subnet)?;
            let first_v4 = state
                .network
                .subnets()
                .map_err(neutron)?
                .into_iter()
                .find(|s| s.network_id == body.floating_network_id && s.ip_version == 4);
            if first_v4.is_none_or(|s| s.id != subnet.id) {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for operation: floating IPs come from the first IPv4 subnet of network {}; subnet {} cannot be chosen.",
                    body.floating_network_id, subnet.id
                ))
                .kind("InvalidInput"));
            }
        }
        if let Some(port) = body.port_id {
            port_of(&state, &caller, &project, port)?;
        }
        let fip = state
            .network
            .create_floating_ip(NewFloatingIp {
                id: None,
                project_id: project,
                floating_network_id: body.floating_network_id,
                floating_ip_address: body.floating_ip_address,
                port_id: body.port_id,
                fixed_ip_address: body.fixed_ip_address,
                description: body.description,
            })
            .map_err(neutron)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({ "floatingip": floating_ip_doc(&fip) })),
        ))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct UpdateBody {
    #[serde(default)]
    port_id: Nullable<Uuid>,
    fixed_ip_address: Option<IpAddr>,
    description: Option<String>,
}

/// `PUT /floatingips/{id}`: associates (`port_id`), dissociates (`port_id: null`) or redescribes.
pub(super) async fn update(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let body: UpdateBody = typed(resource_body(body, "floatingip", PUT, READ_ONLY, "PUT")?)?;
    blocking(move || {
        let fip = visible(&state, &caller, &id)?;
        check_write(&caller, &fip.project_id, "update_floatingip")?;
        if let Nullable::Set(port) = body.port_id {
            port_of(&state, &caller, &fip.project_id, port)?;
        }
        let fip = state
            .network
            .change_floating_ip(
                fip.id,
                FloatingIpUpdate {
                    port: match body.port_id {
                        Nullable::Absent => None,
                        Nullable::Null => Some(None),
                        Nullable::Set(port) => Some(Some(port)),
                    },
                    fixed_ip_address: body.fixed_ip_address,
                    description: body.description,
                },
            )
            .map_err(neutron)?;
        Ok(Json(json!({ "floatingip": floating_ip_doc(&fip) })))
    })
    .await
}

/// `DELETE /floatingips/{id}`.
pub(super) async fn delete(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let fip = visible(&state, &caller, &id)?;
        check_write(&caller, &fip.project_id, "delete_floatingip")?;
        state.network.delete_floating_ip(fip.id).map_err(neutron)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
