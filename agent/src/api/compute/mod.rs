//! Nova v2.1 at `/compute/v2.1`: flavors, servers and their actions, keypairs, limits and the one
//! availability zone.
//!
//! Every request is microversion-negotiated by a layer that rejects unsupported versions before
//! any handler runs and stamps the answer with the version it speaks; handlers read the negotiated
//! [`Microversion`] where Nova's response shapes changed.

mod flavors;
mod keypairs;
mod limits;
mod servers;
#[cfg(test)]
mod tests;

use super::ApiState;
use super::error::ApiError;
use super::microversion::Microversion;
use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// The compute routes (full paths).
pub(super) fn routes() -> Router<ApiState> {
    let v = "/compute/v2.1";
    Router::new()
        .route(
            &format!("{v}/flavors"),
            get(flavors::list).post(flavors::create),
        )
        .route(&format!("{v}/flavors/detail"), get(flavors::list_detail))
        .route(
            &format!("{v}/flavors/{{id}}"),
            get(flavors::show).delete(flavors::delete),
        )
        .route(
            &format!("{v}/flavors/{{id}}/os-extra_specs"),
            get(flavors::extra_specs),
        )
        .route(
            &format!("{v}/flavors/{{id}}/os-extra_specs/{{key}}"),
            get(flavors::extra_spec),
        )
        .route(
            &format!("{v}/servers"),
            get(servers::list).post(servers::create),
        )
        .route(&format!("{v}/servers/detail"), get(servers::list_detail))
        .route(
            &format!("{v}/servers/{{id}}"),
            get(servers::show).delete(servers::delete),
        )
        .route(&format!("{v}/servers/{{id}}/action"), post(servers::action))
        .route(
            &format!("{v}/os-keypairs"),
            get(keypairs::list).post(keypairs::create),
        )
        .route(
            &format!("{v}/os-keypairs/{{name}}"),
            get(keypairs::show).delete(keypairs::delete),
        )
        .route(&format!("{v}/limits"), get(limits::limits))
        .route(
            &format!("{v}/os-availability-zone"),
            get(limits::availability_zones),
        )
        .route(
            &format!("{v}/os-availability-zone/detail"),
            get(limits::availability_zones),
        )
        .layer(axum::middleware::from_fn(negotiate))
}

/// Feeds `data` to every compute request parser (the fuzz target's entry); results are dropped, the
/// point is that none of them panics.
pub(super) fn parse_probe(data: &[u8]) {
    let _ = super::body::parse::<servers::CreateServer>(data);
    let _ = super::body::parse::<flavors::CreateFlavor>(data);
    let _ = super::body::parse::<keypairs::CreateKeypair>(data);
    let _ = super::body::parse::<std::collections::BTreeMap<String, serde_json::Value>>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let mut headers = axum::http::HeaderMap::new();
        if let Ok(value) = axum::http::HeaderValue::from_str(text) {
            headers.insert("openstack-api-version", value);
            let _ = Microversion::negotiate(&headers);
        }
    }
}

/// Negotiates the microversion, hands it to the handler and stamps the response.
async fn negotiate(mut request: Request, next: Next) -> Response {
    let version = match Microversion::negotiate(request.headers()) {
        Ok(version) => version,
        Err(err) => return err.into_response(),
    };
    request.extensions_mut().insert(version);
    let mut response = next.run(request).await;
    version.stamp(response.headers_mut());
    response
}

/// The `links` of a resource.
fn links(base: &str, collection: &str, id: &str) -> serde_json::Value {
    serde_json::json!([
        { "rel": "self", "href": format!("{base}/compute/v2.1/{collection}/{id}") },
        { "rel": "bookmark", "href": format!("{base}/compute/{collection}/{id}") },
    ])
}

/// Common list query parameters: `limit` and `marker`.
#[derive(Debug, Default, serde::Deserialize)]
struct Page {
    limit: Option<String>,
    marker: Option<String>,
}

impl Page {
    /// Applies the page to an ordered list whose items have ids.
    fn apply<T>(&self, items: Vec<T>, id_of: impl Fn(&T) -> String) -> Result<Vec<T>, ApiError> {
        let limit = match &self.limit {
            None => None,
            Some(text) => Some(text.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!(
                    "Invalid input for query parameters limit. Value: {text}."
                ))
            })?),
        };
        let start = match &self.marker {
            None => 0,
            Some(marker) => {
                items
                    .iter()
                    .position(|item| id_of(item) == *marker)
                    .ok_or_else(|| ApiError::bad_request(format!("marker [{marker}] not found")))?
                    + 1
            }
        };
        Ok(items
            .into_iter()
            .skip(start)
            .take(limit.unwrap_or(usize::MAX))
            .collect())
    }
}
