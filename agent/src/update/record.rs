//! The update record: where this node is in taking a new OS version, which versions failed here, and
//! how many releases it refused and why. One JSON file on the data partition, replaced atomically
//! (written beside, synced, renamed, directory synced), so a power cut leaves the old record or the
//! new one, never a torn one; it survives reboots and updates because `/var` does.
//!
//! Every change happens under an exclusive `flock` on the update directory's lock file, so the CLI,
//! the daemon's stick watcher and the boot's health gate never interleave; readers (`/healthz`,
//! `/metrics`, the heartbeat) read without it.

use jiff::Timestamp;
use scs_edge_proto::release::ReleaseManifest;
use semver::Version;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// When a node reboots into an installed release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RebootWhen {
    /// As soon as the slot is written.
    Now,
    /// In the next maintenance window (immediately when the site has none).
    #[default]
    Window,
}

/// Who asked for a staged release, which decides whether it may be withdrawn before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Someone at the node: a stick, a bundle, the node's own repository. Only they take it back.
    #[default]
    Local,
    /// The region's desired version: dropped while still staged once the region names another
    /// or none (a rollout paused or taken back).
    Region,
}

/// A release whose artifacts are verified and sit in `dir`, ready for `systemd-sysupdate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// Its signed manifest.
    pub manifest: ReleaseManifest,
    /// The directory `--transfer-source=` points at.
    pub dir: PathBuf,
    /// When it was verified and staged. Applying it later needs no fresh metadata: the
    /// verification happened here, while the metadata was valid.
    pub staged_at: Timestamp,
    /// When to reboot into it once installed.
    pub reboot: RebootWhen,
    /// Boots that returned to the old version before this one ran (power cuts, a boot entry the
    /// loader skipped). Bounded, so a node never reboots in a loop.
    #[serde(default)]
    pub boot_attempts: u32,
    /// Who asked for it; records written before the region could offer releases are local.
    #[serde(default)]
    pub origin: Origin,
}

/// Where the node is in an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Nothing in progress.
    #[default]
    Idle,
    /// A release is being read and verified (from a bundle, a stick or a repository).
    Importing {
        /// What it is read from.
        source: String,
        /// Since when.
        since: Timestamp,
    },
    /// A verified release waits to be written into the inactive slot.
    Staged {
        /// The release.
        #[serde(flatten)]
        staged: Staged,
    },
    /// `systemd-sysupdate` is writing the inactive slot. Found at start-up with nobody holding the
    /// lock, it was interrupted: the running slot is untouched and the write starts over.
    Installing {
        /// The release.
        #[serde(flatten)]
        staged: Staged,
        /// Since when.
        since: Timestamp,
    },
    /// The slot is written; the node reboots into it now or in the next window.
    Installed {
        /// The release.
        #[serde(flatten)]
        staged: Staged,
        /// When the write finished.
        at: Timestamp,
    },
    /// Workloads were stopped and a reboot into `version` was asked for. After the boot the health
    /// gate decides between committing it and rolling back to `from`.
    Rebooting {
        /// The version booted into.
        version: Version,
        /// Its release, kept until the gate commits it: a boot that never reached the new version
        /// (a power cut before the loader counted it) writes or boots it again from here.
        staged: Staged,
        /// The version it came from, where a failed gate returns.
        from: Version,
        /// Servers that were ACTIVE before: the gate waits for each to be ACTIVE again.
        restore: Vec<Uuid>,
        /// When the reboot was asked for.
        at: Timestamp,
    },
    /// The new version booted and the health gate is checking it.
    Verifying {
        /// The version under test.
        version: Version,
        /// Its release.
        staged: Staged,
        /// Where a failed gate returns.
        from: Version,
        /// Servers that must be ACTIVE again.
        restore: Vec<Uuid>,
        /// When the gate started.
        since: Timestamp,
    },
}

impl Phase {
    /// The phase's name, as `/metrics` and the region show it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Importing { .. } => "importing",
            Self::Staged { .. } => "staged",
            Self::Installing { .. } => "installing",
            Self::Installed { .. } => "installed",
            Self::Rebooting { .. } => "rebooting",
            Self::Verifying { .. } => "verifying",
        }
    }

    /// Every phase name, so gauges can show the inactive ones at 0.
    pub const NAMES: [&'static str; 7] = [
        "idle",
        "importing",
        "staged",
        "installing",
        "installed",
        "rebooting",
        "verifying",
    ];
}

/// How the last update ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// The new version passed its health gate and runs.
    Committed {
        /// It.
        version: Version,
        /// The version before.
        from: Version,
        /// When the gate passed.
        at: Timestamp,
    },
    /// The new version failed; the node went back to `from`.
    RolledBack {
        /// The failed version.
        version: Version,
        /// The version the node returned to.
        from: Version,
        /// Why the gate failed.
        reason: String,
        /// When.
        at: Timestamp,
    },
}

/// A version that failed on this node. It is never taken again automatically; `update retry`
/// (or the region's retry counter) clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Why.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// The last release this node refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// What was offered (a bundle path, a stick, a repository).
    pub source: String,
    /// The refusal kind (the metric label).
    pub kind: String,
    /// The whole reason.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// The last release this node accepted under a freshness waiver: its metadata had expired, and an
/// operator-signed waiver for this site stood in for its freshness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaiverUse {
    /// The site the waiver names.
    pub site: String,
    /// Why the site cannot receive fresh metadata, as the waiver says.
    pub reason: String,
    /// From when the waiver holds.
    pub issued: Timestamp,
    /// Until when the waiver holds.
    pub expires: Timestamp,
    /// The release accepted under it.
    pub version: Version,
    /// Where the release came from.
    pub source: String,
    /// When it was accepted.
    pub used_at: Timestamp,
}

/// The persisted record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct UpdateRecord {
    /// Where the node is.
    pub phase: Phase,
    /// Versions that failed here.
    pub failed: BTreeMap<Version, Failure>,
    /// Refusals so far, by kind; a counter that survives restarts.
    pub refused: BTreeMap<String, u64>,
    /// The last refusal.
    pub last_refusal: Option<Refusal>,
    /// How the last update ended.
    pub last_outcome: Option<Outcome>,
    /// Every update error that did not end in a refusal (a failed slot write, say), newest only.
    pub last_error: Option<String>,
    /// Releases accepted under a freshness waiver so far; a counter that survives restarts.
    pub waivers_used: u64,
    /// The last release accepted under a freshness waiver.
    pub last_waiver: Option<WaiverUse>,
    /// The newest time a verification saw on this node's clock. tough keeps its own in its
    /// datastore but starts afresh when that file is unreadable; this one lives in the record,
    /// replaced atomically, so a clock stepped back is refused either way.
    #[serde(default)]
    pub last_known_time: Option<Timestamp>,
}

impl UpdateRecord {
    /// Records that `version` failed and the node is back on `from`: on the failed list (never
    /// taken again on its own), as the last outcome, nothing in flight.
    pub fn roll_back(&mut self, version: &Version, from: &Version, reason: &str, at: Timestamp) {
        self.failed.insert(
            version.clone(),
            Failure {
                reason: reason.to_owned(),
                at,
            },
        );
        self.last_outcome = Some(Outcome::RolledBack {
            version: version.clone(),
            from: from.clone(),
            reason: reason.to_owned(),
            at,
        });
        self.phase = Phase::Idle;
    }

    /// Counts a release accepted under a freshness waiver and keeps it as the last one.
    pub fn use_waiver(&mut self, waiver: WaiverUse) {
        self.waivers_used += 1;
        self.last_waiver = Some(waiver);
    }

    /// Counts a refusal and keeps it as the last one.
    pub fn refuse(&mut self, source: &str, kind: &str, reason: &str, at: Timestamp) {
        *self.refused.entry(kind.to_owned()).or_default() += 1;
        self.last_refusal = Some(Refusal {
            source: source.to_owned(),
            kind: kind.to_owned(),
            reason: reason.to_owned(),
            at,
        });
    }
}

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The record is not valid JSON of this shape.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another process holds the lock.
    #[error("another update operation is running (it holds {})", path.display())]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
}

/// The record file and its lock, in the update directory.
#[derive(Debug, Clone)]
pub struct RecordFile {
    dir: PathBuf,
}

/// Exclusive ownership of the record while it is held.
#[derive(Debug)]
pub struct RecordLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
    file: RecordFile,
}

impl RecordFile {
    /// The record in `dir` (created when missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("record.json")
    }

    /// Reads the record without the lock (a missing file is an empty record).
    pub fn read(&self) -> Result<UpdateRecord, RecordError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| RecordError::Corrupt {
                path,
                reason: err.to_string(),
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(UpdateRecord::default()),
            Err(source) => Err(RecordError::Io { path, source }),
        }
    }

    /// Takes the lock, failing at once with [`RecordError::Busy`] when someone else holds it.
    pub fn try_lock(&self) -> Result<RecordLock, RecordError> {
        self.lock(nix::fcntl::FlockArg::LockExclusiveNonblock)
    }

    /// Takes the lock, waiting for whoever holds it.
    pub fn lock_wait(&self) -> Result<RecordLock, RecordError> {
        self.lock(nix::fcntl::FlockArg::LockExclusive)
    }

    fn lock(&self, how: nix::fcntl::FlockArg) -> Result<RecordLock, RecordError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RecordError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = self.dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let lock = nix::fcntl::Flock::lock(file, how).map_err(|(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                RecordError::Busy { path: path.clone() }
            } else {
                RecordError::Io {
                    path: path.clone(),
                    source: errno.into(),
                }
            }
        })?;
        Ok(RecordLock {
            _lock: lock,
            file: self.clone(),
        })
    }
}

impl RecordLock {
    /// The record as it is now.
    pub fn read(&self) -> Result<UpdateRecord, RecordError> {
        self.file.read()
    }

    /// Replaces the record atomically and durably.
    pub fn write(&self, record: &UpdateRecord) -> Result<(), RecordError> {
        let path = self.file.path();
        let io = |source| RecordError::Io {
            path: path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec_pretty(record).map_err(|err| RecordError::Corrupt {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        bytes.push(b'\n');
        crate::system::file::write_atomic(&path, &bytes, 0o644).map_err(io)
    }

    /// Reads, changes and writes the record in one step.
    pub fn update<T>(&self, change: impl FnOnce(&mut UpdateRecord) -> T) -> Result<T, RecordError> {
        let mut record = self.read()?;
        let value = change(&mut record);
        self.write(&record)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_a_second_writer_is_told_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().expect("dir");
        let file = RecordFile::new(dir.path());
        assert_eq!(file.read().expect("empty"), UpdateRecord::default());
        let lock = file.try_lock().expect("lock");
        assert!(matches!(file.try_lock(), Err(RecordError::Busy { .. })));
        let at: Timestamp = "2026-12-01T00:00:00Z".parse().expect("time");
        lock.update(|record| {
            record.refuse("stick", "hash", "flipped byte", at);
            record.failed.insert(
                Version::new(1, 2, 0),
                Failure {
                    reason: "ovn-controller never connected".into(),
                    at,
                },
            );
            record.phase = Phase::Rebooting {
                version: Version::new(1, 2, 0),
                staged: Staged {
                    manifest: ReleaseManifest {
                        schema: 1,
                        version: Version::new(1, 2, 0),
                        min_from_version: Version::new(1, 0, 0),
                        max_version: None,
                        artifacts: Vec::new(),
                    },
                    dir: "/var/lib/scs-edge/update/staged/1.2.0".into(),
                    staged_at: at,
                    reboot: RebootWhen::Now,
                    boot_attempts: 0,
                    origin: Origin::Region,
                },
                from: Version::new(1, 1, 0),
                restore: vec![Uuid::nil()],
                at,
            };
        })
        .expect("update");
        drop(lock);
        let record = file.read().expect("read");
        assert_eq!(record.refused["hash"], 1);
        assert_eq!(record.phase.name(), "rebooting");
        assert!(record.failed.contains_key(&Version::new(1, 2, 0)));
        assert!(file.try_lock().is_ok(), "released with its holder");
        let Phase::Rebooting { staged, .. } = record.phase else {
            panic!("{:?}", record.phase);
        };
        assert_eq!(staged.origin, Origin::Region);
    }

    #[test]
    fn a_release_staged_before_origins_were_recorded_reads_back_as_local() {
        let dir = tempfile::tempdir().expect("dir");
        let written = r#"{
          "phase": {
            "phase": "staged",
            "manifest": { "schema": 1, "version": "1.2.0", "min_from_version": "1.0.0", "artifacts": [] },
            "dir": "/var/lib/scs-edge/update/staged/1.2.0",
            "staged_at": "2026-12-01T00:00:00Z",
            "reboot": "window"
          }
        }"#;
        std::fs::write(dir.path().join("record.json"), written).expect("write");
        let record = RecordFile::new(dir.path()).read().expect("read");
        let Phase::Staged { staged } = record.phase else {
            panic!("{:?}", record.phase);
        };
        assert_eq!(staged.origin, Origin::Local);
        assert_eq!(staged.manifest.version, Version::new(1, 2, 0));
    }
}
