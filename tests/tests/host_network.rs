//! The host-network layer against the real kernel, each test in fresh network namespaces of its
//! own: links, bridges, addresses and routes through `NetlinkHost`, and guarded uplink changes — a
//! change that cuts the node off from its "remote" (a second namespace behind a veth) is reverted
//! exactly, a good one is kept, and an unconfirmed one is reverted at start-up. Needs root.
//!
//! `ip` is used only for set-up (namespaces, veth pairs, the remote side) and as an independent
//! witness of what the agent's netlink code reads back. IPv6 link-local autoconfiguration is turned
//! off in the namespaces: link-locals appear asynchronously once a link has carrier, and these tests
//! compare whole snapshots without waiting on anything.

use scs_edge_agent::network::host::ConnectivityCheck as _;
use scs_edge_agent::network::host::{
    ChangeError, ChangePlan, FakeCheck, HostError, HostNetwork, IpNet, LinkKind, NetlinkHost,
    Route, RouteProtocol, Snapshot, TcpConnectCheck, apply_guarded, recover_pending,
};
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// Runs `ip` and insists it worked.
fn ip_cmd(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Moves the calling thread into the network namespace at `path`.
#[allow(unsafe_code)]
fn enter(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: setns(2) reads a file descriptor that `file` keeps open across the call, and changes
    // only the calling thread's network namespace, which no Rust invariant depends on.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A network namespace of this test process, deleted on drop (also when the test panics).
struct Netns {
    name: String,
}

impl Netns {
    fn new(role: &str) -> Self {
        let name = format!(
            "scs-hn-{role}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        ip_cmd(&["netns", "add", &name]);
        let ns = Self { name };
        // No IPv6 link-local autoconfiguration on links created from now on (see the module docs).
        ns.in_it(|| {
            std::fs::write("/proc/sys/net/ipv6/conf/default/addr_gen_mode", "1")
                .expect("addr_gen_mode");
        });
        ns
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> …`
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip_cmd(&all)
    }

    /// `ip -n <ns> -j …`, parsed.
    fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ip(&all)).expect("ip -j output")
    }

    /// Runs `f` on a thread inside the namespace (sockets it opens stay there).
    fn in_it<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                enter(&path).expect("setns");
                f()
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A netlink host bound to this namespace from any thread.
    fn host(&self) -> NetlinkHost {
        let path = self.path();
        NetlinkHost::with_setup(move || enter(&path)).expect("netlink host in namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn links_addresses_and_routes_round_trip_through_netlink() {
    let ns = Netns::new("links");
    ns.ip(&[
        "link", "add", "hn-v0", "type", "veth", "peer", "name", "hn-v1",
    ]);
    let details = ns.ip_json(&["-d", "link", "show", "dev", "hn-v0"]);
    assert_eq!(
        details[0]["inet6_addr_gen_mode"], "none",
        "no IPv6 link-local autoconfiguration in the namespace: {details}"
    );
    let host = ns.host();

    // Bridges: created down, idempotent, no clash with other kinds.
    host.create_bridge("hn-br0").expect("create bridge");
    host.create_bridge("hn-br0").expect("create bridge again");
    assert!(matches!(
        host.create_bridge("hn-v0"),
        Err(HostError::Conflict { .. })
    ));
    let bridge = host.link("hn-br0").expect("lookup").expect("bridge exists");
    assert_eq!(bridge.kind, LinkKind::Bridge);
    assert!(!bridge.admin_up);
    let links = host.links().expect("links");
    let veth = links
        .iter()
        .find(|l| l.name == "hn-v0")
        .expect("hn-v0 listed");
    assert_eq!(veth.kind, LinkKind::Veth);
    assert!(veth.mac.as_deref().is_some_and(|m| m.len() == 17));
    assert!(
        links
            .iter()
            .any(|l| l.name == "lo" && l.kind == LinkKind::Device)
    );

    // Ports, up/down, MTU.
    host.set_master("hn-v0", Some("hn-br0")).expect("enslave");
    for link in ["hn-br0", "hn-v0", "hn-v1"] {
        host.set_up(link, true).expect("up");
    }
    host.set_mtu("hn-v1", 1400).expect("mtu");
    let v0 = host.link("hn-v0").expect("lookup").expect("hn-v0");
    assert_eq!(v0.master.as_deref(), Some("hn-br0"));
    assert!(v0.admin_up);
    assert_eq!(
        host.link("hn-v1").expect("lookup").expect("hn-v1").mtu,
        1400
    );
    let shown = ns.ip_json(&["link", "show", "dev", "hn-v0"]);
    assert_eq!(shown[0]["master"], "hn-br0", "ip agrees: {shown}");

    // Addresses, IPv4 and IPv6, added twice.
    let v4 = net("10.10.0.1/24");
    let v6 = net("fd00:10::1/64");
    for _ in 0..2 {
        host.add_address("hn-br0", v4).expect("add v4");
        host.add_address("hn-br0", v6).expect("add v6");
    }
    let mut addresses = host.addresses("hn-br0").expect("addresses");
    addresses.sort();
    assert_eq!(addresses, vec![v4, v6]);
    let shown = ns.ip_json(&["addr", "show", "dev", "hn-br0"]);
    let locals: Vec<String> = shown[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().expect("local"), a["prefixlen"]))
        .collect();
    assert_eq!(locals.len(), 2, "{shown}");
    assert!(locals.contains(&v4.to_string()) && locals.contains(&v6.to_string()));

    // Routes: the kernel's prefix route reads back with its protocol and source.
    let routes = host.routes().expect("routes");
    let kernel_route = Route {
        source: Some(ip("10.10.0.1")),
        protocol: RouteProtocol::Kernel,
        ..Route::on_link(net("10.10.0.0/24"), "hn-br0")
    };
    assert!(routes.contains(&kernel_route), "{routes:#?}");
    let via_v4 = Route::via(net("198.51.100.0/24"), ip("10.10.0.254"), "hn-br0").with_metric(50);
    let via_v6 = Route::via(net("fd00:99::/64"), ip("fd00:10::fe"), "hn-br0");
    let on_link = Route::on_link(net("203.0.113.0/28"), "hn-br0").with_metric(7);
    for _ in 0..2 {
        for route in [&via_v4, &via_v6, &on_link] {
            host.add_route(route).expect("add route");
        }
    }
    let routes = host.routes().expect("routes");
    for route in [&via_v4, &via_v6.clone().normalized(), &on_link] {
        assert_eq!(
            routes.iter().filter(|r| *r == route).count(),
            1,
            "{route}: {routes:#?}"
        );
    }
    let shown = ns.ip_json(&["-6", "route", "show", "fd00:99::/64"]);
    assert_eq!(
        shown[0]["metric"], 1024,
        "IPv6 metric 0 becomes 1024: {shown}"
    );
    let clash = Route::via(net("198.51.100.0/24"), ip("10.10.0.253"), "hn-br0").with_metric(50);
    assert!(matches!(
        host.add_route(&clash),
        Err(HostError::Conflict { .. })
    ));
    for _ in 0..2 {
        for route in [&via_v4, &via_v6, &on_link] {
            host.delete_route(route).expect("delete route");
        }
    }
    let routes = host.routes().expect("routes");
    assert!(!routes.contains(&via_v4) && !routes.contains(&via_v6.clone().normalized()));
    assert!(!routes.contains(&on_link));

    for _ in 0..2 {
        host.delete_address("hn-br0", v4).expect("delete v4");
        host.delete_address("hn-br0", v6).expect("delete v6");
    }
    assert!(host.addresses("hn-br0").expect("addresses").is_empty());

    // Unknown links, releasing a port, deleting the bridge.
    assert!(matches!(
        host.add_address("hn-nope", v4),
        Err(HostError::NoSuchLink { .. })
    ));
    assert!(matches!(
        host.set_master("hn-v0", Some("hn-nope")),
        Err(HostError::NoSuchLink { .. })
    ));
    host.set_master("hn-v0", None).expect("release");
    assert_eq!(
        host.link("hn-v0").expect("lookup").expect("hn-v0").master,
        None
    );
    host.set_up("hn-v1", false).expect("down");
    assert!(!host.link("hn-v1").expect("lookup").expect("hn-v1").admin_up);
    host.delete_link("hn-br0").expect("delete bridge");
    host.delete_link("hn-br0").expect("delete bridge again");
    assert!(host.link("hn-br0").expect("lookup").is_none());
}

const NODE_ADDRESS: &str = "10.20.0.2/24";
const GATEWAY: &str = "10.20.0.1";
/// The management peer: on the remote's loopback, reachable only through the default route.
const PEER: &str = "192.0.2.1";

/// A node namespace whose uplink `up0` is a veth into a remote namespace holding the gateway and
/// a TCP listener (the management peer).
struct Site {
    node: Netns,
    _remote: Netns,
    _peer: TcpListener,
    peer: SocketAddr,
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let node = Netns::new("node");
        let remote = Netns::new("remote");
        node.ip(&[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "rp0",
            "netns",
            &remote.name,
        ]);
        remote.ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", "rp0"]);
        remote.ip(&["addr", "add", &format!("{PEER}/32"), "dev", "lo"]);
        remote.ip(&["link", "set", "lo", "up"]);
        remote.ip(&["link", "set", "rp0", "up"]);
        node.ip(&["link", "set", "up0", "up"]);
        node.ip(&["addr", "add", NODE_ADDRESS, "dev", "up0"]);
        node.ip(&["route", "add", "default", "via", GATEWAY, "dev", "up0"]);
        // A TCP listener needs no accept loop for connects to complete.
        let peer_listener = remote.in_it(|| TcpListener::bind((ip(PEER), 0)).expect("listen"));
        let peer = peer_listener.local_addr().expect("peer address");
        Self {
            node,
            _remote: remote,
            _peer: peer_listener,
            peer,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn pending(&self) -> PathBuf {
        self.dir.path().join("host-network.pending.json")
    }

    fn check(&self, deadline: Duration) -> TcpConnectCheck {
        TcpConnectCheck::new(vec![self.peer], deadline)
    }

    /// Puts `up0` into bridge `br-prov`, with the default route via `gateway`.
    fn bridge_plan(host: &dyn HostNetwork, gateway: &str) -> ChangePlan {
        let routes: Vec<Route> = host
            .routes()
            .expect("routes")
            .into_iter()
            .map(|r| {
                if r.gateway == Some(ip(GATEWAY)) {
                    Route {
                        gateway: Some(ip(gateway)),
                        ..r
                    }
                } else {
                    r
                }
            })
            .collect();
        ChangePlan::move_uplink_into_bridge(
            "up0",
            "br-prov",
            &host.addresses("up0").expect("addresses"),
            &routes,
        )
    }
}

#[test]
fn a_change_that_cuts_the_node_off_is_reverted_and_a_good_one_kept() {
    let site = Site::new();
    let pending = site.pending();
    // Everything below runs on a thread inside the node namespace, as the agent would run on the
    // node: the netlink socket and the TCP check both see the node's links.
    let (before, after_good) = site.node.in_it(|| {
        let host = NetlinkHost::new().expect("netlink");
        site.check(Duration::from_secs(10))
            .check()
            .expect("peer reachable before any change");
        let before = Snapshot::capture_all(&host).expect("snapshot");
        let default = before
            .routes
            .iter()
            .find(|r| r.destination.prefix_len() == 0)
            .expect("default route");
        assert_eq!(default.link, "up0");

        // A typo in the gateway: the check fails, everything comes back.
        let bad = Site::bridge_plan(&host, "10.20.0.99");
        let err = apply_guarded(&host, &site.check(Duration::from_secs(3)), &bad, &pending)
            .expect_err("the wrong gateway cuts the node off");
        assert!(matches!(err, ChangeError::CheckFailed { .. }), "{err}");
        let restored = Snapshot::capture_all(&host).expect("snapshot");
        assert_eq!(restored, before, "{:#?}", before.differences(&restored));
        assert!(!pending.exists(), "record removed after the revert");
        site.check(Duration::from_secs(10))
            .check()
            .expect("peer reachable again after the revert");

        // The right gateway: kept.
        let good = Site::bridge_plan(&host, GATEWAY);
        let after = apply_guarded(&host, &site.check(Duration::from_secs(10)), &good, &pending)
            .expect("good change kept");
        assert!(!pending.exists(), "record removed after confirmation");
        site.check(Duration::from_secs(10))
            .check()
            .expect("peer reachable through the bridge");
        (before, after)
    });

    let bridge = after_good.links["br-prov"].as_ref().expect("bridge exists");
    assert_eq!(bridge.addresses, [net(NODE_ADDRESS)].into());
    assert!(bridge.admin_up);
    let uplink = after_good.links["up0"].as_ref().expect("uplink");
    assert_eq!(uplink.master.as_deref(), Some("br-prov"));
    assert!(uplink.addresses.is_empty());
    assert!(before.links.contains_key("lo"));
    let shown = site.node.ip_json(&["route", "show", "default"]);
    assert_eq!(shown[0]["dev"], "br-prov", "{shown}");
    assert_eq!(shown[0]["gateway"], GATEWAY, "{shown}");
}

#[test]
fn an_unconfirmed_change_is_reverted_at_start_up() {
    let site = Site::new();
    let pending = site.pending();
    let before = site.node.in_it(|| {
        let host = NetlinkHost::new().expect("netlink");
        let before = Snapshot::capture_all(&host).expect("snapshot");
        let plan = Site::bridge_plan(&host, GATEWAY);
        // The agent dies while the check runs: nothing after the check happens.
        let dies = FakeCheck::new("crash", || panic!("agent killed during the check"));
        let crashed = catch_unwind(AssertUnwindSafe(|| {
            apply_guarded(&host, &dies, &plan, &pending)
        }));
        assert!(crashed.is_err());
        before
    });
    assert!(pending.exists(), "record survives the crash");
    let shown = site.node.ip_json(&["link", "show", "dev", "up0"]);
    assert_eq!(
        shown[0]["master"], "br-prov",
        "the change is in place: {shown}"
    );

    // Start-up: a new process, a new netlink socket, only the record to go by.
    let host = site.node.host();
    let recovered = recover_pending(&host, &pending)
        .expect("recovered")
        .expect("there was a record");
    assert!(recovered.plan.description.contains("br-prov"));
    let restored = Snapshot::capture_all(&host).expect("snapshot");
    assert_eq!(restored, before, "{:#?}", before.differences(&restored));
    assert!(!pending.exists());
    assert!(
        recover_pending(&host, &pending)
            .expect("nothing left")
            .is_none()
    );
    site.node.in_it(|| {
        site.check(Duration::from_secs(10))
            .check()
            .expect("peer reachable after recovery");
    });
}

#[test]
fn the_admin_cli_moves_the_uplink_into_a_bridge_only_while_the_remote_stays_reachable() {
    let site = Site::new();
    let config = site.dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"hn\"\nstate_dir = \"{}\"\n",
            site.dir.path().join("state").display()
        ),
    )
    .expect("config");
    let cli = |check: SocketAddr| {
        Command::new("ip")
            .args(["netns", "exec", &site.node.name])
            .arg(scs_edge_tests::agent::binary())
            .arg("--config")
            .arg(&config)
            .args([
                "host-network",
                "move-uplink",
                "--uplink",
                "up0",
                "--bridge",
                "br-prov",
                "--deadline-secs",
                "3",
            ])
            .arg("--check")
            .arg(check.to_string())
            .output()
            .expect("run the agent's CLI")
    };

    // Nothing answers on this port after the move: the change is refused and undone.
    let closed = SocketAddr::new(site.peer.ip(), site.peer.port().wrapping_add(1));
    let refused = cli(closed);
    assert_eq!(
        refused.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("change not kept"));
    let shown = site.node.ip_json(&["route", "show", "default"]);
    assert_eq!(
        shown[0]["dev"], "up0",
        "the default route is back on the uplink: {shown}"
    );
    assert!(
        !site
            .dir
            .path()
            .join("state")
            .join(scs_edge_agent::network::host::PENDING_CHANGE_FILE)
            .exists()
    );

    // The peer answers: the change is kept.
    let kept = cli(site.peer);
    assert!(
        kept.status.success(),
        "{}",
        String::from_utf8_lossy(&kept.stderr)
    );
    let shown = site.node.ip_json(&["route", "show", "default"]);
    assert_eq!(shown[0]["dev"], "br-prov", "{shown}");
    let link = site.node.ip_json(&["link", "show", "dev", "up0"]);
    assert_eq!(link[0]["master"], "br-prov", "{link}");
}
