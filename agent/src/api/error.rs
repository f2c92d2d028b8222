//! The one place domain errors become HTTP statuses and OpenStack error bodies.
//!
//! OpenStack services wrap errors as `{"<kind>": {"code": N, "message": "..."}}` (Nova's
//! `itemNotFound`, `badRequest`, `conflictingRequest`…). Internal errors are logged with their detail
//! and answered with a generic message, so nothing about the host leaks to clients.

use crate::error_class::{Classify, ErrorClass};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error on its way to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// 404 with a message.
    pub fn not_found(message: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.to_owned(),
        }
    }

    /// 500 with the generic message.
    pub fn internal() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: GENERIC.to_owned(),
        }
    }

    /// Maps any classified domain error.
    pub fn from_domain<E: Classify + std::fmt::Display>(err: &E) -> Self {
        let class = err.class();
        let status = match class {
            ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
            ErrorClass::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorClass::Forbidden => StatusCode::FORBIDDEN,
            ErrorClass::NotFound => StatusCode::NOT_FOUND,
            ErrorClass::Conflict => StatusCode::CONFLICT,
            ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if class == ErrorClass::Internal {
            tracing::error!(error = %err, "internal error answering a request");
            return Self {
                status,
                message: GENERIC.to_owned(),
            };
        }
        Self {
            status,
            message: err.to_string(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body OpenStack clients expect.
    pub fn body(&self) -> serde_json::Value {
        let kind = match self.status {
            StatusCode::BAD_REQUEST => "badRequest",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "itemNotFound",
            StatusCode::CONFLICT => "conflictingRequest",
            StatusCode::SERVICE_UNAVAILABLE => "serviceUnavailable",
            _ => "computeFault",
        };
        json!({ kind: { "code": self.status.as_u16(), "message": self.message } })
    }
}

const GENERIC: &str =
    "The server has either erred or is incapable of performing the requested operation.";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::ComputeError;

    #[test]
    fn domain_errors_map_to_openstack_statuses_and_bodies() {
        let err = ApiError::from_domain(&ComputeError::ServerNotFound("x".into()));
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            err.body(),
            json!({"itemNotFound": {"code": 404, "message": "server x could not be found"}})
        );
        let err = ApiError::from_domain(&ComputeError::Duplicate {
            what: "server",
            id: "y".into(),
        });
        assert_eq!(err.body()["conflictingRequest"]["code"], 409);
    }

    #[test]
    fn unauthorized_and_forbidden_map_to_401_and_403() {
        let err = ApiError::from_domain(&crate::identity::IdentityError::Unauthorized);
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(err.body()["unauthorized"]["code"], 401);
        let err =
            ApiError::from_domain(&crate::identity::IdentityError::Forbidden("no role".into()));
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        assert_eq!(err.body()["forbidden"]["code"], 403);
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let err = ApiError::from_domain(&ComputeError::Store(crate::store::StoreError::Query(
            rusqlite::Error::InvalidPath("/var/lib/scs-edge/secret".into()),
        )));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!err.body().to_string().contains("secret"));
    }
}
