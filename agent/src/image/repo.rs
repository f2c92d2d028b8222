//! Image and member rows: the SQL, and nothing else.
//!
//! Every function takes the caller's transaction, so the service decides what happens atomically.

use super::{
    ContainerFormat, Image, ImageError, ImageMember, ImageStatus, MemberStatus, Visibility,
};
use crate::image::format::DiskFormat;
use crate::store::{from_json, to_json};
use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, Transaction, params};
use std::collections::HashMap;
use uuid::Uuid;

const COLUMNS: &str = "id, name, status, disk_format, container_format, size_bytes, virtual_size,
    checksum_md5, hash_sha512, min_disk_gb, min_ram_mb, visibility, protected, owner, tags,
    properties, created_at, updated_at";

fn corrupt(what: &'static str, value: &str) -> ImageError {
    ImageError::Corrupt(format!("images.{what} holds {value:?}"))
}

fn timestamp(what: &'static str, text: &str) -> Result<Timestamp, ImageError> {
    text.parse().map_err(|_| corrupt(what, text))
}

fn from_row(row: &Row<'_>) -> Result<Image, ImageError> {
    let id: String = row.get(0)?;
    let status: String = row.get(2)?;
    let disk_format: Option<String> = row.get(3)?;
    let container_format: Option<String> = row.get(4)?;
    let visibility: String = row.get(11)?;
    let tags: String = row.get(14)?;
    let properties: String = row.get(15)?;
    let created_at: String = row.get(16)?;
    let updated_at: String = row.get(17)?;
    Ok(Image {
        id: Uuid::parse_str(&id).map_err(|_| corrupt("id", &id))?,
        name: row.get(1)?,
        status: ImageStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        disk_format: disk_format
            .map(|f| DiskFormat::parse(&f).ok_or_else(|| corrupt("disk_format", &f)))
            .transpose()?,
        container_format: container_format
            .map(|f| ContainerFormat::parse(&f).map_err(|_| corrupt("container_format", &f)))
            .transpose()?,
        size_bytes: row.get::<_, Option<i64>>(5)?.map(|n| n as u64),
        virtual_size: row.get::<_, Option<i64>>(6)?.map(|n| n as u64),
        checksum_md5: row.get(7)?,
        hash_sha512: row.get(8)?,
        min_disk_gb: row.get::<_, i64>(9)? as u64,
        min_ram_mb: row.get::<_, i64>(10)? as u64,
        visibility: Visibility::parse(&visibility)
            .map_err(|_| corrupt("visibility", &visibility))?,
        protected: row.get(12)?,
        owner: row.get(13)?,
        tags: from_json("images.tags", &tags)?,
        properties: from_json("images.properties", &properties)?,
        created_at: timestamp("created_at", &created_at)?,
        updated_at: timestamp("updated_at", &updated_at)?,
    })
}

/// The image row, if any.
pub(super) fn find(tx: &Transaction<'_>, id: Uuid) -> Result<Option<Image>, ImageError> {
    tx.query_row(
        &format!("SELECT {COLUMNS} FROM images WHERE id = ?1"),
        [id.to_string()],
        |row| Ok(from_row(row)),
    )
    .optional()?
    .transpose()
}

/// Every image row, in no particular order.
pub(super) fn all(tx: &Transaction<'_>) -> Result<Vec<Image>, ImageError> {
    let mut stmt = tx.prepare(&format!("SELECT {COLUMNS} FROM images"))?;
    let rows = stmt.query_map([], |row| Ok(from_row(row)))?;
    rows.map(|r| r.map_err(ImageError::from).and_then(|i| i))
        .collect()
}

/// How many image records exist, whatever their status.
pub(super) fn count(tx: &Transaction<'_>) -> Result<u64, ImageError> {
    Ok(tx.query_row("SELECT count(*) FROM images", [], |row| {
        row.get::<_, i64>(0)
    })? as u64)
}

/// Whether the id is taken.
pub(super) fn exists(tx: &Transaction<'_>, id: Uuid) -> Result<bool, ImageError> {
    Ok(tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM images WHERE id = ?1)",
        [id.to_string()],
        |r| r.get(0),
    )?)
}

fn opt_i64(value: Option<u64>) -> Option<i64> {
    value.map(|n| n as i64)
}

/// Inserts a new row.
pub(super) fn insert(tx: &Transaction<'_>, image: &Image) -> Result<(), ImageError> {
    tx.execute(
        &format!(
            "INSERT INTO images ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
             ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
        ),
        params![
            image.id.to_string(),
            image.name,
            image.status.as_str(),
            image.disk_format.map(DiskFormat::as_str),
            image.container_format.map(ContainerFormat::as_str),
            opt_i64(image.size_bytes),
            opt_i64(image.virtual_size),
            image.checksum_md5,
            image.hash_sha512,
            image.min_disk_gb as i64,
            image.min_ram_mb as i64,
            image.visibility.as_str(),
            image.protected,
            image.owner,
            to_json(&image.tags),
            to_json(&image.properties),
            image.created_at.to_string(),
            image.updated_at.to_string(),
        ],
    )?;
    Ok(())
}

/// Rewrites a row's every column but `id` and `created_at`. Returns whether the row still existed.
pub(super) fn update(tx: &Transaction<'_>, image: &Image) -> Result<bool, ImageError> {
    let changed = tx.execute(
        "UPDATE images SET name = ?2, status = ?3, disk_format = ?4, container_format = ?5,
             size_bytes = ?6, virtual_size = ?7, checksum_md5 = ?8, hash_sha512 = ?9,
             min_disk_gb = ?10, min_ram_mb = ?11, visibility = ?12, protected = ?13, owner = ?14,
             tags = ?15, properties = ?16, updated_at = ?17
         WHERE id = ?1",
        params![
            image.id.to_string(),
            image.name,
            image.status.as_str(),
            image.disk_format.map(DiskFormat::as_str),
            image.container_format.map(ContainerFormat::as_str),
            opt_i64(image.size_bytes),
            opt_i64(image.virtual_size),
            image.checksum_md5,
            image.hash_sha512,
            image.min_disk_gb as i64,
            image.min_ram_mb as i64,
            image.visibility.as_str(),
            image.protected,
            image.owner,
            to_json(&image.tags),
            to_json(&image.properties),
            image.updated_at.to_string(),
        ],
    )?;
    Ok(changed == 1)
}

/// Moves a row from `from` to `to` status only if it is still in `from`; returns whether it moved.
pub(super) fn transition(
    tx: &Transaction<'_>,
    id: Uuid,
    from: ImageStatus,
    to: ImageStatus,
    now: Timestamp,
) -> Result<bool, ImageError> {
    Ok(tx.execute(
        "UPDATE images SET status = ?3, updated_at = ?4 WHERE id = ?1 AND status = ?2",
        params![id.to_string(), from.as_str(), to.as_str(), now.to_string()],
    )? == 1)
}

/// Ids of rows in `status`.
pub(super) fn ids_in_status(
    tx: &Transaction<'_>,
    status: ImageStatus,
) -> Result<Vec<Uuid>, ImageError> {
    let mut stmt = tx.prepare("SELECT id FROM images WHERE status = ?1")?;
    let ids = stmt
        .query_map([status.as_str()], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids
        .iter()
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect())
}

/// How many servers boot from the image.
pub(super) fn servers_using(tx: &Transaction<'_>, id: Uuid) -> Result<u64, ImageError> {
    Ok(tx.query_row(
        "SELECT count(*) FROM servers WHERE image_id = ?1",
        [id.to_string()],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// Deletes the row (members go with it); returns whether it existed.
pub(super) fn delete(tx: &Transaction<'_>, id: Uuid) -> Result<bool, ImageError> {
    Ok(tx.execute("DELETE FROM images WHERE id = ?1", [id.to_string()])? == 1)
}

fn member_from_row(row: &Row<'_>) -> Result<ImageMember, ImageError> {
    let image_id: String = row.get(0)?;
    let status: String = row.get(2)?;
    let created_at: String = row.get(3)?;
    let updated_at: String = row.get(4)?;
    Ok(ImageMember {
        image_id: Uuid::parse_str(&image_id).map_err(|_| corrupt("image_members", &image_id))?,
        member: row.get(1)?,
        status: MemberStatus::parse(&status).map_err(|_| corrupt("image_members", &status))?,
        created_at: timestamp("created_at", &created_at)?,
        updated_at: timestamp("updated_at", &updated_at)?,
    })
}

const MEMBER_COLUMNS: &str = "image_id, member, status, created_at, updated_at";

/// One membership.
pub(super) fn member(
    tx: &Transaction<'_>,
    image_id: Uuid,
    member: &str,
) -> Result<Option<ImageMember>, ImageError> {
    tx.query_row(
        &format!("SELECT {MEMBER_COLUMNS} FROM image_members WHERE image_id = ?1 AND member = ?2"),
        params![image_id.to_string(), member],
        |row| Ok(member_from_row(row)),
    )
    .optional()?
    .transpose()
}

/// The image's members, oldest first.
pub(super) fn members(
    tx: &Transaction<'_>,
    image_id: Uuid,
) -> Result<Vec<ImageMember>, ImageError> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {MEMBER_COLUMNS} FROM image_members WHERE image_id = ?1 ORDER BY created_at, member"
    ))?;
    let rows = stmt.query_map([image_id.to_string()], |row| Ok(member_from_row(row)))?;
    rows.map(|r| r.map_err(ImageError::from).and_then(|m| m))
        .collect()
}

/// How many members the image has.
pub(super) fn member_count(tx: &Transaction<'_>, image_id: Uuid) -> Result<usize, ImageError> {
    Ok(tx.query_row(
        "SELECT count(*) FROM image_members WHERE image_id = ?1",
        [image_id.to_string()],
        |r| r.get::<_, i64>(0),
    )? as usize)
}

/// The member status of `project` on every image it is a member of.
pub(super) fn memberships_of(
    tx: &Transaction<'_>,
    project: &str,
) -> Result<HashMap<Uuid, MemberStatus>, ImageError> {
    let mut stmt = tx.prepare("SELECT image_id, status FROM image_members WHERE member = ?1")?;
    let rows = stmt
        .query_map([project], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(id, status)| {
            Ok((
                Uuid::parse_str(&id).map_err(|_| corrupt("image_members", &id))?,
                MemberStatus::parse(&status).map_err(|_| corrupt("image_members", &status))?,
            ))
        })
        .collect()
}

/// Inserts a membership.
pub(super) fn insert_member(tx: &Transaction<'_>, m: &ImageMember) -> Result<(), ImageError> {
    tx.execute(
        &format!("INSERT INTO image_members ({MEMBER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
        params![
            m.image_id.to_string(),
            m.member,
            m.status.as_str(),
            m.created_at.to_string(),
            m.updated_at.to_string()
        ],
    )?;
    Ok(())
}

/// Sets a membership's status.
pub(super) fn update_member(tx: &Transaction<'_>, m: &ImageMember) -> Result<(), ImageError> {
    tx.execute(
        "UPDATE image_members SET status = ?3, updated_at = ?4 WHERE image_id = ?1 AND member = ?2",
        params![
            m.image_id.to_string(),
            m.member,
            m.status.as_str(),
            m.updated_at.to_string()
        ],
    )?;
    Ok(())
}

/// Deletes a membership; returns whether it existed.
pub(super) fn delete_member(
    tx: &Transaction<'_>,
    image_id: Uuid,
    member: &str,
) -> Result<bool, ImageError> {
    Ok(tx.execute(
        "DELETE FROM image_members WHERE image_id = ?1 AND member = ?2",
        params![image_id.to_string(), member],
    )? == 1)
}
