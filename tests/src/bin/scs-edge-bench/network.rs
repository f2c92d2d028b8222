//! Networking benchmarks (part of `scs-edge-bench`):
//! - 1000 ports in a security group through the agent's OVSDB client vs the same through ovn-nbctl;
//! - 1000 ports through the whole agent (domain API → store → OVN reconciler) until all are in OVN;
//! - port-up latency: VIF plugged → the agent reports the port ACTIVE, against OVN's own `up`.

use ovsdb::{
    Atom, Client, ClientConfig, Condition, Mutation, Mutator, Operation, Remote, Row, TypedRow,
    Value, nb,
};
use scs_edge_agent::network::model::PortStatus;
use scs_edge_agent::network::service::{NewNetwork, NewPort, NewRule, NewSubnet};
use scs_edge_tests::bench::{Record, percentile};
use scs_edge_tests::site::Site;
use scs_edge_tests::wait;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

const PORTS: usize = 1000;
const UP_SAMPLES: usize = 40;

fn mac(i: usize) -> String {
    format!(
        "fa:16:3e:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

fn address(i: usize) -> String {
    format!(
        "{} 10.{}.{}.{}",
        mac(i),
        100 + i / 65536,
        (i / 256) % 256,
        i % 256
    )
}

fn string_set(items: impl IntoIterator<Item = String>) -> Value {
    Value::Set(items.into_iter().map(Atom::String).collect())
}

/// Creates a switch and a port group with three ACLs the way a CMS would, through nbctl.
fn port_group_with_acls(site: &Site, switch: &str, group: &str) {
    site.stack.nbctl(&["ls-add", switch]);
    site.stack.nbctl(&["pg-add", group]);
    for rule in [
        format!("outport == @{group} && ip4 && tcp && tcp.dst == 22"),
        format!("outport == @{group} && ip4 && icmp4"),
        format!("inport == @{group} && ip4"),
    ] {
        let direction = if rule.starts_with("inport") {
            "from-lport"
        } else {
            "to-lport"
        };
        site.stack
            .nbctl(&["acl-add", group, direction, "1002", &rule, "allow-related"]);
    }
}

fn uuid_of(site: &Site, table: &str, name: &str) -> ovsdb::Uuid {
    let text = site.stack.nbctl(&[
        "--bare",
        "--columns=_uuid",
        "find",
        table,
        &format!("name={name}"),
    ]);
    text.trim().parse().expect("uuid")
}

pub(crate) fn run(records: &mut Vec<Record>) {
    let site = Site::start("bench-net", false);
    // Multi-threaded: the client's reader and the replicas must keep running between block_on calls.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");

    // --- 1000 ports: our OVSDB client (one transaction each) vs ovn-nbctl (one invocation each) ---
    port_group_with_acls(&site, "bench-client", "pg_bench_client");
    port_group_with_acls(&site, "bench-nbctl", "pg_bench_nbctl");
    let (switch, group) = (
        uuid_of(&site, "Logical_Switch", "bench-client"),
        uuid_of(&site, "Port_Group", "pg_bench_client"),
    );
    let remotes = Remote::parse_list(&site.stack.northbound()).expect("remote");
    let client = runtime
        .block_on(Client::connect(
            ClientConfig::new(remotes),
            Duration::from_secs(10),
        ))
        .expect("connect");
    let started = Instant::now();
    for i in 0..PORTS {
        let ops = vec![
            Operation::insert_named(
                nb::LogicalSwitchPort::TABLE,
                Row::from([
                    (
                        "name".to_owned(),
                        Value::Atom(Atom::String(format!("client-{i}"))),
                    ),
                    ("addresses".to_owned(), string_set([address(i)])),
                    ("port_security".to_owned(), string_set([address(i)])),
                ]),
                "p",
            ),
            Operation::mutate(
                "Logical_Switch",
                vec![Condition::uuid(switch)],
                vec![Mutation::new(
                    "ports",
                    Mutator::Insert,
                    Value::named_uuid("p"),
                )],
            ),
            Operation::mutate(
                "Port_Group",
                vec![Condition::uuid(group)],
                vec![Mutation::new(
                    "ports",
                    Mutator::Insert,
                    Value::named_uuid("p"),
                )],
            ),
        ];
        runtime
            .block_on(client.transact(nb::DATABASE, ops))
            .expect("transact");
    }
    let ours = started.elapsed();

    let started = Instant::now();
    for i in 0..PORTS {
        let out = site
            .stack
            .nbctl_command(&[
                "--",
                "--id=@p",
                "create",
                "Logical_Switch_Port",
                &format!("name=nbctl-{i}"),
                &format!("addresses=\"{}\"", address(i)),
                &format!("port_security=\"{}\"", address(i)),
                "--",
                "add",
                "Logical_Switch",
                "bench-nbctl",
                "ports",
                "@p",
                "--",
                "add",
                "Port_Group",
                "pg_bench_nbctl",
                "ports",
                "@p",
            ])
            .output()
            .expect("ovn-nbctl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let nbctl = started.elapsed();
    eprintln!("1000 ports: ovsdb client {ours:?}, ovn-nbctl {nbctl:?}");
    records.push(Record::compared(
        "1000 ports in a security group, one transaction each: agent's OVSDB client vs ovn-nbctl",
        ours.as_secs_f64() * 1000.0,
        "ms",
        nbctl.as_secs_f64() * 1000.0,
        "ovn-nbctl, one invocation per port",
        "ratio ≤ 0.2 (≥ 5× faster)",
    ));

    // --- 1000 ports through the whole agent, until OVN holds them all ---
    let network = &site.network;
    let net = network
        .create_network(NewNetwork {
            name: "bulk".into(),
            project_id: "bench".into(),
            ..NewNetwork::default()
        })
        .expect("net");
    network
        .create_subnet(NewSubnet {
            network_id: net.id,
            project_id: "bench".into(),
            ip_version: 4,
            cidr: "10.200.0.0/20".into(),
            ..NewSubnet::default()
        })
        .expect("subnet");
    let group = network
        .create_security_group(None, "bulk", "", "bench")
        .expect("group");
    network
        .create_rule(NewRule {
            security_group_id: group.id,
            project_id: "bench".into(),
            direction: "ingress".into(),
            protocol: Some("tcp".into()),
            port_range_min: Some(22),
            port_range_max: Some(22),
            ..NewRule::default()
        })
        .expect("rule");
    let started = Instant::now();
    let mut ids = BTreeSet::new();
    for _ in 0..PORTS {
        let port = network
            .create_port(NewPort {
                network_id: net.id,
                project_id: "bench".into(),
                security_groups: Some(vec![group.id]),
                ..NewPort::default()
            })
            .expect("port");
        ids.insert(port.id.to_string());
    }
    let written = started.elapsed();
    let replica = runtime
        .block_on(
            client.monitor(ovsdb::MonitorSpec::new(nb::DATABASE).table("Logical_Switch_Port")),
        )
        .expect("monitor");
    runtime
        .block_on(replica.wait_until(Duration::from_mins(10), |snapshot| {
            let present = snapshot
                .rows::<nb::LogicalSwitchPort>()
                .filter(|(_, p)| p.as_ref().is_ok_and(|p| ids.contains(&p.name)))
                .count();
            present == PORTS
        }))
        .expect("all ports in OVN");
    let agent = started.elapsed();
    eprintln!("1000 ports through the agent: {agent:?} ({written:?} to write the model)");
    records.push(Record::compared(
        "1000 ports in a security group through the agent (API → store → OVN), until all are in OVN",
        agent.as_secs_f64() * 1000.0,
        "ms",
        nbctl.as_secs_f64() * 1000.0,
        "ovn-nbctl, one invocation per port",
        "—",
    ));

    // --- port-up latency ---
    let mut ovn_up = Vec::new();
    let mut agent_up = Vec::new();
    let ns = site.stack.netns.clone().expect("stack namespace");
    let up_replica = runtime
        .block_on(
            client.monitor(ovsdb::MonitorSpec::new(nb::DATABASE).table("Logical_Switch_Port")),
        )
        .expect("monitor");
    for i in 0..UP_SAMPLES {
        let port = network
            .create_port(NewPort {
                network_id: net.id,
                project_id: "bench".into(),
                ..NewPort::default()
            })
            .expect("port");
        let name = port.id.to_string();
        wait::until("port in OVN", Duration::from_mins(1), || {
            up_replica
                .snapshot()
                .rows::<nb::LogicalSwitchPort>()
                .any(|(_, p)| p.as_ref().is_ok_and(|p| p.name == name))
                .then_some(())
        });
        let (a, b) = (format!("up{i}a"), format!("up{i}b"));
        let ok = Command::new("ip")
            .args([
                "-n", &ns, "link", "add", &a, "type", "veth", "peer", "name", &b,
            ])
            .status()
            .expect("ip");
        assert!(ok.success());
        for dev in [&a, &b] {
            let _ = Command::new("ip")
                .args(["-n", &ns, "link", "set", dev, "up"])
                .status();
        }
        let plugged = Instant::now();
        site.stack.vsctl(&[
            "add-port",
            "br-int",
            &a,
            "--",
            "set",
            "Interface",
            &a,
            &format!("external_ids:iface-id={name}"),
        ]);
        let mut seen_ovn = None;
        let mut seen_agent = None;
        while seen_ovn.is_none() || seen_agent.is_none() {
            if seen_ovn.is_none()
                && up_replica
                    .snapshot()
                    .rows::<nb::LogicalSwitchPort>()
                    .any(|(_, p)| {
                        p.as_ref()
                            .is_ok_and(|p| p.name == name && p.up == Some(true))
                    })
            {
                seen_ovn = Some(plugged.elapsed());
            }
            if seen_agent.is_none()
                && network
                    .port(port.id)
                    .is_ok_and(|p| p.status == PortStatus::Active)
            {
                seen_agent = Some(plugged.elapsed());
            }
            assert!(
                plugged.elapsed() < Duration::from_mins(1),
                "port {name} never came up"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        ovn_up.push(seen_ovn.expect("ovn").as_secs_f64() * 1000.0);
        agent_up.push(seen_agent.expect("agent").as_secs_f64() * 1000.0);
    }
    ovn_up.sort_by(f64::total_cmp);
    agent_up.sort_by(f64::total_cmp);
    eprintln!(
        "port up: agent p50 {:.1} ms, OVN p50 {:.1} ms",
        percentile(&agent_up, 50.0),
        percentile(&ovn_up, 50.0)
    );
    for p in [50.0, 99.0] {
        records.push(Record::compared(
            &format!("port up (VIF plugged → agent reports ACTIVE), p{p} of {UP_SAMPLES}"),
            percentile(&agent_up, p),
            "ms",
            percentile(&ovn_up, p),
            "OVN's own up=true in the northbound database",
            "—",
        ));
    }
}
