//! The region link over the in-memory region ([`super::fake`]) and a temporary store and directory,
//! and the real HTTPS transport against an in-process TLS server.

use super::credentials::{
    self, CA_CRT, ENROLLMENT, FederationDir, NODE_CRT, NODE_KEY, REVOKED, ca_fingerprint,
    new_node_key,
};
use super::fake::{Call, FakeRegion, SITE, TOKEN, TestCa};
use super::outbox::{Outbox, Realigned};
use super::report::{self, HostSystem, Observation, SiteObserver};
use super::status::{LinkState, LinkStatus};
use super::transport::{HttpsTransport, RegionTransport, TransportError};
use super::*;
use crate::health::{HealthReport, SubsystemHealth};
use crate::store::Store;
use crate::system::clock::ManualClock;
use jiff::SignedDuration;
use scs_edge_proto::{
    Capacity, ComponentHealth, DesiredState, ErrorBody, ErrorCode, ErrorDetail, HealthState,
    ReportAck, ResourceCounts,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;

const START: &str = "2026-11-01T12:00:00Z";

fn observation() -> Observation {
    let mut subsystems = BTreeMap::new();
    for name in ["store", "reconciler", "libvirt", "image-store"] {
        subsystems.insert(name, SubsystemHealth::ok(json!({})));
    }
    Observation {
        health: HealthReport {
            status: "ok",
            subsystems,
        },
        capacity: Capacity {
            vcpus: 4,
            memory_mib: 8192,
            disk_free_gib: 100,
        },
        resources: ResourceCounts {
            servers: 2,
            networks: 1,
            ports: 3,
            images: 1,
            projects: 2,
        },
        os_version: "26.11.0".into(),
        update: None,
    }
}

struct FixedObserver;

impl SiteObserver for FixedObserver {
    fn observe(&self) -> Observation {
        observation()
    }
}

/// A node: state directory with a store and a join token, a manual clock, and a region.
struct Node {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    clock: Arc<ManualClock>,
    region: Arc<FakeRegion>,
    status: Arc<LinkStatus>,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("agent.db")).expect("store"));
        std::fs::write(dir.path().join("join-token"), format!("{TOKEN}\n")).expect("token");
        let clock = Arc::new(ManualClock::new(START.parse().expect("time")));
        let region = Arc::new(FakeRegion::new(clock.now()));
        Self {
            dir,
            store,
            clock,
            region,
            status: Arc::new(LinkStatus::new(SITE)),
        }
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("join-token")
    }

    fn files(&self) -> FederationDir {
        federation_dir(self.dir.path())
    }

    fn file(&self, name: &str) -> PathBuf {
        self.files().path().join(name)
    }

    fn settings(&self) -> LinkSettings {
        LinkSettings {
            site: SITE.into(),
            ca_fingerprint: ca_fingerprint(&self.region.ca.pem()).expect("pin"),
            token_file: self.token_file(),
            heartbeat: Duration::from_secs(10),
            jitter_percent: 20,
            backoff_max: Duration::from_mins(5),
        }
    }

    /// A link as the agent starts it (a new one per "restart"), with a queue of `capacity`.
    fn link_with(&self, capacity: u64) -> Link<Arc<FakeRegion>> {
        Link::new(
            self.settings(),
            self.region.clone(),
            self.files(),
            Outbox::new(self.store.clone(), capacity),
            Arc::new(FixedObserver),
            self.clock.clone(),
            self.status.clone(),
        )
    }

    async fn link(&self) -> Link<Arc<FakeRegion>> {
        let link = self.link_with(50_000);
        assert!(link.prepare().await.expect("prepare"), "not revoked");
        link
    }

    fn outbox(&self) -> Outbox {
        Outbox::new(self.store.clone(), 50_000)
    }

    fn reports_calls(&self) -> Vec<Vec<u64>> {
        self.region
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Reports { seqs } => Some(seqs),
                _ => None,
            })
            .collect()
    }

    fn count(&self, wanted: fn(&Call) -> bool) -> usize {
        self.region.calls().iter().filter(|c| wanted(c)).count()
    }
}

async fn heartbeats(link: &Link<Arc<FakeRegion>>, n: u64) {
    for _ in 0..n {
        link.heartbeat().await.expect("heartbeat");
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn join_writes_credentials_and_deletes_the_token() {
    let node = Node::new();
    let link = node.link().await;
    link.heartbeat().await.expect("heartbeat");
    link.cycle().await.expect("join and deliver");

    let calls = node.region.calls();
    assert_eq!(calls[0], Call::FetchCa);
    assert_eq!(
        calls[1],
        Call::Join {
            site: SITE.into(),
            token: TOKEN.into()
        }
    );
    assert_eq!(node.reports_calls(), vec![vec![1]]);
    for name in [NODE_KEY, NODE_CRT, CA_CRT, ENROLLMENT] {
        assert!(node.file(name).exists(), "{name} written");
    }
    assert_eq!(mode(&node.file(NODE_KEY)), 0o600, "the key is root's only");
    assert_eq!(mode(node.files().path()), 0o700);
    assert_eq!(
        std::fs::read_to_string(node.file(CA_CRT)).expect("ca"),
        node.region.ca.pem()
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(node.file(ENROLLMENT)).expect("record"))
            .expect("json");
    assert_eq!(record["site"], SITE);
    assert_eq!(
        record["renew_after"],
        node.region.state().renew_after.to_string()
    );
    let leftovers: Vec<String> = std::fs::read_dir(node.files().path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| {
            let extension = Path::new(n).extension().and_then(|e| e.to_str());
            matches!(extension, Some("next" | "tmp"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!node.token_file().exists(), "the used token is deleted");
    let snapshot = node.status.snapshot();
    assert!(snapshot.joined);
    assert_eq!(snapshot.state, LinkState::Up);
    assert_eq!(snapshot.acked_through, 1);
    // A round with nothing to send talks to nobody, and does not count as contact.
    let calls = node.region.calls().len();
    node.clock.advance(SignedDuration::from_mins(1));
    link.cycle().await.expect("empty round");
    assert_eq!(node.region.calls().len(), calls);
    assert_eq!(node.status.snapshot().last_success, snapshot.last_success);

    // A restarted agent uses what it stored: no second join (the token is gone anyway).
    let restarted = node.link().await;
    restarted.heartbeat().await.expect("heartbeat");
    restarted.cycle().await.expect("deliver");
    assert_eq!(node.count(|c| matches!(c, Call::Join { .. })), 1);
    assert_eq!(node.region.stored_seqs(), vec![1, 2]);
}

#[tokio::test]
async fn a_ca_that_does_not_match_the_pin_gets_no_token() {
    let node = Node::new();
    node.region.state().served_ca_pem = TestCa::new("impostor").pem();
    let link = node.link().await;
    let err = link.cycle().await.expect_err("pin mismatch");
    let text = err.to_string();
    let pin = ca_fingerprint(&node.region.ca.pem()).expect("pin");
    assert!(
        text.starts_with(&format!(
            "region CA fingerprint mismatch: expected {pin} got sha256:"
        )),
        "{text}"
    );
    assert_eq!(err.retry(), Retry::Operator);
    assert_eq!(
        node.region.calls(),
        vec![Call::FetchCa],
        "the token never left"
    );
    assert!(node.token_file().exists());
    assert!(!node.file(NODE_KEY).exists());
    assert!(!node.status.snapshot().joined);
}

#[tokio::test]
async fn a_refused_token_needs_an_operator_and_leaves_nothing_behind() {
    let node = Node::new();
    node.region.state().token = "another-token".into();
    let link = node.link().await;
    let err = link.cycle().await.expect_err("refused");
    assert!(matches!(err, LinkError::TokenRefused { .. }), "{err}");
    assert_eq!(err.retry(), Retry::Operator);
    assert!(
        err.to_string()
            .contains(&node.token_file().display().to_string()),
        "{err}"
    );
    assert!(!err.to_string().contains(TOKEN), "never the token itself");
    let names: Vec<String> = std::fs::read_dir(node.files().path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.is_empty(), "staged key discarded: {names:?}");
    assert!(
        node.token_file().exists(),
        "kept for the operator to replace"
    );

    // Without a token at all the link says where one belongs.
    std::fs::remove_file(node.token_file()).expect("remove");
    let err = link.cycle().await.expect_err("no token");
    assert!(matches!(err, LinkError::NoToken { .. }), "{err}");
    assert_eq!(err.retry(), Retry::Operator);
}

#[tokio::test]
async fn reports_are_delivered_in_order_across_batches() {
    let node = Node::new();
    let link = node.link().await;
    for minute in 0..250 {
        node.clock.advance(SignedDuration::from_mins(1));
        let pushed = link.heartbeat().await.expect("heartbeat");
        assert_eq!(pushed.seq, minute + 1);
    }
    link.cycle().await.expect("deliver");
    let batches = node.reports_calls();
    assert_eq!(
        batches,
        vec![
            (1..=100).collect::<Vec<u64>>(),
            (101..=200).collect(),
            (201..=250).collect()
        ]
    );
    let region = node.region.state();
    assert_eq!(
        region.stored.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=250).collect::<Vec<_>>()
    );
    // Each report keeps the time it was taken.
    assert_eq!(
        region.stored[0].sent_at,
        START.parse::<jiff::Timestamp>().expect("t") + SignedDuration::from_mins(1)
    );
    assert!(
        region
            .stored
            .windows(2)
            .all(|w| w[0].sent_at < w[1].sent_at)
    );
    assert_eq!(region.stored[0].resources, observation().resources);
    drop(region);
    assert!(node.outbox().is_empty().expect("len"));
    assert_eq!(node.status.snapshot().queued_reports, 0);
    assert_eq!(node.status.snapshot().acked_through, 250);
}

#[tokio::test]
async fn the_queue_survives_a_restart_and_numbers_are_never_reused() {
    let node = Node::new();
    {
        let link = node.link().await;
        heartbeats(&link, 3).await;
    }
    // The agent dies; a new process opens the store again.
    let store = Arc::new(Store::open(&node.dir.path().join("agent.db")).expect("reopen"));
    let reopened = Outbox::new(store.clone(), 50_000);
    assert_eq!(reopened.len().expect("len"), 3);
    let restarted = Node { store, ..node };
    let link = restarted.link().await;
    assert_eq!(restarted.status.snapshot().queued_reports, 3);
    assert_eq!(link.heartbeat().await.expect("heartbeat").seq, 4);
    link.cycle().await.expect("deliver");
    assert_eq!(restarted.region.stored_seqs(), vec![1, 2, 3, 4]);
    // With the queue empty, the next number still continues.
    drop(link);
    let link = restarted.link().await;
    assert_eq!(link.heartbeat().await.expect("heartbeat").seq, 5);
}

#[tokio::test]
async fn duplicates_are_reacked_and_a_409_ahead_of_the_queue_drops_what_the_region_has() {
    let node = Node::new();
    let link = node.link().await;
    link.cycle().await.expect("join");
    heartbeats(&link, 8).await;
    // The region stored 1..=3 but its answer was lost; it still answers 409 once (as a region that
    // saw a newer batch first would), naming 4.
    {
        let mut region = node.region.state();
        region.stored_through = 3;
        region.failures.push_back(TransportError::Refused {
            what: "the reports",
            status: 409,
            code: ErrorCode::OutOfOrder,
            message: "gap".into(),
            expected_seq: Some(4),
        });
    }
    link.cycle().await.expect("deliver after realigning");
    assert_eq!(
        node.reports_calls(),
        vec![(1..=8).collect::<Vec<u64>>(), (4..=8).collect()]
    );
    assert_eq!(node.region.stored_seqs(), (4..=8).collect::<Vec<_>>());
    assert!(node.outbox().is_empty().expect("len"));

    // Plain duplicates: the region holds 9..=10 already and re-acknowledges them without storing.
    heartbeats(&link, 4).await;
    node.region.state().stored_through = 10;
    link.cycle().await.expect("deliver");
    assert_eq!(node.reports_calls().last(), Some(&vec![9, 10, 11, 12]));
    assert_eq!(node.region.stored_seqs(), vec![4, 5, 6, 7, 8, 11, 12]);
    assert!(node.outbox().is_empty().expect("len"));
}

#[tokio::test]
async fn a_region_that_lost_reports_gets_the_queue_renumbered_from_where_it_is() {
    let node = Node::new();
    let link = node.link().await;
    heartbeats(&link, 10).await;
    link.cycle().await.expect("deliver 1..=10");
    // The region is restored from a backup that knew reports up to 4 only.
    {
        let mut region = node.region.state();
        region.stored_through = 4;
        region.stored.truncate(4);
    }
    heartbeats(&link, 3).await; // 11, 12, 13
    link.cycle().await.expect("deliver after renumbering");
    assert_eq!(node.reports_calls()[1..], [vec![11, 12, 13], vec![5, 6, 7]]);
    assert_eq!(node.region.stored_seqs(), (1..=7).collect::<Vec<_>>());
    // Numbering continues after the renumbered queue: no hole, nothing reused.
    assert_eq!(link.heartbeat().await.expect("heartbeat").seq, 8);
}

#[tokio::test]
async fn a_region_ahead_of_the_node_makes_numbering_continue_after_it() {
    let node = Node::new();
    let link = node.link().await;
    link.cycle().await.expect("join");
    heartbeats(&link, 3).await;
    // The node's store is older than the region's record: the region holds up to 100.
    node.region.state().stored_through = 100;
    link.cycle().await.expect("deliver");
    assert!(node.outbox().is_empty().expect("len"));
    assert_eq!(node.outbox().next_seq().expect("next"), 101);
    assert_eq!(link.heartbeat().await.expect("heartbeat").seq, 101);
    link.cycle().await.expect("deliver");
    assert_eq!(node.region.stored_seqs(), vec![101]);
}

#[test]
fn realigning_covers_every_position_of_the_expected_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(&dir.path().join("agent.db")).expect("store"));
    let outbox = Outbox::new(store, 100);
    let fill = |n: u64| {
        for _ in 0..n {
            outbox
                .push(|seq| report::build(seq, jiff::Timestamp::UNIX_EPOCH, &observation()))
                .expect("push");
        }
    };
    let seqs = |outbox: &Outbox| -> Vec<u64> {
        outbox
            .next_batch(100, usize::MAX)
            .expect("batch")
            .iter()
            .map(|r| r.seq)
            .collect()
    };
    fill(5); // 1..=5, next 6
    assert_eq!(outbox.realign(1).expect("realign"), Realigned::Unchanged);
    assert_eq!(
        outbox.realign(3).expect("realign"),
        Realigned::Dropped { count: 2 }
    );
    assert_eq!(seqs(&outbox), vec![3, 4, 5]);
    assert_eq!(
        outbox.realign(2).expect("realign"),
        Realigned::Renumbered {
            from: 3,
            to: 2,
            count: 3
        }
    );
    assert_eq!(seqs(&outbox), vec![2, 3, 4]);
    assert_eq!(outbox.next_seq().expect("next"), 5);
    assert_eq!(
        outbox.realign(40).expect("realign"),
        Realigned::Renumbered {
            from: 2,
            to: 40,
            count: 3
        }
    );
    assert_eq!(seqs(&outbox), vec![40, 41, 42]);
    assert_eq!(outbox.next_seq().expect("next"), 43);
    // The bodies follow their rows.
    let batch = outbox.next_batch(1, usize::MAX).expect("batch");
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].seq, 40);
    assert_eq!(
        outbox.acknowledge(42).expect("ack").jumped_to,
        None,
        "42 < next 43"
    );
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_reports() {
    let node = Node::new();
    let link = node.link_with(3);
    assert!(link.prepare().await.expect("prepare"));
    let mut dropped = 0;
    for _ in 0..5 {
        node.clock.advance(SignedDuration::from_mins(1));
        dropped += link.heartbeat().await.expect("heartbeat").dropped;
    }
    assert_eq!(dropped, 2);
    let kept: Vec<u64> = node
        .outbox()
        .next_batch(100, usize::MAX)
        .expect("batch")
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(kept, vec![3, 4, 5], "the oldest went");
    let snapshot = node.status.snapshot();
    assert_eq!(snapshot.dropped_reports, 2);
    assert_eq!(snapshot.queued_reports, 3);
    // The region never saw 1 and 2: the queue is renumbered to continue its sequence, and the reports
    // it gets are the newest three (their times show the gap).
    link.cycle().await.expect("deliver");
    let region = node.region.state();
    assert_eq!(
        region.stored.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let start: jiff::Timestamp = START.parse().expect("t");
    assert_eq!(
        region.stored[0].sent_at,
        start + SignedDuration::from_mins(3)
    );
    assert_eq!(
        region.stored[2].sent_at,
        start + SignedDuration::from_mins(5)
    );
}

#[tokio::test]
async fn a_revoked_site_stops_the_link_for_good() {
    let node = Node::new();
    let link = node.link().await;
    link.cycle().await.expect("join");
    node.region.state().revoked = true;
    let calls_before = node.region.calls().len();

    // The link takes a report, is refused with 403 site_revoked, and returns on its own.
    let shutdown = CancellationToken::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        node.link_with(50_000).run(shutdown.clone()),
    )
    .await
    .expect("the link stops by itself");
    assert!(
        !shutdown.is_cancelled(),
        "only the link stopped, not the agent"
    );
    let after: Vec<Call> = node.region.calls()[calls_before..].to_vec();
    assert_eq!(
        after,
        vec![Call::Reports { seqs: vec![1] }],
        "one attempt, no retry"
    );
    assert_eq!(node.status.snapshot().state, LinkState::Revoked);
    let revocation: credentials::Revocation =
        serde_json::from_str(&std::fs::read_to_string(node.file(REVOKED)).expect("mark"))
            .expect("json");
    assert!(
        revocation.message.contains("site_revoked"),
        "{}",
        revocation.message
    );

    // After a restart the link does not even start: no report taken, nothing sent.
    let queued = node.outbox().len().expect("len");
    let restarted = node.link_with(50_000);
    tokio::time::timeout(
        Duration::from_secs(30),
        restarted.run(CancellationToken::new()),
    )
    .await
    .expect("returns at once");
    assert_eq!(node.region.calls().len(), calls_before + 1);
    assert_eq!(node.outbox().len().expect("len"), queued);
}

#[tokio::test]
async fn the_link_stops_on_shutdown_while_the_region_is_unreachable() {
    let node = Node::new();
    {
        let mut region = node.region.state();
        for _ in 0..5 {
            region.failures.push_back(TransportError::Unreachable {
                url: "https://region.test/node/v1/ca".into(),
                reason: "connection refused".into(),
            });
        }
    }
    let shutdown = CancellationToken::new();
    let link = node.link_with(50_000);
    let status = node.status.clone();
    let mut changes = status.subscribe();
    let task = tokio::spawn(link.run(shutdown.clone()));
    // The first attempt fails and the link backs off.
    let snapshot = tokio::time::timeout(
        Duration::from_secs(30),
        changes.wait_for(|s| s.state == LinkState::Down),
    )
    .await
    .expect("the link tried")
    .expect("status alive")
    .clone();
    assert_eq!(snapshot.consecutive_failures, 1);
    assert!(
        snapshot
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("connection refused")
    );
    assert!(snapshot.retry_in_secs.is_some());
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops on shutdown")
        .expect("no panic");
    assert!(!node.file(REVOKED).exists());
}

#[tokio::test]
async fn renewal_replaces_the_certificate_when_due_and_not_before() {
    let node = Node::new();
    let link = node.link().await;
    link.cycle().await.expect("join");
    let first_cert = std::fs::read_to_string(node.file(NODE_CRT)).expect("cert");
    let first_key = std::fs::read_to_string(node.file(NODE_KEY)).expect("key");

    node.clock.advance(SignedDuration::from_hours(24 * 20 - 1));
    link.cycle().await.expect("not due yet");
    assert_eq!(node.count(|c| matches!(c, Call::Renew { .. })), 0);

    let next_renew = node.clock.now() + SignedDuration::from_hours(24 * 20);
    {
        let mut region = node.region.state();
        region.renew_after = next_renew;
        region.not_after = node.clock.now() + SignedDuration::from_hours(24 * 30);
    }
    node.clock.advance(SignedDuration::from_hours(1));
    link.cycle().await.expect("renew");
    let renewals: Vec<Call> = node
        .region
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Renew { .. }))
        .collect();
    assert_eq!(
        renewals,
        vec![Call::Renew {
            certificate_pem: first_cert.clone()
        }],
        "renewed with the current certificate"
    );
    let second_cert = std::fs::read_to_string(node.file(NODE_CRT)).expect("cert");
    assert_ne!(second_cert, first_cert);
    assert_ne!(
        std::fs::read_to_string(node.file(NODE_KEY)).expect("key"),
        first_key,
        "a new key"
    );
    assert_eq!(mode(&node.file(NODE_KEY)), 0o600);
    assert_eq!(node.status.snapshot().renew_after, Some(next_renew));
    // The new certificate is the one used from now on; the next renewal waits for the new date.
    link.heartbeat().await.expect("heartbeat");
    link.cycle().await.expect("deliver");
    assert_eq!(node.count(|c| matches!(c, Call::Renew { .. })), 1);
    let reloaded = node.files().load().expect("load").expect("credentials");
    assert_eq!(reloaded.certificate_pem, second_cert);
    assert_eq!(reloaded.renew_after, next_renew);
}

#[tokio::test]
async fn an_expired_certificate_needs_a_new_token_and_joins_again_with_it() {
    let node = Node::new();
    let link = node.link().await;
    link.cycle().await.expect("join");
    node.clock.advance(SignedDuration::from_hours(24 * 31));
    let err = link.cycle().await.expect_err("expired");
    assert!(matches!(err, LinkError::Expired { .. }), "{err}");
    {
        let mut region = node.region.state();
        region.token = "second-token".into();
        region.token_used = false;
        region.not_after = node.clock.now() + SignedDuration::from_hours(24 * 30);
        region.renew_after = node.clock.now() + SignedDuration::from_hours(24 * 20);
    }
    std::fs::write(node.token_file(), "second-token\n").expect("token");
    link.cycle().await.expect("joined again");
    assert_eq!(node.count(|c| matches!(c, Call::Join { .. })), 2);
    assert!(!node.token_file().exists());
}

#[tokio::test]
async fn desired_state_is_fetched_only_when_the_generation_moved() {
    let node = Node::new();
    let link = node.link().await;
    link.heartbeat().await.expect("heartbeat");
    link.cycle().await.expect("join");
    assert_eq!(
        node.count(|c| matches!(c, Call::Desired)),
        0,
        "generation 0"
    );

    let desired = DesiredState {
        generation: 3,
        labels: BTreeMap::from([("wave".to_owned(), "canary".to_owned())]),
        target_os_version: Some("26.12.0".into()),
        maintenance_window: Some("sat,sun 22:00-02:00".into()),
    };
    node.region.state().desired = desired.clone();
    link.heartbeat().await.expect("heartbeat");
    link.cycle().await.expect("deliver");
    assert_eq!(node.count(|c| matches!(c, Call::Desired)), 1);
    let saved: DesiredState = serde_json::from_str(
        &std::fs::read_to_string(node.file(credentials::DESIRED)).expect("desired.json"),
    )
    .expect("json");
    assert_eq!(saved, desired);
    assert_eq!(node.status.snapshot().desired_generation, 3);

    link.heartbeat().await.expect("heartbeat");
    link.cycle().await.expect("deliver");
    assert_eq!(node.count(|c| matches!(c, Call::Desired)), 1, "unchanged");
    // A restarted agent remembers the generation it holds.
    let restarted = node.link().await;
    restarted.heartbeat().await.expect("heartbeat");
    restarted.cycle().await.expect("deliver");
    assert_eq!(node.count(|c| matches!(c, Call::Desired)), 1);
    node.region.state().desired.generation = 4;
    restarted.heartbeat().await.expect("heartbeat");
    restarted.cycle().await.expect("deliver");
    assert_eq!(node.count(|c| matches!(c, Call::Desired)), 2);
}

#[test]
fn backoff_grows_is_capped_and_jittered_within_bounds() {
    let max = Duration::from_mins(5);
    let top = 1.0 - f64::EPSILON;
    let ceilings: Vec<u64> = (1..=12)
        .map(|n| retry_delay(n, max, top).as_secs_f64().round() as u64)
        .collect();
    assert_eq!(
        ceilings,
        vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    );
    assert_eq!(
        retry_delay(u32::MAX, max, top).as_secs_f64().round() as u64,
        300
    );
    // Full jitter: anywhere in the window, but never below the floor.
    assert_eq!(retry_delay(5, max, 0.0), MIN_RETRY);
    assert_eq!(retry_delay(5, max, 0.5), Duration::from_secs(8));
    for failures in 1..40 {
        let unit: f64 = rand::random();
        let delay = retry_delay(failures, max, unit);
        assert!(delay >= MIN_RETRY && delay <= max, "{failures}: {delay:?}");
    }
    // Heartbeats vary by the configured share either way.
    let every = Duration::from_secs(10);
    assert_eq!(jittered(every, 20, 0.0), Duration::from_secs(8));
    assert_eq!(jittered(every, 20, 0.5), every);
    assert!(jittered(every, 20, top) <= Duration::from_secs(12));
    assert_eq!(jittered(every, 0, 0.9), every);
    for _ in 0..100 {
        let d = jittered(every, 20, rand::random());
        assert!(
            d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
            "{d:?}"
        );
    }
}

#[test]
fn failures_are_classified_by_what_fixes_them() {
    let refused = |status: u16, code: ErrorCode| {
        LinkError::Transport(TransportError::Refused {
            what: "x",
            status,
            code,
            message: String::new(),
            expected_seq: None,
        })
    };
    assert_eq!(refused(403, ErrorCode::SiteRevoked).retry(), Retry::Never);
    assert_eq!(
        refused(401, ErrorCode::Unauthenticated).retry(),
        Retry::Operator
    );
    assert_eq!(
        refused(404, ErrorCode::UnknownSite).retry(),
        Retry::Operator
    );
    assert_eq!(
        refused(426, ErrorCode::UnsupportedProtocol).retry(),
        Retry::Operator
    );
    assert_eq!(refused(500, ErrorCode::Internal).retry(), Retry::Backoff);
    assert_eq!(refused(502, ErrorCode::Unknown).retry(), Retry::Backoff);
    // A 403 from something that is not the region (a proxy) is not a revocation.
    assert_eq!(refused(403, ErrorCode::Unknown).retry(), Retry::Operator);
    let unreachable = LinkError::Transport(TransportError::Unreachable {
        url: String::new(),
        reason: String::new(),
    });
    assert_eq!(unreachable.retry(), Retry::Backoff);
}

#[test]
fn an_interrupted_credential_update_is_finished_or_thrown_away() {
    let region = FakeRegion::new(START.parse().expect("t"));
    let dir = tempfile::tempdir().expect("tempdir");
    let files = FederationDir::new(dir.path().join("federation"));
    let enrollment = |csr: &str| scs_edge_proto::Enrollment {
        site: SITE.into(),
        certificate_pem: region.ca.sign_csr(csr).expect("sign"),
        ca_pem: region.ca.pem(),
        not_after: "2027-01-01T00:00:00Z".parse().expect("t"),
        renew_after: "2026-12-01T00:00:00Z".parse().expect("t"),
    };
    let first = new_node_key(SITE).expect("key");
    files.stage_key(&first).expect("stage");
    let live = files
        .commit(SITE, &enrollment(&first.csr_pem))
        .expect("commit");

    // A crash after staging the key (before the certificate came back): the live set stays.
    let second = new_node_key(SITE).expect("key");
    files.stage_key(&second).expect("stage");
    let loaded = files.load().expect("load").expect("credentials");
    assert_eq!(loaded.certificate_pem, live.certificate_pem);
    assert!(!dir.path().join("federation/node.key.next").exists());

    // A crash in the middle of the commit (key already renamed, certificate not yet): finished.
    let third = new_node_key(SITE).expect("key");
    let answer = enrollment(&third.csr_pem);
    let base = dir.path().join("federation");
    std::fs::write(base.join("node.key"), third.key.expose()).expect("key");
    std::fs::write(base.join("node.crt.next"), &answer.certificate_pem).expect("crt");
    let loaded = files.load().expect("load").expect("credentials");
    assert_eq!(
        loaded.certificate_pem, answer.certificate_pem,
        "rolled forward"
    );
    assert!(!base.join("node.crt.next").exists());

    // An enrollment for another key, or another site, is refused and leaves the live set alone.
    let fourth = new_node_key(SITE).expect("key");
    files.stage_key(&fourth).expect("stage");
    let err = files
        .commit(SITE, &enrollment(&first.csr_pem))
        .expect_err("wrong key");
    assert!(err.to_string().contains("not for the node's key"), "{err}");
    let mut other_site = enrollment(&fourth.csr_pem);
    other_site.site = "elsewhere".into();
    assert!(files.commit(SITE, &other_site).is_err());
    files.discard_staged().expect("discard");
    assert_eq!(
        files
            .load()
            .expect("load")
            .expect("credentials")
            .certificate_pem,
        answer.certificate_pem
    );
    // Keys never reach a Debug line.
    assert!(!format!("{loaded:?}").contains("PRIVATE KEY"));
    assert!(!format!("{third:?}").contains("PRIVATE KEY"));
}

#[test]
fn the_csr_names_the_site_as_the_region_reads_it() {
    let key = new_node_key(SITE).expect("key");
    let csr = rcgen::CertificateSigningRequestParams::from_pem(&key.csr_pem).expect("csr");
    let uris: Vec<String> = csr
        .params
        .subject_alt_names
        .iter()
        .filter_map(|san| match san {
            rcgen::SanType::URI(uri) => Some(uri.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, vec![format!("urn:scs-edge:site:{SITE}")]);
    let cn = csr
        .params
        .distinguished_name
        .get(&rcgen::DnType::CommonName)
        .cloned();
    assert_eq!(cn, Some(rcgen::DnValue::Utf8String(SITE.into())));
    assert!(key.key.expose().contains("BEGIN PRIVATE KEY"));
}

#[test]
fn health_subsystems_map_onto_the_regions_components() {
    let report = |entries: &[(&'static str, bool)]| HealthReport {
        status: "ok",
        subsystems: entries
            .iter()
            .map(|(name, healthy)| {
                let detail = json!({ "error": format!("{name} broken") });
                (
                    *name,
                    if *healthy {
                        SubsystemHealth::ok(json!({}))
                    } else {
                        SubsystemHealth::failing(detail)
                    },
                )
            })
            .collect(),
    };
    let state = |components: &[ComponentHealth], name: &str| {
        components
            .iter()
            .find(|c| c.component == name)
            .map(|c| (c.state, c.detail.clone()))
            .expect(name)
    };
    let all_well = report::components(&report(&[
        ("store", true),
        ("reconciler", true),
        ("libvirt", true),
        ("image-store", true),
    ]));
    assert_eq!(
        all_well
            .iter()
            .map(|c| c.component.as_str())
            .collect::<Vec<_>>(),
        vec!["libvirt", "ovn", "k3s", "agent"]
    );
    assert_eq!(state(&all_well, "libvirt"), (HealthState::Healthy, None));
    assert_eq!(
        state(&all_well, "ovn"),
        (HealthState::Absent, None),
        "networking off"
    );
    assert_eq!(state(&all_well, "k3s"), (HealthState::Absent, None));
    assert_eq!(state(&all_well, "agent"), (HealthState::Healthy, None));

    let troubled = report::components(&report(&[
        ("store", true),
        ("reconciler", false),
        ("libvirt", false),
        ("image-store", true),
        ("ovn-northbound", true),
        ("local-switch", false),
    ]));
    let (libvirt, detail) = state(&troubled, "libvirt");
    assert_eq!(libvirt, HealthState::Down);
    assert!(detail.expect("detail").contains("libvirt broken"));
    assert_eq!(state(&troubled, "ovn").0, HealthState::Degraded);
    let (agent, detail) = state(&troubled, "agent");
    assert_eq!(agent, HealthState::Degraded);
    assert!(detail.expect("detail").starts_with("reconciler: "));

    let down = report::components(&report(&[
        ("store", false),
        ("ovn-northbound", false),
        ("local-switch", true),
    ]));
    assert_eq!(state(&down, "agent").0, HealthState::Down);
    assert_eq!(state(&down, "ovn").0, HealthState::Down);
    assert_eq!(state(&down, "libvirt").0, HealthState::Absent);

    // However long a check's detail, the report stays within the region's limits.
    let mut long = report(&[("store", true)]);
    long.subsystems.insert(
        "libvirt",
        SubsystemHealth::failing(json!({ "error": "x".repeat(5000) })),
    );
    let built = report::build(
        1,
        jiff::Timestamp::UNIX_EPOCH,
        &Observation {
            health: long,
            ..observation()
        },
    );
    assert!(built.validate().is_ok());
    assert_eq!(built.versions.agent, env!("CARGO_PKG_VERSION"));
    assert_eq!(built.versions.os, "26.11.0");
}

#[test]
fn image_version_is_read_from_os_release() {
    let text =
        "NAME=\"Debian GNU/Linux\"\nID=debian\nIMAGE_ID=scs-edge\nIMAGE_VERSION=\"26.11.3\"\n";
    assert_eq!(report::image_version(text), Some("26.11.3".into()));
    assert_eq!(report::image_version("IMAGE_VERSION=7\n"), Some("7".into()));
    assert_eq!(
        report::image_version("IMAGE_VERSION='8'\n"),
        Some("8".into())
    );
    assert_eq!(
        report::image_version("NAME=Debian\nVERSION_ID=\"12\"\n"),
        None
    );
    assert_eq!(report::image_version("IMAGE_VERSION=\"\"\n"), None);
}

/// The host a test observer sees.
struct FixedSystem;

impl HostSystem for FixedSystem {
    fn os_release(&self) -> Option<String> {
        Some("ID=debian\nIMAGE_VERSION=26.11.1\n".into())
    }

    fn disk_free_bytes(&self, _path: &Path) -> std::io::Result<u64> {
        Ok(50 << 30)
    }
}

#[test]
fn the_agent_observer_counts_from_the_store_and_reads_the_host() {
    use crate::compute::host::{FixedHostInventory, HostResources};
    use crate::identity::{BootstrapRequest, IdentityService, IdentitySettings};
    use crate::network::service::{NewNetwork, NewPort};
    use crate::network::{NetworkService, NetworkSettings};
    use crate::reconcile::NoLoops;

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(&dir.path().join("agent.db")).expect("store"));
    let clock = Arc::new(ManualClock::new(START.parse().expect("t")));
    let host = Arc::new(FixedHostInventory(HostResources {
        cpus: 6,
        memory_mib: 16_384,
    }));
    let identity = Arc::new(IdentityService::new(
        store.clone(),
        clock.clone(),
        IdentitySettings::default(),
    ));
    identity
        .bootstrap(&BootstrapRequest {
            admin_password: None,
            admin_user: "admin".into(),
            admin_project: "admin".into(),
            region_id: None,
        })
        .expect("bootstrap");
    let images = Arc::new(crate::image::ImageService::new(
        store.clone(),
        Arc::new(crate::image::files::FakeImageFiles::default()),
        clock.clone(),
    ));
    let compute = Arc::new(crate::compute::ComputeService::new(
        store.clone(),
        images.clone(),
        host.clone(),
        clock.clone(),
        Arc::new(NoLoops),
        crate::compute::ComputeSettings::from(&crate::config::AgentConfig::default()),
        Arc::new(crate::compute::files::FakeServerFiles::default()),
    ));
    let network = Arc::new(NetworkService::new(
        store.clone(),
        clock.clone(),
        Arc::new(NoLoops),
        NetworkSettings::default(),
    ));
    let net = network
        .create_network(NewNetwork {
            name: "apps".into(),
            project_id: "p".into(),
            ..NewNetwork::default()
        })
        .expect("network");
    network
        .create_port(NewPort {
            network_id: net.id,
            project_id: "p".into(),
            ..NewPort::default()
        })
        .expect("port");
    let projects = identity
        .list_projects(&crate::identity::ProjectFilter::default())
        .expect("projects")
        .len() as u64;
    assert!(projects >= 1);

    let mut checks = crate::health::HealthChecks::default();
    checks.add("store", Box::new(|| SubsystemHealth::ok(json!({}))));
    checks.add(
        "libvirt",
        Box::new(|| SubsystemHealth::failing(json!({ "error": "no libvirtd" }))),
    );
    let observer = report::AgentObserver {
        health: Arc::new(checks),
        compute,
        network,
        images,
        identity,
        host,
        system: Arc::new(FixedSystem),
        state_dir: dir.path().to_owned(),
        updates: None,
        reboot_window: None,
    };
    let seen = observer.observe();
    assert_eq!(
        seen.resources,
        ResourceCounts {
            servers: 0,
            networks: 1,
            ports: 1,
            images: 0,
            projects,
        }
    );
    assert_eq!(
        seen.capacity,
        Capacity {
            vcpus: 6,
            memory_mib: 16_384,
            disk_free_gib: 50
        }
    );
    assert_eq!(seen.os_version, "26.11.1");
    assert!(!seen.health.subsystems["libvirt"].healthy);
}

#[test]
fn the_real_host_answers_for_free_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(
        report::LocalSystem
            .disk_free_bytes(dir.path())
            .expect("statvfs")
            > 0
    );
}

#[test]
fn refusals_keep_the_regions_code_and_expected_seq() {
    let body = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code: ErrorCode::OutOfOrder,
            message: "gap".into(),
            expected_seq: Some(17),
        },
    })
    .expect("json");
    match transport::refusal("the reports", 409, &body) {
        TransportError::Refused {
            code, expected_seq, ..
        } => {
            assert_eq!(code, ErrorCode::OutOfOrder);
            assert_eq!(expected_seq, Some(17));
        }
        other => panic!("unexpected {other}"),
    }
    let proxy = transport::refusal("the reports", 502, b"<html>Bad Gateway</html>");
    assert!(matches!(
        proxy,
        TransportError::Refused {
            code: ErrorCode::Internal,
            ..
        }
    ));
    assert!(proxy.to_string().contains("502 internal"), "{proxy}");
}

/// The real HTTPS transport against an in-process TLS server speaking the node endpoints: the CA is
/// fetched without a chain to verify against, the join trusts only that CA, and reports need the
/// node certificate (the server refuses the handshake without one).
mod real_transport {
    use super::*;
    use crate::api;
    use axum::Json;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::server::WebPkiClientVerifier;
    use scs_edge_proto::{Enrollment, JoinRequest, ReportBatch, paths};

    struct Region {
        ca_pem: String,
        addr_mtls: std::net::SocketAddr,
        addr_open: std::net::SocketAddr,
        shutdown: CancellationToken,
    }

    impl Drop for Region {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    fn versioned(headers: &HeaderMap) -> bool {
        headers
            .get(scs_edge_proto::PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok())
            == Some("1")
    }

    async fn start() -> Region {
        let ca = Arc::new(TestCa::new("test region CA"));
        let (cert_pem, key_pem) = ca.server(&["localhost", "127.0.0.1"]);
        let signer = ca.clone();
        let ca_pem = ca.pem();
        let app = axum::Router::new()
            .route(paths::CA, get(move || async move { ca_pem }))
            .route(
                paths::JOIN,
                post(
                    move |headers: HeaderMap, Json(request): Json<JoinRequest>| async move {
                        if !versioned(&headers) || request.token != TOKEN {
                            return StatusCode::UNAUTHORIZED.into_response();
                        }
                        let enrollment = Enrollment {
                            site: request.site,
                            certificate_pem: signer.sign_csr(&request.csr_pem).expect("sign"),
                            ca_pem: signer.pem(),
                            not_after: "2027-01-01T00:00:00Z".parse().expect("t"),
                            renew_after: "2026-12-01T00:00:00Z".parse().expect("t"),
                        };
                        (StatusCode::CREATED, Json(enrollment)).into_response()
                    },
                ),
            )
            .route(
                "/node/v1/sites/{site}/reports",
                post(
                    |headers: HeaderMap, Json(batch): Json<ReportBatch>| async move {
                        let first = batch.reports.first().map_or(0, |r| r.seq);
                        if !versioned(&headers) {
                            return StatusCode::BAD_REQUEST.into_response();
                        }
                        if first != 1 {
                            let body = ErrorBody {
                                error: ErrorDetail {
                                    code: ErrorCode::OutOfOrder,
                                    message: "gap".into(),
                                    expected_seq: Some(1),
                                },
                            };
                            return (StatusCode::CONFLICT, Json(body)).into_response();
                        }
                        Json(ReportAck {
                            acked_through: batch.reports.last().map_or(0, |r| r.seq),
                            desired_generation: 2,
                        })
                        .into_response()
                    },
                ),
            );
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("ca der"))
            .expect("root");
        let roots = Arc::new(roots);
        let server = |mandatory: bool| {
            let builder =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            let verifier = if mandatory {
                builder.build()
            } else {
                builder.allow_unauthenticated().build()
            }
            .expect("verifier");
            let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")];
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
            Arc::new(
                rustls::ServerConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .expect("versions")
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, key)
                    .expect("server config"),
            )
        };
        let shutdown = CancellationToken::new();
        let open = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mtls = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr_open = open.local_addr().expect("addr");
        let addr_mtls = mtls.local_addr().expect("addr");
        tokio::spawn(api::serve(
            open,
            server(false),
            app.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(api::serve(mtls, server(true), app, shutdown.clone()));
        Region {
            ca_pem: ca.pem(),
            addr_mtls,
            addr_open,
            shutdown,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn joins_with_the_pinned_ca_and_reports_over_mutual_tls() {
        let region = start().await;
        let open = HttpsTransport::new(&format!("https://{}", region.addr_open));
        let ca_pem = open.fetch_ca().await.expect("CA without a chain to verify");
        assert_eq!(
            ca_fingerprint(&ca_pem).expect("pin"),
            ca_fingerprint(&region.ca_pem).expect("pin")
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let files = FederationDir::new(dir.path().join("federation"));
        let key = new_node_key(SITE).expect("key");
        files.stage_key(&key).expect("stage");
        let request = JoinRequest {
            site: SITE.into(),
            token: TOKEN.into(),
            csr_pem: key.csr_pem.clone(),
            agent_version: "test".into(),
        };
        // Trusting another CA, the region's certificate does not verify: no join.
        let impostor = TestCa::new("impostor").pem();
        let err = open.join(&impostor, &request).await.expect_err("untrusted");
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
        let enrollment = open.join(&ca_pem, &request).await.expect("join");
        let credentials = files.commit(SITE, &enrollment).expect("commit");

        let mtls = HttpsTransport::new(&format!("https://{}", region.addr_mtls));
        let batch = |seqs: std::ops::RangeInclusive<u64>| ReportBatch {
            reports: seqs
                .map(|seq| report::build(seq, jiff::Timestamp::UNIX_EPOCH, &observation()))
                .collect(),
        };
        let ack = mtls
            .send_reports(&credentials, &batch(1..=3))
            .await
            .expect("reports over mTLS");
        assert_eq!(
            ack,
            ReportAck {
                acked_through: 3,
                desired_generation: 2
            }
        );
        match mtls.send_reports(&credentials, &batch(5..=6)).await {
            Err(TransportError::Refused {
                status: 409,
                code: ErrorCode::OutOfOrder,
                expected_seq: Some(1),
                ..
            }) => {}
            other => panic!("expected 409 out_of_order, got {other:?}"),
        }

        // A certificate the region CA did not sign is refused in the handshake.
        let other = TestCa::new("other CA");
        let key = new_node_key(SITE).expect("key");
        files.stage_key(&key).expect("stage");
        let forged = Enrollment {
            certificate_pem: other.sign_csr(&key.csr_pem).expect("sign"),
            ..enrollment
        };
        let forged = files.commit(SITE, &forged).expect("commit");
        let err = mtls
            .send_reports(&forged, &batch(1..=1))
            .await
            .expect_err("foreign client certificate");
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    }
}
