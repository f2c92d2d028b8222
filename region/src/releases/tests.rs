//! The releases domain over a real release repository (signed with the release crate in a temporary
//! directory), a real mirror and a real SQLite store, with a settable clock.

use super::*;
use crate::fleet::ManualClock;
use crate::store::fixtures;
use jiff::{SignedDuration, Timestamp};
use scs_edge_release::keys;
use scs_edge_release::repository::Repository;
use scs_edge_release::test_support;

/// A release manager's desk and a region beside it.
struct Setup {
    dir: tempfile::TempDir,
    desk_keys: KeySet,
    repository: Repository,
    store: Store,
    clock: Arc<ManualClock>,
    releases: Releases,
}

impl Setup {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let desk_keys = KeySet::new(dir.path().join("keys"));
        let repository = Repository::new(dir.path().join("repository"));
        let root = keys::init(
            &desk_keys,
            &repository.metadata_dir(),
            &Lifetimes::default(),
            Timestamp::now(),
        )
        .await
        .expect("init");
        // The region holds the root of trust and the timestamp key, nothing else.
        let region_keys = dir.path().join("region-keys");
        std::fs::create_dir_all(&region_keys).expect("key folder");
        std::fs::copy(
            dir.path().join("keys/timestamp.pk8"),
            region_keys.join("timestamp.pk8"),
        )
        .expect("timestamp key");
        let settings = ReleaseSettings {
            mirror_dir: dir.path().join("region/releases"),
            root_of_trust: root,
            timestamp_key_dir: region_keys,
            lifetimes: Lifetimes::default(),
        };
        let store = Store::open("sqlite::memory:").await.expect("store");
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let releases = Releases::open(&settings, store.clone(), clock.clone()).expect("open");
        Self {
            dir,
            desk_keys,
            repository,
            store,
            clock,
            releases,
        }
    }

    async fn sign(&self, version: &str) {
        test_support::sign(
            &self.desk_keys,
            &self.repository,
            &self.dir.path().join("image"),
            version,
        )
        .await;
    }

    async fn publish(&self) -> Result<Vec<ReleaseRecord>, ReleasesError> {
        self.releases.publish(self.repository.dir(), "alice").await
    }

    /// An active site whose node reports running `os`, wanting `desired` (if any).
    async fn site(&self, name: &str, os: &str, desired: Option<&str>) {
        let now = self.clock.now();
        fixtures::joined_site(&self.store, name, &std::collections::BTreeMap::new(), now).await;
        fixtures::heartbeat(&self.store, name, 1, os, None, now).await;
        if let Some(version) = desired {
            self.store
                .change_desired(
                    name,
                    &crate::store::DesiredChange {
                        labels: None,
                        target_os_version: Some(Some(version.into())),
                        maintenance_window: None,
                    },
                )
                .await
                .expect("desired");
        }
    }

    fn mirror_tree(&self) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
        test_support::files_under(&self.dir.path().join("region/releases/repository"))
    }
}

fn versions(records: &[ReleaseRecord]) -> Vec<String> {
    records
        .iter()
        .map(|record| record.manifest.version.to_string())
        .collect()
}

/// The consistent-snapshot file name of `release`'s artifact of `kind`.
fn artifact_file(record: &ReleaseRecord, kind: scs_edge_proto::release::ArtifactKind) -> String {
    let artifact = record
        .manifest
        .artifacts
        .iter()
        .find(|artifact| artifact.kind == kind)
        .expect("artifact");
    format!("{}.{}", artifact.sha256, artifact.target)
}

#[tokio::test]
async fn publications_are_recorded_listed_newest_first_and_not_repeated() {
    let setup = Setup::new().await;
    setup.sign("1.0.0").await;
    assert_eq!(versions(&setup.publish().await.expect("1.0.0")), ["1.0.0"]);
    setup.sign("1.1.0").await;
    let published = setup.publish().await.expect("1.1.0");
    assert_eq!(versions(&published), ["1.1.0"]);
    assert_eq!(published[0].published_by, "alice");
    assert_eq!(published[0].state, ReleaseState::Available);

    assert_eq!(
        versions(&setup.releases.list().await.expect("list")),
        ["1.1.0", "1.0.0"]
    );
    assert_eq!(
        setup
            .releases
            .show("1.0.0")
            .await
            .expect("show")
            .manifest
            .version,
        semver::Version::new(1, 0, 0)
    );
    assert!(matches!(
        setup.releases.show("2.0.0").await,
        Err(ReleasesError::UnknownRelease(version)) if version == "2.0.0"
    ));
    assert!(matches!(
        setup.releases.show("latest").await,
        Err(ReleasesError::InvalidVersion(_))
    ));

    let before = setup.mirror_tree();
    assert!(matches!(
        setup.publish().await,
        Err(ReleasesError::NothingNew(_))
    ));
    assert_eq!(setup.mirror_tree(), before, "nothing re-signed");
}

#[tokio::test]
async fn a_release_older_than_the_fleet_is_refused_and_changes_nothing() {
    let setup = Setup::new().await;
    setup.site("factory-1", "2.0.0", None).await;
    setup.site("factory-2", "2.1.0", None).await;
    setup.sign("1.5.0").await;

    let err = setup.publish().await.expect_err("older than the fleet");
    assert!(matches!(err, ReleasesError::Refused(_)), "{err}");
    assert!(
        err.to_string()
            .contains("release 1.5.0 is older than the fleet: every site runs 2.0.0 or newer"),
        "{err}"
    );
    assert!(setup.releases.list().await.expect("list").is_empty());
    assert!(setup.mirror_tree().is_empty(), "the mirror holds nothing");

    // The release tool keeps 1.5.0 in its repository: it comes along with a newer release, which
    // no site refuses to go up to.
    setup.sign("2.2.0").await;
    assert_eq!(
        versions(&setup.publish().await.expect("2.2.0")),
        ["1.5.0", "2.2.0"]
    );
}

#[tokio::test]
async fn a_site_reads_metadata_and_manifests_and_only_its_desired_releases_artifacts() {
    let setup = Setup::new().await;
    setup.sign("1.0.0").await;
    setup.sign("1.1.0").await;
    let published = setup.publish().await.expect("published");
    let (first, second) = (&published[0], &published[1]);
    setup.site("wants-1-1", "1.0.0", Some("1.1.0")).await;
    setup.site("wants-nothing", "1.0.0", None).await;
    let uki = scs_edge_proto::release::ArtifactKind::Uki;

    let served = |site: &'static str, folder: &'static str, file: String| {
        let releases = setup.releases.clone();
        async move { releases.served(site, folder, &file).await.expect("served") }
    };
    for site in ["wants-1-1", "wants-nothing"] {
        assert!(matches!(
            served(site, "metadata", "timestamp.json".into()).await,
            Served::File(_)
        ));
        assert!(matches!(
            served(site, "metadata", "1.root.json".into()).await,
            Served::File(_)
        ));
        let manifest =
            std::fs::read_dir(setup.dir.path().join("region/releases/repository/targets"))
                .expect("targets")
                .map(|entry| {
                    entry
                        .expect("entry")
                        .file_name()
                        .into_string()
                        .expect("utf-8")
                })
                .find(|name| name.ends_with("scs-edge_1.0.0.manifest.json"))
                .expect("manifest");
        assert!(matches!(
            served(site, "targets", manifest).await,
            Served::File(_)
        ));
    }
    assert!(matches!(
        served("wants-1-1", "targets", artifact_file(second, uki)).await,
        Served::File(_)
    ));
    assert_eq!(
        served("wants-1-1", "targets", artifact_file(first, uki)).await,
        Served::NotOffered {
            version: Some("1.0.0".into())
        }
    );
    assert_eq!(
        served("wants-nothing", "targets", artifact_file(second, uki)).await,
        Served::NotOffered {
            version: Some("1.1.0".into())
        }
    );
    // The end of the root chain, and names the mirror never serves.
    for (folder, file) in [
        ("metadata", "2.root.json"),
        ("metadata", "../releases.db"),
        ("metadata", ".timestamp.json.partial"),
        ("metadata", "lock"),
        ("targets", "scratch"),
        ("elsewhere", "timestamp.json"),
    ] {
        assert_eq!(
            served("wants-1-1", folder, file.into()).await,
            Served::NotFound,
            "{folder}/{file}"
        );
    }

    // Withdrawn: offered to nobody, even a site that still wants it.
    let err = setup
        .releases
        .withdraw("1.1.0", "bob", " ")
        .await
        .expect_err("no reason");
    assert!(matches!(err, ReleasesError::InvalidInput(_)), "{err}");
    let withdrawn = setup
        .releases
        .withdraw("1.1.0", "bob", "breaks OVN on old NICs")
        .await
        .expect("withdrawn");
    assert_eq!(withdrawn.state, ReleaseState::Withdrawn);
    assert_eq!(
        served("wants-1-1", "targets", artifact_file(second, uki)).await,
        Served::NotOffered {
            version: Some("1.1.0".into())
        }
    );
    assert!(matches!(
        setup.releases.withdraw("3.0.0", "bob", "typo").await,
        Err(ReleasesError::UnknownRelease(_))
    ));
}

#[tokio::test]
async fn the_timestamp_is_re_signed_at_half_its_lifetime() {
    let setup = Setup::new().await;
    assert_eq!(
        setup
            .releases
            .refresh_timestamp_if_due()
            .await
            .expect("empty"),
        None,
        "nothing published, nothing to sign"
    );
    setup.sign("1.0.0").await;
    setup.publish().await.expect("published");
    assert_eq!(
        setup
            .releases
            .refresh_timestamp_if_due()
            .await
            .expect("fresh"),
        None
    );
    // Three and a half days of a week's lifetime later.
    setup.clock.advance(SignedDuration::from_hours(84));
    let version = setup
        .releases
        .refresh_timestamp_if_due()
        .await
        .expect("refresh")
        .expect("re-signed");
    assert_eq!(
        setup
            .releases
            .refresh_timestamp_if_due()
            .await
            .expect("fresh again"),
        None
    );
    assert!(version > 1);
}
