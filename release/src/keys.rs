//! The four TUF role keys and the root of trust they are listed in.
//!
//! A key set is a directory with one Ed25519 key per role (`root.pk8`, `targets.pk8`, `snapshot.pk8`,
//! `timestamp.pk8`: PKCS#8, mode 0600, the format tough's `LocalKeySource` reads). The root and targets
//! keys belong offline; the timestamp key is the one the region holds to re-sign freshness. The
//! signed `N.root.json` files live in the repository's metadata folder; the newest one is the copy
//! baked into the image as the root of trust. A node that trusts an older root follows the chain,
//! because every rotation is signed by the old root key as well as the new one.

use crate::{Lifetimes, ReleaseError};
use std::collections::HashMap;
use std::io::Write as _;
use std::num::NonZeroU64;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use tough::editor::signed::SignedRole;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root, Signed};
use tough::sign::Sign as _;

/// The roles this repository uses (no delegations).
pub const ROLES: [RoleType; 4] = [
    RoleType::Root,
    RoleType::Targets,
    RoleType::Snapshot,
    RoleType::Timestamp,
];

/// A directory of role keys.
#[derive(Debug, Clone)]
pub struct KeySet {
    dir: PathBuf,
}

impl KeySet {
    /// The key set in `dir` (which need not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The file holding `role`'s current key.
    pub fn key_path(&self, role: RoleType) -> PathBuf {
        self.dir.join(format!("{role}.pk8"))
    }

    /// Whether the timestamp key is here: all the region holds, checked when it starts rather than
    /// at its first publication.
    pub fn check_timestamp_key(&self) -> Result<(), ReleaseError> {
        self.sources(&[RoleType::Timestamp]).map(|_| ())
    }

    /// Signing sources for `roles`, each checked to exist so that a missing key is named here rather
    /// than as tough's "signing keys not found".
    pub fn sources(&self, roles: &[RoleType]) -> Result<Vec<Box<dyn KeySource>>, ReleaseError> {
        roles
            .iter()
            .map(|role| {
                let path = self.key_path(*role);
                if path.is_file() {
                    Ok(Box::new(LocalKeySource { path }) as Box<dyn KeySource>)
                } else {
                    Err(ReleaseError::Key {
                        path,
                        reason: format!("no {role} key here"),
                    })
                }
            })
            .collect()
    }

    /// The public half of `role`'s key, as TUF lists it.
    fn public_key(&self, role: RoleType) -> Result<tough::schema::key::Key, ReleaseError> {
        let path = self.key_path(role);
        let bytes = std::fs::read(&path).map_err(ReleaseError::io(&path))?;
        let pair = tough::sign::parse_keypair(&bytes).map_err(|err| ReleaseError::Key {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        Ok(pair.tuf_key())
    }

    /// Makes a new Ed25519 key for `role` at [`Self::key_path`]; an existing key is never replaced.
    fn generate(&self, role: RoleType) -> Result<(), ReleaseError> {
        let path = self.key_path(role);
        std::fs::create_dir_all(&self.dir).map_err(ReleaseError::io(&self.dir))?;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let document =
            aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| {
                ReleaseError::Key {
                    path: path.clone(),
                    reason: "the system random source failed".into(),
                }
            })?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(ReleaseError::io(&path))?;
        file.write_all(document.as_ref())
            .and_then(|()| file.sync_all())
            .map_err(ReleaseError::io(&path))
    }
}

/// The newest `N.root.json` in `metadata_dir`: its version and path.
pub fn latest_root(metadata_dir: &Path) -> Result<(u64, PathBuf), ReleaseError> {
    let entries = std::fs::read_dir(metadata_dir).map_err(ReleaseError::io(metadata_dir))?;
    let mut newest: Option<(u64, PathBuf)> = None;
    for entry in entries {
        let entry = entry.map_err(ReleaseError::io(metadata_dir))?;
        let name = entry.file_name();
        let Some(version) = name
            .to_str()
            .and_then(|name| name.strip_suffix(".root.json"))
            .and_then(|version| version.parse::<u64>().ok())
        else {
            continue;
        };
        if newest.as_ref().is_none_or(|(best, _)| version > *best) {
            newest = Some((version, entry.path()));
        }
    }
    newest.ok_or_else(|| {
        ReleaseError::Release(format!(
            "no N.root.json in {}: `scs-edge-release init` makes the first",
            metadata_dir.display()
        ))
    })
}

pub(crate) fn read_root(path: &Path) -> Result<Signed<Root>, ReleaseError> {
    let bytes = std::fs::read(path).map_err(ReleaseError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|err| {
        ReleaseError::Release(format!("{} is not a signed root: {err}", path.display()))
    })
}

/// Creates the key set and root version 1 (signed by the new root key) in `metadata_dir`; refuses
/// when either exists already, so a second `init` can never orphan a fleet's root of trust.
pub async fn init(
    keys: &KeySet,
    metadata_dir: &Path,
    lifetimes: &Lifetimes,
    now: jiff::Timestamp,
) -> Result<PathBuf, ReleaseError> {
    if latest_root(metadata_dir).is_ok() {
        return Err(ReleaseError::Release(format!(
            "{} already holds a root: rotate it instead",
            metadata_dir.display()
        )));
    }
    for role in ROLES {
        keys.generate(role)?;
    }
    let mut root = Root {
        spec_version: "1.0.0".into(),
        consistent_snapshot: true,
        version: NonZeroU64::MIN,
        expires: expires(now, lifetimes.root)?,
        keys: HashMap::new(),
        roles: HashMap::new(),
        _extra: HashMap::new(),
    };
    for role in ROLES {
        list_key(&mut root, role, keys.public_key(role)?)?;
    }
    let signed = SignedRole::new(
        root.clone(),
        &KeyHolder::Root(root),
        &keys.sources(&[RoleType::Root])?,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .await
    .map_err(ReleaseError::tuf("signing root version 1"))?;
    write_root(&signed, metadata_dir).await
}

/// Replaces the root key: root version N+1 lists a new root key (the old one is kept beside it as
/// `root.<N>.pk8`) and is signed by both, so nodes that trust version N accept N+1. The other roles'
/// keys stay; rotate them by hand-editing is not offered.
pub async fn rotate_root(
    keys: &KeySet,
    metadata_dir: &Path,
    lifetimes: &Lifetimes,
    now: jiff::Timestamp,
) -> Result<PathBuf, ReleaseError> {
    let (version, path) = latest_root(metadata_dir)?;
    let old = read_root(&path)?.signed;
    let old_key = keys.key_path(RoleType::Root);
    let retired = keys.dir.join(format!("root.{version}.pk8"));
    std::fs::rename(&old_key, &retired).map_err(ReleaseError::io(&old_key))?;
    keys.generate(RoleType::Root)?;

    let mut new = old.clone();
    new.version = NonZeroU64::new(version + 1).unwrap_or(NonZeroU64::MAX);
    new.expires = expires(now, lifetimes.root)?;
    if let Some(role_keys) = new.roles.get(&RoleType::Root) {
        for id in role_keys.keyids.clone() {
            new.keys.remove(&id);
        }
    }
    list_key(&mut new, RoleType::Root, keys.public_key(RoleType::Root)?)?;

    let rng = aws_lc_rs::rand::SystemRandom::new();
    let by_new = SignedRole::new(
        new.clone(),
        &KeyHolder::Root(new.clone()),
        &keys.sources(&[RoleType::Root])?,
        &rng,
    )
    .await
    .map_err(ReleaseError::tuf("signing the new root with the new key"))?;
    let by_old = SignedRole::new(
        new.clone(),
        &KeyHolder::Root(old),
        &[Box::new(LocalKeySource { path: retired }) as Box<dyn KeySource>],
        &rng,
    )
    .await
    .map_err(ReleaseError::tuf("signing the new root with the old key"))?;
    let cross_signed = by_new
        .add_old_signatures(by_old.signed().signatures.clone())
        .map_err(ReleaseError::tuf("cross-signing the new root"))?;
    write_root(&cross_signed, metadata_dir).await
}

/// Sets `role`'s only key (threshold 1) in `root`.
fn list_key(
    root: &mut Root,
    role: RoleType,
    key: tough::schema::key::Key,
) -> Result<(), ReleaseError> {
    let id = key
        .key_id()
        .map_err(ReleaseError::tuf(format!("the {role} key's id")))?;
    root.keys.insert(id.clone(), key);
    root.roles.insert(
        role,
        RoleKeys {
            keyids: vec![id],
            threshold: NonZeroU64::MIN,
            _extra: HashMap::new(),
        },
    );
    Ok(())
}

async fn write_root(
    signed: &SignedRole<Root>,
    metadata_dir: &Path,
) -> Result<PathBuf, ReleaseError> {
    signed
        .write(metadata_dir, true)
        .await
        .map_err(ReleaseError::tuf("writing root.json"))?;
    Ok(latest_root(metadata_dir)?.1)
}

/// `now + lifetime`, whole seconds (TUF timestamps carry no fractions).
pub(crate) fn expires(
    now: jiff::Timestamp,
    lifetime: jiff::SignedDuration,
) -> Result<jiff::Timestamp, ReleaseError> {
    let at = now
        .checked_add(lifetime)
        .map_err(|err| ReleaseError::Release(format!("expiry out of range: {err}")))?;
    jiff::Timestamp::from_second(at.as_second())
        .map_err(|err| ReleaseError::Release(format!("expiry out of range: {err}")))
}
