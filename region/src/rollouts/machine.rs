//! The rollout state machine: what the region does next for one rollout, given what its sites
//! report. Pure — no store, no clock, no network — so every rule is a table test, and the driver
//! that applies its decisions (in one transaction with the sites' desired states) stays thin.
//!
//! A rollout walks its waves in order. In the current wave it offers the target version to waiting
//! sites that are online and inside their maintenance window, at most `max_parallel` at a time;
//! follows each offered site through its update (the heartbeat's update state); soaks each site that
//! committed for the wave's soak time, during which its health must stay good; and moves on once
//! every site of the wave is done and enough succeeded. It halts by itself when a site of the
//! current wave fails — rolls back, fails its gate, refuses the release, turns unhealthy while
//! soaking — and `stop_on_failure` is set, or when failures make the success threshold unreachable.
//! A version a site failed is never offered to it again.

use jiff::{SignedDuration, Timestamp};
use semver::Version;
use std::collections::{BTreeMap, BTreeSet};

/// How a rollout goes (validated when it is created).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// The version it rolls out.
    pub target: Version,
    /// The sites of each wave, in order (assigned when the rollout is created).
    pub waves: Vec<Wave>,
    /// At most this many sites update at once (offered or updating).
    pub max_parallel: usize,
    /// A wave passes when at least this share of its sites that were not skipped succeeded.
    pub success_threshold_percent: u8,
    /// Halt at the first failure in the current wave.
    pub stop_on_failure: bool,
    /// A site offline when its turn comes is skipped once the wave has run this long; a site that
    /// went silent while updating fails after this long.
    pub offline_deadline: SignedDuration,
}

/// One wave.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Wave {
    /// Its name (`canary`, `early`, …).
    pub name: String,
    /// Its sites.
    pub sites: Vec<String>,
    /// How long a site must stay healthy after committing.
    pub soak: SignedDuration,
}

/// What the region knows of a site now, from its latest heartbeat and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteView {
    /// The heartbeat arrived recently.
    pub online: bool,
    /// The OS version it runs.
    pub running: Option<Version>,
    /// The version an update under way (importing to verifying) is about; `None` when idle.
    pub updating: Option<Version>,
    /// Versions that failed their health gate there.
    pub failed: BTreeSet<Version>,
    /// The version its last refusal named, and when it came (a refusal older than the offer is
    /// about something else).
    pub refused: Option<(Version, Timestamp)>,
    /// Every component healthy in the latest heartbeat.
    pub healthy: bool,
    /// Its maintenance window is open (or it has none).
    pub window_open: bool,
    /// When the region last heard from it.
    pub last_seen: Option<Timestamp>,
}

/// Where one site of a rollout is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SiteState {
    /// Its wave has not offered it the target yet.
    Waiting,
    /// Its desired version names the target since `at`.
    Offered {
        /// When.
        at: Timestamp,
    },
    /// Its update of the target runs.
    Updating {
        /// When the region first saw it.
        since: Timestamp,
    },
    /// It runs the target since `committed_at` and must stay healthy for the wave's soak.
    Soaking {
        /// When the region first saw it on the target.
        committed_at: Timestamp,
    },
    /// It runs the target and stayed healthy through its soak.
    Succeeded,
    /// It did not make it; its desired version goes back.
    Failed {
        /// Why, for the operator.
        reason: String,
    },
    /// Left out: offline past the deadline, or nothing to do.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl SiteState {
    /// Finished, one way or the other.
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed { .. } | Self::Skipped { .. }
        )
    }

    /// Counts against `max_parallel`.
    fn in_flight(&self) -> bool {
        matches!(self, Self::Offered { .. } | Self::Updating { .. })
    }
}

/// Where the whole rollout is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Progress {
    /// Offering and following, wave `wave` since `since`.
    Running {
        /// The current wave's index.
        wave: usize,
        /// When it started.
        since: Timestamp,
    },
    /// Stopped by itself; an operator may resume it.
    Halted {
        /// The wave it stopped in.
        wave: usize,
        /// Why.
        reason: String,
    },
    /// Every wave passed.
    Completed,
}

/// A rollout's state: its progress and every site's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rollout {
    /// Where it is.
    pub progress: Progress,
    /// Each site's state.
    pub sites: BTreeMap<String, SiteState>,
}

/// What a step decided, for the driver to apply in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decisions {
    /// Sites whose desired version becomes the target.
    pub offer: Vec<String>,
    /// Sites whose desired version goes back to what it was before the rollout.
    pub take_back: Vec<String>,
}

impl Rollout {
    /// A new rollout of `plan`, started at `now`: sites already on the target succeeded, sites that
    /// failed it before are skipped (it is never offered to them again), the rest wait.
    pub fn start(plan: &Plan, views: &BTreeMap<String, SiteView>, now: Timestamp) -> Self {
        let sites = plan
            .waves
            .iter()
            .flat_map(|wave| &wave.sites)
            .map(|site| {
                let view = views.get(site);
                let state = if view.and_then(|v| v.running.as_ref()) == Some(&plan.target) {
                    SiteState::Succeeded
                } else if view.is_some_and(|v| v.failed.contains(&plan.target)) {
                    SiteState::Skipped {
                        reason: format!("{} failed on this site before", plan.target),
                    }
                } else {
                    SiteState::Waiting
                };
                (site.clone(), state)
            })
            .collect();
        Self {
            progress: Progress::Running {
                wave: 0,
                since: now,
            },
            sites,
        }
    }

    /// One step at `now` over the sites' latest views: follows every site, then advances, halts or
    /// completes, then offers within the limits. Returns the desired-state changes to apply.
    pub fn step(
        &mut self,
        plan: &Plan,
        views: &BTreeMap<String, SiteView>,
        now: Timestamp,
    ) -> Decisions {
        let mut decisions = Decisions::default();
        if self.progress == Progress::Completed {
            return decisions;
        }
        // Sites are followed in every state of the rollout: an update under way when it halted
        // still ends in a verdict.
        for (site, state) in &mut self.sites {
            let Some(view) = views.get(site) else {
                continue;
            };
            let soak = plan
                .waves
                .iter()
                .find(|wave| wave.sites.contains(site))
                .map_or(SignedDuration::ZERO, |wave| wave.soak);
            if follow(state, plan, soak, view, now)
                && matches!(state, SiteState::Failed { .. } | SiteState::Skipped { .. })
            {
                decisions.take_back.push(site.clone());
            }
        }
        let Progress::Running { wave, since } = self.progress.clone() else {
            return decisions;
        };
        let Some(current) = plan.waves.get(wave) else {
            self.progress = Progress::Completed;
            return decisions;
        };
        let states: Vec<&SiteState> = current
            .sites
            .iter()
            .filter_map(|site| self.sites.get(site))
            .collect();
        let failed = states
            .iter()
            .filter(|s| matches!(s, SiteState::Failed { .. }))
            .count();
        let skipped = states
            .iter()
            .filter(|s| matches!(s, SiteState::Skipped { .. }))
            .count();
        let counted = states.len() - skipped;
        let allowed_failures =
            counted - (counted * usize::from(plan.success_threshold_percent)).div_ceil(100);
        if failed > 0 && (plan.stop_on_failure || failed > allowed_failures) {
            let first = current
                .sites
                .iter()
                .find_map(|site| match self.sites.get(site) {
                    Some(SiteState::Failed { reason }) => Some(format!("{site}: {reason}")),
                    _ => None,
                })
                .unwrap_or_default();
            // Offers not begun yet are taken back; updates under way finish and are still judged.
            for (site, state) in &mut self.sites {
                if matches!(state, SiteState::Offered { .. }) {
                    *state = SiteState::Waiting;
                    decisions.take_back.push(site.clone());
                }
            }
            self.progress = Progress::Halted {
                wave,
                reason: format!(
                    "wave {} ({}): {failed} of {counted} sites failed — {first}",
                    wave + 1,
                    current.name
                ),
            };
            return decisions;
        }
        if states.iter().all(|s| s.is_done()) {
            self.progress = if wave + 1 == plan.waves.len() {
                Progress::Completed
            } else {
                Progress::Running {
                    wave: wave + 1,
                    since: now,
                }
            };
            // The next wave starts offering at the next step, from fresh views.
            return decisions;
        }
        let mut in_flight = self.sites.values().filter(|s| s.in_flight()).count();
        for site in &current.sites {
            if in_flight >= plan.max_parallel {
                break;
            }
            let (Some(state), Some(view)) = (self.sites.get_mut(site), views.get(site)) else {
                continue;
            };
            if *state != SiteState::Waiting {
                continue;
            }
            if view.failed.contains(&plan.target) {
                // It failed there since the rollout started (a stick, another rollout): never again.
                *state = SiteState::Skipped {
                    reason: format!("{} failed on this site before", plan.target),
                };
                continue;
            }
            if !view.online {
                if now.duration_since(since) >= plan.offline_deadline {
                    *state = SiteState::Skipped {
                        reason: "offline for the whole wave".into(),
                    };
                }
                continue;
            }
            if view.window_open {
                *state = SiteState::Offered { at: now };
                decisions.offer.push(site.clone());
                in_flight += 1;
            }
        }
        decisions
    }

    /// Resumes a halted rollout in the wave it stopped in; failed sites stay failed.
    pub fn resume(&mut self, now: Timestamp) -> bool {
        let Progress::Halted { wave, .. } = self.progress else {
            return false;
        };
        self.progress = Progress::Running { wave, since: now };
        true
    }
}

/// Moves one site (of a wave soaking for `soak`) on from what it reports; true when its state
/// changed.
fn follow(
    state: &mut SiteState,
    plan: &Plan,
    soak: SignedDuration,
    view: &SiteView,
    now: Timestamp,
) -> bool {
    let target = &plan.target;
    let next = match state {
        SiteState::Offered { at } | SiteState::Updating { since: at } => {
            let started = *at;
            if view.running.as_ref() == Some(target) {
                Some(SiteState::Soaking { committed_at: now })
            } else if let Some(reason) = failure(view, target, started) {
                Some(SiteState::Failed { reason })
            } else if matches!(state, SiteState::Offered { .. })
                && view.updating.as_ref() == Some(target)
            {
                Some(SiteState::Updating { since: now })
            } else if !view.online
                && view
                    .last_seen
                    .is_none_or(|seen| now.duration_since(seen) >= plan.offline_deadline)
            {
                Some(if matches!(state, SiteState::Updating { .. }) {
                    SiteState::Failed {
                        reason: "went silent while updating".into(),
                    }
                } else {
                    SiteState::Skipped {
                        reason: "offline since the offer".into(),
                    }
                })
            } else {
                None
            }
        }
        SiteState::Soaking { committed_at } => {
            if view.running.as_ref() != Some(target) {
                Some(SiteState::Failed {
                    reason: format!(
                        "left {target} while soaking (runs {})",
                        view.running
                            .as_ref()
                            .map_or_else(|| "nothing".into(), ToString::to_string)
                    ),
                })
            } else if view.online && !view.healthy {
                Some(SiteState::Failed {
                    reason: "unhealthy while soaking".into(),
                })
            } else if now.duration_since(*committed_at) >= soak {
                Some(SiteState::Succeeded)
            } else {
                None
            }
        }
        SiteState::Waiting
        | SiteState::Succeeded
        | SiteState::Failed { .. }
        | SiteState::Skipped { .. } => None,
    };
    match next {
        Some(next) if next != *state => {
            *state = next;
            true
        }
        _ => false,
    }
}

/// Why a site's update of `target`, offered at `offered`, failed, if it did.
fn failure(view: &SiteView, target: &Version, offered: Timestamp) -> Option<String> {
    if view.failed.contains(target) {
        return Some(format!(
            "{target} failed its health gate and was rolled back"
        ));
    }
    match &view.refused {
        Some((version, at)) if version == target && *at >= offered => {
            Some(format!("the site refused {target}"))
        }
        _ => None,
    }
}
