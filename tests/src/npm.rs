//! The Node.js packages the tests run (the OIDC provider, Playwright). `scripts/install-deps.sh`
//! installs them with `npm ci` from each folder's lock file; the tests only check that it did, so that
//! no two test processes race to install into one `node_modules`.

use std::path::{Path, PathBuf};

/// The folder under `tests/` holding `package-lock.json`, with its packages installed: npm writes
/// `node_modules/.package-lock.json` last, so its being newer than the lock file means an install of
/// this lock file that finished. Panics naming the command that installs them otherwise.
pub fn installed(folder: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let modified = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|meta| meta.modified())
            .ok()
    };
    let lock = modified(&dir.join("package-lock.json"))
        .unwrap_or_else(|| panic!("{}/package-lock.json is missing", dir.display()));
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    assert!(
        installed.is_some_and(|installed| installed >= lock),
        "the npm packages of {} are missing or older than its package-lock.json: `make deps` \
         (scripts/install-deps.sh) installs them",
        dir.display()
    );
    dir
}
