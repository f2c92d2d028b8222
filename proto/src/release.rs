//! The release manifest: what one signed OS release of the node image consists of and which nodes may
//! take it. It is itself a TUF target (`scs-edge_<version>.manifest.json`) in the release repository,
//! so its bytes are covered by the targets role's signatures like the images it lists; the release tool
//! (`scs-edge-release`) writes it, the agent reads it before it installs anything.
//!
//! Versioning follows the rules of this crate: readers ignore unknown fields, later fields are
//! optional, [`ArtifactKind`] has an `Unknown` catch-all.

use serde::{Deserialize, Serialize};

/// The manifest's format version this build writes.
pub const MANIFEST_SCHEMA: u32 = 1;

/// The TUF target name of a release's manifest.
pub fn manifest_target(version: &semver::Version) -> String {
    format!("scs-edge_{version}.manifest.json")
}

/// One OS release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    /// [`MANIFEST_SCHEMA`] of the writer.
    pub schema: u32,
    /// The image version (`IMAGE_VERSION` in the image's os-release).
    pub version: semver::Version,
    /// The oldest version that may update to this one directly; older nodes need an intermediate
    /// release first (a data migration this release no longer carries, say).
    pub min_from_version: semver::Version,
    /// The regret field: when set, no node should run a version above it. A node above it is moved
    /// down to this release; it is the only way a downgrade is ever accepted, and it is signed like
    /// everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<semver::Version>,
    /// The files `systemd-sysupdate` writes into the inactive slot, each also a TUF target.
    pub artifacts: Vec<Artifact>,
}

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// What it is.
    pub kind: ArtifactKind,
    /// Its TUF target name, which is also the file name sysupdate's transfers match.
    pub target: String,
    /// Lowercase hex SHA-256 of its bytes.
    pub sha256: String,
    /// Its length in bytes.
    pub length: u64,
    /// For a partition image: the GPT partition UUID its slot must carry. The initrd finds `/usr`
    /// and its hash tree by partition UUIDs derived from the verity root hash (`usrhash=`), so the
    /// written slot takes the built partition's UUID; it is also part of the target name
    /// ([`target_name`]), where `systemd-sysupdate` reads it (`@u`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_uuid: Option<uuid::Uuid>,
}

/// The target name of a release artifact: `scs-edge_<version>[_<partition uuid>]<suffix>`.
pub fn target_name(
    version: &semver::Version,
    kind: ArtifactKind,
    partition_uuid: Option<uuid::Uuid>,
) -> Option<String> {
    let suffix = kind.file_suffix()?;
    Some(match partition_uuid {
        Some(uuid) => format!("scs-edge_{version}_{uuid}{suffix}"),
        None => format!("scs-edge_{version}{suffix}"),
    })
}

/// The parts of an A/B slot (decision 0010).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// The `/usr` squashfs partition image.
    Usr,
    /// Its dm-verity hash tree.
    UsrVerity,
    /// The signed verity root hash.
    UsrVeritySig,
    /// The unified kernel image (kernel, initrd, command line with `usrhash=`).
    Uki,
    /// A kind a newer release tool knows; an agent refuses a release carrying one it cannot install.
    #[serde(other)]
    Unknown,
}

impl ArtifactKind {
    /// Every kind a release must carry exactly once.
    pub const REQUIRED: [Self; 4] = [Self::Usr, Self::UsrVerity, Self::UsrVeritySig, Self::Uki];

    /// The suffix after `scs-edge_<version>` in the image build output (`make image`).
    pub fn image_suffix(self) -> Option<&'static str> {
        match self {
            Self::Usr => Some(".usr.raw"),
            Self::UsrVerity => Some(".usr-verity.raw"),
            Self::UsrVeritySig => Some(".usr-verity-sig.raw"),
            Self::Uki => Some(".efi"),
            Self::Unknown => None,
        }
    }

    /// The GPT partition label of this kind's slot in the image build (`None` for the UKI, a file).
    pub fn partition_label(self, version: &semver::Version) -> Option<String> {
        match self {
            Self::Usr => Some(format!("scs-edge_{version}")),
            Self::UsrVerity => Some(format!("scs-edge_{version}_verity")),
            Self::UsrVeritySig => Some(format!("scs-edge_{version}_verity_sig")),
            Self::Uki | Self::Unknown => None,
        }
    }

    /// Whether the release carries it gzip-compressed. The partition images are fixed-size slots
    /// (1.5 GiB for `/usr`) that the data fills only in part: compressed, the zero tail costs
    /// nothing to ship, hash or store, and `systemd-sysupdate` decompresses while it writes the slot
    /// (`systemd-import` detects gzip by its magic bytes; Debian 13's build has no zstd there).
    pub fn compressed(self) -> bool {
        matches!(self, Self::Usr | Self::UsrVerity)
    }

    /// The suffix of the target name ([`target_name`]), which is also the file name
    /// `systemd-sysupdate`'s transfers match (image/sysupdate.d).
    pub fn file_suffix(self) -> Option<&'static str> {
        match self {
            Self::Usr => Some(".usr.raw.gz"),
            Self::UsrVerity => Some(".usr-verity.raw.gz"),
            Self::UsrVeritySig => Some(".usr-verity-sig.raw"),
            Self::Uki => Some(".efi"),
            Self::Unknown => None,
        }
    }
}
