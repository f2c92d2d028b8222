//! The site configuration: which site this node belongs to, how it finds and trusts its region, and
//! how its management interface is addressed.
//!
//! It arrives as a `site.toml` (fw_cfg, a `SCSEDGE` stick, base64 on the kernel command line) or as
//! loose `key=value` settings (kernel command line, SMBIOS OEM strings). Both shapes go through one
//! validation so a setting is judged the same wherever it came from, and every error names the source
//! and the key as the operator wrote it there. The join token is a secret: no error or `Debug` output
//! ever shows it.

use super::sources::SourceKind;
use crate::config::{check_https_url, normalise_fingerprint};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A site configuration that was found but cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    /// A key is missing, unknown or has an unacceptable value.
    #[error("{origin}: key `{key}`: {reason}")]
    Invalid {
        /// Where the configuration came from.
        origin: SourceKind,
        /// The key as written in that source (`site.region_url`, `scs_edge.region_url`, …).
        key: String,
        /// What is wrong with it (never the secret value itself).
        reason: String,
    },
    /// The source exists but could not be read (permissions, mount failure, …).
    #[error("{origin}: cannot read {what}: {reason}")]
    Unreadable {
        /// Where the configuration should have come from.
        origin: SourceKind,
        /// The file or device.
        what: String,
        /// Why.
        reason: String,
    },
}

impl SiteError {
    pub(crate) fn invalid(
        origin: SourceKind,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            origin,
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A validated, normalised site configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// The site's name: a DNS label; the OVN owner tag (`network.site_id`) and a TLS name of the API.
    pub name: String,
    /// The region's base URL (always `https://`).
    pub region_url: String,
    /// One-time secret the node presents when it enrols with the region.
    pub join_token: String,
    /// Pin of the region's CA certificate, normalised to `sha256:` + 64 lower-case hex digits.
    pub ca_fingerprint: String,
    /// How the management interface gets its address.
    pub management: Management,
    /// A hardware profile the operator forces, overriding DMI matching.
    pub hardware_profile: Option<String>,
    /// Base URL clients reach this site's API at (the service catalog names it), when it is not
    /// `https://<host name>` — behind NAT, a port forward or a load balancer.
    pub api_url: Option<String>,
}

impl std::fmt::Debug for SiteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteConfig")
            .field("name", &self.name)
            .field("region_url", &self.region_url)
            .field("join_token", &"<redacted>")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("management", &self.management)
            .field("hardware_profile", &self.hardware_profile)
            .field("api_url", &self.api_url)
            .finish()
    }
}

/// Addressing of the management interface; no static address means DHCP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Management {
    /// Static address with prefix length; `None`: DHCP.
    pub address: Option<IpNet>,
    /// Default gateway (static addressing only).
    pub gateway: Option<IpAddr>,
    /// DNS servers (with DHCP they are used in addition to the leased ones).
    pub dns: Vec<IpAddr>,
}

/// One setting of the site configuration, so errors can name it the way each source spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Field {
    Name,
    RegionUrl,
    JoinToken,
    CaFingerprint,
    HardwareProfile,
    ApiUrl,
    Address,
    Gateway,
    Dns,
}

impl Field {
    /// The dotted key in `site.toml`.
    pub(crate) fn toml_key(self) -> &'static str {
        match self {
            Self::Name => "site.name",
            Self::RegionUrl => "site.region_url",
            Self::JoinToken => "site.join_token",
            Self::CaFingerprint => "site.ca_fingerprint",
            Self::HardwareProfile => "site.hardware_profile",
            Self::ApiUrl => "site.api_url",
            Self::Address => "management.address",
            Self::Gateway => "management.gateway",
            Self::Dns => "management.dns",
        }
    }

    /// The key in `key=value` sources (kernel command line, SMBIOS), without the source's prefix.
    pub(crate) fn loose_key(self) -> Option<&'static str> {
        match self {
            Self::Name => Some("site"),
            Self::RegionUrl => Some("region_url"),
            Self::JoinToken => Some("join_token"),
            Self::CaFingerprint => Some("ca_fingerprint"),
            Self::HardwareProfile => Some("hardware_profile"),
            Self::ApiUrl => Some("api_url"),
            Self::Address | Self::Gateway | Self::Dns => None,
        }
    }

    /// The settings `key=value` sources may carry.
    pub(crate) const LOOSE: [Self; 6] = [
        Self::Name,
        Self::RegionUrl,
        Self::JoinToken,
        Self::CaFingerprint,
        Self::HardwareProfile,
        Self::ApiUrl,
    ];
}

/// `site.toml` as written; every value optional here so a missing one is reported by key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    site: Option<RawSite>,
    management: Option<RawManagement>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    name: Option<String>,
    region_url: Option<String>,
    join_token: Option<String>,
    ca_fingerprint: Option<String>,
    hardware_profile: Option<String>,
    api_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManagement {
    address: Option<String>,
    gateway: Option<String>,
    #[serde(default)]
    dns: Vec<String>,
}

/// Longest `site.toml` any source may hand us; a site configuration is a few hundred bytes.
pub const MAX_SITE_TOML_BYTES: usize = 64 * 1024;

/// Parses and validates a `site.toml` from `origin`.
pub fn parse_site_toml(text: &str, origin: SourceKind) -> Result<SiteConfig, SiteError> {
    if text.len() > MAX_SITE_TOML_BYTES {
        return Err(SiteError::invalid(
            origin,
            "(document)",
            format!("larger than {MAX_SITE_TOML_BYTES} bytes"),
        ));
    }
    let deserializer = toml::Deserializer::parse(text).map_err(|err| {
        SiteError::invalid(origin, toml_location(text, err.span()), err.message())
    })?;
    let file: SiteFile = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let key = if key == "." {
            toml_location(text, inner.span())
        } else {
            key
        };
        SiteError::invalid(origin, key, inner.message())
    })?;
    let site = file.site.unwrap_or_default();
    let management = file.management.unwrap_or_default();
    let mut values = BTreeMap::new();
    for (field, value) in [
        (Field::Name, site.name),
        (Field::RegionUrl, site.region_url),
        (Field::JoinToken, site.join_token),
        (Field::CaFingerprint, site.ca_fingerprint),
        (Field::HardwareProfile, site.hardware_profile),
        (Field::ApiUrl, site.api_url),
        (Field::Address, management.address),
        (Field::Gateway, management.gateway),
    ] {
        if let Some(value) = value {
            values.insert(field, value);
        }
    }
    validate(&values, &management.dns, origin, &|f| {
        f.toml_key().to_owned()
    })
}

/// Validates loose `key=value` settings (already checked for unknown keys by the source).
pub(crate) fn from_loose(
    values: &BTreeMap<Field, String>,
    origin: SourceKind,
    key_name: &dyn Fn(Field) -> String,
) -> Result<SiteConfig, SiteError> {
    validate(values, &[], origin, key_name)
}

fn toml_location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(1, |before| before.matches('\n').count() + 1);
            format!("(line {line})")
        }
        None => "(document)".into(),
    }
}

fn validate(
    values: &BTreeMap<Field, String>,
    dns: &[String],
    origin: SourceKind,
    key_name: &dyn Fn(Field) -> String,
) -> Result<SiteConfig, SiteError> {
    let err = |field: Field, reason: String| SiteError::invalid(origin, key_name(field), reason);
    let required = |field: Field| {
        values
            .get(&field)
            .cloned()
            .ok_or_else(|| err(field, "missing (required)".into()))
    };
    let name = required(Field::Name)?;
    if !is_dns_label(&name) {
        return Err(err(
            Field::Name,
            format!(
                "must be a DNS label: 1-63 characters of [a-z0-9-], not starting or ending with '-'; got {name:?}"
            ),
        ));
    }
    let region_url = required(Field::RegionUrl)?;
    check_https_url(&region_url).map_err(|reason| err(Field::RegionUrl, reason))?;
    let join_token = required(Field::JoinToken)?;
    if join_token.is_empty() || join_token.len() > 4096 {
        return Err(err(Field::JoinToken, "must be 1-4096 characters".into()));
    }
    if !join_token.bytes().all(|b| b.is_ascii_graphic()) {
        // The value is a secret: say what is wrong, never what it is.
        return Err(err(
            Field::JoinToken,
            "must be printable ASCII without spaces or control characters".into(),
        ));
    }
    let ca_fingerprint = normalise_fingerprint(&required(Field::CaFingerprint)?)
        .map_err(|reason| err(Field::CaFingerprint, reason))?;
    let hardware_profile = values.get(&Field::HardwareProfile).cloned();
    if let Some(profile) = &hardware_profile
        && !super::profile::is_profile_name(profile)
    {
        return Err(err(
            Field::HardwareProfile,
            format!("must be a profile name (1-64 characters of [a-z0-9._-]), got {profile:?}"),
        ));
    }
    let api_url = values.get(&Field::ApiUrl).cloned();
    if let Some(url) = &api_url {
        check_https_url(url).map_err(|reason| err(Field::ApiUrl, reason))?;
    }
    let management = validate_management(values, dns, &err)?;
    Ok(SiteConfig {
        name,
        region_url,
        join_token,
        ca_fingerprint,
        management,
        hardware_profile,
        api_url,
    })
}

fn validate_management(
    values: &BTreeMap<Field, String>,
    dns: &[String],
    err: &dyn Fn(Field, String) -> SiteError,
) -> Result<Management, SiteError> {
    let address = match values.get(&Field::Address) {
        None => None,
        Some(text) => Some(text.parse::<IpNet>().map_err(|_| {
            err(
                Field::Address,
                format!("must be an address with prefix length like 10.0.0.5/24, got {text:?}"),
            )
        })?),
    };
    let gateway = match values.get(&Field::Gateway) {
        None => None,
        Some(text) => Some(
            text.parse::<IpAddr>()
                .map_err(|_| err(Field::Gateway, format!("not an IP address: {text:?}")))?,
        ),
    };
    if let Some(gateway) = gateway {
        let Some(address) = address else {
            return Err(err(
                Field::Gateway,
                "only allowed with a static management.address (DHCP provides the gateway)".into(),
            ));
        };
        let link_local_v6 = matches!(gateway, IpAddr::V6(v6) if v6.is_unicast_link_local());
        if !link_local_v6 && !address.contains(&gateway) {
            return Err(err(
                Field::Gateway,
                format!(
                    "{gateway} is not inside the management network {}",
                    address.trunc()
                ),
            ));
        }
    }
    let dns = dns
        .iter()
        .map(|text| {
            text.parse::<IpAddr>()
                .map_err(|_| err(Field::Dns, format!("not an IP address: {text:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Management {
        address,
        gateway,
        dns,
    })
}

/// RFC 1123 label, lower case only: the site name becomes a host name, an OVN owner tag and a TLS name.
pub use crate::config::is_dns_label;

/// The normalised `site.toml` the node keeps in `/etc/scs-edge/site.toml`.
#[derive(Serialize)]
struct RenderedSite<'a> {
    site: RenderedSiteSection<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    management: Option<RenderedManagement>,
}

#[derive(Serialize)]
struct RenderedSiteSection<'a> {
    name: &'a str,
    region_url: &'a str,
    join_token: &'a str,
    ca_fingerprint: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hardware_profile: Option<&'a str>,
}

#[derive(Serialize)]
struct RenderedManagement {
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dns: Vec<String>,
}

impl SiteConfig {
    /// The normalised configuration as `site.toml` text; parsing it again yields `self`.
    pub fn to_toml(&self) -> String {
        let m = &self.management;
        let management = (m.address.is_some() || !m.dns.is_empty()).then(|| RenderedManagement {
            address: m.address.map(|a| a.to_string()),
            gateway: m.gateway.map(|g| g.to_string()),
            dns: m.dns.iter().map(ToString::to_string).collect(),
        });
        let rendered = RenderedSite {
            site: RenderedSiteSection {
                name: &self.name,
                region_url: &self.region_url,
                join_token: &self.join_token,
                ca_fingerprint: &self.ca_fingerprint,
                hardware_profile: self.hardware_profile.as_deref(),
            },
            management,
        };
        toml::to_string(&rendered).unwrap_or_default()
    }
}
