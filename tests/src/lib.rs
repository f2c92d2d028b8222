//! Harness for SCS Edge's end-to-end tests and benchmarks.
//!
//! It starts what the tests need itself — virtlogd and libvirtd, the tiny test guest image, the agent
//! binary with its own state directory — and offers waits on observable conditions (a status in the
//! store, a line on a serial console, a domain state in libvirt) instead of sleeps.
#![allow(clippy::missing_panics_doc, clippy::print_stderr)]

pub mod agent;
pub mod bench;
pub mod cloud;
pub mod fleet_sim;
pub mod guest;
/// The QEMU lab (crate `scs-edge-lab`, folder `qemu/`), for the image tests and benchmark.
pub use scs_edge_lab as lab;
pub mod libvirt;
pub mod node;
pub mod npm;
pub mod oidc;
pub mod ovn;
pub mod postgres;
pub mod region;
pub mod release_desk;
pub mod site;
pub mod update_lab;
pub mod wait;

use std::path::PathBuf;

/// Directory for cross-process harness state (locks, daemon pid files and logs).
pub fn run_dir() -> PathBuf {
    let dir = PathBuf::from("/run/scs-edge-tests");
    std::fs::create_dir_all(&dir).expect("create /run/scs-edge-tests");
    dir
}

/// Holds an exclusive lock on a file in [`run_dir`] until dropped; serialises set-up across the test
/// processes nextest runs in parallel.
pub struct RunLock(#[allow(dead_code)] std::fs::File);

impl RunLock {
    /// Blocks until the lock named `name` is held.
    pub fn acquire(name: &str) -> Self {
        let path = run_dir().join(format!("{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .expect("open lock");
        file.lock().expect("lock");
        Self(file)
    }
}

pub use scs_edge_lab::{free_port, target_dir};

/// A fresh directory QEMU (running as `libvirt-qemu`) can traverse.
pub fn scratch_dir(label: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let base = target_dir().join("scs-edge-tests");
    std::fs::create_dir_all(&base).expect("create scratch base");
    for dir in [target_dir(), base.clone()] {
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("{label}-"))
        .tempdir_in(&base)
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    dir
}

/// Keeps the logs under a scratch directory (serial consoles, QEMU's) when the test panics. The
/// scratch directory itself goes with its `TempDir` — a lab test's disks are gigabytes on a shared
/// CI disk — and without the consoles a failure under TCG cannot be read. Declare it after the
/// `TempDir` so that it runs first.
pub struct LogsOnFailure {
    dir: PathBuf,
    label: String,
}

impl LogsOnFailure {
    /// Guards the logs under `dir`, kept as `target/scs-edge-tests/failed/<label>-<pid>/`.
    pub fn new(dir: &std::path::Path, label: &str) -> Self {
        Self {
            dir: dir.to_path_buf(),
            label: label.to_owned(),
        }
    }

    fn copy_logs(from: &std::path::Path, to: &std::path::Path) {
        let Ok(entries) = std::fs::read_dir(from) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                Self::copy_logs(&path, &to.join(entry.file_name()));
            } else if path.extension().is_some_and(|ext| ext == "log") {
                let _ = std::fs::create_dir_all(to);
                let _ = std::fs::copy(&path, to.join(entry.file_name()));
            }
        }
    }
}

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let kept = target_dir().join("scs-edge-tests/failed").join(format!(
            "{}-{}",
            self.label,
            std::process::id()
        ));
        Self::copy_logs(&self.dir, &kept);
        eprintln!("the failed test's logs are kept in {}", kept.display());
    }
}
