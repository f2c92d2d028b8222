//! Which maintenance window this node reboots in. The window itself — its form, when it is open —
//! is the protocol's ([`scs_edge_proto::window`]), since the region plans with the same one. The
//! node's own (`[update] maintenance_window`) applies unless the region's desired state names one;
//! a region's window the node cannot read is complained about and replaced by the node's own,
//! never by "no window", which would reboot at any hour.

pub use scs_edge_proto::window::{MaintenanceWindow, WindowError};

use super::region::RegionOffer;
use std::sync::{Arc, Mutex, PoisonError};
use tracing::warn;

/// The window in force, asked afresh each time: the update task decides its reboots by it and the
/// heartbeat reports it, so the region gates on what the node actually does.
pub struct RebootWindow {
    own: Option<MaintenanceWindow>,
    region: Option<Arc<dyn RegionOffer>>,
    /// The desired-state generation whose unreadable window was complained about last.
    complained: Mutex<Option<u64>>,
}

impl std::fmt::Debug for RebootWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RebootWindow")
            .field("own", &self.own)
            .field("region", &self.region.is_some())
            .finish_non_exhaustive()
    }
}

impl RebootWindow {
    /// The node's `own` window, overridden by the one `region`'s desired state names.
    pub fn new(own: Option<MaintenanceWindow>, region: Option<Arc<dyn RegionOffer>>) -> Self {
        Self {
            own,
            region,
            complained: Mutex::new(None),
        }
    }

    /// The window in force now; `None`: none, a reboot is due as soon as a release is written.
    pub fn current(&self) -> Option<MaintenanceWindow> {
        let Some(region) = &self.region else {
            return self.own.clone();
        };
        match region.window() {
            Ok(Some(window)) => Some(window),
            Ok(None) => self.own.clone(),
            Err(err) => {
                let mut complained = self
                    .complained
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                // Polled every few seconds: once per desired state is enough to be found.
                if *complained != Some(err.generation) {
                    *complained = Some(err.generation);
                    warn!(%err, own = ?self.own.as_ref().map(ToString::to_string), "keeping the node's own maintenance window");
                }
                self.own.clone()
            }
        }
    }
}
