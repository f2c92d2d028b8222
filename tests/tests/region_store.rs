//! The region store's behavioural suite on both engines: every scenario of
//! `region/src/store/tests.rs` (compiled here unchanged) runs on SQLite in a temporary directory
//! (`scenarios::sqlite::*`) and on a real PostgreSQL server the harness starts (`postgres::*`), each
//! on a database of its own.

// The scenarios reach the store's types through `super::`, as they do inside the region crate.
use scs_edge_region::store::{
    CertificateRecord, Delivery, DesiredChange, ReleaseRecord, ReleaseState, Retarget,
    RolloutRecord, RolloutStep, RolloutSwitch, SiteState, Store, StoreError, StoredReport,
    TokenRefusal, Withdrawal,
};

#[macro_use]
#[path = "../../region/src/store/tests.rs"]
mod scenarios;

use scs_edge_tests::postgres::PostgresServer;

/// Runs each scenario on a fresh PostgreSQL database.
macro_rules! postgres_scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let database = PostgresServer::shared().create_database(stringify!($name));
                super::scenarios::$name(&database.url).await;
            }
        )*
    };
}

mod postgres {
    use super::PostgresServer;

    for_each_scenario!(postgres_scenarios);
}

/// The harness URL must name the socket and nothing else: `postgres://postgres@localhost/db?host=…`
/// would also list TCP `localhost:5432` first, and tokio-postgres tries hosts in order.
#[test]
fn the_harness_url_names_only_the_unix_socket() {
    use tokio_postgres::config::Host;
    let database = PostgresServer::shared().create_database("url");
    let config: tokio_postgres::Config = database.url.parse().expect("parses");
    assert_eq!(
        config.get_hosts(),
        [Host::Unix(database.socket_dir.clone())]
    );
    assert_eq!(config.get_ports(), [database.port]);
    assert_eq!(config.get_user(), Some("postgres"));
    assert_eq!(config.get_dbname(), Some(database.name.as_str()));
}

/// Regions starting at once against one empty database both come up, and the schema is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_migrate_once() {
    let database = PostgresServer::shared().create_database("concurrent_open");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = database.url.clone();
            tokio::spawn(async move { Store::open(&url).await })
        })
        .collect();
    for open in opens {
        open.await.expect("task").expect("open");
    }
    let (client, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("query");
    let versions: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    let expected: Vec<i64> = (1..=versions.len() as i64).collect();
    assert!(!versions.is_empty());
    assert_eq!(versions, expected, "each migration recorded once, in order");
}
