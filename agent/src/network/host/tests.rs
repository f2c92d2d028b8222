//! Guarded uplink changes over the in-memory host and check (no root, no netlink). The same
//! behaviours are proven against the kernel, in network namespaces, in `tests/tests/host_network.rs`.

use super::*;
use crate::error_class::{Classify, ErrorClass};
use std::net::{SocketAddr, TcpListener};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const UPLINK: &str = "eno1";
const OTHER: &str = "eno2";
const BRIDGE: &str = "br-provider";
/// The region's address: reachable only through the default route.
const REGION: &str = "100.64.0.5";
const GATEWAY: &str = "192.0.2.1";

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// A node with a management uplink (IPv4 + IPv6, default routes) and an unrelated second NIC.
struct Site {
    host: Arc<FakeHost>,
    _dir: tempfile::TempDir,
    pending: PathBuf,
}

impl Site {
    fn new() -> Self {
        let host = Arc::new(FakeHost::new());
        host.add_device(UPLINK, LinkKind::Device);
        host.add_device(OTHER, LinkKind::Device);
        host.set_up(UPLINK, true).expect("up");
        host.add_address(UPLINK, net("192.0.2.10/24")).expect("v4");
        host.add_address(UPLINK, net("2001:db8::10/64"))
            .expect("v6");
        host.add_route(&Route::default_via(ip(GATEWAY), UPLINK))
            .expect("default v4");
        host.add_route(&Route::default_via(ip("2001:db8::1"), UPLINK))
            .expect("default v6");
        host.set_up(OTHER, true).expect("up");
        host.add_address(OTHER, net("198.51.100.10/24"))
            .expect("v4");
        host.add_route(
            &Route::via(net("203.0.113.0/24"), ip("198.51.100.1"), OTHER).with_metric(10),
        )
        .expect("route");
        let dir = tempfile::tempdir().expect("tempdir");
        let pending = dir.path().join("host-network.pending.json");
        Self {
            host,
            _dir: dir,
            pending,
        }
    }

    /// Reachable when traffic to the region leaves through the real gateway.
    fn region_check(&self) -> FakeCheck {
        let host = self.host.clone();
        FakeCheck::new("region", move || match host.route_to(ip(REGION)) {
            Some((_, hop)) if hop == ip(GATEWAY) => Ok(()),
            Some((link, hop)) => Err(format!("next hop {hop} on {link} does not answer")),
            None => Err("no usable route".to_owned()),
        })
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::capture_all(self.host.as_ref()).expect("snapshot")
    }

    fn bridge_plan(&self) -> ChangePlan {
        ChangePlan::move_uplink_into_bridge(
            UPLINK,
            BRIDGE,
            &self.host.addresses(UPLINK).expect("addresses"),
            &self.host.routes().expect("routes"),
        )
    }

    /// The bridge plan with a typo in the default gateway.
    fn wrong_gateway_plan(&self) -> ChangePlan {
        let routes: Vec<Route> = self
            .host
            .routes()
            .expect("routes")
            .into_iter()
            .map(|r| {
                if r.gateway == Some(ip(GATEWAY)) {
                    Route::default_via(ip("192.0.2.99"), &r.link)
                } else {
                    r
                }
            })
            .collect();
        ChangePlan::move_uplink_into_bridge(
            UPLINK,
            BRIDGE,
            &self.host.addresses(UPLINK).expect("addresses"),
            &routes,
        )
    }

    fn apply(&self, plan: &ChangePlan, check: &FakeCheck) -> Result<Snapshot, ChangeError> {
        apply_guarded(self.host.as_ref(), check, plan, &self.pending)
    }
}

#[test]
fn a_good_change_is_kept_and_confirmed() {
    let site = Site::new();
    let check = site.region_check();
    check.check().expect("reachable before");
    let other_before = Snapshot::capture(site.host.as_ref(), [OTHER]).expect("snapshot");

    let after = site.apply(&site.bridge_plan(), &check).expect("applied");

    assert_eq!(check.calls(), 2);
    assert!(!site.pending.exists(), "record removed after confirmation");
    let bridge = after.links[BRIDGE].as_ref().expect("bridge exists");
    assert!(bridge.admin_up);
    assert_eq!(
        bridge.addresses,
        [net("192.0.2.10/24"), net("2001:db8::10/64")].into()
    );
    let uplink = after.links[UPLINK].as_ref().expect("uplink exists");
    assert_eq!(uplink.master.as_deref(), Some(BRIDGE));
    assert!(uplink.addresses.is_empty());
    assert!(
        after
            .routes
            .contains(&Route::default_via(ip(GATEWAY), BRIDGE))
    );
    assert!(
        after
            .routes
            .contains(&Route::default_via(ip("2001:db8::1"), BRIDGE).normalized())
    );
    assert!(after.routes.iter().all(|r| r.link != UPLINK));
    assert_eq!(
        site.host.route_to(ip(REGION)),
        Some((BRIDGE.to_owned(), ip(GATEWAY)))
    );
    assert_eq!(
        Snapshot::capture(site.host.as_ref(), [OTHER]).expect("snapshot"),
        other_before,
        "links outside the plan are not touched"
    );
}

#[test]
fn a_failing_check_restores_the_exact_previous_state() {
    let site = Site::new();
    let before = site.snapshot();
    let check = site.region_check();

    let err = site
        .apply(&site.wrong_gateway_plan(), &check)
        .expect_err("unreachable after the change");

    assert!(
        matches!(&err, ChangeError::CheckFailed { source } if source.detail.contains("192.0.2.99")),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Conflict);
    assert_eq!(site.snapshot(), before);
    assert!(!site.pending.exists(), "record removed after the revert");
    check.check().expect("reachable again");
}

#[test]
fn a_bridge_without_its_uplink_is_reverted() {
    let site = Site::new();
    let before = site.snapshot();
    // Forgets to enslave the uplink: the bridge never gets carrier.
    let mut plan = site.bridge_plan();
    plan.steps
        .retain(|s| !matches!(s, ChangeStep::SetMaster { .. }));

    let err = site
        .apply(&plan, &site.region_check())
        .expect_err("unreachable");

    assert!(matches!(err, ChangeError::CheckFailed { .. }), "{err}");
    assert_eq!(site.snapshot(), before);
}

#[test]
fn a_step_failing_midway_reverts_what_was_applied() {
    let operations = [
        "create_bridge",
        "set_master",
        "set_up",
        "delete_route",
        "delete_address",
        "add_address",
        "add_route",
    ];
    for operation in operations {
        let site = Site::new();
        let before = site.snapshot();
        let plan = site.bridge_plan();
        let check = site.region_check();
        site.host.fail_once(operation);

        let err = site.apply(&plan, &check).expect_err(operation);

        let ChangeError::StepFailed { index, step, .. } = &err else {
            panic!("{operation}: {err}");
        };
        assert_eq!(
            plan.steps[*index].to_string(),
            *step,
            "{operation}: error names the step"
        );
        assert_eq!(site.snapshot(), before, "{operation}: restored exactly");
        assert_eq!(
            check.calls(),
            0,
            "{operation}: no check after a failed step"
        );
        assert!(!site.pending.exists(), "{operation}: record removed");
    }
}

#[test]
fn an_unconfirmed_change_is_reverted_at_start_up() {
    let site = Site::new();
    let before = site.snapshot();
    let plan = site.bridge_plan();
    // The agent dies while the check runs: nothing after it happens.
    let crashing = FakeCheck::new("crash", || panic!("agent killed during the check"));
    let crashed = catch_unwind(AssertUnwindSafe(|| site.apply(&plan, &crashing)));
    assert!(crashed.is_err());
    assert!(site.pending.exists(), "record survives the crash");
    assert_ne!(site.snapshot(), before, "the change is in place");

    // No new change while one is unresolved, and the host is not even read.
    let calls = site.host.calls().len();
    let refused = site
        .apply(&plan, &FakeCheck::passing())
        .expect_err("refused");
    assert!(
        matches!(refused, ChangeError::PendingExists { .. }),
        "{refused}"
    );
    assert_eq!(site.host.calls().len(), calls);

    // Start-up: a fresh view of the host reverts from the record alone.
    let recovered = recover_pending(site.host.as_ref(), &site.pending)
        .expect("recovered")
        .expect("there was a record");
    assert_eq!(recovered.plan, plan);
    assert_eq!(site.snapshot(), before);
    assert!(!site.pending.exists());
    assert!(
        recover_pending(site.host.as_ref(), &site.pending)
            .expect("nothing to do")
            .is_none()
    );
    site.region_check().check().expect("reachable again");
}

#[test]
fn a_failed_revert_keeps_the_record_and_recovery_finishes_it() {
    let site = Site::new();
    let before = site.snapshot();
    let plan = site.wrong_gateway_plan();
    // Adding addresses works for the change, then breaks for the revert.
    let check = {
        let host = site.host.clone();
        let inner = site.region_check();
        FakeCheck::new("region", move || {
            host.fail_always("add_address", true);
            inner.check().map_err(|e| e.detail)
        })
    };

    let err = site.apply(&plan, &check).expect_err("revert fails");

    let ChangeError::RevertFailed { source, .. } = &err else {
        panic!("{err}");
    };
    assert!(
        source
            .failures
            .iter()
            .any(|f| f.contains("add address 192.0.2.10/24 to eno1")),
        "{err}"
    );
    assert!(site.pending.exists(), "record kept for recovery");

    site.host.fail_always("add_address", false);
    recover_pending(site.host.as_ref(), &site.pending)
        .expect("recovered")
        .expect("record");
    assert_eq!(site.snapshot(), before);
    assert!(!site.pending.exists());
}

#[test]
fn a_corrupt_record_is_left_for_a_human_and_the_host_untouched() {
    let site = Site::new();
    std::fs::write(&site.pending, b"{\"version\": 1, \"plan\": ").expect("write");
    let tmp = site.pending.with_extension("json.tmp");
    std::fs::write(&tmp, b"half").expect("write");
    let calls = site.host.calls().len();

    let err = recover_pending(site.host.as_ref(), &site.pending).expect_err("corrupt");

    assert!(matches!(err, ChangeError::CorruptRecord { .. }), "{err}");
    assert!(site.pending.exists());
    assert!(!tmp.exists(), "a half-written temporary file is removed");
    assert_eq!(site.host.calls().len(), calls);
}

#[test]
fn an_invalid_plan_changes_nothing() {
    let site = Site::new();
    let before = site.snapshot();
    let plan = ChangePlan::new("typo").step(ChangeStep::AddRoute {
        route: Route::via(net("10.1.2.3/8"), ip(GATEWAY), UPLINK),
    });

    let err = site
        .apply(&plan, &FakeCheck::passing())
        .expect_err("invalid");

    assert!(matches!(err, ChangeError::Invalid(_)), "{err}");
    assert_eq!(err.class(), ErrorClass::BadRequest);
    assert!(!site.pending.exists());
    assert_eq!(site.snapshot(), before);
}

#[test]
fn a_gateway_change_is_guarded_too() {
    let site = Site::new();
    let before = site.snapshot();
    let old = Route::default_via(ip(GATEWAY), UPLINK);

    let wrong =
        ChangePlan::replace_route(old.clone(), Route::default_via(ip("192.0.2.254"), UPLINK));
    site.apply(&wrong, &site.region_check())
        .expect_err("wrong gateway");
    assert_eq!(site.snapshot(), before);

    let same_gateway_new_metric = ChangePlan::replace_route(
        old,
        Route::default_via(ip(GATEWAY), UPLINK).with_metric(100),
    );
    let after = site
        .apply(&same_gateway_new_metric, &site.region_check())
        .expect("kept");
    assert!(
        after
            .routes
            .contains(&Route::default_via(ip(GATEWAY), UPLINK).with_metric(100))
    );
}

#[test]
fn restore_reports_what_it_cannot_fix() {
    let site = Site::new();
    let before = Snapshot::capture(site.host.as_ref(), [UPLINK, OTHER]).expect("snapshot");
    site.host.delete_link(OTHER).expect("vanish");

    let err = restore(site.host.as_ref(), &before).expect_err("cannot recreate");

    assert!(
        err.failures.iter().any(|f| f.contains("eno2 has vanished")),
        "{err}"
    );
}

#[test]
fn adds_and_deletes_are_idempotent() {
    let host = FakeHost::new();
    host.add_device("eth0", LinkKind::Device);
    host.set_up("eth0", true).expect("up");
    host.create_bridge("br0").expect("bridge");
    host.create_bridge("br0").expect("bridge again");
    assert!(matches!(
        host.create_bridge("eth0"),
        Err(HostError::Conflict { .. })
    ));

    let address = net("10.0.0.2/24");
    host.add_address("eth0", address).expect("add");
    host.add_address("eth0", address).expect("add again");
    assert_eq!(host.addresses("eth0").expect("list"), vec![address]);

    let route = Route::via(net("10.9.0.0/16"), ip("10.0.0.1"), "eth0").with_metric(5);
    host.add_route(&route).expect("add");
    host.add_route(&route).expect("add again");
    assert_eq!(
        host.routes()
            .expect("routes")
            .iter()
            .filter(|r| **r == route)
            .count(),
        1
    );
    let clash = Route::via(net("10.9.0.0/16"), ip("10.0.0.254"), "eth0").with_metric(5);
    let err = host
        .add_route(&clash)
        .expect_err("same destination and metric");
    assert_eq!(err.class(), ErrorClass::Conflict);

    host.delete_route(&route).expect("delete");
    host.delete_route(&route).expect("delete again");
    host.delete_address("eth0", address).expect("delete");
    host.delete_address("eth0", address).expect("delete again");
    assert!(host.addresses("eth0").expect("list").is_empty());

    host.set_master("eth0", Some("br0")).expect("enslave");
    host.set_master("eth0", Some("br0")).expect("enslave again");
    host.delete_link("br0").expect("delete");
    host.delete_link("br0").expect("delete again");
    assert_eq!(host.link("eth0").expect("link").expect("eth0").master, None);

    assert!(matches!(
        host.add_address("nope0", address),
        Err(HostError::NoSuchLink { .. })
    ));
    assert!(matches!(
        host.create_bridge("much-too-long-name"),
        Err(HostError::Invalid { .. })
    ));
}

#[test]
fn the_fake_flushes_routes_like_the_kernel() {
    let site = Site::new();
    let default_v4 = Route::default_via(ip(GATEWAY), UPLINK);
    site.host
        .delete_address(UPLINK, net("192.0.2.10/24"))
        .expect("delete");
    let routes = site.host.routes().expect("routes");
    assert!(
        !routes.contains(&default_v4),
        "last IPv4 address takes the routes"
    );

    site.host.set_up(UPLINK, false).expect("down");
    assert!(site.host.addresses(UPLINK).expect("list").is_empty());
    assert!(
        site.host
            .routes()
            .expect("routes")
            .iter()
            .all(|r| r.link != UPLINK)
    );
}

#[test]
fn routes_normalise_like_the_kernel() {
    let v6 = Route::default_via(ip("2001:db8::1"), "eth0");
    assert_eq!(v6.clone().normalized().metric, IPV6_DEFAULT_METRIC);
    assert_eq!(v6.with_metric(7).normalized().metric, 7);
    let v4 = Route::default_via(ip("10.0.0.1"), "eth0");
    assert_eq!(v4.clone().normalized(), v4);
    assert!(
        Route::via(net("10.0.0.0/8"), ip("2001:db8::1"), "eth0")
            .validate()
            .is_err()
    );
}

#[test]
fn the_tcp_check_needs_a_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listener.local_addr().expect("addr");
    TcpConnectCheck::new(vec![open], Duration::from_secs(5))
        .check()
        .expect("reachable");

    let closed: SocketAddr = {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr")
    };
    let err = TcpConnectCheck::new(vec![closed], Duration::from_millis(300))
        .with_retry_interval(Duration::from_millis(50))
        .check()
        .expect_err("nobody listens");
    assert!(err.detail.contains(&closed.to_string()), "{err}");
    // Any one target is enough.
    TcpConnectCheck::new(vec![closed, open], Duration::from_secs(5))
        .check()
        .expect("second target answers");
}

#[test]
fn the_pending_record_is_plain_json() {
    let site = Site::new();
    let plan = site.bridge_plan();
    let crashing = FakeCheck::new("crash", || panic!("killed"));
    let _ = catch_unwind(AssertUnwindSafe(|| site.apply(&plan, &crashing)));

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&site.pending).expect("read")).expect("json");
    assert_eq!(json["version"], 1);
    assert_eq!(json["plan"]["steps"][0]["op"], "create_bridge");
    assert!(
        json["before"]["links"][BRIDGE].is_null(),
        "bridge did not exist"
    );
    assert_eq!(
        json["before"]["links"][UPLINK]["addresses"][0],
        "192.0.2.10/24"
    );
}
