//! Wiring: builds the store, the domain services, the reconcilers, the API and the liveness task from
//! the configuration, and runs them until SIGTERM.
//!
//! Host side effects come in through [`HostPorts`], so the same assembly runs with libvirt in the
//! daemon and in benchmarks, and with fakes in unit tests.

mod drain;
mod liveness;

use crate::api::{self, ApiState};
use crate::compute::files::{LocalServerFiles, ServerFiles};
use crate::compute::host::{HostInventory, ProcHostInventory};
use crate::compute::hypervisor::{Hypervisor, VirtType};
use crate::compute::libvirt::LibvirtHypervisor;
use crate::compute::reconciler::{ServerReconciler, ServerReconcilerSettings};
use crate::compute::{ComputeService, ComputeSettings};
use crate::config::AgentConfig;
use crate::federation::outbox::Outbox;
use crate::federation::report::{AgentObserver, LocalSystem};
use crate::federation::status::LinkStatus;
use crate::federation::transport::HttpsTransport;
use crate::federation::{Link, LinkSettings};
use crate::health::{HealthChecks, SubsystemHealth};
use crate::identity::{IdentityService, IdentitySettings};
use crate::image::files::{ImageFiles, LocalImageFiles};
use crate::image::{ImageReconciler, ImageService};
use crate::metrics::Metrics;
use crate::network::chassis::{
    self, ChassisReconciler, ChassisSettings, NoVifs, OvsVifs, ProviderBridge, VifPlugger,
};
use crate::network::database::{Database, OvsdbDatabase};
use crate::network::ovn::{OvnReconciler, OvnSettings};
use crate::network::{NetworkService, NetworkSettings};
use crate::reconcile::{Controller, ControllerBuilder, ControllerHandle, NoLoops, Settings};
use crate::store::{Store, StoreError};
use crate::system::clock::{Clock, SystemClock};
use crate::system::notify::ServiceNotifier;
use serde_json::json;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use liveness::LivenessState;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state directory is unusable.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// Directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No certificate.
    #[error(transparent)]
    Tls(#[from] api::tls::TlsError),
    /// An OVSDB connection could not be set up.
    #[error(transparent)]
    Database(#[from] crate::network::database::DatabaseError),
    /// `[update] repository_url` is set, but no client for it could be built (an unreadable
    /// `repository_ca_file`, say).
    #[error("update repository: {0}")]
    UpdateRepository(crate::update::UpdateError),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The host side effects the agent uses.
pub struct HostPorts {
    /// libvirt.
    pub hypervisor: Arc<dyn Hypervisor>,
    /// Server disks and config drives.
    pub server_files: Arc<dyn ServerFiles>,
    /// Image files.
    pub image_files: Arc<dyn ImageFiles>,
    /// CPU and memory.
    pub host: Arc<dyn HostInventory>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// OVN's northbound database and the local Open_vSwitch database, when networking is enabled.
    pub ovn: Option<OvnPorts>,
    /// Plugs server NICs into the integration bridge.
    pub vifs: Arc<dyn VifPlugger>,
    /// Signed OS updates, when the agent runs from the node image (its os-release names a version).
    pub updates: Option<UpdatePorts>,
}

/// What OS updates use of the host.
pub struct UpdatePorts {
    /// The image version running.
    pub running: semver::Version,
    /// Writes the inactive slot.
    pub sysupdate: Arc<dyn crate::update::host::Sysupdate>,
    /// Reboots.
    pub power: Arc<dyn crate::update::host::Power>,
    /// Mounts update sticks.
    pub mounter: Arc<dyn crate::system::mount::Mounter>,
}

impl UpdatePorts {
    /// The real host's, when `/usr/lib/os-release` carries an `IMAGE_VERSION`.
    pub fn real() -> Option<Self> {
        use crate::federation::report::HostSystem as _;
        let os_release = LocalSystem.os_release()?;
        Some(Self {
            running: crate::update::running_version(&os_release)?,
            sysupdate: Arc::new(crate::update::host::SystemdSysupdate::default()),
            power: Arc::new(crate::update::host::SystemdPower),
            mounter: Arc::new(crate::system::mount::SystemMounter),
        })
    }
}

/// The OVSDB databases networking programs.
pub struct OvnPorts {
    /// OVN northbound.
    pub northbound: Arc<dyn Database>,
    /// The local Open_vSwitch database.
    pub local_switch: Arc<dyn Database>,
}

impl HostPorts {
    /// The real host: libvirt at the configured URI, files under the state directory, and (with
    /// `[network] enabled`) OVSDB connections started on `runtime`.
    pub fn real(
        config: &AgentConfig,
        node_id: &str,
        runtime: Option<&tokio::runtime::Handle>,
    ) -> Result<Self, DaemonError> {
        let state_dir = &config.node.state_dir;
        let dir_err = |path: &Path| {
            let path = path.to_owned();
            move |source| DaemonError::StateDir { path, source }
        };
        let images = state_dir.join("images");
        let servers = state_dir.join("servers");
        Self {
            hypervisor: Arc::new(LibvirtHypervisor::new(&config.compute.libvirt_uri, node_id)),
            server_files: Arc::new(
                LocalServerFiles::new(servers.clone()).map_err(dir_err(&servers))?,
            ),
            image_files: Arc::new(LocalImageFiles::new(images.clone()).map_err(dir_err(&images))?),
            host: Arc::new(ProcHostInventory),
            clock: Arc::new(SystemClock),
            ovn: None,
            vifs: Arc::new(NoVifs),
            updates: UpdatePorts::real(),
        }
        .with_network(config, runtime)
    }

    fn with_network(
        mut self,
        config: &AgentConfig,
        runtime: Option<&tokio::runtime::Handle>,
    ) -> Result<Self, DaemonError> {
        let (true, Some(runtime)) = (config.network.enabled, runtime) else {
            return Ok(self);
        };
        let n = &config.network;
        let managed: Vec<&str> = crate::network::ovn::plan::managed_tables().collect();
        let northbound: Arc<dyn Database> = Arc::new(OvsdbDatabase::start(
            &n.northbound,
            ovsdb::nb::DATABASE,
            &managed,
            n.northbound_leader_only,
            runtime.clone(),
        )?);
        let local_switch: Arc<dyn Database> = Arc::new(OvsdbDatabase::start(
            &n.ovs_database,
            "Open_vSwitch",
            chassis::TABLES,
            false,
            runtime.clone(),
        )?);
        self.vifs = Arc::new(OvsVifs::new(local_switch.clone(), &n.integration_bridge));
        self.ovn = Some(OvnPorts {
            northbound,
            local_switch,
        });
        Ok(self)
    }
}

/// Creates the state directory (traversable, not listable, by the QEMU user).
pub fn prepare_state_dir(config: &AgentConfig) -> Result<(), DaemonError> {
    let dir = &config.node.state_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .map_err(|source| DaemonError::StateDir {
            path: dir.clone(),
            source,
        })
}

/// Opens the store and settles the node id: the configured one, or one generated once and kept.
pub fn open_store(config: &AgentConfig) -> Result<(Arc<Store>, String), DaemonError> {
    prepare_state_dir(config)?;
    let store = Arc::new(Store::open(&config.store_path())?);
    let node_id = if config.node.id.is_empty() {
        store.setting_or_init("node_id", || uuid::Uuid::new_v4().to_string())?
    } else {
        config.node.id.clone()
    };
    Ok((store, node_id))
}

/// The domain services for a process without reconcile loops (the admin CLI).
pub fn services_without_loops(
    config: &AgentConfig,
) -> Result<crate::cli::AdminServices, DaemonError> {
    let (store, node_id) = open_store(config)?;
    let ports = HostPorts::real(config, &node_id, None)?;
    let images = Arc::new(ImageService::new(
        store.clone(),
        ports.image_files.clone(),
        ports.clock.clone(),
    ));
    let compute = Arc::new(ComputeService::new(
        store.clone(),
        images.clone(),
        ports.host.clone(),
        ports.clock.clone(),
        Arc::new(NoLoops),
        ComputeSettings::from(config),
        ports.server_files.clone(),
    ));
    let network = Arc::new(NetworkService::new(
        store.clone(),
        ports.clock.clone(),
        Arc::new(NoLoops),
        network_settings(config),
    ));
    let identity = Arc::new(IdentityService::new(
        store,
        ports.clock.clone(),
        identity_settings(config),
    ));
    Ok(crate::cli::AdminServices {
        images,
        compute,
        network,
        identity,
        state_dir: config.node.state_dir.clone(),
    })
}

/// The identity settings from `[identity]`.
pub fn identity_settings(config: &AgentConfig) -> IdentitySettings {
    IdentitySettings {
        region_id: config.identity.region_id.clone(),
        token_ttl: Duration::from_secs(config.identity.token_ttl_secs),
        argon2: config.identity.argon2(),
    }
}

/// The network settings the domain validates against.
pub fn network_settings(config: &AgentConfig) -> NetworkSettings {
    NetworkSettings {
        overlay_mtu: config.network.overlay_mtu,
        physical_networks: config
            .network
            .physical_networks
            .iter()
            .map(|(name, p)| (name.clone(), p.mtu))
            .collect(),
    }
}

fn chassis_settings(config: &AgentConfig, node_id: &str) -> ChassisSettings {
    let n = &config.network;
    ChassisSettings {
        system_id: if n.chassis.is_empty() {
            node_id.to_owned()
        } else {
            n.chassis.clone()
        },
        southbound: n.southbound.clone(),
        encap_type: n.encap_type.clone(),
        encap_ip: n.encap_ip.clone(),
        datapath_type: n.datapath_type.clone(),
        integration_bridge: n.integration_bridge.clone(),
        provider_bridges: n
            .physical_networks
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    ProviderBridge {
                        bridge: p.bridge.clone(),
                        uplinks: p.uplinks.clone(),
                    },
                )
            })
            .collect(),
        gateway: n.gateway,
    }
}

/// An assembled agent: services usable at once, loops started by [`Agent::run`].
pub struct Agent {
    /// The configuration it was built from.
    pub config: AgentConfig,
    /// This node's id.
    pub node_id: String,
    /// Accelerator in use and why.
    pub virt_type: (VirtType, String),
    /// The store.
    pub store: Arc<Store>,
    /// Images.
    pub images: Arc<ImageService>,
    /// Flavors and servers.
    pub compute: Arc<ComputeService>,
    /// Networks, subnets, ports, routers, security groups, floating IPs.
    pub network: Arc<NetworkService>,
    /// Domains, projects, users, roles, tokens, application credentials.
    pub identity: Arc<IdentityService>,
    /// Enqueue, probe and health of the loops.
    pub loops: ControllerHandle,
    controller: Controller,
    ovn: Option<(Arc<dyn Database>, Arc<dyn Database>)>,
    metrics: Arc<Metrics>,
    health: Arc<HealthChecks>,
    liveness: Arc<LivenessState>,
    /// The region link's status, when `[region] url` is set.
    region: Option<Arc<LinkStatus>>,
    host: Arc<dyn HostInventory>,
    clock: Arc<dyn Clock>,
    hypervisor: Arc<dyn Hypervisor>,
    /// Signed OS updates and the reboots they need, when running from the node image.
    updates: Option<(
        Arc<crate::update::Updater>,
        Arc<dyn crate::update::host::Power>,
    )>,
}

impl Agent {
    /// Assembles everything over `ports`.
    pub fn assemble(
        config: AgentConfig,
        store: Arc<Store>,
        node_id: String,
        virt_type: (VirtType, String),
        ports: &HostPorts,
    ) -> Self {
        let mut registry = Metrics::registry();
        let updates = ports.updates.as_ref().map(|update_ports| {
            let updater = Arc::new(crate::update::Updater::new(
                crate::update::UpdateSettings::from_config(&config, update_ports.running.clone()),
                ports.clock.clone(),
                update_ports.sysupdate.clone(),
                update_ports.mounter.clone(),
            ));
            registry.register_collector(Box::new(crate::update::status::UpdateCollector(
                updater.clone(),
            )));
            (updater, update_ports.power.clone())
        });
        let region = config.region.enabled().then(|| {
            let status = Arc::new(LinkStatus::new(&config.region.site));
            status.register(&mut registry);
            status
        });
        let images = Arc::new(ImageService::new(
            store.clone(),
            ports.image_files.clone(),
            ports.clock.clone(),
        ));
        let servers = Arc::new(ServerReconciler::new(
            store.clone(),
            images.clone(),
            ports.hypervisor.clone(),
            ports.server_files.clone(),
            ports.vifs.clone(),
            ports.clock.clone(),
            ServerReconcilerSettings {
                node_id: node_id.clone(),
                virt_type: virt_type.0,
                machine: config.compute.machine_type.clone(),
                integration_bridge: config.network.integration_bridge.clone(),
                shutdown_timeout: Duration::from_secs(config.compute.shutdown_timeout_secs),
            },
        ));
        let feed_store = store.clone();
        let mut builder = ControllerBuilder::new(Settings::from(&config.reconcile))
            .register(Arc::new(ImageReconciler::new(
                store.clone(),
                ports.image_files.clone(),
                ports.clock.clone(),
            )))
            .register(servers);
        let mut kinds: Vec<(&'static str, &'static str)> =
            vec![("servers", "libvirt"), ("images", "image-store")];
        if let Some(ovn) = &ports.ovn {
            // The reconciler only reads the model and records port status: it needs no loop notifications.
            let model = Arc::new(NetworkService::new(
                store.clone(),
                ports.clock.clone(),
                Arc::new(NoLoops),
                network_settings(&config),
            ));
            let site = if config.network.site_id.is_empty() {
                node_id.clone()
            } else {
                config.network.site_id.clone()
            };
            let chassis = chassis_settings(&config, &node_id);
            builder = builder
                .register(Arc::new(OvnReconciler::new(
                    model,
                    ovn.northbound.clone(),
                    OvnSettings {
                        owner: site,
                        gateway_chassis: chassis.system_id.clone(),
                    },
                )))
                .register(Arc::new(ChassisReconciler::new(
                    ovn.local_switch.clone(),
                    chassis,
                )));
            kinds.push((crate::network::service::OVN, "ovn-northbound"));
            kinds.push((chassis::CHASSIS, "local-switch"));
        }
        let (controller, loops) = builder
            .change_feed(Arc::new(move || Ok(feed_store.data_version()?)))
            .metrics(&mut registry)
            .build();
        let network = Arc::new(NetworkService::new(
            store.clone(),
            ports.clock.clone(),
            Arc::new(loops.clone()),
            network_settings(&config),
        ));
        let compute = Arc::new(ComputeService::new(
            store.clone(),
            images.clone(),
            ports.host.clone(),
            ports.clock.clone(),
            Arc::new(loops.clone()),
            ComputeSettings::from(&config),
            ports.server_files.clone(),
        ));
        let identity = Arc::new(IdentityService::new(
            store.clone(),
            ports.clock.clone(),
            identity_settings(&config),
        ));
        registry.register_collector(Box::new(ServerStatusCollector {
            compute: compute.clone(),
        }));

        let liveness = Arc::new(LivenessState::default());
        let mut health = HealthChecks::default();
        let store_check = store.clone();
        health.add(
            "store",
            Box::new(move || match store_check.ping() {
                Ok(()) => SubsystemHealth::ok(json!({ "path": store_check.path() })),
                Err(err) => SubsystemHealth::failing(json!({ "error": err.to_string() })),
            }),
        );
        let loops_check = loops.clone();
        let live_check = liveness.clone();
        health.add(
            "reconciler",
            Box::new(move || {
                let h = loops_check.health();
                let probe_ok = live_check.loops_answered();
                let detail = json!({
                    "loops_answer_probe": probe_ok,
                    "first_pass_done": h.first_pass_done,
                    "queue_depth": h.queue_depth,
                    "stalled": h.stalled,
                    "last_resync_age_secs": h.last_resync_age_secs,
                });
                if probe_ok && h.stalled.is_empty() {
                    SubsystemHealth::ok(detail)
                } else {
                    SubsystemHealth::failing(detail)
                }
            }),
        );
        if let Some(status) = &region {
            let status = status.clone();
            health.add("region", Box::new(move || status.health()));
        }
        if let Some((updater, _)) = &updates {
            let updater = updater.clone();
            health.add(
                "update",
                Box::new(move || crate::update::status::health(&updater)),
            );
        }
        for (kind, name) in kinds {
            let loops_check = loops.clone();
            health.add(
                name,
                Box::new(move || match loops_check.health().scan_errors.get(kind) {
                    None => SubsystemHealth::ok(json!({ "kind": kind })),
                    Some(err) => SubsystemHealth::failing(json!({ "kind": kind, "error": err })),
                }),
            );
        }

        Self {
            config,
            node_id,
            virt_type,
            store,
            images,
            compute,
            network,
            identity,
            loops,
            controller,
            ovn: ports
                .ovn
                .as_ref()
                .map(|o| (o.northbound.clone(), o.local_switch.clone())),
            metrics: Arc::new(Metrics::new(registry)),
            health: Arc::new(health),
            liveness,
            region,
            host: ports.host.clone(),
            clock: ports.clock.clone(),
            hypervisor: ports.hypervisor.clone(),
            updates,
        }
    }

    /// A host-network change (see `network::host::apply_guarded`) that was never confirmed — the agent
    /// died between applying it and its connectivity check — is reverted before anything else runs,
    /// so a node that lost its uplink that way gets it back by restarting.
    fn recover_host_network(&self) {
        let pending = self
            .config
            .node
            .state_dir
            .join(crate::network::host::PENDING_CHANGE_FILE);
        if !pending.exists() {
            return;
        }
        match crate::network::host::NetlinkHost::new() {
            Ok(host) => match crate::network::host::recover_pending(&host, &pending) {
                Ok(Some(change)) => {
                    tracing::warn!(?change, "reverted an unconfirmed host network change");
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::error!(%err, "cannot revert the unconfirmed host network change");
                }
            },
            Err(err) => {
                tracing::error!(%err, "cannot open netlink to revert a host network change");
            }
        }
    }

    /// Seeds the SCS mandatory flavors when configured; a failure is logged, not fatal: the site still
    /// serves, and the standards tests will name what is missing.
    fn seed_flavors(&self) {
        if !self.config.compute.seed_scs_flavors {
            return;
        }
        match self
            .compute
            .seed_flavors(crate::compute::scs_flavors::mandatory())
        {
            Ok(created) if created.is_empty() => {}
            Ok(created) => info!(?created, "seeded SCS mandatory flavors"),
            Err(err) => tracing::error!(%err, "cannot seed the SCS mandatory flavors"),
        }
    }

    /// Starts the loops, the listener and the liveness task; reports READY after the first full pass;
    /// returns when `shutdown` is cancelled and the loops stopped.
    pub async fn run(
        self,
        notifier: Arc<dyn ServiceNotifier>,
        shutdown: CancellationToken,
    ) -> Result<(), DaemonError> {
        self.recover_host_network();
        self.seed_flavors();
        let (tls, source) =
            api::tls::server_config(&self.config.api, &self.config.node.state_dir.join("tls"))?;
        info!(?source, "TLS certificate");
        let repository = match &self.updates {
            Some(_) => crate::update::online::RepositoryCheck::from_config(&self.config.update)
                .map_err(DaemonError::UpdateRepository)?,
            None => None,
        };
        let addr = self.config.api.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen { addr, source })?;
        let app = api::router(ApiState {
            health: self.health.clone(),
            metrics: self.metrics.clone(),
            public_base: self.config.api.public_base().into(),
            identity: self.identity.clone(),
            compute: self.compute.clone(),
            images: self.images.clone(),
            network: self.network.clone(),
            max_image_upload_bytes: self.config.api.max_image_upload_bytes,
        });
        let api_task = tokio::spawn(api::serve(listener, tls, app, shutdown.clone()));

        // The update task and the heartbeat ask the same offer through the same window, so the
        // window the node reports is the one it reboots in.
        let offer: Option<Arc<dyn crate::update::region::RegionOffer>> =
            self.region.as_ref().map(|_| {
                Arc::new(crate::federation::offer::SavedOffer::new(
                    crate::federation::federation_dir(&self.config.node.state_dir),
                    &self.config.region.url,
                    &self.config.region.site,
                )) as Arc<dyn crate::update::region::RegionOffer>
            });
        let reboot_window = self.updates.as_ref().map(|_| {
            Arc::new(crate::update::window::RebootWindow::new(
                self.config.update.maintenance_window.clone(),
                offer.clone(),
            ))
        });
        let region_task = self
            .region_link(reboot_window.clone())
            .map(|link| tokio::spawn(link.run(shutdown.clone())));
        // The loops stop with the agent, or earlier when the node drains for an OS update.
        let loops_stop = shutdown.child_token();
        let (loops_done, loops_stopped) = tokio::sync::watch::channel(false);
        let controller = self.controller;
        let loops_task = tokio::spawn({
            let loops_stop = loops_stop.clone();
            async move {
                controller.run(loops_stop).await;
                let _ = loops_done.send(true);
            }
        });
        let update_task =
            self.updates
                .as_ref()
                .zip(reboot_window)
                .map(|((updater, power), window)| {
                    let watcher = crate::update::watcher::UpdateWatcher {
                        updater: updater.clone(),
                        drain: Arc::new(drain::ServerDrain {
                            loops_stop: loops_stop.clone(),
                            loops_stopped,
                            liveness: self.liveness.clone(),
                            compute: self.compute.clone(),
                            hypervisor: self.hypervisor.clone(),
                        }),
                        power: power.clone(),
                        window,
                        stop_timeout: Duration::from_secs(
                            self.config.compute.shutdown_timeout_secs,
                        ),
                        poll: Duration::from_secs(self.config.update.stick_poll_secs),
                        stick: crate::update::watcher::STICK_DEVICE.into(),
                        sys_class_block: crate::update::watcher::SYS_CLASS_BLOCK.into(),
                        repository,
                        region: offer.map(|offer| crate::update::watcher::RegionFeed {
                            offer,
                            retry: Duration::from_secs(self.config.update.check_interval_secs),
                        }),
                        clock: self.clock.clone(),
                    };
                    tokio::spawn(watcher.run(shutdown.clone()))
                });
        if let Some((northbound, local_switch)) = &self.ovn {
            let loops = self.loops.clone();
            northbound.on_change(
                Box::new(move || {
                    loops.nudge(
                        crate::network::service::OVN,
                        crate::network::service::OVN_KEY,
                    );
                }),
                shutdown.clone(),
            );
            let loops = self.loops.clone();
            local_switch.on_change(
                Box::new(move || loops.nudge(chassis::CHASSIS, "local")),
                shutdown.clone(),
            );
        }
        let first_pass = self.loops.clone();
        tokio::select! {
            () = first_pass.first_pass_done() => {}
            () = shutdown.cancelled() => {}
        }
        if !shutdown.is_cancelled() {
            let servers = self.compute.servers().map(|s| s.len()).unwrap_or_default();
            notifier.ready(&format!(
                "ready: node {}, {} servers, virt {:?}",
                self.node_id, servers, self.virt_type.0
            ));
            info!(node = %self.node_id, servers, "first full reconcile done; ready");
        }
        let store = self.store.clone();
        let compute = self.compute.clone();
        let liveness = liveness::Liveness {
            state: self.liveness.clone(),
            loops: self.loops.clone(),
            store_answers: Arc::new(move || store.ping().is_ok()),
            server_counts: Arc::new(move || compute.status_counts().unwrap_or_default()),
            notifier: notifier.clone(),
        };
        let liveness_task = tokio::spawn(liveness.run(shutdown.clone()));
        shutdown.cancelled().await;
        notifier.stopping();
        let _ = loops_task.await;
        if let Some(task) = update_task {
            let _ = task.await;
        }
        let _ = liveness_task.await;
        let _ = api_task.await;
        if let Some(task) = region_task {
            let _ = task.await;
        }
        Ok(())
    }

    /// The region link over the real network, when `[region] url` is set. It runs beside everything
    /// else in its own task and reads the agent's health and services; nothing waits for it.
    fn region_link(
        &self,
        reboot_window: Option<Arc<crate::update::window::RebootWindow>>,
    ) -> Option<Link<HttpsTransport>> {
        let status = self.region.clone()?;
        let region = &self.config.region;
        let observer = AgentObserver {
            health: self.health.clone(),
            compute: self.compute.clone(),
            network: self.network.clone(),
            images: self.images.clone(),
            identity: self.identity.clone(),
            host: self.host.clone(),
            system: Arc::new(LocalSystem),
            state_dir: self.config.node.state_dir.clone(),
            updates: self.updates.as_ref().map(|(updater, _)| updater.clone()),
            reboot_window,
        };
        info!(url = %region.url, site = %region.site, "region link configured");
        Some(Link::new(
            LinkSettings::from_config(region),
            HttpsTransport::new(&region.url),
            crate::federation::federation_dir(&self.config.node.state_dir),
            Outbox::new(self.store.clone(), region.max_queued_reports),
            Arc::new(observer),
            self.clock.clone(),
            status,
        ))
    }
}

/// Server counts by status, computed at scrape time.
struct ServerStatusCollector {
    compute: Arc<ComputeService>,
}

impl std::fmt::Debug for ServerStatusCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerStatusCollector")
    }
}

impl prometheus_client::collector::Collector for ServerStatusCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let counts = self.compute.status_counts().unwrap_or_default();
        let mut family = encoder.encode_descriptor(
            "scs_edge_servers",
            "Servers by status",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (status, count) in counts {
            let gauge = prometheus_client::metrics::gauge::ConstGauge::new(count as i64);
            let labels = [("status", status)];
            gauge.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::fake::FakeHypervisor;
    use crate::compute::files::FakeServerFiles;
    use crate::compute::host::{FixedHostInventory, HostResources};
    use crate::image::files::FakeImageFiles;
    use crate::system::clock::ManualClock;

    fn assembled(dir: &Path, region: &str) -> Agent {
        let text = format!("[node]\nstate_dir = \"{}\"\n{region}", dir.display());
        let config = AgentConfig::parse(&text, Path::new("agent.toml")).expect("config");
        let (store, node_id) = open_store(&config).expect("store");
        let ports = HostPorts {
            hypervisor: Arc::new(FakeHypervisor::new(&node_id)),
            server_files: Arc::new(FakeServerFiles::default()),
            image_files: Arc::new(FakeImageFiles::default()),
            host: Arc::new(FixedHostInventory(HostResources {
                cpus: 2,
                memory_mib: 4096,
            })),
            clock: Arc::new(ManualClock::new(
                "2026-11-01T12:00:00Z".parse().expect("time"),
            )),
            ovn: None,
            vifs: Arc::new(NoVifs),
            updates: None,
        };
        Agent::assemble(
            config,
            store,
            node_id,
            (VirtType::Qemu, "test".into()),
            &ports,
        )
    }

    #[test]
    fn a_configured_region_link_shows_in_healthz_and_metrics_without_degrading_the_site() {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = assembled(
            dir.path(),
            "[region]\nurl = \"https://region.example.com\"\nsite = \"factory-7\"\nca_fingerprint = \"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n",
        );
        assert!(agent.region_link(None).is_some());
        let health = agent.health.run();
        let region = &health.subsystems["region"];
        assert!(
            region.healthy,
            "an unreachable region never makes the site unhealthy"
        );
        assert_eq!(region.detail["state"], "starting");
        assert_eq!(region.detail["site"], "factory-7");
        assert_eq!(region.detail["joined"], false);
        let metrics = agent.metrics.encode();
        for line in [
            "scs_edge_region_link_up 0",
            "scs_edge_region_queued_reports 0",
            "scs_edge_region_dropped_reports_total 0",
        ] {
            assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
        }
    }

    #[test]
    fn a_standalone_site_has_no_region_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = assembled(dir.path(), "");
        assert!(agent.region_link(None).is_none());
        assert!(!agent.health.run().subsystems.contains_key("region"));
        assert!(!agent.metrics.encode().contains("scs_edge_region"));
    }
}
