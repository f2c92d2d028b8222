//! The on-disk queue of reports waiting for the region (table `federation_outbox`, schema 7).
//!
//! A report is numbered when it is queued and deleted only once the region acknowledged it, so reports
//! survive a killed agent and reach the region in order, each exactly once as the region stores them
//! (a re-sent report is re-acknowledged, not stored twice). The next number is kept in `settings` and
//! never reused. The queue is always one run of consecutive numbers: it only loses reports at its
//! front (acknowledged ones, or the oldest when it is full) and gains them at its back.
//!
//! When the region's idea of the sequence differs from ours (409 `out_of_order`), [`Outbox::realign`]
//! makes the queue continue where the region expects it to.

use crate::store::{Store, StoreError};
use rusqlite::{OptionalExtension as _, Transaction, params};
use scs_edge_proto::Report;
use std::sync::Arc;

/// The `settings` key holding the next sequence number to hand out.
pub const NEXT_SEQ_SETTING: &str = "federation.next_seq";

/// The queue could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The store failed.
    #[error("region report queue: {0}")]
    Store(#[from] StoreError),
    /// A queued report is not a report (the row was written by something else).
    #[error("region report queue: report {seq} is malformed: {source}")]
    Corrupt {
        /// Its number.
        seq: u64,
        /// Why.
        source: serde_json::Error,
    },
    /// A report breaks the limits the region enforces; queueing it would block everything behind it.
    #[error("region report queue: report not queued, the region would refuse it: {0}")]
    Invalid(String),
}

impl From<rusqlite::Error> for OutboxError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

/// What queueing one report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The number it got.
    pub seq: u64,
    /// Oldest reports dropped to make room.
    pub dropped: u64,
    /// Reports queued now.
    pub queued: u64,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Reports removed from the queue.
    pub removed: u64,
    /// Reports still queued.
    pub queued: u64,
    /// Set when the region acknowledged numbers this node never handed out (its store is older than
    /// the region's record of the site, e.g. restored from a backup): numbering continues here.
    pub jumped_to: Option<u64>,
}

/// How the queue was brought in line with the `seq` the region expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realigned {
    /// The region already holds the first `count` queued reports (their acknowledgement was lost).
    Dropped {
        /// Reports removed.
        count: u64,
    },
    /// The queue was renumbered to start at `to` (it started at `from`): the region lost reports it
    /// had acknowledged, or holds more than this node ever numbered.
    Renumbered {
        /// First number before.
        from: u64,
        /// First number now.
        to: u64,
        /// Reports renumbered.
        count: u64,
    },
    /// Nothing to change (the queue already starts where the region expects).
    Unchanged,
}

/// The report queue.
#[derive(Debug, Clone)]
pub struct Outbox {
    store: Arc<Store>,
    capacity: u64,
}

impl Outbox {
    /// The queue in `store`, holding at most `capacity` reports.
    pub fn new(store: Arc<Store>, capacity: u64) -> Self {
        Self {
            store,
            capacity: capacity.max(1),
        }
    }

    /// Numbers and queues the report `build` makes for the next number; when the queue is full the
    /// oldest reports are dropped.
    pub fn push(&self, build: impl FnOnce(u64) -> Report) -> Result<Pushed, OutboxError> {
        self.store.write(|tx| {
            let seq = next_seq(tx)?;
            let report = build(seq);
            report.validate().map_err(OutboxError::Invalid)?;
            tx.execute(
                "INSERT INTO federation_outbox (seq, body) VALUES (?1, ?2)",
                params![
                    seq as i64,
                    serde_json::to_string(&report).unwrap_or_default()
                ],
            )?;
            set_next_seq(tx, seq + 1)?;
            let queued = count(tx)?;
            let dropped = queued.saturating_sub(self.capacity);
            if dropped > 0 {
                tx.execute(
                    "DELETE FROM federation_outbox WHERE seq IN
                         (SELECT seq FROM federation_outbox ORDER BY seq LIMIT ?1)",
                    [dropped as i64],
                )?;
            }
            Ok(Pushed {
                seq,
                dropped,
                queued: queued - dropped,
            })
        })
    }

    /// Reports queued.
    pub fn len(&self) -> Result<u64, OutboxError> {
        self.store.read(count)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> Result<bool, OutboxError> {
        Ok(self.len()? == 0)
    }

    /// The number the next report gets.
    pub fn next_seq(&self) -> Result<u64, OutboxError> {
        self.store.read(next_seq)
    }

    /// The oldest reports, in order: at most `max_reports`, and no more than `max_bytes` of JSON
    /// (but always at least one, so a large report cannot stall the queue).
    pub fn next_batch(
        &self,
        max_reports: usize,
        max_bytes: usize,
    ) -> Result<Vec<Report>, OutboxError> {
        self.store.read(|tx| {
            let mut stmt =
                tx.prepare("SELECT seq, body FROM federation_outbox ORDER BY seq LIMIT ?1")?;
            let rows = stmt.query_map([max_reports as i64], |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get::<_, String>(1)?))
            })?;
            let mut batch = Vec::new();
            let mut bytes = 0usize;
            for row in rows {
                let (seq, body) = row?;
                bytes += body.len();
                if !batch.is_empty() && bytes > max_bytes {
                    break;
                }
                let mut report: Report = serde_json::from_str(&body)
                    .map_err(|source| OutboxError::Corrupt { seq, source })?;
                // The column is authoritative: the queue may have been renumbered since.
                report.seq = seq;
                batch.push(report);
            }
            Ok(batch)
        })
    }

    /// Removes everything up to `acked_through`, which the region now holds.
    pub fn acknowledge(&self, acked_through: u64) -> Result<Acked, OutboxError> {
        self.store.write(|tx| {
            let removed = tx.execute(
                "DELETE FROM federation_outbox WHERE seq <= ?1",
                [clamp(acked_through)],
            )? as u64;
            let next = next_seq(tx)?;
            let jumped_to = (acked_through >= next).then(|| acked_through + 1);
            if let Some(to) = jumped_to {
                // Everything queued was below `next`, so it is all gone: continue after the region.
                set_next_seq(tx, to)?;
            }
            Ok(Acked {
                removed,
                queued: count(tx)?,
                jumped_to,
            })
        })
    }

    /// Makes the queue continue at `expected`, the `seq` the region asked for in a 409:
    ///
    /// * `expected` inside the queue: the reports before it are the region's already (their
    ///   acknowledgement was lost) — drop them;
    /// * `expected` before the queue: the region lost reports it had acknowledged (restored from a
    ///   backup) — renumber the queue to start at `expected`, so the sequence has no hole;
    /// * `expected` beyond every number this node handed out: the region holds more than this node
    ///   remembers (the node's store is older) — renumber the queue to start at `expected`, so the
    ///   region stores these reports instead of taking them for duplicates.
    pub fn realign(&self, expected: u64) -> Result<Realigned, OutboxError> {
        let expected = expected.max(1);
        self.store.write(|tx| {
            let next = next_seq(tx)?;
            let Some(first) = first_seq(tx)? else {
                if expected > next {
                    set_next_seq(tx, expected)?;
                }
                return Ok(Realigned::Unchanged);
            };
            if expected == first {
                return Ok(Realigned::Unchanged);
            }
            if expected > first && expected <= next {
                let count = tx.execute(
                    "DELETE FROM federation_outbox WHERE seq < ?1",
                    [clamp(expected)],
                )? as u64;
                return Ok(Realigned::Dropped { count });
            }
            let count = count(tx)?;
            let offset = expected as i64 - first as i64;
            // Two steps through negative numbers, so no row ever takes a number another still has.
            tx.execute("UPDATE federation_outbox SET seq = -seq", [])?;
            tx.execute("UPDATE federation_outbox SET seq = -seq + ?1", [offset])?;
            set_next_seq(tx, expected + count)?;
            Ok(Realigned::Renumbered {
                from: first,
                to: expected,
                count,
            })
        })
    }
}

fn clamp(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn count(tx: &Transaction<'_>) -> Result<u64, OutboxError> {
    Ok(
        tx.query_row("SELECT count(*) FROM federation_outbox", [], |row| {
            row.get::<_, i64>(0)
        })? as u64,
    )
}

fn first_seq(tx: &Transaction<'_>) -> Result<Option<u64>, OutboxError> {
    Ok(tx
        .query_row("SELECT min(seq) FROM federation_outbox", [], |row| {
            row.get::<_, Option<i64>>(0)
        })?
        .map(|seq| seq as u64))
}

/// The stored next number, but never at or below a queued report (a store written by hand, or a
/// setting lost while rows survived, must not make numbers collide).
fn next_seq(tx: &Transaction<'_>) -> Result<u64, OutboxError> {
    let stored: Option<String> = tx
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            [NEXT_SEQ_SETTING],
            |row| row.get(0),
        )
        .optional()?;
    let stored = stored.and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
    let after_queue: Option<i64> =
        tx.query_row("SELECT max(seq) FROM federation_outbox", [], |row| {
            row.get(0)
        })?;
    Ok(stored
        .max(after_queue.map_or(1, |max| max as u64 + 1))
        .max(1))
}

fn set_next_seq(tx: &Transaction<'_>, next: u64) -> Result<(), OutboxError> {
    tx.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [NEXT_SEQ_SETTING, &next.to_string()],
    )?;
    Ok(())
}
