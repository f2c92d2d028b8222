//! Drives libvirt and the server's files towards each server's desired state and writes status back.
//!
//! Every step checks before it acts, so the whole function can be re-run after a crash at any line:
//! the disk is created only if missing (and never re-created once it existed: a lost disk is an ERROR,
//! not a silent reinstall), the config drive is rebuilt if missing, the domain is (re)defined when its
//! spec digest differs, and power actions follow from the observed power state. A graceful shutdown's
//! deadline is stored, so a restart mid-shutdown keeps counting from the original request.

use super::config_drive::ConfigDrive;
use super::files::{ServerFiles, ServerPaths};
use super::hypervisor::{
    DomainPower, DomainSpec, DomainStatus, Hypervisor, NicAttachment, NicSpec, ShutoffReason,
    VirtType,
};
use super::repo::{self, ServerRecord};
use super::server::{Fault, PowerIntent, PowerState, RebootKind, Server, ServerStatus};
use super::service::SERVERS;
use crate::image::{BootImage, ImageService};
use crate::network::chassis::{Vif, VifPlugger};
use crate::reconcile::{BoxError, Next, Reconciler};
use crate::store::Store;
use crate::system::clock::Clock;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use uuid::Uuid;

/// A server that never ran goes to ERROR after this many failed attempts (it keeps being retried).
pub const BUILD_ATTEMPTS: u32 = 3;
/// How often a graceful shutdown is checked on.
const SHUTDOWN_POLL: Duration = Duration::from_millis(500);
const GIB: u64 = 1024 * 1024 * 1024;

/// What the reconciler needs from the configuration.
#[derive(Debug, Clone)]
pub struct ServerReconcilerSettings {
    /// This node's id, written into every domain it owns.
    pub node_id: String,
    /// Accelerator chosen at start.
    pub virt_type: VirtType,
    /// QEMU machine type.
    pub machine: String,
    /// OVS bridge NICs on networks plug into.
    pub integration_bridge: String,
    /// Graceful shutdown timeout.
    pub shutdown_timeout: Duration,
}

/// The servers reconciler.
pub struct ServerReconciler {
    store: Arc<Store>,
    images: Arc<ImageService>,
    hypervisor: Arc<dyn Hypervisor>,
    files: Arc<dyn ServerFiles>,
    vifs: Arc<dyn VifPlugger>,
    clock: Arc<dyn Clock>,
    settings: ServerReconcilerSettings,
}

/// How a convergence attempt failed.
enum Failure {
    /// Retrying will not help (the disk is gone); recorded as ERROR, not retried until something changes.
    Permanent(String),
    /// Retry with backoff.
    Transient(BoxError),
}

impl<E: Into<BoxError>> From<E> for Failure {
    fn from(err: E) -> Self {
        Self::Transient(err.into())
    }
}

fn power_of(domain: Option<&DomainStatus>) -> PowerState {
    match domain.map(|d| d.power) {
        None => PowerState::NoState,
        Some(DomainPower::Running) => PowerState::Running,
        Some(DomainPower::Paused) => PowerState::Paused,
        Some(DomainPower::Shutoff(_)) => PowerState::Shutdown,
        Some(DomainPower::Crashed) => PowerState::Crashed,
    }
}

/// Root disk size: the flavor's, or for disk-less flavors as large as the image needs.
pub fn root_disk_bytes(flavor_disk_gb: u64, image: &BootImage) -> u64 {
    if flavor_disk_gb > 0 {
        flavor_disk_gb * GIB
    } else {
        // Disk sizes are whole 512-byte sectors; a raw image need not be.
        image
            .virtual_size
            .max(image.min_disk_gb * GIB)
            .div_ceil(512)
            * 512
    }
}

/// Tap names follow Nova: `tap` + the first 11 characters of the port id (fits IFNAMSIZ).
pub fn tap_name(port_id: Uuid) -> String {
    let id = port_id.to_string();
    format!("tap{}", &id[..11])
}

impl ServerReconciler {
    /// A reconciler over these collaborators.
    pub fn new(
        store: Arc<Store>,
        images: Arc<ImageService>,
        hypervisor: Arc<dyn Hypervisor>,
        files: Arc<dyn ServerFiles>,
        vifs: Arc<dyn VifPlugger>,
        clock: Arc<dyn Clock>,
        settings: ServerReconcilerSettings,
    ) -> Self {
        Self {
            store,
            images,
            hypervisor,
            files,
            vifs,
            clock,
            settings,
        }
    }

    /// The domain spec of a server.
    fn spec(&self, server: &Server, paths: &ServerPaths) -> DomainSpec {
        let nics = server
            .nics
            .iter()
            .map(|nic| {
                let dev = tap_name(nic.port_id);
                let attachment = if nic.network_id.is_some() {
                    NicAttachment::Ovs {
                        bridge: self.settings.integration_bridge.clone(),
                        dev,
                    }
                } else {
                    NicAttachment::Tap { dev }
                };
                NicSpec {
                    port_id: nic.port_id,
                    mac: nic.mac.clone(),
                    attachment,
                }
            })
            .collect();
        DomainSpec {
            id: server.id,
            node_id: self.settings.node_id.clone(),
            title: server.name.clone(),
            vcpus: server.flavor.vcpus,
            memory_mib: server.flavor.ram_mb,
            virt_type: self.settings.virt_type,
            machine: self.settings.machine.clone(),
            root_disk: paths.root_disk.clone(),
            root_disk_format: crate::image::format::DiskFormat::Qcow2,
            config_drive: paths.config_drive.clone(),
            console_log: paths.console_log.clone(),
            nics,
        }
    }

    /// Removes the domain and files of a server that should not exist.
    fn teardown(&self, id: Uuid) -> Result<(), BoxError> {
        // First off the switch: a VIF left behind would keep an OVN port bound to a dead tap.
        self.vifs.unplug_server(id)?;
        if let Some(domain) = self.hypervisor.domain(id)? {
            if matches!(
                domain.power,
                DomainPower::Running | DomainPower::Paused | DomainPower::Crashed
            ) {
                self.hypervisor.power_off(id)?;
            }
            self.hypervisor.undefine(id)?;
            info!(server = %id, "domain removed");
        }
        self.files.remove(id)?;
        Ok(())
    }

    fn converge(&self, original: &ServerRecord) -> Result<Next, BoxError> {
        let mut record = original.clone();
        let now = self.clock.now();
        let outcome = self.drive(&mut record);
        let result = match outcome {
            Ok(next) => {
                record.failed_attempts = 0;
                record.server.fault = None;
                if next == Next::Done {
                    record.server.observed_generation = record.server.generation;
                }
                Ok(next)
            }
            Err(Failure::Permanent(message)) => {
                if record.server.status != ServerStatus::Error {
                    warn!(server = %record.server.id, %message, "server failed permanently");
                }
                record.server.status = ServerStatus::Error;
                if record
                    .server
                    .fault
                    .as_ref()
                    .is_none_or(|f| f.message != message)
                {
                    record.server.fault = Some(Fault {
                        code: 500,
                        message,
                        created: now,
                    });
                }
                record.failed_attempts = 0;
                record.server.observed_generation = record.server.generation;
                Ok(Next::Done)
            }
            Err(Failure::Transient(err)) => {
                record.failed_attempts += 1;
                record.server.fault = Some(Fault {
                    code: 500,
                    message: err.to_string(),
                    created: now,
                });
                if record.server.status == ServerStatus::Build
                    && record.failed_attempts >= BUILD_ATTEMPTS
                {
                    record.server.status = ServerStatus::Error;
                }
                Err(err)
            }
        };
        if record != *original {
            self.store
                .write(|tx| repo::write_observed(tx, &record, now))?;
        }
        result
    }

    fn drive(&self, record: &mut ServerRecord) -> Result<Next, Failure> {
        let id = record.server.id;
        let recorded_power = record.server.power_state;
        let mut domain = self.hypervisor.domain(id)?;
        record.server.power_state = power_of(domain.as_ref());

        let Some(image) = self.images.find(record.server.image_id)? else {
            return Err(Failure::Permanent(format!(
                "image {} is gone",
                record.server.image_id
            )));
        };
        // Servers are only created from active images, and an active image never loses its data.
        let image = image
            .bootable()
            .map_err(|err| Failure::Permanent(err.to_string()))?;
        let paths = self.files.paths(id);
        if !self.files.root_disk_exists(id)? {
            if record.provisioned {
                return Err(Failure::Permanent(format!(
                    "root disk {} is missing; the server cannot be recovered automatically",
                    paths.root_disk.display()
                )));
            }
            if !self.images.file_exists(image.id)? {
                return Err(Failure::Permanent(format!(
                    "file of image {} is missing",
                    image.id
                )));
            }
            let size = root_disk_bytes(record.server.flavor.disk_gb, &image);
            self.files.create_root_disk(
                id,
                &self.images.path(image.id),
                image.disk_format,
                size,
            )?;
            info!(server = %id, size, "root disk created");
        }
        record.provisioned = true;

        let spec = self.spec(&record.server, &paths);
        if !self.files.config_drive_exists(id)? {
            self.files
                .write_config_drive(id, &ConfigDrive::for_server(&record.server, &spec.nics))?;
        }
        let digest = spec.digest();
        if domain.as_ref().and_then(|d| d.spec_digest.as_deref()) != Some(digest.as_str()) {
            self.hypervisor.define(&spec)?;
            info!(server = %id, "domain defined");
            // Defining never changes the power state; a new domain starts out shut off.
            let power = domain.map_or(DomainPower::Shutoff(ShutoffReason::Unknown), |d| d.power);
            domain = Some(DomainStatus {
                id,
                power,
                spec_digest: Some(digest),
            });
        }
        let Some(domain) = domain else {
            return Err(Failure::Transient(
                format!("domain of server {id} missing right after define").into(),
            ));
        };
        record.server.power_state = power_of(Some(&domain));
        self.drive_power(record, domain.power, recorded_power, &spec.nics)
    }

    fn mark_running(&self, record: &mut ServerRecord) {
        record.server.status = ServerStatus::Active;
        record.server.power_state = PowerState::Running;
        record.stop_deadline = None;
        if !record.ever_started {
            record.ever_started = true;
            record.server.launched_at = Some(self.clock.now());
        }
    }

    /// Starts a guest that is down: ACTIVE, or BUILD→ACTIVE on first boot.
    fn start(&self, record: &mut ServerRecord, nics: &[NicSpec]) -> Result<(), Failure> {
        self.hypervisor.start(record.server.id)?;
        info!(server = %record.server.id, "domain started");
        // The tap devices exist only now; plug them in fresh so the switch opens the new devices.
        self.plug(record.server.id, nics, true)?;
        self.mark_running(record);
        Ok(())
    }

    /// Puts the server's network NICs on the integration bridge.
    fn plug(&self, server: Uuid, nics: &[NicSpec], fresh: bool) -> Result<(), Failure> {
        for nic in nics {
            if let NicAttachment::Ovs { dev, .. } = &nic.attachment {
                let vif = Vif {
                    device: dev.clone(),
                    port_id: nic.port_id,
                    mac: nic.mac.clone(),
                    server_id: server,
                };
                self.vifs.plug(&vif, fresh)?;
            }
        }
        Ok(())
    }

    /// Waits for a graceful shutdown: `Some(next)` while waiting, `None` once the deadline passed.
    fn graceful_shutdown(&self, record: &mut ServerRecord) -> Result<Option<Next>, Failure> {
        let now = self.clock.now();
        match record.stop_deadline {
            None => {
                self.hypervisor.shutdown(record.server.id)?;
                let timeout = jiff::SignedDuration::try_from(self.settings.shutdown_timeout)
                    .unwrap_or_default();
                record.stop_deadline = Some(now.checked_add(timeout).unwrap_or(now));
                Ok(Some(Next::After(
                    SHUTDOWN_POLL
                        .min(self.settings.shutdown_timeout)
                        .max(Duration::from_millis(10)),
                )))
            }
            Some(deadline) if now < deadline => {
                let left = Duration::try_from(deadline.duration_since(now)).unwrap_or_default();
                Ok(Some(Next::After(
                    SHUTDOWN_POLL.min(left).max(Duration::from_millis(10)),
                )))
            }
            Some(_) => {
                info!(server = %record.server.id, "guest ignored the shutdown request; powering off");
                self.hypervisor.power_off(record.server.id)?;
                record.stop_deadline = None;
                Ok(None)
            }
        }
    }

    fn drive_power(
        &self,
        record: &mut ServerRecord,
        power: DomainPower,
        recorded: PowerState,
        nics: &[NicSpec],
    ) -> Result<Next, Failure> {
        let on = matches!(power, DomainPower::Running | DomainPower::Paused);
        if record.server.power_intent == PowerIntent::Running
            && record.reboot_requested > record.reboot_done
        {
            let kind = record.server.pending_reboot.unwrap_or(RebootKind::Soft);
            record.server.status = if kind == RebootKind::Hard {
                ServerStatus::HardReboot
            } else {
                ServerStatus::Reboot
            };
            if on {
                match kind {
                    RebootKind::Soft => {
                        if let Some(next) = self.graceful_shutdown(record)? {
                            return Ok(next);
                        }
                    }
                    RebootKind::Hard => self.hypervisor.power_off(record.server.id)?,
                }
            }
            self.start(record, nics)?;
            // At least once: a crash between the start and this write reboots once more on restart.
            record.reboot_done = record.reboot_requested;
            record.server.pending_reboot = None;
            return Ok(Next::Done);
        }

        match (record.server.power_intent, power) {
            (PowerIntent::Running, DomainPower::Running) => {
                self.plug(record.server.id, nics, false)?;
                self.mark_running(record);
            }
            (PowerIntent::Running, DomainPower::Paused) => {
                record.server.status = ServerStatus::Paused;
                record.server.power_state = PowerState::Paused;
            }
            (PowerIntent::Running, DomainPower::Shutoff(ShutoffReason::GuestShutdown))
                if record.ever_started
                    && record.stop_deadline.is_none()
                    && recorded == PowerState::Running =>
            {
                // The guest powered itself off: like Nova, it stays off until someone starts it.
                let now = self.clock.now();
                let (id, seen) = (record.server.id, record.server.generation);
                if let Some(generation) = self
                    .store
                    .write(|tx| repo::adopt_guest_shutdown(tx, id, seen, now))?
                {
                    info!(server = %id, "guest shut itself down; server is now SHUTOFF");
                    record.server.generation = generation;
                    record.server.power_intent = PowerIntent::Stopped;
                    record.server.status = ServerStatus::Shutoff;
                    record.server.power_state = PowerState::Shutdown;
                } else {
                    // Desired state changed meanwhile; look again with the new desire.
                    return Ok(Next::After(Duration::ZERO));
                }
            }
            (PowerIntent::Running, DomainPower::Shutoff(_) | DomainPower::Crashed) => {
                if matches!(power, DomainPower::Crashed) {
                    self.hypervisor.power_off(record.server.id)?;
                }
                self.start(record, nics)?;
            }
            (PowerIntent::Stopped, DomainPower::Running | DomainPower::Paused) => {
                if let Some(next) = self.graceful_shutdown(record)? {
                    return Ok(next);
                }
                record.server.status = ServerStatus::Shutoff;
                record.server.power_state = PowerState::Shutdown;
            }
            (PowerIntent::Stopped, DomainPower::Shutoff(_) | DomainPower::Crashed) => {
                record.server.status = if record.ever_started {
                    ServerStatus::Shutoff
                } else {
                    ServerStatus::Build
                };
                record.server.power_state = PowerState::Shutdown;
                record.stop_deadline = None;
            }
        }
        Ok(Next::Done)
    }
}

impl Reconciler for ServerReconciler {
    fn kind(&self) -> &'static str {
        SERVERS
    }

    fn all_keys(&self) -> Result<Vec<String>, BoxError> {
        let mut keys: HashSet<Uuid> = self.store.read(repo::ids)?.into_iter().collect();
        keys.extend(self.files.list()?);
        match self.hypervisor.domains() {
            Ok(domains) => keys.extend(domains.into_iter().map(|d| d.id)),
            // Rows and files are still worth a pass; observe() reports libvirt as unhealthy.
            Err(err) => {
                warn!(%err, "cannot list domains; orphan domains are collected on the next resync");
            }
        }
        Ok(keys.into_iter().map(|id| id.to_string()).collect())
    }

    fn changed(&self) -> Result<Vec<(String, i64)>, BoxError> {
        Ok(self
            .store
            .read(repo::pending)?
            .into_iter()
            .map(|(id, g)| (id.to_string(), g))
            .collect())
    }

    fn observe(&self) -> Result<Vec<String>, BoxError> {
        let domains = self.hypervisor.domains()?;
        let recorded = self.store.read(repo::recorded_power)?;
        let mut keys = Vec::new();
        let mut seen = HashSet::new();
        for domain in &domains {
            seen.insert(domain.id);
            if recorded.get(&domain.id) != Some(&power_of(Some(domain))) {
                keys.push(domain.id.to_string());
            }
        }
        for (id, power) in recorded {
            if !seen.contains(&id) && power != PowerState::NoState {
                keys.push(id.to_string());
            }
        }
        Ok(keys)
    }

    fn reconcile(&self, key: &str) -> Result<Next, BoxError> {
        let id = Uuid::parse_str(key)?;
        match self.store.read(|tx| repo::load(tx, id))? {
            None => {
                self.teardown(id)?;
                Ok(Next::Done)
            }
            Some(record) if record.server.deleting => {
                self.teardown(id)?;
                self.store.write(|tx| repo::delete(tx, id))?;
                info!(server = %id, "server deleted");
                Ok(Next::Done)
            }
            Some(record) => self.converge(&record),
        }
    }
}
