//! Releases from the region: the OS version the site's desired state names (the region's rollouts
//! set it), the maintenance window the region plans with, and the region's release repository,
//! reached over the node's mTLS link. The federation link implements [`RegionOffer`] from what it
//! saved; the update domain only asks.

use super::window::{MaintenanceWindow, WindowError};
use scs_edge_proto::DesiredState;

/// What the region wants this node to run, when, and where to fetch it.
pub trait RegionOffer: Send + Sync {
    /// The OS version the site's desired state names, if any. An error when the saved desired
    /// state cannot be read: that is no news that the region changed its mind, so nothing the
    /// region offered before is dropped for it.
    fn wanted(&self) -> Result<Option<String>, String>;

    /// The maintenance window the site's desired state names, if any (also `None` while the saved
    /// desired state cannot be read: the node's own window applies then).
    fn window(&self) -> Result<Option<MaintenanceWindow>, RegionWindowError>;

    /// The region's repository for this site (its base URL) and a client that presents the node's
    /// certificate; an error while the node has not joined its region.
    fn repository(&self) -> Result<(reqwest::Url, reqwest::Client), String>;
}

/// A window in the region's desired state this node cannot read (a newer region's form, or a
/// typo an operator made). The node keeps its own window rather than reboot at any time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the maintenance window of the region's desired state (generation {generation}): {source}")]
pub struct RegionWindowError {
    /// The desired state's generation, so that each one is complained about once.
    pub generation: u64,
    /// Why it is no window.
    pub source: WindowError,
}

/// The window `desired` names, parsed.
pub fn desired_window(
    desired: &DesiredState,
) -> Result<Option<MaintenanceWindow>, RegionWindowError> {
    desired
        .maintenance_window
        .as_deref()
        .map(MaintenanceWindow::parse)
        .transpose()
        .map_err(|source| RegionWindowError {
            generation: desired.generation,
            source,
        })
}
