//! The agent's configuration: one TOML file, default `/etc/scs-edge/agent.toml`.
//!
//! Every key is optional and documented here with its default; `agent.example.toml` in the repository is
//! the same list as a file. Anything wrong — an unknown key, a wrong type, a value out of range — stops
//! the agent at start with an error naming the key, because a half-understood configuration on a remote
//! site is worse than one that refuses to start.

use crate::system::logging::LogFormat;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the agent looks when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/scs-edge/agent.toml";

/// A configuration that could not be used; names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has the wrong type.
    #[error("invalid config file {path}: key `{key}`: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The dotted key path, e.g. `reconcile.workers`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value parsed but is not acceptable.
    #[error("invalid config file {path}: key `{key}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key path.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `[node]`: who this node is and where it keeps its state.
    pub node: NodeConfig,
    /// `[api]`: the HTTPS listener.
    pub api: ApiConfig,
    /// `[compute]`: libvirt and the servers on it.
    pub compute: ComputeConfig,
    /// `[reconcile]`: the reconcile loops.
    pub reconcile: ReconcileConfig,
    /// `[network]`: OVN and the local switch.
    pub network: NetworkConfig,
    /// `[log]`: log output.
    pub log: LogConfig,
    /// `[identity]`: the Keystone-compatible identity service.
    pub identity: IdentityConfig,
    /// `[region]`: the link to the central region service.
    pub region: RegionConfig,
    /// `[update]`: signed OS updates of this node.
    pub update: UpdateConfig,
}

/// `[update]`
/// How this node takes new OS versions (decision 0013): when it may reboot into one and how long
/// a new version has to prove itself healthy before it is rolled back.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// `update.maintenance_window` — when the node may reboot into an installed release, in UTC:
    /// `"02:00-04:00"` (daily) or `"sat,sun 22:00-02:00"`. Default: none, meaning at once. An
    /// import with `--reboot now` ignores it. In a region whose desired state names a window,
    /// that one applies instead (this one stays in force when the region's cannot be read).
    pub maintenance_window: Option<crate::update::window::MaintenanceWindow>,
    /// `update.gate_window_secs` — from boot, how long a new version has to become healthy (agent
    /// READY, libvirt, OVN, its servers ACTIVE again) before it is rolled back (60-86400). Default
    /// 600.
    pub gate_window_secs: u64,
    /// `update.stick_poll_secs` — how often the agent looks for an `SCSEDGE-UPDATE` stick (1-3600).
    /// Default 5.
    pub stick_poll_secs: u64,
    /// `update.root_of_trust` — the TUF root the image was built with. Default
    /// `/usr/share/scs-edge/update/root.json`.
    pub root_of_trust: PathBuf,
    /// `update.repository_url` — a release repository online (`<url>/metadata/`,
    /// `<url>/targets/`, as `scs-edge-release` publishes it), `http://` or `https://`. The agent
    /// checks it every `check_interval_secs` and stages a new release it may take. Not with
    /// `region.url`: a site of a region takes the release its desired state names, from the
    /// region's repository. Default: none.
    pub repository_url: Option<String>,
    /// `update.repository_ca_file` — PEM certificates trusted for the repository's TLS besides the
    /// system's roots. Default: none.
    pub repository_ca_file: Option<PathBuf>,
    /// `update.check_interval_secs` — how often the agent checks `repository_url`, or, in a
    /// region, tries again to fetch the offered release after the region could not be reached
    /// (60-86400). Default 3600.
    pub check_interval_secs: u64,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            maintenance_window: None,
            gate_window_secs: 600,
            stick_poll_secs: 5,
            root_of_trust: PathBuf::from("/usr/share/scs-edge/update/root.json"),
            repository_url: None,
            repository_ca_file: None,
            check_interval_secs: 3600,
        }
    }
}

/// `[node]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// `node.id` — stable identity of this node; tags every libvirt domain the agent owns.
    /// Default: empty, meaning a UUID generated on first start and kept in the store.
    pub id: String,
    /// `node.state_dir` — the one directory holding the store, images, disks, config drives and
    /// consoles. Default `/var/lib/scs-edge`.
    pub state_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            state_dir: PathBuf::from("/var/lib/scs-edge"),
        }
    }
}

/// `[api]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// `api.listen` — address of the HTTPS listener. Default `[::]:443`.
    pub listen: SocketAddr,
    /// `api.tls_cert` — PEM certificate chain. Default: empty, meaning a self-signed certificate made on
    /// first start and kept under `<state_dir>/tls/`.
    pub tls_cert: Option<PathBuf>,
    /// `api.tls_key` — PEM private key for `api.tls_cert`; required when `tls_cert` is set.
    pub tls_key: Option<PathBuf>,
    /// `api.tls_names` — extra DNS names or IP addresses for the self-signed certificate.
    /// Default: none (the host name, `localhost` and loopback addresses are always included).
    pub tls_names: Vec<String>,
    /// `api.public_url` — the base URL clients reach this listener at; the service catalog and the
    /// version documents point there. Default: empty, meaning `https://<host name>:<port>`.
    pub public_url: Option<String>,
    /// `api.max_image_upload_bytes` — largest image a client may upload. Default 64 GiB.
    pub max_image_upload_bytes: u64,
}

impl ApiConfig {
    /// The base URL for catalogs and version documents, without a trailing slash.
    pub fn public_base(&self) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let host = if self.listen.ip().is_unspecified() {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_owned())
        } else if self.listen.is_ipv6() {
            format!("[{}]", self.listen.ip())
        } else {
            self.listen.ip().to_string()
        };
        format!("https://{host}:{}", self.listen.port())
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 0], 443)),
            tls_cert: None,
            tls_key: None,
            tls_names: Vec::new(),
            public_url: None,
            max_image_upload_bytes: 64 << 30,
        }
    }
}

/// Which accelerator libvirt domains use.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum VirtTypeSetting {
    /// Probe `/dev/kvm` by running a few guest instructions; use KVM only if that works.
    #[default]
    Auto,
    /// Always KVM.
    Kvm,
    /// Always TCG (software emulation).
    Qemu,
}

/// `[compute]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ComputeConfig {
    /// `compute.libvirt_uri` — libvirt connection URI. Default `qemu:///system`.
    pub libvirt_uri: String,
    /// `compute.virt_type` — `auto`, `kvm` or `qemu`. Default `auto`.
    pub virt_type: VirtTypeSetting,
    /// `compute.machine_type` — QEMU machine type. Default `q35`.
    pub machine_type: String,
    /// `compute.shutdown_timeout_secs` — how long a graceful stop or soft reboot waits for the guest
    /// before the domain is powered off hard. Default 60.
    pub shutdown_timeout_secs: u64,
    /// `compute.cpu_allocation_ratio` — vCPUs per host CPU the node accepts. Default 4.0.
    pub cpu_allocation_ratio: f64,
    /// `compute.ram_allocation_ratio` — guest RAM per host RAM the node accepts. Default 1.0
    /// (no memory overcommit: an edge node has no one to page to).
    pub ram_allocation_ratio: f64,
    /// `compute.reserved_host_memory_mb` — RAM kept for the host itself. Default 1024.
    pub reserved_host_memory_mb: u64,
    /// `compute.availability_zone` — the one availability zone this site reports. Default `nova`
    /// (what clients and the SCS tests assume when they name none).
    pub availability_zone: String,
    /// `compute.seed_scs_flavors` — create the 15 SCS mandatory flavors (scs-0103) at start when they
    /// are missing. Default true.
    pub seed_scs_flavors: bool,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        Self {
            libvirt_uri: "qemu:///system".into(),
            virt_type: VirtTypeSetting::Auto,
            machine_type: "q35".into(),
            shutdown_timeout_secs: 60,
            cpu_allocation_ratio: 4.0,
            ram_allocation_ratio: 1.0,
            reserved_host_memory_mb: 1024,
            availability_zone: "nova".into(),
            seed_scs_flavors: true,
        }
    }
}

/// `[reconcile]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// `reconcile.workers` — items reconciled in parallel (1–64). Default 4.
    pub workers: usize,
    /// `reconcile.resync_interval_secs` — every key of every kind is reconciled this often, to repair
    /// drift nobody reported. Default 60.
    pub resync_interval_secs: u64,
    /// `reconcile.observe_interval_ms` — how often each kind cheaply compares actual state (e.g. libvirt
    /// domain states) with what the store last recorded. Default 2000.
    pub observe_interval_ms: u64,
    /// `reconcile.change_poll_interval_ms` — how often the store is checked for desired state written by
    /// another process (the admin CLI). Default 250.
    pub change_poll_interval_ms: u64,
    /// `reconcile.backoff_initial_ms` — first retry delay after a failed reconcile; doubles per failure.
    /// Default 500.
    pub backoff_initial_ms: u64,
    /// `reconcile.backoff_max_secs` — cap on the retry delay. Default 60.
    pub backoff_max_secs: u64,
    /// `reconcile.stall_timeout_secs` — a worker busy with one item for longer than this marks the agent
    /// unhealthy and stops watchdog pings. Default 300.
    pub stall_timeout_secs: u64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            resync_interval_secs: 60,
            observe_interval_ms: 2000,
            change_poll_interval_ms: 250,
            backoff_initial_ms: 500,
            backoff_max_secs: 60,
            stall_timeout_secs: 300,
        }
    }
}

/// `[network.physical_networks.<name>]`: one physical network this site reaches.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PhysicalNetworkConfig {
    /// OVS bridge the physical network leaves through (the agent creates it).
    pub bridge: String,
    /// MTU of the physical network. Default 1500.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Host interfaces the agent adds to the bridge. Default none.
    #[serde(default)]
    pub uplinks: Vec<String>,
}

fn default_mtu() -> u32 {
    1500
}

/// `[network]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// `network.enabled` — program OVN and the local switch. Default false (servers get plain taps).
    pub enabled: bool,
    /// `network.northbound` — OVN northbound remotes, comma-separated (`unix:…`, `tcp:host:port`).
    /// Default `unix:/var/run/ovn/ovnnb_db.sock`.
    pub northbound: String,
    /// `network.northbound_leader_only` — talk only to the RAFT leader of a clustered northbound
    /// database (three-node sites). Default false.
    pub northbound_leader_only: bool,
    /// `network.southbound` — what `ovn-controller` connects to (`ovn-remote`).
    /// Default `unix:/var/run/ovn/ovnsb_db.sock`.
    pub southbound: String,
    /// `network.ovs_database` — the local Open_vSwitch database. Default `unix:/var/run/openvswitch/db.sock`.
    pub ovs_database: String,
    /// `network.site_id` — owner tag on every OVN row the agent writes. Default: the node id.
    pub site_id: String,
    /// `network.chassis` — this node's OVN chassis name (`system-id`). Default: the node id.
    pub chassis: String,
    /// `network.encap_type` — tunnel type between nodes. Default `geneve`.
    pub encap_type: String,
    /// `network.encap_ip` — this node's tunnel address. Default `127.0.0.1` (single-node site).
    pub encap_ip: String,
    /// `network.datapath_type` — `system` (kernel module) or `netdev` (userspace). Default `system`.
    pub datapath_type: String,
    /// `network.integration_bridge` — the bridge VIFs plug into. Default `br-int`.
    pub integration_bridge: String,
    /// `network.overlay_mtu` — MTU of tenant (Geneve) networks. Default 1442 (1500 minus overhead).
    pub overlay_mtu: u32,
    /// `network.gateway` — router gateways may be placed on this node. Default true.
    pub gateway: bool,
    /// `network.physical_networks` — physical network name → bridge, MTU, uplinks.
    /// Default: none (tenant networks only).
    pub physical_networks: std::collections::BTreeMap<String, PhysicalNetworkConfig>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            northbound: "unix:/var/run/ovn/ovnnb_db.sock".into(),
            northbound_leader_only: false,
            southbound: "unix:/var/run/ovn/ovnsb_db.sock".into(),
            ovs_database: "unix:/var/run/openvswitch/db.sock".into(),
            site_id: String::new(),
            chassis: String::new(),
            encap_type: "geneve".into(),
            encap_ip: "127.0.0.1".into(),
            datapath_type: "system".into(),
            integration_bridge: "br-int".into(),
            overlay_mtu: 1442,
            gateway: true,
            physical_networks: std::collections::BTreeMap::new(),
        }
    }
}

/// `[identity]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// `identity.region_id` — the region this node's service catalog names. Default `RegionOne`
    /// (Keystone's default, which every OpenStack client assumes when none is configured).
    pub region_id: String,
    /// `identity.token_ttl_secs` — lifetime of a new token (60–86400). Default 3600, as Keystone.
    pub token_ttl_secs: u64,
    /// `identity.argon2_memory_kib` — memory per password hash, KiB. Default 65536 (64 MiB, RFC 9106).
    /// Floor 19456, and memory × iterations at least 327680 (as costly as Keystone's bcrypt cost 12;
    /// docs/decisions/0008-password-hashing.md).
    pub argon2_memory_kib: u32,
    /// `identity.argon2_iterations` — passes over that memory. Default 6. Floor 2 (and see above).
    pub argon2_iterations: u32,
    /// `identity.argon2_parallelism` — lanes (1–64). Default 1. Existing hashes keep the cost they
    /// were made with; changed values apply to new passwords only.
    pub argon2_parallelism: u32,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        let argon2 = crate::identity::password::Argon2Params::DEFAULT;
        Self {
            region_id: "RegionOne".into(),
            token_ttl_secs: 3600,
            argon2_memory_kib: argon2.memory_kib,
            argon2_iterations: argon2.iterations,
            argon2_parallelism: argon2.parallelism,
        }
    }
}

impl IdentityConfig {
    /// The hashing cost these keys describe.
    pub fn argon2(&self) -> crate::identity::password::Argon2Params {
        crate::identity::password::Argon2Params {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        }
    }
}

/// Where provisioning puts the one-time join token, and where the agent reads it by default.
pub const DEFAULT_JOIN_TOKEN_FILE: &str = "/etc/scs-edge/join-token";

/// `[region]`: the link to the central region service (`agent/src/federation/`).
///
/// A site runs fully on its own; the link only reports its health and inventory and fetches desired
/// state. With `url` empty there is no link at all (a standalone site).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RegionConfig {
    /// `region.url` — base URL of the region service, `https://host:port`. Default: empty, meaning a
    /// standalone site without a region link.
    pub url: String,
    /// `region.site` — the site this node joins as (a DNS label); required when `url` is set. It is
    /// named in the node certificate, so it cannot change after joining. It is also the name an
    /// update freshness waiver must carry, so a standalone site that needs one sets it too.
    pub site: String,
    /// `region.ca_fingerprint` — pin of the region CA certificate, `sha256:` and 64 hex digits (colons
    /// allowed, normalised to lower case); required when `url` is set. The node trusts nothing the
    /// region sends before that CA matches the pin, so the join token never goes to an impostor.
    pub ca_fingerprint: String,
    /// `region.join_token_file` — the one-time join token (mode 0600), read on the first join and
    /// deleted after it succeeded. Default `/etc/scs-edge/join-token`.
    pub join_token_file: PathBuf,
    /// `region.heartbeat_interval_secs` — a report is taken this often (1-3600). Default 10.
    pub heartbeat_interval_secs: u64,
    /// `region.jitter_percent` — heartbeats vary uniformly by up to this share of the interval (0-50), so
    /// a fleet that restarted together does not report in lockstep. Default 20.
    pub jitter_percent: u32,
    /// `region.backoff_max_secs` — cap of the retry delay after failed exchanges (1-86400); also the delay
    /// after refusals that need an operator (bad join token, CA pin mismatch). Default 300.
    pub backoff_max_secs: u64,
    /// `region.max_queued_reports` — reports kept while the region is unreachable (1-10000000). When
    /// full, the OLDEST report is dropped (and counted, and logged): after a long outage the region
    /// learns the site's recent state rather than a stale history, and the node's disk stays bounded
    /// (about 1 KiB per report). Default 50000 (almost six days at the default interval).
    pub max_queued_reports: u64,
}

impl Default for RegionConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            site: String::new(),
            ca_fingerprint: String::new(),
            join_token_file: PathBuf::from(DEFAULT_JOIN_TOKEN_FILE),
            heartbeat_interval_secs: 10,
            jitter_percent: 20,
            backoff_max_secs: 300,
            max_queued_reports: 50_000,
        }
    }
}

impl RegionConfig {
    /// Whether the site has a region link at all.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// The heartbeat interval as a `Duration`.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_secs)
    }

    /// The retry cap as a `Duration`.
    pub fn backoff_max(&self) -> Duration {
        Duration::from_secs(self.backoff_max_secs)
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `log.filter` — `EnvFilter` directives; `RUST_LOG` overrides. Default `info`.
    pub filter: String,
    /// `log.format` — `text` or `json` on stderr (the journal always gets structured fields).
    /// Default `text`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl AgentConfig {
    /// Loads and validates `path`. A missing file is an error only when the path was given explicitly:
    /// a node with no `/etc/scs-edge/agent.toml` runs on defaults.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse(&text, path)
    }

    /// Parses and validates TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::parse(text).map_err(|err| ConfigError::Parse {
            path: path.to_owned(),
            key: String::from("(document)"),
            reason: err.message().to_owned(),
        })?;
        let mut config: Self = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            ConfigError::Parse {
                path: path.to_owned(),
                key,
                reason: err.into_inner().message().to_owned(),
            }
        })?;
        config.validate(path)?;
        config.validate_region(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        if !self.node.state_dir.is_absolute() {
            return Err(invalid(
                "node.state_dir",
                format!(
                    "must be an absolute path, got {}",
                    self.node.state_dir.display()
                ),
            ));
        }
        if !self.node.id.is_empty() && !valid_node_id(&self.node.id) {
            return Err(invalid(
                "node.id",
                format!(
                    "must be 1-64 characters of [A-Za-z0-9._-], got {:?}",
                    self.node.id
                ),
            ));
        }
        if self.compute.availability_zone.is_empty()
            || self.compute.availability_zone.len() > 255
            || self.compute.availability_zone.contains(':')
        {
            return Err(invalid(
                "compute.availability_zone",
                "must be 1-255 characters without ':'".into(),
            ));
        }
        if let Some(url) = &self.api.public_url {
            let ok = url.starts_with("https://") || url.starts_with("http://");
            if !ok || url.contains(char::is_whitespace) {
                return Err(invalid(
                    "api.public_url",
                    format!("must be an http(s) URL, got {url:?}"),
                ));
            }
        }
        match (&self.api.tls_cert, &self.api.tls_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "api.tls_key",
                    "required when api.tls_cert is set".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "api.tls_cert",
                    "required when api.tls_key is set".into(),
                ));
            }
            _ => {}
        }
        if self.compute.libvirt_uri.trim().is_empty() {
            return Err(invalid("compute.libvirt_uri", "must not be empty".into()));
        }
        if self.compute.machine_type.trim().is_empty() {
            return Err(invalid("compute.machine_type", "must not be empty".into()));
        }
        if !(self.compute.cpu_allocation_ratio > 0.0 && self.compute.cpu_allocation_ratio <= 64.0) {
            return Err(invalid(
                "compute.cpu_allocation_ratio",
                format!(
                    "must be in (0, 64], got {}",
                    self.compute.cpu_allocation_ratio
                ),
            ));
        }
        if !(self.compute.ram_allocation_ratio > 0.0 && self.compute.ram_allocation_ratio <= 4.0) {
            return Err(invalid(
                "compute.ram_allocation_ratio",
                format!(
                    "must be in (0, 4], got {}",
                    self.compute.ram_allocation_ratio
                ),
            ));
        }
        if !(1..=64).contains(&self.reconcile.workers) {
            return Err(invalid(
                "reconcile.workers",
                format!("must be between 1 and 64, got {}", self.reconcile.workers),
            ));
        }
        if self.reconcile.resync_interval_secs == 0 {
            return Err(invalid(
                "reconcile.resync_interval_secs",
                "must be at least 1".into(),
            ));
        }
        if self.reconcile.observe_interval_ms < 50 {
            return Err(invalid(
                "reconcile.observe_interval_ms",
                "must be at least 50".into(),
            ));
        }
        if self.reconcile.change_poll_interval_ms < 10 {
            return Err(invalid(
                "reconcile.change_poll_interval_ms",
                "must be at least 10".into(),
            ));
        }
        if self.reconcile.backoff_initial_ms == 0 {
            return Err(invalid(
                "reconcile.backoff_initial_ms",
                "must be at least 1".into(),
            ));
        }
        if self.reconcile.backoff_max_secs.saturating_mul(1000) < self.reconcile.backoff_initial_ms
        {
            return Err(invalid(
                "reconcile.backoff_max_secs",
                "must not be below reconcile.backoff_initial_ms".into(),
            ));
        }
        if self.reconcile.stall_timeout_secs == 0 {
            return Err(invalid(
                "reconcile.stall_timeout_secs",
                "must be at least 1".into(),
            ));
        }
        self.validate_network(path)?;
        self.validate_identity(path)?;
        if !(60..=86_400).contains(&self.update.gate_window_secs) {
            return Err(invalid(
                "update.gate_window_secs",
                "must be between 60 and 86400".into(),
            ));
        }
        if !(1..=3_600).contains(&self.update.stick_poll_secs) {
            return Err(invalid(
                "update.stick_poll_secs",
                "must be between 1 and 3600".into(),
            ));
        }
        if let Some(url) = &self.update.repository_url {
            check_repository_url(url).map_err(|reason| invalid("update.repository_url", reason))?;
            if !self.region.url.is_empty() {
                return Err(invalid(
                    "update.repository_url",
                    "a site of a region takes its releases from the region (region.url); set one or the other".into(),
                ));
            }
        }
        if !(60..=86_400).contains(&self.update.check_interval_secs) {
            return Err(invalid(
                "update.check_interval_secs",
                "must be between 60 and 86400".into(),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.filter).is_err() {
            return Err(invalid(
                "log.filter",
                format!("not a valid filter directive: {:?}", self.log.filter),
            ));
        }
        Ok(())
    }

    fn validate_network(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        let n = &self.network;
        for (key, remotes) in [
            ("network.northbound", &n.northbound),
            ("network.southbound", &n.southbound),
            ("network.ovs_database", &n.ovs_database),
        ] {
            if let Err(err) = ovsdb::Remote::parse_list(remotes) {
                return Err(invalid(key, format!("not an OVSDB remote list: {err}")));
            }
        }
        for (key, id) in [
            ("network.site_id", &n.site_id),
            ("network.chassis", &n.chassis),
        ] {
            if !id.is_empty() && !valid_node_id(id) {
                return Err(invalid(
                    key,
                    format!("must be 1-64 characters of [A-Za-z0-9._-], got {id:?}"),
                ));
            }
        }
        if !["geneve", "vxlan"].contains(&n.encap_type.as_str()) {
            return Err(invalid(
                "network.encap_type",
                format!("must be geneve or vxlan, got {:?}", n.encap_type),
            ));
        }
        if n.encap_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "network.encap_ip",
                format!("not an IP address: {:?}", n.encap_ip),
            ));
        }
        if !["system", "netdev"].contains(&n.datapath_type.as_str()) {
            return Err(invalid(
                "network.datapath_type",
                format!("must be system or netdev, got {:?}", n.datapath_type),
            ));
        }
        if n.integration_bridge.is_empty() || n.integration_bridge.len() > 15 {
            return Err(invalid(
                "network.integration_bridge",
                "must be a Linux interface name (1-15 characters)".into(),
            ));
        }
        if !(576..=9000).contains(&n.overlay_mtu) {
            return Err(invalid(
                "network.overlay_mtu",
                format!("must be 576-9000, got {}", n.overlay_mtu),
            ));
        }
        for (name, physnet) in &n.physical_networks {
            if name.is_empty() || name.contains([':', ',']) {
                return Err(invalid(
                    "network.physical_networks",
                    format!("name {name:?} must not be empty or contain ':' or ','"),
                ));
            }
            if physnet.bridge.is_empty()
                || physnet.bridge.len() > 15
                || physnet.bridge == n.integration_bridge
            {
                return Err(invalid(
                    "network.physical_networks",
                    format!(
                        "{name}: bridge must be a 1-15 character name other than the integration bridge"
                    ),
                ));
            }
            if !(576..=9216).contains(&physnet.mtu) {
                return Err(invalid(
                    "network.physical_networks",
                    format!("{name}: mtu must be 576-9216, got {}", physnet.mtu),
                ));
            }
        }
        Ok(())
    }

    fn validate_identity(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        let identity = &self.identity;
        if identity.region_id.is_empty()
            || identity.region_id.len() > 255
            || identity.region_id.trim() != identity.region_id
        {
            return Err(invalid(
                "identity.region_id",
                format!(
                    "must be 1-255 characters without surrounding whitespace, got {:?}",
                    identity.region_id
                ),
            ));
        }
        if !(60..=86_400).contains(&identity.token_ttl_secs) {
            return Err(invalid(
                "identity.token_ttl_secs",
                format!("must be 60-86400, got {}", identity.token_ttl_secs),
            ));
        }
        if let Some((key, reason)) = identity.argon2().below_floor() {
            return Err(invalid(key, reason));
        }
        Ok(())
    }

    /// Validates `[region]` and normalises the CA pin (the only key rewritten on load, so the link
    /// compares fingerprints in one spelling).
    fn validate_region(&mut self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        let region = &mut self.region;
        if !(1..=3600).contains(&region.heartbeat_interval_secs) {
            return Err(invalid(
                "region.heartbeat_interval_secs",
                format!("must be 1-3600, got {}", region.heartbeat_interval_secs),
            ));
        }
        if region.jitter_percent > 50 {
            return Err(invalid(
                "region.jitter_percent",
                format!("must be 0-50, got {}", region.jitter_percent),
            ));
        }
        if !(1..=86_400).contains(&region.backoff_max_secs) {
            return Err(invalid(
                "region.backoff_max_secs",
                format!("must be 1-86400, got {}", region.backoff_max_secs),
            ));
        }
        if !(1..=10_000_000).contains(&region.max_queued_reports) {
            return Err(invalid(
                "region.max_queued_reports",
                format!("must be 1-10000000, got {}", region.max_queued_reports),
            ));
        }
        if !region.join_token_file.is_absolute() {
            return Err(invalid(
                "region.join_token_file",
                format!(
                    "must be an absolute path, got {}",
                    region.join_token_file.display()
                ),
            ));
        }
        if !region.ca_fingerprint.is_empty() {
            region.ca_fingerprint = normalise_fingerprint(&region.ca_fingerprint)
                .map_err(|reason| invalid("region.ca_fingerprint", reason))?;
        }
        if !region.site.is_empty() && !is_dns_label(&region.site) {
            return Err(invalid(
                "region.site",
                format!(
                    "must be a DNS label: 1-63 characters of [a-z0-9-], not starting or ending with '-'; got {:?}",
                    region.site
                ),
            ));
        }
        if !region.enabled() {
            return Ok(());
        }
        check_https_url(&region.url).map_err(|reason| invalid("region.url", reason))?;
        if region.site.is_empty() {
            return Err(invalid(
                "region.site",
                "required when region.url is set".into(),
            ));
        }
        if region.ca_fingerprint.is_empty() {
            return Err(invalid(
                "region.ca_fingerprint",
                "required when region.url is set (the node must know which region CA to trust)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Path of the SQLite store inside the state directory.
    pub fn store_path(&self) -> PathBuf {
        self.node.state_dir.join("agent.db")
    }
}

impl ReconcileConfig {
    /// The resync interval as a `Duration`.
    pub fn resync_interval(&self) -> Duration {
        Duration::from_secs(self.resync_interval_secs)
    }
}

/// Node ids end up in libvirt metadata and file names: keep them to a safe alphabet.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// RFC 1123 label, lower case only: a site name becomes a host name, an OVN owner tag, a TLS name and
/// the subject of the node certificate.
pub fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Checks an `https://` base URL (the region and the API's public URL are only ever reached over TLS);
/// the reason names what is wrong.
pub fn check_https_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(format!(
            "must be an https:// URL (the node talks to it only over TLS), got {url:?}"
        ));
    };
    if url.len() > 2048 || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be at most 2048 printable ASCII characters without spaces".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("has no host name: {url:?}"));
    }
    if authority.contains('@') {
        return Err("must not carry credentials (user@host)".into());
    }
    Ok(())
}

/// Checks a release repository's base URL: `http://` or `https://` (TUF signs what it serves, so
/// TLS is not what makes it trusted) with a host and no credentials; the reason names what is wrong.
pub fn check_repository_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("must be an http:// or https:// URL, got {url:?}"))?;
    // The same rules as any base URL the node reaches, whatever the scheme.
    check_https_url(&format!("https://{rest}"))?;
    reqwest::Url::parse(url)
        .map(drop)
        .map_err(|err| format!("not a URL ({err}): {url:?}"))
}

/// Normalises a CA pin to `sha256:` + 64 lower-case hex digits; colons between digits are allowed
/// (as `openssl x509 -fingerprint` prints them), so an operator can paste either form.
pub fn normalise_fingerprint(text: &str) -> Result<String, String> {
    let Some(hex) = text.strip_prefix("sha256:") else {
        return Err(format!(
            "must start with `sha256:` followed by 64 hex digits, got {text:?}"
        ));
    };
    let digits: String = hex.chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "must be `sha256:` followed by 64 hex digits (colons allowed), got {} hex digits in {text:?}",
            digits.bytes().filter(u8::is_ascii_hexdigit).count()
        ));
    }
    Ok(format!("sha256:{}", digits.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(text, Path::new("/etc/scs-edge/agent.toml"))
    }

    #[test]
    fn empty_file_yields_documented_defaults() {
        let config = parse("").expect("defaults");
        assert_eq!(config, AgentConfig::default());
        assert_eq!(config.node.state_dir, PathBuf::from("/var/lib/scs-edge"));
        assert_eq!(config.compute.libvirt_uri, "qemu:///system");
        assert_eq!(config.reconcile.workers, 4);
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = parse("[reconcile]\nworkerz = 3\n").expect_err("unknown key");
        let text = err.to_string();
        assert!(
            text.contains("reconcile.workerz") || text.contains("workerz"),
            "{text}"
        );
        assert!(matches!(err, ConfigError::Parse { .. }));
    }

    #[test]
    fn wrong_type_names_the_dotted_key() {
        let err = parse("[reconcile]\nworkers = \"many\"\n").expect_err("wrong type");
        match err {
            ConfigError::Parse { key, reason, .. } => {
                assert_eq!(key, "reconcile.workers");
                assert!(reason.contains("invalid type"), "{reason}");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn out_of_range_value_names_key_and_reason() {
        let err = parse("[reconcile]\nworkers = 0\n").expect_err("range");
        assert_eq!(
            err.to_string(),
            "invalid config file /etc/scs-edge/agent.toml: key `reconcile.workers`: must be between 1 and 64, got 0"
        );
    }

    #[test]
    fn tls_cert_without_key_is_rejected() {
        let err = parse("[api]\ntls_cert = \"/etc/x.pem\"\n").expect_err("pair");
        assert!(err.to_string().contains("api.tls_key"), "{err}");
    }

    #[test]
    fn relative_state_dir_is_rejected() {
        let err = parse("[node]\nstate_dir = \"var/lib\"\n").expect_err("relative");
        assert!(err.to_string().contains("node.state_dir"), "{err}");
    }

    #[test]
    fn bad_enum_value_lists_the_key() {
        let err = parse("[compute]\nvirt_type = \"xen\"\n").expect_err("enum");
        match err {
            ConfigError::Parse { key, .. } => assert_eq!(key, "compute.virt_type"),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn identity_defaults_and_floor() {
        let config = parse("").expect("defaults");
        assert_eq!(config.identity.region_id, "RegionOne");
        assert_eq!(config.identity.token_ttl_secs, 3600);
        assert_eq!(
            config.identity.argon2(),
            crate::identity::password::Argon2Params::DEFAULT
        );
        let err = parse("[identity]\nargon2_memory_kib = 1024\n").expect_err("below floor");
        assert!(
            err.to_string().contains("key `identity.argon2_memory_kib`"),
            "{err}"
        );
        let err = parse("[identity]\nargon2_iterations = 1\n").expect_err("below floor");
        assert!(
            err.to_string().contains("identity.argon2_iterations"),
            "{err}"
        );
        let err = parse("[identity]\nargon2_memory_kib = 19456\nargon2_iterations = 2\n")
            .expect_err("too cheap overall");
        assert!(
            err.to_string().contains("identity.argon2_iterations"),
            "{err}"
        );
        let err = parse("[identity]\ntoken_ttl_secs = 0\n").expect_err("ttl");
        assert!(err.to_string().contains("identity.token_ttl_secs"), "{err}");
        let err = parse("[identity]\nregion_id = \"\"\n").expect_err("region");
        assert!(err.to_string().contains("identity.region_id"), "{err}");
        let stronger = parse("[identity]\nargon2_memory_kib = 131072\nargon2_iterations = 3\n")
            .expect("stronger is fine");
        assert_eq!(stronger.identity.argon2_memory_kib, 131_072);
    }

    const PIN: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn region_defaults_mean_a_standalone_site() {
        let config = parse("").expect("defaults");
        assert!(!config.region.enabled());
        assert_eq!(
            config.region.join_token_file,
            PathBuf::from("/etc/scs-edge/join-token")
        );
        assert_eq!(config.region.heartbeat_interval(), Duration::from_secs(10));
        assert_eq!(config.region.jitter_percent, 20);
        assert_eq!(config.region.backoff_max(), Duration::from_mins(5));
        assert_eq!(config.region.max_queued_reports, 50_000);
    }

    #[test]
    fn region_link_is_parsed_and_its_pin_normalised() {
        let text = format!(
            "[region]\nurl = \"https://region.example.com:8443\"\nsite = \"factory-7\"\nca_fingerprint = \"sha256:{}\"\n",
            PIN.trim_start_matches("sha256:")
                .to_ascii_uppercase()
                .as_bytes()
                .chunks(2)
                .map(|pair| String::from_utf8_lossy(pair).into_owned())
                .collect::<Vec<_>>()
                .join(":")
        );
        let config = parse(&text).expect("valid region");
        assert!(config.region.enabled());
        assert_eq!(config.region.url, "https://region.example.com:8443");
        assert_eq!(config.region.site, "factory-7");
        assert_eq!(config.region.ca_fingerprint, PIN);
    }

    #[test]
    fn region_link_needs_https_a_site_and_a_pin() {
        let base = |url: &str, site: &str, pin: &str| {
            format!("[region]\nurl = \"{url}\"\nsite = \"{site}\"\nca_fingerprint = \"{pin}\"\n")
        };
        for (text, key, words) in [
            (
                base("http://region.example.com", "f-1", PIN),
                "region.url",
                "https://",
            ),
            (base("https://", "f-1", PIN), "region.url", "host"),
            (
                base("https://region.example.com", "", PIN),
                "region.site",
                "required",
            ),
            (
                base("https://region.example.com", "Factory_1", PIN),
                "region.site",
                "DNS label",
            ),
            (
                base("https://region.example.com", "f-1", ""),
                "region.ca_fingerprint",
                "required",
            ),
            (
                base("https://region.example.com", "f-1", "sha256:abcd"),
                "region.ca_fingerprint",
                "64 hex digits",
            ),
            (
                base("https://region.example.com", "f-1", "md5:00"),
                "region.ca_fingerprint",
                "sha256:",
            ),
        ] {
            let err = parse(&text).expect_err(key).to_string();
            assert!(err.contains(&format!("key `{key}`")), "{key}: {err}");
            assert!(err.contains(words), "{key}: {err}");
        }
    }

    #[test]
    fn an_update_repository_is_an_http_or_https_url_checked_at_a_sane_interval() {
        let config = parse(
            "[update]\nrepository_url = \"http://mirror.factory-7.example/scs-edge\"\n\
             repository_ca_file = \"/etc/scs-edge/mirror-ca.pem\"\ncheck_interval_secs = 600\n",
        )
        .expect("valid repository");
        assert_eq!(
            config.update.repository_url.as_deref(),
            Some("http://mirror.factory-7.example/scs-edge")
        );
        assert_eq!(config.update.check_interval_secs, 600);
        for (text, key, words) in [
            (
                "repository_url = \"ftp://mirror.example\"",
                "update.repository_url",
                "http:// or https://",
            ),
            (
                "repository_url = \"https://\"",
                "update.repository_url",
                "host",
            ),
            (
                "repository_url = \"https://user@mirror.example/\"",
                "update.repository_url",
                "credentials",
            ),
            (
                "check_interval_secs = 59",
                "update.check_interval_secs",
                "60",
            ),
            (
                "check_interval_secs = 86401",
                "update.check_interval_secs",
                "86400",
            ),
        ] {
            let err = parse(&format!("[update]\n{text}\n"))
                .expect_err(text)
                .to_string();
            assert!(err.contains(&format!("key `{key}`")), "{text}: {err}");
            assert!(err.contains(words), "{text}: {err}");
        }
        // A site of a region takes the region's releases, from the region's repository.
        let err = parse(&format!(
            "[region]\nurl = \"https://region.example.com:8443\"\nsite = \"factory-7\"\n\
             ca_fingerprint = \"sha256:{}\"\n[update]\nrepository_url = \"https://mirror.example/\"\n",
            "ab".repeat(32)
        ))
        .expect_err("both")
        .to_string();
        assert!(
            err.contains("key `update.repository_url`") && err.contains("region.url"),
            "{err}"
        );
    }

    #[test]
    fn region_ranges_are_enforced_even_without_a_link() {
        for (text, key) in [
            (
                "heartbeat_interval_secs = 0",
                "region.heartbeat_interval_secs",
            ),
            (
                "heartbeat_interval_secs = 3601",
                "region.heartbeat_interval_secs",
            ),
            ("jitter_percent = 51", "region.jitter_percent"),
            ("backoff_max_secs = 0", "region.backoff_max_secs"),
            ("max_queued_reports = 0", "region.max_queued_reports"),
            ("join_token_file = \"join-token\"", "region.join_token_file"),
        ] {
            let err = parse(&format!("[region]\n{text}\n")).expect_err(key);
            assert!(err.to_string().contains(&format!("key `{key}`")), "{err}");
        }
        let tuned = parse(
            "[region]\nheartbeat_interval_secs = 1\njitter_percent = 0\nbackoff_max_secs = 5\nmax_queued_reports = 1\n",
        )
        .expect("edges are allowed");
        assert_eq!(tuned.region.max_queued_reports, 1);
        assert_eq!(tuned.region.jitter_percent, 0);
    }

    #[test]
    fn missing_default_file_means_defaults_but_missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("agent.toml");
        assert!(AgentConfig::load(&missing, false).is_ok());
        assert!(matches!(
            AgentConfig::load(&missing, true),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn example_file_in_repository_is_valid_and_complete() {
        let text = include_str!("../../agent.example.toml");
        let config = parse(text).expect("example parses");
        // The example documents every key with its default value.
        assert_eq!(config, AgentConfig::default());
        let serialized = toml::to_string(&AgentConfig::default()).expect("serialize");
        for line in serialized.lines().filter(|l| l.contains(" = ")) {
            let key = line.split(" = ").next().unwrap_or_default();
            assert!(
                text.contains(&format!("{key} = ")) || text.contains(&format!("# {key} = ")),
                "example lacks {key}"
            );
        }
    }
}
