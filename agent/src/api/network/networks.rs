//! `/networks`: a project sees its own networks, shared ones and external ones; only admins make
//! networks shared or external, or choose their provider segment.

use super::{
    NeutronQuery, check_write, missing, neutron, one, owner, path_id, resource_body, typed,
};
use crate::api::ApiState;
use crate::api::auth::{Authenticated, blocking};
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::identity::policy::Caller;
use crate::network::NetworkError;
use crate::network::model::{Network, NetworkType};
use crate::network::service::{NetworkUpdate, NewNetwork, ProviderRequest};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

const POST: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "shared",
    "router:external",
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
    "mtu",
    "port_security_enabled",
    "tenant_id",
    "project_id",
    "availability_zone_hints",
];
const PUT: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "shared",
    "router:external",
    "port_security_enabled",
    "mtu",
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
];
const READ_ONLY: &[&str] = &[
    "id",
    "status",
    "subnets",
    "availability_zones",
    "created_at",
    "updated_at",
    "revision_number",
    "tags",
    "is_default",
    "l2_adjacency",
    "ipv4_address_scope",
    "ipv6_address_scope",
    "tenant_id",
    "project_id",
];

/// Neutron's network document; provider attributes only for admins (Neutron's default policy).
pub(super) fn network_doc(n: &Network, admin: bool) -> Value {
    let mut doc = json!({
        "id": n.id,
        "name": n.name,
        "description": n.description,
        "tenant_id": n.project_id,
        "project_id": n.project_id,
        "status": "ACTIVE",
        "admin_state_up": n.admin_state_up,
        "shared": n.shared,
        "router:external": n.external,
        "subnets": n.subnets,
        "mtu": n.mtu,
        "port_security_enabled": n.port_security_enabled,
        "availability_zones": [],
        "availability_zone_hints": [],
        "created_at": crate::api::openstack_time(n.created_at),
        "updated_at": crate::api::openstack_time(n.updated_at),
        "revision_number": 0,
        "tags": [],
        "is_default": false,
        "l2_adjacency": true,
        "ipv4_address_scope": null,
        "ipv6_address_scope": null,
    });
    if admin {
        doc["provider:network_type"] = json!(n.network_type.as_str());
        doc["provider:physical_network"] = json!(n.physical_network);
        doc["provider:segmentation_id"] = json!(n.segmentation_id);
    }
    doc
}

/// Whether the caller sees the network: its project's, shared, or external.
pub(super) fn network_visible(caller: &Caller, n: &Network) -> bool {
    n.shared || n.external || caller.can_read_project(&n.project_id)
}

/// Loads a network the caller may see; others do not exist for it.
pub(super) fn visible(state: &ApiState, caller: &Caller, id: &str) -> Result<Network, ApiError> {
    let uuid = path_id(id, "NetworkNotFound", "Network")?;
    let network = state.network.network(uuid).map_err(neutron)?;
    if !network_visible(caller, &network) {
        return Err(neutron(NetworkError::NetworkNotFound(uuid)));
    }
    Ok(network)
}

/// `GET /networks`.
pub(super) async fn list(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let admin = caller.is_admin();
        let docs = state
            .network
            .networks()
            .map_err(neutron)?
            .iter()
            .filter(|n| network_visible(&caller, n))
            .map(|n| network_doc(n, admin))
            .collect();
        query
            .list(&state.public_base, "networks", "networks", docs)
            .map(Json)
    })
    .await
}

/// `GET /networks/{id}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let network = visible(&state, &caller, &id)?;
        Ok(Json(one(
            "network",
            network_doc(&network, caller.is_admin()),
            &query,
        )))
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
    #[serde(default)]
    shared: bool,
    #[serde(rename = "router:external", default)]
    external: bool,
    #[serde(rename = "provider:network_type")]
    network_type: Option<String>,
    #[serde(rename = "provider:physical_network")]
    physical_network: Option<String>,
    #[serde(rename = "provider:segmentation_id")]
    segmentation_id: Option<u16>,
    mtu: Option<u32>,
    port_security_enabled: Option<bool>,
    availability_zone_hints: Option<Vec<String>>,
}

/// `POST /networks`.
pub(super) async fn create(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = resource_body(body, "network", POST, READ_ONLY, "POST")?;
    let project = owner(&caller, &body, "create_network")?;
    let body: CreateBody = typed(body)?;
    let provider_given = body.network_type.is_some()
        || body.physical_network.is_some()
        || body.segmentation_id.is_some();
    if !caller.is_admin() {
        for (set, attribute) in [
            (body.shared, "shared"),
            (body.external, "router:external"),
            (provider_given, "provider:network_type"),
        ] {
            if set {
                return Err(super::forbidden(&format!("create_network:{attribute}")));
            }
        }
    }
    if body
        .availability_zone_hints
        .as_ref()
        .is_some_and(|h| !h.is_empty())
    {
        return Err(ApiError::bad_request(
            "availability_zone_hints: this site has one availability zone; give none",
        ));
    }
    let provider = if provider_given {
        let text = body.network_type.as_deref().unwrap_or("flat");
        let network_type = NetworkType::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid input for operation: provider:network_type {text} is not supported (geneve, flat, vlan)."
            ))
            .kind("InvalidInput")
        })?;
        Some(ProviderRequest {
            network_type,
            physical_network: body.physical_network,
            segmentation_id: body.segmentation_id,
        })
    } else {
        None
    };
    let request = NewNetwork {
        id: None,
        name: body.name,
        description: body.description,
        project_id: project,
        admin_state_up: body.admin_state_up,
        shared: body.shared,
        external: body.external,
        provider,
        mtu: body.mtu,
        port_security_enabled: body.port_security_enabled,
    };
    blocking(move || {
        let network = state.network.create_network(request).map_err(neutron)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({ "network": network_doc(&network, caller.is_admin()) })),
        ))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct UpdateBody {
    name: Option<String>,
    description: Option<String>,
    admin_state_up: Option<bool>,
    shared: Option<bool>,
    #[serde(rename = "router:external")]
    external: Option<bool>,
    port_security_enabled: Option<bool>,
    mtu: Option<u32>,
    #[serde(rename = "provider:network_type")]
    network_type: Option<String>,
    #[serde(rename = "provider:physical_network")]
    physical_network: Option<String>,
    #[serde(rename = "provider:segmentation_id")]
    segmentation_id: Option<u16>,
}

/// `PUT /networks/{id}`.
pub(super) async fn update(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let body: UpdateBody = typed(resource_body(body, "network", PUT, READ_ONLY, "PUT")?)?;
    blocking(move || {
        let network = visible(&state, &caller, &id)?;
        check_write(&caller, &network.project_id, "update_network")?;
        let admin = caller.is_admin();
        if !admin {
            for (requested, current, attribute) in [
                (body.shared, network.shared, "shared"),
                (body.external, network.external, "router:external"),
            ] {
                if requested.is_some_and(|r| r != current) {
                    return Err(super::forbidden(&format!("update_network:{attribute}")));
                }
            }
        }
        if body.network_type.is_some()
            || body.physical_network.is_some()
            || body.segmentation_id.is_some()
        {
            return Err(ApiError::bad_request(
                "Invalid input for operation: Plugin does not support updating provider attributes.",
            )
            .kind("InvalidInput"));
        }
        if body.mtu.is_some_and(|m| m != network.mtu) {
            return Err(ApiError::bad_request(
                "Invalid input for operation: the MTU of a network cannot be changed at this site.",
            )
            .kind("InvalidInput"));
        }
        let update = NetworkUpdate {
            name: body.name,
            description: body.description,
            admin_state_up: body.admin_state_up,
            shared: body.shared,
            external: body.external,
            port_security_enabled: body.port_security_enabled,
        };
        let network = state
            .network
            .update_network(network.id, update)
            .map_err(neutron)?;
        Ok(Json(json!({ "network": network_doc(&network, admin) })))
    })
    .await
}

/// `DELETE /networks/{id}`.
pub(super) async fn delete(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let network = visible(&state, &caller, &id)?;
        check_write(&caller, &network.project_id, "delete_network")?;
        state.network.delete_network(network.id).map_err(neutron)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Looks a network up by id for another resource's request (a subnet's, a port's): unknown and
/// invisible both answer 404 `NetworkNotFound`.
pub(super) fn referenced(state: &ApiState, caller: &Caller, id: Uuid) -> Result<Network, ApiError> {
    match state.network.network(id) {
        Ok(n) if network_visible(caller, &n) => Ok(n),
        Ok(_) | Err(NetworkError::NetworkNotFound(_)) => {
            Err(missing("NetworkNotFound", "Network", &id.to_string()))
        }
        Err(other) => Err(neutron(other)),
    }
}
