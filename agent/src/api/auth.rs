//! Who is calling: the `X-Auth-Token` of a request, validated by the identity domain.
//!
//! Every OpenStack route but token issue and version discovery needs a caller. Validation is the
//! hot path of the whole API (each client call pays it), so it runs inline: the identity layer
//! answers from its cache without touching disk in the common case.

use super::ApiState;
use super::error::ApiError;
use crate::identity::policy::Caller;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The header clients put their token in.
pub const AUTH_TOKEN: &str = "x-auth-token";

/// A request with a valid token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl FromRequestParts<ApiState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(AUTH_TOKEN)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let info = state
            .identity
            .validate_caller(token)
            .map_err(|err| ApiError::from_domain(&err))?;
        Ok(Self(Caller::new(info)))
    }
}

/// Runs blocking domain work (SQLite, libvirt, password hashing) off the async workers.
pub async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| {
            tracing::error!(%err, "request worker panicked");
            Err(ApiError::internal())
        })
}
