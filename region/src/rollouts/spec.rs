//! What an operator asks for when creating a rollout, checked, and turned into a [`Plan`]: the sites
//! of each wave fixed at creation, so a wave's membership never shifts under a running rollout when
//! labels change or sites join.
//!
//! Sites are spread over the waves in an order derived from the rollout's name and the site's
//! (SHA-256), not by name: a percentage wave then takes a spread of the fleet, not the sites that
//! sort first, and the same rollout re-created assigns the same way.

use super::machine::{Plan, Wave};
use crate::fleet::is_valid_name;
use jiff::SignedDuration;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

/// Most waves a rollout may have.
pub const MAX_WAVES: usize = 20;
/// Longest soak and offline deadline: a month.
pub const MAX_WAIT: SignedDuration = SignedDuration::from_hours(24 * 30);

/// A rollout as an operator writes it (REST body, CLI file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// Its name: lower-case letters, digits and '-', as site names.
    pub name: String,
    /// The release it rolls out.
    pub target_version: String,
    /// The waves, in order.
    pub waves: Vec<WaveSpec>,
    /// At most this many sites update at once. Default 1.
    #[serde(default = "one")]
    pub max_parallel: usize,
    /// A wave passes when this share of its sites succeeded. Default 100.
    #[serde(default = "hundred")]
    pub success_threshold_percent: u8,
    /// Halt at the first failure. Default true.
    #[serde(default = "yes")]
    pub stop_on_failure: bool,
    /// How long a wave waits for an offline site before skipping it. Default a day.
    #[serde(default = "a_day")]
    pub offline_deadline_secs: u64,
}

/// One wave as an operator writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveSpec {
    /// Its name.
    pub name: String,
    /// Only sites with all these labels.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// This share of the rollout's sites, from those the selector matches and no earlier wave
    /// took; without it, all of them.
    #[serde(default)]
    pub percent: Option<u8>,
    /// How long each site must stay healthy after committing. Default 0.
    #[serde(default)]
    pub soak_secs: u64,
}

const fn one() -> usize {
    1
}
const fn hundred() -> u8 {
    100
}
const fn yes() -> bool {
    true
}
const fn a_day() -> u64 {
    86_400
}

/// A spec that cannot become a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A value out of its range, or a malformed name or version.
    #[error("invalid rollout: {0}")]
    Invalid(String),
    /// Sites no wave takes.
    #[error(
        "sites in no wave: {}; add a last wave without selector and percent to take the rest",
        .0.join(", ")
    )]
    Unassigned(Vec<String>),
}

/// A site as the assignment sees it: its name, labels and how it gets releases.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The site's name.
    pub name: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Air-gapped: releases reach it on a stick, so it is never offered online and goes into the
    /// manual last wave, whatever the selectors say.
    pub manual: bool,
}

/// The name of the manual last wave (reserved).
pub const MANUAL_WAVE: &str = "manual";

impl RolloutSpec {
    /// Checks the spec and assigns `sites` (the active sites of the fleet) to its waves.
    pub fn plan(&self, sites: &[Candidate<'_>]) -> Result<Plan, SpecError> {
        let invalid = |reason: String| SpecError::Invalid(reason);
        if !is_valid_name(&self.name) {
            return Err(invalid(format!(
                "name {:?}: use 1 to 63 lower-case letters, digits and '-'",
                self.name
            )));
        }
        let target = self.target_version.parse().map_err(|_| {
            invalid(format!(
                "target_version {:?} is not a semantic version",
                self.target_version
            ))
        })?;
        if self.waves.is_empty() || self.waves.len() > MAX_WAVES {
            return Err(invalid(format!("1 to {MAX_WAVES} waves")));
        }
        let mut names = std::collections::BTreeSet::new();
        for wave in &self.waves {
            if !is_valid_name(&wave.name) || !names.insert(&wave.name) || wave.name == MANUAL_WAVE {
                return Err(invalid(format!(
                    "wave name {:?}: unique, lower-case letters, digits and '-', not `manual` (the air-gapped sites' wave)",
                    wave.name
                )));
            }
            if wave.percent.is_some_and(|p| p == 0 || p > 100) {
                return Err(invalid(format!("wave {}: percent is 1 to 100", wave.name)));
            }
        }
        if self.max_parallel == 0 {
            return Err(invalid("max_parallel is at least 1".into()));
        }
        if self.success_threshold_percent == 0 || self.success_threshold_percent > 100 {
            return Err(invalid("success_threshold_percent is 1 to 100".into()));
        }
        let offline_deadline = seconds(self.offline_deadline_secs)
            .filter(|d| *d >= SignedDuration::from_secs(1))
            .ok_or_else(|| invalid("offline_deadline_secs is 1 to 2592000".into()))?;

        let mut order: Vec<(&Candidate<'_>, [u8; 32])> = sites
            .iter()
            .filter(|site| !site.manual)
            .map(|site| {
                let key: [u8; 32] = Sha256::new()
                    .chain_update(self.name.as_bytes())
                    .chain_update([0])
                    .chain_update(site.name.as_bytes())
                    .finalize()
                    .into();
                (site, key)
            })
            .collect();
        order.sort_by_key(|(_, key)| *key);
        let total = order.len();
        let mut taken = vec![false; total];
        let mut waves = Vec::with_capacity(self.waves.len());
        for wave in &self.waves {
            let soak = seconds(wave.soak_secs).ok_or_else(|| {
                invalid(format!("wave {}: soak_secs is at most 2592000", wave.name))
            })?;
            let quota = wave
                .percent
                .map_or(total, |p| (total * usize::from(p)).div_ceil(100));
            let mut members = Vec::new();
            for (index, (site, _)) in order.iter().enumerate() {
                if members.len() == quota {
                    break;
                }
                let matches = wave
                    .selector
                    .iter()
                    .all(|(key, value)| site.labels.get(key) == Some(value));
                if !taken[index] && matches {
                    taken[index] = true;
                    members.push(site.name.to_owned());
                }
            }
            waves.push(Wave {
                name: wave.name.clone(),
                sites: members,
                soak,
                manual: false,
            });
        }
        let mut manual: Vec<String> = sites
            .iter()
            .filter(|site| site.manual)
            .map(|site| site.name.to_owned())
            .collect();
        if !manual.is_empty() {
            manual.sort();
            waves.push(Wave {
                name: MANUAL_WAVE.to_owned(),
                sites: manual,
                soak: SignedDuration::ZERO,
                manual: true,
            });
        }
        let mut left: Vec<String> = order
            .iter()
            .zip(&taken)
            .filter(|(_, taken)| !**taken)
            .map(|((site, _), _)| site.name.to_owned())
            .collect();
        if !left.is_empty() {
            left.sort();
            return Err(SpecError::Unassigned(left));
        }
        Ok(Plan {
            target,
            waves,
            max_parallel: self.max_parallel,
            success_threshold_percent: self.success_threshold_percent,
            stop_on_failure: self.stop_on_failure,
            offline_deadline,
        })
    }
}

/// `secs` as a duration no longer than [`MAX_WAIT`].
fn seconds(secs: u64) -> Option<SignedDuration> {
    i64::try_from(secs)
        .ok()
        .map(SignedDuration::from_secs)
        .filter(|d| *d <= MAX_WAIT)
}
