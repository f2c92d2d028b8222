//! The client against a real standalone `ovsdb-server` serving OVN_Northbound.

mod ovsdb_server;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ovsdb::nb::{self, LogicalSwitch, LogicalSwitchPort};
use ovsdb::{
    Client, ClientConfig, Condition, ConnectionState, DatabaseSchema, Error, ErrorKind, Function,
    MonitorSpec, Mutation, Mutator, Operation, OperationResult, Replica, ReplicaEvent, Row,
    Snapshot, TypedRow, Uuid, Value, WaitUntil,
};
use ovsdb_server::{DEADLINE, Server, eventually};
use serde_json::json;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ovsdb-it")
        .tempdir()
        .expect("tempdir")
}

fn config(remote: ovsdb::Remote) -> ClientConfig {
    ClientConfig::new(vec![remote]).backoff(Duration::from_millis(20), Duration::from_millis(300))
}

async fn connect(remote: ovsdb::Remote) -> Client {
    Client::connect(config(remote), DEADLINE)
        .await
        .expect("connect")
}

fn row(pairs: &[(&str, Value)]) -> Row {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

async fn switch_names(client: &Client) -> BTreeSet<String> {
    let results = client
        .transact(
            nb::DATABASE,
            vec![Operation::Select {
                table: "Logical_Switch".into(),
                conditions: vec![],
                columns: Some(vec!["name".into()]),
            }],
        )
        .await
        .expect("select");
    results[0]
        .rows()
        .expect("rows")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_owned())
        .collect()
}

fn names(snapshot: &Snapshot) -> BTreeSet<String> {
    snapshot
        .rows::<LogicalSwitch>()
        .map(|(_, ls)| ls.expect("typed").name)
        .collect()
}

/// The server's content of the monitored tables, normalised like the replica's.
async fn server_content(
    client: &Client,
    schema: &DatabaseSchema,
    spec: &MonitorSpec,
) -> BTreeMap<String, BTreeMap<Uuid, Row>> {
    let mut content = BTreeMap::new();
    for table in spec.tables.keys() {
        let result = client
            .call(
                "transact",
                json!([nb::DATABASE, {"op": "select", "table": table, "where": []}]),
            )
            .await
            .expect("select");
        let table_schema = schema.table(table).expect("table in schema");
        let rows = result[0]["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                let uuid = Value::from_json(&r["_uuid"])
                    .expect("uuid")
                    .as_uuid()
                    .expect("uuid");
                (uuid, table_schema.decode_row(r).expect("decode"))
            })
            .collect();
        content.insert(table.clone(), rows);
    }
    content
}

fn replica_content(replica: &Replica) -> BTreeMap<String, BTreeMap<Uuid, Row>> {
    let snapshot = replica.snapshot();
    snapshot
        .table_names()
        .map(|t| {
            let rows = snapshot
                .table(t)
                .expect("table")
                .iter()
                .map(|(u, r)| (*u, (**r).clone()))
                .collect();
            (t.to_owned(), rows)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_dbs_and_get_schema() {
    let dir = tempdir();
    let server = Server::standalone_nb(dir.path());
    for remote in [server.unix(), server.tcp()] {
        let client = connect(remote).await;
        let dbs = client.list_dbs().await.expect("list_dbs");
        assert!(dbs.contains(&"OVN_Northbound".to_owned()), "{dbs:?}");
        assert!(dbs.contains(&"_Server".to_owned()), "{dbs:?}");
        let schema = client.get_schema(nb::DATABASE).await.expect("get_schema");
        assert_eq!(schema.name, "OVN_Northbound");
        assert!(schema.table("Logical_Switch").is_some());
        assert_eq!(nb::check(&schema), vec![]);
        client.echo().await.expect("echo");
        let err = client
            .get_schema("No_Such_Db")
            .await
            .expect_err("unknown db");
        assert!(matches!(err, Error::Rpc { .. }), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transact_operations() {
    let dir = tempdir();
    let server = Server::standalone_nb(dir.path());
    let client = connect(server.tcp()).await;

    // insert with uuid-name, referenced by a later operation of the same transaction; comment;
    // durable commit.
    let lsp = LogicalSwitchPort {
        name: "port1".into(),
        addresses: BTreeSet::from(["00:00:00:00:00:01 10.0.0.1".to_owned()]),
        ..Default::default()
    };
    let results = client
        .transact(
            nb::DATABASE,
            vec![
                lsp.insert_op("p"),
                Operation::insert(
                    "Logical_Switch",
                    row(&[
                        ("name", Value::from("sw0")),
                        ("ports", Value::set([ovsdb::Atom::NamedUuid("p".into())])),
                    ]),
                ),
                Operation::Comment("integration test".into()),
                Operation::Commit { durable: true },
            ],
        )
        .await
        .expect("insert");
    let port_uuid = results[0].uuid().expect("port uuid");
    let switch_uuid = results[1].uuid().expect("switch uuid");
    assert_eq!(results[2], OperationResult::Empty);

    // select, decoded into typed rows.
    let results = client
        .transact(
            nb::DATABASE,
            vec![Operation::select(
                "Logical_Switch",
                vec![Condition::eq("name", "sw0")],
            )],
        )
        .await
        .expect("select");
    let rows = results[0].rows().expect("rows");
    assert_eq!(rows.len(), 1);
    let ls = LogicalSwitch::from_row(&rows[0]).expect("typed");
    assert_eq!(ls.ports, BTreeSet::from([port_uuid]));

    // update and mutate.
    let results = client
        .transact(
            nb::DATABASE,
            vec![
                Operation::update(
                    "Logical_Switch",
                    vec![Condition::uuid(switch_uuid)],
                    row(&[("external_ids", Value::map([("owner", "test")]))]),
                ),
                Operation::mutate(
                    "Logical_Switch",
                    vec![Condition::new("name", Function::Ne, "nope")],
                    vec![Mutation::new(
                        "other_config",
                        Mutator::Insert,
                        Value::map([("mcast_snoop", "true")]),
                    )],
                ),
            ],
        )
        .await
        .expect("update + mutate");
    assert_eq!(results[0].count(), Some(1));
    assert_eq!(results[1].count(), Some(1));

    // wait that holds.
    client
        .transact(
            nb::DATABASE,
            vec![Operation::Wait {
                table: "Logical_Switch".into(),
                conditions: vec![Condition::uuid(switch_uuid)],
                columns: vec!["name".into()],
                until: WaitUntil::Equal,
                rows: vec![row(&[("name", Value::from("sw0"))])],
                timeout: Some(Duration::ZERO),
            }],
        )
        .await
        .expect("wait that holds");

    // A wait that fails makes the whole transaction fail, including an insert before it.
    let err = client
        .transact(
            nb::DATABASE,
            vec![
                Operation::insert("Logical_Switch", row(&[("name", Value::from("ghost"))])),
                Operation::Wait {
                    table: "Logical_Switch".into(),
                    conditions: vec![Condition::uuid(switch_uuid)],
                    columns: vec!["name".into()],
                    until: WaitUntil::Equal,
                    rows: vec![row(&[("name", Value::from("renamed"))])],
                    timeout: Some(Duration::ZERO),
                },
            ],
        )
        .await
        .expect_err("wait must time out");
    let tx = err.transaction().expect("a transaction error");
    assert_eq!(tx.kind, ErrorKind::TimedOut, "{err}");
    assert_eq!(tx.operation_index, Some(1));
    assert_eq!(tx.operation, Some("wait"));
    assert!(
        err.to_string()
            .contains("operation #1 (wait on Logical_Switch)"),
        "{err}"
    );
    assert_eq!(
        switch_names(&client).await,
        BTreeSet::from(["sw0".to_owned()])
    );

    // Referential integrity: a strong reference to a row that does not exist fails the commit.
    let err = client
        .transact(
            nb::DATABASE,
            vec![Operation::insert(
                "Logical_Switch",
                row(&[
                    ("name", Value::from("dangling")),
                    ("ports", Value::set([Uuid::from_u128(0xdead_beef)])),
                ]),
            )],
        )
        .await
        .expect_err("dangling reference");
    let tx = err.transaction().expect("a transaction error");
    assert_eq!(tx.kind, ErrorKind::ReferentialIntegrity, "{err}");
    assert_eq!(tx.operation_index, None, "{err}");
    assert!(tx.details.is_some());
    assert_eq!(
        switch_names(&client).await,
        BTreeSet::from(["sw0".to_owned()])
    );

    // Constraint violation: an enum value the schema does not allow.
    let err = client
        .transact(
            nb::DATABASE,
            vec![Operation::insert(
                "ACL",
                row(&[
                    ("priority", Value::from(1_i64)),
                    ("direction", Value::from("sideways")),
                    ("match", Value::from("1")),
                    ("action", Value::from("drop")),
                ]),
            )],
        )
        .await
        .expect_err("bad enum");
    let tx = err.transaction().expect("a transaction error");
    assert_eq!(tx.operation_index, Some(0), "{err}");
    assert_eq!(tx.kind, ErrorKind::ConstraintViolation, "{err}");

    // assert on a lock we do not hold; abort.
    let err = client
        .transact(
            nb::DATABASE,
            vec![Operation::Assert {
                lock: "nobody".into(),
            }],
        )
        .await
        .expect_err("not owner");
    assert_eq!(
        err.transaction().expect("tx").kind,
        ErrorKind::NotOwner,
        "{err}"
    );
    let err = client
        .transact(nb::DATABASE, vec![Operation::Abort])
        .await
        .expect_err("aborted");
    assert_eq!(
        err.transaction().expect("tx").kind,
        ErrorKind::Aborted,
        "{err}"
    );

    // delete; the port goes with it (not a root table, no more references).
    let results = client
        .transact(
            nb::DATABASE,
            vec![
                Operation::delete("Logical_Switch", vec![Condition::uuid(switch_uuid)]),
                Operation::select("Logical_Switch_Port", vec![]),
            ],
        )
        .await
        .expect("delete");
    assert_eq!(results[0].count(), Some(1));
    assert!(switch_names(&client).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_follows_other_clients() {
    let dir = tempdir();
    let server = Server::standalone_nb(dir.path());
    let client = connect(server.unix()).await;
    let replica = client.monitor(nb::monitor_spec()).await.expect("monitor");
    assert!(replica.status().loaded);
    assert_eq!(replica.snapshot().generation(), 1);
    let mut events = replica.events();

    server.nbctl(&["ls-add", "x"]);
    let snap = replica
        .wait_until(DEADLINE, |s| names(s).contains("x"))
        .await
        .expect("ls-add seen");
    let (x_uuid, _) = snap
        .rows::<LogicalSwitch>()
        .find(|(_, ls)| ls.as_ref().is_ok_and(|l| l.name == "x"))
        .expect("x");
    match events.recv().await.expect("event") {
        ReplicaEvent::Changed { tables, .. } => assert!(tables.contains("Logical_Switch")),
        other => panic!("unexpected {other:?}"),
    }

    // Set diffs: ports added one by one and removed.
    server.nbctl(&["lsp-add", "x", "p1"]);
    server.nbctl(&["lsp-add", "x", "p2"]);
    server.nbctl(&[
        "lsp-set-addresses",
        "p1",
        "00:00:00:00:00:01 10.0.0.1",
        "unknown",
    ]);
    let snap = replica
        .wait_until(DEADLINE, |s| {
            s.get::<LogicalSwitch>(&x_uuid)
                .and_then(Result::ok)
                .is_some_and(|ls| ls.ports.len() == 2)
                && s.rows::<LogicalSwitchPort>()
                    .any(|(_, p)| p.is_ok_and(|p| p.name == "p1" && p.addresses.len() == 2))
        })
        .await
        .expect("ports seen");
    let ports = snap
        .get::<LogicalSwitch>(&x_uuid)
        .expect("x")
        .expect("ok")
        .ports;
    server.nbctl(&["lsp-del", "p2"]);
    let snap = replica
        .wait_until(DEADLINE, |s| {
            s.get::<LogicalSwitch>(&x_uuid)
                .and_then(Result::ok)
                .is_some_and(|ls| ls.ports.len() == 1)
        })
        .await
        .expect("port removal seen");
    let remaining = snap
        .get::<LogicalSwitch>(&x_uuid)
        .expect("x")
        .expect("ok")
        .ports;
    assert!(remaining.is_subset(&ports));
    assert_eq!(snap.rows::<LogicalSwitchPort>().count(), 1);

    // Map diffs: add, change, remove keys.
    server.nbctl(&[
        "set",
        "logical_switch",
        "x",
        "external_ids:a=1",
        "external_ids:b=2",
    ]);
    replica
        .wait_until(DEADLINE, |s| {
            s.get::<LogicalSwitch>(&x_uuid)
                .and_then(Result::ok)
                .is_some_and(|ls| ls.external_ids.len() == 2)
        })
        .await
        .expect("keys added");
    server.nbctl(&["set", "logical_switch", "x", "external_ids:a=changed"]);
    server.nbctl(&["remove", "logical_switch", "x", "external_ids", "b"]);
    let snap = replica
        .wait_until(DEADLINE, |s| {
            s.get::<LogicalSwitch>(&x_uuid)
                .and_then(Result::ok)
                .is_some_and(|ls| {
                    ls.external_ids == BTreeMap::from([("a".to_owned(), "changed".to_owned())])
                })
        })
        .await
        .expect("map diff applied");
    assert!(snap.get::<LogicalSwitch>(&x_uuid).is_some());

    // Our own transaction is visible in the replica as soon as transact returns.
    let new = LogicalSwitch {
        name: "mine".into(),
        ..Default::default()
    };
    let uuid = client
        .transact(nb::DATABASE, vec![new.insert_op("n")])
        .await
        .expect("insert")[0]
        .uuid()
        .expect("uuid");
    assert_eq!(
        replica
            .snapshot()
            .get::<LogicalSwitch>(&uuid)
            .expect("read your writes")
            .expect("typed")
            .name,
        "mine"
    );

    server.nbctl(&["ls-del", "x"]);
    replica
        .wait_until(DEADLINE, |s| !names(s).contains("x"))
        .await
        .expect("delete seen");

    let schema = client.get_schema(nb::DATABASE).await.expect("schema");
    assert_eq!(
        replica_content(&replica),
        server_content(&client, &schema, replica.spec()).await
    );

    client.monitor_cancel(&replica).await.expect("cancel");
    let revision = replica.status().revision;
    server.nbctl(&["ls-add", "after-cancel"]);
    assert!(switch_names(&client).await.contains("after-cancel"));
    client.echo().await.expect("round trip");
    assert_eq!(replica.status().revision, revision, "cancelled monitor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_after_restart_reloads_replica() {
    let dir = tempdir();
    let mut server = Server::standalone_nb(dir.path());
    let client = connect(server.tcp()).await;
    let replica = client.monitor(nb::monitor_spec()).await.expect("monitor");
    server.nbctl(&["ls-add", "before"]);
    server.nbctl(&["ls-add", "doomed"]);
    replica
        .wait_until(DEADLINE, |s| names(s).len() == 2)
        .await
        .expect("initial rows");
    let mut events = replica.events();
    let mut state = client.state_watch();

    // A request in flight when the server dies fails with a connection error: a wait that can
    // never succeed keeps it pending on the server.
    let in_flight = client.transact(
        nb::DATABASE,
        vec![Operation::Wait {
            table: "Logical_Switch".into(),
            conditions: vec![Condition::eq("name", "before")],
            columns: vec!["name".into()],
            until: WaitUntil::Equal,
            rows: vec![row(&[("name", Value::from("never"))])],
            timeout: None,
        }],
    );
    // `join!` polls the transact first, so it is sent before the echo; the echo's reply proves
    // the server has the wait pending. Then the server dies.
    let kill_when_pending = async {
        client.echo().await.expect("echo");
        server.kill();
    };
    let (result, ()) = tokio::join!(in_flight, kill_when_pending);
    let err = result.expect_err("in-flight request fails");
    assert!(
        matches!(err, Error::ConnectionLost { .. }),
        "expected ConnectionLost, got {err}"
    );
    state
        .wait_for(|s| matches!(s, ConnectionState::Connecting { .. }))
        .await
        .expect("reconnecting");
    let err = client.list_dbs().await.expect_err("not connected");
    assert!(err.is_connection_error(), "{err}");

    // Changes while the client cannot connect (the server serves only its unix socket).
    server.start_with_tcp(false);
    server.nbctl(&["ls-add", "while-away"]);
    server.nbctl(&["ls-del", "doomed"]);
    server.nbctl(&["set", "logical_switch", "before", "external_ids:k=v"]);
    server.appctl(&[
        "ovsdb-server/add-remote",
        &format!("ptcp:{}:127.0.0.1", server.port),
    ]);

    let snap = replica
        .wait_until(DEADLINE, |s| {
            names(s) == BTreeSet::from(["before".to_owned(), "while-away".to_owned()])
        })
        .await
        .expect("replica caught up");
    // Standalone servers keep no transaction history, so the replica was reloaded in full.
    assert_eq!(snap.generation(), 2);
    assert!(client.metrics().monitor_reloads >= 2);
    tokio::time::timeout(DEADLINE, async {
        while !matches!(
            events.recv().await.expect("event"),
            ReplicaEvent::Reset { generation: 2, .. }
        ) {}
    })
    .await
    .expect("consumers are told about the reload");
    // Monitors are restored before the connection is published.
    client.wait_connected(DEADLINE).await.expect("connected");
    let schema = client.get_schema(nb::DATABASE).await.expect("schema");
    assert_eq!(
        replica_content(&replica),
        server_content(&client, &schema, replica.spec()).await
    );
    let ConnectionState::Connected { session, .. } = client.state() else {
        panic!("not connected: {:?}", client.state())
    };
    assert_eq!(session, 2);
    assert_eq!(client.metrics().connections_lost, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_server_echo_probes() {
    let dir = tempdir();
    let server =
        Server::standalone_nb_with(dir.path(), &["db:OVN_Northbound,NB_Global,connections"]);
    let probed_port = ovsdb_server::free_port();
    server.nbctl(&["init"]);
    server.nbctl(&[
        // ovsdb-server clamps probe intervals to at least 1 s.
        "--inactivity-probe=1000",
        "set-connection",
        &format!("ptcp:{probed_port}:127.0.0.1"),
    ]);
    eventually("the db-configured listener", || async {
        std::net::TcpStream::connect(("127.0.0.1", probed_port)).is_ok()
    })
    .await;
    // Our own probe off: only the server's echo requests keep the session alive (it drops a
    // session that does not answer within twice the interval).
    let client = Client::connect(
        config(ovsdb::Remote::Tcp {
            host: "127.0.0.1".into(),
            port: probed_port,
        })
        .inactivity_probe(None),
        DEADLINE,
    )
    .await
    .expect("connect");
    // Three probes answered: the session outlived several probe rounds.
    eventually("three echo requests answered", || async {
        client.metrics().echo_requests_answered >= 3
    })
    .await;
    client.echo().await.expect("still connected");
    assert_eq!(client.metrics().connections_lost, 0);
    assert_eq!(client.metrics().probes_sent, 0);
    assert!(matches!(
        client.state(),
        ConnectionState::Connected { session: 1, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_drops_connection() {
    let dir = tempdir();
    let server = Server::standalone_nb(dir.path());
    let client = Client::connect(config(server.unix()).max_message_size(4096), DEADLINE)
        .await
        .expect("connect");
    // The NB schema is far larger than 4 KiB.
    let err = client
        .get_schema(nb::DATABASE)
        .await
        .expect_err("too large");
    let Error::ConnectionLost { reason, .. } = &err else {
        panic!("expected ConnectionLost, got {err}")
    };
    assert!(reason.contains("4096-byte limit"), "{reason}");
    // The client reconnects and small requests keep working.
    client.wait_connected(DEADLINE).await.expect("reconnected");
    eventually("list_dbs after reconnect", || async {
        client.list_dbs().await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_of_unknown_table_fails_cleanly() {
    let dir = tempdir();
    let server = Server::standalone_nb(dir.path());
    let client = connect(server.unix()).await;
    let err = client
        .monitor(MonitorSpec::new(nb::DATABASE).table("No_Such_Table"))
        .await
        .expect_err("unknown table");
    assert!(err.to_string().contains("No_Such_Table"), "{err}");
    // The connection is unaffected.
    client.echo().await.expect("echo");
    assert_eq!(client.metrics().connections_lost, 0);
}
