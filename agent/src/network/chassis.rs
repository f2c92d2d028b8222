//! This node as an OVN chassis: the local Open_vSwitch database configured so `ovn-controller` joins
//! the site (system-id, southbound remote, encapsulation, bridge mappings), the provider bridges with
//! their uplinks, and server NICs plugged into the integration bridge with `iface-id` = port id.
//!
//! The agent plugs VIFs itself, as Nova's os-vif does, instead of leaving it to libvirt's
//! `virtualport`: libvirt would call `ovs-vsctl` against the default database path, which does not
//! hold for userspace-datapath or lab deployments, and the agent then also owns unplugging.

use super::database::{Database, DatabaseError, DatabaseView};
use crate::reconcile::{BoxError, Next, Reconciler};
use ovsdb::{Atom, Condition, Operation, Row, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tracing::info;
use uuid::Uuid;

/// The reconcile kind of the local switch configuration.
pub const CHASSIS: &str = "chassis";
const KEY: &str = "local";
/// Tables of the Open_vSwitch database the agent reads and writes.
pub const TABLES: &[&str] = &["Open_vSwitch", "Bridge", "Port", "Interface"];

/// A provider bridge: where a physical network leaves the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderBridge {
    /// OVS bridge name.
    pub bridge: String,
    /// Host interfaces added to it (the uplinks).
    pub uplinks: Vec<String>,
}

/// How this node joins OVN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChassisSettings {
    /// OVN chassis name (`system-id`).
    pub system_id: String,
    /// Southbound database `ovn-controller` connects to.
    pub southbound: String,
    /// Tunnel type between chassis.
    pub encap_type: String,
    /// This node's tunnel endpoint.
    pub encap_ip: String,
    /// `system` (kernel) or `netdev` (userspace) datapath.
    pub datapath_type: String,
    /// Integration bridge (`ovn-controller` creates it).
    pub integration_bridge: String,
    /// Physical network → provider bridge.
    pub provider_bridges: BTreeMap<String, ProviderBridge>,
    /// Whether router gateways may be scheduled here.
    pub gateway: bool,
}

impl ChassisSettings {
    /// The `external_ids` of the Open_vSwitch row this node needs.
    pub fn external_ids(&self) -> BTreeMap<String, String> {
        let mappings: Vec<String> = self
            .provider_bridges
            .iter()
            .map(|(physnet, b)| format!("{physnet}:{}", b.bridge))
            .collect();
        let mut ids = BTreeMap::from([
            ("system-id".to_owned(), self.system_id.clone()),
            ("ovn-remote".to_owned(), self.southbound.clone()),
            ("ovn-encap-type".to_owned(), self.encap_type.clone()),
            ("ovn-encap-ip".to_owned(), self.encap_ip.clone()),
            ("ovn-bridge".to_owned(), self.integration_bridge.clone()),
            ("ovn-bridge-mappings".to_owned(), mappings.join(",")),
        ]);
        if self.datapath_type != "system" {
            ids.insert(
                "ovn-bridge-datapath-type".into(),
                self.datapath_type.clone(),
            );
        }
        if self.gateway {
            ids.insert("ovn-cms-options".into(), "enable-chassis-as-gw".into());
        }
        ids
    }
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    match value {
        Some(Value::Map(map)) => map
            .iter()
            .filter_map(|(k, v)| match (k, v) {
                (Atom::String(k), Atom::String(v)) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn map_value(map: &BTreeMap<String, String>) -> Value {
    Value::Map(
        map.iter()
            .map(|(k, v)| (Atom::String(k.clone()), Atom::String(v.clone())))
            .collect(),
    )
}

fn uuid_set(value: Option<&Value>) -> BTreeSet<Uuid> {
    match value {
        Some(Value::Set(set)) => set
            .iter()
            .filter_map(|a| {
                if let Atom::Uuid(u) = a {
                    Some(*u)
                } else {
                    None
                }
            })
            .collect(),
        Some(Value::Atom(Atom::Uuid(u))) => BTreeSet::from([*u]),
        _ => BTreeSet::new(),
    }
}

fn set_value(atoms: impl IntoIterator<Item = Atom>) -> Value {
    Value::Set(atoms.into_iter().collect())
}

fn name(row: &Row) -> Option<&str> {
    match row.get("name") {
        Some(Value::Atom(Atom::String(s))) => Some(s),
        _ => None,
    }
}

fn text(value: &str) -> Value {
    Value::Atom(Atom::String(value.to_owned()))
}

/// Finds rows by name in one table of a view.
fn by_name<'a>(view: &'a DatabaseView, table: &str) -> BTreeMap<&'a str, (Uuid, &'a Row)> {
    view.rows(table)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(u, r)| name(r).map(|n| (n, (u, r))))
        .collect()
}

/// Inserts a port with one interface; returns the named UUID of the port.
fn new_port(
    ops: &mut Vec<Operation>,
    port: &str,
    kind: &str,
    external_ids: &BTreeMap<String, String>,
    tag: &str,
) -> Atom {
    let iface = format!("iface_{tag}");
    let port_name = format!("port_{tag}");
    let mut interface = Row::from([("name".to_owned(), text(port))]);
    if !kind.is_empty() {
        interface.insert("type".into(), text(kind));
    }
    if !external_ids.is_empty() {
        interface.insert("external_ids".into(), map_value(external_ids));
    }
    ops.push(Operation::insert_named(
        "Interface",
        interface,
        iface.clone(),
    ));
    ops.push(Operation::insert_named(
        "Port",
        Row::from([
            ("name".to_owned(), text(port)),
            ("interfaces".to_owned(), set_value([Atom::NamedUuid(iface)])),
        ]),
        port_name.clone(),
    ));
    Atom::NamedUuid(port_name)
}

/// The operations that make the local switch match `settings` (empty when it does).
pub fn plan(view: &DatabaseView, settings: &ChassisSettings) -> Vec<Operation> {
    let mut ops = Vec::new();
    let root = view
        .rows("Open_vSwitch")
        .unwrap_or_default()
        .into_iter()
        .next();
    let (root_uuid, mut root_bridges) = match root {
        Some((uuid, row)) => {
            let mut ids = string_map(row.get("external_ids"));
            let before = ids.clone();
            ids.extend(settings.external_ids());
            if ids != before {
                ops.push(Operation::update(
                    "Open_vSwitch",
                    vec![Condition::uuid(uuid)],
                    Row::from([("external_ids".to_owned(), map_value(&ids))]),
                ));
            }
            (
                Some(uuid),
                uuid_set(row.get("bridges"))
                    .into_iter()
                    .map(Atom::Uuid)
                    .collect::<BTreeSet<Atom>>(),
            )
        }
        None => (None, BTreeSet::new()),
    };
    let bridges = by_name(view, "Bridge");
    let ports = by_name(view, "Port");
    let mut bridges_changed = false;
    for (index, provider) in settings.provider_bridges.values().enumerate() {
        let wanted_ports: Vec<(&str, &str)> =
            std::iter::once((provider.bridge.as_str(), "internal"))
                .chain(provider.uplinks.iter().map(|u| (u.as_str(), "")))
                .collect();
        match bridges.get(provider.bridge.as_str()) {
            None => {
                let mut port_atoms = BTreeSet::new();
                for (n, (port, kind)) in wanted_ports.iter().enumerate() {
                    port_atoms.insert(new_port(
                        &mut ops,
                        port,
                        kind,
                        &BTreeMap::new(),
                        &format!("b{index}_{n}"),
                    ));
                }
                let bridge_name = format!("bridge_{index}");
                ops.push(Operation::insert_named(
                    "Bridge",
                    Row::from([
                        ("name".to_owned(), text(&provider.bridge)),
                        ("datapath_type".to_owned(), text(&settings.datapath_type)),
                        ("ports".to_owned(), Value::Set(port_atoms)),
                    ]),
                    bridge_name.clone(),
                ));
                root_bridges.insert(Atom::NamedUuid(bridge_name));
                bridges_changed = true;
            }
            Some((uuid, row)) => {
                let present: BTreeSet<Uuid> = uuid_set(row.get("ports"));
                let mut port_atoms: BTreeSet<Atom> =
                    present.iter().copied().map(Atom::Uuid).collect();
                let mut changed = false;
                for (n, (port, kind)) in wanted_ports.iter().enumerate() {
                    let on_bridge = ports.get(port).is_some_and(|(p, _)| present.contains(p));
                    if !on_bridge {
                        port_atoms.insert(new_port(
                            &mut ops,
                            port,
                            kind,
                            &BTreeMap::new(),
                            &format!("b{index}_{n}"),
                        ));
                        changed = true;
                    }
                }
                let mut update = Row::new();
                if changed {
                    update.insert("ports".into(), Value::Set(port_atoms));
                }
                if !matches!(row.get("datapath_type"), Some(Value::Atom(Atom::String(d))) if *d == settings.datapath_type)
                {
                    update.insert("datapath_type".into(), text(&settings.datapath_type));
                }
                if !update.is_empty() {
                    ops.push(Operation::update(
                        "Bridge",
                        vec![Condition::uuid(*uuid)],
                        update,
                    ));
                }
            }
        }
    }
    match root_uuid {
        Some(uuid) if bridges_changed => {
            ops.push(Operation::update(
                "Open_vSwitch",
                vec![Condition::uuid(uuid)],
                Row::from([("bridges".to_owned(), Value::Set(root_bridges))]),
            ));
        }
        None => {
            // A database nobody initialised (`ovs-vsctl init` was never run).
            ops.push(Operation::insert(
                "Open_vSwitch",
                Row::from([
                    (
                        "external_ids".to_owned(),
                        map_value(&settings.external_ids()),
                    ),
                    ("bridges".to_owned(), Value::Set(root_bridges)),
                ]),
            ));
        }
        Some(_) => {}
    }
    ops
}

/// Keeps the local switch configured (and repairs it when someone changes it).
pub struct ChassisReconciler {
    ovs: Arc<dyn Database>,
    settings: ChassisSettings,
}

impl ChassisReconciler {
    /// A reconciler for the local switch behind `ovs`.
    pub fn new(ovs: Arc<dyn Database>, settings: ChassisSettings) -> Self {
        Self { ovs, settings }
    }
}

impl Reconciler for ChassisReconciler {
    fn kind(&self) -> &'static str {
        CHASSIS
    }

    fn all_keys(&self) -> Result<Vec<String>, BoxError> {
        Ok(vec![KEY.into()])
    }

    fn changed(&self) -> Result<Vec<(String, i64)>, BoxError> {
        Ok(Vec::new())
    }

    fn observe(&self) -> Result<Vec<String>, BoxError> {
        let view = self.ovs.view()?;
        Ok(if plan(&view, &self.settings).is_empty() {
            Vec::new()
        } else {
            vec![KEY.into()]
        })
    }

    fn reconcile(&self, _key: &str) -> Result<Next, BoxError> {
        let view = self.ovs.view()?;
        let ops = plan(&view, &self.settings);
        if !ops.is_empty() {
            let count = ops.len();
            self.ovs.transact(ops)?;
            info!(operations = count, system_id = %self.settings.system_id, "local switch configured for OVN");
        }
        Ok(Next::Done)
    }
}

/// Plugging server NICs into the local switch; what compute needs from networking for a guest start.
pub trait VifPlugger: Send + Sync {
    /// Puts `vif` on the integration bridge. With `fresh`, an existing port of that name is replaced,
    /// so the switch opens the tap device anew (it is recreated each time the guest starts).
    fn plug(&self, vif: &Vif, fresh: bool) -> Result<(), DatabaseError>;
    /// Takes every VIF of `server` off the integration bridge; none is fine.
    fn unplug_server(&self, server: Uuid) -> Result<(), DatabaseError>;
}

/// For nodes without networking: plugging is an error, unplugging has nothing to do.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoVifs;

impl VifPlugger for NoVifs {
    fn plug(&self, vif: &Vif, _fresh: bool) -> Result<(), DatabaseError> {
        Err(DatabaseError::Unavailable {
            database: "Open_vSwitch".into(),
            reason: format!(
                "cannot plug {}: networking is not enabled on this node",
                vif.device
            ),
        })
    }

    fn unplug_server(&self, _server: Uuid) -> Result<(), DatabaseError> {
        Ok(())
    }
}

/// Records plugs in memory; for compute's unit tests.
#[derive(Debug, Default)]
pub struct RecordingVifs {
    plugged: std::sync::Mutex<BTreeMap<String, (Vif, u32)>>,
}

impl RecordingVifs {
    /// Plugged VIFs by device, with how often each was (re)plugged fresh.
    pub fn plugged(&self) -> BTreeMap<String, (Vif, u32)> {
        self.plugged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl VifPlugger for RecordingVifs {
    fn plug(&self, vif: &Vif, fresh: bool) -> Result<(), DatabaseError> {
        let mut plugged = self
            .plugged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = plugged
            .entry(vif.device.clone())
            .or_insert_with(|| (vif.clone(), 0));
        entry.0 = vif.clone();
        if fresh {
            entry.1 += 1;
        }
        Ok(())
    }

    fn unplug_server(&self, server: Uuid) -> Result<(), DatabaseError> {
        self.plugged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, (v, _)| v.server_id != server);
        Ok(())
    }
}

/// Plugs server NICs into the integration bridge through the Open_vSwitch database.
pub struct OvsVifs {
    ovs: Arc<dyn Database>,
    bridge: String,
}

/// What identifies a VIF to OVN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vif {
    /// Tap device name.
    pub device: String,
    /// Logical port (`iface-id`).
    pub port_id: Uuid,
    /// MAC.
    pub mac: String,
    /// Server.
    pub server_id: Uuid,
}

impl OvsVifs {
    /// Plugs into `bridge` of the switch behind `ovs`.
    pub fn new(ovs: Arc<dyn Database>, bridge: &str) -> Self {
        Self {
            ovs,
            bridge: bridge.to_owned(),
        }
    }

    /// Ports on the integration bridge, with its UUID and current port set.
    fn bridge_ports(&self, view: &DatabaseView) -> Option<(Uuid, BTreeSet<Uuid>)> {
        by_name(view, "Bridge")
            .get(self.bridge.as_str())
            .map(|(uuid, row)| (*uuid, uuid_set(row.get("ports"))))
    }
}

impl VifPlugger for OvsVifs {
    fn plug(&self, vif: &Vif, fresh: bool) -> Result<(), DatabaseError> {
        let view = self.ovs.view()?;
        let bridges = by_name(&view, "Bridge");
        let Some((bridge_uuid, bridge)) = bridges.get(self.bridge.as_str()) else {
            return Err(DatabaseError::Unavailable {
                database: "Open_vSwitch".into(),
                reason: format!(
                    "integration bridge {} does not exist (yet): is ovn-controller running?",
                    self.bridge
                ),
            });
        };
        let ports = by_name(&view, "Port");
        let interfaces = by_name(&view, "Interface");
        let present = uuid_set(bridge.get("ports"));
        let ids = BTreeMap::from([
            ("iface-id".to_owned(), vif.port_id.to_string()),
            ("attached-mac".to_owned(), vif.mac.clone()),
            ("iface-status".to_owned(), "active".to_owned()),
            ("vm-id".to_owned(), vif.server_id.to_string()),
        ]);
        let existing = ports
            .get(vif.device.as_str())
            .filter(|(p, _)| present.contains(p));
        let up_to_date = existing.is_some()
            && interfaces
                .get(vif.device.as_str())
                .is_some_and(|(_, row)| string_map(row.get("external_ids")) == ids);
        if up_to_date && !fresh {
            return Ok(());
        }
        let mut ops = Vec::new();
        let mut kept: BTreeSet<Atom> = present.iter().copied().map(Atom::Uuid).collect();
        if let Some((old, _)) = existing {
            kept.remove(&Atom::Uuid(*old));
        }
        kept.insert(new_port(&mut ops, &vif.device, "", &ids, "vif"));
        ops.push(Operation::update(
            "Bridge",
            vec![Condition::uuid(*bridge_uuid)],
            Row::from([("ports".to_owned(), Value::Set(kept))]),
        ));
        self.ovs.transact(ops)
    }

    fn unplug_server(&self, server: Uuid) -> Result<(), DatabaseError> {
        let view = self.ovs.view()?;
        let Some((bridge, present)) = self.bridge_ports(&view) else {
            return Ok(());
        };
        let theirs: BTreeSet<Uuid> = view
            .rows("Interface")
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, row)| {
                string_map(row.get("external_ids")).get("vm-id") == Some(&server.to_string())
            })
            .map(|(uuid, _)| uuid)
            .collect();
        if theirs.is_empty() {
            return Ok(());
        }
        let ports = view.rows("Port").unwrap_or_default();
        let doomed: BTreeSet<Uuid> = ports
            .into_iter()
            .filter(|(uuid, row)| {
                present.contains(uuid) && !uuid_set(row.get("interfaces")).is_disjoint(&theirs)
            })
            .map(|(uuid, _)| uuid)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        let kept: BTreeSet<Atom> = present
            .difference(&doomed)
            .copied()
            .map(Atom::Uuid)
            .collect();
        self.ovs.transact(vec![Operation::update(
            "Bridge",
            vec![Condition::uuid(bridge)],
            Row::from([("ports".to_owned(), Value::Set(kept))]),
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::database::FakeDatabase;

    fn settings() -> ChassisSettings {
        ChassisSettings {
            system_id: "node-1".into(),
            southbound: "unix:/run/ovn/sb.sock".into(),
            encap_type: "geneve".into(),
            encap_ip: "192.0.2.10".into(),
            datapath_type: "netdev".into(),
            integration_bridge: "br-int".into(),
            provider_bridges: BTreeMap::from([(
                "physnet1".into(),
                ProviderBridge {
                    bridge: "br-ex".into(),
                    uplinks: vec!["eth1".into()],
                },
            )]),
            gateway: true,
        }
    }

    fn initialised() -> Arc<FakeDatabase> {
        let fake = Arc::new(FakeDatabase::open_vswitch());
        fake.plant(
            "Open_vSwitch",
            Row::from([(
                "external_ids".to_owned(),
                map_value(&BTreeMap::from([(
                    "hostname".to_owned(),
                    "edge".to_owned(),
                )])),
            )]),
        );
        fake
    }

    fn names(fake: &FakeDatabase, table: &str) -> BTreeSet<String> {
        fake.table(table)
            .values()
            .filter_map(|r| name(r).map(str::to_owned))
            .collect()
    }

    #[test]
    fn chassis_settings_and_provider_bridge_are_written_once_and_foreign_keys_kept() {
        let fake = initialised();
        let r = ChassisReconciler::new(fake.clone(), settings());
        r.reconcile(KEY).expect("configure");
        let root = fake
            .table("Open_vSwitch")
            .into_values()
            .next()
            .expect("root");
        let ids = string_map(root.get("external_ids"));
        assert_eq!(ids["system-id"], "node-1");
        assert_eq!(ids["ovn-bridge-mappings"], "physnet1:br-ex");
        assert_eq!(ids["ovn-bridge-datapath-type"], "netdev");
        assert_eq!(ids["ovn-cms-options"], "enable-chassis-as-gw");
        assert_eq!(
            ids["hostname"], "edge",
            "keys the agent does not own are kept"
        );
        assert_eq!(names(&fake, "Bridge"), BTreeSet::from(["br-ex".to_owned()]));
        assert_eq!(
            names(&fake, "Port"),
            BTreeSet::from(["br-ex".to_owned(), "eth1".to_owned()])
        );
        let transactions = fake.transactions();
        r.reconcile(KEY).expect("again");
        assert_eq!(
            fake.transactions(),
            transactions,
            "nothing to do the second time"
        );
        assert!(r.observe().expect("observe").is_empty());
    }

    #[test]
    fn a_removed_uplink_and_changed_remote_are_restored() {
        let fake = initialised();
        let r = ChassisReconciler::new(fake.clone(), settings());
        r.reconcile(KEY).expect("configure");
        let (root, row) = fake.table("Open_vSwitch").into_iter().next().expect("root");
        let mut ids = string_map(row.get("external_ids"));
        ids.insert("ovn-remote".into(), "tcp:10.0.0.1:6642".into());
        fake.tamper("Open_vSwitch", root, "external_ids", map_value(&ids));
        let (uplink, _) = fake
            .table("Port")
            .into_iter()
            .find(|(_, r)| name(r) == Some("eth1"))
            .expect("uplink");
        fake.remove("Port", uplink);
        assert_eq!(r.observe().expect("observe"), vec![KEY.to_owned()]);
        r.reconcile(KEY).expect("repair");
        let row = fake
            .table("Open_vSwitch")
            .into_values()
            .next()
            .expect("root");
        assert_eq!(
            string_map(row.get("external_ids"))["ovn-remote"],
            "unix:/run/ovn/sb.sock"
        );
        assert!(names(&fake, "Port").contains("eth1"));
    }

    #[test]
    fn vifs_are_plugged_with_iface_id_replugged_fresh_and_unplugged() {
        let fake = initialised();
        ChassisReconciler::new(fake.clone(), settings())
            .reconcile(KEY)
            .expect("configure");
        // ovn-controller creates br-int; stand in for it.
        let (root, row) = fake.table("Open_vSwitch").into_iter().next().expect("root");
        let int = fake.plant("Bridge", Row::from([("name".to_owned(), text("br-int"))]));
        let mut bridges = uuid_set(row.get("bridges"));
        bridges.insert(int);
        fake.tamper(
            "Open_vSwitch",
            root,
            "bridges",
            set_value(bridges.into_iter().map(Atom::Uuid)),
        );

        let vifs = OvsVifs::new(fake.clone(), "br-int");
        let vif = Vif {
            device: "tap0123".into(),
            port_id: Uuid::new_v4(),
            mac: "fa:16:3e:00:00:01".into(),
            server_id: Uuid::new_v4(),
        };
        vifs.plug(&vif, false).expect("plug");
        let iface = fake
            .table("Interface")
            .into_values()
            .find(|r| name(r) == Some("tap0123"))
            .expect("interface");
        assert_eq!(
            string_map(iface.get("external_ids"))["iface-id"],
            vif.port_id.to_string()
        );
        let before = fake.transactions();
        vifs.plug(&vif, false).expect("idempotent");
        assert_eq!(fake.transactions(), before);
        vifs.plug(&vif, true).expect("fresh");
        assert_eq!(fake.transactions(), before + 1);
        assert_eq!(
            fake.table("Interface")
                .values()
                .filter(|r| name(r) == Some("tap0123"))
                .count(),
            1,
            "replaced, not duplicated"
        );
        vifs.unplug_server(vif.server_id).expect("unplug");
        vifs.unplug_server(vif.server_id).expect("twice");
        assert!(!names(&fake, "Port").contains("tap0123"));
    }

    #[test]
    fn plugging_before_ovn_controller_made_the_bridge_is_a_retryable_error() {
        let fake = initialised();
        let vifs = OvsVifs::new(fake, "br-int");
        let vif = Vif {
            device: "tap1".into(),
            port_id: Uuid::new_v4(),
            mac: "fa:16:3e:00:00:02".into(),
            server_id: Uuid::new_v4(),
        };
        assert!(matches!(
            vifs.plug(&vif, false),
            Err(DatabaseError::Unavailable { .. })
        ));
    }
}
