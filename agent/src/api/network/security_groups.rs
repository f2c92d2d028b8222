//! `/security-groups`, `/security-group-rules` and `/default-security-group-rules`.
//!
//! Listing groups makes the caller's project's `default` group on first use, as Neutron does, so a
//! fresh project sees it before it makes a port. The rule templates (SCS-0115) are read by anyone and
//! changed by admins only; they decide the rules of groups created afterwards.

use super::{
    NeutronQuery, check_write, int_attribute, missing, neutron, one, owner, path_id, resource_body,
    typed,
};
use crate::api::ApiState;
use crate::api::auth::{Authenticated, blocking};
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::identity::policy::Caller;
use crate::network::NetworkError;
use crate::network::model::{DefaultSecurityGroupRule, SecurityGroup, SecurityGroupRule};
use crate::network::service::{NewDefaultRule, NewRule};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

const GROUP_POST: &[&str] = &["name", "description", "stateful", "tenant_id", "project_id"];
const GROUP_PUT: &[&str] = &["name", "description", "stateful"];
const GROUP_READ_ONLY: &[&str] = &[
    "id",
    "security_group_rules",
    "created_at",
    "updated_at",
    "revision_number",
    "tags",
    "tenant_id",
    "project_id",
    "shared",
];
const RULE_POST: &[&str] = &[
    "security_group_id",
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
    "remote_address_group_id",
    "description",
    "tenant_id",
    "project_id",
];
const RULE_READ_ONLY: &[&str] = &[
    "id",
    "created_at",
    "updated_at",
    "revision_number",
    "tags",
    "normalized_cidr",
    "belongs_to_default_sg",
];
const TEMPLATE_POST: &[&str] = &[
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
    "remote_address_group_id",
    "description",
    "used_in_default_sg",
    "used_in_non_default_sg",
];
const TEMPLATE_READ_ONLY: &[&str] = &["id", "tenant_id", "project_id"];

/// Neutron's rule document.
pub(super) fn rule_doc(r: &SecurityGroupRule) -> Value {
    let prefix = r.remote_ip_prefix.map(|p| p.to_string());
    json!({
        "id": r.id,
        "security_group_id": r.security_group_id,
        "tenant_id": r.project_id,
        "project_id": r.project_id,
        "direction": r.direction.as_str(),
        "ethertype": r.ethertype.as_str(),
        "protocol": r.protocol.map(crate::network::model::Protocol::as_string),
        "port_range_min": r.port_range_min,
        "port_range_max": r.port_range_max,
        "remote_ip_prefix": prefix,
        "normalized_cidr": prefix,
        "remote_group_id": r.remote_group_id,
        "remote_address_group_id": null,
        "description": r.description,
        "created_at": crate::api::openstack_time(r.created_at),
        "updated_at": crate::api::openstack_time(r.created_at),
        "revision_number": 0,
        "tags": [],
    })
}

/// Neutron's group document, rules embedded.
pub(super) fn group_doc(g: &SecurityGroup) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "description": g.description,
        "tenant_id": g.project_id,
        "project_id": g.project_id,
        "stateful": g.stateful,
        "security_group_rules": g.rules.iter().map(rule_doc).collect::<Vec<_>>(),
        "created_at": crate::api::openstack_time(g.created_at),
        "updated_at": crate::api::openstack_time(g.updated_at),
        "revision_number": 0,
        "tags": [],
    })
}

/// Neutron's template document.
pub(super) fn template_doc(t: &DefaultSecurityGroupRule) -> Value {
    json!({
        "id": t.id,
        "direction": t.direction.as_str(),
        "ethertype": t.ethertype.as_str(),
        "protocol": t.protocol.map(crate::network::model::Protocol::as_string),
        "port_range_min": t.port_range_min,
        "port_range_max": t.port_range_max,
        "remote_ip_prefix": t.remote_ip_prefix.map(|p| p.to_string()),
        "remote_group_id": t.remote_group.map(crate::network::model::TemplateRemoteGroup::as_string),
        "remote_address_group_id": null,
        "used_in_default_sg": t.used_in_default_sg,
        "used_in_non_default_sg": t.used_in_non_default_sg,
        "description": t.description,
    })
}

fn visible(state: &ApiState, caller: &Caller, id: &str) -> Result<SecurityGroup, ApiError> {
    let uuid = path_id(id, "SecurityGroupNotFound", "Security group")?;
    referenced(state, caller, uuid)
}

/// Looks up a group another request names; unknown and invisible both answer 404.
fn referenced(state: &ApiState, caller: &Caller, id: Uuid) -> Result<SecurityGroup, ApiError> {
    match state.network.security_group(id) {
        Ok(g) if caller.can_read_project(&g.project_id) => Ok(g),
        Ok(_) | Err(NetworkError::SecurityGroupNotFound(_)) => {
            Err(neutron(NetworkError::SecurityGroupNotFound(id)))
        }
        Err(other) => Err(neutron(other)),
    }
}

/// `stateful: false` is Neutron's stateless groups, which this site does not program.
fn check_stateful(body: &Map<String, Value>) -> Result<(), ApiError> {
    match body.get("stateful") {
        None | Some(Value::Bool(true)) => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "Invalid input for stateful. Reason: stateless security groups are not supported at this site.",
        )),
    }
}

/// `GET /security-groups`.
pub(super) async fn list(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        if let Some(project) = caller.project_id() {
            state
                .network
                .default_security_group(project)
                .map_err(neutron)?;
        }
        let docs = state
            .network
            .security_groups()
            .map_err(neutron)?
            .iter()
            .filter(|g| caller.can_read_project(&g.project_id))
            .map(group_doc)
            .collect();
        query
            .list(
                &state.public_base,
                "security-groups",
                "security_groups",
                docs,
            )
            .map(Json)
    })
    .await
}

/// `GET /security-groups/{id}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let group = visible(&state, &caller, &id)?;
        Ok(Json(one("security_group", group_doc(&group), &query)))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct GroupBody {
    name: Option<String>,
    description: Option<String>,
}

/// `POST /security-groups`.
pub(super) async fn create(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut body = resource_body(body, "security_group", GROUP_POST, GROUP_READ_ONLY, "POST")?;
    let project = owner(&caller, &body, "create_security_group")?;
    check_stateful(&body)?;
    for key in ["stateful", "tenant_id", "project_id"] {
        body.remove(key);
    }
    let body: GroupBody = typed(body)?;
    blocking(move || {
        let group = state
            .network
            .create_security_group(
                None,
                body.name.as_deref().unwrap_or_default(),
                body.description.as_deref().unwrap_or_default(),
                &project,
            )
            .map_err(neutron)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({ "security_group": group_doc(&group) })),
        ))
    })
    .await
}

/// `PUT /security-groups/{id}`.
pub(super) async fn update(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let mut body = resource_body(body, "security_group", GROUP_PUT, GROUP_READ_ONLY, "PUT")?;
    check_stateful(&body)?;
    body.remove("stateful");
    let body: GroupBody = typed(body)?;
    blocking(move || {
        let group = visible(&state, &caller, &id)?;
        check_write(&caller, &group.project_id, "update_security_group")?;
        let group = state
            .network
            .update_security_group(group.id, body.name, body.description)
            .map_err(neutron)?;
        Ok(Json(json!({ "security_group": group_doc(&group) })))
    })
    .await
}

/// `DELETE /security-groups/{id}`: a project's `default` group is removed by admins only.
pub(super) async fn delete(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let group = visible(&state, &caller, &id)?;
        check_write(&caller, &group.project_id, "delete_security_group")?;
        if group.name == "default" && !caller.is_admin() {
            return Err(
                ApiError::conflict("Removing default security group not allowed.")
                    .kind("SecurityGroupCannotRemoveDefault"),
            );
        }
        state
            .network
            .delete_security_group(group.id)
            .map_err(neutron)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

// ---- rules ------------------------------------------------------------------------------------

/// The protocol of a rule or template body: a name, a number, or null.
fn protocol_attribute(body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match body.get("protocol") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for protocol. Reason: '{other}' is not a protocol name or number."
        ))),
    }
}

fn string_attribute(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for {key}. Reason: '{other}' is not a string."
        ))),
    }
}

fn bool_attribute(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for {key}. Reason: '{other}' is not a boolean."
        ))),
    }
}

fn no_address_groups(body: &Map<String, Value>) -> Result<(), ApiError> {
    if body
        .get("remote_address_group_id")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::bad_request(
            "Invalid input for remote_address_group_id. Reason: address groups are not supported at this site.",
        ));
    }
    Ok(())
}

fn direction(body: &Map<String, Value>) -> Result<String, ApiError> {
    string_attribute(body, "direction")?.ok_or_else(|| {
        ApiError::bad_request(
            "Failed to parse request. Required attribute 'direction' not specified",
        )
    })
}

/// `GET /security-group-rules`.
pub(super) async fn list_rules(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let docs = state
            .network
            .security_groups()
            .map_err(neutron)?
            .iter()
            .filter(|g| caller.can_read_project(&g.project_id))
            .flat_map(|g| g.rules.iter().map(rule_doc))
            .collect();
        query
            .list(
                &state.public_base,
                "security-group-rules",
                "security_group_rules",
                docs,
            )
            .map(Json)
    })
    .await
}

/// Finds a rule the caller may see.
fn visible_rule(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<SecurityGroupRule, ApiError> {
    let uuid = path_id(id, "SecurityGroupRuleNotFound", "Security group rule")?;
    state
        .network
        .security_groups()
        .map_err(neutron)?
        .into_iter()
        .filter(|g| caller.can_read_project(&g.project_id))
        .flat_map(|g| g.rules)
        .find(|r| r.id == uuid)
        .ok_or_else(|| neutron(NetworkError::SecurityGroupRuleNotFound(uuid)))
}

/// `GET /security-group-rules/{id}`.
pub(super) async fn show_rule(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let rule = visible_rule(&state, &caller, &id)?;
        Ok(Json(one("security_group_rule", rule_doc(&rule), &query)))
    })
    .await
}

/// `POST /security-group-rules`.
pub(super) async fn create_rule(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = resource_body(
        body,
        "security_group_rule",
        RULE_POST,
        RULE_READ_ONLY,
        "POST",
    )?;
    no_address_groups(&body)?;
    let group_id: Uuid = match body.get("security_group_id") {
        Some(Value::String(s)) => Uuid::parse_str(s).map_err(|_| {
            ApiError::bad_request(format!(
                "Invalid input for security_group_id. Reason: '{s}' is not a valid UUID."
            ))
        })?,
        _ => {
            return Err(ApiError::bad_request(
                "Failed to parse request. Required attribute 'security_group_id' not specified",
            ));
        }
    };
    let remote_group_id = string_attribute(&body, "remote_group_id")?
        .map(|s| {
            Uuid::parse_str(&s).map_err(|_| {
                ApiError::bad_request(format!(
                    "Invalid input for remote_group_id. Reason: '{s}' is not a valid UUID."
                ))
            })
        })
        .transpose()?;
    let request = NewRule {
        id: None,
        security_group_id: group_id,
        project_id: String::new(),
        direction: direction(&body)?,
        ethertype: string_attribute(&body, "ethertype")?,
        protocol: protocol_attribute(&body)?,
        port_range_min: int_attribute(&body, "port_range_min")?,
        port_range_max: int_attribute(&body, "port_range_max")?,
        remote_ip_prefix: string_attribute(&body, "remote_ip_prefix")?,
        remote_group_id,
        description: string_attribute(&body, "description")?.unwrap_or_default(),
    };
    blocking(move || {
        let group = referenced(&state, &caller, group_id)?;
        // A rule belongs to its group's project; a body naming another project is wrong.
        for key in ["project_id", "tenant_id"] {
            if let Some(named) = string_attribute(&body, key)?
                && named != group.project_id
            {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for {key}. Reason: a rule belongs to its security group's project {}.",
                    group.project_id
                )));
            }
        }
        check_write(&caller, &group.project_id, "create_security_group_rule")?;
        if let Some(remote) = request.remote_group_id {
            referenced(&state, &caller, remote)?;
        }
        let rule = state
            .network
            .create_rule(NewRule {
                project_id: group.project_id,
                ..request
            })
            .map_err(neutron)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({ "security_group_rule": rule_doc(&rule) })),
        ))
    })
    .await
}

/// `DELETE /security-group-rules/{id}`.
pub(super) async fn delete_rule(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let rule = visible_rule(&state, &caller, &id)?;
        check_write(&caller, &rule.project_id, "delete_security_group_rule")?;
        state.network.delete_rule(rule.id).map_err(neutron)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

// ---- templates --------------------------------------------------------------------------------

/// `GET /default-security-group-rules`: anyone with a token reads what new groups get.
pub(super) async fn list_templates(
    State(state): State<ApiState>,
    Authenticated(_caller): Authenticated,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let docs = state
            .network
            .default_rules()
            .map_err(neutron)?
            .iter()
            .map(template_doc)
            .collect();
        query
            .list(
                &state.public_base,
                "default-security-group-rules",
                "default_security_group_rules",
                docs,
            )
            .map(Json)
    })
    .await
}

/// `GET /default-security-group-rules/{id}`.
pub(super) async fn show_template(
    State(state): State<ApiState>,
    Authenticated(_caller): Authenticated,
    Path(id): Path<String>,
    query: NeutronQuery,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let uuid = path_id(
            &id,
            "DefaultSecurityGroupRuleNotFound",
            "Default security group rule",
        )?;
        let template = state.network.default_rule(uuid).map_err(neutron)?;
        Ok(Json(one(
            "default_security_group_rule",
            template_doc(&template),
            &query,
        )))
    })
    .await
}

/// `POST /default-security-group-rules` (admin).
pub(super) async fn create_template(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !caller.is_admin() {
        return Err(super::forbidden("create_default_security_group_rule"));
    }
    let body = resource_body(
        body,
        "default_security_group_rule",
        TEMPLATE_POST,
        TEMPLATE_READ_ONLY,
        "POST",
    )?;
    no_address_groups(&body)?;
    let request = NewDefaultRule {
        id: None,
        direction: direction(&body)?,
        ethertype: string_attribute(&body, "ethertype")?,
        protocol: protocol_attribute(&body)?,
        port_range_min: int_attribute(&body, "port_range_min")?,
        port_range_max: int_attribute(&body, "port_range_max")?,
        remote_ip_prefix: string_attribute(&body, "remote_ip_prefix")?,
        remote_group_id: string_attribute(&body, "remote_group_id")?,
        used_in_default_sg: bool_attribute(&body, "used_in_default_sg")?,
        used_in_non_default_sg: bool_attribute(&body, "used_in_non_default_sg")?,
        description: string_attribute(&body, "description")?.unwrap_or_default(),
    };
    blocking(move || {
        let template = state
            .network
            .create_default_rule(request)
            .map_err(neutron)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({ "default_security_group_rule": template_doc(&template) })),
        ))
    })
    .await
}

/// `DELETE /default-security-group-rules/{id}` (admin).
pub(super) async fn delete_template(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !caller.is_admin() {
        return Err(super::forbidden("delete_default_security_group_rule"));
    }
    blocking(move || {
        let uuid = Uuid::parse_str(&id).map_err(|_| {
            missing(
                "DefaultSecurityGroupRuleNotFound",
                "Default security group rule",
                &id,
            )
        })?;
        state.network.delete_default_rule(uuid).map_err(neutron)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
