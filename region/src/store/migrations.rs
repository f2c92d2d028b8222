//! The schema's history, shared by both engines. Append only: a released migration is never edited,
//! because a region that already applied it would never see the change.
//!
//! Each engine applies the pending ones in order at open, each in its own transaction together with
//! its `schema_migrations` row, so a crash leaves the database at a version boundary. A database a
//! newer region migrated is refused rather than misread (a downgrade must not write rows the newer
//! schema does not expect).

use super::StoreError;

/// One schema step.
#[derive(Debug)]
pub(super) struct Migration {
    /// Consecutive from 1; the `schema_migrations.version` it records.
    pub(super) version: i64,
    /// For logs and `schema_migrations.name`.
    pub(super) name: &'static str,
    /// Statements in the SQL both engines accept.
    pub(super) sql: &'static str,
}

/// Every migration, in order.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "fleet",
        sql: include_str!("migrations/0001_fleet.sql"),
    },
    Migration {
        version: 2,
        name: "releases",
        sql: include_str!("migrations/0002_releases.sql"),
    },
    Migration {
        version: 3,
        name: "rollouts",
        sql: include_str!("migrations/0003_rollouts.sql"),
    },
    Migration {
        version: 4,
        name: "rollout controls",
        sql: include_str!("migrations/0004_rollout_controls.sql"),
    },
];

/// The bookkeeping table; created before the first migration runs.
pub(super) const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// The highest version this build knows.
pub(super) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The migrations a database at `applied` still needs, or `SchemaTooNew` when a newer region
/// migrated it.
pub(super) fn pending(
    applied: i64,
) -> Result<impl Iterator<Item = &'static Migration>, StoreError> {
    if applied > latest() {
        return Err(StoreError::SchemaTooNew {
            found: applied,
            supported: latest(),
        });
    }
    Ok(MIGRATIONS.iter().filter(move |m| m.version > applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                migration.version,
                index as i64 + 1,
                "migration {} out of order",
                migration.name
            );
        }
    }

    #[test]
    fn pending_skips_applied_and_refuses_newer() {
        assert_eq!(pending(0).expect("fresh").count(), MIGRATIONS.len());
        assert_eq!(pending(latest()).expect("current").count(), 0);
        assert!(matches!(
            pending(latest() + 1).map(Iterator::count),
            Err(StoreError::SchemaTooNew { found, supported }) if found == latest() + 1 && supported == latest()
        ));
    }
}
