//! An edge site in one test process: an OVS/OVN stack plus the agent library assembled over it,
//! running its reconcile loops on its own runtime. Tests drive the domain layer directly.

use crate::ovn::{Netns, OvnStack, short_id};
use crate::scratch_dir;
use scs_edge_agent::compute::ComputeService;
use scs_edge_agent::compute::hypervisor::VirtType;
use scs_edge_agent::config::{AgentConfig, PhysicalNetworkConfig};
use scs_edge_agent::daemon::{self, Agent, HostPorts};
use scs_edge_agent::image::ImageService;
use scs_edge_agent::network::NetworkService;
use scs_edge_agent::network::model::PortStatus;
use scs_edge_agent::reconcile::ControllerHandle;
use scs_edge_agent::system::notify::RecordingNotifier;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The physical network the external namespace sits on.
pub const PHYSNET: &str = "physnet1";
/// Its provider bridge.
pub const PROVIDER_BRIDGE: &str = "br-ex";

/// A running site.
pub struct Site {
    /// Networks, subnets, ports, routers, security groups, floating IPs.
    pub network: Arc<NetworkService>,
    /// Flavors and servers.
    pub compute: Arc<ComputeService>,
    /// Images.
    pub images: Arc<ImageService>,
    /// The loops.
    pub loops: ControllerHandle,
    /// Owner tag of the site's OVN rows.
    pub site_id: String,
    /// A host on the physical network (its `eth0` is the provider bridge's uplink peer).
    pub external: Netns,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    /// The OVS/OVN stack (dropped last).
    pub stack: OvnStack,
}

impl Site {
    /// Starts a stack (in its own namespace unless `root_netns`) and an agent configured for it.
    pub fn start(label: &str, root_netns: bool) -> Self {
        crate::libvirt::ensure_daemons();
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let stack = OvnStack::start(label, !root_netns);
        let external = Netns::new(&stack, "ext", "02:00:00:00:00:fe");
        let dir = scratch_dir(&format!("{label}-agent"));
        let mut config = AgentConfig::default();
        let site_id = format!("site-{label}-{}", short_id());
        config.node.id.clone_from(&site_id);
        config.node.state_dir = dir.path().join("state");
        config.api.listen = "127.0.0.1:0".parse().expect("addr");
        config.compute.shutdown_timeout_secs = 5;
        config.reconcile.observe_interval_ms = 200;
        config.reconcile.change_poll_interval_ms = 100;
        config.reconcile.backoff_initial_ms = 100;
        config.reconcile.backoff_max_secs = 2;
        config.log.filter = "warn".into();
        config.network.enabled = true;
        config.network.northbound = stack.northbound();
        config.network.southbound = stack.southbound();
        config.network.ovs_database = stack.switch();
        config.network.datapath_type = "netdev".into();
        config.network.physical_networks.insert(
            PHYSNET.into(),
            PhysicalNetworkConfig {
                bridge: PROVIDER_BRIDGE.into(),
                mtu: 1500,
                uplinks: vec![external.outside.clone()],
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (store, node_id) = daemon::open_store(&config).expect("store");
        let ports = HostPorts::real(&config, &node_id, Some(runtime.handle())).expect("host ports");
        let agent = Agent::assemble(
            config,
            store,
            node_id,
            (VirtType::Qemu, "test".into()),
            &ports,
        );
        let (network, compute, images, loops) = (
            agent.network.clone(),
            agent.compute.clone(),
            agent.images.clone(),
            agent.loops.clone(),
        );
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = runtime.spawn(async move {
            agent
                .run(Arc::new(RecordingNotifier::default()), token)
                .await
                .expect("agent runs");
        });
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_mins(1), loops.first_pass_done())
                .await
                .expect("first pass");
        });
        stack.wait_integration_bridge("br-int");
        Self {
            network,
            compute,
            images,
            loops,
            site_id,
            external,
            shutdown,
            task: Some(task),
            runtime,
            dir,
            stack,
        }
    }

    /// Waits until OVN reports the port bound and up (the agent's port status turns ACTIVE).
    pub fn wait_port_up(&self, port: Uuid) {
        crate::wait::until(
            &format!("port {port} ACTIVE"),
            Duration::from_mins(1),
            || (self.network.port(port).ok()?.status == PortStatus::Active).then_some(()),
        );
    }

    /// A namespace "VM" plugged in as the VIF of `port`.
    pub fn vm(&self, label: &str, port: Uuid) -> Netns {
        let mac = self.network.port(port).expect("port").mac;
        let vm = Netns::new(&self.stack, label, &mac);
        vm.plug(&self.stack, "br-int", &port.to_string());
        self.wait_port_up(port);
        vm
    }

    /// The agent's state directory.
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    /// Whether the health of every loop kind is fine (no scan errors).
    pub fn healthy(&self) -> bool {
        self.loops.health().is_healthy()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = self.runtime.block_on(task);
        }
    }
}
