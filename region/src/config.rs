//! The region's configuration: one TOML file (`/etc/scs-edge/region.toml` by default).
//!
//! Every key is optional except where a feature needs it; unknown keys are refused so a typo in a
//! security setting (an OIDC audience, a listen address) stops the service instead of being ignored.

use crate::operator_auth::OidcSettings;
use jiff::SignedDuration;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the region looks when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/scs-edge/region.toml";

/// A configuration that cannot be used; names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, a wrong type.
    #[error("invalid {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A value parsed but is out of range.
    #[error("invalid {path}: key `{key}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegionConfig {
    /// `[region]`
    pub region: RegionSection,
    /// `[listen]`
    pub listen: ListenSection,
    /// `[enrollment]`
    pub enrollment: EnrollmentSection,
    /// `[reports]`
    pub reports: ReportsSection,
    /// `[oidc]`: operator authentication. Absent = the operator API and dashboard answer loopback
    /// clients only, without authentication (a lab or a first setup on the region host itself).
    pub oidc: Option<OidcSettings>,
    /// `[dashboard]`: the browser login (OIDC authorization code flow).
    pub dashboard: DashboardSection,
    /// `[releases]`: the OS releases the region mirrors and serves. Absent = the region serves none.
    pub releases: Option<ReleasesSection>,
    /// `[rollouts]`: how the region drives rollouts.
    pub rollouts: RolloutsSection,
}

/// `[rollouts]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutsSection {
    /// `rollouts.tick_millis` — how often every active rollout is stepped: offers follow a
    /// site's report within this. Default 5000; at least 100.
    pub tick_millis: u64,
}

impl Default for RolloutsSection {
    fn default() -> Self {
        Self { tick_millis: 5000 }
    }
}

/// `[releases]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReleasesSection {
    /// `releases.root_of_trust` — the `root.json` baked into the fleet's node image: publications
    /// are verified against it, never against a root they bring. Required.
    pub root_of_trust: PathBuf,
    /// `releases.timestamp_key_dir` — a folder holding the timestamp key (`timestamp.pk8`), the
    /// only release key the region holds. Required.
    pub timestamp_key_dir: PathBuf,
    /// `releases.timestamp_hours` — lifetime of the timestamps the region signs; it re-signs at
    /// half-life, so a region down for longer than that stops sites discovering new releases
    /// (the defence against a frozen mirror). Default 168 (a week).
    #[serde(default = "default_timestamp_hours")]
    pub timestamp_hours: u32,
}

const fn default_timestamp_hours() -> u32 {
    168
}

/// `[region]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegionSection {
    /// `region.name` — shown on the dashboard and in the CA's name. Default `central`.
    pub name: String,
    /// `region.state_dir` — CA key and certificate, the SQLite database. Default `/var/lib/scs-edge-region`.
    pub state_dir: PathBuf,
    /// `region.database_url` — `sqlite:///path`, or `postgres://…` for real fleets. Default: SQLite
    /// `region.db` in the state directory.
    pub database_url: String,
}

impl Default for RegionSection {
    fn default() -> Self {
        Self {
            name: "central".into(),
            state_dir: PathBuf::from("/var/lib/scs-edge-region"),
            database_url: String::new(),
        }
    }
}

/// `[listen]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenSection {
    /// `listen.address` — the one HTTPS listener (nodes, operators, dashboard). Default `0.0.0.0:9443`.
    pub address: SocketAddr,
    /// `listen.names` — DNS names and IP addresses in the server certificate: every name nodes and
    /// browsers use to reach the region. Default `["localhost", "127.0.0.1"]`.
    pub names: Vec<String>,
    /// `listen.public_url` — the URL browsers use (the OIDC redirect goes back to it). Default
    /// `https://<first name>:<port>`.
    pub public_url: String,
}

impl Default for ListenSection {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([0, 0, 0, 0], 9443)),
            names: vec!["localhost".into(), "127.0.0.1".into()],
            public_url: String::new(),
        }
    }
}

/// `[enrollment]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentSection {
    /// `enrollment.node_certificate_hours` — node certificate lifetime. Short, so a stolen key is
    /// useful briefly; renewed at half-life, so a region outage of half this is survived. Default 72.
    pub node_certificate_hours: u32,
    /// `enrollment.join_token_hours` — default lifetime of a join token. Default 24.
    pub join_token_hours: u32,
}

impl Default for EnrollmentSection {
    fn default() -> Self {
        Self {
            node_certificate_hours: 72,
            join_token_hours: 24,
        }
    }
}

impl EnrollmentSection {
    /// The node certificate lifetime.
    pub fn node_certificate_lifetime(&self) -> SignedDuration {
        SignedDuration::from_hours(i64::from(self.node_certificate_hours))
    }
}

/// `[reports]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsSection {
    /// `reports.retention_hours` — how long the report history (the dashboard's timeline) is kept.
    /// Each site's latest report is kept regardless. Default 168 (a week).
    pub retention_hours: u32,
    /// `reports.expected_interval_secs` — the heartbeat interval sites use; a site silent for three
    /// intervals shows as stale, and a pause of that length in its history as a gap. Default 10.
    pub expected_interval_secs: u32,
}

impl Default for ReportsSection {
    fn default() -> Self {
        Self {
            retention_hours: 168,
            expected_interval_secs: 10,
        }
    }
}

/// `[dashboard]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSection {
    /// `dashboard.client_id` — the OIDC client the browser login uses (confidential client).
    pub client_id: String,
    /// `dashboard.client_secret` — its secret.
    pub client_secret: String,
    /// `dashboard.resource` — RFC 8707 resource indicator sent with the login, for identity providers
    /// that choose the token audience by it. Empty = not sent.
    pub resource: String,
}

impl RegionConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |key, reason: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason: reason.into(),
        };
        if config.region.name.is_empty() || config.region.name.len() > 63 {
            return Err(invalid("region.name", "must be 1 to 63 characters"));
        }
        if config.listen.names.is_empty() {
            return Err(invalid(
                "listen.names",
                "needs at least one name nodes can reach the region by",
            ));
        }
        if config.enrollment.node_certificate_hours == 0
            || config.enrollment.node_certificate_hours > 24 * 90
        {
            return Err(invalid(
                "enrollment.node_certificate_hours",
                "must be 1 to 2160",
            ));
        }
        if config.enrollment.join_token_hours == 0 {
            return Err(invalid("enrollment.join_token_hours", "must be at least 1"));
        }
        if config.reports.expected_interval_secs == 0 {
            return Err(invalid(
                "reports.expected_interval_secs",
                "must be at least 1",
            ));
        }
        if !(100..=3_600_000).contains(&config.rollouts.tick_millis) {
            return Err(invalid(
                "rollouts.tick_millis",
                "must be 100 to 3600000 (an hour)",
            ));
        }
        if let Some(releases) = &config.releases
            && (releases.timestamp_hours < 2 || releases.timestamp_hours > 24 * 90)
        {
            return Err(invalid("releases.timestamp_hours", "must be 2 to 2160"));
        }
        if config.oidc.is_some()
            && !config.listen.public_url.is_empty()
            && !config.listen.public_url.starts_with("https://")
        {
            return Err(invalid("listen.public_url", "must be an https:// URL"));
        }
        Ok(config)
    }

    /// The database URL, with the SQLite default filled in.
    pub fn database_url(&self) -> String {
        if self.region.database_url.is_empty() {
            format!(
                "sqlite://{}",
                self.region.state_dir.join("region.db").display()
            )
        } else {
            self.region.database_url.clone()
        }
    }

    /// The mirror's settings, when `[releases]` is configured.
    pub fn release_settings(&self) -> Option<crate::releases::ReleaseSettings> {
        self.releases
            .as_ref()
            .map(|releases| crate::releases::ReleaseSettings {
                mirror_dir: self.region.state_dir.join("releases"),
                root_of_trust: releases.root_of_trust.clone(),
                timestamp_key_dir: releases.timestamp_key_dir.clone(),
                lifetimes: scs_edge_release::Lifetimes {
                    timestamp: SignedDuration::from_hours(i64::from(releases.timestamp_hours)),
                    ..scs_edge_release::Lifetimes::default()
                },
            })
    }

    /// The URL browsers reach the region at.
    pub fn public_url(&self) -> String {
        if self.listen.public_url.is_empty() {
            let host = self
                .listen
                .names
                .first()
                .map_or("localhost", String::as_str);
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_owned()
            };
            format!("https://{host}:{}", self.listen.address.port())
        } else {
            self.listen.public_url.trim_end_matches('/').to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RegionConfig, ConfigError> {
        RegionConfig::parse(text, Path::new("region.toml"))
    }

    #[test]
    fn releases_need_both_paths_and_a_sane_timestamp_lifetime() {
        let err = parse("[releases]\nroot_of_trust = \"/r.json\"\n").expect_err("no key dir");
        assert!(err.to_string().contains("timestamp_key_dir"), "{err}");
        let err = parse(
            "[releases]\nroot_of_trust = \"/r.json\"\ntimestamp_key_dir = \"/k\"\ntimestamp_hours = 1\n",
        )
        .expect_err("too short");
        assert!(
            err.to_string().contains("releases.timestamp_hours"),
            "{err}"
        );
        let config = parse("[region]\nstate_dir = \"/srv/region\"\n[releases]\nroot_of_trust = \"/r.json\"\ntimestamp_key_dir = \"/k\"\n")
            .expect("valid");
        let settings = config.release_settings().expect("settings");
        assert_eq!(settings.mirror_dir, PathBuf::from("/srv/region/releases"));
        assert_eq!(
            settings.lifetimes.timestamp,
            SignedDuration::from_hours(168)
        );
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let config = parse("").expect("defaults");
        assert_eq!(config.region.name, "central");
        assert_eq!(
            config.database_url(),
            "sqlite:///var/lib/scs-edge-region/region.db"
        );
        assert_eq!(config.public_url(), "https://localhost:9443");
        assert_eq!(
            config.enrollment.node_certificate_lifetime(),
            SignedDuration::from_hours(72)
        );
        assert!(config.oidc.is_none());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = parse("[listen]\nadress = \"0.0.0.0:1\"\n").expect_err("typo");
        assert!(err.to_string().contains("adress"), "{err}");
        let err = parse("[enrollment]\nnode_certificate_hours = 0\n").expect_err("zero");
        assert!(
            err.to_string()
                .contains("enrollment.node_certificate_hours"),
            "{err}"
        );
        let err = parse("[listen]\nnames = []\n").expect_err("names");
        assert!(err.to_string().contains("listen.names"), "{err}");
    }

    #[test]
    fn a_postgres_url_is_taken_as_given() {
        let config =
            parse("[region]\ndatabase_url = \"postgres://region@db/fleet\"\n").expect("pg");
        assert_eq!(config.database_url(), "postgres://region@db/fleet");
    }

    #[test]
    fn the_example_file_is_the_defaults_and_its_commented_sections_parse() {
        let example = include_str!("../region.example.toml");
        assert_eq!(
            parse(example).expect("example"),
            parse("").expect("defaults")
        );
        // The commented [oidc] and [dashboard] sections, switched on, are valid too.
        let enabled: String = example
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| {
                        r.starts_with('[')
                            || (r.starts_with(|c: char| c.is_ascii_lowercase())
                                && r.contains(" = "))
                    })
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = parse(&enabled).expect("oidc example");
        assert_eq!(config.oidc.expect("oidc").audience, "scs-edge-region");
        assert_eq!(config.dashboard.client_id, "scs-edge-dashboard");
        let releases = config.releases.expect("releases");
        assert_eq!(releases.timestamp_hours, 168);
        assert_eq!(
            releases.timestamp_key_dir,
            PathBuf::from("/etc/scs-edge/release/keys")
        );
    }
}
