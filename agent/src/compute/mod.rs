//! Compute: flavors, servers, and the libvirt/QEMU domains that run them.
//!
//! The service (`service.rs`) validates requests and writes desired state; the reconciler
//! (`reconciler.rs`) makes libvirt and the server's files match it and writes status back. Host side
//! effects sit behind three traits with real and fake implementations: [`hypervisor::Hypervisor`]
//! (libvirt), [`files::ServerFiles`] (disks and config drives) and [`host::HostInventory`] (capacity).
//! No libvirt type leaves `libvirt/`.

pub mod config_drive;
pub mod fake;
pub mod files;
pub mod flavor;
pub mod host;
pub mod hypervisor;
pub mod keypair;
pub mod kvm_probe;
pub mod libvirt;
pub mod qcow2;
pub mod reconciler;
mod repo;
pub mod scs_flavors;
pub mod server;
pub mod service;
#[cfg(test)]
mod tests;

use crate::error_class::{Classify, ErrorClass};
use crate::image::ImageError;
use crate::store::StoreError;

pub use flavor::{Flavor, NewFlavor};
pub use server::{NetworkRequest, NewServer, Nic, PowerIntent, RebootKind, Server, ServerStatus};
pub use service::{ComputeService, ComputeSettings};

/// Why a compute request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// No such flavor.
    #[error("flavor {0} could not be found")]
    FlavorNotFound(String),
    /// No such server.
    #[error("server {0} could not be found")]
    ServerNotFound(String),
    /// No such image.
    #[error("image {0} could not be found")]
    ImageNotFound(String),
    /// No such keypair for this user.
    #[error("keypair {0} could not be found")]
    KeypairNotFound(String),
    /// A field of the request is unacceptable.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The flavor cannot hold the image.
    #[error("{0}")]
    FlavorImageMismatch(String),
    /// An id or name is taken.
    #[error("{what} {id} already exists")]
    Duplicate {
        /// Resource kind.
        what: &'static str,
        /// The clashing id or name.
        id: String,
    },
    /// The action does not fit the server's state (e.g. starting a running server).
    #[error("cannot '{action}' server {id} while it is {state}")]
    InvalidState {
        /// The action.
        action: &'static str,
        /// Server id.
        id: String,
        /// Its current state.
        state: String,
    },
    /// The node cannot fit the server.
    #[error("no valid host: {0}")]
    NoCapacity(String),
    /// The image store failed.
    #[error(transparent)]
    Image(ImageError),
    /// A NIC's port could not be made or bound.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// The console log could not be read.
    #[error("cannot read the console log: {0}")]
    Console(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for ComputeError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Store(StoreError::Query(err))
    }
}

impl From<ImageError> for ComputeError {
    fn from(err: ImageError) -> Self {
        match err {
            ImageError::NotFound(id) => Self::ImageNotFound(id.to_string()),
            other => Self::Image(other),
        }
    }
}

impl Classify for ComputeError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::FlavorNotFound(_) | Self::ServerNotFound(_) | Self::KeypairNotFound(_) => {
                ErrorClass::NotFound
            }
            // Nova answers 400 when a create request names an image or flavor that does not exist.
            Self::ImageNotFound(_) | Self::Invalid { .. } | Self::FlavorImageMismatch(_) => {
                ErrorClass::BadRequest
            }
            Self::Duplicate { .. } | Self::InvalidState { .. } | Self::NoCapacity(_) => {
                ErrorClass::Conflict
            }
            Self::Image(err) => err.class(),
            Self::Network(err) => err.class(),
            Self::Store(_) | Self::Console(_) => ErrorClass::Internal,
        }
    }
}
