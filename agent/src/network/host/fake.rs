//! An in-memory host for unit tests: links, addresses and routes with the kernel side effects a
//! guarded uplink change runs into, plus failure injection and a toy reachability model.
//!
//! Kernel behaviour copied here (each one can strand a site if a revert forgets it):
//! - an IPv4 address on an up link brings a prefix route (`proto kernel scope link src …`), an IPv6
//!   address one with metric 256; deleting the address takes it away;
//! - deleting a link's last IPv4 address flushes every IPv4 route through that link (the default
//!   route too);
//! - setting a link down flushes its IPv4 routes and drops its IPv6 addresses and routes
//!   (`keep_addr_on_down=0`, the default);
//! - deleting a bridge releases its ports;
//! - IPv4 routes need their link up and their gateway on a connected prefix; two IPv4 routes with
//!   the same destination and metric clash; IPv6 ones coexist (they would form a multipath route).
//!
//! Not modelled: secondary IPv4 addresses and their promotion, IPv6 link-local autoconfiguration,
//! DAD. The same behaviours are proven against the real kernel in `tests/tests/host_network.rs`.

use super::{HostError, HostNetwork, Link, LinkKind, OperState, Route, RouteProtocol};
use super::{MAX_LINK_NAME, validate_link_name};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The metric the kernel gives IPv6 prefix routes.
const IPV6_PREFIX_ROUTE_METRIC: u32 = 256;

#[derive(Debug, Clone)]
struct FakeLink {
    index: u32,
    kind: LinkKind,
    mtu: u32,
    admin_up: bool,
    /// Whether a cable is plugged in (for devices and veths: the far end answers).
    carrier: bool,
    master: Option<String>,
    addresses: BTreeSet<IpNet>,
}

#[derive(Debug, Default)]
struct State {
    links: BTreeMap<String, FakeLink>,
    routes: BTreeSet<Route>,
    next_index: u32,
    fail_once: HashSet<&'static str>,
    fail_always: HashSet<&'static str>,
    calls: Vec<String>,
}

impl State {
    fn link(&self, operation: &'static str, name: &str) -> Result<&FakeLink, HostError> {
        validate_link_name(name)?;
        self.links.get(name).ok_or_else(|| HostError::NoSuchLink {
            operation,
            name: name.to_owned(),
        })
    }

    fn link_mut(
        &mut self,
        operation: &'static str,
        name: &str,
    ) -> Result<&mut FakeLink, HostError> {
        validate_link_name(name)?;
        self.links
            .get_mut(name)
            .ok_or_else(|| HostError::NoSuchLink {
                operation,
                name: name.to_owned(),
            })
    }

    /// Whether a link passes traffic: up, with carrier; a bridge needs a port that passes traffic.
    fn oper_up(&self, name: &str) -> bool {
        let Some(link) = self.links.get(name) else {
            return false;
        };
        if !link.admin_up {
            return false;
        }
        match link.kind {
            LinkKind::Bridge => self
                .links
                .iter()
                .any(|(port, l)| l.master.as_deref() == Some(name) && self.oper_up(port)),
            _ => link.carrier,
        }
    }

    fn prefix_route(link: &str, address: IpNet) -> Option<Route> {
        match address {
            IpNet::V4(net) if net.prefix_len() == 32 => None,
            IpNet::V4(_) => Some(Route {
                source: Some(address.addr()),
                protocol: RouteProtocol::Kernel,
                ..Route::on_link(address.trunc(), link)
            }),
            IpNet::V6(_) => Some(Route {
                metric: IPV6_PREFIX_ROUTE_METRIC,
                protocol: RouteProtocol::Kernel,
                ..Route::on_link(address.trunc(), link)
            }),
        }
    }

    fn flush_routes(&mut self, link: &str, ipv6: bool) {
        self.routes
            .retain(|r| r.link != link || r.is_ipv6() != ipv6);
    }

    fn on_link_gateway(link: &FakeLink, gateway: IpAddr) -> bool {
        link.addresses.iter().any(|a| a.contains(&gateway))
    }

    fn is_local_address(&self, address: IpAddr) -> bool {
        self.links
            .values()
            .any(|l| l.addresses.iter().any(|a| a.addr() == address))
    }
}

/// The fake host. Cheap to share behind an `Arc`; every call is recorded.
#[derive(Debug, Default)]
pub struct FakeHost {
    state: Mutex<State>,
}

fn injected(operation: &'static str, target: &str) -> HostError {
    HostError::Kernel {
        operation,
        target: target.to_owned(),
        source: io::Error::other("injected failure"),
    }
}

fn kernel(operation: &'static str, target: impl Into<String>, errno_text: &str) -> HostError {
    HostError::Kernel {
        operation,
        target: target.into(),
        source: io::Error::other(errno_text.to_owned()),
    }
}

impl FakeHost {
    /// An empty host (not even `lo`).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enter(
        &self,
        operation: &'static str,
        target: &str,
    ) -> Result<MutexGuard<'_, State>, HostError> {
        let mut state = self.lock();
        state.calls.push(format!("{operation}:{target}"));
        if state.fail_always.contains(operation) || state.fail_once.remove(operation) {
            return Err(injected(operation, target));
        }
        Ok(state)
    }

    /// Plants a device (a NIC, a veth…) as if the system had it: down, carrier present, MTU 1500.
    pub fn add_device(&self, name: &str, kind: LinkKind) {
        assert!(name.len() <= MAX_LINK_NAME, "fake link name too long");
        let mut state = self.lock();
        state.next_index += 1;
        let index = state.next_index + 1; // 1 is lo's on a real host
        state.links.insert(
            name.to_owned(),
            FakeLink {
                index,
                kind,
                mtu: 1500,
                admin_up: false,
                carrier: true,
                master: None,
                addresses: BTreeSet::new(),
            },
        );
    }

    /// Plugs or unplugs a device's cable.
    pub fn set_carrier(&self, name: &str, carrier: bool) {
        if let Some(link) = self.lock().links.get_mut(name) {
            link.carrier = carrier;
        }
    }

    /// Makes the next call of `operation` (a [`HostNetwork`] method name: `add_address`, `set_up`, …)
    /// fail.
    pub fn fail_once(&self, operation: &'static str) {
        self.lock().fail_once.insert(operation);
    }

    /// Makes every call of `operation` fail (`false`: stop).
    pub fn fail_always(&self, operation: &'static str, fail: bool) {
        let mut state = self.lock();
        if fail {
            state.fail_always.insert(operation);
        } else {
            state.fail_always.remove(operation);
        }
    }

    /// Every call so far, as `operation:target`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// How traffic to `target` would leave: the output link and the next hop, if the best route
    /// to it goes out of a link that passes traffic (up, carrier, not a bridge port, with an
    /// address of the family, gateway on a connected prefix). `None`: unreachable.
    pub fn route_to(&self, target: IpAddr) -> Option<(String, IpAddr)> {
        let state = self.lock();
        let best = state
            .routes
            .iter()
            .filter(|r| r.destination.contains(&target))
            .min_by_key(|r| (std::cmp::Reverse(r.destination.prefix_len()), r.metric))?;
        let link = state.links.get(&best.link)?;
        let has_address = link
            .addresses
            .iter()
            .any(|a| a.addr().is_ipv4() == target.is_ipv4());
        let next_hop = best.gateway.unwrap_or(target);
        let usable = state.oper_up(&best.link)
            && link.master.is_none()
            && has_address
            && State::on_link_gateway(link, next_hop);
        usable.then(|| (best.link.clone(), next_hop))
    }
}

impl HostNetwork for FakeHost {
    fn links(&self) -> Result<Vec<Link>, HostError> {
        let state = self.enter("links", "")?;
        Ok(state
            .links
            .iter()
            .map(|(name, l)| Link {
                name: name.clone(),
                index: l.index,
                kind: l.kind.clone(),
                mac: Some(format!(
                    "02:00:00:00:{:02x}:{:02x}",
                    (l.index >> 8) & 0xff,
                    l.index & 0xff
                )),
                mtu: l.mtu,
                admin_up: l.admin_up,
                oper: if state.oper_up(name) {
                    OperState::Up
                } else {
                    OperState::Down
                },
                master: l.master.clone(),
            })
            .collect())
    }

    fn create_bridge(&self, name: &str) -> Result<(), HostError> {
        validate_link_name(name)?;
        let state = self.enter("create_bridge", name)?;
        if let Some(existing) = state.links.get(name) {
            return if existing.kind == LinkKind::Bridge {
                Ok(())
            } else {
                Err(HostError::Conflict {
                    operation: "create bridge",
                    target: name.to_owned(),
                    reason: format!("a {:?} link of that name exists", existing.kind),
                })
            };
        }
        drop(state);
        self.add_device(name, LinkKind::Bridge);
        Ok(())
    }

    fn delete_link(&self, name: &str) -> Result<(), HostError> {
        validate_link_name(name)?;
        let mut state = self.enter("delete_link", name)?;
        if state.links.remove(name).is_none() {
            return Ok(());
        }
        for link in state.links.values_mut() {
            if link.master.as_deref() == Some(name) {
                link.master = None;
            }
        }
        state.routes.retain(|r| r.link != name);
        Ok(())
    }

    fn set_master(&self, name: &str, master: Option<&str>) -> Result<(), HostError> {
        let mut state = self.enter("set_master", name)?;
        state.link("set master", name)?;
        if let Some(master) = master {
            let bridge = state.link("set master", master)?;
            if bridge.kind != LinkKind::Bridge {
                return Err(kernel(
                    "set master",
                    name,
                    &format!("{master} is not a bridge"),
                ));
            }
            if master == name || state.links[name].kind == LinkKind::Bridge {
                return Err(kernel(
                    "set master",
                    name,
                    "too many levels of symbolic links (ELOOP)",
                ));
            }
        }
        state.link_mut("set master", name)?.master = master.map(str::to_owned);
        Ok(())
    }

    fn set_up(&self, name: &str, up: bool) -> Result<(), HostError> {
        let mut state = self.enter("set_up", name)?;
        let link = state.link_mut("set up", name)?;
        if link.admin_up == up {
            return Ok(());
        }
        link.admin_up = up;
        if up {
            let v4: Vec<IpNet> = link
                .addresses
                .iter()
                .filter(|a| matches!(a, IpNet::V4(_)))
                .copied()
                .collect();
            for address in v4 {
                if let Some(route) = State::prefix_route(name, address) {
                    state.routes.insert(route);
                }
            }
        } else {
            link.addresses.retain(|a| matches!(a, IpNet::V4(_)));
            state.flush_routes(name, false);
            state.flush_routes(name, true);
        }
        Ok(())
    }

    fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), HostError> {
        let mut state = self.enter("set_mtu", name)?;
        if !(68..=65535).contains(&mtu) {
            return Err(kernel("set mtu", name, "invalid argument (EINVAL)"));
        }
        state.link_mut("set mtu", name)?.mtu = mtu;
        Ok(())
    }

    fn addresses(&self, name: &str) -> Result<Vec<IpNet>, HostError> {
        let state = self.enter("addresses", name)?;
        Ok(state
            .link("addresses", name)?
            .addresses
            .iter()
            .copied()
            .collect())
    }

    fn add_address(&self, name: &str, address: IpNet) -> Result<(), HostError> {
        let mut state = self.enter("add_address", name)?;
        let link = state.link_mut("add address", name)?;
        if !link.addresses.insert(address) {
            return Ok(());
        }
        let kernel_route = link.admin_up || matches!(address, IpNet::V6(_));
        if kernel_route && let Some(route) = State::prefix_route(name, address) {
            state.routes.insert(route);
        }
        Ok(())
    }

    fn delete_address(&self, name: &str, address: IpNet) -> Result<(), HostError> {
        let mut state = self.enter("delete_address", name)?;
        let link = state.link_mut("delete address", name)?;
        if !link.addresses.remove(&address) {
            return Ok(());
        }
        let same_prefix_left = link.addresses.iter().any(|a| a.trunc() == address.trunc());
        let v4_left = link.addresses.iter().any(|a| matches!(a, IpNet::V4(_)));
        if !same_prefix_left && let Some(route) = State::prefix_route(name, address) {
            state.routes.remove(&route);
        }
        // Routes preferring the address as source go with it (fib_sync_down_addr).
        state.routes.retain(|r| r.source != Some(address.addr()));
        if matches!(address, IpNet::V4(_)) && !v4_left {
            state.flush_routes(name, false);
        }
        Ok(())
    }

    fn routes(&self) -> Result<Vec<Route>, HostError> {
        let state = self.enter("routes", "")?;
        Ok(state.routes.iter().cloned().collect())
    }

    fn add_route(&self, route: &Route) -> Result<(), HostError> {
        route.validate()?;
        let route = route.clone().normalized();
        let target = route.to_string();
        let mut state = self.enter("add_route", &target)?;
        let link = state.link("add route", &route.link)?;
        if !route.is_ipv6() {
            if !link.admin_up {
                return Err(kernel("add route", target, "network is down (ENETDOWN)"));
            }
            if let Some(gateway) = route.gateway
                && !State::on_link_gateway(link, gateway)
            {
                return Err(kernel(
                    "add route",
                    target,
                    "network is unreachable (ENETUNREACH)",
                ));
            }
        }
        if let Some(source) = route.source
            && !state.is_local_address(source)
        {
            return Err(kernel("add route", target, "invalid argument (EINVAL)"));
        }
        if state.routes.contains(&route) {
            return Ok(());
        }
        if !route.is_ipv6()
            && let Some(clash) = state
                .routes
                .iter()
                .find(|r| r.destination == route.destination && r.metric == route.metric)
        {
            return Err(HostError::Conflict {
                operation: "add route",
                target,
                reason: format!("route {clash} has the same destination and metric"),
            });
        }
        state.routes.insert(route);
        Ok(())
    }

    fn delete_route(&self, route: &Route) -> Result<(), HostError> {
        route.validate()?;
        let route = route.clone().normalized();
        let mut state = self.enter("delete_route", &route.to_string())?;
        state.routes.remove(&route);
        Ok(())
    }
}
