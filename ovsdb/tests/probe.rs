//! The client's own inactivity probe against a peer that accepts connections and then never
//! says anything (a hung server, or a path that silently drops packets).

use std::time::Duration;

use ovsdb::{Client, ClientConfig, ConnectionState, Remote};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_detected_and_left() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accept and read everything, answer nothing.
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = accepted_tx.send(());
            tokio::spawn(async move {
                let mut buf = [0_u8; 1024];
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });

    let config = ClientConfig::new(vec![Remote::Tcp {
        host: "127.0.0.1".into(),
        port,
    }])
    .inactivity_probe(Some(Duration::from_millis(100)))
    .backoff(Duration::from_millis(10), Duration::from_millis(50));
    let client = Client::connect(config, Duration::from_secs(30))
        .await
        .expect("TCP connect succeeds");
    let mut state = client.state_watch();
    let lost = tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(|s| {
            matches!(s, ConnectionState::Connecting { last_error: Some(e), .. } if e.contains("echo probe"))
        }),
    )
    .await
    .expect("dead peer detected in time")
    .expect("state")
    .clone();
    assert!(matches!(lost, ConnectionState::Connecting { .. }));
    let metrics = client.metrics();
    assert!(metrics.probes_sent >= 1, "{metrics:?}");
    assert!(metrics.connections_lost >= 1, "{metrics:?}");
    // And it tries again.
    tokio::time::timeout(Duration::from_secs(30), async {
        accepted.recv().await;
        accepted.recv().await;
    })
    .await
    .expect("reconnect attempt");
    client.shutdown();
    client
        .state_watch()
        .wait_for(|s| *s == ConnectionState::Stopped)
        .await
        .expect("stopped");
}

#[tokio::test]
async fn no_remotes_is_a_config_error() {
    let err = Client::start(ClientConfig::new(vec![])).expect_err("no remotes");
    assert!(matches!(err, ovsdb::Error::Config(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_reports_not_connected() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let client = Client::start(
        ClientConfig::new(vec![Remote::Tcp {
            host: "127.0.0.1".into(),
            port,
        }])
        .backoff(Duration::from_millis(10), Duration::from_millis(50)),
    )
    .expect("start");
    let mut state = client.state_watch();
    state
        .wait_for(|s| matches!(s, ConnectionState::Connecting { attempt, .. } if *attempt >= 2))
        .await
        .expect("retrying");
    let err = client.list_dbs().await.expect_err("not connected");
    assert!(err.is_connection_error(), "{err}");
    assert!(err.to_string().contains("not connected"), "{err}");
    let err = client
        .wait_connected(Duration::from_millis(50))
        .await
        .expect_err("times out");
    assert!(matches!(err, ovsdb::Error::Timeout { .. }), "{err}");
}
