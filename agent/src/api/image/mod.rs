//! Glance v2 at `/image/v2`: images (create, two-step streamed upload, download, list with filters,
//! show, JSON-patch update, delete) and image members.
//!
//! Uploads are streamed from the connection into the image store on a blocking worker — a
//! multi-gigabyte image never sits in memory — and bounded by `api.max_image_upload_bytes` (413).
//! Downloads stream the other way. Readers read; writes need `member` on the owning project (the
//! domain decides ownership and visibility; this file adds the role check the domain cannot know).

mod documents;

use super::ApiState;
use super::auth::{Authenticated, blocking};
use super::body::JsonBody;
use super::error::ApiError;
use crate::identity::policy::Caller;
use crate::image::{
    ChangeValue, ImageChange, ImageQuery, MemberStatus, MemberStatusFilter, NewImageRecord,
    SortDir, SortKey, VisibilityFilter,
};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use documents::{image_doc, member_doc};
use futures::StreamExt as _;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use uuid::Uuid;

/// Glance's default and largest page.
const DEFAULT_LIMIT: usize = 25;
const MAX_LIMIT: usize = 1000;

/// The image routes (full paths).
pub(super) fn routes() -> axum::Router<ApiState> {
    let v = "/image/v2";
    axum::Router::new()
        .route(&format!("{v}/images"), get(list).post(create))
        .route(
            &format!("{v}/images/{{id}}"),
            get(show).patch(update).delete(delete),
        )
        // Uploads are bounded by `api.max_image_upload_bytes`, not the JSON body limit.
        .route(
            &format!("{v}/images/{{id}}/file"),
            put(upload)
                .get(download)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            &format!("{v}/images/{{id}}/members"),
            get(list_members).post(add_member),
        )
        .route(
            &format!("{v}/images/{{id}}/members/{{member}}"),
            get(show_member).put(update_member).delete(delete_member),
        )
        .route(&format!("{v}/schemas/image"), get(documents::image_schema))
        .route(
            &format!("{v}/schemas/images"),
            get(documents::images_schema),
        )
}

fn image_caller(caller: &Caller) -> crate::image::Caller {
    crate::image::Caller {
        project_id: caller.project_id().unwrap_or_default().to_owned(),
        is_admin: caller.is_admin(),
    }
}

/// Writes need `member` on the caller's project (or admin); the domain then checks ownership.
fn require_writer(caller: &Caller, rule: &str) -> Result<(), ApiError> {
    let allowed = caller.is_admin()
        || caller
            .project_id()
            .is_some_and(|p| caller.can_write_project(p));
    if allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "You are not authorized to complete {rule} action."
        )))
    }
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found(format!("No image found with ID {id}")))
}

/// `POST /images`: a queued image record.
async fn create(
    State(state): State<ApiState>,
    caller: Authenticated,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    require_writer(&caller.0, "add_image")?;
    let record = new_record(body)?;
    let who = image_caller(&caller.0);
    let image =
        blocking(move || state.images.create(&who, record).map_err(ApiError::domain)).await?;
    Ok((StatusCode::CREATED, Json(image_doc(&image))).into_response())
}

fn text(field: &str, value: &Value) -> Result<String, ApiError> {
    value.as_str().map(str::to_owned).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid input for field/attribute {field}: {value} is not of type 'string'"
        ))
    })
}

fn number(field: &str, value: &Value) -> Result<u64, ApiError> {
    value.as_u64().ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid input for field/attribute {field}: {value} is not a non-negative integer"
        ))
    })
}

fn new_record(body: Map<String, Value>) -> Result<NewImageRecord, ApiError> {
    let mut record = NewImageRecord::default();
    for (key, value) in body {
        match key.as_str() {
            "id" => {
                let id = text("id", &value)?;
                record.id = Some(Uuid::parse_str(&id).map_err(|_| {
                    ApiError::bad_request(format!(
                        "Invalid input for field/attribute id: {id} is not a UUID"
                    ))
                })?);
            }
            "name" if value.is_null() => record.name = None,
            "name" => record.name = Some(text("name", &value)?),
            "disk_format" | "container_format" | "owner" if value.is_null() => {}
            "disk_format" => record.disk_format = Some(text("disk_format", &value)?),
            "container_format" => record.container_format = Some(text("container_format", &value)?),
            "min_disk" => record.min_disk = number("min_disk", &value)?,
            "min_ram" => record.min_ram = number("min_ram", &value)?,
            "visibility" => record.visibility = Some(text("visibility", &value)?),
            "protected" => {
                record.protected = value.as_bool().ok_or_else(|| ApiError::bad_request(format!("Invalid input for field/attribute protected: {value} is not of type 'boolean'")))?;
            }
            "tags" => {
                let tags = value.as_array().ok_or_else(|| {
                    ApiError::bad_request("Invalid input for field/attribute tags: not an array")
                })?;
                record.tags = tags
                    .iter()
                    .map(|t| text("tags", t))
                    .collect::<Result<_, _>>()?;
            }
            "owner" => record.owner = Some(text("owner", &value)?),
            // Everything else is a free-form property; Glance stores property values as strings.
            _ => {
                let value = match value {
                    Value::String(s) => s,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "Invalid input for field/attribute {key}: {other} is not of type 'string'"
                        )));
                    }
                };
                record.properties.insert(key, value);
            }
        }
    }
    Ok(record)
}

/// `GET /images/{id}`.
async fn show(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let who = image_caller(&caller.0);
    let image = blocking(move || state.images.show(id, &who).map_err(ApiError::domain)).await?;
    Ok(Json(image_doc(&image)))
}

/// `GET /images` with Glance's filters, sort and pagination.
async fn list(
    State(state): State<ApiState>,
    caller: Authenticated,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let query = image_query(&params)?;
    let who = image_caller(&caller.0);
    let limit = query.limit;
    let page = blocking(move || state.images.list(&who, &query).map_err(ApiError::domain)).await?;
    let mut doc = json!({
        "images": page.images.iter().map(image_doc).collect::<Vec<_>>(),
        "first": "/v2/images",
        "schema": "/v2/schemas/images",
    });
    if let Some(marker) = page.next_marker {
        use std::fmt::Write as _;
        let mut next = format!("/v2/images?marker={marker}");
        if let Some(limit) = limit {
            let _ = write!(next, "&limit={limit}");
        }
        for (key, value) in params.iter().filter(|(k, _)| k != "marker" && k != "limit") {
            let _ = write!(next, "&{}={}", encode(key), encode(value));
        }
        doc["next"] = json!(next);
    }
    Ok(Json(doc))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn image_query(params: &[(String, String)]) -> Result<ImageQuery, ApiError> {
    let bad = |field: &str, value: &str| ApiError::bad_request(format!("Invalid {field}: {value}"));
    let mut query = ImageQuery::default();
    let mut sort_keys: Vec<SortKey> = Vec::new();
    let mut sort_dirs: Vec<SortDir> = Vec::new();
    for (key, value) in params {
        match key.as_str() {
            "name" => query.name = Some(value.clone()),
            "status" => query.status = Some(value.clone()),
            "visibility" => {
                query.visibility = Some(VisibilityFilter::parse(value).map_err(ApiError::domain)?);
            }
            "owner" => query.owner = Some(value.clone()),
            "member_status" => {
                query.member_status =
                    Some(MemberStatusFilter::parse(value).map_err(ApiError::domain)?);
            }
            "disk_format" => query.disk_format = Some(value.clone()),
            "container_format" => query.container_format = Some(value.clone()),
            "tag" => query.tags.push(value.clone()),
            "limit" => {
                let limit: usize = value.parse().map_err(|_| bad("limit", value))?;
                query.limit = Some(limit.min(MAX_LIMIT));
            }
            "marker" => {
                query.marker = Some(Uuid::parse_str(value).map_err(|_| bad("marker", value))?);
            }
            "sort_key" => sort_keys.push(SortKey::parse(value).map_err(ApiError::domain)?),
            "sort_dir" => sort_dirs.push(SortDir::parse(value).map_err(ApiError::domain)?),
            "sort" => {
                for item in value.split(',') {
                    let (key, dir) = item.split_once(':').unwrap_or((item, "desc"));
                    query.sort.push((
                        SortKey::parse(key.trim()).map_err(ApiError::domain)?,
                        SortDir::parse(dir.trim()).map_err(ApiError::domain)?,
                    ));
                }
            }
            // Glance filters on any other key as a property.
            _ => {
                query.properties.insert(key.clone(), value.clone());
            }
        }
    }
    if !sort_keys.is_empty() {
        if !query.sort.is_empty() {
            return Err(ApiError::bad_request(
                "The 'sort' parameter cannot be combined with 'sort_key'/'sort_dir'.",
            ));
        }
        for (i, key) in sort_keys.into_iter().enumerate() {
            let dir = sort_dirs
                .get(i)
                .or(sort_dirs.first())
                .copied()
                .unwrap_or_default();
            query.sort.push((key, dir));
        }
    }
    if query.limit.is_none() {
        query.limit = Some(DEFAULT_LIMIT);
    }
    Ok(query)
}

/// `PATCH /images/{id}` with `application/openstack-images-v2.1-json-patch`.
async fn update(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
    JsonBody(ops): JsonBody<Vec<Map<String, Value>>>,
) -> Result<Json<Value>, ApiError> {
    require_writer(&caller.0, "modify_image")?;
    let id = parse_id(&id)?;
    let changes = ops.iter().map(change).collect::<Result<Vec<_>, _>>()?;
    let who = image_caller(&caller.0);
    let image = blocking(move || {
        state
            .images
            .update(id, &who, &changes)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(Json(image_doc(&image)))
}

fn change(op: &Map<String, Value>) -> Result<ImageChange, ApiError> {
    let name = op
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("Unable to find 'op' in JSON Schema change"))?;
    let path = op
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("Unable to find 'path' in JSON Schema change"))?;
    let attribute = path
        .strip_prefix('/')
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .ok_or_else(|| {
            ApiError::bad_request(format!("Invalid JSON pointer for this resource: '{path}'"))
        })?
        .replace("~1", "/")
        .replace("~0", "~");
    let value = || -> Result<ChangeValue, ApiError> {
        let value = op
            .get("value")
            .ok_or_else(|| ApiError::bad_request("Unable to find 'value' in JSON Schema change"))?;
        Ok(match value {
            Value::Null => ChangeValue::Null,
            Value::Bool(b) => ChangeValue::Bool(*b),
            Value::Number(n) => ChangeValue::Int(n.as_u64().ok_or_else(|| {
                ApiError::bad_request(format!("Invalid value for {attribute}: {n}"))
            })?),
            Value::String(s) => ChangeValue::Text(s.clone()),
            Value::Array(items) => ChangeValue::List(
                items
                    .iter()
                    .map(|t| text(&attribute, t))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(_) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid value for {attribute}: objects are not allowed"
                )));
            }
        })
    };
    Ok(match name {
        "add" => ImageChange::Add {
            value: value()?,
            attribute,
        },
        "replace" => ImageChange::Replace {
            value: value()?,
            attribute,
        },
        "remove" => ImageChange::Remove { attribute },
        other => {
            return Err(ApiError::bad_request(format!(
                "Operation '{other}' is not supported; use add, replace or remove"
            )));
        }
    })
}

/// `DELETE /images/{id}`.
async fn delete(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_writer(&caller.0, "delete_image")?;
    let id = parse_id(&id)?;
    let who = image_caller(&caller.0);
    blocking(move || state.images.delete(id, &who).map_err(ApiError::domain)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Reads the request body as a blocking `Read`, refusing more than `limit` bytes.
struct BoundedBody {
    inner: tokio_util::io::SyncIoBridge<
        tokio_util::io::StreamReader<
            futures::stream::BoxStream<'static, std::io::Result<axum::body::Bytes>>,
            axum::body::Bytes,
        >,
    >,
    left: u64,
    exceeded: Arc<AtomicBool>,
}

impl Read for BoundedBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.exceeded.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other(
                "image larger than api.max_image_upload_bytes",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// `PUT /images/{id}/file`: streams the data into the store.
async fn upload(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_writer(&caller.0, "upload_image")?;
    let id = parse_id(&id)?;
    let limit = state.max_image_upload_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Image exceeds the storage quota: at most {limit} bytes may be uploaded."),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let exceeded = Arc::new(AtomicBool::new(false));
    let stream = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other))
        .boxed();
    let mut reader = BoundedBody {
        inner: tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream)),
        left: limit,
        exceeded: exceeded.clone(),
    };
    let who = image_caller(&caller.0);
    let result = blocking(move || {
        state
            .images
            .upload(id, &who, &mut reader)
            .map_err(ApiError::domain)
    })
    .await;
    match result {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(_) if exceeded.load(Ordering::SeqCst) => Err(too_large()),
        Err(err) => Err(err),
    }
}

/// `GET /images/{id}/file`: streams the data; 204 while the image has none.
async fn download(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let who = image_caller(&caller.0);
    let data = blocking(move || state.images.open_data(id, &who).map_err(ApiError::domain)).await?;
    let Some(data) = data else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<axum::body::Bytes>>(4);
    let mut reader = data.reader;
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if sender
                        .blocking_send(Ok(axum::body::Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        break; // the client went away
                    }
                }
                Err(err) => {
                    let _ = sender.blocking_send(Err(err));
                    break;
                }
            }
        }
    });
    let stream = futures::stream::unfold(receiver, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(data.size));
    if let Ok(md5) = HeaderValue::from_str(&data.checksum_md5) {
        headers.insert("content-md5", md5);
    }
    Ok(response)
}

/// `GET /images/{id}/members`.
async fn list_members(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let who = image_caller(&caller.0);
    let members = blocking(move || {
        state
            .images
            .list_members(id, &who)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(Json(
        json!({ "members": members.iter().map(member_doc).collect::<Vec<_>>(), "schema": "/v2/schemas/members" }),
    ))
}

/// `POST /images/{id}/members` with `{"member": "<project>"}`.
async fn add_member(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<BTreeMap<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    require_writer(&caller.0, "add_member")?;
    let id = parse_id(&id)?;
    let member = body
        .get("member")
        .map(|v| text("member", v))
        .transpose()?
        .ok_or_else(|| ApiError::bad_request("'member' is a required property"))?;
    let who = image_caller(&caller.0);
    let created = blocking(move || {
        state
            .images
            .add_member(id, &who, &member)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(Json(member_doc(&created)))
}

/// `GET /images/{id}/members/{member}`.
async fn show_member(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path((id, member)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let who = image_caller(&caller.0);
    let found = blocking(move || {
        state
            .images
            .get_member(id, &who, &member)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(Json(member_doc(&found)))
}

/// `PUT /images/{id}/members/{member}` with `{"status": "accepted"}`.
async fn update_member(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path((id, member)): Path<(String, String)>,
    JsonBody(body): JsonBody<BTreeMap<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    require_writer(&caller.0, "modify_member")?;
    let id = parse_id(&id)?;
    let status = body
        .get("status")
        .map(|v| text("status", v))
        .transpose()?
        .ok_or_else(|| ApiError::bad_request("'status' is a required property"))?;
    let status = MemberStatus::parse(&status).map_err(ApiError::domain)?;
    let who = image_caller(&caller.0);
    let updated = blocking(move || {
        state
            .images
            .update_member_status(id, &who, &member, status)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(Json(member_doc(&updated)))
}

/// `DELETE /images/{id}/members/{member}`.
async fn delete_member(
    State(state): State<ApiState>,
    caller: Authenticated,
    Path((id, member)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    require_writer(&caller.0, "delete_member")?;
    let id = parse_id(&id)?;
    let who = image_caller(&caller.0);
    blocking(move || {
        state
            .images
            .delete_member(id, &who, &member)
            .map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Feeds `data` to every image request parser (the fuzz target's entry).
pub(super) fn parse_probe(data: &[u8]) {
    if let Ok(body) = super::body::parse::<Map<String, Value>>(data) {
        let _ = new_record(body);
    }
    if let Ok(ops) = super::body::parse::<Vec<Map<String, Value>>>(data) {
        for op in &ops {
            let _ = change(op);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let params: Vec<(String, String)> = text
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let _ = image_query(&params);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn unknown_query_keys_filter_on_properties_and_sorting_is_parsed() {
        let query = image_query(&params(&[
            ("os_distro", "ubuntu"),
            ("sort", "name:asc,created_at"),
            ("tag", "a"),
            ("tag", "b"),
        ]))
        .expect("query");
        assert_eq!(query.properties["os_distro"], "ubuntu");
        assert_eq!(
            query.sort,
            vec![
                (SortKey::Name, SortDir::Asc),
                (SortKey::CreatedAt, SortDir::Desc)
            ]
        );
        assert_eq!(query.tags, ["a", "b"]);
        assert_eq!(query.limit, Some(DEFAULT_LIMIT));
        assert!(image_query(&params(&[("limit", "x")])).is_err());
        assert!(image_query(&params(&[("sort_key", "bogus")])).is_err());
        assert!(image_query(&params(&[("sort", "name:asc"), ("sort_key", "name")])).is_err());
    }

    #[test]
    fn patch_operations_become_domain_changes() {
        let op = |v: Value| v.as_object().cloned().expect("object");
        assert_eq!(
            change(&op(json!({"op": "replace", "path": "/name", "value": "x"}))).expect("ok"),
            ImageChange::Replace {
                attribute: "name".into(),
                value: ChangeValue::Text("x".into())
            }
        );
        assert_eq!(
            change(&op(json!({"op": "remove", "path": "/a~1b"}))).expect("ok"),
            ImageChange::Remove {
                attribute: "a/b".into()
            }
        );
        for bad in [
            json!({"op": "move", "path": "/name", "value": "x"}),
            json!({"op": "add", "path": "name", "value": "x"}),
            json!({"op": "add", "path": "/a/b", "value": "x"}),
            json!({"op": "add", "path": "/name"}),
            json!({"path": "/name", "value": "x"}),
            json!({"op": "add", "path": "/x", "value": {"nested": 1}}),
        ] {
            assert_eq!(
                change(&op(bad.clone())).expect_err("bad").status(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn create_bodies_split_core_attributes_from_properties() {
        let body = json!({"name": "Ubuntu 24.04", "disk_format": "qcow2", "container_format": "bare",
                          "min_disk": 5, "os_distro": "ubuntu", "tags": ["scs"], "protected": false});
        let record = new_record(body.as_object().cloned().expect("object")).expect("record");
        assert_eq!(record.name.as_deref(), Some("Ubuntu 24.04"));
        assert_eq!(record.min_disk, 5);
        assert_eq!(record.properties["os_distro"], "ubuntu");
        assert_eq!(record.tags, ["scs"]);
        let bad = json!({"min_disk": -1});
        assert!(new_record(bad.as_object().cloned().expect("object")).is_err());
        let bad = json!({"hw_rng_model": 7});
        assert!(new_record(bad.as_object().cloned().expect("object")).is_err());
    }
}
