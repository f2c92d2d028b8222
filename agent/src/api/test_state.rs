//! An [`ApiState`] over a temporary store and in-memory fakes, for in-process API tests.
//!
//! Every API test module needs the same wiring (identity bootstrapped with cheap argon2, compute,
//! image and network services over fakes); building it once here keeps the modules about behaviour.
//! Requests go through the real [`router`](super::router), so error dialects, body limits and
//! extractors are exercised exactly as in production.

use super::{ApiState, router};
use crate::compute::files::FakeServerFiles;
use crate::compute::host::{FixedHostInventory, HostResources};
use crate::compute::{ComputeService, ComputeSettings};
use crate::health::HealthChecks;
use crate::identity::password::Argon2Params;
use crate::identity::{BootstrapReport, BootstrapRequest, IdentityService, IdentitySettings};
use crate::image::ImageService;
use crate::image::files::FakeImageFiles;
use crate::metrics::Metrics;
use crate::network::{NetworkService, NetworkSettings};
use crate::reconcile::NoLoops;
use crate::store::Store;
use crate::system::clock::ManualClock;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use std::sync::Arc;
use tower::ServiceExt as _;

/// The base URL the test state advertises.
pub(crate) const BASE: &str = "https://edge.test:8443";
/// The bootstrap admin's password.
pub(crate) const ADMIN_PASSWORD: &str = "admin-secret";

/// An argon2 cost that makes a hash take microseconds (far below the configuration floor).
const CHEAP: Argon2Params = Argon2Params {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

/// A running API over a temporary store; dropped with its directory.
pub(crate) struct TestApi {
    _dir: tempfile::TempDir,
    /// The state handed to the router.
    pub(crate) state: ApiState,
    /// The store under every service (for row counts).
    pub(crate) store: Arc<Store>,
    /// The clock every service reads.
    pub(crate) clock: Arc<ManualClock>,
    /// What bootstrap made: admin user and project, role ids by name.
    pub(crate) boot: BootstrapReport,
}

/// One answer: status, headers and the body parsed as JSON (`Null` when empty).
#[derive(Debug)]
pub(crate) struct Answer {
    /// Status.
    pub(crate) status: StatusCode,
    /// Headers.
    pub(crate) headers: HeaderMap,
    /// Body.
    pub(crate) body: serde_json::Value,
}

impl TestApi {
    /// A fresh store with the identity bootstrapped (`admin`/[`ADMIN_PASSWORD`] in `default`).
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("agent.db")).expect("store"));
        let clock = Arc::new(ManualClock::new(
            "2026-11-01T12:00:00Z".parse().expect("time"),
        ));
        let identity = Arc::new(IdentityService::new(
            store.clone(),
            clock.clone(),
            IdentitySettings {
                argon2: CHEAP,
                ..IdentitySettings::default()
            },
        ));
        let boot = identity
            .bootstrap(&BootstrapRequest {
                admin_password: Some(ADMIN_PASSWORD.into()),
                admin_user: "admin".into(),
                admin_project: "admin".into(),
                region_id: None,
            })
            .expect("bootstrap");
        let images = Arc::new(ImageService::new(
            store.clone(),
            Arc::new(FakeImageFiles::default()),
            clock.clone(),
        ));
        let compute = Arc::new(ComputeService::new(
            store.clone(),
            images.clone(),
            Arc::new(FixedHostInventory(HostResources {
                cpus: 4,
                memory_mib: 8192,
            })),
            clock.clone(),
            Arc::new(NoLoops),
            ComputeSettings {
                cpu_allocation_ratio: 16.0,
                ram_allocation_ratio: 1.0,
                reserved_host_memory_mb: 1024,
                network_enabled: true,
                availability_zone: "nova".into(),
            },
            Arc::new(FakeServerFiles::default()),
        ));
        let network = Arc::new(NetworkService::new(
            store.clone(),
            clock.clone(),
            Arc::new(NoLoops),
            NetworkSettings::default(),
        ));
        let state = ApiState {
            health: Arc::new(HealthChecks::default()),
            metrics: Arc::new(Metrics::new(Metrics::registry())),
            public_base: BASE.into(),
            identity,
            compute,
            images,
            network,
            max_image_upload_bytes: 1024 * 1024,
        };
        Self {
            _dir: dir,
            state,
            store,
            clock,
            boot,
        }
    }

    /// Sends one request through the whole router.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(body.map_or_else(Body::empty, Body::from))
            .expect("request");
        let response = router(self.state.clone())
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A request with a JSON body and an optional token.
    pub(crate) async fn json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> Answer {
        let headers: Vec<(&str, &str)> = token.map(|t| ("x-auth-token", t)).into_iter().collect();
        self.call(method, path, &headers, Some(body.to_string().into_bytes()))
            .await
    }

    /// A request without a body and an optional token.
    pub(crate) async fn bare(&self, method: Method, path: &str, token: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = token.map(|t| ("x-auth-token", t)).into_iter().collect();
        self.call(method, path, &headers, None).await
    }

    /// A token for `user` in `domain` (by id) with `password`, scoped by `scope` (Keystone's
    /// `auth.scope` JSON, or `Null` for none); panics unless issued.
    pub(crate) async fn token(
        &self,
        user: &str,
        domain: &str,
        password: &str,
        scope: serde_json::Value,
    ) -> String {
        let mut auth = serde_json::json!({
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "domain": {"id": domain}, "password": password}},
            },
        });
        if !scope.is_null() {
            auth["scope"] = scope;
        }
        let answer = self
            .json(
                Method::POST,
                "/identity/v3/auth/tokens?nocatalog",
                None,
                &serde_json::json!({ "auth": auth }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.headers["x-subject-token"]
            .to_str()
            .expect("token")
            .to_owned()
    }

    /// The bootstrap admin's token on the admin project.
    pub(crate) async fn admin_token(&self) -> String {
        self.token(
            "admin",
            "default",
            ADMIN_PASSWORD,
            serde_json::json!({"project": {"id": self.boot.project_id}}),
        )
        .await
    }
}
