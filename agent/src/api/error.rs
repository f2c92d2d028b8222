//! The one place domain errors become HTTP statuses and OpenStack error bodies.
//!
//! Each OpenStack service wraps its errors differently, and clients parse them: Nova answers
//! `{"itemNotFound": {"code": 404, "message": …}}`, Neutron `{"NeutronError": {"type", "message",
//! "detail"}}`, Keystone `{"error": {"code", "title", "message"}}` and Glance (webob)
//! `{"code", "title", "message"}`. Handlers return one service-neutral [`ApiError`]; its response
//! carries the error as an extension and [`render_for`], layered on each service's routes, writes the
//! body that service's clients expect — so a 404 from the fallback, a 413 from the body limit and a
//! domain error all come out right without any handler knowing the shapes. Internal errors are logged
//! with their detail and answered with a generic message, so nothing about the host leaks.

use crate::error_class::{Classify, ErrorClass};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The OpenStack service whose error dialect a response speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Keystone v3.
    Identity,
    /// Nova v2.1.
    Compute,
    /// Glance v2.
    Image,
    /// Neutron v2.0.
    Network,
    /// Our own endpoints (`/healthz`, `/metrics`, version roots): Nova-like bodies.
    Node,
}

/// An error on its way to the client, before it knows which service it speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Neutron's machine-readable `type` (e.g. `NetworkNotFound`); derived from the status if absent.
    kind: Option<String>,
}

impl ApiError {
    /// An error with an explicit status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: no or no valid token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        )
    }

    /// 403: authenticated, but the policy says no.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: the request clashes with current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 500 with the generic message.
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, GENERIC)
    }

    /// Sets Neutron's error `type`.
    #[must_use]
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
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
            ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if class == ErrorClass::Internal {
            tracing::error!(error = %err, "internal error answering a request");
            return Self::internal();
        }
        if class == ErrorClass::Unauthorized {
            // Never say why (unknown user, wrong password, disabled): that would help guessing.
            tracing::debug!(error = %err, "authentication refused");
            return Self::unauthorized();
        }
        Self::new(status, err.to_string())
    }

    /// [`ApiError::from_domain`] by value, for `map_err(ApiError::domain)`.
    #[allow(clippy::needless_pass_by_value)] // the shape `map_err` wants
    pub fn domain<E: Classify + std::fmt::Display>(err: E) -> Self {
        Self::from_domain(&err)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message clients see.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The body `service`'s clients expect.
    pub fn body(&self, service: Service) -> serde_json::Value {
        let code = self.status.as_u16();
        let title = self.status.canonical_reason().unwrap_or("Error");
        match service {
            Service::Identity => {
                json!({ "error": { "code": code, "title": title, "message": self.message } })
            }
            Service::Network => {
                let kind = self
                    .kind
                    .clone()
                    .unwrap_or_else(|| neutron_kind(self.status).to_owned());
                json!({ "NeutronError": { "type": kind, "message": self.message, "detail": "" } })
            }
            Service::Image => {
                json!({ "code": format!("{code} {title}"), "title": title, "message": self.message })
            }
            Service::Compute | Service::Node => {
                json!({ nova_kind(self.status): { "code": code, "message": self.message } })
            }
        }
    }
}

fn nova_kind(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "badRequest",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "itemNotFound",
        StatusCode::METHOD_NOT_ALLOWED => "badMethod",
        StatusCode::NOT_ACCEPTABLE => "notAcceptable",
        StatusCode::CONFLICT => "conflictingRequest",
        StatusCode::PAYLOAD_TOO_LARGE => "overLimit",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "badMediaType",
        StatusCode::SERVICE_UNAVAILABLE => "serviceUnavailable",
        _ => "computeFault",
    }
}

fn neutron_kind(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "HTTPBadRequest",
        StatusCode::UNAUTHORIZED => "HTTPUnauthorized",
        StatusCode::FORBIDDEN => "HTTPForbidden",
        StatusCode::NOT_FOUND => "HTTPNotFound",
        StatusCode::METHOD_NOT_ALLOWED => "HTTPMethodNotAllowed",
        StatusCode::CONFLICT => "HTTPConflict",
        StatusCode::PAYLOAD_TOO_LARGE => "HTTPRequestEntityTooLarge",
        StatusCode::SERVICE_UNAVAILABLE => "HTTPServiceUnavailable",
        _ => "HTTPInternalServerError",
    }
}

const GENERIC: &str =
    "The server has either erred or is incapable of performing the requested operation.";

/// The response extension that tells [`render_for`] an error body is still to be written.
#[derive(Debug, Clone)]
struct PendingError(ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body(Service::Node))).into_response();
        response.extensions_mut().insert(PendingError(self));
        response
    }
}

/// Rewrites error responses into `service`'s dialect: layered with `axum::middleware::map_response`
/// on each service's router. Errors axum produces itself (405, unmatched routes) are rendered too.
pub fn render_for(service: Service, response: Response) -> Response {
    let pending = response.extensions().get::<PendingError>().cloned();
    let error = match pending {
        Some(PendingError(error)) => error,
        None if response.status() == StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "The method is not allowed for the requested URL.",
        ),
        None => return response,
    };
    let mut rendered = (error.status, axum::Json(error.body(service))).into_response();
    if error.status == StatusCode::UNAUTHORIZED && service == Service::Identity {
        rendered.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Keystone uri=\"/identity/v3\""),
        );
    }
    if error.status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the oversized body is never read, so the connection cannot carry another
        // request: say so, or a keep-alive client sends its next request into a closing socket.
        rendered.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    if let Some(allow) = response.headers().get(axum::http::header::ALLOW) {
        rendered
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    rendered
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
            err.body(Service::Compute),
            json!({"itemNotFound": {"code": 404, "message": "server x could not be found"}})
        );
        let err = ApiError::from_domain(&ComputeError::Duplicate {
            what: "server",
            id: "y".into(),
        });
        assert_eq!(
            err.body(Service::Compute)["conflictingRequest"]["code"],
            409
        );
    }

    #[test]
    fn each_service_speaks_its_own_dialect() {
        let err = ApiError::not_found("network n could not be found").kind("NetworkNotFound");
        assert_eq!(
            err.body(Service::Network),
            json!({"NeutronError": {"type": "NetworkNotFound", "message": "network n could not be found", "detail": ""}})
        );
        assert_eq!(
            ApiError::unauthorized().body(Service::Identity),
            json!({"error": {"code": 401, "title": "Unauthorized",
                             "message": "The request you have made requires authentication."}})
        );
        assert_eq!(
            ApiError::forbidden("Attribute 'id' is read-only.").body(Service::Image),
            json!({"code": "403 Forbidden", "title": "Forbidden", "message": "Attribute 'id' is read-only."})
        );
        assert_eq!(
            ApiError::bad_request("x").body(Service::Network)["NeutronError"]["type"],
            "HTTPBadRequest"
        );
    }

    #[test]
    fn rendering_rewrites_pending_errors_and_leaves_successes_alone() {
        let response = render_for(
            Service::Network,
            ApiError::conflict("in use").into_response(),
        );
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let ok = render_for(Service::Network, StatusCode::NO_CONTENT.into_response());
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        let unauthorized = render_for(Service::Identity, ApiError::unauthorized().into_response());
        assert!(unauthorized.headers().contains_key("www-authenticate"));
    }

    #[test]
    fn unauthorized_and_forbidden_map_to_401_and_403() {
        let err = ApiError::from_domain(&crate::identity::IdentityError::Unauthorized);
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(err.body(Service::Compute)["unauthorized"]["code"], 401);
        let err =
            ApiError::from_domain(&crate::identity::IdentityError::Forbidden("no role".into()));
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        assert_eq!(err.body(Service::Compute)["forbidden"]["code"], 403);
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let err = ApiError::from_domain(&ComputeError::Store(crate::store::StoreError::Query(
            rusqlite::Error::InvalidPath("/var/lib/scs-edge/secret".into()),
        )));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!err.body(Service::Compute).to_string().contains("secret"));
    }
}
