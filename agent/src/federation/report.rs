//! One heartbeat report: what the agent already knows about the site, put in the region's terms.
//!
//! Health is not judged anew here: it is the `/healthz` checks the daemon registered (store,
//! reconciler, libvirt, image store, OVN), grouped into the components the region shows — `libvirt`,
//! `ovn`, `k3s`, `agent`. Capacity comes from the host inventory compute already uses and the free
//! space of the state directory; resource counts from the domain services. Gathering blocks (checks,
//! store queries) and runs on a blocking thread; [`build`] itself is pure.

use crate::compute::ComputeService;
use crate::compute::host::HostInventory;
use crate::health::{HealthChecks, HealthReport, SubsystemHealth};
use crate::identity::IdentityService;
use crate::image::ImageService;
use crate::network::NetworkService;
use jiff::Timestamp;
use scs_edge_proto::{
    Capacity, ComponentHealth, HealthState, MAX_FIELD_CHARS, MAX_HEALTH_ENTRIES, Report,
    ResourceCounts, UpdateReport, Versions,
};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `/healthz` subsystems that make up the `agent` component: the store is essential (without it
/// nothing works), the rest degrade the agent.
const AGENT_SUBSYSTEMS: [&str; 3] = ["store", "reconciler", "image-store"];
/// The `/healthz` subsystems that make up the `ovn` component; the northbound database is essential.
const OVN_SUBSYSTEMS: [&str; 2] = ["ovn-northbound", "local-switch"];
/// The `/healthz` subsystem of libvirt.
const LIBVIRT_SUBSYSTEM: &str = "libvirt";

/// What the agent knows about the site at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The `/healthz` checks, run now.
    pub health: HealthReport,
    /// CPUs, memory, free disk.
    pub capacity: Capacity,
    /// Servers, networks, ports, images, projects.
    pub resources: ResourceCounts,
    /// `IMAGE_VERSION` of the OS image; empty outside the image.
    pub os_version: String,
    /// The OS update state, on nodes that run from the image.
    pub update: Option<UpdateReport>,
}

/// Gathers an [`Observation`]; blocks briefly (health checks, store queries).
pub trait SiteObserver: Send + Sync {
    /// The site now.
    fn observe(&self) -> Observation;
}

/// Host facts a report needs beyond CPUs and memory.
pub trait HostSystem: Send + Sync {
    /// The text of os-release, if there is one.
    fn os_release(&self) -> Option<String>;
    /// Bytes available to unprivileged writers on the file system holding `path`.
    fn disk_free_bytes(&self, path: &Path) -> io::Result<u64>;
}

/// The real host: `/etc/os-release` (else `/usr/lib/os-release`) and `statvfs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalSystem;

impl HostSystem for LocalSystem {
    fn os_release(&self) -> Option<String> {
        ["/etc/os-release", "/usr/lib/os-release"]
            .into_iter()
            .find_map(|path| std::fs::read_to_string(path).ok())
    }

    fn disk_free_bytes(&self, path: &Path) -> io::Result<u64> {
        let stat = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
        Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
    }
}

/// `IMAGE_VERSION` from os-release text (quotes removed); `None` when the OS has none, i.e. the agent
/// does not run from the SCS Edge image.
pub fn image_version(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        let value = line.trim().strip_prefix("IMAGE_VERSION=")?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// The observer over the running agent's checks, services and host.
pub struct AgentObserver {
    /// The `/healthz` checks.
    pub health: Arc<HealthChecks>,
    /// Servers.
    pub compute: Arc<ComputeService>,
    /// Networks and ports.
    pub network: Arc<NetworkService>,
    /// Images.
    pub images: Arc<ImageService>,
    /// Projects.
    pub identity: Arc<IdentityService>,
    /// CPUs and memory.
    pub host: Arc<dyn HostInventory>,
    /// os-release and free space.
    pub system: Arc<dyn HostSystem>,
    /// Where VM disks and images live.
    pub state_dir: PathBuf,
    /// OS updates, when the node runs from the image.
    pub updates: Option<Arc<crate::update::Updater>>,
    /// The maintenance window the update task reboots in, reported with the update state.
    pub reboot_window: Option<Arc<crate::update::window::RebootWindow>>,
}

impl AgentObserver {
    fn resources(&self) -> ResourceCounts {
        // A count that cannot be read is reported as 0 and logged: the report (and the agent's health
        // in it, which shows the store's state) is worth more than a perfect inventory.
        let or_zero = |what: &str, result: Result<u64, String>| {
            result.unwrap_or_else(|err| {
                tracing::warn!(what, %err, "region report: cannot count");
                0
            })
        };
        let (networks, ports) = self.network.counts().unwrap_or_else(|err| {
            tracing::warn!(%err, "region report: cannot count networks and ports");
            (0, 0)
        });
        ResourceCounts {
            servers: or_zero(
                "servers",
                self.compute.server_count().map_err(|e| e.to_string()),
            ),
            networks,
            ports,
            images: or_zero("images", self.images.count().map_err(|e| e.to_string())),
            projects: or_zero(
                "projects",
                self.identity.project_count().map_err(|e| e.to_string()),
            ),
        }
    }

    fn capacity(&self) -> Capacity {
        let (vcpus, memory_mib) = match self.host.resources() {
            Ok(r) => (r.cpus, r.memory_mib),
            Err(err) => {
                tracing::warn!(%err, "region report: cannot read host resources");
                (0, 0)
            }
        };
        let disk_free_gib = match self.system.disk_free_bytes(&self.state_dir) {
            Ok(bytes) => bytes >> 30,
            Err(err) => {
                tracing::warn!(%err, dir = %self.state_dir.display(), "region report: cannot read free space");
                0
            }
        };
        Capacity {
            vcpus,
            memory_mib,
            disk_free_gib,
        }
    }
}

impl SiteObserver for AgentObserver {
    fn observe(&self) -> Observation {
        Observation {
            health: self.health.run(),
            capacity: self.capacity(),
            resources: self.resources(),
            os_version: self
                .system
                .os_release()
                .and_then(|text| image_version(&text))
                .unwrap_or_default(),
            update: self.updates.as_ref().and_then(|updater| {
                let window = self
                    .reboot_window
                    .as_ref()
                    .and_then(|window| window.current());
                crate::update::status::report(updater, window.as_ref())
            }),
        }
    }
}

/// The report numbered `seq`, taken at `sent_at`.
pub fn build(seq: u64, sent_at: Timestamp, observation: &Observation) -> Report {
    Report {
        seq,
        sent_at,
        versions: Versions {
            agent: env!("CARGO_PKG_VERSION").to_owned(),
            os: bounded(&observation.os_version),
            k3s: None,
        },
        health: components(&observation.health),
        capacity: observation.capacity,
        resources: observation.resources,
        update: observation.update.as_ref().map(bounded_update),
    }
}

/// The region's components from the agent's subsystems:
/// * `libvirt`: its check healthy → healthy, failing → down;
/// * `ovn`: absent when networking is off (no OVN checks), down when the northbound database fails,
///   degraded when only the local switch does;
/// * `k3s`: absent (this agent does not run k3s yet);
/// * `agent`: down when the store fails, degraded when the loops or the image store do.
pub fn components(health: &HealthReport) -> Vec<ComponentHealth> {
    let get = |name: &str| health.subsystems.get(name);
    let libvirt = match get(LIBVIRT_SUBSYSTEM) {
        None => component("libvirt", HealthState::Absent, &[]),
        Some(h) if h.healthy => component("libvirt", HealthState::Healthy, &[]),
        Some(h) => component("libvirt", HealthState::Down, &[(LIBVIRT_SUBSYSTEM, h)]),
    };
    let ovn = grouped(health, "ovn", &OVN_SUBSYSTEMS, "ovn-northbound");
    let agent = grouped(health, "agent", &AGENT_SUBSYSTEMS, "store");
    vec![
        libvirt,
        ovn,
        component("k3s", HealthState::Absent, &[]),
        agent,
    ]
}

fn grouped(
    health: &HealthReport,
    name: &str,
    members: &[&'static str],
    essential: &str,
) -> ComponentHealth {
    let present: Vec<(&str, &SubsystemHealth)> = members
        .iter()
        .filter_map(|m| health.subsystems.get(m).map(|h| (*m, h)))
        .collect();
    if present.is_empty() {
        return component(name, HealthState::Absent, &[]);
    }
    let failing: Vec<(&str, &SubsystemHealth)> =
        present.into_iter().filter(|(_, h)| !h.healthy).collect();
    let state = if failing.is_empty() {
        HealthState::Healthy
    } else if failing.iter().any(|(m, _)| *m == essential) {
        HealthState::Down
    } else {
        HealthState::Degraded
    };
    component(name, state, &failing)
}

fn component(
    name: &str,
    state: HealthState,
    failing: &[(&str, &SubsystemHealth)],
) -> ComponentHealth {
    let detail = (!failing.is_empty()).then(|| {
        let text = failing
            .iter()
            .map(|(m, h)| format!("{m}: {}", h.detail))
            .collect::<Vec<_>>()
            .join("; ");
        bounded(&text)
    });
    ComponentHealth {
        component: name.to_owned(),
        state,
        detail,
    }
}

/// At most [`MAX_FIELD_CHARS`] characters: a longer field would make the region refuse the report.
/// The update state within the region's limits: the newest failed versions, every text cut.
fn bounded_update(update: &UpdateReport) -> UpdateReport {
    let skip = update.failed.len().saturating_sub(MAX_HEALTH_ENTRIES);
    UpdateReport {
        phase: update.phase,
        target: update.target.as_deref().map(bounded),
        failed: update
            .failed
            .iter()
            .skip(skip)
            .map(|v| bounded(v))
            .collect(),
        last_outcome: update
            .last_outcome
            .as_ref()
            .map(|outcome| scs_edge_proto::UpdateOutcome {
                result: bounded(&outcome.result),
                version: bounded(&outcome.version),
                reason: outcome.reason.as_deref().map(bounded),
            }),
        refused: update.refused,
        last_refusal: update
            .last_refusal
            .as_ref()
            .map(|refusal| scs_edge_proto::UpdateRefusal {
                kind: bounded(&refusal.kind),
                reason: bounded(&refusal.reason),
                at: refusal.at,
            }),
        last_error: update.last_error.as_deref().map(bounded),
        waivers_used: update.waivers_used,
        window: update.window.as_deref().map(bounded),
    }
}

fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_FIELD_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_FIELD_CHARS - 1).collect();
    cut.push('…');
    cut
}
