//! The rollouts service: operators create, list, show and resume rollouts; the region's driver
//! steps every active one. It reads the fleet from the store, lets [`super::machine`] decide, and
//! saves each step together with the desired-state changes it decided.

use super::machine::{Decisions, Plan, Progress, Rollout};
use super::observe;
use super::spec::{Candidate, RolloutSpec, SpecError};
use crate::fleet::Clock;
use crate::store::{ReleaseState, RolloutRecord, RolloutStep, SiteState, Store, StoreError};
use jiff::SignedDuration;
use std::collections::BTreeMap;
use std::sync::Arc;

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
    /// The rollout is not halted, so there is nothing to resume.
    #[error("rollout {0} is not halted")]
    NotHalted(String),
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
        let release = self
            .store
            .releases()
            .await?
            .into_iter()
            .find(|release| release.manifest.version.to_string() == spec.target_version)
            .ok_or_else(|| RolloutError::UnknownRelease(spec.target_version.clone()))?;
        if release.state == ReleaseState::Withdrawn {
            return Err(RolloutError::Withdrawn(spec.target_version.clone()));
        }
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
            })
            .collect();
        let plan = spec.plan(&candidates)?;
        let now = self.clock.now();
        let views = sites
            .iter()
            .map(|site| {
                (
                    site.name.clone(),
                    observe::view(site, now, self.expected_interval, true),
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

    /// Resumes a halted rollout in the wave it stopped in.
    pub async fn resume(&self, name: &str, actor: &str) -> Result<RolloutView, RolloutError> {
        let mut view = self.show(name).await?;
        let now = self.clock.now();
        if !view.state.resume(now) {
            return Err(RolloutError::NotHalted(name.to_owned()));
        }
        self.save(&mut view, Vec::new(), Vec::new()).await?;
        tracing::info!(rollout = name, actor, "rollout resumed");
        Ok(view)
    }

    /// One step of every active rollout: the driver's tick. A rollout that changed meanwhile (an
    /// operator, another region process) is stepped again at the next tick.
    pub async fn step_all(&self) -> Result<(), RolloutError> {
        let sites = self.store.list_sites().await?;
        let now = self.clock.now();
        let views: BTreeMap<_, _> = sites
            .iter()
            .map(|site| {
                (
                    site.name.clone(),
                    observe::view(site, now, self.expected_interval, true),
                )
            })
            .collect();
        for mut rollout in self.list().await? {
            if !rollout.record.active {
                continue;
            }
            let before = rollout.state.clone();
            let decisions = rollout.state.step(&rollout.plan, &views, now);
            if rollout.state == before && decisions == Decisions::default() {
                continue;
            }
            match self
                .save(&mut rollout, decisions.offer, decisions.take_back)
                .await
            {
                Ok(()) | Err(RolloutError::Store(StoreError::RolloutChanged(_))) => {}
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

    async fn save(
        &self,
        view: &mut RolloutView,
        offer: Vec<String>,
        take_back: Vec<String>,
    ) -> Result<(), RolloutError> {
        let step = RolloutStep {
            from_revision: view.record.revision,
            state: encode(&view.state),
            active: view.state.progress != Progress::Completed,
            offer,
            take_back,
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
        view.record.state = step.state;
        view.record.active = step.active;
        view.record.updated_at = step.at;
        Ok(())
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
