//! The rollouts service: operators create, list, show and resume rollouts; the region's driver
//! steps every active one. It reads the fleet from the store, lets [`super::machine`] decide, and
//! saves each step together with the desired-state changes it decided.

use super::machine::{Decisions, Hold, Plan, Progress, Rollout, SiteView, WrongState};
use super::observe;
use super::progress::{self, Summary};
use super::spec::{Candidate, RolloutSpec, SpecError};
use crate::fleet::Clock;
use crate::store::{
    Delivery, ReleaseRecord, ReleaseState, Retarget, RolloutRecord, RolloutStep, RolloutSwitch,
    SiteState, Store, StoreError,
};
use jiff::{SignedDuration, Timestamp};
use semver::Version;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How often an operator's action is computed again when the driver's tick saved a step of the
/// same rollout in between: the operator never loses a race against the tick.
const OPERATOR_ATTEMPTS: usize = 3;

/// A rollout request the region refused, or a failure underneath it.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The spec is invalid or leaves sites out.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The target is not a published release.
    #[error("no release {0}: publish it first (scs-edge-region release publish)")]
    UnknownRelease(String),
    /// The target was withdrawn.
    #[error("release {0} is withdrawn")]
    Withdrawn(String),
    /// A rollout with this name exists.
    #[error("rollout {0} already exists")]
    Exists(String),
    /// Sites are in another active rollout.
    #[error("sites {} are in rollout {rollout}, which is still active", .sites.join(", "))]
    Overlap {
        /// The other rollout.
        rollout: String,
        /// The sites in both.
        sites: Vec<String>,
    },
    /// No rollout with this name.
    #[error("no rollout named {0}")]
    Unknown(String),
    /// The rollout's state does not allow the action.
    #[error("rollout {name}: {source}")]
    WrongState {
        /// The rollout.
        name: String,
        /// What was asked, in which state.
        source: WrongState,
    },
    /// An action that is kept on the record needs the operator's reason.
    #[error("{0} needs a reason, for the record")]
    ReasonRequired(&'static str),
    /// The fleet-wide switch is engaged.
    #[error("the rollout switch is engaged (by {by}: {reason}); release it first")]
    SwitchEngaged {
        /// Who engaged it.
        by: String,
        /// Why.
        reason: String,
    },
    /// A stored plan or state this build cannot read.
    #[error("rollout {name}: stored {what} unreadable: {reason}")]
    Corrupt {
        /// The rollout.
        name: String,
        /// `plan` or `state`.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(StoreError),
}

impl From<StoreError> for RolloutError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::UnknownRelease(version) => Self::UnknownRelease(version),
            StoreError::RolloutExists(name) => Self::Exists(name),
            StoreError::UnknownRollout(name) => Self::Unknown(name),
            StoreError::RolloutOverlap { rollout, sites } => Self::Overlap { rollout, sites },
            StoreError::SwitchEngaged { by, reason } => Self::SwitchEngaged { by, reason },
            other => Self::Store(other),
        }
    }
}

/// A rollout as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutView {
    /// The stored record (name, target, who, when).
    pub record: RolloutRecord,
    /// Its plan.
    pub plan: Plan,
    /// Its state.
    pub state: Rollout,
}

/// The service.
#[derive(Clone)]
pub struct Rollouts {
    store: Store,
    clock: Arc<dyn Clock>,
    expected_interval: SignedDuration,
}

impl std::fmt::Debug for Rollouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollouts").finish_non_exhaustive()
    }
}

impl Rollouts {
    /// Over `store`; sites are online while they report every `expected_interval`.
    pub fn new(store: Store, clock: Arc<dyn Clock>, expected_interval: SignedDuration) -> Self {
        Self {
            store,
            clock,
            expected_interval,
        }
    }

    /// Creates the rollout `spec` describes, by `actor`, over the fleet's active sites.
    pub async fn create(
        &self,
        spec: &RolloutSpec,
        actor: &str,
    ) -> Result<RolloutView, RolloutError> {
        published(&self.store.releases().await?, &spec.target_version)?;
        let sites: Vec<_> = self
            .store
            .list_sites()
            .await?
            .into_iter()
            .filter(|site| site.state == SiteState::Active)
            .collect();
        let candidates: Vec<Candidate<'_>> = sites
            .iter()
            .map(|site| Candidate {
                name: &site.name,
                labels: &site.desired.labels,
                manual: site.delivery == Delivery::Manual,
            })
            .collect();
        let plan = spec.plan(&candidates)?;
        // "Offline" is three missed heartbeats: a shorter deadline would skip sites that are not.
        if plan.offline_deadline < self.expected_interval * 3 {
            return Err(SpecError::Invalid(format!(
                "offline_deadline_secs must be at least three heartbeat intervals ({} s)",
                (self.expected_interval * 3).as_secs()
            ))
            .into());
        }
        let now = self.clock.now();
        let views = sites
            .iter()
            .map(|site| {
                (
                    site.name.clone(),
                    observe::view(site, now, self.expected_interval),
                )
            })
            .collect();
        let state = Rollout::start(&plan, &views, now);
        let record = RolloutRecord {
            name: spec.name.clone(),
            target_version: spec.target_version.clone(),
            plan: encode(&plan),
            state: encode(&state),
            active: true,
            revision: 1,
            created_at: now,
            created_by: actor.to_owned(),
            updated_at: now,
        };
        let members: Vec<String> = plan.waves.iter().flat_map(|w| w.sites.clone()).collect();
        self.store.create_rollout(&record, &members).await?;
        tracing::info!(rollout = %spec.name, target = %spec.target_version, actor, sites = members.len(), "rollout created");
        Ok(RolloutView {
            record,
            plan,
            state,
        })
    }

    /// Every rollout, newest first.
    pub async fn list(&self) -> Result<Vec<RolloutView>, RolloutError> {
        let mut views = self
            .store
            .rollouts()
            .await?
            .into_iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        views.sort_by_key(|view| std::cmp::Reverse(view.record.created_at));
        Ok(views)
    }

    /// One rollout.
    pub async fn show(&self, name: &str) -> Result<RolloutView, RolloutError> {
        self.list()
            .await?
            .into_iter()
            .find(|view| view.record.name == name)
            .ok_or_else(|| RolloutError::Unknown(name.to_owned()))
    }

    /// One rollout with what each of its sites is doing, as the operator surfaces show it.
    pub async fn progress(&self, name: &str) -> Result<(RolloutView, Summary), RolloutError> {
        let view = self.show(name).await?;
        let reports = self
            .store
            .list_sites()
            .await?
            .into_iter()
            .filter(|site| view.state.sites.contains_key(&site.name))
            .map(|site| (site.name, site.last_report.and_then(|report| report.update)))
            .collect();
        let summary = progress::summarise(&view.plan, &view.state, &reports);
        Ok((view, summary))
    }

    /// Pauses a running rollout: offers not begun go back, updates under way are followed.
    pub async fn pause(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<RolloutView, RolloutError> {
        let view = self
            .operate(name, |view, _, now| {
                let decisions = view.state.pause(actor, reason, now)?;
                Ok((decisions, false))
            })
            .await?;
        tracing::info!(rollout = name, actor, reason, "rollout paused");
        Ok(view)
    }

    /// Resumes a paused or halted rollout in its wave; with `target`, points it at that (fixed)
    /// release first and starts again from the first wave. A withdrawn target cannot be resumed.
    pub async fn resume(
        &self,
        name: &str,
        actor: &str,
        target: Option<&str>,
    ) -> Result<RolloutView, RolloutError> {
        let releases = self.store.releases().await?;
        let retarget = match target {
            Some(version) => Some(published(&releases, version)?),
            None => None,
        };
        let sites = if retarget.is_some() {
            self.views(self.clock.now()).await?
        } else {
            BTreeMap::new()
        };
        let view = self
            .operate(name, |view, plan, now| {
                if let Some(version) = &retarget {
                    let decisions = view.state.retarget(plan, version.clone(), &sites, now)?;
                    return Ok((decisions, true));
                }
                if let Some(release) = releases.iter().find(|r| r.manifest.version == plan.target)
                    && release.state == ReleaseState::Withdrawn
                {
                    return Err(RolloutError::Withdrawn(plan.target.to_string()));
                }
                view.state.resume(now)?;
                Ok((Decisions::default(), false))
            })
            .await?;
        tracing::info!(rollout = name, actor, target = ?target, "rollout resumed");
        Ok(view)
    }

    /// Stops a rollout for good: offers not begun go back, updates under way are followed to
    /// their verdict, nothing is offered again.
    pub async fn stop(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<RolloutView, RolloutError> {
        if reason.trim().is_empty() {
            return Err(RolloutError::ReasonRequired("stopping a rollout for good"));
        }
        let view = self
            .operate(name, |view, _, _| {
                Ok((view.state.stop(actor, reason)?, false))
            })
            .await?;
        tracing::warn!(rollout = name, actor, reason, "rollout stopped");
        Ok(view)
    }

    /// Ends the wait for a rollout's manual wave: air-gapped sites that did not report the release
    /// are skipped and the rollout completes.
    pub async fn finish(&self, name: &str, actor: &str) -> Result<RolloutView, RolloutError> {
        let view = self
            .operate(name, |view, plan, _| {
                view.state.finish(plan)?;
                Ok((Decisions::default(), false))
            })
            .await?;
        tracing::info!(rollout = name, actor, "manual wave finished");
        Ok(view)
    }

    /// The fleet-wide switch.
    pub async fn switch(&self) -> Result<RolloutSwitch, RolloutError> {
        Ok(self.store.rollout_switch().await?)
    }

    /// Engages or releases the fleet-wide switch. Engaging takes back every offer not begun at
    /// once (a step of every rollout runs before this returns); no offer is written after it.
    pub async fn set_switch(
        &self,
        engaged: bool,
        actor: &str,
        reason: &str,
    ) -> Result<RolloutSwitch, RolloutError> {
        if reason.trim().is_empty() {
            return Err(RolloutError::ReasonRequired("the rollout switch"));
        }
        let switch = RolloutSwitch {
            engaged,
            changed_at: self.clock.now(),
            changed_by: actor.to_owned(),
            reason: reason.to_owned(),
        };
        self.store.set_rollout_switch(&switch).await?;
        if engaged {
            tracing::warn!(
                actor,
                reason,
                "rollout switch engaged: no rollout offers anything"
            );
        } else {
            tracing::info!(actor, reason, "rollout switch released");
        }
        self.step_all().await?;
        Ok(switch)
    }

    /// One step of every active rollout: the driver's tick. A rollout that changed meanwhile (an
    /// operator, another region process) is stepped again at the next tick.
    pub async fn step_all(&self) -> Result<(), RolloutError> {
        let active: Vec<RolloutView> = self
            .list()
            .await?
            .into_iter()
            .filter(|rollout| rollout.record.active)
            .collect();
        if active.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let views = self.views(now).await?;
        let hold = if self.store.rollout_switch().await?.engaged {
            Hold::Switch
        } else {
            Hold::Free
        };
        let releases = self.store.releases().await?;
        for mut rollout in active {
            let before = rollout.state.clone();
            let mut decisions = Decisions::default();
            if let Some(withdrawal) = releases
                .iter()
                .find(|r| r.manifest.version == rollout.plan.target)
                .and_then(|r| r.withdrawal.as_ref())
                && matches!(
                    rollout.state.progress,
                    Progress::Running { .. } | Progress::Paused { .. }
                )
            {
                // Downloads under way are refused by the repository already; the sites that
                // took it are judged by their reports, and go back through `max_version`.
                rollout.state.halt(
                    format!(
                        "release {} withdrawn by {}: {}",
                        rollout.plan.target, withdrawal.by, withdrawal.reason
                    ),
                    &mut decisions,
                );
            }
            let step = rollout.state.step(&rollout.plan, &views, now, hold);
            decisions.offer.extend(step.offer);
            decisions.take_back.extend(step.take_back);
            if rollout.state == before && decisions == Decisions::default() {
                continue;
            }
            match self.save(&mut rollout, decisions, false).await {
                Ok(()) => {}
                // Another process or an operator moved it, or the switch was engaged between
                // reading it and saving: computed again from fresh state at the next tick.
                Err(
                    RolloutError::Store(StoreError::RolloutChanged(_))
                    | RolloutError::SwitchEngaged { .. },
                ) => continue,
                Err(err) => return Err(err),
            }
            if let Progress::Halted { reason, .. } = &rollout.state.progress
                && !matches!(before.progress, Progress::Halted { .. })
            {
                tracing::warn!(rollout = %rollout.record.name, %reason, "rollout halted");
            }
        }
        Ok(())
    }

    /// Every site as the machine sees it at `now`.
    async fn views(&self, now: Timestamp) -> Result<BTreeMap<String, SiteView>, RolloutError> {
        Ok(self
            .store
            .list_sites()
            .await?
            .iter()
            .map(|site| {
                (
                    site.name.clone(),
                    observe::view(site, now, self.expected_interval),
                )
            })
            .collect())
    }

    /// Applies an operator's action to rollout `name` and saves it with the desired-state changes
    /// it decided (and the plan's new target when it says it retargeted); computed again from fresh state when the
    /// driver saved a step in between.
    async fn operate(
        &self,
        name: &str,
        action: impl Fn(
            &mut RolloutView,
            &mut Plan,
            Timestamp,
        ) -> Result<(Decisions, bool), RolloutError>,
    ) -> Result<RolloutView, RolloutError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut view = self.show(name).await?;
            let mut plan = view.plan.clone();
            let (decisions, retargeted) =
                action(&mut view, &mut plan, self.clock.now()).map_err(|err| match err {
                    RolloutError::WrongState { source, .. } => RolloutError::WrongState {
                        name: name.to_owned(),
                        source,
                    },
                    other => other,
                })?;
            view.plan = plan;
            match self.save(&mut view, decisions, retargeted).await {
                Err(RolloutError::Store(StoreError::RolloutChanged(_)))
                    if attempt < OPERATOR_ATTEMPTS => {}
                other => return other.map(|()| view),
            }
        }
    }

    async fn save(
        &self,
        view: &mut RolloutView,
        decisions: Decisions,
        retargeted: bool,
    ) -> Result<(), RolloutError> {
        let step = RolloutStep {
            from_revision: view.record.revision,
            state: encode(&view.state),
            active: view.state.is_active(),
            retarget: retargeted.then(|| Retarget {
                version: view.plan.target.to_string(),
                plan: encode(&view.plan),
            }),
            offer: decisions.offer,
            take_back: decisions.take_back,
            at: self.clock.now(),
        };
        view.record.revision = self
            .store
            .save_rollout_step(&view.record.name, &step)
            .await
            .map_err(|err| match err {
                StoreError::RolloutChanged(_) => RolloutError::Store(err),
                other => other.into(),
            })?;
        if let Some(retarget) = step.retarget {
            view.record.target_version = retarget.version;
            view.record.plan = retarget.plan;
        }
        view.record.state = step.state;
        view.record.active = step.active;
        view.record.updated_at = step.at;
        Ok(())
    }
}

/// The published, not withdrawn release `version`.
fn published(releases: &[ReleaseRecord], version: &str) -> Result<Version, RolloutError> {
    let release = releases
        .iter()
        .find(|release| release.manifest.version.to_string() == version)
        .ok_or_else(|| RolloutError::UnknownRelease(version.to_owned()))?;
    if release.state == ReleaseState::Withdrawn {
        return Err(RolloutError::Withdrawn(version.to_owned()));
    }
    Ok(release.manifest.version.clone())
}

impl From<WrongState> for RolloutError {
    fn from(source: WrongState) -> Self {
        // The name is filled in by `Rollouts::operate`, which knows it.
        Self::WrongState {
            name: String::new(),
            source,
        }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> String {
    // Plain data of strings, numbers, versions and times: serialising cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn decode(record: RolloutRecord) -> Result<RolloutView, RolloutError> {
    let corrupt = |what, err: serde_json::Error| RolloutError::Corrupt {
        name: record.name.clone(),
        what,
        reason: err.to_string(),
    };
    let plan = serde_json::from_str(&record.plan).map_err(|err| corrupt("plan", err))?;
    let state = serde_json::from_str(&record.state).map_err(|err| corrupt("state", err))?;
    Ok(RolloutView {
        record,
        plan,
        state,
    })
}
