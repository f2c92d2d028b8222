//! A release manager's desk for the region tests: the fleet's keys and a repository signed with the
//! release crate, and the `[releases]` section of a region that trusts them. Releases reach the
//! region only the way they do in production — `scs-edge-region release publish` of a signed
//! repository — so a rollout test rolls out releases that passed the same verification.

use scs_edge_release::Lifetimes;
use scs_edge_release::keys::{self, KeySet};
use scs_edge_release::repository::Repository;
use scs_edge_release::test_support;
use std::path::PathBuf;

/// A release manager's keys and repository.
pub struct Desk {
    /// Everything the desk writes: keys, repository, images, copies.
    pub dir: tempfile::TempDir,
    /// The fleet's signing keys.
    pub keys: KeySet,
    /// The signed repository an operator publishes.
    pub repository: Repository,
    /// The fleet's root of trust (`root.json`).
    pub root: PathBuf,
}

impl Desk {
    /// Fresh keys and an empty repository.
    pub fn new(runtime: &tokio::runtime::Runtime) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = KeySet::new(dir.path().join("keys"));
        let repository = Repository::new(dir.path().join("repository"));
        let root = runtime
            .block_on(keys::init(
                &keys,
                &repository.metadata_dir(),
                &Lifetimes::default(),
                jiff::Timestamp::now(),
            ))
            .expect("init");
        Self {
            dir,
            keys,
            repository,
            root,
        }
    }

    /// Builds a tiny image of `version` and signs it into the repository.
    pub fn sign(&self, runtime: &tokio::runtime::Runtime, version: &str) {
        runtime.block_on(test_support::sign(
            &self.keys,
            &self.repository,
            &self.dir.path().join("image"),
            version,
        ));
    }

    /// The repository copied, as a release manager would hand over a stale or altered copy.
    pub fn copy(&self, name: &str) -> PathBuf {
        let to = self.dir.path().join(name);
        test_support::copy_folder(self.repository.dir(), &to);
        to
    }

    /// The `[releases]` section of a region that trusts this desk's root and holds its timestamp
    /// key (copied into a folder of its own, as a region host holds only that key).
    pub fn region_config(&self) -> String {
        let keys = self.dir.path().join("region-keys");
        std::fs::create_dir_all(&keys).expect("key folder");
        std::fs::copy(
            self.dir.path().join("keys/timestamp.pk8"),
            keys.join("timestamp.pk8"),
        )
        .expect("timestamp key");
        format!(
            "[releases]\nroot_of_trust = \"{}\"\ntimestamp_key_dir = \"{}\"\n",
            self.root.display(),
            keys.display()
        )
    }

    /// The repository's folder, as `release publish` takes it.
    pub fn repository_arg(&self) -> String {
        self.repository.dir().display().to_string()
    }
}
