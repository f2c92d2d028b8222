//! SQL for the network model. Every function takes the caller's transaction, so a request's checks
//! and writes happen atomically.

use super::NetworkError;
use super::model::{
    AddressPair, AllocationPool, DefaultSecurityGroupRule, Direction, EtherType, ExternalGateway,
    FixedIp, FloatingIp, Ipv6Mode, Network, NetworkType, OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE, Port, PortStatus, Protocol, Route, Router, RouterInterface,
    SecurityGroup, SecurityGroupRule, Subnet, TemplateRemoteGroup,
};
use crate::store::{from_json, to_json};
use ipnet::IpNet;
use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, Transaction, params};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use uuid::Uuid;

fn uuid(text: &str) -> Result<Uuid, NetworkError> {
    Uuid::parse_str(text).map_err(|_| NetworkError::Corrupt(format!("malformed id {text:?}")))
}

fn time(text: &str) -> Timestamp {
    text.parse().unwrap_or_default()
}

fn ip(text: &str) -> Result<IpAddr, NetworkError> {
    text.parse()
        .map_err(|_| NetworkError::Corrupt(format!("malformed address {text:?}")))
}

fn net(text: &str) -> Result<IpNet, NetworkError> {
    text.parse()
        .map_err(|_| NetworkError::Corrupt(format!("malformed prefix {text:?}")))
}

/// Bumps the network model's version; returns the new one.
pub(super) fn bump_generation(tx: &Transaction<'_>) -> Result<i64, NetworkError> {
    tx.execute(
        "UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'network_generation'",
        [],
    )?;
    generation(tx)
}

/// The network model's version.
pub(super) fn generation(tx: &Transaction<'_>) -> Result<i64, NetworkError> {
    let text: String = tx.query_row(
        "SELECT value FROM settings WHERE key = 'network_generation'",
        [],
        |r| r.get(0),
    )?;
    text.parse()
        .map_err(|_| NetworkError::Corrupt("network_generation".into()))
}

// ---- networks ---------------------------------------------------------------------------------

const NETWORK_COLUMNS: &str =
    "id, name, description, project_id, admin_state_up, shared, external, network_type,
    physical_network, segmentation_id, mtu, port_security_enabled, created_at, updated_at";

fn network_from_row(row: &Row<'_>) -> Result<Network, NetworkError> {
    let network_type: String = row.get(7)?;
    Ok(Network {
        id: uuid(&row.get::<_, String>(0)?)?,
        name: row.get(1)?,
        description: row.get(2)?,
        project_id: row.get(3)?,
        admin_state_up: row.get(4)?,
        shared: row.get(5)?,
        external: row.get(6)?,
        network_type: NetworkType::parse(&network_type)
            .ok_or_else(|| NetworkError::Corrupt(network_type.clone()))?,
        physical_network: row.get(8)?,
        segmentation_id: row.get(9)?,
        mtu: row.get(10)?,
        port_security_enabled: row.get(11)?,
        subnets: Vec::new(),
        created_at: time(&row.get::<_, String>(12)?),
        updated_at: time(&row.get::<_, String>(13)?),
    })
}

pub(super) fn insert_network(tx: &Transaction<'_>, n: &Network) -> Result<(), NetworkError> {
    tx.execute(
        &format!("INSERT INTO networks ({NETWORK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
        params![
            n.id.to_string(),
            n.name,
            n.description,
            n.project_id,
            n.admin_state_up,
            n.shared,
            n.external,
            n.network_type.as_str(),
            n.physical_network,
            n.segmentation_id,
            n.mtu,
            n.port_security_enabled,
            n.created_at.to_string(),
            n.updated_at.to_string(),
        ],
    )?;
    Ok(())
}

pub(super) fn network(tx: &Transaction<'_>, id: Uuid) -> Result<Option<Network>, NetworkError> {
    let found = tx
        .query_row(
            &format!("SELECT {NETWORK_COLUMNS} FROM networks WHERE id = ?1"),
            [id.to_string()],
            |r| Ok(network_from_row(r)),
        )
        .optional()?
        .transpose()?;
    match found {
        Some(mut n) => {
            n.subnets = subnet_ids(tx, id)?;
            Ok(Some(n))
        }
        None => Ok(None),
    }
}

pub(super) fn networks(tx: &Transaction<'_>) -> Result<Vec<Network>, NetworkError> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {NETWORK_COLUMNS} FROM networks ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([], |r| Ok(network_from_row(r)))?;
    let mut out: Vec<Network> = rows
        .map(|r| r.map_err(NetworkError::from).and_then(|n| n))
        .collect::<Result<_, _>>()?;
    let mut by_network: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
    let mut stmt = tx.prepare("SELECT network_id, id FROM subnets ORDER BY created_at, id")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (network, subnet) = row?;
        by_network
            .entry(uuid(&network)?)
            .or_default()
            .push(uuid(&subnet)?);
    }
    for n in &mut out {
        n.subnets = by_network.remove(&n.id).unwrap_or_default();
    }
    Ok(out)
}

/// How many networks and ports the site holds (the region link reports them).
pub(super) fn counts(tx: &Transaction<'_>) -> Result<(u64, u64), NetworkError> {
    Ok(tx.query_row(
        "SELECT (SELECT count(*) FROM networks), (SELECT count(*) FROM ports)",
        [],
        |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
    )?)
}

pub(super) fn delete_network(tx: &Transaction<'_>, id: Uuid) -> Result<(), NetworkError> {
    tx.execute("DELETE FROM networks WHERE id = ?1", [id.to_string()])?;
    Ok(())
}

pub(super) fn ports_on_network(tx: &Transaction<'_>, id: Uuid) -> Result<u64, NetworkError> {
    Ok(tx.query_row(
        "SELECT count(*) FROM ports WHERE network_id = ?1",
        [id.to_string()],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// A flat network on `physnet` or a VLAN id on it is taken.
pub(super) fn segment_taken(
    tx: &Transaction<'_>,
    physnet: &str,
    vlan: Option<u16>,
) -> Result<bool, NetworkError> {
    Ok(tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM networks WHERE physical_network = ?1 AND ifnull(segmentation_id, -1) = ifnull(?2, -1))",
        params![physnet, vlan],
        |r| r.get(0),
    )?)
}

// ---- subnets ----------------------------------------------------------------------------------

const SUBNET_COLUMNS: &str = "id, network_id, name, description, project_id, ip_version, cidr, gateway_ip,
    allocation_pools, dns_nameservers, host_routes, enable_dhcp, ipv6_address_mode, ipv6_ra_mode, created_at, updated_at";

fn subnet_from_row(row: &Row<'_>) -> Result<Subnet, NetworkError> {
    let pools: String = row.get(8)?;
    let dns: String = row.get(9)?;
    let routes: String = row.get(10)?;
    let mode = |s: Option<String>| s.as_deref().and_then(Ipv6Mode::parse);
    Ok(Subnet {
        id: uuid(&row.get::<_, String>(0)?)?,
        network_id: uuid(&row.get::<_, String>(1)?)?,
        name: row.get(2)?,
        description: row.get(3)?,
        project_id: row.get(4)?,
        ip_version: row.get(5)?,
        cidr: net(&row.get::<_, String>(6)?)?,
        gateway_ip: row
            .get::<_, Option<String>>(7)?
            .as_deref()
            .map(ip)
            .transpose()?,
        allocation_pools: from_json::<Vec<AllocationPool>>("subnets.allocation_pools", &pools)?,
        dns_nameservers: from_json("subnets.dns_nameservers", &dns)?,
        host_routes: from_json::<Vec<Route>>("subnets.host_routes", &routes)?,
        enable_dhcp: row.get(11)?,
        ipv6_address_mode: mode(row.get(12)?),
        ipv6_ra_mode: mode(row.get(13)?),
        created_at: time(&row.get::<_, String>(14)?),
        updated_at: time(&row.get::<_, String>(15)?),
    })
}

pub(super) fn insert_subnet(tx: &Transaction<'_>, s: &Subnet) -> Result<(), NetworkError> {
    tx.execute(
        &format!(
            "INSERT INTO subnets ({SUBNET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        ),
        params![
            s.id.to_string(),
            s.network_id.to_string(),
            s.name,
            s.description,
            s.project_id,
            s.ip_version,
            s.cidr.to_string(),
            s.gateway_ip.map(|g| g.to_string()),
            to_json(&s.allocation_pools),
            to_json(&s.dns_nameservers),
            to_json(&s.host_routes),
            s.enable_dhcp,
            s.ipv6_address_mode.map(Ipv6Mode::as_str),
            s.ipv6_ra_mode.map(Ipv6Mode::as_str),
            s.created_at.to_string(),
            s.updated_at.to_string(),
        ],
    )?;
    Ok(())
}

pub(super) fn subnet(tx: &Transaction<'_>, id: Uuid) -> Result<Option<Subnet>, NetworkError> {
    tx.query_row(
        &format!("SELECT {SUBNET_COLUMNS} FROM subnets WHERE id = ?1"),
        [id.to_string()],
        |r| Ok(subnet_from_row(r)),
    )
    .optional()?
    .transpose()
}

pub(super) fn subnets(
    tx: &Transaction<'_>,
    network: Option<Uuid>,
) -> Result<Vec<Subnet>, NetworkError> {
    let (sql, arg) = match network {
        Some(n) => (
            format!(
                "SELECT {SUBNET_COLUMNS} FROM subnets WHERE network_id = ?1 ORDER BY created_at, id"
            ),
            n.to_string(),
        ),
        None => (
            format!("SELECT {SUBNET_COLUMNS} FROM subnets WHERE ?1 = ?1 ORDER BY created_at, id"),
            String::new(),
        ),
    };
    let mut stmt = tx.prepare(&sql)?;
    let rows = stmt.query_map([arg], |r| Ok(subnet_from_row(r)))?;
    rows.map(|r| r.map_err(NetworkError::from).and_then(|s| s))
        .collect()
}

fn subnet_ids(tx: &Transaction<'_>, network: Uuid) -> Result<Vec<Uuid>, NetworkError> {
    let mut stmt =
        tx.prepare("SELECT id FROM subnets WHERE network_id = ?1 ORDER BY created_at, id")?;
    let rows = stmt.query_map([network.to_string()], |r| r.get::<_, String>(0))?;
    rows.map(|r| uuid(&r?)).collect()
}

pub(super) fn delete_subnet(tx: &Transaction<'_>, id: Uuid) -> Result<(), NetworkError> {
    tx.execute("DELETE FROM subnets WHERE id = ?1", [id.to_string()])?;
    Ok(())
}

/// Addresses held in a subnet.
pub(super) fn allocated(
    tx: &Transaction<'_>,
    subnet: Uuid,
) -> Result<BTreeSet<IpAddr>, NetworkError> {
    let mut stmt =
        tx.prepare_cached("SELECT ip_address FROM ip_allocations WHERE subnet_id = ?1")?;
    let rows = stmt.query_map([subnet.to_string()], |r| r.get::<_, String>(0))?;
    rows.map(|r| ip(&r?)).collect()
}

/// Ports holding addresses in a subnet, with their owners.
pub(super) fn subnet_users(
    tx: &Transaction<'_>,
    subnet: Uuid,
) -> Result<Vec<(Uuid, String)>, NetworkError> {
    let mut stmt = tx.prepare(
        "SELECT p.id, p.device_owner FROM ip_allocations a JOIN ports p ON p.id = a.port_id WHERE a.subnet_id = ?1",
    )?;
    let rows = stmt.query_map([subnet.to_string()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    rows.map(|r| {
        let (id, owner) = r?;
        Ok((uuid(&id)?, owner))
    })
    .collect()
}

// ---- ports ------------------------------------------------------------------------------------

const PORT_COLUMNS: &str =
    "id, network_id, project_id, name, description, mac, admin_state_up, port_security_enabled,
    allowed_address_pairs, device_owner, device_id, server_id, status, created_at, updated_at";

fn port_from_row(row: &Row<'_>) -> Result<Port, NetworkError> {
    let pairs: String = row.get(8)?;
    let status: String = row.get(12)?;
    Ok(Port {
        id: uuid(&row.get::<_, String>(0)?)?,
        network_id: row
            .get::<_, Option<String>>(1)?
            .as_deref()
            .map(uuid)
            .transpose()?,
        project_id: row.get(2)?,
        name: row.get(3)?,
        description: row.get(4)?,
        mac: row.get(5)?,
        admin_state_up: row.get(6)?,
        port_security_enabled: row.get(7)?,
        allowed_address_pairs: from_json::<Vec<AddressPair>>(
            "ports.allowed_address_pairs",
            &pairs,
        )?,
        device_owner: row.get(9)?,
        device_id: row.get(10)?,
        fixed_ips: Vec::new(),
        security_groups: Vec::new(),
        status: if status == "ACTIVE" {
            PortStatus::Active
        } else {
            PortStatus::Down
        },
        server_id: row
            .get::<_, Option<String>>(11)?
            .as_deref()
            .map(uuid)
            .transpose()?,
        created_at: time(&row.get::<_, String>(13)?),
        updated_at: time(&row.get::<_, String>(14)?),
    })
}

/// Inserts a port with its addresses and security groups.
pub(super) fn insert_port(tx: &Transaction<'_>, p: &Port) -> Result<(), NetworkError> {
    tx.execute(
        &format!("INSERT INTO ports ({PORT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
        params![
            p.id.to_string(),
            p.network_id.map(|n| n.to_string()),
            p.project_id,
            p.name,
            p.description,
            p.mac,
            p.admin_state_up,
            p.port_security_enabled,
            to_json(&p.allowed_address_pairs),
            p.device_owner,
            p.device_id,
            p.server_id.map(|s| s.to_string()),
            p.status.as_str(),
            p.created_at.to_string(),
            p.updated_at.to_string(),
        ],
    )?;
    for fixed in &p.fixed_ips {
        tx.execute(
            "INSERT INTO ip_allocations (subnet_id, ip_address, port_id) VALUES (?1, ?2, ?3)",
            params![
                fixed.subnet_id.to_string(),
                fixed.ip_address.to_string(),
                p.id.to_string()
            ],
        )?;
    }
    set_port_security_groups(tx, p.id, &p.security_groups)?;
    Ok(())
}

/// Replaces a port's security groups.
pub(super) fn set_port_security_groups(
    tx: &Transaction<'_>,
    port: Uuid,
    groups: &[Uuid],
) -> Result<(), NetworkError> {
    tx.execute(
        "DELETE FROM port_security_groups WHERE port_id = ?1",
        [port.to_string()],
    )?;
    for group in groups {
        tx.execute(
            "INSERT OR IGNORE INTO port_security_groups (port_id, security_group_id) VALUES (?1, ?2)",
            params![port.to_string(), group.to_string()],
        )?;
    }
    Ok(())
}

fn fill_port(tx: &Transaction<'_>, p: &mut Port) -> Result<(), NetworkError> {
    let mut stmt = tx.prepare_cached(
        "SELECT subnet_id, ip_address FROM ip_allocations WHERE port_id = ?1 ORDER BY rowid",
    )?;
    let rows = stmt.query_map([p.id.to_string()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    p.fixed_ips = rows
        .map(|r| {
            let (subnet, address) = r?;
            Ok(FixedIp {
                subnet_id: uuid(&subnet)?,
                ip_address: ip(&address)?,
            })
        })
        .collect::<Result<_, NetworkError>>()?;
    let mut stmt =
        tx.prepare_cached("SELECT security_group_id FROM port_security_groups WHERE port_id = ?1 ORDER BY security_group_id")?;
    let rows = stmt.query_map([p.id.to_string()], |r| r.get::<_, String>(0))?;
    p.security_groups = rows.map(|r| uuid(&r?)).collect::<Result<_, _>>()?;
    Ok(())
}

pub(super) fn port(tx: &Transaction<'_>, id: Uuid) -> Result<Option<Port>, NetworkError> {
    let found = tx
        .query_row(
            &format!("SELECT {PORT_COLUMNS} FROM ports WHERE id = ?1"),
            [id.to_string()],
            |r| Ok(port_from_row(r)),
        )
        .optional()?
        .transpose()?;
    match found {
        Some(mut p) => {
            fill_port(tx, &mut p)?;
            Ok(Some(p))
        }
        None => Ok(None),
    }
}

/// Every port with a network, in creation order.
pub(super) fn ports(tx: &Transaction<'_>) -> Result<Vec<Port>, NetworkError> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {PORT_COLUMNS} FROM ports WHERE network_id IS NOT NULL ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([], |r| Ok(port_from_row(r)))?;
    let mut out: Vec<Port> = rows
        .map(|r| r.map_err(NetworkError::from).and_then(|p| p))
        .collect::<Result<_, _>>()?;
    // Two set-wide queries instead of two per port: the OVN pass loads every port.
    let mut fixed: BTreeMap<Uuid, Vec<FixedIp>> = BTreeMap::new();
    let mut stmt =
        tx.prepare("SELECT port_id, subnet_id, ip_address FROM ip_allocations ORDER BY rowid")?;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })? {
        let (port, subnet, address) = row?;
        fixed.entry(uuid(&port)?).or_default().push(FixedIp {
            subnet_id: uuid(&subnet)?,
            ip_address: ip(&address)?,
        });
    }
    let mut groups: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
    let mut stmt = tx.prepare(
        "SELECT port_id, security_group_id FROM port_security_groups ORDER BY security_group_id",
    )?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (port, group) = row?;
        groups.entry(uuid(&port)?).or_default().push(uuid(&group)?);
    }
    for p in &mut out {
        p.fixed_ips = fixed.remove(&p.id).unwrap_or_default();
        p.security_groups = groups.remove(&p.id).unwrap_or_default();
    }
    Ok(out)
}

pub(super) fn delete_port(tx: &Transaction<'_>, id: Uuid) -> Result<(), NetworkError> {
    tx.execute("DELETE FROM ports WHERE id = ?1", [id.to_string()])?;
    Ok(())
}

pub(super) fn mac_in_use(tx: &Transaction<'_>, mac: &str) -> Result<bool, NetworkError> {
    Ok(tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM ports WHERE mac = ?1)",
        [mac],
        |r| r.get(0),
    )?)
}

pub(super) fn port_exists(tx: &Transaction<'_>, id: Uuid) -> Result<bool, NetworkError> {
    Ok(tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM ports WHERE id = ?1)",
        [id.to_string()],
        |r| r.get(0),
    )?)
}

/// Records OVN's view of a port; returns whether it changed.
pub(super) fn set_port_status(
    tx: &Transaction<'_>,
    id: Uuid,
    status: PortStatus,
) -> Result<bool, NetworkError> {
    Ok(tx.execute(
        "UPDATE ports SET status = ?2 WHERE id = ?1 AND status != ?2",
        params![id.to_string(), status.as_str()],
    )? > 0)
}

// ---- security groups --------------------------------------------------------------------------

const SG_COLUMNS: &str = "id, name, description, project_id, stateful, created_at, updated_at";
const RULE_COLUMNS: &str =
    "id, security_group_id, project_id, direction, ethertype, protocol, port_range_min,
    port_range_max, remote_ip_prefix, remote_group_id, description, created_at";

fn sg_from_row(row: &Row<'_>) -> Result<SecurityGroup, NetworkError> {
    Ok(SecurityGroup {
        id: uuid(&row.get::<_, String>(0)?)?,
        name: row.get(1)?,
        description: row.get(2)?,
        project_id: row.get(3)?,
        stateful: row.get(4)?,
        rules: Vec::new(),
        created_at: time(&row.get::<_, String>(5)?),
        updated_at: time(&row.get::<_, String>(6)?),
    })
}

fn rule_from_row(row: &Row<'_>) -> Result<SecurityGroupRule, NetworkError> {
    let direction: String = row.get(3)?;
    let ethertype: String = row.get(4)?;
    Ok(SecurityGroupRule {
        id: uuid(&row.get::<_, String>(0)?)?,
        security_group_id: uuid(&row.get::<_, String>(1)?)?,
        project_id: row.get(2)?,
        direction: Direction::parse(&direction)
            .ok_or_else(|| NetworkError::Corrupt(direction.clone()))?,
        ethertype: EtherType::parse(&ethertype)
            .ok_or_else(|| NetworkError::Corrupt(ethertype.clone()))?,
        protocol: row
            .get::<_, Option<String>>(5)?
            .as_deref()
            .and_then(Protocol::parse),
        port_range_min: row.get(6)?,
        port_range_max: row.get(7)?,
        remote_ip_prefix: row
            .get::<_, Option<String>>(8)?
            .as_deref()
            .map(net)
            .transpose()?,
        remote_group_id: row
            .get::<_, Option<String>>(9)?
            .as_deref()
            .map(uuid)
            .transpose()?,
        description: row.get(10)?,
        created_at: time(&row.get::<_, String>(11)?),
    })
}

pub(super) fn insert_security_group(
    tx: &Transaction<'_>,
    g: &SecurityGroup,
) -> Result<(), NetworkError> {
    tx.execute(
        &format!("INSERT INTO security_groups ({SG_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            g.id.to_string(),
            g.name,
            g.description,
            g.project_id,
            g.stateful,
            g.created_at.to_string(),
            g.updated_at.to_string()
        ],
    )?;
    for rule in &g.rules {
        insert_rule(tx, rule)?;
    }
    Ok(())
}

pub(super) fn insert_rule(tx: &Transaction<'_>, r: &SecurityGroupRule) -> Result<(), NetworkError> {
    tx.execute(
        &format!("INSERT INTO security_group_rules ({RULE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
        params![
            r.id.to_string(),
            r.security_group_id.to_string(),
            r.project_id,
            r.direction.as_str(),
            r.ethertype.as_str(),
            r.protocol.map(Protocol::as_string),
            r.port_range_min,
            r.port_range_max,
            r.remote_ip_prefix.map(|p| p.to_string()),
            r.remote_group_id.map(|g| g.to_string()),
            r.description,
            r.created_at.to_string(),
        ],
    )?;
    Ok(())
}

fn rules(
    tx: &Transaction<'_>,
    group: Option<Uuid>,
) -> Result<Vec<SecurityGroupRule>, NetworkError> {
    let sql = format!(
        "SELECT {RULE_COLUMNS} FROM security_group_rules WHERE ?1 IS NULL OR security_group_id = ?1 ORDER BY created_at, id"
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let rows = stmt.query_map([group.map(|g| g.to_string())], |r| Ok(rule_from_row(r)))?;
    rows.map(|r| r.map_err(NetworkError::from).and_then(|x| x))
        .collect()
}

pub(super) fn rule(
    tx: &Transaction<'_>,
    id: Uuid,
) -> Result<Option<SecurityGroupRule>, NetworkError> {
    tx.query_row(
        &format!("SELECT {RULE_COLUMNS} FROM security_group_rules WHERE id = ?1"),
        [id.to_string()],
        |r| Ok(rule_from_row(r)),
    )
    .optional()?
    .transpose()
}

pub(super) fn security_group(
    tx: &Transaction<'_>,
    id: Uuid,
) -> Result<Option<SecurityGroup>, NetworkError> {
    let found = tx
        .query_row(
            &format!("SELECT {SG_COLUMNS} FROM security_groups WHERE id = ?1"),
            [id.to_string()],
            |r| Ok(sg_from_row(r)),
        )
        .optional()?
        .transpose()?;
    match found {
        Some(mut g) => {
            g.rules = rules(tx, Some(id))?;
            Ok(Some(g))
        }
        None => Ok(None),
    }
}

pub(super) fn security_groups(tx: &Transaction<'_>) -> Result<Vec<SecurityGroup>, NetworkError> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {SG_COLUMNS} FROM security_groups ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([], |r| Ok(sg_from_row(r)))?;
    let mut groups: Vec<SecurityGroup> = rows
        .map(|r| r.map_err(NetworkError::from).and_then(|g| g))
        .collect::<Result<_, _>>()?;
    let mut by_group: BTreeMap<Uuid, Vec<SecurityGroupRule>> = BTreeMap::new();
    for rule in rules(tx, None)? {
        by_group
            .entry(rule.security_group_id)
            .or_default()
            .push(rule);
    }
    for g in &mut groups {
        g.rules = by_group.remove(&g.id).unwrap_or_default();
    }
    Ok(groups)
}

pub(super) fn default_security_group(
    tx: &Transaction<'_>,
    project: &str,
) -> Result<Option<Uuid>, NetworkError> {
    tx.query_row(
        "SELECT id FROM security_groups WHERE project_id = ?1 AND name = 'default'",
        [project],
        |r| r.get::<_, String>(0),
    )
    .optional()?
    .as_deref()
    .map(uuid)
    .transpose()
}

pub(super) fn security_group_users(tx: &Transaction<'_>, id: Uuid) -> Result<u64, NetworkError> {
    Ok(tx.query_row(
        "SELECT count(*) FROM port_security_groups WHERE security_group_id = ?1",
        [id.to_string()],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

pub(super) fn delete_security_group(tx: &Transaction<'_>, id: Uuid) -> Result<(), NetworkError> {
    tx.execute(
        "DELETE FROM security_groups WHERE id = ?1",
        [id.to_string()],
    )?;
    Ok(())
}

pub(super) fn delete_rule(tx: &Transaction<'_>, id: Uuid) -> Result<(), NetworkError> {
    tx.execute(
        "DELETE FROM security_group_rules WHERE id = ?1",
        [id.to_string()],
    )?;
    Ok(())
}

// ---- routers ----------------------------------------------------------------------------------

const ROUTER_COLUMNS: &str = "id, name, description, project_id, admin_state_up, external_network_id, enable_snat, routes, created_at, updated_at";

fn router_from_row(row: &Row<'_>) -> Result<(Router, Option<Uuid>, bool), NetworkError> {
    let routes: String = row.get(7)?;
    Ok((
        Router {
            id: uuid(&row.get::<_, String>(0)?)?,
            name: row.get(1)?,
            description: row.get(2)?,
            project_id: row.get(3)?,
            admin_state_up: row.get(4)?,
            external_gateway: None,
            routes: from_json("routers.routes", &routes)?,
            interfaces: Vec::new(),
            created_at: time(&row.get::<_, String>(8)?),
            updated_at: time(&row.get::<_, String>(9)?),
        },
        row.get::<_, Option<String>>(5)?
            .as_deref()
            .map(uuid)
            .transpose()?,
        row.get(6)?,
    ))
}

pub(super) fn insert_router(tx: &Transaction<'_>, r: &Router) -> Result<(), NetworkError> {
    tx.execute(
        &format!("INSERT INTO routers ({ROUTER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            r.id.to_string(),
            r.name,
            r.description,
            r.project_id,
            r.admin_state_up,
            r.external_gateway.as_ref().map(|g| g.network_id.to_string()),
            r.external_gateway.as_ref().is_none_or(|g| g.enable_snat),
            to_json(&r.routes),
            r.created_at.to_string(),
            r.updated_at.to_string(),
        ],
    )?;
    Ok(())
}

pub(super) fn set_router_gateway(
    tx: &Transaction<'_>,
    id: Uuid,
    network: Option<Uuid>,
    enable_snat: bool,
    now: Timestamp,
) -> Result<(), NetworkError> {
    tx.execute(
        "UPDATE routers SET external_network_id = ?2, enable_snat = ?3, updated_at = ?4 WHERE id = ?1",
        params![id.to_string(), network.map(|n| n.to_string()), enable_snat, now.to_string()],
    )?;
    Ok(())
}

/// Completes a router with its gateway and interfaces, read from its ports.
fn fill_router(
    tx: &Transaction<'_>,
    router: &mut Router,
    external: Option<Uuid>,
    snat: bool,
) -> Result<(), NetworkError> {
    let mut stmt = tx.prepare_cached(
        "SELECT p.id, p.device_owner, a.subnet_id, a.ip_address FROM ports p JOIN ip_allocations a ON a.port_id = p.id
         WHERE p.device_id = ?1 AND p.device_owner IN (?2, ?3) ORDER BY p.created_at, a.rowid",
    )?;
    let rows = stmt.query_map(
        params![
            router.id.to_string(),
            OWNER_ROUTER_INTERFACE,
            OWNER_ROUTER_GATEWAY
        ],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        },
    )?;
    let mut gateway: Option<ExternalGateway> = None;
    for row in rows {
        let (port, owner, subnet, address) = row?;
        let (port, subnet, address) = (uuid(&port)?, uuid(&subnet)?, ip(&address)?);
        if owner == OWNER_ROUTER_GATEWAY {
            let network = external.ok_or_else(|| {
                NetworkError::Corrupt(format!(
                    "router {} has a gateway port but no network",
                    router.id
                ))
            })?;
            gateway
                .get_or_insert_with(|| ExternalGateway {
                    network_id: network,
                    enable_snat: snat,
                    external_fixed_ips: Vec::new(),
                    port_id: port,
                })
                .external_fixed_ips
                .push(FixedIp {
                    subnet_id: subnet,
                    ip_address: address,
                });
        } else if !router
            .interfaces
            .iter()
            .any(|i| i.port_id == port && i.subnet_id == subnet)
        {
            router.interfaces.push(RouterInterface {
                port_id: port,
                subnet_id: subnet,
            });
        }
    }
    router.external_gateway = gateway;
    Ok(())
}

pub(super) fn router(tx: &Transaction<'_>, id: Uuid) -> Result<Option<Router>, NetworkError> {
    let found = tx
        .query_row(
            &format!("SELECT {ROUTER_COLUMNS} FROM routers WHERE id = ?1"),
            [id.to_string()],
            |r| Ok(router_from_row(r)),
        )
        .optional()?
        .transpose()?;
    match found {
        Some((mut router, external, snat)) => {
            fill_router(tx, &mut router, external, snat)?;
            Ok(Some(router))
        }
        None => Ok(None),
    }
}

pub(super) fn routers(tx: &Transaction<'_>) -> Result<Vec<Router>, NetworkError> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {ROUTER_COLUMNS} FROM routers ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([], |r| Ok(router_from_row(r)))?;
    let found: Vec<(Router, Option<Uuid>, bool)> = rows
        .map(|r| r.map_err(NetworkError::from).and_then(|x| x))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(found.len());
    for (mut router, external, snat) in found {
        fill_router(tx, &mut router, external, snat)?;
        out.push(router);
    }
    Ok(out)
}

pub(super) fn delete_router(tx: &Transaction<'_>, id: Uuid) -> Result<(), NetworkError> {
    tx.execute("DELETE FROM routers WHERE id = ?1", [id.to_string()])?;
    Ok(())
}

// ---- floating IPs -----------------------------------------------------------------------------

const FIP_COLUMNS: &str =
    "id, project_id, description, floating_network_id, floating_port_id, port_id, fixed_ip_address,
    router_id, created_at, updated_at";

fn fip_from_row(tx: &Transaction<'_>, row: &Row<'_>) -> Result<FloatingIp, NetworkError> {
    let floating_port = uuid(&row.get::<_, String>(4)?)?;
    let address: String = tx.query_row(
        "SELECT ip_address FROM ip_allocations WHERE port_id = ?1",
        [floating_port.to_string()],
        |r| r.get(0),
    )?;
    Ok(FloatingIp {
        id: uuid(&row.get::<_, String>(0)?)?,
        project_id: row.get(1)?,
        description: row.get(2)?,
        floating_network_id: uuid(&row.get::<_, String>(3)?)?,
        floating_ip_address: ip(&address)?,
        floating_port_id: floating_port,
        port_id: row
            .get::<_, Option<String>>(5)?
            .as_deref()
            .map(uuid)
            .transpose()?,
        fixed_ip_address: row
            .get::<_, Option<String>>(6)?
            .as_deref()
            .map(ip)
            .transpose()?,
        router_id: row
            .get::<_, Option<String>>(7)?
            .as_deref()
            .map(uuid)
            .transpose()?,
        created_at: time(&row.get::<_, String>(8)?),
        updated_at: time(&row.get::<_, String>(9)?),
    })
}

pub(super) fn insert_floating_ip(tx: &Transaction<'_>, f: &FloatingIp) -> Result<(), NetworkError> {
    tx.execute(
        &format!("INSERT INTO floating_ips ({FIP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            f.id.to_string(),
            f.project_id,
            f.description,
            f.floating_network_id.to_string(),
            f.floating_port_id.to_string(),
            f.port_id.map(|p| p.to_string()),
            f.fixed_ip_address.map(|a| a.to_string()),
            f.router_id.map(|r| r.to_string()),
            f.created_at.to_string(),
            f.updated_at.to_string(),
        ],
    )?;
    Ok(())
}

pub(super) fn update_floating_ip(tx: &Transaction<'_>, f: &FloatingIp) -> Result<(), NetworkError> {
    tx.execute(
        "UPDATE floating_ips SET port_id = ?2, fixed_ip_address = ?3, router_id = ?4, updated_at = ?5 WHERE id = ?1",
        params![
            f.id.to_string(),
            f.port_id.map(|p| p.to_string()),
            f.fixed_ip_address.map(|a| a.to_string()),
            f.router_id.map(|r| r.to_string()),
            f.updated_at.to_string(),
        ],
    )?;
    Ok(())
}

pub(super) fn floating_ip(
    tx: &Transaction<'_>,
    id: Uuid,
) -> Result<Option<FloatingIp>, NetworkError> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {FIP_COLUMNS} FROM floating_ips WHERE id = ?1"
    ))?;
    let mut rows = stmt.query([id.to_string()])?;
    match rows.next()? {
        Some(row) => Ok(Some(fip_from_row(tx, row)?)),
        None => Ok(None),
    }
}

pub(super) fn floating_ips(tx: &Transaction<'_>) -> Result<Vec<FloatingIp>, NetworkError> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {FIP_COLUMNS} FROM floating_ips ORDER BY created_at, id"
    ))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(fip_from_row(tx, row)?);
    }
    Ok(out)
}

pub(super) fn delete_floating_ip(tx: &Transaction<'_>, id: Uuid) -> Result<(), NetworkError> {
    tx.execute("DELETE FROM floating_ips WHERE id = ?1", [id.to_string()])?;
    Ok(())
}

/// Floating IPs whose NAT runs on `router`.
pub(super) fn floating_ips_on_router(
    tx: &Transaction<'_>,
    router: Uuid,
) -> Result<u64, NetworkError> {
    Ok(tx.query_row(
        "SELECT count(*) FROM floating_ips WHERE router_id = ?1",
        [router.to_string()],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// Floating IPs associated with `port`.
pub(super) fn floating_ips_of_port(
    tx: &Transaction<'_>,
    port: Uuid,
) -> Result<Vec<Uuid>, NetworkError> {
    let mut stmt = tx.prepare("SELECT id FROM floating_ips WHERE port_id = ?1")?;
    let rows = stmt.query_map([port.to_string()], |r| r.get::<_, String>(0))?;
    rows.map(|r| uuid(&r?)).collect()
}

// ---- updates ----------------------------------------------------------------------------------

/// Writes a network's mutable attributes.
pub(super) fn update_network(tx: &Transaction<'_>, n: &Network) -> Result<(), NetworkError> {
    tx.execute(
        "UPDATE networks SET name = ?2, description = ?3, admin_state_up = ?4, shared = ?5, external = ?6,
             port_security_enabled = ?7, updated_at = ?8 WHERE id = ?1",
        params![
            n.id.to_string(),
            n.name,
            n.description,
            n.admin_state_up,
            n.shared,
            n.external,
            n.port_security_enabled,
            n.updated_at.to_string(),
        ],
    )?;
    Ok(())
}

/// Ports on `network` that belong to projects other than `project`.
pub(super) fn foreign_ports_on_network(
    tx: &Transaction<'_>,
    network: Uuid,
    project: &str,
) -> Result<u64, NetworkError> {
    Ok(tx.query_row(
        "SELECT count(*) FROM ports WHERE network_id = ?1 AND project_id != ?2",
        params![network.to_string(), project],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// Router gateways and floating IPs on `network`.
pub(super) fn external_users(tx: &Transaction<'_>, network: Uuid) -> Result<u64, NetworkError> {
    Ok(tx.query_row(
        "SELECT (SELECT count(*) FROM routers WHERE external_network_id = ?1)
              + (SELECT count(*) FROM floating_ips WHERE floating_network_id = ?1)",
        [network.to_string()],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// Writes a subnet's mutable attributes.
pub(super) fn update_subnet(tx: &Transaction<'_>, s: &Subnet) -> Result<(), NetworkError> {
    tx.execute(
        "UPDATE subnets SET name = ?2, description = ?3, dns_nameservers = ?4, host_routes = ?5, enable_dhcp = ?6,
             updated_at = ?7 WHERE id = ?1",
        params![
            s.id.to_string(),
            s.name,
            s.description,
            to_json(&s.dns_nameservers),
            to_json(&s.host_routes),
            s.enable_dhcp,
            s.updated_at.to_string(),
        ],
    )?;
    Ok(())
}

/// Writes a port's mutable attributes and its security groups.
pub(super) fn update_port(tx: &Transaction<'_>, p: &Port) -> Result<(), NetworkError> {
    tx.execute(
        "UPDATE ports SET name = ?2, description = ?3, admin_state_up = ?4, port_security_enabled = ?5,
             allowed_address_pairs = ?6, device_owner = ?7, device_id = ?8, updated_at = ?9 WHERE id = ?1",
        params![
            p.id.to_string(),
            p.name,
            p.description,
            p.admin_state_up,
            p.port_security_enabled,
            to_json(&p.allowed_address_pairs),
            p.device_owner,
            p.device_id,
            p.updated_at.to_string(),
        ],
    )?;
    set_port_security_groups(tx, p.id, &p.security_groups)
}

/// Writes a router's own attributes (gateway and interfaces live in its ports).
pub(super) fn update_router(tx: &Transaction<'_>, r: &Router) -> Result<(), NetworkError> {
    tx.execute(
        "UPDATE routers SET name = ?2, description = ?3, admin_state_up = ?4, routes = ?5, updated_at = ?6
             WHERE id = ?1",
        params![
            r.id.to_string(),
            r.name,
            r.description,
            r.admin_state_up,
            to_json(&r.routes),
            r.updated_at.to_string(),
        ],
    )?;
    Ok(())
}

/// Writes a security group's name and description.
pub(super) fn update_security_group(
    tx: &Transaction<'_>,
    g: &SecurityGroup,
) -> Result<(), NetworkError> {
    tx.execute(
        "UPDATE security_groups SET name = ?2, description = ?3, updated_at = ?4 WHERE id = ?1",
        params![
            g.id.to_string(),
            g.name,
            g.description,
            g.updated_at.to_string()
        ],
    )?;
    Ok(())
}

/// Writes a floating IP's description.
pub(super) fn set_floating_ip_description(
    tx: &Transaction<'_>,
    id: Uuid,
    description: &str,
) -> Result<(), NetworkError> {
    tx.execute(
        "UPDATE floating_ips SET description = ?2 WHERE id = ?1",
        params![id.to_string(), description],
    )?;
    Ok(())
}

// ---- default security group rule templates ----------------------------------------------------

const TEMPLATE_COLUMNS: &str =
    "id, direction, ethertype, protocol, port_range_min, port_range_max, remote_ip_prefix,
    remote_group_id, used_in_default_sg, used_in_non_default_sg, description, created_at";

fn template_from_row(row: &Row<'_>) -> Result<DefaultSecurityGroupRule, NetworkError> {
    let direction: String = row.get(1)?;
    let ethertype: String = row.get(2)?;
    let remote: Option<String> = row.get(7)?;
    Ok(DefaultSecurityGroupRule {
        id: uuid(&row.get::<_, String>(0)?)?,
        direction: Direction::parse(&direction)
            .ok_or_else(|| NetworkError::Corrupt(direction.clone()))?,
        ethertype: EtherType::parse(&ethertype)
            .ok_or_else(|| NetworkError::Corrupt(ethertype.clone()))?,
        protocol: row
            .get::<_, Option<String>>(3)?
            .as_deref()
            .and_then(Protocol::parse),
        port_range_min: row.get(4)?,
        port_range_max: row.get(5)?,
        remote_ip_prefix: row
            .get::<_, Option<String>>(6)?
            .as_deref()
            .map(net)
            .transpose()?,
        remote_group: remote
            .as_deref()
            .map(|text| {
                TemplateRemoteGroup::parse(text)
                    .ok_or_else(|| NetworkError::Corrupt(format!("remote group {text:?}")))
            })
            .transpose()?,
        used_in_default_sg: row.get(8)?,
        used_in_non_default_sg: row.get(9)?,
        description: row.get(10)?,
        created_at: time(&row.get::<_, String>(11)?),
    })
}

/// Every template, oldest first.
pub(super) fn default_rules(
    tx: &Transaction<'_>,
) -> Result<Vec<DefaultSecurityGroupRule>, NetworkError> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {TEMPLATE_COLUMNS} FROM default_security_group_rules ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([], |r| Ok(template_from_row(r)))?;
    rows.map(|r| r.map_err(NetworkError::from).and_then(|x| x))
        .collect()
}

pub(super) fn default_rule(
    tx: &Transaction<'_>,
    id: Uuid,
) -> Result<Option<DefaultSecurityGroupRule>, NetworkError> {
    tx.query_row(
        &format!("SELECT {TEMPLATE_COLUMNS} FROM default_security_group_rules WHERE id = ?1"),
        [id.to_string()],
        |r| Ok(template_from_row(r)),
    )
    .optional()?
    .transpose()
}

pub(super) fn insert_default_rule(
    tx: &Transaction<'_>,
    r: &DefaultSecurityGroupRule,
) -> Result<(), NetworkError> {
    tx.execute(
        &format!("INSERT INTO default_security_group_rules ({TEMPLATE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
        params![
            r.id.to_string(),
            r.direction.as_str(),
            r.ethertype.as_str(),
            r.protocol.map(Protocol::as_string),
            r.port_range_min,
            r.port_range_max,
            r.remote_ip_prefix.map(|p| p.to_string()),
            r.remote_group.map(TemplateRemoteGroup::as_string),
            r.used_in_default_sg,
            r.used_in_non_default_sg,
            r.description,
            r.created_at.to_string(),
        ],
    )?;
    Ok(())
}

pub(super) fn delete_default_rule(tx: &Transaction<'_>, id: Uuid) -> Result<(), NetworkError> {
    tx.execute(
        "DELETE FROM default_security_group_rules WHERE id = ?1",
        [id.to_string()],
    )?;
    Ok(())
}
