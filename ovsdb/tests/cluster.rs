//! The client against a 3-member RAFT cluster of OVN_Northbound servers.

mod ovsdb_server;

use std::collections::BTreeSet;
use std::time::Duration;

use ovsdb::nb::{self, LogicalSwitch};
use ovsdb::{Client, ClientConfig, ConnectionState, Remote, Replica, TypedRow};
use ovsdb_server::{Cluster, DEADLINE, eventually};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ovsdb-raft")
        .tempdir()
        .expect("tempdir")
}

fn connected(client: &Client) -> (Remote, u64) {
    match client.state() {
        ConnectionState::Connected { remote, session } => (remote, session),
        other => panic!("not connected: {other:?}"),
    }
}

/// Waits for a connection newer than `session`.
async fn next_session(client: &Client, session: u64) -> (Remote, u64) {
    let mut state = client.state_watch();
    tokio::time::timeout(
        DEADLINE,
        state.wait_for(
            |s| matches!(s, ConnectionState::Connected { session: n, .. } if *n > session),
        ),
    )
    .await
    .expect("reconnected in time")
    .expect("client running");
    connected(client)
}

/// Inserts a switch, retrying while the client is between connections (a leader change can
/// still be under way when the first attempt is made).
async fn add_switch(client: &Client, name: &str) {
    let ls = LogicalSwitch {
        name: name.into(),
        ..Default::default()
    };
    let start = std::time::Instant::now();
    loop {
        match client
            .transact(nb::DATABASE, vec![ls.insert_op("ls")])
            .await
        {
            Ok(_) => return,
            Err(e) if e.is_connection_error() && start.elapsed() < DEADLINE => {
                client.wait_connected(DEADLINE).await.expect("reconnect");
            }
            Err(e) => panic!("insert {name}: {e}"),
        }
    }
}

fn names(replica: &Replica) -> BTreeSet<String> {
    replica
        .snapshot()
        .rows::<LogicalSwitch>()
        .map(|(_, ls)| ls.expect("typed").name)
        .collect()
}

async fn assert_on_leader(cluster: &Cluster, remote: &Remote) {
    let index = cluster.index_of(remote);
    eventually("the client's server to be the leader", || async {
        cluster.leader() == Some(index)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_only_client_follows_the_leader() {
    let dir = tempdir();
    let mut cluster = Cluster::start(dir.path(), 3).await;
    let config = ClientConfig::new(cluster.remotes())
        .leader_only(nb::DATABASE)
        .backoff(Duration::from_millis(20), Duration::from_millis(500));
    let client = Client::connect(config, DEADLINE).await.expect("connect");
    let (remote, session) = connected(&client);
    assert_on_leader(&cluster, &remote).await;

    let replica = client.monitor(nb::monitor_spec()).await.expect("monitor");
    add_switch(&client, "one").await;
    assert!(names(&replica).contains("one"));

    // Leadership moves without any process dying: the `_Server` monitor notices and the client
    // moves to the new leader, resuming its monitor instead of reloading it.
    let old = cluster.index_of(&remote);
    cluster.servers[old].appctl(&["cluster/failure-test", "transfer-leadership"]);
    let (remote, session) = next_session(&client, session).await;
    assert_ne!(
        cluster.index_of(&remote),
        old,
        "moved away from the old leader"
    );
    assert_on_leader(&cluster, &remote).await;
    add_switch(&client, "two").await;

    // The leader dies: in-flight work fails, the client finds the newly elected leader.
    let leader = cluster.index_of(&remote);
    cluster.servers[leader].kill();
    let (remote, _) = next_session(&client, session).await;
    assert_ne!(cluster.index_of(&remote), leader);
    assert_on_leader(&cluster, &remote).await;
    add_switch(&client, "three").await;

    let expected: BTreeSet<String> = ["one", "two", "three"].map(String::from).into();
    replica
        .wait_until(DEADLINE, |s| {
            s.rows::<LogicalSwitch>()
                .filter_map(|(_, ls)| ls.ok().map(|l| l.name))
                .collect::<BTreeSet<_>>()
                == expected
        })
        .await
        .expect("replica has all switches");
    let metrics = client.metrics();
    assert_eq!(
        replica.snapshot().generation(),
        1,
        "monitor resumed from the last transaction on every reconnect: {metrics:?}"
    );
    assert!(metrics.monitor_resumes >= 2, "{metrics:?}");
    assert!(replica.snapshot().last_txn_id().is_some());

    // The replica equals what the new leader has.
    let rows = client
        .transact(
            nb::DATABASE,
            vec![ovsdb::Operation::select("Logical_Switch", vec![])],
        )
        .await
        .expect("select");
    let on_server: BTreeSet<String> = rows[0]
        .rows()
        .expect("rows")
        .iter()
        .map(|r| LogicalSwitch::from_row(r).expect("typed").name)
        .collect();
    assert_eq!(on_server, names(&replica));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_refused_for_leader_only_but_fine_as_members() {
    let dir = tempdir();
    let cluster = Cluster::start(dir.path(), 3).await;
    let leader = cluster.leader().expect("leader");
    let followers: Vec<Remote> = cluster
        .servers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, s)| s.tcp())
        .collect();

    let picky = Client::start(
        ClientConfig::new(followers.clone())
            .leader_only(nb::DATABASE)
            .backoff(Duration::from_millis(20), Duration::from_millis(200)),
    )
    .expect("start");
    let mut state = picky.state_watch();
    tokio::time::timeout(
        DEADLINE,
        state.wait_for(|s| {
            matches!(s, ConnectionState::Connecting { attempt, last_error: Some(e) }
                if *attempt >= 2 && e.contains("not the leader"))
        }),
    )
    .await
    .expect("followers refused in time")
    .expect("running");

    let member = Client::connect(
        ClientConfig::new(followers).cluster_member(nb::DATABASE),
        DEADLINE,
    )
    .await
    .expect("followers are fine as members");
    // Followers forward transactions to the leader.
    add_switch(&member, "via-follower").await;
    let replica = member
        .monitor(nb::monitor_spec())
        .await
        .expect("monitor on a follower");
    replica
        .wait_until(DEADLINE, |s| {
            s.rows::<LogicalSwitch>()
                .any(|(_, ls)| ls.is_ok_and(|l| l.name == "via-follower"))
        })
        .await
        .expect("replica on a follower");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_resumes_after_restart_of_clustered_server() {
    // Clustered databases keep their transaction history in the RAFT log, so after a restart
    // the server still knows the replica's last transaction id and sends only what changed.
    let dir = tempdir();
    let mut cluster = Cluster::start(dir.path(), 1).await;
    let config = ClientConfig::new(cluster.remotes())
        .cluster_member(nb::DATABASE)
        .backoff(Duration::from_millis(20), Duration::from_millis(300));
    let client = Client::connect(config, DEADLINE).await.expect("connect");
    let replica = client.monitor(nb::monitor_spec()).await.expect("monitor");
    // The server trims its history once it holds more atoms than the database itself (a full
    // reload is cheaper then), so the database needs some bulk for the history to survive.
    let bulk: Vec<ovsdb::Operation> = (0..100)
        .map(|i| {
            LogicalSwitch {
                name: format!("bulk{i}"),
                external_ids: (0..10)
                    .map(|k| (format!("k{k}"), format!("v{k}")))
                    .collect(),
                ..Default::default()
            }
            .insert_op(&format!("b{i}"))
        })
        .collect();
    client
        .transact(nb::DATABASE, bulk)
        .await
        .expect("bulk insert");
    add_switch(&client, "kept").await;
    add_switch(&client, "doomed").await;
    let txn_before = replica.snapshot().last_txn_id().expect("txn id");
    let (_, session) = connected(&client);

    let server = &mut cluster.servers[0];
    server.kill();
    // Changes while the client cannot connect: only the unix socket is served.
    server.start_with_tcp(false);
    server.nbctl(&["ls-add", "while-away"]);
    server.nbctl(&["ls-del", "doomed"]);
    server.appctl(&[
        "ovsdb-server/add-remote",
        &format!("ptcp:{}:127.0.0.1", server.port),
    ]);
    next_session(&client, session).await;

    let expected: BTreeSet<String> = (0..100)
        .map(|i| format!("bulk{i}"))
        .chain(["kept".to_owned(), "while-away".to_owned()])
        .collect();
    assert_eq!(
        names(&replica),
        expected,
        "monitors are restored before Connected"
    );
    let snapshot = replica.snapshot();
    let metrics = client.metrics();
    assert_eq!(
        snapshot.generation(),
        1,
        "resumed, not reloaded: {metrics:?}"
    );
    assert_ne!(snapshot.last_txn_id(), Some(txn_before));
    assert_eq!(metrics.monitor_resumes, 1, "{metrics:?}");
    assert_eq!(
        metrics.monitor_reloads, 1,
        "only the first load: {metrics:?}"
    );
}
