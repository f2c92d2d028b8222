//! Flavors: the sizes a server can have.
//!
//! A server keeps a copy of its flavor (as Nova does), so deleting or recreating a flavor never changes
//! a running server's size behind its back.

use super::ComputeError;
use crate::store::{from_json, to_json};
use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, Transaction, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A flavor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flavor {
    /// Flavor id (client-chosen, e.g. `SCS-1V-4` or a UUID).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// RAM in MiB.
    pub ram_mb: u64,
    /// Root disk in GiB; 0 means "as large as the image".
    pub disk_gb: u64,
    /// Ephemeral disk in GiB (recorded; not provisioned yet).
    pub ephemeral_gb: u64,
    /// Swap in MiB (recorded; not provisioned yet).
    pub swap_mb: u64,
    /// Visible to every project.
    pub is_public: bool,
    /// Extra specs such as `scs:cpu-type` or `hw_rng:allowed`.
    pub extra_specs: BTreeMap<String, String>,
}

/// A request to create a flavor; ids and names are chosen by the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFlavor {
    /// Id; a UUID is generated when absent.
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// vCPUs.
    pub vcpus: u32,
    /// RAM in MiB.
    pub ram_mb: u64,
    /// Root disk in GiB.
    pub disk_gb: u64,
    /// Ephemeral disk in GiB.
    pub ephemeral_gb: u64,
    /// Swap in MiB.
    pub swap_mb: u64,
    /// Public.
    pub is_public: bool,
    /// Extra specs.
    pub extra_specs: BTreeMap<String, String>,
}

/// Largest sizes accepted, matching Nova's API limits (`db.MAX_INT` for RAM, 1024 for the disk sizes in
/// its schema is too small for us; we cap at what one node could conceivably hold).
const MAX_VCPUS: u32 = 4096;
const MAX_RAM_MB: u64 = 16 * 1024 * 1024; // 16 TiB
const MAX_DISK_GB: u64 = 1024 * 1024; // 1 PiB

fn invalid(field: &'static str, reason: impl Into<String>) -> ComputeError {
    ComputeError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Flavor ids and names: printable, no surrounding whitespace, 1–255 characters (Nova's rule).
pub(super) fn validate_text(field: &'static str, value: &str) -> Result<(), ComputeError> {
    if value.is_empty() || value.chars().count() > 255 {
        return Err(invalid(field, "must be 1 to 255 characters"));
    }
    if value.trim() != value {
        return Err(invalid(field, "must not start or end with whitespace"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

impl NewFlavor {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ComputeError> {
        if let Some(id) = &self.id {
            validate_text("flavor id", id)?;
            if id.contains('/') {
                return Err(invalid("flavor id", "must not contain '/'"));
            }
        }
        validate_text("flavor name", &self.name)?;
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(invalid(
                "vcpus",
                format!("must be between 1 and {MAX_VCPUS}, got {}", self.vcpus),
            ));
        }
        if !(1..=MAX_RAM_MB).contains(&self.ram_mb) {
            return Err(invalid(
                "ram",
                format!(
                    "must be between 1 and {MAX_RAM_MB} MiB, got {}",
                    self.ram_mb
                ),
            ));
        }
        for (field, value) in [("disk", self.disk_gb), ("ephemeral", self.ephemeral_gb)] {
            if value > MAX_DISK_GB {
                return Err(invalid(
                    field,
                    format!("must be at most {MAX_DISK_GB} GiB, got {value}"),
                ));
            }
        }
        if self.swap_mb > MAX_RAM_MB {
            return Err(invalid(
                "swap",
                format!("must be at most {MAX_RAM_MB} MiB, got {}", self.swap_mb),
            ));
        }
        for (key, value) in &self.extra_specs {
            if key.is_empty() || key.len() > 255 || value.len() > 255 {
                return Err(invalid(
                    "extra_specs",
                    format!("key {key:?}: keys 1-255, values up to 255 characters"),
                ));
            }
        }
        Ok(())
    }
}

const COLUMNS: &str =
    "id, name, description, vcpus, ram_mb, disk_gb, ephemeral_gb, swap_mb, is_public, extra_specs";

fn from_row(row: &Row<'_>) -> Result<Flavor, ComputeError> {
    let specs: String = row.get(9)?;
    Ok(Flavor {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        vcpus: row.get(3)?,
        ram_mb: row.get::<_, i64>(4)? as u64,
        disk_gb: row.get::<_, i64>(5)? as u64,
        ephemeral_gb: row.get::<_, i64>(6)? as u64,
        swap_mb: row.get::<_, i64>(7)? as u64,
        is_public: row.get(8)?,
        extra_specs: from_json("flavors.extra_specs", &specs)?,
    })
}

/// Inserts a validated flavor; a taken id or name is a conflict.
pub(super) fn insert(
    tx: &Transaction<'_>,
    request: NewFlavor,
    now: Timestamp,
) -> Result<Flavor, ComputeError> {
    let id = request
        .id
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if find(tx, &id)?.is_some() {
        return Err(ComputeError::Duplicate { what: "flavor", id });
    }
    let name_taken: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM flavors WHERE name = ?1)",
        [&request.name],
        |r| r.get(0),
    )?;
    if name_taken {
        return Err(ComputeError::Duplicate {
            what: "flavor with name",
            id: request.name,
        });
    }
    let flavor = Flavor {
        id,
        name: request.name,
        description: request.description,
        vcpus: request.vcpus,
        ram_mb: request.ram_mb,
        disk_gb: request.disk_gb,
        ephemeral_gb: request.ephemeral_gb,
        swap_mb: request.swap_mb,
        is_public: request.is_public,
        extra_specs: request.extra_specs,
    };
    tx.execute(
        &format!("INSERT INTO flavors ({COLUMNS}, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
        params![
            flavor.id,
            flavor.name,
            flavor.description,
            flavor.vcpus,
            flavor.ram_mb as i64,
            flavor.disk_gb as i64,
            flavor.ephemeral_gb as i64,
            flavor.swap_mb as i64,
            flavor.is_public,
            to_json(&flavor.extra_specs),
            now.to_string(),
        ],
    )?;
    Ok(flavor)
}

/// The flavor with this id, if any.
pub(super) fn find(tx: &Transaction<'_>, id: &str) -> Result<Option<Flavor>, ComputeError> {
    tx.query_row(
        &format!("SELECT {COLUMNS} FROM flavors WHERE id = ?1"),
        [id],
        |row| Ok(from_row(row)),
    )
    .optional()?
    .transpose()
}

/// All flavors, smallest first (Nova's default order is by flavor id; size order reads better).
pub(super) fn list(tx: &Transaction<'_>) -> Result<Vec<Flavor>, ComputeError> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {COLUMNS} FROM flavors ORDER BY vcpus, ram_mb, disk_gb, id"
    ))?;
    let rows = stmt.query_map([], |row| Ok(from_row(row)))?;
    rows.map(|r| r.map_err(ComputeError::from).and_then(|f| f))
        .collect()
}

/// Deletes a flavor; servers keep their copy.
pub(super) fn delete(tx: &Transaction<'_>, id: &str) -> Result<(), ComputeError> {
    if tx.execute("DELETE FROM flavors WHERE id = ?1", [id])? == 0 {
        return Err(ComputeError::FlavorNotFound(id.to_owned()));
    }
    Ok(())
}
