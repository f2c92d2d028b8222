//! The node's files: rendered in memory from the site configuration and the resolved hardware
//! layout, validated as a whole, then written one by one atomically (temp file, fsync, rename, fsync
//! the directory) with the provisioning stamp last — so a crash at any point leaves either the old
//! file or the new one, and a node without a stamp is simply provisioned again on the next boot.

use super::hardware::{Layout, VmStorage};
use super::site::SiteConfig;
use super::sources::SourceKind;
use crate::config::AgentConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The normalised site configuration.
pub const SITE_TOML: &str = "etc/scs-edge/site.toml";
/// The agent's configuration.
pub const AGENT_TOML: &str = "etc/scs-edge/agent.toml";
/// The one-time join token the agent presents to the region (mode 0600; the agent deletes it once it
/// joined). Kept apart from agent.toml so the configuration stays world-readable and the secret does
/// not outlive its use.
pub const JOIN_TOKEN: &str = "etc/scs-edge/join-token";
/// systemd-networkd: the management interface (sorts before any catch-all the image ships).
pub const MANAGEMENT_NETWORK: &str = "etc/systemd/network/10-scs-edge-management.network";
/// systemd-networkd: provider uplinks up, without addresses (OVS owns them).
pub const PROVIDER_NETWORK: &str = "etc/systemd/network/11-scs-edge-provider.network";
/// systemd: arms the hardware watchdog.
pub const WATCHDOG_DROPIN: &str = "etc/systemd/system.conf.d/50-scs-edge-watchdog.conf";
/// Where serial getty wants-symlinks go.
pub const GETTY_WANTS: &str = "etc/systemd/system/getty.target.wants";
/// The provisioning stamp, written last.
pub const STAMP: &str = "var/lib/scs-edge/provisioned.json";
/// The serial console the image's kernel command line already gets a getty on.
pub const DEFAULT_SERIAL: &str = "ttyS0";

/// Rendering or writing the node's files failed.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The rendered agent configuration does not pass the agent's own validation (a bug, or a
    /// profile value the agent does not accept).
    #[error("the rendered {AGENT_TOML} is not a valid agent configuration: {0}")]
    AgentConfig(#[source] crate::config::ConfigError),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a rendered file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A regular file with this content and mode.
    File {
        /// The bytes.
        text: String,
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link to this target.
    Symlink(PathBuf),
}

/// One file of the node's layout, relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFile {
    /// Path relative to the root (`etc/scs-edge/agent.toml`).
    pub path: String,
    /// Content.
    pub content: Content,
}

/// Every file provisioning writes (the stamp aside), and a digest of them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The files, in write order.
    pub files: Vec<NodeFile>,
    /// SHA-256 over source, paths, modes and contents: equal digests mean equal inputs.
    pub digest: String,
}

/// `/var/lib/scs-edge/provisioned.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Site name.
    pub site: String,
    /// Hardware profile name.
    pub profile: String,
    /// Source id (`cmdline`, `fw_cfg`, `smbios`, `label`).
    pub source: String,
    /// When, RFC 3339 UTC.
    pub provisioned_at: String,
    /// [`Plan::digest`] of what was written.
    pub inputs_sha256: String,
    /// Every file written (relative to the root), so a later re-provisioning removes the ones it no
    /// longer renders.
    pub files: Vec<String>,
    /// The agent version that provisioned.
    pub agent_version: String,
}

const HEADER: &str = "# Written by `scs-edge-agent provision`; re-provisioning overwrites it.";

fn file(path: impl Into<String>, text: String, mode: u32) -> NodeFile {
    NodeFile {
        path: path.into(),
        content: Content::File { text, mode },
    }
}

/// Renders every file and validates the agent configuration by parsing it with [`AgentConfig`].
pub fn render(site: &SiteConfig, source: SourceKind, layout: &Layout) -> Result<Plan, LayoutError> {
    let origin = format!(
        "# Site {} from the {source}, hardware profile {}.",
        site.name, layout.profile
    );
    let mut files = vec![
        file(
            SITE_TOML,
            format!("{HEADER}\n{origin}\n{}", site.to_toml()),
            0o600,
        ),
        file(JOIN_TOKEN, format!("{}\n", site.join_token), 0o600),
        file(
            AGENT_TOML,
            format!("{HEADER}\n{origin}\n{}", render_agent_toml(site, layout)?),
            0o644,
        ),
        file(
            MANAGEMENT_NETWORK,
            format!("{HEADER}\n{origin}\n{}", render_management(site, layout)),
            0o644,
        ),
    ];
    if !layout.providers.is_empty() {
        files.push(file(
            PROVIDER_NETWORK,
            format!("{HEADER}\n{origin}\n{}", render_providers(layout)),
            0o644,
        ));
    }
    if let Some(watchdog) = &layout.watchdog {
        files.push(file(
            WATCHDOG_DROPIN,
            format!(
                "{HEADER}\n{origin}\n[Manager]\nWatchdogDevice={}\nRuntimeWatchdogSec={}s\n",
                watchdog.device, watchdog.timeout_secs
            ),
            0o644,
        ));
    }
    if let Some(console) = &layout.console
        && console.serial != DEFAULT_SERIAL
    {
        files.push(NodeFile {
            path: format!("{GETTY_WANTS}/serial-getty@{}.service", console.serial),
            content: Content::Symlink(PathBuf::from(
                "/usr/lib/systemd/system/serial-getty@.service",
            )),
        });
    }
    let mut hash = Sha256::new();
    hash.update(source.id());
    for f in &files {
        hash.update([0]);
        hash.update(&f.path);
        match &f.content {
            Content::File { text, mode } => {
                hash.update(format!("\0file\0{mode:o}\0"));
                hash.update(text);
            }
            Content::Symlink(target) => {
                hash.update("\0symlink\0");
                hash.update(target.as_os_str().as_encoded_bytes());
            }
        }
    }
    let digest = hash.finalize().iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    Ok(Plan { files, digest })
}

fn render_agent_toml(site: &SiteConfig, layout: &Layout) -> Result<String, LayoutError> {
    use toml::{Table, Value};
    let mut doc = Table::new();
    let mut tls_names = vec![Value::from(site.name.as_str())];
    if let Some(address) = site.management.address {
        tls_names.push(Value::from(address.addr().to_string()));
    }
    // Clients verify the certificate against the catalog's URL: behind a port forward or a NAT
    // (the lab's sites) its host is none of the node's own names.
    if let Some(host) = site
        .api_url
        .as_deref()
        .and_then(|url| reqwest::Url::parse(url).ok())
        .and_then(|url| {
            url.host_str()
                .map(|host| host.trim_matches(['[', ']']).to_owned())
        })
        && !tls_names
            .iter()
            .any(|name| name.as_str() == Some(host.as_str()))
    {
        tls_names.push(Value::from(host));
    }
    let mut api = Table::new();
    api.insert("tls_names".into(), Value::Array(tls_names));
    if let Some(url) = &site.api_url {
        api.insert("public_url".into(), Value::from(url.as_str()));
    }
    doc.insert("api".into(), api.into());
    if let Some(mb) = layout.host_memory_mb {
        let mut compute = Table::new();
        compute.insert(
            "reserved_host_memory_mb".into(),
            Value::Integer(i64::try_from(mb).unwrap_or(i64::MAX)),
        );
        doc.insert("compute".into(), compute.into());
    }
    let mut network = Table::new();
    network.insert("enabled".into(), Value::Boolean(true));
    network.insert("site_id".into(), Value::from(site.name.as_str()));
    let mut physnets = Table::new();
    for uplink in &layout.providers {
        let entry = physnets.entry(uplink.physnet.clone()).or_insert_with(|| {
            let mut t = Table::new();
            t.insert("bridge".into(), Value::from(uplink.bridge.as_str()));
            if let Some(mtu) = uplink.mtu {
                t.insert("mtu".into(), Value::Integer(i64::from(mtu)));
            }
            t.insert("uplinks".into(), Value::Array(Vec::new()));
            t.into()
        });
        if let Some(Value::Array(uplinks)) = entry.get_mut("uplinks") {
            uplinks.push(Value::from(uplink.nic.name.as_str()));
        }
    }
    if !physnets.is_empty() {
        network.insert("physical_networks".into(), physnets.into());
    }
    doc.insert("network".into(), network.into());
    let mut region = Table::new();
    region.insert("url".into(), Value::from(site.region_url.as_str()));
    region.insert("site".into(), Value::from(site.name.as_str()));
    region.insert(
        "ca_fingerprint".into(),
        Value::from(site.ca_fingerprint.as_str()),
    );
    region.insert(
        "join_token_file".into(),
        Value::from(format!("/{JOIN_TOKEN}")),
    );
    doc.insert("region".into(), region.into());
    let text = toml::to_string(&doc).unwrap_or_default();
    AgentConfig::parse(&text, Path::new("/etc/scs-edge/agent.toml"))
        .map_err(LayoutError::AgentConfig)?;
    let storage = match &layout.vm_storage {
        VmStorage::DataPartition => "the data partition (node.state_dir)".to_owned(),
        VmStorage::Disk(disk) => format!("disk {disk} (mount it at node.state_dir)"),
    };
    Ok(format!("# VM storage: {storage}.\n{text}"))
}

fn render_management(site: &SiteConfig, layout: &Layout) -> String {
    let nic = &layout.management;
    let mut lines = vec![
        format!("# Management interface {nic}."),
        "[Match]".to_owned(),
        format!("MACAddress={}", nic.mac),
    ];
    if let Some(mtu) = layout.management_mtu {
        lines.extend([String::new(), "[Link]".into(), format!("MTUBytes={mtu}")]);
    }
    lines.extend([String::new(), "[Network]".into()]);
    let m = &site.management;
    match m.address {
        None => lines.push("DHCP=yes".into()),
        Some(address) => {
            lines.push(format!("Address={address}"));
            lines.extend(m.gateway.map(|gateway| format!("Gateway={gateway}")));
        }
    }
    lines.extend(m.dns.iter().map(|dns| format!("DNS={dns}")));
    lines.push(String::new());
    lines.join("\n")
}

fn render_providers(layout: &Layout) -> String {
    let names: Vec<String> = layout.providers.iter().map(|p| p.nic.to_string()).collect();
    let macs: Vec<&str> = layout
        .providers
        .iter()
        .map(|p| p.nic.mac.as_str())
        .collect();
    let mut lines = vec![
        format!(
            "# Provider uplinks {}: up, no addresses of their own; the agent adds them to their OVS bridge.",
            names.join(", ")
        ),
        "[Match]".to_owned(),
        format!("MACAddress={}", macs.join(" ")),
        String::new(),
        "[Link]".into(),
    ];
    lines.extend(
        layout
            .providers
            .iter()
            .find_map(|p| p.mtu)
            .map(|mtu| format!("MTUBytes={mtu}")),
    );
    lines.extend(
        [
            "RequiredForOnline=no",
            "",
            "[Network]",
            "DHCP=no",
            "LinkLocalAddressing=no",
            "IPv6AcceptRA=no",
            "",
        ]
        .map(String::from),
    );
    lines.join("\n")
}

/// The stamp on disk, if there is a readable one.
pub fn read_stamp(root: &Path) -> Option<Stamp> {
    let text = std::fs::read_to_string(root.join(STAMP)).ok()?;
    serde_json::from_str(&text).ok()
}

fn is_current(path: &Path, content: &Content) -> bool {
    match content {
        Content::File { text, mode } => {
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                return false;
            };
            meta.is_file()
                && meta.permissions().mode() & 0o7777 == *mode
                && std::fs::read(path).is_ok_and(|bytes| bytes == text.as_bytes())
        }
        Content::Symlink(target) => std::fs::read_link(path).is_ok_and(|t| &t == target),
    }
}

/// Writes `plan` under `root`, then the stamp; files already as rendered are left untouched, and
/// files an earlier provisioning wrote that the plan no longer has are removed. Returns the paths
/// written.
pub fn apply(
    root: &Path,
    plan: &Plan,
    stamp: &Stamp,
    previous: Option<&Stamp>,
) -> Result<Vec<String>, LayoutError> {
    let mut written = Vec::new();
    for f in &plan.files {
        let path = root.join(&f.path);
        if is_current(&path, &f.content) {
            continue;
        }
        write_atomic(&path, &f.content).map_err(|source| LayoutError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(f.path.clone());
    }
    if let Some(previous) = previous {
        for stale in &previous.files {
            let ours = stale.starts_with("etc/scs-edge/") || stale.starts_with("etc/systemd/");
            if ours && !stale.contains("..") && !plan.files.iter().any(|f| &f.path == stale) {
                let _ = std::fs::remove_file(root.join(stale));
            }
        }
    }
    let mut json = serde_json::to_string_pretty(stamp).unwrap_or_default();
    json.push('\n');
    let path = root.join(STAMP);
    write_atomic(
        &path,
        &Content::File {
            text: json,
            mode: 0o644,
        },
    )
    .map_err(|source| LayoutError::Write { path, source })?;
    written.push(STAMP.to_owned());
    Ok(written)
}

fn write_atomic(path: &Path, content: &Content) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.provision-tmp"));
    match std::fs::remove_file(&tmp) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    match content {
        Content::File { text, mode } => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(*mode)
                .open(&tmp)?;
            // The umask may have cleared bits `mode` asks for.
            file.set_permissions(std::fs::Permissions::from_mode(*mode))?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        Content::Symlink(target) => std::os::unix::fs::symlink(target, &tmp)?,
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
