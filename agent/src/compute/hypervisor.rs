//! The hypervisor as the compute domain sees it: define, start, stop and observe domains it owns.
//!
//! Plain Rust types only; the libvirt implementation (`libvirt/`) renders domain XML and talks to
//! libvirtd, the fake (`fake.rs`) keeps domains in memory for unit tests.

use crate::image::format::DiskFormat;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use uuid::Uuid;

/// Hardware acceleration for guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtType {
    /// KVM: only where a probe showed `/dev/kvm` runs guest code.
    Kvm,
    /// TCG software emulation.
    Qemu,
}

/// How one NIC is attached on the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum NicAttachment {
    /// A tap device of this name, not connected to anything by libvirt.
    Tap {
        /// Device name (at most 15 characters).
        dev: String,
    },
    /// A port on an OVS bridge whose `external_ids:iface-id` is the port id, for OVN to bind.
    Ovs {
        /// The bridge (`br-int`).
        bridge: String,
        /// Tap device name.
        dev: String,
    },
}

/// One NIC of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct NicSpec {
    /// Port id.
    pub port_id: Uuid,
    /// MAC address.
    pub mac: String,
    /// Host side.
    pub attachment: NicAttachment,
}

/// Everything needed to define a server's domain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainSpec {
    /// Domain UUID = server id.
    pub id: Uuid,
    /// Node that owns the domain (written into its metadata).
    pub node_id: String,
    /// The server's display name (domain title).
    pub title: String,
    /// vCPUs.
    pub vcpus: u32,
    /// RAM in MiB.
    pub memory_mib: u64,
    /// Accelerator.
    pub virt_type: VirtType,
    /// QEMU machine type.
    pub machine: String,
    /// qcow2 overlay.
    pub root_disk: PathBuf,
    /// Format of the root disk file.
    pub root_disk_format: DiskFormat,
    /// Config drive image (vfat, label `config-2`).
    pub config_drive: PathBuf,
    /// Serial console log file.
    pub console_log: PathBuf,
    /// NICs in guest order.
    pub nics: Vec<NicSpec>,
}

impl DomainSpec {
    /// The libvirt domain name: unique, recognisable, stable.
    pub fn domain_name(&self) -> String {
        domain_name(self.id)
    }

    /// Stable digest of the spec; kept in the domain's metadata so a changed spec is redefined.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let hash = Sha256::digest(&json);
        hash.iter().take(12).fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

/// The libvirt domain name of a server.
pub fn domain_name(id: Uuid) -> String {
    format!("scs-{id}")
}

/// Why a domain is shut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutoffReason {
    /// The guest shut itself down (or answered an ACPI request).
    GuestShutdown,
    /// Powered off by a management call.
    Destroyed,
    /// QEMU crashed or failed to start.
    Crashed,
    /// Defined but never started, or libvirt does not know.
    Unknown,
}

/// Power state of a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainPower {
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Shut off.
    Shutoff(ShutoffReason),
    /// Crashed (domain kept in crashed state).
    Crashed,
}

/// What the hypervisor reports about a domain this node owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainStatus {
    /// Domain UUID = server id.
    pub id: Uuid,
    /// Power.
    pub power: DomainPower,
    /// Digest of the spec it was defined from.
    pub spec_digest: Option<String>,
}

/// Why a hypervisor call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HypervisorError {
    /// libvirtd cannot be reached.
    #[error("hypervisor unreachable: {0}")]
    Unreachable(String),
    /// The call reached libvirt and failed.
    #[error("{operation} of domain {id} failed: {message}")]
    Operation {
        /// What was attempted.
        operation: &'static str,
        /// Domain.
        id: Uuid,
        /// libvirt's message.
        message: String,
    },
}

/// The hypervisor. Every method is idempotent where its name allows (power off an off domain, undefine
/// a missing one: success).
pub trait Hypervisor: Send + Sync {
    /// Domains owned by this node.
    fn domains(&self) -> Result<Vec<DomainStatus>, HypervisorError>;
    /// One domain owned by this node, if it exists.
    fn domain(&self, id: Uuid) -> Result<Option<DomainStatus>, HypervisorError>;
    /// Defines (or redefines) the domain persistently.
    fn define(&self, spec: &DomainSpec) -> Result<(), HypervisorError>;
    /// Starts a defined domain.
    fn start(&self, id: Uuid) -> Result<(), HypervisorError>;
    /// Asks the guest to shut down (ACPI power button).
    fn shutdown(&self, id: Uuid) -> Result<(), HypervisorError>;
    /// Pulls the plug.
    fn power_off(&self, id: Uuid) -> Result<(), HypervisorError>;
    /// Removes the definition (the domain must be off).
    fn undefine(&self, id: Uuid) -> Result<(), HypervisorError>;
}
