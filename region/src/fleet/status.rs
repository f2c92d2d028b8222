//! What operators need to read at a glance from a site's reports: is it online, how healthy is it,
//! and where its history has holes. One derivation for the REST API and the dashboard.

use crate::store::{Site, SiteState, StoredReport};
use jiff::{SignedDuration, Timestamp};
use scs_edge_proto::{HealthState, Report};

/// Whether the region hears from a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connectivity {
    /// Never reported (pending, or joined but silent).
    Never,
    /// Reported within three heartbeat intervals.
    Online,
    /// Silent for longer: cut off, down, or its reports are queued on the node.
    Stale,
    /// Decommissioned.
    Retired,
}

impl Connectivity {
    /// The displayed and serialised name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Online => "online",
            Self::Stale => "stale",
            Self::Retired => "retired",
        }
    }
}

/// How many heartbeat intervals of silence make a site stale and a pause in its history a gap.
pub const MISSED_HEARTBEATS: i32 = 3;

/// The site's connectivity at `now`.
pub fn connectivity(site: &Site, now: Timestamp, interval: SignedDuration) -> Connectivity {
    if site.state == SiteState::Decommissioned {
        return Connectivity::Retired;
    }
    match site.last_seen {
        None => Connectivity::Never,
        Some(seen) if now.duration_since(seen) <= interval * MISSED_HEARTBEATS => {
            Connectivity::Online
        }
        Some(_) => Connectivity::Stale,
    }
}

/// The worst component state in a report (`Absent` components do not count against it).
pub fn overall_health(report: &Report) -> HealthState {
    let rank = |state: HealthState| match state {
        HealthState::Healthy | HealthState::Absent => 0,
        HealthState::Unknown => 1,
        HealthState::Degraded => 2,
        HealthState::Down => 3,
    };
    report
        .health
        .iter()
        .map(|h| h.state)
        .filter(|s| *s != HealthState::Absent)
        .max_by_key(|s| rank(*s))
        .unwrap_or(HealthState::Healthy)
}

/// A site's health as operators see it: the worst component of its latest report, `Unknown` before
/// the first one.
pub fn site_health(site: &Site) -> HealthState {
    site.last_report
        .as_ref()
        .map_or(HealthState::Unknown, overall_health)
}

/// A pause in a site's report history: no report was taken between `after` and `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// `sent_at` of the last report before the pause.
    pub after: Timestamp,
    /// `sent_at` of the first report after it.
    pub before: Timestamp,
}

impl Gap {
    /// Its length.
    pub fn length(&self) -> SignedDuration {
        self.before.duration_since(self.after)
    }
}

/// Pauses longer than [`MISSED_HEARTBEATS`] intervals between consecutive reports, by the reports'
/// own `sent_at` (history newest first, as the store returns it). Reports queued on a cut-off node
/// fill their stretch when they arrive, so only real silence — the node down, or its queue lost —
/// remains a gap; `delivery_delays` shows the cut-off itself.
pub fn gaps(history: &[StoredReport], interval: SignedDuration) -> Vec<Gap> {
    let threshold = interval * MISSED_HEARTBEATS;
    history
        .windows(2)
        .filter_map(|pair| {
            let (newer, older) = (&pair[0].report, &pair[1].report);
            (newer.sent_at.duration_since(older.sent_at) > threshold).then_some(Gap {
                after: older.sent_at,
                before: newer.sent_at,
            })
        })
        .collect()
}

/// How late a report reached the region (receive time minus the node's `sent_at`): seconds for a
/// live link, the length of the outage for reports that waited in a cut-off node's queue.
pub fn delivery_delay(entry: &StoredReport) -> SignedDuration {
    entry.received_at.duration_since(entry.report.sent_at)
}

/// Whether a report was delivered late enough to have waited in the node's queue.
pub fn was_queued(entry: &StoredReport, interval: SignedDuration) -> bool {
    delivery_delay(entry) > interval * MISSED_HEARTBEATS
}

/// A stretch in which the region heard nothing from a site although the site kept taking reports:
/// the link was down, and the reports taken meanwhile arrived late, from the node's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// `sent_at` of the first report that had to wait: the link was down from about then.
    pub from: Timestamp,
    /// When the queue was delivered (receive time of its last report).
    pub delivered_at: Timestamp,
    /// How many reports waited in the node's queue.
    pub queued_reports: usize,
}

/// Link outages in a history (newest first): each maximal run of reports that were delivered more
/// than [`MISSED_HEARTBEATS`] intervals after they were taken.
pub fn outages(history: &[StoredReport], interval: SignedDuration) -> Vec<Outage> {
    let mut found: Vec<Outage> = Vec::new();
    let mut in_run = false;
    for entry in history {
        if was_queued(entry, interval) {
            match found.last_mut() {
                Some(run) if in_run => {
                    run.from = run.from.min(entry.report.sent_at);
                    run.delivered_at = run.delivered_at.max(entry.received_at);
                    run.queued_reports += 1;
                }
                _ => found.push(Outage {
                    from: entry.report.sent_at,
                    delivered_at: entry.received_at,
                    queued_reports: 1,
                }),
            }
            in_run = true;
        } else {
            in_run = false;
        }
    }
    found
}
