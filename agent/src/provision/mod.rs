//! First boot of an edge node: find the site configuration, pick the hardware profile, lay out the
//! node's files — or wait, saying exactly why, without writing anything.
//!
//! `scs-edge-agent provision --wait` runs once per boot before the agent. The flow is
//! [`sources::discover`] (kernel command line → fw_cfg → SMBIOS → `SCSEDGE` filesystem) →
//! [`profile::select`] by DMI (or forced by the site) → [`hardware::resolve`] onto the NICs, disks,
//! TPM and watchdog present → [`layout::render`] every file in memory, the agent configuration
//! validated by [`crate::config::AgentConfig`] → [`layout::apply`], stamp last. Nothing is written
//! until every step passed, because a half-provisioned node on a remote site is harder to recover
//! than one that is still waiting for its stick.
//!
//! A node that has a stamp keeps its provisioning when the sources later disappear or turn invalid
//! (the stick was pulled, a NIC died): the agent must come up on every boot after the first. When
//! the sources yield different files than the stamp records, the node is provisioned again.

pub mod command;
pub mod hardware;
pub mod host;
pub mod layout;
pub mod profile;
pub mod site;
pub mod sources;
#[cfg(test)]
mod tests;

use crate::system::clock::Clock;
use crate::system::mount::Mounter;
use crate::system::notify::ServiceNotifier;
use hardware::{Dmi, HardwareFacts, MismatchError};
use host::{Console, Networkd, Pause, Terminal};
use layout::{LayoutError, Stamp};
use profile::{HardwareProfile, SelectError};
use site::SiteError;
use sources::SourceKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit code without `--wait` when no source has a site configuration.
pub const EXIT_NO_CONFIG: u8 = 3;
/// Exit code without `--wait` when the configuration is invalid or no hardware profile fits.
pub const EXIT_INVALID: u8 = 4;
/// First line of the message when no source has a configuration.
pub const HEADLINE_NO_CONFIG: &str = "SCS Edge: waiting for site configuration";
/// First line of the message when the configuration found is invalid.
pub const HEADLINE_INVALID: &str = "SCS Edge: site configuration invalid";
/// First line of the message when no hardware profile fits this machine.
pub const HEADLINE_NO_PROFILE: &str = "SCS Edge: no hardware profile matches";

/// Why provisioning cannot proceed yet. Every variant is something an operator can fix on site
/// (plug the stick, fix a key, force a profile, fix the cabling), so it is waited out, not failed.
#[derive(Debug, Clone)]
pub enum Waiting {
    /// No source carries any setting.
    NoConfig,
    /// The first source with settings has an invalid or missing one.
    Invalid(SiteError),
    /// The hardware profiles could not be loaded.
    Profiles(String),
    /// No profile was chosen.
    NoProfile {
        /// The site.
        site: String,
        /// Its source.
        source: SourceKind,
        /// Why.
        error: SelectError,
        /// What this machine says it is.
        dmi: Dmi,
        /// Profile names with their match rules.
        available: Vec<(String, String)>,
    },
    /// A profile was chosen but the machine lacks what it names.
    Mismatch {
        /// The site.
        site: String,
        /// Its source.
        source: SourceKind,
        /// Whether the site forced the profile.
        forced: bool,
        /// What is missing.
        error: MismatchError,
    },
}

impl Waiting {
    /// The fixed first line of the message.
    pub fn headline(&self) -> &'static str {
        match self {
            Self::NoConfig => HEADLINE_NO_CONFIG,
            Self::Invalid(_) => HEADLINE_INVALID,
            Self::Profiles(_) | Self::NoProfile { .. } | Self::Mismatch { .. } => {
                HEADLINE_NO_PROFILE
            }
        }
    }

    /// The exit code without `--wait`.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NoConfig => EXIT_NO_CONFIG,
            _ => EXIT_INVALID,
        }
    }

    /// One line for `systemctl status` (`STATUS=`).
    pub fn summary(&self) -> String {
        let detail = match self {
            Self::NoConfig => {
                "none on the kernel command line, fw_cfg, SMBIOS OEM strings or a SCSEDGE filesystem"
                    .to_owned()
            }
            Self::Invalid(err) => err.to_string(),
            Self::Profiles(err) => err.clone(),
            Self::NoProfile { error, .. } => error.to_string(),
            Self::Mismatch { error, .. } => error.to_string(),
        };
        format!(
            "{}: {detail}",
            self.headline().trim_start_matches("SCS Edge: ")
        )
    }

    /// The full message: headline, then what was looked for where, or exactly what is wrong.
    pub fn message(&self, root: &Path, profiles_dir: &Path) -> String {
        let at = |relative: &str| root.join(relative).display().to_string();
        let mut lines = vec![self.headline().to_owned()];
        match self {
            Self::NoConfig => {
                lines.push("No site configuration found. Looked, in this order, for:".into());
                lines.push(format!(
                    "  1. kernel command line ({}): scs_edge.site=<name> scs_edge.region_url=https://<region> scs_edge.join_token=<token> scs_edge.ca_fingerprint=sha256:<64 hex>, or scs_edge.site_config=<base64 of site.toml>",
                    at(sources::CMDLINE)
                ));
                lines.push(format!(
                    "  2. QEMU fw_cfg file opt/org.scs-edge/site.toml ({})",
                    at(sources::FW_CFG)
                ));
                lines.push(format!(
                    "  3. SMBIOS OEM strings (type 11, {}/11-*/raw): scs-edge:site= scs-edge:region_url= scs-edge:join_token= scs-edge:ca_fingerprint=",
                    at(sources::DMI_ENTRIES)
                ));
                lines.push(format!(
                    "  4. site.toml on a filesystem labelled SCSEDGE ({}): a config partition or USB stick",
                    at(sources::LABEL_DEVICE)
                ));
                lines.push(
                    "Nothing has been written. The first source with any setting is used.".into(),
                );
            }
            Self::Invalid(SiteError::Invalid {
                origin,
                key,
                reason,
            }) => {
                lines.push(format!("source:  {origin}"));
                lines.push(format!("key:     {key}"));
                lines.push(format!("problem: {reason}"));
                lines.push(
                    "Nothing has been written. This source is used because it is the first with any setting; fix it there."
                        .into(),
                );
            }
            Self::Invalid(SiteError::Unreadable {
                origin,
                what,
                reason,
            }) => {
                lines.push(format!("source:  {origin}"));
                lines.push(format!("reading: {what}"));
                lines.push(format!("problem: {reason}"));
                lines.push("Nothing has been written.".into());
            }
            Self::Profiles(err) => {
                lines.push(format!(
                    "The hardware profiles in {} cannot be used: {err}",
                    profiles_dir.display()
                ));
                lines.push("Nothing has been written.".into());
            }
            Self::NoProfile {
                site,
                source,
                error,
                dmi,
                available,
            } => {
                lines.push(format!(
                    "Site {site} (from the {source}) is valid, but {error}."
                ));
                lines.push(format!("This machine: {dmi}"));
                lines.push(format!("Profiles in {}:", profiles_dir.display()));
                for (name, rules) in available {
                    lines.push(format!("  {name}: {rules}"));
                }
                lines.push(
                    "Add a profile for this machine, or force one with hardware_profile = \"<name>\" ([site] in site.toml, scs_edge.hardware_profile=, scs-edge:hardware_profile=). Nothing has been written."
                        .into(),
                );
            }
            Self::Mismatch {
                site,
                source,
                forced,
                error,
            } => {
                lines.push(format!(
                    "Site {site} (from the {source}) is valid and hardware profile {} was {}, but this machine does not fit it:",
                    error.profile,
                    if *forced { "forced by the site" } else { "selected by DMI" }
                ));
                for problem in &error.problems {
                    lines.push(format!("  - {problem}"));
                }
                lines.push(
                    "Check the NICs, cabling and firmware settings, or force another profile with hardware_profile = \"<name>\". Nothing has been written."
                        .into(),
                );
            }
        }
        lines.join("\n")
    }
}

/// A node that is provisioned, by this run or an earlier one with the same inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// Site name.
    pub site: String,
    /// Hardware profile.
    pub profile: String,
    /// Where the configuration came from.
    pub source: SourceKind,
    /// Paths written (relative to the root); empty when nothing changed.
    pub written: Vec<String>,
}

impl Provisioned {
    /// The success line.
    pub fn line(&self) -> String {
        format!(
            "SCS Edge: provisioned site {} with hardware profile {} (from {})",
            self.site, self.profile, self.source
        )
    }
}

/// The result of one look at the sources.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// Provisioned (or already provisioned with exactly these inputs).
    Done(Provisioned),
    /// A stamp exists and the sources offer nothing usable: the node keeps what it has.
    Kept {
        /// The existing stamp.
        stamp: Stamp,
        /// Why the current sources were not used (none when there simply are none).
        ignored: Option<Waiting>,
    },
    /// Not provisioned, and cannot be yet.
    Waiting(Waiting),
}

/// One provisioning pass over a root.
pub struct Provisioner<'a> {
    /// The node's filesystem root (`/` on a node).
    pub root: PathBuf,
    /// The hardware profile directory.
    pub profiles_dir: PathBuf,
    /// Mounts the `SCSEDGE` medium.
    pub mounter: &'a dyn Mounter,
    /// Timestamps the stamp.
    pub clock: &'a dyn Clock,
}

impl Provisioner<'_> {
    /// Looks at the sources once and provisions if everything is valid.
    pub fn attempt(&self) -> Result<Attempt, LayoutError> {
        let root = self.root.as_path();
        let previous = layout::read_stamp(root);
        let wait = |reason: Waiting| match &previous {
            Some(stamp) => Attempt::Kept {
                stamp: stamp.clone(),
                ignored: (!matches!(reason, Waiting::NoConfig)).then_some(reason),
            },
            None => Attempt::Waiting(reason),
        };
        let found = match sources::discover(root, self.mounter) {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(wait(Waiting::NoConfig)),
            Err(err) => return Ok(wait(Waiting::Invalid(err))),
        };
        let profiles = match profile::load_dir(&self.profiles_dir) {
            Ok(profiles) => profiles,
            Err(err) => return Ok(wait(Waiting::Profiles(err.to_string()))),
        };
        let facts = HardwareFacts::read(root);
        let forced = found.site.hardware_profile.as_deref();
        let chosen = match profile::select(&profiles, &facts.dmi, forced) {
            Ok(chosen) => chosen,
            Err(error) => {
                return Ok(wait(Waiting::NoProfile {
                    site: found.site.name.clone(),
                    source: found.source,
                    error,
                    dmi: facts.dmi.clone(),
                    available: available(&profiles),
                }));
            }
        };
        let layout = match hardware::resolve(chosen, &facts, root) {
            Ok(layout) => layout,
            Err(error) => {
                return Ok(wait(Waiting::Mismatch {
                    site: found.site.name.clone(),
                    source: found.source,
                    forced: forced.is_some(),
                    error,
                }));
            }
        };
        let plan = layout::render(&found.site, found.source, &layout)?;
        let done = |written| {
            Attempt::Done(Provisioned {
                site: found.site.name.clone(),
                profile: layout.profile.clone(),
                source: found.source,
                written,
            })
        };
        if previous
            .as_ref()
            .is_some_and(|stamp| stamp.inputs_sha256 == plan.digest)
        {
            return Ok(done(Vec::new()));
        }
        let stamp = Stamp {
            site: found.site.name.clone(),
            profile: layout.profile.clone(),
            source: found.source.id().to_owned(),
            provisioned_at: self.clock.now().to_string(),
            inputs_sha256: plan.digest.clone(),
            files: plan.files.iter().map(|f| f.path.clone()).collect(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let written = layout::apply(root, &plan, &stamp, previous.as_ref())?;
        Ok(done(written))
    }
}

fn available(profiles: &[HardwareProfile]) -> Vec<(String, String)> {
    profiles
        .iter()
        .map(|p| (p.profile.name.clone(), p.rules.describe()))
        .collect()
}

/// How `run` behaves.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Poll until provisioned instead of exiting with 3/4.
    pub wait: bool,
    /// Time between polls.
    pub poll: Duration,
}

/// The side effects `run` reports through.
pub struct Ports<'a> {
    /// The system console.
    pub console: &'a dyn Console,
    /// stdout/stderr.
    pub terminal: &'a dyn Terminal,
    /// systemd-networkd.
    pub networkd: &'a dyn Networkd,
    /// The service manager.
    pub notifier: &'a dyn ServiceNotifier,
    /// Sleeping between polls.
    pub pause: &'a dyn Pause,
}

/// Provisions, waiting if asked to; returns the process exit code (0, [`EXIT_NO_CONFIG`],
/// [`EXIT_INVALID`]). A message is printed only when its reason changes, so a node waiting for a
/// week shows one message, not ten thousand.
pub fn run(
    provisioner: &Provisioner<'_>,
    options: Options,
    ports: &Ports<'_>,
) -> Result<u8, LayoutError> {
    let mut last_message: Option<String> = None;
    loop {
        match provisioner.attempt()? {
            Attempt::Done(done) => {
                let mut text = done.line();
                if done.written.is_empty() {
                    text.push_str("\nAlready provisioned with these inputs; nothing written.");
                } else if let Err(err) = ports.networkd.reload() {
                    ports
                        .terminal
                        .err(&format!("warning: networkctl reload: {err} (networkd reads the files when it starts)"));
                }
                ports.terminal.out(&text);
                ports.console.show(&text);
                ports.notifier.ready(&done.line());
                return Ok(0);
            }
            Attempt::Kept { stamp, ignored } => {
                let source = SourceKind::from_id(&stamp.source)
                    .map_or(stamp.source.clone(), |s| s.to_string());
                let line = format!(
                    "SCS Edge: already provisioned site {} with hardware profile {} (from {source})",
                    stamp.site, stamp.profile
                );
                if let Some(reason) = ignored {
                    let warning = format!(
                        "{}\nKeeping the existing provisioning; the current sources are not used.",
                        reason.message(&provisioner.root, &provisioner.profiles_dir)
                    );
                    ports.terminal.err(&warning);
                    ports.console.show(&warning);
                }
                ports.terminal.out(&line);
                ports.notifier.ready(&line);
                return Ok(0);
            }
            Attempt::Waiting(reason) => {
                let message = reason.message(&provisioner.root, &provisioner.profiles_dir);
                if !options.wait {
                    ports.terminal.err(&message);
                    return Ok(reason.exit_code());
                }
                if last_message.as_ref() != Some(&message) {
                    let text = format!(
                        "{message}\nChecking again every {} s.",
                        options.poll.as_secs()
                    );
                    ports.terminal.out(&text);
                    ports.console.show(&text);
                    ports.notifier.status(&reason.summary());
                    last_message = Some(message);
                }
                ports.pause.pause(options.poll);
            }
        }
    }
}
