//! Per-subsystem health, as `/healthz` reports it and the liveness task acts on it.
//!
//! Each subsystem contributes a check (the store answers, the loops answer their probe, every resource
//! kind could list and observe what it manages). A check reports; it never repairs.

use serde::Serialize;
use std::collections::BTreeMap;

/// The health of one subsystem.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubsystemHealth {
    /// Whether it works.
    pub healthy: bool,
    /// What was seen, for the operator.
    pub detail: serde_json::Value,
}

impl SubsystemHealth {
    /// Healthy, with detail.
    pub fn ok(detail: serde_json::Value) -> Self {
        Self {
            healthy: true,
            detail,
        }
    }

    /// Unhealthy, with the reason.
    pub fn failing(detail: serde_json::Value) -> Self {
        Self {
            healthy: false,
            detail,
        }
    }
}

/// All subsystems at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// `ok` when every subsystem is healthy, else `degraded`.
    pub status: &'static str,
    /// By subsystem name.
    pub subsystems: BTreeMap<&'static str, SubsystemHealth>,
}

impl HealthReport {
    /// True when every subsystem is healthy.
    pub fn is_healthy(&self) -> bool {
        self.status == "ok"
    }
}

/// A named check. Checks may block briefly (a store query); callers run them on a blocking thread.
pub type Check = Box<dyn Fn() -> SubsystemHealth + Send + Sync>;

/// The registered checks.
#[derive(Default)]
pub struct HealthChecks {
    checks: Vec<(&'static str, Check)>,
}

impl HealthChecks {
    /// Adds a check under `name`.
    pub fn add(&mut self, name: &'static str, check: Check) {
        self.checks.push((name, check));
    }

    /// Runs every check.
    pub fn run(&self) -> HealthReport {
        let subsystems: BTreeMap<&'static str, SubsystemHealth> = self
            .checks
            .iter()
            .map(|(name, check)| (*name, check()))
            .collect();
        let status = if subsystems.values().all(|s| s.healthy) {
            "ok"
        } else {
            "degraded"
        };
        HealthReport { status, subsystems }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_failing_subsystem_degrades_the_report() {
        let mut checks = HealthChecks::default();
        checks.add("store", Box::new(|| SubsystemHealth::ok(json!({}))));
        assert!(checks.run().is_healthy());
        checks.add(
            "libvirt",
            Box::new(|| SubsystemHealth::failing(json!({"error": "down"}))),
        );
        let report = checks.run();
        assert_eq!(report.status, "degraded");
        assert!(!report.subsystems["libvirt"].healthy);
        assert!(report.subsystems["store"].healthy);
    }
}
