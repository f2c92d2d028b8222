//! What this machine is and has, read from sysfs/devfs under the root — DMI identity, network
//! interfaces with their MAC and PCI address, disks, TPM, watchdog — and the mapping of a hardware
//! profile onto it (which interface is management, which are provider uplinks, …).
//!
//! Reading is plain file access under a configurable root, so tests build a fake sysfs in a tempdir.

use super::profile::{
    ConsoleRule, DiskRole, DiskUse, HardwareProfile, HostCpus, NicRole, NicRule, TpmPolicy,
    WatchdogRule, glob_match, pci_address,
};
use std::path::{Path, PathBuf};

/// DMI identity, from `/sys/class/dmi/id/*` (values trimmed; a missing file reads as empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dmi {
    /// `sys_vendor`.
    pub sys_vendor: String,
    /// `product_name`.
    pub product_name: String,
    /// `product_sku`.
    pub product_sku: String,
    /// `board_vendor`.
    pub board_vendor: String,
    /// `board_name`.
    pub board_name: String,
}

impl std::fmt::Display for Dmi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sys_vendor={:?} product_name={:?} product_sku={:?} board_vendor={:?} board_name={:?}",
            self.sys_vendor,
            self.product_name,
            self.product_sku,
            self.board_vendor,
            self.board_name
        )
    }
}

/// A physical network interface (one with a `device` link in sysfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetInterface {
    /// Kernel name (`enp1s0`).
    pub name: String,
    /// MAC address, lower case.
    pub mac: String,
    /// PCI address of the function behind it (`0000:00:02.0`), also through a virtio device.
    pub pci: Option<String>,
}

impl std::fmt::Display for NetInterface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (mac {}, pci {})",
            self.name,
            self.mac,
            self.pci.as_deref().unwrap_or("none")
        )
    }
}

/// A block device with a model string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name (`nvme0n1`).
    pub name: String,
    /// `/sys/block/<name>/device/model`, trimmed.
    pub model: String,
}

/// Everything provisioning needs to know about the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HardwareFacts {
    /// DMI identity.
    pub dmi: Dmi,
    /// Physical NICs, ordered by PCI address then name.
    pub nics: Vec<NetInterface>,
    /// Block devices with a model.
    pub disks: Vec<BlockDevice>,
    /// Names under `/dev/disk/by-path/`.
    pub disk_paths: Vec<String>,
    /// A TPM is visible (`/sys/class/tpm/tpm*`).
    pub tpm: bool,
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn dir_names(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

impl HardwareFacts {
    /// Reads the machine under `root`. Missing files mean "not there", never an error: a machine
    /// without DMI or a TPM is a fact to match profiles against, not a failure.
    pub fn read(root: &Path) -> Self {
        let dmi_dir = root.join("sys/class/dmi/id");
        let dmi = Dmi {
            sys_vendor: read_trimmed(&dmi_dir.join("sys_vendor")),
            product_name: read_trimmed(&dmi_dir.join("product_name")),
            product_sku: read_trimmed(&dmi_dir.join("product_sku")),
            board_vendor: read_trimmed(&dmi_dir.join("board_vendor")),
            board_name: read_trimmed(&dmi_dir.join("board_name")),
        };
        let net = root.join("sys/class/net");
        let mut nics: Vec<NetInterface> = dir_names(&net)
            .into_iter()
            .filter_map(|name| {
                let dir = net.join(&name);
                // Virtual links (lo, bridges, veths, taps) have no device behind them. The link is
                // relative (`../../../virtio0` for a virtio NIC): only its resolved path names the
                // PCI functions it hangs off.
                let link = dir.join("device");
                let device = std::fs::canonicalize(&link)
                    .or_else(|_| std::fs::read_link(&link))
                    .ok()?;
                let pci = device
                    .components()
                    .filter_map(|c| c.as_os_str().to_str())
                    .filter_map(pci_address)
                    .next_back()
                    .map(str::to_owned);
                Some(NetInterface {
                    mac: read_trimmed(&dir.join("address")).to_ascii_lowercase(),
                    name,
                    pci,
                })
            })
            .collect();
        nics.sort_by(|a, b| (&a.pci, &a.name).cmp(&(&b.pci, &b.name)));
        let block = root.join("sys/block");
        let disks = dir_names(&block)
            .into_iter()
            .filter_map(|name| {
                let model = std::fs::read_to_string(block.join(&name).join("device/model")).ok()?;
                Some(BlockDevice {
                    name,
                    model: model.trim().to_owned(),
                })
            })
            .collect();
        Self {
            dmi,
            nics,
            disks,
            disk_paths: dir_names(&root.join("dev/disk/by-path")),
            tpm: dir_names(&root.join("sys/class/tpm"))
                .iter()
                .any(|n| n.starts_with("tpm")),
        }
    }
}

/// A provider uplink: the interface, and the physical network and bridge it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUplink {
    /// The interface.
    pub nic: NetInterface,
    /// Physical network name.
    pub physnet: String,
    /// OVS bridge.
    pub bridge: String,
    /// MTU from the profile.
    pub mtu: Option<u32>,
}

/// Where server disks live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmStorage {
    /// On the data partition (the default when a profile names no VM storage disk).
    DataPartition,
    /// On this dedicated disk (`/dev/disk/by-path/…` name or kernel name).
    Disk(String),
}

/// A profile mapped onto this machine: everything the rendered files need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The profile's name.
    pub profile: String,
    /// The management interface.
    pub management: NetInterface,
    /// MTU of the management interface from the profile.
    pub management_mtu: Option<u32>,
    /// Provider uplinks.
    pub providers: Vec<ProviderUplink>,
    /// Storage NICs (recorded only).
    pub storage: Vec<NetInterface>,
    /// VM storage.
    pub vm_storage: VmStorage,
    /// Serial console.
    pub console: Option<ConsoleRule>,
    /// Watchdog to arm (only when the device exists).
    pub watchdog: Option<WatchdogRule>,
    /// Whether a TPM is present.
    pub tpm: bool,
    /// RAM kept for the host.
    pub host_memory_mb: Option<u64>,
    /// CPUs kept for the host.
    pub host_cpus: Option<HostCpus>,
}

/// The profile does not fit this machine: every problem found, with what the machine does have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hardware profile {profile} does not fit this machine: {}", problems.join("; "))]
pub struct MismatchError {
    /// The profile.
    pub profile: String,
    /// One line per problem.
    pub problems: Vec<String>,
}

fn nic_matches(rule: &NicRule, nic: &NetInterface) -> bool {
    if let Some(name) = &rule.name {
        return glob_match(name, &nic.name);
    }
    if let Some(pci) = &rule.pci_path {
        return nic.pci.as_deref() == Some(pci.as_str());
    }
    if let Some(prefix) = &rule.mac_prefix {
        return nic.mac.starts_with(&prefix.to_ascii_lowercase());
    }
    false
}

/// Maps `profile` onto `facts`. Each `[[nic]]` claims, in file order, the first interface (by PCI
/// address, then name) that matches it and no earlier entry claimed.
pub fn resolve(
    profile: &HardwareProfile,
    facts: &HardwareFacts,
    root: &Path,
) -> Result<Layout, MismatchError> {
    let mut problems = Vec::new();
    let mut claimed: Vec<&NetInterface> = Vec::new();
    let mut management = None;
    let mut management_mtu = None;
    let mut providers = Vec::new();
    let mut storage = Vec::new();
    for (i, rule) in profile.nic.iter().enumerate() {
        let found = facts
            .nics
            .iter()
            .find(|nic| !claimed.contains(nic) && nic_matches(rule, nic));
        let Some(nic) = found else {
            problems.push(format!(
                "nic[{i}] ({} NIC, {}): no such interface",
                rule.role,
                rule.selector()
            ));
            continue;
        };
        claimed.push(nic);
        match rule.role {
            NicRole::Management => {
                management = Some(nic.clone());
                management_mtu = rule.mtu;
            }
            NicRole::Provider => providers.push(ProviderUplink {
                nic: nic.clone(),
                physnet: rule.physnet().to_owned(),
                bridge: rule.bridge().to_owned(),
                mtu: rule.mtu,
            }),
            NicRole::Storage => storage.push(nic.clone()),
        }
    }
    let mut vm_storage = VmStorage::DataPartition;
    for (i, disk) in profile.disk.iter().enumerate() {
        let found = if disk.use_ == Some(DiskUse::DataPartition) {
            Some(None)
        } else if let Some(by_path) = &disk.by_path {
            facts
                .disk_paths
                .contains(by_path)
                .then(|| Some(by_path.clone()))
        } else if let Some(model) = &disk.model {
            facts
                .disks
                .iter()
                .find(|d| glob_match(model, &d.model))
                .map(|d| Some(d.name.clone()))
        } else {
            None
        };
        match found {
            None => problems.push(format!(
                "disk[{i}] ({}): not present",
                disk.by_path
                    .as_ref()
                    .map(|p| format!("by_path {p}"))
                    .or_else(|| disk.model.as_ref().map(|m| format!("model {m:?}")))
                    .unwrap_or_default()
            )),
            Some(Some(name)) if disk.role == DiskRole::VmStorage => {
                vm_storage = VmStorage::Disk(name);
            }
            Some(_) => {}
        }
    }
    let policy = profile.tpm.as_ref().map(|t| t.policy);
    if policy == Some(TpmPolicy::Required) && !facts.tpm {
        problems.push(
            "a TPM is required (tpm.policy = \"required\") but /sys/class/tpm has none".into(),
        );
    }
    let watchdog = match &profile.watchdog {
        Some(w) if device_exists(root, &w.device) => Some(w.clone()),
        Some(w) if w.required => {
            problems.push(format!(
                "watchdog {} is required but not present (is its driver loaded?)",
                w.device
            ));
            None
        }
        _ => None,
    };
    let Some(management) = management.filter(|_| problems.is_empty()) else {
        if facts.nics.is_empty() {
            problems.push("no physical network interfaces present".into());
        } else {
            let found: Vec<String> = facts.nics.iter().map(ToString::to_string).collect();
            problems.push(format!("interfaces present: {}", found.join(", ")));
        }
        return Err(MismatchError {
            profile: profile.profile.name.clone(),
            problems,
        });
    };
    let reservations = profile.reservations.as_ref();
    Ok(Layout {
        profile: profile.profile.name.clone(),
        management,
        management_mtu,
        providers,
        storage,
        vm_storage,
        console: profile.console.clone(),
        watchdog,
        tpm: facts.tpm && policy != Some(TpmPolicy::Absent),
        host_memory_mb: reservations.and_then(|r| r.host_memory_mb),
        host_cpus: reservations.and_then(|r| r.host_cpus.clone()),
    })
}

/// `/dev/…` under the root.
pub fn under_root(root: &Path, absolute: &str) -> PathBuf {
    root.join(absolute.trim_start_matches('/'))
}

fn device_exists(root: &Path, device: &str) -> bool {
    std::fs::symlink_metadata(under_root(root, device)).is_ok()
}
