//! The freshness waiver: an operator-signed, time-bounded exception for a site that can never receive
//! fresh TUF metadata — a bundle that travels longer than the timestamp lives, a site whose only
//! link is a courier. It is never a switch: it names one site, runs at most
//! [`MAX_WAIVER_LIFETIME`], and waives the expiry of the timestamp, snapshot and targets metadata
//! alone. Signatures, thresholds, role versions that never go backwards, the last known time, hashes,
//! lengths, size limits and target paths still hold: under a waiver tough loads with
//! `ExpirationEnforcement::Unsafe`, which skips its expiry checks and nothing else. The root's expiry
//! is not waived: every bundle carries the newest root, so a root past its date is the root key
//! holders' to renew, and a document signed with the (lesser) targets key must not outlast it.
//!
//! The document is shaped like TUF metadata —
//! `{"signed": {"_type": "scs-edge-freshness-waiver", "site", "issued", "expires", "reason"},
//! "signatures": [{"keyid", "sig"}]}` — and signed with the targets role's keys: the release
//! manager's offline keys, the ones whose signature makes a release a release, not the online
//! timestamp key whose freshness it stands in for. A node checks it against the targets role of the
//! root the repository was verified with, so a rotation that replaces the targets key retires every
//! waiver signed with the old one.
//!
//! tough does the cryptography: [`WaiverTerms`] implements tough's `Role` as a targets-keyed role, so
//! `SignedRole::new` signs it and `Root::verify_role` checks it over the same canonical JSON
//! (olpc-cjson) as the metadata itself. tough keeps `Key::verify` to itself; `verify_role` is its
//! public way to a signature check.

use crate::ReleaseError;
use crate::keys::{KeySet, latest_root, read_root};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::io::Read as _;
use std::num::NonZeroU64;
use std::path::Path;
use tough::editor::signed::SignedRole;
use tough::key_source::KeySource;
use tough::schema::{KeyHolder, Role, RoleType, Root, Signed};

/// The `_type` of a waiver document, so that no TUF metadata passes for a waiver or the reverse.
pub const WAIVER_TYPE: &str = "scs-edge-freshness-waiver";

/// The name of a waiver in a bundle (beside `metadata/` and `targets/`) and on an update stick.
pub const WAIVER_FILE: &str = "waiver.json";

/// The longest a waiver may run. While it runs, the site cannot tell a frozen or withheld repository
/// from a current one (the freeze attack expiry exists for), so the release manager has to come back
/// with a new decision at least once a quarter; a longer waiver is refused on the node, not only by
/// the tool that issues it.
pub const MAX_WAIVER_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 90);

/// A waiver document above this is refused unread (a real one is a few hundred bytes).
pub const MAX_WAIVER_BYTES: u64 = 64 << 10;

/// What a waiver grants, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaiverTerms {
    #[serde(rename = "_type")]
    kind: String,
    /// The one site it is for: a node accepts it only when this is its own site name exactly.
    pub site: String,
    /// From when it holds.
    pub issued: Timestamp,
    /// Until when it holds (exclusive).
    pub expires: Timestamp,
    /// Why the site cannot receive fresh metadata: what the node logs and records when it uses it.
    pub reason: String,
}

impl WaiverTerms {
    /// Terms for `site`, holding from `issued` until `expires`, both to the whole second (TUF
    /// timestamps carry no fractions, and the signature covers their text).
    pub fn new(
        site: impl Into<String>,
        issued: Timestamp,
        expires: Timestamp,
        reason: impl Into<String>,
    ) -> Result<Self, WaiverError> {
        let whole = |at: Timestamp| {
            Timestamp::from_second(at.as_second()).map_err(|err| WaiverError::Malformed {
                reason: format!("{at} is out of range: {err}"),
            })
        };
        Ok(Self {
            kind: WAIVER_TYPE.to_owned(),
            site: site.into(),
            issued: whole(issued)?,
            expires: whole(expires)?,
            reason: reason.into(),
        })
    }

    /// The rules that need no signature: the type, a site and a reason at all, and a lifetime
    /// within [`MAX_WAIVER_LIFETIME`].
    fn check_shape(&self) -> Result<(), WaiverError> {
        let malformed = |reason: &str| {
            Err(WaiverError::Malformed {
                reason: reason.to_owned(),
            })
        };
        if self.kind != WAIVER_TYPE {
            return malformed(&format!("_type is {:?}, not {WAIVER_TYPE:?}", self.kind));
        }
        if self.site.trim().is_empty() {
            return malformed("it names no site");
        }
        if self.reason.trim().is_empty() {
            return malformed("it gives no reason");
        }
        if self.expires <= self.issued {
            return malformed("it expires before it is issued");
        }
        if self.expires.duration_since(self.issued) > MAX_WAIVER_LIFETIME {
            return Err(WaiverError::TooLong {
                issued: self.issued,
                expires: self.expires,
            });
        }
        Ok(())
    }
}

/// A targets-keyed role for tough's signing and verification; a waiver is no TUF metadata and
/// tough never loads one as such.
impl Role for WaiverTerms {
    const TYPE: RoleType = RoleType::Targets;

    fn expires(&self) -> Timestamp {
        self.expires
    }

    fn version(&self) -> NonZeroU64 {
        NonZeroU64::MIN
    }

    fn filename(&self, _consistent_snapshot: bool) -> String {
        WAIVER_FILE.to_owned()
    }
}

/// Why a waiver does not hold. Each is a refusal of kind `waiver`; the message names the rule.
#[derive(Debug, thiserror::Error)]
pub enum WaiverError {
    /// Not a waiver document: unparsable, too large, the wrong `_type`, missing or empty fields.
    #[error("malformed waiver: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The node knows no site name to compare the waiver's with.
    #[error("this node has no site name, so no waiver can name it")]
    NoSite,
    /// The waiver names another site.
    #[error("the waiver is for site {waived:?}, not for this node's site {site:?}")]
    WrongSite {
        /// The site the waiver names.
        waived: String,
        /// This node's site.
        site: String,
    },
    /// The node's clock is before the waiver's `issued`.
    #[error("the waiver holds only from {issued} (now {now})")]
    NotYetValid {
        /// Its start.
        issued: Timestamp,
        /// The node's time.
        now: Timestamp,
    },
    /// The waiver itself has expired.
    #[error("the waiver expired at {expires} (now {now})")]
    Expired {
        /// Its end.
        expires: Timestamp,
        /// The node's time.
        now: Timestamp,
    },
    /// The waiver runs longer than [`MAX_WAIVER_LIFETIME`].
    #[error(
        "the waiver runs from {issued} to {expires}, longer than the {} days a waiver may run",
        MAX_WAIVER_LIFETIME.as_hours() / 24
    )]
    TooLong {
        /// Its start.
        issued: Timestamp,
        /// Its end.
        expires: Timestamp,
    },
    /// The root the repository was verified with has expired itself.
    #[error(
        "the root expired at {expires} (now {now}); a waiver does not cover the root, only a root signed anew with the root keys renews it"
    )]
    RootExpired {
        /// The root's expiry.
        expires: Timestamp,
        /// The node's time.
        now: Timestamp,
    },
    /// Not signed by a threshold of the targets role's keys: another key, an altered document, an
    /// altered signature.
    #[error(
        "the waiver is not signed by a threshold of the targets keys of the root this repository was verified with: {source}"
    )]
    Signature {
        /// tough's verdict (boxed: it carries a backtrace).
        source: Box<tough::schema::Error>,
    },
}

/// A signed waiver document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiver(Signed<WaiverTerms>);

impl Waiver {
    /// Reads a waiver document: at most [`MAX_WAIVER_BYTES`], valid JSON of the waiver's shape, of
    /// the waiver's `_type`, naming a site and a reason, running at most [`MAX_WAIVER_LIFETIME`].
    /// Neither the signatures nor the time are checked here.
    pub fn parse(document: &[u8]) -> Result<Self, WaiverError> {
        if document.len() as u64 > MAX_WAIVER_BYTES {
            return Err(WaiverError::Malformed {
                reason: format!("above the {MAX_WAIVER_BYTES}-byte limit"),
            });
        }
        let signed: Signed<WaiverTerms> =
            serde_json::from_slice(document).map_err(|err| WaiverError::Malformed {
                reason: err.to_string(),
            })?;
        signed.signed.check_shape()?;
        Ok(Self(signed))
    }

    /// What it grants.
    pub fn terms(&self) -> &WaiverTerms {
        &self.0.signed
    }

    /// The document, as written to a file.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(&self.0).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Whether it holds for a node of `site` at `now`: the site matches exactly and
    /// `issued <= now < expires`.
    pub fn check_terms(&self, site: Option<&str>, now: Timestamp) -> Result<(), WaiverError> {
        let terms = self.terms();
        let site = site
            .filter(|site| !site.is_empty())
            .ok_or(WaiverError::NoSite)?;
        if terms.site != site {
            return Err(WaiverError::WrongSite {
                waived: terms.site.clone(),
                site: site.to_owned(),
            });
        }
        if now < terms.issued {
            return Err(WaiverError::NotYetValid {
                issued: terms.issued,
                now,
            });
        }
        if now >= terms.expires {
            return Err(WaiverError::Expired {
                expires: terms.expires,
                now,
            });
        }
        Ok(())
    }

    /// Whether `root`, the root a repository was verified with, may be relied on under a waiver
    /// at `now`: it has not expired itself.
    pub fn check_root(root: &Signed<Root>, now: Timestamp) -> Result<(), WaiverError> {
        let expires = root.signed.expires;
        if now >= expires {
            return Err(WaiverError::RootExpired { expires, now });
        }
        Ok(())
    }

    /// Whether a threshold of `root`'s targets keys signed it.
    pub fn check_signatures(&self, root: &Signed<Root>) -> Result<(), WaiverError> {
        root.signed
            .verify_role(&self.0)
            .map_err(|source| WaiverError::Signature {
                source: Box::new(source),
            })
    }
}

/// Reads the waiver document in `path`, at most one byte beyond [`MAX_WAIVER_BYTES`] (enough for
/// [`Waiver::parse`] to refuse a larger one without reading it whole).
pub fn read_document(path: &Path) -> Result<Vec<u8>, ReleaseError> {
    let file = std::fs::File::open(path).map_err(ReleaseError::io(path))?;
    let mut document = Vec::new();
    file.take(MAX_WAIVER_BYTES + 1)
        .read_to_end(&mut document)
        .map_err(ReleaseError::io(path))?;
    Ok(document)
}

/// Signs `terms` with those of `keys` that `root` lists for the targets role. Checks nothing about
/// the terms: [`issue`] is the release manager's way in; this one also serves tests that need a
/// waiver a node must refuse.
pub async fn sign(
    terms: WaiverTerms,
    root: &Root,
    keys: &[Box<dyn KeySource>],
) -> Result<Waiver, ReleaseError> {
    let signed = SignedRole::new(
        terms,
        &KeyHolder::Root(root.clone()),
        keys,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .await
    .map_err(ReleaseError::tuf("signing the waiver"))?;
    Ok(Waiver(signed.signed().clone()))
}

/// Issues a waiver on `terms` with the targets key of `keys`, for the targets role of the newest
/// root in `metadata_dir` (the one nodes verify the repository with once they followed the chain).
/// Refuses terms a node would refuse for their shape, a lifetime above [`MAX_WAIVER_LIFETIME`]
/// among them.
pub async fn issue(
    keys: &KeySet,
    metadata_dir: &Path,
    terms: WaiverTerms,
) -> Result<Waiver, ReleaseError> {
    let refused = |source| ReleaseError::Waiver {
        context: "issuing a waiver".into(),
        source,
    };
    terms.check_shape().map_err(refused)?;
    let (_, root_path) = latest_root(metadata_dir)?;
    let root = read_root(&root_path)?;
    let waiver = sign(terms, &root.signed, &keys.sources(&[RoleType::Targets])?).await?;
    waiver.check_signatures(&root).map_err(refused)?;
    Ok(waiver)
}

/// The waiver in `path`, checked as a node would check its shape and its signatures against the
/// newest root in `metadata_dir` — for the release tool, before it ships one in a bundle.
pub fn read_for_export(path: &Path, metadata_dir: &Path) -> Result<Waiver, ReleaseError> {
    let refused = |source| ReleaseError::Waiver {
        context: format!("waiver {}", path.display()),
        source,
    };
    let waiver = Waiver::parse(&read_document(path)?).map_err(refused)?;
    let (_, root_path) = latest_root(metadata_dir)?;
    waiver
        .check_signatures(&read_root(&root_path)?)
        .map_err(refused)?;
    Ok(waiver)
}
