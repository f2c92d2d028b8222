//! Hardware profiles: one TOML file per server model saying how to recognise it (DMI) and how to lay
//! it out (which NIC manages, which carries provider traffic, where VM disks live, console, watchdog,
//! TPM, what the host keeps for itself). `hardware-profiles/README.md` documents the schema; the
//! types here are that schema, strict (`deny_unknown_fields` + [`HardwareProfile::validate`]) because a
//! misspelt key in a profile would otherwise silently lay out a whole fleet of nodes wrongly.

use super::hardware::Dmi;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where the image installs the profiles.
pub const DEFAULT_PROFILES_DIR: &str = "usr/share/scs-edge/hardware-profiles";

/// A profile file that cannot be used, or no usable profile for this machine.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The directory or file could not be read.
    #[error("cannot read hardware profile {path}: {reason}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not valid TOML, or an unknown key or wrong type.
    #[error("invalid hardware profile {path}: key `{key}`: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The dotted key path.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Parsed but not acceptable.
    #[error("invalid hardware profile {path}: key `{key}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key path.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// One hardware profile.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HardwareProfile {
    /// `[profile]`: name and description.
    pub profile: ProfileInfo,
    /// `[match]`: DMI rules; none means the profile is only used when a site forces it by name.
    #[serde(default, rename = "match")]
    pub rules: MatchRules,
    /// `[[nic]]`: network interfaces by role.
    #[serde(default)]
    pub nic: Vec<NicRule>,
    /// `[[disk]]`: disks by role.
    #[serde(default)]
    pub disk: Vec<DiskRule>,
    /// `[console]`: the serial console operators reach (often the BMC's serial-over-LAN).
    pub console: Option<ConsoleRule>,
    /// `[watchdog]`: a hardware watchdog systemd should arm.
    pub watchdog: Option<WatchdogRule>,
    /// `[tpm]`: whether a TPM 2.0 is expected.
    pub tpm: Option<TpmRule>,
    /// `[reservations]`: what the host keeps for itself.
    pub reservations: Option<Reservations>,
}

/// `[profile]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProfileInfo {
    /// Equal to the file name without `.toml`, so `hardware_profile = "…"` finds it.
    pub name: String,
    /// One line an operator reads in messages.
    pub description: String,
    /// The public specification the profile was written from.
    pub vendor_url: Option<String>,
}

/// `[match]`: every rule given must match the DMI value; `*` in a value matches any run of characters.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MatchRules {
    /// `/sys/class/dmi/id/sys_vendor`.
    pub sys_vendor: Option<String>,
    /// `/sys/class/dmi/id/product_name`.
    pub product_name: Option<String>,
    /// `/sys/class/dmi/id/product_sku`.
    pub product_sku: Option<String>,
    /// `/sys/class/dmi/id/board_vendor`.
    pub board_vendor: Option<String>,
    /// `/sys/class/dmi/id/board_name`.
    pub board_name: Option<String>,
}

/// How specific a profile's rules are; the most specific matching profile wins. Compared as a tuple:
/// more exact rules first, then more glob rules, then more literal characters in the globs.
pub type Specificity = (usize, usize, usize);

impl MatchRules {
    fn pairs<'a>(&'a self, dmi: &'a Dmi) -> [(&'static str, Option<&'a str>, &'a str); 5] {
        [
            ("sys_vendor", self.sys_vendor.as_deref(), &dmi.sys_vendor),
            (
                "product_name",
                self.product_name.as_deref(),
                &dmi.product_name,
            ),
            ("product_sku", self.product_sku.as_deref(), &dmi.product_sku),
            (
                "board_vendor",
                self.board_vendor.as_deref(),
                &dmi.board_vendor,
            ),
            ("board_name", self.board_name.as_deref(), &dmi.board_name),
        ]
    }

    /// Whether every given rule matches `dmi`; false for a profile without rules.
    pub fn matches(&self, dmi: &Dmi) -> bool {
        let pairs = self.pairs(dmi);
        pairs.iter().any(|(_, rule, _)| rule.is_some())
            && pairs
                .iter()
                .all(|(_, rule, value)| rule.is_none_or(|pattern| glob_match(pattern, value)))
    }

    /// The specificity; `None` for a profile without rules.
    pub fn specificity(&self) -> Option<Specificity> {
        let empty = Dmi::default();
        let rules: Vec<&str> = self
            .pairs(&empty)
            .iter()
            .filter_map(|(_, rule, _)| *rule)
            .collect();
        if rules.is_empty() {
            return None;
        }
        let globs: Vec<&&str> = rules.iter().filter(|r| r.contains('*')).collect();
        let literal = globs
            .iter()
            .map(|g| g.chars().filter(|c| *c != '*').count())
            .sum();
        Some((rules.len() - globs.len(), globs.len(), literal))
    }

    /// `key = "pattern"` pairs for messages.
    pub fn describe(&self) -> String {
        let empty = Dmi::default();
        let given: Vec<String> = self
            .pairs(&empty)
            .iter()
            .filter_map(|(key, rule, _)| rule.map(|r| format!("{key}={r:?}")))
            .collect();
        if given.is_empty() {
            "(no [match] rules: only used when forced by name)".into()
        } else {
            given.join(" ")
        }
    }
}

/// `*` matches any run of characters (also none); everything else matches itself exactly.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or_default();
    for part in parts {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// What a NIC is for.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum NicRole {
    /// The node's own address: SSH, the API, the region link. Exactly one per profile.
    Management,
    /// Uplink of a provider (physical) network, enslaved to an OVS bridge: carries VM traffic.
    Provider,
    /// Storage network; recorded, not configured yet.
    Storage,
}

impl std::fmt::Display for NicRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Management => "management",
            Self::Provider => "provider",
            Self::Storage => "storage",
        })
    }
}

/// `[[nic]]`: one role, found by exactly one of `name`, `pci_path`, `mac_prefix`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NicRule {
    /// What the NIC is for.
    pub role: NicRole,
    /// Interface name (`enp1s0`); `*` globs allowed.
    pub name: Option<String>,
    /// PCI address of the NIC function (`0000:00:02.0`) — survives renames and kernel changes.
    pub pci_path: Option<String>,
    /// Leading octets of the MAC address (`3c:ec:ef`), case-insensitive.
    pub mac_prefix: Option<String>,
    /// Provider NICs: the physical network name. Default `physnet1`.
    pub physnet: Option<String>,
    /// Provider NICs: the OVS bridge. Default `br-ex`.
    pub bridge: Option<String>,
    /// MTU (576-9216). Default: the link's.
    pub mtu: Option<u32>,
}

impl NicRule {
    /// The selector as written, for messages.
    pub fn selector(&self) -> String {
        match (&self.name, &self.pci_path, &self.mac_prefix) {
            (Some(name), _, _) => format!("name {name:?}"),
            (_, Some(pci), _) => format!("pci_path {pci}"),
            (_, _, Some(mac)) => format!("mac_prefix {mac}"),
            _ => "(no selector)".into(),
        }
    }

    /// The physical network of a provider NIC.
    pub fn physnet(&self) -> &str {
        self.physnet.as_deref().unwrap_or("physnet1")
    }

    /// The bridge of a provider NIC.
    pub fn bridge(&self) -> &str {
        self.bridge.as_deref().unwrap_or("br-ex")
    }
}

/// What a disk is for.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum DiskRole {
    /// Where server disks (qcow2 overlays, images) live.
    VmStorage,
    /// The disk the OS image is installed on.
    System,
}

/// `use = …` values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DiskUse {
    /// The image's data partition (`/var`): no extra disk.
    DataPartition,
}

/// `[[disk]]`: one role, found by exactly one of `by_path`, `model`, `use`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DiskRule {
    /// What the disk is for.
    pub role: DiskRole,
    /// Name under `/dev/disk/by-path/` (`pci-0000:00:17.0-ata-1`).
    pub by_path: Option<String>,
    /// `/sys/block/*/device/model`, `*` globs allowed.
    pub model: Option<String>,
    /// `data-partition`: VM storage on the data partition.
    #[serde(rename = "use")]
    pub use_: Option<DiskUse>,
}

/// `[console]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleRule {
    /// The serial device name under `/dev` (`ttyS0`, `ttyS1`, `ttyAMA0`).
    pub serial: String,
    /// Bits per second; one of those `serial-getty@.service` tries (9600, 38400, 57600, 115200).
    #[serde(default = "default_baud")]
    pub baud: u32,
}

fn default_baud() -> u32 {
    115_200
}

/// Baud rates the stock `serial-getty@.service` (`agetty --keep-baud 115200,57600,38400,9600`) handles.
pub const BAUD_RATES: [u32; 4] = [9600, 38_400, 57_600, 115_200];

/// `[watchdog]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WatchdogRule {
    /// The device (`/dev/watchdog0`).
    pub device: String,
    /// systemd's `RuntimeWatchdogSec` (1-3600): a hung kernel or PID 1 reboots after this.
    pub timeout_secs: u32,
    /// Wait for the device instead of provisioning without a watchdog. Default false.
    #[serde(default)]
    pub required: bool,
}

/// `[tpm] policy`
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TpmPolicy {
    /// Wait until a TPM is visible (`/sys/class/tpm/tpm*`).
    Required,
    /// Use one if present.
    Optional,
    /// The model has none; do not look.
    Absent,
}

/// `[tpm]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TpmRule {
    /// Required, optional or absent.
    pub policy: TpmPolicy,
}

/// `[reservations]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Reservations {
    /// CPUs kept for the host: a list of CPU numbers or a count.
    pub host_cpus: Option<HostCpus>,
    /// RAM kept for the host (becomes `compute.reserved_host_memory_mb`).
    pub host_memory_mb: Option<u64>,
}

/// `host_cpus = [0, 1]` or `host_cpus = 2`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum HostCpus {
    /// That many CPUs (the lowest-numbered).
    Count(u32),
    /// These CPUs.
    List(Vec<u32>),
}

/// Profile names double as file names and as `hardware_profile = …` values.
pub fn is_profile_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
        && !name.starts_with('.')
}

fn is_pci_address(text: &str) -> bool {
    // DDDD:BB:DD.F, hex, as in /sys/bus/pci/devices.
    let b = text.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .filter(|(i, _)| ![4, 7, 10].contains(i))
            .all(|(_, c)| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// Whether `text` is a PCI address (`0000:00:02.0`, lower-case hex).
pub fn pci_address(text: &str) -> Option<&str> {
    is_pci_address(text).then_some(text)
}

fn is_mac_prefix(text: &str) -> bool {
    let octets: Vec<&str> = text.split(':').collect();
    (1..=6).contains(&octets.len())
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl HardwareProfile {
    /// Parses a profile file's text; `path` names it in errors. Includes [`Self::validate`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, ProfileError> {
        let deserializer = toml::Deserializer::parse(text).map_err(|err| ProfileError::Parse {
            path: path.to_owned(),
            key: "(document)".into(),
            reason: err.message().to_owned(),
        })?;
        let profile: Self =
            serde_path_to_error::deserialize(deserializer).map_err(|err| ProfileError::Parse {
                path: path.to_owned(),
                key: err.path().to_string(),
                reason: err.into_inner().message().to_owned(),
            })?;
        profile.validate(path)?;
        Ok(profile)
    }

    /// Checks what the types cannot: one management NIC, exactly one selector per NIC and disk,
    /// consistent provider networks, sane ranges; and that the name equals the file stem.
    pub fn validate(&self, path: &Path) -> Result<(), ProfileError> {
        let invalid = |key: String, reason: String| ProfileError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        let p = &self.profile;
        if !is_profile_name(&p.name) {
            return Err(invalid(
                "profile.name".into(),
                format!("must be 1-64 characters of [a-z0-9._-], got {:?}", p.name),
            ));
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if p.name != stem {
            return Err(invalid(
                "profile.name".into(),
                format!(
                    "must equal the file name without .toml ({stem:?}), got {:?}",
                    p.name
                ),
            ));
        }
        if p.description.trim().is_empty() {
            return Err(invalid(
                "profile.description".into(),
                "must not be empty".into(),
            ));
        }
        if let Some(url) = &p.vendor_url
            && !url.starts_with("https://")
        {
            return Err(invalid(
                "profile.vendor_url".into(),
                format!("must be an https:// URL, got {url:?}"),
            ));
        }
        let empty = Dmi::default();
        for (key, rule, _) in self.rules.pairs(&empty) {
            if rule.is_some_and(|r| r.trim().is_empty()) {
                return Err(invalid(format!("match.{key}"), "must not be empty".into()));
            }
        }
        self.validate_nics(&invalid)?;
        self.validate_disks(&invalid)?;
        if let Some(console) = &self.console {
            let ok = (1..=32).contains(&console.serial.len())
                && console.serial.bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok {
                return Err(invalid(
                    "console.serial".into(),
                    format!(
                        "must be a device name under /dev like ttyS0, got {:?}",
                        console.serial
                    ),
                ));
            }
            if !BAUD_RATES.contains(&console.baud) {
                return Err(invalid(
                    "console.baud".into(),
                    format!("must be one of {BAUD_RATES:?}, got {}", console.baud),
                ));
            }
        }
        if let Some(watchdog) = &self.watchdog {
            let name = watchdog.device.strip_prefix("/dev/").unwrap_or_default();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(invalid(
                    "watchdog.device".into(),
                    format!(
                        "must be a device under /dev/ like /dev/watchdog0, got {:?}",
                        watchdog.device
                    ),
                ));
            }
            if !(1..=3600).contains(&watchdog.timeout_secs) {
                return Err(invalid(
                    "watchdog.timeout_secs".into(),
                    format!("must be 1-3600, got {}", watchdog.timeout_secs),
                ));
            }
        }
        if let Some(reservations) = &self.reservations {
            match &reservations.host_cpus {
                Some(HostCpus::Count(count)) if !(1..=1024).contains(count) => {
                    return Err(invalid(
                        "reservations.host_cpus".into(),
                        format!("a count must be 1-1024, got {count}"),
                    ));
                }
                Some(HostCpus::List(cpus)) => {
                    let unique: BTreeSet<&u32> = cpus.iter().collect();
                    if cpus.is_empty() || unique.len() != cpus.len() {
                        return Err(invalid(
                            "reservations.host_cpus".into(),
                            "a list must name at least one CPU, each once".into(),
                        ));
                    }
                }
                _ => {}
            }
            if reservations.host_memory_mb.is_some_and(|mb| mb > 1 << 20) {
                return Err(invalid(
                    "reservations.host_memory_mb".into(),
                    "must be at most 1048576 (1 TiB)".into(),
                ));
            }
        }
        Ok(())
    }

    fn validate_nics(
        &self,
        invalid: &dyn Fn(String, String) -> ProfileError,
    ) -> Result<(), ProfileError> {
        let managements = self
            .nic
            .iter()
            .filter(|n| n.role == NicRole::Management)
            .count();
        if managements != 1 {
            return Err(invalid(
                "nic".into(),
                format!(
                    "exactly one [[nic]] with role = \"management\" is required, found {managements}"
                ),
            ));
        }
        let mut bridges: BTreeMap<&str, (&str, Option<u32>)> = BTreeMap::new();
        for (i, nic) in self.nic.iter().enumerate() {
            let key = |k: &str| format!("nic[{i}].{k}");
            let selectors = [
                nic.name.is_some(),
                nic.pci_path.is_some(),
                nic.mac_prefix.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            if selectors != 1 {
                return Err(invalid(
                    format!("nic[{i}]"),
                    "needs exactly one of name, pci_path, mac_prefix".into(),
                ));
            }
            if let Some(name) = &nic.name
                && (name.is_empty() || name.len() > 15 || name.contains(['/', ' ']))
            {
                return Err(invalid(
                    key("name"),
                    format!("not an interface name: {name:?}"),
                ));
            }
            if let Some(pci) = &nic.pci_path
                && !is_pci_address(pci)
            {
                return Err(invalid(
                    key("pci_path"),
                    format!(
                        "must be a PCI address like 0000:00:02.0 (lower-case hex), got {pci:?}"
                    ),
                ));
            }
            if let Some(mac) = &nic.mac_prefix
                && !is_mac_prefix(mac)
            {
                return Err(invalid(
                    key("mac_prefix"),
                    format!("must be 1-6 colon-separated hex octets like 3c:ec:ef, got {mac:?}"),
                ));
            }
            if let Some(mtu) = nic.mtu
                && !(576..=9216).contains(&mtu)
            {
                return Err(invalid(key("mtu"), format!("must be 576-9216, got {mtu}")));
            }
            if nic.role == NicRole::Provider {
                let bridge = nic.bridge();
                if bridge.is_empty() || bridge.len() > 15 || bridge == "br-int" {
                    return Err(invalid(
                        key("bridge"),
                        format!(
                            "must be a 1-15 character bridge name other than br-int, got {bridge:?}"
                        ),
                    ));
                }
                let physnet = nic.physnet();
                if physnet.is_empty() || physnet.contains([':', ',', ' ']) {
                    return Err(invalid(
                        key("physnet"),
                        format!("must not be empty or contain ':', ',' or spaces, got {physnet:?}"),
                    ));
                }
                match bridges.get(physnet) {
                    Some((other, mtu)) if *other != bridge || *mtu != nic.mtu => {
                        return Err(invalid(
                            key("bridge"),
                            format!("provider NICs of {physnet} must share one bridge and mtu"),
                        ));
                    }
                    _ => {
                        bridges.insert(physnet, (bridge, nic.mtu));
                    }
                }
            } else if nic.physnet.is_some() || nic.bridge.is_some() {
                return Err(invalid(
                    key(if nic.physnet.is_some() {
                        "physnet"
                    } else {
                        "bridge"
                    }),
                    "only provider NICs have a physical network and bridge".into(),
                ));
            }
        }
        let mut seen_bridges = BTreeMap::new();
        for (physnet, (bridge, _)) in &bridges {
            if let Some(other) = seen_bridges.insert(*bridge, *physnet) {
                return Err(invalid(
                    "nic".into(),
                    format!("bridge {bridge} is used by both {other} and {physnet}"),
                ));
            }
        }
        Ok(())
    }

    fn validate_disks(
        &self,
        invalid: &dyn Fn(String, String) -> ProfileError,
    ) -> Result<(), ProfileError> {
        let mut roles = BTreeSet::new();
        for (i, disk) in self.disk.iter().enumerate() {
            let selectors = [
                disk.by_path.is_some(),
                disk.model.is_some(),
                disk.use_.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            if selectors != 1 {
                return Err(invalid(
                    format!("disk[{i}]"),
                    "needs exactly one of by_path, model, use".into(),
                ));
            }
            if disk.use_.is_some() && disk.role != DiskRole::VmStorage {
                return Err(invalid(
                    format!("disk[{i}].use"),
                    "use = \"data-partition\" is only for role = \"vm-storage\"".into(),
                ));
            }
            if let Some(by_path) = &disk.by_path
                && (by_path.is_empty() || by_path.contains('/'))
            {
                return Err(invalid(
                    format!("disk[{i}].by_path"),
                    format!("must be a name under /dev/disk/by-path/, got {by_path:?}"),
                ));
            }
            if disk.model.as_ref().is_some_and(|m| m.trim().is_empty()) {
                return Err(invalid(
                    format!("disk[{i}].model"),
                    "must not be empty".into(),
                ));
            }
            if !roles.insert(disk.role) {
                return Err(invalid(
                    format!("disk[{i}].role"),
                    "at most one disk per role".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Loads and validates every `*.toml` in `dir`, sorted by file name. One broken file fails the lot:
/// a profile set is shipped as a whole, and a silently skipped profile would send its machines to
/// another profile or to "no match".
pub fn load_dir(dir: &Path) -> Result<Vec<HardwareProfile>, ProfileError> {
    let read_err = |path: &Path, err: &std::io::Error| ProfileError::Read {
        path: path.to_owned(),
        reason: err.to_string(),
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| read_err(dir, &e))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|e| read_err(path, &e))?;
            HardwareProfile::parse(&text, path)
        })
        .collect()
}

/// Why no profile could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// The site forces a profile that does not exist.
    #[error("the site configuration forces hardware_profile {name:?}, which does not exist")]
    UnknownForced {
        /// The forced name.
        name: String,
    },
    /// No profile's rules match this machine.
    #[error("no hardware profile matches this machine's DMI data")]
    NoMatch,
    /// Two profiles match equally well.
    #[error("hardware profiles {first} and {second} both match this machine equally specifically")]
    Tie {
        /// One profile.
        first: String,
        /// The other.
        second: String,
    },
}

/// Chooses the profile: the forced one by name, else the most specific DMI match.
pub fn select<'a>(
    profiles: &'a [HardwareProfile],
    dmi: &Dmi,
    forced: Option<&str>,
) -> Result<&'a HardwareProfile, SelectError> {
    if let Some(name) = forced {
        return profiles
            .iter()
            .find(|p| p.profile.name == name)
            .ok_or_else(|| SelectError::UnknownForced { name: name.into() });
    }
    let mut best: Option<(Specificity, &HardwareProfile)> = None;
    let mut tie: Option<(Specificity, &HardwareProfile)> = None;
    for profile in profiles.iter().filter(|p| p.rules.matches(dmi)) {
        let Some(score) = profile.rules.specificity() else {
            continue;
        };
        match best {
            Some((top, _)) if score < top => {}
            Some((top, _)) if score == top => tie = Some((score, profile)),
            _ => {
                best = Some((score, profile));
                tie = None;
            }
        }
    }
    match (best, tie) {
        (Some((_, first)), Some((_, second))) => Err(SelectError::Tie {
            first: first.profile.name.clone(),
            second: second.profile.name.clone(),
        }),
        (Some((_, profile)), None) => Ok(profile),
        (None, _) => Err(SelectError::NoMatch),
    }
}
