//! The health gate's probes on a real node: systemd over D-Bus for the agent's READY state,
//! libvirt through the compute hypervisor, OVN through its own tools, servers through the compute
//! domain. Each reports a reason an operator can act on; none repairs anything.

use super::gate::{Findings, GateProbes};
use crate::compute::ComputeService;
use crate::compute::hypervisor::Hypervisor;
use crate::compute::server::ServerStatus;
use futures::future::BoxFuture;
use std::sync::Arc;
use uuid::Uuid;

/// Where the node's OVN chassis is checked.
#[derive(Debug, Clone)]
pub struct OvnProbe {
    /// The chassis name (`system-id`).
    pub chassis: String,
    /// The southbound database remote(s).
    pub southbound: String,
}

/// The probes of a running node.
pub struct NodeProbes {
    /// Servers and their status.
    pub compute: Arc<ComputeService>,
    /// libvirt.
    pub hypervisor: Arc<dyn Hypervisor>,
    /// OVN, when the node runs networking.
    pub ovn: Option<OvnProbe>,
}

impl NodeProbes {
    fn libvirt(&self) -> Option<String> {
        self.hypervisor
            .domains()
            .err()
            .map(|err| format!("libvirt does not answer: {err}"))
    }
}

impl OvnProbe {
    fn unhealthy(&self) -> Findings {
        let ovn = self;
        let mut findings = Findings::default();
        match crate::system::tool::run(
            "ovn-appctl",
            &[
                "-t".as_ref(),
                "ovn-controller".as_ref(),
                "connection-status".as_ref(),
            ],
        ) {
            Ok(status) if status.trim() == "connected" => {}
            Ok(status) => findings.pending(format!(
                "ovn-controller is {} to the southbound database",
                status.trim()
            )),
            Err(err) => findings.pending(format!("ovn-controller does not answer: {err}")),
        }
        let db = format!("--db={}", ovn.southbound);
        let name = format!("name={}", ovn.chassis);
        match crate::system::tool::run(
            "ovn-sbctl",
            &[
                db.as_ref(),
                "--timeout=10".as_ref(),
                "--bare".as_ref(),
                "--columns=name".as_ref(),
                "find".as_ref(),
                "Chassis".as_ref(),
                name.as_ref(),
            ],
        ) {
            Ok(found) if found.trim() == ovn.chassis => {}
            Ok(_) => findings.pending(format!(
                "chassis {} is not registered in the southbound database",
                ovn.chassis
            )),
            Err(err) => findings.pending(format!("the southbound database does not answer: {err}")),
        }
        findings
    }
}

impl NodeProbes {
    fn servers(&self, restore: &[Uuid]) -> Vec<String> {
        if restore.is_empty() {
            return Vec::new();
        }
        let servers = match self.compute.servers() {
            Ok(servers) => servers,
            Err(err) => return vec![format!("cannot read the servers: {err}")],
        };
        restore
            .iter()
            .filter_map(|id| {
                match servers.iter().find(|server| server.id == *id) {
                    // Deleted meanwhile: nothing to bring back.
                    None => None,
                    Some(server) if server.status == ServerStatus::Active => None,
                    Some(server) => Some(format!(
                        "server {id} is {} (was ACTIVE before the update)",
                        server.status.as_str()
                    )),
                }
            })
            .collect()
    }
}

/// The units a node cannot serve without. systemd restarts each on failure; once one is `failed`
/// it gave up, and waiting will not bring it back.
const REQUIRED_UNITS: [&str; 2] = ["scs-edge-agent.service", "libvirtd.service"];
/// The same for a node that runs networking.
const REQUIRED_NETWORK_UNITS: [&str; 3] = [
    "ovsdb-server.service",
    "ovs-vswitchd.service",
    "ovn-controller.service",
];

/// Whether systemd reports `unit` active (for the agent, `Type=notify`: READY was sent).
async fn unit_active(unit: &str) -> Result<String, String> {
    let connection = zbus_systemd::zbus::Connection::system()
        .await
        .map_err(|err| format!("connecting to the system bus: {err}"))?;
    let manager = zbus_systemd::systemd1::ManagerProxy::new(&connection)
        .await
        .map_err(|err| err.to_string())?;
    let path = manager
        .load_unit(unit.to_owned())
        .await
        .map_err(|err| err.to_string())?;
    let unit = zbus_systemd::systemd1::UnitProxy::new(&connection, path)
        .await
        .map_err(|err| err.to_string())?;
    unit.active_state().await.map_err(|err| err.to_string())
}

impl GateProbes for NodeProbes {
    fn unhealthy(&self, restore: &[Uuid]) -> BoxFuture<'_, Findings> {
        let restore = restore.to_vec();
        Box::pin(async move {
            let mut findings = Findings::default();
            let network_units = self
                .ovn
                .as_ref()
                .map_or(&[][..], |_| &REQUIRED_NETWORK_UNITS[..]);
            for unit in REQUIRED_UNITS.iter().chain(network_units) {
                match unit_active(unit).await {
                    Ok(state) if state == "failed" => {
                        findings.settled(format!("{unit} has failed"));
                    }
                    Ok(state) if state == "active" => {}
                    // The agent is Type=notify: active means READY.
                    Ok(state) if *unit == "scs-edge-agent.service" => {
                        findings.pending(format!("the agent is {state}, not READY"));
                    }
                    Ok(_) => {}
                    Err(err) => findings.pending(format!("cannot ask systemd about {unit}: {err}")),
                }
            }
            if let Some(reason) = self.libvirt() {
                findings.pending(reason);
            }
            if let Some(ovn) = &self.ovn {
                findings.extend(ovn.unhealthy());
            }
            for reason in self.servers(&restore) {
                findings.pending(reason);
            }
            findings
        })
    }
}
