//! `scs-edge-agent update …`: import a release from a bundle, a stick or a repository URL, show
//! where the node is, clear a failed version for an explicit retry, and the boot's health gate.
//!
//! Import verifies, stages and writes the inactive slot in this process, with a progress display;
//! the running daemon reboots into it (now, or in the maintenance window) after stopping the
//! servers. Status prints JSON like the other admin commands.

use crate::config::AgentConfig;
use crate::update::gate::{self, GateSettings, GateVerdict, KernelBootClock};
use crate::update::host::{BlessBoot, SystemdPower, SystemdSysupdate};
use crate::update::probes::{NodeProbes, OvnProbe};
use crate::update::record::RebootWhen;
use crate::update::{ImportProgress, ImportSource, ImportStep, UpdateSettings, Updater};
use clap::{Subcommand, ValueEnum};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `update …`
#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Verify a release from a bundle file, a block device (a stick holding one bundle) or a
    /// release repository online, stage it and write it into the inactive slot; the agent then
    /// reboots into it.
    Import {
        /// The bundle file, the stick's block device, or the repository's `https://` (or
        /// `http://`) base URL, read with the system's roots and `[update] repository_ca_file`.
        source: String,
        /// When to reboot into it.
        #[arg(long, value_enum, default_value_t = RebootArg::Window)]
        reboot: RebootArg,
        /// Only verify and stage; the agent writes the slot later.
        #[arg(long)]
        stage_only: bool,
        /// A freshness waiver (`scs-edge-release waiver`) for this site, used only if the
        /// release's metadata has expired; it takes the place of one the source carries.
        #[arg(long)]
        waiver: Option<PathBuf>,
    },
    /// Where the node is: phase, running version, failed versions, refusals, waivers used.
    Status,
    /// Clear a version's failure so that it may be imported and installed again.
    Retry {
        /// The version.
        version: semver::Version,
    },
    /// The boot's health gate (run by scs-edge-update-gate.service before boot-complete.target).
    #[command(hide = true)]
    Gate,
}

/// `--reboot`
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RebootArg {
    /// As soon as the slot is written.
    Now,
    /// In the next maintenance window (at once when the site has none).
    Window,
}

/// A spinner naming each step, with elapsed time: a bundle is hundreds of megabytes and the slot
/// write takes a minute on small hardware.
struct Spinner(indicatif::ProgressBar);

impl Spinner {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Self(bar)
    }
}

impl ImportProgress for Spinner {
    fn step(&self, step: &ImportStep) {
        let message = match step {
            ImportStep::Reading => "reading the bundle".to_owned(),
            ImportStep::Verifying => "verifying the metadata against the root of trust".to_owned(),
            ImportStep::Staging(version) => format!("staging {version} (each file verified)"),
            ImportStep::Installing(version) => {
                format!("writing {version} into the inactive slot (systemd-sysupdate)")
            }
        };
        self.0.println(format!("update: {message}"));
        self.0.set_message(message);
    }
}

/// The CLI's source argument: a URL when it says `https://` or `http://`, a path otherwise.
fn import_source(arg: &str, config: &AgentConfig) -> Result<ImportSource, String> {
    if !arg.starts_with("https://") && !arg.starts_with("http://") {
        return Ok(ImportSource::local(PathBuf::from(arg)));
    }
    crate::config::check_repository_url(arg)?;
    let url = reqwest::Url::parse(arg).map_err(|err| format!("{arg}: {err}"))?;
    let client = crate::update::online::client(config.update.repository_ca_file.as_deref())
        .map_err(|err| err.to_string())?;
    Ok(ImportSource::Repository { url, client })
}

fn updater(config: &AgentConfig) -> Result<Updater, String> {
    use crate::federation::report::HostSystem as _;
    let running = crate::federation::report::LocalSystem
        .os_release()
        .and_then(|text| crate::update::running_version(&text))
        .ok_or("os-release has no IMAGE_VERSION: updates need the SCS Edge node image")?;
    Ok(Updater::new(
        UpdateSettings::from_config(config, running),
        Arc::new(crate::system::clock::SystemClock),
        Arc::new(SystemdSysupdate::default()),
        Arc::new(crate::system::mount::SystemMounter),
    ))
}

/// Runs an `update` command; returns the process exit code.
pub fn run(command: UpdateCommand, config: &AgentConfig) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("scs-edge-agent: {err}");
            return 1;
        }
    };
    match runtime.block_on(run_async(command, config)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("scs-edge-agent update: {message}");
            1
        }
    }
}

async fn run_async(command: UpdateCommand, config: &AgentConfig) -> Result<u8, String> {
    let updater = updater(config)?;
    match command {
        UpdateCommand::Import {
            source,
            reboot,
            stage_only,
            waiver,
        } => {
            let reboot = match reboot {
                RebootArg::Now => RebootWhen::Now,
                RebootArg::Window => RebootWhen::Window,
            };
            let source = import_source(&source, config)?;
            let spinner = Spinner::new();
            let result = match &waiver {
                Some(waiver) => {
                    updater
                        .import_with_waiver(&source, waiver, reboot, &spinner)
                        .await
                }
                None => updater.import(&source, reboot, &spinner).await,
            };
            let version = match result {
                Ok(version) => version,
                Err(err) => {
                    spinner.0.finish_and_clear();
                    return Err(err.to_string());
                }
            };
            if !stage_only {
                let installed = tokio::task::block_in_place(|| updater.install_staged(&spinner));
                if let Err(err) = installed {
                    spinner.0.finish_and_clear();
                    return Err(err.to_string());
                }
            }
            spinner.0.finish_and_clear();
            let next = match (stage_only, reboot) {
                (true, _) => "staged; the agent writes it into the inactive slot",
                (false, RebootWhen::Now) => "installed; the agent reboots into it now",
                (false, RebootWhen::Window) => {
                    "installed; the agent reboots into it in the maintenance window"
                }
            };
            println!(
                "{}",
                serde_json::json!({ "version": version.to_string(), "next": next })
            );
            Ok(0)
        }
        UpdateCommand::Status => {
            let record = updater.record().map_err(|err| err.to_string())?;
            let status = serde_json::json!({
                "running": updater.running().to_string(),
                "record": record,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&status).unwrap_or_default()
            );
            Ok(0)
        }
        UpdateCommand::Retry { version } => {
            if updater.retry(&version).map_err(|err| err.to_string())? {
                println!("{}", serde_json::json!({ "cleared": version.to_string() }));
                Ok(0)
            } else {
                Err(format!("version {version} has not failed on this node"))
            }
        }
        UpdateCommand::Gate => gate(config, &updater).await,
    }
}

async fn gate(config: &AgentConfig, updater: &Updater) -> Result<u8, String> {
    let services = crate::daemon::services_without_loops(config).map_err(|err| err.to_string())?;
    let (_, node_id) = crate::daemon::open_store(config).map_err(|err| err.to_string())?;
    let hypervisor = Arc::new(crate::compute::libvirt::LibvirtHypervisor::new(
        &config.compute.libvirt_uri,
        &node_id,
    ));
    let ovn = config.network.enabled.then(|| OvnProbe {
        chassis: if config.network.chassis.is_empty() {
            node_id.clone()
        } else {
            config.network.chassis.clone()
        },
        southbound: config.network.southbound.clone(),
    });
    let probes = NodeProbes {
        compute: services.compute,
        hypervisor,
        ovn,
    };
    let settings = GateSettings {
        window: Duration::from_secs(config.update.gate_window_secs),
        poll: Duration::from_secs(5),
    };
    let verdict = gate::judge(
        updater,
        &probes,
        &BlessBoot::default(),
        &SystemdPower,
        &KernelBootClock,
        settings,
    )
    .await
    .map_err(|err| err.to_string())?;
    println!(
        "{}",
        serde_json::json!({ "verdict": format!("{verdict:?}") })
    );
    Ok(match verdict {
        GateVerdict::RolledBack { .. } => 1,
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_or_https_argument_is_a_repository_and_anything_else_a_path() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let config = AgentConfig::default();
        for url in ["https://releases.example.com/scs-edge/", "http://10.0.0.5/"] {
            match import_source(url, &config).expect(url) {
                ImportSource::Repository { url: parsed, .. } => assert_eq!(parsed.as_str(), url),
                other => panic!("{url}: {other:?}"),
            }
        }
        match import_source("/root/scs-edge_0.2.0.bundle", &config).expect("path") {
            ImportSource::Bundle(path) => {
                assert_eq!(path, PathBuf::from("/root/scs-edge_0.2.0.bundle"));
            }
            other => panic!("{other:?}"),
        }
        let err = import_source("https://user@releases.example.com/", &config).expect_err("user");
        assert!(err.contains("credentials"), "{err}");

        let mut with_ca = AgentConfig::default();
        with_ca.update.repository_ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        let err = import_source("https://releases.example.com/", &with_ca).expect_err("no CA");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
