//! Glance's JSON documents: an image with its properties flattened beside the core attributes, a
//! member, and the schemas clients fetch to learn which attributes are core.

use crate::image::{Image, ImageMember};
use axum::Json;

use serde_json::{Value, json};

/// An image as `GET /v2/images/{id}` shows it.
pub(super) fn image_doc(image: &Image) -> Value {
    let id = image.id.to_string();
    let mut doc = serde_json::Map::new();
    // Properties first, so a property can never shadow a core attribute.
    for (key, value) in &image.properties {
        doc.insert(key.clone(), json!(value));
    }
    let core = json!({
        "id": id,
        "name": image.name,
        "status": image.status.as_str(),
        "visibility": image.visibility.as_str(),
        "protected": image.protected,
        "os_hidden": false,
        "checksum": image.checksum_md5,
        "os_hash_algo": image.os_hash_algo(),
        "os_hash_value": image.hash_sha512,
        "owner": image.owner,
        "size": image.size_bytes,
        "virtual_size": image.virtual_size,
        "min_disk": image.min_disk_gb,
        "min_ram": image.min_ram_mb,
        "disk_format": image.disk_format.map(crate::image::format::DiskFormat::as_str),
        "container_format": image.container_format.map(crate::image::ContainerFormat::as_str),
        "tags": image.tags,
        "created_at": crate::api::openstack_time(image.created_at),
        "updated_at": crate::api::openstack_time(image.updated_at),
        "self": format!("/v2/images/{id}"),
        "file": format!("/v2/images/{id}/file"),
        "schema": "/v2/schemas/image",
    });
    if let Value::Object(core) = core {
        doc.extend(core);
    }
    Value::Object(doc)
}

/// An image member.
pub(super) fn member_doc(member: &ImageMember) -> Value {
    json!({
        "image_id": member.image_id,
        "member_id": member.member,
        "status": member.status.as_str(),
        "created_at": crate::api::openstack_time(member.created_at),
        "updated_at": crate::api::openstack_time(member.updated_at),
        "schema": "/v2/schemas/member",
    })
}

fn image_properties() -> Value {
    let string = json!({ "type": ["null", "string"] });
    json!({
        "id": { "type": "string", "readOnly": true },
        "name": string,
        "status": { "type": "string", "readOnly": true, "enum": ["queued", "saving", "active"] },
        "visibility": { "type": "string", "enum": ["public", "private", "shared", "community"] },
        "protected": { "type": "boolean" },
        "os_hidden": { "type": "boolean" },
        "checksum": { "type": ["null", "string"], "readOnly": true },
        "os_hash_algo": { "type": ["null", "string"], "readOnly": true },
        "os_hash_value": { "type": ["null", "string"], "readOnly": true },
        "owner": string,
        "size": { "type": ["null", "integer"], "readOnly": true },
        "virtual_size": { "type": ["null", "integer"], "readOnly": true },
        "min_disk": { "type": "integer" },
        "min_ram": { "type": "integer" },
        "disk_format": { "type": ["null", "string"], "enum": [null, "raw", "qcow2"] },
        "container_format": { "type": ["null", "string"], "enum": [null, "bare"] },
        "tags": { "type": "array", "items": { "type": "string" } },
        "created_at": { "type": "string", "readOnly": true },
        "updated_at": { "type": "string", "readOnly": true },
        "self": { "type": "string", "readOnly": true },
        "file": { "type": "string", "readOnly": true },
        "schema": { "type": "string", "readOnly": true },
    })
}

/// `GET /v2/schemas/image`: which attributes are core; everything else is a string property.
pub(super) async fn image_schema() -> Json<Value> {
    Json(json!({
        "name": "image",
        "properties": image_properties(),
        "additionalProperties": { "type": "string" },
        "links": [
            { "rel": "self", "href": "{self}" },
            { "rel": "enclosure", "href": "{file}" },
            { "rel": "describedby", "href": "{schema}" },
        ],
    }))
}

/// `GET /v2/schemas/images`.
pub(super) async fn images_schema() -> Json<Value> {
    Json(json!({
        "name": "images",
        "properties": {
            "images": { "type": "array", "items": { "name": "image", "properties": image_properties(), "additionalProperties": { "type": "string" } } },
            "schema": { "type": "string" },
            "first": { "type": "string" },
            "next": { "type": "string" },
        },
        "links": [
            { "rel": "first", "href": "{first}" },
            { "rel": "next", "href": "{next}" },
            { "rel": "describedby", "href": "{schema}" },
        ],
    }))
}
