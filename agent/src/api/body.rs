//! Request bodies: JSON parsed into typed requests with OpenStack-style 400 and 413 answers.
//!
//! axum's own `Json` rejects with plain-text bodies and its own wording; clients of an OpenStack API
//! expect the service's error body and a message that names the offending field. Bodies are bounded
//! (`DefaultBodyLimit` in the router): a larger one is a 413 before any parsing happens.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

/// The largest JSON body the API reads (image data is streamed and not bounded by this).
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;

/// A JSON request body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let response = rejection.into_response();
            if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request is too large.")
            } else {
                ApiError::bad_request("The request body could not be read.")
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses `bytes` as `T`, naming the path of the first offending field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "The request body is empty; a JSON object is required.",
        ));
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("Malformed JSON in request body: {inner}"))
        } else if path == "." {
            ApiError::bad_request(format!("Invalid input: {inner}"))
        } else {
            ApiError::bad_request(format!("Invalid input for field/attribute {path}: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        server: Inner,
    }
    #[derive(Debug, Deserialize)]
    struct Inner {
        #[allow(dead_code)]
        name: String,
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        let err = parse::<Outer>(b"{\"server\": ").expect_err("eof");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(
            err.message().starts_with("Malformed JSON"),
            "{}",
            err.message()
        );
        assert!(parse::<Outer>(b"  ").is_err());
    }

    #[test]
    fn a_wrong_field_is_named() {
        let err = parse::<Outer>(br#"{"server": {"name": 7}}"#).expect_err("type");
        assert!(err.message().contains("server.name"), "{}", err.message());
    }

    proptest::proptest! {
        /// Whatever bytes arrive, parsing answers Ok or a 400 — it never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            if let Err(err) = parse::<Outer>(&bytes) {
                proptest::prop_assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            }
        }
    }
}
