//! `/subnets`: visible with their network (so a project sees the subnets of shared and external
//! networks); made and changed by the network's project only. Subnet pools do not exist here, so a
//! subnet always names its CIDR.

use super::networks::network_visible;
use super::{
    NeutronQuery, Nullable, check_write, neutron, one, owner, path_id, resource_body, typed,
};
use crate::api::ApiState;
use crate::api::auth::{Authenticated, blocking};
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::identity::policy::Caller;
use crate::network::NetworkError;
use crate::network::model::{AllocationPool, Ipv6Mode, Route, Subnet};
use crate::network::service::{GatewayRequest, NewSubnet, SubnetUpdate};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::IpAddr;
use uuid::Uuid;

const POST: &[&str] = &[
    "name",
    "description",
    "network_id",
    "ip_version",
    "cidr",
    "gateway_ip",
    "allocation_pools",
    "dns_nameservers",
    "host_routes",
    "enable_dhcp",
    "ipv6_ra_mode",
    "ipv6_address_mode",
    "subnetpool_id",
    "use_default_subnetpool",
    "prefixlen",
    "service_types",
    "segment_id",
    "tenant_id",
    "project_id",
];
const PUT: &[&str] = &[
    "name",
    "description",
    "dns_nameservers",
    "host_routes",
    "enable_dhcp",
    "gateway_ip",
    "allocation_pools",
    "service_types",
];
const READ_ONLY: &[&str] = &[
    "id",
    "network_id",
    "ip_version",
    "cidr",
    "ipv6_ra_mode",
    "ipv6_address_mode",
    "subnetpool_id",
    "created_at",
    "updated_at",
    "revision_number",
    "tags",
    "tenant_id",
    "project_id",
    "segment_id",
];

/// Neutron's subnet document.
pub(super) fn subnet_doc(s: &Subnet) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "tenant_id": s.project_id,
        "project_id": s.project_id,
        "network_id": s.network_id,
        "ip_version": s.ip_version,
        "cidr": s.cidr.to_string(),
        "gateway_ip": s.gateway_ip.map(|g| g.to_string()),
        "allocation_pools": s.allocation_pools.iter().map(|p| json!({
            "start": p.start.to_string(), "end": p.end.to_string(),
        })).collect::<Vec<_>>(),
        "dns_nameservers": s.dns_nameservers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "host_routes": s.host_routes.iter().map(|r| json!({
            "destination": r.destination.to_string(), "nexthop": r.nexthop.to_string(),
        })).collect::<Vec<_>>(),
        "enable_dhcp": s.enable_dhcp,
        "ipv6_ra_mode": s.ipv6_ra_mode.map(Ipv6Mode::as_str),
        "ipv6_address_mode": s.ipv6_address_mode.map(Ipv6Mode::as_str),
        "subnetpool_id": null,
        "segment_id": null,
        "service_types": [],
        "created_at": crate::api::openstack_time(s.created_at),
        "updated_at": crate::api::openstack_time(s.updated_at),
        "revision_number": 0,
        "tags": [],
    })
}

/// Loads a subnet the caller may see (it sees the subnet's network); others do not exist for it.
pub(super) fn visible(state: &ApiState, caller: &Caller, id: &str) -> Result<Subnet, ApiError> {
    let uuid = path_id(id, "SubnetNotFound", "Subnet")?;
    referenced(state, caller, uuid)
}

/// Looks up a subnet another request names; unknown and invisible both answer 404.
pub(super) fn referenced(state: &ApiState, caller: &Caller, id: Uuid) -> Result<Subnet, ApiError> {
    let not_found = || neutron(NetworkError::SubnetNotFound(id));
    let subnet = state.network.subnet(id).map_err(neutron)?;
    let network = state.network.network(subnet.network_id).map_err(neutron)?;
    if caller.can_read_project(&subnet.project_id) || network_visible(caller, &network) {
        Ok(subnet)
    } else {
        Err(not_found())
    }
}

/// `GET /subnets`.
pub(super) async fn list(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let visible_networks: HashMap<Uuid, bool> = state
            .network
            .networks()
            .map_err(neutron)?
            .iter()
            .map(|n| (n.id, network_visible(&caller, n)))
            .collect();
        let docs = state
            .network
            .subnets()
            .map_err(neutron)?
            .iter()
            .filter(|s| {
                caller.can_read_project(&s.project_id)
                    || visible_networks.get(&s.network_id) == Some(&true)
            })
            .map(subnet_doc)
            .collect();
        query
            .list(&state.public_base, "subnets", "subnets", docs)
            .map(Json)
    })
    .await
}

/// `GET /subnets/{id}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let subnet = visible(&state, &caller, &id)?;
        Ok(Json(one("subnet", subnet_doc(&subnet), &query)))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct RouteBody {
    destination: ipnet::IpNet,
    nexthop: IpAddr,
}

impl From<RouteBody> for Route {
    fn from(r: RouteBody) -> Self {
        Self {
            destination: r.destination,
            nexthop: r.nexthop,
        }
    }
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    network_id: Uuid,
    ip_version: u8,
    cidr: Option<String>,
    #[serde(default)]
    gateway_ip: Nullable<IpAddr>,
    allocation_pools: Option<Vec<AllocationPool>>,
    #[serde(default)]
    dns_nameservers: Vec<IpAddr>,
    #[serde(default)]
    host_routes: Vec<RouteBody>,
    enable_dhcp: Option<bool>,
    ipv6_ra_mode: Option<String>,
    ipv6_address_mode: Option<String>,
    subnetpool_id: Option<String>,
    use_default_subnetpool: Option<bool>,
    prefixlen: Option<Value>,
    service_types: Option<Vec<String>>,
    segment_id: Option<String>,
}

fn ipv6_mode(field: &str, text: Option<&str>) -> Result<Option<Ipv6Mode>, ApiError> {
    text.map(|t| {
        Ipv6Mode::parse(t).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid input for {field}. Reason: '{t}' is not in ['dhcpv6-stateful', 'dhcpv6-stateless', 'slaac']."
            ))
        })
    })
    .transpose()
}

/// `POST /subnets`.
pub(super) async fn create(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = resource_body(body, "subnet", POST, READ_ONLY, "POST")?;
    let project = owner(&caller, &body, "create_subnet")?;
    let body: CreateBody = typed(body)?;
    if body.subnetpool_id.is_some()
        || body.use_default_subnetpool == Some(true)
        || body.prefixlen.is_some()
    {
        return Err(ApiError::bad_request(
            "Subnet pools are not supported at this site: give the subnet's cidr.",
        ));
    }
    if body.segment_id.is_some() || body.service_types.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::bad_request(
            "segment_id and service_types are not supported at this site.",
        ));
    }
    let cidr = body.cidr.ok_or_else(|| {
        ApiError::bad_request(
            "Bad subnets request: a cidr must be specified in the absence of a subnet pool",
        )
    })?;
    let request = NewSubnet {
        id: None,
        network_id: body.network_id,
        name: body.name,
        description: body.description,
        project_id: project,
        ip_version: body.ip_version,
        cidr,
        gateway: match body.gateway_ip {
            Nullable::Absent => GatewayRequest::Default,
            Nullable::Null => GatewayRequest::Disabled,
            Nullable::Set(ip) => GatewayRequest::Address(ip),
        },
        allocation_pools: body.allocation_pools,
        dns_nameservers: body.dns_nameservers,
        host_routes: body.host_routes.into_iter().map(Route::from).collect(),
        enable_dhcp: body.enable_dhcp,
        ipv6_address_mode: ipv6_mode("ipv6_address_mode", body.ipv6_address_mode.as_deref())?,
        ipv6_ra_mode: ipv6_mode("ipv6_ra_mode", body.ipv6_ra_mode.as_deref())?,
    };
    blocking(move || {
        let network = super::networks::referenced(&state, &caller, request.network_id)?;
        // Only the network's project (or an admin) adds subnets, shared network or not.
        if network.project_id != request.project_id && !caller.is_admin() {
            return Err(super::forbidden("create_subnet"));
        }
        let subnet = state.network.create_subnet(request).map_err(neutron)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({ "subnet": subnet_doc(&subnet) })),
        ))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct UpdateBody {
    name: Option<String>,
    description: Option<String>,
    dns_nameservers: Option<Vec<IpAddr>>,
    host_routes: Option<Vec<RouteBody>>,
    enable_dhcp: Option<bool>,
    #[serde(default)]
    gateway_ip: Nullable<IpAddr>,
    allocation_pools: Option<Vec<AllocationPool>>,
    service_types: Option<Vec<String>>,
}

/// `PUT /subnets/{id}`.
pub(super) async fn update(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let body: UpdateBody = typed(resource_body(body, "subnet", PUT, READ_ONLY, "PUT")?)?;
    blocking(move || {
        let subnet = visible(&state, &caller, &id)?;
        check_write(&caller, &subnet.project_id, "update_subnet")?;
        let unchanged_gateway = match body.gateway_ip {
            Nullable::Absent => true,
            Nullable::Null => subnet.gateway_ip.is_none(),
            Nullable::Set(ip) => subnet.gateway_ip == Some(ip),
        };
        let unchanged_pools = body
            .allocation_pools
            .as_ref()
            .is_none_or(|p| *p == subnet.allocation_pools);
        if !unchanged_gateway || !unchanged_pools {
            return Err(ApiError::bad_request(
                "Invalid input for operation: gateway_ip and allocation_pools cannot be changed at this site.",
            )
            .kind("InvalidInput"));
        }
        if body.service_types.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::bad_request(
                "service_types are not supported at this site.",
            ));
        }
        let update = SubnetUpdate {
            name: body.name,
            description: body.description,
            dns_nameservers: body.dns_nameservers,
            host_routes: body
                .host_routes
                .map(|r| r.into_iter().map(Route::from).collect()),
            enable_dhcp: body.enable_dhcp,
        };
        let subnet = state
            .network
            .update_subnet(subnet.id, update)
            .map_err(neutron)?;
        Ok(Json(json!({ "subnet": subnet_doc(&subnet) })))
    })
    .await
}

/// `DELETE /subnets/{id}`.
pub(super) async fn delete(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let subnet = visible(&state, &caller, &id)?;
        check_write(&caller, &subnet.project_id, "delete_subnet")?;
        state.network.delete_subnet(subnet.id).map_err(neutron)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
