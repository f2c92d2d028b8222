//! Releases through a real region process: a release manager's repository (signed with the release
//! crate) is published with the region's CLI, verified against the fleet's root, and served to a
//! joined node over mTLS — read by the node's own TUF client (`verify::discover_remote`), with byte
//! ranges for resumed downloads, and artifacts only for the release the site's desired version
//! names. Refused publications (foreign keys, a tampered target) change nothing an operator or a
//! node can see.

use scs_edge_proto::paths;
use scs_edge_release::ReleaseError;
use scs_edge_release::test_support;
use scs_edge_release::verify::{self, Trust};
use scs_edge_tests::region::{RegionOptions, RegionProcess, SimulatedNode, tls_config};
use scs_edge_tests::release_desk::Desk;
use std::path::Path;

/// A region whose `[releases]` trust `desk`'s root and hold its timestamp key.
fn region(desk: &Desk) -> RegionProcess {
    RegionProcess::start(
        "region-releases",
        RegionOptions {
            extra: desk.region_config(),
            ..RegionOptions::default()
        },
    )
}

/// The node's async client: the region CA, the node's certificate.
fn node_client(region: &RegionProcess, node: &SimulatedNode) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(
            &region.ca_pem(),
            Some((&node.cert_pem, &node.key_pem)),
        ))
        .build()
        .expect("client")
}

fn list(region: &RegionProcess) -> serde_json::Value {
    serde_json::from_str(&region.cli_ok(&["release", "list", "--json"])).expect("list JSON")
}

fn set_desired(region: &RegionProcess, site: &str, version: &str) {
    let response = region
        .operator_client()
        .patch(format!("{}/api/v1/sites/{site}/desired", region.url()))
        .json(&serde_json::json!({ "target_os_version": version }))
        .send()
        .expect("PATCH desired");
    assert_eq!(response.status().as_u16(), 200, "{:?}", response.text());
}

/// The CLI's error output for a command that must fail.
fn cli_refusal(region: &RegionProcess, args: &[&str]) -> String {
    let output = region.cli(args).expect("run the CLI");
    assert!(!output.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stage(
    runtime: &tokio::runtime::Runtime,
    base: &reqwest::Url,
    client: &reqwest::Client,
    trust: &Trust<'_>,
    version: &str,
    into: &Path,
) -> Result<verify::StagedRelease, ReleaseError> {
    runtime.block_on(async {
        let repo = verify::discover_remote(base, client.clone(), trust, None).await?;
        let manifest = repo
            .offered()
            .await?
            .into_iter()
            .find(|manifest| manifest.version.to_string() == version)
            .expect("the release is offered");
        repo.stage(&manifest, into).await
    })
}

#[test]
fn a_published_release_is_served_to_the_site_that_wants_it_and_refused_ones_change_nothing() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let desk = Desk::new(&runtime);
    desk.sign(&runtime, "1.0.0");
    let region = region(&desk);

    let published = region.cli_ok(&["release", "publish", &desk.repository_arg()]);
    assert!(published.contains("published 1.0.0"), "{published}");
    let before = list(&region);
    assert_eq!(before[0]["version"], "1.0.0");
    assert_eq!(before[0]["published_by"], "cli");

    // Refused, nothing changes: signed with another release manager's keys, a tampered target.
    let foreign = Desk::new(&runtime);
    foreign.sign(&runtime, "1.1.0");
    let refusal = cli_refusal(&region, &["release", "publish", &foreign.repository_arg()]);
    assert!(refusal.contains("release refused"), "{refusal}");
    desk.sign(&runtime, "1.1.0");
    let tampered = desk.copy("tampered");
    test_support::flip_a_byte_of_the_usr_target(&tampered.join("targets"), "1.1.0");
    let refusal = cli_refusal(
        &region,
        &["release", "publish", &tampered.display().to_string()],
    );
    assert!(refusal.contains("Hash mismatch"), "{refusal}");
    assert_eq!(list(&region), before);

    // A node of the fleet reads the region's repository with its own TUF client.
    let token = region.add_site_with_token("factory-1");
    let node = SimulatedNode::join(&region, "factory-1", &token);
    let client = node_client(&region, &node);
    let base = reqwest::Url::parse(&format!(
        "{}{}",
        region.url(),
        paths::repository("factory-1")
    ))
    .expect("url");
    let root = std::fs::read(&desk.root).expect("root");
    let datastore = desk.dir.path().join("node-datastore");
    let trust = Trust::new(&root, &datastore);
    let slot = desk.dir.path().join("slot");

    // Not wanted yet: the manifest is readable, the artifacts are not offered.
    let err = stage(&runtime, &base, &client, &trust, "1.0.0", &slot).expect_err("not offered");
    assert!(matches!(err, ReleaseError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("403"), "{err}");
    assert!(!slot.exists());

    set_desired(&region, "factory-1", "1.0.0");
    let staged = stage(&runtime, &base, &client, &trust, "1.0.0", &slot).expect("staged");
    assert_eq!(staged.manifest.version.to_string(), "1.0.0");
    for artifact in &staged.manifest.artifacts {
        let bytes = std::fs::read(slot.join(&artifact.target)).expect("staged artifact");
        assert_eq!(bytes.len() as u64, artifact.length, "{}", artifact.target);
    }

    // A download that broke off asks for the rest.
    let uki = staged
        .manifest
        .artifacts
        .iter()
        .find(|artifact| artifact.kind == scs_edge_proto::release::ArtifactKind::Uki)
        .expect("UKI");
    let url = format!("{base}targets/{}.{}", uki.sha256, uki.target);
    let whole = std::fs::read(slot.join(&uki.target)).expect("UKI bytes");
    let blocking =
        scs_edge_tests::region::client(&region.ca_pem(), Some((&node.cert_pem, &node.key_pem)));
    let rest = blocking
        .get(&url)
        .header("range", "bytes=1000-")
        .send()
        .expect("range request");
    assert_eq!(rest.status().as_u16(), 206);
    assert_eq!(
        rest.headers()["content-range"],
        format!("bytes 1000-{}/{}", whole.len() - 1, whole.len()).as_str()
    );
    assert_eq!(
        rest.headers()["etag"],
        format!("\"{}\"", uki.sha256).as_str()
    );
    assert_eq!(rest.bytes().expect("body").as_ref(), &whole[1000..]);
    let past = blocking
        .get(&url)
        .header("range", format!("bytes={}-", whole.len()))
        .send()
        .expect("range past the end");
    assert_eq!(past.status().as_u16(), 416);
    // Without the node's certificate: nothing.
    let anonymous = region
        .operator_client()
        .get(&url)
        .send()
        .expect("anonymous");
    assert_eq!(anonymous.status().as_u16(), 401);

    // Withdrawn: offered to nobody, even the site that still wants it.
    let withdrawn = region.cli_ok(&[
        "release",
        "withdraw",
        "1.0.0",
        "--reason",
        "breaks OVN on old NICs",
    ]);
    assert!(withdrawn.contains("withdrawn"), "{withdrawn}");
    let again = desk.dir.path().join("slot-again");
    let err = stage(&runtime, &base, &client, &trust, "1.0.0", &again).expect_err("withdrawn");
    assert!(err.to_string().contains("403"), "{err}");
    assert!(!again.exists());
    let shown = region.cli_ok(&["release", "show", "1.0.0"]);
    assert!(shown.contains("breaks OVN on old NICs"), "{shown}");
}
