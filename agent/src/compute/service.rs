//! The compute domain API: the one place requests are validated and desired state is written.
//! The OpenStack façade, the admin CLI and (later) the region link all call these functions.

use super::ComputeError;
use super::files::ServerFiles;
use super::flavor::{self, Flavor, NewFlavor};
use super::host::HostInventory;
use super::keypair::{self, CreatedKeypair, Keypair, NewKeypair};
use super::repo::{self, DesiredChange};
use super::server::{NewServer, Nic, PowerIntent, PowerState, RebootKind, Server, ServerStatus};
use crate::image::ImageService;
use crate::reconcile::WorkSink;
use crate::store::Store;
use crate::system::clock::Clock;
use std::sync::Arc;
use uuid::Uuid;

/// The reconcile kind of servers.
pub const SERVERS: &str = "servers";

/// Capacity policy (from `[compute]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ComputeSettings {
    /// vCPUs per host CPU.
    pub cpu_allocation_ratio: f64,
    /// Guest RAM per host RAM.
    pub ram_allocation_ratio: f64,
    /// RAM kept for the host, MiB.
    pub reserved_host_memory_mb: u64,
    /// Servers may have NICs on (OVN) networks.
    pub network_enabled: bool,
    /// The site's one availability zone.
    pub availability_zone: String,
}

impl From<&crate::config::AgentConfig> for ComputeSettings {
    fn from(c: &crate::config::AgentConfig) -> Self {
        Self {
            cpu_allocation_ratio: c.compute.cpu_allocation_ratio,
            ram_allocation_ratio: c.compute.ram_allocation_ratio,
            reserved_host_memory_mb: c.compute.reserved_host_memory_mb,
            network_enabled: c.network.enabled,
            availability_zone: c.compute.availability_zone.clone(),
        }
    }
}

/// Flavors and servers.
pub struct ComputeService {
    store: Arc<Store>,
    images: Arc<ImageService>,
    host: Arc<dyn HostInventory>,
    clock: Arc<dyn Clock>,
    loops: Arc<dyn WorkSink>,
    settings: ComputeSettings,
    files: Arc<dyn ServerFiles>,
}

const GIB: u64 = 1024 * 1024 * 1024;
/// The most console log one request reads.
const CONSOLE_READ_LIMIT: u64 = 1024 * 1024;

/// Neutron's MAC prefix, so guests and tools recognise cloud NICs.
const MAC_PREFIX: [u8; 3] = [0xfa, 0x16, 0x3e];

fn random_mac() -> String {
    let tail: [u8; 3] = rand::random();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        MAC_PREFIX[0], MAC_PREFIX[1], MAC_PREFIX[2], tail[0], tail[1], tail[2]
    )
}

impl ComputeService {
    /// The service. `loops` hears about every desired-state write (the daemon's controller, or nothing
    /// in the CLI, where the daemon notices through the store).
    pub fn new(
        store: Arc<Store>,
        images: Arc<ImageService>,
        host: Arc<dyn HostInventory>,
        clock: Arc<dyn Clock>,
        loops: Arc<dyn WorkSink>,
        settings: ComputeSettings,
        files: Arc<dyn ServerFiles>,
    ) -> Self {
        Self {
            store,
            images,
            host,
            clock,
            loops,
            settings,
            files,
        }
    }

    /// The last `lines` lines (all when `None`) of a server's serial console, as Nova's
    /// `os-getConsoleOutput` gives them. At most the last 1 MiB of the log is read: a guest that
    /// floods its console cannot make a request read gigabytes.
    pub fn console_output(&self, id: Uuid, lines: Option<usize>) -> Result<String, ComputeError> {
        let server = self.server(id)?;
        let bytes = self
            .files
            .console_tail(server.id, CONSOLE_READ_LIMIT)
            .map_err(|err| ComputeError::Console(err.to_string()))?;
        let text = String::from_utf8_lossy(&bytes).replace('\r', "");
        Ok(match lines {
            Some(n) => {
                let all: Vec<&str> = text.lines().collect();
                let mut tail = all[all.len().saturating_sub(n)..].join("\n");
                if !tail.is_empty() {
                    tail.push('\n');
                }
                tail
            }
            None => text,
        })
    }

    /// Creates a flavor.
    pub fn create_flavor(&self, request: NewFlavor) -> Result<Flavor, ComputeError> {
        request.validate()?;
        let now = self.clock.now();
        self.store.write(|tx| flavor::insert(tx, request, now))
    }

    /// Creates each flavor whose id and name are both unused, in one transaction; returns the names
    /// created. Existing flavors are left as the operator keeps them.
    pub fn seed_flavors(&self, flavors: Vec<NewFlavor>) -> Result<Vec<String>, ComputeError> {
        for request in &flavors {
            request.validate()?;
        }
        let now = self.clock.now();
        self.store.write(|tx| {
            let existing = flavor::list(tx)?;
            let mut created = Vec::new();
            for request in flavors {
                let taken = existing.iter().any(|f| {
                    f.name == request.name || Some(f.id.as_str()) == request.id.as_deref()
                });
                if !taken {
                    created.push(flavor::insert(tx, request, now)?.name);
                }
            }
            Ok(created)
        })
    }

    /// Imports or generates a keypair for a user.
    pub fn create_keypair(&self, request: &NewKeypair) -> Result<CreatedKeypair, ComputeError> {
        let created = keypair::prepare(request, self.clock.now())?;
        self.store
            .write(|tx| keypair::insert(tx, &created.keypair))?;
        Ok(created)
    }

    /// A user's keypairs, by name.
    pub fn keypairs(&self, user_id: &str) -> Result<Vec<Keypair>, ComputeError> {
        self.store.read(|tx| keypair::list(tx, user_id))
    }

    /// One of a user's keypairs.
    pub fn keypair(&self, user_id: &str, name: &str) -> Result<Keypair, ComputeError> {
        self.store
            .read(|tx| keypair::find(tx, user_id, name))?
            .ok_or_else(|| ComputeError::KeypairNotFound(name.to_owned()))
    }

    /// Deletes a user's keypair; servers booted with it keep their copy of the key.
    pub fn delete_keypair(&self, user_id: &str, name: &str) -> Result<(), ComputeError> {
        self.store.write(|tx| keypair::delete(tx, user_id, name))
    }

    /// All flavors.
    pub fn flavors(&self) -> Result<Vec<Flavor>, ComputeError> {
        self.store.read(flavor::list)
    }

    /// One flavor.
    pub fn flavor(&self, id: &str) -> Result<Flavor, ComputeError> {
        self.store
            .read(|tx| flavor::find(tx, id))?
            .ok_or_else(|| ComputeError::FlavorNotFound(id.to_owned()))
    }

    /// Deletes a flavor; servers created from it keep their copy.
    pub fn delete_flavor(&self, id: &str) -> Result<(), ComputeError> {
        self.store.write(|tx| flavor::delete(tx, id))
    }

    /// Validates and records a new server; the reconciler builds it. Nothing is written when any check
    /// fails.
    pub fn create_server(&self, request: NewServer) -> Result<Server, ComputeError> {
        request.validate()?;
        // Only active images boot; a queued one is a bad request ("image … is not active").
        let image = self.images.bootable(request.image_id)?;
        let host = self.host.resources().map_err(|err| {
            ComputeError::NoCapacity(format!("cannot read host resources: {err}"))
        })?;
        let now = self.clock.now();
        let (server, network_generation) = self.store.write(|tx| -> Result<(Server, Option<i64>), ComputeError> {
            let flavor = flavor::find(tx, &request.flavor_id)?.ok_or_else(|| ComputeError::Invalid {
                field: "flavorRef",
                reason: format!("flavor {} could not be found", request.flavor_id),
            })?;
            if flavor.ram_mb < image.min_ram_mb {
                return Err(ComputeError::FlavorImageMismatch(format!(
                    "Flavor's memory is too small for requested image: {} MiB < min_ram {} MiB",
                    flavor.ram_mb, image.min_ram_mb
                )));
            }
            if flavor.disk_gb > 0 {
                if flavor.disk_gb * GIB < image.virtual_size {
                    return Err(ComputeError::FlavorImageMismatch(format!(
                        "Flavor's disk is too small for requested image: {} GiB < image size {} bytes",
                        flavor.disk_gb, image.virtual_size
                    )));
                }
                if flavor.disk_gb < image.min_disk_gb {
                    return Err(ComputeError::FlavorImageMismatch(format!(
                        "Flavor's disk is too small for requested image: {} GiB < min_disk {} GiB",
                        flavor.disk_gb, image.min_disk_gb
                    )));
                }
            }
            self.check_capacity(tx, &flavor, host)?;
            if let Some(zone) = &request.availability_zone
                && *zone != self.settings.availability_zone
            {
                return Err(ComputeError::Invalid {
                    field: "availability_zone",
                    reason: format!("the requested availability zone {zone} is not available"),
                });
            }
            let key_data = match &request.key_name {
                Some(name) => Some(
                    keypair::find(tx, &request.user_id, name)?
                        .ok_or_else(|| ComputeError::Invalid {
                            field: "key_name",
                            reason: format!("keypair {name} could not be found"),
                        })?
                        .public_key,
                ),
                None => None,
            };

            let id = request.id.unwrap_or_else(Uuid::new_v4);
            if repo::exists(tx, id)? {
                return Err(ComputeError::Duplicate { what: "server", id: id.to_string() });
            }
            if !request.networks.is_empty() && !self.settings.network_enabled {
                return Err(ComputeError::Invalid {
                    field: "networks",
                    reason: "networking (OVN) is not enabled on this node".into(),
                });
            }
            let offset = request.networks.len() as u32;
            let mut ports = Vec::with_capacity(request.nics as usize);
            for position in 0..request.nics {
                let mac = loop {
                    let candidate = random_mac();
                    if !repo::mac_in_use(tx, &candidate)? && !ports.iter().any(|p: &Nic| p.mac == candidate) {
                        break candidate;
                    }
                };
                ports.push(Nic { port_id: Uuid::new_v4(), mac, position: position + offset, network_id: None });
            }
            let server = Server {
                id,
                name: request.name,
                project_id: request.project_id,
                user_id: request.user_id,
                image_id: image.id,
                flavor,
                user_data: request.user_data,
                metadata: request.metadata,
                key_name: request.key_name,
                key_data,
                availability_zone: self.settings.availability_zone.clone(),
                power_intent: PowerIntent::Running,
                pending_reboot: None,
                deleting: false,
                generation: 1,
                observed_generation: 0,
                status: ServerStatus::Build,
                power_state: PowerState::NoState,
                fault: None,
                nics: ports,
                created_at: now,
                updated_at: now,
                launched_at: None,
            };
            repo::insert(tx, &server)?;
            let mut network_generation = None;
            for (position, wanted) in request.networks.iter().enumerate() {
                network_generation = Some(crate::network::service::attach_server_port(
                    tx,
                    now,
                    *wanted,
                    server.id,
                    &server.project_id,
                    position as u32,
                    request.security_groups.clone(),
                )?);
            }
            let mut server = server;
            if !request.networks.is_empty() {
                server = repo::load(tx, server.id)?
                    .map(|r| r.server)
                    .ok_or_else(|| ComputeError::ServerNotFound(server.id.to_string()))?;
            }
            Ok((server, network_generation))
        })?;
        self.loops
            .desired_changed(SERVERS, &server.id.to_string(), server.generation);
        if let Some(generation) = network_generation {
            self.loops.desired_changed(
                crate::network::service::OVN,
                crate::network::service::OVN_KEY,
                generation,
            );
        }
        Ok(server)
    }

    fn limits_of(&self, host: super::host::HostResources) -> (u64, u64) {
        let vcpus = (f64::from(host.cpus) * self.settings.cpu_allocation_ratio).floor() as u64;
        let ram_mb = (host
            .memory_mib
            .saturating_sub(self.settings.reserved_host_memory_mb) as f64
            * self.settings.ram_allocation_ratio)
            .floor() as u64;
        (vcpus, ram_mb)
    }

    /// What the node can hold (vCPUs, RAM MiB) after allocation ratios and the host reserve — the
    /// ceiling `GET /limits` reports, since a site's real quota is its hardware.
    pub fn capacity(&self) -> Result<(u64, u64), ComputeError> {
        let host = self.host.resources().map_err(|err| {
            ComputeError::NoCapacity(format!("cannot read host resources: {err}"))
        })?;
        Ok(self.limits_of(host))
    }

    /// The site's availability zone.
    pub fn availability_zone(&self) -> &str {
        &self.settings.availability_zone
    }

    fn check_capacity(
        &self,
        tx: &rusqlite::Transaction<'_>,
        flavor: &Flavor,
        host: super::host::HostResources,
    ) -> Result<(), ComputeError> {
        let (used_vcpus, used_ram) = repo::claimed(tx)?;
        let (vcpu_limit, ram_limit) = self.limits_of(host);
        if used_vcpus + u64::from(flavor.vcpus) > vcpu_limit {
            return Err(ComputeError::NoCapacity(format!(
                "flavor {} needs {} vCPUs; {} of {} are free (cpu_allocation_ratio {})",
                flavor.id,
                flavor.vcpus,
                vcpu_limit.saturating_sub(used_vcpus),
                vcpu_limit,
                self.settings.cpu_allocation_ratio
            )));
        }
        if used_ram + flavor.ram_mb > ram_limit {
            return Err(ComputeError::NoCapacity(format!(
                "flavor {} needs {} MiB RAM; {} of {} MiB are free (ram_allocation_ratio {}, {} MiB reserved)",
                flavor.id,
                flavor.ram_mb,
                ram_limit.saturating_sub(used_ram),
                ram_limit,
                self.settings.ram_allocation_ratio,
                self.settings.reserved_host_memory_mb
            )));
        }
        Ok(())
    }

    /// One server.
    pub fn server(&self, id: Uuid) -> Result<Server, ComputeError> {
        self.store
            .read(|tx| repo::load(tx, id))?
            .map(|r| r.server)
            .ok_or_else(|| ComputeError::ServerNotFound(id.to_string()))
    }

    /// All servers, oldest first.
    pub fn servers(&self) -> Result<Vec<Server>, ComputeError> {
        Ok(self
            .store
            .read(repo::list)?
            .into_iter()
            .map(|r| r.server)
            .collect())
    }

    /// Powers a stopped server on.
    pub fn start_server(&self, id: Uuid) -> Result<Server, ComputeError> {
        self.act(id, "start", |s| {
            (s.power_intent == PowerIntent::Stopped)
                .then_some(DesiredChange::Power(PowerIntent::Running))
        })
    }

    /// Shuts a running server down (gracefully, then hard after the shutdown timeout).
    pub fn stop_server(&self, id: Uuid) -> Result<Server, ComputeError> {
        self.act(id, "stop", |s| {
            (s.power_intent == PowerIntent::Running && s.status != ServerStatus::Build)
                .then_some(DesiredChange::Power(PowerIntent::Stopped))
        })
    }

    /// Reboots a server. Soft needs a running server; hard also revives a stopped or failed one.
    pub fn reboot_server(&self, id: Uuid, kind: RebootKind) -> Result<Server, ComputeError> {
        let action = if kind == RebootKind::Hard {
            "reboot --hard"
        } else {
            "reboot"
        };
        self.act(id, action, |s| {
            let allowed = match kind {
                RebootKind::Soft => {
                    s.power_intent == PowerIntent::Running
                        && matches!(s.status, ServerStatus::Active | ServerStatus::Reboot)
                }
                RebootKind::Hard => s.status != ServerStatus::Build,
            };
            allowed.then_some(DesiredChange::Reboot(kind))
        })
    }

    /// Deletes a server: its domain, disk and config drive go, then its row. Repeating is harmless.
    pub fn delete_server(&self, id: Uuid) -> Result<(), ComputeError> {
        let now = self.clock.now();
        let generation = self.store.write(|tx| {
            let record =
                repo::load(tx, id)?.ok_or_else(|| ComputeError::ServerNotFound(id.to_string()))?;
            if record.server.deleting {
                return Ok(record.server.generation);
            }
            repo::change_desired(tx, id, &DesiredChange::Delete, now)
        })?;
        self.loops
            .desired_changed(SERVERS, &id.to_string(), generation);
        Ok(())
    }

    fn act(
        &self,
        id: Uuid,
        action: &'static str,
        decide: impl FnOnce(&Server) -> Option<DesiredChange>,
    ) -> Result<Server, ComputeError> {
        let now = self.clock.now();
        let server = self.store.write(|tx| {
            let record =
                repo::load(tx, id)?.ok_or_else(|| ComputeError::ServerNotFound(id.to_string()))?;
            let state = |s: &Server| {
                if s.deleting {
                    "deleting".to_owned()
                } else {
                    format!("{} ({})", s.status.as_str(), s.power_intent.as_str())
                }
            };
            let change = if record.server.deleting {
                None
            } else {
                decide(&record.server)
            };
            let Some(change) = change else {
                return Err(ComputeError::InvalidState {
                    action,
                    id: id.to_string(),
                    state: state(&record.server),
                });
            };
            repo::change_desired(tx, id, &change, now)?;
            repo::load(tx, id)?
                .map(|r| r.server)
                .ok_or_else(|| ComputeError::ServerNotFound(id.to_string()))
        })?;
        self.loops
            .desired_changed(SERVERS, &id.to_string(), server.generation);
        Ok(server)
    }
}

impl ComputeService {
    /// How many servers exist, without loading them (the region link reports it every heartbeat).
    pub fn server_count(&self) -> Result<u64, ComputeError> {
        self.store.read(repo::count)
    }

    /// Number of servers per status, for metrics and the status line.
    pub fn status_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, ComputeError> {
        self.store.read(|tx| {
            let mut stmt = tx.prepare("SELECT status, count(*) FROM servers GROUP BY status")?;
            let rows = stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}
