//! Stopping the node's servers for a reboot into a new version. The reconcile loops stop first —
//! otherwise the server reconciler would take a guest's ACPI power-off for the guest's own wish
//! and record it SHUTOFF — and what anyone asked for stays as it was: after the boot, every server
//! whose desired state is running starts again through the ordinary reconcile.

use super::liveness::LivenessState;
use crate::compute::ComputeService;
use crate::compute::hypervisor::{DomainPower, Hypervisor};
use crate::compute::server::ServerStatus;
use crate::update::host::Drain;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

/// The daemon's [`Drain`].
pub(super) struct ServerDrain {
    pub loops_stop: CancellationToken,
    pub loops_stopped: tokio::sync::watch::Receiver<bool>,
    pub liveness: Arc<LivenessState>,
    pub compute: Arc<ComputeService>,
    pub hypervisor: Arc<dyn Hypervisor>,
}

impl ServerDrain {
    fn running_domains(&self) -> Result<Vec<Uuid>, String> {
        Ok(self
            .hypervisor
            .domains()
            .map_err(|err| err.to_string())?
            .into_iter()
            .filter(|domain| matches!(domain.power, DomainPower::Running | DomainPower::Paused))
            .map(|domain| domain.id)
            .collect())
    }
}

impl Drain for ServerDrain {
    fn stop_workloads(&self, timeout: Duration) -> BoxFuture<'_, Result<Vec<Uuid>, String>> {
        Box::pin(async move {
            let active: Vec<Uuid> = self
                .compute
                .servers()
                .map_err(|err| err.to_string())?
                .into_iter()
                .filter(|server| server.status == ServerStatus::Active)
                .map(|server| server.id)
                .collect();
            // The watchdog keeps being fed while the loops are down on purpose.
            self.liveness.set_draining();
            self.loops_stop.cancel();
            let mut stopped = self.loops_stopped.clone();
            let _ = stopped.wait_for(|done| *done).await;
            let hypervisor = self.hypervisor.clone();
            let running = self.running_domains()?;
            info!(
                servers = running.len(),
                ?timeout,
                "stopping the servers (ACPI) for the reboot"
            );
            for id in &running {
                if let Err(err) = hypervisor.shutdown(*id) {
                    warn!(server = %id, %err, "ACPI shutdown request failed; powering off");
                    let _ = hypervisor.power_off(*id);
                }
            }
            let deadline = Instant::now() + timeout;
            loop {
                let still = self.running_domains()?;
                if still.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    for id in still {
                        warn!(server = %id, "did not shut down in time; powering off");
                        hypervisor.power_off(id).map_err(|err| err.to_string())?;
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(active)
        })
    }
}
