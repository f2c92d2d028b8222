//! SQL for servers and their ports. Desired-state columns are written by the service, observed-state
//! columns by the reconciler; neither writes the other's (except the one documented case in
//! [`adopt_guest_shutdown`]).

use super::ComputeError;
use super::flavor::Flavor;
use super::server::{Fault, Nic, PowerIntent, PowerState, RebootKind, Server, ServerStatus};
use crate::store::{from_json, to_json};
use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, Transaction, params};
use std::collections::HashMap;
use uuid::Uuid;

/// A server row with the reconciler's bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ServerRecord {
    pub server: Server,
    /// The root disk was created once; if it is missing now, it was lost.
    pub provisioned: bool,
    /// The server ran at least once (BUILD is over).
    pub ever_started: bool,
    /// A graceful shutdown was requested; power off hard after this instant.
    pub stop_deadline: Option<Timestamp>,
    /// Consecutive failed reconciles.
    pub failed_attempts: u32,
    /// Reboot requests so far.
    pub reboot_requested: i64,
    /// Reboot requests carried out.
    pub reboot_done: i64,
}

const COLUMNS: &str = "id, name, project_id, user_id, image_id, flavor, user_data, metadata, power_intent,
    reboot_requested, reboot_done, reboot_kind, deleting, generation, observed_generation, status, power_state,
    provisioned, ever_started, stop_deadline, fault_code, fault_message, fault_at, failed_attempts, created_at,
    updated_at, launched_at, key_name, key_data, availability_zone";

fn parse_uuid(text: &str) -> Result<Uuid, ComputeError> {
    Uuid::parse_str(text).map_err(|_| ComputeError::ServerNotFound(text.to_owned()))
}

fn parse_time(text: &str) -> Timestamp {
    text.parse().unwrap_or_default()
}

fn from_row(row: &Row<'_>) -> Result<ServerRecord, ComputeError> {
    let id: String = row.get(0)?;
    let image_id: String = row.get(4)?;
    let flavor: String = row.get(5)?;
    let metadata: String = row.get(7)?;
    let reboot_requested: i64 = row.get(9)?;
    let reboot_done: i64 = row.get(10)?;
    let reboot_kind: Option<String> = row.get(11)?;
    let status: String = row.get(15)?;
    let fault_code: Option<u16> = row.get(20)?;
    let fault_message: Option<String> = row.get(21)?;
    let fault_at: Option<String> = row.get(22)?;
    let server = Server {
        id: parse_uuid(&id)?,
        name: row.get(1)?,
        project_id: row.get(2)?,
        user_id: row.get(3)?,
        image_id: parse_uuid(&image_id)?,
        flavor: from_json::<Flavor>("servers.flavor", &flavor)?,
        user_data: row.get(6)?,
        metadata: from_json("servers.metadata", &metadata)?,
        power_intent: PowerIntent::parse(&row.get::<_, String>(8)?),
        pending_reboot: (reboot_requested > reboot_done)
            .then(|| RebootKind::parse(reboot_kind.as_deref().unwrap_or("soft"))),
        deleting: row.get(12)?,
        generation: row.get(13)?,
        observed_generation: row.get(14)?,
        status: ServerStatus::parse(&status).unwrap_or(ServerStatus::Error),
        power_state: PowerState::parse(&row.get::<_, String>(16)?),
        fault: match (fault_code, fault_message) {
            (Some(code), Some(message)) => Some(Fault {
                code,
                message,
                created: fault_at.as_deref().map(parse_time).unwrap_or_default(),
            }),
            _ => None,
        },
        nics: Vec::new(),
        created_at: parse_time(&row.get::<_, String>(24)?),
        updated_at: parse_time(&row.get::<_, String>(25)?),
        launched_at: row.get::<_, Option<String>>(26)?.as_deref().map(parse_time),
        key_name: row.get(27)?,
        key_data: row.get(28)?,
        availability_zone: row.get(29)?,
    };
    Ok(ServerRecord {
        server,
        provisioned: row.get(17)?,
        ever_started: row.get(18)?,
        stop_deadline: row.get::<_, Option<String>>(19)?.as_deref().map(parse_time),
        failed_attempts: row.get(23)?,
        reboot_requested,
        reboot_done,
    })
}

fn nics_of(tx: &Transaction<'_>, id: Uuid) -> Result<Vec<Nic>, ComputeError> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, mac, position, network_id FROM ports WHERE server_id = ?1 ORDER BY position",
    )?;
    let rows = stmt.query_map([id.to_string()], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, u32>(2)?,
            row.get::<_, Option<String>>(3)?,
        ))
    })?;
    rows.map(|r| {
        let (id, mac, position, network) = r?;
        Ok(Nic {
            port_id: parse_uuid(&id)?,
            mac,
            position,
            network_id: network.as_deref().map(parse_uuid).transpose()?,
        })
    })
    .collect()
}

/// Inserts a new server and its ports.
pub(super) fn insert(tx: &Transaction<'_>, server: &Server) -> Result<(), ComputeError> {
    let now = server.created_at.to_string();
    tx.execute(
        "INSERT INTO servers (id, name, project_id, user_id, image_id, flavor_id, flavor, user_data, metadata,
             power_intent, status, generation, created_at, updated_at, key_name, key_data, availability_zone)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14, ?15, ?16)",
        params![
            server.id.to_string(),
            server.name,
            server.project_id,
            server.user_id,
            server.image_id.to_string(),
            server.flavor.id,
            to_json(&server.flavor),
            server.user_data,
            to_json(&server.metadata),
            server.power_intent.as_str(),
            server.status.as_str(),
            server.generation,
            now,
            server.key_name,
            server.key_data,
            server.availability_zone,
        ],
    )?;
    for port in server.nics.iter().filter(|n| n.network_id.is_none()) {
        tx.execute(
            "INSERT INTO ports (id, project_id, mac, device_owner, device_id, server_id, position, owned_by_server,
                 created_at, updated_at)
             VALUES (?1, ?2, ?3, 'compute:nova', ?4, ?4, ?5, 1, ?6, ?6)",
            params![port.port_id.to_string(), server.project_id, port.mac, server.id.to_string(), port.position, now],
        )?;
    }
    Ok(())
}

/// Whether a MAC is taken.
pub(super) fn mac_in_use(tx: &Transaction<'_>, mac: &str) -> Result<bool, ComputeError> {
    Ok(tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM ports WHERE mac = ?1)",
        [mac],
        |r| r.get(0),
    )?)
}

/// Whether a server id is taken.
pub(super) fn exists(tx: &Transaction<'_>, id: Uuid) -> Result<bool, ComputeError> {
    Ok(tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM servers WHERE id = ?1)",
        [id.to_string()],
        |r| r.get(0),
    )?)
}

/// One server with its ports.
pub(super) fn load(tx: &Transaction<'_>, id: Uuid) -> Result<Option<ServerRecord>, ComputeError> {
    let record = tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM servers WHERE id = ?1"),
            [id.to_string()],
            |row| Ok(from_row(row)),
        )
        .optional()?
        .transpose()?;
    match record {
        Some(mut record) => {
            record.server.nics = nics_of(tx, id)?;
            Ok(Some(record))
        }
        None => Ok(None),
    }
}

/// All servers, oldest first.
pub(super) fn list(tx: &Transaction<'_>) -> Result<Vec<ServerRecord>, ComputeError> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {COLUMNS} FROM servers ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([], |row| Ok(from_row(row)))?;
    let mut records: Vec<ServerRecord> = rows
        .map(|r| r.map_err(ComputeError::from).and_then(|x| x))
        .collect::<Result<_, _>>()?;
    for record in &mut records {
        record.server.nics = nics_of(tx, record.server.id)?;
    }
    Ok(records)
}

/// How many servers exist, those being deleted included (they still hold resources).
pub(super) fn count(tx: &Transaction<'_>) -> Result<u64, ComputeError> {
    Ok(tx.query_row("SELECT count(*) FROM servers", [], |row| {
        row.get::<_, i64>(0)
    })? as u64)
}

/// Ids of every server row.
pub(super) fn ids(tx: &Transaction<'_>) -> Result<Vec<Uuid>, ComputeError> {
    let mut stmt = tx.prepare("SELECT id FROM servers")?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    rows.map(|r| parse_uuid(&r?)).collect()
}

/// Servers whose desired state is ahead of what was reconciled, with their generation.
pub(super) fn pending(tx: &Transaction<'_>) -> Result<Vec<(Uuid, i64)>, ComputeError> {
    let mut stmt = tx.prepare(
        "SELECT id, generation FROM servers WHERE generation != observed_generation OR deleting",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    rows.map(|r| {
        let (id, generation) = r?;
        Ok((parse_uuid(&id)?, generation))
    })
    .collect()
}

/// Power state last recorded per server.
pub(super) fn recorded_power(
    tx: &Transaction<'_>,
) -> Result<HashMap<Uuid, PowerState>, ComputeError> {
    let mut stmt = tx.prepare("SELECT id, power_state FROM servers")?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    rows.map(|r| {
        let (id, power) = r?;
        Ok((parse_uuid(&id)?, PowerState::parse(&power)))
    })
    .collect()
}

/// Resources claimed by every server on the node: (vCPUs, RAM MiB).
pub(super) fn claimed(tx: &Transaction<'_>) -> Result<(u64, u64), ComputeError> {
    let mut stmt = tx.prepare("SELECT flavor FROM servers")?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    let mut totals = (0u64, 0u64);
    for flavor in rows {
        let flavor: Flavor = from_json("servers.flavor", &flavor?)?;
        totals.0 += u64::from(flavor.vcpus);
        totals.1 += flavor.ram_mb;
    }
    Ok(totals)
}

/// A change of desired state: bumps the generation so every loop notices.
pub(super) enum DesiredChange {
    Power(PowerIntent),
    Reboot(RebootKind),
    Delete,
}

/// Applies a desired change; returns the new generation.
pub(super) fn change_desired(
    tx: &Transaction<'_>,
    id: Uuid,
    change: &DesiredChange,
    now: Timestamp,
) -> Result<i64, ComputeError> {
    let id_text = id.to_string();
    let now = now.to_string();
    let updated = match change {
        DesiredChange::Power(intent) => tx.execute(
            "UPDATE servers SET power_intent = ?2, generation = generation + 1, updated_at = ?3 WHERE id = ?1",
            params![id_text, intent.as_str(), now],
        )?,
        DesiredChange::Reboot(kind) => tx.execute(
            "UPDATE servers SET reboot_requested = reboot_requested + 1, reboot_kind = ?2, power_intent = 'running',
                 generation = generation + 1, updated_at = ?3 WHERE id = ?1",
            params![id_text, kind.as_str(), now],
        )?,
        DesiredChange::Delete => tx.execute(
            "UPDATE servers SET deleting = 1, generation = generation + 1, updated_at = ?2 WHERE id = ?1",
            params![id_text, now],
        )?,
    };
    if updated == 0 {
        return Err(ComputeError::ServerNotFound(id_text));
    }
    Ok(tx.query_row(
        "SELECT generation FROM servers WHERE id = ?1",
        [&id_text],
        |r| r.get(0),
    )?)
}

/// Writes the reconciler's observed columns from `record`.
pub(super) fn write_observed(
    tx: &Transaction<'_>,
    record: &ServerRecord,
    now: Timestamp,
) -> Result<(), ComputeError> {
    let s = &record.server;
    tx.execute(
        "UPDATE servers SET status = ?2, power_state = ?3, provisioned = ?4, ever_started = ?5, stop_deadline = ?6,
             fault_code = ?7, fault_message = ?8, fault_at = ?9, failed_attempts = ?10, observed_generation = ?11,
             reboot_done = ?12, launched_at = ?13, updated_at = ?14
         WHERE id = ?1",
        params![
            s.id.to_string(),
            s.status.as_str(),
            s.power_state.as_str(),
            record.provisioned,
            record.ever_started,
            record.stop_deadline.map(|t| t.to_string()),
            s.fault.as_ref().map(|f| f.code),
            s.fault.as_ref().map(|f| f.message.clone()),
            s.fault.as_ref().map(|f| f.created.to_string()),
            record.failed_attempts,
            s.observed_generation,
            record.reboot_done,
            s.launched_at.map(|t| t.to_string()),
            now.to_string(),
        ],
    )?;
    Ok(())
}

/// The guest powered itself off: like Nova, take that as the user's new intent (stopped), unless the
/// desired state changed meanwhile (generation moved on). Returns the new generation if adopted.
pub(super) fn adopt_guest_shutdown(
    tx: &Transaction<'_>,
    id: Uuid,
    seen_generation: i64,
    now: Timestamp,
) -> Result<Option<i64>, ComputeError> {
    let updated = tx.execute(
        "UPDATE servers SET power_intent = 'stopped', generation = generation + 1, updated_at = ?3
         WHERE id = ?1 AND generation = ?2 AND power_intent = 'running'",
        params![id.to_string(), seen_generation, now.to_string()],
    )?;
    Ok((updated == 1).then_some(seen_generation + 1))
}

/// Removes a server row: the ports made for it go too, ports the user passed in are unbound and kept.
pub(super) fn delete(tx: &Transaction<'_>, id: Uuid) -> Result<(), ComputeError> {
    crate::network::service::release_server_ports(tx, id)?;
    tx.execute("DELETE FROM servers WHERE id = ?1", [id.to_string()])?;
    Ok(())
}
