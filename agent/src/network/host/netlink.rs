//! [`HostNetwork`] over rtnetlink. No netlink type leaves this file.
//!
//! **Threading.** rtnetlink is async; the agent's reconcilers call host effects from blocking
//! threads. A `NetlinkHost` owns one worker thread running a current-thread tokio runtime, the
//! netlink socket and its connection task; each call sends a job over a channel and blocks on the
//! reply (with a timeout, so a wedged kernel call cannot hang a reconciler forever). Jobs run one at
//! a time, in order: a "check, then act" sequence (is the address there? add it) is not interleaved
//! with another caller's. The public methods must not be called from inside an async task (they
//! block); use `spawn_blocking`.
//!
//! **Network namespaces.** A netlink socket acts in the namespace it was opened in, for its whole
//! life. The worker thread opens it, and a new thread starts in the namespace of the thread that
//! spawned it, so [`NetlinkHost::new`] acts in the constructing thread's namespace.
//! [`NetlinkHost::with_setup`] runs a caller-supplied function on the worker thread before the
//! socket is opened — that is where a `setns(2)` into `/run/netns/<name>` goes, affecting only the
//! worker thread and not the caller. (rtnetlink's `NetworkNamespace` only creates and deletes
//! namespaces; the agent has no safe `setns` without the `nix` crate, so the caller brings it.)
//!
//! **Idempotence.** Adds and deletes look first and act only on a difference; the kernel's
//! `EEXIST`/`ENODEV`/`EADDRNOTAVAIL`/`ESRCH` for a lost race are then read back the same way.

use super::{
    HostError, HostNetwork, Link, LinkKind, OperState, Route, RouteProtocol, validate_link_name,
};
use futures::TryStreamExt as _;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol as NlProtocol,
    RouteScope, RouteType, RouteVia,
};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

// Linux errno values the idempotent paths recognise (the agent only runs on Linux).
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EADDRNOTAVAIL: i32 = 99;

/// The main routing table.
const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

type Job = Box<dyn FnOnce(Handle) -> Pin<Box<dyn Future<Output = ()>>> + Send>;
type Setup = Box<dyn FnOnce() -> io::Result<()> + Send>;

/// The host's links through rtnetlink, in one network namespace. See the module documentation.
#[derive(Debug)]
pub struct NetlinkHost {
    jobs: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    worker: Option<JoinHandle<()>>,
    timeout: Duration,
}

impl NetlinkHost {
    /// How long a call waits for the kernel's answer by default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// Opens a netlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Self, HostError> {
        Self::spawn(None)
    }

    /// Runs `setup` on the worker thread before the socket is opened — typically a `setns(2)` into a
    /// named network namespace. An error from it fails the construction.
    pub fn with_setup(
        setup: impl FnOnce() -> io::Result<()> + Send + 'static,
    ) -> Result<Self, HostError> {
        Self::spawn(Some(Box::new(setup)))
    }

    /// Changes how long a call waits for the kernel.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn spawn(setup: Option<Setup>) -> Result<Self, HostError> {
        let (jobs, mut job_rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = sync_channel::<Result<(), String>>(1);
        let worker = std::thread::Builder::new()
            .name("host-netlink".to_owned())
            .spawn(move || {
                if let Some(setup) = setup
                    && let Err(err) = setup()
                {
                    let _ = ready_tx.send(Err(format!("network namespace setup failed: {err}")));
                    return;
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready_tx.send(Err(format!("tokio runtime: {err}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let (connection, handle, _) = match rtnetlink::new_connection() {
                        Ok(parts) => parts,
                        Err(err) => {
                            let _ = ready_tx.send(Err(format!("netlink socket: {err}")));
                            return;
                        }
                    };
                    tokio::spawn(connection);
                    let _ = ready_tx.send(Ok(()));
                    while let Some(job) = job_rx.recv().await {
                        job(handle.clone()).await;
                    }
                });
            })
            .map_err(|err| HostError::Unavailable(format!("spawn netlink thread: {err}")))?;
        let started = ready_rx.recv();
        let host = Self {
            jobs: Some(jobs),
            worker: Some(worker),
            timeout: Self::DEFAULT_TIMEOUT,
        };
        match started {
            Ok(Ok(())) => Ok(host),
            Ok(Err(message)) => Err(HostError::Unavailable(message)),
            Err(_) => Err(HostError::Unavailable(
                "netlink thread died while starting".to_owned(),
            )),
        }
    }

    /// Runs `op` on the worker and waits for its result.
    fn run<T, F, Fut>(&self, op: F) -> Result<T, HostError>
    where
        T: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, HostError>> + 'static,
    {
        let (reply_tx, reply_rx) = sync_channel(1);
        let job: Job = Box::new(move |handle| {
            Box::pin(async move {
                let _ = reply_tx.send(op(handle).await);
            })
        });
        let gone = || HostError::Unavailable("the netlink worker has stopped".to_owned());
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        match reply_rx.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(HostError::Unavailable(format!(
                "no answer from the kernel within {:?}",
                self.timeout
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(gone()),
        }
    }
}

impl Drop for NetlinkHost {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop; the socket closes with it.
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}

fn kernel(operation: &'static str, target: &str, err: rtnetlink::Error) -> HostError {
    let source = match err {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => io::Error::other(other.to_string()),
    };
    HostError::Kernel {
        operation,
        target: target.to_owned(),
        source,
    }
}

fn no_such_link(operation: &'static str, name: &str) -> HostError {
    HostError::NoSuchLink {
        operation,
        name: name.to_owned(),
    }
}

fn mac_string(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty()).then(|| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    })
}

fn oper_state(state: State) -> OperState {
    match state {
        State::Up => OperState::Up,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Dormant => OperState::Dormant,
        State::Unknown => OperState::Unknown,
        _ => OperState::Other,
    }
}

/// A link and its master's index (resolved to a name once all links are known).
fn parse_link(message: &LinkMessage) -> (Link, Option<u32>) {
    let mut link = Link {
        name: String::new(),
        index: message.header.index,
        kind: LinkKind::Device,
        mac: None,
        mtu: 0,
        admin_up: message.header.flags.contains(LinkFlags::Up),
        oper: OperState::Unknown,
        master: None,
    };
    let mut master = None;
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Address(bytes) => link.mac = mac_string(bytes),
            LinkAttribute::OperState(state) => link.oper = oper_state(*state),
            LinkAttribute::Controller(index) if *index != 0 => master = Some(*index),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = LinkKind::from_kernel_name(Some(&kind.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    (link, master)
}

fn parse_address(message: &AddressMessage) -> Option<IpNet> {
    let mut local = None;
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    // IPv4 reports the interface's own address as IFA_LOCAL (IFA_ADDRESS is the peer on
    // point-to-point links); IPv6 only as IFA_ADDRESS.
    IpNet::new(local.or(address)?, message.header.prefix_len).ok()
}

fn route_ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn gateway_of(attributes: &[RouteAttribute]) -> Option<IpAddr> {
    attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(address) => route_ip(address),
        RouteAttribute::Via(RouteVia::Inet(ip)) => Some(IpAddr::V4(*ip)),
        RouteAttribute::Via(RouteVia::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })
}

/// The unicast main-table routes in one route message (several for a multipath route).
fn parse_routes(message: &RouteMessage, names: &HashMap<u32, String>) -> Vec<Route> {
    let header = &message.header;
    let table = message
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(header.table));
    if table != MAIN_TABLE || header.kind != RouteType::Unicast {
        return Vec::new();
    }
    let ipv6 = match header.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return Vec::new(),
    };
    let mut destination = None;
    let mut source = None;
    let mut link = None;
    let mut metric = 0;
    let mut hops = Vec::new();
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(address) => destination = route_ip(address),
            RouteAttribute::PrefSource(address) => source = route_ip(address),
            RouteAttribute::Oif(index) => link = Some(*index),
            RouteAttribute::Priority(priority) => metric = *priority,
            RouteAttribute::MultiPath(next_hops) => {
                hops.extend(
                    next_hops
                        .iter()
                        .map(|h| (h.interface_index, gateway_of(&h.attributes))),
                );
            }
            _ => {}
        }
    }
    if hops.is_empty() {
        let Some(link) = link else {
            return Vec::new();
        };
        hops.push((link, gateway_of(&message.attributes)));
    }
    let destination = match (destination, ipv6) {
        (Some(ip), _) => IpNet::new(ip, header.destination_prefix_length).ok(),
        (None, false) => Some(IpNet::V4(Ipv4Net::default())),
        (None, true) => Some(IpNet::V6(Ipv6Net::default())),
    };
    let Some(destination) = destination else {
        return Vec::new();
    };
    let protocol = RouteProtocol::from_number(u8::from(header.protocol));
    hops.into_iter()
        .filter_map(|(index, gateway)| {
            Some(Route {
                destination,
                gateway,
                link: names.get(&index)?.clone(),
                metric,
                source,
                protocol,
            })
        })
        .collect()
}

/// The route as a netlink message. `for_delete`: scope "nowhere", which the kernel takes as "any".
fn route_message(route: &Route, index: u32, for_delete: bool) -> Result<RouteMessage, HostError> {
    // rtnetlink does not export its error type for this; only its message matters.
    fn invalid(err: impl std::fmt::Display) -> HostError {
        HostError::Invalid {
            operation: "route",
            reason: err.to_string(),
        }
    }
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.destination.addr(), route.destination.prefix_len())
        .map_err(invalid)?;
    if let Some(gateway) = route.gateway {
        builder = builder.gateway(gateway).map_err(invalid)?;
    }
    if let Some(source) = route.source {
        builder = builder.pref_source(source).map_err(invalid)?;
    }
    let scope = if for_delete {
        RouteScope::NoWhere
    } else if route.gateway.is_none() && !route.is_ipv6() {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    Ok(builder
        .output_interface(index)
        .priority(route.metric)
        .protocol(NlProtocol::from(route.protocol.to_number()))
        .scope(scope)
        .build())
}

async fn link_message(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, HostError> {
    let mut stream = handle.link().get().match_name(name.to_owned()).execute();
    match stream.try_next().await {
        Ok(found) => Ok(found),
        Err(err) if errno(&err) == Some(ENODEV) => Ok(None),
        Err(err) => Err(kernel("look up link", name, err)),
    }
}

async fn index_of(handle: &Handle, operation: &'static str, name: &str) -> Result<u32, HostError> {
    link_message(handle, name)
        .await?
        .map(|m| m.header.index)
        .ok_or_else(|| no_such_link(operation, name))
}

async fn all_links(handle: &Handle) -> Result<Vec<Link>, HostError> {
    let mut stream = handle.link().get().execute();
    let mut parsed = Vec::new();
    while let Some(message) = stream
        .try_next()
        .await
        .map_err(|e| kernel("list links", "", e))?
    {
        parsed.push(parse_link(&message));
    }
    let names: HashMap<u32, String> = parsed
        .iter()
        .map(|(link, _)| (link.index, link.name.clone()))
        .collect();
    Ok(parsed
        .into_iter()
        .map(|(mut link, master)| {
            link.master = master.and_then(|index| names.get(&index).cloned());
            link
        })
        .collect())
}

async fn address_messages(
    handle: &Handle,
    index: u32,
    name: &str,
) -> Result<Vec<AddressMessage>, HostError> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut out = Vec::new();
    while let Some(message) = stream
        .try_next()
        .await
        .map_err(|e| kernel("list addresses", name, e))?
    {
        out.push(message);
    }
    Ok(out)
}

async fn all_routes(handle: &Handle) -> Result<Vec<Route>, HostError> {
    let names: HashMap<u32, String> = all_links(handle)
        .await?
        .into_iter()
        .map(|l| (l.index, l.name))
        .collect();
    let requests = [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ];
    let mut routes = Vec::new();
    for request in requests {
        let mut stream = handle.route().get(request).execute();
        while let Some(message) = stream
            .try_next()
            .await
            .map_err(|e| kernel("list routes", "", e))?
        {
            routes.extend(parse_routes(&message, &names));
        }
    }
    Ok(routes)
}

async fn set_link(
    handle: &Handle,
    operation: &'static str,
    name: &str,
    build: impl FnOnce(LinkMessageBuilder<LinkUnspec>) -> LinkMessageBuilder<LinkUnspec>,
) -> Result<(), HostError> {
    let index = index_of(handle, operation, name).await?;
    let message = build(LinkUnspec::new_with_index(index)).build();
    handle
        .link()
        .set(message)
        .execute()
        .await
        .map_err(|e| kernel(operation, name, e))
}

async fn create_bridge(handle: &Handle, name: &str) -> Result<(), HostError> {
    let existing_kind = async |handle: &Handle| -> Result<Option<LinkKind>, HostError> {
        Ok(link_message(handle, name)
            .await?
            .map(|m| parse_link(&m).0.kind))
    };
    let conflict = |kind: LinkKind| HostError::Conflict {
        operation: "create bridge",
        target: name.to_owned(),
        reason: format!("a {kind:?} link of that name exists"),
    };
    match existing_kind(handle).await? {
        Some(LinkKind::Bridge) => return Ok(()),
        Some(kind) => return Err(conflict(kind)),
        None => {}
    }
    let message = LinkMessageBuilder::<LinkBridge>::new(name).build();
    match handle.link().add(message).execute().await {
        Ok(()) => Ok(()),
        Err(err) if errno(&err) == Some(EEXIST) => match existing_kind(handle).await? {
            Some(LinkKind::Bridge) => Ok(()),
            Some(kind) => Err(conflict(kind)),
            None => Err(kernel("create bridge", name, err)),
        },
        Err(err) => Err(kernel("create bridge", name, err)),
    }
}

async fn delete_link(handle: &Handle, name: &str) -> Result<(), HostError> {
    let Some(message) = link_message(handle, name).await? else {
        return Ok(());
    };
    match handle.link().del(message.header.index).execute().await {
        Ok(()) => Ok(()),
        Err(err) if errno(&err) == Some(ENODEV) => Ok(()),
        Err(err) => Err(kernel("delete link", name, err)),
    }
}

async fn set_master(handle: &Handle, name: &str, master: Option<&str>) -> Result<(), HostError> {
    let master_index = match master {
        Some(master) => Some(index_of(handle, "set master", master).await?),
        None => None,
    };
    set_link(handle, "set master", name, |b| match master_index {
        Some(index) => b.controller(index),
        None => b.nocontroller(),
    })
    .await
}

async fn addresses(handle: &Handle, name: &str) -> Result<Vec<IpNet>, HostError> {
    let index = index_of(handle, "list addresses", name).await?;
    Ok(address_messages(handle, index, name)
        .await?
        .iter()
        .filter_map(parse_address)
        .collect())
}

async fn add_address(handle: &Handle, name: &str, address: IpNet) -> Result<(), HostError> {
    let target = format!("{address} on {name}");
    let index = index_of(handle, "add address", name).await?;
    let present = async || -> Result<bool, HostError> {
        Ok(address_messages(handle, index, name)
            .await?
            .iter()
            .any(|m| parse_address(m) == Some(address)))
    };
    if present().await? {
        return Ok(());
    }
    match handle
        .address()
        .add(index, address.addr(), address.prefix_len())
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(err) if errno(&err) == Some(EEXIST) && present().await? => Ok(()),
        Err(err) => Err(kernel("add address", &target, err)),
    }
}

async fn delete_address(handle: &Handle, name: &str, address: IpNet) -> Result<(), HostError> {
    let index = index_of(handle, "delete address", name).await?;
    let found = address_messages(handle, index, name)
        .await?
        .into_iter()
        .find(|m| parse_address(m) == Some(address));
    let Some(message) = found else {
        return Ok(());
    };
    match handle.address().del(message).execute().await {
        Ok(()) => Ok(()),
        Err(err) if errno(&err) == Some(EADDRNOTAVAIL) => Ok(()),
        Err(err) => Err(kernel(
            "delete address",
            &format!("{address} on {name}"),
            err,
        )),
    }
}

async fn add_route(handle: &Handle, route: Route) -> Result<(), HostError> {
    let target = route.to_string();
    let index = index_of(handle, "add route", &route.link).await?;
    if all_routes(handle).await?.contains(&route) {
        return Ok(());
    }
    let message = route_message(&route, index, false)?;
    match handle.route().add(message).execute().await {
        Ok(()) => Ok(()),
        Err(err) if errno(&err) == Some(EEXIST) => {
            let routes = all_routes(handle).await?;
            if routes.contains(&route) {
                return Ok(());
            }
            let clash = routes
                .iter()
                .find(|r| r.destination == route.destination && r.metric == route.metric)
                .map_or_else(|| "another route".to_owned(), ToString::to_string);
            Err(HostError::Conflict {
                operation: "add route",
                target,
                reason: format!("{clash} has the same destination and metric"),
            })
        }
        Err(err) => Err(kernel("add route", &target, err)),
    }
}

async fn delete_route(handle: &Handle, route: Route) -> Result<(), HostError> {
    if !all_routes(handle).await?.contains(&route) {
        return Ok(());
    }
    let index = index_of(handle, "delete route", &route.link).await?;
    let message = route_message(&route, index, true)?;
    match handle.route().del(message).execute().await {
        Ok(()) => Ok(()),
        Err(err) if errno(&err) == Some(ESRCH) => Ok(()),
        Err(err) => Err(kernel("delete route", &route.to_string(), err)),
    }
}

impl HostNetwork for NetlinkHost {
    fn links(&self) -> Result<Vec<Link>, HostError> {
        self.run(async |handle| all_links(&handle).await)
    }

    fn link(&self, name: &str) -> Result<Option<Link>, HostError> {
        validate_link_name(name)?;
        let name = name.to_owned();
        self.run(async move |handle| {
            // One lookup for the link, a listing only to name its master.
            let Some(message) = link_message(&handle, &name).await? else {
                return Ok(None);
            };
            let (mut link, master) = parse_link(&message);
            if let Some(master) = master {
                link.master = all_links(&handle)
                    .await?
                    .into_iter()
                    .find(|l| l.index == master)
                    .map(|l| l.name);
            }
            Ok(Some(link))
        })
    }

    fn create_bridge(&self, name: &str) -> Result<(), HostError> {
        validate_link_name(name)?;
        let name = name.to_owned();
        self.run(async move |handle| create_bridge(&handle, &name).await)
    }

    fn delete_link(&self, name: &str) -> Result<(), HostError> {
        validate_link_name(name)?;
        let name = name.to_owned();
        self.run(async move |handle| delete_link(&handle, &name).await)
    }

    fn set_master(&self, name: &str, master: Option<&str>) -> Result<(), HostError> {
        validate_link_name(name)?;
        if let Some(master) = master {
            validate_link_name(master)?;
        }
        let name = name.to_owned();
        let master = master.map(str::to_owned);
        self.run(async move |handle| set_master(&handle, &name, master.as_deref()).await)
    }

    fn set_up(&self, name: &str, up: bool) -> Result<(), HostError> {
        validate_link_name(name)?;
        let name = name.to_owned();
        self.run(async move |handle| {
            set_link(
                &handle,
                "set up",
                &name,
                |b| if up { b.up() } else { b.down() },
            )
            .await
        })
    }

    fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), HostError> {
        validate_link_name(name)?;
        let name = name.to_owned();
        self.run(async move |handle| set_link(&handle, "set mtu", &name, |b| b.mtu(mtu)).await)
    }

    fn addresses(&self, name: &str) -> Result<Vec<IpNet>, HostError> {
        validate_link_name(name)?;
        let name = name.to_owned();
        self.run(async move |handle| addresses(&handle, &name).await)
    }

    fn add_address(&self, name: &str, address: IpNet) -> Result<(), HostError> {
        validate_link_name(name)?;
        let name = name.to_owned();
        self.run(async move |handle| add_address(&handle, &name, address).await)
    }

    fn delete_address(&self, name: &str, address: IpNet) -> Result<(), HostError> {
        validate_link_name(name)?;
        let name = name.to_owned();
        self.run(async move |handle| delete_address(&handle, &name, address).await)
    }

    fn routes(&self) -> Result<Vec<Route>, HostError> {
        self.run(async |handle| all_routes(&handle).await)
    }

    fn add_route(&self, route: &Route) -> Result<(), HostError> {
        route.validate()?;
        let route = route.clone().normalized();
        self.run(async move |handle| add_route(&handle, route).await)
    }

    fn delete_route(&self, route: &Route) -> Result<(), HostError> {
        route.validate()?;
        let route = route.clone().normalized();
        self.run(async move |handle| delete_route(&handle, route).await)
    }
}
