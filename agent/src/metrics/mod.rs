//! Prometheus metrics: one registry, filled by each component at start-up, encoded by `GET /metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use std::sync::Mutex;

/// The agent's metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
}

impl Metrics {
    /// Wraps a registry components have registered into.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Mutex::new(registry),
        }
    }

    /// A fresh registry with the agent's prefix-free root and build information.
    pub fn registry() -> Registry {
        let mut registry = Registry::default();
        let info = prometheus_client::metrics::info::Info::new(vec![(
            "version",
            env!("CARGO_PKG_VERSION"),
        )]);
        registry.register("scs_edge_agent_build", "Agent build information", info);
        registry
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
