//! `/servers`: create, list, show, delete, and the actions start, stop, reboot and console output.
//!
//! A server of another project is answered 404 (its existence is not the caller's business); a
//! reader of the right project reads but may not change it (403). Addresses and security groups
//! come from the network domain, so a server document shows what Neutron shows for its ports.

use super::flavors::flavor_detail;
use super::{Page, links};
use crate::api::ApiState;
use crate::api::auth::{Authenticated, blocking};
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::api::microversion::Microversion;
use crate::compute::server::{NetworkRequest, NewServer, RebootKind, Server, ServerStatus};
use crate::identity::policy::Caller;
use crate::network::model::{FloatingIp, Network, Port, SecurityGroup};
use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// What the network domain knows about servers' ports, fetched once per request.
struct NetworkView {
    networks: HashMap<Uuid, Network>,
    ports_by_server: HashMap<Uuid, Vec<Port>>,
    floating_by_port: HashMap<Uuid, Vec<FloatingIp>>,
    groups: HashMap<Uuid, SecurityGroup>,
}

impl NetworkView {
    fn load(state: &ApiState) -> Result<Self, ApiError> {
        let network = &state.network;
        let err = |e: crate::network::NetworkError| ApiError::from_domain(&e);
        let networks = network
            .networks()
            .map_err(err)?
            .into_iter()
            .map(|n| (n.id, n))
            .collect();
        let mut ports_by_server: HashMap<Uuid, Vec<Port>> = HashMap::new();
        for port in network.ports().map_err(err)? {
            if let Some(server) = port.server_id {
                ports_by_server.entry(server).or_default().push(port);
            }
        }
        let mut floating_by_port: HashMap<Uuid, Vec<FloatingIp>> = HashMap::new();
        for fip in network.floating_ips().map_err(err)? {
            if let Some(port) = fip.port_id {
                floating_by_port.entry(port).or_default().push(fip);
            }
        }
        let groups = network
            .security_groups()
            .map_err(err)?
            .into_iter()
            .map(|g| (g.id, g))
            .collect();
        Ok(Self {
            networks,
            ports_by_server,
            floating_by_port,
            groups,
        })
    }

    fn addresses(&self, server: &Server) -> Value {
        let mut addresses: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut ports: Vec<&Port> = self
            .ports_by_server
            .get(&server.id)
            .map(|p| p.iter().collect())
            .unwrap_or_default();
        ports.sort_by_key(|p| {
            server
                .nics
                .iter()
                .position(|n| n.port_id == p.id)
                .unwrap_or(usize::MAX)
        });
        for port in ports {
            let Some(network) = port.network_id.and_then(|id| self.networks.get(&id)) else {
                continue;
            };
            let entry = addresses.entry(network.name.clone()).or_default();
            for ip in &port.fixed_ips {
                entry.push(json!({
                    "version": if ip.ip_address.is_ipv4() { 4 } else { 6 },
                    "addr": ip.ip_address.to_string(),
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": port.mac,
                }));
            }
            for fip in self.floating_by_port.get(&port.id).into_iter().flatten() {
                entry.push(json!({
                    "version": if fip.floating_ip_address.is_ipv4() { 4 } else { 6 },
                    "addr": fip.floating_ip_address.to_string(),
                    "OS-EXT-IPS:type": "floating",
                    "OS-EXT-IPS-MAC:mac_addr": port.mac,
                }));
            }
        }
        json!(addresses)
    }

    fn security_groups(&self, server: &Server) -> Vec<Value> {
        let mut names: Vec<&str> = self
            .ports_by_server
            .get(&server.id)
            .into_iter()
            .flatten()
            .flat_map(|p| p.security_groups.iter())
            .filter_map(|id| self.groups.get(id).map(|g| g.name.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|name| json!({ "name": name }))
            .collect()
    }
}

fn vm_state(server: &Server) -> &'static str {
    match server.status {
        ServerStatus::Build => "building",
        ServerStatus::Active | ServerStatus::Reboot | ServerStatus::HardReboot => "active",
        ServerStatus::Shutoff => "stopped",
        ServerStatus::Paused => "paused",
        ServerStatus::Error => "error",
    }
}

fn server_detail(
    base: &str,
    server: &Server,
    view: &NetworkView,
    version: Microversion,
    admin: bool,
) -> Value {
    let id = server.id.to_string();
    let flavor = if version.at_least(47) {
        let full = flavor_detail(base, &server.flavor, Microversion::MAX);
        json!({
            "vcpus": full["vcpus"], "ram": full["ram"], "disk": full["disk"],
            "ephemeral": full["OS-FLV-EXT-DATA:ephemeral"], "swap": server.flavor.swap_mb,
            "original_name": server.flavor.name, "extra_specs": server.flavor.extra_specs,
        })
    } else {
        json!({ "id": server.flavor.id, "links": [{ "rel": "bookmark", "href": format!("{base}/compute/flavors/{}", server.flavor.id) }] })
    };
    let mut doc = json!({
        "id": id,
        "name": server.name,
        "status": server.status.as_str(),
        "tenant_id": server.project_id,
        "user_id": server.user_id,
        "metadata": server.metadata,
        "hostId": host_id(&server.project_id),
        "image": { "id": server.image_id, "links": [{ "rel": "bookmark", "href": format!("{base}/compute/images/{}", server.image_id) }] },
        "flavor": flavor,
        "created": crate::api::openstack_time(server.created_at),
        "updated": crate::api::openstack_time(server.updated_at),
        "addresses": view.addresses(server),
        "accessIPv4": "",
        "accessIPv6": "",
        "links": links(base, "servers", &id),
        "OS-DCF:diskConfig": "MANUAL",
        "progress": 0,
        "OS-EXT-AZ:availability_zone": server.availability_zone,
        "config_drive": "True",
        "key_name": server.key_name,
        "OS-SRV-USG:launched_at": server.launched_at.map(|t| t.strftime("%Y-%m-%dT%H:%M:%S.000000").to_string()),
        "OS-SRV-USG:terminated_at": null,
        "OS-EXT-STS:task_state": if server.deleting { Some("deleting") } else { server.task_state() },
        "OS-EXT-STS:vm_state": vm_state(server),
        "OS-EXT-STS:power_state": server.power_state.code(),
        "os-extended-volumes:volumes_attached": [],
        "security_groups": view.security_groups(server),
    });
    if let Some(fault) = &server.fault {
        doc["fault"] = json!({ "code": fault.code, "message": fault.message, "created": crate::api::openstack_time(fault.created) });
    }
    if version.at_least(9) {
        doc["locked"] = json!(false);
    }
    if version.at_least(19) {
        doc["description"] = Value::Null;
    }
    if version.at_least(26) {
        doc["tags"] = json!([]);
    }
    if admin {
        doc["OS-EXT-SRV-ATTR:host"] = json!(server.availability_zone);
        doc["OS-EXT-SRV-ATTR:instance_name"] = json!(format!("scs-{id}"));
        doc["OS-EXT-SRV-ATTR:hypervisor_hostname"] = json!(server.availability_zone);
    }
    doc
}

/// Nova's `hostId`: a per-project hash of the host, so tenants can tell co-location apart without
/// learning host names.
fn host_id(project: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha224::digest(format!("{project}scs-edge-node").as_bytes());
    digest.iter().fold(String::with_capacity(56), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Loads a server the caller may see; others' servers do not exist for it.
fn visible(state: &ApiState, caller: &Caller, id: &str) -> Result<Server, ApiError> {
    let not_found = || ApiError::not_found(format!("Instance {id} could not be found."));
    let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
    let server = state.compute.server(uuid).map_err(|err| match err {
        crate::compute::ComputeError::ServerNotFound(_) => not_found(),
        other => ApiError::domain(other),
    })?;
    if !caller.can_read_project(&server.project_id) {
        return Err(not_found());
    }
    Ok(server)
}

/// Loads a server the caller may change.
fn writable(state: &ApiState, caller: &Caller, id: &str, action: &str) -> Result<Server, ApiError> {
    let server = visible(state, caller, id)?;
    if !caller.can_write_project(&server.project_id) {
        return Err(ApiError::forbidden(format!(
            "Policy doesn't allow os_compute_api:servers:{action} to be performed."
        )));
    }
    Ok(server)
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ServerQuery {
    name: Option<String>,
    status: Option<String>,
    image: Option<String>,
    flavor: Option<String>,
    all_tenants: Option<String>,
    project_id: Option<String>,
    tenant_id: Option<String>,
    #[serde(rename = "changes-since")]
    changes_since: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
    limit: Option<String>,
    marker: Option<String>,
    #[serde(flatten)]
    _rest: BTreeMap<String, String>,
}

fn truthy(value: Option<&String>) -> bool {
    value.is_some_and(|v| {
        v.is_empty()
            || matches!(
                v.to_ascii_lowercase().as_str(),
                "1" | "true" | "t" | "yes" | "y" | "on"
            )
    })
}

fn select(
    servers: Vec<Server>,
    query: &ServerQuery,
    caller: &Caller,
) -> Result<Vec<Server>, ApiError> {
    let all = caller.is_admin() && truthy(query.all_tenants.as_ref());
    let project = query
        .project_id
        .as_ref()
        .or(query.tenant_id.as_ref())
        .filter(|_| caller.is_admin());
    let own = caller.project_id();
    if !all && project.is_none() && own.is_none() {
        return Err(ApiError::forbidden(
            "Listing servers needs a project-scoped token.",
        ));
    }
    let status = query.status.as_deref().map(str::to_ascii_uppercase);
    if let Some(status) = &status
        && ServerStatus::parse(status).is_none()
        && status != "DELETED"
    {
        return Err(ApiError::bad_request(format!(
            "Invalid status value: {status}"
        )));
    }
    let changes_since = match &query.changes_since {
        None => None,
        Some(text) => Some(text.parse::<jiff::Timestamp>().map_err(|_| {
            ApiError::bad_request(format!(
                "Invalid input for query parameters changes-since. Value: {text}."
            ))
        })?),
    };
    let mut servers: Vec<Server> = servers
        .into_iter()
        .filter(|s| match (all, project) {
            (_, Some(p)) => &s.project_id == p,
            (true, None) => true,
            (false, None) => Some(s.project_id.as_str()) == own,
        })
        .filter(|s| {
            query
                .name
                .as_ref()
                .is_none_or(|n| s.name.contains(n.as_str()))
        })
        .filter(|s| status.as_ref().is_none_or(|st| s.status.as_str() == st))
        .filter(|s| {
            query
                .image
                .as_ref()
                .is_none_or(|i| s.image_id.to_string() == *i)
        })
        .filter(|s| query.flavor.as_ref().is_none_or(|f| s.flavor.id == *f))
        .filter(|s| changes_since.is_none_or(|t| s.updated_at >= t))
        .collect();
    match query.sort_key.as_deref().unwrap_or("created_at") {
        "created_at" => {
            servers.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        }
        "updated_at" => {
            servers.sort_by(|a, b| a.updated_at.cmp(&b.updated_at).then(a.id.cmp(&b.id)));
        }
        "display_name" | "name" => {
            servers.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        }
        "uuid" | "id" => servers.sort_by_key(|s| s.id),
        other => return Err(ApiError::bad_request(format!("Invalid sort_key [{other}]"))),
    }
    match query.sort_dir.as_deref().unwrap_or("desc") {
        "desc" => servers.reverse(),
        "asc" => {}
        other => return Err(ApiError::bad_request(format!("Invalid sort_dir [{other}]"))),
    }
    Page {
        limit: query.limit.clone(),
        marker: query.marker.clone(),
    }
    .apply(servers, |s| s.id.to_string())
}

/// `GET /servers`.
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Authenticated,
    Query(query): Query<ServerQuery>,
) -> Result<Json<Value>, ApiError> {
    let base = state.public_base.clone();
    let servers = blocking(move || {
        select(
            state.compute.servers().map_err(ApiError::domain)?,
            &query,
            &caller.0,
        )
    })
    .await?;
    let docs: Vec<Value> = servers
        .iter()
        .map(|s| json!({ "id": s.id, "name": s.name, "links": links(&base, "servers", &s.id.to_string()) }))
        .collect();
    Ok(Json(json!({ "servers": docs })))
}

/// `GET /servers/detail`.
pub(super) async fn list_detail(
    State(state): State<ApiState>,
    Extension(version): Extension<Microversion>,
    caller: Authenticated,
    Query(query): Query<ServerQuery>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let admin = caller.0.is_admin();
        let servers = select(
            state.compute.servers().map_err(ApiError::domain)?,
            &query,
            &caller.0,
        )?;
        let view = NetworkView::load(&state)?;
        let docs: Vec<Value> = servers
            .iter()
            .map(|s| server_detail(&state.public_base, s, &view, version, admin))
            .collect();
        Ok(Json(json!({ "servers": docs })))
    })
    .await
}

/// `GET /servers/{id}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    Extension(version): Extension<Microversion>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let server = visible(&state, &caller.0, &id)?;
        let view = NetworkView::load(&state)?;
        Ok(Json(json!({ "server": server_detail(&state.public_base, &server, &view, version, caller.0.is_admin()) })))
    })
    .await
}

/// `DELETE /servers/{id}`.
pub(super) async fn delete(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    blocking(move || {
        let server = writable(&state, &caller.0, &id, "delete")?;
        state
            .compute
            .delete_server(server.id)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The `networks` of a create request: a keyword or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Networks {
    Keyword(String),
    List(Vec<NetworkEntry>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkEntry {
    uuid: Option<String>,
    port: Option<String>,
    fixed_ip: Option<String>,
    tag: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupName {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateServer {
    server: ServerBody,
    #[serde(rename = "os:scheduler_hints", default)]
    _hints: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerBody {
    name: String,
    #[serde(rename = "imageRef")]
    image_ref: Option<String>,
    #[serde(rename = "flavorRef")]
    flavor_ref: String,
    networks: Option<Networks>,
    key_name: Option<String>,
    user_data: Option<String>,
    security_groups: Option<Vec<GroupName>>,
    metadata: Option<BTreeMap<String, String>>,
    availability_zone: Option<String>,
    min_count: Option<Value>,
    max_count: Option<Value>,
    return_reservation_id: Option<Value>,
    config_drive: Option<Value>,
    description: Option<String>,
    #[serde(rename = "OS-DCF:diskConfig")]
    disk_config: Option<String>,
    #[serde(rename = "adminPass")]
    admin_pass: Option<String>,
    #[serde(rename = "accessIPv4")]
    access_ipv4: Option<String>,
    #[serde(rename = "accessIPv6")]
    access_ipv6: Option<String>,
    block_device_mapping_v2: Option<Vec<BlockDevice>>,
}

/// A `block_device_mapping_v2` entry. Only the mapping clients send for booting from an image onto
/// local disk is accepted; volumes arrive with block storage.
#[derive(Debug, Deserialize)]
struct BlockDevice {
    boot_index: Option<Value>,
    uuid: Option<String>,
    source_type: Option<String>,
    destination_type: Option<String>,
    #[serde(flatten)]
    _rest: BTreeMap<String, Value>,
}

/// The image a create request boots: `imageRef`, or the image of a local boot mapping.
fn boot_image(image_ref: Option<&str>, mappings: Option<&[BlockDevice]>) -> Result<Uuid, ApiError> {
    let mut from_mapping = None;
    for device in mappings.unwrap_or_default() {
        let boot = matches!(&device.boot_index, Some(Value::Number(n)) if n.as_i64() == Some(0))
            || matches!(&device.boot_index, Some(Value::String(s)) if s == "0");
        let local_image = device.source_type.as_deref() == Some("image")
            && device
                .destination_type
                .as_deref()
                .is_none_or(|d| d == "local");
        if !(boot && local_image) {
            return Err(ApiError::bad_request(
                "Block Device Mapping is Invalid: only booting an image onto the local disk is offered here (no block storage yet).",
            ));
        }
        from_mapping.clone_from(&device.uuid);
    }
    let text = image_ref
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .or(from_mapping)
        .ok_or_else(|| ApiError::bad_request("Block Device Mapping is Invalid: this site boots servers from images; imageRef is required."))?;
    Uuid::parse_str(reference(&text))
        .map_err(|_| ApiError::bad_request(format!("Invalid imageRef provided: {text}")))
}

/// The last path segment of a reference that may be a URL (clients send either).
fn reference(text: &str) -> &str {
    text.rsplit('/').next().unwrap_or(text)
}

fn count_is_one(field: &str, value: Option<&Value>) -> Result<(), ApiError> {
    let one = match value {
        None => true,
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        Some(Value::String(s)) => s == "1",
        Some(_) => false,
    };
    if one {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field}: this site creates one server per request"
        )))
    }
}

/// Resolves `networks` into NIC requests for the caller's project.
fn network_requests(
    state: &ApiState,
    project: &str,
    networks: Option<Networks>,
    version: Microversion,
) -> Result<Vec<NetworkRequest>, ApiError> {
    let auto = |required: bool| -> Result<Vec<NetworkRequest>, ApiError> {
        let candidates: Vec<Network> = state
            .network
            .networks()
            .map_err(ApiError::domain)?
            .into_iter()
            .filter(|n| !n.external && (n.project_id == project || n.shared))
            .collect();
        match candidates.as_slice() {
            [one] => Ok(vec![NetworkRequest::Network(one.id)]),
            [] if !required => Ok(Vec::new()),
            [] => Err(ApiError::bad_request(format!(
                "Unable to automatically allocate a network for project {project}: it has no network."
            ))),
            _ => Err(ApiError::conflict(
                "Multiple possible networks found, use a Network ID to be more specific.",
            )),
        }
    };
    match networks {
        None if version.at_least(37) => Err(ApiError::bad_request("Invalid input for field/attribute server. 'networks' is a required property")),
        None => auto(false),
        Some(Networks::Keyword(word)) if version.at_least(37) && word == "auto" => auto(true),
        Some(Networks::Keyword(word)) if version.at_least(37) && word == "none" => Ok(Vec::new()),
        Some(Networks::Keyword(word)) => Err(ApiError::bad_request(format!("Invalid input for field/attribute networks. Value: {word}."))),
        Some(Networks::List(entries)) => entries
            .into_iter()
            .map(|entry| {
                if entry.fixed_ip.is_some() {
                    return Err(ApiError::bad_request("fixed_ip in networks is not supported here; create a port with the address and pass it"));
                }
                let _ = entry.tag;
                let parse = |text: &str| {
                    Uuid::parse_str(text).map_err(|_| ApiError::bad_request(format!("Bad networks format: {text} is not a UUID")))
                };
                match (entry.port, entry.uuid) {
                    (Some(port), _) => Ok(NetworkRequest::Port(parse(&port)?)),
                    (None, Some(net)) => Ok(NetworkRequest::Network(parse(&net)?)),
                    (None, None) => Err(ApiError::bad_request("Bad networks format: each entry needs a uuid or a port")),
                }
            })
            .collect(),
    }
}

/// Resolves security group names (or ids) in the caller's project.
fn security_groups(
    state: &ApiState,
    project: &str,
    names: Option<Vec<GroupName>>,
) -> Result<Option<Vec<Uuid>>, ApiError> {
    let Some(names) = names else { return Ok(None) };
    let groups = state.network.security_groups().map_err(ApiError::domain)?;
    let mut ids = Vec::new();
    for GroupName { name } in names {
        let found = groups
            .iter()
            .filter(|g| g.project_id == project)
            .find(|g| g.name == name || g.id.to_string() == name)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Security group {name} not found for project {project}."
                ))
            })?;
        if !ids.contains(&found.id) {
            ids.push(found.id);
        }
    }
    Ok(Some(ids))
}

/// `POST /servers`.
pub(super) async fn create(
    State(state): State<ApiState>,
    Extension(version): Extension<Microversion>,
    caller: Authenticated,
    JsonBody(body): JsonBody<CreateServer>,
) -> Result<Response, ApiError> {
    let caller = caller.0;
    let project = caller
        .project_id()
        .map(str::to_owned)
        .ok_or_else(|| ApiError::forbidden("Creating a server needs a project-scoped token."))?;
    if !caller.can_write_project(&project) {
        return Err(ApiError::forbidden(
            "Policy doesn't allow os_compute_api:servers:create to be performed.",
        ));
    }
    let body = body.server;
    count_is_one("min_count", body.min_count.as_ref())?;
    count_is_one("max_count", body.max_count.as_ref())?;
    let _ = (
        body.return_reservation_id,
        body.config_drive,
        body.description,
        body.admin_pass,
        body.access_ipv4,
        body.access_ipv6,
    );
    if let Some(config) = &body.disk_config
        && config != "AUTO"
        && config != "MANUAL"
    {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute OS-DCF:diskConfig. Value: {config}."
        )));
    }
    let image_id = boot_image(
        body.image_ref.as_deref(),
        body.block_device_mapping_v2.as_deref(),
    )?;
    let user_data = match &body.user_data {
        None => None,
        Some(text) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| ApiError::bad_request("User data needs to be valid base 64."))?,
        ),
    };
    let flavor_id = reference(&body.flavor_ref).to_owned();
    blocking(move || {
        let image_caller = crate::image::Caller {
            project_id: project.clone(),
            is_admin: caller.is_admin(),
        };
        // An image the project may not see does not exist for it: Nova answers 400 for an unknown image.
        state
            .images
            .show(image_id, &image_caller)
            .map_err(|err| match err {
                crate::image::ImageError::NotFound(_) => {
                    ApiError::bad_request(format!("Image {image_id} could not be found."))
                }
                other => ApiError::domain(other),
            })?;
        let networks = network_requests(&state, &project, body.networks, version)?;
        let groups = security_groups(&state, &project, body.security_groups)?;
        let request = NewServer {
            id: None,
            name: body.name,
            project_id: project,
            user_id: caller.user_id().to_owned(),
            flavor_id,
            image_id,
            user_data,
            metadata: body.metadata.unwrap_or_default(),
            networks,
            security_groups: groups,
            nics: 0,
            key_name: body.key_name,
            availability_zone: body.availability_zone.filter(|z| !z.is_empty()),
        };
        let server = state
            .compute
            .create_server(request)
            .map_err(ApiError::domain)?;
        let view = NetworkView::load(&state)?;
        let groups = view.security_groups(&server);
        let id = server.id.to_string();
        let admin_pass: String = {
            use rand::Rng as _;
            rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(12)
                .map(char::from)
                .collect()
        };
        Ok((
            StatusCode::ACCEPTED,
            [(
                axum::http::header::LOCATION,
                format!("{}/compute/v2.1/servers/{id}", state.public_base),
            )],
            Json(json!({ "server": {
                "id": id,
                "links": links(&state.public_base, "servers", &id),
                "OS-DCF:diskConfig": "MANUAL",
                "security_groups": groups,
                "adminPass": admin_pass,
            } })),
        )
            .into_response())
    })
    .await
}

/// `POST /servers/{id}/action`.
pub(super) async fn action(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<BTreeMap<String, Value>>,
) -> Result<Response, ApiError> {
    let mut actions = body.into_iter();
    let (Some((name, argument)), None) = (actions.next(), actions.next()) else {
        return Err(ApiError::bad_request(
            "An action body holds exactly one action.",
        ));
    };
    blocking(move || {
        let caller = caller.0;
        let conflict = |err: crate::compute::ComputeError, action: &str, server: &Server| match err {
            crate::compute::ComputeError::InvalidState { .. } => ApiError::conflict(format!(
                "Cannot '{action}' instance {} while it is in vm_state {}",
                server.id,
                vm_state(server)
            )),
            other => ApiError::domain(other),
        };
        match name.as_str() {
            "os-start" => {
                let server = writable(&state, &caller, &id, "start")?;
                state.compute.start_server(server.id).map_err(|e| conflict(e, "start", &server))?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
            "os-stop" => {
                let server = writable(&state, &caller, &id, "stop")?;
                state.compute.stop_server(server.id).map_err(|e| conflict(e, "stop", &server))?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
            "reboot" => {
                let kind = argument
                    .get("type")
                    .and_then(Value::as_str)
                    .map(str::to_ascii_uppercase)
                    .ok_or_else(|| ApiError::bad_request("Invalid input for field/attribute reboot. 'type' is a required property"))?;
                let kind = match kind.as_str() {
                    "SOFT" => RebootKind::Soft,
                    "HARD" => RebootKind::Hard,
                    other => return Err(ApiError::bad_request(format!("Invalid input for field/attribute type. Value: {other}."))),
                };
                let server = writable(&state, &caller, &id, "reboot")?;
                state.compute.reboot_server(server.id, kind).map_err(|e| conflict(e, "reboot", &server))?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
            "os-getConsoleOutput" => {
                let length = match argument.get("length") {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) => n.as_i64().map(|n| usize::try_from(n).ok()).ok_or_else(|| {
                        ApiError::bad_request("Invalid input for field/attribute length.")
                    })?,
                    Some(Value::String(s)) => s.parse::<i64>().map(|n| usize::try_from(n).ok()).map_err(|_| {
                        ApiError::bad_request(format!("Invalid input for field/attribute length. Value: {s}."))
                    })?,
                    Some(other) => return Err(ApiError::bad_request(format!("Invalid input for field/attribute length. Value: {other}."))),
                };
                let server = visible(&state, &caller, &id)?;
                let output = state.compute.console_output(server.id, length).map_err(ApiError::domain)?;
                Ok(Json(json!({ "output": output })).into_response())
            }
            other => Err(ApiError::bad_request(format!("There is no such action: {other}"))),
        }
    })
    .await
}
