//! The update state as operators see it: a `/healthz` subsystem and Prometheus metrics, both read
//! from the record at request time (the CLI and the gate change it from other processes).

use super::Updater;
use super::record::{Outcome, Phase, UpdateRecord};
use super::window::MaintenanceWindow;
use crate::health::SubsystemHealth;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use std::sync::Arc;

/// The `/healthz` detail: where the node is, what failed, what was refused. An update in progress
/// or a rolled-back one is not ill health; only an unreadable record is.
pub fn health(updater: &Updater) -> SubsystemHealth {
    match updater.record() {
        Ok(record) => SubsystemHealth::ok(detail(updater, &record)),
        Err(err) => SubsystemHealth::failing(serde_json::json!({ "error": err.to_string() })),
    }
}

fn detail(updater: &Updater, record: &UpdateRecord) -> serde_json::Value {
    serde_json::json!({
        "running": updater.running().to_string(),
        "phase": record.phase.name(),
        "target": target(&record.phase),
        "failed_versions": record.failed,
        "last_outcome": record.last_outcome,
        "last_refusal": record.last_refusal,
        "refused": record.refused,
        "last_error": record.last_error,
        "waivers_used": record.waivers_used,
        "last_waiver": record.last_waiver,
    })
}

/// The heartbeat's view of the record and of the maintenance `window` in force; `None` when the
/// record cannot be read (the report goes out anyway).
pub fn report(
    updater: &Updater,
    window: Option<&MaintenanceWindow>,
) -> Option<scs_edge_proto::UpdateReport> {
    use scs_edge_proto::{UpdateOutcome, UpdatePhase, UpdateReport};
    let record = updater.record().ok()?;
    let phase = match record.phase {
        Phase::Idle => UpdatePhase::Idle,
        Phase::Importing { .. } => UpdatePhase::Importing,
        Phase::Staged { .. } => UpdatePhase::Staged,
        Phase::Installing { .. } => UpdatePhase::Installing,
        Phase::Installed { .. } => UpdatePhase::Installed,
        Phase::Rebooting { .. } => UpdatePhase::Rebooting,
        Phase::Verifying { .. } => UpdatePhase::Verifying,
    };
    let last_outcome = record.last_outcome.as_ref().map(|outcome| match outcome {
        Outcome::Committed { version, .. } => UpdateOutcome {
            result: "committed".into(),
            version: version.to_string(),
            reason: None,
        },
        Outcome::RolledBack {
            version, reason, ..
        } => UpdateOutcome {
            result: "rolled_back".into(),
            version: version.to_string(),
            reason: Some(reason.clone()),
        },
    });
    Some(UpdateReport {
        phase,
        target: target(&record.phase),
        failed: record.failed.keys().map(ToString::to_string).collect(),
        last_outcome,
        refused: record.refused.values().sum(),
        last_refusal: record
            .last_refusal
            .as_ref()
            .map(|refusal| scs_edge_proto::UpdateRefusal {
                kind: refusal.kind.clone(),
                reason: refusal.reason.clone(),
                at: refusal.at,
            }),
        last_error: record.last_error.clone(),
        waivers_used: record.waivers_used,
        window: window.map(ToString::to_string),
    })
}

fn target(phase: &Phase) -> Option<String> {
    match phase {
        Phase::Staged { staged }
        | Phase::Installing { staged, .. }
        | Phase::Installed { staged, .. } => Some(staged.manifest.version.to_string()),
        Phase::Rebooting { version, .. } | Phase::Verifying { version, .. } => {
            Some(version.to_string())
        }
        Phase::Idle | Phase::Importing { .. } => None,
    }
}

/// Prometheus: the phase (one gauge per phase, 1 for the current), refusals by kind, releases
/// accepted under a freshness waiver, failed versions, and the running version.
pub struct UpdateCollector(pub Arc<Updater>);

impl std::fmt::Debug for UpdateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpdateCollector")
    }
}

impl prometheus_client::collector::Collector for UpdateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Ok(record) = self.0.record() else {
            return Ok(());
        };
        let mut phase = encoder.encode_descriptor(
            "scs_edge_update_phase",
            "Where the node is in an OS update (1 for the current phase)",
            None,
            MetricType::Gauge,
        )?;
        for name in Phase::NAMES {
            let value = i64::from(record.phase.name() == name);
            ConstGauge::new(value).encode(phase.encode_family(&[("phase", name)])?)?;
        }
        let mut refused = encoder.encode_descriptor(
            "scs_edge_update_refusals",
            "Releases refused, by kind (signature, hash, rollback, expired, downgrade, …)",
            None,
            MetricType::Counter,
        )?;
        for (kind, count) in &record.refused {
            ConstCounter::new(*count).encode(refused.encode_family(&[("kind", kind.as_str())])?)?;
        }
        // Encoded as scs_edge_update_waivers_used_total.
        let waivers = encoder.encode_descriptor(
            "scs_edge_update_waivers_used",
            "Releases accepted under a freshness waiver because their metadata had expired",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(record.waivers_used).encode(waivers)?;
        let failed = encoder.encode_descriptor(
            "scs_edge_update_failed_versions",
            "Versions that failed their health gate here and are not retried automatically",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(record.failed.len() as i64).encode(failed)?;
        let mut running = encoder.encode_descriptor(
            "scs_edge_os",
            "The OS image version running",
            None,
            MetricType::Gauge,
        )?;
        let version = self.0.running().to_string();
        ConstGauge::new(1).encode(running.encode_family(&[("version", version.as_str())])?)?;
        Ok(())
    }
}
