//! `scs-edge-agent provision`: the command-line adapter over [`super::run`] with the real host.

use super::host::{DevConsole, NoNetworkd, Sleep, StdTerminal, SystemNetworkd};
use super::profile::DEFAULT_PROFILES_DIR;
use super::{Options, Ports, Provisioner};
use crate::system::clock::SystemClock;
use crate::system::mount::SystemMounter;
use crate::system::notify::SdNotifier;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `provision`
#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// Root of the node's filesystem: /proc, /sys, /dev are read and /etc, /var written under it
    /// (a directory other than / is for tests and image builds; networkd is then not reloaded).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Hardware profile directory. Default: <root>/usr/share/scs-edge/hardware-profiles.
    #[arg(long)]
    pub profiles: Option<PathBuf>,
    /// Wait (polling the sources) until a valid site configuration and a fitting hardware profile
    /// are found, instead of exiting with 3 (no configuration) or 4 (invalid, no profile).
    #[arg(long)]
    pub wait: bool,
    /// Seconds between polls with --wait.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub poll_secs: u64,
}

/// Runs the command; returns the exit code (0, 3, 4; 1 when files cannot be written).
pub fn run(args: &ProvisionArgs) -> u8 {
    let root = args.root.as_path();
    let profiles_dir = args
        .profiles
        .clone()
        .unwrap_or_else(|| root.join(DEFAULT_PROFILES_DIR));
    let mounter = SystemMounter;
    let clock = SystemClock;
    let provisioner = Provisioner {
        root: root.to_owned(),
        profiles_dir,
        mounter: &mounter,
        clock: &clock,
    };
    let console = DevConsole::under(root);
    let terminal = StdTerminal;
    let notifier = SdNotifier::from_env();
    let ports = Ports {
        console: &console,
        terminal: &terminal,
        networkd: if root == Path::new("/") {
            &SystemNetworkd
        } else {
            &NoNetworkd
        },
        notifier: &notifier,
        pause: &Sleep,
    };
    let options = Options {
        wait: args.wait,
        poll: Duration::from_secs(args.poll_secs),
    };
    match super::run(&provisioner, options, &ports) {
        Ok(code) => code,
        Err(err) => {
            let text = format!("SCS Edge: provisioning failed: {err}");
            super::host::Terminal::err(&terminal, &text);
            super::host::Console::show(&console, &text);
            1
        }
    }
}
