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
    /// The air-gapped sites' last wave: never offered online; a site leaves it when its report
    /// shows the release imported from a stick (or failed), or when an operator finishes it.
    #[serde(default)]
    pub manual: bool,
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
    /// The version its last update rolled back, and what its health gate found.
    pub rolled_back: Option<(Version, String)>,
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
    /// It did not make it; its desired version went back.
    Failed {
        /// Why, for the operator.
        reason: String,
        /// An operator resumed the rollout after the halt this failure caused: it no longer
        /// halts it, and counts like a skipped site towards the wave's threshold.
        #[serde(default)]
        acknowledged: bool,
    },
    /// Offline when its wave came and past the deadline: the wave went on without it. It is
    /// offered first, before the current wave's sites, when it reports again while the rollout
    /// runs; once the rollout completed it stays here, reported as skipped.
    Absent {
        /// When its wave gave up waiting.
        since: Timestamp,
    },
    /// Left out: nothing to do, or it failed this version before.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl SiteState {
    /// Finished for its wave, one way or the other.
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed { .. } | Self::Skipped { .. } | Self::Absent { .. }
        )
    }

    /// Counts against `max_parallel`.
    pub fn in_flight(&self) -> bool {
        matches!(self, Self::Offered { .. } | Self::Updating { .. })
    }

    fn failed(reason: impl Into<String>) -> Self {
        Self::Failed {
            reason: reason.into(),
            acknowledged: false,
        }
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
        /// When it started (or the rollout was last resumed in it).
        since: Timestamp,
    },
    /// Paused by an operator: no offers, offers not begun taken back, updates under way followed.
    Paused {
        /// The wave it paused in.
        wave: usize,
        /// When.
        since: Timestamp,
        /// Who.
        by: String,
        /// Why, in their words.
        reason: String,
    },
    /// Stopped by itself; an operator may resume it, or retarget it to a fixed release.
    Halted {
        /// The wave it stopped in.
        wave: usize,
        /// Why.
        reason: String,
    },
    /// Stopped for good by an operator. Updates under way when it stopped are still followed to
    /// their verdict; nothing is offered again.
    Stopped {
        /// The wave it stopped in.
        wave: usize,
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// Every wave passed.
    Completed,
}

impl Progress {
    /// Its name as operators read it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Running { .. } => "running",
            Self::Paused { .. } => "paused",
            Self::Halted { .. } => "halted",
            Self::Stopped { .. } => "stopped",
            Self::Completed => "completed",
        }
    }

    /// The current wave, while there is one.
    pub fn wave(&self) -> Option<usize> {
        match self {
            Self::Running { wave, .. }
            | Self::Paused { wave, .. }
            | Self::Halted { wave, .. }
            | Self::Stopped { wave, .. } => Some(*wave),
            Self::Completed => None,
        }
    }
}

/// The fleet-wide stop switch, read by every step: while engaged, no rollout offers anything and
/// offers not begun go back — the one action an operator needs when something looks wrong fleet-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Rollouts go on.
    Free,
    /// Engaged.
    Switch,
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

/// An operator action the rollout's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a rollout that is {state}")]
pub struct WrongState {
    /// What was asked.
    pub action: &'static str,
    /// The rollout's state.
    pub state: &'static str,
}

impl Rollout {
    /// A new rollout of `plan`, started at `now`: sites already on the target succeeded, sites that
    /// failed it before are skipped (it is never offered to them again), the rest wait.
    pub fn start(plan: &Plan, views: &BTreeMap<String, SiteView>, now: Timestamp) -> Self {
        let sites = plan
            .waves
            .iter()
            .flat_map(|wave| &wave.sites)
            .map(|site| (site.clone(), initial(&plan.target, views.get(site))))
            .collect();
        Self {
            progress: Progress::Running {
                wave: 0,
                since: now,
            },
            sites,
        }
    }

    /// Still offering or following sites: not completed, and not stopped with every update under
    /// way judged.
    pub fn is_active(&self) -> bool {
        match self.progress {
            Progress::Completed => false,
            Progress::Stopped { .. } => self.sites.values().any(SiteState::in_flight),
            _ => true,
        }
    }

    /// One step at `now` over the sites' latest views: follows every site, then halts, holds,
    /// advances or completes, then offers within the limits. Returns the desired-state changes to
    /// apply.
    pub fn step(
        &mut self,
        plan: &Plan,
        views: &BTreeMap<String, SiteView>,
        now: Timestamp,
        hold: Hold,
    ) -> Decisions {
        let mut decisions = Decisions::default();
        if self.progress == Progress::Completed {
            return decisions;
        }
        // Sites are followed in every state of the rollout: an update under way when it halted,
        // paused or stopped still ends in a verdict.
        for (site, state) in &mut self.sites {
            let Some(view) = views.get(site) else {
                continue;
            };
            let wave = plan.waves.iter().find(|wave| wave.sites.contains(site));
            let soak = wave.map_or(SignedDuration::ZERO, |wave| wave.soak);
            if wave.is_some_and(|wave| wave.manual)
                && *state == SiteState::Waiting
                && view.failed.contains(&plan.target)
            {
                // Imported from a stick and rolled back: never offered, so nothing to take back.
                *state = SiteState::failed(format!(
                    "{} was imported from a stick, failed its health gate and was rolled back",
                    plan.target
                ));
                continue;
            }
            if follow(state, plan, soak, view, now)
                && matches!(state, SiteState::Failed { .. } | SiteState::Absent { .. })
            {
                decisions.take_back.push(site.clone());
            }
        }
        let Progress::Running { wave, since } = self.progress.clone() else {
            if matches!(
                self.progress,
                Progress::Paused { .. } | Progress::Stopped { .. }
            ) {
                self.take_back_unbegun(&mut decisions);
            }
            return decisions;
        };
        let Some(current) = plan.waves.get(wave) else {
            self.progress = Progress::Completed;
            return decisions;
        };
        if let Some(reason) = self.halt_reason(plan, wave) {
            self.halt(reason, &mut decisions);
            return decisions;
        }
        if hold == Hold::Switch {
            self.take_back_unbegun(&mut decisions);
            return decisions;
        }
        let mut in_flight = self.sites.values().filter(|s| s.in_flight()).count();
        // Sites that were absent when their wave came and report again go first: an earlier wave
        // promised them the release, and they must not wait behind a later wave.
        // (A straggler back but not offered yet, for want of a free slot, waits in its old wave.)
        let stragglers: Vec<String> = plan.waves[..wave]
            .iter()
            .flat_map(|earlier| &earlier.sites)
            .filter(|site| {
                matches!(
                    self.sites.get(*site),
                    Some(SiteState::Absent { .. } | SiteState::Waiting)
                )
            })
            .cloned()
            .collect();
        for site in &stragglers {
            let returned = views.get(site).is_some_and(|view| view.online);
            if returned && let Some(state) = self.sites.get_mut(site) {
                *state = SiteState::Waiting;
            }
        }
        self.offer(
            plan,
            &stragglers,
            views,
            now,
            None,
            &mut in_flight,
            &mut decisions,
        );
        if current
            .sites
            .iter()
            .all(|site| self.sites.get(site).is_none_or(SiteState::is_done))
        {
            let last = wave + 1 == plan.waves.len();
            if !last {
                self.progress = Progress::Running {
                    wave: wave + 1,
                    since: now,
                };
            } else if self.sites.values().all(SiteState::is_done) {
                // Stragglers still updating or soaking are followed to their verdict before it
                // completes: a completed rollout is no longer stepped.
                self.progress = Progress::Completed;
            }
            // The next wave starts offering at the next step, from fresh views.
            return decisions;
        }
        if current.manual {
            // Air-gapped: the release travels on a stick; the wave waits for the sites' reports.
            return decisions;
        }
        let deadline = since + plan.offline_deadline;
        self.offer(
            plan,
            &current.sites,
            views,
            now,
            Some(deadline),
            &mut in_flight,
            &mut decisions,
        );
        decisions
    }

    /// Offers the target to waiting `sites` that are online and inside their window, while fewer
    /// than `max_parallel` are in flight. With a `deadline` (the current wave), a site still
    /// offline past it is marked absent.
    #[allow(clippy::too_many_arguments)]
    fn offer(
        &mut self,
        plan: &Plan,
        sites: &[String],
        views: &BTreeMap<String, SiteView>,
        now: Timestamp,
        deadline: Option<Timestamp>,
        in_flight: &mut usize,
        decisions: &mut Decisions,
    ) {
        for site in sites {
            if *in_flight >= plan.max_parallel {
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
                if deadline.is_some_and(|deadline| now >= deadline) {
                    *state = SiteState::Absent { since: now };
                }
                continue;
            }
            if view.window_open {
                *state = SiteState::Offered { at: now };
                decisions.offer.push(site.clone());
                *in_flight += 1;
            }
        }
    }

    /// Why the rollout must halt in `wave`, if it must: with `stop_on_failure`, any failure no
    /// operator acknowledged (a straggler's included); without, failures that make the wave's
    /// success threshold unreachable.
    fn halt_reason(&self, plan: &Plan, wave: usize) -> Option<String> {
        let current = &plan.waves[wave];
        let unacknowledged = |site: &String| match self.sites.get(site) {
            Some(SiteState::Failed {
                reason,
                acknowledged: false,
            }) => Some(format!("{site}: {reason}")),
            _ => None,
        };
        let states: Vec<&SiteState> = current
            .sites
            .iter()
            .filter_map(|site| self.sites.get(site))
            .collect();
        let failed = states
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    SiteState::Failed {
                        acknowledged: false,
                        ..
                    }
                )
            })
            .count();
        let left_out = states
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    SiteState::Skipped { .. }
                        | SiteState::Absent { .. }
                        | SiteState::Failed {
                            acknowledged: true,
                            ..
                        }
                )
            })
            .count();
        let counted = states.len() - left_out;
        let allowed_failures =
            counted - (counted * usize::from(plan.success_threshold_percent)).div_ceil(100);
        if plan.stop_on_failure {
            let straggler = plan.waves[..wave]
                .iter()
                .flat_map(|earlier| &earlier.sites)
                .find_map(unacknowledged);
            if let Some(first) = current.sites.iter().find_map(unacknowledged).or(straggler) {
                return Some(format!(
                    "wave {} ({}): {failed} of {counted} sites failed — {first}",
                    wave + 1,
                    current.name
                ));
            }
        } else if failed > allowed_failures {
            let first = current
                .sites
                .iter()
                .find_map(unacknowledged)
                .unwrap_or_default();
            return Some(format!(
                "wave {} ({}): {failed} of {counted} sites failed, more than {}% allows — {first}",
                wave + 1,
                current.name,
                100 - plan.success_threshold_percent
            ));
        }
        None
    }

    /// Halts with `reason`: offers not begun go back; updates under way finish and are judged.
    /// Also how the region stops a rollout whose release was withdrawn.
    pub fn halt(&mut self, reason: String, decisions: &mut Decisions) {
        let wave = self.progress.wave().unwrap_or_default();
        self.take_back_unbegun(decisions);
        self.progress = Progress::Halted { wave, reason };
    }

    fn take_back_unbegun(&mut self, decisions: &mut Decisions) {
        for (site, state) in &mut self.sites {
            if matches!(state, SiteState::Offered { .. }) {
                *state = SiteState::Waiting;
                decisions.take_back.push(site.clone());
            }
        }
    }

    /// Pauses a running rollout; offers not begun go back.
    pub fn pause(
        &mut self,
        by: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<Decisions, WrongState> {
        let Progress::Running { wave, .. } = self.progress else {
            return Err(self.wrong("pause"));
        };
        let mut decisions = Decisions::default();
        self.take_back_unbegun(&mut decisions);
        self.progress = Progress::Paused {
            wave,
            since: now,
            by: by.to_owned(),
            reason: reason.to_owned(),
        };
        Ok(decisions)
    }

    /// Resumes a paused or halted rollout in its wave. Resuming a halt acknowledges the failures
    /// that caused it (the operator looked at them): they no longer halt the rollout and count
    /// like skipped sites. A failure that came during a pause was not looked at and still halts.
    /// Offline sites get a whole deadline again from now.
    pub fn resume(&mut self, now: Timestamp) -> Result<(), WrongState> {
        let wave = match self.progress {
            Progress::Paused { wave, .. } => wave,
            Progress::Halted { wave, .. } => {
                for state in self.sites.values_mut() {
                    if let SiteState::Failed { acknowledged, .. } = state {
                        *acknowledged = true;
                    }
                }
                wave
            }
            _ => return Err(self.wrong("resume")),
        };
        self.progress = Progress::Running { wave, since: now };
        Ok(())
    }

    /// Points a halted or paused rollout at a fixed release and starts it again from the first
    /// wave: sites on it succeeded, sites that failed it are skipped, every other site waits (a
    /// site that succeeded with the old target gets the new one in its wave). Offers not begun go
    /// back; the old target's failures stay in the sites' history, so it is never offered again.
    pub fn retarget(
        &mut self,
        plan: &mut Plan,
        target: Version,
        views: &BTreeMap<String, SiteView>,
        now: Timestamp,
    ) -> Result<Decisions, WrongState> {
        if !matches!(
            self.progress,
            Progress::Halted { .. } | Progress::Paused { .. }
        ) {
            return Err(self.wrong("retarget"));
        }
        let mut decisions = Decisions::default();
        self.take_back_unbegun(&mut decisions);
        plan.target = target;
        for (site, state) in &mut self.sites {
            *state = initial(&plan.target, views.get(site));
        }
        self.progress = Progress::Running {
            wave: 0,
            since: now,
        };
        Ok(decisions)
    }

    /// Stops the rollout for good; offers not begun go back, updates under way are followed.
    pub fn stop(&mut self, by: &str, reason: &str) -> Result<Decisions, WrongState> {
        let wave = match &self.progress {
            Progress::Running { wave, .. }
            | Progress::Paused { wave, .. }
            | Progress::Halted { wave, .. } => *wave,
            Progress::Stopped { .. } | Progress::Completed => return Err(self.wrong("stop")),
        };
        let mut decisions = Decisions::default();
        self.take_back_unbegun(&mut decisions);
        self.progress = Progress::Stopped {
            wave,
            by: by.to_owned(),
            reason: reason.to_owned(),
        };
        Ok(decisions)
    }

    /// Ends the wait for the manual wave: air-gapped sites that have not reported the release yet
    /// are skipped, and the rollout completes. Their reports are still read by later rollouts.
    pub fn finish(&mut self, plan: &Plan) -> Result<(), WrongState> {
        let (Progress::Running { wave, .. } | Progress::Paused { wave, .. }) = self.progress else {
            return Err(self.wrong("finish"));
        };
        let Some(current) = plan.waves.get(wave).filter(|current| current.manual) else {
            return Err(WrongState {
                action: "finish",
                state: "not in its manual wave",
            });
        };
        for site in &current.sites {
            if let Some(state) = self.sites.get_mut(site)
                && *state == SiteState::Waiting
            {
                *state = SiteState::Skipped {
                    reason: "not imported when the operator finished the manual wave".into(),
                };
            }
        }
        Ok(())
    }

    fn wrong(&self, action: &'static str) -> WrongState {
        WrongState {
            action,
            state: self.progress.name(),
        }
    }
}

/// Where a site starts in a rollout of `target`.
fn initial(target: &Version, view: Option<&SiteView>) -> SiteState {
    if view.and_then(|v| v.running.as_ref()) == Some(target) {
        SiteState::Succeeded
    } else if view.is_some_and(|v| v.failed.contains(target)) {
        SiteState::Skipped {
            reason: format!("{target} failed on this site before"),
        }
    } else {
        SiteState::Waiting
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
            // The verdict first: a node that just rolled back may report once more from the
            // image it is leaving, its failed list already naming the target.
            if let Some(reason) = failure(view, target, started) {
                Some(SiteState::failed(reason))
            } else if committed(view, target) {
                Some(SiteState::Soaking { committed_at: now })
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
                    SiteState::failed("went silent while updating")
                } else {
                    // Offered but gone before it began: the offer goes back, and it catches up
                    // as a straggler when it returns.
                    SiteState::Absent { since: now }
                })
            } else {
                None
            }
        }
        SiteState::Soaking { committed_at } => {
            if view.failed.contains(target) {
                Some(SiteState::failed(
                    failure(view, target, *committed_at).unwrap_or_else(|| {
                        format!("{target} failed its health gate and was rolled back")
                    }),
                ))
            } else if view.running.as_ref() != Some(target) {
                Some(SiteState::failed(format!(
                    "left {target} while soaking (runs {})",
                    view.running
                        .as_ref()
                        .map_or_else(|| "nothing".into(), ToString::to_string)
                )))
            } else if view.online && !view.healthy {
                Some(SiteState::failed("unhealthy while soaking"))
            } else if now.duration_since(*committed_at) >= soak
                && (soak.is_zero()
                    || view
                        .last_seen
                        .is_some_and(|seen| seen.duration_since(*committed_at) >= soak))
            {
                // Healthy through the soak means a report from after it says so: a site that
                // went quiet (rebooting, say) is not taken at its last word.
                Some(SiteState::Succeeded)
            } else {
                None
            }
        }
        // A site not offered (yet, or any more) that runs or installs the target anyway — a
        // take-back that raced a node which had begun, a stick — is followed and judged like one
        // that was offered.
        SiteState::Waiting | SiteState::Absent { .. } => {
            if committed(view, target) {
                Some(SiteState::Soaking { committed_at: now })
            } else if view.updating.as_ref() == Some(target) {
                Some(SiteState::Updating { since: now })
            } else {
                None
            }
        }
        SiteState::Succeeded | SiteState::Failed { .. } | SiteState::Skipped { .. } => None,
    };
    match next {
        Some(next) if next != *state => {
            *state = next;
            true
        }
        _ => false,
    }
}

/// The site runs `target` and its health gate let it stay. While the gate judges, the node already
/// boots the new image (its reported OS version is the target) but its update is not over: a
/// rollback may still come; and right after one, the node may report once more from the image it
/// leaves, the target already in its failed list.
fn committed(view: &SiteView, target: &Version) -> bool {
    view.running.as_ref() == Some(target)
        && view.updating.as_ref() != Some(target)
        && !view.failed.contains(target)
}

/// Why a site's update of `target`, offered at `offered`, failed, if it did.
fn failure(view: &SiteView, target: &Version, offered: Timestamp) -> Option<String> {
    if view.failed.contains(target) {
        return Some(match &view.rolled_back {
            Some((version, why)) if version == target => {
                format!("{target} failed its health gate and was rolled back: {why}")
            }
            _ => format!("{target} failed its health gate and was rolled back"),
        });
    }
    match &view.refused {
        Some((version, at)) if version == target && *at >= offered => {
            Some(format!("the site refused {target}"))
        }
        _ => None,
    }
}
