//! Guarded changes to the management uplink: applied, checked, and reverted unless the node can
//! still reach its management peer — so a wrong address, route or bridge never strands a remote
//! site that nobody can walk up to.
//!
//! [`apply_guarded`]:
//!
//! 1. refuses to start while a pending record exists (an earlier change is unresolved: run
//!    [`recover_pending`] first);
//! 2. captures a [`Snapshot`] of every link the plan names (existence, master, up/down, MTU,
//!    addresses) and of the main-table routes through them;
//! 3. writes the pending record (plan + snapshot) atomically and durably — before touching anything;
//! 4. applies the steps in order; the first failing step stops it;
//! 5. runs the [`ConnectivityCheck`];
//! 6. on success removes the record (durably): only then is the change confirmed. On any failure it
//!    [`restore`]s the snapshot, checks the host matches it again, and only then removes the record.
//!    If restoring fails, the record stays and the error says so.
//!
//! [`recover_pending`] runs at start-up, before anything else touches the host's links: a record
//! there is a change whose outcome was never confirmed (the agent died between step 3 and 6), and
//! it is reverted. A good change that was not yet confirmed is reverted too — the safe direction;
//! the reconciler applies it again. This is the "commit confirmed" of network operating systems.
//!
//! Restoring is a diff against the snapshot, not an undo log: it is idempotent (it can be
//! interrupted and rerun from start-up recovery) and it also repairs what the kernel did on its own
//! (removing a link's last IPv4 address flushes its default route; a downed link loses its IPv6
//! addresses). Links the plan created are deleted; a link that vanished cannot be recreated and is
//! reported. IPv6 link-local addresses and their routes are the kernel's business and are neither
//! restored nor compared.
//!
//! Changes must be serialised by the caller (one host-network worker); the pending record also makes
//! a second change refuse to start while one is unresolved.

use super::check::{CheckError, ConnectivityCheck};
use super::pending::{self, PendingChange, RECORD_VERSION, ReadError};
use super::{
    HostError, HostNetwork, Link, LinkKind, Route, RouteProtocol, is_kernel_managed_address,
    validate_link_name,
};
use crate::error_class::{Classify, ErrorClass};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// One step of a change, applied with the [`HostNetwork`] method of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChangeStep {
    /// Create a bridge (down).
    CreateBridge {
        /// Its name.
        name: String,
    },
    /// Make `link` a port of `master` (or of none).
    SetMaster {
        /// The port.
        link: String,
        /// The bridge.
        master: Option<String>,
    },
    /// Set a link up or down.
    SetUp {
        /// The link.
        link: String,
        /// Up?
        up: bool,
    },
    /// Set a link's MTU.
    SetMtu {
        /// The link.
        link: String,
        /// MTU in bytes.
        mtu: u32,
    },
    /// Add an address.
    AddAddress {
        /// The link.
        link: String,
        /// Address with prefix length.
        address: IpNet,
    },
    /// Delete an address.
    DeleteAddress {
        /// The link.
        link: String,
        /// Address with prefix length.
        address: IpNet,
    },
    /// Add a route.
    AddRoute {
        /// The route.
        route: Route,
    },
    /// Delete a route.
    DeleteRoute {
        /// The route.
        route: Route,
    },
}

impl ChangeStep {
    fn apply(&self, host: &dyn HostNetwork) -> Result<(), HostError> {
        match self {
            Self::CreateBridge { name } => host.create_bridge(name),
            Self::SetMaster { link, master } => host.set_master(link, master.as_deref()),
            Self::SetUp { link, up } => host.set_up(link, *up),
            Self::SetMtu { link, mtu } => host.set_mtu(link, *mtu),
            Self::AddAddress { link, address } => host.add_address(link, *address),
            Self::DeleteAddress { link, address } => host.delete_address(link, *address),
            Self::AddRoute { route } => host.add_route(route),
            Self::DeleteRoute { route } => host.delete_route(route),
        }
    }

    /// Links this step touches.
    fn links(&self) -> Vec<&str> {
        match self {
            Self::CreateBridge { name } => vec![name],
            Self::SetMaster { link, master } => std::iter::once(link.as_str())
                .chain(master.as_deref())
                .collect(),
            Self::SetUp { link, .. }
            | Self::SetMtu { link, .. }
            | Self::AddAddress { link, .. }
            | Self::DeleteAddress { link, .. } => vec![link],
            Self::AddRoute { route } | Self::DeleteRoute { route } => vec![&route.link],
        }
    }

    fn validate(&self) -> Result<(), HostError> {
        for link in self.links() {
            validate_link_name(link)?;
        }
        match self {
            Self::AddRoute { route } | Self::DeleteRoute { route } => route.validate(),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for ChangeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreateBridge { name } => write!(f, "create bridge {name}"),
            Self::SetMaster {
                link,
                master: Some(m),
            } => write!(f, "set {link} master {m}"),
            Self::SetMaster { link, master: None } => write!(f, "set {link} nomaster"),
            Self::SetUp { link, up } => {
                write!(f, "set {link} {}", if *up { "up" } else { "down" })
            }
            Self::SetMtu { link, mtu } => write!(f, "set {link} mtu {mtu}"),
            Self::AddAddress { link, address } => write!(f, "add address {address} to {link}"),
            Self::DeleteAddress { link, address } => {
                write!(f, "delete address {address} from {link}")
            }
            Self::AddRoute { route } => write!(f, "add route {route}"),
            Self::DeleteRoute { route } => write!(f, "delete route {route}"),
        }
    }
}

/// A change to the host's links: steps applied in order, reverted together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePlan {
    /// What the change is for (logs, the pending record).
    pub description: String,
    /// The steps.
    pub steps: Vec<ChangeStep>,
}

impl ChangePlan {
    /// An empty plan.
    pub fn new(description: &str) -> Self {
        Self {
            description: description.to_owned(),
            steps: Vec::new(),
        }
    }

    /// The plan with one more step.
    #[must_use]
    pub fn step(mut self, step: ChangeStep) -> Self {
        self.steps.push(step);
        self
    }

    /// The classic provider-network change: put the uplink into a new bridge and move the node's
    /// own addresses and routes from the uplink onto the bridge.
    ///
    /// `addresses` and `routes` are what the uplink has now (pass [`HostNetwork::addresses`] and
    /// [`HostNetwork::routes`] as they are: kernel routes, routes of other links and IPv6
    /// link-local addresses are left out here). Routes are deleted from the uplink explicitly: the
    /// kernel flushes IPv4 routes with the last address, but IPv6 routes would stay and point
    /// out of a bridge port.
    pub fn move_uplink_into_bridge(
        uplink: &str,
        bridge: &str,
        addresses: &[IpNet],
        routes: &[Route],
    ) -> Self {
        let addresses: Vec<IpNet> = addresses
            .iter()
            .filter(|a| !is_kernel_managed_address(a))
            .copied()
            .collect();
        let mut routes: Vec<&Route> = routes
            .iter()
            .filter(|r| r.link == uplink && r.protocol != RouteProtocol::Kernel)
            .collect();
        // On-link routes first: a gateway must be reachable when its route is added.
        routes.sort_by_key(|r| r.gateway.is_some());
        let mut plan = Self::new(&format!("move uplink {uplink} into bridge {bridge}"))
            .step(ChangeStep::CreateBridge {
                name: bridge.to_owned(),
            })
            .step(ChangeStep::SetMaster {
                link: uplink.to_owned(),
                master: Some(bridge.to_owned()),
            })
            .step(ChangeStep::SetUp {
                link: bridge.to_owned(),
                up: true,
            });
        for route in routes.iter().rev() {
            plan = plan.step(ChangeStep::DeleteRoute {
                route: (*route).clone(),
            });
        }
        for address in &addresses {
            plan = plan.step(ChangeStep::DeleteAddress {
                link: uplink.to_owned(),
                address: *address,
            });
        }
        for address in &addresses {
            plan = plan.step(ChangeStep::AddAddress {
                link: bridge.to_owned(),
                address: *address,
            });
        }
        for route in routes {
            plan = plan.step(ChangeStep::AddRoute {
                route: route.clone().with_link(bridge),
            });
        }
        plan
    }

    /// Replaces one route by another (a new default gateway): the old one goes first, since two
    /// IPv4 routes with the same destination and metric cannot coexist.
    pub fn replace_route(old: Route, new: Route) -> Self {
        Self::new(&format!("replace route {old} by {new}"))
            .step(ChangeStep::DeleteRoute { route: old })
            .step(ChangeStep::AddRoute { route: new })
    }

    /// Every link the plan touches.
    pub fn links(&self) -> BTreeSet<String> {
        self.steps
            .iter()
            .flat_map(ChangeStep::links)
            .map(str::to_owned)
            .collect()
    }

    fn validate(&self) -> Result<(), HostError> {
        self.steps.iter().try_for_each(ChangeStep::validate)
    }
}

/// The restorable state of one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// Device kind (not restored; a link of another kind under the same name is a difference).
    pub kind: LinkKind,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub admin_up: bool,
    /// Bridge it is a port of.
    pub master: Option<String>,
    /// Addresses.
    pub addresses: BTreeSet<IpNet>,
}

/// The state of some links and of the main-table routes through them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// By name; `None`: the link did not exist.
    pub links: BTreeMap<String, Option<LinkState>>,
    /// Unicast main-table routes whose output link is one of `links`.
    pub routes: BTreeSet<Route>,
}

impl Snapshot {
    /// The state of the named links (existing or not) and of the routes through them.
    pub fn capture<'a>(
        host: &dyn HostNetwork,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, HostError> {
        let all = host.links()?;
        let by_name: HashMap<&str, &Link> = all.iter().map(|l| (l.name.as_str(), l)).collect();
        let mut links = BTreeMap::new();
        for name in names {
            let state = match by_name.get(name) {
                None => None,
                Some(link) => Some(LinkState {
                    kind: link.kind.clone(),
                    mtu: link.mtu,
                    admin_up: link.admin_up,
                    master: link.master.clone(),
                    addresses: host.addresses(name)?.into_iter().collect(),
                }),
            };
            links.insert(name.to_owned(), state);
        }
        let routes = host
            .routes()?
            .into_iter()
            .filter(|r| links.contains_key(&r.link))
            .collect();
        Ok(Self { links, routes })
    }

    /// The state of every link and every main-table route.
    pub fn capture_all(host: &dyn HostNetwork) -> Result<Self, HostError> {
        let names: Vec<String> = host.links()?.into_iter().map(|l| l.name).collect();
        Self::capture(host, names.iter().map(String::as_str))
    }

    /// Without what the kernel manages by itself (IPv6 link-local addresses and their routes).
    fn restorable(&self) -> Self {
        Self {
            links: self
                .links
                .iter()
                .map(|(name, state)| {
                    let state = state.as_ref().map(|s| LinkState {
                        addresses: s
                            .addresses
                            .iter()
                            .filter(|a| !is_kernel_managed_address(a))
                            .copied()
                            .collect(),
                        ..s.clone()
                    });
                    (name.clone(), state)
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .filter(|r| !r.is_kernel_managed())
                .cloned()
                .collect(),
        }
    }

    /// How `actual` differs from this (expected) snapshot, one line per difference.
    pub fn differences(&self, actual: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (name, expected) in &self.links {
            let found = actual.links.get(name).and_then(Option::as_ref);
            match (expected, found) {
                (None, None) => {}
                (None, Some(_)) => out.push(format!("link {name} exists but should not")),
                (Some(_), None) => out.push(format!("link {name} is missing")),
                (Some(e), Some(a)) => {
                    if e.kind != a.kind {
                        out.push(format!("link {name} is a {:?}, was a {:?}", a.kind, e.kind));
                    }
                    if e.master != a.master {
                        out.push(format!(
                            "link {name} has master {:?}, should have {:?}",
                            a.master, e.master
                        ));
                    }
                    if e.admin_up != a.admin_up {
                        out.push(format!(
                            "link {name} is {}, should be {}",
                            up_down(a.admin_up),
                            up_down(e.admin_up)
                        ));
                    }
                    if e.mtu != a.mtu {
                        out.push(format!(
                            "link {name} has MTU {}, should have {}",
                            a.mtu, e.mtu
                        ));
                    }
                    for missing in e.addresses.difference(&a.addresses) {
                        out.push(format!("address {missing} is missing from {name}"));
                    }
                    for extra in a.addresses.difference(&e.addresses) {
                        out.push(format!("address {extra} on {name} should not be there"));
                    }
                }
            }
        }
        for missing in self.routes.difference(&actual.routes) {
            out.push(format!("route {missing} is missing"));
        }
        for extra in actual.routes.difference(&self.routes) {
            out.push(format!("route {extra} should not be there"));
        }
        out
    }
}

fn up_down(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

/// Restoring a snapshot left the host different from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", failures.join("; "))]
pub struct RestoreError {
    /// Each call that failed and each difference left.
    pub failures: Vec<String>,
}

/// Brings the snapshot's links and routes back to the snapshot and checks they match it.
///
/// Best effort: a failing call does not stop the others (a half-restored uplink is worse than a
/// mostly restored one). Order matters: ports are released before the bridges the change created
/// are deleted; links are up before addresses are restored (IPv4 prefix routes appear only on up
/// links); addresses are back before routes (a gateway must be on a connected prefix); extra routes
/// go before missing ones come (two IPv4 routes with the same destination and metric clash).
pub fn restore(host: &dyn HostNetwork, before: &Snapshot) -> Result<(), RestoreError> {
    let mut failures = Vec::new();
    let mut note = |what: String, result: Result<(), HostError>| {
        if let Err(err) = result {
            failures.push(format!("{what}: {err}"));
        }
    };
    let links = match host.links() {
        Ok(links) => links,
        Err(err) => {
            return Err(RestoreError {
                failures: vec![format!("list links: {err}")],
            });
        }
    };
    let now: HashMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
    let wanted = |name: &str| before.links.get(name).and_then(Option::as_ref);

    for (name, state) in &before.links {
        let (Some(state), Some(link)) = (state, now.get(name.as_str())) else {
            continue;
        };
        if link.master != state.master {
            note(
                format!("set {name} master {:?}", state.master),
                host.set_master(name, state.master.as_deref()),
            );
        }
    }
    for (name, state) in &before.links {
        if state.is_none() && now.contains_key(name.as_str()) {
            note(format!("delete link {name}"), host.delete_link(name));
        }
    }
    for (name, state) in &before.links {
        let (Some(state), Some(link)) = (state, now.get(name.as_str())) else {
            continue;
        };
        if link.mtu != state.mtu {
            note(
                format!("set {name} mtu {}", state.mtu),
                host.set_mtu(name, state.mtu),
            );
        }
        if link.admin_up != state.admin_up {
            note(
                format!("set {name} {}", up_down(state.admin_up)),
                host.set_up(name, state.admin_up),
            );
        }
    }
    for name in before.links.keys() {
        let (Some(state), true) = (wanted(name), now.contains_key(name.as_str())) else {
            continue;
        };
        let current: BTreeSet<IpNet> = match host.addresses(name) {
            Ok(list) => list.into_iter().collect(),
            Err(err) => {
                note(format!("list addresses of {name}"), Err(err));
                continue;
            }
        };
        for extra in current.difference(&state.addresses) {
            if !is_kernel_managed_address(extra) {
                note(
                    format!("delete address {extra} from {name}"),
                    host.delete_address(name, *extra),
                );
            }
        }
        for missing in state.addresses.difference(&current) {
            if !is_kernel_managed_address(missing) {
                note(
                    format!("add address {missing} to {name}"),
                    host.add_address(name, *missing),
                );
            }
        }
    }
    match host.routes() {
        Err(err) => note("list routes".to_owned(), Err(err)),
        Ok(routes) => {
            let current: BTreeSet<Route> = routes
                .into_iter()
                .filter(|r| before.links.contains_key(&r.link))
                .collect();
            for extra in current.difference(&before.routes) {
                if !extra.is_kernel_managed() {
                    note(format!("delete route {extra}"), host.delete_route(extra));
                }
            }
            let mut missing: Vec<&Route> = before
                .routes
                .difference(&current)
                .filter(|r| !r.is_kernel_managed())
                .collect();
            missing.sort_by_key(|r| r.gateway.is_some());
            for route in missing {
                note(format!("add route {route}"), host.add_route(route));
            }
        }
    }
    for (name, state) in &before.links {
        if state.is_some() && !now.contains_key(name.as_str()) {
            failures.push(format!("link {name} has vanished and cannot be recreated"));
        }
    }

    if failures.is_empty() {
        match Snapshot::capture(host, before.links.keys().map(String::as_str)) {
            Ok(after) => failures.extend(before.restorable().differences(&after.restorable())),
            Err(err) => failures.push(format!("read the state back: {err}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(RestoreError { failures })
    }
}

/// Why a guarded change did not happen (or was undone).
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// An earlier change was never confirmed or reverted.
    #[error("an unconfirmed change is recorded at {path}; recover it before making another")]
    PendingExists {
        /// The record.
        path: PathBuf,
    },
    /// The plan names an impossible link or route; nothing was changed.
    #[error("invalid change: {0}")]
    Invalid(#[source] HostError),
    /// Reading the host's state failed: before the change (nothing was changed) or after it (the
    /// change was reverted).
    #[error("reading the host's state failed: {0}")]
    Snapshot(#[source] HostError),
    /// The pending record could not be written, read or removed.
    #[error("pending-change record {path}: {source}")]
    Record {
        /// The record.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The pending record is not one this agent can use; it is left in place for a human.
    #[error("pending-change record {path} is unusable ({reason}); the host was not touched")]
    CorruptRecord {
        /// The record.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A step failed; the previous state was restored.
    #[error("step {} ({step}) failed: {source}; the previous state was restored", index + 1)]
    StepFailed {
        /// Index of the step in the plan (0-based; the message counts from 1).
        index: usize,
        /// The step.
        step: String,
        /// Why.
        source: HostError,
    },
    /// The change was applied but the management peer was unreachable afterwards; the previous
    /// state was restored.
    #[error(
        "connectivity check failed after the change: {source}; the previous state was restored"
    )]
    CheckFailed {
        /// The check's complaint.
        source: CheckError,
    },
    /// The change worked but its record could not be removed; it was reverted, as start-up recovery
    /// would have done.
    #[error("confirming the change failed ({path}: {source}); the previous state was restored")]
    ConfirmFailed {
        /// The record.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Something failed and going back failed too. The record is kept: start-up recovery retries.
    #[error(
        "{cause}; restoring the previous state failed too: {source}; the record {} is kept for recovery",
        path.display()
    )]
    RevertFailed {
        /// What made the revert necessary.
        cause: String,
        /// What is still wrong.
        source: RestoreError,
        /// The record.
        path: PathBuf,
    },
}

impl Classify for ChangeError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::PendingExists { .. } | Self::CheckFailed { .. } => ErrorClass::Conflict,
            Self::Invalid(_) => ErrorClass::BadRequest,
            Self::Snapshot(err) | Self::StepFailed { source: err, .. } => err.class(),
            Self::Record { .. }
            | Self::CorruptRecord { .. }
            | Self::ConfirmFailed { .. }
            | Self::RevertFailed { .. } => ErrorClass::Internal,
        }
    }
}

/// Applies `plan`, keeps it only if `check` passes afterwards, and otherwise restores the previous
/// state exactly. See the module documentation for the sequence and the crash guarantees.
///
/// `pending` is the record's path (on persistent storage, in a directory that exists; the agent
/// keeps it in its state directory). Returns the state of the plan's links after the change.
pub fn apply_guarded(
    host: &dyn HostNetwork,
    check: &dyn ConnectivityCheck,
    plan: &ChangePlan,
    pending: &Path,
) -> Result<Snapshot, ChangeError> {
    let record_err = |source| ChangeError::Record {
        path: pending.to_owned(),
        source,
    };
    if pending::exists(pending).map_err(record_err)? {
        return Err(ChangeError::PendingExists {
            path: pending.to_owned(),
        });
    }
    plan.validate().map_err(ChangeError::Invalid)?;
    let links = plan.links();
    let before =
        Snapshot::capture(host, links.iter().map(String::as_str)).map_err(ChangeError::Snapshot)?;
    let record = PendingChange {
        version: RECORD_VERSION,
        started_at: jiff::Timestamp::now(),
        plan: plan.clone(),
        before,
    };
    pending::write(pending, &record).map_err(record_err)?;
    tracing::info!(change = %plan.description, steps = plan.steps.len(), "applying guarded host network change");

    for (index, step) in plan.steps.iter().enumerate() {
        if let Err(source) = step.apply(host) {
            let failure = ChangeError::StepFailed {
                index,
                step: step.to_string(),
                source,
            };
            return Err(revert(host, &record, pending, failure));
        }
    }
    if let Err(source) = check.check() {
        return Err(revert(
            host,
            &record,
            pending,
            ChangeError::CheckFailed { source },
        ));
    }
    // Read before confirming: a change is kept only if everything about it worked.
    let after = match Snapshot::capture(host, links.iter().map(String::as_str)) {
        Ok(after) => after,
        Err(err) => return Err(revert(host, &record, pending, ChangeError::Snapshot(err))),
    };
    if let Err(source) = pending::remove(pending) {
        let failure = ChangeError::ConfirmFailed {
            path: pending.to_owned(),
            source,
        };
        return Err(revert(host, &record, pending, failure));
    }
    tracing::info!(change = %plan.description, "guarded host network change confirmed");
    Ok(after)
}

/// Restores `record.before`; returns `failure` if that worked, a [`ChangeError::RevertFailed`] if
/// not.
fn revert(
    host: &dyn HostNetwork,
    record: &PendingChange,
    pending: &Path,
    failure: ChangeError,
) -> ChangeError {
    tracing::warn!(change = %record.plan.description, error = %failure, "reverting host network change");
    match restore(host, &record.before) {
        Ok(()) => {
            if let Err(err) = pending::remove(pending) {
                // The host is back; start-up recovery will find nothing left to do.
                tracing::warn!(path = %pending.display(), error = %err, "could not remove the pending-change record after reverting");
            }
            failure
        }
        Err(source) => {
            tracing::error!(change = %record.plan.description, error = %source, "revert of host network change failed");
            ChangeError::RevertFailed {
                cause: failure.to_string(),
                source,
                path: pending.to_owned(),
            }
        }
    }
}

/// At start-up: reverts a change that was never confirmed, and removes its record. `Ok(None)`: there
/// was none. Must run before anything else changes the host's links.
pub fn recover_pending(
    host: &dyn HostNetwork,
    pending: &Path,
) -> Result<Option<PendingChange>, ChangeError> {
    let record = match pending::read(pending) {
        Ok(None) => return Ok(None),
        Ok(Some(record)) => record,
        Err(ReadError::Io(source)) => {
            return Err(ChangeError::Record {
                path: pending.to_owned(),
                source,
            });
        }
        Err(ReadError::Corrupt(reason)) => {
            return Err(ChangeError::CorruptRecord {
                path: pending.to_owned(),
                reason,
            });
        }
    };
    tracing::warn!(change = %record.plan.description, started_at = %record.started_at, "reverting unconfirmed host network change");
    match restore(host, &record.before) {
        Ok(()) => {
            pending::remove(pending).map_err(|source| ChangeError::Record {
                path: pending.to_owned(),
                source,
            })?;
            tracing::info!(change = %record.plan.description, "unconfirmed host network change reverted");
            Ok(Some(record))
        }
        Err(source) => Err(ChangeError::RevertFailed {
            cause: format!(
                "change {:?} from {} was never confirmed",
                record.plan.description, record.started_at
            ),
            source,
            path: pending.to_owned(),
        }),
    }
}
