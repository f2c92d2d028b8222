//! The embedded engine: one SQLite connection behind a mutex, used from blocking threads.
//!
//! One connection is enough for a region of a handful of sites and makes every operation trivially
//! serial; it is also the only way `:memory:` can work (each connection to it is a separate database).
//! WAL with `synchronous=FULL`: a committed join or report survives power loss, because a node drops
//! acknowledged reports from its queue and a lost token consumption would let a token be used twice.
//! Check-and-change operations run in `BEGIN IMMEDIATE` transactions, so they take the write lock
//! before they read and another process opening the same file cannot interleave.

use super::columns::{
    self, EncodedReport, RELEASE_COLUMNS, ROLLOUT_COLUMNS, ReleaseRow, RolloutRow, SITE_COLUMNS,
    SiteRow,
};
use super::migrations::{self, CREATE_SCHEMA_MIGRATIONS};
use super::rules::{self, TokenRow};
use super::{
    CertificateRecord, Delivery, DesiredChange, ReleaseRecord, RolloutRecord, RolloutStep,
    RolloutSwitch, Site, SiteState, StoreError, StoredReport, Withdrawal,
};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use scs_edge_proto::{DesiredState, Report, ReportAck};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite store. Clones share the one connection.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The database file, or `:memory:`.
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Attaches the operation to an engine error, so the log says what the store was doing.
trait During<T> {
    fn during(self, operation: &'static str) -> Result<T, StoreError>;
}

impl<T> During<T> for rusqlite::Result<T> {
    fn during(self, operation: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Database {
            operation,
            message: e.to_string(),
        })
    }
}

impl SqliteStore {
    /// Opens (creating it and its parent directories when needed) the database at `path`, or a
    /// private in-memory one for `:memory:`, and applies pending migrations.
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path))
            .await
            .map_err(|e| StoreError::Database {
                operation: "open",
                message: format!("the opening task failed: {e}"),
            })?
    }

    fn open_blocking(path: &str) -> Result<Self, StoreError> {
        const OP: &str = "open";
        let conn = if path == ":memory:" {
            Connection::open_in_memory().during(OP)?
        } else {
            if path.is_empty() {
                return Err(StoreError::UnsupportedUrl("sqlite:".into()));
            }
            if let Some(parent) = Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Database {
                    operation: OP,
                    message: format!("cannot create {}: {e}", parent.display()),
                })?;
            }
            Connection::open(path).map_err(|e| StoreError::Database {
                operation: OP,
                message: format!("{path}: {e}"),
            })?
        };
        configure(&conn).during(OP)?;
        let mut conn = conn;
        migrate(&mut conn)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: PathBuf::from(path),
                conn: Mutex::new(conn),
            }),
        })
    }

    /// Runs `f` on the connection on a blocking thread: SQLite calls block on disk and on other
    /// processes' locks, which must not stall the async runtime.
    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock dropped its transaction, which rolled back: the
            // connection is still sound.
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Database {
            operation,
            message: format!("the store task failed: {e}"),
        })?
    }

    /// See [`super::Store::add_site`].
    pub async fn add_site(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        now: Timestamp,
    ) -> Result<Site, StoreError> {
        const OP: &str = "add site";
        let name = name.to_owned();
        let labels = columns::to_json(labels, OP)?;
        let now = columns::time_to_db(now);
        self.run(OP, move |conn| {
            let tx = immediate(conn, OP)?;
            let inserted = tx
                .execute(
                    "INSERT INTO sites (name, state, created_at, last_seq, desired_generation, labels) \
                     VALUES (?1, 'pending', ?2, 0, 1, ?3) ON CONFLICT (name) DO NOTHING",
                    params![name, now, labels],
                )
                .during(OP)?;
            if inserted == 0 {
                return Err(StoreError::SiteExists(name));
            }
            let site = required_site(&tx, &name, OP)?;
            tx.commit().during(OP)?;
            Ok(site)
        })
        .await
    }

    /// See [`super::Store::list_sites`].
    pub async fn list_sites(&self) -> Result<Vec<Site>, StoreError> {
        const OP: &str = "list sites";
        self.run(OP, move |conn| {
            // BINARY collation: byte order, the same order PostgreSQL gives with COLLATE "C".
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {SITE_COLUMNS} FROM sites ORDER BY name"))
                .during(OP)?;
            let rows = stmt
                .query_map([], site_row)
                .during(OP)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .during(OP)?;
            rows.into_iter().map(|row| row.decode(OP)).collect()
        })
        .await
    }

    /// See [`super::Store::site`].
    pub async fn site(&self, name: &str) -> Result<Option<Site>, StoreError> {
        const OP: &str = "read site";
        let name = name.to_owned();
        self.run(OP, move |conn| load_site(conn, &name, OP)).await
    }

    /// See [`super::Store::decommission_site`].
    pub async fn decommission_site(&self, name: &str, now: Timestamp) -> Result<Site, StoreError> {
        const OP: &str = "decommission site";
        let name = name.to_owned();
        let now = columns::time_to_db(now);
        self.run(OP, move |conn| {
            let tx = immediate(conn, OP)?;
            let site = required_site(&tx, &name, OP)?;
            if site.state == SiteState::Decommissioned {
                return Ok(site);
            }
            tx.execute(
                "UPDATE sites SET state = 'decommissioned' WHERE name = ?1",
                params![name],
            )
            .during(OP)?;
            tx.execute(
                "UPDATE certificates SET revoked_at = ?2 WHERE site = ?1 AND revoked_at IS NULL",
                params![name, now],
            )
            .during(OP)?;
            tx.execute(
                "DELETE FROM join_tokens WHERE site = ?1 AND used_at IS NULL",
                params![name],
            )
            .during(OP)?;
            let site = required_site(&tx, &name, OP)?;
            tx.commit().during(OP)?;
            Ok(site)
        })
        .await
    }

    /// See [`super::Store::add_join_token`].
    pub async fn add_join_token(
        &self,
        token_hash: &str,
        site: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        const OP: &str = "add join token";
        let token_hash = token_hash.to_owned();
        let site = site.to_owned();
        let expires_at = columns::time_to_db(expires_at);
        let now = columns::time_to_db(now);
        self.run(OP, move |conn| {
            let tx = immediate(conn, OP)?;
            rules::ensure_changeable(&site, site_state(&tx, &site, OP)?)?;
            tx.execute(
                "INSERT INTO join_tokens (token_hash, site, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![token_hash, site, now, expires_at],
            )
            .during(OP)?;
            tx.commit().during(OP)
        })
        .await
    }

    /// See [`super::Store::join`].
    pub async fn join(
        &self,
        token_hash: &str,
        site: &str,
        certificate: &CertificateRecord,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        const OP: &str = "join";
        rules::ensure_names(certificate, site, OP)?;
        let token_hash = token_hash.to_owned();
        let site = site.to_owned();
        let certificate = certificate.clone();
        let now = columns::time_to_db(now);
        self.run(OP, move |conn| {
            let tx = immediate(conn, OP)?;
            let token = tx
                .query_row(
                    "SELECT site, expires_at, used_at FROM join_tokens WHERE token_hash = ?1",
                    params![token_hash],
                    |row| {
                        Ok(TokenRow {
                            site: row.get(0)?,
                            expires_at: row.get(1)?,
                            used_at: row.get(2)?,
                        })
                    },
                )
                .optional()
                .during(OP)?;
            rules::check_token(token.as_ref(), &site, now)?;
            rules::ensure_changeable(&site, site_state(&tx, &site, OP)?)?;
            tx.execute(
                "UPDATE join_tokens SET used_at = ?2 WHERE token_hash = ?1",
                params![token_hash, now],
            )
            .during(OP)?;
            insert_certificate(&tx, &certificate, OP)?;
            tx.execute(
                "UPDATE sites SET state = 'active', joined_at = COALESCE(joined_at, ?2) \
                 WHERE name = ?1",
                params![site, now],
            )
            .during(OP)?;
            tx.commit().during(OP)
        })
        .await
    }

    /// See [`super::Store::add_certificate`].
    pub async fn add_certificate(&self, certificate: &CertificateRecord) -> Result<(), StoreError> {
        const OP: &str = "add certificate";
        let certificate = certificate.clone();
        self.run(OP, move |conn| {
            let tx = immediate(conn, OP)?;
            rules::ensure_changeable(&certificate.site, site_state(&tx, &certificate.site, OP)?)?;
            insert_certificate(&tx, &certificate, OP)?;
            tx.commit().during(OP)
        })
        .await
    }

    /// See [`super::Store::certificate`].
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        const OP: &str = "read certificate";
        let serial = serial.to_owned();
        self.run(OP, move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT serial, site, not_after, revoked_at FROM certificates WHERE serial = ?1",
                )
                .during(OP)?
                .query_row(params![serial], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, Option<i64>>(3)?,
                    ))
                })
                .optional()
                .during(OP)?;
            row.map(|(serial, site, not_after, revoked_at)| {
                Ok(CertificateRecord {
                    serial,
                    site,
                    not_after: columns::time_from_db(not_after, "certificates.not_after", OP)?,
                    revoked_at: revoked_at
                        .map(|t| columns::time_from_db(t, "certificates.revoked_at", OP))
                        .transpose()?,
                })
            })
            .transpose()
        })
        .await
    }

    /// See [`super::Store::append_reports`].
    pub async fn append_reports(
        &self,
        site: &str,
        reports: &[Report],
        now: Timestamp,
    ) -> Result<ReportAck, StoreError> {
        const OP: &str = "append reports";
        let site = site.to_owned();
        let encoded = reports
            .iter()
            .map(|r| EncodedReport::encode(r, OP))
            .collect::<Result<Vec<_>, _>>()?;
        let now = columns::time_to_db(now);
        self.run(OP, move |conn| {
            let tx = immediate(conn, OP)?;
            let (state, last_seq, generation) = tx
                .query_row(
                    "SELECT state, last_seq, desired_generation FROM sites WHERE name = ?1",
                    params![site],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, i64>(2)?,
                        ))
                    },
                )
                .optional()
                .during(OP)?
                .ok_or_else(|| StoreError::UnknownSite(site.clone()))?;
            rules::ensure_changeable(&site, columns::state_from_db(&state, OP)?)?;
            let last_seq = columns::count_from_db(last_seq, "sites.last_seq", OP)?;
            let fresh = rules::new_reports(last_seq, &encoded, |r| r.seq)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO reports (site, seq, sent_at, received_at, body) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .during(OP)?;
                for report in &fresh {
                    insert
                        .execute(params![
                            site,
                            report.seq_db,
                            report.sent_at,
                            now,
                            report.body
                        ])
                        .during(OP)?;
                }
            }
            let acked_through = if let Some(newest) = fresh.last() {
                tx.execute(
                    "UPDATE sites SET last_seq = ?2, last_report = ?3, last_seen = ?4 \
                         WHERE name = ?1",
                    params![site, newest.seq_db, newest.body, now],
                )
                .during(OP)?;
                newest.seq
            } else {
                tx.execute(
                    "UPDATE sites SET last_seen = ?2 WHERE name = ?1",
                    params![site, now],
                )
                .during(OP)?;
                last_seq
            };
            tx.commit().during(OP)?;
            Ok(ReportAck {
                acked_through,
                desired_generation: columns::count_from_db(
                    generation,
                    "sites.desired_generation",
                    OP,
                )?,
            })
        })
        .await
    }

    /// See [`super::Store::recent_reports`].
    pub async fn recent_reports(
        &self,
        site: &str,
        limit: u32,
    ) -> Result<Vec<StoredReport>, StoreError> {
        const OP: &str = "read reports";
        let site = site.to_owned();
        self.run(OP, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .during(OP)?;
            site_state(&tx, &site, OP)?;
            let rows = tx
                .prepare_cached(
                    "SELECT received_at, body FROM reports WHERE site = ?1 \
                     ORDER BY seq DESC LIMIT ?2",
                )
                .during(OP)?
                .query_map(params![site, limit], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })
                .during(OP)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .during(OP)?;
            tx.finish().during(OP)?;
            rows.into_iter()
                .map(|(received_at, body)| {
                    Ok(StoredReport {
                        received_at: columns::time_from_db(received_at, "reports.received_at", OP)?,
                        report: columns::from_json(&body, "reports.body", OP)?,
                    })
                })
                .collect()
        })
        .await
    }

    /// See [`super::Store::change_desired`].
    pub async fn change_desired(
        &self,
        site: &str,
        change: &DesiredChange,
    ) -> Result<DesiredState, StoreError> {
        const OP: &str = "change desired state";
        let site = site.to_owned();
        let change = change.clone();
        self.run(OP, move |conn| {
            let tx = immediate(conn, OP)?;
            let desired = change_desired_in(&tx, &site, &change, OP)?;
            tx.commit().during(OP)?;
            Ok(desired)
        })
        .await
    }

    /// See [`super::Store::prune_reports`].
    pub async fn prune_reports(&self, before: Timestamp) -> Result<u64, StoreError> {
        const OP: &str = "prune reports";
        let before = columns::time_to_db(before);
        self.run(OP, move |conn| {
            let tx = immediate(conn, OP)?;
            let deleted = tx
                .execute(
                    "DELETE FROM reports WHERE received_at < ?1 \
                     AND seq < (SELECT last_seq FROM sites WHERE sites.name = reports.site)",
                    params![before],
                )
                .during(OP)?;
            tx.commit().during(OP)?;
            Ok(deleted as u64)
        })
        .await
    }

    /// See [`super::Store::add_releases`].
    pub async fn add_releases(&self, releases: &[ReleaseRecord]) -> Result<u64, StoreError> {
        const OP: &str = "add releases";
        let rows = releases
            .iter()
            .map(|release| ReleaseRow::encode(release, OP))
            .collect::<Result<Vec<_>, _>>()?;
        self.run(OP, move |conn| {
            let tx = immediate(conn, OP)?;
            let mut added = 0;
            for row in &rows {
                added += tx
                    .execute(
                        &format!(
                            "INSERT INTO releases ({RELEASE_COLUMNS}) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (version) DO NOTHING"
                        ),
                        params![
                            row.version,
                            row.manifest,
                            row.state,
                            row.published_at,
                            row.published_by,
                            row.withdrawn_at,
                            row.withdrawn_by,
                            row.withdraw_reason
                        ],
                    )
                    .during(OP)? as u64;
            }
            tx.commit().during(OP)?;
            Ok(added)
        })
        .await
    }

    /// See [`super::Store::releases`].
    pub async fn releases(&self) -> Result<Vec<ReleaseRecord>, StoreError> {
        const OP: &str = "list releases";
        self.run(OP, move |conn| {
            let rows = conn
                .prepare_cached(&format!("SELECT {RELEASE_COLUMNS} FROM releases"))
                .during(OP)?
                .query_map([], release_row)
                .during(OP)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .during(OP)?;
            rows.into_iter().map(|row| row.decode(OP)).collect()
        })
        .await
    }

    /// See [`super::Store::withdraw_release`].
    pub async fn withdraw_release(
        &self,
        version: &str,
        withdrawal: &Withdrawal,
    ) -> Result<ReleaseRecord, StoreError> {
        const OP: &str = "withdraw release";
        let version = version.to_owned();
        let at = columns::time_to_db(withdrawal.at);
        let (by, reason) = (withdrawal.by.clone(), withdrawal.reason.clone());
        self.run(OP, move |conn| {
            let tx = immediate(conn, OP)?;
            tx.execute(
                "UPDATE releases SET state = 'withdrawn', withdrawn_at = ?2, withdrawn_by = ?3, \
                 withdraw_reason = ?4 WHERE version = ?1 AND state = 'available'",
                params![version, at, by, reason],
            )
            .during(OP)?;
            let row = tx
                .query_row(
                    &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE version = ?1"),
                    params![version],
                    release_row,
                )
                .optional()
                .during(OP)?
                .ok_or_else(|| StoreError::UnknownRelease(version.clone()))?;
            tx.commit().during(OP)?;
            row.decode(OP)
        })
        .await
    }

    /// See [`super::Store::create_rollout`].
    pub async fn create_rollout(
        &self,
        rollout: &RolloutRecord,
        sites: &[String],
    ) -> Result<(), StoreError> {
        const OP: &str = "create rollout";
        let row = RolloutRow::encode(rollout, OP)?;
        let sites = sites.to_vec();
        self.run(OP, move |conn| {
            let tx = immediate(conn, OP)?;
            let exists = |sql: &str, key: &str| -> Result<bool, StoreError> {
                Ok(tx
                    .query_row(sql, params![key], |_| Ok(()))
                    .optional()
                    .during(OP)?
                    .is_some())
            };
            if exists("SELECT 1 FROM rollouts WHERE name = ?1", &row.name)? {
                return Err(StoreError::RolloutExists(row.name.clone()));
            }
            if !exists(
                "SELECT 1 FROM releases WHERE version = ?1",
                &row.target_version,
            )? {
                return Err(StoreError::UnknownRelease(row.target_version.clone()));
            }
            let mut overlap: Option<(String, Vec<String>)> = None;
            for site in &sites {
                required_site(&tx, site, OP)?;
                let other: Option<String> = tx
                    .query_row(
                        "SELECT rollout FROM rollout_sites WHERE site = ?1 AND active = 1",
                        params![site],
                        |r| r.get(0),
                    )
                    .optional()
                    .during(OP)?;
                if let Some(other) = other {
                    overlap
                        .get_or_insert_with(|| (other, Vec::new()))
                        .1
                        .push(site.clone());
                }
            }
            if let Some((rollout, sites)) = overlap {
                return Err(StoreError::RolloutOverlap { rollout, sites });
            }
            tx.execute(
                &format!(
                    "INSERT INTO rollouts ({ROLLOUT_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    row.name,
                    row.target_version,
                    row.plan,
                    row.state,
                    row.active,
                    row.revision,
                    row.created_at,
                    row.created_by,
                    row.updated_at
                ],
            )
            .during(OP)?;
            for site in &sites {
                tx.execute(
                    "INSERT INTO rollout_sites (rollout, site, active) VALUES (?1, ?2, 1)",
                    params![row.name, site],
                )
                .during(OP)?;
            }
            tx.commit().during(OP)?;
            Ok(())
        })
        .await
    }

    /// See [`super::Store::rollouts`].
    pub async fn rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        const OP: &str = "list rollouts";
        self.run(OP, move |conn| {
            let rows = conn
                .prepare_cached(&format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts"))
                .during(OP)?
                .query_map([], rollout_row)
                .during(OP)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .during(OP)?;
            rows.into_iter().map(|row| row.decode(OP)).collect()
        })
        .await
    }

    /// See [`super::Store::save_rollout_step`].
    pub async fn save_rollout_step(
        &self,
        name: &str,
        step: &RolloutStep,
    ) -> Result<u64, StoreError> {
        const OP: &str = "save rollout step";
        let name = name.to_owned();
        let step = step.clone();
        self.run(OP, move |conn| {
            let tx = immediate(conn, OP)?;
            let target: Option<String> = tx
                .query_row(
                    "SELECT target_version FROM rollouts WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()
                .during(OP)?;
            let mut target = target.ok_or_else(|| StoreError::UnknownRollout(name.clone()))?;
            if !step.offer.is_empty() {
                rules::offers_allowed(&switch_in(&tx, OP)?)?;
            }
            let revision = rules::next_revision(step.from_revision, OP)?;
            let updated = tx
                .execute(
                    "UPDATE rollouts SET state = ?3, active = ?4, revision = ?5, updated_at = ?6 \
                     WHERE name = ?1 AND revision = ?2",
                    params![
                        name,
                        columns::count_to_db(step.from_revision, OP)?,
                        step.state,
                        i64::from(step.active),
                        columns::count_to_db(revision, OP)?,
                        columns::time_to_db(step.at),
                    ],
                )
                .during(OP)?;
            if updated == 0 {
                return Err(StoreError::RolloutChanged(name));
            }
            if let Some(retarget) = &step.retarget {
                let new_target = &retarget.version;
                let published = tx
                    .query_row(
                        "SELECT 1 FROM releases WHERE version = ?1",
                        params![new_target],
                        |_| Ok(()),
                    )
                    .optional()
                    .during(OP)?
                    .is_some();
                if !published {
                    return Err(StoreError::UnknownRelease(new_target.clone()));
                }
                tx.execute(
                    "UPDATE rollouts SET target_version = ?2, plan = ?3 WHERE name = ?1",
                    params![name, new_target, retarget.plan],
                )
                .during(OP)?;
                target.clone_from(new_target);
            }
            for site in &step.offer {
                let current = required_site(&tx, site, OP)?;
                tx.execute(
                    "UPDATE rollout_sites SET previous_target = ?3 WHERE rollout = ?1 AND site = ?2",
                    params![name, site, current.desired.target_os_version],
                )
                .during(OP)?;
                change_desired_in(&tx, site, &rules::target_change(Some(target.clone())), OP)?;
            }
            for site in &step.take_back {
                let previous: Option<String> = tx
                    .query_row(
                        "SELECT previous_target FROM rollout_sites WHERE rollout = ?1 AND site = ?2",
                        params![name, site],
                        |r| r.get(0),
                    )
                    .optional()
                    .during(OP)?
                    .flatten();
                change_desired_in(&tx, site, &rules::target_change(previous), OP)?;
            }
            if !step.active {
                tx.execute(
                    "UPDATE rollout_sites SET active = 0 WHERE rollout = ?1",
                    params![name],
                )
                .during(OP)?;
            }
            tx.commit().during(OP)?;
            Ok(revision)
        })
        .await
    }

    /// See [`super::Store::set_delivery`].
    pub async fn set_delivery(&self, site: &str, delivery: Delivery) -> Result<(), StoreError> {
        const OP: &str = "set delivery";
        let site = site.to_owned();
        self.run(OP, move |conn| {
            let updated = conn
                .execute(
                    "UPDATE sites SET delivery = ?2 WHERE name = ?1",
                    params![site, delivery.as_str()],
                )
                .during(OP)?;
            if updated == 0 {
                return Err(StoreError::UnknownSite(site));
            }
            Ok(())
        })
        .await
    }

    /// See [`super::Store::rollout_switch`].
    pub async fn rollout_switch(&self) -> Result<RolloutSwitch, StoreError> {
        const OP: &str = "read rollout switch";
        self.run(OP, move |conn| switch_in(conn, OP)).await
    }

    /// See [`super::Store::set_rollout_switch`].
    pub async fn set_rollout_switch(&self, switch: &RolloutSwitch) -> Result<(), StoreError> {
        const OP: &str = "set rollout switch";
        let switch = switch.clone();
        self.run(OP, move |conn| {
            conn.execute(
                "UPDATE rollout_switch SET engaged = ?1, changed_at = ?2, changed_by = ?3, \
                 reason = ?4 WHERE id = 1",
                params![
                    i64::from(switch.engaged),
                    columns::time_to_db(switch.changed_at),
                    switch.changed_by,
                    switch.reason
                ],
            )
            .during(OP)?;
            Ok(())
        })
        .await
    }
}

/// The rollout switch as `conn` (or a transaction on it) sees it.
fn switch_in(conn: &Connection, operation: &'static str) -> Result<RolloutSwitch, StoreError> {
    let (engaged, changed_at, changed_by, reason): (i64, i64, String, String) = conn
        .query_row(
            "SELECT engaged, changed_at, changed_by, reason FROM rollout_switch WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .during(operation)?;
    Ok(RolloutSwitch {
        engaged: engaged == 1,
        changed_at: columns::time_from_db(changed_at, "changed_at", operation)?,
        changed_by,
        reason,
    })
}

/// Durability and concurrency settings, applied to every connection.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Applies pending migrations, each in its own exclusive transaction that re-reads the version, so
/// two processes opening the same file at once apply each migration once.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    const OP: &str = "migrate";
    let applied = {
        let tx = immediate(conn, OP)?;
        tx.execute_batch(CREATE_SCHEMA_MIGRATIONS).during(OP)?;
        let applied = applied_version(&tx)?;
        tx.commit().during(OP)?;
        applied
    };
    for migration in migrations::pending(applied)? {
        let tx = immediate(conn, OP)?;
        if applied_version(&tx)? >= migration.version {
            continue;
        }
        tx.execute_batch(migration.sql)
            .and_then(|()| {
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                    params![
                        migration.version,
                        migration.name,
                        columns::time_to_db(Timestamp::now())
                    ],
                )
            })
            .map_err(|e| StoreError::Database {
                operation: OP,
                message: format!("migration {} ({}): {e}", migration.version, migration.name),
            })?;
        tx.commit().during(OP)?;
        tracing::info!(
            engine = "sqlite",
            version = migration.version,
            name = migration.name,
            "store migrated"
        );
    }
    Ok(())
}

fn applied_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )
    .during("migrate")
}

/// A write transaction that holds the write lock from its first statement on, so what it reads
/// cannot change before it writes (a deferred one could fail to upgrade mid-way instead).
fn immediate<'c>(
    conn: &'c mut Connection,
    operation: &'static str,
) -> Result<Transaction<'c>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .during(operation)
}

/// Applies `change` to `site`'s desired state inside `tx`; the generation moves only when
/// something changed. The desired state after it.
fn change_desired_in(
    tx: &Transaction<'_>,
    site: &str,
    change: &DesiredChange,
    operation: &'static str,
) -> Result<DesiredState, StoreError> {
    let current = required_site(tx, site, operation)?;
    rules::ensure_changeable(site, current.state)?;
    let Some(desired) = rules::apply_change(&current.desired, change) else {
        return Ok(current.desired);
    };
    tx.execute(
        "UPDATE sites SET desired_generation = ?2, labels = ?3, target_os_version = ?4, \
         maintenance_window = ?5 WHERE name = ?1",
        params![
            site,
            columns::count_to_db(desired.generation, operation)?,
            columns::to_json(&desired.labels, operation)?,
            desired.target_os_version,
            desired.maintenance_window,
        ],
    )
    .during(operation)?;
    Ok(desired)
}

fn rollout_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RolloutRow> {
    Ok(RolloutRow {
        name: row.get(0)?,
        target_version: row.get(1)?,
        plan: row.get(2)?,
        state: row.get(3)?,
        active: row.get(4)?,
        revision: row.get(5)?,
        created_at: row.get(6)?,
        created_by: row.get(7)?,
        updated_at: row.get(8)?,
    })
}

fn release_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ReleaseRow> {
    Ok(ReleaseRow {
        version: row.get(0)?,
        manifest: row.get(1)?,
        state: row.get(2)?,
        published_at: row.get(3)?,
        published_by: row.get(4)?,
        withdrawn_at: row.get(5)?,
        withdrawn_by: row.get(6)?,
        withdraw_reason: row.get(7)?,
    })
}

fn site_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SiteRow> {
    Ok(SiteRow {
        name: row.get(0)?,
        state: row.get(1)?,
        created_at: row.get(2)?,
        joined_at: row.get(3)?,
        last_seen: row.get(4)?,
        last_seq: row.get(5)?,
        last_report: row.get(6)?,
        desired_generation: row.get(7)?,
        labels: row.get(8)?,
        target_os_version: row.get(9)?,
        maintenance_window: row.get(10)?,
        delivery: row.get(11)?,
    })
}

fn load_site(
    conn: &Connection,
    name: &str,
    operation: &'static str,
) -> Result<Option<Site>, StoreError> {
    conn.prepare_cached(&format!("SELECT {SITE_COLUMNS} FROM sites WHERE name = ?1"))
        .during(operation)?
        .query_row(params![name], site_row)
        .optional()
        .during(operation)?
        .map(|row| row.decode(operation))
        .transpose()
}

fn required_site(
    conn: &Connection,
    name: &str,
    operation: &'static str,
) -> Result<Site, StoreError> {
    load_site(conn, name, operation)?.ok_or_else(|| StoreError::UnknownSite(name.to_owned()))
}

/// The site's state, `UnknownSite` when there is none.
fn site_state(
    conn: &Connection,
    name: &str,
    operation: &'static str,
) -> Result<SiteState, StoreError> {
    let state: String = conn
        .query_row(
            "SELECT state FROM sites WHERE name = ?1",
            params![name],
            |row| row.get(0),
        )
        .optional()
        .during(operation)?
        .ok_or_else(|| StoreError::UnknownSite(name.to_owned()))?;
    columns::state_from_db(&state, operation)
}

fn insert_certificate(
    tx: &Transaction<'_>,
    certificate: &CertificateRecord,
    operation: &'static str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO certificates (serial, site, not_after, revoked_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            certificate.serial,
            certificate.site,
            columns::time_to_db(certificate.not_after),
            certificate.revoked_at.map(columns::time_to_db),
        ],
    )
    .during(operation)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_database_is_durable_wal_with_foreign_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/dir/region.db");
        let store = SqliteStore::open(path.to_str().expect("utf-8"))
            .await
            .expect("open");
        assert!(path.exists(), "parent directories are created");
        let conn = store.inner.conn.lock().expect("lock");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("sync");
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .expect("fk");
        let version = applied_version(&conn).expect("version");
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
        assert_eq!(fk, 1);
        assert_eq!(version, migrations::latest());
    }

    #[tokio::test]
    async fn a_database_from_a_newer_region_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("region.db");
        let path = path.to_str().expect("utf-8");
        drop(SqliteStore::open(path).await.expect("open"));
        let conn = Connection::open(path).expect("raw open");
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, 'future', 0)",
            params![migrations::latest() + 1],
        )
        .expect("insert");
        drop(conn);
        let err = SqliteStore::open(path).await.expect_err("refused");
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, .. } if found == migrations::latest() + 1),
            "{err}"
        );
    }
}
