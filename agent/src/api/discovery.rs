//! Version discovery documents, one per service, as keystoneauth and openstacksdk read them.
//!
//! Clients take an endpoint from the catalog (`https://node/compute/v2.1`), strip it to the service
//! root and fetch the version list to pick an API version and its microversion range. The shapes
//! differ per service (Keystone nests `versions.values` and answers 300), so each is written out here.

use super::microversion::Microversion;
use serde_json::{Value, json};

/// `GET /identity/` (300 Multiple Choices, like Keystone).
pub fn identity_versions(base: &str) -> Value {
    json!({ "versions": { "values": [identity_v3(base)] } })
}

/// `GET /identity/v3`.
pub fn identity_version(base: &str) -> Value {
    json!({ "version": identity_v3(base) })
}

fn identity_v3(base: &str) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{ "rel": "self", "href": format!("{base}/identity/v3/") }],
        "media-types": [{ "base": "application/json", "type": "application/vnd.openstack.identity-v3+json" }],
    })
}

/// `GET /compute/`.
pub fn compute_versions(base: &str) -> Value {
    json!({ "versions": [compute_v21(base)] })
}

/// `GET /compute/v2.1`.
pub fn compute_version(base: &str) -> Value {
    json!({ "version": compute_v21(base) })
}

fn compute_v21(base: &str) -> Value {
    json!({
        "id": "v2.1",
        "status": "CURRENT",
        "version": Microversion::MAX.to_string(),
        "min_version": Microversion::MIN.to_string(),
        "updated": "2013-07-23T11:33:21Z",
        "links": [
            { "rel": "self", "href": format!("{base}/compute/v2.1/") },
            { "rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/" },
        ],
        "media-types": [{ "base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1" }],
    })
}

/// `GET /image/` (300 Multiple Choices, like Glance).
pub fn image_versions(base: &str) -> Value {
    let version = |id: &str, status: &str| json!({ "id": id, "status": status, "links": [{ "rel": "self", "href": format!("{base}/image/v2/") }] });
    json!({ "versions": [version("v2.16", "CURRENT"), version("v2.0", "SUPPORTED")] })
}

/// `GET /network/`.
pub fn network_versions(base: &str) -> Value {
    json!({ "versions": [{
        "id": "v2.0",
        "status": "CURRENT",
        "links": [{ "rel": "self", "href": format!("{base}/network/v2.0/") }],
    }] })
}

/// `GET /network/v2.0/`: the resource collections.
pub fn network_resources(base: &str) -> Value {
    let collections = [
        ("network", "networks"),
        ("subnet", "subnets"),
        ("port", "ports"),
        ("router", "routers"),
        ("floatingip", "floatingips"),
        ("security_group", "security-groups"),
        ("security_group_rule", "security-group-rules"),
        (
            "default_security_group_rule",
            "default-security-group-rules",
        ),
    ];
    let resources: Vec<Value> = collections
        .iter()
        .map(|(name, collection)| {
            json!({
                "name": name,
                "collection": collection,
                "links": [{ "rel": "self", "href": format!("{base}/network/v2.0/{collection}") }],
            })
        })
        .collect();
    json!({ "resources": resources })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_point_at_the_public_base() {
        let base = "https://edge:8443";
        assert_eq!(
            identity_versions(base)["versions"]["values"][0]["links"][0]["href"],
            "https://edge:8443/identity/v3/"
        );
        let compute = compute_version(base);
        assert_eq!(compute["version"]["version"], Microversion::MAX.to_string());
        assert_eq!(compute["version"]["min_version"], "2.1");
        assert_eq!(image_versions(base)["versions"][0]["id"], "v2.16");
        assert_eq!(
            network_versions(base)["versions"][0]["links"][0]["href"],
            "https://edge:8443/network/v2.0/"
        );
    }
}
