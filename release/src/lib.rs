//! Signed OS releases of the SCS Edge node image (decision 0013).
//!
//! A release is the split artifacts `make image` writes (the `/usr` squashfs, its verity hash tree and
//! signature, the UKI) plus a [`ReleaseManifest`](scs_edge_proto::release::ReleaseManifest), all of
//! them targets of a TUF repository made and read with the `tough` crate — no TUF of our own. This
//! crate is both ends of that format, so they cannot drift apart:
//!
//! * producing: [`keys`] (role keys, the root of trust, cross-signed root rotation), [`repository`]
//!   (publishing a release, refreshing the timestamp), [`bundle::export`] (the air-gap file) and
//!   [`waiver::issue`] (a freshness waiver for one site);
//! * consuming: [`bundle::extract`] (a bundle into a staging directory, refusing anything that could
//!   escape it), [`verify`] (TUF verification against the root baked into the image, with the role
//!   versions and the last known time persisted across reboots — of an extracted bundle, or of a
//!   repository online through [`http_transport`]) and [`policy`] (which verified release a node may
//!   take), with [`waiver`] for a site that can never receive fresh metadata (an operator-signed,
//!   time-bounded exception to expiry, and nothing else).
//!
//! The binary `scs-edge-release` is the release manager's tool over the producing half; the agent's
//! update domain calls the consuming half.

pub mod bundle;
mod durable;
pub mod http_transport;
pub mod keys;
pub mod mirror;
pub mod policy;
pub mod repository;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod verify;
pub mod waiver;

use std::path::PathBuf;

/// The metadata folder of a repository (and of a bundle).
pub const METADATA_DIR: &str = "metadata";
/// The targets folder of a repository (and of a bundle).
pub const TARGETS_DIR: &str = "targets";

/// What went wrong, with the file or role it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// TUF refused or failed: a signature, a hash, a version, an expiry, a limit.
    #[error("{context}: {source}")]
    Tuf {
        /// What was being done.
        context: String,
        /// tough's error, which names the role or target.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A key file is missing, unreadable or not a key tough can sign with.
    #[error("key {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The image build output does not hold what a release needs.
    #[error("image output {}: {reason}", dir.display())]
    ImageOutput {
        /// The directory.
        dir: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A bundle is malformed: truncated, an entry outside its folders, too large.
    #[error("bundle {}: {reason}", path.display())]
    Bundle {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A repository online could not be reached, or did not serve a file its metadata names. Nothing
    /// was verified, so this is no verdict on the release; the same discovery may succeed later.
    #[error("{context}: {source}")]
    Unreachable {
        /// What was being done.
        context: String,
        /// tough's error, with the failed fetch ([`http_transport::FetchError`]) at its root.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A freshness waiver that does not hold: malformed, for another site, outside its time, too
    /// long, or not signed by the targets keys.
    #[error("{context}: {source}")]
    Waiver {
        /// What was being done (at discovery: which metadata had expired).
        context: String,
        /// The rule it breaks.
        source: waiver::WaiverError,
    },
    /// The repository's targets do not form a valid release (a missing artifact, a manifest that
    /// does not match its targets, no release of the asked version).
    #[error("release: {0}")]
    Release(String),
}

impl ReleaseError {
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// tough's error as a refusal, unless it only says a fetch failed (then it is
    /// [`Self::Unreachable`]: the one place that tells the two apart, for every tough call).
    fn tuf<E: std::error::Error + Send + Sync + 'static>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> Self {
        let context = context.into();
        move |source| {
            let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&source);
            while let Some(err) = next {
                if err.is::<http_transport::FetchError>() {
                    return Self::Unreachable {
                        context,
                        source: Box::new(source),
                    };
                }
                next = err.source();
            }
            Self::Tuf {
                context,
                source: Box::new(source),
            }
        }
    }
}

/// Lifetimes of the four roles' metadata: long for the offline-signed roles, short for the timestamp
/// the region re-signs, so that a frozen mirror is noticed within days (the TUF freeze attack).
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// `root.json`.
    pub root: jiff::SignedDuration,
    /// `targets.json`.
    pub targets: jiff::SignedDuration,
    /// `snapshot.json`.
    pub snapshot: jiff::SignedDuration,
    /// `timestamp.json`.
    pub timestamp: jiff::SignedDuration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        let day = jiff::SignedDuration::from_hours(24);
        Self {
            root: day * 365,
            targets: day * 180,
            snapshot: day * 180,
            timestamp: day * 7,
        }
    }
}

/// What sort of refusal an error is: the label of the agent's refusal counter and the first word
/// an operator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalKind {
    /// A signature is missing, made with an unknown key, or below the role's threshold.
    Signature,
    /// A target's or a metadata file's hash or length differs from what its signer wrote.
    Hash,
    /// Metadata older than what this node saw before (a rollback attack).
    Rollback,
    /// Metadata whose versions do not fit together (a mix-and-match attack).
    MixAndMatch,
    /// Metadata past its expiry when the release was discovered (a freeze attack).
    Expired,
    /// The system clock is behind the latest time this node has seen.
    Clock,
    /// Metadata or a bundle over a size limit (an endless-data attack).
    Size,
    /// A target name or bundle entry that would escape its directory.
    Path,
    /// A bundle that is truncated or not a bundle.
    Bundle,
    /// A manifest that does not describe its signed targets.
    Manifest,
    /// Reading or writing a file failed: a local one, or fetching one from a repository online.
    Io,
    /// Metadata past its expiry, and a freshness waiver offered for it that does not hold.
    Waiver,
    /// Anything else TUF refused.
    Invalid,
}

impl RefusalKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signature => "signature",
            Self::Hash => "hash",
            Self::Rollback => "rollback",
            Self::MixAndMatch => "mix_and_match",
            Self::Expired => "expired",
            Self::Clock => "clock",
            Self::Size => "size",
            Self::Path => "path",
            Self::Bundle => "bundle",
            Self::Manifest => "manifest",
            Self::Io => "io",
            Self::Waiver => "waiver",
            Self::Invalid => "invalid",
        }
    }
}

impl ReleaseError {
    /// Which refusal this is. tough's error sits somewhere in the source chain (a hash mismatch
    /// surfaces while a target streams, wrapped in the transport's error); the first one found
    /// decides.
    pub fn refusal_kind(&self) -> RefusalKind {
        match self {
            Self::Io { .. }
            | Self::Unreachable { .. }
            | Self::Key { .. }
            | Self::ImageOutput { .. } => RefusalKind::Io,
            Self::Bundle { reason, .. } if reason.contains("limit") => RefusalKind::Size,
            Self::Bundle { reason, .. } if reason.contains("outside") => RefusalKind::Path,
            Self::Bundle { .. } => RefusalKind::Bundle,
            Self::Release(_) => RefusalKind::Manifest,
            Self::Waiver { .. } => RefusalKind::Waiver,
            Self::Tuf { source, .. } => first_tuf_refusal(source.as_ref()),
        }
    }
}

/// The refusal of the first tough error in `err`'s source chain.
fn first_tuf_refusal(err: &(dyn std::error::Error + 'static)) -> RefusalKind {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(tough) = err.downcast_ref::<tough::error::Error>() {
            return tuf_refusal(tough);
        }
        next = err.source();
    }
    RefusalKind::Invalid
}

fn tuf_refusal(err: &tough::error::Error) -> RefusalKind {
    use tough::error::Error as E;
    match err {
        E::VerifyMetadata { .. }
        | E::VerifyTrustedMetadata { .. }
        | E::VerifyRoleMetadata { .. }
        | E::KeyRejected { .. }
        | E::KeysNotFoundInRoot { .. }
        | E::NoRoleKeysinRoot { .. } => RefusalKind::Signature,
        E::HashMismatch { .. } | E::TimestampMetaLength { .. } => RefusalKind::Hash,
        E::OlderMetadata { .. }
        | E::OlderSnapshotInTimestamp { .. }
        | E::SnapshotRoleRollback { .. } => RefusalKind::Rollback,
        E::VersionMismatch { .. }
        | E::MetaMissing { .. }
        | E::MissingSnapshotMeta { .. }
        | E::SnapshotTargetsMetaMissing { .. }
        | E::SnapshotRoleMissing { .. } => RefusalKind::MixAndMatch,
        E::ExpiredMetadata { .. } => RefusalKind::Expired,
        E::SystemTimeSteppedBackward { .. } => RefusalKind::Clock,
        E::MaxSizeExceeded { .. } | E::MaxUpdatesExceeded { .. } => RefusalKind::Size,
        E::UnsafeTargetNameDotDot { .. }
        | E::UnsafeTargetNameEmpty { .. }
        | E::UnsafeTargetNameSlash { .. }
        | E::SaveTargetUnsafePath { .. }
        | E::InvalidTargetName { .. } => RefusalKind::Path,
        E::Transport { source, .. } => {
            std::error::Error::source(source).map_or(RefusalKind::Invalid, first_tuf_refusal)
        }
        _ => RefusalKind::Invalid,
    }
}
