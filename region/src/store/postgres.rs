//! The engine for real fleets: PostgreSQL through a deadpool connection pool.
//!
//! Many region requests run at once here, so the check-and-change operations lock the site row
//! (`SELECT … FOR UPDATE`) before they read anything else: two deliveries for one site, or a join
//! racing a decommission, queue on that row and the second sees what the first committed (READ
//! COMMITTED re-reads the locked row), while different sites never wait on each other. Connections
//! are plain TCP or a unix socket without TLS: the region talks to a database on its own host or
//! network; a remote database belongs behind a local proxy or socket.

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
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use jiff::Timestamp;
use scs_edge_proto::{DesiredState, Report, ReportAck};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_postgres::{NoTls, Row, Transaction};

/// Connections the pool keeps at most: enough for a region's concurrent requests without crowding
/// PostgreSQL's default `max_connections` (100) when a few regions share one server.
const POOL_SIZE: usize = 16;
/// How long a request waits for a free connection, or for a new one, before failing instead of
/// hanging while the database is unreachable.
const POOL_TIMEOUT: Duration = Duration::from_secs(30);
/// Serialises migrations of regions starting at once against one database (any fixed value; this is
/// "scsedgrg" in ASCII).
const MIGRATION_LOCK: i64 = 0x7363_7365_6467_7267;

/// The PostgreSQL store. Clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may carry a password.
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .finish()
    }
}

/// Attaches the operation to an engine error, so the log says what the store was doing.
trait During<T> {
    fn during(self, operation: &'static str) -> Result<T, StoreError>;
}

impl<T> During<T> for Result<T, tokio_postgres::Error> {
    fn during(self, operation: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Database {
            operation,
            message: describe(&e),
        })
    }
}

/// tokio-postgres' `Display` says only "db error"; the server's message and SQLSTATE are what an
/// operator needs.
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut message = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            message.push_str(": ");
            message.push_str(detail);
        }
        return message;
    }
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

impl PostgresStore {
    /// Connects to the database the URL names (`postgres://user@host/db`, or a unix socket with
    /// `?host=/run/postgresql`) and applies pending migrations; fails when it cannot connect, so a
    /// misconfigured region stops at start rather than at its first request.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        const OP: &str = "open";
        let config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Database {
            operation: OP,
            message: format!("invalid PostgreSQL URL: {}", describe(&e)),
        })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Database {
                operation: OP,
                message: format!("cannot build the connection pool: {e}"),
            })?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(
        &self,
        operation: &'static str,
    ) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Database {
            operation,
            message: match e {
                PoolError::Backend(e) => describe(&e),
                other => other.to_string(),
            },
        })
    }

    /// Applies pending migrations, each in its own transaction under an advisory lock that also
    /// covers re-reading the version, so regions starting together apply each migration once.
    async fn migrate(&self) -> Result<(), StoreError> {
        const OP: &str = "migrate";
        let mut client = self.client(OP).await?;
        let applied = {
            let tx = client.transaction().await.during(OP)?;
            lock_migrations(&tx).await?;
            tx.batch_execute(CREATE_SCHEMA_MIGRATIONS)
                .await
                .during(OP)?;
            let applied = applied_version(&tx).await?;
            tx.commit().await.during(OP)?;
            applied
        };
        for migration in migrations::pending(applied)? {
            let tx = client.transaction().await.during(OP)?;
            lock_migrations(&tx).await?;
            if applied_version(&tx).await? >= migration.version {
                continue;
            }
            let applied = async {
                tx.batch_execute(migration.sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    &[
                        &migration.version,
                        &migration.name,
                        &columns::time_to_db(Timestamp::now()),
                    ],
                )
                .await
            }
            .await;
            applied.map_err(|e| StoreError::Database {
                operation: OP,
                message: format!(
                    "migration {} ({}): {}",
                    migration.version,
                    migration.name,
                    describe(&e)
                ),
            })?;
            tx.commit().await.during(OP)?;
            tracing::info!(
                engine = "postgresql",
                version = migration.version,
                name = migration.name,
                "store migrated"
            );
        }
        Ok(())
    }

    /// See [`super::Store::add_site`].
    pub async fn add_site(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        now: Timestamp,
    ) -> Result<Site, StoreError> {
        const OP: &str = "add site";
        let labels = columns::to_json(labels, OP)?;
        let now = columns::time_to_db(now);
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.during(OP)?;
        let inserted = tx
            .execute(
                "INSERT INTO sites (name, state, created_at, last_seq, desired_generation, labels) \
                 VALUES ($1, 'pending', $2, 0, 1, $3) ON CONFLICT (name) DO NOTHING",
                &[&name, &now, &labels],
            )
            .await
            .during(OP)?;
        if inserted == 0 {
            return Err(StoreError::SiteExists(name.to_owned()));
        }
        let site = required_site(&tx, name, Lock::No, OP).await?;
        tx.commit().await.during(OP)?;
        Ok(site)
    }

    /// See [`super::Store::list_sites`].
    pub async fn list_sites(&self) -> Result<Vec<Site>, StoreError> {
        const OP: &str = "list sites";
        let client = self.client(OP).await?;
        // COLLATE "C": byte order, as SQLite sorts; the database's default collation (often
        // en_US.UTF-8) would ignore hyphens and order `a-c` between `ab` and `ad`.
        let rows = client
            .query(
                &format!("SELECT {SITE_COLUMNS} FROM sites ORDER BY name COLLATE \"C\""),
                &[],
            )
            .await
            .during(OP)?;
        rows.iter()
            .map(|row| site_row(row).during(OP)?.decode(OP))
            .collect()
    }

    /// See [`super::Store::site`].
    pub async fn site(&self, name: &str) -> Result<Option<Site>, StoreError> {
        const OP: &str = "read site";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.during(OP)?;
        let site = load_site(&tx, name, Lock::No, OP).await?;
        tx.commit().await.during(OP)?;
        Ok(site)
    }

    /// See [`super::Store::decommission_site`].
    pub async fn decommission_site(&self, name: &str, now: Timestamp) -> Result<Site, StoreError> {
        const OP: &str = "decommission site";
        let now = columns::time_to_db(now);
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.during(OP)?;
        let site = required_site(&tx, name, Lock::ForUpdate, OP).await?;
        if site.state == SiteState::Decommissioned {
            return Ok(site);
        }
        tx.execute(
            "UPDATE sites SET state = 'decommissioned' WHERE name = $1",
            &[&name],
        )
        .await
        .during(OP)?;
        tx.execute(
            "UPDATE certificates SET revoked_at = $2 WHERE site = $1 AND revoked_at IS NULL",
            &[&name, &now],
        )
        .await
        .during(OP)?;
        tx.execute(
            "DELETE FROM join_tokens WHERE site = $1 AND used_at IS NULL",
            &[&name],
        )
        .await
        .during(OP)?;
        let site = required_site(&tx, name, Lock::No, OP).await?;
        tx.commit().await.during(OP)?;
        Ok(site)
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
        let expires_at = columns::time_to_db(expires_at);
        let now = columns::time_to_db(now);
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.during(OP)?;
        let state = site_state(&tx, site, OP)
            .await?
            .ok_or_else(|| StoreError::UnknownSite(site.to_owned()))?;
        rules::ensure_changeable(site, state)?;
        tx.execute(
            "INSERT INTO join_tokens (token_hash, site, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
            &[&token_hash, &site, &now, &expires_at],
        )
        .await
        .during(OP)?;
        tx.commit().await.during(OP)
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
        let now = columns::time_to_db(now);
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.during(OP)?;
        // The site row first (as every other writer of this site locks it), then the token.
        let state = site_state(&tx, site, OP).await?;
        let token = tx
            .query_opt(
                "SELECT site, expires_at, used_at FROM join_tokens WHERE token_hash = $1 \
                 FOR UPDATE",
                &[&token_hash],
            )
            .await
            .during(OP)?
            .map(|row| {
                Ok::<_, tokio_postgres::Error>(TokenRow {
                    site: row.try_get(0)?,
                    expires_at: row.try_get(1)?,
                    used_at: row.try_get(2)?,
                })
            })
            .transpose()
            .during(OP)?;
        rules::check_token(token.as_ref(), site, now)?;
        let state = state.ok_or_else(|| StoreError::UnknownSite(site.to_owned()))?;
        rules::ensure_changeable(site, state)?;
        tx.execute(
            "UPDATE join_tokens SET used_at = $2 WHERE token_hash = $1",
            &[&token_hash, &now],
        )
        .await
        .during(OP)?;
        insert_certificate(&tx, certificate, OP).await?;
        tx.execute(
            "UPDATE sites SET state = 'active', joined_at = COALESCE(joined_at, $2) WHERE name = $1",
            &[&site, &now],
        )
        .await
        .during(OP)?;
        tx.commit().await.during(OP)
    }

    /// See [`super::Store::add_certificate`].
    pub async fn add_certificate(&self, certificate: &CertificateRecord) -> Result<(), StoreError> {
        const OP: &str = "add certificate";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.during(OP)?;
        let state = site_state(&tx, &certificate.site, OP)
            .await?
            .ok_or_else(|| StoreError::UnknownSite(certificate.site.clone()))?;
        rules::ensure_changeable(&certificate.site, state)?;
        insert_certificate(&tx, certificate, OP).await?;
        tx.commit().await.during(OP)
    }

    /// See [`super::Store::certificate`].
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        const OP: &str = "read certificate";
        let client = self.client(OP).await?;
        let Some(row) = client
            .query_opt(
                "SELECT serial, site, not_after, revoked_at FROM certificates WHERE serial = $1",
                &[&serial],
            )
            .await
            .during(OP)?
        else {
            return Ok(None);
        };
        let not_after: i64 = row.try_get(2).during(OP)?;
        let revoked_at: Option<i64> = row.try_get(3).during(OP)?;
        Ok(Some(CertificateRecord {
            serial: row.try_get(0).during(OP)?,
            site: row.try_get(1).during(OP)?,
            not_after: columns::time_from_db(not_after, "certificates.not_after", OP)?,
            revoked_at: revoked_at
                .map(|t| columns::time_from_db(t, "certificates.revoked_at", OP))
                .transpose()?,
        }))
    }

    /// See [`super::Store::append_reports`].
    pub async fn append_reports(
        &self,
        site: &str,
        reports: &[Report],
        now: Timestamp,
    ) -> Result<ReportAck, StoreError> {
        const OP: &str = "append reports";
        let encoded = reports
            .iter()
            .map(|r| EncodedReport::encode(r, OP))
            .collect::<Result<Vec<_>, _>>()?;
        let now = columns::time_to_db(now);
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.during(OP)?;
        let row = tx
            .query_opt(
                "SELECT state, last_seq, desired_generation FROM sites WHERE name = $1 FOR UPDATE",
                &[&site],
            )
            .await
            .during(OP)?
            .ok_or_else(|| StoreError::UnknownSite(site.to_owned()))?;
        let state: String = row.try_get(0).during(OP)?;
        let last_seq: i64 = row.try_get(1).during(OP)?;
        let generation: i64 = row.try_get(2).during(OP)?;
        rules::ensure_changeable(site, columns::state_from_db(&state, OP)?)?;
        let last_seq = columns::count_from_db(last_seq, "sites.last_seq", OP)?;
        let fresh = rules::new_reports(last_seq, &encoded, |r| r.seq)?;
        if !fresh.is_empty() {
            let insert = tx
                .prepare(
                    "INSERT INTO reports (site, seq, sent_at, received_at, body) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .await
                .during(OP)?;
            for report in &fresh {
                tx.execute(
                    &insert,
                    &[&site, &report.seq_db, &report.sent_at, &now, &report.body],
                )
                .await
                .during(OP)?;
            }
        }
        let acked_through = if let Some(newest) = fresh.last() {
            tx.execute(
                "UPDATE sites SET last_seq = $2, last_report = $3, last_seen = $4 \
                     WHERE name = $1",
                &[&site, &newest.seq_db, &newest.body, &now],
            )
            .await
            .during(OP)?;
            newest.seq
        } else {
            tx.execute(
                "UPDATE sites SET last_seen = $2 WHERE name = $1",
                &[&site, &now],
            )
            .await
            .during(OP)?;
            last_seq
        };
        tx.commit().await.during(OP)?;
        Ok(ReportAck {
            acked_through,
            desired_generation: columns::count_from_db(generation, "sites.desired_generation", OP)?,
        })
    }

    /// See [`super::Store::recent_reports`].
    pub async fn recent_reports(
        &self,
        site: &str,
        limit: u32,
    ) -> Result<Vec<StoredReport>, StoreError> {
        const OP: &str = "read reports";
        let mut client = self.client(OP).await?;
        // REPEATABLE READ: the existence check and the read see one snapshot.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .during(OP)?;
        if site_state_unlocked(&tx, site, OP).await?.is_none() {
            return Err(StoreError::UnknownSite(site.to_owned()));
        }
        let rows = tx
            .query(
                "SELECT received_at, body FROM reports WHERE site = $1 ORDER BY seq DESC LIMIT $2",
                &[&site, &i64::from(limit)],
            )
            .await
            .during(OP)?;
        tx.commit().await.during(OP)?;
        rows.iter()
            .map(|row| {
                let received_at: i64 = row.try_get(0).during(OP)?;
                let body: String = row.try_get(1).during(OP)?;
                Ok(StoredReport {
                    received_at: columns::time_from_db(received_at, "reports.received_at", OP)?,
                    report: columns::from_json(&body, "reports.body", OP)?,
                })
            })
            .collect()
    }

    /// See [`super::Store::change_desired`].
    pub async fn change_desired(
        &self,
        site: &str,
        change: &DesiredChange,
    ) -> Result<DesiredState, StoreError> {
        const OP: &str = "change desired state";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.during(OP)?;
        let desired = change_desired_in(&tx, site, change, OP).await?;
        tx.commit().await.during(OP)?;
        Ok(desired)
    }

    /// See [`super::Store::create_rollout`].
    pub async fn create_rollout(
        &self,
        rollout: &RolloutRecord,
        sites: &[String],
    ) -> Result<(), StoreError> {
        const OP: &str = "create rollout";
        let row = RolloutRow::encode(rollout, OP)?;
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.during(OP)?;
        let exists = async |sql: &str, key: &str| -> Result<bool, StoreError> {
            Ok(tx.query_opt(sql, &[&key]).await.during(OP)?.is_some())
        };
        if exists("SELECT 1 FROM rollouts WHERE name = $1", &row.name).await? {
            return Err(StoreError::RolloutExists(row.name.clone()));
        }
        if !exists(
            "SELECT 1 FROM releases WHERE version = $1",
            &row.target_version,
        )
        .await?
        {
            return Err(StoreError::UnknownRelease(row.target_version.clone()));
        }
        let mut overlap: Option<(String, Vec<String>)> = None;
        for site in sites {
            required_site(&tx, site, Lock::ForUpdate, OP).await?;
            if let Some(other) = tx
                .query_opt(
                    "SELECT rollout FROM rollout_sites WHERE site = $1 AND active = 1",
                    &[site],
                )
                .await
                .during(OP)?
            {
                let other: String = other.try_get(0).during(OP)?;
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
                "INSERT INTO rollouts ({ROLLOUT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            &[
                &row.name,
                &row.target_version,
                &row.plan,
                &row.state,
                &row.active,
                &row.revision,
                &row.created_at,
                &row.created_by,
                &row.updated_at,
            ],
        )
        .await
        .during(OP)?;
        for site in sites {
            tx.execute(
                "INSERT INTO rollout_sites (rollout, site, active) VALUES ($1, $2, 1)",
                &[&row.name, site],
            )
            .await
            .during(OP)?;
        }
        tx.commit().await.during(OP)?;
        Ok(())
    }

    /// See [`super::Store::rollouts`].
    pub async fn rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        const OP: &str = "list rollouts";
        let client = self.client(OP).await?;
        let rows = client
            .query(&format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts"), &[])
            .await
            .during(OP)?;
        rows.iter()
            .map(|row| rollout_row(row, OP)?.decode(OP))
            .collect()
    }

    /// See [`super::Store::save_rollout_step`].
    pub async fn save_rollout_step(
        &self,
        name: &str,
        step: &RolloutStep,
    ) -> Result<u64, StoreError> {
        const OP: &str = "save rollout step";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.during(OP)?;
        let mut target: String = tx
            .query_opt(
                "SELECT target_version FROM rollouts WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .await
            .during(OP)?
            .ok_or_else(|| StoreError::UnknownRollout(name.to_owned()))?
            .try_get(0)
            .during(OP)?;
        let revision = rules::next_revision(step.from_revision, OP)?;
        let updated = tx
            .execute(
                "UPDATE rollouts SET state = $3, active = $4, revision = $5, updated_at = $6 \
                 WHERE name = $1 AND revision = $2",
                &[
                    &name,
                    &columns::count_to_db(step.from_revision, OP)?,
                    &step.state,
                    &i64::from(step.active),
                    &columns::count_to_db(revision, OP)?,
                    &columns::time_to_db(step.at),
                ],
            )
            .await
            .during(OP)?;
        if updated == 0 {
            return Err(StoreError::RolloutChanged(name.to_owned()));
        }
        if !step.offer.is_empty() {
            // FOR SHARE: engaging the switch (an UPDATE of this row) waits for this step to
            // commit, and a step after it sees it engaged.
            let row = tx
                .query_one(&format!("{SWITCH_QUERY} FOR SHARE"), &[])
                .await
                .during(OP)?;
            rules::offers_allowed(&switch_row(&row, OP)?)?;
        }
        if let Some(retarget) = &step.retarget {
            let new_target = &retarget.version;
            if tx
                .query_opt("SELECT 1 FROM releases WHERE version = $1", &[new_target])
                .await
                .during(OP)?
                .is_none()
            {
                return Err(StoreError::UnknownRelease(new_target.clone()));
            }
            tx.execute(
                "UPDATE rollouts SET target_version = $2, plan = $3 WHERE name = $1",
                &[&name, new_target, &retarget.plan],
            )
            .await
            .during(OP)?;
            target.clone_from(new_target);
        }
        for site in &step.offer {
            let current = required_site(&tx, site, Lock::ForUpdate, OP).await?;
            tx.execute(
                "UPDATE rollout_sites SET previous_target = $3 WHERE rollout = $1 AND site = $2",
                &[&name, site, &current.desired.target_os_version],
            )
            .await
            .during(OP)?;
            change_desired_in(&tx, site, &rules::target_change(Some(target.clone())), OP).await?;
        }
        for site in &step.take_back {
            let previous: Option<String> = match tx
                .query_opt(
                    "SELECT previous_target FROM rollout_sites WHERE rollout = $1 AND site = $2",
                    &[&name, site],
                )
                .await
                .during(OP)?
            {
                Some(row) => row.try_get(0).during(OP)?,
                None => None,
            };
            change_desired_in(&tx, site, &rules::target_change(previous), OP).await?;
        }
        if !step.active {
            tx.execute(
                "UPDATE rollout_sites SET active = 0 WHERE rollout = $1",
                &[&name],
            )
            .await
            .during(OP)?;
        }
        tx.commit().await.during(OP)?;
        Ok(revision)
    }

    /// See [`super::Store::set_delivery`].
    pub async fn set_delivery(&self, site: &str, delivery: Delivery) -> Result<(), StoreError> {
        const OP: &str = "set delivery";
        let client = self.client(OP).await?;
        let updated = client
            .execute(
                "UPDATE sites SET delivery = $2 WHERE name = $1",
                &[&site, &delivery.as_str()],
            )
            .await
            .during(OP)?;
        if updated == 0 {
            return Err(StoreError::UnknownSite(site.to_owned()));
        }
        Ok(())
    }

    /// See [`super::Store::rollout_switch`].
    pub async fn rollout_switch(&self) -> Result<RolloutSwitch, StoreError> {
        const OP: &str = "read rollout switch";
        let client = self.client(OP).await?;
        let row = client.query_one(SWITCH_QUERY, &[]).await.during(OP)?;
        switch_row(&row, OP)
    }

    /// See [`super::Store::set_rollout_switch`].
    pub async fn set_rollout_switch(&self, switch: &RolloutSwitch) -> Result<(), StoreError> {
        const OP: &str = "set rollout switch";
        let client = self.client(OP).await?;
        client
            .execute(
                "UPDATE rollout_switch SET engaged = $1, changed_at = $2, changed_by = $3, \
                 reason = $4 WHERE id = 1",
                &[
                    &i64::from(switch.engaged),
                    &columns::time_to_db(switch.changed_at),
                    &switch.changed_by,
                    &switch.reason,
                ],
            )
            .await
            .during(OP)?;
        Ok(())
    }

    /// See [`super::Store::prune_reports`].
    pub async fn prune_reports(&self, before: Timestamp) -> Result<u64, StoreError> {
        const OP: &str = "prune reports";
        let before = columns::time_to_db(before);
        let client = self.client(OP).await?;
        client
            .execute(
                "DELETE FROM reports WHERE received_at < $1 \
                 AND seq < (SELECT last_seq FROM sites WHERE sites.name = reports.site)",
                &[&before],
            )
            .await
            .during(OP)
    }

    /// See [`super::Store::add_releases`].
    pub async fn add_releases(&self, releases: &[ReleaseRecord]) -> Result<u64, StoreError> {
        const OP: &str = "add releases";
        let rows = releases
            .iter()
            .map(|release| ReleaseRow::encode(release, OP))
            .collect::<Result<Vec<_>, _>>()?;
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.during(OP)?;
        let mut added = 0;
        for row in &rows {
            added += tx
                .execute(
                    &format!(
                        "INSERT INTO releases ({RELEASE_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (version) DO NOTHING"
                    ),
                    &[
                        &row.version,
                        &row.manifest,
                        &row.state,
                        &row.published_at,
                        &row.published_by,
                        &row.withdrawn_at,
                        &row.withdrawn_by,
                        &row.withdraw_reason,
                    ],
                )
                .await
                .during(OP)?;
        }
        tx.commit().await.during(OP)?;
        Ok(added)
    }

    /// See [`super::Store::releases`].
    pub async fn releases(&self) -> Result<Vec<ReleaseRecord>, StoreError> {
        const OP: &str = "list releases";
        let client = self.client(OP).await?;
        let rows = client
            .query(&format!("SELECT {RELEASE_COLUMNS} FROM releases"), &[])
            .await
            .during(OP)?;
        rows.iter()
            .map(|row| release_row(row, OP)?.decode(OP))
            .collect()
    }

    /// See [`super::Store::withdraw_release`].
    pub async fn withdraw_release(
        &self,
        version: &str,
        withdrawal: &Withdrawal,
    ) -> Result<ReleaseRecord, StoreError> {
        const OP: &str = "withdraw release";
        let at = columns::time_to_db(withdrawal.at);
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.during(OP)?;
        tx.execute(
            "UPDATE releases SET state = 'withdrawn', withdrawn_at = $2, withdrawn_by = $3, \
             withdraw_reason = $4 WHERE version = $1 AND state = 'available'",
            &[&version, &at, &withdrawal.by, &withdrawal.reason],
        )
        .await
        .during(OP)?;
        let row = tx
            .query_opt(
                &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE version = $1"),
                &[&version],
            )
            .await
            .during(OP)?
            .ok_or_else(|| StoreError::UnknownRelease(version.to_owned()))?;
        let record = release_row(&row, OP)?.decode(OP)?;
        tx.commit().await.during(OP)?;
        Ok(record)
    }
}

/// Applies `change` to `site`'s desired state inside `tx` (the row locked); the generation moves
/// only when something changed. The desired state after it.
async fn change_desired_in(
    tx: &Transaction<'_>,
    site: &str,
    change: &DesiredChange,
    operation: &'static str,
) -> Result<DesiredState, StoreError> {
    let current = required_site(tx, site, Lock::ForUpdate, operation).await?;
    rules::ensure_changeable(site, current.state)?;
    let Some(desired) = rules::apply_change(&current.desired, change) else {
        return Ok(current.desired);
    };
    tx.execute(
        "UPDATE sites SET desired_generation = $2, labels = $3, target_os_version = $4, \
         maintenance_window = $5 WHERE name = $1",
        &[
            &site,
            &columns::count_to_db(desired.generation, operation)?,
            &columns::to_json(&desired.labels, operation)?,
            &desired.target_os_version,
            &desired.maintenance_window,
        ],
    )
    .await
    .during(operation)?;
    Ok(desired)
}

fn rollout_row(row: &Row, operation: &'static str) -> Result<RolloutRow, StoreError> {
    Ok(RolloutRow {
        name: row.try_get(0).during(operation)?,
        target_version: row.try_get(1).during(operation)?,
        plan: row.try_get(2).during(operation)?,
        state: row.try_get(3).during(operation)?,
        active: row.try_get(4).during(operation)?,
        revision: row.try_get(5).during(operation)?,
        created_at: row.try_get(6).during(operation)?,
        created_by: row.try_get(7).during(operation)?,
        updated_at: row.try_get(8).during(operation)?,
    })
}

fn release_row(row: &Row, operation: &'static str) -> Result<ReleaseRow, StoreError> {
    Ok(ReleaseRow {
        version: row.try_get(0).during(operation)?,
        manifest: row.try_get(1).during(operation)?,
        state: row.try_get(2).during(operation)?,
        published_at: row.try_get(3).during(operation)?,
        published_by: row.try_get(4).during(operation)?,
        withdrawn_at: row.try_get(5).during(operation)?,
        withdrawn_by: row.try_get(6).during(operation)?,
        withdraw_reason: row.try_get(7).during(operation)?,
    })
}

async fn lock_migrations(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .during("migrate")?;
    Ok(())
}

async fn applied_version(tx: &Transaction<'_>) -> Result<i64, StoreError> {
    tx.query_one(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        &[],
    )
    .await
    .and_then(|row| row.try_get(0))
    .during("migrate")
}

/// Whether a site read takes the row lock that serialises this site's check-and-change operations.
#[derive(Clone, Copy)]
enum Lock {
    No,
    ForUpdate,
}

fn site_row(row: &Row) -> Result<SiteRow, tokio_postgres::Error> {
    Ok(SiteRow {
        name: row.try_get(0)?,
        state: row.try_get(1)?,
        created_at: row.try_get(2)?,
        joined_at: row.try_get(3)?,
        last_seen: row.try_get(4)?,
        last_seq: row.try_get(5)?,
        last_report: row.try_get(6)?,
        desired_generation: row.try_get(7)?,
        labels: row.try_get(8)?,
        target_os_version: row.try_get(9)?,
        maintenance_window: row.try_get(10)?,
        delivery: row.try_get(11)?,
    })
}

async fn load_site(
    tx: &Transaction<'_>,
    name: &str,
    lock: Lock,
    operation: &'static str,
) -> Result<Option<Site>, StoreError> {
    let suffix = match lock {
        Lock::No => "",
        Lock::ForUpdate => " FOR UPDATE",
    };
    tx.query_opt(
        &format!("SELECT {SITE_COLUMNS} FROM sites WHERE name = $1{suffix}"),
        &[&name],
    )
    .await
    .during(operation)?
    .map(|row| site_row(&row).during(operation)?.decode(operation))
    .transpose()
}

async fn required_site(
    tx: &Transaction<'_>,
    name: &str,
    lock: Lock,
    operation: &'static str,
) -> Result<Site, StoreError> {
    load_site(tx, name, lock, operation)
        .await?
        .ok_or_else(|| StoreError::UnknownSite(name.to_owned()))
}

/// The site's state under the row lock, `None` when there is no such site.
async fn site_state(
    tx: &Transaction<'_>,
    name: &str,
    operation: &'static str,
) -> Result<Option<SiteState>, StoreError> {
    read_state(
        tx,
        "SELECT state FROM sites WHERE name = $1 FOR UPDATE",
        name,
        operation,
    )
    .await
}

/// The site's state without locking (for reads).
async fn site_state_unlocked(
    tx: &Transaction<'_>,
    name: &str,
    operation: &'static str,
) -> Result<Option<SiteState>, StoreError> {
    read_state(
        tx,
        "SELECT state FROM sites WHERE name = $1",
        name,
        operation,
    )
    .await
}

async fn read_state(
    tx: &Transaction<'_>,
    sql: &str,
    name: &str,
    operation: &'static str,
) -> Result<Option<SiteState>, StoreError> {
    let Some(row) = tx.query_opt(sql, &[&name]).await.during(operation)? else {
        return Ok(None);
    };
    let state: String = row.try_get(0).during(operation)?;
    columns::state_from_db(&state, operation).map(Some)
}

async fn insert_certificate(
    tx: &Transaction<'_>,
    certificate: &CertificateRecord,
    operation: &'static str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO certificates (serial, site, not_after, revoked_at) VALUES ($1, $2, $3, $4)",
        &[
            &certificate.serial,
            &certificate.site,
            &columns::time_to_db(certificate.not_after),
            &certificate.revoked_at.map(columns::time_to_db),
        ],
    )
    .await
    .during(operation)?;
    Ok(())
}

const SWITCH_QUERY: &str =
    "SELECT engaged, changed_at, changed_by, reason FROM rollout_switch WHERE id = 1";

fn switch_row(row: &Row, operation: &'static str) -> Result<RolloutSwitch, StoreError> {
    let engaged: i64 = row.try_get(0).during(operation)?;
    Ok(RolloutSwitch {
        engaged: engaged == 1,
        changed_at: columns::time_from_db(
            row.try_get(1).during(operation)?,
            "changed_at",
            operation,
        )?,
        changed_by: row.try_get(2).during(operation)?,
        reason: row.try_get(3).during(operation)?,
    })
}
