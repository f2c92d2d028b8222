//! The agent's durable state: one SQLite database in the state directory.
//!
//! WAL journal with `synchronous=FULL`, so a committed write survives power loss; one transaction per
//! write (`BEGIN IMMEDIATE`, so a write never fails half-way on a lock upgrade); versioned migrations in
//! `migrations/`, applied in order at open, each in its own transaction. A database from a newer agent
//! is refused rather than misread.
//!
//! Several processes may open the store at once (the daemon and the admin CLI); `data_version` lets the
//! daemon notice commits made by another process.

mod migrations;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use rusqlite;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("cannot open store {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The database was written by a newer agent.
    #[error(
        "store {path} has schema version {found}, newer than this agent understands ({supported}); refusing to start"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// A migration failed; the database stays at the previous version.
    #[error("store migration {version} ({name}) failed: {source}")]
    Migration {
        /// Migration number.
        version: u32,
        /// Migration name.
        name: &'static str,
        /// Why.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("store query failed: {0}")]
    Query(#[from] rusqlite::Error),
    /// A JSON column did not hold what it should.
    #[error("store holds malformed {what}: {source}")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// Why.
        source: serde_json::Error,
    },
}

/// The SQLite store. Cheap to share behind an `Arc`; calls block and belong on blocking threads.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Separate connection for `data_version`: that pragma only reports commits made by *other*
    /// connections, which includes this process's writer connection.
    watcher: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open = |p: &Path| -> Result<Connection, StoreError> {
            let conn = Connection::open_with_flags(
                p,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|source| StoreError::Open {
                path: p.to_owned(),
                source,
            })?;
            configure(&conn).map_err(|source| StoreError::Open {
                path: p.to_owned(),
                source,
            })?;
            Ok(conn)
        };
        let mut conn = open(path)?;
        migrations::apply(&mut conn, path)?;
        let watcher = open(path)?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            watcher: Mutex::new(watcher),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one write transaction and commits; any error rolls everything back.
    pub fn write<T, E>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| E::from(StoreError::Query(e)))?;
        let value = f(&tx)?;
        tx.commit().map_err(|e| E::from(StoreError::Query(e)))?;
        Ok(value)
    }

    /// Runs `f` against a consistent snapshot (a deferred read transaction).
    pub fn read<T, E>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| E::from(StoreError::Query(e)))?;
        let value = f(&tx)?;
        tx.finish().map_err(|e| E::from(StoreError::Query(e)))?;
        Ok(value)
    }

    /// Changes whenever any connection, in this process or another, commits a write.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        let conn = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(conn.query_row("PRAGMA data_version", [], |row| row.get(0))?)
    }

    /// Proves the database answers: used by the liveness check.
    pub fn ping(&self) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.query_row("SELECT count(*) FROM settings", [], |row| {
            row.get::<_, i64>(0)
        })?;
        Ok(())
    }

    /// The schema version the store is at.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let conn = self.lock();
        Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
    }

    /// Reads a node setting.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read(|tx| {
            use rusqlite::OptionalExtension;
            Ok(tx
                .query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| {
                    row.get(0)
                })
                .optional()?)
        })
    }

    /// Returns the setting, storing `init()` first if it has none; atomic across processes.
    pub fn setting_or_init(
        &self,
        key: &str,
        init: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                [key, &init()],
            )?;
            Ok(
                tx.query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| {
                    row.get(0)
                })?,
            )
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock dropped its transaction, which rolled back: the connection is fine.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Decodes a JSON column, naming it when it is malformed.
pub fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt { what, source })
}

/// Encodes a value for a JSON column.
pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serializing maps of strings and plain structs cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| String::from("null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_applies_all_migrations_and_sets_durable_pragmas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("agent.db")).expect("open");
        assert_eq!(
            store.schema_version().expect("version"),
            migrations::latest()
        );
        let conn = store.lock();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("sync");
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .expect("fk");
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
        assert_eq!(fk, 1);
    }

    #[test]
    fn reopening_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.db");
        let id = Store::open(&path)
            .expect("open")
            .setting_or_init("node_id", || "a".into())
            .expect("init");
        let store = Store::open(&path).expect("reopen");
        assert_eq!(
            store
                .setting_or_init("node_id", || "b".into())
                .expect("again"),
            id
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.db");
        drop(Store::open(&path).expect("open"));
        let conn = Connection::open(&path).expect("raw");
        conn.pragma_update(None, "user_version", migrations::latest() + 1)
            .expect("bump");
        drop(conn);
        assert!(matches!(Store::open(&path), Err(StoreError::TooNew { .. })));
    }

    #[test]
    fn failed_write_rolls_back_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("agent.db")).expect("open");
        let result: Result<(), StoreError> = store.write(|tx| {
            tx.execute("INSERT INTO settings (key, value) VALUES ('a', '1')", [])?;
            tx.execute("INSERT INTO settings (key, value) VALUES ('a', '2')", [])?; // duplicate key
            Ok(())
        });
        assert!(result.is_err());
        assert_eq!(store.setting("a").expect("read"), None);
    }

    #[test]
    fn upgrading_from_schema_1_keeps_server_nics_as_neutron_ports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.db");
        let conn = Connection::open(&path).expect("raw");
        conn.execute_batch(include_str!("migrations/0001_initial.sql"))
            .expect("schema 1");
        conn.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO images (id, name, disk_format, size_bytes, virtual_size, checksum_md5, hash_sha512, created_at)
                 VALUES ('i', 'img', 'raw', 1, 1, 'm', 's', 't');
             INSERT INTO servers (id, name, project_id, user_id, image_id, flavor_id, flavor, power_intent, status,
                 created_at, updated_at)
                 VALUES ('s', 'vm', 'p', 'u', 'i', 'f', '{}', 'running', 'ACTIVE', 't0', 't1');
             INSERT INTO ports (id, server_id, position, mac) VALUES ('port-a', 's', 0, 'fa:16:3e:00:00:01');",
        )
        .expect("schema 1 rows");
        drop(conn);
        let store = Store::open(&path).expect("migrate");
        assert_eq!(
            store.schema_version().expect("version"),
            migrations::latest()
        );
        let row: (String, String, String, String, i64, String) = store
            .read(|tx| {
                Ok::<_, StoreError>(tx.query_row(
                    "SELECT project_id, mac, device_owner, device_id, owned_by_server, server_id FROM ports WHERE id = 'port-a'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )?)
            })
            .expect("port kept");
        assert_eq!(
            row,
            (
                "p".into(),
                "fa:16:3e:00:00:01".into(),
                "compute:nova".into(),
                "s".into(),
                1,
                "s".into()
            )
        );
    }

    #[test]
    fn upgrading_from_schema_2_rebuilds_images_and_keeps_their_data_and_the_server_reference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.db");
        let conn = Connection::open(&path).expect("raw");
        conn.pragma_update(None, "foreign_keys", "ON").expect("fk");
        conn.execute_batch(include_str!("migrations/0001_initial.sql"))
            .expect("schema 1");
        conn.execute_batch(include_str!("migrations/0002_network.sql"))
            .expect("schema 2");
        conn.execute_batch(
            "PRAGMA user_version = 2;
             INSERT INTO images (id, name, disk_format, size_bytes, virtual_size, checksum_md5, hash_sha512,
                 min_disk_gb, min_ram_mb, visibility, properties, created_at)
                 VALUES ('used', 'debian', 'qcow2', 10, 1073741824, 'md5', 'sha', 2, 256, 'public',
                 '{\"os_distro\":\"debian\"}', '2026-01-02T03:04:05Z'),
                        ('free', 'cirros', 'raw', 5, 5, 'm2', 's2', 0, 0, 'private', '{}', '2026-01-03T00:00:00Z');
             INSERT INTO servers (id, name, project_id, user_id, image_id, flavor_id, flavor, power_intent, status,
                 created_at, updated_at)
                 VALUES ('s', 'vm', 'p', 'u', 'used', 'f', '{}', 'running', 'ACTIVE', 't0', 't1');",
        )
        .expect("schema 2 rows");
        drop(conn);

        let store = Store::open(&path).expect("migrate");
        assert_eq!(
            store.schema_version().expect("version"),
            migrations::latest()
        );
        type Row = (
            String,
            String,
            String,
            Option<String>,
            String,
            i64,
            String,
            String,
            String,
        );
        let rows: Vec<Row> = store
            .read(|tx| {
                let mut stmt = tx.prepare(
                    "SELECT id, status, visibility, owner, tags, protected, properties, created_at, updated_at
                     FROM images ORDER BY id",
                )?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?,
                            r.get(7)?, r.get(8)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, StoreError>(rows)
            })
            .expect("images kept");
        assert_eq!(
            rows,
            vec![
                (
                    "free".into(),
                    "active".into(),
                    "private".into(),
                    None,
                    "[]".into(),
                    0,
                    "{}".into(),
                    "2026-01-03T00:00:00Z".into(),
                    "2026-01-03T00:00:00Z".into()
                ),
                (
                    "used".into(),
                    "active".into(),
                    "public".into(),
                    None,
                    "[]".into(),
                    0,
                    "{\"os_distro\":\"debian\"}".into(),
                    "2026-01-02T03:04:05Z".into(),
                    "2026-01-02T03:04:05Z".into()
                ),
            ]
        );
        let (size, md5, min_ram): (i64, String, i64) = store
            .read(|tx| {
                Ok::<_, StoreError>(tx.query_row(
                    "SELECT size_bytes, checksum_md5, min_ram_mb FROM images WHERE id = 'used'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?)
            })
            .expect("data columns");
        assert_eq!((size, md5.as_str(), min_ram), (10, "md5", 256));

        let conn = store.lock();
        let violations: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .expect("check");
        assert_eq!(violations, 0);
        let parent: String = conn
            .query_row(
                "SELECT \"table\" FROM pragma_foreign_key_list('servers') WHERE \"from\" = 'image_id'",
                [],
                |r| r.get(0),
            )
            .expect("servers.image_id still has its foreign key");
        assert_eq!(parent, "images");
        // The foreign key is enforced: the used image cannot go, an unknown image cannot be named.
        assert!(
            conn.execute("DELETE FROM images WHERE id = 'used'", [])
                .is_err()
        );
        assert!(
            conn.execute(
                "INSERT INTO servers (id, name, project_id, user_id, image_id, flavor_id, flavor, power_intent,
                     status, created_at, updated_at)
                     VALUES ('s2', 'vm', 'p', 'u', 'nope', 'f', '{}', 'running', 'ACTIVE', 't0', 't1')",
                [],
            )
            .is_err()
        );
        conn.execute("DELETE FROM images WHERE id = 'free'", [])
            .expect("an unused image can go");
        // Members are new and cascade with their image.
        conn.execute(
            "INSERT INTO image_members (image_id, member, created_at, updated_at) VALUES ('used', 'p2', 't', 't')",
            [],
        )
        .expect("member");
    }

    #[test]
    fn data_version_moves_on_commits_from_other_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.db");
        let store = Store::open(&path).expect("open");
        let before = store.data_version().expect("v0");
        assert_eq!(store.data_version().expect("v0 again"), before);
        let other = Store::open(&path).expect("second process stand-in");
        other.setting_or_init("k", || "v".into()).expect("write");
        assert_ne!(store.data_version().expect("v1"), before);
    }
}
