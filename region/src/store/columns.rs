//! How the contract's types are laid out in the columns both engines share (see
//! `migrations/0001_fleet.sql`): one encoding, so a fleet can move from SQLite to PostgreSQL by copying
//! rows, and the engines cannot drift apart in what a value means.

use super::{
    Delivery, ReleaseRecord, ReleaseState, RolloutRecord, Site, SiteState, StoreError, Withdrawal,
};
use jiff::{SignedDuration, Timestamp};
use scs_edge_proto::{DesiredState, Report};
use std::collections::BTreeMap;

/// The `sites` columns in the order [`SiteRow`] takes them; every site query selects exactly these.
pub(super) const SITE_COLUMNS: &str = "name, state, created_at, joined_at, last_seen, last_seq, \
     last_report, desired_generation, labels, target_os_version, maintenance_window, delivery";

/// A `sites` row as the engines read it, before decoding.
#[derive(Debug)]
pub(super) struct SiteRow {
    pub(super) name: String,
    pub(super) state: String,
    pub(super) created_at: i64,
    pub(super) joined_at: Option<i64>,
    pub(super) last_seen: Option<i64>,
    pub(super) last_seq: i64,
    pub(super) last_report: Option<String>,
    pub(super) desired_generation: i64,
    pub(super) labels: String,
    pub(super) target_os_version: Option<String>,
    pub(super) maintenance_window: Option<String>,
    pub(super) delivery: String,
}

impl SiteRow {
    /// Decodes the row; a value this build cannot read is a `Database` error naming the column.
    pub(super) fn decode(self, operation: &'static str) -> Result<Site, StoreError> {
        Ok(Site {
            state: state_from_db(&self.state, operation)?,
            created_at: time_from_db(self.created_at, "sites.created_at", operation)?,
            joined_at: self
                .joined_at
                .map(|t| time_from_db(t, "sites.joined_at", operation))
                .transpose()?,
            last_seen: self
                .last_seen
                .map(|t| time_from_db(t, "sites.last_seen", operation))
                .transpose()?,
            last_report: self
                .last_report
                .map(|json| from_json::<Report>(&json, "sites.last_report", operation))
                .transpose()?,
            last_seq: count_from_db(self.last_seq, "sites.last_seq", operation)?,
            desired: DesiredState {
                generation: count_from_db(
                    self.desired_generation,
                    "sites.desired_generation",
                    operation,
                )?,
                labels: from_json::<BTreeMap<String, String>>(
                    &self.labels,
                    "sites.labels",
                    operation,
                )?,
                target_os_version: self.target_os_version,
                maintenance_window: self.maintenance_window,
            },
            delivery: Delivery::parse(&self.delivery).ok_or_else(|| {
                malformed(
                    operation,
                    "sites.delivery",
                    &format!("{:?} is not a delivery", self.delivery),
                )
            })?,
            name: self.name,
        })
    }
}

/// A report ready to insert: encoded before the transaction starts, so the transaction holds its
/// locks only for the writes.
#[derive(Debug)]
pub(super) struct EncodedReport {
    pub(super) seq: u64,
    pub(super) seq_db: i64,
    pub(super) sent_at: i64,
    pub(super) body: String,
}

impl EncodedReport {
    /// Encodes one report of a batch.
    pub(super) fn encode(report: &Report, operation: &'static str) -> Result<Self, StoreError> {
        Ok(Self {
            seq: report.seq,
            seq_db: count_to_db(report.seq, operation)?,
            sent_at: time_to_db(report.sent_at),
            body: to_json(report, operation)?,
        })
    }
}

/// The `releases` columns in the order [`ReleaseRow`] takes them.
pub(super) const RELEASE_COLUMNS: &str = "version, manifest, state, published_at, published_by, \
     withdrawn_at, withdrawn_by, withdraw_reason";

/// A `releases` row as the engines read and write it.
#[derive(Debug)]
pub(super) struct ReleaseRow {
    pub(super) version: String,
    pub(super) manifest: String,
    pub(super) state: String,
    pub(super) published_at: i64,
    pub(super) published_by: String,
    pub(super) withdrawn_at: Option<i64>,
    pub(super) withdrawn_by: Option<String>,
    pub(super) withdraw_reason: Option<String>,
}

impl ReleaseRow {
    /// Encodes a record.
    pub(super) fn encode(
        release: &ReleaseRecord,
        operation: &'static str,
    ) -> Result<Self, StoreError> {
        let withdrawal = release.withdrawal.as_ref();
        Ok(Self {
            version: release.manifest.version.to_string(),
            manifest: to_json(&release.manifest, operation)?,
            state: release.state.as_str().to_owned(),
            published_at: time_to_db(release.published_at),
            published_by: release.published_by.clone(),
            withdrawn_at: withdrawal.map(|w| time_to_db(w.at)),
            withdrawn_by: withdrawal.map(|w| w.by.clone()),
            withdraw_reason: withdrawal.map(|w| w.reason.clone()),
        })
    }

    /// Decodes the row; a value this build cannot read is a `Database` error naming the column.
    pub(super) fn decode(self, operation: &'static str) -> Result<ReleaseRecord, StoreError> {
        let state = ReleaseState::parse(&self.state).ok_or_else(|| {
            malformed(
                operation,
                "releases.state",
                &format!("unknown state {:?}", self.state),
            )
        })?;
        let withdrawal = self
            .withdrawn_at
            .map(|at| {
                Ok::<_, StoreError>(Withdrawal {
                    at: time_from_db(at, "releases.withdrawn_at", operation)?,
                    by: self.withdrawn_by.clone().unwrap_or_default(),
                    reason: self.withdraw_reason.clone().unwrap_or_default(),
                })
            })
            .transpose()?;
        Ok(ReleaseRecord {
            manifest: from_json(&self.manifest, "releases.manifest", operation)?,
            state,
            published_at: time_from_db(self.published_at, "releases.published_at", operation)?,
            published_by: self.published_by,
            withdrawal,
        })
    }
}

/// The `rollouts` columns in the order [`RolloutRow`] takes them.
pub(super) const ROLLOUT_COLUMNS: &str = "name, target_version, plan, state, active, revision, \
     created_at, created_by, updated_at";

/// A `rollouts` row as the engines read and write it.
#[derive(Debug)]
pub(super) struct RolloutRow {
    pub(super) name: String,
    pub(super) target_version: String,
    pub(super) plan: String,
    pub(super) state: String,
    pub(super) active: i64,
    pub(super) revision: i64,
    pub(super) created_at: i64,
    pub(super) created_by: String,
    pub(super) updated_at: i64,
}

impl RolloutRow {
    /// Encodes a record.
    pub(super) fn encode(
        rollout: &RolloutRecord,
        operation: &'static str,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            name: rollout.name.clone(),
            target_version: rollout.target_version.clone(),
            plan: rollout.plan.clone(),
            state: rollout.state.clone(),
            active: i64::from(rollout.active),
            revision: count_to_db(rollout.revision, operation)?,
            created_at: time_to_db(rollout.created_at),
            created_by: rollout.created_by.clone(),
            updated_at: time_to_db(rollout.updated_at),
        })
    }

    /// Decodes the row.
    pub(super) fn decode(self, operation: &'static str) -> Result<RolloutRecord, StoreError> {
        Ok(RolloutRecord {
            active: self.active != 0,
            revision: count_from_db(self.revision, "rollouts.revision", operation)?,
            created_at: time_from_db(self.created_at, "rollouts.created_at", operation)?,
            updated_at: time_from_db(self.updated_at, "rollouts.updated_at", operation)?,
            name: self.name,
            target_version: self.target_version,
            plan: self.plan,
            state: self.state,
            created_by: self.created_by,
        })
    }
}

/// Reads a `sites.state` value.
pub(super) fn state_from_db(state: &str, operation: &'static str) -> Result<SiteState, StoreError> {
    SiteState::parse(state).ok_or_else(|| {
        malformed(
            operation,
            "sites.state",
            &format!("unknown state {state:?}"),
        )
    })
}

/// Microseconds since the epoch: total over jiff's range, so encoding never fails.
pub(super) fn time_to_db(at: Timestamp) -> i64 {
    at.as_microsecond()
}

/// Reads a time column.
pub(super) fn time_from_db(
    micros: i64,
    column: &'static str,
    operation: &'static str,
) -> Result<Timestamp, StoreError> {
    // Not `Timestamp::from_microsecond`: its range stops at the last whole second, so it refuses
    // what `as_microsecond` gives for an instant within jiff's final second.
    Timestamp::from_duration(SignedDuration::from_micros(micros))
        .map_err(|e| malformed(operation, column, &format!("{micros} is not a time: {e}")))
}

/// Sequence numbers and generations are u64 in the protocol and BIGINT in both engines.
pub(super) fn count_to_db(value: u64, operation: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Database {
        operation,
        message: format!("{value} exceeds the largest storable sequence number"),
    })
}

/// Reads a sequence number or generation column.
pub(super) fn count_from_db(
    value: i64,
    column: &'static str,
    operation: &'static str,
) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| malformed(operation, column, &format!("negative: {value}")))
}

/// Serialises a JSON column.
pub(super) fn to_json<T: serde::Serialize>(
    value: &T,
    operation: &'static str,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Database {
        operation,
        message: format!("cannot encode JSON: {e}"),
    })
}

/// Reads a JSON column.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    json: &str,
    column: &'static str,
    operation: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| malformed(operation, column, &e.to_string()))
}

fn malformed(operation: &'static str, column: &str, why: &str) -> StoreError {
    StoreError::Database {
        operation,
        message: format!("{column} holds a value this region cannot read: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_at_microsecond_precision_over_the_whole_range() {
        for at in [Timestamp::MIN, Timestamp::UNIX_EPOCH, Timestamp::MAX] {
            let micros = time_to_db(at);
            let back = time_from_db(micros, "t", "test").expect("decode");
            assert_eq!(back.as_microsecond(), at.as_microsecond());
        }
        let precise = Timestamp::from_nanosecond(1_700_000_000_123_456_789).expect("ts");
        assert_eq!(
            time_from_db(time_to_db(precise), "t", "test")
                .expect("decode")
                .as_nanosecond(),
            1_700_000_000_123_456_000
        );
    }

    #[test]
    fn counts_above_i64_are_refused_not_wrapped() {
        assert!(count_to_db(u64::MAX, "test").is_err());
        assert!(count_from_db(-1, "sites.last_seq", "test").is_err());
        assert_eq!(count_to_db(7, "test").expect("fits"), 7);
    }

    #[test]
    fn an_unknown_state_names_the_column() {
        let row = SiteRow {
            name: "a".into(),
            state: "exploded".into(),
            created_at: 0,
            joined_at: None,
            last_seen: None,
            last_seq: 0,
            last_report: None,
            desired_generation: 1,
            labels: "{}".into(),
            target_os_version: None,
            maintenance_window: None,
            delivery: "online".into(),
        };
        let err = row.decode("test").expect_err("refused");
        assert!(err.to_string().contains("sites.state"), "{err}");
    }
}
