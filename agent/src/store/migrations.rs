//! Ordered schema migrations. Append only: a released migration is never edited.

use super::StoreError;
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

/// (version, name, SQL). Versions are consecutive from 1.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.sql")),
    (2, "network", include_str!("migrations/0002_network.sql")),
    (3, "identity", include_str!("migrations/0003_identity.sql")),
    (
        4,
        "image_records",
        include_str!("migrations/0004_image_records.sql"),
    ),
    (5, "keypairs", include_str!("migrations/0005_keypairs.sql")),
    (
        6,
        "default_security_group_rules",
        include_str!("migrations/0006_default_security_group_rules.sql"),
    ),
    (
        7,
        "federation",
        include_str!("migrations/0007_federation.sql"),
    ),
];

/// The newest schema version this build knows.
pub(super) fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Brings the database to `latest()`, one transaction per migration.
pub(super) fn apply(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let current: u32 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
    if current > latest() {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: current,
            supported: latest(),
        });
    }
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let run = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
            // Another process may have migrated between our read and our lock.
            let now: u32 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
            if now >= version {
                return tx.commit();
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()
        };
        run(conn).map_err(|source| StoreError::Migration {
            version,
            name,
            source,
        })?;
        tracing::info!(version, name, "store migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                migration.0 as usize,
                index + 1,
                "migration {} out of order",
                migration.1
            );
        }
    }
}
