//! Neutron v2.0 at `/network/v2.0`: networks, subnets, ports, routers, floating IPs, security groups
//! and their rules, default security group rule templates, extensions and quotas.
//!
//! Documents have Neutron's shapes so openstacksdk and python-openstackclient work unchanged. Lists
//! take Neutron's query conventions — any attribute as an equality filter (repeated = any of),
//! `fields`, `sort_key`/`sort_dir`, `limit`/`marker` — applied here to the rendered documents, so
//! every attribute filters the same way it shows. Isolation follows Neutron's default policies: a
//! resource the caller may not see is answered 404 in its resource's own `type`; a visible one the
//! caller may not change is 403.

mod extensions;
mod floating_ips;
mod networks;
mod ports;
mod routers;
mod security_groups;
mod subnets;
#[cfg(test)]
mod tests;

use super::ApiState;
use super::error::ApiError;
use crate::identity::policy::Caller;
use crate::network::NetworkError;
use axum::Router;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::routing::{get, put};
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use uuid::Uuid;

/// The versioned root every route hangs under.
const ROOT: &str = "/network/v2.0";

/// The Neutron routes (full paths).
pub(super) fn routes() -> Router<ApiState> {
    let path = |tail: &str| format!("{ROOT}/{tail}");
    Router::new()
        .route(
            &path("networks"),
            get(networks::list).post(networks::create),
        )
        .route(
            &path("networks/{id}"),
            get(networks::show)
                .put(networks::update)
                .delete(networks::delete),
        )
        .route(&path("subnets"), get(subnets::list).post(subnets::create))
        .route(
            &path("subnets/{id}"),
            get(subnets::show)
                .put(subnets::update)
                .delete(subnets::delete),
        )
        .route(&path("ports"), get(ports::list).post(ports::create))
        .route(
            &path("ports/{id}"),
            get(ports::show).put(ports::update).delete(ports::delete),
        )
        .route(&path("routers"), get(routers::list).post(routers::create))
        .route(
            &path("routers/{id}"),
            get(routers::show)
                .put(routers::update)
                .delete(routers::delete),
        )
        .route(
            &path("routers/{id}/add_router_interface"),
            put(routers::add_interface),
        )
        .route(
            &path("routers/{id}/remove_router_interface"),
            put(routers::remove_interface),
        )
        .route(
            &path("floatingips"),
            get(floating_ips::list).post(floating_ips::create),
        )
        .route(
            &path("floatingips/{id}"),
            get(floating_ips::show)
                .put(floating_ips::update)
                .delete(floating_ips::delete),
        )
        .route(
            &path("security-groups"),
            get(security_groups::list).post(security_groups::create),
        )
        .route(
            &path("security-groups/{id}"),
            get(security_groups::show)
                .put(security_groups::update)
                .delete(security_groups::delete),
        )
        .route(
            &path("security-group-rules"),
            get(security_groups::list_rules).post(security_groups::create_rule),
        )
        .route(
            &path("security-group-rules/{id}"),
            get(security_groups::show_rule).delete(security_groups::delete_rule),
        )
        .route(
            &path("default-security-group-rules"),
            get(security_groups::list_templates).post(security_groups::create_template),
        )
        .route(
            &path("default-security-group-rules/{id}"),
            get(security_groups::show_template).delete(security_groups::delete_template),
        )
        .route(&path("extensions"), get(extensions::list))
        .route(&path("extensions/{alias}"), get(extensions::show))
        .route(&path("quotas"), get(extensions::quotas))
        .route(
            &path("quotas/{project_id}"),
            get(extensions::quota)
                .put(extensions::update_quota)
                .delete(extensions::reset_quota),
        )
        .route(
            &path("quotas/{project_id}/{view}"),
            get(extensions::quota_view),
        )
}

/// A domain error in Neutron's words: its status and its `type`.
#[allow(clippy::needless_pass_by_value)] // used as `map_err(neutron)`, which passes by value
fn neutron(err: NetworkError) -> ApiError {
    ApiError::from_domain(&err).kind(err.neutron_type())
}

/// A 404 for an id the caller may not see (or that is no UUID), worded like the domain's.
fn missing(kind: &'static str, what: &str, id: &str) -> ApiError {
    ApiError::not_found(format!("{what} {id} could not be found.")).kind(kind)
}

/// Parses a path id; a malformed one names nothing and is answered like an unknown one.
fn path_id(id: &str, kind: &'static str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| missing(kind, what, id))
}

/// Neutron's policy refusal.
fn forbidden(action: &str) -> ApiError {
    ApiError::forbidden(format!("rule:{action} is disallowed by policy"))
}

/// Refuses unless the caller may change resources of `project`.
fn check_write(caller: &Caller, project: &str, action: &str) -> Result<(), ApiError> {
    if caller.can_write_project(project) {
        Ok(())
    } else {
        Err(forbidden(action))
    }
}

/// The project a new resource belongs to: the body's `project_id`/`tenant_id` (only admins may
/// name another project than their own), else the caller's. The caller must be able to write it.
fn owner(caller: &Caller, body: &Map<String, Value>, action: &str) -> Result<String, ApiError> {
    let named = |key: &str| -> Result<Option<String>, ApiError> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid input for {key}. Reason: '{other}' is not a valid project id."
            ))),
        }
    };
    let (project, tenant) = (named("project_id")?, named("tenant_id")?);
    if let (Some(p), Some(t)) = (&project, &tenant)
        && p != t
    {
        return Err(ApiError::bad_request(
            "'project_id' and 'tenant_id' do not match",
        ));
    }
    let project = match project.or(tenant) {
        Some(p) => p,
        None => caller.project_id().map(str::to_owned).ok_or_else(|| {
            ApiError::bad_request("A project-scoped token or a project_id is required.")
        })?,
    };
    check_write(caller, &project, action)?;
    Ok(project)
}

/// The `{"<resource>": {...}}` object of a request body, with Neutron's answers to everything else:
/// a missing wrapper, attributes it does not know, and known ones this request may not set.
fn resource_body(
    body: Value,
    resource: &str,
    allowed: &[&str],
    read_only: &[&str],
    method: &str,
) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut outer) = body else {
        return Err(ApiError::bad_request(format!(
            "Unable to find '{resource}' in request body"
        )));
    };
    let Some(inner) = outer.remove(resource) else {
        return Err(ApiError::bad_request(format!(
            "Unable to find '{resource}' in request body"
        )));
    };
    let Value::Object(inner) = inner else {
        return Err(ApiError::bad_request(format!(
            "Invalid input for {resource}. Reason: a JSON object is required."
        )));
    };
    if let Some(bad) = inner
        .keys()
        .find(|k| read_only.contains(&k.as_str()) && !allowed.contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "Attribute '{bad}' not allowed in {method}"
        )));
    }
    let unknown: Vec<&str> = inner
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k) && !read_only.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Unrecognized attribute(s) '{}'",
            unknown.join(", ")
        )));
    }
    Ok(inner)
}

/// Converts a body object into a typed request, naming the attribute that does not fit.
fn typed<T: DeserializeOwned>(body: Map<String, Value>) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(Value::Object(body)).map_err(|err| {
        let path = err.path().to_string();
        ApiError::bad_request(format!(
            "Invalid input for {path}. Reason: {}.",
            err.into_inner()
        ))
    })
}

/// An attribute Neutron gives `null` a meaning for (no gateway, dissociate): absent, null, or set.
/// Used with `#[serde(default)]`, so a missing attribute is [`Nullable::Absent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Nullable<T> {
    /// Not in the body: keep (or default) the value.
    #[default]
    Absent,
    /// `null`.
    Null,
    /// A value.
    Set(T),
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Nullable<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(deserializer)? {
            None => Self::Null,
            Some(value) => Self::Set(value),
        })
    }
}

/// An integer Neutron accepts as a number or a numeric string (`"22"`), or null.
fn int_attribute(body: &Map<String, Value>, key: &str) -> Result<Option<i64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => Ok(s.trim().parse().ok()),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for {key}. Reason: '{other}' is not an integer."
        ))),
    }
}

/// The query of a Neutron request: filters, `fields`, sorting and paging, in order.
#[derive(Debug, Clone, Default)]
struct NeutronQuery(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for NeutronQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|Query(pairs)| Self(pairs))
            .map_err(|_| ApiError::bad_request("The query string could not be parsed."))
    }
}

/// Query keys that are not attribute filters.
const CONTROL_KEYS: [&str; 7] = [
    "fields",
    "sort_key",
    "sort_dir",
    "limit",
    "marker",
    "page_reverse",
    "changed_since",
];

impl NeutronQuery {
    fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn first<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.values(key).next()
    }

    /// Keeps only the requested `fields` of a document (all when none are asked for).
    fn project(&self, doc: Value) -> Value {
        let wanted: Vec<&str> = self
            .values("fields")
            .flat_map(|f| f.split(','))
            .filter(|f| !f.is_empty())
            .collect();
        match doc {
            Value::Object(map) if !wanted.is_empty() => Value::Object(
                map.into_iter()
                    .filter(|(k, _)| wanted.contains(&k.as_str()))
                    .collect(),
            ),
            other => other,
        }
    }

    /// Whether a document passes every attribute filter. Repeated keys match any of their values;
    /// filters on attributes the document does not show are ignored, as Neutron without
    /// `filter-validation` does.
    fn matches(&self, doc: &Value, since: Option<Timestamp>) -> bool {
        if let Some(since) = since {
            let updated = doc
                .get("updated_at")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<Timestamp>().ok());
            if updated.is_some_and(|u| u < since) {
                return false;
            }
        }
        let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (key, value) in &self.0 {
            if !CONTROL_KEYS.contains(&key.as_str()) {
                by_key.entry(key).or_default().push(value);
            }
        }
        by_key.into_iter().all(|(key, wanted)| {
            let Some(actual) = doc.get(key) else {
                return true;
            };
            if key == "fixed_ips" {
                return wanted.iter().all(|w| fixed_ip_matches(actual, w));
            }
            wanted.iter().any(|w| value_matches(actual, w))
        })
    }

    /// Filters, sorts, pages and projects documents into a list response.
    fn list(
        &self,
        base: &str,
        path: &str,
        collection: &str,
        docs: Vec<Value>,
    ) -> Result<Value, ApiError> {
        let since = match self.first("changed_since") {
            None => None,
            Some(text) => Some(text.parse::<Timestamp>().map_err(|_| {
                ApiError::bad_request(format!(
                    "Invalid input for changed_since. Reason: '{text}' is not a timestamp."
                ))
            })?),
        };
        let mut docs: Vec<Value> = docs
            .into_iter()
            .filter(|d| self.matches(d, since))
            .collect();
        let keys: Vec<&str> = self.values("sort_key").collect();
        let dirs: Vec<&str> = self.values("sort_dir").collect();
        if !dirs.is_empty() && dirs.len() != keys.len() {
            return Err(ApiError::bad_request(
                "The number of sort_keys and sort_dirs must be same",
            ));
        }
        for dir in &dirs {
            if *dir != "asc" && *dir != "desc" {
                return Err(ApiError::bad_request(format!(
                    "{dir} is invalid value for sort_dirs, valid sort dir values are asc and desc"
                )));
            }
        }
        if !keys.is_empty() {
            if let Some(bad) = keys
                .iter()
                .find(|k| docs.first().is_some_and(|d| d.get(**k).is_none()))
            {
                return Err(ApiError::bad_request(format!(
                    "{bad} is invalid attribute for sort_keys"
                )));
            }
            docs.sort_by(|a, b| {
                keys.iter()
                    .enumerate()
                    .map(|(i, key)| {
                        let order = compare(a.get(*key), b.get(*key));
                        if dirs.get(i) == Some(&"desc") {
                            order.reverse()
                        } else {
                            order
                        }
                    })
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
            });
        }
        let limit = match self.first("limit") {
            None | Some("" | "0") => None,
            Some(text) => Some(text.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!(
                    "Bad limit request: Limit must be an integer 0 or greater and not '{text}'"
                ))
            })?),
        };
        if let Some(marker) = self.first("marker") {
            let at = docs
                .iter()
                .position(|d| d.get("id").and_then(Value::as_str) == Some(marker))
                .ok_or_else(|| ApiError::bad_request(format!("marker [{marker}] not found")))?;
            docs.drain(..=at);
        }
        let mut links = Vec::new();
        if let Some(limit) = limit
            && docs.len() > limit
        {
            docs.truncate(limit);
            if let Some(last) = docs
                .last()
                .and_then(|d| d.get("id"))
                .and_then(Value::as_str)
            {
                let mut query: Vec<String> = self
                    .0
                    .iter()
                    .filter(|(k, _)| k != "marker")
                    .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                    .collect();
                query.push(format!("marker={last}"));
                links.push(json!({
                    "rel": "next",
                    "href": format!("{base}{ROOT}/{path}?{}", query.join("&")),
                }));
            }
        }
        let docs: Vec<Value> = docs.into_iter().map(|d| self.project(d)).collect();
        let mut out = Map::new();
        out.insert(collection.to_owned(), Value::Array(docs));
        if !links.is_empty() {
            out.insert(format!("{collection}_links"), Value::Array(links));
        }
        Ok(Value::Object(out))
    }
}

/// Percent-encodes a query component.
fn encode(text: &str) -> String {
    text.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

/// Orders two attribute values: null first, then by type-natural order.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// Neutron's boolean spellings in queries.
fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" | "yes" | "y" | "on" => Some(true),
        "false" | "0" | "f" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// Whether one filter value matches an attribute: equality for scalars, membership for lists.
fn value_matches(actual: &Value, wanted: &str) -> bool {
    match actual {
        Value::String(s) => s == wanted,
        Value::Bool(b) => parse_bool(wanted) == Some(*b),
        Value::Number(n) => n.to_string() == wanted,
        Value::Null => wanted.is_empty() || wanted == "None" || wanted == "null",
        Value::Array(items) => items.iter().any(|i| value_matches(i, wanted)),
        Value::Object(_) => false,
    }
}

/// Neutron's `fixed_ips=ip_address=…` / `subnet_id=…` / `ip_address_substr=…` port filter.
fn fixed_ip_matches(actual: &Value, wanted: &str) -> bool {
    let Some((key, value)) = wanted.split_once('=') else {
        return false;
    };
    let entries = actual.as_array().map(Vec::as_slice).unwrap_or_default();
    entries.iter().any(|entry| match key {
        "ip_address" | "subnet_id" => entry.get(key).and_then(Value::as_str) == Some(value),
        "ip_address_substr" => entry
            .get("ip_address")
            .and_then(Value::as_str)
            .is_some_and(|ip| ip.contains(value)),
        _ => false,
    })
}

/// The `{"<resource>": doc}` answer of a show, create or update, projected to `fields`.
fn one(resource: &str, doc: Value, query: &NeutronQuery) -> Value {
    let mut out = Map::new();
    out.insert(resource.to_owned(), query.project(doc));
    Value::Object(out)
}
