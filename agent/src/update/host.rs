//! The host side effects of an update, each behind a trait: writing the inactive slot
//! (`systemd-sysupdate`), rebooting (systemd over D-Bus), marking a boot entry bad
//! (`systemd-bless-boot`), stopping workloads before a reboot, and what the health gate looks at.

use futures::future::BoxFuture;
use semver::Version;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// Writes a staged release into the inactive A/B slot.
pub trait Sysupdate: Send + Sync {
    /// Installs `version` from the artifacts in `source`; returns once every transfer is written.
    fn install(&self, source: &Path, version: &Version) -> Result<(), String>;
    /// What the node holds of `version` now, reading the slots and the boot entries.
    fn slot(&self, version: &Version) -> Result<SlotState, String>;
}

/// An installed version as the boot loader will see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Every part is there and its boot entry has tries left (or no counter).
    Bootable,
    /// Every part is there, but its boot entry used up its tries.
    TriesExhausted,
    /// Not there, or not whole (a power cut while the boot loader renamed its entry, say).
    Missing,
}

/// Reboots the node.
pub trait Power: Send + Sync {
    /// Asks for a clean reboot (units stopped in order); returns once it is queued.
    fn reboot(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// The boot loader's view of the running boot entry.
pub trait BootEntry: Send + Sync {
    /// Marks the running entry bad, so the boot loader falls back to the previous one.
    fn mark_bad(&self) -> Result<(), String>;
}

/// Stops the node's workloads cleanly before a reboot.
pub trait Drain: Send + Sync {
    /// Stops every running server (ACPI shutdown; powered off after `timeout`) without changing
    /// what anyone asked for, and returns the servers that were ACTIVE before.
    fn stop_workloads(&self, timeout: Duration) -> BoxFuture<'_, Result<Vec<Uuid>, String>>;
}

/// `systemd-sysupdate` with the image's transfer definitions, fed from a staging directory.
#[derive(Debug, Clone)]
pub struct SystemdSysupdate {
    /// The binary.
    pub program: PathBuf,
}

impl Default for SystemdSysupdate {
    fn default() -> Self {
        Self {
            program: PathBuf::from("/usr/lib/systemd/systemd-sysupdate"),
        }
    }
}

impl SystemdSysupdate {
    fn run(&self, source: &Path, args: &[&str]) -> Result<String, String> {
        let source = format!("--transfer-source={}", source.display());
        let mut all: Vec<&std::ffi::OsStr> = vec![source.as_ref(), "--json=short".as_ref()];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        crate::system::tool::run(&self.program.to_string_lossy(), &all)
    }
}

impl Sysupdate for SystemdSysupdate {
    fn install(&self, source: &Path, version: &Version) -> Result<(), String> {
        let staged_uki = source.join(format!("scs-edge_{version}.efi"));
        let version = version.to_string();
        // A power cut during an earlier write can leave the UKI's final name on the ESP (FAT has
        // no journal) with no bytes behind it; sysupdate then counts it as installed and systemd-boot
        // skips it. So the entry is compared with the staged file, and a mismatch written again once.
        for _ in 0..2 {
            self.run(source, &["update", &version])?;
            // `update` says little; `list <version>` says whether every transfer has its instance.
            let listing = self.run(source, &["list", &version])?;
            installed_in_listing(&listing, &version)?;
            let Some(entry) = boot_entry_in_listing(&listing) else {
                return Err(format!(
                    "systemd-sysupdate lists no boot entry for {version}: {listing}"
                ));
            };
            if same_bytes(&entry, &staged_uki)? {
                return Ok(());
            }
            tracing::warn!(entry = %entry.display(), "the boot entry on the ESP differs from the staged UKI; writing it again");
            std::fs::remove_file(&entry).map_err(|err| format!("{}: {err}", entry.display()))?;
        }
        Err(format!(
            "the boot entry of {version} on the ESP still differs from the staged UKI after writing it again"
        ))
    }

    fn slot(&self, version: &Version) -> Result<SlotState, String> {
        // The definitions insist on a source; an empty one lists only what is installed.
        let empty = std::env::temp_dir().join("scs-edge-sysupdate-empty-source");
        std::fs::create_dir_all(&empty).map_err(|err| err.to_string())?;
        match self.run(&empty, &["list", &version.to_string()]) {
            Ok(listing) => slot_in_listing(&listing),
            Err(err) if err.contains("not found") => Ok(SlotState::Missing),
            Err(err) => Err(err),
        }
    }
}

/// The UKI file a `list <version>` listing names on the ESP.
pub fn boot_entry_in_listing(listing: &str) -> Option<PathBuf> {
    let json: serde_json::Value = serde_json::from_str(listing.trim()).ok()?;
    json.get("contents")?
        .as_array()?
        .iter()
        .filter_map(|item| item.get("path")?.as_str())
        .map(PathBuf::from)
        .find(|path| {
            path.to_string_lossy().contains("/EFI/Linux/")
                && path
                    .extension()
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("efi"))
        })
}

/// Whether two files hold the same bytes (SHA-256 of each).
pub fn same_bytes(a: &Path, b: &Path) -> Result<bool, String> {
    let digest = |path: &Path| -> Result<Vec<u8>, String> {
        use sha2::Digest as _;
        let mut file =
            std::fs::File::open(path).map_err(|err| format!("{}: {err}", path.display()))?;
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hasher)
            .map_err(|err| format!("{}: {err}", path.display()))?;
        Ok(hasher.finalize().to_vec())
    };
    Ok(digest(a)? == digest(b)?)
}

/// The slot state `systemd-sysupdate --json=short list <version>` describes: complete or not, and
/// the boot entry's `tries-left` when it carries a counter.
pub fn slot_in_listing(listing: &str) -> Result<SlotState, String> {
    let json: serde_json::Value = serde_json::from_str(listing.trim())
        .map_err(|err| format!("systemd-sysupdate list printed no JSON ({err}): {listing}"))?;
    let flag = |name: &str| json.get(name).and_then(serde_json::Value::as_bool);
    if flag("installed") != Some(true) || flag("incomplete") == Some(true) {
        return Ok(SlotState::Missing);
    }
    let exhausted = json
        .get("contents")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("tries-left").and_then(serde_json::Value::as_u64))
        .any(|tries| tries == 0);
    Ok(if exhausted {
        SlotState::TriesExhausted
    } else {
        SlotState::Bootable
    })
}

/// Whether `systemd-sysupdate --json=short list <version>` shows `version` installed and complete.
pub fn installed_in_listing(listing: &str, version: &str) -> Result<(), String> {
    let json: serde_json::Value = serde_json::from_str(listing.trim())
        .map_err(|err| format!("systemd-sysupdate list printed no JSON ({err}): {listing}"))?;
    let flag = |name: &str| json.get(name).and_then(serde_json::Value::as_bool);
    let named = json.get("version").and_then(serde_json::Value::as_str);
    if named != Some(version) {
        return Err(format!(
            "systemd-sysupdate lists another version: {listing}"
        ));
    }
    match (flag("installed"), flag("incomplete")) {
        (Some(true), Some(false) | None) => Ok(()),
        _ => Err(format!(
            "version {version} is not installed completely after the update: {listing}"
        )),
    }
}

/// systemd over the system bus (zbus): `reboot.target` started the way `systemctl reboot` does.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemdPower;

impl Power for SystemdPower {
    fn reboot(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async {
            let connection = zbus_systemd::zbus::Connection::system()
                .await
                .map_err(|err| format!("connecting to the system bus: {err}"))?;
            let manager = zbus_systemd::systemd1::ManagerProxy::new(&connection)
                .await
                .map_err(|err| format!("systemd's manager object: {err}"))?;
            manager
                .start_unit("reboot.target".into(), "replace-irreversibly".into())
                .await
                .map(drop)
                .map_err(|err| format!("starting reboot.target: {err}"))
        })
    }
}

/// `systemd-bless-boot bad`: renames the running UKI's counter to zero tries left.
#[derive(Debug, Clone)]
pub struct BlessBoot {
    /// The binary.
    pub program: PathBuf,
}

impl Default for BlessBoot {
    fn default() -> Self {
        Self {
            program: PathBuf::from("/usr/lib/systemd/systemd-bless-boot"),
        }
    }
}

impl BootEntry for BlessBoot {
    fn mark_bad(&self) -> Result<(), String> {
        crate::system::tool::run(&self.program.to_string_lossy(), &["bad".as_ref()]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_counts_only_a_complete_installed_instance_of_the_version() {
        assert!(
            installed_in_listing(
                r#"{"version":"1.1.0","installed":true,"incomplete":false,"available":true}"#,
                "1.1.0"
            )
            .is_ok()
        );
        let half = installed_in_listing(
            r#"{"version":"1.1.0","installed":true,"incomplete":true}"#,
            "1.1.0",
        );
        assert!(half.expect_err("half").contains("not installed completely"));
        assert!(installed_in_listing(r#"{"version":"1.0.0","installed":true}"#, "1.1.0").is_err());
        assert!(installed_in_listing("Failed to…", "1.1.0").is_err());
    }

    #[test]
    fn the_boot_entry_is_found_in_a_listing_and_compared_byte_for_byte() {
        let listing = r#"{"version":"1.1.0","installed":true,"incomplete":false,"contents":[{"type":"partition","path":"/proc/self/fd/3p5"},{"type":"regular-file","path":"/boot/EFI/Linux/scs-edge_1.1.0+3-0.efi","tries-left":3}]}"#;
        assert_eq!(
            boot_entry_in_listing(listing),
            Some(PathBuf::from("/boot/EFI/Linux/scs-edge_1.1.0+3-0.efi"))
        );
        let dir = tempfile::tempdir().expect("dir");
        let staged = dir.path().join("staged.efi");
        let written = dir.path().join("written.efi");
        std::fs::write(&staged, b"MZ the UKI").expect("staged");
        std::fs::write(&written, b"").expect("empty entry after a power cut");
        assert!(!same_bytes(&written, &staged).expect("compare"));
        std::fs::write(&written, b"MZ the UKI").expect("rewritten");
        assert!(same_bytes(&written, &staged).expect("compare"));
    }

    #[test]
    fn a_slot_is_bootable_until_its_entry_used_up_its_tries() {
        let listing = |installed: bool, incomplete: bool, tries: &str| {
            format!(
                r#"{{"version":"1.1.0","installed":{installed},"incomplete":{incomplete},"contents":[{{"type":"partition","path":"/proc/self/fd/3p5"}},{{"type":"regular-file","path":"/boot/EFI/Linux/scs-edge_1.1.0+2-1.efi"{tries}}}]}}"#
            )
        };
        let state = |text: String| slot_in_listing(&text).expect("listing");
        assert_eq!(
            state(listing(true, false, r#","tries-done":1,"tries-left":2"#)),
            SlotState::Bootable
        );
        assert_eq!(
            state(listing(true, false, "")),
            SlotState::Bootable,
            "blessed"
        );
        assert_eq!(
            state(listing(true, false, r#","tries-done":3,"tries-left":0"#)),
            SlotState::TriesExhausted
        );
        assert_eq!(state(listing(true, true, "")), SlotState::Missing);
        assert_eq!(state(listing(false, false, "")), SlotState::Missing);
    }
}
