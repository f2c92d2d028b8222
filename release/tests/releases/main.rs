//! Releases made by the release tool's library and verified the way a node verifies them: real TUF
//! repositories written by `tough::editor` in temporary directories, exported as bundles, extracted
//! and loaded by tough's client with a persistent datastore, or served by a real web server and read
//! over HTTP. Every refusal the node relies on is provoked here with a repository that really is
//! tampered, stale, rolled back or oversized — and with freshness waivers that really are signed,
//! forged, altered, or for another site or time.

mod mirror;
mod resume;

use scs_edge_proto::release::ReleaseManifest;
use scs_edge_release::bundle::{self, ExtractLimits};
use scs_edge_release::keys::{self, KeySet};
use scs_edge_release::repository::{NewRelease, Repository};
use scs_edge_release::test_support::{ServedFolder, copy_folder, flip_a_byte_of_the_usr_target};
use scs_edge_release::verify::{self, OfferedWaiver, Trust};
use scs_edge_release::waiver::{self, WAIVER_FILE, WaiverTerms};
use scs_edge_release::{Lifetimes, RefusalKind, ReleaseError, policy};
use std::collections::BTreeSet;
use std::io::Read as _;
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
    let repo = verify::discover(&staging, &desk.trust(&datastore), None)
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
    let repo = verify::discover_remote(
        &served.url("repository"),
        client(),
        &desk.trust(&datastore),
        None,
    )
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
    flip_a_byte_of_the_usr_target(&desk.repo.targets_dir(), "1.0.0");
    let served = ServedFolder::new(desk.dir.path());

    let repo = verify::discover_remote(
        &served.url("repository/"),
        client(),
        &desk.trust(&desk.path("ds")),
        None,
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

    let missing = verify::discover_remote(&base, client(), &desk.trust(&datastore), None).await;
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
    let gone = verify::discover_remote(&base, client(), &desk.trust(&datastore), None).await;
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
    copy_folder(&desk.path("repository"), &desk.path("frozen"));
    desk.publish("1.1.0", None, &lifetimes).await;
    let served = ServedFolder::new(desk.dir.path());

    let datastore = desk.path("ds");
    verify::discover_remote(
        &served.url("repository/"),
        client(),
        &desk.trust(&datastore),
        None,
    )
    .await
    .expect("the newer repository");
    let refusal = tuf_refusal(
        verify::discover_remote(
            &served.url("frozen/"),
            client(),
            &desk.trust(&datastore),
            None,
        )
        .await,
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
    flip_a_byte_of_the_usr_target(&staging.join("targets"), "1.0.0");

    let datastore = desk.path("ds");
    let repo = verify::discover(&staging, &desk.trust(&datastore), None)
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
        verify::discover(&staging, &trust, None).await,
        RefusalKind::Signature,
    );
    assert!(refusal.contains("Signature threshold"), "{refusal}");

    // Too few signatures: the timestamp (the one role no other metadata pins by hash) unsigned.
    edit_json(&staging.join("metadata/timestamp.json"), |json| {
        json["signatures"] = serde_json::json!([]);
    });
    let refusal = tuf_refusal(
        verify::discover(&staging, &desk.trust(&desk.path("ds")), None).await,
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
        verify::discover(&staging, &desk.trust(&desk.path("ds2")), None).await,
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
    verify::discover(&staging, &desk.trust(&datastore), None)
        .await
        .expect("the newer repository");
    let staging = extract(&desk, &old, "old-staging");
    let refusal = tuf_refusal(
        verify::discover(&staging, &desk.trust(&datastore), None).await,
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
        verify::discover(&staging, &desk.trust(&desk.path("ds")), None).await,
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
        verify::discover(&staging, &desk.trust(&desk.path("ds")), None).await,
        RefusalKind::Expired,
    );
    assert!(refusal.to_lowercase().contains("expire"), "{refusal}");

    desk.repo
        .refresh_timestamp(&desk.keys, &Lifetimes::default(), jiff::Timestamp::now())
        .await
        .expect("re-sign");
    let staging = extract(&desk, &desk.bundle("1.0.0", "fresh").await, "staging");
    verify::discover(&staging, &desk.trust(&desk.path("ds")), None)
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
    let refusal = tuf_refusal(
        verify::discover(&staging, &trust, None).await,
        RefusalKind::Size,
    );
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
        verify::discover(&staging, &desk.trust(&datastore), None).await,
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
    let repo = verify::discover(&staging, &desk.trust(&desk.path("ds")), None)
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
        verify::discover(&staging, &desk.trust(&desk.path("ds2")), None).await,
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

// ---- freshness waivers --------------------------------------------------------------------------

const SITE: &str = "factory-7";

fn hours(n: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_hours(n)
}

/// Lifetimes whose timestamp expired an hour before it was signed: a bundle that travelled too long.
fn expired_timestamp() -> Lifetimes {
    Lifetimes {
        timestamp: hours(-1),
        ..Lifetimes::default()
    }
}

impl Desk {
    /// The newest root in the repository, as a node ends up trusting it.
    fn newest_root(&self) -> tough::schema::Signed<tough::schema::Root> {
        let (_, path) = keys::latest_root(&self.repo.metadata_dir()).expect("root");
        serde_json::from_slice(&std::fs::read(path).expect("read")).expect("root")
    }

    /// A waiver for `site` from `issued` until `expires`, issued as `scs-edge-release waiver` does.
    async fn waiver(
        &self,
        site: &str,
        issued: jiff::Timestamp,
        expires: jiff::Timestamp,
    ) -> Vec<u8> {
        let terms = WaiverTerms::new(site, issued, expires, "ships by sea").expect("terms");
        waiver::issue(&self.keys, &self.repo.metadata_dir(), terms)
            .await
            .expect("issue")
            .to_json()
    }

    /// A waiver for this site valid for a week from an hour ago.
    async fn valid_waiver(&self) -> Vec<u8> {
        let now = jiff::Timestamp::now();
        self.waiver(SITE, now - hours(1), now + hours(24 * 7)).await
    }

    /// The terms signed with the `role` key of a root whose targets role lists that key instead:
    /// tough signs what the root says, so this is how any key other than the targets key signs.
    async fn signed_with(&self, role: tough::schema::RoleType, terms: WaiverTerms) -> Vec<u8> {
        let mut root = self.newest_root().signed;
        let role_keys = root.roles[&role].clone();
        root.roles
            .insert(tough::schema::RoleType::Targets, role_keys);
        waiver::sign(terms, &root, &self.keys.sources(&[role]).expect("key"))
            .await
            .expect("sign")
            .to_json()
    }
}

/// `document` offered by a node of `SITE` at the system's time (tough's clock, too).
fn offered(document: &[u8]) -> OfferedWaiver<'_> {
    OfferedWaiver {
        document,
        site: Some(SITE),
        now: jiff::Timestamp::now(),
    }
}

/// The refusal's text, after checking the waiver was refused (kind `waiver`).
fn waiver_refusal(result: Result<verify::VerifiedRepository, ReleaseError>) -> String {
    match result {
        Err(err @ ReleaseError::Waiver { .. }) => {
            let text = err.to_string();
            eprintln!("refused: {text}");
            assert_eq!(err.refusal_kind(), RefusalKind::Waiver, "{text}");
            assert_eq!(err.refusal_kind().as_str(), "waiver");
            assert!(
                text.contains("timestamp metadata is expired"),
                "names what expired: {text}"
            );
            text
        }
        other => panic!("expected a waiver refusal, got {other:?}"),
    }
}

/// A repository whose timestamp expired, extracted from its bundle for a node.
async fn stale_release(desk: &Desk) -> PathBuf {
    desk.publish("1.0.0", None, &expired_timestamp()).await;
    extract(desk, &desk.bundle("1.0.0", "stale.bundle").await, "staging")
}

#[tokio::test]
async fn an_expired_timestamp_is_accepted_under_a_valid_waiver_for_this_site_and_staged() {
    let desk = Desk::new().await;
    let staging = stale_release(&desk).await;
    let datastore = desk.path("ds");
    tuf_refusal(
        verify::discover(&staging, &desk.trust(&datastore), None).await,
        RefusalKind::Expired,
    );

    let document = desk.valid_waiver().await;
    let repo = verify::discover(&staging, &desk.trust(&datastore), Some(&offered(&document)))
        .await
        .expect("accepted under the waiver");
    let terms = repo.waiver().expect("accepted under a waiver");
    assert_eq!(terms.site, SITE);
    assert_eq!(terms.reason, "ships by sea");
    let offered_releases = repo.offered().await.expect("manifests");
    assert_eq!(offered_releases[0].version, v("1.0.0"));
    let staged = repo
        .stage(&offered_releases[0], &desk.path("slot"))
        .await
        .expect("targets read under the waiver");
    assert_staged_as_built(&desk, &staged);
}

#[tokio::test]
async fn a_waiver_is_never_consulted_when_the_metadata_is_fresh() {
    let desk = Desk::new().await;
    desk.publish("1.0.0", None, &Lifetimes::default()).await;
    let staging = extract(&desk, &desk.bundle("1.0.0", "b").await, "staging");
    let repo = verify::discover(
        &staging,
        &desk.trust(&desk.path("ds")),
        Some(&offered(b"not even JSON")),
    )
    .await
    .expect("fresh metadata needs no waiver");
    assert!(repo.waiver().is_none());
}

#[tokio::test]
async fn a_waiver_for_another_site_out_of_its_time_or_longer_than_90_days_is_refused() {
    let desk = Desk::new().await;
    let staging = stale_release(&desk).await;
    let datastore = desk.path("ds");
    let now = jiff::Timestamp::now();
    let discover = |document: Vec<u8>, site: Option<&'static str>| {
        let (staging, datastore) = (staging.clone(), datastore.clone());
        let desk = &desk;
        async move {
            let offer = OfferedWaiver {
                document: &document,
                site,
                now,
            };
            verify::discover(&staging, &desk.trust(&datastore), Some(&offer)).await
        }
    };

    let other_site = desk
        .waiver("factory-8", now - hours(1), now + hours(24))
        .await;
    let refusal = waiver_refusal(discover(other_site, Some(SITE)).await);
    assert!(
        refusal.contains(r#"for site "factory-8", not for this node's site "factory-7""#),
        "{refusal}"
    );
    let refusal = waiver_refusal(discover(desk.valid_waiver().await, None).await);
    assert!(refusal.contains("no site name"), "{refusal}");
    // A prefix is not the site.
    let refusal = waiver_refusal(discover(desk.valid_waiver().await, Some("factory-77")).await);
    assert!(refusal.contains("not for this node's site"), "{refusal}");

    let expired = desk.waiver(SITE, now - hours(48), now - hours(1)).await;
    let refusal = waiver_refusal(discover(expired, Some(SITE)).await);
    assert!(refusal.contains("the waiver expired at"), "{refusal}");

    let not_yet = desk.waiver(SITE, now + hours(1), now + hours(48)).await;
    let refusal = waiver_refusal(discover(not_yet, Some(SITE)).await);
    assert!(refusal.contains("holds only from"), "{refusal}");

    // Signed with the targets key, but 91 days: the node refuses it whoever issued it.
    let terms = WaiverTerms::new(
        SITE,
        now - hours(1),
        now + hours(24 * 91 - 1),
        "a long voyage",
    )
    .expect("terms");
    let root = desk.newest_root();
    let too_long = waiver::sign(
        terms,
        &root.signed,
        &desk
            .keys
            .sources(&[tough::schema::RoleType::Targets])
            .expect("key"),
    )
    .await
    .expect("sign");
    assert!(too_long.check_signatures(&root).is_ok(), "genuinely signed");
    let refusal = waiver_refusal(discover(too_long.to_json(), Some(SITE)).await);
    assert!(refusal.contains("longer than the 90 days"), "{refusal}");

    let refusal = waiver_refusal(discover(b"{\"signed\": {}}".to_vec(), Some(SITE)).await);
    assert!(refusal.contains("malformed waiver"), "{refusal}");
}

#[tokio::test]
async fn a_waiver_does_not_cover_a_root_that_expired_itself() {
    let desk = Desk::with_lifetimes(&Lifetimes {
        root: hours(-1),
        ..Lifetimes::default()
    })
    .await;
    let staging = stale_release(&desk).await;
    let document = desk.valid_waiver().await;
    let refusal = match verify::discover(
        &staging,
        &desk.trust(&desk.path("ds")),
        Some(&offered(&document)),
    )
    .await
    {
        Err(err @ ReleaseError::Waiver { .. }) => err.to_string(),
        other => panic!("expected a waiver refusal, got {other:?}"),
    };
    assert!(
        refusal.contains("root metadata is expired")
            && refusal.contains("a waiver does not cover the root"),
        "{refusal}"
    );
}

#[tokio::test]
async fn a_waiver_signed_by_another_key_or_altered_after_signing_is_refused() {
    let desk = Desk::new().await;
    let staging = stale_release(&desk).await;
    let datastore = desk.path("ds");
    let now = jiff::Timestamp::now();
    let terms =
        WaiverTerms::new(SITE, now - hours(1), now + hours(24), "ships by sea").expect("terms");

    for role in [
        tough::schema::RoleType::Timestamp,
        tough::schema::RoleType::Root,
    ] {
        let forged = desk.signed_with(role, terms.clone()).await;
        let refusal = waiver_refusal(
            verify::discover(&staging, &desk.trust(&datastore), Some(&offered(&forged))).await,
        );
        assert!(
            refusal.contains("not signed by a threshold of the targets keys")
                && refusal.contains("threshold of 1 not met for role targets"),
            "{role}: {refusal}"
        );
    }

    let genuine: serde_json::Value =
        serde_json::from_slice(&desk.valid_waiver().await).expect("json");
    let mut altered_signature = genuine.clone();
    let sig = altered_signature["signatures"][0]["sig"]
        .as_str()
        .expect("sig")
        .to_owned();
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    altered_signature["signatures"][0]["sig"] = format!("{flipped}{}", &sig[1..]).into();
    let mut altered_terms = genuine;
    altered_terms["signed"]["expires"] = (now + hours(24 * 60)).to_string().into();
    for altered in [altered_signature, altered_terms] {
        let document = serde_json::to_vec(&altered).expect("json");
        let refusal = waiver_refusal(
            verify::discover(&staging, &desk.trust(&datastore), Some(&offered(&document))).await,
        );
        assert!(refusal.contains("threshold of 1 not met"), "{refusal}");
    }
}

#[tokio::test]
async fn under_a_waiver_a_flipped_target_rolled_back_metadata_and_a_clock_stepped_back_stay_refused()
 {
    let desk = Desk::new().await;
    let document = desk.valid_waiver().await;
    let waived = Some(offered(&document));

    // Hash: the metadata is accepted under the waiver, the tampered target is not.
    let staging = stale_release(&desk).await;
    flip_a_byte_of_the_usr_target(&staging.join("targets"), "1.0.0");
    let repo = verify::discover(&staging, &desk.trust(&desk.path("ds")), waived.as_ref())
        .await
        .expect("metadata is intact");
    assert!(repo.waiver().is_some());
    assert_staging_the_usr_target_is_refused(&desk, &repo).await;

    // Rollback: 1.0.0's metadata after 1.1.0's was seen, both expired.
    let old = desk.bundle("1.0.0", "old").await;
    desk.publish("1.1.0", None, &expired_timestamp()).await;
    let new = desk.bundle("1.1.0", "new").await;
    let datastore = desk.path("ds-rollback");
    let staging = extract(&desk, &new, "new-staging");
    verify::discover(&staging, &desk.trust(&datastore), waived.as_ref())
        .await
        .expect("the newer repository, under the waiver");
    let staging = extract(&desk, &old, "old-staging");
    let refusal = tuf_refusal(
        verify::discover(&staging, &desk.trust(&datastore), waived.as_ref()).await,
        RefusalKind::Rollback,
    );
    assert!(
        refusal.contains("previously fetched version 2"),
        "{refusal}"
    );

    // Clock: the node's clock is behind the last time it saw.
    let datastore = desk.path("ds-clock");
    std::fs::create_dir_all(&datastore).expect("ds");
    let future = jiff::Timestamp::now() + hours(24 * 30);
    std::fs::write(
        datastore.join("latest_known_time.json"),
        serde_json::to_vec(&future).expect("json"),
    )
    .expect("write");
    let refusal = tuf_refusal(
        verify::discover(&staging, &desk.trust(&datastore), waived.as_ref()).await,
        RefusalKind::Clock,
    );
    assert!(refusal.contains("stepped backward"), "{refusal}");
}

#[tokio::test]
async fn a_bundle_carries_one_waiver_and_a_second_or_any_other_top_level_file_is_refused() {
    let desk = Desk::new().await;
    desk.publish("1.0.0", None, &expired_timestamp()).await;
    let waiver_file = desk.path("factory-7.waiver.json");
    std::fs::write(&waiver_file, desk.valid_waiver().await).expect("write");
    let bundle = desk.path("waived.bundle");
    bundle::export_with_waiver(&desk.repo, &v("1.0.0"), Some(&waiver_file), &bundle)
        .await
        .expect("export");

    let staging = extract(&desk, &bundle, "staging");
    let document = std::fs::read(staging.join(WAIVER_FILE)).expect("waiver.json extracted");
    let repo = verify::discover(
        &staging,
        &desk.trust(&desk.path("ds")),
        Some(&offered(&document)),
    )
    .await
    .expect("accepted under the bundled waiver");
    assert_eq!(repo.waiver().expect("waiver").site, SITE);

    // The bundle's entries again, with one more appended.
    let with_extra = |name: &str, size: usize| {
        let path = desk.path(&format!("extra-{}.bundle", name.replace('/', "_")));
        let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("create"));
        let mut original = tar::Archive::new(std::fs::File::open(&bundle).expect("open"));
        for entry in original.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let mut header = entry.header().clone();
            let entry_path = entry.path().expect("path").into_owned();
            builder
                .append_data(&mut header, entry_path, &mut entry)
                .expect("append");
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(size as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, std::io::repeat(b' ').take(size as u64))
            .expect("append");
        builder.finish().expect("finish");
        path
    };
    for (extra, size) in [
        (WAIVER_FILE, 16),
        ("notes.txt", 16),
        ("other.waiver.json", 16),
        ("waiver.json.d/x", 16),
    ] {
        let staging = desk.path("refused-staging");
        let refused = bundle::extract(
            &with_extra(extra, size),
            &staging,
            &ExtractLimits::default(),
        );
        assert_bundle_refused(&refused, &staging);
        eprintln!("{extra}: {}", refused.expect_err("refused"));
    }

    // Alone, an oversized waiver.json is a size refusal.
    let path = desk.path("big-waiver.bundle");
    let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("create"));
    let size = waiver::MAX_WAIVER_BYTES + 1;
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, WAIVER_FILE, std::io::repeat(b' ').take(size))
        .expect("append");
    builder.finish().expect("finish");
    drop(builder);
    let refused = bundle::extract(&path, &desk.path("big"), &ExtractLimits::default());
    assert_bundle_refused(&refused, &desk.path("big"));
    assert_eq!(
        refused.expect_err("refused").refusal_kind(),
        RefusalKind::Size
    );
}

#[tokio::test]
async fn the_release_tool_issues_and_ships_only_waivers_a_node_could_accept() {
    let desk = Desk::new().await;
    desk.publish("1.0.0", None, &Lifetimes::default()).await;
    let now = jiff::Timestamp::now();
    for (expires, rule) in [
        (now + hours(24 * 90 + 1), "longer than the 90 days"),
        (now, "expires before it is issued"),
    ] {
        let terms = WaiverTerms::new(SITE, now, expires, "ships by sea").expect("terms");
        let refused = waiver::issue(&desk.keys, &desk.repo.metadata_dir(), terms).await;
        let err = refused.expect_err("refused");
        assert!(err.to_string().contains(rule), "{err}");
    }
    let terms = WaiverTerms::new(SITE, now, now + hours(24 * 90), "ships by sea").expect("terms");
    let issued = waiver::issue(&desk.keys, &desk.repo.metadata_dir(), terms)
        .await
        .expect("90 days is allowed");
    assert!(issued.check_signatures(&desk.newest_root()).is_ok());

    let forged = desk.path("forged.waiver.json");
    let terms = WaiverTerms::new(SITE, now, now + hours(24), "ships by sea").expect("terms");
    std::fs::write(
        &forged,
        desk.signed_with(tough::schema::RoleType::Timestamp, terms)
            .await,
    )
    .expect("write");
    let out = desk.path("forged.bundle");
    let refused = bundle::export_with_waiver(&desk.repo, &v("1.0.0"), Some(&forged), &out).await;
    assert!(
        matches!(refused, Err(ReleaseError::Waiver { .. })),
        "{refused:?}"
    );
    assert!(!out.exists());
}
