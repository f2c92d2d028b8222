//! A rollout as operators read it — on the REST API, in `rollout show --watch` and on the
//! dashboard — from the machine's state and each site's latest report. Pure and shared, so the
//! three surfaces never disagree on what a site is doing.
//!
//! The machine knows whether a site was offered, is updating, soaking or done; the node's report
//! says which part of the update runs (downloading, installing, verifying) and whether a failure
//! was its health gate rolling back.

use super::machine::{Plan, Progress, Rollout, SiteState};
use jiff::Timestamp;
use scs_edge_proto::{UpdatePhase, UpdateReport};
use std::collections::BTreeMap;

/// Every state a site is shown in, in the order a wave's counts list them.
pub const DISPLAY_STATES: [&str; 12] = [
    "pending",
    "awaiting import",
    "offered",
    "downloading",
    "installing",
    "verifying",
    "soaking",
    "committed",
    "rolled back",
    "failed",
    "absent",
    "skipped",
];

/// One site's row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SiteProgress {
    /// The site.
    pub site: String,
    /// The index of its wave.
    pub wave: usize,
    /// One of [`DISPLAY_STATES`].
    pub state: &'static str,
    /// Why it failed or was skipped, or until when it soaks.
    pub detail: Option<String>,
}

/// One wave's summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WaveProgress {
    /// Its name.
    pub name: String,
    /// How long its sites soak.
    pub soak_secs: i64,
    /// How many sites it has.
    pub sites: usize,
    /// How many are in each display state (states with none left out).
    pub counts: BTreeMap<&'static str, usize>,
    /// `done`, `current` or `waiting`.
    pub status: &'static str,
}

/// The whole rollout as shown.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// `running`, `paused`, `halted`, `stopped` or `completed`.
    pub state: &'static str,
    /// The current wave's index, while there is one.
    pub wave: Option<usize>,
    /// Why it halted, paused or stopped, and who did it.
    pub reason: Option<String>,
    /// Who paused or stopped it.
    pub by: Option<String>,
    /// The waves.
    pub waves: Vec<WaveProgress>,
    /// Every site, wave by wave.
    pub sites: Vec<SiteProgress>,
}

/// Summarises `rollout` of `plan` with each site's latest update report.
pub fn summarise(
    plan: &Plan,
    rollout: &Rollout,
    reports: &BTreeMap<String, Option<UpdateReport>>,
) -> Summary {
    let current = rollout.progress.wave();
    let mut sites = Vec::new();
    let mut waves = Vec::new();
    for (index, wave) in plan.waves.iter().enumerate() {
        let mut counts = BTreeMap::new();
        for site in &wave.sites {
            let Some(state) = rollout.sites.get(site) else {
                continue;
            };
            let report = reports.get(site).and_then(Option::as_ref);
            let (shown, detail) = if wave.manual && *state == SiteState::Waiting {
                (
                    "awaiting import",
                    Some(
                        "air-gapped: the release goes there on a stick (rollout bundle)".to_owned(),
                    ),
                )
            } else {
                display(state, report, plan, wave.soak, rollout.is_active())
            };
            *counts.entry(shown).or_insert(0) += 1;
            sites.push(SiteProgress {
                site: site.clone(),
                wave: index,
                state: shown,
                detail,
            });
        }
        let status = match current {
            None => "done",
            Some(current) if index < current => "done",
            Some(current) if index == current => "current",
            Some(_) => "waiting",
        };
        waves.push(WaveProgress {
            name: wave.name.clone(),
            soak_secs: wave.soak.as_secs(),
            sites: wave.sites.len(),
            counts,
            status,
        });
    }
    let (reason, by) = match &rollout.progress {
        Progress::Halted { reason, .. } => (Some(reason.clone()), None),
        Progress::Paused { by, reason, .. } | Progress::Stopped { by, reason, .. } => {
            (Some(reason.clone()), Some(by.clone()))
        }
        Progress::Running { .. } | Progress::Completed => (None, None),
    };
    Summary {
        state: rollout.progress.name(),
        wave: current,
        reason,
        by,
        waves,
        sites,
    }
}

/// How one site is shown, and the detail that goes with it.
fn display(
    state: &SiteState,
    report: Option<&UpdateReport>,
    plan: &Plan,
    soak: jiff::SignedDuration,
    active: bool,
) -> (&'static str, Option<String>) {
    match state {
        SiteState::Waiting => ("pending", None),
        // The agent names the version it imports only once it verified: an importing site that
        // was offered the target is downloading it.
        SiteState::Offered { .. } if report.is_some_and(|r| r.phase == UpdatePhase::Importing) => {
            ("downloading", None)
        }
        SiteState::Offered { at } => ("offered", Some(format!("since {at}"))),
        SiteState::Updating { .. } => {
            let phase = report
                .filter(|r| r.target.as_deref() == Some(plan.target.to_string().as_str()))
                .map_or(UpdatePhase::Unknown, |r| r.phase);
            let shown = match phase {
                UpdatePhase::Importing => "downloading",
                UpdatePhase::Verifying => "verifying",
                _ => "installing",
            };
            (shown, None)
        }
        SiteState::Soaking { committed_at } => (
            "soaking",
            Some(format!("healthy until {}", soak_end(*committed_at, soak))),
        ),
        SiteState::Succeeded => ("committed", None),
        SiteState::Failed { reason, .. } => {
            let rolled_back = report.is_some_and(|r| {
                r.failed
                    .iter()
                    .any(|version| *version == plan.target.to_string())
            });
            (
                if rolled_back { "rolled back" } else { "failed" },
                Some(reason.clone()),
            )
        }
        SiteState::Absent { .. } if !active => {
            ("skipped", Some("offline for its whole wave".to_owned()))
        }
        SiteState::Absent { since } => (
            "absent",
            Some(format!(
                "offline when its wave came (since {since}); offered first when it reports again"
            )),
        ),
        SiteState::Skipped { reason } => ("skipped", Some(reason.clone())),
    }
}

fn soak_end(committed_at: Timestamp, soak: jiff::SignedDuration) -> Timestamp {
    committed_at.checked_add(soak).unwrap_or(committed_at)
}
