//! The tiny test guest: a bootable raw disk with the Debian kernel and a busybox initramfs that prints
//! its config drive's user data on the serial console (see `guest/build-guest-image.sh`).

use crate::{RunLock, target_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Lines the guest prints.
pub mod marker {
    /// Printed once per boot.
    pub const BOOT: &str = "SCS-GUEST-BOOT";
    /// Printed after the config drive was read.
    pub const READY: &str = "SCS-GUEST-READY";
    /// Printed when the ACPI power button was pressed (graceful shutdown).
    pub const POWER_BUTTON: &str = "SCS-GUEST-POWER-BUTTON";
    /// Brackets the user data.
    pub const USER_DATA_BEGIN: &str = "SCS-GUEST-USER-DATA-BEGIN";
    /// Brackets the user data.
    pub const USER_DATA_END: &str = "SCS-GUEST-USER-DATA-END";
    /// Brackets meta_data.json.
    pub const META_DATA_BEGIN: &str = "SCS-GUEST-META-DATA-BEGIN";
    /// Brackets meta_data.json.
    pub const META_DATA_END: &str = "SCS-GUEST-META-DATA-END";
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/build-guest-image.sh")
}

/// Builds the guest image once per script version and returns its path.
pub fn image() -> PathBuf {
    let script = script();
    let text = std::fs::read(&script).expect("read guest script");
    let version = text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let out = target_dir()
        .join("scs-edge-tests")
        .join(format!("guest-{version:016x}.raw"));
    let _lock = RunLock::acquire("guest-image");
    if !out.exists() {
        std::fs::create_dir_all(out.parent().expect("parent")).expect("mkdir");
        let status = Command::new("bash")
            .arg(&script)
            .arg(&out)
            .status()
            .expect("run guest build script");
        assert!(
            status.success(),
            "building the test guest failed (needs linux-image-amd64 busybox-static syslinux mtools dosfstools cpio)"
        );
    }
    out
}

/// The serial console text with carriage returns removed.
pub fn console_text(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).replace('\r', "")
}

/// The text between two marker lines, from the last occurrence.
pub fn between(console: &str, begin: &str, end: &str) -> Option<String> {
    let start = console.rfind(begin)? + begin.len();
    let stop = console[start..].find(end)? + start;
    Some(console[start..stop].trim().to_owned())
}

/// How many times the guest booted according to its console.
pub fn boots(console: &str) -> usize {
    console.matches(marker::BOOT).count()
}
