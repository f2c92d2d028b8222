//! Where a site configuration can come from, in the order they are tried.
//!
//! The first source that carries *any* SCS Edge setting is the one used, and it must then be complete
//! and valid: falling through to the next source on a typo would provision the node from a stick the
//! operator forgot in the slot instead of the kernel command line they just edited.
//!
//! 1. the kernel command line — what a boot loader entry or PXE config carries;
//! 2. QEMU fw_cfg, then SMBIOS OEM strings — what a hypervisor (or a BMC) hands a machine;
//! 3. a filesystem labelled `SCSEDGE` — a config partition or a USB stick plugged in on site.

use super::site::{self, Field, MAX_SITE_TOML_BYTES, SiteConfig, SiteError};
use crate::system::mount::{MountError, Mounter};
use base64::Engine as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The kernel command line, relative to the root.
pub const CMDLINE: &str = "proc/cmdline";
/// The fw_cfg blob QEMU exposes for `-fw_cfg name=opt/org.scs-edge/site.toml,file=…`.
pub const FW_CFG: &str = "sys/firmware/qemu_fw_cfg/by_name/opt/org.scs-edge/site.toml/raw";
/// The raw SMBIOS structures; OEM strings are type 11 (`11-0`, `11-1`, …).
pub const DMI_ENTRIES: &str = "sys/firmware/dmi/entries";
/// The config partition or USB stick.
pub const LABEL_DEVICE: &str = "dev/disk/by-label/SCSEDGE";
/// Prefix of site settings on the kernel command line.
pub const CMDLINE_PREFIX: &str = "scs_edge.";
/// Prefix of site settings among the SMBIOS OEM strings.
pub const SMBIOS_PREFIX: &str = "scs-edge:";

/// One place a site configuration can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `scs_edge.*` parameters in `/proc/cmdline`.
    Cmdline,
    /// The QEMU fw_cfg file `opt/org.scs-edge/site.toml`.
    FwCfg,
    /// `scs-edge:*` SMBIOS OEM strings (type 11).
    Smbios,
    /// `site.toml` on the filesystem labelled `SCSEDGE`.
    Label,
}

impl SourceKind {
    /// Short stable identifier, as recorded in the provisioning stamp.
    pub fn id(self) -> &'static str {
        match self {
            Self::Cmdline => "cmdline",
            Self::FwCfg => "fw_cfg",
            Self::Smbios => "smbios",
            Self::Label => "label",
        }
    }

    /// The kind with [`Self::id`] `id`.
    pub fn from_id(id: &str) -> Option<Self> {
        [Self::Cmdline, Self::FwCfg, Self::Smbios, Self::Label]
            .into_iter()
            .find(|kind| kind.id() == id)
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cmdline => "kernel command line",
            Self::FwCfg => "QEMU fw_cfg",
            Self::Smbios => "SMBIOS OEM strings",
            Self::Label => "SCSEDGE filesystem",
        })
    }
}

/// A valid site configuration and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The configuration.
    pub site: SiteConfig,
    /// Its source.
    pub source: SourceKind,
}

/// Tries every source in order; `Ok(None)` when none carries any setting.
pub fn discover(root: &Path, mounter: &dyn Mounter) -> Result<Option<Found>, SiteError> {
    type Reader = fn(&Path, &dyn Mounter) -> Result<Option<SiteConfig>, SiteError>;
    let readers: [(SourceKind, Reader); 4] = [
        (SourceKind::Cmdline, |root, _| from_cmdline(root)),
        (SourceKind::FwCfg, |root, _| from_fw_cfg(root)),
        (SourceKind::Smbios, |root, _| from_smbios(root)),
        (SourceKind::Label, from_label),
    ];
    for (source, read) in readers {
        if let Some(site) = read(root, mounter)? {
            return Ok(Some(Found { site, source }));
        }
    }
    Ok(None)
}

fn read_optional(path: &Path, origin: SourceKind) -> Result<Option<Vec<u8>>, SiteError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(SiteError::Unreadable {
            origin,
            what: path.display().to_string(),
            reason: err.to_string(),
        }),
    }
}

/// Splits a kernel command line into parameters the way the kernel does: whitespace separates,
/// double quotes group and are removed (`scs_edge.x="a b"` is `scs_edge.x=a b`).
pub fn cmdline_params(text: &str) -> Vec<String> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    params.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        params.push(current);
    }
    params
}

fn from_cmdline(root: &Path) -> Result<Option<SiteConfig>, SiteError> {
    let origin = SourceKind::Cmdline;
    let Some(bytes) = read_optional(&root.join(CMDLINE), origin)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    let pairs: Vec<(String, String)> = cmdline_params(&text)
        .into_iter()
        .filter_map(|param| {
            let rest = param.strip_prefix(CMDLINE_PREFIX)?;
            let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
            Some((key.to_owned(), value.to_owned()))
        })
        .collect();
    if pairs.is_empty() {
        return Ok(None);
    }
    if let Some((_, encoded)) = pairs.iter().find(|(key, _)| key == "site_config") {
        if let Some((other, _)) = pairs.iter().find(|(key, _)| key != "site_config") {
            return Err(SiteError::invalid(
                origin,
                format!("{CMDLINE_PREFIX}{other}"),
                format!(
                    "cannot be combined with {CMDLINE_PREFIX}site_config (use one or the other)"
                ),
            ));
        }
        if pairs.len() > 1 {
            return Err(SiteError::invalid(
                origin,
                format!("{CMDLINE_PREFIX}site_config"),
                "given more than once",
            ));
        }
        let text = decode_base64(encoded).ok_or_else(|| {
            SiteError::invalid(
                origin,
                format!("{CMDLINE_PREFIX}site_config"),
                "not base64 of a UTF-8 site.toml",
            )
        })?;
        return site::parse_site_toml(&text, origin)
            .map_err(|err| prefix_key(err, &format!("{CMDLINE_PREFIX}site_config: ")))
            .map(Some);
    }
    loose(pairs, origin, CMDLINE_PREFIX).map(Some)
}

fn prefix_key(err: SiteError, prefix: &str) -> SiteError {
    match err {
        SiteError::Invalid {
            origin,
            key,
            reason,
        } => SiteError::Invalid {
            origin,
            key: format!("{prefix}{key}"),
            reason,
        },
        other @ SiteError::Unreadable { .. } => other,
    }
}

fn decode_base64(encoded: &str) -> Option<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    if encoded.len() > MAX_SITE_TOML_BYTES * 2 {
        return None;
    }
    let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(encoded).ok())?;
    String::from_utf8(bytes).ok()
}

/// Validates `key=value` settings of a loose source: every key known, none given twice.
fn loose(
    pairs: Vec<(String, String)>,
    origin: SourceKind,
    prefix: &str,
) -> Result<SiteConfig, SiteError> {
    let mut values = BTreeMap::new();
    for (key, value) in pairs {
        let Some(field) = Field::LOOSE
            .into_iter()
            .find(|f| f.loose_key() == Some(key.as_str()))
        else {
            let known: Vec<String> = Field::LOOSE
                .iter()
                .filter_map(|f| f.loose_key())
                .map(|k| format!("{prefix}{k}"))
                .collect();
            return Err(SiteError::invalid(
                origin,
                format!("{prefix}{key}"),
                format!("unknown setting; known: {}", known.join(", ")),
            ));
        };
        if values.insert(field, value).is_some() {
            return Err(SiteError::invalid(
                origin,
                format!("{prefix}{key}"),
                "given more than once",
            ));
        }
    }
    let key_name = |field: Field| format!("{prefix}{}", field.loose_key().unwrap_or_default());
    site::from_loose(&values, origin, &key_name)
}

fn from_fw_cfg(root: &Path) -> Result<Option<SiteConfig>, SiteError> {
    let origin = SourceKind::FwCfg;
    let Some(bytes) = read_optional(&root.join(FW_CFG), origin)? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| SiteError::invalid(origin, "opt/org.scs-edge/site.toml", "not UTF-8 text"))?;
    site::parse_site_toml(&text, origin).map(Some)
}

/// The strings of one raw SMBIOS structure (as in `/sys/firmware/dmi/entries/*/raw`): a formatted
/// area of `length` bytes (header included), then NUL-terminated strings ending with an empty one.
pub fn smbios_strings(raw: &[u8]) -> Result<Vec<String>, String> {
    let [kind, length, ..] = raw else {
        return Err("shorter than an SMBIOS header".into());
    };
    let length = usize::from(*length);
    if length < 4 || raw.len() < length {
        return Err(format!(
            "structure type {kind} claims {length} formatted bytes but has {}",
            raw.len()
        ));
    }
    let mut strings = Vec::new();
    for piece in raw[length..].split(|b| *b == 0) {
        if piece.is_empty() {
            break;
        }
        strings.push(String::from_utf8_lossy(piece).into_owned());
    }
    Ok(strings)
}

fn from_smbios(root: &Path) -> Result<Option<SiteConfig>, SiteError> {
    let origin = SourceKind::Smbios;
    let dir = root.join(DMI_ENTRIES);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(None);
    };
    let mut oem: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let index = name.strip_prefix("11-")?.parse().ok()?;
            Some((index, entry.path().join("raw")))
        })
        .collect();
    oem.sort();
    let mut pairs = Vec::new();
    for (_, path) in oem {
        let Some(raw) = read_optional(&path, origin)? else {
            continue;
        };
        let strings = smbios_strings(&raw).map_err(|reason| SiteError::Unreadable {
            origin,
            what: path.display().to_string(),
            reason,
        })?;
        for string in strings {
            // Other OEM strings (`io.systemd.credential:…`, vendor data) are not ours.
            if let Some(rest) = string.strip_prefix(SMBIOS_PREFIX) {
                let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
                pairs.push((key.to_owned(), value.to_owned()));
            }
        }
    }
    if pairs.is_empty() {
        return Ok(None);
    }
    loose(pairs, origin, SMBIOS_PREFIX).map(Some)
}

fn from_label(root: &Path, mounter: &dyn Mounter) -> Result<Option<SiteConfig>, SiteError> {
    let origin = SourceKind::Label;
    let device = root.join(LABEL_DEVICE);
    if std::fs::symlink_metadata(&device).is_err() {
        return Ok(None);
    }
    let unreadable = |what: &Path, reason: String| SiteError::Unreadable {
        origin,
        what: what.display().to_string(),
        reason,
    };
    let read = crate::system::mount::read_mounted(
        mounter,
        &device,
        &root.join("run"),
        "scs-edge-provision",
        |mount_point| read_site_toml_on(mount_point, origin),
    );
    match read {
        Ok(site) => site.map(Some),
        Err(MountError::MountPoint { path, reason }) => Err(unreadable(&path, reason)),
        Err(MountError::Mount { reason, .. }) => {
            Err(unreadable(&device, format!("mount failed: {reason}")))
        }
        Err(MountError::Unmount {
            mount_point,
            reason,
        }) => Err(unreadable(
            &mount_point,
            format!("unmount failed: {reason}"),
        )),
    }
}

fn read_site_toml_on(mount_point: &Path, origin: SourceKind) -> Result<SiteConfig, SiteError> {
    let path = mount_point.join("site.toml");
    let meta = std::fs::symlink_metadata(&path).map_err(|_| {
        SiteError::invalid(
            origin,
            "site.toml",
            "the SCSEDGE filesystem has no site.toml in its top directory",
        )
    })?;
    if !meta.is_file() {
        return Err(SiteError::invalid(
            origin,
            "site.toml",
            "must be a regular file (not a symlink or directory)",
        ));
    }
    if meta.len() > MAX_SITE_TOML_BYTES as u64 {
        return Err(SiteError::invalid(
            origin,
            "site.toml",
            format!("larger than {MAX_SITE_TOML_BYTES} bytes"),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| SiteError::Unreadable {
        origin,
        what: "site.toml".into(),
        reason: e.to_string(),
    })?;
    site::parse_site_toml(&text, origin)
}
