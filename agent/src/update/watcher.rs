//! The daemon's part of updates: pick up an `SCSEDGE-UPDATE` stick, check the configured repository
//! for a new release now and then or take the one the region offers, write a staged release into
//! the inactive slot, and reboot into an installed one when it is due — after stopping the servers.
//! Each look is one short step under the record's lock, so the CLI can import at any time and the
//! two never interleave (whoever holds the lock goes first; the other tries again next round).

use super::host::{Drain, Power};
use super::online::RepositoryCheck;
use super::record::{Phase, RebootWhen, RecordError};
use super::region::RegionOffer;
use super::window::RebootWindow;
use super::{ImportSource, LogProgress, REBOOTING, UpdateError, Updater};
use crate::system::clock::Clock;
use jiff::Timestamp;
use semver::Version;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The device path udev gives a stick labelled [`super::STICK_LABEL`].
pub const STICK_DEVICE: &str = "/dev/disk/by-label/SCSEDGE-UPDATE";

/// Where the kernel describes block devices, among them each disk's `diskseq`.
pub const SYS_CLASS_BLOCK: &str = "/sys/class/block";

/// The update task of the daemon.
pub struct UpdateWatcher {
    /// The domain.
    pub updater: Arc<Updater>,
    /// Stops the servers before a reboot.
    pub drain: Arc<dyn Drain>,
    /// Reboots.
    pub power: Arc<dyn Power>,
    /// The maintenance window in force: the region's, else the node's own.
    pub window: Arc<RebootWindow>,
    /// How long servers get to shut down before they are powered off.
    pub stop_timeout: Duration,
    /// How often to look.
    pub poll: Duration,
    /// Where a stick appears.
    pub stick: PathBuf,
    /// Where the kernel numbers disk insertions ([`SYS_CLASS_BLOCK`]).
    pub sys_class_block: PathBuf,
    /// The repository to check now and then, when one is configured.
    pub repository: Option<RepositoryCheck>,
    /// The region's offer, when the node belongs to a region: it stages the release the site's
    /// desired version names, and no other, and drops the one it staged when the region names
    /// another or none before it is written.
    pub region: Option<RegionFeed>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// One insertion of a stick. The device node alone does not tell insertions apart: a stick pulled
/// and plugged in again between two looks comes back as the same `/dev/sdb`. The kernel's disk
/// sequence number does: it grows with every disk that appears and is never reused until reboot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickInsertion {
    /// The device node the label points to.
    pub device: PathBuf,
    /// The disk's `diskseq`; `None` on kernels before 5.15, where only the node is compared.
    pub diskseq: Option<u64>,
}

impl StickInsertion {
    /// The insertion behind the label link `stick`, or `None` when no stick is plugged.
    pub fn find(stick: &Path, sys_class_block: &Path) -> Option<Self> {
        let device = std::fs::canonicalize(stick).ok()?;
        let diskseq = device
            .file_name()
            .and_then(|name| disk_sequence(&sys_class_block.join(name)));
        Some(Self { device, diskseq })
    }
}

/// The `diskseq` of the block device described at `sys_dir`, or of its disk when it is a
/// partition (a stick formatted with a partition table carries its label on a partition).
fn disk_sequence(sys_dir: &Path) -> Option<u64> {
    let read = |dir: &Path| {
        std::fs::read_to_string(dir.join("diskseq"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    };
    read(sys_dir).or_else(|| {
        let resolved = std::fs::canonicalize(sys_dir).ok()?;
        read(resolved.parent()?)
    })
}

/// The region's offer and how soon to ask again after an attempt that did not settle it.
#[derive(Clone)]
pub struct RegionFeed {
    /// The offer.
    pub offer: Arc<dyn RegionOffer>,
    /// The wait after an attempt that could not finish (the repository unreachable, the record
    /// busy, an update in progress); a refusal waits for the next desired version instead.
    pub retry: Duration,
}

impl std::fmt::Debug for RegionFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionFeed")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// The last attempt at the region's offer.
#[derive(Debug, Clone)]
struct OfferAttempt {
    /// The version the region asked for.
    version: Version,
    /// When to try again; `None`: not before the region asks for another version.
    again_at: Option<Timestamp>,
}

/// What the watcher remembers from one look to the next.
#[derive(Debug, Default)]
pub struct Looked {
    /// The stick imported last, while it stays plugged.
    stick: Option<StickInsertion>,
    /// When the repository is due for its next check; `None`: at the next look.
    next_check: Option<Timestamp>,
    /// The last attempt at the region's offer.
    offer: Option<OfferAttempt>,
    /// This daemon drained the node and systemd refused its reboot into the new version. A
    /// `Rebooting` record it did not write is the boot's health gate's to judge, never a reason to
    /// reboot.
    reboot_failed: bool,
}

impl UpdateWatcher {
    /// Asks for the reboot into `version` once more; true when it was refused again.
    async fn reboot(&self, version: &Version) -> bool {
        match self.power.reboot().await {
            Ok(()) => false,
            Err(reason) => {
                warn!(%version, %reason, "rebooting into the new version failed");
                true
            }
        }
    }

    /// Follows the region's desired version: drops the region's release staged here when the
    /// region no longer names it, then takes the one it names.
    async fn follow_region(&self, region: &RegionFeed, looked: &mut Looked) {
        let wanted = match region.offer.wanted() {
            Ok(wanted) => wanted,
            Err(reason) => {
                warn!(%reason, "cannot read the desired state the region sent");
                looked.offer = None;
                return;
            }
        };
        // A version that does not parse names no release this node could have staged.
        let version = wanted
            .as_deref()
            .and_then(|text| text.parse::<Version>().ok());
        let updater = self.updater.clone();
        let withdrawn =
            tokio::task::spawn_blocking(move || updater.withdraw(version.as_ref())).await;
        match withdrawn {
            Ok(Ok(_) | Err(UpdateError::Record(RecordError::Busy { .. }))) => {}
            Ok(Err(err)) => warn!(%err, "dropping the release the region withdrew failed"),
            Err(err) => warn!(%err, "dropping the release the region withdrew panicked"),
        }
        match wanted {
            Some(text) => self.take_offer(region, &text, looked).await,
            None => looked.offer = None,
        }
    }

    /// Stages the release the region's desired state names, once per version: again only after
    /// `retry` when the attempt could not finish, never after a refusal (the heartbeat reports it,
    /// and the region asks for another version or an operator retries).
    async fn take_offer(&self, region: &RegionFeed, text: &str, looked: &mut Looked) {
        let Ok(wanted) = text.parse::<Version>() else {
            if looked.offer.is_some() {
                warn!(version = %text, "the region asks for a version that is not a semantic version");
            }
            looked.offer = None;
            return;
        };
        let now = self.clock.now();
        if let Some(attempt) = &looked.offer
            && attempt.version == wanted
            && attempt.again_at.is_none_or(|at| now < at)
        {
            return;
        }
        let again = now.checked_add(region.retry).ok();
        let again_at = match region.offer.repository() {
            Err(reason) => {
                info!(%wanted, %reason, "the region's release waits for the link");
                again
            }
            Ok((url, client)) => {
                match self
                    .updater
                    .take(&url, &client, &wanted, &LogProgress)
                    .await
                {
                    Ok(Some(version)) => {
                        info!(%version, "the region's release is staged");
                        None
                    }
                    // Refusals are recorded, counted and reported by the domain.
                    Err(UpdateError::Refused { .. }) => None,
                    // Running it, staged already, or busy with another update: look again later.
                    Ok(None) => again,
                    Err(err) => {
                        warn!(%err, %wanted, "taking the region's release failed; trying again");
                        again
                    }
                }
            }
        };
        looked.offer = Some(OfferAttempt {
            version: wanted,
            again_at,
        });
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Err(err) = self.updater.recover() {
            warn!(%err, "cannot check the update record");
        }
        let mut looked = Looked::default();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.poll) => {}
            }
            self.look(&mut looked).await;
        }
    }

    /// One round: a new stick, the repository when its check is due, the region's offer, the
    /// slot, the reboot.
    pub async fn look(&self, looked: &mut Looked) {
        // A stick is imported once per insertion: it stays plugged while the node reboots.
        match StickInsertion::find(&self.stick, &self.sys_class_block) {
            Some(insertion) if looked.stick.as_ref() != Some(&insertion) => {
                let device = insertion.device.clone();
                looked.stick = Some(insertion);
                info!(device = %device.display(), "update stick found");
                // Refusals are counted and logged by the domain.
                let _ = self
                    .updater
                    .import(
                        &ImportSource::Device(device),
                        RebootWhen::Window,
                        &LogProgress,
                    )
                    .await;
            }
            Some(_) => {}
            None => looked.stick = None,
        }
        if let Some(repository) = &self.repository {
            let now = self.clock.now();
            if looked.next_check.is_none_or(|due| due <= now) {
                looked.next_check = now.checked_add(repository.every).ok();
                // Refusals and errors are recorded and logged by the domain; an import running
                // from the CLI (the record is busy) waits for the next check.
                if let Ok(Some(version)) = self
                    .updater
                    .check(&repository.url, &repository.client, &LogProgress)
                    .await
                {
                    info!(%version, url = %repository.url, "new release staged from the repository");
                }
            }
        }
        if let Some(region) = &self.region {
            self.follow_region(region, looked).await;
        }
        let phase = match self.updater.record() {
            Ok(record) => record.phase,
            Err(err) => {
                warn!(%err, "cannot read the update record");
                return;
            }
        };
        if matches!(phase, Phase::Staged { .. } | Phase::Installing { .. }) {
            let updater = self.updater.clone();
            let installed =
                tokio::task::spawn_blocking(move || updater.install_staged(&LogProgress)).await;
            match installed {
                Ok(Ok(_) | Err(UpdateError::Record(RecordError::Busy { .. }))) => {}
                Ok(Err(err)) => warn!(%err, "writing the inactive slot failed; trying again"),
                Err(err) => warn!(%err, "the slot writer panicked"),
            }
        }
        if looked.reboot_failed {
            // The servers are stopped and the record says rebooting, but systemd refused the
            // reboot (busy, D-Bus restarting): ask again each look rather than leave a drained
            // node running the old version.
            match self.updater.reboot_pending() {
                Ok(Some(version)) => {
                    warn!(%version, "the reboot into the new version has not happened; asking again");
                    looked.reboot_failed = self.reboot(&version).await;
                }
                Ok(None) => looked.reboot_failed = false,
                Err(err) => warn!(%err, "cannot read the update record"),
            }
            return;
        }
        match self
            .updater
            .reboot_due(self.window.current().as_ref(), self.clock.now())
        {
            Ok(Some(version)) => {
                info!(%version, "reboot into the installed release is due");
                match self
                    .updater
                    .reboot_into_installed(
                        self.drain.as_ref(),
                        self.power.as_ref(),
                        self.stop_timeout,
                    )
                    .await
                {
                    Ok(()) => {}
                    Err(err) => {
                        warn!(%err, "rebooting into the new version failed");
                        looked.reboot_failed = matches!(
                            err,
                            UpdateError::Host {
                                step: REBOOTING,
                                ..
                            }
                        );
                    }
                }
            }
            Ok(None) | Err(UpdateError::Record(RecordError::Busy { .. })) => {}
            Err(err) => warn!(%err, "cannot decide on a reboot"),
        }
    }
}
