//! `/flavors`: everyone reads public flavors; only admins create and delete them.

use super::{Page, links};
use crate::api::ApiState;
use crate::api::auth::{Authenticated, blocking};
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::api::microversion::Microversion;
use crate::compute::flavor::{Flavor, NewFlavor};
use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// List filters Nova accepts.
#[derive(Debug, Default, Deserialize)]
pub(super) struct FlavorQuery {
    #[serde(rename = "minRam")]
    min_ram: Option<String>,
    #[serde(rename = "minDisk")]
    min_disk: Option<String>,
    is_public: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    limit: Option<String>,
    marker: Option<String>,
}

fn number(name: &str, text: Option<&String>) -> Result<Option<u64>, ApiError> {
    text.map(|t| {
        t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "Invalid input for query parameters {name}. Value: {t}."
            ))
        })
    })
    .transpose()
}

fn select(flavors: Vec<Flavor>, query: &FlavorQuery, admin: bool) -> Result<Vec<Flavor>, ApiError> {
    let min_ram = number("minRam", query.min_ram.as_ref())?;
    let min_disk = number("minDisk", query.min_disk.as_ref())?;
    let public = match query
        .is_public
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("true" | "t" | "1" | "yes") => Some(true),
        Some("false" | "f" | "0" | "no") => Some(false),
        Some("none") => None,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid is_public filter [{other}]"
            )));
        }
    };
    let mut flavors: Vec<Flavor> = flavors
        .into_iter()
        // Non-admins only ever see public flavors.
        .filter(|f| {
            if admin {
                public.is_none_or(|p| f.is_public == p)
            } else {
                f.is_public
            }
        })
        .filter(|f| min_ram.is_none_or(|m| f.ram_mb >= m))
        .filter(|f| min_disk.is_none_or(|m| f.disk_gb >= m))
        .collect();
    let key = query.sort_key.as_deref().unwrap_or("flavorid");
    match key {
        "flavorid" | "id" => flavors.sort_by(|a, b| a.id.cmp(&b.id)),
        "name" => flavors.sort_by(|a, b| a.name.cmp(&b.name)),
        "memory_mb" | "ram" => flavors.sort_by_key(|f| (f.ram_mb, f.id.clone())),
        "vcpus" => flavors.sort_by_key(|f| (f.vcpus, f.id.clone())),
        "root_gb" | "disk" => flavors.sort_by_key(|f| (f.disk_gb, f.id.clone())),
        other => return Err(ApiError::bad_request(format!("Invalid sort_key [{other}]"))),
    }
    match query.sort_dir.as_deref().unwrap_or("asc") {
        "asc" => {}
        "desc" => flavors.reverse(),
        other => return Err(ApiError::bad_request(format!("Invalid sort_dir [{other}]"))),
    }
    Page {
        limit: query.page.limit.clone(),
        marker: query.page.marker.clone(),
    }
    .apply(flavors, |f| f.id.clone())
}

/// The detailed flavor document for a microversion.
pub(super) fn flavor_detail(base: &str, flavor: &Flavor, version: Microversion) -> Value {
    let mut doc = json!({
        "id": flavor.id,
        "name": flavor.name,
        "ram": flavor.ram_mb,
        "vcpus": flavor.vcpus,
        "disk": flavor.disk_gb,
        "swap": if flavor.swap_mb == 0 && !version.at_least(75) { json!("") } else { json!(flavor.swap_mb) },
        "OS-FLV-EXT-DATA:ephemeral": flavor.ephemeral_gb,
        "OS-FLV-DISABLED:disabled": false,
        "os-flavor-access:is_public": flavor.is_public,
        "rxtx_factor": 1.0,
        "links": links(base, "flavors", &flavor.id),
    });
    if version.at_least(55) {
        doc["description"] = json!(flavor.description);
    }
    if version.at_least(61) {
        doc["extra_specs"] = json!(flavor.extra_specs);
    }
    doc
}

fn flavor_summary(base: &str, flavor: &Flavor, version: Microversion) -> Value {
    let mut doc = json!({ "id": flavor.id, "name": flavor.name, "links": links(base, "flavors", &flavor.id) });
    if version.at_least(55) {
        doc["description"] = json!(flavor.description);
    }
    doc
}

async fn listed(
    state: &ApiState,
    caller: &Authenticated,
    query: FlavorQuery,
) -> Result<Vec<Flavor>, ApiError> {
    let compute = state.compute.clone();
    let admin = caller.0.is_admin();
    blocking(move || {
        let all = compute.flavors().map_err(|e| ApiError::from_domain(&e))?;
        select(all, &query, admin)
    })
    .await
}

/// `GET /flavors`.
pub(super) async fn list(
    State(state): State<ApiState>,
    Extension(version): Extension<Microversion>,
    caller: Authenticated,
    Query(query): Query<FlavorQuery>,
) -> Result<Json<Value>, ApiError> {
    let flavors = listed(&state, &caller, query).await?;
    let docs: Vec<Value> = flavors
        .iter()
        .map(|f| flavor_summary(&state.public_base, f, version))
        .collect();
    Ok(Json(json!({ "flavors": docs })))
}

/// `GET /flavors/detail`.
pub(super) async fn list_detail(
    State(state): State<ApiState>,
    Extension(version): Extension<Microversion>,
    caller: Authenticated,
    Query(query): Query<FlavorQuery>,
) -> Result<Json<Value>, ApiError> {
    let flavors = listed(&state, &caller, query).await?;
    let docs: Vec<Value> = flavors
        .iter()
        .map(|f| flavor_detail(&state.public_base, f, version))
        .collect();
    Ok(Json(json!({ "flavors": docs })))
}

async fn visible_flavor(
    state: &ApiState,
    caller: &Authenticated,
    id: String,
) -> Result<Flavor, ApiError> {
    let compute = state.compute.clone();
    let admin = caller.0.is_admin();
    blocking(move || {
        let flavor = compute.flavor(&id).map_err(|e| ApiError::from_domain(&e))?;
        if !flavor.is_public && !admin {
            return Err(ApiError::not_found(format!(
                "Flavor {id} could not be found."
            )));
        }
        Ok(flavor)
    })
    .await
}

/// `GET /flavors/{id}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    Extension(version): Extension<Microversion>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let flavor = visible_flavor(&state, &caller, id).await?;
    Ok(Json(
        json!({ "flavor": flavor_detail(&state.public_base, &flavor, version) }),
    ))
}

/// `GET /flavors/{id}/os-extra_specs`.
pub(super) async fn extra_specs(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let flavor = visible_flavor(&state, &caller, id).await?;
    Ok(Json(json!({ "extra_specs": flavor.extra_specs })))
}

/// `GET /flavors/{id}/os-extra_specs/{key}`.
pub(super) async fn extra_spec(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let flavor = visible_flavor(&state, &caller, id.clone()).await?;
    let value = flavor.extra_specs.get(&key).ok_or_else(|| {
        ApiError::not_found(format!("Flavor {id} has no extra specs with key {key}."))
    })?;
    Ok(Json(json!({ key: value })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateFlavor {
    flavor: FlavorBody,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlavorBody {
    name: String,
    ram: u64,
    vcpus: u32,
    disk: u64,
    id: Option<String>,
    #[serde(rename = "OS-FLV-EXT-DATA:ephemeral", default)]
    ephemeral: u64,
    #[serde(default)]
    swap: u64,
    #[serde(default)]
    rxtx_factor: Option<f64>,
    #[serde(rename = "os-flavor-access:is_public", default = "yes")]
    is_public: bool,
    description: Option<String>,
}

fn yes() -> bool {
    true
}

/// `POST /flavors` (admin).
pub(super) async fn create(
    State(state): State<ApiState>,
    Extension(version): Extension<Microversion>,
    caller: Authenticated,
    JsonBody(body): JsonBody<CreateFlavor>,
) -> Result<Json<Value>, ApiError> {
    if !caller.0.is_admin() {
        return Err(ApiError::forbidden(
            "Policy doesn't allow os_compute_api:os-flavor-manage:create to be performed.",
        ));
    }
    let f = body.flavor;
    let request = NewFlavor {
        id: f.id,
        name: f.name,
        description: f.description,
        vcpus: f.vcpus,
        ram_mb: f.ram,
        disk_gb: f.disk,
        ephemeral_gb: f.ephemeral,
        swap_mb: f.swap,
        is_public: f.is_public,
        extra_specs: std::collections::BTreeMap::new(),
    };
    let _ = f.rxtx_factor;
    let compute = state.compute.clone();
    let flavor = blocking(move || {
        compute
            .create_flavor(request)
            .map_err(|e| ApiError::from_domain(&e))
    })
    .await?;
    Ok(Json(
        json!({ "flavor": flavor_detail(&state.public_base, &flavor, version) }),
    ))
}

/// `DELETE /flavors/{id}` (admin).
pub(super) async fn delete(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !caller.0.is_admin() {
        return Err(ApiError::forbidden(
            "Policy doesn't allow os_compute_api:os-flavor-manage:delete to be performed.",
        ));
    }
    let compute = state.compute.clone();
    blocking(move || {
        compute
            .delete_flavor(&id)
            .map_err(|e| ApiError::from_domain(&e))
    })
    .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn flavor(id: &str, ram_mb: u64, is_public: bool) -> Flavor {
        Flavor {
            id: id.into(),
            name: id.into(),
            description: None,
            vcpus: 1,
            ram_mb,
            disk_gb: 0,
            ephemeral_gb: 0,
            swap_mb: 0,
            is_public,
            extra_specs: BTreeMap::from([("scs:cpu-type".into(), "shared-core".into())]),
        }
    }

    #[test]
    fn filters_sorting_and_privacy() {
        let all = vec![
            flavor("b", 2048, true),
            flavor("a", 1024, true),
            flavor("hidden", 4096, false),
        ];
        let query = FlavorQuery {
            min_ram: Some("1500".into()),
            ..FlavorQuery::default()
        };
        let ids: Vec<String> = select(all.clone(), &query, false)
            .expect("ok")
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(ids, ["b"], "non-admins never see private flavors");
        let query = FlavorQuery {
            is_public: Some("none".into()),
            ..FlavorQuery::default()
        };
        let ids: Vec<String> = select(all.clone(), &query, true)
            .expect("ok")
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(ids, ["a", "b", "hidden"]);
        let bad = FlavorQuery {
            min_ram: Some("lots".into()),
            ..FlavorQuery::default()
        };
        assert_eq!(
            select(all.clone(), &bad, false).expect_err("bad").status(),
            StatusCode::BAD_REQUEST
        );
        let bad = FlavorQuery {
            page: PageQuery {
                marker: Some("zzz".into()),
                limit: None,
            },
            ..FlavorQuery::default()
        };
        assert_eq!(
            select(all, &bad, false).expect_err("marker").status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn documents_follow_the_microversion() {
        let f = flavor("SCS-1V-2", 2048, true);
        let old = flavor_detail("https://e", &f, Microversion::v2(1));
        assert_eq!(old["swap"], "");
        assert!(old.get("extra_specs").is_none());
        let new = flavor_detail("https://e", &f, Microversion::v2(61));
        assert_eq!(new["extra_specs"]["scs:cpu-type"], "shared-core");
        assert_eq!(new["os-flavor-access:is_public"], true);
        assert_eq!(
            new["links"][0]["href"],
            "https://e/compute/v2.1/flavors/SCS-1V-2"
        );
    }
}
