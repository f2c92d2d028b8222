//! Which verified release a node may take: the rules on versions that TUF does not know about.
//!
//! Versions only go up, except when a signed manifest's `max_version` (the regret field) says the
//! fleet must come down to it; a node never takes a version older than `min_from_version` allows;
//! a version that failed its health gate on this node is never taken again until an operator clears it.

use scs_edge_proto::release::{ArtifactKind, ReleaseManifest};
use semver::Version;
use std::collections::BTreeSet;

/// Why a node refuses a release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It is the version running now.
    #[error("version {0} is already running")]
    AlreadyRunning(Version),
    /// It is older than the running version and no signed `max_version` asks for it.
    #[error(
        "version {offered} is older than the running {running}; only a release whose signed max_version pulls the fleet back may downgrade"
    )]
    Downgrade {
        /// The running version.
        running: Version,
        /// The release's version.
        offered: Version,
    },
    /// The running version is too old to update to it directly.
    #[error("version {offered} updates only from {min_from} or newer; this node runs {running}")]
    TooOld {
        /// The running version.
        running: Version,
        /// The release's version.
        offered: Version,
        /// Its `min_from_version`.
        min_from: Version,
    },
    /// The release lies above its own regret ceiling: a malformed manifest.
    #[error("version {offered} is above its own max_version {max}")]
    AboveItsCeiling {
        /// The release's version.
        offered: Version,
        /// Its `max_version`.
        max: Version,
    },
    /// It failed its health gate on this node before.
    #[error("version {0} failed on this node before; an explicit retry clears that")]
    FailedBefore(Version),
    /// It carries an artifact this agent cannot install, or lacks one it needs.
    #[error("version {0} does not carry exactly the usr, verity, signature and UKI artifacts")]
    Artifacts(Version),
}

impl Refusal {
    /// The refusal counter's label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::AlreadyRunning(_) => "already_running",
            Self::Downgrade { .. } => "downgrade",
            Self::TooOld { .. } => "too_old",
            Self::AboveItsCeiling { .. } => "above_ceiling",
            Self::FailedBefore(_) => "failed_before",
            Self::Artifacts(_) => "artifacts",
        }
    }
}

/// Whether a node running `running`, with `failed` versions on record, may take `manifest`.
pub fn admit(
    running: &Version,
    manifest: &ReleaseManifest,
    failed: &BTreeSet<Version>,
) -> Result<(), Refusal> {
    let offered = &manifest.version;
    let mut kinds: Vec<ArtifactKind> = manifest.artifacts.iter().map(|a| a.kind).collect();
    kinds.sort_by_key(|kind| ArtifactKind::REQUIRED.iter().position(|k| k == kind));
    if kinds != ArtifactKind::REQUIRED {
        return Err(Refusal::Artifacts(offered.clone()));
    }
    if let Some(max) = &manifest.max_version
        && offered > max
    {
        return Err(Refusal::AboveItsCeiling {
            offered: offered.clone(),
            max: max.clone(),
        });
    }
    if offered == running {
        return Err(Refusal::AlreadyRunning(running.clone()));
    }
    if failed.contains(offered) {
        return Err(Refusal::FailedBefore(offered.clone()));
    }
    if offered < running {
        let pulls_back = manifest
            .max_version
            .as_ref()
            .is_some_and(|max| max == offered && running > max);
        return if pulls_back {
            Ok(())
        } else {
            Err(Refusal::Downgrade {
                running: running.clone(),
                offered: offered.clone(),
            })
        };
    }
    if running < &manifest.min_from_version {
        return Err(Refusal::TooOld {
            running: running.clone(),
            offered: offered.clone(),
            min_from: manifest.min_from_version.clone(),
        });
    }
    Ok(())
}

/// The release a node running `running` should move to among `manifests` (all verified): a regret
/// release that pulls it back wins; otherwise the newest admissible one. No release above the lowest
/// signed `max_version` is ever chosen, so a node pulled back does not climb again. `None` when no
/// release is admissible.
pub fn choose<'a>(
    running: &Version,
    manifests: &'a [ReleaseManifest],
    failed: &BTreeSet<Version>,
) -> Option<&'a ReleaseManifest> {
    let ceiling = manifests
        .iter()
        .filter_map(|m| m.max_version.as_ref())
        .min();
    let admissible = || {
        manifests.iter().filter(|manifest| {
            ceiling.is_none_or(|ceiling| &manifest.version <= ceiling)
                && admit(running, manifest, failed).is_ok()
        })
    };
    admissible()
        .find(|manifest| &manifest.version < running)
        .or_else(|| admissible().max_by(|a, b| a.version.cmp(&b.version)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use scs_edge_proto::release::Artifact;

    fn v(text: &str) -> Version {
        Version::parse(text).expect("version")
    }

    fn manifest(version: &str, min_from: &str, max: Option<&str>) -> ReleaseManifest {
        ReleaseManifest {
            schema: 1,
            version: v(version),
            min_from_version: v(min_from),
            max_version: max.map(v),
            artifacts: ArtifactKind::REQUIRED
                .iter()
                .map(|kind| Artifact {
                    kind: *kind,
                    target: format!(
                        "scs-edge_{version}{}",
                        kind.file_suffix().unwrap_or_default()
                    ),
                    sha256: "00".repeat(32),
                    length: 1,
                    partition_uuid: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_newer_release_is_admitted_when_the_running_version_is_recent_enough() {
        let none = BTreeSet::new();
        assert_eq!(
            admit(&v("1.0.0"), &manifest("1.1.0", "1.0.0", None), &none),
            Ok(())
        );
        assert_eq!(
            admit(&v("0.9.0"), &manifest("1.1.0", "1.0.0", None), &none),
            Err(Refusal::TooOld {
                running: v("0.9.0"),
                offered: v("1.1.0"),
                min_from: v("1.0.0")
            })
        );
    }

    #[test]
    fn downgrades_are_refused_unless_a_signed_max_version_pulls_the_node_back() {
        let none = BTreeSet::new();
        assert!(matches!(
            admit(&v("1.2.0"), &manifest("1.1.0", "1.0.0", None), &none),
            Err(Refusal::Downgrade { .. })
        ));
        assert_eq!(
            admit(
                &v("1.2.0"),
                &manifest("1.1.0", "1.0.0", Some("1.1.0")),
                &none
            ),
            Ok(())
        );
        // A ceiling above the running version pulls nobody back.
        assert!(matches!(
            admit(
                &v("1.2.0"),
                &manifest("1.1.0", "1.0.0", Some("1.3.0")),
                &none
            ),
            Err(Refusal::Downgrade { .. })
        ));
    }

    #[test]
    fn the_running_a_failed_and_a_self_contradicting_version_are_refused() {
        let failed = BTreeSet::from([v("1.1.0")]);
        assert_eq!(
            admit(
                &v("1.1.0"),
                &manifest("1.1.0", "1.0.0", None),
                &BTreeSet::new()
            ),
            Err(Refusal::AlreadyRunning(v("1.1.0")))
        );
        assert_eq!(
            admit(&v("1.0.0"), &manifest("1.1.0", "1.0.0", None), &failed),
            Err(Refusal::FailedBefore(v("1.1.0")))
        );
        assert!(matches!(
            admit(
                &v("1.0.0"),
                &manifest("1.2.0", "1.0.0", Some("1.1.0")),
                &failed
            ),
            Err(Refusal::AboveItsCeiling { .. })
        ));
    }

    #[test]
    fn a_release_missing_an_artifact_or_carrying_an_unknown_one_is_refused() {
        let mut short = manifest("1.1.0", "1.0.0", None);
        short.artifacts.pop();
        let mut odd = manifest("1.1.0", "1.0.0", None);
        odd.artifacts[0].kind = ArtifactKind::Unknown;
        for release in [short, odd] {
            assert_eq!(
                admit(&v("1.0.0"), &release, &BTreeSet::new()),
                Err(Refusal::Artifacts(v("1.1.0")))
            );
        }
    }

    #[test]
    fn choose_prefers_a_regret_release_then_the_newest_admissible_one() {
        let failed = BTreeSet::from([v("1.3.0")]);
        let releases = [
            manifest("1.1.0", "1.0.0", None),
            manifest("1.2.0", "1.0.0", None),
            manifest("1.3.0", "1.0.0", None),
        ];
        let chosen = choose(&v("1.0.0"), &releases, &failed).map(|m| m.version.clone());
        assert_eq!(chosen, Some(v("1.2.0")), "1.3.0 failed here before");
        let with_regret = [
            manifest("1.2.0", "1.0.0", None),
            manifest("1.1.0", "1.0.0", Some("1.1.0")),
        ];
        let chosen = choose(&v("1.2.0"), &with_regret, &BTreeSet::new()).map(|m| m.version.clone());
        assert_eq!(chosen, Some(v("1.1.0")));
        // Once pulled back, the node stays below the ceiling.
        assert_eq!(choose(&v("1.1.0"), &with_regret, &BTreeSet::new()), None);
        assert_eq!(choose(&v("1.2.0"), &releases[..2], &BTreeSet::new()), None);
    }
}
