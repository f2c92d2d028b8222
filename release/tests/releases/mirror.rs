//! The region's mirror of the release repository: publications from the release tool accepted
//! against the fleet's root, served so that a node verifies them as it verifies the tool's own
//! repository, and refused — with the mirror unchanged, byte for byte — when they are unsigned,
//! foreign, tampered, rolled back or incomplete.

use crate::{Desk, edit_json, tuf_refusal, v};
use scs_edge_release::keys::KeySet;
use scs_edge_release::mirror::{Accepted, Mirror, Source};
use scs_edge_release::test_support::{copy_folder, files_under, flip_a_byte_of_the_usr_target};
use scs_edge_release::verify;
use scs_edge_release::{Lifetimes, RefusalKind, ReleaseError};
use std::path::{Path, PathBuf};
use tough::schema::RoleType;

/// The region beside a release manager's desk: the mirror, and a key folder holding the timestamp
/// key alone — all the region ever holds.
struct Region {
    mirror: Mirror,
    keys: KeySet,
}

impl Region {
    fn new(desk: &Desk, name: &str) -> Self {
        let keys = KeySet::new(desk.path(&format!("{name}-keys")));
        std::fs::create_dir_all(desk.path(&format!("{name}-keys"))).expect("key folder");
        std::fs::copy(
            desk.keys.key_path(RoleType::Timestamp),
            keys.key_path(RoleType::Timestamp),
        )
        .expect("the timestamp key");
        Self {
            mirror: Mirror::new(desk.path(name)),
            keys,
        }
    }

    async fn accept(&self, desk: &Desk, source: &Path) -> Result<Accepted, ReleaseError> {
        self.mirror
            .accept(
                Source::Folder(source),
                &desk.root_of_trust,
                &self.keys,
                &Lifetimes::default(),
                jiff::Timestamp::now(),
                &|_| Ok(()),
            )
            .await
    }

    fn served(&self) -> PathBuf {
        self.mirror.repository().dir().to_path_buf()
    }

    fn timestamp_version(&self) -> u64 {
        timestamp_version(&self.served())
    }
}

fn timestamp_version(repository: &Path) -> u64 {
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repository.join("metadata/timestamp.json")).expect("timestamp"),
    )
    .expect("json");
    json["signed"]["version"].as_u64().expect("version")
}

#[tokio::test]
async fn a_node_verifies_the_mirror_as_it_verifies_the_release_tools_repository() {
    let desk = Desk::new().await;
    let lifetimes = Lifetimes::default();
    let first = desk.publish("1.0.0", None, &lifetimes).await;
    let region = Region::new(&desk, "region");

    let accepted = region
        .accept(&desk, &desk.path("repository"))
        .await
        .expect("accepted");
    assert_eq!(accepted.added, vec![first.clone()]);
    assert!(
        accepted.timestamp_version > timestamp_version(&desk.path("repository")),
        "the region's timestamp is ahead of the tool's"
    );
    assert_eq!(region.timestamp_version(), accepted.timestamp_version);

    // A node with a persistent datastore, as it checks the region now and then.
    let node = desk.path("node-datastore");
    let repo = verify::discover(&region.served(), &desk.trust(&node), None)
        .await
        .expect("the mirror verifies");
    assert_eq!(
        repo.offered().await.expect("manifests"),
        vec![first.clone()]
    );

    // The tool publishes again; the region has refreshed its timestamp twice meanwhile, so its
    // sequence is ahead of the tool's: the next one is above both.
    let second = desk.publish("1.1.0", None, &lifetimes).await;
    for _ in 0..2 {
        region
            .mirror
            .refresh_timestamp(&region.keys, &lifetimes, jiff::Timestamp::now())
            .await
            .expect("refresh");
    }
    let refreshed = region.timestamp_version();
    verify::discover(&region.served(), &desk.trust(&node), None)
        .await
        .expect("a refreshed mirror verifies");
    let accepted = region
        .accept(&desk, &desk.path("repository"))
        .await
        .expect("accepted");
    assert_eq!(
        accepted.added,
        vec![second.clone()],
        "1.0.0 is not added twice"
    );
    assert_eq!(accepted.timestamp_version, refreshed + 1);
    let repo = verify::discover(&region.served(), &desk.trust(&node), None)
        .await
        .expect("the node takes the next publication");
    assert_eq!(
        repo.offered().await.expect("manifests"),
        vec![first, second.clone()]
    );
    let staged = repo
        .stage(&second, &desk.path("slot"))
        .await
        .expect("staged from the mirror");
    crate::assert_staged_as_built(&desk, &staged);
}

#[tokio::test]
async fn a_bundle_adds_its_release_to_a_mirror_that_holds_the_others_and_is_refused_by_an_empty_one()
 {
    let desk = Desk::new().await;
    let lifetimes = Lifetimes::default();
    desk.publish("1.0.0", None, &lifetimes).await;
    let region = Region::new(&desk, "region");
    region
        .accept(&desk, &desk.path("repository"))
        .await
        .expect("1.0.0");
    let second = desk.publish("1.1.0", None, &lifetimes).await;
    let staging = crate::extract(&desk, &desk.bundle("1.1.0", "1.1.0.bundle").await, "bundle");

    let empty = Region::new(&desk, "empty");
    let err = empty.accept(&desk, &staging).await.expect_err("incomplete");
    assert!(
        err.to_string().contains("scs-edge_1.0.0.manifest.json")
            && err.to_string().contains("bundle"),
        "{err}"
    );
    assert!(files_under(&empty.served()).is_empty(), "nothing is served");

    let accepted = region.accept(&desk, &staging).await.expect("the bundle");
    assert_eq!(accepted.added, vec![second]);
    verify::discover(&region.served(), &desk.trust(&desk.path("node")), None)
        .await
        .expect("the mirror verifies");
}

#[tokio::test]
async fn refused_publications_change_nothing_in_the_mirror() {
    let desk = Desk::new().await;
    let lifetimes = Lifetimes::default();
    desk.publish("1.0.0", None, &lifetimes).await;
    let region = Region::new(&desk, "region");
    region
        .accept(&desk, &desk.path("repository"))
        .await
        .expect("1.0.0");
    // The tool's repository as it stood, for the rollback below.
    copy_folder(&desk.path("repository"), &desk.path("frozen"));
    desk.publish("1.1.0", None, &lifetimes).await;
    region
        .accept(&desk, &desk.path("repository"))
        .await
        .expect("1.1.0");
    let before = files_under(&region.served());
    let accepted_before = files_under(&desk.path("region/accepted"));
    desk.publish("1.2.0", None, &lifetimes).await;

    let copy = |name: &str| {
        let to = desk.path(name);
        copy_folder(&desk.path("repository"), &to);
        to
    };
    let unchanged = |what: &str| {
        assert_eq!(
            files_under(&region.served()),
            before,
            "{what}: the served repository changed"
        );
        assert_eq!(
            files_under(&desk.path("region/accepted")),
            accepted_before,
            "{what}: the datastore changed"
        );
    };

    // Signed by another release manager's keys: not the fleet's root.
    let foreign = Desk::new().await;
    foreign.publish("1.2.0", None, &lifetimes).await;
    let refusal = tuf_refusal(
        region.accept(&desk, &foreign.path("repository")).await,
        RefusalKind::Signature,
    );
    assert!(refusal.contains("Signature threshold"), "{refusal}");
    unchanged("foreign");

    // Unsigned: the timestamp's signatures stripped.
    let unsigned = copy("unsigned");
    edit_json(&unsigned.join("metadata/timestamp.json"), |json| {
        json["signatures"] = serde_json::json!([]);
    });
    tuf_refusal(
        region.accept(&desk, &unsigned).await,
        RefusalKind::Signature,
    );
    unchanged("unsigned");

    // A target of the new release whose bytes are not the signed ones.
    let tampered = copy("tampered");
    flip_a_byte_of_the_usr_target(&tampered.join("targets"), "1.2.0");
    let refusal = tuf_refusal(region.accept(&desk, &tampered).await, RefusalKind::Hash);
    assert!(refusal.contains("usr.raw"), "{refusal}");
    unchanged("tampered");

    // The repository as it stood before 1.1.0: every role rolled back.
    tuf_refusal(
        region.accept(&desk, &desk.path("frozen")).await,
        RefusalKind::Rollback,
    );
    unchanged("rolled back");

    // A timestamp key the root does not list.
    let wrong_keys = Region {
        mirror: region.mirror.clone(),
        keys: KeySet::new(foreign.path("keys")),
    };
    let err = wrong_keys
        .accept(&desk, &desk.path("repository"))
        .await
        .expect_err("wrong timestamp key");
    assert!(err.to_string().contains("timestamp"), "{err}");
    unchanged("wrong timestamp key");

    // And then the genuine publication goes through.
    let accepted = region
        .accept(&desk, &desk.path("repository"))
        .await
        .expect("1.2.0");
    assert_eq!(accepted.added.len(), 1);
    assert_eq!(accepted.added[0].version, v("1.2.0"));
}
