//! Fleets for the domains' tests: sites that joined and report, written through the store's own
//! operations, as the node endpoints would.

use super::{CertificateRecord, Store};
use jiff::{SignedDuration, Timestamp};
use scs_edge_proto::{Capacity, ComponentHealth, Report, ResourceCounts, UpdateReport, Versions};
use std::collections::BTreeMap;

/// Adds `name` with `labels` and lets a node join it at `now`.
pub(crate) async fn joined_site(
    store: &Store,
    name: &str,
    labels: &BTreeMap<String, String>,
    now: Timestamp,
) {
    store.add_site(name, labels, now).await.expect("site");
    let hash = format!("{name}-token-hash");
    store
        .add_join_token(&hash, name, now + SignedDuration::from_hours(1), now)
        .await
        .expect("token");
    store
        .join(
            &hash,
            name,
            &CertificateRecord {
                serial: format!("{name}-serial"),
                site: name.into(),
                not_after: now + SignedDuration::from_hours(24),
                revoked_at: None,
            },
            now,
        )
        .await
        .expect("join");
}

/// Stores heartbeat `seq` of `site` at `now`: running `os`, healthy, with `update`.
pub(crate) async fn heartbeat(
    store: &Store,
    site: &str,
    seq: u64,
    os: &str,
    update: Option<UpdateReport>,
    now: Timestamp,
) {
    store
        .append_reports(site, &[report(seq, os, Vec::new(), update, now)], now)
        .await
        .expect("report");
}

/// Heartbeat `seq`, sent at `sent_at`: running `os`, with `health` and `update`.
pub(crate) fn report(
    seq: u64,
    os: &str,
    health: Vec<ComponentHealth>,
    update: Option<UpdateReport>,
    sent_at: Timestamp,
) -> Report {
    Report {
        seq,
        sent_at,
        versions: Versions {
            agent: "0.1.0".into(),
            os: os.into(),
            k3s: None,
        },
        health,
        capacity: Capacity {
            vcpus: 4,
            memory_mib: 8192,
            disk_free_gib: 50,
        },
        resources: ResourceCounts::default(),
        update,
    }
}
