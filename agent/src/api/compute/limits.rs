//! `/limits` and `/os-availability-zone`.
//!
//! An edge site's real quota is its hardware: the limits report what the node can hold (after
//! allocation ratios and the host reserve) and what the caller's project uses of it.

use crate::api::ApiState;
use crate::api::auth::{Authenticated, blocking};
use crate::api::error::ApiError;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

/// `GET /limits`.
pub(super) async fn limits(
    State(state): State<ApiState>,
    caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let compute = state.compute.clone();
    let project = caller.0.project_id().map(str::to_owned);
    let (capacity, servers) = blocking(move || {
        let capacity = compute.capacity().map_err(|e| ApiError::from_domain(&e))?;
        let servers = compute.servers().map_err(|e| ApiError::from_domain(&e))?;
        Ok((capacity, servers))
    })
    .await?;
    let own: Vec<_> = servers
        .iter()
        .filter(|s| project.as_deref() == Some(s.project_id.as_str()) && !s.deleting)
        .collect();
    let cores: u64 = own.iter().map(|s| u64::from(s.flavor.vcpus)).sum();
    let ram: u64 = own.iter().map(|s| s.flavor.ram_mb).sum();
    Ok(Json(json!({ "limits": { "rate": [], "absolute": {
        "maxTotalCores": capacity.0,
        "maxTotalRAMSize": capacity.1,
        "maxTotalInstances": capacity.0,
        "maxServerMeta": crate::compute::server::MAX_METADATA_ITEMS,
        "maxImageMeta": 128,
        "maxPersonality": 5,
        "maxPersonalitySize": 10240,
        "maxTotalKeypairs": 100,
        "maxSecurityGroups": -1,
        "maxSecurityGroupRules": -1,
        "maxTotalFloatingIps": -1,
        "maxServerGroups": 0,
        "maxServerGroupMembers": 0,
        "totalCoresUsed": cores,
        "totalRAMUsed": ram,
        "totalInstancesUsed": own.len(),
        "totalSecurityGroupsUsed": 0,
        "totalFloatingIpsUsed": 0,
        "totalServerGroupsUsed": 0,
    } } })))
}

/// `GET /os-availability-zone`: the site's one zone.
pub(super) async fn availability_zones(
    State(state): State<ApiState>,
    _caller: Authenticated,
) -> Json<Value> {
    Json(json!({ "availabilityZoneInfo": [{
        "zoneName": state.compute.availability_zone(),
        "zoneState": { "available": true },
        "hosts": null,
    }] }))
}
