//! Servers: what the user asked for (desired state) and what the node last saw (status).

use super::ComputeError;
use super::flavor::Flavor;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The server status Nova clients know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerStatus {
    /// Being created; never ran yet.
    Build,
    /// Running.
    Active,
    /// Powered off.
    Shutoff,
    /// A soft reboot is in progress.
    Reboot,
    /// A hard reboot is in progress.
    HardReboot,
    /// Paused (by someone else; the agent does not pause servers).
    Paused,
    /// Failed; `fault` says why.
    Error,
}

impl ServerStatus {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Build => "BUILD",
            Self::Active => "ACTIVE",
            Self::Shutoff => "SHUTOFF",
            Self::Reboot => "REBOOT",
            Self::HardReboot => "HARD_REBOOT",
            Self::Paused => "PAUSED",
            Self::Error => "ERROR",
        }
    }

    /// Parses the API spelling.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Build,
            Self::Active,
            Self::Shutoff,
            Self::Reboot,
            Self::HardReboot,
            Self::Paused,
            Self::Error,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// Whether the user wants the server running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerIntent {
    /// Keep it running (start it after a host reboot or a crash).
    Running,
    /// Keep it off.
    Stopped,
}

impl PowerIntent {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
        }
    }

    pub(super) fn parse(text: &str) -> Self {
        if text == "stopped" {
            Self::Stopped
        } else {
            Self::Running
        }
    }
}

/// Soft (ask the guest, fall back to hard after the shutdown timeout) or hard (power cycle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootKind {
    /// ACPI shutdown, then start.
    Soft,
    /// Power off, then start.
    Hard,
}

impl RebootKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Soft => "soft",
            Self::Hard => "hard",
        }
    }

    pub(super) fn parse(text: &str) -> Self {
        if text == "hard" {
            Self::Hard
        } else {
            Self::Soft
        }
    }
}

/// The hypervisor's view of the guest, in Nova's `power_state` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// No domain (yet).
    NoState,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Shut off.
    Shutdown,
    /// Crashed.
    Crashed,
}

impl PowerState {
    /// Nova's numeric code (`OS-EXT-STS:power_state`).
    pub fn code(self) -> u8 {
        match self {
            Self::NoState => 0,
            Self::Running => 1,
            Self::Paused => 3,
            Self::Shutdown => 4,
            Self::Crashed => 6,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::NoState => "nostate",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Shutdown => "shutdown",
            Self::Crashed => "crashed",
        }
    }

    pub(super) fn parse(text: &str) -> Self {
        match text {
            "running" => Self::Running,
            "paused" => Self::Paused,
            "shutdown" => Self::Shutdown,
            "crashed" => Self::Crashed,
            _ => Self::NoState,
        }
    }
}

/// Why a server is in ERROR (Nova's `fault`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// HTTP-like code: 500 for host failures.
    pub code: u16,
    /// What went wrong, for the operator.
    pub message: String,
    /// When it was recorded.
    pub created: Timestamp,
}

/// A server NIC: a (Neutron) port bound to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    /// Port id; OVN's logical port and the VIF's `iface-id`.
    pub port_id: Uuid,
    /// MAC address, `fa:16:3e:…` like Neutron's.
    pub mac: String,
    /// Order of the NIC in the guest.
    pub position: u32,
    /// Network of the port; `None` for a plain tap on a node without networking.
    pub network_id: Option<Uuid>,
}

/// Where a new server's NIC connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkRequest {
    /// A new port on this network, made for the server (and deleted with it).
    Network(Uuid),
    /// This existing, unbound port (kept when the server is deleted).
    Port(Uuid),
}

/// A server with its desired and observed state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Server {
    /// Server id; also the libvirt domain UUID.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Owning project.
    pub project_id: String,
    /// Creating user.
    pub user_id: String,
    /// Image booted from.
    pub image_id: Uuid,
    /// Copy of the flavor at creation.
    pub flavor: Flavor,
    /// Cloud-init user data.
    #[serde(skip)]
    pub user_data: Option<Vec<u8>>,
    /// User metadata (on the config drive as `meta`).
    pub metadata: BTreeMap<String, String>,
    /// The keypair named at creation.
    pub key_name: Option<String>,
    /// That keypair's public key as it was then (on the config drive as `public_keys`).
    pub key_data: Option<String>,
    /// The availability zone it runs in.
    pub availability_zone: String,
    /// Desired power.
    pub power_intent: PowerIntent,
    /// Reboot requested and not yet carried out.
    pub pending_reboot: Option<RebootKind>,
    /// Deletion requested.
    pub deleting: bool,
    /// Desired-state version.
    pub generation: i64,
    /// Desired-state version last fully reconciled.
    pub observed_generation: i64,
    /// Status as last written back.
    pub status: ServerStatus,
    /// Hypervisor power state as last seen.
    pub power_state: PowerState,
    /// Why it is in ERROR.
    pub fault: Option<Fault>,
    /// NICs in guest order.
    pub nics: Vec<Nic>,
    /// Created.
    pub created_at: Timestamp,
    /// Last change of any kind.
    pub updated_at: Timestamp,
    /// First successful start.
    pub launched_at: Option<Timestamp>,
}

impl Server {
    /// Nova's `OS-EXT-STS:task_state`: what the node is working on for this server, if anything.
    pub fn task_state(&self) -> Option<&'static str> {
        if self.deleting {
            return Some("deleting");
        }
        if let Some(kind) = self.pending_reboot {
            return Some(if kind == RebootKind::Hard {
                "reboot_started_hard"
            } else {
                "reboot_started"
            });
        }
        match (self.power_intent, self.power_state, self.status) {
            (_, _, ServerStatus::Build) => Some("spawning"),
            (_, _, ServerStatus::Error) => None,
            (
                PowerIntent::Running,
                PowerState::Shutdown | PowerState::NoState | PowerState::Crashed,
                _,
            ) => Some("powering-on"),
            (PowerIntent::Stopped, PowerState::Running | PowerState::Paused, _) => {
                Some("powering-off")
            }
            _ => None,
        }
    }

    /// The guest's host name, derived from the display name as Nova does.
    pub fn hostname(&self) -> String {
        hostname_from(&self.name)
    }
}

/// A request to create a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewServer {
    /// Client-chosen id (idempotent retries); generated when absent.
    pub id: Option<Uuid>,
    /// Display name.
    pub name: String,
    /// Project.
    pub project_id: String,
    /// User.
    pub user_id: String,
    /// Flavor id.
    pub flavor_id: String,
    /// Image id.
    pub image_id: Uuid,
    /// Cloud-init user data (raw bytes, at most 64 KiB).
    pub user_data: Option<Vec<u8>>,
    /// Metadata items (at most 128; keys 1–255, values up to 255 characters).
    pub metadata: BTreeMap<String, String>,
    /// NICs on networks (or existing ports), in guest order.
    pub networks: Vec<NetworkRequest>,
    /// Security groups of the ports made for `networks`; the project's default group when absent.
    pub security_groups: Option<Vec<Uuid>>,
    /// Additional NICs that are plain taps, not on any network (nodes without networking).
    pub nics: u32,
    /// A keypair of `user_id` whose public key goes onto the config drive.
    pub key_name: Option<String>,
    /// Requested availability zone; must be this site's when given.
    pub availability_zone: Option<String>,
}

/// Nova's limit on decoded user data.
pub const MAX_USER_DATA: usize = 65535;
/// Nova's default metadata-items quota.
pub const MAX_METADATA_ITEMS: usize = 128;
/// More NICs than PCIe slots a q35 guest sensibly gets.
pub const MAX_NICS: u32 = 16;

impl NewServer {
    /// Checks the fields that need no store lookup.
    pub fn validate(&self) -> Result<(), ComputeError> {
        validate_server_name(&self.name)?;
        for (field, value) in [("project_id", &self.project_id), ("user_id", &self.user_id)] {
            if value.is_empty() || value.len() > 255 || value.chars().any(char::is_control) {
                return Err(ComputeError::Invalid {
                    field,
                    reason: "must be 1 to 255 printable characters".into(),
                });
            }
        }
        if let Some(data) = &self.user_data
            && data.len() > MAX_USER_DATA
        {
            return Err(ComputeError::Invalid {
                field: "user_data",
                reason: format!("{} bytes, at most {MAX_USER_DATA} allowed", data.len()),
            });
        }
        if self.metadata.len() > MAX_METADATA_ITEMS {
            return Err(ComputeError::Invalid {
                field: "metadata",
                reason: format!(
                    "{} items, at most {MAX_METADATA_ITEMS} allowed",
                    self.metadata.len()
                ),
            });
        }
        for (key, value) in &self.metadata {
            if key.is_empty() || key.chars().count() > 255 || value.chars().count() > 255 {
                return Err(ComputeError::Invalid {
                    field: "metadata",
                    reason: format!(
                        "item {key:?}: keys must be 1-255 and values at most 255 characters"
                    ),
                });
            }
        }
        if self.nics > MAX_NICS {
            return Err(ComputeError::Invalid {
                field: "networks",
                reason: format!("at most {MAX_NICS} NICs"),
            });
        }
        Ok(())
    }
}

/// Nova's server-name rule: 1–255 characters, no leading or trailing whitespace, nothing unprintable.
pub fn validate_server_name(name: &str) -> Result<(), ComputeError> {
    super::flavor::validate_text("server name", name)
}

/// Lower-case letters, digits and hyphens, at most 63 characters; `server` when nothing is left.
pub fn hostname_from(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-').to_owned();
    if trimmed.is_empty() {
        "server".into()
    } else {
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> NewServer {
        NewServer {
            name: "web-1".into(),
            project_id: "p".into(),
            user_id: "u".into(),
            flavor_id: "f".into(),
            image_id: Uuid::new_v4(),
            ..NewServer::default()
        }
    }

    #[test]
    fn names_with_surrounding_whitespace_control_chars_or_bad_length_are_refused() {
        for bad in ["", " web", "web ", "we\u{7}b", &"x".repeat(256)] {
            let mut r = request();
            r.name = bad.to_owned();
            assert!(
                matches!(
                    r.validate(),
                    Err(ComputeError::Invalid {
                        field: "server name",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        let mut r = request();
        r.name = "Web Server — ü 1".into();
        r.validate().expect("unicode inside is fine");
    }

    #[test]
    fn oversized_user_data_and_metadata_are_refused() {
        let mut r = request();
        r.user_data = Some(vec![b'x'; MAX_USER_DATA + 1]);
        assert!(matches!(
            r.validate(),
            Err(ComputeError::Invalid {
                field: "user_data",
                ..
            })
        ));
        let mut r = request();
        r.metadata = (0..=MAX_METADATA_ITEMS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(matches!(
            r.validate(),
            Err(ComputeError::Invalid {
                field: "metadata",
                ..
            })
        ));
    }

    #[test]
    fn hostnames_are_dns_safe() {
        assert_eq!(hostname_from("Web Server_01"), "web-server-01");
        assert_eq!(hostname_from("--x--"), "x");
        assert_eq!(hostname_from("üüü"), "server");
        assert_eq!(hostname_from(&"a".repeat(100)).len(), 63);
    }

    #[test]
    fn status_spelling_round_trips() {
        for s in [
            "BUILD",
            "ACTIVE",
            "SHUTOFF",
            "REBOOT",
            "HARD_REBOOT",
            "PAUSED",
            "ERROR",
        ] {
            assert_eq!(ServerStatus::parse(s).map(ServerStatus::as_str), Some(s));
        }
    }
}
