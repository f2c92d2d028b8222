//! `host-network …`: the node's own links, and guarded changes to them — the change is applied, a
//! connectivity check must pass, otherwise the exact previous state is restored (and a change left
//! unconfirmed by a crash is reverted by `recover` or the next daemon start).

use super::{CliFailure, print};
use crate::network::host::{
    ChangePlan, HostNetwork, NetlinkHost, PENDING_CHANGE_FILE, Snapshot, TcpConnectCheck,
    apply_guarded, recover_pending,
};
use clap::Subcommand;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `host-network …`
#[derive(Debug, Subcommand)]
pub enum HostNetworkCommand {
    /// Links, addresses and routes as the agent sees them.
    Show,
    /// Move an uplink's addresses and routes onto a bridge (made if missing) with the uplink as its
    /// port; kept only if one of the `--check` targets answers afterwards.
    MoveUplink {
        /// The uplink (e.g. `eth0`).
        #[arg(long)]
        uplink: String,
        /// The bridge to create or use.
        #[arg(long)]
        bridge: String,
        /// `address:port` that must accept a TCP connection after the change (repeatable; any one).
        #[arg(long = "check", required = true)]
        checks: Vec<SocketAddr>,
        /// How long the check may take.
        #[arg(long, default_value_t = 30)]
        deadline_secs: u64,
    },
    /// Apply a change plan (JSON, as in the pending record), guarded the same way.
    Apply {
        /// The plan file.
        #[arg(long)]
        plan: PathBuf,
        /// `address:port` that must accept a TCP connection after the change (repeatable; any one).
        #[arg(long = "check", required = true)]
        checks: Vec<SocketAddr>,
        /// How long the check may take.
        #[arg(long, default_value_t = 30)]
        deadline_secs: u64,
    },
    /// Revert a change that was never confirmed (left by a crash).
    Recover,
}

fn host() -> Result<NetlinkHost, CliFailure> {
    NetlinkHost::new().map_err(|e| CliFailure {
        message: format!("cannot open netlink: {e}"),
        code: 1,
    })
}

fn guarded(
    host: &dyn HostNetwork,
    plan: &ChangePlan,
    checks: Vec<SocketAddr>,
    deadline: u64,
    pending: &Path,
) -> Result<(), CliFailure> {
    let check = TcpConnectCheck::new(checks, Duration::from_secs(deadline));
    match apply_guarded(host, &check, plan, pending) {
        Ok(after) => {
            print(&serde_json::json!({ "applied": plan.description, "state": after }));
            Ok(())
        }
        Err(err) => Err(CliFailure {
            message: format!("change not kept: {err}"),
            code: 8,
        }),
    }
}

/// Runs `host-network …`; the pending record lives in `state_dir`.
pub fn run(cmd: HostNetworkCommand, state_dir: &Path) -> Result<(), CliFailure> {
    let pending = state_dir.join(PENDING_CHANGE_FILE);
    let host = host()?;
    let failed = |e: crate::network::host::HostError| CliFailure {
        message: e.to_string(),
        code: 1,
    };
    match cmd {
        HostNetworkCommand::Show => print(&Snapshot::capture_all(&host).map_err(failed)?),
        HostNetworkCommand::MoveUplink {
            uplink,
            bridge,
            checks,
            deadline_secs,
        } => {
            let addresses = host.addresses(&uplink).map_err(failed)?;
            let routes: Vec<_> = host
                .routes()
                .map_err(failed)?
                .into_iter()
                .filter(|r| r.link == uplink)
                .collect();
            let plan = ChangePlan::move_uplink_into_bridge(&uplink, &bridge, &addresses, &routes);
            guarded(&host, &plan, checks, deadline_secs, &pending)?;
        }
        HostNetworkCommand::Apply {
            plan,
            checks,
            deadline_secs,
        } => {
            let text = std::fs::read_to_string(&plan).map_err(|e| CliFailure {
                message: format!("cannot read {}: {e}", plan.display()),
                code: 3,
            })?;
            let plan: ChangePlan = serde_json::from_str(&text).map_err(|e| CliFailure {
                message: format!("not a change plan: {e}"),
                code: 3,
            })?;
            guarded(&host, &plan, checks, deadline_secs, &pending)?;
        }
        HostNetworkCommand::Recover => {
            let reverted = recover_pending(&host, &pending).map_err(|e| CliFailure {
                message: e.to_string(),
                code: 1,
            })?;
            print(&serde_json::json!({ "reverted": reverted.map(|r| r.plan.description) }));
        }
    }
    Ok(())
}
