//! `/ports`: a project's ports, on its own networks or shared ones. Choosing a port's MAC or fixed
//! address on someone else's shared network is the network owner's privilege, as in Neutron; ports
//! of routers and floating IPs are made through those APIs. Binding details are admin-only.

use super::{
    NeutronQuery, check_write, missing, neutron, one, owner, path_id, resource_body, typed,
};
use crate::api::ApiState;
use crate::api::auth::{Authenticated, blocking};
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::identity::policy::Caller;
use crate::network::NetworkError;
use crate::network::model::{
    AddressPair, OWNER_FLOATING_IP, OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE, Port,
};
use crate::network::service::{FixedIpRequest, NewPort, PortUpdate};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::IpAddr;
use uuid::Uuid;

const POST: &[&str] = &[
    "name",
    "description",
    "network_id",
    "admin_state_up",
    "mac_address",
    "fixed_ips",
    "security_groups",
    "port_security_enabled",
    "allowed_address_pairs",
    "device_owner",
    "device_id",
    "tenant_id",
    "project_id",
    "binding:vnic_type",
    "binding:host_id",
    "binding:profile",
];
const PUT: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "security_groups",
    "port_security_enabled",
    "allowed_address_pairs",
    "device_owner",
    "device_id",
    "fixed_ips",
    "mac_address",
    "binding:vnic_type",
    "binding:host_id",
    "binding:profile",
];
const READ_ONLY: &[&str] = &[
    "id",
    "status",
    "network_id",
    "created_at",
    "updated_at",
    "revision_number",
    "tags",
    "tenant_id",
    "project_id",
    "binding:vif_type",
    "binding:vif_details",
];

/// Where each server's ports are bound (the host the servers API reports), for admins' documents.
pub(super) type Hosts = HashMap<Uuid, String>;

/// The hosts of all servers (admins only see binding hosts, so only they pay for the lookup).
fn hosts(state: &ApiState, caller: &Caller) -> Result<Hosts, ApiError> {
    if !caller.is_admin() {
        return Ok(Hosts::new());
    }
    Ok(state
        .compute
        .servers()
        .map_err(|e| ApiError::from_domain(&e))?
        .into_iter()
        .map(|s| (s.id, s.availability_zone))
        .collect())
}

fn pair_address(net: IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// Neutron's port document; `binding:host_id`, `binding:vif_type`, `binding:vif_details` and
/// `binding:profile` only for admins (Neutron's default policy).
pub(super) fn port_doc(p: &Port, hosts: Option<&Hosts>) -> Value {
    let mut doc = json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "network_id": p.network_id,
        "tenant_id": p.project_id,
        "project_id": p.project_id,
        "mac_address": p.mac,
        "admin_state_up": p.admin_state_up,
        "status": p.status.as_str(),
        "device_id": p.device_id,
        "device_owner": p.device_owner,
        "fixed_ips": p.fixed_ips.iter().map(|f| json!({
            "subnet_id": f.subnet_id, "ip_address": f.ip_address.to_string(),
        })).collect::<Vec<_>>(),
        "allowed_address_pairs": p.allowed_address_pairs.iter().map(|a| json!({
            "ip_address": pair_address(a.ip_address),
            "mac_address": a.mac_address.clone().unwrap_or_else(|| p.mac.clone()),
        })).collect::<Vec<_>>(),
        "security_groups": p.security_groups,
        "port_security_enabled": p.port_security_enabled,
        "binding:vnic_type": "normal",
        "created_at": crate::api::openstack_time(p.created_at),
        "updated_at": crate::api::openstack_time(p.updated_at),
        "revision_number": 0,
        "tags": [],
    });
    if let Some(hosts) = hosts {
        let host = p.server_id.and_then(|s| hosts.get(&s));
        doc["binding:host_id"] = json!(host.cloned().unwrap_or_default());
        doc["binding:vif_type"] = json!(if host.is_some() { "ovs" } else { "unbound" });
        doc["binding:vif_details"] = if host.is_some() {
            json!({ "port_filter": true, "connectivity": "l2" })
        } else {
            json!({})
        };
        doc["binding:profile"] = json!({});
    }
    doc
}

/// Loads a port the caller may see; others do not exist for it.
pub(super) fn visible(state: &ApiState, caller: &Caller, id: &str) -> Result<Port, ApiError> {
    let uuid = path_id(id, "PortNotFound", "Port")?;
    referenced(state, caller, uuid)
}

/// Looks up a port another request names; unknown and invisible both answer 404.
pub(super) fn referenced(state: &ApiState, caller: &Caller, id: Uuid) -> Result<Port, ApiError> {
    match state.network.port(id) {
        Ok(p) if caller.can_read_project(&p.project_id) => Ok(p),
        Ok(_) | Err(NetworkError::PortNotFound(_)) => {
            Err(missing("PortNotFound", "Port", &id.to_string()))
        }
        Err(other) => Err(neutron(other)),
    }
}

/// `GET /ports`.
pub(super) async fn list(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let hosts = hosts(&state, &caller)?;
        let admin = caller.is_admin();
        let docs = state
            .network
            .ports()
            .map_err(neutron)?
            .iter()
            .filter(|p| caller.can_read_project(&p.project_id))
            .map(|p| port_doc(p, admin.then_some(&hosts)))
            .collect();
        query
            .list(&state.public_base, "ports", "ports", docs)
            .map(Json)
    })
    .await
}

/// `GET /ports/{id}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let port = visible(&state, &caller, &id)?;
        let hosts = hosts(&state, &caller)?;
        let doc = port_doc(&port, caller.is_admin().then_some(&hosts));
        Ok(Json(one("port", doc, &query)))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixedIpBody {
    subnet_id: Option<Uuid>,
    ip_address: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PairBody {
    ip_address: String,
    mac_address: Option<String>,
}

fn pairs(body: Vec<PairBody>) -> Result<Vec<AddressPair>, ApiError> {
    body.into_iter()
        .map(|p| {
            let ip_address = p
                .ip_address
                .parse::<IpNet>()
                .or_else(|_| p.ip_address.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "Invalid input for allowed_address_pairs. Reason: '{}' is not a valid IP address or prefix.",
                        p.ip_address
                    ))
                })?;
            Ok(AddressPair {
                ip_address,
                mac_address: p.mac_address.map(|m| m.to_ascii_lowercase()),
            })
        })
        .collect()
}

/// Binding attributes a request may carry: only what this site does anyway.
fn check_binding(body: &Map<String, Value>, current_host: &str) -> Result<(), ApiError> {
    if let Some(vnic) = body.get("binding:vnic_type")
        && vnic != "normal"
    {
        return Err(ApiError::bad_request(
            "binding:vnic_type: only 'normal' ports exist at this site.",
        ));
    }
    if let Some(host) = body.get("binding:host_id")
        && host.as_str() != Some(current_host)
        && !host.is_null()
    {
        return Err(ApiError::bad_request(
            "binding:host_id: ports are bound by this site's compute service when a server uses them.",
        ));
    }
    if let Some(profile) = body.get("binding:profile")
        && !profile.is_null()
        && profile != &json!({})
    {
        return Err(ApiError::bad_request(
            "binding:profile is not supported at this site.",
        ));
    }
    Ok(())
}

fn reserved_owner(owner: &str) -> Result<(), ApiError> {
    if [
        OWNER_ROUTER_INTERFACE,
        OWNER_ROUTER_GATEWAY,
        OWNER_FLOATING_IP,
    ]
    .contains(&owner)
    {
        return Err(ApiError::bad_request(format!(
            "Invalid input for device_owner. Reason: {owner} ports are made through the router and floating IP APIs."
        )));
    }
    Ok(())
}

/// Checks that every group exists for the port's project; others' groups do not exist for it.
pub(super) fn own_groups(
    state: &ApiState,
    caller: &Caller,
    project: &str,
    groups: &[Uuid],
) -> Result<(), ApiError> {
    for id in groups {
        let group = state.network.security_group(*id);
        match group {
            Ok(g) if g.project_id == project || caller.is_admin() => {}
            Ok(_) | Err(NetworkError::SecurityGroupNotFound(_)) => {
                return Err(neutron(NetworkError::SecurityGroupNotFound(*id)));
            }
            Err(other) => return Err(neutron(other)),
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    network_id: Uuid,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    admin_state_up: Option<bool>,
    mac_address: Option<String>,
    fixed_ips: Option<Vec<FixedIpBody>>,
    security_groups: Option<Vec<Uuid>>,
    port_security_enabled: Option<bool>,
    #[serde(default)]
    allowed_address_pairs: Vec<PairBody>,
    #[serde(default)]
    device_owner: String,
    #[serde(default)]
    device_id: String,
}

/// `POST /ports`.
pub(super) async fn create(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = resource_body(body, "port", POST, READ_ONLY, "POST")?;
    let project = owner(&caller, &body, "create_port")?;
    check_binding(&body, "")?;
    let body: CreateBody = typed(body)?;
    reserved_owner(&body.device_owner)?;
    let request = NewPort {
        id: None,
        network_id: body.network_id,
        project_id: project,
        name: body.name,
        description: body.description,
        mac: body.mac_address,
        fixed_ips: body.fixed_ips.map(|ips| {
            ips.into_iter()
                .map(|f| FixedIpRequest {
                    subnet_id: f.subnet_id,
                    ip_address: f.ip_address,
                })
                .collect()
        }),
        security_groups: body.security_groups,
        port_security_enabled: body.port_security_enabled,
        allowed_address_pairs: pairs(body.allowed_address_pairs)?,
        device_owner: body.device_owner,
        device_id: body.device_id,
        admin_state_up: body.admin_state_up,
    };
    blocking(move || {
        let network = super::networks::referenced(&state, &caller, request.network_id)?;
        let owns_network = network.project_id == request.project_id || caller.is_admin();
        if !owns_network && !network.shared {
            return Err(super::forbidden("create_port"));
        }
        if !owns_network {
            let chooses_address = request
                .fixed_ips
                .as_ref()
                .is_some_and(|ips| ips.iter().any(|f| f.ip_address.is_some()));
            if chooses_address {
                return Err(super::forbidden("create_port:fixed_ips:ip_address"));
            }
            if request.mac.is_some() {
                return Err(super::forbidden("create_port:mac_address"));
            }
        }
        if let Some(groups) = &request.security_groups {
            own_groups(&state, &caller, &request.project_id, groups)?;
        }
        let port = state.network.create_port(request).map_err(neutron)?;
        let hosts = hosts(&state, &caller)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({ "port": port_doc(&port, caller.is_admin().then_some(&hosts)) })),
        ))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct UpdateBody {
    name: Option<String>,
    description: Option<String>,
    admin_state_up: Option<bool>,
    security_groups: Option<Vec<Uuid>>,
    port_security_enabled: Option<bool>,
    allowed_address_pairs: Option<Vec<PairBody>>,
    device_owner: Option<String>,
    device_id: Option<String>,
    fixed_ips: Option<Vec<FixedIpBody>>,
    mac_address: Option<String>,
}

/// `PUT /ports/{id}`.
pub(super) async fn update(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let body = resource_body(body, "port", PUT, READ_ONLY, "PUT")?;
    blocking(move || {
        let port = visible(&state, &caller, &id)?;
        check_write(&caller, &port.project_id, "update_port")?;
        let hosts = hosts(&state, &caller)?;
        let current_host = port
            .server_id
            .and_then(|s| hosts.get(&s))
            .cloned()
            .unwrap_or_default();
        check_binding(&body, &current_host)?;
        let body: UpdateBody = typed(body)?;
        if let Some(owner) = &body.device_owner {
            reserved_owner(owner)?;
        }
        if body.mac_address.is_some_and(|m| !m.eq_ignore_ascii_case(&port.mac)) {
            return Err(ApiError::bad_request(
                "Invalid input for operation: the MAC address of a port cannot be changed at this site.",
            )
            .kind("InvalidInput"));
        }
        if let Some(ips) = &body.fixed_ips {
            let same = ips.len() == port.fixed_ips.len()
                && ips.iter().all(|f| {
                    port.fixed_ips.iter().any(|have| {
                        f.ip_address.is_none_or(|ip| ip == have.ip_address)
                            && f.subnet_id.is_none_or(|s| s == have.subnet_id)
                    })
                });
            if !same {
                return Err(ApiError::bad_request(
                    "Invalid input for operation: the fixed IPs of a port cannot be changed at this site; create a new port.",
                )
                .kind("InvalidInput"));
            }
        }
        if let Some(groups) = &body.security_groups {
            own_groups(&state, &caller, &port.project_id, groups)?;
        }
        let update = PortUpdate {
            name: body.name,
            description: body.description,
            admin_state_up: body.admin_state_up,
            port_security_enabled: body.port_security_enabled,
            security_groups: body.security_groups,
            allowed_address_pairs: body.allowed_address_pairs.map(pairs).transpose()?,
            device_owner: body.device_owner,
            device_id: body.device_id,
        };
        let port = state.network.update_port(port.id, update).map_err(neutron)?;
        Ok(Json(
            json!({ "port": port_doc(&port, caller.is_admin().then_some(&hosts)) }),
        ))
    })
    .await
}

/// `DELETE /ports/{id}`.
pub(super) async fn delete(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let port = visible(&state, &caller, &id)?;
        check_write(&caller, &port.project_id, "delete_port")?;
        state.network.delete_port(port.id).map_err(neutron)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
