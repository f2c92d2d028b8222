//! Releases made by the release tool's library and verified the way a node verifies them: real TUF
//! repositories written by `tough::editor` in temporary directories, exported as bundles, extracted
//! and loaded by tough's client with a persistent datastore, or served by a real web server and read
//! over HTTP. Every refusal the node relies on is provoked here with a repository that really is
//! tampered, stale, rolled back or oversized.

use scs_edge_proto::release::ReleaseManifest;
use scs_edge_release::bundle::{self, ExtractLimits};
use scs_edge_release::keys::{self, KeySet};
use scs_edge_release::repository::{NewRelease, Repository};
use scs_edge_release::test_support::ServedFolder;
use scs_edge_release::verify::{self, Trust};
use scs_edge_release::{Lifetimes, RefusalKind, ReleaseError, policy};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn v(text: &str) -> semver::Version {
    semver::Version::parse(text).expect("version")
}

/// A release manager's desk: keys, repository, image output, and a node's trusted root.
struct Desk {
    dir: tempfile::TempDir,
    keys: KeySet,
    repo: Repository,
    root_of_trust: Vec<u8>,
}

impl Desk {
    async fn new() -> Self {
        Self::with_lifetimes(&Lifetimes::default()).await
    }

    async fn with_lifetimes(lifetimes: &Lifetimes) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = KeySet::new(dir.path().join("keys"));
        let repo = Repository::new(dir.path().join("repository"));
        let root = keys::init(
            &keys,
            &repo.metadata_dir(),
            lifetimes,
            jiff::Timestamp::now(),
        )
        .await
        .expect("init");
        let root_of_trust = std::fs::read(root).expect("root");
        Self {
            dir,
            keys,
            repo,
            root_of_trust,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the output `make image --image-version=<version>` would.
    fn image(&self, version: &str) -> PathBuf {
        scs_edge_release::test_support::image_output(&self.path("image"), version)
    }

    async fn publish(
        &self,
        version: &str,
        max: Option<&str>,
        lifetimes: &Lifetimes,
    ) -> ReleaseManifest {
        let release = NewRelease {
            image_dir: self.image(version),
            version: v(version),
            min_from_version: v("0.0.0"),
            max_version: max.map(v),
        };
        self.repo
            .publish(&self.keys, &release, lifetimes, jiff::Timestamp::now())
            .await
            .expect("publish")
    }

    async fn bundle(&self, version: &str, name: &str) -> PathBuf {
        let out = self.path(name);
        bundle::export(&self.repo, &v(version), &out)
            .await
            .expect("bundle");
        out
    }

    fn trust<'a>(&'a self, datastore: &'a Path) -> Trust<'a> {
        Trust {
            root: &self.root_of_trust,
            datastore,
            limits: tough::Limits::default(),
        }
    }
}

/// Extracts `bundle` into a fresh staging directory under `desk`.
fn extract(desk: &Desk, bundle: &Path, staging: &str) -> PathBuf {
    let dir = desk.path(staging);
    bundle::extract(bundle, &dir, &ExtractLimits::default()).expect("extract");
    dir
}

/// Rewrites the JSON file at `path` through `edit`, as an attacker with write access to a mirror would.
fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
    edit(&mut json);
    std::fs::write(path, serde_json::to_vec(&json).expect("json")).expect("write");
}

/// An extraction refused as a bad bundle, with its staging directory gone.
fn assert_bundle_refused(result: &Result<(), ReleaseError>, staging: &Path) {
    assert!(
        matches!(result, Err(ReleaseError::Bundle { .. })),
        "{result:?}"
    );
    assert!(!staging.exists(), "{} stays behind", staging.display());
}

/// Each artifact of `staged`, uncompressed, holds the bytes `make image` wrote for its version.
fn assert_staged_as_built(desk: &Desk, staged: &verify::StagedRelease) {
    let version = &staged.manifest.version;
    for artifact in &staged.manifest.artifacts {
        let staged_file = std::fs::File::open(staged.dir.join(&artifact.target)).expect("staged");
        let mut bytes = Vec::new();
        if artifact.kind.compressed() {
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(staged_file), &mut bytes)
        } else {
            std::io::Read::read_to_end(&mut { staged_file }, &mut bytes)
        }
        .expect("read the staged file");
        let image_name = format!(
            "scs-edge_{version}{}",
            artifact.kind.image_suffix().expect("suffix")
        );
        let original = std::fs::read(desk.path("image").join(image_name)).expect("original");
        assert_eq!(bytes, original, "{}", artifact.target);
    }
}

/// Flips one byte of the `/usr` target in the folder `targets`, as a bad mirror or a bad sector would.
fn flip_a_byte_of_the_usr_target(targets: &Path) {
    let usr = std::fs::read_dir(targets)
        .expect("targets")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().ends_with(".usr.raw.gz"))
        .expect("usr target");
    let mut bytes = std::fs::read(&usr).expect("read");
    bytes[100] ^= 0x01;
    std::fs::write(&usr, bytes).expect("write");
}

/// Staging the first release `repo` offers is refused as a hash mismatch of its `/usr` target, and
/// nothing stays staged.
async fn assert_staging_the_usr_target_is_refused(desk: &Desk, repo: &verify::VerifiedRepository) {
    let manifest = repo.offered().await.expect("manifest").remove(0);
    let slot = desk.path("slot");
    let refusal = tuf_refusal(repo.stage(&manifest, &slot).await, RefusalKind::Hash);
    assert!(refusal.contains("usr.raw"), "{refusal}");
    assert!(!slot.exists(), "a half-staged release is removed");
}

/// The refusal's text, after checking it is a TUF refusal of the `expected` kind.
fn tuf_refusal(
    result: Result<impl std::fmt::Debug, ReleaseError>,
    expected: RefusalKind,
) -> String {
    match result {
        Err(err @ ReleaseError::Tuf { .. }) => {
            let text = format!("{err}");
            eprintln!("refused: {text}");
            assert_eq!(err.refusal_kind(), expected, "{text}");
            text
        }
        other => panic!("expected a TUF refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_published_release_travels_as_a_bundle_and_stages_verified() {
    let desk = Desk::new().await;
    let lifetimes = Lifetimes::default();
    desk.publish("1.0.0", None, &lifetimes).await;
    let published = desk.publish("1.1.0", None, &lifetimes).await;
    let bundle = desk.bundle("1.1.0", "1.1.0.bundle").await;

    let staging = extract(&desk, &bundle, "staging");
    let datastore = desk.path("node-datastore");
    let repo = verify::discover(&staging, &desk.trust(&datastore))
        .await
        .expect("discover");
    let offered = repo.offered().await.expect("manifests");
    assert_eq!(
        offered,
        vec![published.clone()],
        "the bundle carries 1.1.0 only"
    );

    let staged = repo
        .stage(&offered[0], &desk.path("slot"))
        .await
        .expect("stage");
    assert_staged_as_built(&desk, &staged);
    assert!(datastore.join("latest_known_time.json").is_file());
}

/// A plain client, as a node without a site CA builds it (reqwest needs the process's TLS provider
/// even for `http://`).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::new()
}

#[tokio::test]
async fn a_repository_served_over_http_is_verified_and_its_release_staged_from_it() {
    let desk = Desk::new().await;
    let lifetimes = Lifetimes::default();
    let first = desk.publish("1.0.0", None, &lifetimes).await;
    let second = desk.publish("1.1.0", None, &lifetimes).await;
    let served = ServedFolder::new(desk.dir.path());
    let datastore = desk.path("node-datastore");

    // No trailing slash: the base is a folder all the same.
    let repo =
        verify::discover_remote(&served.url("repository"), client(), &desk.trust(&datastore))
            .await
            .expect("discover (2.root.json is missing: a 404 ends the root chain)");
    let offered = repo.offered().await.expect("manifests");
    assert_eq!(
        offered,
        vec![first, second],
        "online, every release is offered"
    );
    let chosen = policy::choose(&v("1.0.0"), &offered, &BTreeSet::new()).expect("1.1.0");
    let staged = repo.stage(chosen, &desk.path("slot")).await.expect("stage");
    assert_eq!(staged.manifest.version, v("1.1.0"));
    assert_staged_as_built(&desk, &staged);
    assert!(datastore.join("latest_known_time.json").is_file());
}

#[tokio::test]
async fn a_flipped_byte_in_a_served_target_is_refused_and_nothing_stays_staged() {
    let desk = Desk::new().await;
    desk.publish("1.0.0", None, &Lifetimes::default()).await;
    flip_a_byte_of_the_usr_target(&desk.repo.targets_dir());
    let served = ServedFolder::new(desk.dir.path());

    let repo = verify::discover_remote(
        &served.url("repository/"),
        client(),
        &desk.trust(&desk.path("ds")),
    )
    .await
    .expect("metadata is intact");
    assert_staging_the_usr_target_is_refused(&desk, &repo).await;
}

#[tokio::test]
async fn a_repository_without_a_timestamp_or_without_a_server_is_unreachable_not_refused() {
    let desk = Desk::new().await;
    desk.publish("1.0.0", None, &Lifetimes::default()).await;
    std::fs::remove_file(desk.repo.metadata_dir().join("timestamp.json")).expect("remove");
    let served = ServedFolder::new(desk.dir.path());
    let base = served.url("repository/");
    let datastore = desk.path("ds");

    let missing = verify::discover_remote(&base, client(), &desk.trust(&datastore)).await;
    let Err(err @ ReleaseError::Unreachable { .. }) = missing else {
        panic!("expected an unreachable repository, got {missing:?}");
    };
    let text = err.to_string();
    eprintln!("unreachable: {text}");
    assert!(
        text.contains("timestamp.json") && text.contains("404"),
        "{text}"
    );

    drop(served);
    let gone = verify::discover_remote(&base, client(), &desk.trust(&datastore)).await;
    let Err(err @ ReleaseError::Unreachable { .. }) = gone else {
        panic!("expected an unreachable repository, got {gone:?}");
    };
    eprintln!("unreachable: {err}");
    assert!(err.to_string().contains("onnect"), "{err}");
}

#[tokio::test]
async fn older_metadata_served_after_newer_was_seen_is_a_rollback_and_refused() {
    let desk = Desk::new().await;
    let lifetimes = Lifetimes::default();
    desk.publish("1.0.0", None, &lifetimes).await;
    // A mirror frozen at the first release.
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(desk.path("repository"))
        .arg(desk.path("frozen"))
        .status()
        .expect("cp");
    assert!(copied.success());
    desk.publish("1.1.0", None, &lifetimes).await;
    let served = ServedFolder::new(desk.dir.path());

    let datastore = desk.path("ds");
    verify::discover_remote(
        &served.url("repository/"),
        client(),
        &desk.trust(&datastore),
    )
    .await
    .expect("the newer repository");
    let refusal = tuf_refusal(
        verify::discover_remote(&served.url("frozen/"), client(), &desk.trust(&datastore)).await,
        RefusalKind::Rollback,
    );
    assert!(
        refusal.contains("when we had previously fetched version 2"),
        "{refusal}"
    );
}

#[tokio::test]
async fn a_flipped_byte_in_a_target_is_refused_and_nothing_stays_staged() {
    let desk = Desk::new().await;
    desk.publish("1.0.0", None, &Lifetimes::default()).await;
    let staging = extract(&desk, &desk.bundle("1.0.0", "b").await, "staging");
    flip_a_byte_of_the_usr_target(&staging.join("targets"));

    let datastore = desk.path("ds");
    let repo = verify::discover(&staging, &desk.trust(&datastore))
        .await
        .expect("metadata is intact");
    assert_staging_the_usr_target_is_refused(&desk, &repo).await;
}

#[tokio::test]
async fn metadata_signed_by_another_key_or_missing_its_signatures_is_refused() {
    let desk = Desk::new().await;
    desk.publish("1.0.0", None, &Lifetimes::default()).await;
    let staging = extract(&desk, &desk.bundle("1.0.0", "b").await, "staging");

    // A node whose root of trust came from another key set.
    let other = Desk::new().await;
    let trust = Trust {
        root: &other.root_of_trust,
        datastore: &desk.path("ds-other"),
        limits: tough::Limits::default(),
    };
    let refusal = tuf_refusal(
        verify::discover(&staging, &trust).await,
        RefusalKind::Signature,
    );
    assert!(refusal.contains("Signature threshold"), "{refusal}");

    // Too few signatures: the timestamp (the one role no other metadata pins by hash) unsigned.
    edit_json(&staging.join("metadata/timestamp.json"), |json| {
        json["signatures"] = serde_json::json!([]);
    });
    let refusal = tuf_refusal(
        verify::discover(&staging, &desk.trust(&desk.path("ds"))).await,
        RefusalKind::Signature,
    );
    assert!(
        refusal.contains("threshold of 1 not met for role timestamp"),
        "{refusal}"
    );

    // Signatures stripped from metadata the snapshot pins: its hash no longer matches.
    let staging = extract(&desk, &desk.bundle("1.0.0", "b2").await, "staging2");
    edit_json(&staging.join("metadata/1.targets.json"), |json| {
        json["signatures"] = serde_json::json!([]);
    });
    let refusal = tuf_refusal(
        verify::discover(&staging, &desk.trust(&desk.path("ds2"))).await,
        RefusalKind::Hash,
    );
    assert!(refusal.contains("Hash mismatch"), "{refusal}");
}

#[tokio::test]
async fn older_metadata_after_newer_was_seen_is_a_rollback_and_refused() {
    let desk = Desk::new().await;
    let lifetimes = Lifetimes::default();
    desk.publish("1.0.0", None, &lifetimes).await;
    let old = desk.bundle("1.0.0", "old").await;
    desk.publish("1.1.0", None, &lifetimes).await;
    let new = desk.bundle("1.1.0", "new").await;

    let datastore = desk.path("ds");
    let staging = extract(&desk, &new, "new-staging");
    verify::discover(&staging, &desk.trust(&datastore))
        .await
        .expect("the newer repository");
    let staging = extract(&desk, &old, "old-staging");
    let refusal = tuf_refusal(
        verify::discover(&staging, &desk.trust(&datastore)).await,
        RefusalKind::Rollback,
    );
    assert!(
        refusal.contains("when we had previously fetched version 2"),
        "{refusal}"
    );
}

#[tokio::test]
async fn mixing_targets_from_another_snapshot_is_refused() {
    let desk = Desk::new().await;
    let lifetimes = Lifetimes::default();
    desk.publish("1.0.0", None, &lifetimes).await;
    desk.publish("1.1.0", None, &lifetimes).await;
    let staging = extract(&desk, &desk.bundle("1.1.0", "b").await, "staging");
    // Version 2's snapshot, version 1's targets under version 2's name.
    std::fs::copy(
        staging.join("metadata/1.targets.json"),
        staging.join("metadata/2.targets.json"),
    )
    .expect("copy");
    let refusal = tuf_refusal(
        verify::discover(&staging, &desk.trust(&desk.path("ds"))).await,
        // The snapshot pins each targets file by hash: a mix shows as a hash mismatch.
        RefusalKind::Hash,
    );
    assert!(
        refusal.contains("Hash mismatch") && refusal.contains("2.targets.json"),
        "{refusal}"
    );
}

#[tokio::test]
async fn an_expired_timestamp_is_refused_at_discovery_until_it_is_re_signed() {
    let stale = Lifetimes {
        timestamp: jiff::SignedDuration::from_hours(-1),
        ..Lifetimes::default()
    };
    let desk = Desk::new().await;
    desk.publish("1.0.0", None, &stale).await;
    let bundle = desk.bundle("1.0.0", "stale").await;
    let staging = extract(&desk, &bundle, "staging");
    let refusal = tuf_refusal(
        verify::discover(&staging, &desk.trust(&desk.path("ds"))).await,
        RefusalKind::Expired,
    );
    assert!(refusal.to_lowercase().contains("expire"), "{refusal}");

    desk.repo
        .refresh_timestamp(&desk.keys, &Lifetimes::default(), jiff::Timestamp::now())
        .await
        .expect("re-sign");
    let staging = extract(&desk, &desk.bundle("1.0.0", "fresh").await, "staging");
    verify::discover(&staging, &desk.trust(&desk.path("ds")))
        .await
        .expect("fresh timestamp");
}

#[tokio::test]
async fn oversized_metadata_is_refused() {
    let desk = Desk::new().await;
    desk.publish("1.0.0", None, &Lifetimes::default()).await;
    let staging = extract(&desk, &desk.bundle("1.0.0", "b").await, "staging");
    let datastore = desk.path("ds");
    let trust = Trust {
        limits: tough::Limits {
            max_timestamp_size: 64,
            ..tough::Limits::default()
        },
        ..desk.trust(&datastore)
    };
    let refusal = tuf_refusal(verify::discover(&staging, &trust).await, RefusalKind::Size);
    assert!(refusal.contains("max_timestamp_size"), "{refusal}");

    let small = ExtractLimits {
        max_metadata_bytes: 16,
        ..ExtractLimits::default()
    };
    let refused = bundle::extract(&desk.bundle("1.0.0", "c").await, &desk.path("s2"), &small);
    assert_bundle_refused(&refused, &desk.path("s2"));
}

#[tokio::test]
async fn a_clock_stepped_back_behind_the_last_known_time_is_refused() {
    let desk = Desk::new().await;
    desk.publish("1.0.0", None, &Lifetimes::default()).await;
    let staging = extract(&desk, &desk.bundle("1.0.0", "b").await, "staging");
    let datastore = desk.path("ds");
    std::fs::create_dir_all(&datastore).expect("ds");
    let future = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * 30))
        .expect("future");
    std::fs::write(
        datastore.join("latest_known_time.json"),
        serde_json::to_vec(&future).expect("json"),
    )
    .expect("write");
    let refusal = tuf_refusal(
        verify::discover(&staging, &desk.trust(&datastore)).await,
        RefusalKind::Clock,
    );
    assert!(refusal.contains("stepped backward"), "{refusal}");
}

#[tokio::test]
async fn a_node_follows_a_cross_signed_root_rotation() {
    let desk = Desk::new().await;
    let lifetimes = Lifetimes::default();
    desk.publish("1.0.0", None, &lifetimes).await;
    let rotated = keys::rotate_root(
        &desk.keys,
        &desk.repo.metadata_dir(),
        &lifetimes,
        jiff::Timestamp::now(),
    )
    .await
    .expect("rotate");
    assert!(rotated.ends_with("2.root.json"));
    // Signed after the rotation: the targets key is unchanged, the root of trust is version 1.
    desk.publish("1.1.0", None, &lifetimes).await;
    let staging = extract(&desk, &desk.bundle("1.1.0", "b").await, "staging");
    let repo = verify::discover(&staging, &desk.trust(&desk.path("ds")))
        .await
        .expect("follows 1 → 2");
    assert_eq!(
        repo.offered().await.expect("offered")[0].version,
        v("1.1.0")
    );

    // A root that only the new key signed (no cross-signature) is not followed.
    edit_json(&staging.join("metadata/2.root.json"), |json| {
        let keep_new = json["signed"]["roles"]["root"]["keyids"][0].clone();
        json["signatures"]
            .as_array_mut()
            .expect("signatures")
            .retain(|sig| sig["keyid"] == keep_new);
    });
    let refusal = tuf_refusal(
        verify::discover(&staging, &desk.trust(&desk.path("ds2"))).await,
        RefusalKind::Signature,
    );
    assert!(refusal.contains("not met for role root"), "{refusal}");
}

#[tokio::test]
async fn bundle_entries_that_escape_the_staging_folder_or_are_cut_short_are_refused() {
    let desk = Desk::new().await;
    desk.publish("1.0.0", None, &Lifetimes::default()).await;

    for evil in [
        "../escaped",
        "targets/../../escaped",
        "/tmp/escaped",
        "targets/sub/x",
        "other/x",
    ] {
        let path = desk.path("evil.bundle");
        let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("create"));
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Written raw: tar's own path setters refuse `..`, an attacker's tool does not.
        let name = header.as_old_mut().name.as_mut_slice();
        name[..evil.len()].copy_from_slice(evil.as_bytes());
        header.set_cksum();
        builder.append(&header, &b"evil"[..]).expect("append");
        builder.finish().expect("finish");
        drop(builder);
        let staging = desk.path("evil-staging");
        let refused = bundle::extract(&path, &staging, &ExtractLimits::default());
        assert_bundle_refused(&refused, &staging);
        assert!(
            !desk.path("escaped").exists() && !Path::new("/tmp/escaped").exists(),
            "{evil}"
        );
    }

    let whole = desk.bundle("1.0.0", "whole").await;
    let bytes = std::fs::read(&whole).expect("read");
    let cut = desk.path("cut.bundle");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let refused = bundle::extract(&cut, &desk.path("cut-staging"), &ExtractLimits::default());
    assert_bundle_refused(&refused, &desk.path("cut-staging"));
}

#[tokio::test]
async fn publishing_refuses_a_version_twice_and_an_incomplete_image_output() {
    let desk = Desk::new().await;
    let lifetimes = Lifetimes::default();
    desk.publish("1.0.0", None, &lifetimes).await;
    let again = NewRelease {
        image_dir: desk.image("1.0.0"),
        version: v("1.0.0"),
        min_from_version: v("0.0.0"),
        max_version: None,
    };
    let refused = desk
        .repo
        .publish(&desk.keys, &again, &lifetimes, jiff::Timestamp::now())
        .await;
    assert!(
        matches!(refused, Err(ReleaseError::Release(_))),
        "{refused:?}"
    );

    let image = desk.image("1.2.0");
    std::fs::remove_file(image.join("scs-edge_1.2.0.efi")).expect("remove");
    let incomplete = NewRelease {
        image_dir: image,
        version: v("1.2.0"),
        ..again
    };
    let refused = desk
        .repo
        .publish(&desk.keys, &incomplete, &lifetimes, jiff::Timestamp::now())
        .await;
    assert!(
        matches!(refused, Err(ReleaseError::ImageOutput { .. })),
        "{refused:?}"
    );
    let again_init = keys::init(
        &desk.keys,
        &desk.repo.metadata_dir(),
        &lifetimes,
        jiff::Timestamp::now(),
    )
    .await;
    assert!(
        again_init.is_err(),
        "a second init must not replace the root of trust"
    );
}

#[tokio::test]
async fn the_http_transport_streams_files_and_calls_a_missing_one_not_found() {
    use tough::{IntoVec as _, Transport as _, TransportErrorKind};
    let desk = Desk::new().await;
    let served = ServedFolder::new(desk.dir.path());
    let transport = scs_edge_release::http_transport::HttpClientTransport::new(client());

    let root = transport
        .fetch(served.url("repository/metadata/1.root.json"))
        .await
        .expect("fetch")
        .into_vec()
        .await
        .expect("body");
    assert_eq!(root, desk.root_of_trust);

    let missing = transport
        .fetch(served.url("repository/metadata/2.root.json"))
        .await
        .map(drop)
        .expect_err("missing");
    assert_eq!(
        missing.kind(),
        TransportErrorKind::FileNotFound,
        "{missing}"
    );
    assert!(missing.to_string().contains("2.root.json"), "{missing}");

    let other = transport
        .fetch(url::Url::parse("ftp://127.0.0.1/x").expect("URL"))
        .await
        .map(drop)
        .expect_err("ftp");
    assert_eq!(other.kind(), TransportErrorKind::UnsupportedUrlScheme);
}
