//! Security group rules as OVN ACL matches, the way the Neutron OVN driver writes them: rules live on
//! the group's port group; ingress is `to-lport` matching `outport`, egress is `from-lport` matching
//! `inport`; remote groups use the address sets OVN derives from port groups; L4 port ranges always
//! match the destination port.

use super::naming;
use crate::network::model::{Direction, EtherType, Protocol, SecurityGroupRule};
use std::fmt::Write as _;

/// Priority of rule ACLs (above the drop ACLs).
pub const RULE_PRIORITY: i64 = 1002;
/// Priority of the default drop ACLs.
pub const DROP_PRIORITY: i64 = 1001;

/// The ACL direction of a rule.
pub fn direction(rule: &SecurityGroupRule) -> &'static str {
    match rule.direction {
        Direction::Ingress => ovsdb::nb::acl_direction::TO_LPORT,
        Direction::Egress => ovsdb::nb::acl_direction::FROM_LPORT,
    }
}

/// The ACL match of a rule of the group whose port group is `port_group`.
pub fn rule_match(rule: &SecurityGroupRule, port_group: &str) -> String {
    let (port_field, addr_dir) = match rule.direction {
        Direction::Ingress => ("outport", "src"),
        Direction::Egress => ("inport", "dst"),
    };
    let v4 = rule.ethertype == EtherType::IPv4;
    let ip = if v4 { "ip4" } else { "ip6" };
    let mut m = format!("{port_field} == @{port_group} && {ip}");
    if let Some(prefix) = rule.remote_ip_prefix
        && prefix.prefix_len() > 0
    {
        let _ = write!(m, " && {ip}.{addr_dir} == {prefix}");
    }
    if let Some(remote) = rule.remote_group_id {
        let _ = write!(
            m,
            " && {ip}.{addr_dir} == {}",
            naming::port_group_addresses(remote, v4)
        );
    }
    match rule.protocol {
        None => {}
        Some(p @ (Protocol::Tcp | Protocol::Udp | Protocol::Sctp)) => {
            let l4 = match p {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                _ => "sctp",
            };
            let _ = write!(m, " && {l4}");
            match (rule.port_range_min, rule.port_range_max) {
                (Some(lo), Some(hi)) if lo == hi => {
                    let _ = write!(m, " && {l4}.dst == {lo}");
                }
                (Some(lo), Some(hi)) => {
                    let _ = write!(m, " && {l4}.dst >= {lo} && {l4}.dst <= {hi}");
                }
                _ => {}
            }
        }
        Some(Protocol::Icmp | Protocol::Icmpv6) => {
            let icmp = if v4 { "icmp4" } else { "icmp6" };
            let _ = write!(m, " && {icmp}");
            if let Some(t) = rule.port_range_min {
                let _ = write!(m, " && {icmp}.type == {t}");
            }
            if let Some(c) = rule.port_range_max {
                let _ = write!(m, " && {icmp}.code == {c}");
            }
        }
        Some(Protocol::Number(n)) => {
            let _ = write!(m, " && ip.proto == {n}");
        }
    }
    m
}

/// The ACLs every port with port security gets besides its rules: drop everything else, but let DHCP
/// and IPv6 neighbour discovery through (Neutron adds the same).
pub fn baseline(drop_group: &str) -> Vec<(&'static str, &'static str, i64, String, &'static str)> {
    use ovsdb::nb::acl_action::{ALLOW, DROP};
    use ovsdb::nb::acl_direction::{FROM_LPORT, TO_LPORT};
    let pg = drop_group;
    vec![
        (
            "drop-in",
            TO_LPORT,
            DROP_PRIORITY,
            format!("outport == @{pg} && ip"),
            DROP,
        ),
        (
            "drop-out",
            FROM_LPORT,
            DROP_PRIORITY,
            format!("inport == @{pg} && ip"),
            DROP,
        ),
        (
            "dhcp4",
            FROM_LPORT,
            RULE_PRIORITY,
            format!(
                "inport == @{pg} && ip4 && ip4.dst == {{255.255.255.255, 0.0.0.0/0}} && udp && udp.src == 68 && udp.dst == 67"
            ),
            ALLOW,
        ),
        (
            "dhcp6",
            FROM_LPORT,
            RULE_PRIORITY,
            format!("inport == @{pg} && ip6 && udp && udp.src == 546 && udp.dst == 547"),
            ALLOW,
        ),
        (
            "nd-out",
            FROM_LPORT,
            RULE_PRIORITY,
            format!("inport == @{pg} && ip6 && icmp6.type == {{133, 135, 136}}"),
            ALLOW,
        ),
        (
            "nd-in",
            TO_LPORT,
            RULE_PRIORITY,
            format!("outport == @{pg} && ip6 && icmp6.type == {{134, 135, 136}}"),
            ALLOW,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn rule(direction: Direction, ethertype: EtherType) -> SecurityGroupRule {
        SecurityGroupRule {
            id: Uuid::nil(),
            security_group_id: Uuid::nil(),
            project_id: "p".into(),
            direction,
            ethertype,
            protocol: None,
            port_range_min: None,
            port_range_max: None,
            remote_ip_prefix: None,
            remote_group_id: None,
            description: String::new(),
            created_at: jiff::Timestamp::default(),
        }
    }

    #[test]
    fn ingress_tcp_from_a_prefix() {
        let mut r = rule(Direction::Ingress, EtherType::IPv4);
        r.protocol = Some(Protocol::Tcp);
        r.port_range_min = Some(22);
        r.port_range_max = Some(22);
        r.remote_ip_prefix = Some("10.0.0.0/8".parse().expect("net"));
        assert_eq!(
            rule_match(&r, "pg_x"),
            "outport == @pg_x && ip4 && ip4.src == 10.0.0.0/8 && tcp && tcp.dst == 22"
        );
        assert_eq!(direction(&r), "to-lport");
    }

    #[test]
    fn egress_udp_range_to_everything() {
        let mut r = rule(Direction::Egress, EtherType::IPv4);
        r.protocol = Some(Protocol::Udp);
        r.port_range_min = Some(1000);
        r.port_range_max = Some(2000);
        r.remote_ip_prefix = Some("0.0.0.0/0".parse().expect("net"));
        assert_eq!(
            rule_match(&r, "pg_x"),
            "inport == @pg_x && ip4 && udp && udp.dst >= 1000 && udp.dst <= 2000"
        );
        assert_eq!(direction(&r), "from-lport");
    }

    #[test]
    fn ingress_from_the_same_group_uses_the_derived_address_set() {
        let group = Uuid::parse_str("11111111-2222-3333-4444-555555555555").expect("uuid");
        let mut r = rule(Direction::Ingress, EtherType::IPv6);
        r.remote_group_id = Some(group);
        assert_eq!(
            rule_match(&r, "pg_x"),
            "outport == @pg_x && ip6 && ip6.src == $pg_11111111_2222_3333_4444_555555555555_ip6"
        );
    }

    #[test]
    fn icmp_type_and_code_and_raw_protocol_numbers() {
        let mut r = rule(Direction::Ingress, EtherType::IPv4);
        r.protocol = Some(Protocol::Icmp);
        r.port_range_min = Some(8);
        r.port_range_max = Some(0);
        assert_eq!(
            rule_match(&r, "pg"),
            "outport == @pg && ip4 && icmp4 && icmp4.type == 8 && icmp4.code == 0"
        );
        let mut r = rule(Direction::Ingress, EtherType::IPv6);
        r.protocol = Some(Protocol::Icmp);
        assert_eq!(rule_match(&r, "pg"), "outport == @pg && ip6 && icmp6");
        let mut r = rule(Direction::Egress, EtherType::IPv4);
        r.protocol = Some(Protocol::Number(47));
        assert_eq!(
            rule_match(&r, "pg"),
            "inport == @pg && ip4 && ip.proto == 47"
        );
    }
}
