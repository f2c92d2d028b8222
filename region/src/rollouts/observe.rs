//! A site as the rollout machine sees it, read from what the region stores: its latest heartbeat
//! (OS version, update state, health) and when it came.

use super::machine::SiteView;
use crate::fleet::status::{Connectivity, connectivity, site_health};
use crate::store::Site;
use jiff::{SignedDuration, Timestamp};
use scs_edge_proto::window::MaintenanceWindow;
use scs_edge_proto::{HealthState, UpdatePhase};

/// How long before its maintenance window opens a site is offered a release: the download and
/// the check take minutes to an hour over a slow WAN, and the reboot should use the window.
pub const WINDOW_LEAD: SignedDuration = SignedDuration::from_hours(1);

/// `site` at `now`, with heartbeats expected every `interval`.
///
/// Its window is the one the node reports using (its own, or the region's it was sent), else the
/// one the region sends it, else none (always open). A window text that does not parse counts as
/// open: the node applies its own rule anyway.
///
/// A refusal is taken to be about the version the site's desired state names: in a region a node
/// imports only that version on its own (an operator's stick is the exception, and a rollout that
/// halts on one says so in its reason).
pub fn view(site: &Site, now: Timestamp, interval: SignedDuration) -> SiteView {
    let report = site.last_report.as_ref();
    let update = report.and_then(|report| report.update.as_ref());
    let updating = update
        .filter(|update| !matches!(update.phase, UpdatePhase::Idle | UpdatePhase::Unknown))
        .and_then(|update| update.target.as_deref())
        .and_then(|target| target.parse().ok());
    let wanted = site
        .desired
        .target_os_version
        .as_deref()
        .and_then(|version| version.parse().ok());
    SiteView {
        online: connectivity(site, now, interval) == Connectivity::Online,
        running: report.and_then(|report| report.versions.os.parse().ok()),
        updating,
        failed: update
            .map(|update| {
                update
                    .failed
                    .iter()
                    .filter_map(|version| version.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
        refused: update
            .and_then(|update| update.last_refusal.as_ref())
            .zip(wanted)
            .map(|(refusal, wanted)| (wanted, refusal.at)),
        rolled_back: update
            .and_then(|update| update.last_outcome.as_ref())
            .filter(|outcome| outcome.result == "rolled_back")
            .and_then(|outcome| {
                Some((
                    outcome.version.parse().ok()?,
                    outcome.reason.clone().unwrap_or_default(),
                ))
            }),
        healthy: site_health(site) == HealthState::Healthy,
        window_open: update
            .and_then(|update| update.window.as_deref())
            .or(site.desired.maintenance_window.as_deref())
            .and_then(|text| MaintenanceWindow::parse(text).ok())
            .is_none_or(|window| window.next_open(now) <= now + WINDOW_LEAD),
        last_seen: site.last_seen,
    }
}
