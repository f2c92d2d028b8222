//! The health gate: after a reboot into a new version, the boot counts as good only when the node
//! does its job again — not merely when it started. `scs-edge-update-gate.service` runs
//! `scs-edge-agent update gate`, ordered before `boot-complete.target`; passing lets
//! `systemd-bless-boot` mark the UKI good, failing marks it bad and reboots into the version the
//! node came from. The verdict is recorded: a failed version is never taken again on its own.
//!
//! What "does its job" means is [`GateProbes`]: the agent READY, libvirt answering, the OVN chassis
//! registered with `ovn-controller` connected, every server that was ACTIVE before the update
//! ACTIVE again. Reaching the region is deliberately not part of it: an air-gapped site must be able
//! to update.

use super::host::{BootEntry, Power, SlotState};
use super::record::{Outcome, Phase};
use super::{UpdateError, Updater};
use futures::future::BoxFuture;
use std::time::Duration;
use tracing::{info, warn};
use uuid::Uuid;

/// How often a new version may fail to come up for reasons other than itself (a power cut before
/// the loader counted a try) before it counts as failed anyway.
pub const MAX_BOOT_ATTEMPTS: u32 = 2;

/// What the gate looks at.
pub trait GateProbes: Send + Sync {
    /// What is wrong with the node right now. `restore` are the servers that must be ACTIVE.
    fn unhealthy(&self, restore: &[Uuid]) -> BoxFuture<'_, Findings>;
}

/// What the probes found wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Every reason the node is not healthy; empty when it is.
    pub reasons: Vec<String>,
    /// Some reason will not go away by waiting: a unit the node needs has failed and systemd gave
    /// up restarting it. The gate then decides at once instead of waiting out its window with a
    /// node that cannot serve.
    pub settled: bool,
}

impl Findings {
    /// A reason that may still go away (a daemon starting, a server booting).
    pub fn pending(&mut self, reason: String) {
        self.reasons.push(reason);
    }

    /// A reason that will not go away by itself.
    pub fn settled(&mut self, reason: String) {
        self.reasons.push(reason);
        self.settled = true;
    }

    /// Adds `other`'s findings to these.
    pub fn extend(&mut self, other: Self) {
        self.reasons.extend(other.reasons);
        self.settled |= other.settled;
    }
}

/// Time since the machine booted (`CLOCK_BOOTTIME`): the gate's window counts from the boot, so
/// a slow start of the units before it eats into the window rather than extending it.
pub trait BootClock: Send + Sync {
    /// Elapsed since boot.
    fn since_boot(&self) -> Duration;
}

/// The kernel's boot clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelBootClock;

impl BootClock for KernelBootClock {
    fn since_boot(&self) -> Duration {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map(Duration::from)
            .unwrap_or_default()
    }
}

/// How long the gate waits and how often it looks.
#[derive(Debug, Clone, Copy)]
pub struct GateSettings {
    /// From boot until the node must be healthy.
    pub window: Duration,
    /// Between two looks.
    pub poll: Duration,
}

/// What the gate decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateVerdict {
    /// Not an update boot: nothing to judge.
    NothingToVerify,
    /// The new version is healthy and committed.
    Committed(semver::Version),
    /// The new version failed; its entry is marked bad and a reboot into `from` was asked for.
    RolledBack {
        /// The failed version.
        version: semver::Version,
        /// Why.
        reason: String,
    },
    /// The new version never ran (a power cut before the loader counted it): it is booted or
    /// written again.
    NotReached {
        /// The version.
        version: semver::Version,
    },
    /// The boot loader already returned to the old version (the new one never reached the gate).
    ReturnedEarly {
        /// The version that did not come up.
        version: semver::Version,
    },
}

/// Judges this boot. Holds the record's lock throughout, so no import or install interleaves.
pub async fn judge(
    updater: &Updater,
    probes: &dyn GateProbes,
    boot_entry: &dyn BootEntry,
    power: &dyn Power,
    boot_clock: &dyn BootClock,
    settings: GateSettings,
) -> Result<GateVerdict, UpdateError> {
    let lock = updater.lock_wait()?;
    let (Phase::Rebooting {
        version,
        staged,
        from,
        restore,
        ..
    }
    | Phase::Verifying {
        version,
        staged,
        from,
        restore,
        ..
    }) = lock.read()?.phase
    else {
        return Ok(GateVerdict::NothingToVerify);
    };
    let booted = updater.running().clone();
    let now = updater.clock.now();
    if booted != version {
        // The boot loader chose the old entry. Either the new one used up its tries before any
        // gate ran — it does not come up — or the power failed before the loader counted a try,
        // or while it renamed the entry: then the new version never ran, and it is booted (or
        // written) again rather than condemned.
        let mut again = staged.clone();
        again.boot_attempts += 1;
        let slot = if staged.boot_attempts < MAX_BOOT_ATTEMPTS {
            updater.sysupdate.slot(&version)
        } else {
            // It keeps not coming up although its entry looks fine: the loader skips it.
            Ok(SlotState::TriesExhausted)
        };
        match slot {
            Ok(SlotState::Bootable) => {
                warn!(%version, %booted, "the new version did not boot, but its entry has tries left: rebooting into it again");
                lock.update(|record| {
                    record.phase = Phase::Installed {
                        staged: again,
                        at: now,
                    };
                })?;
                return Ok(GateVerdict::NotReached { version });
            }
            Ok(SlotState::Missing) => {
                warn!(%version, %booted, "the new version's slot or boot entry is not whole: writing it again");
                lock.update(|record| record.phase = Phase::Staged { staged: again })?;
                return Ok(GateVerdict::NotReached { version });
            }
            Ok(SlotState::TriesExhausted) => {}
            Err(err) => {
                warn!(%version, %err, "cannot read the slots; counting the update as failed");
            }
        }
        let reason = format!(
            "version {version} did not come up: the boot loader returned to {booted} after its boot tries"
        );
        warn!(%version, %booted, "{reason}");
        lock.update(|record| record.roll_back(&version, &booted, &reason, now))?;
        return Ok(GateVerdict::ReturnedEarly { version });
    }
    lock.update(|record| {
        record.phase = Phase::Verifying {
            version: version.clone(),
            staged: staged.clone(),
            from: from.clone(),
            restore: restore.clone(),
            since: now,
        };
    })?;
    info!(%version, %from, servers = restore.len(), window = ?settings.window, "health gate: checking the new version");
    let (reasons, after) = loop {
        let findings = probes.unhealthy(&restore).await;
        let since_boot = boot_clock.since_boot();
        if findings.reasons.is_empty() || findings.settled || since_boot >= settings.window {
            break (findings.reasons, since_boot);
        }
        tokio::time::sleep(settings.poll).await;
    };
    let now = updater.clock.now();
    if reasons.is_empty() {
        lock.update(|record| {
            record.phase = Phase::Idle;
            record.last_outcome = Some(Outcome::Committed {
                version: version.clone(),
                from: from.clone(),
                at: now,
            });
        })?;
        let _ = std::fs::remove_dir_all(updater.staged_dir(&version));
        info!(%version, "health gate passed; the new version is committed");
        return Ok(GateVerdict::Committed(version));
    }
    let reason = format!(
        "health gate failed {}s after boot (window {}s): {}",
        after.as_secs(),
        settings.window.as_secs(),
        reasons.join("; ")
    );
    warn!(%version, %from, "{reason}; rolling back");
    lock.update(|record| record.roll_back(&version, &from, &reason, now))?;
    drop(lock);
    boot_entry.mark_bad().map_err(|reason| UpdateError::Host {
        step: "marking the boot entry bad",
        reason,
    })?;
    power.reboot().await.map_err(|reason| UpdateError::Host {
        step: "rebooting into the previous version",
        reason,
    })?;
    Ok(GateVerdict::RolledBack { version, reason })
}
