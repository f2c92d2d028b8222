//! Releases over HTTP: the sites' repository (`/node/v1/sites/{site}/repository/…`, mTLS, with
//! byte ranges) and the operators' view (`/api/v1/releases…`). Publishing is the CLI's: a release
//! is hundreds of megabytes already on the region's host, not a request body.

use super::node::authorized;
use super::operator::authenticate;
use super::range::{self, Answer};
use super::{ApiError, AppState, Peer, body_of, parse_json};
use crate::releases::{Releases, ReleasesError, Served};
use crate::store::ReleaseRecord;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use scs_edge_proto::ErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

/// How much of a release file is read per chunk sent: 4 KiB (the stream's default) held 50 sites'
/// downloads to a third of what one plain HTTPS download reaches (`make bench`, part downloads).
const READ_CHUNK: usize = 64 * 1024;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/node/v1/sites/{site}/repository/{folder}/{file}",
            get(repository_file),
        )
        .route("/api/v1/releases", get(list_releases))
        .route("/api/v1/releases/{version}", get(show_release))
        .route(
            "/api/v1/releases/{version}/withdraw",
            post(withdraw_release),
        )
}

fn releases(state: &AppState) -> Result<&Releases, ApiError> {
    state
        .releases
        .as_ref()
        .ok_or_else(|| ReleasesError::NotConfigured.into())
}

/// JSON view of a release.
pub fn release_json(record: &ReleaseRecord) -> Value {
    json!({
        "version": record.manifest.version.to_string(),
        "state": record.state.as_str(),
        "min_from_version": record.manifest.min_from_version.to_string(),
        "max_version": record.manifest.max_version.as_ref().map(ToString::to_string),
        "bytes": record.manifest.artifacts.iter().map(|a| a.length).sum::<u64>(),
        "artifacts": record.manifest.artifacts,
        "published_at": record.published_at,
        "published_by": record.published_by,
        "withdrawal": record.withdrawal.as_ref().map(|w| json!({
            "at": w.at, "by": w.by, "reason": w.reason,
        })),
    })
}

async fn repository_file(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path((site, folder, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorized(&state, &peer, &site).await?;
    let path = match releases(&state)?.served(&site, &folder, &file).await? {
        Served::File(path) => path,
        // tough reads a 404 as "no such file": the end of the root chain, or a missing target.
        Served::NotFound => return Ok(StatusCode::NOT_FOUND.into_response()),
        Served::NotOffered { version } => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::ReleaseNotOffered,
                match version {
                    Some(version) => format!(
                        "release {version} is not offered to site {site}: its desired version names another"
                    ),
                    None => format!("{file} is not offered to site {site}"),
                },
            ));
        }
    };
    send_file(&path, &headers, folder == scs_edge_release::TARGETS_DIR).await
}

/// Sends `path`, whole or the one range asked for. Targets are named by their SHA-256 and never
/// change: they carry it as a strong ETag and may be cached; metadata (the timestamp is re-signed
/// in place) must not be.
async fn send_file(
    path: &std::path::Path,
    headers: &HeaderMap,
    content_addressed: bool,
) -> Result<Response, ApiError> {
    let internal = |err: std::io::Error| {
        tracing::warn!(path = %path.display(), %err, "cannot serve a release file");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; the region logged the cause",
        )
    };
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(StatusCode::NOT_FOUND.into_response());
        }
        Err(err) => return Err(internal(err)),
    };
    let length = file.metadata().await.map_err(internal)?.len();
    let asked = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok());
    let mut response = match range::answer(asked, length) {
        Answer::Whole => {
            let stream = tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK);
            let mut response = Response::new(Body::from_stream(stream));
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            response
        }
        Answer::Part { first, last } => {
            file.seek(std::io::SeekFrom::Start(first))
                .await
                .map_err(internal)?;
            let count = last - first + 1;
            let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), READ_CHUNK);
            let mut response = Response::new(Body::from_stream(stream));
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
            if let Ok(value) = HeaderValue::from_str(&format!("bytes {first}-{last}/{length}")) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            response
        }
        Answer::Unsatisfiable => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let sha256 = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.split_once('.'))
        .map(|(hash, _)| hash);
    match sha256 {
        Some(hash) if content_addressed => {
            if let Ok(value) = HeaderValue::from_str(&format!("\"{hash}\"")) {
                headers.insert(header::ETAG, value);
            }
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=31536000, immutable"),
            );
        }
        _ => {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    Ok(response)
}

async fn list_releases(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticate(&state, &peer, &headers).await?;
    let releases = releases(&state)?.list().await?;
    let releases: Vec<Value> = releases.iter().map(release_json).collect();
    Ok(Json(json!({ "releases": releases })).into_response())
}

async fn show_release(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticate(&state, &peer, &headers).await?;
    let release = releases(&state)?.show(&version).await?;
    Ok(Json(release_json(&release)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithdrawRequest {
    reason: String,
}

async fn withdraw_release(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let operator = authenticate(&state, &peer, &headers).await?;
    let request: WithdrawRequest = parse_json(&body_of(body)?)?;
    let release = releases(&state)?
        .withdraw(&version, &operator.name, &request.reason)
        .await?;
    Ok(Json(release_json(&release)).into_response())
}

/// The one mapping from release errors to HTTP answers.
impl From<ReleasesError> for ApiError {
    fn from(error: ReleasesError) -> Self {
        use ErrorCode as C;
        use StatusCode as S;
        match error {
            ReleasesError::Refused(_) => Self::new(
                S::UNPROCESSABLE_ENTITY,
                C::ReleaseRefused,
                error.to_string(),
            ),
            ReleasesError::NothingNew(_) => {
                Self::new(S::CONFLICT, C::BadRequest, error.to_string())
            }
            // Without a mirror, no release exists.
            ReleasesError::NotConfigured | ReleasesError::UnknownRelease(_) => {
                Self::new(S::NOT_FOUND, C::UnknownRelease, error.to_string())
            }
            ReleasesError::InvalidVersion(_) | ReleasesError::InvalidInput(_) => {
                Self::bad_request(error.to_string())
            }
            ReleasesError::Mirror(_) | ReleasesError::Config(_) | ReleasesError::Store(_) => {
                tracing::warn!(%error, "release request failed");
                Self::new(
                    S::INTERNAL_SERVER_ERROR,
                    C::Internal,
                    "internal error; the region logged the cause",
                )
            }
        }
    }
}
