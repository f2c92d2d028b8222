//! `/os-keypairs`: a user's SSH keys. Keypairs belong to users, not projects, so any valid token
//! may manage its own user's keys; an admin may name another user with `?user_id=`.

use crate::api::ApiState;
use crate::api::auth::{Authenticated, blocking};
use crate::api::body::JsonBody;
use crate::api::error::ApiError;
use crate::api::microversion::Microversion;
use crate::compute::keypair::{Keypair, NewKeypair};
use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Default, Deserialize)]
pub(super) struct UserQuery {
    user_id: Option<String>,
}

/// Whose keypairs a request is about.
fn owner(caller: &Authenticated, query: &UserQuery) -> Result<String, ApiError> {
    match &query.user_id {
        Some(user) if user != caller.0.user_id() => {
            if caller.0.is_admin() {
                Ok(user.clone())
            } else {
                Err(ApiError::forbidden(
                    "Policy doesn't allow os_compute_api:os-keypairs to be performed for another user.",
                ))
            }
        }
        _ => Ok(caller.0.user_id().to_owned()),
    }
}

fn keypair_doc(keypair: &Keypair, version: Microversion, full: bool) -> Value {
    let mut doc = json!({
        "name": keypair.name,
        "public_key": keypair.public_key,
        "fingerprint": keypair.fingerprint,
    });
    if version.at_least(2) {
        doc["type"] = json!(keypair.key_type);
    }
    if full {
        doc["user_id"] = json!(keypair.user_id);
        doc["created_at"] = json!(
            keypair
                .created_at
                .strftime("%Y-%m-%dT%H:%M:%S.000000")
                .to_string()
        );
        doc["deleted"] = json!(false);
        doc["deleted_at"] = Value::Null;
        doc["updated_at"] = Value::Null;
        doc["id"] = json!(0);
    }
    doc
}

/// `GET /os-keypairs`.
pub(super) async fn list(
    State(state): State<ApiState>,
    Extension(version): Extension<Microversion>,
    caller: Authenticated,
    Query(query): Query<UserQuery>,
) -> Result<Json<Value>, ApiError> {
    let user = owner(&caller, &query)?;
    let compute = state.compute.clone();
    let keypairs = blocking(move || {
        compute
            .keypairs(&user)
            .map_err(|e| ApiError::from_domain(&e))
    })
    .await?;
    let docs: Vec<Value> = keypairs
        .iter()
        .map(|k| json!({ "keypair": keypair_doc(k, version, false) }))
        .collect();
    Ok(Json(json!({ "keypairs": docs })))
}

/// `GET /os-keypairs/{name}`.
pub(super) async fn show(
    State(state): State<ApiState>,
    Extension(version): Extension<Microversion>,
    caller: Authenticated,
    Path(name): Path<String>,
    Query(query): Query<UserQuery>,
) -> Result<Json<Value>, ApiError> {
    let user = owner(&caller, &query)?;
    let compute = state.compute.clone();
    let keypair = blocking(move || {
        compute
            .keypair(&user, &name)
            .map_err(|e| ApiError::from_domain(&e))
    })
    .await?;
    Ok(Json(
        json!({ "keypair": keypair_doc(&keypair, version, true) }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateKeypair {
    keypair: KeypairBody,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeypairBody {
    name: String,
    public_key: Option<String>,
    #[serde(rename = "type")]
    key_type: Option<String>,
    user_id: Option<String>,
}

/// `POST /os-keypairs`: import a public key, or generate a keypair and return its private key once.
pub(super) async fn create(
    State(state): State<ApiState>,
    Extension(version): Extension<Microversion>,
    caller: Authenticated,
    JsonBody(body): JsonBody<CreateKeypair>,
) -> Result<Response, ApiError> {
    let body = body.keypair;
    if let Some(kind) = &body.key_type
        && kind != "ssh"
    {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute type. Value: {kind}. 'ssh' is the only type offered here."
        )));
    }
    let user = owner(
        &caller,
        &UserQuery {
            user_id: body.user_id.clone(),
        },
    )?;
    let request = NewKeypair {
        name: body.name,
        user_id: user,
        public_key: body.public_key,
    };
    let compute = state.compute.clone();
    let created = blocking(move || {
        compute
            .create_keypair(&request)
            .map_err(|e| ApiError::from_domain(&e))
    })
    .await?;
    let mut doc = keypair_doc(&created.keypair, version, false);
    doc["user_id"] = json!(created.keypair.user_id);
    if let Some(private_key) = created.private_key {
        doc["private_key"] = json!(private_key);
    }
    let status = if version.at_least(2) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "keypair": doc }))).into_response())
}

/// `DELETE /os-keypairs/{name}`.
pub(super) async fn delete(
    State(state): State<ApiState>,
    Extension(version): Extension<Microversion>,
    caller: Authenticated,
    Path(name): Path<String>,
    Query(query): Query<UserQuery>,
) -> Result<Response, ApiError> {
    let user = owner(&caller, &query)?;
    let compute = state.compute.clone();
    blocking(move || {
        compute
            .delete_keypair(&user, &name)
            .map_err(|e| ApiError::from_domain(&e))
    })
    .await?;
    Ok(if version.at_least(2) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::ACCEPTED
    }
    .into_response())
}
